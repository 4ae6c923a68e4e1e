//! Sequences only rise: a build follows the site it replaces in its output
//! directory, or the one it builds on with `--previous`. A lower
//! `SOURCE_DATE_EPOCH` is refused; a clock that is behind gives way.

use std::fs;
use std::process::Output;

use crate::common::{Fixture, assert_success, copy_tree, snapshot_tree, stderr, stdout};

tests! {
    a_lower_source_date_epoch_never_replaces_a_newer_site;
    a_clock_behind_the_site_it_follows_takes_the_next_sequence;
    only_a_site_signed_by_a_trusted_key_is_followed;
}

const KAT_PUB: &str = "../known-answer/kat.pub";
const EARLIER: &str = "1790000000";
const LATER: &str = "1790086400";

fn build_at(fixture: &Fixture, epoch: &str, extra: &[&str]) -> Output {
    fixture.run(
        &[&["build"], extra].concat(),
        &[("SOURCE_DATE_EPOCH", epoch)],
    )
}

/// A build without SOURCE_DATE_EPOCH: the clock's time.
fn build_now(fixture: &Fixture, extra: &[&str]) -> Output {
    crate::common::vmcast_command(&fixture.root, &[])
        .arg("build")
        .args(extra)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// `verify public` against a state file, as a consumer's timer runs it.
fn verify_with_state(fixture: &Fixture) -> Output {
    let state = fixture.path("state.json");
    fixture.run(
        &[
            "verify",
            "public",
            "--pubkey",
            KAT_PUB,
            "--state",
            state.to_str().unwrap(),
        ],
        &[],
    )
}

/// A time well ahead of this machine's clock: a runner whose clock is fast.
fn ahead() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (now + 86_400).to_string()
}

/// A plain build with a lower SOURCE_DATE_EPOCH replaced a newer site, and
/// every consumer that keeps state refused the site until a newer build.
/// It is refused now, leaving the site byte for byte; the same epoch again
/// rebuilds it, and `--allow-rollback` replaces it, saying what it does.
fn a_lower_source_date_epoch_never_replaces_a_newer_site() {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&build_at(&fixture, LATER, &[]));
    assert_success(&verify_with_state(&fixture));
    let site = snapshot_tree(&fixture.path("public"));

    let out = build_at(&fixture, EARLIER, &[]);
    assert_eq!(
        stderr(&out),
        "error: public: this build's sequence 1790000000 (SOURCE_DATE_EPOCH) is below the \
         sequence 1790086400 of the site it replaces; consumers that keep state would refuse it \
         as a rollback. Set SOURCE_DATE_EPOCH above 1790086400 or unset it, or pass \
         --allow-rollback to build it anyway\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(snapshot_tree(&fixture.path("public")), site);
    assert_success(&verify_with_state(&fixture));

    assert_success(&build_at(&fixture, LATER, &[]));
    assert_eq!(snapshot_tree(&fixture.path("public")), site);

    let out = build_at(&fixture, EARLIER, &["--allow-rollback"]);
    assert_success(&out);
    assert_eq!(
        stderr(&out),
        "warning: public: this build's sequence 1790000000 (SOURCE_DATE_EPOCH) is below the \
         sequence 1790086400 of the site it replaces; consumers that keep state refuse it as a \
         rollback until a newer build (built anyway: --allow-rollback)\n"
    );
    let out = verify_with_state(&fixture);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("rollback"), "{}", stderr(&out));
}

/// Without SOURCE_DATE_EPOCH the sequence was the clock's: after a runner
/// whose clock is a day fast, every build for a day was a rollback to
/// consumers that keep state, and one on `--previous` failed. The clock
/// now gives way to the followed site's sequence, with a warning.
fn a_clock_behind_the_site_it_follows_takes_the_next_sequence() {
    let fixture = Fixture::new("ok-minimal");
    let fast = ahead();
    let next = (fast.parse::<u64>().unwrap() + 1).to_string();
    assert_success(&build_at(&fixture, &fast, &[]));
    assert_success(&verify_with_state(&fixture));

    let out = build_now(&fixture, &[]);
    assert_success(&out);
    let warning = stderr(&out);
    assert!(
        warning.starts_with("warning: public: the clock (")
            && warning.ends_with(&format!(
                ") is not past the sequence {fast} of the site it replaces; this build takes \
                 sequence {next}, one above it, so that consumers that keep state accept it\n"
            )),
        "{warning}"
    );
    assert!(
        stdout(&out).contains(&format!(", sequence {next}\n")),
        "{}",
        stdout(&out)
    );
    assert_success(&verify_with_state(&fixture));

    // A release job building on the published site from a slower runner.
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    let out = build_now(&fixture, &["--previous", "published"]);
    assert_success(&out);
    let after = (next.parse::<u64>().unwrap() + 1).to_string();
    assert!(
        stderr(&out).starts_with("warning: --previous published: the clock (")
            && stderr(&out).contains(&format!(
                ") is not past the previous site's sequence {next}; this build takes sequence \
                 {after}, one above it"
            )),
        "{}",
        stderr(&out)
    );
    assert_success(&verify_with_state(&fixture));
}

/// Only a site this build's key (or `previous_key`) signed is followed:
/// another key's site says nothing of what this key's consumers saw.
fn only_a_site_signed_by_a_trusted_key_is_followed() {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.run(&["keygen", "-W", "-s", "other.key", "-p", "other.pub"], &[]));
    assert_success(&build_at(&fixture, LATER, &["--secret-key", "other.key"]));
    let out = build_at(&fixture, EARLIER, &[]);
    assert_success(&out);
    assert_eq!(stderr(&out), "");

    assert_success(&build_at(&fixture, LATER, &["--secret-key", "other.key"]));
    fixture.configure("previous_key = \"other.pub\"\n");
    let out = build_at(&fixture, EARLIER, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("error: public: this build's sequence 1790000000 (SOURCE_DATE_EPOCH)"),
        "{}",
        stderr(&out)
    );
}
