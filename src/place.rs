//! Where an image lands in the output besides being hashed: nowhere, a
//! copy (a reflink where the file system can), or a hard link. A copy that
//! needs bytes is written from the hashing read, so `for_read` only says
//! where that copy goes.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fsutil;

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

fn world_readable(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fsutil::metadata(path)?.permissions().mode() & 0o004 != 0)
}

/// Places an image whose digest is known: no user-space read.
pub fn unread(source: &Path, place: &Placement) -> Result<()> {
    match place {
        Placement::Nowhere => Ok(()),
        Placement::Link(dst) if world_readable(source)? && fsutil::hard_link(source, dst)? => {
            Ok(())
        }
        Placement::Copy(dst) | Placement::Link(dst) => {
            if fsutil::reflink(source, dst)? {
                Ok(())
            } else {
                fsutil::copy_published(source, dst)
            }
        }
    }
}

/// Places an image that is about to be hashed; returns where the hashing
/// read must write a copy, if it must.
pub fn for_read(source: &Path, place: &Placement) -> Result<Option<PathBuf>> {
    match place {
        Placement::Nowhere => Ok(None),
        Placement::Link(dst) if world_readable(source)? && fsutil::hard_link(source, dst)? => {
            Ok(None)
        }
        Placement::Copy(dst) | Placement::Link(dst) => {
            if fsutil::reflink(source, dst)? {
                Ok(None)
            } else {
                Ok(Some(dst.clone()))
            }
        }
    }
}
