//! `vmcast-gen check`: validates the config, every notes file and the
//! templates without reading an image, and reports every problem at once.
//! For pull requests that edit notes before the images exist, and for
//! pre-commit hooks.

use std::path::Path;

use chrono::{TimeZone, Utc};

use crate::config::{self, Overrides};
use crate::error::{Error, Result};
use crate::inspect::ImageInfo;
use crate::model::{FileDigest, Image, ImageFormat, ImageSource, Release, Sha256};
use crate::render::Site;
use crate::scan;
use crate::sign::{KeyId, SecretKey};

/// What `check` found.
#[derive(Debug)]
pub struct CheckReport {
    pub releases: usize,
    pub problems: Vec<Error>,
    pub warnings: Vec<crate::Warning>,
}

/// Where `check` looks for the secret key, as `build` would.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyOptions<'a> {
    /// `--secret-key`.
    pub file: Option<&'a Path>,
    /// `VMCAST_SECRET_KEY`.
    pub text: Option<&'a str>,
    /// `VMCAST_OPENPGP_KEY`.
    pub openpgp_text: Option<&'a str>,
}

/// Checks a site: the config, every notes file, the templates and the
/// secret keys, minisign and OpenPGP (found and well-formed; they are not
/// unlocked). With `images`,
/// the images must also exist and be recognisable by name (they are still
/// not read), and their SBOMs and provenance files are read and checked
/// (all but provenance subjects, which need the images' digests).
pub fn check(config_path: &Path, images: bool, key: KeyOptions) -> Result<CheckReport> {
    let config = match config::load(config_path, &Overrides::default()) {
        Ok(c) => c,
        Err(e) => {
            return Ok(CheckReport {
                releases: 0,
                problems: vec![e],
                warnings: Vec::new(),
            });
        }
    };
    let (plan, mut problems) = match scan::scan_all(&config, images, crate::par::default_threads())
    {
        Ok(found) => found,
        Err(e) => (
            scan::Plan {
                releases: Vec::new(),
                warnings: Vec::new(),
            },
            vec![e],
        ),
    };
    let mut warnings = plan.warnings.clone();
    match crate::keys::locked_key(&config, key.file, key.text) {
        Ok((_, warning)) => warnings.extend(warning),
        Err(e) => problems.push(e),
    }
    match crate::keys::locked_openpgp_key(&config, key.openpgp_text) {
        Ok(found) => warnings.extend(found.and_then(|(_, warning)| warning)),
        Err(e) => problems.push(e),
    }
    // SBOMs and provenance are small, and not images: each is read and
    // checked, signatures included. Whether provenance is about its image
    // needs the image's digest, so that is left to `build`.
    match crate::supply::keys::load(&config.provenance_keys) {
        Ok(keys) => {
            for file in plan.releases.iter().flat_map(|r| &r.supply) {
                if let Err(e) = crate::supply::load(file, &[], &keys) {
                    problems.push(e);
                }
            }
        }
        Err(e) => problems.push(e),
    }
    // Versions Vagrant cannot parse fail the build before any image is read.
    if config.catalogs.vagrant {
        for r in &plan.releases {
            if r.images.iter().any(crate::catalog::vagrant::boxable)
                && let Err(e) = crate::catalog::vagrant::check_version(&r.info)
            {
                problems.push(e);
            }
        }
    }
    // Render what there is, with stand-in digests, to find template errors.
    let releases: Vec<Release> = plan
        .releases
        .iter()
        .map(|r| Release {
            info: r.info.clone(),
            images: if r.images.is_empty() && r.info.cloud_images.is_empty() {
                vec![stand_in(&config, &r.info)]
            } else {
                r.images.iter().cloned().map(with_stand_in_digest).collect()
            },
            supply: Vec::new(),
        })
        .collect();
    if !releases.is_empty() {
        let key = SecretKey::from_seed(KeyId([0; 8]), [0; 32]);
        let site = Site {
            config: &config,
            releases: &releases,
            public_key: &key.public,
            next_key: None,
            openpgp_public_key: None,
            build_time: Utc
                .timestamp_opt(0, 0)
                .single()
                .expect("the epoch is a valid time"),
            sequence: 0,
            expires: None,
        };
        if let Err(e) = crate::build::texts(&site, crate::par::default_threads()) {
            problems.push(e);
        }
    }
    Ok(CheckReport {
        releases: plan.releases.len(),
        problems,
        warnings,
    })
}

fn stand_in_info(format: ImageFormat) -> ImageInfo {
    ImageInfo {
        format,
        detected: false,
        compression: None,
        virtual_size: None,
        subformat: None,
        cluster_size: None,
        cluster_compression: None,
        machine: None,
    }
}

fn with_stand_in_digest(source: ImageSource) -> Image {
    Image {
        info: stand_in_info(source.format),
        digest: FileDigest {
            length: 0,
            sha256: Sha256([0; 32]),
            sha512: None,
        },
        source,
        vagrant_box: None,
        lxd: None,
        zsync: None,
    }
}

/// An image for a release whose images were not looked for.
fn stand_in(config: &config::Config, info: &crate::model::ReleaseInfo) -> Image {
    let name = format!("{}-{}.img", info.appliance, info.version);
    let rel = format!("{}/{}/{name}", info.appliance, info.version);
    with_stand_in_digest(ImageSource {
        source: name.clone().into(),
        real: name.clone().into(),
        url: config::join_url(&config.download_base_url, &rel),
        site_path: crate::model::RelPath::parse(&format!("images/{rel}"))
            .expect("appliance and version are valid path segments"),
        name: crate::model::FileName::parse(&name)
            .expect("appliance and version make a plain name"),
        format: ImageFormat::Raw,
        compression: None,
        arch: None,
        primary: true,
        size_hint: 0,
        file_id: crate::model::FileId { dev: 0, ino: 0 },
    })
}
