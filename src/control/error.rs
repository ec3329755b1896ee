//! API errors: what a rejected change or request body tells the caller, as JSON.
//!
//! A rejected change is a list of [`ApiError`]s, one per problem, in the order `vpcd check` would
//! print them. Each says what is wrong (`error`), which field (`field`) and what to do (`hint`),
//! with a [`ErrorCode`] the HTTP layer maps to a status. Line and column are left out on purpose:
//! the TOML text they would point into is generated, not something the caller wrote.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::topology::{Diagnostic, TopologyError};

/// What kind of refusal; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request or the topology it would produce is invalid (400).
    InvalidInput,
    /// The request names a resource that does not exist (404).
    NotFound,
    /// The resource the request creates already exists (409).
    AlreadyExists,
    /// The resource is still in use (an EIP still associated, an instance a DNAT entry targets):
    /// the cloud's `DependencyViolation` (409).
    DependencyViolation,
    /// The request has no valid bearer token (TCP listener only) (401).
    Unauthorized,
    /// The request body is larger than the API accepts (413).
    TooLarge,
    /// The run is stopping, or the running network refused the change (503).
    Unavailable,
    /// Something failed on the server's side (a state directory that cannot be written) (500).
    Internal,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::DependencyViolation => 409,
            ErrorCode::Unauthorized => 401,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// One problem, as the API reports it:
/// `{"code": "invalid_input", "error": "...", "field": "ip", "hint": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub code: ErrorCode,
    /// What is wrong.
    pub error: String,
    /// The request's field (`ip`, `ports`, `ingress[0].peer`) when the problem lies in what the
    /// request wrote; otherwise the topology key path (`vpc[tenant-a].instance[fn-a1].eip`), as
    /// `vpcd check` prints it; empty when unknown.
    pub field: String,
    /// What to do; absent when there is nothing useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(
        code: ErrorCode,
        error: impl Into<String>,
        field: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        ApiError {
            code,
            error: error.into(),
            field: field.into(),
            hint: Some(hint.into()),
        }
    }

    /// A validation diagnostic as an API error. `scope` is the key path of the element the
    /// request wrote: a diagnostic inside it names the request's field instead of the key path.
    pub fn from_diagnostic(d: &Diagnostic, scope: Option<&str>) -> Self {
        let field = match scope.and_then(|s| d.key_path.strip_prefix(s)) {
            Some(rest) if rest.starts_with('.') => rest[1..].to_string(),
            _ => d.key_path.clone(),
        };
        ApiError {
            code: ErrorCode::InvalidInput,
            error: without_line_refs(&d.message),
            field,
            hint: d.hint.as_deref().map(without_line_refs),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if !self.field.is_empty() {
            write!(f, " (at {})", self.field)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

/// A refused change or request: every problem found. The state is unchanged.
///
/// Serializes as `{"errors": [ApiError, ...]}`; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ChangeError {
    pub errors: Vec<ApiError>,
}

impl ChangeError {
    pub fn one(e: ApiError) -> Self {
        ChangeError { errors: vec![e] }
    }

    /// The HTTP status: the first error's.
    pub fn http_status(&self) -> u16 {
        self.errors.first().map_or(400, |e| e.code.http_status())
    }

    /// Validation errors of the topology a change produced.
    pub(crate) fn from_topology(e: &TopologyError, scope: Option<&str>) -> Self {
        let errors: Vec<ApiError> = match e {
            TopologyError::Io { .. } => vec![ApiError {
                code: ErrorCode::InvalidInput,
                error: e.to_string(),
                field: String::new(),
                hint: None,
            }],
            TopologyError::Invalid(diags) => diags
                .iter()
                .map(|d| ApiError::from_diagnostic(d, scope))
                .collect(),
        };
        if errors.is_empty() {
            return ChangeError::one(ApiError {
                code: ErrorCode::InvalidInput,
                error: "the change makes the topology invalid".into(),
                field: String::new(),
                hint: None,
            });
        }
        ChangeError { errors }
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"errors\":[]}"))
    }
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Removes references to lines of the generated TOML text from a validation message:
/// `is on line 12` becomes `already exists`, ` on line 12` and ` (line 12)` go.
fn without_line_refs(s: &str) -> String {
    let mut out = s.to_string();
    for (pattern, replacement) in [
        (" is on line ", " already exists"),
        (" (line ", ""),
        (" on line ", ""),
    ] {
        while let Some(at) = out.find(pattern) {
            let digits_start = at + pattern.len();
            let digits = out[digits_start..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits == 0 {
                break;
            }
            let mut end = digits_start + digits;
            if pattern == " (line " && out[end..].starts_with(')') {
                end += 1;
            }
            out.replace_range(at..end, replacement);
        }
    }
    out
}

/// Decodes a JSON request body into `T`, with errors in the same words as topology files:
/// `unknown key`, `missing key`, `wrong type`, `N is out of range here`, and the value parsers'
/// own "what; what to do" messages. `field` names the offending top-level key.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ChangeError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ChangeError::one(ApiError::new(
            ErrorCode::InvalidInput,
            format!("invalid JSON: {e}"),
            "",
            "send one JSON object, like {\"vpc\": \"tenant-a\", \"name\": \"fn-a3\"}",
        ))
    })?;
    let first = match T::deserialize(&value) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let raw = first.to_string();
    let raw = match raw.rfind(" at line ") {
        Some(at) => raw[..at].to_string(),
        None => raw,
    };
    let (error, field, hint) = describe_serde(&raw, || culprit::<T>(&value));
    Err(ChangeError::one(ApiError {
        code: ErrorCode::InvalidInput,
        error,
        field,
        hint,
    }))
}

/// The top-level key whose value `T` refuses: the first key without which the error goes away
/// or becomes "missing field `key`".
fn culprit<T: DeserializeOwned>(value: &serde_json::Value) -> String {
    let Some(obj) = value.as_object() else {
        return String::new();
    };
    for key in obj.keys() {
        let mut rest = obj.clone();
        rest.remove(key);
        match T::deserialize(&serde_json::Value::Object(rest)) {
            Ok(_) => return key.clone(),
            Err(e) if e.to_string().starts_with(&format!("missing field `{key}`")) => {
                return key.clone();
            }
            Err(_) => {}
        }
    }
    String::new()
}

/// serde's message -> (message, field, hint), in the words `vpcd check` uses.
fn describe_serde(raw: &str, culprit: impl FnOnce() -> String) -> (String, String, Option<String>) {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = backticked(expected);
        let hint = if valid.is_empty() {
            "remove this key: this request takes no keys".to_string()
        } else {
            format!(
                "remove or rename it; the keys here are: {}",
                valid.join(", ")
            )
        };
        return (format!("unknown key `{key}`"), key.to_string(), Some(hint));
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split_once('`').map_or(rest, |(k, _)| k);
        return (
            format!("missing key `{key}`"),
            key.to_string(),
            Some(format!("add \"{key}\" to the request body")),
        );
    }
    let field = culprit();
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let list = backticked(expected).join(", ");
        return (
            format!("`{value}` is not allowed here"),
            field,
            Some(format!("write one of: {list}")),
        );
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        return (format!("wrong type: {rest}"), field, type_hint(expected));
    }
    if let Some(rest) = raw.strip_prefix("invalid value: integer `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", expected ");
        return (
            format!("{value} is out of range here"),
            field,
            type_hint(expected).or(Some(format!("write {expected}"))),
        );
    }
    match raw.split_once("; ") {
        Some((what, todo)) => (what.to_string(), field, Some(todo.to_string())),
        None => (raw.to_string(), field, None),
    }
}

fn type_hint(expected: &str) -> Option<String> {
    let text = match expected {
        "u8" => "write a whole number from 0 to 255, without quotes",
        "u16" => "write a whole number from 0 to 65535, without quotes",
        "u32" => "write a whole number without quotes",
        "a string" => "write the value in double quotes",
        "a sequence" => "write a list in brackets, like [\"a\", \"b\"]",
        _ if expected.starts_with("struct") => "write an object of \"key\": value pairs",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_references_are_removed() {
        assert_eq!(
            without_line_refs("the first instance named `a` is on line 12; rename one of them"),
            "the first instance named `a` already exists; rename one of them"
        );
        assert_eq!(
            without_line_refs("EIP x is already bound to instance a (line 3)"),
            "EIP x is already bound to instance a"
        );
        assert_eq!(
            without_line_refs("already forwarded by the DNAT entry on line 7"),
            "already forwarded by the DNAT entry"
        );
        assert_eq!(without_line_refs("on line x"), "on line x");
    }
}
