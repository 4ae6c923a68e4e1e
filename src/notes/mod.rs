//! `release.toml`: one release's notes, parsed strictly into [`RawNotes`]
//! and validated into [`Notes`]. Values that fail validation are reported at
//! their own line and column.

mod markdown;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use toml::Spanned;

use crate::cloud::Provider;
use crate::error::{Error, Result, Source, toml_error};
use crate::fsutil;
use crate::model::{
    Arch, CloudImage, FileState, Firmware, ImageFormat, Line, MAX_TEXT_FILE, Name, Requirements,
    Version,
};
use crate::supply::Kind;

/// The file name that marks a directory as a release.
pub const NOTES_FILE: &str = "release.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotes {
    version: Spanned<String>,
    date: Spanned<toml::value::Datetime>,
    notes: Spanned<String>,
    title: Option<Spanned<String>>,
    appliance: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    #[serde(default)]
    critical: bool,
    primary: Option<Spanned<String>>,
    images: Option<Vec<Spanned<String>>>,
    requirements: Option<RawRequirements>,
    #[serde(default)]
    image: BTreeMap<Spanned<String>, RawImage>,
    #[serde(default)]
    cloud_image: Vec<RawCloudImage>,
    sbom: Option<Spanned<toml::Value>>,
    provenance: Option<Spanned<toml::Value>>,
    osinfo: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloudImage {
    provider: Spanned<String>,
    region: Option<Spanned<String>>,
    id: Spanned<String>,
    arch: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirements {
    arch: Option<Spanned<String>>,
    min_memory_mib: Option<u64>,
    min_disk_gib: Option<u64>,
    min_cpus: Option<u64>,
    firmware: Option<Firmware>,
    #[serde(default)]
    hypervisors: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    format: Option<Spanned<String>>,
    arch: Option<Spanned<String>>,
    sbom: Option<Spanned<toml::Value>>,
    provenance: Option<Spanned<toml::Value>>,
}

/// A value together with where it was written, for later errors.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
    pub column: usize,
}

/// Per-image settings for a file that detection cannot describe alone.
#[derive(Debug, Clone, Default)]
pub struct ImageOverride {
    pub format: Option<ImageFormat>,
    pub arch: Option<Arch>,
    /// Supply-chain files about this image (`sbom`, `provenance`).
    pub supply: Vec<(Kind, Located<String>)>,
}

/// A validated release.toml.
#[derive(Debug, Clone)]
pub struct Notes {
    pub path: PathBuf,
    pub version: Version,
    pub date: DateTime<Utc>,
    pub notes_html: String,
    /// The notes as written, trimmed.
    pub notes_text: String,
    /// The libosinfo short id of the guest OS, e.g. `debian12`.
    pub osinfo: Option<String>,
    pub title: Option<Line>,
    pub appliance: Option<Name>,
    pub channel: Name,
    pub critical: bool,
    pub primary: Option<Located<String>>,
    /// Paths or globs relative to the images directory, if given.
    pub images: Option<Vec<Located<String>>>,
    pub requirements: Requirements,
    /// Overrides keyed by file name.
    pub overrides: BTreeMap<String, Located<ImageOverride>>,
    /// `[[cloud_image]]` tables, checked; `arch` defaults to the
    /// requirements' like an image's.
    pub cloud_images: Vec<CloudImage>,
    /// Supply-chain files about the whole release (top-level `sbom`,
    /// `provenance`), relative to where its images are looked for.
    pub supply: Vec<(Kind, Located<String>)>,
}

impl Notes {
    /// An error at a place recorded in this file.
    pub fn error_at<T>(&self, at: &Located<T>, message: impl std::fmt::Display) -> Error {
        Error::At {
            path: self.path.clone(),
            line: at.line,
            column: at.column,
            message: message.to_string(),
        }
    }
}

/// Notes files a build read before, as the hash cache remembers them (by
/// path and state: a file in the same state holds the same bytes), each
/// with its notes rendered to HTML by the same program.
pub trait Known: Sync {
    /// The text of the notes file `path` in exactly `state`, and the HTML
    /// of its notes.
    fn notes(&self, path: &Path, state: &FileState) -> Option<(String, String)>;
}

/// A notes file as a build read it, for the next build to remember: its
/// path, state and text, and the HTML of its notes.
#[derive(Debug, Clone)]
pub struct Read {
    pub path: PathBuf,
    pub state: FileState,
    pub text: String,
    pub html: String,
}

/// The largest notes file remembered: a few hundred bytes are usual, and
/// a larger one would cost the cache file (read and written by every
/// build) and the build's memory more than reading it again does.
const REMEMBERED: usize = 64 << 10;

/// Reads the notes file the scan found at `path`, or takes its text and
/// HTML from `known` when it is in the state they were read in. `key` is
/// the path `known` knows it by (resolved). Returns what to remember of
/// it, unless it is too large to.
pub fn read(path: &Path, key: &Path, known: Option<&dyn Known>) -> Result<(Notes, Option<Read>)> {
    if let Some(known) = known {
        let meta = fsutil::symlink_metadata(path)?;
        let state = FileState::of(&meta);
        if let Some((text, html)) = known.notes(key, &state).filter(|_| meta.is_file()) {
            let notes = parse_with(path, &text, Some(html.clone()))?;
            let read = Read {
                path: key.to_path_buf(),
                state,
                text,
                html,
            };
            return Ok((notes, Some(read)));
        }
    }
    let (text, state) = load(path)?;
    let notes = parse(path, &text)?;
    let read = (text.len() <= REMEMBERED).then(|| Read {
        path: key.to_path_buf(),
        state,
        html: notes.notes_html.clone(),
        text,
    });
    Ok((notes, read))
}

/// Reads a notes file the scan found: through one descriptor, refusing a
/// symbolic link put in its place since, and at most [`MAX_TEXT_FILE`]
/// bytes. Returns its text and the state it was read in.
fn load(path: &Path) -> Result<(String, FileState)> {
    let (file, meta) = fsutil::open_regular(path, false)?;
    let size = meta.len();
    if size > MAX_TEXT_FILE {
        return Err(Error::file(
            path,
            format_args!(
                "{size} bytes, over the limit of {MAX_TEXT_FILE} bytes ({}) for a site's text \
                 files: `verify` refuses a feed that large; shorten the notes",
                crate::units::human_size(MAX_TEXT_FILE)
            ),
        ));
    }
    let text = fsutil::text(path, fsutil::read_open(file, path, MAX_TEXT_FILE, size)?)?;
    Ok((text, FileState::of(&meta)))
}

pub fn parse(path: &Path, text: &str) -> Result<Notes> {
    parse_with(path, text, None)
}

/// [`parse`], with the notes' HTML when it is known already: rendered by
/// this program from these very notes.
fn parse_with(path: &Path, text: &str, html: Option<String>) -> Result<Notes> {
    let raw: RawNotes = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let src = Source { path, text };

    let version =
        Version::parse(raw.version.get_ref()).map_err(|m| src.at(raw.version.span(), m))?;
    let date = parse_date(raw.date.get_ref()).map_err(|m| src.at(raw.date.span(), m))?;
    let appliance = match &raw.appliance {
        Some(s) => {
            Some(Name::parse(s.get_ref(), "appliance name").map_err(|m| src.at(s.span(), m))?)
        }
        None => None,
    };
    let channel = match &raw.channel {
        Some(s) => Name::parse(s.get_ref(), "channel").map_err(|m| src.at(s.span(), m))?,
        None => Name::parse("stable", "channel").expect("`stable` is a valid channel"),
    };
    let notes = src.notes(&raw.notes)?;
    let title = match &raw.title {
        Some(t) => Some(Line::parse(t.get_ref(), "title").map_err(|m| src.at(t.span(), m))?),
        None => None,
    };
    if raw.images.as_ref().is_some_and(Vec::is_empty) {
        return Err(Error::file(
            path,
            "`images` is an empty list; remove it to publish the image files beside release.toml",
        ));
    }
    let osinfo = match &raw.osinfo {
        Some(s) => Some(src.osinfo(s)?),
        None => None,
    };
    let mut overrides = BTreeMap::new();
    for (name, image) in &raw.image {
        let format = match &image.format {
            Some(f) => Some(ImageFormat::parse(f.get_ref()).map_err(|m| src.at(f.span(), m))?),
            None => None,
        };
        let located = src.locate(name);
        let supply = supply_files(path, text, &image.sbom, &image.provenance)?;
        overrides.insert(
            located.value.clone(),
            Located {
                value: ImageOverride {
                    format,
                    arch: src.arch(&image.arch)?,
                    supply,
                },
                line: located.line,
                column: located.column,
            },
        );
    }
    let requirements = match raw.requirements {
        Some(r) => Requirements {
            arch: src.arch(&r.arch)?,
            min_memory_mib: r.min_memory_mib,
            min_disk_gib: r.min_disk_gib,
            min_cpus: r.min_cpus,
            firmware: r.firmware,
            hypervisors: r.hypervisors,
        },
        None => Requirements::default(),
    };
    let cloud_images = raw
        .cloud_image
        .iter()
        .map(|c| src.cloud_image(c, requirements.arch.as_ref()))
        .collect::<Result<Vec<_>>>()?;

    let supply = supply_files(path, text, &raw.sbom, &raw.provenance)?;
    let notes_html = match html {
        Some(html) => html,
        None => notes_html(path, notes)?,
    };
    Ok(Notes {
        supply,
        path: path.to_path_buf(),
        version,
        date,
        notes_html,
        notes_text: notes.trim().to_owned(),
        osinfo,
        title,
        appliance,
        channel,
        critical: raw.critical,
        primary: raw.primary.as_ref().map(|p| src.locate(p)),
        images: raw
            .images
            .as_ref()
            .map(|list| list.iter().map(|i| src.locate(i)).collect()),
        requirements,
        overrides,
        cloud_images,
    })
}

/// The notes file's own checks, at their place in it.
impl Source<'_> {
    /// A value with the line and column it was written at.
    fn locate(&self, s: &Spanned<String>) -> Located<String> {
        let pos = self.line_col(s.span());
        Located {
            value: s.get_ref().clone(),
            line: pos.line,
            column: pos.column,
        }
    }

    fn arch(&self, arch: &Option<Spanned<String>>) -> Result<Option<Arch>> {
        match arch {
            Some(a) => Arch::parse(a.get_ref())
                .map(Some)
                .map_err(|m| self.at(a.span(), m)),
            None => Ok(None),
        }
    }

    /// The notes, which must say something, in text whose only control
    /// characters are tabs and line breaks: any other would reach the feed
    /// (where XML forbids it) and virt-builder's index.
    fn notes<'n>(&self, notes: &'n Spanned<String>) -> Result<&'n str> {
        let text = notes.get_ref();
        if text.trim().is_empty() {
            return Err(Error::file(
                self.path,
                "`notes` is empty; say what changed in this release",
            ));
        }
        if let Some(c) = text
            .chars()
            .find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(self.at(
                notes.span(),
                format!(
                    "`notes` hold the control character U+{:04X}; only tabs and line breaks may \
                     be written",
                    u32::from(c)
                ),
            ));
        }
        Ok(text)
    }

    /// A libosinfo short id.
    fn osinfo(&self, osinfo: &Spanned<String>) -> Result<String> {
        let id = osinfo.get_ref();
        let ok = id.len() <= 64
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        match ok {
            true => Ok(id.clone()),
            false => Err(self.at(
                osinfo.span(),
                format!(
                    "invalid osinfo `{}`: a libosinfo short id such as `debian12` or \
                     `fedora-40`: lower-case letters, digits and . - _",
                    id.escape_default()
                ),
            )),
        }
    }

    /// A `[[cloud_image]]`, its id checked against its provider's syntax
    /// and its architecture the release's unless it names one.
    fn cloud_image(&self, c: &RawCloudImage, release_arch: Option<&Arch>) -> Result<CloudImage> {
        let provider =
            Provider::parse(c.provider.get_ref()).map_err(|m| self.at(c.provider.span(), m))?;
        provider
            .check_region(c.region.as_ref().map(|r| r.get_ref().as_str()))
            .map_err(|m| match &c.region {
                Some(r) => self.at(r.span(), m),
                None => self.at(c.provider.span(), m),
            })?;
        let id = provider
            .canonical_id(c.id.get_ref())
            .map_err(|m| self.at(c.id.span(), m))?;
        Ok(CloudImage {
            provider,
            region: c.region.as_ref().map(|r| r.get_ref().clone()),
            id,
            arch: self.arch(&c.arch)?.or_else(|| release_arch.cloned()),
        })
    }
}

/// The notes as HTML. The feed carries them escaped: rendering stops as
/// soon as that passes what `verify` reads, before the rest is parsed.
fn notes_html(path: &Path, notes: &str) -> Result<String> {
    let mut escaped = 0u64;
    markdown::to_html(notes, |piece| {
        escaped += crate::vocab::escaped_len(piece) as u64;
        escaped <= MAX_TEXT_FILE
    })
    .ok_or_else(|| {
        Error::file(
            path,
            format_args!(
                "the notes escaped into the feed would be over the limit of {MAX_TEXT_FILE} \
                 bytes ({}) for a site's text files: `verify` refuses a feed that large; shorten \
                 the notes",
                crate::units::human_size(MAX_TEXT_FILE)
            ),
        )
    })
}

/// The files `sbom` and `provenance` name: each a file name or a list of
/// them, relative paths without globs.
fn supply_files(
    path: &Path,
    text: &str,
    sbom: &Option<Spanned<toml::Value>>,
    provenance: &Option<Spanned<toml::Value>>,
) -> Result<Vec<(Kind, Located<String>)>> {
    let mut out = Vec::new();
    for (kind, value) in [(Kind::Sbom, sbom), (Kind::Provenance, provenance)] {
        let Some(value) = value else { continue };
        let pos = crate::error::LineCol::of(text, value.span().start);
        let err = |m: String| Error::at(path, pos, m);
        let names: Vec<&str> = match value.get_ref() {
            toml::Value::String(s) => vec![s.as_str()],
            toml::Value::Array(list) if !list.is_empty() => list
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    err(format!(
                        "`{}` must list file names (strings)",
                        kind.as_str()
                    ))
                })?,
            _ => {
                return Err(err(format!(
                    "`{}` must be a file name or a non-empty list of file names",
                    kind.as_str()
                )));
            }
        };
        for name in names {
            if name.contains(['*', '?', '[', '{']) {
                return Err(err(format!(
                    "`{}` names files, not globs: {name:?}",
                    kind.as_str()
                )));
            }
            crate::model::RelPath::parse(name).map_err(err)?;
            out.push((
                kind,
                Located {
                    value: name.to_owned(),
                    line: pos.line,
                    column: pos.column,
                },
            ));
        }
    }
    Ok(out)
}

/// A TOML date (midnight UTC) or offset date-time. A local date-time is
/// refused: its instant would depend on the build machine's time zone.
fn parse_date(dt: &toml::value::Datetime) -> Result<DateTime<Utc>, String> {
    let text = dt.to_string();
    match (dt.date.is_some(), dt.time.is_some(), dt.offset.is_some()) {
        (true, false, false) => NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
            .map_err(|e| format!("invalid date `{text}`: {e}")),
        (true, true, true) => DateTime::parse_from_rfc3339(&text)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| format!("invalid date-time `{text}`: {e}")),
        (true, true, false) => Err(format!(
            "date-time `{text}` has no time zone; add one, e.g. `{text}Z`"
        )),
        _ => Err(format!(
            "`{text}` is a time, not a date; write e.g. `2026-10-01`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Notes> {
        parse(Path::new("r/release.toml"), text)
    }

    #[test]
    fn minimal_notes_parse() {
        let n = parse_str("version = \"1.0\"\ndate = 2026-10-01\nnotes = \"Hi\"\n").unwrap();
        assert_eq!(n.version.as_str(), "1.0");
        assert_eq!(n.date.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(n.channel.as_str(), "stable");
    }

    #[test]
    fn offset_datetimes_become_utc() {
        let n = parse_str("version = \"1\"\ndate = 2026-10-01T12:00:00+02:00\nnotes = \"x\"\n")
            .unwrap();
        assert_eq!(n.date.to_rfc3339(), "2026-10-01T10:00:00+00:00");
    }

    #[test]
    fn errors_point_at_the_value() {
        let e = parse_str("version = \"1\"\ndate = 2026-10-01T12:00:00\nnotes = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r/release.toml:2:8: date-time"), "{e}");
        let e = parse_str("version = \"1/2\"\ndate = 2026-10-01\nnotes = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r/release.toml:1:11: invalid version"), "{e}");
    }
}
