//! What the scan made of each `release.toml`, remembered between builds:
//! its text and its notes rendered to HTML (by the very program running:
//! another build or install of vmcast-gen forgets them), so that an
//! unchanged notes file is neither read nor rendered again; and its
//! release's plan, so that a warm rebuild does not parse it nor plan the
//! release again either. (A notes file over 64 KiB is read every time.)
//!
//! A plan is a function of the notes file's bytes, the names beside it,
//! the config, the program and the releases directory's place: a release
//! whose notes file is in the very state the plan was made from (device,
//! inode, size, mtime, ctime: the same bytes), beside the very names (the
//! walk's listing, none a symbolic link), in a build whose [`key`] is the
//! same (and the program's), has the plan it had. Only its images are looked at again: each
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

use std::borrow::Cow;
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
use crate::notes;

const FORMAT: &str = "vmcast-gen plans 2";
/// The largest memo read: some 700 bytes a release.
const MAX_MEMO: u64 = 256 << 20;

/// The memo as written, with postcard, not JSON (the memo of 10,000
/// releases as JSON, 8 MB, took a warm rebuild 50 ms of CPU to parse):
/// this head, then the releases' [`Entries`].
#[derive(Serialize, Deserialize)]
struct Head<'a> {
    format: &'a str,
    /// The executable that made it ([`fsutil::program`]).
    program: Option<FileState>,
    /// The plans' [`key`].
    key: &'a str,
}

/// The memo's entries, by the notes file's resolved path. Read, their
/// text is borrowed from the memo's bytes: a warm rebuild takes most
/// plans as they are, and needs no copy of the rest.
pub type Entries<'a> = BTreeMap<&'a str, Entry<'a>>;

/// One notes file in one state: its text, its notes as HTML, and, in the
/// plain case, its release's plan with the names beside it that the plan
/// was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<'a> {
    notes: FileState,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    html: Cow<'a, str>,
    /// The names beside the notes file, each followed by a `/` (which no
    /// name holds).
    #[serde(borrow)]
    beside: Cow<'a, str>,
    #[serde(borrow)]
    release: Option<Release<'a>>,
}

impl Entry<'_> {
    /// Whether it remembers its release's plan (the plain case).
    pub fn planned(&self) -> bool {
        self.release.is_some()
    }
}

/// A [`PlannedRelease`] as remembered: its values as text, parsed back.
/// (Its notes' HTML is the entry's.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Release<'a> {
    #[serde(borrow)]
    appliance: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    title: Cow<'a, str>,
    /// Seconds and nanoseconds since the epoch.
    date: (i64, u32),
    #[serde(borrow)]
    channel: Cow<'a, str>,
    critical: bool,
    #[serde(borrow)]
    notes_text: Cow<'a, str>,
    osinfo: Option<String>,
    requirements: Option<Needs>,
    /// Primary first, as planned.
    #[serde(borrow)]
    images: Vec<Image<'a>>,
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
struct Image<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    format: ImageFormat,
    compression: Option<Compression>,
    arch: Option<String>,
    primary: bool,
    #[serde(borrow)]
    site_path: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
}

/// What a build's plans depend on besides each release's own files and
/// the program: the config (every field, as it prints), whether a release
/// may have no images here (`--previous`), and where the releases
/// directory resolves to.
pub fn key(config: &Config, imageless: bool, releases_real: &Path) -> String {
    let text = format!("{config:?}\0{imageless}\0{}", releases_real.display());
    Sha256::of(text.as_bytes()).to_hex()
}

/// What the last build remembered, for this one: nothing, unless this
/// very program remembered it.
pub struct Plans {
    file: PathBuf,
    program: Option<FileState>,
    memo: Option<Memo>,
}

/// A memo this very program wrote: its bytes, the key its plans were made
/// under, and where its entries start.
struct Memo {
    bytes: Vec<u8>,
    key: String,
    entries: usize,
}

impl Plans {
    /// The plans remembered in `file`, where this build's are remembered:
    /// read, their head checked; the entries are parsed by [`Plans::entries`].
    pub fn load(file: &Path) -> Plans {
        let program = fsutil::program();
        let memo = fsutil::read_memo(file, MAX_MEMO).and_then(|bytes| {
            let (head, rest) = postcard::take_from_bytes::<Head>(&bytes).ok()?;
            let ours = head.format == FORMAT && program.is_some() && head.program == program;
            let (key, entries) = (head.key.to_owned(), bytes.len() - rest.len());
            ours.then_some(Memo {
                bytes,
                key,
                entries,
            })
        });
        Plans {
            file: file.to_path_buf(),
            program,
            memo,
        }
    }

    /// The remembered entries, borrowed from the memo's bytes: none when
    /// there is no memo of this program's, or it cannot be read.
    pub fn entries(&self) -> Entries<'_> {
        (self.memo.as_ref())
            .and_then(|m| postcard::from_bytes(&m.bytes[m.entries..]).ok())
            .unwrap_or_default()
    }

    /// Whether the remembered plans were made under `key`.
    pub fn made_under(&self, key: &str) -> bool {
        self.memo.as_ref().is_some_and(|m| m.key == key)
    }

    /// Writes the plans of this build's releases, under `key`: those
    /// `kept` (by their notes file, as remembered in `old`, this memo's
    /// [`Plans::entries`]) and those `made`. Nothing when that is what the
    /// memo holds; errors are not reported.
    pub fn save(&self, key: &str, kept: &[String], made: &[(String, Entry)], old: &Entries) {
        if self.program.is_none() {
            return;
        }
        if self.made_under(key) && made.is_empty() && kept.len() == old.len() {
            return;
        }
        let mut releases: BTreeMap<&str, &Entry> = kept
            .iter()
            .filter_map(|k| old.get_key_value(k.as_str()))
            .map(|(k, e)| (*k, e))
            .collect();
        releases.extend(made.iter().map(|(k, e)| (k.as_str(), e)));
        let head = Head {
            format: FORMAT,
            program: self.program,
            key,
        };
        let bytes = postcard::to_allocvec(&head).expect("plans serialize");
        let bytes = postcard::to_extend(&releases, bytes).expect("plans serialize");
        fsutil::write_memo(&self.file, &bytes);
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
    let mut beside = entry.beside.split_terminator('/');
    let same_names = files
        .iter()
        .all(|f| !f.symlink && beside.next() == Some(f.name.as_str()))
        && beside.next().is_none();
    let r = entry.release.as_ref()?;
    if entry.notes != *state || !same_names {
        return None;
    }
    let images = (r.images.iter())
        .map(|i| {
            let real = dir_real.join(&*i.name);
            let meta = std::fs::symlink_metadata(&real).ok()?;
            meta.is_file().then_some(())?;
            Some(ImageSource {
                source: dir.join(&*i.name),
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
        notes_html: entry.html.to_string(),
        notes_text: r.notes_text.to_string(),
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

/// What to remember of the notes file `read` (by its resolved path), and
/// of its release's plan `release`, made beside `files` (`patterns` says
/// its notes list `images`): the plan only in the plain case (see the
/// module's documentation).
pub fn entry(
    read: notes::Read,
    release: Option<&PlannedRelease>,
    files: &[Beside],
    patterns: bool,
) -> (String, Entry<'static>) {
    let plain = |release: &PlannedRelease| {
        !patterns
            && release.supply.is_empty()
            && release.info.cloud_images.is_empty()
            && files.iter().all(|f| !f.symlink)
    };
    let entry = Entry {
        notes: read.state,
        text: read.text.into(),
        html: read.html.into(),
        beside: files.iter().map(|f| format!("{}/", f.name)).collect(),
        release: release.filter(|r| plain(r)).map(remembered),
    };
    (fsutil::path_text(&read.path).into_owned(), entry)
}

/// A plan as the memo keeps it.
fn remembered(release: &PlannedRelease) -> Release<'static> {
    let info = &release.info;
    let req = &info.requirements;
    let images = (release.images.iter())
        .map(|i| Image {
            name: i.name.to_string().into(),
            format: i.format,
            compression: i.compression,
            arch: i.arch.as_ref().map(|a| a.as_str().to_owned()),
            primary: i.primary,
            site_path: i.site_path.to_string().into(),
            url: i.url.to_string().into(),
        })
        .collect();
    Release {
        appliance: info.appliance.to_string().into(),
        version: info.version.to_string().into(),
        title: info.title.to_string().into(),
        date: (info.date.timestamp(), info.date.timestamp_subsec_nanos()),
        channel: info.channel.to_string().into(),
        critical: info.critical,
        notes_text: info.notes_text.clone().into(),
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
    }
}

/// The notes files remembered: by their resolved path, in one state.
impl notes::Known for Entries<'_> {
    fn notes(&self, path: &Path, state: &FileState) -> Option<(String, String)> {
        let entry = self.get(fsutil::path_text(path).as_ref())?;
        (entry.notes == *state).then(|| (entry.text.to_string(), entry.html.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notes::Known;

    fn state(ino: u64) -> FileState {
        FileState {
            dev: 1,
            ino,
            size: 10,
            mtime_ns: 2,
            ctime_ns: 3,
        }
    }

    fn entry() -> Entry<'static> {
        Entry {
            notes: state(7),
            text: "version = \"1.0\"".into(),
            html: "<p>Remembered.</p>".into(),
            beside: "release.toml/".into(),
            release: None,
        }
    }

    /// A memo holding one notes file in `state(7)`, written as `program`.
    fn memo(program: Option<FileState>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memo.plans");
        let head = Head {
            format: FORMAT,
            program,
            key: "k",
        };
        let entries: Entries = [("/r/release.toml", entry())].into();
        let bytes = postcard::to_allocvec(&head).unwrap();
        let bytes = postcard::to_extend(&entries, bytes).unwrap();
        std::fs::write(&file, bytes).unwrap();
        (dir, file)
    }

    #[test]
    fn remembered_notes_serve_only_their_state_and_the_program_that_made_them() {
        let path = Path::new("/r/release.toml");
        let (_dir, file) = memo(fsutil::program());
        let plans = Plans::load(&file);
        let entries = plans.entries();
        let (text, html) = entries.notes(path, &state(7)).unwrap();
        assert_eq!(
            (text.as_str(), html.as_str()),
            ("version = \"1.0\"", "<p>Remembered.</p>")
        );
        assert_eq!(entries.notes(path, &state(8)), None);
        assert!(plans.made_under("k") && !plans.made_under("other"));
        // Another executable's memo is forgotten whole.
        let other = fsutil::program().map(|p| FileState {
            ino: p.ino + 1,
            ..p
        });
        let (_dir, file) = memo(other);
        let plans = Plans::load(&file);
        assert_eq!(plans.entries().notes(path, &state(7)), None);
        assert!(!plans.made_under("k"));
        // So is one that is not a memo.
        std::fs::write(&file, b"not a memo").unwrap();
        let plans = Plans::load(&file);
        assert!(plans.entries().is_empty() && !plans.made_under(""));
    }

    /// What a build saves the next reads back, borrowed from the file's
    /// bytes; kept as it was, it is not written again.
    #[test]
    fn saved_entries_are_read_back_in_place_and_kept_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memo.plans");
        let plans = Plans::load(&file);
        let made = [("/r/release.toml".to_owned(), entry())];
        plans.save("k", &[], &made, &plans.entries());
        let plans = Plans::load(&file);
        let entries = plans.entries();
        assert_eq!(entries.get("/r/release.toml"), Some(&made[0].1));
        assert!(matches!(entries["/r/release.toml"].html, Cow::Borrowed(_)));
        let written = FileState::of(&std::fs::metadata(&file).unwrap());
        plans.save("k", &[made[0].0.clone()], &[], &entries);
        assert_eq!(FileState::of(&std::fs::metadata(&file).unwrap()), written);
        plans.save("k2", &[made[0].0.clone()], &[], &entries);
        assert_ne!(FileState::of(&std::fs::metadata(&file).unwrap()), written);
        assert!(Plans::load(&file).made_under("k2"));
    }
}
