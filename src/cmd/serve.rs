//! `vmcast-gen serve`: build a preview, serve it on 127.0.0.1 and rebuild
//! it when its inputs change.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use vmcast_gen::config::Overrides;
use vmcast_gen::serve::watch::Watcher;
use vmcast_gen::{BuildOptions, Error, Result};

use super::build::build_options;
use super::progress::{Bar, Show};
use super::term::paint_error;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The site configuration file (default: vmcast.toml here or in the nearest directory above).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(short, long, default_value_t = 8000)]
    pub port: u16,
    /// Build the preview here instead of a scratch directory.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The URL clients reach the preview at, when it is not the server's own
    /// http://127.0.0.1:PORT/ (behind a reverse proxy, a tunnel or a container's port mapping):
    /// the preview is built for it.
    #[arg(long, value_name = "URL", value_parser = super::verify::parse_site)]
    pub base_url: Option<url::Url>,
}

/// Builds into a preview directory with base_url pointing at the local
/// server, serves it, and rebuilds when the config, notes, images or
/// templates change. Runs until SIGINT or SIGTERM, then removes its
/// scratch directory; or until the server fails, with its error.
pub fn run(args: ServeArgs) -> Result<bool> {
    // The first signal asks the loop below to stop, so the scratch
    // directory is removed on the way out; a second one, say while a long
    // rebuild runs, ends the process at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|e| Error::failed("cannot handle SIGINT and SIGTERM", e))?;
    }
    let config = super::site_config(args.config)?;
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
    let own = url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("a valid URL");
    let url = args.base_url.unwrap_or_else(|| own.clone());
    let scratch = tempfile::Builder::new()
        .prefix("vmcast-preview-")
        .tempdir()
        .map_err(|e| Error::other(format_args!("cannot create a preview directory: {e}")))?;
    let out = args.out.unwrap_or_else(|| scratch.path().join("site"));
    let options = BuildOptions {
        preview: true,
        ..build_options(
            config.clone(),
            Overrides {
                output_dir: Some(out.clone()),
                secret_key: None,
                base_url: Some(url.clone()),
            },
            None,
        )?
    };
    let rebuild = |options: &BuildOptions| -> Result<()> {
        super::build_site(options, &Bar::new(Show::Nothing), &mut |_| {
            Err(Error::other(
                "a preview is signed with a throwaway key, not a password-protected one",
            ))
        })?;
        Ok(())
    };
    rebuild(&options)?;
    let on = match url == own {
        true => String::new(),
        false => format!(" on {own}"),
    };
    // A consumer's `verify` against the preview needs the throwaway key,
    // not the site's own: say so, and where it is.
    let key = out.join(vmcast_gen::media::PUBLIC_KEY);
    let key =
        vmcast_gen::sign::PublicKey::from_file(&key, &vmcast_gen::fsutil::read_to_string(&key)?)?;
    // In one write (a string that ends with its last line break), so that
    // a reader that takes the first line and goes has both.
    let start = format!(
        "Serving {url}{on} (from {}); signed with a throwaway key, whose public key is \
         {url}{}; Ctrl-C to stop\n\
         Verify the preview with: vmcast-gen verify {url} --pubkey-b64 {}\n",
        out.display(),
        vmcast_gen::media::PUBLIC_KEY,
        key.to_base64()
    );
    super::term::write_out(format_args!("{start}"));
    let _ = std::io::stdout().flush();
    let root = out.clone();
    let server = std::thread::Builder::new()
        .name("serve".to_owned())
        .spawn(move || vmcast_gen::serve::run(listener, root))
        .map_err(|e| Error::failed("cannot start the preview server", e))?;
    let mut watcher = Watcher::new(&config);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if stop.load(Ordering::SeqCst) {
            return Ok(true);
        }
        if server.is_finished() {
            return Err(match server.join() {
                Ok(e) => Error::failed("the preview server stopped: cannot accept connections", e),
                Err(_) => Error::other("the preview server crashed"),
            });
        }
        if watcher.changed() {
            match rebuild(&options) {
                Ok(()) => outln!("rebuilt"),
                Err(e) => eprintln!("{}", paint_error(&format!("error: {e}"))),
            }
            let _ = std::io::stdout().flush();
        }
    }
}
