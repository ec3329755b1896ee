//! `vpcd explain FILE FROM TO`: whether FROM reaches TO, hop by hop, and what blocks it.
//!
//! Prints the numbered hops and a final `verdict:` line (see [`crate::explain`]). Exit 0 when
//! reachable, 1 when blocked, 2 when the file is invalid or FROM/TO cannot be resolved.

use std::path::Path;

use super::output::{self, errln, errprint};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::explain::{Query, explain};
use crate::topology;

pub fn run(file: &Path, from: &str, to: &str, source_port: u16) -> u8 {
    let plan = match topology::load(file) {
        Ok(p) => p,
        Err(e) => {
            let text = e.to_string();
            errprint!("{text}");
            if !text.ends_with('\n') {
                errln!();
            }
            return EXIT_BAD_INPUT;
        }
    };
    let mut query = match Query::parse(&plan, from, to) {
        Ok(q) => q,
        Err(e) => {
            errln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if source_port == 0 {
        errln!("error: --source-port must be 1-65535");
        return EXIT_BAD_INPUT;
    }
    query.source_port = source_port;
    let tables = topology::compile::tables(&plan);
    let e = explain(&plan, &tables, &query);
    let code = if e.reachable() { EXIT_OK } else { EXIT_FAILED };
    output::finish(code, output::stdout(e.render()))
}
