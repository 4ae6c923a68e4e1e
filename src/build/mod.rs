//! `build`: the whole pipeline, one stage after the other, data flowing one
//! way: config → scan → hash → assemble → render → sign and write → swap.
//! Each stage is its own module; this one only runs them in order and
//! holds what spans them (the lock, the staging directory, the keys).

mod assemble;
mod clock;
mod images;
mod kept;
mod output;

use std::panic::resume_unwind;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use self::clock::{Clock, Prior};
use crate::cache::HashCache;
use crate::catalog;
use crate::config::{self, Config, Overrides};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hash::{self, Progress};
use crate::keys::{self, PasswordPrompt};
use crate::model::{Name, Release, Sha256};
use crate::par;
use crate::previous::{self, Previous};
use crate::render::{self, Site};
use crate::scan;
use crate::sign::{self, PublicKey};
use crate::supply;
use crate::warning::Warning;
use crate::write;

/// Everything `build` needs beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub config: PathBuf,
    pub overrides: Overrides,
    /// The key's text from the environment, used when no key file is given
    /// on the command line.
    pub secret_key_text: Option<String>,
    /// The OpenPGP secret key's text from the environment
    /// (`VMCAST_OPENPGP_KEY`), used instead of the config's
    /// `[catalogs] openpgp_key`.
    pub openpgp_key_text: Option<String>,
    /// The build timestamp; `None` means now.
    pub build_time: Option<DateTime<Utc>>,
    /// Threads for hashing, reading notes, rendering and signing; `None`
    /// means one per core.
    pub threads: Option<usize>,
    /// The hash cache directory from the command line or environment.
    pub cache_dir: Option<PathBuf>,
    /// Where the cache lives when nothing else says (the user's cache dir).
    pub default_cache_dir: Option<PathBuf>,
    /// Ignore the cache: hash every image (and do not write the cache).
    pub no_cache: bool,
    /// Hash every image and fail on any cached digest that was wrong.
    pub verify_cache: bool,
    /// A preview: signed with a throwaway key (one per process), whatever
    /// key is configured, so the real key never signs a draft nor stays
    /// unlocked in a long-running process.
    pub preview: bool,
    /// Build on this published site (`--previous`), over the config's.
    pub previous: Option<String>,
    /// Build even with a sequence (`SOURCE_DATE_EPOCH`) that takes the
    /// site built on or replaced backwards (`--allow-rollback`).
    pub allow_rollback: bool,
    /// Images allowed to differ from the previous site's under the same
    /// published name (`--replace NAME`).
    pub replace: Vec<String>,
    /// The S3-compatible endpoint for an `s3://` previous site.
    pub endpoint: Option<String>,
    /// The PKCS#11 module of a `pkcs11:` secret key whose URI names none
    /// (`VMCAST_PKCS11_MODULE`).
    pub pkcs11_module: Option<PathBuf>,
}

/// One published image, for reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    pub appliance: String,
    pub version: String,
    pub path: String,
    pub format: String,
    pub length: u64,
    pub virtual_size: Option<u64>,
    pub sha256: Sha256,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct Report {
    pub published: Vec<ImageSummary>,
    pub output_dir: PathBuf,
    pub appliances: usize,
    pub releases: usize,
    pub images: usize,
    /// Images in clouds (`[[cloud_image]]`), named by the feed, not hosted.
    pub cloud_images: usize,
    pub feeds: Vec<String>,
    /// The appliances' feeds of `feeds` kept as the site this build follows
    /// published them, signatures and all: unchanged since an earlier build.
    pub kept_feeds: Vec<String>,
    /// Archive documents (RFC 5005) written and signed besides the feeds.
    pub archives: usize,
    /// Total bytes of all images.
    pub image_bytes: u64,
    pub hash: hash::Stats,
    pub key_id: String,
    /// The OpenPGP key that clearsigned `SHA256SUMS.asc`, if one is set.
    pub openpgp_fingerprint: Option<String>,
    pub warnings: Vec<Warning>,
    /// With `--previous`: the site built on, and the releases and images
    /// taken from it unread.
    pub previous: Option<Carried>,
    /// The catalogs written besides the feeds (`[catalogs]`).
    pub catalogs: Vec<catalog::Written>,
    /// The sequence number the site is signed with.
    pub sequence: u64,
    /// The releases whose plans were remembered from the last build, not
    /// made again ([`scan::Plans`]).
    pub plans_remembered: usize,
}

/// What a build took from the previous site without reading an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Carried {
    pub source: String,
    pub sequence: u64,
    pub releases: usize,
    pub images: usize,
    pub bytes: u64,
}

/// Reads the config and builds the whole site into its output directory.
/// A build that fails after warning of something returns
/// [`Error::Warned`]: what it warned of is not lost with it.
pub fn build(
    options: &BuildOptions,
    progress: &dyn Progress,
    password: PasswordPrompt,
) -> Result<Report> {
    let mut warnings = Vec::new();
    let mut scan_warnings = Vec::new();
    match run(
        options,
        progress,
        password,
        &mut warnings,
        &mut scan_warnings,
    ) {
        Ok(report) => Ok(report),
        Err(error) if warnings.is_empty() && scan_warnings.is_empty() => Err(error),
        Err(error) => {
            warnings.append(&mut scan_warnings);
            Err(Error::Warned {
                warnings,
                error: Box::new(error),
            })
        }
    }
}

/// The pipeline. Warnings go to `warnings` as they come, and the scan's
/// to `scan_warnings`, which come last.
fn run(
    options: &BuildOptions,
    progress: &dyn Progress,
    password: PasswordPrompt,
    warnings: &mut Vec<Warning>,
    scan_warnings: &mut Vec<Warning>,
) -> Result<Report> {
    let config = config::load(&options.config, &options.overrides)?;
    warnings.extend(config.warnings.iter().cloned());
    let mut clock = Clock::of(options, &config)?;
    let threads = options.threads.unwrap_or_else(par::default_threads);
    check_output_dir(&config)?;
    // Held to the end: two builds of one output never interleave.
    let lock = write::OutputLock::take(&config.output_dir)?;
    warnings.extend(lock.sweep()?);

    // The scan first: a site with no images yet hears so before any
    // password prompt. While it walks and plans the releases, the hash
    // cache is loaded and the spare listed. The notes files and plans the
    // scan remembers unchanged are not read nor made again
    // (`--verify-cache` trusts the cache with nothing but what it checks).
    let cache_file = images::cache_file(&config, options)?;
    // The walks' listings are remembered beside the cache, and trusted as
    // far as it is ([`crate::listing`]).
    let listings = |tree| {
        (cache_file.as_deref())
            .filter(|_| !options.verify_cache)
            .map(|file| HashCache::listings_file(file, tree))
    };
    let (releases_listings, spare_listings) = (listings("releases"), listings("spare"));
    // So are the releases' plans ([`scan::Plans`]).
    let plans_file = (cache_file.as_deref())
        .filter(|_| !options.verify_cache)
        .map(HashCache::plans_file);
    let previous_source = options.previous.clone().or_else(|| config.previous.clone());
    let (plan, cache, spare) = std::thread::scope(|s| {
        let spare = s.spawn(|| write::Spare::survey(&lock, spare_listings.as_deref()));
        let cache = (cache_file.as_deref()).map(|path| s.spawn(|| HashCache::load(path)));
        let plans = (plans_file.as_deref()).map(|path| s.spawn(|| scan::Plans::load(path)));
        let walked = scan::walk(&config, releases_listings.as_deref());
        let plans = plans.map(|loading| loading.join().unwrap_or_else(|p| resume_unwind(p)));
        let plan = walked.and_then(|walked| {
            let imageless = previous_source.is_some();
            scan::scan(&config, walked, imageless, threads, plans)
        });
        let cache = cache.map(|loading| loading.join().unwrap_or_else(|p| resume_unwind(p)));
        let spare = spare.join().unwrap_or_else(|p| resume_unwind(p));
        (plan, cache, spare)
    });
    let cache = cache.map(|(cache, warning)| {
        warnings.extend(warning);
        cache
    });
    let mut plan = plan.map_err(|error| {
        let (mut warned, error) = error.unwarn();
        scan_warnings.append(&mut warned);
        error
    })?;
    scan_warnings.append(&mut plan.warnings);
    let plans_remembered = plan.remembered;
    let keys = Keys::load(&config, options, password, warnings)?;
    plan.refuse_secret_keys(&keys.files)?;
    let (previous, prior) = follow(
        options,
        &config,
        previous_source.as_deref(),
        keys.minisign.public(),
        &mut clock,
        warnings,
    )?;
    let next_key = next_key(&config, keys.minisign.public(), warnings)?;
    // Its errors come after the key's, which say more.
    let (spare, spare_warning) = spare?;
    let staging = write::Staging::new(&lock, spare)?;
    warnings.extend(spare_warning);

    let hashed = images::hash_images(
        &config, options, &plan, &staging, cache, threads, progress, warnings,
    )?;
    let (releases, carried) = assemble::Assembly {
        config: &config,
        previous: previous.as_ref(),
        replace: &options.replace,
        provenance_keys: &keys.provenance,
        staging: &staging,
    }
    .releases(
        plan.releases,
        hashed.digests,
        hashed.boxes,
        hashed.zsyncs,
        warnings,
    )?;

    let mut appliances: Vec<&Name> = releases.iter().map(|r| &r.info.appliance).collect();
    appliances.sort();
    appliances.dedup();
    let published_feeds = kept::keepable(
        &config,
        prior.as_ref(),
        previous.as_ref(),
        &appliances,
        keys.minisign.public(),
        &clock,
        next_key.is_some(),
    );
    let site = Site {
        config: &config,
        releases: &releases,
        public_key: keys.minisign.public(),
        next_key: next_key.as_ref(),
        openpgp: keys.openpgp.as_ref(),
        build_time: clock.time,
        sequence: clock.sequence,
        expires: clock.expires,
        published_feeds: &published_feeds,
    };
    let mut cache = hashed.cache;
    let kept = cache.as_ref().map(|cache| output::Kept {
        cache,
        staging: &staging,
        trusted: !options.verify_cache,
    });
    let rendered = texts(
        &site,
        threads,
        kept.as_ref().map(|k| k as &dyn render::Known),
    )?;
    if let Some(cache) = &mut cache {
        output::remember_rendered(cache, &rendered.site);
    }
    let written = output::write_site(
        &staging,
        &config,
        &rendered,
        &keys,
        next_key.as_ref(),
        &clock,
        cache.as_mut(),
        !options.verify_cache,
        threads,
    )?;
    let published = output::Published {
        files: written,
        spare: lock.spare(),
        kept_known: staging.kept_known(),
    };
    staging.commit()?;
    if let Some(cache) = cache {
        output::record(
            cache,
            &config,
            &releases,
            &hashed.placed,
            &hashed.made,
            &hashed.files_held,
            &published,
        )?;
    }

    warnings.append(scan_warnings);
    let done = Done {
        hash: hashed.stats,
        plans_remembered,
        warnings: std::mem::take(warnings),
        previous: carried,
        sequence: clock.sequence,
    };
    let report = Report::of(&config, &releases, &rendered, &keys, done);
    par::drop_aside((releases, rendered));
    Ok(report)
}

/// The previous site a build with `--previous` (or `previous`) builds on,
/// read and checked; and the clock set to follow the site this build
/// replaces or builds on, whichever key it trusts signed it: that site.
fn follow<'a>(
    options: &BuildOptions,
    config: &'a Config,
    source: Option<&'a str>,
    key: &PublicKey,
    clock: &mut Clock,
    warnings: &mut Vec<Warning>,
) -> Result<(Option<Previous>, Option<Prior<'a>>)> {
    // A key the previous site may be signed by besides this build's: the
    // key rotated from, while the rotation is under way.
    let rotated_from = match &config.previous_key {
        Some(path) => Some(PublicKey::from_file(path, &fsutil::read_to_string(path)?)?),
        None => None,
    };
    let previous = match source {
        Some(source) => Some(load_previous(
            options,
            source,
            key,
            rotated_from.clone(),
            warnings,
        )?),
        None => None,
    };
    let built_on = source
        .zip(previous.as_ref())
        .map(|(source, previous)| (source, previous.sequence));
    let trusted: Vec<&PublicKey> = std::iter::once(key).chain(&rotated_from).collect();
    let prior = Prior::of(config, options, built_on, &trusted);
    if let Some(prior) = &prior {
        clock.follow(prior, options, warnings)?;
    }
    Ok((previous, prior))
}

/// What the pipeline did besides what it published, for the report.
struct Done {
    hash: hash::Stats,
    plans_remembered: usize,
    warnings: Vec<Warning>,
    previous: Option<Carried>,
    sequence: u64,
}

impl Report {
    /// What the build published, from what it rendered.
    fn of(
        config: &Config,
        releases: &[Release],
        rendered: &Texts,
        keys: &Keys,
        done: Done,
    ) -> Report {
        Report {
            published: releases.iter().flat_map(ImageSummary::of_release).collect(),
            output_dir: config.output_dir.clone(),
            appliances: releases
                .iter()
                .map(|r| &r.info.appliance)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            releases: releases.len(),
            images: releases.iter().map(|r| r.images.len()).sum(),
            cloud_images: releases.iter().map(|r| r.info.cloud_images.len()).sum(),
            feeds: rendered
                .site
                .feeds
                .iter()
                .filter(|f| !f.path.starts_with("archive/"))
                .map(|f| f.path.clone())
                .collect(),
            kept_feeds: rendered
                .site
                .feeds
                .iter()
                .filter(|f| f.signature.is_some())
                .map(|f| f.path.clone())
                .collect(),
            archives: rendered
                .site
                .feeds
                .iter()
                .filter(|f| f.path.starts_with("archive/"))
                .count(),
            image_bytes: releases
                .iter()
                .flat_map(|r| &r.images)
                .map(|i| i.digest.length)
                .sum(),
            hash: done.hash,
            key_id: keys.minisign.public().key_id.to_string(),
            openpgp_fingerprint: keys.openpgp.as_ref().map(|k| k.signer.fingerprint()),
            warnings: done.warnings,
            previous: done.previous,
            catalogs: rendered.catalogs.written.clone(),
            sequence: done.sequence,
            plans_remembered: done.plans_remembered,
        }
    }
}

/// Every text file of the site, before signing.
pub struct Texts {
    /// The feeds and pages.
    pub site: render::Rendered,
    /// The catalogs `[catalogs]` asks for.
    pub catalogs: catalog::Catalogs,
    /// `SHA256SUMS`, which lists the catalogs' files too.
    pub manifest: String,
}

/// Renders the feeds and pages, then the catalogs from the same releases,
/// then the manifest of them all. `check` renders the same way, so it
/// refuses what a build would. An archive or history page that `known`
/// holds is taken from it ([`render::render`]).
pub fn texts(site: &Site, threads: usize, known: Option<&dyn render::Known>) -> Result<Texts> {
    let rendered = render::render(site, threads, known)?;
    let catalogs = catalog::render(site, &rendered.partition)?;
    for file in &catalogs.files {
        render::check_size(&file.path, file.bytes.len())?;
    }
    let files = rendered
        .feeds
        .iter()
        .map(|f| (f.path.as_str(), f.sha256))
        .chain(
            catalogs
                .files
                .iter()
                .map(|f| (f.path.as_str(), Sha256::of(&f.bytes))),
        );
    let manifest = render::manifest(site, files)?;
    Ok(Texts {
        site: rendered,
        catalogs,
        manifest,
    })
}

/// The keys a build signs and checks with.
struct Keys {
    /// The builders' keys that sign provenance (`provenance_keys`).
    provenance: Vec<supply::keys::ProvenanceKey>,
    /// Signs the feeds, SHA256SUMS and the catalogs.
    minisign: Box<dyn sign::Signer>,
    /// Clearsigns SHA256SUMS.asc and the catalogs' signed forms, if set,
    /// with its public key, published as `openpgp.asc`.
    openpgp: Option<render::OpenPgp>,
    /// The secret key files, never to be published.
    files: Vec<crate::model::KeyFile>,
}

impl Keys {
    fn load(
        config: &Config,
        options: &BuildOptions,
        password: PasswordPrompt,
        warnings: &mut Vec<Warning>,
    ) -> Result<Self> {
        let provenance = supply::keys::load(&config.provenance_keys)?;
        let minisign = keys::load_key(config, options, &mut *password)?;
        let openpgp = keys::load_openpgp_key(config, options, password)?;
        let mut files = Vec::new();
        warnings.extend(minisign.warnings);
        files.extend(minisign.file);
        let openpgp = openpgp.map(|found| {
            warnings.extend(found.warnings);
            files.extend(found.file);
            found.key
        });
        keys::systemd_needs_openpgp(config, openpgp.is_some())?;
        let openpgp = openpgp
            .map(|signer| {
                let public = signer.public_key()?;
                Ok::<_, Error>(render::OpenPgp { signer, public })
            })
            .transpose()?;
        Ok(Keys {
            provenance,
            minisign: minisign.key,
            openpgp,
            files,
        })
    }
}

/// The previous site (`--previous`), verified against this build's key
/// (or `rotated_from`, the `previous_key`, during a rotation).
fn load_previous(
    options: &BuildOptions,
    source: &str,
    key: &PublicKey,
    rotated_from: Option<PublicKey>,
    warnings: &mut Vec<Warning>,
) -> Result<Previous> {
    let previous = previous::load(&previous::PreviousOptions {
        source,
        key,
        also_trusted: rotated_from.into_iter().collect(),
        endpoint: options.endpoint.as_deref(),
        timeout: std::time::Duration::from_secs(60),
        now: Utc::now(),
    })?;
    warnings.extend(previous.warnings.iter().cloned());
    Ok(previous)
}

/// The key a coming rotation moves to (`next_public_key`), unless it is
/// the key signing this build already.
fn next_key(
    config: &Config,
    current: &PublicKey,
    warnings: &mut Vec<Warning>,
) -> Result<Option<PublicKey>> {
    let Some(path) = &config.next_public_key else {
        return Ok(None);
    };
    let next = sign::PublicKey::from_file(path, &fsutil::read_to_string(path)?)?;
    if next.key_id == current.key_id {
        warnings.push(Warning::file(
            path,
            "next_public_key is the key signing this build, so the rotation is done; \
             remove next_public_key from the config",
        ));
        return Ok(None);
    }
    Ok(Some(next))
}

impl ImageSummary {
    fn of_release(release: &crate::model::Release) -> impl Iterator<Item = ImageSummary> + '_ {
        release.images.iter().map(|i| ImageSummary {
            appliance: release.info.appliance.to_string(),
            version: release.info.version.to_string(),
            path: i.source.site_path.to_string(),
            format: i.source.format.to_string(),
            length: i.digest.length,
            virtual_size: i.info.virtual_size,
            sha256: i.digest.sha256,
        })
    }
}

/// The output directory is replaced on every build: it must not hold any
/// input.
fn check_output_dir(config: &Config) -> Result<()> {
    let out = fsutil::resolve_lexically(&config.output_dir)?;
    let config_dir = config.path.parent().unwrap_or(Path::new(""));
    let inputs = [
        Some(config_dir.to_path_buf()),
        Some(config.releases_dir.clone()),
        config.images_dir.clone(),
        Some(config.templates_dir.clone()),
    ];
    for input in inputs.into_iter().flatten() {
        let input_path = if input.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            input
        };
        if fsutil::resolve_lexically(&input_path)?.starts_with(&out) {
            return Err(Error::file(
                &config.output_dir,
                format_args!(
                    "the output directory holds the input {}, and the output is replaced on every build; \
                     choose another output_dir",
                    input_path.display()
                ),
            ));
        }
    }
    Ok(())
}
