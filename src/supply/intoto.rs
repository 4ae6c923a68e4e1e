//! in-toto attestations: a bundle (JSON Lines) of DSSE envelopes or bare
//! in-toto Statements, or one such document in a `.json` file.
//!
//! A DSSE envelope's signatures are over its pre-authentication encoding
//! (PAE, DSSE v1): `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`,
//! lengths in ASCII decimal. Its `keyid` is an unauthenticated hint: every
//! listed key is tried.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Signing;
use super::json::Doc;
use super::keys::ProvenanceKey;
use crate::error::{Error, Result};
use crate::model::Sha256;

/// The payload type of an in-toto attestation in DSSE.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The Statement types accepted: v1 and the older v0.1 still written by
/// many builders.
const STATEMENT_TYPES: [&str; 2] = [
    "https://in-toto.io/Statement/v1",
    "https://in-toto.io/Statement/v0.1",
];

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "payloadType")]
    payload_type: Option<IgnoredAny>,
    #[serde(rename = "_type")]
    statement_type: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload_type: String,
    payload: String,
    signatures: Vec<RawSignature>,
}

#[derive(Deserialize)]
struct RawSignature {
    #[serde(default)]
    keyid: String,
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<RawSubject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct RawSubject {
    #[serde(default)]
    name: String,
    digest: BTreeMap<String, String>,
}

/// One statement of a bundle: what it is about and how it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Each subject's name and SHA-256, when it gives one.
    pub subjects: Vec<(String, Option<Sha256>)>,
    pub signing: Signing,
}

impl Statement {
    pub fn names(&self, digest: &Sha256) -> bool {
        self.subjects
            .iter()
            .any(|(_, d)| d.as_ref() == Some(digest))
    }
}

/// The DSSE v1 pre-authentication encoding of a payload.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// DSSE allows standard or URL-safe base64, with or without padding.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [
        GeneralPurpose::new(&base64::alphabet::STANDARD, config),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config),
    ]
    .iter()
    .find_map(|e| e.decode(text).ok())
}

/// Reads an attestation file: a bundle when `lines`, else one document.
/// Signed envelopes are verified against `keys`; with no keys they are
/// [`Signing::Unverified`].
pub(super) fn read(doc: &Doc, lines: bool, keys: &[ProvenanceKey]) -> Result<Vec<Statement>> {
    let mut statements = Vec::new();
    if lines {
        for (i, line) in doc.text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let line_doc = Doc {
                path: doc.path,
                text: line,
                first_line: doc.first_line + i,
            };
            statements.push(read_one(&line_doc, keys)?);
        }
    } else {
        statements.push(read_one(doc, keys)?);
    }
    if statements.is_empty() {
        return Err(Error::file(
            doc.path,
            "holds no attestation: expected DSSE envelopes or in-toto Statements, one per line",
        ));
    }
    Ok(statements)
}

fn read_one(doc: &Doc, keys: &[ProvenanceKey]) -> Result<Statement> {
    let what = "a DSSE envelope or an in-toto Statement";
    doc.object(what)?;
    let probe: Probe = doc.parse(what)?;
    match (probe.payload_type, probe.statement_type) {
        (Some(_), _) => read_envelope(doc, keys),
        (None, Some(_)) => statement(doc, Signing::Unsigned),
        (None, None) => Err(doc.error_at_start(format_args!(
            "not {what}: no `payloadType` (DSSE) and no `_type` (in-toto Statement)"
        ))),
    }
}

fn read_envelope(doc: &Doc, keys: &[ProvenanceKey]) -> Result<Statement> {
    let env: RawEnvelope = doc.parse("a DSSE envelope")?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(doc.error_at_key(
            "payloadType",
            format_args!(
                "the envelope's payloadType is {:?}, not {PAYLOAD_TYPE:?}: not an in-toto \
                 attestation",
                env.payload_type
            ),
        ));
    }
    let Some(payload) = base64_decode(&env.payload) else {
        return Err(doc.error_at_key("payload", "the envelope's payload is not base64"));
    };
    let Ok(payload_text) = std::str::from_utf8(&payload) else {
        return Err(doc.error_at_key("payload", "the envelope's payload is not UTF-8 JSON"));
    };
    let signing = check_signatures(doc, &env, &payload, keys)?;
    // The payload is its own document: positions in it mean little, so its
    // errors are reported at the envelope's payload.
    let inner = Doc {
        path: doc.path,
        text: payload_text,
        first_line: 1,
    };
    statement(&inner, signing).map_err(|e| {
        let message = match e {
            Error::At { message, .. } | Error::File { message, .. } => message,
            other => other.to_string(),
        };
        doc.error_at_key("payload", format_args!("the envelope's payload: {message}"))
    })
}

fn check_signatures(
    doc: &Doc,
    env: &RawEnvelope,
    payload: &[u8],
    keys: &[ProvenanceKey],
) -> Result<Signing> {
    if env.signatures.is_empty() {
        return Ok(Signing::Unsigned);
    }
    if keys.is_empty() {
        return Ok(Signing::Unverified);
    }
    let message = pae(&env.payload_type, payload);
    let mut verified = Vec::new();
    for sig in &env.signatures {
        let Some(bytes) = base64_decode(&sig.sig) else {
            return Err(doc.error_at_key("sig", "a signature that is not base64"));
        };
        if let Some(key) = keys.iter().find(|k| k.verifies(&message, &bytes)) {
            verified.push(key.id.clone());
        }
    }
    if !verified.is_empty() {
        verified.sort();
        verified.dedup();
        return Ok(Signing::Verified(verified));
    }
    let hints: Vec<&str> = env
        .signatures
        .iter()
        .map(|s| s.keyid.as_str())
        .filter(|k| !k.is_empty())
        .collect();
    let listed: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let detail = if let Some(hint) = hints.iter().find(|h| listed.iter().any(|l| l == *h)) {
        format!(
            "its signature by key id {hint}, a listed key, does not match the envelope: it \
             was altered after signing"
        )
    } else {
        let by = match hints.as_slice() {
            [] => "a key the envelope does not name (no keyid)".to_owned(),
            ids => format!("key id {}", ids.join(", ")),
        };
        format!(
            "it is signed by {by}, not by a key in provenance_keys (key id {}); add the \
             builder's public key to provenance_keys in vmcast.toml if you trust it",
            listed.join(", ")
        )
    };
    Err(doc.error_at_key("signatures", format_args!("the DSSE envelope: {detail}")))
}

fn statement(doc: &Doc, signing: Signing) -> Result<Statement> {
    let raw: RawStatement = doc.parse("an in-toto Statement")?;
    if !STATEMENT_TYPES.contains(&raw.statement_type.as_str()) {
        return Err(doc.error_at_key(
            "_type",
            format_args!(
                "_type is {:?}, not an in-toto Statement ({})",
                raw.statement_type,
                STATEMENT_TYPES.join(" or ")
            ),
        ));
    }
    if raw.predicate_type.is_empty() {
        return Err(doc.error_at_key("predicateType", "`predicateType` is empty"));
    }
    if raw.subject.is_empty() {
        return Err(doc.error_at_key(
            "subject",
            "`subject` is empty: a Statement is about at least one artifact",
        ));
    }
    let mut subjects = Vec::with_capacity(raw.subject.len());
    for s in raw.subject {
        if s.digest.is_empty() {
            return Err(doc.error_at_key(
                "digest",
                format_args!("subject {:?} has an empty `digest`", s.name),
            ));
        }
        let sha256 = match s.digest.get("sha256") {
            Some(hex) => Some(Sha256::from_hex(&hex.to_ascii_lowercase()).ok_or_else(|| {
                doc.error_at_key(
                    "sha256",
                    format_args!("subject {:?}: sha256 {hex:?} is not 64 hex digits", s.name),
                )
            })?),
            None => None,
        };
        subjects.push((s.name, sha256));
    }
    Ok(Statement { subjects, signing })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn pae_is_the_dsse_v1_encoding() {
        // The example from the DSSE v1 protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    fn read_str(text: &str, lines: bool) -> std::result::Result<Vec<Statement>, String> {
        let doc = Doc {
            path: Path::new("p.intoto.jsonl"),
            text,
            first_line: 1,
        };
        read(&doc, lines, &[]).map_err(|e| e.to_string())
    }

    const STATEMENT: &str = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{}}"#;

    #[test]
    fn bare_statements_and_envelopes_are_read() {
        let s = read_str(STATEMENT, false).unwrap();
        assert_eq!(s[0].signing, Signing::Unsigned);
        assert!(s[0].names(&Sha256([0xab; 32])));
        let payload = base64::engine::general_purpose::STANDARD.encode(STATEMENT);
        let env = format!(
            r#"{{"payloadType":"{PAYLOAD_TYPE}","payload":"{payload}","signatures":[{{"keyid":"k","sig":"AAAA"}}]}}"#
        );
        let s = read_str(&format!("{STATEMENT}\n\n{env}\n"), true).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].signing, Signing::Unverified);
    }

    #[test]
    fn errors_name_the_line() {
        let e = read_str(&format!("{STATEMENT}\n{{\"_type\": 1}}\n"), true).unwrap_err();
        assert!(e.starts_with("p.intoto.jsonl:2:"), "{e}");
        assert!(
            e.contains("invalid type: integer `1`, expected a string"),
            "{e}"
        );
        let e = read_str(
            &STATEMENT.replace("https://in-toto.io/Statement/v1", "x"),
            false,
        )
        .unwrap_err();
        assert!(e.starts_with("p.intoto.jsonl:1:2: _type is \"x\""), "{e}");
        let e = read_str(
            r#"{"payloadType":"text/plain","payload":"","signatures":[]}"#,
            false,
        )
        .unwrap_err();
        assert!(e.contains("not \"application/vnd.in-toto+json\""), "{e}");
        assert!(read_str("\n\n", true).unwrap_err().ends_with(
            "holds no attestation: expected DSSE envelopes or in-toto Statements, one per line"
        ));
    }
}
