//! Retention and archives (RFC 5005, "Feed Paging and Archiving").
//!
//! The current feeds hold the newest `feed_items` releases of each
//! appliance. Older releases move to archive documents, each a complete RSS
//! 2.0 feed of [`ARCHIVE_ITEMS`] releases that never changes once written:
//! the same releases give the same bytes, so consumers and CDNs cache an
//! archive forever, and `build --previous` writes it again identical.
//!
//! How releases fill archives, so that a new release never rewrites one:
//! a release becomes archivable when its appliance has `feed_items` newer
//! releases, and it is ordered by the date of the release that pushed it
//! out (then appliance, then version). A new release, the newest, pushes at
//! most one release out, and that one sorts after every release already
//! archivable: the order only ever grows at its end. Archives are the
//! complete chunks of [`ARCHIVE_ITEMS`] from the start of that order;
//! archivable releases that do not fill a chunk yet stay in the current
//! feeds, so nothing is lost and no archive is ever half full. A release
//! added with a date older than the newest (a back-fill) can reorder what
//! is not archived yet, never what is.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::model::Release;

/// Releases per archive document.
pub const ARCHIVE_ITEMS: usize = 10;

/// Where each release goes: indexes into the site's releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The releases of the current feeds, in publishing order.
    pub current: Vec<usize>,
    /// The archives, oldest first; each one's releases newest first.
    pub archives: Vec<Vec<usize>>,
}

/// The path of archive `n` (1 is the oldest).
pub fn path(n: usize) -> String {
    format!("archive/{n}.xml")
}

/// Splits `releases` (in publishing order) into the current feeds and the
/// archives.
pub fn partition(config: &Config, releases: &[Release]) -> Partition {
    let mut by_appliance: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in releases.iter().enumerate() {
        by_appliance
            .entry(r.info.appliance.as_str())
            .or_default()
            .push(i);
    }
    let mut archivable = Vec::new();
    for (appliance, mut indexes) in by_appliance {
        // Oldest first.
        indexes.sort_by(|&a, &b| {
            let (a, b) = (&releases[a].info, &releases[b].info);
            a.date.cmp(&b.date).then_with(|| a.version.cmp(&b.version))
        });
        let keep = config.feed_items_of(appliance);
        for i in 0..indexes.len().saturating_sub(keep) {
            let pushed_by = &releases[indexes[i + keep]].info;
            let own = &releases[indexes[i]].info;
            archivable.push((pushed_by.date, appliance, own.version.clone(), indexes[i]));
        }
    }
    archivable.sort();
    let full = archivable.len() / ARCHIVE_ITEMS * ARCHIVE_ITEMS;
    let archives: Vec<Vec<usize>> = archivable[..full]
        .chunks(ARCHIVE_ITEMS)
        .map(|chunk| chunk.iter().rev().map(|a| a.3).collect())
        .collect();
    let archived: std::collections::BTreeSet<usize> = archives.iter().flatten().copied().collect();
    Partition {
        current: (0..releases.len())
            .filter(|i| !archived.contains(i))
            .collect(),
        archives,
    }
}
