//! The feed's history and its copies: RFC 5005 archives, each signed in
//! this build and listed in the manifest, and the mirrors that serve the
//! images.

use std::collections::BTreeSet;

use url::Url;

use super::{Step, Verifier, site_urls};
use crate::media::MANIFEST;
use crate::model::RelPath;
use crate::sign::PublicKey;
use crate::site::Problem;
use crate::site::feed::{FeedDoc, same_url};
use crate::site::urls::SiteUrls;
use crate::site::{CheckKind, PublishedSite};
use crate::trust::BuildStamp;

impl Verifier<'_> {
    /// Follows the feed's prev-archive links (RFC 5005) to the oldest
    /// archive: each must be signed by the same key in the same build,
    /// listed in the manifest, an archive document, and its items must
    /// agree with the manifest. With `--all`, their files are read as the
    /// options ask. Returns them parsed, newest first.
    pub(super) fn check_archives(
        &mut self,
        site: &PublishedSite,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<Vec<FeedDoc>> {
        let base = &site.base_url;
        let mut docs: Vec<FeedDoc> = Vec::new();
        let mut next = site.feed.channel.prev_archive.clone();
        let mut seen = BTreeSet::new();
        while let Some(href) = next.take() {
            let Some(rel) = archive_path(&href, base) else {
                return self.stop(
                    CheckKind::Archive,
                    Problem::OutsideSite,
                    format!("prev-archive {href} is not a file of the site"),
                );
            };
            let name = rel.as_str().to_owned();
            if !seen.insert(name.clone()) {
                return self.stop(
                    CheckKind::Archive,
                    Problem::Inconsistent,
                    format!("the archive chain loops back to {name}"),
                );
            }
            let loc = self.fetcher.site(&rel);
            let sig = self.fetch_signature(&loc)?;
            let own = self.verified_comment(&sig, key, &name)?;
            let data = self.finish_signed(&loc, sig, own.file(), key, &name)?;
            self.check_of_this_build(&name, &own, stamp)?;
            self.check_listed(&site.manifest, &name, &data);
            let doc = match FeedDoc::parse(&data, &name) {
                Ok(d) => d,
                Err(m) => {
                    return self.stop(
                        CheckKind::Archive,
                        Problem::Malformed,
                        format!("{name}: {m}"),
                    );
                }
            };
            if !doc.channel.archive {
                return self.stop(
                    CheckKind::Archive,
                    Problem::Inconsistent,
                    format!("{name}: not an archive document (no fh:archive)"),
                );
            }
            let urls = site_urls(base, &doc);
            self.check_feed(&doc, &name, stamp, base, &urls, Some(&site.manifest));
            self.pass(
                CheckKind::Archive,
                format!(
                    "{name}: {} release(s), signed in this build, listed in {MANIFEST}",
                    doc.items.len()
                ),
            );
            if self.options.all {
                self.check_files(&doc, base, &urls);
            }
            next = doc.channel.prev_archive.clone();
            docs.push(doc);
        }
        Ok(docs)
    }

    /// Reads every image from each mirror the feed lists for it (or only
    /// from `--mirror` ones) and reports, per mirror, each image that is
    /// missing, short or different.
    pub(super) fn check_mirrors(&mut self, doc: &FeedDoc, site_urls: &SiteUrls) {
        for item in &doc.items {
            for (primary, mirror) in item.mirrors() {
                let sampled = self.options.mirror_sample.is_empty()
                    || self
                        .options
                        .mirror_sample
                        .iter()
                        .any(|m| mirror.starts_with(m.as_str()));
                if !sampled {
                    continue;
                }
                let Some(image) = item
                    .release
                    .images
                    .iter()
                    .find(|i| same_url(primary, &i.source.url))
                else {
                    continue;
                };
                let Some(url) = site_urls.accept(mirror) else {
                    self.fail(
                        CheckKind::Mirrors,
                        Problem::OutsideSite,
                        format!("{mirror}: not fetched: outside the site and its mirrors"),
                    );
                    continue;
                };
                let length = image.digest.length;
                match self
                    .fetcher
                    .read_image(&image.source.site_path, length, false, &url, false)
                {
                    Ok((digest, _, _)) if digest == image.digest.sha256 => self.pass(
                        CheckKind::Mirrors,
                        format!("{mirror}: {length} bytes, SHA-256 matches"),
                    ),
                    Ok((digest, _, _)) => self.fail(
                        CheckKind::Mirrors,
                        Problem::Mismatch,
                        format!(
                            "{mirror}: different: SHA-256 {digest} where the feed says {}",
                            image.digest.sha256
                        ),
                    ),
                    Err(m) => self.fail(CheckKind::Mirrors, m.problem, format!("{mirror}: {m}")),
                }
            }
        }
    }
}

/// An archive link's path in the site, if it is a file of the site.
fn archive_path(href: &str, base: &Url) -> Option<RelPath> {
    let url = Url::parse(href).ok()?;
    RelPath::parse(url.as_str().strip_prefix(base.as_str())?).ok()
}
