//! minisign-format keys and signatures on ed25519-dalek and BLAKE2b.
//!
//! Byte layouts (see docs/feed-format.md and minisign's own docs):
//! - public key: `"Ed" || key_id[8] || pk[32]`
//! - secret key: `"Ed" || kdf[2] || "B2" || salt[32] || ops[8] || mem[8] || key_id[8] || seed[32] || pk[32] || checksum[32]`
//! - signature: `"ED" || key_id[8] || Ed25519(BLAKE2b-512(file))`, then the
//!   trusted comment and `Ed25519(signature || trusted_comment)`.
//!
//! Ed25519 is deterministic, so the same key and data give the same bytes.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::{Blake2b256, Blake2b512, Digest};
use ed25519_dalek::{Signature as EdSignature, Signer, SigningKey, VerifyingKey};

use crate::error::{Error, Result};

const SECRET_KEY_LEN: usize = 158;
const PUBLIC_KEY_LEN: usize = 42;
const SIGNATURE_LEN: usize = 74;
const UNTRUSTED: &str = "untrusted comment: ";
const TRUSTED: &str = "trusted comment: ";
/// minisign's limit on a trusted comment.
const MAX_TRUSTED_COMMENT: usize = 8192;

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
            .map_err(|e| Error::other(format_args!("cannot get random bytes: {e}")))?;
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

    /// Parses an unencrypted minisign secret key file (`minisign -G -W`).
    pub fn from_file(path: &Path, text: &str) -> Result<Self> {
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
            .map_err(|e| {
                Error::at(
                    path,
                    pos(2),
                    format_args!("secret key is not valid base64: {e}"),
                )
            })?;
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
        match &bytes[2..4] {
            b"\0\0" => {}
            b"Sc" => {
                return Err(Error::file(
                    path,
                    "is encrypted with a password; this version reads only unencrypted keys \
                     (`minisign -G -W`, or `vmcast-gen keygen`)",
                ));
            }
            _ => return Err(Error::at(path, pos(2), "unknown key derivation algorithm")),
        }
        let key_id = KeyId(bytes[54..62].try_into().expect("8 bytes"));
        let seed: [u8; 32] = bytes[62..94].try_into().expect("32 bytes");
        let stored_pk = &bytes[94..126];
        let checksum = &bytes[126..158];
        let key = Self::from_seed(key_id, seed);
        if key.public.key.as_bytes() != stored_pk {
            return Err(Error::file(
                path,
                "is corrupt: its public half does not match its secret half",
            ));
        }
        // minisign writes an all-zero checksum for unencrypted keys.
        if checksum.iter().any(|&b| b != 0) && checksum != key.checksum() {
            return Err(Error::file(path, "is corrupt: checksum mismatch"));
        }
        Ok(key)
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

    /// The unencrypted secret key file.
    pub fn to_file(&self) -> String {
        let mut bytes = Vec::with_capacity(SECRET_KEY_LEN);
        bytes.extend_from_slice(b"Ed\0\0B2");
        bytes.extend_from_slice(&[0u8; 48]);
        bytes.extend_from_slice(&self.public.key_id.0);
        bytes.extend_from_slice(&self.signing.to_bytes());
        bytes.extend_from_slice(self.public.key.as_bytes());
        bytes.extend_from_slice(&self.checksum());
        format!("{UNTRUSTED}minisign secret key\n{}\n", B64.encode(bytes))
    }

    /// A prehashed (`ED`) minisign signature of `data`.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<Signature> {
        if trusted_comment.contains(['\r', '\n']) || trusted_comment.len() > MAX_TRUSTED_COMMENT {
            return Err(Error::other(
                "a trusted comment must be one line of at most 8192 bytes",
            ));
        }
        let signature = self.signing.sign(&Blake2b512::digest(data));
        let mut global_input = signature.to_bytes().to_vec();
        global_input.extend_from_slice(trusted_comment.as_bytes());
        let sig = Signature {
            algorithm: Algorithm::Prehashed,
            key_id: self.public.key_id,
            signature,
            trusted_comment: trusted_comment.to_owned(),
            global_signature: self.signing.sign(&global_input),
        };
        // Guard against a fault between signing and publishing.
        sig.verify(&self.public, data)
            .map_err(|e| Error::other(format_args!("a fresh signature does not verify: {e}")))?;
        Ok(sig)
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
        if self.key_id != key.key_id {
            return Err(VerifyError::WrongKey {
                expected: key.key_id,
                found: self.key_id,
            });
        }
        if self.algorithm == Algorithm::Legacy {
            return Err(VerifyError::Legacy);
        }
        key.key
            .verify_strict(&Blake2b512::digest(data), &self.signature)
            .map_err(|_| VerifyError::BadSignature)?;
        let mut global_input = self.signature.to_bytes().to_vec();
        global_input.extend_from_slice(self.trusted_comment.as_bytes());
        key.key
            .verify_strict(&global_input, &self.global_signature)
            .map_err(|_| VerifyError::BadTrustedComment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip() {
        let key = SecretKey::from_seed(KeyId([1, 2, 3, 4, 5, 6, 7, 8]), [7; 32]);
        let back = SecretKey::from_file(Path::new("k"), &key.to_file()).unwrap();
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
        let text = key.to_file();
        let truncated = &text[..text.len() - 10];
        let e = SecretKey::from_file(Path::new("k.key"), truncated).unwrap_err();
        assert!(e.to_string().starts_with("k.key:2:1: "), "{e}");
        assert!(SecretKey::from_file(Path::new("k"), "hello\n").is_err());
    }
}
