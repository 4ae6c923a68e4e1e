//! JSON helpers shared by the readers: errors at `file:line:column`, and
//! the place of a key for errors about its value.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, LineCol};

/// One JSON document of a file: its text, and the line it starts at (a
/// line of a JSON Lines file; 1 for a whole file).
#[derive(Clone, Copy)]
pub(super) struct Doc<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) first_line: usize,
}

impl Doc<'_> {
    /// Deserializes the document into `T`; a syntax or shape error is
    /// reported where serde_json found it.
    pub(super) fn parse<T: DeserializeOwned>(&self, what: &str) -> Result<T, Error> {
        serde_json::from_str(self.text).map_err(|e| self.serde_error(what, &e))
    }

    /// Checks that the document is well-formed JSON and an object.
    pub(super) fn object(&self, what: &str) -> Result<(), Error> {
        let value: serde_json::Value = self.parse(what)?;
        let kind = match value {
            serde_json::Value::Object(_) => return Ok(()),
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Null => "null",
        };
        Err(self.error_at_start(format_args!("not {what}: {kind}, not a JSON object")))
    }

    fn serde_error(&self, what: &str, e: &serde_json::Error) -> Error {
        // serde_json ends its message with " at line L column C".
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => &full[..i],
            None => full.as_str(),
        };
        let message = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON: {message}")
            }
            _ => format!("not {what}: {message}"),
        };
        if e.line() == 0 {
            return Error::file(self.path, message);
        }
        Error::at(
            self.path,
            LineCol {
                line: self.first_line + e.line() - 1,
                column: e.column(),
            },
            message,
        )
    }

    /// An error about the whole document, at its start.
    pub(super) fn error_at_start(&self, message: impl std::fmt::Display) -> Error {
        Error::at(
            self.path,
            LineCol {
                line: self.first_line,
                column: 1,
            },
            message,
        )
    }

    /// An error about the value of `key`: at the key's first appearance,
    /// else at the document's start.
    pub(super) fn error_at_key(&self, key: &str, message: impl std::fmt::Display) -> Error {
        let offset = self.text.find(&format!("\"{key}\"")).unwrap_or(0);
        let pos = LineCol::of(self.text, offset);
        Error::at(
            self.path,
            LineCol {
                line: self.first_line + pos.line - 1,
                column: pos.column,
            },
            message,
        )
    }
}
