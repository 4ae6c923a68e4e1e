//! `vmcast-gen init`: scaffold a site and say what was made.

use std::path::PathBuf;

use clap::Args;
use vmcast_gen::Result;

use super::keygen::{self, KeygenArgs};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to scaffold (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Also generate a key pair (vmcast.key, vmcast.pub) in it.
    #[arg(long)]
    pub keygen: bool,
    /// With --keygen: write the secret key unencrypted.
    #[arg(short = 'W', long, requires = "keygen")]
    pub no_password: bool,
    /// Also copy the built-in templates into <DIR>/templates for customising.
    #[arg(long)]
    pub templates: bool,
}

pub fn run(args: InitArgs) -> Result<bool> {
    use vmcast_gen::init::Outcome;
    let mut done = vmcast_gen::init::init(&args.dir)?;
    if args.templates {
        done.extend(vmcast_gen::init::templates(&args.dir.join("templates"))?);
    }
    for outcome in &done {
        match outcome {
            Outcome::Created(p) => println!("created  {}", p.display()),
            Outcome::Extended(p) => println!("extended {}", p.display()),
            Outcome::Kept(p) => println!("kept     {} (exists; not overwritten)", p.display()),
        }
    }
    if args.keygen {
        keygen::run(KeygenArgs {
            secret_key: args.dir.join("vmcast.key"),
            public_key: args.dir.join("vmcast.pub"),
            force: false,
            no_password: args.no_password,
        })?;
    }
    Ok(true)
}
