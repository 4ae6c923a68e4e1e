//! Images: their formats, where one comes from, and what its bytes say.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use super::{Arch, Combined, FileDigest, FileName, RelPath, Seen};

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

/// One image file of a release, as found by the scan.
#[derive(Debug, Clone, Hash)]
pub struct ImageSource {
    /// Where the file is read from.
    pub source: PathBuf,
    /// The same, resolved: no symbolic link, `.` or `..` in it.
    pub real: PathBuf,
    /// The file name, as published: the last segment of `site_path`.
    pub name: FileName,
    pub format: ImageFormat,
    pub compression: Option<Compression>,
    pub arch: Option<Arch>,
    pub primary: bool,
    /// The path inside the site, also its name in SHA256SUMS:
    /// `images/<appliance>/<version>/<name>`.
    pub site_path: RelPath,
    /// The absolute download URL.
    pub url: Url,
    /// The file the scan vetted, as its stat saw it: every later open
    /// must land on that file (`seen.state.id()`), and its size then
    /// schedules the largest files first. [`Seen::unscanned`] for an image
    /// no scan found (one read from a feed).
    pub seen: Seen,
}

impl ImageSource {
    pub fn media_type(&self) -> &'static str {
        match self.compression {
            Some(c) => c.media_type(),
            None => self.format.media_type(),
        }
    }

    /// Where its zsync control file lies in the site, beside it.
    pub fn zsync_path(&self) -> RelPath {
        self.site_path.with_suffix(crate::media::ZSYNC_SUFFIX)
    }

    /// Where its zsync control file is downloaded from, beside it: the
    /// suffix ends the URL's path. (A build's image URLs have no query or
    /// fragment; one a feed gives keeps its own.)
    pub fn zsync_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!(
            "{}{}",
            self.url.path(),
            crate::media::ZSYNC_SUFFIX
        ));
        url
    }
}

/// A published image: where it comes from, what it hashes to, and what
/// its bytes say it is.
#[derive(Debug, Clone, Hash)]
pub struct Image {
    pub source: ImageSource,
    pub digest: FileDigest,
    pub info: ImageInfo,
    /// The Vagrant box made of it, with `[catalogs] vagrant`.
    pub vagrant_box: Option<VagrantBox>,
    /// The LXD fingerprint, for an image the simplestreams catalog offers
    /// to LXD (`[catalogs] simplestreams`).
    pub lxd: Option<Combined>,
    /// Its zsync control file (`zsync = true`), for delta downloads.
    pub zsync: Option<ZsyncFile>,
}

/// A zsync control file: a file of ours beside its image, at the image's
/// path and URL with `.zsync` added.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZsyncFile {
    /// Its path in the site, also its name in SHA256SUMS.
    pub path: RelPath,
    pub url: Url,
    pub digest: FileDigest,
}

/// A Vagrant box: a file of ours in the site, made from an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VagrantBox {
    /// Its path in the site, also its name in SHA256SUMS.
    pub path: RelPath,
    pub digest: FileDigest,
}

/// What the inspection found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// The disk format, of the content inside any compression.
    pub format: ImageFormat,
    /// Whether the content showed its format (magic bytes); raw shows none.
    pub detected: bool,
    // The hash cache's entry is all that serializes this, with postcard;
    // a cache of an older format, JSON, left out what an image does not
    // have, which reads as `None`.
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub name: Option<String>,
    pub os: Option<String>,
    pub cpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub disks: Vec<OvaDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct OvaDisk {
    /// The disk file inside the OVA (an XVA's disks are block directories).
    pub file: Option<String>,
    /// Its virtual capacity in bytes.
    pub capacity: u64,
}
