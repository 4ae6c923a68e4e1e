//! `virt-builder/index`: virt-builder's native index (an INI-like file,
//! one section per template), so `virt-builder --source` can list and
//! build from a site's images.
//!
//! virt-builder takes raw or qcow2 images, uncompressed or in xz, and only
//! from a `file=` path relative to the index ("same-origin policy"), so an
//! image on another host than the index cannot be listed. It checks a
//! template by SHA-512 alone: the build computes it, for the listed images
//! only, in the same read as the SHA-256, and the feed carries it
//! (`vmcast:image/@sha512`) so `verify` and `build --previous` need no
//! read either. With an OpenPGP key, `virt-builder/index.asc` is the same
//! text clearsigned, which virt-builder checks against a repository's
//! `gpgkey=`.
//!
//! Each (appliance, version) is its own section, `[webapp-1.4.0]`: the pair
//! (section, arch) must be unique, so a release lists one image per arch,
//! its primary one if virt-builder takes it. `revision`, which
//! virt-builder keys its template cache on, is the release date in Unix
//! seconds: a whole number that rises with every newer release, the same
//! in every build, and unmoved when older releases leave the site.

use std::collections::BTreeMap;

use super::CatalogFile;
use crate::config::Config;
use crate::model::{Arch, Compression, ImageFormat, ImageSource, ReleaseInfo};
use crate::render::Site;

pub use crate::media::VIRT_BUILDER_INDEX as INDEX;
/// The index clearsigned with OpenPGP, which virt-builder checks with
/// `gpg --verify` against a repository's `gpgkey=`.
pub const INDEX_ASC: &str = "virt-builder/index.asc";

/// For each image of a release (in its order, primary first): the `file=`
/// path the index gives it, or why the index cannot list it. Decided from
/// what is known before an image is read, so the hash stage knows which
/// images need a SHA-512.
pub fn select(
    config: &Config,
    info: &ReleaseInfo,
    images: &[&ImageSource],
) -> Vec<Result<String, String>> {
    let mut arch_taken: BTreeMap<&Arch, &str> = BTreeMap::new();
    images
        .iter()
        .map(|image| {
            let (file, arch) = listable(config, info, image)?;
            if let Some(first) = arch_taken.get(arch) {
                return Err(format!(
                    "{first} is listed for {info_name} on {arch}; virt-builder takes one image \
                     per version and arch",
                    info_name = info.anchor()
                ));
            }
            arch_taken.insert(arch, image.name.as_str());
            Ok(file)
        })
        .collect()
}

/// Whether each image of a release needs its SHA-512: the index is on and
/// lists it.
pub fn wants_sha512(config: &Config, info: &ReleaseInfo, images: &[&ImageSource]) -> Vec<bool> {
    if !config.catalogs.virt_builder {
        return vec![false; images.len()];
    }
    select(config, info, images)
        .iter()
        .map(Result::is_ok)
        .collect()
}

/// The image's `file=` path and arch, or why virt-builder cannot take it.
fn listable<'a>(
    config: &Config,
    info: &'a ReleaseInfo,
    image: &'a ImageSource,
) -> Result<(String, &'a Arch), String> {
    if !matches!(image.format, ImageFormat::Raw | ImageFormat::Qcow2) {
        return Err(format!(
            "format {}; virt-builder takes raw or qcow2",
            image.format
        ));
    }
    if let Some(c) = image.compression.filter(|c| *c != Compression::Xz) {
        return Err(format!(
            "{}-compressed; virt-builder takes xz or no compression",
            c.as_str()
        ));
    }
    let Some(arch) = image.arch.as_ref().or(info.requirements.arch.as_ref()) else {
        return Err(
            "no arch, which virt-builder requires: set `arch` under [requirements] in its \
             release.toml"
                .to_owned(),
        );
    };
    let index = config.site_url(INDEX);
    match index.make_relative(&image.url) {
        Some(file) if !file.is_empty() && !file.starts_with('/') && !file.contains("://") => {
            Ok((file, arch))
        }
        _ => Err(format!(
            "served from {}, not from the host of {index}; virt-builder takes only a file= \
             path relative to the index",
            image.url
        )),
    }
}

/// A section name virt-builder reads: letters, digits and `- . _`. A
/// version's `+` and `~` become `_`.
fn section(info: &ReleaseInfo) -> String {
    info.anchor()
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// A value over several lines: each further line starts with a space,
/// so none can start a section or a key, and an empty line is a lone
/// space. A line ends at LF, CRLF or a lone CR: no CR is left in the
/// value for a reader that breaks lines there to find a line of its own.
fn multiline(text: &str) -> String {
    let mut lines = text.lines().flat_map(|l| l.split('\r'));
    let mut out = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        out.push_str("\n ");
        out.push_str(line);
    }
    out
}

/// The index, and why each image it does not list is left out.
pub fn render(site: &Site) -> (Vec<CatalogFile>, Vec<String>) {
    let config = site.config;
    let mut text = String::new();
    let mut skipped = Vec::new();
    let mut sections: BTreeMap<(String, &Arch), String> = BTreeMap::new();
    for release in site.releases {
        let info = &release.info;
        let sources: Vec<&ImageSource> = release.images.iter().map(|i| &i.source).collect();
        for (image, chosen) in release.images.iter().zip(select(config, info, &sources)) {
            let path = &image.source.site_path;
            let entry = chosen.and_then(|file| {
                let sha512 = image.digest.sha512.ok_or(
                    "no SHA-512 known: taken from a previous site whose feed has none; build \
                     once from the image files to list it",
                )?;
                let size = image.info.virtual_size.ok_or(
                    "its virtual size is unknown (a raw disk inside xz), and virt-builder \
                     requires `size`",
                )?;
                Ok((file, sha512, size))
            });
            let (file, sha512, size) = match entry {
                Ok(e) => e,
                Err(why) => {
                    skipped.push(format!("{path}: {why}"));
                    continue;
                }
            };
            let name = section(info);
            let arch = image
                .source
                .arch
                .as_ref()
                .or(info.requirements.arch.as_ref())
                .expect("select() lists only images with an arch");
            if let Some(other) = sections.get(&(name.clone(), arch)) {
                skipped.push(format!(
                    "{path}: its section [{name}] on {arch} is taken by {other}"
                ));
                continue;
            }
            sections.insert((name.clone(), arch), path.to_string());
            let mut fields = vec![("name", info.title.to_string())];
            fields.extend(info.osinfo.clone().map(|o| ("osinfo", o)));
            fields.extend([
                ("file", file),
                ("arch", arch.to_string()),
                ("checksum[sha512]", sha512.to_hex()),
                ("revision", revision(info).to_string()),
                ("format", image.info.format.to_string()),
                ("size", size.to_string()),
                ("compressed_size", image.digest.length.to_string()),
                ("notes", multiline(&info.notes_text)),
            ]);
            text.push_str(&format!("[{name}]\n"));
            for (key, value) in fields {
                text.push_str(&format!("{key}={value}\n"));
            }
            text.push('\n');
        }
    }
    let file = CatalogFile {
        path: INDEX.to_owned(),
        bytes: text.into_bytes(),
        signed: false,
    };
    (vec![file], skipped)
}

/// The release date in Unix seconds (none is before 1970).
fn revision(info: &ReleaseInfo) -> u64 {
    u64::try_from(info.date.timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_continue_with_a_space_and_blank_lines_are_a_lone_space() {
        assert_eq!(
            multiline("First.\n\n- one\r\n- two"),
            "First.\n \n - one\n - two"
        );
        // A lone CR ends a line too, and is not left in the value.
        assert_eq!(
            multiline("a\r[evil]\rfile=x\n\rb\r"),
            "a\n [evil]\n file=x\n \n b\n "
        );
    }
}
