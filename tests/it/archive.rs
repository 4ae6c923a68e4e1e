//! Retention and archives (RFC 5005): a site of 300 releases of two
//! appliances with `feed_items = 20`. The feed holds 40 items; the archive
//! chain followed from feed.xml reaches every release exactly once; every
//! archive is signed and verifies; a new release changes no archive byte.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::common::{Fixture, assert_success, snapshot_tree, stderr, stdout};

tests! {
    three_hundred_releases_keep_a_small_feed_and_immutable_signed_archives needs MINISIGN, JING;
    feedparser_reads_every_archive needs FEEDPARSER;
    verify_names_the_mirror_that_serves_a_corrupted_image needs PYTHON3, JING;
    gpodder_lists_the_history_through_the_archives needs GPO, PYTHON3;
    previous_builds_carry_archives_forward_unchanged;
    a_new_release_changes_only_what_names_it;
}

/// ok-minimal's releases replaced by `count` releases of webapp and dbnode
/// each, a day apart.
fn big_site(count: usize) -> Fixture {
    let fixture = Fixture::new("ok-minimal");
    fs::remove_dir_all(fixture.path("releases")).unwrap();
    for app in ["webapp", "dbnode"] {
        for i in 0..count {
            add(&fixture, app, i);
        }
    }
    fixture.configure("feed_items = 20\n");
    fixture
}

fn add(fixture: &Fixture, app: &str, i: usize) {
    let dir = fixture.path(&format!("releases/{app}/1.{i}.0"));
    fs::create_dir_all(&dir).unwrap();
    let date = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Days::new(i as u64);
    fs::write(
        dir.join("release.toml"),
        format!("version = \"1.{i}.0\"\ndate = {date}\nnotes = \"Release {i}.\"\n"),
    )
    .unwrap();
    fs::write(
        dir.join(format!("{app}-1.{i}.0.raw")),
        format!("{app} {i}\n").repeat(40),
    )
    .unwrap();
}

fn items(xml: &str) -> Vec<String> {
    xml.split("<guid isPermaLink=\"false\">")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect()
}

fn prev_archive(xml: &str) -> Option<String> {
    let at = xml.find("rel=\"prev-archive\"")?;
    let tag_start = xml[..at].rfind('<')?;
    let tag = &xml[tag_start..xml[at..].find('>')? + at];
    let href = tag.split("href=\"").nth(1)?.split('"').next()?;
    Some(
        href.strip_prefix("https://downloads.example.com/site/")?
            .to_owned(),
    )
}

fn three_hundred_releases_keep_a_small_feed_and_immutable_signed_archives() {
    let fixture = big_site(150);
    let out = fixture.run(&["build", "--no-cache"], &[]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(", 26 archive(s) and SHA256SUMS"),
        "{}",
        stdout(&out)
    );
    let public = fixture.path("public");
    let feed = fs::read_to_string(public.join("feed.xml")).unwrap();
    assert_eq!(items(&feed).len(), 40);

    // The chain from feed.xml reaches every release exactly once.
    let mut seen: Vec<String> = items(&feed);
    let mut next = prev_archive(&feed);
    let mut archives = Vec::new();
    while let Some(path) = next {
        let xml = fs::read_to_string(public.join(&path)).unwrap();
        assert!(xml.contains("<fh:archive/>"), "{path}");
        assert!(xml.contains("rel=\"current\""), "{path}");
        seen.extend(items(&xml));
        next = prev_archive(&xml);
        archives.push(path);
    }
    assert_eq!(archives.len(), 26);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 300);
    assert_eq!(unique.len(), 300);

    // Every archive is listed in SHA256SUMS and signed.
    let sums = fs::read_to_string(public.join("SHA256SUMS")).unwrap();
    for path in &archives {
        assert!(sums.contains(&format!("  {path}\n")), "{path} not listed");
        let check = Command::new("minisign")
            .args(["-V", "-H", "-p"])
            .arg(fixture.tmp.path().join("fixtures/known-answer/kat.pub"))
            .arg("-m")
            .arg(public.join(path))
            .output()
            .unwrap();
        assert_success(&check);
    }

    // The current feed and the archives follow the shipped schema.
    let schema =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/vmcast-feed.rng");
    let check = Command::new("jing")
        .arg(&schema)
        .arg(public.join("feed.xml"))
        .arg(public.join("feeds/webapp.xml"))
        .arg(public.join(&archives[0]))
        .arg(public.join("archive/1.xml"))
        .output()
        .unwrap();
    assert_success(&check);

    // verify walks the chain; the landing page stays small and links to
    // the history pages, which list every release.
    let verified = fixture.run(
        &["verify", "public", "--pubkey", "../known-answer/kat.pub"],
        &[],
    );
    assert_success(&verified);
    assert_eq!(
        stdout(&verified)
            .matches("  ok   archive   archive/")
            .count(),
        26
    );
    assert!(
        stdout(&verified).contains("verified: 300 release(s), 300 image(s)"),
        "{}",
        stdout(&verified)
    );
    let page = fs::read_to_string(public.join("index.html")).unwrap();
    assert!(
        page.contains("history&#x2f;webapp.html\">All 150 releases of webapp</a>"),
        "{}",
        page.split("class=\"history\"")
            .nth(1)
            .unwrap_or("no history link")
    );
    assert_eq!(page.matches("class=\"release\"").count(), 40);
    let history = fs::read_to_string(public.join("history/webapp.html")).unwrap();
    assert_eq!(history.matches("<tr id=\"webapp-").count(), 150);

    // One more release, a day later: the feed grows by one (it waits to
    // fill an archive), and no archive or archive signature changes by a
    // byte: their signatures name no build.
    let before = snapshot_tree(&public);
    add(&fixture, "webapp", 150);
    assert_success(&fixture.run(
        &["build", "--no-cache"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    ));
    let after = snapshot_tree(&public);
    let archived: Vec<_> = before
        .iter()
        .filter(|(p, _)| p.starts_with("archive"))
        .collect();
    assert_eq!(archived.len(), 26 * 2);
    for (path, bytes) in archived {
        assert_eq!(after.get(path), Some(bytes), "{path:?} changed");
    }
    let signature = fs::read_to_string(public.join("archive/1.xml.minisig")).unwrap();
    assert!(
        signature.contains(
            "trusted comment: file:archive/1.xml\tbase_url:https://downloads.example.com/site/\n"
        ),
        "{signature}"
    );
    let feed = fs::read_to_string(public.join("feed.xml")).unwrap();
    assert_eq!(items(&feed).len(), 41);
}

/// What changed between two snapshots of an output, sorted: `added PATH`,
/// `changed PATH` and `removed PATH`.
fn changes(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    let mut changes: Vec<String> = paths
        .into_iter()
        .filter_map(|path| {
            let what = match (before.get(path), after.get(path)) {
                (None, _) => "added",
                (_, None) => "removed",
                (Some(old), Some(new)) if old != new => "changed",
                _ => return None,
            };
            Some(format!("{what} {}", path.display()))
        })
        .collect();
    changes.sort();
    changes
}

/// One new release on a site of 300 changes the files that name it or
/// vouch for this build, and no other byte: feed.xml and SHA256SUMS with
/// their signatures (each signed for the build), its appliance's feed and
/// signature, the landing page, its appliance's history page and its
/// image. The other appliance's feed, unchanged, is kept as it was,
/// signature and all, also when an archive fills: it links the newest
/// archive of its own releases. The release that fills an archive adds that
/// archive and its signature too. Each build is a second after the one
/// before, and stages in the spare site that one left.
fn a_new_release_changes_only_what_names_it() {
    let fixture = big_site(150);
    let public = fixture.path("public");
    let mut epoch = 1_790_000_000;
    let mut build = || {
        epoch += 1;
        let epoch = epoch.to_string();
        assert_success(&fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", &epoch)]));
        snapshot_tree(&public)
    };
    // What every build signs anew, and what it changes besides.
    let signed = |besides: &[&str]| {
        let mut all: Vec<String> = [
            "SHA256SUMS",
            "SHA256SUMS.minisig",
            "feed.xml",
            "feed.xml.minisig",
            "index.html",
        ]
        .iter()
        .map(|path| format!("changed {path}"))
        .chain(besides.iter().map(|s| s.to_string()))
        .collect();
        all.sort();
        all
    };
    build();
    let before = build();
    let rebuilt = build();
    assert_eq!(changes(&before, &rebuilt), signed(&[]));
    add(&fixture, "webapp", 150);
    let one = build();
    assert_eq!(
        changes(&rebuilt, &one),
        signed(&[
            "changed feeds/webapp.xml",
            "changed feeds/webapp.xml.minisig",
            "changed history/webapp.html",
            "added images/webapp/1.150.0/webapp-1.150.0.raw",
            "added images/webapp/1.150.0/webapp-1.150.0.raw.zsync",
        ])
    );
    // Eight more wait in the current feeds for an archive to fill; the
    // tenth new release fills the 27th.
    for i in 151..159 {
        add(&fixture, "webapp", i);
    }
    let nine = build();
    add(&fixture, "webapp", 159);
    let ten = build();
    assert_eq!(
        changes(&nine, &ten),
        signed(&[
            "added archive/27.xml",
            "added archive/27.xml.minisig",
            "changed feeds/webapp.xml",
            "changed feeds/webapp.xml.minisig",
            "changed history/webapp.html",
            "added images/webapp/1.159.0/webapp-1.159.0.raw",
            "added images/webapp/1.159.0/webapp-1.159.0.raw.zsync",
        ])
    );
}

/// feedparser reads every archive as a valid feed.
fn feedparser_reads_every_archive() {
    let fixture = big_site(40);
    assert_success(&fixture.run(&["build", "--no-cache"], &[]));
    let script = "import feedparser, glob, sys\n\
                  for path in sorted(glob.glob(sys.argv[1] + '/archive/*.xml')):\n\
                  \x20   d = feedparser.parse(path)\n\
                  \x20   assert not d.bozo, (path, d.bozo_exception)\n\
                  \x20   print(path.rsplit('/', 1)[1], len(d.entries))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(fixture.path("public"))
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "1.xml 10\n2.xml 10\n3.xml 10\n4.xml 10\n",
        "{}",
        stderr(&out)
    );
}

/// Two mirrors served on 127.0.0.1, one holding a corrupted image:
/// `verify --images --mirrors` names exactly that mirror and file.
fn verify_names_the_mirror_that_serves_a_corrupted_image() {
    use std::net::{TcpListener, TcpStream};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let fixture = Fixture::new("ok-minimal");
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    fixture.configure(&format!(
        "mirrors = [\"http://127.0.0.1:{}/\", \"http://127.0.0.1:{}/\"]\n",
        ports[0], ports[1]
    ));
    assert_success(&fixture.run(&["build"], &[]));
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert!(feed.contains(&format!(
        "<podcast:source uri=\"http://127.0.0.1:{}/webapp/1.1.0/webapp-1.1.0.raw\"/>",
        ports[1]
    )));
    let schema =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/vmcast-feed.rng");
    let check = Command::new("jing")
        .arg(&schema)
        .arg(fixture.path("public/feed.xml"))
        .output()
        .unwrap();
    assert_success(&check);
    let mut servers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let dir = fixture.tmp.path().join(format!("mirror{i}"));
        crate::common::copy_tree(&fixture.path("public/images"), &dir);
        if i == 1 {
            let image = dir.join("webapp/1.0.0/webapp-1.0.0.raw");
            let mut bytes = fs::read(&image).unwrap();
            bytes[3] ^= 1;
            fs::write(&image, bytes).unwrap();
        }
        servers.push(
            Command::new("timeout")
                .args(["60", "python3", "-m", "http.server", "--bind", "127.0.0.1"])
                .arg(port.to_string())
                .arg("--directory")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let out = fixture.run(
        &[
            "verify",
            "public",
            "--pubkey",
            "../known-answer/kat.pub",
            "--images",
            "--mirrors",
        ],
        &[],
    );
    for server in &mut servers {
        crate::common::stop_under_timeout(server);
    }
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let bad = format!(
        "http://127.0.0.1:{}/webapp/1.0.0/webapp-1.0.0.raw",
        ports[1]
    );
    let report = stdout(&out);
    let failures: Vec<&str> = report.lines().filter(|l| l.starts_with("  FAIL")).collect();
    assert_eq!(failures.len(), 1, "{report}");
    assert!(
        failures[0].contains(&format!("mirrors   {bad}: different")),
        "{failures:?}"
    );
    assert_eq!(stdout(&out).matches("  ok   mirrors").count(), 3);
}

/// gPodder follows RFC 5005's paging links (`next`) from the feed through
/// every archive: `gpo` lists the whole history, 25 releases of which the
/// feed itself holds 5.
fn gpodder_lists_the_history_through_the_archives() {
    use std::net::{TcpListener, TcpStream};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixture = Fixture::new("ok-minimal");
    fs::remove_dir_all(fixture.path("releases")).unwrap();
    for i in 0..25 {
        add(&fixture, "webapp", i);
    }
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.starts_with("base_url") {
            true => format!("base_url = \"http://127.0.0.1:{port}/\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    fs::write(fixture.path("vmcast.toml"), config + "feed_items = 5\n").unwrap();
    assert_success(&fixture.run(&["build"], &[]));
    let mut server = Command::new("timeout")
        .args(["60", "python3", "-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(fixture.path("public"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let home = fixture.tmp.path().join("gpodder");
    let feed = format!("http://127.0.0.1:{port}/feed.xml");
    let gpo = |args: &[&str]| {
        Command::new("timeout")
            .arg("60")
            .arg("gpo")
            .args(args)
            .env("GPODDER_HOME", &home)
            .output()
            .unwrap()
    };
    let subscribed = gpo(&["subscribe", &feed]);
    let episodes = gpo(&["episodes", &feed]);
    crate::common::stop_under_timeout(&mut server);
    assert_success(&subscribed);
    assert_success(&episodes);
    let listed: Vec<String> = stdout(&episodes)
        .lines()
        .filter_map(|l| l.split("webapp ").nth(1).map(str::to_owned))
        .collect();
    assert_eq!(listed.len(), 25, "{}", stdout(&episodes));
    assert!(listed.contains(&"1.0.0".to_owned()) && listed.contains(&"1.24.0".to_owned()));
}

/// `build --previous` on a site with archives, from a runner that holds
/// none of the old images: every archive is written again byte for byte,
/// and `verify --images --all` reads the archived releases' images too.
fn previous_builds_carry_archives_forward_unchanged() {
    let fixture = big_site(40);
    assert_success(&fixture.run(&["build", "--no-cache"], &[]));
    crate::common::copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    for app in ["webapp", "dbnode"] {
        for i in 0..40 {
            fs::remove_file(fixture.path(&format!("releases/{app}/1.{i}.0/{app}-1.{i}.0.raw")))
                .unwrap();
        }
    }
    add(&fixture, "webapp", 40);
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("80 release(s), 80 image(s)"),
        "{}",
        stdout(&out)
    );
    let published = snapshot_tree(&fixture.path("published/archive"));
    let rebuilt = snapshot_tree(&fixture.path("public/archive"));
    // Every archive and its signature, byte for byte.
    assert_eq!(published.len(), 4 * 2);
    assert_eq!(published, rebuilt);
    // Published together with the old images, everything verifies.
    crate::common::copy_tree(
        &fixture.path("published/images"),
        &fixture.path("public/images"),
    );
    let verified = fixture.run(
        &[
            "verify",
            "public",
            "--pubkey",
            "../known-answer/kat.pub",
            "--images",
            "--all",
        ],
        &[],
    );
    assert_success(&verified);
    // Each image and its zsync control file.
    assert_eq!(stdout(&verified).matches("  ok   images ").count(), 2 * 81);
}
