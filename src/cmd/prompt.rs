//! Passwords: from an environment variable, else asked on the terminal.

use std::io::IsTerminal;

use vmcast_gen::{Error, Result};

/// The minisign key's password.
pub const KEY_PASSWORD: &str = "VMCAST_KEY_PASSWORD";
/// The OpenPGP key's password.
pub const OPENPGP_PASSWORD: &str = "VMCAST_OPENPGP_PASSWORD";

/// The password for `what`: the variable `env`, else asked on the
/// terminal (twice when `confirm`), else `None` when there is no terminal.
pub fn password(what: &str, env: &str, confirm: bool) -> Result<Option<String>> {
    if let Ok(p) = std::env::var(env) {
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

/// The password that unlocks an encrypted secret key.
pub fn unlock(what: &str, env: &str) -> Result<String> {
    password(what, env, false)?.ok_or_else(|| {
        Error::other(format_args!(
            "{what} needs a password: set {env}, or run on a terminal"
        ))
    })
}
