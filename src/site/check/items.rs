//! The feed and its items: the channel is the signed site's, every URL lies
//! under the site, and every item's images, boxes, zsync control files and
//! supply-chain files are the ones the manifest lists, repeated
//! consistently by the RSS enclosure and the Podcasting 2.0 alternate
//! enclosures.

use std::collections::BTreeMap;

use url::Url;

use super::{Step, Verifier};
use crate::media::{self, MANIFEST};
use crate::model::{RelPath, Sha256};
use crate::sign::PublicKey;
use crate::site::CheckKind;
use crate::site::Problem;
use crate::site::feed::{FeedDoc, Item, same_url};
use crate::site::urls::SiteUrls;
use crate::trust::{BuildStamp, Published, Stamp};

impl Verifier<'_> {
    /// A feed document's channel, URLs and items; with the `manifest`,
    /// each file the items name must be listed there with the feed's digest.
    pub(super) fn check_feed(
        &mut self,
        doc: &FeedDoc,
        name: &str,
        stamp: &BuildStamp,
        base: &Url,
        site_urls: &SiteUrls,
        manifest: Option<&BTreeMap<String, Sha256>>,
    ) {
        if doc.channel.link != base.as_str() {
            self.fail(
                CheckKind::Feed,
                Problem::Inconsistent,
                format!(
                    "{name}: channel link {:?} is not the signed base_url {base}",
                    doc.channel.link
                ),
            );
        }
        // An archive never changes, so it names no build's sequence; its
        // signature's stamp ties it to this build.
        if !doc.channel.archive && doc.channel.sequence != Some(stamp.sequence) {
            self.fail(
                CheckKind::Feed,
                Problem::Inconsistent,
                format!(
                    "{name}: vmcast:sequence does not match the signed sequence {}",
                    stamp.sequence
                ),
            );
        }
        let outside: Vec<&str> = doc
            .urls()
            .filter(|u| site_urls.accept(u).is_none())
            .collect();
        match outside.first() {
            None => self.pass(
                CheckKind::Urls,
                format!(
                    "every URL in {name} is under {}",
                    site_urls.describe(" or ")
                ),
            ),
            Some(first) => self.fail(
                CheckKind::Urls,
                Problem::OutsideSite,
                format!(
                    "{name}: {} URL(s) outside the site ({}), e.g. {first}",
                    outside.len(),
                    site_urls.describe(" and ")
                ),
            ),
        }
        let mut problems = Vec::new();
        for item in &doc.items {
            if let Some(appliance) = &doc.channel.appliance
                && item.release.info.appliance != *appliance
            {
                problems.push((
                    Problem::Inconsistent,
                    format!(
                        "item {:?} is of {}, in the feed of {appliance}",
                        item.guid, item.release.info.appliance
                    ),
                ));
            }
            problems.extend(item_problems(item, manifest));
        }
        self.report.releases += doc.items.len();
        let images: usize = doc.items.iter().map(|i| i.release.images.len()).sum();
        self.report.images += images;
        if problems.is_empty() {
            let clouds: usize = doc
                .items
                .iter()
                .map(|i| i.release.info.cloud_images.len())
                .sum();
            let vouched = match manifest {
                Some(_) => format!("agree with {MANIFEST}"),
                None => "signed with the feed".to_owned(),
            };
            self.pass(
                CheckKind::Items,
                format!(
                    "{name}: {} release(s), {images} image(s) {vouched}{}",
                    doc.items.len(),
                    match clouds {
                        0 => String::new(),
                        n => format!(
                            "; {n} cloud image(s) named, whose content the feed does not hash"
                        ),
                    }
                ),
            );
        } else {
            for (problem, p) in problems {
                self.fail(CheckKind::Items, problem, format!("{name}: {p}"));
            }
        }
    }

    /// The per-appliance feeds listed in the manifest: signed by the same
    /// key, in this build or, unchanged since, an earlier one, with the
    /// listed digest. Returns them as published, by name.
    pub(super) fn check_appliance_feeds(
        &mut self,
        manifest: &BTreeMap<String, Sha256>,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<BTreeMap<String, Published>> {
        let names: Vec<String> = manifest
            .keys()
            .filter(|n| media::is_appliance_feed(n))
            .cloned()
            .collect();
        let mut feeds = BTreeMap::new();
        for name in names {
            let listed = self.fetch_signed_listed(&name, manifest, key, stamp)?;
            // check_build_of refused any other stamp of an appliance feed.
            if let Stamp::Build(stamp) = listed.stamp {
                let published = Published {
                    data: listed.data,
                    signature: listed.signature,
                    stamp,
                };
                feeds.insert(name, published);
            }
        }
        Ok(feeds)
    }
}

/// What is wrong with one item: its guid, its images against the manifest
/// and its enclosures, its supply-chain files against the manifest and its
/// images.
fn item_problems(
    item: &Item,
    manifest: Option<&BTreeMap<String, Sha256>>,
) -> Vec<(Problem, String)> {
    let mut problems = Vec::new();
    let release = &item.release;
    let guid = release.info.guid();
    if item.guid != guid {
        problems.push((
            Problem::Inconsistent,
            format!(
                "item {:?} is the release {guid}, whose guid that is not",
                item.guid
            ),
        ));
    }
    // Without the manifest (a feed read alone), the feed's own signature
    // vouches for its digests.
    let listed = |problems: &mut Vec<(Problem, String)>, path: &RelPath, digest: &Sha256| {
        let Some(manifest) = manifest else { return };
        match manifest.get(path.as_str()) {
            Some(d) if d == digest => {}
            Some(_) => problems.push((
                Problem::Mismatch,
                format!("{path}: the feed's SHA-256 differs from {MANIFEST}'s"),
            )),
            None => problems.push((
                Problem::Unlisted,
                format!("{path}: not listed in {MANIFEST}"),
            )),
        }
    };
    if release.images.is_empty() {
        // A release of cloud images only: nothing to enclose or hash.
        if release.info.cloud_images.is_empty() {
            problems.push((
                Problem::Inconsistent,
                format!(
                    "item {:?} has neither an image nor a cloud image",
                    item.guid
                ),
            ));
        } else if item.enclosure.is_some() || !item.alternates.is_empty() {
            problems.push((
                Problem::Inconsistent,
                format!(
                    "item {:?} encloses a file but lists no vmcast:image",
                    item.guid
                ),
            ));
        }
    } else if let Some(primary) = release.images.iter().find(|i| i.source.primary) {
        let enclosed = item.enclosure.as_ref().is_some_and(|e| {
            same_url(&e.url, &primary.source.url) && e.length == primary.digest.length
        });
        if !enclosed {
            problems.push((
                Problem::Inconsistent,
                format!(
                    "item {:?}: the enclosure is not the primary image {}",
                    item.guid, primary.source.site_path
                ),
            ));
        }
        for image in &release.images {
            listed(&mut problems, &image.source.site_path, &image.digest.sha256);
            if let Some(b) = &image.vagrant_box {
                listed(&mut problems, &b.path, &b.digest.sha256);
            }
            if let Some(z) = &image.zsync {
                listed(&mut problems, &z.path, &z.digest.sha256);
            }
            let agrees = item.alternate(image).is_some_and(|a| {
                a.length == image.digest.length
                    && a.integrity.as_deref() == Some(image.digest.sha256.to_sri().as_str())
            });
            if !agrees {
                problems.push((
                    Problem::Inconsistent,
                    format!(
                        "{}: its podcast:alternateEnclosure disagrees with vmcast:image",
                        image.source.site_path
                    ),
                ));
            }
        }
    } else {
        problems.push((
            Problem::Inconsistent,
            format!("item {:?} has no primary image", item.guid),
        ));
    }
    for file in &release.supply {
        listed(&mut problems, &file.site_path, &file.digest.sha256);
        if let Some(image) = &file.image
            && !release.images.iter().any(|i| i.source.name == *image)
        {
            problems.push((
                Problem::Inconsistent,
                format!(
                    "{}: about {image}, which is no image of item {:?}",
                    file.site_path, item.guid
                ),
            ));
        }
    }
    problems
}
