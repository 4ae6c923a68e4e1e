//! The simplestreams catalog (`[catalogs] simplestreams`): its tree, its
//! refusals, LXD's fingerprint through the cache and `--previous`, and the
//! real clients reading one tree over 127.0.0.1: `sstream-query` and
//! `sstream-mirror` over http, `lxc` over https with a CA made here, and
//! virt-builder with `format=simplestreams`. Each client that checks
//! digests is also shown refusing an image with one byte flipped.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use crate::common::{EPOCH, Fixture, assert_success, copy_tree, stderr, stdout, vmcast};
use crate::verify::{kat_key, relist, resign};
use vmcast_gen::model::Sha256;

tests! {
    simplestreams_tree_is_listed_and_verified;
    a_wrong_lxd_fingerprint_fails_verify;
    releases_in_the_same_minute_get_serials_of_their_own_that_stay;
    images_on_another_host_are_skipped_with_the_reason;
    the_fingerprint_comes_from_the_cache_on_a_warm_rebuild;
    previous_keeps_the_lxd_items_of_carried_releases;
    previous_leaves_out_lxd_items_whose_metadata_changed;
    sstream_query_lists_the_newest_release_and_sstream_mirror_refuses_a_flipped_byte needs SSTREAM;
    lxc_lists_and_exports_the_newest_vm_and_refuses_a_flipped_byte needs LXC;
    virt_builder_lists_the_newest_release_and_refuses_a_flipped_byte needs VIRT_BUILDER;
    sstream_query_checks_the_signed_tree_with_the_sites_key needs SSTREAM, GPG, GPGV;
    virt_builder_checks_the_signed_tree_with_gpgkey needs VIRT_BUILDER;
    verify_checks_the_signed_simplestreams_forms;
}

const KAT_PUB: &str = "../known-answer/kat.pub";
const PRODUCTS: &str = "public/streams/v1/images.json";
const QCOW2: &str = "example-site/releases/webapp/1.4.0/webapp-1.4.0.qcow2";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// ok-minimal with the catalog on, an x86_64 qcow2 beside the raw image
/// of 1.1.0, and the hash cache in the fixture.
fn qcow2_site() -> Fixture {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("\n[catalogs]\nsimplestreams = true\n");
    for v in ["1.0.0", "1.1.0"] {
        let notes = fixture.path(&format!("releases/webapp/{v}/release.toml"));
        let text = fs::read_to_string(&notes).unwrap();
        fs::write(
            &notes,
            format!("{text}\n[requirements]\narch = \"x86_64\"\n"),
        )
        .unwrap();
    }
    fs::copy(
        repo().join(QCOW2),
        fixture.path("releases/webapp/1.1.0/webapp-1.1.0.qcow2"),
    )
    .unwrap();
    fixture
}

fn build(fixture: &Fixture, extra: &[&str]) -> Output {
    let cache = fixture.tmp.path().join("cache");
    let mut args = vec!["build", "--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    fixture.run(&args, &[("SOURCE_DATE_EPOCH", EPOCH)])
}

fn verify(fixture: &Fixture) -> Output {
    fixture.run(&["verify", "public", "--pubkey", KAT_PUB], &[])
}

/// The summary's line of what was read and what came from the cache.
fn hashed_line(out: &Output) -> String {
    let text = stdout(out);
    let line = text.lines().find(|l| l.starts_with("Hashed ")).unwrap();
    let (counts, rest) = line.split_once(" bytes)").unwrap();
    format!("{counts} bytes); {}", rest.split_once("; ").unwrap().1)
}

fn products(fixture: &Fixture) -> serde_json::Value {
    serde_json::from_slice(&fs::read(fixture.path(PRODUCTS)).unwrap()).unwrap()
}

const VERSION: &str =
    "/products/com.example.downloads:vmcast:webapp:stable:amd64/versions/20260220_0000";

fn simplestreams_tree_is_listed_and_verified() {
    let fixture = qcow2_site();
    let out = build(&fixture, &[]);
    assert_success(&out);
    let summary = stdout(&out);
    let catalog = summary.split_once("Catalog simplestreams: ").unwrap().1;
    assert_eq!(
        catalog,
        "streams/v1/index.json, streams/v1/images.json, \
         streams/lxd/webapp/1.1.0/webapp-1.1.0-amd64.lxd.tar.xz; skipped 2 image(s):\n  \
         webapp 1.1.0 webapp-1.1.0.raw: for sstream-query only; virt-builder and LXD take one \
         uncompressed qcow2 per release and architecture\n  \
         webapp 1.0.0 webapp-1.0.0.raw: for sstream-query only; virt-builder and LXD take one \
         uncompressed qcow2 per release and architecture\n"
    );
    let index = fs::read_to_string(fixture.path("public/streams/v1/index.json")).unwrap();
    let images = fs::read_to_string(fixture.path(PRODUCTS)).unwrap();
    insta::assert_snapshot!("simplestreams", format!("{index}{images}"));

    // LXD's fingerprint is SHA-256 of the metadata tarball, then the disk.
    let tarball =
        fs::read(fixture.path("public/streams/lxd/webapp/1.1.0/webapp-1.1.0-amd64.lxd.tar.xz"))
            .unwrap();
    let mut whole = tarball.clone();
    whole.extend(fs::read(repo().join(QCOW2)).unwrap());
    let products = products(&fixture);
    let lxd = &products.pointer(VERSION).unwrap()["items"]["lxd.tar.xz"];
    assert_eq!(
        lxd["combined_disk1-img_sha256"],
        Sha256::of(&whole).to_hex()
    );
    assert_eq!(lxd["sha256"], Sha256::of(&tarball).to_hex());

    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    for file in [
        "streams/v1/index.json",
        "streams/v1/images.json",
        "streams/lxd/webapp/1.1.0/webapp-1.1.0-amd64.lxd.tar.xz",
    ] {
        assert!(sums.contains(&format!("  {file}\n")), "{sums}");
    }
    let out = verify(&fixture);
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "  ok   catalog   streams/v1/images.json: 5 item(s), as the feed and SHA256SUMS list them\n"
        ),
        "{}",
        stdout(&out)
    );
}

/// A products file listed in the manifest and signed for, but whose LXD
/// fingerprint is not the one the feed carries: LXD would trust another
/// disk under this name. `verify` names the item and both fingerprints.
fn a_wrong_lxd_fingerprint_fails_verify() {
    let fixture = qcow2_site();
    assert_success(&build(&fixture, &[]));
    let real = products(&fixture).pointer(VERSION).unwrap()["items"]["lxd.tar.xz"]
        ["combined_disk1-img_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let metadata = products(&fixture).pointer(VERSION).unwrap()["items"]["lxd.tar.xz"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let evil = "e".repeat(64);
    let text = fs::read_to_string(fixture.path(PRODUCTS)).unwrap();
    fs::write(fixture.path(PRODUCTS), text.replace(&real, &evil)).unwrap();
    relist(&fixture, "public", "streams/v1/images.json");
    resign(&fixture, "public/SHA256SUMS", &kat_key());

    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let at =
        "streams/v1/images.json: com.example.downloads:vmcast:webapp:stable:amd64 20260220_0000";
    assert_eq!(
        stderr(&out),
        format!(
            "error: {at} incus.tar.xz: LXD fingerprint {evil} of metadata {metadata}; the feed \
             says {real} of metadata {metadata}\n\
             error: {at} lxd.tar.xz: LXD fingerprint {evil} of metadata {metadata}; the feed \
             says {real} of metadata {metadata}\n"
        )
    );
}

/// Version keys are date serials to the minute: two releases of one
/// product on the same day (a fix for two branches) are numbered in
/// version order, Ubuntu's way. The keys stay the same on a rebuild and
/// on a build on the published site that has neither release's images.
fn releases_in_the_same_minute_get_serials_of_their_own_that_stay() {
    let fixture = qcow2_site();
    let notes = fixture.path("releases/webapp/1.0.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(&notes, text.replace("2026-01-15", "2026-02-20")).unwrap();
    assert_success(&build(&fixture, &[]));
    let versions = |fixture: &Fixture| {
        let products = products(fixture);
        let versions = products
            .pointer("/products/com.example.downloads:vmcast:webapp:stable:amd64/versions")
            .unwrap()
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["label"].as_str().unwrap().to_owned()))
            .collect::<Vec<_>>();
        (versions, products)
    };
    let (keys, before) = versions(&fixture);
    assert_eq!(
        keys,
        [
            ("20260220_0000".to_owned(), "1.0.0".to_owned()),
            ("20260220_0000.1".to_owned(), "1.1.0".to_owned()),
        ]
    );
    assert_success(&verify(&fixture));
    // Rebuilt: the same keys.
    assert_success(&build(&fixture, &["--no-cache"]));
    assert_eq!(versions(&fixture).1["products"], before["products"]);
    // Built on the published site, both releases carried from its feed.
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    for file in [
        "1.0.0/webapp-1.0.0.raw",
        "1.1.0/webapp-1.1.0.raw",
        "1.1.0/webapp-1.1.0.qcow2",
    ] {
        fs::remove_file(fixture.path(&format!("releases/webapp/{file}"))).unwrap();
    }
    let out = fixture.run(
        &["build", "--no-cache", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert_eq!(versions(&fixture).1["products"], before["products"]);
    assert_success(&verify(&fixture));
}

/// simplestreams paths are relative to the site: images served from
/// another host are left out, each with the reason, and the build goes on.
fn images_on_another_host_are_skipped_with_the_reason() {
    let fixture = Fixture::new("cdn-download-url");
    fixture.configure("\n[catalogs]\nsimplestreams = true\n");
    let out = build(&fixture, &[]);
    assert_success(&out);
    let summary = stdout(&out);
    let catalog = summary.split_once("Catalog simplestreams: ").unwrap().1;
    insta::assert_snapshot!("simplestreams_cdn_summary", catalog);
    let products = products(&fixture);
    assert_eq!(products["products"], serde_json::json!({}));
}

/// The disk is read once for both digests; a warm rebuild reads nothing.
/// Turning the catalog on reads only the disk that needs a fingerprint
/// the cache does not hold.
fn the_fingerprint_comes_from_the_cache_on_a_warm_rebuild() {
    let fixture = qcow2_site();
    let config = fixture.path("vmcast.toml");
    let on = fs::read_to_string(&config).unwrap();
    fs::write(&config, on.replace("simplestreams = true", "")).unwrap();
    assert_success(&build(&fixture, &[]));
    fs::write(&config, &on).unwrap();
    let out = build(&fixture, &[]);
    assert_success(&out);
    assert_eq!(
        hashed_line(&out),
        "Hashed 1 image(s), 384.0 KiB (393216 bytes); not read: 2 image(s), 804 B from the cache, \
         0 image(s), 0 B from sidecars"
    );
    let first = fs::read(fixture.path(PRODUCTS)).unwrap();
    let out = build(&fixture, &[]);
    assert_success(&out);
    assert_eq!(
        hashed_line(&out),
        "Hashed 0 image(s), 0 B (0 bytes); not read: 3 image(s), 384.8 KiB from the cache, \
         0 image(s), 0 B from sidecars"
    );
    assert_eq!(fs::read(fixture.path(PRODUCTS)).unwrap(), first);
}

/// A release taken from the previous site keeps its LXD items: the
/// fingerprint comes from the verified feed, the tarball is made again
/// from the notes, and no image is read.
fn previous_keeps_the_lxd_items_of_carried_releases() {
    let fixture = qcow2_site();
    assert_success(&build(&fixture, &[]));
    let before = products(&fixture);
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    for file in ["webapp-1.1.0.raw", "webapp-1.1.0.qcow2"] {
        fs::remove_file(fixture.path(&format!("releases/webapp/1.1.0/{file}"))).unwrap();
    }
    let out = fixture.run(
        &["build", "--no-cache", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert!(hashed_line(&out).starts_with("Hashed 1 image(s), 438 B"));
    let after = products(&fixture);
    assert_eq!(after["products"], before["products"]);
    assert!(
        fixture
            .path("public/streams/lxd/webapp/1.1.0/webapp-1.1.0-amd64.lxd.tar.xz")
            .is_file()
    );
    assert_success(&verify(&fixture));
}

/// A carried release whose notes changed since it was published has a
/// metadata tarball that no longer matches the fingerprint in the feed:
/// without the disk, its LXD items are left out, and the summary says so.
fn previous_leaves_out_lxd_items_whose_metadata_changed() {
    let fixture = qcow2_site();
    assert_success(&build(&fixture, &[]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    for file in ["webapp-1.1.0.raw", "webapp-1.1.0.qcow2"] {
        fs::remove_file(fixture.path(&format!("releases/webapp/1.1.0/{file}"))).unwrap();
    }
    let notes = fixture.path("releases/webapp/1.1.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(&notes, format!("title = \"WebApp 1.1.0, renamed\"\n{text}")).unwrap();
    let out = fixture.run(
        &["build", "--no-cache", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "\n  webapp 1.1.0 webapp-1.1.0.qcow2: not for LXD: its fingerprint was not taken with \
             this metadata (a release taken from the previous site whose notes changed); rebuild \
             it from the image\n"
        ),
        "{}",
        stdout(&out)
    );
    let items = products(&fixture).pointer(VERSION).unwrap()["items"].clone();
    let names: Vec<&String> = items.as_object().unwrap().keys().collect();
    assert_eq!(names, ["disk1.img", "webapp-1.1.0.raw"]);
    assert_success(&verify(&fixture));
}

/// The example site, built once per test binary (it turns the catalog on).
fn site() -> &'static Path {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("simplestreams-example-site");
        let result = vmcast(
            repo(),
            &["build", "--quiet", "--out", out.to_str().unwrap()],
            &[],
        );
        assert_success(&result);
        out
    })
}

/// The example site's newest webapp disk, as the feed lists it.
const NEWEST: &str = "images/webapp/1.4.0/webapp-1.4.0.qcow2";

/// A copy of the example site with one byte of the newest disk flipped.
fn flipped_site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(site(), dir.path());
    let disk = dir.path().join(NEWEST);
    let mut bytes = fs::read(&disk).unwrap();
    bytes[1000] ^= 1;
    fs::write(&disk, bytes).unwrap();
    dir
}

/// A Python file server on 127.0.0.1 (https with a certificate), which
/// stops itself after two minutes and is killed by PID on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(root: &Path, tls: Option<&Ca>) -> Server {
        let script = r#"
import functools, http.server, signal, ssl, sys
signal.alarm(120)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.log_message = lambda *args: None
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
if len(sys.argv) > 2:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script]).arg(root);
        if let Some(ca) = tls {
            cmd.arg(ca.dir.path().join("server.pem"))
                .arg(ca.dir.path().join("server.key"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no port from the server: {line:?}")
        });
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Runs a client, bounded to two minutes.
fn client(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("120").arg(program).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn sstream_query_lists_the_newest_release_and_sstream_mirror_refuses_a_flipped_byte() {
    let server = Server::start(site(), None);
    let index = format!("http://127.0.0.1:{}/streams/v1/index.json", server.port);
    let out = client(
        "sstream-query",
        &[
            "--max=1",
            "--json",
            &index,
            "os=webapp",
            "item_name=disk1.img",
        ],
        &[],
    );
    assert_success(&out);
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let disk = fs::read(site().join(NEWEST)).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["label"], "1.4.0");
    assert_eq!(items[0]["pubname"], "webapp-1.4.0");
    assert_eq!(items[0]["size"], disk.len().to_string());
    assert_eq!(items[0]["sha256"], Sha256::of(&disk).to_hex());
    assert_eq!(
        items[0]["item_url"],
        format!("http://127.0.0.1:{}/{NEWEST}", server.port)
    );

    let mirror = tempfile::tempdir().unwrap();
    let target = mirror.path().join("good");
    let out = client(
        "sstream-mirror",
        &["--max=1", &index, target.to_str().unwrap(), "os=webapp"],
        &[],
    );
    assert_success(&out);
    assert_eq!(fs::read(target.join(NEWEST)).unwrap(), disk);

    let flipped = flipped_site();
    let server = Server::start(flipped.path(), None);
    let index = format!("http://127.0.0.1:{}/streams/v1/index.json", server.port);
    let target = mirror.path().join("flipped");
    let out = client(
        "sstream-mirror",
        &["--max=1", &index, target.to_str().unwrap(), "os=webapp"],
        &[],
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "InvalidChecksum: Invalid sha256 Checksum at http://127.0.0.1:{}/{NEWEST}",
            server.port
        )),
        "{}",
        stderr(&out)
    );
}

/// A throwaway CA and a certificate for 127.0.0.1 it signed.
struct Ca {
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert_success(&out);
        };
        run(&[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=vmcast test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat());
        run(&[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat());
        fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        Ca { dir }
    }
}

/// `lxc` with its configuration in `conf` and the test CA trusted.
fn lxc(ca: &Ca, conf: &Path, args: &[&str]) -> Output {
    client(
        "lxc",
        args,
        &[
            ("LXD_CONF", conf),
            ("SSL_CERT_FILE", &ca.dir.path().join("ca.pem")),
            ("HOME", conf),
        ],
    )
}

fn lxc_lists_and_exports_the_newest_vm_and_refuses_a_flipped_byte() {
    let ca = Ca::new();
    let server = Server::start(site(), Some(&ca));
    let conf = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}", server.port);
    let add = [
        "remote",
        "add",
        "vmcast",
        &url,
        "--protocol=simplestreams",
        "--public",
    ];
    assert_success(&lxc(&ca, conf.path(), &add));
    let out = lxc(
        &ca,
        conf.path(),
        &["image", "list", "vmcast:", "--format", "json"],
    );
    assert_success(&out);
    let images: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let products: serde_json::Value =
        serde_json::from_slice(&fs::read(site().join("streams/v1/images.json")).unwrap()).unwrap();
    let version = products
        .pointer("/products/com.example.downloads:vmcast:webapp:stable:amd64/versions/20260512_0000/items")
        .unwrap();
    let fingerprint = version["lxd.tar.xz"]["combined_disk1-img_sha256"]
        .as_str()
        .unwrap();
    let newest = images
        .iter()
        .find(|i| i["properties"]["label"] == "1.4.0")
        .unwrap_or_else(|| panic!("no 1.4.0 in {images:?}"));
    assert_eq!(newest["fingerprint"], fingerprint);
    assert_eq!(newest["type"], "virtual-machine");
    assert_eq!(newest["architecture"], "x86_64");
    let disk = fs::read(site().join(NEWEST)).unwrap();
    let tarball = version["lxd.tar.xz"]["size"].as_u64().unwrap();
    assert_eq!(newest["size"], disk.len() as u64 + tarball);
    let aliases: Vec<&str> = newest["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(aliases.contains(&"webapp"), "{aliases:?}");

    let export = tempfile::tempdir().unwrap();
    let out = lxc(
        &ca,
        conf.path(),
        &[
            "image",
            "export",
            "vmcast:webapp",
            export.path().to_str().unwrap(),
        ],
    );
    assert_success(&out);
    assert_eq!(
        fs::read(export.path().join("webapp-1.4.0.qcow2")).unwrap(),
        disk
    );

    let flipped = flipped_site();
    let server = Server::start(flipped.path(), Some(&ca));
    let conf = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}", server.port);
    let add = [
        "remote",
        "add",
        "vmcast",
        &url,
        "--protocol=simplestreams",
        "--public",
    ];
    assert_success(&lxc(&ca, conf.path(), &add));
    let export = tempfile::tempdir().unwrap();
    let out = lxc(
        &ca,
        conf.path(),
        &[
            "image",
            "export",
            "vmcast:webapp",
            export.path().to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("Hash mismatch for {url}/{NEWEST}: ")),
        "{}",
        stderr(&out)
    );
}

/// virt-builder with its one source, the site's simplestreams tree, in
/// its own configuration and cache directories under `dir`.
fn virt_builder(dir: &Path, port: u16, args: &[&str]) -> Output {
    let repos = dir.join("config/virt-builder/repos.d");
    fs::create_dir_all(&repos).unwrap();
    fs::write(
        repos.join("vmcast.conf"),
        format!("[vmcast]\nuri=http://127.0.0.1:{port}/\nformat=simplestreams\nproxy=off\n"),
    )
    .unwrap();
    client(
        "virt-builder",
        args,
        &[
            ("XDG_CONFIG_HOME", &dir.join("config")),
            ("XDG_CONFIG_DIRS", Path::new("/nonexistent")),
            ("XDG_CACHE_HOME", &dir.join("cache")),
        ],
    )
}

const PRODUCT: &str = "com.example.downloads:vmcast:webapp:stable:amd64";

fn virt_builder_lists_the_newest_release_and_refuses_a_flipped_byte() {
    let server = Server::start(site(), None);
    let dir = tempfile::tempdir().unwrap();
    let out = virt_builder(
        dir.path(),
        server.port,
        &["--list", "--list-format", "json"],
    );
    assert_success(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let disk = fs::read(site().join(NEWEST)).unwrap();
    // Only the products with a disk1.img: dbnode has no qcow2.
    assert_eq!(
        list["templates"],
        serde_json::json!([{
            "os-version": PRODUCT,
            "full-name": "webapp-1.4.0",
            "arch": "amd64",
            "size": disk.len(),
            "aliases": ["webapp-1.4.0"],
            "hidden": false,
        }])
    );

    // With no appliance to run, a build stops after the download: past
    // the checksum with the real disk, at it with a flipped byte.
    let build = |dir: &Path, port: u16| {
        let out = dir.join("out.qcow2");
        let args = [
            PRODUCT,
            "--no-check-signature",
            "--format",
            "qcow2",
            "-o",
            out.to_str().unwrap(),
        ];
        virt_builder(dir, port, &args)
    };
    let out = build(dir.path(), server.port);
    assert!(
        !stderr(&out).contains("checksum") && stderr(&out).contains("libguestfs"),
        "{}",
        stderr(&out)
    );
    let flipped = flipped_site();
    let server = Server::start(flipped.path(), None);
    let dir = tempfile::tempdir().unwrap();
    let out = build(dir.path(), server.port);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "sha256 checksum of template did not match the expected checksum!\n  found \
             checksum: {}\n  expected checksum: {}\n",
            Sha256::of(&fs::read(flipped.path().join(NEWEST)).unwrap()),
            Sha256::of(&disk)
        )),
        "{}",
        stderr(&out)
    );
}

/// The example site built with the known-answer OpenPGP key, which adds
/// the clearsigned `streams/v1/index.sjson` and `images.sjson`; once per
/// test binary.
fn signed_site() -> &'static Path {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("simplestreams-signed-site");
        let key = fs::read_to_string(repo().join("tests/fixtures/known-answer/openpgp-secret.asc"))
            .unwrap();
        let result = vmcast(
            repo(),
            &["build", "--quiet", "--out", out.to_str().unwrap()],
            &[("VMCAST_OPENPGP_KEY", &key)],
        );
        assert_success(&result);
        out
    })
}

/// A copy of the signed site whose signed products file says 1.4.1 where
/// its signature covers 1.4.0.
fn tampered_signed_site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(signed_site(), dir.path());
    let path = dir.path().join("streams/v1/images.sjson");
    let text = fs::read_to_string(&path).unwrap();
    let changed = text.replace("\"label\": \"1.4.0\"", "\"label\": \"1.4.1\"");
    assert_ne!(changed, text);
    fs::write(&path, changed).unwrap();
    dir
}

fn sstream_query_checks_the_signed_tree_with_the_sites_key() {
    let tmp = tempfile::tempdir().unwrap();
    let home = crate::openpgp::gnupg_home(tmp.path());
    let keyring = crate::openpgp::keyring(&home, &signed_site().join("openpgp.asc"));
    let query = |site: &Path| {
        let index = site.join("streams/v1/index.sjson");
        client(
            "sstream-query",
            &[
                "--keyring",
                keyring.to_str().unwrap(),
                "--max=1",
                "--json",
                index.to_str().unwrap(),
                "os=webapp",
                "item_name=disk1.img",
            ],
            &[],
        )
    };
    let out = query(signed_site());
    assert_success(&out);
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let disk = fs::read(signed_site().join(NEWEST)).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["label"], "1.4.0");
    assert_eq!(items[0]["sha256"], Sha256::of(&disk).to_hex());

    let tampered = tampered_signed_site();
    let out = query(tampered.path());
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "subprocess.CalledProcessError: Command '['gpgv', '--keyring={}', '-']' returned \
             non-zero exit status 1.",
            keyring.display()
        )),
        "{}",
        stderr(&out)
    );
}

fn virt_builder_checks_the_signed_tree_with_gpgkey() {
    let list = |site: &Path| {
        let server = Server::start(site, None);
        let dir = tempfile::tempdir().unwrap();
        let repos = dir.path().join("config/virt-builder/repos.d");
        fs::create_dir_all(&repos).unwrap();
        fs::write(
            repos.join("vmcast.conf"),
            format!(
                "[vmcast]\nuri=http://127.0.0.1:{}/\nformat=simplestreams\ngpgkey=file://{}\n\
                 proxy=off\n",
                server.port,
                signed_site().join("openpgp.asc").display()
            ),
        )
        .unwrap();
        client(
            "virt-builder",
            &["--list", "--list-format", "json"],
            &[
                ("XDG_CONFIG_HOME", &dir.path().join("config")),
                ("XDG_CONFIG_DIRS", Path::new("/nonexistent")),
                ("XDG_CACHE_HOME", &dir.path().join("cache")),
            ],
        )
    };
    let out = list(signed_site());
    assert_success(&out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["templates"][0]["full-name"], "webapp-1.4.0");
    let out = list(tampered_signed_site().path());
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("GPG failure: could not verify digital signature of file"),
        "{}",
        stderr(&out)
    );
}

/// `verify` checks the clearsigned forms against the site's OpenPGP key
/// and the texts of the listed files, and names a tampered one.
fn verify_checks_the_signed_simplestreams_forms() {
    let key = repo().join("example-site/keys/TEST-ONLY-DO-NOT-USE.pub");
    let verify = |site: &Path| {
        vmcast(
            repo(),
            &[
                "verify",
                site.to_str().unwrap(),
                "--pubkey",
                key.to_str().unwrap(),
            ],
            &[],
        )
    };
    let out = verify(signed_site());
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "  ok   catalog   streams/v1/images.sjson: good signature by OpenPGP key \
             AB036385B86647715A6EC66557D18D1018D9B3B7 of the text of streams/v1/images.json\n"
        ),
        "{}",
        stdout(&out)
    );
    let tampered = tampered_signed_site();
    let out = verify(tampered.path());
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "error: streams/v1/images.sjson: no signature by OpenPGP key \
         AB036385B86647715A6EC66557D18D1018D9B3B7 matches its text\n"
    );
}
