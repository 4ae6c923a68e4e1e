//! The command line: one module per subcommand, each with its clap
//! options and its presentation (what it prints). The library below never
//! prints; these modules turn its reports into lines for people or JSON.

/// `println!` for a command's report. When the reader stops reading
/// (`vmcast-gen verify --json | head`), the process ends quietly with the
/// status a Unix filter killed by SIGPIPE has (141), instead of the panic
/// `println!` gives on a closed pipe. Rust ignores SIGPIPE, which keeps a
/// closed socket from killing `serve` or `pull`; this does the rest.
macro_rules! outln {
    () => {
        $crate::cmd::term::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cmd::term::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod build;
pub mod check;
pub mod hash;
pub mod init;
pub mod keygen;
mod progress;
mod prompt;
#[cfg(feature = "publish")]
pub mod publish;
pub mod pull;
pub mod serve;
mod term;
pub mod verify;

use clap::{Parser, Subcommand};
pub use term::error_line;

use std::path::{Path, PathBuf};

use vmcast_gen::{Error, Result};

/// An environment variable that is set and not empty: an undefined CI
/// secret reaches a job as an empty variable, which counts as unset.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// [`env`] for a path, which need not be UTF-8.
pub fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// The exit status of a usage error: a bad command line or option value.
pub const USAGE: u8 = 2;

/// The exit status of a failed command: [`USAGE`] for a bad command line
/// or option value, which clap's own usage errors share, else 1.
pub fn failure_status(err: &Error) -> u8 {
    match err {
        Error::Usage { .. } => USAGE,
        Error::Warned { error, .. } => failure_status(error),
        _ => 1,
    }
}

/// Builds the site, printing on stderr what the build warned of, whether
/// it succeeds or fails: a failed build's warnings may be why it failed.
pub fn build_site(
    options: &vmcast_gen::BuildOptions,
    progress: &dyn vmcast_gen::hash::Progress,
    password: vmcast_gen::keys::PasswordPrompt,
) -> Result<vmcast_gen::Report> {
    let show = |warnings: &[vmcast_gen::Warning]| {
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
    };
    match vmcast_gen::build(options, progress, password) {
        Ok(report) => {
            show(&report.warnings);
            Ok(report)
        }
        Err(error) => {
            let (warnings, error) = error.unwarn();
            show(&warnings);
            Err(error)
        }
    }
}

/// The config file a site command uses: the one named with `-c`, else
/// `vmcast.toml` here or in the nearest directory above, which is then
/// named on stderr so the user knows which site is meant.
pub fn site_config(named: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = named {
        return Ok(path);
    }
    let here = std::env::current_dir()
        .map_err(|e| Error::failed("cannot read the current directory", e))?;
    let found = vmcast_gen::config::find(&here)?;
    if found.parent() == Some(here.as_path()) {
        return Ok(Path::new(vmcast_gen::config::DEFAULT_CONFIG).to_path_buf());
    }
    eprintln!("using {}", found.display());
    Ok(found)
}

#[derive(Debug, Parser)]
#[command(
    name = "vmcast-gen",
    version,
    about = "Publish virtual appliance images as a signed VMcast: an RSS 2.0 feed, \
             a SHA256SUMS manifest, minisign signatures and a landing page.",
    after_help = concat!(
        "Exit status:\n",
        "  0   success (warnings may have been printed)\n",
        "  1   any error; for verify and check, a check that failed\n",
        "  2   a usage error: a bad command line or option value\n",
        "  pull adds 3 (already current), 10 (refused: alert), 11 (interrupted: retry) and\n",
        "  12 (--exec failed); see `pull --help`.\n",
        "\n",
        "Docs: README.md and docs/feed-format.md in the source repository.",
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the site: scan releases, hash images, write feed, manifest, signatures and page.
    #[command(after_help = concat!(
        "Environment (an empty variable counts as unset, as an undefined CI secret is):\n",
        "  VMCAST_SECRET_KEY        the contents of a minisign secret key file (from a CI secret);\n",
        "                           used when --secret-key is not given, before the config's\n",
        "                           secret_key\n",
        "  VMCAST_KEY_PASSWORD      the password of an encrypted secret key (else asked on the\n",
        "                           terminal)\n",
        "  VMCAST_OPENPGP_KEY       the contents of an OpenPGP secret key, over the config's\n",
        "                           [catalogs] openpgp_key; with either, SHA256SUMS.asc and\n",
        "                           openpgp.asc are written too\n",
        "  VMCAST_OPENPGP_PASSWORD  the passphrase of that OpenPGP key (else asked on the terminal)\n",
        "  VMCAST_PKCS11_MODULE     the PKCS#11 module (.so) of a pkcs11: secret key whose URI has\n",
        "                           no module-path\n",
        "  VMCAST_PKCS11_PIN        the token's user PIN, when the URI has no pin-source (else asked\n",
        "                           on the terminal)\n",
        "  SOURCE_DATE_EPOCH        the build time in Unix seconds: the same inputs and the same\n",
        "                           value give a byte-identical site. It is also the build's\n",
        "                           sequence number, which consumers use for rollback protection,\n",
        "                           and the start of its expiry period.\n",
        "\n",
        "The site is built in a temporary directory beside the output and swapped in at the end:\n",
        "a failed build leaves the previous output untouched.",
    ))]
    Build(build::BuildArgs),
    /// Generate a new minisign-compatible key pair (--openpgp: an OpenPGP one), the secret key
    /// encrypted with a password (-W: not).
    #[command(
        after_help = "The password comes from VMCAST_KEY_PASSWORD, else it is asked twice on the \
        terminal; without either, keygen stops before writing anything. -W writes the key \
        unencrypted, as `minisign -G -W` does. Unlocking an encrypted key takes a few seconds \
        (scrypt, as minisign), once per build. Missing directories on the key paths are created.\n\n\
        The secret key is written with mode 0600. Keep it out of the output \
        directory and out of version control; in CI, store its contents in a secret and pass \
        them in VMCAST_SECRET_KEY (with VMCAST_KEY_PASSWORD if it is encrypted). Publish the \
        public key out of band so consumers can pin it.\n\n\
        --openpgp makes an OpenPGP key instead (v4, ed25519, ASCII-armored) for [catalogs] \
        openpgp_key, which clearsigns SHA256SUMS.asc for clients that check only OpenPGP \
        (gpgv, gpg --verify); its passphrase comes from VMCAST_OPENPGP_PASSWORD, and CI passes \
        the key's contents in VMCAST_OPENPGP_KEY.\n\n\
        --pkcs11 URI makes the key pair on a PKCS#11 token instead (a hardware security module, a \
        cloud KMS's PKCS#11 library, SoftHSM), where the secret key stays: only the public key is \
        written. The URI (RFC 7512) names the token and the new key's label, e.g. \
        pkcs11:token=vmcast;object=release?module-path=/usr/lib/softhsm/libsofthsm2.so (or set \
        VMCAST_PKCS11_MODULE); the PIN comes from VMCAST_PKCS11_PIN, the URI's pin-source, or the \
        terminal. --import FILE puts an existing minisign secret key on the token instead, so \
        the public key does not change. Then set secret_key to the URI and public_key to the \
        public key in vmcast.toml."
    )]
    Keygen(keygen::KeygenArgs),
    /// Verify a published site (a local output directory or an http(s) URL) as a consumer would.
    #[command(
        after_help = "Checks the signatures of the feed and the manifest (minisign's prehashed \
        signatures, which vmcast-gen and `minisign -S` make; legacy ones are refused), that the \
        feed's hash is in the signed manifest, that every image's length and SHA-256 in the feed agree with the manifest, \
        that every URL is under the site's declared URLs, that the build has not expired, and with \
        --state that it is not older than a build seen before (rollback) and which rotated keys were \
        announced. --images also streams every image and checks its length and SHA-256, fetching \
        only images whose URL passed the URL check.\n\n\
        Site: --site URL, and a state file (which remembers the first site it saw), refuse a build \
        signed for another site, even by the same key.\n\n\
        Network limits: each request for the feed, manifest, keys and signatures must finish \
        within --timeout seconds (default 60), and so must the headers of an image's response. An \
        image's body must bring at least --min-rate bytes per second (default 10240; 0 for no \
        minimum), measured over 30 s windows (or --timeout, if shorter), and may not stall for a \
        whole window. The error names the URL and what was slow.\n\n\
        Local sites: every file is opened once, never through a symbolic link, must be a regular \
        file, and is read no further than its limit (64 MiB for text files, the declared length \
        for images).\n\n\
        Exit status: 0 only when every check passes, 1 otherwise, 2 on a usage error."
    )]
    Verify(verify::VerifyArgs),
    /// Hash image files where they were built and write a sidecar (<file>.vmcast-hash) beside each.
    #[command(
        after_help = "A sidecar records the file's size, mtime and SHA-256. A later `build` \
        whose config sets trust_sidecars = true uses it instead of reading the image, as long as \
        the image's size and mtime still match: it trusts that an image with the same size and \
        mtime has the same content. Move images with a tool that keeps mtimes (tar, rsync -t)."
    )]
    Hash(hash::HashArgs),
    /// Validate the config, every release.toml and the templates without reading images.
    #[command(
        after_help = "Reports every problem at once, each with its file and line, and \
        renders the feed and page to a scratch location, so that build refuses nothing check \
        passed in the config, the notes, the templates, the images or the keys. Images are looked \
        for, by name, but not read; --no-images leaves them out, for a change to notes before its \
        images exist.\n\n\
        An encrypted secret key is unlocked with VMCAST_KEY_PASSWORD (a few seconds), so a wrong \
        password is found here. Without the variable, on a terminal, the key stays locked (build \
        asks for its password); elsewhere, as in CI, check reports that build would have no \
        password. A token's PIN comes from VMCAST_PKCS11_PIN, else the terminal. An empty \
        variable counts as unset.\n\n\
        Exit status 1 when anything is wrong."
    )]
    Check(check::CheckArgs),
    /// Upload a built site to S3 or an S3-compatible store, images first and feed.xml last.
    #[cfg(feature = "publish")]
    #[command(
        after_help = "Order: images; then SHA256SUMS, signatures, keys and the page; then the \
        per-appliance feeds; feed.xml last, so a polling client never sees a feed that points at \
        objects not there yet. Objects whose x-amz-meta-sha256 already matches are skipped, so a \
        publish can be repeated or resumed.\n\n\
        Credentials come from the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with \
        AWS_SESSION_TOKEN for temporary ones), or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN; \
        without them, from the EC2 instance metadata service. Profiles (AWS_PROFILE, ~/.aws) are \
        not read. AWS_REGION names the region; --endpoint-url or AWS_ENDPOINT_URL an \
        S3-compatible store (MinIO, Ceph, R2, ...). An empty variable counts as unset. A \
        --dry-run without credentials lists every file without looking at the bucket."
    )]
    Publish(publish::PublishArgs),
    /// Preview the site locally: build it for http://127.0.0.1, serve it, rebuild on changes.
    #[command(
        after_help = "The preview is built into a scratch directory with base_url set to the \
        local server, so feed readers, podcast apps, curl -r and feedparser work against it. \
        Content types are the ones a real host should send; single byte ranges are answered with \
        206. A throwaway key, new on every run, signs the preview, whatever key is configured: \
        the real key never signs a draft."
    )]
    Serve(serve::ServeArgs),
    /// Scaffold a new site: a commented vmcast.toml, an example release, a key pair and .gitignore entries.
    #[command(
        after_help = "Never overwrites a file: existing ones are kept and reported. The key pair \
        (vmcast.key, vmcast.pub) is made as `keygen` makes it: encrypted with a password from \
        VMCAST_KEY_PASSWORD or the terminal, unless -W; --no-keygen skips it."
    )]
    Init(init::InitArgs),
    /// Keep a host current: verify a VMcast, choose a release by channel and policy, download
    /// its image with resume, and check it before putting it in place.
    #[command(after_help = concat!(
        "Exit status:\n",
        "  0   a new image was put in place (then --exec runs)\n",
        "  3   the allowed release was already in place; nothing was downloaded\n",
        "  10  refused (alert): the feed or the image does not verify, or has no provenance\n",
        "      under --require-provenance\n",
        "  11  interrupted (retry): the network failed, stalled or was too slow; the next run\n",
        "      resumes\n",
        "  12  the image is in place, but --exec failed\n",
        "  1   any other failure\n",
        "  2   a usage error: a bad command line or option value\n",
        "Nothing is ever half-installed. For systemd: SuccessExitStatus=3.\n",
        "\n",
        "The feed is verified as `verify` does, with rollback and expiry protection through the \
        state file. The partial download, the record, the state file and the images are opened \
        beneath --dest without following links and used only when they are regular files with \
        one link, owned by the user running pull; anything else under those names is removed \
        with a warning. --keep removes only an image whose inode, size and mtime are the ones \
        recorded.",
    ))]
    Pull(pull::PullArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}
