//! Passwords: from `VMCAST_KEY_PASSWORD`, else asked on the terminal.

use std::io::IsTerminal;

use vmcast_gen::{Error, Result};

/// The password for `what`: `VMCAST_KEY_PASSWORD`, else asked on the
/// terminal (twice when `confirm`), else `None` when there is no terminal.
pub fn password(what: &str, confirm: bool) -> Result<Option<String>> {
    if let Ok(p) = std::env::var("VMCAST_KEY_PASSWORD") {
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
pub fn unlock(what: &str) -> Result<String> {
    password(what, false)?.ok_or_else(|| {
        Error::other(format_args!(
            "{what} needs a password: set VMCAST_KEY_PASSWORD, or run on a terminal"
        ))
    })
}
