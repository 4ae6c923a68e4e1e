//! OpenPGP clearsigning: `keygen --openpgp`, and the `SHA256SUMS.asc` and
//! `openpgp.asc` that `build` writes when `[catalogs] openpgp_key` is set,
//! checked with GnuPG's own `gpgv` and `gpg` (the tools virt-builder and
//! simplestreams run), each also shown rejecting a tampered copy. In CI
//! (CI=true) a missing tool fails the test; .ci/run installs them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{Fixture, assert_success, snapshot_tree, stderr, stdout, vmcast};

tests! {
    keygen_then_build_is_accepted_by_gpgv_and_gpg needs GPGV, GPG;
    builds_are_byte_reproducible;
    gpgs_known_answer_verifies_and_clearsigned_layout_is_gpgs;
    verify_checks_the_clearsigned_manifest;
    public_key_given_as_secret_key;
    garbage_key;
    environment_key_wins_over_the_config;
    key_inside_output;
    passphrase_protected_key;
    readable_unencrypted_key_is_warned_about;
    keygen_refuses_existing_files_before_asking;
}

/// The passphrase of known-answer/openpgp-encrypted-secret.asc.
const PASSWORD: &str = "correct horse";

fn known_answer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/known-answer")
        .join(name)
}

/// Runs GnuPG's `program` with its home in `home`, never on a terminal.
fn gnupg(program: &str, home: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .env("GNUPGHOME", home)
        .args(args)
        .output()
        .unwrap()
}

/// A GnuPG home directory (mode 0700, as gpg wants it).
pub(crate) fn gnupg_home(parent: &Path) -> PathBuf {
    let home = parent.join("gnupg");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    home
}

/// A binary keyring for `gpgv --keyring` made from an armored public key,
/// as a consumer makes one from the published `openpgp.asc`.
pub(crate) fn keyring(home: &Path, public: &Path) -> PathBuf {
    let keyring = home.join("site.gpg");
    let out = gnupg(
        "gpg",
        home,
        &[
            "--batch",
            "--output",
            keyring.to_str().unwrap(),
            "--dearmor",
            public.to_str().unwrap(),
        ],
    );
    assert_success(&out);
    keyring
}

/// A copy of `path` in `dir` with the byte at `offset` changed.
fn flipped(path: &Path, dir: &Path, offset: usize) -> PathBuf {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    let copy = dir.join("tampered.asc");
    fs::write(&copy, bytes).unwrap();
    copy
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn keygen_then_build_is_accepted_by_gpgv_and_gpg() {
    let fixture = Fixture::new("ok-minimal");
    let password = [("VMCAST_OPENPGP_PASSWORD", PASSWORD)];
    let out = fixture.run(
        &[
            "keygen",
            "--openpgp",
            "-s",
            "keys/catalog.asc",
            "-p",
            "keys/catalog.pub.asc",
        ],
        &password,
    );
    assert_success(&out);
    let printed = stdout(&out);
    let fingerprint = printed
        .split_once("\nFingerprint ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(f, _)| f.to_owned())
        .unwrap_or_default();
    assert_eq!(fingerprint.len(), 40, "{printed}");
    assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        printed,
        format!(
            "Wrote OpenPGP secret key keys/catalog.asc (mode 0600, encrypted) and public key \
             keys/catalog.pub.asc\nFingerprint {fingerprint}; user id: Fixture: minimal site\n"
        )
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(mode(&fixture.path("keys/catalog.asc")), 0o600);
    assert_eq!(mode(&fixture.path("keys/catalog.pub.asc")), 0o644);

    fixture.configure("\n[catalogs]\nopenpgp_key = \"keys/catalog.asc\"\n");
    let out = fixture.run(&["build"], &password);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    assert!(
        stdout(&out).ends_with(&format!(
            "Clearsigned SHA256SUMS.asc with OpenPGP key {fingerprint}\n"
        )),
        "{}",
        stdout(&out)
    );
    let site = fixture.path("public");
    assert_eq!(
        fs::read(site.join("openpgp.asc")).unwrap(),
        fs::read(fixture.path("keys/catalog.pub.asc")).unwrap()
    );

    // Alone in a directory: beside SHA256SUMS, gpg would also warn that
    // it is not a detached signature of it.
    let scratch = tempfile::tempdir().unwrap();
    let signed = scratch.path().join("SHA256SUMS.asc");
    fs::copy(site.join("SHA256SUMS.asc"), &signed).unwrap();
    let home = gnupg_home(scratch.path());
    let keyring = keyring(&home, &site.join("openpgp.asc"));
    let gpgv = |file: &Path| {
        gnupg(
            "gpgv",
            &home,
            &[
                "--keyring",
                keyring.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        )
    };
    let good = gpgv(&signed);
    assert_success(&good);
    assert!(
        stderr(&good).contains(&format!("using EDDSA key {fingerprint}\n"))
            && stderr(&good).contains("Good signature from \"Fixture: minimal site\""),
        "{}",
        stderr(&good)
    );
    // The first byte of the first digest, after the two header lines.
    let text_start = fs::read_to_string(&signed).unwrap().find("\n\n").unwrap() + 2;
    let bad = gpgv(&flipped(&signed, scratch.path(), text_start));
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("BAD signature"), "{}", stderr(&bad));

    let import = gnupg(
        "gpg",
        &home,
        &[
            "--batch",
            "--import",
            site.join("openpgp.asc").to_str().unwrap(),
        ],
    );
    assert_success(&import);
    let verified = gnupg(
        "gpg",
        &home,
        &["--batch", "--verify", signed.to_str().unwrap()],
    );
    assert_success(&verified);
    assert!(
        stderr(&verified).contains("Good signature from \"Fixture: minimal site\""),
        "{}",
        stderr(&verified)
    );
    // What gpg takes out of the message is SHA256SUMS, byte for byte.
    let decrypted = gnupg(
        "gpg",
        &home,
        &["--batch", "--decrypt", signed.to_str().unwrap()],
    );
    assert_success(&decrypted);
    assert_eq!(decrypted.stdout, fs::read(site.join("SHA256SUMS")).unwrap());
}

fn builds_are_byte_reproducible() {
    let fixture = Fixture::new("ok-openpgp");
    let first = fixture.build(&["--out", "first"]);
    assert_success(&first);
    assert_eq!(stderr(&first), "");
    let second = fixture.build(&["--out", "second"]);
    assert_success(&second);
    let tree = snapshot_tree(&fixture.path("first"));
    assert_eq!(tree, snapshot_tree(&fixture.path("second")));
    let signed = String::from_utf8(tree[Path::new("SHA256SUMS.asc")].clone()).unwrap();
    insta::assert_snapshot!("ok_openpgp_SHA256SUMS_asc", signed);
    assert_eq!(
        tree[Path::new("openpgp.asc")],
        fs::read(known_answer("openpgp.asc")).unwrap()
    );

    // The signature's time is the build's.
    let later = fixture.run(
        &["build", "--out", "later"],
        &[("SOURCE_DATE_EPOCH", "1790000001")],
    );
    assert_success(&later);
    let later = fs::read_to_string(fixture.path("later/SHA256SUMS.asc")).unwrap();
    assert_ne!(later, signed);
}

fn gpgs_known_answer_verifies_and_clearsigned_layout_is_gpgs() {
    let public = fs::read_to_string(known_answer("openpgp.asc")).unwrap();
    let data = fs::read_to_string(known_answer("data.txt")).unwrap();
    let theirs = fs::read_to_string(known_answer("data.txt.asc")).unwrap();
    let verified = vmcast_gen::openpgp::verify(&public, "data.txt.asc", &theirs).unwrap();
    assert_eq!(verified.text, data);
    assert_eq!(
        verified.fingerprint,
        "AB036385B86647715A6EC66557D18D1018D9B3B7"
    );
    assert!(
        vmcast_gen::openpgp::verify(&public, "data.txt.asc", &theirs.replace("quick", "quack"))
            .is_err()
    );

    let path = known_answer("openpgp-secret.asc");
    let key = vmcast_gen::openpgp::LockedKey::parse(&path, &fs::read_to_string(&path).unwrap())
        .unwrap()
        .unlock(&mut || panic!("openpgp-secret.asc is not encrypted"))
        .unwrap();
    let time = chrono::DateTime::from_timestamp(1_790_000_000 + 1_200, 0).unwrap();
    let ours = key.clearsign(&data, time).unwrap();
    // Everything up to the signature block is laid out as gpg lays it out.
    let cleartext = |s: &str| {
        s.split("-----BEGIN PGP SIGNATURE-----")
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(cleartext(&ours), cleartext(&theirs));
    assert_eq!(
        vmcast_gen::openpgp::verify(&public, "data.txt.asc", &ours)
            .unwrap()
            .text,
        data
    );
}

fn verify_checks_the_clearsigned_manifest() {
    let fixture = Fixture::new("ok-openpgp");
    assert_success(&fixture.build(&[]));
    let verify = || {
        fixture.run(
            &["verify", "--pubkey", "../known-answer/kat.pub", "public"],
            &[],
        )
    };
    let out = verify();
    assert_success(&out);
    for line in [
        "  ok   manifest  openpgp.asc's SHA-256 matches SHA256SUMS\n",
        "  ok   openpgp   SHA256SUMS.asc: good signature by OpenPGP key \
         AB036385B86647715A6EC66557D18D1018D9B3B7 of the text of SHA256SUMS\n",
    ] {
        assert!(stdout(&out).contains(line), "{}", stdout(&out));
    }

    let signed = fixture.path("public/SHA256SUMS.asc");
    let original = fs::read_to_string(&signed).unwrap();
    fs::write(&signed, original.replacen("feed.xml", "feed.xmm", 1)).unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: SHA256SUMS.asc: no signature by OpenPGP key \
         AB036385B86647715A6EC66557D18D1018D9B3B7 matches its text\n"
    );

    // Another key in place of the published one: the manifest says no.
    fs::write(&signed, &original).unwrap();
    fs::copy(
        known_answer("openpgp-encrypted.asc"),
        fixture.path("public/openpgp.asc"),
    )
    .unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(
            "  FAIL manifest  openpgp.asc's SHA-256 differs from the one in SHA256SUMS\n"
        ),
        "{}",
        stdout(&out)
    );
}

/// Runs `build` on a fixture whose OpenPGP key is refused, and checks the
/// whole stderr, the exit status, and that no output was made.
#[track_caller]
fn refused(fixture: &Fixture, env: &[(&str, &str)], expected: &str) {
    let out = fixture.run(&["build"], env);
    assert_eq!(stderr(&out), expected);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert!(!fixture.path("public").exists());
}

fn public_key_given_as_secret_key() {
    refused(
        &Fixture::new("openpgp-public-key-as-secret"),
        &[],
        "error: ../known-answer/openpgp.asc: is an OpenPGP public key, not a secret key: give the \
         secret key (as written by `vmcast-gen keygen --openpgp` or `gpg --export-secret-keys \
         --armor`)\n",
    );
}

fn garbage_key() {
    let garbage = "error: keys/catalog-secret.asc: is not a readable OpenPGP secret key: its ASCII \
                   armor is damaged (the text between the BEGIN and END lines is not the base64 \
                   of OpenPGP packets)\n";
    let fixture = Fixture::new("openpgp-garbage-key");
    refused(&fixture, &[], garbage);
    // `check` reports what build would refuse, with the other problems.
    let out = fixture.run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), garbage);
    assert_eq!(stdout(&out), "checked 2 release(s): 1 problem(s)\n");
    // Not a key at all.
    refused(
        &fixture,
        &[("VMCAST_OPENPGP_KEY", "hello\n")],
        "error: $VMCAST_OPENPGP_KEY: is not an ASCII-armored OpenPGP secret key (no `-----BEGIN \
         PGP PRIVATE KEY BLOCK-----` line)\n",
    );
}

fn environment_key_wins_over_the_config() {
    let fixture = Fixture::new("openpgp-garbage-key");
    let key = fs::read_to_string(known_answer("openpgp-secret.asc")).unwrap();
    let out = fixture.run(&["build"], &[("VMCAST_OPENPGP_KEY", &key)]);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        fs::read(fixture.path("public/openpgp.asc")).unwrap(),
        fs::read(known_answer("openpgp.asc")).unwrap()
    );
    let out = fixture.run(&["check"], &[("VMCAST_OPENPGP_KEY", &key)]);
    assert_success(&out);
}

fn key_inside_output() {
    let fixture = Fixture::new("openpgp-key-inside-output");
    let before = snapshot_tree(&fixture.path("public"));
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: public/openpgp-secret.asc: the OpenPGP secret key lies inside the output \
         directory public, which is published; move it out\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(snapshot_tree(&fixture.path("public")), before);
}

fn passphrase_protected_key() {
    let fixture = Fixture::new("openpgp-encrypted-key");
    refused(
        &fixture,
        &[("VMCAST_OPENPGP_PASSWORD", "correct horse battery")],
        "error: ../known-answer/openpgp-encrypted-secret.asc: wrong password (cannot decrypt the \
         OpenPGP secret key)\n",
    );
    // No password and no terminal to ask on.
    refused(
        &fixture,
        &[],
        "error: the OpenPGP secret key needs a password: set VMCAST_OPENPGP_PASSWORD, or run on a \
         terminal\n",
    );
    // The minisign key's password is not the OpenPGP key's.
    refused(
        &fixture,
        &[("VMCAST_KEY_PASSWORD", PASSWORD)],
        "error: the OpenPGP secret key needs a password: set VMCAST_OPENPGP_PASSWORD, or run on a \
         terminal\n",
    );
    let out = fixture.run(&["build"], &[("VMCAST_OPENPGP_PASSWORD", PASSWORD)]);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    assert!(
        stdout(&out).ends_with(
            "Clearsigned SHA256SUMS.asc with OpenPGP key 116927F8D3858D49E1DEEA3269F73159C2E31023\n"
        ),
        "{}",
        stdout(&out)
    );
}

fn readable_unencrypted_key_is_warned_about() {
    let fixture = Fixture::new("ok-openpgp");
    let key = fixture.path("../known-answer/openpgp-secret.asc");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let warning = "warning: ../known-answer/openpgp-secret.asc: an unencrypted OpenPGP secret key \
                   that group or others can read (mode 0644): anyone who can read it can sign as \
                   you; chmod 600 it, or use an encrypted key (vmcast-gen keygen --openpgp \
                   without -W)\n";
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(stderr(&out), warning);
    let out = fixture.run(&["check"], &[]);
    assert_success(&out);
    assert_eq!(stderr(&out), warning);
}

fn keygen_refuses_existing_files_before_asking() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("openpgp.asc"), "keep me").unwrap();
    // No password in the environment and no terminal: the refusal comes
    // first.
    let out = vmcast(dir.path(), &["keygen", "--openpgp"], &[]);
    assert_eq!(
        stderr(&out),
        "error: openpgp.asc: already exists; pass --force to overwrite it\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(dir.path().join("openpgp.asc")).unwrap(),
        "keep me"
    );
    assert!(!dir.path().join("openpgp-secret.asc").exists());

    let out = vmcast(dir.path(), &["keygen", "--openpgp", "--force", "-W"], &[]);
    assert_success(&out);
    assert!(
        stdout(&out).starts_with(
            "Wrote OpenPGP secret key openpgp-secret.asc (mode 0600, unencrypted) and public key \
             openpgp.asc\nFingerprint "
        ),
        "{}",
        stdout(&out)
    );
    // No site here or above: the user id is the tool's name.
    assert!(stdout(&out).ends_with("; user id: vmcast-gen\n"));
    let secret = fs::read_to_string(dir.path().join("openpgp-secret.asc")).unwrap();
    let key = vmcast_gen::openpgp::LockedKey::parse(Path::new("k"), &secret).unwrap();
    assert!(!key.encrypted);

    let out = vmcast(
        dir.path(),
        &[
            "keygen",
            "--openpgp",
            "-W",
            "--user-id",
            "Example Appliances <releases@example.com>",
            "-s",
            "new/dir/secret.asc",
            "-p",
            "new/dir/public.asc",
        ],
        &[],
    );
    assert_success(&out);
    assert!(
        stdout(&out).ends_with("; user id: Example Appliances <releases@example.com>\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(mode(&dir.path().join("new/dir/secret.asc")), 0o600);
}
