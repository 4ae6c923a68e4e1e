//! Finding an image's blocks in files that may hold them (seeds: an older
//! image, a partial copy), as zsync's client does: the rolling sum tried
//! at every byte offset, a filter and a sorted table ruling out almost
//! every offset at once, and MD4 confirming what is left. With the short
//! sums zsyncmake keeps for a large image (`seq_matches` 2), a match is
//! trusted only when the next block matches too, or when it continues the
//! previous match; a run of matches is confirmed eight blocks at a time.
//! Blocks of zeros are known from the start, and blocks with the same sums
//! are all found where one of them is.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use super::Control;
use super::sums::{self, LANES};

/// How much of a seed is held at once, besides the blocks looked ahead at.
const WINDOW: usize = 4 << 20;

/// The blocks of one control file, and which of them are known.
pub struct Finder<'a> {
    control: &'a Control,
    known: Vec<bool>,
    /// Blocks known from the seeds, in bytes.
    found: u64,
    /// Blocks of zeros, in bytes: nothing to write in a sparse file.
    zeros: u64,
    /// Each block's key (its weak sum, and the next block's when matches
    /// must come in pairs) and number, sorted by key.
    keys: Vec<(u64, u32)>,
    /// A bit per hash of some key: a clear bit rules a key out at once.
    filter: Vec<u64>,
    filter_shift: u32,
    /// The blocks with the same sums, as rings: `same[i]` is the next
    /// block with block `i`'s sums (`i` itself when it is alone).
    same: Vec<u32>,
}

impl<'a> Finder<'a> {
    /// Indexes `control`'s blocks, the blocks of zeros known.
    pub fn new(control: &'a Control) -> Finder<'a> {
        let p = &control.params;
        let n = control.weak.len();
        let mut keys: Vec<(u64, u32)> = (0..n)
            .map(|i| (Self::key_of(control, i), i as u32))
            .collect();
        keys.sort_unstable();
        let bits = (n.max(1) * 16).next_power_of_two();
        let filter_shift = 64 - bits.trailing_zeros();
        let mut filter = vec![0u64; bits.div_ceil(64)];
        for &(key, _) in &keys {
            let h = hash(key, filter_shift);
            filter[h / 64] |= 1 << (h % 64);
        }
        let mut by_sums: Vec<u32> = (0..n as u32).collect();
        by_sums.sort_unstable_by_key(|&i| (control.weak[i as usize], control.strong[i as usize]));
        let mut same: Vec<u32> = (0..n as u32).collect();
        for group in by_sums.chunk_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            control.weak[a] == control.weak[b] && control.strong[a] == control.strong[b]
        }) {
            for (k, &i) in group.iter().enumerate() {
                same[i as usize] = group[(k + 1) % group.len()];
            }
        }
        let mut finder = Finder {
            control,
            known: vec![false; n],
            found: 0,
            zeros: 0,
            keys,
            filter,
            filter_shift,
            same,
        };
        let zero_block = vec![0u8; p.block_size];
        let zero_weak = sums::rsum(&zero_block) & p.mask();
        let zero_md4 = sums::md4(&[&zero_block])[0];
        for i in 0..n {
            if control.weak[i] == zero_weak && control.strong_is(i, &zero_md4) && !finder.known[i] {
                finder.known[i] = true;
                finder.zeros += p.block(i as u64).1 as u64;
            }
        }
        finder
    }

    /// What block `i` is looked up by.
    fn key_of(control: &Control, i: usize) -> u64 {
        let weak = u64::from(control.weak[i]);
        match control.params.seq_matches {
            1 => weak,
            // Past the last block, the sums of zeros: a seed is read as if
            // zeros followed it.
            _ => weak << 32 | u64::from(control.weak.get(i + 1).copied().unwrap_or(0)),
        }
    }

    /// Bytes of the image found in seeds so far.
    pub fn found(&self) -> u64 {
        self.found
    }

    /// Bytes of the image that are blocks of zeros.
    pub fn zeros(&self) -> u64 {
        self.zeros
    }

    /// Whether every block is known.
    pub fn complete(&self) -> bool {
        self.found + self.zeros == self.control.params.length
    }

    /// The parts of the image no seed holds, as byte ranges `[start, end)`
    /// in order, each a run of whole blocks (the last one short).
    pub fn missing(&self) -> Vec<(u64, u64)> {
        let p = &self.control.params;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (i, _) in self.known.iter().enumerate().filter(|(_, k)| !**k) {
            let (start, len) = p.block(i as u64);
            let end = start + len as u64;
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => ranges.push((start, end)),
            }
        }
        ranges
    }

    /// Reads a seed through, and hands `found` every block not known yet
    /// that it holds: the block's number and bytes. Returns the bytes it
    /// found.
    pub fn scan<E>(
        &mut self,
        seed: impl Read,
        mut found: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<u64, ScanError<E>> {
        let before = self.found;
        let mut window = Window::new(seed, self.control.params.block_size);
        let mut chain: Option<usize> = None;
        let mut sums: Option<(u32, u32)> = None;
        while !self.complete() && window.fill().map_err(ScanError::Read)? {
            if let Some(next) = chain.take() {
                let matched = self.run(&window, next, &mut found)?;
                if matched > 0 {
                    window.advance(matched * window.block);
                    sums = None;
                    chain = Some(next + matched).filter(|&j| j < self.known.len());
                    continue;
                }
            }
            let (r0, r1) = *sums.get_or_insert_with(|| window.sums());
            if let Some(matched) = self.look_up(&window, r0, r1, &mut found)? {
                window.advance(matched.1 * window.block);
                sums = None;
                chain = Some(matched.0).filter(|&j| j < self.known.len());
                continue;
            }
            sums = Some(window.roll(r0, r1));
        }
        Ok(self.found - before)
    }

    /// Looks for each block not known yet at its own offset in the seed,
    /// where an image written in place keeps it. The scan misses a block
    /// there when the blocks on both sides of it changed, since it trusts
    /// short sums only in pairs; one block whose sums all match is
    /// trusted here. Hands on what it finds; returns the bytes found.
    pub fn scan_in_place<E>(
        &mut self,
        seed: &File,
        mut found: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<u64, ScanError<E>> {
        let before = self.found;
        let p = self.control.params;
        let size = p.block_size;
        let unknown: Vec<usize> = (0..self.known.len()).filter(|&i| !self.known[i]).collect();
        for group in unknown.chunks(LANES) {
            let mut blocks = Vec::with_capacity(group.len());
            for &i in group {
                let mut block = vec![0u8; size];
                let (start, len) = p.block(i as u64);
                read_at(seed, &mut block[..len], start).map_err(ScanError::Read)?;
                blocks.push(block);
            }
            let views: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
            let md4 = sums::md4(&views);
            for ((&i, block), d) in group.iter().zip(&blocks).zip(&md4) {
                if sums::rsum(block) & p.mask() == self.control.weak[i]
                    && self.control.strong_is(i, d)
                {
                    self.take(i, block, &mut found)?;
                }
            }
        }
        Ok(self.found - before)
    }

    /// Confirms the run of blocks from `next` on at the window's start, up
    /// to eight of them; hands on those not known yet. Returns how many
    /// blocks matched.
    fn run<E>(
        &mut self,
        window: &Window<impl Read>,
        next: usize,
        found: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<usize, ScanError<E>> {
        let mask = self.control.params.mask();
        let count = LANES.min(self.known.len() - next);
        let blocks: Vec<Cow<[u8]>> = (0..count)
            .map(|k| self.as_block(next + k, window.at(k)))
            .enumerate()
            .take_while(|(k, b)| sums::rsum(b) & mask == self.control.weak[next + k])
            .map(|(_, b)| b)
            .collect();
        if blocks.is_empty() {
            return Ok(0);
        }
        let views: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        let md4 = sums::md4(&views);
        let matched = md4
            .iter()
            .take(blocks.len())
            .enumerate()
            .take_while(|(k, d)| self.control.strong_is(next + k, d))
            .count();
        for (k, block) in blocks.iter().take(matched).enumerate() {
            self.take(next + k, block, found)?;
        }
        Ok(matched)
    }

    /// Looks the sums at the window's start up: a block (with the next,
    /// when matches come in pairs) whose sums and MD4 are these. Hands on
    /// what was not known yet; returns the block after the match and how
    /// many blocks it spans.
    fn look_up<E>(
        &mut self,
        window: &Window<impl Read>,
        r0: u32,
        r1: u32,
        found: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<Option<(usize, usize)>, ScanError<E>> {
        let p = self.control.params;
        let mask = p.mask();
        let key = match p.seq_matches {
            1 => u64::from(r0 & mask),
            _ => u64::from(r0 & mask) << 32 | u64::from(r1 & mask),
        };
        let h = hash(key, self.filter_shift);
        if self.filter[h / 64] & (1 << (h % 64)) == 0 {
            return Ok(None);
        }
        let from = self.keys.partition_point(|(k, _)| *k < key);
        let (first, second) = (window.at(0), window.at(1));
        let (size, blocks) = (window.block, self.known.len());
        let mut whole: Option<[sums::Md4; LANES]> = None;
        let mut digest = |j: usize, lane: usize, bytes: &[u8]| match p.block(j as u64).1 {
            len if len == size => whole.get_or_insert_with(|| sums::md4(&[first, second]))[lane],
            _ => self.digest(j, bytes),
        };
        // Many blocks may have this key (zeros after zeros): the first that
        // matches takes the others with its sums along.
        let matched = self.keys[from..]
            .iter()
            .take_while(|(k, _)| *k == key)
            .map(|&(_, i)| i as usize)
            .find(|&i| {
                let pair = p.seq_matches == 2 && i + 1 < blocks;
                self.control.strong_is(i, &digest(i, 0, first))
                    && (!pair || self.control.strong_is(i + 1, &digest(i + 1, 1, second)))
            });
        let Some(i) = matched else {
            return Ok(None);
        };
        self.take(i, first, found)?;
        if p.seq_matches == 2 && i + 1 < blocks {
            self.take(i + 1, second, found)?;
            return Ok(Some((i + 2, 2)));
        }
        Ok(Some((i + 1, 1)))
    }

    /// The MD4 of `bytes` as block `i`.
    fn digest(&self, i: usize, bytes: &[u8]) -> sums::Md4 {
        sums::md4(&[&self.as_block(i, bytes)])[0]
    }

    /// `bytes` (a whole block of the seed) as block `i`: the last block,
    /// when it is short, is its start padded with zeros, as its sums were
    /// taken.
    fn as_block<'b>(&self, i: usize, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        let len = self.control.params.block(i as u64).1;
        if len == bytes.len() {
            return Cow::Borrowed(bytes);
        }
        let mut padded = bytes[..len].to_vec();
        padded.resize(bytes.len(), 0);
        Cow::Owned(padded)
    }

    /// Block `i` is `bytes` (padded): it, and every block with its sums,
    /// is known, and handed on if it was not.
    fn take<E>(
        &mut self,
        i: usize,
        bytes: &[u8],
        found: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), ScanError<E>> {
        // A ring is known whole or not at all.
        if self.known[i] {
            return Ok(());
        }
        let mut j = i;
        loop {
            if !self.known[j] {
                self.known[j] = true;
                let len = self.control.params.block(j as u64).1;
                self.found += len as u64;
                found(j as u64, &bytes[..len]).map_err(ScanError::Found)?;
            }
            j = self.same[j] as usize;
            if j == i {
                return Ok(());
            }
        }
    }
}

/// Fills `buf` from `offset` on, with zeros past the file's end.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Where a key's bit is in the filter.
fn hash(key: u64, shift: u32) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

/// Why a scan stopped.
#[derive(Debug)]
pub enum ScanError<E> {
    /// The seed could not be read.
    Read(io::Error),
    /// The caller's `found` failed.
    Found(E),
}

/// A seed as it is scanned: the bytes from the current offset on, with
/// eight blocks past it in view, zeros after the seed's end.
struct Window<R> {
    seed: R,
    buf: Vec<u8>,
    /// The current offset, in `buf`.
    at: usize,
    /// Where the seed's own bytes end in `buf`, once it has ended.
    end: Option<usize>,
    block: usize,
}

impl<R: Read> Window<R> {
    fn new(seed: R, block: usize) -> Self {
        Window {
            seed,
            buf: Vec::with_capacity(WINDOW + (LANES + 1) * block),
            at: 0,
            end: None,
            block,
        }
    }

    /// Makes eight blocks from the current offset on readable; `false`
    /// once the offset is past the seed's bytes.
    fn fill(&mut self) -> io::Result<bool> {
        let ahead = (LANES + 1) * self.block;
        if self.at + ahead > self.buf.len() && self.end.is_none() {
            self.buf.drain(..self.at);
            self.at = 0;
            let want = WINDOW + ahead;
            let mut have = self.buf.len();
            self.buf.resize(want, 0);
            while have < want {
                match self.seed.read(&mut self.buf[have..]) {
                    Ok(0) => {
                        self.end = Some(have);
                        break;
                    }
                    Ok(n) => have += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.end.is_some() {
                // Past the end, zeros, as many as a look needs.
                self.buf.truncate(have);
                self.buf.resize(have + ahead, 0);
            }
        }
        Ok(self.end.is_none_or(|end| self.at < end))
    }

    fn advance(&mut self, by: usize) {
        self.at += by;
    }

    /// The rolling sums of the block at the offset and of the next one.
    /// The `k`th block from the current offset on.
    fn at(&self, k: usize) -> &[u8] {
        let start = self.at + k * self.block;
        &self.buf[start..start + self.block]
    }

    fn sums(&self) -> (u32, u32) {
        let b = self.block;
        (
            sums::rsum(&self.buf[self.at..self.at + b]),
            sums::rsum(&self.buf[self.at + b..self.at + 2 * b]),
        )
    }

    /// The sums one byte further on, where the offset moves.
    fn roll(&mut self, r0: u32, r1: u32) -> (u32, u32) {
        let (b, x) = (self.block, self.at);
        let shift = b.trailing_zeros();
        let buf = &self.buf;
        let sums = (
            sums::roll(r0, buf[x], buf[x + b], shift),
            sums::roll(r1, buf[x + b], buf[x + 2 * b], shift),
        );
        self.at += 1;
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{self, Job, NoProgress, Open};
    use crate::simd::noise;

    /// The control file of `data`, made as the build makes it.
    fn control_of(data: &[u8]) -> Control {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        std::fs::write(&image, data).unwrap();
        let jobs = [Job {
            source: image,
            open: Open::Named,
            size_hint: 0,
            copy_to: None,
            sink: super::super::Job {
                path: dir.path().join("disk.raw.zsync"),
                filename: "disk.raw".into(),
                url: "disk.raw".into(),
            },
        }];
        hash::hash_all(&jobs, 1, &NoProgress).unwrap();
        Control::parse(&std::fs::read(dir.path().join("disk.raw.zsync")).unwrap()).unwrap()
    }

    /// Scans `seeds` for `new`'s blocks and rebuilds it from them and the
    /// missing ranges; returns the bytes found and the ranges missing.
    fn rebuild(new: &[u8], seeds: &[&[u8]]) -> (u64, Vec<(u64, u64)>) {
        let control = control_of(new);
        let mut finder = Finder::new(&control);
        let mut out = vec![0u8; new.len()];
        for seed in seeds {
            finder
                .scan(*seed, |i, bytes| {
                    let (start, len) = control.params.block(i);
                    assert_eq!(bytes.len(), len);
                    out[start as usize..start as usize + len].copy_from_slice(bytes);
                    Ok::<(), ()>(())
                })
                .unwrap();
        }
        let missing = finder.missing();
        for &(start, end) in &missing {
            let (s, e) = (start as usize, end as usize);
            out[s..e].copy_from_slice(&new[s..e]);
            assert_eq!(
                control.check(start / control.params.block_size as u64, &new[s..e]),
                None
            );
        }
        assert!(out == new, "the rebuilt image differs");
        (finder.found(), missing)
    }

    #[test]
    fn rewritten_blocks_are_all_that_is_missing() {
        let old = noise(300_000, 1);
        let mut new = old.clone();
        new[10_000..10_100].copy_from_slice(&noise(100, 2));
        new[200_000] ^= 1;
        let (found, missing) = rebuild(&new, &[&old]);
        assert_eq!(missing, vec![(8192, 10240), (198_656, 200_704)]);
        assert_eq!(found, 300_000 - 4096);
    }

    #[test]
    fn shifted_and_duplicated_data_is_found() {
        let old = noise(100_000, 3);
        // Inserted bytes shift everything after them; a block repeated.
        let mut new = noise(777, 4);
        new.extend_from_slice(&old[..50_000]);
        new.extend_from_slice(&old[..4096]);
        new.extend_from_slice(&old[50_000..]);
        let (found, missing) = rebuild(&new, &[&old]);
        let missing_bytes: u64 = missing.iter().map(|(s, e)| e - s).sum();
        assert!(missing_bytes <= 4 * 2048, "{missing:?}");
        assert_eq!(found + missing_bytes, new.len() as u64);
    }

    #[test]
    fn zeros_are_known_without_a_seed_and_a_short_last_block_is_found() {
        let mut new = vec![0u8; 20_000];
        new.extend_from_slice(&noise(5_001, 5));
        let control = control_of(&new);
        let finder = Finder::new(&control);
        assert_eq!(finder.zeros(), 18_432);
        let (found, missing) = rebuild(&new, &[&new]);
        assert_eq!((found, missing), (new.len() as u64 - 18_432, vec![]));
        // An unrelated seed, and a second one that holds the rest.
        let (_, missing) = rebuild(&new, &[&noise(50_000, 6), &new[18_432..]]);
        assert_eq!(missing, vec![]);
    }

    #[test]
    fn a_block_between_two_changed_ones_is_found_in_place() {
        let old = noise(20_480, 8);
        let mut new = old.clone();
        // Blocks 1, 2 and 4 change. Block 3, between two changed ones, is
        // missed by the scan, and so is block 0, whose pair (0, 1) broke.
        for at in [2048 + 7, 4096 + 9, 8192 + 11] {
            new[at] ^= 1;
        }
        let control = control_of(&new);
        let mut finder = Finder::new(&control);
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::write(&seed, &old).unwrap();
        let seed = File::open(seed).unwrap();
        let none = |_: u64, _: &[u8]| Ok::<(), ()>(());
        finder.scan(&seed, none).unwrap();
        assert_eq!(finder.missing(), vec![(0, 5 * 2048)]);
        let mut taken = Vec::new();
        let found = finder
            .scan_in_place(&seed, |i, _| {
                taken.push(i);
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!((taken, found), (vec![0, 3], 2 * 2048));
        assert_eq!(
            finder.missing(),
            vec![(2048, 3 * 2048), (4 * 2048, 5 * 2048)]
        );
    }

    #[test]
    fn a_check_names_the_first_block_that_differs() {
        let new = noise(10_000, 7);
        let control = control_of(&new);
        assert_eq!(control.check(0, &new), None);
        assert_eq!(control.check(2, &new[4096..]), None);
        let mut bad = new.clone();
        bad[9_999] ^= 1;
        assert_eq!(control.check(0, &bad), Some(4));
        assert_eq!(control.check(1, &new[4096..]), Some(1));
    }
}
