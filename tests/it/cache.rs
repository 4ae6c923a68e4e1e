//! The hash cache and sidecars: a warm build reads nothing, and every way a
//! file can change under the same name forces a re-hash.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::common::{Fixture, assert_success, stderr, stdout};

tests! {
    warm_build_reads_no_image;
    cache_rehashes_after_touch;
    cache_rehashes_file_replaced_under_same_name;
    cache_rehashes_after_truncate;
    cache_rehashes_restored_copy_with_old_mtime;
    corrupt_cache_is_ignored_with_warning;
    no_cache_hashes_everything;
    verify_cache_reports_mismatch;
    sidecar_trusted_only_when_size_and_mtime_match;
    sidecar_ignored_unless_config_allows;
    progress_lines_only_when_asked_outside_a_terminal;
    link_mode_rebuilds_read_no_image;
    link_mode_rehashes_restored_copy_with_old_mtime;
    copy_mode_rebuild_takes_the_previous_copy;
    copy_mode_rebuild_copies_afresh_over_a_tampered_copy;
    notes_rewritten_with_the_old_size_and_mtime_are_read_again;
    archive_signatures_are_remembered_unless_verify_cache;
    rendered_files_are_remembered_unless_verify_cache;
    rendered_files_follow_a_changed_note;
    rendered_files_follow_a_changed_image;
    rendered_files_follow_a_changed_template;
    rendered_files_follow_a_changed_title;
    rendered_files_follow_a_changed_base_url;
    a_held_archive_whose_signature_is_forgotten_is_signed_again;
    a_control_file_in_the_spare_follows_its_image;
    a_control_file_in_the_spare_written_to_is_made_anew;
    a_control_file_in_a_remembered_state_is_kept_unread;
    archives_in_a_remembered_state_are_kept_unread;
    archives_in_the_spare_written_to_are_not_kept;
}

const IMAGE: &str = "releases/webapp/1.1.0/webapp-1.1.0.raw";
const PUBLISHED: &str = "public/images/webapp/1.1.0/webapp-1.1.0.raw";

/// A site with its own cache directory (also `plans`'s).
pub(crate) struct Site {
    pub(crate) fixture: Fixture,
    pub(crate) cache: PathBuf,
}

impl Site {
    pub(crate) fn new() -> Site {
        let fixture = Fixture::new("ok-minimal");
        let cache = fixture.tmp.path().join("cache");
        Site { fixture, cache }
    }

    /// A site whose images reach the output by `image_mode`.
    fn with_mode(mode: &str) -> Site {
        let site = Site::new();
        site.fixture
            .configure(&format!("image_mode = \"{mode}\"\n"));
        site
    }

    /// Builds with `extra` arguments, successfully or not.
    pub(crate) fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--cache-dir", self.cache.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.fixture.run(&args, &[])
    }

    fn build(&self, extra: &[&str]) -> Output {
        let out = self.run(extra);
        assert_success(&out);
        out
    }

    /// The summary's second line: what was hashed and what was not read.
    fn hashed_line(&self, extra: &[&str]) -> String {
        let out = self.build(extra);
        let text = stdout(&out);
        let line = text.lines().nth(1).unwrap().to_owned();
        // The time and rate vary; keep the counts.
        let (counts, rest) = line.split_once(" bytes), in ").unwrap();
        let not_read = rest.split_once("; ").unwrap().1;
        format!("{counts} bytes); {not_read}")
    }

    /// The cache file this site's builds write (beside it, the memos).
    pub(crate) fn cache_file(&self) -> PathBuf {
        let config = fs::canonicalize(self.fixture.path("vmcast.toml")).unwrap();
        let file = vmcast_gen::cache::HashCache::file_for(&self.cache, &config);
        assert!(file.is_file(), "{}", file.display());
        file
    }

    fn image(&self) -> PathBuf {
        self.fixture.path(IMAGE)
    }

    /// The image as published in the output.
    fn published(&self) -> PathBuf {
        self.fixture.path(PUBLISHED)
    }

    pub(crate) fn feed(&self) -> String {
        fs::read_to_string(self.fixture.path("public/feed.xml")).unwrap()
    }
}

fn sha256(data: &[u8]) -> String {
    vmcast_gen::model::Sha256::of(data).to_hex()
}

/// A SHA-256 as the cache writes it: its bytes.
fn digest(data: &[u8]) -> ByteBuf {
    ByteBuf::from(vmcast_gen::model::Sha256::of(data).0)
}

/// A file's state as the cache writes it: `(dev, ino, size, mtime_ns,
/// ctime_ns)`.
type State = (u64, u64, u64, i128, i128);

/// The hash cache's layout (`src/cache.rs`) up to the images' entries,
/// written out to read and edit it: postcard, its format, the program,
/// then what the build remembers besides the images, which come last.
#[derive(Serialize, Deserialize)]
struct Cache {
    format: String,
    program: Option<State>,
    signatures: BTreeMap<ByteBuf, String>,
    rendered: BTreeMap<ByteBuf, Rendered>,
    published: BTreeMap<ByteBuf, Vec<State>>,
}

#[derive(Serialize, Deserialize)]
struct Rendered {
    length: u64,
    sha256: ByteBuf,
}

/// Rewrites the cache file at `path` with `edit` made to all of it but
/// the images' entries, which are kept as they are.
fn edit_cache(path: &Path, edit: impl FnOnce(&mut Cache)) {
    let bytes = fs::read(path).unwrap();
    let (mut cache, entries) = postcard::take_from_bytes::<Cache>(&bytes).unwrap();
    assert_eq!(cache.format, "vmcast-gen-hash-cache-8");
    edit(&mut cache);
    let mut edited = postcard::to_allocvec(&cache).unwrap();
    edited.extend_from_slice(entries);
    fs::write(path, edited).unwrap();
}

const COLD: &str = "Hashed 2 image(s), 804 B (804 bytes); not read: 0 image(s), 0 B from the cache, 0 image(s), 0 B from sidecars";
const WARM: &str = "Hashed 0 image(s), 0 B (0 bytes); not read: 2 image(s), 804 B from the cache, 0 image(s), 0 B from sidecars";
const ONE: &str = "Hashed 1 image(s), 366 B (366 bytes); not read: 1 image(s), 438 B from the cache, 0 image(s), 0 B from sidecars";

fn warm_build_reads_no_image() {
    let site = Site::new();
    assert_eq!(site.hashed_line(&[]), COLD);
    let first = crate::common::snapshot_tree(&site.fixture.path("public"));
    assert_eq!(site.hashed_line(&[]), WARM);
    assert_eq!(
        crate::common::snapshot_tree(&site.fixture.path("public")),
        first
    );
}

fn cache_rehashes_after_touch() {
    let site = Site::new();
    site.build(&[]);
    let status = Command::new("touch").arg(site.image()).status().unwrap();
    assert!(status.success());
    assert_eq!(site.hashed_line(&[]), ONE);
}

fn cache_rehashes_file_replaced_under_same_name() {
    let site = Site::new();
    site.build(&[]);
    let old = fs::read(site.image()).unwrap();
    let new: Vec<u8> = old.iter().map(|b| b ^ 0x55).collect();
    let tmp = site.image().with_extension("new");
    fs::write(&tmp, &new).unwrap();
    fs::rename(&tmp, site.image()).unwrap();
    assert_eq!(site.hashed_line(&[]), ONE);
    assert!(site.feed().contains(&sha256(&new)));
}

fn cache_rehashes_after_truncate() {
    let site = Site::new();
    site.build(&[]);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(site.image())
        .unwrap();
    file.set_len(100).unwrap();
    let line = site.hashed_line(&[]);
    assert!(
        line.starts_with("Hashed 1 image(s), 100 B (100 bytes)"),
        "{line}"
    );
    assert!(
        site.feed()
            .contains(&sha256(&fs::read(site.image()).unwrap()))
    );
}

fn cache_rehashes_restored_copy_with_old_mtime() {
    let site = Site::new();
    site.build(&[]);
    let before = fs::metadata(site.image()).unwrap();
    // Same size, same inode, the old mtime put back: only ctime tells.
    let mut bytes = fs::read(site.image()).unwrap();
    bytes[0] ^= 0xff;
    fs::write(site.image(), &bytes).unwrap();
    let mtime = format!("@{}.{:09}", before.mtime(), before.mtime_nsec());
    let status = Command::new("touch")
        .args(["-m", "-d", &mtime])
        .arg(site.image())
        .status()
        .unwrap();
    assert!(status.success());
    let after = fs::metadata(site.image()).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (
            before.ino(),
            before.len(),
            before.mtime(),
            before.mtime_nsec()
        )
    );
    assert_eq!(site.hashed_line(&[]), ONE);
    assert!(site.feed().contains(&sha256(&bytes)));
}

fn corrupt_cache_is_ignored_with_warning() {
    let site = Site::new();
    site.build(&[]);
    let file = site.cache_file();
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let out = site.build(&[]);
    let warning = stderr(&out);
    assert!(
        warning.starts_with(&format!(
            "warning: {}: hash cache is corrupt (",
            file.display()
        )),
        "{warning}"
    );
    assert!(
        warning.ends_with("); ignored, every image is hashed\n"),
        "{warning}"
    );
    // It was rewritten, and serves the next build.
    assert_eq!(site.hashed_line(&[]), WARM);
}

fn no_cache_hashes_everything() {
    let site = Site::new();
    site.build(&[]);
    assert_eq!(site.hashed_line(&["--no-cache"]), COLD);
}

fn verify_cache_reports_mismatch() {
    let site = Site::new();
    site.build(&[]);
    // Corrupt one cached digest, keeping the file's state: the cache would
    // now serve a wrong hash (the cache is trusted like the key: keep it as
    // safe), and --verify-cache catches it.
    let file = site.cache_file();
    let image = fs::read(site.image()).unwrap();
    let real = sha256(&image);
    let mut zeroed = fs::read(&file).unwrap();
    let mut found = 0;
    while let Some(at) = (zeroed.windows(32)).position(|w| w == digest(&image).as_slice()) {
        zeroed[at..at + 32].fill(0);
        found += 1;
    }
    assert!(found > 0, "the cache holds the image's digest");
    fs::write(&file, zeroed).unwrap();
    let out = site.fixture.run(
        &[
            "build",
            "--verify-cache",
            "--cache-dir",
            site.cache.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: --verify-cache found 1 stale cache entry; the cache was rewritten from the files:\n  \
             {IMAGE}: the cache says {} (366 bytes), the file hashes to {real} (366 bytes)\n",
            "0".repeat(64)
        )
    );
    // The rewritten cache is right again.
    assert_eq!(site.hashed_line(&[]), WARM);
    assert!(site.feed().contains(&real));
}

const NOTES: &str = "releases/webapp/1.1.0/release.toml";

/// A notes file remembered beside the cache is not read on a warm build;
/// written to since, even with its size and mtime put back, it is read
/// again and the feed shows what it says now.
fn notes_rewritten_with_the_old_size_and_mtime_are_read_again() {
    let site = Site::new();
    site.build(&[]);
    assert!(site.feed().contains("Release 1.1.0."));
    let notes = site.fixture.path(NOTES);
    let before = fs::metadata(&notes).unwrap();
    let text = fs::read_to_string(&notes).unwrap();
    fs::write(&notes, text.replace("Release 1.1.0.", "Release 1.1.X.")).unwrap();
    let mtime = format!("@{}.{:09}", before.mtime(), before.mtime_nsec());
    let status = Command::new("touch")
        .args(["-m", "-d", &mtime])
        .arg(&notes)
        .status()
        .unwrap();
    assert!(status.success());
    let after = fs::metadata(&notes).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime_nsec()),
        (before.ino(), before.len(), before.mtime_nsec())
    );
    site.build(&[]);
    let feed = site.feed();
    assert!(
        feed.contains("Release 1.1.X.") && !feed.contains("Release 1.1.0."),
        "{feed}"
    );
}

/// An archive is signed once: the cache keeps its signature, and a build
/// takes it from there (it is trusted like the key: edited here to show
/// which one the build used) unless `--verify-cache` says to sign afresh.
fn archive_signatures_are_remembered_unless_verify_cache() {
    let site = archived_site();
    site.build(&[]);
    let sig = site.fixture.path("public/archive/1.xml.minisig");
    let signed = fs::read_to_string(&sig).unwrap();
    edit_cache(&site.cache_file(), |cache| {
        let remembered = &mut cache.signatures;
        assert_eq!(remembered.len(), 1, "{remembered:?}");
        assert!(remembered.values().all(|v| v == &signed));
        for value in remembered.values_mut() {
            *value = "remembered\n".into();
        }
    });
    site.build(&[]);
    assert_eq!(fs::read_to_string(&sig).unwrap(), "remembered\n");
    site.build(&["--verify-cache"]);
    assert_eq!(fs::read_to_string(&sig).unwrap(), signed);
}

/// `vmcast-gen hash` in the build job, `build` with trust_sidecars later.
fn sidecar_trusted_only_when_size_and_mtime_match() {
    let site = Site::new();
    // A sidecar stands for the digest, not for the zsync control file,
    // which needs a read: none here.
    site.fixture
        .configure("trust_sidecars = true\nzsync = false\n");
    let out = site.fixture.run(&["hash", IMAGE], &[]);
    assert_success(&out);
    let real = sha256(&fs::read(site.image()).unwrap());
    assert_eq!(stdout(&out), format!("{real}  {IMAGE}.vmcast-hash\n"));
    // Prove the sidecar is used and not the file: give it another digest.
    let sidecar = site.fixture.path(&format!("{IMAGE}.vmcast-hash"));
    let fake = "ab".repeat(32);
    fs::write(
        &sidecar,
        fs::read_to_string(&sidecar).unwrap().replace(&real, &fake),
    )
    .unwrap();
    let line = site.hashed_line(&["--no-cache"]);
    assert_eq!(
        line,
        "Hashed 1 image(s), 438 B (438 bytes); not read: 0 image(s), 0 B from the cache, 1 image(s), 366 B from sidecars"
    );
    assert!(site.feed().contains(&fake));
    // Touched since: the sidecar no longer describes the file.
    let touch = Command::new("touch")
        .args(["-m", "-d", "@1700000000"])
        .arg(site.image())
        .status();
    assert!(touch.unwrap().success());
    let out = site.build(&["--no-cache"]);
    assert_eq!(
        stderr(&out),
        format!(
            "warning: {IMAGE}.vmcast-hash: size or mtime differ from the image's; the image is hashed instead\n"
        )
    );
    assert!(site.feed().contains(&real));
}

fn sidecar_ignored_unless_config_allows() {
    let site = Site::new();
    assert_success(&site.fixture.run(&["hash", IMAGE], &[]));
    let sidecar = site.fixture.path(&format!("{IMAGE}.vmcast-hash"));
    let real = sha256(&fs::read(site.image()).unwrap());
    fs::write(
        &sidecar,
        fs::read_to_string(&sidecar)
            .unwrap()
            .replace(&real, &"cd".repeat(32)),
    )
    .unwrap();
    assert_eq!(site.hashed_line(&[]), COLD);
    assert!(site.feed().contains(&real));
}

fn progress_lines_only_when_asked_outside_a_terminal() {
    let site = Site::new();
    let quiet = site.build(&["--no-cache"]);
    assert_eq!(stderr(&quiet), "");
    let loud = site.build(&["--no-cache", "--progress"]);
    let text = stderr(&loud);
    assert!(
        text.starts_with("hashing: 804 B of 804 B (100%), "),
        "{text}"
    );
    assert!(text.ends_with(", 2/2 files\n"), "{text}");
}

/// Making the output's hard link and removing the previous output's both
/// move the image's ctime: the cache must still hit on every rebuild.
fn link_mode_rebuilds_read_no_image() {
    let site = Site::with_mode("link");
    assert_eq!(site.hashed_line(&[]), COLD);
    let image = fs::metadata(site.image()).unwrap();
    assert_eq!(fs::metadata(site.published()).unwrap().ino(), image.ino());
    assert_eq!(site.hashed_line(&[]), WARM);
    assert_eq!(site.hashed_line(&[]), WARM);
    assert_eq!(fs::metadata(site.published()).unwrap().ino(), image.ino());
}

/// The ctime the build's own links move is taken up, but a write that puts
/// the old mtime back is still caught.
fn link_mode_rehashes_restored_copy_with_old_mtime() {
    let site = Site::with_mode("link");
    site.build(&[]);
    site.build(&[]);
    let before = fs::metadata(site.image()).unwrap();
    let mut bytes = fs::read(site.image()).unwrap();
    bytes[0] ^= 0xff;
    fs::write(site.image(), &bytes).unwrap();
    let mtime = format!("@{}.{:09}", before.mtime(), before.mtime_nsec());
    let status = Command::new("touch")
        .args(["-m", "-d", &mtime])
        .arg(site.image())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(site.hashed_line(&[]), ONE);
    assert!(site.feed().contains(&sha256(&bytes)));
}

/// A copy the previous build made of the same bytes is taken by hard link
/// from the previous output, and again on the build after.
fn copy_mode_rebuild_takes_the_previous_copy() {
    let site = Site::with_mode("copy");
    assert_eq!(site.hashed_line(&[]), COLD);
    let first = fs::metadata(site.published()).unwrap();
    assert_ne!(first.ino(), fs::metadata(site.image()).unwrap().ino());
    for _ in 0..2 {
        assert_eq!(site.hashed_line(&[]), WARM);
        assert_eq!(fs::metadata(site.published()).unwrap().ino(), first.ino());
        assert_eq!(
            fs::read(site.published()).unwrap(),
            fs::read(site.image()).unwrap()
        );
    }
}

/// A previous copy that was written to since, even with its size and mtime
/// put back, is not taken: the image is copied afresh.
fn copy_mode_rebuild_copies_afresh_over_a_tampered_copy() {
    let site = Site::with_mode("copy");
    site.build(&[]);
    let before = fs::metadata(site.published()).unwrap();
    let mut bytes = fs::read(site.published()).unwrap();
    bytes[0] ^= 0xff;
    fs::write(site.published(), &bytes).unwrap();
    let mtime = format!("@{}.{:09}", before.mtime(), before.mtime_nsec());
    let status = Command::new("touch")
        .args(["-m", "-d", &mtime])
        .arg(site.published())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(site.hashed_line(&[]), WARM);
    assert_ne!(fs::metadata(site.published()).unwrap().ino(), before.ino());
    assert_eq!(
        fs::read(site.published()).unwrap(),
        fs::read(site.image()).unwrap()
    );
}

/// A site with `feed_items = 1` and ten old releases of webapp besides
/// ok-minimal's two: archive 1 and webapp's history page.
fn archived_site() -> Site {
    let site = Site::new();
    site.fixture.configure("feed_items = 1\n");
    for i in 0..10 {
        let dir = site.fixture.path(&format!("releases/webapp/0.{i}.0"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("release.toml"),
            format!(
                "version = \"0.{i}.0\"\ndate = 2025-01-{:02}\nnotes = \"Old.\"\n",
                i + 1
            ),
        )
        .unwrap();
        fs::write(dir.join(format!("webapp-0.{i}.0.raw")), format!("{i}\n")).unwrap();
    }
    site
}

/// The archives and history pages under `dir`, with their signatures.
fn rendered_files(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = crate::common::snapshot_tree(dir);
    files.retain(|path, _| path.starts_with("archive") || path.starts_with("history"));
    files
}

/// The builds each rendered file is taken unrendered from: the third on,
/// which finds the spare, and the cache the second wrote.
fn warm(site: &Site) {
    for _ in 0..3 {
        site.build(&[]);
    }
}

/// What a warm build gives after `change`: the archives and history pages
/// a cold build (no cache, no output) makes of the changed inputs, and
/// `changed` of them differ from before.
fn rendered_files_follow(change: impl FnOnce(&Site), changed: &[&str]) {
    let site = archived_site();
    warm(&site);
    let public = site.fixture.path("public");
    let before = rendered_files(&public);
    assert!(
        before.contains_key(&PathBuf::from("archive/1.xml")),
        "{before:?}"
    );
    change(&site);
    site.build(&[]);
    let after = rendered_files(&public);
    let cold_dir = site.fixture.tmp.path().join("cold");
    let cold = site
        .fixture
        .build(&["--no-cache", "--out", cold_dir.to_str().unwrap()]);
    assert_success(&cold);
    assert!(
        after == rendered_files(&cold_dir),
        "a warm build differs from a cold one"
    );
    let mut differ: Vec<String> = after
        .iter()
        .filter(|(path, bytes)| before.get(*path) != Some(bytes))
        .map(|(path, _)| path.display().to_string())
        .collect();
    differ.sort();
    assert_eq!(differ, changed);
}

fn rendered_files_follow_a_changed_note() {
    rendered_files_follow(
        |site| {
            let notes = site.fixture.path("releases/webapp/0.3.0/release.toml");
            let text = fs::read_to_string(&notes).unwrap();
            // The history page shows whether a release is critical, not
            // its notes.
            fs::write(&notes, format!("{text}critical = true\n")).unwrap();
        },
        &[
            "archive/1.xml",
            "archive/1.xml.minisig",
            "history/webapp.html",
        ],
    );
}

fn rendered_files_follow_a_changed_image() {
    rendered_files_follow(
        |site| {
            let image = site.fixture.path("releases/webapp/0.3.0/webapp-0.3.0.raw");
            fs::write(image, "three\n").unwrap();
        },
        &[
            "archive/1.xml",
            "archive/1.xml.minisig",
            "history/webapp.html",
        ],
    );
}

fn rendered_files_follow_a_changed_template() {
    rendered_files_follow(
        |site| {
            let builtin =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/history.html");
            let text = fs::read_to_string(builtin).unwrap();
            let dir = site.fixture.path("templates");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("history.html"), format!("{text}<!-- own -->\n")).unwrap();
        },
        &["history/webapp.html"],
    );
}

/// Replaces `from` with `to` in the fixture's vmcast.toml.
fn reconfigure(site: &Site, from: &str, to: &str) {
    let path = site.fixture.path("vmcast.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    fs::write(path, text.replace(from, to)).unwrap();
}

fn rendered_files_follow_a_changed_title() {
    rendered_files_follow(
        |site| {
            reconfigure(
                site,
                "title = \"Fixture: minimal site\"",
                "title = \"Renamed\"",
            )
        },
        &[
            "archive/1.xml",
            "archive/1.xml.minisig",
            "history/webapp.html",
        ],
    );
}

fn rendered_files_follow_a_changed_base_url() {
    rendered_files_follow(
        |site| {
            reconfigure(
                site,
                "base_url = \"https://downloads.example.com/site/\"",
                "base_url = \"https://mirror.example.org/site/\"",
            )
        },
        &[
            "archive/1.xml",
            "archive/1.xml.minisig",
            "history/webapp.html",
        ],
    );
}

/// An archive or history page whose inputs did not change is taken from
/// the spare unrendered, when the spare's file hashes to the digest the
/// cache remembers for those inputs; `--verify-cache` renders it afresh.
fn rendered_files_are_remembered_unless_verify_cache() {
    let site = archived_site();
    warm(&site);
    let public = site.fixture.path("public");
    let rendered = rendered_files(&public);
    let archive = &rendered[&PathBuf::from("archive/1.xml")];
    // The spare, which the next build stages in, and the cache made to
    // agree on other bytes: only a build that takes them unrendered
    // publishes them.
    let forged = b"<rss>remembered</rss>\n";
    edit_cache(&site.cache_file(), |cache| {
        let remembered = &mut cache.rendered;
        // The archive and the history page.
        assert_eq!(remembered.len(), 2);
        let entry = remembered
            .values_mut()
            .find(|v| v.sha256 == digest(archive))
            .expect("the archive's digest is remembered");
        *entry = Rendered {
            length: forged.len() as u64,
            sha256: digest(forged),
        };
    });
    fs::write(site.fixture.path(".public.spare/archive/1.xml"), forged).unwrap();
    site.build(&[]);
    assert_eq!(fs::read(public.join("archive/1.xml")).unwrap(), forged);
    site.build(&["--verify-cache"]);
    assert_eq!(rendered_files(&public), rendered);
}

/// The control file of webapp 1.1.0, as a warm build publishes it after
/// `change`, and as a cold build (no cache, no output) makes it of the
/// changed inputs.
fn control_file_after(change: impl FnOnce(&Site)) -> (Vec<u8>, Vec<u8>) {
    let site = Site::with_mode("link");
    site.fixture.configure("zsync = true\n");
    // The third build finds the control file in the spare, as recorded.
    warm(&site);
    change(&site);
    site.build(&[]);
    let control = format!("{PUBLISHED}.zsync");
    let warm = fs::read(site.fixture.path(&control)).unwrap();
    let cold_dir = site.fixture.tmp.path().join("cold");
    let cold = site
        .fixture
        .build(&["--no-cache", "--out", cold_dir.to_str().unwrap()]);
    assert_success(&cold);
    let cold = fs::read(cold_dir.join(control.strip_prefix("public/").unwrap())).unwrap();
    (warm, cold)
}

fn a_control_file_in_the_spare_follows_its_image() {
    let (before, _) = control_file_after(|_| {});
    let (warm, cold) = control_file_after(|site| {
        fs::write(site.image(), vec![7u8; 5000]).unwrap();
    });
    assert!(warm == cold, "a warm build differs from a cold one");
    assert!(warm != before);
}

/// The spare's control file is a hard link to the output's: a write to
/// it moves the state the cache recorded, and it is no longer taken.
fn a_control_file_in_the_spare_written_to_is_made_anew() {
    let (warm, cold) = control_file_after(|site| {
        let spare = site.fixture.path(&format!(".{PUBLISHED}.zsync").replacen(
            "public/",
            "public.spare/",
            1,
        ));
        let mut bytes = fs::read(&spare).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&spare, bytes).unwrap();
    });
    assert!(warm == cold, "a tampered control file was published");
}

/// The cache records the state of a published control file as holding
/// its digest's bytes, and a control file the spare holds in a state the
/// cache knows is kept with one stat, unread: made here a file of its own
/// (no longer the output's hard link) with other bytes, the cache made to
/// vouch for its state, it is what the build publishes. `--verify-cache`
/// makes it afresh.
fn a_control_file_in_a_remembered_state_is_kept_unread() {
    let site = Site::with_mode("link");
    site.fixture.configure("zsync = true\n");
    warm(&site);
    let control = format!("{PUBLISHED}.zsync");
    let published = site.fixture.path(&control);
    let made = fs::read(&published).unwrap();
    // Taken first: the spare's copy is a hard link of it.
    let known = state_of(&published);
    let spare = site
        .fixture
        .path(&format!(".{control}").replacen("public/", "public.spare/", 1));
    fs::remove_file(&spare).unwrap();
    let forged = b"zsync: kept unread\n";
    fs::write(&spare, forged).unwrap();
    edit_cache(&site.cache_file(), |cache| {
        let states = cache.published.get_mut(&digest(&made)).unwrap();
        assert!(states.contains(&known), "{states:?}");
        states.push(state_of(&spare));
    });
    site.build(&[]);
    assert_eq!(fs::read(&published).unwrap(), forged);
    site.build(&["--verify-cache"]);
    assert_eq!(fs::read(&published).unwrap(), made);
}

/// An archive taken from the spare unread is read again to be signed when
/// its signature is not remembered (as after a change of key).
fn a_held_archive_whose_signature_is_forgotten_is_signed_again() {
    let site = archived_site();
    warm(&site);
    let public = site.fixture.path("public");
    let rendered = rendered_files(&public);
    edit_cache(&site.cache_file(), |cache| {
        assert_eq!(cache.rendered.len(), 2);
        assert_eq!(cache.signatures.len(), 1);
        cache.signatures.clear();
    });
    site.build(&[]);
    assert_eq!(rendered_files(&public), rendered);
}

/// The state of a file as the cache writes it.
fn state_of(path: &Path) -> State {
    let meta = fs::symlink_metadata(path).unwrap();
    let ns = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        ns(meta.mtime(), meta.mtime_nsec()),
        ns(meta.ctime(), meta.ctime_nsec()),
    )
}

/// An archive in the spare, in a state the cache knows to hold the
/// archive's bytes, is kept with one stat, unread: made here to hold other
/// bytes, with the cache made to vouch for its new state, it is what the
/// build publishes. `--verify-cache` renders it afresh.
fn archives_in_a_remembered_state_are_kept_unread() {
    let site = archived_site();
    warm(&site);
    let public = site.fixture.path("public");
    let rendered = rendered_files(&public);
    let spare = site.fixture.path(".public.spare/archive/1.xml");
    let forged = b"<rss>kept unread</rss>\n";
    fs::write(&spare, forged).unwrap();
    let archive = digest(&rendered[&PathBuf::from("archive/1.xml")]);
    edit_cache(&site.cache_file(), |cache| {
        let states = cache.published.get_mut(&archive).unwrap();
        // This output's copy and the spare's, which the next build stages in.
        assert_eq!(states.len(), 2, "{states:?}");
        states.push(state_of(&spare));
    });
    site.build(&[]);
    assert_eq!(fs::read(public.join("archive/1.xml")).unwrap(), forged);
    site.build(&["--verify-cache"]);
    assert_eq!(rendered_files(&public), rendered);
}

/// An archive or its signature written to in the spare is no longer in the
/// state the cache knows: it is read, found to differ, and written anew.
fn archives_in_the_spare_written_to_are_not_kept() {
    let site = archived_site();
    warm(&site);
    let public = site.fixture.path("public");
    let rendered = rendered_files(&public);
    for name in ["archive/1.xml", "archive/1.xml.minisig"] {
        let spare = site.fixture.path(&format!(".public.spare/{name}"));
        let mut bytes = fs::read(&spare).unwrap();
        bytes[10] ^= 1;
        fs::write(&spare, bytes).unwrap();
    }
    site.build(&[]);
    assert_eq!(rendered_files(&public), rendered);
}
