//! The checks, in the order a consumer must make them. Each records its
//! outcome in the report; a failure that makes the rest meaningless stops.
//!
//! The order is [`Verifier::run`]; the checks live beside it by family:
//! `signatures` (signatures, keys, the build stamp and the consumer's
//! state), `items` (the feed and its items against the manifest and the
//! site's URLs), `archives` (RFC 5005 archives and mirrors), `catalogs`
//! (the catalogs and the OpenPGP forms), `files` (images, boxes, SBOMs and
//! provenance, read byte for byte).

mod archives;
mod catalogs;
mod files;
mod items;
mod signatures;

use url::Url;

use signatures::Signed;

use super::feed::FeedDoc;
use super::fetch::Fetcher;
use super::state::State;
use super::urls::SiteUrls;
use super::{Check, CheckKind, Problem, PublishedSite, Report, Scope, VerifyOptions};
use crate::media::{FEED, MANIFEST};
use std::collections::BTreeMap;

use crate::model::{RelPath, Sha256};
use crate::openpgp;
use crate::sign::PublicKey;

/// A fatal failure, already recorded in the report.
pub(super) struct Stop;

type Step<T> = std::result::Result<T, Stop>;

pub(super) struct Verifier<'a> {
    pub(super) options: &'a VerifyOptions,
    pub(super) fetcher: Fetcher,
    pub(super) report: Report,
}

impl<'a> Verifier<'a> {
    /// A verifier of the site `options` name, with the documents a state
    /// file cached for conditional requests.
    pub(super) fn new(
        options: &'a VerifyOptions,
        cached: BTreeMap<String, super::state::Cached>,
    ) -> Verifier<'a> {
        Verifier {
            options,
            fetcher: Fetcher::new(options, cached),
            report: Report {
                source: options.source.clone(),
                ok: false,
                key_id: None,
                sequence: None,
                expires: None,
                releases: 0,
                images: 0,
                images_read: 0,
                checks: Vec::new(),
                site: None,
            },
        }
    }

    /// The SBOMs and provenance a document links, from the site at `base`.
    pub(super) fn check_supply_of(&mut self, doc: &FeedDoc, base: &Url) {
        self.fetcher.set_base(base.clone());
        self.check_supply(doc, &site_urls(base, doc));
    }

    fn pass(&mut self, check: CheckKind, detail: impl Into<String>) {
        self.report.checks.push(Check {
            check,
            ok: true,
            detail: detail.into(),
            problem: None,
        });
    }

    fn fail(&mut self, check: CheckKind, problem: Problem, detail: impl Into<String>) {
        self.report.checks.push(Check {
            check,
            ok: false,
            detail: detail.into(),
            problem: Some(problem),
        });
    }

    fn stop<T>(
        &mut self,
        check: CheckKind,
        problem: Problem,
        detail: impl Into<String>,
    ) -> Step<T> {
        self.fail(check, problem, detail);
        Err(Stop)
    }

    pub(super) fn run(&mut self, state: &mut State) -> Step<()> {
        let (key, base, feed_name, feed) = self.signed_feed(state)?;
        let whole = self.options.scope == Scope::Site;
        let sums = match whole {
            true => Some(self.signed_manifest(&key, &feed_name, &feed)?),
            false => None,
        };
        // The build's stamp: the manifest's, which an appliance's feed left
        // unchanged since an earlier build does not carry.
        let build = sums.as_ref().map_or(&feed.stamp, |s| &s.stamp).clone();
        self.report.sequence = Some(build.sequence);
        self.check_expiry(&build);
        self.check_rollback(state, &key, &feed_name, &feed, sums.as_ref())?;
        let manifest = match &sums {
            Some(sums) => Some(self.manifest(&feed_name, &feed, sums)?),
            None => None,
        };
        let doc = match FeedDoc::parse(&feed.data, &feed_name) {
            Ok(d) => d,
            Err(m) => {
                return self.stop(
                    CheckKind::Feed,
                    Problem::Malformed,
                    format!("{feed_name}: {m}"),
                );
            }
        };
        let site_urls = site_urls(&base, &doc);
        self.check_feed(
            &doc,
            &feed_name,
            &feed.stamp,
            &base,
            &site_urls,
            manifest.as_ref(),
        );
        let every_feed = whole && feed_name == FEED;
        let feeds = match (every_feed, &manifest) {
            (true, Some(manifest)) => self.check_appliance_feeds(manifest, &key, &feed.stamp)?,
            _ => BTreeMap::new(),
        };
        let next = match &doc.channel.next_key {
            Some(next) => Some(self.check_next_key(next, &key, &feed.stamp, state)?),
            None => None,
        };
        if self.options.state.is_some() {
            self.forget_withdrawn(state, &key, next.as_ref());
        }
        self.check_files(&doc, &base, &site_urls);
        let mut site = PublishedSite {
            base_url: base.clone(),
            sequence: build.sequence,
            feed: doc,
            archives: Vec::new(),
            feeds,
            manifest: manifest.unwrap_or_default(),
        };
        if every_feed {
            site.archives = self.check_archives(&site, &key, &feed.stamp)?;
            self.check_catalogs(&site, &key, &feed.stamp)?;
        }
        self.report.site = Some(site);
        Ok(())
    }

    /// The feed the source names, with the key that signs it, the site
    /// its signature names (which the state must track), and its name in
    /// that site. With a state file, the feed and its signature are asked
    /// for conditionally.
    fn signed_feed(&mut self, state: &mut State) -> Step<(PublicKey, Url, String, Signed)> {
        let feed_loc = match self.fetcher.feed_location(&self.options.source) {
            Ok(loc) => loc,
            Err(m) => return self.stop(CheckKind::Source, Problem::Malformed, m),
        };
        if self.options.state.is_some() {
            self.fetcher.cache(&feed_loc);
            self.fetcher.cache(&feed_loc.with_suffix(".minisig"));
        }
        let feed_sig = self.fetch_signature(&feed_loc)?;
        let key = self.choose_key(&feed_sig, state, &feed_loc.display)?;
        self.report.key_id = Some(key.key_id.to_string());

        // The feed's stamp names the site; everything else is found from it.
        let feed_stamp = self.check_comment(&feed_sig, &key, &feed_loc.display)?;
        let base = match Url::parse(&feed_stamp.base_url) {
            Ok(u) => u,
            Err(e) => {
                return self.stop(
                    CheckKind::Signature,
                    Problem::Malformed,
                    format!("signed base_url is not a URL: {e}"),
                );
            }
        };
        self.check_site(&base, state)?;
        let feed_name = match self.fetcher.site_name(&feed_loc, &base) {
            Some(n) => n,
            None => {
                return self.stop(
                    CheckKind::Urls,
                    Problem::OutsideSite,
                    format!(
                        "{} is not under the base_url it was signed for ({base})",
                        feed_loc.display
                    ),
                );
            }
        };
        self.fetcher.set_base(base.clone());
        let data = self.finish_signed(&feed_loc, feed_sig, &feed_stamp.file, &key, &feed_name)?;
        let feed = Signed {
            data,
            stamp: feed_stamp,
        };
        Ok((key, base, feed_name, feed))
    }

    /// `SHA256SUMS`, signed in the feed's build (or, for an appliance's
    /// feed, in a later build that left it unchanged).
    fn signed_manifest(&mut self, key: &PublicKey, feed_name: &str, feed: &Signed) -> Step<Signed> {
        let manifest_loc = self.fetcher.site(&known(MANIFEST));
        let sums_sig = self.fetch_signature(&manifest_loc)?;
        let sums = self.fetch_signed(&manifest_loc, sums_sig, key, MANIFEST, MANIFEST)?;
        self.check_build_of(feed_name, &feed.stamp, &sums.stamp)?;
        Ok(sums)
    }

    /// The manifest's entries, which must list the feed (and the OpenPGP
    /// key with its clearsigned form, when the site has one).
    fn manifest(
        &mut self,
        feed_name: &str,
        feed: &Signed,
        sums: &Signed,
    ) -> Step<BTreeMap<String, Sha256>> {
        let manifest = match crate::sums::parse(&sums.data) {
            Ok(m) => m,
            Err(m) => {
                return self.stop(
                    CheckKind::Manifest,
                    Problem::Malformed,
                    format!("{MANIFEST}: {m}"),
                );
            }
        };
        self.check_listed(&manifest, feed_name, &feed.data);
        if manifest.contains_key(openpgp::PUBLIC_KEY) {
            self.check_openpgp(&manifest, &sums.data);
        }
        Ok(manifest)
    }

    /// What the options ask to read of a document's files: images and
    /// boxes, SBOMs and provenance, mirrors.
    fn check_files(&mut self, doc: &FeedDoc, base: &Url, site_urls: &SiteUrls) {
        if self.options.images {
            self.check_images(doc, site_urls);
            self.check_made(doc, base, site_urls);
        }
        if self.options.supply {
            self.check_supply(doc, site_urls);
        }
        if self.options.mirrors {
            self.check_mirrors(doc, site_urls);
        }
    }
}

/// The places a document may point into: the signed base URL, its
/// download base and the mirrors it declares.
fn site_urls(base: &Url, doc: &FeedDoc) -> SiteUrls {
    SiteUrls::new(
        base,
        doc.channel.download_base.as_deref(),
        &doc.channel.mirrors,
    )
}

/// One of the site's own file names as a relative path.
fn known(name: &str) -> RelPath {
    RelPath::parse(name).expect("the site's own file names are relative paths")
}
