//! SBOMs: SPDX 2.3 JSON and CycloneDX 1.5/1.6 JSON, checked for the fields
//! that make each what it claims to be.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Format;
use super::json::Doc;
use crate::error::Error;

/// Just enough to tell the two formats apart.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "spdxVersion")]
    spdx_version: Option<IgnoredAny>,
    #[serde(rename = "bomFormat")]
    bom_format: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpdx {
    spdx_version: String,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    data_license: String,
    name: String,
    document_namespace: String,
    creation_info: RawCreationInfo,
    packages: Vec<RawSpdxPackage>,
}

#[derive(Deserialize)]
struct RawCreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpdxPackage {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(rename = "downloadLocation")]
    _download_location: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCycloneDx {
    bom_format: String,
    spec_version: String,
    version: Option<u64>,
    #[serde(default, rename = "components")]
    _components: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    #[serde(rename = "type")]
    _kind: String,
    #[serde(rename = "name")]
    _name: String,
}

/// Checks an SBOM and says which format it is in.
pub(super) fn check(doc: &Doc) -> Result<Format, Error> {
    doc.object("an SBOM")?;
    let probe: Probe = doc.parse("an SBOM")?;
    match (probe.spdx_version, probe.bom_format) {
        (Some(_), _) => check_spdx(doc),
        (None, Some(_)) => check_cyclonedx(doc),
        (None, None) => Err(Error::file(
            doc.path,
            "not an SBOM: neither SPDX JSON (no `spdxVersion`) nor CycloneDX JSON (no \
             `bomFormat`)",
        )),
    }
}

fn check_spdx(doc: &Doc) -> Result<Format, Error> {
    let raw: RawSpdx = doc.parse("an SPDX 2.3 JSON document")?;
    if raw.spdx_version != "SPDX-2.3" {
        return Err(doc.error_at_key(
            "spdxVersion",
            format_args!(
                "spdxVersion is {:?}; only SPDX-2.3 JSON is published (convert it, e.g. \
                 with pyspdxtools, or have the SBOM tool write SPDX 2.3)",
                raw.spdx_version
            ),
        ));
    }
    if raw.spdx_id != "SPDXRef-DOCUMENT" {
        return Err(doc.error_at_key(
            "SPDXID",
            format_args!(
                "the document's SPDXID is {:?}; SPDX 2.3 requires \"SPDXRef-DOCUMENT\"",
                raw.spdx_id
            ),
        ));
    }
    if raw.data_license != "CC0-1.0" {
        return Err(doc.error_at_key(
            "dataLicense",
            format_args!(
                "dataLicense is {:?}; SPDX 2.3 requires \"CC0-1.0\"",
                raw.data_license
            ),
        ));
    }
    for (key, empty) in [
        ("name", raw.name.is_empty()),
        ("documentNamespace", raw.document_namespace.is_empty()),
        ("created", raw.creation_info.created.is_empty()),
        ("creators", raw.creation_info.creators.is_empty()),
    ] {
        if empty {
            return Err(doc.error_at_key(key, format_args!("`{key}` is empty")));
        }
    }
    if raw.packages.is_empty() {
        return Err(doc.error_at_key(
            "packages",
            "`packages` is empty: an SBOM of an image lists at least the image itself",
        ));
    }
    if let Some(p) = raw
        .packages
        .iter()
        .find(|p| !p.spdx_id.starts_with("SPDXRef-") || p.name.is_empty())
    {
        return Err(doc.error_at_key(
            "packages",
            format_args!(
                "package {:?} (SPDXID {:?}) needs a name and an SPDXID starting with \
                 \"SPDXRef-\"",
                p.name, p.spdx_id
            ),
        ));
    }
    Ok(Format::Spdx23)
}

fn check_cyclonedx(doc: &Doc) -> Result<Format, Error> {
    let raw: RawCycloneDx = doc.parse("a CycloneDX JSON BOM")?;
    if raw.bom_format != "CycloneDX" {
        return Err(doc.error_at_key(
            "bomFormat",
            format_args!("bomFormat is {:?}, not \"CycloneDX\"", raw.bom_format),
        ));
    }
    let format = match raw.spec_version.as_str() {
        "1.5" => Format::CycloneDx15,
        "1.6" => Format::CycloneDx16,
        other => {
            return Err(doc.error_at_key(
                "specVersion",
                format_args!("specVersion is {other:?}; CycloneDX 1.5 and 1.6 JSON are published"),
            ));
        }
    };
    if raw.version == Some(0) {
        return Err(doc.error_at_key("version", "`version` must be 1 or more"));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check_str(text: &str) -> Result<Format, String> {
        check(&Doc {
            path: Path::new("x.json"),
            text,
            first_line: 1,
        })
        .map_err(|e| e.to_string())
    }

    const SPDX: &str = r#"{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","dataLicense":"CC0-1.0",
"name":"n","documentNamespace":"https://example.org/x","creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: t"]},
"packages":[{"SPDXID":"SPDXRef-Image","name":"img","downloadLocation":"NOASSERTION"}]}"#;

    #[test]
    fn formats_are_told_apart() {
        assert_eq!(check_str(SPDX), Ok(Format::Spdx23));
        assert_eq!(
            check_str(r#"{"bomFormat":"CycloneDX","specVersion":"1.6","version":1}"#),
            Ok(Format::CycloneDx16)
        );
        assert_eq!(
            check_str(r#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#),
            Ok(Format::CycloneDx15)
        );
    }

    #[test]
    fn errors_name_the_place() {
        assert_eq!(
            check_str("{\n\"spdxVersion\": \"SPDX-2.3\",\n}"),
            Err("x.json:3:1: not valid JSON: trailing comma".into())
        );
        let e = check_str(&SPDX.replace("SPDX-2.3", "SPDX-2.2")).unwrap_err();
        assert!(
            e.starts_with("x.json:1:2: spdxVersion is \"SPDX-2.2\""),
            "{e}"
        );
        let e = check_str(r#"{"bomFormat":"CycloneDX","specVersion":"1.4"}"#).unwrap_err();
        assert!(e.starts_with("x.json:1:26: specVersion is \"1.4\""), "{e}");
        let e = check_str(r#"{"spdxVersion":"SPDX-2.3"}"#).unwrap_err();
        assert!(e.contains("missing field `SPDXID`"), "{e}");
        let e = check_str("[1]").unwrap_err();
        assert!(
            e.starts_with("x.json:1:1: not an SBOM: an array, not a JSON object"),
            "{e}"
        );
    }
}
