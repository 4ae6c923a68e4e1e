//! The catalogs a site lists in its manifest (`[catalogs]`), held against
//! the verified RSS feeds: each must list the same images, at the same
//! URLs, with the same lengths and digests. A catalog that disagrees would
//! send its clients bytes the signed feed does not vouch for.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::PublishedSite;
use crate::catalog::{json_feed, simplestreams, virt_builder};
use crate::model::{Combined, Sha256, SupplyFile, SupplyKind, VagrantBox};

/// What the signed feed and its archives vouch for, arranged for holding
/// catalogs against it: by image URL, its length and SHA-256; by release
/// guid, its images' URLs; and the (image URL, mirror URL) pairs declared.
#[derive(Debug, Default)]
pub(super) struct Vouched {
    pub(super) images: BTreeMap<String, (u64, Sha256)>,
    /// By URL, the SHA-512 hex the feeds give (for virt-builder's images).
    pub(super) sha512: BTreeMap<String, String>,
    pub(super) releases: BTreeMap<String, Vec<String>>,
    pub(super) mirrors: BTreeSet<(String, String)>,
    /// By release guid, its Vagrant boxes.
    pub(super) boxes: BTreeMap<String, Vec<VagrantBox>>,
    /// By image URL, its Vagrant box.
    pub(super) image_boxes: BTreeMap<String, VagrantBox>,
    /// By release guid, its SBOMs and provenance.
    pub(super) supply: BTreeMap<String, Vec<SupplyFile>>,
    /// By image URL, LXD's fingerprint.
    pub(super) lxd: BTreeMap<String, Combined>,
}

impl Vouched {
    pub(super) fn of(site: &PublishedSite) -> Vouched {
        let mut vouched = Vouched::default();
        for item in site.items() {
            let guid = &item.guid;
            let urls = vouched.releases.entry(guid.clone()).or_default();
            for image in &item.release.images {
                let url = image.source.url.to_string();
                urls.push(url.clone());
                if let Some(b) = &image.vagrant_box {
                    vouched
                        .boxes
                        .entry(guid.clone())
                        .or_default()
                        .push(b.clone());
                    vouched.image_boxes.insert(url.clone(), b.clone());
                }
                let digest = &image.digest;
                vouched
                    .images
                    .insert(url.clone(), (digest.length, digest.sha256));
                if let Some(d) = &digest.sha512 {
                    vouched.sha512.insert(url.clone(), d.to_hex());
                }
                if let Some(lxd) = image.lxd {
                    vouched.lxd.insert(url, lxd);
                }
            }
            vouched.mirrors.extend(
                item.mirrors()
                    .map(|(image, mirror)| (image.to_owned(), mirror.to_owned())),
            );
            vouched
                .supply
                .entry(guid.clone())
                .or_default()
                .extend(item.release.supply.iter().cloned());
        }
        vouched
    }
}

/// Whether a manifest entry is a page of the JSON Feed.
pub(super) fn is_json_feed(name: &str) -> bool {
    name == json_feed::FEED || (name.starts_with("archive/") && name.ends_with(".json"))
}

/// The releases the feeds name Vagrant boxes for, by appliance: each of
/// these appliances must have its catalog, or `vagrant box add` finds none.
pub(super) fn boxed_releases(vouched: &Vouched) -> BTreeMap<&str, Vec<&str>> {
    let mut by_appliance: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for guid in vouched.boxes.keys() {
        if let Some((appliance, _)) = guid
            .strip_prefix("vmcast:")
            .and_then(|rest| rest.split_once(':'))
        {
            by_appliance.entry(appliance).or_default().push(guid);
        }
    }
    by_appliance
}

/// The appliance a manifest entry is the Vagrant catalog of.
pub(super) fn vagrant_appliance(name: &str) -> Option<&str> {
    name.strip_prefix("vagrant/")?
        .strip_suffix(".json")
        .filter(|a| !a.contains('/'))
}

#[derive(Deserialize)]
struct RawBoxCatalog {
    name: String,
    versions: Vec<RawBoxVersion>,
}

#[derive(Deserialize)]
struct RawBoxVersion {
    version: String,
    providers: Vec<RawProvider>,
}

#[derive(Deserialize)]
struct RawProvider {
    url: String,
    checksum_type: Option<String>,
    checksum: Option<String>,
}

/// Checks the Vagrant catalog of `appliance` against the feeds: every
/// box the feeds name for the appliance, at its URL under `base`, with the
/// feed's SHA-256, and nothing else. Returns how many versions it lists.
pub(super) fn check_vagrant(
    appliance: &str,
    data: &[u8],
    vouched: &Vouched,
    base: &url::Url,
) -> Result<usize, Vec<String>> {
    let catalog: RawBoxCatalog = serde_json::from_slice(data).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    if catalog.name != appliance {
        problems.push(format!(
            "names the box {:?}, not {appliance:?}",
            catalog.name
        ));
    }
    let prefix = format!("vmcast:{appliance}:");
    // (guid, box URL) → SHA-256 hex: what the catalog must list, no more.
    let mut expected: BTreeMap<(String, String), String> = vouched
        .boxes
        .iter()
        .filter(|(guid, _)| guid.starts_with(&prefix))
        .flat_map(|(guid, boxes)| {
            boxes.iter().map(move |b| {
                let url = crate::config::join_url(base, b.path.as_str()).to_string();
                ((guid.clone(), url), b.digest.sha256.to_hex())
            })
        })
        .collect();
    for version in &catalog.versions {
        let guid = format!("{prefix}{}", version.version);
        for provider in &version.providers {
            let Some(sha256) = expected.remove(&(guid.clone(), provider.url.clone())) else {
                problems.push(format!(
                    "version {}: {} is not a box the feed lists for {guid}",
                    version.version, provider.url
                ));
                continue;
            };
            let checked = provider.checksum_type.as_deref() == Some("sha256")
                && provider.checksum.as_deref() == Some(sha256.as_str());
            if !checked {
                problems.push(format!(
                    "version {}: {} has checksum {:?} {:?}; the feed says sha256 {sha256}",
                    version.version,
                    provider.url,
                    provider.checksum_type.as_deref().unwrap_or_default(),
                    provider.checksum.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    for (guid, url) in expected.into_keys() {
        problems.push(format!("{guid}: the feed's box {url} is missing"));
    }
    match problems.is_empty() {
        true => Ok(catalog.versions.len()),
        false => Err(problems),
    }
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
    #[serde(default)]
    sboms: Vec<RawSupply>,
    #[serde(default)]
    provenance: Vec<RawSupply>,
}

#[derive(Deserialize)]
struct RawImage {
    url: String,
    length: u64,
    sha256: String,
    #[serde(default)]
    mirrors: Vec<String>,
    vagrant_box: Option<RawBox>,
}

#[derive(Deserialize)]
struct RawBox {
    path: String,
    url: String,
    length: u64,
    sha256: String,
}

#[derive(Deserialize)]
struct RawSupply {
    name: String,
    url: String,
    path: String,
    format: String,
    mime_type: String,
    length: u64,
    sha256: String,
    image: Option<String>,
    signature: Option<String>,
    #[serde(default)]
    key_ids: Vec<String>,
}

/// Checks one JSON Feed page against the feeds: each item's images, their
/// Vagrant boxes (served from `base`) and its supply-chain files. Returns
/// how many releases it lists, or every disagreement found.
pub(super) fn check_json_feed(
    data: &[u8],
    vouched: &Vouched,
    base: &url::Url,
) -> Result<usize, Vec<String>> {
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
        let Some(urls) = vouched.releases.get(&item.id) else {
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
            match vouched.images.get(&image.url) {
                Some((length, sha256))
                    if *length == image.length && sha256.to_hex() == image.sha256 => {}
                Some((length, sha256)) => problems.push(format!(
                    "item {}: {} is {} bytes, SHA-256 {}; the feed says {length} bytes, {sha256}",
                    item.id, image.url, image.length, image.sha256
                )),
                None => {}
            }
            for mirror in &image.mirrors {
                if !vouched
                    .mirrors
                    .contains(&(image.url.clone(), mirror.clone()))
                {
                    problems.push(format!(
                        "item {}: {mirror} is not a mirror the feed declares for {}",
                        item.id, image.url
                    ));
                }
            }
            let signed = vouched.image_boxes.get(&image.url);
            problems.extend(check_box(&item.id, image, signed, base));
        }
        let signed = vouched.supply.get(&item.id).map_or(&[][..], Vec::as_slice);
        problems.extend(check_supply(&item.id, &item.facts, signed));
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

/// An image's `vagrant_box` against the box the feed names for it
/// (`signed`).
fn check_box(
    id: &str,
    image: &RawImage,
    signed: Option<&VagrantBox>,
    base: &url::Url,
) -> Vec<String> {
    let at = format!("item {id}: {}", image.url);
    let (given, signed) = match (&image.vagrant_box, signed) {
        (None, None) => return Vec::new(),
        (Some(b), None) => {
            return vec![format!(
                "{at} has the Vagrant box {}; the feed names none",
                b.url
            )];
        }
        (None, Some(b)) => {
            return vec![format!(
                "{at}: the feed's Vagrant box {} is missing",
                b.path
            )];
        }
        (Some(given), Some(signed)) => (given, signed),
    };
    let (path, length, sha256) = (&signed.path, signed.digest.length, signed.digest.sha256);
    let url = crate::config::join_url(base, path.as_str()).to_string();
    let mut problems = Vec::new();
    if given.path != path.as_str() || given.url != url {
        problems.push(format!(
            "{at} has the Vagrant box {} at {}; the feed says {path} at {url}",
            given.path, given.url
        ));
    }
    if given.length != length || given.sha256 != sha256.to_hex() {
        problems.push(format!(
            "{at}: Vagrant box {path} is {} bytes, SHA-256 {}; the feed says {length} bytes, \
             {sha256}",
            given.length, given.sha256
        ));
    }
    problems
}

/// An item's `sboms` and `provenance` against the `vmcast:sbom` and
/// `vmcast:provenance` of the same release (`signed`): the same files,
/// each with every fact the feed gives.
fn check_supply(id: &str, facts: &RawFacts, signed: &[SupplyFile]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected: BTreeMap<&str, &SupplyFile> =
        signed.iter().map(|f| (f.url.as_str(), f)).collect();
    let given = (facts.sboms.iter().map(|f| (SupplyKind::Sbom, f)))
        .chain(facts.provenance.iter().map(|f| (SupplyKind::Provenance, f)));
    for (kind, file) in given {
        let at = format!("item {id}: {} {}", kind.as_str(), file.url);
        let Some(feed) = expected.remove(file.url.as_str()) else {
            problems.push(format!("{at} is not a file the feed links"));
            continue;
        };
        let (length, sha256) = (feed.digest.length, feed.digest.sha256.to_hex());
        if file.length != length || file.sha256 != sha256 {
            problems.push(format!(
                "{at} is {} bytes, SHA-256 {}; the feed says {length} bytes, {sha256}",
                file.length, file.sha256
            ));
        }
        let signature = feed.signing.as_ref();
        let pairs = [
            (
                "kind",
                kind.as_str().to_owned(),
                feed.format.kind().as_str().to_owned(),
            ),
            ("name", file.name.clone(), feed.name.to_string()),
            ("path", file.path.clone(), feed.site_path.to_string()),
            (
                "format",
                file.format.clone(),
                feed.format.as_str().to_owned(),
            ),
            (
                "mime_type",
                file.mime_type.clone(),
                feed.format.media_type().to_owned(),
            ),
            (
                "image",
                describe(file.image.as_deref()),
                describe(feed.image.as_deref()),
            ),
            (
                "signature",
                describe(file.signature.as_deref()),
                describe(signature.map(|s| s.as_str())),
            ),
            (
                "key_ids",
                file.key_ids.join(" "),
                signature.map(|s| s.key_ids().join(" ")).unwrap_or_default(),
            ),
        ];
        for (field, given, feed) in pairs {
            if given != feed {
                problems.push(format!("{at}: {field} {given:?}; the feed says {feed:?}"));
            }
        }
    }
    for (url, feed) in expected {
        problems.push(format!(
            "item {id}: the feed's {} {url} is missing",
            feed.format.kind().as_str()
        ));
    }
    problems
}

/// An optional fact, as a message shows it.
fn describe(value: Option<&str>) -> String {
    value.unwrap_or("(none)").to_owned()
}

/// One section of a virt-builder index: its name and its fields, each
/// `key` or `key[subkey]` with its value (continuation lines joined).
type Section = (String, Vec<(String, String)>);

/// Reads a virt-builder index as virt-builder does: `[section]` lines,
/// `key=value` lines, lines starting with a blank continue the value
/// above, and `#` starts a comment.
fn parse_index(text: &str) -> Result<Vec<Section>, String> {
    let mut sections: Vec<Section> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = n + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix([' ', '\t']) {
            let (_, fields) = sections
                .last_mut()
                .ok_or(format!("line {at}: a continuation line before any section"))?;
            let (_, value) = fields
                .last_mut()
                .ok_or(format!("line {at}: a continuation line before any field"))?;
            value.push('\n');
            value.push_str(rest);
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_owned(), Vec::new()));
        } else if let Some((key, value)) = line.split_once('=') {
            let (_, fields) = sections
                .last_mut()
                .ok_or(format!("line {at}: a field before any section"))?;
            fields.push((key.to_owned(), value.to_owned()));
        } else {
            return Err(format!("line {at}: not a section, field or continuation"));
        }
    }
    Ok(sections)
}

/// Checks `virt-builder/index` against the feeds: every section's `file=`
/// (resolved against the index's URL, as virt-builder does) is an image a
/// signed feed lists, with its length as `compressed_size` and its SHA-512
/// as the feed gives it. Returns how many templates it lists.
pub(super) fn check_virt_builder(
    data: &[u8],
    base_url: &str,
    vouched: &Vouched,
) -> Result<usize, Vec<String>> {
    let text = std::str::from_utf8(data).map_err(|e| vec![format!("not UTF-8: {e}")])?;
    let sections = parse_index(text).map_err(|m| vec![m])?;
    let index = url::Url::parse(base_url)
        .map(|base| crate::config::join_url(&base, virt_builder::INDEX))
        .map_err(|e| vec![format!("the build's base URL {base_url:?}: {e}")])?;
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, fields) in &sections {
        let field = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let arch = field("arch").unwrap_or_default();
        if !seen.insert((name.as_str(), arch)) {
            problems.push(format!("[{name}] on {arch:?} appears twice"));
        }
        let Some(file) = field("file") else {
            problems.push(format!("[{name}] has no file="));
            continue;
        };
        let url = match index.join(file) {
            Ok(url) if !file.contains("://") && !file.starts_with('/') => url.to_string(),
            _ => {
                problems.push(format!("[{name}]: file={file} is not a relative path"));
                continue;
            }
        };
        let Some((length, _)) = vouched.images.get(&url) else {
            problems.push(format!(
                "[{name}]: file={file} is {url}, which no signed feed lists"
            ));
            continue;
        };
        if field("compressed_size") != Some(length.to_string().as_str()) {
            problems.push(format!(
                "[{name}]: compressed_size={}, the feed says {url} is {length} bytes",
                field("compressed_size").unwrap_or("(none)")
            ));
        }
        let sha512 = field("checksum[sha512]").or(field("checksum"));
        match (sha512, vouched.sha512.get(&url)) {
            (Some(given), Some(signed)) if given == signed => {}
            (Some(given), Some(signed)) => problems.push(format!(
                "[{name}]: SHA-512 {given}, the feed says {signed} for {url}"
            )),
            (_, None) => problems.push(format!(
                "[{name}]: the feed gives no SHA-512 for {url} to hold it against"
            )),
            (None, Some(_)) => problems.push(format!("[{name}] has no checksum[sha512]")),
        }
    }
    match problems.is_empty() {
        true => Ok(sections.len()),
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
    vouched: &Vouched,
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
                match (vouched.images.get(&url), manifest.get(&item.path)) {
                    (Some((length, sha256)), _) => {
                        if *length != item.size || sha256.to_hex() != item.sha256 {
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
                let feed = disk.as_ref().and_then(|d| vouched.lxd.get(d));
                match feed {
                    Some(lxd)
                        if lxd.prefix.to_hex() == item.sha256
                            && lxd.sha256.to_hex() == *combined => {}
                    Some(lxd) => problems.push(format!(
                        "{at} {name}: LXD fingerprint {combined} of metadata {}; the feed says \
                         {} of metadata {}",
                        item.sha256, lxd.sha256, lxd.prefix
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

/// A published text against the one the build makes from the signed
/// feeds (`[catalogs] systemd`): equal byte for byte, else each line it
/// lacks and each line too many.
pub(super) fn same_text(published: &[u8], expected: &str) -> Result<(), Vec<String>> {
    if published == expected.as_bytes() {
        return Ok(());
    }
    let published = String::from_utf8_lossy(published);
    let (have, want): (BTreeSet<&str>, BTreeSet<&str>) =
        (published.lines().collect(), expected.lines().collect());
    let mut problems: Vec<String> = want
        .difference(&have)
        .map(|l| format!("lacks `{l}`, which the feeds give"))
        .chain(
            have.difference(&want)
                .map(|l| format!("has `{l}`, which the feeds do not give")),
        )
        .collect();
    if problems.is_empty() {
        problems.push("holds the lines the feeds give, but not as the build writes them".into());
    }
    Err(problems)
}

/// Whether a manifest entry is a sysupdate transfer file.
pub(super) fn is_transfer(name: &str) -> bool {
    name.strip_prefix(crate::media::SYSUPDATE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|file| file.ends_with(".transfer") && !file.contains('/'))
}
