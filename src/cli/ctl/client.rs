//! The HTTP/1.1 client of the control API: one request per connection, on the run's Unix socket
//! or on a TCP address with a bearer token.
//!
//! It owns finding the API ([`ApiEndpoint::resolve`]: flags, then environment, then the only socket
//! in the run directory) and one exchange ([`Client::request`]). It knows nothing of resources or
//! output. std only: a request is a few hundred bytes sent once, with `Connection: close`, so the
//! whole client is a request head, a body and a response parser for `Content-Length` or chunked
//! bodies — an HTTP crate would bring a runtime for no gain.
//!
//! Tests and scripts can use it directly:
//! `Client::new(ApiEndpoint::Unix(path)).get("/v1/vpcs")?.json()?`.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The environment variable naming the API socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "VPCD_API_SOCKET";
/// The environment variable with the API's TCP URL (`http://127.0.0.1:PORT`).
pub const URL_ENV: &str = "VPCD_API_URL";
/// The environment variable holding the bearer token itself (not a file).
pub const TOKEN_ENV: &str = "VPCD_API_TOKEN";

/// How long one request may take to connect, send or answer.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer read (a full conntrack listing is well below it).
const MAX_REPLY: u64 = 256 * 1024 * 1024;

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiEndpoint {
    /// The Unix socket of `vpcd up --state DIR`.
    Unix(PathBuf),
    /// `vpcd up --api-listen HOST:PORT`: `authority` is `HOST:PORT` as written in the URL.
    Tcp { authority: String },
}

impl fmt::Display for ApiEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiEndpoint::Unix(p) => write!(f, "socket {}", p.display()),
            ApiEndpoint::Tcp { authority } => write!(f, "http://{authority}"),
        }
    }
}

/// Where the flags say the API is (`--socket`, `--url`); `None`: ask the environment.
#[derive(Debug, Clone, Default)]
pub struct ApiEndpointFlags {
    pub socket: Option<PathBuf>,
    pub url: Option<String>,
}

impl ApiEndpoint {
    /// Parses `http://HOST:PORT` (a trailing `/` is allowed; the port defaults to 80).
    pub fn from_url(url: &str) -> Result<ApiEndpoint, String> {
        let bad = |why: &str| {
            format!(
                "`{url}` is not an API URL: {why}; write http://HOST:PORT, e.g. http://127.0.0.1:7070"
            )
        };
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(bad(if url.starts_with("https://") {
                "the API speaks plain HTTP (keep it on loopback)"
            } else {
                "it must start with http://"
            }));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err(bad("it names no host"));
        }
        if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
            return Err(bad("only a host and a port, no path, user or query"));
        }
        // `[::1]:7070` and `host:7070` carry a port; `host` and `[::1]` get 80.
        let has_port = match authority.rfind(']') {
            Some(close) => authority[close..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            let port = authority.rsplit(':').next().unwrap_or("");
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad("the port must be 1-65535"));
            }
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(ApiEndpoint::Tcp { authority })
    }

    /// The API to talk to: `--socket`, else `--url`, else `VPCD_API_SOCKET` or `VPCD_API_URL`
    /// (not both), else the only `*.sock` in `run_dir`. `env` reads an environment variable.
    pub fn resolve(
        flags: &ApiEndpointFlags,
        env: impl Fn(&str) -> Option<String>,
        run_dir: &Path,
    ) -> Result<ApiEndpoint, String> {
        if let Some(p) = &flags.socket {
            return Ok(ApiEndpoint::Unix(p.clone()));
        }
        if let Some(u) = &flags.url {
            return ApiEndpoint::from_url(u).map_err(|e| format!("--url: {e}"));
        }
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        match (env(SOCKET_ENV), env(URL_ENV)) {
            (Some(_), Some(_)) => Err(format!(
                "both {SOCKET_ENV} and {URL_ENV} are set: unset one, or choose with --socket \
                 PATH or --url http://HOST:PORT"
            )),
            (Some(p), None) => Ok(ApiEndpoint::Unix(PathBuf::from(p))),
            (None, Some(u)) => ApiEndpoint::from_url(&u).map_err(|e| format!("{URL_ENV}: {e}")),
            (None, None) => discover(run_dir),
        }
    }
}

/// The only `*.sock` in the run directory.
fn discover(dir: &Path) -> Result<ApiEndpoint, String> {
    let mut socks: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    socks.sort();
    match socks.as_slice() {
        [one] => Ok(ApiEndpoint::Unix(one.clone())),
        [] => Err(format!(
            "no API socket in {}: start the network with `vpcd up FILE --state DIR`, or point \
             ctl at its API with --socket PATH ({SOCKET_ENV}) or --url http://HOST:PORT \
             ({URL_ENV})",
            dir.display()
        )),
        many => Err(format!(
            "{} API sockets in {} ({}): name one with --socket PATH or {SOCKET_ENV}",
            many.len(),
            dir.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Reads the bearer token: `--token-file FILE`, else `VPCD_API_TOKEN`; surrounding whitespace
/// (the file's final newline) is dropped.
pub fn read_token(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let (token, from) = match file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(t) => (t, format!("--token-file {}", f.display())),
            Err(e) => {
                return Err(format!(
                    "--token-file {}: {e}; name the file `vpcd up --api-token-file` reads",
                    f.display()
                ));
            }
        },
        None => match env(TOKEN_ENV) {
            Some(t) => (t, TOKEN_ENV.to_string()),
            None => return Ok(None),
        },
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("{from}: the token is empty"));
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{from}: the token has spaces or control characters; it must be one word"
        ));
    }
    Ok(Some(token.to_string()))
}

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there (or it may not be used): the caller says how to point elsewhere.
    #[error("cannot reach the API at {endpoint}: {source}")]
    Connect {
        endpoint: ApiEndpoint,
        source: std::io::Error,
    },
    /// The connection broke or timed out during the exchange.
    #[error("the API at {endpoint} did not answer: {source}")]
    Exchange {
        endpoint: ApiEndpoint,
        source: std::io::Error,
    },
    /// What came back is not an HTTP/1.1 response.
    #[error("the API at {endpoint} sent an answer that is not HTTP, or cut it short")]
    NotHttp { endpoint: ApiEndpoint },
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client of one API endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: ApiEndpoint,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: ApiEndpoint) -> Client {
        Client {
            endpoint,
            token: None,
            timeout: TIMEOUT,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &ApiEndpoint {
        &self.endpoint
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `GET path` accepting JSON.
    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request("GET", path, "application/json", None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.request(
            "POST",
            path,
            "application/json",
            Some(body.to_string().as_bytes()),
        )
    }

    /// One exchange. `path` includes the query and must already be percent-encoded
    /// ([`path_segment`], [`query`]).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        accept: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let head = self.head(method, path, accept, body.map(<[u8]>::len));
        let raw = match &self.endpoint {
            ApiEndpoint::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| self.connect_error(e))?;
                s.set_read_timeout(Some(self.timeout))
                    .and_then(|()| s.set_write_timeout(Some(self.timeout)))
                    .map_err(|e| self.exchange_error(e))?;
                self.exchange(s, &head, body)?
            }
            ApiEndpoint::Tcp { authority } => {
                let s = self.connect_tcp(authority)?;
                self.exchange(s, &head, body)?
            }
        };
        parse_response(&raw).ok_or_else(|| ClientError::NotHttp {
            endpoint: self.endpoint.clone(),
        })
    }

    fn head(&self, method: &str, path: &str, accept: &str, body_len: Option<usize>) -> String {
        let host = match &self.endpoint {
            ApiEndpoint::Unix(_) => "localhost",
            ApiEndpoint::Tcp { authority } => authority,
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: {accept}\r\n\
             User-Agent: vpcd-ctl/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        match body_len {
            Some(n) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {n}\r\n"
            )),
            None if method != "GET" => head.push_str("Content-Length: 0\r\n"),
            None => {}
        }
        head.push_str("\r\n");
        head
    }

    fn connect_tcp(&self, authority: &str) -> Result<TcpStream, ClientError> {
        let addrs = authority
            .to_socket_addrs()
            .map_err(|e| self.connect_error(e))?;
        let mut last = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name resolves to no address",
        );
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(self.timeout))
                        .and_then(|()| s.set_write_timeout(Some(self.timeout)))
                        .map_err(|e| self.exchange_error(e))?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(self.connect_error(last))
    }

    fn exchange(
        &self,
        mut s: impl Read + Write,
        head: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut send = || -> std::io::Result<()> {
            s.write_all(head.as_bytes())?;
            if let Some(b) = body {
                s.write_all(b)?;
            }
            s.flush()
        };
        send().map_err(|e| self.exchange_error(e))?;
        let mut raw = Vec::new();
        s.take(MAX_REPLY)
            .read_to_end(&mut raw)
            .map_err(|e| self.exchange_error(e))?;
        Ok(raw)
    }

    fn connect_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn exchange_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Exchange {
            endpoint: self.endpoint.clone(),
            source,
        }
    }
}

/// Parses an HTTP/1.1 response: status, `Content-Type`, and the body (`Content-Length`,
/// chunked, or up to the end of the connection).
pub fn parse_response(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut chunked, mut length, mut content_type) = (false, None, None);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "content-length" => length = Some(value.parse::<usize>().ok()?),
            "content-type" => content_type = Some(value.to_string()),
            _ => {}
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Reply {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..nl]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Percent-encodes one path segment (a resource name): everything but unreserved characters.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?k=v&...` of the pairs whose value is set, percent-encoded; empty when none is.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", path_segment(v))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn urls_name_a_host_and_a_port() {
        let tcp = |a: &str| ApiEndpoint::Tcp {
            authority: a.into(),
        };
        assert_eq!(
            ApiEndpoint::from_url("http://127.0.0.1:7070"),
            Ok(tcp("127.0.0.1:7070"))
        );
        assert_eq!(ApiEndpoint::from_url("http://[::1]:7/"), Ok(tcp("[::1]:7")));
        assert_eq!(ApiEndpoint::from_url("http://[::1]"), Ok(tcp("[::1]:80")));
        assert_eq!(
            ApiEndpoint::from_url("http://localhost"),
            Ok(tcp("localhost:80"))
        );
        for bad in [
            "https://127.0.0.1:1",
            "127.0.0.1:7070",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h:1/v1",
            "http://u@h:1",
        ] {
            let e = ApiEndpoint::from_url(bad).expect_err(bad);
            assert!(e.contains("http://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_both_variables_are_ambiguous() {
        let env = |k: &str| match k {
            SOCKET_ENV => Some("/tmp/env.sock".to_string()),
            URL_ENV => Some("http://127.0.0.1:9".to_string()),
            _ => None,
        };
        let flags = ApiEndpointFlags {
            socket: Some("/tmp/flag.sock".into()),
            url: None,
        };
        let dir = Path::new("/nonexistent-vpcd-run-dir");
        assert_eq!(
            ApiEndpoint::resolve(&flags, env, dir),
            Ok(ApiEndpoint::Unix("/tmp/flag.sock".into()))
        );
        let e = ApiEndpoint::resolve(&ApiEndpointFlags::default(), env, dir).unwrap_err();
        assert!(e.contains("both VPCD_API_SOCKET and VPCD_API_URL"), "{e}");
        let e = ApiEndpoint::resolve(&ApiEndpointFlags::default(), no_env, dir).unwrap_err();
        assert!(
            e.contains("/nonexistent-vpcd-run-dir") && e.contains("--socket"),
            "{e}"
        );
    }

    #[test]
    fn tokens_are_one_word() {
        let env = |v: &'static str| move |k: &str| (k == TOKEN_ENV).then(|| v.to_string());
        assert_eq!(read_token(None, no_env), Ok(None));
        assert_eq!(read_token(None, env("abc\n")), Ok(Some("abc".into())));
        assert!(read_token(None, env("  ")).is_err());
        assert!(read_token(None, env("a b")).is_err());
        assert!(read_token(Some(Path::new("/nonexistent/token")), no_env).is_err());
    }

    #[test]
    fn responses_with_length_chunks_or_neither() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}xx",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.body, b"{}");
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;x\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcd"[..]));
        let r = parse_response(b"HTTP/1.0 500 x\r\n\r\nboom").unwrap();
        assert_eq!(r.body, b"boom");
        assert_eq!(parse_response(b"SSH-2.0-x\r\n\r\n"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort"),
            None
        );
    }

    #[test]
    fn names_and_filters_are_percent_encoded() {
        assert_eq!(path_segment("tenant-a"), "tenant-a");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(
            query(&[
                ("vpc", Some("a".into())),
                ("gateway", None),
                ("instance", Some("a/f1".into()))
            ]),
            "?vpc=a&instance=a%2Ff1"
        );
        assert_eq!(query(&[("vpc", None)]), "");
    }
}
