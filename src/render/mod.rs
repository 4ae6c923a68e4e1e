//! Turns hashed releases into the site's text files: feeds, the manifest and
//! the landing page. Pure functions of their input: no clock, no I/O but
//! reading templates.

pub mod archive;
pub mod feed;
pub mod page;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use url::Url;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{FileDigest, MAX_TEXT_FILE, Name, RelPath, Release, ReleaseInfo, Sha256};
use crate::sign::PublicKey;
use crate::sums;
use crate::trust::Published;

use crate::media::{FEED, MANIFEST};

/// Everything the renderers read.
pub struct Site<'a> {
    pub config: &'a Config,
    /// In publishing order.
    pub releases: &'a [Release],
    pub public_key: &'a PublicKey,
    /// The key a coming rotation moves to, if announced.
    pub next_key: Option<&'a PublicKey>,
    /// The OpenPGP key, if any: its public key is published as
    /// `openpgp.asc`, which SHA256SUMS lists, so the minisign signature
    /// vouches for it.
    pub openpgp: Option<&'a OpenPgp>,
    pub build_time: DateTime<Utc>,
    /// The build's sequence number (see [`crate::trust`]).
    pub sequence: u64,
    /// When consumers must stop trusting this build.
    pub expires: Option<DateTime<Utc>>,
    /// Appliances' feeds as the site this build follows publishes them,
    /// by path, each one this build may keep (see [`crate::trust`]): one it
    /// renders with that feed's own stamp to the same bytes is kept as it
    /// is, signature and all.
    pub published_feeds: &'a BTreeMap<String, Published>,
}

/// The OpenPGP key a site is signed with besides minisign: signing is a
/// pure function of the key, the bytes and the time, so catalogs whose
/// signatures `SHA256SUMS` lists are signed as they are rendered.
pub struct OpenPgp {
    pub signer: crate::openpgp::Signer,
    /// The public key, armored.
    pub public: String,
}

/// A rendered feed.
pub struct Feed {
    /// Relative to the site: `feed.xml` or `feeds/<appliance>.xml`.
    pub path: String,
    /// The one appliance it covers, if not all.
    pub appliance: Option<Name>,
    /// Empty when `held`.
    pub xml: Vec<u8>,
    /// The signature file it was published with, when it is kept as the
    /// followed site published it; else it is signed with the build's stamp.
    pub signature: Option<String>,
    pub length: u64,
    pub sha256: Sha256,
    /// The digest of what an archive is rendered from, when the build
    /// asked for them ([`Known`]).
    pub inputs: Option<Sha256>,
    /// Taken from where the build writes it, which holds it already.
    pub held: bool,
}

/// A rendered history page.
pub struct Page {
    pub path: String,
    /// Empty when `held`.
    pub html: String,
    pub length: u64,
    pub sha256: Sha256,
    /// The digest of what it is rendered from, when the build asked for
    /// them ([`Known`]).
    pub inputs: Option<Sha256>,
    /// Taken from where the build writes it, which holds it already.
    pub held: bool,
}

/// The files an earlier build rendered, by the digest of their inputs
/// ([`Inputs`]): the hash cache knows the digest of each, and the build's
/// staging directory may hold it already.
pub trait Known: Sync {
    /// The length and SHA-256 of the file at `path` in the site, rendered
    /// before from inputs of digest `inputs`, when the place the build
    /// writes it to holds exactly those bytes already.
    fn rendered(&self, path: &str, inputs: &Sha256) -> Option<FileDigest>;
}

/// The rendered feeds and pages of a site, before signing.
pub struct Rendered {
    /// The current feeds, then the archives (signed the same way).
    pub feeds: Vec<Feed>,
    pub page: String,
    /// Per-appliance history pages.
    pub history: Vec<Page>,
    /// Which releases the current feeds hold and which the archives: the
    /// catalogs split them the same way.
    pub partition: archive::Partition,
}

pub fn generator() -> String {
    format!("vmcast-gen {}", env!("CARGO_PKG_VERSION"))
}

/// Where a release is shown on the landing page.
pub fn release_link(config: &Config, info: &ReleaseInfo) -> Url {
    let mut url = config.base_url.clone();
    url.set_fragment(Some(&info.anchor()));
    url
}

/// The history page of an appliance, which lists every release.
pub fn history_path(appliance: &Name) -> String {
    format!("history/{appliance}.html")
}

/// Where an archived release is shown: its appliance's history page.
pub fn history_link(config: &Config, info: &ReleaseInfo) -> Url {
    let mut url = config.site_url(&history_path(&info.appliance));
    url.set_fragment(Some(&info.anchor()));
    url
}

/// A feed to write: where, for which appliance, and what it holds.
struct FeedJob<'a> {
    path: String,
    appliance: Option<&'a Name>,
    items: Vec<&'a Release>,
    /// The number of the archive it is, if it is one.
    archive: Option<usize>,
    /// The archive its history continues in, if it is a current feed.
    newest_archive: Option<usize>,
    /// The digest of an archive's inputs, when asked for.
    inputs: Option<Sha256>,
}

/// The digest of what a file is rendered from, fed whole values, so that
/// no field is left out by oversight: the whole config (its `Debug`
/// form), the site's templates, the program's version, and every field
/// of each release it lists (the release's derived [`std::hash::Hash`],
/// which takes every field of every type in it). The program itself is
/// not in it: the hash cache keeps what one program rendered for that
/// program only.
struct Inputs {
    site: Sha256,
    /// Of each release, in the site's order.
    releases: Vec<Sha256>,
}

/// A SHA-256 fed through [`std::fmt::Write`] or [`std::hash::Hasher`]:
/// what [`std::hash::Hash`] feeds it depends on the program (the width
/// of `usize`, the byte order), which is all [`Inputs`] needs.
struct Digester(sha2::Sha256);

impl std::fmt::Write for Digester {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        sha2::Digest::update(&mut self.0, s.as_bytes());
        Ok(())
    }
}

impl std::hash::Hasher for Digester {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    /// Unused: the digest is the SHA-256 ([`digest`]).
    fn finish(&self) -> u64 {
        0
    }
}

fn digest(feed: impl FnOnce(&mut Digester) -> std::fmt::Result) -> Sha256 {
    let mut d = Digester(sha2::Digest::new());
    feed(&mut d).expect("a digest takes any text");
    Sha256(sha2::Digest::finalize(d.0).into())
}

impl Inputs {
    /// `None` when the templates directory cannot be read: then nothing
    /// is taken from before.
    fn of(site: &Site, threads: usize) -> Option<Inputs> {
        use std::fmt::Write;
        let templates = page::templates_digest(&site.config.templates_dir)?;
        let config = site.config;
        let site_digest = digest(|d| write!(d, "{}\0{templates}\0{config:?}", generator()));
        let releases = crate::par::map(threads, site.releases, |r| {
            digest(|d| {
                std::hash::Hash::hash(r, d);
                Ok(())
            })
        });
        Some(Inputs {
            site: site_digest,
            releases,
        })
    }

    /// Of a file of `kind` and `name` that lists `releases` (indexes into
    /// the site's releases), in this order: their digests' bytes, after
    /// their count (a history page lists thousands).
    fn of_file(&self, kind: &str, name: &str, releases: &[usize]) -> Sha256 {
        use std::fmt::Write;
        digest(|d| {
            write!(d, "{kind}\0{name}\0{}\0{}\0", self.site, releases.len())?;
            for &i in releases {
                sha2::Digest::update(&mut d.0, self.releases[i].0);
            }
            Ok(())
        })
    }
}

/// Renders the site on up to `threads` threads: the feeds (with a
/// thousand releases, a hundred archive documents) on every core, the
/// pages beside them. The output does not depend on `threads`. With
/// `known`, each archive and history page is given the digest of its
/// inputs, and one that `known` holds is not rendered again.
pub fn render(site: &Site, threads: usize, known: Option<&dyn Known>) -> Result<Rendered> {
    let mut appliances: Vec<&Name> = site.releases.iter().map(|r| &r.info.appliance).collect();
    appliances.sort();
    appliances.dedup();

    let partition = archive::partition(site.config, site.releases);
    let current: Vec<&Release> = partition
        .current
        .iter()
        .map(|&i| &site.releases[i])
        .collect();
    let newest_archive = (!partition.archives.is_empty()).then_some(partition.archives.len());
    let inputs = known.and_then(|_| Inputs::of(site, threads));
    let mut jobs = vec![FeedJob {
        path: FEED.to_owned(),
        appliance: None,
        items: current.clone(),
        archive: None,
        newest_archive,
        inputs: None,
    }];
    // Every appliance has its own feed, also on a site of one: a
    // subscriber polls the one small feed of what it runs. It links the
    // newest archive that holds one of its releases, from which the chain
    // reaches them all: an archive of other appliances' releases leaves it
    // as it was.
    for name in &appliances {
        jobs.push(FeedJob {
            path: crate::media::appliance_feed(name.as_str()),
            appliance: Some(name),
            items: current
                .iter()
                .copied()
                .filter(|r| r.info.appliance == **name)
                .collect(),
            archive: None,
            newest_archive: partition
                .archives
                .iter()
                .rposition(|a| a.iter().any(|&i| site.releases[i].info.appliance == **name))
                .map(|i| i + 1),
            inputs: None,
        });
    }
    for (i, indexes) in partition.archives.iter().enumerate() {
        let path = archive::path(i + 1);
        jobs.push(FeedJob {
            inputs: inputs
                .as_ref()
                .map(|d| d.of_file("archive", &path, indexes)),
            path,
            appliance: None,
            items: indexes.iter().map(|&i| &site.releases[i]).collect(),
            archive: Some(i + 1),
            newest_archive: None,
        });
    }
    // A feed carries its releases' notes escaped: one that those alone
    // would take past the limit is refused before anything is rendered.
    for job in &jobs {
        let notes: usize = job
            .items
            .iter()
            .map(|r| crate::vocab::escaped_len(&r.info.notes_html))
            .sum();
        if notes as u64 > MAX_TEXT_FILE {
            return Err(Error::other(format_args!(
                "{} would be over {MAX_TEXT_FILE} bytes ({}) with its releases' notes alone, the \
                 limit for a site's text files: `verify` refuses it; shorten the release notes or \
                 split the site",
                job.path,
                crate::units::human_size(MAX_TEXT_FILE)
            )));
        }
    }
    let paths: Vec<(&str, Option<&Name>)> = jobs
        .iter()
        .map(|j| (j.path.as_str(), j.appliance))
        .collect();

    let made = known.zip(inputs.as_ref());
    let (feeds, pages) = std::thread::scope(|scope| {
        let pages = scope.spawn(|| render_pages(site, &appliances, &paths, &current, made));
        let feeds = crate::par::map(threads, &jobs, |job| {
            let held = (known.zip(job.inputs)).and_then(|(k, d)| k.rendered(&job.path, &d));
            let (xml, signature, sha256, held) = match held {
                Some(digest) => (Vec::new(), None, digest.sha256, Some(digest.length)),
                None => {
                    let (xml, signature) = match job.archive {
                        Some(n) => (feed::render_archive(site, n, &job.items), None),
                        None => render_current(site, job),
                    };
                    let sha256 = Sha256::of(&xml);
                    (xml, signature, sha256, None)
                }
            };
            Feed {
                length: held.unwrap_or(xml.len() as u64),
                xml,
                signature,
                sha256,
                inputs: job.inputs,
                held: held.is_some(),
                path: job.path.clone(),
                appliance: job.appliance.cloned(),
            }
        });
        let pages = pages
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (feeds, pages)
    });
    for feed in &feeds {
        check_size(&feed.path, feed.length as usize)?;
    }
    let (page, history) = pages?;
    Ok(Rendered {
        feeds,
        page,
        history,
        partition,
    })
}

/// A current feed, with its signature when it is kept as published: an
/// appliance's feed that rendered with its own stamp is the published one,
/// byte for byte. Any other is rendered with the build's stamp.
fn render_current(site: &Site, job: &FeedJob) -> (Vec<u8>, Option<String>) {
    let render = |site: &Site| {
        feed::render(
            site,
            &job.path,
            job.appliance,
            &job.items,
            job.newest_archive,
        )
    };
    let published = job
        .appliance
        .and_then(|_| site.published_feeds.get(&job.path));
    if let Some(published) = published
        && let Some(time) = DateTime::from_timestamp(published.stamp.timestamp, 0)
    {
        let then = Site {
            build_time: time,
            sequence: published.stamp.sequence,
            expires: None,
            ..*site
        };
        if render(&then) == published.data {
            return (published.data.clone(), Some(published.signature.clone()));
        }
    }
    (render(site), None)
}

/// A file a release publishes: an image, the box or the zsync control
/// file made of it, an SBOM or provenance.
pub struct ReleaseFile<'a> {
    pub path: &'a RelPath,
    pub sha256: Sha256,
    /// Where it is served, if not from the site itself: an image from
    /// `download_base_url`, and its control file beside it. Boxes are
    /// always the site's.
    pub url: Option<&'a Url>,
    /// An image itself, the only kind of file a directory's manifest
    /// lists: systemd-sysupdate 257 matches a pattern against the start of
    /// a name, so it would take `<image>.zsync` or `<image>.spdx.json` for
    /// a version of the image `<image>`'s pattern names.
    pub image: bool,
}

/// Every file the releases publish, the one list `SHA256SUMS` and each
/// directory's manifest (`[catalogs] systemd`, its images only) are made
/// from.
pub fn release_files<'a>(releases: &'a [Release]) -> impl Iterator<Item = ReleaseFile<'a>> {
    releases.iter().flat_map(|r| {
        let images = r.images.iter().flat_map(|i| {
            let image = ReleaseFile {
                path: &i.source.site_path,
                sha256: i.digest.sha256,
                url: Some(&i.source.url),
                image: true,
            };
            let boxed = i.vagrant_box.as_ref().map(|b| ReleaseFile {
                path: &b.path,
                sha256: b.digest.sha256,
                url: None,
                image: false,
            });
            let control = i.zsync.as_ref().map(|z| ReleaseFile {
                path: &z.path,
                sha256: z.digest.sha256,
                url: Some(&z.url),
                image: false,
            });
            std::iter::once(image).chain(boxed).chain(control)
        });
        let supply = r.supply.iter().map(|f| ReleaseFile {
            path: &f.site_path,
            sha256: f.digest.sha256,
            url: Some(&f.url),
            image: false,
        });
        images.chain(supply)
    })
}

/// The systemd-sysupdate transfers of an appliance, reading its flat
/// directory `images/<appliance>/` of the site at `base` (`[catalogs]
/// systemd`): the catalog writes them, the landing page shows them, and
/// `verify` makes them again from the signed feeds.
pub fn transfers(releases: &[Release], appliance: &Name, base: &Url) -> crate::sysupdate::Plan {
    let url = crate::config::join_url(base, &format!("images/{appliance}/"));
    crate::sysupdate::plan(releases, appliance, &url, &|path, url| {
        served_from(base, path, Some(url))
    })
}

/// Whether a file of a release lies at its path in the site at `base`,
/// not on another host (`download_base_url`, or the old one of a release
/// taken from the previous site).
pub fn served_from(base: &Url, path: &RelPath, url: Option<&Url>) -> bool {
    url.is_none_or(|url| *url == crate::config::join_url(base, path.as_str()))
}

/// `SHA256SUMS` of the site: every file of its releases
/// ([`release_files`]), the OpenPGP public key, and `files`, the text files
/// rendered besides them (feeds, catalogs) with their digests.
pub fn manifest<'a>(
    site: &'a Site,
    files: impl Iterator<Item = (&'a str, Sha256)>,
) -> Result<String> {
    let published = release_files(site.releases).map(|f| (f.path.as_str(), f.sha256));
    let openpgp_key = site.openpgp.map(|key| {
        (
            crate::openpgp::PUBLIC_KEY,
            Sha256::of(key.public.as_bytes()),
        )
    });
    let manifest = sums::manifest(published.chain(files).chain(openpgp_key));
    check_size(MANIFEST, manifest.len())?;
    Ok(manifest)
}

/// The landing page, and the history pages.
type Pages = (String, Vec<Page>);

/// The landing page, and the history page of each appliance that has
/// archived releases: taken from `made` when it knows the page's inputs.
fn render_pages(
    site: &Site,
    appliances: &[&Name],
    feeds: &[(&str, Option<&Name>)],
    current: &[&Release],
    made: Option<(&dyn Known, &Inputs)>,
) -> Result<Pages> {
    let page = page::render(site, feeds, current)?;
    let history = appliances
        .iter()
        .filter(|name| {
            current
                .iter()
                .filter(|r| r.info.appliance == ***name)
                .count()
                < site
                    .releases
                    .iter()
                    .filter(|r| r.info.appliance == ***name)
                    .count()
        })
        .map(|name| {
            let path = history_path(name);
            let listed: Vec<usize> = (0..site.releases.len())
                .filter(|&i| site.releases[i].info.appliance == **name)
                .collect();
            let inputs = made.map(|(_, d)| d.of_file("history", &path, &listed));
            let held = made
                .zip(inputs)
                .and_then(|((known, _), d)| known.rendered(&path, &d));
            let (html, sha256, held) = match held {
                Some(digest) => (String::new(), digest.sha256, Some(digest.length)),
                None => {
                    let html = page::render_history(site, name)?;
                    let sha256 = Sha256::of(html.as_bytes());
                    (html, sha256, None)
                }
            };
            Ok(Page {
                path,
                length: held.unwrap_or(html.len() as u64),
                html,
                sha256,
                inputs,
                held: held.is_some(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((page, history))
}

/// Refuses a text file `verify` would refuse to read.
pub fn check_size(path: &str, len: usize) -> Result<()> {
    if len as u64 > MAX_TEXT_FILE {
        return Err(Error::other(format_args!(
            "{path} would be {len} bytes, over the limit of {MAX_TEXT_FILE} bytes ({}) for a \
             site's text files: `verify` refuses it; shorten the release notes or split the site",
            crate::units::human_size(MAX_TEXT_FILE)
        )));
    }
    Ok(())
}
