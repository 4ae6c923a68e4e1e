//! `vmcast-gen pull`, the subscriber, against real servers on 127.0.0.1: a
//! small file server of the test's own (it logs every request, answers
//! Range requests, and can cut a download off midway), Python's
//! `http.server`, and `vmcast-gen serve`. Every server stops by itself.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_success, stderr, stdout};

tests! {
    pull_updates_once_resumes_cut_downloads_and_refuses_tampering_and_rollback;
    pull_against_python_http_server_downloads_once needs PYTHON3;
    pull_against_serve;
    pull_falls_back_to_a_mirror_when_the_primary_is_wrong;
    require_provenance_refuses_an_image_without_one;
    a_symlink_planted_as_the_partial_file_overwrites_nothing;
    a_hard_link_planted_as_the_partial_file_is_not_written_through;
    a_fifo_or_a_link_to_dev_zero_as_the_partial_file_does_not_hang_pull;
    fifos_as_the_state_file_and_the_record_are_discarded;
    a_symlink_planted_as_the_partial_directory_writes_nothing_outside;
    keep_does_not_delete_a_file_the_user_replaced;
    a_record_entry_naming_a_path_outside_dest_is_refused;
    the_rate_window_follows_a_timeout_shorter_than_30_s;
    exit_statuses_tell_a_refusal_a_retry_and_a_failed_exec_apart;
    the_key_may_be_pinned_as_base64_and_the_site_pinned_as_for_verify;
    the_systemd_example_verifies needs SYSTEMD_ANALYZE;
    the_systemd_example_says_how_its_binary_gets_there;
    a_current_host_polls_with_two_requests_and_no_body;
    a_304_does_not_make_an_expired_build_fresh;
    an_unchanged_feed_stays_current_and_an_older_one_is_refused;
    a_signed_feed_cannot_name_a_file_outside_dest;
    a_newest_release_whose_version_does_not_parse_is_refused_not_skipped;
}

/// A static file server for one test (the pkcs11 tests' too): GET with
/// byte ranges (several in one request answered as `multipart/byteranges`,
/// as nginx does) and entity tags (`If-None-Match` gets a 304), a log of
/// request lines, of what each response sent and of the body bytes sent
/// for images, and knobs for what image responses do.
pub(crate) struct Files {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    /// Each response's status and body length, in order.
    sent: Arc<Mutex<Vec<(u16, usize)>>>,
    /// Body bytes sent for paths under /images/.
    image_sent: Arc<AtomicU64>,
    pub(crate) knobs: Arc<Knobs>,
}

/// What the server does with image responses.
#[derive(Default)]
pub(crate) struct Knobs {
    /// The next image response stops after this many bytes and the
    /// connection closes (0: no cut).
    pub(crate) cut: AtomicU64,
    /// Answer a Range request with the whole file (200), as Python's
    /// http.server does.
    pub(crate) ignore_range: AtomicBool,
    /// Answer only the first of several ranges, as S3 does.
    pub(crate) single_range: AtomicBool,
    /// Requests for byte ranges answered before the server closes every
    /// further one unanswered (0: no end).
    pub(crate) ranges_until: AtomicU64,
    /// Requests for byte ranges seen.
    ranged: AtomicU64,
    /// Send image bodies one byte every 100 ms.
    pub(crate) trickle: AtomicBool,
}

impl Files {
    pub(crate) fn start(root: PathBuf) -> Files {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let image_sent = Arc::new(AtomicU64::new(0));
        let knobs = Arc::new(Knobs::default());
        let (l, s, b, k) = (
            Arc::clone(&log),
            Arc::clone(&sent),
            Arc::clone(&image_sent),
            Arc::clone(&knobs),
        );
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (root, l, s, b, k) = (
                            root.clone(),
                            Arc::clone(&l),
                            Arc::clone(&s),
                            Arc::clone(&b),
                            Arc::clone(&k),
                        );
                        std::thread::spawn(move || {
                            answer(stream, &root, (&l, &s, &b), &k, deadline)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Files {
            port,
            log,
            sent,
            image_sent,
            knobs,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Each response's status and body length, in order.
    fn sent(&self) -> Vec<(u16, usize)> {
        self.sent.lock().unwrap().clone()
    }

    /// Body bytes sent for images and their control files so far.
    pub(crate) fn image_bytes(&self) -> u64 {
        self.image_sent.load(Ordering::SeqCst)
    }
}

/// A `Range: bytes=` value as `[start, end)` ranges of a file of `len`
/// bytes; `None` for anything but plain byte ranges within it.
fn ranges(spec: &str, len: u64) -> Option<Vec<(u64, u64)>> {
    spec.split(',')
        .map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            let start: u64 = a.parse().ok()?;
            let end = match b {
                "" => len,
                b => b.parse::<u64>().ok()? + 1,
            };
            (start < end && end <= len).then_some((start, end))
        })
        .collect()
}

/// Where a server notes what it was asked and what it sent: request
/// lines, each response's status and body length, and image body bytes.
type Log<'a> = (
    &'a Mutex<Vec<String>>,
    &'a Mutex<Vec<(u16, usize)>>,
    &'a AtomicU64,
);

fn answer(
    mut stream: TcpStream,
    root: &Path,
    (log, sent, image_sent): Log,
    knobs: &Knobs,
    deadline: Instant,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut spec = None;
    let mut if_none_match = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            spec = Some(v.trim().to_owned());
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("if-none-match:") {
            if_none_match = Some(v.trim().to_owned());
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    log.lock().unwrap().push(match &spec {
        Some(r) if r.ends_with('-') && !r.contains(',') => {
            format!("GET {target} from {}", r.trim_end_matches('-'))
        }
        Some(r) => format!("GET {target} ranges {r}"),
        None => format!("GET {target}"),
    });
    let Ok(data) = fs::read(root.join(target.trim_start_matches('/'))) else {
        sent.lock().unwrap().push((404, 0));
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    // A strong entity tag from the bytes themselves.
    let etag = format!("\"{}\"", vmcast_gen::model::Sha256::of(&data));
    if if_none_match.as_deref() == Some(etag.as_str()) {
        sent.lock().unwrap().push((304, 0));
        let _ = stream.write_all(
            format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        return;
    }
    let image = target.contains("/images/");
    let len = data.len() as u64;
    let mut asked = spec.and_then(|s| ranges(&s, len));
    if image && knobs.ignore_range.load(Ordering::SeqCst) {
        asked = None;
    }
    if knobs.single_range.load(Ordering::SeqCst) {
        asked = asked.map(|mut r| {
            r.truncate(1);
            r
        });
    }
    const BOUNDARY: &str = "00000000000000000001";
    let (head, body): (String, Vec<u8>) = match asked.as_deref() {
        None => (
            format!(
                "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            ),
            data,
        ),
        Some([(a, b)]) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b - 1,
                b - a
            ),
            data[*a as usize..*b as usize].to_vec(),
        ),
        Some(many) => {
            let mut body = Vec::new();
            for (a, b) in many {
                body.extend_from_slice(
                    format!(
                        "\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {a}-{}/{len}\r\n\r\n",
                        b - 1
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(&data[*a as usize..*b as usize]);
            }
            body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Type: multipart/byteranges; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                ),
                body,
            )
        }
    };
    let status = if asked.is_some() { 206 } else { 200 };
    sent.lock().unwrap().push((status, body.len()));
    let _ = stream.write_all(head.as_bytes());
    let until = knobs.ranges_until.load(Ordering::SeqCst);
    if asked.is_some() && until > 0 && knobs.ranged.fetch_add(1, Ordering::SeqCst) >= until {
        return;
    }
    let mut body = &body[..];
    if image {
        let limit = knobs.cut.swap(0, Ordering::SeqCst);
        if limit > 0 {
            body = &body[..(limit as usize).min(body.len())];
        }
        if knobs.trickle.load(Ordering::SeqCst) {
            for byte in body {
                if Instant::now() > deadline || stream.write_all(&[*byte]).is_err() {
                    return;
                }
                image_sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
            return;
        }
    }
    if stream.write_all(body).is_ok() && image {
        image_sent.fetch_add(body.len() as u64, Ordering::SeqCst);
    }
}

/// A site built for `base` from ok-minimal, with bigger images so that a
/// cut-off download is a real one.
fn site_for(base: &str, epoch: &str) -> Fixture {
    let fixture = Fixture::new("ok-minimal");
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.starts_with("base_url") {
            true => format!("base_url = \"{base}\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
    fs::write(
        fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw"),
        vec![0x5au8; 300_000],
    )
    .unwrap();
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", epoch)]));
    fixture
}

pub(crate) fn pull(fixture: &Fixture, base: &str, dest: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "pull",
        base,
        "--pubkey",
        "../known-answer/kat.pub",
        "--appliance",
        "webapp",
        "--dest",
        dest.to_str().unwrap(),
        "--arch",
        "x86_64",
    ];
    args.extend_from_slice(extra);
    fixture.run(&args, &[])
}

fn add_release(fixture: &Fixture, version: &str, epoch: &str) {
    // Each version its own bytes (1.2.0's are 0x33), none of another's:
    // no delta download here.
    let minor = version.split('.').nth(1).unwrap().parse::<u8>().unwrap();
    fixture.add_webapp_release(version, &vec![0x31 + minor; 200_000]);
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", epoch)]));
}

fn pull_updates_once_resumes_cut_downloads_and_refuses_tampering_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let server = Files::start(served.clone());
    let base = server.url();
    let fixture = site_for(&base, "1790000000");
    crate::common::copy_tree(&fixture.path("public"), &served);
    let dest = tmp.path().join("dest");
    let marker = tmp.path().join("exec.log");
    let exec = format!(
        "echo \"$VMCAST_VERSION $VMCAST_SHA256 $VMCAST_IMAGE\" >> {}",
        marker.display()
    );

    // A first run, cut off midway: the next one resumes with a Range.
    server.knobs.cut.store(100_000, Ordering::SeqCst);
    let out = pull(&fixture, &base, &dest, &["--exec", &exec]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the download broke off after 100000 of 300000 bytes")
            || stderr(&out).contains("the download ended after 100000 of 300000 bytes"),
        "{}",
        stderr(&out)
    );
    assert!(!dest.join("webapp-1.1.0.raw").exists());
    assert!(!marker.exists(), "--exec ran after a failure");
    let out = pull(&fixture, &base, &dest, &["--exec", &exec]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("resumed at byte 100000"),
        "{}",
        stdout(&out)
    );
    assert!(
        server
            .requests()
            .contains(&"GET /images/webapp/1.1.0/webapp-1.1.0.raw from 100000".to_owned()),
        "{:?}",
        server.requests()
    );
    assert_eq!(
        fs::read(dest.join("webapp-1.1.0.raw")).unwrap(),
        vec![0x5au8; 300_000]
    );
    assert_eq!(fs::read_to_string(&marker).unwrap().lines().count(), 1);

    // Already current: nothing is downloaded, exit 3, no --exec.
    let before = server.requests().len();
    let out = pull(&fixture, &base, &dest, &["--exec", &exec]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("current: webapp 1.1.0 (raw)"));
    let images: Vec<String> = server.requests()[before..]
        .iter()
        .filter(|r| r.contains("/images/"))
        .cloned()
        .collect();
    assert_eq!(images, Vec::<String>::new());
    assert_eq!(fs::read_to_string(&marker).unwrap().lines().count(), 1);

    // A new release: fetched, and --exec runs once with its facts.
    add_release(&fixture, "1.2.0", "1790086400");
    crate::common::copy_tree(&fixture.path("public"), &served);
    let out = pull(&fixture, &base, &dest, &["--exec", &exec, "--keep", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = fs::read_to_string(&marker).unwrap();
    assert_eq!(log.lines().count(), 2);
    let digest = vmcast_gen::model::Sha256::of(&vec![0x33u8; 200_000]).to_hex();
    assert!(
        log.lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("1.2.0 {digest} ")),
        "{log}"
    );
    assert!(dest.join("webapp-1.2.0.raw").is_file());
    assert!(
        !dest.join("webapp-1.1.0.raw").exists(),
        "--keep 1 kept the old image"
    );

    // A tampered image on the server: refused, nothing changes in --dest.
    add_release(&fixture, "1.3.0", "1790172800");
    crate::common::copy_tree(&fixture.path("public"), &served);
    let image = served.join("images/webapp/1.3.0/webapp-1.3.0.raw");
    let mut bytes = fs::read(&image).unwrap();
    bytes[1000] ^= 1;
    fs::write(&image, bytes).unwrap();
    let listing = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(&dest);
    let out = pull(&fixture, &base, &dest, &["--exec", &exec]);
    assert_eq!(out.status.code(), Some(10));
    assert!(
        stderr(&out).contains("SHA-256 mismatch"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("/images/webapp/1.3.0/webapp-1.3.0.raw"));
    assert_eq!(listing(&dest), before);
    assert_eq!(fs::read_to_string(&marker).unwrap().lines().count(), 2);

    // A rolled-back feed (the 1.2.0 build, validly signed) is refused.
    let previous_build = tmp.path().join("rollback");
    fs::create_dir_all(&previous_build).unwrap();
    assert_success(&fixture.run(
        &["build", "--out", previous_build.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1790000001")],
    ));
    for name in [
        "feed.xml",
        "feed.xml.minisig",
        "feeds/webapp.xml",
        "feeds/webapp.xml.minisig",
        "SHA256SUMS",
        "SHA256SUMS.minisig",
    ] {
        fs::copy(previous_build.join(name), served.join(name)).unwrap();
    }
    let out = pull(&fixture, &base, &dest, &[]);
    assert_eq!(out.status.code(), Some(10));
    assert!(stderr(&out).contains("rollback"), "{}", stderr(&out));
}

/// Against Python's http.server, which knows no Range: the first run
/// downloads and verifies, the second downloads nothing (its access log).
fn pull_against_python_http_server_downloads_once() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}/");
    let fixture = site_for(&base, "1790000000");
    crate::common::copy_tree(&fixture.path("public"), &served);
    let log = tmp.path().join("http.log");
    let mut child = Command::new("timeout")
        .args(["120", "python3", "-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(&served)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dest = tmp.path().join("dest");
    let first = pull(&fixture, &base, &dest, &[]);
    let second = pull(&fixture, &base, &dest, &[]);
    crate::common::stop_under_timeout(&mut child);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));
    let mut text = String::new();
    fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let image_gets = text
        .lines()
        .filter(|l| l.contains("GET /images/webapp/1.1.0/webapp-1.1.0.raw"))
        .count();
    assert_eq!(image_gets, 1, "{text}");
    assert_eq!(
        fs::read(dest.join("webapp-1.1.0.raw")).unwrap(),
        vec![0x5au8; 300_000]
    );
}

/// Against `vmcast-gen serve`: the preview's throwaway key is the one to
/// pin; the first run downloads, the second finds the image in place.
fn pull_against_serve() {
    let fixture = Fixture::new("ok-minimal");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("preview");
    let mut child = Command::new("timeout")
        .args([
            "120",
            env!("CARGO_BIN_EXE_vmcast-gen"),
            "serve",
            "--port",
            "0",
            "--out",
        ])
        .arg(&out_dir)
        .current_dir(&fixture.root)
        .env("VMCAST_CACHE_DIR", tmp.path().join("cache"))
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
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let key = tmp.path().join("preview.pub");
    fs::copy(out_dir.join("vmcast.pub"), &key).unwrap();
    let dest = tmp.path().join("dest");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "pull",
            base.as_str(),
            "--pubkey",
            key.to_str().unwrap(),
            "--appliance",
            "webapp",
            "--dest",
            dest.to_str().unwrap(),
            "--arch",
            "x86_64",
        ];
        args.extend_from_slice(extra);
        fixture.run(&args, &[])
    };
    let first = run(&[]);
    let second = run(&["--json"]);
    // The placed image changed since (size kept, mtime moved): no longer
    // current by its record, so it is hashed, found wrong and fetched again.
    let placed = dest.join("webapp-1.1.0.raw");
    let good = fs::read(&placed).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 1;
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&placed, &bad).unwrap();
    let third = run(&[]);
    crate::common::stop_under_timeout(&mut child);
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert_eq!(fs::read(&placed).unwrap(), good);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));
    let json: serde_json::Value = serde_json::from_str(&stdout(&second)).unwrap();
    assert_eq!(json["outcome"], "current");
    assert_eq!(json["image"]["version"], "1.1.0");
    assert!(dest.join("webapp-1.1.0.raw").is_file());
}

/// A feed whose image has a second source (a mirror): when the primary
/// serves other bytes, the download falls back to the mirror.
fn pull_falls_back_to_a_mirror_when_the_primary_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let server = Files::start(served.clone());
    let base = server.url();
    let fixture = site_for(&base, "1790000000");
    let primary = format!("{base}images/webapp/1.1.0/webapp-1.1.0.raw");
    let mirror = format!("{base}mirror/images/webapp/1.1.0/webapp-1.1.0.raw");
    crate::verify::forge_feed(
        &fixture,
        "public",
        &format!("<podcast:source uri=\"{primary}\"/>"),
        &format!("<podcast:source uri=\"{primary}\"/>\n<podcast:source uri=\"{mirror}\"/>"),
    );
    crate::common::copy_tree(&fixture.path("public"), &served);
    crate::common::copy_tree(
        &fixture.path("public/images"),
        &served.join("mirror/images"),
    );
    let image = served.join("images/webapp/1.1.0/webapp-1.1.0.raw");
    let mut bytes = fs::read(&image).unwrap();
    bytes[7] ^= 0xff;
    fs::write(&image, bytes).unwrap();
    let dest = tmp.path().join("dest");
    let out = pull(&fixture, &base, &dest, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(dest.join("webapp-1.1.0.raw")).unwrap(),
        vec![0x5au8; 300_000]
    );
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /mirror/images/")),
        "{requests:?}"
    );
}

fn require_provenance_refuses_an_image_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let server = Files::start(served.clone());
    let base = server.url();

    // ok-minimal links no provenance: nothing is requested past the feed.
    let without = site_for(&base, "1790000000");
    crate::common::copy_tree(&without.path("public"), &served);
    let dest = tmp.path().join("dest");
    let out = pull(&without, &base, &dest, &["--require-provenance"]);
    assert_eq!(out.status.code(), Some(10));
    assert_eq!(
        stderr(&out),
        "error: webapp 1.1.0: the feed links no provenance for webapp-1.1.0.raw; nothing was \
         downloaded (--require-provenance)\n"
    );
    assert!(!dest.join("webapp-1.1.0.raw").exists());
    assert!(
        !server.requests().iter().any(|r| r.contains(".raw")),
        "{:?}",
        server.requests()
    );

    // supply-chain's release has provenance about its image: pulled.
    let with = Fixture::new("supply-chain");
    let config = fs::read_to_string(with.path("vmcast.toml")).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.starts_with("base_url") {
            true => format!("base_url = \"{base}\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    fs::write(with.path("vmcast.toml"), config).unwrap();
    assert_success(&with.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790086400")]));
    fs::remove_dir_all(&served).unwrap();
    crate::common::copy_tree(&with.path("public"), &served);
    let dest = tmp.path().join("dest-with");
    let out = pull(&with, &base, &dest, &["--require-provenance"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dest.join("webapp-1.0.0.raw").is_file());
    // verify, inside pull, read the provenance and the SBOMs.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains("webapp-1.0.0.raw.intoto.jsonl")),
        "{:?}",
        server.requests()
    );
}

// ---- attacks on the files pull keeps in --dest (docs/security.md) ----

/// ok-minimal built for a [`Files`] server of its own, served, and where
/// its image goes.
struct Served {
    tmp: tempfile::TempDir,
    server: Files,
    base: String,
    fixture: Fixture,
    served: PathBuf,
    dest: PathBuf,
}

fn served() -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let server = Files::start(served.clone());
    let base = server.url();
    let fixture = site_for(&base, "1790000000");
    crate::common::copy_tree(&fixture.path("public"), &served);
    let dest = tmp.path().join("dest");
    Served {
        tmp,
        server,
        base,
        fixture,
        served,
        dest,
    }
}

impl Served {
    /// A file outside --dest that an attack aims at.
    fn victim(&self) -> PathBuf {
        let victim = self.tmp.path().join("victim.txt");
        fs::write(&victim, b"precious\n").unwrap();
        victim
    }

    /// Where the partial download of webapp 1.1.0 is kept, its directory made.
    fn partial(&self) -> PathBuf {
        let dir = self.dest.join(".vmcast-partial");
        fs::create_dir_all(&dir).unwrap();
        let digest = vmcast_gen::model::Sha256::of(&vec![0x5au8; 300_000]).to_hex();
        dir.join(format!("{digest}.part"))
    }

    /// `pull` under `timeout`, so that a hang fails the test instead of
    /// stopping it; and how long it took.
    fn pull(&self, extra: &[&str]) -> (Output, Duration) {
        let started = Instant::now();
        let out = Command::new("timeout")
            .args(["-k", "5", "30"])
            .arg(env!("CARGO_BIN_EXE_vmcast-gen"))
            .args([
                "pull",
                &self.base,
                "--pubkey",
                "../known-answer/kat.pub",
                "--appliance",
                "webapp",
                "--dest",
                self.dest.to_str().unwrap(),
                "--arch",
                "x86_64",
            ])
            .args(extra)
            .current_dir(&self.fixture.root)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(124), "pull hung: {}", stderr(&out));
        (out, started.elapsed())
    }

    #[track_caller]
    fn assert_placed(&self, out: &Output) {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        let image = self.dest.join("webapp-1.1.0.raw");
        assert!(fs::symlink_metadata(&image).unwrap().is_file());
        assert_eq!(fs::read(&image).unwrap(), vec![0x5au8; 300_000]);
    }
}

/// The warning `pull` gives for what it found under one of its names.
fn discarded(path: &Path, what: &str) -> String {
    format!(
        "warning: {}: was {what}, not a file vmcast-gen made; removed the name (nothing it \
         pointed at was touched)\n",
        path.display()
    )
}

fn a_symlink_planted_as_the_partial_file_overwrites_nothing() {
    let s = served();
    // A server that ignores Range made the old code truncate the link's
    // target and write the image into it.
    s.server.knobs.ignore_range.store(true, Ordering::SeqCst);
    let victim = s.victim();
    let partial = s.partial();
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    let (out, _) = s.pull(&[]);
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    s.assert_placed(&out);
    assert_eq!(stderr(&out), discarded(&partial, "a symbolic link"));
}

fn a_hard_link_planted_as_the_partial_file_is_not_written_through() {
    let s = served();
    let victim = s.victim();
    let partial = s.partial();
    fs::hard_link(&victim, &partial).unwrap();
    let (out, _) = s.pull(&[]);
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    s.assert_placed(&out);
    assert_eq!(
        stderr(&out),
        discarded(&partial, "a regular file with 2 names (a hard link)")
    );
    // Nothing was resumed from the victim's bytes.
    assert!(
        !s.server.requests().iter().any(|r| r.contains(" from ")),
        "{:?}",
        s.server.requests()
    );
}

fn a_fifo_or_a_link_to_dev_zero_as_the_partial_file_does_not_hang_pull() {
    let s = served();
    let partial = s.partial();
    assert_success(&Command::new("mkfifo").arg(&partial).output().unwrap());
    let (out, took) = s.pull(&[]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    s.assert_placed(&out);
    assert_eq!(stderr(&out), discarded(&partial, "a FIFO"));

    fs::remove_file(s.dest.join("webapp-1.1.0.raw")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &partial).unwrap();
    let (out, took) = s.pull(&[]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    s.assert_placed(&out);
    assert_eq!(stderr(&out), discarded(&partial, "a symbolic link"));
}

fn fifos_as_the_state_file_and_the_record_are_discarded() {
    let s = served();
    fs::create_dir_all(&s.dest).unwrap();
    let state = s.dest.join(".vmcast-state.json");
    let record = s.dest.join(".vmcast-pull.json");
    for fifo in [&state, &record] {
        assert_success(&Command::new("mkfifo").arg(fifo).output().unwrap());
    }
    let (out, _) = s.pull(&[]);
    s.assert_placed(&out);
    assert_eq!(
        stderr(&out),
        [&state, &record].map(|p| discarded(p, "a FIFO")).concat()
    );
    for kept in [&state, &record] {
        assert!(fs::symlink_metadata(kept).unwrap().is_file());
    }
}

fn a_symlink_planted_as_the_partial_directory_writes_nothing_outside() {
    let s = served();
    let elsewhere = s.tmp.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::create_dir_all(&s.dest).unwrap();
    let dir = s.dest.join(".vmcast-partial");
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    // Cut off: the partial file stays where pull put it.
    s.server.knobs.cut.store(100_000, Ordering::SeqCst);
    let (out, _) = s.pull(&[]);
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&discarded(&dir, "a symbolic link")),
        "{}",
        stderr(&out)
    );
    assert!(fs::symlink_metadata(&dir).unwrap().is_dir());
    assert_eq!(fs::metadata(s.partial()).unwrap().len(), 100_000);
}

fn keep_does_not_delete_a_file_the_user_replaced() {
    let s = served();
    let (out, _) = s.pull(&[]);
    s.assert_placed(&out);
    // The user puts their own file in its place: same size, same mtime.
    let old = s.dest.join("webapp-1.1.0.raw");
    let mtime = fs::metadata(&old).unwrap().modified().unwrap();
    let mine = s.tmp.path().join("mine.raw");
    fs::write(&mine, vec![0x11u8; 300_000]).unwrap();
    fs::File::options()
        .write(true)
        .open(&mine)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&mine, &old).unwrap();

    add_release(&s.fixture, "1.2.0", "1790086400");
    crate::common::copy_tree(&s.fixture.path("public"), &s.served);
    let (out, _) = s.pull(&["--keep", "1"]);
    assert_eq!(fs::read(&old).ok(), Some(vec![0x11u8; 300_000]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "warning: {}: kept, not removed (--keep): it was replaced by another file since \
             pull placed it, so it is no longer pull's\n",
            old.display()
        )
    );
    assert!(!stdout(&out).contains("removed:"), "{}", stdout(&out));
    // It left the record: the next update neither removes nor warns.
    add_release(&s.fixture, "1.3.0", "1790172800");
    crate::common::copy_tree(&s.fixture.path("public"), &s.served);
    let (out, _) = s.pull(&["--keep", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(old.exists());
    assert!(!s.dest.join("webapp-1.2.0.raw").exists());
}

fn a_record_entry_naming_a_path_outside_dest_is_refused() {
    let s = served();
    let (out, _) = s.pull(&[]);
    s.assert_placed(&out);
    let victim = s.victim();
    let record = s.dest.join(".vmcast-pull.json");
    let text = fs::read_to_string(&record).unwrap();
    let edited = text.replace("\"webapp-1.1.0.raw\"", "\"../victim.txt\"");
    assert_ne!(text, edited);
    fs::write(&record, edited).unwrap();

    add_release(&s.fixture, "1.2.0", "1790086400");
    crate::common::copy_tree(&s.fixture.path("public"), &s.served);
    let (out, _) = s.pull(&["--keep", "1"]);
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: {}: not a pull record (file name `../victim.txt` holds a path separator: \
             it must be one plain name at line ",
            record.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).ends_with("; remove it to start over\n"));
}

fn the_rate_window_follows_a_timeout_shorter_than_30_s() {
    let s = served();
    s.server.knobs.trickle.store(true, Ordering::SeqCst);
    let (out, took) = s.pull(&["--timeout", "3"]);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    let err = stderr(&out);
    let url = format!("{}images/webapp/1.1.0/webapp-1.1.0.raw", s.base);
    assert!(err.starts_with(&format!("error: {url}: only ")), "{err}");
    assert!(
        err.contains(" s, below the minimum rate of 10240 bytes/s (--min-rate); the next run"),
        "{err}"
    );
}

fn exit_statuses_tell_a_refusal_a_retry_and_a_failed_exec_apart() {
    // Nobody listens: try again later.
    let s = served();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let out = pull(&s.fixture, &nobody, &s.dest, &[]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not be read in full, so it was not verified"),
        "{}",
        stderr(&out)
    );

    // A feed signed by another key: someone should look.
    let other = s.tmp.path().join("other.pub");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/known-answer/encrypted.pub"),
        &other,
    )
    .unwrap();
    let out = s.fixture.run(
        &[
            "pull",
            &s.base,
            "--pubkey",
            other.to_str().unwrap(),
            "--appliance",
            "webapp",
            "--dest",
            s.dest.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));

    // The image is in place, but --exec failed.
    let (out, _) = s.pull(&["--exec", "exit 7"]);
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: the image is in place, but --exec failed (exit status: 7)\n"
    );
    assert!(s.dest.join("webapp-1.1.0.raw").is_file());
}

/// As verify does, pull takes the pinned key as its base64 line, and
/// --site refuses a build signed for another site, even by the pinned key.
fn the_key_may_be_pinned_as_base64_and_the_site_pinned_as_for_verify() {
    let s = served();
    let key = fs::read_to_string(s.fixture.path("../known-answer/kat.pub")).unwrap();
    let b64 = key.lines().nth(1).unwrap();
    let dest = s.dest.to_str().unwrap();
    let pull = |site: &str| {
        s.fixture.run(
            &[
                "pull",
                &s.base,
                "--pubkey-b64",
                b64,
                "--site",
                site,
                "--appliance",
                "webapp",
                "--dest",
                dest,
                "--arch",
                "x86_64",
            ],
            &[],
        )
    };
    let out = pull("https://downloads.example.org/appliances/");
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("https://downloads.example.org/appliances/"),
        "{}",
        stderr(&out)
    );
    assert!(!s.dest.join("webapp-1.1.0.raw").exists());
    let out = pull(&s.base);
    assert_success(&out);
    assert!(
        stdout(&out).starts_with("updated: webapp 1.1.0"),
        "{}",
        stdout(&out)
    );
}

/// ExecStart runs /usr/local/bin/vmcast-gen, where `cargo install` does
/// not put it: the example's comments say how it gets there, with the path
/// ExecStart names.
fn the_systemd_example_says_how_its_binary_gets_there() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let service = fs::read_to_string(examples.join("vmcast-pull.service")).unwrap();
    let binary = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let comments: Vec<&str> = service.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        comments
            .iter()
            .any(|l| l.contains("cargo install --locked --path .")),
        "{comments:#?}"
    );
    assert!(
        comments
            .iter()
            .any(|l| l.contains("install -m 0755 ~/.cargo/bin/vmcast-gen") && l.ends_with(binary)),
        "no comment puts the binary at {binary}: {comments:#?}"
    );
}

/// The systemd example as shipped, checked by systemd itself: every setting
/// known and valid for its unit type. (`systemd-analyze verify` also wants
/// ExecStart's binary to exist: the copy names the one just built.) The
/// sandbox must leave pull unprivileged with --dest writable, and let the
/// documented --exec reach libvirt's socket.
fn the_systemd_example_verifies() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let service = fs::read_to_string(examples.join("vmcast-pull.service")).unwrap();
    let setting = |key: &str| {
        service
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the example"))
    };
    assert_eq!(setting("DynamicUser"), "yes");
    assert_eq!(setting("StateDirectory"), "vmcast/webapp");
    assert!(service.contains("--dest ${STATE_DIRECTORY}"));
    assert!(
        setting("RestrictAddressFamilies")
            .split(' ')
            .any(|f| f == "AF_UNIX")
    );
    assert_eq!(setting("SuccessExitStatus"), "3");
    assert_eq!(setting("RestartPreventExitStatus"), "1 2 10 12");

    let tmp = tempfile::tempdir().unwrap();
    let units = [
        (
            "vmcast-pull.service",
            service.replace(
                "/usr/local/bin/vmcast-gen",
                env!("CARGO_BIN_EXE_vmcast-gen"),
            ),
        ),
        (
            "vmcast-pull.timer",
            fs::read_to_string(examples.join("vmcast-pull.timer")).unwrap(),
        ),
    ];
    for (name, text) in &units {
        fs::write(tmp.path().join(name), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|(name, _)| tmp.path().join(name)))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    // An unknown key or a bad value is only a warning: any line about
    // these units fails the test too.
    let said: Vec<String> = stderr(&out)
        .lines()
        .chain(stdout(&out).lines())
        .filter(|l| l.contains("vmcast-pull"))
        .map(str::to_owned)
        .collect();
    assert!(
        out.status.success() && said.is_empty(),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Requests and bodies from index `from` of a server's logs on.
fn since(server: &Files, from: usize) -> (Vec<String>, Vec<(u16, usize)>) {
    (
        server.requests()[from..].to_vec(),
        server.sent()[from..].to_vec(),
    )
}

/// A poll costs what its choice needs: the appliance's signed feed, then
/// the image (and, with an older image at hand, its control file, for a
/// delta download); not the site's feed, the manifest or the catalogs. A host
/// that is current sends its two requests with the entity tags it kept
/// and is answered 304 twice, with no body at all.
fn a_current_host_polls_with_two_requests_and_no_body() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let server = Files::start(served.clone());
    let base = server.url();
    let fixture = site_for(&base, "1790000000");
    crate::common::copy_tree(&fixture.path("public"), &served);
    let dest = tmp.path().join("dest");
    let first = pull(&fixture, &base, &dest, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let (requests, _) = since(&server, 0);
    assert_eq!(
        requests,
        [
            "GET /feeds/webapp.xml.minisig",
            "GET /feeds/webapp.xml",
            "GET /images/webapp/1.1.0/webapp-1.1.0.raw",
        ]
    );
    for _ in 0..2 {
        let mark = server.requests().len();
        let again = pull(&fixture, &base, &dest, &[]);
        assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
        let (requests, sent) = since(&server, mark);
        assert_eq!(
            requests,
            ["GET /feeds/webapp.xml.minisig", "GET /feeds/webapp.xml"]
        );
        assert_eq!(sent, [(304, 0), (304, 0)]);
    }
    // A new build: the poll gets the new feed, the new image's control
    // file (the placed image is a seed; asked for as two ranges, which
    // shows how the server answers many) and, since the seed holds none
    // of its blocks, the whole image.
    add_release(&fixture, "1.2.0", "1790000100");
    crate::common::copy_tree(&fixture.path("public"), &served);
    let mark = server.requests().len();
    let update = pull(&fixture, &base, &dest, &[]);
    assert_eq!(update.status.code(), Some(0), "{}", stderr(&update));
    let (requests, sent) = since(&server, mark);
    let control = fs::metadata(fixture.path("public/images/webapp/1.2.0/webapp-1.2.0.raw.zsync"))
        .unwrap()
        .len();
    assert_eq!(
        requests,
        [
            "GET /feeds/webapp.xml.minisig".to_owned(),
            "GET /feeds/webapp.xml".to_owned(),
            format!(
                "GET /images/webapp/1.2.0/webapp-1.2.0.raw.zsync ranges 0-0,1-{}",
                control - 1
            ),
            "GET /images/webapp/1.2.0/webapp-1.2.0.raw".to_owned(),
        ]
    );
    let statuses: Vec<u16> = sent.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [200, 200, 206, 200], "{sent:?}");
}

/// A 304 says the feed did not change, not that it is still valid: the
/// copy kept is verified again, and once its build expires, a poll is
/// refused even though the server has nothing newer.
fn a_304_does_not_make_an_expired_build_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let server = Files::start(served.clone());
    let base = server.url();
    let fixture = Fixture::new("ok-minimal");
    let config = fs::read_to_string(fixture.path("vmcast.toml"))
        .unwrap()
        .replace("https://downloads.example.com/site/", &base);
    fs::write(
        fixture.path("vmcast.toml"),
        format!("expires_after = \"3s\"\n{config}"),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp().to_string();
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", &now)]));
    crate::common::copy_tree(&fixture.path("public"), &served);
    let dest = tmp.path().join("dest");
    let first = pull(&fixture, &base, &dest, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    std::thread::sleep(Duration::from_secs(4));
    let mark = server.requests().len();
    let late = pull(&fixture, &base, &dest, &[]);
    assert_eq!(late.status.code(), Some(10), "{}", stderr(&late));
    assert!(stderr(&late).contains("expired at"), "{}", stderr(&late));
    let (_, sent) = since(&server, mark);
    assert_eq!(sent, [(304, 0), (304, 0)]);
}

/// A build that changes only webapp leaves dbnode's feed as it was, with
/// the sequence of the build before: a host of dbnode is answered 304
/// twice and stays current. A host whose state saw a newer build (webapp's
/// feed) reads SHA256SUMS once for dbnode's older feed, which lists it, and
/// takes it. dbnode's older feed replayed after a newer one is refused: by
/// the host that saw the newer one, and by a host that saw only a newer
/// build, whose SHA256SUMS lists another dbnode feed.
fn an_unchanged_feed_stays_current_and_an_older_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let server = Files::start(served.clone());
    let base = server.url();
    let fixture = Fixture::new("ok-multi-appliance");
    let config = fs::read_to_string(fixture.path("vmcast.toml"))
        .unwrap()
        .replace("https://downloads.example.com/site/", &base);
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
    // A name this test's server needs no percent-decoding for.
    let image = fixture.path("releases/dbnode/2.0.0/dbnode-2.0.0+café.raw");
    fs::rename(&image, image.with_file_name("dbnode-2.0.0.raw")).unwrap();
    let build = |epoch: &str| {
        assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", epoch)]));
        crate::common::copy_tree(&fixture.path("public"), &served);
    };
    let pull_of = |appliance: &str, dest: &Path| {
        let dest = dest.to_str().unwrap();
        let args = [
            "pull",
            &base,
            "--pubkey",
            "../known-answer/kat.pub",
            "--appliance",
        ];
        let args = [&args[..], &[appliance, "--dest", dest, "--arch", "x86_64"]].concat();
        fixture.run(&args, &[])
    };
    build("1790000000");
    let old: Vec<Vec<u8>> = ["feeds/dbnode.xml", "feeds/dbnode.xml.minisig"]
        .iter()
        .map(|name| fs::read(served.join(name)).unwrap())
        .collect();
    let dest = tmp.path().join("dest");
    let first = pull_of("dbnode", &dest);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));

    fixture.add_webapp_release("1.2.0", b"webapp 1.2.0\n");
    build("1790000100");
    let mark = server.requests().len();
    let again = pull_of("dbnode", &dest);
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    let (requests, sent) = since(&server, mark);
    assert_eq!(
        requests,
        ["GET /feeds/dbnode.xml.minisig", "GET /feeds/dbnode.xml"]
    );
    assert_eq!(sent, [(304, 0), (304, 0)]);

    // Another host, which read webapp's feed of the newer build first.
    let switched = tmp.path().join("switched");
    let webapp = pull_of("webapp", &switched);
    assert_eq!(webapp.status.code(), Some(0), "{}", stderr(&webapp));
    let mark = server.requests().len();
    let dbnode = pull_of("dbnode", &switched);
    assert_eq!(dbnode.status.code(), Some(0), "{}", stderr(&dbnode));
    let (requests, _) = since(&server, mark);
    assert_eq!(
        requests[..4],
        [
            "GET /feeds/dbnode.xml.minisig",
            "GET /feeds/dbnode.xml",
            "GET /SHA256SUMS.minisig",
            "GET /SHA256SUMS",
        ]
    );

    // dbnode changes; then its older feed is served again.
    let release = fixture.path("releases/dbnode/2.1.0");
    fs::create_dir_all(&release).unwrap();
    fs::write(
        release.join("release.toml"),
        "version = \"2.1.0\"\ndate = 2026-03-01\nnotes = \"New.\"\n",
    )
    .unwrap();
    fs::write(release.join("dbnode-2.1.0.raw"), b"dbnode 2.1.0\n").unwrap();
    build("1790000200");
    let newer = pull_of("dbnode", &dest);
    assert_eq!(newer.status.code(), Some(0), "{}", stderr(&newer));
    let fresh = tmp.path().join("fresh");
    let webapp = pull_of("webapp", &fresh);
    assert_eq!(webapp.status.code(), Some(0), "{}", stderr(&webapp));
    for (name, bytes) in ["feeds/dbnode.xml", "feeds/dbnode.xml.minisig"]
        .iter()
        .zip(&old)
    {
        fs::write(served.join(name), bytes).unwrap();
    }
    for (host, refusal) in [
        (
            &dest,
            "rollback: feeds/dbnode.xml of sequence 1790000000 is older than the \
             feeds/dbnode.xml of sequence 1790000200 already seen",
        ),
        (
            &fresh,
            "rollback: feeds/dbnode.xml of sequence 1790000000 is not the one SHA256SUMS of \
             sequence 1790000200 lists, and older than sequence 1790000100 already seen",
        ),
    ] {
        let replayed = pull_of("dbnode", host);
        assert_eq!(replayed.status.code(), Some(10), "{}", stderr(&replayed));
        assert!(stderr(&replayed).contains(refusal), "{}", stderr(&replayed));
    }
}

/// A feed signed with the publisher's key (a stolen key, a compromised
/// build) names the image `../escape.raw`, an absolute path, one of pull's
/// own files, or another name than its path's: the feed is refused as it
/// is read, by pull and by verify, and nothing is written anywhere.
fn a_signed_feed_cannot_name_a_file_outside_dest() {
    for (name, why) in [
        ("../escape.raw", "holds a path separator"),
        ("/tmp/escape.raw", "holds a path separator"),
        (".vmcast-pull.json", "hidden names are the tools' own"),
        ("other.raw", "is not the file name of its path"),
    ] {
        let forged = pull_forged("name=\"webapp-1.1.0.raw\"", &format!("name=\"{name}\""));
        let out = &forged.out;
        assert_eq!(out.status.code(), Some(10), "{name}: {}", stderr(out));
        assert!(stderr(out).contains("vmcast:image name"), "{}", stderr(out));
        assert!(stderr(out).contains(why), "{name}: {}", stderr(out));
        // Only pull's own state beside nothing else: no image, no escape.
        assert!(!forged.tmp.path().join("box/escape.raw").exists());
        assert!(!Path::new("/tmp/escape.raw").exists());
        assert!(forged.placed.is_empty(), "{name}: {:?}", forged.placed);
        let verified = forged.fixture.run(
            &["verify", "public", "--pubkey", "../known-answer/kat.pub"],
            &[],
        );
        assert_eq!(verified.status.code(), Some(1), "{name}");
        assert!(
            stderr(&verified).contains("vmcast:image name"),
            "{}",
            stderr(&verified)
        );
    }
}

/// A signed feed whose newest release has a version that does not parse
/// (it could be a security update) is refused as a whole: pull does not
/// quietly install the older release it can read.
fn a_newest_release_whose_version_does_not_parse_is_refused_not_skipped() {
    let forged = pull_forged(
        "<vmcast:version>1.1.0</vmcast:version>",
        "<vmcast:version>1.1.0 security</vmcast:version>",
    );
    let out = &forged.out;
    assert_eq!(out.status.code(), Some(10), "{}", stderr(out));
    assert!(stderr(out).contains("1.1.0 security"), "{}", stderr(out));
    assert!(forged.placed.is_empty(), "{:?}", forged.placed);
}

/// A pull into `<tmp>/box/dest` from a site whose feeds say `to` where
/// they said `from`, re-signed with the publisher's key.
struct Forged {
    tmp: tempfile::TempDir,
    fixture: Fixture,
    out: Output,
    /// What pull placed in --dest, its own hidden files left out.
    placed: Vec<String>,
}

fn pull_forged(from: &str, to: &str) -> Forged {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let server = Files::start(served.clone());
    let base = server.url();
    let fixture = site_for(&base, "1790000000");
    crate::verify::forge_feed(&fixture, "public", from, to);
    crate::common::copy_tree(&fixture.path("public"), &served);
    let dest = tmp.path().join("box/dest");
    let out = pull(&fixture, &base, &dest, &[]);
    let placed = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    Forged {
        tmp,
        fixture,
        out,
        placed,
    }
}
