//! `vmcast-gen verify`: the options, and the report for people or JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use vmcast_gen::{Error, Result};

/// The publisher's public key, pinned out of band: `verify` and `pull`
/// take it as a file or as its base64 line, one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PinnedKey {
    /// The publisher's public key file, pinned out of band (minisign format, as vmcast.pub).
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    /// The publisher's public key as its base64 line (as `minisign -P` takes it).
    #[arg(long, value_name = "KEY")]
    pub pubkey_b64: Option<String>,
}

impl PinnedKey {
    pub fn load(&self) -> Result<vmcast_gen::sign::PublicKey> {
        match (&self.pubkey, &self.pubkey_b64) {
            (Some(path), _) => vmcast_gen::sign::PublicKey::from_file(
                path,
                &vmcast_gen::fsutil::read_to_string(path)?,
            ),
            (None, Some(b64)) => {
                vmcast_gen::sign::PublicKey::from_base64(b64).map_err(|reason| Error::Usage {
                    option: "--pubkey-b64",
                    value: b64.clone(),
                    reason,
                })
            }
            (None, None) => unreachable!("clap requires one of --pubkey and --pubkey-b64"),
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A local output directory (or its feed.xml), or the http(s) URL of the site or of a feed.
    pub source: String,
    #[command(flatten)]
    pub key: PinnedKey,
    /// A state file remembering the highest sequence seen and announced keys (rollback protection, key rotation).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Also download or read every image and check its length and SHA-256 (and its SHA-512,
    /// where the feed gives one).
    #[arg(long)]
    pub images: bool,
    /// The archived releases' SBOMs and provenance too, and with --images or --mirrors their
    /// images (their archives' signatures and listings are always checked).
    #[arg(long)]
    pub all: bool,
    /// Also download every image from every mirror the feed lists, and report, per mirror, each
    /// image that is missing, short or different.
    #[arg(long)]
    pub mirrors: bool,
    /// With --mirrors: only the mirrors under this base URL (repeatable).
    #[arg(long, value_name = "URL", requires = "mirrors")]
    pub mirror: Vec<String>,
    /// The site (its base_url) the build must be signed for; with --state, pins the site the state file tracks.
    #[arg(long, value_name = "URL", value_parser = parse_site)]
    pub site: Option<url::Url>,
    /// The deadline of each request for the feed, manifest, keys and signatures, and of any response's headers.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// The lowest rate an image may download at (measured over 30 s, or --timeout if shorter); 0 for none.
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = 10240)]
    pub min_rate: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs) -> Result<bool> {
    let pinned = args.key.load()?;
    if let Some(error) = vmcast_gen::config::not_a_built_site(std::path::Path::new(&args.source)) {
        return Err(error);
    }
    let report = vmcast_gen::site::verify(&vmcast_gen::site::VerifyOptions {
        source: args.source,
        scope: vmcast_gen::site::Scope::Site,
        pinned,
        also_trusted: Vec::new(),
        state: args.state,
        images: args.images,
        all: args.all,
        supply: true,
        mirrors: args.mirrors,
        mirror_sample: args.mirror,
        site: args.site,
        timeout: Duration::from_secs(args.timeout),
        min_rate: args.min_rate,
        now: chrono::Utc::now(),
    })?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        outln!("verify {}", report.source);
        for check in &report.checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            outln!("  {mark} {:<9} {}", check.check, check.detail);
        }
        if report.ok {
            outln!(
                "verified: {} release(s), {} image(s){}, key {}, sequence {}",
                report.releases,
                report.images,
                if report.images_read > 0 {
                    format!(", {} image bytes read", report.images_read)
                } else {
                    String::new()
                },
                report.key_id.as_deref().unwrap_or("-"),
                report.sequence.map_or("-".into(), |s| s.to_string())
            );
        } else {
            let failed = report.failures().count();
            outln!("NOT verified: {failed} check(s) failed");
        }
    }
    if !report.ok {
        for failure in report.failures() {
            eprintln!("error: {}", failure.detail);
        }
    }
    Ok(report.ok)
}

/// A site's base URL as `build` signs it: http(s), ending in `/`.
pub fn parse_site(s: &str) -> std::result::Result<url::Url, String> {
    let mut url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the site's URL must use http or https".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}
