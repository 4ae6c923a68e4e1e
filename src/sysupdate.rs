//! systemd-sysupdate's transfer files (`sysupdate.d(5)`) and the
//! `MatchPattern=` language they find versions with: written and read in
//! one place, as `sums` does for `SHA256SUMS`. The catalog writes a
//! transfer per appliance of the flat layout (`[catalogs] systemd`), the
//! landing page shows it, and `verify` reads it back.
//!
//! sysupdate lists a directory by its `SHA256SUMS`, takes the files one of
//! the source patterns matches, reads the version where the pattern says
//! `@v`, and installs the newest through systemd-pull, which checks the
//! file against `SHA256SUMS` and that against `SHA256SUMS.gpg`.

use std::collections::BTreeMap;

use url::Url;

use crate::model::{Compression, FileName, ImageFormat, Name, Release, Version};

/// Where the transfer files are, in the site.
pub fn transfer_path(appliance: &Name, format: Option<ImageFormat>) -> String {
    match format {
        None => format!("{}/{appliance}.transfer", crate::media::SYSUPDATE_DIR),
        Some(f) => format!(
            "{}/{appliance}.{}.transfer",
            crate::media::SYSUPDATE_DIR,
            f.as_str()
        ),
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

/// A character sysupdate takes in a pattern's literal text: printable
/// ASCII but those it keeps for a pattern language of its own.
fn literal_char(c: char) -> bool {
    (' '..='~').contains(&c) && !matches!(c, '$' | '*' | '?' | '[' | ']' | '!' | '\\' | '|' | '/')
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
            "the name holds `{}`, which systemd-sysupdate refuses in a pattern",
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
        match (c, c == '@') {
            (_, false) => out.push(c),
            (_, true) => match chars.next()? {
                '@' => out.push('@'),
                'v' if !seen => seen = true,
                _ => return None,
            },
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
    /// default pool.
    fn of(appliance: &Name, format: ImageFormat) -> Target {
        let (path, ext) = match format {
            ImageFormat::Raw => ("/var/lib/machines", "raw"),
            other => ("/var/lib/libvirt/images", other.as_str()),
        };
        Target {
            path: path.to_owned(),
            pattern: format!("{appliance}_@v.{ext}"),
            current_symlink: format!("{appliance}.{ext}"),
        }
    }
}

impl Transfer {
    /// The file, with comments that say how to install it and what to
    /// change.
    pub fn to_text(&self, title: &str) -> String {
        let mut out = format!(
            "# systemd-sysupdate keeps {title} current from {source}.\n\
             # Install as /etc/sysupdate.d/50-{name}.transfer, with this site's OpenPGP key as\n\
             # /etc/systemd/import-pubring.gpg, then run `systemd-sysupdate update`.\n\
             # Verify=yes checks SHA256SUMS.gpg with that key, and each file against SHA256SUMS.\n\
             # Install one transfer per appliance (the site may offer one per format).\n\
             # [Target]: Type=partition installs to a GPT partition instead (sysupdate.d(5)).\n\
             [Transfer]\nVerify=yes\n\n[Source]\nType=url-file\nPath={source}\n",
            source = self.source,
            name = self
                .target
                .current_symlink
                .split('.')
                .next()
                .unwrap_or_default(),
        );
        for pattern in &self.patterns {
            out.push_str(&format!("MatchPattern={pattern}\n"));
        }
        out.push_str(&format!(
            "\n[Target]\nType=regular-file\nPath={}\nMatchPattern={}\nCurrentSymlink={}\nInstancesMax=2\n",
            self.target.path, self.target.pattern, self.target.current_symlink
        ));
        out
    }

    /// Reads back what [`Transfer::to_text`] wrote: the source's type,
    /// path and patterns, and the target. Comments and blank lines are
    /// skipped; a key it does not write, a section twice, or a value that
    /// sysupdate would read otherwise, is refused.
    pub fn parse(text: &str) -> Result<Transfer, String> {
        let mut sections: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        let mut current: Option<&str> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if sections.insert(name, Vec::new()).is_some() {
                    return Err(format!("line {}: section [{name}] twice", n + 1));
                }
                current = Some(name);
                continue;
            }
            let (Some(section), Some((key, value))) = (current, line.split_once('=')) else {
                return Err(format!("line {} is not `Key=value` in a section", n + 1));
            };
            sections
                .entry(section)
                .or_default()
                .push((key.trim(), value.trim()));
        }
        let one = |section: &str, key: &str| -> Result<&str, String> {
            let values: Vec<&str> = sections
                .get(section)
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .collect();
            match values[..] {
                [value] => Ok(value),
                _ => Err(format!("[{section}] must have one {key}=")),
            }
        };
        let known = [
            ("Transfer", &["Verify"][..]),
            ("Source", &["Type", "Path", "MatchPattern"][..]),
            (
                "Target",
                &[
                    "Type",
                    "Path",
                    "MatchPattern",
                    "CurrentSymlink",
                    "InstancesMax",
                ][..],
            ),
        ];
        for (section, entries) in &sections {
            let keys = known
                .iter()
                .find(|(s, _)| s == section)
                .map(|(_, keys)| *keys)
                .ok_or_else(|| format!("unknown section [{section}]"))?;
            if let Some((key, _)) = entries.iter().find(|(k, _)| !keys.contains(k)) {
                return Err(format!("[{section}] {key}= is not one this tool writes"));
            }
        }
        if one("Transfer", "Verify")? != "yes" {
            return Err(
                "[Transfer] Verify= is not `yes`: sysupdate would install unsigned files".into(),
            );
        }
        if one("Source", "Type")? != "url-file" {
            return Err("[Source] Type= is not `url-file`".into());
        }
        let source = Url::parse(one("Source", "Path")?)
            .map_err(|e| format!("[Source] Path= is not a URL: {e}"))?;
        let patterns: Vec<String> = sections["Source"]
            .iter()
            .filter(|(k, _)| *k == "MatchPattern")
            .map(|(_, v)| v.to_string())
            .collect();
        if patterns.is_empty() {
            return Err("[Source] has no MatchPattern=".into());
        }
        if let Some(bad) = patterns.iter().find(|p| split(p).is_none()) {
            return Err(format!(
                "[Source] MatchPattern={bad} is not literal text with one @v"
            ));
        }
        Ok(Transfer {
            source,
            patterns,
            target: Target {
                path: one("Target", "Path")?.to_owned(),
                pattern: one("Target", "MatchPattern")?.to_owned(),
                current_symlink: one("Target", "CurrentSymlink")?.to_owned(),
            },
        })
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

/// One published file of a flat directory, as a transfer sees it.
struct Candidate<'a> {
    release: &'a Release,
    name: &'a FileName,
    format: ImageFormat,
    compression: Option<Compression>,
    primary: bool,
}

/// The transfers of `appliance`, whose flat directory is `dir` (a site
/// path, `images/<appliance>`) at `url`: one per image format published
/// there, the format of the newest release's primary image as
/// `sysupdate/<appliance>.transfer`, the others as
/// `sysupdate/<appliance>.<extension>.transfer`. Each lists, per naming of
/// its format, the pattern of the file uncompressed and in each
/// compression systemd-pull unpacks (xz, gzip), whichever is published
/// now, and only patterns that read every file they match as its own
/// release's version.
pub fn plan(releases: &[Release], appliance: &Name, dir: &str, url: &Url) -> Plan {
    let mut plan = Plan::default();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut names: Vec<(&FileName, &Version)> = Vec::new();
    for release in releases.iter().filter(|r| r.info.appliance == *appliance) {
        for image in &release.images {
            if image.source.site_path.parent() != Some(dir) {
                continue;
            }
            names.push((&image.source.name, &release.info.version));
            candidates.push(Candidate {
                release,
                name: &image.source.name,
                format: image.source.format,
                compression: image.source.compression,
                primary: image.source.primary,
            });
        }
        for file in release.supply.iter() {
            if file.site_path.parent() == Some(dir) {
                names.push((&file.name, &release.info.version));
            }
        }
    }
    // By format: the patterns that find it, in order of first appearance.
    let mut by_format: Vec<(ImageFormat, Vec<String>)> = Vec::new();
    for c in &candidates {
        let label = format!("{} {} {}", appliance, c.release.info.version, c.name);
        if !decompressed(c.compression) {
            plan.skipped.push(format!(
                "{label}: systemd-pull (252, Debian 12) does not unpack {} as it downloads",
                c.compression.map_or("", Compression::as_str)
            ));
            continue;
        }
        let pattern = match pattern(c.name, &c.release.info.version) {
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
            names
                .iter()
                .find(|(n, v)| match_version(p, n.as_str()).is_some_and(|f| f != v.as_str()))
                .map(|(n, v)| (p, n, v))
        });
        if let Some((p, other, v)) = misread {
            plan.skipped.push(format!(
                "{label}: the pattern `{p}` would read {other} (of {v}) as another version"
            ));
            continue;
        }
        let patterns = match by_format.iter_mut().find(|(f, _)| *f == c.format) {
            Some((_, patterns)) => patterns,
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
    let preferred = releases
        .iter()
        .filter(|r| r.info.appliance == *appliance)
        .max_by(|a, b| a.info.version.cmp(&b.info.version))
        .and_then(|newest| {
            candidates
                .iter()
                .find(|c| std::ptr::eq(c.release, newest) && c.primary)
        })
        .map(|c| c.format);
    by_format.sort_by_key(|(f, _)| (Some(*f) != preferred, f.as_str()));
    for (i, (format, patterns)) in by_format.into_iter().enumerate() {
        let path = transfer_path(appliance, (i > 0).then_some(format));
        plan.transfers.push(Planned {
            path,
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
            pattern(&name("web$-1.raw"), &version("1"))
                .unwrap_err()
                .contains("`$`")
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

    #[test]
    fn transfers_read_back_as_written() {
        let transfer = Transfer {
            source: Url::parse("https://example.com/site/images/webapp/").unwrap(),
            patterns: vec!["webapp-@v.raw".into(), "webapp-@v.raw.xz".into()],
            target: Target::of(&Name::parse("webapp", "n").unwrap(), ImageFormat::Raw),
        };
        let text = transfer.to_text("WebApp");
        assert!(text.contains("\nMatchPattern=webapp-@v.raw\nMatchPattern=webapp-@v.raw.xz\n"));
        assert!(text.contains("CurrentSymlink=webapp.raw\n"));
        assert_eq!(Transfer::parse(&text).unwrap(), transfer);
        let unsigned = text.replace("Verify=yes", "Verify=no");
        assert!(Transfer::parse(&unsigned).unwrap_err().contains("unsigned"));
        let extra = text.replace("[Target]\n", "[Target]\nPathRelativeTo=root\n");
        assert!(
            Transfer::parse(&extra)
                .unwrap_err()
                .contains("PathRelativeTo")
        );
    }
}
