//! The crate's one error type.
//!
//! Every variant names the file it is about; parse errors also give the line
//! and column. `Display` gives one line; the cause, if any, is the `source()`
//! chain, which `main` prints after it. Nothing here prints or exits.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a named file failed.
    #[error("{action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A problem at a known place in a text file.
    #[error("{}:{line}:{column}: {message}", .path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A problem at a known line of a file.
    #[error("{}:{line}: {message}", .path.display())]
    AtLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A problem with a whole file.
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    /// No config file was named, and none was found here or above.
    #[error(
        "no vmcast.toml in {} or any directory above it; pass -c FILE, or create a site with \
         `vmcast-gen init`",
        .searched.display()
    )]
    NoConfig { searched: PathBuf },
    /// No secret key was given or configured.
    #[error(
        "no secret key: pass --secret-key FILE (or a pkcs11: URI of a key on a token), set \
         VMCAST_SECRET_KEY to the key file's contents, or set secret_key in the config; \
         `vmcast-gen keygen` makes one"
    )]
    NoSecretKey,
    /// `--verify-cache` found cached digests that the files contradict.
    #[error(
        "--verify-cache found {} stale cache entr{}; the cache was rewritten from the files:\n  {}",
        .entries.len(),
        if .entries.len() == 1 { "y" } else { "ies" },
        .entries.join("\n  ")
    )]
    StaleCache { entries: Vec<String> },
    /// A command-line value that cannot be used.
    #[error("{option} `{value}`: {reason}")]
    Usage {
        option: &'static str,
        value: String,
        reason: String,
    },
    /// An object store refused or failed an operation on an object.
    #[cfg(feature = "publish")]
    #[error("cannot {action} {object}")]
    Store {
        action: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// An operation failed for a reason another library gives.
    #[error("{action}")]
    Failed {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Bytes that contradict what their publisher signed or required: a
    /// feed that does not verify, an image whose length or SHA-256 is not
    /// the signed one, a release without the provenance asked for. Nothing
    /// was put in place. A caller that alerts someone branches on this.
    #[error("{0}")]
    Refused(String),
    /// A transfer that could not finish this time: the network or the
    /// server failed, stalled or was too slow. Nothing was put in place;
    /// what arrived is kept for the next run to go on from.
    #[error("{0}")]
    Interrupted(String),
    /// The work was done, but the command the user asked to run after it
    /// (`pull --exec`) failed.
    #[error("{0}")]
    Hook(String),
    /// A problem that belongs to no single file.
    #[error("{0}")]
    Other(String),
    /// A build that failed after it had warned of something: the warnings
    /// stay with the error, so the command can show them before it. Says
    /// what `error` says; [`Error::unwarn`] takes them apart.
    #[error("{error}")]
    Warned {
        warnings: Vec<crate::Warning>,
        error: Box<Error>,
    },
}

impl Error {
    /// The warnings given before this error, and the error itself.
    pub fn unwarn(self) -> (Vec<crate::Warning>, Error) {
        match self {
            Error::Warned { warnings, error } => (warnings, *error),
            error => (Vec::new(), error),
        }
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn file(path: impl Into<PathBuf>, message: impl fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub fn at(path: impl Into<PathBuf>, pos: LineCol, message: impl fmt::Display) -> Self {
        Error::At {
            path: path.into(),
            line: pos.line,
            column: pos.column,
            message: message.to_string(),
        }
    }

    /// An error at byte `offset` of `text`, which was read from `path`.
    pub fn at_offset(path: &Path, text: &str, offset: usize, message: impl fmt::Display) -> Self {
        Self::at(path, LineCol::of(text, offset), message)
    }

    /// `action` failed because of `source`, which the error chain keeps.
    pub fn failed(
        action: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Failed {
            action: action.to_string(),
            source: Box::new(source),
        }
    }

    pub fn other(message: impl fmt::Display) -> Self {
        Error::Other(message.to_string())
    }
}

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

impl LineCol {
    pub fn of(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        LineCol {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// A text file being read (the config, a notes file), for errors and
/// warnings at a place in it. Each reader adds its own checks in its
/// module (`config`, `notes`).
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at the start of `span`.
    pub fn at(&self, span: std::ops::Range<usize>, message: impl fmt::Display) -> Error {
        Error::at_offset(self.path, self.text, span.start, message)
    }

    /// Where `span` starts.
    pub fn line_col(&self, span: std::ops::Range<usize>) -> LineCol {
        LineCol::of(self.text, span.start)
    }
}

/// Converts a toml parse error into one that names the file and position,
/// with a hint where the parser's own message misleads.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let message = err.message().trim_end();
    let Some(span) = err.span() else {
        return Error::file(path, message);
    };
    if let Some(open) = unclosed_multiline(text, span.start) {
        return Error::at_offset(
            path,
            text,
            open,
            "this multi-line string is never closed: add the closing quotes (three, like the opening ones)",
        );
    }
    // `version = 1.1.0`: the parser reads a float and fails at the second
    // dot ("invalid float, expected nothing").
    if (message.starts_with("invalid float") || message.starts_with("invalid number"))
        && let Some((at, key, value)) = bare_value(text, span.start)
    {
        return Error::at_offset(
            path,
            text,
            at,
            format_args!("`{value}` is not a TOML value: quote it, as in `{key} = \"{value}\"`"),
        );
    }
    match toml_hint(message, text, span.start) {
        // The parser's message, replaced: it lists every field.
        Some(hint) if message.starts_with("unknown field") => {
            Error::at_offset(path, text, span.start, hint)
        }
        Some(hint) => Error::at_offset(path, text, span.start, format_args!("{message}; {hint}")),
        None => Error::at_offset(path, text, span.start, message),
    }
}

/// The offset of a `"""` or `\'\'\'` that opens a string still open at
/// `error_at`: the parser reports such a string at the end of the file,
/// far from the mistake.
fn unclosed_multiline(text: &str, error_at: usize) -> Option<usize> {
    let before = text.get(..error_at.min(text.len()))?;
    let mut open: Option<(usize, &str)> = None;
    let mut i = 0;
    while i < before.len() {
        let rest = &before[i..];
        match open {
            Some((_, quote)) if rest.starts_with(quote) => {
                open = None;
                i += 3;
            }
            Some((_, "\"\"\"")) if rest.starts_with('\\') => i += 2,
            Some(_) => i += rest.chars().next().map_or(1, char::len_utf8),
            None if rest.starts_with("\"\"\"") || rest.starts_with("\'\'\'") => {
                open = Some((i, &rest[..3]));
                i += 3;
            }
            None if rest.starts_with('#') => i += rest.find('\n').unwrap_or(rest.len()),
            None if rest.starts_with('"') => {
                i += 1 + before[i + 1..]
                    .find(['"', '\n'])
                    .map_or(before.len() - i - 1, |n| n + 1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    open.map(|(at, _)| at)
}

/// A hint for a message that names the wrong cure for a common mistake, or
/// none: `text` is the file, `offset` where the parser says the mistake is.
fn toml_hint(message: &str, text: &str, offset: usize) -> Option<String> {
    let at = text.get(offset..).unwrap_or_default();
    if let Some(unknown) = unknown_field(message) {
        return Some(unknown);
    }
    if let Some(hint) = table_hint(message, line_at(text, offset)) {
        return Some(hint);
    }
    if message.contains("expected a string")
        && (message.contains("floating point") || message.contains("integer"))
    {
        let (_, key, value) = bare_value(text, offset)?;
        return Some(format!("quote it, as in `{key} = \"{value}\"`"));
    }
    date_hint(message, at)
}

/// The line of `text` that holds byte `offset`.
fn line_at(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text
        .get(..offset)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let rest = text.get(start..).unwrap_or_default();
    rest.split('\n').next().unwrap_or_default()
}

/// `unknown field `titel`, expected one of ...`: the name meant, when one
/// is close (by edit distance, as cargo and rustc suggest, or holding the
/// unknown name as a word: `cpus` for `min_cpus`). Then the list, which
/// can be long, is left out.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let limit = unknown.chars().count().max(3) / 3;
    let closest = expected
        .iter()
        .map(|name| (edit_distance(unknown, name), *name))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, name)| name)
        .or_else(|| {
            expected
                .iter()
                .copied()
                .find(|name| name.split('_').any(|word| word == unknown))
        })?;
    Some(format!(
        "unknown field `{unknown}`: did you mean `{closest}`?"
    ))
}

/// The optimal string alignment distance between two names: insertions,
/// deletions, substitutions and swaps of neighbours, each costing one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// A table header whose name is one letter off a table's: `[appliance.x]`
/// (the config's default appliance, a string) for `[appliances.x]`, and
/// `[images."x"]` (a release's list of images) for `[image."x"]`.
fn table_hint(message: &str, line: &str) -> Option<String> {
    if !message.starts_with("invalid type: map") {
        return None;
    }
    let header = line.trim().strip_prefix('[')?.strip_suffix(']')?;
    let (name, rest) = header.split_once('.')?;
    let (meant, what) = match name.trim() {
        "appliance" => (
            "appliances",
            "`appliance` is the name of the default appliance",
        ),
        "images" => ("image", "`images` lists the release's image files"),
        _ => return None,
    };
    Some(format!(
        "did you mean `[{meant}.{rest}]`? {what}, not a table"
    ))
}

/// The value of the `key = value` line that holds byte `offset`, when it
/// is a bare token that starts with a digit (`1.1.0`, `1.10`, `2`), which
/// is meant as a string: its offset, the key and the token.
fn bare_value(text: &str, offset: usize) -> Option<(usize, &str, &str)> {
    let line = line_at(text, offset);
    let line_start = line.as_ptr() as usize - text.as_ptr() as usize;
    let (key, value) = line.split_once('=')?;
    let value = value.split('#').next().unwrap_or_default();
    let token = value.trim();
    let bare = token.starts_with(|c: char| c.is_ascii_digit())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_' | '~' | '-'));
    let at = line_start + key.len() + 1 + (value.len() - value.trim_start().len());
    bare.then_some((at, key.trim(), token))
}

/// A date written as a string, or with slashes.
fn date_hint(message: &str, at: &str) -> Option<String> {
    if message.contains("expected a TOML datetime") && message.contains("invalid type: string") {
        let value = at.trim_start().trim_start_matches(['"', '\'']);
        let value = value.split(['"', '\'']).next().unwrap_or(value);
        return Some(format!(
            "a date is written without quotes: remove them, as in `date = {value}`"
        ));
    }
    if message.contains("must be quoted") {
        let token: String = at
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '/' | '.' | '-'))
            .collect();
        let parts: Vec<&str> = token.split(['/', '.']).collect();
        if parts.len() == 3 && parts.iter().all(|p| !p.is_empty()) {
            let example = match parts[0].len() {
                4 => format!("{}-{:0>2}-{:0>2}", parts[0], parts[1], parts[2]),
                _ => "2026-11-01".to_owned(),
            };
            return Some(format!(
                "a date is written YYYY-MM-DD, without quotes, as in `date = {example}`"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(LineCol::of(text, 0), LineCol { line: 1, column: 1 });
        assert_eq!(LineCol::of(text, 6), LineCol { line: 2, column: 1 });
        // 'é' is two bytes but one column.
        assert_eq!(LineCol::of(text, 9), LineCol { line: 2, column: 3 });
        assert_eq!(LineCol::of(text, 999), LineCol { line: 3, column: 1 });
    }

    fn toml_message(text: &str) -> String {
        let err = toml::from_str::<toml::Table>(text).unwrap_err();
        toml_error(Path::new("f.toml"), text, &err).to_string()
    }

    #[test]
    fn toml_mistakes_get_hints_that_point_at_the_cure() {
        assert_eq!(
            toml_message("a = 1\nnotes = \"\"\"\nsome text\n\n[x]\nb = 2\n"),
            "f.toml:2:9: this multi-line string is never closed: add the closing quotes \
             (three, like the opening ones)"
        );
        assert!(
            toml_message("date = 2026/11/01\n").ends_with(
                "a date is written YYYY-MM-DD, without quotes, as in `date = 2026-11-01`"
            )
        );
        // A closed string before the mistake does not count as open.
        assert!(
            !toml_message("n = \"\"\"x\"\"\"\nq = \"a # b\"\nd = 1/2/3\n").contains("never closed")
        );
    }

    #[test]
    fn bare_versions_and_misnamed_tables_get_the_fix() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Notes {
            version: String,
            appliance: Option<String>,
        }
        let message = |text: &str| {
            let err = toml::from_str::<Notes>(text).unwrap_err();
            toml_error(Path::new("f.toml"), text, &err).to_string()
        };
        assert_eq!(
            message("version = 1.1.0 # the fix\n"),
            "f.toml:1:11: `1.1.0` is not a TOML value: quote it, as in `version = \"1.1.0\"`"
        );
        assert_eq!(
            message("version = 1.10\n"),
            "f.toml:1:11: invalid type: floating point `1.1`, expected a string; quote it, as in \
             `version = \"1.10\"`"
        );
        assert_eq!(
            message("version = \"1\"\n[appliance.myapp]\ntitle = \"x\"\n"),
            "f.toml:2:2: invalid type: map, expected a string; did you mean `[appliances.myapp]`? \
             `appliance` is the name of the default appliance, not a table"
        );
    }

    #[test]
    fn edit_distance_counts_a_swap_as_one() {
        assert_eq!(edit_distance("titel", "title"), 1);
        assert_eq!(edit_distance("jsonfeed", "json_feed"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("colour", "color"), 1);
    }

    #[test]
    fn unknown_fields_get_the_name_meant_when_one_is_close() {
        let hint = |m| unknown_field(m);
        assert_eq!(
            hint("unknown field `titel`, expected one of `title`, `description`").as_deref(),
            Some("unknown field `titel`: did you mean `title`?")
        );
        assert_eq!(
            hint("unknown field `cpus`, expected one of `arch`, `min_cpus`").as_deref(),
            Some("unknown field `cpus`: did you mean `min_cpus`?")
        );
        assert_eq!(
            hint("unknown field `jsonfeed`, expected `json_feed` or `vagrant`").as_deref(),
            Some("unknown field `jsonfeed`: did you mean `json_feed`?")
        );
        assert_eq!(
            hint("unknown field `colour`, expected one of `title`, `description`"),
            None
        );
    }
}
