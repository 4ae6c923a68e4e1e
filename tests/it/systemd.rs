//! `[catalogs] systemd` and `image_layout = "flat"`: each directory of
//! images with its `SHA256SUMS` and `SHA256SUMS.gpg`, the keyring and the
//! sysupdate transfer files, held by `verify` and read by systemd's own
//! tools (Debian 12's systemd-pull, Debian 13's systemd-sysupdate) from a
//! site served on 127.0.0.1, with the harness of `systemd_tools`.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::common::{Fixture, assert_success, copy_tree, stderr, stdout};
use crate::pull::Files;
use crate::systemd_tools::{host_systemd_listing, pull_raw, sysupdate};
use crate::verify::{kat_key, relist, resign};

tests! {
    each_directory_gets_its_signed_manifest_and_the_site_verifies needs GPGV;
    the_systemd_files_are_reproducible;
    one_appliance_takes_the_flat_layout_and_keeps_archived_versions_listed;
    the_flat_layout_refuses_a_name_without_its_version;
    the_flat_layout_refuses_two_releases_publishing_one_name;
    systemd_needs_an_openpgp_key;
    systemd_needs_the_images_served_from_the_site;
    previous_lists_old_versions_in_the_flat_directory_unread;
    a_site_moving_to_the_flat_layout_keeps_its_published_urls;
    verify_refuses_a_directory_manifest_that_disagrees_with_the_root_one;
    verify_refuses_a_transfer_that_finds_a_version_the_feeds_do_not_give;
    systemd_pull_takes_images_of_both_layouts_and_refuses_tampering
        needs SYSTEMD_PULL, UNSHARE, GPG;
    systemd_sysupdate_keeps_a_host_current_from_the_flat_site
        needs SYSUPDATE, UNSHARE, GPG;
}

fn built(fixture: &Fixture) {
    let out = fixture.build(&[]);
    assert_success(&out);
}

fn read(fixture: &Fixture, rel: &str) -> String {
    fs::read_to_string(fixture.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn verify(fixture: &Fixture, site: &str) -> std::process::Output {
    fixture.run(
        &["verify", site, "--pubkey", "../known-answer/kat.pub"],
        &[],
    )
}

fn each_directory_gets_its_signed_manifest_and_the_site_verifies() {
    let fixture = Fixture::new("systemd-flat");
    built(&fixture);
    for file in [
        "images/webapp/SHA256SUMS",
        "images/dbnode/SHA256SUMS",
        "sysupdate/webapp.transfer",
        "sysupdate/webapp/raw.transfer",
        "sysupdate/dbnode.transfer",
        "SHA256SUMS",
    ] {
        insta::assert_snapshot!(
            format!("systemd_flat_{}", file.replace(['/', '.'], "_")),
            read(&fixture, &format!("public/{file}"))
        );
    }
    // What gpg and sha256sum make of it, as systemd-pull runs them.
    for dir in ["images/webapp", "images/dbnode"] {
        let site = fixture.path("public");
        let gpgv = Command::new("gpgv")
            .arg("--keyring")
            .arg(site.join("import-pubring.gpg"))
            .arg(site.join(dir).join("SHA256SUMS.gpg"))
            .arg(site.join(dir).join("SHA256SUMS"))
            .output()
            .unwrap();
        assert_success(&gpgv);
        assert!(
            stderr(&gpgv).contains("Good signature from \"vmcast-gen test key"),
            "{}",
            stderr(&gpgv)
        );
    }
    let out = verify(&fixture, "public");
    assert_success(&out);
    for line in [
        "  ok   catalog   images/webapp/SHA256SUMS: 3 file(s), as the feeds give them\n",
        "  ok   catalog   images/webapp/SHA256SUMS.gpg: good signature of images/webapp/SHA256SUMS \
         by OpenPGP key AB036385B86647715A6EC66557D18D1018D9B3B7\n",
        "  ok   catalog   import-pubring.gpg: OpenPGP key AB036385B86647715A6EC66557D18D1018D9B3B7, \
         the key of openpgp.asc\n",
        "  ok   catalog   sysupdate/webapp/raw.transfer: finds 2 version(s), as the feeds give them\n",
        "  ok   catalog   sysupdate/webapp.transfer: finds 1 version(s), as the feeds give them\n",
    ] {
        assert!(stdout(&out).contains(line), "{line}\n{}", stdout(&out));
    }
    // The build summary names the catalog's files; the landing page shows
    // the transfer of each appliance, and where the keyring is.
    let page = read(&fixture, "public/index.html");
    assert!(page.contains("<code>/etc/sysupdate.d/50-webapp.transfer</code>"));
    assert!(page.contains("MatchPattern=webapp-@v.qcow2"), "{page}");
    assert!(
        page.contains("sysupdate&#x2f;webapp&#x2f;raw.transfer\">raw</a>"),
        "{page}"
    );
}

fn the_systemd_files_are_reproducible() {
    let fixture = Fixture::new("systemd-flat");
    built(&fixture);
    let first = crate::common::snapshot_tree(&fixture.path("public"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    built(&fixture);
    let second = crate::common::snapshot_tree(&fixture.path("public"));
    assert!(first.contains_key(Path::new("images/webapp/SHA256SUMS.gpg")));
    assert_eq!(first, second);
}

/// The flat layout for one appliance only; with one release per feed and
/// a dozen releases, the older ones move to an archive, and stay in the
/// flat directory's manifest and transfer while they are published.
/// `check` renders the same site.
fn one_appliance_takes_the_flat_layout_and_keeps_archived_versions_listed() {
    let fixture = Fixture::new("systemd-flat");
    own_releases(&fixture);
    let config = read(&fixture, "vmcast.toml")
        .replace("image_layout = \"flat\"\n", "feed_items = 1\n")
        .replace(
            "[catalogs]",
            "[appliances.webapp]\nimage_layout = \"flat\"\n\n[catalogs]",
        );
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
    for minor in 2..14 {
        fixture.add_webapp_release(&format!("1.{minor}.0"), &[minor; 512]);
    }
    let check = fixture.run(&["check"], &[]);
    assert_success(&check);
    built(&fixture);
    assert!(fixture.path("public/archive/1.xml").is_file());
    let feed = read(&fixture, "public/feeds/webapp.xml");
    assert!(!feed.contains("vmcast:webapp:1.0.0"), "1.0.0 is archived");
    let sums = read(&fixture, "public/images/webapp/SHA256SUMS");
    assert_eq!(sums.lines().count(), 15, "{sums}");
    assert!(sums.contains("  webapp-1.0.0.raw.xz\n"), "{sums}");
    assert!(
        fixture
            .path("public/images/dbnode/2.0.0/SHA256SUMS")
            .is_file()
    );
    assert!(!fixture.path("public/sysupdate/dbnode.transfer").exists());
    let out = verify(&fixture, "public");
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "  ok   catalog   sysupdate/webapp.transfer: finds 14 version(s), as the feeds give them\n"
        ),
        "{}",
        stdout(&out)
    );
}

fn assert_fails(fixture: &Fixture, expected: &str) {
    let out = fixture.build(&[]);
    assert_eq!(stderr(&out), expected);
    assert_eq!(out.status.code(), Some(1));
    assert!(!fixture.path("public").exists());
}

fn the_flat_layout_refuses_a_name_without_its_version() {
    assert_fails(
        &Fixture::new("flat-name-without-version"),
        "error: releases/webapp/1.0.0/webapp.raw: its name `webapp.raw` does not hold the \
         release's version `1.0.0`: with image_layout = \"flat\" every version of webapp lies in \
         images/webapp/, and each file name must hold its version (as `webapp-1.0.0.raw` does) \
         so that no release takes another's name and systemd-sysupdate can tell the versions \
         apart\n",
    );
}

fn the_flat_layout_refuses_two_releases_publishing_one_name() {
    assert_fails(
        &Fixture::new("flat-duplicate-name"),
        "error: releases/webapp/1.4.0/webapp-1.4.0.raw: is published as \
         images/webapp/webapp-1.4.0.raw, and so is releases/webapp/1.4/webapp-1.4.0.raw: two \
         releases cannot publish one file; rename one\n",
    );
}

fn systemd_needs_an_openpgp_key() {
    let fixture = Fixture::new("systemd-without-openpgp-key");
    let message = "vmcast.toml:9:11: [catalogs] systemd needs an OpenPGP key to sign each \
         directory's SHA256SUMS.gpg, which systemd-pull and systemd-sysupdate check: set \
         [catalogs] openpgp_key (make one with `vmcast-gen keygen --openpgp`) or \
         VMCAST_OPENPGP_KEY";
    assert_fails(&fixture, &format!("error: {message}\n"));
    let out = fixture.run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(message), "{}", stderr(&out));
}

fn systemd_needs_the_images_served_from_the_site() {
    assert_fails(
        &Fixture::new("systemd-download-elsewhere"),
        "error: vmcast.toml:4:21: [catalogs] systemd needs the images served from the site \
         (https://downloads.example.com/site/images/): systemd-pull and systemd-sysupdate read \
         SHA256SUMS and SHA256SUMS.gpg from the image's own directory, and the build writes \
         those only in the site; images served from download_base_url \
         https://cdn.example.net/images/ have none beside them\n",
    );
}

/// The releases of systemd-flat, copied so that the test may change them.
fn own_releases(fixture: &Fixture) {
    copy_tree(
        &fixture.path("../virt-builder/releases"),
        &fixture.path("releases"),
    );
    let config =
        read(fixture, "vmcast.toml").replace("releases_dir = \"../virt-builder/releases\"\n", "");
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
}

/// An SPDX SBOM of the image `name` holding `bytes`.
fn sbom(name: &str, bytes: &[u8]) -> String {
    use sha2::Digest;
    let sha256: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://downloads.example.com/site/sbom/{name}"),
        "creationInfo": {"created": "2026-06-01T00:00:00Z", "creators": ["Tool: test"]},
        "packages": [{
            "name": name,
            "SPDXID": "SPDXRef-Image",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}],
        }],
    })
    .to_string()
}

/// Removes the images of the releases here, as on a fresh CI runner.
fn drop_local_images(fixture: &Fixture) {
    for entry in walkdir::WalkDir::new(fixture.path("releases")) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() && entry.file_name() != "release.toml" {
            fs::remove_file(entry.path()).unwrap();
        }
    }
}

/// The files `publish` would upload over the published site: those of the
/// new output, old images left where they are.
fn publish_over(fixture: &Fixture) {
    copy_tree(&fixture.path("public"), &fixture.path("published"));
}

fn previous_lists_old_versions_in_the_flat_directory_unread() {
    let fixture = Fixture::new("systemd-flat");
    own_releases(&fixture);
    built(&fixture);
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    drop_local_images(&fixture);
    fixture.add_webapp_release("1.2.0", &[7u8; 4096]);
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    // The new directory manifest lists every version, the old ones with
    // the digests published before; only the new image is in the output.
    let old = read(&fixture, "published/images/webapp/SHA256SUMS");
    let new = read(&fixture, "public/images/webapp/SHA256SUMS");
    for line in old.lines() {
        assert!(new.contains(line), "{line} missing from\n{new}");
    }
    assert!(new.contains("  webapp-1.2.0.raw\n"), "{new}");
    let mut present: Vec<String> = fs::read_dir(fixture.path("public/images/webapp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    present.sort();
    // Its control file lies beside it, left out of the manifest.
    assert!(!new.contains(".zsync"), "{new}");
    assert_eq!(
        present,
        [
            "SHA256SUMS",
            "SHA256SUMS.gpg",
            "webapp-1.2.0.raw",
            "webapp-1.2.0.raw.zsync"
        ]
    );
    let transfer = read(&fixture, "public/sysupdate/webapp.transfer");
    assert!(
        transfer.contains("\nMatchPattern=webapp-@v.raw\n"),
        "{transfer}"
    );
    publish_over(&fixture);
    let out = verify(&fixture, "published");
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "  ok   catalog   sysupdate/webapp.transfer: finds 3 version(s), as the feeds give them\n"
        ),
        "{}",
        stdout(&out)
    );
}

fn a_site_moving_to_the_flat_layout_keeps_its_published_urls() {
    let fixture = Fixture::new("systemd-flat");
    own_releases(&fixture);
    let versioned = read(&fixture, "vmcast.toml").replace("image_layout = \"flat\"\n", "");
    fs::write(fixture.path("vmcast.toml"), &versioned).unwrap();
    built(&fixture);
    // Versioned: a manifest in each release's directory, no transfer.
    let sums = read(&fixture, "public/images/webapp/1.1.0/SHA256SUMS");
    assert!(sums.ends_with("  webapp-1.1.0.raw.gz\n"), "{sums}");
    assert!(!fixture.path("public/sysupdate").exists());
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    drop_local_images(&fixture);
    fs::write(
        fixture.path("vmcast.toml"),
        format!("image_layout = \"flat\"\n{versioned}"),
    )
    .unwrap();
    fixture.add_webapp_release("1.2.0", &[7u8; 4096]);
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    let root = read(&fixture, "public/SHA256SUMS");
    for path in [
        "images/webapp/1.0.0/webapp-1.0.0.raw.xz",
        "images/webapp/1.0.0/SHA256SUMS",
        "images/webapp/1.1.0/SHA256SUMS.gpg",
        "images/webapp/webapp-1.2.0.raw",
        "images/webapp/SHA256SUMS",
    ] {
        assert!(root.contains(&format!("  {path}\n")), "{path}\n{root}");
    }
    // The flat directory holds the new version only; the transfer finds it.
    let flat = read(&fixture, "public/images/webapp/SHA256SUMS");
    assert_eq!(flat.lines().count(), 1, "{flat}");
    publish_over(&fixture);
    let out = verify(&fixture, "published");
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "  ok   catalog   sysupdate/webapp.transfer: finds 1 version(s), as the feeds give them\n"
        ),
        "{}",
        stdout(&out)
    );
}

/// What an attacker holding both of the publisher's keys (or a
/// compromised build) publishes: `file` changed, its OpenPGP signature
/// (`SHA256SUMS.gpg` beside a manifest) made again, listed in
/// `SHA256SUMS`, and that signed again with minisign and OpenPGP. Only
/// its disagreement with the signed feeds is left to find.
fn forge_with_both_keys(fixture: &Fixture, file: &str, from: &str, to: &str) {
    let path = fixture.path(&format!("public/{file}"));
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} is not in {file}");
    fs::write(&path, text.replace(from, to)).unwrap();
    let key_path = fixture.path("../known-answer/openpgp-secret.asc");
    let key =
        vmcast_gen::openpgp::LockedKey::parse(&key_path, &fs::read_to_string(&key_path).unwrap())
            .unwrap()
            .unlock(&mut || panic!("not encrypted"))
            .unwrap();
    let time = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    if let Some(dir) = file.strip_suffix("/SHA256SUMS") {
        let sig = key.detach_sign(&fs::read(&path).unwrap(), time).unwrap();
        fs::write(fixture.path(&format!("public/{dir}/SHA256SUMS.gpg")), sig).unwrap();
        relist(fixture, "public", &format!("{dir}/SHA256SUMS.gpg"));
    }
    relist(fixture, "public", file);
    resign(fixture, "public/SHA256SUMS", &kat_key());
    let sums = read(fixture, "public/SHA256SUMS");
    fs::write(
        fixture.path("public/SHA256SUMS.asc"),
        key.clearsign(&sums, time).unwrap(),
    )
    .unwrap();
}

/// The FAIL lines of a verify run that failed.
fn failures(out: &std::process::Output) -> Vec<String> {
    assert_eq!(out.status.code(), Some(1), "{}", stdout(out));
    stdout(out)
        .lines()
        .filter(|l| l.starts_with("  FAIL"))
        .map(str::to_owned)
        .collect()
}

/// A directory's manifest that lists other bytes for an image, signed
/// with both keys: systemd-pull would take it, `verify` holds it against
/// the signed feeds.
fn verify_refuses_a_directory_manifest_that_disagrees_with_the_root_one() {
    let fixture = Fixture::new("systemd-flat");
    built(&fixture);
    let good = "f7ddd867f50eeb800459d049ce1e15314d73aeef1232b598f27197747f52bd74";
    let evil = "0".repeat(64);
    forge_with_both_keys(&fixture, "images/webapp/SHA256SUMS", good, &evil);
    assert_eq!(
        failures(&verify(&fixture, "public")),
        [
            format!(
                "  FAIL catalog   images/webapp/SHA256SUMS: lacks `{good}  webapp-1.1.0.qcow2`, \
                 which the feeds give"
            ),
            format!(
                "  FAIL catalog   images/webapp/SHA256SUMS: has `{evil}  webapp-1.1.0.qcow2`, \
                 which the feeds do not give"
            ),
        ]
    );
}

/// Transfer files whose patterns sysupdate would read otherwise than the
/// build writes them, signed with both keys: one reads
/// `webapp-1.0.0.raw.xz` as version `1.0`, which no release is; one hides
/// the same with an escape sysupdate unquotes (`\x61` is `a`).
fn verify_refuses_a_transfer_that_finds_a_version_the_feeds_do_not_give() {
    for forged in [
        "MatchPattern=webapp-@v.0.raw.xz",
        "MatchPattern=webapp-@v.0.r\\x61w.xz",
    ] {
        let fixture = Fixture::new("systemd-flat");
        built(&fixture);
        let file = "sysupdate/webapp/raw.transfer";
        let line = "MatchPattern=webapp-@v.raw.gz";
        forge_with_both_keys(&fixture, file, line, &format!("{line}\n{forged}"));
        assert_eq!(
            failures(&verify(&fixture, "public")),
            [format!(
                "  FAIL catalog   {file}: has `{forged}`, which the feeds do not give"
            )]
        );
    }
}

/// A fixture built to be served by `server`: its base URL is the server's.
fn served(fixture: &Fixture, server: &Files) {
    let config =
        read(fixture, "vmcast.toml").replace("https://downloads.example.com/site/", &server.url());
    fs::write(fixture.path("vmcast.toml"), config).unwrap();
    built(fixture);
}

fn systemd_pull_takes_images_of_both_layouts_and_refuses_tampering() {
    let before = host_systemd_listing();
    let image = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/virt-builder/releases/dbnode/2.0.0/dbnode-2.0.0.raw"),
    )
    .unwrap();
    for (layout, dir) in [
        ("flat", "images/dbnode"),
        ("versioned", "images/dbnode/2.0.0"),
    ] {
        let fixture = Fixture::new("systemd-flat");
        let server = Files::start(fixture.path("public"));
        if layout == "versioned" {
            let config = read(&fixture, "vmcast.toml").replace("image_layout = \"flat\"\n", "");
            fs::write(fixture.path("vmcast.toml"), config).unwrap();
        }
        served(&fixture, &server);
        let keyring = fixture.path("public/import-pubring.gpg");
        let url = format!("{}{dir}/dbnode-2.0.0.raw", server.url());
        let pull = |name: &str| {
            let root = fixture.path(name);
            fs::create_dir(&root).unwrap();
            (pull_raw(&keyring, &url, &root, "signature"), root)
        };
        let (out, root) = pull("accepted");
        assert_success(&out);
        assert!(
            stderr(&out).contains("Signature verification succeeded"),
            "{layout}: {}",
            stderr(&out)
        );
        assert_eq!(
            fs::read(root.join("appliance.raw")).unwrap(),
            image,
            "{layout}"
        );

        // One flipped byte in the image.
        let served_image = fixture.path(&format!("public/{dir}/dbnode-2.0.0.raw"));
        let mut bytes = image.clone();
        bytes[100] ^= 1;
        fs::write(&served_image, &bytes).unwrap();
        let (out, root) = pull("flipped");
        assert!(!out.status.success(), "{layout}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("did not check out"),
            "{layout}: {}",
            stderr(&out)
        );
        assert!(!root.join("appliance.raw").exists());

        // The manifest changed to match: its signature no longer does.
        let sums = fixture.path(&format!("public/{dir}/SHA256SUMS"));
        let text = fs::read_to_string(&sums).unwrap().replace(
            &vmcast_gen::model::Sha256::of(&image).to_string(),
            &vmcast_gen::model::Sha256::of(&bytes).to_string(),
        );
        fs::write(&sums, text).unwrap();
        let (out, root) = pull("forged");
        assert!(!out.status.success(), "{layout}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("BAD signature"),
            "{layout}: {}",
            stderr(&out)
        );
        assert!(!root.join("appliance.raw").exists());
    }
    assert_eq!(
        before,
        host_systemd_listing(),
        "the host's systemd files changed"
    );
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn systemd_sysupdate_keeps_a_host_current_from_the_flat_site() {
    let before = host_systemd_listing();
    let fixture = Fixture::new("systemd-flat");
    own_releases(&fixture);
    let server = Files::start(fixture.path("public"));
    served(&fixture, &server);
    let keyring = fixture.path("public/import-pubring.gpg");
    // A host that installs the site's transfer file for raw images, as the
    // landing page says.
    let host = tempfile::tempdir().unwrap();
    let root = host.path();
    fs::create_dir_all(root.join("etc/sysupdate.d")).unwrap();
    fs::copy(
        fixture.path("public/sysupdate/webapp/raw.transfer"),
        root.join("etc/sysupdate.d/50-webapp.transfer"),
    )
    .unwrap();
    let run = |args: &[&str]| sysupdate(root, &keyring, args);

    let list = run(&["list"]);
    assert_success(&list);
    let versions: Vec<String> = stdout(&list)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("1.")))
        .map(str::to_owned)
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"], "{}", stdout(&list));
    let check = run(&["check-new"]);
    assert_success(&check);
    assert_eq!(stdout(&check).trim(), "1.1.0");
    assert_success(&run(&["update"]));
    let machines = root.join("var/lib/machines");
    assert_eq!(
        fs::read(machines.join("webapp~1.1.0.raw")).unwrap(),
        gunzip(&fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw.gz"))
    );
    assert_eq!(
        fs::read_link(machines.join("webapp.raw")).unwrap(),
        Path::new("webapp~1.1.0.raw")
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r == "GET /images/webapp/SHA256SUMS.gpg"),
        "{:?}",
        server.requests()
    );

    // A new release, its image tampered with after the build: nothing is
    // installed and the link stays. Its SBOM lies beside it in the flat
    // directory, where sysupdate 257's pattern `webapp-@v.raw` would match
    // `webapp-1.2.0.raw.spdx.json` too: the directory's manifest lists
    // images only.
    fixture.add_webapp_release("1.2.0", &[7u8; 4096]);
    fs::write(
        fixture.path("releases/webapp/1.2.0/webapp-1.2.0.raw.spdx.json"),
        sbom("webapp-1.2.0.raw", &[7u8; 4096]),
    )
    .unwrap();
    let out = fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", "1790086400")]);
    assert_success(&out);
    let check = run(&["check-new"]);
    assert_eq!(stdout(&check).trim(), "1.2.0");
    assert!(
        fixture
            .path("public/images/webapp/webapp-1.2.0.raw.spdx.json")
            .is_file()
    );
    let manifest = read(&fixture, "public/images/webapp/SHA256SUMS");
    assert!(!manifest.contains(".spdx.json"), "{manifest}");
    let new_image = fixture.path("public/images/webapp/webapp-1.2.0.raw");
    fs::write(&new_image, [8u8; 4096]).unwrap();
    let update = run(&["update"]);
    assert!(!update.status.success(), "{}", stderr(&update));
    assert!(!machines.join("webapp~1.2.0.raw").exists());
    assert_eq!(
        fs::read_link(machines.join("webapp.raw")).unwrap(),
        Path::new("webapp~1.1.0.raw")
    );

    // As built, it installs, and the link moves.
    fs::write(&new_image, [7u8; 4096]).unwrap();
    assert_success(&run(&["update"]));
    assert_eq!(
        fs::read(machines.join("webapp~1.2.0.raw")).unwrap(),
        [7u8; 4096]
    );
    assert_eq!(
        fs::read_link(machines.join("webapp.raw")).unwrap(),
        Path::new("webapp~1.2.0.raw")
    );
    assert_eq!(
        before,
        host_systemd_listing(),
        "the host's systemd files changed"
    );
}
