//! SBOMs and provenance: published beside their images, linked from the
//! feed, listed in SHA256SUMS, and checked by `build`, `verify` and `pull`;
//! then the example site's files as a build publishes them, checked with
//! validators we did not write (pyspdxtools, cyclonedx-python-lib, in-toto).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::assert_build_fails;
use crate::common::{Fixture, assert_success, copy_tree, stderr, stdout, vmcast};

tests! {
    provenance_about_other_bytes_is_refused_naming_both_digests;
    provenance_signed_by_an_unlisted_key_is_refused;
    provenance_altered_after_signing_is_refused;
    malformed_sbom_is_refused_at_its_line;
    sbom_of_another_spdx_version_is_refused;
    sbom_whose_name_says_another_format_is_refused;
    a_file_named_after_a_stem_two_images_share_is_refused;
    a_supply_chain_file_linking_out_of_the_tree_is_refused;
    a_named_file_that_does_not_exist_is_refused_at_its_line;
    check_reads_every_supply_chain_file;
    supply_chain_files_are_published_linked_and_listed;
    signed_provenance_without_keys_is_published_as_unverified;
    build_on_a_previous_site_carries_the_supply_chain_facts;
    a_published_sbom_missing_here_is_warned_about;
    verify_reads_every_supply_chain_file;
    verify_catches_a_tampered_sbom;
    pyspdxtools_validates_the_published_spdx_sbom needs PYSPDXTOOLS;
    cyclonedx_python_lib_validates_the_published_cyclonedx_sbom needs CYCLONEDX;
    in_toto_verifies_the_published_provenance_envelope needs IN_TOTO;
}

const RELEASE: &str = "releases/webapp/1.0.0";
const PUBLISHED: &str = "public/images/webapp/1.0.0";
/// What a build of the `supply-chain` fixture warns of, failed or not.
const STRAY: &str = "warning: releases/webapp/1.0.0/stray.spdx.json: not published: its name \
                     is no image's name with a supply-chain suffix; name it in release.toml \
                     (`sbom` or `provenance`) to publish it\n";

/// The supply-chain elements of a feed, one per line.
fn supply_lines(feed: &str) -> Vec<String> {
    feed.lines()
        .filter(|l| l.contains("<vmcast:sbom ") || l.contains("<vmcast:provenance "))
        .map(|l| l.trim().to_owned())
        .collect()
}

// ---- build refuses a file that is not what it claims ----

fn provenance_about_other_bytes_is_refused_naming_both_digests() {
    assert_build_fails(
        &Fixture::new("provenance-wrong-subject"),
        "error: releases/webapp/1.0.0/webapp-1.0.0.raw.intoto.jsonl: the provenance is about \
         other bytes: webapp-1.0.0.raw has SHA-256 \
         0f6f53db2946d6a301113b0e498719750514d2bee3e0f398bc33a5d6d508fed2, but the subjects are: \
         webapp-1.0.0.raw db45811d226b12d0521bc4af42bb9b0167446da3f240e3c704475ba1cecb3288. \
         Attach the provenance of this build of webapp-1.0.0.raw\n",
    );
}

fn provenance_signed_by_an_unlisted_key_is_refused() {
    assert_build_fails(
        &Fixture::new("provenance-unlisted-key"),
        "error: releases/webapp/1.0.0/webapp-1.0.0.raw.intoto.jsonl:1:576: the DSSE envelope: it \
         is signed by key id 2cb41a628e662624070d734b916ed0cd5d0f3d9a37ab5c095e1d28ec03b0951b, \
         not by a key in provenance_keys (key id \
         6157ad68a47f115753b600977a9bc5b3db32ef2cd144f0d6f862830337b2c6d7); add the builder's \
         public key to provenance_keys in vmcast.toml if you trust it\n",
    );
}

fn provenance_altered_after_signing_is_refused() {
    let fixture = Fixture::new("supply-chain");
    let path = fixture.path(&format!("{RELEASE}/webapp-1.0.0.raw.intoto.jsonl"));
    let text = fs::read_to_string(&path).unwrap();
    // The envelope's payload, base64: change one character of it.
    let at = text.find("\"payload\":\"").unwrap() + 40;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    fs::write(&path, bytes).unwrap();
    let out = fixture.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let err = err.strip_prefix(STRAY).unwrap_or_else(|| panic!("{err}"));
    assert!(
        err.starts_with("error: releases/webapp/1.0.0/webapp-1.0.0.raw.intoto.jsonl:1:")
            && err.contains(
                "the DSSE envelope: its signature by key id \
                 ccbc063472f65797718254ff7d55d7916d6762047d595599dd845e9ce7bf4f85, a listed key, \
                 does not match the envelope: it was altered after signing\n"
            ),
        "{err}"
    );
}

fn malformed_sbom_is_refused_at_its_line() {
    assert_build_fails(
        &Fixture::new("sbom-malformed"),
        "error: releases/webapp/1.0.0/webapp-1.0.0.raw.spdx.json:4:1: not valid JSON: trailing \
         comma\n",
    );
}

fn sbom_of_another_spdx_version_is_refused() {
    assert_build_fails(
        &Fixture::new("sbom-wrong-version"),
        "error: releases/webapp/1.0.0/webapp-1.0.0.raw.spdx.json:2:3: spdxVersion is \
         \"SPDX-2.2\"; only SPDX-2.3 JSON is published (convert it, e.g. with pyspdxtools, or \
         have the SBOM tool write SPDX 2.3)\n",
    );
}

fn sbom_whose_name_says_another_format_is_refused() {
    let fixture = Fixture::new("supply-chain");
    let release = fixture.path(RELEASE);
    fs::rename(
        release.join("webapp-1.0.0.spdx.json"),
        release.join("webapp-1.0.0.cdx.json"),
    )
    .unwrap();
    assert_build_fails(
        &fixture,
        &format!(
            "{STRAY}error: releases/webapp/1.0.0/webapp-1.0.0.cdx.json: its name says CycloneDX \
             but its content is SPDX 2.3; rename it\n"
        ),
    );
}

fn a_file_named_after_a_stem_two_images_share_is_refused() {
    let fixture = Fixture::new("supply-chain");
    let release = fixture.path(RELEASE);
    fs::copy(
        release.join("webapp-1.0.0.raw"),
        release.join("webapp-1.0.0.img"),
    )
    .unwrap();
    assert_build_fails(
        &fixture,
        "error: releases/webapp/1.0.0/webapp-1.0.0.spdx.json: could be about any of \
         webapp-1.0.0.img, webapp-1.0.0.raw; rename it after one image \
         (webapp-1.0.0.img.spdx.json), or name it in release.toml (`sbom` for the whole release, \
         or in [image.\"NAME\"])\n",
    );
}

fn a_supply_chain_file_linking_out_of_the_tree_is_refused() {
    let fixture = Fixture::new("supply-chain");
    std::os::unix::fs::symlink(
        fixture.path("../known-answer/kat.key"),
        fixture.path(&format!("{RELEASE}/webapp-1.0.0.raw.spdx.json")),
    )
    .unwrap();
    // The scan's warning about the fixture's stray SBOM comes first, as a
    // failed build shows what it warned of.
    assert_build_fails(
        &fixture,
        "warning: releases/webapp/1.0.0/stray.spdx.json: not published: its name is no image's \
         name with a supply-chain suffix; name it in release.toml (`sbom` or `provenance`) to \
         publish it\n\
         error: releases/webapp/1.0.0/webapp-1.0.0.raw.spdx.json: is a symbolic link to a file \
         outside releases; supply-chain files must stay inside their tree\n",
    );
}

fn a_named_file_that_does_not_exist_is_refused_at_its_line() {
    let fixture = Fixture::new("supply-chain");
    fs::remove_file(fixture.path(&format!("{RELEASE}/release.cdx.json"))).unwrap();
    assert_build_fails(
        &fixture,
        "error: releases/webapp/1.0.0/release.toml:8:8: sbom file \
         releases/webapp/1.0.0/release.cdx.json does not exist\n",
    );
}

fn check_reads_every_supply_chain_file() {
    let out = Fixture::new("supply-chain").run(&["check"], &[]);
    assert_success(&out);
    assert_eq!(stdout(&out), "checked 1 release(s): no problems\n");
    for (fixture, expected) in [
        (
            "provenance-unlisted-key",
            "error: releases/webapp/1.0.0/webapp-1.0.0.raw.intoto.jsonl:1:576: the DSSE \
             envelope: it is signed by key id",
        ),
        (
            "sbom-malformed",
            "error: releases/webapp/1.0.0/webapp-1.0.0.raw.spdx.json:4:1: not valid JSON",
        ),
    ] {
        let out = Fixture::new(fixture).run(&["check"], &[]);
        assert_eq!(out.status.code(), Some(1), "{fixture}");
        assert!(stderr(&out).starts_with(expected), "{}", stderr(&out));
        assert_eq!(stdout(&out), "checked 1 release(s): 1 problem(s)\n");
    }
    // Whether provenance is about its image needs the image's digest:
    // that is for build.
    let out = Fixture::new("provenance-wrong-subject").run(&["check"], &[]);
    assert_success(&out);
}

// ---- build publishes them ----

fn supply_chain_files_are_published_linked_and_listed() {
    let fixture = Fixture::new("supply-chain");
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(stderr(&out), STRAY);
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    insta::assert_snapshot!("supply_feed_elements", supply_lines(&feed).join("\n"));
    insta::assert_snapshot!(
        "supply_sha256sums",
        fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap()
    );
    // Published byte for byte, beside the image.
    for name in [
        "release.cdx.json",
        "release.intoto.jsonl",
        "webapp-1.0.0.raw.intoto.jsonl",
        "webapp-1.0.0.spdx.json",
    ] {
        assert_eq!(
            fs::read(fixture.path(&format!("{PUBLISHED}/{name}"))).unwrap(),
            fs::read(fixture.path(&format!("{RELEASE}/{name}"))).unwrap(),
            "{name}"
        );
    }
    assert!(
        !fixture
            .path(&format!("{PUBLISHED}/stray.spdx.json"))
            .exists()
    );
    let page = fs::read_to_string(fixture.path("public/index.html")).unwrap();
    for shown in [
        ">SBOM (SPDX 2.3)</a></small>",
        ">Provenance (in-toto)</a>, <span class=\"signed\" title=\"key id \
         ccbc063472f65797718254ff7d55d7916d6762047d595599dd845e9ce7bf4f85\">signed by a listed \
         builder key</span>",
        "<p class=\"supply\">For the whole release:",
        ">Provenance (in-toto)</a>, <span class=\"unsigned\">unsigned</span>",
    ] {
        assert!(page.contains(shown), "{shown}\n{page}");
    }
}

fn signed_provenance_without_keys_is_published_as_unverified() {
    let fixture = Fixture::new("provenance-signed-no-keys");
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(
        stderr(&out),
        "warning: releases/webapp/1.0.0/webapp-1.0.0.raw.intoto.jsonl: signed, but vmcast.toml \
         lists no provenance_keys to verify it with: published as signed but unverified; list \
         the builder's public key in provenance_keys\n"
    );
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    let lines = supply_lines(&feed);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].ends_with("image=\"webapp-1.0.0.raw\" signature=\"unverified\"/>"),
        "{}",
        lines[0]
    );
}

fn build_on_a_previous_site_carries_the_supply_chain_facts() {
    let fixture = Fixture::new("supply-chain");
    assert_success(&fixture.build(&[]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    // A fresh runner: the image is gone, and so is what was beside it.
    for entry in fs::read_dir(fixture.path(RELEASE)).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "release.toml" {
            fs::remove_file(path).unwrap();
        }
    }
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    let before = fs::read_to_string(fixture.path("published/feed.xml")).unwrap();
    let after = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert_eq!(supply_lines(&after), supply_lines(&before));
    assert_eq!(supply_lines(&after).len(), 4);
    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    let old_sums = fs::read_to_string(fixture.path("published/SHA256SUMS")).unwrap();
    for line in old_sums.lines().filter(|l| l.contains("images/")) {
        assert!(sums.contains(line), "{line} missing from\n{sums}");
    }
}

fn a_published_sbom_missing_here_is_warned_about() {
    let fixture = Fixture::new("supply-chain");
    assert_success(&fixture.build(&[]));
    copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    // The image is here, its stem-named SBOM is not.
    fs::remove_file(fixture.path(&format!("{RELEASE}/webapp-1.0.0.spdx.json"))).unwrap();
    let out = fixture.run(
        &["build", "--previous", "published"],
        &[("SOURCE_DATE_EPOCH", "1790086400")],
    );
    assert_success(&out);
    assert!(
        stderr(&out).contains(
            "warning: releases/webapp/1.0.0/release.toml: the previous site also has \
             webapp-1.0.0.spdx.json, not here; it leaves the feed\n"
        ),
        "{}",
        stderr(&out)
    );
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert_eq!(supply_lines(&feed).len(), 3);
}

// ---- verify ----

fn verify(fixture: &Fixture) -> std::process::Output {
    fixture.run(
        &["verify", "public", "--pubkey", "../known-answer/kat.pub"],
        &[],
    )
}

fn verify_reads_every_supply_chain_file() {
    let fixture = Fixture::new("supply-chain");
    assert_success(&fixture.build(&[]));
    let out = verify(&fixture);
    assert_success(&out);
    let report = stdout(&out);
    let checks: Vec<&str> = report.lines().filter(|l| l.contains(" supply ")).collect();
    assert_eq!(
        checks,
        [
            "  ok   supply    images/webapp/1.0.0/release.cdx.json: 182 bytes, SHA-256 matches, \
             cyclonedx-1.5",
            "  ok   supply    images/webapp/1.0.0/release.intoto.jsonl: 405 bytes, SHA-256 \
             matches, in-toto, about webapp-1.0.0.raw",
            "  ok   supply    images/webapp/1.0.0/webapp-1.0.0.raw.intoto.jsonl: 1175 bytes, \
             SHA-256 matches, in-toto, about webapp-1.0.0.raw",
            "  ok   supply    images/webapp/1.0.0/webapp-1.0.0.spdx.json: 662 bytes, SHA-256 \
             matches, spdx-2.3",
        ]
    );
}

fn verify_catches_a_tampered_sbom() {
    let fixture = Fixture::new("supply-chain");
    assert_success(&fixture.build(&[]));
    let path = fixture.path(&format!("{PUBLISHED}/webapp-1.0.0.spdx.json"));
    let text = fs::read_to_string(&path).unwrap();
    // Same length, another package name: only the digest tells.
    fs::write(
        &path,
        text.replace("\"name\": \"webapp", "\"name\": \"evilap"),
    )
    .unwrap();
    let out = verify(&fixture);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: images/webapp/1.0.0/webapp-1.0.0.spdx.json: 662 bytes with SHA-256 {}, where \
             the feed says 662 bytes with SHA-256 \
             5fa218dbc82c2633841e48c233008ec77ad7c2932f741ff2f285a12212c90ea3\n",
            vmcast_gen::model::Sha256::of(&fs::read(&path).unwrap())
        )
    );
}

// ---- the example site's files, checked by independent validators ----

/// The example site, built once per test into a temporary directory: its
/// published webapp 1.4.0 directory.
fn example_release(tmp: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tmp.join("public");
    let out = vmcast(repo, &["build", "--out", out_dir.to_str().unwrap()], &[]);
    assert_success(&out);
    out_dir.join("images/webapp/1.4.0")
}

fn python(dir: &Path, script: &str, args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn pyspdxtools_validates_the_published_spdx_sbom() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example_release(tmp.path());
    let out = Command::new("pyspdxtools")
        .args(["-i", "webapp-1.4.0.qcow2.spdx.json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_success(&out);
    // And it does reject what it must: a package without a download location.
    let path = dir.join("webapp-1.4.0.qcow2.spdx.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replace(
            "\"downloadLocation\": \"NOASSERTION\"",
            "\"downloadLocation\": \"nowhere\"",
        ),
    )
    .unwrap();
    let out = Command::new("pyspdxtools")
        .args(["-i", "webapp-1.4.0.qcow2.spdx.json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "pyspdxtools accepted a bad SBOM");
}

const CYCLONEDX: &str = "
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if error is not None:
    sys.exit(f'invalid: {error}')
";

fn cyclonedx_python_lib_validates_the_published_cyclonedx_sbom() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example_release(tmp.path());
    assert_success(&python(&dir, CYCLONEDX, &["webapp-1.4.0.cdx.json"]));
    let path = dir.join("webapp-1.4.0.cdx.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"SHA-256\"", "\"SHA256\"")).unwrap();
    let out = python(&dir, CYCLONEDX, &["webapp-1.4.0.cdx.json"]);
    assert!(!out.status.success(), "the validator accepted a bad BOM");
    assert!(
        stderr(&out).contains("'SHA256' is not one of"),
        "{}",
        stderr(&out)
    );
}

/// in-toto's own DSSE verification (securesystemslib underneath), with the
/// builder's ed25519 public key under the key id vmcast-gen gives it, then
/// the Statement's subject against the published image.
const IN_TOTO: &str = "
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from in_toto.models.metadata import Envelope
from securesystemslib.signer import SSlibKey
envelope_file, key_file, image = sys.argv[1:]
public = load_pem_public_key(open(key_file, 'rb').read())
keyid = hashlib.sha256(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()
key = SSlibKey.from_crypto(public, keyid=keyid)
line = open(envelope_file).readline()
envelope = Envelope.from_dict(json.loads(line))
verified = envelope.verify([key], 1)
assert list(verified) == [keyid], verified
statement = json.loads(base64.b64decode(json.loads(line)['payload']))
digest = hashlib.sha256(open(image, 'rb').read()).hexdigest()
assert any(s['digest'].get('sha256') == digest for s in statement['subject']), statement['subject']
print('verified', keyid)
";

fn in_toto_verifies_the_published_provenance_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example_release(tmp.path());
    let key = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("example-site/keys/TEST-ONLY-DO-NOT-USE.builder.pub.pem");
    let args = [
        "webapp-1.4.0.qcow2.intoto.jsonl",
        key.to_str().unwrap(),
        "webapp-1.4.0.qcow2",
    ];
    let out = python(&dir, IN_TOTO, &args);
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "verified 4e19918e816c3f9a680c5141962bfe5896de21afe61a8958c0af15e922349da3\n"
    );
    // A signature over other bytes fails in-toto's check too.
    let path = dir.join("webapp-1.4.0.qcow2.intoto.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    let at = text.find("\"payload\":\"").unwrap() + 40;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    fs::write(&path, bytes).unwrap();
    let out = python(&dir, IN_TOTO, &args);
    assert!(
        !out.status.success(),
        "in-toto accepted an altered envelope"
    );
    assert!(
        stderr(&out).contains("VerificationError"),
        "{}",
        stderr(&out)
    );
}
