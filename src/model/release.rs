//! Releases: what the notes say, with the images and files published.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{Arch, Image, Line, Name, SupplyFile, Version};
use crate::cloud::Provider;

/// Firmware an appliance boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Hash)]
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

    /// The firmware `as_str` names.
    pub fn parse(s: &str) -> Result<Self, String> {
        [Firmware::Bios, Firmware::Uefi, Firmware::Any]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown firmware `{}`", s.escape_debug()))
    }
}

/// What a release needs from the host that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Requirements {
    pub arch: Option<Arch>,
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

/// Everything known about a release but its images' digests.
#[derive(Debug, Clone, Hash)]
pub struct ReleaseInfo {
    /// The release.toml it was read from.
    pub notes_path: PathBuf,
    pub appliance: Name,
    pub version: Version,
    pub title: Line,
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
    pub cloud_images: Vec<CloudImage>,
}

/// An image in a cloud provider's catalog, checked by
/// [`Provider::check_region`] and [`Provider::canonical_id`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloudImage {
    pub provider: Provider,
    pub region: Option<String>,
    pub id: String,
    pub arch: Option<Arch>,
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
#[derive(Debug, Clone, Hash)]
pub struct Release {
    pub info: ReleaseInfo,
    pub images: Vec<Image>,
    /// Its SBOMs and provenance, checked: the release's, then each image's.
    pub supply: Vec<SupplyFile>,
}

/// Per-appliance metadata from the config.
#[derive(Debug, Clone)]
pub struct Appliance {
    pub name: Name,
    pub title: Line,
    pub description: Option<String>,
    /// Releases kept in the current feeds, over the site's `feed_items`.
    pub feed_items: Option<usize>,
    /// Base URLs that also serve this appliance's images, over the site's.
    pub mirrors: Option<Vec<url::Url>>,
    /// Where its images lie in the site, over the site's `image_layout`.
    pub image_layout: Option<ImageLayout>,
}

/// Where a release's files lie in the site, under `images/<appliance>/`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageLayout {
    /// `images/<appliance>/<version>/<file>`: a directory per release, so
    /// two releases may publish files of the same name.
    #[default]
    Versioned,
    /// `images/<appliance>/<file>`: every version in one directory, as
    /// systemd-sysupdate reads it; each file name holds its version.
    Flat,
}

impl ImageLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageLayout::Versioned => "versioned",
            ImageLayout::Flat => "flat",
        }
    }
}
