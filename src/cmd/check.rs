//! `vmcast-gen check`: every problem at once, then a one-line verdict.

use std::path::PathBuf;

use clap::Args;
use vmcast_gen::Result;

use super::term::error_line;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The site configuration file.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.toml")]
    pub config: PathBuf,
    /// Also require every image to exist and be recognisable by name (still not read).
    #[arg(long)]
    pub images: bool,
}

pub fn run(args: CheckArgs) -> Result<bool> {
    let report = vmcast_gen::check::check(&args.config, args.images)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for problem in &report.problems {
        eprintln!("{}", error_line(problem));
    }
    println!(
        "checked {} release(s): {}",
        report.releases,
        match report.problems.len() {
            0 => "no problems".to_owned(),
            n => format!("{n} problem(s)"),
        }
    );
    Ok(report.problems.is_empty())
}
