//! Delta downloads: the zsync control file `build` writes beside each
//! image, and `pull` with an older image at hand downloading only the
//! blocks that changed, against the test's own file server (many ranges to
//! a request, one range to a request as S3 answers, or none), and the
//! stock `zsync` client against nginx. Every server stops by itself.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;

use crate::common::{Fixture, assert_success, stderr, stdout};
use crate::pull::Files;

tests! {
    a_delta_pull_downloads_only_the_changed_blocks;
    a_server_of_single_ranges_gets_one_range_a_request;
    a_seed_with_a_flipped_byte_still_ends_in_the_right_image;
    a_server_that_ignores_range_gets_a_whole_download;
    an_interrupted_delta_download_is_taken_up_by_the_next_run;
    a_range_of_other_bytes_is_refused_before_it_is_written;
    control_files_are_reproducible_and_zsyncmakes needs ZSYNC;
    stock_zsync_rebuilds_the_image_against_nginx needs NGINX, ZSYNC;
    verify_refuses_a_tampered_control_file;
    no_control_file_with_zsync_off_or_images_elsewhere;
}

/// The images' length: 2 MiB blocks of 2 KiB (zsyncmake's size under
/// 100 MB).
const LEN: usize = 4 << 20;
const BLOCK: usize = 2048;

/// Bytes that do not repeat, the same for the same seed.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `old` with `per_mille` of its blocks rewritten, at places picked at
/// random; and how many bytes that changed (whole blocks).
fn rewrite(old: &[u8], per_mille: usize, seed: u32) -> (Vec<u8>, u64) {
    let mut new = old.to_vec();
    let blocks = old.len() / BLOCK;
    let picks = noise(blocks * 4, seed);
    let mut changed = std::collections::BTreeSet::new();
    for pick in picks.chunks(4).take(blocks * per_mille / 1000) {
        let b = u32::from_le_bytes(pick.try_into().unwrap()) as usize % blocks;
        let at = b * BLOCK;
        new[at..at + BLOCK].copy_from_slice(&noise(BLOCK, seed ^ b as u32));
        changed.insert(b);
    }
    (new, (changed.len() * BLOCK) as u64)
}

/// A site served by the test's file server, and a subscriber's `--dest`.
struct Site {
    tmp: tempfile::TempDir,
    served: PathBuf,
    server: Files,
    fixture: Fixture,
    dest: PathBuf,
}

impl Site {
    /// ok-minimal with `first` as webapp 1.1.0, built and served.
    fn new(first: &[u8]) -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let served = tmp.path().join("served");
        fs::create_dir_all(&served).unwrap();
        let server = Files::start(served.clone());
        let fixture = Fixture::new("ok-minimal");
        let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
        let config = config.replace("https://downloads.example.com/site/", server.url().as_str());
        fs::write(fixture.path("vmcast.toml"), config).unwrap();
        fs::write(
            fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw"),
            first,
        )
        .unwrap();
        let site = Site {
            dest: tmp.path().join("dest"),
            tmp,
            served,
            server,
            fixture,
        };
        site.publish("1790000000");
        site
    }

    fn publish(&self, epoch: &str) {
        assert_success(
            &self
                .fixture
                .run(&["build"], &[("SOURCE_DATE_EPOCH", epoch)]),
        );
        crate::common::copy_tree(&self.fixture.path("public"), &self.served);
    }

    /// A new release of webapp with `image`, built and served.
    fn release(&self, version: &str, image: &[u8], epoch: &str) {
        self.fixture.add_webapp_release(version, image);
        self.publish(epoch);
    }

    fn pull(&self, extra: &[&str]) -> Output {
        crate::pull::pull(&self.fixture, &self.server.url(), &self.dest, extra)
    }

    /// The control file of a published image, its length.
    fn control_len(&self, version: &str) -> u64 {
        let path = format!("public/images/webapp/{version}/webapp-{version}.raw.zsync");
        fs::metadata(self.fixture.path(&path)).unwrap().len()
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

/// webapp 1.1.0 pulled into `--dest`, then 1.2.0, the same with 2 % of its
/// blocks rewritten, pulled with it at hand; returns the second pull and
/// the bytes the server sent for it, beside the bytes that changed.
fn pull_an_update(single_ranges: bool) -> (Site, Output, u64, u64, Vec<u8>) {
    let old = noise(LEN, 1);
    let site = Site::new(&old);
    assert_eq!(site.pull(&[]).status.code(), Some(0));
    let (new, changed) = rewrite(&old, 20, 2);
    site.release("1.2.0", &new, "1790086400");
    site.server
        .knobs
        .single_range
        .store(single_ranges, Ordering::SeqCst);
    let before = site.server.image_bytes();
    let out = site.pull(&["--json"]);
    let sent = site.server.image_bytes() - before;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(site.dest.join("webapp-1.2.0.raw")).unwrap(), new);
    (site, out, sent, changed, new)
}

/// The budget: at most 1.15 times the bytes that changed, and the control
/// file, which is at most 0.5 % of the image.
fn assert_within_budget(site: &Site, sent: u64, changed: u64) {
    let control = site.control_len("1.2.0");
    assert!(
        control * 200 <= LEN as u64,
        "a control file of {control} bytes"
    );
    assert!(
        sent * 100 <= changed * 115 + control * 100 && sent >= changed,
        "sent {sent} bytes for {changed} changed bytes and a {control}-byte control file"
    );
}

fn a_delta_pull_downloads_only_the_changed_blocks() {
    let (site, out, sent, changed, _) = pull_an_update(false);
    assert_within_budget(&site, sent, changed);
    let report = json(&out);
    let delta = &report["delta"];
    assert_eq!(report["outcome"], "updated");
    assert_eq!(
        delta["seeds"][0],
        site.dest.join("webapp-1.1.0.raw").to_str().unwrap()
    );
    assert_eq!(
        delta["reused"].as_u64().unwrap() + delta["fetched"].as_u64().unwrap(),
        LEN as u64
    );
    assert_eq!(report["downloaded"], delta["fetched"]);
    // Many ranges to a request, and more than one request.
    let image = site
        .server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /images/webapp/1.2.0/webapp-1.2.0.raw ranges"))
        .collect::<Vec<_>>();
    assert!(image.iter().all(|r| r.contains(',')), "{image:?}");
    assert_eq!(image.len() as u64, delta["requests"].as_u64().unwrap());
    assert!(image.len() > 1, "{image:?}");
    assert!(
        stderr(&out).starts_with(&format!(
            "delta: {} of the image is in {}; downloading the other {}\n",
            vmcast_gen::units::human_size(LEN as u64 - changed),
            site.dest.join("webapp-1.1.0.raw").display(),
            vmcast_gen::units::human_size(changed)
        )),
        "{}",
        stderr(&out)
    );
}

fn a_server_of_single_ranges_gets_one_range_a_request() {
    let (site, _, sent, changed, _) = pull_an_update(true);
    assert_within_budget(&site, sent, changed);
    let image: Vec<String> = site
        .server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /images/webapp/1.2.0/webapp-1.2.0.raw ranges"))
        .collect();
    // The control file was asked for as two ranges and came as the first
    // alone, then the rest: so every request for the image asks for one,
    // and none starts the whole image.
    let control: Vec<String> = site
        .server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /images/webapp/1.2.0/webapp-1.2.0.raw.zsync"))
        .collect();
    let last = site.control_len("1.2.0") - 1;
    assert_eq!(
        control,
        [
            format!("GET /images/webapp/1.2.0/webapp-1.2.0.raw.zsync ranges 0-0,1-{last}"),
            format!("GET /images/webapp/1.2.0/webapp-1.2.0.raw.zsync ranges 1-{last}"),
        ]
    );
    assert!(image.iter().all(|r| !r.contains(',')), "{image:?}");
}

fn a_seed_with_a_flipped_byte_still_ends_in_the_right_image() {
    let old = noise(LEN, 3);
    let site = Site::new(&old);
    let seed = site.tmp.path().join("seed.raw");
    let mut flipped = old.clone();
    flipped[LEN / 2 + 5] ^= 0x40;
    fs::write(&seed, &flipped).unwrap();
    let before = site.server.image_bytes();
    let out = site.pull(&["--seed", seed.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(site.dest.join("webapp-1.1.0.raw")).unwrap(), old);
    // The block with the flipped byte, and the control file, asked for as
    // two ranges: the framing of a two-part answer on top.
    let sent = site.server.image_bytes() - before;
    let least = BLOCK as u64 + site.control_len("1.1.0");
    assert!((least..least + 512).contains(&sent), "{sent} bytes sent");
    assert_eq!(json(&out)["delta"]["seeds"][0], seed.to_str().unwrap());
}

fn a_server_that_ignores_range_gets_a_whole_download() {
    let old = noise(LEN, 4);
    let site = Site::new(&old);
    let seed = site.tmp.path().join("seed.raw");
    fs::write(&seed, &old[..LEN / 2]).unwrap();
    site.server.knobs.ignore_range.store(true, Ordering::SeqCst);
    let url = site.server.url();
    let out = site.pull(&["--seed", seed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(site.dest.join("webapp-1.1.0.raw")).unwrap(), old);
    assert!(
        stderr(&out).ends_with(&format!(
            "warning: no delta download ({url}images/webapp/1.1.0/webapp-1.1.0.raw: the server \
             ignores Range); the whole image is downloaded\n"
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        site.server
            .requests()
            .contains(&"GET /images/webapp/1.1.0/webapp-1.1.0.raw".to_owned()),
        "{:?}",
        site.server.requests()
    );
}

fn an_interrupted_delta_download_is_taken_up_by_the_next_run() {
    let old = noise(LEN, 5);
    let site = Site::new(&old);
    assert_eq!(site.pull(&[]).status.code(), Some(0));
    let (new, changed) = rewrite(&old, 50, 6);
    site.release("1.2.0", &new, "1790086400");
    // The first two requests for ranges are answered, no other: the
    // control file's, and the first for the image, whose blocks are kept.
    site.server.knobs.ranges_until.store(2, Ordering::SeqCst);
    let out = site.pull(&[]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the blocks it has are kept, and the next run takes them as a seed"),
        "{}",
        stderr(&out)
    );
    site.server.knobs.ranges_until.store(0, Ordering::SeqCst);
    let out = site.pull(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(site.dest.join("webapp-1.2.0.raw")).unwrap(), new);
    let delta = &json(&out)["delta"];
    let seeds: Vec<&str> = (delta["seeds"].as_array().unwrap().iter())
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(seeds.len(), 2, "{seeds:?}");
    assert!(seeds[1].ends_with(".delta"), "{seeds:?}");
    assert!(delta["fetched"].as_u64().unwrap() < changed, "{delta}");
}

fn a_range_of_other_bytes_is_refused_before_it_is_written() {
    let old = noise(LEN, 10);
    let site = Site::new(&old);
    assert_eq!(site.pull(&[]).status.code(), Some(0));
    let (new, _) = rewrite(&old, 20, 11);
    site.release("1.2.0", &new, "1790086400");
    // The server's copy differs where it changed: in a block to download.
    let at = (0..LEN).find(|&i| old[i] != new[i]).unwrap();
    let served = site.served.join("images/webapp/1.2.0/webapp-1.2.0.raw");
    let mut tampered = new.clone();
    tampered[at] ^= 1;
    fs::write(&served, tampered).unwrap();
    let out = site.pull(&[]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let block = at / BLOCK;
    assert!(
        stderr(&out).contains(&format!(
            "webapp-1.2.0.raw: the bytes from {} are not block {block} of the signed control \
             file",
            block * BLOCK
        )),
        "{}",
        stderr(&out)
    );
    assert!(!site.dest.join("webapp-1.2.0.raw").exists());
}

/// The same image gives the same control file, whenever it is built, and
/// the one `zsyncmake -u <name>` writes, but for its `MTime` line.
fn control_files_are_reproducible_and_zsyncmakes() {
    let fixture = Fixture::new("ok-minimal");
    let image = "releases/webapp/1.1.0/webapp-1.1.0.raw";
    fs::write(fixture.path(image), noise(300_000, 7)).unwrap();
    let control = "images/webapp/1.1.0/webapp-1.1.0.raw.zsync";
    let built = |out: &str, epoch: &str| {
        let built = fixture.run(
            &["build", "--no-cache", "--out", out],
            &[("SOURCE_DATE_EPOCH", epoch)],
        );
        assert_success(&built);
        fs::read(fixture.path(&format!("{out}/{control}"))).unwrap()
    };
    let first = built("public", "1790000000");
    assert_eq!(built("again", "1790999999"), first);
    let reference = fixture.tmp.path().join("reference.zsync");
    let made = Command::new("zsyncmake")
        .args(["-u", "webapp-1.1.0.raw", "-o"])
        .arg(&reference)
        .arg("webapp-1.1.0.raw")
        .current_dir(fixture.path("releases/webapp/1.1.0"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let reference = fs::read(reference).unwrap();
    let mtime = reference
        .windows(7)
        .position(|w| w == b"MTime: ")
        .expect("zsyncmake writes an MTime");
    let end = mtime + reference[mtime..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let without = [&reference[..mtime], &reference[end..]].concat();
    assert!(without == first, "not zsyncmake's control file");
}

/// Finds a free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx serving `root` on 127.0.0.1 with a config of its own (one
/// process, everything under `dir`), killed by its PID when dropped.
struct Nginx {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, root: &Path) -> Nginx {
        let port = free_port();
        let log = dir.join("access.log");
        let temp = dir.join("temp");
        fs::create_dir_all(&temp).unwrap();
        let config = dir.join("nginx.conf");
        let t = temp.display();
        fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\n\
                 error_log {err};\nevents {{ worker_connections 64; }}\nhttp {{\n\
                 log_format sent '$request $status $body_bytes_sent';\n\
                 access_log {log} sent;\nclient_body_temp_path {t}/body;\n\
                 proxy_temp_path {t}/proxy;\nfastcgi_temp_path {t}/fastcgi;\n\
                 uwsgi_temp_path {t}/uwsgi;\nscgi_temp_path {t}/scgi;\n\
                 types {{ }}\ndefault_type application/octet-stream;\n\
                 server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
                pid = dir.join("nginx.pid").display(),
                err = dir.join("error.log").display(),
                log = log.display(),
                root = root.display(),
            ),
        )
        .unwrap();
        let nginx = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new("timeout")
            .args(["120", nginx, "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Nginx { child, port, log }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        crate::common::stop_under_timeout(&mut self.child);
    }
}

/// The stock zsync client, with our control file, rebuilds the new image
/// from the old one against nginx, fetching about what changed.
fn stock_zsync_rebuilds_the_image_against_nginx() {
    let old = noise(LEN, 8);
    let site = Site::new(&old);
    let (new, changed) = rewrite(&old, 20, 9);
    site.release("1.2.0", &new, "1790086400");
    let work = site.tmp.path().join("zsync");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("old.raw"), &old).unwrap();
    let nginx = Nginx::start(site.tmp.path(), &site.fixture.path("public"));
    let url = format!(
        "http://127.0.0.1:{}/images/webapp/1.2.0/webapp-1.2.0.raw.zsync",
        nginx.port
    );
    // The stock client loops on servers whose answers it does not take:
    // bounded.
    let out = Command::new("timeout")
        .args(["60", "zsync", "-q", "-i", "old.raw", "-o", "new.raw", &url])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(work.join("new.raw")).unwrap() == new);
    let log = fs::read_to_string(&nginx.log).unwrap();
    let sent: u64 = log
        .lines()
        .filter(|l| l.contains("/images/webapp/1.2.0/"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_within_budget(&site, sent, changed);
}

fn verify_refuses_a_tampered_control_file() {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.build(&[]));
    let verify = |extra: &[&str]| {
        let args = [
            &["verify", "public", "--pubkey", "../known-answer/kat.pub"][..],
            extra,
        ]
        .concat();
        fixture.run(&args, &[])
    };
    assert_success(&verify(&["--images"]));
    let control = fixture.path("public/images/webapp/1.1.0/webapp-1.1.0.raw.zsync");
    let mut bytes = fs::read(&control).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&control, &bytes).unwrap();
    // The manifest still lists the feed's digest; the file is not it.
    assert_success(&verify(&[]));
    let out = verify(&["--images"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(
            "error: images/webapp/1.1.0/webapp-1.1.0.raw.zsync: SHA-256 mismatch: the feed says "
        ),
        "{}",
        stderr(&out)
    );
    // A feed that names another digest than the manifest's.
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    let listed = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    let digest = listed
        .lines()
        .find(|l| l.ends_with("webapp-1.1.0.raw.zsync"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(feed.contains(&digest));
    crate::verify::forge_feed(&fixture, "public", &digest, &"0".repeat(64));
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: feed.xml: images/webapp/1.1.0/webapp-1.1.0.raw.zsync: the feed's SHA-256 differs \
         from SHA256SUMS's\n"
    );
}

fn no_control_file_with_zsync_off_or_images_elsewhere() {
    for config in [
        "zsync = false\n",
        "image_mode = \"none\"\ndownload_base_url = \"https://cdn.example.com/images/\"\n",
    ] {
        let fixture = Fixture::new("ok-minimal");
        fixture.configure(config);
        assert_success(&fixture.build(&[]));
        let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
        let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
        assert!(!feed.contains("vmcast:zsync"), "{config}: {feed}");
        assert!(!sums.contains(".zsync"), "{config}: {sums}");
        let made = walkdir::WalkDir::new(fixture.path("public"))
            .into_iter()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .to_string_lossy()
                    .ends_with(".zsync")
            })
            .count();
        assert_eq!(made, 0, "{config}");
    }
}
