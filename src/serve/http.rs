//! HTTP/1.1 messages as `serve` reads and writes them: a request head read
//! within limits of size and time, and response heads.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// The most bytes of a request line, its line end included.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The most bytes of all header fields of a request, line ends included.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most header fields of a request.
pub const MAX_HEADER_LINES: usize = 100;

pub const BAD_REQUEST: &str = "400 Bad Request";
pub const URI_TOO_LONG: &str = "414 URI Too Long";
pub const HEADERS_TOO_LARGE: &str = "431 Request Header Fields Too Large";
pub const VERSION_NOT_SUPPORTED: &str = "505 HTTP Version Not Supported";

/// A request head: what this server acts on.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// The Range field; `None` also when it was sent more than once.
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// The conditional request's fields (RFC 9110 13.1): a client that has
    /// the file asks whether it changed.
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// The connection ends after the response: the client asked for that,
    /// speaks HTTP/1.0 without keep-alive, or sent a body, which this
    /// server does not read.
    pub close: bool,
}

/// What arrives on a connection next.
#[derive(Debug)]
pub enum Incoming {
    Request(Request),
    /// The client closed the connection, or did not send a whole request
    /// head before the deadline.
    Gone,
    /// A request head that is refused with this status, after which the
    /// connection closes.
    Refused(&'static str),
}

/// Reads request heads from a connection through a fixed buffer, so a
/// client can make it hold no more than the limits above.
pub struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
}

enum Line {
    /// The line without its line end.
    Complete(Vec<u8>, usize),
    TooLong,
    Gone,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Self {
        Reader {
            stream,
            buf: vec![0; 8 * 1024],
            pos: 0,
            filled: 0,
        }
    }

    /// The next request head, which must arrive whole before `deadline`.
    pub fn next_request(&mut self, deadline: Instant) -> io::Result<Incoming> {
        // Empty lines before a request line are skipped (RFC 9112 2.2).
        let request_line = loop {
            match self.line(MAX_REQUEST_LINE, deadline)? {
                Line::Complete(line, _) if line.is_empty() => {}
                Line::Complete(line, _) => break line,
                Line::TooLong => return Ok(Incoming::Refused(URI_TOO_LONG)),
                Line::Gone => return Ok(Incoming::Gone),
            }
        };
        let Ok(request_line) = String::from_utf8(request_line) else {
            return Ok(Incoming::Refused(BAD_REQUEST));
        };
        let [method, target, version] = request_line.split(' ').collect::<Vec<_>>()[..] else {
            return Ok(Incoming::Refused(BAD_REQUEST));
        };
        let http10 = match version {
            "HTTP/1.1" => false,
            "HTTP/1.0" => true,
            v if v.starts_with("HTTP/") => return Ok(Incoming::Refused(VERSION_NOT_SUPPORTED)),
            _ => return Ok(Incoming::Refused(BAD_REQUEST)),
        };
        let mut request = Request {
            method: method.to_owned(),
            target: target.to_owned(),
            range: None,
            if_range: None,
            if_none_match: None,
            if_modified_since: None,
            close: http10,
        };
        let mut ranges = 0;
        let (mut budget, mut lines) = (MAX_HEADER_BYTES, 0);
        loop {
            let (line, used) = match self.line(budget, deadline)? {
                Line::Complete(line, _) if line.is_empty() => break,
                Line::Complete(line, used) => (line, used),
                Line::TooLong => return Ok(Incoming::Refused(HEADERS_TOO_LARGE)),
                Line::Gone => return Ok(Incoming::Gone),
            };
            budget -= used;
            lines += 1;
            if lines > MAX_HEADER_LINES {
                return Ok(Incoming::Refused(HEADERS_TOO_LARGE));
            }
            let line = String::from_utf8_lossy(&line);
            // No whitespace before the colon, and no obsolete line folding
            // (RFC 9112 5.1, 5.2).
            let Some((name, value)) = line.split_once(':') else {
                return Ok(Incoming::Refused(BAD_REQUEST));
            };
            if name.is_empty() || name.contains([' ', '\t']) {
                return Ok(Incoming::Refused(BAD_REQUEST));
            }
            let value = value.trim_matches([' ', '\t']);
            match name.to_ascii_lowercase().as_str() {
                "range" => {
                    ranges += 1;
                    request.range = Some(value.to_owned());
                }
                "if-range" => request.if_range = Some(value.to_owned()),
                "if-none-match" => request.if_none_match = Some(value.to_owned()),
                "if-modified-since" => request.if_modified_since = Some(value.to_owned()),
                "connection" => {
                    for option in value.split(',').map(str::trim) {
                        if option.eq_ignore_ascii_case("close") {
                            request.close = true;
                        } else if option.eq_ignore_ascii_case("keep-alive") && http10 {
                            request.close = false;
                        }
                    }
                }
                "content-length" if value != "0" => request.close = true,
                "transfer-encoding" => request.close = true,
                _ => {}
            }
        }
        if ranges > 1 {
            request.range = None;
        }
        Ok(Incoming::Request(request))
    }

    /// One line of at most `max` bytes with its LF (or CRLF); `Gone` at
    /// the end of the stream or the deadline.
    fn line(&mut self, max: usize, deadline: Instant) -> io::Result<Line> {
        let mut line = Vec::new();
        loop {
            let available = &self.buf[self.pos..self.filled];
            let (take, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if line.len() + take > max {
                return Ok(Line::TooLong);
            }
            line.extend_from_slice(&available[..take]);
            self.pos += take;
            if complete {
                let used = line.len();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Complete(line, used));
            }
            if !self.fill(deadline)? {
                return Ok(Line::Gone);
            }
        }
    }

    /// Reads what the client sent next into the (consumed) buffer; false
    /// at the end of the stream or the deadline.
    fn fill(&mut self, deadline: Instant) -> io::Result<bool> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    (self.pos, self.filled) = (0, n);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A response head, written at once.
/// A response head; `length` is the body's, none for a 304, which has no
/// body and whose length would be the unchanged file's.
pub fn write_head(
    out: &mut impl Write,
    status: &str,
    length: Option<u64>,
    fields: &[(&str, String)],
    close: bool,
) -> io::Result<()> {
    let now = chrono::Utc::now().timestamp();
    let mut head = format!("HTTP/1.1 {status}\r\nDate: {}\r\n", http_date(now));
    if let Some(length) = length {
        let _ = write!(head, "Content-Length: {length}\r\n");
    }
    for (name, value) in fields {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

/// A short plain-text response; the body is left out for HEAD.
pub fn write_text(
    out: &mut impl Write,
    status: &str,
    fields: &[(&str, String)],
    body: &str,
    head: bool,
    close: bool,
) -> io::Result<()> {
    let mut all = vec![("Content-Type", "text/plain; charset=utf-8".to_owned())];
    all.extend_from_slice(fields);
    write_head(out, status, Some(body.len() as u64), &all, close)?;
    if !head {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}

/// An IMF-fixdate (RFC 9110 5.6.7) of seconds since the epoch.
pub fn http_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    /// Sends `bytes` to a Reader and returns what it reads first.
    fn incoming(bytes: &[u8]) -> Incoming {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let bytes = bytes.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&bytes);
            let _ = client.shutdown(std::net::Shutdown::Write);
            client
        });
        let got = Reader::new(server)
            .next_request(Instant::now() + Duration::from_secs(5))
            .unwrap();
        drop(writer.join().unwrap());
        got
    }

    fn request(bytes: &[u8]) -> Request {
        match incoming(bytes) {
            Incoming::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn refused(bytes: &[u8]) -> &'static str {
        match incoming(bytes) {
            Incoming::Refused(status) => status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_fields_it_acts_on() {
        let r = request(
            b"\r\nGET /a%20b HTTP/1.1\r\nHost: x\r\nRange:  bytes=0-1 \r\n\
              If-Range: \"e\"\r\nConnection: keep-alive\r\n\r\n",
        );
        assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", "/a%20b"));
        assert_eq!(r.range.as_deref(), Some("bytes=0-1"));
        assert_eq!(r.if_range.as_deref(), Some("\"e\""));
        assert!(!r.close);
        assert!(request(b"GET / HTTP/1.1\nConnection: Close\n\n").close);
        assert!(request(b"GET / HTTP/1.0\r\n\r\n").close);
        assert!(!request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert!(request(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").close);
        let twice = request(b"GET / HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n");
        assert_eq!(twice.range, None);
    }

    #[test]
    fn refuses_heads_past_the_limits() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(refused(long_target.as_bytes()), URI_TOO_LONG);
        let long_field = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        assert_eq!(refused(long_field.as_bytes()), HEADERS_TOO_LARGE);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADER_LINES + 1)
        );
        assert_eq!(refused(many.as_bytes()), HEADERS_TOO_LARGE);
        assert_eq!(refused(b"GET /\r\n\r\n"), BAD_REQUEST);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nX : y\r\n\r\n"), BAD_REQUEST);
        assert_eq!(refused(b"GET / HTTP/1.1\r\n folded\r\n\r\n"), BAD_REQUEST);
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), VERSION_NOT_SUPPORTED);
    }

    #[test]
    fn a_head_cut_short_is_gone() {
        assert!(matches!(
            incoming(b"GET / HTTP/1.1\r\nHost"),
            Incoming::Gone
        ));
        assert!(matches!(incoming(b""), Incoming::Gone));
    }
}
