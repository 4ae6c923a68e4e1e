//! Builds the site in a temporary directory beside the output and swaps it
//! in at the end, so a failed or killed build leaves the previous output
//! exactly as it was. One build of an output at a time: each holds the
//! output's lock from start to end, and sweeps away what killed builds
//! left behind.
//!
//! The output is double-buffered: the site a swap retires is kept beside
//! the output as `.<name>.spare`, and the next build stages in it, changing
//! only what differs. Removing a tree of a thousand release directories
//! and making it again would cost a rebuild more than all the rest.

use rustc_hash::{FxHashMap, FxHashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::listing::{Kind, Lister, Listings};
use crate::model::{FileDigest, FileId, FileState};
use crate::warning::Warning;

/// Marks an output directory as one this tool made and may replace.
pub const MARKER: &str = ".vmcast-gen";

/// A half-built site. Dropping it without [`Staging::commit`] deletes it,
/// or, when it is the spare reused, puts it back as the spare: a build
/// that fails loses the next one nothing (its images, linked or copied
/// already, would otherwise be linked or copied again). It borrows the
/// output's lock: no other build of the output runs while it exists.
pub struct Staging<'a> {
    /// `None` once committed.
    dir: Option<PathBuf>,
    lock: &'a OutputLock,
    /// What the spare brought (site-relative paths, parents first), when
    /// this staging directory is the spare reused: what the new site does
    /// not write again is removed before the swap.
    spare: Vec<String>,
    /// The directories among them: a file placed in one needs no
    /// `mkdir -p`, nor the stat that finds its directory there.
    spare_dirs: FxHashSet<String>,
    /// The regular files among them, by identity, when their directories'
    /// listings tell it ([`Staging::holds`]): `None` when they cannot.
    spare_files: Option<FxHashMap<String, FileId>>,
    /// Every site-relative path written or prepared for an image
    /// (hashed: prepared on every core, two for each image, under the
    /// lock).
    produced: Mutex<FxHashSet<String>>,
    /// The paths kept unread ([`Staging::held_known`]).
    known: Mutex<FxHashSet<String>>,
}

/// The spare as a build found it: checked and listed in place, while the
/// releases are scanned, and taken by [`Staging::new`] once the keys are
/// unlocked. A build stopped in between (at a password prompt) leaves it
/// where it was.
pub struct Spare {
    entries: Vec<SpareEntry>,
    /// Whether the listings gave each file's identity ([`Lister::inodes`]).
    inodes: bool,
}

impl Spare {
    /// Checks and lists the spare of the output `lock` holds, if there is
    /// one. The spare is untrusted: one that is not a directory with the
    /// marker, or that holds anything but directories and regular files
    /// (which no build leaves), is removed, with the warning returned. An
    /// image in it is kept only where it is the very file the new site
    /// places there; a file the new site writes is written over. Its
    /// directories' listings are remembered in `listings`, if given
    /// ([`crate::listing`]).
    pub fn survey(
        lock: &OutputLock,
        listings: Option<&Path>,
    ) -> Result<(Option<Spare>, Option<Warning>)> {
        let spare = spare_path(&lock.target);
        let discarded = |path: &Path, why: String| {
            Warning::file(
                path,
                format_args!(
                    "{why}; the spare site is not what a build leaves, so it was removed and \
                     this build starts from an empty directory"
                ),
            )
        };
        let meta = match fs::symlink_metadata(&spare) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, None)),
            Err(e) => return Err(Error::io("cannot stat", &spare, e)),
        };
        if !meta.is_dir() {
            fsutil::remove_any(&spare)?;
            let why = format!("is {}", fsutil::file_kind(&meta));
            return Ok((None, Some(discarded(&spare, why))));
        }
        if !fs::symlink_metadata(spare.join(MARKER)).is_ok_and(|m| m.is_file()) {
            fsutil::remove_any(&spare)?;
            let why = format!("has no {MARKER} file");
            return Ok((None, Some(discarded(&spare, why))));
        }
        let mut entries = Vec::new();
        let memo = Listings::read(listings, &spare);
        let mut lister = Lister::new(&memo, &meta);
        match list_spare(&mut lister, &spare, "", &meta, &mut entries)? {
            None => {
                let inodes = lister.inodes();
                lister.save();
                Ok((Some(Spare { entries, inodes }), None))
            }
            Some((rel, kind)) => {
                fsutil::remove_any(&spare)?;
                let why = format!("is {kind}");
                Ok((None, Some(discarded(&spare.join(rel), why))))
            }
        }
    }
}

impl<'a> Staging<'a> {
    /// A staging directory for the output `lock` holds: the spare
    /// [`Spare::survey`] found, moved aside under the staging name, when
    /// there is one; else a new, empty one.
    pub fn new(lock: &'a OutputLock, spare: Option<Spare>) -> Result<Self> {
        let target = lock.target.as_path();
        check_replaceable(target)?;
        // The lock made the parent.
        let parent = parent_of(target);
        let dir = tempfile::Builder::new()
            .prefix(&staging_prefix(target))
            .tempdir_in(parent)
            .map_err(|e| Error::io("cannot create a temporary directory in", parent, e))?;
        let dir = dir.keep();
        let mut staging = Staging {
            dir: Some(dir),
            lock,
            spare: Vec::new(),
            spare_dirs: FxHashSet::default(),
            // An empty directory holds nothing.
            spare_files: Some(FxHashMap::default()),
            produced: Mutex::new(FxHashSet::default()),
            known: Mutex::new(FxHashSet::default()),
        };
        if let Some(spare) = spare {
            // Onto the empty directory: one rename, under the staging name
            // that the sweep removes should this build be killed.
            let from = spare_path(target);
            fs::rename(&from, staging.path())
                .map_err(|e| Error::io("cannot reuse the spare site", &from, e))?;
            let mut files = spare.inodes.then(FxHashMap::default);
            for (entry, found) in spare.entries {
                match found {
                    Found::Dir => {
                        staging.spare_dirs.insert(entry.clone());
                    }
                    Found::File(id) => {
                        if let Some(files) = files.as_mut() {
                            files.insert(entry.clone(), id);
                        }
                    }
                }
                staging.spare.push(entry);
            }
            staging.spare_files = files;
        }
        fsutil::set_mode(staging.path(), fsutil::PUBLISHED_DIR_MODE)?;
        staging.write(
            MARKER,
            b"This directory is replaced by every `vmcast-gen build`.\n",
        )?;
        Ok(staging)
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_deref()
            .expect("a staging directory until committed")
    }

    /// What the staging directory held at `rel` (site-relative) before
    /// this build wrote there, as the spare's listings tell it, without a
    /// stat: a directory in the state it was listed in holds the very
    /// names, each the very file (replacing one, or linking or removing
    /// it, moves the directory's ctime).
    pub fn holds(&self, rel: &str) -> Holds {
        match &self.spare_files {
            Some(files) => files.get(rel).map_or(Holds::Nothing, |id| Holds::File(*id)),
            None => Holds::Unknown,
        }
    }

    /// The place of a site-relative path inside the staging directory, with
    /// its parent directories created. What the spare holds at that place
    /// is left for the caller to keep or replace.
    pub fn prepare(&self, rel: &str) -> Result<PathBuf> {
        let path = self.path().join(rel);
        let in_spare_dir = rel
            .rsplit_once('/')
            .is_some_and(|(parent, _)| self.spare_dirs.contains(parent));
        if !in_spare_dir
            && let Some(parent) = path.parent()
            && let Err(e) = fsutil::create_dir_all(parent)
        {
            if self.spare.is_empty() {
                return Err(e);
            }
            // A file of the old site where this one has a directory. Places
            // are prepared on every core: another may have removed it first.
            let mut at = self.path().to_path_buf();
            for part in Path::new(rel).parent().into_iter().flat_map(Path::iter) {
                at.push(part);
                if fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir()) {
                    fsutil::remove_file_if_exists(&at)?;
                }
            }
            fsutil::create_dir_all(parent)?;
        }
        self.produced().insert(rel.to_owned());
        Ok(path)
    }

    /// Writes a published file. The spare's file at the same place is
    /// written over in place (or kept, when it holds these bytes already:
    /// an archive never changes), which spares the disk an unlink, the trim
    /// of the freed blocks and a new allocation; whatever else the spare
    /// holds there is replaced.
    pub fn write(&self, rel: &str, contents: &[u8]) -> Result<()> {
        let path = self.prepare(rel)?;
        if !self.spare.is_empty() {
            if fsutil::rewrite_published(&path, contents)? {
                return Ok(());
            }
            fsutil::remove_any(&path)?;
        }
        fsutil::write_published(&path, contents)
    }

    /// Whether the reused spare holds `want`'s bytes at `rel`, in a file
    /// as [`Staging::write`] leaves one (a regular file that no other name
    /// shares, of the published mode): then that file is kept as it is,
    /// part of the new site, and needs no writing. `bytes` receives them,
    /// unless `None`.
    pub fn held(&self, rel: &str, want: &FileDigest, mut bytes: Option<&mut Vec<u8>>) -> bool {
        use sha2::Digest;
        if self.spare.is_empty() {
            return false;
        }
        let mut hasher = sha2::Sha256::new();
        let read = fsutil::read_published(&self.path().join(rel), want.length, |chunk| {
            hasher.update(chunk);
            if let Some(bytes) = bytes.as_deref_mut() {
                bytes.extend_from_slice(chunk);
            }
        });
        if !read || crate::model::Sha256(hasher.finalize().into()) != want.sha256 {
            return false;
        }
        self.produced().insert(rel.to_owned());
        true
    }

    /// [`Staging::held`] with one stat, no read: whether the reused spare
    /// holds at `rel` a file as [`Staging::write`] leaves one, in a state
    /// that `known` says holds the wanted bytes (the hash cache's record of
    /// the files the last builds left). Then it is kept as it is.
    pub fn held_known(&self, rel: &str, known: impl Fn(&FileState) -> bool) -> bool {
        if self.spare.is_empty() {
            return false;
        }
        let kept = fs::symlink_metadata(self.path().join(rel))
            .is_ok_and(|meta| fsutil::as_published(&meta) && known(&FileState::of(&meta)));
        if kept {
            self.produced().insert(rel.to_owned());
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.insert(rel.to_owned());
        }
        kept
    }

    /// The paths kept with one stat ([`Staging::held_known`]): what the
    /// cache knew of them stands.
    pub fn kept_known(&self) -> FxHashSet<String> {
        std::mem::take(&mut *self.known.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// [`Staging::write`], unless the reused spare holds these bytes at
    /// `rel` in a state `known` vouches for ([`Staging::held_known`]).
    pub fn write_known(
        &self,
        rel: &str,
        contents: &[u8],
        known: impl Fn(&FileState) -> bool,
    ) -> Result<()> {
        if self.held_known(rel, known) {
            return Ok(());
        }
        self.write(rel, contents)
    }

    fn produced(&self) -> std::sync::MutexGuard<'_, FxHashSet<String>> {
        // A panic while it is held ends the build.
        self.produced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes what the spare brought and the new site does not have, so
    /// the staging directory holds exactly what a new one would.
    fn remove_unused(&self) -> Result<()> {
        let produced = self.produced();
        // The directories that hold a file of the new site.
        let mut used: FxHashSet<&str> =
            FxHashSet::with_capacity_and_hasher(produced.len(), Default::default());
        for path in produced.iter() {
            let mut rest = path.as_str();
            while let Some((parent, _)) = rest.rsplit_once('/') {
                if !used.insert(parent) {
                    break;
                }
                rest = parent;
            }
        }
        // Parents come before their children: of an unused tree only the
        // topmost directory is removed, with all it holds. What the new
        // site wrote over (a file where a directory was, or the reverse)
        // was replaced when it was written.
        for entry in &self.spare {
            let parent = entry.rsplit_once('/').map(|(p, _)| p);
            if !used.contains(entry.as_str())
                && !produced.contains(entry)
                && parent.is_none_or(|p| used.contains(p))
            {
                fsutil::remove_any(&self.path().join(entry))?;
            }
        }
        Ok(())
    }

    /// Flushes the new site to disk, then puts it in place of the old one,
    /// atomically where the file system can exchange two directories. The
    /// old one becomes the spare.
    pub fn commit(mut self) -> Result<()> {
        self.remove_unused()?;
        let new = self.dir.take().expect("committed once");
        // One syncfs for every file written, copied or reflinked, instead of
        // an fsync each: the same durability before the swap, at one flush.
        fs::File::open(&new)
            .and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from))
            .map_err(|e| Error::io("cannot flush the new site to disk at", &new, e))?;
        let target = &self.lock.target;
        let result = if fs::symlink_metadata(target).is_err() {
            fs::rename(&new, target)
                .map(|()| None)
                .map_err(|e| Error::io("cannot move the new site to", target, e))
        } else {
            swap(&new, target).map(Some)
        };
        if result.is_err() {
            let _ = fs::remove_dir_all(&new);
        }
        if let Some(old) = result? {
            retire(&old, &spare_path(target))?;
        }
        sync_dir(parent_of(target))
    }
}

impl Drop for Staging<'_> {
    /// Puts an uncommitted reused spare back, where the next build takes it
    /// like any spare: untrusted, checked file by file. A new staging
    /// directory, or a spare whose place is taken, is removed; nothing to
    /// report if that fails, the next build's sweep removes it.
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if self.spare.is_empty() || fs::rename(&dir, spare_path(&self.lock.target)).is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// The spare: the site the last swap retired, `.<name>.spare` beside the
/// output, which the next build stages in.
fn spare_path(target: &Path) -> PathBuf {
    beside(target, format!(".{}.spare", site_name(target)))
}

/// Keeps the site a swap retired as the spare; one this tool did not
/// make (the empty directory a first build replaced) is removed.
fn retire(old: &Path, spare: &Path) -> Result<()> {
    if !fs::symlink_metadata(old.join(MARKER)).is_ok_and(|m| m.is_file()) {
        return remove_old(old);
    }
    // Only there if something made it during the build.
    fsutil::remove_any(spare)?;
    fs::rename(old, spare).map_err(|e| Error::io("cannot keep the previous site as", spare, e))
}

/// A site-relative path in the spare, and what is there.
type SpareEntry = (String, Found);

/// What the spare holds at a path.
enum Found {
    Dir,
    /// A regular file: which one, as its directory lists it (its device's,
    /// and the `d_ino` of its entry).
    File(FileId),
}

/// What the staging directory holds at a place before a build writes
/// there ([`Staging::holds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Not known without a stat.
    Unknown,
    /// Nothing, or not a regular file.
    Nothing,
    /// This regular file.
    File(FileId),
}

/// Lists the directory `rel` of the spare at `root` into `entries`, parents
/// first, each with what it is ([`Found`]), giving its directories the
/// published mode. Stops at the first entry that is neither a directory
/// nor a regular file, and returns it and what it is.
fn list_spare(
    lister: &mut Lister<'_>,
    root: &Path,
    rel: &str,
    meta: &fs::Metadata,
    entries: &mut Vec<SpareEntry>,
) -> Result<Option<(String, &'static str)>> {
    let dir = root.join(rel);
    let listing = lister
        .list(&dir, rel, meta)
        .map_err(|e| Error::io("cannot read directory", &dir, e))?;
    for entry in listing {
        // Only a directory, or what the spare must not hold, needs its path.
        let path = || dir.join(&entry.name);
        let Some(name) = entry.name.to_str() else {
            // No site path has a name that is not UTF-8.
            fsutil::remove_any(&path())?;
            continue;
        };
        let mut child = String::with_capacity(rel.len() + 1 + name.len());
        if !rel.is_empty() {
            child.push_str(rel);
            child.push('/');
        }
        child.push_str(name);
        match entry.kind {
            Kind::Dir => {
                let path = path();
                let mut meta = fsutil::symlink_metadata(&path)?;
                if !meta.is_dir() {
                    return Ok(Some((child, fsutil::file_kind(&meta))));
                }
                if meta.permissions().mode() & 0o7777 != fsutil::PUBLISHED_DIR_MODE {
                    fsutil::set_mode(&path, fsutil::PUBLISHED_DIR_MODE)?;
                    meta = fsutil::symlink_metadata(&path)?;
                }
                entries.push((child.clone(), Found::Dir));
                if let Some(found) = list_spare(lister, root, &child, &meta, entries)? {
                    return Ok(Some(found));
                }
            }
            Kind::File => {
                let id = FileId {
                    dev: std::os::unix::fs::MetadataExt::dev(meta),
                    ino: entry.ino,
                };
                entries.push((child, Found::File(id)));
            }
            Kind::Symlink | Kind::Other => {
                let meta = fsutil::symlink_metadata(&path())?;
                return Ok(Some((child, fsutil::file_kind(&meta))));
            }
        }
    }
    Ok(None)
}

/// The name of a site in the names of the files beside it.
fn site_name(target: &Path) -> String {
    target
        .file_name()
        .map_or("site".into(), |n| n.to_string_lossy().into_owned())
}

/// Staging directories are `.<name>.building-<random>` beside the output.
fn staging_prefix(target: &Path) -> String {
    format!(".{}.building-", site_name(target))
}

/// The right to build one output: an exclusive `flock` on
/// `.<name>.lock` beside it, which holds the holder's PID as text. The
/// kernel releases it when the build ends or its process dies, so no lock
/// outlives its build. The holder removes the file before it lets go; a
/// build that locked a file removed meanwhile finds another (or none) at
/// the path, and starts over on the file now there.
pub struct OutputLock {
    /// Held open: closing it, after the file is removed, releases the lock.
    _file: fs::File,
    path: PathBuf,
    target: PathBuf,
}

impl OutputLock {
    /// Where the site the last swap retired is kept, the spare.
    pub fn spare(&self) -> PathBuf {
        spare_path(&self.target)
    }

    /// Takes the lock of `target`, creating the directory it lives in, or
    /// fails at once, naming the process that holds it.
    pub fn take(target: &Path) -> Result<Self> {
        use rustix::fs::{FlockOperation, Mode, OFlags};
        fsutil::create_dir_all(parent_of(target))?;
        let path = beside(target, format!(".{}.lock", site_name(target)));
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = loop {
            let fd = rustix::fs::open(&path, flags, Mode::from_raw_mode(0o644))
                .map_err(|e| Error::io("cannot open the build lock", &path, e.into()))?;
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(Error::file(
                        &path,
                        format_args!(
                            "another build of {} is running{}; wait for it to finish",
                            target.display(),
                            holder(&fd)
                        ),
                    ));
                }
                Err(e) => return Err(Error::io("cannot lock", &path, e.into())),
            }
            let locked =
                rustix::fs::fstat(&fd).map_err(|e| Error::io("cannot stat", &path, e.into()))?;
            match rustix::fs::lstat(&path) {
                Ok(now) if (now.st_dev, now.st_ino) == (locked.st_dev, locked.st_ino) => break fd,
                Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(Error::io("cannot stat", &path, e.into())),
            }
        };
        let pid = format!("{}\n", std::process::id());
        rustix::fs::ftruncate(&fd, 0)
            .and_then(|()| rustix::io::pwrite(&fd, pid.as_bytes(), 0))
            .map_err(|e| Error::io("cannot write the build lock", &path, e.into()))?;
        Ok(OutputLock {
            _file: fs::File::from(fd),
            path,
            target: target.to_path_buf(),
        })
    }

    /// Removes the staging directories that builds killed midway left
    /// beside the output (a build that fails normally removes its own).
    /// Only under the lock: no other build of this output is running, so
    /// none of them is in use. Returns a warning for each one removed.
    pub fn sweep(&self) -> Result<Vec<Warning>> {
        let parent = parent_of(&self.target);
        let prefix = staging_prefix(&self.target);
        let entries =
            fs::read_dir(parent).map_err(|e| Error::io("cannot read directory", parent, e))?;
        let mut warnings = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot read directory", parent, e))?;
            let is_dir = entry
                .file_type()
                .map_err(|e| Error::io("cannot stat", entry.path(), e))?
                .is_dir();
            if !is_dir || !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let path = beside(&self.target, entry.file_name());
            fs::remove_dir_all(&path).map_err(|e| Error::io("cannot remove", &path, e))?;
            warnings.push(Warning::file(
                &path,
                "removed: a build that was killed midway left it behind",
            ));
        }
        Ok(warnings)
    }
}

/// The file `name` in the directory of `target`, named as `target` is
/// (`public` → `.public.lock`, `/srv/public` → `/srv/.public.lock`).
fn beside(target: &Path, name: impl AsRef<Path>) -> PathBuf {
    target.parent().unwrap_or(Path::new("")).join(name)
}

impl Drop for OutputLock {
    /// Removes the lock file while still holding it; the descriptor closes
    /// next, which releases the lock. A build that fails leaves beside the
    /// output what was there before it. Nothing to report if the removal
    /// fails: a lock file left behind is taken and removed by the next build.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// ` (process <pid>)`, from the PID the lock's holder wrote in it, or
/// nothing while it has not written it yet.
fn holder(lock: &rustix::fd::OwnedFd) -> String {
    let mut buf = [0u8; 32];
    rustix::io::pread(lock, &mut buf, 0)
        .ok()
        .and_then(|n| std::str::from_utf8(&buf[..n]).ok())
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map_or(String::new(), |pid| format!(" (process {pid})"))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Exchanges `new` and `target`; returns where the old site now is.
fn swap(new: &Path, target: &Path) -> Result<PathBuf> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, new, CWD, target, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            // No atomic exchange here: move the old site aside, then the new
            // one in. Between the two renames the output is briefly absent.
            // Aside under the staging directory's name (`.<name>.building-*`,
            // not `.<name>.old`), so a build killed there leaves nothing the
            // next build's sweep misses.
            let mut old = new.as_os_str().to_owned();
            old.push(".old");
            let old = PathBuf::from(old);
            fs::rename(target, &old).map_err(|e| Error::io("cannot move aside", target, e))?;
            if let Err(e) = fs::rename(new, target) {
                let _ = fs::rename(&old, target);
                return Err(Error::io("cannot move the new site to", target, e));
            }
            return Ok(old);
        }
        Err(e) => {
            return Err(Error::io(
                "cannot swap in the new site at",
                target,
                io::Error::from(e),
            ));
        }
    }
    Ok(new.to_path_buf())
}

fn remove_old(path: &Path) -> Result<()> {
    fs::remove_dir_all(path).map_err(|e| Error::io("cannot remove the previous site at", path, e))
}

fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", path, e))
}

/// Refuses to replace a directory this tool did not make.
fn check_replaceable(target: &Path) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(target) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Err(Error::file(
            target,
            "exists and is not a directory (output_dir)",
        ));
    }
    let mut entries =
        fs::read_dir(target).map_err(|e| Error::io("cannot read directory", target, e))?;
    if entries.next().is_none() || target.join(MARKER).is_file() {
        return Ok(());
    }
    Err(Error::file(
        target,
        format_args!(
            "exists, is not empty and was not made by vmcast-gen (no {MARKER} file); \
             refusing to replace it: choose another output_dir or remove it"
        ),
    ))
}
