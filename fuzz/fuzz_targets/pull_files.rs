//! Feeds arbitrary bytes to the readers of the files `verify --state` and
//! `pull` keep between runs: the state file (read, then every key's
//! announcement chain followed as the key check does) and pull's record.
//! Whoever can write beside them controls their bytes. A reader may refuse
//! them; it must not panic or hang.
//!
//!     cargo fuzz run pull_files -- -max_total_time=300
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmcast_gen::site::read_state(data);
    let _ = vmcast_gen::pull::read_record(data);
});
