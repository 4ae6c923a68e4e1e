//! Known-answer tests against files the real `minisign` made
//! (tests/fixtures/known-answer/README.md says how).

use std::path::{Path, PathBuf};

use vmcast_gen::sign::{PublicKey, SecretKey, Signature, Signer, VerifyError};

tests! {
    signature_bytes_equal_minisigns_own;
    public_key_file_equals_minisigns_own;
    minisigns_signature_verifies_and_legacy_is_refused;
}

fn fixture(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/known-answer")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

fn key() -> SecretKey {
    let (path, text) = fixture("kat.key");
    SecretKey::from_file(&path, &text, &mut || panic!("kat.key is not encrypted")).unwrap()
}

/// The signature lines minisign wrote; the untrusted comment differs by design.
fn signed_lines(text: &str) -> Vec<&str> {
    text.lines().skip(1).collect()
}

fn signature_bytes_equal_minisigns_own() {
    let data = std::fs::read(fixture("data.txt").0).unwrap();
    let (_, expected) = fixture("data.txt.minisig");
    let comment = signed_lines(&expected)[1]
        .strip_prefix("trusted comment: ")
        .unwrap();
    let ours = key().sign(&data, comment).unwrap().to_file();
    assert_eq!(signed_lines(&ours), signed_lines(&expected));
}

fn public_key_file_equals_minisigns_own() {
    let (_, expected) = fixture("kat.pub");
    assert_eq!(key().public.to_file(), expected);
    let (path, text) = fixture("kat.pub");
    assert_eq!(PublicKey::from_file(&path, &text).unwrap(), key().public);
}

fn minisigns_signature_verifies_and_legacy_is_refused() {
    let data = std::fs::read(fixture("data.txt").0).unwrap();
    let public = key().public;
    let (path, text) = fixture("data.txt.minisig");
    let sig = Signature::from_file(&path, &text).unwrap();
    assert_eq!(sig.verify(&public, &data), Ok(()));
    let (path, text) = fixture("data.txt.legacy.minisig");
    let legacy = Signature::from_file(&path, &text).unwrap();
    assert_eq!(legacy.verify(&public, &data), Err(VerifyError::Legacy));
}
