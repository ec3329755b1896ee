//! `vpcd exec ENDPOINT -- CMD [ARGS…]`: run a command inside an endpoint's network namespace,
//! like `ip netns exec` but by the names probes use (`VPC/INSTANCE`, `internet/HOST`) and without
//! needing `ip`.
//!
//! The namespace is the one a live `vpcd up` recorded for that endpoint (with the same
//! `VPCD_NETNS_PREFIX`), else the documented name derived from it. The process joins the
//! namespace (`setns`), gets the namespace's `resolv.conf` naming its VPC's resolver (a private
//! mount namespace with `/etc/netns/NAME/resolv.conf` bind-mounted over `/etc/resolv.conf`, as
//! `ip netns exec` does) and then becomes the command (`exec`), so the exit status, signals and
//! standard streams are the command's own. Exit 2 when the endpoint has no namespace or vpcd is
//! not root; 127 when the command is not found, 126 when it cannot be run.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::netns;
use crate::runtime::state;

use super::EXIT_BAD_INPUT;
use super::output::errln;

pub fn run(endpoint: &str, command: &[String]) -> u8 {
    let Some((program, args)) = command.split_first() else {
        errln!("vpcd exec: no command given; write `vpcd exec {endpoint} -- CMD [ARGS…]`");
        return EXIT_BAD_INPUT;
    };
    if endpoint.split('/').count() != 2 || endpoint.split('/').any(str::is_empty) {
        errln!(
            "vpcd exec: `{endpoint}` is not an endpoint name; write VPC/INSTANCE or internet/HOST"
        );
        return EXIT_BAD_INPUT;
    }
    if !nix::unistd::geteuid().is_root() {
        errln!("vpcd exec: needs root (CAP_SYS_ADMIN, to join a network namespace)");
        return EXIT_BAD_INPUT;
    }
    let namespace = match resolve(endpoint) {
        Ok(ns) => ns,
        Err(e) => {
            errln!("vpcd exec: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Err(e) = netns::enter(&namespace).and_then(|()| netns::bind_resolv_conf(&namespace)) {
        errln!("vpcd exec: {endpoint}: {e}");
        return EXIT_BAD_INPUT;
    }
    let err = Command::new(program).args(args).exec();
    errln!("vpcd exec: cannot run `{program}`: {err}");
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The namespace of `endpoint`: from a run's state file, else by the naming rule.
pub fn resolve(endpoint: &str) -> Result<String, netns::NetnsError> {
    let prefix = netns::prefix_from_env()?;
    for (_, path) in state::runs(&state::run_dir()) {
        if let Ok(st) = state::State::read(&path)
            && st.prefix == prefix
            && let Some((_, ns)) = st.namespaces.iter().find(|(e, _)| e == endpoint)
            && netns::exists(ns)
        {
            return Ok(ns.clone());
        }
    }
    let ns = netns::namespace_name(&prefix, endpoint);
    if netns::exists(&ns) {
        Ok(ns)
    } else {
        Err(netns::NetnsError::NotFound(ns))
    }
}
