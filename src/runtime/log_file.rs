//! Files the daemon opens because an API request named them: the flow log, the DNS query log
//! and captures started at run time (`POST /v1/flow-log/start`, `/v1/dns/query-log/start`,
//! `/v1/captures/start`). The daemon runs as root and the request comes from a client, so such
//! a file is opened only as a careful operator would let a service do it:
//!
//! - inside the run's log directory ([`LogDir`]: `vpcd up --log-dir DIR`, default the `--state`
//!   directory), checked on the canonical path of the file's directory, so `..` and symbolic
//!   links to directories lead nowhere else;
//! - never through a symbolic link (`O_NOFOLLOW` on the file itself);
//! - only a regular file (not a FIFO, a device or a directory; `O_NONBLOCK` so that opening a
//!   FIFO cannot hang the daemon);
//! - never truncated: records are appended to an existing file, or, with `exclusive`, the file
//!   must not exist yet (`O_EXCL`). A capture (a pcap file, which starts with its header) is
//!   always created new;
//! - created with mode 0640.
//!
//! `vpcd up`'s own flags (`--flow-log`, `--dns-query-log`, `--capture`) are the operator's and
//! keep their meaning (created or truncated, anywhere).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Mode of a file the daemon creates for a request.
const MODE: u32 = 0o640;

/// The directory API-started outputs are confined to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    /// Canonical.
    dir: PathBuf,
}

/// How a request's file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Appended to when it exists, created otherwise.
    Append,
    /// Created; refused when it exists.
    CreateNew,
}

/// Why a request's file was not opened. Each is the caller's doing (a 4xx).
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error("`{path}` is not an absolute path: the daemon opens it, not the client")]
    Relative { path: String },
    #[error(
        "`{path}` is outside the log directory {dir}: files started through the API are written \
         only there"
    )]
    Outside { path: String, dir: String },
    #[error("`{path}` names no file (it ends in `/`, `.` or `..`)")]
    NoFileName { path: String },
    #[error("the directory of `{path}` cannot be opened: {source}")]
    Directory { path: String, source: io::Error },
    #[error("`{path}` is a symbolic link; the daemon does not follow links")]
    Symlink { path: String },
    #[error("`{path}` exists and is not a regular file ({kind})")]
    NotRegular { path: String, kind: &'static str },
    #[error("`{path}` exists already (asked to create a new file)")]
    Exists { path: String },
    #[error("cannot open `{path}`: {source}")]
    Open { path: String, source: io::Error },
}

impl LogFileError {
    /// Whether the file exists already (409 rather than 400).
    pub fn is_conflict(&self) -> bool {
        matches!(self, LogFileError::Exists { .. })
    }
}

impl LogDir {
    /// `dir`, created (mode 0750) if missing, as its canonical path.
    pub fn new(dir: &Path) -> io::Result<LogDir> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)?;
        }
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(LogDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Opens `path` for writing, as the module docs say. Blocking: call it off the loop.
    pub fn open(&self, path: &str, mode: OpenMode) -> Result<File, LogFileError> {
        let p = Path::new(path);
        let owned = || path.to_string();
        if !p.is_absolute() {
            return Err(LogFileError::Relative { path: owned() });
        }
        let (Some(parent), Some(Component::Normal(name))) =
            (p.parent(), p.components().next_back())
        else {
            return Err(LogFileError::NoFileName { path: owned() });
        };
        if path.ends_with('/') {
            return Err(LogFileError::NoFileName { path: owned() });
        }
        let parent = parent
            .canonicalize()
            .map_err(|source| LogFileError::Directory {
                path: owned(),
                source,
            })?;
        if !parent.starts_with(&self.dir) {
            return Err(LogFileError::Outside {
                path: owned(),
                dir: self.dir.display().to_string(),
            });
        }
        let file = parent.join(name);
        // A first look, for a clear error; the open below decides (O_NOFOLLOW, then fstat).
        if let Ok(meta) = std::fs::symlink_metadata(&file) {
            check_type(&meta.file_type(), path)?;
            if mode == OpenMode::CreateNew {
                return Err(LogFileError::Exists { path: owned() });
            }
        }
        let mut options = OpenOptions::new();
        options
            .append(true)
            .mode(MODE)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC);
        match mode {
            OpenMode::Append => options.create(true),
            OpenMode::CreateNew => options.create_new(true),
        };
        let opened = options
            .open(&file)
            .map_err(|source| match source.raw_os_error() {
                Some(nix::libc::ELOOP) => LogFileError::Symlink { path: owned() },
                Some(nix::libc::EEXIST) => LogFileError::Exists { path: owned() },
                Some(nix::libc::ENXIO) => LogFileError::NotRegular {
                    path: owned(),
                    kind: "a FIFO",
                },
                _ => LogFileError::Open {
                    path: owned(),
                    source,
                },
            })?;
        let meta = opened.metadata().map_err(|source| LogFileError::Open {
            path: owned(),
            source,
        })?;
        check_type(&meta.file_type(), path)?;
        Ok(opened)
    }
}

/// A regular file, or why not.
fn check_type(t: &std::fs::FileType, path: &str) -> Result<(), LogFileError> {
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_symlink() {
        return Err(LogFileError::Symlink { path: path.into() });
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(LogFileError::NotRegular {
        path: path.into(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("vpcd-logfile-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("logs")).unwrap();
            Scratch(d)
        }
        fn s(&self, rel: &str) -> String {
            self.0.join(rel).display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_file_in_the_log_dir_is_created_then_appended_never_truncated() {
        let t = Scratch::new("append");
        let dir = LogDir::new(&t.0.join("logs")).unwrap();
        let path = t.s("logs/q.jsonl");
        dir.open(&path, OpenMode::Append)
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        dir.open(&path, OpenMode::Append)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, MODE);
        let e = dir.open(&path, OpenMode::CreateNew).unwrap_err();
        assert!(e.is_conflict(), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        dir.open(&t.s("logs/new.jsonl"), OpenMode::CreateNew)
            .unwrap();
    }

    #[test]
    fn paths_outside_the_log_dir_are_refused() {
        let t = Scratch::new("outside");
        let dir = LogDir::new(&t.0.join("logs")).unwrap();
        for path in [
            t.s("elsewhere.jsonl"),
            t.s("logs/../elsewhere.jsonl"),
            "/etc/vpcd-test-never-written".to_string(),
        ] {
            let e = dir.open(&path, OpenMode::Append).unwrap_err();
            assert!(matches!(e, LogFileError::Outside { .. }), "{path}: {e}");
        }
        assert!(!t.0.join("elsewhere.jsonl").exists());
        // A directory link inside the log dir that points outside leads nowhere else.
        std::os::unix::fs::symlink(&t.0, t.0.join("logs/up")).unwrap();
        let e = dir
            .open(&t.s("logs/up/x.jsonl"), OpenMode::Append)
            .unwrap_err();
        assert!(matches!(e, LogFileError::Outside { .. }), "{e}");
        let e = dir.open("logs/q.jsonl", OpenMode::Append).unwrap_err();
        assert!(matches!(e, LogFileError::Relative { .. }), "{e}");
        let e = dir.open(&t.s("logs/"), OpenMode::Append).unwrap_err();
        assert!(matches!(e, LogFileError::NoFileName { .. }), "{e}");
    }

    #[test]
    fn links_fifos_and_directories_are_refused_and_left_alone() {
        let t = Scratch::new("types");
        let dir = LogDir::new(&t.0.join("logs")).unwrap();
        std::fs::write(t.0.join("secret"), "keep\n").unwrap();
        std::os::unix::fs::symlink(t.0.join("secret"), t.0.join("logs/link")).unwrap();
        let e = dir.open(&t.s("logs/link"), OpenMode::Append).unwrap_err();
        assert!(matches!(e, LogFileError::Symlink { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(t.0.join("secret")).unwrap(),
            "keep\n"
        );
        nix::unistd::mkfifo(&t.0.join("logs/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = dir.open(&t.s("logs/fifo"), OpenMode::Append).unwrap_err();
        assert!(
            matches!(e, LogFileError::NotRegular { kind: "a FIFO", .. }),
            "{e}"
        );
        std::fs::create_dir(t.0.join("logs/d")).unwrap();
        let e = dir.open(&t.s("logs/d"), OpenMode::Append).unwrap_err();
        assert!(
            matches!(
                e,
                LogFileError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
    }
}
