//! Bearer tokens for the API's TCP listener.
//!
//! The Unix socket is protected by its mode (0600: root only); a TCP port has no such guard, so
//! `vpcd up --api-listen ADDR` refuses to start without `--api-token-file FILE`, and every
//! request on that listener must carry `Authorization: Bearer TOKEN` (401 otherwise, with a JSON
//! error like every other refusal). The token is read from a file, never from the command line,
//! where any user could read it in `ps`. Comparison takes the same time wherever the first
//! difference is.

use std::path::Path;

/// The shortest token accepted (a guessable token on a TCP port is worse than none).
pub const MIN_TOKEN_LEN: usize = 16;

/// A bearer token (printable ASCII, at least [`MIN_TOKEN_LEN`] characters).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token in `text` (surrounding whitespace, such as a final newline, is ignored).
    pub fn parse(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token is {} characters long; use at least {MIN_TOKEN_LEN} (for example \
                 `head -c 24 /dev/urandom | base64 > FILE`)",
                t.len()
            ));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the token must be printable ASCII without spaces (it goes into an HTTP header)"
                    .into(),
            );
        }
        Ok(Token(t.to_string()))
    }

    /// The token in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Token::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.0.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_whole() {
        let t = Token::parse("0123456789abcdef-token\n").expect("valid");
        assert!(t.accepts(Some("Bearer 0123456789abcdef-token")));
        assert!(!t.accepts(Some("Bearer 0123456789abcdef-toke")));
        assert!(!t.accepts(Some("Bearer 0123456789abcdef-tokenX")));
        assert!(!t.accepts(Some("Basic 0123456789abcdef-token")));
        assert!(!t.accepts(Some("0123456789abcdef-token")));
        assert!(!t.accepts(None));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused() {
        assert!(Token::parse("short").unwrap_err().contains("at least 16"));
        assert!(
            Token::parse("0123456789 abcdef")
                .unwrap_err()
                .contains("printable")
        );
        assert_eq!(
            format!("{:?}", Token::parse("0123456789abcdef").unwrap()),
            "Token(..)"
        );
    }
}
