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
//! `pull` often runs as root, in a directory others may have written to.
//! Every file it keeps there (the partial download, its record, the state
//! file and the images it placed) is opened beneath a descriptor of
//! `--dest` without following a link, and used only when fstat shows a
//! regular file with one link that this user owns ([`fsutil::Dir`]);
//! anything else under those names is discarded with a warning. A partial
//! file is read no further than the signed length, and `--keep` removes
//! only a file whose inode, size and mtime are still the ones recorded.
//!
//! With an older image at hand, and a zsync control file for the new one
//! in the feed, only the blocks that changed are downloaded ([`delta`]).
//!
//! Nothing here prints: [`pull`] returns what it did and what it warns of,
//! and tells a [`Progress`] how the download goes.

mod delta;

pub use delta::Delta;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::fsutil::{self, Access, Dir, Mine, OwnName, Removal, Stamp};
use crate::model::{FileName, Image, ImageFormat, MAX_TEXT_FILE, Sha256, Version};
use crate::net::{self, StreamError};
use crate::sign::PublicKey;
use crate::site::feed::Item;
use crate::site::{self, VerifyOptions};
use crate::warning::Warning;

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
    /// The site (its signed base_url) the build must be signed for.
    pub site: Option<url::Url>,
    /// The host's architecture, as the feed names it (`x86_64`, `aarch64`).
    pub arch: String,
    /// Keep this many images that `pull` placed; remove older ones.
    pub keep: Option<usize>,
    /// Refuse an image that the feed links no provenance file for.
    pub require_provenance: bool,
    /// Files that may hold blocks of the new image (`--seed`), besides the
    /// image `pull` placed last.
    pub seeds: Vec<PathBuf>,
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
        /// Bytes of the image downloaded in this run (less than the length
        /// on a resume, or on a delta download).
        downloaded: u64,
        resumed_from: u64,
        /// How a delta download rebuilt it, if one did.
        delta: Option<Delta>,
        removed: Vec<PathBuf>,
    },
    /// The release the policy allows is already in place.
    Current { image: Placed },
}

/// What a run did, and what it warns of: files under the names `pull`
/// keeps that it did not make (discarded), and old images `--keep` kept
/// because they changed.
#[derive(Debug, Clone, Serialize)]
pub struct Pulled {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub warnings: Vec<Warning>,
}

/// Receives how the image's download goes. The library draws nothing
/// itself.
pub trait Progress: Sync {
    /// A delta download is under way: what the seeds hold, and the rest
    /// to download.
    fn delta(&self, _plan: &Delta) {}
    /// Bytes of the image arrived.
    fn fetched(&self, _bytes: u64) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {}

/// The subscriber's own record, beside the images it placed.
const RECORD: OwnName = OwnName::new(".vmcast-pull.json");
/// Where the next record is written before it is renamed over the record.
const RECORD_NEXT: OwnName = OwnName::new(".vmcast-pull.json.next");
const RECORD_FORMAT: &str = "vmcast-gen-pull-1";
/// verify's state file, when `--state` does not name another.
const STATE: OwnName = OwnName::new(".vmcast-state.json");
/// Unfinished downloads, resumed by the next run.
const PARTIAL: OwnName = OwnName::new(".vmcast-partial");

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
    /// One plain name beneath `--dest`: a record naming `../x` is refused.
    file: FileName,
    sha256: String,
    /// The file's inode, size and mtime when it was put in place: while
    /// they hold, a run knows the file is current without reading it, and
    /// `--keep` may remove it. Records written before the inode was kept
    /// have 0, which matches no file.
    #[serde(default)]
    size: u64,
    #[serde(default)]
    mtime_ns: i128,
    #[serde(default)]
    inode: u64,
}

impl RecordEntry {
    fn stamp(&self) -> Stamp {
        Stamp {
            inode: self.inode,
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

/// Verifies the feed, chooses, and downloads when needed.
pub fn pull(options: &PullOptions, progress: &dyn Progress) -> Result<Pulled> {
    let mut warnings = Vec::new();
    match run(options, progress, &mut warnings) {
        Ok(outcome) => Ok(Pulled { outcome, warnings }),
        Err(error) if warnings.is_empty() => Err(error),
        Err(error) => Err(Error::Warned {
            warnings,
            error: Box::new(error),
        }),
    }
}

fn run(
    options: &PullOptions,
    progress: &dyn Progress,
    warnings: &mut Vec<Warning>,
) -> Result<Outcome> {
    // A usage error creates nothing.
    let feed = appliance_feed(&options.source, &options.appliance)?;
    let dest = Dir::create(&options.dest)?;
    if options.state.is_none() {
        // Checked here, so that verify reads and replaces only a file of ours.
        dest.open_mine(&STATE, Access::Read, warnings)?;
    }
    let (verify, site) = verify_feed(options, feed, &dest)?;
    let releases = &site.feed.items;

    let mut record = load_record(&dest, warnings)?;
    let installed = record
        .placed
        .iter()
        .rev()
        .find(|e| e.appliance == options.appliance)
        .cloned();
    let (item, image) = choose(options, releases, installed.as_ref())?;
    let release = &item.release;
    let (appliance, version) = (&release.info.appliance, &release.info.version);
    if options.require_provenance {
        require_provenance(&verify, &site, item, image)?;
    }
    let name = &image.source.name;
    let placed = Placed {
        appliance: appliance.to_string(),
        version: version.to_string(),
        format: image.source.format.to_string(),
        sha256: image.digest.sha256.to_hex(),
        length: image.digest.length,
        path: dest.path_of(name),
        url: image.source.url.to_string(),
    };
    if in_place(&dest, image, &mut record, warnings)? {
        return Ok(Outcome::Current { image: placed });
    }
    // The primary location first, then every mirror the signed feed names;
    // a mirror that fails or serves other bytes is skipped.
    let sources = item.sources(image);
    let client = net::Client::new(net::Limits {
        timeout: options.timeout,
        min_rate: options.min_rate,
    });
    let partials = dest.subdir(&PARTIAL, warnings)?;
    let seeds = seeds(options, &dest, installed.as_ref(), warnings)?;
    let ctx = delta::Ctx {
        client: &client,
        partials: &partials,
        image,
        sources: &sources,
        progress,
    };
    let got = fetch(&ctx, seeds, warnings)?;
    let Got {
        mut mine,
        name: from,
        downloaded,
        resumed_from,
        delta,
    } = got;
    let part_path = partials.path_of(&from);
    mine.file
        .sync_all()
        .map_err(|e| Error::io("cannot write", &part_path, e))?;
    dest.rename_mine(&partials, &from, &mine, name)?;
    let stamp = mine.restamp(&placed.path)?;
    record.placed.retain(|e| e.file != *name);
    record.placed.push(RecordEntry {
        appliance: appliance.to_string(),
        version: version.to_string(),
        file: name.clone(),
        sha256: image.digest.sha256.to_hex(),
        size: stamp.size,
        mtime_ns: stamp.mtime_ns,
        inode: stamp.inode,
    });
    let removed = match options.keep {
        Some(keep) => prune(&dest, &mut record, &options.appliance, keep, warnings)?,
        None => Vec::new(),
    };
    save_record(&dest, &record)?;
    Ok(Outcome::Updated {
        image: placed,
        downloaded,
        resumed_from,
        delta,
        removed,
    })
}

/// Verifies the appliance's signed feed at `feed` as `verify` does, with
/// the state kept in `--dest` (or `--state`). Returns the options it was
/// verified with, for the files of the image chosen later, and the site.
fn verify_feed(
    options: &PullOptions,
    feed: String,
    dest: &Dir,
) -> Result<(VerifyOptions, site::PublishedSite)> {
    let state = options
        .state
        .clone()
        .unwrap_or_else(|| dest.path_of(&STATE));
    // Only what the choice needs: the appliance's own signed feed, asked
    // for conditionally (a current host costs two 304s), and later the
    // files of the image chosen.
    let verify = VerifyOptions {
        source: feed,
        scope: site::Scope::Feed,
        pinned: options.pinned.clone(),
        also_trusted: Vec::new(),
        state: Some(state),
        images: false,
        all: false,
        mirrors: false,
        supply: false,
        mirror_sample: Vec::new(),
        site: options.site.clone(),
        timeout: options.timeout,
        min_rate: options.min_rate,
        now: options.now,
    };
    let report = site::verify(&verify)?;
    if !report.ok {
        let failures: Vec<String> = report.failures().map(|c| c.detail.clone()).collect();
        let failures = failures.join("\n  ");
        return Err(if report.only_unreachable() {
            Error::Interrupted(format!(
                "{} could not be read in full, so it was not verified; nothing was \
                 downloaded, and the next run tries again:\n  {failures}",
                options.source
            ))
        } else {
            Error::Refused(format!(
                "{} does not verify; nothing was downloaded:\n  {failures}",
                options.source
            ))
        });
    }
    let site = report
        .site
        .ok_or_else(|| Error::other("the feed verified but was not kept"))?;
    Ok((verify, site))
}

/// The image, rebuilt from the seeds and ranges of its zsync control file
/// where that works, else downloaded whole (resuming a partial download).
fn fetch(ctx: &delta::Ctx, seeds: Vec<delta::Seed>, warnings: &mut Vec<Warning>) -> Result<Got> {
    Ok(match delta::try_delta(ctx, seeds, warnings)? {
        delta::Tried::Done { mine, name, delta } => Got {
            mine,
            name,
            downloaded: delta.fetched,
            resumed_from: 0,
            delta: Some(delta),
        },
        delta::Tried::Whole(why) => {
            if let Some(why) = why {
                warnings.push(Warning {
                    path: None,
                    message: format!("no delta download ({why}); the whole image is downloaded"),
                });
            }
            download(ctx, warnings)?
        }
    })
}

/// The image downloaded and checked, in the partial directory.
struct Got {
    mine: Mine,
    name: FileName,
    /// Bytes of the image downloaded in this run.
    downloaded: u64,
    resumed_from: u64,
    delta: Option<Delta>,
}

/// The files that may hold blocks of the new image: the image `pull`
/// placed last for the appliance, if it is still its file, and each
/// `--seed` (one that cannot be opened is left out, with a warning).
fn seeds(
    options: &PullOptions,
    dest: &Dir,
    installed: Option<&RecordEntry>,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<delta::Seed>> {
    let mut seeds = Vec::new();
    if let Some(entry) = installed
        && let Some(mine) = dest.open_mine(&entry.file, Access::Read, warnings)?
    {
        seeds.push(delta::Seed {
            path: dest.path_of(&entry.file),
            file: mine.file,
        });
    }
    for path in &options.seeds {
        match fsutil::open_regular(path, true) {
            Ok((file, _)) => seeds.push(delta::Seed {
                path: path.clone(),
                file,
            }),
            Err(e) => warnings.push(Warning {
                path: None,
                message: format!("{e}; --seed {} is left out", path.display()),
            }),
        }
    }
    Ok(seeds)
}

/// Downloads the whole image, or the rest of it, from its sources in turn,
/// into `.vmcast-partial/<sha256>.part`.
fn download(ctx: &delta::Ctx, warnings: &mut Vec<Warning>) -> Result<Got> {
    let (image, partials) = (ctx.image, ctx.partials);
    // Named by digest: a partial file is only ever resumed for the bytes
    // it is the start of.
    let part_name = FileName::parse(&format!("{}.part", image.digest.sha256.to_hex()))
        .expect("a digest and .part make a file name");
    let mut failures = Vec::new();
    let mut refused = false;
    let mut kept: Option<Partial> = None;
    for url in ctx.sources {
        let mut partial = match kept.take() {
            Some(partial) => partial,
            None => Partial::open(partials, &part_name, image, warnings)?,
        };
        match partial.fetch(ctx.client, url, image, ctx.progress)? {
            Ok(()) => {
                return Ok(Got {
                    downloaded: partial.have - partial.resumed_from,
                    resumed_from: partial.resumed_from,
                    mine: partial.mine,
                    name: part_name,
                    delta: None,
                });
            }
            Err(Failure::Refused(why)) => {
                partials.remove_mine(&part_name, &partial.mine)?;
                refused = true;
                failures.push(format!(
                    "{why}; the file was discarded and nothing was put in place"
                ));
            }
            Err(Failure::Interrupted(why)) => {
                failures.push(match partial.have {
                    0 => format!("{why}; the next run tries again"),
                    have => format!("{why}; the next run resumes it from byte {have}"),
                });
                kept = Some(partial);
            }
        }
    }
    let failures = failures.join("\n  ");
    Err(if refused {
        Error::Refused(failures)
    } else {
        Error::Interrupted(failures)
    })
}

/// The feed of `appliance` on the site `source` names: the site's
/// `feeds/<appliance>.xml`, unless `source` names a feed itself.
fn appliance_feed(source: &str, appliance: &str) -> Result<String> {
    if source.ends_with(".xml") {
        return Ok(source.to_owned());
    }
    let name =
        crate::model::Name::parse(appliance, "appliance").map_err(|reason| Error::Usage {
            option: "--appliance",
            value: appliance.to_owned(),
            reason,
        })?;
    let feed = crate::media::appliance_feed(name.as_str());
    Ok(
        match source.starts_with("http://") || source.starts_with("https://") {
            true => format!("{}/{feed}", source.trim_end_matches('/')),
            false => Path::new(source).join(feed).to_string_lossy().into_owned(),
        },
    )
}

/// `--require-provenance`: the feed must link provenance about the image
/// (or its whole release), and each such file, and every SBOM of it, must
/// be what the feed says, provenance about the image's very digest.
fn require_provenance(
    verify: &VerifyOptions,
    site: &site::PublishedSite,
    item: &Item,
    image: &Image,
) -> Result<()> {
    let release = &item.release;
    let name = &image.source.name;
    let linked = release.supply.iter().any(|f| {
        f.format.kind() == crate::supply::Kind::Provenance
            && f.image.as_ref().is_none_or(|n| n == name)
    });
    if !linked {
        return Err(Error::Refused(format!(
            "{} {}: the feed links no provenance for {name}; nothing was downloaded \
             (--require-provenance)",
            release.info.appliance, release.info.version
        )));
    }
    let report = site::verify_supply(verify, site, item, name);
    if report.ok {
        return Ok(());
    }
    let failures: Vec<String> = report.failures().map(|c| c.detail.clone()).collect();
    let failures = failures.join("\n  ");
    Err(match report.only_unreachable() {
        true => Error::Interrupted(format!(
            "the provenance of {name} could not be read; nothing was downloaded:\n  {failures}"
        )),
        false => Error::Refused(format!(
            "the provenance of {name} does not hold; nothing was downloaded:\n  {failures}"
        )),
    })
}

/// The newest release and image the channel, the policy, the host's
/// architecture and the formats allow.
fn choose<'a>(
    options: &PullOptions,
    items: &'a [Item],
    installed: Option<&RecordEntry>,
) -> Result<(&'a Item, &'a Image)> {
    let installed_version = installed.and_then(|e| Version::parse(&e.version).ok());
    let major = |v: &str| v.split(['.', '-', '+']).next().unwrap_or(v).to_owned();
    let mut candidates: Vec<(&Item, &Image, &Version)> = Vec::new();
    for item in items {
        let release = &item.release;
        let info = &release.info;
        if info.appliance.as_str() != options.appliance || info.channel.as_str() != options.channel
        {
            continue;
        }
        let v = &info.version;
        let allowed = match (options.policy, &installed_version, installed) {
            (Policy::Latest, _, _) | (_, None, _) | (_, _, None) => true,
            (Policy::CriticalOnly, Some(current), _) => {
                v == current || (info.critical && v > current)
            }
            (Policy::SameMajor, Some(_), Some(entry)) => major(v.as_str()) == major(&entry.version),
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
            candidates.push((item, image, v));
        }
    }
    candidates
        .into_iter()
        .max_by(|a, b| a.2.cmp(b.2))
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

/// Whether the image is in place: a file this user made, of the signed
/// length and SHA-256. One `pull` placed and that is unchanged since
/// (the inode, size and mtime its record keeps) is current without a read;
/// any other is hashed, so a run from cron does not read a multi-gigabyte
/// image every time. A recorded file that still hashes right gets its
/// record's stamp renewed.
fn in_place(
    dest: &Dir,
    image: &Image,
    record: &mut Record,
    warnings: &mut Vec<Warning>,
) -> Result<bool> {
    let name = &image.source.name;
    let Some(mine) = dest.open_mine(name, Access::Read, warnings)? else {
        return Ok(false);
    };
    if mine.stamp.size != image.digest.length {
        return Ok(false);
    }
    let sha256 = image.digest.sha256.to_hex();
    let entry = record
        .placed
        .iter_mut()
        .find(|e| e.file == *name && e.sha256 == sha256);
    if entry.as_ref().is_some_and(|e| e.stamp() == mine.stamp) {
        return Ok(true);
    }
    let (_, sha256) = fsutil::sha256_bounded(&mine.file, image.digest.length)
        .map_err(|(_, e)| Error::io("cannot read", dest.path_of(name), e))?;
    if sha256 != image.digest.sha256 {
        return Ok(false);
    }
    if let Some(entry) = entry {
        (entry.inode, entry.size, entry.mtime_ns) =
            (mine.stamp.inode, mine.stamp.size, mine.stamp.mtime_ns);
        save_record(dest, record)?;
    }
    Ok(true)
}

/// Why one source did not give the image.
enum Failure {
    /// It sent other bytes than the signed ones.
    Refused(String),
    /// The network failed; what arrived is kept.
    Interrupted(String),
}

/// The download in progress: `.vmcast-partial/<sha256>.part`, a file this
/// user made, open, with the SHA-256 of what it holds so far.
struct Partial {
    mine: Mine,
    path: PathBuf,
    have: u64,
    hasher: sha2::Sha256,
    resumed_from: u64,
}

impl Partial {
    /// The partial file a previous run left, hashed again to go on from
    /// there (never read past the signed length), or a new one.
    fn open(
        dir: &Dir,
        name: &FileName,
        image: &Image,
        warnings: &mut Vec<Warning>,
    ) -> Result<Partial> {
        let path = dir.path_of(name);
        let length = image.digest.length;
        let Some(mine) = dir.open_mine(name, Access::ReadWrite, warnings)? else {
            return Ok(Partial {
                mine: dir.create_new(name, fsutil::PUBLISHED_FILE_MODE)?,
                path,
                have: 0,
                hasher: sha2::Sha256::new(),
                resumed_from: 0,
            });
        };
        let mut partial = Partial {
            mine,
            path,
            have: 0,
            hasher: sha2::Sha256::new(),
            resumed_from: 0,
        };
        let hasher = &mut partial.hasher;
        let have = fsutil::read_bounded(&partial.mine.file, length, |c| hasher.update(c))
            .map_err(|(_, e)| Error::io("cannot read", &partial.path, e))?;
        if have > length {
            partial.restart()?;
        } else {
            partial.have = have;
            partial.resumed_from = have;
        }
        Ok(partial)
    }

    /// Empties the file, to start over.
    fn restart(&mut self) -> Result<()> {
        self.mine
            .file
            .set_len(0)
            .map_err(|e| Error::io("cannot truncate", &self.path, e))?;
        self.hasher = sha2::Sha256::new();
        self.have = 0;
        self.resumed_from = 0;
        Ok(())
    }

    /// Downloads the rest of the image from `url`, checking length and
    /// SHA-256 as the bytes arrive. `Err` for a failure of this machine,
    /// `Ok(Err)` for one of the source.
    fn fetch(
        &mut self,
        client: &net::Client,
        url: &url::Url,
        image: &Image,
        progress: &dyn Progress,
    ) -> Result<std::result::Result<(), Failure>> {
        let length = image.digest.length;
        let net_failure = |e: net::NetError| {
            let why = e.to_string();
            if e.is_refusal() {
                Failure::Refused(why)
            } else {
                Failure::Interrupted(why)
            }
        };
        if self.have < length {
            let (start, response) = match client.get_from(url, self.have) {
                Ok(got) => got,
                Err(e) => return Ok(Err(net_failure(e))),
            };
            if start < self.have {
                // The server ignores ranges: it sends the whole file.
                self.restart()?;
            }
            let streamed = response.stream(start, length, |chunk| {
                self.mine.file.write_all_at(chunk, self.have)?;
                self.hasher.update(chunk);
                self.have += chunk.len() as u64;
                progress.fetched(chunk.len() as u64);
                Ok(())
            });
            match streamed {
                Ok(_) => {}
                Err(StreamError::Sink(e)) => return Err(Error::io("cannot write", &self.path, e)),
                Err(StreamError::Net(e)) => return Ok(Err(net_failure(e))),
            }
        }
        let digest = Sha256(self.hasher.clone().finalize().into());
        if digest != image.digest.sha256 {
            return Ok(Err(Failure::Refused(format!(
                "{url}: SHA-256 mismatch: the signed feed says {}, the download hashes to {digest}",
                image.digest.sha256
            ))));
        }
        Ok(Ok(()))
    }
}

/// Removes the oldest images of `appliance` that `pull` placed, keeping
/// `keep`: only a file this user made whose inode, size and mtime are
/// still the recorded ones. Any other is kept, with a warning, and leaves
/// the record: it is no longer `pull`'s.
fn prune(
    dest: &Dir,
    record: &mut Record,
    appliance: &str,
    keep: usize,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<PathBuf>> {
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
        let path = dest.path_of(&entry.file);
        match dest.remove_unchanged(&entry.file, entry.stamp())? {
            Removal::Removed => removed.push(path),
            Removal::Gone => {}
            Removal::Kept(why) => warnings.push(Warning::file(
                &path,
                format_args!(
                    "kept, not removed (--keep): {why} since pull placed it, so it is no \
                     longer pull's"
                ),
            )),
        }
    }
    removed.reverse();
    Ok(removed)
}

/// The record, as `load_record` reads it: the whole check, for fuzzing and
/// for tools. Returns how many images it lists.
pub fn read_record(data: &[u8]) -> std::result::Result<usize, String> {
    parse_record(data).map(|r| r.placed.len())
}

fn parse_record(data: &[u8]) -> std::result::Result<Record, String> {
    let record: Record =
        serde_json::from_slice(data).map_err(|e| format!("not a pull record ({e})"))?;
    if record.format != RECORD_FORMAT {
        return Err(format!("unknown format {:?}", record.format));
    }
    Ok(record)
}

fn load_record(dest: &Dir, warnings: &mut Vec<Warning>) -> Result<Record> {
    let path = dest.path_of(&RECORD);
    let Some(mine) = dest.open_mine(&RECORD, Access::Read, warnings)? else {
        return Ok(Record {
            format: RECORD_FORMAT.into(),
            placed: Vec::new(),
        });
    };
    let size = mine.stamp.size;
    let data = fsutil::read_open(mine.file, &path, MAX_TEXT_FILE, size)?;
    parse_record(&data)
        .map_err(|m| Error::file(&path, format_args!("{m}; remove it to start over")))
}

fn save_record(dest: &Dir, record: &Record) -> Result<()> {
    let mut text = serde_json::to_string_pretty(record).expect("the record serializes");
    text.push('\n');
    dest.replace(&RECORD, &RECORD_NEXT, text.as_bytes())
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
