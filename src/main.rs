//! The `vpcd` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
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
    /// Run a topology in process (no root) and check the probes it declares; report as a table,
    /// JSON or JUnit XML (for CI).
    Test(cli::test::TestArgs),
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
        /// Write flow-log records (AWS VPC Flow Logs fields, JSON lines) to FILE, or to stdout
        /// with `-`: one record per flow, port and window, ACCEPT or REJECT with the reason.
        #[arg(long, value_name = "FILE|-")]
        flow_log: Option<String>,
        /// The flow log's capture window in seconds (records are written when it closes, and
        /// the open window when vpcd stops).
        #[arg(long, value_name = "SECONDS", default_value_t = 60.0, requires = "flow_log",
              value_parser = parse_window)]
        flow_log_window: f64,
        /// Capture ENDPOINT's packets (`VPC/INSTANCE` or `internet/HOST`) as pcap: FILE holds
        /// its own view (private addresses), FILE.nat.pcap (x.pcap -> x.nat.pcap) the same
        /// packets beyond NAT (the EIP). Repeatable; read with `tcpdump -r` or `tshark -r`.
        #[arg(long, value_name = "ENDPOINT=FILE")]
        capture: Vec<String>,
        /// Write the VPC resolvers' query logs (Route 53 Resolver query-log fields, JSON lines)
        /// to FILE, or to stdout with `-`: one record per answered query.
        #[arg(long, value_name = "FILE|-")]
        dns_query_log: Option<String>,
        /// Keep the effective topology (FILE plus every API change) in DIR and serve the
        /// HTTP/JSON API: after a restart with the same DIR, DIR's state wins over FILE.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// The API's Unix socket (mode 0600); default `/run/vpcd/RUN-ID.sock` (`VPCD_RUN_DIR`).
        #[arg(long, value_name = "PATH", requires = "state")]
        api_socket: Option<PathBuf>,
        /// Also serve the API on this TCP address (e.g. 127.0.0.1:7070); needs
        /// --api-token-file.
        #[arg(long, value_name = "ADDR:PORT", requires_all = ["state", "api_token_file"])]
        api_listen: Option<std::net::SocketAddr>,
        /// The bearer token TCP clients must send (a file holding one line, 16+ characters).
        #[arg(long, value_name = "FILE", requires = "api_listen")]
        api_token_file: Option<PathBuf>,
        /// The only directory where flow logs, DNS query logs and captures started through the
        /// API are written (appended to, never truncated; no symbolic links); default the
        /// --state DIR. Created if missing.
        #[arg(long, value_name = "DIR", requires = "state")]
        log_dir: Option<PathBuf>,
        /// Keep N network namespaces with their TUN devices made ahead, so that attaching a
        /// `netns` instance (API or reload) only addresses one; 0 turns it off. Default: 8 with
        /// --state, 0 without.
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u16).range(0..=vpcd::netns::pool::MAX_SIZE as i64))]
        warm_pool: Option<u16>,
    },
    /// Inspect and change a running `vpcd up --state` through its API: VPCs, subnets, routes,
    /// instances, EIPs, NAT, firewalls, conntrack, flow logs, captures (see `vpcd ctl --help`).
    Ctl(cli::ctl::CtlArgs),
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
    /// Print a shell completion script for the whole `vpcd` command line, e.g.
    /// `vpcd completions bash > /etc/bash_completion.d/vpcd`.
    Completions {
        /// bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
}

/// A window length: a positive number of seconds, at least a millisecond.
fn parse_window(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.001..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a window: write seconds between 0.001 and 86400, e.g. 60 or 0.5"
        )),
    }
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
        Command::Test(args) => cli::test::run(&args),
        Command::Explain {
            file,
            from,
            to,
            source_port,
        } => cli::explain::run(&file, &from, &to, source_port),
        Command::Up {
            file,
            flow_log,
            flow_log_window,
            capture,
            dns_query_log,
            state,
            api_socket,
            api_listen,
            api_token_file,
            log_dir,
            warm_pool,
        } => cli::up::run(
            &file,
            &vpcd::runtime::ObserveArgs {
                flow_log,
                window: std::time::Duration::from_secs_f64(flow_log_window),
                captures: capture,
                dns_query_log,
            },
            &cli::up::ApiArgs {
                state,
                socket: api_socket,
                listen: api_listen,
                token_file: api_token_file,
                log_dir,
            },
            warm_pool.map(usize::from),
        ),
        Command::Ctl(args) => cli::ctl::run(&args),
        Command::Exec { endpoint, command } => cli::exec::run(&endpoint, &command),
        Command::Down { file } => cli::down::run(file.as_deref()),
        Command::Completions { shell } => {
            // Into a buffer: the generator panics on a write error (`| head` closes the pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "vpcd", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            cli::EXIT_OK
        }
    };
    ExitCode::from(code)
}
