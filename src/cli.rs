//! The command line, as clap types. Only `main` uses them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vmcast-gen",
    version,
    about = "Publish virtual appliance images as a signed VMcast: an RSS 2.0 feed, \
             a SHA256SUMS manifest, minisign signatures and a landing page.",
    after_help = "Exit status: 0 on success, 1 on any error, 2 on a usage error.\n\
                  Docs: README.md and docs/feed-format.md in the source repository."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the site: scan releases, hash images, write feed, manifest, signatures and page.
    #[command(after_help = "Environment:\n  \
        VMCAST_SECRET_KEY   the contents of a minisign secret key file (e.g. from a CI secret);\n                      \
        used when --secret-key is not given, before the config's secret_key\n  \
        VMCAST_KEY_PASSWORD the password of an encrypted secret key (else asked on the terminal)\n  \
        SOURCE_DATE_EPOCH   build timestamp in Unix seconds; same inputs and same value give a\n                      \
        byte-identical site. It is also the build's sequence number, which consumers use for\n                      \
        rollback protection, and the start of its expiry period.\n\n\
        The site is built in a temporary directory beside the output and swapped in at the end:\n\
        a failed build leaves the previous output untouched.")]
    Build(BuildArgs),
    /// Generate a new minisign-compatible key pair (unencrypted).
    #[command(
        after_help = "The secret key is written with mode 0600. Keep it out of the output \
        directory and out of version control; in CI, store its contents in a secret and pass \
        them in VMCAST_SECRET_KEY. Publish the public key out of band so consumers can pin it."
    )]
    Keygen(KeygenArgs),
    /// Verify a published site (a local output directory or an http(s) URL) as a consumer would.
    #[command(
        after_help = "Checks both signatures (prehashed ED only), that the feed's hash is in the \
        signed manifest, that every image's length and SHA-256 in the feed agree with the manifest, \
        that every URL is under the site's declared URLs, that the build has not expired, and with \
        --state that it is not older than a build seen before (rollback) and which rotated keys were \
        announced. --images also streams every image and checks its length and SHA-256.\n\n\
        Exit status: 0 only when every check passes, 1 otherwise, 2 on a usage error."
    )]
    Verify(VerifyArgs),
    /// Hash image files where they were built and write a sidecar (<file>.vmcast-hash) beside each.
    #[command(
        after_help = "A sidecar records the file's size, mtime and SHA-256. A later `build` \
        whose config sets trust_sidecars = true uses it instead of reading the image, as long as \
        the image's size and mtime still match: it trusts that an image with the same size and \
        mtime has the same content. Move images with a tool that keeps mtimes (tar, rsync -t)."
    )]
    Hash(HashArgs),
    /// Validate the config, every release.toml and the templates without reading images.
    #[command(
        after_help = "Reports every problem at once, each with its file and line, and \
        renders the feed and page to a scratch location. Fast enough for a pre-commit hook. \
        Exit status 1 when anything is wrong."
    )]
    Check(CheckArgs),
    /// Upload a built site to S3 or an S3-compatible store, images first and feed.xml last.
    #[cfg(feature = "publish")]
    #[command(
        after_help = "Order: images; then SHA256SUMS, signatures, keys and the page; then the \
        per-appliance feeds; feed.xml last, so a polling client never sees a feed that points at \
        objects not there yet. Objects whose x-amz-meta-sha256 already matches are skipped, so a \
        publish can be repeated or resumed. Credentials come from the standard AWS environment \
        (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE is not read); \
        --endpoint-url or AWS_ENDPOINT_URL for MinIO, Ceph, R2 and others."
    )]
    Publish(PublishArgs),
    /// Preview the site locally: build it for http://127.0.0.1, serve it, rebuild on changes.
    #[command(
        after_help = "The preview is built into a scratch directory with base_url set to the \
        local server, so feed readers, podcast apps, curl -r and feedparser work against it. \
        Content types are the ones a real host should send; single byte ranges are answered with \
        206. Without a configured key, a throwaway key signs the preview."
    )]
    Serve(ServeArgs),
    /// Scaffold a new site: a commented vmcast.toml, an example release and .gitignore entries.
    #[command(after_help = "Never overwrites a file: existing ones are kept and reported.")]
    Init(InitArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// The image files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Hashing threads (default: one per core).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A local output directory (or its feed.xml), or the http(s) URL of the site or of a feed.
    pub source: String,
    /// The pinned public key file (minisign format).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "pubkey_b64",
        conflicts_with = "pubkey_b64"
    )]
    pub pubkey: Option<PathBuf>,
    /// The pinned public key as its base64 line (as `minisign -P` takes it).
    #[arg(long, value_name = "KEY")]
    pub pubkey_b64: Option<String>,
    /// A state file remembering the highest sequence seen and announced keys (rollback protection, key rotation).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Also download or read every image and check its length and SHA-256.
    #[arg(long)]
    pub images: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The site configuration file.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.toml")]
    pub config: PathBuf,
    /// Output directory (default: the config's output_dir, else `public` beside the config).
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Secret key file (overrides VMCAST_SECRET_KEY and the config's secret_key).
    #[arg(long, value_name = "FILE")]
    pub secret_key: Option<PathBuf>,
    /// Hashing threads (default: one per core).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
    /// Report hashing progress even when stderr is not a terminal (a line every few seconds).
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,
    /// Hash every image; neither read nor write the hash cache.
    #[arg(long, conflicts_with = "verify_cache")]
    pub no_cache: bool,
    /// Hash every image and fail, listing them, if any cached digest was wrong.
    #[arg(long)]
    pub verify_cache: bool,
    /// Where the hash cache lives (also VMCAST_CACHE_DIR; default: the config's cache_dir, else
    /// $XDG_CACHE_HOME/vmcast-gen or ~/.cache/vmcast-gen).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print nothing on success.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also list every published image.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print the summary as JSON on stdout (for CI).
    #[arg(long, conflicts_with_all = ["quiet", "verbose"])]
    pub json: bool,
}

#[cfg(feature = "publish")]
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Where to: s3://bucket/prefix.
    pub target: String,
    /// The built site (default: the config's output_dir).
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The site configuration file, to find the output directory.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.toml")]
    pub config: PathBuf,
    /// An S3-compatible endpoint, e.g. http://127.0.0.1:9000 (also AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Print the plan in order; upload nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After the new feed is up, delete objects under the prefix that the site no longer has
    /// (never an image its SHA256SUMS lists).
    #[arg(long)]
    pub prune: bool,
    /// Cache-Control of the feeds, manifest, signatures, keys and page.
    #[arg(long, value_name = "VALUE", default_value = "public, max-age=300")]
    pub cache_control: String,
    /// Cache-Control of images (versioned, never changed under their name).
    #[arg(
        long,
        value_name = "VALUE",
        default_value = "public, max-age=31536000, immutable"
    )]
    pub image_cache_control: String,
    /// A canned ACL for every object, e.g. public-read (for buckets that use ACLs, not a policy).
    #[arg(long, value_name = "ACL")]
    pub acl: Option<String>,
    /// Content-Type for an extension, e.g. qcow2=application/x-qemu-disk (repeatable).
    #[arg(long, value_name = "EXT=TYPE")]
    pub content_type: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The site configuration file.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.toml")]
    pub config: PathBuf,
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(short, long, default_value_t = 8000)]
    pub port: u16,
    /// Build the preview here instead of a scratch directory.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Secret key file (else as for build; else a throwaway key).
    #[arg(long, value_name = "FILE")]
    pub secret_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The site configuration file.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.toml")]
    pub config: PathBuf,
    /// Also require every image to exist and be recognisable by name (still not read).
    #[arg(long)]
    pub images: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to scaffold (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Also generate a key pair (vmcast.key, vmcast.pub) in it.
    #[arg(long)]
    pub keygen: bool,
    /// With --keygen: write the secret key unencrypted.
    #[arg(short = 'W', long, requires = "keygen")]
    pub no_password: bool,
    /// Also copy the built-in templates into <DIR>/templates for customising.
    #[arg(long)]
    pub templates: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.key")]
    pub secret_key: PathBuf,
    /// Where to write the public key.
    #[arg(short, long, value_name = "FILE", default_value = "vmcast.pub")]
    pub public_key: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
    /// Write the secret key unencrypted (as `minisign -G -W`); by default it is encrypted with a
    /// password from VMCAST_KEY_PASSWORD or asked on the terminal.
    #[arg(short = 'W', long)]
    pub no_password: bool,
}
