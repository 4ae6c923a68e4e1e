//! Reading a published site, local or over HTTP(S), the way a consumer
//! must before trusting it: `vmcast-gen verify`, `build --previous` and
//! `pull` all read a site through here.
//!
//! In order: both signatures against the pinned key (or a key it announced,
//! from the state file), the signed trusted comments (right file, same
//! build, not expired, not older than what was seen before), the feed's
//! digest in the manifest, every image's digest and length in the feed
//! against the manifest, every URL under the site's declared URLs, and with
//! `--images` every image's bytes, fetched only from an accepted URL. With
//! `--site` or a state file, the build must be of the site the consumer
//! tracks. Nothing here prints; the caller renders the [`Report`].
//!
//! What it hands back is the site in the model's own types
//! ([`PublishedSite`]): the feed and its archives, each item a
//! [`crate::model::Release`], so no caller parses a feed again.
//!
//! The module splits by concern: `fetch` gets the site's files from a
//! directory or over HTTP, [`feed`] is the one reader of the feed format,
//! `urls` decides which URLs the feed may point at, `check` runs the
//! checks in order (one file per family), `catalogs` holds the catalogs
//! against the feed, and `state` is what a consumer remembers between
//! runs.

mod catalogs;
mod check;
pub mod feed;
mod fetch;
mod state;
mod urls;

#[cfg(test)]
mod roundtrip;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use url::Url;

use crate::error::Result;
use crate::model::Sha256;
use crate::sign::PublicKey;

use check::Verifier;
use feed::{FeedDoc, Item};
use state::State;

/// How much of a site to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything `verify` checks: the feed, `SHA256SUMS` from the same
    /// build, and from the site's feed, every appliance feed, the archives
    /// and the catalogs.
    Site,
    /// One signed feed (the site's or an appliance's) and what the options
    /// ask of its items, as `pull` reads it: the feed's own signature
    /// vouches for every digest in it, so `SHA256SUMS` is not read.
    Feed,
}

/// What to verify and against what.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// A local output directory, or an http(s) URL of the site or its feed.
    pub source: String,
    /// How much of it to read.
    pub scope: Scope,
    /// The key the consumer pinned out of band.
    pub pinned: PublicKey,
    /// Other keys trusted as much as the pinned one (`build --previous`
    /// during a key rotation: the key rotated from).
    pub also_trusted: Vec<PublicKey>,
    /// Remembers the highest sequence per key and announced next keys.
    pub state: Option<PathBuf>,
    /// Also read and hash every image.
    pub images: bool,
    /// With `images` or `mirrors`: the archived releases' images too.
    pub all: bool,
    /// Also read every image from every mirror the feed lists.
    pub mirrors: bool,
    /// Read every SBOM and provenance file the feed links (with `all`,
    /// the archived releases' too): length, SHA-256, format, and each
    /// provenance's subjects against its images' digests.
    pub supply: bool,
    /// With `mirrors`: only the mirrors under these base URLs.
    pub mirror_sample: Vec<String>,
    /// The site (its signed base_url) the consumer expects, checked always.
    pub site: Option<Url>,
    /// The deadline of each small request (feed, manifest, key, signature),
    /// and of any response's headers.
    pub timeout: Duration,
    /// The lowest rate, in bytes per second, an image may download at; 0
    /// for none.
    pub min_rate: u64,
    pub now: DateTime<Utc>,
}

/// What a check is about. These names, in lowercase, are the `check`
/// field of `verify --json` and part of its documented format
/// (docs/trust.md): new kinds may be added, existing ones keep their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// The source names a site that can be read.
    Source,
    /// A file's signature and trusted comment.
    Signature,
    /// Which key signs, and keys announced or withdrawn.
    Key,
    /// The site the state file tracks (`--state`, `--site`).
    Site,
    /// The feed and the manifest come from one build.
    Build,
    /// The build has not expired.
    Expiry,
    /// The build is not older than one seen before (`--state`).
    Rollback,
    /// A file's SHA-256 is the one SHA256SUMS lists.
    Manifest,
    /// The feed's channel and paths.
    Feed,
    /// Every URL lies under the site's declared URLs.
    Urls,
    /// Every item's images agree with SHA256SUMS.
    Items,
    /// An image's bytes (`--images`).
    Images,
    /// An archive document of the feed's history (RFC 5005).
    Archive,
    /// An image as a mirror serves it (`--mirrors`).
    Mirrors,
    /// A catalog besides the feeds (`[catalogs]`) agrees with them.
    Catalog,
    /// `SHA256SUMS.asc`, the OpenPGP-clearsigned SHA256SUMS.
    OpenPgp,
    /// An SBOM or provenance file: its bytes, its format, and for
    /// provenance its subjects against its images' digests.
    Supply,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Source => "source",
            CheckKind::Signature => "signature",
            CheckKind::Key => "key",
            CheckKind::Site => "site",
            CheckKind::Build => "build",
            CheckKind::Expiry => "expiry",
            CheckKind::Rollback => "rollback",
            CheckKind::Manifest => "manifest",
            CheckKind::Feed => "feed",
            CheckKind::Urls => "urls",
            CheckKind::Items => "items",
            CheckKind::Images => "images",
            CheckKind::Archive => "archive",
            CheckKind::Mirrors => "mirrors",
            CheckKind::Catalog => "catalog",
            CheckKind::OpenPgp => "openpgp",
            CheckKind::Supply => "supply",
        }
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a check failed, for machines: the `problem` field of a failed
/// check in `verify --json`, part of its documented format (docs/trust.md):
/// new kinds may be added, existing ones keep their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// A file could not be read at all: the network, the server or the
    /// disk failed. The only problem a later try may not have.
    Unreachable,
    /// A file is not in its format: XML, a signature, the manifest, a key,
    /// a trusted comment, a catalog's JSON.
    Malformed,
    /// Signed by a key that is neither pinned nor announced by one.
    UntrustedKey,
    /// A signature does not match its file or its trusted comment:
    /// tampered or corrupt.
    BadSignature,
    /// A signature that is another file's (swapped), or that names no
    /// build where the file must belong to one.
    WrongFile,
    /// Files of different builds served together (mix-and-match).
    MixedBuilds,
    /// A build of another site than the one given or tracked.
    OtherSite,
    /// The build's expiry has passed (a stale mirror or a freeze).
    Expired,
    /// The build is older than one already seen.
    Rollback,
    /// Bytes that differ from what a signed document says of them: a
    /// length, a digest, a format, a catalog's entry.
    Mismatch,
    /// A file the signed documents need is not listed in the manifest.
    Unlisted,
    /// A URL outside the site's declared URLs: never fetched.
    OutsideSite,
    /// A document that contradicts itself or its format's rules: no
    /// primary image, an enclosure that is not it, a wrong guid...
    Inconsistent,
}

/// One check and its outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub check: CheckKind,
    pub ok: bool,
    pub detail: String,
    /// Why it failed; none when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// Everything `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub ok: bool,
    pub key_id: Option<String>,
    pub sequence: Option<u64>,
    pub expires: Option<String>,
    pub releases: usize,
    pub images: usize,
    pub images_read: u64,
    pub checks: Vec<Check>,
    /// The site as read, once its feed's and manifest's signatures
    /// verified and the feed parsed: also when a later check failed, for a
    /// caller that accepts some failures (an expired site, for
    /// `--previous`).
    #[serde(skip)]
    pub site: Option<PublishedSite>,
}

/// A published site as read: the verified feed and its archives, each in
/// the model's types, and the manifest they were held against.
#[derive(Debug, Clone)]
pub struct PublishedSite {
    /// The base URL the build was signed for.
    pub base_url: Url,
    /// The build's sequence, from the signatures of its feed.xml and
    /// SHA256SUMS (an appliance's feed left unchanged since an earlier build
    /// carries that build's).
    pub sequence: u64,
    pub feed: FeedDoc,
    /// The feed's archives, newest first (only when the feed read is the
    /// site's own feed, `feed.xml`).
    pub archives: Vec<FeedDoc>,
    /// The appliances' feeds as published, by name (`feeds/<appliance>.xml`),
    /// verified with the site (only when the feed read is `feed.xml`).
    pub feeds: BTreeMap<String, crate::trust::Published>,
    pub manifest: BTreeMap<String, Sha256>,
}

impl PublishedSite {
    /// Every item of the feed and its archives, newest first.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.feed
            .items
            .iter()
            .chain(self.archives.iter().flat_map(|a| &a.items))
    }
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// Whether the site failed only because files could not be read (the
    /// network, the server or the disk failed): nothing read was found
    /// wrong, and a later try may pass.
    pub fn only_unreachable(&self) -> bool {
        !self.ok
            && self
                .failures()
                .all(|c| c.problem == Some(Problem::Unreachable))
    }
}

/// Verifies a site. `Err` is kept for problems with the request itself (an
/// unusable state file); everything about the site goes into the report.
pub fn verify(options: &VerifyOptions) -> Result<Report> {
    let mut state = match &options.state {
        Some(path) => State::load(path)?,
        None => State::default(),
    };
    let mut v = Verifier::new(options, state.take_cached());
    let outcome = v.run(&mut state);
    let mut report = v.report;
    report.ok = outcome.is_ok() && report.checks.iter().all(|c| c.ok);
    if let (true, Some(path)) = (report.ok, &options.state) {
        state.set_cached(v.fetcher.into_cached());
        state.save(path)?;
    }
    Ok(report)
}

/// Reads the SBOMs and provenance of `item` that are about `image` or
/// its whole release, from the site `verify` read with these options, as
/// `verify` reads every file a feed links: for `pull`, which reads only
/// what its choice needs.
pub fn verify_supply(
    options: &VerifyOptions,
    site: &PublishedSite,
    item: &Item,
    image: &crate::model::FileName,
) -> Report {
    let mut item = item.clone();
    item.release
        .supply
        .retain(|f| f.image.as_ref().is_none_or(|n| n == image));
    let doc = FeedDoc {
        channel: site.feed.channel.clone(),
        items: vec![item],
    };
    let mut v = Verifier::new(options, BTreeMap::new());
    v.check_supply_of(&doc, &site.base_url);
    let mut report = v.report;
    report.ok = report.checks.iter().all(|c| c.ok);
    report
}

/// Reads a feed as `verify` does and returns how many items it holds. For
/// fuzzing and for tools that want to check a feed's syntax alone.
pub fn count_feed_items(data: &[u8]) -> std::result::Result<usize, String> {
    FeedDoc::parse(data, crate::media::FEED).map(|doc| doc.items.len())
}

/// Reads a state file as `verify --state` and `pull` do, and follows the
/// announcement chain of every key it remembers from each of its first
/// keys as the pinned one, as the key check does. Returns how many keys it
/// remembers. For fuzzing.
pub fn read_state(data: &[u8]) -> std::result::Result<usize, String> {
    let path = std::path::Path::new("state.json");
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let state = State::parse(path, text).map_err(|e| e.to_string())?;
    let _ = state.highest();
    let keys: Vec<(&str, Option<PublicKey>)> = state.keys().collect();
    for pinned in keys.iter().filter_map(|(_, key)| key.as_ref()).take(4) {
        for (id, _) in &keys {
            let _ = state.announced_key(id, pinned);
        }
    }
    Ok(keys.len())
}
