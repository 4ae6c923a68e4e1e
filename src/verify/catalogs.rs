//! The catalogs a site lists in its manifest (`[catalogs]`), held against
//! the verified RSS feeds: each must list the same images, at the same
//! URLs, with the same lengths and digests. A catalog that disagrees would
//! send its clients bytes the signed feed does not vouch for.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::feed::FeedDoc;
use crate::catalog::{json_feed, simplestreams};
use crate::model::Sha256;

/// What the signed feeds and their archives say of every image: by URL,
/// (length, SHA-256 hex); by release guid, its images' URLs; and the
/// (image URL, mirror URL) pairs they declare.
#[derive(Debug, Default)]
pub(super) struct Published {
    pub(super) images: BTreeMap<String, (u64, String)>,
    pub(super) releases: BTreeMap<String, Vec<String>>,
    pub(super) mirrors: BTreeSet<(String, String)>,
    /// By image URL, LXD's (metadata SHA-256, fingerprint).
    pub(super) lxd: BTreeMap<String, (String, String)>,
}

impl Published {
    pub(super) fn add(&mut self, doc: &FeedDoc) {
        for item in &doc.items {
            let urls = self.releases.entry(item.guid.clone()).or_default();
            for image in &item.images {
                urls.push(image.url.clone());
                self.images
                    .insert(image.url.clone(), (image.length, image.sha256.clone()));
                if let Some(lxd) = &image.lxd {
                    self.lxd.insert(image.url.clone(), lxd.clone());
                }
            }
            self.mirrors.extend(item.mirrors.iter().cloned());
        }
    }
}

/// Whether a manifest entry is a page of the JSON Feed.
pub(super) fn is_json_feed(name: &str) -> bool {
    name == json_feed::FEED || (name.starts_with("archive/") && name.ends_with(".json"))
}

#[derive(Deserialize)]
struct RawFeed {
    version: String,
    items: Vec<RawItem>,
}

#[derive(Deserialize)]
struct RawItem {
    id: String,
    #[serde(default)]
    attachments: Vec<RawAttachment>,
    #[serde(rename = "_vmcast")]
    facts: RawFacts,
}

#[derive(Deserialize)]
struct RawAttachment {
    url: String,
    size_in_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct RawFacts {
    images: Vec<RawImage>,
}

#[derive(Deserialize)]
struct RawImage {
    url: String,
    length: u64,
    sha256: String,
    #[serde(default)]
    mirrors: Vec<String>,
}

/// Checks one JSON Feed page against the feeds. Returns how many releases
/// it lists, or every disagreement found.
pub(super) fn check_json_feed(data: &[u8], published: &Published) -> Result<usize, Vec<String>> {
    let feed: RawFeed = serde_json::from_slice(data).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    if feed.version != json_feed::VERSION {
        problems.push(format!(
            "version is {:?}, not {:?}",
            feed.version,
            json_feed::VERSION
        ));
    }
    for item in &feed.items {
        let Some(urls) = published.releases.get(&item.id) else {
            problems.push(format!("item {} is in no signed feed", item.id));
            continue;
        };
        let listed: Vec<&str> = item.facts.images.iter().map(|i| i.url.as_str()).collect();
        if listed != urls.iter().map(String::as_str).collect::<Vec<_>>() {
            problems.push(format!(
                "item {}: images {listed:?}, the feed has {urls:?}",
                item.id
            ));
        }
        for image in &item.facts.images {
            match published.images.get(&image.url) {
                Some((length, sha256)) if *length == image.length && *sha256 == image.sha256 => {}
                Some((length, sha256)) => problems.push(format!(
                    "item {}: {} is {} bytes, SHA-256 {}; the feed says {length} bytes, {sha256}",
                    item.id, image.url, image.length, image.sha256
                )),
                None => {}
            }
            for mirror in &image.mirrors {
                if !published
                    .mirrors
                    .contains(&(image.url.clone(), mirror.clone()))
                {
                    problems.push(format!(
                        "item {}: {mirror} is not a mirror the feed declares for {}",
                        item.id, image.url
                    ));
                }
            }
        }
        for attachment in &item.attachments {
            let image = item
                .facts
                .images
                .iter()
                .find(|i| i.url == attachment.url || i.mirrors.contains(&attachment.url));
            match image {
                Some(i) if attachment.size_in_bytes.is_none_or(|s| s == i.length) => {}
                Some(i) => problems.push(format!(
                    "item {}: attachment {} says {} bytes, the image is {}",
                    item.id,
                    attachment.url,
                    attachment.size_in_bytes.unwrap_or_default(),
                    i.length
                )),
                None => problems.push(format!(
                    "item {}: attachment {} is not one of its images or their mirrors",
                    item.id, attachment.url
                )),
            }
        }
    }
    match problems.is_empty() {
        true => Ok(feed.items.len()),
        false => Err(problems),
    }
}

#[derive(Deserialize)]
struct RawIndex {
    format: String,
    index: BTreeMap<String, RawIndexEntry>,
}

#[derive(Deserialize)]
struct RawIndexEntry {
    path: String,
}

/// The products files `streams/v1/index.json` names, or what is wrong
/// with it.
pub(super) fn simplestreams_products(data: &[u8]) -> Result<Vec<String>, String> {
    let index: RawIndex = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    if index.format != "index:1.0" {
        return Err(format!("format is {:?}, not \"index:1.0\"", index.format));
    }
    Ok(index.index.into_values().map(|e| e.path).collect())
}

#[derive(Deserialize)]
struct RawProducts {
    products: BTreeMap<String, RawProduct>,
}

#[derive(Deserialize)]
struct RawProduct {
    versions: BTreeMap<String, RawVersion>,
}

#[derive(Deserialize)]
struct RawVersion {
    items: BTreeMap<String, RawItemFile>,
}

#[derive(Deserialize)]
struct RawItemFile {
    path: String,
    size: u64,
    sha256: String,
    #[serde(rename = "combined_disk1-img_sha256")]
    combined: Option<String>,
}

/// Checks a simplestreams products file against the feeds and the
/// manifest: each item is a feed image (same length and SHA-256) or a
/// file of the manifest (same SHA-256), and each LXD metadata item names
/// the fingerprint the feed gives its version's disk. Returns how many
/// items it lists, or every disagreement found.
pub(super) fn check_simplestreams(
    data: &[u8],
    base: &url::Url,
    manifest: &BTreeMap<String, Sha256>,
    published: &Published,
) -> Result<usize, Vec<String>> {
    let products: RawProducts = serde_json::from_slice(data).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut items = 0;
    for (product, p) in &products.products {
        for (serial, v) in &p.versions {
            let at = format!("{product} {serial}");
            let disk = v
                .items
                .get(simplestreams::DISK_ITEM)
                .map(|d| base.as_str().to_owned() + &d.path);
            for (name, item) in &v.items {
                items += 1;
                let url = base.as_str().to_owned() + &item.path;
                match (published.images.get(&url), manifest.get(&item.path)) {
                    (Some((length, sha256)), _) => {
                        if *length != item.size || *sha256 != item.sha256 {
                            problems.push(format!(
                                "{at} {name}: {} is {} bytes, SHA-256 {}; the feed says \
                                 {length} bytes, {sha256}",
                                item.path, item.size, item.sha256
                            ));
                        }
                    }
                    (None, Some(digest)) => {
                        if digest.to_hex() != item.sha256 {
                            problems.push(format!(
                                "{at} {name}: {} has SHA-256 {}; the manifest says {digest}",
                                item.path, item.sha256
                            ));
                        }
                    }
                    (None, None) => problems.push(format!(
                        "{at} {name}: {} is neither an image of the feed nor a file of the \
                         manifest",
                        item.path
                    )),
                }
                let Some(combined) = &item.combined else {
                    continue;
                };
                let feed = disk.as_ref().and_then(|d| published.lxd.get(d));
                match feed {
                    Some((metadata, fingerprint))
                        if *metadata == item.sha256 && fingerprint == combined => {}
                    Some((metadata, fingerprint)) => problems.push(format!(
                        "{at} {name}: LXD fingerprint {combined} of metadata {}; the feed says \
                         {fingerprint} of metadata {metadata}",
                        item.sha256
                    )),
                    None => problems.push(format!(
                        "{at} {name}: the feed gives no LXD fingerprint for its {}",
                        simplestreams::DISK_ITEM
                    )),
                }
            }
        }
    }
    match problems.is_empty() {
        true => Ok(items),
        false => Err(problems),
    }
}
