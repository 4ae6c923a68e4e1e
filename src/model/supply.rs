//! SBOMs and provenance as published: what a file is, how it is signed,
//! and where it is. Reading and checking them is the `supply` stage's.

use url::Url;

use super::{FileDigest, FileName, RelPath};

/// What a file is declared to be, by its name or by the key naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sbom,
    Provenance,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sbom => "sbom",
            Kind::Provenance => "provenance",
        }
    }
}

/// What a supply-chain file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Spdx23,
    CycloneDx15,
    CycloneDx16,
    InToto,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Spdx23,
        Format::CycloneDx15,
        Format::CycloneDx16,
        Format::InToto,
    ];

    /// Its name in the feed.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Spdx23 => "spdx-2.3",
            Format::CycloneDx15 => "cyclonedx-1.5",
            Format::CycloneDx16 => "cyclonedx-1.6",
            Format::InToto => "in-toto",
        }
    }

    pub fn parse(s: &str) -> std::result::Result<Format, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown supply-chain format {s:?}"))
    }

    /// For people: `SPDX 2.3`.
    pub fn title(self) -> &'static str {
        match self {
            Format::Spdx23 => "SPDX 2.3",
            Format::CycloneDx15 => "CycloneDX 1.5",
            Format::CycloneDx16 => "CycloneDX 1.6",
            Format::InToto => "in-toto",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Format::InToto => Kind::Provenance,
            _ => Kind::Sbom,
        }
    }

    /// The media type it is served as: each format's registered one, and
    /// the in-toto bundle's (one envelope or Statement is a bundle of one).
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Spdx23 => "application/spdx+json",
            Format::CycloneDx15 | Format::CycloneDx16 => "application/vnd.cyclonedx+json",
            Format::InToto => "application/vnd.in-toto.bundle",
        }
    }
}

/// How a provenance file is signed, as far as this build could tell.
/// Ordered from weakest: a file's status is its weakest Statement's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signing {
    /// A bare Statement, or an envelope without signatures.
    Unsigned,
    /// Signed, but no `provenance_keys` were configured to check it with.
    Unverified,
    /// Signed by these listed keys (their ids), and the signatures hold.
    Verified(Vec<String>),
}

impl Signing {
    /// Its name in the feed's `signature` attribute.
    pub fn as_str(&self) -> &'static str {
        match self {
            Signing::Unsigned => "none",
            Signing::Unverified => "unverified",
            Signing::Verified(_) => "verified",
        }
    }

    pub fn key_ids(&self) -> &[String] {
        match self {
            Signing::Verified(ids) => ids,
            _ => &[],
        }
    }

    /// From the feed's `signature` and `keyId` attributes.
    pub fn parse(signature: &str, key_ids: Option<&str>) -> std::result::Result<Signing, String> {
        match (signature, key_ids) {
            ("none", None) => Ok(Signing::Unsigned),
            ("unverified", None) => Ok(Signing::Unverified),
            ("verified", Some(ids)) if !ids.trim().is_empty() => Ok(Signing::Verified(
                ids.split_whitespace().map(str::to_owned).collect(),
            )),
            _ => Err(format!(
                "signature {signature:?} with keyId {key_ids:?}: expected none, unverified, or \
                 verified with key ids"
            )),
        }
    }
}

/// A published supply-chain file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SupplyFile {
    pub format: Format,
    pub name: FileName,
    /// The image it is about; none for the whole release.
    pub image: Option<FileName>,
    pub site_path: RelPath,
    pub url: Url,
    pub digest: FileDigest,
    /// For provenance: how it is signed.
    pub signing: Option<Signing>,
}
