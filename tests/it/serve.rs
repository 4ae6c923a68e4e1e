//! `vmcast-gen serve` on 127.0.0.1: content types, Range requests, and a
//! rebuild when the notes change. The server is killed by PID, and every
//! wait is bounded.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::Fixture;

tests! {
    serve_answers_ranges_with_the_right_types_and_rebuilds;
    planted_symlink_is_not_served;
    huge_header_line_is_refused_in_bounded_memory;
    trickling_connections_time_out_and_are_capped;
    ranges_follow_rfc_9110;
    a_client_that_has_the_file_gets_304_and_caches_by_kind;
    server_failure_ends_serve_with_the_error needs SS;
    preview_is_never_clearsigned_with_the_real_openpgp_key;
    preview_is_never_signed_with_the_real_key;
    the_start_line_names_the_throwaway_key_that_verifies_the_preview;
    stopping_by_signal_removes_the_scratch_directory;
}

/// A running `serve`: stopped on drop with SIGTERM (so it removes its
/// scratch directory), then SIGKILL if it has not exited within 5 s.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    /// The directory it serves.
    pub(crate) site: PathBuf,
    /// Its first two lines: where it serves from, and how to verify it.
    start: String,
    /// Kept open: the server prints a line on every rebuild.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|status| status.is_none()) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            if wait_for_exit(&mut self.child, Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// `vmcast-gen serve --port 0` in the fixture, with its scratch directory
/// under the fixture's `tmp/` and no key from the environment.
fn serve_command(fixture: &Fixture) -> Command {
    let tmp = fixture.tmp.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"));
    cmd.args(["serve", "--port", "0"])
        .current_dir(&fixture.root)
        .env("VMCAST_CACHE_DIR", fixture.tmp.path().join("cache"))
        .env("TMPDIR", tmp)
        .env_remove("VMCAST_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

pub(crate) fn start(fixture: &Fixture) -> Server {
    launch(serve_command(fixture))
}

/// Starts the server and reads its first line, `Serving URL (from DIR); ...`.
fn launch(mut cmd: Command) -> Server {
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let mut start = line.clone();
    stdout.read_line(&mut start).unwrap();
    let base = line
        .split_whitespace()
        .nth(1)
        .filter(|u| u.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let site = line
        .split_once("(from ")
        .and_then(|(_, rest)| rest.split_once(");"))
        .map(|(dir, _)| PathBuf::from(dir))
        .unwrap_or_else(|| panic!("no site directory in {line:?}"));
    Server {
        child,
        base,
        site,
        start,
        _stdout: stdout,
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// The exit status, if the process exits within `limit`.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request; returns (status line, headers lower-cased, body).
fn get(
    base: &str,
    path: &str,
    extra: &str,
    method: &str,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let addr = address(base);
    let mut stream = TcpStream::connect(&addr).unwrap();
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

fn address(base: &str) -> String {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// A number from /proc/PID/status, e.g. `Threads` or `VmRSS` (in kB).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v)
}

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

fn planted_symlink_is_not_served() {
    let fixture = Fixture::new("ok-minimal");
    let server = start(&fixture);
    let base = &server.base;
    let outside = fixture.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.txt");
    fs::write(&secret, "not for the web\n").unwrap();
    symlink(&secret, server.site.join("leak.txt")).unwrap();
    symlink(&secret, server.site.join("images/leak.raw")).unwrap();
    symlink(&outside, server.site.join("leakdir")).unwrap();
    fs::remove_file(server.site.join("index.html")).unwrap();
    symlink(&secret, server.site.join("index.html")).unwrap();

    for path in [
        "/leak.txt",
        "/images/leak.raw",
        "/leakdir/secret.txt",
        "/",
        "/index.html",
    ] {
        let (status, _, body) = get(base, path, "", "GET");
        assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("not for the web"),
            "{path}"
        );
    }
    // The site's own files are still served.
    assert_eq!(get(base, "/feed.xml", "", "GET").0, "HTTP/1.1 200 OK");
}

fn huge_header_line_is_refused_in_bounded_memory() {
    let fixture = Fixture::new("ok-minimal");
    let server = start(&fixture);
    let addr = address(&server.base);
    // Four clients at once, each sending a 32 MiB header line.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut stream = TcpStream::connect(&addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut input = stream.try_clone().unwrap();
                input
                    .set_write_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let writer = std::thread::spawn(move || {
                    let chunk = vec![b'a'; 64 * 1024];
                    input
                        .write_all(b"GET /feed.xml HTTP/1.1\r\nHost: x\r\nX-Big: ")
                        .and_then(|()| (0..512).try_for_each(|_| input.write_all(&chunk)))
                        .is_ok()
                });
                let mut response = Vec::new();
                // Until the server closes (or resets) the connection.
                let _ = stream.read_to_end(&mut response);
                let elapsed = started.elapsed();
                (response, elapsed, writer.join().unwrap())
            })
        })
        .collect();
    for client in clients {
        let (response, elapsed, sent_all) = client.join().unwrap();
        assert!(
            response.starts_with(b"HTTP/1.1 431 "),
            "{}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "refused after {elapsed:?}"
        );
        assert!(!sent_all, "the server read a whole 32 MiB header line");
    }
    let rss_kib = proc_status(server.child.id(), "VmRSS");
    assert!(rss_kib < 64 * 1024, "VmRSS {rss_kib} kB");
    assert_eq!(
        get(&server.base, "/feed.xml", "", "GET").0,
        "HTTP/1.1 200 OK"
    );
}

fn trickling_connections_time_out_and_are_capped() {
    let fixture = Fixture::new("ok-minimal");
    let server = start(&fixture);
    let (pid, addr) = (server.child.id(), address(&server.base));
    let started = Instant::now();
    // 100 slowloris clients: a request line, then a header line every
    // 500 ms, never the end of the head.
    let mut tricklers: Vec<(TcpStream, Option<Duration>)> = (0..100)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream
                .write_all(b"GET /feed.xml HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream.set_nonblocking(true).unwrap();
            (stream, None)
        })
        .collect();

    // Beyond the 64 connections served at once, one is answered 503 at once.
    let mut probe = TcpStream::connect(&addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = probe.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The main thread, the accepting thread and one per connection served.
    let threads = proc_status(pid, "Threads");
    assert!(threads <= 2 + 64, "{threads} threads");

    let deadline = started + Duration::from_secs(16);
    while tricklers.iter().any(|(_, gone)| gone.is_none()) {
        assert!(
            Instant::now() < deadline,
            "{} trickling connections still open after 16 s",
            tricklers.iter().filter(|(_, gone)| gone.is_none()).count()
        );
        for (stream, gone) in tricklers.iter_mut().filter(|(_, gone)| gone.is_none()) {
            let closed = match stream.write(b"X-Slow: 1\r\n") {
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => true,
                _ => loop {
                    match stream.read(&mut [0; 1024]) {
                        Ok(0) => break true,
                        Ok(_) => {}
                        Err(e) => break e.kind() != std::io::ErrorKind::WouldBlock,
                    }
                },
            };
            if closed {
                *gone = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The 64 that were served held on until the idle timeout (10 s).
    let held = tricklers
        .iter()
        .filter(|(_, gone)| gone.is_some_and(|t| t >= Duration::from_secs(8)))
        .count();
    assert!(held >= 60, "only {held} connections lasted 8 s");

    assert_eq!(
        get(&server.base, "/feed.xml", "", "GET").0,
        "HTTP/1.1 200 OK"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while proc_status(pid, "Threads") > 2 {
        assert!(
            Instant::now() < deadline,
            "{} threads after the attack",
            proc_status(pid, "Threads")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ranges_follow_rfc_9110() {
    let fixture = Fixture::new("ok-minimal");
    let server = start(&fixture);
    let base = &server.base;
    let image = "/images/webapp/1.1.0/webapp-1.1.0.raw";
    let full = fs::read(fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw")).unwrap();
    let len = full.len();
    let range = |spec: &str| format!("Range: {spec}\r\n");

    // Invalid ranges, another unit and several ranges: the whole image.
    for spec in ["bytes=5-2", "items=0-1", "garbage", "bytes=0-1,4-5"] {
        let (status, headers, body) = get(base, image, &range(spec), "GET");
        assert_eq!(status, "HTTP/1.1 200 OK", "{spec}");
        assert_eq!(header(&headers, "content-range"), "", "{spec}");
        assert!(body == full, "{spec}: not the whole image");
    }
    // A valid range that selects nothing.
    let (status, headers, _) = get(base, image, &range("bytes=999999-"), "GET");
    assert_eq!(status, "HTTP/1.1 416 Range Not Satisfiable");
    assert_eq!(header(&headers, "content-range"), format!("bytes */{len}"));
    // A suffix range: the last 100 bytes.
    let (status, headers, body) = get(base, image, &range("bytes=-100"), "GET");
    assert_eq!(status, "HTTP/1.1 206 Partial Content");
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes {}-{}/{len}", len - 100, len - 1)
    );
    assert_eq!(body, full[len - 100..]);

    // If-Range: a matching validator gets the part, any other the whole.
    let (_, headers, _) = get(base, image, "", "HEAD");
    let (etag, date) = (header(&headers, "etag"), header(&headers, "last-modified"));
    for (validator, part) in [
        (etag, true),
        (date, true),
        ("\"stale\"", false),
        (&format!("W/{etag}"), false),
        ("Thu, 01 Jan 1970 00:00:00 GMT", false),
    ] {
        let extra = format!("{}If-Range: {validator}\r\n", range("bytes=0-9"));
        let (status, _, body) = get(base, image, &extra, "GET");
        if part {
            assert_eq!(status, "HTTP/1.1 206 Partial Content", "{validator}");
            assert_eq!(body, full[..10], "{validator}");
        } else {
            assert_eq!(status, "HTTP/1.1 200 OK", "{validator}");
            assert!(body == full, "{validator}: not the whole image");
        }
    }
    // The ETag of a file that changed since is stale.
    let (_, headers, page) = get(base, "/index.html", "", "GET");
    let old = header(&headers, "etag").to_owned();
    std::thread::sleep(Duration::from_millis(50));
    fs::write(server.site.join("index.html"), &page).unwrap();
    let extra = format!("{}If-Range: {old}\r\n", range("bytes=0-9"));
    let (status, headers, body) = get(base, "/index.html", &extra, "GET");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_ne!(header(&headers, "etag"), old);
    assert_eq!(body, page);
}

/// Conditional requests (RFC 9110 13.1): a polling client that has the
/// current file is answered 304 with no body; a changed file, 200. Files
/// that never change are cacheable forever, the rest briefly.
fn a_client_that_has_the_file_gets_304_and_caches_by_kind() {
    let fixture = Fixture::new("ok-minimal");
    let server = start(&fixture);
    let base = &server.base;
    let (status, headers, body) = get(base, "/feeds/webapp.xml", "", "GET");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "cache-control"), "public, max-age=300");
    let (etag, date) = (
        header(&headers, "etag").to_owned(),
        header(&headers, "last-modified").to_owned(),
    );
    for extra in [
        format!("If-None-Match: {etag}\r\n"),
        format!("If-None-Match: \"other\", W/{etag}\r\n"),
        "If-None-Match: *\r\n".to_owned(),
        format!("If-Modified-Since: {date}\r\n"),
    ] {
        for method in ["GET", "HEAD"] {
            let (status, headers, empty) = get(base, "/feeds/webapp.xml", &extra, method);
            assert_eq!(status, "HTTP/1.1 304 Not Modified", "{extra}");
            assert_eq!(header(&headers, "etag"), etag, "{extra}");
            assert_eq!(header(&headers, "content-length"), "", "{extra}");
            assert!(empty.is_empty(), "{extra}");
        }
    }
    // If-None-Match decides when both are sent; a stale date, the whole file.
    for extra in [
        format!("If-None-Match: \"stale\"\r\nIf-Modified-Since: {date}\r\n"),
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n".to_owned(),
    ] {
        let (status, _, again) = get(base, "/feeds/webapp.xml", &extra, "GET");
        assert_eq!(status, "HTTP/1.1 200 OK", "{extra}");
        assert_eq!(again, body, "{extra}");
    }
    for (path, cache) in [
        (
            "/images/webapp/1.1.0/webapp-1.1.0.raw",
            "public, max-age=31536000, immutable",
        ),
        ("/SHA256SUMS", "public, max-age=300"),
        ("/", "public, max-age=300"),
    ] {
        let (_, headers, _) = get(base, path, "", "HEAD");
        assert_eq!(header(&headers, "cache-control"), cache, "{path}");
    }
}

fn server_failure_ends_serve_with_the_error() {
    let fixture = Fixture::new("ok-minimal");
    let mut cmd = serve_command(&fixture);
    cmd.stderr(Stdio::piped());
    let mut server = launch(cmd);
    let port = address(&server.base).rsplit_once(':').unwrap().1.to_owned();
    // Destroy the listening socket from outside; accept() then fails for
    // good. ss lists the sockets it destroyed.
    let ss = Command::new("ss")
        .args(["-K", "-t", "-l", "-n", &format!("sport = :{port}")])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&ss.stdout).contains(&format!(":{port}")) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ss -K cannot destroy sockets here: {}",
            String::from_utf8_lossy(&ss.stderr)
        );
        eprintln!("note: ss -K needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY; skipping");
        return;
    }
    let status = wait_for_exit(&mut server.child, Duration::from_secs(10))
        .expect("serve still runs 10 s after its server failed");
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("error: the preview server stopped: cannot accept connections: "),
        "{stderr}"
    );
}

/// The key id of a minisign public key or signature file: bytes 2..10 of
/// its base64 line.
fn key_id(file: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = String::from_utf8_lossy(file);
    let line = text.lines().nth(1).unwrap_or_else(|| panic!("{text}"));
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .unwrap()[2..10]
        .to_vec()
}

fn preview_is_never_clearsigned_with_the_real_openpgp_key() {
    // An unencrypted OpenPGP key, and one no password is given for: the
    // preview reads neither.
    for (name, real) in [
        ("ok-openpgp", "AB036385B86647715A6EC66557D18D1018D9B3B7"),
        (
            "openpgp-encrypted-key",
            "116927F8D3858D49E1DEEA3269F73159C2E31023",
        ),
    ] {
        let fixture = Fixture::new(name);
        let server = start(&fixture);
        let (_, _, public) = get(&server.base, "/openpgp.asc", "", "GET");
        let (_, _, signed) = get(&server.base, "/SHA256SUMS.asc", "", "GET");
        let (_, _, sums) = get(&server.base, "/SHA256SUMS", "", "GET");
        let verified = vmcast_gen::openpgp::verify(
            &String::from_utf8(public).unwrap(),
            "SHA256SUMS.asc",
            &String::from_utf8(signed).unwrap(),
        )
        .unwrap();
        assert_ne!(
            verified.fingerprint, real,
            "{name}: signed with the real key"
        );
        assert_eq!(verified.text.as_bytes(), sums);
    }
}

/// `verify` against a preview with the site's own key fails, since a
/// throwaway key signs it: serve says so when it starts, with where the
/// key is and a command that verifies the preview, and verify's error
/// suggests no --state for a key nothing announced.
fn the_start_line_names_the_throwaway_key_that_verifies_the_preview() {
    let fixture = Fixture::new("ok-minimal");
    let server = start(&fixture);
    let base = &server.base;
    let (first, second) = server.start.split_once('\n').unwrap();
    assert_eq!(
        first,
        format!(
            "Serving {base} (from {}); signed with a throwaway key, whose public key is \
             {base}vmcast.pub; Ctrl-C to stop",
            server.site.display()
        )
    );
    let command = second
        .strip_prefix("Verify the preview with: vmcast-gen ")
        .unwrap_or_else(|| panic!("{second:?}"));
    let args: Vec<&str> = command.split(' ').collect();
    assert_eq!(args[..3], ["verify", base.as_str(), "--pubkey-b64"]);
    let out = fixture.run(&args, &[]);
    crate::common::assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\nverified: 2 release(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = fixture.run(
        &["verify", base, "--pubkey", "../known-answer/kat.pub"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "not the pinned key 9846815B1BF4E0B5; nothing you trust announced it (a `vmcast-gen \
             serve` preview is signed with a throwaway key: verify it against the preview's own \
             vmcast.pub)"
        ),
        "{err}"
    );
    assert!(!err.contains("--state"), "{err}");
}

fn preview_is_never_signed_with_the_real_key() {
    // ok-minimal's config names the known-answer key as its secret_key.
    let fixture = Fixture::new("ok-minimal");
    let known = fixture.root.join("../known-answer");
    let real = key_id(&fs::read(known.join("kat.pub")).unwrap());
    let mut previews = Vec::new();
    for key_text in [
        None,
        Some(fs::read_to_string(known.join("kat.key")).unwrap()),
    ] {
        let mut cmd = serve_command(&fixture);
        if let Some(text) = key_text {
            cmd.env("VMCAST_SECRET_KEY", text);
        }
        let server = launch(cmd);
        let (_, _, public) = get(&server.base, "/vmcast.pub", "", "GET");
        let (_, _, signature) = get(&server.base, "/feed.xml.minisig", "", "GET");
        let signer = key_id(&signature);
        assert_ne!(signer, real, "the preview is signed with the real key");
        assert_eq!(
            signer,
            key_id(&public),
            "signed by another key than vmcast.pub"
        );
        previews.push(signer);
    }
    assert_ne!(previews[0], previews[1], "two runs share a throwaway key");

    // A rebuild keeps the run's key.
    let server = start(&fixture);
    let (_, _, before) = get(&server.base, "/feed.xml.minisig", "", "GET");
    let notes = fixture.path("releases/webapp/1.1.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(
        &notes,
        text.replace("notes = \"\"\"", "notes = \"\"\"\nEdited.\n"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (_, _, signature) = get(&server.base, "/feed.xml.minisig", "", "GET");
        if signature != before {
            break signature;
        }
        assert!(Instant::now() < deadline, "no rebuild within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(key_id(&after), key_id(&before), "a rebuild changed the key");
}

fn stopping_by_signal_removes_the_scratch_directory() {
    let fixture = Fixture::new("ok-minimal");
    let tmp = fixture.tmp.path().join("tmp");
    let previews = || -> Vec<PathBuf> {
        fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmcast-preview-")
            })
            .collect()
    };
    for name in ["TERM", "INT"] {
        let mut server = start(&fixture);
        assert_eq!(previews(), [server.site.parent().unwrap()]);
        assert!(
            server
                .site
                .join("images/webapp/1.1.0/webapp-1.1.0.raw")
                .is_file()
        );
        signal(&server.child, name);
        let status = wait_for_exit(&mut server.child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("serve still runs 10 s after SIG{name}"));
        assert!(status.success(), "after SIG{name}: {status}");
        assert_eq!(previews(), Vec::<PathBuf>::new(), "left after SIG{name}");
    }
}
