//! Release plans remembered between builds (`src/scan/memo.rs`): a release
//! whose notes file, neighbours, config and program are as the last build
//! found them is not parsed nor planned again; anything else is planned
//! as a cold build plans it, and says what a cold build says.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Output;

use crate::cache::Site;
use crate::common::{assert_success, in_test_env, stderr, stdout};

tests! {
    a_warm_rebuild_plans_no_release_again;
    a_changed_notes_file_is_planned_again;
    a_file_added_beside_the_notes_is_planned_again;
    an_image_gone_from_a_remembered_release_fails_as_a_cold_build_does;
    another_config_or_no_trusted_cache_plans_every_release_again;
    another_program_reads_and_plans_every_release_again;
    a_release_outside_the_plain_case_is_planned_afresh_and_the_memo_left_alone;
}

/// Builds, and returns how many releases' plans were remembered.
fn remembered(site: &Site, extra: &[&str]) -> u64 {
    count(&site.run(&[&["--json"], extra].concat()))
}

/// How many releases' plans the build reporting `out` (`--json`)
/// remembered.
fn count(out: &Output) -> u64 {
    assert_success(out);
    let report: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
    report["plans_remembered"].as_u64().unwrap()
}

/// The feed a cold build (no cache, another output) makes of the same
/// inputs.
fn cold_feed(site: &Site) -> String {
    let out = site.fixture.tmp.path().join("cold");
    let cold = (site.fixture).build(&["--no-cache", "--out", out.to_str().unwrap()]);
    assert_success(&cold);
    fs::read_to_string(out.join("feed.xml")).unwrap()
}

/// The first build plans both releases; the next remembers both plans, and
/// publishes what a cold build does.
fn a_warm_rebuild_plans_no_release_again() {
    let site = Site::new();
    assert_eq!(remembered(&site, &[]), 0);
    assert_eq!(remembered(&site, &[]), 2);
    assert_eq!(remembered(&site, &[]), 2);
    assert_eq!(site.feed(), cold_feed(&site));
}

/// A notes file written to is in another state: parsed and planned again.
fn a_changed_notes_file_is_planned_again() {
    let site = Site::new();
    remembered(&site, &[]);
    let notes = site.fixture.path("releases/webapp/1.1.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(&notes, text.replace("One fix.", "One fix, planned again.")).unwrap();
    assert_eq!(remembered(&site, &[]), 1);
    assert!(site.feed().contains("One fix, planned again."));
    assert_eq!(site.feed(), cold_feed(&site));
}

/// A release directory that lists another file than its plan was made
/// beside is planned again: a second image is published.
fn a_file_added_beside_the_notes_is_planned_again() {
    let site = Site::new();
    remembered(&site, &[]);
    let second = "releases/webapp/1.1.0/webapp-1.1.0-data.raw";
    fs::write(site.fixture.path(second), b"more data\n").unwrap();
    assert_eq!(remembered(&site, &[]), 1);
    assert!(site.feed().contains("webapp-1.1.0-data.raw"));
    assert_eq!(site.feed(), cold_feed(&site));
}

/// A remembered plan's image must still be a regular file: one removed
/// (its directory lists other names) or replaced by a FIFO of its name
/// (the same names) is no shortcut, and the build fails as a cold build
/// does, saying so.
fn an_image_gone_from_a_remembered_release_fails_as_a_cold_build_does() {
    for (fifo, says) in [(false, "has no images"), (true, "is not a regular file")] {
        let site = Site::new();
        remembered(&site, &[]);
        let image = site.fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw");
        fs::remove_file(&image).unwrap();
        if fifo {
            let made = std::process::Command::new("mkfifo").arg(&image).status();
            assert!(made.unwrap().success());
        }
        let warm = site.run(&[]);
        let cold = site.run(&["--no-cache"]);
        assert!(!warm.status.success());
        assert!(stderr(&warm).contains(says), "{}", stderr(&warm));
        assert_eq!(stderr(&warm), stderr(&cold));
    }
}

/// Plans hang on the whole config: any change to it plans every release
/// again. `--verify-cache` and `--no-cache` take no plan from the memo.
fn another_config_or_no_trusted_cache_plans_every_release_again() {
    let site = Site::new();
    remembered(&site, &[]);
    assert_eq!(remembered(&site, &["--verify-cache"]), 0);
    assert_eq!(remembered(&site, &["--no-cache"]), 0);
    assert_eq!(remembered(&site, &[]), 2);
    site.fixture.configure("feed_items = 1\n");
    assert_eq!(remembered(&site, &[]), 0);
    assert_eq!(remembered(&site, &[]), 2);
}

/// What the scan remembers (the notes' HTML, the plans) serves only the
/// program that made it: a copy of the binary, another file, reads and
/// plans every release afresh, and the binary after it again.
fn another_program_reads_and_plans_every_release_again() {
    let site = Site::new();
    remembered(&site, &[]);
    assert_eq!(remembered(&site, &[]), 2);
    let copy = site.fixture.tmp.path().join("vmcast-gen-copy");
    fs::copy(env!("CARGO_BIN_EXE_vmcast-gen"), &copy).unwrap();
    let cache = site.cache.to_str().unwrap();
    let mut cmd = in_test_env(std::process::Command::new(&copy), &site.fixture.path(""));
    cmd.args(["build", "--json", "--cache-dir", cache]);
    assert_eq!(count(&cmd.output().unwrap()), 0);
    assert_eq!(remembered(&site, &[]), 0);
    assert_eq!(remembered(&site, &[]), 2);
    assert_eq!(site.feed(), cold_feed(&site));
}

/// A release whose notes list its images (`images = [...]`, whose globs
/// may reach other directories) is planned afresh on every build, its
/// notes still taken unread; a warm rebuild leaves the memo unwritten.
fn a_release_outside_the_plain_case_is_planned_afresh_and_the_memo_left_alone() {
    let site = Site::new();
    let notes = site.fixture.path("releases/webapp/1.1.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(&notes, format!("images = [\"webapp-1.1.0.raw\"]\n{text}")).unwrap();
    remembered(&site, &[]);
    assert_eq!(remembered(&site, &[]), 1);
    let memo = vmcast_gen::cache::HashCache::plans_file(&site.cache_file());
    // A memo written anew is another file (written aside, then renamed).
    let state = || {
        let meta = fs::metadata(&memo).unwrap();
        (meta.ino(), meta.modified().unwrap())
    };
    let before = state();
    assert_eq!(remembered(&site, &[]), 1);
    assert_eq!(state(), before);
    assert_eq!(site.feed(), cold_feed(&site));
}
