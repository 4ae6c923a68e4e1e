//! `std::fs` wrappers that attach the path to every error, so that no call
//! site can forget it, plus the few file operations the pipeline needs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{FileId, FileName, Sha256};
use crate::warning::Warning;

/// Mode of every published file: readable by the web server.
pub const PUBLISHED_FILE_MODE: u32 = 0o644;
/// Mode of every published directory.
pub const PUBLISHED_DIR_MODE: u32 = 0o755;

pub use crate::model::MAX_TEXT_FILE;

/// Opens `path` for reading and checks, on the open descriptor, that it is
/// a regular file. Whatever is checked is what is then read: the caller
/// uses this descriptor and never goes back to the path. With `follow`
/// false, a symbolic link as the last component is refused. A FIFO or a
/// device is refused without blocking (the open is non-blocking).
pub fn open_regular(path: &Path, follow: bool) -> Result<(File, fs::Metadata)> {
    open_regular_io(path, follow).map_err(|e| match e.raw_os_error() {
        Some(code) if !follow && code == rustix::io::Errno::LOOP.raw_os_error() => {
            Error::file(path, "is a symbolic link, which is not allowed here")
        }
        _ => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NotRegular>())
        {
            Some(NotRegular(kind)) => {
                Error::file(path, format_args!("is not a regular file (it is {kind})"))
            }
            None => Error::io("cannot open", path, e),
        },
    })
}

/// [`open_regular`], with the [`io::Error`] for callers that tell failures
/// apart by kind: `ELOOP` for a symbolic link refused, kind `Other` holding
/// a [`NotRegular`] for a file of another kind.
pub fn open_regular_io(path: &Path, follow: bool) -> io::Result<(File, fs::Metadata)> {
    let mut flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC;
    if !follow {
        flags |= rustix::fs::OFlags::NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(NotRegular(file_kind(&meta))));
    }
    Ok((file, meta))
}

/// A file [`open_regular_io`] refused: not a regular file but the kind named.
#[derive(Debug)]
pub struct NotRegular(pub &'static str);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a regular file but {}", self.0)
    }
}

impl std::error::Error for NotRegular {}

/// What kind of file `meta` describes, for messages.
pub fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a regular file"
    }
}

/// Reads a whole regular file of at most `limit` bytes through one open
/// descriptor; the limit holds whatever the file's size claims.
pub fn read_regular(path: &Path, follow: bool, limit: u64) -> Result<(Vec<u8>, fs::Metadata)> {
    let (file, meta) = open_regular(path, follow)?;
    if meta.len() > limit {
        return Err(too_large(path, limit));
    }
    Ok((read_open(file, path, limit, meta.len())?, meta))
}

/// Reads an open file to its end, at most `limit` bytes whatever it claims.
/// `size`, what its stat said, sizes the buffer: two reads, not three.
pub fn read_open(file: File, path: &Path, limit: u64, size: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(usize::try_from(size.min(limit)).unwrap_or(0) + 1);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok(bytes)
}

/// Feeds what `reader` holds to `sink`, chunk by chunk, and returns the
/// byte count: at most `limit`, or `limit + 1` when there is more (that
/// byte is not fed, and nothing past it is read). A read that fails comes
/// with the count before it.
pub fn read_bounded(
    reader: impl io::Read,
    limit: u64,
    mut sink: impl FnMut(&[u8]),
) -> std::result::Result<u64, (u64, io::Error)> {
    let mut reader = io::Read::take(reader, limit.saturating_add(1));
    // No bigger than the bytes it may take: zeroing a MiB costs more than
    // reading a small file.
    let size = usize::try_from(limit.saturating_add(1)).map_or(1 << 20, |n| n.min(1 << 20));
    let mut buf = vec![0u8; size];
    let mut total = 0u64;
    loop {
        let n = match io::Read::read(&mut reader, &mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((total, e)),
        };
        let within = usize::try_from(limit.saturating_sub(total)).map_or(n, |left| n.min(left));
        sink(&buf[..within]);
        total += n as u64;
    }
}

/// The byte count [`read_bounded`] gives, and the SHA-256 of the bytes it
/// fed (at most `limit`).
pub fn sha256_bounded(
    reader: impl io::Read,
    limit: u64,
) -> std::result::Result<(u64, Sha256), (u64, io::Error)> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let read = read_bounded(reader, limit, |c| hasher.update(c))?;
    Ok((read, Sha256(hasher.finalize().into())))
}

fn too_large(path: &Path, limit: u64) -> Error {
    Error::file(
        path,
        format_args!("is larger than {limit} bytes, the limit for this kind of file"),
    )
}

/// A UTF-8 text file (following a symbolic link), read through one
/// descriptor and at most [`MAX_TEXT_FILE`] bytes.
pub fn read_to_string(path: &Path) -> Result<String> {
    let (bytes, _) = read_regular(path, true, MAX_TEXT_FILE)?;
    text(path, bytes)
}

/// The bytes of a file as UTF-8 text, or an error naming the file.
pub fn text(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format_args!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io("cannot open", path, e))
}

/// The state of the running program's executable, which what it renders
/// and plans depends on: a new build or install of it is another file, or
/// the same one written to. Taken once: the hash cache and the plans'
/// memo, loaded side by side, both ask.
pub fn program() -> Option<crate::model::FileState> {
    static PROGRAM: std::sync::OnceLock<Option<crate::model::FileState>> =
        std::sync::OnceLock::new();
    *PROGRAM.get_or_init(|| {
        metadata(Path::new("/proc/self/exe"))
            .ok()
            .map(|meta| crate::model::FileState::of(&meta))
    })
}

pub fn metadata(path: &Path) -> Result<fs::Metadata> {
    fs::metadata(path).map_err(|e| Error::io("cannot stat", path, e))
}

/// The state of a file itself, not of what a symbolic link points at.
pub fn symlink_metadata(path: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(path).map_err(|e| Error::io("cannot stat", path, e))
}

pub fn canonicalize(path: &Path) -> Result<std::path::PathBuf> {
    fs::canonicalize(path).map_err(|e| Error::io("cannot resolve", path, e))
}

/// Creates `path` and its parents; a directory it creates gets the
/// published directory mode, an existing one is left as it is.
pub fn create_dir_all(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(path) {
        Ok(()) => set_mode(path, PUBLISHED_DIR_MODE),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(Error::io("cannot create directory", path, e)),
    }
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot set permissions of", path, e))
}

/// Creates a new file for publishing (mode 0644), failing if it exists.
pub fn create_published(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PUBLISHED_FILE_MODE)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, e))?;
    // The umask may have removed bits from the mode given to open(2).
    file.set_permissions(fs::Permissions::from_mode(PUBLISHED_FILE_MODE))
        .map_err(|e| Error::io("cannot set permissions of", path, e))?;
    Ok(file)
}

/// Writes a complete new published file. It reaches the disk when the
/// staging directory is synced as a whole (the write stage's `Staging::commit`).
pub fn write_published(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = create_published(path)?;
    file.write_all(contents)
        .map_err(|e| Error::io("cannot write", path, e))
}

/// Makes the published file at `path` hold `contents` in place, when it is
/// a regular file that no other name shares (a file of the reused spare
/// site, the write stage's `Staging`): it keeps its inode and its blocks, so
/// the file system frees and trims nothing, and when it holds `contents`
/// already nothing is written at all. `Ok(false)`, touching nothing, when
/// there is no such file at `path`.
pub fn rewrite_published(path: &Path, contents: &[u8]) -> Result<bool> {
    use std::io::Read;
    use std::os::unix::fs::{FileExt, MetadataExt};
    let alone = |meta: &fs::Metadata| meta.is_file() && meta.nlink() == 1;
    if !fs::symlink_metadata(path).is_ok_and(|m| alone(&m)) {
        return Ok(false);
    }
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let Ok(mut file) = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    else {
        return Ok(false);
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !alone(&meta) {
        return Ok(false);
    }
    let len = contents.len() as u64;
    let mut old = Vec::new();
    if meta.len() == len {
        file.read_to_end(&mut old)
            .map_err(|e| Error::io("cannot read", path, e))?;
    }
    if old != contents {
        file.write_all_at(contents, 0)
            .and_then(|()| file.set_len(len))
            .map_err(|e| Error::io("cannot write", path, e))?;
    }
    if meta.permissions().mode() & 0o7777 != PUBLISHED_FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(PUBLISHED_FILE_MODE))
            .map_err(|e| Error::io("cannot set permissions of", path, e))?;
    }
    Ok(true)
}

/// A path as text, a memo's or the cache's key: itself when it is UTF-8
/// (told by `str::from_utf8`, which runs through ASCII a word at a time),
/// else with U+FFFD for what is not. `to_string_lossy` gives the same, by
/// a slower walk: these keys are looked up for every release.
pub fn path_text(path: &Path) -> std::borrow::Cow<'_, str> {
    match path.to_str() {
        Some(text) => std::borrow::Cow::Borrowed(text),
        None => path.to_string_lossy(),
    }
}

/// Whether `meta` (an `lstat`) shows a file as [`write_published`] leaves
/// one: a regular file that no other name shares, of the published mode.
pub fn as_published(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.is_file() && meta.nlink() == 1 && meta.permissions().mode() & 0o7777 == PUBLISHED_FILE_MODE
}

/// A memo's bytes (a file that only spares work, beside the hash cache:
/// `listing`, `scan::memo`), if it is a regular file of at most `limit`
/// bytes; `None` for anything else, which costs a build only the work the
/// memo would have spared.
pub fn read_memo(path: &Path, limit: u64) -> Option<Vec<u8>> {
    read_regular(path, false, limit)
        .ok()
        .map(|(bytes, _)| bytes)
}

/// Writes a memo ([`read_memo`]), its directory made if need be, replaced
/// atomically. A failure is not reported: the next build does the work
/// the memo would have spared.
pub fn write_memo(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent()
        && create_dir_all(dir).is_err()
    {
        return;
    }
    let _ = write_new_file(path, bytes, 0o644, true);
}

/// Feeds the bytes of the published file at `path` to `sink`, chunk by
/// chunk, when it is one that [`rewrite_published`] would keep as it is:
/// a regular file (not followed through a link) that no other name
/// shares, of the published mode, and here `len` bytes long. Whether it
/// was, and was read whole; `false` for anything else.
pub fn read_published(path: &Path, len: u64, sink: impl FnMut(&[u8])) -> bool {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !as_published(&meta) || meta.len() != len {
        return false;
    }
    read_bounded(&file, len, sink).is_ok_and(|read| read == len)
}

/// Writes a file with the given mode, replacing it only if `overwrite`.
/// The contents go to a temporary file beside it first, so a crash never
/// leaves a half-written key behind.
pub fn write_new_file(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(Error::file(
            path,
            "already exists; pass --force to overwrite it",
        ));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".vmcast-gen-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("cannot write", tmp.path().to_path_buf(), e))?;
    let result = if overwrite {
        tmp.persist(path).map(|_| ())
    } else {
        tmp.persist_noclobber(path).map(|_| ())
    };
    result.map_err(|e| Error::io("cannot write", path, e.error))
}

/// Opens an image that the scan vetted, by its resolved path, refusing a
/// symbolic link anywhere on the way (`openat2` with
/// `RESOLVE_NO_SYMLINKS` where the kernel has it, else `O_NOFOLLOW` on the
/// last component): the resolved path has none, so one there now was put
/// there since. The descriptor must be the very file the scan saw
/// (`expected`), and a regular file, both checked with fstat on it.
pub fn open_vetted(real: &Path, shown: &Path, expected: FileId) -> Result<(File, fs::Metadata)> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let opened = match rustix::fs::openat2(
        rustix::fs::CWD,
        real,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => rustix::fs::open(real, flags, Mode::empty()),
        other => other,
    };
    let file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => {
            return Err(Error::file(
                shown,
                "became a symbolic link after the scan; refusing to follow it",
            ));
        }
        Err(e) => return Err(Error::io("cannot open", shown, e.into())),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", shown, e))?;
    if !meta.is_file() {
        return Err(Error::file(
            shown,
            format_args!("is not a regular file (it is {})", file_kind(&meta)),
        ));
    }
    if FileId::of(&meta) != expected {
        return Err(Error::file(
            shown,
            "was replaced by another file after the scan; refusing to read it",
        ));
    }
    Ok((file, meta))
}

/// Copies nothing: makes `dst` a hard link to the file at `src`, which must
/// still be `expected` (checked on the new link, so a file swapped in at
/// `src` meanwhile is never published): an image, or the previous
/// output's copy of one. Returns `Ok(false)` when the two
/// are on different file systems, so the caller can copy.
pub fn hard_link(src: &Path, dst: &Path, expected: FileId) -> Result<bool> {
    match fs::hard_link(src, dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => return Ok(false),
        Err(e) => return Err(Error::io("cannot hard-link to", dst, e)),
    }
    let linked = fs::symlink_metadata(dst).map_err(|e| Error::io("cannot stat", dst, e))?;
    if !linked.is_file() || FileId::of(&linked) != expected {
        fs::remove_file(dst).map_err(|e| Error::io("cannot remove", dst, e))?;
        return Err(Error::file(
            src,
            "was replaced by another file while the build ran; refusing to publish it",
        ));
    }
    Ok(true)
}

/// Makes `dst` a copy-on-write clone of the open file `from` where the
/// file system can (btrfs, XFS...): no bytes are copied. Returns
/// `Ok(false)`, leaving no `dst`, where it cannot.
pub fn reflink(from: &File, dst: &Path) -> Result<bool> {
    let to = create_published(dst)?;
    match rustix::fs::ioctl_ficlone(&to, from) {
        Ok(()) => Ok(true),
        Err(_) => {
            drop(to);
            fs::remove_file(dst).map_err(|e| Error::io("cannot remove", dst, e))?;
            Ok(false)
        }
    }
}

/// Copies the open file `from` (`len` bytes) into a new published file,
/// keeping its holes: only the data regions (SEEK_DATA/SEEK_HOLE) are
/// copied, by the kernel (copy_file_range), and a sparse image stays
/// sparse.
pub fn copy_published(from: &File, len: u64, src: &Path, dst: &Path) -> Result<()> {
    use rustix::fs::SeekFrom as RSeek;
    let to = create_published(dst)?;
    let fail = |e: rustix::io::Errno| Error::io("cannot copy to", dst, e.into());
    let mut offset = 0u64;
    while offset < len {
        let data = match rustix::fs::seek(from, RSeek::Data(offset)) {
            Ok(d) => d,
            // No data after `offset`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(Error::io("cannot read", src, e.into())),
        };
        let hole = rustix::fs::seek(from, RSeek::Hole(data))
            .map_err(|e| Error::io("cannot read", src, e.into()))?
            .min(len);
        let mut at_from = data;
        let mut at_to = data;
        while at_from < hole {
            let want = usize::try_from(hole - at_from).unwrap_or(usize::MAX);
            let n =
                rustix::fs::copy_file_range(from, Some(&mut at_from), &to, Some(&mut at_to), want)
                    .map_err(fail)?;
            if n == 0 {
                return Err(Error::file(src, "shrank while it was being copied"));
            }
        }
        offset = hole;
    }
    to.set_len(len)
        .map_err(|e| Error::io("cannot write", dst, e))
}

pub fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io("cannot remove", path, e))
}

/// Removes whatever is at `path`, a directory with all it holds, without
/// following a symbolic link; nothing when there is nothing.
pub fn remove_any(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => return Err(Error::io("cannot stat", path, e)),
    };
    removed.map_err(|e| Error::io("cannot remove", path, e))
}

/// Removes a file; `Ok(false)` when there was none.
pub fn remove_file_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// Renames `from` to `to` atomically (same file system), then syncs the
/// directory so the new name survives a crash.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("cannot move into place", to, e))?;
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync", dir, e))
}

/// The canonical form of a path that may not exist yet: its nearest existing
/// ancestor resolved, the rest appended.
pub fn resolve_lexically(path: &Path) -> Result<std::path::PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut resolved = canonicalize(existing)?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}

/// A name a [`Dir`] opens beneath itself: one path component, never `.`
/// or `..`, never holding a `/`. Only two kinds of name are: a published
/// file's [`FileName`], as a feed gives it, and the tools' own hidden
/// names, [`OwnName`], fixed in the code.
pub trait Leaf {
    fn leaf(&self) -> &str;
}

impl Leaf for FileName {
    fn leaf(&self) -> &str {
        self.as_str()
    }
}

/// A hidden name of a tool's own state beside published files
/// (`.vmcast-pull.json`), checked when the program is compiled: it starts
/// with `.`, is not `.` or `..`, and holds no `/` or control character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnName(&'static str);

impl OwnName {
    pub const fn new(name: &'static str) -> OwnName {
        let bytes = name.as_bytes();
        assert!(bytes.len() > 1 && bytes[0] == b'.', "an own name is hidden");
        assert!(
            !(bytes.len() == 2 && bytes[1] == b'.'),
            "an own name is not .."
        );
        let mut i = 0;
        while i < bytes.len() {
            assert!(
                bytes[i] != b'/' && bytes[i] >= 0x20 && bytes[i] != 0x7f,
                "an own name is one plain component"
            );
            i += 1;
        }
        OwnName(name)
    }
}

impl Leaf for OwnName {
    fn leaf(&self) -> &str {
        self.0
    }
}

/// What says a file's content is unchanged without reading it: its inode,
/// size and mtime, as a record keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            inode: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A file beneath a [`Dir`] that this user made: open, and as fstat saw it
/// on that descriptor.
#[derive(Debug)]
pub struct Mine {
    pub file: File,
    pub id: FileId,
    pub stamp: Stamp,
}

impl Mine {
    /// The file's stamp now, after writes.
    pub fn restamp(&mut self, path: &Path) -> Result<Stamp> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::io("cannot stat", path, e))?;
        self.stamp = Stamp::of(&meta);
        Ok(self.stamp)
    }
}

/// How a [`Mine`] is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// What [`Dir::remove_unchanged`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Nothing was there.
    Gone,
    /// Kept, and why.
    Kept(String),
}

/// A directory opened once (`pull --dest`), and the files beneath it,
/// each opened by name relative to its descriptor (`openat`): never
/// through a symbolic link (`O_NOFOLLOW`), never waiting for a FIFO's
/// writer (`O_NONBLOCK`), and used only when fstat on that descriptor
/// shows a file this user made: a regular file with one link, owned by the
/// user running this process. Anything else found under a name the tool
/// keeps is discarded, its name unlinked and never followed, with a
/// warning. The directory's own path may hold symbolic links (an admin's);
/// nothing beneath it is reached through one.
#[derive(Debug)]
pub struct Dir {
    fd: rustix::fd::OwnedFd,
    path: std::path::PathBuf,
}

/// Why a file is not one this user made, or `None` when it is.
fn not_mine(meta: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() {
        Some(file_kind(meta).to_owned())
    } else if meta.nlink() != 1 {
        Some(format!(
            "a regular file with {} names (a hard link)",
            meta.nlink()
        ))
    } else if meta.uid() != me {
        Some(format!(
            "a file of another user (uid {}, not {me})",
            meta.uid()
        ))
    } else {
        None
    }
}

impl Dir {
    /// Opens the directory at `path`, made with its parents if missing.
    pub fn create(path: &Path) -> Result<Dir> {
        use rustix::fs::{Mode, OFlags};
        create_dir_all(path)?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("cannot open", path, e.into()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Where `name` is, for messages.
    pub fn path_of(&self, name: &impl Leaf) -> std::path::PathBuf {
        self.path.join(name.leaf())
    }

    /// What is at `name` itself, never what it points at; `None` when
    /// nothing is.
    fn lstat(&self, name: &impl Leaf) -> Result<Option<fs::Metadata>> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name.leaf(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd)
                .metadata()
                .map(Some)
                .map_err(|e| Error::io("cannot stat", self.path_of(name), e)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("cannot stat", self.path_of(name), e.into())),
        }
    }

    /// Unlinks whatever is at `name` (an empty directory too), and says so.
    fn discard(&self, name: &impl Leaf, what: &str, warnings: &mut Vec<Warning>) -> Result<()> {
        use rustix::fs::AtFlags;
        let path = self.path_of(name);
        let is_dir = self.lstat(name)?.is_some_and(|m| m.is_dir());
        let flags = if is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&self.fd, name.leaf(), flags) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(Error::file(
                    &path,
                    format_args!(
                        "is {what}, not a file vmcast-gen made, and cannot be removed ({}); \
                         remove it",
                        io::Error::from(e)
                    ),
                ));
            }
        }
        warnings.push(Warning::file(
            &path,
            format_args!(
                "was {what}, not a file vmcast-gen made; removed the name (nothing it \
                 pointed at was touched)"
            ),
        ));
        Ok(())
    }

    /// The directory `name` beneath this one, made if missing. A symbolic
    /// link or anything else but a directory under its name is discarded;
    /// a directory of another user is an error.
    pub fn subdir(&self, name: &OwnName, warnings: &mut Vec<Warning>) -> Result<Dir> {
        use rustix::fs::{Mode, OFlags};
        use std::os::unix::fs::MetadataExt;
        let path = self.path_of(name);
        if let Some(meta) = self.lstat(name)?
            && !meta.is_dir()
        {
            self.discard(name, file_kind(&meta), warnings)?;
        }
        match rustix::fs::mkdirat(&self.fd, name.leaf(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io("cannot create directory", &path, e.into())),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::openat(&self.fd, name.leaf(), flags, Mode::empty())
            .map(File::from)
            .map_err(|e| Error::io("cannot open", &path, e.into()))?;
        let meta = dir
            .metadata()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(Error::file(
                &path,
                format_args!(
                    "is a directory of another user (uid {}, not {me}), not one vmcast-gen \
                     made; remove it",
                    meta.uid()
                ),
            ));
        }
        Ok(Dir {
            fd: dir.into(),
            path,
        })
    }

    /// Opens the file at `name` when it is one this user made (see
    /// [`Dir`]); `None` when there is none. Anything else there is
    /// discarded with a warning, and is `None` too.
    pub fn open_mine(
        &self,
        name: &impl Leaf,
        access: Access,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<Mine>> {
        use rustix::fs::{Mode, OFlags};
        let path = self.path_of(name);
        let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let flags = flags
            | match access {
                Access::Read => OFlags::RDONLY,
                Access::ReadWrite => OFlags::RDWR,
            };
        let file = match rustix::fs::openat(&self.fd, name.leaf(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => {
                // A symbolic link (ELOOP), a directory (EISDIR), a socket
                // (ENXIO)...: what it is decides.
                return match self.lstat(name)? {
                    None => Ok(None),
                    Some(meta) => match not_mine(&meta) {
                        Some(what) => self.discard(name, &what, warnings).map(|()| None),
                        None => Err(Error::io("cannot open", &path, e.into())),
                    },
                };
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        if let Some(what) = not_mine(&meta) {
            drop(file);
            self.discard(name, &what, warnings)?;
            return Ok(None);
        }
        Ok(Some(Mine {
            file,
            id: FileId::of(&meta),
            stamp: Stamp::of(&meta),
        }))
    }

    /// Creates a new file at `name` with `mode`; fails if anything is there.
    pub fn create_new(&self, name: &impl Leaf, mode: u32) -> Result<Mine> {
        use rustix::fs::{Mode, OFlags};
        let path = self.path_of(name);
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name.leaf(), flags, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io("cannot create", &path, e.into()))?;
        let file = File::from(fd);
        // The umask may have removed bits from the mode given to open(2).
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("cannot set permissions of", &path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        Ok(Mine {
            file,
            id: FileId::of(&meta),
            stamp: Stamp::of(&meta),
        })
    }

    /// Makes `name` hold `contents`, atomically: written to `scratch`
    /// first (whatever was there is unlinked), synced, then renamed over
    /// `name`, which replaces whatever name was there without following it.
    pub fn replace(&self, name: &OwnName, scratch: &OwnName, contents: &[u8]) -> Result<()> {
        let path = self.path_of(scratch);
        match rustix::fs::unlinkat(&self.fd, scratch.leaf(), rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(Error::io("cannot remove", &path, e.into())),
        }
        let mut mine = self.create_new(scratch, PUBLISHED_FILE_MODE)?;
        mine.file
            .write_all(contents)
            .and_then(|()| mine.file.sync_all())
            .map_err(|e| Error::io("cannot write", &path, e))?;
        rustix::fs::renameat(&self.fd, scratch.leaf(), &self.fd, name.leaf())
            .map_err(|e| Error::io("cannot write", self.path_of(name), e.into()))?;
        self.sync()
    }

    /// Renames this user's file `mine`, at `from` in `source`, to `to`
    /// here, and syncs this directory. The name must still be that very
    /// file before the rename and after it; a file swapped in meanwhile is
    /// never left in place.
    pub fn rename_mine(
        &self,
        source: &Dir,
        from: &impl Leaf,
        mine: &Mine,
        to: &impl Leaf,
    ) -> Result<()> {
        let swapped = || {
            Error::file(
                source.path_of(from),
                "was replaced by another file; nothing was put in place",
            )
        };
        if !source.holds(from, mine)? {
            return Err(swapped());
        }
        rustix::fs::renameat(&source.fd, from.leaf(), &self.fd, to.leaf())
            .map_err(|e| Error::io("cannot move into place", self.path_of(to), e.into()))?;
        if !self.holds(to, mine)? {
            // Swapped between the check and the rename: whatever it is, it
            // does not stay under the name of the image.
            let _ = rustix::fs::unlinkat(&self.fd, to.leaf(), rustix::fs::AtFlags::empty());
            return Err(swapped());
        }
        self.sync()
    }

    /// Whether `name` is still this user's file `mine`.
    fn holds(&self, name: &impl Leaf, mine: &Mine) -> Result<bool> {
        Ok(self
            .lstat(name)?
            .is_some_and(|m| FileId::of(&m) == mine.id && not_mine(&m).is_none()))
    }

    /// Removes this user's file `mine` at `name`, if the name is still it.
    pub fn remove_mine(&self, name: &impl Leaf, mine: &Mine) -> Result<()> {
        if self.holds(name, mine)? {
            rustix::fs::unlinkat(&self.fd, name.leaf(), rustix::fs::AtFlags::empty())
                .map_err(|e| Error::io("cannot remove", self.path_of(name), e.into()))?;
        }
        Ok(())
    }

    /// Removes the file at `name` only if it is one this user made and
    /// still has the inode, size and mtime of `expected`; otherwise keeps
    /// it and says why.
    pub fn remove_unchanged(&self, name: &impl Leaf, expected: Stamp) -> Result<Removal> {
        let Some(meta) = self.lstat(name)? else {
            return Ok(Removal::Gone);
        };
        if let Some(what) = not_mine(&meta) {
            return Ok(Removal::Kept(format!("it is now {what}")));
        }
        let now = Stamp::of(&meta);
        if now.inode != expected.inode {
            return Ok(Removal::Kept("it was replaced by another file".into()));
        }
        if (now.size, now.mtime_ns) != (expected.size, expected.mtime_ns) {
            return Ok(Removal::Kept(
                "it was changed (its size or mtime differ)".into(),
            ));
        }
        rustix::fs::unlinkat(&self.fd, name.leaf(), rustix::fs::AtFlags::empty())
            .map_err(|e| Error::io("cannot remove", self.path_of(name), e.into()))?;
        Ok(Removal::Removed)
    }

    /// Syncs the directory, so that renames and removals survive a crash.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| Error::io("cannot sync", &self.path, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: OwnName = OwnName::new(".own");

    #[test]
    fn a_path_as_text_is_what_to_string_lossy_gives() {
        use std::os::unix::ffi::OsStrExt;
        let utf8 = Path::new("/r/é/release.toml");
        assert!(matches!(
            path_text(utf8),
            std::borrow::Cow::Borrowed("/r/é/release.toml")
        ));
        let other = Path::new(std::ffi::OsStr::from_bytes(b"/r/\xff/release.toml"));
        assert_eq!(path_text(other), other.to_string_lossy());
        assert_eq!(path_text(other), "/r/\u{fffd}/release.toml");
    }

    fn name(s: &str) -> FileName {
        FileName::parse(s).unwrap()
    }

    #[test]
    fn only_a_file_this_user_made_is_opened_beneath_a_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::create(&tmp.path().join("d")).unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        let mut warnings = Vec::new();
        std::os::unix::fs::symlink(&outside, dir.path_of(&name("link"))).unwrap();
        fs::hard_link(&outside, dir.path_of(&name("hard"))).unwrap();
        fs::create_dir(dir.path_of(&OWN)).unwrap();
        for leaf in ["link", "hard"] {
            let got = dir.open_mine(&name(leaf), Access::ReadWrite, &mut warnings);
            assert!(got.unwrap().is_none(), "{leaf}");
            assert!(fs::symlink_metadata(dir.path_of(&name(leaf))).is_err());
        }
        assert!(
            dir.open_mine(&OWN, Access::Read, &mut warnings)
                .unwrap()
                .is_none()
        );
        assert_eq!(fs::read(&outside).unwrap(), b"x");
        let kinds: Vec<&str> = warnings
            .iter()
            .map(|w| w.message.split(',').next().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "was a symbolic link",
                "was a regular file with 2 names (a hard link)",
                "was a directory"
            ]
        );
        let made = dir.create_new(&name("made"), 0o600).unwrap();
        let opened = dir.open_mine(&name("made"), Access::Read, &mut warnings);
        assert_eq!(opened.unwrap().unwrap().id, made.id);
        assert!(dir.create_new(&name("made"), 0o600).is_err());
    }

    #[test]
    fn only_an_unchanged_file_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::create(tmp.path()).unwrap();
        let mut made = dir.create_new(&name("a"), 0o644).unwrap();
        let path = dir.path_of(&name("a"));
        let stamp = made.restamp(&path).unwrap();
        fs::write(&path, b"changed").unwrap();
        let kept = dir.remove_unchanged(&name("a"), stamp).unwrap();
        assert_eq!(
            kept,
            Removal::Kept("it was changed (its size or mtime differ)".into())
        );
        let stamp = Stamp::of(&fs::metadata(&path).unwrap());
        assert_eq!(
            dir.remove_unchanged(&name("a"), stamp).unwrap(),
            Removal::Removed
        );
        assert_eq!(
            dir.remove_unchanged(&name("a"), stamp).unwrap(),
            Removal::Gone
        );
    }

    #[test]
    fn a_replaced_file_is_never_renamed_into_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::create(tmp.path()).unwrap();
        let mut warnings = Vec::new();
        let sub = dir.subdir(&OWN, &mut warnings).unwrap();
        let made = sub.create_new(&name("part"), 0o644).unwrap();
        fs::remove_file(sub.path_of(&name("part"))).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sub.path_of(&name("part"))).unwrap();
        let err = dir
            .rename_mine(&sub, &name("part"), &made, &name("image"))
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("was replaced by another file; nothing was put in place")
        );
        assert!(fs::symlink_metadata(dir.path_of(&name("image"))).is_err());
    }
}
