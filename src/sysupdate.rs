//! systemd-sysupdate's transfer files (`sysupdate.d(5)`) and the
//! `MatchPattern=` language they find versions with, in one place, as
//! `sums` is for `SHA256SUMS`. A transfer is a function of the releases
//! alone: the catalog writes one per appliance with a flat directory
//! (`[catalogs] systemd`), the landing page shows it, and `verify` makes it
//! again from the signed feeds and compares, byte for byte.
//!
//! sysupdate lists a directory by its `SHA256SUMS`, takes the files one of
//! the source patterns matches, reads the version where the pattern says
//! `@v`, and installs the newest through systemd-pull, which checks the
//! file against `SHA256SUMS` and that against `SHA256SUMS.gpg`.

use url::Url;

use crate::model::{Compression, FileName, ImageFormat, Name, RelPath, Release, Version};

/// Where the transfer files are, in the site: the appliance's own, and one
/// per other format in a directory of its name (an appliance's name may
/// hold a `.`, so `<appliance>.<format>` could be another's).
pub fn transfer_path(appliance: &Name, format: Option<ImageFormat>) -> String {
    let dir = crate::media::SYSUPDATE_DIR;
    match format {
        None => format!("{dir}/{appliance}.transfer"),
        Some(f) => format!("{dir}/{appliance}/{}.transfer", f.as_str()),
    }
}

/// The compressions systemd-pull takes a file out of as it downloads it.
/// Debian 12's systemd-pull (252) stores a zstd file as it is.
fn decompressed(compression: Option<Compression>) -> bool {
    matches!(
        compression,
        None | Some(Compression::Xz) | Some(Compression::Gzip)
    )
}

/// A character that stands for itself in a pattern as sysupdate reads a
/// `MatchPattern=` line: printable ASCII but those it keeps for a pattern
/// language of its own (`$*?[]!\|`), `/`, and those the line's parsing
/// takes (whitespace splits patterns, quotes and `\` are unquoted, `%`
/// starts a specifier). `@` is written `@@`.
fn literal_char(c: char) -> bool {
    ('!'..='~').contains(&c)
        && !matches!(
            c,
            '$' | '*' | '?' | '[' | ']' | '!' | '\\' | '|' | '/' | '%' | '"' | '\''
        )
}

/// A version sysupdate accepts: letters, digits and `.,_-+`.
fn sysupdate_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ',' | '_' | '-' | '+'))
}

/// The source pattern that finds `name` and the other versions named like
/// it: the name with its version (as [`FileName::version_at`] finds it)
/// replaced by `@v` and every `@` doubled. Why sysupdate cannot take it
/// otherwise.
pub fn pattern(name: &FileName, version: &Version) -> Result<String, String> {
    if !sysupdate_version(version.as_str()) {
        return Err(format!(
            "version `{version}` holds a character systemd-sysupdate does not take in a version \
             (letters, digits and `.,_-+` only)"
        ));
    }
    let at = name
        .version_at(version)
        .ok_or_else(|| format!("the name does not hold the version `{version}`"))?;
    let text = name.as_str();
    if let Some(c) = text.chars().find(|&c| c != '@' && !literal_char(c)) {
        return Err(format!(
            "the name holds `{}`, which a systemd-sysupdate pattern cannot hold as it is",
            c.escape_debug()
        ));
    }
    let escape = |s: &str| s.replace('@', "@@");
    let pattern = format!("{}@v{}", escape(&text[..at.start]), escape(&text[at.end..]));
    match match_version(&pattern, text) {
        Some(found) if found == version.as_str() => Ok(pattern),
        _ => Err(format!(
            "systemd-sysupdate would not read the version `{version}` from it with `{pattern}`"
        )),
    }
}

/// The version `pattern` reads from a file name, as sysupdate matches:
/// literal text must follow as it stands, and `@v` takes everything up to
/// the first place the literal after it appears. `None` when the pattern
/// does not match, or the version is not one sysupdate accepts. Patterns
/// here hold only literal text (`@@` for `@`) and one `@v`.
pub fn match_version(pattern: &str, name: &str) -> Option<String> {
    let (before, after) = split(pattern)?;
    let rest = name.strip_prefix(&before)?;
    let (version, tail) = match after.is_empty() {
        true => (rest, ""),
        false => rest.split_at(rest.find(after.as_str())?),
    };
    (tail == after && sysupdate_version(version)).then(|| version.to_owned())
}

/// A pattern's literal text before and after its one `@v`, unescaped.
fn split(pattern: &str) -> Option<(String, String)> {
    let (mut before, mut after, mut seen) = (String::new(), String::new(), false);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let out = if seen { &mut after } else { &mut before };
        match c {
            '@' => match chars.next()? {
                '@' => out.push('@'),
                'v' if !seen => seen = true,
                _ => return None,
            },
            c => out.push(c),
        }
    }
    seen.then_some((before, after))
}

/// A transfer file: where sysupdate finds the versions and where it
/// installs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The directory of the appliance's images, ending in `/`.
    pub source: Url,
    /// The file names of every published version, one pattern a naming
    /// (`webapp-@v.raw`, `webapp-@v.raw.xz`).
    pub patterns: Vec<String>,
    /// What is installed: the target's pattern and its current symlink.
    pub target: Target,
}

/// Where sysupdate installs: a regular file per version in a directory,
/// with a symbolic link to the newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub pattern: String,
    pub current_symlink: String,
}

impl Target {
    /// The default target of an appliance's images of `format`: raw images
    /// in `/var/lib/machines`, where systemd-nspawn, machinectl and
    /// portablectl look; other formats, installed as they are (sysupdate
    /// converts no qcow2, unlike `systemd-pull` on its own), in libvirt's
    /// default pool. The version follows a `~`, which no appliance name
    /// holds: with `_`, `web_@v.raw` would take `web_db_2.0.raw` for a
    /// version of `web`, and remove it as the oldest.
    fn of(appliance: &Name, format: ImageFormat) -> Target {
        let (path, ext) = match format {
            ImageFormat::Raw => ("/var/lib/machines", "raw"),
            other => ("/var/lib/libvirt/images", other.as_str()),
        };
        Target {
            path: path.to_owned(),
            pattern: format!("{appliance}~@v.{ext}"),
            current_symlink: format!("{appliance}.{ext}"),
        }
    }
}

impl Transfer {
    /// The file, with comments that say how to install it and what to
    /// change. `%` in the URL is written `%%`, which sysupdate reads back
    /// as `%` (a lone one starts a specifier).
    pub fn to_text(&self, appliance: &Name) -> String {
        let mut out = format!(
            "# systemd-sysupdate keeps {appliance} current from {shown}.\n\
             # Install as /etc/sysupdate.d/50-{appliance}.transfer, with this site's OpenPGP key\n\
             # as /etc/systemd/import-pubring.gpg, then run `systemd-sysupdate update`.\n\
             # Verify=yes checks SHA256SUMS.gpg with that key, and each file against SHA256SUMS.\n\
             # Install one transfer per appliance (the site may offer one per format).\n\
             # [Target]: Type=partition installs to a GPT partition instead (sysupdate.d(5)).\n\
             [Transfer]\nVerify=yes\n\n[Source]\nType=url-file\nPath={source}\n",
            shown = self.source,
            source = self.source.as_str().replace('%', "%%"),
        );
        for pattern in &self.patterns {
            out.push_str(&format!("MatchPattern={pattern}\n"));
        }
        out.push_str(&format!(
            "\n[Target]\nType=regular-file\nPath={}\nMatchPattern={}\nCurrentSymlink={}\n\
             InstancesMax=2\n",
            self.target.path, self.target.pattern, self.target.current_symlink
        ));
        out
    }
}

/// The transfer files of one appliance, and what they leave out.
#[derive(Debug, Default)]
pub struct Plan {
    /// The appliance's own first.
    pub transfers: Vec<Planned>,
    /// Files of the flat directory no transfer finds, each with why.
    pub skipped: Vec<String>,
}

/// A transfer file to write.
#[derive(Debug)]
pub struct Planned {
    /// In the site.
    pub path: String,
    /// What its source patterns find.
    pub format: ImageFormat,
    pub transfer: Transfer,
}

impl Planned {
    /// The file's text: see [`Transfer::to_text`].
    pub fn text(&self, appliance: &Name) -> String {
        self.transfer.to_text(appliance)
    }
}

/// One published image of a flat directory, as a transfer sees it.
struct Candidate<'a> {
    version: &'a Version,
    name: &'a FileName,
    format: ImageFormat,
    compression: Option<Compression>,
    primary: bool,
}

/// The transfers of `appliance`, whose flat directory is
/// `images/<appliance>/` at `url`: one per image format published there,
/// the format of the newest release's primary image as
/// `sysupdate/<appliance>.transfer`, the others as
/// `sysupdate/<appliance>/<format>.transfer`. Each lists, per naming of its
/// format, the pattern of the file uncompressed and in each compression
/// systemd-pull unpacks (xz, gzip), whichever is published now, and only
/// patterns that read every file they match as its own release's version.
/// Only files `served` (from the directory itself, not another host) count.
/// The same whatever order `releases` come in.
pub fn plan(
    releases: &[Release],
    appliance: &Name,
    url: &Url,
    served: &dyn Fn(&RelPath, &Url) -> bool,
) -> Plan {
    let dir = format!("images/{appliance}");
    let in_dir =
        |path: &RelPath, url: &Url| path.parent() == Some(dir.as_str()) && served(path, url);
    let mut plan = Plan::default();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut releases: Vec<&Release> = releases
        .iter()
        .filter(|r| r.info.appliance == *appliance)
        .collect();
    releases.sort_by(|a, b| b.info.version.cmp(&a.info.version));
    for release in &releases {
        let version = &release.info.version;
        for image in &release.images {
            if !in_dir(&image.source.site_path, &image.source.url) {
                continue;
            }
            candidates.push(Candidate {
                version,
                name: &image.source.name,
                format: image.source.format,
                compression: image.source.compression,
                primary: image.source.primary,
            });
        }
    }
    candidates.sort_by(|a, b| b.version.cmp(a.version).then_with(|| a.name.cmp(b.name)));
    // By format: the patterns that find it, newest naming first.
    let mut by_format: Vec<(ImageFormat, Vec<String>)> = Vec::new();
    for c in &candidates {
        let label = format!("{} {} {}", appliance, c.version, c.name);
        if !decompressed(c.compression) {
            plan.skipped.push(format!(
                "{label}: systemd-pull (252, Debian 12) does not unpack {} as it downloads",
                c.compression.map_or("", Compression::as_str)
            ));
            continue;
        }
        let pattern = match pattern(c.name, c.version) {
            Ok(p) => p,
            Err(why) => {
                plan.skipped.push(format!("{label}: {why}"));
                continue;
            }
        };
        // The naming of the file uncompressed, and in each compression
        // systemd-pull unpacks: a host that installed the transfer finds
        // later versions however they are published.
        let base = match c.compression {
            Some(comp) => pattern
                .strip_suffix(&format!(".{}", comp.extension()))
                .unwrap_or(&pattern)
                .to_owned(),
            None => pattern.clone(),
        };
        let family = [
            base.clone(),
            format!("{base}.{}", Compression::Xz.extension()),
            format!("{base}.{}", Compression::Gzip.extension()),
        ];
        // A pattern that reads another file as the wrong version would
        // have sysupdate install that file as this version.
        let misread = family.iter().find_map(|p| {
            candidates
                .iter()
                .find(|o| {
                    match_version(p, o.name.as_str()).is_some_and(|f| f != o.version.as_str())
                })
                .map(|o| (p, o.name, o.version))
        });
        if let Some((p, other, v)) = misread {
            plan.skipped.push(format!(
                "{label}: the pattern `{p}` would read {other} (of {v}) as another version"
            ));
            continue;
        }
        let patterns = match by_format.iter().position(|(f, _)| *f == c.format) {
            Some(i) => &mut by_format[i].1,
            None => {
                by_format.push((c.format, Vec::new()));
                &mut by_format.last_mut().expect("just pushed").1
            }
        };
        for p in family {
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
    }
    let preferred = releases.first().and_then(|newest| {
        candidates
            .iter()
            .find(|c| std::ptr::eq(c.version, &newest.info.version) && c.primary)
            .map(|c| c.format)
    });
    by_format.sort_by_key(|(f, _)| (Some(*f) != preferred, f.as_str()));
    for (i, (format, patterns)) in by_format.into_iter().enumerate() {
        plan.transfers.push(Planned {
            path: transfer_path(appliance, (i > 0).then_some(format)),
            format,
            transfer: Transfer {
                source: url.clone(),
                patterns,
                target: Target::of(appliance, format),
            },
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> FileName {
        FileName::parse(s).unwrap()
    }

    fn version(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn patterns_replace_the_version_and_read_it_back() {
        let p = pattern(&name("webapp-1.4.0.raw.xz"), &version("1.4.0")).unwrap();
        assert_eq!(p, "webapp-@v.raw.xz");
        assert_eq!(
            match_version(&p, "webapp-1.10.0.raw.xz").as_deref(),
            Some("1.10.0")
        );
        assert_eq!(match_version(&p, "webapp-1.4.0.raw"), None);
        assert_eq!(match_version("webapp-@v.raw", "webapp-1.4.0.raw.xz"), None);
        assert_eq!(
            pattern(&name("a@b-2.raw"), &version("2")).unwrap(),
            "a@@b-@v.raw"
        );
        assert_eq!(
            match_version("a@@b-@v.raw", "a@b-2.raw").as_deref(),
            Some("2")
        );
        assert!(
            pattern(&name("webapp-1.0~rc1.raw"), &version("1.0~rc1"))
                .unwrap_err()
                .contains("does not take in a version")
        );
        // sysupdate splits at the first `.raw` after the prefix.
        assert!(
            pattern(&name("a-1.raw2.raw"), &version("1.raw2"))
                .unwrap_err()
                .contains("would not read the version")
        );
    }

    /// What the line's own parsing would take (a space splits patterns,
    /// `%` is a specifier, quotes and `\` are unquoted) or the pattern
    /// language keeps is never written as it is.
    #[test]
    fn a_name_sysupdate_would_read_otherwise_has_no_pattern() {
        for file in [
            "web 1.raw",
            "web%a-1.raw",
            "web\"-1.raw",
            "web'-1.raw",
            "web$-1.raw",
            "web*-1.raw",
            "wéb-1.raw",
        ] {
            let e = pattern(&name(file), &version("1")).unwrap_err();
            assert!(e.contains("cannot hold as it is"), "{file}: {e}");
        }
    }

    /// `~` parts an appliance's name from the version: `web`'s pattern
    /// takes no file of `web_db` or `web-db`.
    #[test]
    fn a_target_finds_only_its_own_appliance() {
        let raw = ImageFormat::Raw;
        let web = Target::of(&Name::parse("web", "n").unwrap(), raw).pattern;
        assert_eq!(web, "web~@v.raw");
        assert_eq!(match_version(&web, "web~1.2.raw").as_deref(), Some("1.2"));
        for other in ["web_db~2.0.raw", "web-db~2.0.raw", "web.db~2.0.raw"] {
            assert_eq!(match_version(&web, other), None, "{other}");
        }
        let web_db = Target::of(&Name::parse("web_db", "n").unwrap(), raw).pattern;
        assert_eq!(match_version(&web_db, "web~1.2.raw"), None);
    }

    #[test]
    fn transfer_paths_of_two_appliances_never_meet() {
        let a = Name::parse("webapp", "n").unwrap();
        let b = Name::parse("webapp.raw", "n").unwrap();
        assert_ne!(
            transfer_path(&a, Some(ImageFormat::Raw)),
            transfer_path(&b, None)
        );
        assert_eq!(
            transfer_path(&a, Some(ImageFormat::Raw)),
            "sysupdate/webapp/raw.transfer"
        );
    }

    #[test]
    fn a_percent_in_the_url_is_written_as_sysupdate_reads_it() {
        let transfer = Transfer {
            source: Url::parse("https://example.com/a%20b/images/webapp/").unwrap(),
            patterns: vec!["webapp-@v.raw".into()],
            target: Target::of(&Name::parse("webapp", "n").unwrap(), ImageFormat::Raw),
        };
        let text = transfer.to_text(&Name::parse("webapp", "n").unwrap());
        assert!(
            text.contains("\nPath=https://example.com/a%%20b/images/webapp/\n"),
            "{text}"
        );
        assert!(text.contains("\nMatchPattern=webapp~@v.raw\nCurrentSymlink=webapp.raw\n"));
    }
}
