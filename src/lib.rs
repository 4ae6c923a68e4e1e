//! vmcast-gen publishes virtual appliances the way podcasts are published:
//! an RSS 2.0 feed whose items are releases and whose enclosures are disk
//! images, with a SHA256SUMS manifest and minisign signatures.
//!
//! [`build`] is the whole pipeline, one stage per module, data flowing one
//! way: [`config`] → [`scan`] → [`hash`] → [`render`] → [`sign`] → [`write`].

#![forbid(unsafe_code)]

pub mod cache;
pub mod catalog;
pub mod check;
pub mod cloud;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod init;
pub mod inspect;
pub mod media;
pub mod model;
pub mod notes;
pub mod openpgp;
pub mod par;
pub mod place;
pub mod previous;
#[cfg(feature = "publish")]
pub mod publish;
pub mod pull;
pub mod render;
pub mod scan;
pub mod serve;
pub mod sign;
pub mod sums;
pub mod supply;
pub mod trust;
pub mod verify;
pub mod warning;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};

pub use error::{Error, Result};
pub use warning::Warning;

use cache::HashCache;
use config::{Config, ImageMode, Overrides};
use hash::Progress;
use model::{Image, Release};
use place::Placement;
use render::Site;
use sign::{KeyId, LockedKey, SecretKey};

/// Where the secret key comes from, in order of precedence.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The contents of a key file, e.g. from a CI secret.
    Text(String),
    /// A key file.
    File(PathBuf),
}

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
    /// Images allowed to differ from the previous site's under the same
    /// published name (`--replace NAME`).
    pub replace: Vec<String>,
    /// The S3-compatible endpoint for an `s3://` previous site.
    pub endpoint: Option<String>,
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
    pub sha256: String,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct Report {
    pub published: Vec<ImageSummary>,
    pub output_dir: PathBuf,
    pub appliances: usize,
    pub releases: usize,
    pub images: usize,
    pub feeds: Vec<String>,
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

/// Which secret key a password is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The minisign key that signs the feeds and SHA256SUMS.
    Minisign,
    /// The OpenPGP key that clearsigns SHA256SUMS.asc and the catalogs.
    OpenPgp,
}

/// Asked for a secret key's password, only when that key is encrypted.
pub type PasswordPrompt<'a> = &'a mut dyn FnMut(KeyKind) -> Result<String>;

/// Reads the config and builds the whole site into its output directory.
pub fn build(
    options: &BuildOptions,
    progress: &dyn Progress,
    password: PasswordPrompt,
) -> Result<Report> {
    let config = config::load(&options.config, &options.overrides)?;
    let build_time = options.build_time.unwrap_or_else(Utc::now);
    let threads = options.threads.unwrap_or_else(par::default_threads);
    let sequence = u64::try_from(build_time.timestamp())
        .map_err(|_| Error::other("the build time is before 1970; check SOURCE_DATE_EPOCH"))?;
    let expires = config.expires_after.map(|d| build_time + d);
    check_output_dir(&config)?;
    // Held to the end: two builds of one output never interleave.
    let lock = write::OutputLock::take(&config.output_dir)?;
    let mut warnings = lock.sweep()?;

    // The scan first: a site with no images yet hears so before any
    // password prompt. The spare is taken meanwhile: both walk a thousand
    // directories on a large site, which is mostly the kernel's time.
    let previous_source = options.previous.clone().or_else(|| config.previous.clone());
    let (plan, staging) = std::thread::scope(|s| {
        let staging = s.spawn(|| write::Staging::new(&lock));
        let plan = scan::scan(&config, previous_source.is_some(), threads);
        let staging = staging
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (plan, staging)
    });
    let plan = plan?;
    let provenance_keys = supply::keys::load(&config.provenance_keys)?;
    let (key, key_warning) = load_key(&config, options, &mut *password)?;
    warnings.extend(key_warning);
    let (openpgp, openpgp_warning) = load_openpgp_key(&config, options, password)?;
    warnings.extend(openpgp_warning);
    let openpgp_public = openpgp.as_ref().map(|s| s.public_key()).transpose()?;
    let previous = match &previous_source {
        Some(source) => {
            let also_trusted = match &config.previous_key {
                Some(path) => vec![sign::PublicKey::from_file(
                    path,
                    &fsutil::read_to_string(path)?,
                )?],
                None => Vec::new(),
            };
            let previous = previous::load(&previous::PreviousOptions {
                source,
                key: &key.public,
                also_trusted,
                endpoint: options.endpoint.as_deref(),
                timeout: std::time::Duration::from_secs(60),
                now: Utc::now(),
            })?;
            if sequence <= previous.sequence {
                return Err(Error::other(format_args!(
                    "--previous {source}: this build's sequence {sequence} is not above the \
                     previous site's {}; consumers that keep state would refuse it as a rollback. \
                     Build later, or set SOURCE_DATE_EPOCH above {}",
                    previous.sequence, previous.sequence
                )));
            }
            warnings.extend(previous.warnings.iter().cloned());
            Some(previous)
        }
        None => None,
    };
    let next_key = match &config.next_public_key {
        Some(path) => {
            let next = sign::PublicKey::from_file(path, &fsutil::read_to_string(path)?)?;
            if next.key_id == key.public.key_id {
                warnings.push(Warning::file(
                    path,
                    "next_public_key is the key signing this build, so the rotation is done; \
                     remove next_public_key from the config",
                ));
                None
            } else {
                Some(next)
            }
        }
        None => None,
    };

    // Its errors come after the key's, which say more.
    let (staging, spare_warning) = staging?;
    warnings.extend(spare_warning);
    let requests = hash_requests(&config, &plan, &staging)?;
    let mut shortcuts = hash::Shortcuts {
        cache: match cache_file(&config, options)? {
            Some(path) => {
                let (cache, warning) = HashCache::load(&path);
                warnings.extend(warning);
                Some(cache)
            }
            None => None,
        },
        sidecars: config.trust_sidecars,
        verify_cache: options.verify_cache,
    };
    let hashed = hash::digest_all(&requests, &mut shortcuts, threads, progress)?;
    let mut cache = shortcuts.cache.take();
    // Keep what was read even if a later stage fails; the full record is
    // saved once the new output is in place.
    if let Some(cache) = cache.as_mut().filter(|_| hashed.stats.hashed_files > 0) {
        cache.save()?;
    }
    warnings.extend(hashed.warnings);
    if !hashed.mismatches.is_empty() {
        return Err(Error::StaleCache {
            entries: hashed.mismatches,
        });
    }
    let mut digests = hashed.digests;
    let mut boxes = hashed.boxes;
    let boxes_made: std::collections::BTreeSet<model::RelPath> = boxes.keys().cloned().collect();
    let mut carried = previous.as_ref().map(|p| Carried {
        source: p.source.clone(),
        sequence: p.sequence,
        releases: 0,
        images: 0,
        bytes: 0,
    });
    let mut releases = Vec::with_capacity(plan.releases.len());
    for planned in plan.releases {
        let published = previous.as_ref().and_then(|p| {
            p.release(
                planned.info.appliance.as_str(),
                planned.info.version.as_str(),
            )
        });
        let images = if planned.images.is_empty() {
            // No image here: the release's images are the published ones,
            // or it has cloud images only.
            let published = published.filter(|p| !p.images.is_empty());
            let (Some(published), Some(c)) = (published, carried.as_mut()) else {
                if !planned.info.cloud_images.is_empty() {
                    releases.push(Release {
                        images: Vec::new(),
                        info: planned.info,
                        supply: Vec::new(),
                    });
                    continue;
                }
                return Err(Error::file(
                    &planned.info.notes_path,
                    format_args!(
                        "release {} {} has no images, here or in the previous site; put image \
                         files beside {}, list them in `images`, or name cloud images in \
                         [[cloud_image]]",
                        planned.info.appliance,
                        planned.info.version,
                        notes::NOTES_FILE
                    ),
                ));
            };
            c.releases += 1;
            c.images += published.images.len();
            c.bytes += published
                .images
                .iter()
                .map(|i| i.digest.length)
                .sum::<u64>();
            for image in &published.images {
                check_carried_url(&config, &image.source.site_path, &image.source.url)?;
            }
            // Its supply-chain files were checked when first published;
            // their facts come from the signed feed, like the images'.
            for file in &published.supply {
                check_carried_url(&config, &file.site_path, &file.url)?;
            }
            let mut images = published.images.clone();
            if !config.catalogs.vagrant {
                // No catalog offers the boxes: the feed names none, as
                // for the images read here.
                for image in &mut images {
                    image.vagrant_box = None;
                }
            }
            releases.push(Release {
                images,
                supply: published.supply.clone(),
                info: planned.info,
            });
            continue;
        } else {
            let mut images = Vec::with_capacity(planned.images.len());
            for source in planned.images {
                let (digest, info, lxd) = digests
                    .remove(&source.site_path)
                    .ok_or_else(|| Error::file(&source.source, "was planned but never hashed"))?;
                let vagrant_box = match boxes.remove(&source.site_path) {
                    Some(digest) => Some(model::VagrantBox {
                        path: catalog::vagrant::box_path(&planned.info, &source)?,
                        digest,
                    }),
                    None => None,
                };
                let image = Image {
                    source,
                    digest,
                    info,
                    vagrant_box,
                    lxd,
                };
                if let Some(old) = published.and_then(|p| {
                    p.images
                        .iter()
                        .find(|o| o.source.site_path == image.source.site_path)
                }) {
                    check_unchanged_image(&image, old, &options.replace)?;
                }
                images.push(image);
            }
            if let Some(published) = published {
                let dropped: Vec<&str> = published
                    .images
                    .iter()
                    .filter(|o| {
                        !images
                            .iter()
                            .any(|i| i.source.site_path == o.source.site_path)
                    })
                    .map(|o| o.source.name.as_str())
                    .chain(
                        published
                            .supply
                            .iter()
                            .filter(|o| !planned.supply.iter().any(|p| p.site_path == o.site_path))
                            .map(|o| o.name.as_str()),
                    )
                    .collect();
                if !dropped.is_empty() {
                    warnings.push(Warning::file(
                        &planned.info.notes_path,
                        format_args!(
                            "the previous site also has {}, not here; it leaves the feed",
                            dropped.join(", ")
                        ),
                    ));
                }
            }
            images
        };
        let mut files = Vec::with_capacity(planned.supply.len());
        for file in &planned.supply {
            let targets: Vec<(&str, model::Sha256)> = images
                .iter()
                .filter(|i| {
                    file.image
                        .as_ref()
                        .is_none_or(|name| *name == i.source.name)
                })
                .map(|i| (i.source.name.as_str(), i.digest.sha256))
                .collect();
            let (checked, bytes) = supply::load(file, &targets, &provenance_keys)?;
            if checked.signing == Some(supply::Signing::Unverified) {
                warnings.push(Warning::file(
                    &file.source,
                    "signed, but vmcast.toml lists no provenance_keys to verify it with: \
                     published as signed but unverified; list the builder's public key in \
                     provenance_keys",
                ));
            }
            if config.image_mode != ImageMode::None {
                staging.write(checked.site_path.as_str(), &bytes)?;
            }
            files.push(checked);
        }
        releases.push(Release {
            images,
            info: planned.info,
            supply: files,
        });
    }
    if let Some(previous) = &previous {
        for old in &previous.releases {
            let kept = releases.iter().any(|r| {
                r.info.appliance.as_str() == old.appliance && r.info.version.as_str() == old.version
            });
            if !kept {
                warnings.push(Warning {
                    path: None,
                    message: format!(
                        "{} {} is in the previous site but has no release.toml here; it leaves \
                         the feed",
                        old.appliance, old.version
                    ),
                });
            }
        }
        let whole_site_host = config.image_mode != ImageMode::None
            && config
                .download_base_url
                .as_str()
                .starts_with(config.base_url.as_str());
        if whole_site_host && carried.as_ref().is_some_and(|c| c.images > 0) {
            warnings.push(Warning {
                path: None,
                message: format!(
                    "the images of releases taken from the previous site are not in {}: upload \
                     it with `vmcast-gen publish`, which keeps them; a host that replaces the \
                     whole site on deploy (GitHub Pages) would drop them. To deploy whole sites, \
                     serve images from download_base_url (release assets, a bucket)",
                    config.output_dir.display()
                ),
            });
        }
    }

    for release in &mut releases {
        check_images(release)?;
        // A SHA-512 only where the virt-builder index lists the image: the
        // cache or a previous site may know more, and the feed must not
        // depend on it.
        let sources: Vec<&model::ImageSource> = release.images.iter().map(|i| &i.source).collect();
        let wanted = catalog::virt_builder::wants_sha512(&config, &release.info, &sources);
        for (image, wanted) in release.images.iter_mut().zip(wanted) {
            image.digest.sha512 = image.digest.sha512.filter(|_| wanted);
        }
    }

    let site = Site {
        config: &config,
        releases: &releases,
        public_key: &key.public,
        next_key: next_key.as_ref(),
        openpgp_public_key: openpgp_public.as_deref(),
        build_time,
        sequence,
        expires,
    };
    let rendered = render::render(&site, threads)?;

    let comment = |file: &str| {
        trust::BuildStamp {
            timestamp: build_time.timestamp(),
            file: file.to_owned(),
            base_url: config.base_url.to_string(),
            sequence,
            expires: expires.map(|e| e.timestamp()),
        }
        .to_comment()
    };
    // A hundred archive documents make signing a fixed cost worth sharing out.
    let feed_sigs = par::map(threads, &rendered.feeds, |feed| {
        key.sign(&feed.xml, &comment(&feed.path))
    });
    for (feed, sig) in rendered.feeds.iter().zip(feed_sigs) {
        staging.write(&feed.path, &feed.xml)?;
        staging.write(&format!("{}.minisig", feed.path), sig?.to_file().as_bytes())?;
    }
    let manifest_sig = key.sign(rendered.manifest.as_bytes(), &comment(render::MANIFEST))?;
    staging.write(render::MANIFEST, rendered.manifest.as_bytes())?;
    staging.write(render::MANIFEST_SIG, manifest_sig.to_file().as_bytes())?;
    staging.write(render::PUBLIC_KEY, key.public.to_file().as_bytes())?;
    if let (Some(signer), Some(public)) = (&openpgp, &openpgp_public) {
        let signed = signer.clearsign(&rendered.manifest, build_time)?;
        staging.write(openpgp::MANIFEST_ASC, signed.as_bytes())?;
        staging.write(openpgp::PUBLIC_KEY, public.as_bytes())?;
    }
    if let Some(next) = &next_key {
        // The current key vouches for the next one: consumers that trust the
        // current key learn the next from this signature.
        let text = next.to_file();
        let sig = key.sign(text.as_bytes(), &comment(render::NEXT_PUBLIC_KEY))?;
        staging.write(render::NEXT_PUBLIC_KEY, text.as_bytes())?;
        staging.write(
            &format!("{}.minisig", render::NEXT_PUBLIC_KEY),
            sig.to_file().as_bytes(),
        )?;
    }
    let catalog_sigs = par::map(threads, &rendered.catalogs.files, |file| {
        file.signed
            .then(|| key.sign(&file.bytes, &comment(&file.path)))
            .transpose()
    });
    for (file, sig) in rendered.catalogs.files.iter().zip(catalog_sigs) {
        staging.write(&file.path, &file.bytes)?;
        if let Some(sig) = sig? {
            staging.write(&format!("{}.minisig", file.path), sig.to_file().as_bytes())?;
        }
    }
    // Rendered only when there is an OpenPGP key.
    if let Some(signer) = &openpgp {
        for (path, text) in &rendered.catalogs.clearsigned {
            staging.write(path, signer.clearsign(text, build_time)?.as_bytes())?;
        }
    }
    staging.write(render::page::PAGE, rendered.page.as_bytes())?;
    for (path, html) in &rendered.history {
        staging.write(path, html.as_bytes())?;
    }
    // GitHub Pages would otherwise run the site through Jekyll.
    staging.write(".nojekyll", b"")?;
    staging.commit()?;
    if let Some(cache) = &mut cache {
        if config.image_mode != ImageMode::None {
            let placed: std::collections::BTreeSet<&model::RelPath> =
                requests.iter().map(|r| &r.id).collect();
            record_output(cache, &config.output_dir, &releases, &placed)?;
        }
        record_boxes(cache, &config.output_dir, &releases, &boxes_made)?;
        cache.save()?;
    }

    let mut appliances: Vec<_> = releases.iter().map(|r| &r.info.appliance).collect();
    appliances.dedup();
    appliances.sort();
    appliances.dedup();
    let published = releases
        .iter()
        .flat_map(|r| {
            r.images.iter().map(|i| ImageSummary {
                appliance: r.info.appliance.to_string(),
                version: r.info.version.to_string(),
                path: i.source.site_path.to_string(),
                format: i.source.format.to_string(),
                length: i.digest.length,
                virtual_size: i.info.virtual_size,
                sha256: i.digest.sha256.to_hex(),
            })
        })
        .collect();
    Ok(Report {
        published,
        output_dir: config.output_dir.clone(),
        appliances: appliances.len(),
        releases: releases.len(),
        images: releases.iter().map(|r| r.images.len()).sum(),
        feeds: rendered
            .feeds
            .iter()
            .filter(|f| !f.path.starts_with("archive/"))
            .map(|f| f.path.clone())
            .collect(),
        archives: rendered
            .feeds
            .iter()
            .filter(|f| f.path.starts_with("archive/"))
            .count(),
        image_bytes: releases
            .iter()
            .flat_map(|r| &r.images)
            .map(|i| i.digest.length)
            .sum(),
        hash: hashed.stats,
        key_id: key.public.key_id.to_string(),
        openpgp_fingerprint: openpgp.as_ref().map(openpgp::Signer::fingerprint),
        warnings: warnings.into_iter().chain(plan.warnings).collect(),
        previous: carried,
        catalogs: rendered.catalogs.written,
    })
}

/// A file taken from the previous site keeps its published URL, which
/// must still lie under this site's URLs, or consumers' checks would fail.
fn check_carried_url(config: &Config, site_path: &model::RelPath, url: &url::Url) -> Result<()> {
    let url = url.as_str();
    if url.starts_with(config.base_url.as_str())
        || url.starts_with(config.download_base_url.as_str())
    {
        return Ok(());
    }
    Err(Error::other(format_args!(
        "{} of the previous site is published at {url}, outside this site's base_url {} and \
         download_base_url {}; consumers would refuse it. Keep the old download_base_url, or \
         rebuild that release from its images",
        site_path, config.base_url, config.download_base_url
    )))
}

/// A published image never changes under its name: clients and mirrors
/// cache it forever. A present image whose published path is the previous
/// site's must have its bytes, unless `--replace` names it.
fn check_unchanged_image(image: &Image, old: &Image, replace: &[String]) -> Result<()> {
    if image.digest.same_bytes(&old.digest)
        || replace
            .iter()
            .any(|r| *r == image.source.name || r.as_str() == image.source.site_path.as_str())
    {
        return Ok(());
    }
    Err(Error::file(
        &image.source.source,
        format_args!(
            "differs from the image the previous site publishes as {}: here SHA-256 {} ({} \
             bytes), published {} ({} bytes). A published image never changes under its name; \
             give the new one a new name (a new version), or pass --replace {} if you must",
            image.source.site_path,
            image.digest.sha256,
            image.digest.length,
            old.digest.sha256,
            old.digest.length,
            image.source.name
        ),
    ))
}

/// Holds each image's declared format (from its name or the notes) against
/// what its bytes say, and the release's disk requirement against the
/// images' virtual disks.
fn check_images(release: &Release) -> Result<()> {
    for image in &release.images {
        let (declared, info, path) = (&image.source, &image.info, &image.source.source);
        let describe = |c: Option<model::Compression>| match c {
            Some(c) => format!("{}-compressed", c.as_str()),
            None => "uncompressed".to_owned(),
        };
        if declared.compression != info.compression {
            return Err(Error::file(
                path,
                format_args!(
                    "the file name says {} but the content is {}",
                    describe(declared.compression),
                    describe(info.compression)
                ),
            ));
        }
        let agrees = match (info.detected, info.format) {
            (true, found) => {
                found == declared.format
                    || (found == model::ImageFormat::Iso
                        && declared.format == model::ImageFormat::Raw)
            }
            // No magic: raw, or a format whose marks the inspection could
            // not reach (the end of a compressed stream).
            (false, _) => declared.format == model::ImageFormat::Raw || info.compression.is_some(),
        };
        if !agrees {
            let content = if info.detected {
                info.format.as_str().to_owned()
            } else {
                "raw (no image header)".to_owned()
            };
            return Err(Error::file(
                path,
                format_args!(
                    "declared {} (by its name or [image] in {}) but the content is {content}",
                    declared.format,
                    release.info.notes_path.display()
                ),
            ));
        }
        let min_disk = release.info.requirements.min_disk_gib;
        if let (Some(gib), Some(size)) = (min_disk, info.virtual_size)
            && gib.saturating_mul(1 << 30) < size
        {
            return Err(Error::file(
                &release.info.notes_path,
                format_args!(
                    "requirements say min_disk_gib = {gib}, but {} has a {} virtual disk ({size} bytes); \
                     the minimum must be at least {} GiB",
                    image.source.name,
                    render::page::human_size(size),
                    size.div_ceil(1 << 30)
                ),
            ));
        }
    }
    Ok(())
}

/// The secret key: a throwaway one for a preview (a preview is never
/// signed with the real key); else `--secret-key`, else
/// `VMCAST_SECRET_KEY`, else the config's `secret_key`.
fn load_key(
    config: &Config,
    options: &BuildOptions,
    password: PasswordPrompt,
) -> Result<(SecretKey, Option<Warning>)> {
    if options.preview {
        return Ok((preview_key()?, None));
    }
    let (key, warning) = locked_key(
        config,
        options.overrides.secret_key.as_deref(),
        options.secret_key_text.as_deref(),
    )?;
    Ok((key.unlock(&mut || password(KeyKind::Minisign))?, warning))
}

/// The OpenPGP key, when one is set: `VMCAST_OPENPGP_KEY`, else the
/// config's `[catalogs] openpgp_key`. A preview gets a throwaway one, as
/// for minisign.
fn load_openpgp_key(
    config: &Config,
    options: &BuildOptions,
    password: PasswordPrompt,
) -> Result<(Option<openpgp::Signer>, Option<Warning>)> {
    if options.preview {
        let configured =
            options.openpgp_key_text.is_some() || config.catalogs.openpgp_key.is_some();
        return Ok((configured.then(preview_openpgp_key).transpose()?, None));
    }
    let Some((key, warning)) = locked_openpgp_key(config, options.openpgp_key_text.as_deref())?
    else {
        return Ok((None, None));
    };
    Ok((
        Some(key.unlock(&mut || password(KeyKind::OpenPgp))?),
        warning,
    ))
}

/// Finds the secret key file and checks its layout without unlocking it:
/// `file` (from the command line), else `text` (`VMCAST_SECRET_KEY`), else
/// the config's `secret_key`. A key file inside the output is refused,
/// since the output is published. An unencrypted key file that group or
/// others can read comes with a warning. `check` uses this to report what
/// `build` would refuse without asking for a password.
pub fn locked_key(
    config: &Config,
    file: Option<&Path>,
    text: Option<&str>,
) -> Result<(LockedKey, Option<Warning>)> {
    let source = match (file, text, &config.secret_key) {
        (Some(path), _, _) => KeySource::File(path.to_path_buf()),
        (None, Some(text), _) => KeySource::Text(text.to_owned()),
        (None, None, Some(path)) => KeySource::File(path.clone()),
        (None, None, None) => return Err(Error::NoSecretKey),
    };
    match source {
        KeySource::Text(text) => Ok((
            LockedKey::parse(Path::new("$VMCAST_SECRET_KEY"), &text)?,
            None,
        )),
        KeySource::File(path) => {
            let (text, mode) = read_secret_key(config, &path, &MINISIGN_KEY)?;
            let key = LockedKey::parse(&path, &text)?;
            let warning = exposed_key(&path, &MINISIGN_KEY, key.encrypted, mode);
            Ok((key, warning))
        }
    }
}

/// Finds the OpenPGP secret key and checks it as [`locked_key`] checks the
/// minisign key, without unlocking it: `text` (`VMCAST_OPENPGP_KEY`), else
/// the config's `[catalogs] openpgp_key`; `None` when neither is set.
pub fn locked_openpgp_key(
    config: &Config,
    text: Option<&str>,
) -> Result<Option<(openpgp::LockedKey, Option<Warning>)>> {
    match (text, &config.catalogs.openpgp_key) {
        (Some(text), _) => Ok(Some((
            openpgp::LockedKey::parse(Path::new("$VMCAST_OPENPGP_KEY"), text)?,
            None,
        ))),
        (None, Some(path)) => {
            let (text, mode) = read_secret_key(config, path, &OPENPGP_KEY)?;
            let key = openpgp::LockedKey::parse(path, &text)?;
            let warning = exposed_key(path, &OPENPGP_KEY, key.encrypted, mode);
            Ok(Some((key, warning)))
        }
        (None, None) => Ok(None),
    }
}

/// How errors and warnings about a kind of secret key file name it.
struct SecretKeyFile {
    /// "cannot read the …"
    read: &'static str,
    name: &'static str,
    keygen: &'static str,
}

const MINISIGN_KEY: SecretKeyFile = SecretKeyFile {
    read: "cannot read the secret key",
    name: "secret key",
    keygen: "vmcast-gen keygen",
};

const OPENPGP_KEY: SecretKeyFile = SecretKeyFile {
    read: "cannot read the OpenPGP secret key",
    name: "OpenPGP secret key",
    keygen: "vmcast-gen keygen --openpgp",
};

/// A secret key file's text and permission bits; refused inside the
/// output directory, which is published. A symbolic link is fine (mounted
/// secrets are often links); the checks are made on the file it leads to.
fn read_secret_key(config: &Config, path: &Path, kind: &SecretKeyFile) -> Result<(String, u32)> {
    let (bytes, meta) =
        fsutil::read_regular(path, true, fsutil::MAX_TEXT_FILE).map_err(|e| match e {
            Error::Io { path, source, .. } => Error::io(kind.read, path, source),
            other => other,
        })?;
    let text = fsutil::text(path, bytes)?;
    let real = fsutil::canonicalize(path)?;
    if real.starts_with(resolve_lexically(&config.output_dir)?) {
        return Err(Error::file(
            path,
            format_args!(
                "the {} lies inside the output directory {}, which is published; move it out",
                kind.name,
                config.output_dir.display()
            ),
        ));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    Ok((text, mode))
}

/// The warning for an unencrypted key file that group or others can read.
fn exposed_key(path: &Path, kind: &SecretKeyFile, encrypted: bool, mode: u32) -> Option<Warning> {
    (!encrypted && mode & 0o077 != 0).then(|| {
        Warning::file(
            path,
            format_args!(
                "an unencrypted {} that group or others can read (mode {mode:04o}): anyone who \
                 can read it can sign as you; chmod 600 it, or use an encrypted key ({} without \
                 -W)",
                kind.name, kind.keygen
            ),
        )
    })
}

/// A preview's throwaway key: random, and made once per process, so the
/// rebuilds of one `serve` run keep it and the next run gets another.
fn preview_key() -> Result<SecretKey> {
    static KEY: OnceLock<(KeyId, [u8; 32])> = OnceLock::new();
    let (id, seed) = match KEY.get() {
        Some(key) => *key,
        None => {
            let (mut id, mut seed) = ([0u8; 8], [0u8; 32]);
            getrandom::fill(&mut id)
                .and_then(|()| getrandom::fill(&mut seed))
                .map_err(|e| Error::failed("cannot get random bytes", e))?;
            *KEY.get_or_init(|| (KeyId(id), seed))
        }
    };
    Ok(SecretKey::from_seed(id, seed))
}

/// A preview's throwaway OpenPGP key, made once per process like
/// [`preview_key`].
fn preview_openpgp_key() -> Result<openpgp::Signer> {
    static KEY: OnceLock<openpgp::Signer> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key.clone());
    }
    let key = openpgp::Signer::generate("vmcast-gen preview", Utc::now())?;
    Ok(KEY.get_or_init(|| key).clone())
}

/// The canonical form of a path that may not exist yet: its nearest existing
/// ancestor resolved, the rest appended.
fn resolve_lexically(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut resolved = fsutil::canonicalize(existing)?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}

/// The output directory is replaced on every build: it must not hold any
/// input.
fn check_output_dir(config: &Config) -> Result<()> {
    let out = resolve_lexically(&config.output_dir)?;
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
        if resolve_lexically(&input_path)?.starts_with(&out) {
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

/// Records, after the swap, what the new output holds, for the next build.
/// A copy is recorded under its own canonical path, so the next build can
/// take it by hard link when it publishes the same bytes there. A hard
/// link is the image itself: making it, or removing one the spare held,
/// moved its ctime, so the image's entry takes the state the next build
/// will see (only if its size and mtime are still those recorded).
/// Images taken unread from a previous site are not in the output.
fn record_output(
    cache: &mut HashCache,
    output_dir: &Path,
    releases: &[Release],
    placed: &std::collections::BTreeSet<&model::RelPath>,
) -> Result<()> {
    let root = fsutil::canonicalize(output_dir)?;
    for image in releases
        .iter()
        .flat_map(|r| &r.images)
        .filter(|i| placed.contains(&i.source.site_path))
    {
        let path = root.join(image.source.site_path.as_str());
        // One stat, no open: the file was placed by this build.
        let state = cache::FileState::of(&fsutil::symlink_metadata(&path)?);
        if state.id() == image.source.file_id {
            cache.restat(&image.source.real, state);
        } else {
            cache.insert(&path, state, &image.digest, &image.info, image.lxd);
        }
    }
    Ok(())
}

/// Records the boxes this build made or took in the output, so that the
/// next build can take them by hard link instead of reading their images.
fn record_boxes(
    cache: &mut HashCache,
    output_dir: &Path,
    releases: &[Release],
    made: &std::collections::BTreeSet<model::RelPath>,
) -> Result<()> {
    let root = fsutil::canonicalize(output_dir)?;
    for image in releases.iter().flat_map(|r| &r.images) {
        let Some(boxed) = image
            .vagrant_box
            .as_ref()
            .filter(|_| made.contains(&image.source.site_path))
        else {
            continue;
        };
        let path = root.join(boxed.path.as_str());
        // The image's facts stand beside the box's digest: only the digest
        // is ever compared.
        cache.insert(
            &path,
            cache::FileState::of(&fsutil::symlink_metadata(&path)?),
            &boxed.digest,
            &image.info,
            None,
        );
    }
    Ok(())
}

/// One request per image, named by its path in the site, saying where in
/// the staging directory it must also land and where the previous output
/// has it.
fn hash_requests(
    config: &Config,
    plan: &scan::Plan,
    staging: &write::Staging,
) -> Result<Vec<hash::Request>> {
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
    plan.releases
        .iter()
        .flat_map(|r| {
            let images: Vec<&model::ImageSource> = r.images.iter().collect();
            let sha512 = catalog::virt_builder::wants_sha512(config, &r.info, &images);
            r.images
                .iter()
                .zip(sha512)
                .map(move |(i, sha512)| (r, i, sha512))
        })
        .map(|(release, image, sha512)| {
            let info = &release.info;
            let vagrant_box = match config.catalogs.vagrant && catalog::vagrant::boxable(image) {
                true => {
                    catalog::vagrant::check_version(info)?;
                    let path = catalog::vagrant::box_path(info, image)?;
                    Some(hash::BoxRequest {
                        job: hash::BoxJob {
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
            let place = match config.image_mode {
                ImageMode::None => Placement::Nowhere,
                ImageMode::Copy => Placement::Copy(staging.prepare(image.site_path.as_str())?),
                ImageMode::Link => Placement::Link(staging.prepare(image.site_path.as_str())?),
            };
            Ok(hash::Request {
                id: image.site_path.clone(),
                source: image.source.clone(),
                file_id: image.file_id,
                real: image.real.clone(),
                size_hint: image.size_hint,
                place,
                previous: previous_root
                    .as_ref()
                    .map(|root| root.join(image.site_path.as_str())),
                vagrant_box,
                sha512,
                prefix: catalog::simplestreams::metadata_tarball(
                    config,
                    &release.info,
                    &release.images,
                    image,
                )?
                .map(Into::into),
            })
        })
        .collect()
}

/// The hash cache file: `--cache-dir` or `VMCAST_CACHE_DIR`, else the
/// config's `cache_dir`, else the user's cache directory; none with
/// `--no-cache`.
fn cache_file(config: &Config, options: &BuildOptions) -> Result<Option<PathBuf>> {
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

/// Fails unless both key files may be written: absent, or `force`.
pub fn keygen_targets_free(secret_key: &Path, public_key: &Path, force: bool) -> Result<()> {
    if !force {
        for path in [secret_key, public_key] {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(Error::file(
                    path,
                    "already exists; pass --force to overwrite it",
                ));
            }
        }
    }
    Ok(())
}

/// Writes a new minisign key pair: the secret key with mode 0600, encrypted
/// when a password is given, and the public key with mode 0644. Creates
/// missing directories on the way; refuses to overwrite unless `force`.
pub fn keygen(
    secret_key: &Path,
    public_key: &Path,
    force: bool,
    password: Option<&str>,
) -> Result<sign::PublicKey> {
    keygen_targets_free(secret_key, public_key, force)?;
    for path in [secret_key, public_key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_dir_all(dir)?;
        }
    }
    let key = SecretKey::generate()?;
    fsutil::write_new_file(secret_key, key.to_file(password)?.as_bytes(), 0o600, force)?;
    fsutil::write_new_file(
        public_key,
        key.public.to_file().as_bytes(),
        fsutil::PUBLISHED_FILE_MODE,
        force,
    )?;
    Ok(key.public)
}

/// Writes a new OpenPGP key (v4, ed25519, may sign) for `user_id`: the
/// secret key ASCII-armored with mode 0600, encrypted when a password is
/// given, and the public key ASCII-armored with mode 0644. Creates missing
/// directories; refuses to overwrite unless `force`. Returns the key's
/// fingerprint.
pub fn openpgp_keygen(
    secret_key: &Path,
    public_key: &Path,
    force: bool,
    password: Option<&str>,
    user_id: &str,
) -> Result<String> {
    keygen_targets_free(secret_key, public_key, force)?;
    for path in [secret_key, public_key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_dir_all(dir)?;
        }
    }
    let key = openpgp::Signer::generate(user_id, Utc::now())?;
    fsutil::write_new_file(secret_key, key.to_file(password)?.as_bytes(), 0o600, force)?;
    fsutil::write_new_file(
        public_key,
        key.public_key()?.as_bytes(),
        fsutil::PUBLISHED_FILE_MODE,
        force,
    )?;
    Ok(key.fingerprint())
}

/// `vmcast-gen hash`: hashes files where they were made and writes a
/// sidecar beside each (`<file>.vmcast-hash`) that `build` can trust when
/// the config allows it; with `sha512`, the SHA-512 the virt-builder index
/// needs too, from the same read. Returns each sidecar's path and digest.
pub fn write_sidecars(
    files: &[PathBuf],
    sha512: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<(PathBuf, model::FileDigest)>> {
    let jobs = files
        .iter()
        .map(|f| {
            Ok(hash::Job {
                source: f.clone(),
                size_hint: fsutil::metadata(f)?.len(),
                open: hash::Open::Named,
                copy_to: None,
                vagrant_box: None,
                sha512,
                prefix: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let hashed = hash::hash_all(&jobs, threads, progress)?;
    files
        .iter()
        .zip(hashed)
        .map(|(file, h)| {
            let path = cache::Sidecar::new(file, &h.state, &h.digest).write(file)?;
            Ok((path, h.digest))
        })
        .collect()
}
