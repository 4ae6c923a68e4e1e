//! What a consumer remembers between runs: the site it tracks, the
//! highest sequence seen per key, and the keys announced by keys it trusts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::MAX_TEXT_FILE;
use crate::sign::PublicKey;

const STATE_FORMAT: &str = "vmcast-gen-verify-state-1";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct State {
    format: String,
    /// The signed base_url of the site this state tracks. Absent in state
    /// files written before it was recorded: the first site seen is adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    keys: BTreeMap<String, KeyState>,
    /// The last verified feed and its signature, by URL, as the server sent
    /// them with their validators: the next run asks whether they changed
    /// (`If-None-Match`, `If-Modified-Since`) and, told they did not,
    /// verifies these very bytes again instead of downloading them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cached: BTreeMap<String, Cached>,
    /// The highest sequence seen of each feed, by its name in the site: an
    /// appliance's feed that did not change keeps the sequence of the
    /// build it last changed in. Absent in state files written before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    feeds: BTreeMap<String, u64>,
}

/// A document as its server sent it, with the validators it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cached {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_modified: Option<String>,
    pub(super) body: String,
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
    pub(super) fn load(path: &Path) -> Result<State> {
        if !path.exists() {
            return Ok(State {
                format: STATE_FORMAT.into(),
                site: None,
                keys: BTreeMap::new(),
                cached: BTreeMap::new(),
                feeds: BTreeMap::new(),
            });
        }
        // Never through a symbolic link: `save` replaces the name, so a
        // link there is not the user's file but someone else's.
        let (bytes, _) = fsutil::read_regular(path, false, MAX_TEXT_FILE)?;
        State::parse(path, &fsutil::text(path, bytes)?)
    }

    pub(super) fn parse(path: &Path, text: &str) -> Result<State> {
        let state: State = serde_json::from_str(text).map_err(|e| {
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

    /// The keys it remembers: ID, and the key when it reads as one.
    pub(super) fn keys(&self) -> impl Iterator<Item = (&str, Option<PublicKey>)> {
        self.keys
            .iter()
            .map(|(id, k)| (id.as_str(), PublicKey::from_base64(&k.public_key).ok()))
    }

    pub(super) fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("the state serializes");
        text.push('\n');
        fsutil::write_new_file(path, text.as_bytes(), 0o644, true)
    }

    /// The documents cached by the last run that verified.
    pub(super) fn take_cached(&mut self) -> BTreeMap<String, Cached> {
        std::mem::take(&mut self.cached)
    }

    /// The documents this run verified, for the next to ask about.
    pub(super) fn set_cached(&mut self, cached: BTreeMap<String, Cached>) {
        self.cached = cached;
    }

    /// The site this state tracks, once one was seen.
    pub(super) fn site(&self) -> Option<&str> {
        self.site.as_deref()
    }

    pub(super) fn bind_site(&mut self, base: &Url) {
        self.site = Some(base.to_string());
    }

    pub(super) fn highest(&self) -> Option<(String, u64)> {
        self.keys
            .iter()
            .filter(|(_, k)| k.highest_sequence > 0)
            .max_by_key(|(_, k)| k.highest_sequence)
            .map(|(id, k)| (id.clone(), k.highest_sequence))
    }

    pub(super) fn record(&mut self, key: &PublicKey, sequence: u64) {
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

    /// The highest sequence seen of the feed `name`.
    pub(super) fn feed_sequence(&self, name: &str) -> Option<u64> {
        self.feeds.get(name).copied()
    }

    pub(super) fn record_feed(&mut self, name: &str, sequence: u64) {
        let entry = self.feeds.entry(name.to_owned()).or_default();
        *entry = (*entry).max(sequence);
    }

    pub(super) fn announce(&mut self, next: &PublicKey, by: &PublicKey) {
        self.keys
            .entry(next.key_id.to_string())
            .or_insert_with(|| KeyState {
                public_key: next.to_base64(),
                highest_sequence: 0,
                announced_by: Some(by.key_id.to_string()),
            });
    }

    /// Follows the newest build signed by `by`: a key it announced before
    /// and no longer announces is forgotten, unless that key has already
    /// signed an accepted build. Returns the forgotten keys' IDs.
    pub(super) fn withdraw(
        &mut self,
        by: &PublicKey,
        announced: Option<&PublicKey>,
    ) -> Vec<String> {
        let by = by.key_id.to_string();
        let kept = announced.map(|k| k.key_id.to_string());
        let withdrawn: Vec<String> = self
            .keys
            .iter()
            .filter(|(id, k)| {
                k.announced_by.as_deref() == Some(by.as_str())
                    && k.highest_sequence == 0
                    && kept.as_ref() != Some(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &withdrawn {
            self.keys.remove(id);
        }
        withdrawn
    }

    /// A key learned from an announcement chain that starts at `pinned`.
    pub(super) fn announced_key(&self, id: &str, pinned: &PublicKey) -> Option<PublicKey> {
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
