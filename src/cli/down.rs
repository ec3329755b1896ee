//! `vpcd down [FILE]`: remove what a crashed `vpcd up` left behind — namespaces (and the TUN
//! devices and processes in them) and state files.
//!
//! With FILE: that topology's run, found by its state file and by the namespace names its
//! endpoints have. Without: every run in the run directory whose `vpcd up` is gone, and every
//! namespace carrying the prefix (`vpcd-`, or `VPCD_NETNS_PREFIX`) that no live run owns. A live
//! run is left alone and named. Exit 0 when nothing of a dead run is left, 1 when FILE's run is
//! still alive, 2 for environment errors.

use std::path::Path;

use crate::runtime;
use crate::topology;

use super::output::{self, errln};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};

pub fn run(file: Option<&Path>) -> u8 {
    if !nix::unistd::geteuid().is_root() {
        errln!("vpcd down: needs root (CAP_SYS_ADMIN, to remove network namespaces)");
        return EXIT_BAD_INPUT;
    }
    // A file that no longer parses still names its run (by path); only the derived names need
    // the plan.
    let plan = file.and_then(|f| topology::load(f).ok());
    let mut out = std::io::stdout();
    match runtime::down(file.map(|f| (f, plan.as_ref())), &mut out) {
        Ok(report) => {
            let mut text = String::new();
            for (id, pid) in &report.live {
                text.push_str(&format!(
                    "left alone: run {id} is live (vpcd up pid {pid}); stop it with Ctrl-C or `kill -TERM {pid}`\n"
                ));
            }
            if report.removed.is_empty() {
                text.push_str("nothing to remove\n");
            }
            let code = if file.is_some() && !report.live.is_empty() {
                EXIT_FAILED
            } else {
                EXIT_OK
            };
            output::finish(code, output::stdout(text))
        }
        Err(e) => {
            errln!("vpcd down: {e}");
            EXIT_BAD_INPUT
        }
    }
}
