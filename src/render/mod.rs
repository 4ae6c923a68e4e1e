//! Turns hashed releases into the site's text files: feeds, the manifest and
//! the landing page. Pure functions of their input: no clock, no I/O but
//! reading templates.

pub mod feed;
pub mod page;

use chrono::{DateTime, Utc};
use url::Url;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{MAX_TEXT_FILE, Name, Release, ReleaseInfo, Sha256};
use crate::sign::PublicKey;
use crate::sums;

pub const FEED: &str = "feed.xml";
pub const MANIFEST: &str = "SHA256SUMS";
pub const MANIFEST_SIG: &str = "SHA256SUMS.minisig";
pub const PUBLIC_KEY: &str = "vmcast.pub";
pub const NEXT_PUBLIC_KEY: &str = "vmcast.next.pub";

/// Everything the renderers read.
pub struct Site<'a> {
    pub config: &'a Config,
    /// In publishing order.
    pub releases: &'a [Release],
    pub public_key: &'a PublicKey,
    /// The key a coming rotation moves to, if announced.
    pub next_key: Option<&'a PublicKey>,
    pub build_time: DateTime<Utc>,
    /// The build's sequence number (see [`crate::trust`]).
    pub sequence: u64,
    /// When consumers must stop trusting this build.
    pub expires: Option<DateTime<Utc>>,
}

/// A rendered feed.
pub struct Feed {
    /// Relative to the site: `feed.xml` or `feeds/<appliance>.xml`.
    pub path: String,
    /// The one appliance it covers, if not all.
    pub appliance: Option<Name>,
    pub xml: Vec<u8>,
}

/// The rendered text files of a site, before signing.
pub struct Rendered {
    pub feeds: Vec<Feed>,
    pub manifest: String,
    pub page: String,
}

pub fn generator() -> String {
    format!("vmcast-gen {}", env!("CARGO_PKG_VERSION"))
}

/// Where a release is shown on the landing page.
pub fn release_link(config: &Config, info: &ReleaseInfo) -> Url {
    let mut url = config.base_url.clone();
    url.set_fragment(Some(&info.anchor()));
    url
}

pub fn render(site: &Site) -> Result<Rendered> {
    let mut appliances: Vec<&Name> = site.releases.iter().map(|r| &r.info.appliance).collect();
    appliances.sort();
    appliances.dedup();

    let mut feeds = vec![Feed {
        path: FEED.to_owned(),
        appliance: None,
        xml: feed::render(site, FEED, None),
    }];
    if appliances.len() > 1 {
        for name in appliances {
            let path = format!("feeds/{name}.xml");
            feeds.push(Feed {
                xml: feed::render(site, &path, Some(name)),
                path,
                appliance: Some(name.clone()),
            });
        }
    }

    for feed in &feeds {
        check_size(&feed.path, feed.xml.len())?;
    }
    let feed_digests: Vec<_> = feeds
        .iter()
        .map(|f| (f.path.as_str(), Sha256::of(&f.xml)))
        .collect();
    let images = site
        .releases
        .iter()
        .flat_map(|r| &r.images)
        .map(|i| (i.source.site_path.as_str(), i.digest.sha256));
    let manifest = sums::manifest(images.chain(feed_digests));
    check_size(MANIFEST, manifest.len())?;
    let page = page::render(site, &feeds)?;
    Ok(Rendered {
        feeds,
        manifest,
        page,
    })
}

/// Refuses a text file `verify` would refuse to read.
fn check_size(path: &str, len: usize) -> Result<()> {
    if len as u64 > MAX_TEXT_FILE {
        return Err(Error::other(format_args!(
            "{path} would be {len} bytes, over the limit of {MAX_TEXT_FILE} bytes ({}) for a \
             site's text files: `verify` refuses it; shorten the release notes or split the site",
            page::human_size(MAX_TEXT_FILE)
        )));
    }
    Ok(())
}
