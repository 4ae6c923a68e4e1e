//! `vmcast-gen publish`: uploads a built site to S3 or any S3-compatible
//! store in an order a polling client can never catch half-done: images
//! first, then the manifest, signatures, keys and page, then the feeds, the
//! combined `feed.xml` last of all. An object already there with the same
//! SHA-256 (kept in its `x-amz-meta-sha256`; multipart ETags are not MD5s)
//! is skipped, so publishing again is cheap and an interrupted publish
//! resumes. Nothing is deleted unless asked, and then only after the new
//! feed is up and never an image the new manifest lists.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::RetryConfig;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::media::content_type;
use crate::media::{FEED, MANIFEST};
use crate::model::Sha256;
use crate::write::MARKER;

/// Files at least this large go up in parts.
const MULTIPART_THRESHOLD: u64 = 64 << 20;
const PART: usize = 16 << 20;
const META_SHA256: &str = "sha256";

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub site: PathBuf,
    /// Where to: `s3://bucket/prefix`, one or more. Images go to every
    /// destination first, the feeds last.
    pub targets: Vec<String>,
    /// An S3-compatible endpoint (MinIO, Ceph, R2...; also AWS_ENDPOINT_URL).
    pub endpoint: Option<String>,
    pub dry_run: bool,
    pub prune: bool,
    /// Cache-Control for the feeds, manifest, signatures, keys and page.
    pub short_cache: String,
    /// Cache-Control for the files that never change under their name:
    /// images and what is made of them, archives and their signatures.
    pub image_cache: String,
    /// Content-Type overrides by extension, e.g. `qcow2` → `application/x-qemu-disk`.
    pub content_types: BTreeMap<String, String>,
    /// A canned ACL for every object (`public-read` where the bucket uses
    /// ACLs rather than a bucket policy to make the site public).
    pub acl: Option<String>,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// The destination, `s3://bucket/prefix`.
    pub target: String,
    pub path: String,
    /// `upload`, `skip` (same SHA-256 already there) or `delete`.
    pub action: &'static str,
    pub content_type: String,
    pub cache_control: String,
}

/// The steps in the order they were (or, with `dry_run`, would be) taken.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishReport {
    pub steps: Vec<Step>,
    pub uploaded: usize,
    pub skipped: usize,
    pub deleted: usize,
    /// A dry run without AWS credentials in the environment: no bucket was
    /// looked at, so every file is listed as an upload and nothing as a
    /// deletion.
    pub without_credentials: bool,
}

struct Local {
    rel: String,
    path: PathBuf,
    size: u64,
    sha256: String,
}

pub fn publish(options: &PublishOptions, mut on_step: impl FnMut(&Step)) -> Result<PublishReport> {
    let (files, listed) = local_files(&options.site)?;
    let (images, rest): (Vec<Local>, Vec<Local>) =
        order(files).into_iter().partition(|f| is_artifact(&f.rel));
    let credentials = Credentials::from_env()?;
    // A dry run looks at each object once, and says at once that it could
    // not; without credentials it lists what it would upload, unlooked.
    let look = !(options.dry_run && credentials == Credentials::Instance);
    let retry = match options.dry_run {
        true => RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        },
        false => RetryConfig::default(),
    };
    let destinations = options
        .targets
        .iter()
        .map(|target| {
            let (bucket, prefix) = parse_target(target)?;
            let store = match look {
                true => Some(store_with(
                    &bucket,
                    options.endpoint.as_deref(),
                    options.acl.as_deref(),
                    retry.clone(),
                )?),
                false => None,
            };
            Ok(Destination {
                target: target.clone(),
                store,
                prefix,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failed("cannot start the I/O runtime", e))?;
    runtime
        .block_on(async {
            let mut report = PublishReport {
                steps: Vec::new(),
                uploaded: 0,
                skipped: 0,
                deleted: 0,
                without_credentials: !look,
            };
            // Every image reaches every destination before any feed goes
            // anywhere: a client of any destination never sees a feed that
            // points at an image some mirror of it lacks.
            for d in &destinations {
                upload_all(options, d, &images, &mut report, &mut on_step).await?;
            }
            for d in &destinations {
                upload_all(options, d, &rest, &mut report, &mut on_step).await?;
            }
            if options.prune {
                let keep: BTreeSet<String> =
                    images.iter().chain(&rest).map(|f| f.rel.clone()).collect();
                for d in &destinations {
                    prune(options, d, &keep, &listed, &mut report, &mut on_step).await?;
                }
            }
            Ok(report)
        })
        .map_err(|e| credentials.explain(e))
}

/// Where the store's AWS credentials come from, as object_store picks
/// them from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credentials {
    /// Keys, a web identity or a container's credentials.
    Environment,
    /// None there: the EC2 instance metadata service is asked.
    Instance,
}

impl Credentials {
    /// The credentials the environment names; a key id without its secret
    /// (or the reverse) is an error that says which is missing.
    fn from_env() -> Result<Self> {
        let set = |name: &str| aws_env(name).is_some();
        let (id, secret) = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY");
        match (set(id), set(secret)) {
            (true, true) => Ok(Credentials::Environment),
            (true, false) | (false, true) => {
                let (given, missing) = match set(id) {
                    true => (id, secret),
                    false => (secret, id),
                };
                Err(Error::other(format_args!(
                    "{given} is set, but {missing} is not (or is empty): set both, for \
                     instance from your CI's secrets"
                )))
            }
            (false, false)
                if set("AWS_WEB_IDENTITY_TOKEN_FILE") && set("AWS_ROLE_ARN")
                    || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                    || set("AWS_CONTAINER_CREDENTIALS_FULL_URI") =>
            {
                Ok(Credentials::Environment)
            }
            (false, false) => Ok(Credentials::Instance),
        }
    }

    /// A store error, with what it likely means when no credentials were
    /// given: the instance metadata service was asked, and failed.
    fn explain(self, error: Error) -> Error {
        match self {
            Credentials::Environment => error,
            Credentials::Instance => Error::failed(
                "no AWS credentials in the environment (set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN; a \
                 --dry-run needs none), so the EC2 instance metadata service was asked",
                error,
            ),
        }
    }
}

/// An AWS_* variable that is set and not empty: an undefined CI secret
/// reaches a job as an empty variable, which counts as unset.
fn aws_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(crate) fn parse_target(target: &str) -> Result<(String, Vec<String>)> {
    let rest = target.strip_prefix("s3://").ok_or_else(|| {
        Error::other(format_args!(
            "publish target `{target}` must look like s3://bucket/prefix"
        ))
    })?;
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let bucket = parts
        .next()
        .ok_or_else(|| Error::other(format_args!("publish target `{target}` names no bucket")))?;
    Ok((bucket.to_owned(), parts.map(str::to_owned).collect()))
}

pub(crate) fn store(bucket: &str, endpoint: Option<&str>, acl: Option<&str>) -> Result<AmazonS3> {
    store_with(bucket, endpoint, acl, RetryConfig::default())
}

/// [`store`], retrying failed requests as `retry` says.
fn store_with(
    bucket: &str,
    endpoint: Option<&str>,
    acl: Option<&str>,
    retry: RetryConfig,
) -> Result<AmazonS3> {
    // As AmazonS3Builder::from_env, but an empty variable counts as unset.
    let mut builder = AmazonS3Builder::new();
    for (name, value) in std::env::vars() {
        if name.starts_with("AWS_")
            && !value.is_empty()
            && let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
        {
            builder = builder.with_config(key, value);
        }
    }
    let mut builder = builder.with_bucket_name(bucket).with_retry(retry);
    if let Some(acl) = acl {
        let value = object_store::HeaderValue::from_str(acl).map_err(|_| Error::Usage {
            option: "--acl",
            value: acl.to_owned(),
            reason: "not a valid header value".into(),
        })?;
        let mut headers = object_store::HeaderMap::new();
        headers.insert("x-amz-acl", value);
        builder = builder
            .with_client_options(object_store::ClientOptions::new().with_default_headers(headers));
    }
    let endpoint = endpoint
        .map(str::to_owned)
        .or_else(|| aws_env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| aws_env("AWS_ENDPOINT_URL"));
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    builder
        .build()
        .map_err(|e| Error::failed("cannot set up S3 access", e))
}

/// Every file of the site with its SHA-256: from the signed manifest where
/// it lists the file (images, feeds), hashed here otherwise (small files).
/// Also returns the manifest, which says what a prune must keep.
fn local_files(site: &Path) -> Result<(Vec<Local>, BTreeMap<String, Sha256>)> {
    if !site.join(MARKER).is_file() || !site.join(FEED).is_file() {
        return Err(Error::file(
            site,
            "is not a site built by vmcast-gen (no .vmcast-gen marker or feed.xml); run `vmcast-gen build` first",
        ));
    }
    let manifest = fsutil::read_to_string(&site.join(MANIFEST))?;
    let listed =
        crate::sums::parse(manifest.as_bytes()).map_err(|m| Error::file(site.join(MANIFEST), m))?;
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(site).sort_by_file_name() {
        let entry =
            entry.map_err(|e| Error::failed(format_args!("cannot read {}", site.display()), e))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(site)
            .expect("walked below the site")
            .to_string_lossy()
            .into_owned();
        if rel == MARKER {
            continue;
        }
        let size = entry
            .metadata()
            .map_err(|e| Error::failed(format_args!("cannot stat {}", entry.path().display()), e))?
            .len();
        let sha256 = match listed.get(&rel) {
            Some(d) => d.to_hex(),
            None if size <= MULTIPART_THRESHOLD => Sha256::of(
                &std::fs::read(entry.path())
                    .map_err(|e| Error::io("cannot read", entry.path(), e))?,
            )
            .to_hex(),
            None => {
                return Err(Error::file(
                    entry.path(),
                    "is large and not in SHA256SUMS; only images the manifest lists are published",
                ));
            }
        };
        out.push(Local {
            rel,
            path: entry.path().to_path_buf(),
            size,
            sha256,
        });
    }
    Ok((out, listed))
}

/// An image or a Vagrant box: a large file that feeds and catalogs point
/// at, uploaded before them and cached like an image. (A directory's
/// `SHA256SUMS` lists images: it is not one.)
pub(crate) fn is_artifact(rel: &str) -> bool {
    (rel.starts_with("images/") && !crate::media::is_dir_manifest(rel))
        || (rel.starts_with("vagrant/") && rel.ends_with(".box"))
}

/// The safe order: images and boxes; everything else (a directory's
/// `SHA256SUMS.gpg` just before its `SHA256SUMS`); per-appliance feeds (each
/// signature just before its feed); the combined feed's signature and the
/// combined feed last.
fn order(files: Vec<Local>) -> Vec<Local> {
    let rank = |rel: &str| -> (u8, String) {
        let r = rel.to_owned();
        if is_artifact(rel) {
            (0, r)
        } else if rel == FEED {
            (5, r)
        } else if rel == format!("{FEED}.minisig") {
            (4, r)
        } else if rel.starts_with("feeds/") {
            // feeds/x.xml.minisig before feeds/x.xml.
            let feed = rel.trim_end_matches(".minisig").to_owned();
            (
                3,
                format!(
                    "{feed}{}",
                    if rel.ends_with(".minisig") { "0" } else { "1" }
                ),
            )
        } else if crate::media::is_dir_manifest(rel) {
            let (dir, name) = rel.rsplit_once('/').unwrap_or_default();
            let second = if name == MANIFEST { "1" } else { "0" };
            (1, format!("{dir}/{second}"))
        } else if rel == MANIFEST || rel == format!("{MANIFEST}.minisig") {
            (2, if rel == MANIFEST { "1" } else { "0" }.to_owned())
        } else {
            (1, r)
        }
    };
    let mut files = files;
    files.sort_by_key(|f| rank(&f.rel));
    files
}

/// The object at `rel` under `prefix`; with an empty `rel`, the prefix itself.
pub(crate) fn object_path(prefix: &[String], rel: &str) -> ObjectPath {
    prefix
        .iter()
        .map(String::as_str)
        .chain(rel.split('/').filter(|p| !p.is_empty()))
        .map(PathPart::from)
        .collect()
}

/// An object's path relative to `prefix`, `/`-separated.
pub(crate) fn relative(location: &ObjectPath, prefix: &[String]) -> String {
    location
        .parts()
        .skip(prefix.len())
        .map(|p| p.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// One place the site goes.
struct Destination {
    target: String,
    /// None in a dry run without credentials: it is not looked at.
    store: Option<AmazonS3>,
    prefix: Vec<String>,
}

/// Uploads `files` in their order to one destination, skipping what is
/// already there with the same SHA-256.
async fn upload_all(
    options: &PublishOptions,
    d: &Destination,
    files: &[Local],
    report: &mut PublishReport,
    on_step: &mut dyn FnMut(&Step),
) -> Result<()> {
    for file in files {
        let location = object_path(&d.prefix, &file.rel);
        let ext = file
            .rel
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase());
        let kind = ext
            .as_ref()
            .and_then(|e| options.content_types.get(e))
            .cloned()
            .unwrap_or_else(|| content_type(&file.rel).to_owned());
        let cache = if crate::media::is_immutable(&file.rel) {
            &options.image_cache
        } else {
            &options.short_cache
        };
        let current = match &d.store {
            Some(store) => remote_sha256(store, &location).await?,
            None => None,
        };
        let action = if current.as_deref() == Some(file.sha256.as_str()) {
            "skip"
        } else {
            "upload"
        };
        let step = Step {
            target: d.target.clone(),
            path: file.rel.clone(),
            action,
            content_type: kind.clone(),
            cache_control: cache.clone(),
        };
        on_step(&step);
        if let Some(store) = d
            .store
            .as_ref()
            .filter(|_| action == "upload" && !options.dry_run)
        {
            upload(store, &location, file, &kind, cache).await?;
        }
        match action {
            "upload" => report.uploaded += 1,
            _ => report.skipped += 1,
        }
        report.steps.push(step);
    }
    Ok(())
}

/// Deletes from one destination what the new site no longer has. Images
/// the new manifest lists stay even when not in the output (image_mode =
/// "none" publishes them elsewhere). It is the manifest read, parsed and
/// checked before the first upload: what must never be deleted is known
/// before anything is, or nothing is deleted.
async fn prune(
    options: &PublishOptions,
    d: &Destination,
    keep: &BTreeSet<String>,
    listed: &BTreeMap<String, Sha256>,
    report: &mut PublishReport,
    on_step: &mut dyn FnMut(&Step),
) -> Result<()> {
    let Some(store) = &d.store else {
        return Ok(());
    };
    let base = object_path(&d.prefix, "");
    let mut stale = Vec::new();
    let mut list = store.list(Some(&base));
    while let Some(meta) = list.next().await {
        let meta = meta.map_err(|e| Error::Store {
            action: "list",
            object: "s3 objects".into(),
            source: e,
        })?;
        let rel = relative(&meta.location, &d.prefix);
        if !keep.contains(&rel) && !listed.contains_key(&rel) {
            stale.push((rel, meta.location));
        }
    }
    for (rel, location) in stale {
        let step = Step {
            target: d.target.clone(),
            path: rel,
            action: "delete",
            content_type: String::new(),
            cache_control: String::new(),
        };
        on_step(&step);
        if !options.dry_run {
            store.delete(&location).await.map_err(|e| Error::Store {
                action: "delete",
                object: step.path.clone(),
                source: e,
            })?;
        }
        report.deleted += 1;
        report.steps.push(step);
    }
    Ok(())
}

/// The SHA-256 recorded on an object, if it exists and has one.
async fn remote_sha256(store: &AmazonS3, location: &ObjectPath) -> Result<Option<String>> {
    let head = GetOptions {
        head: true,
        ..Default::default()
    };
    match store.get_opts(location, head).await {
        Ok(result) => Ok(result
            .attributes
            .get(&Attribute::Metadata(META_SHA256.into()))
            .map(|v| v.as_ref().to_ascii_lowercase())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::Store {
            action: "look up",
            object: location.to_string(),
            source: e,
        }),
    }
}

async fn upload(
    store: &AmazonS3,
    location: &ObjectPath,
    file: &Local,
    kind: &str,
    cache: &str,
) -> Result<()> {
    let attributes = Attributes::from_iter([
        (
            Attribute::ContentType,
            AttributeValue::from(kind.to_owned()),
        ),
        (
            Attribute::CacheControl,
            AttributeValue::from(cache.to_owned()),
        ),
        (
            Attribute::Metadata(META_SHA256.into()),
            AttributeValue::from(file.sha256.clone()),
        ),
    ]);
    let failed = |e: object_store::Error| Error::Store {
        action: "upload",
        object: file.rel.clone(),
        source: e,
    };
    if file.size < MULTIPART_THRESHOLD {
        let data =
            std::fs::read(&file.path).map_err(|e| Error::io("cannot read", &file.path, e))?;
        check_digest(file, &data)?;
        let options = PutOptions {
            attributes,
            ..Default::default()
        };
        store
            .put_opts(location, PutPayload::from(data), options)
            .await
            .map_err(failed)?;
        return Ok(());
    }
    let options = PutMultipartOptions {
        attributes,
        ..Default::default()
    };
    let upload = store
        .put_multipart_opts(location, options)
        .await
        .map_err(failed)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut source = fsutil::open(&file.path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = source
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", &file.path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        writer.wait_for_capacity(4).await.map_err(failed)?;
        writer.write(&buf[..n]);
    }
    let actual = Sha256(hasher.finalize().into()).to_hex();
    if actual != file.sha256 {
        writer.abort().await.map_err(failed)?;
        return Err(Error::file(
            &file.path,
            "changed since the build: its SHA-256 no longer matches SHA256SUMS; rebuild",
        ));
    }
    writer.finish().await.map_err(failed)?;
    Ok(())
}

/// A file must still be what the build signed.
fn check_digest(file: &Local, data: &[u8]) -> Result<()> {
    if Sha256::of(data).to_hex() != file.sha256 {
        return Err(Error::file(
            &file.path,
            "changed since the build: its SHA-256 no longer matches SHA256SUMS; rebuild",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_manifest_goes_up_after_its_images_its_signature_first() {
        let local = |rel: &str| Local {
            rel: rel.to_owned(),
            path: PathBuf::from(rel),
            size: 0,
            sha256: String::new(),
        };
        let files = [
            "feed.xml",
            "images/webapp/SHA256SUMS",
            "images/webapp/webapp-1.1.0.raw",
            "SHA256SUMS",
            "images/webapp/SHA256SUMS.gpg",
            "sysupdate/webapp.transfer",
            "images/webapp/webapp-1.0.0.raw",
            "SHA256SUMS.minisig",
        ];
        let ordered: Vec<String> = order(files.iter().map(|f| local(f)).collect())
            .into_iter()
            .map(|f| f.rel)
            .collect();
        assert_eq!(
            ordered,
            [
                "images/webapp/webapp-1.0.0.raw",
                "images/webapp/webapp-1.1.0.raw",
                "images/webapp/SHA256SUMS.gpg",
                "images/webapp/SHA256SUMS",
                "sysupdate/webapp.transfer",
                "SHA256SUMS.minisig",
                "SHA256SUMS",
                "feed.xml",
            ]
        );
    }
}
