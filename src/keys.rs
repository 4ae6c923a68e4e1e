//! Secret keys: finding, checking and unlocking the keys a build signs
//! with (minisign for the feeds and SHA256SUMS, from a key file or a
//! PKCS#11 token; OpenPGP for the clearsigned catalogs), and making new
//! key pairs (`keygen`).

use std::path::Path;
use std::sync::OnceLock;

use chrono::Utc;
use zeroize::Zeroizing;

use crate::config::{Config, KeyLocation};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::{FileId, KeyFile};
use crate::openpgp;
use crate::pkcs11;
use crate::sign::{KeyId, LockedKey, PublicKey, SecretKey, Signer};
use crate::warning::Warning;

/// The minisign secret key, found and checked, not yet unlocked.
pub enum LockedSecret {
    /// A key file, or its contents.
    File(LockedKey),
    /// A key on a PKCS#11 token.
    Token(Box<pkcs11::Uri>),
}

/// Which secret key a password is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The minisign key that signs the feeds and SHA256SUMS.
    Minisign,
    /// The OpenPGP key that clearsigns SHA256SUMS.asc and the catalogs.
    OpenPgp,
    /// The user PIN of the PKCS#11 token that holds the minisign key.
    TokenPin,
}

/// Asked for a secret key's password, only when that key is encrypted, or
/// for a token's PIN when its URI gives none.
pub type PasswordPrompt<'a> = &'a mut dyn FnMut(KeyKind) -> Result<String>;

/// The key file at `path` (following links) as it is now, if it is one: a
/// key file named but not read, as for a key given as text or a preview.
fn named_key_file(path: Option<&Path>) -> Option<KeyFile> {
    let path = path?;
    let meta = fsutil::metadata(path).ok().filter(|m| m.is_file())?;
    Some(KeyFile {
        path: path.to_path_buf(),
        id: FileId::of(&meta),
    })
}

/// The key file the config's `secret_key` names, if it names a file.
fn configured_key_file(config: &Config) -> Option<KeyFile> {
    match &config.secret_key {
        Some(KeyLocation::File(path)) => named_key_file(Some(path)),
        _ => None,
    }
}

/// A secret key as found: what to warn of about it, and the key file it
/// came from (the one the config names, when the key was given as text).
#[derive(Debug)]
pub struct Found<K> {
    pub key: K,
    pub warnings: Vec<Warning>,
    pub file: Option<KeyFile>,
}

/// The secret key: a throwaway one for a preview (a preview is never
/// signed with the real key); else `--secret-key`, else
/// `VMCAST_SECRET_KEY`, else the config's `secret_key`. A key file is
/// unlocked; a token is opened and logged in to. Either must be the
/// config's `public_key`, when it names one.
pub(crate) fn load_key(
    config: &Config,
    options: &crate::BuildOptions,
    password: PasswordPrompt,
) -> Result<Found<Box<dyn Signer>>> {
    if options.preview {
        return Ok(Found {
            key: Box::new(preview_key()?),
            warnings: Vec::new(),
            file: configured_key_file(config),
        });
    }
    let found = locked_key(
        config,
        options.overrides.secret_key.as_deref(),
        options.secret_key_text.as_deref(),
    )?;
    let key: Box<dyn Signer> = match found.key {
        LockedSecret::File(key) => {
            let key = key.unlock(&mut || password(KeyKind::Minisign))?;
            same_key(config, &key.public)?;
            Box::new(key)
        }
        LockedSecret::Token(uri) => Box::new(open_token(
            config,
            &uri,
            options.pkcs11_module.as_deref(),
            password,
        )?),
    };
    Ok(Found {
        key,
        warnings: found.warnings,
        file: found.file,
    })
}
/// Opens the token key the URI names (with the module of its
/// `module-path`, else `module`) and checks it against the config's
/// `public_key`, whose key id it then takes; nothing is signed. `check`
/// stops here.
pub fn open_token(
    config: &Config,
    uri: &pkcs11::Uri,
    module: Option<&Path>,
    password: PasswordPrompt,
) -> Result<pkcs11::TokenKey> {
    let pinned = public_key(config)?;
    let key = pkcs11::TokenKey::open(uri, module, pinned.as_ref().map(|p| p.key_id), &mut || {
        password(KeyKind::TokenPin)
    })?;
    same_key_as(config, key.public(), &format!("the key {uri}"))?;
    Ok(key)
}

/// The config's `public_key`, if it names one; a file that cannot be read
/// is an error at the line that names it.
pub(crate) fn public_key(config: &Config) -> Result<Option<PublicKey>> {
    let Some(path) = config.public_key.as_deref() else {
        return Ok(None);
    };
    let text =
        fsutil::read_to_string(path).map_err(|e| match (e, config.key_lines.public_key) {
            (Error::Io { source, .. }, Some(at)) => Error::at(
                &config.path,
                at,
                format_args!(
                    "public_key: cannot read {}: {source}; it is the public key consumers pin \
                 (vmcast.pub, written by `vmcast-gen keygen`)",
                    path.display()
                ),
            ),
            (e, _) => e,
        })?;
    PublicKey::from_file(path, &text).map(Some)
}

/// Fails unless the secret key's public half `key` is the config's
/// `public_key` (when it names one).
pub(crate) fn same_key(config: &Config, key: &PublicKey) -> Result<()> {
    same_key_as(config, key, "the secret key")
}

/// Fails unless `key`, the public half of `what`, is the config's
/// `public_key` (when it names one).
fn same_key_as(config: &Config, key: &PublicKey, what: &str) -> Result<()> {
    match (public_key(config)?, &config.public_key) {
        (Some(pinned), Some(path)) if pinned != *key => Err(Error::file(
            path,
            format_args!(
                "is not the public half of {what}: it holds {} (key id {}), the signing key is \
                 {}; consumers pin this file, so nothing is signed with another key",
                pinned.to_base64(),
                pinned.key_id,
                key.to_base64()
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses `[catalogs] systemd` without an OpenPGP key, pointing at it.
pub(crate) fn systemd_needs_openpgp(config: &Config, has_key: bool) -> Result<()> {
    match (config.catalogs.systemd, has_key) {
        (Some(at), false) => Err(Error::at(
            &config.path,
            at,
            "[catalogs] systemd needs an OpenPGP key to sign each directory's SHA256SUMS.gpg, \
             which systemd-pull and systemd-sysupdate check: set [catalogs] openpgp_key (make \
             one with `vmcast-gen keygen --openpgp`) or VMCAST_OPENPGP_KEY",
        )),
        _ => Ok(()),
    }
}

/// The OpenPGP key, unlocked: `VMCAST_OPENPGP_KEY`, else the config's
/// `[catalogs] openpgp_key`, asking for its password as [`load_key`] does
/// for minisign. A preview signs with a throwaway key instead.
pub(crate) fn load_openpgp_key(
    config: &Config,
    options: &crate::BuildOptions,
    password: PasswordPrompt,
) -> Result<Option<Found<openpgp::Signer>>> {
    if options.preview {
        if options.openpgp_key_text.is_none() && config.catalogs.openpgp_key.is_none() {
            return Ok(None);
        }
        return Ok(Some(Found {
            key: preview_openpgp_key()?,
            warnings: Vec::new(),
            file: named_key_file(config.catalogs.openpgp_key.as_deref()),
        }));
    }
    let Some(found) = locked_openpgp_key(config, options.openpgp_key_text.as_deref())? else {
        return Ok(None);
    };
    Ok(Some(Found {
        key: found.key.unlock(&mut || password(KeyKind::OpenPgp))?,
        warnings: found.warnings,
        file: found.file,
    }))
}

/// Finds the secret key and checks it without unlocking it: `named` (a
/// file or a `pkcs11:` URI, from the command line), else `text`
/// (`VMCAST_SECRET_KEY`), else the config's `secret_key`. A key file's
/// layout is checked; one inside the output is refused, since the output
/// is published, and an unencrypted one that group or others can read
/// comes with a warning, as does one inside the trees the scan publishes
/// from. `check` uses this to report what `build` would refuse without
/// asking for a password.
pub fn locked_key(
    config: &Config,
    named: Option<&Path>,
    text: Option<&str>,
) -> Result<Found<LockedSecret>> {
    let location = match (named, text, &config.secret_key) {
        (Some(named), _, _) => KeyLocation::named(named)?,
        (None, Some(text), _) => {
            return Ok(Found {
                key: LockedSecret::File(LockedKey::parse(Path::new("$VMCAST_SECRET_KEY"), text)?),
                warnings: Vec::new(),
                file: configured_key_file(config),
            });
        }
        (None, None, Some(location)) => location.clone(),
        (None, None, None) => return Err(Error::NoSecretKey),
    };
    match location {
        KeyLocation::Token(uri) => Ok(Found {
            key: LockedSecret::Token(uri),
            warnings: Vec::new(),
            file: None,
        }),
        KeyLocation::File(path) => {
            let named_at = named
                .is_none()
                .then_some(config.key_lines.secret_key)
                .flatten();
            let read = read_secret_key(config, &path, &MINISIGN_KEY, named_at)?;
            let key = LockedKey::parse(&path, &read.text)?;
            Ok(read.found(key.encrypted, LockedSecret::File(key)))
        }
    }
}

/// the config's `[catalogs] openpgp_key`; `None` when neither is set.
pub fn locked_openpgp_key(
    config: &Config,
    text: Option<&str>,
) -> Result<Option<Found<openpgp::LockedKey>>> {
    match (text, &config.catalogs.openpgp_key) {
        (Some(text), path) => Ok(Some(Found {
            key: openpgp::LockedKey::parse(Path::new("$VMCAST_OPENPGP_KEY"), text)?,
            warnings: Vec::new(),
            file: named_key_file(path.as_deref()),
        })),
        (None, Some(path)) => {
            let read = read_secret_key(config, path, &OPENPGP_KEY, config.key_lines.openpgp_key)?;
            let key = openpgp::LockedKey::parse(path, &read.text)?;
            Ok(Some(read.found(key.encrypted, key)))
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
    /// Where `keygen` writes it unless told otherwise.
    default: &'static str,
    /// The config's setting that names it.
    setting: &'static str,
}

const MINISIGN_KEY: SecretKeyFile = SecretKeyFile {
    read: "cannot read the secret key",
    name: "secret key",
    keygen: "vmcast-gen keygen",
    default: "vmcast.key",
    setting: "secret_key",
};

const OPENPGP_KEY: SecretKeyFile = SecretKeyFile {
    read: "cannot read the OpenPGP secret key",
    name: "OpenPGP secret key",
    keygen: "vmcast-gen keygen --openpgp",
    default: "openpgp-secret.asc",
    setting: "[catalogs] openpgp_key",
};

impl SecretKeyFile {
    /// The key file at `path` cannot be read: at the config's line that
    /// names it (`named_at`), if it does; a missing file with the command
    /// that makes one.
    fn unreadable(
        &self,
        config: &Config,
        path: &Path,
        source: std::io::Error,
        named_at: Option<crate::error::LineCol>,
    ) -> Error {
        let keygen = match path == Path::new(self.default) {
            true => format!("`{}`", self.keygen),
            false => format!("`{} -s {}`", self.keygen, path.display()),
        };
        let fix = match (source.kind(), named_at) {
            (std::io::ErrorKind::NotFound, Some(_)) => {
                format!(
                    "; make one with {keygen}, or point {} at yours",
                    self.setting
                )
            }
            (std::io::ErrorKind::NotFound, None) => format!("; make one with {keygen}"),
            _ => String::new(),
        };
        match named_at {
            Some(at) => Error::at(
                &config.path,
                at,
                format_args!(
                    "{}: {} {}: {source}{fix}",
                    self.setting,
                    self.read,
                    path.display()
                ),
            ),
            None => Error::other(format_args!(
                "{} {}: {source}{fix}",
                self.read,
                path.display()
            )),
        }
    }
}

/// A secret key file as read, before its layout is checked.
struct ReadKey<'a> {
    text: String,
    kind: &'a SecretKeyFile,
    /// Its permission bits.
    mode: u32,
    file: KeyFile,
    /// Warnings that it lies inside a tree the scan publishes from.
    in_tree: Vec<Warning>,
}

impl ReadKey<'_> {
    /// The key parsed from it, warned about when it is unencrypted and
    /// group or others can read it.
    fn found<K>(self, encrypted: bool, key: K) -> Found<K> {
        let mode = self.mode;
        let mut warnings = self.in_tree;
        if !encrypted && mode & 0o077 != 0 {
            warnings.push(Warning::file(
                &self.file.path,
                format_args!(
                    "an unencrypted {} that group or others can read (mode {mode:04o}): anyone \
                     who can read it can sign as you; chmod 600 it, or use an encrypted key ({} \
                     without -W)",
                    self.kind.name, self.kind.keygen
                ),
            ));
        }
        Found {
            key,
            warnings,
            file: Some(self.file),
        }
    }
}

/// A secret key file's text, permission bits and identity (of the
/// descriptor it was read through); refused inside the output directory,
/// which is published, and warned about inside the releases or images
/// directory, which the scan publishes from. A symbolic link is fine
/// (mounted secrets are often links); the checks are made on the file it
/// leads to.
fn read_secret_key<'a>(
    config: &Config,
    path: &Path,
    kind: &'a SecretKeyFile,
    named_at: Option<crate::error::LineCol>,
) -> Result<ReadKey<'a>> {
    let (bytes, meta) =
        fsutil::read_regular(path, true, fsutil::MAX_TEXT_FILE).map_err(|e| match e {
            Error::Io { path, source, .. } => kind.unreadable(config, &path, source, named_at),
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
    let scanned = [
        ("releases_dir", Some(&config.releases_dir)),
        ("images_dir", config.images_dir.as_ref()),
    ];
    let in_tree = scanned
        .into_iter()
        .filter_map(|(setting, dir)| {
            let dir = dir?;
            fsutil::canonicalize(dir)
                .is_ok_and(|d| real.starts_with(d))
                .then(|| {
                    Warning::file(
                        path,
                        format_args!(
                            "the {} lies inside {setting} {}, which `build` publishes \
                             images from: no file there that is the key is published, but \
                             whoever can write there can try; move the key out",
                            kind.name,
                            dir.display()
                        ),
                    )
                })
        })
        .collect();
    Ok(ReadKey {
        text,
        kind,
        mode: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        file: KeyFile {
            path: path.to_path_buf(),
            id: FileId::of(&meta),
        },
        in_tree,
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

/// Puts a minisign key pair on the PKCS#11 token the URI names (with the
/// module of its `module-path`, else `module`) and writes its public key
/// with mode 0644: a new key made on the token, or with `import` the
/// minisign secret key in that file (unlocked with `password`), so that
/// the public key stays the one consumers pinned. Refuses to overwrite the
/// public key unless `force`, and never replaces a key on the token.
pub fn token_keygen(
    uri: &pkcs11::Uri,
    module: Option<&Path>,
    public_key: &Path,
    force: bool,
    import: Option<&Path>,
    password: PasswordPrompt,
) -> Result<PublicKey> {
    keygen_targets_free(public_key, public_key, force)?;
    if let Some(dir) = public_key.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::create_dir_all(dir)?;
    }
    let public = match import {
        Some(path) => {
            let text = Zeroizing::new(fsutil::read_to_string(path)?);
            let key = SecretKey::from_file(path, &text, &mut || password(KeyKind::Minisign))?;
            pkcs11::import(uri, module, &mut || password(KeyKind::TokenPin), &key)?
        }
        None => pkcs11::generate(uri, module, &mut || password(KeyKind::TokenPin))?,
    };
    fsutil::write_new_file(
        public_key,
        public.to_file().as_bytes(),
        fsutil::PUBLISHED_FILE_MODE,
        force,
    )?;
    Ok(public)
}
