//! `build --previous`: a release from a runner that holds only the new
//! release's images, built on the published site, and each refusal.

use std::fs;
use std::path::Path;

use crate::common::{EPOCH, Fixture, assert_success, copy_tree, stderr, stdout};

tests! {
    releases_without_local_images_keep_the_published_ones_unread;
    a_previous_site_that_does_not_verify_is_refused;
    a_previous_site_signed_by_another_key_is_refused;
    a_build_not_newer_than_the_previous_site_is_refused;
    a_changed_image_under_a_published_name_is_refused_unless_replaced;
    an_expired_previous_site_is_built_on_with_a_warning;
    a_release_gone_from_the_tree_leaves_the_feed_with_a_warning;
    a_published_release_of_cloud_images_only_is_built_on;
    previous_carries_every_fact_of_every_item_byte_for_byte;
}

const LATER: &str = "1790086400";

/// The site serves images itself, and old ones are not in the output.
const WHOLE_SITE: &str = "warning: the images of releases taken from the previous site are not \
     in public: upload it with `vmcast-gen publish`, which keeps them; a host that replaces the \
     whole site on deploy (GitHub Pages) would drop them. To deploy whole sites, serve images \
     from download_base_url (release assets, a bucket)\n";

/// ok-minimal built and "published" into `published/`, then the local
/// images of both releases removed, as on a fresh CI runner.
fn published_site() -> Fixture {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.build(&[]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    for v in ["1.0.0", "1.1.0"] {
        fs::remove_file(fixture.path(&format!("releases/webapp/{v}/webapp-{v}.raw"))).unwrap();
    }
    fixture
}

fn build_on(fixture: &Fixture, extra: &[&str], epoch: &str) -> std::process::Output {
    let mut args = vec!["build", "--previous", "published"];
    args.extend_from_slice(extra);
    fixture.run(&args, &[("SOURCE_DATE_EPOCH", epoch)])
}

fn releases_without_local_images_keep_the_published_ones_unread() {
    let fixture = published_site();
    fixture.add_webapp_release("1.2.0", &[9u8; 3000]);
    let out = build_on(&fixture, &[], LATER);
    assert_success(&out);
    assert_eq!(stderr(&out), WHOLE_SITE);
    assert!(
        stdout(&out).contains(
            "Built on published (sequence 1790000000): 2 release(s), 2 image(s), 804 B taken from it unread\n"
        ),
        "{}",
        stdout(&out)
    );
    // The feed has all three releases; the manifest lists every image with
    // the digest published before; the output holds only the new image.
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        assert!(feed.contains(&format!("vmcast:webapp:{v}")), "{v}");
    }
    let old_sums = fs::read_to_string(fixture.path("published/SHA256SUMS")).unwrap();
    let new_sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    for line in old_sums.lines().filter(|l| l.contains("  images/")) {
        assert!(new_sums.contains(line), "{line} missing from\n{new_sums}");
    }
    let images = fixture.path("public/images/webapp");
    let mut present: Vec<_> = fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    present.sort();
    assert_eq!(present, ["1.2.0"]);
    // Published together (the old images stay where they are), the site
    // verifies, images and all.
    copy_tree(
        &fixture.path("published/images"),
        &fixture.path("public/images"),
    );
    let verified = fixture.run(
        &[
            "verify",
            "public",
            "--pubkey",
            "../known-answer/kat.pub",
            "--images",
        ],
        &[],
    );
    assert_success(&verified);
    assert!(
        stdout(&verified).contains("verified: 3 release(s), 3 image(s)"),
        "{}",
        stdout(&verified)
    );
}

fn a_previous_site_that_does_not_verify_is_refused() {
    let fixture = published_site();
    let feed = fixture.path("published/feed.xml");
    let text = fs::read_to_string(&feed).unwrap();
    fs::write(
        &feed,
        text.replace("Release 1.0.0.", "Release 1.0.0, tampered."),
    )
    .unwrap();
    let out = build_on(&fixture, &[], LATER);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(
            "error: --previous published: the previous site does not verify against key"
        ),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("feed.xml: signature does not match its contents"));
    assert!(!fixture.path("public").exists());
}

fn a_previous_site_signed_by_another_key_is_refused() {
    let fixture = published_site();
    let key = fixture.path("other.key");
    assert_success(&fixture.run(&["keygen", "-W", "-s", "other.key", "-p", "other.pub"], &[]));
    let out = fixture.run(
        &[
            "build",
            "--previous",
            "published",
            "--secret-key",
            key.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", LATER)],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("does not verify against key"), "{err}");
    assert!(err.contains("not the pinned key"), "{err}");
}

fn a_build_not_newer_than_the_previous_site_is_refused() {
    let fixture = published_site();
    let out = build_on(&fixture, &[], EPOCH);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --previous published: this build's sequence 1790000000 (SOURCE_DATE_EPOCH) is not \
         above the previous site's sequence 1790000000; consumers that keep state would refuse it \
         as a rollback. Set SOURCE_DATE_EPOCH above 1790000000 or unset it, or pass \
         --allow-rollback to build it anyway\n"
    );
}

fn a_changed_image_under_a_published_name_is_refused_unless_replaced() {
    let fixture = published_site();
    let image = fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw");
    fs::write(&image, [5u8; 366]).unwrap();
    let out = build_on(&fixture, &[], LATER);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let new = vmcast_gen::model::Sha256::of(&[5u8; 366]).to_hex();
    assert!(
        err.starts_with(&format!(
            "error: releases/webapp/1.1.0/webapp-1.1.0.raw: differs from the image the previous \
             site publishes as images/webapp/1.1.0/webapp-1.1.0.raw: here SHA-256 {new} (366 \
             bytes), published "
        )),
        "{err}"
    );
    let out = build_on(&fixture, &["--replace", "webapp-1.1.0.raw"], LATER);
    assert_success(&out);
}

fn an_expired_previous_site_is_built_on_with_a_warning() {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("expires_after = \"1d\"\n");
    assert_success(&fixture.build(&[]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    fs::remove_file(fixture.path("releases/webapp/1.0.0/webapp-1.0.0.raw")).unwrap();
    let out = build_on(&fixture, &[], LATER);
    assert_success(&out);
    assert!(
        stderr(&out).starts_with("warning: --previous published: expired at 2026-09-22T"),
        "{}",
        stderr(&out)
    );
}

fn a_release_gone_from_the_tree_leaves_the_feed_with_a_warning() {
    let fixture = published_site();
    fs::remove_dir_all(fixture.path("releases/webapp/1.0.0")).unwrap();
    let out = build_on(&fixture, &[], LATER);
    assert_success(&out);
    assert_eq!(
        stderr(&out),
        format!(
            "warning: webapp 1.0.0 is in the previous site but has no release.toml here; it \
             leaves the feed\n{WHOLE_SITE}"
        )
    );
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert!(!feed.contains("vmcast:webapp:1.0.0"));
    assert!(Path::new(&fixture.path("public/feed.xml")).is_file());
}

/// A published release of cloud images only (an item without images) is
/// no reason to refuse the previous site: its release.toml names its cloud
/// images again, and the release with a file keeps its published image.
fn a_published_release_of_cloud_images_only_is_built_on() {
    let fixture = Fixture::new("cloud-only-release");
    assert_success(&fixture.build(&[]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    fs::remove_file(fixture.path("releases/webapp/1.0.0/webapp-1.0.0.raw")).unwrap();
    let out = build_on(&fixture, &[], LATER);
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "Built on published (sequence 1790000000): 1 release(s), 1 image(s), 438 B taken from it unread\n"
        ),
        "{}",
        stdout(&out)
    );
    let before = fs::read_to_string(fixture.path("published/feed.xml")).unwrap();
    let after = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    let items = |feed: &str| feed[feed.find("<item>").unwrap()..].to_owned();
    assert_eq!(items(&after), items(&before));
}

/// The `<item>` elements of a feed document, by guid, as written.
fn items(xml: &str) -> Vec<(String, String)> {
    xml.split("<item>")
        .skip(1)
        .map(|rest| {
            let item = &rest[..rest.find("</item>").expect("an item ends")];
            let guid = item
                .split("<guid isPermaLink=\"false\">")
                .nth(1)
                .and_then(|g| g.split('<').next())
                .expect("an item has a guid");
            (guid.to_owned(), item.to_owned())
        })
        .collect()
}

/// The example site, with mirrors, archives and a cloud image besides
/// every catalog, SBOMs and provenance: a site that holds every kind of
/// fact the feed carries. Built, published, then rebuilt with
/// `--previous` from a runner that holds only the notes and one new
/// appliance's release: every carried item is written byte for byte as
/// the first build wrote it, in every document that holds it.
fn previous_carries_every_fact_of_every_item_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(&repo.join("example-site"), &root.join("example-site"));
    fs::remove_dir_all(root.join("example-site/public")).ok();
    let mut config = fs::read_to_string(repo.join("vmcast.toml")).unwrap();
    config = config.replacen(
        "[appliances.webapp]",
        "feed_items = 1\nmirrors = [\"https://mirror.example.net/appliances/\"]\n\n\
         [appliances.webapp]",
        1,
    );
    config.push_str("\n[appliances.newapp]\ntitle = \"New\"\n");
    fs::write(root.join("vmcast.toml"), config).unwrap();
    let notes = root.join("example-site/releases/webapp/1.4.0/release.toml");
    let mut text = fs::read_to_string(&notes).unwrap();
    text.push_str(
        "\n[[cloud_image]]\nprovider = \"aws\"\nregion = \"eu-west-1\"\n\
         id = \"ami-0fedcba9876543210\"\narch = \"x86_64\"\n",
    );
    fs::write(&notes, text).unwrap();
    // Ten older releases of webapp, so that an archive fills.
    let releases = root.join("example-site/releases/webapp");
    for k in 0..10 {
        let version = format!("1.2.{k}");
        let dir = releases.join(&version);
        fs::create_dir_all(&dir).unwrap();
        for entry in fs::read_dir(releases.join("1.3.2")).unwrap() {
            let entry = entry.unwrap();
            let name = entry
                .file_name()
                .to_string_lossy()
                .replace("1.3.2", &version);
            let data = fs::read_to_string(entry.path())
                .map(|t| {
                    t.replace("1.3.2", &version)
                        .replace("2026-03-03", &format!("2025-01-{:02}", k + 1))
                        .into_bytes()
                })
                .unwrap_or_else(|_| fs::read(entry.path()).unwrap());
            fs::write(dir.join(name), data).unwrap();
        }
    }
    let run = |args: &[&str], epoch: &str| {
        crate::common::vmcast(root, args, &[("SOURCE_DATE_EPOCH", epoch)])
    };
    assert_success(&run(&["build"], EPOCH));
    let first = root.join("example-site/public");
    copy_tree(&first, &root.join("published"));
    let docs = [
        "feed.xml",
        "feeds/webapp.xml",
        "feeds/dbnode.xml",
        "archive/1.xml",
    ];
    let before: Vec<String> = docs
        .iter()
        .map(|d| fs::read_to_string(first.join(d)).unwrap())
        .collect();
    for (_, item) in items(&before[0]) {
        for fact in [
            "sha512=",
            "lxdFingerprint=",
            "vagrantBox=",
            "vmcast:cloudImage",
            "vmcast:zsync",
        ] {
            assert!(before.iter().any(|d| d.contains(fact)), "no {fact}");
        }
        assert!(item.contains("mirror.example.net"), "{item}");
    }
    assert!(before[3].contains("vmcast:provenance") || before[0].contains("vmcast:provenance"));
    // A fresh runner: the notes of every published release, none of their
    // files, and a new appliance's first release.
    for entry in walkdir::WalkDir::new(root.join("example-site/releases")) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() && entry.file_name() != "release.toml" {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    let new = root.join("example-site/releases/newapp/1.0.0");
    fs::create_dir_all(&new).unwrap();
    fs::write(
        new.join("release.toml"),
        "version = \"1.0.0\"\ndate = 2026-06-01\nnotes = \"New.\"\n",
    )
    .unwrap();
    fs::write(new.join("newapp-1.0.0.raw"), [7u8; 4096]).unwrap();
    let out = run(&["build", "--previous", "published"], LATER);
    assert_success(&out);
    for (doc, before) in docs.iter().zip(&before) {
        let after = fs::read_to_string(first.join(doc)).unwrap();
        let after = items(&after);
        for (guid, item) in items(before) {
            let carried = after.iter().find(|(g, _)| *g == guid);
            assert_eq!(carried.map(|(_, i)| i), Some(&item), "{doc}: {guid}");
        }
    }
    assert_eq!(
        fs::read(first.join("archive/1.xml")).unwrap(),
        before[3].as_bytes()
    );
}
