//! What every signature vouches for beyond the bytes it signs: the build's
//! time, sequence number and expiry, the file's name and the site's URL,
//! carried in minisign's trusted comment as tab-separated `key:value` pairs:
//!
//! `timestamp:1790000000<TAB>file:feed.xml<TAB>base_url:https://…/<TAB>sequence:1790000000<TAB>expires:1792592000`
//!
//! The sequence number is the build time in Unix seconds (`SOURCE_DATE_EPOCH`
//! when set): every later build, on any machine or fresh CI checkout, gets a
//! higher one without any state to carry between runs. A build whose clock
//! is behind the site it follows takes one above that site's instead
//! (`build::clock`).
//!
//! A file that never changes once published (an archive: `media::is_immutable`)
//! is signed with a [`FileStamp`] instead, which names the file and the
//! site but no build, so its signature too is the same in every build:
//!
//! `file:archive/3.xml<TAB>base_url:https://…/`
//!
//! The build's signed `SHA256SUMS` lists its digest, which binds it to the
//! build.
//!
//! An appliance's feed (`feeds/<appliance>.xml`) that did not change keeps
//! the stamp of the build it last changed in: a build that would render it,
//! with that stamp, byte for byte as the site it follows publishes it keeps
//! that feed and its signature as they are, so that the appliance's
//! subscribers are not sent it again. Its sequence is then below the
//! build's, never above it, and the build's `SHA256SUMS` lists its digest.
//! Only on a site whose builds neither expire (`expires_after`) nor announce
//! a next key: each of those builds signs every feed anew, to push its
//! expiry forward or to announce the key in the build it is signed in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// The signed metadata of one file of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStamp {
    pub timestamp: i64,
    pub file: String,
    pub base_url: String,
    pub sequence: u64,
    pub expires: Option<i64>,
}

impl BuildStamp {
    /// Whether the file this stamp signs, an appliance's feed signed in an
    /// earlier build of the site (or this one), may stand unchanged in the
    /// build of `sequence` for `base_url`, which expires or not
    /// (`build_expires`): the feed's site, no expiry on either, and never
    /// from a later build (the module's rule). `build` keeps a feed and
    /// `verify` accepts one by this one test, so that a build never keeps
    /// a feed that `verify` would refuse.
    pub fn may_stand_in(&self, base_url: &str, sequence: u64, build_expires: bool) -> bool {
        crate::media::is_appliance_feed(&self.file)
            && self.base_url == base_url
            && self.expires.is_none()
            && !build_expires
            && self.sequence <= sequence
    }

    pub fn to_comment(&self) -> String {
        let mut s = format!(
            "timestamp:{}\tfile:{}\tbase_url:{}\tsequence:{}",
            self.timestamp, self.file, self.base_url, self.sequence
        );
        if let Some(expires) = self.expires {
            s.push_str(&format!("\texpires:{expires}"));
        }
        s
    }

    /// Reads a trusted comment; `Err` says what is missing or malformed.
    pub fn parse(comment: &str) -> Result<Self, String> {
        let pairs: BTreeMap<&str, &str> = comment
            .split('\t')
            .filter_map(|pair| pair.split_once(':'))
            .collect();
        let get = |key: &str| {
            pairs.get(key).copied().ok_or_else(|| {
                format!("trusted comment has no `{key}:` (is this a vmcast-gen signature?)")
            })
        };
        let number = |key: &str| -> Result<i64, String> {
            get(key)?
                .parse()
                .map_err(|_| format!("trusted comment's `{key}:` is not a number"))
        };
        Ok(BuildStamp {
            timestamp: number("timestamp")?,
            file: get("file")?.to_owned(),
            base_url: get("base_url")?.to_owned(),
            sequence: u64::try_from(number("sequence")?)
                .map_err(|_| "trusted comment's `sequence:` is negative".to_owned())?,
            expires: match pairs.get("expires") {
                Some(_) => Some(number("expires")?),
                None => None,
            },
        })
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires.and_then(|s| DateTime::from_timestamp(s, 0))
    }
}

/// A signed file as a site publishes it, its signature verified: what a
/// build keeps as it is when it would render the same bytes (an
/// appliance's feed that did not change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub data: Vec<u8>,
    /// Its signature file, as published.
    pub signature: String,
    pub stamp: BuildStamp,
}

/// The signed metadata of a file that never changes: its name and site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub file: String,
    pub base_url: String,
}

impl FileStamp {
    pub fn to_comment(&self) -> String {
        format!("file:{}\tbase_url:{}", self.file, self.base_url)
    }
}

/// What a trusted comment says: one build's file, or a file of no build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stamp {
    Build(BuildStamp),
    File(FileStamp),
}

impl Stamp {
    /// Reads a trusted comment: a build stamp when it names a build (a
    /// `sequence:`), else a file stamp.
    pub fn parse(comment: &str) -> Result<Self, String> {
        if comment
            .split('\t')
            .any(|pair| pair.starts_with("sequence:"))
        {
            return BuildStamp::parse(comment).map(Stamp::Build);
        }
        let pairs: BTreeMap<&str, &str> = comment
            .split('\t')
            .filter_map(|pair| pair.split_once(':'))
            .collect();
        let get = |key: &str| {
            pairs.get(key).map(|v| (*v).to_owned()).ok_or_else(|| {
                format!("trusted comment has no `{key}:` (is this a vmcast-gen signature?)")
            })
        };
        Ok(Stamp::File(FileStamp {
            file: get("file")?,
            base_url: get("base_url")?,
        }))
    }

    pub fn file(&self) -> &str {
        match self {
            Stamp::Build(b) => &b.file,
            Stamp::File(f) => &f.file,
        }
    }

    pub fn base_url(&self) -> &str {
        match self {
            Stamp::Build(b) => &b.base_url,
            Stamp::File(f) => &f.base_url,
        }
    }
}

/// Parses a duration such as `30d`, `12h`, `2w` or `90m`.
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{s}`: expected a number and a unit, e.g. `30d`"))?;
    let d = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        _ => {
            return Err(format!(
                "invalid duration `{s}`: the unit must be s, m, h, d or w"
            ));
        }
    };
    match d {
        Some(d) if n > 0 => Ok(d),
        _ => Err(format!(
            "invalid duration `{s}`: must be positive and not absurdly long"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one rule by which a build keeps an appliance's feed and `verify`
    /// accepts it, condition by condition.
    #[test]
    fn an_appliance_feed_stands_in_a_later_build_of_its_site_only() {
        let site = "https://d.example.com/a/";
        let feed = BuildStamp {
            timestamp: 100,
            file: "feeds/webapp.xml".into(),
            base_url: site.into(),
            sequence: 100,
            expires: None,
        };
        assert!(feed.may_stand_in(site, 100, false));
        assert!(feed.may_stand_in(site, 200, false));
        assert!(!feed.may_stand_in(site, 99, false), "from a later build");
        assert!(
            !feed.may_stand_in("https://e.example.com/", 200, false),
            "another site"
        );
        assert!(!feed.may_stand_in(site, 200, true), "the build expires");
        let expiring = BuildStamp {
            expires: Some(300),
            ..feed.clone()
        };
        assert!(!expiring.may_stand_in(site, 200, false), "the feed expires");
        for file in ["feed.xml", "SHA256SUMS", "archive/1.xml", "feeds/a/b.xml"] {
            let other = BuildStamp {
                file: file.into(),
                ..feed.clone()
            };
            assert!(!other.may_stand_in(site, 200, false), "{file}");
        }
    }

    #[test]
    fn stamps_round_trip() {
        let stamp = BuildStamp {
            timestamp: 1790000000,
            file: "feed.xml".into(),
            base_url: "https://d.example.com/a/".into(),
            sequence: 1790000000,
            expires: Some(1792592000),
        };
        let comment = stamp.to_comment();
        assert_eq!(
            comment,
            "timestamp:1790000000\tfile:feed.xml\tbase_url:https://d.example.com/a/\tsequence:1790000000\texpires:1792592000"
        );
        assert_eq!(BuildStamp::parse(&comment), Ok(stamp.clone()));
        assert_eq!(Stamp::parse(&comment), Ok(Stamp::Build(stamp)));
        assert!(BuildStamp::parse("timestamp:1\tfile:x").is_err());
        let file = FileStamp {
            file: "archive/1.xml".into(),
            base_url: "https://d.example.com/a/".into(),
        };
        assert_eq!(
            file.to_comment(),
            "file:archive/1.xml\tbase_url:https://d.example.com/a/"
        );
        assert_eq!(Stamp::parse(&file.to_comment()), Ok(Stamp::File(file)));
        assert!(Stamp::parse("file:archive/1.xml").is_err());
        assert!(Stamp::parse("file:x\tbase_url:y\tsequence:z").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30d"), Ok(chrono::Duration::days(30)));
        assert_eq!(parse_duration("12h"), Ok(chrono::Duration::hours(12)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
