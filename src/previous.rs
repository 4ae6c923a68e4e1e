//! `build --previous SOURCE`: the published site is the state.
//!
//! A release job on a throwaway runner holds only the new release's images;
//! the history lives where the site is published. This module reads that
//! site (a directory, an http(s) URL, or `s3://bucket/prefix`), verifies it
//! exactly as `verify` does against the build's own key (or the key it is
//! rotating from), and hands back every published release with its images'
//! facts: length, SHA-256, format, compression, virtual size, machine, URL.
//! Nothing of an image is read, downloaded, copied or uploaded.
//!
//! Only a site that verifies is built on, so `--previous` can never carry
//! content into a signed feed that the key did not sign before. An expired
//! site is still authentic: it is accepted with a warning, since a new
//! release is how a lapsed site gets fresh signatures.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_xml::XmlVersion;
use quick_xml::events::Event;
use url::Url;

use crate::error::{Error, Result};
use crate::model::{
    Arch, Combined, Compression, FileDigest, FileId, FileName, Image, ImageFormat, ImageInfo,
    ImageSource, Machine, OvaDisk, RelPath, Sha256, Sha512, VagrantBox,
};
use crate::sign::PublicKey;
use crate::site::{self, CheckKind, VerifyOptions, attributes};
use crate::supply::{self, SupplyFile};
use crate::warning::Warning;

/// How to reach and trust the previous site.
pub struct PreviousOptions<'a> {
    pub source: &'a str,
    /// The key this build signs with.
    pub key: &'a PublicKey,
    /// Keys trusted as much (the key rotated from).
    pub also_trusted: Vec<PublicKey>,
    /// An S3-compatible endpoint for `s3://` (else AWS_ENDPOINT_URL), as
    /// for `publish`.
    pub endpoint: Option<&'a str>,
    pub timeout: Duration,
    pub now: DateTime<Utc>,
}

/// One published release: its appliance, version and images.
#[derive(Debug, Clone)]
pub struct PublishedRelease {
    pub appliance: String,
    pub version: String,
    pub channel: String,
    pub critical: bool,
    pub images: Vec<Image>,
    /// Its SBOMs and provenance, as the feed describes them.
    pub supply: Vec<SupplyFile>,
    /// Every location each image is served from, primary first
    /// (`podcast:source` of its `podcast:alternateEnclosure`).
    pub sources: BTreeMap<RelPath, Vec<Url>>,
}

/// A published site that verified.
#[derive(Debug)]
pub struct Previous {
    pub source: String,
    pub sequence: u64,
    pub releases: Vec<PublishedRelease>,
    pub warnings: Vec<Warning>,
    /// Where each (appliance, version) is in `releases`: a build over a
    /// thousand published releases looks each of them up.
    index: BTreeMap<(String, String), usize>,
}

impl Previous {
    /// The published release of `appliance` at `version`.
    pub fn release(&self, appliance: &str, version: &str) -> Option<&PublishedRelease> {
        self.index
            .get(&(appliance.to_owned(), version.to_owned()))
            .map(|&i| &self.releases[i])
    }
}

/// Reads and verifies the previous site.
pub fn load(options: &PreviousOptions) -> Result<Previous> {
    #[cfg(feature = "publish")]
    let fetched;
    let local = if options.source.starts_with("s3://") {
        #[cfg(feature = "publish")]
        {
            fetched = s3::download(options.source, options.endpoint)?;
            fetched.path().to_string_lossy().into_owned()
        }
        #[cfg(not(feature = "publish"))]
        return Err(Error::other(format_args!(
            "--previous {}: s3:// needs vmcast-gen built with the `publish` feature",
            options.source
        )));
    } else {
        options.source.to_owned()
    };
    let report = site::verify(&VerifyOptions {
        source: local,
        pinned: options.key.clone(),
        also_trusted: options.also_trusted.clone(),
        state: None,
        images: false,
        all: false,
        // The facts of its SBOMs and provenance come from the signed feed;
        // their bytes, beside the images, are not read.
        mirrors: false,
        supply: false,
        mirror_sample: Vec::new(),
        site: None,
        timeout: options.timeout,
        min_rate: 0,
        now: options.now,
    })?;
    let mut warnings = Vec::new();
    let mut refusals = Vec::new();
    for failure in report.failures() {
        match failure.check {
            CheckKind::Expiry => warnings.push(Warning {
                path: None,
                message: format!(
                    "--previous {}: {}; building on it anyway, since it is authentic and this \
                     build signs it afresh",
                    options.source, failure.detail
                ),
            }),
            _ => refusals.push(failure.detail.clone()),
        }
    }
    if !refusals.is_empty() {
        return Err(Error::other(format_args!(
            "--previous {}: the previous site does not verify against key {}{}, so nothing is \
             built on it:\n  {}",
            options.source,
            options.key.key_id,
            match options.also_trusted.as_slice() {
                [] => String::new(),
                keys => format!(
                    " (or {})",
                    keys.iter()
                        .map(|k| k.key_id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            refusals.join("\n  ")
        )));
    }
    let (Some(feed), Some(sequence)) = (report.feed, report.sequence) else {
        return Err(Error::other(format_args!(
            "--previous {}: verified, but without a feed",
            options.source
        )));
    };
    let mut releases = read_feed(&feed)
        .map_err(|m| Error::other(format_args!("--previous {}: feed.xml: {m}", options.source)))?;
    // Archived releases are published too: their facts come from the
    // archives, which verified with the feed. A hundred of them on a site
    // of a thousand releases: read on every core, kept in order.
    let archived = crate::par::map(crate::par::default_threads(), &report.archives, |a| {
        read_feed(a)
    });
    for archive in archived {
        releases.extend(archive.map_err(|m| {
            Error::other(format_args!(
                "--previous {}: an archive: {m}",
                options.source
            ))
        })?);
    }
    // The first of a version listed twice, as a search in order finds.
    let mut index = BTreeMap::new();
    for (i, r) in releases.iter().enumerate() {
        index
            .entry((r.appliance.clone(), r.version.clone()))
            .or_insert(i);
    }
    Ok(Previous {
        source: options.source.to_owned(),
        sequence,
        releases,
        warnings,
        index,
    })
}

/// The releases of a verified feed, with every image fact the feed gives.
pub(crate) fn read_feed(data: &[u8]) -> std::result::Result<Vec<PublishedRelease>, String> {
    let mut reader = quick_xml::Reader::from_reader(data);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut releases: Vec<PublishedRelease> = Vec::new();
    // The sources of the alternate enclosure being read.
    let mut alternate: Option<Vec<Url>> = None;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = e.name().as_ref().to_owned();
                let parent = path.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("channel"), "item") => releases.push(PublishedRelease {
                        appliance: String::new(),
                        version: String::new(),
                        channel: String::new(),
                        critical: false,
                        images: Vec::new(),
                        supply: Vec::new(),
                        sources: BTreeMap::new(),
                    }),
                    (Some("item"), "podcast:alternateEnclosure") => alternate = Some(Vec::new()),
                    (Some("podcast:alternateEnclosure"), "podcast:source") => {
                        if let (Some(list), Some(uri)) =
                            (alternate.as_mut(), attributes(e)?.get("uri"))
                        {
                            list.push(Url::parse(uri).map_err(|e| format!("podcast:source: {e}"))?);
                        }
                    }
                    (Some("item"), "vmcast:image") => {
                        let release = releases.last_mut().ok_or("an image outside an item")?;
                        release.images.push(image(&attributes(e)?)?);
                    }
                    (Some("item"), element @ ("vmcast:sbom" | "vmcast:provenance")) => {
                        let release = releases.last_mut().ok_or("a file outside an item")?;
                        release.supply.push(supply_file(element, &attributes(e)?)?);
                    }
                    (Some("vmcast:image"), "vmcast:machine") => {
                        let a = attributes(e)?;
                        let info = last_info(&mut releases)?;
                        info.machine = Some(Machine {
                            name: a.get("name").cloned(),
                            os: a.get("os").cloned(),
                            cpus: optional_number(&a, "cpus")?,
                            memory_mib: optional_number(&a, "memoryMiB")?,
                            disks: Vec::new(),
                        });
                    }
                    (Some("vmcast:machine"), "vmcast:disk") => {
                        let a = attributes(e)?;
                        let disk = OvaDisk {
                            file: a.get("file").cloned(),
                            capacity: number(&a, "capacity")?,
                        };
                        if let Some(m) = last_info(&mut releases)?.machine.as_mut() {
                            m.disks.push(disk);
                        }
                    }
                    _ => {}
                }
                if matches!(event, Event::Start(_)) {
                    path.push(name);
                    text.clear();
                } else if name == "podcast:alternateEnclosure" {
                    close_alternate(&mut releases, alternate.take());
                }
            }
            Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                if name == "podcast:alternateEnclosure" {
                    close_alternate(&mut releases, alternate.take());
                }
                let value = std::mem::take(&mut text);
                if path.last().map(String::as_str) == Some("item")
                    && let Some(release) = releases.last_mut()
                {
                    match name.as_str() {
                        "vmcast:appliance" => release.appliance = value.trim().to_owned(),
                        "vmcast:version" => release.version = value.trim().to_owned(),
                        "vmcast:channel" => release.channel = value.trim().to_owned(),
                        "vmcast:critical" => release.critical = value.trim() == "true",
                        _ => {}
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    // An item without images is a release of cloud images only, which
    // its release.toml names again.
    if let Some(r) = releases
        .iter()
        .find(|r| r.appliance.is_empty() || r.version.is_empty())
    {
        return Err(format!(
            "an item without vmcast:appliance or vmcast:version ({:?} {:?})",
            r.appliance, r.version
        ));
    }
    Ok(releases)
}

/// Files an alternate enclosure's sources under the image its first
/// source is the URL of.
fn close_alternate(releases: &mut [PublishedRelease], sources: Option<Vec<Url>>) {
    let (Some(release), Some(sources)) = (releases.last_mut(), sources) else {
        return;
    };
    let Some(first) = sources.first() else { return };
    if let Some(image) = release.images.iter().find(|i| &i.source.url == first) {
        release
            .sources
            .insert(image.source.site_path.clone(), sources);
    }
}

fn last_info(releases: &mut [PublishedRelease]) -> std::result::Result<&mut ImageInfo, String> {
    releases
        .last_mut()
        .and_then(|r| r.images.last_mut())
        .map(|i| &mut i.info)
        .ok_or_else(|| "a machine outside an image".to_owned())
}

fn number(a: &BTreeMap<String, String>, key: &str) -> std::result::Result<u64, String> {
    optional_number(a, key)?.ok_or_else(|| format!("missing `{key}`"))
}

fn optional_number(
    a: &BTreeMap<String, String>,
    key: &str,
) -> std::result::Result<Option<u64>, String> {
    a.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("`{key}` is not a number: {v:?}"))
        })
        .transpose()
}

/// A published image from its `vmcast:image` attributes.
fn image(a: &BTreeMap<String, String>) -> std::result::Result<Image, String> {
    let get = |key: &str| {
        a.get(key)
            .ok_or_else(|| format!("an image without `{key}`"))
    };
    let url = Url::parse(get("url")?).map_err(|e| format!("image url: {e}"))?;
    let site_path = RelPath::parse(get("path")?)?;
    let format = ImageFormat::parse(get("format")?)?;
    let compression = match a.get("compression") {
        Some(c) => Some(Compression::parse(c)?),
        None => None,
    };
    let sha256 = Sha256::from_hex(get("sha256")?).ok_or("an image sha256 that is not hex")?;
    let sha512 = match a.get("sha512") {
        Some(hex) => Some(Sha512::from_hex(hex).ok_or("an image sha512 that is not hex")?),
        None => None,
    };
    let length = number(a, "length")?;
    let virtual_size = optional_number(a, "virtualSize")?;
    let name = get("name")?.clone();
    let vagrant_box = match a.get("vagrantBox") {
        Some(path) => Some(VagrantBox {
            path: RelPath::parse(path)?,
            digest: FileDigest {
                length: number(a, "vagrantBoxLength")?,
                sha256: Sha256::from_hex(get("vagrantBoxSha256")?)
                    .ok_or("a vagrantBoxSha256 that is not hex")?,
                sha512: None,
            },
        }),
        None => None,
    };
    let lxd = match (a.get("lxdMetadata"), a.get("lxdFingerprint")) {
        (Some(prefix), Some(sha256)) => Some(Combined {
            prefix: Sha256::from_hex(prefix).ok_or("an image lxdMetadata that is not hex")?,
            sha256: Sha256::from_hex(sha256).ok_or("an image lxdFingerprint that is not hex")?,
        }),
        _ => None,
    };
    Ok(Image {
        vagrant_box,
        source: ImageSource {
            // Published, not local: messages name the URL.
            source: url.as_str().into(),
            real: url.as_str().into(),
            name: FileName::parse(&name).map_err(|m| format!("vmcast:image name: {m}"))?,
            format,
            compression,
            arch: a
                .get("arch")
                .map(|s| Arch::parse(s))
                .transpose()
                .map_err(|m| format!("vmcast:image arch: {m}"))?,
            primary: a.get("primary").map(String::as_str) == Some("true"),
            site_path,
            url,
            size_hint: length,
            file_id: FileId { dev: 0, ino: 0 },
        },
        digest: FileDigest {
            length,
            sha256,
            sha512,
        },
        lxd,
        info: ImageInfo {
            format,
            // The content showed its format when it was first published,
            // unless it is raw or a format hidden inside a compressed stream.
            detected: format != ImageFormat::Raw
                && !(compression.is_some() && virtual_size.is_none()),
            compression,
            virtual_size,
            subformat: a.get("subformat").cloned(),
            cluster_size: optional_number(a, "clusterSize")?,
            cluster_compression: a.get("clusterCompression").cloned(),
            machine: None,
        },
    })
}

/// A published SBOM or provenance file from its element's attributes.
fn supply_file(
    element: &str,
    a: &BTreeMap<String, String>,
) -> std::result::Result<SupplyFile, String> {
    let get = |key: &str| {
        a.get(key)
            .ok_or_else(|| format!("{element} without `{key}`"))
    };
    let format = supply::Format::parse(get("format")?)?;
    if format.kind().element() != element {
        return Err(format!("{element} of format {}", format.as_str()));
    }
    let signing = match format.kind() {
        supply::Kind::Sbom => None,
        supply::Kind::Provenance => Some(supply::Signing::parse(
            get("signature")?,
            a.get("keyId").map(String::as_str),
        )?),
    };
    Ok(SupplyFile {
        format,
        name: FileName::parse(get("name")?).map_err(|m| format!("{element} name: {m}"))?,
        image: a
            .get("image")
            .map(|n| FileName::parse(n).map_err(|m| format!("{element} image: {m}")))
            .transpose()?,
        site_path: RelPath::parse(get("path")?)?,
        url: Url::parse(get("url")?).map_err(|e| format!("{element} url: {e}"))?,
        digest: FileDigest {
            length: number(a, "length")?,
            sha256: Sha256::from_hex(get("sha256")?)
                .ok_or_else(|| format!("{element} sha256 that is not hex"))?,
            sha512: None,
        },
        signing,
    })
}

/// `s3://bucket/prefix`: the site's small files (everything but images),
/// downloaded to a scratch directory that `verify` then reads.
#[cfg(feature = "publish")]
mod s3 {
    use futures::StreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};

    use crate::error::{Error, Result};
    use crate::fsutil;
    use crate::model::{MAX_TEXT_FILE, RelPath};

    pub fn download(source: &str, endpoint: Option<&str>) -> Result<tempfile::TempDir> {
        let (bucket, prefix) = crate::publish::parse_target(source)?;
        let store = crate::publish::store(&bucket, endpoint, None)?;
        let dir = tempfile::Builder::new()
            .prefix("vmcast-previous-")
            .tempdir()
            .map_err(|e| Error::failed("cannot create a scratch directory", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::failed("cannot start the I/O runtime", e))?;
        runtime.block_on(async {
            let base = crate::publish::object_path(&prefix, "");
            let mut list = store.list(Some(&base));
            let mut wanted = Vec::new();
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(|e| Error::Store {
                    action: "list",
                    object: source.to_owned(),
                    source: e,
                })?;
                let rel = crate::publish::relative(&meta.location, &prefix);
                // Images and boxes are never fetched; a feed, manifest, key or
                // signature larger than the text limit is refused by verify.
                if crate::publish::is_artifact(&rel) || meta.size > MAX_TEXT_FILE {
                    continue;
                }
                if let Ok(rel) = RelPath::parse(&rel) {
                    wanted.push((rel, meta.location));
                }
            }
            for (rel, location) in wanted {
                let bytes = store
                    .get(&location)
                    .await
                    .map_err(|e| Error::Store {
                        action: "download",
                        object: location.to_string(),
                        source: e,
                    })?
                    .bytes()
                    .await
                    .map_err(|e| Error::Store {
                        action: "download",
                        object: location.to_string(),
                        source: e,
                    })?;
                let path = dir.path().join(rel.as_str());
                if let Some(parent) = path.parent() {
                    fsutil::create_dir_all(parent)?;
                }
                fsutil::write_new_file(&path, &bytes, 0o644, false)?;
            }
            Ok::<(), Error>(())
        })?;
        Ok(dir)
    }
}
