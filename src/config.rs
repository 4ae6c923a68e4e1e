//! `vmcast.toml`: parsed strictly into [`RawConfig`], then validated into
//! [`Config`], with every path resolved against the config file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::error::{Error, Result, toml_error};
use crate::fsutil;
use crate::model::{Appliance, ImageFormat, Name};

/// The config file's name when none is given.
pub const DEFAULT_CONFIG: &str = "vmcast.toml";

/// The site's config file when none is named: `vmcast.toml` in `start` or
/// the nearest directory above it, as cargo finds `Cargo.toml`.
pub fn find(start: &Path) -> Result<PathBuf> {
    for dir in start.ancestors() {
        let candidate = dir.join(DEFAULT_CONFIG);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::NoConfig {
        searched: start.to_path_buf(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    title: String,
    description: String,
    base_url: Spanned<String>,
    download_base_url: Option<Spanned<String>>,
    language: Option<String>,
    releases_dir: Option<PathBuf>,
    images_dir: Option<PathBuf>,
    output_dir: Option<PathBuf>,
    templates_dir: Option<PathBuf>,
    secret_key: Option<PathBuf>,
    image_mode: Option<ImageMode>,
    appliance: Option<Spanned<String>>,
    format_preference: Option<Spanned<Vec<String>>>,
    expires_after: Option<Spanned<String>>,
    next_public_key: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    trust_sidecars: bool,
    #[serde(default)]
    appliances: BTreeMap<Spanned<String>, RawAppliance>,
    previous: Option<String>,
    previous_key: Option<PathBuf>,
    feed_items: Option<Spanned<i64>>,
    mirrors: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    provenance_keys: Vec<PathBuf>,
    #[serde(default)]
    catalogs: RawCatalogs,
    zsync: Option<bool>,
}

/// `[catalogs]`: the catalogs other clients read, and their signing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogs {
    #[serde(default)]
    json_feed: bool,
    #[serde(default)]
    virt_builder: bool,
    #[serde(default)]
    simplestreams: bool,
    #[serde(default)]
    vagrant: bool,
    openpgp_key: Option<PathBuf>,
}

/// `[catalogs]`: the catalogs written besides the RSS feeds, each for the
/// clients of another ecosystem and all off unless asked for, and their
/// OpenPGP signing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogs {
    /// `feed.json`, a JSON Feed 1.1 of the same releases as `feed.xml`.
    pub json_feed: bool,
    /// `virt-builder/index`, the native index of virt-builder, for the
    /// images it can take; their SHA-512 is computed for it.
    pub virt_builder: bool,
    /// `streams/v1/index.json` and its products file, for `sstream-query`,
    /// virt-builder (`format=simplestreams`) and LXD.
    pub simplestreams: bool,
    /// `vagrant/<appliance>.json` box catalogs, and a libvirt box of each
    /// plain qcow2 image.
    pub vagrant: bool,
    /// The OpenPGP secret key (ASCII-armored) that clearsigns
    /// `SHA256SUMS.asc` and the catalogs whose clients check only OpenPGP.
    pub openpgp_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppliance {
    title: Option<String>,
    description: Option<String>,
    feed_items: Option<Spanned<i64>>,
    mirrors: Option<Vec<Spanned<String>>>,
}

/// How images reach the output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageMode {
    /// Copied into `images/`, hashed in the same read.
    Copy,
    /// Hard-linked into `images/` (copied when on another file system).
    Link,
    /// Not placed in the output; served from `download_base_url`.
    None,
}

/// Command-line settings that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub output_dir: Option<PathBuf>,
    pub secret_key: Option<PathBuf>,
    /// Serve the site from here instead (a local preview): images are then
    /// placed in the output and served from it too.
    pub base_url: Option<Url>,
}

/// A validated site configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file itself.
    pub path: PathBuf,
    pub title: String,
    pub description: String,
    pub language: Option<String>,
    /// Where the output directory is served; ends with `/`.
    pub base_url: Url,
    /// Where images are served; ends with `/`.
    pub download_base_url: Url,
    pub releases_dir: PathBuf,
    pub images_dir: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub templates_dir: PathBuf,
    pub secret_key: Option<PathBuf>,
    pub image_mode: ImageMode,
    pub default_appliance: Option<Name>,
    pub format_preference: Vec<ImageFormat>,
    /// How long a build stays valid; consumers refuse it afterwards.
    pub expires_after: Option<chrono::Duration>,
    /// The public key to rotate to, announced signed by the current key.
    pub next_public_key: Option<PathBuf>,
    /// Where the hash cache lives, if the config says.
    pub cache_dir: Option<PathBuf>,
    /// Whether `vmcast-gen hash` sidecar files may stand in for a read.
    pub trust_sidecars: bool,
    pub appliances: BTreeMap<Name, Appliance>,
    /// The published site to build on (`build --previous`): a directory
    /// (resolved against the config's), an http(s) URL, or s3://.
    pub previous: Option<String>,
    /// A key the previous site may be signed by besides the signing key:
    /// the key rotated from, while the rotation is under way.
    pub previous_key: Option<PathBuf>,
    /// Releases of each appliance kept in the current feeds and on the
    /// landing page; older ones move to archives.
    pub feed_items: usize,
    /// Base URLs that also serve the images, under the same relative paths
    /// as `download_base_url`.
    pub mirrors: Vec<Url>,
    /// The builders' public keys (PEM, ed25519 or ECDSA P-256) that
    /// provenance signatures are verified against.
    pub provenance_keys: Vec<PathBuf>,
    pub catalogs: Catalogs,
    /// A zsync control file beside each uncompressed image, for delta
    /// downloads (`pull` and the stock `zsync` client).
    pub zsync: bool,
}

/// The default of `feed_items`: twenty releases, over a year and a half of
/// monthly releases, keep a feed near 25 KiB per appliance, far below the
/// sizes at which podcast clients give up, while a weekly publisher's
/// history still moves to archives within months.
pub const DEFAULT_FEED_ITEMS: usize = 20;

impl Config {
    /// Whether the build makes zsync control files: `zsync` says so, and
    /// the images are placed in the output, where each control file must
    /// lie beside its image.
    pub fn makes_zsync(&self) -> bool {
        self.zsync && self.image_mode != ImageMode::None
    }

    /// The metadata of an appliance, defaulting its title to its name.
    pub fn appliance(&self, name: &Name) -> Appliance {
        self.appliances.get(name).cloned().unwrap_or(Appliance {
            name: name.clone(),
            title: name.to_string(),
            description: None,
            feed_items: None,
            mirrors: None,
        })
    }

    /// How many releases of `appliance` the current feeds keep.
    pub fn feed_items_of(&self, appliance: &str) -> usize {
        self.appliances
            .iter()
            .find(|(n, _)| n.as_str() == appliance)
            .and_then(|(_, a)| a.feed_items)
            .unwrap_or(self.feed_items)
    }

    /// The mirrors that serve `appliance`'s images.
    pub fn mirrors_of(&self, appliance: &str) -> &[Url] {
        self.appliances
            .iter()
            .find(|(n, _)| n.as_str() == appliance)
            .and_then(|(_, a)| a.mirrors.as_deref())
            .unwrap_or(&self.mirrors)
    }

    /// The absolute URL of a file in the output directory.
    pub fn site_url(&self, path: &str) -> Url {
        join_url(&self.base_url, path)
    }
}

/// Bytes left as they are in a path segment: RFC 3986's unreserved set.
/// Everything else is percent-encoded, `+` included (S3 reads it as a space).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Joins a `/`-separated relative path to a base URL ending in `/`,
/// percent-encoding each segment. (`Url`'s own segment API drops tabs and
/// newlines, which would point at another file.)
pub fn join_url(base: &Url, path: &str) -> Url {
    let encoded: Vec<String> = path
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    base.join(&encoded.join("/"))
        .expect("a percent-encoded relative path joins to any hierarchical URL")
}

pub fn load(path: &Path, overrides: &Overrides) -> Result<Config> {
    let text = fsutil::read_to_string(path)?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    let at =
        |span: std::ops::Range<usize>, msg: String| Error::at_offset(path, &text, span.start, msg);

    let configured =
        parse_base_url(raw.base_url.get_ref()).map_err(|m| at(raw.base_url.span(), m))?;
    let base_url = overrides.base_url.clone().unwrap_or(configured);
    let download_base_url = match (&raw.download_base_url, &overrides.base_url) {
        (Some(s), None) => parse_base_url(s.get_ref()).map_err(|m| at(s.span(), m))?,
        _ => join_url(&base_url, "images/"),
    };
    let image_mode = match (raw.image_mode, &overrides.base_url) {
        (Some(ImageMode::None) | None, Some(_)) => ImageMode::Link,
        (Some(mode), _) => mode,
        (None, None) if raw.download_base_url.is_some() => ImageMode::None,
        (None, None) => ImageMode::Copy,
    };

    let default_appliance = match &raw.appliance {
        Some(s) => Some(Name::parse(s.get_ref(), "appliance name").map_err(|m| at(s.span(), m))?),
        None => None,
    };
    let format_preference = match &raw.format_preference {
        Some(list) => list
            .get_ref()
            .iter()
            .map(|f| ImageFormat::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| at(list.span(), m))?,
        None => vec![
            ImageFormat::Qcow2,
            ImageFormat::Ova,
            ImageFormat::Vmdk,
            ImageFormat::Vhdx,
            ImageFormat::Vhd,
            ImageFormat::Parallels,
            ImageFormat::Xva,
            ImageFormat::Raw,
            ImageFormat::Iso,
        ],
    };
    let expires_after = match &raw.expires_after {
        Some(s) => Some(crate::trust::parse_duration(s.get_ref()).map_err(|m| at(s.span(), m))?),
        None => None,
    };
    let feed_items = |v: &Option<Spanned<i64>>| -> Result<Option<usize>> {
        match v {
            Some(n) if *n.get_ref() >= 1 => Ok(Some(*n.get_ref() as usize)),
            Some(n) => Err(at(
                n.span(),
                "feed_items must be at least 1: the newest release always stays in the feed".into(),
            )),
            None => Ok(None),
        }
    };
    let mirrors = |v: &Option<Vec<Spanned<String>>>| -> Result<Option<Vec<Url>>> {
        v.as_ref()
            .map(|list| {
                list.iter()
                    .map(|m| parse_base_url(m.get_ref()).map_err(|e| at(m.span(), e)))
                    .collect()
            })
            .transpose()
    };
    let site_feed_items = feed_items(&raw.feed_items)?.unwrap_or(DEFAULT_FEED_ITEMS);
    let site_mirrors = mirrors(&raw.mirrors)?.unwrap_or_default();
    let mut appliances = BTreeMap::new();
    for (key, value) in raw.appliances {
        let name = Name::parse(key.get_ref(), "appliance name").map_err(|m| at(key.span(), m))?;
        appliances.insert(
            name.clone(),
            Appliance {
                title: value.title.unwrap_or_else(|| name.to_string()),
                description: value.description,
                feed_items: feed_items(&value.feed_items)?,
                mirrors: mirrors(&value.mirrors)?,
                name,
            },
        );
    }

    let root = path.parent().unwrap_or(Path::new(""));
    let resolve =
        |p: Option<PathBuf>, default: &str| root.join(p.unwrap_or_else(|| default.into()));
    Ok(Config {
        path: path.to_path_buf(),
        title: raw.title,
        description: raw.description,
        language: raw.language,
        base_url,
        download_base_url,
        releases_dir: resolve(raw.releases_dir, "releases"),
        images_dir: raw.images_dir.map(|p| root.join(p)),
        output_dir: overrides
            .output_dir
            .clone()
            .unwrap_or_else(|| resolve(raw.output_dir, "public")),
        templates_dir: resolve(raw.templates_dir, "templates"),
        secret_key: overrides
            .secret_key
            .clone()
            .or_else(|| raw.secret_key.map(|p| root.join(p))),
        image_mode,
        default_appliance,
        format_preference,
        expires_after,
        next_public_key: raw.next_public_key.map(|p| root.join(p)),
        cache_dir: raw.cache_dir.map(|p| root.join(p)),
        trust_sidecars: raw.trust_sidecars,
        appliances,
        previous: raw.previous.map(|p| match p.contains("://") {
            true => p,
            false => root.join(p).to_string_lossy().into_owned(),
        }),
        previous_key: raw.previous_key.map(|p| root.join(p)),
        feed_items: site_feed_items,
        mirrors: site_mirrors,
        provenance_keys: raw.provenance_keys.iter().map(|p| root.join(p)).collect(),
        catalogs: Catalogs {
            json_feed: raw.catalogs.json_feed,
            virt_builder: raw.catalogs.virt_builder,
            vagrant: raw.catalogs.vagrant,
            simplestreams: raw.catalogs.simplestreams,
            openpgp_key: raw.catalogs.openpgp_key.map(|p| root.join(p)),
        },
        zsync: raw.zsync.unwrap_or(true),
    })
}

/// An absolute http(s) URL with a host and no query or fragment, made to end
/// in `/` so that relative paths join under it.
fn parse_base_url(s: &str) -> Result<Url, String> {
    let mut url = Url::parse(s).map_err(|e| {
        format!("invalid URL `{s}`: {e}; expected an absolute URL such as https://downloads.example.com/appliances/")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("URL `{s}` must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL `{s}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("URL `{s}` must not have a query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_gain_a_trailing_slash() {
        let url = parse_base_url("https://example.com/a").unwrap();
        assert_eq!(url.as_str(), "https://example.com/a/");
        assert!(parse_base_url("example.com/a").is_err());
        assert!(parse_base_url("ftp://example.com/").is_err());
        assert!(parse_base_url("https://example.com/?q=1").is_err());
    }

    #[test]
    fn joined_urls_are_percent_encoded() {
        let base = parse_base_url("https://example.com/site/").unwrap();
        let url = join_url(&base, "images/a b/c#d?e%f+g\nh\\é.qcow2");
        assert_eq!(
            url.as_str(),
            "https://example.com/site/images/a%20b/c%23d%3Fe%25f%2Bg%0Ah%5C%C3%A9.qcow2"
        );
    }
}
