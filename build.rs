//! Marks the integration tests that need an outside tool as ignored, with
//! the reason, when that tool is missing here: `cargo test` then lists them
//! as ignored instead of passing them silently. With `CI=true` nothing is
//! marked, so a missing tool fails its tests there (`.ci/run` installs them
//! all). After installing a tool, `touch build.rs` to look again.

use std::process::{Command, Stdio};

/// cfg name, and the command that succeeds when the tool is there.
const TOOLS: &[(&str, &str)] = &[
    ("minisign", "command -v minisign"),
    ("xmllint", "command -v xmllint"),
    ("jing", "command -v jing"),
    ("chromium", "command -v chromium"),
    ("qemu_img", "command -v qemu-img"),
    ("xz", "command -v xz"),
    ("python3", "command -v python3"),
    ("ss", "command -v ss"),
    ("gpo", "command -v gpo"),
    ("vagrant", "command -v vagrant"),
    ("feedparser", "python3 -c 'import feedparser'"),
    ("moto", "python3 -c 'import moto.server'"),
    ("jsonschema", "python3 -c 'import jsonschema'"),
    (
        "sstream",
        "command -v sstream-query && command -v sstream-mirror",
    ),
    ("lxc", "command -v lxc && command -v openssl"),
    (
        "virt_builder",
        "command -v virt-builder && command -v virt-index-validate",
    ),
    ("gpg", "command -v gpg"),
    ("gpgv", "command -v gpgv"),
    ("systemd_analyze", "command -v systemd-analyze"),
    ("pyspdxtools", "command -v pyspdxtools"),
    (
        "cyclonedx",
        "python3 -c 'from cyclonedx.schema import SchemaVersion; \
         from cyclonedx.validation.json import JsonStrictValidator; \
         JsonStrictValidator(SchemaVersion.V1_6).validate_str(\"{}\")'",
    ),
    (
        "in_toto",
        "python3 -c 'import in_toto.models.metadata, securesystemslib.signer, cryptography'",
    ),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    for (name, probe) in TOOLS {
        println!("cargo::rustc-check-cfg=cfg(missing_{name})");
        let found = Command::new("sh")
            .args(["-c", probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ci && !found {
            println!("cargo::rustc-cfg=missing_{name}");
        }
    }
}
