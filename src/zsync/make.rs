//! Writing an image's control file from the read that hashes it: a
//! [`hash::Sink`]. Each block's sums are written as its bytes go by, after
//! room left for the header, which needs the SHA-1 of the whole image and
//! is written last; the file is then read back once for its own digest
//! (it is a few thousandths of the image). A block of zeros (a hole in a
//! sparse image) takes the sums known for zeros without being hashed.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Params;
use super::sums::{self, LANES};
use crate::error::{Error, Result};
use crate::hash::{self, Chunk, Facts, Sink};
use crate::model::FileDigest;

/// A control file to make of an image in the read that hashes it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Where it is written.
    pub path: PathBuf,
    /// The image's file name (`Filename`).
    pub filename: String,
    /// Where the image is, relative to the control file (`URL`): its name,
    /// percent-encoded as in its URL.
    pub url: String,
}

impl hash::Start for Job {
    type Sink = Maker;

    fn start(&self, length: u64) -> Result<Maker> {
        Maker::create(self, length)
    }

    /// The header carries the image's SHA-1.
    fn sha1(&self) -> bool {
        true
    }
}

/// A control file being written.
pub struct Maker {
    out: BufWriter<File>,
    path: PathBuf,
    params: Params,
    /// The header, with the SHA-1 not yet known: its length is fixed.
    header: (String, String),
    /// The start of a block that the last chunk cut.
    partial: Vec<u8>,
    /// The entry of a block of zeros.
    zeros: Vec<u8>,
    entries: Vec<u8>,
}

impl Maker {
    fn create(job: &Job, length: u64) -> Result<Maker> {
        let params = Params::for_length(length);
        // What an older site left there in the reused spare goes.
        crate::place::holds(&job.path, None)?;
        let mut out =
            BufWriter::with_capacity(1 << 16, crate::fsutil::create_published(&job.path)?);
        let header_len = params.header(&job.filename, &job.url, &[0; 20]).len();
        out.seek(SeekFrom::Start(header_len as u64))
            .map_err(|e| Error::io("cannot write", &job.path, e))?;
        let zero_block = vec![0u8; params.block_size];
        let mut zeros = Vec::new();
        params.entry(
            sums::rsum(&zero_block),
            &sums::md4(&[&zero_block])[0],
            &mut zeros,
        );
        Ok(Maker {
            out,
            path: job.path.clone(),
            params,
            header: (job.filename.clone(), job.url.clone()),
            partial: Vec::with_capacity(params.block_size),
            zeros,
            entries: Vec::new(),
        })
    }

    /// Writes the entries of whole blocks: those of zeros at once, the
    /// others hashed sixteen at a time.
    fn blocks(&mut self, data: &[u8], zeros: bool) -> Result<()> {
        let size = self.params.block_size;
        let entry_len = self.params.entry_len();
        self.entries.clear();
        let mut pending: Vec<(usize, &[u8])> = Vec::with_capacity(LANES);
        for (n, block) in data.chunks_exact(size).enumerate() {
            self.entries.extend_from_slice(&self.zeros);
            if zeros || is_zeros(block) {
                continue;
            }
            pending.push((n, block));
            if pending.len() == LANES {
                self.hash_into(&pending, entry_len);
                pending.clear();
            }
        }
        if !pending.is_empty() {
            self.hash_into(&pending, entry_len);
        }
        self.out
            .write_all(&self.entries)
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }

    /// Puts the entries of `blocks` (their numbers among `entries`) in place.
    fn hash_into(&mut self, blocks: &[(usize, &[u8])], entry_len: usize) {
        let data: Vec<&[u8]> = blocks.iter().map(|(_, b)| *b).collect();
        let (md4, rsum) = sums::md4_rsum(&data);
        let mut entry = Vec::with_capacity(entry_len);
        for (((n, _), md4), rsum) in blocks.iter().zip(&md4).zip(rsum) {
            entry.clear();
            self.params.entry(rsum, md4, &mut entry);
            self.entries[n * entry_len..(n + 1) * entry_len].copy_from_slice(&entry);
        }
    }
}

/// Whether a block is all zeros (a comparison the compiler makes wide).
fn is_zeros(block: &[u8]) -> bool {
    const ZERO: [u8; 4096] = [0; 4096];
    block.chunks(ZERO.len()).all(|c| c == &ZERO[..c.len()])
}

impl Sink for Maker {
    /// The control file's length and digest.
    type Output = FileDigest;

    fn update(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        let mut bytes = chunk.bytes();
        let size = self.params.block_size;
        if !self.partial.is_empty() {
            let take = (size - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < size {
                return Ok(());
            }
            let block = std::mem::take(&mut self.partial);
            self.blocks(&block, false)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = bytes.len() / size * size;
        self.blocks(&bytes[..whole], chunk.is_zeros())?;
        self.partial.extend_from_slice(&bytes[whole..]);
        Ok(())
    }

    /// Writes the last block (padded with zeros, as zsync sums it) and the
    /// header, and takes the file's digest.
    fn finish(mut self, image: &Facts<'_>) -> Result<FileDigest> {
        if image.length != self.params.length {
            return Err(Error::file(
                image.source,
                "changed length while it was being read",
            ));
        }
        if !self.partial.is_empty() {
            let mut last = std::mem::take(&mut self.partial);
            last.resize(self.params.block_size, 0);
            self.blocks(&last, false)?;
        }
        let sha1 = image
            .sha1
            .expect("the read takes the SHA-1 that Job::sha1 asks for");
        let header = self.params.header(&self.header.0, &self.header.1, &sha1);
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("cannot write", &path, e.into_error()))?;
        file.write_all_at(header.as_bytes(), 0)
            .map_err(|e| Error::io("cannot write", &path, e))?;
        digest_of(&path)
    }
}

/// The length and SHA-256 of the file just written, read back (the
/// header, which comes first, was written last).
fn digest_of(path: &Path) -> Result<FileDigest> {
    let (file, meta) = crate::fsutil::open_regular(path, false)?;
    let (length, sha256) = crate::fsutil::sha256_bounded(&file, meta.len())
        .map_err(|(_, e)| Error::io("cannot read", path, e))?;
    Ok(FileDigest {
        length,
        sha256,
        sha512: None,
    })
}
