//! Digests that need no read of the image: the incremental hash cache, and
//! sidecar files written by `vmcast-gen hash` where the image was made.
//!
//! The cache is keyed on a file's identity and state: canonical path,
//! device, inode, size, and mtime and ctime in nanoseconds. Replacing a file
//! (new inode), writing to it (mtime and ctime), `touch` (mtime), truncating
//! it (size) or restoring an old mtime after a write (ctime, which no
//! user-space call can set back) all miss, and the file is read again.
//!
//! A sidecar is weaker by design: it records size, mtime and digest on the
//! build machine, and is trusted when size and mtime (to the second) still
//! match, because inode and ctime do not survive the trip to the release job,
//! nor do fractions of a second through most archive formats.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::inspect::ImageInfo;
use crate::model::{Combined, Digested, FileDigest, Sha256, Sha512};
use crate::warning::Warning;

const CACHE_FORMAT: &str = "vmcast-gen-hash-cache-3";
const SIDECAR_FORMAT: &str = "vmcast-gen-sidecar-3";
/// The largest sidecar read: a few hundred bytes are expected.
const SIDECAR_LIMIT: u64 = 64 << 10;

/// What identifies a file and its state, from one `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileState {
    /// The file this state is of.
    pub fn id(&self) -> crate::model::FileId {
        crate::model::FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// The same file with the same content as far as stat can tell: size
    /// and mtime. ctime is left out: a hard link into the output changes it.
    pub fn same_content(&self, other: &FileState) -> bool {
        self.id() == other.id() && self.size == other.size && self.mtime_ns == other.mtime_ns
    }

    pub fn of(meta: &Metadata) -> Self {
        let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
        FileState {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: String,
    entries: BTreeMap<String, CacheEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheEntry {
    state: FileState,
    sha256: String,
    /// Kept once computed, so the virt-builder index never needs it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha512: Option<String>,
    info: ImageInfo,
    /// The Vagrant box made of the image in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vagrant_box: Option<BoxEntry>,
    /// The LXD fingerprint taken in the same read, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lxd: Option<CachedCombined>,
    /// The zsync control file made of the image in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zsync: Option<ZsyncEntry>,
}

/// A [`Combined`] digest, as hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedCombined {
    prefix: String,
    sha256: String,
}

/// A Vagrant box's digest, and the mtime its members were given: a box
/// with another mtime has other bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoxEntry {
    mtime: u64,
    length: u64,
    sha256: String,
}

/// A zsync control file's digest, and the image name it was made for: it
/// names the image (`Filename`, `URL`), so another name gives other bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZsyncEntry {
    name: String,
    length: u64,
    sha256: String,
}

/// The cache file as written: [`CacheFile`], borrowed.
#[derive(Serialize)]
struct CacheFileOut<'a> {
    format: &'a str,
    entries: &'a BTreeMap<String, CacheEntry>,
}

/// The hash cache of one site.
#[derive(Debug)]
pub struct HashCache {
    path: PathBuf,
    old: BTreeMap<String, CacheEntry>,
    new: BTreeMap<String, CacheEntry>,
    /// The file's text as read or last written: a save that would write
    /// the same text (a rebuild where nothing changed) writes nothing.
    on_disk: Option<String>,
}

impl HashCache {
    /// The cache file of the site configured at `config` (canonical), in
    /// `dir`. Sites sharing a directory keep separate files.
    pub fn file_for(dir: &Path, config: &Path) -> PathBuf {
        let id = crate::model::Sha256::of(config.as_os_str().as_encoded_bytes()).to_hex();
        dir.join(format!("hashes-{}.json", &id[..16]))
    }

    /// Loads the cache; a missing file is an empty cache, and an unreadable,
    /// corrupt or foreign one is ignored with the returned warning.
    pub fn load(path: &Path) -> (Self, Option<Warning>) {
        let empty = |warning| {
            (
                HashCache {
                    path: path.to_path_buf(),
                    old: BTreeMap::new(),
                    new: BTreeMap::new(),
                    on_disk: None,
                },
                warning,
            )
        };
        if !path.exists() {
            return empty(None);
        }
        let parsed = fsutil::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| match serde_json::from_str::<CacheFile>(&text) {
                Ok(file) => Ok((file, text)),
                Err(e) => Err(e.to_string()),
            });
        match parsed {
            Ok((file, text)) if file.format == CACHE_FORMAT => (
                HashCache {
                    path: path.to_path_buf(),
                    old: file.entries,
                    new: BTreeMap::new(),
                    on_disk: Some(text),
                },
                None,
            ),
            Ok((file, _)) => empty(Some(Warning::file(
                path,
                format_args!(
                    "hash cache of unknown format {:?}; ignored, every image is hashed",
                    file.format
                ),
            ))),
            Err(e) => empty(Some(Warning::file(
                path,
                format_args!("hash cache is corrupt ({e}); ignored, every image is hashed"),
            ))),
        }
    }

    /// The cached digest and inspection of a file in exactly this state.
    pub fn get(&self, canonical: &Path, state: &FileState) -> Option<Digested> {
        let entry = self.old.get(&key(canonical))?;
        if entry.state != *state {
            return None;
        }
        let digest = FileDigest {
            length: state.size,
            sha256: Sha256::from_hex(&entry.sha256)?,
            sha512: match &entry.sha512 {
                Some(hex) => Some(Sha512::from_hex(hex)?),
                None => None,
            },
        };
        let lxd = match &entry.lxd {
            Some(c) => Some(Combined {
                prefix: Sha256::from_hex(&c.prefix)?,
                sha256: Sha256::from_hex(&c.sha256)?,
            }),
            None => None,
        };
        Some(Digested {
            digest,
            info: entry.info.clone(),
            lxd,
        })
    }

    /// The digest of the Vagrant box made, with members of `mtime`, of a
    /// file in exactly this state.
    pub fn get_box(&self, canonical: &Path, state: &FileState, mtime: u64) -> Option<FileDigest> {
        let entry = self.old.get(&key(canonical))?;
        let boxed = entry.vagrant_box.as_ref()?;
        if entry.state != *state || boxed.mtime != mtime {
            return None;
        }
        Some(FileDigest {
            length: boxed.length,
            sha256: Sha256::from_hex(&boxed.sha256)?,
            sha512: None,
        })
    }

    /// The digest of the zsync control file made, for an image named
    /// `name`, of a file in exactly this state.
    pub fn get_zsync(&self, canonical: &Path, state: &FileState, name: &str) -> Option<FileDigest> {
        let entry = self.old.get(&key(canonical))?;
        let zsync = entry.zsync.as_ref()?;
        if entry.state != *state || zsync.name != name {
            return None;
        }
        Some(FileDigest {
            length: zsync.length,
            sha256: Sha256::from_hex(&zsync.sha256)?,
            sha512: None,
        })
    }

    /// Records the zsync control file of a file this build recorded.
    pub fn insert_zsync(&mut self, canonical: &Path, name: &str, digest: &FileDigest) {
        if let Some(entry) = self.new.get_mut(&key(canonical)) {
            entry.zsync = Some(ZsyncEntry {
                name: name.to_owned(),
                length: digest.length,
                sha256: digest.sha256.to_hex(),
            });
        }
    }

    /// Records the Vagrant box of a file this build recorded.
    pub fn insert_box(&mut self, canonical: &Path, mtime: u64, digest: &FileDigest) {
        if let Some(entry) = self.new.get_mut(&key(canonical)) {
            entry.vagrant_box = Some(BoxEntry {
                mtime,
                length: digest.length,
                sha256: digest.sha256.to_hex(),
            });
        }
    }

    /// Records a digest for the next build.
    pub fn insert(&mut self, canonical: &Path, state: FileState, digested: &Digested) {
        let Digested { digest, info, lxd } = digested;
        self.new.insert(
            key(canonical),
            CacheEntry {
                state,
                sha256: digest.sha256.to_hex(),
                sha512: digest.sha512.map(|d| d.to_hex()),
                info: info.clone(),
                vagrant_box: None,
                zsync: None,
                lxd: lxd.map(|c| CachedCombined {
                    prefix: c.prefix.to_hex(),
                    sha256: c.sha256.to_hex(),
                }),
            },
        );
    }

    /// Takes a new state of a file this build recorded, when only its
    /// ctime moved: the same file, size and mtime. Making a hard link to a
    /// file and removing one move its ctime, and the build does both to an
    /// image it links into the output; its entry must hold the state the
    /// next build will see. A file whose size or mtime moved too keeps
    /// the state it was read in, and the next build reads it again.
    pub fn restat(&mut self, canonical: &Path, state: FileState) {
        if let Some(entry) = self.new.get_mut(&key(canonical))
            && entry.state.same_content(&state)
        {
            entry.state = state;
        }
    }

    /// Writes the entries of this build (only those: the file never grows
    /// with images long gone), atomically.
    pub fn save(&mut self) -> Result<()> {
        let file = CacheFileOut {
            format: CACHE_FORMAT,
            entries: &self.new,
        };
        // Compact: a warm build of thousands of images reads and writes it.
        let mut text = serde_json::to_string(&file).expect("the cache serializes");
        text.push('\n');
        if self.on_disk.as_ref() == Some(&text) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("cannot create the cache directory", dir, e))?;
        }
        fsutil::write_new_file(&self.path, text.as_bytes(), 0o644, true)?;
        self.on_disk = Some(text);
        Ok(())
    }
}

fn key(canonical: &Path) -> String {
    canonical.to_string_lossy().into_owned()
}

/// A digest recorded where the image was made. It is a hint about one
/// file and stands in for its digest only: what the image is (format,
/// virtual size) always comes from the image's own bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    format: String,
    name: String,
    size: u64,
    mtime_ns: i128,
    sha256: String,
    /// Written by `vmcast-gen hash --sha512`. A sidecar without it still
    /// stands in for the SHA-256, but an image the virt-builder index lists
    /// is then read for its SHA-512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha512: Option<String>,
}

pub fn sidecar_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(crate::media::SIDECAR_SUFFIX);
    s.into()
}

impl Sidecar {
    pub fn new(image: &Path, state: &FileState, digest: &FileDigest) -> Self {
        Sidecar {
            format: SIDECAR_FORMAT.into(),
            name: image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: digest.length,
            mtime_ns: state.mtime_ns,
            sha256: digest.sha256.to_hex(),
            sha512: digest.sha512.map(|d| d.to_hex()),
        }
    }

    pub fn write(&self, image: &Path) -> Result<PathBuf> {
        let path = sidecar_path(image);
        let mut text = serde_json::to_string_pretty(self).expect("a sidecar serializes");
        text.push('\n');
        fsutil::write_new_file(&path, text.as_bytes(), 0o644, true)?;
        Ok(path)
    }

    /// The sidecar of `image`, if there is one and it still describes the
    /// file: same name, size and mtime. `Err` is a warning for a sidecar
    /// that exists but cannot be used: a symbolic link, a FIFO or a device,
    /// anything over a few KiB, or text that does not describe the image.
    pub fn read(
        image: &Path,
        state: &FileState,
    ) -> Option<std::result::Result<FileDigest, Warning>> {
        let path = sidecar_path(image);
        std::fs::symlink_metadata(&path).ok()?;
        let text = match fsutil::read_regular(&path, false, SIDECAR_LIMIT)
            .and_then(|(bytes, _)| fsutil::text(&path, bytes))
        {
            Ok(text) => text,
            Err(e) => {
                return Some(Err(Warning {
                    path: None,
                    message: format!("{e}; the image is hashed instead"),
                }));
            }
        };
        let stale = |why: &str| -> Option<std::result::Result<FileDigest, Warning>> {
            Some(Err(Warning::file(
                &path,
                format_args!("{why}; the image is hashed instead"),
            )))
        };
        let sidecar: Sidecar = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => return stale(&format!("not a sidecar ({e})")),
        };
        let name = image.file_name().map(|n| n.to_string_lossy());
        if sidecar.format != SIDECAR_FORMAT || name.as_deref() != Some(sidecar.name.as_str()) {
            return stale("describes another file or format");
        }
        // Whole seconds: what archives and copy tools keep of an mtime.
        let secs = |ns: i128| ns.div_euclid(1_000_000_000);
        if sidecar.size != state.size || secs(sidecar.mtime_ns) != secs(state.mtime_ns) {
            return stale("size or mtime differ from the image's");
        }
        let Some(sha256) = Sha256::from_hex(&sidecar.sha256) else {
            return stale("invalid sha256");
        };
        let sha512 = match sidecar.sha512.as_deref().map(Sha512::from_hex) {
            Some(None) => return stale("invalid sha512"),
            Some(Some(d)) => Some(d),
            None => None,
        };
        Some(Ok(FileDigest {
            length: sidecar.size,
            sha256,
            sha512,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh cache (in `cache.json` of the returned directory) holding one
    /// entry: the file `img`, three bytes, in its current state.
    fn cache_with_one_entry() -> (tempfile::TempDir, PathBuf, FileState, Digested, HashCache) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("img");
        std::fs::write(&file, b"abc").unwrap();
        let state = FileState::of(&std::fs::metadata(&file).unwrap());
        let digested = Digested {
            digest: FileDigest {
                length: 3,
                sha256: crate::model::Sha256::of(b"abc"),
                sha512: Some(Sha512::of(b"abc")),
            },
            info: crate::inspect::inspect_bytes(b"abc", 4096).unwrap(),
            lxd: None,
        };
        let (mut cache, warning) = HashCache::load(&dir.path().join("cache.json"));
        assert!(warning.is_none());
        cache.insert(&file, state, &digested);
        (dir, file, state, digested, cache)
    }

    #[test]
    fn cache_serves_only_the_same_state() {
        let (dir, file, state, digested, mut cache) = cache_with_one_entry();
        let cache_path = dir.path().join("cache.json");
        cache.save().unwrap();
        let (cache, _) = HashCache::load(&cache_path);
        assert_eq!(cache.get(&file, &state), Some(digested.clone()));
        let touched = FileState {
            mtime_ns: state.mtime_ns + 1,
            ..state
        };
        assert_eq!(cache.get(&file, &touched), None);
        let moved = FileState {
            ino: state.ino + 1,
            ..state
        };
        assert_eq!(cache.get(&file, &moved), None);
    }

    #[test]
    fn restat_takes_a_new_ctime_but_no_new_content() {
        let (dir, file, state, digested, mut cache) = cache_with_one_entry();
        let cache_path = dir.path().join("cache.json");
        let linked = FileState {
            ctime_ns: state.ctime_ns + 1,
            ..state
        };
        cache.restat(&file, linked);
        cache.restat(
            &file,
            FileState {
                mtime_ns: state.mtime_ns + 1,
                ctime_ns: state.ctime_ns + 2,
                ..state
            },
        );
        cache.save().unwrap();
        let (cache, _) = HashCache::load(&cache_path);
        assert_eq!(cache.get(&file, &linked), Some(digested.clone()));
        assert_eq!(cache.get(&file, &state), None);
    }

    #[test]
    fn corrupt_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, "{not json").unwrap();
        let (cache, warning) = HashCache::load(&path);
        assert!(warning.unwrap().message.contains("hash cache is corrupt"));
        assert!(cache.old.is_empty());
    }
}
