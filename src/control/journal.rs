//! The journal: every acknowledged change appended to [`JOURNAL_FILE`] beside the snapshot
//! ([`super::STATE_FILE`]) in the state directory, so that a change costs one small append and a
//! shared fsync instead of rewriting the whole topology.
//!
//! Format: one record per line, `CRC SP JSON LF`, where CRC is the CRC-32 (IEEE, 8 hex digits)
//! of the JSON bytes and the JSON is `{"generation": G, "changes": [{"op", "request"}]}`: the
//! changes of one request (one, or a batch) in order, and the generation the state has after
//! them. Requests are the bodies [`Change::decode`] reads, so a record replays through the same
//! `ControlState::apply` as the request did.
//!
//! Invariants:
//! - the state is the snapshot plus the journal's records whose generation is above the
//!   snapshot's, replayed in order (`ControlState::load`); records at or below it are already
//!   in the snapshot (a compaction that stopped between its two steps);
//! - a change is acknowledged only once its record is on disk: [`Journal::append`] writes it
//!   (no fsync) and returns a [`Ticket`]; [`Durable::wait`] resolves once an fsync that started
//!   after the write has completed. One thread does the fsyncs: requests that appended while
//!   an fsync was running share the next one (group commit);
//! - a crash can cut the last record (a write in progress): a line that fails its CRC or does
//!   not parse is ignored when nothing valid follows it, and [`Journal::open`] truncates it away
//!   before appending; a bad line with valid ones after it is corruption, reported;
//! - compaction ([`Journal::compact_if_due`]) writes the snapshot (atomically, fsynced) and only
//!   then empties the journal; everything appended before it is durable in the snapshot;
//! - a failed fsync poisons the journal: the data may be lost (Linux may drop the dirty pages),
//!   so no later change is accepted; restart from the state directory.
//!
//! One writer per directory (the API's state lock); [`Durable`] waits from any task.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Poll, Waker};

use serde::{Deserialize, Serialize};

use super::state::{StateError, io};
use super::{Change, ControlState};

/// The journal's name in the state directory.
pub const JOURNAL_FILE: &str = "journal";
/// Compact after this many records...
pub const COMPACT_RECORDS: u64 = 4096;
/// ...or this many bytes, whichever comes first.
pub const COMPACT_BYTES: u64 = 8 << 20;

#[derive(Serialize, Deserialize)]
struct Record {
    generation: u64,
    changes: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    op: String,
    request: serde_json::Value,
}

/// The records of a journal, and how many of its bytes hold them (the rest is a cut record).
struct Replay {
    pub records: Vec<(u64, Vec<Change>)>,
    pub valid_len: u64,
}

fn corrupt(path: &Path, what: String) -> StateError {
    StateError::Corrupt {
        path: path.display().to_string(),
        what,
    }
}

/// One record as a journal line.
fn encode(generation: u64, changes: &[Change]) -> Result<Vec<u8>, serde_json::Error> {
    let changes = changes
        .iter()
        .map(|c| {
            Ok(Entry {
                op: c.op().to_string(),
                request: c.request()?,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    let json = serde_json::to_vec(&Record {
        generation,
        changes,
    })?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// The record of one line (without its `\n`), if the line is whole and its CRC matches.
fn decode(line: &[u8]) -> Option<Record> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if line.get(8) != Some(&b' ') || crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Reads the journal in `dir` (empty when there is none).
fn read(dir: &Path) -> Result<Replay, StateError> {
    let path = dir.join(JOURNAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&path)(e)),
    };
    let mut records = Vec::new();
    let (mut at, mut valid_len, mut bad_line) = (0, 0, None);
    let mut line_no = 0;
    while at < bytes.len() {
        line_no += 1;
        let end = bytes[at..].iter().position(|&b| b == b'\n');
        let line = &bytes[at..end.map_or(bytes.len(), |e| at + e)];
        match (end, decode(line)) {
            (Some(e), Some(record)) => {
                if let Some(bad) = bad_line {
                    return Err(corrupt(
                        &path,
                        format!("line {bad} is damaged and valid records follow it"),
                    ));
                }
                let changes = record
                    .changes
                    .iter()
                    .map(|c| {
                        let body = serde_json::to_vec(&c.request).unwrap_or_default();
                        Change::decode(&c.op, &body)
                            .map_err(|e| corrupt(&path, format!("line {line_no}: {}", e.to_json())))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                records.push((record.generation, changes));
                at += e + 1;
                valid_len = at as u64;
            }
            (end, _) => {
                bad_line.get_or_insert(line_no);
                at = end.map_or(bytes.len(), |e| at + e + 1);
            }
        }
    }
    Ok(Replay { records, valid_len })
}

/// Applies the records above `state`'s generation in order.
fn replay(dir: &Path, mut state: ControlState, replay: Replay) -> Result<ControlState, StateError> {
    let path = dir.join(JOURNAL_FILE);
    for (generation, changes) in replay.records {
        if generation <= state.generation() {
            continue;
        }
        if generation != state.generation() + changes.len() as u64 {
            return Err(corrupt(
                &path,
                format!(
                    "a record ends at generation {generation}, but the state is at {} and the \
                     record holds {} change(s)",
                    state.generation(),
                    changes.len()
                ),
            ));
        }
        // In place: a refusal ends the load anyway, and a copy per change would make a restart
        // with a long journal cost a copy of the whole state per record.
        state.apply_request(&changes, false).map_err(|e| {
            corrupt(
                &path,
                format!("generation {generation} does not apply: {}", e.to_json()),
            )
        })?;
    }
    Ok(state)
}

/// Where the state of a directory comes from: the snapshot, then the journal.
impl ControlState {
    /// Loads the state saved in `dir`: the snapshot with the journal's newer records replayed;
    /// `Ok(None)` when there is none yet (no directory or no state file). Temporary files of an
    /// interrupted save and a record cut by a crash at the journal's end are ignored.
    pub fn load(dir: &Path) -> Result<Option<ControlState>, StateError> {
        let Some(snapshot) = Self::load_snapshot(dir)? else {
            return Ok(None);
        };
        let records = read(dir)?;
        replay(dir, snapshot, records).map(Some)
    }

    /// The state `vpcd up --state DIR FILE` starts from: the one saved in `dir` when there is
    /// one (the file only seeded it: later edits of the file are not merged), otherwise the
    /// file's, saved to `dir` at once (a journal without its snapshot is removed: its records
    /// continue a state that is gone).
    pub fn open(dir: &Path, file: &Path) -> Result<ControlState, StateError> {
        if let Some(state) = Self::load(dir)? {
            return Ok(state);
        }
        let state = Self::from_file(file)?;
        let journal = dir.join(JOURNAL_FILE);
        match fs::remove_file(&journal) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&journal)(e)),
        }
        state.save(dir)?;
        Ok(state)
    }
}

/// What the fsync thread and the waiters share.
struct Sync {
    progress: Mutex<Progress>,
    wake: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Records appended (tickets handed out) so far.
    written: u64,
    /// Records known durable: fsynced, or in a snapshot.
    synced: u64,
    /// fsyncs done, for tests and metrics.
    fsyncs: u64,
    failed: Option<String>,
    stop: bool,
    /// Tasks waiting in [`Durable::wait`], woken after each fsync.
    waiters: Vec<Waker>,
}

impl Progress {
    /// Whether `ticket` is durable (`Some(Ok)`), lost to a failed fsync (`Some(Err)`), or not
    /// known yet.
    fn outcome(&self, ticket: Ticket) -> Option<Result<(), String>> {
        match &self.failed {
            _ if self.synced >= ticket.0 => Some(Ok(())),
            Some(e) => Some(Err(e.clone())),
            None if self.stop && self.written <= self.synced => {
                Some(Err("the journal was closed".into()))
            }
            None => None,
        }
    }
}

/// A record's place in the journal: durable once [`Durable::wait`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Waits for records to be durable; clone it out of the lock that guards the [`Journal`]. A
/// plain future woken by the fsync thread: the control core needs no async runtime.
#[derive(Clone)]
pub struct Durable(Arc<Sync>);

impl Durable {
    /// Resolves once the record of `ticket` is on disk; `Err` with the reason when the journal
    /// failed (or was closed) before that.
    pub fn wait(self, ticket: Ticket) -> impl Future<Output = Result<(), String>> {
        std::future::poll_fn(move |cx| {
            let mut p = self.0.lock();
            match p.outcome(ticket) {
                Some(r) => Poll::Ready(r),
                None => {
                    p.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

impl Sync {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every waiting task (they check their ticket again).
    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        for w in waiters {
            w.wake();
        }
    }
}

/// The open journal of a state directory: appends, group commit, compaction.
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Records and bytes since the last compaction.
    records: u64,
    bytes: u64,
    sync: Arc<Sync>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Journal {
    /// Opens (or creates, mode 0600) the journal of `dir`, whose state was loaded with
    /// `ControlState::load`: a cut record at its end is removed. Starts the fsync thread.
    pub fn open(dir: &Path) -> Result<Journal, StateError> {
        let path = dir.join(JOURNAL_FILE);
        let replay = read(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len > replay.valid_len {
            file.set_len(replay.valid_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let sync = Arc::new(Sync {
            progress: Mutex::new(Progress::default()),
            wake: Condvar::new(),
        });
        let thread_file = file.try_clone().map_err(io(&path))?;
        let thread_sync = sync.clone();
        let thread = std::thread::Builder::new()
            .name("vpcd-journal".into())
            .spawn(move || fsync_loop(&thread_file, &thread_sync))
            .map_err(io(&path))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            path,
            file,
            records: replay.records.len() as u64,
            bytes: replay.valid_len,
            sync,
            thread: Some(thread),
        })
    }

    /// Appends the record of `changes`, after which the state is at `generation`. Written, not
    /// yet durable: acknowledge the changes after [`Durable::wait`] of the ticket.
    pub fn append(&mut self, generation: u64, changes: &[Change]) -> Result<Ticket, StateError> {
        if let Some(e) = self.progress().failed.clone() {
            return Err(StateError::Io {
                path: self.path.display().to_string(),
                source: std::io::Error::other(format!(
                    "an earlier fsync failed ({e}); no change is accepted until vpcd up is \
                     restarted"
                )),
            });
        }
        let line = encode(generation, changes).map_err(|e| StateError::Io {
            path: self.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        if let Err(e) = self.file.write_all(&line) {
            // Cut what a short write left, so that the next record starts on its own line.
            let _ = self.file.set_len(self.bytes);
            return Err(io(&self.path)(e));
        }
        self.records += 1;
        self.bytes += line.len() as u64;
        let mut p = self.progress();
        p.written += 1;
        let ticket = Ticket(p.written);
        drop(p);
        self.sync.wake.notify_one();
        Ok(ticket)
    }

    /// A waiter for tickets of this journal.
    pub fn durable(&self) -> Durable {
        Durable(self.sync.clone())
    }

    /// fsyncs done so far (each covers every record appended before it started).
    pub fn fsyncs(&self) -> u64 {
        self.progress().fsyncs
    }

    /// Records since the last compaction.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// When the journal has grown past [`COMPACT_RECORDS`] or [`COMPACT_BYTES`]: writes `state`
    /// (which holds every appended record) as the snapshot, then empties the journal. On error
    /// the journal is kept as it was (nothing is lost; compaction is tried again later).
    pub fn compact_if_due(&mut self, state: &ControlState) -> Result<bool, StateError> {
        if self.records < COMPACT_RECORDS && self.bytes < COMPACT_BYTES {
            return Ok(false);
        }
        self.compact(state).map(|()| true)
    }

    /// Writes `state` as the snapshot and empties the journal (see [`Journal::compact_if_due`]).
    pub fn compact(&mut self, state: &ControlState) -> Result<(), StateError> {
        state.save(&self.dir)?;
        self.file.set_len(0).map_err(io(&self.path))?;
        self.records = 0;
        self.bytes = 0;
        let mut p = self.progress();
        p.synced = p.written;
        drop(p);
        self.sync.wake_waiters();
        Ok(())
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.sync.lock()
    }
}

impl Drop for Journal {
    /// Stops the fsync thread after a last fsync of what was appended.
    fn drop(&mut self) {
        self.progress().stop = true;
        self.sync.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sync.wake_waiters();
    }
}

/// The fsync thread: whenever records were appended since the last fsync, one fsync for all of
/// them; stops on request (after a last one) or at the first failure.
fn fsync_loop(file: &File, sync: &Sync) {
    loop {
        let mut p = sync.lock();
        while p.written <= p.synced && !p.stop {
            p = sync.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        if p.written <= p.synced {
            return;
        }
        let target = p.written;
        drop(p);
        let result = file.sync_data();
        let mut p = sync.lock();
        p.fsyncs += 1;
        match result {
            Ok(()) => p.synced = p.synced.max(target),
            Err(e) => p.failed = Some(format!("fsync of the journal failed: {e}")),
        }
        let failed = p.failed.is_some();
        drop(p);
        sync.wake_waiters();
        if failed {
            return;
        }
    }
}
