//! `vpcd check FILE`: validate and print the resolved addressing plan.

use std::path::Path;

use super::EXIT_BAD_INPUT;

pub fn run(_file: &Path) -> u8 {
    EXIT_BAD_INPUT
}
