//! Where the site's files come from: a local output directory or an
//! http(s) site, with the limits every read keeps to.
//!
//! Over the network every request has a deadline: a small file (feed,
//! manifest, key, signature) must arrive whole within the timeout, and an
//! image must keep up a minimum rate. Locally every file is opened once,
//! without following a symbolic link, checked to be a regular file on that
//! descriptor, and read no further than its limit.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use sha2::Digest;
use url::Url;

use super::VerifyOptions;
use super::urls::Accepted;
use crate::media::FEED;
use crate::model::{RelPath, Sha256, Sha512};

/// The longest span over which an image's transfer rate is measured, and
/// the longest an image's body may send nothing.
const RATE_WINDOW: Duration = Duration::from_secs(30);

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

/// How long the network may take.
#[derive(Debug, Clone, Copy)]
struct Net {
    /// The deadline of a whole small request, and of any response's headers.
    timeout: Duration,
    /// The lowest rate an image may arrive at, in bytes per second; 0 for none.
    min_rate: u64,
    /// The span the rate is measured over, and the longest silence of an
    /// image's body: [`RATE_WINDOW`], or the timeout if that is shorter.
    window: Duration,
}

enum Source {
    Dir(PathBuf),
    Http,
}

pub(super) struct Fetcher {
    source: Source,
    base: Option<Url>,
    net: Net,
    agent: Option<ureq::Agent>,
}

impl Fetcher {
    pub(super) fn new(options: &VerifyOptions) -> Fetcher {
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
            net: Net {
                timeout: options.timeout,
                min_rate: options.min_rate,
                window: RATE_WINDOW.min(options.timeout),
            },
            agent: None,
        }
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

    fn http(&mut self) -> &ureq::Agent {
        let net = self.net;
        self.agent.get_or_insert_with(|| {
            ureq::Agent::config_builder()
                .timeout_connect(Some(net.timeout))
                .timeout_recv_response(Some(net.timeout))
                .max_redirects(5)
                .build()
                .into()
        })
    }

    /// A whole small file, of at most `limit` bytes; over HTTP within the
    /// timeout.
    pub(super) fn fetch(
        &mut self,
        loc: &Location,
        limit: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        let (reader, url): (Box<dyn Read>, Option<&Url>) = match &loc.target {
            Target::File(path) => {
                let file =
                    open_local(path).map_err(|e| format!("cannot read {}: {e}", loc.display))?;
                let size = file.metadata().map_or(0, |m| m.len());
                if size > limit {
                    return Err(format!("{} is larger than {limit} bytes", loc.display));
                }
                (Box::new(file), None)
            }
            Target::Url(url) => {
                let net = self.net;
                let response = self
                    .http()
                    .get(url.as_str())
                    .config()
                    .timeout_global(Some(net.timeout))
                    .build()
                    .call()
                    .map_err(|e| request_error(url, e, &net))?;
                let body = response.into_body().into_with_config().limit(u64::MAX);
                (Box::new(body.reader()), Some(url))
            }
        };
        let mut data = Vec::new();
        if let Err(e) = reader.take(limit.saturating_add(1)).read_to_end(&mut data) {
            return Err(match url {
                Some(url) => body_error(url, &e, data.len() as u64, &self.net),
                None => format!("cannot read {}: {e}", loc.display),
            });
        }
        if data.len() as u64 > limit {
            return Err(format!("{} is larger than {limit} bytes", loc.display));
        }
        Ok(data)
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
    ) -> std::result::Result<(Sha256, Option<Sha512>, u64), String> {
        let local = match &self.source {
            Source::Dir(_) if !local_first => None,
            Source::Dir(root) => match open_local(&root.join(path.as_str())) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("cannot read it: {e}")),
            },
            Source::Http => None,
        };
        let net = self.net;
        let url = url.url();
        let remote = local.is_none();
        let (reader, mut meter): (Box<dyn Read>, Option<RateMeter>) = match local {
            Some(file) => (Box::new(file), None),
            None => {
                let response = self
                    .http()
                    .get(url.as_str())
                    .config()
                    .timeout_per_read(Some(net.window))
                    .build()
                    .call()
                    .map_err(|e| request_error(url, e, &net))?;
                let body = response.into_body().into_with_config().limit(u64::MAX);
                (Box::new(body.reader()), RateMeter::new(&net))
            }
        };
        let mut limited = reader.take(length.saturating_add(1));
        let mut hasher = sha2::Sha256::new();
        // The SHA-512 too, where the feed gives one (the virt-builder index).
        let mut sha512 = sha512.then(sha2::Sha512::new);
        let mut buf = vec![0u8; 1 << 20];
        let mut read: u64 = 0;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if remote => return Err(body_error(url, &e, read, &net)),
                Err(e) => return Err(format!("read failed after {read} bytes: {e}")),
            };
            read += n as u64;
            if read > length {
                break;
            }
            hasher.update(&buf[..n]);
            if let Some(h) = sha512.as_mut() {
                h.update(&buf[..n]);
            }
            if let Some(meter) = meter.as_mut() {
                meter.check(read).map_err(|m| format!("{url}: {m}"))?;
            }
        }
        if read > length {
            return Err(format!(
                "longer than its declared {} bytes (endless data?); stopped reading",
                length
            ));
        }
        if read < length {
            return Err(format!("shorter than declared: {read} of {} bytes", length));
        }
        Ok((
            Sha256(hasher.finalize().into()),
            sha512.map(|h| Sha512(h.finalize().into())),
            read,
        ))
    }
}

/// Opens a file of a local site as it is: never through a symbolic link,
/// without waiting for a FIFO's writer, and only if the descriptor it got
/// is a regular file.
fn open_local(path: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => {
            return Err(io::Error::other(
                "it is a symbolic link, and a site's files are never read through one",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(file);
    }
    let what = crate::fsutil::file_kind(&meta);
    Err(io::Error::other(format!("not a regular file but {what}")))
}

/// A request that failed before its body: the URL and what was slow.
fn request_error(url: &Url, e: ureq::Error, net: &Net) -> String {
    let secs = |d: Duration| d.as_secs();
    match e {
        ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => {
            format!("{url}: no connection within {} s", secs(net.timeout))
        }
        ureq::Error::Timeout(ureq::Timeout::Global | ureq::Timeout::RecvResponse) => {
            format!("{url}: no response within {} s", secs(net.timeout))
        }
        ureq::Error::Timeout(ureq::Timeout::PerRead) => {
            format!("{url}: no response data for {} s", secs(net.window))
        }
        other => format!("cannot fetch {url}: {other}"),
    }
}

/// A body read that failed after `read` bytes: the URL and what was slow.
fn body_error(url: &Url, e: &io::Error, read: u64, net: &Net) -> String {
    let timeout = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .and_then(|inner| match inner {
            ureq::Error::Timeout(t) => Some(*t),
            _ => None,
        });
    match timeout {
        Some(ureq::Timeout::Global) => format!(
            "{url}: deadline of {} s passed after {read} bytes",
            net.timeout.as_secs()
        ),
        Some(ureq::Timeout::PerRead | ureq::Timeout::RecvBody) => format!(
            "{url}: no body data for {} s after {read} bytes",
            net.window.as_secs()
        ),
        _ => format!("cannot fetch {url}: read failed after {read} bytes: {e}"),
    }
}

/// Watches a transfer: at the end of each window, fewer bytes than the
/// minimum rate over that window fail it.
pub(crate) struct RateMeter {
    min_rate: u64,
    window: Duration,
    since: Instant,
    at: u64,
}

impl RateMeter {
    /// A meter for `min_rate` bytes per second over windows of `window`.
    pub(crate) fn with(min_rate: u64, window: Duration) -> RateMeter {
        RateMeter {
            min_rate,
            window,
            since: Instant::now(),
            at: 0,
        }
    }

    fn new(net: &Net) -> Option<RateMeter> {
        (net.min_rate > 0).then(|| RateMeter {
            min_rate: net.min_rate,
            window: net.window,
            since: Instant::now(),
            at: 0,
        })
    }

    pub(crate) fn check(&mut self, total: u64) -> std::result::Result<(), String> {
        let elapsed = self.since.elapsed();
        if elapsed < self.window {
            return Ok(());
        }
        let got = total - self.at;
        if u128::from(got) * 1000 < u128::from(self.min_rate) * elapsed.as_millis() {
            return Err(format!(
                "only {got} bytes in the last {} s, below the minimum rate of {} bytes/s \
                 (--min-rate)",
                elapsed.as_secs(),
                self.min_rate
            ));
        }
        self.since = Instant::now();
        self.at = total;
        Ok(())
    }
}
