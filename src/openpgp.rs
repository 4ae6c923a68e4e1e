//! OpenPGP cleartext (RFC 9580 §7) and detached signatures, for the
//! clients that check nothing else: virt-builder runs `gpg --verify` on its
//! `index.asc`, simplestreams runs `gpgv --keyring K` on its `.sjson`
//! files, systemd-pull and systemd-sysupdate check each directory's
//! `SHA256SUMS.gpg`. Built on rPGP (the `pgp` crate; see docs/trust.md for
//! why).
//!
//! `build` loads the key once ([`LockedKey`], then [`Signer`]); whatever it
//! writes for OpenPGP clients goes through [`Signer::clearsign`] with the
//! build time.
//!
//! Keys made here are OpenPGP v4 with an EdDSA (ed25519, algorithm 22)
//! primary key: the kind GnuPG 2.2 (Debian 12) reads, and the one whose
//! signatures are deterministic. A v4 signature has no salt and ed25519
//! signs without randomness, so the same key, text and signature time give
//! the same bytes; v6 signatures carry a random salt, and GnuPG 2.2 reads no
//! v6 key. Keys exported by gpg work too when their primary key may sign.

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgp::armor::Dearmor;
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, KeyType,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, KeyVersion, Password, Timestamp};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The clearsigned SHA256SUMS, at the site's root.
pub const MANIFEST_ASC: &str = "SHA256SUMS.asc";
/// The armored public key that verifies it, at the site's root.
pub const PUBLIC_KEY: &str = "openpgp.asc";

const SECRET_BLOCK: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";
const PUBLIC_BLOCK: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

/// An OpenPGP secret key file whose packets parsed and whose primary key
/// may sign, not yet decrypted: `check` stops here, `build` goes on to
/// [`LockedKey::unlock`].
pub struct LockedKey {
    path: PathBuf,
    key: SignedSecretKey,
    /// Whether unlocking needs a password.
    pub encrypted: bool,
}

impl LockedKey {
    /// Reads an ASCII-armored transferable secret key (RFC 9580 §10.2).
    /// `path` names where the text came from, for errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        if !text.contains(SECRET_BLOCK) {
            return Err(Error::file(
                path,
                if text.contains(PUBLIC_BLOCK) {
                    "is an OpenPGP public key, not a secret key: give the secret key (as written \
                     by `vmcast-gen keygen --openpgp` or `gpg --export-secret-keys --armor`)"
                } else {
                    "is not an ASCII-armored OpenPGP secret key (no `-----BEGIN PGP PRIVATE KEY \
                     BLOCK-----` line)"
                },
            ));
        }
        let mut packets = Zeroizing::new(Vec::new());
        Dearmor::new(text.as_bytes())
            .read_to_end(&mut packets)
            .map_err(|_| {
                Error::file(
                    path,
                    "is not a readable OpenPGP secret key: its ASCII armor is damaged (the text \
                     between the BEGIN and END lines is not the base64 of OpenPGP packets)",
                )
            })?;
        let key = SignedSecretKey::from_bytes(packets.as_slice()).map_err(|e| {
            Error::file(
                path,
                format_args!("is not a readable OpenPGP secret key: {e}"),
            )
        })?;
        key.verify_bindings().map_err(|e| {
            Error::file(
                path,
                format_args!("the OpenPGP key's self-signatures do not verify: {e}"),
            )
        })?;
        let may_sign = key
            .details
            .users
            .iter()
            .flat_map(|u| &u.signatures)
            .chain(&key.details.direct_signatures)
            .any(|s| s.key_flags().sign());
        if !may_sign {
            return Err(Error::file(
                path,
                "the OpenPGP primary key is not marked for signing (no `S` key flag); make one \
                 with `vmcast-gen keygen --openpgp`",
            ));
        }
        let encrypted = key.primary_key.secret_params().is_encrypted();
        Ok(LockedKey {
            path: path.to_path_buf(),
            key,
            encrypted,
        })
    }

    /// Where the key came from: its file, or the variable that held it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decrypts the primary key, asking `password` only when it is
    /// encrypted.
    pub fn unlock(self, password: &mut dyn FnMut() -> Result<String>) -> Result<Signer> {
        let LockedKey {
            path,
            mut key,
            encrypted,
        } = self;
        if encrypted {
            let password = Zeroizing::new(password()?);
            key.primary_key
                .remove_password(&Password::from(password.as_str()))
                .map_err(|_| {
                    Error::file(
                        &path,
                        "wrong password (cannot decrypt the OpenPGP secret key)",
                    )
                })?;
        }
        Ok(Signer { key })
    }
}

/// An unlocked OpenPGP secret key.
#[derive(Clone)]
pub struct Signer {
    key: SignedSecretKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.fingerprint())
    }
}

impl Signer {
    /// A new v4 ed25519 key that may sign and certify, with one user id.
    pub fn generate(user_id: &str, created: DateTime<Utc>) -> Result<Self> {
        let params = SecretKeyParamsBuilder::default()
            .version(KeyVersion::V4)
            .key_type(KeyType::Ed25519Legacy)
            .can_sign(true)
            .can_certify(true)
            .created_at(timestamp(created)?)
            .primary_user_id(user_id.to_owned())
            .build()
            .map_err(|e| Error::failed("cannot make an OpenPGP key", e))?;
        let key = params
            .generate(rand_core::OsRng)
            .map_err(|e| Error::failed("cannot make an OpenPGP key", e))?;
        Ok(Signer { key })
    }

    /// The primary key's fingerprint, as upper-case hex (as `gpg` shows it).
    pub fn fingerprint(&self) -> String {
        format!("{:X}", self.key.primary_key.fingerprint())
    }

    /// The public key (certificate), ASCII-armored, for publishing.
    pub fn public_key(&self) -> Result<String> {
        self.key
            .to_public_key()
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| Error::failed("cannot write the OpenPGP public key", e))
    }

    /// The secret key file: ASCII-armored, its key material encrypted with
    /// `password` (iterated and salted S2K, AES) when one is given.
    pub fn to_file(&self, password: Option<&str>) -> Result<String> {
        let mut key = self.key.clone();
        if let Some(password) = password {
            key.primary_key
                .set_password(rand_core::OsRng, &Password::from(password))
                .map_err(|e| Error::failed("cannot encrypt the OpenPGP secret key", e))?;
        }
        key.to_armored_string(ArmorOptions::default())
            .map_err(|e| Error::failed("cannot write the OpenPGP secret key", e))
    }

    /// `text` as an OpenPGP cleartext-signed message, laid out as
    /// `gpg --clearsign` lays it out, with a SHA-512 text signature made at
    /// `time` (the build time), or when the key was made if that is later:
    /// GnuPG refuses a signature older than its key ("Time conflict").
    /// Deterministic: the same key, text and time give the same bytes.
    /// Lines are signed as RFC 9580 §7.2 hashes them (CRLF line ends,
    /// trailing spaces and tabs dropped, the last line end not signed), so
    /// `gpg --verify` and `gpgv` agree, and `gpg --decrypt` gives `text`
    /// back. A text holding a carriage return is refused, since its lines
    /// would be ambiguous.
    pub fn clearsign(&self, text: &str, time: DateTime<Utc>) -> Result<String> {
        if text.contains('\r') {
            return Err(Error::other(
                "cannot clearsign a text that holds a carriage return",
            ));
        }
        let key = &self.key.primary_key;
        let config = self.config(SignatureType::Text, time)?;
        // The writer ends the text with a line end of its own.
        let text = text.strip_suffix('\n').unwrap_or(text);
        let signed = signed_form(text);
        let message = CleartextSignedMessage::new_many(text, |_| {
            Ok(vec![config.sign(
                key,
                &Password::empty(),
                signed.as_bytes(),
            )?])
        })
        .map_err(failed)?;
        // Guard against a fault between signing and publishing.
        message
            .verify(&self.key.to_public_key())
            .map_err(|e| Error::failed("a fresh OpenPGP signature does not verify", e))?;
        message
            .to_armored_string(ArmorOptions::default())
            .map_err(failed)
    }

    /// A detached binary signature of `data` (`gpg --detach-sign`), made
    /// at `time` as [`Signer::clearsign`] makes its signatures, and as
    /// deterministic: for `SHA256SUMS.gpg`, which systemd-pull and
    /// systemd-sysupdate check with `gpg --verify`.
    pub fn detach_sign(&self, data: &[u8], time: DateTime<Utc>) -> Result<Vec<u8>> {
        let config = self.config(SignatureType::Binary, time)?;
        let signature = config
            .sign(&self.key.primary_key, &Password::empty(), data)
            .map_err(failed)?;
        let signature = DetachedSignature::new(signature);
        // Guard against a fault between signing and publishing.
        signature
            .verify(&self.key.to_public_key(), data)
            .map_err(|e| Error::failed("a fresh OpenPGP signature does not verify", e))?;
        signature.to_bytes().map_err(failed)
    }

    /// The public key as one binary transferable public key (RFC 9580
    /// §10.1), which is also a keyring to GnuPG: the form systemd reads from
    /// `/etc/systemd/import-pubring.gpg`.
    pub fn public_keyring(&self) -> Result<Vec<u8>> {
        self.key
            .to_public_key()
            .to_bytes()
            .map_err(|e| Error::failed("cannot write the OpenPGP public key", e))
    }

    /// The settings of every signature made here: v4, SHA-512, made at
    /// `time` or when the key was made if that is later (GnuPG refuses a
    /// signature older than its key: "Time conflict"), naming the key by
    /// fingerprint (hashed) and key id.
    fn config(&self, kind: SignatureType, time: DateTime<Utc>) -> Result<SignatureConfig> {
        let key = &self.key.primary_key;
        let created = timestamp(time)?.max(key.created_at());
        let mut config = SignatureConfig::v4(kind, key.algorithm(), HASH);
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(created)).map_err(failed)?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))
                .map_err(failed)?,
        ];
        config.unhashed_subpackets = vec![
            Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id())).map_err(failed)?,
        ];
        Ok(config)
    }
}

fn failed(e: pgp::errors::Error) -> Error {
    Error::failed("cannot make an OpenPGP signature", e)
}

/// The hash of every signature made here.
const HASH: HashAlgorithm = HashAlgorithm::Sha512;

/// An OpenPGP timestamp: seconds since 1970 in 32 bits.
fn timestamp(time: DateTime<Utc>) -> Result<Timestamp> {
    u32::try_from(time.timestamp())
        .map(Timestamp::from_secs)
        .map_err(|_| {
            Error::other(format_args!(
                "{time} does not fit an OpenPGP timestamp (1970 to 2106); check SOURCE_DATE_EPOCH"
            ))
        })
}

/// The bytes a cleartext signature covers (RFC 9580 §7.2): each line
/// without its trailing spaces and tabs, lines joined by CRLF.
fn signed_form(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    for line in text.split_inclusive('\n') {
        let (content, newline) = match line.strip_suffix('\n') {
            Some(content) => (content, true),
            None => (line, false),
        };
        out.push_str(content.trim_end_matches([' ', '\t']));
        if newline {
            out.push_str("\r\n");
        }
    }
    out
}

/// A cleartext-signed message that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signing key's fingerprint, upper-case hex.
    pub fingerprint: String,
    /// The signed text as `gpg --decrypt` gives it: `\n` line ends, the
    /// last line ended too.
    pub text: String,
}

/// Checks the cleartext-signed message `name` against an armored public
/// key, both as published. The error names the file and says what is
/// wrong.
pub fn verify(
    public_key: &str,
    name: &str,
    message: &str,
) -> std::result::Result<Verified, String> {
    let key = read_public_key(public_key)?;
    let (message, _) = CleartextSignedMessage::from_string(message)
        .map_err(|e| format!("{name} is not an OpenPGP cleartext-signed message: {e}"))?;
    let fingerprint = format!("{:X}", key.primary_key.fingerprint());
    message.verify(&key).map_err(|_| {
        format!("{name}: no signature by OpenPGP key {fingerprint} matches its text")
    })?;
    Ok(Verified {
        fingerprint,
        text: message.signed_text().replace("\r\n", "\n") + "\n",
    })
}

/// The armored public key the site names, its self-signatures checked.
fn read_public_key(public_key: &str) -> std::result::Result<SignedPublicKey, String> {
    let (key, _) = SignedPublicKey::from_string(public_key)
        .map_err(|e| format!("{PUBLIC_KEY} is not an OpenPGP public key: {e}"))?;
    key.verify_bindings()
        .map_err(|e| format!("{PUBLIC_KEY}: the key's self-signatures do not verify: {e}"))?;
    Ok(key)
}

/// The fingerprint of the armored public key the site names.
pub fn fingerprint(public_key: &str) -> std::result::Result<String, String> {
    read_public_key(public_key).map(|key| format!("{:X}", key.primary_key.fingerprint()))
}

/// Checks the detached binary signature `name` of `data` against the
/// armored public key the site names. Returns the key's fingerprint.
pub fn verify_detached(
    public_key: &str,
    name: &str,
    data: &[u8],
    signature: &[u8],
) -> std::result::Result<String, String> {
    let key = read_public_key(public_key)?;
    let signature = DetachedSignature::from_bytes(signature)
        .map_err(|e| format!("{name} is not an OpenPGP signature: {e}"))?;
    let fingerprint = format!("{:X}", key.primary_key.fingerprint());
    signature
        .verify(&key, data)
        .map_err(|_| format!("{name}: not a signature of its file by OpenPGP key {fingerprint}"))?;
    Ok(fingerprint)
}

/// The fingerprint of the one key in a binary keyring: `import-pubring.gpg`
/// must hold the key `openpgp.asc` holds, and only that one.
pub fn keyring_fingerprint(name: &str, keyring: &[u8]) -> std::result::Result<String, String> {
    let mut keys = SignedPublicKey::from_bytes_many(keyring)
        .map_err(|e| format!("{name} is not an OpenPGP keyring: {e}"))?;
    let key = match (keys.next(), keys.next()) {
        (Some(Ok(key)), None) => key,
        (Some(Err(e)), _) => return Err(format!("{name} is not an OpenPGP keyring: {e}")),
        (None, _) => return Err(format!("{name} holds no OpenPGP key")),
        (Some(_), Some(_)) => return Err(format!("{name} holds more than one OpenPGP key")),
    };
    key.verify_bindings()
        .map_err(|e| format!("{name}: the key's self-signatures do not verify: {e}"))?;
    Ok(format!("{:X}", key.primary_key.fingerprint()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn no_password() -> Result<String> {
        panic!("an unencrypted key needs no password")
    }

    #[test]
    fn signed_form_follows_rfc_9580() {
        assert_eq!(signed_form("a \t\nb\n"), "a\r\nb\r\n");
        assert_eq!(signed_form("a\n\nb"), "a\r\n\r\nb");
        assert_eq!(signed_form(""), "");
    }

    #[test]
    fn clearsigned_text_verifies_and_is_deterministic() {
        let signer = Signer::generate("test", at(1_000)).unwrap();
        let text = "- dash\nplain  \nlast\n";
        let signed = signer.clearsign(text, at(2_000)).unwrap();
        assert_eq!(signed, signer.clearsign(text, at(2_000)).unwrap());
        assert_ne!(signed, signer.clearsign(text, at(2_001)).unwrap());
        // Never older than the key, which GnuPG would refuse.
        assert_eq!(
            signer.clearsign(text, at(500)).unwrap(),
            signer.clearsign(text, at(1_000)).unwrap()
        );
        let public = signer.public_key().unwrap();
        let verified = verify(&public, "data.asc", &signed).unwrap();
        assert_eq!(verified.text, "- dash\nplain\nlast\n");
        assert_eq!(verified.fingerprint, signer.fingerprint());
        assert!(signed.contains("\n- - dash\nplain  \nlast\n-----BEGIN PGP SIGNATURE-----\n"));
        let other = Signer::generate("other", at(1_000)).unwrap();
        assert!(verify(&other.public_key().unwrap(), "data.asc", &signed).is_err());
        let tampered = signed.replace("last", "lost");
        assert!(verify(&public, "data.asc", &tampered).is_err());
    }

    #[test]
    fn key_files_round_trip_with_and_without_a_password() {
        let signer = Signer::generate("test", at(1_000)).unwrap();
        let plain = signer.to_file(None).unwrap();
        let locked = LockedKey::parse(Path::new("k.asc"), &plain).unwrap();
        assert!(!locked.encrypted);
        let back = locked.unlock(&mut no_password).unwrap();
        assert_eq!(back.fingerprint(), signer.fingerprint());

        let encrypted = signer.to_file(Some("pw")).unwrap();
        let locked = LockedKey::parse(Path::new("k.asc"), &encrypted).unwrap();
        assert!(locked.encrypted);
        let e = locked.unlock(&mut || Ok("nope".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.asc: wrong password (cannot decrypt the OpenPGP secret key)"
        );
        let locked = LockedKey::parse(Path::new("k.asc"), &encrypted).unwrap();
        let back = locked.unlock(&mut || Ok("pw".into())).unwrap();
        assert_eq!(
            back.clearsign("x\n", at(5)).unwrap(),
            signer.clearsign("x\n", at(5)).unwrap()
        );
    }

    #[test]
    fn detached_signatures_verify_and_are_deterministic() {
        let signer = Signer::generate("test", at(1_000)).unwrap();
        let data = b"0000  a.raw\n";
        let sig = signer.detach_sign(data, at(2_000)).unwrap();
        assert_eq!(sig, signer.detach_sign(data, at(2_000)).unwrap());
        let public = signer.public_key().unwrap();
        let name = "images/a/SHA256SUMS.gpg";
        assert_eq!(
            verify_detached(&public, name, data, &sig).unwrap(),
            signer.fingerprint()
        );
        assert!(verify_detached(&public, name, b"0001  a.raw\n", &sig).is_err());
        let other = Signer::generate("other", at(1_000)).unwrap();
        let e = verify_detached(&other.public_key().unwrap(), name, data, &sig).unwrap_err();
        assert!(
            e.starts_with("images/a/SHA256SUMS.gpg: not a signature of its file by OpenPGP key"),
            "{e}"
        );
        let keyring = signer.public_keyring().unwrap();
        assert_eq!(
            keyring_fingerprint("import-pubring.gpg", &keyring).unwrap(),
            signer.fingerprint()
        );
        let two = [keyring.clone(), other.public_keyring().unwrap()].concat();
        assert_eq!(
            keyring_fingerprint("k", &two).unwrap_err(),
            "k holds more than one OpenPGP key"
        );
    }
}
