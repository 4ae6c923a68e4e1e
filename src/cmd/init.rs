//! `vmcast-gen init`: scaffold a site and say what was made.

use std::path::PathBuf;

use clap::Args;
use vmcast_gen::Result;

use super::keygen;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to scaffold (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Make no key pair (vmcast.key, vmcast.pub); the config still names vmcast.key.
    #[arg(long)]
    pub no_keygen: bool,
    /// Write the secret key unencrypted (as `minisign -G -W`).
    #[arg(short = 'W', long, conflicts_with = "no_keygen")]
    pub no_password: bool,
    /// Also copy the built-in templates into <DIR>/templates for customising.
    #[arg(long)]
    pub templates: bool,
}

pub fn run(args: InitArgs) -> Result<bool> {
    use vmcast_gen::init::Outcome;
    let (secret, public) = (args.dir.join("vmcast.key"), args.dir.join("vmcast.pub"));
    let keep_key = std::fs::symlink_metadata(&secret).is_ok();
    let make_key = !args.no_keygen && !keep_key;
    if make_key {
        // Ask for the password before writing anything, so that a missing
        // one leaves no half-made site.
        vmcast_gen::keys::keygen_targets_free(&secret, &public, false)?;
    }
    let password = match make_key && !args.no_password {
        true => Some(keygen::new_password()?),
        false => None,
    };
    let mut done = vmcast_gen::init::init(&args.dir)?;
    if args.templates {
        done.extend(vmcast_gen::init::templates(&args.dir.join("templates"))?);
    }
    if keep_key {
        done.push(Outcome::Kept(secret.clone()));
    }
    for outcome in &done {
        match outcome {
            Outcome::Created(p) => outln!("created  {}", p.display()),
            Outcome::Extended(p) => outln!("extended {}", p.display()),
            Outcome::Kept(p) => outln!("kept     {} (exists; not overwritten)", p.display()),
            Outcome::Skipped { path, reason } => {
                outln!("skipped  {} ({reason})", path.display())
            }
        }
    }
    if make_key {
        keygen::write(&secret, &public, false, password.as_deref())?;
    }
    let cd = match args.dir.as_os_str() == "." {
        true => String::new(),
        false => format!("cd {} && ", args.dir.display()),
    };
    outln!(
        "\nNext steps:\n\
         \x20 1. Put each release's images beside its release.toml, e.g. \
         releases/example/1.0.0/example-1.0.0.qcow2,\n\
         \x20    and set base_url in vmcast.toml to where the site will be served.\n\
         \x20 2. Build the site into public/:  {cd}vmcast-gen build\n\
         \x20 3. Preview it on http://127.0.0.1:8000/:  {cd}vmcast-gen serve\n\
         \x20 4. Publish vmcast.pub (or its key id) where your users can pin it, \
         and keep vmcast.key secret."
    );
    Ok(true)
}
