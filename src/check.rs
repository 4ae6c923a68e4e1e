//! `vmcast-gen check`: validates the config, every notes file and the
//! templates without reading an image, and reports every problem at once.
//! For pull requests that edit notes before the images exist, and for
//! pre-commit hooks.

use std::path::Path;

use chrono::{TimeZone, Utc};

use crate::config::{self, Config, Overrides};
use crate::error::{Error, Result};
use crate::inspect::ImageInfo;
use crate::keys::{self, LockedSecret, PasswordPrompt};
use crate::model::{FileDigest, Image, ImageFormat, ImageSource, KeyFile, Release, Sha256};
use crate::render::Site;
use crate::scan;
use crate::sign::{KeyId, SecretKey};
use crate::warning::Warning;

/// What `check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// The releases found, those with problems included.
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
    /// `VMCAST_PKCS11_MODULE`.
    pub pkcs11_module: Option<&'a Path>,
    /// `VMCAST_KEY_PASSWORD`: an encrypted key file is unlocked with it,
    /// as `build` would, so that a wrong password is found here.
    pub password: Option<&'a str>,
    /// `VMCAST_OPENPGP_PASSWORD`, the same for the OpenPGP key.
    pub openpgp_password: Option<&'a str>,
    /// Whether `build` could ask for a missing password on a terminal:
    /// then an encrypted key without one stays locked, and is no problem.
    pub terminal: bool,
}

/// Checks a site: the config, every notes file, the templates and the
/// secret keys, minisign and OpenPGP: found, well-formed, and unlocked
/// as `build` unlocks them when that asks for nothing (see
/// [`KeyOptions`]), the minisign key's public half held to the config's
/// `public_key`. A minisign key on a PKCS#11 token is opened, with the PIN
/// `pin` asks for when its URI gives none, and held to `public_key` too;
/// nothing is signed. With `images`,
/// the images must also exist and be recognisable by name (they are still
/// not read), and their SBOMs and provenance files are read and checked
/// (all but provenance subjects, which need the images' digests).
pub fn check(
    config_path: &Path,
    images: bool,
    key: KeyOptions,
    pin: PasswordPrompt,
) -> Result<CheckReport> {
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
    // Releases whose images a build on the config's previous site takes
    // from it may have none here, as build allows.
    let imageless = config.previous.is_some();
    let threads = crate::par::default_threads();
    let (plan, mut problems) = match scan::scan_all(&config, images, imageless, threads) {
        Ok(found) => found,
        Err(e) => (
            scan::Plan {
                releases: Vec::new(),
                warnings: Vec::new(),
                remembered: 0,
            },
            vec![e],
        ),
    };
    // Every release found, with a problem or not.
    let found = plan.releases.len() + problems.len();
    let mut warnings = config.warnings.clone();
    warnings.extend(plan.warnings.iter().cloned());
    let key_files = check_keys(&config, key, pin, &mut problems, &mut warnings);
    if let Err(e) = plan.refuse_secret_keys(&key_files) {
        problems.push(e);
    }
    check_supply(&config, &plan, &mut problems);
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
    if let Err(e) = render_with_stand_ins(&config, &plan) {
        problems.push(e);
    }
    Ok(CheckReport {
        releases: found,
        problems,
        warnings,
    })
}

/// Opens the keys as `build` would, unlocking each with the password
/// given: a key that would fail the build is a problem. Returns the key
/// files found, which the release tree must not hold.
fn check_keys(
    config: &Config,
    key: KeyOptions,
    pin: PasswordPrompt,
    problems: &mut Vec<Error>,
    warnings: &mut Vec<Warning>,
) -> Vec<KeyFile> {
    let mut key_files = Vec::new();
    match keys::locked_key(config, key.file, key.text) {
        Ok(found) => {
            warnings.extend(found.warnings);
            key_files.extend(found.file);
            let opened = match found.key {
                LockedSecret::Token(uri) => {
                    keys::open_token(config, &uri, key.pkcs11_module, pin).map(|_| ())
                }
                LockedSecret::File(locked) => match (locked.encrypted, key.password) {
                    (true, None) => no_password(locked.path(), "VMCAST_KEY_PASSWORD", key),
                    (_, password) => locked
                        .unlock(&mut || Ok(password.unwrap_or_default().to_owned()))
                        .and_then(|unlocked| keys::same_key(config, &unlocked.public)),
                },
            };
            if let Err(e) = opened {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e),
    }
    match keys::locked_openpgp_key(config, key.openpgp_text) {
        Ok(Some(found)) => {
            warnings.extend(found.warnings);
            key_files.extend(found.file);
            let unlocked = match (found.key.encrypted, key.openpgp_password) {
                (true, None) => no_password(found.key.path(), "VMCAST_OPENPGP_PASSWORD", key),
                (_, password) => found
                    .key
                    .unlock(&mut || Ok(password.unwrap_or_default().to_owned()))
                    .map(|_| ()),
            };
            if let Err(e) = unlocked {
                problems.push(e);
            }
        }
        Ok(None) => {
            if let Err(e) = keys::systemd_needs_openpgp(config, false) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e),
    }
    key_files
}

/// SBOMs and provenance are small, and not images: each is read and
/// checked, signatures included. Whether provenance is about its image
/// needs the image's digest, so that is left to `build`.
fn check_supply(config: &Config, plan: &scan::Plan, problems: &mut Vec<Error>) {
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
}

/// Renders what there is, with stand-in digests and keys, to find template
/// errors.
fn render_with_stand_ins(config: &Config, plan: &scan::Plan) -> Result<()> {
    if plan.releases.is_empty() {
        return Ok(());
    }
    let releases: Vec<Release> = plan
        .releases
        .iter()
        .map(|r| Release {
            info: r.info.clone(),
            images: if r.images.is_empty() && r.info.cloud_images.is_empty() {
                vec![stand_in(config, &r.info)]
            } else {
                r.images.iter().cloned().map(with_stand_in_digest).collect()
            },
            supply: Vec::new(),
        })
        .collect();
    let key = SecretKey::from_seed(KeyId([0; 8]), [0; 32]);
    let epoch = Utc
        .timestamp_opt(0, 0)
        .single()
        .expect("the epoch is a valid time");
    // A stand-in OpenPGP key too, for the catalogs it signs.
    let openpgp = match config.catalogs.systemd {
        Some(_) => {
            let signer = crate::openpgp::Signer::generate("vmcast-gen check", epoch)?;
            let public = signer.public_key()?;
            Some(crate::render::OpenPgp { signer, public })
        }
        None => None,
    };
    let site = Site {
        config,
        releases: &releases,
        public_key: &key.public,
        next_key: None,
        openpgp: openpgp.as_ref(),
        build_time: epoch,
        sequence: 0,
        expires: None,
        published_feeds: &Default::default(),
    };
    crate::build::texts(&site, crate::par::default_threads(), None).map(|_| ())
}

/// An encrypted key and no password in `variable`: `build` would ask on a
/// terminal, and fail anywhere else.
fn no_password(path: &Path, variable: &str, key: KeyOptions) -> Result<()> {
    match key.terminal {
        true => Ok(()),
        false => Err(Error::file(
            path,
            format_args!(
                "is encrypted, and `build` would have no password for it: set {variable} (an \
                 empty one counts as unset), or build on a terminal"
            ),
        )),
    }
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
        seen: crate::model::Seen::unscanned(0),
    })
}
