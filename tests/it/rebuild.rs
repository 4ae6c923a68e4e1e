//! One build of an output at a time, what killed builds leave behind, and
//! the spare: the site a swap retires, which the next build stages in.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_success, stderr, stdout};

tests! {
    second_build_of_one_output_fails_at_once;
    build_sweeps_staging_directories_of_killed_builds;
    copy_mode_rebuilds_stage_in_the_spare_and_copy_nothing;
    link_mode_rebuilds_link_nothing_and_hit_the_cache;
    link_mode_links_an_image_put_in_the_old_ones_place;
    link_mode_copies_an_image_no_longer_world_readable;
    nothing_the_site_no_longer_has_survives_from_the_spare;
    spare_with_a_symbolic_link_is_discarded;
    spare_without_the_marker_is_discarded;
    spare_that_is_a_symbolic_link_is_discarded;
    spare_with_a_fifo_is_discarded;
    foreign_files_in_the_spare_never_reach_the_output;
    files_and_directories_swapped_in_the_spare_are_replaced;
    spare_files_with_the_right_bytes_but_another_name_or_mode_are_written_anew;
    a_changed_file_in_the_spare_is_replaced;
    build_killed_while_staging_in_the_spare_leaves_the_output_and_is_swept;
    failed_build_puts_the_spare_back;
    the_site_does_not_depend_on_the_thread_count;
    output_inside_the_releases_directory_is_not_scanned;
}

/// While another process holds the output's lock, a build fails at once,
/// naming it; once it is released, the build runs.
fn second_build_of_one_output_fails_at_once() {
    let fixture = Fixture::new("ok-minimal");
    let lock_path = fixture.path(".public.lock");
    let mut lock = fs::File::create(&lock_path).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    lock.write_all(b"4242\n").unwrap();

    let out = fixture.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: .public.lock: another build of public is running (process 4242); \
         wait for it to finish\n"
    );
    assert!(!fixture.path("public").exists());

    // Released (as when its holder dies, the file left behind): the next
    // build takes it, and removes it when done.
    drop(lock);
    assert_success(&fixture.build(&[]));
    assert!(!lock_path.exists());
}

/// A build killed midway leaves its staging directory; the next build of
/// the output removes it and says so. Other sites' are left alone.
fn build_sweeps_staging_directories_of_killed_builds() {
    let fixture = Fixture::new("ok-minimal");
    let left = fixture.path(".public.building-xyz");
    fs::create_dir_all(left.join("images")).unwrap();
    fs::write(left.join("images/half.raw"), b"half an image").unwrap();
    let other = fixture.path(".other.building-xyz");
    fs::create_dir(&other).unwrap();

    let out = fixture.build(&[]);
    assert_success(&out);
    assert!(!left.exists());
    assert!(other.is_dir());
    assert_eq!(
        stderr(&out),
        "warning: .public.building-xyz: removed: a build that was killed midway left it behind\n"
    );

    let again = fixture.build(&[]);
    assert_success(&again);
    assert_eq!(stderr(&again), "");
}

/// Every entry under `dir`, by its path: its mode, and a file's bytes
/// (`None` for a directory). A symbolic link or any other kind fails.
fn tree(dir: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                stack.push(path);
                entries.insert(rel, (mode, None));
            } else {
                assert!(meta.is_file(), "{rel} is neither a file nor a directory");
                entries.insert(rel, (mode, Some(fs::read(&path).unwrap())));
            }
        }
    }
    entries
}

/// What a cold build of the fixture's site as it is now writes: no output,
/// no spare, no cache.
fn cold_tree(fixture: &Fixture) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let cold = fixture.tmp.path().join("cold");
    let _ = fs::remove_dir_all(&cold);
    assert_success(&fixture.build(&["--no-cache", "--out", cold.to_str().unwrap()]));
    tree(&cold)
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

/// The image, as published, that the spare tests look at.
const PUBLISHED: &str = "public/images/webapp/1.1.0/webapp-1.1.0.raw";
const IMAGE: &str = "releases/webapp/1.1.0/webapp-1.1.0.raw";
const SPARE: &str = ".public.spare";

fn with_mode(mode: &str) -> Fixture {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure(&format!("image_mode = \"{mode}\"\n"));
    fixture
}

/// Builds, quietly, reading no image.
#[track_caller]
fn warm_build(fixture: &Fixture) {
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    let text = stdout(&out);
    assert!(
        text.contains("\nHashed 0 image(s), 0 B (0 bytes)"),
        "{text}"
    );
}

/// The site a swap retires is kept as the spare, and the next build stages
/// in it: the output's directories are the spare's, an unchanged copy keeps
/// its inode and its ctime (no link is made or removed), and the spare
/// shares the output's copies instead of holding copies of its own.
fn copy_mode_rebuilds_stage_in_the_spare_and_copy_nothing() {
    let fixture = with_mode("copy");
    assert_success(&fixture.build(&[]));
    let release_dir = |root: &str| fixture.path(&format!("{root}/images/webapp/1.1.0"));
    let first_tree = ino(&release_dir("public"));
    let first_feed = ino(&fixture.path("public/feed.xml"));
    warm_build(&fixture);
    let second_tree = ino(&release_dir("public"));
    assert_ne!(second_tree, first_tree);
    assert_eq!(ino(&release_dir(SPARE)), first_tree);
    let copy = fs::metadata(fixture.path(PUBLISHED)).unwrap();
    assert_ne!(copy.ino(), ino(&fixture.path(IMAGE)));
    for (round, tree) in [(3, first_tree), (4, second_tree), (5, first_tree)] {
        warm_build(&fixture);
        assert_eq!(ino(&release_dir("public")), tree, "build {round}");
        // The same build time: the feed is the same, byte for byte, and
        // the spare's is kept.
        if tree == first_tree {
            assert_eq!(ino(&fixture.path("public/feed.xml")), first_feed);
        }
        let now = fs::metadata(fixture.path(PUBLISHED)).unwrap();
        assert_eq!(
            (now.ino(), now.nlink(), now.ctime(), now.ctime_nsec()),
            (copy.ino(), 2, copy.ctime(), copy.ctime_nsec()),
            "build {round}"
        );
        let spare_copy = fixture.path(&PUBLISHED.replace("public", SPARE));
        assert_eq!(ino(&spare_copy), copy.ino(), "build {round}");
    }
    assert_eq!(tree(&fixture.path("public")), cold_tree(&fixture));
}

/// A site in link mode built twice: the image is linked in the output and
/// the spare, three names in all.
fn linked() -> Fixture {
    let fixture = with_mode("link");
    assert_success(&fixture.build(&[]));
    warm_build(&fixture);
    assert_eq!(fs::metadata(fixture.path(IMAGE)).unwrap().nlink(), 3);
    fixture
}

/// In link mode the output and the spare hold the image itself: after the
/// first rebuild no link is made or removed, so the image's ctime stays and
/// the cache hits on every rebuild.
fn link_mode_rebuilds_link_nothing_and_hit_the_cache() {
    let fixture = linked();
    let image = fs::metadata(fixture.path(IMAGE)).unwrap();
    for round in 3..=5 {
        warm_build(&fixture);
        let now = fs::metadata(fixture.path(IMAGE)).unwrap();
        assert_eq!(
            (now.nlink(), now.ctime(), now.ctime_nsec()),
            (3, image.ctime(), image.ctime_nsec()),
            "build {round}"
        );
        assert_eq!(ino(&fixture.path(PUBLISHED)), image.ino());
    }
    assert_eq!(tree(&fixture.path("public")), cold_tree(&fixture));
}

/// An image replaced by a copy of itself (the same bytes, size and mtime,
/// another inode) while the spare holds a link to the old one: the held
/// link is not taken for it, the new file is read and linked, and the old
/// one is linked nowhere in the output or the spare.
fn link_mode_links_an_image_put_in_the_old_ones_place() {
    let fixture = linked();
    let image = fixture.path(IMAGE);
    let old = fs::metadata(&image).unwrap();
    let copy = fixture.path("releases/webapp/1.1.0/.copy");
    fs::copy(&image, &copy).unwrap();
    let times = fs::FileTimes::new().set_modified(old.modified().unwrap());
    fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_times(times)
        .unwrap();
    fs::rename(&copy, &image).unwrap();
    let new = fs::metadata(&image).unwrap();
    assert_ne!(new.ino(), old.ino());
    assert_eq!(
        (new.len(), new.mtime(), new.mtime_nsec()),
        (old.len(), old.mtime(), old.mtime_nsec())
    );

    let out = fixture.build(&[]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("\nHashed 1 image(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(ino(&fixture.path(PUBLISHED)), new.ino());
    warm_build(&fixture);
    assert_eq!(ino(&fixture.path(PUBLISHED)), new.ino());
    assert_eq!(
        ino(&fixture.path(&PUBLISHED.replace("public", SPARE))),
        new.ino()
    );
    assert_eq!(fs::metadata(&image).unwrap().nlink(), 3);
    assert_eq!(tree(&fixture.path("public")), cold_tree(&fixture));
}

/// An image linked into the output and the spare, then made readable by
/// its owner and group only: the links are not kept (the server could not
/// read them), the image is copied with the published mode, and in time
/// nothing but the release directory holds it.
fn link_mode_copies_an_image_no_longer_world_readable() {
    let fixture = linked();
    let image = fixture.path(IMAGE);
    fs::set_permissions(&image, fs::Permissions::from_mode(0o640)).unwrap();

    for round in 1..=3 {
        assert_success(&fixture.build(&[]));
        let published = fs::symlink_metadata(fixture.path(PUBLISHED)).unwrap();
        assert_ne!(published.ino(), ino(&image), "build {round}");
        assert_eq!(published.mode() & 0o7777, 0o644, "build {round}");
        assert_eq!(
            fs::read(fixture.path(PUBLISHED)).unwrap(),
            fs::read(&image).unwrap()
        );
    }
    assert_eq!(fs::metadata(&image).unwrap().nlink(), 1);
    assert_eq!(tree(&fixture.path("public")), cold_tree(&fixture));
}

/// ok-minimal's releases replaced by fourteen of webapp and three of
/// dbnode, with two items a feed: an archive, history pages and
/// per-appliance feeds.
fn archived_site(mode: &str) -> Fixture {
    let fixture = with_mode(mode);
    fs::remove_dir_all(fixture.path("releases")).unwrap();
    for (app, count) in [("webapp", 14), ("dbnode", 3)] {
        for i in 0..count {
            let dir = fixture.path(&format!("releases/{app}/1.{i}.0"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("release.toml"),
                format!(
                    "version = \"1.{i}.0\"\ndate = 2020-01-{:02}\nnotes = \"Release {i}.\"\n",
                    i + 1
                ),
            )
            .unwrap();
            fs::write(
                dir.join(format!("{app}-1.{i}.0.raw")),
                format!("{app} {i}\n").repeat(40),
            )
            .unwrap();
        }
    }
    fixture.configure("feed_items = 2\n");
    fixture
}

/// Files and directories the site no longer has never survive from the
/// spare: after the site loses an appliance and old releases, each of two
/// rebuilds (staging in a spare that has them) writes exactly what a cold
/// build writes, byte for byte, file for file, mode for mode.
fn nothing_the_site_no_longer_has_survives_from_the_spare() {
    for mode in ["none", "link", "copy"] {
        let fixture = archived_site(mode);
        assert_success(&fixture.build(&[]));
        warm_build(&fixture);
        let before = tree(&fixture.path("public"));
        fs::remove_dir_all(fixture.path("releases/dbnode")).unwrap();
        for i in 0..4 {
            fs::remove_dir_all(fixture.path(&format!("releases/webapp/1.{i}.0"))).unwrap();
        }
        let expected = cold_tree(&fixture);
        let gone: Vec<&String> = before
            .keys()
            .filter(|p| !expected.contains_key(*p))
            .collect();
        for path in ["history/dbnode.html", "feeds/dbnode.xml"] {
            assert!(
                gone.contains(&&path.to_owned()),
                "{mode}: {path} is not gone: {gone:?}"
            );
        }
        assert!(
            gone.iter().any(|p| p.starts_with("archive/")),
            "{mode}: {gone:?}"
        );
        if mode != "none" {
            assert!(
                gone.contains(&&"images/dbnode".to_owned()),
                "{mode}: {gone:?}"
            );
        }
        for round in 0..2 {
            assert!(fixture.path(SPARE).is_dir(), "{mode}");
            assert_success(&fixture.build(&[]));
            assert_eq!(
                tree(&fixture.path("public")),
                expected,
                "{mode}, rebuild {round}"
            );
        }
    }
}

/// Copy mode, built twice so that a spare exists; `corrupt` spoils it,
/// then a build must warn as told (or not at all) and write what a cold
/// build writes.
#[track_caller]
fn spoilt_spare(corrupt: impl FnOnce(&Fixture), warning: &str) -> Fixture {
    let fixture = with_mode("copy");
    assert_success(&fixture.build(&[]));
    warm_build(&fixture);
    assert!(fixture.path(SPARE).is_dir());
    corrupt(&fixture);
    let out = fixture.build(&[]);
    assert_success(&out);
    let expected = if warning.is_empty() {
        String::new()
    } else {
        format!(
            "warning: {warning}; the spare site is not what a build leaves, so it was removed \
             and this build starts from an empty directory\n"
        )
    };
    assert_eq!(stderr(&out), expected);
    assert_eq!(tree(&fixture.path("public")), cold_tree(&fixture));
    assert!(fixture.path(SPARE).is_dir());
    fixture
}

/// A symbolic link in the spare is never followed nor kept, even at an
/// image's place: the spare is removed whole.
fn spare_with_a_symbolic_link_is_discarded() {
    let fixture = spoilt_spare(
        |f| {
            fs::write(f.tmp.path().join("outside.txt"), "not the image").unwrap();
            let at = f.path(&PUBLISHED.replace("public", SPARE));
            fs::remove_file(&at).unwrap();
            std::os::unix::fs::symlink(f.tmp.path().join("outside.txt"), at).unwrap();
        },
        ".public.spare/images/webapp/1.1.0/webapp-1.1.0.raw: is a symbolic link",
    );
    assert_eq!(
        fs::read_to_string(fixture.tmp.path().join("outside.txt")).unwrap(),
        "not the image"
    );
}

fn spare_without_the_marker_is_discarded() {
    spoilt_spare(
        |f| fs::remove_file(f.path(&format!("{SPARE}/.vmcast-gen"))).unwrap(),
        ".public.spare: has no .vmcast-gen file",
    );
}

/// A spare that is a symbolic link to a directory is removed as a link:
/// what it points at is left alone.
fn spare_that_is_a_symbolic_link_is_discarded() {
    let fixture = spoilt_spare(
        |f| {
            let elsewhere = f.tmp.path().join("elsewhere");
            fs::rename(f.path(SPARE), &elsewhere).unwrap();
            std::os::unix::fs::symlink(&elsewhere, f.path(SPARE)).unwrap();
        },
        ".public.spare: is a symbolic link",
    );
    let elsewhere = fixture.tmp.path().join("elsewhere");
    assert!(elsewhere.join(".vmcast-gen").is_file());
    assert!(
        elsewhere
            .join("images/webapp/1.1.0/webapp-1.1.0.raw")
            .is_file()
    );
}

fn spare_with_a_fifo_is_discarded() {
    spoilt_spare(
        |f| {
            let status = Command::new("mkfifo")
                .arg(f.path(&format!("{SPARE}/images/webapp/fifo")))
                .status()
                .unwrap();
            assert!(status.success());
        },
        ".public.spare/images/webapp/fifo: is a FIFO",
    );
}

/// Files no build of this site writes are removed from the spare like any
/// file the site no longer has: they never reach the output.
fn foreign_files_in_the_spare_never_reach_the_output() {
    spoilt_spare(
        |f| {
            for path in [
                "evil.html",
                "images/webapp/1.1.0/evil.raw",
                "images/other/1.0/x.raw",
            ] {
                let at = f.path(&format!("{SPARE}/{path}"));
                fs::create_dir_all(at.parent().unwrap()).unwrap();
                fs::write(at, "foreign").unwrap();
            }
        },
        "",
    );
}

/// A directory where the new site writes a file, or places an image, is
/// removed with all it holds; a file where it has a directory is removed.
fn files_and_directories_swapped_in_the_spare_are_replaced() {
    spoilt_spare(
        |f| {
            for path in ["feed.xml", "images/webapp/1.1.0/webapp-1.1.0.raw"] {
                let at = f.path(&format!("{SPARE}/{path}"));
                fs::remove_file(&at).unwrap();
                fs::create_dir_all(at.join("deeper")).unwrap();
                fs::write(at.join("deeper/file"), "inside").unwrap();
            }
            let at = f.path(&format!("{SPARE}/images/webapp/1.0.0"));
            fs::remove_dir_all(&at).unwrap();
            fs::write(&at, "a file").unwrap();
        },
        "",
    );
}

/// A file of the spare with the right bytes is kept only if nothing else
/// can change it: one with another name (a hard link) or another mode is
/// written anew.
fn spare_files_with_the_right_bytes_but_another_name_or_mode_are_written_anew() {
    let fixture = spoilt_spare(
        |f| {
            fs::hard_link(
                f.path(&format!("{SPARE}/vmcast.pub")),
                f.tmp.path().join("other.pub"),
            )
            .unwrap();
            let page = f.path(&format!("{SPARE}/index.html"));
            fs::set_permissions(&page, fs::Permissions::from_mode(0o666)).unwrap();
        },
        "",
    );
    assert_eq!(
        fs::metadata(fixture.path("public/vmcast.pub"))
            .unwrap()
            .nlink(),
        1
    );
    assert_eq!(
        fs::metadata(fixture.tmp.path().join("other.pub"))
            .unwrap()
            .nlink(),
        1
    );
}

/// An unchanged copy's place in the spare holding another file (a copy
/// written to since) gets the output's copy again, not the spare's file.
fn a_changed_file_in_the_spare_is_replaced() {
    let fixture = spoilt_spare(
        |f| {
            let at = f.path(&PUBLISHED.replace("public", SPARE));
            fs::remove_file(&at).unwrap();
            fs::write(&at, "tampered").unwrap();
        },
        "",
    );
    assert_eq!(
        fs::read(fixture.path(PUBLISHED)).unwrap(),
        fs::read(fixture.path(IMAGE)).unwrap()
    );
}

/// A build killed after it took the spare leaves the output as it was; the
/// next build sweeps what it left and builds from an empty directory.
fn build_killed_while_staging_in_the_spare_leaves_the_output_and_is_swept() {
    let fixture = with_mode("copy");
    assert_success(&fixture.build(&[]));
    warm_build(&fixture);
    assert!(fixture.path(SPARE).is_dir());
    let before = tree(&fixture.path("public"));
    let big = fixture.path("releases/webapp/1.1.0/big.raw");
    fs::File::create(&big).unwrap().set_len(8 << 30).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args(["build", "-j", "1"])
        .current_dir(&fixture.root)
        .env("SOURCE_DATE_EPOCH", crate::common::EPOCH)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staging = || {
        fs::read_dir(&fixture.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|n| n.starts_with(".public.building-"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while fixture.path(SPARE).exists() || staging().is_none() {
        assert!(Instant::now() < deadline, "the build never took the spare");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(tree(&fixture.path("public")), before);
    let left = staging().unwrap();

    fs::remove_file(&big).unwrap();
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(
        stderr(&out),
        format!("warning: {left}: removed: a build that was killed midway left it behind\n")
    );
    assert_eq!(staging(), None);
    assert_eq!(tree(&fixture.path("public")), cold_tree(&fixture));
}

/// A build that fails after it took the spare puts the spare back: the
/// next build links or copies nothing the failed one had in place.
fn failed_build_puts_the_spare_back() {
    let fixture = with_mode("copy");
    assert_success(&fixture.build(&[]));
    warm_build(&fixture);
    let spare_copy = ino(&fixture.path(&PUBLISHED.replace("public", SPARE)));
    let before = tree(&fixture.path("public"));
    // Rendering comes after the spare is taken and every image placed.
    fs::create_dir(fixture.path("templates")).unwrap();
    fs::write(
        fixture.path("templates/index.html"),
        "{{ no_such_value.field }}\n",
    )
    .unwrap();
    let out = fixture.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(tree(&fixture.path("public")), before);
    assert_eq!(
        ino(&fixture.path(&PUBLISHED.replace("public", SPARE))),
        spare_copy
    );

    fs::remove_dir_all(fixture.path("templates")).unwrap();
    warm_build(&fixture);
    assert_eq!(ino(&fixture.path(PUBLISHED)), spare_copy);
    assert_eq!(tree(&fixture.path("public")), cold_tree(&fixture));
}

/// Notes are read, and feeds and archives rendered and signed, on several
/// threads: the site does not depend on how many.
fn the_site_does_not_depend_on_the_thread_count() {
    let site = |threads: &str| {
        let fixture = with_mode("none");
        fs::remove_dir_all(fixture.path("releases")).unwrap();
        for i in 0..45 {
            let dir = fixture.path(&format!("releases/webapp/1.{i}.0"));
            fs::create_dir_all(&dir).unwrap();
            let notes = format!("version = \"1.{i}.0\"\ndate = 2020-01-01\nnotes = \"{i}\"\n");
            fs::write(dir.join("release.toml"), notes).unwrap();
            fs::write(dir.join(format!("webapp-1.{i}.0.raw")), format!("{i}\n")).unwrap();
        }
        fixture.configure("feed_items = 1\n");
        assert_success(&fixture.build(&["-j", threads]));
        tree(&fixture.path("public"))
    };
    let one = site("1");
    assert!(
        one.contains_key("archive/4.xml.minisig"),
        "{:?}",
        one.keys()
    );
    assert_eq!(one, site("5"));
}

/// An output inside the releases directory, with its spare and staging
/// directories beside it, is never scanned as input: the build changes
/// them while it scans. A file name no input may have (not UTF-8) in the
/// spare is the spare's problem, removed with it, not the scan's error.
fn output_inside_the_releases_directory_is_not_scanned() {
    use std::os::unix::ffi::OsStrExt;
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("output_dir = \"releases/public\"\n");
    assert_success(&fixture.build(&[]));
    warm_build(&fixture);
    let spare = fixture.path("releases/.public.spare");
    assert!(spare.is_dir());
    let odd = spare.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::write(&odd, "").unwrap();
    warm_build(&fixture);
    assert!(!odd.exists());
    let out = fixture.run(&["check"], &[]);
    assert_success(&out);
}
