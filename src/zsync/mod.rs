//! zsync control files: `<image>.zsync` beside each image, in the format
//! zsync 0.6.2's `zsyncmake` writes and its client reads. The file names
//! its image (`Filename`, and a `URL` relative to itself, so that mirrors
//! serve both), says how it is cut into blocks, and gives each block's
//! rolling sum and MD4, cut to the lengths zsyncmake would choose, and the
//! SHA-1 of the whole image. A client holding an older image finds the
//! blocks it already has by their sums and fetches the rest with `Range`.
//!
//! - [`make`] writes one from the read that hashes the image (a
//!   [`crate::hash::Sink`]): no second pass over the image.
//! - [`Control`] reads one back, and [`find`] finds its blocks in a seed,
//!   for `pull`.
//!
//! No `MTime` header is written: the same image gives the same bytes
//! whenever and wherever it is built.

use std::borrow::Cow;

pub mod find;
pub mod make;
pub mod sums;

pub use find::Finder;
pub use make::{Job, Maker};

/// The format version written in the first line, zsyncmake's.
const VERSION: &str = "0.6.2";

/// Block sizes a control file may give: zsyncmake's two, and what other
/// makers use, within reason.
const BLOCK_SIZES: std::ops::RangeInclusive<usize> = 64..=(1 << 20);

/// How an image is cut into blocks, and how much of each block's sums the
/// control file keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The image's length in bytes.
    pub length: u64,
    /// A power of two.
    pub block_size: usize,
    /// How many consecutive blocks must match before a client trusts a
    /// match of the (short) rolling sums: 1 or 2.
    pub seq_matches: u8,
    /// Bytes of each block's rolling sum kept: its last 2 to 4.
    pub rsum_bytes: u8,
    /// Bytes of each block's MD4 kept: its first 3 to 16.
    pub strong_bytes: u8,
}

impl Params {
    /// What zsyncmake 0.6.2 chooses for an image of `length` bytes: blocks
    /// of 2 KiB under 100 MB, 4 KiB from there on, and checksums just long
    /// enough that a false match is unlikely in a file of that size.
    pub fn for_length(length: u64) -> Params {
        let block_size: usize = if length < 100_000_000 { 2048 } else { 4096 };
        let seq_matches: u8 = if length > block_size as u64 { 2 } else { 1 };
        // zsyncmake's formulas, in its arithmetic: C doubles, truncated to
        // int (an empty file's log is minus infinity, which saturates).
        let ln2 = 2f64.ln();
        let len = length as f64;
        let seq = f64::from(seq_matches);
        let blocks_plus_one = (1 + length / block_size as u64) as f64;
        let rsum = ((7.9 + ((len.ln() + (block_size as f64).ln()) / ln2 - 8.6) / seq) / 8.0) as i32;
        let strong = ((7.9 + (20.0 + (len.ln() + blocks_plus_one.ln()) / ln2) / seq) / 8.0) as i32;
        let strong_alone = ((7.9 + (20.0 + blocks_plus_one.ln() / ln2)) / 8.0) as i32;
        Params {
            length,
            block_size,
            seq_matches,
            rsum_bytes: rsum.clamp(2, 4) as u8,
            strong_bytes: strong.max(strong_alone).clamp(3, 16) as u8,
        }
    }

    /// How many blocks the image has; the last may be short.
    pub fn blocks(&self) -> u64 {
        self.length.div_ceil(self.block_size as u64)
    }

    /// Bytes per block in the control file.
    pub fn entry_len(&self) -> usize {
        usize::from(self.rsum_bytes) + usize::from(self.strong_bytes)
    }

    /// The rolling sum as the control file keeps it: its last
    /// `rsum_bytes` bytes, big-endian `a` then `b`.
    fn mask(&self) -> u32 {
        match self.rsum_bytes {
            2 => 0x0000_ffff,
            3 => 0x00ff_ffff,
            _ => 0xffff_ffff,
        }
    }

    /// Where block `i` starts in the image, and how long it is.
    pub fn block(&self, i: u64) -> (u64, usize) {
        let start = i * self.block_size as u64;
        let len = (self.length - start).min(self.block_size as u64) as usize;
        (start, len)
    }

    /// The header, as zsyncmake writes it with `-u <url>` (less `MTime`):
    /// `sha1` is the whole image's SHA-1.
    fn header(&self, filename: &str, url: &str, sha1: &[u8; 20]) -> String {
        let sha1: String = sha1.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "zsync: {VERSION}\nFilename: {filename}\nBlocksize: {}\nLength: {}\n\
             Hash-Lengths: {},{},{}\nURL: {url}\nSHA-1: {sha1}\n\n",
            self.block_size, self.length, self.seq_matches, self.rsum_bytes, self.strong_bytes
        )
    }

    /// One block's entry: the kept bytes of its rolling sum, then of its MD4.
    fn entry(&self, rsum: u32, md4: &sums::Md4, out: &mut Vec<u8>) {
        out.extend_from_slice(&rsum.to_be_bytes()[4 - usize::from(self.rsum_bytes)..]);
        out.extend_from_slice(&md4[..usize::from(self.strong_bytes)]);
    }
}

/// A control file read back: how the image is cut, and each block's sums
/// as far as the file keeps them.
#[derive(Debug, Clone)]
pub struct Control {
    pub params: Params,
    /// Each block's rolling sum, masked to the bytes kept.
    weak: Vec<u32>,
    /// Each block's MD4, the bytes past those kept zero.
    strong: Vec<sums::Md4>,
}

impl Control {
    /// Reads a control file: the header lines up to the empty one, then
    /// exactly one entry per block. A compressed target (`Z-Map2`) and
    /// sums other than MD4 are refused.
    pub fn parse(data: &[u8]) -> Result<Control, String> {
        let end = data
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or("not a zsync control file: no end of header")?;
        let head = std::str::from_utf8(&data[..end])
            .map_err(|_| "not a zsync control file: the header is not UTF-8")?;
        let mut lines = head.split('\n');
        if !lines.next().is_some_and(|l| l.starts_with("zsync: ")) {
            return Err("not a zsync control file: no `zsync:` first line".into());
        }
        let (mut block_size, mut length, mut lengths) = (None, None, (1u8, 4u8, 16u8));
        for line in lines {
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| format!("header line {line:?} is not `Name: value`"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key} {value:?} is not a number"))
            };
            match key {
                "Blocksize" => block_size = Some(number()?),
                "Length" => length = Some(number()?),
                "Hash-Lengths" => {
                    let parts: Vec<u8> = value
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(|_| format!("Hash-Lengths {value:?} is not three numbers"))?;
                    let [seq, rsum, strong] = parts[..] else {
                        return Err(format!("Hash-Lengths {value:?} is not three numbers"));
                    };
                    if !(1..=2).contains(&seq)
                        || !(2..=4).contains(&rsum)
                        || !(3..=16).contains(&strong)
                    {
                        return Err(format!("Hash-Lengths {value:?} is out of range"));
                    }
                    lengths = (seq, rsum, strong);
                }
                "Z-Map2" | "Z-URL" | "Recompress" => {
                    return Err(format!(
                        "{key}: a compressed target, which is not read here"
                    ));
                }
                "Strong-Hash-Algorithm" if value != "MD4" => {
                    return Err(format!("block sums of {value}, not MD4"));
                }
                _ => {}
            }
        }
        let block_size = block_size
            .and_then(|b| usize::try_from(b).ok())
            .filter(|b| b.is_power_of_two() && BLOCK_SIZES.contains(b))
            .ok_or("no Blocksize, or not a power of two from 64 bytes to 1 MiB")?;
        let length = length.ok_or("no Length")?;
        let params = Params {
            length,
            block_size,
            seq_matches: lengths.0,
            rsum_bytes: lengths.1,
            strong_bytes: lengths.2,
        };
        let entries = &data[end + 2..];
        let entry_len = params.entry_len();
        if entries.len() as u64 != params.blocks().saturating_mul(entry_len as u64) {
            return Err(format!(
                "{} bytes of block sums, where {} blocks of {} bytes need {}",
                entries.len(),
                params.blocks(),
                entry_len,
                params.blocks().saturating_mul(entry_len as u64)
            ));
        }
        let rsum_bytes = usize::from(params.rsum_bytes);
        let (weak, strong) = entries
            .chunks_exact(entry_len)
            .map(|e| {
                let mut rsum = [0u8; 4];
                rsum[4 - rsum_bytes..].copy_from_slice(&e[..rsum_bytes]);
                let mut md4 = [0u8; 16];
                md4[..entry_len - rsum_bytes].copy_from_slice(&e[rsum_bytes..]);
                (u32::from_be_bytes(rsum), md4)
            })
            .unzip();
        Ok(Control {
            params,
            weak,
            strong,
        })
    }

    /// The first of the blocks in `data`, blocks `first`, `first + 1`...
    /// of the image as a range download gives them, whose sums are not
    /// the file's; `None` when every one's are.
    pub fn check(&self, first: u64, data: &[u8]) -> Option<u64> {
        let size = self.params.block_size;
        let mask = self.params.mask();
        let blocks: Vec<Cow<[u8]>> = data
            .chunks(size)
            .map(|b| match b.len() == size {
                true => Cow::Borrowed(b),
                false => {
                    let mut padded = b.to_vec();
                    padded.resize(size, 0);
                    Cow::Owned(padded)
                }
            })
            .collect();
        let mut i = first;
        for group in blocks.chunks(sums::LANES) {
            let views: Vec<&[u8]> = group.iter().map(|b| &b[..]).collect();
            for (block, md4) in group.iter().zip(sums::md4(&views)) {
                let fits = usize::try_from(i).is_ok_and(|n| {
                    n < self.weak.len()
                        && sums::rsum(block) & mask == self.weak[n]
                        && self.strong_is(n, &md4)
                });
                if !fits {
                    return Some(i);
                }
                i += 1;
            }
        }
        None
    }

    /// Whether `md4` is block `i`'s, as far as the file keeps it.
    fn strong_is(&self, i: usize, md4: &sums::Md4) -> bool {
        let kept = usize::from(self.params.strong_bytes);
        self.strong[i][..kept] == md4[..kept]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_zsyncmakes() {
        // `zsyncmake` 0.6.2 on sparse files of these lengths.
        let cases: [(u64, usize, (u8, u8, u8)); 13] = [
            (0, 2048, (1, 2, 3)),
            (1, 2048, (1, 2, 3)),
            (2047, 2048, (1, 2, 4)),
            (2048, 2048, (1, 2, 4)),
            (2049, 2048, (2, 2, 3)),
            (4096, 2048, (2, 2, 3)),
            (300_000, 2048, (2, 2, 4)),
            (1_000_000, 2048, (2, 2, 4)),
            (64 << 20, 2048, (2, 2, 5)),
            (99_999_999, 2048, (2, 2, 5)),
            (100_000_000, 4096, (2, 2, 5)),
            (1 << 30, 4096, (2, 3, 5)),
            (10 << 30, 4096, (2, 3, 6)),
        ];
        for (length, block_size, (seq, rsum, strong)) in cases {
            let p = Params::for_length(length);
            assert_eq!(
                (p.block_size, p.seq_matches, p.rsum_bytes, p.strong_bytes),
                (block_size, seq, rsum, strong),
                "length {length}"
            );
        }
    }

    #[test]
    fn a_header_reads_back_and_a_short_or_foreign_file_does_not() {
        let p = Params::for_length(5000);
        let mut file = p.header("a.raw", "a.raw", &[0xab; 20]).into_bytes();
        for _ in 0..p.blocks() {
            p.entry(0x1234_5678, &[7; 16], &mut file);
        }
        let control = Control::parse(&file).unwrap();
        assert_eq!(control.params, p);
        assert_eq!(control.weak, vec![0x5678; 3]);
        assert!(control.strong_is(2, &[7; 16]));
        assert!(!control.strong_is(2, &[8; 16]));
        let err = Control::parse(&file[..file.len() - 1]).unwrap_err();
        assert_eq!(
            err,
            "14 bytes of block sums, where 3 blocks of 5 bytes need 15"
        );
        assert!(Control::parse(b"<html>\n\n").is_err());
        let zmap = String::from_utf8_lossy(&file).replace("URL", "Z-URL");
        assert!(
            Control::parse(zmap.as_bytes())
                .unwrap_err()
                .contains("compressed")
        );
    }
}
