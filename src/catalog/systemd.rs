//! For systemd's own image tools (`[catalogs] systemd`). systemd-pull and
//! systemd-sysupdate read a `SHA256SUMS` of bare file names, and its
//! detached OpenPGP signature `SHA256SUMS.gpg`, from the directory of the
//! image itself, and check the signature with the keyring
//! `/etc/systemd/import-pubring.gpg`. So every directory of images gets
//! both, the key is published as that keyring, and each appliance with a
//! flat directory gets the sysupdate transfer files that find its versions.
//!
//! The manifests and transfers are a function of the releases and the
//! site's URL alone ([`expected`]): the build writes them, and `verify`
//! makes them again from the signed feeds and compares them byte for byte.
//! The root `SHA256SUMS` lists them all.

use std::collections::BTreeMap;

use url::Url;

use super::CatalogFile;
use crate::error::{Error, Result};
use crate::media::{DIR_MANIFEST_SIG, IMPORT_PUBRING, MANIFEST};
use crate::model::{ImageLayout, Name, Release, Sha256};
use crate::render::{Site, release_files, served_from, transfers};
use crate::sums;

/// What systemd's tools read of a site, but the signatures and the key.
pub struct Expected {
    /// Each directory of images and the text of its `SHA256SUMS`.
    pub manifests: Vec<(String, String)>,
    /// Each appliance with a flat directory, and its transfer files.
    pub transfers: Vec<(Name, Vec<TransferFile>)>,
    /// What no manifest or transfer lists, and why.
    pub skipped: Vec<String>,
}

/// A transfer file, and how many versions it finds.
pub struct TransferFile {
    pub path: String,
    pub text: String,
    pub versions: usize,
}

/// The manifests and transfers of the releases of a site at `base`: each
/// directory of images that the site serves lists its files by bare name,
/// and each appliance whose directory `images/<appliance>/` holds files
/// (the flat layout) has its transfers. Only images are listed (see
/// `ReleaseFile::image`); images served from another host are left out,
/// with the reason.
pub fn expected(releases: &[Release], base: &Url) -> Expected {
    let mut skipped = Vec::new();
    let mut dirs: BTreeMap<&str, Vec<(&str, Sha256)>> = BTreeMap::new();
    for file in release_files(releases).filter(|f| f.image) {
        let Some(dir) = file.path.parent().filter(|d| d.starts_with("images/")) else {
            continue;
        };
        if !served_from(base, file.path, file.url) {
            skipped.push(format!(
                "{}: served from {}, not from the site, so no SHA256SUMS lies beside it",
                file.path,
                file.url.map_or_else(String::new, |u| u.to_string())
            ));
            continue;
        }
        dirs.entry(dir)
            .or_default()
            .push((file.path.file_name(), file.sha256));
    }
    let mut appliances: Vec<&Name> = releases.iter().map(|r| &r.info.appliance).collect();
    appliances.sort();
    appliances.dedup();
    let mut flat = Vec::new();
    for appliance in appliances {
        if !dirs.contains_key(format!("images/{appliance}").as_str()) {
            continue;
        }
        let plan = transfers(releases, appliance, base);
        let files = plan
            .transfers
            .iter()
            .map(|t| TransferFile {
                path: t.path.clone(),
                text: t.text(appliance),
                versions: releases
                    .iter()
                    .filter(|r| r.info.appliance == *appliance)
                    .filter(|r| {
                        r.images.iter().any(|i| {
                            let name = i.source.name.as_str();
                            i.source.site_path.parent() == Some(&format!("images/{appliance}"))
                                && t.transfer
                                    .patterns
                                    .iter()
                                    .any(|p| crate::sysupdate::match_version(p, name).is_some())
                        })
                    })
                    .count(),
            })
            .collect();
        flat.push((appliance.clone(), files));
        skipped.extend(plan.skipped);
    }
    Expected {
        manifests: dirs
            .into_iter()
            .map(|(dir, entries)| (dir.to_owned(), sums::manifest(entries)))
            .collect(),
        transfers: flat,
        skipped,
    }
}

/// What the catalog wrote, and what it could not serve and why.
pub struct Tree {
    pub files: Vec<CatalogFile>,
    pub skipped: Vec<String>,
}

pub fn render(site: &Site) -> Result<Tree> {
    let key = site.openpgp.ok_or_else(|| {
        Error::other("[catalogs] systemd needs an OpenPGP key to sign SHA256SUMS.gpg")
    })?;
    let Expected {
        manifests,
        transfers,
        mut skipped,
    } = expected(site.releases, &site.config.base_url);
    let mut files = Vec::new();
    for (dir, manifest) in manifests {
        let signature = key
            .signer
            .detach_sign(manifest.as_bytes(), site.build_time)?;
        files.push(CatalogFile {
            path: format!("{dir}/{MANIFEST}"),
            bytes: manifest.into_bytes(),
            signed: false,
        });
        files.push(CatalogFile {
            path: format!("{dir}/{DIR_MANIFEST_SIG}"),
            bytes: signature,
            signed: false,
        });
    }
    files.push(CatalogFile {
        path: IMPORT_PUBRING.to_owned(),
        bytes: key.signer.public_keyring()?,
        signed: false,
    });
    let mut appliances: Vec<&Name> = site.releases.iter().map(|r| &r.info.appliance).collect();
    appliances.sort();
    appliances.dedup();
    for appliance in appliances {
        let flat = site.config.image_layout_of(appliance.as_str()) == ImageLayout::Flat;
        let has_transfer = transfers.iter().any(|(a, _)| a == appliance);
        match (flat, has_transfer) {
            (false, false) => skipped.push(format!(
                "{appliance}: no sysupdate transfer file: its images lie in a directory per \
                 version, and systemd-sysupdate reads every version from one directory \
                 (image_layout = \"flat\")"
            )),
            (false, true) => skipped.push(format!(
                "{appliance}: its new releases go to a directory per version, but images/\
                 {appliance}/ still holds versions its transfer files find: hosts that follow \
                 them see no newer release (image_layout = \"flat\" again, or tell them)"
            )),
            (true, _) => {}
        }
    }
    for (_, written) in transfers {
        files.extend(written.into_iter().map(|t| CatalogFile {
            path: t.path,
            bytes: t.text.into_bytes(),
            signed: false,
        }));
    }
    Ok(Tree { files, skipped })
}
