//! simplestreams (`streams/v1/index.json` and one products:1.0 file), in
//! the one shape that `sstream-query`/`sstream-mirror`, virt-builder
//! (`format=simplestreams`) and LXD (`--protocol=simplestreams`) all read:
//!
//! - one product per appliance, channel and architecture, with LXD's
//!   architecture names (`amd64`, `arm64`, …);
//! - version keys are date serials (`YYYYMMDD_HHMM`, from the release
//!   date): every client compares them as strings, and LXD skips keys that
//!   do not start with a date. Releases of one product in the same minute
//!   (a fix for two branches on one day) are numbered in version order,
//!   as Ubuntu numbers its serials: `20260115_0000`, `20260115_0000.1`.
//!   The feed holds every release's date and version, so a build on the
//!   published site (`--previous`) gives the same keys. The real version
//!   is in `label`, `version` and `pubname`;
//! - every image is an item named after its file, but one uncompressed
//!   qcow2 per version is the item `disk1.img`, the only key virt-builder
//!   looks for and the disk LXD takes for a virtual machine. Beside it, a
//!   small metadata tarball (`metadata.yaml`) is published under the
//!   ftypes `lxd.tar.xz` and `incus.tar.xz`, with LXD's fingerprint
//!   `combined_disk1-img_sha256` = SHA-256(tarball ‖ disk), taken in the
//!   image's one read (see [`metadata_tarball`] and [`Fingerprint`]).
//!
//! Paths are relative to the site: images served from another host
//! (`download_base_url` elsewhere) cannot be listed.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::CatalogFile;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hash::{Chunk, Facts, Sink, Start};
use crate::model::{Combined, Image, ImageFormat, ImageSource, ReleaseInfo, Sha256, Version};
use crate::render::Site;

pub const INDEX: &str = "streams/v1/index.json";
pub const PRODUCTS: &str = "streams/v1/images.json";
/// The clearsigned forms, written with an OpenPGP key: the index names the
/// signed products file, since a client that starts from a `.sjson` reads
/// only signed files.
pub const SIGNED_INDEX: &str = "streams/v1/index.sjson";
pub const SIGNED_PRODUCTS: &str = "streams/v1/images.sjson";
/// The item key of the disk virt-builder and LXD take.
pub const DISK_ITEM: &str = "disk1.img";
/// The field LXD reads its fingerprint from, on the metadata items.
const COMBINED_FIELD: &str = "combined_disk1-img_sha256";
/// The metadata item's ftypes: LXD's, then Incus's.
const METADATA_FTYPES: [&str; 2] = ["lxd.tar.xz", "incus.tar.xz"];

/// LXD's name for one of our architectures (the kernel's names), if it
/// has one.
fn lxd_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i686" | "i386" => "i386",
        "armv7l" | "armhf" => "armhf",
        "ppc64le" | "ppc64el" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        _ => return None,
    })
}

/// The date serial of a release: its date as `YYYYMMDD_HHMM`.
fn serial(date: &DateTime<Utc>) -> String {
    date.format("%Y%m%d_%H%M").to_string()
}

/// A product's versions keyed by date serial and version.
type Versions = BTreeMap<(String, Version), Value>;

/// The version keys of a product's releases: each one's date serial, with
/// `.1`, `.2`, ... after the first release of the same minute, in version
/// order (`.01` … `.10` when a minute holds more than ten). A key depends
/// only on the releases of its minute, so it is the same on every rebuild.
fn numbered(versions: Versions) -> Map<String, Value> {
    let mut in_minute: BTreeMap<String, usize> = BTreeMap::new();
    for (serial, _) in versions.keys() {
        *in_minute.entry(serial.clone()).or_default() += 1;
    }
    let mut keys = Map::new();
    let mut previous: Option<(String, usize)> = None;
    for ((serial, _), version) in versions {
        let n = match &previous {
            Some((last, n)) if *last == serial => n + 1,
            _ => 0,
        };
        // Clients compare keys as strings: every number of a minute gets
        // as many digits as its largest (`.01` … `.10`).
        let width = (in_minute[&serial] - 1).to_string().len();
        let key = match n {
            0 => serial.clone(),
            n => format!("{serial}.{n:0width$}"),
        };
        keys.insert(key, version);
        previous = Some((serial, n));
    }
    keys
}

/// Where the metadata tarball of a release's disk for `arch` (LXD's name)
/// is published: a name of safe characters whatever the image's file name.
fn metadata_path(info: &ReleaseInfo, arch: &str) -> String {
    format!(
        "streams/lxd/{}/{}/{}-{}-{arch}.lxd.tar.xz",
        info.appliance, info.version, info.appliance, info.version
    )
}

/// The image of `images` (a release's, primary first) that is its
/// version's `disk1.img` for architecture `arch`: the first uncompressed
/// qcow2 of that architecture.
fn disk_of<'a>(images: &'a [ImageSource], arch: &str) -> Option<&'a ImageSource> {
    images.iter().find(|i| {
        i.format == ImageFormat::Qcow2 && i.compression.is_none() && i.arch.as_deref() == Some(arch)
    })
}

/// The metadata tarball LXD needs beside `image`, if the catalog is on and
/// `image` is the `disk1.img` of its release (`images`, primary first) for
/// an architecture LXD knows. Its bytes depend on the release alone: the
/// same release always gives the same tarball, so its digest, taken with
/// the image's in one read, stays valid in the hash cache.
pub fn metadata_tarball(
    config: &Config,
    info: &ReleaseInfo,
    images: &[ImageSource],
    image: &ImageSource,
) -> Result<Option<Vec<u8>>> {
    if !config.catalogs.simplestreams || relative(config, image).is_none() {
        return Ok(None);
    }
    let Some(arch) = image.arch.as_deref().filter(|a| lxd_arch(a).is_some()) else {
        return Ok(None);
    };
    if disk_of(images, arch).map(|d| &d.site_path) != Some(&image.site_path) {
        return Ok(None);
    }
    tarball(info, arch).map(Some)
}

/// LXD's fingerprint of a `disk1.img`, taken in the read that hashes it:
/// the SHA-256 of its metadata tarball followed by the disk.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    tarball: Arc<[u8]>,
    prefix: Sha256,
}

impl Fingerprint {
    /// The fingerprint of the disk that `tarball` ([`metadata_tarball`])
    /// goes with.
    pub fn new(tarball: Vec<u8>) -> Self {
        Fingerprint {
            prefix: Sha256::of(&tarball),
            tarball: tarball.into(),
        }
    }

    /// The tarball's SHA-256: a fingerprint taken with another tarball
    /// (another release date, title or version) is not this one.
    pub fn prefix(&self) -> Sha256 {
        self.prefix
    }
}

impl Start for Fingerprint {
    type Sink = FingerprintSink;

    fn start(&self, _: u64) -> Result<FingerprintSink> {
        let mut hasher = sha2::Sha256::new();
        hasher.update(&self.tarball);
        Ok(FingerprintSink {
            prefix: self.prefix,
            hasher,
        })
    }
}

/// A [`Fingerprint`] being taken.
pub struct FingerprintSink {
    prefix: Sha256,
    hasher: sha2::Sha256,
}

impl Sink for FingerprintSink {
    type Output = Combined;

    fn update(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        self.hasher.update(chunk.bytes());
        Ok(())
    }

    fn finish(self, _: &Facts<'_>) -> Result<Combined> {
        Ok(Combined {
            prefix: self.prefix,
            sha256: Sha256(self.hasher.finalize().into()),
        })
    }
}

/// `metadata.yaml` in a tar (fixed owner, mode and mtime: the release
/// date), xz-compressed.
fn tarball(info: &ReleaseInfo, arch: &str) -> Result<Vec<u8>> {
    let q = |s: &str| Value::from(s).to_string();
    let yaml = format!(
        "architecture: {}\ncreation_date: {}\nproperties:\n  architecture: {}\n  description: {}\n  \
         os: {}\n  release: {}\n  version: {}\ntemplates: {{}}\n",
        q(arch),
        info.date.timestamp(),
        q(arch),
        q(&info.title),
        q(info.appliance.as_str()),
        q(info.channel.as_str()),
        q(info.version.as_str()),
    );
    let fail = |e: std::io::Error| {
        Error::other(format_args!(
            "cannot make the LXD metadata of {} {}: {e}",
            info.appliance, info.version
        ))
    };
    let mut header = tar::Header::new_ustar();
    header.set_path("metadata.yaml").map_err(fail)?;
    header.set_size(yaml.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root").map_err(fail)?;
    header.set_groupname("root").map_err(fail)?;
    header.set_mtime(u64::try_from(info.date.timestamp()).unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, yaml.as_bytes()).map_err(fail)?;
    let tar = builder.into_inner().map_err(fail)?;
    xz_compress(&tar).map_err(fail)
}

/// xz of a tarball of a few KiB, made again on every build (its digest
/// seeds LXD's fingerprint): a preset-0 encoder with a 64 KiB dictionary,
/// since a larger one only costs memory here.
fn xz_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut options = lzma_rust2::XzOptions::with_preset(0);
    options.lzma_options.dict_size = 64 << 10;
    let mut writer = lzma_rust2::XzWriter::new(Vec::new(), options)?;
    writer.write_all(data)?;
    writer.finish()
}

/// An image's path relative to the site, if it is served from the site.
fn relative<'a>(config: &Config, image: &'a ImageSource) -> Option<&'a str> {
    image.url.as_str().strip_prefix(config.base_url.as_str())
}

/// `org.example.downloads:vmcast` for a site at downloads.example.org.
fn content_id(config: &Config) -> String {
    let host = config.base_url.host_str().unwrap_or("localhost");
    let reversed: Vec<&str> = host.rsplit('.').collect();
    format!("{}:vmcast", reversed.join("."))
}

/// What the catalog writes, and what it leaves out.
pub struct Tree {
    /// `streams/v1/index.json`, `streams/v1/images.json` and the metadata
    /// tarballs.
    pub files: Vec<CatalogFile>,
    /// With an OpenPGP key: the texts of the `.sjson` forms, to clearsign.
    pub clearsigned: Vec<(String, String)>,
    /// The images each client cannot take, with the reason.
    pub skipped: Vec<String>,
}

/// The simplestreams tree of the site's releases.
pub fn render(site: &Site) -> Result<Tree> {
    let config = site.config;
    let content_id = content_id(config);
    let Gathered {
        products,
        tarballs,
        skipped,
    } = gather(site, &content_id)?;
    let products: BTreeMap<String, Map<String, Value>> = products
        .into_iter()
        .map(|(key, (mut product, versions))| {
            product.insert("versions".into(), Value::Object(numbered(versions)));
            (key, product)
        })
        .collect();
    let products_json = json!({
        "format": "products:1.0",
        "datatype": "image-downloads",
        "content_id": content_id,
        "updated": site.build_time.to_rfc2822(),
        "products": products,
    });
    let index = |path: &str| {
        json!({
            "format": "index:1.0",
            "updated": site.build_time.to_rfc2822(),
            "index": {
                content_id.clone(): {
                    "format": "products:1.0",
                    "datatype": "image-downloads",
                    "path": path,
                    "updated": site.build_time.to_rfc2822(),
                    "products": products.keys().collect::<Vec<_>>(),
                }
            },
        })
    };
    let mut files = vec![
        json_file(INDEX, &index(PRODUCTS))?,
        json_file(PRODUCTS, &products_json)?,
    ];
    let clearsigned = match site.openpgp {
        Some(_) => vec![
            (
                SIGNED_INDEX.to_owned(),
                json_text(SIGNED_INDEX, &index(SIGNED_PRODUCTS))?,
            ),
            (
                SIGNED_PRODUCTS.to_owned(),
                json_text(SIGNED_PRODUCTS, &products_json)?,
            ),
        ],
        None => Vec::new(),
    };
    files.extend(tarballs);
    Ok(Tree {
        files,
        clearsigned,
        skipped,
    })
}

/// The products of a site's images, with the LXD tarballs made for them
/// and a note for each image left out.
struct Gathered {
    products: BTreeMap<String, (Map<String, Value>, Versions)>,
    tarballs: Vec<CatalogFile>,
    skipped: Vec<String>,
}

fn gather(site: &Site, content_id: &str) -> Result<Gathered> {
    let config = site.config;
    let mut products: BTreeMap<String, (Map<String, Value>, Versions)> = BTreeMap::new();
    let mut tarballs = Vec::new();
    let mut skipped = Vec::new();
    for release in site.releases {
        let info = &release.info;
        let sources: Vec<ImageSource> = release.images.iter().map(|i| i.source.clone()).collect();
        for image in &release.images {
            let s = &image.source;
            let named = format!("{} {} {}", info.appliance, info.version, s.name);
            let Some(path) = relative(config, s) else {
                skipped.push(format!(
                    "{named}: served from {}, outside base_url; simplestreams paths are \
                     relative to the site",
                    s.url
                ));
                continue;
            };
            let Some(arch) = s.arch.as_deref() else {
                skipped.push(format!(
                    "{named}: no architecture; simplestreams lists images per architecture \
                     (set `arch` in [requirements] or [image.\"{}\"])",
                    s.name
                ));
                continue;
            };
            let product_arch = lxd_arch(arch).unwrap_or(arch);
            let key = format!(
                "{content_id}:{}:{}:{product_arch}",
                info.appliance, info.channel
            );
            let (_, versions) = products
                .entry(key)
                .or_insert_with(|| (product(info, product_arch), Versions::new()));
            let version = versions
                .entry((serial(&info.date), info.version.clone()))
                .or_insert_with(|| version(info));
            let items = version["items"]
                .as_object_mut()
                .expect("a version has items");
            let is_disk = disk_of(&sources, arch).map(|d| &d.site_path) == Some(&s.site_path);
            let item_key = match is_disk {
                true => DISK_ITEM,
                false => s.name.as_str(),
            };
            items.insert(item_key.to_owned(), item(image, path, is_disk));
            if !is_disk {
                skipped.push(format!(
                    "{named}: for sstream-query only; virt-builder and LXD take one \
                     uncompressed qcow2 per release and architecture"
                ));
                continue;
            }
            match lxd_items(config, info, &sources, image)? {
                Ok(lxd) => {
                    items.extend(lxd.items);
                    tarballs.push(CatalogFile {
                        path: lxd.path,
                        bytes: lxd.tar,
                        signed: false,
                    });
                }
                Err(why) => skipped.push(format!("{named}: not for LXD: {why}")),
            }
        }
    }
    Ok(Gathered {
        products,
        tarballs,
        skipped,
    })
}

fn json_text(path: &str, value: &Value) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::other(format_args!("cannot write {path}: {e}")))?;
    text.push('\n');
    Ok(text)
}

fn json_file(path: &str, value: &Value) -> Result<CatalogFile> {
    Ok(CatalogFile {
        path: path.to_owned(),
        bytes: json_text(path, value)?.into_bytes(),
        signed: false,
    })
}

fn product(info: &ReleaseInfo, arch: &str) -> Map<String, Value> {
    let mut aliases = vec![format!("{}/{}", info.appliance, info.channel)];
    if info.channel.as_str() == "stable" {
        aliases.push(info.appliance.to_string());
    }
    let mut map = Map::new();
    map.insert("aliases".into(), aliases.join(",").into());
    map.insert("arch".into(), arch.into());
    map.insert("os".into(), info.appliance.as_str().into());
    map.insert("release".into(), info.channel.as_str().into());
    map.insert("release_title".into(), info.channel.as_str().into());
    map.insert("pubname".into(), info.appliance.as_str().into());
    map
}

fn version(info: &ReleaseInfo) -> Value {
    json!({
        "label": info.version.as_str(),
        "version": info.version.as_str(),
        "pubname": format!("{}-{}", info.appliance, info.version),
        "items": {},
    })
}

/// `qcow2`, `raw.xz`: the format, and the compression as its suffix.
fn ftype(image: &ImageSource) -> String {
    match image.compression {
        Some(c) => format!("{}.{}", image.format.as_str(), c.extension()),
        None => image.format.as_str().to_owned(),
    }
}

fn item(image: &Image, path: &str, is_disk: bool) -> Value {
    json!({
        "ftype": match is_disk {
            true => DISK_ITEM.to_owned(),
            false => ftype(&image.source),
        },
        "path": path,
        "size": image.digest.length,
        "sha256": image.digest.sha256.to_hex(),
    })
}

/// The metadata tarball of a `disk1.img` and the items that name it.
struct Lxd {
    path: String,
    tar: Vec<u8>,
    items: Vec<(String, Value)>,
}

/// The metadata items of the `disk1.img` `image`, and the tarball they
/// name; or why LXD cannot take it.
fn lxd_items(
    config: &Config,
    info: &ReleaseInfo,
    sources: &[ImageSource],
    image: &Image,
) -> Result<std::result::Result<Lxd, String>> {
    let Some(tar) = metadata_tarball(config, info, sources, &image.source)? else {
        return Ok(Err(format!(
            "LXD has no name for architecture {:?}",
            image.source.arch.as_deref().unwrap_or_default()
        )));
    };
    let digest = Sha256::of(&tar);
    let Some(combined) = image.lxd.filter(|c| c.prefix == digest) else {
        return Ok(Err(
            "its fingerprint was not taken with this metadata (a release taken from the \
             previous site whose notes changed); rebuild it from the image"
                .to_owned(),
        ));
    };
    let arch = image.source.arch.as_deref().and_then(lxd_arch);
    let path = metadata_path(info, arch.unwrap_or_default());
    let items = METADATA_FTYPES
        .iter()
        .map(|ftype| {
            (
                (*ftype).to_owned(),
                json!({
                    "ftype": ftype,
                    "path": path,
                    "size": tar.len(),
                    "sha256": digest.to_hex(),
                    COMBINED_FIELD: combined.sha256.to_hex(),
                }),
            )
        })
        .collect();
    Ok(Ok(Lxd { path, tar, items }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{self, Job, NoProgress, Open};

    /// Keys of one minute sort as strings in version order, also past
    /// ten releases, as LXD and sstream-query compare them.
    #[test]
    fn keys_of_one_minute_sort_as_strings_in_version_order() {
        let keys = |count: u32| -> Vec<String> {
            let versions: Versions = (0..count)
                .map(|i| {
                    let version = Version::parse(&format!("1.{i}.0")).unwrap();
                    (("20260101_0000".to_owned(), version), Value::from(i))
                })
                .chain([(
                    ("20260102_0000".to_owned(), Version::parse("2.0.0").unwrap()),
                    Value::from(99),
                )])
                .collect();
            let numbered = numbered(versions);
            let mut keys: Vec<&String> = numbered.keys().collect();
            keys.sort();
            keys.iter()
                .map(|k| numbered[k.as_str()].to_string())
                .collect()
        };
        let order = |count: u32| (0..count).map(|i| i.to_string()).chain(["99".into()]);
        assert_eq!(keys(3), order(3).collect::<Vec<_>>());
        assert_eq!(keys(12), order(12).collect::<Vec<_>>());
        let versions: Versions = (0..11)
            .map(|i| {
                let version = Version::parse(&format!("1.{i}.0")).unwrap();
                (("20260101_0000".to_owned(), version), Value::from(i))
            })
            .collect();
        let numbered = numbered(versions);
        assert!(numbered.contains_key("20260101_0000.01"));
        assert!(numbered.contains_key("20260101_0000.10"));
    }

    #[test]
    fn the_fingerprint_is_taken_from_the_same_read() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk");
        std::fs::write(&src, vec![7u8; (3 << 20) + 5]).unwrap();
        let jobs = [Job {
            open: Open::Named,
            source: src.clone(),
            size_hint: 0,
            copy_to: None,
            sink: Fingerprint::new(b"metadata".to_vec()),
        }];
        let d = hash::hash_all(&jobs, 1, &NoProgress).unwrap();
        let mut whole = b"metadata".to_vec();
        whole.extend(std::fs::read(&src).unwrap());
        assert_eq!(
            d[0].made,
            Combined {
                prefix: Sha256::of(b"metadata"),
                sha256: Sha256::of(&whole),
            }
        );
    }
}
