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
    let result: Result<bool> = match cli.command {
        Command::Build(args) => cmd::build::run(args),
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Hash(args) => cmd::hash::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        #[cfg(feature = "publish")]
        Command::Publish(args) => cmd::publish::run(args),
        Command::Init(args) => cmd::init::run(args),
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
            .map_err(|e| Error::failed("cannot write the man page", e)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("{}", cmd::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
