//! Notices when the inputs of a build change: the config, the releases
//! tree, the images directory and the templates, by names, sizes and
//! mtimes. `serve` polls it to rebuild the preview.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{self, Overrides};

type Fingerprint = Vec<(PathBuf, u64, SystemTime)>;

/// Remembers the inputs' fingerprint as last seen.
pub struct Watcher {
    config: PathBuf,
    seen: Fingerprint,
}

impl Watcher {
    /// Starts watching the site of `config`, as it is now.
    pub fn new(config: &Path) -> Self {
        Watcher {
            config: config.to_path_buf(),
            seen: fingerprint(config),
        }
    }

    /// Whether anything changed since the last call (or since `new`).
    pub fn changed(&mut self) -> bool {
        let now = fingerprint(&self.config);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

/// Names, sizes and mtimes of everything a build reads: the config, the
/// releases tree, the images directory and the templates.
fn fingerprint(config: &Path) -> Fingerprint {
    let mut roots = vec![config.to_path_buf()];
    if let Ok(c) = config::load(config, &Overrides::default()) {
        roots.push(c.releases_dir);
        roots.push(c.templates_dir);
        roots.extend(c.images_dir);
    }
    let mut out = Vec::new();
    for root in roots {
        for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
            if let Ok(meta) = entry.metadata() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((entry.path().to_path_buf(), meta.len(), mtime));
            }
        }
    }
    out
}
