//! `vmcast-gen pull`: the subscriber's side of a VMcast.
//!
//! A host subscribes to a feed and keeps one appliance current. Each run
//! verifies the feed exactly as `verify` does, with rollback and expiry
//! protection through a state file; picks the newest release allowed by
//! the channel, the policy and the host's architecture, in the first
//! format available; and downloads its image into the destination with
//! resume, checking length and SHA-256 while it downloads. The image is
//! moved into place atomically only after both match, so a failed or
//! tampered download leaves nothing half-installed. A run whose choice is
//! already in place downloads nothing.
//!
//! Nothing here prints: [`pull`] returns what it did.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::{Image, ImageFormat, Sha256, Version};
use crate::net::{self, StreamError};
use crate::previous::{PublishedRelease, read_feed};
use crate::sign::PublicKey;
use crate::site::{self, VerifyOptions};

/// Which releases a host accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The newest release of the channel.
    Latest,
    /// Only a newer release marked critical (a security update); the first
    /// run takes the newest.
    CriticalOnly,
    /// The newest release with the installed release's major version; the
    /// first run takes the newest.
    SameMajor,
}

/// What to pull and where.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The site's URL (or a feed's, or a local output directory).
    pub source: String,
    pub pinned: PublicKey,
    pub appliance: String,
    /// Formats in order of preference; empty: the release's primary image.
    pub formats: Vec<ImageFormat>,
    pub channel: String,
    pub policy: Policy,
    pub dest: PathBuf,
    /// verify's state file (rollback protection); default under `dest`.
    pub state: Option<PathBuf>,
    /// The host's architecture, as the feed names it (`x86_64`, `aarch64`).
    pub arch: String,
    /// Keep this many images that `pull` placed; remove older ones.
    pub keep: Option<usize>,
    /// Refuse an image that the feed links no provenance file for.
    pub require_provenance: bool,
    pub timeout: Duration,
    pub min_rate: u64,
    pub now: DateTime<Utc>,
}

/// The image that was chosen and where it is.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    pub appliance: String,
    pub version: String,
    pub format: String,
    pub sha256: String,
    pub length: u64,
    pub path: PathBuf,
    pub url: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new image was downloaded, verified and put in place.
    Updated {
        image: Placed,
        /// Bytes downloaded in this run (less than the length on a resume).
        downloaded: u64,
        resumed_from: u64,
        removed: Vec<PathBuf>,
    },
    /// The release the policy allows is already in place.
    Current { image: Placed },
}

/// The subscriber's own record, beside the images it placed.
const RECORD: &str = ".vmcast-pull.json";
const RECORD_FORMAT: &str = "vmcast-gen-pull-1";
/// Unfinished downloads, resumed by the next run.
const PARTIAL: &str = ".vmcast-partial";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: String,
    /// Images this tool placed, oldest first.
    placed: Vec<RecordEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordEntry {
    appliance: String,
    version: String,
    file: String,
    sha256: String,
    /// The file's size and mtime when it was put in place: while they
    /// hold, a run knows the file is current without reading it.
    #[serde(default)]
    size: u64,
    #[serde(default)]
    mtime_ns: i128,
}

/// Verifies the feed, chooses, and downloads when needed.
pub fn pull(options: &PullOptions) -> Result<Outcome> {
    fsutil::create_dir_all(&options.dest)?;
    let state = options
        .state
        .clone()
        .unwrap_or_else(|| options.dest.join(".vmcast-state.json"));
    let report = site::verify(&VerifyOptions {
        source: options.source.clone(),
        pinned: options.pinned.clone(),
        also_trusted: Vec::new(),
        state: Some(state),
        images: false,
        all: false,
        mirrors: false,
        supply: true,
        mirror_sample: Vec::new(),
        site: None,
        timeout: options.timeout,
        min_rate: options.min_rate,
        now: options.now,
    })?;
    if !report.ok {
        let failures: Vec<String> = report.failures().map(|c| c.detail.clone()).collect();
        return Err(Error::other(format_args!(
            "{} does not verify; nothing was downloaded:\n  {}",
            options.source,
            failures.join("\n  ")
        )));
    }
    let feed = report
        .feed
        .ok_or_else(|| Error::other("the feed verified but was not kept"))?;
    let releases = read_feed(&feed)
        .map_err(|m| Error::other(format_args!("{}: feed.xml: {m}", options.source)))?;

    let record_path = options.dest.join(RECORD);
    let mut record = load_record(&record_path)?;
    let installed = record
        .placed
        .iter()
        .rev()
        .find(|e| e.appliance == options.appliance)
        .cloned();
    let (release, image) = choose(options, &releases, installed.as_ref())?;
    // verify has read every provenance file the feed links and checked its
    // subjects against the images' digests; here it must exist.
    let has_provenance = release.supply.iter().any(|f| {
        f.format.kind() == crate::supply::Kind::Provenance
            && f.image.as_ref().is_none_or(|n| *n == image.source.name)
    });
    if options.require_provenance && !has_provenance {
        return Err(Error::other(format_args!(
            "{} {}: the feed links no provenance for {}; nothing was downloaded \
             (--require-provenance)",
            release.appliance, release.version, image.source.name
        )));
    }
    let target = options.dest.join(image.source.name.as_str());
    let placed = Placed {
        appliance: release.appliance.clone(),
        version: release.version.clone(),
        format: image.source.format.to_string(),
        sha256: image.digest.sha256.to_hex(),
        length: image.digest.length,
        path: target.clone(),
        url: image.source.url.to_string(),
    };
    if in_place(&target, image, &record)? {
        return Ok(Outcome::Current { image: placed });
    }
    // The primary location first, then every mirror the signed feed names;
    // a mirror that fails or serves other bytes is skipped.
    let mut sources = vec![image.source.url.clone()];
    if let Some(more) = release.sources.get(&image.source.site_path) {
        sources.extend(more.iter().filter(|u| **u != image.source.url).cloned());
    }
    let mut failures = Vec::new();
    let mut done = None;
    for url in &sources {
        match download(options, image, url, &target) {
            Ok(result) => {
                done = Some(result);
                break;
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let Some((downloaded, resumed_from)) = done else {
        return Err(Error::other(failures.join("\n  ")));
    };
    let (size, mtime_ns) = file_state(&fsutil::metadata(&target)?);
    record.placed.retain(|e| e.file != image.source.name);
    record.placed.push(RecordEntry {
        appliance: release.appliance.clone(),
        version: release.version.clone(),
        file: image.source.name.to_string(),
        sha256: image.digest.sha256.to_hex(),
        size,
        mtime_ns,
    });
    let removed = match options.keep {
        Some(keep) => prune(&options.dest, &mut record, &options.appliance, keep)?,
        None => Vec::new(),
    };
    save_record(&record_path, &record)?;
    Ok(Outcome::Updated {
        image: placed,
        downloaded,
        resumed_from,
        removed,
    })
}

/// The newest release and image the channel, the policy, the host's
/// architecture and the formats allow.
fn choose<'a>(
    options: &PullOptions,
    releases: &'a [PublishedRelease],
    installed: Option<&RecordEntry>,
) -> Result<(&'a PublishedRelease, &'a Image)> {
    let version = |r: &PublishedRelease| Version::parse(&r.version).ok();
    let installed_version = installed.and_then(|e| Version::parse(&e.version).ok());
    let major = |v: &str| v.split(['.', '-', '+']).next().unwrap_or(v).to_owned();
    let mut candidates: Vec<(&PublishedRelease, &Image, Version)> = Vec::new();
    for release in releases {
        if release.appliance != options.appliance || release.channel != options.channel {
            continue;
        }
        let Some(v) = version(release) else { continue };
        let allowed = match (options.policy, &installed_version, installed) {
            (Policy::Latest, _, _) | (_, None, _) | (_, _, None) => true,
            (Policy::CriticalOnly, Some(current), _) => {
                &v == current || (release.critical && &v > current)
            }
            (Policy::SameMajor, Some(_), Some(entry)) => {
                major(&release.version) == major(&entry.version)
            }
        };
        if !allowed {
            continue;
        }
        let arch_ok = |i: &&Image| i.source.arch.as_deref().is_none_or(|a| a == options.arch);
        let image = if options.formats.is_empty() {
            release
                .images
                .iter()
                .filter(arch_ok)
                .find(|i| i.source.primary)
        } else {
            options.formats.iter().find_map(|f| {
                release
                    .images
                    .iter()
                    .filter(arch_ok)
                    .find(|i| i.source.format == *f)
            })
        };
        if let Some(image) = image {
            candidates.push((release, image, v));
        }
    }
    candidates
        .into_iter()
        .max_by(|a, b| a.2.cmp(&b.2))
        .map(|(r, i, _)| (r, i))
        .ok_or_else(|| {
            Error::other(format_args!(
                "no release of {} on channel {} has an image for {}{} that the policy allows",
                options.appliance,
                options.channel,
                options.arch,
                match options.formats.as_slice() {
                    [] => String::new(),
                    formats => format!(
                        " in {}",
                        formats
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            ))
        })
}

/// The size and mtime (ns) a record keeps of a placed file.
fn file_state(meta: &std::fs::Metadata) -> (u64, i128) {
    use std::os::unix::fs::MetadataExt;
    (
        meta.len(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    )
}

/// Whether `target` already holds the image: same length and SHA-256. A
/// file this command placed, unchanged since (same size and mtime as
/// recorded), is current without a read; any other is hashed, so a run
/// from cron does not read a multi-gigabyte image every time.
fn in_place(target: &Path, image: &Image, record: &Record) -> Result<bool> {
    let Ok((file, meta)) = fsutil::open_regular(target, false) else {
        return Ok(false);
    };
    if meta.len() != image.digest.length {
        return Ok(false);
    }
    let name = target.file_name().map(|n| n.to_string_lossy());
    let recorded = record.placed.iter().any(|e| {
        Some(e.file.as_str()) == name.as_deref()
            && e.sha256 == image.digest.sha256.to_hex()
            && (e.size, e.mtime_ns) == file_state(&meta)
    });
    if recorded {
        return Ok(true);
    }
    let mut hasher = sha2::Sha256::new();
    hash_into(file, image.digest.length, target, &mut hasher)?;
    Ok(Sha256(hasher.finalize().into()) == image.digest.sha256)
}

/// Feeds the first `length` bytes `reader` holds to `hasher`; returns
/// the byte count, `length + 1` when there is more.
fn hash_into(
    reader: impl Read,
    length: u64,
    path: &Path,
    hasher: &mut sha2::Sha256,
) -> Result<u64> {
    fsutil::read_bounded(reader, length, |chunk| hasher.update(chunk))
        .map_err(|(_, e)| Error::io("cannot read", path, e))
}

/// Downloads the image to a partial file, resuming one a previous run
/// left, checking length and SHA-256 as the bytes arrive; renames it into
/// place only when both match. Returns (bytes downloaded now, resumed from).
fn download(
    options: &PullOptions,
    image: &Image,
    url: &url::Url,
    target: &Path,
) -> Result<(u64, u64)> {
    let partial_dir = options.dest.join(PARTIAL);
    fsutil::create_dir_all(&partial_dir)?;
    // Named by digest: a partial file is only ever resumed for the bytes
    // it is the start of.
    let partial = partial_dir.join(format!("{}.part", image.digest.sha256.to_hex()));
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&partial)
        .map_err(|e| Error::io("cannot open", &partial, e))?;
    // What a previous run left: hashed again, to go on from there.
    let mut hasher = sha2::Sha256::new();
    let existing = File::open(&partial).map_err(|e| Error::io("cannot open", &partial, e))?;
    let mut have = hash_into(existing, image.digest.length, &partial, &mut hasher)?;
    if have > image.digest.length {
        drop(file);
        fsutil::remove_file(&partial)?;
        return download(options, image, url, target);
    }
    let resumed_from = have;
    let failed =
        |why: String| -> Error { Error::other(format_args!("{why}; nothing was put in place")) };
    if have < image.digest.length {
        let client = net::Client::new(net::Limits {
            timeout: options.timeout,
            min_rate: options.min_rate,
        });
        let (start, response) = client
            .get_from(url, have)
            .map_err(|e| failed(e.to_string()))?;
        if start < have {
            // The server ignores ranges: start over.
            file.set_len(0)
                .map_err(|e| Error::io("cannot truncate", &partial, e))?;
            hasher = sha2::Sha256::new();
            have = 0;
        }
        let streamed = response.stream(start, image.digest.length, |chunk| {
            file.write_all(chunk)?;
            hasher.update(chunk);
            have += chunk.len() as u64;
            Ok(())
        });
        match streamed {
            Ok(_) => {}
            Err(StreamError::Sink(e)) => return Err(Error::io("cannot write", &partial, e)),
            Err(StreamError::Net(e)) if e.is_refusal() => {
                drop(file);
                fsutil::remove_file(&partial)?;
                return Err(failed(e.to_string()));
            }
            // What arrived stays for the next run to resume from.
            Err(StreamError::Net(e)) => {
                return Err(Error::other(format_args!("{e}; the next run resumes it")));
            }
        }
    }
    let digest = Sha256(hasher.finalize().into());
    if digest != image.digest.sha256 {
        drop(file);
        fsutil::remove_file(&partial)?;
        return Err(Error::other(format_args!(
            "{url}: SHA-256 mismatch: the signed feed says {}, the download hashes to {digest}; \
             the file was discarded and nothing was put in place",
            image.digest.sha256
        )));
    }
    file.sync_all()
        .map_err(|e| Error::io("cannot write", &partial, e))?;
    drop(file);
    fsutil::rename(&partial, target)?;
    Ok((have - resumed_from, resumed_from))
}

/// Removes the oldest images of `appliance` that `pull` placed, keeping
/// `keep`; never a file it did not place.
fn prune(dest: &Path, record: &mut Record, appliance: &str, keep: usize) -> Result<Vec<PathBuf>> {
    let mine: Vec<usize> = record
        .placed
        .iter()
        .enumerate()
        .filter(|(_, e)| e.appliance == appliance)
        .map(|(i, _)| i)
        .collect();
    let drop_count = mine.len().saturating_sub(keep);
    let doomed: Vec<usize> = mine.into_iter().take(drop_count).collect();
    let mut removed = Vec::new();
    for &i in doomed.iter().rev() {
        let entry = record.placed.remove(i);
        let path = dest.join(&entry.file);
        if fsutil::remove_file_if_exists(&path)? {
            removed.push(path);
        }
    }
    removed.reverse();
    Ok(removed)
}

fn load_record(path: &Path) -> Result<Record> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(Record {
            format: RECORD_FORMAT.into(),
            placed: Vec::new(),
        });
    }
    let text = fsutil::read_to_string(path)?;
    let record: Record = serde_json::from_str(&text).map_err(|e| {
        Error::file(
            path,
            format_args!("not a pull record ({e}); remove it to start over"),
        )
    })?;
    if record.format != RECORD_FORMAT {
        return Err(Error::file(
            path,
            format_args!("unknown format {:?}", record.format),
        ));
    }
    Ok(record)
}

fn save_record(path: &Path, record: &Record) -> Result<()> {
    let mut text = serde_json::to_string_pretty(record).expect("the record serializes");
    text.push('\n');
    fsutil::write_new_file(path, text.as_bytes(), 0o644, true)
}

/// The environment `--exec` runs with: the new image's path, version and
/// digest.
pub fn exec_env(image: &Placed) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("VMCAST_IMAGE", image.path.display().to_string()),
        ("VMCAST_APPLIANCE", image.appliance.clone()),
        ("VMCAST_VERSION", image.version.clone()),
        ("VMCAST_FORMAT", image.format.clone()),
        ("VMCAST_SHA256", image.sha256.clone()),
        ("VMCAST_URL", image.url.clone()),
    ])
}
