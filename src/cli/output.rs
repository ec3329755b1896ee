//! How the commands write: in a pipe (`vpcd test FILE | head -1`), a reader that goes away ends
//! the command quietly with the status it would have had, never a panic (`print!` panics on a
//! closed stdout, and Rust ignores SIGPIPE). Messages to stderr are written whole, and a closed
//! stderr is ignored (there is nobody left to tell). No command writes colours.

use std::io::{self, Write};

use super::EXIT_BAD_INPUT;

/// Writes `bytes` to stdout and flushes it.
pub fn stdout(bytes: impl AsRef<[u8]>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes.as_ref())?;
    out.flush()
}

/// Writes `text` to stderr in one piece; a failure is ignored.
pub fn stderr(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The exit code once the output was written: `code` when it was, or when the reader closed the
/// pipe (`| head`: it has what it wanted); otherwise [`EXIT_BAD_INPUT`] with a message (a full
/// disk, a closed terminal).
pub fn finish(code: u8, written: io::Result<()>) -> u8 {
    match written {
        Ok(()) => code,
        Err(e) if is_closed(&e) => code,
        Err(e) => {
            stderr(&format!("vpcd: cannot write the output: {e}\n"));
            EXIT_BAD_INPUT
        }
    }
}

/// Whether a write failed because the reader went away.
pub fn is_closed(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// `eprintln!` that never panics: the message is formatted first and written whole.
macro_rules! errln {
    () => {
        $crate::cli::output::stderr("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::output::stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics.
macro_rules! errprint {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr(&format!($($arg)*))
    };
}

pub(crate) use {errln, errprint};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_keeps_the_status_and_other_errors_are_bad_environment() {
        let closed = || Err(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(finish(0, closed()), 0);
        assert_eq!(finish(1, closed()), 1);
        assert_eq!(finish(1, Ok(())), 1);
        let full = Err(io::Error::from_raw_os_error(28)); // ENOSPC
        assert_eq!(finish(0, full), EXIT_BAD_INPUT);
    }
}
