//! Vagrant (`[catalogs] vagrant`): a libvirt box of each plain qcow2 image,
//! written from the read that hashes it, and `vagrant/<appliance>.json`,
//! checked by `verify` and read by the real `vagrant` client from
//! `vmcast-gen serve`.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output};

use crate::common::{EPOCH, Fixture, assert_success, copy_tree, stderr, stdout};
use crate::verify::{kat_key, relist, resign};

tests! {
    boxes_hold_the_image_and_the_catalog_lists_them;
    a_catalog_that_disagrees_with_the_feed_fails_verify;
    boxes_without_their_catalog_fail_verify;
    warm_rebuild_reads_no_image_and_keeps_the_boxes;
    a_box_taken_while_its_image_is_read_for_another_file_is_kept;
    a_version_vagrant_cannot_parse_is_refused;
    previous_keeps_the_boxes_of_releases_whose_images_are_absent;
    turning_vagrant_off_drops_the_boxes_of_previous_releases_too;
    vagrant_adds_lists_and_checks_boxes_from_serve needs VAGRANT;
    previous_without_boxes_leaves_the_release_out_with_the_reason;
    #[cfg(feature = "publish")]
    published_catalog_is_json_and_boxes_go_first needs MOTO, VAGRANT;
}

const KAT_PUB: &str = "../known-answer/kat.pub";
const LATER: &str = "1790086400";
const CATALOG: &str = "public/vagrant/webapp.json";
const BOX_1_0: &str = "vagrant/webapp/1.0.0/webapp-1.0.0.box";
const BOX_1_1: &str = "vagrant/webapp/1.1.0/webapp-1.1.0.box";
/// 2026-01-15, the date of release 1.0.0.
const RELEASE_1_0_DATE: u64 = 1_768_435_200;
const SUMMARY: &str = "Catalog vagrant: vagrant/webapp.json; skipped 1 image(s):\n  \
    images/webapp/1.1.0/webapp-1.1.0.raw: a libvirt box holds a plain qcow2 image only\n";

/// Every member of a box: name, bytes, mtime, mode, uid, gid.
fn members(path: &std::path::Path) -> Vec<(String, Vec<u8>, u64, u32, u64, u64)> {
    let file = fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(file);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                data,
                h.mtime().unwrap(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            )
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    vmcast_gen::model::Sha256::of(data).to_hex()
}

fn verify(fixture: &Fixture, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "public", "--pubkey", KAT_PUB];
    args.extend_from_slice(extra);
    fixture.run(&args, &[])
}

fn boxes_hold_the_image_and_the_catalog_lists_them() {
    let fixture = Fixture::new("ok-vagrant");
    let out = fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert_success(&out);
    assert!(stdout(&out).ends_with(SUMMARY), "{}", stdout(&out));
    insta::assert_snapshot!(
        "vagrant_catalog",
        fs::read_to_string(fixture.path(CATALOG)).unwrap()
    );

    let image = fs::read(fixture.path("releases/webapp/1.0.0/webapp-1.0.0.qcow2")).unwrap();
    let boxed = fixture.path(&format!("public/{BOX_1_0}"));
    let members = members(&boxed);
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["box.img", "metadata.json", "Vagrantfile"]);
    assert_eq!(members[0].1, image);
    assert_eq!(
        String::from_utf8_lossy(&members[1].1),
        "{\"provider\":\"libvirt\",\"format\":\"qcow2\",\"virtual_size\":1}\n"
    );
    for m in &members {
        assert_eq!(
            (m.2, m.3, m.4, m.5),
            (RELEASE_1_0_DATE, 0o644, 0, 0),
            "{}",
            m.0
        );
    }

    let box_bytes = fs::read(&boxed).unwrap();
    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("{}  {BOX_1_0}\n", sha256(&box_bytes))),
        "{sums}"
    );
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert!(
        feed.contains(&format!(
            " vagrantBox=\"{BOX_1_0}\" vagrantBoxLength=\"{}\" vagrantBoxSha256=\"{}\"",
            box_bytes.len(),
            sha256(&box_bytes)
        )),
        "{feed}"
    );

    // Byte-reproducible: another build, with nothing cached, makes the same box.
    let again = fixture.run(
        &["build", "--no-cache", "--out", "again"],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    assert_success(&again);
    assert_eq!(
        fs::read(fixture.path(&format!("again/{BOX_1_0}"))).unwrap(),
        box_bytes
    );

    let out = verify(&fixture, &["--images"]);
    assert_success(&out);
    for line in [
        "  ok   catalog   vagrant/webapp.json: 2 version(s), the boxes the feed lists\n".to_owned(),
        "  ok   manifest  vagrant/webapp.json's SHA-256 matches SHA256SUMS\n".to_owned(),
        format!(
            "  ok   images    {BOX_1_0}: {} bytes, SHA-256 matches\n",
            box_bytes.len()
        ),
    ] {
        assert!(stdout(&out).contains(&line), "{line}{}", stdout(&out));
    }
}

/// A catalog listed in the manifest whose box checksum is not the one the
/// signed feed names: vagrant would accept a box the feed does not vouch
/// for. `verify` names the version, the box and both digests.
fn a_catalog_that_disagrees_with_the_feed_fails_verify() {
    let fixture = Fixture::new("ok-vagrant");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let real = sha256(&fs::read(fixture.path(&format!("public/{BOX_1_1}"))).unwrap());
    let evil = "e".repeat(64);
    let catalog = fs::read_to_string(fixture.path(CATALOG)).unwrap();
    fs::write(fixture.path(CATALOG), catalog.replace(&real, &evil)).unwrap();
    relist(&fixture, "public", "vagrant/webapp.json");
    resign(&fixture, "public/SHA256SUMS", &kat_key());
    let out = verify(&fixture, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: vagrant/webapp.json: version 1.1.0: \
             https://downloads.example.com/site/{BOX_1_1} has checksum \"sha256\" \"{evil}\"; \
             the feed says sha256 {real}\n"
        )
    );
}

/// A site whose feed names Vagrant boxes but whose SHA256SUMS lists no
/// catalog (removed with its line, SHA256SUMS signed again): `vagrant box
/// add` would find nothing there. `verify` fails, as for any other file the
/// feed names and SHA256SUMS does not list, naming the releases.
fn boxes_without_their_catalog_fail_verify() {
    let fixture = Fixture::new("ok-vagrant");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    fs::remove_file(fixture.path(CATALOG)).unwrap();
    let sums_path = fixture.path("public/SHA256SUMS");
    let sums = fs::read_to_string(&sums_path).unwrap();
    let kept: String = sums
        .lines()
        .filter(|l| !l.ends_with("  vagrant/webapp.json"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(kept.lines().count() + 1, sums.lines().count());
    fs::write(&sums_path, kept).unwrap();
    resign(&fixture, "public/SHA256SUMS", &kat_key());
    let out = verify(&fixture, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "error: vagrant/webapp.json: not listed in SHA256SUMS, but the feed names Vagrant boxes \
         of vmcast:webapp:1.0.0, vmcast:webapp:1.1.0: `vagrant box add` would find no catalog\n"
    );
}

/// The second line of the summary, without the time and rate.
fn hashed_line(out: &Output) -> String {
    let text = stdout(out);
    let line = text.lines().nth(1).unwrap();
    let (counts, rest) = line.split_once(" bytes), in ").unwrap();
    format!("{counts} bytes); {}", rest.split_once("; ").unwrap().1)
}

/// A build with the fixture's own hash cache, at the fixed epoch.
#[track_caller]
fn cached_build(fixture: &Fixture) -> Output {
    let cache = fixture.path("cache");
    let out = fixture.run(
        &["build", "--cache-dir", cache.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    assert_success(&out);
    out
}

/// The inode of a file of the published site.
fn published_ino(fixture: &Fixture, rel: &str) -> u64 {
    fs::metadata(fixture.path(&format!("public/{rel}")))
        .unwrap()
        .ino()
}

/// Boxes are files of ours: in the output with `image_mode = "none"` too.
/// Warm rebuilds read no image and take each box from the previous output
/// by hard link (the same inode), or keep it where the reused spare site
/// holds it: never written again.
fn warm_rebuild_reads_no_image_and_keeps_the_boxes() {
    let fixture = Fixture::new("ok-vagrant");
    let config = fixture.path("vmcast.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("[catalogs]", "image_mode = \"none\"\n\n[catalogs]"),
    )
    .unwrap();
    let build = || cached_build(&fixture);
    let ino = |rel: &str| published_ino(&fixture, rel);
    assert_eq!(
        hashed_line(&build()),
        "Hashed 3 image(s), 5.2 KiB (5376 bytes); not read: 0 image(s), 0 B from the cache, \
         0 image(s), 0 B from sidecars"
    );
    assert!(!fixture.path("public/images").exists());
    let first = crate::common::snapshot_tree(&fixture.path("public"));
    let inodes = (ino(BOX_1_0), ino(BOX_1_1));
    // The second rebuild stages in the spare site the first one left,
    // which holds the boxes already.
    for _ in 0..2 {
        assert_eq!(
            hashed_line(&build()),
            "Hashed 0 image(s), 0 B (0 bytes); not read: 3 image(s), 5.2 KiB from the cache, \
             0 image(s), 0 B from sidecars"
        );
        assert_eq!((ino(BOX_1_0), ino(BOX_1_1)), inodes);
        assert_eq!(crate::common::snapshot_tree(&fixture.path("public")), first);
    }
}

/// In link mode, with the spare holding the images' links but not the
/// boxes (vagrant was turned on one build before), turning zsync on reads
/// the images for their control files: each box is taken from the output
/// once (the same inode) and kept, not taken again and made anew.
fn a_box_taken_while_its_image_is_read_for_another_file_is_kept() {
    let fixture = Fixture::new("ok-vagrant");
    let config = fixture.path("vmcast.toml");
    let text = fs::read_to_string(&config).unwrap();
    let with = |vagrant: bool, zsync: bool| {
        let top = format!("image_mode = \"link\"\nzsync = {zsync}\n\n[catalogs]");
        let text = text.replace("[catalogs]", &top);
        fs::write(
            &config,
            text.replace("vagrant = true", &format!("vagrant = {vagrant}")),
        )
        .unwrap();
    };
    let build = || cached_build(&fixture);
    let ino = |rel: &str| published_ino(&fixture, rel);
    with(false, false);
    build();
    build();
    with(true, false);
    build();
    let boxes = (ino(BOX_1_0), ino(BOX_1_1));
    with(true, true);
    let out = build();
    assert!(
        hashed_line(&out).starts_with("Hashed 3 image(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!((ino(BOX_1_0), ino(BOX_1_1)), boxes);
    assert!(
        fixture
            .path("public/images/webapp/1.1.0/webapp-1.1.0.qcow2.zsync")
            .exists()
    );
}

const UNPARSABLE: &str = "error: releases/webapp/1.2.0+b1/release.toml: version 1.2.0+b1 cannot \
     be a Vagrant box version: Vagrant (Gem::Version) takes numbers and letters in dot-separated \
     parts, starting with a number, with an optional `-pre.release` suffix, and no `+`, `~` or \
     `_`; rename the release or turn off [catalogs] vagrant\n";

/// Vagrant parses versions with Gem::Version, which refuses `+`: the whole
/// catalog would be refused. The build stops before hashing, naming the
/// release.toml, and the previous output stays as it was; `check`
/// (which knows which images are qcow2) says so before any build.
fn a_version_vagrant_cannot_parse_is_refused() {
    let fixture = Fixture::new("ok-vagrant");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let before = crate::common::snapshot_tree(&fixture.path("public"));
    let dir = fixture.path("releases/webapp/1.2.0+b1");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("release.toml"),
        "version = \"1.2.0+b1\"\ndate = 2026-03-01\nnotes = \"Rebuilt.\"\n",
    )
    .unwrap();
    fs::copy(
        fixture.path("releases/webapp/1.1.0/webapp-1.1.0.qcow2"),
        dir.join("webapp-1.2.0+b1.qcow2"),
    )
    .unwrap();
    let out = fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", LATER)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), UNPARSABLE);
    assert_eq!(
        crate::common::snapshot_tree(&fixture.path("public")),
        before
    );

    let out = fixture.run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), UNPARSABLE);
    assert_eq!(stdout(&out), "checked 3 release(s): 1 problem(s)\n");
}

/// A runner holding only the newest release's image builds on the
/// published site: the older release's box stays where it was published,
/// and the catalog still lists it, its facts from the verified feed.
fn previous_keeps_the_boxes_of_releases_whose_images_are_absent() {
    let fixture = Fixture::new("ok-vagrant");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    fs::remove_file(fixture.path("releases/webapp/1.0.0/webapp-1.0.0.qcow2")).unwrap();
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", LATER)],
    );
    assert_success(&out);
    assert!(stdout(&out).ends_with(SUMMARY), "{}", stdout(&out));
    assert_eq!(
        fs::read_to_string(fixture.path(CATALOG)).unwrap(),
        fs::read_to_string(fixture.path("published/vagrant/webapp.json")).unwrap()
    );
    assert!(!fixture.path(&format!("public/{BOX_1_0}")).exists());
    let old = fs::read(fixture.path(&format!("published/{BOX_1_0}"))).unwrap();
    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("{}  {BOX_1_0}\n", sha256(&old))),
        "{sums}"
    );
}

/// Vagrant turned off on a site that had it: no catalog offers the boxes
/// any more, so the feed names none, for the release taken unread from the
/// previous site as for the one read here, and the site verifies.
fn turning_vagrant_off_drops_the_boxes_of_previous_releases_too() {
    let fixture = Fixture::new("ok-vagrant");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    fs::remove_file(fixture.path("releases/webapp/1.0.0/webapp-1.0.0.qcow2")).unwrap();
    let config = fixture.path("vmcast.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, text.replace("vagrant = true", "vagrant = false")).unwrap();
    assert_success(&fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", LATER)],
    ));
    assert!(!fixture.path("public/vagrant").exists());
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert!(!feed.contains("vagrantBox"), "{feed}");
    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    assert!(!sums.contains("vagrant/"), "{sums}");
    assert_success(&verify(&fixture, &[]));
}

/// `vagrant` with its state in the fixture; bounded by `timeout`, no
/// update check.
fn vagrant(fixture: &Fixture, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg("vagrant")
        .args(args)
        .env("VAGRANT_HOME", fixture.tmp.path().join("vagrant-home"))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_NO_COLOR", "1")
        .current_dir(fixture.tmp.path())
        .output()
        .unwrap()
}

/// The real client against `vmcast-gen serve` (which sends the catalog as
/// `application/json`, without which vagrant takes it for a box): a
/// version constraint, the list, the outdated check, a box with one
/// flipped byte refused, and the newest box added once it is whole.
fn vagrant_adds_lists_and_checks_boxes_from_serve() {
    let fixture = Fixture::new("ok-vagrant");
    let server = crate::serve::start(&fixture);
    let url = format!("{}vagrant/webapp.json", server.base);

    let out = vagrant(&fixture, &["box", "add", &url, "--box-version", "< 1.1"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("Successfully added box 'webapp' (v1.0.0) for 'libvirt'!"),
        "{}",
        stdout(&out)
    );
    let out = vagrant(&fixture, &["box", "outdated", "--global"]);
    assert_success(&out);
    assert!(
        stdout(&out)
            .contains("* 'webapp' for 'libvirt' is outdated! Current: 1.0.0. Latest: 1.1.0"),
        "{}",
        stdout(&out)
    );

    let newest = server.site.join(BOX_1_1);
    let whole = fs::read(&newest).unwrap();
    let mut flipped = whole.clone();
    flipped[1000] ^= 1;
    let tmp = newest.with_extension("tmp");
    fs::write(&tmp, &flipped).unwrap();
    fs::rename(&tmp, &newest).unwrap();
    let out = vagrant(&fixture, &["box", "add", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("The checksum of the downloaded box did not match"),
        "{}",
        stderr(&out)
    );

    fs::write(&tmp, &whole).unwrap();
    fs::rename(&tmp, &newest).unwrap();
    assert_success(&vagrant(&fixture, &["box", "add", &url]));
    let out = vagrant(&fixture, &["box", "list"]);
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "webapp (libvirt, 1.0.0)\nwebapp (libvirt, 1.1.0)\n"
    );
    let added = fixture
        .tmp
        .path()
        .join("vagrant-home/boxes/webapp/1.1.0/libvirt/box.img");
    assert_eq!(
        fs::read(added).unwrap(),
        fs::read(fixture.path("releases/webapp/1.1.0/webapp-1.1.0.qcow2")).unwrap()
    );
}

/// The previous site was built before `vagrant` was turned on: its feed
/// names no box for the release whose image is not here, and no box can be
/// made without the image. The catalog lists the other release, and the
/// summary says why this one is missing.
fn previous_without_boxes_leaves_the_release_out_with_the_reason() {
    let fixture = Fixture::new("ok-vagrant");
    let config = fixture.path("vmcast.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, text.replace("vagrant = true", "vagrant = false")).unwrap();
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    assert!(!fixture.path("public/vagrant").exists());
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    fs::remove_file(fixture.path("releases/webapp/1.0.0/webapp-1.0.0.qcow2")).unwrap();
    fs::write(&config, text).unwrap();
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", LATER)],
    );
    assert_success(&out);
    assert!(
        stdout(&out).ends_with(
            "Catalog vagrant: vagrant/webapp.json; skipped 2 image(s):\n  \
             images/webapp/1.0.0/webapp-1.0.0.qcow2: its box is not in the previous site's feed\n  \
             images/webapp/1.1.0/webapp-1.1.0.raw: a libvirt box holds a plain qcow2 image only\n"
        ),
        "{}",
        stdout(&out)
    );
    let catalog = fs::read_to_string(fixture.path(CATALOG)).unwrap();
    assert!(!catalog.contains("\"1.0.0\""), "{catalog}");
    assert!(catalog.contains(&format!("/site/{BOX_1_1}\"")), "{catalog}");
}

/// `publish` uploads the boxes before the catalog and the feeds that point
/// at them, caches them like images, and stores the catalog as
/// `application/json`: the real client adds the newest box straight from
/// the bucket, and `verify --images` reads the boxes there.
#[cfg(feature = "publish")]
fn published_catalog_is_json_and_boxes_go_first() {
    use crate::publish::{http, moto, publish, site_of, uploads};
    let bucket = "boxes";
    let moto = moto(bucket);
    let fixture = site_of("ok-vagrant", moto.port, bucket);
    assert_success(&fixture.build(&[]));
    let out = publish(&fixture, moto.port, bucket, &[], &[]);
    assert_success(&out);
    let order = uploads(&out);
    let at = |path: &str| order.iter().position(|u| u == path).unwrap();
    assert!(
        at(BOX_1_0).max(at(BOX_1_1)) < at("vagrant/webapp.json").min(at("SHA256SUMS")),
        "{order:?}"
    );
    for (path, kind, cache) in [
        (
            "vagrant/webapp.json",
            "application/json",
            "public, max-age=300",
        ),
        (
            BOX_1_1,
            "application/octet-stream",
            "public, max-age=31536000, immutable",
        ),
    ] {
        let (status, headers, _) = http(moto.port, "HEAD", &format!("/{bucket}/site/{path}"));
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert!(
            headers.contains(&format!("content-type: {kind}\r\n")),
            "{path}: {headers}"
        );
        assert!(
            headers.contains(&format!("cache-control: {cache}")),
            "{path}: {headers}"
        );
    }
    let out = crate::publish::verify(&fixture, moto.port, bucket);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("  ok   images    {BOX_1_1}: ")),
        "{}",
        stdout(&out)
    );
    let url = format!(
        "http://127.0.0.1:{}/{bucket}/site/vagrant/webapp.json",
        moto.port
    );
    let out = vagrant(&fixture, &["box", "add", &url]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("Successfully added box 'webapp' (v1.1.0) for 'libvirt'!"),
        "{}",
        stdout(&out)
    );
}
