//! `vmcast-gen serve`: a local preview. A small HTTP/1.1 file server on
//! 127.0.0.1 with the content types a real host should send, single-range
//! requests as RFC 9110 has them (clients resume large images; see
//! `range`) and HEAD; the caller rebuilds the site when its inputs change.
//!
//! It is meant to be left running: only regular files inside the site are
//! served, never through a symlink (see `files`); request heads are read
//! within limits of size and time (see `http`); and at most
//! `MAX_CONNECTIONS` (64) connections are served at once.

mod files;
mod http;
mod range;
pub mod watch;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::media::{cache_control, content_type};
use files::Found;
use http::{Incoming, Request};
use range::{Selection, Validators};

/// The most connections served at once; any more are answered 503.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a whole request head, counted
/// from when the server starts waiting for it: an idle connection and one
/// that trickles its head in are both closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after the first response that ends after this
/// long, however busy it is; a response is never cut short by it.
const CONNECTION_BUDGET: Duration = Duration::from_secs(60);
/// How long one write may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After refusing a request head, how long and how much of what the client
/// still sends is read and dropped, so that closing does not reset the
/// connection before the client has read the refusal.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// Serves `root` on `listener`, one thread per connection and at most
/// `MAX_CONNECTIONS` of them. Returns only when the listener cannot accept
/// any more connections, with why.
pub fn run(listener: TcpListener, root: PathBuf) -> io::Error {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => match Errno::from_io_error(&e) {
                // The listener itself is gone or broken.
                Some(Errno::BADF | Errno::INVAL | Errno::NOTSOCK | Errno::FAULT) => return e,
                // Out of descriptors or memory: connections end and free
                // them, so wait a little rather than spin.
                Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                // One connection failed (aborted, reset, a network error).
                _ => continue,
            },
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            turn_away(stream);
            continue;
        }
        let slot = Slot::take(&active);
        let root = root.clone();
        // A thread that cannot start drops the closure, and with it the
        // connection and its slot.
        let _ = std::thread::Builder::new()
            .name("serve-connection".to_owned())
            .spawn(move || {
                let _slot = slot;
                let _ = serve_connection(stream, &root);
            });
    }
}

/// One of the [`MAX_CONNECTIONS`], given back when dropped. Only the
/// accepting thread takes slots, so its count never overshoots.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Slot(Arc::clone(active))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers 503 on the accepting thread without ever blocking it: the
/// socket is non-blocking, and a fresh socket takes a short response whole.
fn turn_away(stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut out = &stream;
    let _ = http::write_text(
        &mut out,
        "503 Service Unavailable",
        &[("Retry-After", "1".to_owned())],
        "too many connections\n",
        false,
        true,
    );
    // What the client has sent already is read, so that closing sends FIN
    // after the response rather than a reset that may discard it.
    let _ = out.read(&mut [0; 4096]);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Requests on one connection, each head within [`IDLE_TIMEOUT`], until
/// the client closes, asks to close, or the connection outlives
/// [`CONNECTION_BUDGET`].
fn serve_connection(stream: TcpStream, root: &Path) -> io::Result<()> {
    let opened = Instant::now();
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut reader = http::Reader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let deadline = (Instant::now() + IDLE_TIMEOUT).min(opened + CONNECTION_BUDGET);
        let request = match reader.next_request(deadline)? {
            Incoming::Request(request) => request,
            Incoming::Gone => return Ok(()),
            Incoming::Refused(status) => {
                http::write_text(&mut out, status, &[], &format!("{status}\n"), false, true)?;
                linger(&out);
                return Ok(());
            }
        };
        // Another method may come with a body, which is not read.
        let close = request.close
            || !matches!(request.method.as_str(), "GET" | "HEAD")
            || opened.elapsed() >= CONNECTION_BUDGET;
        answer(&mut out, root, &request, close)?;
        if close {
            return Ok(());
        }
    }
}

/// Stops sending, then reads and drops what the client still sends, for
/// at most [`LINGER`] and [`LINGER_BYTES`].
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let (mut input, mut buf, mut total) = (stream, [0; 8192], 0);
    while total < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

fn answer(out: &mut TcpStream, root: &Path, request: &Request, close: bool) -> io::Result<()> {
    let head = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return http::write_text(
                out,
                "405 Method Not Allowed",
                &[("Allow", "GET, HEAD".to_owned())],
                "GET or HEAD\n",
                false,
                close,
            );
        }
    };
    match files::open(root, &request.target) {
        Some(found) => serve_file(out, found, request, head, close),
        None => http::write_text(out, "404 Not Found", &[], "not found\n", head, close),
    }
}

fn serve_file(
    out: &mut TcpStream,
    found: Found,
    request: &Request,
    head: bool,
    close: bool,
) -> io::Result<()> {
    let Found { mut file, path } = found;
    let meta = file.metadata()?;
    let len = meta.len();
    let validators = Validators::of(&meta);
    let mut fields = vec![
        ("Content-Type", content_type(&path).to_owned()),
        ("Accept-Ranges", "bytes".to_owned()),
        ("ETag", validators.etag.clone()),
        ("Last-Modified", validators.last_modified()),
        ("Cache-Control", cache_control(&path).to_owned()),
    ];
    // A client that has this version is told so, and sent nothing more:
    // a polling host that is current costs no body.
    let conditional = (
        request.if_none_match.as_deref(),
        request.if_modified_since.as_deref(),
    );
    if validators.not_modified(conditional.0, conditional.1) {
        http::write_head(out, "304 Not Modified", None, &fields[2..], close)?;
        return out.flush();
    }
    // Range is defined for GET only (RFC 9110 14.2).
    let selection = if head {
        Selection::Whole
    } else {
        range::select(
            request.range.as_deref(),
            request.if_range.as_deref(),
            &validators,
            len,
        )
    };
    let (status, start, end) = match selection {
        Selection::Whole => ("200 OK", 0, len),
        Selection::Part { start, end } => {
            fields.push(("Content-Range", format!("bytes {start}-{}/{len}", end - 1)));
            ("206 Partial Content", start, end)
        }
        Selection::Unsatisfiable => {
            return http::write_text(
                out,
                "416 Range Not Satisfiable",
                &[("Content-Range", format!("bytes */{len}"))],
                "",
                head,
                close,
            );
        }
    };
    http::write_head(out, status, Some(end - start), &fields, close)?;
    if !head {
        file.seek(SeekFrom::Start(start))?;
        let sent = io::copy(&mut file.take(end - start), out)?;
        // A file that shrank mid-response leaves the client waiting for
        // bytes that will not come: end the connection instead.
        if sent != end - start {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    out.flush()
}
