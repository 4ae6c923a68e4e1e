//! Signatures, keys and the consumer's state: which key signs, that each
//! signed file is the file it claims in the build it claims, expiry,
//! rollback, the site a state file tracks, and keys announced or withdrawn.

use std::collections::BTreeMap;
use std::path::Path;

use url::Url;

use super::{Step, Verifier, known};
use crate::media;
use crate::media::{MANIFEST, NEXT_PUBLIC_KEY};
use crate::model::{MAX_TEXT_FILE, RelPath, Sha256};
use crate::sign::{PublicKey, Signature, VerifyError};
use crate::site::CheckKind;
use crate::site::Problem;
use crate::site::feed::NextKey;
use crate::site::fetch::Location;
use crate::site::state::State;
use crate::trust::{BuildStamp, Stamp};

/// A signed file with its verified build stamp.
pub(super) struct Signed {
    pub(super) data: Vec<u8>,
    pub(super) stamp: BuildStamp,
}

/// A file the manifest lists, with its signature file and what that
/// signature's verified trusted comment says.
pub(super) struct Listed {
    pub(super) data: Vec<u8>,
    pub(super) signature: String,
    pub(super) stamp: Stamp,
}

impl Verifier<'_> {
    pub(super) fn fetch_signature(&mut self, loc: &Location) -> Step<Signature> {
        self.fetch_signature_file(loc).map(|(sig, _)| sig)
    }

    /// The signature of the file at `loc`, and its file as fetched.
    fn fetch_signature_file(&mut self, loc: &Location) -> Step<(Signature, String)> {
        let sig_loc = loc.with_suffix(".minisig");
        let text = match self.fetcher.fetch(&sig_loc, MAX_TEXT_FILE) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(m) => return self.stop(CheckKind::Signature, m.problem, m.to_string()),
        };
        match Signature::from_file(Path::new(&sig_loc.display), &text) {
            Ok(sig) => Ok((sig, text)),
            Err(e) => self.stop(CheckKind::Signature, Problem::Malformed, e.to_string()),
        }
    }

    /// The pinned key, or a key the state file learned from a signed
    /// announcement by a key already trusted.
    pub(super) fn choose_key(
        &mut self,
        sig: &Signature,
        state: &State,
        what: &str,
    ) -> Step<PublicKey> {
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
        // Without a state file nothing can have announced the key; a
        // preview's throwaway key is the usual cause.
        let hint = if self.options.state.is_some() {
            "; no trusted key announced it in the state file"
        } else {
            "; nothing you trust announced it (a `vmcast-gen serve` preview is signed with a \
             throwaway key: verify it against the preview's own vmcast.pub)"
        };
        self.stop(
            CheckKind::Signature,
            Problem::UntrustedKey,
            format!(
                "{what}: signed by key {}, not the pinned key {}{hint}",
                sig.key_id, pinned.key_id
            ),
        )
    }

    /// Checks key, algorithm and trusted comment of a file that belongs to
    /// one build (a feed, the manifest, a key); returns the build's stamp.
    pub(super) fn check_comment(
        &mut self,
        sig: &Signature,
        key: &PublicKey,
        what: &str,
    ) -> Step<BuildStamp> {
        match self.verified_comment(sig, key, what)? {
            Stamp::Build(stamp) => Ok(stamp),
            Stamp::File(_) => self.stop(
                CheckKind::Signature,
                Problem::WrongFile,
                format!(
                    "{what}: its signature names no build, as only a file that never \
                     changes (an archive) may"
                ),
            ),
        }
    }

    /// Checks key, algorithm and trusted comment; returns what the comment
    /// says.
    pub(super) fn verified_comment(
        &mut self,
        sig: &Signature,
        key: &PublicKey,
        what: &str,
    ) -> Step<Stamp> {
        if let Err(e) = sig.verify_comment(key) {
            let detail = match e {
                VerifyError::BadTrustedComment => {
                    format!(
                        "{what}: the trusted comment was altered (its signature does not match)"
                    )
                }
                other => format!("{what}: {other}"),
            };
            return self.stop(CheckKind::Signature, Problem::BadSignature, detail);
        }
        match Stamp::parse(&sig.trusted_comment) {
            Ok(stamp) => Ok(stamp),
            Err(m) => self.stop(
                CheckKind::Signature,
                Problem::Malformed,
                format!("{what}: {m}"),
            ),
        }
    }

    /// A file signed in this build, or one that never changes (an archive,
    /// signed with no build's stamp, whose digest this build's manifest
    /// lists: the caller checks that listing).
    pub(super) fn check_of_this_build(
        &mut self,
        name: &str,
        stamp: &Stamp,
        build: &BuildStamp,
    ) -> Step<()> {
        match stamp {
            Stamp::Build(own) => self.check_build_of(name, own, build),
            Stamp::File(file) if !media::is_immutable(name) => self.stop(
                CheckKind::Signature,
                Problem::WrongFile,
                format!(
                    "{}: its signature names no build, as only a file that never changes \
                     (an archive) may",
                    file.file
                ),
            ),
            Stamp::File(file) if file.base_url != build.base_url => self.stop(
                CheckKind::Build,
                Problem::OtherSite,
                format!(
                    "{name} is signed for the site {}, not {}",
                    file.base_url, build.base_url
                ),
            ),
            Stamp::File(_) => {
                self.pass(
                    CheckKind::Build,
                    format!(
                        "{name} never changes: signed for this site, bound to this build by \
                         {MANIFEST}"
                    ),
                );
                Ok(())
            }
        }
    }

    /// Fetches the signed file, checks the signature is for this file and
    /// matches its bytes.
    pub(super) fn finish_signed(
        &mut self,
        loc: &Location,
        sig: Signature,
        signed_file: &str,
        key: &PublicKey,
        name: &str,
    ) -> Step<Vec<u8>> {
        if signed_file != name {
            return self.stop(
                CheckKind::Signature,
                Problem::WrongFile,
                format!(
                    "{name}.minisig is the signature of {signed_file}, not {name} (swapped \
                     signature files?)"
                ),
            );
        }
        let data = match self.fetcher.fetch(loc, MAX_TEXT_FILE) {
            Ok(d) => d,
            Err(m) => return self.stop(CheckKind::Signature, m.problem, m.to_string()),
        };
        if sig.verify_data(key, &data).is_err() {
            return self.stop(
                CheckKind::Signature,
                Problem::BadSignature,
                format!("{name}: signature does not match its contents (tampered or corrupt)"),
            );
        }
        self.pass(
            CheckKind::Signature,
            format!("{name}: good prehashed signature by key {}", key.key_id),
        );
        Ok(data)
    }

    /// A file of one build: its signature's stamp checked, then its bytes.
    pub(super) fn fetch_signed(
        &mut self,
        loc: &Location,
        sig: Signature,
        key: &PublicKey,
        name: &str,
        what: &str,
    ) -> Step<Signed> {
        let stamp = self.check_comment(&sig, key, what)?;
        let data = self.finish_signed(loc, sig, &stamp.file.clone(), key, name)?;
        Ok(Signed { data, stamp })
    }

    /// A file signed in the build whose stamp is `build`, or, for an
    /// appliance's feed, in an earlier build of the same site whose feed
    /// this build left unchanged (its manifest, the caller checks, binds it
    /// to this build): never in a later build, and in an earlier one only
    /// when neither build expires, as only then does a build keep a feed.
    pub(super) fn check_build_of(
        &mut self,
        name: &str,
        own: &BuildStamp,
        build: &BuildStamp,
    ) -> Step<()> {
        // The same sequence is the same build: checked as one below.
        let kept = own.file == name
            && own.sequence < build.sequence
            && own.may_stand_in(&build.base_url, build.sequence, build.expires.is_some());
        if !kept {
            return self.check_same_build(name, own, build);
        }
        self.pass(
            CheckKind::Build,
            format!(
                "{name} is unchanged since the build of sequence {}, and {MANIFEST} of sequence \
                 {} lists it",
                own.sequence, build.sequence
            ),
        );
        Ok(())
    }

    pub(super) fn check_same_build(
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
                CheckKind::Build, Problem::MixedBuilds,
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

    pub(super) fn check_expiry(&mut self, stamp: &BuildStamp) {
        match stamp.expires_at() {
            None if stamp.expires.is_some() => self.fail(
                CheckKind::Expiry,
                Problem::Malformed,
                "signed expiry is out of range",
            ),
            None => self.pass(CheckKind::Expiry, "the publisher set no expiry"),
            Some(at) => {
                let when = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
                self.report.expires = Some(when.clone());
                if self.options.now > at {
                    self.fail(
                        CheckKind::Expiry,
                        Problem::Expired,
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

    /// The build is not older than any seen before (`--state`), and the
    /// feed not older than the same feed seen before. A feed of an earlier
    /// build than the newest seen is current only as an appliance's feed
    /// left unchanged since: the very one seen before (a host polling it
    /// sees it again, 304 or not), or one that `sums`, the manifest of a
    /// build not older than any seen, lists. When the feed was read alone
    /// (`pull`), that manifest is fetched for it, which a host does only
    /// when it first reads a feed left unchanged (another appliance's, or
    /// the first run after a state file that remembers no feed).
    pub(super) fn check_rollback(
        &mut self,
        state: &mut State,
        key: &PublicKey,
        feed_name: &str,
        feed: &Signed,
        sums: Option<&Signed>,
    ) -> Step<()> {
        if self.options.state.is_none() {
            return Ok(());
        }
        let own = feed.stamp.sequence;
        // Only an appliance's feed may be of an earlier build than the
        // site's: the build's sequence is every other feed's own.
        let appliance_feed = media::is_appliance_feed(feed_name);
        let before = state.feed_sequence(feed_name).filter(|_| appliance_feed);
        if let Some(before) = before.filter(|&before| own < before) {
            return self.stop(
                CheckKind::Rollback,
                Problem::Rollback,
                format!(
                    "rollback: {feed_name} of sequence {own} is older than the {feed_name} of \
                     sequence {before} already seen"
                ),
            );
        }
        let mut build = sums.map_or(own, |s| s.stamp.sequence);
        let seen = state.highest();
        let detail = match seen {
            Some((id, highest)) if build < highest => {
                if sums.is_some() || !appliance_feed {
                    return self.stop(
                        CheckKind::Rollback,
                        Problem::Rollback,
                        format!(
                            "rollback: sequence {build} is older than sequence {highest} already \
                             seen (key {id})"
                        ),
                    );
                }
                if before == Some(own) {
                    format!("{feed_name} is the one of sequence {own} seen before, unchanged since")
                } else {
                    build = self.current_in_manifest(key, feed_name, feed, highest)?;
                    format!(
                        "{feed_name} of sequence {own} is unchanged in the build of sequence \
                         {build}, not older than {highest} seen before"
                    )
                }
            }
            Some((_, highest)) => {
                format!("sequence {build} is not older than {highest} seen before")
            }
            None => format!("first sight; remembering sequence {build}"),
        };
        state.record(key, build);
        if appliance_feed {
            state.record_feed(feed_name, own);
        }
        self.pass(CheckKind::Rollback, detail);
        Ok(())
    }

    /// The build of the site's signed manifest, which must be no older than
    /// `highest` and list `feed_name` as `feed` is: the feed is that
    /// build's, left unchanged since an earlier one. Returns its sequence.
    fn current_in_manifest(
        &mut self,
        key: &PublicKey,
        feed_name: &str,
        feed: &Signed,
        highest: u64,
    ) -> Step<u64> {
        let sums = self.signed_manifest(key, feed_name, feed)?;
        if sums.stamp.sequence < highest {
            return self.stop(
                CheckKind::Rollback,
                Problem::Rollback,
                format!(
                    "rollback: sequence {} is older than sequence {highest} already seen",
                    sums.stamp.sequence
                ),
            );
        }
        match crate::sums::parse(&sums.data) {
            Ok(manifest) if manifest.get(feed_name) == Some(&Sha256::of(&feed.data)) => {
                Ok(sums.stamp.sequence)
            }
            Ok(_) => self.stop(
                CheckKind::Rollback,
                Problem::Rollback,
                format!(
                    "rollback: {feed_name} of sequence {} is not the one {MANIFEST} of sequence \
                     {} lists, and older than sequence {highest} already seen",
                    feed.stamp.sequence, sums.stamp.sequence
                ),
            ),
            Err(m) => self.stop(
                CheckKind::Manifest,
                Problem::Malformed,
                format!("{MANIFEST}: {m}"),
            ),
        }
    }

    /// The site the build was signed for is the one the consumer expects:
    /// the one given with `--site`, and the one the state file tracks (the
    /// first one it saw, when it tracks none yet).
    pub(super) fn check_site(&mut self, base: &Url, state: &mut State) -> Step<()> {
        if let Some(site) = &self.options.site {
            if site != base {
                return self.stop(
                    CheckKind::Site,
                    Problem::OtherSite,
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
                Problem::OtherSite,
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

    /// A next key announced by this build: signed by the current key. With
    /// a state file, remembered so that builds signed by it are accepted.
    pub(super) fn check_next_key(
        &mut self,
        next: &NextKey,
        key: &PublicKey,
        stamp: &BuildStamp,
        state: &mut State,
    ) -> Step<PublicKey> {
        let loc = self.fetcher.site(&known(NEXT_PUBLIC_KEY));
        let sig = self.fetch_signature(&loc)?;
        let signed = self.fetch_signed(&loc, sig, key, NEXT_PUBLIC_KEY, NEXT_PUBLIC_KEY)?;
        if signed.stamp.sequence != stamp.sequence {
            return self.stop(
                CheckKind::Key,
                Problem::MixedBuilds,
                format!("{NEXT_PUBLIC_KEY} comes from another build (mix-and-match)"),
            );
        }
        let announced = String::from_utf8_lossy(&signed.data).into_owned();
        let public = match PublicKey::from_file(Path::new(NEXT_PUBLIC_KEY), &announced) {
            Ok(p) => p,
            Err(e) => return self.stop(CheckKind::Key, Problem::Malformed, e.to_string()),
        };
        if public.key_id.to_string() != next.key_id || public.to_base64() != next.key {
            return self.stop(
                CheckKind::Key,
                Problem::Inconsistent,
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

    pub(super) fn check_listed(
        &mut self,
        manifest: &BTreeMap<String, Sha256>,
        name: &str,
        data: &[u8],
    ) {
        match manifest.get(name) {
            Some(d) if *d == Sha256::of(data) => self.pass(
                CheckKind::Manifest,
                format!("{name}'s SHA-256 matches {MANIFEST}"),
            ),
            Some(_) => self.fail(
                CheckKind::Manifest,
                Problem::Mismatch,
                format!("{name}'s SHA-256 differs from the one in {MANIFEST}"),
            ),
            None => self.fail(
                CheckKind::Manifest,
                Problem::Unlisted,
                format!("{MANIFEST} does not list {name}"),
            ),
        }
    }

    /// A file of the site the manifest lists and the key signs beside it
    /// (`<name>.minisig`), in this build: its bytes, its signature file and
    /// its stamp, once all that holds.
    pub(super) fn fetch_signed_listed(
        &mut self,
        name: &str,
        manifest: &BTreeMap<String, Sha256>,
        key: &PublicKey,
        stamp: &BuildStamp,
    ) -> Step<Listed> {
        let rel = match RelPath::parse(name) {
            Ok(rel) => rel,
            Err(m) => {
                return self.stop(
                    CheckKind::Manifest,
                    Problem::Malformed,
                    format!("{MANIFEST}: {m}"),
                );
            }
        };
        let loc = self.fetcher.site(&rel);
        let (sig, signature) = self.fetch_signature_file(&loc)?;
        let own = self.verified_comment(&sig, key, name)?;
        let data = self.finish_signed(&loc, sig, own.file(), key, name)?;
        self.check_of_this_build(name, &own, stamp)?;
        self.check_listed(manifest, name, &data);
        Ok(Listed {
            data,
            signature,
            stamp: own,
        })
    }

    /// Keys the state file remembers as announced by `key` that this
    /// build no longer announces: forgotten, so a withdrawn rotation
    /// cannot be used later.
    pub(super) fn forget_withdrawn(
        &mut self,
        state: &mut State,
        key: &PublicKey,
        next: Option<&PublicKey>,
    ) {
        let withdrawn = state.withdraw(key, next);
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
}
