//! The one HTTP client. Every request vmcast-gen makes goes through here:
//! `verify` (and so `build --previous` and `pull`, which verify first) for
//! a site's small files and, with `--images`, its images; `pull` for the
//! image it installs.
//!
//! - **One agent** ([`Client`]): connect and response-header deadlines of
//!   `--timeout`, proxies from the environment (`ALL_PROXY`, `HTTPS_PROXY`,
//!   `HTTP_PROXY`, `NO_PROXY`, as ureq reads them), the user agent
//!   `vmcast-gen/<version>`, no content decoding (a body is the file's
//!   bytes, so lengths and ranges mean what they say).
//! - **Redirects** are followed here, not by ureq: at most
//!   [`MAX_REDIRECTS`], to any host (a GitHub release asset redirects to
//!   another host), but never from `https` to `http`, nor to anything but
//!   `http(s)`. The request's headers (`Range`) go along. What a redirect
//!   leads to is checked against the signed digests all the same; the
//!   policy keeps a downgrade from handing the request to anyone on the path.
//! - **Two paces** ([`Pace`]): a small file arrives whole within
//!   `--timeout`; an image's body must keep up `--min-rate` over windows of
//!   30 s, or `--timeout` if that is shorter, and may not fall silent for a
//!   whole window.
//! - **Bounded bodies**: a small file is read no further than its limit,
//!   a stream no further than one byte past its declared length.
//! - **One error** ([`NetError`]) that names the URL and says plainly what
//!   was slow or wrong.
//!
//! A [`Request`] carries extra headers and a [`Response`] shows its status
//! and headers before its body is read, so conditional requests
//! (`If-None-Match`, a 304 whose body is never read) and multi-range GETs
//! are requests like any other.

use std::fmt;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use url::Url;

/// The longest span over which a stream's rate is measured, and the
/// longest it may fall silent: 30 s, or `--timeout` if that is shorter.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);

/// The most redirects one request follows.
pub const MAX_REDIRECTS: usize = 5;

const USER_AGENT: &str = concat!("vmcast-gen/", env!("CARGO_PKG_VERSION"));

/// How long the network may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The deadline of a connection, of a response's headers, and of a
    /// whole small file.
    pub timeout: Duration,
    /// The lowest rate a stream may arrive at, in bytes per second; 0 for
    /// none.
    pub min_rate: u64,
}

impl Limits {
    /// The span a stream's rate is measured over, and the longest it may
    /// be silent: [`RATE_WINDOW`], or the timeout if that is shorter.
    pub fn window(&self) -> Duration {
        RATE_WINDOW.min(self.timeout)
    }
}

/// How a response must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Whole, body included, within the timeout: a feed, a signature, a key.
    Deadline,
    /// Headers within the timeout, then a body at the minimum rate that is
    /// never silent for a whole window: an image.
    Rate,
}

/// A GET request: a URL, its pace and extra headers.
#[derive(Debug, Clone)]
pub struct Request {
    url: Url,
    pace: Pace,
    headers: Vec<(String, String)>,
}

impl Request {
    /// A small file, whole within the timeout.
    pub fn small(url: &Url) -> Request {
        Request {
            url: url.clone(),
            pace: Pace::Deadline,
            headers: Vec::new(),
        }
    }

    /// A large body, read at the minimum rate.
    pub fn stream(url: &Url) -> Request {
        Request {
            url: url.clone(),
            pace: Pace::Rate,
            headers: Vec::new(),
        }
    }

    /// The request with one more header (`Range`, `If-None-Match`...).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// How a server answers a request for many ranges, as far as an answer
/// showed ([`Client::get_small_probing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranges {
    /// With `multipart/byteranges`: every range asked for.
    Many,
    /// With the whole file, or the first range alone.
    One,
    /// Not shown.
    Unknown,
}

/// The one HTTP agent and the limits it keeps.
pub struct Client {
    agent: ureq::Agent,
    limits: Limits,
}

impl Client {
    pub fn new(limits: Limits) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(limits.timeout))
            .timeout_recv_response(Some(limits.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(USER_AGENT)
            .build()
            .into();
        Client { agent, limits }
    }

    /// Sends `request`, following redirects as the module says, and
    /// returns the response with its body still unread, whatever its
    /// status.
    pub fn send(&self, request: &Request) -> Result<Response, NetError> {
        let started = Instant::now();
        let fail = |fault| NetError::new(&request.url, fault);
        let mut url = request.url.clone();
        let mut redirects = 0;
        loop {
            let mut builder = self.agent.get(url.as_str());
            for (name, value) in &request.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let config = builder.config();
            let config = match request.pace {
                Pace::Deadline => config
                    .timeout_global(Some(self.limits.timeout.saturating_sub(started.elapsed()))),
                Pace::Rate => config.timeout_per_read(Some(self.limits.window())),
            };
            let response = config
                .build()
                .call()
                .map_err(|e| fail(self.request_fault(e, request.pace)))?;
            let (parts, body) = response.into_parts();
            if !parts.status.is_redirection() || parts.status.as_u16() == 304 {
                return Ok(Response {
                    url: request.url.clone(),
                    status: parts.status,
                    headers: parts.headers,
                    body,
                    pace: request.pace,
                    limits: self.limits,
                });
            }
            if redirects == MAX_REDIRECTS {
                return Err(fail(Fault::Redirect(format!(
                    "more than {MAX_REDIRECTS} redirects"
                ))));
            }
            redirects += 1;
            let location = parts
                .headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    fail(Fault::Redirect(format!(
                        "a redirect ({}) without a Location",
                        parts.status.as_u16()
                    )))
                })?;
            url = next_hop(&url, location).map_err(|why| fail(Fault::Redirect(why)))?;
        }
    }

    /// A whole small file of at most `limit` bytes, within the timeout;
    /// any answer but 200 is an error.
    pub fn get_small(&self, url: &Url, limit: u64) -> Result<Vec<u8>, NetError> {
        let response = self.send(&Request::small(url))?;
        response.expect(200)?;
        response.read_all(limit)
    }

    /// A whole small file whose length is known (signed), asked for as two
    /// ranges, its first byte and the rest, so that the answer also shows
    /// how the server takes a request for many ranges, at no cost: a
    /// `multipart/byteranges` answer brings both; a 200 brings the whole
    /// file, as a server that ignores many ranges sends it; the first
    /// range alone (S3) is followed by one request for the rest. An answer
    /// that is none of these (a refusal, a part missing) shows nothing: the
    /// file is then asked for whole, as [`get_small`](Self::get_small)
    /// does. What arrives is the caller's to check against the signed
    /// digest. A failure to reach the server, and a body of more than
    /// `length` bytes and their parts' headers, are errors.
    pub fn get_small_probing(&self, url: &Url, length: u64) -> Result<(Vec<u8>, Ranges), NetError> {
        if (2..=MAX_PROBED).contains(&length)
            && let Some(got) = self.probe(url, length)?
        {
            return Ok(got);
        }
        Ok((self.get_small(url, length)?, Ranges::Unknown))
    }

    /// [`get_small_probing`](Self::get_small_probing)'s two-range request,
    /// and the one for the rest when the first range came alone; `None`
    /// when the answers do not bring the whole file.
    fn probe(&self, url: &Url, length: u64) -> Result<Option<(Vec<u8>, Ranges)>, NetError> {
        let last = length - 1;
        let request = Request::small(url).header("Range", format!("bytes=0-0,1-{last}"));
        let response = self.send(&request)?;
        match response.status() {
            200 => return Ok(Some((response.read_all(length)?, Ranges::One))),
            206 => {}
            _ => return Ok(None),
        }
        let many = response.header("content-type").and_then(boundary).is_some();
        let mut data = vec![0; length as usize];
        let mut got = Vec::new();
        if small_parts(response, &mut data, &mut got).is_err() {
            return Ok(None);
        }
        let ranges = match missing(&mut got, length) {
            None if many => Ranges::Many,
            // Both ranges as one: a server may join ranges that touch.
            None => Ranges::Unknown,
            Some((from, _)) if !many => {
                let request = Request::small(url).header("Range", format!("bytes={from}-{last}"));
                let rest = small_parts(self.send(&request)?, &mut data, &mut got);
                if rest.is_err() || missing(&mut got, length).is_some() {
                    return Ok(None);
                }
                Ranges::One
            }
            Some(_) => return Ok(None),
        };
        Ok(Some((data, ranges)))
    }

    /// Asks for a file from byte `from` on (`Range: bytes=from-` when
    /// `from` is not 0), at the minimum rate. Returns where the body
    /// starts: `from` for a 206 whose `Content-Range` starts there, 0 for a
    /// 200 (a server that ignores ranges sends the whole file). Any other
    /// answer is an error.
    pub fn get_from(&self, url: &Url, from: u64) -> Result<(u64, Response), NetError> {
        let mut request = Request::stream(url);
        if from > 0 {
            request = request.header("Range", format!("bytes={from}-"));
        }
        let response = self.send(&request)?;
        match response.status() {
            200 => Ok((0, response)),
            206 if from > 0 => {
                let range = response.header("content-range").unwrap_or_default();
                if range_start(range) == Some(from) {
                    Ok((from, response))
                } else {
                    Err(NetError::new(
                        url,
                        Fault::Range {
                            from,
                            got: range.to_owned(),
                        },
                    ))
                }
            }
            _ => Err(response.status_error()),
        }
    }

    /// What went wrong before a response's headers arrived.
    fn request_fault(&self, e: ureq::Error, pace: Pace) -> Fault {
        match e {
            ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => {
                Fault::NoConnection(self.limits.timeout)
            }
            ureq::Error::Timeout(ureq::Timeout::PerRead) if pace == Pace::Rate => {
                Fault::NoResponse(self.limits.window())
            }
            ureq::Error::Timeout(_) => Fault::NoResponse(self.limits.timeout),
            ureq::Error::Io(e) => Fault::Failed(e.to_string()),
            other => Fault::Failed(other.to_string()),
        }
    }
}

/// The most a control file is asked for in two ranges: its bytes are held
/// in memory as they arrive in any order (one of a 100 GiB image is about
/// 200 MiB); a bigger one is asked for whole.
const MAX_PROBED: u64 = 256 << 20;

/// Writes the parts of a 206 answer for a small file into `data`, the
/// file's length, and the byte ranges they brought into `got`.
fn small_parts(
    response: Response,
    data: &mut [u8],
    got: &mut Vec<(u64, u64)>,
) -> Result<(), NetError> {
    let length = data.len() as u64;
    let parts = response.parts(length, 2 * length + 4096, |at, bytes| {
        // `parts` keeps every part within the file.
        let start = at as usize;
        if let Some(into) = data.get_mut(start..start + bytes.len()) {
            into.copy_from_slice(bytes);
            got.push((at, at + bytes.len() as u64));
        }
        Ok::<_, std::convert::Infallible>(())
    });
    match parts {
        Ok(_) => Ok(()),
        Err(StreamError::Net(e)) => Err(e),
        Err(StreamError::Sink(never)) => match never {},
    }
}

/// The first run of a file of `length` bytes that none of `got` covers.
fn missing(got: &mut [(u64, u64)], length: u64) -> Option<(u64, u64)> {
    got.sort_unstable();
    let mut covered = 0;
    for &(start, end) in got.iter() {
        if start > covered {
            return Some((covered, start));
        }
        covered = covered.max(end);
    }
    (covered < length).then_some((covered, length))
}

/// Where a redirect from `from` to `location` leads, if it may be followed.
fn next_hop(from: &Url, location: &str) -> Result<Url, String> {
    let next = from
        .join(location)
        .map_err(|e| format!("redirected to {location:?}, which is not a URL ({e})"))?;
    match (from.scheme(), next.scheme()) {
        ("https", "https") | ("http", "http" | "https") => Ok(next),
        ("https", "http") => Err(format!(
            "redirected from https to http ({next}), which is never followed"
        )),
        _ => Err(format!("redirected to {next}, which is not an http(s) URL")),
    }
}

/// The first byte a `Content-Range: bytes A-B/T` names.
fn range_start(value: &str) -> Option<u64> {
    let (start, _) = value.strip_prefix("bytes ")?.split_once('-')?;
    start.parse().ok()
}

/// A response whose headers have arrived and whose body has not been read.
pub struct Response {
    /// The URL asked for (errors name it, not a redirect's target).
    url: Url,
    status: ureq::http::StatusCode,
    headers: ureq::http::HeaderMap,
    body: ureq::Body,
    pace: Pace,
    limits: Limits,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// A header's value, when it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// An error unless the status is `status`.
    pub fn expect(&self, status: u16) -> Result<(), NetError> {
        if self.status() == status {
            Ok(())
        } else {
            Err(self.status_error())
        }
    }

    fn status_error(&self) -> NetError {
        NetError::new(
            &self.url,
            Fault::Status {
                code: self.status(),
                reason: self.status.canonical_reason().unwrap_or("").to_owned(),
            },
        )
    }

    fn reader(self) -> (Url, Pace, Limits, impl Read) {
        let reader = self.body.into_with_config().limit(u64::MAX).reader();
        (self.url, self.pace, self.limits, reader)
    }

    /// The whole body, at most `limit` bytes.
    pub fn read_all(self, limit: u64) -> Result<Vec<u8>, NetError> {
        let (url, pace, limits, reader) = self.reader();
        let mut data = Vec::new();
        if let Err(e) = reader.take(limit.saturating_add(1)).read_to_end(&mut data) {
            let at = data.len() as u64;
            return Err(NetError::new(&url, body_fault(&e, at, None, pace, limits)));
        }
        if data.len() as u64 > limit {
            return Err(NetError::new(&url, Fault::TooLarge { limit }));
        }
        Ok(data)
    }

    /// Streams the body into `sink` as it arrives: the bytes of a file from
    /// `from` (where the body starts) to `length`, its declared length.
    /// One byte past `length` stops it ([`Fault::TooLong`]), and so does a
    /// body that ends short of it. Returns the bytes received.
    pub fn stream<E>(
        self,
        from: u64,
        length: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, StreamError<E>> {
        let (url, pace, limits, reader) = self.reader();
        let remaining = length.saturating_sub(from);
        let mut body = reader.take(remaining.saturating_add(1));
        let mut meter = (pace == Pace::Rate && limits.min_rate > 0)
            .then(|| RateMeter::new(limits.min_rate, limits.window()));
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let fault = body_fault(&e, from + received, Some(length), pace, limits);
                    return Err(NetError::new(&url, fault).into());
                }
            };
            if received + n as u64 > remaining {
                return Err(NetError::new(&url, Fault::TooLong { length }).into());
            }
            sink(&buf[..n]).map_err(StreamError::Sink)?;
            received += n as u64;
            if let Some(meter) = meter.as_mut() {
                meter
                    .check(received)
                    .map_err(|fault| NetError::new(&url, fault))?;
            }
        }
        if received < remaining {
            let fault = Fault::Ended {
                after: from + received,
                of: length,
            };
            return Err(NetError::new(&url, fault).into());
        }
        Ok(received)
    }
}

impl Response {
    /// Streams the parts of a 206 answer to a `Range` request into `sink`:
    /// each part's first byte in the file, of `length` bytes, and its
    /// bytes as they arrive, at the minimum rate. One part
    /// (`Content-Range`) or a `multipart/byteranges` body, as the server
    /// chose: which parts they are, and whether they are the ones asked
    /// for, the caller checks. A part outside the file or of another
    /// length, a malformed answer and a body of more than `limit` bytes
    /// are errors. Returns the bytes of the parts.
    pub fn parts<E>(
        self,
        length: u64,
        limit: u64,
        mut sink: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<u64, StreamError<E>> {
        if self.status() != 206 {
            return Err(self.status_error().into());
        }
        let boundary = self
            .header("content-type")
            .and_then(boundary)
            .map(str::to_owned);
        let single = self.header("content-range").map(str::to_owned);
        let mut body = Body::new(self, limit);
        let Some(boundary) = boundary else {
            let range = single.unwrap_or_default();
            let (start, end) = body.range(&range, length)?;
            body.copy(start, end, &mut sink)?;
            if body.fill()? {
                return Err(body
                    .fault(Fault::Parts("more body than its Content-Range says".into()))
                    .into());
            }
            return Ok(end - start);
        };
        // RFC 9110 §14.6: a delimiter line before each part, each part
        // headers, an empty line and its bytes; a closing delimiter last.
        let (delimiter, close) = (format!("--{boundary}"), format!("--{boundary}--"));
        let mut total = 0;
        let mut line = body.line()?;
        loop {
            match line.as_deref() {
                Some(l) if l == close => return Ok(total),
                Some(l) if l == delimiter => {}
                Some(_) => {
                    line = body.line()?;
                    continue;
                }
                None => {
                    let fault = Fault::Parts("no closing delimiter".into());
                    return Err(body.fault(fault).into());
                }
            }
            let mut range = None;
            loop {
                match body.line()?.as_deref() {
                    Some("") => break,
                    Some(header) => {
                        if let Some((name, value)) = header.split_once(':')
                            && name.trim().eq_ignore_ascii_case("content-range")
                        {
                            range = Some(value.trim().to_owned());
                        }
                    }
                    None => {
                        let fault = Fault::Parts("a part ends in its headers".into());
                        return Err(body.fault(fault).into());
                    }
                }
            }
            let (start, end) = body.range(range.as_deref().unwrap_or_default(), length)?;
            body.copy(start, end, &mut sink)?;
            total += end - start;
            line = body.line()?;
        }
    }
}

/// The boundary of a `multipart/byteranges` content type.
fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    if !params
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/byteranges")
    {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// A body read in a framing of its own: lines, and runs of bytes, at the
/// minimum rate, never past its limit.
struct Body<R> {
    url: Url,
    reader: R,
    pace: Pace,
    limits: Limits,
    meter: Option<RateMeter>,
    buf: Vec<u8>,
    /// The bytes of `buf` not yet taken.
    at: usize,
    end: usize,
    /// Bytes of the body read so far, and the most it may have.
    read: u64,
    limit: u64,
}

impl Body<Box<dyn Read>> {
    fn new(response: Response, limit: u64) -> Self {
        let (url, pace, limits, reader) = response.reader();
        Body {
            url,
            reader: Box::new(reader),
            meter: (pace == Pace::Rate && limits.min_rate > 0)
                .then(|| RateMeter::new(limits.min_rate, limits.window())),
            pace,
            limits,
            buf: vec![0u8; 1 << 16],
            at: 0,
            end: 0,
            read: 0,
            limit,
        }
    }
}

impl<R: Read> Body<R> {
    fn fault(&self, fault: Fault) -> NetError {
        NetError::new(&self.url, fault)
    }

    /// Reads more when all that was read is taken; `false` at the end.
    fn fill(&mut self) -> Result<bool, NetError> {
        if self.at < self.end {
            return Ok(true);
        }
        let n = loop {
            match self.reader.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let fault = body_fault(&e, self.read, None, self.pace, self.limits);
                    return Err(self.fault(fault));
                }
            }
        };
        self.read += n as u64;
        if self.read > self.limit {
            return Err(self.fault(Fault::TooLong { length: self.limit }));
        }
        if let Some(meter) = self.meter.as_mut() {
            meter
                .check(self.read)
                .map_err(|f| NetError::new(&self.url, f))?;
        }
        (self.at, self.end) = (0, n);
        Ok(n > 0)
    }

    /// The next line, without its CRLF; `None` at the end of the body.
    fn line(&mut self) -> Result<Option<String>, NetError> {
        let mut line = Vec::new();
        loop {
            if !self.fill()? {
                return Ok((!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()));
            }
            let rest = &self.buf[self.at..self.end];
            match rest.iter().position(|&b| b == b'\n') {
                Some(n) => {
                    line.extend_from_slice(&rest[..n]);
                    self.at += n + 1;
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
                }
                None => {
                    line.extend_from_slice(rest);
                    self.at = self.end;
                }
            }
            if line.len() > 4096 {
                return Err(self.fault(Fault::Parts("a line of over 4 KiB".into())));
            }
        }
    }

    /// The bytes `[start, end)` of the file, which come next.
    fn copy<E>(
        &mut self,
        start: u64,
        end: u64,
        sink: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        let mut at = start;
        while at < end {
            if !self.fill()? {
                let fault = Fault::Ended { after: at, of: end };
                return Err(self.fault(fault).into());
            }
            let n = (self.end - self.at).min((end - at) as usize);
            sink(at, &self.buf[self.at..self.at + n]).map_err(StreamError::Sink)?;
            self.at += n;
            at += n as u64;
        }
        Ok(())
    }

    /// The bytes a `Content-Range: bytes A-B/T` names, `[A, B + 1)`, in a
    /// file of `length` bytes.
    fn range(&self, value: &str, length: u64) -> Result<(u64, u64), NetError> {
        let parsed = value.strip_prefix("bytes ").and_then(|r| {
            let (span, total) = r.split_once('/')?;
            let (a, b) = span.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            let total_ok = total.trim() == "*" || total.trim().parse() == Ok(length);
            (a <= b && b < length && total_ok).then_some((a, b + 1))
        });
        parsed.ok_or_else(|| {
            self.fault(Fault::Parts(format!(
                "part {value:?} is not within the file's {length} bytes"
            )))
        })
    }
}

/// What went wrong while a body was read, `at` bytes into the file.
fn body_fault(e: &io::Error, at: u64, of: Option<u64>, pace: Pace, limits: Limits) -> Fault {
    let timeout = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .and_then(|inner| match inner {
            ureq::Error::Timeout(t) => Some(*t),
            _ => None,
        });
    match timeout {
        Some(ureq::Timeout::Global) => Fault::Deadline {
            timeout: limits.timeout,
            after: at,
        },
        Some(_) => Fault::Silent {
            window: match pace {
                Pace::Deadline => limits.timeout,
                Pace::Rate => limits.window(),
            },
            after: at,
            of,
        },
        None => Fault::Broken {
            after: at,
            of,
            cause: e.to_string(),
        },
    }
}

/// Watches a stream: at the end of each window, fewer bytes than the
/// minimum rate over that window fail it.
struct RateMeter {
    min_rate: u64,
    window: Duration,
    since: Instant,
    at: u64,
}

impl RateMeter {
    fn new(min_rate: u64, window: Duration) -> RateMeter {
        RateMeter {
            min_rate,
            window,
            since: Instant::now(),
            at: 0,
        }
    }

    fn check(&mut self, total: u64) -> Result<(), Fault> {
        let elapsed = self.since.elapsed();
        if elapsed < self.window {
            return Ok(());
        }
        let got = total - self.at;
        if u128::from(got) * 1000 < u128::from(self.min_rate) * elapsed.as_millis() {
            return Err(Fault::Slow {
                got,
                over: elapsed,
                min_rate: self.min_rate,
            });
        }
        self.since = Instant::now();
        self.at = total;
        Ok(())
    }
}

/// A request that failed, and the URL it was for.
#[derive(Debug)]
pub struct NetError(Box<(Url, Fault)>);

/// What was slow or wrong.
#[derive(Debug)]
pub enum Fault {
    /// No connection within the timeout.
    NoConnection(Duration),
    /// No response headers within this long.
    NoResponse(Duration),
    /// An answer other than the one the request needs.
    Status { code: u16, reason: String },
    /// A redirect that is not followed, and why.
    Redirect(String),
    /// A 206 for another range than the one asked for.
    Range { from: u64, got: String },
    /// A small file's deadline passed after `after` bytes.
    Deadline { timeout: Duration, after: u64 },
    /// The body sent nothing for a window, after `after` bytes (of `of`).
    Silent {
        window: Duration,
        after: u64,
        of: Option<u64>,
    },
    /// Fewer than `min_rate` bytes a second over the last window.
    Slow {
        got: u64,
        over: Duration,
        min_rate: u64,
    },
    /// A small file larger than its limit.
    TooLarge { limit: u64 },
    /// A stream longer than its declared length.
    TooLong { length: u64 },
    /// A stream that ended short of its declared length.
    Ended { after: u64, of: u64 },
    /// An answer to a `Range` request whose parts are malformed.
    Parts(String),
    /// The connection failed after `after` bytes (of `of`).
    Broken {
        after: u64,
        of: Option<u64>,
        cause: String,
    },
    /// The request failed before any response: DNS, connection, TLS...
    Failed(String),
}

impl NetError {
    fn new(url: &Url, fault: Fault) -> NetError {
        NetError(Box::new((url.clone(), fault)))
    }

    pub fn url(&self) -> &Url {
        &self.0.0
    }

    pub fn fault(&self) -> &Fault {
        &self.0.1
    }

    /// Whether the server sent more than what was declared or allowed:
    /// bytes that contradict what was signed, not a network that failed.
    pub fn is_refusal(&self) -> bool {
        matches!(self.fault(), Fault::TooLarge { .. } | Fault::TooLong { .. })
    }
}

/// `of N bytes` when the whole is known.
struct Of(Option<u64>);

impl fmt::Display for Of {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, " of {n}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url();
        let secs = |d: &Duration| d.as_secs();
        match self.fault() {
            Fault::NoConnection(t) => write!(f, "{url}: no connection within {} s", secs(t)),
            Fault::NoResponse(t) => write!(f, "{url}: no response within {} s", secs(t)),
            Fault::Status { code, reason } => {
                write!(f, "{url}: the server answered {code} {reason}")
            }
            Fault::Redirect(why) => write!(f, "{url}: {why}"),
            Fault::Range { from, got } => write!(
                f,
                "{url}: asked for the bytes from {from}, got the range {got:?}"
            ),
            Fault::Deadline { timeout, after } => write!(
                f,
                "{url}: deadline of {} s passed after {after} bytes",
                secs(timeout)
            ),
            Fault::Silent { window, after, of } => write!(
                f,
                "{url}: no body data for {} s after {after}{} bytes",
                secs(window),
                Of(*of)
            ),
            Fault::Slow {
                got,
                over,
                min_rate,
            } => write!(
                f,
                "{url}: only {got} bytes in the last {} s, below the minimum rate of \
                 {min_rate} bytes/s (--min-rate)",
                secs(over)
            ),
            Fault::TooLarge { limit } => write!(f, "{url} is larger than {limit} bytes"),
            Fault::TooLong { length } => write!(
                f,
                "{url}: longer than its declared {length} bytes (endless data?); stopped reading"
            ),
            Fault::Ended { after, of } => {
                write!(f, "{url}: the download ended after {after} of {of} bytes")
            }
            Fault::Parts(why) => write!(f, "{url}: a malformed ranged answer: {why}"),
            Fault::Broken { after, of, cause } => write!(
                f,
                "{url}: the download broke off after {after}{} bytes ({cause})",
                Of(*of)
            ),
            Fault::Failed(cause) => write!(f, "cannot fetch {url}: {cause}"),
        }
    }
}

impl std::error::Error for NetError {}

/// A stream that stopped: the network, or the sink the caller gave.
#[derive(Debug)]
pub enum StreamError<E> {
    Net(NetError),
    Sink(E),
}

impl<E> From<NetError> for StreamError<E> {
    fn from(e: NetError) -> Self {
        StreamError::Net(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A server on 127.0.0.1 that answers each of `answers` to one
    /// connection, in order, and returns the request heads it read.
    fn serve(answers: Vec<Vec<u8>>) -> (Url, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/f", listener.local_addr().unwrap())).unwrap();
        let thread = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                heads.push(head);
                let _ = stream.write_all(&answer);
            }
            heads
        });
        (url, thread)
    }

    fn client(timeout: u64) -> Client {
        Client::new(Limits {
            timeout: Duration::from_secs(timeout),
            min_rate: 0,
        })
    }

    fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut a = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        a.extend_from_slice(body);
        a
    }

    #[test]
    fn the_rate_window_is_never_longer_than_the_timeout() {
        let limits = |s| Limits {
            timeout: Duration::from_secs(s),
            min_rate: 1,
        };
        assert_eq!(limits(3).window(), Duration::from_secs(3));
        assert_eq!(limits(60).window(), RATE_WINDOW);
    }

    #[test]
    fn redirects_go_anywhere_but_from_https_to_http() {
        let https = Url::parse("https://github.com/o/r/releases/download/v1/x.qcow2").unwrap();
        let http = Url::parse("http://downloads.example.com/a/x.qcow2").unwrap();
        let to = |from: &Url, loc: &str| next_hop(from, loc).map(|u| u.to_string());
        assert_eq!(
            to(&https, "https://objects.githubusercontent.com/x?sig=1").unwrap(),
            "https://objects.githubusercontent.com/x?sig=1"
        );
        assert_eq!(
            to(&http, "/b/x.qcow2").unwrap(),
            "http://downloads.example.com/b/x.qcow2"
        );
        assert_eq!(
            to(&http, "https://cdn.example.net/x").unwrap(),
            "https://cdn.example.net/x"
        );
        assert_eq!(
            to(&https, "http://objects.githubusercontent.com/x").unwrap_err(),
            "redirected from https to http (http://objects.githubusercontent.com/x), which is \
             never followed"
        );
        assert!(to(&http, "file:///etc/passwd").is_err());
    }

    #[test]
    fn a_small_file_asked_for_as_two_ranges_shows_how_many_the_server_answers() {
        let file = b"control!";
        let multipart = b"\r\n--b\r\nContent-Range: bytes 0-0/8\r\n\r\nc\r\n--b\r\n\
                          Content-Range: bytes 1-7/8\r\n\r\nontrol!\r\n--b--\r\n";
        let mut cases = vec![
            (
                vec![answer(
                    "206 Partial Content",
                    "Content-Type: multipart/byteranges; boundary=b\r\n",
                    multipart,
                )],
                Ranges::Many,
            ),
            (vec![answer("200 OK", "", file)], Ranges::One),
            (
                vec![
                    answer(
                        "206 Partial Content",
                        "Content-Range: bytes 0-0/8\r\n",
                        b"c",
                    ),
                    answer(
                        "206 Partial Content",
                        "Content-Range: bytes 1-7/8\r\n",
                        b"ontrol!",
                    ),
                ],
                Ranges::One,
            ),
            (
                vec![answer(
                    "206 Partial Content",
                    "Content-Range: bytes 0-7/8\r\n",
                    file,
                )],
                Ranges::Unknown,
            ),
        ];
        // What shows nothing is followed by a plain request for the file.
        let first_alone = b"\r\n--b\r\nContent-Range: bytes 0-0/8\r\n\r\nc\r\n--b--\r\n";
        let shows_nothing = [
            answer("416 Range Not Satisfiable", "", b""),
            answer(
                "206 Partial Content",
                "Content-Type: multipart/byteranges; boundary=b\r\n",
                first_alone,
            ),
        ];
        for refusal in shows_nothing {
            cases.push((vec![refusal, answer("200 OK", "", file)], Ranges::Unknown));
        }
        for (answers, ranges) in cases {
            let count = answers.len();
            let (url, server) = serve(answers);
            let got = client(5).get_small_probing(&url, 8).unwrap();
            assert_eq!(got, (file.to_vec(), ranges));
            let heads = server.join().unwrap();
            assert!(heads[0].contains("range: bytes=0-0,1-7\r\n"), "{heads:?}");
            if count == 2 && ranges == Ranges::One {
                assert!(heads[1].contains("range: bytes=1-7\r\n"), "{heads:?}");
            }
            if ranges == Ranges::Unknown && count == 2 {
                assert!(!heads[1].contains("range:"), "{heads:?}");
            }
        }
        // More than the file and its parts' headers is refused.
        let (url, server) = serve(vec![answer("200 OK", "", b"control!!")]);
        assert!(client(5).get_small_probing(&url, 8).is_err());
        server.join().unwrap();
    }

    #[test]
    fn redirects_are_followed_with_the_request_headers_and_counted() {
        let (url, server) = serve(vec![
            answer("302 Found", "Location: /g\r\n", b""),
            answer(
                "206 Partial Content",
                "Content-Range: bytes 2-4/5\r\n",
                b"cde",
            ),
        ]);
        let (start, response) = client(5).get_from(&url, 2).unwrap();
        assert_eq!(start, 2);
        let mut got = Vec::new();
        let n = response
            .stream(start, 5, |c| {
                got.extend_from_slice(c);
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!((n, got.as_slice()), (3, &b"cde"[..]));
        let heads = server.join().unwrap();
        assert!(heads[1].starts_with("GET /g HTTP/1.1\r\n"), "{heads:?}");
        for head in &heads {
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("range: bytes=2-\r\n"), "{head}");
            assert!(
                lower.contains(&format!("user-agent: {USER_AGENT}\r\n")),
                "{head}"
            );
        }

        let loops = (0..=MAX_REDIRECTS)
            .map(|_| answer("301 Moved Permanently", "Location: /f\r\n", b""))
            .collect();
        let (url, server) = serve(loops);
        let err = client(5).get_small(&url, 10).unwrap_err();
        assert_eq!(err.to_string(), format!("{url}: more than 5 redirects"));
        server.join().unwrap();
    }

    #[test]
    fn a_resumed_download_takes_a_matching_range_or_the_whole_file() {
        // A server that ignores the range: the body starts at 0.
        let (url, server) = serve(vec![answer("200 OK", "", b"abcde")]);
        let (start, _) = client(5).get_from(&url, 3).unwrap();
        assert_eq!(start, 0);
        server.join().unwrap();
        // A range other than the one asked for is refused.
        let (url, server) = serve(vec![answer(
            "206 Partial Content",
            "Content-Range: bytes 0-4/5\r\n",
            b"abcde",
        )]);
        let err = client(5).get_from(&url, 3).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!("{url}: asked for the bytes from 3, got the range \"bytes 0-4/5\"")
        );
        server.join().unwrap();
        let (url, server) = serve(vec![answer("416 Range Not Satisfiable", "", b"")]);
        let err = client(5).get_from(&url, 3).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!("{url}: the server answered 416 Range Not Satisfiable")
        );
        server.join().unwrap();
    }

    #[test]
    fn one_byte_past_the_declared_length_is_an_error() {
        let (url, server) = serve(vec![answer("200 OK", "", b"abcdef")]);
        let (start, response) = client(5).get_from(&url, 0).unwrap();
        let mut got = 0;
        let err = response
            .stream(start, 5, |c| {
                got += c.len();
                Ok::<(), ()>(())
            })
            .unwrap_err();
        let StreamError::Net(err) = err else {
            panic!("the sink failed")
        };
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            format!("{url}: longer than its declared 5 bytes (endless data?); stopped reading")
        );
        assert_eq!(got, 0, "bytes past the length reached the sink");
        server.join().unwrap();

        let (url, server) = serve(vec![answer("200 OK", "", b"abc")]);
        let (start, response) = client(5).get_from(&url, 0).unwrap();
        let err = response.stream(start, 5, |_| Ok::<(), ()>(())).unwrap_err();
        let StreamError::Net(err) = err else {
            panic!("the sink failed")
        };
        assert!(!err.is_refusal());
        assert_eq!(
            err.to_string(),
            format!("{url}: the download ended after 3 of 5 bytes")
        );
        server.join().unwrap();
    }

    /// Every part `parts` streams, as (start, bytes).
    fn parts_of(answer: Vec<u8>, length: u64) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let (url, server) = serve(vec![answer]);
        let response = client(5)
            .send(&Request::stream(&url).header("Range", "bytes=0-1,4-5"))
            .unwrap();
        let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
        let parts = response.parts(length, 1000, |at, bytes| {
            match got.last_mut() {
                Some((start, b)) if *start + b.len() as u64 == at => b.extend_from_slice(bytes),
                _ => got.push((at, bytes.to_vec())),
            }
            Ok::<(), ()>(())
        });
        server.join().unwrap();
        match parts {
            Ok(n) => {
                assert_eq!(n, got.iter().map(|(_, b)| b.len() as u64).sum::<u64>());
                Ok(got)
            }
            Err(StreamError::Net(e)) => Err(e.to_string().replace(url.as_str(), "URL")),
            Err(StreamError::Sink(())) => unreachable!(),
        }
    }

    #[test]
    fn ranged_answers_are_read_in_one_part_or_many() {
        let multipart = |body: &str| {
            answer(
                "206 Partial Content",
                "Content-Type: multipart/byteranges; boundary=\"B1\"\r\n",
                body.as_bytes(),
            )
        };
        // As nginx answers: an empty line first, then the parts.
        let two = "\r\n--B1\r\nContent-Type: application/octet-stream\r\n\
                   Content-Range: bytes 0-1/8\r\n\r\nab\r\n--B1\r\n\
                   Content-range: bytes 4-5/8\r\n\r\nef\r\n--B1--\r\n";
        assert_eq!(
            parts_of(multipart(two), 8).unwrap(),
            vec![(0, b"ab".to_vec()), (4, b"ef".to_vec())]
        );
        // One range, or ranges coalesced: a plain 206.
        let one = answer(
            "206 Partial Content",
            "Content-Range: bytes 0-5/8\r\n",
            b"abcdef",
        );
        assert_eq!(parts_of(one, 8).unwrap(), vec![(0, b"abcdef".to_vec())]);
        let unclosed = "--B1\r\nContent-Range: bytes 0-1/8\r\n\r\nab\r\n";
        assert_eq!(
            parts_of(multipart(unclosed), 8).unwrap_err(),
            "URL: a malformed ranged answer: no closing delimiter"
        );
        let outside = "--B1\r\nContent-Range: bytes 6-9/10\r\n\r\nghij\r\n--B1--\r\n";
        assert_eq!(
            parts_of(multipart(outside), 8).unwrap_err(),
            "URL: a malformed ranged answer: part \"bytes 6-9/10\" is not within the file's 8 \
             bytes"
        );
        let short = "--B1\r\nContent-Range: bytes 0-3/8\r\n\r\nab";
        assert_eq!(
            parts_of(multipart(short), 8).unwrap_err(),
            "URL: the download ended after 2 of 4 bytes"
        );
        let whole = answer("200 OK", "", b"abcdefgh");
        assert_eq!(
            parts_of(whole, 8).unwrap_err(),
            "URL: the server answered 200 OK"
        );
    }

    #[test]
    fn small_files_are_bounded_and_need_a_200() {
        let (url, server) = serve(vec![
            answer("200 OK", "", b"0123456789"),
            answer("404 Not Found", "", b""),
        ]);
        let err = client(5).get_small(&url, 9).unwrap_err();
        assert_eq!(err.to_string(), format!("{url} is larger than 9 bytes"));
        let err = client(5).get_small(&url, 9).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{url}: the server answered 404 Not Found")
        );
        server.join().unwrap();
    }
}
