//! Opening what a request names inside the site, and nothing outside it.
//!
//! Each component is opened relative to the directory before it with
//! `O_NOFOLLOW`, starting from the site's root: a symlink anywhere on the
//! way is refused, and the descriptor that passed the checks is the one
//! that is served, so nothing can be swapped in between.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// What a directory is answered with.
const INDEX: &[u8] = b"index.html";

/// A regular file of the site, open for reading.
pub struct Found {
    pub file: File,
    /// Its path in the site (`images/a/1/x.qcow2`, `index.html` for the
    /// root), which picks its media type and how long it may be cached.
    pub path: String,
}

/// The regular file that the request target names under `root`: the
/// percent-decoded path, with a directory meaning its `index.html`. `None`
/// for anything else: a `..` component, a symlink, a missing file, a
/// device or a FIFO.
pub fn open(root: &Path, target: &str) -> Option<Found> {
    let path = target.split(['?', '#']).next()?.strip_prefix('/')?;
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let mut parts = Vec::new();
    for part in decoded.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            p if p.contains(&0) => return None,
            p => parts.push(p),
        }
    }
    let mut dir = File::from(
        rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?,
    );
    let (last, dirs) = parts
        .split_last()
        .map_or((INDEX, &[][..]), |(l, d)| (*l, d));
    for part in dirs {
        dir = open_at(&dir, part, OFlags::DIRECTORY)?;
    }
    let file = open_at(&dir, last, OFlags::NONBLOCK | OFlags::NOCTTY)?;
    let meta = file.metadata().ok()?;
    let file = if meta.is_dir() {
        parts.push(INDEX);
        open_at(&file, INDEX, OFlags::NONBLOCK | OFlags::NOCTTY)?
    } else {
        file
    };
    if parts.is_empty() {
        parts.push(INDEX);
    }
    let path = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p))
        .collect::<Vec<_>>()
        .join("/");
    file.metadata()
        .ok()?
        .is_file()
        .then_some(Found { file, path })
}

/// `name` in `dir`, read-only, never through a symlink. `O_NONBLOCK` keeps
/// a FIFO from blocking the open; it changes nothing for a regular file.
fn open_at(dir: &File, name: &[u8], flags: OFlags) -> Option<File> {
    rustix::fs::openat(
        dir,
        OsStr::from_bytes(name),
        flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(File::from)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    fn read(found: Option<Found>) -> Option<(String, String)> {
        let mut found = found?;
        let mut text = String::new();
        found.file.read_to_string(&mut text).unwrap();
        Some((found.path, text))
    }

    #[test]
    fn serves_only_regular_files_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("site"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("images/a b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("images/a b/x.raw"), "image").unwrap();
        std::fs::write(outside.join("secret"), "secret").unwrap();
        symlink(outside.join("secret"), root.join("leak")).unwrap();
        symlink(&outside, root.join("leakdir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();

        let ok = |target: &str, path: &str, text: &str| {
            assert_eq!(
                read(open(&root, target)),
                Some((path.to_owned(), text.to_owned())),
                "{target}"
            );
        };
        ok("/", "index.html", "home");
        ok("/index.html?x=1#y", "index.html", "home");
        ok("/images/a%20b/x.raw", "images/a b/x.raw", "image");
        ok("/images//./a%20b/x.raw", "images/a b/x.raw", "image");
        for target in [
            "/leak",
            "/leakdir/secret",
            "/fifo",
            "/images",
            "/missing",
            "/../outside/secret",
            "/%2e%2e/outside/secret",
            "/images/..%2f..%2foutside/secret",
            "/x%00y",
            "index.html",
        ] {
            assert!(open(&root, target).is_none(), "{target} was served");
        }
    }
}
