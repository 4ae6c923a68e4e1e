//! What each sum the hashing read takes of an image costs with `zsync = true`,
//! alone, on one core: the SHA-256 every image gets (`sha256`); the same
//! pass taking the control file's SHA-1 of the whole image too
//! (`sha256+sha1`, what the read does), and the SHA-1 alone for comparison
//! (`sha1`); the MD4 and rolling sum of each 4 KiB block, as for an image
//! over 100 MB, sixteen blocks at a time (`md4+rsum`, what the read does).
//! `bench/delta.sh` prints each one's share. Run with
//! `cargo bench --bench zsync_sums [-- ROUNDS]`; prints `name MB/s` (medians,
//! in the CPU time of the thread: other work on the machine does not stretch
//! it as it stretches the wall clock).
//! The same sums against the zsync-rs crate's are in bench/zsync-rs, a
//! package of its own: as a dev-dependency here, zsync-rs would switch on
//! ureq's default features in every test build of vmcast-gen.

use sha1::Digest;
use vmcast_gen::hash::Whole;
use vmcast_gen::zsync::sums;

const LEN: usize = 64 << 20;
const BLOCK: usize = 4096;

/// A sum's name, and the sum of a buffer, folded to a word.
type Case = (&'static str, fn(&[u8]) -> u32);

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let mut x: u32 = 0x9e37_79b9;
    let data: Vec<u8> = (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let cases: [Case; 4] = [
        ("sha256", |d| whole(d, false)),
        ("sha256+sha1", |d| whole(d, true)),
        ("sha1", |d| u32::from(sha1::Sha1::digest(d)[0])),
        ("md4+rsum", |d| {
            let mut out = 0;
            for group in d.chunks(BLOCK * sums::LANES) {
                let blocks: Vec<&[u8]> = group.chunks(BLOCK).collect();
                let (md4, rsum) = sums::md4_rsum(&blocks);
                out ^= u32::from(md4[0][0]) ^ rsum[0];
            }
            out
        }),
    ];
    for (name, f) in cases {
        let mut times: Vec<f64> = (0..rounds)
            .map(|_| {
                let t = cpu_seconds();
                std::hint::black_box(f(std::hint::black_box(&data)));
                cpu_seconds() - t
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{name} {:.0}", LEN as f64 / times[rounds / 2] / 1e6);
    }
}

/// The image's digests as the hashing read takes them, in 1 MiB reads.
fn whole(data: &[u8], sha1: bool) -> u32 {
    let mut w = Whole::new(sha1);
    for chunk in data.chunks(1 << 20) {
        w.update(chunk);
    }
    let (sha256, sha1) = w.finish();
    u32::from(sha256.0[0]) ^ u32::from(sha1.map_or(0, |d| d[0]))
}

/// The CPU time this thread has used.
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
