//! `vmcast-gen init`: scaffolds a site. It never overwrites a file.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::render::page::BUILTIN;

const CONFIG: &str = r#"# vmcast-gen site configuration. Unknown keys are errors.
# Relative paths are relative to this file. Reference: the README.

# Required: the feed's title and description, and the absolute URL where the
# output directory will be served.
title = "My appliances"
description = "Signed virtual appliance images"
base_url = "https://downloads.example.com/appliances/"

# Where images are served when not from the site itself (a bucket, a CDN);
# setting it makes image_mode default to "none".
# download_base_url = "https://cdn.example.com/appliances/images/"

# releases_dir = "releases"     # <appliance>/<version>/release.toml + images
# output_dir = "public"         # replaced on every build
# templates_dir = "templates"   # `vmcast-gen init --templates` copies the defaults there
# image_mode = "copy"           # "copy", "link" or "none"

# The signing key; or --secret-key FILE, or VMCAST_SECRET_KEY (the file's
# contents). `vmcast-gen init` made this one; `vmcast-gen keygen` makes others.
secret_key = "vmcast.key"

# Consumers refuse a build older than this; re-sign with a scheduled build.
# expires_after = "30d"

[appliances.example]
title = "Example appliance"
description = "What it is, in one line"
"#;

const NOTES: &str = r#"# One release. Unknown keys are errors. Reference: the README.
version = "1.0.0"
date = 2026-01-01
channel = "stable"        # or "beta", ...
critical = false          # a security update clients should apply promptly
notes = """
First release.

- What changed, in **Markdown**.
"""

[requirements]
arch = "x86_64"
min_memory_mib = 1024
min_disk_gib = 8
firmware = "uefi"          # "bios", "uefi" or "any"
hypervisors = ["kvm"]

# Put the images (qcow2, vmdk, vhd, vhdx, raw, ova, iso, hds, xva; optionally
# .xz/.gz/.zst) beside this file, or list them: images = ["build/example-1.0.0.*"]

# SBOMs and provenance beside an image are published with it when named after it
# (<image>.spdx.json, <image>.cdx.json, <image>.intoto.jsonl), or name them:
# [image."example-1.0.0.qcow2"]
# sbom = ["example-1.0.0.spdx.json"]
# provenance = "example-1.0.0.intoto.jsonl"

# Images published in a cloud (instead or as well) are named, not hashed:
# [[cloud_image]]
# provider = "aws"            # "aws", "gcp" or "azure"
# region = "eu-west-1"        # required for aws and azure (a location: "westeurope")
# id = "ami-0abc1234def567890"
"#;

/// The output, and what builds keep beside it (`.public.spare`, the
/// lock, staging directories); keys; sidecars.
const GITIGNORE: &[&str] = &["/public/", "/.public.*", "*.key", "*.vmcast-hash"];

/// What `init` did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(PathBuf),
    /// It existed and was left as it was.
    Kept(PathBuf),
    /// Lines were appended to it.
    Extended(PathBuf),
    /// It was not made, for the reason given.
    Skipped {
        path: PathBuf,
        reason: &'static str,
    },
}

/// Scaffolds a site in `dir`: a commented vmcast.toml, an example
/// release.toml and .gitignore entries for the output and the key. In a
/// site that exists (its vmcast.toml does), the releases are the user's:
/// an example the user deleted is not made again, since the next build
/// would refuse it for want of images.
pub fn init(dir: &Path) -> Result<Vec<Outcome>> {
    fsutil::create_dir_all(dir)?;
    let example = dir.join("releases/example/1.0.0/release.toml");
    let mut done = vec![create(&dir.join("vmcast.toml"), CONFIG)?];
    done.push(match &done[0] {
        Outcome::Created(_) => create(&example, NOTES)?,
        _ => Outcome::Skipped {
            path: example,
            reason: "the site exists: its releases are yours",
        },
    });
    done.push(gitignore(&dir.join(".gitignore"))?);
    Ok(done)
}

/// Copies the built-in templates into `dir` for customising.
pub fn templates(dir: &Path) -> Result<Vec<Outcome>> {
    BUILTIN
        .iter()
        .map(|(name, text)| create(&dir.join(name), text))
        .collect()
}

fn create(path: &Path, text: &str) -> Result<Outcome> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(Outcome::Kept(path.to_path_buf()));
    }
    if let Some(parent) = path.parent() {
        fsutil::create_dir_all(parent)?;
    }
    fsutil::write_new_file(path, text.as_bytes(), fsutil::PUBLISHED_FILE_MODE, false)?;
    Ok(Outcome::Created(path.to_path_buf()))
}

/// Adds the entries a .gitignore lacks, keeping what it has.
fn gitignore(path: &Path) -> Result<Outcome> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let have = existing.as_deref().unwrap_or_default();
    let missing: Vec<&str> = GITIGNORE
        .iter()
        .copied()
        .filter(|e| !have.lines().any(|l| l.trim() == *e))
        .collect();
    if missing.is_empty() {
        return Ok(Outcome::Kept(path.to_path_buf()));
    }
    let mut text = have.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# vmcast-gen: the built site and its spare, secret keys, sidecar hashes\n");
    for entry in &missing {
        text.push_str(entry);
        text.push('\n');
    }
    fsutil::write_new_file(path, text.as_bytes(), fsutil::PUBLISHED_FILE_MODE, true)?;
    Ok(match existing {
        Some(_) => Outcome::Extended(path.to_path_buf()),
        None => Outcome::Created(path.to_path_buf()),
    })
}
