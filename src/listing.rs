//! Directory listings remembered between builds, so that a walk of a tree
//! whose directories did not change reads none of them: one `statx` of a
//! directory stands in for the `openat`, `fstat`, two `getdents64` and
//! `close` of listing it again.
//!
//! Adding, removing or renaming an entry moves its directory's mtime and
//! ctime, and no call from user space sets a ctime back (`touch -d` moves
//! it to now), so a directory in the very state a listing was taken in
//! holds the very entries, each of the kind and the inode number listed
//! (which [`Lister::inodes`] says is the file's where it is). A listing is
//! only remembered when its directory's ctime is [`SETTLED`] older than
//! the listing, and never the root's (the spare's is renamed by every
//! build): a change within the file system clock's granularity of the one
//! before it would leave the times as they were (git's "racily clean"
//! index entries). What is remembered is per tree (its root's device and
//! inode), for the last [`TREES`] trees walked under one name: the spare
//! site is two trees taking turns.
//!
//! Only on file systems known to keep a directory's ctime so, answered by
//! the file system itself ([`TRUSTED`]): FAT's ctime and many FUSE file
//! systems' are the mtime or the birth time, which `touch -d` sets back,
//! and an NFS client answers a stat from attributes it cached up to a
//! minute ago. A directory on another device than the root (a mount point
//! inside the tree) is always listed.
//!
//! The memo lives in the hash cache's directory; `--no-cache` and
//! `--verify-cache` list everything. It only spares work: one that cannot
//! be read, parsed or written costs a walk its listings, nothing more.
//! It is trusted as the hash cache is (whoever can write the cache can
//! feed a build wrong digests too), but a name in a tree's listings that
//! is not one directory entry's (empty, `.`, `..`, or with a `/` or NUL)
//! discards that tree's whole: a walk never leaves its tree by it. A walk
//! parses only its own tree's listings; the others are kept as written.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::model::{FileId, FileState};

/// How much older than its listing a directory's last change must be for
/// the listing to be remembered: more than any file system's timestamp
/// granularity (FAT's is two seconds).
pub const SETTLED: i128 = 3_000_000_000;

/// overlayfs (`f_type`): a directory's `d_ino` is the inode number in the
/// layer the entry comes from, which need not be the one `stat` gives.
const OVERLAYFS: u64 = 0x794C_7630;

/// How many trees one memo file remembers: the spare is two trees taking
/// turns, and two outputs of one config make four.
const TREES: usize = 4;

/// The file systems a listing is remembered on (`statfs`'s `f_type`):
/// ext2/3/4, XFS, Btrfs, tmpfs, ZFS, F2FS and overlayfs (a container's
/// root).
const TRUSTED: [u64; 7] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x2FC1_2FC1,
    0xF2F5_2010,
    0x794C_7630,
];

/// The largest memo read: some 200 bytes a directory, so a million
/// directories' worth.
const MAX_MEMO: u64 = 256 << 20;

const FORMAT: &str = "vmcast-gen listings 6";

/// What an entry of a directory is, as its directory says (`d_type`), not
/// following a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "f")]
    File,
    #[serde(rename = "l")]
    Symlink,
    /// A FIFO, socket or device.
    #[serde(rename = "o")]
    Other,
}

impl Kind {
    pub fn of(file_type: fs::FileType) -> Kind {
        if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File
        } else if file_type.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        }
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
    /// Its inode number, as the directory gives it (`d_ino`): its file's
    /// where [`Lister::inodes`] says so.
    pub ino: u64,
}

/// A directory's state, from its `lstat`: the file's ([`FileState`]:
/// which one, its size, when it last changed) and its mode, written as
/// `[[dev, ino, size, mtime, ctime], mode]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct DirState(FileState, u32);

impl DirState {
    fn of(meta: &Metadata) -> DirState {
        DirState(FileState::of(meta), meta.mode())
    }
}

/// A directory's state and entries. Its names are borrowed from the
/// memo's bytes, as read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Listing<'a>(
    DirState,
    /// Sorted by name, each with its inode number; only listings whose
    /// names are all UTF-8.
    #[serde(borrow)]
    Vec<(&'a str, Kind, u64)>,
    /// Whether this walk took it: a remembered listing stays where it was
    /// read, not moved to a map of its own (ten thousand inserts).
    #[serde(skip)]
    bool,
);

/// The listings of one tree, by path relative to its root.
type Dirs<'a> = BTreeMap<&'a str, Listing<'a>>;

/// Whether every name `dirs` lists could be one entry of a directory.
fn names_are_entries(dirs: &Dirs) -> bool {
    dirs.values().flat_map(|l| &l.1).all(|(name, ..)| {
        !name.is_empty() && *name != "." && *name != ".." && !name.contains(['/', '\0'])
    })
}

/// One tree of a memo: its root, and its listings ([`Dirs`]) as postcard
/// bytes, parsed only when a walk of that tree asks for them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Tree<'a> {
    root: FileId,
    /// Written as bytes, as it is read: a slice of `u8` is otherwise
    /// written as a sequence, which only postcard writes alike.
    #[serde(serialize_with = "as_bytes")]
    dirs: &'a [u8],
}

fn as_bytes<S: serde::Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// The memo as written, with postcard, not JSON: the spare's memo of
/// 10,000 releases as JSON, 3.5 MB, took a warm rebuild 15 ms of CPU to
/// parse, and skipping the other tree's listings half of that. Read, it
/// borrows every name from the file's bytes ([`Listings`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct MemoFile<'a> {
    format: &'a str,
    #[serde(borrow)]
    trees: Vec<Tree<'a>>,
}

/// A memo file's bytes, which the [`Lister`] of a walk borrows from.
pub struct Listings {
    /// The file (none, or a file system not [`TRUSTED`]: nothing is
    /// remembered).
    file: Option<PathBuf>,
    bytes: Vec<u8>,
    /// Whether the file system's `d_ino` is its `st_ino`.
    inodes: bool,
}

impl Listings {
    /// The memo in `file`, for a walk of the tree at `root`.
    pub fn read(file: Option<&Path>, root: &Path) -> Listings {
        let kind = rustix::fs::statfs(root).map(|fs| (fs.f_type as u64) & 0xFFFF_FFFF);
        let trusted = kind.is_ok_and(|kind| TRUSTED.contains(&kind));
        let file = file.filter(|_| trusted);
        Listings {
            inodes: trusted && kind != Ok(OVERLAYFS),
            bytes: file
                .and_then(|f| fsutil::read_memo(f, MAX_MEMO))
                .unwrap_or_default(),
            file: file.map(Path::to_path_buf),
        }
    }
}

/// A listing taken anew: the directory's state, and its entries, each
/// with its kind and inode number.
type Taken = (DirState, Vec<(String, Kind, u64)>);

/// The listings of one walk of a tree: those remembered from before,
/// and those taken now, to remember for the next walk ([`Lister::save`]).
pub struct Lister<'a> {
    file: Option<&'a Path>,
    root: FileId,
    /// What the memo held for this tree; those taken are marked so.
    old: Dirs<'a>,
    /// Listings taken anew, by path.
    new: BTreeMap<String, Taken>,
    /// Whether an entry's inode number is the one `stat` gives.
    inodes: bool,
    /// The memo's other trees, kept as they were.
    others: Vec<Tree<'a>>,
    /// Whether a listing was taken anew, or one the memo held for this
    /// tree found stale, or the tree's discarded.
    changed: bool,
    /// Listings taken before this, in ns since the epoch, minus
    /// [`SETTLED`]: a directory that changed later is not remembered.
    settled_before: i128,
}

impl<'a> Lister<'a> {
    /// A lister of the tree whose root's `stat` is `meta`, remembering in
    /// `memo` ([`Listings::read`] for that root).
    pub fn new(memo: &'a Listings, meta: &Metadata) -> Lister<'a> {
        let root = FileId::of(meta);
        let mut trees = postcard::from_bytes::<MemoFile>(&memo.bytes)
            .ok()
            .filter(|memo| memo.format == FORMAT)
            .map(|memo| memo.trees)
            .unwrap_or_default();
        // A tree with a name that is not one entry's is discarded whole,
        // and written anew.
        let mut changed = false;
        let old = match trees.iter().position(|t| t.root == root) {
            Some(i) => postcard::from_bytes::<Dirs>(trees.remove(i).dirs)
                .ok()
                .filter(names_are_entries)
                .unwrap_or_else(|| {
                    changed = true;
                    Dirs::new()
                }),
            None => Dirs::new(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Lister {
            file: memo.file.as_deref(),
            root,
            old,
            new: BTreeMap::new(),
            inodes: memo.inodes,
            others: trees,
            changed,
            settled_before: now - SETTLED,
        }
    }

    /// Whether an entry's `ino` is the inode number its file's `stat`
    /// gives: on the file systems whose listings are remembered
    /// ([`TRUSTED`]), but overlayfs.
    pub fn inodes(&self) -> bool {
        self.inodes
    }

    /// The entries of the directory `dir`, `rel` in the tree, whose
    /// `lstat` is `meta`, sorted by name: remembered, when the directory
    /// is in the state they were taken in; else read.
    pub fn list(&mut self, dir: &Path, rel: &str, meta: &Metadata) -> io::Result<Vec<Entry>> {
        let state = DirState::of(meta);
        match self.old.get_mut(rel) {
            Some(listing) if listing.0 == state => {
                listing.2 = true;
                let entries = listing
                    .1
                    .iter()
                    .map(|(name, kind, ino)| Entry {
                        name: (*name).into(),
                        kind: *kind,
                        ino: *ino,
                    })
                    .collect();
                return Ok(entries);
            }
            Some(_) => {
                self.old.remove(rel);
                self.changed = true;
            }
            None => {}
        }
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            entries.push(Entry {
                name: entry.file_name(),
                kind: Kind::of(entry.file_type()?),
                ino: std::os::unix::fs::DirEntryExt::ino(&entry),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Option<Vec<(String, Kind, u64)>> = entries
            .iter()
            .map(|e| Some((e.name.to_str()?.to_owned(), e.kind, e.ino)))
            .collect();
        if let Some(names) = names
            && !rel.is_empty()
            && state.0.dev == self.root.dev
            && state.0.ctime_ns < self.settled_before
        {
            self.new.insert(rel.to_owned(), (state, names));
            self.changed = true;
        }
        Ok(entries)
    }

    /// Remembers this walk's listings, with the other trees', unless they
    /// are what was remembered: every listing taken from the memo, none
    /// taken anew, none left behind. A memo not written is no error: the
    /// next walk lists what it would have held.
    pub fn save(self) {
        let Some(file) = self.file else {
            return;
        };
        if !self.changed && self.old.values().all(|listing| listing.2) {
            return;
        }
        let new = self.new.iter().map(|(rel, (state, names))| {
            let names = (names.iter()).map(|(name, kind, ino)| (name.as_str(), *kind, *ino));
            (rel.as_str(), Listing(*state, names.collect(), true))
        });
        let mut dirs: Dirs = self
            .old
            .into_iter()
            .filter(|(_, listing)| listing.2)
            .collect();
        dirs.extend(new);
        let dirs = postcard::to_allocvec(&dirs).expect("listings serialize");
        let mut trees = vec![Tree {
            root: self.root,
            dirs: &dirs,
        }];
        trees.extend(self.others.into_iter().take(TREES - 1));
        let memo = MemoFile {
            format: FORMAT,
            trees,
        };
        fsutil::write_memo(
            file,
            &postcard::to_allocvec(&memo).expect("listings serialize"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk of `root` that lists `dirs` (relative), every directory
    /// taken as settled; how many it took from the memo.
    fn walk(memo: &Path, root: &Path, dirs: &[&str]) -> usize {
        let memo = Listings::read(Some(memo), root);
        let mut lister = Lister::new(&memo, &fs::symlink_metadata(root).unwrap());
        lister.settled_before = i128::MAX;
        for rel in dirs {
            let dir = root.join(rel);
            lister
                .list(&dir, rel, &fs::symlink_metadata(&dir).unwrap())
                .unwrap();
        }
        let taken = lister.old.values().filter(|listing| listing.2).count();
        lister.save();
        taken
    }

    /// Listings taken from the memo are remembered again without a write,
    /// one listed twice too; one found stale is listed anew, and the memo
    /// then written holds it beside those taken as they were.
    #[test]
    fn taken_listings_stay_remembered_and_a_stale_one_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        for dir in ["a", "b"] {
            fs::create_dir_all(root.join(dir)).unwrap();
            fs::write(root.join(dir).join("file"), dir).unwrap();
        }
        let memo = tmp.path().join("memo.json");
        assert_eq!(walk(&memo, &root, &["a", "b"]), 0);
        let written = fs::read(&memo).unwrap();
        let state = FileState::of(&fs::metadata(&memo).unwrap());

        assert_eq!(walk(&memo, &root, &["a", "b"]), 2);
        assert_eq!(FileState::of(&fs::metadata(&memo).unwrap()), state);
        // A directory listed twice in one walk is taken once, and kept.
        assert_eq!(walk(&memo, &root, &["a", "a", "b"]), 2);
        assert_eq!(FileState::of(&fs::metadata(&memo).unwrap()), state);

        fs::write(root.join("b/added"), "b").unwrap();
        assert_eq!(walk(&memo, &root, &["a", "b"]), 1);
        assert_ne!(fs::read(&memo).unwrap(), written);
        assert_eq!(walk(&memo, &root, &["a", "b"]), 2);
    }
}
