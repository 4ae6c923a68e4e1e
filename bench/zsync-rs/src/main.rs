//! vmcast-gen's zsync control file against the zsync-rs crate's (MIT, 0.3):
//! each block's MD4 and rolling sum, and the whole control file of a
//! 128 MiB image (4 KiB blocks, as for every image over 100 MB), on one
//! core, from memory. Both must give the same bytes, checked before the
//! clock starts. `bench/delta.sh` runs it:
//! `cargo run --release -- [ROUNDS]` prints a Markdown table of medians.

use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use vmcast_gen::hash::{Chunk, Facts, Sink, Start, Whole};
use vmcast_gen::inspect::ImageInfo;
use vmcast_gen::model::ImageFormat;
use vmcast_gen::zsync::{self, sums};
use zsync_rs::ControlFile;

const LEN: usize = 128 << 20;
const BLOCK: usize = 4096;
const NAME: &str = "disk.raw";

/// What is timed, ours then zsync-rs's, each folded to a word.
type Row<'a> = (
    &'static str,
    Box<dyn Fn() -> u32 + 'a>,
    Box<dyn Fn() -> u32 + 'a>,
);

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut x: u32 = 0x9e37_79b9;
    let data: Vec<u8> = (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let dir = tempfile::tempdir().expect("a scratch directory");
    let out = dir.path().join(format!("{NAME}.zsync"));

    for block in data.chunks(BLOCK) {
        let theirs = zsync_rs::rsum::calc_rsum_block(block);
        assert_eq!(
            sums::rsum(block),
            u32::from(theirs.a) << 16 | u32::from(theirs.b)
        );
    }
    for group in data.chunks(BLOCK * sums::LANES) {
        let blocks: Vec<&[u8]> = group.chunks(BLOCK).collect();
        for (ours, block) in sums::md4(&blocks).iter().zip(&blocks) {
            assert_eq!(*ours, zsync_rs::checksum::calc_md4(block));
        }
    }
    ours(&data, &out);
    assert!(
        std::fs::read(&out).expect("our control file") == theirs(&data),
        "the two control files differ"
    );

    let rows: [Row; 3] = [
        (
            "MD4 of each 4 KiB block",
            Box::new(|| {
                data.chunks(BLOCK * sums::LANES)
                    .map(|group| {
                        let blocks: Vec<&[u8]> = group.chunks(BLOCK).collect();
                        u32::from(sums::md4(&blocks)[0][0])
                    })
                    .fold(0, |a, b| a ^ b)
            }),
            Box::new(|| {
                data.chunks(BLOCK)
                    .map(|b| u32::from(zsync_rs::checksum::calc_md4(b)[0]))
                    .fold(0, |a, b| a ^ b)
            }),
        ),
        (
            "rolling sum of each block",
            Box::new(|| data.chunks(BLOCK).fold(0, |a, b| a ^ sums::rsum(b))),
            Box::new(|| {
                data.chunks(BLOCK).fold(0, |a, b| {
                    let r = zsync_rs::rsum::calc_rsum_block(b);
                    a ^ u32::from(r.a) ^ u32::from(r.b)
                })
            }),
        ),
        (
            "the control file (sums, SHA-1 (ours with the SHA-256), header, written)",
            Box::new(|| {
                ours(&data, &out);
                0
            }),
            Box::new(|| theirs(&data).len() as u32),
        ),
    ];
    println!("| 128 MiB, one core | vmcast-gen MB/s | zsync-rs MB/s | zsync-rs time / ours |");
    println!("|---|---:|---:|---:|");
    for (name, mine, other) in &rows {
        let (a, b) = (median(rounds, mine), median(rounds, other));
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} |",
            LEN as f64 / a / 1e6,
            LEN as f64 / b / 1e6,
            b / a
        );
    }
}

/// The median time of `rounds` runs of `f`, in seconds.
fn median(rounds: usize, f: &dyn Fn() -> u32) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[rounds / 2]
}

/// Our control file of `data`, as the build makes it: fed in the hashing
/// read's 1 MiB chunks, with the SHA-1 taken in the same pass as the
/// SHA-256 (so this does more than zsync-rs: the image's SHA-256 too),
/// written to `out`.
fn ours(data: &[u8], out: &Path) {
    let job = zsync::Job {
        path: out.to_path_buf(),
        filename: NAME.into(),
        url: NAME.into(),
    };
    let mut maker = job.start(data.len() as u64).expect("a control file");
    let mut whole = Whole::new(job.sha1());
    for chunk in data.chunks(1 << 20) {
        whole.update(chunk);
        maker.update(&Chunk::new(chunk)).expect("written");
    }
    let info = ImageInfo {
        format: ImageFormat::Raw,
        detected: false,
        compression: None,
        virtual_size: Some(data.len() as u64),
        subformat: None,
        cluster_size: None,
        cluster_compression: None,
        machine: None,
    };
    let facts = Facts {
        source: Path::new(NAME),
        length: data.len() as u64,
        info: &info,
        sha1: whole.finish().1,
    };
    maker.finish(&facts).expect("finished");
}

/// zsync-rs's control file of `data`, as its `zsyncmake` makes it.
fn theirs(data: &[u8]) -> Vec<u8> {
    let control = ControlFile::generate(&mut Cursor::new(data), NAME, NAME, None)
        .expect("zsync-rs's control file");
    let mut bytes = Vec::new();
    control.write(&mut bytes).expect("written");
    bytes
}
