//! Key files: finding, checking and unlocking the secret keys a build
//! signs with (minisign for the feeds and SHA256SUMS, OpenPGP for the
//! clearsigned catalogs), and writing new key pairs (`keygen`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::Utc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::openpgp;
use crate::sign::{KeyId, LockedKey, PublicKey, SecretKey, Signer};
use crate::warning::Warning;

/// Where the secret key comes from, in order of precedence.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The contents of a key file, e.g. from a CI secret.
    Text(String),
    /// A key file.
    File(PathBuf),
}

/// Which secret key a password is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The minisign key that signs the feeds and SHA256SUMS.
    Minisign,
    /// The OpenPGP key that clearsigns SHA256SUMS.asc and the catalogs.
    OpenPgp,
}

/// Asked for a secret key's password, only when that key is encrypted.
pub type PasswordPrompt<'a> = &'a mut dyn FnMut(KeyKind) -> Result<String>;

/// The secret key: a throwaway one for a preview (a preview is never
/// signed with the real key); else `--secret-key`, else
/// `VMCAST_SECRET_KEY`, else the config's `secret_key`.
pub(crate) fn load_key(
    config: &Config,
    options: &crate::BuildOptions,
    password: PasswordPrompt,
) -> Result<(Box<dyn Signer>, Option<Warning>)> {
    if options.preview {
        return Ok((Box::new(preview_key()?), None));
    }
    let (key, warning) = locked_key(
        config,
        options.overrides.secret_key.as_deref(),
        options.secret_key_text.as_deref(),
    )?;
    Ok((
        Box::new(key.unlock(&mut || password(KeyKind::Minisign))?),
        warning,
    ))
}

/// The OpenPGP key, when one is set: `VMCAST_OPENPGP_KEY`, else the
/// config's `[catalogs] openpgp_key`. A preview gets a throwaway one, as
/// for minisign.
pub(crate) fn load_openpgp_key(
    config: &Config,
    options: &crate::BuildOptions,
    password: PasswordPrompt,
) -> Result<(Option<openpgp::Signer>, Option<Warning>)> {
    if options.preview {
        let configured =
            options.openpgp_key_text.is_some() || config.catalogs.openpgp_key.is_some();
        return Ok((configured.then(preview_openpgp_key).transpose()?, None));
    }
    let Some((key, warning)) = locked_openpgp_key(config, options.openpgp_key_text.as_deref())?
    else {
        return Ok((None, None));
    };
    Ok((
        Some(key.unlock(&mut || password(KeyKind::OpenPgp))?),
        warning,
    ))
}

/// Finds the secret key file and checks its layout without unlocking it:
/// `file` (from the command line), else `text` (`VMCAST_SECRET_KEY`), else
/// the config's `secret_key`. A key file inside the output is refused,
/// since the output is published. An unencrypted key file that group or
/// others can read comes with a warning. `check` uses this to report what
/// `build` would refuse without asking for a password.
pub fn locked_key(
    config: &Config,
    file: Option<&Path>,
    text: Option<&str>,
) -> Result<(LockedKey, Option<Warning>)> {
    let source = match (file, text, &config.secret_key) {
        (Some(path), _, _) => KeySource::File(path.to_path_buf()),
        (None, Some(text), _) => KeySource::Text(text.to_owned()),
        (None, None, Some(path)) => KeySource::File(path.clone()),
        (None, None, None) => return Err(Error::NoSecretKey),
    };
    match source {
        KeySource::Text(text) => Ok((
            LockedKey::parse(Path::new("$VMCAST_SECRET_KEY"), &text)?,
            None,
        )),
        KeySource::File(path) => {
            let (text, mode) = read_secret_key(config, &path, &MINISIGN_KEY)?;
            let key = LockedKey::parse(&path, &text)?;
            let warning = exposed_key(&path, &MINISIGN_KEY, key.encrypted, mode);
            Ok((key, warning))
        }
    }
}

/// Finds the OpenPGP secret key and checks it as [`locked_key`] checks the
/// minisign key, without unlocking it: `text` (`VMCAST_OPENPGP_KEY`), else
/// the config's `[catalogs] openpgp_key`; `None` when neither is set.
pub fn locked_openpgp_key(
    config: &Config,
    text: Option<&str>,
) -> Result<Option<(openpgp::LockedKey, Option<Warning>)>> {
    match (text, &config.catalogs.openpgp_key) {
        (Some(text), _) => Ok(Some((
            openpgp::LockedKey::parse(Path::new("$VMCAST_OPENPGP_KEY"), text)?,
            None,
        ))),
        (None, Some(path)) => {
            let (text, mode) = read_secret_key(config, path, &OPENPGP_KEY)?;
            let key = openpgp::LockedKey::parse(path, &text)?;
            let warning = exposed_key(path, &OPENPGP_KEY, key.encrypted, mode);
            Ok(Some((key, warning)))
        }
        (None, None) => Ok(None),
    }
}

/// How errors and warnings about a kind of secret key file name it.
struct SecretKeyFile {
    /// "cannot read the …"
    read: &'static str,
    name: &'static str,
    keygen: &'static str,
}

const MINISIGN_KEY: SecretKeyFile = SecretKeyFile {
    read: "cannot read the secret key",
    name: "secret key",
    keygen: "vmcast-gen keygen",
};

const OPENPGP_KEY: SecretKeyFile = SecretKeyFile {
    read: "cannot read the OpenPGP secret key",
    name: "OpenPGP secret key",
    keygen: "vmcast-gen keygen --openpgp",
};

/// A secret key file's text and permission bits; refused inside the
/// output directory, which is published. A symbolic link is fine (mounted
/// secrets are often links); the checks are made on the file it leads to.
fn read_secret_key(config: &Config, path: &Path, kind: &SecretKeyFile) -> Result<(String, u32)> {
    let (bytes, meta) =
        fsutil::read_regular(path, true, fsutil::MAX_TEXT_FILE).map_err(|e| match e {
            Error::Io { path, source, .. } => Error::io(kind.read, path, source),
            other => other,
        })?;
    let text = fsutil::text(path, bytes)?;
    let real = fsutil::canonicalize(path)?;
    if real.starts_with(fsutil::resolve_lexically(&config.output_dir)?) {
        return Err(Error::file(
            path,
            format_args!(
                "the {} lies inside the output directory {}, which is published; move it out",
                kind.name,
                config.output_dir.display()
            ),
        ));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    Ok((text, mode))
}

/// The warning for an unencrypted key file that group or others can read.
fn exposed_key(path: &Path, kind: &SecretKeyFile, encrypted: bool, mode: u32) -> Option<Warning> {
    (!encrypted && mode & 0o077 != 0).then(|| {
        Warning::file(
            path,
            format_args!(
                "an unencrypted {} that group or others can read (mode {mode:04o}): anyone who \
                 can read it can sign as you; chmod 600 it, or use an encrypted key ({} without \
                 -W)",
                kind.name, kind.keygen
            ),
        )
    })
}

/// A preview's throwaway key: random, and made once per process, so the
/// rebuilds of one `serve` run keep it and the next run gets another.
fn preview_key() -> Result<SecretKey> {
    static KEY: OnceLock<(KeyId, [u8; 32])> = OnceLock::new();
    let (id, seed) = match KEY.get() {
        Some(key) => *key,
        None => {
            let (mut id, mut seed) = ([0u8; 8], [0u8; 32]);
            getrandom::fill(&mut id)
                .and_then(|()| getrandom::fill(&mut seed))
                .map_err(|e| Error::failed("cannot get random bytes", e))?;
            *KEY.get_or_init(|| (KeyId(id), seed))
        }
    };
    Ok(SecretKey::from_seed(id, seed))
}

/// A preview's throwaway OpenPGP key, made once per process like
/// [`preview_key`].
fn preview_openpgp_key() -> Result<openpgp::Signer> {
    static KEY: OnceLock<openpgp::Signer> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key.clone());
    }
    let key = openpgp::Signer::generate("vmcast-gen preview", Utc::now())?;
    Ok(KEY.get_or_init(|| key).clone())
}

/// Fails unless both key files may be written: absent, or `force`.
pub fn keygen_targets_free(secret_key: &Path, public_key: &Path, force: bool) -> Result<()> {
    if !force {
        for path in [secret_key, public_key] {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(Error::file(
                    path,
                    "already exists; pass --force to overwrite it",
                ));
            }
        }
    }
    Ok(())
}

/// Writes a new minisign key pair: the secret key with mode 0600, encrypted
/// when a password is given, and the public key with mode 0644. Creates
/// missing directories on the way; refuses to overwrite unless `force`.
pub fn keygen(
    secret_key: &Path,
    public_key: &Path,
    force: bool,
    password: Option<&str>,
) -> Result<PublicKey> {
    keygen_targets_free(secret_key, public_key, force)?;
    for path in [secret_key, public_key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_dir_all(dir)?;
        }
    }
    let key = SecretKey::generate()?;
    fsutil::write_new_file(secret_key, key.to_file(password)?.as_bytes(), 0o600, force)?;
    fsutil::write_new_file(
        public_key,
        key.public.to_file().as_bytes(),
        fsutil::PUBLISHED_FILE_MODE,
        force,
    )?;
    Ok(key.public)
}

/// Writes a new OpenPGP key (v4, ed25519, may sign) for `user_id`: the
/// secret key ASCII-armored with mode 0600, encrypted when a password is
/// given, and the public key ASCII-armored with mode 0644. Creates missing
/// directories; refuses to overwrite unless `force`. Returns the key's
/// fingerprint.
pub fn openpgp_keygen(
    secret_key: &Path,
    public_key: &Path,
    force: bool,
    password: Option<&str>,
    user_id: &str,
) -> Result<String> {
    keygen_targets_free(secret_key, public_key, force)?;
    for path in [secret_key, public_key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_dir_all(dir)?;
        }
    }
    let key = openpgp::Signer::generate(user_id, Utc::now())?;
    fsutil::write_new_file(secret_key, key.to_file(password)?.as_bytes(), 0o600, force)?;
    fsutil::write_new_file(
        public_key,
        key.public_key()?.as_bytes(),
        fsutil::PUBLISHED_FILE_MODE,
        force,
    )?;
    Ok(key.fingerprint())
}
