//! Catalogs for the clients of other ecosystems, written from the same
//! releases as the RSS feed, in the same build: no image is read again.
//! Each is opt-in under `[catalogs]` in `vmcast.toml`, and every file is
//! listed in `SHA256SUMS`, so the one signed manifest vouches for them all.

pub mod json_feed;
pub mod simplestreams;
pub mod systemd;
pub mod vagrant;
pub mod virt_builder;

use serde::Serialize;

use crate::error::Result;
use crate::render::Site;
use crate::render::archive::Partition;

/// One file of a catalog, relative to the site.
pub struct CatalogFile {
    pub path: String,
    pub bytes: Vec<u8>,
    /// Signed with minisign beside it (`<path>.minisig`), like the feeds.
    pub signed: bool,
}

/// What one catalog wrote, and what it left out and why, for the build
/// summary.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The catalog's name as `[catalogs]` spells it.
    pub catalog: &'static str,
    /// The files written, relative to the site.
    pub files: Vec<String>,
    /// Images the catalog cannot list, each with the reason.
    pub skipped: Vec<String>,
}

/// Every catalog's files and its summary.
#[derive(Default)]
pub struct Catalogs {
    pub files: Vec<CatalogFile>,
    /// Texts written clearsigned with the OpenPGP key, by path: forms for
    /// clients that check only OpenPGP. Each signs itself, so, like the
    /// `.minisig` files, they are not in `SHA256SUMS`.
    pub clearsigned: Vec<(String, String)>,
    pub written: Vec<Written>,
}

impl Catalogs {
    fn add(&mut self, catalog: &'static str, files: Vec<CatalogFile>, skipped: Vec<String>) {
        self.written.push(Written {
            catalog,
            files: files.iter().map(|f| f.path.clone()).collect(),
            skipped,
        });
        self.files.extend(files);
    }

    /// Clearsigned forms of the catalog added last, listed in its summary.
    fn add_clearsigned(&mut self, clearsigned: Vec<(String, String)>) {
        if let Some(written) = self.written.last_mut() {
            written
                .files
                .extend(clearsigned.iter().map(|(p, _)| p.clone()));
        }
        self.clearsigned.extend(clearsigned);
    }
}

/// Renders the catalogs the config asks for. `partition` splits the
/// releases into the current ones and the archives, as for the RSS feeds.
pub fn render(site: &Site, partition: &Partition) -> Result<Catalogs> {
    let mut catalogs = Catalogs::default();
    let wanted = &site.config.catalogs;
    if wanted.json_feed {
        catalogs.add("json_feed", json_feed::render(site, partition)?, Vec::new());
    }
    if wanted.vagrant {
        let (files, skipped) = vagrant::render(site)?;
        catalogs.add("vagrant", files, skipped);
    }
    if wanted.virt_builder {
        let (files, skipped) = virt_builder::render(site);
        // virt-builder checks only OpenPGP: the index clearsigned.
        let clearsigned: Vec<(String, String)> = match site.openpgp {
            Some(_) => files
                .iter()
                .filter(|f| f.path == virt_builder::INDEX)
                .map(|f| {
                    let text = String::from_utf8_lossy(&f.bytes).into_owned();
                    (virt_builder::INDEX_ASC.to_owned(), text)
                })
                .collect(),
            None => Vec::new(),
        };
        catalogs.add("virt_builder", files, skipped);
        catalogs.add_clearsigned(clearsigned);
    }
    if wanted.simplestreams {
        let tree = simplestreams::render(site)?;
        catalogs.add("simplestreams", tree.files, tree.skipped);
        catalogs.add_clearsigned(tree.clearsigned);
    }
    if wanted.systemd.is_some() {
        let tree = systemd::render(site)?;
        catalogs.add("systemd", tree.files, tree.skipped);
    }
    Ok(catalogs)
}
