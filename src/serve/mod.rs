//! `vmcast-gen serve`: a local preview. A small HTTP/1.1 file server on
//! 127.0.0.1 with the content types a real host should send, single-range
//! requests (clients resume large images) and HEAD; the caller rebuilds the
//! site when its inputs change. Only regular files inside the site are
//! served, never through a symlink (see `files`).

mod files;
pub mod watch;

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::media::content_type;
use files::Found;

/// Serves `root` on `listener` until the process ends, one thread per
/// connection.
pub fn run(listener: TcpListener, root: PathBuf) -> io::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = handle(stream, &root);
        });
    }
    Ok(())
}

fn handle(stream: TcpStream, root: &Path) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut range = None;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_owned()),
                "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        if method != "GET" && method != "HEAD" {
            respond(
                &mut out,
                "405 Method Not Allowed",
                "text/plain",
                &[],
                b"GET or HEAD\n",
                true,
            )?;
            return Ok(());
        }
        let head = method == "HEAD";
        match files::open(root, target) {
            Some(found) => serve_file(&mut out, found, range.as_deref(), head)?,
            None => respond(
                &mut out,
                "404 Not Found",
                "text/plain",
                &[],
                b"not found\n",
                head,
            )?,
        }
        if close {
            return Ok(());
        }
    }
}

fn serve_file(
    out: &mut TcpStream,
    found: Found,
    range: Option<&str>,
    head: bool,
) -> io::Result<()> {
    let Found { mut file, name } = found;
    let meta = file.metadata()?;
    let len = meta.len();
    let kind = content_type(&name);
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let secs = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let etag = format!("\"{len:x}-{secs:x}\"");
    let last_modified = chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|d| d.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default();
    let mut headers = vec![
        ("Accept-Ranges", "bytes".to_owned()),
        ("ETag", etag),
        ("Last-Modified", last_modified),
    ];
    let (status, start, end) = match range.map(|r| parse_range(r, len)) {
        None => ("200 OK", 0, len),
        Some(Some((s, e))) => {
            headers.push(("Content-Range", format!("bytes {s}-{}/{len}", e - 1)));
            ("206 Partial Content", s, e)
        }
        Some(None) => {
            headers.push(("Content-Range", format!("bytes */{len}")));
            return respond(
                out,
                "416 Range Not Satisfiable",
                "text/plain",
                &headers,
                b"",
                head,
            );
        }
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n",
        end - start
    )?;
    for (k, v) in &headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(out, "\r\n")?;
    if !head {
        file.seek(SeekFrom::Start(start))?;
        io::copy(&mut (&mut file).take(end - start), out)?;
    }
    out.flush()
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range as a half-open
/// interval; `None` when it cannot be satisfied.
fn parse_range(spec: &str, len: u64) -> Option<(u64, u64)> {
    let spec = spec.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len)
        }
        (s, "") => (s.parse().ok()?, len),
        (s, e) => (
            s.parse().ok()?,
            e.parse::<u64>().ok()?.saturating_add(1).min(len),
        ),
    };
    (start < end && start < len).then_some((start, end))
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    kind: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n",
        body.len()
    )?;
    for (k, v) in headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(out, "\r\n")?;
    if !head {
        out.write_all(body)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 100)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=990-5000", 1000), Some((990, 1000)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
