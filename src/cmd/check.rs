//! `vmcast-gen check`: every problem at once, then a one-line verdict.

use std::path::PathBuf;

use clap::Args;
use vmcast_gen::Result;
use vmcast_gen::check::KeyOptions;

use super::term::error_line;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The site configuration file (default: vmcast.toml here or in the nearest directory above).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Leave the images out: for a change to notes before its images exist (by default every
    /// image must exist and be recognisable by name, as build requires; none is read).
    #[arg(long)]
    pub no_images: bool,
    /// Secret key file or pkcs11: URI, as for build (else VMCAST_SECRET_KEY, else the config's
    /// secret_key).
    #[arg(long, value_name = "FILE|URI")]
    pub secret_key: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> Result<bool> {
    let config = super::site_config(args.config)?;
    let text = super::env("VMCAST_SECRET_KEY");
    let openpgp_text = super::build::openpgp_key_text();
    let module = super::build::pkcs11_module();
    let password = super::env(super::prompt::KEY_PASSWORD);
    let openpgp_password = super::env(super::prompt::OPENPGP_PASSWORD);
    let key = KeyOptions {
        file: args.secret_key.as_deref(),
        text: text.as_deref(),
        openpgp_text: openpgp_text.as_deref(),
        pkcs11_module: module.as_deref(),
        password: password.as_deref(),
        openpgp_password: openpgp_password.as_deref(),
        terminal: std::io::IsTerminal::is_terminal(&std::io::stdin()),
    };
    let report = vmcast_gen::check::check(
        &config,
        !args.no_images,
        key,
        &mut super::prompt::unlock_key,
    )?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for problem in &report.problems {
        eprintln!("{}", error_line(problem));
    }
    outln!(
        "checked {} release(s): {}",
        report.releases,
        match report.problems.len() {
            0 => "no problems".to_owned(),
            n => format!("{n} problem(s)"),
        }
    );
    Ok(report.problems.is_empty())
}
