//! `vmcast-gen hash`: sidecars written where images are made.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use vmcast_gen::Result;

use super::progress::{Bar, Show};

#[derive(Debug, Args)]
pub struct HashArgs {
    /// The image files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Also record each file's SHA-512, which the virt-builder index
    /// (`[catalogs] virt_builder`) needs; without it, `build` reads those
    /// images again for it.
    #[arg(long)]
    pub sha512: bool,
    /// Hashing threads (default: one per core).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
}

pub fn run(args: HashArgs) -> Result<bool> {
    let threads = args
        .jobs
        .map_or_else(vmcast_gen::par::default_threads, |n| n.get());
    let bar = Bar::new(if std::io::stderr().is_terminal() {
        Show::Bar
    } else {
        Show::Nothing
    });
    for (sidecar, digest) in
        vmcast_gen::hash::write_sidecars(&args.files, args.sha512, threads, &bar)?
    {
        outln!("{}  {}", digest.sha256, sidecar.display());
    }
    Ok(true)
}
