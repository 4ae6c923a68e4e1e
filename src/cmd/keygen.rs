//! `vmcast-gen keygen`: a new minisign key pair.

use std::path::{Path, PathBuf};

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
    // Refuse before asking for a password that would be wasted.
    vmcast_gen::keygen_targets_free(&args.secret_key, &args.public_key, args.force)?;
    let password = match args.no_password {
        true => None,
        false => Some(new_password()?),
    };
    write(
        &args.secret_key,
        &args.public_key,
        args.force,
        password.as_deref(),
    )?;
    Ok(true)
}

/// The password for a new key: VMCAST_KEY_PASSWORD, else asked twice on
/// the terminal.
pub fn new_password() -> Result<String> {
    let password = prompt::password("the new key", true)?.ok_or_else(|| {
        Error::other(
            "keygen encrypts the secret key: set VMCAST_KEY_PASSWORD, run on a terminal, \
             or pass -W for an unencrypted key",
        )
    })?;
    if password.is_empty() {
        return Err(Error::other(
            "an empty password; pass -W for an unencrypted key",
        ));
    }
    Ok(password)
}

/// Writes the key pair and says where.
pub fn write(secret: &Path, public: &Path, force: bool, password: Option<&str>) -> Result<()> {
    let key = vmcast_gen::keygen(secret, public, force, password)?;
    println!(
        "Wrote secret key {} (mode 0600{}) and public key {}\nKey id {}; public key: {}",
        secret.display(),
        match password {
            Some(_) => ", encrypted",
            None => ", unencrypted",
        },
        public.display(),
        key.key_id,
        key.to_base64()
    );
    Ok(())
}
