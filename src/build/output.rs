//! The signed site, written into the staging directory, and after the
//! swap the record of what the new output holds, for the next build.

use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cache::{self, HashCache};
use crate::config::{Config, ImageMode};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::media;
use crate::model::{self, FileDigest, Release, Sha256};
use crate::openpgp;
use crate::par;
use crate::render;
use crate::sign::PublicKey;
use crate::trust;
use crate::write;

use super::clock::Clock;
use super::{Keys, Texts};

/// Signs what was rendered and writes it, with the signatures and the
/// public keys, into the staging directory. A feed kept as published is
/// written with the signature it was published with. An archive whose signature
/// the hash cache remembers is not signed again, unless `--verify-cache`
/// says not to trust it (`remembered` is false); the cache learns every
/// archive's signature for the next build. Returns the files written that
/// a later build may find unchanged (archives, their signatures, history
/// pages), with their digests, for [`record`].
#[allow(clippy::too_many_arguments)]
pub(super) fn write_site(
    staging: &write::Staging,
    config: &Config,
    rendered: &Texts,
    keys: &Keys,
    next_key: Option<&PublicKey>,
    clock: &Clock,
    mut cache: Option<&mut HashCache>,
    remembered: bool,
    threads: usize,
) -> Result<Vec<(String, Sha256)>> {
    let key = &*keys.minisign;
    // A file that never changes (an archive) names no build, so that its
    // signature does not change either; SHA256SUMS binds it to the build.
    let comment = |file: &str| match media::is_immutable(file) {
        true => trust::FileStamp {
            file: file.to_owned(),
            base_url: config.base_url.to_string(),
        }
        .to_comment(),
        false => trust::BuildStamp {
            timestamp: clock.time.timestamp(),
            file: file.to_owned(),
            base_url: config.base_url.to_string(),
            sequence: clock.sequence,
            expires: clock.expires.map(|e| e.timestamp()),
        }
        .to_comment(),
    };
    // A hundred archive documents make signing a fixed cost worth sharing out.
    let memo = cache.as_deref().filter(|_| remembered);
    let mut published = Vec::new();
    let feed_sigs = par::map(threads, &rendered.site.feeds, |feed| {
        if let Some(kept) = &feed.signature {
            return Ok((kept.clone(), None));
        }
        let comment = comment(&feed.path);
        let signed = media::is_immutable(&feed.path)
            .then(|| cache::Signed::of(key.public(), &comment, &feed.sha256));
        if let Some(file) = signed.as_ref().and_then(|s| memo?.signature(s)) {
            return Ok((file.to_owned(), signed));
        }
        // A file taken from the spare unread, whose signature is not
        // remembered (the key changed): signed as read again, checked.
        let mut held = Vec::new();
        let want = FileDigest {
            length: feed.length,
            sha256: feed.sha256,
            sha512: None,
        };
        if feed.held && !staging.held(&feed.path, &want, Some(&mut held)) {
            return Err(Error::file(
                staging.path().join(&feed.path),
                "changed while the build ran; build again",
            ));
        }
        let xml = if feed.held { &held } else { &feed.xml };
        Ok((key.sign(xml, &comment)?.to_file(), signed))
    });
    for (feed, sig) in rendered.site.feeds.iter().zip(feed_sigs) {
        let (sig, signed) = sig?;
        if !feed.held {
            staging.write(&feed.path, &feed.xml)?;
        }
        let sig_path = format!("{}.minisig", feed.path);
        // A file that never changes: the spare's copy in a state the
        // cache knows is kept with one stat.
        if signed.is_some() {
            let sha256 = Sha256::of(sig.as_bytes());
            let known = |state: &cache::FileState| {
                let memo = cache.as_deref().filter(|_| remembered);
                memo.is_some_and(|c| c.holds(&sha256, state))
            };
            staging.write_known(&sig_path, sig.as_bytes(), known)?;
            published.push((feed.path.clone(), feed.sha256));
            published.push((sig_path, sha256));
        } else {
            staging.write(&sig_path, sig.as_bytes())?;
        }
        if let (Some(cache), Some(signed)) = (cache.as_deref_mut(), signed) {
            cache.remember_signature(signed, sig);
        }
    }
    let manifest_sig = key.sign(rendered.manifest.as_bytes(), &comment(media::MANIFEST))?;
    staging.write(media::MANIFEST, rendered.manifest.as_bytes())?;
    staging.write(media::MANIFEST_SIG, manifest_sig.to_file().as_bytes())?;
    staging.write(media::PUBLIC_KEY, key.public().to_file().as_bytes())?;
    if let Some(key) = &keys.openpgp {
        let signed = key.signer.clearsign(&rendered.manifest, clock.time)?;
        staging.write(openpgp::MANIFEST_ASC, signed.as_bytes())?;
        staging.write(openpgp::PUBLIC_KEY, key.public.as_bytes())?;
    }
    if let Some(next) = next_key {
        // The current key vouches for the next one: consumers that trust the
        // current key learn the next from this signature.
        let text = next.to_file();
        let sig = key.sign(text.as_bytes(), &comment(media::NEXT_PUBLIC_KEY))?;
        staging.write(media::NEXT_PUBLIC_KEY, text.as_bytes())?;
        staging.write(
            &format!("{}.minisig", media::NEXT_PUBLIC_KEY),
            sig.to_file().as_bytes(),
        )?;
    }
    let catalog_sigs = par::map(threads, &rendered.catalogs.files, |file| {
        file.signed
            .then(|| key.sign(&file.bytes, &comment(&file.path)))
            .transpose()
    });
    for (file, sig) in rendered.catalogs.files.iter().zip(catalog_sigs) {
        let sig = sig?;
        staging.write(&file.path, &file.bytes)?;
        if let Some(sig) = sig {
            staging.write(&format!("{}.minisig", file.path), sig.to_file().as_bytes())?;
        }
    }
    // Rendered only when there is an OpenPGP key.
    if let Some(key) = &keys.openpgp {
        for (path, text) in &rendered.catalogs.clearsigned {
            staging.write(path, key.signer.clearsign(text, clock.time)?.as_bytes())?;
        }
    }
    staging.write(render::page::PAGE, rendered.site.page.as_bytes())?;
    for page in &rendered.site.history {
        if !page.held {
            staging.write(&page.path, page.html.as_bytes())?;
        }
        if page.inputs.is_some() {
            published.push((page.path.clone(), page.sha256));
        }
    }
    // GitHub Pages would otherwise run the site through Jekyll.
    staging.write(".nojekyll", b"")?;
    Ok(published)
}

/// The archives and history pages the last build rendered, as the reused
/// spare still holds them: the cache knows the digest of each by the
/// digest of its inputs, and the spare's file must be in a state the
/// cache knows to hold those bytes, or hash to them. Nothing, with
/// `--verify-cache` (`trusted` false).
pub(super) struct Kept<'a, 'b> {
    pub cache: &'a HashCache,
    pub staging: &'a write::Staging<'b>,
    pub trusted: bool,
}

impl render::Known for Kept<'_, '_> {
    fn rendered(&self, path: &str, inputs: &Sha256) -> Option<FileDigest> {
        if !self.trusted {
            return None;
        }
        let digest = self.cache.rendered(inputs)?;
        let known = |state: &cache::FileState| self.cache.holds(&digest.sha256, state);
        let held = self.staging.held_known(path, known) || self.staging.held(path, &digest, None);
        held.then_some(digest)
    }
}

/// Remembers in the hash cache the digest of each file rendered from
/// inputs whose digest was taken, for the next build.
pub(super) fn remember_rendered(cache: &mut HashCache, rendered: &render::Rendered) {
    let feeds = (rendered.feeds.iter()).map(|f| (f.inputs, f.length, f.sha256));
    let pages = (rendered.history.iter()).map(|p| (p.inputs, p.length, p.sha256));
    for (inputs, length, sha256) in feeds.chain(pages) {
        if let Some(inputs) = inputs {
            cache.remember_rendered(&inputs, length, &sha256);
        }
    }
}

/// What the output now holds besides the images' files: the files a
/// later build may find unchanged ([`write_site`]'s), the spare, and
/// which of them the staging directory kept with one stat.
pub(super) struct Published {
    pub files: Vec<(String, Sha256)>,
    pub spare: PathBuf,
    pub kept_known: FxHashSet<String>,
}

/// Records in the hash cache what the output now holds, and saves it.
pub(super) fn record(
    mut cache: HashCache,
    config: &Config,
    releases: &[Release],
    placed: &FxHashSet<model::RelPath>,
    made: &FxHashSet<model::RelPath>,
    held: &FxHashMap<OsString, cache::FileState>,
    published: &Published,
) -> Result<()> {
    let root = fsutil::canonicalize(&config.output_dir)?;
    if config.image_mode != ImageMode::None {
        record_output(&mut cache, &root, releases, placed)?;
    }
    record_made(&mut cache, &root, releases, made, held)?;
    record_published(&mut cache, &root, published);
    cache.save()?;
    crate::par::drop_aside(cache);
    Ok(())
}

/// Records, after the swap, what the new output holds, for the next build.
/// A copy's state is recorded as holding its digest's bytes, so the next
/// build can take it by hard link when it publishes the same bytes there.
/// A hard link is the image itself: making it, or removing one the spare
/// held, moved its ctime, so the image's entry takes the state the next
/// build will see (only if its size and mtime are still those recorded).
/// Images taken unread from a previous site are not in the output.
fn record_output(
    cache: &mut HashCache,
    root: &Path,
    releases: &[Release],
    placed: &FxHashSet<model::RelPath>,
) -> Result<()> {
    for image in releases
        .iter()
        .flat_map(|r| &r.images)
        .filter(|i| placed.contains(&i.source.site_path))
    {
        let path = root.join(image.source.site_path.as_str());
        // One stat, no open: the file was placed by this build.
        let state = cache::FileState::of(&fsutil::symlink_metadata(&path)?);
        if state.id() == image.source.seen.state.id() {
            cache.restat(&image.source.real, state);
        } else {
            cache.remember_holding(&image.digest.sha256, state);
        }
    }
    Ok(())
}

/// Records the state of each file the new output holds that a later
/// build may find unchanged, and of its copy in the spare (the output
/// before) when the cache knew that state to hold the same bytes: the
/// next build stages in the spare, and the one after in this output. A
/// file kept with one stat is in a state the cache knew already, and so
/// is recorded with what it knew, unstatted.
fn record_published(cache: &mut HashCache, root: &Path, published: &Published) {
    for (rel, sha256) in &published.files {
        if published.kept_known.contains(rel) {
            cache.keep_holding(sha256);
            continue;
        }
        if let Some(state) = fs_state(&root.join(rel)) {
            cache.remember_holding(sha256, state);
        }
        if let Some(state) = fs_state(&published.spare.join(rel))
            && cache.holds(sha256, &state)
        {
            cache.remember_holding(sha256, state);
        }
    }
}

/// The state of the regular file at `path`, not followed through a link;
/// `None` for anything else or nothing.
fn fs_state(path: &Path) -> Option<cache::FileState> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|meta| cache::FileState::of(&meta))
}

/// Records the files this build made of images or took (boxes, control
/// files) in the output, so that the next build can take them by hard link
/// instead of reading their images. One the staging directory `held`
/// already is recorded in the state it was found in, unstatted: nothing
/// moved it.
fn record_made(
    cache: &mut HashCache,
    root: &Path,
    releases: &[Release],
    made: &FxHashSet<model::RelPath>,
    held: &FxHashMap<OsString, cache::FileState>,
) -> Result<()> {
    for image in releases
        .iter()
        .flat_map(|r| &r.images)
        .filter(|i| made.contains(&i.source.site_path))
    {
        let boxed = image.vagrant_box.as_ref().map(|b| (&b.path, b.digest));
        let zsync = image.zsync.as_ref().map(|z| (&z.path, z.digest));
        for (path, digest) in boxed.into_iter().chain(zsync) {
            let path = root.join(path.as_str());
            let state = match held.get(path.as_os_str()) {
                Some(state) => *state,
                None => cache::FileState::of(&fsutil::symlink_metadata(&path)?),
            };
            cache.remember_holding(&digest.sha256, state);
        }
    }
    Ok(())
}
