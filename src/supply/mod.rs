//! Supply-chain files published with a release: SBOMs (SPDX 2.3 JSON,
//! CycloneDX 1.5/1.6 JSON) and provenance (in-toto attestations, bare or
//! in DSSE envelopes).
//!
//! Each is read once, checked to be what it claims ([`examine`]), and
//! published beside its image with its length and SHA-256. A provenance
//! file must be about the image it is attached to: one of its Statements'
//! subjects must have the image's SHA-256. Signed envelopes are verified
//! against `provenance_keys` ([`keys`]).

pub mod intoto;
mod json;
pub mod keys;
mod sbom;

use std::path::{Path, PathBuf};

use url::Url;

use crate::error::{Error, Result};
use crate::model::{FileDigest, FileId, FileName, RelPath, Sha256};
pub use crate::model::{Signing, SupplyFile, SupplyFormat as Format, SupplyKind as Kind};

use json::Doc;
use keys::ProvenanceKey;

/// The file name endings picked up beside an image, with the kind each
/// declares: the names SBOM tools, in-toto and SLSA builders give their
/// output (`<image>.spdx.json`, `<image>.intoto.jsonl`, ...).
pub const SUFFIXES: [(&str, Kind); 6] = [
    (".spdx.json", Kind::Sbom),
    (".cdx.json", Kind::Sbom),
    (".bom.json", Kind::Sbom),
    (".sbom.json", Kind::Sbom),
    (".intoto.jsonl", Kind::Provenance),
    (".intoto.json", Kind::Provenance),
];

/// The kind a file's name declares, and the part of the name before the
/// suffix.
pub fn kind_of_name(name: &str) -> Option<(Kind, &str)> {
    SUFFIXES.iter().find_map(|(suffix, kind)| {
        name.strip_suffix(suffix)
            .filter(|stem| !stem.is_empty())
            .map(|stem| (*kind, stem))
    })
}

/// A supply-chain file the scan found, not read yet.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Where it is read from.
    pub source: PathBuf,
    /// The same, resolved.
    pub real: PathBuf,
    pub file_id: FileId,
    /// The file name, as published.
    pub name: FileName,
    pub kind: Kind,
    /// The image it is about; none for the whole release.
    pub image: Option<FileName>,
    /// `images/<appliance>/<version>/<name>`, also its name in SHA256SUMS.
    pub site_path: RelPath,
    pub url: Url,
}

/// Reads a planned file through the descriptor the scan vetted, checks
/// it against the images it is about (`targets`: name and SHA-256), and
/// returns it with the bytes to publish.
pub fn load(
    planned: &Planned,
    targets: &[(&str, Sha256)],
    keys: &[ProvenanceKey],
) -> Result<(SupplyFile, Vec<u8>)> {
    let (file, meta) = crate::fsutil::open_vetted(&planned.real, &planned.source, planned.file_id)?;
    let bytes = crate::fsutil::read_open(
        file,
        &planned.source,
        crate::model::MAX_TEXT_FILE,
        meta.len(),
    )?;
    let (format, signing) = examine(
        &planned.source,
        &planned.name,
        planned.kind,
        &bytes,
        keys,
        targets,
    )?;
    let digest = FileDigest {
        length: bytes.len() as u64,
        sha256: Sha256::of(&bytes),
        sha512: None,
    };
    Ok((
        SupplyFile {
            format,
            name: planned.name.clone(),
            image: planned.image.clone(),
            site_path: planned.site_path.clone(),
            url: planned.url.clone(),
            digest,
            signing,
        },
        bytes,
    ))
}

/// Checks that `bytes` (of the file `name`, shown as `path`) are what
/// `kind` and the name's suffix say, and for provenance that each of
/// `targets` is a subject of one of its Statements. Returns its format and,
/// for provenance, how the Statements about the targets are signed
/// (verified against `keys`; with none, signed ones are unverified).
pub fn examine(
    path: &Path,
    name: &str,
    kind: Kind,
    bytes: &[u8],
    keys: &[ProvenanceKey],
    targets: &[(&str, Sha256)],
) -> Result<(Format, Option<Signing>)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format_args!("not UTF-8 JSON (invalid byte at {})", e.valid_up_to()),
        )
    })?;
    let doc = Doc {
        path,
        text,
        first_line: 1,
    };
    match kind {
        Kind::Sbom => {
            let format = sbom::check(&doc)?;
            // The two names that say which format: `.spdx.json` and `.cdx.json`.
            let says_spdx = if name.ends_with(".spdx.json") {
                Some(true)
            } else if name.ends_with(".cdx.json") {
                Some(false)
            } else {
                None
            };
            if let Some(spdx) = says_spdx
                && spdx != (format == Format::Spdx23)
            {
                return Err(Error::file(
                    path,
                    format_args!(
                        "its name says {} but its content is {}; rename it",
                        if spdx { "SPDX" } else { "CycloneDX" },
                        format.title()
                    ),
                ));
            }
            Ok((format, None))
        }
        Kind::Provenance => {
            let statements = intoto::read(&doc, name.ends_with(".jsonl"), keys)?;
            let signing = check_subjects(path, &statements, targets)?;
            Ok((Format::InToto, Some(signing)))
        }
    }
}

/// Each target must be a subject of some Statement: a provenance file
/// about other bytes is refused, naming both digests. Returns the weakest
/// signing among the Statements about the targets.
fn check_subjects(
    path: &Path,
    statements: &[intoto::Statement],
    targets: &[(&str, Sha256)],
) -> Result<Signing> {
    let mut weakest: Option<Signing> = None;
    for (image, digest) in targets {
        let about: Vec<&intoto::Statement> =
            statements.iter().filter(|s| s.names(digest)).collect();
        if about.is_empty() {
            let found: Vec<String> = statements
                .iter()
                .flat_map(|s| &s.subjects)
                .map(|(name, d)| match d {
                    Some(d) => format!("{name} {d}"),
                    None => format!("{name} (no sha256)"),
                })
                .collect();
            return Err(Error::file(
                path,
                format_args!(
                    "the provenance is about other bytes: {image} has SHA-256 {digest}, but \
                     the subjects are: {}. Attach the provenance of this build of {image}",
                    found.join(", ")
                ),
            ));
        }
        for s in about {
            let signing = match (&s.signing, &weakest) {
                (Signing::Verified(a), Some(Signing::Verified(b))) => {
                    let mut ids: Vec<String> = a.iter().chain(b).cloned().collect();
                    ids.sort();
                    ids.dedup();
                    Signing::Verified(ids)
                }
                (this, Some(w)) if w < this => w.clone(),
                (this, _) => this.clone(),
            };
            weakest = Some(signing);
        }
    }
    Ok(weakest.unwrap_or(Signing::Unsigned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_declare_the_kind() {
        assert_eq!(
            kind_of_name("a.qcow2.spdx.json"),
            Some((Kind::Sbom, "a.qcow2"))
        );
        assert_eq!(
            kind_of_name("a.intoto.jsonl"),
            Some((Kind::Provenance, "a"))
        );
        assert_eq!(kind_of_name(".cdx.json"), None);
        assert_eq!(kind_of_name("a.json"), None);
    }

    #[test]
    fn the_weakest_signing_wins() {
        assert!(Signing::Unsigned < Signing::Unverified);
        assert!(Signing::Unverified < Signing::Verified(vec!["a".into()]));
        assert_eq!(
            Signing::parse("verified", Some("a b")),
            Ok(Signing::Verified(vec!["a".into(), "b".into()]))
        );
        assert!(Signing::parse("verified", None).is_err());
    }
}
