//! Human output of `vpcd ctl`: aligned tables of the API's JSON objects.
//!
//! A [`Table`] has a header and one row per object; columns are left-aligned and separated by
//! two spaces, with no trailing spaces. Cells come from JSON values by one rule ([`cell`]):
//! absent or `null` is `-`, a list is comma-separated, a string is itself. The renderers of each
//! resource pick columns and may format a cell themselves; none of them panics on an answer of
//! an unexpected shape (a missing field is `-`).

use serde_json::Value;

/// Rows of cells under a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A table whose headers are the API's field names in capitals (`route_table` ->
    /// `ROUTE_TABLE`).
    pub fn of_fields(keys: &[&str]) -> Table {
        Table {
            header: keys.iter().map(|k| k.to_ascii_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are `-`, extra ones dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), "-".to_string());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many rows it has.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table, or `empty` (a whole line, e.g. `no subnets in VPC a`) when it has no rows.
    pub fn render_or(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        self.render()
    }

    /// The header and the rows, each line ending in `\n`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, (c, w)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(c);
                text.extend(std::iter::repeat_n(' ', w - width(c)));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width: characters (the API's names and addresses are ASCII; no East Asian widths).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// One JSON value as a cell: `-` for absent/null/empty, lists comma-separated, one line.
pub fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(_) => v.to_string(),
    };
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.is_empty() { "-".into() } else { text }
}

/// The cell of `obj[key]`.
pub fn field(obj: &Value, key: &str) -> String {
    cell(&obj[key])
}

/// Seconds: whole as they came (`12`), fractions with one decimal (`12.3`), `-` when absent.
pub fn seconds(v: &Value) -> String {
    match (v.as_u64(), v.as_f64()) {
        (Some(whole), _) => whole.to_string(),
        (None, Some(s)) => format!("{s:.1}"),
        _ => "-".into(),
    }
}

/// The array at `v`, or an error that says the answer is not what the contract promises.
pub fn list<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], String> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("the API's answer is not a list of {what}"))
}

/// `KEY  value` lines, aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(format!("{k:<w$}  {v}").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "CIDR", "SUBNETS"]);
        t.row(vec!["tenant-a".into(), "10.0.0.0/16".into(), "2".into()]);
        t.row(vec!["b".into(), "10.1.0.0/16".into()]);
        assert_eq!(
            t.render(),
            "NAME      CIDR         SUBNETS\n\
             tenant-a  10.0.0.0/16  2\n\
             b         10.1.0.0/16  -\n"
        );
        assert_eq!(Table::new(&["A"]).render_or("no VPCs"), "no VPCs\n");
    }

    #[test]
    fn cells_from_json() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!(["a", "b"])), "a, b");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!("two\nlines")), "two lines");
        assert_eq!(field(&json!({"x": 1}), "y"), "-");
        assert_eq!(field(&json!("not an object"), "y"), "-");
        assert_eq!(seconds(&json!(1.25)), "1.2");
        assert_eq!(seconds(&json!(7)), "7");
        assert!(list(&json!({}), "VPCs").is_err());
    }

    #[test]
    fn fields_align() {
        assert_eq!(
            fields(&[
                ("NAME", "a".into()),
                ("CIDR", "10.0.0.0/16".into()),
                ("X", "".into())
            ]),
            "NAME  a\nCIDR  10.0.0.0/16\nX\n"
        );
    }
}
