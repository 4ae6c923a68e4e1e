//! Feeds arbitrary bytes to the SHA256SUMS parser that `verify` runs on a
//! downloaded manifest. It may refuse them; it must not panic or hang. What
//! it accepts must hold each digest as written (64 hex digits, either case)
//! and survive a round trip through the writer.
//!
//!     cargo fuzz run sums -- -max_total_time=300
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcast_gen::sums;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = sums::parse(data) else {
        return;
    };
    let lower = data.to_ascii_lowercase();
    for (name, digest) in &parsed {
        let hex = digest.to_hex();
        assert!(
            lower.windows(64).any(|w| w == hex.as_bytes()),
            "{name:?}: digest {hex} is not in the manifest as written"
        );
    }
    let written = sums::manifest(parsed.iter().map(|(name, d)| (name.as_str(), *d)));
    assert_eq!(sums::parse(written.as_bytes()), Ok(parsed));
});
