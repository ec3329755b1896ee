//! `vpcd test FILE`: run the topology in process and check its probes.

use std::path::Path;

use super::EXIT_BAD_INPUT;

pub fn run(_file: &Path) -> u8 {
    EXIT_BAD_INPUT
}
