//! An appliance's feed that did not change is not rewritten: a build keeps
//! it as the site it replaces or builds on published it, signature and
//! all, and `verify` accepts it as unchanged since the build its signature
//! names, never a later one. With `expires_after` every build signs every
//! feed anew. (What `pull` makes of it: `pull`.)

use std::fs;

use crate::common::{Fixture, assert_success, snapshot_tree, stderr, stdout};

tests! {
    a_new_release_of_one_appliance_leaves_the_others_feed_as_it_was;
    with_expires_after_every_feed_is_signed_anew;
    a_build_on_previous_keeps_an_unchanged_feed_too;
    verify_refuses_an_appliance_feed_of_a_later_build_or_not_the_listed_one;
}

const E1: &str = "1790000000";
const E2: &str = "1790086400";
const E3: &str = "1790172800";
const DBNODE: [&str; 2] = ["feeds/dbnode.xml", "feeds/dbnode.xml.minisig"];
const WEBAPP: [&str; 2] = ["feeds/webapp.xml", "feeds/webapp.xml.minisig"];

fn build_at(fixture: &Fixture, epoch: &str, extra: &[&str]) {
    assert_success(&fixture.run(
        &[&["build"], extra].concat(),
        &[("SOURCE_DATE_EPOCH", epoch)],
    ));
}

fn verify(fixture: &Fixture, site: &str) -> std::process::Output {
    fixture.run(
        &["verify", site, "--pubkey", "../known-answer/kat.pub"],
        &[],
    )
}

/// The files at `paths` of the site in `dir`.
fn files(fixture: &Fixture, dir: &str, paths: [&str; 2]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| fs::read(fixture.path(dir).join(p)).unwrap())
        .collect()
}

/// A new release of webapp: dbnode's feed and signature stay byte for byte,
/// and verify says since when. The same SOURCE_DATE_EPOCH again rebuilds
/// the same site; a cold build (no site to replace) signs every feed with
/// its own stamp.
fn a_new_release_of_one_appliance_leaves_the_others_feed_as_it_was() {
    let fixture = Fixture::new("ok-multi-appliance");
    build_at(&fixture, E1, &[]);
    let dbnode = files(&fixture, "public", DBNODE);
    let webapp = files(&fixture, "public", WEBAPP);
    fixture.add_webapp_release("1.2.0", b"webapp 1.2.0\n");
    let out = fixture.run(&["build"], &[("SOURCE_DATE_EPOCH", E2)]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(
            "Signed feed.xml, feeds/webapp.xml and SHA256SUMS with key 9846815B1BF4E0B5, \
             sequence 1790086400\nKept feeds/dbnode.xml as published: unchanged since an \
             earlier build\n"
        ),
        "{}",
        stdout(&out)
    );
    assert_eq!(files(&fixture, "public", DBNODE), dbnode);
    assert_ne!(files(&fixture, "public", WEBAPP)[0], webapp[0]);
    assert_ne!(files(&fixture, "public", WEBAPP)[1], webapp[1]);
    let verified = verify(&fixture, "public");
    assert_success(&verified);
    assert!(
        stdout(&verified).contains(
            "  ok   build     feeds/dbnode.xml is unchanged since the build of sequence \
             1790000000, and SHA256SUMS of sequence 1790086400 lists it\n"
        ),
        "{}",
        stdout(&verified)
    );

    let site = snapshot_tree(&fixture.path("public"));
    build_at(&fixture, E2, &[]);
    assert_eq!(snapshot_tree(&fixture.path("public")), site);

    fs::remove_dir_all(fixture.path("public")).unwrap();
    build_at(&fixture, E2, &[]);
    let cold = files(&fixture, "public", DBNODE);
    assert_ne!(cold, dbnode);
    let feed = String::from_utf8(cold[0].clone()).unwrap();
    assert!(feed.contains("<vmcast:sequence>1790086400</vmcast:sequence>"));
    assert_eq!(files(&fixture, "public", WEBAPP), files_of(&site, WEBAPP));
}

fn files_of(
    site: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    paths: [&str; 2],
) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| site[std::path::Path::new(p)].clone())
        .collect()
}

/// With `expires_after`, every build signs every feed anew, to push its
/// expiry forward: the unchanged dbnode feed is signed again with the
/// build's stamp and expiry, in the first build that expires (on a site
/// that did not) and in each one after.
fn with_expires_after_every_feed_is_signed_anew() {
    let fixture = Fixture::new("ok-multi-appliance");
    build_at(&fixture, E1, &[]);
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    fs::write(
        fixture.path("vmcast.toml"),
        format!("expires_after = \"36500d\"\n{config}"),
    )
    .unwrap();
    for (epoch, version) in [(E2, "1.2.0"), (E3, "1.3.0")] {
        let dbnode = files(&fixture, "public", DBNODE);
        fixture.add_webapp_release(version, version.as_bytes());
        build_at(&fixture, epoch, &[]);
        let after = files(&fixture, "public", DBNODE);
        assert_ne!(after[0], dbnode[0]);
        assert_ne!(after[1], dbnode[1]);
        let signature = String::from_utf8(after[1].clone()).unwrap();
        assert!(
            signature.contains(&format!("\tsequence:{epoch}\texpires:")),
            "{signature}"
        );
        assert_success(&verify(&fixture, "public"));
    }
}

/// A release job building on the published site (`--previous`) keeps the
/// feed that site published for an appliance it does not change, also one
/// that site had kept from a build before it.
fn a_build_on_previous_keeps_an_unchanged_feed_too() {
    let fixture = Fixture::new("ok-multi-appliance");
    build_at(&fixture, E1, &[]);
    let dbnode = files(&fixture, "public", DBNODE);
    fixture.add_webapp_release("1.2.0", b"webapp 1.2.0\n");
    build_at(&fixture, E2, &[]);
    crate::common::copy_tree(&fixture.path("public"), &fixture.path("published"));
    fs::remove_dir_all(fixture.path("public")).unwrap();
    fixture.add_webapp_release("1.3.0", b"webapp 1.3.0\n");
    build_at(&fixture, E3, &["--previous", "published"]);
    assert_eq!(files(&fixture, "public", DBNODE), dbnode);
    assert_ne!(
        files(&fixture, "public", WEBAPP),
        files(&fixture, "published", WEBAPP)
    );
    assert_success(&verify(&fixture, "public"));
}

/// An appliance's feed signed in a later build than the site's SHA256SUMS
/// is refused as a mix of builds; one of an earlier build that is not the
/// one SHA256SUMS lists is refused by its digest.
fn verify_refuses_an_appliance_feed_of_a_later_build_or_not_the_listed_one() {
    let site = Fixture::new("ok-multi-appliance");
    build_at(&site, E2, &[]);
    for (epoch, refusal) in [
        (
            E3,
            "error: feeds/dbnode.xml (sequence 1790172800) and SHA256SUMS (sequence \
             1790086400) come from different builds (mix-and-match)\n",
        ),
        (
            E1,
            "error: feeds/dbnode.xml's SHA-256 differs from the one in SHA256SUMS\n",
        ),
    ] {
        let other = Fixture::new("ok-multi-appliance");
        build_at(&other, epoch, &[]);
        for name in DBNODE {
            fs::copy(
                other.path("public").join(name),
                site.path("public").join(name),
            )
            .unwrap();
        }
        let out = verify(&site, "public");
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert_eq!(stderr(&out), refusal);
    }
}
