//! Directory listings remembered between builds (`src/listing.rs`): a
//! walk takes a listing unread only while its directory is in the state
//! it was listed in, and a change to a directory shows in its ctime,
//! whatever its mtime says.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmcast_gen::cache::HashCache;

use crate::common::{Fixture, assert_success, stderr};

tests! {
    a_remembered_listing_is_taken_unread;
    a_release_added_where_the_listing_is_remembered_is_found;
    a_link_planted_in_a_remembered_spare_directory_is_found;
}

/// Past `listing::SETTLED`: a directory changed before this is remembered
/// when next listed.
fn settle() {
    std::thread::sleep(Duration::from_millis(3200));
}

/// The fixture's listings file for `tree` in the cache directory `cache`,
/// named as the build names it.
fn listings(fixture: &Fixture, cache: &Path, tree: &str) -> PathBuf {
    let config = fs::canonicalize(fixture.path("vmcast.toml")).unwrap();
    HashCache::listings_file(&HashCache::file_for(cache, &config), tree)
}

fn build(fixture: &Fixture, cache: &Path) -> std::process::Output {
    fixture.build(&["--cache-dir", cache.to_str().unwrap()])
}

/// Builds `before` times, waits until what they changed has settled, then
/// builds `after` times: the last of those remembers listings.
fn remembering(fixture: &Fixture, before: usize, after: usize) -> PathBuf {
    let cache = fixture.tmp.path().join("cache");
    for _ in 0..before {
        assert_success(&build(fixture, &cache));
    }
    settle();
    for _ in 0..after {
        assert_success(&build(fixture, &cache));
    }
    cache
}

/// Sets a directory's mtime to `mtime`, as `touch -d` does (which moves its
/// ctime to now).
fn set_mtime(dir: &Path, mtime: std::time::SystemTime) {
    let times = fs::FileTimes::new().set_modified(mtime);
    fs::File::open(dir).unwrap().set_times(times).unwrap();
    assert_eq!(fs::metadata(dir).unwrap().modified().unwrap(), mtime);
}

/// The memo's layout (`src/listing.rs`), written out to read and forge
/// it: postcard, each tree's listings a blob of its own.
#[derive(Serialize, Deserialize)]
struct Memo {
    format: String,
    trees: Vec<Tree>,
}

#[derive(Serialize, Deserialize)]
struct Tree {
    root: (u64, u64),
    #[serde(with = "serde_bytes")]
    dirs: Vec<u8>,
}

/// By path in the tree: the directory's `[[dev, ino, size, mtime_ns,
/// ctime_ns], mode]`, and its entries, sorted by name, each with its
/// inode number.
type Dirs = BTreeMap<String, (((u64, u64, u64, i128, i128), u32), Vec<(String, Kind, u64)>)>;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// The listings of each tree the memo at `path` holds.
fn remembered(path: &Path) -> Vec<Dirs> {
    let memo: Memo = postcard::from_bytes(&fs::read(path).unwrap()).unwrap();
    assert_eq!(memo.format, "vmcast-gen listings 6");
    let dirs = |tree: &Tree| postcard::from_bytes(&tree.dirs).unwrap();
    memo.trees.iter().map(dirs).collect()
}

/// Rewrites the memo at `path` with `edit` made to each tree's listings.
fn forge(path: &Path, edit: impl Fn(&mut Dirs)) {
    let mut memo: Memo = postcard::from_bytes(&fs::read(path).unwrap()).unwrap();
    for tree in &mut memo.trees {
        let mut dirs: Dirs = postcard::from_bytes(&tree.dirs).unwrap();
        edit(&mut dirs);
        tree.dirs = postcard::to_allocvec(&dirs).unwrap();
    }
    fs::write(path, postcard::to_allocvec(&memo).unwrap()).unwrap();
}

/// Adds an entry `name` of `kind` to the remembered listing of `dir`.
fn add_entry(dirs: &mut Dirs, dir: &str, name: &str, kind: Kind) {
    let entries = &mut dirs.get_mut(dir).expect("the listing is remembered").1;
    entries.push((name.to_owned(), kind, 0));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
}

/// A release directory's remembered listing is what the walk goes by: one
/// that names a file the directory does not hold (written into the memo
/// here) makes the build warn of it. A memo with a name that leads out of
/// its directory is discarded whole, and one that is not a memo is
/// ignored.
fn a_remembered_listing_is_taken_unread() {
    let fixture = Fixture::new("ok-minimal");
    let cache = remembering(&fixture, 1, 1);
    let memo = listings(&fixture, &cache, "releases");
    let written = fs::read(&memo).unwrap();
    let trees = remembered(&memo);
    assert_eq!(trees.len(), 1);
    let listed: Vec<&str> = trees[0]["webapp/1.1.0"]
        .1
        .iter()
        .map(|(name, ..)| name.as_str())
        .collect();
    assert_eq!(listed, ["release.toml", "webapp-1.1.0.raw"]);
    forge(&memo, |dirs| {
        add_entry(dirs, "webapp/1.1.0", "ghost.txt", Kind::File)
    });
    let out = build(&fixture, &cache);
    assert_success(&out);
    assert!(
        stderr(&out).contains("ghost.txt: not an image (unknown extension), not published"),
        "{}",
        stderr(&out)
    );

    fs::write(&memo, &written).unwrap();
    forge(&memo, |dirs| {
        add_entry(dirs, "webapp/1.1.0", "../1.0.0", Kind::Dir)
    });
    let out = build(&fixture, &cache);
    assert_success(&out);
    assert_eq!(stderr(&out), "");

    fs::write(&memo, "not a memo").unwrap();
    let out = build(&fixture, &cache);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
}

/// A release added to an appliance's directory whose listing is
/// remembered, the directory's mtime then set back as it was: its ctime
/// moved, so the walk lists it again and publishes the release.
fn a_release_added_where_the_listing_is_remembered_is_found() {
    let fixture = Fixture::new("ok-minimal");
    let cache = remembering(&fixture, 1, 1);
    let trees = remembered(&listings(&fixture, &cache, "releases"));
    assert!(trees[0].contains_key("webapp"));

    let dir = fixture.path("releases/webapp");
    let mtime = fs::metadata(&dir).unwrap().modified().unwrap();
    fixture.add_webapp_release("1.2.0", b"the new release's image\n");
    set_mtime(&dir, mtime);
    let out = build(&fixture, &cache);
    assert_success(&out);
    assert_eq!(
        fs::read(fixture.path("public/images/webapp/1.2.0/webapp-1.2.0.raw")).unwrap(),
        b"the new release's image\n"
    );
}

/// The spare's listings remembered (both sites that take turns as the
/// spare), then a symbolic link planted in one of its directories, whose
/// mtime is set back as it was: its ctime moved, so the survey lists it
/// again, finds the link and discards the spare.
fn a_link_planted_in_a_remembered_spare_directory_is_found() {
    let fixture = Fixture::new("ok-minimal");
    fixture.configure("image_mode = \"copy\"\n");
    // Two builds make both sites; the next two remember one each.
    let cache = remembering(&fixture, 2, 3);
    let trees = remembered(&listings(&fixture, &cache, "spare"));
    assert_eq!(trees.len(), 2);
    assert!(
        trees
            .iter()
            .all(|dirs| dirs.contains_key("images/webapp/1.1.0"))
    );

    let dir = fixture.path(".public.spare/images/webapp/1.1.0");
    let mtime = fs::metadata(&dir).unwrap().modified().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("zz-link")).unwrap();
    set_mtime(&dir, mtime);
    let out = build(&fixture, &cache);
    assert_success(&out);
    assert_eq!(
        stderr(&out),
        "warning: .public.spare/images/webapp/1.1.0/zz-link: is a symbolic link; the spare \
         site is not what a build leaves, so it was removed and this build starts from an \
         empty directory\n"
    );
    assert!(!fixture.path("public/images/webapp/1.1.0/zz-link").exists());
}
