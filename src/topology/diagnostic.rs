//! Located, user-facing topology errors.

/// One problem in a topology file: what, where (file, line, column, key path) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line and column of the offending value (0 when unknown).
    pub line: usize,
    pub column: usize,
    /// Like `vpc[tenant-a].subnet[functions].cidr`.
    pub key_path: String,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid topology ({} problem(s))", .0.len())]
    Invalid(Vec<Diagnostic>),
}
