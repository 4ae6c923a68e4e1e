//! Releases as the feed publishes them: each planned release with its
//! images' digests, or, with `--previous`, with the published facts of the
//! images this runner does not hold. Whatever the previous site has that
//! this build drops is warned of; a published image that changed is
//! refused.

use rustc_hash::FxHashMap;

use crate::catalog;
use crate::config::{Config, ImageMode};
use crate::error::{Error, Result};
use crate::model::{self, Digested, FileDigest, Image, RelPath, Release};
use crate::notes;
use crate::previous::Previous;
use crate::scan::PlannedRelease;
use crate::supply::{self, keys::ProvenanceKey};
use crate::warning::Warning;
use crate::write;

use super::Carried;

/// What the releases are assembled from, besides the scan and the hashes.
pub(super) struct Assembly<'a> {
    pub config: &'a Config,
    /// The verified previous site (`--previous`).
    pub previous: Option<&'a Previous>,
    /// Images allowed to differ from the previous site's (`--replace`).
    pub replace: &'a [String],
    pub provenance_keys: &'a [ProvenanceKey],
    /// Where the supply-chain files are written.
    pub staging: &'a write::Staging<'a>,
}

impl Assembly<'_> {
    /// The releases in publishing order, and what was taken from the
    /// previous site unread.
    pub(super) fn releases(
        &self,
        planned_releases: Vec<PlannedRelease>,
        mut digests: FxHashMap<RelPath, Digested>,
        mut boxes: FxHashMap<RelPath, FileDigest>,
        mut zsyncs: FxHashMap<RelPath, FileDigest>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(Vec<Release>, Option<Carried>)> {
        let mut carried = self.previous.map(|p| Carried {
            source: p.source.clone(),
            sequence: p.sequence,
            releases: 0,
            images: 0,
            bytes: 0,
        });
        let mut releases = Vec::with_capacity(planned_releases.len());
        for mut planned in planned_releases {
            let published = self
                .previous
                .and_then(|p| p.release(&planned.info.appliance, &planned.info.version))
                .map(|item| &item.release);
            let release = if planned.images.is_empty() {
                self.without_images(planned, published, carried.as_mut())?
            } else {
                let made = Made {
                    digests: &mut digests,
                    boxes: &mut boxes,
                    zsyncs: &mut zsyncs,
                };
                // Moved, not cloned: the planned release needs them no more.
                let sources = std::mem::take(&mut planned.images);
                let images = hashed_images(&planned, sources, published, made, self.replace)?;
                if let Some(published) = published {
                    warn_dropped(&planned, &images, published, warnings);
                }
                let supply = self.supply(&planned, &images, warnings)?;
                Release {
                    images,
                    info: planned.info,
                    supply,
                }
            };
            releases.push(release);
        }
        if let Some(previous) = self.previous {
            self.warn_of_previous(previous, &releases, carried.as_ref(), warnings);
        }
        refuse_shared_paths(&releases)?;
        for release in &mut releases {
            check_images(release)?;
            // A SHA-512 only where the virt-builder index lists the image: the
            // cache or a previous site may know more, and the feed must not
            // depend on it.
            let sources: Vec<&model::ImageSource> =
                release.images.iter().map(|i| &i.source).collect();
            let wanted = catalog::virt_builder::wants_sha512(self.config, &release.info, &sources);
            for (image, wanted) in release.images.iter_mut().zip(wanted) {
                image.digest.sha512 = image.digest.sha512.filter(|_| wanted);
            }
        }
        Ok((releases, carried))
    }

    /// A release with no image here: the published release's images and
    /// files, taken unread, or cloud images only.
    fn without_images(
        &self,
        planned: PlannedRelease,
        published: Option<&Release>,
        carried: Option<&mut Carried>,
    ) -> Result<Release> {
        let config = self.config;
        let published = published.filter(|p| !p.images.is_empty());
        let (Some(published), Some(c)) = (published, carried) else {
            if !planned.info.cloud_images.is_empty() {
                return Ok(Release {
                    images: Vec::new(),
                    info: planned.info,
                    supply: Vec::new(),
                });
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
            check_carried_url(config, &image.source.site_path, &image.source.url)?;
            if let Some(z) = &image.zsync {
                check_carried_url(config, &z.path, &z.url)?;
            }
        }
        // Its supply-chain files were checked when first published;
        // their facts come from the signed feed, like the images'.
        for file in &published.supply {
            check_carried_url(config, &file.site_path, &file.url)?;
        }
        let mut images = published.images.clone();
        // What this build makes of no image (no catalog offers the boxes,
        // no control files): the feed names none, as for the images read
        // here.
        for image in &mut images {
            if !config.catalogs.vagrant {
                image.vagrant_box = None;
            }
            if !config.makes_zsync() {
                image.zsync = None;
            }
        }
        Ok(Release {
            images,
            supply: published.supply.clone(),
            info: planned.info,
        })
    }

    /// The release's SBOMs and provenance, read and checked against its
    /// images, and staged for publishing.
    fn supply(
        &self,
        planned: &PlannedRelease,
        images: &[Image],
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<model::SupplyFile>> {
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
            let (checked, bytes) = supply::load(file, &targets, self.provenance_keys)?;
            if checked.signing == Some(supply::Signing::Unverified) {
                warnings.push(Warning::file(
                    &file.source,
                    "signed, but vmcast.toml lists no provenance_keys to verify it with: \
                     published as signed but unverified; list the builder's public key in \
                     provenance_keys",
                ));
            }
            if self.config.image_mode != ImageMode::None {
                self.staging.write(checked.site_path.as_str(), &bytes)?;
            }
            files.push(checked);
        }
        Ok(files)
    }

    /// What a build on the previous site drops, and where its carried
    /// images are not.
    fn warn_of_previous(
        &self,
        previous: &Previous,
        releases: &[Release],
        carried: Option<&Carried>,
        warnings: &mut Vec<Warning>,
    ) {
        let config = self.config;
        let here: std::collections::BTreeSet<(&str, &str)> = releases
            .iter()
            .map(|r| (r.info.appliance.as_str(), r.info.version.as_str()))
            .collect();
        for old in previous.items() {
            let old = &old.release.info;
            if !here.contains(&(old.appliance.as_str(), old.version.as_str())) {
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
        if whole_site_host && carried.is_some_and(|c| c.images > 0) {
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
}

/// What the hash stage gave, by image: taken from as the images are
/// assembled.
struct Made<'a> {
    digests: &'a mut FxHashMap<RelPath, Digested>,
    boxes: &'a mut FxHashMap<RelPath, FileDigest>,
    zsyncs: &'a mut FxHashMap<RelPath, FileDigest>,
}

/// The planned release's images with their digests, boxes and control
/// files; each one the previous site publishes under the same path must
/// have its bytes.
fn hashed_images(
    planned: &PlannedRelease,
    sources: Vec<model::ImageSource>,
    published: Option<&Release>,
    made: Made,
    replace: &[String],
) -> Result<Vec<Image>> {
    let mut images = Vec::with_capacity(sources.len());
    for source in sources {
        let Digested { digest, info, lxd } = made
            .digests
            .remove(&source.site_path)
            .ok_or_else(|| Error::file(&source.source, "was planned but never hashed"))?;
        let zsync = made
            .zsyncs
            .remove(&source.site_path)
            .map(|digest| model::ZsyncFile {
                path: source.zsync_path(),
                url: source.zsync_url(),
                digest,
            });
        let vagrant_box = match made.boxes.remove(&source.site_path) {
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
            zsync,
        };
        if let Some(old) = published.and_then(|p| {
            p.images
                .iter()
                .find(|o| o.source.site_path == image.source.site_path)
        }) {
            check_unchanged_image(&image, old, replace)?;
        }
        images.push(image);
    }
    Ok(images)
}

/// Warns of what the previous site publishes for this release that this
/// build does not: it leaves the feed.
fn warn_dropped(
    planned: &PlannedRelease,
    images: &[Image],
    published: &Release,
    warnings: &mut Vec<Warning>,
) {
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

/// No two releases publish one file: in the flat layout every version of
/// an appliance shares a directory, and a release taken from the previous
/// site keeps its names. (The scan refuses this among the releases here.)
fn refuse_shared_paths(releases: &[Release]) -> Result<()> {
    let files = releases
        .iter()
        .map(|r| r.images.len() + r.supply.len())
        .sum();
    let mut by_path: FxHashMap<&RelPath, &model::ReleaseInfo> =
        FxHashMap::with_capacity_and_hasher(files, Default::default());
    for release in releases {
        let files = release.images.iter().map(|i| &i.source.site_path);
        for path in files.chain(release.supply.iter().map(|f| &f.site_path)) {
            if let Some(first) = by_path.insert(path, &release.info) {
                return Err(Error::file(
                    &release.info.notes_path,
                    format_args!(
                        "release {} {} would publish {path}, which release {} {} ({}) publishes \
                         already: two releases cannot publish one file; rename the image",
                        release.info.appliance,
                        release.info.version,
                        first.appliance,
                        first.version,
                        first.notes_path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
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
                    crate::units::human_size(size),
                    size.div_ceil(1 << 30)
                ),
            ));
        }
    }
    Ok(())
}
