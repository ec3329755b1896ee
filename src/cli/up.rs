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
//! ([`crate::runtime::observing`]). Both are flushed when the run stops.
//!
//! Prints the table of endpoints and then [`crate::runtime::READY_LINE`] on stdout; errors go to
//! stderr. Exit 0 after a clean stop, 2 for bad input or environment (not root, no
//! `/dev/net/tun`, the topology already up, a namespace in the way, an unknown `--capture`
//! endpoint, an output that cannot be created).

use std::path::Path;

use crate::runtime::{self, ObserveArgs};
use crate::topology::{self, TopologyError};

use super::{EXIT_BAD_INPUT, EXIT_OK};

pub fn run(file: &Path, observe: &ObserveArgs) -> u8 {
    let plan = match topology::load(file) {
        Ok(plan) => plan,
        Err(e @ TopologyError::Io { .. }) => {
            eprintln!("{e}");
            return EXIT_BAD_INPUT;
        }
        Err(e) => {
            eprint!("{e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Err(msg) = check_environment() {
        eprintln!("vpcd up: {msg}");
        return EXIT_BAD_INPUT;
    }
    let mut out = std::io::stdout();
    match runtime::up(&plan, file, observe, &mut out) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("vpcd up: {e}");
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
