//! The user's commands, one file each. Each returns the process exit code:
//! 0 ok, 1 a check or probe failed, 2 bad input or environment.

pub mod check;
pub mod ctl;
pub mod down;
pub mod exec;
pub mod explain;
pub mod output;
pub mod report;
pub mod test;
pub mod up;

/// Exit code: everything held.
pub const EXIT_OK: u8 = 0;
/// Exit code: a check or probe failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad input or environment.
pub const EXIT_BAD_INPUT: u8 = 2;
