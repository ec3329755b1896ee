//! Flow logs and captures of a running `vpcd up`: the shell's side of [`crate::observe`].
//!
//! Two ways in:
//! - the command line (`--flow-log`, `--capture`): [`ObserveArgs`] is what it asked for;
//!   [`ObserveArgs::open`] checks it against the compiled tables and opens every output
//!   **before** anything is created (a bad endpoint or an unwritable file is an error with
//!   nothing to tear down);
//! - the control plane, at run time: [`start_flow_log`], [`stop_flow_log`], [`start_capture`],
//!   [`stop_capture`] and [`status`] (`control.rs`) take a [`super::Handle`]. They open, write
//!   and close files on a blocking thread (the loop and the API share one runtime thread) and use
//!   short [`super::Handle::query`]s only to check, install and remove: the loop never opens a
//!   file for them.
//!
//! [`Sinks`] lives in the shell's loop beside its [`Observer`] and holds the open outputs, in the
//! observer's capture order: the loop calls [`Sinks::service`] once per wake-up and
//! [`Sinks::finish`] when it stops.
//!
//! I/O of running outputs happens inline on the loop's thread, off the per-packet path:
//! flow-log records are written once per window (small, buffered, one flush), capture bytes when
//! a capture has more than [`CAPTURE_FLUSH_BYTES`] pending or [`CAPTURE_FLUSH_EVERY`] after its
//! first unwritten packet — a sequential `write()` of at most about a megabyte to the page cache,
//! well under a millisecond. A write that fails (disk full, stdout closed) is reported once on
//! stderr and in [`status`], and that output stops; the network keeps serving.
//!
//! A capture follows its endpoint when a reload renumbers the ports; when a reload removes or
//! replaces the endpoint, the capture ends (what it holds is written, a line on stderr says so).

mod control;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use control::{
    CaptureStatus, FlowLogStatus, FlowLogStopped, MAX_WINDOW, MIN_WINDOW, ObserveControlError,
    ObserveStatus, PreparedCapture, PreparedFlowLog, StoppedCapture, StoppedFlowLog,
};

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

type FlowOut = FlowLogWriter<Box<dyn Write + Send>>;

/// What `vpcd up` was asked to observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveArgs {
    /// `--flow-log TARGET`: a file, or `-` for stdout.
    pub flow_log: Option<String>,
    /// `--flow-log-window`: the capture window.
    pub window: Duration,
    /// `--capture ENDPOINT=FILE`, as written.
    pub captures: Vec<String>,
    /// `--dns-query-log TARGET`: the VPC resolvers' query logs, a file or `-` for stdout.
    pub dns_query_log: Option<String>,
}

impl Default for ObserveArgs {
    fn default() -> Self {
        ObserveArgs {
            flow_log: None,
            window: DEFAULT_WINDOW,
            captures: Vec::new(),
            dns_query_log: None,
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
    #[error("--dns-query-log {target}: {source}")]
    DnsQueryLog {
        target: String,
        #[source]
        source: std::io::Error,
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
    flow_out: Option<(String, FlowOut)>,
    captures: Vec<(String, PortId, CaptureFiles)>,
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
                return Err(ObserveError::UnknownEndpoint {
                    arg: arg.clone(),
                    endpoint,
                    known: known_endpoints(tables),
                });
            };
            let files =
                CaptureFiles::create(&file).map_err(|source| ObserveError::CaptureFile {
                    arg: arg.clone(),
                    path: file.display().to_string(),
                    source,
                })?;
            captures.push((endpoint, port, files));
        }
        let flow_out = match &self.flow_log {
            Some(target) => {
                let out = open_flow_log(target).map_err(|source| ObserveError::FlowLog {
                    target: target.clone(),
                    source,
                })?;
                Some((target.clone(), out))
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

fn known_endpoints(tables: &Tables) -> String {
    let known: Vec<&str> = tables.ports.iter().map(|p| &*p.name).collect();
    known.join(", ")
}

/// Unix time now: the `epoch` of a shell whose `Instant::ZERO` is now.
pub fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// An unpredictable hasher seed (guests choose the flow log's keys).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn new_flow_log(tables: &Tables, epoch: Duration, seed: u64, window: Duration) -> FlowLog {
    FlowLog::new(
        tables,
        FlowLogConfig {
            epoch,
            seed,
            window,
            ..FlowLogConfig::default()
        },
    )
}

fn new_capture(port: PortId, epoch: Duration) -> Capture {
    Capture::new(
        port,
        CaptureConfig {
            epoch,
            ..CaptureConfig::default()
        },
    )
}

impl Opened {
    /// The observer and its outputs for a shell whose `Instant::ZERO` is Unix time `epoch`.
    pub fn start(self, tables: &Tables, epoch: Duration, seed: u64) -> (Observer, Sinks) {
        let mut obs = Observer::new();
        let mut sinks = Sinks::none();
        if let Some((target, writer)) = self.flow_out {
            obs.set_flow_log(new_flow_log(tables, epoch, seed, self.window));
            sinks.flow = Some(FlowOutput {
                target,
                window: self.window,
                writer: Some(writer),
                written: 0,
                error: None,
            });
        }
        for (endpoint, port, files) in self.captures {
            let i = obs.add_capture(new_capture(port, epoch));
            debug_assert_eq!(i, sinks.captures.len());
            sinks.captures.push(CaptureOutput::new(endpoint, files));
        }
        // The file headers now, so that every capture file is a valid (empty) pcap from the start.
        for i in 0..sinks.captures.len() {
            sinks.write_capture(&mut obs, i);
        }
        (obs, sinks)
    }
}

/// The flow log's output.
struct FlowOutput {
    target: String,
    window: Duration,
    /// `None` once a write failed.
    writer: Option<FlowOut>,
    written: u64,
    error: Option<String>,
}

/// One capture's files, at the same index as its [`Capture`] in the observer.
struct CaptureOutput {
    endpoint: String,
    path: PathBuf,
    nat_path: PathBuf,
    /// `None` once a write failed.
    files: Option<CaptureFiles>,
    /// When its pending bytes are due on disk (`None`: nothing pending seen yet).
    written_at: Option<Instant>,
    error: Option<String>,
}

impl CaptureOutput {
    fn new(endpoint: String, files: CaptureFiles) -> CaptureOutput {
        CaptureOutput {
            endpoint,
            path: files.path.clone(),
            nat_path: files.nat_path.clone(),
            files: Some(files),
            written_at: None,
            error: None,
        }
    }

    fn status(&self, c: &Capture) -> CaptureStatus {
        CaptureStatus {
            endpoint: self.endpoint.clone(),
            file: self.path.display().to_string(),
            nat_file: self.nat_path.display().to_string(),
            packets: c.packets(View::Port),
            nat_packets: c.packets(View::Nat),
            not_captured: c.dropped(View::Port) + c.dropped(View::Nat),
            error: self.error.clone(),
        }
    }
}

/// The open outputs of a running shell.
pub struct Sinks {
    flow: Option<FlowOutput>,
    records: Vec<FlowRecord>,
    /// Per capture, by the observer's index.
    captures: Vec<CaptureOutput>,
}

impl Sinks {
    /// Outputs that observe nothing (the shell without flags).
    pub fn none() -> Sinks {
        Sinks {
            flow: None,
            records: Vec::new(),
            captures: Vec::new(),
        }
    }

    /// Whether there is anything to service (without outputs the loop skips
    /// [`Sinks::service`]).
    pub fn is_active(&self) -> bool {
        self.flow.is_some() || !self.captures.is_empty()
    }

    /// When the shell must wake up for the observer: the flow log's window end, or a capture's
    /// write deadline.
    pub fn poll_timeout(&self, obs: &Observer) -> Option<Instant> {
        let captures = self.captures.iter().filter_map(|c| c.written_at).min();
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
        for i in 0..self.captures.len() {
            let (Some(out), Some(c)) = (self.captures.get_mut(i), obs.capture_mut(i)) else {
                continue;
            };
            // The file header is pending until the first write: count only packets.
            if out.files.is_none() || (c.pending_bytes() <= 24 && out.written_at.is_none()) {
                continue;
            }
            let due = *out.written_at.get_or_insert(now + CAPTURE_FLUSH_EVERY) <= now;
            if due || c.pending_bytes() >= CAPTURE_FLUSH_BYTES {
                self.write_capture(obs, i);
            }
        }
    }

    /// Clean stop: closes the flow log's window and writes every record and every capture.
    pub fn finish(&mut self, obs: &mut Observer, now: Instant) {
        obs.flush_all(now);
        self.write_records(obs);
        for i in 0..self.captures.len() {
            self.write_capture(obs, i);
        }
    }

    /// What was written, for `vpcd up`'s closing line: `; N flow-log record(s) written; captured
    /// P packet(s) to F…` (empty without outputs).
    pub fn summary(&self, obs: &Observer) -> String {
        let mut t = String::new();
        if let Some(f) = &self.flow {
            t.push_str(&format!("; {} flow-log record(s) written", f.written));
        }
        for (out, c) in self.captures.iter().zip(obs.captures()) {
            let s = out.status(c);
            t.push_str(&format!(
                "; captured {} packet(s) to {} and {} to {}",
                s.packets, s.file, s.nat_packets, s.nat_file
            ));
            if s.not_captured > 0 {
                t.push_str(&format!(" ({} not captured: buffer full)", s.not_captured));
            }
        }
        t
    }

    fn write_records(&mut self, obs: &mut Observer) {
        obs.drain_flow_records(&mut self.records);
        if let Some(f) = &mut self.flow
            && let Some(out) = &mut f.writer
            && !self.records.is_empty()
        {
            let result = out.write(&self.records);
            f.written = out.written();
            if let Err(e) = result {
                eprintln!(
                    "vpcd up: writing the flow log to {} failed ({e}); flow logging stops",
                    f.target
                );
                f.error = Some(e.to_string());
                f.writer = None;
                obs.take_flow_log();
            }
        }
        self.records.clear();
    }

    fn write_capture(&mut self, obs: &mut Observer, i: usize) {
        let (Some(out), Some(c)) = (self.captures.get_mut(i), obs.capture_mut(i)) else {
            return;
        };
        out.written_at = None;
        let Some(files) = &mut out.files else {
            return;
        };
        if let Err(e) = files.write(c) {
            eprintln!(
                "vpcd up: writing the capture {} failed ({e}); that capture stops",
                files.path.display()
            );
            out.error = Some(e.to_string());
            out.files = None;
        }
    }
}
