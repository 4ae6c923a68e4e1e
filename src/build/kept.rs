//! The appliances' feeds a build may keep as the site it follows publishes
//! them (see [`crate::trust`]): the render keeps each one it renders, with
//! that feed's own stamp, to the same bytes, and signs the others anew.

use std::collections::BTreeMap;
use std::path::Path;

use super::clock::{self, Clock, Prior};
use crate::config::Config;
use crate::fsutil;
use crate::media;
use crate::model::{MAX_TEXT_FILE, Name};
use crate::previous::Previous;
use crate::sign::{PublicKey, Signature};
use crate::trust::{BuildStamp, Published};

/// What a build may keep of the appliances' feeds of the site it follows
/// (`prior`): the site it builds on (`previous`, verified whole), or the
/// one it replaces (each feed read from the output directory). Only a feed
/// signed by `key`, this build's, for this site, with no expiry and a
/// sequence not above this build's. None when this build expires or
/// announces a next key: it signs every feed anew, to push the expiry
/// forward or to announce the key in the build that signs it.
pub(super) fn keepable(
    config: &Config,
    prior: Option<&Prior>,
    previous: Option<&Previous>,
    appliances: &[&Name],
    key: &PublicKey,
    clock: &Clock,
    announces_next_key: bool,
) -> BTreeMap<String, Published> {
    if clock.expires.is_some() || announces_next_key {
        return BTreeMap::new();
    }
    let published: Vec<Published> = match (prior, previous) {
        (Some(Prior::BuiltOn { .. }), Some(previous)) => previous.feeds.values().cloned().collect(),
        (Some(Prior::Replaced { output, .. }), _) => appliances
            .iter()
            .filter_map(|name| replaced(output, &media::appliance_feed(name.as_str())))
            .collect(),
        _ => Vec::new(),
    };
    published
        .into_iter()
        .filter(|feed| {
            let stamp = &feed.stamp;
            stamp.may_stand_in(config.base_url.as_str(), clock.sequence, false)
                && Signature::from_file(Path::new(&stamp.file), &feed.signature)
                    .is_ok_and(|sig| sig.verify(key, &feed.data).is_ok())
        })
        .map(|feed| (feed.stamp.file.clone(), feed))
        .collect()
}

/// The feed `name` of the site in the output directory, with its
/// signature, read as `verify` reads them (through one descriptor, no
/// link, bounded), when its signature names that file. The caller checks
/// the signature.
fn replaced(output: &Path, name: &str) -> Option<Published> {
    let (sig, signature) = clock::replaced_signature(output, name)?;
    let stamp = BuildStamp::parse(&sig.trusted_comment).ok()?;
    let (data, _) = fsutil::read_regular(&output.join(name), false, MAX_TEXT_FILE).ok()?;
    (stamp.file == name).then_some(Published {
        data,
        signature,
        stamp,
    })
}
