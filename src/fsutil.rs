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

pub fn read_to_string(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
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
