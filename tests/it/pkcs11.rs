//! Signing through a PKCS#11 token: SoftHSM2 with a token made for each
//! test in a temporary directory (its own SOFTHSM2_CONF), the module
//! loaded at run time as any token's would be.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tempfile::TempDir;

use crate::common::{Fixture, assert_success, snapshot_tree, stderr, stdout};
use crate::pull::Files;

tests! {
    a_site_signed_on_the_token_verifies_with_minisign_verify_and_pull
        needs SOFTHSM, MINISIGN;
    a_key_imported_into_the_token_signs_the_same_site_as_its_file needs SOFTHSM;
    no_key_material_lands_in_the_output_the_cache_or_tmp needs SOFTHSM;
    a_wrong_pin_is_refused_and_never_shown needs SOFTHSM;
    a_missing_object_is_named_with_the_keys_there needs SOFTHSM;
    a_key_that_is_not_ed25519_is_refused needs SOFTHSM, PKCS11_TOOL;
    keygen_pkcs11_makes_a_key_that_never_leaves_the_token needs SOFTHSM, PKCS11_TOOL;
    check_opens_the_token_and_holds_it_to_public_key needs SOFTHSM;
    no_module_and_no_token_are_named needs SOFTHSM;
    the_release_script_signs_on_the_token_with_no_key_on_the_runner needs SOFTHSM;
}

/// Debian's SoftHSM2 module.
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711";
const SO_PIN: &str = "0815";
/// The token every test makes.
const LABEL: &str = "vmcast-test";

/// A SoftHSM2 token of one test's own: its config and its token directory
/// in a temporary directory.
struct Token {
    dir: TempDir,
}

impl Token {
    fn new() -> Token {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        fs::create_dir(&tokens).unwrap();
        fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let token = Token { dir };
        let out = token
            .command("softhsm2-util")
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .output()
            .unwrap();
        assert_success(&out);
        token
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// A tool run against this token.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", self.conf());
        cmd
    }

    /// What `vmcast-gen` needs to find the token and log in.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf().display().to_string()),
            ("VMCAST_PKCS11_MODULE", MODULE.to_owned()),
            ("VMCAST_PKCS11_PIN", PIN.to_owned()),
        ]
    }

    /// Runs `vmcast-gen` in the fixture with this token, and `extra` env.
    fn run(&self, fixture: &Fixture, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        fixture.run(args, &all)
    }

    /// `pkcs11-tool` logged in to this token.
    fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.command("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                LABEL,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .output()
            .unwrap()
    }
}

/// The URI of the key labelled `object` on the test token; the module and
/// the PIN come from the environment.
fn uri(object: &str) -> String {
    format!("pkcs11:token={LABEL};object={object}")
}

/// The fixture's key file, as an absolute path.
fn kat_key(fixture: &Fixture) -> String {
    fixture
        .path("../known-answer/kat.key")
        .display()
        .to_string()
}

/// Puts kat.key on the token as `object`, and checks that the public key
/// written is kat.pub.
fn import_kat(token: &Token, fixture: &Fixture, object: &str) {
    let key = kat_key(fixture);
    let out = token.run(
        fixture,
        &[
            "keygen",
            "--pkcs11",
            &uri(object),
            "--import",
            &key,
            "-p",
            "imported.pub",
        ],
        &[],
    );
    assert_success(&out);
    assert_eq!(
        fs::read_to_string(fixture.path("imported.pub")).unwrap(),
        fs::read_to_string(fixture.path("../known-answer/kat.pub")).unwrap()
    );
}

/// The fixture signs with the token's key `object`, pinned to `public`.
fn sign_on_token(fixture: &Fixture, object: &str, public: &str) {
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("secret_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(
        fixture.path("vmcast.toml"),
        format!(
            "secret_key = \"{}\"\npublic_key = \"{public}\"\n{config}",
            uri(object)
        ),
    )
    .unwrap();
}

#[track_caller]
fn assert_fails_with(out: &Output, expected: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(
        stderr(out).contains(expected),
        "expected `{expected}` in:\n{}",
        stderr(out)
    );
}

fn a_site_signed_on_the_token_verifies_with_minisign_verify_and_pull() {
    let token = Token::new();
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    fs::create_dir(&served).unwrap();
    let server = Files::start(served.clone());
    let fixture = Fixture::new("ok-minimal");
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    fs::write(
        fixture.path("vmcast.toml"),
        config.replace("https://downloads.example.com/site/", &server.url()),
    )
    .unwrap();

    assert_success(&token.run(&fixture, &["keygen", "--pkcs11", &uri("release")], &[]));
    sign_on_token(&fixture, "release", "vmcast.pub");
    let out = token.run(&fixture, &["build"], &[]);
    assert_success(&out);
    let public = fixture.path("public");
    assert_eq!(
        fs::read(public.join("vmcast.pub")).unwrap(),
        fs::read(fixture.path("vmcast.pub")).unwrap()
    );

    for file in ["feed.xml", "SHA256SUMS"] {
        let out = Command::new("minisign")
            .args(["-V", "-H", "-p", "vmcast.pub", "-m"])
            .arg(public.join(file))
            .current_dir(&fixture.root)
            .output()
            .unwrap();
        assert_success(&out);
    }
    let out = fixture.run(&["verify", "public", "--pubkey", "vmcast.pub"], &[]);
    assert_success(&out);

    crate::common::copy_tree(&public, &served);
    let dest = tmp.path().join("dest");
    let out = fixture.run(
        &[
            "pull",
            &server.url(),
            "--pubkey",
            "vmcast.pub",
            "--appliance",
            "webapp",
            "--dest",
            dest.to_str().unwrap(),
            "--arch",
            "x86_64",
        ],
        &[],
    );
    assert_success(&out);
    assert_eq!(
        fs::read(dest.join("webapp-1.1.0.raw")).unwrap(),
        fs::read(fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw")).unwrap()
    );
}

fn a_key_imported_into_the_token_signs_the_same_site_as_its_file() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    let out = fixture.run(&["build", "-o", "from-file"], &[]);
    assert_success(&out);

    import_kat(&token, &fixture, "imported");
    let out = token.run(
        &fixture,
        &[
            "build",
            "-o",
            "from-token",
            "--secret-key",
            &uri("imported"),
        ],
        &[],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("9846815B1BF4E0B5"),
        "{}",
        stdout(&out)
    );
    let from_file = snapshot_tree(&fixture.path("from-file"));
    let from_token = snapshot_tree(&fixture.path("from-token"));
    assert!(from_file.contains_key(Path::new("feed.xml.minisig")));
    assert_eq!(from_file, from_token);
}

/// The secret key's forms that must never be written: its seed, the seed
/// and public key as libsodium holds them, and the key file's base64.
fn key_material(fixture: &Fixture) -> Vec<(&'static str, Vec<u8>)> {
    let text = fs::read_to_string(kat_key(fixture)).unwrap();
    let line = text.lines().nth(1).unwrap().trim().to_owned();
    let bytes = B64.decode(&line).unwrap();
    let seed = bytes[62..94].to_vec();
    let seed_and_public = bytes[62..126].to_vec();
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("the seed", seed.clone()),
        ("the seed and public key", seed_and_public),
        ("the seed in base64", B64.encode(&seed).into_bytes()),
        ("the seed in hex", hex.into_bytes()),
        ("the key file's base64", line.into_bytes()),
    ]
}

/// Every file under `dir` that holds one of `secrets`.
fn holders(dir: &Path, secrets: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir(dir) {
        let bytes = fs::read(&entry).unwrap();
        for (what, secret) in secrets {
            if bytes.windows(secret.len()).any(|w| w == secret.as_slice()) {
                found.push(format!("{}: {what}", entry.display()));
            }
        }
    }
    found
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

fn no_key_material_lands_in_the_output_the_cache_or_tmp() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    let secrets = key_material(&fixture);
    // The check finds the key where it is.
    assert!(!holders(&fixture.path("../known-answer"), &secrets).is_empty());

    import_kat(&token, &fixture, "imported");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let scratch = tmp.path().join("tmp");
    fs::create_dir(&scratch).unwrap();
    let env = [
        ("VMCAST_CACHE_DIR", cache.to_str().unwrap()),
        ("TMPDIR", scratch.to_str().unwrap()),
    ];
    sign_on_token(&fixture, "imported", "../known-answer/kat.pub");
    assert_success(&token.run(&fixture, &["check"], &env));
    assert_success(&token.run(&fixture, &["build"], &env));
    assert!(fixture.path("public/feed.xml.minisig").is_file());
    assert!(cache.is_dir(), "the build used no cache");

    let mut found = Vec::new();
    for dir in [fixture.path("public"), cache, scratch] {
        found.extend(holders(&dir, &secrets));
    }
    assert!(found.is_empty(), "key material written: {found:#?}");
}

fn a_wrong_pin_is_refused_and_never_shown() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    import_kat(&token, &fixture, "imported");
    let out = token.run(
        &fixture,
        &["build", "--secret-key", &uri("imported")],
        &[("VMCAST_PKCS11_PIN", "98765")],
    );
    assert_fails_with(
        &out,
        &format!("error: {}: wrong PIN for token `{LABEL}`", uri("imported")),
    );
    assert!(!stderr(&out).contains("98765"), "{}", stderr(&out));
    assert!(!fixture.path("public").exists());

    // A PIN in the URI is left out of what is shown.
    let with_pin = format!("{}?pin-value=98765", uri("imported"));
    let out = token.run(&fixture, &["build", "--secret-key", &with_pin], &[]);
    assert_fails_with(&out, "wrong PIN");
    assert!(!stderr(&out).contains("98765"), "{}", stderr(&out));

    // No PIN at all, and no terminal: say where one goes.
    let out = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args(["build", "--secret-key", &uri("imported")])
        .current_dir(&fixture.root)
        .env("SOFTHSM2_CONF", token.conf())
        .env("VMCAST_PKCS11_MODULE", MODULE)
        .env_remove("VMCAST_PKCS11_PIN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_fails_with(&out, "the token needs its user PIN: set VMCAST_PKCS11_PIN");

    // The right one, from a pin-source file.
    let pin_file = fixture.path("../pin");
    fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let from_file = format!("{}?pin-source={}", uri("imported"), pin_file.display());
    let out = token.run(
        &fixture,
        &["build", "--secret-key", &from_file],
        &[("VMCAST_PKCS11_PIN", "98765")],
    );
    assert_success(&out);
}

fn a_missing_object_is_named_with_the_keys_there() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    import_kat(&token, &fixture, "imported");
    let out = token.run(&fixture, &["build", "--secret-key", &uri("nope")], &[]);
    assert_fails_with(
        &out,
        &format!(
            "error: {}: no private key labelled `nope` on token `{LABEL}`; its private keys: \
             `imported` (id b5e0f41b5b814698)",
            uri("nope")
        ),
    );
}

fn a_key_that_is_not_ed25519_is_refused() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    let out = token.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "p256",
        "--id",
        "0102030405060708",
    ]);
    assert_success(&out);
    let out = token.run(&fixture, &["build", "--secret-key", &uri("p256")], &[]);
    assert_fails_with(
        &out,
        "the key `p256` is an ECDSA key (CKK_EC), not ed25519: minisign signs with ed25519 only",
    );
    let out = token.run(&fixture, &["check", "--secret-key", &uri("p256")], &[]);
    assert_fails_with(&out, "is an ECDSA key (CKK_EC), not ed25519");
}

fn keygen_pkcs11_makes_a_key_that_never_leaves_the_token() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    let out = token.run(&fixture, &["keygen", "--pkcs11", &uri("release")], &[]);
    assert_success(&out);
    let public = fs::read_to_string(fixture.path("vmcast.pub")).unwrap();
    assert!(
        stdout(&out).contains(public.lines().nth(1).unwrap()),
        "{}",
        stdout(&out)
    );
    assert!(!fixture.path("vmcast.key").exists());

    let objects = stdout(&token.pkcs11_tool(&["--list-objects", "--type", "privkey"]));
    assert!(objects.contains("label:      release"), "{objects}");
    assert!(
        objects.contains("sensitive, always sensitive, never extractable, local"),
        "{objects}"
    );
    // The key id is the object's 8-byte CKA_ID.
    let key_id = public.lines().next().unwrap().rsplit(' ').next().unwrap();
    let id_bytes = u64::from_str_radix(key_id, 16).unwrap().to_le_bytes();
    let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(objects.contains(&format!("ID:         {id}")), "{objects}");

    // A label already there is never replaced, nor the public key file.
    let out = token.run(
        &fixture,
        &["keygen", "--pkcs11", &uri("release"), "-p", "other.pub"],
        &[],
    );
    assert_fails_with(
        &out,
        "already holds a key labelled `release`; keys on a token are not overwritten",
    );
    let out = token.run(&fixture, &["keygen", "--pkcs11", &uri("second")], &[]);
    assert_fails_with(&out, "vmcast.pub: already exists; pass --force");

    // It signs: without public_key, the key id comes from CKA_ID.
    let out = token.run(&fixture, &["build", "--secret-key", &uri("release")], &[]);
    assert_success(&out);
    assert!(stdout(&out).contains(key_id), "{}", stdout(&out));
    let out = fixture.run(&["verify", "public", "--pubkey", "vmcast.pub"], &[]);
    assert_success(&out);
}

fn check_opens_the_token_and_holds_it_to_public_key() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    import_kat(&token, &fixture, "imported");
    assert_success(&token.run(&fixture, &["keygen", "--pkcs11", &uri("other")], &[]));

    sign_on_token(&fixture, "imported", "imported.pub");
    let out = token.run(&fixture, &["check"], &[]);
    assert_success(&out);
    assert!(stdout(&out).contains("no problems"), "{}", stdout(&out));

    // Another key on the token than the one consumers pinned.
    let out = token.run(&fixture, &["check", "--secret-key", &uri("other")], &[]);
    assert_fails_with(&out, "imported.pub: is not the public half of the key");
    let out = token.run(&fixture, &["build", "--secret-key", &uri("other")], &[]);
    assert_fails_with(&out, "imported.pub: is not the public half of the key");
    assert!(!fixture.path("public").exists());

    // check fails as build does on a wrong PIN.
    let out = token.run(&fixture, &["check"], &[("VMCAST_PKCS11_PIN", "0000")]);
    assert_fails_with(&out, "wrong PIN");

    // A malformed URI in vmcast.toml is an error at its place.
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    fs::write(
        fixture.path("vmcast.toml"),
        config.replace(";object=imported", ";object=imported;colour=red"),
    )
    .unwrap();
    let out = token.run(&fixture, &["check"], &[]);
    assert_fails_with(&out, "vmcast.toml:1:14: unknown attribute `colour`");
}

fn no_module_and_no_token_are_named() {
    let token = Token::new();
    let fixture = Fixture::new("ok-minimal");
    let out = token.run(
        &fixture,
        &["build", "--secret-key", &uri("x")],
        &[("VMCAST_PKCS11_MODULE", "/nonexistent/libpkcs11.so")],
    );
    assert_fails_with(
        &out,
        &format!(
            "error: {}: no PKCS#11 module at /nonexistent/libpkcs11.so",
            uri("x")
        ),
    );
    let out = token.run(
        &fixture,
        &["build", "--secret-key", "pkcs11:token=elsewhere;object=x"],
        &[],
    );
    assert_fails_with(
        &out,
        &format!(
            "error: pkcs11:token=elsewhere;object=x: no token labelled `elsewhere` in the PKCS#11 \
             module {MODULE}; its tokens: `{LABEL}`"
        ),
    );
}

/// ci/vmcast-release.sh (the GitHub Action's logic) with the key on a
/// token: no VMCAST_SECRET_KEY, the PIN in VMCAST_PKCS11_PIN; it builds
/// into the directory a server on 127.0.0.1 serves, then verifies the
/// live site, images and all, against the public key.
fn the_release_script_signs_on_the_token_with_no_key_on_the_runner() {
    let token = Token::new();
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let server = Files::start(served.clone());
    let fixture = Fixture::new("ok-minimal");
    import_kat(&token, &fixture, "release");
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    fs::write(
        fixture.path("vmcast.toml"),
        format!(
            "output_dir = \"{}\"\n{}",
            served.display(),
            config.replace("https://downloads.example.com/site/", &server.url())
        ),
    )
    .unwrap();
    sign_on_token(&fixture, "release", "imported.pub");

    let cache = tmp.path().join("cache").display().to_string();
    let url = server.url();
    let token_env = token.env();
    let env: Vec<(&str, &str)> = [
        ("VMCAST_CACHE_DIR", cache.as_str()),
        ("VMCAST_VERIFY_URL", url.as_str()),
        ("VMCAST_PUBKEY", "imported.pub"),
    ]
    .into_iter()
    .chain(token_env.iter().map(|(k, v)| (*k, v.as_str())))
    .collect();
    let out = crate::common::release_script(&fixture, &env);
    assert_success(&out);
    assert!(
        stdout(&out).contains("image bytes read, key 9846815B1BF4E0B5"),
        "{}",
        stdout(&out)
    );
}
