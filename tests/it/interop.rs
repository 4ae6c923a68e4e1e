//! What we publish, checked with tools we did not write: xmllint, jing,
//! Python's feedparser, minisign and coreutils' sha256sum. Each check also
//! shows the tool rejecting a tampered copy, so none can pass by accident.
//! In CI (CI=true) a missing tool fails the test; .ci/run installs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::{assert_success, vmcast};

tests! {
    xmllint_finds_every_feed_well_formed needs XMLLINT;
    jing_validates_every_feed_against_the_shipped_schema needs JING;
    xmllint_relaxng_agrees_with_jing needs XMLLINT;
    feedparser_reads_every_release_with_exact_enclosure_lengths needs FEEDPARSER;
    minisign_verifies_every_feed_and_the_manifest needs MINISIGN;
    sha256sum_checks_the_manifest_strictly needs SHA256SUM;
    vmcast_verify_accepts_the_example_site;
    a_release_of_cloud_images_only_passes_the_outside_tools needs XMLLINT, JING, FEEDPARSER;
}

const SCHEMA: &str = "docs/schema/vmcast-feed.rng";
const SCHEMA_COMPACT: &str = "docs/schema/vmcast-feed.rnc";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example site, built once per test binary.
fn site() -> &'static Path {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-example-site");
        let result = vmcast(
            repo(),
            &["build", "--quiet", "--out", out.to_str().unwrap()],
            &[],
        );
        assert_success(&result);
        out
    })
}

/// Every feed of the example site, relative to it.
fn feeds() -> Vec<String> {
    let mut feeds = vec!["feed.xml".to_owned()];
    for entry in fs::read_dir(site().join("feeds")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".xml") {
            feeds.push(format!("feeds/{name}"));
        }
    }
    feeds.sort();
    assert_eq!(feeds.len(), 3, "{feeds:?}");
    feeds
}

fn run(program: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// A scratch copy of one file of the site, changed by `edit`.
fn tampered(file: &str, edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(Path::new(file).file_name().unwrap());
    let text = fs::read_to_string(site().join(file)).unwrap();
    let changed = edit(text.clone());
    assert_ne!(changed, text, "the edit changed nothing");
    fs::write(&path, changed).unwrap();
    (dir, path)
}

fn xmllint_finds_every_feed_well_formed() {
    for feed in feeds() {
        assert_success(&run("xmllint", &["--noout", &feed], site()));
    }
    let (_dir, broken) = tampered("feed.xml", |t| t.replace("</channel>", ""));
    assert!(
        !run("xmllint", &["--noout", broken.to_str().unwrap()], site())
            .status
            .success()
    );
}

fn jing_validates_every_feed_against_the_shipped_schema() {
    let schema = repo().join(SCHEMA);
    let compact = repo().join(SCHEMA_COMPACT);
    for feed in feeds() {
        assert_success(&run("jing", &[schema.to_str().unwrap(), &feed], site()));
        assert_success(&run(
            "jing",
            &["-c", compact.to_str().unwrap(), &feed],
            site(),
        ));
    }
    let (_d1, bad_format) = tampered("feed.xml", |t| {
        t.replacen("format=\"qcow2\"", "format=\"qcow3\"", 1)
    });
    let (_d2, bad_attr) = tampered("feed.xml", |t| {
        t.replacen("<vmcast:image ", "<vmcast:image colour=\"red\" ", 1)
    });
    let (_d3, bad_hash) = tampered("feed.xml", |t| t.replacen("sha256=\"", "sha256=\"A", 1));
    // The control file's element is checked too: its digest is what pull
    // checks the file against.
    let (_d4, bad_zsync) = tampered("feed.xml", |t| {
        let at = t
            .find("<vmcast:zsync ")
            .expect("the feed links a zsync control file");
        let end = at + t[at..].find("/>").unwrap();
        let sha = at + t[at..end].find(" sha256=\"").unwrap();
        let close = sha + " sha256=\"".len() + t[sha + " sha256=\"".len()..].find('"').unwrap();
        format!("{}{}", &t[..sha], &t[close + 1..])
    });
    for bad in [bad_format, bad_attr, bad_hash, bad_zsync] {
        let out = run(
            "jing",
            &[schema.to_str().unwrap(), bad.to_str().unwrap()],
            site(),
        );
        assert!(!out.status.success(), "jing accepted {bad:?}");
    }
}

fn xmllint_relaxng_agrees_with_jing() {
    let schema = repo().join(SCHEMA);
    for feed in feeds() {
        assert_success(&run(
            "xmllint",
            &["--noout", "--relaxng", schema.to_str().unwrap(), &feed],
            site(),
        ));
    }
}

fn feedparser_reads_every_release_with_exact_enclosure_lengths() {
    let releases = fs::read_dir(repo().join("example-site/releases"))
        .unwrap()
        .flat_map(|a| fs::read_dir(a.unwrap().path()).unwrap())
        .filter(|r| r.as_ref().unwrap().path().join("release.toml").is_file())
        .count();
    let script = r#"
import os, sys, feedparser
site, base, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = feedparser.parse(os.path.join(site, "feed.xml"))
assert d.bozo == 0, d.get("bozo_exception")
assert len(d.entries) == expected, (len(d.entries), expected)
assert d.feed.title == "Example Appliances", d.feed.title
for e in d.entries:
    assert e.id.startswith("vmcast:"), e.id
    assert e.vmcast_appliance and e.vmcast_version and e.vmcast_channel, e.keys()
    assert e.vmcast_critical in ("true", "false")
    assert len(e.enclosures) == 1, e.enclosures
    enc = e.enclosures[0]
    assert enc.href.startswith(base), enc.href
    local = os.path.join(site, enc.href[len(base):])
    assert int(enc.length) == os.path.getsize(local), (enc.href, enc.length)
    assert "<script" not in e.summary
print("feedparser: bozo=0, %d entries, enclosure lengths match" % len(d.entries))
"#;
    let out = run(
        "python3",
        &[
            "-c",
            script,
            site().to_str().unwrap(),
            "https://downloads.example.com/appliances/",
            &releases.to_string(),
        ],
        site(),
    );
    assert_success(&out);
}

fn minisign_verifies_every_feed_and_the_manifest() {
    let public = fs::read_to_string(site().join("vmcast.pub")).unwrap();
    let key_line = public.lines().nth(1).unwrap().to_owned();
    let mut files = feeds();
    files.push("SHA256SUMS".into());
    for file in &files {
        let out = run(
            "minisign",
            &["-V", "-H", "-p", "vmcast.pub", "-m", file],
            site(),
        );
        assert_success(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("file:{file}\t")), "{stdout}");
        assert_success(&run(
            "minisign",
            &["-V", "-H", "-P", &key_line, "-m", file],
            site(),
        ));
    }
    // One byte changed: minisign must refuse it.
    let (dir, evil) = tampered("feed.xml", |t| t.replacen("WebApp", "WebAqp", 1));
    fs::copy(
        site().join("feed.xml.minisig"),
        dir.path().join("feed.xml.minisig"),
    )
    .unwrap();
    let out = run(
        "minisign",
        &["-V", "-H", "-P", &key_line, "-m", evil.to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success(), "minisign accepted a tampered feed");
}

fn sha256sum_checks_the_manifest_strictly() {
    assert_success(&run("sha256sum", &["-c", "--strict", "SHA256SUMS"], site()));
    // A copy of the site with one image byte flipped must fail.
    let copy = tempfile::tempdir().unwrap();
    crate::common::copy_tree(site(), copy.path());
    let image = copy.path().join("images/webapp/1.4.0/webapp-1.4.0.qcow2");
    let mut bytes = fs::read(&image).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&image, bytes).unwrap();
    let out = run("sha256sum", &["-c", "--strict", "SHA256SUMS"], copy.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("images/webapp/1.4.0/webapp-1.4.0.qcow2: FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn vmcast_verify_accepts_the_example_site() {
    let out = vmcast(
        repo(),
        &[
            "verify",
            site().to_str().unwrap(),
            "--pubkey",
            "example-site/keys/TEST-ONLY-DO-NOT-USE.pub",
            "--images",
        ],
        &[],
    );
    assert_success(&out);
}

/// A site with a release of cloud images only: its item has no enclosure,
/// which RSS allows. xmllint, jing (both schema syntaxes) and feedparser
/// accept the feed; feedparser sees no enclosure on that item and the
/// primary image's on the other.
fn a_release_of_cloud_images_only_passes_the_outside_tools() {
    let fixture = crate::common::Fixture::new("cloud-only-release");
    assert_success(&fixture.build(&["--quiet"]));
    let public = fixture.path("public");
    let schema = repo().join(SCHEMA);
    let compact = repo().join(SCHEMA_COMPACT);
    assert_success(&run(
        "xmllint",
        &["--noout", "--relaxng", schema.to_str().unwrap(), "feed.xml"],
        &public,
    ));
    assert_success(&run(
        "jing",
        &[schema.to_str().unwrap(), "feed.xml"],
        &public,
    ));
    assert_success(&run(
        "jing",
        &["-c", compact.to_str().unwrap(), "feed.xml"],
        &public,
    ));
    let script = r#"
import feedparser
d = feedparser.parse("feed.xml")
assert d.bozo == 0, d.get("bozo_exception")
enclosures = {e.id: [x.href for x in e.enclosures] for e in d.entries}
assert enclosures == {
    "vmcast:webapp:1.1.0": [],
    "vmcast:webapp:1.0.0": ["https://downloads.example.com/site/images/webapp/1.0.0/webapp-1.0.0.raw"],
}, enclosures
"#;
    assert_success(&run("python3", &["-c", script], &public));
}
