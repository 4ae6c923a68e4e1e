//! `vmcast-gen build`: the options, and the summary it prints.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::Args;
use vmcast_gen::config::Overrides;
use vmcast_gen::units::human_size;
use vmcast_gen::{BuildOptions, Error, Result};

use super::progress::{Bar, Show};
use super::prompt;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The site configuration file (default: vmcast.toml here or in the nearest directory above).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output directory (default: the config's output_dir, else `public` beside the config).
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Secret key file, or a pkcs11: URI of a key on a token (overrides VMCAST_SECRET_KEY and
    /// the config's secret_key).
    #[arg(long, value_name = "FILE|URI")]
    pub secret_key: Option<PathBuf>,
    /// Threads for hashing, and for reading notes, rendering and signing (default: one per core).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
    /// Report hashing progress even when stderr is not a terminal (a line every few seconds).
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,
    /// Hash every image; neither read nor write the hash cache.
    #[arg(long, conflicts_with = "verify_cache")]
    pub no_cache: bool,
    /// Hash every image and fail, listing them, if any cached digest was wrong.
    #[arg(long)]
    pub verify_cache: bool,
    /// Where the hash cache lives (also VMCAST_CACHE_DIR; default: the config's cache_dir, else
    /// $XDG_CACHE_HOME/vmcast-gen or ~/.cache/vmcast-gen).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print nothing on success.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also list every published image.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Build on this published site: an output directory, its http(s) URL, or s3://bucket/prefix
    /// (overrides the config's `previous`). Releases whose images are not here keep the
    /// published ones, unread; see the README's "Releases from a stateless CI runner".
    #[arg(long, value_name = "SOURCE")]
    pub previous: Option<String>,
    /// Build even when SOURCE_DATE_EPOCH gives a sequence below the site in the output directory
    /// (or not above the --previous site): consumers that keep state refuse the new site as a
    /// rollback until a newer build.
    #[arg(long)]
    pub allow_rollback: bool,
    /// Allow this image (file name or site path) to differ from the one the previous site
    /// publishes under the same name (repeatable). Published images are cached forever.
    #[arg(long, value_name = "NAME")]
    pub replace: Vec<String>,
    /// The S3-compatible endpoint for an s3:// --previous (also AWS_ENDPOINT_URL), as for publish.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Print the summary as JSON on stdout (for CI).
    #[arg(long, conflicts_with_all = ["quiet", "verbose"])]
    pub json: bool,
}

/// Build options from the environment and the given settings.
pub fn build_options(
    config: PathBuf,
    overrides: Overrides,
    cache_dir: Option<PathBuf>,
) -> Result<BuildOptions> {
    Ok(BuildOptions {
        config,
        overrides,
        secret_key_text: super::env("VMCAST_SECRET_KEY"),
        openpgp_key_text: openpgp_key_text(),
        build_time: source_date_epoch()?,
        threads: None,
        cache_dir: cache_dir.or_else(|| super::env_path("VMCAST_CACHE_DIR")),
        default_cache_dir: user_cache_dir(),
        no_cache: false,
        verify_cache: false,
        preview: false,
        previous: None,
        allow_rollback: false,
        replace: Vec::new(),
        endpoint: None,
        pkcs11_module: pkcs11_module(),
    })
}

/// `VMCAST_PKCS11_MODULE`: the PKCS#11 module of a token whose URI names
/// none.
pub fn pkcs11_module() -> Option<PathBuf> {
    super::env_path("VMCAST_PKCS11_MODULE")
}

/// `VMCAST_OPENPGP_KEY`: the OpenPGP secret key's text, over the config's
/// `[catalogs] openpgp_key`.
pub fn openpgp_key_text() -> Option<String> {
    super::env("VMCAST_OPENPGP_KEY")
}

pub fn run(args: BuildArgs) -> Result<bool> {
    let started = Instant::now();
    let options = BuildOptions {
        threads: args.jobs.map(|n| n.get()),
        no_cache: args.no_cache,
        verify_cache: args.verify_cache,
        previous: args.previous,
        allow_rollback: args.allow_rollback,
        replace: args.replace,
        endpoint: args.endpoint_url,
        ..build_options(
            super::site_config(args.config)?,
            Overrides {
                output_dir: args.out,
                secret_key: args.secret_key,
                base_url: None,
            },
            args.cache_dir,
        )?
    };
    let bar = Bar::new(if args.quiet {
        Show::Nothing
    } else if std::io::stderr().is_terminal() {
        Show::Bar
    } else if args.progress {
        Show::Lines
    } else {
        Show::Nothing
    });
    let report = super::build_site(&options, &bar, &mut prompt::unlock_key)?;
    if args.quiet {
        return Ok(true);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if args.json {
        print_json(&report, elapsed);
    } else {
        print_summary(&report, elapsed, args.verbose);
    }
    Ok(true)
}

/// The report for machines: `--json`.
fn print_json(report: &vmcast_gen::Report, elapsed: f64) {
    let h = &report.hash;
    let summary = serde_json::json!({
        "output_dir": report.output_dir,
        "appliances": report.appliances,
        "releases": report.releases,
        "images": report.published,
        "feeds": report.feeds,
        "kept_feeds": report.kept_feeds,
        "archives": report.archives,
        "key_id": report.key_id,
        "sequence": report.sequence,
        "openpgp_fingerprint": report.openpgp_fingerprint,
        "image_bytes": report.image_bytes,
        "cloud_images": report.cloud_images,
        "hashed": { "files": h.hashed_files, "bytes": h.hashed_bytes, "seconds": h.hash_time.as_secs_f64() },
        "from_cache": { "files": h.cached_files, "bytes": h.cached_bytes },
        "from_sidecars": { "files": h.sidecar_files, "bytes": h.sidecar_bytes },
        "plans_remembered": report.plans_remembered,
        "warnings": report.warnings,
        "previous": report.previous,
        "catalogs": report.catalogs,
        "seconds": elapsed,
    });
    outln!(
        "{}",
        serde_json::to_string_pretty(&summary).expect("the summary serializes")
    );
}

/// The report for people: what was built, hashed, signed and cataloged.
fn print_summary(report: &vmcast_gen::Report, elapsed: f64, verbose: bool) {
    let h = &report.hash;
    let secs = h.hash_time.as_secs_f64();
    let rate = if secs > 0.0 {
        format!("{:.2} GB/s", h.hashed_bytes as f64 / secs / 1e9)
    } else {
        "-".into()
    };
    let virtual_bytes: u64 = report.published.iter().filter_map(|i| i.virtual_size).sum();
    outln!(
        "Built {} in {:.2}s: {} appliance(s), {} release(s), {} image(s), {} ({} of virtual disks){}",
        report.output_dir.display(),
        elapsed,
        report.appliances,
        report.releases,
        report.images,
        human_size(report.image_bytes),
        human_size(virtual_bytes),
        match report.cloud_images {
            0 => String::new(),
            n => format!(", {n} cloud image(s)"),
        }
    );
    outln!(
        "Hashed {} image(s), {} ({} bytes), in {secs:.2}s, {rate}; not read: {} image(s), {} from the cache, {} image(s), {} from sidecars",
        h.hashed_files,
        human_size(h.hashed_bytes),
        h.hashed_bytes,
        h.cached_files,
        human_size(h.cached_bytes),
        h.sidecar_files,
        human_size(h.sidecar_bytes),
    );
    if let Some(c) = &report.previous {
        outln!(
            "Built on {} (sequence {}): {} release(s), {} image(s), {} taken from it unread",
            c.source,
            c.sequence,
            c.releases,
            c.images,
            human_size(c.bytes)
        );
    }
    let signed: Vec<&str> = report
        .feeds
        .iter()
        .filter(|f| !report.kept_feeds.contains(f))
        .map(String::as_str)
        .collect();
    outln!(
        "Signed {}{} and SHA256SUMS with key {}, sequence {}",
        signed.join(", "),
        match report.archives {
            0 => String::new(),
            n => format!(", {n} archive(s)"),
        },
        report.key_id,
        report.sequence
    );
    if !report.kept_feeds.is_empty() {
        outln!(
            "Kept {} as published: unchanged since an earlier build",
            report.kept_feeds.join(", ")
        );
    }
    if let Some(fingerprint) = &report.openpgp_fingerprint {
        outln!("Clearsigned SHA256SUMS.asc with OpenPGP key {fingerprint}");
    }
    for written in &report.catalogs {
        outln!(
            "Catalog {}: {}{}",
            written.catalog,
            written.files.join(", "),
            match written.skipped.len() {
                0 => String::new(),
                n => format!("; skipped {n} image(s):"),
            }
        );
        for skipped in &written.skipped {
            outln!("  {skipped}");
        }
    }
    if verbose {
        for image in &report.published {
            outln!(
                "  {}  {}  {}{}  sha256 {}",
                image.path,
                image.format,
                human_size(image.length),
                image
                    .virtual_size
                    .map_or(String::new(), |v| format!(", virtual {}", human_size(v))),
                image.sha256
            );
        }
    }
}

/// `$XDG_CACHE_HOME/vmcast-gen`, else `~/.cache/vmcast-gen`.
fn user_cache_dir() -> Option<std::path::PathBuf> {
    let base = super::env_path("XDG_CACHE_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("vmcast-gen"))
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for "now".
fn source_date_epoch() -> Result<Option<DateTime<Utc>>> {
    let Some(value) = super::env("SOURCE_DATE_EPOCH") else {
        return Ok(None);
    };
    value
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(Some)
        .ok_or_else(|| {
            Error::other(format_args!(
                "SOURCE_DATE_EPOCH=`{value}` is not a number of seconds since 1970-01-01"
            ))
        })
}
