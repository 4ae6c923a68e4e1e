//! `vmcast-gen publish` against a real S3 implementation: moto's server,
//! started on 127.0.0.1 by the test, bounded by `timeout` and killed by PID.
//! Its server and site helpers serve the action's tests (action.rs) too.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_success, stderr, stdout};

tests! {
    publish_in_safe_order_with_types_then_skip_unchanged needs MOTO;
    interrupted_publish_keeps_the_old_feed_whole_and_resumes needs MOTO;
    prune_deletes_only_what_the_new_site_dropped_after_the_feed needs MOTO;
    prune_deletes_nothing_when_what_to_keep_is_unknown needs MOTO;
    a_release_from_a_stateless_runner_reads_and_uploads_no_old_image needs MOTO;
    publish_to_several_destinations_puts_every_image_everywhere_first needs MOTO;
    credentials_are_named_and_a_dry_run_needs_none;
}

pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
    /// The server's own record of the requests it answered (werkzeug's
    /// access log on stderr).
    log: std::path::PathBuf,
}

impl Moto {
    /// The request lines logged so far, e.g. `GET /b/site/feed.xml HTTP/1.1`.
    pub(crate) fn requests(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        crate::common::stop_under_timeout(&mut self.child);
    }
}

/// moto's S3 server with one bucket.
pub(crate) fn moto(bucket: &str) -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
    let child = Command::new("timeout")
        .args([
            "300",
            "python3",
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Moto { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, _) = http(port, "PUT", &format!("/{bucket}"));
    assert_eq!(status, "HTTP/1.1 200 OK", "create bucket");
    server
}

/// What a [`refusing_proxy`] answers with 403 Forbidden.
#[derive(Clone, Copy)]
enum Refuse {
    /// Every PUT after the first n, as a store whose credentials were
    /// revoked midway would.
    PutsAfter(usize),
    /// Every listing of the bucket.
    Listing,
}

/// A proxy on 127.0.0.1 in front of moto that forwards every request but
/// the ones `refuse` names, which it answers with 403 Forbidden. One
/// request per connection; it stops accepting after two minutes.
fn refusing_proxy(upstream: u16, refuse: Refuse) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let puts = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((client, _)) => {
                    let puts = Arc::clone(&puts);
                    std::thread::spawn(move || forward(client, upstream, &puts, refuse));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    port
}

fn forward(mut client: TcpStream, upstream: u16, puts: &AtomicUsize, refuse: Refuse) {
    client.set_nonblocking(false).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut length = 0;
    let mut forwarded = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if !lower.starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    let refused = match refuse {
        Refuse::PutsAfter(n) => {
            head.starts_with("PUT ") && puts.fetch_add(1, Ordering::SeqCst) >= n
        }
        Refuse::Listing => {
            head.starts_with("GET ")
                && head
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains("list-type="))
        }
    };
    if refused {
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
    up.write_all(forwarded.as_bytes()).unwrap();
    up.write_all(&body).unwrap();
    let _ = std::io::copy(&mut up, &mut client);
}

/// moto's credentials, and no instance-metadata lookup.
pub(crate) const AWS: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A raw request to moto: (status line, lower-cased headers, body).
pub(crate) fn http(port: u16, method: &str, path: &str) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    (status, head.to_ascii_lowercase(), body)
}

/// The ok-minimal site, its base_url on the moto bucket.
pub(crate) fn site(port: u16, bucket: &str) -> Fixture {
    site_of("ok-minimal", port, bucket)
}

/// A fixture site, its base_url on the moto bucket.
pub(crate) fn site_of(name: &str, port: u16, bucket: &str) -> Fixture {
    let fixture = Fixture::new(name);
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.starts_with("base_url") {
            true => format!("base_url = \"http://127.0.0.1:{port}/{bucket}/site/\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
    fixture
}

pub(crate) fn publish(
    fixture: &Fixture,
    port: u16,
    bucket: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let endpoint = format!("http://127.0.0.1:{port}");
    let target = format!("s3://{bucket}/site");
    let mut args = vec![
        "publish",
        &target,
        "--endpoint-url",
        &endpoint,
        "--acl",
        "public-read",
    ];
    args.extend_from_slice(extra);
    let mut all = AWS.to_vec();
    all.extend_from_slice(env);
    fixture.run(&args, &all)
}

pub(crate) fn verify(fixture: &Fixture, port: u16, bucket: &str) -> Output {
    let url = format!("http://127.0.0.1:{port}/{bucket}/site/");
    fixture.run(
        &[
            "verify",
            &url,
            "--pubkey",
            "../known-answer/kat.pub",
            "--images",
        ],
        &[],
    )
}

/// The uploaded paths in the order publish printed them.
pub(crate) fn uploads(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| l.trim_start().starts_with("upload "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

fn publish_in_safe_order_with_types_then_skip_unchanged() {
    let bucket = "order";
    let moto = moto(bucket);
    let fixture = site(moto.port, bucket);
    assert_success(&fixture.build(&[]));
    let out = publish(&fixture, moto.port, bucket, &[], &[]);
    assert_success(&out);
    assert_eq!(
        uploads(&out),
        [
            "images/webapp/1.0.0/webapp-1.0.0.raw",
            "images/webapp/1.0.0/webapp-1.0.0.raw.zsync",
            "images/webapp/1.1.0/webapp-1.1.0.raw",
            "images/webapp/1.1.0/webapp-1.1.0.raw.zsync",
            ".nojekyll",
            "index.html",
            "vmcast.pub",
            "SHA256SUMS.minisig",
            "SHA256SUMS",
            "feeds/webapp.xml.minisig",
            "feeds/webapp.xml",
            "feed.xml.minisig",
            "feed.xml",
        ]
    );
    for (path, kind, cache) in [
        (
            "feed.xml",
            "application/rss+xml; charset=utf-8",
            "public, max-age=300",
        ),
        (
            "SHA256SUMS",
            "text/plain; charset=utf-8",
            "public, max-age=300",
        ),
        (
            "feed.xml.minisig",
            "text/plain; charset=utf-8",
            "public, max-age=300",
        ),
        (
            "index.html",
            "text/html; charset=utf-8",
            "public, max-age=300",
        ),
        (
            "images/webapp/1.0.0/webapp-1.0.0.raw",
            "application/octet-stream",
            "public, max-age=31536000, immutable",
        ),
        (
            "images/webapp/1.0.0/webapp-1.0.0.raw.zsync",
            "application/x-zsync",
            "public, max-age=31536000, immutable",
        ),
    ] {
        let (status, headers, _) = http(moto.port, "HEAD", &format!("/{bucket}/site/{path}"));
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert!(
            headers.contains(&format!("content-type: {kind}")),
            "{path}: {headers}"
        );
        assert!(
            headers.contains(&format!("cache-control: {cache}")),
            "{path}: {headers}"
        );
    }
    assert_success(&verify(&fixture, moto.port, bucket));
    let again = publish(&fixture, moto.port, bucket, &[], &[]);
    assert_success(&again);
    assert!(
        stdout(&again).ends_with("0 uploaded, 13 unchanged, 0 deleted\n"),
        "{}",
        stdout(&again)
    );
}

fn interrupted_publish_keeps_the_old_feed_whole_and_resumes() {
    let bucket = "resume";
    let moto = moto(bucket);
    let fixture = site(moto.port, bucket);
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790000000")]));
    assert_success(&publish(&fixture, moto.port, bucket, &[], &[]));
    let old_feed = fs::read(fixture.path("public/feed.xml")).unwrap();

    // A new release, and a store that refuses every upload after the first
    // two: its image and the image's control file.
    let dir = fixture.path("releases/webapp/1.2.0");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("release.toml"),
        "version = \"1.2.0\"\ndate = 2026-06-01\nnotes = \"New.\"\n",
    )
    .unwrap();
    fs::write(dir.join("webapp-1.2.0.raw"), vec![7u8; 5000]).unwrap();
    assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790086400")]));
    let proxy = refusing_proxy(moto.port, Refuse::PutsAfter(2));
    let out = publish(&fixture, proxy, bucket, &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: cannot upload index.html: "),
        "{}",
        stderr(&out)
    );
    // Clients still see the old feed, and everything it points at is there.
    let (_, _, feed) = http(moto.port, "GET", &format!("/{bucket}/site/feed.xml"));
    assert_eq!(feed, old_feed);
    let verified = verify(&fixture, moto.port, bucket);
    assert_success(&verified);
    assert!(
        stdout(&verified).contains("sequence 1790000000"),
        "{}",
        stdout(&verified)
    );

    // Resume: what made it up is skipped, the rest goes up, feed last.
    let out = publish(&fixture, moto.port, bucket, &[], &[]);
    assert_success(&out);
    let up = uploads(&out);
    assert!(
        !up.contains(&"images/webapp/1.2.0/webapp-1.2.0.raw".to_owned()),
        "{up:?}"
    );
    assert_eq!(up.last().map(String::as_str), Some("feed.xml"));
    let verified = verify(&fixture, moto.port, bucket);
    assert_success(&verified);
    assert!(
        stdout(&verified).contains("sequence 1790086400"),
        "{}",
        stdout(&verified)
    );
}

fn prune_deletes_only_what_the_new_site_dropped_after_the_feed() {
    let bucket = "prune";
    let moto = moto(bucket);
    let fixture = site(moto.port, bucket);
    assert_success(&fixture.build(&[]));
    assert_success(&publish(&fixture, moto.port, bucket, &[], &[]));
    fs::remove_dir_all(fixture.path("releases/webapp/1.0.0")).unwrap();
    assert_success(&fixture.build(&[]));
    let dry = publish(&fixture, moto.port, bucket, &["--prune", "--dry-run"], &[]);
    assert_success(&dry);
    assert!(
        stdout(&dry).contains("would delete  images/webapp/1.0.0/webapp-1.0.0.raw"),
        "{}",
        stdout(&dry)
    );
    let (status, _, _) = http(
        moto.port,
        "HEAD",
        &format!("/{bucket}/site/images/webapp/1.0.0/webapp-1.0.0.raw"),
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "a dry run deleted");
    let out = publish(&fixture, moto.port, bucket, &["--prune"], &[]);
    assert_success(&out);
    let text = stdout(&out);
    let feed_at = text.find("  feed.xml").unwrap();
    let delete_at = text
        .find("delete  images/webapp/1.0.0/webapp-1.0.0.raw")
        .unwrap();
    assert!(feed_at < delete_at, "{text}");
    let (status, _, _) = http(
        moto.port,
        "HEAD",
        &format!("/{bucket}/site/images/webapp/1.0.0/webapp-1.0.0.raw"),
    );
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_success(&verify(&fixture, moto.port, bucket));
}

fn prune_deletes_nothing_when_what_to_keep_is_unknown() {
    let bucket = "prune-unknown";
    let moto = moto(bucket);
    let fixture = site(moto.port, bucket);
    assert_success(&fixture.build(&[]));
    assert_success(&publish(&fixture, moto.port, bucket, &[], &[]));
    let stray = format!("/{bucket}/site/stray.txt");
    // Readable by anyone, like the site's own objects.
    let mut put = TcpStream::connect(("127.0.0.1", moto.port)).unwrap();
    put.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        put,
        "PUT {stray} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-amz-acl: public-read\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    .unwrap();
    let mut answer = String::new();
    put.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (status, _, _) = http(moto.port, "HEAD", &stray);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let image = format!("/{bucket}/site/images/webapp/1.0.0/webapp-1.0.0.raw");

    // A manifest that cannot be read: refused before the first request.
    let manifest = fixture.path("public/SHA256SUMS");
    let good = fs::read(&manifest).unwrap();
    fs::write(&manifest, b"\xff\xfe not a manifest\n").unwrap();
    let out = publish(&fixture, moto.port, bucket, &["--prune"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: public/SHA256SUMS: not valid UTF-8"),
        "{}",
        stderr(&out)
    );
    fs::write(&manifest, good).unwrap();

    // A listing the store refuses: the prune stops before its first delete.
    let proxy = refusing_proxy(moto.port, Refuse::Listing);
    let out = publish(&fixture, proxy, bucket, &["--prune"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: cannot list s3 objects: "),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("delete"), "{}", stdout(&out));
    for path in [&stray, &image] {
        let (status, _, _) = http(moto.port, "HEAD", path);
        assert_eq!(status, "HTTP/1.1 200 OK", "{path} was deleted");
    }

    // With both known, the prune removes the stray object and nothing else.
    let out = publish(&fixture, moto.port, bucket, &["--prune"], &[]);
    assert_success(&out);
    let (status, _, _) = http(moto.port, "HEAD", &stray);
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _, _) = http(moto.port, "HEAD", &image);
    assert_eq!(status, "HTTP/1.1 200 OK");
}

/// The stateless release: a fresh runner holds only the third release's
/// images and all three release.toml files, builds on the published site
/// (once from its HTTP URL, once from s3://) and publishes. The server
/// never receives a GET or a PUT for an image of the first two releases,
/// and the published result verifies, images and all.
fn a_release_from_a_stateless_runner_reads_and_uploads_no_old_image() {
    let bucket = "stateless";
    let moto = moto(bucket);
    let first = site(moto.port, bucket);
    assert_success(&first.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790000000")]));
    assert_success(&publish(&first, moto.port, bucket, &[], &[]));

    // The runner: a fresh checkout, new images only.
    let runner = site(moto.port, bucket);
    for v in ["1.0.0", "1.1.0"] {
        fs::remove_file(runner.path(&format!("releases/webapp/{v}/webapp-{v}.raw"))).unwrap();
    }
    let dir = runner.path("releases/webapp/1.2.0");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("release.toml"),
        "version = \"1.2.0\"\ndate = 2026-06-01\nnotes = \"New.\"\n",
    )
    .unwrap();
    fs::write(dir.join("webapp-1.2.0.raw"), vec![7u8; 5000]).unwrap();

    let before = moto.requests().len();
    let http_site = format!("http://127.0.0.1:{}/{bucket}/site/", moto.port);
    let out = runner.run(
        &["build", "--previous", &http_site],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert!(stdout(&out).contains("2 release(s), 2 image(s), 804 B taken from it unread"));
    assert_success(&publish(&runner, moto.port, bucket, &[], &[]));
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let out = runner.run(
        &[
            "build",
            "--previous",
            &format!("s3://{bucket}/site"),
            "--endpoint-url",
            &endpoint,
        ],
        &[&[("SOURCE_DATE_EPOCH", "1790172800")][..], &AWS[..]].concat(),
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("Built on s3://stateless/site (sequence 1790086400): 2 release(s)"),
        "{}",
        stdout(&out)
    );
    assert_success(&publish(&runner, moto.port, bucket, &[], &[]));
    let during: Vec<String> = moto.requests()[before..].to_vec();
    assert!(!during.is_empty(), "the server's log recorded nothing");
    let old_images: Vec<&String> = during
        .iter()
        .filter(|r| {
            (r.starts_with("GET ") || r.starts_with("PUT "))
                && (r.contains("/images/webapp/1.0.0/") || r.contains("/images/webapp/1.1.0/"))
        })
        .collect();
    assert_eq!(
        old_images,
        Vec::<&String>::new(),
        "old images were read or uploaded"
    );
    assert!(
        during
            .iter()
            .any(|r| r.starts_with("PUT ") && r.contains("/images/webapp/1.2.0/")),
        "{during:?}"
    );

    let verified = verify(&runner, moto.port, bucket);
    assert_success(&verified);
    assert!(
        stdout(&verified).contains("verified: 3 release(s), 3 image(s)"),
        "{}",
        stdout(&verified)
    );
}

/// Two destinations (a primary and a mirror bucket): every image reaches
/// both before any feed goes to either, and each verifies.
fn publish_to_several_destinations_puts_every_image_everywhere_first() {
    let bucket = "primary";
    let moto = moto(bucket);
    let (status, _, _) = http(moto.port, "PUT", "/mirror");
    assert_eq!(status, "HTTP/1.1 200 OK", "create the mirror bucket");
    let fixture = site(moto.port, bucket);
    assert_success(&fixture.build(&[]));
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let out = fixture.run(
        &[
            "publish",
            "s3://primary/site",
            "s3://mirror/site",
            "--endpoint-url",
            &endpoint,
            "--acl",
            "public-read",
        ],
        &AWS,
    );
    assert_success(&out);
    // Lines: "upload  s3://<bucket>/site  <path>  <type>".
    let steps: Vec<(String, String)> = stdout(&out)
        .lines()
        .filter(|l| l.trim_start().starts_with("upload "))
        .map(|l| {
            let mut words = l.split_whitespace().skip(1);
            (
                words.next().unwrap().to_owned(),
                words.next().unwrap().to_owned(),
            )
        })
        .collect();
    let last_image = steps
        .iter()
        .rposition(|(_, p)| p.starts_with("images/"))
        .unwrap();
    let first_other = steps
        .iter()
        .position(|(_, p)| !p.starts_with("images/"))
        .unwrap();
    assert!(last_image < first_other, "{steps:?}");
    for target in ["s3://primary/site", "s3://mirror/site"] {
        assert_eq!(
            steps.iter().filter(|(t, _)| t == target).count(),
            steps.len() / 2,
            "{steps:?}"
        );
        let feeds: Vec<&(String, String)> = steps.iter().filter(|(t, _)| t == target).collect();
        assert_eq!(feeds.last().unwrap().1, "feed.xml");
    }
    for bucket in ["primary", "mirror"] {
        let url = format!("http://127.0.0.1:{}/{bucket}/site/", moto.port);
        let verified = fixture.run(
            &[
                "verify",
                &url,
                "--pubkey",
                "../known-answer/kat.pub",
                "--images",
            ],
            &[],
        );
        // The feed is signed for the primary's URL: the mirror serves the
        // same files, so a site check against it fails only on the URL.
        if bucket == "primary" {
            assert_success(&verified);
        } else {
            assert!(
                stdout(&verified).contains("is not under the base_url"),
                "{}",
                stdout(&verified)
            );
        }
    }
}

/// A dry run without credentials lists every file as an upload and asks no
/// server anything; a key id without its secret is named at once; and a
/// publish without credentials, which falls back to the EC2 metadata
/// service, says so, each cause once.
fn credentials_are_named_and_a_dry_run_needs_none() {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.build(&[]));
    // Nothing may connect here: a dry run without credentials does not look.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let publish = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = crate::common::vmcast_command(&fixture.root, &[]);
        cmd.args(["publish", "s3://bucket/site", "--endpoint-url", &endpoint])
            .args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(name);
            }
        }
        // Where the metadata service would be: nobody answers.
        cmd.env("AWS_METADATA_ENDPOINT", &nobody)
            .envs(env.iter().copied());
        cmd.output().unwrap()
    };

    let out = publish(&["--dry-run"], &[("AWS_SECRET_ACCESS_KEY", "")]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.starts_with("would upload  images/webapp/1.0.0/webapp-1.0.0.raw  "),
        "{text}"
    );
    assert!(
        text.ends_with(
            "(dry run without AWS credentials: the bucket was not looked at, so every file is \
             listed as an upload)\n"
        ),
        "{text}"
    );
    assert!(listener.accept().is_err(), "the dry run connected");

    let out = publish(&["--dry-run"], &[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: AWS_ACCESS_KEY_ID is set, but AWS_SECRET_ACCESS_KEY is not (or is empty): set \
         both, for instance from your CI's secrets\n"
    );
    assert!(listener.accept().is_err(), "connected before failing");

    let out = publish(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: no AWS credentials in the environment (set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN; a --dry-run \
             needs none), so the EC2 instance metadata service was asked: cannot look up \
             site/images/webapp/1.0.0/webapp-1.0.0.raw: "
        ),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(listener.accept().is_err(), "uploaded without credentials");
}
