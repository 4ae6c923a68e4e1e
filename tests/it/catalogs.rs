//! The catalogs besides the RSS feeds (`[catalogs]`): each written from the
//! same build, listed in SHA256SUMS, checked by `verify` against the feeds,
//! and read by the real clients of its ecosystem.

use std::fs;
use std::process::Command;

use crate::common::{EPOCH, Fixture, assert_success, stderr, stdout};
use crate::verify::{kat_key, relist, resign};

tests! {
    json_feed_lists_the_feeds_releases_signed_and_listed;
    a_json_feed_that_disagrees_with_the_feed_fails_verify;
    json_feed_pages_pass_the_json_feed_1_1_schema needs JSONSCHEMA;
    json_feed_with_supply_chain_and_boxes_passes_the_schema needs JSONSCHEMA;
    a_json_feed_sbom_that_disagrees_with_the_feed_fails_verify;
    a_json_feed_box_that_disagrees_with_the_feed_fails_verify;
    a_json_feed_without_the_feeds_provenance_fails_verify;
}

const KAT_PUB: &str = "../known-answer/kat.pub";

fn with_json_feed(name: &str) -> Fixture {
    let fixture = Fixture::new(name);
    fixture.configure("\n[catalogs]\njson_feed = true\n");
    fixture
}

fn verify(fixture: &Fixture) -> std::process::Output {
    fixture.run(&["verify", "public", "--pubkey", KAT_PUB], &[])
}

fn json_feed_lists_the_feeds_releases_signed_and_listed() {
    let fixture = with_json_feed("ok-multi-appliance");
    let out = fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("\nCatalog json_feed: feed.json\n"),
        "{}",
        stdout(&out)
    );
    insta::assert_snapshot!(
        "json_feed",
        fs::read_to_string(fixture.path("public/feed.json")).unwrap()
    );
    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    assert!(sums.contains("  feed.json\n"), "{sums}");
    assert!(fixture.path("public/feed.json.minisig").is_file());

    let out = verify(&fixture);
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "  ok   signature feed.json: good prehashed signature by key 9846815B1BF4E0B5\n"
        ),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("  ok   catalog   feed.json: 3 release(s), as the feed lists them\n"),
        "{}",
        stdout(&out)
    );
}

/// A JSON Feed signed by the publisher's key and listed in the manifest,
/// but whose facts are not the RSS feed's: what a compromised build or a
/// bug would publish. `verify` names the image and both digests.
fn a_json_feed_that_disagrees_with_the_feed_fails_verify() {
    let fixture = with_json_feed("ok-minimal");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let path = fixture.path("public/feed.json");
    let json = fs::read_to_string(&path).unwrap();
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    let real = feed
        .split("sha256=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let evil = "e".repeat(64);
    fs::write(&path, json.replace(&real, &evil)).unwrap();
    let key = kat_key();
    resign(&fixture, "public/feed.json", &key);
    relist(&fixture, "public", "feed.json");
    resign(&fixture, "public/SHA256SUMS", &key);

    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: feed.json: item vmcast:webapp:1.1.0: https://downloads.example.com/site/images/webapp/1.1.0/webapp-1.1.0.raw \
             is 366 bytes, SHA-256 {evil}; the feed says 366 bytes, {real}\n"
        )
    );
}

/// Every page of the JSON Feed, the current one and each archive page,
/// passes the JSON Feed 1.1 schema (vendored: the registries' validators
/// know only 1.0), and following `next_url` from feed.json reaches every
/// release exactly once.
fn json_feed_pages_pass_the_json_feed_1_1_schema() {
    let fixture = with_json_feed("ok-minimal");
    fs::remove_dir_all(fixture.path("releases")).unwrap();
    for i in 0..25 {
        let dir = fixture.path(&format!("releases/webapp/1.{i}.0"));
        fs::create_dir_all(&dir).unwrap();
        let date =
            chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Days::new(i as u64);
        fs::write(
            dir.join("release.toml"),
            format!("version = \"1.{i}.0\"\ndate = {date}\nnotes = \"Release *{i}*.\"\n"),
        )
        .unwrap();
        fs::write(dir.join(format!("webapp-1.{i}.0.raw")), format!("{i}\n")).unwrap();
    }
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    fs::write(
        fixture.path("vmcast.toml"),
        format!("feed_items = 3\n{config}"),
    )
    .unwrap();
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    assert!(fixture.path("public/archive/2.json").is_file());

    let out = check_json_feed_schema(
        &fixture.path("public"),
        "https://downloads.example.com/site/",
    );
    assert_success(&out);
    // 25 releases, 3 kept current: two archives of 10, the other 5 current.
    assert_eq!(stdout(&out), "3 25 25\n");
}

/// Checks every page of the JSON Feed in `site` (whose base URL is `base`)
/// against the JSON Feed 1.1 schema, following `next_url` from feed.json,
/// and prints how many pages, items and distinct items it read.
fn check_json_feed_schema(site: &std::path::Path, base: &str) -> std::process::Output {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas/jsonfeed-1.1.schema.json");
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
base = sys.argv[2]
name, seen, pages = "feed.json", [], 0
while name:
    page = json.load(open(name))
    errors = [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(page)]
    if errors:
        sys.exit("\n".join(errors))
    if page.get("next_url") == page.get("feed_url"):
        sys.exit(f"{name}: next_url is feed_url")
    seen += [item["id"] for item in page["items"]]
    pages += 1
    name = page.get("next_url", "").removeprefix(base)
print(pages, len(seen), len(set(seen)))
"#;
    Command::new("python3")
        .args(["-c", script])
        .arg(&schema)
        .arg(base)
        .current_dir(site)
        .output()
        .unwrap()
}

/// The example site's feed.json, whose items carry SBOMs, provenance and
/// Vagrant boxes in `_vmcast`, passes the JSON Feed 1.1 schema too.
fn json_feed_with_supply_chain_and_boxes_passes_the_schema() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("public");
    let out = crate::common::vmcast(repo, &["build", "--out", site.to_str().unwrap()], &[]);
    assert_success(&out);
    let json = fs::read_to_string(site.join("feed.json")).unwrap();
    for member in ["\"sboms\"", "\"provenance\"", "\"vagrant_box\""] {
        assert!(json.contains(member), "{member} in {json}");
    }
    let out = check_json_feed_schema(&site, "https://downloads.example.com/appliances/");
    assert_success(&out);
    assert_eq!(stdout(&out), "1 4 4\n");
}

/// Rewrites `feed.json` of a built fixture, replacing `real` with `evil`,
/// and signs and lists it again with the publisher's key: what a
/// compromised build or a bug would publish.
fn forge_json_feed(fixture: &Fixture, real: &str, evil: &str) {
    let path = fixture.path("public/feed.json");
    let json = fs::read_to_string(&path).unwrap();
    assert_eq!(json.matches(real).count(), 1, "{real} in {json}");
    fs::write(&path, json.replace(real, evil)).unwrap();
    let key = kat_key();
    resign(fixture, "public/feed.json", &key);
    relist(fixture, "public", "feed.json");
    resign(fixture, "public/SHA256SUMS", &key);
}

/// The value of attribute `name` on the feed.xml line that holds `marker`.
fn feed_attribute(fixture: &Fixture, marker: &str, name: &str) -> String {
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    let line = feed.lines().find(|l| l.contains(marker)).unwrap();
    let (_, rest) = line.split_once(&format!(" {name}=\"")).unwrap();
    rest.split('"').next().unwrap().to_owned()
}

/// The JSON Feed carries what the RSS feed says of the supply-chain files,
/// and `verify` holds it to that: an SBOM digest the signed feed.xml does
/// not give fails, naming the item, the file and both digests.
fn a_json_feed_sbom_that_disagrees_with_the_feed_fails_verify() {
    let fixture = with_json_feed("supply-chain");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    assert_success(&verify(&fixture));
    let real = feed_attribute(&fixture, "name=\"webapp-1.0.0.spdx.json\"", "sha256");
    let evil = "e".repeat(64);
    forge_json_feed(&fixture, &real, &evil);

    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: feed.json: item vmcast:webapp:1.0.0: sbom \
             https://downloads.example.com/site/images/webapp/1.0.0/webapp-1.0.0.spdx.json \
             is 662 bytes, SHA-256 {evil}; the feed says 662 bytes, {real}\n"
        )
    );
}

/// Likewise the Vagrant box of an image: a JSON Feed that sends its
/// readers to other bytes than the signed feed.xml names fails `verify`.
fn a_json_feed_box_that_disagrees_with_the_feed_fails_verify() {
    let fixture = Fixture::new("ok-vagrant");
    // Its vmcast.toml ends in [catalogs].
    fixture.configure("json_feed = true\n");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    assert_success(&verify(&fixture));
    let real = feed_attribute(&fixture, "name=\"webapp-1.1.0.qcow2\"", "vagrantBoxSha256");
    let length = feed_attribute(&fixture, "name=\"webapp-1.1.0.qcow2\"", "vagrantBoxLength");
    let evil = "e".repeat(64);
    forge_json_feed(&fixture, &real, &evil);

    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: feed.json: item vmcast:webapp:1.1.0: \
             https://downloads.example.com/site/images/webapp/1.1.0/webapp-1.1.0.qcow2: Vagrant \
             box vagrant/webapp/1.1.0/webapp-1.1.0.box is {length} bytes, SHA-256 {evil}; the \
             feed says {length} bytes, {real}\n"
        )
    );
}

/// A JSON Feed that leaves out what feed.xml links, as one written before
/// `sboms` and `provenance` existed does: its readers would not learn of
/// the provenance. `verify` names the item and each file left out.
fn a_json_feed_without_the_feeds_provenance_fails_verify() {
    let fixture = with_json_feed("supply-chain");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", EPOCH)]));
    let path = fixture.path("public/feed.json");
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let facts = json["items"][0]["_vmcast"].as_object_mut().unwrap();
    assert!(facts.remove("provenance").is_some());
    fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let key = kat_key();
    resign(&fixture, "public/feed.json", &key);
    relist(&fixture, "public", "feed.json");
    resign(&fixture, "public/SHA256SUMS", &key);

    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let base = "https://downloads.example.com/site/images/webapp/1.0.0";
    assert_eq!(
        stderr(&out),
        format!(
            "error: feed.json: item vmcast:webapp:1.0.0: the feed's provenance \
             {base}/release.intoto.jsonl is missing\n\
             error: feed.json: item vmcast:webapp:1.0.0: the feed's provenance \
             {base}/webapp-1.0.0.raw.intoto.jsonl is missing\n"
        )
    );
}
