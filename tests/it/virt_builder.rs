//! `[catalogs] virt_builder`: `virt-builder/index` for the images
//! virt-builder takes, their SHA-512 computed in the same read as the
//! SHA-256 and only for them, kept by the cache, sidecars and the feed,
//! checked by `verify`, and read by the real virt-builder.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{EPOCH, Fixture, assert_success, copy_tree, stderr, stdout};
use crate::verify::{kat_key, relist, resign};

tests! {
    index_lists_what_virt_builder_takes_and_says_why_not_the_rest;
    one_image_per_release_and_arch_and_section_names_virt_builder_reads;
    an_index_that_disagrees_with_the_feed_fails_verify;
    verify_checks_the_clearsigned_index;
    sha512_is_computed_once_for_the_listed_images_then_cached;
    sidecars_carry_the_sha512_when_made_with_it;
    images_on_another_host_are_skipped_and_get_no_sha512;
    build_on_previous_keeps_the_index_complete;
    an_invalid_osinfo_is_refused_at_its_line;
    virt_builder_lists_the_index_and_refuses_a_flipped_byte needs VIRT_BUILDER;
    virt_builder_reads_the_index_over_http_from_a_repos_d_entry needs VIRT_BUILDER;
    virt_builder_checks_the_clearsigned_index_against_its_gpgkey needs VIRT_BUILDER, GPG;
}

const KAT_PUB: &str = "../known-answer/kat.pub";
const XZ: &str = "releases/webapp/1.0.0/webapp-1.0.0.raw.xz";
const QCOW2: &str = "releases/webapp/1.1.0/webapp-1.1.0.qcow2";
const GZ: &str = "releases/webapp/1.1.0/webapp-1.1.0.raw.gz";

const SKIPPED: &str = "Catalog virt_builder: virt-builder/index; skipped 2 image(s):
  images/dbnode/2.0.0/dbnode-2.0.0.raw: no arch, which virt-builder requires: set `arch` under [requirements] in its release.toml
  images/webapp/1.1.0/webapp-1.1.0.raw.gz: gzip-compressed; virt-builder takes xz or no compression
";

fn build(fixture: &Fixture, extra: &[&str]) -> Output {
    let out = fixture.run(
        &[&["build"], extra].concat(),
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    assert_success(&out);
    out
}

/// The summary's second line, without the time and rate.
fn hashed(out: &Output) -> String {
    let text = stdout(out);
    let line = text.lines().nth(1).unwrap();
    let (counts, rest) = line.split_once(" bytes), in ").unwrap();
    format!("{counts} bytes); {}", rest.split_once("; ").unwrap().1)
}

fn verify(fixture: &Fixture) -> Output {
    fixture.run(&["verify", "public", "--pubkey", KAT_PUB], &[])
}

fn sha512_of(fixture: &Fixture, rel: &str) -> String {
    vmcast_gen::model::Sha512::of(&fs::read(fixture.path(rel)).unwrap()).to_hex()
}

fn read(fixture: &Fixture, rel: &str) -> String {
    fs::read_to_string(fixture.path(rel)).unwrap()
}

/// The `sha512` attributes of the feed's images, in order.
fn feed_sha512s(fixture: &Fixture) -> Vec<String> {
    read(fixture, "public/feed.xml")
        .split(" sha512=\"")
        .skip(1)
        .map(|s| s[..128].to_owned())
        .collect()
}

fn index_lists_what_virt_builder_takes_and_says_why_not_the_rest() {
    let fixture = Fixture::new("virt-builder");
    let out = build(&fixture, &[]);
    assert!(stdout(&out).ends_with(SKIPPED), "{}", stdout(&out));
    insta::assert_snapshot!(
        "virt_builder_index",
        read(&fixture, "public/virt-builder/index")
    );
    let sums = read(&fixture, "public/SHA256SUMS");
    assert!(sums.contains("  virt-builder/index\n"), "{sums}");
    // The feed carries the SHA-512 of the two listed images, and no other.
    assert_eq!(
        feed_sha512s(&fixture),
        [sha512_of(&fixture, QCOW2), sha512_of(&fixture, XZ)]
    );

    let out = verify(&fixture);
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "  ok   catalog   virt-builder/index: 2 template(s), as the feed lists them\n"
        ),
        "{}",
        stdout(&out)
    );
}

/// One image per release and arch: a second one virt-builder could take
/// is skipped, and not hashed for it. A version's `+` becomes `_` in the
/// section name, which takes only letters, digits and `- . _`.
fn one_image_per_release_and_arch_and_section_names_virt_builder_reads() {
    let fixture = Fixture::new("virt-builder");
    fs::write(
        fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw"),
        [7u8; 4096],
    )
    .unwrap();
    let dir = fixture.path("releases/webapp/1.2.0+b1");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("release.toml"),
        "version = \"1.2.0+b1\"\ndate = 2026-04-01\nnotes = \"Build 1.\"\n\n[requirements]\narch = \"aarch64\"\n",
    )
    .unwrap();
    fs::write(dir.join("webapp-1.2.0+b1.raw"), [8u8; 4096]).unwrap();
    let out = build(&fixture, &[]);
    assert!(
        stdout(&out).contains(
            "  images/webapp/1.1.0/webapp-1.1.0.raw: webapp-1.1.0.qcow2 is listed for \
             webapp-1.1.0 on x86_64; virt-builder takes one image per version and arch\n"
        ),
        "{}",
        stdout(&out)
    );
    let index = read(&fixture, "public/virt-builder/index");
    let sections: Vec<&str> = index.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        sections,
        ["[webapp-1.2.0_b1]", "[webapp-1.1.0]", "[webapp-1.0.0]"]
    );
    assert!(index.contains("\narch=aarch64\n"), "{index}");
    assert_eq!(feed_sha512s(&fixture).len(), 3);
}

/// An index listed in the signed manifest, but whose checksum is not the
/// one the signed feed gives: `verify` names the section and both.
fn an_index_that_disagrees_with_the_feed_fails_verify() {
    let fixture = Fixture::new("virt-builder");
    build(&fixture, &[]);
    let real = sha512_of(&fixture, QCOW2);
    let evil = "e".repeat(128);
    let path = fixture.path("public/virt-builder/index");
    fs::write(
        &path,
        read(&fixture, "public/virt-builder/index").replace(&real, &evil),
    )
    .unwrap();
    relist(&fixture, "public", "virt-builder/index");
    resign(&fixture, "public/SHA256SUMS", &kat_key());

    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: virt-builder/index: [webapp-1.1.0]: SHA-512 {evil}, the feed says {real} for \
             https://downloads.example.com/site/images/webapp/1.1.0/webapp-1.1.0.qcow2\n"
        )
    );
}

/// With an OpenPGP key, `verify` checks `virt-builder/index.asc` against
/// the listed `openpgp.asc`: it must sign the text of the index.
fn verify_checks_the_clearsigned_index() {
    let fixture = Fixture::new("virt-builder");
    fixture.configure("openpgp_key = \"../known-answer/openpgp-secret.asc\"\n");
    build(&fixture, &[]);
    let out = verify(&fixture);
    assert_success(&out);
    let good = stdout(&out)
        .lines()
        .find(|l| l.contains("virt-builder/index.asc"))
        .unwrap()
        .to_owned();
    assert!(
        good.starts_with("  ok   catalog   virt-builder/index.asc: good signature by OpenPGP key ")
            && good.ends_with(" of the text of virt-builder/index"),
        "{good}"
    );

    let path = fixture.path("public/virt-builder/index.asc");
    let signed = fs::read_to_string(&path).unwrap();
    fs::write(&path, signed.replace("size=65536", "size=65537")).unwrap();
    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let fingerprint = good
        .split("OpenPGP key ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(
        stderr(&out),
        format!(
            "error: virt-builder/index.asc: no signature by OpenPGP key {fingerprint} matches \
             its text\n"
        )
    );
}

/// Turning the index on reads again only the images it lists (the cache
/// has no SHA-512 for them yet), and the next build reads none.
fn sha512_is_computed_once_for_the_listed_images_then_cached() {
    let fixture = Fixture::new("virt-builder");
    let config = read(&fixture, "vmcast.toml");
    fs::write(
        fixture.path("vmcast.toml"),
        config.replace("virt_builder = true", "virt_builder = false"),
    )
    .unwrap();
    let cache = fixture.tmp.path().join("cache");
    let cache_arg = ["--cache-dir", cache.to_str().unwrap()];
    let out = build(&fixture, &cache_arg);
    assert_eq!(
        hashed(&out),
        "Hashed 4 image(s), 10.3 KiB (10535 bytes); not read: 0 image(s), 0 B from the cache, 0 image(s), 0 B from sidecars"
    );
    assert!(feed_sha512s(&fixture).is_empty());
    fs::write(fixture.path("vmcast.toml"), &config).unwrap();
    let out = build(&fixture, &cache_arg);
    assert_eq!(
        hashed(&out),
        "Hashed 2 image(s), 5.9 KiB (6012 bytes); not read: 2 image(s), 4.4 KiB from the cache, 0 image(s), 0 B from sidecars"
    );
    let cold = read(&fixture, "public/virt-builder/index");
    let out = build(&fixture, &cache_arg);
    assert_eq!(
        hashed(&out),
        "Hashed 0 image(s), 0 B (0 bytes); not read: 4 image(s), 10.3 KiB from the cache, 0 image(s), 0 B from sidecars"
    );
    assert_eq!(read(&fixture, "public/virt-builder/index"), cold);
}

/// `vmcast-gen hash --sha512` records the SHA-512 the index takes without
/// a read; a sidecar made without it still spares the read of images the
/// index does not list, and says why a listed one is read.
fn sidecars_carry_the_sha512_when_made_with_it() {
    let fixture = Fixture::new("virt-builder");
    let config = read(&fixture, "vmcast.toml");
    fs::write(
        fixture.path("vmcast.toml"),
        // A sidecar stands for the digest, not for the zsync control
        // file, which needs a read: none here.
        format!("trust_sidecars = true\nzsync = false\n{config}"),
    )
    .unwrap();
    let out = fixture.run(&["hash", QCOW2], &[]);
    assert_success(&out);
    let out = build(&fixture, &["--no-cache"]);
    assert_eq!(
        stderr(&out),
        format!(
            "warning: {QCOW2}.vmcast-hash: records no SHA-512, which the virt-builder index needs; \
             the image is read for it. Write sidecars with `vmcast-gen hash --sha512`\n"
        )
    );

    let files = [XZ, QCOW2, GZ, "releases/dbnode/2.0.0/dbnode-2.0.0.raw"];
    assert_success(&fixture.run(&[&["hash", "--sha512"], &files[..]].concat(), &[]));
    // Prove the sidecar's SHA-512 is taken and not the file's: change it.
    let real = sha512_of(&fixture, QCOW2);
    let fake = "ab".repeat(64);
    let sidecar = fixture.path(&format!("{QCOW2}.vmcast-hash"));
    let text = fs::read_to_string(&sidecar).unwrap();
    assert!(text.contains(&real), "{text}");
    fs::write(&sidecar, text.replace(&real, &fake)).unwrap();
    let out = build(&fixture, &["--no-cache"]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        hashed(&out),
        "Hashed 0 image(s), 0 B (0 bytes); not read: 0 image(s), 0 B from the cache, 4 image(s), 10.3 KiB from sidecars"
    );
    assert!(
        read(&fixture, "public/virt-builder/index").contains(&format!("checksum[sha512]={fake}\n"))
    );
    // A sidecar is a hint: `verify --images` reads every byte, SHA-512 too.
    let out = fixture.run(&["verify", "public", "--pubkey", KAT_PUB, "--images"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: images/webapp/1.1.0/webapp-1.1.0.qcow2: SHA-512 mismatch: the feed says \
             {fake}, the file hashes to {real}\n"
        )
    );
    assert!(
        stdout(&out).contains(
            "  ok   images    images/webapp/1.0.0/webapp-1.0.0.raw.xz: 380 bytes, SHA-256 and \
             SHA-512 match\n"
        ),
        "{}",
        stdout(&out)
    );
}

/// Images on another host than the site cannot be listed (virt-builder
/// takes only relative paths), so none is hashed for it.
fn images_on_another_host_are_skipped_and_get_no_sha512() {
    let fixture = Fixture::new("virt-builder");
    let config = read(&fixture, "vmcast.toml");
    fs::write(
        fixture.path("vmcast.toml"),
        format!("download_base_url = \"https://cdn.example.com/images/\"\n{config}"),
    )
    .unwrap();
    let out = build(&fixture, &[]);
    let text = stdout(&out);
    let skipped = text.split_once("Catalog virt_builder: ").unwrap().1;
    assert_eq!(
        skipped,
        "virt-builder/index; skipped 4 image(s):
  images/dbnode/2.0.0/dbnode-2.0.0.raw: no arch, which virt-builder requires: set `arch` under [requirements] in its release.toml
  images/webapp/1.1.0/webapp-1.1.0.qcow2: served from https://cdn.example.com/images/webapp/1.1.0/webapp-1.1.0.qcow2, not from the host of https://downloads.example.com/site/virt-builder/index; virt-builder takes only a file= path relative to the index
  images/webapp/1.1.0/webapp-1.1.0.raw.gz: gzip-compressed; virt-builder takes xz or no compression
  images/webapp/1.0.0/webapp-1.0.0.raw.xz: served from https://cdn.example.com/images/webapp/1.0.0/webapp-1.0.0.raw.xz, not from the host of https://downloads.example.com/site/virt-builder/index; virt-builder takes only a file= path relative to the index
"
    );
    assert_eq!(read(&fixture, "public/virt-builder/index"), "");
    assert!(feed_sha512s(&fixture).is_empty());
}

/// `build --previous` on a runner without the old images: their SHA-512
/// comes from the verified feed, and the index still lists them.
fn build_on_previous_keeps_the_index_complete() {
    let fixture = Fixture::new("virt-builder");
    build(&fixture, &[]);
    let before = read(&fixture, "public/virt-builder/index");
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    for image in [XZ, QCOW2, GZ] {
        fs::remove_file(fixture.path(image)).unwrap();
    }
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("Built on published (sequence 1790000000): 2 release(s), 3 image(s)"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).ends_with(SKIPPED), "{}", stdout(&out));
    assert_eq!(read(&fixture, "public/virt-builder/index"), before);
}

fn an_invalid_osinfo_is_refused_at_its_line() {
    let fixture = Fixture::new("virt-builder");
    let notes = fixture.path("releases/webapp/1.0.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(&notes, text.replace("\"debian12\"", "\"Debian 12\"")).unwrap();
    let out = fixture.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: releases/webapp/1.0.0/release.toml:3:10: invalid osinfo `Debian 12`: a libosinfo \
         short id such as `debian12` or `fedora-40`: lower-case letters, digits and . - _\n"
    );
    assert!(!fixture.path("public").exists());
}

/// virt-builder run without KVM or network, its caches and config in the
/// test's own directory; bounded in time.
fn virt_builder(fixture: &Fixture, args: &[&str]) -> Output {
    let home = fixture.tmp.path().join("vb");
    fs::create_dir_all(&home).unwrap();
    Command::new("timeout")
        .arg("120")
        .arg("virt-builder")
        .args(args)
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CONFIG_DIRS", "/nonexistent")
        .current_dir(&home)
        .output()
        .unwrap()
}

/// `virt-builder --list --list-format json`: (os-version, full name, size,
/// compressed size) of each template, in the index's order.
fn listed(fixture: &Fixture, source: &[&str]) -> Vec<(String, String, u64, String)> {
    let out = virt_builder(
        fixture,
        &[
            &["--list", "--list-format", "json", "--no-check-signature"],
            source,
        ]
        .concat(),
    );
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["os-version"].as_str().unwrap().to_owned(),
                t["full-name"].as_str().unwrap().to_owned(),
                t["size"].as_u64().unwrap(),
                t["compressed-size"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const TEMPLATES: [(&str, &str, u64, &str); 2] = [
    ("webapp-1.1.0", "webapp 1.1.0", 16 << 20, "5632"),
    ("webapp-1.0.0", "webapp 1.0.0", 65536, "380"),
];

fn expected() -> Vec<(String, String, u64, String)> {
    TEMPLATES
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), *c, d.to_string()))
        .collect()
}

const MISMATCH: &str = "sha512 checksum of template did not match the expected checksum!";

/// Builds `template` into a disk: with no appliance here, a good template
/// gets as far as opening the new disk; a bad one fails on its SHA-512.
fn build_template(fixture: &Fixture, template: &str, source: &[&str]) -> Output {
    let out = fixture.tmp.path().join("vb/out.img");
    virt_builder(
        fixture,
        &[
            &[template, "--no-check-signature", "--format", "raw", "-o"],
            &[out.to_str().unwrap()][..],
            source,
        ]
        .concat(),
    )
}

fn reached_the_disk(out: &Output) {
    assert!(!stderr(out).contains(MISMATCH), "{}", stderr(out));
    assert!(
        stdout(out).contains("Opening the new disk"),
        "{}\n{}",
        stdout(out),
        stderr(out)
    );
}

fn virt_builder_lists_the_index_and_refuses_a_flipped_byte() {
    let fixture = Fixture::new("virt-builder");
    build(&fixture, &[]);
    let site = fixture.path("public");
    let out = Command::new("virt-index-validate")
        .arg("virt-builder/index")
        .current_dir(&site)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "virt-builder/index validated OK\n");

    let index = format!("file://{}/virt-builder/index", site.display());
    let source = ["--source", index.as_str()];
    assert_eq!(listed(&fixture, &source), expected());
    reached_the_disk(&build_template(&fixture, "webapp-1.0.0", &source));

    // One byte flipped in the published image: virt-builder downloads it
    // and refuses it on its SHA-512.
    flip_a_byte(&site.join("images/webapp/1.1.0/webapp-1.1.0.qcow2"));
    let out = build_template(&fixture, "webapp-1.1.0", &source);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(MISMATCH), "{}", stderr(&out));
    assert!(!stdout(&out).contains("Opening the new disk"));
}

fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[100] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// The index served by `vmcast-gen serve` on 127.0.0.1, as a repository
/// in virt-builder's `repos.d`: its `file=../images/...` paths resolve
/// against the index's URL.
fn virt_builder_reads_the_index_over_http_from_a_repos_d_entry() {
    let fixture = Fixture::new("virt-builder");
    let server = crate::serve::start(&fixture);
    let repos = fixture.tmp.path().join("vb/config/virt-builder/repos.d");
    fs::create_dir_all(&repos).unwrap();
    fs::write(
        repos.join("vmcast.conf"),
        format!(
            "[vmcast]\nuri={}virt-builder/index\nproxy=off\n",
            server.base
        ),
    )
    .unwrap();
    assert_eq!(listed(&fixture, &[]), expected());
    reached_the_disk(&build_template(&fixture, "webapp-1.1.0", &[]));

    flip_a_byte(&server.site.join("images/webapp/1.0.0/webapp-1.0.0.raw.xz"));
    let out = build_template(&fixture, "webapp-1.0.0", &[]);
    assert!(stderr(&out).contains(MISMATCH), "{}", stderr(&out));
}

/// With an OpenPGP key, `virt-builder/index.asc` is the index clearsigned:
/// virt-builder, given the site's `openpgp.asc` as the repository's
/// `gpgkey=`, lists it with signature checks on, and refuses a tampered
/// copy.
fn virt_builder_checks_the_clearsigned_index_against_its_gpgkey() {
    let fixture = Fixture::new("virt-builder");
    fixture.configure("openpgp_key = \"../known-answer/openpgp-secret.asc\"\n");
    build(&fixture, &[]);
    let index = read(&fixture, "public/virt-builder/index");
    let signed = read(&fixture, "public/virt-builder/index.asc");
    let public = read(&fixture, "public/openpgp.asc");
    // The clearsigned text is the index byte for byte, lone spaces and
    // all: virt-builder parses the .asc itself.
    let head = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n";
    assert!(
        signed.starts_with(&format!("{head}{index}-----BEGIN PGP SIGNATURE-----\n")),
        "{signed}"
    );
    vmcast_gen::openpgp::verify(&public, "virt-builder/index.asc", &signed).unwrap();

    let server = crate::serve::start(&fixture);
    let repos = fixture.tmp.path().join("vb/config/virt-builder/repos.d");
    fs::create_dir_all(&repos).unwrap();
    fs::write(
        repos.join("vmcast.conf"),
        format!(
            "[vmcast]\nuri={}virt-builder/index.asc\ngpgkey=file://{}\nproxy=off\n",
            server.base,
            server.site.join("openpgp.asc").display()
        ),
    )
    .unwrap();
    let list = || virt_builder(&fixture, &["--list", "--list-format", "json"]);
    let out = list();
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["os-version"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["webapp-1.1.0", "webapp-1.0.0"]);

    let asc = server.site.join("virt-builder/index.asc");
    let text = fs::read_to_string(&asc).unwrap();
    fs::write(&asc, text.replace("size=65536", "size=65537")).unwrap();
    let out = list();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("GPG failure: could not verify digital signature of file"),
        "{}",
        stderr(&out)
    );
}
