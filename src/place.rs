//! Where an image lands in the output besides being hashed: nowhere, a
//! copy (a reflink where the file system can), or a hard link. A copy that
//! needs bytes is written from the hashing read, so `for_read` only says
//! where that copy goes; a copy the previous build already made of the
//! same bytes is taken from the previous output by hard link. Where the
//! staging directory (the spare site reused) already holds the very file
//! the image's place needs, it is left as it is.

use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::FileId;

/// Where an image must also end up, besides being hashed.
#[derive(Debug, Clone)]
pub enum Placement {
    Nowhere,
    /// A copy (a reflink where the file system can, else written from the
    /// hashing read).
    Copy(PathBuf),
    /// A hard link (a copy when the source is not world-readable or lies on
    /// another file system).
    Link(PathBuf),
}

/// An image open for reading: the descriptor that passed the checks, its
/// fstat, and the resolved path it was opened by.
pub struct Opened<'a> {
    pub file: &'a File,
    pub meta: &'a Metadata,
    pub real: &'a Path,
}

impl Opened<'_> {
    fn world_readable(&self) -> bool {
        crate::model::world_readable(self.meta)
    }

    fn id(&self) -> FileId {
        FileId::of(self.meta)
    }

    /// Links the image at `dst`, unless it is there already; `Ok(false)`
    /// when it cannot be linked and must be copied.
    fn link(&self, dst: &Path) -> Result<bool> {
        Ok(holds(dst, Some(self.id()))? || fsutil::hard_link(self.real, dst, self.id())?)
    }
}

/// Whether `dst` already holds the file `want` (the same device and inode):
/// then nothing is linked, copied or removed, and the file's ctime stays.
/// Anything else there (what an older site left in the reused spare) is
/// removed, so the image can be placed anew.
pub fn holds(dst: &Path, want: Option<FileId>) -> Result<bool> {
    match fs::symlink_metadata(dst) {
        Ok(meta) if meta.is_file() && Some(FileId::of(&meta)) == want => Ok(true),
        Ok(_) => fsutil::remove_any(dst).map(|()| false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot stat", dst, e)),
    }
}

/// The file the previous build published at the same place in the
/// output, known to hold the same bytes as the image: its recorded state
/// still matches and its recorded digest is the image's.
pub struct Previous {
    pub path: PathBuf,
    pub id: FileId,
}

/// Places an image whose digest is known: no user-space read. A copy is
/// taken from the previous output by hard link when `previous` finds one
/// (never moved out of it: a build that fails later leaves that output
/// whole), else reflinked or copied by the kernel. Returns whether the
/// image itself was in place already (a hard link the spare held): then
/// nothing about it moved, not even its ctime.
pub fn unread(
    image: &Opened,
    place: &Placement,
    previous: impl FnOnce() -> Option<Previous>,
) -> Result<bool> {
    match place {
        Placement::Nowhere => Ok(false),
        Placement::Link(dst) if image.world_readable() && holds(dst, Some(image.id()))? => Ok(true),
        Placement::Link(dst)
            if image.world_readable() && fsutil::hard_link(image.real, dst, image.id())? =>
        {
            Ok(false)
        }
        Placement::Copy(dst) | Placement::Link(dst) => {
            let old = previous();
            if holds(dst, old.as_ref().map(|o| o.id))? {
                return Ok(false);
            }
            if let Some(old) = old
                && fsutil::hard_link(&old.path, dst, old.id)?
            {
                return Ok(false);
            }
            if !fsutil::reflink(image.file, dst)? {
                fsutil::copy_published(image.file, image.meta.len(), image.real, dst)?;
            }
            Ok(false)
        }
    }
}

/// Places an image that is about to be hashed; returns where the hashing
/// read must write a copy, if it must.
pub fn for_read(image: &Opened, place: &Placement) -> Result<Option<PathBuf>> {
    match place {
        Placement::Nowhere => Ok(None),
        Placement::Link(dst) if image.world_readable() && image.link(dst)? => Ok(None),
        Placement::Copy(dst) | Placement::Link(dst) => {
            holds(dst, None)?;
            if fsutil::reflink(image.file, dst)? {
                Ok(None)
            } else {
                Ok(Some(dst.clone()))
            }
        }
    }
}
