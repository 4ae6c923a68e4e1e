//! The checks, in the order a consumer must make them. Each records its
//! outcome in the report; a failure that makes the rest meaningless stops.

use std::collections::BTreeMap;
use std::path::Path;

use url::Url;

use super::catalogs::{self, Published};
use super::feed::{FeedDoc, FeedImage, NextKey};
use super::fetch::{Fetcher, Location};
use super::state::State;
use super::urls::SiteUrls;
use super::{Check, CheckKind, Report, VerifyOptions};
use crate::catalog::{simplestreams, vagrant, virt_builder};
use crate::media::{FEED, MANIFEST, NEXT_PUBLIC_KEY};
use crate::model::{MAX_TEXT_FILE, RelPath, Sha256};
use crate::openpgp;
use crate::sign::{PublicKey, Signature, VerifyError};
use crate::trust::BuildStamp;

/// A fatal failure, already recorded in the report.
pub(super) struct Stop;

type Step<T> = std::result::Result<T, Stop>;

pub(super) struct Verifier<'a> {
    pub(super) options: &'a VerifyOptions,
    pub(super) fetcher: Fetcher,
    pub(super) report: Report,
}

/// A signed file with its verified build stamp.
struct Signed {
    data: Vec<u8>,
    stamp: BuildStamp,
}

impl Verifier<'_> {
    fn pass(&mut self, check: CheckKind, detail: impl Into<String>) {
        self.report.checks.push(Check {
            check,
            ok: true,
            detail: detail.into(),
        });
    }

    fn fail(&mut self, check: CheckKind, detail: impl Into<String>) {
        self.report.checks.push(Check {
            check,
            ok: false,
            detail: detail.into(),
        });
    }

    fn stop<T>(&mut self, check: CheckKind, detail: impl Into<String>) -> Step<T> {
        self.fail(check, detail);
        Err(Stop)
    }

    pub(super) fn run(&mut self, state: &mut State) -> Step<()> {
        let feed_loc = match self.fetcher.feed_location(&self.options.source) {
            Ok(loc) => loc,
            Err(m) => return self.stop(CheckKind::Source, m),
        };
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
                    format!(
                        "{} is not under the base_url it was signed for ({base})",
                        feed_loc.display
                    ),
                );
            }
        };
        self.fetcher.set_base(base.clone());
        let feed = self.finish_signed(&feed_loc, feed_sig, feed_stamp, &key, &feed_name)?;
        self.report.feed = Some(feed.data.clone());

        let manifest_loc = self.fetcher.site(&known(MANIFEST));
        let sums_sig = self.fetch_signature(&manifest_loc)?;
        let sums_stamp = self.check_comment(&sums_sig, &key, MANIFEST)?;
        let sums = self.finish_signed(&manifest_loc, sums_sig, sums_stamp, &key, MANIFEST)?;

        self.check_same_build(&feed_name, &feed.stamp, &sums.stamp)?;
        self.report.sequence = Some(feed.stamp.sequence);
        self.check_expiry(&feed.stamp);
        self.check_rollback(state, &key, feed.stamp.sequence);

        let manifest = match crate::sums::parse(&sums.data) {
            Ok(m) => m,
            Err(m) => return self.stop(CheckKind::Manifest, format!("{MANIFEST}: {m}")),
        };
        self.check_listed(&manifest, &feed_name, &feed.data);
        if manifest.contains_key(openpgp::PUBLIC_KEY) {
            self.check_openpgp(&manifest, &sums.data);
        }
        let doc = match FeedDoc::parse(&feed.data) {
            Ok(d) => d,
            Err(m) => return self.stop(CheckKind::Feed, format!("{feed_name}: {m}")),
        };
        let site_urls = SiteUrls::new(&base, doc.download_base.as_deref(), &doc.mirror_roots);
        self.check_feed(&doc, &feed_name, &feed.stamp, &base, &site_urls, &manifest);
        if feed_name == FEED {
            self.check_appliance_feeds(&manifest, &key, &feed.stamp)?;
        }
        let next = match &doc.next_key {
            Some(next) => Some(self.check_next_key(next, &key, &feed.stamp, state)?),
            None => None,
        };
        if self.options.state.is_some() {
            let withdrawn = state.withdraw(&key, next.as_ref());
            if !withdrawn.is_empty() {
                self.pass(
                    CheckKind::Key,
                    format!(
                        "key {} no longer announced by key {}; forgotten",
                        withdrawn.join(", "),
                        key.key_id
                    ),
                );
            }
        }
        if self.options.images {
            self.check_images(&doc, &site_urls);
            self.check_boxes(&doc, &base, &site_urls);
        }
        if self.options.supply {
            self.check_supply(&doc, &site_urls);
        }
        if self.options.mirrors {
            self.check_mirrors(&doc, &site_urls);
        }
        if feed_name == FEED {
            let archives = self.check_archives(&doc, &base, &manifest, &key, &feed.stamp)?;
            let mut published = Published::default();
            published.add(&doc);
            for archive in &archives {
                published.add(archive);
            }
            self.check_catalogs(&published, &base, &manifest, &key, &feed.stamp)?;
            self.check_vagrant(&published, &manifest, &base);
        }
        Ok(())
    }

    /// The catalogs the manifest lists, each held against the feed and its
    /// archives (already verified): signed pages must be signed in this
    /// build, and every file must have the listed digest and list the
    /// feed's images as the feed does.
    fn check_catalogs(
        &mut self,
        published: &Published,
        base: &Url,
        manifest: &BTreeMap<String, Sha256>,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<()> {
        let names: Vec<String> = manifest
            .keys()
            .filter(|n| catalogs::is_json_feed(n))
            .cloned()
            .collect();
        for name in names {
            let data = self.fetch_signed_listed(&name, manifest, key, stamp)?;
            let held = catalogs::check_json_feed(&data, published, base)
                .map(|n| format!("{n} release(s), as the feed lists them"));
            self.report_catalog(&name, held);
        }
        if manifest.contains_key(virt_builder::INDEX) {
            self.check_virt_builder(published, manifest, &stamp.base_url);
        }
        if manifest.contains_key(simplestreams::INDEX) {
            self.check_simplestreams(base, manifest, published);
        }
        Ok(())
    }

    /// The Vagrant catalogs the manifest lists, held against the boxes the
    /// feed and its archives name. They are not signed: SHA256SUMS vouches
    /// for them. An appliance whose boxes the feeds name must have its
    /// catalog listed, as every other file the feeds name must be.
    fn check_vagrant(
        &mut self,
        published: &Published,
        manifest: &BTreeMap<String, Sha256>,
        base: &Url,
    ) {
        for (appliance, releases) in catalogs::boxed_releases(published) {
            let name = vagrant::catalog_path(appliance);
            if !manifest.contains_key(&name) {
                self.fail(
                    CheckKind::Catalog,
                    format!(
                        "{name}: not listed in {MANIFEST}, but the feed names Vagrant boxes \
                         of {}: `vagrant box add` would find no catalog",
                        releases.join(", ")
                    ),
                );
            }
        }
        let names: Vec<String> = manifest
            .keys()
            .filter(|n| catalogs::vagrant_appliance(n).is_some())
            .cloned()
            .collect();
        for name in names {
            let appliance = catalogs::vagrant_appliance(&name).unwrap_or_default();
            let Some(data) = self.fetch_listed(manifest, &name) else {
                continue;
            };
            let held = catalogs::check_vagrant(appliance, &data, published, base)
                .map(|n| format!("{n} version(s), the boxes the feed lists"));
            self.report_catalog(&name, held);
        }
    }

    /// `virt-builder/index`, which is not signed itself but listed in the
    /// signed manifest, held against the feeds.
    fn check_virt_builder(
        &mut self,
        published: &Published,
        manifest: &BTreeMap<String, Sha256>,
        base_url: &str,
    ) {
        let name = virt_builder::INDEX;
        let Some(data) = self.fetch_listed(manifest, name) else {
            return;
        };
        let held = catalogs::check_virt_builder(&data, base_url, published)
            .map(|n| format!("{n} template(s), as the feed lists them"));
        self.report_catalog(name, held);
        if manifest.contains_key(openpgp::PUBLIC_KEY)
            && let Some(key) = self.fetch_openpgp_key(CheckKind::Catalog)
        {
            let index_asc = virt_builder::INDEX_ASC;
            self.check_clearsigned(CheckKind::Catalog, &key, index_asc, &data, name);
        }
    }

    /// How a catalog held against the feeds: what it lists, or each
    /// disagreement.
    fn report_catalog(&mut self, name: &str, held: std::result::Result<String, Vec<String>>) {
        match held {
            Ok(detail) => self.pass(CheckKind::Catalog, format!("{name}: {detail}")),
            Err(problems) => {
                for p in problems {
                    self.fail(CheckKind::Catalog, format!("{name}: {p}"));
                }
            }
        }
    }

    /// A catalog file the manifest must list, as fetched; `None` (with the
    /// failure recorded) when it cannot be had.
    fn fetch_listed(&mut self, manifest: &BTreeMap<String, Sha256>, name: &str) -> Option<Vec<u8>> {
        let fetched = RelPath::parse(name).and_then(|rel| {
            let loc = self.fetcher.site(&rel);
            self.fetcher.fetch(&loc, MAX_TEXT_FILE)
        });
        match fetched {
            Ok(data) => {
                self.check_listed(manifest, name, &data);
                Some(data)
            }
            Err(m) => {
                self.fail(CheckKind::Catalog, format!("{name}: {m}"));
                None
            }
        }
    }

    /// The simplestreams index and the products files it names, each
    /// listed in the manifest and held against the feeds.
    fn check_simplestreams(
        &mut self,
        base: &Url,
        manifest: &BTreeMap<String, Sha256>,
        published: &Published,
    ) {
        let index = simplestreams::INDEX;
        let Some(data) = self.fetch_listed(manifest, index) else {
            return;
        };
        let paths = match catalogs::simplestreams_products(&data) {
            Ok(paths) => paths,
            Err(m) => return self.fail(CheckKind::Catalog, format!("{index}: {m}")),
        };
        let mut products = None;
        for path in paths {
            let Some(data) = self.fetch_listed(manifest, &path) else {
                continue;
            };
            if path == simplestreams::PRODUCTS {
                products = Some(data.clone());
            }
            let held = catalogs::check_simplestreams(&data, base, manifest, published)
                .map(|n| format!("{n} item(s), as the feed and {MANIFEST} list them"));
            self.report_catalog(&path, held);
        }
        if let Some(products) = products.filter(|_| manifest.contains_key(openpgp::PUBLIC_KEY)) {
            self.check_signed_simplestreams(&data, &products);
        }
    }

    /// A small file of the site, by its own name.
    fn fetch_site_file(&mut self, name: &str) -> std::result::Result<Vec<u8>, String> {
        let loc = self.fetcher.site(&known(name));
        self.fetcher.fetch(&loc, MAX_TEXT_FILE)
    }

    /// With an OpenPGP key, the clearsigned forms: each signed by the
    /// site's key (listed in the manifest, checked by [`Self::check_openpgp`]),
    /// `images.sjson` signing the text of `images.json`, and `index.sjson`
    /// that of `index.json` naming `images.sjson`.
    fn check_signed_simplestreams(&mut self, index: &[u8], products: &[u8]) {
        let named = String::from_utf8_lossy(index).replace(
            &format!("\"{}\"", simplestreams::PRODUCTS),
            &format!("\"{}\"", simplestreams::SIGNED_PRODUCTS),
        );
        let Some(key) = self.fetch_openpgp_key(CheckKind::Catalog) else {
            return;
        };
        let forms = [
            (
                simplestreams::SIGNED_INDEX,
                named.as_bytes(),
                simplestreams::INDEX,
            ),
            (
                simplestreams::SIGNED_PRODUCTS,
                products,
                simplestreams::PRODUCTS,
            ),
        ];
        for (name, text, of) in forms {
            self.check_clearsigned(CheckKind::Catalog, &key, name, text, of);
        }
    }

    /// The site's OpenPGP public key, `openpgp.asc`, as published; `None`,
    /// with the failure recorded, when it cannot be had.
    fn fetch_openpgp_key(&mut self, kind: CheckKind) -> Option<String> {
        match self.fetch_site_file(openpgp::PUBLIC_KEY) {
            Ok(key) => Some(String::from_utf8_lossy(&key).into_owned()),
            Err(m) => {
                self.fail(kind, m);
                None
            }
        }
    }

    /// A cleartext-signed file of the site, `name`: it must verify against
    /// the site's OpenPGP key and sign `text`, the text of `of`, as the
    /// signature covers it (each line without trailing blanks).
    fn check_clearsigned(&mut self, kind: CheckKind, key: &str, name: &str, text: &[u8], of: &str) {
        let signed = match self.fetch_site_file(name) {
            Ok(signed) => signed,
            Err(m) => return self.fail(kind, m),
        };
        let signed_form = |text: &str| {
            let lines: Vec<&str> = text
                .lines()
                .map(|l| l.trim_end_matches([' ', '\t']))
                .collect();
            lines.join("\n").trim_end_matches('\n').to_owned()
        };
        match openpgp::verify(key, name, &String::from_utf8_lossy(&signed)) {
            Ok(v) if signed_form(&v.text) == signed_form(&String::from_utf8_lossy(text)) => self
                .pass(
                    kind,
                    format!(
                        "{name}: good signature by OpenPGP key {} of the text of {of}",
                        v.fingerprint
                    ),
                ),
            Ok(_) => self.fail(kind, format!("{name} signs a text other than {of}")),
            Err(m) => self.fail(kind, m),
        }
    }

    /// Follows the feed's prev-archive links (RFC 5005) to the oldest
    /// archive: each must be signed by the same key in the same build,
    /// listed in the manifest, an archive document, and its items must
    /// agree with the manifest. With `--images --all`, their images are read.
    /// Returns them parsed, newest first.
    fn check_archives(
        &mut self,
        feed: &FeedDoc,
        base: &Url,
        manifest: &BTreeMap<String, Sha256>,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<Vec<FeedDoc>> {
        let mut docs = Vec::new();
        let mut next = feed.prev_archive.clone();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(href) = next.take() {
            let Some(rel) = Url::parse(&href)
                .ok()
                .and_then(|u| u.as_str().strip_prefix(base.as_str()).map(str::to_owned))
                .and_then(|r| RelPath::parse(&r).ok())
            else {
                return self.stop(
                    CheckKind::Archive,
                    format!("prev-archive {href} is not a file of the site"),
                );
            };
            let name = rel.as_str().to_owned();
            if !seen.insert(name.clone()) {
                return self.stop(
                    CheckKind::Archive,
                    format!("the archive chain loops back to {name}"),
                );
            }
            let loc = self.fetcher.site(&rel);
            let sig = self.fetch_signature(&loc)?;
            let own = self.check_comment(&sig, key, &name)?;
            let signed = self.finish_signed(&loc, sig, own, key, &name)?;
            self.check_same_build(&name, &signed.stamp, stamp)?;
            self.check_listed(manifest, &name, &signed.data);
            let doc = match FeedDoc::parse(&signed.data) {
                Ok(d) => d,
                Err(m) => return self.stop(CheckKind::Archive, format!("{name}: {m}")),
            };
            if !doc.archive {
                return self.stop(
                    CheckKind::Archive,
                    format!("{name}: not an archive document (no fh:archive)"),
                );
            }
            let urls = SiteUrls::new(base, doc.download_base.as_deref(), &doc.mirror_roots);
            self.check_feed(&doc, &name, stamp, base, &urls, manifest);
            self.pass(
                CheckKind::Archive,
                format!(
                    "{name}: {} release(s), signed in this build, listed in {MANIFEST}",
                    doc.items.len()
                ),
            );
            if self.options.images && self.options.all {
                self.check_images(&doc, &urls);
                self.check_boxes(&doc, base, &urls);
            }
            if self.options.supply && self.options.all {
                self.check_supply(&doc, &urls);
            }
            if self.options.mirrors && self.options.all {
                self.check_mirrors(&doc, &urls);
            }
            self.report.archives.push(signed.data);
            next = doc.prev_archive.clone();
            docs.push(doc);
        }
        Ok(docs)
    }

    /// Reads every image from each mirror the feed lists for it (or only
    /// from `--mirror` ones) and reports, per mirror, each image that is
    /// missing, short or different.
    fn check_mirrors(&mut self, doc: &FeedDoc, site_urls: &SiteUrls) {
        for item in &doc.items {
            for (primary, mirror) in &item.mirrors {
                if !self.options.mirror_sample.is_empty()
                    && !self
                        .options
                        .mirror_sample
                        .iter()
                        .any(|m| mirror.starts_with(m.as_str()))
                {
                    continue;
                }
                let Some(image) = item.images.iter().find(|i| &i.url == primary) else {
                    continue;
                };
                let Some(url) = site_urls.accept(mirror) else {
                    self.fail(
                        CheckKind::Mirrors,
                        format!("{mirror}: not fetched: outside the site and its mirrors"),
                    );
                    continue;
                };
                match self.fetcher.read_image(image, &url, false) {
                    Ok((digest, _, _)) if digest.to_hex() == image.sha256 => self.pass(
                        CheckKind::Mirrors,
                        format!("{mirror}: {} bytes, SHA-256 matches", image.length),
                    ),
                    Ok((digest, _, _)) => self.fail(
                        CheckKind::Mirrors,
                        format!(
                            "{mirror}: different: SHA-256 {} where the feed says {}",
                            digest.to_hex(),
                            image.sha256
                        ),
                    ),
                    Err(m) => self.fail(CheckKind::Mirrors, format!("{mirror}: {m}")),
                }
            }
        }
    }

    /// The site the build was signed for is the one the consumer expects:
    /// the one given with `--site`, and the one the state file tracks (the
    /// first one it saw, when it tracks none yet).
    fn check_site(&mut self, base: &Url, state: &mut State) -> Step<()> {
        if let Some(site) = &self.options.site {
            if site != base {
                return self.stop(
                    CheckKind::Site,
                    format!("the build was signed for the site {base}, not {site} (--site)"),
                );
            }
            self.pass(
                CheckKind::Site,
                format!("the build was signed for {base} (--site)"),
            );
        }
        if self.options.state.is_none() {
            return Ok(());
        }
        match state.site() {
            Some(tracked) if tracked != base.as_str() => self.stop(
                CheckKind::Site,
                format!(
                    "the build was signed for the site {base}, but the state file tracks \
                     {tracked}: another site signed by the same key"
                ),
            ),
            Some(_) => {
                self.pass(
                    CheckKind::Site,
                    format!("{base} is the site the state file tracks"),
                );
                Ok(())
            }
            None => {
                state.bind_site(base);
                self.pass(
                    CheckKind::Site,
                    format!("first sight; tracking the site {base}"),
                );
                Ok(())
            }
        }
    }

    /// The pinned key, or a key the state file learned from a signed
    /// announcement by a key already trusted.
    fn choose_key(&mut self, sig: &Signature, state: &State, what: &str) -> Step<PublicKey> {
        let pinned = &self.options.pinned;
        if sig.key_id == pinned.key_id {
            return Ok(pinned.clone());
        }
        if let Some(key) = self
            .options
            .also_trusted
            .iter()
            .find(|k| k.key_id == sig.key_id)
        {
            return Ok(key.clone());
        }
        if let Some(key) = state.announced_key(&sig.key_id.to_string(), pinned) {
            self.pass(
                CheckKind::Key,
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
            CheckKind::Signature,
            format!(
                "{what}: signed by key {}, not the pinned key {}{hint}",
                sig.key_id, pinned.key_id
            ),
        )
    }

    fn fetch_signature(&mut self, loc: &Location) -> Step<Signature> {
        let sig_loc = loc.with_suffix(".minisig");
        let text = match self.fetcher.fetch(&sig_loc, MAX_TEXT_FILE) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(m) => return self.stop(CheckKind::Signature, m),
        };
        match Signature::from_file(Path::new(&sig_loc.display), &text) {
            Ok(sig) => Ok(sig),
            Err(e) => self.stop(CheckKind::Signature, e.to_string()),
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
            return self.stop(CheckKind::Signature, detail);
        }
        match BuildStamp::parse(&sig.trusted_comment) {
            Ok(stamp) => Ok(stamp),
            Err(m) => self.stop(CheckKind::Signature, format!("{what}: {m}")),
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
                CheckKind::Signature,
                format!(
                    "{name}.minisig is the signature of {}, not {name} (swapped signature files?)",
                    stamp.file
                ),
            );
        }
        let data = match self.fetcher.fetch(loc, MAX_TEXT_FILE) {
            Ok(d) => d,
            Err(m) => return self.stop(CheckKind::Signature, m),
        };
        if sig.verify_data(key, &data).is_err() {
            return self.stop(
                CheckKind::Signature,
                format!("{name}: signature does not match its contents (tampered or corrupt)"),
            );
        }
        self.pass(
            CheckKind::Signature,
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
                CheckKind::Build,
                format!(
                    "{feed_name} (sequence {}) and {MANIFEST} (sequence {}) come from different builds (mix-and-match)",
                    feed.sequence, sums.sequence
                ),
            );
        }
        self.pass(
            CheckKind::Build,
            format!(
                "{feed_name} and {MANIFEST} come from one build, sequence {}",
                feed.sequence
            ),
        );
        Ok(())
    }

    fn check_expiry(&mut self, stamp: &BuildStamp) {
        match stamp.expires_at() {
            None if stamp.expires.is_some() => {
                self.fail(CheckKind::Expiry, "signed expiry is out of range")
            }
            None => self.pass(CheckKind::Expiry, "the publisher set no expiry"),
            Some(at) => {
                let when = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
                self.report.expires = Some(when.clone());
                if self.options.now > at {
                    self.fail(
                        CheckKind::Expiry,
                        format!(
                            "expired at {when}: the publisher has not re-signed the site since \
                             (stale mirror, stalled release job, or a freeze attack)"
                        ),
                    );
                } else {
                    self.pass(CheckKind::Expiry, format!("valid until {when}"));
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
                CheckKind::Rollback,
                format!(
                    "rollback: sequence {sequence} is older than sequence {seen} already seen (key {id})"
                ),
            ),
            seen => {
                state.record(key, sequence);
                self.pass(
                    CheckKind::Rollback,
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
            Some(d) if *d == Sha256::of(data) => self.pass(
                CheckKind::Manifest,
                format!("{name}'s SHA-256 matches {MANIFEST}"),
            ),
            Some(_) => self.fail(
                CheckKind::Manifest,
                format!("{name}'s SHA-256 differs from the one in {MANIFEST}"),
            ),
            None => self.fail(
                CheckKind::Manifest,
                format!("{MANIFEST} does not list {name}"),
            ),
        }
    }

    fn check_feed(
        &mut self,
        doc: &FeedDoc,
        name: &str,
        stamp: &BuildStamp,
        base: &Url,
        site_urls: &SiteUrls,
        manifest: &BTreeMap<String, Sha256>,
    ) {
        if doc.link.as_deref() != Some(base.as_str()) {
            self.fail(
                CheckKind::Feed,
                format!(
                    "{name}: channel link {:?} is not the signed base_url {base}",
                    doc.link.as_deref().unwrap_or("")
                ),
            );
        }
        // An archive never changes, so it names no build's sequence; its
        // signature's stamp ties it to this build.
        if !doc.archive && doc.sequence != Some(stamp.sequence) {
            self.fail(
                CheckKind::Feed,
                format!(
                    "{name}: vmcast:sequence does not match the signed sequence {}",
                    stamp.sequence
                ),
            );
        }
        let outside: Vec<&String> = doc
            .urls()
            .filter(|u| site_urls.accept(u).is_none())
            .collect();
        if outside.is_empty() {
            self.pass(
                CheckKind::Urls,
                format!(
                    "every URL in {name} is under {}",
                    site_urls.describe(" or ")
                ),
            );
        } else {
            let first = outside[0].clone();
            let count = outside.len();
            self.fail(
                CheckKind::Urls,
                format!(
                    "{name}: {count} URL(s) outside the site ({}), e.g. {first}",
                    site_urls.describe(" and ")
                ),
            );
        }

        let mut problems = Vec::new();
        for item in &doc.items {
            if item.images.is_empty() {
                // A release of cloud images only: nothing to enclose or hash.
                if item.cloud_images == 0 {
                    problems.push(format!(
                        "item {:?} has neither an image nor a cloud image",
                        item.guid
                    ));
                } else if item.enclosure.is_some() || !item.alternates.is_empty() {
                    problems.push(format!(
                        "item {:?} encloses a file but lists no vmcast:image",
                        item.guid
                    ));
                }
                continue;
            }
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
                match manifest.get(image.path.as_str()) {
                    Some(d) if d.to_hex() == image.sha256 => {}
                    Some(_) => problems.push(format!(
                        "{}: the feed's SHA-256 differs from {MANIFEST}'s",
                        image.path
                    )),
                    None => problems.push(format!("{}: not listed in {MANIFEST}", image.path)),
                }
                if let Some((path, _, sha256)) = &image.vagrant_box {
                    match manifest.get(path.as_str()) {
                        Some(d) if d.to_hex() == *sha256 => {}
                        Some(_) => problems.push(format!(
                            "{path}: the feed's SHA-256 differs from {MANIFEST}'s"
                        )),
                        None => problems.push(format!("{path}: not listed in {MANIFEST}")),
                    }
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
        for item in &doc.items {
            for file in &item.supply {
                match manifest.get(file.path.as_str()) {
                    Some(d) if d.to_hex() == file.sha256 => {}
                    Some(_) => problems.push(format!(
                        "{}: the feed's SHA-256 differs from {MANIFEST}'s",
                        file.path
                    )),
                    None => problems.push(format!("{}: not listed in {MANIFEST}", file.path)),
                }
                if let Some(image) = &file.image
                    && !item.images.iter().any(|i| i.name == *image)
                {
                    problems.push(format!(
                        "{}: about {image}, which is no image of item {:?}",
                        file.path, item.guid
                    ));
                }
            }
        }
        self.report.releases += doc.items.len();
        self.report.images += doc.items.iter().map(|i| i.images.len()).sum::<usize>();
        if problems.is_empty() {
            let clouds: usize = doc.items.iter().map(|i| i.cloud_images).sum();
            self.pass(
                CheckKind::Items,
                format!(
                    "{name}: {} release(s), {} image(s) agree with {MANIFEST}{}",
                    doc.items.len(),
                    doc.items.iter().map(|i| i.images.len()).sum::<usize>(),
                    match clouds {
                        0 => String::new(),
                        n => format!(
                            "; {n} cloud image(s) named, whose content the feed does not hash"
                        ),
                    }
                ),
            );
        } else {
            for p in problems {
                self.fail(CheckKind::Items, format!("{name}: {p}"));
            }
        }
    }

    /// A build with an OpenPGP key lists its public key in the manifest, so
    /// the minisign signature vouches for it, and clearsigns the manifest
    /// with it: `SHA256SUMS.asc` must verify against that key and sign the
    /// text of the verified manifest.
    fn check_openpgp(&mut self, manifest: &BTreeMap<String, Sha256>, sums: &[u8]) {
        let Some(key) = self.fetch_openpgp_key(CheckKind::OpenPgp) else {
            return;
        };
        self.check_listed(manifest, openpgp::PUBLIC_KEY, key.as_bytes());
        let name = openpgp::MANIFEST_ASC;
        self.check_clearsigned(CheckKind::OpenPgp, &key, name, sums, MANIFEST);
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
            self.fetch_signed_listed(&name, manifest, key, stamp)?;
        }
        Ok(())
    }

    /// A file of the site the manifest lists and the key signs beside it
    /// (`<name>.minisig`), in this build: its bytes, once all that holds.
    fn fetch_signed_listed(
        &mut self,
        name: &str,
        manifest: &BTreeMap<String, Sha256>,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<Vec<u8>> {
        let rel = match RelPath::parse(name) {
            Ok(rel) => rel,
            Err(m) => return self.stop(CheckKind::Manifest, format!("{MANIFEST}: {m}")),
        };
        let loc = self.fetcher.site(&rel);
        let sig = self.fetch_signature(&loc)?;
        let own = self.check_comment(&sig, key, name)?;
        let signed = self.finish_signed(&loc, sig, own, key, name)?;
        self.check_same_build(name, &signed.stamp, stamp)?;
        self.check_listed(manifest, name, &signed.data);
        Ok(signed.data)
    }

    /// A next key announced by this build: signed by the current key. With
    /// a state file, remembered so that builds signed by it are accepted.
    fn check_next_key(
        &mut self,
        next: &NextKey,
        key: &PublicKey,
        stamp: &BuildStamp,
        state: &mut State,
    ) -> Step<PublicKey> {
        let loc = self.fetcher.site(&known(NEXT_PUBLIC_KEY));
        let sig = self.fetch_signature(&loc)?;
        let own = self.check_comment(&sig, key, NEXT_PUBLIC_KEY)?;
        let signed = self.finish_signed(&loc, sig, own, key, NEXT_PUBLIC_KEY)?;
        if signed.stamp.sequence != stamp.sequence {
            return self.stop(
                CheckKind::Key,
                format!("{NEXT_PUBLIC_KEY} comes from another build (mix-and-match)"),
            );
        }
        let announced = String::from_utf8_lossy(&signed.data).into_owned();
        let public = match PublicKey::from_file(Path::new(NEXT_PUBLIC_KEY), &announced) {
            Ok(p) => p,
            Err(e) => return self.stop(CheckKind::Key, e.to_string()),
        };
        if public.key_id.to_string() != next.key_id || public.to_base64() != next.key {
            return self.stop(
                CheckKind::Key,
                format!(
                    "the feed's vmcast:nextPublicKey differs from the signed {NEXT_PUBLIC_KEY}"
                ),
            );
        }
        state.announce(&public, key);
        self.pass(
            CheckKind::Key,
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
        Ok(public)
    }

    /// Reads every SBOM and provenance file (small: whole, within the
    /// timeout), from the local site or its accepted URL: its length and
    /// SHA-256 must be the feed's, its content the format the feed names,
    /// and a provenance file's subjects must include the SHA-256 the feed
    /// gives each image it is about.
    fn check_supply(&mut self, doc: &FeedDoc, site_urls: &SiteUrls) {
        for item in &doc.items {
            for file in &item.supply {
                let Some(url) = site_urls.accept(&file.url) else {
                    self.fail(
                        CheckKind::Supply,
                        format!(
                            "{}: not fetched: its URL {} is outside the site",
                            file.path, file.url
                        ),
                    );
                    continue;
                };
                let loc = self.fetcher.file_or_url(&file.path, &url);
                let data = match self.fetcher.fetch(&loc, file.length.min(MAX_TEXT_FILE)) {
                    Ok(d) => d,
                    Err(m) => {
                        self.fail(CheckKind::Supply, format!("{}: {m}", file.path));
                        continue;
                    }
                };
                let digest = Sha256::of(&data);
                if data.len() as u64 != file.length || digest.to_hex() != file.sha256 {
                    self.fail(
                        CheckKind::Supply,
                        format!(
                            "{}: {} bytes with SHA-256 {digest}, where the feed says {} bytes \
                             with SHA-256 {}",
                            file.path,
                            data.len(),
                            file.length,
                            file.sha256
                        ),
                    );
                    continue;
                }
                let targets: Vec<(&str, Sha256)> = item
                    .images
                    .iter()
                    .filter(|i| file.image.as_ref().is_none_or(|n| *n == i.name))
                    .filter_map(|i| Sha256::from_hex(&i.sha256).map(|d| (i.name.as_str(), d)))
                    .collect();
                let examined = crate::supply::examine(
                    Path::new(file.path.as_str()),
                    &file.name,
                    file.kind,
                    &data,
                    &[],
                    &targets,
                );
                match examined {
                    Ok((format, _)) if format.as_str() != file.format => self.fail(
                        CheckKind::Supply,
                        format!(
                            "{}: holds {}, where the feed says {}",
                            file.path,
                            format.as_str(),
                            file.format
                        ),
                    ),
                    Ok(_) => self.pass(
                        CheckKind::Supply,
                        format!(
                            "{}: {} bytes, SHA-256 matches, {}{}",
                            file.path,
                            file.length,
                            file.format,
                            match file.kind {
                                crate::supply::Kind::Provenance => {
                                    format!(", about {}", describe_targets(&targets))
                                }
                                crate::supply::Kind::Sbom => String::new(),
                            }
                        ),
                    ),
                    Err(e) => self.fail(CheckKind::Supply, e.to_string()),
                }
            }
        }
    }

    /// Reads every Vagrant box the feed names, and checks that the manifest
    /// lists it with the feed's digest.
    fn check_boxes(&mut self, doc: &FeedDoc, base: &Url, site_urls: &SiteUrls) {
        for item in &doc.items {
            for image in &item.images {
                let Some((path, length, sha256)) = &image.vagrant_box else {
                    continue;
                };
                let url = crate::config::join_url(base, path.as_str()).to_string();
                let as_image = FeedImage {
                    url: url.clone(),
                    name: path.segments().last().unwrap_or_default().to_owned(),
                    path: path.clone(),
                    length: *length,
                    sha256: sha256.clone(),
                    sha512: None,
                    primary: false,
                    lxd: None,
                    vagrant_box: None,
                };
                let Some(accepted) = site_urls.accept(&url) else {
                    self.fail(
                        CheckKind::Images,
                        format!("{path}: not fetched: its URL {url} is outside the site"),
                    );
                    continue;
                };
                match self.fetcher.read_image(&as_image, &accepted, true) {
                    Ok((digest, _, read)) if digest.to_hex() == *sha256 => {
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
                            format!(
                                "{path}: SHA-256 mismatch: the feed says {sha256}, the file \
                                 hashes to {}",
                                digest.to_hex()
                            ),
                        );
                    }
                    Err(m) => self.fail(CheckKind::Images, format!("{path}: {m}")),
                }
            }
        }
    }

    /// Reads every image from its URL, and only if that URL was accepted.
    fn check_images(&mut self, doc: &FeedDoc, site_urls: &SiteUrls) {
        for item in &doc.items {
            for image in &item.images {
                let Some(url) = site_urls.accept(&image.url) else {
                    self.fail(
                        CheckKind::Images,
                        format!(
                            "{}: not fetched: its URL {} is outside the site",
                            image.path, image.url
                        ),
                    );
                    continue;
                };
                match self.fetcher.read_image(image, &url, true) {
                    Ok((digest, sha512, read)) => {
                        self.report.images_read += read;
                        let sha512 = sha512.map(|d| d.to_hex());
                        if digest.to_hex() != image.sha256 {
                            self.fail(
                                CheckKind::Images,
                                format!(
                                    "{}: SHA-256 mismatch: the feed says {}, the file hashes to {}",
                                    image.path,
                                    image.sha256,
                                    digest.to_hex()
                                ),
                            );
                        } else if sha512 != image.sha512 {
                            self.fail(
                                CheckKind::Images,
                                format!(
                                    "{}: SHA-512 mismatch: the feed says {}, the file hashes to {}",
                                    image.path,
                                    image.sha512.as_deref().unwrap_or_default(),
                                    sha512.unwrap_or_default()
                                ),
                            );
                        } else {
                            self.pass(
                                CheckKind::Images,
                                format!(
                                    "{}: {} bytes, {}",
                                    image.path,
                                    image.length,
                                    match sha512 {
                                        Some(_) => "SHA-256 and SHA-512 match",
                                        None => "SHA-256 matches",
                                    }
                                ),
                            );
                        }
                    }
                    Err(m) => self.fail(CheckKind::Images, format!("{}: {m}", image.path)),
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

/// One of the site's own file names as a relative path.
fn known(name: &str) -> RelPath {
    RelPath::parse(name).expect("the site's own file names are relative paths")
}
