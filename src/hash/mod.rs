//! Streaming SHA-256 of every image: one read per file gives its length,
//! its digest and what its bytes say it is (`inspect`), in constant memory,
//! with the files spread over all cores, largest first. When an image is
//! copied into the output, the copy is written from the same read, and
//! whatever else is made of the bytes (another digest, a file such as a
//! Vagrant box) is made by a [`Sink`] fed from that read too: hash knows the
//! sinks only by that trait. Results come back in job order whatever the
//! scheduling.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::cache::FileState;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::inspect::Inspector;
use crate::model::{FileDigest, ImageInfo, Sha256, Sha512};
use crate::par;

mod whole;
pub use whole::Whole;

/// Bytes read per call; large enough to keep syscalls rare, small enough to
/// keep memory flat.
const CHUNK: usize = 1 << 20;

/// Something made of an image's bytes in the read that hashes it: a digest
/// besides the SHA-256, or a file written as the bytes go by. It is fed
/// every byte once, in order, in chunks that end anywhere (a sink that
/// works on blocks keeps the rest of a block for the next chunk), and hands
/// what it made back to the caller once the image has ended.
pub trait Sink {
    /// What it makes of the image.
    type Output: Send;

    /// The next bytes of the image.
    fn update(&mut self, chunk: &Chunk<'_>) -> Result<()>;

    /// The image has ended: all of it was fed, and it is what `image` says.
    fn finish(self, image: &Facts<'_>) -> Result<Self::Output>;
}

/// What a [`Job`] asks of its read besides the SHA-256: it starts the
/// [`Sink`] once the file is open and its length known, in the thread that
/// reads it (so a sink that writes a file creates it only for a job that
/// runs, and holds it open only while it does).
pub trait Start: Sync {
    type Sink: Sink;

    /// Starts the sink of an image of `length` bytes.
    fn start(&self, length: u64) -> Result<Self::Sink>;

    /// Whether the sink needs the SHA-1 of the whole image ([`Facts::sha1`]),
    /// which the read takes beside the SHA-256, in one pass over both.
    fn sha1(&self) -> bool {
        false
    }
}

/// What the sink of a job started by `S` makes.
pub type Made<S> = <<S as Start>::Sink as Sink>::Output;

/// Bytes of an image as they are read, with what is costly to find out
/// about them found out once, for every sink that asks.
pub struct Chunk<'a> {
    bytes: &'a [u8],
    zeros: Cell<Option<bool>>,
}

impl<'a> Chunk<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Chunk {
            bytes,
            zeros: Cell::new(None),
        }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether every byte is zero: such a chunk becomes a hole in a file
    /// written from the read, so a sparse image stays sparse.
    pub fn is_zeros(&self) -> bool {
        if let Some(zeros) = self.zeros.get() {
            return zeros;
        }
        const ZERO: [u8; 4096] = [0; 4096];
        let zeros = self.bytes.chunks(ZERO.len()).all(|c| c == &ZERO[..c.len()]);
        self.zeros.set(Some(zeros));
        zeros
    }
}

/// The image a sink was fed, once it has ended.
pub struct Facts<'a> {
    /// The file as named, for messages.
    pub source: &'a Path,
    pub length: u64,
    /// What its bytes say it is.
    pub info: &'a ImageInfo,
    /// Its SHA-1, if the job's [`Start::sha1`] asked for it.
    pub sha1: Option<[u8; 20]>,
}

/// Nothing besides the SHA-256.
impl Start for () {
    type Sink = ();

    fn start(&self, _: u64) -> Result<()> {
        Ok(())
    }
}

impl Sink for () {
    type Output = ();

    fn update(&mut self, _: &Chunk<'_>) -> Result<()> {
        Ok(())
    }

    fn finish(self, _: &Facts<'_>) -> Result<()> {
        Ok(())
    }
}

/// A sink for some images only.
impl<S: Start> Start for Option<S> {
    type Sink = Option<S::Sink>;

    fn start(&self, length: u64) -> Result<Self::Sink> {
        self.as_ref().map(|s| s.start(length)).transpose()
    }

    fn sha1(&self) -> bool {
        self.as_ref().is_some_and(S::sha1)
    }
}

impl<S: Sink> Sink for Option<S> {
    type Output = Option<S::Output>;

    fn update(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        match self {
            Some(sink) => sink.update(chunk),
            None => Ok(()),
        }
    }

    fn finish(self, image: &Facts<'_>) -> Result<Self::Output> {
        self.map(|sink| sink.finish(image)).transpose()
    }
}

/// The SHA-512 too, from the same read: what virt-builder checks a
/// template with, and what `vmcast-gen hash --sha512` records.
#[derive(Debug, Clone, Copy)]
pub struct Sha512Sum;

impl Start for Sha512Sum {
    type Sink = sha2::Sha512;

    fn start(&self, _: u64) -> Result<sha2::Sha512> {
        Ok(sha2::Sha512::new())
    }
}

impl Sink for sha2::Sha512 {
    type Output = Sha512;

    fn update(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        Digest::update(self, chunk.bytes());
        Ok(())
    }

    fn finish(self, _: &Facts<'_>) -> Result<Sha512> {
        Ok(Sha512(self.finalize().into()))
    }
}

/// One file to hash.
#[derive(Debug, Clone)]
pub struct Job<S> {
    /// The file as named, for messages.
    pub source: PathBuf,
    /// How it is opened.
    pub open: Open,
    /// Bytes expected, for scheduling and progress only.
    pub size_hint: u64,
    /// Where to write a copy of the bytes as they are read.
    pub copy_to: Option<PathBuf>,
    /// What else to make of the bytes as they are read.
    pub sink: S,
}

/// How a job's file is opened.
#[derive(Debug, Clone)]
pub enum Open {
    /// An image the scan vetted: by its resolved path, never through a
    /// symbolic link, and only if it is still the file (and the state)
    /// seen when the cache was consulted.
    Vetted { real: PathBuf, state: FileState },
    /// A file named on the command line (`vmcast-gen hash`).
    Named,
}

/// Receives hashing progress. The library draws nothing itself.
pub trait Progress: Sync {
    fn begin(&self, _files: usize, _bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn file_done(&self) {}
    fn end(&self) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {}

/// A file's length and digest, its state when it was read, what its bytes
/// say it is, and what its job's sink made of them.
#[derive(Debug, Clone)]
pub struct Hashed<M> {
    pub length: u64,
    pub sha256: Sha256,
    pub state: FileState,
    pub info: ImageInfo,
    pub made: M,
}

/// Hashes every job on up to `threads` threads, each with its own buffer,
/// largest first; returns digests in job order. Once a file fails, the
/// others stop, and the error is that of the earliest job that failed.
pub fn hash_all<S: Start>(
    jobs: &[Job<S>],
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<Hashed<Made<S>>>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    progress.begin(jobs.len(), jobs.iter().map(|j| j.size_hint).sum());
    let order = par::Order::largest_first(jobs, |job| job.size_hint);
    let hashed = par::try_map(
        threads,
        jobs,
        &order,
        || vec![0u8; CHUNK],
        |buf, job, stop| {
            let hashed = hash_one(job, buf, progress, stop);
            if !matches!(hashed, Ok(None)) {
                progress.file_done();
            }
            hashed
        },
    );
    progress.end();
    hashed
}

/// Hashes one file, copying it and feeding its sink if asked, and checks
/// that it did not change while it was read. Returns `None` when `stop` is
/// raised midway.
fn hash_one<S: Start>(
    job: &Job<S>,
    buf: &mut [u8],
    progress: &dyn Progress,
    stop: &par::Stop,
) -> Result<Option<Hashed<Made<S>>>> {
    let path = &job.source;
    let (mut file, before) = match &job.open {
        Open::Vetted { real, state } => {
            let (file, meta) = fsutil::open_vetted(real, path, state.id())?;
            if !FileState::of(&meta).same_content(state) {
                return Err(Error::file(
                    path,
                    "changed since the scan (size or mtime); is another job still writing it?",
                ));
            }
            (file, meta)
        }
        Open::Named => fsutil::open_regular(path, true)?,
    };
    // Only a hint: the kernel may read ahead further.
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    let mut copy = match &job.copy_to {
        Some(dst) => Some((fsutil::create_published(dst)?, dst)),
        None => None,
    };
    let mut sink = job.sink.start(before.len())?;

    let mut whole = Whole::new(job.sink.sha1());
    let mut inspector = Inspector::new();
    let mut length: u64 = 0;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        let chunk = Chunk::new(&buf[..n]);
        whole.update(chunk.bytes());
        inspector.update(chunk.bytes());
        sink.update(&chunk)?;
        if let Some((out, dst)) = &mut copy {
            let written = if chunk.is_zeros() {
                out.seek(SeekFrom::Current(n as i64)).map(|_| ())
            } else {
                out.write_all(chunk.bytes())
            };
            written.map_err(|e| Error::io("cannot write", dst.as_path(), e))?;
        }
        length += n as u64;
        progress.advance(n as u64);
        if stop.raised() {
            return Ok(None);
        }
    }
    if let Some((out, dst)) = &copy {
        out.set_len(length)
            .map_err(|e| Error::io("cannot write", dst.as_path(), e))?;
    }
    check_unchanged(path, &file, &before, length)?;
    let info = inspector.finish(length).map_err(|m| Error::file(path, m))?;
    let (sha256, sha1) = whole.finish();
    let made = sink.finish(&Facts {
        source: path,
        length,
        info: &info,
        sha1,
    })?;
    Ok(Some(Hashed {
        length,
        sha256,
        state: FileState::of(&before),
        info,
        made,
    }))
}

/// A file that grew, shrank or was rewritten during the read has a digest
/// that matches no state of the file: refuse it.
fn check_unchanged(path: &Path, file: &File, before: &std::fs::Metadata, read: u64) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let after = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    let same = read == before.len()
        && after.len() == before.len()
        && after.mtime() == before.mtime()
        && after.mtime_nsec() == before.mtime_nsec();
    if same {
        return Ok(());
    }
    Err(Error::file(
        path,
        format_args!(
            "changed while it was being hashed (size {} bytes at open, {read} bytes read, {} bytes now); \
             is another job still writing it?",
            before.len(),
            after.len()
        ),
    ))
}

/// What the hash stage did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub hashed_files: usize,
    pub hashed_bytes: u64,
    pub cached_files: usize,
    pub cached_bytes: u64,
    pub sidecar_files: usize,
    pub sidecar_bytes: u64,
    pub hash_time: std::time::Duration,
}

/// `vmcast-gen hash`: hashes files where they were made and writes a
/// sidecar beside each (`<file>.vmcast-hash`) that `build` can trust when
/// the config allows it; with `sha512`, the SHA-512 the virt-builder index
/// needs too, from the same read. Returns each sidecar's path and digest.
pub fn write_sidecars(
    files: &[PathBuf],
    sha512: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<(PathBuf, FileDigest)>> {
    let jobs = files
        .iter()
        .map(|f| {
            Ok(Job {
                source: f.clone(),
                size_hint: fsutil::metadata(f)?.len(),
                open: Open::Named,
                copy_to: None,
                sink: sha512.then_some(Sha512Sum),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let hashed = hash_all(&jobs, threads, progress)?;
    files
        .iter()
        .zip(hashed)
        .map(|(file, h)| {
            let digest = FileDigest {
                length: h.length,
                sha256: h.sha256,
                sha512: h.made,
            };
            let path = crate::cache::Sidecar::new(file, &h.state, &digest).write(file)?;
            Ok((path, digest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_come_back_in_job_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut jobs = Vec::new();
        for (i, size) in [10usize, 3_000_000, 0, 1_048_576].iter().enumerate() {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, vec![i as u8; *size]).unwrap();
            jobs.push(Job {
                source: path,
                size_hint: *size as u64,
                open: Open::Named,
                copy_to: None,
                sink: (i == 1).then_some(Sha512Sum),
            });
        }
        let digests = hash_all(&jobs, 3, &NoProgress).unwrap();
        for (i, job) in jobs.iter().enumerate() {
            let data = std::fs::read(&job.source).unwrap();
            assert_eq!(digests[i].length, data.len() as u64);
            assert_eq!(digests[i].sha256, Sha256::of(&data));
            assert_eq!(digests[i].made, (i == 1).then(|| Sha512::of(&data)));
        }
        // The well-known digest of the empty string.
        assert_eq!(
            digests[2].sha256.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn copies_are_written_from_the_same_read() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::write(&src, b"appliance bytes").unwrap();
        let jobs = [Job {
            open: Open::Named,
            source: src,
            size_hint: 15,
            copy_to: Some(dst.clone()),
            sink: (),
        }];
        let d = hash_all(&jobs, 1, &NoProgress).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"appliance bytes");
        assert_eq!(d[0].sha256, Sha256::of(b"appliance bytes"));
    }

    /// Keeps what it is fed, and the length it is started and finished with.
    struct Recorder;

    struct Recording {
        started: u64,
        bytes: Vec<u8>,
        chunks: usize,
    }

    impl Start for Recorder {
        type Sink = Recording;

        fn start(&self, length: u64) -> Result<Recording> {
            Ok(Recording {
                started: length,
                bytes: Vec::new(),
                chunks: 0,
            })
        }
    }

    impl Sink for Recording {
        type Output = (u64, Vec<u8>, usize, u64);

        fn update(&mut self, chunk: &Chunk<'_>) -> Result<()> {
            self.bytes.extend_from_slice(chunk.bytes());
            self.chunks += 1;
            Ok(())
        }

        fn finish(self, image: &Facts<'_>) -> Result<Self::Output> {
            Ok((self.started, self.bytes, self.chunks, image.length))
        }
    }

    #[test]
    fn a_sink_is_fed_every_byte_in_order_and_told_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk");
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let jobs = [Job {
            open: Open::Named,
            source: src,
            size_hint: 0,
            copy_to: None,
            sink: Recorder,
        }];
        let d = hash_all(&jobs, 1, &NoProgress).unwrap();
        let (started, bytes, chunks, finished) = &d[0].made;
        assert_eq!(*started, data.len() as u64);
        assert_eq!(*finished, data.len() as u64);
        assert!(*chunks >= 4, "{chunks} chunks");
        assert!(bytes == &data);
    }

    #[test]
    fn a_chunk_of_zeros_is_told_from_one_with_a_byte_set() {
        let mut bytes = vec![0u8; 10_000];
        assert!(Chunk::new(&bytes).is_zeros());
        assert!(Chunk::new(&[]).is_zeros());
        bytes[9_999] = 1;
        let chunk = Chunk::new(&bytes);
        assert!(!chunk.is_zeros());
        // Asked again, from what it found the first time.
        assert!(!chunk.is_zeros());
    }
}
