//! When a build is, as everything it signs says: its time, and its
//! sequence number, which consumers that keep state want to rise from one
//! site to the next (see [`crate::trust`]).
//!
//! The site a build follows is the one it builds on (`--previous`), else
//! the one in the output directory it replaces, whose sequence is read from
//! its signed `feed.xml.minisig`. With `SOURCE_DATE_EPOCH` the sequence is
//! that time, and a site it would take backwards is refused (unless
//! `--allow-rollback`); without it, the sequence is the clock's, or one
//! above the followed site's when the clock is behind it.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::BuildOptions;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::media;
use crate::sign::{PublicKey, Signature};
use crate::trust::BuildStamp;
use crate::warning::Warning;

/// When this build is, as everything it signs says.
pub(super) struct Clock {
    pub(super) time: DateTime<Utc>,
    /// The build's sequence number.
    pub(super) sequence: u64,
    /// When consumers must stop trusting this build.
    pub(super) expires: Option<DateTime<Utc>>,
}

/// The site a build follows, and the sequence it was signed with.
pub(super) enum Prior<'a> {
    /// The site this build replaces in its output directory.
    Replaced { output: &'a Path, sequence: u64 },
    /// The site this build builds on and adds to (`--previous`): its
    /// sequence must be exceeded, not just reached.
    BuiltOn { source: &'a str, sequence: u64 },
}

impl<'a> Prior<'a> {
    /// The site a build follows: the one it builds on (`built_on`: its
    /// source and sequence), else the one it replaces when one of `keys`
    /// signed it. A preview follows none: its throwaway key signed nothing
    /// anyone keeps state of.
    pub(super) fn of(
        config: &'a Config,
        options: &BuildOptions,
        built_on: Option<(&'a str, u64)>,
        keys: &[&PublicKey],
    ) -> Option<Self> {
        if let Some((source, sequence)) = built_on {
            return Some(Prior::BuiltOn { source, sequence });
        }
        if options.preview {
            return None;
        }
        replaced_sequence(config, keys).map(|sequence| Prior::Replaced {
            output: &config.output_dir,
            sequence,
        })
    }
}

impl Clock {
    /// The build time (`SOURCE_DATE_EPOCH`, else now), and the sequence it
    /// gives when no site is followed.
    pub(super) fn of(options: &BuildOptions, config: &Config) -> Result<Self> {
        let time = options.build_time.unwrap_or_else(Utc::now);
        let sequence = u64::try_from(time.timestamp())
            .map_err(|_| Error::other("the build time is before 1970; check SOURCE_DATE_EPOCH"))?;
        Ok(Clock {
            time,
            sequence,
            expires: config.expires_after.map(|d| time + d),
        })
    }

    /// Makes the sequence follow `prior`'s. Without `SOURCE_DATE_EPOCH` it
    /// is the larger of the clock's and one above `prior`'s, with a warning
    /// when that is not the clock's. One that `SOURCE_DATE_EPOCH` fixed
    /// below `prior`'s (built on it: not above) is refused, or with
    /// `allow_rollback` kept with a warning.
    pub(super) fn follow(
        &mut self,
        prior: &Prior,
        options: &BuildOptions,
        warnings: &mut Vec<Warning>,
    ) -> Result<()> {
        let (subject, sequence, theirs, short) = match *prior {
            Prior::Replaced { output, sequence } => (
                output.display().to_string(),
                sequence,
                format!("the sequence {sequence} of the site it replaces"),
                "below",
            ),
            Prior::BuiltOn { source, sequence } => (
                format!("--previous {source}"),
                sequence,
                format!("the previous site's sequence {sequence}"),
                "not above",
            ),
        };
        let ours = self.sequence;
        if options.build_time.is_none() {
            if ours <= sequence {
                self.sequence = sequence + 1;
                warnings.push(Warning {
                    path: None,
                    message: format!(
                        "{subject}: the clock ({ours}) is not past {theirs}; this build takes \
                         sequence {}, one above it, so that consumers that keep state accept it",
                        self.sequence
                    ),
                });
            }
            return Ok(());
        }
        // The same SOURCE_DATE_EPOCH again rebuilds the same site.
        let behind = match prior {
            Prior::Replaced { .. } => ours < sequence,
            Prior::BuiltOn { .. } => ours <= sequence,
        };
        if !behind {
            return Ok(());
        }
        let rollback = format!(
            "{subject}: this build's sequence {ours} (SOURCE_DATE_EPOCH) is {short} {theirs}; \
             consumers that keep state"
        );
        if options.allow_rollback {
            warnings.push(Warning {
                path: None,
                message: format!(
                    "{rollback} refuse it as a rollback until a newer build (built anyway: \
                     --allow-rollback)"
                ),
            });
            return Ok(());
        }
        Err(Error::other(format_args!(
            "{rollback} would refuse it as a rollback. Set SOURCE_DATE_EPOCH above {sequence} or \
             unset it, or pass --allow-rollback to build it anyway"
        )))
    }
}

/// The sequence of the site in the output directory, from its signed
/// `feed.xml.minisig` when one of `keys` signed it. A site none of them
/// signed, or none at all, is no site to follow.
fn replaced_sequence(config: &Config, keys: &[&PublicKey]) -> Option<u64> {
    let (signature, _) = replaced_signature(&config.output_dir, media::FEED)?;
    keys.iter()
        .any(|key| signature.verify_comment(key).is_ok())
        .then(|| BuildStamp::parse(&signature.trusted_comment).ok())?
        .map(|stamp| stamp.sequence)
}

/// The signature of `name` in the site in the output directory, and its
/// file, read as `verify` reads a signature: through one descriptor, no
/// link, bounded. Not checked: the caller checks it with its keys.
pub(super) fn replaced_signature(output: &Path, name: &str) -> Option<(Signature, String)> {
    let path = output.join(format!("{name}.minisig"));
    let (bytes, _) = fsutil::read_regular(&path, false, fsutil::MAX_TEXT_FILE).ok()?;
    let text = fsutil::text(&path, bytes).ok()?;
    Some((Signature::from_file(&path, &text).ok()?, text))
}
