//! `vmcast.toml`: parsed strictly into [`RawConfig`], then validated into
//! [`Config`], with every path resolved against the config file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::error::{Error, LineCol, Result, Source, toml_error};
use crate::fsutil;
use crate::model::{Appliance, ImageFormat, ImageLayout, Line, Name, hides_a_separator};
use crate::pkcs11;
use crate::warning::Warning;

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

/// When `dir`, given where a built site is wanted (`verify .`), holds no
/// built site: the error that says so, naming the output directory to use
/// instead when `dir` is a site's source (it holds a vmcast.toml).
pub fn not_a_built_site(dir: &Path) -> Option<Error> {
    if !dir.is_dir() || dir.join(crate::media::FEED).exists() {
        return None;
    }
    let config = dir.join(DEFAULT_CONFIG);
    if !config.is_file() {
        return Some(Error::file(
            dir,
            format_args!(
                "holds no {}: it is not a site built by vmcast-gen",
                crate::media::FEED
            ),
        ));
    }
    let output = match load(&config, &Overrides::default()) {
        Ok(config) => {
            let output = &config.output_dir;
            output
                .strip_prefix(".")
                .unwrap_or(output)
                .display()
                .to_string()
        }
        Err(_) => format!("output_dir in {}", config.display()),
    };
    Some(Error::file(
        dir,
        format_args!(
            "is a site's source (it holds {DEFAULT_CONFIG}), not a built site: verify its output \
             directory, {output}, after `vmcast-gen build`"
        ),
    ))
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
    secret_key: Option<Spanned<String>>,
    public_key: Option<Spanned<PathBuf>>,
    image_mode: Option<ImageMode>,
    image_layout: Option<ImageLayout>,
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
    systemd: Option<Spanned<bool>>,
    openpgp_key: Option<Spanned<PathBuf>>,
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
    /// For systemd-pull and systemd-sysupdate: `SHA256SUMS` and its
    /// detached OpenPGP signature `SHA256SUMS.gpg` in every directory of
    /// images, the key as `import-pubring.gpg`, and a sysupdate transfer
    /// file per appliance of the flat layout. Where `systemd = true` is in
    /// the config, to point at when no OpenPGP key signs.
    pub systemd: Option<LineCol>,
    /// The OpenPGP secret key (ASCII-armored) that clearsigns
    /// `SHA256SUMS.asc` and the catalogs whose clients check only OpenPGP.
    pub openpgp_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppliance {
    title: Option<Spanned<String>>,
    description: Option<String>,
    feed_items: Option<Spanned<i64>>,
    mirrors: Option<Vec<Spanned<String>>>,
    image_layout: Option<ImageLayout>,
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

/// Where the minisign secret key is: `secret_key`, or `--secret-key`.
#[derive(Debug, Clone)]
pub enum KeyLocation {
    /// A key file.
    File(PathBuf),
    /// A key on a PKCS#11 token, named by a `pkcs11:` URI.
    Token(Box<pkcs11::Uri>),
}

impl KeyLocation {
    /// `--secret-key`: a `pkcs11:` URI, else a path as given.
    pub fn named(value: &Path) -> Result<Self> {
        match value.to_str().filter(|text| pkcs11::Uri::is_uri(text)) {
            Some(text) => pkcs11::Uri::parse(text)
                .map(|uri| KeyLocation::Token(Box::new(uri)))
                .map_err(|reason| Error::Usage {
                    option: "--secret-key",
                    value: pkcs11::shown(text),
                    reason,
                }),
            None => Ok(KeyLocation::File(value.to_path_buf())),
        }
    }

    /// `secret_key`: a `pkcs11:` URI, else a path resolved against `root`.
    fn parse(text: &str, root: &Path) -> Result<Self, String> {
        match pkcs11::Uri::is_uri(text) {
            true => pkcs11::Uri::parse(text).map(|uri| KeyLocation::Token(Box::new(uri))),
            false => Ok(KeyLocation::File(root.join(text))),
        }
    }
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
    pub secret_key: Option<KeyLocation>,
    /// The minisign public key of the signing key: a secret key whose
    /// public half differs is refused, and a token's key takes its key id.
    pub public_key: Option<PathBuf>,
    pub image_mode: ImageMode,
    /// Where images lie in the site, unless an appliance says otherwise.
    pub image_layout: ImageLayout,
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
    /// What the file says that is allowed but likely a mistake.
    pub warnings: Vec<Warning>,
    /// Where the file names each key, for errors about the key.
    pub key_lines: KeyLines,
}

/// Where the config file names its keys: an error about a key file it
/// names points at the line that names it.
#[derive(Debug, Clone, Default)]
pub struct KeyLines {
    pub secret_key: Option<LineCol>,
    pub public_key: Option<LineCol>,
    pub openpgp_key: Option<LineCol>,
}

/// The default of `feed_items`: twenty releases, over a year and a half of
/// monthly releases, keep a feed near 25 KiB per appliance, far below the
/// sizes at which podcast clients give up, while a weekly publisher's
/// history still moves to archives within months.
pub const DEFAULT_FEED_ITEMS: usize = 20;

/// The formats a release's primary image is chosen from, most wanted first,
/// when `format_preference` is not set.
const DEFAULT_FORMAT_PREFERENCE: [ImageFormat; 9] = [
    ImageFormat::Qcow2,
    ImageFormat::Ova,
    ImageFormat::Vmdk,
    ImageFormat::Vhdx,
    ImageFormat::Vhd,
    ImageFormat::Parallels,
    ImageFormat::Xva,
    ImageFormat::Raw,
    ImageFormat::Iso,
];

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
            title: Line::parse(name.as_str(), "title").expect("a name is one line"),
            description: None,
            feed_items: None,
            mirrors: None,
            image_layout: None,
        })
    }

    /// Where `appliance`'s images lie in the site.
    pub fn image_layout_of(&self, appliance: &str) -> ImageLayout {
        self.appliances
            .iter()
            .find(|(n, _)| n.as_str() == appliance)
            .and_then(|(_, a)| a.image_layout)
            .unwrap_or(self.image_layout)
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
    let src = Source { path, text: &text };
    let warnings = src.url_warnings(&raw);

    let configured =
        parse_base_url(raw.base_url.get_ref()).map_err(|m| src.at(raw.base_url.span(), m))?;
    let base_url = overrides.base_url.clone().unwrap_or(configured);
    let download_base_url = match (&raw.download_base_url, &overrides.base_url) {
        (Some(s), None) => parse_base_url(s.get_ref()).map_err(|m| src.at(s.span(), m))?,
        _ => join_url(&base_url, "images/"),
    };
    let systemd = systemd_catalog(&raw, &download_base_url, &base_url)
        .map_err(|(span, m)| src.at(span, m))?
        .map(|span| src.line_col(span));
    let image_mode = match (raw.image_mode, &overrides.base_url) {
        (Some(ImageMode::None) | None, Some(_)) => ImageMode::Link,
        (Some(mode), _) => mode,
        (None, None) if raw.download_base_url.is_some() => ImageMode::None,
        (None, None) => ImageMode::Copy,
    };

    let default_appliance = match &raw.appliance {
        Some(s) => {
            Some(Name::parse(s.get_ref(), "appliance name").map_err(|m| src.at(s.span(), m))?)
        }
        None => None,
    };
    let format_preference = match &raw.format_preference {
        Some(list) => list
            .get_ref()
            .iter()
            .map(|f| ImageFormat::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| src.at(list.span(), m))?,
        None => DEFAULT_FORMAT_PREFERENCE.to_vec(),
    };
    let expires_after = match &raw.expires_after {
        Some(s) => {
            Some(crate::trust::parse_duration(s.get_ref()).map_err(|m| src.at(s.span(), m))?)
        }
        None => None,
    };
    let site_feed_items = src
        .feed_items(&raw.feed_items)?
        .unwrap_or(DEFAULT_FEED_ITEMS);
    let site_mirrors = src.mirrors(&raw.mirrors)?.unwrap_or_default();
    let appliances = src.appliances(raw.appliances)?;

    let root = path.parent().unwrap_or(Path::new(""));
    let secret_key = match (&overrides.secret_key, &raw.secret_key) {
        (Some(named), _) => Some(KeyLocation::named(named)?),
        (None, Some(s)) => {
            Some(KeyLocation::parse(s.get_ref(), root).map_err(|m| src.at(s.span(), m))?)
        }
        (None, None) => None,
    };
    let key_lines = KeyLines {
        secret_key: raw.secret_key.as_ref().map(|k| src.line_col(k.span())),
        public_key: raw.public_key.as_ref().map(|k| src.line_col(k.span())),
        openpgp_key: raw
            .catalogs
            .openpgp_key
            .as_ref()
            .map(|k| src.line_col(k.span())),
    };
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
        secret_key,
        public_key: raw.public_key.map(|p| root.join(p.into_inner())),
        image_mode,
        image_layout: raw.image_layout.unwrap_or_default(),
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
            systemd,
            openpgp_key: raw.catalogs.openpgp_key.map(|p| root.join(p.into_inner())),
        },
        zsync: raw.zsync.unwrap_or(true),
        warnings,
        key_lines,
    })
}

/// The config's own checks, at their place in it.
impl Source<'_> {
    /// Warnings for base URLs and mirrors that name a file (`…/index.html`)
    /// rather than the directory every URL goes under.
    fn url_warnings(&self, raw: &RawConfig) -> Vec<Warning> {
        let appliance_mirrors = raw.appliances.values().filter_map(|a| a.mirrors.as_ref());
        let urls = [("base_url", Some(&raw.base_url))]
            .into_iter()
            .chain([("download_base_url", raw.download_base_url.as_ref())])
            .filter_map(|(setting, url)| Some((setting, url?)))
            .chain(
                raw.mirrors
                    .iter()
                    .chain(appliance_mirrors)
                    .flatten()
                    .map(|url| ("a mirror", url)),
            );
        let mut warnings = Vec::new();
        for (setting, url) in urls {
            let trimmed = url.get_ref().trim_end_matches('/');
            if let Some(file) = file_name_of(trimmed) {
                let pos = self.line_col(url.span());
                warnings.push(Warning::at(
                    self.path,
                    pos.line,
                    pos.column,
                    format_args!(
                        "{setting} ends in {file}, a file: every URL goes under it \
                         ({trimmed}/feed.xml); set it to the directory, {dir}",
                        dir = &trimmed[..trimmed.len() - file.len()],
                    ),
                ));
            }
        }
        warnings
    }

    /// `feed_items`, of the site or an appliance.
    fn feed_items(&self, value: &Option<Spanned<i64>>) -> Result<Option<usize>> {
        match value {
            Some(n) if *n.get_ref() >= 1 => Ok(Some(*n.get_ref() as usize)),
            Some(n) => Err(self.at(
                n.span(),
                "feed_items must be at least 1: the newest release always stays in the feed",
            )),
            None => Ok(None),
        }
    }

    /// `mirrors`, of the site or an appliance.
    fn mirrors(&self, value: &Option<Vec<Spanned<String>>>) -> Result<Option<Vec<Url>>> {
        value
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|m| parse_base_url(m.get_ref()).map_err(|e| self.at(m.span(), e)))
                    .collect()
            })
            .transpose()
    }

    /// The `[appliances.<name>]` tables, titles defaulting to the name.
    fn appliances(
        &self,
        raw: BTreeMap<Spanned<String>, RawAppliance>,
    ) -> Result<BTreeMap<Name, Appliance>> {
        let mut appliances = BTreeMap::new();
        for (key, value) in raw {
            let name =
                Name::parse(key.get_ref(), "appliance name").map_err(|m| self.at(key.span(), m))?;
            let title = match &value.title {
                Some(t) => t.get_ref(),
                None => name.as_str(),
            };
            let title = Line::parse(title, "title")
                .map_err(|m| self.at(value.title.as_ref().map_or(key.span(), Spanned::span), m))?;
            appliances.insert(
                name.clone(),
                Appliance {
                    title,
                    description: value.description,
                    feed_items: self.feed_items(&value.feed_items)?,
                    mirrors: self.mirrors(&value.mirrors)?,
                    image_layout: value.image_layout,
                    name,
                },
            );
        }
        Ok(appliances)
    }
}

/// `[catalogs] systemd`, where it is turned on: systemd's tools read
/// `SHA256SUMS` from the directory of the image itself, so the images must
/// be served from the site, where the build writes those manifests.
fn systemd_catalog(
    raw: &RawConfig,
    download_base_url: &Url,
    base_url: &Url,
) -> Result<Option<std::ops::Range<usize>>, (std::ops::Range<usize>, String)> {
    let Some(on) = raw.catalogs.systemd.as_ref().filter(|on| *on.get_ref()) else {
        return Ok(None);
    };
    if *download_base_url != join_url(base_url, "images/") {
        let span = raw
            .download_base_url
            .as_ref()
            .map_or(on.span(), Spanned::span);
        return Err((
            span,
            format!(
                "[catalogs] systemd needs the images served from the site ({base_url}images/): \
                 systemd-pull and systemd-sysupdate read SHA256SUMS and SHA256SUMS.gpg from the \
                 image's own directory, and the build writes those only in the site; images \
                 served from download_base_url {download_base_url} have none beside them",
            ),
        ));
    }
    Ok(Some(on.span()))
}

/// The file a base URL ends in, when its last segment is a web page or a
/// feed (`index.html`, `feed.xml`) rather than the site's directory.
fn file_name_of(url: &str) -> Option<&str> {
    const FILES: [&str; 10] = [
        "html", "htm", "xhtml", "xml", "json", "php", "asp", "aspx", "jsp", "txt",
    ];
    let path = url.split(['?', '#']).next()?;
    let last = path.rsplit('/').next()?;
    let (_, extension) = last.rsplit_once('.')?;
    FILES
        .contains(&extension.to_ascii_lowercase().as_str())
        .then_some(last)
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
    if hides_a_separator(url.path()) {
        return Err(format!(
            "URL `{s}` hides a `/` or `\\` in a path segment (%2F, %5C): a server or CDN that \
             decodes it serves another path than the site's"
        ));
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

    /// Gets the field names of a struct that derives `Deserialize`, as
    /// serde knows them, and fails to deserialize anything.
    struct Fields(Option<&'static [&'static str]>);

    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(serde::de::Error::custom("fields taken"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    fn fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        let mut fields = Fields(None);
        let _ = T::deserialize(&mut fields);
        fields.0.expect("a struct")
    }

    /// The repository's vmcast.toml says it shows every key the config
    /// takes, optional ones commented out, and the README's table lists
    /// them all: each field of the config, its `[appliances.<name>]` and
    /// its `[catalogs]`, is in both, and neither shows a key there is not.
    #[test]
    fn the_example_config_and_the_readme_show_every_key() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join("vmcast.toml")).unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        // The keys shown, commented or not, by section.
        let mut shown: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut section = "";
        for line in example.lines() {
            let line = line.strip_prefix("# ").unwrap_or(line);
            if let Some(header) = line.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                section = header.split('.').next().unwrap();
                shown.entry(section).or_default().push("");
            } else if let Some((key, _)) = line.split_once(" = ")
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                shown.entry(section).or_default().push(key);
            }
        }
        let sections = [
            ("", "", fields::<RawConfig>()),
            (
                "appliances",
                "`[appliances.<name>]` ",
                fields::<RawAppliance>(),
            ),
            ("catalogs", "`[catalogs]` ", fields::<RawCatalogs>()),
        ];
        for (section, prefix, fields) in sections {
            let keys = &shown[section];
            for field in fields
                .iter()
                .filter(|f| !["appliances", "catalogs"].contains(f))
            {
                assert!(
                    keys.contains(field),
                    "vmcast.toml does not show `{field}` in [{section}]"
                );
                assert!(
                    readme.contains(&format!("\n| {prefix}`{field}` |")),
                    "the README's config reference lacks {prefix}`{field}`"
                );
            }
            for key in keys.iter().filter(|k| !k.is_empty()) {
                assert!(
                    fields.contains(key),
                    "vmcast.toml shows `{key}` in [{section}], which the config does not take"
                );
            }
        }
    }

    #[test]
    fn base_urls_gain_a_trailing_slash() {
        let url = parse_base_url("https://example.com/a").unwrap();
        assert_eq!(url.as_str(), "https://example.com/a/");
        assert!(parse_base_url("example.com/a").is_err());
        assert!(parse_base_url("ftp://example.com/").is_err());
        assert!(parse_base_url("https://example.com/?q=1").is_err());
        assert!(parse_base_url("https://example.com/site/..%2F..%2Fother/").is_err());
        assert!(parse_base_url("https://example.com/a%5cb/").is_err());
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
