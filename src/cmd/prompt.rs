//! Passwords: from an environment variable, else asked on the terminal.

use std::io::IsTerminal;

use vmcast_gen::keys::KeyKind;
use vmcast_gen::{Error, Result};

/// The minisign key's password.
pub const KEY_PASSWORD: &str = "VMCAST_KEY_PASSWORD";
/// The OpenPGP key's password.
pub const OPENPGP_PASSWORD: &str = "VMCAST_OPENPGP_PASSWORD";
/// The PKCS#11 token's user PIN.
pub const PKCS11_PIN: &str = "VMCAST_PKCS11_PIN";

/// The password for `what`: the variable `env`, else asked on the
/// terminal (twice when `confirm`), else `None` when there is no terminal.
/// An empty variable (a CI secret that is not defined) counts as unset,
/// not as an empty password.
pub fn password(what: &str, env: &str, confirm: bool) -> Result<Option<String>> {
    if let Some(p) = super::env(env) {
        return Ok(Some(p));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| Error::failed("cannot read the password", e))
    };
    let first = ask(&format!("Password for {what}: "))?;
    if confirm && ask("Password (again): ")? != first {
        return Err(Error::other("the passwords differ"));
    }
    Ok(Some(first))
}

/// The user PIN of the token that holds the key: VMCAST_PKCS11_PIN, else
/// asked on the terminal. An empty variable (a CI secret that is not
/// defined) counts as unset: a wrong PIN costs one of the token's tries.
pub fn pin() -> Result<String> {
    if let Some(pin) = super::env(PKCS11_PIN) {
        return Ok(pin);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::other(format_args!(
            "the token needs its user PIN: set {PKCS11_PIN}, add pin-source=FILE to the URI, or \
             run on a terminal"
        )));
    }
    rpassword::prompt_password("PIN of the PKCS#11 token: ")
        .map_err(|e| Error::failed("cannot read the PIN", e))
}

/// What unlocks the keys a command uses: the passwords of key files and
/// the token's PIN.
pub fn unlock_key(kind: KeyKind) -> Result<String> {
    match kind {
        KeyKind::Minisign => unlock("the secret key", KEY_PASSWORD),
        KeyKind::OpenPgp => unlock("the OpenPGP secret key", OPENPGP_PASSWORD),
        KeyKind::TokenPin => pin(),
    }
}

/// The password that unlocks an encrypted secret key.
pub fn unlock(what: &str, env: &str) -> Result<String> {
    password(what, env, false)?.ok_or_else(|| {
        Error::other(format_args!(
            "{what} needs a password: set {env}, or run on a terminal"
        ))
    })
}
