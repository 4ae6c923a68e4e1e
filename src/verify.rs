//! `vmcast-gen verify`: checks a published site, local or over HTTP(S), the
//! way a consumer must before trusting it.
//!
//! In order: both signatures against the pinned key (or a key it announced,
//! from the state file), the signed trusted comments (right file, same
//! build, not expired, not older than what was seen before), the feed's
//! digest in the manifest, every image's digest and length in the feed
//! against the manifest, every URL under the site's declared URLs, and with
//! `--images` every image's bytes. Nothing here prints; the caller renders
//! the [`Report`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_xml::XmlVersion;
use quick_xml::events::Event;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use url::Url;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::hash::sha256_bytes;
use crate::model::Sha256;
use crate::render::{FEED, MANIFEST, NEXT_PUBLIC_KEY};
use crate::sign::{PublicKey, Signature, VerifyError};
use crate::trust::BuildStamp;

/// The largest feed, manifest, key or signature `verify` will read.
const TEXT_LIMIT: u64 = 64 << 20;

/// What to verify and against what.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// A local output directory, or an http(s) URL of the site or its feed.
    pub source: String,
    /// The key the consumer pinned out of band.
    pub pinned: PublicKey,
    /// Remembers the highest sequence per key and announced next keys.
    pub state: Option<PathBuf>,
    /// Also read and hash every image.
    pub images: bool,
    pub now: DateTime<Utc>,
}

/// One check and its outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
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
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// A fatal failure, already recorded in the report.
struct Stop;

type Step<T> = std::result::Result<T, Stop>;

/// Verifies a site. `Err` is kept for problems with the request itself (an
/// unusable state file); everything about the site goes into the report.
pub fn verify(options: &VerifyOptions) -> Result<Report> {
    let mut state = match &options.state {
        Some(path) => State::load(path)?,
        None => State::default(),
    };
    let mut v = Verifier {
        options,
        fetcher: Fetcher::new(&options.source),
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
        },
    };
    let outcome = v.run(&mut state);
    let mut report = v.report;
    report.ok = outcome.is_ok() && report.checks.iter().all(|c| c.ok);
    if let (true, Some(path)) = (report.ok, &options.state) {
        state.save(path)?;
    }
    Ok(report)
}

struct Verifier<'a> {
    options: &'a VerifyOptions,
    fetcher: Fetcher,
    report: Report,
}

/// A signed file with its verified build stamp.
struct Signed {
    data: Vec<u8>,
    stamp: BuildStamp,
}

impl Verifier<'_> {
    fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.report.checks.push(Check {
            check,
            ok: true,
            detail: detail.into(),
        });
    }

    fn fail(&mut self, check: &'static str, detail: impl Into<String>) {
        self.report.checks.push(Check {
            check,
            ok: false,
            detail: detail.into(),
        });
    }

    fn stop<T>(&mut self, check: &'static str, detail: impl Into<String>) -> Step<T> {
        self.fail(check, detail);
        Err(Stop)
    }

    fn run(&mut self, state: &mut State) -> Step<()> {
        let feed_loc = match self.fetcher.feed_location(&self.options.source) {
            Ok(loc) => loc,
            Err(m) => return self.stop("source", m),
        };
        let feed_sig = self.fetch_signature(&feed_loc)?;
        let key = self.choose_key(&feed_sig, state, &feed_loc.display)?;
        self.report.key_id = Some(key.key_id.to_string());

        // The feed's stamp names the site; everything else is found from it.
        let feed_stamp = self.check_comment(&feed_sig, &key, &feed_loc.display)?;
        let base = match Url::parse(&feed_stamp.base_url) {
            Ok(u) => u,
            Err(e) => return self.stop("signature", format!("signed base_url is not a URL: {e}")),
        };
        let feed_name = match self.fetcher.site_name(&feed_loc, &base) {
            Some(n) => n,
            None => {
                return self.stop(
                    "urls",
                    format!(
                        "{} is not under the base_url it was signed for ({base})",
                        feed_loc.display
                    ),
                );
            }
        };
        self.fetcher.set_base(base.clone());
        let feed = self.finish_signed(&feed_loc, feed_sig, feed_stamp, &key, &feed_name)?;

        let manifest_loc = self.fetcher.site(MANIFEST);
        let sums_sig = self.fetch_signature(&manifest_loc)?;
        let sums_stamp = self.check_comment(&sums_sig, &key, MANIFEST)?;
        let sums = self.finish_signed(&manifest_loc, sums_sig, sums_stamp, &key, MANIFEST)?;

        self.check_same_build(&feed_name, &feed.stamp, &sums.stamp)?;
        self.report.sequence = Some(feed.stamp.sequence);
        self.check_expiry(&feed.stamp);
        self.check_rollback(state, &key, feed.stamp.sequence);

        let manifest = match parse_manifest(&sums.data) {
            Ok(m) => m,
            Err(m) => return self.stop("manifest", format!("{MANIFEST}: {m}")),
        };
        self.check_listed(&manifest, &feed_name, &feed.data);
        let doc = match FeedDoc::parse(&feed.data) {
            Ok(d) => d,
            Err(m) => return self.stop("feed", format!("{feed_name}: {m}")),
        };
        self.check_feed(&doc, &feed_name, &feed.stamp, &base, &manifest);
        if feed_name == FEED {
            self.check_appliance_feeds(&manifest, &key, &feed.stamp)?;
        }
        if let Some(next) = &doc.next_key {
            self.check_next_key(next, &key, &feed.stamp, state)?;
        }
        if self.options.images {
            self.check_images(&doc);
        }
        Ok(())
    }

    /// The pinned key, or a key the state file learned from a signed
    /// announcement by a key already trusted.
    fn choose_key(&mut self, sig: &Signature, state: &State, what: &str) -> Step<PublicKey> {
        let pinned = &self.options.pinned;
        if sig.key_id == pinned.key_id {
            return Ok(pinned.clone());
        }
        if let Some(key) = state.announced_key(&sig.key_id.to_string(), pinned) {
            self.pass(
                "key",
                format!(
                    "{what} is signed by key {}, announced as the next key by a trusted key",
                    sig.key_id
                ),
            );
            return Ok(key);
        }
        let hint = if self.options.state.is_some() {
            "; no trusted key announced it in the state file"
        } else {
            "; pass --state to accept keys announced by the pinned key"
        };
        self.stop(
            "signature",
            format!(
                "{what}: signed by key {}, not the pinned key {}{hint}",
                sig.key_id, pinned.key_id
            ),
        )
    }

    fn fetch_signature(&mut self, loc: &Location) -> Step<Signature> {
        let sig_loc = loc.with_suffix(".minisig");
        let text = match self.fetcher.fetch(&sig_loc, TEXT_LIMIT) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(m) => return self.stop("signature", m),
        };
        match Signature::from_file(Path::new(&sig_loc.display), &text) {
            Ok(sig) => Ok(sig),
            Err(e) => self.stop("signature", e.to_string()),
        }
    }

    /// Checks key, algorithm and trusted comment; returns the stamp.
    fn check_comment(&mut self, sig: &Signature, key: &PublicKey, what: &str) -> Step<BuildStamp> {
        if let Err(e) = sig.verify_comment(key) {
            let detail = match e {
                VerifyError::BadTrustedComment => {
                    format!(
                        "{what}: the trusted comment was altered (its signature does not match)"
                    )
                }
                other => format!("{what}: {other}"),
            };
            return self.stop("signature", detail);
        }
        match BuildStamp::parse(&sig.trusted_comment) {
            Ok(stamp) => Ok(stamp),
            Err(m) => self.stop("signature", format!("{what}: {m}")),
        }
    }

    /// Fetches the signed file, checks the signature is for this file and
    /// matches its bytes.
    fn finish_signed(
        &mut self,
        loc: &Location,
        sig: Signature,
        stamp: BuildStamp,
        key: &PublicKey,
        name: &str,
    ) -> Step<Signed> {
        if stamp.file != name {
            return self.stop(
                "signature",
                format!(
                    "{name}.minisig is the signature of {}, not {name} (swapped signature files?)",
                    stamp.file
                ),
            );
        }
        let data = match self.fetcher.fetch(loc, TEXT_LIMIT) {
            Ok(d) => d,
            Err(m) => return self.stop("signature", m),
        };
        if sig.verify_data(key, &data).is_err() {
            return self.stop(
                "signature",
                format!("{name}: signature does not match its contents (tampered or corrupt)"),
            );
        }
        self.pass(
            "signature",
            format!("{name}: good prehashed signature by key {}", key.key_id),
        );
        Ok(Signed { data, stamp })
    }

    fn check_same_build(
        &mut self,
        feed_name: &str,
        feed: &BuildStamp,
        sums: &BuildStamp,
    ) -> Step<()> {
        if feed.sequence != sums.sequence
            || feed.timestamp != sums.timestamp
            || feed.base_url != sums.base_url
        {
            return self.stop(
                "build",
                format!(
                    "{feed_name} (sequence {}) and {MANIFEST} (sequence {}) come from different builds (mix-and-match)",
                    feed.sequence, sums.sequence
                ),
            );
        }
        self.pass(
            "build",
            format!(
                "{feed_name} and {MANIFEST} come from one build, sequence {}",
                feed.sequence
            ),
        );
        Ok(())
    }

    fn check_expiry(&mut self, stamp: &BuildStamp) {
        match stamp.expires_at() {
            None if stamp.expires.is_some() => self.fail("expiry", "signed expiry is out of range"),
            None => self.pass("expiry", "the publisher set no expiry"),
            Some(at) => {
                let when = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
                self.report.expires = Some(when.clone());
                if self.options.now > at {
                    self.fail(
                        "expiry",
                        format!(
                            "expired at {when}: the publisher has not re-signed the site since \
                             (stale mirror, stalled release job, or a freeze attack)"
                        ),
                    );
                } else {
                    self.pass("expiry", format!("valid until {when}"));
                }
            }
        }
    }

    fn check_rollback(&mut self, state: &mut State, key: &PublicKey, sequence: u64) {
        if self.options.state.is_none() {
            return;
        }
        match state.highest() {
            Some((id, seen)) if sequence < seen => self.fail(
                "rollback",
                format!(
                    "rollback: sequence {sequence} is older than sequence {seen} already seen (key {id})"
                ),
            ),
            seen => {
                state.record(key, sequence);
                self.pass(
                    "rollback",
                    match seen {
                        Some((_, s)) => format!("sequence {sequence} is not older than {s} seen before"),
                        None => format!("first sight; remembering sequence {sequence}"),
                    },
                );
            }
        }
    }

    fn check_listed(&mut self, manifest: &BTreeMap<String, Sha256>, name: &str, data: &[u8]) {
        match manifest.get(name) {
            Some(d) if *d == sha256_bytes(data) => {
                self.pass("manifest", format!("{name}'s SHA-256 matches {MANIFEST}"))
            }
            Some(_) => self.fail(
                "manifest",
                format!("{name}'s SHA-256 differs from the one in {MANIFEST}"),
            ),
            None => self.fail("manifest", format!("{MANIFEST} does not list {name}")),
        }
    }

    fn check_feed(
        &mut self,
        doc: &FeedDoc,
        name: &str,
        stamp: &BuildStamp,
        base: &Url,
        manifest: &BTreeMap<String, Sha256>,
    ) {
        if doc.link.as_deref() != Some(base.as_str()) {
            self.fail(
                "feed",
                format!(
                    "{name}: channel link {:?} is not the signed base_url {base}",
                    doc.link.as_deref().unwrap_or("")
                ),
            );
        }
        if doc.sequence != Some(stamp.sequence) {
            self.fail(
                "feed",
                format!(
                    "{name}: vmcast:sequence does not match the signed sequence {}",
                    stamp.sequence
                ),
            );
        }
        let download = doc
            .download_base
            .as_deref()
            .and_then(|u| Url::parse(u).ok());
        let mut roots = vec![base.to_string()];
        roots.extend(download.map(|u| u.to_string()));
        let outside: Vec<&String> = doc
            .urls()
            .filter(|u| !roots.iter().any(|r| u.starts_with(r.as_str())))
            .collect();
        if outside.is_empty() {
            self.pass(
                "urls",
                format!("every URL in {name} is under {}", roots.join(" or ")),
            );
        } else {
            let first = outside[0].clone();
            let count = outside.len();
            self.fail(
                "urls",
                format!(
                    "{name}: {count} URL(s) outside the site ({}), e.g. {first}",
                    roots.join(" and ")
                ),
            );
        }

        let mut problems = Vec::new();
        for item in &doc.items {
            let Some(primary) = item.images.iter().find(|i| i.primary) else {
                problems.push(format!("item {:?} has no primary image", item.guid));
                continue;
            };
            if item.enclosure != Some((primary.url.clone(), primary.length)) {
                problems.push(format!(
                    "item {:?}: the enclosure is not the primary image {}",
                    item.guid, primary.path
                ));
            }
            for image in &item.images {
                match manifest.get(&image.path) {
                    Some(d) if d.to_hex() == image.sha256 => {}
                    Some(_) => problems.push(format!(
                        "{}: the feed's SHA-256 differs from {MANIFEST}'s",
                        image.path
                    )),
                    None => problems.push(format!("{}: not listed in {MANIFEST}", image.path)),
                }
                let sri = Sha256::from_hex(&image.sha256).map(|d| d.to_sri());
                let alternate = item
                    .alternates
                    .iter()
                    .any(|a| a.0 == image.url && a.1 == image.length && Some(&a.2) == sri.as_ref());
                if !alternate {
                    problems.push(format!(
                        "{}: its podcast:alternateEnclosure disagrees with vmcast:image",
                        image.path
                    ));
                }
            }
        }
        self.report.releases += doc.items.len();
        self.report.images += doc.items.iter().map(|i| i.images.len()).sum::<usize>();
        if problems.is_empty() {
            self.pass(
                "items",
                format!(
                    "{name}: {} release(s), {} image(s) agree with {MANIFEST}",
                    doc.items.len(),
                    doc.items.iter().map(|i| i.images.len()).sum::<usize>()
                ),
            );
        } else {
            for p in problems {
                self.fail("items", format!("{name}: {p}"));
            }
        }
    }

    /// The per-appliance feeds listed in the manifest: signed by the same
    /// key, in the same build, with the listed digest.
    fn check_appliance_feeds(
        &mut self,
        manifest: &BTreeMap<String, Sha256>,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<()> {
        let names: Vec<String> = manifest
            .keys()
            .filter(|n| n.starts_with("feeds/") && n.ends_with(".xml"))
            .cloned()
            .collect();
        for name in names {
            let loc = self.fetcher.site(&name);
            let sig = self.fetch_signature(&loc)?;
            let own = self.check_comment(&sig, key, &name)?;
            let signed = self.finish_signed(&loc, sig, own, key, &name)?;
            self.check_same_build(&name, &signed.stamp, stamp)?;
            self.check_listed(manifest, &name, &signed.data);
        }
        Ok(())
    }

    /// A next key announced by this build: signed by the current key. With
    /// a state file, remembered so that builds signed by it are accepted.
    fn check_next_key(
        &mut self,
        next: &NextKey,
        key: &PublicKey,
        stamp: &BuildStamp,
        state: &mut State,
    ) -> Step<()> {
        let loc = self.fetcher.site(NEXT_PUBLIC_KEY);
        let sig = self.fetch_signature(&loc)?;
        let own = self.check_comment(&sig, key, NEXT_PUBLIC_KEY)?;
        let signed = self.finish_signed(&loc, sig, own, key, NEXT_PUBLIC_KEY)?;
        if signed.stamp.sequence != stamp.sequence {
            return self.stop(
                "key",
                format!("{NEXT_PUBLIC_KEY} comes from another build (mix-and-match)"),
            );
        }
        let announced = String::from_utf8_lossy(&signed.data).into_owned();
        let public = match PublicKey::from_file(Path::new(NEXT_PUBLIC_KEY), &announced) {
            Ok(p) => p,
            Err(e) => return self.stop("key", e.to_string()),
        };
        if public.key_id.to_string() != next.key_id || public.to_base64() != next.key {
            return self.stop(
                "key",
                format!(
                    "the feed's vmcast:nextPublicKey differs from the signed {NEXT_PUBLIC_KEY}"
                ),
            );
        }
        state.announce(&public, key);
        self.pass(
            "key",
            format!(
                "next key {} announced, signed by key {}{}",
                public.key_id,
                key.key_id,
                if self.options.state.is_some() {
                    "; remembered in the state file"
                } else {
                    ""
                }
            ),
        );
        Ok(())
    }

    fn check_images(&mut self, doc: &FeedDoc) {
        for item in &doc.items {
            for image in &item.images {
                match self.fetcher.read_image(image) {
                    Ok((digest, read)) => {
                        self.report.images_read += read;
                        if digest.to_hex() == image.sha256 {
                            self.pass(
                                "images",
                                format!("{}: {} bytes, SHA-256 matches", image.path, image.length),
                            );
                        } else {
                            self.fail(
                                "images",
                                format!(
                                    "{}: SHA-256 mismatch: the feed says {}, the file hashes to {}",
                                    image.path,
                                    image.sha256,
                                    digest.to_hex()
                                ),
                            );
                        }
                    }
                    Err(m) => self.fail("images", format!("{}: {m}", image.path)),
                }
            }
        }
    }
}

/// Parses a GNU `sha256sum` manifest, undoing its escapes.
pub fn parse_manifest(data: &[u8]) -> std::result::Result<BTreeMap<String, Sha256>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_owned())?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = || format!("line {} is not `<sha256>  <name>`", n + 1);
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (hex, name) = line.split_once("  ").ok_or_else(bad)?;
        let digest = Sha256::from_hex(hex).ok_or_else(bad)?;
        let name = if escaped {
            unescape(name).ok_or_else(bad)?
        } else {
            name.to_owned()
        };
        if out.insert(name.clone(), digest).is_some() {
            return Err(format!("lists {name:?} twice"));
        }
    }
    Ok(out)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

// ---- the feed, as far as verification needs it ----

#[derive(Debug, Default)]
struct FeedDoc {
    link: Option<String>,
    sequence: Option<u64>,
    download_base: Option<String>,
    /// Every URL the channel points at, besides the items'.
    channel_urls: Vec<String>,
    next_key: Option<NextKey>,
    items: Vec<Item>,
}

#[derive(Debug, Default)]
struct NextKey {
    key_id: String,
    key: String,
}

#[derive(Debug, Default)]
struct Item {
    guid: String,
    link: Option<String>,
    enclosure: Option<(String, u64)>,
    images: Vec<FeedImage>,
    /// (url, length, sri) of each podcast:alternateEnclosure.
    alternates: Vec<(String, u64, String)>,
}

#[derive(Debug, Default, Clone)]
struct FeedImage {
    url: String,
    path: String,
    length: u64,
    sha256: String,
    primary: bool,
}

impl FeedDoc {
    fn urls(&self) -> impl Iterator<Item = &String> {
        self.channel_urls
            .iter()
            .chain(self.items.iter().flat_map(|i| {
                i.link
                    .iter()
                    .chain(i.enclosure.iter().map(|e| &e.0))
                    .chain(i.images.iter().map(|im| &im.url))
                    .chain(i.alternates.iter().map(|a| &a.0))
            }))
    }

    fn parse(data: &[u8]) -> std::result::Result<Self, String> {
        let mut reader = quick_xml::Reader::from_reader(data);
        let mut buf = Vec::new();
        let mut path: Vec<String> = Vec::new();
        let mut doc = FeedDoc::default();
        let mut text = String::new();
        // The alternate enclosure being read: (length, url, sri).
        let mut alt: Option<(u64, String, String)> = None;
        loop {
            let event = reader.read_event_into(&mut buf).map_err(|e| {
                format!(
                    "not well-formed XML at byte {}: {e}",
                    reader.error_position()
                )
            })?;
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let name = e.name().as_ref().to_owned();
                    let attrs = attributes(e)?;
                    let parent = path.last().map(String::as_str);
                    match (parent, name.as_str()) {
                        (Some("channel"), "item") => doc.items.push(Item::default()),
                        (Some("channel"), "atom:link") => {
                            doc.channel_urls.extend(attrs.get("href").cloned())
                        }
                        (Some("channel"), "vmcast:manifest") => doc.channel_urls.extend(
                            ["href", "signature"]
                                .iter()
                                .filter_map(|k| attrs.get(*k).cloned()),
                        ),
                        (Some("channel"), "vmcast:publicKey" | "vmcast:signature") => {
                            doc.channel_urls.extend(attrs.get("href").cloned())
                        }
                        (Some("channel"), "vmcast:downloadBase") => {
                            doc.download_base = attrs.get("href").cloned()
                        }
                        (Some("channel"), "vmcast:nextPublicKey") => {
                            doc.channel_urls.extend(
                                ["href", "signature"]
                                    .iter()
                                    .filter_map(|k| attrs.get(*k).cloned()),
                            );
                            doc.next_key = Some(NextKey {
                                key_id: attrs.get("keyId").cloned().unwrap_or_default(),
                                key: String::new(),
                            });
                        }
                        (Some("item"), "enclosure") => {
                            let item = doc.items.last_mut().ok_or("enclosure outside an item")?;
                            item.enclosure = Some((
                                attrs.get("url").cloned().unwrap_or_default(),
                                number(&attrs, "length")?,
                            ));
                        }
                        (Some("item"), "vmcast:image") => {
                            let item =
                                doc.items.last_mut().ok_or("vmcast:image outside an item")?;
                            item.images.push(FeedImage {
                                url: attrs.get("url").cloned().unwrap_or_default(),
                                path: attrs.get("path").cloned().unwrap_or_default(),
                                length: number(&attrs, "length")?,
                                sha256: attrs.get("sha256").cloned().unwrap_or_default(),
                                primary: attrs.get("primary").map(String::as_str) == Some("true"),
                            });
                        }
                        (Some("item"), "podcast:alternateEnclosure") => {
                            alt = Some((number(&attrs, "length")?, String::new(), String::new()));
                        }
                        (Some("podcast:alternateEnclosure"), "podcast:source") => {
                            if let Some(a) = alt.as_mut() {
                                a.1 = attrs.get("uri").cloned().unwrap_or_default();
                            }
                        }
                        (Some("podcast:alternateEnclosure"), "podcast:integrity") => {
                            if let Some(a) = alt.as_mut() {
                                a.2 = attrs.get("value").cloned().unwrap_or_default();
                            }
                        }
                        _ => {}
                    }
                    if matches!(event, Event::Start(_)) {
                        path.push(name);
                        text.clear();
                    } else if name == "podcast:alternateEnclosure" {
                        close_alternate(&mut doc, &mut alt)?;
                    }
                }
                Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
                Event::GeneralRef(r) => {
                    if let Some(c) = r
                        .resolve_char_ref()
                        .map_err(|e| format!("bad reference: {e}"))?
                    {
                        text.push(c);
                    } else {
                        text.push_str(match r.as_ref() {
                            "lt" => "<",
                            "gt" => ">",
                            "amp" => "&",
                            "quot" => "\"",
                            "apos" => "'",
                            other => return Err(format!("unknown entity &{other};")),
                        });
                    }
                }
                Event::End(_) => {
                    let name = path.pop().unwrap_or_default();
                    let parent = path.last().map(String::as_str);
                    let value = std::mem::take(&mut text);
                    match (parent, name.as_str()) {
                        (Some("channel"), "link") => doc.link = Some(value),
                        (Some("channel"), "vmcast:sequence") => {
                            doc.sequence = value.trim().parse().ok()
                        }
                        (Some("channel"), "vmcast:nextPublicKey") => {
                            if let Some(k) = doc.next_key.as_mut() {
                                k.key = value.trim().to_owned();
                            }
                        }
                        (Some("item"), "guid") => {
                            if let Some(item) = doc.items.last_mut() {
                                item.guid = value;
                            }
                        }
                        (Some("item"), "link") => {
                            if let Some(item) = doc.items.last_mut() {
                                item.link = Some(value);
                            }
                        }
                        (Some("item"), "podcast:alternateEnclosure") => {
                            close_alternate(&mut doc, &mut alt)?
                        }
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if doc.link.is_none() {
            return Err("not an RSS feed: no channel link".into());
        }
        Ok(doc)
    }
}

fn close_alternate(
    doc: &mut FeedDoc,
    alt: &mut Option<(u64, String, String)>,
) -> std::result::Result<(), String> {
    if let Some((length, url, sri)) = alt.take() {
        let item = doc
            .items
            .last_mut()
            .ok_or("alternateEnclosure outside an item")?;
        item.alternates.push((url, length, sri));
    }
    Ok(())
}

fn attributes(
    e: &quick_xml::events::BytesStart,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("bad attribute: {err}"))?;
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("bad attribute value: {err}"))?
            .into_owned();
        out.insert(key, value);
    }
    Ok(out)
}

fn number(attrs: &BTreeMap<String, String>, key: &str) -> std::result::Result<u64, String> {
    attrs
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("missing or invalid `{key}` attribute"))
}

// ---- where the files come from ----

/// A file of the site, as shown to the user and as fetched.
#[derive(Debug, Clone)]
struct Location {
    display: String,
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    File(PathBuf),
    Url(Url),
}

impl Location {
    fn with_suffix(&self, suffix: &str) -> Location {
        Location {
            display: format!("{}{suffix}", self.display),
            target: match &self.target {
                Target::File(p) => {
                    let mut s = p.clone().into_os_string();
                    s.push(suffix);
                    Target::File(s.into())
                }
                Target::Url(u) => Target::Url(
                    Url::parse(&format!("{u}{suffix}")).expect("a URL with a suffix is a URL"),
                ),
            },
        }
    }
}

enum Fetcher {
    Dir {
        root: PathBuf,
        base: Option<Url>,
        http: Option<ureq::Agent>,
    },
    Http {
        base: Option<Url>,
        agent: ureq::Agent,
    },
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .max_redirects(5)
        .build()
        .into()
}

impl Fetcher {
    fn new(source: &str) -> Fetcher {
        if source.starts_with("http://") || source.starts_with("https://") {
            Fetcher::Http {
                base: None,
                agent: agent(),
            }
        } else {
            let path = Path::new(source);
            let root = if source.ends_with(".xml") {
                path.parent().unwrap_or(Path::new(".")).to_path_buf()
            } else {
                path.to_path_buf()
            };
            Fetcher::Dir {
                root,
                base: None,
                http: None,
            }
        }
    }

    /// Where the feed named by the source is.
    fn feed_location(&self, source: &str) -> std::result::Result<Location, String> {
        match self {
            Fetcher::Http { .. } => {
                let mut url =
                    Url::parse(source).map_err(|e| format!("invalid URL {source}: {e}"))?;
                if !url.path().ends_with(".xml") {
                    if !url.path().ends_with('/') {
                        let p = format!("{}/", url.path());
                        url.set_path(&p);
                    }
                    url = url.join(FEED).map_err(|e| e.to_string())?;
                }
                Ok(Location {
                    display: url.to_string(),
                    target: Target::Url(url),
                })
            }
            Fetcher::Dir { root, .. } => {
                let path = if source.ends_with(".xml") {
                    PathBuf::from(source)
                } else {
                    root.join(FEED)
                };
                let name = path.strip_prefix(root).unwrap_or(&path);
                Ok(Location {
                    display: name.display().to_string(),
                    target: Target::File(path),
                })
            }
        }
    }

    /// The feed's path relative to the site, as named in its signature.
    fn site_name(&self, feed: &Location, base: &Url) -> Option<String> {
        match (&feed.target, self) {
            (Target::Url(u), _) => u.as_str().strip_prefix(base.as_str()).map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            }),
            (Target::File(p), Fetcher::Dir { root, .. }) => p
                .strip_prefix(root)
                .ok()
                .map(|r| r.to_string_lossy().into_owned()),
            (Target::File(_), Fetcher::Http { .. }) => None,
        }
    }

    fn set_base(&mut self, url: Url) {
        match self {
            Fetcher::Dir { base, .. } | Fetcher::Http { base, .. } => *base = Some(url),
        }
    }

    /// A file of the site by its path relative to the site.
    fn site(&self, rel: &str) -> Location {
        match self {
            Fetcher::Dir { root, .. } => {
                let path = root.join(rel);
                Location {
                    display: rel.to_owned(),
                    target: Target::File(path),
                }
            }
            Fetcher::Http { base, .. } => {
                let base = base
                    .as_ref()
                    .expect("the base is known before site files are fetched");
                let url = crate::config::join_url(base, rel);
                Location {
                    display: url.to_string(),
                    target: Target::Url(url),
                }
            }
        }
    }

    fn http(&mut self) -> &ureq::Agent {
        match self {
            Fetcher::Http { agent, .. } => agent,
            Fetcher::Dir { http, .. } => http.get_or_insert_with(agent),
        }
    }

    fn fetch(&mut self, loc: &Location, limit: u64) -> std::result::Result<Vec<u8>, String> {
        match &loc.target {
            Target::File(path) => {
                let meta = fsutil::metadata(path).map_err(|e| e.to_string())?;
                if meta.len() > limit {
                    return Err(format!("{} is larger than {limit} bytes", loc.display));
                }
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", loc.display))
            }
            Target::Url(url) => {
                let mut response = self
                    .http()
                    .get(url.as_str())
                    .call()
                    .map_err(|e| format!("cannot fetch {url}: {e}"))?;
                response
                    .body_mut()
                    .with_config()
                    .limit(limit)
                    .read_to_vec()
                    .map_err(|e| format!("cannot fetch {url}: {e}"))
            }
        }
    }

    /// Stream-hashes an image, reading at most one byte past its declared
    /// length so that an endless stream is cut off.
    fn read_image(&mut self, image: &FeedImage) -> std::result::Result<(Sha256, u64), String> {
        let local = match self {
            Fetcher::Dir { root, .. } => Some(root.join(&image.path)).filter(|p| p.exists()),
            Fetcher::Http { .. } => None,
        };
        let reader: Box<dyn Read> = match local {
            Some(path) => Box::new(
                std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            ),
            None => {
                let response = self
                    .http()
                    .get(&image.url)
                    .call()
                    .map_err(|e| format!("cannot fetch {}: {e}", image.url))?;
                Box::new(
                    response
                        .into_body()
                        .into_with_config()
                        .limit(image.length.saturating_add(1))
                        .reader(),
                )
            }
        };
        let mut limited = reader.take(image.length.saturating_add(1));
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut read: u64 = 0;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ureq reports reading past the limit as an error.
                Err(_) if read >= image.length => {
                    read = image.length + 1;
                    break;
                }
                Err(e) => return Err(format!("read failed after {read} bytes: {e}")),
            };
            read += n as u64;
            if read > image.length {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if read > image.length {
            return Err(format!(
                "longer than its declared {} bytes (endless data?); stopped reading",
                image.length
            ));
        }
        if read < image.length {
            return Err(format!(
                "shorter than declared: {read} of {} bytes",
                image.length
            ));
        }
        Ok((Sha256(hasher.finalize().into()), read))
    }
}

// ---- what a consumer remembers between runs ----

const STATE_FORMAT: &str = "vmcast-gen-verify-state-1";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format: String,
    keys: BTreeMap<String, KeyState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyState {
    public_key: String,
    /// The highest sequence seen signed by this key (0 when only announced).
    highest_sequence: u64,
    /// The key that announced this one, if it was learned by rotation.
    announced_by: Option<String>,
}

impl State {
    fn load(path: &Path) -> Result<State> {
        if !path.exists() {
            return Ok(State {
                format: STATE_FORMAT.into(),
                keys: BTreeMap::new(),
            });
        }
        let text = fsutil::read_to_string(path)?;
        let state: State = serde_json::from_str(&text).map_err(|e| {
            Error::at(
                path,
                crate::error::LineCol {
                    line: e.line(),
                    column: e.column(),
                },
                format_args!("not a verify state file: {e}"),
            )
        })?;
        if state.format != STATE_FORMAT {
            return Err(Error::file(
                path,
                format_args!(
                    "unknown state format {:?}; expected {STATE_FORMAT}",
                    state.format
                ),
            ));
        }
        Ok(state)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("the state serializes");
        text.push('\n');
        fsutil::write_new_file(path, text.as_bytes(), 0o644, true)
    }

    fn highest(&self) -> Option<(String, u64)> {
        self.keys
            .iter()
            .filter(|(_, k)| k.highest_sequence > 0)
            .max_by_key(|(_, k)| k.highest_sequence)
            .map(|(id, k)| (id.clone(), k.highest_sequence))
    }

    fn record(&mut self, key: &PublicKey, sequence: u64) {
        let entry = self
            .keys
            .entry(key.key_id.to_string())
            .or_insert_with(|| KeyState {
                public_key: key.to_base64(),
                highest_sequence: 0,
                announced_by: None,
            });
        entry.highest_sequence = entry.highest_sequence.max(sequence);
    }

    fn announce(&mut self, next: &PublicKey, by: &PublicKey) {
        self.keys
            .entry(next.key_id.to_string())
            .or_insert_with(|| KeyState {
                public_key: next.to_base64(),
                highest_sequence: 0,
                announced_by: Some(by.key_id.to_string()),
            });
    }

    /// A key learned from an announcement chain that starts at `pinned`.
    fn announced_key(&self, id: &str, pinned: &PublicKey) -> Option<PublicKey> {
        let pinned_id = pinned.key_id.to_string();
        let mut current = id.to_owned();
        // A chain longer than the number of keys would be a cycle.
        for _ in 0..=self.keys.len() {
            let entry = self.keys.get(&current)?;
            match &entry.announced_by {
                Some(by) if *by == pinned_id => {
                    return PublicKey::from_base64(&self.keys.get(id)?.public_key).ok();
                }
                Some(by) => current = by.clone(),
                None => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_parse_with_escapes() {
        let zeros = "0".repeat(64);
        let text = format!("{zeros}  a b\n\\{zeros}  c\\\\d\\ne\n");
        let m = parse_manifest(text.as_bytes()).unwrap();
        assert!(m.contains_key("a b"));
        assert!(m.contains_key("c\\d\ne"));
        assert!(parse_manifest(b"xyz  a\n").is_err());
        assert!(parse_manifest(format!("{zeros}  a\n{zeros}  a\n").as_bytes()).is_err());
    }
}
