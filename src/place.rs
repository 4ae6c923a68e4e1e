//! Where an image lands in the output besides being hashed: nowhere, a
//! copy (a reflink where the file system can), or a hard link. A copy that
//! needs bytes is written from the hashing read, so `for_read` only says
//! where that copy goes; a copy the previous build already made of the
//! same bytes is taken from the previous output by hard link.

use std::fs::{File, Metadata};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
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
        self.meta.permissions().mode() & 0o004 != 0
    }

    fn hard_link(&self, dst: &Path) -> Result<bool> {
        fsutil::hard_link(self.real, dst, FileId::of(self.meta))
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
/// whole), else reflinked or copied by the kernel.
pub fn unread(
    image: &Opened,
    place: &Placement,
    previous: impl FnOnce() -> Option<Previous>,
) -> Result<()> {
    match place {
        Placement::Nowhere => Ok(()),
        Placement::Link(dst) if image.world_readable() && image.hard_link(dst)? => Ok(()),
        Placement::Copy(dst) | Placement::Link(dst) => {
            if let Some(old) = previous()
                && fsutil::hard_link(&old.path, dst, old.id)?
            {
                return Ok(());
            }
            if fsutil::reflink(image.file, dst)? {
                Ok(())
            } else {
                fsutil::copy_published(image.file, image.meta.len(), image.real, dst)
            }
        }
    }
}

/// Places an image that is about to be hashed; returns where the hashing
/// read must write a copy, if it must.
pub fn for_read(image: &Opened, place: &Placement) -> Result<Option<PathBuf>> {
    match place {
        Placement::Nowhere => Ok(None),
        Placement::Link(dst) if image.world_readable() && image.hard_link(dst)? => Ok(None),
        Placement::Copy(dst) | Placement::Link(dst) => {
            if fsutil::reflink(image.file, dst)? {
                Ok(None)
            } else {
                Ok(Some(dst.clone()))
            }
        }
    }
}
