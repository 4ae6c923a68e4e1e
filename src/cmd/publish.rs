//! `vmcast-gen publish`: the options, the plan as it runs, and the tally.

use std::path::PathBuf;

use clap::Args;
use vmcast_gen::config::Overrides;
use vmcast_gen::{Error, Result};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Where to: s3://bucket/prefix, one or more (mirrors). Images reach every destination before
    /// any feed goes anywhere.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// The built site (default: the config's output_dir).
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The site configuration file (default: vmcast.toml here or in the nearest directory above).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An S3-compatible endpoint, e.g. http://127.0.0.1:9000 (also AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Print the plan in order; upload nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After the new feed is up, delete objects under the prefix that the site no longer has
    /// (never an image its SHA256SUMS lists).
    #[arg(long)]
    pub prune: bool,
    /// Cache-Control of what changes with each build: feeds, manifest, their signatures, keys,
    /// pages and catalogs.
    #[arg(long, value_name = "VALUE", default_value = vmcast_gen::media::CACHE_SHORT)]
    pub cache_control: String,
    /// Cache-Control of what never changes under its name: images, boxes, SBOMs and provenance,
    /// archives and their signatures.
    #[arg(long, value_name = "VALUE", default_value = vmcast_gen::media::CACHE_IMMUTABLE)]
    pub image_cache_control: String,
    /// A canned ACL for every object, e.g. public-read (for buckets that use ACLs, not a policy).
    #[arg(long, value_name = "ACL")]
    pub acl: Option<String>,
    /// Content-Type for an extension, e.g. qcow2=application/x-qemu-disk (repeatable).
    #[arg(long, value_name = "EXT=TYPE")]
    pub content_type: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PublishArgs) -> Result<bool> {
    let site = match args.out {
        Some(dir) => dir,
        None => {
            vmcast_gen::config::load(&super::site_config(args.config)?, &Overrides::default())?
                .output_dir
        }
    };
    let mut content_types = std::collections::BTreeMap::new();
    for pair in &args.content_type {
        let (ext, kind) = pair.split_once('=').ok_or_else(|| Error::Usage {
            option: "--content-type",
            value: pair.clone(),
            reason: "expected EXT=TYPE".into(),
        })?;
        content_types.insert(
            ext.trim_start_matches('.').to_ascii_lowercase(),
            kind.to_owned(),
        );
    }
    let options = vmcast_gen::publish::PublishOptions {
        site,
        targets: args.targets.clone(),
        endpoint: args.endpoint_url,
        dry_run: args.dry_run,
        prune: args.prune,
        short_cache: args.cache_control,
        image_cache: args.image_cache_control,
        content_types,
        acl: args.acl,
    };
    let json = args.json;
    let dry = args.dry_run;
    let several = args.targets.len() > 1;
    let report = vmcast_gen::publish::publish(&options, |step| {
        if !json {
            let verb = match (step.action, dry) {
                ("upload", true) => "would upload",
                ("delete", true) => "would delete",
                ("upload", false) => "upload",
                ("delete", false) => "delete",
                _ => "unchanged",
            };
            match several {
                true => outln!(
                    "{verb:>12}  {}  {}  {}",
                    step.target,
                    step.path,
                    step.content_type
                ),
                false => outln!("{verb:>12}  {}  {}", step.path, step.content_type),
            }
        }
    })?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        outln!(
            "{} uploaded, {} unchanged, {} deleted{}",
            report.uploaded,
            report.skipped,
            report.deleted,
            match (dry, report.without_credentials) {
                (true, true) => {
                    " (dry run without AWS credentials: the bucket was not looked at, so every \
                     file is listed as an upload)"
                }
                (true, false) => " (dry run: nothing changed)",
                (false, _) => "",
            }
        );
    }
    Ok(true)
}
