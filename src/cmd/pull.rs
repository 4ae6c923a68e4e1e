//! `vmcast-gen pull`: keep a host's copy of an appliance current.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use vmcast_gen::Warning;
use vmcast_gen::model::ImageFormat;
use vmcast_gen::pull::{Delta, Outcome, Policy, Progress, PullOptions};
use vmcast_gen::units::human_size;
use vmcast_gen::{Error, Result};

/// Exit status when a new image was put in place.
pub const UPDATED: u8 = 0;
/// Exit status when the allowed release was already in place.
pub const CURRENT: u8 = 3;
/// Exit status when what was downloaded contradicts what was signed or
/// required (the feed does not verify, an image's bytes are not the signed
/// ones, no provenance under --require-provenance): someone should look.
pub const REFUSED: u8 = 10;
/// Exit status when the site or the image could not be downloaded in full
/// this time: the next run tries again, resuming the image.
pub const INTERRUPTED: u8 = 11;
/// Exit status when the image was put in place but --exec failed.
pub const EXEC_FAILED: u8 = 12;

/// The exit status of a failed `pull`: one of the above, else that of any
/// command's failure.
pub fn failure_status(err: &Error) -> u8 {
    match err {
        Error::Refused(_) => REFUSED,
        Error::Interrupted(_) => INTERRUPTED,
        Error::Hook(_) => EXEC_FAILED,
        Error::Warned { error, .. } => failure_status(error),
        _ => super::failure_status(err),
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The VMcast: the site's http(s) URL (or a feed's URL, or a local output directory).
    pub source: String,
    #[command(flatten)]
    pub key: super::verify::PinnedKey,
    /// The appliance to keep current.
    #[arg(long)]
    pub appliance: String,
    /// Formats in order of preference, e.g. qcow2,vmdk (default: each release's primary image).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub format: Vec<String>,
    /// The release channel to follow.
    #[arg(long, default_value = "stable")]
    pub channel: String,
    /// Which releases to accept: latest (the newest of the channel), critical-only (only a newer
    /// release marked critical), same-major (the newest with the installed major version); the
    /// first run takes the newest.
    #[arg(
        long,
        value_enum,
        default_value = "latest",
        hide_possible_values = true
    )]
    pub policy: PolicyArg,
    /// Where images go; the partial download and the records live here too.
    #[arg(long, value_name = "DIR")]
    pub dest: PathBuf,
    /// verify's state file, for rollback protection (default: DIR/.vmcast-state.json).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// The site (its base_url) the build must be signed for, as for verify; the state file also
    /// pins the first site it saw.
    #[arg(long, value_name = "URL", value_parser = super::verify::parse_site)]
    pub site: Option<url::Url>,
    /// Run this through `sh -c` after an update, with VMCAST_IMAGE, VMCAST_VERSION,
    /// VMCAST_SHA256, VMCAST_FORMAT, VMCAST_APPLIANCE and VMCAST_URL set. Never after a failure.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Keep the N most recent images this command placed; remove older ones it placed.
    #[arg(long, value_name = "N")]
    pub keep: Option<std::num::NonZeroUsize>,
    /// The host's architecture as feeds name it (default: this machine's).
    #[arg(long)]
    pub arch: Option<String>,
    /// A file that may hold blocks of the new image (an older image), besides the image pull
    /// placed last: only the blocks that differ are downloaded, where the feed has a zsync
    /// control file for the image. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub seed: Vec<PathBuf>,
    /// Refuse an image the feed links no provenance for (an in-toto attestation whose subject
    /// verify checks against the image's SHA-256); the newest allowed release must have one.
    #[arg(long)]
    pub require_provenance: bool,
    /// The deadline of each request for the feed, manifest, keys and signatures, and of any response's headers.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// The lowest rate the image may download at (measured over 30 s, or --timeout if shorter); 0 for none.
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = 10240)]
    pub min_rate: u64,
    /// Print what happened as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--policy`, described in its own help: help on the values would give
/// `pull --help` another layout than the other commands'.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    Latest,
    CriticalOnly,
    SameMajor,
}

pub fn run(args: PullArgs) -> Result<ExitCode> {
    let formats = args
        .format
        .iter()
        .map(|f| {
            ImageFormat::parse(f).map_err(|reason| Error::Usage {
                option: "--format",
                value: f.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pinned = args.key.load()?;
    if let Some(error) = vmcast_gen::config::not_a_built_site(std::path::Path::new(&args.source)) {
        return Err(error);
    }
    let pulled = vmcast_gen::pull::pull(
        &PullOptions {
            source: args.source,
            pinned,
            appliance: args.appliance,
            formats,
            channel: args.channel,
            policy: match args.policy {
                PolicyArg::Latest => Policy::Latest,
                PolicyArg::CriticalOnly => Policy::CriticalOnly,
                PolicyArg::SameMajor => Policy::SameMajor,
            },
            dest: args.dest,
            state: args.state,
            site: args.site,
            arch: args
                .arch
                .unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
            keep: args.keep.map(|n| n.get()),
            require_provenance: args.require_provenance,
            seeds: args.seed,
            timeout: Duration::from_secs(args.timeout),
            min_rate: args.min_rate,
            now: chrono::Utc::now(),
        },
        &Shown,
    )
    .map_err(|error| {
        let (warnings, error) = error.unwarn();
        show(&warnings);
        error
    })?;
    show(&pulled.warnings);
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&pulled).expect("the outcome serializes")
        );
    }
    match &pulled.outcome {
        Outcome::Current { image } => {
            if !args.json {
                outln!(
                    "current: {} {} ({}) is in place at {}",
                    image.appliance,
                    image.version,
                    image.format,
                    image.path.display()
                );
            }
            Ok(ExitCode::from(CURRENT))
        }
        Outcome::Updated {
            image,
            downloaded,
            resumed_from,
            delta,
            removed,
        } => {
            if !args.json {
                outln!(
                    "updated: {} {} ({}, {}, SHA-256 {}) is in place at {}; downloaded {}{}{}",
                    image.appliance,
                    image.version,
                    image.format,
                    human_size(image.length),
                    image.sha256,
                    image.path.display(),
                    human_size(*downloaded),
                    if *resumed_from > 0 {
                        format!(", resumed at byte {resumed_from}")
                    } else {
                        String::new()
                    },
                    delta.as_ref().map(delta_summary).unwrap_or_default()
                );
                for path in removed {
                    outln!("removed: {}", path.display());
                }
            }
            if let Some(cmd) = &args.exec {
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .envs(vmcast_gen::pull::exec_env(image))
                    .status()
                    .map_err(|e| Error::failed("cannot run --exec", e))?;
                if !status.success() {
                    return Err(Error::Hook(format!(
                        "the image is in place, but --exec failed ({status})"
                    )));
                }
            }
            Ok(ExitCode::from(UPDATED))
        }
    }
}

/// How a delta download went, after what it downloaded.
fn delta_summary(d: &Delta) -> String {
    format!(
        " in {} range(s) over {} request(s), and its {} control file; reused {} from {}{}",
        d.ranges,
        d.requests,
        human_size(d.control),
        human_size(d.reused),
        seeds(&d.seeds),
        match d.zeros {
            0 => String::new(),
            z => format!(", and {} of zeros", human_size(z)),
        }
    )
}

fn seeds(seeds: &[PathBuf]) -> String {
    seeds
        .iter()
        .map(|s| s.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Progress on stderr: what a delta download takes from the seeds, before
/// it downloads the rest.
struct Shown;

impl Progress for Shown {
    fn delta(&self, d: &Delta) {
        eprintln!(
            "delta: {} of the image is in {}{}; downloading the other {}",
            human_size(d.reused),
            seeds(&d.seeds),
            match d.zeros {
                0 => String::new(),
                z => format!(", {} is zeros", human_size(z)),
            },
            human_size(d.missing)
        );
    }
}

/// Warnings go to stderr, before the outcome or the error.
fn show(warnings: &[Warning]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
