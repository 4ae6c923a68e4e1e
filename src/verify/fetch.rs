//! Where the site's files come from: a local output directory or an
//! http(s) site, with the limits every read keeps to.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;
use url::Url;

use super::feed::FeedImage;
use crate::fsutil;
use crate::model::Sha256;
use crate::render::FEED;

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

pub(super) enum Fetcher {
    Dir {
        root: PathBuf,
        base: Option<Url>,
        http: Option<ureq::Agent>,
    },
    Http {
        base: Option<Url>,
        agent: ureq::Agent,
    },
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .max_redirects(5)
        .build()
        .into()
}

impl Fetcher {
    pub(super) fn new(source: &str) -> Fetcher {
        if source.starts_with("http://") || source.starts_with("https://") {
            Fetcher::Http {
                base: None,
                agent: agent(),
            }
        } else {
            let path = Path::new(source);
            let root = if source.ends_with(".xml") {
                path.parent().unwrap_or(Path::new(".")).to_path_buf()
            } else {
                path.to_path_buf()
            };
            Fetcher::Dir {
                root,
                base: None,
                http: None,
            }
        }
    }

    /// Where the feed named by the source is.
    pub(super) fn feed_location(&self, source: &str) -> std::result::Result<Location, String> {
        match self {
            Fetcher::Http { .. } => {
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
            Fetcher::Dir { root, .. } => {
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
        match (&feed.target, self) {
            (Target::Url(u), _) => u.as_str().strip_prefix(base.as_str()).map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            }),
            (Target::File(p), Fetcher::Dir { root, .. }) => p
                .strip_prefix(root)
                .ok()
                .map(|r| r.to_string_lossy().into_owned()),
            (Target::File(_), Fetcher::Http { .. }) => None,
        }
    }

    pub(super) fn set_base(&mut self, url: Url) {
        match self {
            Fetcher::Dir { base, .. } | Fetcher::Http { base, .. } => *base = Some(url),
        }
    }

    /// A file of the site by its path relative to the site.
    pub(super) fn site(&self, rel: &str) -> Location {
        match self {
            Fetcher::Dir { root, .. } => {
                let path = root.join(rel);
                Location {
                    display: rel.to_owned(),
                    target: Target::File(path),
                }
            }
            Fetcher::Http { base, .. } => {
                let base = base
                    .as_ref()
                    .expect("the base is known before site files are fetched");
                let url = crate::config::join_url(base, rel);
                Location {
                    display: url.to_string(),
                    target: Target::Url(url),
                }
            }
        }
    }

    fn http(&mut self) -> &ureq::Agent {
        match self {
            Fetcher::Http { agent, .. } => agent,
            Fetcher::Dir { http, .. } => http.get_or_insert_with(agent),
        }
    }

    pub(super) fn fetch(
        &mut self,
        loc: &Location,
        limit: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        match &loc.target {
            Target::File(path) => {
                let meta = fsutil::metadata(path).map_err(|e| e.to_string())?;
                if meta.len() > limit {
                    return Err(format!("{} is larger than {limit} bytes", loc.display));
                }
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", loc.display))
            }
            Target::Url(url) => {
                let mut response = self
                    .http()
                    .get(url.as_str())
                    .call()
                    .map_err(|e| format!("cannot fetch {url}: {e}"))?;
                response
                    .body_mut()
                    .with_config()
                    .limit(limit)
                    .read_to_vec()
                    .map_err(|e| format!("cannot fetch {url}: {e}"))
            }
        }
    }

    /// Stream-hashes an image, reading at most one byte past its declared
    /// length so that an endless stream is cut off.
    pub(super) fn read_image(
        &mut self,
        image: &FeedImage,
    ) -> std::result::Result<(Sha256, u64), String> {
        let local = match self {
            Fetcher::Dir { root, .. } => Some(root.join(&image.path)).filter(|p| p.exists()),
            Fetcher::Http { .. } => None,
        };
        let reader: Box<dyn Read> = match local {
            Some(path) => Box::new(
                std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            ),
            None => {
                let response = self
                    .http()
                    .get(&image.url)
                    .call()
                    .map_err(|e| format!("cannot fetch {}: {e}", image.url))?;
                Box::new(
                    response
                        .into_body()
                        .into_with_config()
                        .limit(image.length.saturating_add(1))
                        .reader(),
                )
            }
        };
        let mut limited = reader.take(image.length.saturating_add(1));
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut read: u64 = 0;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ureq reports reading past the limit as an error.
                Err(_) if read >= image.length => {
                    read = image.length + 1;
                    break;
                }
                Err(e) => return Err(format!("read failed after {read} bytes: {e}")),
            };
            read += n as u64;
            if read > image.length {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if read > image.length {
            return Err(format!(
                "longer than its declared {} bytes (endless data?); stopped reading",
                image.length
            ));
        }
        if read < image.length {
            return Err(format!(
                "shorter than declared: {read} of {} bytes",
                image.length
            ));
        }
        Ok((Sha256(hasher.finalize().into()), read))
    }
}
