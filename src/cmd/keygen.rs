//! `vmcast-gen keygen`: a new minisign key pair, on a PKCS#11 token with
//! `--pkcs11`, or with `--openpgp` an OpenPGP one.

use std::path::{Path, PathBuf};

use clap::Args;
use vmcast_gen::config::{self, Overrides};
use vmcast_gen::pkcs11::{self, Uri};
use vmcast_gen::{Error, Result};

use super::prompt;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key [default: vmcast.key; with --openpgp, openpgp-secret.asc].
    #[arg(short, long, value_name = "FILE")]
    pub secret_key: Option<PathBuf>,
    /// Where to write the public key [default: vmcast.pub; with --openpgp, openpgp.asc].
    #[arg(short, long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    /// Write the secret key unencrypted (as `minisign -G -W`); by default it is encrypted with a
    /// password from VMCAST_KEY_PASSWORD (VMCAST_OPENPGP_PASSWORD with --openpgp) or asked on
    /// the terminal.
    #[arg(short = 'W', long)]
    pub no_password: bool,
    /// Make an OpenPGP key (ed25519, ASCII-armored) for `[catalogs] openpgp_key`, which
    /// clearsigns SHA256SUMS.asc for the clients that check only OpenPGP signatures.
    #[arg(long)]
    pub openpgp: bool,
    /// With --openpgp: the key's user id [default: the title in the vmcast.toml here or above,
    /// else "vmcast-gen"].
    #[arg(long, value_name = "TEXT", requires = "openpgp")]
    pub user_id: Option<String>,
    /// Make the key pair on the PKCS#11 token this RFC 7512 URI names, as
    /// pkcs11:token=TOKEN;object=LABEL[?module-path=MODULE]; the secret key never leaves the
    /// token, and only the public key is written.
    #[arg(long, value_name = "URI", conflicts_with_all = ["openpgp", "secret_key", "no_password"])]
    pub pkcs11: Option<String>,
    /// With --pkcs11: put this existing minisign secret key on the token instead of making a new
    /// one, so the public key stays the one consumers pinned.
    #[arg(long, value_name = "FILE", requires = "pkcs11")]
    pub import: Option<PathBuf>,
}

pub fn run(args: KeygenArgs) -> Result<bool> {
    if let Some(uri) = &args.pkcs11 {
        let public = args.public_key.unwrap_or_else(|| "vmcast.pub".into());
        return token(uri, &public, args.force, args.import.as_deref()).map(|()| true);
    }
    let (secret_default, public_default) = match args.openpgp {
        true => ("openpgp-secret.asc", "openpgp.asc"),
        false => ("vmcast.key", "vmcast.pub"),
    };
    let secret = args.secret_key.unwrap_or_else(|| secret_default.into());
    let public = args.public_key.unwrap_or_else(|| public_default.into());
    // Refuse before asking for a password that would be wasted.
    vmcast_gen::keys::keygen_targets_free(&secret, &public, args.force)?;
    if !args.openpgp {
        let password = match args.no_password {
            true => None,
            false => Some(new_password()?),
        };
        write(&secret, &public, args.force, password.as_deref())?;
        return Ok(true);
    }
    let user_id = match args.user_id {
        Some(id) => id,
        None => site_title()?.unwrap_or_else(|| "vmcast-gen".to_owned()),
    };
    let password = match args.no_password {
        true => None,
        false => Some(new_password_from(prompt::OPENPGP_PASSWORD)?),
    };
    let fingerprint = vmcast_gen::keys::openpgp_keygen(
        &secret,
        &public,
        args.force,
        password.as_deref(),
        &user_id,
    )?;
    outln!(
        "Wrote OpenPGP secret key {} (mode 0600{}) and public key {}\nFingerprint {fingerprint}; \
         user id: {user_id}",
        secret.display(),
        match password {
            Some(_) => ", encrypted",
            None => ", unencrypted",
        },
        public.display(),
    );
    Ok(true)
}

/// `--pkcs11`: the key pair made on (or imported into) the token, and
/// its public key written.
fn token(uri: &str, public: &Path, force: bool, import: Option<&Path>) -> Result<()> {
    let uri = Uri::parse(uri).map_err(|reason| Error::Usage {
        option: "--pkcs11",
        value: pkcs11::shown(uri),
        reason,
    })?;
    let module = super::build::pkcs11_module();
    let key = vmcast_gen::keys::token_keygen(
        &uri,
        module.as_deref(),
        public,
        force,
        import,
        &mut prompt::unlock_key,
    )?;
    outln!(
        "{} {uri}; wrote public key {}\nKey id {}; public key: {}\nSign with it: secret_key = \
         \"{uri}\" and public_key = \"{}\" in vmcast.toml (the PIN from VMCAST_PKCS11_PIN)",
        match import {
            Some(file) => format!("Put the secret key {} on the token", file.display()),
            None => "Made an ed25519 key pair on the token".to_owned(),
        },
        public.display(),
        key.key_id,
        key.to_base64(),
        public.display(),
    );
    Ok(())
}

/// The title of the site here or above, if there is one.
fn site_title() -> Result<Option<String>> {
    let here = std::env::current_dir()
        .map_err(|e| Error::failed("cannot read the current directory", e))?;
    match config::find(&here) {
        Ok(path) => Ok(Some(config::load(&path, &Overrides::default())?.title)),
        Err(_) => Ok(None),
    }
}

/// The password for a new minisign key: VMCAST_KEY_PASSWORD, else asked
/// twice on the terminal.
pub fn new_password() -> Result<String> {
    new_password_from(prompt::KEY_PASSWORD)
}

/// The password for a new key: the variable `env`, else asked twice on
/// the terminal.
fn new_password_from(env: &str) -> Result<String> {
    let password = prompt::password("the new key", env, true)?.ok_or_else(|| {
        Error::other(format_args!(
            "keygen encrypts the secret key: set {env}, run on a terminal, or pass -W for an \
             unencrypted key"
        ))
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
    let key = vmcast_gen::keys::keygen(secret, public, force, password)?;
    outln!(
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
