//! `vmcast-gen keygen`: a new minisign key pair.

use std::path::PathBuf;

use clap::Args;
use vmcast_gen::{Error, Result};

use super::prompt;

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
    /// Write the secret key unencrypted (as `minisign -G -W`); by default it is encrypted with a
    /// password from VMCAST_KEY_PASSWORD or asked on the terminal.
    #[arg(short = 'W', long)]
    pub no_password: bool,
}

pub fn run(args: KeygenArgs) -> Result<bool> {
    let password = if args.no_password {
        None
    } else {
        Some(prompt::password("the new key", true)?.ok_or_else(|| {
            Error::other(
                "keygen encrypts the secret key: set VMCAST_KEY_PASSWORD, run on a terminal, \
                 or pass -W for an unencrypted key",
            )
        })?)
    };
    if password.as_deref() == Some("") {
        return Err(Error::other(
            "an empty password; pass -W for an unencrypted key",
        ));
    }
    let public = vmcast_gen::keygen(
        &args.secret_key,
        &args.public_key,
        args.force,
        password.as_deref(),
    )?;
    println!(
        "Wrote secret key {} (mode 0600) and public key {}\nKey id {}; public key: {}",
        args.secret_key.display(),
        args.public_key.display(),
        public.key_id,
        public.to_base64()
    );
    Ok(true)
}
