//! Digests that need no read of the image: the incremental hash cache, and
//! sidecar files written by `vmcast-gen hash` where the image was made.
//!
//! The cache is keyed on a file's identity and state: canonical path,
//! device, inode, size, and mtime and ctime in nanoseconds. Replacing a file
//! (new inode), writing to it (mtime and ctime), `touch` (mtime), truncating
//! it (size) or restoring an old mtime after a write (ctime, which no
//! user-space call can set back) all miss, and the file is read again.
//!
//! Besides the images' digests it remembers what a build made of its
//! inputs, each only as made by the very program now running (its
//! executable in the same state), else they are forgotten: the
//! signature of each file that never changes (an archive), keyed by the
//! digest of the key, the trusted comment and the bytes signed, so an
//! archive is signed once, not on every build; and the digest of each
//! page or archive it rendered, keyed by the digest of what it was
//! rendered from (`render::Inputs`), so that one whose inputs did not
//! change is taken as the last build left it, not rendered again; and the
//! states of the files the last builds published and may find unchanged
//! (archives and their signatures, control files, boxes, copies of
//! images), by the digest of their bytes, so that the spare's copy is
//! kept with one stat instead of a read.
//!
//! A sidecar is weaker by design: it records size, mtime and digest on the
//! build machine, and is trusted when size and mtime (to the second) still
//! match, because inode and ctime do not survive the trip to the release job,
//! nor do fractions of a second through most archive formats.
//!
//! What the scan made of each `release.toml` (its text, its notes as HTML,
//! its release's plan) is remembered beside the cache, by `scan`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::inspect::ImageInfo;
pub use crate::model::FileState;
use crate::model::{Combined, Digested, FileDigest, Sha256, Sha512};
use crate::sign::PublicKey;
use crate::warning::Warning;

const CACHE_FORMAT: &str = "vmcast-gen-hash-cache-8";
/// The formats written as JSON, in `hashes-<id>.json`: before the cache
/// was written with postcard (7), before the files made or copied into
/// the output were remembered by their digest, not as entries of their
/// own (6), before published files' states were remembered and the notes
/// files moved to the scan's memo (5), before rendered files were
/// remembered (4) and before notes were (3). What they hold is read as it
/// is, but for the notes, and before 7 each entry's state is taken to
/// hold its digest's bytes: an upgrade neither reads nor copies an image
/// again.
const OLDER_FORMATS: [&str; 5] = [
    "vmcast-gen-hash-cache-7",
    "vmcast-gen-hash-cache-6",
    "vmcast-gen-hash-cache-5",
    "vmcast-gen-hash-cache-4",
    "vmcast-gen-hash-cache-3",
];
/// The largest cache read: some 600 bytes an image.
const MAX_CACHE: u64 = 1 << 30;
const SIDECAR_FORMAT: &str = "vmcast-gen-sidecar-3";
/// The largest sidecar read: a few hundred bytes are expected.
const SIDECAR_LIMIT: u64 = 64 << 10;

/// A cache file of one of the [`OLDER_FORMATS`], as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OlderFile {
    format: String,
    /// The executable that made what is remembered besides the digests.
    #[serde(default)]
    program: Option<FileState>,
    entries: BTreeMap<String, CacheEntry>,
    /// Where caches before format 6 kept the notes files read: skipped.
    #[serde(default)]
    #[allow(dead_code)]
    notes: serde::de::IgnoredAny,
    #[serde(default)]
    signatures: BTreeMap<Sha256, String>,
    #[serde(default)]
    rendered: BTreeMap<Sha256, RenderedEntry>,
    #[serde(default)]
    published: BTreeMap<Sha256, Vec<FileState>>,
}

/// What one build remembers for the next.
///
/// The cache file holds it with postcard, not JSON (the cache of 10,000
/// images as JSON, 6 MB, took a warm rebuild 20 ms of CPU to parse): its
/// format, then the program that made what is remembered besides the
/// digests (`Option<FileState>`), then this, the entries last:
/// `tests/it/cache.rs` reads and edits the rest.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// Signature files, by the digest of what made them ([`Signed`]).
    signatures: BTreeMap<Sha256, String>,
    /// The digests of rendered files, by the digest of their inputs.
    rendered: BTreeMap<Sha256, RenderedEntry>,
    /// The states of published files known to hold the bytes of a
    /// SHA-256, by it, sorted.
    published: BTreeMap<Sha256, Vec<FileState>>,
    /// Images, by canonical path.
    entries: BTreeMap<String, CacheEntry>,
}

/// A file rendered from inputs of one digest: its length and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderedEntry {
    length: u64,
    sha256: Sha256,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheEntry {
    state: FileState,
    sha256: Sha256,
    /// Kept once computed, so the virt-builder index never needs it again.
    #[serde(default)]
    sha512: Option<Sha512>,
    info: ImageInfo,
    /// The Vagrant box made of the image in this state.
    #[serde(default)]
    vagrant_box: Option<BoxEntry>,
    /// The LXD fingerprint taken in the same read, when one was asked for.
    #[serde(default)]
    lxd: Option<Combined>,
    /// The zsync control file made of the image in this state.
    #[serde(default)]
    zsync: Option<ZsyncEntry>,
}

/// A Vagrant box's digest, and the mtime its members were given: a box
/// with another mtime has other bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoxEntry {
    mtime: u64,
    length: u64,
    sha256: Sha256,
}

/// A zsync control file's digest, and the image name it was made for: it
/// names the image (`Filename`, `URL`), so another name gives other bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZsyncEntry {
    name: String,
    length: u64,
    sha256: Sha256,
}

/// Adds `state` to the sorted states known to hold the bytes of `sha256`.
fn add_state(published: &mut BTreeMap<Sha256, Vec<FileState>>, sha256: Sha256, state: FileState) {
    let states = published.entry(sha256).or_default();
    if let Err(at) = states.binary_search(&state) {
        states.insert(at, state);
    }
}

/// A cache file of this format: its format, then the program and the
/// [`Record`]. Of another format, only the format is read.
fn read(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    let (format, rest) = postcard::take_from_bytes::<String>(bytes).map_err(|e| e.to_string())?;
    let (program, record) = match format == CACHE_FORMAT {
        true => postcard::from_bytes(rest).map_err(|e| e.to_string())?,
        false => Default::default(),
    };
    Ok(Loaded {
        format,
        program,
        record,
        size: bytes.len() as u64,
    })
}

/// A cache file of one of the [`OLDER_FORMATS`] (or another JSON one: its
/// format says).
fn read_older(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    let file = serde_json::from_slice::<OlderFile>(bytes).map_err(|e| e.to_string())?;
    if file.format == CACHE_FORMAT {
        return Err(format!("{CACHE_FORMAT} is never JSON"));
    }
    let mut published = file.published;
    if file.format != OLDER_FORMATS[0] {
        // Where a cache before format 7 kept the files made or copied
        // into the output: keeping them spares an upgrade a copy of every
        // image.
        for entry in file.entries.values() {
            add_state(&mut published, entry.sha256, entry.state);
        }
    }
    Ok(Loaded {
        format: file.format,
        program: file.program,
        record: Record {
            signatures: file.signatures,
            rendered: file.rendered,
            published,
            entries: file.entries,
        },
        size: bytes.len() as u64,
    })
}

/// The hash cache of one site.
#[derive(Debug)]
pub struct HashCache {
    path: PathBuf,
    /// What the last build recorded; what it made besides the digests
    /// only if this very program recorded it.
    old: Record,
    new: Record,
    /// This program's executable, when it can be told: without it,
    /// nothing is remembered but the digests.
    program: Option<FileState>,
    /// Whether the file holds `old` as this program writes it: a save
    /// that would write it again (a rebuild where nothing changed) writes
    /// nothing.
    current: bool,
    /// The file's bytes as this build last wrote them.
    written: Option<Vec<u8>>,
    /// The file's size as loaded or last written.
    size: u64,
    /// The JSON file of an older format beside the cache (read where the
    /// cache is missing), which the first save removes, with the listings
    /// memos of its time.
    older: Option<PathBuf>,
}

/// What a cache file held: its format, the program that wrote it, and
/// what that build recorded; and the file's size.
struct Loaded {
    format: String,
    program: Option<FileState>,
    record: Record,
    size: u64,
}

impl HashCache {
    /// The cache file of the site configured at `config` (canonical), in
    /// `dir`. Sites sharing a directory keep separate files.
    pub fn file_for(dir: &Path, config: &Path) -> PathBuf {
        let id = crate::model::Sha256::of(config.as_os_str().as_encoded_bytes()).to_hex();
        dir.join(format!("hashes-{}.cache", &id[..16]))
    }

    /// The file beside the cache file `cache` that remembers the directory
    /// listings of the tree `tree` ([`crate::listing`]).
    pub fn listings_file(cache: &Path, tree: &str) -> PathBuf {
        cache.with_extension(format!("{tree}-listings"))
    }

    /// The file beside the cache file `cache` that remembers the releases'
    /// plans ([`crate::scan::Plans`]).
    pub fn plans_file(cache: &Path) -> PathBuf {
        cache.with_extension("plans")
    }

    /// Loads the cache (or, when there is none, the JSON file of an
    /// [older format](OLDER_FORMATS) beside it); a missing file is an
    /// empty cache, and an unreadable, corrupt or foreign one is ignored
    /// with the returned warning.
    pub fn load(path: &Path) -> (Self, Option<Warning>) {
        let program = fsutil::program();
        let older = Some(path.with_extension("json")).filter(|o| o != path && o.exists());
        let from = match path.exists() {
            true => Some(path.to_path_buf()),
            false => older.clone(),
        };
        let mut cache = HashCache {
            path: path.to_path_buf(),
            old: Record::default(),
            new: Record::default(),
            program,
            current: false,
            written: None,
            size: 0,
            older,
        };
        let Some(from) = from.as_deref() else {
            return (cache, None);
        };
        let loaded = match fsutil::read_regular(from, true, MAX_CACHE) {
            // Every older format is JSON, an object; this one starts with
            // its format's length.
            Ok((bytes, _)) if bytes.first() == Some(&b'{') => read_older(&bytes),
            Ok((bytes, _)) => read(&bytes),
            Err(e) => Err(e.to_string()),
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                let warning = Warning::file(
                    from,
                    format_args!("hash cache is corrupt ({e}); ignored, every image is hashed"),
                );
                return (cache, Some(warning));
            }
        };
        if loaded.format != CACHE_FORMAT && !OLDER_FORMATS.contains(&loaded.format.as_str()) {
            let warning = Warning::file(
                from,
                format_args!(
                    "hash cache of unknown format {:?}; ignored, every image is hashed",
                    loaded.format
                ),
            );
            return (cache, Some(warning));
        }
        let ours = program.is_some() && loaded.program == program;
        let mut old = loaded.record;
        if !ours {
            old.signatures.clear();
            old.rendered.clear();
        }
        cache.old = old;
        // An older file left beside (by an older vmcast-gen run since) is
        // removed by the first save.
        cache.current = ours && loaded.format == CACHE_FORMAT && cache.older.is_none();
        cache.size = loaded.size;
        (cache, None)
    }

    /// The cached digest and inspection of a file in exactly this state.
    pub fn get(&self, canonical: &Path, state: &FileState) -> Option<Digested> {
        let entry = self.old.entries.get(key(canonical).as_ref())?;
        if entry.state != *state {
            return None;
        }
        let digest = FileDigest {
            length: state.size,
            sha256: entry.sha256,
            sha512: entry.sha512,
        };
        Some(Digested {
            digest,
            info: entry.info.clone(),
            lxd: entry.lxd,
        })
    }

    /// The digest of the Vagrant box made, with members of `mtime`, of a
    /// file in exactly this state.
    pub fn get_box(&self, canonical: &Path, state: &FileState, mtime: u64) -> Option<FileDigest> {
        let entry = self.old.entries.get(key(canonical).as_ref())?;
        let boxed = entry.vagrant_box.as_ref()?;
        if entry.state != *state || boxed.mtime != mtime {
            return None;
        }
        Some(FileDigest {
            length: boxed.length,
            sha256: boxed.sha256,
            sha512: None,
        })
    }

    /// The digest of the zsync control file made, for an image named
    /// `name`, of a file in exactly this state.
    pub fn get_zsync(&self, canonical: &Path, state: &FileState, name: &str) -> Option<FileDigest> {
        let entry = self.old.entries.get(key(canonical).as_ref())?;
        let zsync = entry.zsync.as_ref()?;
        if entry.state != *state || zsync.name != name {
            return None;
        }
        Some(FileDigest {
            length: zsync.length,
            sha256: zsync.sha256,
            sha512: None,
        })
    }

    /// Records the zsync control file of a file this build recorded.
    pub fn insert_zsync(&mut self, canonical: &Path, name: &str, digest: &FileDigest) {
        if let Some(entry) = self.new.entries.get_mut(key(canonical).as_ref()) {
            entry.zsync = Some(ZsyncEntry {
                name: name.to_owned(),
                length: digest.length,
                sha256: digest.sha256,
            });
        }
    }

    /// Records the Vagrant box of a file this build recorded.
    pub fn insert_box(&mut self, canonical: &Path, mtime: u64, digest: &FileDigest) {
        if let Some(entry) = self.new.entries.get_mut(key(canonical).as_ref()) {
            entry.vagrant_box = Some(BoxEntry {
                mtime,
                length: digest.length,
                sha256: digest.sha256,
            });
        }
    }

    /// Records a digest for the next build.
    pub fn insert(&mut self, canonical: &Path, state: FileState, digested: &Digested) {
        let Digested { digest, info, lxd } = digested;
        self.new.entries.insert(
            key(canonical).into_owned(),
            CacheEntry {
                state,
                sha256: digest.sha256,
                sha512: digest.sha512,
                info: info.clone(),
                vagrant_box: None,
                zsync: None,
                lxd: *lxd,
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
        if let Some(entry) = self.new.entries.get_mut(key(canonical).as_ref())
            && entry.state.same_content(&state)
        {
            entry.state = state;
        }
    }

    /// The signature file this program made of what `signed` digests, if
    /// the last build remembered it.
    pub fn signature(&self, signed: &Signed) -> Option<&str> {
        self.old.signatures.get(&signed.0).map(String::as_str)
    }

    /// Remembers a signature file this build published, for the next one.
    pub fn remember_signature(&mut self, signed: Signed, file: String) {
        if self.program.is_some() {
            self.new.signatures.insert(signed.0, file);
        }
    }

    /// The length and digest of the file this program rendered from
    /// inputs of digest `inputs`, if the last build remembered it.
    pub fn rendered(&self, inputs: &Sha256) -> Option<FileDigest> {
        let entry = self.old.rendered.get(inputs)?;
        Some(FileDigest {
            length: entry.length,
            sha256: entry.sha256,
            sha512: None,
        })
    }

    /// Remembers the length and digest of a file this build rendered from
    /// inputs of digest `inputs`, for the next one.
    pub fn remember_rendered(&mut self, inputs: &Sha256, length: u64, sha256: &Sha256) {
        if self.program.is_some() {
            let entry = RenderedEntry {
                length,
                sha256: *sha256,
            };
            self.new.rendered.insert(*inputs, entry);
        }
    }

    /// Whether the last build left (or found) a published file in exactly
    /// `state` holding bytes of `sha256`: a file in the same state holds
    /// the same bytes.
    pub fn holds(&self, sha256: &Sha256, state: &FileState) -> bool {
        (self.old.published.get(sha256)).is_some_and(|states| states.contains(state))
    }

    /// Remembers again every state the last build knew to hold bytes of
    /// `sha256`: a file found in one of them was kept as it was.
    pub fn keep_holding(&mut self, sha256: &Sha256) {
        let old = self.old.published.get(sha256).cloned();
        for state in old.into_iter().flatten() {
            self.remember_holding(sha256, state);
        }
    }

    /// Remembers that a published file in `state` holds bytes of `sha256`.
    pub fn remember_holding(&mut self, sha256: &Sha256, state: FileState) {
        add_state(&mut self.new.published, *sha256, state);
    }

    /// The size of the cache file, as loaded or last written: about what
    /// saving it costs.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes what this build recorded (only that: the file never grows
    /// with images long gone), atomically, unless the file holds it
    /// already. The first save after a cache of an older format was
    /// loaded removes that file, and the listings memos of its time.
    pub fn save(&mut self) -> Result<()> {
        if self.current && self.new == self.old {
            return Ok(());
        }
        let mut bytes = postcard::to_allocvec(CACHE_FORMAT).expect("the cache serializes");
        bytes =
            postcard::to_extend(&(self.program, &self.new), bytes).expect("the cache serializes");
        if self.written.as_ref() == Some(&bytes) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("cannot create the cache directory", dir, e))?;
        }
        fsutil::write_new_file(&self.path, &bytes, 0o644, true)?;
        // Only files that spare work: one left behind costs nothing.
        if let Some(older) = self.older.take() {
            let listings =
                ["releases", "spare"].map(|t| older.with_extension(format!("{t}-listings.json")));
            for file in listings.iter().chain([&older]) {
                let _ = fsutil::remove_file_if_exists(file);
            }
        }
        self.current = false;
        self.size = bytes.len() as u64;
        self.written = Some(bytes);
        Ok(())
    }
}

/// What a signature is made of, as one digest: the public key it is made
/// with (a signer whose public key is this one makes the same signature:
/// Ed25519 is deterministic), its trusted comment and the digest of the
/// bytes signed, each field of a fixed length or preceded by its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed(Sha256);

impl Signed {
    /// `data` is the SHA-256 of the bytes signed.
    pub fn of(key: &PublicKey, trusted_comment: &str, data: &Sha256) -> Signed {
        let mut fed = Vec::with_capacity(128 + trusted_comment.len());
        fed.extend_from_slice(b"vmcast-gen signature\0");
        fed.extend_from_slice(&key.key_id.0);
        fed.extend_from_slice(key.key.as_bytes());
        fed.extend_from_slice(&(trusted_comment.len() as u64).to_le_bytes());
        fed.extend_from_slice(trusted_comment.as_bytes());
        fed.extend_from_slice(&data.0);
        Signed(Sha256::of(&fed))
    }
}

fn key(canonical: &Path) -> std::borrow::Cow<'_, str> {
    fsutil::path_text(canonical)
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

    /// A fresh cache (in `hashes.cache` of the returned directory) holding one
    /// entry: the file `img`, three bytes, in its current state, with an
    /// LXD fingerprint.
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
            lxd: Some(Combined {
                prefix: Sha256::of(b"tar"),
                sha256: Sha256::of(b"tarabc"),
            }),
        };
        let (mut cache, warning) = HashCache::load(&dir.path().join("hashes.cache"));
        assert!(warning.is_none());
        cache.insert(&file, state, &digested);
        (dir, file, state, digested, cache)
    }

    /// [`cache_with_one_entry`], saved: the directory, the cache file, the
    /// image, its state and its digests.
    fn saved_with_one_entry() -> (tempfile::TempDir, PathBuf, PathBuf, FileState, Digested) {
        let (dir, file, state, digested, mut cache) = cache_with_one_entry();
        cache.save().unwrap();
        let cache_path = dir.path().join("hashes.cache");
        (dir, cache_path, file, state, digested)
    }

    /// Rewrites the cache file at `path` as JSON, what it holds as the
    /// [older](OLDER_FORMATS) `format` wrote it, `edit`ed.
    fn rewrite_as(path: &Path, format: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        let (cache, warning) = HashCache::load(path);
        assert!(warning.is_none());
        let Record {
            signatures,
            rendered,
            published,
            entries,
        } = cache.old;
        let mut text = serde_json::json!({
            "format": format,
            "program": cache.program,
            "entries": entries,
            "signatures": signatures,
            "rendered": rendered,
            "published": published,
        });
        edit(&mut text);
        std::fs::write(path, text.to_string()).unwrap();
    }

    #[test]
    fn cache_serves_only_the_same_state() {
        let (_dir, cache_path, file, state, digested) = saved_with_one_entry();
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
        let cache_path = dir.path().join("hashes.cache");
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

    /// A cache of format 7, JSON in `hashes-<id>.json`, is read where the
    /// cache is missing, whole; the first save removes it, and the
    /// listings memos of its time.
    #[test]
    fn a_cache_of_format_7_beside_is_read_and_then_removed() {
        let (dir, cache_path, file, state, digested) = saved_with_one_entry();
        let older = cache_path.with_extension("json");
        let listings = older.with_extension("spare-listings.json");
        std::fs::write(&listings, "{}").unwrap();
        let (mut cache, _) = HashCache::load(&cache_path);
        cache.insert(&file, state, &digested);
        cache.remember_rendered(&Sha256::of(b"inputs"), 1, &Sha256::of(b"x"));
        cache.save().unwrap();
        rewrite_as(&cache_path, OLDER_FORMATS[0], |_| {});
        std::fs::rename(&cache_path, &older).unwrap();

        let (mut cache, warning) = HashCache::load(&cache_path);
        assert!(warning.is_none());
        assert_eq!(cache.get(&file, &state), Some(digested.clone()));
        assert!(cache.rendered(&Sha256::of(b"inputs")).is_some());
        assert!(!cache.holds(&digested.digest.sha256, &state));
        assert!(!cache.current);
        cache.insert(&file, state, &digested);
        cache.save().unwrap();
        assert!(!older.exists() && !listings.exists());
        let (cache, _) = HashCache::load(&cache_path);
        assert!(cache.current);
        assert_eq!(cache.get(&file, &state), Some(digested.clone()));

        // One written again beside it (by an older vmcast-gen run since)
        // is not read, and the next save removes it.
        std::fs::write(&older, "{}").unwrap();
        let (mut cache, warning) = HashCache::load(&cache_path);
        assert!(warning.is_none() && !cache.current);
        assert_eq!(cache.get(&file, &state), Some(digested.clone()));
        cache.insert(&file, state, &digested);
        cache.save().unwrap();
        assert!(!older.exists());
        drop(dir);
    }

    #[test]
    fn a_cache_of_format_3_keeps_its_image_entries() {
        let (_dir, cache_path, file, state, digested) = saved_with_one_entry();
        rewrite_as(&cache_path, OLDER_FORMATS[4], |text| {
            text.as_object_mut().unwrap().remove("program");
        });
        let (cache, warning) = HashCache::load(&cache_path);
        assert!(warning.is_none());
        assert_eq!(cache.get(&file, &state), Some(digested));
        assert!(!cache.current);
    }

    /// A cache of format 6 kept the files made or copied into the output
    /// as entries of their own: each entry's state is taken to hold its
    /// digest's bytes, so an upgrade takes them as they are.
    #[test]
    fn a_cache_of_format_6_holds_the_states_of_its_entries() {
        let (_dir, cache_path, file, state, digested) = saved_with_one_entry();
        let (cache, _) = HashCache::load(&cache_path);
        assert!(!cache.holds(&digested.digest.sha256, &state));
        rewrite_as(&cache_path, OLDER_FORMATS[1], |_| {});
        let (cache, warning) = HashCache::load(&cache_path);
        assert!(warning.is_none());
        assert!(cache.holds(&digested.digest.sha256, &state));
        assert_eq!(cache.get(&file, &state), Some(digested));
    }

    /// Digests are read into their types: a cache with one that is not
    /// hex is corrupt, and ignored whole.
    #[test]
    fn a_digest_that_is_not_hex_makes_the_cache_corrupt() {
        let (_dir, cache_path, ..) = saved_with_one_entry();
        rewrite_as(&cache_path, OLDER_FORMATS[0], |_| {});
        let text = std::fs::read_to_string(&cache_path).unwrap();
        let hex = Sha256::of(b"abc").to_hex();
        assert!(text.contains(&hex), "{text}");
        std::fs::write(&cache_path, text.replace(&hex, &hex.replace('a', "g"))).unwrap();
        let (cache, warning) = HashCache::load(&cache_path);
        let message = warning.unwrap().message;
        assert!(message.contains("64 hex digits"), "{message}");
        assert!(cache.old.entries.is_empty());
    }

    #[test]
    fn corrupt_cache_is_ignored() {
        let (_dir, path, ..) = saved_with_one_entry();
        let bytes = std::fs::read(&path).unwrap();
        let claimed = format!(r#"{{"format":"{CACHE_FORMAT}","entries":{{}}}}"#);
        for corrupt in [
            &b"{not json"[..],
            &bytes[..bytes.len() - 1],
            b"",
            claimed.as_bytes(),
        ] {
            std::fs::write(&path, corrupt).unwrap();
            let (cache, warning) = HashCache::load(&path);
            let message = warning.unwrap().message;
            assert!(message.contains("hash cache is corrupt"), "{message}");
            assert!(cache.old.entries.is_empty());
        }
    }

    /// A cache of a later format: only its format is read.
    #[test]
    fn a_cache_of_another_format_is_ignored() {
        let (_dir, path, ..) = saved_with_one_entry();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = 1 + CACHE_FORMAT.len() - 1;
        assert_eq!(bytes[at], b'8');
        bytes[at] = b'9';
        std::fs::write(&path, &bytes).unwrap();
        let (cache, warning) = HashCache::load(&path);
        let message = warning.unwrap().message;
        assert!(
            message.contains(r#"unknown format "vmcast-gen-hash-cache-9""#),
            "{message}"
        );
        assert!(cache.old.entries.is_empty());
    }
}
