//! The `vpcd` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vpcd::cli;

/// A userspace virtual network that behaves like a cloud VPC.
#[derive(Debug, Parser)]
#[command(name = "vpcd", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a topology file and print its resolved addressing plan.
    Check {
        /// The topology file (TOML).
        file: PathBuf,
    },
    /// Run a topology in process (no root) and check every probe it declares.
    Test {
        /// The topology file (TOML).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                cli::EXIT_BAD_INPUT
            } else {
                cli::EXIT_OK
            });
        }
    };
    let code = match args.command {
        Command::Check { file } => cli::check::run(&file),
        Command::Test { file } => cli::test::run(&file),
    };
    ExitCode::from(code)
}
