//! JSON Feed 1.1 (`feed.json`): the releases of `feed.xml`, for readers
//! that take JSON. The spec has no checksum field, so the facts a consumer
//! checks (SHA-256, length, format, virtual size; each image's Vagrant box;
//! the release's SBOMs and provenance) go in a `_vmcast` extension object,
//! as the spec allows; readers that do not know it ignore it. Older
//! releases page through `next_url` into archive pages that, like the RSS
//! archives, never change once written. Every page is signed with minisign
//! like the feeds.

use serde::Serialize;

use super::CatalogFile;
use crate::error::{Error, Result};
use crate::model::{Image, Release, VagrantBox};
use crate::render::Site;
use crate::render::archive::Partition;
use crate::render::feed::mirror_urls;
use crate::supply::Kind;

pub use crate::media::JSON_FEED_FILE as FEED;
pub const VERSION: &str = "https://jsonfeed.org/version/1.1";
/// Where the `_vmcast` extension is described.
pub const ABOUT: &str =
    "https://github.com/vmcast-gen/vmcast-gen/blob/main/docs/feed-format.md#json-feed";

/// The path of JSON archive page `n`, beside the RSS archive of the same
/// releases.
pub fn archive_path(n: usize) -> String {
    format!("archive/{n}.json")
}

#[derive(Serialize)]
struct Feed<'a> {
    version: &'static str,
    title: String,
    home_page_url: &'a str,
    feed_url: String,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_url: Option<String>,
    _vmcast: FeedFacts,
    items: Vec<Item<'a>>,
}

/// The feed's own facts. An archive page carries none that change from
/// build to build, so its bytes stay the same.
#[derive(Serialize)]
struct FeedFacts {
    about: &'static str,
    /// The RSS document of the same releases.
    rss: String,
    manifest: String,
    signature: String,
    public_key: String,
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    archive: bool,
}

#[derive(Serialize)]
struct Item<'a> {
    id: String,
    url: String,
    title: &'a str,
    content_html: &'a str,
    date_published: String,
    tags: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
    _vmcast: ItemFacts<'a>,
}

/// An attachment. Those with the same `title` are the same file from
/// different places (the spec's alternates): an image and its mirrors.
#[derive(Serialize)]
struct Attachment<'a> {
    url: String,
    mime_type: &'static str,
    title: &'a str,
    size_in_bytes: u64,
}

#[derive(Serialize)]
struct ItemFacts<'a> {
    appliance: &'a str,
    version: &'a str,
    channel: &'a str,
    critical: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    requirements: Option<Requirements<'a>>,
    images: Vec<ImageFacts<'a>>,
    /// `vmcast:sbom`, in the feed's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sboms: Vec<SupplyFacts<'a>>,
    /// `vmcast:provenance`, in the feed's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    provenance: Vec<SupplyFacts<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cloud_images: Vec<CloudFacts<'a>>,
}

#[derive(Serialize)]
struct Requirements<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_memory_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_disk_gib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_cpus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    firmware: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hypervisors: Vec<&'a str>,
}

#[derive(Serialize)]
struct ImageFacts<'a> {
    name: &'a str,
    url: &'a str,
    path: &'a str,
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<&'a str>,
    primary: bool,
    length: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_size: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mirrors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vagrant_box: Option<BoxFacts<'a>>,
}

/// The Vagrant box made of an image (`vagrantBox*` in the feed).
#[derive(Serialize)]
struct BoxFacts<'a> {
    path: &'a str,
    url: String,
    length: u64,
    sha256: String,
}

/// An SBOM or provenance file, with what `vmcast:sbom` and
/// `vmcast:provenance` say of it.
#[derive(Serialize)]
struct SupplyFacts<'a> {
    name: &'a str,
    url: &'a str,
    path: &'a str,
    format: &'static str,
    mime_type: &'static str,
    length: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    /// Provenance only: `none`, `unverified` or `verified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'static str>,
    /// With `verified`: the builder keys that verified.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    key_ids: &'a [String],
}

#[derive(Serialize)]
struct CloudFacts<'a> {
    provider: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    id: &'a str,
}

/// `feed.json` of the current releases, and one archive page for each RSS
/// archive.
pub fn render(site: &Site, partition: &Partition) -> Result<Vec<CatalogFile>> {
    let releases = |indexes: &[usize]| -> Vec<&Release> {
        indexes.iter().map(|&i| &site.releases[i]).collect()
    };
    let newest_archive = partition.archives.len();
    let mut files = vec![page(
        site,
        FEED,
        &releases(&partition.current),
        (newest_archive > 0).then(|| archive_path(newest_archive)),
        false,
    )?];
    for (i, indexes) in partition.archives.iter().enumerate() {
        let n = i + 1;
        files.push(page(
            site,
            &archive_path(n),
            &releases(indexes),
            (n > 1).then(|| archive_path(n - 1)),
            true,
        )?);
    }
    Ok(files)
}

fn page(
    site: &Site,
    path: &str,
    releases: &[&Release],
    next: Option<String>,
    archive: bool,
) -> Result<CatalogFile> {
    let config = site.config;
    let rss = match archive {
        true => path.replace(".json", ".xml"),
        false => crate::media::FEED.to_owned(),
    };
    let feed = Feed {
        version: VERSION,
        title: config.title.clone(),
        home_page_url: config.base_url.as_str(),
        feed_url: config.site_url(FEED).to_string(),
        description: &config.description,
        language: config.language.as_deref(),
        next_url: next.map(|n| config.site_url(&n).to_string()),
        _vmcast: FeedFacts {
            about: ABOUT,
            rss: config.site_url(&rss).to_string(),
            manifest: config.site_url(crate::media::MANIFEST).to_string(),
            signature: config.site_url(&format!("{path}.minisig")).to_string(),
            public_key: config.site_url(crate::media::PUBLIC_KEY).to_string(),
            key_id: site.public_key.key_id.to_string(),
            sequence: (!archive).then_some(site.sequence),
            expires: site
                .expires
                .filter(|_| !archive)
                .map(|e| e.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            archive,
        },
        items: releases.iter().map(|r| item(site, r, archive)).collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&feed)
        .map_err(|e| Error::other(format_args!("cannot write {path}: {e}")))?;
    bytes.push(b'\n');
    Ok(CatalogFile {
        path: path.to_owned(),
        bytes,
        signed: true,
    })
}

fn item<'a>(site: &Site, release: &'a Release, archived: bool) -> Item<'a> {
    let info = &release.info;
    let url = match archived {
        true => crate::render::history_link(site.config, info),
        false => crate::render::release_link(site.config, info),
    };
    let mirrors: Vec<(&Image, Vec<url::Url>)> = release
        .images
        .iter()
        .map(|i| (i, mirror_urls(site, &info.appliance, i)))
        .collect();
    let attachments = mirrors
        .iter()
        .flat_map(|(image, mirrors)| {
            std::iter::once(image.source.url.to_string())
                .chain(mirrors.iter().map(|m| m.to_string()))
                .map(|url| Attachment {
                    url,
                    mime_type: image.source.media_type(),
                    title: image.source.name.as_str(),
                    size_in_bytes: image.digest.length,
                })
        })
        .collect();
    let r = &info.requirements;
    Item {
        id: info.guid(),
        url: url.to_string(),
        title: &info.title,
        content_html: &info.notes_html,
        date_published: info.date.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        tags: vec![info.appliance.as_str(), info.channel.as_str()],
        attachments,
        _vmcast: ItemFacts {
            appliance: info.appliance.as_str(),
            version: info.version.as_str(),
            channel: info.channel.as_str(),
            critical: info.critical,
            requirements: (!r.is_empty()).then(|| Requirements {
                arch: r.arch.as_deref(),
                min_memory_mib: r.min_memory_mib,
                min_disk_gib: r.min_disk_gib,
                min_cpus: r.min_cpus,
                firmware: r.firmware.map(|f| f.as_str()),
                hypervisors: r.hypervisors.iter().map(String::as_str).collect(),
            }),
            images: mirrors
                .iter()
                .map(|(image, mirrors)| image_facts(site, image, mirrors))
                .collect(),
            sboms: supply_facts(release, Kind::Sbom),
            provenance: supply_facts(release, Kind::Provenance),
            cloud_images: info
                .cloud_images
                .iter()
                .map(|c| CloudFacts {
                    provider: c.provider.as_str(),
                    region: c.region.as_deref(),
                    id: &c.id,
                })
                .collect(),
        },
    }
}

fn image_facts<'a>(site: &Site, image: &'a Image, mirrors: &[url::Url]) -> ImageFacts<'a> {
    let s = &image.source;
    ImageFacts {
        name: s.name.as_str(),
        url: s.url.as_str(),
        path: s.site_path.as_str(),
        format: s.format.as_str(),
        compression: s.compression.map(|c| c.as_str()),
        arch: s.arch.as_deref(),
        primary: s.primary,
        length: image.digest.length,
        sha256: image.digest.sha256.to_hex(),
        virtual_size: image.info.virtual_size,
        mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
        vagrant_box: image.vagrant_box.as_ref().map(|b| box_facts(site, b)),
    }
}

/// A box is served from the site, whatever `image_mode` says.
fn box_facts<'a>(site: &Site, b: &'a VagrantBox) -> BoxFacts<'a> {
    BoxFacts {
        path: b.path.as_str(),
        url: site.config.site_url(b.path.as_str()).to_string(),
        length: b.digest.length,
        sha256: b.digest.sha256.to_hex(),
    }
}

fn supply_facts(release: &Release, kind: Kind) -> Vec<SupplyFacts<'_>> {
    release
        .supply
        .iter()
        .filter(|f| f.format.kind() == kind)
        .map(|f| SupplyFacts {
            name: &f.name,
            url: f.url.as_str(),
            path: f.site_path.as_str(),
            format: f.format.as_str(),
            mime_type: f.format.media_type(),
            length: f.digest.length,
            sha256: f.digest.sha256.to_hex(),
            image: f.image.as_deref(),
            signature: f.signing.as_ref().map(|s| s.as_str()),
            key_ids: f.signing.as_ref().map_or(&[], |s| s.key_ids()),
        })
        .collect()
}
