//! Feeds arbitrary bytes to the image inspector in arbitrary chunkings.
//! It may refuse them; it must not panic, hang, or allocate without bound.
//!
//!     cargo fuzz run inspect -- -max_total_time=300
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let chunk = 1 + usize::from(data[0]) * 97;
    let _ = vmcast_gen::inspect::inspect_bytes(&data[1..], chunk);
});
