//! `std::fs` wrappers that attach the path to every error, so that no call
//! site can forget it, plus the few file operations the pipeline needs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of every published file: readable by the web server.
pub const PUBLISHED_FILE_MODE: u32 = 0o644;
/// Mode of every published directory.
pub const PUBLISHED_DIR_MODE: u32 = 0o755;

/// The largest text file (config, notes, key, template, feed, manifest)
/// that any side reads: `build` refuses to read or write more, and
/// `verify` refuses to download more, so the two always agree.
pub const MAX_TEXT_FILE: u64 = 64 << 20;

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
    use std::io::Read;
    let (file, meta) = open_regular(path, follow)?;
    if meta.len() > limit {
        return Err(too_large(path, limit));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok((bytes, meta))
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
/// staging directory is synced as a whole ([`crate::write::Staging::commit`]).
pub fn write_published(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = create_published(path)?;
    file.write_all(contents)
        .map_err(|e| Error::io("cannot write", path, e))
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

/// Copies nothing: makes `dst` a hard link to `src`. Returns `Ok(false)`
/// when the two are on different file systems, so the caller can copy.
pub fn hard_link(src: &Path, dst: &Path) -> Result<bool> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => Ok(false),
        Err(e) => Err(Error::io("cannot hard-link to", dst, e)),
    }
}

/// Makes `dst` a copy-on-write clone of `src` where the file system can
/// (btrfs, XFS...): no bytes are copied. Returns `Ok(false)`, leaving no
/// `dst`, where it cannot.
pub fn reflink(src: &Path, dst: &Path) -> Result<bool> {
    let from = open(src)?;
    let to = create_published(dst)?;
    match rustix::fs::ioctl_ficlone(&to, &from) {
        Ok(()) => Ok(true),
        Err(_) => {
            drop(to);
            fs::remove_file(dst).map_err(|e| Error::io("cannot remove", dst, e))?;
            Ok(false)
        }
    }
}

/// Copies a file the kernel's way (copy_file_range, no user-space read)
/// into a new published file (mode 0644).
pub fn copy_published(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst).map_err(|e| Error::io("cannot copy to", dst, e))?;
    set_mode(dst, PUBLISHED_FILE_MODE)
}
