//! The hash stage as the build runs it: one request per image (where it
//! lands in the staging directory, where the previous output has it), the
//! hash cache and sidecars as shortcuts, and the cache kept even when a
//! later stage fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::cache::HashCache;
use crate::catalog;
use crate::config::{Config, ImageMode};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hash::{self, Progress};
use crate::model::{self, Digested, FileDigest, RelPath};
use crate::place::Placement;
use crate::scan;
use crate::warning::Warning;
use crate::write;

use super::BuildOptions;

/// What the hash stage gives the rest of the build.
pub(super) struct Hashed {
    pub digests: BTreeMap<RelPath, Digested>,
    /// The Vagrant box of each image that has one.
    pub boxes: BTreeMap<RelPath, FileDigest>,
    pub stats: hash::Stats,
    /// The cache, to record the new output in once it is in place.
    pub cache: Option<HashCache>,
    /// The images placed in the staging directory (unless `image_mode =
    /// "none"`), less those whose hard link was there already: the output
    /// record has nothing new to say of them.
    pub placed: BTreeSet<RelPath>,
    /// The images whose box this build made or took.
    pub boxed: BTreeSet<RelPath>,
}

/// Digests every image the scan found (read, or from the cache or a
/// sidecar) and places it in the staging directory.
pub(super) fn hash_images(
    config: &Config,
    options: &BuildOptions,
    plan: &scan::Plan,
    staging: &write::Staging,
    threads: usize,
    progress: &dyn Progress,
    warnings: &mut Vec<Warning>,
) -> Result<Hashed> {
    let requests = hash_requests(config, plan, staging)?;
    let mut shortcuts = hash::Shortcuts {
        cache: match cache_file(config, options)? {
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
    Ok(Hashed {
        boxed: hashed.boxes.keys().cloned().collect(),
        digests: hashed.digests,
        boxes: hashed.boxes,
        stats: hashed.stats,
        cache,
        placed: requests
            .into_iter()
            .map(|r| r.id)
            .filter(|id| !hashed.held.contains(id))
            .collect(),
    })
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
