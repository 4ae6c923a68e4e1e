//! The files a feed vouches for, read byte for byte: images (`--images`)
//! and their Vagrant boxes and zsync control files, SBOMs and provenance. Each is fetched only
//! from a URL that passed the URL check, and never read past its declared
//! length.

use std::path::Path;

use url::Url;

use super::Verifier;
use crate::model::{FileDigest, MAX_TEXT_FILE, RelPath, Sha256, SupplyKind};
use crate::site::CheckKind;
use crate::site::Problem;
use crate::site::feed::FeedDoc;
use crate::site::urls::SiteUrls;

impl Verifier<'_> {
    /// Reads every SBOM and provenance file (small: whole, within the
    /// timeout), from the local site or its accepted URL: its length and
    /// SHA-256 must be the feed's, its content the format the feed names,
    /// and a provenance file's subjects must include the SHA-256 the feed
    /// gives each image it is about.
    pub(super) fn check_supply(&mut self, doc: &FeedDoc, site_urls: &SiteUrls) {
        for item in &doc.items {
            for file in &item.release.supply {
                let Some(url) = site_urls.accept(file.url.as_str()) else {
                    self.fail(
                        CheckKind::Supply,
                        Problem::OutsideSite,
                        format!(
                            "{}: not fetched: its URL {} is outside the site",
                            file.site_path, file.url
                        ),
                    );
                    continue;
                };
                let loc = self.fetcher.file_or_url(&file.site_path, &url);
                let length = file.digest.length;
                let data = match self.fetcher.fetch(&loc, length.min(MAX_TEXT_FILE)) {
                    Ok(d) => d,
                    Err(m) => {
                        self.fail(
                            CheckKind::Supply,
                            m.problem,
                            format!("{}: {m}", file.site_path),
                        );
                        continue;
                    }
                };
                let digest = Sha256::of(&data);
                if data.len() as u64 != length || digest != file.digest.sha256 {
                    self.fail(
                        CheckKind::Supply,
                        Problem::Mismatch,
                        format!(
                            "{}: {} bytes with SHA-256 {digest}, where the feed says {length} \
                             bytes with SHA-256 {}",
                            file.site_path,
                            data.len(),
                            file.digest.sha256
                        ),
                    );
                    continue;
                }
                let targets: Vec<(&str, Sha256)> = item
                    .release
                    .images
                    .iter()
                    .filter(|i| file.image.as_ref().is_none_or(|n| *n == i.source.name))
                    .map(|i| (i.source.name.as_str(), i.digest.sha256))
                    .collect();
                let kind = file.format.kind();
                let examined = crate::supply::examine(
                    Path::new(file.site_path.as_str()),
                    &file.name,
                    kind,
                    &data,
                    &[],
                    &targets,
                );
                match examined {
                    Ok((format, _)) if format != file.format => self.fail(
                        CheckKind::Supply,
                        Problem::Mismatch,
                        format!(
                            "{}: holds {}, where the feed says {}",
                            file.site_path,
                            format.as_str(),
                            file.format.as_str()
                        ),
                    ),
                    Ok(_) => self.pass(
                        CheckKind::Supply,
                        format!(
                            "{}: {length} bytes, SHA-256 matches, {}{}",
                            file.site_path,
                            file.format.as_str(),
                            match kind {
                                SupplyKind::Provenance => {
                                    format!(", about {}", describe_targets(&targets))
                                }
                                SupplyKind::Sbom => String::new(),
                            }
                        ),
                    ),
                    Err(e) => self.fail(CheckKind::Supply, Problem::Mismatch, e.to_string()),
                }
            }
        }
    }

    /// Reads every file the feed names as made of an image (a Vagrant box,
    /// a zsync control file), which the items check has held against the
    /// manifest.
    pub(super) fn check_made(&mut self, doc: &FeedDoc, base: &Url, site_urls: &SiteUrls) {
        for item in &doc.items {
            for image in &item.release.images {
                if let Some(b) = &image.vagrant_box {
                    let url = crate::config::join_url(base, b.path.as_str());
                    self.check_made_file(&b.path, &b.digest, url.as_str(), site_urls);
                }
                if let Some(z) = &image.zsync {
                    self.check_made_file(&z.path, &z.digest, z.url.as_str(), site_urls);
                }
            }
        }
    }

    /// Reads one file made of an image, from its URL if it was accepted.
    fn check_made_file(
        &mut self,
        path: &RelPath,
        digest: &FileDigest,
        url: &str,
        site_urls: &SiteUrls,
    ) {
        let (length, sha256) = (digest.length, digest.sha256);
        let Some(accepted) = site_urls.accept(url) else {
            self.fail(
                CheckKind::Images,
                Problem::OutsideSite,
                format!("{path}: not fetched: its URL {url} is outside the site"),
            );
            return;
        };
        match self
            .fetcher
            .read_image(path, length, false, &accepted, true)
        {
            Ok((digest, _, read)) if digest == sha256 => {
                self.report.images_read += read;
                self.pass(
                    CheckKind::Images,
                    format!("{path}: {length} bytes, SHA-256 matches"),
                );
            }
            Ok((digest, _, read)) => {
                self.report.images_read += read;
                self.fail(
                    CheckKind::Images,
                    Problem::Mismatch,
                    format!(
                        "{path}: SHA-256 mismatch: the feed says {sha256}, the file \
                         hashes to {digest}"
                    ),
                );
            }
            Err(m) => self.fail(CheckKind::Images, m.problem, format!("{path}: {m}")),
        }
    }

    /// Reads every image from its URL, and only if that URL was accepted.
    pub(super) fn check_images(&mut self, doc: &FeedDoc, site_urls: &SiteUrls) {
        for item in &doc.items {
            for image in &item.release.images {
                let path = &image.source.site_path;
                let Some(url) = site_urls.accept(image.source.url.as_str()) else {
                    self.fail(
                        CheckKind::Images,
                        Problem::OutsideSite,
                        format!(
                            "{path}: not fetched: its URL {} is outside the site",
                            image.source.url
                        ),
                    );
                    continue;
                };
                let want = &image.digest;
                let read =
                    self.fetcher
                        .read_image(path, want.length, want.sha512.is_some(), &url, true);
                let (sha256, sha512, read) = match read {
                    Ok(found) => found,
                    Err(m) => {
                        self.fail(CheckKind::Images, m.problem, format!("{path}: {m}"));
                        continue;
                    }
                };
                self.report.images_read += read;
                if sha256 != want.sha256 {
                    self.fail(
                        CheckKind::Images,
                        Problem::Mismatch,
                        format!(
                            "{path}: SHA-256 mismatch: the feed says {}, the file hashes to \
                             {sha256}",
                            want.sha256
                        ),
                    );
                } else if sha512 != want.sha512 {
                    let hex = |d: Option<crate::model::Sha512>| d.map(|d| d.to_hex());
                    self.fail(
                        CheckKind::Images,
                        Problem::Mismatch,
                        format!(
                            "{path}: SHA-512 mismatch: the feed says {}, the file hashes to {}",
                            hex(want.sha512).unwrap_or_default(),
                            hex(sha512).unwrap_or_default()
                        ),
                    );
                } else {
                    self.pass(
                        CheckKind::Images,
                        format!(
                            "{path}: {} bytes, {}",
                            want.length,
                            match sha512 {
                                Some(_) => "SHA-256 and SHA-512 match",
                                None => "SHA-256 matches",
                            }
                        ),
                    );
                }
            }
        }
    }
}

/// The images a provenance file was checked against, for the report.
fn describe_targets(targets: &[(&str, Sha256)]) -> String {
    targets
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}
