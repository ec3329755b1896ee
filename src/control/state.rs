//! The durable copy of the effective topology in a state directory.
//!
//! The directory holds the snapshot [`STATE_FILE`]: a topology file (so `vpcd check
//! DIR/topology.toml` accepts it) whose first line is the comment `# vpcd state generation N`,
//! and the journal of the changes acknowledged since ([`super::journal`]; the API appends to it
//! and compacts it into the snapshot now and then). The state is the snapshot with the
//! journal's newer records replayed ([`ControlState::load`]). The snapshot is replaced
//! atomically: the new text goes to a temporary file in the same directory (a name starting with
//! `.topology.toml.tmp`), which is written, fsynced, renamed over [`STATE_FILE`], and then the
//! directory is fsynced. A crash at any moment leaves either the old file or the new one, never a
//! mix; a temporary file left behind is ignored by [`ControlState::load`] and removed by the next
//! [`ControlState::save`].
//!
//! One writer per directory: the caller serializes saves (the control loop owns the state).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ControlState;
use crate::topology::{self, TopologyError};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "topology.toml";
const TMP_PREFIX: &str = ".topology.toml.tmp";
const HEADER: &str = "# vpcd state generation ";

/// Why a state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("error: state directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The state file does not validate (edited by hand, or written by another version).
    #[error("{0}")]
    Invalid(#[from] TopologyError),
    /// The journal holds something other than whole records followed by at most one cut one.
    #[error(
        "error: the journal {path} is damaged: {what}; move it away to start from the snapshot \
         (the changes it holds are lost)"
    )]
    Corrupt { path: String, what: String },
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ControlState {
    /// The snapshot alone (`ControlState::load`, in `journal`, replays the journal over it).
    pub(super) fn load_snapshot(dir: &Path) -> Result<Option<ControlState>, StateError> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let generation = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(HEADER))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let file = path.display().to_string();
        let (model, plan) = topology::parse_model(&file, &text)?;
        let body = text
            .split_once('\n')
            .filter(|(first, _)| first.starts_with(HEADER))
            .map_or(text.as_str(), |(_, rest)| rest)
            .to_string();
        Ok(Some(ControlState {
            model,
            plan: std::sync::Arc::new(plan),
            text: std::sync::OnceLock::from(Ok(body)),
            generation,
        }))
    }

    /// Writes the state to `dir` atomically (see the module doc), creating `dir` (mode 0700) if
    /// needed; the file is mode 0600. When this returns `Ok`, the state survives a crash or
    /// power loss.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        remove_stale_temporaries(dir);
        let path = dir.join(STATE_FILE);
        let tmp = temporary_path(dir, self.generation);
        let text = self.state_file_text()?;
        let result = write_synced(&tmp, &text)
            .and_then(|()| fs::rename(&tmp, &path).map_err(io(&path)))
            .and_then(|()| sync_dir(dir));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The text of the state file: the header line, then [`ControlState::export`]; an error
    /// when the model could not be written as TOML.
    pub fn state_file_text(&self) -> Result<String, StateError> {
        let body = self.text().map_err(|e| StateError::Io {
            path: STATE_FILE.into(),
            source: std::io::Error::other(e.trim_start_matches("# ").trim_end().to_string()),
        })?;
        Ok(format!("{HEADER}{}\n{body}", self.generation))
    }
}

fn temporary_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{TMP_PREFIX}.{}.{generation}", std::process::id()))
}

fn write_synced(path: &Path, text: &str) -> Result<(), StateError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Best effort: temporaries of interrupted saves are harmless, only clutter.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
