//! Feeds arbitrary bytes to the SBOM and provenance readers that `build`
//! runs on a release's files and `verify` on downloaded ones: as an SBOM
//! and as an in-toto bundle whose envelopes are checked against the
//! supply-chain fixture's builder key. They may refuse them; they must not
//! panic or hang.
//!
//!     cargo fuzz run supply -- -max_total_time=300
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmcast_gen::model::Sha256;
use vmcast_gen::supply::keys::ProvenanceKey;
use vmcast_gen::supply::{Kind, examine};

fn key() -> &'static ProvenanceKey {
    static KEY: OnceLock<ProvenanceKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let pem = include_str!("../../tests/fixtures/supply-chain/keys/builder-p256.pub.pem");
        ProvenanceKey::parse(Path::new("builder-p256.pub.pem"), pem).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let targets = [("image", Sha256::of(b"image"))];
    let keys = std::slice::from_ref(key());
    for (name, kind) in [
        ("x.spdx.json", Kind::Sbom),
        ("x.cdx.json", Kind::Sbom),
        ("x.intoto.jsonl", Kind::Provenance),
        ("x.intoto.json", Kind::Provenance),
    ] {
        let _ = examine(Path::new(name), name, kind, data, keys, &targets);
    }
});
