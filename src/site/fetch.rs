//! Where the site's files come from: a local output directory or an
//! http(s) site, with the limits every read keeps to.
//!
//! Over the network every request goes through [`crate::net`]: a small
//! file (feed, manifest, key, signature) must arrive whole within the
//! timeout, and an image must keep up a minimum rate. Locally every file is opened once,
//! without following a symbolic link, checked to be a regular file on that
//! descriptor, and read no further than its limit.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::Digest;
use url::Url;

use super::Problem;
use super::VerifyOptions;
use super::state::Cached;
use super::urls::Accepted;
use crate::media::FEED;
use crate::model::{RelPath, Sha256, Sha512};
use crate::net::{Client, Limits, NetError, Request, StreamError};

/// A file of the site, as shown to the user and as fetched.
#[derive(Debug, Clone)]
pub(super) struct Location {
    pub(super) display: String,
    pub(super) target: Target,
}

#[derive(Debug, Clone)]
pub(super) enum Target {
    File(PathBuf),
    Url(Url),
}

impl Location {
    pub(super) fn with_suffix(&self, suffix: &str) -> Location {
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

enum Source {
    Dir(PathBuf),
    Http,
}

/// A file that could not be had, or was not what it must be: what went
/// wrong, in words and as a [`Problem`].
#[derive(Debug)]
pub(super) struct FetchError {
    pub(super) problem: Problem,
    detail: String,
}

impl FetchError {
    fn new(problem: Problem, detail: impl Into<String>) -> Self {
        FetchError {
            problem,
            detail: detail.into(),
        }
    }
}

impl From<&NetError> for FetchError {
    /// A network failure is unreachable, unless the server sent more than
    /// was declared or allowed: bytes that contradict what was signed.
    fn from(e: &NetError) -> Self {
        let problem = match e.is_refusal() {
            true => Problem::Mismatch,
            false => Problem::Unreachable,
        };
        FetchError::new(problem, e.to_string())
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

pub(super) struct Fetcher {
    source: Source,
    base: Option<Url>,
    limits: Limits,
    client: Option<Client>,
    /// The URLs asked for conditionally ([`Fetcher::cache`]).
    cacheable: BTreeSet<Url>,
    /// What the last run that verified fetched of them.
    cached: BTreeMap<String, Cached>,
    /// What this run fetched of them, for the next run.
    fetched: BTreeMap<String, Cached>,
}

impl Fetcher {
    /// A fetcher for `options.source`; `cached` are the documents the last
    /// run that verified kept, which it asks about conditionally.
    pub(super) fn new(options: &VerifyOptions, cached: BTreeMap<String, Cached>) -> Fetcher {
        let source = &options.source;
        let source = if source.starts_with("http://") || source.starts_with("https://") {
            Source::Http
        } else {
            let path = Path::new(source);
            Source::Dir(if source.ends_with(".xml") {
                path.parent().unwrap_or(Path::new(".")).to_path_buf()
            } else {
                path.to_path_buf()
            })
        };
        Fetcher {
            source,
            base: None,
            limits: Limits {
                timeout: options.timeout,
                min_rate: options.min_rate,
            },
            client: None,
            cacheable: BTreeSet::new(),
            cached,
            fetched: BTreeMap::new(),
        }
    }

    /// Asks for the file at `loc` conditionally from now on: with the
    /// validators of the copy the last run verified, if any, so that a
    /// server whose file did not change answers 304 and sends nothing,
    /// and that copy is read instead. Whatever it is, its signature and
    /// everything else are checked again as if it had just arrived; an
    /// expired build stays expired.
    pub(super) fn cache(&mut self, loc: &Location) {
        if let Target::Url(url) = &loc.target {
            self.cacheable.insert(url.clone());
        }
    }

    /// The cached documents this run fetched or confirmed unchanged.
    pub(super) fn into_cached(self) -> BTreeMap<String, Cached> {
        self.fetched
    }

    /// Where the feed named by the source is.
    pub(super) fn feed_location(&self, source: &str) -> std::result::Result<Location, String> {
        match &self.source {
            Source::Http => {
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
            Source::Dir(root) => {
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
    pub(super) fn site_name(&self, feed: &Location, base: &Url) -> Option<String> {
        match (&feed.target, &self.source) {
            (Target::Url(u), _) => u.as_str().strip_prefix(base.as_str()).map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            }),
            (Target::File(p), Source::Dir(root)) => p
                .strip_prefix(root)
                .ok()
                .map(|r| r.to_string_lossy().into_owned()),
            (Target::File(_), Source::Http) => None,
        }
    }

    pub(super) fn set_base(&mut self, url: Url) {
        self.base = Some(url);
    }

    /// A file of the site by its path relative to the site.
    pub(super) fn site(&self, rel: &RelPath) -> Location {
        match &self.source {
            Source::Dir(root) => Location {
                display: rel.to_string(),
                target: Target::File(root.join(rel.as_str())),
            },
            Source::Http => {
                let base = self
                    .base
                    .as_ref()
                    .expect("the base is known before site files are fetched");
                let url = crate::config::join_url(base, rel.as_str());
                Location {
                    display: url.to_string(),
                    target: Target::Url(url),
                }
            }
        }
    }

    /// A file the feed links by its path in the site and its accepted URL:
    /// the local site's file when the site is a directory holding it, else
    /// the URL.
    pub(super) fn file_or_url(&self, path: &RelPath, url: &Accepted) -> Location {
        if let Source::Dir(root) = &self.source {
            let local = root.join(path.as_str());
            if std::fs::symlink_metadata(&local).is_ok() {
                return Location {
                    display: path.to_string(),
                    target: Target::File(local),
                };
            }
        }
        Location {
            display: url.url().to_string(),
            target: Target::Url(url.url().clone()),
        }
    }

    fn client(&mut self) -> &Client {
        let limits = self.limits;
        self.client.get_or_insert_with(|| Client::new(limits))
    }

    /// A whole small file, of at most `limit` bytes; over HTTP within the
    /// timeout.
    pub(super) fn fetch(
        &mut self,
        loc: &Location,
        limit: u64,
    ) -> std::result::Result<Vec<u8>, FetchError> {
        let path = match &loc.target {
            Target::Url(url) if self.cacheable.contains(url) => {
                return self.get_conditional(url, limit);
            }
            Target::Url(url) => {
                return self
                    .client()
                    .get_small(url, limit)
                    .map_err(|e| FetchError::from(&e));
            }
            Target::File(path) => path,
        };
        let too_large = || {
            FetchError::new(
                Problem::Mismatch,
                format!("{} is larger than {limit} bytes", loc.display),
            )
        };
        let file = open_local(path)
            .map_err(|e| local_error(&e, format!("cannot read {}: {e}", loc.display)))?;
        let size = file.metadata().map_or(0, |m| m.len());
        if size > limit {
            return Err(too_large());
        }
        let mut data = Vec::new();
        if let Err(e) = file.take(limit.saturating_add(1)).read_to_end(&mut data) {
            return Err(FetchError::new(
                Problem::Unreachable,
                format!("cannot read {}: {e}", loc.display),
            ));
        }
        if data.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(data)
    }

    /// A small file asked for with the validators of its cached copy: 304
    /// gives that copy, 200 a new one, each kept for the next run.
    fn get_conditional(&mut self, url: &Url, limit: u64) -> Result<Vec<u8>, FetchError> {
        let key = url.to_string();
        let cached = self.cached.get(&key).cloned();
        let cached = cached.as_ref();
        let mut request = Request::small(url);
        if let Some(etag) = cached.and_then(|c| c.etag.as_deref()) {
            request = request.header("If-None-Match", etag);
        }
        if let Some(date) = cached.and_then(|c| c.last_modified.as_deref()) {
            request = request.header("If-Modified-Since", date);
        }
        let response = self
            .client()
            .send(&request)
            .map_err(|e| FetchError::from(&e))?;
        if let (304, Some(cached)) = (response.status(), cached) {
            let body = cached.body.clone().into_bytes();
            self.fetched.insert(key, cached.clone());
            return Ok(body);
        }
        response.expect(200).map_err(|e| FetchError::from(&e))?;
        let validator = |name| response.header(name).map(str::to_owned);
        let (etag, last_modified) = (validator("etag"), validator("last-modified"));
        let body = response.read_all(limit).map_err(|e| FetchError::from(&e))?;
        // A document that is no text is not kept: feeds and signatures are.
        if let Ok(text) = std::str::from_utf8(&body) {
            let copy = Cached {
                etag,
                last_modified,
                body: text.to_owned(),
            };
            self.fetched.insert(key, copy);
        }
        Ok(body)
    }

    /// Stream-hashes an image: the local file of a site directory when it
    /// has one, else its accepted URL. Reads at most one byte past its
    /// declared length so that an endless stream is cut off, and over HTTP
    /// gives up on a body that falls below the minimum rate.
    pub(super) fn read_image(
        &mut self,
        path: &RelPath,
        length: u64,
        sha512: bool,
        url: &Accepted,
        local_first: bool,
    ) -> std::result::Result<(Sha256, Option<Sha512>, u64), FetchError> {
        let local = match &self.source {
            Source::Dir(_) if !local_first => None,
            Source::Dir(root) => match open_local(&root.join(path.as_str())) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(local_error(&e, format!("cannot read it: {e}"))),
            },
            Source::Http => None,
        };
        let mut sha256 = sha2::Sha256::new();
        // The SHA-512 too, where the feed gives one (the virt-builder index).
        let mut sha512 = sha512.then(sha2::Sha512::new);
        let mut hash = |chunk: &[u8]| {
            sha256.update(chunk);
            if let Some(h) = sha512.as_mut() {
                h.update(chunk);
            }
        };
        let read = match local {
            Some(file) => {
                let read =
                    crate::fsutil::read_bounded(file, length, &mut hash).map_err(|(read, e)| {
                        FetchError::new(
                            Problem::Unreachable,
                            format!("read failed after {read} bytes: {e}"),
                        )
                    })?;
                if read > length {
                    return Err(FetchError::new(
                        Problem::Mismatch,
                        format!(
                            "longer than its declared {length} bytes (endless data?); stopped \
                             reading"
                        ),
                    ));
                }
                if read < length {
                    return Err(FetchError::new(
                        Problem::Mismatch,
                        format!("shorter than declared: {read} of {length} bytes"),
                    ));
                }
                read
            }
            None => {
                let (from, response) = self
                    .client()
                    .get_from(url.url(), 0)
                    .map_err(|e| FetchError::from(&e))?;
                let streamed = response.stream(from, length, |chunk| {
                    hash(chunk);
                    Ok::<(), Infallible>(())
                });
                match streamed {
                    Ok(read) => read,
                    Err(StreamError::Net(e)) => return Err(FetchError::from(&e)),
                    Err(StreamError::Sink(never)) => match never {},
                }
            }
        };
        Ok((
            Sha256(sha256.finalize().into()),
            sha512.map(|h| Sha512(h.finalize().into())),
            read,
        ))
    }
}

/// A local file that could not be opened: missing or unreadable (which a
/// later try may mend), or not a plain file (a link, a FIFO: never read).
fn local_error(e: &io::Error, detail: String) -> FetchError {
    let problem = match e.kind() {
        io::ErrorKind::Other => Problem::Malformed,
        _ => Problem::Unreachable,
    };
    FetchError::new(problem, detail)
}

/// Opens a file of a local site as it is: never through a symbolic link,
/// without waiting for a FIFO's writer, and only if the descriptor it got
/// is a regular file (`fsutil::open_regular_io`).
fn open_local(path: &Path) -> io::Result<File> {
    match crate::fsutil::open_regular_io(path, false) {
        Ok((file, _)) => Ok(file),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            Err(io::Error::other(
                "it is a symbolic link, and a site's files are never read through one",
            ))
        }
        Err(e) => Err(e),
    }
}
