//! The `vmcast-gen` binary: parses the command line, calls the library,
//! prints the error chain once and picks the exit code.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use clap::CommandFactory;

use cli::{
    BuildArgs, CheckArgs, Cli, Command, HashArgs, InitArgs, KeygenArgs, ServeArgs, VerifyArgs,
};
use vmcast_gen::config::Overrides;
use vmcast_gen::hash::Progress;
use vmcast_gen::render::page::human_size;
use vmcast_gen::{BuildOptions, Error, Result};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build(args),
        Command::Keygen(args) => keygen(args),
        Command::Verify(args) => verify(args),
        Command::Hash(args) => hash(args),
        Command::Check(args) => check(args),
        Command::Serve(args) => serve(args),
        #[cfg(feature = "publish")]
        Command::Publish(args) => publish(args),
        Command::Init(args) => init(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "vmcast-gen",
                &mut std::io::stdout(),
            );
            Ok(true)
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| true)
            .map_err(|e| Error::other(format_args!("cannot write the man page: {e}"))),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            let mut line = format!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                line.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{}", paint_error(&line));
            ExitCode::FAILURE
        }
    }
}

/// The password of an encrypted key: from the environment, else asked on
/// the terminal.
fn password(what: &str) -> Result<String> {
    if let Ok(p) = std::env::var("VMCAST_KEY_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::other(format_args!(
            "{what} needs a password: set VMCAST_KEY_PASSWORD, or run on a terminal"
        )));
    }
    rpassword::prompt_password(format!("Password for {what}: "))
        .map_err(|e| Error::other(format_args!("cannot read the password: {e}")))
}

/// Build options from the environment and the given settings.
fn build_options(
    config: std::path::PathBuf,
    overrides: Overrides,
    cache_dir: Option<std::path::PathBuf>,
) -> Result<BuildOptions> {
    Ok(BuildOptions {
        config,
        overrides,
        secret_key_text: std::env::var("VMCAST_SECRET_KEY")
            .ok()
            .filter(|s| !s.is_empty()),
        build_time: source_date_epoch()?,
        threads: None,
        cache_dir: cache_dir.or_else(|| std::env::var_os("VMCAST_CACHE_DIR").map(Into::into)),
        default_cache_dir: user_cache_dir(),
        no_cache: false,
        verify_cache: false,
        preview: false,
    })
}

fn build(args: BuildArgs) -> Result<bool> {
    let started = Instant::now();
    let options = BuildOptions {
        threads: args.jobs.map(|n| n.get()),
        no_cache: args.no_cache,
        verify_cache: args.verify_cache,
        ..build_options(
            args.config,
            Overrides {
                output_dir: args.out,
                secret_key: args.secret_key,
                base_url: None,
            },
            args.cache_dir,
        )?
    };
    let bar = Bar::new(if args.quiet {
        Show::Nothing
    } else if std::io::stderr().is_terminal() {
        Show::Bar
    } else if args.progress {
        Show::Lines
    } else {
        Show::Nothing
    });
    let report = vmcast_gen::build(&options, &bar, &mut || password("the secret key"))?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if args.quiet {
        return Ok(true);
    }
    if args.json {
        let h = &report.hash;
        let summary = serde_json::json!({
            "output_dir": report.output_dir,
            "appliances": report.appliances,
            "releases": report.releases,
            "images": report.published,
            "feeds": report.feeds,
            "key_id": report.key_id,
            "image_bytes": report.image_bytes,
            "hashed": { "files": h.hashed_files, "bytes": h.hashed_bytes, "seconds": h.hash_time.as_secs_f64() },
            "from_cache": { "files": h.cached_files, "bytes": h.cached_bytes },
            "from_sidecars": { "files": h.sidecar_files, "bytes": h.sidecar_bytes },
            "warnings": report.warnings,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("the summary serializes")
        );
        return Ok(true);
    }
    let h = &report.hash;
    let secs = h.hash_time.as_secs_f64();
    let rate = if secs > 0.0 {
        format!("{:.2} GB/s", h.hashed_bytes as f64 / secs / 1e9)
    } else {
        "-".into()
    };
    let virtual_bytes: u64 = report.published.iter().filter_map(|i| i.virtual_size).sum();
    println!(
        "Built {} in {:.2}s: {} appliance(s), {} release(s), {} image(s), {} ({} of virtual disks)",
        report.output_dir.display(),
        started.elapsed().as_secs_f64(),
        report.appliances,
        report.releases,
        report.images,
        human_size(report.image_bytes),
        human_size(virtual_bytes)
    );
    println!(
        "Hashed {} image(s), {} ({} bytes), in {secs:.2}s, {rate}; not read: {} image(s), {} from the cache, {} image(s), {} from sidecars",
        h.hashed_files,
        human_size(h.hashed_bytes),
        h.hashed_bytes,
        h.cached_files,
        human_size(h.cached_bytes),
        h.sidecar_files,
        human_size(h.sidecar_bytes),
    );
    println!(
        "Signed {} and SHA256SUMS with key {}",
        report.feeds.join(", "),
        report.key_id
    );
    if args.verbose {
        for image in &report.published {
            println!(
                "  {}  {}  {}{}  sha256 {}",
                image.path,
                image.format,
                human_size(image.length),
                image
                    .virtual_size
                    .map_or(String::new(), |v| format!(", virtual {}", human_size(v))),
                image.sha256
            );
        }
    }
    Ok(true)
}

/// `error:` in bold red on a terminal, unless NO_COLOR is set.
fn paint_error(line: &str) -> String {
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match (color, line.strip_prefix("error:")) {
        (true, Some(rest)) => format!("\x1b[1;31merror\x1b[0m:{rest}"),
        _ => line.to_owned(),
    }
}

#[cfg(feature = "publish")]
fn publish(args: cli::PublishArgs) -> Result<bool> {
    let site = match args.out {
        Some(dir) => dir,
        None => vmcast_gen::config::load(&args.config, &Overrides::default())?.output_dir,
    };
    let mut content_types = std::collections::BTreeMap::new();
    for pair in &args.content_type {
        let (ext, kind) = pair.split_once('=').ok_or_else(|| {
            Error::other(format_args!("--content-type `{pair}`: expected EXT=TYPE"))
        })?;
        content_types.insert(
            ext.trim_start_matches('.').to_ascii_lowercase(),
            kind.to_owned(),
        );
    }
    let options = vmcast_gen::publish::PublishOptions {
        site,
        target: args.target,
        endpoint: args.endpoint_url,
        dry_run: args.dry_run,
        prune: args.prune,
        short_cache: args.cache_control,
        image_cache: args.image_cache_control,
        content_types,
        acl: args.acl,
        fail_after: std::env::var("VMCAST_TEST_FAIL_AFTER_UPLOADS")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let json = args.json;
    let dry = args.dry_run;
    let report = vmcast_gen::publish::publish(&options, |step| {
        if !json {
            let verb = match (step.action, dry) {
                ("upload", true) => "would upload",
                ("delete", true) => "would delete",
                ("upload", false) => "upload",
                ("delete", false) => "delete",
                _ => "unchanged",
            };
            println!("{verb:>12}  {}  {}", step.path, step.content_type);
        }
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        println!(
            "{} uploaded, {} unchanged, {} deleted{}",
            report.uploaded,
            report.skipped,
            report.deleted,
            if dry {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        );
    }
    Ok(true)
}

/// Builds into a preview directory with base_url pointing at the local
/// server, serves it, and rebuilds when the config, notes, images or
/// templates change. Runs until killed.
fn serve(args: ServeArgs) -> Result<bool> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", args.port)).map_err(|e| {
        Error::other(format_args!(
            "cannot listen on 127.0.0.1:{}: {e}",
            args.port
        ))
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::other(format_args!("cannot read the listening port: {e}")))?
        .port();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("a valid URL");
    let scratch = tempfile::Builder::new()
        .prefix("vmcast-preview-")
        .tempdir()
        .map_err(|e| Error::other(format_args!("cannot create a preview directory: {e}")))?;
    let out = args.out.unwrap_or_else(|| scratch.path().join("site"));
    let options = BuildOptions {
        preview: true,
        ..build_options(
            args.config.clone(),
            Overrides {
                output_dir: Some(out.clone()),
                secret_key: args.secret_key,
                base_url: Some(url.clone()),
            },
            None,
        )?
    };
    let rebuild = |options: &BuildOptions| -> Result<()> {
        let report = vmcast_gen::build(options, &Bar::new(Show::Nothing), &mut || {
            password("the secret key")
        })?;
        for warning in &report.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(())
    };
    rebuild(&options)?;
    println!("Serving {url} (from {}); Ctrl-C to stop", out.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let root = out.clone();
    std::thread::spawn(move || vmcast_gen::serve::run(listener, root));
    let mut seen = fingerprint(&args.config);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = fingerprint(&args.config);
        if now != seen {
            seen = now;
            match rebuild(&options) {
                Ok(()) => println!("rebuilt"),
                Err(e) => eprintln!("{}", paint_error(&format!("error: {e}"))),
            }
            let _ = std::io::stdout().flush();
        }
    }
}

/// Names, sizes and mtimes of everything a build reads: the config, the
/// releases tree, the images directory and the templates.
fn fingerprint(config: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut roots = vec![config.to_path_buf()];
    if let Ok(c) = vmcast_gen::config::load(config, &Overrides::default()) {
        roots.push(c.releases_dir);
        roots.push(c.templates_dir);
        roots.extend(c.images_dir);
    }
    let mut out = Vec::new();
    for root in roots {
        for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
            if let Ok(meta) = entry.metadata() {
                let mtime = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                out.push((entry.path().to_path_buf(), meta.len(), mtime));
            }
        }
    }
    out
}

fn check(args: CheckArgs) -> Result<bool> {
    let report = vmcast_gen::check::check(&args.config, args.images)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for problem in &report.problems {
        let mut line = format!("error: {problem}");
        let mut source = std::error::Error::source(problem);
        while let Some(cause) = source {
            line.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("{}", paint_error(&line));
    }
    println!(
        "checked {} release(s): {}",
        report.releases,
        match report.problems.len() {
            0 => "no problems".to_owned(),
            n => format!("{n} problem(s)"),
        }
    );
    Ok(report.problems.is_empty())
}

fn init(args: InitArgs) -> Result<bool> {
    use vmcast_gen::init::Outcome;
    let mut done = vmcast_gen::init::init(&args.dir)?;
    if args.templates {
        done.extend(vmcast_gen::init::templates(&args.dir.join("templates"))?);
    }
    for outcome in &done {
        match outcome {
            Outcome::Created(p) => println!("created  {}", p.display()),
            Outcome::Extended(p) => println!("extended {}", p.display()),
            Outcome::Kept(p) => println!("kept     {} (exists; not overwritten)", p.display()),
        }
    }
    if args.keygen {
        keygen(KeygenArgs {
            secret_key: args.dir.join("vmcast.key"),
            public_key: args.dir.join("vmcast.pub"),
            force: false,
            no_password: args.no_password,
        })?;
    }
    Ok(true)
}

/// `$XDG_CACHE_HOME/vmcast-gen`, else `~/.cache/vmcast-gen`.
fn user_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("vmcast-gen"))
}

fn hash(args: HashArgs) -> Result<bool> {
    let threads = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.get(),
    );
    let bar = Bar::new(if std::io::stderr().is_terminal() {
        Show::Bar
    } else {
        Show::Nothing
    });
    for (sidecar, digest) in vmcast_gen::write_sidecars(&args.files, threads, &bar)? {
        println!("{}  {}", digest.sha256, sidecar.display());
    }
    Ok(true)
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for "now".
fn source_date_epoch() -> Result<Option<DateTime<Utc>>> {
    let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(None);
    };
    value
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(Some)
        .ok_or_else(|| {
            Error::other(format_args!(
                "SOURCE_DATE_EPOCH=`{value}` is not a number of seconds since 1970-01-01"
            ))
        })
}

fn keygen(args: KeygenArgs) -> Result<bool> {
    let password = if args.no_password {
        None
    } else if let Ok(p) = std::env::var("VMCAST_KEY_PASSWORD") {
        Some(p)
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password for the new key: ")
            .map_err(|e| Error::other(format_args!("cannot read the password: {e}")))?;
        let again = rpassword::prompt_password("Password (again): ")
            .map_err(|e| Error::other(format_args!("cannot read the password: {e}")))?;
        if first != again {
            return Err(Error::other("the passwords differ"));
        }
        Some(first)
    } else {
        return Err(Error::other(
            "keygen encrypts the secret key: set VMCAST_KEY_PASSWORD, run on a terminal, \
             or pass -W for an unencrypted key",
        ));
    };
    if password.as_deref() == Some("") {
        return Err(Error::other(
            "an empty password; pass -W for an unencrypted key",
        ));
    }
    let public = vmcast_gen::keygen(
        &args.secret_key,
        &args.public_key,
        args.force,
        password.as_deref(),
    )?;
    println!(
        "Wrote secret key {} (mode 0600) and public key {}\nKey id {}; public key: {}",
        args.secret_key.display(),
        args.public_key.display(),
        public.key_id,
        public.to_base64()
    );
    Ok(true)
}

fn verify(args: VerifyArgs) -> Result<bool> {
    let pinned = match (&args.pubkey, &args.pubkey_b64) {
        (Some(path), _) => vmcast_gen::sign::PublicKey::from_file(
            path,
            &vmcast_gen::fsutil::read_to_string(path)?,
        )?,
        (None, Some(b64)) => vmcast_gen::sign::PublicKey::from_base64(b64)
            .map_err(|m| Error::other(format_args!("--pubkey-b64: {m}")))?,
        (None, None) => unreachable!("clap requires one of --pubkey and --pubkey-b64"),
    };
    let report = vmcast_gen::verify::verify(&vmcast_gen::verify::VerifyOptions {
        source: args.source,
        pinned,
        state: args.state,
        images: args.images,
        now: chrono::Utc::now(),
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        println!("verify {}", report.source);
        for check in &report.checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            println!("  {mark} {:<9} {}", check.check, check.detail);
        }
        if report.ok {
            println!(
                "verified: {} release(s), {} image(s){}, key {}, sequence {}",
                report.releases,
                report.images,
                if report.images_read > 0 {
                    format!(", {} image bytes read", report.images_read)
                } else {
                    String::new()
                },
                report.key_id.as_deref().unwrap_or("-"),
                report.sequence.map_or("-".into(), |s| s.to_string())
            );
        } else {
            let failed = report.failures().count();
            println!("NOT verified: {failed} check(s) failed");
        }
    }
    if !report.ok {
        for failure in report.failures() {
            eprintln!("error: {}", failure.detail);
        }
    }
    Ok(report.ok)
}

/// How hashing progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Show {
    Nothing,
    /// A live bar on a terminal.
    Bar,
    /// A plain line every few seconds, for CI logs.
    Lines,
}

/// Hashing progress on stderr: bytes, rate, ETA and files.
struct Bar {
    bar: ProgressBar,
    show: Show,
    files: AtomicUsize,
    done: AtomicUsize,
    started: Instant,
    /// Milliseconds since `started` of the last printed line.
    last_line: AtomicU64,
}

impl Bar {
    fn new(show: Show) -> Self {
        let target = if show == Show::Bar {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} hashing {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} [{wide_bar}] {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        Bar {
            bar,
            show,
            files: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            started: Instant::now(),
            last_line: AtomicU64::new(0),
        }
    }

    fn line(&self) {
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "hashing: {} of {} ({:.0}%), {:.2} GB/s, {}/{} files",
            human_size(pos),
            human_size(len),
            if len > 0 {
                pos as f64 * 100.0 / len as f64
            } else {
                100.0
            },
            pos as f64 / secs / 1e9,
            self.done.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed)
        );
    }
}

impl Progress for Bar {
    fn begin(&self, files: usize, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.show == Show::Lines {
            let now = self.started.elapsed().as_millis() as u64;
            let last = self.last_line.load(Ordering::Relaxed);
            if now >= last + 5_000
                && self
                    .last_line
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.line();
            }
        }
    }

    fn file_done(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let files = self.files.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{files} files"));
    }

    fn end(&self) {
        if self.show == Show::Lines && self.files.load(Ordering::Relaxed) > 0 {
            self.line();
        }
        self.bar.finish_and_clear();
    }
}
