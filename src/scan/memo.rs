//! Release plans remembered between builds, so that a warm rebuild neither
//! parses an unchanged `release.toml` again nor plans its release again.
//!
//! A plan is a function of the notes file's bytes, the names beside it,
//! the config, the program and the releases directory's place: a release
//! whose notes file is in the very state the plan was made from (device,
//! inode, size, mtime, ctime: the same bytes), beside the very names (the
//! walk's listing, none a symbolic link), in a build whose [`key`] is the
//! same, has the plan it had. Only its images are looked at again: each
//! must still be a regular file, and its `lstat` is what the hash stage
//! goes by, as after a scan. Anything else is planned as a cold build
//! plans it, which says what is wrong, if anything is.
//!
//! Remembered only for the plain case: images beside the notes file (no
//! `images = [...]`, whose globs reach other directories), no SBOM or
//! provenance (read and checked per build), no cloud images, no symbolic
//! link beside the notes, and nothing warned of. Every value is parsed
//! back into its validated type.
//!
//! The memo lives beside the hash cache; `--no-cache` and `--verify-cache`
//! plan everything. It only spares work: one that cannot be read, parsed
//! or written costs the scan its shortcuts, nothing more. It is trusted as
//! the hash cache is: whoever can write the cache can feed a build wrong
//! digests too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{Beside, PlannedRelease};
use crate::config::Config;
use crate::fsutil;
use crate::model::{
    Arch, Compression, FileName, FileState, Firmware, ImageFormat, ImageSource, Line, Name,
    RelPath, ReleaseInfo, Requirements, Seen, Sha256, Version,
};

const FORMAT: &str = "vmcast-gen plans 1";
// Written with postcard, not JSON: the memo of 10,000 releases is some
// 8 MB of JSON, which took a warm rebuild 50 ms of CPU to parse.
/// The largest memo read: some 700 bytes a release.
const MAX_MEMO: u64 = 256 << 20;

#[derive(Serialize, Deserialize)]
struct MemoFile {
    format: String,
    key: String,
    releases: BTreeMap<String, Entry>,
}

/// One release's plan, and the state of its notes file and the names
/// beside it that it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    notes: FileState,
    beside: Vec<String>,
    release: Release,
}

/// A [`PlannedRelease`] as remembered: its values as text, parsed back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Release {
    appliance: String,
    version: String,
    title: String,
    /// Seconds and nanoseconds since the epoch.
    date: (i64, u32),
    channel: String,
    critical: bool,
    notes_html: String,
    notes_text: String,
    osinfo: Option<String>,
    requirements: Option<Needs>,
    /// Primary first, as planned.
    images: Vec<Image>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Needs {
    arch: Option<String>,
    min_memory_mib: Option<u64>,
    min_disk_gib: Option<u64>,
    min_cpus: Option<u64>,
    firmware: Option<String>,
    hypervisors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Image {
    name: String,
    format: ImageFormat,
    compression: Option<Compression>,
    arch: Option<String>,
    primary: bool,
    site_path: String,
    url: String,
}

/// What a build's plans depend on besides each release's own files: the
/// program, the config (every field, as it prints), whether a release
/// may have no images here (`--previous`), and where the releases
/// directory resolves to.
pub fn key(config: &Config, imageless: bool, releases_real: &Path) -> String {
    let text = format!(
        "{:?}\0{config:?}\0{imageless}\0{}",
        fsutil::program(),
        releases_real.display()
    );
    Sha256::of(text.as_bytes()).to_hex()
}

/// The plans the last build remembered, and those this one makes.
pub struct Plans {
    file: PathBuf,
    key: String,
    old: BTreeMap<String, Entry>,
}

impl Plans {
    /// The plans remembered in `file`, where this build's are remembered.
    pub fn load(file: &Path) -> Plans {
        let memo = fsutil::read_regular(file, false, MAX_MEMO)
            .ok()
            .and_then(|(bytes, _)| postcard::from_bytes::<MemoFile>(&bytes).ok())
            .filter(|memo| memo.format == FORMAT);
        let (key, old) = memo.map_or_else(Default::default, |m| (m.key, m.releases));
        Plans {
            file: file.to_path_buf(),
            key,
            old,
        }
    }

    /// The remembered plans, if they were made under `key`.
    pub fn under(&self, key: &str) -> Option<&BTreeMap<String, Entry>> {
        (self.key == key).then_some(&self.old)
    }

    /// Writes the plans of this build's releases, under `key`: those
    /// `kept` (by their notes file, as remembered) and those `made`.
    /// Nothing when that is what the memo holds; errors are not reported.
    pub fn save(self, key: String, kept: Vec<String>, made: Vec<(String, Entry)>) {
        let file = self.file;
        if self.key == key && made.is_empty() && kept.len() == self.old.len() {
            crate::par::drop_aside(self.old);
            return;
        }
        let mut old = self.old;
        let mut releases: BTreeMap<String, Entry> = kept
            .into_iter()
            .filter_map(|k| old.remove_entry(&k))
            .collect();
        releases.extend(made);
        let memo = MemoFile {
            format: FORMAT.to_owned(),
            key,
            releases,
        };
        let bytes = postcard::to_allocvec(&memo).expect("plans serialize");
        if let Some(dir) = file.parent()
            && fsutil::create_dir_all(dir).is_err()
        {
            return;
        }
        let _ = fsutil::write_new_file(&file, &bytes, 0o644, true);
    }
}

/// The plan `entry` remembers, if it was made from the notes file `path`
/// in `state`, beside `files`, in the directory `dir` (resolved:
/// `dir_real`), and each of its images is still a regular file.
pub fn reuse(
    entry: &Entry,
    path: &Path,
    state: &FileState,
    files: &[Beside],
    dir: &Path,
    dir_real: &Path,
) -> Option<PlannedRelease> {
    let same_names = entry.beside.len() == files.len()
        && (entry.beside.iter().zip(files)).all(|(name, f)| !f.symlink && *name == f.name);
    if entry.notes != *state || !same_names {
        return None;
    }
    let r = &entry.release;
    let images = (r.images.iter())
        .map(|i| {
            let real = dir_real.join(&i.name);
            let meta = std::fs::symlink_metadata(&real).ok()?;
            meta.is_file().then_some(())?;
            Some(ImageSource {
                source: dir.join(&i.name),
                real,
                name: FileName::parse(&i.name).ok()?,
                format: i.format,
                compression: i.compression,
                arch: i.arch.as_deref().map(Arch::parse).transpose().ok()?,
                primary: i.primary,
                site_path: RelPath::parse(&i.site_path).ok()?,
                url: Url::parse(&i.url).ok()?,
                seen: Seen::of(&meta),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let requirements = match &r.requirements {
        None => Requirements::default(),
        Some(n) => Requirements {
            arch: n.arch.as_deref().map(Arch::parse).transpose().ok()?,
            min_memory_mib: n.min_memory_mib,
            min_disk_gib: n.min_disk_gib,
            min_cpus: n.min_cpus,
            firmware: n
                .firmware
                .as_deref()
                .map(Firmware::parse)
                .transpose()
                .ok()?,
            hypervisors: n.hypervisors.clone(),
        },
    };
    let info = ReleaseInfo {
        notes_path: path.to_path_buf(),
        appliance: Name::parse(&r.appliance, "appliance name").ok()?,
        version: Version::parse(&r.version).ok()?,
        title: Line::parse(&r.title, "title").ok()?,
        date: DateTime::from_timestamp(r.date.0, r.date.1)?,
        channel: Name::parse(&r.channel, "channel").ok()?,
        critical: r.critical,
        notes_html: r.notes_html.clone(),
        notes_text: r.notes_text.clone(),
        osinfo: r.osinfo.clone(),
        requirements,
        cloud_images: Vec::new(),
    };
    Some(PlannedRelease {
        info,
        images,
        supply: Vec::new(),
    })
}

/// What to remember of `release`, planned from the notes file in `state`
/// beside `files`: `None` for a release outside the plain case (see the
/// module's documentation). `patterns` says its notes list `images`.
pub fn entry(
    release: &PlannedRelease,
    state: FileState,
    files: &[Beside],
    patterns: bool,
) -> Option<Entry> {
    let info = &release.info;
    let plain = !patterns
        && release.supply.is_empty()
        && info.cloud_images.is_empty()
        && files.iter().all(|f| !f.symlink);
    if !plain {
        return None;
    }
    let req = &info.requirements;
    let images = (release.images.iter())
        .map(|i| Image {
            name: i.name.to_string(),
            format: i.format,
            compression: i.compression,
            arch: i.arch.as_ref().map(|a| a.as_str().to_owned()),
            primary: i.primary,
            site_path: i.site_path.to_string(),
            url: i.url.to_string(),
        })
        .collect();
    Some(Entry {
        notes: state,
        beside: files.iter().map(|f| f.name.clone()).collect(),
        release: Release {
            appliance: info.appliance.to_string(),
            version: info.version.to_string(),
            title: info.title.to_string(),
            date: (info.date.timestamp(), info.date.timestamp_subsec_nanos()),
            channel: info.channel.to_string(),
            critical: info.critical,
            notes_html: info.notes_html.clone(),
            notes_text: info.notes_text.clone(),
            osinfo: info.osinfo.clone(),
            requirements: (!req.is_empty()).then(|| Needs {
                arch: req.arch.as_ref().map(|a| a.as_str().to_owned()),
                min_memory_mib: req.min_memory_mib,
                min_disk_gib: req.min_disk_gib,
                min_cpus: req.min_cpus,
                firmware: req.firmware.map(|f| f.as_str().to_owned()),
                hypervisors: req.hypervisors.clone(),
            }),
            images,
        },
    })
}
