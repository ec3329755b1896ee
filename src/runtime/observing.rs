//! `vpcd up --flow-log` and `--capture`: the shell's side of [`crate::observe`].
//!
//! [`ObserveArgs`] is what the command line asked for; [`ObserveArgs::open`] checks it against the
//! compiled tables and opens every output **before** anything is created (a bad endpoint or an
//! unwritable file is an error with nothing to tear down). [`Sinks`] then lives in the shell's
//! loop beside its [`Observer`]: the loop calls [`Sinks::service`] once per wake-up and
//! [`Sinks::finish`] when it stops.
//!
//! I/O happens inline on the loop's thread, off the per-packet path: flow-log records are written
//! once per window (small, buffered, one flush), capture bytes when a capture has more than
//! [`CAPTURE_FLUSH_BYTES`] pending or [`CAPTURE_FLUSH_EVERY`] after its first unwritten packet — a
//! sequential `write()` of at most about a megabyte to the page cache, well under a millisecond.
//! A write that fails (disk full, stdout closed) is reported once on stderr and that output is
//! dropped; the network keeps serving.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::observe::{
    Capture, CaptureConfig, CaptureFiles, DEFAULT_WINDOW, FlowLog, FlowLogConfig, FlowLogWriter,
    FlowRecord, Observer, View, open_flow_log, parse_capture_arg,
};
use crate::tables::{PortId, Tables};
use crate::time::Instant;

/// A capture is written out once this many bytes are pending in one of its views.
pub const CAPTURE_FLUSH_BYTES: usize = 1 << 20;
/// ... or this long after its first unwritten packet.
pub const CAPTURE_FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What `vpcd up` was asked to observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveArgs {
    /// `--flow-log TARGET`: a file, or `-` for stdout.
    pub flow_log: Option<String>,
    /// `--flow-log-window`: the capture window.
    pub window: Duration,
    /// `--capture ENDPOINT=FILE`, as written.
    pub captures: Vec<String>,
}

impl Default for ObserveArgs {
    fn default() -> Self {
        ObserveArgs {
            flow_log: None,
            window: DEFAULT_WINDOW,
            captures: Vec::new(),
        }
    }
}

/// Why the observation outputs could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("--capture: {0}")]
    BadCapture(String),
    #[error(
        "--capture {arg}: no endpoint `{endpoint}` in the topology (endpoints: {known}); write \
         VPC/INSTANCE or internet/HOST as `vpcd check FILE` lists them"
    )]
    UnknownEndpoint {
        arg: String,
        endpoint: String,
        known: String,
    },
    #[error("--flow-log {target}: {source}")]
    FlowLog {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--capture {arg}: cannot create {path}: {source}")]
    CaptureFile {
        arg: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The outputs, opened, waiting for the shell's clock.
pub struct Opened {
    window: Duration,
    flow_out: Option<FlowLogWriter<Box<dyn Write + Send>>>,
    captures: Vec<(PortId, CaptureFiles)>,
}

impl ObserveArgs {
    pub fn is_empty(&self) -> bool {
        self.flow_log.is_none() && self.captures.is_empty()
    }

    /// Resolves every capture's endpoint in `tables` and opens every output (files are created
    /// or truncated).
    pub fn open(&self, tables: &Tables) -> Result<Opened, ObserveError> {
        let mut captures = Vec::with_capacity(self.captures.len());
        for arg in &self.captures {
            let (endpoint, file) = parse_capture_arg(arg).map_err(ObserveError::BadCapture)?;
            let Some(port) = tables.port_named(&endpoint) else {
                let known: Vec<&str> = tables.ports.iter().map(|p| p.name.as_str()).collect();
                return Err(ObserveError::UnknownEndpoint {
                    arg: arg.clone(),
                    endpoint,
                    known: known.join(", "),
                });
            };
            let files =
                CaptureFiles::create(&file).map_err(|source| ObserveError::CaptureFile {
                    arg: arg.clone(),
                    path: display(&file),
                    source,
                })?;
            captures.push((port, files));
        }
        let flow_out = match &self.flow_log {
            Some(target) => {
                Some(
                    open_flow_log(target).map_err(|source| ObserveError::FlowLog {
                        target: target.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Opened {
            window: self.window,
            flow_out,
            captures,
        })
    }
}

fn display(p: &std::path::Path) -> String {
    PathBuf::from(p).display().to_string()
}

/// Unix time now: the `epoch` of a shell whose `Instant::ZERO` is now.
pub fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Opened {
    /// The observer and its outputs for a shell whose `Instant::ZERO` is Unix time `epoch`.
    pub fn start(self, tables: &Tables, epoch: Duration, seed: u64) -> (Observer, Sinks) {
        let mut obs = Observer::new();
        if self.flow_out.is_some() {
            obs.set_flow_log(FlowLog::new(
                tables,
                FlowLogConfig {
                    epoch,
                    seed,
                    window: self.window,
                    ..FlowLogConfig::default()
                },
            ));
        }
        let mut files = Vec::with_capacity(self.captures.len());
        for (port, f) in self.captures {
            let i = obs.add_capture(Capture::new(
                port,
                CaptureConfig {
                    epoch,
                    ..CaptureConfig::default()
                },
            ));
            debug_assert_eq!(i, files.len());
            files.push(Some(f));
        }
        let n = files.len();
        let mut sinks = Sinks {
            flow_out: self.flow_out,
            records: Vec::new(),
            files,
            written_at: vec![None; n],
        };
        // The file headers now, so that every capture file is a valid (empty) pcap from the start.
        for i in 0..n {
            sinks.write_capture(&mut obs, i);
        }
        (obs, sinks)
    }
}

/// The open outputs of a running shell.
pub struct Sinks {
    flow_out: Option<FlowLogWriter<Box<dyn Write + Send>>>,
    records: Vec<FlowRecord>,
    /// Per capture (by the observer's index); `None` after a failed write.
    files: Vec<Option<CaptureFiles>>,
    /// Per capture: when its pending bytes are due on disk (`None`: nothing pending seen yet).
    written_at: Vec<Option<Instant>>,
}

impl Sinks {
    /// Outputs that observe nothing (the shell without flags).
    pub fn none() -> Sinks {
        Sinks {
            flow_out: None,
            records: Vec::new(),
            files: Vec::new(),
            written_at: Vec::new(),
        }
    }

    /// Whether there is anything to service (without flags the loop skips [`Sinks::service`]).
    pub fn is_active(&self) -> bool {
        self.flow_out.is_some() || !self.files.is_empty()
    }

    /// When the shell must wake up for the observer: the flow log's window end, or a capture's
    /// write deadline.
    pub fn poll_timeout(&self, obs: &Observer) -> Option<Instant> {
        let captures = self.written_at.iter().flatten().copied().min();
        match (obs.poll_timeout(), captures) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the observer's timers and writes what is due: closed flow-log windows, and captures
    /// that are full enough or old enough.
    pub fn service(&mut self, obs: &mut Observer, now: Instant) {
        if obs.poll_timeout().is_some_and(|t| t <= now) {
            obs.handle_timeout(now);
            self.write_records(obs);
        }
        for i in 0..self.files.len() {
            let (Some(Some(_)), Some(c)) = (self.files.get(i), obs.capture_mut(i)) else {
                continue;
            };
            // The file header is pending until the first write: count only packets.
            if c.pending_bytes() <= 24 && self.written_at[i].is_none() {
                continue;
            }
            let due = *self.written_at[i].get_or_insert(now + CAPTURE_FLUSH_EVERY) <= now;
            if due || c.pending_bytes() >= CAPTURE_FLUSH_BYTES {
                self.write_capture(obs, i);
            }
        }
    }

    /// Clean stop: closes the flow log's window and writes every record and every capture.
    pub fn finish(&mut self, obs: &mut Observer, now: Instant) {
        obs.flush_all(now);
        self.write_records(obs);
        for i in 0..self.files.len() {
            self.write_capture(obs, i);
        }
    }

    /// What was written, for `vpcd up`'s closing line: `; N flow-log record(s) to T; capture F:
    /// P packet(s)…` (empty without flags).
    pub fn summary(&self, obs: &Observer) -> String {
        let mut t = String::new();
        if let Some(out) = &self.flow_out {
            t.push_str(&format!("; {} flow-log record(s) written", out.written()));
        }
        for (i, f) in self.files.iter().enumerate() {
            let (Some(f), Some(c)) = (f, obs.captures().get(i)) else {
                continue;
            };
            t.push_str(&format!(
                "; captured {} packet(s) to {} and {} to {}",
                c.packets(View::Port),
                f.path.display(),
                c.packets(View::Nat),
                f.nat_path.display()
            ));
            let dropped = c.dropped(View::Port) + c.dropped(View::Nat);
            if dropped > 0 {
                t.push_str(&format!(" ({dropped} not captured: buffer full)"));
            }
        }
        t
    }

    fn write_records(&mut self, obs: &mut Observer) {
        obs.drain_flow_records(&mut self.records);
        if let Some(out) = &mut self.flow_out
            && !self.records.is_empty()
            && let Err(e) = out.write(&self.records)
        {
            eprintln!("vpcd up: writing the flow log failed ({e}); flow logging stops");
            self.flow_out = None;
        }
        self.records.clear();
    }

    fn write_capture(&mut self, obs: &mut Observer, i: usize) {
        self.written_at[i] = None;
        let (Some(Some(files)), Some(c)) = (self.files.get_mut(i), obs.capture_mut(i)) else {
            return;
        };
        if let Err(e) = files.write(c) {
            eprintln!(
                "vpcd up: writing the capture {} failed ({e}); that capture stops",
                files.path.display()
            );
            self.files[i] = None;
        }
    }
}
