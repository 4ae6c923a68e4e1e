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
    /// A problem that belongs to no single file.
    #[error("{0}")]
    Other(String),
}

impl Error {
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

/// Converts a toml parse error into one that names the file and position.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let message = err.message().trim_end();
    match err.span() {
        Some(span) => Error::at_offset(path, text, span.start, message),
        None => Error::file(path, message),
    }
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
}
