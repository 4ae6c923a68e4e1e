//! Finds the releases under the releases directory and the images of each,
//! refusing anything that escapes its tree. Produces a sorted plan that the
//! hash stage reads; it opens no image.

use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use walkdir::WalkDir;

use crate::listing::{Kind, Lister, Listings};

use crate::config::{Config, join_url};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::media;
use crate::model::{
    Compression, FileName, FileState, ImageFormat, ImageLayout, ImageSource, KeyFile, Line, Name,
    RelPath, ReleaseInfo,
};
use crate::notes::{self, Located, Notes};
use crate::supply;

mod memo;

pub use memo::Plans;

/// A release whose images are known but not yet hashed.
#[derive(Debug, Clone)]
pub struct PlannedRelease {
    pub info: ReleaseInfo,
    /// Primary first, then by file name.
    pub images: Vec<ImageSource>,
    /// Its SBOMs and provenance, not read yet.
    pub supply: Vec<supply::Planned>,
}

impl PlannedRelease {
    /// Where each of its files is published, and where it comes from.
    fn files(&self) -> impl Iterator<Item = (&RelPath, &Path)> {
        let images = self
            .images
            .iter()
            .map(|i| (&i.site_path, i.source.as_path()));
        images.chain(
            self.supply
                .iter()
                .map(|s| (&s.site_path, s.source.as_path())),
        )
    }
}

/// What the scan found, in publishing order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub releases: Vec<PlannedRelease>,
    /// Things worth a look that do not stop the build.
    pub warnings: Vec<crate::Warning>,
    /// How many releases' plans were remembered, not made again.
    pub remembered: usize,
}

impl Plan {
    pub fn images(&self) -> impl Iterator<Item = &ImageSource> {
        self.releases.iter().flat_map(|r| r.images.iter())
    }

    /// Refuses a plan that would publish a secret key: an image or a
    /// supply-chain file with a key file's device and inode, whatever name
    /// led the scan to it (the key itself, a symbolic or a hard link).
    /// Every later open of a planned file must land on the identity the
    /// scan recorded, so none of them can reach a key either.
    pub fn refuse_secret_keys(&self, keys: &[KeyFile]) -> Result<()> {
        let planned = self.releases.iter().flat_map(|r| {
            let images = r.images.iter().map(|i| (&i.source, i.seen.state.id()));
            images.chain(r.supply.iter().map(|s| (&s.source, s.file_id)))
        });
        for (source, id) in planned {
            if let Some(key) = keys.iter().find(|k| k.id == id) {
                return Err(Error::file(
                    source,
                    format_args!(
                        "is the secret key {} (the same device and inode); refusing to publish it",
                        key.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The releases directory as one walk found it: each notes file, with the
/// files beside it, in walk order.
pub struct Walked {
    /// The releases directory, resolved.
    root_real: PathBuf,
    found: Vec<(PathBuf, Vec<Beside>)>,
}

/// A file (or anything but a directory) beside a notes file, as the walk
/// found it.
pub struct Beside {
    path: PathBuf,
    name: String,
    symlink: bool,
}

/// Walks the releases directory: the part of a scan that reads no file,
/// so that a build can load what it remembers meanwhile. The directories'
/// listings are remembered in `listings`, if given ([`crate::listing`]).
pub fn walk(config: &Config, listings: Option<&Path>) -> Result<Walked> {
    let root = &config.releases_dir;
    let meta = fsutil::metadata(root)?;
    if !meta.is_dir() {
        return Err(Error::file(root, "is not a directory (releases_dir)"));
    }
    let root_real = fsutil::canonicalize(root)?;
    let memo = Listings::read(listings, root);
    let mut lister = Lister::new(&memo, &meta);
    let found = walk_tree(config, root, &root_real, &mut lister, &meta)?;
    lister.save();
    Ok(Walked { root_real, found })
}

/// Scans the releases the walk found and their images, failing at the
/// first problem, with what the scan warned of before it
/// ([`Error::Warned`]): a file that is not published may be the image the
/// release lacks. With `imageless`, a release without images is planned
/// with none (its images may come from the previous site) instead of
/// refused. A notes file `plans` remembers in its present state is not
/// read again, and a release it remembers unchanged is not planned again
/// ([`memo`]); what this scan read and planned is remembered there.
pub fn scan(
    config: &Config,
    walked: Walked,
    imageless: bool,
    threads: usize,
    plans: Option<Plans>,
) -> Result<Plan> {
    let key = memo::key(config, imageless, &walked.root_real);
    let entries = plans.as_ref().map(Plans::entries);
    let memo = (plans.as_ref().zip(entries.as_ref()))
        .map(|(plans, entries)| (entries, plans.made_under(&key)));
    let (plan, mut problems, remembered) =
        scan_with(config, walked, true, imageless, false, threads, memo);
    if let Some((plans, entries)) = plans.as_ref().zip(entries.as_ref())
        && problems.is_empty()
    {
        plans.save(&key, &remembered.kept, &remembered.made, entries);
    }
    match (problems.is_empty(), plan.warnings.is_empty()) {
        (true, _) => Ok(plan),
        (false, true) => Err(problems.remove(0)),
        (false, false) => Err(Error::Warned {
            warnings: plan.warnings,
            error: Box::new(problems.remove(0)),
        }),
    }
}

/// Scans every release, going on past a bad one and returning every
/// problem found, one per release at most; with `images = false` no image
/// is looked for, and with `imageless` a release without images is no
/// problem, as in [`scan`]. For `vmcast-gen check`.
pub fn scan_all(
    config: &Config,
    images: bool,
    imageless: bool,
    threads: usize,
) -> Result<(Plan, Vec<Error>)> {
    let walked = walk(config, None)?;
    let (plan, problems, _) = scan_with(config, walked, images, imageless, true, threads, None);
    Ok((plan, problems))
}

/// The memo's entries a scan keeps as they were (by their key there),
/// those it made, and how many plans it took from the memo.
#[derive(Default)]
struct Remembered {
    kept: Vec<String>,
    made: Vec<(String, memo::Entry<'static>)>,
    plans: usize,
}

/// What the scan of one release gives: its key for the duplicate check,
/// its plan, its warnings, and what the memo keeps of it.
type Scanned = (
    (Name, String),
    Result<PlannedRelease>,
    Vec<crate::Warning>,
    Option<Memo>,
);

/// A plan the memo had, an entry it has as it is, or one to remember.
enum Memo {
    Plan(String),
    Kept(String),
    Made(String, Box<memo::Entry<'static>>),
}

#[allow(clippy::too_many_arguments)]
fn scan_with(
    config: &Config,
    walked: Walked,
    images: bool,
    imageless: bool,
    keep_going: bool,
    threads: usize,
    memo: Option<(&memo::Entries, bool)>,
) -> (Plan, Vec<Error>, Remembered) {
    let known = memo.map(|(entries, _)| entries as &dyn notes::Known);
    let root = &config.releases_dir;
    let Walked { root_real, found } = walked;
    let mut warnings = Vec::new();

    // Each release is read and planned on its own, on every core: with a
    // thousand releases this is most of a rebuild's scan. Only what spans
    // releases (a version declared twice) is checked in order after, and
    // the first problem in walk order is the one reported.
    let tree = Tree {
        config,
        releases_root: &root_real,
        imageless,
    };
    // Their plans only when made under this build's key.
    let remembered = memo
        .filter(|(_, same_key)| *same_key)
        .map(|(entries, _)| entries);
    let planned = crate::par::map(threads, &found, |(path, files)| -> Result<Scanned> {
        // The walk follows no symbolic link: below the resolved root, the
        // path it took is the file's resolved path.
        let key = root_real.join(path.strip_prefix(root).unwrap_or(path));
        let dir = path.parent().expect("a notes file has a parent directory");
        let memo_key = fsutil::path_text(&key);
        // Only an entry with a plan spares the notes file's stat below.
        if let Some(entry) = remembered.and_then(|r| r.get(memo_key.as_ref()))
            && entry.planned()
            && let Ok(meta) = fsutil::symlink_metadata(path)
            && meta.is_file()
        {
            let state = FileState::of(&meta);
            let dir_real = key.parent().expect("a notes file has a parent directory");
            if let Some(release) = memo::reuse(entry, path, &state, files, dir, dir_real) {
                let info = &release.info;
                let id = (info.appliance.clone(), info.version.to_string());
                let kept = Memo::Plan(memo_key.into_owned());
                return Ok((id, Ok(release), Vec::new(), Some(kept)));
            }
        }
        let (notes, read) = notes::read(path, &key, known)?;
        let appliance = appliance_of(config, &notes, dir)?;
        let id = (appliance.clone(), notes.version.to_string());
        let patterns = notes.images.is_some();
        let mut warnings = Vec::new();
        let release = if images {
            plan_release(&tree, notes, dir, files, appliance, &mut warnings)
        } else {
            Ok(PlannedRelease {
                info: release_info(config, notes, appliance),
                images: Vec::new(),
                supply: Vec::new(),
            })
        };
        let planned = release.as_ref().ok().filter(|_| warnings.is_empty());
        let made = (read.filter(|_| memo.is_some())).map(|read| {
            let (key, entry) = memo::entry(read, planned, files, patterns);
            // A release the memo keeps no plan of (not the plain case)
            // is remembered as it was: the memo need not be written.
            match remembered.and_then(|r| r.get(key.as_str())) == Some(&entry) {
                true => Memo::Kept(key),
                false => Memo::Made(key, Box::new(entry)),
            }
        });
        Ok((id, release, warnings, made))
    });
    let mut memo = Remembered::default();
    let mut releases: Vec<PlannedRelease> = Vec::new();
    let mut problems = Vec::new();
    let mut seen: FxHashMap<(Name, String), &Path> =
        FxHashMap::with_capacity_and_hasher(found.len(), Default::default());
    let mut published: FxHashMap<RelPath, PathBuf> =
        FxHashMap::with_capacity_and_hasher(found.len(), Default::default());
    for ((path, _), planned) in found.iter().zip(planned) {
        let release = planned.and_then(|(key, release, planned_warnings, kept)| {
            if let Some(first) = seen.get(&key) {
                return Err(Error::file(
                    path,
                    format_args!(
                        "appliance {} version {} is already declared in {}",
                        key.0,
                        key.1,
                        first.display()
                    ),
                ));
            }
            seen.insert(key, path);
            warnings.extend(planned_warnings);
            match kept {
                Some(Memo::Plan(key)) => {
                    memo.kept.push(key);
                    memo.plans += 1;
                }
                Some(Memo::Kept(key)) => memo.kept.push(key),
                Some(Memo::Made(key, entry)) => memo.made.push((key, *entry)),
                None => {}
            }
            let release = release?;
            // In the flat layout releases share a directory: no two may
            // publish one name there.
            for (site_path, source) in release.files() {
                if let Some(first) = published.get(site_path) {
                    return Err(Error::file(
                        source,
                        format_args!(
                            "is published as {site_path}, and so is {}: two releases cannot \
                             publish one file; rename one",
                            first.display()
                        ),
                    ));
                }
                published.insert(site_path.clone(), source.to_path_buf());
            }
            Ok(release)
        });
        match release {
            Ok(r) => releases.push(r),
            Err(e) if keep_going => problems.push(e),
            Err(e) => {
                let plan = Plan {
                    releases,
                    warnings,
                    remembered: 0,
                };
                return (plan, vec![e], Remembered::default());
            }
        }
    }
    // Sorted by index, then each moved once: a plan is hundreds of bytes,
    // and a sort of ten thousand moves each a dozen times.
    let mut order: Vec<usize> = (0..releases.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&releases[a].info, &releases[b].info);
        (b.date.cmp(&a.date))
            .then_with(|| a.appliance.cmp(&b.appliance))
            .then_with(|| b.version.cmp(&a.version))
    });
    let mut slots: Vec<Option<PlannedRelease>> = releases.into_iter().map(Some).collect();
    let releases = (order.into_iter())
        .map(|i| slots[i].take().expect("each release is taken once"))
        .collect();
    let plan = Plan {
        releases,
        warnings,
        remembered: memo.plans,
    };
    (plan, problems, memo)
}

/// Walks the releases directory once: each notes file, with the files
/// beside it, in walk order (depth first, by name, no symbolic link
/// followed). What builds keep there is left out.
fn walk_tree(
    config: &Config,
    root: &Path,
    root_real: &Path,
    lister: &mut Lister<'_>,
    root_meta: &std::fs::Metadata,
) -> Result<Vec<(PathBuf, Vec<Beside>)>> {
    let ours = Ours::of(config, root_real)?;
    let mut walk = TreeWalk {
        root,
        ours: &ours,
        lister,
        found: Vec::new(),
    };
    walk.dir(root, "", root_meta)?;
    if walk.found.is_empty() {
        return Err(Error::file(
            root,
            format_args!(
                "no {} found; each release is a directory holding one",
                notes::NOTES_FILE
            ),
        ));
    }
    Ok(walk.found)
}

/// One walk of the releases directory, under way.
struct TreeWalk<'a, 'm> {
    root: &'a Path,
    ours: &'a Ours,
    lister: &'a mut Lister<'m>,
    /// Each notes file, with what lies in its directory besides the
    /// subdirectories, in walk order.
    found: Vec<(PathBuf, Vec<Beside>)>,
}

impl TreeWalk<'_, '_> {
    /// Walks `dir` (`rel` in the tree; its `lstat`, or the root's `stat`,
    /// is `meta`).
    fn dir(&mut self, dir: &Path, rel: &str, meta: &std::fs::Metadata) -> Result<()> {
        let entries = self
            .lister
            .list(dir, rel, meta)
            .map_err(|e| Error::io("cannot read directory", dir, e))?;
        // Its notes file's place in `found`, taken in walk order, and what
        // lies beside it, filled in once the directory is walked.
        let mut notes_at = None;
        let mut beside = Vec::new();
        for entry in entries {
            let path = dir.join(&entry.name);
            if self.ours.holds(self.root, &path) {
                continue;
            }
            let Some(name) = entry.name.to_str() else {
                return Err(non_utf8(&path));
            };
            let mut kind = entry.kind;
            if kind == Kind::Dir {
                let meta = fsutil::symlink_metadata(&path)?;
                if meta.is_dir() {
                    let rel = if rel.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{rel}/{name}")
                    };
                    self.dir(&path, &rel, &meta)?;
                    continue;
                }
                // Replaced since it was listed: what it is now.
                kind = Kind::of(meta.file_type());
            }
            if name == notes::NOTES_FILE && kind == Kind::File {
                notes_at = Some(self.found.len());
                self.found.push((path.clone(), Vec::new()));
            }
            beside.push(Beside {
                name: name.to_owned(),
                symlink: kind == Kind::Symlink,
                path,
            });
        }
        if let Some(at) = notes_at {
            self.found[at].1 = beside;
        }
        Ok(())
    }
}

/// The output directory and what builds keep beside it (`.<name>.spare`,
/// `.<name>.building-*`, `.<name>.lock`), when they lie in the releases
/// directory: never inputs, and changed by the build while it scans.
struct Ours {
    /// Their directory, relative to the releases directory, and the
    /// output's name.
    place: Option<(PathBuf, String)>,
}

impl Ours {
    fn of(config: &Config, releases_real: &Path) -> Result<Ours> {
        let out = fsutil::resolve_lexically(&config.output_dir)?;
        let place = out.strip_prefix(releases_real).ok().and_then(|rel| {
            Some((
                rel.parent()?.to_path_buf(),
                rel.file_name()?.to_string_lossy().into_owned(),
            ))
        });
        Ok(Ours { place })
    }

    /// Whether `path`, found by walking `root`, is one of ours.
    fn holds(&self, root: &Path, path: &Path) -> bool {
        let Some((dir, output)) = &self.place else {
            return false;
        };
        let Ok(rel) = path.strip_prefix(root) else {
            return false;
        };
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return false;
        };
        let name = name.to_string_lossy();
        let beside = || {
            name.strip_prefix('.')
                .and_then(|n| n.strip_prefix(output.as_str()))
                .is_some_and(|rest| rest.starts_with('.'))
        };
        parent == dir && (name == *output || beside())
    }
}

fn walk_error(root: &Path, e: walkdir::Error) -> Error {
    let path = e.path().unwrap_or(root).to_path_buf();
    match e.into_io_error() {
        Some(io) => Error::io("cannot read directory", path, io),
        None => Error::file(path, "directory loop through a symbolic link"),
    }
}

fn non_utf8(path: &Path) -> Error {
    Error::file(
        path,
        format_args!(
            "file name {:?} is not valid UTF-8; rename it (feeds and URLs need UTF-8 names)",
            path.file_name().unwrap_or_default()
        ),
    )
}

/// The appliance a release belongs to: from its notes, else the first
/// directory under the releases directory, else the config's default.
fn appliance_of(config: &Config, notes: &Notes, dir: &Path) -> Result<Name> {
    if let Some(name) = &notes.appliance {
        return Ok(name.clone());
    }
    let rel = dir.strip_prefix(&config.releases_dir).unwrap_or(dir);
    let mut parts = rel.components();
    if let (Some(first), Some(_)) = (parts.next(), parts.next()) {
        let first = first.as_os_str().to_string_lossy();
        return Name::parse(&first, "appliance name").map_err(|m| {
            Error::file(
                &notes.path,
                format_args!("{m} (taken from the directory name; set `appliance` to override)"),
            )
        });
    }
    config.default_appliance.clone().ok_or_else(|| {
        Error::file(
            &notes.path,
            "no appliance: set `appliance` here or in the config, \
             or keep the release in <releases_dir>/<appliance>/<version>/",
        )
    })
}

/// A file that may be an image, found in a release directory or by a glob.
struct Candidate {
    path: PathBuf,
    /// Its resolved path, when known without asking the kernel: a file that
    /// is no symbolic link, found by walking a resolved directory.
    real: Option<PathBuf>,
    name: String,
    /// Where it was asked for, when named explicitly in the notes.
    named_at: Option<Located<String>>,
}

/// What every release of one scan shares.
struct Tree<'a> {
    config: &'a Config,
    /// The releases directory, resolved.
    releases_root: &'a Path,
    /// Plan a release without images instead of refusing it.
    imageless: bool,
}

fn plan_release(
    tree_of: &Tree,
    notes: Notes,
    dir: &Path,
    files: &[Beside],
    appliance: Name,
    warnings: &mut Vec<crate::Warning>,
) -> Result<PlannedRelease> {
    let Tree {
        config,
        releases_root,
        imageless,
    } = *tree_of;
    let (candidates, supply_beside) = match &notes.images {
        None => {
            let rel = dir
                .strip_prefix(&config.releases_dir)
                .unwrap_or(Path::new(""));
            files_beside(files, &releases_root.join(rel))
                .into_iter()
                .partition(|c| supply::kind_of_name(&c.name).is_none())
        }
        Some(patterns) => {
            let base = config.images_dir.as_deref().unwrap_or(dir);
            let mut found = Vec::new();
            for pattern in patterns {
                found.extend(expand(&notes, base, pattern, imageless)?);
            }
            (found, Vec::new())
        }
    };
    // The tree an image must stay in, as written and as resolved.
    let (tree, tree_real) = match (&notes.images, &config.images_dir) {
        (Some(_), Some(images_dir)) => (images_dir.as_path(), fsutil::canonicalize(images_dir)?),
        (Some(_), None) => (dir, fsutil::canonicalize(dir)?),
        (None, _) => (config.releases_dir.as_path(), releases_root.to_path_buf()),
    };

    let layout = Layout::of(config, &appliance, &notes)?;
    let mut images: Vec<ImageSource> = Vec::new();
    for c in candidates {
        let found = plan_image(
            config,
            &layout,
            &notes,
            c,
            (tree, &tree_real),
            &images,
            warnings,
        )?;
        images.extend(found);
    }
    warnings.extend(version_disagreements(&notes, &appliance, dir, &images));
    if images.is_empty() && imageless {
        return Ok(PlannedRelease {
            info: release_info(config, notes, appliance),
            images,
            supply: Vec::new(),
        });
    }
    if images.is_empty() && notes.cloud_images.is_empty() {
        return Err(Error::file(
            &notes.path,
            format_args!(
                "release {appliance} {} has no images; put image files beside {}, list them in \
                 `images`, or name cloud images in [[cloud_image]]",
                notes.version,
                notes::NOTES_FILE
            ),
        ));
    }
    for (name, at) in &notes.overrides {
        if !images.iter().any(|i| &i.name == name) {
            return Err(notes.error_at(
                at,
                format_args!("[image.\"{name}\"] names no image of this release"),
            ));
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    let supply = plan_supply(
        &SupplyTree {
            config,
            base: match &notes.images {
                Some(_) => config.images_dir.as_deref().unwrap_or(dir),
                None => dir,
            },
            tree,
            tree_real: &tree_real,
            layout: &layout,
        },
        &notes,
        &images,
        &supply_beside,
        warnings,
    )?;
    // None for a release of cloud images only.
    let Some(primary) = primary_of(config, &notes, &images)? else {
        return Ok(PlannedRelease {
            info: release_info(config, notes, appliance),
            images,
            supply,
        });
    };
    let mut first = images.remove(primary);
    first.primary = true;
    images.insert(0, first);

    Ok(PlannedRelease {
        info: release_info(config, notes, appliance),
        images,
        supply,
    })
}

/// The image a candidate file is, checked: its format (by extension, or
/// as `[image."name"]` says), inside its tree (`tree`, as written and as
/// resolved), a regular file, and a name no other image of the release
/// (`images`) has. `None` for a file that is no image, with a warning.
fn plan_image(
    config: &Config,
    layout: &Layout,
    notes: &Notes,
    c: Candidate,
    (tree, tree_real): (&Path, &Path),
    images: &[ImageSource],
    warnings: &mut Vec<crate::Warning>,
) -> Result<Option<ImageSource>> {
    let over = notes.overrides.get(&c.name).map(|o| &o.value);
    let (format, compression) = match detect(&c.name) {
        Some((f, comp)) => (over.and_then(|o| o.format).unwrap_or(f), comp),
        None => match over.and_then(|o| o.format) {
            Some(f) => (f, None),
            None if c.named_at.is_some() => {
                let at = c.named_at.as_ref().expect("checked");
                return Err(notes.error_at(
                    at,
                    format_args!(
                        "{} is not a recognised image file; name its format in [image.\"{}\"]",
                        c.path.display(),
                        c.name
                    ),
                ));
            }
            None => {
                warnings.push(crate::Warning::file(
                    &c.path,
                    "not an image (unknown extension), not published",
                ));
                return Ok(None);
            }
        },
    };
    let real = match c.real {
        Some(real) => real,
        None => fsutil::canonicalize(&c.path)?,
    };
    if !real.starts_with(tree_real) {
        return Err(Error::file(
            &c.path,
            format_args!(
                "is a symbolic link to a file outside {}; images must stay inside their tree",
                tree.display()
            ),
        ));
    }
    // Resolved: a symbolic link here was put in place since.
    let meta = fsutil::symlink_metadata(&real)?;
    if !meta.is_file() {
        return Err(Error::file(&c.path, "is not a regular file"));
    }
    let name = FileName::parse(&c.name).map_err(|m| Error::file(&c.path, m))?;
    layout.check(&name, notes, &c.path)?;
    if images.iter().any(|i| i.name == name) {
        return Err(Error::file(
            &notes.path,
            format_args!("two images of this release are named {:?}", c.name),
        ));
    }
    let site_path = layout
        .release_dir
        .join(&c.name)
        .map_err(|m| Error::file(&c.path, m))?;
    Ok(Some(ImageSource {
        url: join_url(
            &config.download_base_url,
            &format!("{}/{}", layout.url_dir, c.name),
        ),
        source: c.path,
        real,
        name,
        format,
        compression,
        arch: over
            .and_then(|o| o.arch.clone())
            .or_else(|| notes.requirements.arch.clone()),
        primary: false,
        site_path,
        seen: crate::model::Seen::of(&meta),
    }))
}

/// Which of a release's images is its primary: the one its notes name, or
/// the first by `format_preference`. `None` for a release of cloud images
/// only.
fn primary_of(config: &Config, notes: &Notes, images: &[ImageSource]) -> Result<Option<usize>> {
    if let Some(p) = &notes.primary {
        return images
            .iter()
            .position(|i| i.name == p.value)
            .map(Some)
            .ok_or_else(|| {
                notes.error_at(
                    p,
                    format_args!(
                        "primary image {:?} is not an image of this release",
                        p.value
                    ),
                )
            });
    }
    let rank = |f: ImageFormat| {
        config
            .format_preference
            .iter()
            .position(|&p| p == f)
            .unwrap_or(usize::MAX)
    };
    Ok((0..images.len()).min_by_key(|&i| (rank(images[i].format), i)))
}

/// Where a release's supply-chain files are looked for and published.
struct SupplyTree<'a> {
    config: &'a Config,
    /// What names in `sbom` and `provenance` are relative to: where the
    /// release's images are looked for.
    base: &'a Path,
    /// The tree they must stay in, as written and resolved.
    tree: &'a Path,
    tree_real: &'a Path,
    /// Where the release's files go.
    layout: &'a Layout,
}

/// Where a release's files go in the site, by the appliance's
/// `image_layout`, and the rules its file names follow there.
struct Layout {
    /// `images/<appliance>/<version>`, or `images/<appliance>` (flat).
    release_dir: RelPath,
    /// The same under the download base: `<appliance>/<version>`.
    url_dir: String,
    /// Every version's files share the directory: each names its version.
    flat: bool,
    appliance: Name,
}

impl Layout {
    fn of(config: &Config, appliance: &Name, notes: &Notes) -> Result<Layout> {
        let flat = config.image_layout_of(appliance.as_str()) == ImageLayout::Flat;
        let url_dir = match flat {
            true => appliance.to_string(),
            false => format!("{appliance}/{}", notes.version),
        };
        let release_dir = RelPath::parse(&format!("images/{url_dir}"))
            .map_err(|m| Error::file(&notes.path, m))?;
        Ok(Layout {
            release_dir,
            url_dir,
            flat,
            appliance: appliance.clone(),
        })
    }

    /// Refuses a name the release cannot publish in its directory: the
    /// manifest systemd's tools read there, or, in the flat layout, a name
    /// without the release's version, which the next release would take.
    fn check(&self, name: &FileName, notes: &Notes, source: &Path) -> Result<()> {
        if [media::MANIFEST, media::DIR_MANIFEST_SIG].contains(&name.as_str()) {
            return Err(Error::file(
                source,
                format_args!(
                    "is published as {}/{name}, the name of the manifest of that directory; \
                     rename it",
                    self.release_dir
                ),
            ));
        }
        if self.flat && name.version_at(&notes.version).is_none() {
            return Err(Error::file(
                source,
                format_args!(
                    "its name `{name}` does not hold the release's version `{}`: with \
                     image_layout = \"flat\" every version of {} lies in {}/, and each file name \
                     must hold its version (as `{}-{}.raw` does) so that no release takes \
                     another's name and systemd-sysupdate can tell the versions apart",
                    notes.version, self.appliance, self.release_dir, self.appliance, notes.version
                ),
            ));
        }
        Ok(())
    }
}

/// The supply-chain files of a release: those its notes name (for the
/// release, or in `[image."name"]` for one image), then those beside each
/// image under a conventional name: `<image><suffix>`, or
/// `<image without its extensions><suffix>` when no other image of the
/// release shares that stem. A file beside the notes with such a suffix
/// that no image claims draws a warning.
fn plan_supply(
    t: &SupplyTree,
    notes: &Notes,
    images: &[ImageSource],
    beside: &[Candidate],
    warnings: &mut Vec<crate::Warning>,
) -> Result<Vec<supply::Planned>> {
    let mut wanted: Vec<Wanted> = Vec::new();
    let named =
        notes
            .supply
            .iter()
            .map(|(k, at)| (*k, at, None))
            .chain(notes.overrides.iter().flat_map(|(image, o)| {
                o.value
                    .supply
                    .iter()
                    .map(move |(k, at)| (*k, at, Some(image.clone())))
            }));
    for (kind, at, image) in named {
        let path = t.base.join(&at.value);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(notes.error_at(
                at,
                format_args!("{} file {} does not exist", kind.as_str(), path.display()),
            ));
        }
        wanted.push((kind, path, image, Some(at)));
    }
    // A release of cloud images only has no file for them to be about.
    if images.is_empty() && !wanted.is_empty() {
        return Err(Error::file(
            &notes.path,
            "names SBOM or provenance files, but the release has no image files for them to be \
             about",
        ));
    }
    by_convention(notes, images, beside, &mut wanted)?;
    for c in beside {
        if !wanted.iter().any(|w| w.1 == c.path) {
            warnings.push(crate::Warning::file(
                &c.path,
                format_args!(
                    "not published: its name is no image's name with a supply-chain suffix; name \
                     it in {} (`sbom` or `provenance`) to publish it",
                    notes::NOTES_FILE
                ),
            ));
        }
    }

    let mut planned: Vec<supply::Planned> = Vec::with_capacity(wanted.len());
    for wanted in wanted {
        let file = plan_supply_file(t, notes, images, &planned, wanted)?;
        planned.push(file);
    }
    planned.sort_by(|a, b| (&a.image, &a.name).cmp(&(&b.image, &b.name)));
    Ok(planned)
}

/// Adds to `wanted` the files beside each image under a conventional name.
fn by_convention<'a>(
    notes: &'a Notes,
    images: &[ImageSource],
    beside: &[Candidate],
    wanted: &mut Vec<Wanted<'a>>,
) -> Result<()> {
    // Images found beside the notes: the walk listed every file there with
    // a supply-chain suffix (`beside`), so none need asking the kernel for,
    // which would be a dozen lookups an image.
    let listed = notes
        .images
        .is_none()
        .then(|| notes.path.parent().unwrap_or(Path::new("")));
    for image in images {
        let dir = image.source.parent().unwrap_or(Path::new(""));
        let stem = image_stem(image.name.as_str());
        let exists = |path: &Path| match listed {
            Some(listed) if listed == dir => beside.iter().any(|c| c.path == path),
            _ => std::fs::symlink_metadata(path).is_ok(),
        };
        for (suffix, kind) in supply::SUFFIXES {
            for candidate in [format!("{}{suffix}", image.name), format!("{stem}{suffix}")] {
                let path = dir.join(&candidate);
                if wanted.iter().any(|w| w.1 == path) || !exists(&path) {
                    continue;
                }
                if candidate.starts_with(stem) && !candidate.starts_with(image.name.as_str()) {
                    let sharing: Vec<&str> = images
                        .iter()
                        .filter(|i| image_stem(i.name.as_str()) == stem)
                        .map(|i| i.name.as_str())
                        .collect();
                    if sharing.len() > 1 {
                        return Err(Error::file(
                            &path,
                            format_args!(
                                "could be about any of {}; rename it after one image ({}{suffix}), \
                                 or name it in {} (`{}` for the whole release, or in \
                                 [image.\"NAME\"])",
                                sharing.join(", "),
                                image.name,
                                notes::NOTES_FILE,
                                kind.as_str()
                            ),
                        ));
                    }
                }
                wanted.push((kind, path, Some(image.name.to_string()), None));
            }
        }
    }
    Ok(())
}

/// Checks one supply-chain file a release will publish and plans it:
/// inside its tree, a regular file, and a name no image or other file of
/// the release (`planned`) has.
fn plan_supply_file(
    t: &SupplyTree,
    notes: &Notes,
    images: &[ImageSource],
    planned: &[supply::Planned],
    (kind, path, image, at): Wanted,
) -> Result<supply::Planned> {
    let real = fsutil::canonicalize(&path)?;
    if !real.starts_with(t.tree_real) {
        return Err(Error::file(
            &path,
            format_args!(
                "is a symbolic link to a file outside {}; supply-chain files must stay inside \
                 their tree",
                t.tree.display()
            ),
        ));
    }
    let meta = fsutil::metadata(&real)?;
    if !meta.is_file() {
        return Err(Error::file(&path, "is not a regular file"));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| non_utf8(&path))?;
    let name = FileName::parse(name).map_err(|m| Error::file(&path, m))?;
    let image = image
        .map(|n| FileName::parse(&n).map_err(|m| Error::file(&path, m)))
        .transpose()?;
    let clash = |other: &str| {
        let message =
            format!("is published as {name}, the name of {other} of this release; rename one");
        match at {
            Some(at) => notes.error_at(at, format_args!("{}: {message}", path.display())),
            None => Error::file(&path, message),
        }
    };
    if images.iter().any(|i| i.name == name) {
        return Err(clash("an image"));
    }
    if let Some(first) = planned.iter().find(|p| p.name == name) {
        if first.real == real {
            return Err(clash("a file named twice in its notes"));
        }
        return Err(clash("another supply-chain file"));
    }
    t.layout.check(&name, notes, &path)?;
    let site_path = t
        .layout
        .release_dir
        .join(&name)
        .map_err(|m| Error::file(&path, m))?;
    Ok(supply::Planned {
        url: join_url(
            &t.config.download_base_url,
            &format!("{}/{name}", t.layout.url_dir),
        ),
        file_id: crate::model::FileId::of(&meta),
        source: path,
        real,
        name,
        kind,
        image,
        site_path,
    })
}

/// A supply-chain file a release will publish: its kind, path, the image
/// it is about (none: the release) and where its notes name it, if they do.
type Wanted<'a> = (
    supply::Kind,
    PathBuf,
    Option<String>,
    Option<&'a Located<String>>,
);

/// An image's name without the extensions that say its format and
/// compression: `webapp-1.4.0.qcow2` → `webapp-1.4.0`.
fn image_stem(name: &str) -> &str {
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return name;
    };
    if Compression::from_extension(ext).is_some() {
        return match stem.rsplit_once('.') {
            Some((inner, format)) if ImageFormat::from_extension(format).is_some() => inner,
            _ => stem,
        };
    }
    match ImageFormat::from_extension(ext) {
        Some(_) => stem,
        None => name,
    }
}

/// Warnings for a release whose version disagrees with the version its
/// directory's name or an image's name shows (`releases/myapp/1.1.0/`
/// holding `myapp-1.1.0.raw` with `version = "1.2.0"`): the images publish
/// under the notes' version, names and all, and nothing else would say so.
/// An image's version is the dotted number after `<appliance>-` (or `_`),
/// else the last one in its name.
fn version_disagreements(
    notes: &Notes,
    appliance: &Name,
    dir: &Path,
    images: &[ImageSource],
) -> Vec<crate::Warning> {
    let version = notes.version.as_str();
    let mut warnings = Vec::new();
    let dir_name = dir.file_name().unwrap_or_default().to_string_lossy();
    let shown = dir_name.strip_prefix('v').unwrap_or(&dir_name);
    if shown.starts_with(|c: char| c.is_ascii_digit())
        && shown.contains('.')
        && !same_version(shown, version)
    {
        warnings.push(crate::Warning::file(
            &notes.path,
            format_args!(
                "says version = \"{version}\", but its directory is {dir_name}: the release \
                 publishes as {version}; make the two agree"
            ),
        ));
    }
    for image in images {
        let name = image.name.as_str();
        if name.contains(version) {
            continue;
        }
        let shown = match name
            .strip_prefix(appliance.as_str())
            .and_then(|rest| rest.strip_prefix(['-', '_']))
        {
            Some(rest) => versions_in(rest).next().filter(|v| rest.starts_with(v)),
            None => versions_in(name).last(),
        };
        if let Some(other) = shown.filter(|v| !same_version(v, version)) {
            warnings.push(crate::Warning::file(
                &image.source,
                format_args!(
                    "its name says {other}, but the release is {version} (`version` in {}): it \
                     publishes as {}",
                    notes::NOTES_FILE,
                    image.site_path
                ),
            ));
        }
    }
    warnings
}

/// The dotted numbers in a file name (`1.1.0` in `myapp-1.1.0.raw`).
fn versions_in(name: &str) -> impl Iterator<Item = &str> {
    name.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|run| run.trim_matches('.'))
        .filter(|run| run.contains('.') && !run.contains("..") && !run.is_empty())
}

/// Whether two versions are one, trailing `.0`s aside (`1.10` is `1.10.0`).
fn same_version(a: &str, b: &str) -> bool {
    let trim = |v: &str| {
        let mut v = v.to_owned();
        while let Some(shorter) = v.strip_suffix(".0") {
            v = shorter.to_owned();
        }
        v
    };
    trim(a) == trim(b)
}

/// Everything about a release but its images.
fn release_info(config: &Config, notes: Notes, appliance: Name) -> ReleaseInfo {
    let title = notes.title.clone().unwrap_or_else(|| {
        let title = format!("{} {}", config.appliance(&appliance).title, notes.version);
        Line::parse(&title, "title").expect("a title and a version make one line")
    });
    ReleaseInfo {
        notes_path: notes.path,
        appliance,
        version: notes.version,
        title,
        date: notes.date,
        channel: notes.channel,
        critical: notes.critical,
        notes_html: notes.notes_html,
        notes_text: notes.notes_text,
        osinfo: notes.osinfo,
        requirements: notes.requirements,
        cloud_images: notes.cloud_images,
    }
}

/// The format and compression a file name stands for, e.g.
/// `disk.qcow2` → qcow2, `disk.raw.xz` → raw in xz.
pub fn detect(name: &str) -> Option<(ImageFormat, Option<Compression>)> {
    let (stem, ext) = name.rsplit_once('.')?;
    if let Some(c) = Compression::from_extension(ext) {
        let (_, inner) = stem.rsplit_once('.')?;
        return ImageFormat::from_extension(inner).map(|f| (f, Some(c)));
    }
    ImageFormat::from_extension(ext).map(|f| (f, None))
}

/// The files directly inside a release directory (resolved: `dir_real`),
/// as the walk found them (UTF-8 names, sorted, no directories), less
/// dotfiles, sidecars and the notes file.
fn files_beside(files: &[Beside], dir_real: &Path) -> Vec<Candidate> {
    files
        .iter()
        .filter_map(|entry| {
            let name = &entry.name;
            let skip = name.starts_with('.')
                || *name == notes::NOTES_FILE
                || name.ends_with(crate::media::SIDECAR_SUFFIX);
            (!skip).then(|| Candidate {
                path: entry.path.clone(),
                real: (!entry.symlink).then(|| dir_real.join(name)),
                name: name.clone(),
                named_at: None,
            })
        })
        .collect()
}

/// The files a path or glob from `images = [...]` names under `base`.
/// With `imageless`, a name or glob that finds nothing finds no image
/// instead of failing: the release's images may come from the previous site.
fn expand(
    notes: &Notes,
    base: &Path,
    pattern: &Located<String>,
    imageless: bool,
) -> Result<Vec<Candidate>> {
    let rel = RelPath::parse(&pattern.value).map_err(|m| notes.error_at(pattern, m))?;
    let is_glob = |s: &str| s.contains(['*', '?', '[', '{']);
    let mut found = Vec::new();
    if !is_glob(rel.as_str()) {
        let path = base.join(rel.as_str());
        if std::fs::symlink_metadata(&path).is_err() {
            if imageless {
                return Ok(found);
            }
            return Err(notes.error_at(
                pattern,
                format_args!("image {} does not exist", path.display()),
            ));
        }
        let name = rel.segments().last().unwrap_or_default().to_owned();
        found.push(Candidate {
            path,
            real: None,
            name,
            named_at: Some(pattern.clone()),
        });
        return Ok(found);
    }
    // Walk only below the part of the pattern that has no wildcard.
    let literal: Vec<&str> = rel.segments().take_while(|s| !is_glob(s)).collect();
    let start = base.join(literal.join("/"));
    let matcher: GlobMatcher = GlobBuilder::new(rel.as_str())
        .literal_separator(true)
        .build()
        .map_err(|e| notes.error_at(pattern, format_args!("invalid glob: {e}")))?
        .compile_matcher();
    if start.is_dir() {
        let start_real = fsutil::canonicalize(&start)?;
        for entry in WalkDir::new(&start).min_depth(1).sort_by_file_name() {
            let entry = entry.map_err(|e| walk_error(&start, e))?;
            if entry.file_type().is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str() else {
                return Err(non_utf8(entry.path()));
            };
            let rel_to_base = entry.path().strip_prefix(base).unwrap_or(entry.path());
            // A glob finds images; the supply-chain files beside them are
            // found from the images.
            if name.starts_with('.')
                || supply::kind_of_name(name).is_some()
                || !matcher.is_match(rel_to_base)
            {
                continue;
            }
            let below = entry.path().strip_prefix(&start).unwrap_or(entry.path());
            found.push(Candidate {
                path: entry.path().to_path_buf(),
                real: (!entry.path_is_symlink()).then(|| start_real.join(below)),
                name: name.to_owned(),
                named_at: Some(pattern.clone()),
            });
        }
    }
    if found.is_empty() && !imageless {
        return Err(notes.error_at(
            pattern,
            format_args!("`{}` matches no file in {}", pattern.value, base.display()),
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_found_in_names_and_compared_without_trailing_zeros() {
        let found = |name| super::versions_in(name).collect::<Vec<_>>();
        assert_eq!(found("myapp-1.1.0.raw"), ["1.1.0"]);
        assert_eq!(found("ubuntu-22.04-app-1.2.qcow2.xz"), ["22.04", "1.2"]);
        assert_eq!(found("webapp-2.qcow2"), Vec::<&str>::new());
        assert!(super::same_version("1.10", "1.10.0"));
        assert!(!super::same_version("1.1", "1.10"));
    }

    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(detect("a.qcow2"), Some((ImageFormat::Qcow2, None)));
        assert_eq!(detect("a.IMG"), Some((ImageFormat::Raw, None)));
        assert_eq!(detect("a.hds"), Some((ImageFormat::Parallels, None)));
        assert_eq!(detect("a.parallels"), Some((ImageFormat::Parallels, None)));
        assert_eq!(
            detect("vm.xva.zst"),
            Some((ImageFormat::Xva, Some(Compression::Zstd)))
        );
        assert_eq!(
            detect("a.raw.xz"),
            Some((ImageFormat::Raw, Some(Compression::Xz)))
        );
        assert_eq!(detect("a.xz"), None);
        assert_eq!(detect("notes.md"), None);
        assert_eq!(detect("qcow2"), None);
    }
}
