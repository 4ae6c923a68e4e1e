//! Warnings: what a stage tells the user without stopping. Stages return
//! them in their reports; only the command layer prints them.

use std::fmt;
use std::path::{Path, PathBuf};

/// One warning, about a file when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: Option<PathBuf>,
    pub message: String,
}

impl Warning {
    /// A warning about `path`.
    pub fn file(path: &Path, message: impl fmt::Display) -> Self {
        Warning {
            path: Some(path.to_path_buf()),
            message: message.to_string(),
        }
    }
}

impl Warning {
    /// A warning about line `line`, column `column` (1-based) of `path`.
    pub fn at(path: &Path, line: usize, column: usize, message: impl fmt::Display) -> Self {
        Warning {
            path: None,
            message: format!("{}:{line}:{column}: {message}", path.display()),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// In JSON reports a warning is its one line, as printed.
impl serde::Serialize for Warning {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
