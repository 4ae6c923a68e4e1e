//! Runs the real binary on fixture sites copied to a temporary directory.
//! Fixtures are named after what they show (tests/fixtures/<name>/README.md).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{EPOCH, Fixture, assert_success, snapshot_tree, stderr, stdout, vmcast};

tests! {
    malformed_toml;
    date_quoted;
    date_with_slashes;
    unclosed_multiline_notes;
    unknown_key_in_config;
    unknown_key_in_notes;
    toml_mistakes_name_their_fix;
    missing_field;
    duplicate_version;
    release_without_images;
    bad_ami_id;
    cloud_image_errors_point_at_the_value;
    release_of_cloud_images_only;
    parallels_bundle_is_published_only_as_a_tar needs TAR;
    glob_matches_nothing;
    path_traversal;
    absolute_path;
    symlink_escape;
    non_utf8_filename;
    unreadable_file;
    invalid_base_url;
    configured_url_hiding_a_slash_is_refused;
    a_base_url_naming_a_file_is_warned_about;
    missing_secret_key;
    a_public_key_given_as_the_secret_key_is_named;
    corrupt_secret_key;
    key_inside_output;
    image_grows_while_hashing;
    killed_build_leaves_previous_output;
    output_dir_not_made_by_us_is_refused;
    output_dir_holding_the_inputs_is_refused;
    no_secret_key_anywhere;
    unsafe_notes_are_sanitized;
    same_inputs_give_a_byte_identical_site;
    published_files_are_world_readable;
    secret_key_from_the_environment;
    awkward_file_names_are_escaped_in_the_feed needs SHA256SUM;
    file_names_with_a_backslash_or_a_line_break_are_refused;
    unknown_files_beside_images_are_warned_about;
    a_version_its_directory_or_images_contradict_is_warned_about;
    keygen_writes_a_private_key_and_refuses_to_overwrite;
    help_and_version;
    usage_errors_exit_2_as_the_help_says;
    help_is_laid_out_alike_and_fits_its_width;
    the_pinned_key_is_a_file_or_its_base64_line;
    a_failed_build_still_shows_its_warnings;
    template_errors_name_the_template_and_line;
    images_listed_by_glob_are_hard_linked;
    images_on_another_host_stay_out_of_the_output;
    multi_appliance_site_snapshot;
    example_site_snapshot;
    check_reports_every_problem_at_once_without_images;
    check_finds_template_errors;
    init_scaffolds_a_site_that_checks_and_never_overwrites;
    check_reports_a_missing_or_broken_secret_key;
    site_commands_find_the_config_above_the_current_directory;
    verify_of_a_sites_source_names_its_output_directory;
    keygen_makes_missing_directories_and_refuses_before_asking;
    build_json_summary_for_ci;
    completions_and_man_page;
    an_unencrypted_key_others_can_read_is_warned_about;
    a_closed_stdout_ends_quietly_with_status_141;
}

/// Puts a previous site in the output directory, to show a failed build
/// leaves it alone.
pub(crate) fn seed_previous_output(fixture: &Fixture) -> BTreeMap<PathBuf, Vec<u8>> {
    let out = fixture.path("public");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join(".vmcast-gen"), "marker\n").unwrap();
    fs::write(out.join("feed.xml"), "<rss>previous</rss>\n").unwrap();
    snapshot_tree(&out)
}

/// Drops `secret_key` from the fixture's config.
fn without_secret_key(fixture: &Fixture) {
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("secret_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(fixture.path("vmcast.toml"), without).unwrap();
}

/// Runs a build that must fail with exactly `expected` on stderr and exit
/// code 1, leaving the previous output and its parent untouched.
#[track_caller]
pub(crate) fn assert_build_fails(fixture: &Fixture, expected: &str) {
    let before = seed_previous_output(fixture);
    let listing = |dir: &Path| {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let siblings = listing(&fixture.root);
    let out = fixture.build(&[]);
    assert_eq!(stderr(&out), expected);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        snapshot_tree(&fixture.path("public")),
        before,
        "previous output changed"
    );
    assert_eq!(
        listing(&fixture.root),
        siblings,
        "a temporary directory was left behind"
    );
}

// ---- bad input: a clear error naming file and line, and nothing lost ----

fn malformed_toml() {
    assert_build_fails(
        &Fixture::new("malformed-toml"),
        "error: releases/webapp/1.0.0/release.toml:3:31: invalid basic string, expected `\"`\n",
    );
}

fn date_quoted() {
    assert_build_fails(
        &Fixture::new("date-quoted"),
        "error: releases/webapp/1.0.0/release.toml:2:8: invalid type: string \"2026-01-15\", \
         expected a TOML datetime; a date is written without quotes: remove them, as in \
         `date = 2026-01-15`\n",
    );
}

fn date_with_slashes() {
    assert_build_fails(
        &Fixture::new("date-with-slashes"),
        "error: releases/webapp/1.0.0/release.toml:2:8: string values must be quoted, expected \
         literal string; a date is written YYYY-MM-DD, without quotes, as in `date = 2026-01-15`\n",
    );
}

fn unclosed_multiline_notes() {
    assert_build_fails(
        &Fixture::new("unclosed-multiline-notes"),
        "error: releases/webapp/1.0.0/release.toml:3:9: this multi-line string is never closed: \
         add the closing quotes (three, like the opening ones)\n",
    );
}

fn unknown_key_in_config() {
    let fixture = Fixture::new("unknown-key-config");
    assert_build_fails(
        &fixture,
        "error: vmcast.toml:3:1: unknown field `titel`: did you mean `title`?\n",
    );
    // No key is near: the message lists them all.
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    fs::write(
        fixture.path("vmcast.toml"),
        config.replace("titel", "colour"),
    )
    .unwrap();
    assert_build_fails(
        &fixture,
        "error: vmcast.toml:3:1: unknown field `colour`, expected one of `title`, `description`, \
         `base_url`, `download_base_url`, `language`, `releases_dir`, `images_dir`, `output_dir`, \
         `templates_dir`, `secret_key`, `public_key`, `image_mode`, `image_layout`, `appliance`, \
         `format_preference`, \
         `expires_after`, `next_public_key`, `cache_dir`, `trust_sidecars`, `appliances`, \
         `previous`, `previous_key`, `feed_items`, `mirrors`, `provenance_keys`, `catalogs`, \
         `zsync`\n",
    );
}

fn unknown_key_in_notes() {
    assert_build_fails(
        &Fixture::new("unknown-key-notes"),
        "error: releases/webapp/1.0.0/release.toml:3:1: unknown field `critcal`: did you mean \
         `critical`?\n",
    );
}

/// The mistakes whose parser message names no cure get one: an unquoted
/// version, a table named after a key one letter off, a requirement
/// named by its word alone.
fn toml_mistakes_name_their_fix() {
    let fixture = Fixture::new("ok-minimal");
    let notes = fixture.path("releases/webapp/1.1.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    for (edit, error) in [
        (
            text.replace("version = \"1.1.0\"", "version = 1.1.0"),
            "error: releases/webapp/1.1.0/release.toml:1:11: `1.1.0` is not a TOML value: quote \
             it, as in `version = \"1.1.0\"`\n",
        ),
        (
            text.replace("version = \"1.1.0\"", "version = 1.10"),
            "error: releases/webapp/1.1.0/release.toml:1:11: invalid type: floating point `1.1`, \
             expected a string; quote it, as in `version = \"1.10\"`\n",
        ),
        (
            format!("{text}[requirements]\ncpus = 2\n"),
            "error: releases/webapp/1.1.0/release.toml:9:1: unknown field `cpus`: did you mean \
             `min_cpus`?\n",
        ),
    ] {
        fs::write(&notes, edit).unwrap();
        assert_build_fails(&fixture, error);
    }
    fs::write(&notes, &text).unwrap();
    fixture.configure("\n[appliance.webapp]\ntitle = \"WebApp\"\n");
    let lines = fs::read_to_string(fixture.path("vmcast.toml"))
        .unwrap()
        .lines()
        .count();
    assert_build_fails(
        &fixture,
        &format!(
            "error: vmcast.toml:{}:2: invalid type: map, expected a string; did you mean \
             `[appliances.webapp]`? `appliance` is the name of the default appliance, not a \
             table\n",
            lines - 1
        ),
    );
}

fn missing_field() {
    assert_build_fails(
        &Fixture::new("missing-field"),
        "error: releases/webapp/1.0.0/release.toml:1:1: missing field `date`\n",
    );
}

fn duplicate_version() {
    assert_build_fails(
        &Fixture::new("duplicate-version"),
        "error: releases/webapp/1.0.0-copy/release.toml: appliance webapp version 1.0.0 is already \
         declared in releases/webapp/1.0.0/release.toml\n",
    );
}

fn release_without_images() {
    assert_build_fails(
        &Fixture::new("no-images"),
        "error: releases/webapp/1.1.0/release.toml: release webapp 1.1.0 has no images; put image \
         files beside release.toml, list them in `images`, or name cloud images in \
         [[cloud_image]]\n",
    );
}

fn bad_ami_id() {
    assert_build_fails(
        &Fixture::new("bad-ami-id"),
        "error: releases/webapp/1.0.0/release.toml:10:6: invalid aws image id \
         `ami-0abc1234def56789g`: expected `ami-` and 8 or 17 lower-case hex digits, like \
         `ami-0abc1234def567890`\n",
    );
}

/// Each field of a `[[cloud_image]]` is checked for its provider, and the
/// error points at the value (at the provider when a region is missing).
fn cloud_image_errors_point_at_the_value() {
    let notes = "releases/webapp/1.0.0/release.toml";
    for (from, to, expected) in [
        (
            "provider = \"aws\"",
            "provider = \"oracle\"",
            "8:12: unknown cloud provider `oracle`; expected aws, gcp or azure",
        ),
        (
            "region = \"eu-west-1\"\n",
            "",
            "8:12: an aws image needs `region`, like `eu-west-1`",
        ),
        (
            "region = \"eu-west-1\"",
            "region = \"West Europe\"",
            "9:10: invalid aws region `West Europe`: expected an AWS region, like `eu-west-1` or \
             `us-gov-west-1`",
        ),
        (
            "provider = \"aws\"\nregion = \"eu-west-1\"\nid = \"ami-0abc1234def56789g\"",
            "provider = \"gcp\"\nid = \"projects/debian-cloud/global/images/family/debian-12\"",
            "9:6: invalid gcp image id `projects/debian-cloud/global/images/family/debian-12`: an \
             image family names whichever image is newest, not one image: name the image",
        ),
        (
            "provider = \"aws\"\nregion = \"eu-west-1\"\nid = \"ami-0abc1234def56789g\"",
            "provider = \"azure\"\nregion = \"westeurope\"\nid = \"/subscriptions/x\"",
            "10:6: invalid azure image id `/subscriptions/x`: expected a gallery image version id, \
             /subscriptions/<subscription id>/resourceGroups/<group>/providers/Microsoft.Compute/\
             galleries/<gallery>/images/<image>/versions/<major.minor.patch>",
        ),
    ] {
        let fixture = Fixture::new("bad-ami-id");
        let text = fs::read_to_string(fixture.path(notes)).unwrap();
        assert!(text.contains(from), "{from}");
        fs::write(fixture.path(notes), text.replace(from, to)).unwrap();
        assert_build_fails(&fixture, &format!("error: {notes}:{expected}\n"));
    }
}

/// A release whose notes name only cloud images: an item without an
/// enclosure, its cloud images in the feed (the azure id in canonical
/// case) and on the page, and `check` and `verify` accept it.
fn release_of_cloud_images_only() {
    let fixture = Fixture::new("cloud-only-release");
    let out = fixture.build(&[]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(": 1 appliance(s), 2 release(s), 1 image(s), 438 B (438 B of virtual disks), 5 cloud image(s)\n"),
        "{}",
        stdout(&out)
    );
    let json = fixture.build(&["--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json["cloud_images"], 5);
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    insta::assert_snapshot!("cloud_only_feed", feed);
    let page = fs::read_to_string(fixture.path("public/index.html")).unwrap();
    let tables = page
        .split("<article")
        .skip(1)
        .map(|a| a.split("</article>").next().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(tables.len(), 2);
    assert!(
        !tables[0].contains("<table class=\"images\">"),
        "{}",
        tables[0]
    );
    assert_eq!(tables[0].matches("<code class=\"hash\">").count(), 4);
    assert!(tables[1].contains(
        "<td data-label=\"Image id\"><code class=\"hash\">ami-0abc1234def567890</code></td>"
    ));
    assert!(page.contains("1 image (438 B), 5 cloud images."), "{page}");
    let checked = fixture.run(&["check"], &[]);
    assert_eq!(stdout(&checked), "checked 2 release(s): no problems\n");
    assert_success(&checked);
}

/// A Parallels bundle is a directory: files inside it are not images of
/// the release. Tarred into one file and named raw in the notes, as the
/// README says, it is published as opaque bytes.
fn parallels_bundle_is_published_only_as_a_tar() {
    let fixture = Fixture::new("ok-minimal");
    let dir = fixture.path("releases/webapp/1.1.0");
    fs::create_dir_all(dir.join("webapp.pvm/harddisk.hdd")).unwrap();
    fs::write(
        dir.join("webapp.pvm/config.pvs"),
        "<ParallelsVirtualMachine/>\n",
    )
    .unwrap();
    fs::write(
        dir.join("webapp.pvm/harddisk.hdd/harddisk.hdd.0.hds"),
        "not a disk\n",
    )
    .unwrap();
    let out = Command::new("tar")
        .args(["-cf", "webapp.pvm.tar", "webapp.pvm"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_success(&out);
    let mut notes = fs::read_to_string(dir.join("release.toml")).unwrap();
    notes.push_str("\n[image.\"webapp.pvm.tar\"]\nformat = \"raw\"\n");
    fs::write(dir.join("release.toml"), notes).unwrap();
    assert_success(&fixture.build(&[]));
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert!(
        feed.contains(
            "name=\"webapp.pvm.tar\" path=\"images/webapp/1.1.0/webapp.pvm.tar\" format=\"raw\""
        ),
        "{feed}"
    );
    assert!(!feed.contains("harddisk"), "{feed}");
}

fn glob_matches_nothing() {
    assert_build_fails(
        &Fixture::new("glob-matches-nothing"),
        "error: releases/webapp/9.9.9/release.toml:3:11: `webapp-9.9.9.*` matches no file in build\n",
    );
}

fn path_traversal() {
    assert_build_fails(
        &Fixture::new("path-traversal"),
        "error: releases/webapp/1.0.0/release.toml:3:11: `../outside.raw` climbs out of its \
         directory with `..`\n",
    );
}

fn absolute_path() {
    assert_build_fails(
        &Fixture::new("absolute-path"),
        "error: releases/webapp/1.0.0/release.toml:3:11: `/etc/hostname` is an absolute path\n",
    );
}

fn symlink_escape() {
    assert_build_fails(
        &Fixture::new("symlink-escape"),
        "error: releases/webapp/1.0.0/escape.raw: is a symbolic link to a file outside releases; \
         images must stay inside their tree\n",
    );
}

fn non_utf8_filename() {
    let fixture = Fixture::new("non-utf8-filename");
    let name = OsStr::from_bytes(b"disk-\xff.raw");
    fs::write(fixture.path("releases/webapp/1.0.0").join(name), b"raw").unwrap();
    assert_build_fails(
        &fixture,
        "error: releases/webapp/1.0.0/disk-\u{fffd}.raw: file name \"disk-\\xFF.raw\" is not valid \
         UTF-8; rename it (feeds and URLs need UTF-8 names)\n",
    );
}

fn unreadable_file() {
    let fixture = Fixture::new("unreadable-file");
    let image = fixture.path("releases/webapp/1.0.0/webapp-1.0.0.raw");
    let before = seed_previous_output(&fixture);
    // root reads anything: run the build as `nobody`, with the rest of the
    // tree open to it.
    let is_root = running_as_root();
    if is_root {
        open_tree_to_all(&fixture.root);
    }
    fs::set_permissions(&image, fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_vmcast-gen"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
    };
    // The key (mode 0600, as a real one) comes from the environment, as in
    // CI, so that only the image is out of reach.
    let key = fs::read_to_string(fixture.tmp.path().join("fixtures/known-answer/kat.key")).unwrap();
    let out = cmd
        .arg("build")
        .current_dir(&fixture.root)
        .env("VMCAST_SECRET_KEY", key)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out),
        "error: cannot open releases/webapp/1.0.0/webapp-1.0.0.raw: Permission denied (os error 13)\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(snapshot_tree(&fixture.path("public")), before);
}

fn running_as_root() -> bool {
    // The owner of a file we just created is our effective uid.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::MetadataExt::uid(&tmp.as_file().metadata().unwrap()) == 0
}

/// Makes the tree and its ancestors readable and writable by `nobody`.
fn open_tree_to_all(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = if meta.is_dir() { 0o777 } else { 0o666 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        if meta.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    for ancestor in root.ancestors().skip(1) {
        if ancestor.starts_with(std::env::temp_dir()) && ancestor != std::env::temp_dir() {
            fs::set_permissions(ancestor, fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
}

fn invalid_base_url() {
    assert_build_fails(
        &Fixture::new("invalid-base-url"),
        "error: vmcast.toml:3:12: invalid URL `downloads.example.com/no-scheme`: relative URL \
         without a base; expected an absolute URL such as https://downloads.example.com/appliances/\n",
    );
}

/// A configured URL whose path hides a `/` in a segment would be
/// requested as it is, and a decoding server or CDN would serve another
/// path: refused at its place, as consumers refuse such URLs.
fn configured_url_hiding_a_slash_is_refused() {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("mirrors = [\"https://mirror.example.com/site/..%2F..%2Fother/\"]\n");
    assert_build_fails(
        &fixture,
        "error: vmcast.toml:5:12: URL `https://mirror.example.com/site/..%2F..%2Fother/` hides a \
         `/` or `\\` in a path segment (%2F, %5C): a server or CDN that decodes it serves \
         another path than the site's\n",
    );
}

/// A key file that is not there: the error points at the line of the
/// config that names it and says how to make one; named on the command
/// line, it says how to make one.
fn missing_secret_key() {
    let fixture = Fixture::new("missing-secret-key");
    assert_build_fails(
        &fixture,
        "error: vmcast.toml:4:14: secret_key: cannot read the secret key \
         keys/does-not-exist.key: No such file or directory (os error 2); make one with \
         `vmcast-gen keygen -s keys/does-not-exist.key`, or point secret_key at yours\n",
    );
    let out = fixture.build(&["--secret-key", "vmcast.key"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: cannot read the secret key vmcast.key: No such file or directory (os error 2); \
         make one with `vmcast-gen keygen`\n"
    );
    // The public key consumers pin, named and not there.
    fixture.configure("public_key = \"vmcast.pub\"\n");
    let out = fixture.build(&["--secret-key", "../known-answer/kat.key"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: vmcast.toml:5:14: public_key: cannot read vmcast.pub: No such file or directory \
         (os error 2); it is the public key consumers pin (vmcast.pub, written by `vmcast-gen \
         keygen`)\n"
    );
}

/// A public key given as the secret key is named for what it is, not
/// "42 bytes, expected 158".
fn a_public_key_given_as_the_secret_key_is_named() {
    let fixture = Fixture::new("ok-minimal");
    let out = fixture.build(&["--secret-key", "../known-answer/kat.pub"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: ../known-answer/kat.pub:2:1: this is a minisign public key (a .pub file), not the \
         secret key: give the secret key that `vmcast-gen keygen` wrote beside it (vmcast.key), \
         and publish this one\n"
    );
}

fn corrupt_secret_key() {
    assert_build_fails(
        &Fixture::new("corrupt-secret-key"),
        "error: keys/corrupt.key:2:1: secret key is 75 bytes, expected 158: truncated or not a \
         minisign key\n",
    );
}

fn key_inside_output() {
    let fixture = Fixture::new("key-inside-output");
    let before = snapshot_tree(&fixture.path("public"));
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: public/vmcast.key: the secret key lies inside the output directory public, which is \
         published; move it out\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(snapshot_tree(&fixture.path("public")), before);
}

fn image_grows_while_hashing() {
    let fixture = Fixture::new("image-grows-while-hashing");
    let image = fixture.path("releases/webapp/1.0.0/growing.raw");
    // A large sparse file takes long enough to hash for the writer to append
    // while it is read; the writer keeps appending until the build exits.
    fs::File::create(&image).unwrap().set_len(1 << 30).unwrap();
    let before = seed_previous_output(&fixture);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args(["build", "-j", "1"])
        .current_dir(&fixture.root)
        .env_remove("VMCAST_SECRET_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut appender = fs::OpenOptions::new().append(true).open(&image).unwrap();
    while child.try_wait().unwrap().is_none() {
        std::io::Write::write_all(&mut appender, b"more bytes").unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    // Caught while it is read, or already between the first look (cache,
    // sidecar) and the read: either way nothing is published.
    assert!(
        err.starts_with(
            "error: releases/webapp/1.0.0/growing.raw: changed while it was being hashed (size "
        ) || err
            == "error: releases/webapp/1.0.0/growing.raw: changed since the scan (size or \
                      mtime); is another job still writing it?\n",
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(snapshot_tree(&fixture.path("public")), before);
}

fn killed_build_leaves_previous_output() {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.build(&[]));
    let before = snapshot_tree(&fixture.path("public"));
    let image = fixture.path("releases/webapp/1.1.0/big.raw");
    fs::File::create(&image).unwrap().set_len(8 << 30).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args(["build", "-j", "1"])
        .current_dir(&fixture.root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(snapshot_tree(&fixture.path("public")), before);
}

fn output_dir_not_made_by_us_is_refused() {
    let fixture = Fixture::new("ok-minimal");
    let out_dir = fixture.path("public");
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("precious.txt"), "mine").unwrap();
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: public: exists, is not empty and was not made by vmcast-gen (no .vmcast-gen file); \
         refusing to replace it: choose another output_dir or remove it\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(out_dir.join("precious.txt")).unwrap(),
        "mine"
    );
}

fn output_dir_holding_the_inputs_is_refused() {
    let fixture = Fixture::new("ok-minimal");
    let out = fixture.build(&["--out", "."]);
    assert_eq!(
        stderr(&out),
        "error: .: the output directory holds the input ., and the output is replaced on every \
         build; choose another output_dir\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn no_secret_key_anywhere() {
    let fixture = Fixture::new("ok-minimal");
    without_secret_key(&fixture);
    let out = fixture.build(&[]);
    assert_eq!(
        stderr(&out),
        "error: no secret key: pass --secret-key FILE (or a pkcs11: URI of a key on a token), \
         set VMCAST_SECRET_KEY to the key file's contents, or set secret_key in the config; \
         `vmcast-gen keygen` makes one\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

// ---- good input ----

fn unsafe_notes_are_sanitized() {
    let fixture = Fixture::new("unsafe-notes");
    assert_success(&fixture.build(&[]));
    for file in ["public/feed.xml", "public/index.html"] {
        // The feed holds the HTML escaped once; unescape it to look at the markup.
        let text = fs::read_to_string(fixture.path(file))
            .unwrap()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&");
        for bad in [
            "<script",
            "javascript:",
            "onerror",
            "data:text/html",
            "<iframe",
            "alert(1)",
        ] {
            assert!(!text.contains(bad), "{file} contains {bad:?}");
        }
        assert!(
            text.contains(r#"<a href="https://example.com/">"#),
            "{file} lost the safe link"
        );
    }
}

fn same_inputs_give_a_byte_identical_site() {
    let a = Fixture::new("ok-multi-appliance");
    let b = Fixture::new("ok-multi-appliance");
    assert_success(&a.build(&[]));
    assert_success(&b.build(&["-j", "1"]));
    let site_a = snapshot_tree(&a.path("public"));
    assert!(site_a.len() > 10, "{:?}", site_a.keys());
    assert_eq!(site_a, snapshot_tree(&b.path("public")));
    // A rebuild over the previous output gives the same bytes again.
    assert_success(&a.build(&[]));
    assert_eq!(site_a, snapshot_tree(&a.path("public")));
}

fn published_files_are_world_readable() {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.build(&[]));
    let mut stack = vec![fixture.path("public")];
    while let Some(dir) = stack.pop() {
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o755,
            "{dir:?}"
        );
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o644, "{path:?}");
            }
        }
    }
}

fn secret_key_from_the_environment() {
    let fixture = Fixture::new("ok-minimal");
    without_secret_key(&fixture);
    let key = fs::read_to_string(fixture.path("../known-answer/kat.key")).unwrap();
    let out = fixture.run(&["build", "--quiet"], &[("VMCAST_SECRET_KEY", &key)]);
    assert_success(&out);
    assert_eq!(stdout(&out), "");
    let public = fs::read_to_string(fixture.path("public/vmcast.pub")).unwrap();
    assert_eq!(
        public,
        fs::read_to_string(fixture.path("../known-answer/kat.pub")).unwrap()
    );
}

fn awkward_file_names_are_escaped_in_the_feed() {
    let fixture = Fixture::new("ok-minimal");
    let dir = fixture.path("releases/webapp/1.1.0");
    fs::write(dir.join("sp ace #1.raw"), b"three").unwrap();
    fs::write(dir.join("\u{fc}ber.raw"), b"four").unwrap();
    assert_success(&fixture.build(&[]));
    let sums = fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap();
    let lines: Vec<&str> = sums.lines().collect();
    // sha256 of "three".
    assert!(lines.contains(
        &"8b5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f  images/webapp/1.1.0/sp ace #1.raw"
    ), "{sums}");
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    assert!(
        feed.contains("/images/webapp/1.1.0/sp%20ace%20%231.raw\""),
        "{feed}"
    );
    assert!(
        feed.contains("/images/webapp/1.1.0/%C3%BCber.raw\""),
        "{feed}"
    );
    // coreutils reads the manifest back.
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(fixture.path("public"))
        .output()
        .unwrap();
    assert_success(&check);
}

/// A published name is one plain path component that line-oriented formats
/// (SHA256SUMS, the virt-builder index) and `pull --dest` take as it is: a
/// backslash or a line break in an image's name is refused, naming the
/// file, and the previous output stays as it was.
fn file_names_with_a_backslash_or_a_line_break_are_refused() {
    for (name, why) in [
        ("back\\slash.raw", "holds a path separator"),
        ("new\nline.raw", "holds a control character"),
        ("carriage\rreturn.raw", "holds a control character"),
    ] {
        let fixture = Fixture::new("ok-minimal");
        assert_success(&fixture.build(&[]));
        let before = snapshot_tree(&fixture.path("public"));
        fs::write(fixture.path("releases/webapp/1.1.0").join(name), b"one").unwrap();
        let out = fixture.build(&[]);
        assert_eq!(out.status.code(), Some(1), "{name:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("error: releases/webapp/1.1.0/{name}: file name `")),
            "{err}"
        );
        assert!(err.contains(why), "{err}");
        assert_eq!(snapshot_tree(&fixture.path("public")), before);
    }
}

fn unknown_files_beside_images_are_warned_about() {
    let fixture = Fixture::new("unknown-extension");
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(
        stderr(&out),
        "warning: releases/webapp/1.0.0/image.qcow2.sha256: not an image (unknown extension), not published\n\
         warning: releases/webapp/1.0.0/notes.md: not an image (unknown extension), not published\n"
    );
}

fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vmcast(tmp.path(), &["keygen", "-W"], &[]);
    assert_success(&out);
    let mode = |p: &str| {
        fs::metadata(tmp.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("vmcast.key"), 0o600);
    assert_eq!(mode("vmcast.pub"), 0o644);
    let key = fs::read(tmp.path().join("vmcast.key")).unwrap();

    let again = vmcast(tmp.path(), &["keygen", "-W"], &[]);
    assert_eq!(
        stderr(&again),
        "error: vmcast.key: already exists; pass --force to overwrite it\n"
    );
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(fs::read(tmp.path().join("vmcast.key")).unwrap(), key);

    assert_success(&vmcast(tmp.path(), &["keygen", "-W", "--force"], &[]));
    assert_ne!(fs::read(tmp.path().join("vmcast.key")).unwrap(), key);
    assert_eq!(mode("vmcast.key"), 0o600);
}

fn help_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let version = vmcast(tmp.path(), &["--version"], &[]);
    assert_success(&version);
    assert_eq!(
        stdout(&version),
        format!("vmcast-gen {}\n", env!("CARGO_PKG_VERSION"))
    );
    for args in [&["--help"][..], &["build", "--help"], &["keygen", "--help"]] {
        let out = vmcast(tmp.path(), args, &[]);
        assert_success(&out);
        assert!(
            stdout(&out).contains("Usage: vmcast-gen"),
            "{}",
            stdout(&out)
        );
    }
    let bad = vmcast(tmp.path(), &["frobnicate"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A bad option value is a usage error, as clap's own are: status 2, as
/// every help says, whichever command and whichever check finds it.
fn usage_errors_exit_2_as_the_help_says() {
    let fixture = Fixture::new("ok-minimal");
    let key = fs::read_to_string(fixture.path("../known-answer/kat.pub")).unwrap();
    let b64 = key.lines().nth(1).unwrap();
    for (args, error) in [
        (
            vec![
                "pull",
                "http://127.0.0.1:9/",
                "--pubkey-b64",
                b64,
                "--appliance",
                "webapp",
            ]
            .into_iter()
            .chain(["--dest", "dest", "--format", "qcow3"])
            .collect::<Vec<_>>(),
            "error: --format `qcow3`: unknown image format `qcow3`",
        ),
        (
            vec![
                "pull",
                "http://127.0.0.1:9/",
                "--pubkey-b64",
                b64,
                "--appliance",
                "Web App",
            ]
            .into_iter()
            .chain(["--dest", "elsewhere"])
            .collect(),
            "error: --appliance `Web App`: ",
        ),
        (
            vec!["verify", "public", "--pubkey-b64", "RWQnotakey"],
            "error: --pubkey-b64 `RWQnotakey`: ",
        ),
        (
            vec!["publish", "s3://bucket/site", "--content-type", "qcow2"],
            "error: --content-type `qcow2`: expected EXT=TYPE",
        ),
        (
            vec!["build", "--secret-key", "pkcs11:token=x;bogus=1"],
            "error: --secret-key `pkcs11:token=x;bogus=1`: ",
        ),
    ] {
        let out = fixture.run(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with(error),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Nothing was made on the way, not even pull's --dest.
    assert!(!fixture.path("dest").exists());
    assert!(!fixture.path("elsewhere").exists());
    assert!(!fixture.path("public").exists());
    // The top-level help names every status a command exits with.
    let help = stdout(&fixture.run(&["--help"], &[]));
    let statuses = help.split_once("Exit status:\n").unwrap().1;
    for status in [
        "  0 ",
        "  1 ",
        "  2   a usage error",
        "3 (already current)",
        "10 (refused",
    ] {
        assert!(statuses.contains(status), "{status:?} missing from\n{help}");
    }
    assert!(statuses.contains("11 (interrupted") && statuses.contains("12 (--exec failed)"));
}

/// The help of every command has one layout: one line per option (clap
/// switches `pull` to another when a value has help of its own), and the
/// hand-laid sections (the environment, the exit statuses) fit in 100
/// columns, so clap never breaks one of their lines in mid-sentence, and
/// each description starts in its section's one column.
fn help_is_laid_out_alike_and_fits_its_width() {
    let tmp = tempfile::tempdir().unwrap();
    let help = |args: &[&str], columns: &str| {
        let out = vmcast(tmp.path(), args, &[("COLUMNS", columns)]);
        assert_success(&out);
        stdout(&out)
    };
    let mut commands = vec![vec![]];
    let top = help(&["--help"], "100");
    for line in top
        .split_once("Commands:\n")
        .unwrap()
        .1
        .lines()
        .take_while(|l| !l.is_empty())
    {
        let name = line.split_whitespace().next().unwrap();
        if line.starts_with("  ") && !line.starts_with("   ") && name != "help" {
            commands.push(vec![name]);
        }
    }
    assert!(commands.len() >= 12, "{commands:?}");
    for command in &commands {
        let long = [&command[..], &["--help"]].concat();
        let short = [&command[..], &["-h"]].concat();
        let text = help(&long, "100");
        assert_eq!(
            text,
            help(&short, "100"),
            "{command:?}: -h and --help differ"
        );
        assert!(!text.contains("see a summary with '-h'"), "{command:?}");
        // What follows the options, laid out by hand.
        let after = text.split_once("Print help\n").map_or("", |(_, a)| a);
        let wide = help(&long, "1000");
        let wide_after = wide.split_once("Print help\n").map_or("", |(_, a)| a);
        for section in ["Environment", "Exit status:"] {
            let Some(at) = after.find(section) else {
                continue;
            };
            let block = after[at..].split("\n\n").next().unwrap();
            assert!(
                wide_after.contains(block),
                "{command:?}: clap rewrapped {section} at 100 columns:\n{block}"
            );
            // Each entry's description starts in one column, and so do the
            // lines that carry it on.
            let column = |line: &str| {
                let body = line.trim_start();
                let name_end = body.find("  ").map(|i| line.len() - body.len() + i);
                name_end.map(|e| e + line[e..].len() - line[e..].trim_start().len())
            };
            let starts: BTreeMap<usize, &str> = block
                .lines()
                .skip(1)
                .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
                .filter_map(|l| column(l).map(|c| (c, l)))
                .collect();
            assert!(
                starts.len() <= 1,
                "{command:?}: {section} misaligned: {starts:?}"
            );
            if let Some((&c, _)) = starts.iter().next() {
                for line in block.lines().filter(|l| l.starts_with("    ")) {
                    let indent = line.len() - line.trim_start().len();
                    assert!(
                        indent == c || section == "Exit status:" && indent == 6,
                        "{command:?}: {line:?} is not under column {c}"
                    );
                }
            }
        }
    }
}

/// verify and pull take the pinned key as a file or as its base64 line,
/// and say so when given neither; pull, like verify, also pins the site.
fn the_pinned_key_is_a_file_or_its_base64_line() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["verify", "public"][..],
        &[
            "pull",
            "http://127.0.0.1:9/",
            "--appliance",
            "a",
            "--dest",
            "d",
        ],
    ] {
        let out = vmcast(tmp.path(), args, &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("<--pubkey <FILE>|--pubkey-b64 <KEY>>"),
            "{}",
            stderr(&out)
        );
    }
    let help = stdout(&vmcast(tmp.path(), &["pull", "--help"], &[]));
    for option in ["--pubkey-b64 <KEY>", "--site <URL>"] {
        assert!(help.contains(option), "pull --help lacks {option}:\n{help}");
    }
}

/// `version = "1.2.0"` in releases/webapp/1.1.0/ beside webapp-1.1.0.raw
/// publishes images/webapp/1.2.0/webapp-1.1.0.raw: build and check say so.
fn a_version_its_directory_or_images_contradict_is_warned_about() {
    let fixture = Fixture::new("ok-minimal");
    let notes = fixture.path("releases/webapp/1.1.0/release.toml");
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(&notes, text.replace("\"1.1.0\"", "\"1.2.0\"")).unwrap();
    let warned = "warning: releases/webapp/1.1.0/release.toml: says version = \"1.2.0\", but its \
                  directory is 1.1.0: the release publishes as 1.2.0; make the two agree\n\
                  warning: releases/webapp/1.1.0/webapp-1.1.0.raw: its name says 1.1.0, but the \
                  release is 1.2.0 (`version` in release.toml): it publishes as \
                  images/webapp/1.2.0/webapp-1.1.0.raw\n";
    for args in [&["build"][..], &["check"]] {
        let out = fixture.run(args, &[]);
        assert_success(&out);
        assert_eq!(stderr(&out), warned, "{args:?}");
    }
    // Agreeing again, nothing is said; nor of a name with no version.
    fs::write(&notes, &text).unwrap();
    fs::rename(
        fixture.path("releases/webapp/1.1.0/webapp-1.1.0.raw"),
        fixture.path("releases/webapp/1.1.0/disk.raw"),
    )
    .unwrap();
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
}

/// `base_url = ".../index.html"` is a valid URL, but every URL of the site
/// would go under the page: build and check say so, at its line.
fn a_base_url_naming_a_file_is_warned_about() {
    let fixture = Fixture::new("ok-minimal");
    let config = fs::read_to_string(fixture.path("vmcast.toml")).unwrap();
    let config = config.replace(
        "base_url = \"https://downloads.example.com/site/\"",
        "base_url = \"https://example.github.io/myapp/index.html\"",
    );
    fs::write(fixture.path("vmcast.toml"), &config).unwrap();
    let line = config
        .lines()
        .position(|l| l.starts_with("base_url"))
        .unwrap()
        + 1;
    let warned = format!(
        "warning: vmcast.toml:{line}:12: base_url ends in index.html, a file: every URL goes \
         under it (https://example.github.io/myapp/index.html/feed.xml); set it to the \
         directory, https://example.github.io/myapp/\n"
    );
    for args in [&["build"][..], &["check"]] {
        let out = fixture.run(args, &[]);
        assert_success(&out);
        assert_eq!(stderr(&out), warned, "{args:?}");
    }
}

/// A build that fails still shows what it warned of first: here the file
/// it did not publish, which may be the image the user meant.
fn a_failed_build_still_shows_its_warnings() {
    let fixture = Fixture::new("ok-minimal");
    fs::write(fixture.path("releases/webapp/1.1.0/notes.txt"), "hi\n").unwrap();
    fs::create_dir(fixture.path("templates")).unwrap();
    fs::write(
        fixture.path("templates/index.html"),
        "{{ no_such_value.field }}\n",
    )
    .unwrap();
    assert_build_fails(
        &fixture,
        "warning: releases/webapp/1.1.0/notes.txt: not an image (unknown extension), not \
         published\nerror: templates/index.html:1: undefined value: `no_such_value` is \
         undefined\n",
    );
    // A scan that fails shows what it warned of too: here why the release
    // has no image, its one file named wrong.
    let fixture = Fixture::new("ok-minimal");
    let release = fixture.path("releases/webapp/1.1.0");
    fs::rename(
        release.join("webapp-1.1.0.raw"),
        release.join("webapp-1.1.0.qcow2.txt"),
    )
    .unwrap();
    assert_build_fails(
        &fixture,
        "warning: releases/webapp/1.1.0/webapp-1.1.0.qcow2.txt: not an image (unknown \
         extension), not published\nerror: releases/webapp/1.1.0/release.toml: release webapp \
         1.1.0 has no images; put image files beside release.toml, list them in `images`, or \
         name cloud images in [[cloud_image]]\n",
    );
}

fn template_errors_name_the_template_and_line() {
    assert_build_fails(
        &Fixture::new("template-error"),
        "error: templates/index.html:5: undefined value: `appliance.no_such_field` is undefined\n",
    );
}

fn images_listed_by_glob_are_hard_linked() {
    use std::os::unix::fs::MetadataExt;
    let fixture = Fixture::new("images-dir");
    assert_success(&fixture.build(&[]));
    let inode = |p: &str| fs::metadata(fixture.path(p)).unwrap().ino();
    for name in ["webapp-2.0.0.qcow2", "webapp-2.0.0-arm.img"] {
        assert_eq!(
            inode(&format!("build/webapp/{name}")),
            inode(&format!("public/images/webapp/2.0.0/{name}"))
        );
    }
    assert!(
        !fixture
            .path("public/images/webapp/2.0.0/webapp-1.9.0.qcow2")
            .exists()
    );
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    insta::assert_snapshot!("images_dir_feed", feed);
}

fn images_on_another_host_stay_out_of_the_output() {
    let fixture = Fixture::new("cdn-download-url");
    assert_success(&fixture.build(&[]));
    assert!(!fixture.path("public/images").exists());
    let feed = fs::read_to_string(fixture.path("public/feed.xml")).unwrap();
    insta::assert_snapshot!("cdn_feed", feed);
    insta::assert_snapshot!(
        "cdn_sums",
        fs::read_to_string(fixture.path("public/SHA256SUMS")).unwrap()
    );
}

/// The whole deterministic output of a multi-appliance site.
fn multi_appliance_site_snapshot() {
    let fixture = Fixture::new("ok-multi-appliance");
    let out = fixture.build(&[]);
    assert_success(&out);
    let site = snapshot_tree(&fixture.path("public"));
    let names: Vec<String> = site.keys().map(|p| p.display().to_string()).collect();
    insta::assert_snapshot!("multi_files", names.join("\n"));
    for file in [
        "feed.xml",
        "feed.xml.minisig",
        "feeds/webapp.xml",
        "feeds/dbnode.xml",
        "feeds/dbnode.xml.minisig",
        "SHA256SUMS",
        "SHA256SUMS.minisig",
        "vmcast.pub",
        "index.html",
    ] {
        let text = String::from_utf8(site[Path::new(file)].clone()).unwrap();
        insta::assert_snapshot!(format!("multi_{}", file.replace(['/', '.'], "_")), text);
    }
}

/// The example site that `cargo run --release -- build` makes.
fn example_site_snapshot() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("public");
    let out = vmcast(repo, &["build", "--out", out_dir.to_str().unwrap()], &[]);
    assert_success(&out);
    for file in [
        "feed.xml",
        "feed.json",
        "SHA256SUMS",
        "SHA256SUMS.minisig",
        "index.html",
    ] {
        let text = fs::read_to_string(out_dir.join(file)).unwrap();
        insta::assert_snapshot!(format!("example_{}", file.replace('.', "_")), text);
    }
}

// ---- check, init, and the CLI's extras ----

fn check_reports_every_problem_at_once_without_images() {
    let fixture = Fixture::new("ok-minimal");
    // No images at all: a pull request that only edits notes.
    for v in ["1.0.0", "1.1.0"] {
        fs::remove_file(fixture.path(&format!("releases/webapp/{v}/webapp-{v}.raw"))).unwrap();
    }
    let out = fixture.run(&["check", "--no-images"], &[]);
    assert_success(&out);
    assert_eq!(stdout(&out), "checked 2 release(s): no problems\n");
    // Two broken notes files: both reported, with their lines, and both
    // counted among the releases checked.
    fs::write(
        fixture.path("releases/webapp/1.0.0/release.toml"),
        "version = \"1.0.0\"\ndate = 2026-01-15\nnotes = \"x\"\ncolour = \"red\"\n",
    )
    .unwrap();
    fs::write(
        fixture.path("releases/webapp/1.1.0/release.toml"),
        "version = \"1.1.0\"\ndate = 2026-13-45\nnotes = \"x\"\n",
    )
    .unwrap();
    let out = fixture.run(&["check", "--no-images"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: releases/webapp/1.0.0/release.toml:4:1: unknown field `colour`"),
        "{err}"
    );
    assert!(
        err.contains("\nerror: releases/webapp/1.1.0/release.toml:2:"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
    assert_eq!(stdout(&out), "checked 2 release(s): 2 problem(s)\n");
    // By default check wants the images, as build does; unless the config
    // builds on a previous site, which has them.
    let fixture = Fixture::new("no-images");
    let out = fixture.run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no images"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "checked 2 release(s): 1 problem(s)\n");
    fixture.configure("previous = \"https://downloads.example.com/site/\"\n");
    let out = fixture.run(&["check"], &[]);
    assert_success(&out);
}

fn check_finds_template_errors() {
    let out = Fixture::new("template-error").run(&["check"], &[]);
    assert_eq!(
        stderr(&out),
        "error: templates/index.html:5: undefined value: `appliance.no_such_field` is undefined\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

fn init_scaffolds_a_site_that_checks_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    // No terminal and no VMCAST_KEY_PASSWORD: refused before writing anything.
    let out = vmcast(tmp.path(), &["init", "site"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: keygen encrypts the secret key: set VMCAST_KEY_PASSWORD, run on a terminal, \
         or pass -W for an unencrypted key\n"
    );
    assert!(!tmp.path().join("site").exists());

    let out = vmcast(tmp.path(), &["init", "site", "--templates", "-W"], &[]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "created  site/vmcast.toml\ncreated  site/releases/example/1.0.0/release.toml\n\
             created  site/.gitignore\ncreated  site/templates/index.html\n\
             created  site/templates/style.css\ncreated  site/templates/history.html\n\
             Wrote secret key site/vmcast.key (mode 0600, \
             unencrypted) and public key site/vmcast.pub\nKey id "
        ),
        "{text}"
    );
    assert!(
        text.contains("\nNext steps:\n  1. Put each release's images beside its release.toml"),
        "{text}"
    );
    assert!(text.contains("cd site && vmcast-gen build"), "{text}");
    let site = tmp.path().join("site");
    // What a second build leaves beside the output is not committed either.
    let ignored = fs::read_to_string(site.join(".gitignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "/.public.*"), "{ignored}");
    let key = fs::read(site.join("vmcast.key")).unwrap();
    fs::write(site.join("vmcast.toml"), "title = \"mine\"\n").unwrap();
    let again = vmcast(tmp.path(), &["init", "site"], &[]);
    assert_success(&again);
    assert!(stdout(&again).contains("kept     site/vmcast.toml (exists; not overwritten)"));
    assert!(stdout(&again).contains("kept     site/vmcast.key (exists; not overwritten)"));
    assert_eq!(
        fs::read_to_string(site.join("vmcast.toml")).unwrap(),
        "title = \"mine\"\n"
    );
    assert_eq!(fs::read(site.join("vmcast.key")).unwrap(), key);
    // In a site that exists, the releases are the user's: the example the
    // user deleted is not made again, for the next build to refuse.
    fs::remove_dir_all(site.join("releases/example")).unwrap();
    let again = vmcast(tmp.path(), &["init", "site"], &[]);
    assert_success(&again);
    assert!(
        stdout(&again).contains(
            "skipped  site/releases/example/1.0.0/release.toml (the site exists: its releases \
             are yours)\n"
        ),
        "{}",
        stdout(&again)
    );
    assert!(!site.join("releases/example").exists());

    // A fresh scaffold lacks only the images, and check refuses it as build
    // does, naming them; without the images it checks clean.
    let fresh = tmp.path().join("fresh");
    assert_success(&vmcast(tmp.path(), &["init", "fresh", "-W"], &[]));
    let no_images = "error: releases/example/1.0.0/release.toml: release example 1.0.0 has no \
                     images; put image files beside release.toml, list them in `images`, or \
                     name cloud images in [[cloud_image]]\n";
    let check = vmcast(&fresh, &["check"], &[]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(stderr(&check), no_images);
    assert_eq!(stdout(&check), "checked 1 release(s): 1 problem(s)\n");
    let check = vmcast(&fresh, &["check", "--no-images"], &[]);
    assert_success(&check);
    assert_eq!(stdout(&check), "checked 1 release(s): no problems\n");
    let build = vmcast(&fresh, &["build"], &[]);
    assert_eq!(build.status.code(), Some(1));
    assert_eq!(stderr(&build), no_images);
    // With an image, build works at once.
    fs::write(
        fresh.join("releases/example/1.0.0/example-1.0.0.raw"),
        vec![0u8; 4096],
    )
    .unwrap();
    fs::write(
        fresh.join("releases/example/1.0.0/release.toml"),
        fs::read_to_string(fresh.join("releases/example/1.0.0/release.toml"))
            .unwrap()
            .replace("min_disk_gib = 8", "min_disk_gib = 1"),
    )
    .unwrap();
    assert_success(&vmcast(&fresh, &["build"], &[]));
}

fn check_reports_a_missing_or_broken_secret_key() {
    let tmp = tempfile::tempdir().unwrap();
    assert_success(&vmcast(tmp.path(), &["init", "site", "--no-keygen"], &[]));
    let site = tmp.path().join("site");
    let check = vmcast(&site, &["check", "--no-images"], &[]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        stderr(&check),
        "error: vmcast.toml:21:14: secret_key: cannot read the secret key vmcast.key: No such file \
         or directory (os error 2); make one with `vmcast-gen keygen`, or point secret_key at \
         yours\n"
    );
    fs::write(
        site.join("vmcast.key"),
        "untrusted comment: x\nnot base64!\n",
    )
    .unwrap();
    let check = vmcast(&site, &["check", "--no-images"], &[]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stderr(&check).starts_with("error: vmcast.key:2:1: secret key is not valid base64"),
        "{}",
        stderr(&check)
    );
    // An encrypted key is unlocked as build unlocks it. Without its
    // password (and no terminal to ask on), with an empty
    // VMCAST_KEY_PASSWORD (what an undefined CI secret becomes) or a wrong
    // one, check fails where build would; with the right one it passes.
    fs::remove_file(site.join("vmcast.key")).unwrap();
    assert_success(&vmcast(
        &site,
        &["keygen"],
        &[("VMCAST_KEY_PASSWORD", "correct horse")],
    ));
    let release = site.join("releases/example/1.0.0");
    fs::write(release.join("example-1.0.0.raw"), vec![0u8; 4096]).unwrap();
    let notes = fs::read_to_string(release.join("release.toml")).unwrap();
    fs::write(
        release.join("release.toml"),
        notes.replace("min_disk_gib = 8", "min_disk_gib = 1"),
    )
    .unwrap();
    let no_password = "error: vmcast.key: is encrypted, and `build` would have no password for \
                       it: set VMCAST_KEY_PASSWORD (an empty one counts as unset), or build on a \
                       terminal\n";
    let wrong = "error: vmcast.key: wrong password (the decrypted key's checksum does not match)\n";
    for (env, check_says, build_says) in [
        (
            &[][..],
            no_password,
            "error: the secret key needs a password",
        ),
        (
            &[("VMCAST_KEY_PASSWORD", "")],
            no_password,
            "error: the secret key needs a password",
        ),
        (&[("VMCAST_KEY_PASSWORD", "wrong")], wrong, wrong),
    ] {
        let check = vmcast(&site, &["check"], env);
        assert_eq!(check.status.code(), Some(1), "{env:?}");
        assert_eq!(stderr(&check), check_says, "{env:?}");
        let build = vmcast(&site, &["build"], env);
        assert_eq!(build.status.code(), Some(1), "{env:?}");
        assert!(
            stderr(&build).contains(build_says),
            "{env:?}: {}",
            stderr(&build)
        );
    }
    let right = [("VMCAST_KEY_PASSWORD", "correct horse")];
    assert_success(&vmcast(&site, &["check"], &right));
    // Unlocked, the key is held to the public key consumers pin.
    fs::rename(site.join("vmcast.pub"), site.join("ours.pub")).unwrap();
    assert_success(&vmcast(&site, &["keygen", "-W", "--force"], &[]));
    let mut config = fs::read_to_string(site.join("vmcast.toml")).unwrap();
    config = config.replace("secret_key = ", "public_key = \"ours.pub\"\nsecret_key = ");
    fs::write(site.join("vmcast.toml"), config).unwrap();
    let check = vmcast(&site, &["check"], &[]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stderr(&check).starts_with("error: ours.pub: is not the public half of the secret key"),
        "{}",
        stderr(&check)
    );
}

fn site_commands_find_the_config_above_the_current_directory() {
    let fixture = Fixture::new("ok-minimal");
    let sub = fixture.path("releases/webapp");
    let config = fs::canonicalize(fixture.path("vmcast.toml")).unwrap();
    for args in [&["check"][..], &["build", "--no-cache"][..]] {
        let out = vmcast(&sub, args, &[]);
        assert_success(&out);
        assert!(
            stderr(&out).starts_with(&format!("using {}\n", config.display())),
            "{}",
            stderr(&out)
        );
    }
    assert!(fixture.path("public/feed.xml").is_file());
    // Nowhere to be found: the error names the directory and the ways out.
    let empty = tempfile::tempdir().unwrap();
    let out = vmcast(empty.path(), &["build"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: no vmcast.toml in {} or any directory above it; pass -c FILE, or create a \
             site with `vmcast-gen init`\n",
            empty.path().display()
        )
    );
}

/// `verify .` in the site's source, instead of its output: the error says
/// so and names the directory to verify, where it said it could not read
/// feed.xml.minisig.
fn verify_of_a_sites_source_names_its_output_directory() {
    let fixture = Fixture::new("ok-minimal");
    for command in ["verify", "pull"] {
        let mut args = vec![command, ".", "--pubkey", "../known-answer/kat.pub"];
        if command == "pull" {
            args.extend(["--appliance", "webapp", "--dest", "../dest"]);
        }
        let out = fixture.run(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert_eq!(
            stderr(&out),
            "error: .: is a site's source (it holds vmcast.toml), not a built site: verify its \
             output directory, public, after `vmcast-gen build`\n",
            "{command}"
        );
    }
    let out = fixture.run(
        &["verify", "releases", "--pubkey", "../known-answer/kat.pub"],
        &[],
    );
    assert_eq!(
        stderr(&out),
        "error: releases: holds no feed.xml: it is not a site built by vmcast-gen\n"
    );
    assert_success(&fixture.build(&[]));
    assert_success(&fixture.run(
        &["verify", "public", "--pubkey", "../known-answer/kat.pub"],
        &[],
    ));
}

fn keygen_makes_missing_directories_and_refuses_before_asking() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vmcast(
        tmp.path(),
        &[
            "keygen",
            "-W",
            "-s",
            "keys/vmcast.key",
            "-p",
            "keys/vmcast.pub",
        ],
        &[],
    );
    assert_success(&out);
    let mode = fs::metadata(tmp.path().join("keys/vmcast.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Existing files: refused at once, with no password asked for or needed.
    let out = vmcast(
        tmp.path(),
        &["keygen", "-s", "keys/vmcast.key", "-p", "keys/vmcast.pub"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: keys/vmcast.key: already exists; pass --force to overwrite it\n"
    );
}

fn build_json_summary_for_ci() {
    let fixture = Fixture::new("ok-minimal");
    let out = fixture.build(&["--json", "--no-cache"]);
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["releases"], 2);
    assert_eq!(json["hashed"]["files"], 2);
    assert_eq!(
        json["images"][0]["path"],
        "images/webapp/1.1.0/webapp-1.1.0.raw"
    );
    assert_eq!(json["images"][0]["length"], 366);
    let image = fs::read(fixture.path("public/images/webapp/1.1.0/webapp-1.1.0.raw")).unwrap();
    assert_eq!(
        json["images"][0]["sha256"],
        vmcast_gen::model::Sha256::of(&image).to_hex()
    );
}

/// Every shell `completions` takes makes a script, and the README's table
/// of commands names them all.
fn completions_and_man_page() {
    let tmp = tempfile::tempdir().unwrap();
    let help = stdout(&vmcast(tmp.path(), &["completions", "--help"], &[]));
    let shells: Vec<&str> = help
        .split_once("[possible values: ")
        .unwrap()
        .1
        .split_once(']')
        .unwrap()
        .0
        .split(", ")
        .collect();
    assert!(shells.len() >= 5, "{shells:?}");
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `vmcast-gen completions "))
        .unwrap();
    for shell in shells {
        let out = vmcast(tmp.path(), &["completions", shell], &[]);
        assert_success(&out);
        assert!(stdout(&out).contains("verify"), "{shell}");
        assert!(row.contains(shell), "the README's {row:?} lacks {shell}");
    }
    let man = vmcast(tmp.path(), &["man"], &[]);
    assert_success(&man);
    assert!(
        stdout(&man).starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        stdout(&man)
    );
}

fn an_unencrypted_key_others_can_read_is_warned_about() {
    let fixture = Fixture::new("ok-minimal");
    let key = fixture.tmp.path().join("fixtures/known-answer/kat.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let warning = "warning: ../known-answer/kat.key: an unencrypted secret key that group or others \
                   can read (mode 0644): anyone who can read it can sign as you; chmod 600 it, or \
                   use an encrypted key (vmcast-gen keygen without -W)\n";
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(stderr(&out), warning);
    let out = fixture.run(&["check"], &[]);
    assert_success(&out);
    assert_eq!(stderr(&out), warning);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let out = fixture.build(&[]);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
}

/// A reader that stops reading (`verify --json | head`) ends the process
/// quietly with the status of a filter killed by SIGPIPE, not a panic.
fn a_closed_stdout_ends_quietly_with_status_141() {
    let fixture = Fixture::new("ok-minimal");
    assert_success(&fixture.build(&[]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmcast-gen"))
        .args([
            "verify",
            "public",
            "--pubkey",
            "../known-answer/kat.pub",
            "--json",
        ])
        .current_dir(&fixture.root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(stderr(&out), "");
    assert_eq!(out.status.code(), Some(141));
}
