//! Feeds arbitrary text to the minisign readers that `verify` runs on
//! downloaded files: the signature parser and its checks against a fixed
//! key, the public-key parsers (an announced next key is downloaded too),
//! and the trusted comment's build stamp. They may refuse the input; they
//! must not panic or hang.
//!
//!     cargo fuzz run minisig -- -max_total_time=300
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vmcast_gen::sign::{PublicKey, Signature};
use vmcast_gen::trust::BuildStamp;

const KEY_FILE: &str = include_str!("../../tests/fixtures/known-answer/kat.pub");
const SIGNATURE_FILE: &str = include_str!("../../tests/fixtures/known-answer/data.txt.minisig");
const DATA: &[u8] = include_bytes!("../../tests/fixtures/known-answer/data.txt");

static KEY: LazyLock<PublicKey> =
    LazyLock::new(|| PublicKey::from_file(Path::new("kat.pub"), KEY_FILE).unwrap());
static SIGNATURE: LazyLock<Signature> = LazyLock::new(|| {
    Signature::from_file(Path::new("data.txt.minisig"), SIGNATURE_FILE).unwrap()
});

fuzz_target!(|data: &[u8]| {
    // `verify` reads every downloaded text file this way.
    let text = String::from_utf8_lossy(data);
    if let Ok(sig) = Signature::from_file(Path::new("fuzz.minisig"), &text) {
        let _ = sig.verify_comment(&KEY);
        let _ = sig.verify_data(&KEY, DATA);
        let _ = sig.verify_data(&KEY, data);
        if let Ok(stamp) = BuildStamp::parse(&sig.trusted_comment) {
            let _ = stamp.expires_at();
        }
    }
    if let Ok(key) = PublicKey::from_file(Path::new("fuzz.pub"), &text) {
        let _ = SIGNATURE.verify(&key, DATA);
    }
    if let Ok(key) = PublicKey::from_base64(&text) {
        let _ = SIGNATURE.verify(&key, DATA);
    }
    if let Ok(stamp) = BuildStamp::parse(&text) {
        let _ = stamp.expires_at();
    }
});
