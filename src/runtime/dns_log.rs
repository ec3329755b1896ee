//! The VPC resolvers' query logs ([`crate::dns::querylog`]) as JSON lines to one file or
//! stdout, flushed after each batch: started by `vpcd up --dns-query-log TARGET` or through the
//! API (`POST /v1/dns/query-log/start|stop`, `vpcd ctl dns query-log`), like flow logs.
//!
//! One [`QueryLogSwitch`] per run: every resolver logs through it (those a reload makes too), and
//! it writes only while a target is set. While it is off, a resolver builds no record (one
//! atomic load per answer). The resolvers all run on the loop's thread; the lock is taken by
//! them and, briefly, by a start, stop or status. A write error stops writing (reported once on
//! stderr and in the status), never the resolver.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::log_file::{LogDir, LogFileError, OpenMode};
use crate::dns::querylog::QueryLogRecord;
use crate::sim::resolver::{QueryLog, QueryLogSink};
use crate::tables::Tables;

/// The run's query log: off, or writing to one target. Clones share it.
#[derive(Clone)]
pub struct QueryLogSwitch {
    shared: Arc<Shared>,
    /// Unix time of the loop clock's zero.
    epoch: Duration,
}

struct Shared {
    /// A target is set (read per answer, without the lock).
    active: AtomicBool,
    out: Mutex<Option<Output>>,
}

struct Output {
    target: String,
    writer: BufWriter<Box<dyn Write + Send>>,
    records: u64,
    /// The first write error; nothing is written after it.
    error: Option<String>,
}

/// The query log's state, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryLogStatus {
    pub active: bool,
    /// The file, or `-` for `vpcd up`'s standard output.
    pub target: Option<String>,
    /// Records written since it started.
    pub records: u64,
    pub error: Option<String>,
}

/// Why a start or stop was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryLogError {
    #[error("the query log is already writing to {target}")]
    Running { target: String },
    #[error("the query log is not running")]
    NotRunning,
    #[error("`{target}` is not an absolute path (or `-` for vpcd up's standard output)")]
    RelativePath { target: String },
    #[error("cannot create {target}: {source}")]
    Create { target: String, source: io::Error },
    #[error("writing {target} failed: {source}")]
    Write { target: String, source: io::Error },
    #[error(transparent)]
    File(#[from] LogFileError),
}

impl std::fmt::Debug for QueryLogSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryLogSwitch")
            .field("active", &self.shared.active.load(Ordering::Relaxed))
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl QueryLogSwitch {
    /// A switch that is off; `epoch` is the Unix time of the loop clock's zero.
    pub fn off(epoch: Duration) -> QueryLogSwitch {
        QueryLogSwitch {
            shared: Arc::new(Shared {
                active: AtomicBool::new(false),
                out: Mutex::new(None),
            }),
            epoch,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Output>> {
        self.shared
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts writing to `target` (`-`: stdout; a file, given as an absolute path, is created
    /// or truncated): `vpcd up --dns-query-log`, the operator's own choice. Refused while it
    /// runs (the file is then not touched). Blocking file work: call it off the loop's thread;
    /// the lock is not held while the file is opened.
    pub fn start(&self, target: &str) -> Result<QueryLogStatus, QueryLogError> {
        self.start_opening(target, || {
            if !target.starts_with('/') {
                return Err(QueryLogError::RelativePath {
                    target: target.into(),
                });
            }
            let f = File::create(target).map_err(|source| QueryLogError::Create {
                target: target.into(),
                source,
            })?;
            Ok(Box::new(f))
        })
    }

    /// [`QueryLogSwitch::start`] for an API request: `-`, or a file in `dir` opened as `mode`
    /// says ([`crate::runtime::log_file`]: appended or created new, never truncated).
    pub fn start_in(
        &self,
        target: &str,
        dir: &LogDir,
        mode: OpenMode,
    ) -> Result<QueryLogStatus, QueryLogError> {
        self.start_opening(target, || Ok(Box::new(dir.open(target, mode)?)))
    }

    fn start_opening(
        &self,
        target: &str,
        open: impl FnOnce() -> Result<Box<dyn Write + Send>, QueryLogError>,
    ) -> Result<QueryLogStatus, QueryLogError> {
        let running = |o: &Output| QueryLogError::Running {
            target: o.target.clone(),
        };
        if let Some(o) = self.lock().as_ref() {
            return Err(running(o));
        }
        let writer: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            open()?
        };
        let mut out = self.lock();
        if let Some(o) = out.as_ref() {
            // Started meanwhile by another request.
            return Err(running(o));
        }
        *out = Some(Output {
            target: target.to_string(),
            writer: BufWriter::new(writer),
            records: 0,
            error: None,
        });
        self.shared.active.store(true, Ordering::Release);
        Ok(status_of(out.as_ref()))
    }

    /// Stops writing and flushes what it holds (outside the lock); the status it ended with.
    pub fn stop(&self) -> Result<QueryLogStatus, QueryLogError> {
        let taken = {
            let mut out = self.lock();
            self.shared.active.store(false, Ordering::Release);
            out.take()
        };
        let Some(mut o) = taken else {
            return Err(QueryLogError::NotRunning);
        };
        if o.error.is_none()
            && let Err(source) = o.writer.flush()
        {
            return Err(QueryLogError::Write {
                target: o.target,
                source,
            });
        }
        let mut st = status_of(Some(&o));
        st.active = false;
        Ok(st)
    }

    pub fn status(&self) -> QueryLogStatus {
        status_of(self.lock().as_ref())
    }

    /// The query log of VPC `vpc`'s resolver in `tables` (`None`: no such VPC).
    pub fn for_vpc(&self, tables: &Arc<Tables>, vpc: u32) -> Option<QueryLog> {
        let name = tables.vpcs.get(vpc as usize)?.name.clone();
        Some(QueryLog {
            sink: Box::new(self.clone()),
            vpc: name,
            epoch: self.epoch,
            tables: tables.clone(),
            vpc_index: vpc,
        })
    }

    fn with(&self, f: impl FnOnce(&mut Output) -> io::Result<()>) {
        let mut out = self.lock();
        let Some(o) = out.as_mut() else {
            return;
        };
        if o.error.is_some() {
            return;
        }
        if let Err(e) = f(o) {
            eprintln!(
                "vpcd up: DNS query log {}: {e}; no more query-log records are written",
                o.target
            );
            o.error = Some(e.to_string());
        }
    }
}

fn status_of(out: Option<&Output>) -> QueryLogStatus {
    match out {
        None => QueryLogStatus {
            active: false,
            target: None,
            records: 0,
            error: None,
        },
        Some(o) => QueryLogStatus {
            active: true,
            target: Some(o.target.clone()),
            records: o.records,
            error: o.error.clone(),
        },
    }
}

impl QueryLogSink for QueryLogSwitch {
    fn active(&self) -> bool {
        self.shared.active.load(Ordering::Acquire)
    }

    fn log(&mut self, record: &QueryLogRecord) {
        self.with(|o| {
            serde_json::to_writer(&mut o.writer, record).map_err(io::Error::other)?;
            o.writer.write_all(b"\n")?;
            o.records += 1;
            Ok(())
        });
    }

    fn flush(&mut self) {
        self.with(|o| o.writer.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record of one NXDOMAIN answer.
    fn record() -> QueryLogRecord {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RecordType};
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("x.example.").expect("name"),
            RecordType::A,
        ));
        let view = crate::dns::ViewBuilder::new().build();
        let wire = m.to_vec().expect("query");
        let answered =
            crate::dns::answer(&view, &wire, crate::dns::Transport::Udp).expect("answer");
        QueryLogRecord::new(
            &answered,
            crate::dns::querylog::Asker {
                vpc: "v",
                at: Duration::ZERO,
                addr: std::net::Ipv4Addr::new(10, 0, 1, 2).into(),
                port: 5353,
                transport: crate::dns::Transport::Udp,
                instance: Some("a"),
            },
        )
    }

    #[test]
    fn the_switch_starts_writes_and_stops_like_a_flow_log() {
        let dir = std::env::temp_dir().join(format!("vpcd-qlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("q.jsonl");
        let target = file.to_string_lossy().into_owned();
        let mut s = QueryLogSwitch::off(Duration::ZERO);
        assert!(!s.active());
        assert!(matches!(s.stop(), Err(QueryLogError::NotRunning)));
        assert!(matches!(
            s.start("relative.jsonl"),
            Err(QueryLogError::RelativePath { .. })
        ));
        let st = s.start(&target).expect("started");
        assert!(st.active && st.target.as_deref() == Some(target.as_str()));
        assert!(s.active());
        assert!(matches!(
            s.start(&target),
            Err(QueryLogError::Running { .. })
        ));
        let record = record();
        s.log(&record);
        s.log(&record);
        s.flush();
        assert_eq!(s.status().records, 2);
        let stopped = s.stop().expect("stopped");
        assert!(!stopped.active && stopped.records == 2);
        assert!(!s.active());
        // Off: nothing more is written.
        s.log(&record);
        let text = std::fs::read_to_string(&file).expect("log");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().all(|l| l.contains("\"query_name\"")), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
