//! Builds the site in a temporary directory beside the output and swaps it
//! in at the end, so a failed or killed build leaves the previous output
//! exactly as it was.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::fsutil;

/// Marks an output directory as one this tool made and may replace.
pub const MARKER: &str = ".vmcast-gen";

/// A half-built site. Dropping it without [`Staging::commit`] deletes it.
pub struct Staging {
    dir: TempDir,
    target: PathBuf,
}

impl Staging {
    pub fn new(target: &Path) -> Result<Self> {
        check_replaceable(target)?;
        let parent = parent_of(target);
        fsutil::create_dir_all(parent)?;
        let name = target
            .file_name()
            .map_or("site".into(), |n| n.to_string_lossy());
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.building-"))
            .tempdir_in(parent)
            .map_err(|e| Error::io("cannot create a temporary directory in", parent, e))?;
        fsutil::set_mode(dir.path(), fsutil::PUBLISHED_DIR_MODE)?;
        let staging = Staging {
            dir,
            target: target.to_path_buf(),
        };
        staging.write(
            MARKER,
            b"This directory is replaced by every `vmcast-gen build`.\n",
        )?;
        Ok(staging)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The place of a site-relative path inside the staging directory, with
    /// its parent directories created.
    pub fn prepare(&self, rel: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            fsutil::create_dir_all(parent)?;
        }
        Ok(path)
    }

    pub fn write(&self, rel: &str, contents: &[u8]) -> Result<()> {
        let path = self.prepare(rel)?;
        fsutil::write_published(&path, contents)
    }

    /// Flushes the new site to disk, then puts it in place of the old one,
    /// atomically where the file system can exchange two directories.
    pub fn commit(self) -> Result<()> {
        let new = self.dir.keep();
        // One syncfs for every file written, copied or reflinked, instead of
        // an fsync each: the same durability before the swap, at one flush.
        fs::File::open(&new)
            .and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from))
            .map_err(|e| Error::io("cannot flush the new site to disk at", &new, e))?;
        let target = &self.target;
        let result = if fs::symlink_metadata(target).is_err() {
            fs::rename(&new, target)
                .map_err(|e| Error::io("cannot move the new site to", target, e))
        } else {
            swap(&new, target)
        };
        if result.is_err() {
            let _ = fs::remove_dir_all(&new);
        }
        result?;
        sync_dir(parent_of(target))
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Exchanges `new` and `target`, then deletes the old site (now at `new`).
fn swap(new: &Path, target: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, new, CWD, target, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            // No atomic exchange here: move the old site aside, then the new
            // one in. Between the two renames the output is briefly absent.
            let old = new.with_extension("old");
            fs::rename(target, &old).map_err(|e| Error::io("cannot move aside", target, e))?;
            if let Err(e) = fs::rename(new, target) {
                let _ = fs::rename(&old, target);
                return Err(Error::io("cannot move the new site to", target, e));
            }
            return remove_old(&old);
        }
        Err(e) => {
            return Err(Error::io(
                "cannot swap in the new site at",
                target,
                io::Error::from(e),
            ));
        }
    }
    remove_old(new)
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
