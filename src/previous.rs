//! `build --previous SOURCE`: the published site is the state.
//!
//! A release job on a throwaway runner holds only the new release's images;
//! the history lives where the site is published. This module reads that
//! site (a directory, an http(s) URL, or `s3://bucket/prefix`), verifies it
//! exactly as `verify` does against the build's own key (or the key it is
//! rotating from), and hands back every published release with its images'
//! facts: length, SHA-256, format, compression, virtual size, machine, URL.
//! Nothing of an image is read, downloaded, copied or uploaded.
//!
//! Only a site that verifies is built on, so `--previous` can never carry
//! content into a signed feed that the key did not sign before. An expired
//! site is still authentic: it is accepted with a warning, since a new
//! release is how a lapsed site gets fresh signatures.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::model::{Name, Version};
use crate::sign::PublicKey;
use crate::site::feed::Item;
use crate::site::{self, CheckKind, VerifyOptions};
use crate::trust::Published;
use crate::warning::Warning;

/// How to reach and trust the previous site.
pub struct PreviousOptions<'a> {
    pub source: &'a str,
    /// The key this build signs with.
    pub key: &'a PublicKey,
    /// Keys trusted as much (the key rotated from).
    pub also_trusted: Vec<PublicKey>,
    /// An S3-compatible endpoint for `s3://` (else AWS_ENDPOINT_URL), as
    /// for `publish`.
    pub endpoint: Option<&'a str>,
    pub timeout: Duration,
    pub now: DateTime<Utc>,
}

/// A published site that verified: every release it publishes, current or
/// archived, as the one site reader read it.
#[derive(Debug)]
pub struct Previous {
    pub source: String,
    pub sequence: u64,
    /// The feed's items, then its archives', newest first.
    items: Vec<Item>,
    /// The appliances' feeds as published, by name, verified with the site.
    pub feeds: BTreeMap<String, Published>,
    pub warnings: Vec<Warning>,
    /// Where each (appliance, version) is in `items`: a build over a
    /// thousand published releases looks each of them up.
    index: BTreeMap<(Name, Version), usize>,
}

impl Previous {
    /// The published release of `appliance` at `version`.
    pub fn release(&self, appliance: &Name, version: &Version) -> Option<&Item> {
        self.index
            .get(&(appliance.clone(), version.clone()))
            .map(|&i| &self.items[i])
    }

    /// Every published release, newest first.
    pub fn items(&self) -> &[Item] {
        &self.items
    }
}

/// Reads and verifies the previous site.
pub fn load(options: &PreviousOptions) -> Result<Previous> {
    #[cfg(feature = "publish")]
    let fetched;
    let local = if options.source.starts_with("s3://") {
        #[cfg(feature = "publish")]
        {
            fetched = s3::download(options.source, options.endpoint)?;
            fetched.path().to_string_lossy().into_owned()
        }
        #[cfg(not(feature = "publish"))]
        return Err(Error::other(format_args!(
            "--previous {}: s3:// needs vmcast-gen built with the `publish` feature",
            options.source
        )));
    } else {
        options.source.to_owned()
    };
    let report = site::verify(&VerifyOptions {
        source: local,
        scope: site::Scope::Site,
        pinned: options.key.clone(),
        also_trusted: options.also_trusted.clone(),
        state: None,
        images: false,
        all: false,
        // The facts of its SBOMs and provenance come from the signed feed;
        // their bytes, beside the images, are not read.
        mirrors: false,
        supply: false,
        mirror_sample: Vec::new(),
        site: None,
        timeout: options.timeout,
        min_rate: 0,
        now: options.now,
    })?;
    let mut warnings = Vec::new();
    let mut refusals = Vec::new();
    for failure in report.failures() {
        match failure.check {
            CheckKind::Expiry => warnings.push(Warning {
                path: None,
                message: format!(
                    "--previous {}: {}; building on it anyway, since it is authentic and this \
                     build signs it afresh",
                    options.source, failure.detail
                ),
            }),
            _ => refusals.push(failure.detail.clone()),
        }
    }
    if !refusals.is_empty() {
        return Err(Error::other(format_args!(
            "--previous {}: the previous site does not verify against key {}{}, so nothing is \
             built on it:\n  {}",
            options.source,
            options.key.key_id,
            match options.also_trusted.as_slice() {
                [] => String::new(),
                keys => format!(
                    " (or {})",
                    keys.iter()
                        .map(|k| k.key_id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            refusals.join("\n  ")
        )));
    }
    let Some(site) = report.site else {
        return Err(Error::other(format_args!(
            "--previous {}: verified, but without a feed",
            options.source
        )));
    };
    // Archived releases are published too: their facts come from the
    // archives, which verified with the feed.
    let sequence = site.sequence;
    let feeds = site.feeds;
    let items: Vec<Item> = site
        .feed
        .items
        .into_iter()
        .chain(site.archives.into_iter().flat_map(|a| a.items))
        .collect();
    // The first of a version listed twice, as a search in order finds.
    let mut index = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let info = &item.release.info;
        index
            .entry((info.appliance.clone(), info.version.clone()))
            .or_insert(i);
    }
    Ok(Previous {
        source: options.source.to_owned(),
        sequence,
        items,
        feeds,
        warnings,
        index,
    })
}

/// `s3://bucket/prefix`: the site's small files (everything but images),
/// downloaded to a scratch directory that `verify` then reads.
#[cfg(feature = "publish")]
mod s3 {
    use futures::StreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};

    use crate::error::{Error, Result};
    use crate::fsutil;
    use crate::model::{MAX_TEXT_FILE, RelPath};

    pub fn download(source: &str, endpoint: Option<&str>) -> Result<tempfile::TempDir> {
        let (bucket, prefix) = crate::publish::parse_target(source)?;
        let store = crate::publish::store(&bucket, endpoint, None)?;
        let dir = tempfile::Builder::new()
            .prefix("vmcast-previous-")
            .tempdir()
            .map_err(|e| Error::failed("cannot create a scratch directory", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::failed("cannot start the I/O runtime", e))?;
        runtime.block_on(async {
            let base = crate::publish::object_path(&prefix, "");
            let mut list = store.list(Some(&base));
            let mut wanted = Vec::new();
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(|e| Error::Store {
                    action: "list",
                    object: source.to_owned(),
                    source: e,
                })?;
                let rel = crate::publish::relative(&meta.location, &prefix);
                // Images and boxes are never fetched; a feed, manifest, key or
                // signature larger than the text limit is refused by verify.
                if crate::publish::is_artifact(&rel) || meta.size > MAX_TEXT_FILE {
                    continue;
                }
                if let Ok(rel) = RelPath::parse(&rel) {
                    wanted.push((rel, meta.location));
                }
            }
            for (rel, location) in wanted {
                let bytes = store
                    .get(&location)
                    .await
                    .map_err(|e| Error::Store {
                        action: "download",
                        object: location.to_string(),
                        source: e,
                    })?
                    .bytes()
                    .await
                    .map_err(|e| Error::Store {
                        action: "download",
                        object: location.to_string(),
                        source: e,
                    })?;
                let path = dir.path().join(rel.as_str());
                if let Some(parent) = path.parent() {
                    fsutil::create_dir_all(parent)?;
                }
                fsutil::write_new_file(&path, &bytes, 0o644, false)?;
            }
            Ok::<(), Error>(())
        })?;
        Ok(dir)
    }
}
