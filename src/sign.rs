//! minisign-format keys and signatures on ed25519-dalek and BLAKE2b.
//!
//! Byte layouts (see docs/feed-format.md and minisign's own docs):
//! - public key: `"Ed" || key_id[8] || pk[32]`
//! - secret key: `"Ed" || kdf[2] || "B2" || salt[32] || ops[8] || mem[8] || key_id[8] || seed[32] || pk[32] || checksum[32]`
//! - signature: `"ED" || key_id[8] || Ed25519(BLAKE2b-512(file))`, then the
//!   trusted comment and `Ed25519(signature || trusted_comment)`.
//!
//! Ed25519 is deterministic, so the same key and data give the same bytes.
//!
//! Both ed25519 signatures of a minisign signature go through a [`Signer`]:
//! the key in memory ([`SecretKey`]), or a key on a PKCS#11 token
//! (`pkcs11::TokenKey`) that never leaves it. The BLAKE2b-512 prehash is
//! computed here either way, so a token only ever signs pure ed25519.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::{Blake2b256, Blake2b512, Digest};
use ed25519_dalek::{Signature as EdSignature, Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const SECRET_KEY_LEN: usize = 158;
const PUBLIC_KEY_LEN: usize = 42;
const SIGNATURE_LEN: usize = 74;
const UNTRUSTED: &str = "untrusted comment: ";
const TRUSTED: &str = "trusted comment: ";
/// minisign's limit on a trusted comment.
const MAX_TRUSTED_COMMENT: usize = 8192;
/// The scrypt limits `minisign -G` writes: N = 2^20, r = 8, p = 1.
const SCRYPT_OPSLIMIT: u64 = 33_554_432;
const SCRYPT_MEMLIMIT: u64 = 1_073_741_824;

/// The 104 bytes XORed over `key_id || seed || pk || checksum`.
///
/// The limits map to scrypt's N, r and p as libsodium's `pickparams` does
/// for `crypto_pwhash_scryptsalsa208sha256`, which minisign uses.
fn key_stream(
    password: &str,
    salt: &[u8; 32],
    ops: u64,
    mem: u64,
) -> Result<Zeroizing<[u8; 104]>, String> {
    let ops = ops.max(32_768);
    let r: u64 = 8;
    let (log_n, p) = if ops < mem / 32 {
        (log2_half(ops / (r * 4)), 1)
    } else {
        let log_n = log2_half(mem / (r * 128));
        let maxrp = ((ops / 4) >> log_n).min(0x3fff_ffff);
        (log_n, (maxrp / r).max(1))
    };
    // Refuse work factors far beyond minisign's own (a hostile key file).
    if log_n > 22 || p > 16 {
        return Err(format!(
            "scrypt limits in the key file are out of range (N = 2^{log_n}, p = {p})"
        ));
    }
    let params = scrypt::Params::new(log_n, r as u32, p as u32)
        .map_err(|e| format!("invalid scrypt parameters: {e}"))?;
    let mut out = Zeroizing::new([0u8; 104]);
    scrypt::scrypt(password.as_bytes(), salt, &params, out.as_mut())
        .map_err(|e| format!("scrypt failed: {e}"))?;
    Ok(out)
}

/// The smallest n with 2^n > max_n / 2, as libsodium computes N.
fn log2_half(max_n: u64) -> u8 {
    (1..63).find(|&n| (1u64 << n) > max_n / 2).unwrap_or(63)
}

/// The 8 bytes that name a key pair.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    /// Upper-case hex of the bytes read as a little-endian u64, as minisign shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey {
    pub key_id: KeyId,
    pub key: VerifyingKey,
}

impl PublicKey {
    /// The base64 line of the `.pub` file, usable with `minisign -P`.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_LEN);
        bytes.extend_from_slice(b"Ed");
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(self.key.as_bytes());
        B64.encode(bytes)
    }

    /// The whole `.pub` file.
    pub fn to_file(&self) -> String {
        format!(
            "{UNTRUSTED}minisign public key {}\n{}\n",
            self.key_id,
            self.to_base64()
        )
    }

    /// Parses the base64 line of a public key.
    pub fn from_base64(line: &str) -> Result<Self, String> {
        let bytes = B64
            .decode(line.trim())
            .map_err(|e| format!("public key is not valid base64: {e}"))?;
        if bytes.len() != PUBLIC_KEY_LEN || &bytes[..2] != b"Ed" {
            return Err("not a minisign Ed25519 public key".into());
        }
        let key = VerifyingKey::from_bytes(bytes[10..].try_into().expect("32 bytes"))
            .map_err(|e| format!("invalid Ed25519 public key: {e}"))?;
        Ok(PublicKey {
            key_id: KeyId(bytes[2..10].try_into().expect("8 bytes")),
            key,
        })
    }

    /// Parses a `.pub` file's text.
    pub fn from_file(path: &Path, text: &str) -> Result<Self> {
        let mut lines = text.lines();
        let comment = lines.next().unwrap_or_default();
        if !comment.starts_with(UNTRUSTED) {
            return Err(Error::at(path, pos(1), "missing `untrusted comment:` line"));
        }
        Self::from_base64(lines.next().unwrap_or_default()).map_err(|m| Error::at(path, pos(2), m))
    }
}

fn pos(line: usize) -> crate::error::LineCol {
    crate::error::LineCol { line, column: 1 }
}

pub struct SecretKey {
    pub public: PublicKey,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public.key_id)
    }
}

impl SecretKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::fill(&mut seed)
            .and_then(|()| getrandom::fill(&mut id))
            .map_err(|e| Error::failed("cannot get random bytes", e))?;
        Ok(Self::from_seed(KeyId(id), seed))
    }

    pub fn from_seed(key_id: KeyId, seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        SecretKey {
            public: PublicKey {
                key_id,
                key: signing.verifying_key(),
            },
            signing,
        }
    }

    /// Parses a minisign secret key file, encrypted (`minisign -G`) or not
    /// (`minisign -G -W`). `password` is asked only for an encrypted key.
    pub fn from_file(
        path: &Path,
        text: &str,
        password: &mut dyn FnMut() -> Result<String>,
    ) -> Result<Self> {
        LockedKey::parse(path, text)?.unlock(password)
    }

    /// BLAKE2b-256 over `"Ed" || key_id || seed || pk`.
    fn checksum(&self) -> [u8; 32] {
        let mut h = Blake2b256::new();
        h.update(b"Ed");
        h.update(self.public.key_id.0);
        h.update(self.signing.to_bytes());
        h.update(self.public.key.as_bytes());
        h.finalize().into()
    }

    /// The secret key file: encrypted with scrypt as `minisign -G` does
    /// when a password is given, else unencrypted as `minisign -G -W` does.
    pub fn to_file(&self, password: Option<&str>) -> Result<String> {
        let mut secret = Zeroizing::new(Vec::with_capacity(104));
        secret.extend_from_slice(&self.public.key_id.0);
        secret.extend_from_slice(&self.signing.to_bytes());
        secret.extend_from_slice(self.public.key.as_bytes());
        secret.extend_from_slice(&self.checksum());
        let mut bytes = Vec::with_capacity(SECRET_KEY_LEN);
        let comment = match password {
            Some(password) => {
                let mut salt = [0u8; 32];
                getrandom::fill(&mut salt)
                    .map_err(|e| Error::failed("cannot get random bytes", e))?;
                let stream = key_stream(password, &salt, SCRYPT_OPSLIMIT, SCRYPT_MEMLIMIT)
                    .map_err(Error::other)?;
                for (b, k) in secret.iter_mut().zip(stream.iter()) {
                    *b ^= k;
                }
                bytes.extend_from_slice(b"EdScB2");
                bytes.extend_from_slice(&salt);
                bytes.extend_from_slice(&SCRYPT_OPSLIMIT.to_le_bytes());
                bytes.extend_from_slice(&SCRYPT_MEMLIMIT.to_le_bytes());
                "minisign encrypted secret key"
            }
            None => {
                bytes.extend_from_slice(b"Ed\0\0B2");
                bytes.extend_from_slice(&[0u8; 48]);
                "minisign secret key"
            }
        };
        bytes.extend_from_slice(&secret);
        Ok(format!("{UNTRUSTED}{comment}\n{}\n", B64.encode(bytes)))
    }

    /// The seed, for a PKCS#11 token to import.
    pub(crate) fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }
}

impl Signer for SecretKey {
    fn public(&self) -> &PublicKey {
        &self.public
    }

    fn sign_ed25519(&self, message: &[u8]) -> Result<EdSignature> {
        Ok(self.signing.sign(message))
    }
}

/// What makes the ed25519 signatures of a minisign key pair: [`SecretKey`]
/// in memory, or a key on a PKCS#11 token. Shared by the threads that sign
/// a build's files.
pub trait Signer: Send + Sync {
    /// The public half, with the key id that signatures carry.
    fn public(&self) -> &PublicKey;

    /// A pure Ed25519 signature of `message`.
    fn sign_ed25519(&self, message: &[u8]) -> Result<EdSignature>;

    /// A prehashed (`ED`) minisign signature of `data`: Ed25519 over its
    /// BLAKE2b-512, then over that signature and the trusted comment.
    /// Verified against [`Signer::public`] before it is returned.
    fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<Signature> {
        if trusted_comment.contains(['\r', '\n']) || trusted_comment.len() > MAX_TRUSTED_COMMENT {
            return Err(Error::other(
                "a trusted comment must be one line of at most 8192 bytes",
            ));
        }
        let signature = self.sign_ed25519(&Blake2b512::digest(data))?;
        let mut global_input = signature.to_bytes().to_vec();
        global_input.extend_from_slice(trusted_comment.as_bytes());
        let sig = Signature {
            algorithm: Algorithm::Prehashed,
            key_id: self.public().key_id,
            signature,
            trusted_comment: trusted_comment.to_owned(),
            global_signature: self.sign_ed25519(&global_input)?,
        };
        // Guard against a fault between signing and publishing, and
        // against a token whose key is not the public key it shows.
        sig.verify(self.public(), data)
            .map_err(|e| Error::other(format_args!("a fresh signature does not verify: {e}")))?;
        Ok(sig)
    }
}

/// A secret key file whose layout checked out, not yet decrypted: `check`
/// stops here, `build` goes on to [`LockedKey::unlock`].
pub struct LockedKey {
    path: std::path::PathBuf,
    /// The key file's bytes; once unlocked they hold the secret, so they
    /// are wiped when dropped.
    bytes: Zeroizing<Vec<u8>>,
    /// Whether unlocking needs a password.
    pub encrypted: bool,
}

impl LockedKey {
    /// Checks a minisign secret key file's layout without decrypting it.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut lines = text.lines();
        if !lines.next().unwrap_or_default().starts_with(UNTRUSTED) {
            return Err(Error::at(
                path,
                pos(1),
                "not a minisign secret key: missing `untrusted comment:` line",
            ));
        }
        let bytes = B64
            .decode(lines.next().unwrap_or_default().trim())
            .map(Zeroizing::new)
            .map_err(|e| {
                Error::at(
                    path,
                    pos(2),
                    format_args!("secret key is not valid base64: {e}"),
                )
            })?;
        if bytes.len() == PUBLIC_KEY_LEN && bytes.starts_with(b"Ed") {
            return Err(Error::at(
                path,
                pos(2),
                "this is a minisign public key (a .pub file), not the secret key: give the \
                 secret key that `vmcast-gen keygen` wrote beside it (vmcast.key), and publish \
                 this one",
            ));
        }
        if bytes.len() != SECRET_KEY_LEN {
            return Err(Error::at(
                path,
                pos(2),
                format_args!(
                    "secret key is {} bytes, expected {SECRET_KEY_LEN}: truncated or not a minisign key",
                    bytes.len()
                ),
            ));
        }
        if &bytes[0..2] != b"Ed" || &bytes[4..6] != b"B2" {
            return Err(Error::at(path, pos(2), "not a minisign Ed25519 secret key"));
        }
        let encrypted = match &bytes[2..4] {
            b"\0\0" => false,
            b"Sc" => true,
            _ => return Err(Error::at(path, pos(2), "unknown key derivation algorithm")),
        };
        Ok(LockedKey {
            path: path.to_path_buf(),
            bytes,
            encrypted,
        })
    }

    /// Where the key came from: its file, or the variable that held it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decrypts the key (asking `password` only when it is encrypted) and
    /// checks its checksum and public half.
    pub fn unlock(self, password: &mut dyn FnMut() -> Result<String>) -> Result<SecretKey> {
        let LockedKey {
            path,
            mut bytes,
            encrypted,
        } = self;
        let path = path.as_path();
        if encrypted {
            let salt: [u8; 32] = bytes[6..38].try_into().expect("32 bytes");
            let ops = u64::from_le_bytes(bytes[38..46].try_into().expect("8 bytes"));
            let mem = u64::from_le_bytes(bytes[46..54].try_into().expect("8 bytes"));
            let password = Zeroizing::new(password()?);
            let stream =
                key_stream(&password, &salt, ops, mem).map_err(|m| Error::file(path, m))?;
            for (b, k) in bytes[54..].iter_mut().zip(stream.iter()) {
                *b ^= k;
            }
        }
        let key_id = KeyId(bytes[54..62].try_into().expect("8 bytes"));
        let seed = Zeroizing::new(<[u8; 32]>::try_from(&bytes[62..94]).expect("32 bytes"));
        let stored_pk = &bytes[94..126];
        let checksum = &bytes[126..158];
        let key = SecretKey::from_seed(key_id, *seed);
        // minisign writes an all-zero checksum for unencrypted keys.
        let unchecked = !encrypted && checksum.iter().all(|&b| b == 0);
        if !unchecked && checksum != key.checksum() {
            return Err(Error::file(
                path,
                if encrypted {
                    "wrong password (the decrypted key's checksum does not match)"
                } else {
                    "is corrupt: checksum mismatch"
                },
            ));
        }
        if key.public.key.as_bytes() != stored_pk {
            return Err(Error::file(
                path,
                "is corrupt: its public half does not match its secret half",
            ));
        }
        Ok(key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `ED`: Ed25519 over BLAKE2b-512 of the data.
    Prehashed,
    /// `Ed`: Ed25519 over the data itself; verified by nobody here.
    Legacy,
}

/// A minisign signature file.
#[derive(Debug, Clone)]
pub struct Signature {
    pub algorithm: Algorithm,
    pub key_id: KeyId,
    pub signature: EdSignature,
    pub trusted_comment: String,
    pub global_signature: EdSignature,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("legacy (non-prehashed `Ed`) signature; only prehashed `ED` signatures are accepted")]
    Legacy,
    #[error("signed by key {found}, expected key {expected}")]
    WrongKey { expected: KeyId, found: KeyId },
    #[error("signature does not match the data")]
    BadSignature,
    #[error("trusted comment signature does not match")]
    BadTrustedComment,
}

impl Signature {
    pub fn to_file(&self) -> String {
        let mut sig = Vec::with_capacity(SIGNATURE_LEN);
        sig.extend_from_slice(match self.algorithm {
            Algorithm::Prehashed => b"ED",
            Algorithm::Legacy => b"Ed",
        });
        sig.extend_from_slice(&self.key_id.0);
        sig.extend_from_slice(&self.signature.to_bytes());
        format!(
            "{UNTRUSTED}signature from vmcast-gen secret key\n{}\n{TRUSTED}{}\n{}\n",
            B64.encode(sig),
            self.trusted_comment,
            B64.encode(self.global_signature.to_bytes())
        )
    }

    pub fn from_file(path: &Path, text: &str) -> Result<Self> {
        let lines: Vec<&str> = text.lines().collect();
        let line = |i: usize| lines.get(i).copied().unwrap_or_default();
        if !line(0).starts_with(UNTRUSTED) {
            return Err(Error::at(path, pos(1), "missing `untrusted comment:` line"));
        }
        let sig = B64
            .decode(line(1).trim())
            .map_err(|e| Error::at(path, pos(2), format_args!("invalid base64: {e}")))?;
        if sig.len() != SIGNATURE_LEN {
            return Err(Error::at(path, pos(2), "not a minisign signature"));
        }
        let algorithm = match &sig[..2] {
            b"ED" => Algorithm::Prehashed,
            b"Ed" => Algorithm::Legacy,
            _ => return Err(Error::at(path, pos(2), "unknown signature algorithm")),
        };
        let Some(trusted_comment) = line(2).strip_prefix(TRUSTED) else {
            return Err(Error::at(path, pos(3), "missing `trusted comment:` line"));
        };
        let global = B64
            .decode(line(3).trim())
            .map_err(|e| Error::at(path, pos(4), format_args!("invalid base64: {e}")))?;
        let global: [u8; 64] = global
            .try_into()
            .map_err(|_| Error::at(path, pos(4), "global signature is not 64 bytes"))?;
        Ok(Signature {
            algorithm,
            key_id: KeyId(sig[2..10].try_into().expect("8 bytes")),
            signature: EdSignature::from_bytes(sig[10..].try_into().expect("64 bytes")),
            trusted_comment: trusted_comment.to_owned(),
            global_signature: EdSignature::from_bytes(&global),
        })
    }

    /// Checks this signature of `data` as `minisign -V -H` does.
    pub fn verify(&self, key: &PublicKey, data: &[u8]) -> Result<(), VerifyError> {
        self.verify_comment(key)?;
        self.verify_data(key, data)
    }

    /// Checks the key, the algorithm and the trusted comment's signature,
    /// after which the trusted comment can be believed.
    pub fn verify_comment(&self, key: &PublicKey) -> Result<(), VerifyError> {
        if self.key_id != key.key_id {
            return Err(VerifyError::WrongKey {
                expected: key.key_id,
                found: self.key_id,
            });
        }
        if self.algorithm == Algorithm::Legacy {
            return Err(VerifyError::Legacy);
        }
        let mut global_input = self.signature.to_bytes().to_vec();
        global_input.extend_from_slice(self.trusted_comment.as_bytes());
        key.key
            .verify_strict(&global_input, &self.global_signature)
            .map_err(|_| VerifyError::BadTrustedComment)
    }

    /// Checks the signature of the data itself (prehashed with BLAKE2b-512).
    pub fn verify_data(&self, key: &PublicKey, data: &[u8]) -> Result<(), VerifyError> {
        key.key
            .verify_strict(&Blake2b512::digest(data), &self.signature)
            .map_err(|_| VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_password() -> Result<String> {
        panic!("an unencrypted key needs no password")
    }

    #[test]
    fn key_files_round_trip() {
        let key = SecretKey::from_seed(KeyId([1, 2, 3, 4, 5, 6, 7, 8]), [7; 32]);
        let back = SecretKey::from_file(
            Path::new("k"),
            &key.to_file(None).unwrap(),
            &mut no_password,
        )
        .unwrap();
        assert_eq!(back.public, key.public);
        let public = PublicKey::from_file(Path::new("p"), &key.public.to_file()).unwrap();
        assert_eq!(public, key.public);
        assert_eq!(key.public.key_id.to_string(), "0807060504030201");
    }

    #[test]
    fn signatures_verify_and_detect_tampering() {
        let key = SecretKey::from_seed(KeyId([9; 8]), [3; 32]);
        let sig = key.sign(b"feed", "timestamp:1\tfile:feed.xml").unwrap();
        let parsed = Signature::from_file(Path::new("s"), &sig.to_file()).unwrap();
        assert_eq!(parsed.verify(&key.public, b"feed"), Ok(()));
        assert_eq!(
            parsed.verify(&key.public, b"feeD"),
            Err(VerifyError::BadSignature)
        );
        let mut forged = parsed.clone();
        forged.trusted_comment.push('x');
        assert_eq!(
            forged.verify(&key.public, b"feed"),
            Err(VerifyError::BadTrustedComment)
        );
        let other = SecretKey::from_seed(KeyId([8; 8]), [3; 32]);
        assert!(matches!(
            parsed.verify(&other.public, b"feed"),
            Err(VerifyError::WrongKey { .. })
        ));
    }

    #[test]
    fn corrupt_keys_are_refused() {
        let key = SecretKey::from_seed(KeyId([1; 8]), [2; 32]);
        let text = key.to_file(None).unwrap();
        let truncated = &text[..text.len() - 10];
        let e = SecretKey::from_file(Path::new("k.key"), truncated, &mut no_password).unwrap_err();
        assert!(e.to_string().starts_with("k.key:2:1: "), "{e}");
        assert!(SecretKey::from_file(Path::new("k"), "hello\n", &mut no_password).is_err());
    }
}
