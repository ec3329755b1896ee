//! `vpcd up --dns-query-log TARGET`: every VPC resolver's query-log records
//! ([`crate::dns::querylog`]) as JSON lines to one file or stdout, flushed after each batch.
//!
//! The resolvers all run on the loop's thread and share one writer; the lock is never contended.
//! A write error stops the log (reported once on stderr), never the resolver.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dns::querylog::QueryLogRecord;
use crate::sim::resolver::{QueryLog, QueryLogSink};
use crate::tables::{PortOwner, Tables};

/// The shared output.
#[derive(Clone)]
pub struct QueryLogFile {
    out: Arc<Mutex<Output>>,
    /// Unix time of the loop clock's zero.
    pub epoch: Duration,
}

struct Output {
    writer: BufWriter<Box<dyn Write + Send>>,
    /// The first error; nothing is written after it.
    failed: bool,
}

impl std::fmt::Debug for QueryLogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryLogFile")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl QueryLogFile {
    /// Opens `target` (`-`: stdout; a file is created or truncated).
    pub fn open(target: &str, epoch: Duration) -> io::Result<QueryLogFile> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(target)?)
        };
        Ok(QueryLogFile {
            out: Arc::new(Mutex::new(Output {
                writer: BufWriter::new(out),
                failed: false,
            })),
            epoch,
        })
    }

    /// The query log of VPC `vpc`'s resolver in `tables`.
    pub fn for_vpc(&self, tables: &Tables, vpc: u32) -> Option<QueryLog> {
        let name = tables.vpcs.get(vpc as usize)?.name.clone();
        let instances: HashMap<_, _> = tables
            .ports
            .iter()
            .filter(|p| matches!(p.owner, PortOwner::Instance { vpc: v, .. } if v == vpc))
            .map(|p| {
                let instance = p.name.split_once('/').map_or(p.name.as_str(), |(_, i)| i);
                (p.addr, instance.to_string())
            })
            .collect();
        Some(QueryLog {
            sink: Box::new(self.clone()),
            vpc: name,
            epoch: self.epoch,
            instances,
        })
    }

    fn with(&self, f: impl FnOnce(&mut BufWriter<Box<dyn Write + Send>>) -> io::Result<()>) {
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        if out.failed {
            return;
        }
        if let Err(e) = f(&mut out.writer) {
            out.failed = true;
            eprintln!("vpcd up: --dns-query-log: {e}; no more query-log records are written");
        }
    }
}

impl QueryLogSink for QueryLogFile {
    fn log(&mut self, record: &QueryLogRecord) {
        self.with(|w| {
            serde_json::to_writer(&mut *w, record).map_err(io::Error::other)?;
            w.write_all(b"\n")
        });
    }

    fn flush(&mut self) {
        self.with(|w| w.flush());
    }
}
