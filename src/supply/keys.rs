//! The builders' public keys that provenance signatures are checked
//! against: ed25519 or ECDSA P-256, as PEM SubjectPublicKeyInfo
//! (`-----BEGIN PUBLIC KEY-----`, what `openssl pkey -pubout` writes).
//!
//! A key's id is the SHA-256 of its SubjectPublicKeyInfo DER, in lower-case
//! hex: it depends on the key alone, so a builder can compute it from the
//! PEM file with `openssl pkey -pubin -outform DER | sha256sum`.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::Sha256;

#[derive(Debug, Clone)]
enum Verifier {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// One listed builder key.
#[derive(Debug, Clone)]
pub struct ProvenanceKey {
    pub path: PathBuf,
    /// SHA-256 of the SubjectPublicKeyInfo DER, hex.
    pub id: String,
    verifier: Verifier,
}

impl ProvenanceKey {
    /// Parses a PEM public key read from `path`.
    pub fn parse(path: &Path, pem: &str) -> Result<ProvenanceKey> {
        let (verifier, der) = if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            let der = k.to_public_key_der().map(|d| d.into_vec());
            (Verifier::Ed25519(k), der)
        } else if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            let der = k.to_public_key_der().map(|d| d.into_vec());
            (Verifier::P256(k), der)
        } else {
            return Err(Error::file(
                path,
                "not an ed25519 or ECDSA P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`, \
                 as `openssl pkey -pubout` writes)",
            ));
        };
        let der = der.map_err(|e| Error::file(path, format_args!("cannot encode the key: {e}")))?;
        Ok(ProvenanceKey {
            path: path.to_path_buf(),
            id: Sha256::of(&der).to_hex(),
            verifier,
        })
    }

    /// Whether `sig` is this key's signature of `message`. An ECDSA
    /// signature may be DER (as most signers write it) or the fixed 64
    /// bytes r‖s.
    pub fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match &self.verifier {
            Verifier::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(message, &s).is_ok()),
            Verifier::P256(k) => p256::ecdsa::Signature::from_der(sig)
                .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
                .is_ok_and(|s| k.verify(message, &s).is_ok()),
        }
    }
}

/// Reads the keys `provenance_keys` lists; two files holding one key are
/// refused, since one of them is a mistake.
pub fn load(paths: &[PathBuf]) -> Result<Vec<ProvenanceKey>> {
    let mut keys: Vec<ProvenanceKey> = Vec::with_capacity(paths.len());
    for path in paths {
        let key = ProvenanceKey::parse(path, &fsutil::read_to_string(path)?)?;
        if let Some(first) = keys.iter().find(|k| k.id == key.id) {
            return Err(Error::file(
                path,
                format_args!(
                    "the same key as {} (key id {}); list each builder key once in \
                     provenance_keys",
                    first.path.display(),
                    key.id
                ),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}
