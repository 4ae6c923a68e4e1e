//! `vmcast-gen serve` on 127.0.0.1: content types, Range requests, and a
//! rebuild when the notes change. The server is killed by PID, and every
//! wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Fixture;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(fixture: &Fixture) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args(["serve", "--port", "0"])
        .current_dir(&fixture.root)
        .env("VMCAST_CACHE_DIR", fixture.tmp.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .nth(1)
        .filter(|u| u.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Server { child, base }
}

/// One request; returns (status line, headers lower-cased, body).
fn get(
    base: &str,
    path: &str,
    extra: &str,
    method: &str,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v)
}

#[test]
fn serve_answers_ranges_with_the_right_types_and_rebuilds() {
    let fixture = Fixture::new("ok-minimal");
    let server = start(&fixture);
    let base = &server.base;

    let (status, headers, body) = get(base, "/feed.xml", "", "GET");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        header(&headers, "content-type"),
        "application/rss+xml; charset=utf-8"
    );
    let feed = String::from_utf8(body).unwrap();
    // The preview's URLs point at the preview.
    assert!(feed.contains(&format!("<link>{base}</link>")), "{feed}");

    let image = "/images/webapp/1.1.0/webapp-1.1.0.raw";
    let full = std::fs::read(fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw")).unwrap();
    let (status, headers, body) = get(base, image, "Range: bytes=0-99\r\n", "GET");
    assert_eq!(status, "HTTP/1.1 206 Partial Content");
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 0-99/{}", full.len())
    );
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert_eq!(body, full[..100]);
    let (status, _, body) = get(base, image, "Range: bytes=300-\r\n", "GET");
    assert_eq!(status, "HTTP/1.1 206 Partial Content");
    assert_eq!(body, full[300..]);
    let (status, headers, _) = get(base, image, "Range: bytes=5000-\r\n", "GET");
    assert_eq!(status, "HTTP/1.1 416 Range Not Satisfiable");
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes */{}", full.len())
    );
    let (status, headers, body) = get(base, image, "", "HEAD");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "content-length"), full.len().to_string());
    assert!(body.is_empty());
    let (_, headers, _) = get(base, "/SHA256SUMS", "", "HEAD");
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    let (status, _, _) = get(base, "/../../etc/passwd", "", "GET");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // Edit the notes: the preview rebuilds.
    let notes = fixture.path("releases/webapp/1.1.0/release.toml");
    let text = std::fs::read_to_string(&notes).unwrap();
    std::fs::write(
        &notes,
        text.replace("notes = \"\"\"", "notes = \"\"\"\nFreshly edited.\n"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = get(base, "/feed.xml", "", "GET");
        if String::from_utf8_lossy(&body).contains("Freshly edited.") {
            break;
        }
        assert!(Instant::now() < deadline, "no rebuild within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}
