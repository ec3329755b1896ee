//! Stages 1 and 2: TOML syntax errors and serde model errors, located with a key path found in
//! the syntax tree (`DeTable`), plus the span lookups the rules use to point at whole tables.
//!
//! Owns the translation of `toml` and `serde` messages into [`Diagnostic`]s; it knows nothing
//! about the topology's rules.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::super::diagnostic::Diagnostic;
use super::names::closest;

pub(super) fn syntax_diagnostic(
    file: &str,
    text: &str,
    tree: &DeTable<'_>,
    e: &toml::de::Error,
) -> Diagnostic {
    let span = e.span();
    let path = span
        .as_ref()
        .map(|s| key_path_at(tree, text, s.start))
        .unwrap_or_default();
    Diagnostic::new(
        file,
        text,
        span,
        path,
        format!("invalid TOML: {}", e.message().trim()),
        Some(
            "fix the TOML syntax here: check quotes, brackets and `key = value` pairs".to_string(),
        ),
    )
}

pub(super) fn serde_diagnostic(
    file: &str,
    text: &str,
    tree: &DeTable<'_>,
    e: &toml::de::Error,
) -> Diagnostic {
    let span = e.span();
    let mut path = span
        .as_ref()
        .map(|s| key_path_at(tree, text, s.start))
        .unwrap_or_default();
    let raw = e.message().trim();
    let (message, hint) = if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = backticked(expected);
        let hint = if valid.is_empty() {
            "remove this key: this table takes no keys".to_string()
        } else {
            let list = valid.join(", ");
            match closest(key, valid.iter().map(String::as_str)) {
                Some(best) => format!("did you mean `{best}`? the keys here are: {list}"),
                None => format!("remove or rename it; the keys here are: {list}"),
            }
        };
        (format!("unknown key `{key}`"), Some(hint))
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split_once('`').map_or(rest, |(k, _)| k);
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        (
            format!("missing key `{key}`"),
            Some(format!(
                "add `{key} = ...` to this table (see topologies/README.md)"
            )),
        )
    } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = backticked(expected);
        let list = valid.join(", ");
        let hint = match closest(value, valid.iter().map(String::as_str)) {
            Some(best) => format!("did you mean \"{best}\"? write one of: {list}"),
            None => format!("write one of: {list}"),
        };
        (format!("`{value}` is not allowed here"), Some(hint))
    } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        (format!("wrong type: {rest}"), type_hint(expected))
    } else if let Some(rest) = raw.strip_prefix("invalid value: integer `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", expected ");
        (
            format!("{value} is out of range here"),
            type_hint(expected).or(Some(format!("write {expected}"))),
        )
    } else {
        // The FromStr messages of the model say "what; what to do".
        match raw.split_once("; ") {
            Some((what, todo)) => (what.to_string(), Some(todo.to_string())),
            None => (raw.to_string(), None),
        }
    };
    Diagnostic::new(file, text, span, path, message, hint)
}

fn type_hint(expected: &str) -> Option<String> {
    let text = match expected {
        "u8" => "write a whole number from 0 to 255, without quotes",
        "u16" => "write a whole number from 0 to 65535, without quotes",
        "u32" => "write a whole number without quotes",
        "a string" => "write the value in double quotes",
        "a sequence" => "write a list in brackets, like [\"a\", \"b\"]",
        _ if expected.starts_with("struct") => "write a table of `key = value` pairs",
        _ => return None,
    };
    Some(text.to_string())
}

/// The words between backticks in `s`: serde's list of expected keys or variants.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}

/// The key path of the innermost key or value of `tree` at byte `offset`.
fn key_path_at(tree: &DeTable<'_>, text: &str, offset: usize) -> String {
    let mut path = Vec::new();
    if find_in_table(tree, offset, &mut path) {
        return render_path(&path);
    }
    // Not inside any key or value (e.g. a syntax error between them): the last table header.
    let before = &text[..floor_boundary(text, offset)];
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

pub(super) fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

enum Seg {
    Key(String),
    Elem(String),
}

fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Elem(e) => {
                out.push('[');
                out.push_str(e);
                out.push(']');
            }
        }
    }
    out
}

fn span_has(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().to_string()));
        if span_has(key.span(), offset) || find_in_value(value, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) if find_in_table(t, offset, path) => return true,
        DeValue::Array(a) => {
            for (i, elem) in a.iter().enumerate() {
                path.push(Seg::Elem(element_label(elem, i)));
                if find_in_value(elem, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    span_has(value.span(), offset)
}

/// One step of a path into the syntax tree: a key of a table, or a position in an array.
#[derive(Clone, Copy)]
pub(super) enum Step<'s> {
    Key(&'s str),
    Index(usize),
}

/// The span of the value at `path` in `tree`: for a table in an array of tables, its
/// `[[header]]`; for an inline table, its braces. `None` when there is no such value.
pub(super) fn span_at(tree: &DeTable<'_>, path: &[Step<'_>]) -> Option<Range<usize>> {
    let (Step::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let mut value = tree.iter().find(|(k, _)| k.get_ref() == first)?.1;
    for step in rest {
        value = match (step, value.get_ref()) {
            (Step::Key(key), DeValue::Table(t)) => t.iter().find(|(k, _)| k.get_ref() == key)?.1,
            (Step::Index(i), DeValue::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(value.span())
}

/// An array element's `name`, or its position.
fn element_label(elem: &Spanned<DeValue<'_>>, index: usize) -> String {
    if let DeValue::Table(t) = elem.get_ref() {
        for (k, v) in t.iter() {
            if k.get_ref() == "name"
                && let DeValue::String(s) = v.get_ref()
            {
                return s.to_string();
            }
        }
    }
    index.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::Topology;

    #[test]
    fn key_paths_use_element_names() {
        let text = "[[vpc]]\nname = \"a\"\n[[vpc.subnet]]\nname = \"s\"\ncidr = 1\n[[vpc.subnet]]\ncidr = 2\n";
        let tree = DeTable::parse(text).unwrap();
        let at = |needle: &str| key_path_at(tree.get_ref(), text, text.find(needle).unwrap());
        assert_eq!(at("cidr = 1"), "vpc[a].subnet[s].cidr");
        assert_eq!(at("1\n"), "vpc[a].subnet[s].cidr");
        assert_eq!(at("cidr = 2"), "vpc[a].subnet[1].cidr");
        assert_eq!(at("[[vpc.subnet]]\ncidr"), "vpc[a].subnet[1]");
    }

    #[test]
    fn span_at_finds_tables_by_position() {
        let text = "[[vpc]]\nname = \"a\"\n[[vpc.nat_gateway]]\ndnat = [{ eip = \"e\" }]\n[[vpc.nat_gateway]]\n[[vpc.nat_gateway.dnat]]\neip = \"f\"\n";
        let tree = DeTable::parse(text).unwrap();
        let at = |i: usize| {
            let path = [
                Step::Key("vpc"),
                Step::Index(0),
                Step::Key("nat_gateway"),
                Step::Index(i),
                Step::Key("dnat"),
                Step::Index(0),
            ];
            span_at(tree.get_ref(), &path).map(|s| &text[s])
        };
        assert_eq!(at(0), Some("{ eip = \"e\" }"));
        assert_eq!(at(1), Some("[[vpc.nat_gateway.dnat]]"));
        assert_eq!(at(2), None);
        assert_eq!(span_at(tree.get_ref(), &[Step::Index(0)]), None);
        assert_eq!(span_at(tree.get_ref(), &[]), None);
    }

    #[test]
    fn serde_messages_become_message_and_hint() {
        let d = serde_diagnostic(
            "f",
            "",
            &DeTable::new(),
            &toml::from_str::<Topology>(
                "[[vpc]]\nname = \"a\"\ncidr = \"10.0.0.0/16\"\nsubnets = []\n",
            )
            .unwrap_err(),
        );
        assert_eq!(d.message, "unknown key `subnets`");
        assert_eq!(
            d.hint.as_deref(),
            Some(
                "did you mean `subnet`? the keys here are: name, cidr, subnet, route_table, instance, nat_gateway, security_group, network_acl, egress_allow"
            )
        );
    }
}
