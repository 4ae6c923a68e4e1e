//! The `vmcast-gen` binary: parses the command line, calls the library,
//! prints the error chain once and picks the exit code.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cli::{BuildArgs, Cli, Command, KeygenArgs};
use vmcast_gen::config::Overrides;
use vmcast_gen::hash::Progress;
use vmcast_gen::render::page::human_size;
use vmcast_gen::{BuildOptions, Error, Result};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build(args),
        Command::Keygen(args) => keygen(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut line = format!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                line.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}

fn build(args: BuildArgs) -> Result<()> {
    let started = Instant::now();
    let options = BuildOptions {
        config: args.config,
        overrides: Overrides {
            output_dir: args.out,
            secret_key: args.secret_key,
        },
        secret_key_text: std::env::var("VMCAST_SECRET_KEY")
            .ok()
            .filter(|s| !s.is_empty()),
        build_time: source_date_epoch()?,
        threads: args.jobs.map(|n| n.get()),
    };
    let show_bar = !args.quiet && (args.progress || std::io::stderr().is_terminal());
    let bar = Bar::new(show_bar);
    let report = vmcast_gen::build(&options, &bar)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if args.quiet {
        return Ok(());
    }
    let secs = report.hash_time.as_secs_f64();
    let rate = if secs > 0.0 {
        format!("{:.2} GB/s", report.bytes_hashed as f64 / secs / 1e9)
    } else {
        "-".into()
    };
    println!(
        "Built {} in {:.2}s: {} appliance(s), {} release(s), {} image(s)",
        report.output_dir.display(),
        started.elapsed().as_secs_f64(),
        report.appliances,
        report.releases,
        report.images
    );
    println!(
        "Hashed {} ({} bytes) in {:.2}s, {rate}",
        human_size(report.bytes_hashed),
        report.bytes_hashed,
        secs
    );
    println!(
        "Signed {} and SHA256SUMS with key {}",
        report.feeds.join(", "),
        report.key_id
    );
    Ok(())
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for "now".
fn source_date_epoch() -> Result<Option<DateTime<Utc>>> {
    let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") else {
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

fn keygen(args: KeygenArgs) -> Result<()> {
    let public = vmcast_gen::keygen(&args.secret_key, &args.public_key, args.force)?;
    println!(
        "Wrote secret key {} (mode 0600) and public key {}\nKey id {}; public key: {}",
        args.secret_key.display(),
        args.public_key.display(),
        public.key_id,
        public.to_base64()
    );
    Ok(())
}

/// Hashing progress on stderr: bytes, rate, ETA and files.
struct Bar {
    bar: ProgressBar,
    files: AtomicUsize,
    done: AtomicUsize,
}

impl Bar {
    fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} hashing {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} [{wide_bar}] {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        Bar {
            bar,
            files: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, files: usize, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn file_done(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let files = self.files.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{files} files"));
    }

    fn end(&self) {
        self.bar.finish_and_clear();
    }
}
