//! The I/O half of flow logs: records as JSON lines (one object per line) to any `io::Write`.
//!
//! Not sans-IO: it writes. Call it off the packet path, with the records
//! [`super::FlowLog::drain_into`] handed over after a window closed.

use std::io::{self, BufWriter, Write};

use super::FlowRecord;

/// Writes flow-log records as JSON lines. Buffered; [`FlowLogWriter::write`] flushes at the end of
/// each batch so a reader (`tail -f`) sees whole windows.
#[derive(Debug)]
pub struct FlowLogWriter<W: Write> {
    out: BufWriter<W>,
    written: u64,
}

impl<W: Write> FlowLogWriter<W> {
    pub fn new(out: W) -> Self {
        FlowLogWriter {
            out: BufWriter::new(out),
            written: 0,
        }
    }

    /// Writes `records`, one JSON object per line, then flushes.
    pub fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        for r in records {
            serde_json::to_writer(&mut self.out, r).map_err(io::Error::other)?;
            self.out.write_all(b"\n")?;
            self.written += 1;
        }
        self.out.flush()
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}
