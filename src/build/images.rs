//! The hash stage as the build runs it: one request per image (where it
//! lands in the staging directory, where the previous output has it, what
//! the catalogs want of it), the hash cache, sidecars and the previous
//! output as shortcuts, one read for each image they do not spare with the
//! sinks plugged into it ([`Extras`]: the catalogs', the zsync control
//! file), and the cache kept even when a later stage fails.

use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::cache::{self, FileState, HashCache};
use crate::catalog;
use crate::catalog::simplestreams::{Fingerprint, FingerprintSink};
use crate::catalog::vagrant::{BoxJob, BoxWriter};
use crate::config::{Config, ImageMode};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hash::{self, Chunk, Facts, Progress, Sink, Start};
use crate::model::{
    self, Combined, Digested, FileDigest, FileId, ImageInfo, RelPath, Seen, Sha512,
};
use crate::par;
use crate::place::{self, Placement};
use crate::scan;
use crate::warning::Warning;
use crate::write;
use crate::zsync;

use super::BuildOptions;

/// What the hash stage gives the rest of the build.
pub(super) struct Hashed {
    pub digests: FxHashMap<RelPath, Digested>,
    /// The Vagrant box of each image that has one.
    pub boxes: FxHashMap<RelPath, FileDigest>,
    pub stats: hash::Stats,
    /// The cache, to record the new output in once it is in place.
    pub cache: Option<HashCache>,
    /// The images placed in the staging directory (unless `image_mode =
    /// "none"`), less those whose hard link was there already: the output
    /// record has nothing new to say of them.
    pub placed: FxHashSet<RelPath>,
    /// The images whose box or control file this build made or took.
    pub made: FxHashSet<RelPath>,
    /// The zsync control file of each image that has one, made or taken.
    pub zsyncs: FxHashMap<RelPath, FileDigest>,
    /// The boxes and control files the staging directory held already, by
    /// their place in the previous output (canonical), and the state the
    /// cache recorded them in there, which nothing moved. Keyed by the
    /// path's bytes: a `Path` hashes name by name, and the record looks up
    /// one for each of thousands of images.
    pub files_held: FxHashMap<OsString, FileState>,
}

/// Digests every image the scan found (read, or from the cache or a
/// sidecar) and places it in the staging directory.
#[allow(clippy::too_many_arguments)]
pub(super) fn hash_images(
    config: &Config,
    options: &BuildOptions,
    plan: &scan::Plan,
    staging: &write::Staging,
    cache: Option<HashCache>,
    threads: usize,
    progress: &dyn Progress,
    warnings: &mut Vec<Warning>,
) -> Result<Hashed> {
    let requests = hash_requests(config, plan, staging, threads)?;
    let mut shortcuts = Shortcuts {
        cache,
        sidecars: config.trust_sidecars,
        verify_cache: options.verify_cache,
    };
    let hashed = digest_all(&requests, &mut shortcuts, threads, progress)?;
    let mut cache = shortcuts.cache.take();
    // Keep what was read even if a later stage fails, when it is more than
    // saving the cache twice writes (one new release on a site of
    // thousands reads less), and the digests `--verify-cache` corrected:
    // the full record is saved once the new output is in place.
    if let Some(cache) = cache
        .as_mut()
        .filter(|c| hashed.stats.hashed_bytes > c.size() || !hashed.mismatches.is_empty())
    {
        cache.save()?;
    }
    warnings.extend(hashed.warnings);
    if !hashed.mismatches.is_empty() {
        return Err(Error::StaleCache {
            entries: hashed.mismatches,
        });
    }
    let placed = (requests.iter().map(|r| &r.id))
        .filter(|id| !hashed.held.contains(*id))
        .cloned()
        .collect();
    par::drop_aside(requests);
    Ok(Hashed {
        made: (hashed.boxes.keys())
            .chain(hashed.zsyncs.keys())
            .cloned()
            .collect(),
        digests: hashed.digests,
        boxes: hashed.boxes,
        zsyncs: hashed.zsyncs,
        stats: hashed.stats,
        files_held: hashed.files_held,
        cache,
        placed,
    })
}

/// One request per image, named by its path in the site, saying where in
/// the staging directory it must also land and where the previous output
/// has it; made on every core.
fn hash_requests(
    config: &Config,
    plan: &scan::Plan,
    staging: &write::Staging,
    threads: usize,
) -> Result<Vec<Request>> {
    let previous_root = match config.image_mode {
        ImageMode::None => None,
        ImageMode::Copy | ImageMode::Link => match std::fs::canonicalize(&config.output_dir) {
            Ok(root) => Some(root),
            // A first build: no previous output to take copies from.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("cannot resolve", &config.output_dir, e)),
        },
    };
    // Boxes are files of ours: in the output whatever image_mode says.
    let previous_output = match std::fs::canonicalize(&config.output_dir) {
        Ok(root) => Some(root),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("cannot resolve", &config.output_dir, e)),
    };
    let images: Vec<(&scan::PlannedRelease, &model::ImageSource, bool)> = plan
        .releases
        .iter()
        .flat_map(|r| {
            let images: Vec<&model::ImageSource> = r.images.iter().collect();
            let sha512 = catalog::virt_builder::wants_sha512(config, &r.info, &images);
            r.images
                .iter()
                .zip(sha512)
                .map(move |(i, sha512)| (r, i, sha512))
        })
        .collect();
    // Each request prepares its own places in the staging directory.
    par::try_map(
        threads,
        &images,
        &par::Order::INPUT,
        || (),
        |(), &(release, image, sha512), _| {
            let info = &release.info;
            let vagrant_box = match config.catalogs.vagrant && catalog::vagrant::boxable(image) {
                true => {
                    catalog::vagrant::check_version(info)?;
                    let path = catalog::vagrant::box_path(info, image)?;
                    Some(Made {
                        job: BoxJob {
                            path: staging.prepare(path.as_str())?,
                            mtime: catalog::vagrant::box_mtime(info),
                        },
                        previous: previous_output
                            .as_ref()
                            .map(|root| root.join(path.as_str())),
                    })
                }
                false => None,
            };
            // A compressed image changes whole when anything in it does.
            let zsync = match config.makes_zsync() && image.compression.is_none() {
                true => {
                    let path = image.zsync_path();
                    Some(Made {
                        job: zsync::Job {
                            path: staging.prepare(path.as_str())?,
                            filename: image.name.to_string(),
                            url: relative_url(&image.url),
                        },
                        previous: previous_output
                            .as_ref()
                            .map(|root| root.join(path.as_str())),
                    })
                }
                false => None,
            };
            let place = match config.image_mode {
                ImageMode::None => Placement::Nowhere,
                ImageMode::Copy => Placement::Copy(staging.prepare(image.site_path.as_str())?),
                ImageMode::Link => Placement::Link(staging.prepare(image.site_path.as_str())?),
            };
            Ok(Some(Request {
                holds: staging.holds(image.site_path.as_str()),
                id: image.site_path.clone(),
                source: image.source.clone(),
                real: image.real.clone(),
                seen: image.seen,
                place,
                previous: previous_root
                    .as_ref()
                    .map(|root| root.join(image.site_path.as_str())),
                vagrant_box,
                zsync,
                sha512,
                lxd: catalog::simplestreams::metadata_tarball(
                    config,
                    &release.info,
                    &release.images,
                    image,
                )?
                .map(Fingerprint::new),
            }))
        },
    )
}

/// One image to obtain a digest for.
#[derive(Debug, Clone)]
struct Request {
    /// The image's identity: its path in the site, unique in a build.
    id: RelPath,
    source: PathBuf,
    /// The source resolved (the cache's key).
    real: PathBuf,
    /// The file the scan vetted, as its stat saw it.
    seen: Seen,
    place: Placement,
    /// What the staging directory held at its place before the build.
    holds: write::Holds,
    /// Where the previous output holds this site path (canonical), if
    /// there is a previous output: its copy may serve again.
    previous: Option<PathBuf>,
    /// Its SHA-512 is needed (the virt-builder index lists it): a cache
    /// entry or sidecar without one does not spare the read.
    sha512: bool,
    /// A Vagrant box to make of the image.
    vagrant_box: Option<Made<BoxJob>>,
    /// A zsync control file to make of the image.
    zsync: Option<Made<zsync::Job>>,
    /// LXD's fingerprint is wanted too: the simplestreams catalog offers
    /// the image to LXD.
    lxd: Option<Fingerprint>,
}

/// A file of ours to make of an image, or to take from the previous output.
#[derive(Debug, Clone)]
struct Made<J> {
    /// Where it goes in the new output, and how it is made.
    job: J,
    /// Where the previous output holds it (canonical): when the cache
    /// recorded it there with the digest the cache remembers for this
    /// image, it is taken by hard link.
    previous: Option<PathBuf>,
}

/// What the build makes of an image in the read that hashes it, besides
/// its SHA-256 and facts: each thing only for the images a catalog wants
/// it of.
#[derive(Debug)]
struct Extras {
    /// For the virt-builder index.
    sha512: Option<hash::Sha512Sum>,
    /// For the simplestreams catalog's LXD items.
    lxd: Option<Fingerprint>,
    /// For the Vagrant catalog.
    vagrant_box: Option<BoxJob>,
    /// For delta downloads.
    zsync: Option<zsync::Job>,
}

/// [`Extras`] being made, all from the same chunks.
struct ExtrasSink {
    sha512: Option<sha2::Sha512>,
    lxd: Option<FingerprintSink>,
    vagrant_box: Option<BoxWriter>,
    zsync: Option<zsync::Maker>,
}

/// What [`Extras`] made.
struct ExtrasMade {
    sha512: Option<Sha512>,
    lxd: Option<Combined>,
    vagrant_box: Option<FileDigest>,
    zsync: Option<FileDigest>,
}

impl Start for Extras {
    type Sink = ExtrasSink;

    fn start(&self, length: u64) -> Result<ExtrasSink> {
        Ok(ExtrasSink {
            sha512: self.sha512.start(length)?,
            lxd: self.lxd.start(length)?,
            vagrant_box: self.vagrant_box.start(length)?,
            zsync: self.zsync.start(length)?,
        })
    }

    fn sha1(&self) -> bool {
        self.zsync.sha1()
    }
}

impl Sink for ExtrasSink {
    type Output = ExtrasMade;

    fn update(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        self.sha512.update(chunk)?;
        self.lxd.update(chunk)?;
        self.vagrant_box.update(chunk)?;
        self.zsync.update(chunk)
    }

    fn finish(self, image: &Facts<'_>) -> Result<ExtrasMade> {
        Ok(ExtrasMade {
            sha512: self.sha512.finish(image)?,
            lxd: self.lxd.finish(image)?,
            vagrant_box: self.vagrant_box.finish(image)?,
            zsync: self.zsync.finish(image)?,
        })
    }
}

/// Where digests may come from without reading the image.
struct Shortcuts {
    cache: Option<HashCache>,
    /// Trust `vmcast-gen hash` sidecars whose size and mtime still match.
    sidecars: bool,
    /// Read every image anyway and report where the cache was wrong.
    verify_cache: bool,
}

/// The digests of every request, by the request's id.
struct Outcome {
    digests: FxHashMap<RelPath, Digested>,
    /// The Vagrant box of each request that asked for one.
    boxes: FxHashMap<RelPath, FileDigest>,
    /// The zsync control file of each request that asked for one.
    zsyncs: FxHashMap<RelPath, FileDigest>,
    stats: hash::Stats,
    warnings: Vec<Warning>,
    /// With `verify_cache`: every image whose cached digest was wrong.
    mismatches: Vec<String>,
    /// The images whose hard link the staging directory held already:
    /// their state did not move, so the cache's record of them stands.
    held: FxHashSet<RelPath>,
    /// The boxes and control files the staging directory held already.
    files_held: FxHashMap<OsString, FileState>,
}

/// What an image is, from its headers alone (read with `pread`, the
/// descriptor's offset untouched). `None` for a tar (an OVA, an XVA), whose
/// machine facts need the whole archive: it is read in full.
fn probe(file: &File, path: &Path, len: u64) -> Result<Option<ImageInfo>> {
    let read_at = |offset: u64, len: usize| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match rustix::io::pread(file, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io("cannot read", path, e.into())),
            }
        }
        buf.truncate(done);
        Ok(buf)
    };
    crate::inspect::probe(len, read_at).map_err(|e| match e {
        crate::inspect::ProbeError::Read(e) => e,
        crate::inspect::ProbeError::Content(m) => Error::file(path, m),
    })
}

/// The previous output's file at `path`, if the cache recorded it in its
/// present state with this digest. Opened without following a symbolic
/// link; a file that is gone or is not a regular file is simply not
/// reused.
fn previous_copy(cache: &HashCache, path: &Path, digest: &FileDigest) -> Option<place::Previous> {
    let (_, meta) = fsutil::open_regular(path, false).ok()?;
    cache
        .holds(&digest.sha256, &FileState::of(&meta))
        .then(|| place::Previous {
            path: path.to_path_buf(),
            id: FileId::of(&meta),
        })
}

/// A file of ours made of an image (its box, its control file) whose
/// digest the cache knows, taken from the previous output into `dst`
/// when the cache vouches for it there, or, for a `small` one (a few
/// thousandths of its image), when it hashes to that digest; `None` when
/// it must be made. One that `dst` holds already, in the very state the
/// cache recorded it in at its place in the previous output, is kept
/// with one stat, and goes into `held` with that state.
fn reuse(
    cache: Option<&HashCache>,
    digest: Option<FileDigest>,
    previous: Option<&Path>,
    dst: &Path,
    small: bool,
    held: &mut Vec<(PathBuf, FileState)>,
) -> Result<Option<FileDigest>> {
    let (Some(cache), Some(digest), Some(previous)) = (cache, digest, previous) else {
        return Ok(None);
    };
    // The same device, inode, size, mtime and ctime: the same file, which
    // nothing wrote to since the cache recorded its bytes.
    if let Ok(meta) = std::fs::symlink_metadata(dst)
        && meta.is_file()
    {
        let state = FileState::of(&meta);
        if cache.holds(&digest.sha256, &state) {
            held.push((previous.to_path_buf(), state));
            return Ok(Some(digest));
        }
    }
    let old = match previous_copy(cache, previous, &digest) {
        Some(old) => old,
        // The cache keeps no record of it (a build that failed saved its
        // own entries only): reading it costs less than reading the image.
        None if small => match hashes_to(previous, &digest) {
            Some(old) => old,
            None => return Ok(None),
        },
        None => return Ok(None),
    };
    // The reused spare may hold that very file already.
    if place::holds(dst, Some(old.id))? {
        return Ok(Some(digest));
    }
    Ok(fsutil::hard_link(&old.path, dst, old.id)?.then_some(digest))
}

/// The file at `path`, if it is a regular file (not followed through a
/// link) with these bytes.
fn hashes_to(path: &Path, digest: &FileDigest) -> Option<place::Previous> {
    let (file, meta) = fsutil::open_regular(path, false).ok()?;
    if meta.len() != digest.length {
        return None;
    }
    let (_, sha256) = fsutil::sha256_bounded(&file, digest.length).ok()?;
    (sha256 == digest.sha256).then(|| place::Previous {
        path: path.to_path_buf(),
        id: FileId::of(&meta),
    })
}

/// Obtains a digest for every image: from the cache or a sidecar when they
/// are trusted and current, else by reading it (once, copying as it goes).
/// Places each image where asked. The cache is updated but not saved.
/// The look-ups run on every core: on a warm rebuild of thousands of
/// images, opening, checking and placing each is most of this stage.
fn digest_all(
    requests: &[Request],
    shortcuts: &mut Shortcuts,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let mut outcome = Outcome {
        digests: FxHashMap::with_capacity_and_hasher(requests.len(), Default::default()),
        boxes: FxHashMap::default(),
        zsyncs: FxHashMap::with_capacity_and_hasher(requests.len(), Default::default()),
        stats: hash::Stats::default(),
        warnings: Vec::new(),
        mismatches: Vec::new(),
        held: FxHashSet::with_capacity_and_hasher(requests.len(), Default::default()),
        files_held: FxHashMap::default(),
    };
    let mut ids = FxHashSet::with_capacity_and_hasher(requests.len(), Default::default());
    for req in requests {
        if !ids.insert(&req.id) {
            return Err(Error::file(
                &req.source,
                format_args!("is a second image published as {}", req.id),
            ));
        }
    }
    let looked = par::try_map(
        threads,
        requests,
        &par::Order::INPUT,
        || (),
        |(), req, _| look_up(req, shortcuts).map(Some),
    )?;
    let mut pending = Vec::new();
    for (req, looked) in requests.iter().zip(looked) {
        outcome.warnings.extend(looked.warnings);
        outcome.files_held.extend(
            (looked.files_held.into_iter()).map(|(path, state)| (path.into_os_string(), state)),
        );
        match looked.found {
            Found::Read { cached, taken, job } => {
                pending.push((Pending { req, cached, taken }, *job))
            }
            Found::Unread(unread) => record_unread(req, unread, shortcuts, &mut outcome),
        }
    }
    read_pending(pending, shortcuts, threads, progress, &mut outcome)?;
    Ok(outcome)
}

/// An image that must be read, and what was known of it.
struct Pending<'a> {
    req: &'a Request,
    /// The cache's entry, which `--verify-cache` checks against the read.
    cached: Option<Digested>,
    /// What was taken from the previous output, and is not made again.
    taken: Files,
}

/// The files of ours made of an image, by their digests: taken from the
/// previous output, or made in the read.
#[derive(Debug, Clone, Copy, Default)]
struct Files {
    vagrant_box: Option<FileDigest>,
    zsync: Option<FileDigest>,
}

/// What the shortcuts gave for one image.
struct Looked {
    found: Found,
    warnings: Vec<Warning>,
    /// The box and control file the staging directory held already, by
    /// their place in the previous output, in the state found there.
    files_held: Vec<(PathBuf, FileState)>,
}

enum Found {
    /// Known and placed without a read.
    Unread(Unread),
    /// To be read, with what was known of it ([`Pending`]).
    Read {
        cached: Option<Digested>,
        taken: Files,
        job: Box<hash::Job<Extras>>,
    },
}

/// An image the shortcuts knew, placed already.
struct Unread {
    state: FileState,
    known: Digested,
    /// Known from a sidecar, not from the cache.
    sidecar: bool,
    taken: Files,
    /// The staging directory held its hard link already.
    held: bool,
}

/// Looks up the shortcuts for one image: the cache, a sidecar, its box and
/// its control file in the previous output. Places an image they know (no
/// read); returns the read of one they do not. Touches nothing but the
/// image's own places in the staging directory, so that images can be
/// looked up side by side; what is recorded is [`record_unread`]'s.
fn look_up(req: &Request, shortcuts: &Shortcuts) -> Result<Looked> {
    let mut warnings = Vec::new();
    let mut files_held = Vec::new();
    let took = match held_link(req, shortcuts, &mut files_held)? {
        Short::Held(unread) => {
            return Ok(Looked {
                found: Found::Unread(*unread),
                warnings,
                files_held,
            });
        }
        Short::Took(took) => Some(*took),
        Short::Nothing => None,
    };
    // One open per look: what is checked (no symbolic link, a regular
    // file, the very file the scan saw) is what is placed or probed.
    let (file, meta) = fsutil::open_vetted(&req.real, &req.source, req.seen.state.id())?;
    let state = FileState::of(&meta);
    let opened = place::Opened {
        file: &file,
        meta: &meta,
        real: &req.real,
    };
    let cached = cached(req, shortcuts, &state);
    // A sidecar has no LXD fingerprint.
    let sidecar = match shortcuts.sidecars && req.lxd.is_none() && cached.is_none() {
        true => sidecar(req, &file, &state, &mut warnings)?,
        false => None,
    };
    // What the one-stat look-up took is not taken twice: taking a box or a
    // control file moves its ctime, and a second try would no longer know it.
    let taken = match took {
        Some((took_in, files)) if took_in == state => files,
        _ => taken(req, shortcuts, &state, &mut files_held)?,
    };
    let known = match (shortcuts.verify_cache, cached.clone(), sidecar) {
        _ if !taken.ready(req) => None,
        (true, _, _) => None,
        (false, Some(d), _) => Some((d, false)),
        (false, None, Some(d)) => Some((d, true)),
        (false, None, None) => None,
    };
    let found = match known {
        Some((known, sidecar)) => {
            let previous = || {
                let cache = shortcuts.cache.as_ref()?;
                previous_copy(cache, req.previous.as_deref()?, &known.digest)
            };
            let held = place::unread(&opened, &req.place, previous)?;
            Found::Unread(Unread {
                state,
                known,
                sidecar,
                taken,
                held,
            })
        }
        None => {
            let job = Box::new(hash::Job {
                source: req.source.clone(),
                open: hash::Open::Vetted {
                    real: req.real.clone(),
                    state,
                },
                size_hint: req.seen.state.size,
                copy_to: place::for_read(&opened, &req.place)?,
                sink: Extras {
                    sha512: req.sha512.then_some(hash::Sha512Sum),
                    lxd: req.lxd.clone(),
                    vagrant_box: (req.vagrant_box.as_ref())
                        .filter(|_| taken.vagrant_box.is_none())
                        .map(|b| b.job.clone()),
                    zsync: (req.zsync.as_ref())
                        .filter(|_| taken.zsync.is_none())
                        .map(|z| z.job.clone()),
                },
            });
            Found::Read { cached, taken, job }
        }
    };
    Ok(Looked {
        found,
        warnings,
        files_held,
    })
}

/// An image linked into the site that the cache knows, with its box and
/// control file, and whose hard link the staging directory holds already
/// (the spare reused): one stat and no open. The scan's stat of the
/// image (by its resolved path, not following a link) is the vetting, and
/// a stat of the link shows the very file (device and inode); nothing is
/// read, probed or placed, which is all an open would guard. Anything else goes the long way, which says what
/// is wrong, if anything is.
fn held_link(
    req: &Request,
    shortcuts: &Shortcuts,
    files_held: &mut Vec<(PathBuf, FileState)>,
) -> Result<Short> {
    let Placement::Link(dst) = &req.place else {
        return Ok(Short::Nothing);
    };
    if shortcuts.cache.is_none() || shortcuts.verify_cache {
        return Ok(Short::Nothing);
    }
    let seen = req.seen;
    if !seen.world_readable {
        return Ok(Short::Nothing);
    }
    let state = seen.state;
    let Some(known) = cached(req, shortcuts, &state) else {
        return Ok(Short::Nothing);
    };
    // The spare's listing tells, else a stat.
    let linked = match req.holds {
        write::Holds::File(id) => id == seen.state.id(),
        write::Holds::Nothing => false,
        write::Holds::Unknown => std::fs::symlink_metadata(dst)
            .is_ok_and(|m| m.is_file() && FileId::of(&m) == seen.state.id()),
    };
    if !linked {
        return Ok(Short::Nothing);
    }
    let taken = taken(req, shortcuts, &state, files_held)?;
    if !taken.ready(req) {
        return Ok(Short::Took(Box::new((state, taken))));
    }
    Ok(Short::Held(Box::new(Unread {
        state,
        known,
        sidecar: false,
        taken,
        held: true,
    })))
}

/// What [`held_link`] found.
enum Short {
    /// Known, and its link held: nothing more to do.
    Held(Box<Unread>),
    /// Not all the image's files could be taken: those that were, with the
    /// image's state then, for the long way to keep.
    Took(Box<(FileState, Files)>),
    Nothing,
}

/// The cache's entry for an image in `state`, if it has every digest the
/// request wants.
fn cached(req: &Request, shortcuts: &Shortcuts, state: &FileState) -> Option<Digested> {
    let prefix = req.lxd.as_ref().map(Fingerprint::prefix);
    shortcuts
        .cache
        .as_ref()
        .and_then(|c| c.get(&req.real, state))
        .filter(|c| !req.sha512 || c.digest.sha512.is_some())
        .filter(|c| prefix.is_none() || c.lxd.map(|c| c.prefix) == prefix)
}

/// The box and control file of an image in `state`, taken as they were
/// where the cache vouches for them (never with `--verify-cache`): an
/// image whose files are not all taken is read.
fn taken(
    req: &Request,
    shortcuts: &Shortcuts,
    state: &FileState,
    files_held: &mut Vec<(PathBuf, FileState)>,
) -> Result<Files> {
    let canonical = &req.real;
    let cache = shortcuts.cache.as_ref().filter(|_| !shortcuts.verify_cache);
    Ok(Files {
        vagrant_box: match &req.vagrant_box {
            Some(b) => reuse(
                cache,
                cache.and_then(|c| c.get_box(canonical, state, b.job.mtime)),
                b.previous.as_deref(),
                &b.job.path,
                false,
                files_held,
            )?,
            None => None,
        },
        zsync: match &req.zsync {
            Some(z) => reuse(
                cache,
                cache.and_then(|c| c.get_zsync(canonical, state, &z.job.filename)),
                z.previous.as_deref(),
                &z.job.path,
                true,
                files_held,
            )?,
            None => None,
        },
    })
}

impl Files {
    /// Whether every file the request asks for is taken.
    fn ready(&self, req: &Request) -> bool {
        (req.vagrant_box.is_none() || self.vagrant_box.is_some())
            && (req.zsync.is_none() || self.zsync.is_some())
    }
}

/// Records an image the shortcuts knew, and what was made of it.
fn record_unread(req: &Request, unread: Unread, shortcuts: &mut Shortcuts, outcome: &mut Outcome) {
    let Unread {
        state,
        known,
        sidecar,
        taken,
        held,
    } = unread;
    let stats = &mut outcome.stats;
    match sidecar {
        false => {
            stats.cached_files += 1;
            stats.cached_bytes += known.digest.length;
        }
        true => {
            stats.sidecar_files += 1;
            stats.sidecar_bytes += known.digest.length;
        }
    }
    if held {
        outcome.held.insert(req.id.clone());
    }
    if let Some(cache) = shortcuts.cache.as_mut() {
        cache.insert(&req.real, state, &known);
    }
    record_files(req, taken, shortcuts, outcome);
    outcome.digests.insert(req.id.clone(), known);
}

/// Records the box and the control file of an image the cache has just
/// recorded, taken or made.
fn record_files(req: &Request, files: Files, shortcuts: &mut Shortcuts, outcome: &mut Outcome) {
    if let (Some(b), Some(digest)) = (&req.vagrant_box, files.vagrant_box) {
        if let Some(cache) = shortcuts.cache.as_mut() {
            cache.insert_box(&req.real, b.job.mtime, &digest);
        }
        outcome.boxes.insert(req.id.clone(), digest);
    }
    if let (Some(z), Some(digest)) = (&req.zsync, files.zsync) {
        if let Some(cache) = shortcuts.cache.as_mut() {
            cache.insert_zsync(&req.real, &z.job.filename, &digest);
        }
        outcome.zsyncs.insert(req.id.clone(), digest);
    }
}

/// A sidecar's digest, with what the image is from its own bytes (its
/// headers, read here), never from the hint; `None`, perhaps with a
/// warning, when there is none this build can use.
fn sidecar(
    req: &Request,
    file: &File,
    state: &FileState,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Digested>> {
    match cache::Sidecar::read(&req.source, state) {
        Some(Ok(digest)) if req.sha512 && digest.sha512.is_none() => {
            warnings.push(Warning::file(
                &cache::sidecar_path(&req.source),
                "records no SHA-512, which the virt-builder index needs; the image is \
                 read for it. Write sidecars with `vmcast-gen hash --sha512`",
            ));
            Ok(None)
        }
        Some(Ok(digest)) => Ok(probe(file, &req.source, state.size)?.map(|info| Digested {
            digest,
            info,
            lxd: None,
        })),
        Some(Err(warning)) => {
            warnings.push(warning);
            Ok(None)
        }
        None => Ok(None),
    }
}

/// A relative URL of the image, from a file beside it: the last segment of
/// its URL, percent-encoded as there.
fn relative_url(url: &url::Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default()
        .to_owned()
}

/// Reads the images no shortcut knew, all at once, and records what the
/// reads gave.
fn read_pending(
    pending: Vec<(Pending, hash::Job<Extras>)>,
    shortcuts: &mut Shortcuts,
    threads: usize,
    progress: &dyn Progress,
    outcome: &mut Outcome,
) -> Result<()> {
    let (pending, jobs): (Vec<Pending>, Vec<hash::Job<Extras>>) = pending.into_iter().unzip();
    let started = std::time::Instant::now();
    let hashed = hash::hash_all(&jobs, threads, progress)?;
    outcome.stats.hash_time = started.elapsed();
    // hash_all answers in job order.
    for ((p, job), h) in pending.into_iter().zip(&jobs).zip(hashed) {
        let digest = FileDigest {
            length: h.length,
            sha256: h.sha256,
            sha512: h.made.sha512,
        };
        outcome.stats.hashed_files += 1;
        outcome.stats.hashed_bytes += digest.length;
        if let Some(c) = p
            .cached
            .map(|c| c.digest)
            .filter(|c| !c.same_bytes(&digest))
        {
            outcome.mismatches.push(format!(
                "{}: the cache says {} ({} bytes), the file hashes to {} ({} bytes)",
                job.source.display(),
                c.sha256,
                c.length,
                digest.sha256,
                digest.length
            ));
        }
        let digested = Digested {
            digest,
            info: h.info,
            lxd: h.made.lxd,
        };
        if let Some(cache) = shortcuts.cache.as_mut() {
            cache.insert(&p.req.real, h.state, &digested);
        }
        let files = Files {
            vagrant_box: h.made.vagrant_box.or(p.taken.vagrant_box),
            zsync: h.made.zsync.or(p.taken.zsync),
        };
        record_files(p.req, files, shortcuts, outcome);
        outcome.digests.insert(p.req.id.clone(), digested);
    }
    Ok(())
}

/// The hash cache's file: `--cache-dir` or `VMCAST_CACHE_DIR`, else the
/// config's `cache_dir`, else the user's cache directory; none with
/// `--no-cache`. ([`HashCache::load`] warns of one that cannot be used,
/// and starts empty.)
pub(super) fn cache_file(config: &Config, options: &BuildOptions) -> Result<Option<PathBuf>> {
    if options.no_cache {
        return Ok(None);
    }
    let dir = options
        .cache_dir
        .clone()
        .or_else(|| config.cache_dir.clone())
        .or_else(|| options.default_cache_dir.clone());
    match dir {
        Some(dir) => Ok(Some(HashCache::file_for(
            &dir,
            &fsutil::canonicalize(&config.path)?,
        ))),
        None => Ok(None),
    }
}
