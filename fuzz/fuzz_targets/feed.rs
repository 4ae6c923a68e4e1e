//! Feeds arbitrary bytes to the feed reader that `verify` runs on a
//! downloaded feed.xml. It may refuse them; it must not panic or hang.
//!
//!     cargo fuzz run feed -- -max_total_time=300
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmcast_gen::site::count_feed_items(data);
});
