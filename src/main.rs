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
    /// Explain whether FROM reaches TO and what blocks it: a static walk of the compiled tables
    /// (routes, security groups, network ACLs, NAT), without sending a packet.
    Explain {
        /// The topology file (TOML).
        file: PathBuf,
        /// `VPC/INSTANCE` or `internet/HOST`.
        from: String,
        /// A probe target: `ADDRESS:PORT/tcp`, `VPC/INSTANCE:PORT/udp`, `internet/HOST/icmp`, ...
        to: String,
        /// The client's source port (and ICMP echo identifier).
        #[arg(long, default_value_t = vpcd::explain::DEFAULT_SOURCE_PORT)]
        source_port: u16,
    },
    /// Run a topology for real (root): a network namespace with a TUN device per `netns`
    /// endpoint; stays in the foreground until Ctrl-C, then removes everything it made.
    Up {
        /// The topology file (TOML).
        file: PathBuf,
    },
    /// Run a command inside an endpoint's namespace (root), with the command's exit status.
    Exec {
        /// `VPC/INSTANCE` or `internet/HOST`.
        endpoint: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove what a crashed `vpcd up` left (root): of FILE's run, or of every dead run.
    Down {
        /// The topology file (TOML); without it, every run that is not alive.
        file: Option<PathBuf>,
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
        Command::Explain {
            file,
            from,
            to,
            source_port,
        } => cli::explain::run(&file, &from, &to, source_port),
        Command::Up { file } => cli::up::run(&file),
        Command::Exec { endpoint, command } => cli::exec::run(&endpoint, &command),
        Command::Down { file } => cli::down::run(file.as_deref()),
    };
    ExitCode::from(code)
}
