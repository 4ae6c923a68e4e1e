//! The validated values every stage shares: newtypes that cannot hold an
//! invalid version, name, digest or path, and the release model.

use std::cmp::Ordering;
use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use url::Url;

/// Checks that `s` is a non-empty run of allowed characters that starts with
/// an alphanumeric one, and is at most 128 bytes long.
fn check_token(s: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if s.len() > 128 {
        return Err(format!("{what} `{s}` is longer than 128 bytes"));
    }
    if !first_ok || !s.chars().all(allowed) {
        return Err(format!(
            "invalid {what} `{}`: it must start with a letter or digit and hold only {}",
            s.escape_default(),
            match what {
                "version" => "letters, digits and . + _ ~ -",
                _ => "lower-case letters, digits and . _ -",
            }
        ));
    }
    Ok(())
}

/// A release version such as `1.4.0`, `2026.11` or `1.0.0-rc.1`.
///
/// Versions compare naturally: runs of digits as numbers, so `1.10` is newer
/// than `1.9`; a pre-release suffix (`-rc.1`) sorts before the release.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_token(s, "version", |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_' | '~' | '-')
        })?;
        Ok(Version(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before build metadata (`+...`) split at the first `-` into
    /// release and pre-release.
    fn parts(&self) -> (&str, Option<&str>) {
        let base = self.0.split('+').next().unwrap_or_default();
        match base.split_once('-') {
            Some((release, pre)) => (release, Some(pre)),
            None => (base, None),
        }
    }
}

/// Compares two strings with digit runs compared as numbers.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let an = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                let bn = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                let (da, db) = (
                    a[..an].trim_start_matches('0'),
                    b[..bn].trim_start_matches('0'),
                );
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[an..];
                b = &b[bn..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let (ra, pa) = self.parts();
        let (rb, pb) = other.parts();
        natural_cmp(ra, rb)
            .then_with(|| match (pa, pb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => natural_cmp(x, y),
            })
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lower-case token naming an appliance or a channel: `webapp`, `beta`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str, what: &str) -> Result<Self, String> {
        check_token(s, what, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
        })?;
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A relative path with `/` separators: no `..`, no `.`, no empty or
/// absolute parts, valid UTF-8. Safe to join under a root or a URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty path".into());
        }
        if s.starts_with('/') || s.starts_with('\\') {
            return Err(format!("`{}` is an absolute path", s.escape_debug()));
        }
        for part in s.split('/') {
            match part {
                "" | "." => {
                    return Err(format!(
                        "`{}` has an empty or `.` component",
                        s.escape_debug()
                    ));
                }
                ".." => {
                    return Err(format!(
                        "`{}` climbs out of its directory with `..`",
                        s.escape_debug()
                    ));
                }
                _ if part.contains('\0') => return Err("path contains a NUL byte".into()),
                _ => {}
            }
        }
        Ok(RelPath(s.to_owned()))
    }

    /// Joins a single path component (a file name, a version...).
    pub fn join(&self, part: &str) -> Result<Self, String> {
        Self::parse(&format!("{}/{}", self.0, part))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The largest text file of a site (a feed, the manifest, a key, a
/// signature) and the largest release.toml: `build` refuses to write one
/// larger, and `verify` refuses to read one larger, so the two agree.
pub const MAX_TEXT_FILE: u64 = 64 << 20;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The SHA-256 of bytes in memory.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        from_hex(hex).map(Sha256)
    }

    /// The Subresource Integrity form: `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        use base64::Engine;
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// Parses exactly `2 * N` hex digits.
fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    // Not `is_ascii`: `from_str_radix` below also takes a sign, so "+f" read as 0x0f.
    if hex.len() != 2 * N || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A SHA-512 digest: what virt-builder checks a template with. Computed
/// only for the images its index lists, in the same read as the SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha512(pub [u8; 64]);

impl Sha512 {
    /// The SHA-512 of bytes in memory.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Sha512(sha2::Sha512::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 128 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        from_hex(hex).map(Sha512)
    }
}

impl fmt::Debug for Sha512 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha512({})", self.to_hex())
    }
}

impl fmt::Display for Sha512 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A disk image format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Raw,
    Ova,
    Iso,
    /// A Parallels expanding disk (`.hds`), as qemu's `parallels` driver reads it.
    Parallels,
    /// A Xen/XCP-ng/XenServer VM export (`xe vm-export`): a tar led by `ova.xml`.
    Xva,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 9] = [
        ImageFormat::Qcow2,
        ImageFormat::Vmdk,
        ImageFormat::Vhd,
        ImageFormat::Vhdx,
        ImageFormat::Raw,
        ImageFormat::Ova,
        ImageFormat::Iso,
        ImageFormat::Parallels,
        ImageFormat::Xva,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhd => "vhd",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Raw => "raw",
            ImageFormat::Ova => "ova",
            ImageFormat::Iso => "iso",
            ImageFormat::Parallels => "parallels",
            ImageFormat::Xva => "xva",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown image format `{}`; expected one of {}",
                    s.escape_debug(),
                    Self::ALL.map(|f| f.as_str()).join(", ")
                )
            })
    }

    /// The format a file extension stands for (`img` is raw, `vpc` is vhd,
    /// `hds` is parallels), or the format's own name.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "img" => Some(ImageFormat::Raw),
            "vpc" => Some(ImageFormat::Vhd),
            "hds" => Some(ImageFormat::Parallels),
            other => Self::parse(other).ok(),
        }
    }

    /// The media type an enclosure of this format is served as.
    pub fn media_type(self) -> &'static str {
        crate::media::for_extension(self.as_str())
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compressed wrapper around an image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Xz,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_extension(ext: &str) -> Option<Self> {
        let ext = ext.to_ascii_lowercase();
        [Compression::Xz, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .find(|c| c.extension() == ext)
    }

    pub fn media_type(self) -> &'static str {
        crate::media::for_extension(self.extension())
    }

    /// The compression `as_str` names.
    pub fn parse(s: &str) -> Result<Self, String> {
        [Compression::Xz, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown compression `{}`", s.escape_debug()))
    }

    /// The file extension that marks this compression.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Gzip => "gz",
            Compression::Zstd => "zst",
        }
    }
}

/// Firmware an appliance boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
    Any,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::Any => "any",
        }
    }
}

/// What a release needs from the host that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    pub arch: Option<String>,
    pub min_memory_mib: Option<u64>,
    pub min_disk_gib: Option<u64>,
    pub min_cpus: Option<u64>,
    pub firmware: Option<Firmware>,
    pub hypervisors: Vec<String>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        *self == Requirements::default()
    }
}

/// One image file of a release, as found by the scan.
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// Where the file is read from.
    pub source: PathBuf,
    /// The same, resolved: no symbolic link, `.` or `..` in it.
    pub real: PathBuf,
    /// The file name, as published.
    pub name: String,
    pub format: ImageFormat,
    pub compression: Option<Compression>,
    pub arch: Option<String>,
    pub primary: bool,
    /// The path inside the site, also its name in SHA256SUMS:
    /// `images/<appliance>/<version>/<name>`.
    pub site_path: RelPath,
    /// The absolute download URL.
    pub url: Url,
    /// Size seen at scan time, used to schedule the largest files first.
    pub size_hint: u64,
    /// The file the scan vetted: every later open must land on it.
    pub file_id: FileId,
}

/// A file's identity on its file system: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl ImageSource {
    pub fn media_type(&self) -> &'static str {
        match self.compression {
            Some(c) => c.media_type(),
            None => self.format.media_type(),
        }
    }
}

/// The length and digests of a file, from one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    pub length: u64,
    pub sha256: Sha256,
    /// Only for the images the virt-builder index lists; `None` when it
    /// was not asked for.
    pub sha512: Option<Sha512>,
}

impl FileDigest {
    /// Whether two digests describe the same bytes: the same length and
    /// SHA-256, and the same SHA-512 where both know it.
    pub fn same_bytes(&self, other: &FileDigest) -> bool {
        self.length == other.length
            && self.sha256 == other.sha256
            && match (self.sha512, other.sha512) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A published image: where it comes from, what it hashes to, and what
/// its bytes say it is.
#[derive(Debug, Clone)]
pub struct Image {
    pub source: ImageSource,
    pub digest: FileDigest,
    pub info: ImageInfo,
    /// The Vagrant box made of it, with `[catalogs] vagrant`.
    pub vagrant_box: Option<VagrantBox>,
    /// The LXD fingerprint, for an image the simplestreams catalog offers
    /// to LXD (`[catalogs] simplestreams`).
    pub lxd: Option<Combined>,
}

/// A Vagrant box: a file of ours in the site, made from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VagrantBox {
    /// Its path in the site, also its name in SHA256SUMS.
    pub path: RelPath,
    pub digest: FileDigest,
}

/// A digest of a prefix followed by an image, from the image's one read:
/// LXD's image fingerprint, SHA-256 of its metadata tarball and then the
/// disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combined {
    /// SHA-256 of the prefix (the metadata tarball) it was taken with.
    pub prefix: Sha256,
    /// SHA-256 of the prefix and the image.
    pub sha256: Sha256,
}

/// What the inspection found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// The disk format, of the content inside any compression.
    pub format: ImageFormat,
    /// Whether the content showed its format (magic bytes); raw shows none.
    pub detected: bool,
    pub compression: Option<Compression>,
    /// The size of the virtual disk, when the format records it (for raw
    /// and ISO, the size of the data itself).
    pub virtual_size: Option<u64>,
    /// A format's variant: qcow2 `v2`/`v3`, vmdk's createType, vhd
    /// `fixed`/`dynamic`.
    pub subformat: Option<String>,
    /// qcow2's cluster size.
    pub cluster_size: Option<u64>,
    /// qcow2's compression type for compressed clusters (`zlib`, `zstd`).
    pub cluster_compression: Option<String>,
    /// An OVA's or an XVA's virtual machine.
    pub machine: Option<Machine>,
}

/// The virtual machine an OVA or an XVA holds, from its OVF descriptor or
/// its `ova.xml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub name: Option<String>,
    pub os: Option<String>,
    pub cpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub disks: Vec<OvaDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvaDisk {
    /// The disk file inside the OVA (an XVA's disks are block directories).
    pub file: Option<String>,
    /// Its virtual capacity in bytes.
    pub capacity: u64,
}

/// Everything known about a release but its images' digests.
#[derive(Debug, Clone)]
pub struct ReleaseInfo {
    /// The release.toml it was read from.
    pub notes_path: PathBuf,
    pub appliance: Name,
    pub version: Version,
    pub title: String,
    pub date: DateTime<Utc>,
    pub channel: Name,
    pub critical: bool,
    /// The notes as sanitized HTML.
    pub notes_html: String,
    /// The notes as written (Markdown), for catalogs that take plain text.
    pub notes_text: String,
    /// The libosinfo short id of the guest OS (`osinfo`), e.g. `debian12`.
    pub osinfo: Option<String>,
    pub requirements: Requirements,
    /// Images in cloud catalogs, in the order the notes give them.
    pub cloud_images: Vec<crate::cloud::CloudImage>,
}

impl ReleaseInfo {
    /// `webapp-1.4.0`: the page anchor.
    pub fn anchor(&self) -> String {
        format!("{}-{}", self.appliance, self.version)
    }

    /// The item's guid, stable across rebuilds and hosts.
    pub fn guid(&self) -> String {
        format!("vmcast:{}:{}", self.appliance, self.version)
    }
}

/// A release with its hashed images, primary first. It may have none when
/// its notes name cloud images.
#[derive(Debug, Clone)]
pub struct Release {
    pub info: ReleaseInfo,
    pub images: Vec<Image>,
    /// Its SBOMs and provenance, checked: the release's, then each image's.
    pub supply: Vec<crate::supply::SupplyFile>,
}

/// Per-appliance metadata from the config.
#[derive(Debug, Clone)]
pub struct Appliance {
    pub name: Name,
    pub title: String,
    pub description: Option<String>,
    /// Releases kept in the current feeds, over the site's `feed_items`.
    pub feed_items: Option<usize>,
    /// Base URLs that also serve this appliance's images, over the site's.
    pub mirrors: Option<Vec<url::Url>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_naturally() {
        assert!(v("1.10.0") > v("1.9.3"));
        assert!(v("1.4.0") > v("1.4.0-rc.2"));
        assert!(v("1.4.0-rc.10") > v("1.4.0-rc.9"));
        assert!(v("2026.11") > v("2026.2"));
        assert!(v("1.0") < v("1.0.1"));
        assert_eq!(v("1.0+b1").cmp(&v("1.0+b1")), Ordering::Equal);
    }

    #[test]
    fn versions_reject_path_characters() {
        assert!(Version::parse("1.0/2").is_err());
        assert!(Version::parse("..").is_err());
        assert!(Version::parse("").is_err());
        assert!(Version::parse("-1").is_err());
        assert!(Version::parse("1.0 beta").is_err());
    }

    #[test]
    fn rel_paths_refuse_escapes() {
        assert!(RelPath::parse("a/b.qcow2").is_ok());
        assert!(RelPath::parse("../a").is_err());
        assert!(RelPath::parse("a/../../b").is_err());
        assert!(RelPath::parse("/etc/passwd").is_err());
        assert!(RelPath::parse("a//b").is_err());
        assert!(RelPath::parse("./a").is_err());
        assert!(RelPath::parse("").is_err());
    }

    #[test]
    fn digests_print_as_hex_and_sri() {
        let d = Sha256([0xab; 32]);
        assert_eq!(d.to_hex(), "ab".repeat(32));
        assert_eq!(Sha256::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Sha256::from_hex("ab"), None);
        assert_eq!(Sha256::from_hex(&"zz".repeat(32)), None);
        assert_eq!(Sha256::from_hex(&"+f".repeat(32)), None);
        let d512 = Sha512([0xcd; 64]);
        assert_eq!(Sha512::from_hex(&d512.to_hex()), Some(d512));
        assert_eq!(Sha512::from_hex(&d.to_hex()), None);
        assert_eq!(
            d.to_sri(),
            "sha256-q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
        );
    }
}
