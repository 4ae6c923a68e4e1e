//! Tokens that name things: versions, appliances, channels and
//! architectures, paths inside a site, and text that stays on one line.
//! Each is checked when it is made and cannot hold an invalid value; none
//! can hold a line break, so each is safe on a line of a line-oriented
//! format (virt-builder's index, SHA256SUMS, systemd-sysupdate's files).

use std::cmp::Ordering;
use std::fmt;

/// Checks that `s` is a non-empty run of allowed characters that starts with
/// an alphanumeric one, and is at most 128 bytes long.
fn check_token(s: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !s.chars().all(allowed) {
        return Err(format!(
            "invalid {what} `{}`: it must start with a letter or digit and hold only {}",
            s.escape_default(),
            match what {
                "version" => "letters, digits and . + _ ~ -",
                _ => "lower-case letters, digits and . _ -",
            }
        ));
    }
    if s.len() > 128 {
        return Err(format!("{what} `{s}` is longer than 128 bytes"));
    }
    Ok(())
}

/// A release version such as `1.4.0`, `2026.11` or `1.0.0-rc.1`.
///
/// Versions compare naturally: runs of digits as numbers, so `1.10` is newer
/// than `1.9`; a pre-release suffix (`-rc.1`) sorts before the release.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_token(s, "version", |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_' | '~' | '-')
        })?;
        Ok(Version(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before build metadata (`+...`) split at the first `-` into
    /// release and pre-release.
    fn parts(&self) -> (&str, Option<&str>) {
        let base = self.0.split('+').next().unwrap_or_default();
        match base.split_once('-') {
            Some((release, pre)) => (release, Some(pre)),
            None => (base, None),
        }
    }
}

/// Compares two strings with digit runs compared as numbers.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let an = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                let bn = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                let (da, db) = (
                    a[..an].trim_start_matches('0'),
                    b[..bn].trim_start_matches('0'),
                );
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[an..];
                b = &b[bn..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let (ra, pa) = self.parts();
        let (rb, pb) = other.parts();
        natural_cmp(ra, rb)
            .then_with(|| match (pa, pb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => natural_cmp(x, y),
            })
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lower-case token naming an appliance or a channel: `webapp`, `beta`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str, what: &str) -> Result<Self, String> {
        check_token(s, what, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
        })?;
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A machine architecture as the kernel names it (`uname -m`): `x86_64`,
/// `aarch64`, `armv7l`, `ppc64le`. Lower-case letters, digits and
/// `. _ -`, starting with a letter or digit: it goes verbatim into
/// virt-builder's `arch=` lines, file names and URLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Arch(String);

impl Arch {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_token(s, "arch", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
        })?;
        Ok(Arch(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An arch reads as the string it is.
impl std::ops::Deref for Arch {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Text that stays on one line, such as a title: no CR, LF, NUL or other
/// control character but a tab, so no reader of a line-oriented format
/// sees a new line, key or section in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Line(String);

impl Line {
    /// `what` names the value in the error, e.g. `title`.
    pub fn parse(s: &str, what: &str) -> Result<Self, String> {
        match s.chars().find(|&c| c.is_control() && c != '\t') {
            Some(c) => Err(format!(
                "{what} `{}` holds {}: it must stay on one line",
                s.escape_debug(),
                control_name(c)
            )),
            None => Ok(Line(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a message names a control character.
fn control_name(c: char) -> String {
    match c {
        '\n' => "a line feed (LF)".to_owned(),
        '\r' => "a carriage return (CR)".to_owned(),
        '\0' => "a NUL".to_owned(),
        c => format!("the control character U+{:04X}", u32::from(c)),
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A line reads as the string it is.
impl std::ops::Deref for Line {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A relative path with `/` separators: no `..`, no `.`, no empty or
/// absolute parts, no control character (NUL, CR, LF...), valid UTF-8.
/// Safe to join under a root or a URL, and to list in SHA256SUMS.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty path".into());
        }
        if s.starts_with('/') || s.starts_with('\\') {
            return Err(format!("`{}` is an absolute path", s.escape_debug()));
        }
        // Printable ASCII holds no control character: the common case,
        // checked byte by byte, before the look at every char.
        let printable = s.bytes().all(|b| (b' '..b'\x7f').contains(&b));
        if let Some(c) = s.chars().find(|c| !printable && c.is_control()) {
            return Err(format!("`{}` holds {}", s.escape_debug(), control_name(c)));
        }
        for part in s.split('/') {
            match part {
                "" | "." => {
                    return Err(format!(
                        "`{}` has an empty or `.` component",
                        s.escape_debug()
                    ));
                }
                ".." => {
                    return Err(format!(
                        "`{}` climbs out of its directory with `..`",
                        s.escape_debug()
                    ));
                }
                _ => {}
            }
        }
        Ok(RelPath(s.to_owned()))
    }

    /// This path with `suffix`, an end of a file name of ours (printable
    /// ASCII, no `/`: `.zsync`), on its last component: a path still.
    pub fn with_suffix(&self, suffix: &'static str) -> Self {
        debug_assert!(
            suffix
                .bytes()
                .all(|b| (b' '..b'\x7f').contains(&b) && b != b'/')
        );
        RelPath(format!("{}{suffix}", self.0))
    }

    /// Joins a single path component (a file name, a version...).
    pub fn join(&self, part: &str) -> Result<Self, String> {
        Self::parse(&format!("{}/{}", self.0, part))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment: the file's own name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// Everything before the last segment: the directory the file is in,
    /// `None` for a file at the root.
    pub fn parent(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(dir, _)| dir)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a URL's path hides a separator inside a segment: `%2F` (`/`)
/// or `%5C` (`\\`). URL parsing leaves them in the segment they are in, so
/// `site/..%2F..%2Fx` stays under `site/`; a server or CDN that decodes them
/// serves `x`, from outside the site.
pub fn hides_a_separator(url_path: &str) -> bool {
    let lower = url_path.to_ascii_lowercase();
    lower.contains("%2f") || lower.contains("%5c")
}

/// A published file's name: one plain path component, safe to create
/// beneath a directory that is not ours to escape (`pull --dest`). Not
/// empty, at most 255 bytes, no `/`, `\\`, NUL or other control
/// character, not `.` or `..`, and not hidden: names starting with `.`
/// belong to the tools' own state (`pull` keeps `.vmcast-state.json`,
/// `.vmcast-pull.json` and `.vmcast-partial/` beside the images), and the
/// scan never publishes them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName(String);

impl FileName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let shown = s.escape_debug();
        if s.is_empty() {
            return Err("an empty file name".into());
        }
        if s.len() > 255 {
            return Err(format!("file name `{shown}` is longer than 255 bytes"));
        }
        if s.contains(['/', '\\']) {
            return Err(format!(
                "file name `{shown}` holds a path separator: it must be one plain name"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(format!(
                "file name `{shown}` holds a control character (NUL, CR, LF...)"
            ));
        }
        if s.starts_with('.') {
            return Err(format!(
                "file name `{shown}` starts with `.`: hidden names are the tools' own"
            ));
        }
        Ok(FileName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where `version` stands in the name as a whole token (not next to a
    /// letter or digit), the last place if several: `1.4.0` in
    /// `webapp-1.4.0.qcow2`, not `1.4` in `webapp-11.4.qcow2`.
    pub fn version_at(&self, version: &Version) -> Option<std::ops::Range<usize>> {
        let (name, v) = (self.0.as_str(), version.as_str());
        let edge = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_alphanumeric());
        name.rmatch_indices(v)
            .map(|(at, _)| at..at + v.len())
            .find(|r| {
                edge(name[..r.start].chars().next_back()) && edge(name[r.end..].chars().next())
            })
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// In a file the tools keep (`pull`'s record), a file name is its string,
/// and one that is not a plain name is refused as the file is read.
impl serde::Serialize for FileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for FileName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FileName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A file name reads as the string it is.
impl std::ops::Deref for FileName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for FileName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for FileName {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl PartialEq<FileName> for String {
    fn eq(&self, other: &FileName) -> bool {
        *self == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_naturally() {
        assert!(v("1.10.0") > v("1.9.3"));
        assert!(v("1.4.0") > v("1.4.0-rc.2"));
        assert!(v("1.4.0-rc.10") > v("1.4.0-rc.9"));
        assert!(v("2026.11") > v("2026.2"));
        assert!(v("1.0") < v("1.0.1"));
        assert_eq!(v("1.0+b1").cmp(&v("1.0+b1")), Ordering::Equal);
    }

    #[test]
    fn versions_reject_path_characters() {
        assert!(Version::parse("1.0/2").is_err());
        assert!(Version::parse("..").is_err());
        assert!(Version::parse("").is_err());
        assert!(Version::parse("-1").is_err());
        assert!(Version::parse("1.0 beta").is_err());
    }

    #[test]
    fn rel_paths_refuse_escapes() {
        assert!(RelPath::parse("a/b.qcow2").is_ok());
        assert!(RelPath::parse("../a").is_err());
        assert!(RelPath::parse("a/../../b").is_err());
        assert!(RelPath::parse("/etc/passwd").is_err());
        assert!(RelPath::parse("a//b").is_err());
        assert!(RelPath::parse("./a").is_err());
        assert!(RelPath::parse("").is_err());
        assert!(RelPath::parse("a/b\nc").is_err());
        assert!(RelPath::parse("a\rb").is_err());
        assert!(RelPath::parse("a\0b").is_err());
        // Past printable ASCII: DEL and C1 controls refused, other
        // characters taken.
        assert!(RelPath::parse("a\u{7f}b").is_err());
        assert!(RelPath::parse("é/a\u{85}b").is_err());
        assert!(RelPath::parse("é/ü-1.0.qcow2").is_ok());
        let path = RelPath::parse("a/b.raw").unwrap();
        assert_eq!(path.with_suffix(".zsync").as_str(), "a/b.raw.zsync");
    }

    #[test]
    fn encoded_separators_are_found_in_either_case() {
        assert!(hides_a_separator("/site/..%2F..%2Fevil/x"));
        assert!(hides_a_separator("/site/a%2fb"));
        assert!(hides_a_separator("/site/..%5C..%5cevil"));
        assert!(!hides_a_separator("/site/a%20b/c%2Bd%25.raw"));
    }

    #[test]
    fn arches_are_tokens_without_line_breaks() {
        for good in ["x86_64", "aarch64", "armv7l", "ppc64le", "s390x", "i686"] {
            assert_eq!(Arch::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "x86_64\n[evil]",
            "x86_64\r",
            "x86_64\0",
            "X86_64",
            "x86 64",
            "-x86",
            "x86/64",
        ] {
            assert!(Arch::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            Arch::parse("x86_64\n[evil]").unwrap_err(),
            "invalid arch `x86_64\\n[evil]`: it must start with a letter or digit and hold only \
             lower-case letters, digits and . _ -"
        );
    }

    #[test]
    fn lines_hold_no_line_break() {
        assert_eq!(
            Line::parse("MyApp 1.0\t(LTS)", "title").unwrap().as_str(),
            "MyApp 1.0\t(LTS)"
        );
        assert_eq!(
            Line::parse("a\rb", "title").unwrap_err(),
            "title `a\\rb` holds a carriage return (CR): it must stay on one line"
        );
        assert!(Line::parse("a\nb", "title").is_err());
        assert!(Line::parse("a\0b", "title").is_err());
        assert!(Line::parse("a\u{85}b", "title").is_err());
    }

    #[test]
    fn file_names_are_one_plain_component() {
        assert!(FileName::parse("webapp-1.4.0.qcow2").is_ok());
        assert!(FileName::parse("disk image (1).raw").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "../escape.qcow2",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\rb",
            "\u{7f}",
            ".vmcast-pull.json",
            ".vmcast-partial",
        ] {
            assert!(FileName::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(FileName::parse(&"a".repeat(256)).is_err());
        assert_eq!(
            RelPath::parse("images/a/1/x.qcow2").unwrap().file_name(),
            "x.qcow2"
        );
    }

    #[test]
    fn file_names_read_from_json_are_checked() {
        let name: FileName = serde_json::from_str("\"webapp-1.4.0.qcow2\"").unwrap();
        assert_eq!(
            serde_json::to_string(&name).unwrap(),
            "\"webapp-1.4.0.qcow2\""
        );
        let err = serde_json::from_str::<FileName>("\"../victim.txt\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "file name `../victim.txt` holds a path separator: it must be one plain name"
        );
    }

    #[test]
    fn a_version_stands_in_a_file_name_as_a_whole_token() {
        let at = |name: &str, v: &str| {
            FileName::parse(name)
                .unwrap()
                .version_at(&Version::parse(v).unwrap())
        };
        assert_eq!(at("webapp-1.4.0.qcow2", "1.4.0"), Some(7..12));
        assert_eq!(at("webapp_1.4.0", "1.4.0"), Some(7..12));
        assert_eq!(at("1.4.0.raw", "1.4.0"), Some(0..5));
        assert_eq!(at("webapp-11.4.qcow2", "1.4"), None);
        assert_eq!(at("webapp-1.4a.qcow2", "1.4"), None);
        assert_eq!(at("webapp.qcow2", "1.4.0"), None);
        // The last place: the one before the extensions.
        assert_eq!(at("app2-2.raw", "2"), Some(5..6));
    }
}
