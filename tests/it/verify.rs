//! `vmcast-gen verify` against real builds, and one test per attack: each
//! starts from a real `build` output and tampers with it.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_success, stderr, stdout, vmcast};
use vmcast_gen::sign::{SecretKey, Signature, Signer};

tests! {
    a_fresh_build_verifies_with_its_images;
    a_release_of_cloud_images_only_verifies;
    json_report_for_ci;
    json_failures_name_their_problem;
    verify_over_http needs PYTHON3;
    tampered_image;
    tampered_feed;
    tampered_manifest;
    signature_from_another_key;
    swapped_signature_files;
    legacy_signature needs MINISIGN;
    rollback_to_older_build;
    expired_build_freeze;
    mix_and_match_of_two_builds;
    a_feed_signed_with_no_build_is_refused;
    endless_data_image_longer_than_declared;
    image_shorter_than_declared;
    feed_url_pointing_outside_the_site;
    rotated_key_never_announced;
    rotated_key_announced_by_the_old_key_is_accepted;
    minisign_encrypted_key_with_the_right_password;
    minisign_encrypted_key_with_a_wrong_password;
    encrypted_key_without_a_password_source;
    keygen_writes_an_encrypted_key_minisign_can_use needs MINISIGN;
    feed_body_that_stalls_hits_the_deadline;
    signature_trickling_one_byte_a_second_hits_the_deadline;
    image_trickling_below_the_minimum_rate_is_abandoned;
    image_body_that_stalls_is_abandoned;
    image_url_outside_the_site_is_never_fetched;
    dot_segments_do_not_climb_out_of_the_site;
    image_path_outside_the_site_is_refused_before_any_read;
    fifo_as_a_signature_fails_fast;
    symlink_to_dev_zero_as_a_signature_fails_fast;
    build_of_another_site_signed_by_the_same_key_is_refused;
    state_file_without_a_site_adopts_the_first_site_seen;
    withdrawn_key_announcement_is_forgotten;
    release_notes_over_the_text_limit_are_refused_by_build;
    release_notes_that_render_past_the_text_limit_are_refused_by_build;
    encoded_slashes_do_not_climb_out_of_the_site;
}

const KAT_PUB: &str = "../known-answer/kat.pub";

/// A fixture built once at `epoch`, its output in `public/`.
fn built(epoch: &str) -> Fixture {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", epoch)]));
    fixture
}

fn verify(fixture: &Fixture, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "public", "--pubkey", KAT_PUB];
    args.extend_from_slice(extra);
    fixture.run(&args, &[])
}

/// A failed verification: exit 1 and exactly these errors on stderr.
#[track_caller]
fn assert_rejected(out: &Output, errors: &[&str]) {
    let expected: String = errors.iter().map(|e| format!("error: {e}\n")).collect();
    assert_eq!(stderr(out), expected, "stdout:\n{}", stdout(out));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(out).contains("NOT verified"), "{}", stdout(out));
}

pub(crate) fn kat_key() -> SecretKey {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/known-answer/kat.key");
    let text = fs::read_to_string(&path).unwrap();
    SecretKey::from_file(&path, &text, &mut || panic!("not encrypted")).unwrap()
}

/// Re-signs `file` (relative to the fixture) with `key`, keeping the trusted
/// comment of its current signature: what an attacker holding a key does.
pub(crate) fn resign(fixture: &Fixture, file: &str, key: &SecretKey) {
    let sig_path = fixture.path(&format!("{file}.minisig"));
    let old = Signature::from_file(&sig_path, &fs::read_to_string(&sig_path).unwrap()).unwrap();
    let data = fs::read(fixture.path(file)).unwrap();
    let sig = key.sign(&data, &old.trusted_comment).unwrap();
    fs::write(sig_path, sig.to_file()).unwrap();
}

/// Replaces `file`'s line in SHA256SUMS with the file's current digest.
pub(crate) fn relist(fixture: &Fixture, site: &str, file: &str) {
    let data = fs::read(fixture.path(&format!("{site}/{file}"))).unwrap();
    let digest = vmcast_gen::model::Sha256::of(&data);
    let sums_path = fixture.path(&format!("{site}/SHA256SUMS"));
    let sums: String = fs::read_to_string(&sums_path)
        .unwrap()
        .lines()
        .map(|l| {
            if l.ends_with(&format!("  {file}")) {
                format!("{digest}  {file}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(sums_path, sums).unwrap();
}

/// Rewrites the feeds of the site in `site` (relative to the fixture) that
/// hold `from`, the site's and its appliances', and signs them and the
/// manifest again with the publisher's key: what an attacker holding the
/// key, or a compromised build, publishes.
pub(crate) fn forge_feed(fixture: &Fixture, site: &str, from: &str, to: &str) {
    let key = kat_key();
    let mut feeds = vec!["feed.xml".to_owned()];
    if let Ok(dir) = fs::read_dir(fixture.path(&format!("{site}/feeds"))) {
        for entry in dir {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".xml") {
                feeds.push(format!("feeds/{name}"));
            }
        }
    }
    let mut forged = 0;
    for name in feeds {
        let path = fixture.path(&format!("{site}/{name}"));
        let feed = fs::read_to_string(&path).unwrap();
        let evil = feed.replace(from, to);
        if evil == feed {
            continue;
        }
        fs::write(&path, evil).unwrap();
        resign(fixture, &format!("{site}/{name}"), &key);
        relist(fixture, site, &name);
        forged += 1;
    }
    assert!(forged > 0, "{from} is in no feed");
    resign(fixture, &format!("{site}/SHA256SUMS"), &key);
}

fn image(fixture: &Fixture) -> PathBuf {
    fixture.path("public/images/webapp/1.1.0/webapp-1.1.0.raw")
}

// ---- what passes ----

fn a_fresh_build_verifies_with_its_images() {
    let fixture = built(crate::common::EPOCH);
    let out = verify(&fixture, &["--images"]);
    assert_success(&out);
    insta::assert_snapshot!("verify_ok", stdout(&out));
    assert_eq!(stderr(&out), "");
}

/// An item of cloud images only has no enclosure and no image to hash:
/// verify accepts it, says the cloud images are named, not hashed, and
/// refuses such an item that encloses a file anyway.
fn a_release_of_cloud_images_only_verifies() {
    let fixture = Fixture::new("cloud-only-release");
    assert_success(&fixture.build(&[]));
    let out = verify(&fixture, &["--images"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "feed.xml: 2 release(s), 1 image(s) agree with SHA256SUMS; 5 cloud image(s) named, \
             whose content the feed does not hash"
        ),
        "{}",
        stdout(&out)
    );
    let enclosure = "<enclosure url=\"https://downloads.example.com/site/images/webapp/1.0.0/\
                     webapp-1.0.0.raw\" length=\"438\" type=\"application/octet-stream\"/>";
    forge_feed(
        &fixture,
        "public",
        "<vmcast:appliance>webapp</vmcast:appliance>\n      <vmcast:version>1.1.0",
        &format!(
            "{enclosure}\n      <vmcast:appliance>webapp</vmcast:appliance>\n      \
             <vmcast:version>1.1.0"
        ),
    );
    assert_rejected(
        &verify(&fixture, &[]),
        &["feed.xml: item \"vmcast:webapp:1.1.0\" encloses a file but lists no vmcast:image"],
    );
}

fn json_report_for_ci() {
    let fixture = built(crate::common::EPOCH);
    let out = verify(&fixture, &["--json"]);
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["sequence"], 1790000000u64);
    assert_eq!(report["key_id"], "9846815B1BF4E0B5");
    assert_eq!(report["releases"], 2);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true && c.get("problem").is_none())
    );
}

/// Each failed check carries a stable machine-readable problem beside its
/// prose: a tampered image is a mismatch, a rollback a rollback, an
/// unreachable site unreachable (the one a later try may not have).
fn json_failures_name_their_problem() {
    let problems = |out: &Output| -> Vec<(String, String)> {
        let report: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| {
                (
                    c["check"].as_str().unwrap().to_owned(),
                    c["problem"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let fixture = built(crate::common::EPOCH);
    let image = fixture.path("public/images/webapp/1.1.0/webapp-1.1.0.raw");
    let mut bytes = fs::read(&image).unwrap();
    bytes[0] ^= 1;
    fs::write(&image, bytes).unwrap();
    let out = verify(&fixture, &["--json", "--images"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(problems(&out), [("images".into(), "mismatch".into())]);

    let state = fixture.path("state.json");
    let state = state.to_str().unwrap();
    assert_success(&verify(&built("1790086400"), &["--state", state]));
    let out = verify(&fixture, &["--json", "--state", state]);
    assert_eq!(problems(&out), [("rollback".into(), "rollback".into())]);

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = fixture.run(
        &[
            "verify",
            &format!("http://127.0.0.1:{port}/"),
            "--pubkey",
            KAT_PUB,
            "--json",
        ],
        &[],
    );
    assert_eq!(problems(&out), [("signature".into(), "unreachable".into())]);
}

fn verify_over_http() {
    let fixture = Fixture::new("ok-multi-appliance");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}/");
    set_base_url(&fixture, &base);
    assert_success(&fixture.build(&[]));
    let server = Server::start(&fixture.path("public"), port);
    let out = fixture.run(&["verify", &base, "--pubkey", KAT_PUB, "--images"], &[]);
    let feed = fixture.run(
        &[
            "verify",
            &format!("{base}feeds/webapp.xml"),
            "--pubkey",
            KAT_PUB,
        ],
        &[],
    );
    drop(server);
    assert_success(&out);
    assert!(
        stdout(&out).contains("verified: 3 release(s), 3 image(s), 1734 image bytes read"),
        "{}",
        stdout(&out)
    );
    assert_success(&feed);
}

/// Points the fixture's site at `base`.
fn set_base_url(fixture: &Fixture, base: &str) {
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("base_url") {
                format!("base_url = \"{base}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
}

/// `python3 -m http.server` on 127.0.0.1, bounded by `timeout` and killed by
/// PID when dropped.
struct Server(std::process::Child);

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let child = Command::new("timeout")
            .args(["120", "python3", "-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        crate::common::stop_under_timeout(&mut self.0);
    }
}

// ---- the attacks ----

fn tampered_image() {
    let fixture = built(crate::common::EPOCH);
    let mut bytes = fs::read(image(&fixture)).unwrap();
    bytes[10] ^= 1;
    fs::write(image(&fixture), &bytes).unwrap();
    // Without --images the metadata still checks out: say so in the docs.
    assert_success(&verify(&fixture, &[]));
    let out = verify(&fixture, &["--images"]);
    let line = stderr(&out);
    assert!(
        line.starts_with(
            "error: images/webapp/1.1.0/webapp-1.1.0.raw: SHA-256 mismatch: the feed says "
        ),
        "{line}"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn tampered_feed() {
    let fixture = built(crate::common::EPOCH);
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    fs::write(
        fixture.path("public/feed.xml"),
        feed.replace("Release 1.1.0", "Release 6.6.6"),
    )
    .unwrap();
    assert_rejected(
        &verify(&fixture, &[]),
        &["feed.xml: signature does not match its contents (tampered or corrupt)"],
    );
}

fn tampered_manifest() {
    let fixture = built(crate::common::EPOCH);
    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    let evil = sums.replacen(&sums[..4], "0000", 1);
    fs::write(fixture.path("public/SHA256SUMS"), evil).unwrap();
    assert_rejected(
        &verify(&fixture, &[]),
        &["SHA256SUMS: signature does not match its contents (tampered or corrupt)"],
    );
}

fn signature_from_another_key() {
    let fixture = built(crate::common::EPOCH);
    let other = SecretKey::generate().unwrap();
    resign(&fixture, "public/feed.xml", &other);
    assert_rejected(
        &verify(&fixture, &[]),
        &[&format!(
            "feed.xml: signed by key {}, not the pinned key 9846815B1BF4E0B5; nothing you \
             trust announced it (a `vmcast-gen serve` preview is signed with a throwaway key: \
             verify it against the preview's own vmcast.pub)",
            other.public.key_id
        )],
    );
}

fn swapped_signature_files() {
    let fixture = built(crate::common::EPOCH);
    let feed_sig = fixture.path("public/feed.xml.minisig");
    let sums_sig = fixture.path("public/SHA256SUMS.minisig");
    let (a, b) = (fs::read(&feed_sig).unwrap(), fs::read(&sums_sig).unwrap());
    fs::write(&feed_sig, b).unwrap();
    fs::write(&sums_sig, a).unwrap();
    assert_rejected(
        &verify(&fixture, &[]),
        &[
            "feed.xml.minisig is the signature of SHA256SUMS, not feed.xml (swapped signature files?)",
        ],
    );
}

fn legacy_signature() {
    let fixture = built(crate::common::EPOCH);
    let sig_path = fixture.path("public/feed.xml.minisig");
    let old = Signature::from_file(&sig_path, &fs::read_to_string(&sig_path).unwrap()).unwrap();
    fs::remove_file(&sig_path).unwrap();
    let out = Command::new("minisign")
        .args([
            "-S",
            "-l",
            "-s",
            "../known-answer/kat.key",
            "-m",
            "public/feed.xml",
            "-t",
        ])
        .arg(&old.trusted_comment)
        .current_dir(&fixture.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success(&out);
    assert_rejected(
        &verify(&fixture, &[]),
        &[
            "feed.xml: legacy (non-prehashed `Ed`) signature; only prehashed `ED` signatures are accepted",
        ],
    );
}

fn rollback_to_older_build() {
    let old = built("1790000000");
    let new = built("1790086400");
    let state = new.path("state.json");
    let state_arg = state.to_str().unwrap();
    assert_success(&verify(&new, &["--state", state_arg]));
    let out = old.run(
        &[
            "verify", "public", "--pubkey", KAT_PUB, "--state", state_arg,
        ],
        &[],
    );
    assert_rejected(
        &out,
        &[
            "rollback: sequence 1790000000 is older than sequence 1790086400 already seen (key 9846815B1BF4E0B5)",
        ],
    );
    // The same build again is fine: re-verifying is not a rollback.
    assert_success(&verify(&new, &["--state", state_arg]));
}

fn expired_build_freeze() {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("expires_after = \"1d\"\n");
    assert_success(&fixture.build(&[]));
    assert_rejected(
        &verify(&fixture, &[]),
        &[
            "expired at 2026-09-22T14:13:20Z: the publisher has not re-signed the site since \
           (stale mirror, stalled release job, or a freeze attack)",
        ],
    );
    // A scheduled re-sign (a fresh build, nothing else changed) revives it.
    let now = chrono::Utc::now().timestamp().to_string();
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", &now)]));
    assert_success(&verify(&fixture, &[]));
}

fn mix_and_match_of_two_builds() {
    let old = built("1790000000");
    let new = built("1790086400");
    for file in ["feed.xml", "feed.xml.minisig"] {
        fs::copy(
            old.path(&format!("public/{file}")),
            new.path(&format!("public/{file}")),
        )
        .unwrap();
    }
    assert_rejected(
        &verify(&new, &[]),
        &[
            "feed.xml (sequence 1790000000) and SHA256SUMS (sequence 1790086400) come from different builds (mix-and-match)",
        ],
    );
}

fn endless_data_image_longer_than_declared() {
    let fixture = built(crate::common::EPOCH);
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(image(&fixture))
        .unwrap();
    std::io::Write::write_all(&mut file, &[0u8; 4096]).unwrap();
    let out = verify(&fixture, &["--images"]);
    let declared = fs::metadata(image(&fixture)).unwrap().len() - 4096;
    assert_rejected(
        &out,
        &[&format!(
            "images/webapp/1.1.0/webapp-1.1.0.raw: longer than its declared {declared} bytes \
             (endless data?); stopped reading"
        )],
    );
}

fn image_shorter_than_declared() {
    let fixture = built(crate::common::EPOCH);
    let len = fs::metadata(image(&fixture)).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(image(&fixture))
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    assert_rejected(
        &verify(&fixture, &["--images"]),
        &[&format!(
            "images/webapp/1.1.0/webapp-1.1.0.raw: shorter than declared: {} of {len} bytes",
            len - 7
        )],
    );
}

fn feed_url_pointing_outside_the_site() {
    let fixture = built(crate::common::EPOCH);
    // The signatures are good, the URLs are not.
    forge_feed(
        &fixture,
        "public",
        "https://downloads.example.com/site/images/webapp/1.1.0/webapp-1.1.0.raw",
        "https://evil.example.net/webapp-1.1.0.raw",
    );
    assert_rejected(
        &verify(&fixture, &[]),
        &[
            "feed.xml: 4 URL(s) outside the site (https://downloads.example.com/site/ and \
           https://downloads.example.com/site/images/), e.g. https://evil.example.net/webapp-1.1.0.raw",
        ],
    );
}

fn rotated_key_never_announced() {
    let fixture = built("1790000000");
    let state = fixture.path("state.json");
    let state_arg = state.to_str().unwrap();
    assert_success(&verify(&fixture, &["--state", state_arg]));
    let tmp = tempfile::tempdir().unwrap();
    assert_success(&vmcast(tmp.path(), &["keygen", "-W"], &[]));
    let new_key = tmp.path().join("vmcast.key");
    let out = fixture.run(
        &["build", "--secret-key", new_key.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    let rogue = fs::read_to_string(fixture.path("public/vmcast.pub")).unwrap();
    let rogue_id = rogue
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_rejected(
        &verify(&fixture, &["--state", state_arg]),
        &[&format!(
            "feed.xml: signed by key {rogue_id}, not the pinned key 9846815B1BF4E0B5; \
             no trusted key announced it in the state file"
        )],
    );
}

fn rotated_key_announced_by_the_old_key_is_accepted() {
    let fixture = Fixture::new("ok-minimal");
    let tmp = tempfile::tempdir().unwrap();
    assert_success(&vmcast(tmp.path(), &["keygen", "-W"], &[]));
    let (next_key, next_pub) = (tmp.path().join("vmcast.key"), tmp.path().join("vmcast.pub"));
    // Step 1: the current key announces the next one.
    fixture.configure(&format!(
        "next_public_key = {:?}\n",
        next_pub.to_str().unwrap()
    ));
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790000000")]));
    assert_eq!(
        fs::read(fixture.path("public/vmcast.next.pub")).unwrap(),
        fs::read(&next_pub).unwrap()
    );
    let state = fixture.path("state.json");
    let state_arg = state.to_str().unwrap();
    let out = verify(&fixture, &["--state", state_arg]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("announced, signed by key 9846815B1BF4E0B5; remembered"),
        "{}",
        stdout(&out)
    );
    // Step 2: builds are signed by the next key; the consumer keeps its old pin.
    let out = fixture.run(
        &["build", "--secret-key", next_key.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert_success(&verify(&fixture, &["--state", state_arg]));
    // Without the state, the old pin alone does not accept the new key.
    assert_eq!(verify(&fixture, &[]).status.code(), Some(1));
}

// ---- keys people already have ----

fn minisign_encrypted_key_with_the_right_password() {
    let fixture = Fixture::new("ok-minimal");
    let out = fixture.run(
        &["build", "--secret-key", "../known-answer/encrypted.key"],
        &[("VMCAST_KEY_PASSWORD", "correct horse")],
    );
    assert_success(&out);
    assert_eq!(
        fs::read_to_string(fixture.path("public/vmcast.pub")).unwrap(),
        fs::read_to_string(fixture.path("../known-answer/encrypted.pub")).unwrap()
    );
}

fn minisign_encrypted_key_with_a_wrong_password() {
    let fixture = Fixture::new("ok-minimal");
    let out = fixture.run(
        &["build", "--secret-key", "../known-answer/encrypted.key"],
        &[("VMCAST_KEY_PASSWORD", "battery staple")],
    );
    assert_eq!(
        stderr(&out),
        "error: ../known-answer/encrypted.key: wrong password (the decrypted key's checksum does not match)\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn encrypted_key_without_a_password_source() {
    let fixture = Fixture::new("ok-minimal");
    let out = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args(["build", "--secret-key", "../known-answer/encrypted.key"])
        .current_dir(&fixture.root)
        .env_remove("VMCAST_KEY_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out),
        "error: the secret key needs a password: set VMCAST_KEY_PASSWORD, or run on a terminal\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn keygen_writes_an_encrypted_key_minisign_can_use() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vmcast(
        tmp.path(),
        &["keygen"],
        &[("VMCAST_KEY_PASSWORD", "hunter2")],
    );
    assert_success(&out);
    let key = fs::read_to_string(tmp.path().join("vmcast.key")).unwrap();
    assert!(
        key.starts_with("untrusted comment: minisign encrypted secret key\n"),
        "{key}"
    );
    fs::write(tmp.path().join("data"), b"signed by minisign with our key").unwrap();
    let mut child = Command::new("minisign")
        .args(["-S", "-s", "vmcast.key", "-m", "data"])
        .current_dir(tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"hunter2\n").unwrap();
    assert_success(&child.wait_with_output().unwrap());
    let check = Command::new("minisign")
        .args(["-V", "-H", "-p", "vmcast.pub", "-m", "data"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_success(&check);
}

// ---- a server of our own: slow on purpose, and recording requests ----

/// What [`TestServer`] does with a path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Serve {
    /// Sends the headers, then no byte of the body.
    Stall,
    /// Sends the headers, then the body one byte a second.
    Trickle,
}

/// A small HTTP server on 127.0.0.1, in threads of the test: serves the
/// files under a directory as nginx finds them (see [`file_of`]), stalls or
/// trickles chosen paths, and records the path of every request. It stops by itself after a minute, and within
/// 50 ms of being dropped.
struct TestServer {
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a [`TestServer`] lives at most.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);

impl TestServer {
    fn start(listener: TcpListener, dir: &Path, slow: &[(&str, Serve)]) -> TestServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let slow: Vec<(String, Serve)> = slow.iter().map(|(p, s)| (p.to_string(), *s)).collect();
        let (dir, log, flag) = (dir.to_path_buf(), requests.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + SERVER_LIFETIME;
            let mut handlers = Vec::new();
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (dir, log, flag, slow) =
                            (dir.clone(), log.clone(), flag.clone(), slow.clone());
                        handlers.push(std::thread::spawn(move || {
                            serve_one(stream, &dir, &log, &flag, end, &slow)
                        }));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
            flag.store(true, Ordering::Relaxed);
            for h in handlers {
                let _ = h.join();
            }
        });
        TestServer {
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The paths requested so far.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request (`Connection: close`), and gives up when the server
/// stops.
fn serve_one(
    mut stream: std::net::TcpStream,
    dir: &Path,
    log: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    end: Instant,
    slow: &[(String, Serve)],
) {
    use std::io::{Read, Write};
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    log.lock().unwrap().push(path.clone());
    let body = match file_of(dir, &path).map(fs::read) {
        Some(Ok(b)) => b,
        _ => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
    };
    let headers = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(headers.as_bytes()).is_err() {
        return;
    }
    let running = || !stop.load(Ordering::Relaxed) && Instant::now() < end;
    match slow.iter().find(|(p, _)| *p == path).map(|(_, s)| *s) {
        None => {
            let _ = stream.write_all(&body);
        }
        Some(Serve::Stall) => {
            while running() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Serve::Trickle) => {
            for b in body {
                if !running() || stream.write_all(&[b]).is_err() {
                    return;
                }
                let next = Instant::now() + Duration::from_secs(1);
                while running() && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// The file a request path names, as nginx finds it: percent-decoded,
/// `%2F` included, then its dot segments resolved, never above `dir`.
fn file_of(dir: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(dir.join(parts.join("/")))
}

/// A listener on a free port of 127.0.0.1, and the base URL it serves.
fn local_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, format!("http://127.0.0.1:{port}/"))
}

/// ok-minimal built for `base`, its output in `public/`.
fn built_for(base: &str) -> Fixture {
    let fixture = Fixture::new("ok-minimal");
    set_base_url(&fixture, base);
    assert_success(&fixture.build(&[]));
    fixture
}

/// Runs `verify` under `timeout`, so that a hang fails the test instead of
/// stopping it; returns the output and how long it took.
fn verify_bounded(cwd: &Path, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("timeout")
        .args(["-k", "5", "30"])
        .arg(env!("CARGO_BIN_EXE_vmcast-gen"))
        .arg("verify")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "verify hung: {}",
        stdout(&out)
    );
    (out, start.elapsed())
}

/// Serves ok-minimal over HTTP with `path` slow, and verifies it with
/// `--timeout 3` plus `extra`: it must fail within 10 s. Returns stderr.
fn verify_slow(path: &str, how: Serve, extra: &[&str]) -> (String, String) {
    let (listener, base) = local_listener();
    let fixture = built_for(&base);
    let server = TestServer::start(listener, &fixture.path("public"), &[(path, how)]);
    let mut args = vec![base.as_str(), "--pubkey", KAT_PUB, "--timeout", "3"];
    args.extend_from_slice(extra);
    let (out, took) = verify_bounded(&fixture.root, &args);
    drop(server);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    (base, stderr(&out))
}

fn feed_body_that_stalls_hits_the_deadline() {
    let (base, err) = verify_slow("/feed.xml", Serve::Stall, &[]);
    assert_eq!(
        err,
        format!("error: {base}feed.xml: deadline of 3 s passed after 0 bytes\n")
    );
}

fn signature_trickling_one_byte_a_second_hits_the_deadline() {
    let (base, err) = verify_slow("/feed.xml.minisig", Serve::Trickle, &[]);
    let prefix = format!("error: {base}feed.xml.minisig: deadline of 3 s passed after ");
    assert!(
        err.starts_with(&prefix) && err.ends_with(" bytes\n") && err.lines().count() == 1,
        "{err}"
    );
}

fn image_trickling_below_the_minimum_rate_is_abandoned() {
    let image = "images/webapp/1.1.0/webapp-1.1.0.raw";
    let (base, err) = verify_slow(&format!("/{image}"), Serve::Trickle, &["--images"]);
    let prefix = format!("error: {image}: {base}{image}: only ");
    assert!(
        err.starts_with(&prefix)
            && err.ends_with(" s, below the minimum rate of 10240 bytes/s (--min-rate)\n")
            && err.lines().count() == 1,
        "{err}"
    );
}

fn image_body_that_stalls_is_abandoned() {
    let image = "images/webapp/1.0.0/webapp-1.0.0.raw";
    let (base, err) = verify_slow(&format!("/{image}"), Serve::Stall, &["--images"]);
    let length = fs::metadata(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ok-minimal/releases/webapp/1.0.0/webapp-1.0.0.raw"),
    )
    .unwrap()
    .len();
    assert_eq!(
        err,
        format!("error: {image}: {base}{image}: no body data for 3 s after 0 of {length} bytes\n")
    );
}

// ---- what verify reads and requests ----

fn image_url_outside_the_site_is_never_fetched() {
    let (listener, base) = local_listener();
    let (elsewhere, other) = local_listener();
    let fixture = built_for(&base);
    let image = "images/webapp/1.1.0/webapp-1.1.0.raw";
    forge_feed(
        &fixture,
        "public",
        &format!("{base}{image}"),
        &format!("{other}webapp-1.1.0.raw"),
    );
    let site = TestServer::start(listener, &fixture.path("public"), &[]);
    let recorder = TestServer::start(elsewhere, &fixture.path("public/images"), &[]);
    let (out, _) = verify_bounded(
        &fixture.root,
        &[&base, "--pubkey", KAT_PUB, "--images", "--timeout", "5"],
    );
    drop(site);
    assert_eq!(recorder.requests(), Vec::<String>::new());
    assert_rejected(
        &out,
        &[
            &format!(
                "feed.xml: 4 URL(s) outside the site ({base} and {base}images/), e.g. \
                 {other}webapp-1.1.0.raw"
            ),
            &format!("{image}: not fetched: its URL {other}webapp-1.1.0.raw is outside the site"),
            // Its control file lies beside it, so it moved with it.
            &format!(
                "{image}.zsync: not fetched: its URL {other}webapp-1.1.0.raw.zsync is outside \
                 the site"
            ),
        ],
    );
}

fn dot_segments_do_not_climb_out_of_the_site() {
    assert_climbing_url_is_never_fetched(|base| format!("{base}../evil/webapp-1.1.0.raw"));
}

/// `%2F` is no separator to a URL parser, so `images/..%2F..%2Fevil/x` is
/// under the site; nginx decodes it and serves `/evil/x`, from outside.
/// verify took the attacker's copy there for the image. Such a URL is now
/// outside every site, and never requested.
fn encoded_slashes_do_not_climb_out_of_the_site() {
    assert_climbing_url_is_never_fetched(|base| {
        format!("{base}images/..%2F..%2Fevil/webapp-1.1.0.raw")
    });
}

/// A signed feed points an image at `climbing(base)`, which the test
/// server, finding files as nginx does, serves from `evil/` beside the
/// site (a copy of the image, which the image check would pass): verify
/// never requests it, and refuses the feed.
fn assert_climbing_url_is_never_fetched(climbing: impl Fn(&str) -> String) {
    let (listener, root) = local_listener();
    let base = format!("{root}site/");
    let fixture = Fixture::new("ok-minimal");
    set_base_url(&fixture, &base);
    fixture.configure("output_dir = \"www/site\"\n");
    assert_success(&fixture.build(&[]));
    // The attacker's file, beside the site on the same server.
    let image = "images/webapp/1.1.0/webapp-1.1.0.raw";
    fs::create_dir_all(fixture.path("www/evil")).unwrap();
    fs::copy(
        fixture.path(&format!("www/site/{image}")),
        fixture.path("www/evil/webapp-1.1.0.raw"),
    )
    .unwrap();
    let climbing = climbing(&base);
    forge_feed(&fixture, "www/site", &format!("{base}{image}"), &climbing);
    let server = TestServer::start(listener, &fixture.path("www"), &[]);
    let (out, _) = verify_bounded(
        &fixture.root,
        &[&base, "--pubkey", KAT_PUB, "--images", "--timeout", "5"],
    );
    let requests = server.requests();
    drop(server);
    assert!(requests.iter().all(|r| !r.contains("evil")), "{requests:?}");
    assert_rejected(
        &out,
        &[
            &format!(
                "feed.xml: 4 URL(s) outside the site ({base} and {base}images/), e.g. {climbing}"
            ),
            // The image's URL as the model holds it, parsed: dot segments
            // resolved, so the message shows where they climb to.
            &format!(
                "{image}: not fetched: its URL {} is outside the site",
                url::Url::parse(&climbing).unwrap()
            ),
            &format!(
                "{image}.zsync: not fetched: its URL {} is outside the site",
                url::Url::parse(&format!("{climbing}.zsync")).unwrap()
            ),
        ],
    );
}

fn image_path_outside_the_site_is_refused_before_any_read() {
    for (path, error) in [
        (
            "../secret.raw",
            "`../secret.raw` climbs out of its directory with `..`",
        ),
        ("/etc/passwd", "`/etc/passwd` is an absolute path"),
    ] {
        let fixture = built(crate::common::EPOCH);
        // A file outside the site with the image's bytes: reading it would
        // pass the image check.
        fs::copy(image(&fixture), fixture.path("secret.raw")).unwrap();
        forge_feed(
            &fixture,
            "public",
            "path=\"images/webapp/1.1.0/webapp-1.1.0.raw\"",
            &format!("path=\"{path}\""),
        );
        let out = verify(&fixture, &["--images"]);
        assert_rejected(&out, &[&format!("feed.xml: vmcast:image path: {error}")]);
        assert!(!stdout(&out).contains(" images "), "{}", stdout(&out));
    }
}

fn fifo_as_a_signature_fails_fast() {
    let fixture = built(crate::common::EPOCH);
    let sig = fixture.path("public/feed.xml.minisig");
    fs::remove_file(&sig).unwrap();
    assert_success(&Command::new("mkfifo").arg(&sig).output().unwrap());
    let (out, took) = verify_bounded(&fixture.root, &["public", "--pubkey", KAT_PUB]);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_rejected(
        &out,
        &["cannot read feed.xml.minisig: not a regular file but a FIFO"],
    );
}

fn symlink_to_dev_zero_as_a_signature_fails_fast() {
    let fixture = built(crate::common::EPOCH);
    let sig = fixture.path("public/feed.xml.minisig");
    fs::remove_file(&sig).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &sig).unwrap();
    let (out, took) = verify_bounded(&fixture.root, &["public", "--pubkey", KAT_PUB]);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_rejected(
        &out,
        &[
            "cannot read feed.xml.minisig: it is a symbolic link, and a site's files are never \
             read through one",
        ],
    );
}

// ---- what the state file binds ----

fn build_of_another_site_signed_by_the_same_key_is_refused() {
    let a = built("1790000000");
    let b = Fixture::new("ok-minimal");
    set_base_url(&b, "https://mirror.example.org/other/");
    assert_success(&b.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790086400")]));
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    assert_success(&verify(&a, &["--state", state_arg]));
    let seen = fs::read(&state).unwrap();
    assert_rejected(
        &verify(&b, &["--state", state_arg]),
        &[
            "the build was signed for the site https://mirror.example.org/other/, but the state \
             file tracks https://downloads.example.com/site/: another site signed by the same key",
        ],
    );
    assert_eq!(fs::read(&state).unwrap(), seen, "the state moved");
    // The site's own newer build still goes through.
    assert_success(&a.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790172800")]));
    assert_success(&verify(&a, &["--state", state_arg]));
    // Without a state, --site pins the site.
    let site = ["--site", "https://downloads.example.com/site"];
    assert_rejected(
        &verify(&b, &site),
        &[
            "the build was signed for the site https://mirror.example.org/other/, not \
             https://downloads.example.com/site/ (--site)",
        ],
    );
    assert_success(&verify(&a, &site));
}

fn state_file_without_a_site_adopts_the_first_site_seen() {
    let a = built("1790000000");
    let b = Fixture::new("ok-minimal");
    set_base_url(&b, "https://mirror.example.org/other/");
    assert_success(&b.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790086400")]));
    let state = a.path("state.json");
    let state_arg = state.to_str().unwrap();
    assert_success(&verify(&a, &["--state", state_arg]));
    let mut old: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    assert_eq!(old["site"], "https://downloads.example.com/site/");
    old.as_object_mut().unwrap().remove("site");
    fs::write(&state, serde_json::to_string(&old).unwrap()).unwrap();
    let out = verify(&a, &["--state", state_arg]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("first sight; tracking the site https://downloads.example.com/site/"),
        "{}",
        stdout(&out)
    );
    assert_eq!(verify(&b, &["--state", state_arg]).status.code(), Some(1));
}

fn withdrawn_key_announcement_is_forgotten() {
    let fixture = Fixture::new("ok-minimal");
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    assert_success(&vmcast(tmp.path(), &["keygen", "-W"], &[]));
    let (next_key, next_pub) = (tmp.path().join("vmcast.key"), tmp.path().join("vmcast.pub"));
    let state = tmp.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    // Build 1 announces the next key.
    fixture.configure(&format!(
        "next_public_key = {:?}\n",
        next_pub.to_str().unwrap()
    ));
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790000000")]));
    assert_success(&verify(&fixture, &["--state", state_arg]));
    let next_id =
        vmcast_gen::sign::PublicKey::from_file(&next_pub, &fs::read_to_string(&next_pub).unwrap())
            .unwrap()
            .key_id;
    // Build 2, by the same key, no longer announces it.
    fs::write(fixture.path("vmcast.toml"), &config).unwrap();
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790086400")]));
    let out = verify(&fixture, &["--state", state_arg]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!(
            "key {next_id} no longer announced by key 9846815B1BF4E0B5; forgotten"
        )),
        "{}",
        stdout(&out)
    );
    // A build signed by the withdrawn key is refused.
    assert_success(&fixture.run(
        &["build", "--secret-key", next_key.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1790172800")],
    ));
    assert_rejected(
        &verify(&fixture, &["--state", state_arg]),
        &[&format!(
            "feed.xml: signed by key {next_id}, not the pinned key 9846815B1BF4E0B5; \
             no trusted key announced it in the state file"
        )],
    );
}

// ---- what build writes, verify reads ----

fn release_notes_over_the_text_limit_are_refused_by_build() {
    let fixture = Fixture::new("oversized-release-notes");
    let notes = fixture.path("releases/webapp/1.0.0/release.toml");
    let head = "version = \"1.0.0\"\ndate = 2026-01-15\nnotes = \"\"\"\n";
    let tail = "\"\"\"\n";
    let limit = vmcast_gen::model::MAX_TEXT_FILE as usize;
    let line = "A very long release note.\n";
    let mut text = String::with_capacity(limit + line.len());
    text.push_str(head);
    while text.len() + line.len() + tail.len() <= limit + 1 {
        text.push_str(line);
    }
    text.push_str(&"x".repeat(limit + 1 - text.len() - tail.len()));
    text.push_str(tail);
    assert_eq!(text.len(), limit + 1);
    fs::write(&notes, text).unwrap();
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        format!(
            "error: releases/webapp/1.0.0/release.toml: {} bytes, over the limit of {limit} \
             bytes (64.0 MiB) for a site's text files: `verify` refuses a feed that large; \
             shorten the notes\n",
            limit + 1
        )
    );
    assert_eq!(out.status.code(), Some(1));
}

fn release_notes_that_render_past_the_text_limit_are_refused_by_build() {
    let fixture = Fixture::new("oversized-release-notes");
    // 9 MB of `<`: 4 bytes each as HTML, 8 once the feed escapes the HTML.
    let paragraphs = format!("{}\n\n", "<".repeat(1000)).repeat(9000);
    fs::write(
        fixture.path("releases/webapp/1.0.0/release.toml"),
        format!("version = \"1.0.0\"\ndate = 2026-01-15\nnotes = \"\"\"\n{paragraphs}\"\"\"\n"),
    )
    .unwrap();
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: releases/webapp/1.0.0/release.toml: the notes escaped into the feed would be over \
         the limit of 67108864 bytes (64.0 MiB) for a site's text files: `verify` refuses a feed \
         that large; shorten the notes\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!fixture.path("public/feed.xml").exists());
}

/// Only a file that never changes (an archive) is signed with no build's
/// stamp: a feed re-signed that way, which would dodge the rollback and
/// expiry checks, is refused.
fn a_feed_signed_with_no_build_is_refused() {
    let fixture = built(crate::common::EPOCH);
    let data = fs::read(fixture.path("public/feed.xml")).unwrap();
    let comment = "file:feed.xml\tbase_url:https://downloads.example.com/site/";
    let sig = kat_key().sign(&data, comment).unwrap();
    fs::write(fixture.path("public/feed.xml.minisig"), sig.to_file()).unwrap();
    assert_rejected(
        &verify(&fixture, &[]),
        &[
            "feed.xml: its signature names no build, as only a file that never changes \
           (an archive) may",
        ],
    );
}
