//! Range requests as RFC 9110 defines them (sections 13.1.5 and 14): one
//! byte range is answered with 206; an invalid Range field, several
//! ranges, or an If-Range that does not match are answered with the whole
//! representation; 416 only for a valid range that selects nothing.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use super::http::http_date;

/// The part of a representation a GET answers with.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    /// 200 and every byte.
    Whole,
    /// 206 and the bytes `start..end`.
    Part { start: u64, end: u64 },
    /// 416: a valid range, but none of its bytes exist.
    Unsatisfiable,
}

/// What tells one version of a file from the next.
pub struct Validators {
    /// A strong entity tag: the inode, the length and the mtime to the
    /// nanosecond, so a rebuilt file gets a new one.
    pub etag: String,
    /// The mtime in whole seconds since the epoch.
    pub modified: i64,
}

impl Validators {
    pub fn of(meta: &Metadata) -> Self {
        Validators {
            etag: format!(
                "\"{:x}-{:x}-{:x}.{:x}\"",
                meta.ino(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec()
            ),
            modified: meta.mtime(),
        }
    }

    pub fn last_modified(&self) -> String {
        http_date(self.modified)
    }

    /// Whether a conditional GET or HEAD may be answered 304 Not Modified
    /// (RFC 9110 13.1.2, 13.1.3): `If-None-Match` names this version by
    /// weak comparison (or is `*`); without it, `If-Modified-Since` is
    /// not before the file's mtime.
    pub fn not_modified(
        &self,
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
    ) -> bool {
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        match (if_none_match, if_modified_since) {
            (Some(tags), _) => {
                tags.trim() == "*" || tags.split(',').any(|t| opaque(t) == opaque(&self.etag))
            }
            (None, Some(date)) => http_time(date).is_some_and(|t| self.modified <= t),
            (None, None) => false,
        }
    }

    /// Whether an If-Range value names this version: an entity tag by
    /// strong comparison (a weak one never matches), or exactly the
    /// Last-Modified date.
    fn match_if_range(&self, value: &str) -> bool {
        let value = value.trim();
        if value.starts_with('"') {
            value == self.etag
        } else if value.starts_with("W/") {
            false
        } else {
            http_time(value) == Some(self.modified)
        }
    }
}

/// An HTTP date (IMF-fixdate, RFC 9110 5.6.7) in seconds since the epoch.
fn http_time(value: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(value.trim(), "%a, %d %b %Y %H:%M:%S GMT")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// What a GET with these Range and If-Range fields gets of a file of `len`
/// bytes.
pub fn select(
    range: Option<&str>,
    if_range: Option<&str>,
    validators: &Validators,
    len: u64,
) -> Selection {
    match (range, if_range) {
        (None, _) => Selection::Whole,
        (Some(_), Some(value)) if !validators.match_if_range(value) => Selection::Whole,
        (Some(spec), _) => parse(spec, len),
    }
}

/// A Range field: `bytes=a-b`, `bytes=a-` or `bytes=-n` as a half-open
/// interval. Anything that is not one valid byte range is ignored: another
/// unit, bad syntax, `a > b`, or several ranges.
fn parse(spec: &str, len: u64) -> Selection {
    let Some((unit, set)) = spec.split_once('=') else {
        return Selection::Whole;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Selection::Whole;
    }
    let ranges: Vec<&str> = set
        .split(',')
        .map(|r| r.trim_matches([' ', '\t']))
        .filter(|r| !r.is_empty())
        .collect();
    let [range] = ranges[..] else {
        return Selection::Whole;
    };
    let Some((first, last)) = range.split_once('-') else {
        return Selection::Whole;
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            None => Selection::Whole,
            Some(0) => Selection::Unsatisfiable,
            // Only a suffix range fits an empty file, and 206 cannot
            // describe zero bytes.
            Some(_) if len == 0 => Selection::Whole,
            Some(n) => Selection::Part {
                start: len - n.min(len),
                end: len,
            },
        },
        (first, last) => {
            let Some(start) = number(first) else {
                return Selection::Whole;
            };
            let end = match last {
                "" => len,
                last => match number(last) {
                    Some(last) if last >= start => last.saturating_add(1).min(len),
                    _ => return Selection::Whole,
                },
            };
            if start >= len {
                Selection::Unsatisfiable
            } else {
                Selection::Part { start, end }
            }
        }
    }
}

/// A run of ASCII digits; a value past `u64::MAX` stays valid and
/// saturates, since it only says "beyond the end".
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> Selection {
        Selection::Part { start, end }
    }

    #[test]
    fn one_valid_range_is_a_part() {
        assert_eq!(parse("bytes=0-99", 1000), part(0, 100));
        assert_eq!(parse("bytes=900-", 1000), part(900, 1000));
        assert_eq!(parse("bytes=-100", 1000), part(900, 1000));
        assert_eq!(parse("bytes=-5000", 1000), part(0, 1000));
        assert_eq!(parse("bytes=990-5000", 1000), part(990, 1000));
        assert_eq!(parse("bytes=5-5", 1000), part(5, 6));
        assert_eq!(parse("BYTES=0-0", 1000), part(0, 1));
        assert_eq!(parse("bytes= 0-1 ,", 1000), part(0, 2));
        assert_eq!(
            parse("bytes=0-99999999999999999999999", 1000),
            part(0, 1000)
        );
    }

    #[test]
    fn invalid_or_multiple_ranges_are_ignored() {
        for spec in [
            "bytes=5-2",
            "items=0-1",
            "bytes 0-1",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1--2",
            "bytes=0-1,4-5",
            "bytes=0-1,,999999-",
            " bytes=0-1",
            "garbage",
            "",
        ] {
            assert_eq!(parse(spec, 1000), Selection::Whole, "{spec:?}");
        }
        assert_eq!(parse("bytes=-1", 0), Selection::Whole);
    }

    #[test]
    fn valid_ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(parse("bytes=1000-", 1000), Selection::Unsatisfiable);
        assert_eq!(parse("bytes=999999-", 1000), Selection::Unsatisfiable);
        assert_eq!(
            parse("bytes=99999999999999999999999-", 1000),
            Selection::Unsatisfiable
        );
        assert_eq!(parse("bytes=-0", 1000), Selection::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Selection::Unsatisfiable);
    }

    #[test]
    fn if_range_must_name_this_version() {
        let v = Validators {
            etag: "\"1-2-3.4\"".to_owned(),
            modified: 1_790_000_000,
        };
        let date = v.last_modified();
        assert_eq!(date, "Mon, 21 Sep 2026 14:13:20 GMT");
        let range = Some("bytes=0-9");
        assert_eq!(select(range, None, &v, 100), part(0, 10));
        assert_eq!(select(range, Some("\"1-2-3.4\""), &v, 100), part(0, 10));
        assert_eq!(select(range, Some(&date), &v, 100), part(0, 10));
        for stale in [
            "\"1-2-3.5\"",
            "W/\"1-2-3.4\"",
            "Mon, 21 Sep 2026 14:13:21 GMT",
            "yesterday",
        ] {
            assert_eq!(select(range, Some(stale), &v, 100), Selection::Whole);
        }
        assert_eq!(select(None, Some("\"1-2-3.4\""), &v, 100), Selection::Whole);
    }
}
