//! `std::fs` wrappers that attach the path to every error, so that no call
//! site can forget it, plus the few file operations the pipeline needs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::FileId;

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
    let mut flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC;
    if !follow {
        flags |= rustix::fs::OFlags::NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if !follow && code == rustix::io::Errno::LOOP.raw_os_error() => {
                Error::file(path, "is a symbolic link, which is not allowed here")
            }
            _ => Error::io("cannot open", path, e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::file(
            path,
            format_args!("is not a regular file (it is {})", file_kind(&meta)),
        ));
    }
    Ok((file, meta))
}

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
    let mut buf = vec![0u8; 1 << 20];
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
