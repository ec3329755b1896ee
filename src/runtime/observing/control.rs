//! Run-time control of flow logs and captures (the control plane's side): the status types, the
//! [`Sinks`] methods the loop runs to check, install and remove outputs, the opened and stopped
//! outputs that cross between the loop and a blocking thread. The async functions an API handler
//! calls are in `runtime/observe_api.rs` (above the loop, so this module needs neither the loop
//! nor its handle).
//!
//! Protocol of each start: a query checks the request (unknown endpoint, already running) before
//! any file is touched; a blocking task creates the files (and writes the pcap headers); a second
//! query installs them, checking again (a reload or another request may have come in between).
//! Each stop: a query takes the output out (the flow log's window closed at the loop's `now`); a
//! blocking task writes what it held and closes the files.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{
    CaptureOutput, FlowOut, FlowOutput, Sinks, known_endpoints, new_capture, new_flow_log,
    random_seed,
};
use crate::observe::{Capture, CaptureFiles, FlowLog, FlowLogWriter, FlowRecord, Observer};
use crate::runtime::log_file::{LogDir, LogFileError, OpenMode};
use crate::tables::{PortId, Tables};
use crate::time::Instant;

/// The shortest and longest flow-log window accepted at run time.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// Why a run-time observation request was refused. Nothing changed, except where noted.
#[derive(Debug, thiserror::Error)]
pub enum ObserveControlError {
    #[error(
        "no endpoint `{endpoint}` in the running topology (endpoints: {known}); write \
         VPC/INSTANCE or internet/HOST"
    )]
    UnknownEndpoint { endpoint: String, known: String },
    #[error("`{endpoint}` is already captured to {file}; stop that capture first")]
    AlreadyCapturing { endpoint: String, file: String },
    #[error("`{endpoint}` is not captured (captures: {known})")]
    NotCapturing { endpoint: String, known: String },
    #[error("a flow log is already written to {target}; stop it first")]
    FlowLogRunning { target: String },
    #[error("no flow log is running; start one first")]
    NoFlowLog,
    #[error(
        "`{path}` is not an absolute path: the daemon opens it, not the client; give the full \
         path{hint}"
    )]
    RelativePath { path: String, hint: &'static str },
    #[error("a flow-log window of {0:?} is out of range: give 1 s to 24 h")]
    BadWindow(Duration),
    #[error("cannot create {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path} failed: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{endpoint}` changed while its capture was set up (a reload); {path} was created but \
         is not written: start the capture again"
    )]
    Moved { endpoint: String, path: String },
    #[error(transparent)]
    File(#[from] LogFileError),
    #[error("the run is stopping")]
    Stopped,
    #[error("a blocking file task failed: {0}")]
    Task(String),
}

/// The running outputs, as `GET`-style status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ObserveStatus {
    /// `null` when no flow log runs.
    pub flow_log: Option<FlowLogStatus>,
    pub captures: Vec<CaptureStatus>,
}

/// A flow log's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowLogStatus {
    /// The file, or `-` for standard output.
    pub target: String,
    pub window_s: f64,
    /// Records written so far.
    pub records_written: u64,
    /// Flows counted in the window that is open now.
    pub flows_in_window: usize,
    /// Why writing stopped (`null` while it works).
    pub error: Option<String>,
}

/// A capture's state (also what [`stop_capture`] returns, with the final numbers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptureStatus {
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub endpoint: String,
    /// The port's view.
    pub file: String,
    /// The far side of the fabric (after SNAT, before DNAT).
    pub nat_file: String,
    /// Packets recorded in each view (written or about to be).
    pub packets: u64,
    pub nat_packets: u64,
    /// Packets not recorded because the in-memory buffer was full.
    pub not_captured: u64,
    /// Why writing stopped (`null` while it works).
    pub error: Option<String>,
}

/// What [`stop_flow_log`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowLogStopped {
    pub target: String,
    /// Records written over the flow log's life, the last window's included.
    pub records_written: u64,
    /// Why writing had stopped before (its last records are lost); `null` when all went out.
    pub error: Option<String>,
}

impl Sinks {
    /// The running outputs.
    pub fn status(&self, obs: &Observer) -> ObserveStatus {
        ObserveStatus {
            flow_log: self.flow.as_ref().map(|f| FlowLogStatus {
                target: f.target.clone(),
                window_s: f.window.as_secs_f64(),
                records_written: f.written,
                flows_in_window: obs.flow_log().map_or(0, FlowLog::active_flows),
                error: f.error.clone(),
            }),
            captures: self
                .captures
                .iter()
                .zip(obs.captures())
                .map(|(out, c)| out.status(c))
                .collect(),
        }
    }

    /// Refuses a second flow log.
    pub fn check_flow_log(&self) -> Result<(), ObserveControlError> {
        match &self.flow {
            Some(f) => Err(ObserveControlError::FlowLogRunning {
                target: f.target.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Installs an opened flow log (loop side: no file is opened here).
    pub fn start_flow_log(
        &mut self,
        obs: &mut Observer,
        tables: &Tables,
        epoch: Duration,
        opened: PreparedFlowLog,
    ) -> Result<FlowLogStatus, ObserveControlError> {
        self.check_flow_log()?;
        obs.set_flow_log(new_flow_log(tables, epoch, opened.seed, opened.window));
        self.flow = Some(FlowOutput {
            target: opened.target,
            window: opened.window,
            writer: Some(opened.writer),
            written: 0,
            error: None,
        });
        self.status(obs)
            .flow_log
            .ok_or(ObserveControlError::NoFlowLog)
    }

    /// Removes the flow log: closes its window at `now` and hands over the records not written
    /// yet with the writer, to be written off the loop ([`StoppedFlowLog::finish`]).
    pub fn stop_flow_log(
        &mut self,
        obs: &mut Observer,
        now: Instant,
    ) -> Result<StoppedFlowLog, ObserveControlError> {
        let f = self.flow.take().ok_or(ObserveControlError::NoFlowLog)?;
        let mut records = Vec::new();
        if let Some(mut log) = obs.take_flow_log() {
            log.flush_all(now);
            log.drain_into(&mut records);
        }
        Ok(StoppedFlowLog {
            target: f.target,
            writer: f.writer,
            written: f.written,
            error: f.error,
            records,
        })
    }

    fn capture_index(&self, endpoint: &str) -> Option<usize> {
        self.captures.iter().position(|c| c.endpoint == endpoint)
    }

    /// The port of `endpoint`, if it exists and is not captured yet.
    pub fn check_capture(
        &self,
        tables: &Tables,
        endpoint: &str,
    ) -> Result<PortId, ObserveControlError> {
        if let Some(i) = self.capture_index(endpoint) {
            return Err(ObserveControlError::AlreadyCapturing {
                endpoint: endpoint.to_string(),
                file: self.captures[i].path.display().to_string(),
            });
        }
        tables
            .port_named(endpoint)
            .ok_or_else(|| ObserveControlError::UnknownEndpoint {
                endpoint: endpoint.to_string(),
                known: known_endpoints(tables),
            })
    }

    /// Installs an opened capture (loop side: no file is opened here). Refused if the endpoint
    /// is captured already or no longer has the port the capture was made for.
    pub fn start_capture(
        &mut self,
        obs: &mut Observer,
        tables: &Tables,
        opened: PreparedCapture,
    ) -> Result<CaptureStatus, ObserveControlError> {
        let port = self.check_capture(tables, &opened.endpoint)?;
        if port != opened.capture.port() {
            return Err(ObserveControlError::Moved {
                path: opened.files.path.display().to_string(),
                endpoint: opened.endpoint,
            });
        }
        let i = obs.add_capture(opened.capture);
        self.captures
            .push(CaptureOutput::new(opened.endpoint, opened.files));
        debug_assert_eq!(i + 1, self.captures.len());
        let status = self.captures[i].status(&obs.captures()[i]);
        Ok(status)
    }

    /// Removes the capture of `endpoint` and hands it over with its files, to be written off the
    /// loop ([`StoppedCapture::finish`]).
    pub fn stop_capture(
        &mut self,
        obs: &mut Observer,
        endpoint: &str,
    ) -> Result<StoppedCapture, ObserveControlError> {
        let Some(i) = self.capture_index(endpoint) else {
            let known: Vec<&str> = self.captures.iter().map(|c| c.endpoint.as_str()).collect();
            return Err(ObserveControlError::NotCapturing {
                endpoint: endpoint.to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        let Some(capture) = obs.remove_capture(i) else {
            return Err(ObserveControlError::NotCapturing {
                endpoint: endpoint.to_string(),
                known: "none".into(),
            });
        };
        let out = self.captures.remove(i);
        Ok(StoppedCapture { out, capture })
    }

    /// After a swap that moved ports: `new_id[old]` is the new id of the port that had id `old`
    /// (`None`: it went away). Captures follow their port; captures of removed ports end (what
    /// they hold is written now, and a line on stderr says so).
    pub fn follow_ports(&mut self, obs: &mut Observer, new_id: &[Option<usize>]) {
        for i in (0..self.captures.len()).rev() {
            let Some(c) = obs.capture_mut(i) else {
                continue;
            };
            match new_id.get(c.port().index()).copied().flatten() {
                Some(j) => c.set_port(PortId(j as u32)),
                None => {
                    self.write_capture(obs, i);
                    let out = self.captures.remove(i);
                    let _ = obs.remove_capture(i);
                    eprintln!(
                        "vpcd up: the capture of {} ends: a reload removed or replaced the \
                         endpoint ({} and {} are complete)",
                        out.endpoint,
                        out.path.display(),
                        out.nat_path.display()
                    );
                }
            }
        }
    }
}

/// A flow log opened off the loop, to install with the loop's `Shell::start_flow_log`.
pub struct PreparedFlowLog {
    target: String,
    writer: FlowOut,
    window: Duration,
    seed: u64,
}

impl PreparedFlowLog {
    /// Opens `target`: `-` for standard output, or a file in `dir` opened as `mode` says
    /// ([`crate::runtime::log_file`]). Blocking: call it off the loop.
    pub fn open(
        target: &str,
        window: Duration,
        dir: &LogDir,
        mode: OpenMode,
    ) -> Result<PreparedFlowLog, ObserveControlError> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(ObserveControlError::BadWindow(window));
        }
        let out: Box<dyn std::io::Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(dir.open(target, mode)?)
        };
        Ok(PreparedFlowLog {
            target: target.to_string(),
            writer: FlowLogWriter::new(out),
            window,
            seed: random_seed(),
        })
    }
}

/// A capture whose files are open and carry their pcap headers, to install with
/// the loop's `Shell::start_capture`.
pub struct PreparedCapture {
    endpoint: String,
    files: CaptureFiles,
    capture: Capture,
}

impl PreparedCapture {
    /// Creates `file` and its `.nat.pcap` sibling for a capture of `port` (`endpoint`'s port) on
    /// a shell whose `Instant::ZERO` is Unix time `epoch`, and writes their headers. Blocking:
    /// call it off the loop.
    pub fn open(
        endpoint: &str,
        port: PortId,
        epoch: Duration,
        file: &Path,
        dir: &LogDir,
    ) -> Result<PreparedCapture, ObserveControlError> {
        // A pcap file starts with its header: both files are created new, never appended to.
        let port_path = file.display().to_string();
        let nat_path = crate::observe::nat_capture_path(file);
        let port_file = dir.open(&port_path, OpenMode::CreateNew)?;
        let nat_file = match dir.open(&nat_path.display().to_string(), OpenMode::CreateNew) {
            Ok(f) => f,
            Err(e) => {
                // The first file is ours (created new just now, empty): it goes.
                drop(port_file);
                let _ = std::fs::remove_file(&port_path);
                return Err(e.into());
            }
        };
        let mut files = CaptureFiles::from_files(file, nat_path, port_file, nat_file);
        let mut capture = new_capture(port, epoch);
        files
            .write(&mut capture)
            .map_err(|source| ObserveControlError::Write {
                path: file.display().to_string(),
                source,
            })?;
        Ok(PreparedCapture {
            endpoint: endpoint.to_string(),
            files,
            capture,
        })
    }
}

/// A flow log taken off the loop, with what it had not written yet.
pub struct StoppedFlowLog {
    target: String,
    writer: Option<FlowOut>,
    written: u64,
    error: Option<String>,
    records: Vec<FlowRecord>,
}

impl StoppedFlowLog {
    /// Writes the remaining records and closes the output. Blocking: call it off the loop.
    pub fn finish(self) -> Result<FlowLogStopped, ObserveControlError> {
        let write_err = |source| ObserveControlError::Write {
            path: self.target.clone(),
            source,
        };
        let Some(mut out) = self.writer else {
            return Ok(FlowLogStopped {
                target: self.target.clone(),
                records_written: self.written,
                error: self.error,
            });
        };
        out.write(&self.records).map_err(write_err)?;
        let records_written = out.written();
        out.into_inner().map_err(write_err)?;
        Ok(FlowLogStopped {
            target: self.target.clone(),
            records_written,
            error: None,
        })
    }
}

/// A capture taken off the loop, with what it had not written yet.
pub struct StoppedCapture {
    out: CaptureOutput,
    capture: Capture,
}

impl StoppedCapture {
    /// Writes what the capture still holds and closes both files; returns the final numbers.
    /// Blocking: call it off the loop.
    pub fn finish(mut self) -> Result<CaptureStatus, ObserveControlError> {
        if let Some(files) = &mut self.out.files
            && let Err(source) = files.write(&mut self.capture)
        {
            return Err(ObserveControlError::Write {
                path: self.out.path.display().to_string(),
                source,
            });
        }
        Ok(self.out.status(&self.capture))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::DEFAULT_WINDOW;

    /// A log directory of its own, removed on drop.
    struct Dir(std::path::PathBuf, LogDir);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("vpcd-obsctl-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            let d = LogDir::new(&p).unwrap();
            Dir(p, d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn relative_paths_and_bad_windows_are_refused_before_anything_is_opened() {
        let d = Dir::new("refused");
        let e = PreparedFlowLog::open("flows.jsonl", DEFAULT_WINDOW, &d.1, OpenMode::Append)
            .err()
            .expect("relative");
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let inside = d.0.join("x").display().to_string();
        let e = PreparedFlowLog::open(&inside, Duration::ZERO, &d.1, OpenMode::Append)
            .err()
            .expect("zero window");
        assert!(matches!(e, ObserveControlError::BadWindow(_)), "{e}");
        assert!(!d.0.join("x").exists());
        let e = PreparedCapture::open("t/a", PortId(0), Duration::ZERO, Path::new("a.pcap"), &d.1)
            .err()
            .expect("relative");
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        assert!(!Path::new("a.pcap").exists());
    }

    #[test]
    fn an_uncreatable_file_is_an_error_naming_it() {
        let d = Dir::new("uncreatable");
        let missing = d.0.join("no-such-dir/a.pcap");
        let e = PreparedCapture::open("t/a", PortId(0), Duration::ZERO, &missing, &d.1)
            .err()
            .expect("no such directory");
        assert!(e.to_string().contains("no-such-dir/a.pcap"), "{e}");
    }

    #[test]
    fn a_capture_is_created_new_both_files_or_neither() {
        let d = Dir::new("capture");
        let file = d.0.join("a.pcap");
        PreparedCapture::open("t/a", PortId(0), Duration::ZERO, &file, &d.1).expect("created");
        assert!(file.exists() && d.0.join("a.nat.pcap").exists());
        // Again: the first file exists, refused, nothing touched.
        let len = std::fs::metadata(&file).unwrap().len();
        let e = PreparedCapture::open("t/a", PortId(0), Duration::ZERO, &file, &d.1)
            .err()
            .expect("exists");
        assert!(
            matches!(&e, ObserveControlError::File(f) if f.is_conflict()),
            "{e}"
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), len);
        // Only the NAT side exists: the port's file made meanwhile goes again.
        let other = d.0.join("b.pcap");
        std::fs::write(d.0.join("b.nat.pcap"), "x").unwrap();
        let e = PreparedCapture::open("t/a", PortId(0), Duration::ZERO, &other, &d.1)
            .err()
            .expect("nat side exists");
        assert!(
            matches!(&e, ObserveControlError::File(f) if f.is_conflict()),
            "{e}"
        );
        assert!(!other.exists());
        // Outside the log directory: refused.
        let e = PreparedCapture::open(
            "t/a",
            PortId(0),
            Duration::ZERO,
            Path::new("/etc/vpcd-never.pcap"),
            &d.1,
        )
        .err()
        .expect("outside");
        assert!(e.to_string().contains("outside the log directory"), "{e}");
    }
}
