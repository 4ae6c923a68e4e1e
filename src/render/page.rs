//! The landing page, rendered by minijinja from templates compiled into the
//! binary, which a site overrides file by file from its `templates_dir`.

use std::path::PathBuf;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

use super::Site;
use crate::error::{Error, Result};
use crate::model::{Image, Release};
use crate::units::human_size;

/// The built-in templates, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("index.html", include_str!("../../templates/index.html")),
    ("style.css", include_str!("../../templates/style.css")),
    ("history.html", include_str!("../../templates/history.html")),
];

pub const PAGE: &str = "index.html";
pub const HISTORY: &str = "history.html";

#[derive(Serialize)]
struct SiteCtx {
    title: String,
    description: String,
    language: Option<String>,
    base_url: String,
    feed_url: String,
    feed_sig_url: String,
    manifest_url: String,
    manifest_sig_url: String,
    pubkey_url: String,
    /// The OpenPGP key as systemd's keyring, with `[catalogs] systemd`.
    pubring_url: Option<String>,
    public_key: String,
    key_id: String,
    generator: String,
    build_date: String,
    release_count: usize,
    image_count: usize,
    cloud_image_count: usize,
    total_size: String,
    /// The first image of the page, for the verify section's example;
    /// none when every release is of cloud images only.
    example_image: Option<ExampleCtx>,
}

#[derive(Serialize)]
struct ExampleCtx {
    path: String,
    url: String,
}

/// An appliance's sysupdate transfer file (`[catalogs] systemd`, flat
/// layout), shown on the page.
#[derive(Serialize)]
struct SysupdateCtx {
    url: String,
    text: String,
    /// The transfer files for its other formats.
    others: Vec<OtherTransferCtx>,
}

#[derive(Serialize)]
struct OtherTransferCtx {
    format: String,
    url: String,
}

#[derive(Serialize)]
struct ApplianceCtx {
    name: String,
    /// How systemd-sysupdate keeps a host current, if the site says.
    sysupdate: Option<SysupdateCtx>,
    title: String,
    description: Option<String>,
    feed_url: String,
    feed_sig_url: String,
    releases: Vec<ReleaseCtx>,
    /// Its history page, when older releases are only there.
    history_url: Option<String>,
    /// All its releases, on this page or not.
    release_count: usize,
}

#[derive(Serialize)]
struct ReleaseCtx {
    anchor: String,
    appliance: String,
    version: String,
    title: String,
    date: String,
    pub_date: String,
    channel: String,
    critical: bool,
    notes_html: Value,
    requirements: Option<RequirementsCtx>,
    images: Vec<ImageCtx>,
    cloud_images: Vec<CloudImageCtx>,
    /// SBOMs and provenance about the whole release.
    supply: Vec<SupplyCtx>,
}

/// An SBOM or provenance file, linked from its image or release.
#[derive(Serialize)]
struct SupplyCtx {
    /// `sbom` or `provenance`.
    kind: &'static str,
    /// `SBOM (SPDX 2.3)`, `Provenance (in-toto)`.
    label: String,
    name: String,
    url: String,
    path: String,
    media_type: &'static str,
    length: u64,
    sha256: String,
    /// For provenance: `none`, `unverified` or `verified`.
    signature: Option<&'static str>,
    key_ids: Vec<String>,
}

#[derive(Serialize)]
struct CloudImageCtx {
    provider: &'static str,
    provider_title: &'static str,
    region: Option<String>,
    id: String,
    arch: Option<String>,
}

#[derive(Serialize)]
struct RequirementsCtx {
    arch: Option<String>,
    min_memory_mib: Option<u64>,
    min_disk_gib: Option<u64>,
    min_cpus: Option<u64>,
    firmware: Option<&'static str>,
    hypervisors: Vec<String>,
}

#[derive(Serialize)]
struct ImageCtx {
    name: String,
    url: String,
    path: String,
    format: &'static str,
    arch: Option<String>,
    compression: Option<&'static str>,
    length: u64,
    size: String,
    virtual_size: Option<String>,
    subformat: Option<String>,
    machine: Option<crate::model::Machine>,
    sha256: String,
    primary: bool,
    /// The image on each mirror.
    mirrors: Vec<String>,
    /// SBOMs and provenance about this image.
    supply: Vec<SupplyCtx>,
}

fn image_ctx(site: &Site, release: &Release, image: &Image) -> ImageCtx {
    let s = &image.source;
    ImageCtx {
        name: s.name.to_string(),
        url: s.url.to_string(),
        path: s.site_path.to_string(),
        format: s.format.as_str(),
        arch: s.arch.as_ref().map(ToString::to_string),
        compression: s.compression.map(|c| c.as_str()),
        length: image.digest.length,
        size: human_size(image.digest.length),
        virtual_size: image.info.virtual_size.map(human_size),
        subformat: image.info.subformat.clone(),
        machine: image.info.machine.clone(),
        sha256: image.digest.sha256.to_hex(),
        primary: s.primary,
        mirrors: super::feed::mirror_urls(site, &release.info.appliance, image)
            .iter()
            .map(|u| u.to_string())
            .collect(),
        supply: supply_ctx(release, Some(s.name.as_str())),
    }
}

/// The supply-chain files of a release about `image`, or about the whole
/// release.
fn supply_ctx(release: &Release, image: Option<&str>) -> Vec<SupplyCtx> {
    release
        .supply
        .iter()
        .filter(|f| f.image.as_deref() == image)
        .map(|f| {
            let kind = f.format.kind();
            SupplyCtx {
                kind: kind.as_str(),
                label: format!(
                    "{} ({})",
                    match kind {
                        crate::supply::Kind::Sbom => "SBOM",
                        crate::supply::Kind::Provenance => "Provenance",
                    },
                    f.format.title()
                ),
                name: f.name.to_string(),
                url: f.url.to_string(),
                path: f.site_path.to_string(),
                media_type: f.format.media_type(),
                length: f.digest.length,
                sha256: f.digest.sha256.to_hex(),
                signature: f.signing.as_ref().map(|s| s.as_str()),
                key_ids: f
                    .signing
                    .as_ref()
                    .map(|s| s.key_ids().to_vec())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn release_ctx(site: &Site, release: &Release) -> ReleaseCtx {
    let info = &release.info;
    let r = &info.requirements;
    ReleaseCtx {
        anchor: info.anchor(),
        appliance: info.appliance.to_string(),
        version: info.version.to_string(),
        title: info.title.to_string(),
        date: info.date.format("%Y-%m-%d").to_string(),
        pub_date: info.date.to_rfc2822(),
        channel: info.channel.to_string(),
        critical: info.critical,
        notes_html: Value::from_safe_string(info.notes_html.clone()),
        requirements: (!r.is_empty()).then(|| RequirementsCtx {
            arch: r.arch.as_ref().map(ToString::to_string),
            min_memory_mib: r.min_memory_mib,
            min_disk_gib: r.min_disk_gib,
            min_cpus: r.min_cpus,
            firmware: r.firmware.map(|f| f.as_str()),
            hypervisors: r.hypervisors.clone(),
        }),
        images: release
            .images
            .iter()
            .map(|i| image_ctx(site, release, i))
            .collect(),
        cloud_images: info
            .cloud_images
            .iter()
            .map(|c| CloudImageCtx {
                provider: c.provider.as_str(),
                provider_title: c.provider.title(),
                region: c.region.clone(),
                id: c.id.clone(),
                arch: c.arch.as_ref().map(ToString::to_string),
            })
            .collect(),
        supply: supply_ctx(release, None),
    }
}

/// The landing page: the releases of the current feeds (`current`), and a
/// link to each appliance's history page when it has archived releases.
/// `feeds` are the paths of the feeds and the appliance each covers.
/// The appliance's transfer files, with `[catalogs] systemd`, when it has
/// a flat directory.
fn sysupdate_ctx(site: &Site, appliance: &crate::model::Name) -> Option<SysupdateCtx> {
    let config = site.config;
    config.catalogs.systemd?;
    let plan = super::transfers(site.releases, appliance, &config.base_url);
    let mut transfers = plan.transfers.into_iter();
    let first = transfers.next()?;
    Some(SysupdateCtx {
        url: config.site_url(&first.path).to_string(),
        text: first.text(appliance),
        others: transfers
            .map(|t| OtherTransferCtx {
                format: t.format.to_string(),
                url: config.site_url(&t.path).to_string(),
            })
            .collect(),
    })
}

pub fn render(
    site: &Site,
    feeds: &[(&str, Option<&crate::model::Name>)],
    current: &[&Release],
) -> Result<String> {
    let config = site.config;
    let url = |p: &str| config.site_url(p).to_string();
    let feed_for = |name: &str| {
        feeds
            .iter()
            .find(|(_, a)| a.is_some_and(|a| a.as_str() == name))
            .map_or(crate::media::FEED, |(path, _)| path)
    };
    let mut appliances: Vec<ApplianceCtx> = Vec::new();
    for release in current {
        let name = release.info.appliance.as_str();
        let index = match appliances.iter().position(|a| a.name == name) {
            Some(i) => i,
            None => {
                let meta = config.appliance(&release.info.appliance);
                let feed = feed_for(name);
                appliances.push(ApplianceCtx {
                    name: name.to_owned(),
                    sysupdate: sysupdate_ctx(site, &release.info.appliance),
                    title: meta.title.to_string(),
                    description: meta.description,
                    feed_url: url(feed),
                    feed_sig_url: url(&format!("{feed}.minisig")),
                    releases: Vec::new(),
                    history_url: None,
                    release_count: site
                        .releases
                        .iter()
                        .filter(|r| r.info.appliance == release.info.appliance)
                        .count(),
                });
                appliances.len() - 1
            }
        };
        appliances[index].releases.push(release_ctx(site, release));
    }
    for a in &mut appliances {
        if a.releases.len() < a.release_count {
            let name = crate::model::Name::parse(&a.name, "appliance name")
                .expect("an appliance of the site has a valid name");
            a.history_url = Some(url(&super::history_path(&name)));
        }
    }
    appliances.sort_by(|a, b| a.name.cmp(&b.name));
    let example_image = appliances
        .iter()
        .flat_map(|a| &a.releases)
        .find_map(|r| r.images.first())
        .map(|i| ExampleCtx {
            path: i.path.clone(),
            url: i.url.clone(),
        });

    let total: u64 = site
        .releases
        .iter()
        .flat_map(|r| &r.images)
        .map(|i| i.digest.length)
        .sum();
    let ctx = SiteCtx {
        title: config.title.clone(),
        description: config.description.clone(),
        language: config.language.clone(),
        base_url: config.base_url.to_string(),
        feed_url: url(crate::media::FEED),
        feed_sig_url: url(&format!("{}.minisig", crate::media::FEED)),
        manifest_url: url(crate::media::MANIFEST),
        manifest_sig_url: url(crate::media::MANIFEST_SIG),
        pubkey_url: url(crate::media::PUBLIC_KEY),
        pubring_url: config
            .catalogs
            .systemd
            .map(|_| url(crate::media::IMPORT_PUBRING)),
        public_key: site.public_key.to_base64(),
        key_id: site.public_key.key_id.to_string(),
        generator: super::generator(),
        build_date: site.build_time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        release_count: site.releases.len(),
        image_count: site.releases.iter().map(|r| r.images.len()).sum(),
        cloud_image_count: site
            .releases
            .iter()
            .map(|r| r.info.cloud_images.len())
            .sum(),
        total_size: human_size(total),
        example_image,
    };

    let templates_dir = config.templates_dir.clone();
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_loader(move |name| load_template(&templates_dir, name));
    let result = env
        .get_template(PAGE)
        .and_then(|t| t.render(minijinja::context! { site => Value::from(minijinja::value::Serde(&ctx)), appliances => Value::from(minijinja::value::Serde(&appliances)) }));
    result.map_err(|e| template_error(&config.templates_dir, &e))
}

/// The history page of `appliance`: every release, newest first.
pub fn render_history(site: &Site, appliance: &crate::model::Name) -> Result<String> {
    let config = site.config;
    let meta = config.appliance(appliance);
    let releases: Vec<ReleaseCtx> = site
        .releases
        .iter()
        .filter(|r| r.info.appliance == *appliance)
        .map(|r| release_ctx(site, r))
        .collect();
    let templates_dir = config.templates_dir.clone();
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_loader(move |name| load_template(&templates_dir, name));
    env.get_template(HISTORY)
        .and_then(|t| {
            t.render(minijinja::context! {
                site => minijinja::context! {
                    title => config.title.clone(),
                    language => config.language.clone(),
                    base_url => config.base_url.to_string(),
                    generator => super::generator(),
                },
                appliance => minijinja::context! {
                    name => appliance.to_string(),
                    title => meta.title.to_string(),
                },
                releases => Value::from(minijinja::value::Serde(&releases)),
            })
        })
        .map_err(|e| template_error(&config.templates_dir, &e))
}

/// The digest of the site's own templates: every file under `dir` (the
/// `templates_dir`, followed through symbolic links as the loader follows
/// them), by name and bytes; of nothing when there is no such directory.
/// `None` when it cannot be read.
pub fn templates_digest(dir: &std::path::Path) -> Option<crate::model::Sha256> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut feed = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    match std::fs::metadata(dir) {
        Ok(_) => {
            let walk = walkdir::WalkDir::new(dir)
                .follow_links(true)
                .sort_by_file_name();
            for entry in walk {
                let entry = entry.ok()?;
                let name = entry.path().strip_prefix(dir).ok()?;
                feed(name.as_os_str().as_encoded_bytes());
                if entry.file_type().is_file() {
                    feed(b"file");
                    let (bytes, _) = crate::fsutil::read_regular(
                        entry.path(),
                        true,
                        crate::model::MAX_TEXT_FILE,
                    )
                    .ok()?;
                    feed(&bytes);
                } else {
                    feed(b"directory");
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return None,
    }
    Some(crate::model::Sha256(hasher.finalize().into()))
}

/// A site's own template if it has one, else the built-in one.
fn load_template(dir: &std::path::Path, name: &str) -> Result<Option<String>, minijinja::Error> {
    if crate::model::RelPath::parse(name).is_err() {
        return Ok(None);
    }
    let path = dir.join(name);
    if path.is_file() {
        return crate::fsutil::read_to_string(&path).map(Some).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        });
    }
    Ok(BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| (*text).to_owned()))
}

/// Names the template file (the site's own, or the built-in one) and line.
fn template_error(dir: &std::path::Path, err: &minijinja::Error) -> Error {
    let name = err.name().unwrap_or(PAGE);
    let own = dir.join(name);
    let path = if own.is_file() {
        own
    } else {
        PathBuf::from(format!("<built-in>/templates/{name}"))
    };
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    match err.line() {
        Some(line) => Error::AtLine {
            path,
            line,
            message,
        },
        None => Error::file(path, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(196_608), "192.0 KiB");
        assert_eq!(human_size(20 * 1024 * 1024 * 1024), "20.0 GiB");
    }
}
