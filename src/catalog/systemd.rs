//! For systemd's own image tools (`[catalogs] systemd`). systemd-pull and
//! systemd-sysupdate read a `SHA256SUMS` of bare file names, and its
//! detached OpenPGP signature `SHA256SUMS.gpg`, from the directory of the
//! image itself, and check the signature with the keyring
//! `/etc/systemd/import-pubring.gpg`. So every directory of images gets
//! both, the key is published as that keyring, and each appliance of the
//! flat layout gets the sysupdate transfer files that find its versions.
//!
//! The root `SHA256SUMS` lists all of these, so the minisign signature
//! vouches for them as for every other file; each directory's manifest
//! agrees with it line by line (`verify` checks).

use std::collections::BTreeMap;

use super::CatalogFile;
use crate::error::{Error, Result};
use crate::media::{DIR_MANIFEST_SIG, IMPORT_PUBRING, MANIFEST};
use crate::model::{ImageLayout, Sha256};
use crate::render::{Site, release_files};
use crate::sums;

/// What the catalog wrote, and what it could not serve and why.
pub struct Tree {
    pub files: Vec<CatalogFile>,
    pub skipped: Vec<String>,
}

pub fn render(site: &Site) -> Result<Tree> {
    let key = site.openpgp.ok_or_else(|| {
        Error::other("[catalogs] systemd needs an OpenPGP key to sign SHA256SUMS.gpg")
    })?;
    let mut skipped = Vec::new();
    // Each directory's files by name, from the one list the root manifest
    // is made of; only files served from the site, beside their manifest.
    let mut dirs: BTreeMap<&str, Vec<(&str, Sha256)>> = BTreeMap::new();
    for file in release_files(site.releases) {
        let Some(dir) = file.path.parent().filter(|d| d.starts_with("images/")) else {
            continue;
        };
        if file
            .url
            .is_some_and(|url| *url != site.config.site_url(file.path.as_str()))
        {
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
    let mut files = Vec::new();
    for (dir, entries) in dirs {
        let manifest = sums::manifest(entries);
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
    let mut appliances: Vec<_> = site.releases.iter().map(|r| &r.info.appliance).collect();
    appliances.sort();
    appliances.dedup();
    for appliance in appliances {
        if site.config.image_layout_of(appliance.as_str()) != ImageLayout::Flat {
            skipped.push(format!(
                "{appliance}: no sysupdate transfer file: its images lie in a directory per \
                 version, and systemd-sysupdate reads every version from one directory \
                 (image_layout = \"flat\")"
            ));
            continue;
        }
        let plan = crate::render::transfers(site, appliance);
        let title = site.config.appliance(appliance).title;
        for planned in plan.transfers {
            files.push(CatalogFile {
                path: planned.path,
                bytes: planned.transfer.to_text(title.as_str()).into_bytes(),
                signed: false,
            });
        }
        skipped.extend(plan.skipped);
    }
    Ok(Tree { files, skipped })
}
