//! Streaming SHA-256 of every image: one read per file gives both length and
//! digest (and the SHA-512 too, for the images that need one), in constant memory, with the files spread over all cores, largest
//! first. When an image is copied into the output, the copy is written from
//! the same read. Results come back in job order whatever the scheduling.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;

use crate::cache::FileState;
use crate::catalog::vagrant::BoxWriter;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::inspect::Inspector;
use crate::model::{Combined, FileDigest, ImageInfo, Sha256, Sha512};
use crate::par;

/// Bytes read per call; large enough to keep syscalls rare, small enough to
/// keep memory flat.
const CHUNK: usize = 1 << 20;

/// One file to hash.
#[derive(Debug, Clone)]
pub struct Job {
    /// The file as named, for messages.
    pub source: PathBuf,
    /// How it is opened.
    pub open: Open,
    /// Bytes expected, for scheduling and progress only.
    pub size_hint: u64,
    /// Where to write a copy of the bytes as they are read.
    pub copy_to: Option<PathBuf>,
    /// Also compute the SHA-512, from the same read.
    pub sha512: bool,
    /// Bytes to digest ahead of the file's, in a second digest taken in
    /// the same read (LXD's fingerprint: metadata tarball, then disk).
    pub prefix: Option<Arc<[u8]>>,
    /// A Vagrant box to write from the same read.
    pub vagrant_box: Option<BoxJob>,
}

/// A Vagrant box made of an image: where it goes, and its members' mtime.
#[derive(Debug, Clone)]
pub struct BoxJob {
    pub path: PathBuf,
    pub mtime: u64,
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

/// A file's digest, its state when it was read, and what its bytes say it is.
#[derive(Debug, Clone)]
pub struct Hashed {
    pub digest: FileDigest,
    pub state: FileState,
    pub info: ImageInfo,
    /// The Vagrant box written from the read, if the job asked for one.
    pub vagrant_box: Option<FileDigest>,
    /// With a [`Job::prefix`]: the digest of the prefix and the file.
    pub combined: Option<Combined>,
}

/// Hashes every job on up to `threads` threads, each with its own buffer,
/// largest first; returns digests in job order. Once a file fails, the
/// others stop, and the error is that of the earliest job that failed.
pub fn hash_all(jobs: &[Job], threads: usize, progress: &dyn Progress) -> Result<Vec<Hashed>> {
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

/// Hashes one file, copying it if asked, and checks that it did not change
/// while it was read. Returns `None` when `stop` is raised midway.
fn hash_one(
    job: &Job,
    buf: &mut [u8],
    progress: &dyn Progress,
    stop: &par::Stop,
) -> Result<Option<Hashed>> {
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
    let mut vagrant_box = match &job.vagrant_box {
        Some(b) => Some(BoxWriter::create(&b.path, before.len(), b.mtime)?),
        None => None,
    };
    let zero = [0u8; 4096];

    let mut hasher = sha2::Sha256::new();
    let mut sha512 = job.sha512.then(sha2::Sha512::new);
    let mut combined = job.prefix.as_ref().map(|prefix| {
        let mut h = sha2::Sha256::new();
        h.update(prefix);
        (Sha256::of(prefix), h)
    });
    let mut inspector = Inspector::new();
    let mut length: u64 = 0;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        hasher.update(&buf[..n]);
        if let Some(h) = &mut sha512 {
            h.update(&buf[..n]);
        }
        if let Some((_, h)) = &mut combined {
            h.update(&buf[..n]);
        }
        inspector.update(&buf[..n]);
        // A block of zeros becomes a hole: a sparse image stays sparse.
        let zeros = (copy.is_some() || vagrant_box.is_some())
            && buf[..n].chunks(zero.len()).all(|c| c == &zero[..c.len()]);
        if let Some(b) = &mut vagrant_box {
            b.update(&buf[..n], zeros)?;
        }
        if let Some((out, dst)) = &mut copy {
            let written = if zeros {
                out.seek(SeekFrom::Current(n as i64)).map(|_| ())
            } else {
                out.write_all(&buf[..n])
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
    let vagrant_box = match vagrant_box {
        Some(b) => {
            let size = info.virtual_size.ok_or_else(|| {
                Error::file(path, "records no virtual size, which a Vagrant box needs")
            })?;
            Some(b.finish(size)?)
        }
        None => None,
    };
    Ok(Some(Hashed {
        digest: FileDigest {
            length,
            sha256: Sha256(hasher.finalize().into()),
            sha512: sha512.map(|h| Sha512(h.finalize().into())),
        },
        state: FileState::of(&before),
        info,
        vagrant_box,
        combined: combined.map(|(prefix, h)| Combined {
            prefix,
            sha256: Sha256(h.finalize().into()),
        }),
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
                vagrant_box: None,
                sha512,
                prefix: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let hashed = hash_all(&jobs, threads, progress)?;
    files
        .iter()
        .zip(hashed)
        .map(|(file, h)| {
            let path = crate::cache::Sidecar::new(file, &h.state, &h.digest).write(file)?;
            Ok((path, h.digest))
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
                vagrant_box: None,
                sha512: i == 1,
                prefix: None,
            });
        }
        let digests = hash_all(&jobs, 3, &NoProgress).unwrap();
        for (i, job) in jobs.iter().enumerate() {
            let data = std::fs::read(&job.source).unwrap();
            assert_eq!(digests[i].digest.length, data.len() as u64);
            assert_eq!(digests[i].digest.sha256, Sha256::of(&data));
            assert_eq!(
                digests[i].digest.sha512,
                (i == 1).then(|| Sha512::of(&data))
            );
        }
        // The well-known digest of the empty string.
        assert_eq!(
            digests[2].digest.sha256.to_hex(),
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
            vagrant_box: None,
            sha512: false,
            prefix: None,
        }];
        let d = hash_all(&jobs, 1, &NoProgress).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"appliance bytes");
        assert_eq!(d[0].digest.sha256, Sha256::of(b"appliance bytes"));
    }

    #[test]
    fn a_prefix_gives_a_second_digest_from_the_same_read() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk");
        std::fs::write(&src, vec![7u8; 3 * CHUNK + 5]).unwrap();
        let jobs = [Job {
            open: Open::Named,
            source: src.clone(),
            size_hint: 0,
            copy_to: None,
            vagrant_box: None,
            sha512: false,
            prefix: Some(Arc::from(&b"metadata"[..])),
        }];
        let d = hash_all(&jobs, 1, &NoProgress).unwrap();
        let mut whole = b"metadata".to_vec();
        whole.extend(std::fs::read(&src).unwrap());
        assert_eq!(
            d[0].combined,
            Some(Combined {
                prefix: Sha256::of(b"metadata"),
                sha256: Sha256::of(&whole),
            })
        );
    }
}
