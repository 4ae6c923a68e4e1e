//! The catalogs the manifest lists (`[catalogs]`), each held against the
//! verified feed and its archives, and the OpenPGP forms that clients
//! checking only OpenPGP verify: `SHA256SUMS.asc`, virt-builder's index and
//! simplestreams' signed files.

use std::collections::BTreeMap;

use url::Url;

use super::{Step, Verifier, known};
use crate::catalog::{simplestreams, systemd, vagrant, virt_builder};
use crate::media::{self, MANIFEST};
use crate::model::{MAX_TEXT_FILE, RelPath, Release, Sha256};
use crate::openpgp;
use crate::sign::PublicKey;
use crate::site::Problem;
use crate::site::catalogs::{self, Vouched};
use crate::site::fetch::FetchError;
use crate::site::{CheckKind, PublishedSite};
use crate::trust::BuildStamp;

impl Verifier<'_> {
    /// The catalogs the manifest lists, each held against the feed and its
    /// archives (already verified): signed pages must be signed in this
    /// build, and every file must have the listed digest and list the
    /// feed's images as the feed does.
    pub(super) fn check_catalogs(
        &mut self,
        site: &PublishedSite,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<()> {
        let (base, manifest) = (&site.base_url, &site.manifest);
        let vouched = Vouched::of(site);
        let names: Vec<String> = manifest
            .keys()
            .filter(|n| catalogs::is_json_feed(n))
            .cloned()
            .collect();
        for name in names {
            let data = self.fetch_signed_listed(&name, manifest, key, stamp)?.data;
            let held = catalogs::check_json_feed(&data, &vouched, base)
                .map(|n| format!("{n} release(s), as the feed lists them"));
            self.report_catalog(&name, held);
        }
        if manifest.contains_key(virt_builder::INDEX) {
            self.check_virt_builder(&vouched, manifest, &stamp.base_url);
        }
        if manifest.contains_key(simplestreams::INDEX) {
            self.check_simplestreams(base, manifest, &vouched);
        }
        self.check_vagrant(&vouched, manifest, base);
        self.check_systemd(site);
        Ok(())
    }

    /// What `[catalogs] systemd` publishes for systemd-pull and
    /// systemd-sysupdate, none of it signed with minisign but all listed
    /// in the manifest: each directory's `SHA256SUMS` and each transfer
    /// file must be what the build makes from the signed feeds, byte for
    /// byte; each `SHA256SUMS.gpg` must verify with the site's OpenPGP key,
    /// and `import-pubring.gpg` must be that key.
    pub(super) fn check_systemd(&mut self, site: &PublishedSite) {
        let manifest = &site.manifest;
        let published_dirs: Vec<&str> = manifest
            .keys()
            .filter(|n| media::is_dir_manifest(n) && n.ends_with(&format!("/{MANIFEST}")))
            .filter_map(|n| n.rsplit_once('/').map(|(dir, _)| dir))
            .collect();
        let published_transfers: Vec<&String> = manifest
            .keys()
            .filter(|n| catalogs::is_transfer(n))
            .collect();
        let pubring = manifest.contains_key(media::IMPORT_PUBRING);
        if published_dirs.is_empty() && published_transfers.is_empty() && !pubring {
            return;
        }
        let key = match manifest.contains_key(openpgp::PUBLIC_KEY) {
            true => self.fetch_openpgp_key(CheckKind::Catalog),
            false => {
                return self.fail(
                    CheckKind::Catalog,
                    Problem::Unlisted,
                    format!(
                        "{MANIFEST} lists what systemd's tools read, but not {}, the OpenPGP key \
                         that signs it",
                        openpgp::PUBLIC_KEY
                    ),
                );
            }
        };
        let Some(key) = key else {
            return;
        };
        let releases: Vec<Release> = site.items().map(|i| i.release.clone()).collect();
        let expected = systemd::expected(&releases, &site.base_url);
        for dir in &published_dirs {
            if !expected.manifests.iter().any(|(d, _)| d == dir) {
                self.fail(
                    CheckKind::Catalog,
                    Problem::Mismatch,
                    format!("{dir}/{MANIFEST}: the feeds publish no file there"),
                );
            }
        }
        for (dir, text) in &expected.manifests {
            let name = format!("{dir}/{MANIFEST}");
            let files = format!("{} file(s), as the feeds give them", text.lines().count());
            let Some(data) = self.fetch_expected(manifest, &name, text, files) else {
                continue;
            };
            let sig_name = format!("{dir}/{}", media::DIR_MANIFEST_SIG);
            if !manifest.contains_key(&sig_name) {
                self.fail(
                    CheckKind::Catalog,
                    Problem::Unlisted,
                    format!(
                        "{sig_name}: not listed in {MANIFEST}: systemd's tools would refuse {name}"
                    ),
                );
                continue;
            }
            let Some(sig) = self.fetch_listed(manifest, &sig_name) else {
                continue;
            };
            match openpgp::verify_detached(&key, &sig_name, &data, &sig) {
                Ok(fingerprint) => self.pass(
                    CheckKind::Catalog,
                    format!("{sig_name}: good signature of {name} by OpenPGP key {fingerprint}"),
                ),
                Err(m) => self.fail(CheckKind::Catalog, Problem::BadSignature, m),
            }
        }
        let transfers: Vec<&systemd::TransferFile> =
            expected.transfers.iter().flat_map(|(_, t)| t).collect();
        for name in published_transfers {
            if !transfers.iter().any(|t| t.path == *name) {
                self.fail(
                    CheckKind::Catalog,
                    Problem::Mismatch,
                    format!("{name}: the feeds give no versions for it to find"),
                );
            }
        }
        for t in transfers {
            let finds = format!("finds {} version(s), as the feeds give them", t.versions);
            self.fetch_expected(manifest, &t.path, &t.text, finds);
        }
        if let Some(data) = self.fetch_listed(manifest, media::IMPORT_PUBRING) {
            self.check_pubring(&key, &data);
        }
    }

    /// A file of `[catalogs] systemd` that must be `expected`: listed,
    /// fetched and compared. The bytes, when they could be had.
    fn fetch_expected(
        &mut self,
        manifest: &BTreeMap<String, Sha256>,
        name: &str,
        expected: &str,
        detail: String,
    ) -> Option<Vec<u8>> {
        if !manifest.contains_key(name) {
            self.fail(
                CheckKind::Catalog,
                Problem::Unlisted,
                format!("{name}: not listed in {MANIFEST}, but the feeds give what it lists"),
            );
            return None;
        }
        let data = self.fetch_listed(manifest, name)?;
        let held = catalogs::same_text(&data, expected).map(|()| detail);
        self.report_catalog(name, held);
        Some(data)
    }

    /// `import-pubring.gpg`: the key of `openpgp.asc`, and nothing else.
    fn check_pubring(&mut self, key: &str, data: &[u8]) {
        let name = media::IMPORT_PUBRING;
        match openpgp::keyring_fingerprint(name, data) {
            Ok(found) => match openpgp::fingerprint(key) {
                Ok(site) if site == found => self.pass(
                    CheckKind::Catalog,
                    format!(
                        "{name}: OpenPGP key {found}, the key of {}",
                        openpgp::PUBLIC_KEY
                    ),
                ),
                Ok(site) => self.fail(
                    CheckKind::Catalog,
                    Problem::Mismatch,
                    format!(
                        "{name} holds OpenPGP key {found}, not {site} of {}",
                        openpgp::PUBLIC_KEY
                    ),
                ),
                Err(m) => self.fail(CheckKind::Catalog, Problem::Malformed, m),
            },
            Err(m) => self.fail(CheckKind::Catalog, Problem::Malformed, m),
        }
    }

    /// The Vagrant catalogs the manifest lists, held against the boxes the
    /// feed and its archives name. They are not signed: SHA256SUMS vouches
    /// for them. An appliance whose boxes the feeds name must have its
    /// catalog listed, as every other file the feeds name must be.
    pub(super) fn check_vagrant(
        &mut self,
        vouched: &Vouched,
        manifest: &BTreeMap<String, Sha256>,
        base: &Url,
    ) {
        for (appliance, releases) in catalogs::boxed_releases(vouched) {
            let name = vagrant::catalog_path(appliance);
            if !manifest.contains_key(&name) {
                self.fail(
                    CheckKind::Catalog,
                    Problem::Unlisted,
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
            let held = catalogs::check_vagrant(appliance, &data, vouched, base)
                .map(|n| format!("{n} version(s), the boxes the feed lists"));
            self.report_catalog(&name, held);
        }
    }

    /// `virt-builder/index`, which is not signed itself but listed in the
    /// signed manifest, held against the feeds.
    pub(super) fn check_virt_builder(
        &mut self,
        vouched: &Vouched,
        manifest: &BTreeMap<String, Sha256>,
        base_url: &str,
    ) {
        let name = virt_builder::INDEX;
        let Some(data) = self.fetch_listed(manifest, name) else {
            return;
        };
        let held = catalogs::check_virt_builder(&data, base_url, vouched)
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
    pub(super) fn report_catalog(
        &mut self,
        name: &str,
        held: std::result::Result<String, Vec<String>>,
    ) {
        match held {
            Ok(detail) => self.pass(CheckKind::Catalog, format!("{name}: {detail}")),
            Err(problems) => {
                for p in problems {
                    self.fail(
                        CheckKind::Catalog,
                        Problem::Mismatch,
                        format!("{name}: {p}"),
                    );
                }
            }
        }
    }

    /// A catalog file the manifest must list, as fetched; `None` (with the
    /// failure recorded) when it cannot be had.
    pub(super) fn fetch_listed(
        &mut self,
        manifest: &BTreeMap<String, Sha256>,
        name: &str,
    ) -> Option<Vec<u8>> {
        let rel = match RelPath::parse(name) {
            Ok(rel) => rel,
            Err(m) => {
                self.fail(
                    CheckKind::Catalog,
                    Problem::Malformed,
                    format!("{name}: {m}"),
                );
                return None;
            }
        };
        let loc = self.fetcher.site(&rel);
        match self.fetcher.fetch(&loc, MAX_TEXT_FILE) {
            Ok(data) => {
                self.check_listed(manifest, name, &data);
                Some(data)
            }
            Err(m) => {
                self.fail(CheckKind::Catalog, m.problem, format!("{name}: {m}"));
                None
            }
        }
    }

    /// The simplestreams index and the products files it names, each
    /// listed in the manifest and held against the feeds.
    pub(super) fn check_simplestreams(
        &mut self,
        base: &Url,
        manifest: &BTreeMap<String, Sha256>,
        vouched: &Vouched,
    ) {
        let index = simplestreams::INDEX;
        let Some(data) = self.fetch_listed(manifest, index) else {
            return;
        };
        let paths = match catalogs::simplestreams_products(&data) {
            Ok(paths) => paths,
            Err(m) => {
                return self.fail(
                    CheckKind::Catalog,
                    Problem::Malformed,
                    format!("{index}: {m}"),
                );
            }
        };
        let mut products = None;
        for path in paths {
            let Some(data) = self.fetch_listed(manifest, &path) else {
                continue;
            };
            if path == simplestreams::PRODUCTS {
                products = Some(data.clone());
            }
            let held = catalogs::check_simplestreams(&data, base, manifest, vouched)
                .map(|n| format!("{n} item(s), as the feed and {MANIFEST} list them"));
            self.report_catalog(&path, held);
        }
        if let Some(products) = products.filter(|_| manifest.contains_key(openpgp::PUBLIC_KEY)) {
            self.check_signed_simplestreams(&data, &products);
        }
    }

    /// A small file of the site, by its own name.
    pub(super) fn fetch_site_file(
        &mut self,
        name: &str,
    ) -> std::result::Result<Vec<u8>, FetchError> {
        let loc = self.fetcher.site(&known(name));
        self.fetcher.fetch(&loc, MAX_TEXT_FILE)
    }

    /// With an OpenPGP key, the clearsigned forms: each signed by the
    /// site's key (listed in the manifest, checked by [`Self::check_openpgp`]),
    /// `images.sjson` signing the text of `images.json`, and `index.sjson`
    /// that of `index.json` naming `images.sjson`.
    pub(super) fn check_signed_simplestreams(&mut self, index: &[u8], products: &[u8]) {
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
    pub(super) fn fetch_openpgp_key(&mut self, kind: CheckKind) -> Option<String> {
        match self.fetch_site_file(openpgp::PUBLIC_KEY) {
            Ok(key) => Some(String::from_utf8_lossy(&key).into_owned()),
            Err(m) => {
                self.fail(kind, m.problem, m.to_string());
                None
            }
        }
    }

    /// A cleartext-signed file of the site, `name`: it must verify against
    /// the site's OpenPGP key and sign `text`, the text of `of`, as the
    /// signature covers it (each line without trailing blanks).
    pub(super) fn check_clearsigned(
        &mut self,
        kind: CheckKind,
        key: &str,
        name: &str,
        text: &[u8],
        of: &str,
    ) {
        let signed = match self.fetch_site_file(name) {
            Ok(signed) => signed,
            Err(m) => return self.fail(kind, m.problem, m.to_string()),
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
            Ok(_) => self.fail(
                kind,
                Problem::Mismatch,
                format!("{name} signs a text other than {of}"),
            ),
            Err(m) => self.fail(kind, Problem::BadSignature, m),
        }
    }

    /// A build with an OpenPGP key lists its public key in the manifest, so
    /// the minisign signature vouches for it, and clearsigns the manifest
    /// with it: `SHA256SUMS.asc` must verify against that key and sign the
    /// text of the verified manifest.
    pub(super) fn check_openpgp(&mut self, manifest: &BTreeMap<String, Sha256>, sums: &[u8]) {
        let Some(key) = self.fetch_openpgp_key(CheckKind::OpenPgp) else {
            return;
        };
        self.check_listed(manifest, openpgp::PUBLIC_KEY, key.as_bytes());
        let name = openpgp::MANIFEST_ASC;
        self.check_clearsigned(CheckKind::OpenPgp, &key, name, sums, MANIFEST);
    }
}
