//! The run directory: one lock file and one state file per running topology.
//!
//! `vpcd up` holds an exclusive `flock` on `RUN_DIR/ID.lock` for its whole life (the kernel drops
//! it when the process dies, even by `kill -9`), and records in `RUN_DIR/ID.state` every namespace
//! *before* creating it, so the state file of a crashed run lists everything it may have left.
//! `vpcd down` removes what a state file lists when its lock is free. `ID` is derived from the
//! namespace prefix and the topology file's canonical path: the same file started twice with the
//! same prefix is the same run.
//!
//! The run directory is `/run/vpcd`, or `VPCD_RUN_DIR` (tests point it at a temporary directory).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The run directory when `VPCD_RUN_DIR` is unset.
pub const DEFAULT_RUN_DIR: &str = "/run/vpcd";
/// Overrides the run directory.
pub const RUN_DIR_ENV: &str = "VPCD_RUN_DIR";

/// The run directory in force.
pub fn run_dir() -> PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_RUN_DIR), PathBuf::from)
}

/// The run's identity: `PREFIX-STEM-HASH` (hash of the canonical topology path).
pub fn run_id(prefix: &str, topology: &Path) -> String {
    let canonical = fs::canonicalize(topology).unwrap_or_else(|_| topology.to_path_buf());
    let stem: String = topology
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{prefix}-{stem}-{:08x}", (h ^ (h >> 32)) as u32)
}

/// Why the run directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "this topology is already up: `vpcd up` (pid {pid}) holds {lock}; stop it with Ctrl-C \
         or `kill -TERM {pid}`"
    )]
    Busy { pid: String, lock: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path, source: impl Into<io::Error>) -> StateError {
    StateError::Io {
        what,
        path: path.display().to_string(),
        source: source.into(),
    }
}

/// A held run lock. Dropping it releases the lock (the lock file stays: removing it would race
/// with a second `vpcd up` opening it).
#[derive(Debug)]
pub struct RunLock {
    _lock: Flock<File>,
    pub id: String,
    pub state_path: PathBuf,
}

impl RunLock {
    /// Takes the lock of run `id` without waiting. Fails with [`StateError::Busy`] while a live
    /// process holds it.
    pub fn acquire(dir: &Path, id: &str) -> Result<RunLock, StateError> {
        fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        let lock_path = dir.join(format!("{id}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err("opening", &lock_path, e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = fs::read_to_string(&lock_path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "?".into());
                return Err(StateError::Busy {
                    pid,
                    lock: lock_path.display().to_string(),
                });
            }
            Err((_, e)) => return Err(io_err("locking", &lock_path, e)),
        };
        lock.set_len(0)
            .map_err(|e| io_err("writing", &lock_path, e))?;
        writeln!(&mut *lock, "{}", std::process::id())
            .map_err(|e| io_err("writing", &lock_path, e))?;
        Ok(RunLock {
            _lock: lock,
            id: id.to_string(),
            state_path: dir.join(format!("{id}.state")),
        })
    }
}

/// What a run made, as recorded in its state file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub pid: u32,
    pub topology: String,
    pub prefix: String,
    /// `(endpoint, namespace)` in creation order.
    pub namespaces: Vec<(String, String)>,
}

impl State {
    /// Parses a state file; unknown lines are ignored (a newer vpcd may write more).
    pub fn parse(text: &str) -> State {
        let mut s = State::default();
        for line in text.lines() {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("pid"), Some(p), None) => s.pid = p.parse().unwrap_or(0),
                (Some("topology"), Some(a), b) => {
                    s.topology = b.map_or_else(|| a.to_string(), |b| format!("{a} {b}"))
                }
                (Some("prefix"), Some(p), None) => s.prefix = p.to_string(),
                (Some("netns"), Some(e), Some(n)) => {
                    s.namespaces.push((e.to_string(), n.to_string()))
                }
                _ => {}
            }
        }
        s
    }

    pub fn read(path: &Path) -> Result<State, StateError> {
        fs::read_to_string(path)
            .map(|t| State::parse(&t))
            .map_err(|e| io_err("reading", path, e))
    }
}

/// The state file of a live run, appended to as the run creates things.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: File,
}

impl StateFile {
    /// Starts a fresh state file (replacing a crashed run's, which the caller has cleaned).
    pub fn create(path: &Path, topology: &Path, prefix: &str) -> Result<StateFile, StateError> {
        let mut file = File::create(path).map_err(|e| io_err("creating", path, e))?;
        write!(
            file,
            "# vpcd up: what this run created; `vpcd down` removes it after a crash\npid {}\ntopology {}\nprefix {prefix}\n",
            std::process::id(),
            fs::canonicalize(topology)
                .unwrap_or_else(|_| topology.to_path_buf())
                .display()
        )
        .and_then(|()| file.sync_data())
        .map_err(|e| io_err("writing", path, e))?;
        Ok(StateFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Records a namespace before it is created.
    pub fn record(&mut self, endpoint: &str, namespace: &str) -> Result<(), StateError> {
        writeln!(self.file, "netns {endpoint} {namespace}")
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_err("writing", &self.path, e))
    }

    /// Removes the file once everything it lists is gone.
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Every run in the run directory: `(id, state path)`, sorted.
pub fn runs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let id = name.strip_suffix(".state")?.to_string();
                    Some((id, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let text = "# c\npid 42\ntopology /tmp/a b.toml\nprefix vt\nnetns v/i vt-v-i\nnetns internet/web vt-internet-web\nfuture thing\n";
        let s = State::parse(text);
        assert_eq!(s.pid, 42);
        assert_eq!(s.topology, "/tmp/a b.toml");
        assert_eq!(s.prefix, "vt");
        assert_eq!(
            s.namespaces,
            vec![
                ("v/i".to_string(), "vt-v-i".to_string()),
                ("internet/web".to_string(), "vt-internet-web".to_string())
            ]
        );
    }

    #[test]
    fn run_ids_are_stable_and_distinct() {
        let a = run_id("vpcd", Path::new("/nonexistent/q.toml"));
        assert_eq!(a, run_id("vpcd", Path::new("/nonexistent/q.toml")));
        assert_ne!(a, run_id("vpcd", Path::new("/nonexistent/r/q.toml")));
        assert_ne!(a, run_id("vt", Path::new("/nonexistent/q.toml")));
        assert!(a.starts_with("vpcd-q-"));
    }

    #[test]
    fn a_held_lock_refuses_a_second_holder() {
        let dir = std::env::temp_dir().join(format!("vpcd-lock-test-{}", std::process::id()));
        let first = RunLock::acquire(&dir, "x").expect("first lock");
        match RunLock::acquire(&dir, "x") {
            Err(StateError::Busy { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        RunLock::acquire(&dir, "x").expect("free again");
        let _ = fs::remove_dir_all(&dir);
    }
}
