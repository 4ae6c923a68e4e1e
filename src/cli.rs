//! The command line, as clap types. Only `main` uses them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vmcast-gen",
    version,
    about = "Publish virtual appliance images as a signed VMcast: an RSS 2.0 feed, \
             a SHA256SUMS manifest, minisign signatures and a landing page.",
    after_help = "Exit status: 0 on success, 1 on any error, 2 on a usage error.\n\
                  Docs: README.md and docs/feed-format.md in the source repository."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the site: scan releases, hash images, write feed, manifest, signatures and page.
    #[command(after_help = "Environment:\n  \
        VMCAST_SECRET_KEY   the contents of a minisign secret key file (e.g. from a CI secret);\n                      \
        used when --secret-key is not given, before the config's secret_key\n  \
        SOURCE_DATE_EPOCH   build timestamp in Unix seconds; same inputs and same value give a\n                      \
        byte-identical site\n\n\
        The site is built in a temporary directory beside the output and swapped in at the end:\n\
        a failed build leaves the previous output untouched.")]
    Build(BuildArgs),
    /// Generate a new minisign-compatible key pair (unencrypted).
    #[command(
        after_help = "The secret key is written with mode 0600. Keep it out of the output \
        directory and out of version control; in CI, store its contents in a secret and pass \
        them in VMCAST_SECRET_KEY. Publish the public key out of band so consumers can pin it."
    )]
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The site configuration file.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.toml")]
    pub config: PathBuf,
    /// Output directory (default: the config's output_dir, else `public` beside the config).
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Secret key file (overrides VMCAST_SECRET_KEY and the config's secret_key).
    #[arg(long, value_name = "FILE")]
    pub secret_key: Option<PathBuf>,
    /// Hashing threads (default: one per core).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
    /// Show a progress bar even when stderr is not a terminal.
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,
    /// Print nothing on success.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.key")]
    pub secret_key: PathBuf,
    /// Where to write the public key.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.pub")]
    pub public_key: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}
