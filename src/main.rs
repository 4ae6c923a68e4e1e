//! The `vmcast-gen` binary: parses the command line, dispatches to the
//! subcommand's module in `cmd`, prints the error chain once and picks the
//! exit code.

#![forbid(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cmd::{Cli, Command};
use vmcast_gen::{Error, Result};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The exit status of an error: 2 for a usage error, else 1, or what
    // the command documents.
    let mut failure: fn(&Error) -> u8 = cmd::failure_status;
    let result: Result<ExitCode> = match cli.command {
        Command::Pull(args) => {
            failure = cmd::pull::failure_status;
            cmd::pull::run(args)
        }
        Command::Build(args) => cmd::build::run(args).map(status),
        Command::Keygen(args) => cmd::keygen::run(args).map(status),
        Command::Verify(args) => cmd::verify::run(args).map(status),
        Command::Hash(args) => cmd::hash::run(args).map(status),
        Command::Check(args) => cmd::check::run(args).map(status),
        Command::Serve(args) => cmd::serve::run(args).map(status),
        #[cfg(feature = "publish")]
        Command::Publish(args) => cmd::publish::run(args).map(status),
        Command::Init(args) => cmd::init::run(args).map(status),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "vmcast-gen",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Error::failed("cannot write the man page", e)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", cmd::error_line(&err));
            ExitCode::from(failure(&err))
        }
    }
}

/// A command's verdict as the exit status: 0 when it held, 1 when not.
fn status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
