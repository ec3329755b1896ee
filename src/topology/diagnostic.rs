//! Located, user-facing topology errors.
//!
//! A [`Diagnostic`] says what is wrong, where (file, line, column, key path) and what to do. Its
//! `Display` is plain text with no colours or terminal escapes, one fixed layout, so tests can
//! compare the exact text and the output reads the same in a log file as on a terminal:
//!
//! ```text
//! error: subnet 10.1.0.0/24 is outside its VPC's CIDR 10.0.0.0/16
//!   --> bad.toml:12:10
//!    = at vpc[tenant-a].subnet[functions].cidr
//!    |
//! 12 |   cidr = "10.1.0.0/24"
//!    |          ^^^^^^^^^^^^^
//!    = hint: choose a subnet CIDR inside 10.0.0.0/16, or widen the VPC's cidr
//! ```
//!
//! Lines whose content is unknown are left out: no `= at` line without a key path, no snippet
//! without a location, no `= hint` line without a hint.

use std::fmt;
use std::ops::Range;

/// One problem in a topology file: what, where (file, line, column, key path) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line and column (in characters) of the offending value (0 when unknown).
    pub line: usize,
    pub column: usize,
    /// Like `vpc[tenant-a].subnet[functions].cidr`; empty when unknown.
    pub key_path: String,
    pub message: String,
    pub hint: Option<String>,
    /// The text of line `line`, without its line break (empty when unknown).
    pub source_line: String,
    /// How many characters from `column` on the snippet underlines (at least 1 when located).
    pub span_len: usize,
}

impl Diagnostic {
    /// A diagnostic located at the byte range `span` of `text` (`None`: not located).
    ///
    /// Out-of-range or non-boundary offsets are clamped, never a panic.
    pub fn new(
        file: &str,
        text: &str,
        span: Option<Range<usize>>,
        key_path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        let mut d = Diagnostic {
            file: file.to_string(),
            line: 0,
            column: 0,
            key_path: key_path.into(),
            message: message.into(),
            hint,
            source_line: String::new(),
            span_len: 0,
        };
        if let Some(span) = span {
            let start = floor_boundary(text, span.start);
            let end = floor_boundary(text, span.end.max(start));
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            let line_text = text[line_start..line_end].trim_end_matches('\r');
            d.line = text[..start].matches('\n').count() + 1;
            d.column = text[line_start..start].chars().count() + 1;
            d.source_line = line_text.to_string();
            let underlined = &text[start..end.min(line_end).max(start)];
            d.span_len = underlined.trim_end_matches('\r').chars().count().max(1);
        }
        d
    }
}

/// The largest char boundary of `text` at or below `i`.
fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let located = self.line > 0;
        let gutter = if located {
            self.line.to_string().len()
        } else {
            1
        };
        let pad = " ".repeat(gutter);
        if located {
            writeln!(f, "{pad}--> {}:{}:{}", self.file, self.line, self.column)?;
        } else {
            writeln!(f, "{pad}--> {}", self.file)?;
        }
        if !self.key_path.is_empty() {
            writeln!(f, "{pad} = at {}", self.key_path)?;
        }
        if located {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", self.line, self.source_line)?;
            // Keep tabs so the carets line up with the source line as a terminal shows it.
            let lead: String = self
                .source_line
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(self.span_len.max(1)))?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why a topology could not be loaded. `Display` renders every diagnostic (see the module doc),
/// then a one-line summary; it is plain text, stable, and ends with a newline.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("error: cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render_all(.0))]
    Invalid(Vec<Diagnostic>),
}

impl TopologyError {
    /// The diagnostics, empty for an I/O error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            TopologyError::Io { .. } => &[],
            TopologyError::Invalid(d) => d,
        }
    }
}

fn render_all(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    let file = diags.first().map_or("the topology", |d| d.file.as_str());
    match diags.len() {
        0 => out.push_str(&format!("error: {file} is not a valid topology\n")),
        1 => out.push_str(&format!("error: {file}: 1 problem, nothing was loaded\n")),
        n => out.push_str(&format!(
            "error: {file}: {n} problems, nothing was loaded\n"
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_snippet_with_carets_under_the_value() {
        let text = "[[vpc]]\nname = \"a\"\n  cidr = \"10.1.0.0/24\"\n";
        let start = text.find("\"10.1").unwrap();
        let d = Diagnostic::new(
            "bad.toml",
            text,
            Some(start..start + 13),
            "vpc[a].cidr",
            "bad",
            Some("fix it".into()),
        );
        assert_eq!((d.line, d.column, d.span_len), (3, 10, 13));
        assert_eq!(
            d.to_string(),
            "error: bad\n --> bad.toml:3:10\n  = at vpc[a].cidr\n  |\n3 |   cidr = \"10.1.0.0/24\"\n  |          ^^^^^^^^^^^^^\n  = hint: fix it\n"
        );
    }

    #[test]
    fn unlocated_and_out_of_range_spans_do_not_panic() {
        let d = Diagnostic::new("f", "ab", None, "", "m", None);
        assert_eq!(d.to_string(), "error: m\n --> f\n");
        let d = Diagnostic::new("f", "é\n", Some(1..99), "", "m", None);
        assert_eq!((d.line, d.column, d.span_len), (1, 1, 1));
        let d = Diagnostic::new("f", "ab", Some(2..2), "", "m", None);
        assert_eq!((d.line, d.column, d.span_len), (1, 3, 1));
    }
}
