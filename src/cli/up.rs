//! `vpcd up FILE`: run a topology for real — a network namespace with a TUN device per `netns`
//! endpoint, an in-process stack per `sim` one — in the foreground until SIGINT or SIGTERM, then
//! remove everything it made. SIGHUP reloads FILE and applies the difference live
//! ([`crate::runtime::reload`]): a one-line summary on stdout, or — for a file that does not
//! validate, or a change that cannot be applied — the diagnostics on stderr while the previous
//! topology keeps running.
//!
//! `--flow-log TARGET` writes flow-log records (JSON lines) to a file or `-` (stdout) every
//! `--flow-log-window` seconds; `--capture ENDPOINT=FILE` (repeatable) writes a pcap of that
//! endpoint's traffic to FILE and the same packets on the far side of NAT to FILE.nat.pcap
//! ([`crate::runtime::observing`]). Both are flushed when the run stops. `--dns-query-log TARGET`
//! writes the VPC resolvers' query logs as JSON lines ([`crate::runtime::dns_log`]).
//!
//! `--state DIR` runs the *effective topology* of the control core instead of FILE: the state
//! saved in DIR (so API changes survive a restart), or FILE's on first use
//! ([`ControlState::open`]). With it, the HTTP/JSON API ([`crate::api`]) is served on a Unix
//! socket (mode 0600): `--api-socket PATH`, by default `RUN_DIR/RUN-ID.sock` (next to the run's
//! lock); the socket is removed when the run stops. `--api-listen ADDR:PORT` also serves it on
//! TCP, where every request must carry the bearer token read from `--api-token-file FILE`
//! ([`crate::api::auth`]). With `--state`, SIGHUP does not reload FILE: the API owns the
//! topology, and a file applied behind its back would differ from what a restart loads.
//!
//! Prints the table of endpoints and then [`crate::runtime::READY_LINE`] on stdout; errors go to
//! stderr. Exit 0 after a clean stop, 2 for bad input or environment (not root, no
//! `/dev/net/tun`, the topology already up, a namespace in the way, an unknown `--capture`
//! endpoint, an output that cannot be created).

use std::path::{Path, PathBuf};

use crate::control::{ControlState, StateError};
use crate::runtime::{self, ObserveArgs};
use crate::topology::{self, TopologyError};

use super::output::{self, errln, errprint};
use super::{EXIT_BAD_INPUT, EXIT_OK};

/// The API: where the control state lives and where to serve it.
#[derive(Debug, Clone, Default)]
pub struct ApiArgs {
    /// `--state DIR`; without it there is no API.
    pub state: Option<PathBuf>,
    /// `--api-socket PATH`; default [`default_socket`].
    pub socket: Option<PathBuf>,
    /// `--api-listen ADDR:PORT`: also serve on TCP, behind the token.
    pub listen: Option<std::net::SocketAddr>,
    /// `--api-token-file FILE`.
    pub token_file: Option<PathBuf>,
    /// `--log-dir DIR`: where files started through the API are written; default the state
    /// directory (`crate::runtime::log_file`).
    pub log_dir: Option<PathBuf>,
}

/// The default API socket of FILE's run: `RUN_DIR/RUN-ID.sock`.
pub fn default_socket(file: &Path) -> Result<PathBuf, String> {
    let prefix = crate::netns::prefix_from_env().map_err(|e| e.to_string())?;
    let id = runtime::state::run_id(&prefix, file);
    Ok(runtime::state::run_dir().join(format!("{id}.sock")))
}

/// `warm_pool`: `--warm-pool N`; `None`: [`crate::netns::pool::DEFAULT_SIZE`] with `--state`
/// (attaches come through the API), none without.
pub fn run(file: &Path, observe: &ObserveArgs, api: &ApiArgs, warm_pool: Option<usize>) -> u8 {
    if let Some(dir) = &api.state {
        let options = runtime::RunOptions {
            reload: runtime::Reload::Api,
            warm_pool: warm_pool.unwrap_or(crate::netns::pool::DEFAULT_SIZE),
        };
        return run_with_state(file, dir, api, observe, options);
    }
    let options = runtime::RunOptions {
        reload: runtime::Reload::File,
        warm_pool: warm_pool.unwrap_or(0),
    };
    let plan = match topology::load(file) {
        Ok(plan) => plan,
        Err(e @ TopologyError::Io { .. }) => {
            errln!("{e}");
            return EXIT_BAD_INPUT;
        }
        Err(e) => {
            errprint!("{e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Err(msg) = check_environment() {
        errln!("vpcd up: {msg}");
        return EXIT_BAD_INPUT;
    }
    let mut out = std::io::stdout();
    match runtime::up(&plan, file, observe, options, &mut out) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            errln!("vpcd up: {e}");
            EXIT_BAD_INPUT
        }
    }
}

fn run_with_state(
    file: &Path,
    dir: &Path,
    api: &ApiArgs,
    observe: &ObserveArgs,
    options: runtime::RunOptions,
) -> u8 {
    if let Err(msg) = check_environment() {
        errln!("vpcd up: {msg}");
        return EXIT_BAD_INPUT;
    }
    let tcp = match (api.listen, &api.token_file) {
        (Some(addr), Some(f)) => match crate::api::auth::Token::from_file(f) {
            Ok(t) => Some((addr, t)),
            Err(e) => {
                errln!("vpcd up: --api-token-file: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        (Some(_), None) => {
            errln!(
                "vpcd up: --api-listen needs --api-token-file FILE: a TCP port is open to every \
                 local user, so the API there is refused without a token"
            );
            return EXIT_BAD_INPUT;
        }
        _ => None,
    };
    let state = match ControlState::open(dir, file) {
        Ok(s) => s,
        Err(StateError::Invalid(e @ TopologyError::Io { .. })) => {
            errln!("{e}");
            return EXIT_BAD_INPUT;
        }
        Err(StateError::Invalid(e)) => {
            errprint!("{e}");
            return EXIT_BAD_INPUT;
        }
        Err(e) => {
            errln!("vpcd up: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let socket = match &api.socket {
        Some(s) => s.clone(),
        None => match default_socket(file) {
            Ok(s) => s,
            Err(e) => {
                errln!("vpcd up: {e}");
                return EXIT_BAD_INPUT;
            }
        },
    };
    let log_dir = match crate::runtime::log_file::LogDir::new(api.log_dir.as_deref().unwrap_or(dir))
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vpcd up: --log-dir: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let plan = state.plan().clone();
    let failed = std::cell::Cell::new(false);
    // Only a socket this run bound is removed (a refused start must not remove a live run's).
    let served = std::cell::Cell::new(false);
    let mut out = std::io::stdout();
    let result = runtime::up_with(&plan, file, observe, &mut out, options, |handle| {
        let listen = crate::api::Listen {
            socket: socket.clone(),
            tcp: tcp.clone(),
        };
        match crate::api::serve(&listen, state, dir.to_path_buf(), log_dir.clone(), handle) {
            Ok(server) => {
                tokio::spawn(server);
                served.set(true);
                let mut text = format!("api: {}\n", socket.display());
                if let Some((addr, _)) = &tcp {
                    text.push_str(&format!("api: http://{addr} (bearer token)\n"));
                }
                // A closed stdout must not stop the network (the runtime's lines ignore it too).
                let _ = output::stdout(text);
            }
            Err(e) => {
                errln!(
                    "vpcd up: cannot serve the API on {}: {e}; stopping",
                    socket.display()
                );
                failed.set(true);
                // The run's own SIGTERM handler stops it cleanly.
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
            }
        }
    });
    if served.get() {
        let _ = std::fs::remove_file(&socket);
    }
    match result {
        Ok(()) if failed.get() => EXIT_BAD_INPUT,
        Ok(()) => EXIT_OK,
        Err(e) => {
            errln!("vpcd up: {e}");
            EXIT_BAD_INPUT
        }
    }
}

/// Root and `/dev/net/tun`: what `up`, `exec` and `down` need before touching anything.
pub fn check_environment() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to create network namespaces and TUN \
             devices); run it with sudo, or use `vpcd test FILE` to run the topology in process \
             without root"
                .into(),
        );
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(
            "/dev/net/tun does not exist: load the tun module (`modprobe tun`) or, in a \
             container, pass the device through (`--device /dev/net/tun`)"
                .into(),
        );
    }
    Ok(())
}
