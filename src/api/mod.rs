//! The control API: HTTP/JSON on a Unix socket, and optionally on TCP with a bearer token,
//! served by `vpcd up --state DIR`.
//!
//! Routes (all JSON unless said otherwise; every refusal is a 4xx/5xx with
//! `{"errors": [{code, error, field, hint}]}`, see [`ChangeError::to_json`]):
//! - reads: `GET /v1/status`, `/v1/topology` (the topology file as text, or the model as JSON
//!   with `Accept: application/json`), `/v1/vpcs`, `/v1/vpcs/{vpc}`, `/v1/vpcs/{vpc}/{kind}`
//!   ([`reads::VPC_RESOURCES`]), `/v1/eips`, `/v1/internet`, `/v1/ops` ([`reads`]);
//! - changes: `POST /v1/ops/{op}` ([`Change::decode`]'s operation names); `200` with
//!   `{"op", "generation", "applied", "problems"}`. Unknown operation: 404; body above
//!   [`BODY_LIMIT`]: 413; `POST /v1/batch` `{"changes": [{op, request}]}`: many changes, all
//!   or none, one step of the running network and one journal record
//!   ([`crate::control::decode_batch`]); `op` is then the list of operations;
//! - `POST /v1/explain` `{from, to, source_port?}`: `vpcd explain` against the running tables;
//! - the running dataplane, through [`Handle::query`]: `GET /v1/conntrack?vpc=&gateway=&instance=
//!   &protocol=&table=&limit=` and `POST /v1/conntrack/flush` ([`crate::inspect`]),
//!   `GET /v1/flow-log`, `POST /v1/flow-log/start|stop`, `GET /v1/captures`,
//!   `POST /v1/captures/start|stop` ([`crate::runtime::observing`]), `GET /metrics`
//!   (Prometheus text, [`metrics`]);
//! - DNS ([`dns`]): `GET /v1/dns/zones`, `/v1/dns/zones/{zone}`, `/v1/dns/public-zones`,
//!   `/v1/dns/public-zones/{zone}`, `/v1/dns/domain-lists`, `/v1/dns/domain-lists/{list}`,
//!   `/v1/dns/firewall`,
//!   `/v1/dns/egress-by-name`; `POST /v1/dns/query` (the running resolver, on an instance's
//!   behalf); `GET /v1/dns/query-log`, `POST /v1/dns/query-log/start|stop`;
//! - `GET /v1/openapi.json`: the OpenAPI document ([`openapi`]), also kept in the repository.
//!
//! Changes are made by one task, the committer ([`commit`]: the control plane's single
//! writer), which takes the requests queued at a time as a group and follows the control core's
//! protocol once for all of them: each request applied to a working copy of the
//! [`ControlState`] (refusal → 4xx for that request only), `handle.apply(plan)` (refusal →
//! 409/503, running plan unchanged), `journal.append(..)` (failure → the old plan is put back,
//! 500), then the state becomes the copy; the answers wait for the journal's fsync (group
//! commit, see [`crate::control::journal`]). Now and then the journal is compacted into the
//! snapshot. Reads lock the state briefly.
//!
//! The socket is created mode 0600 (only root may change the network); [`serve`] removes a stale
//! socket file first, and the caller removes it when the run stops. The TCP listener
//! ([`Listen::tcp`]) serves the same routes behind [`auth::Token`].

pub mod auth;
mod commit;
pub mod dns;
pub mod metrics;
pub mod openapi;
pub mod reads;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::control::{ApiError, Change, ChangeError, ControlState, ErrorCode, Journal};
use crate::runtime::reload::{ApplyError, Handle};
use auth::Token;

/// The largest request body accepted (413 above it).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Where to serve the API.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The Unix socket (mode 0600).
    pub socket: PathBuf,
    /// A TCP address and the token every request on it must carry.
    pub tcp: Option<(SocketAddr, Token)>,
}

/// What the server shares between requests.
struct Shared {
    state: Mutex<ControlState>,
    /// Locked only while `state` is (appends and compactions happen in the state's order).
    journal: std::sync::Mutex<Journal>,
    /// Change requests, for the committer ([`commit`]).
    queue: commit::Queue,
    handle: Handle,
    started: std::time::Instant,
    /// Where files started through the API are written (`vpcd up --log-dir`).
    log_dir: crate::runtime::log_file::LogDir,
}

/// Binds a Unix socket that appears at `socket` already with mode 0600: it is bound under a
/// temporary name beside it (`bind` gives it the umask's mode), made private, then renamed into
/// place, so no client ever finds it with a wider mode. A stale socket or temporary file there
/// is replaced.
fn bind_private(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let mut temporary = socket.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let unix = tokio::net::UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, socket));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(unix)
}

/// Binds the socket ([`bind_private`]: mode 0600 from its first moment, a stale file there
/// replaced) and the TCP listener if asked, opens the journal of `dir` (where `state` was loaded
/// from), and returns the server future, which serves both until dropped.
pub fn serve(
    listen: &Listen,
    state: ControlState,
    dir: PathBuf,
    log_dir: crate::runtime::log_file::LogDir,
    handle: Handle,
) -> std::io::Result<impl std::future::Future<Output = ()> + use<>> {
    let socket = &listen.socket;
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let unix = bind_private(socket)?;
    let tcp = match &listen.tcp {
        Some((addr, token)) => {
            let std_listener = std::net::TcpListener::bind(addr)?;
            std_listener.set_nonblocking(true)?;
            Some((
                tokio::net::TcpListener::from_std(std_listener)?,
                token.clone(),
            ))
        }
        None => None,
    };
    let journal = Journal::open(&dir).map_err(std::io::Error::other)?;
    let (app, committer) = router(state, journal, handle, log_dir);
    Ok(async move {
        let unix_server = axum::serve(unix, app.clone());
        let unix_server = async move { tokio::join!(unix_server, committer).0 };
        match tcp {
            Some((listener, token)) => {
                let token = Arc::new(token);
                let guarded = app.layer(axum::middleware::from_fn(move |req, next| {
                    let token = token.clone();
                    require_token(token, req, next)
                }));
                let tcp_server = axum::serve(listener, guarded);
                let _ = tokio::join!(unix_server, tcp_server);
            }
            None => {
                let _ = unix_server.await;
            }
        }
    })
}

/// The TCP listener's guard: 401 without the right bearer token.
async fn require_token(token: Arc<Token>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if token.accepts(given) {
        return next.run(req).await;
    }
    let mut r = error(
        ErrorCode::Unauthorized,
        if given.is_some() {
            "the bearer token is wrong"
        } else {
            "this listener needs a bearer token"
        },
        "authorization",
        "send `Authorization: Bearer TOKEN` with the token from `vpcd up --api-token-file`; \
         `vpcd ctl --token-file FILE` does",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The routes, and the committer task that serves their change requests (run it beside the
/// servers).
fn router(
    state: ControlState,
    journal: Journal,
    handle: Handle,
    log_dir: crate::runtime::log_file::LogDir,
) -> (Router, impl std::future::Future<Output = ()>) {
    let (queue, requests) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        journal: std::sync::Mutex::new(journal),
        queue,
        handle,
        started: std::time::Instant::now(),
        log_dir,
    });
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/topology", get(topology))
        .route("/v1/vpcs", get(vpcs))
        .route("/v1/vpcs/{vpc}", get(vpc))
        .route("/v1/vpcs/{vpc}/{kind}", get(vpc_resource))
        .route("/v1/eips", get(eips))
        .route("/v1/internet", get(internet))
        .route("/v1/ops", get(ops))
        .route("/v1/ops/{op}", post(op))
        .route("/v1/batch", post(batch))
        .route("/v1/explain", post(explain))
        .route("/v1/conntrack", get(conntrack))
        .route("/v1/conntrack/flush", post(conntrack_flush))
        .route("/v1/flow-log", get(flow_log))
        .route("/v1/flow-log/start", post(flow_log_start))
        .route("/v1/flow-log/stop", post(flow_log_stop))
        .route("/v1/captures", get(captures))
        .route("/v1/captures/start", post(capture_start))
        .route("/v1/captures/stop", post(capture_stop))
        .route("/v1/dns/zones", get(dns::zones))
        .route("/v1/dns/zones/{zone}", get(dns::zone))
        .route("/v1/dns/public-zones", get(dns::public_zones))
        .route("/v1/dns/public-zones/{zone}", get(dns::public_zone))
        .route("/v1/dns/domain-lists", get(dns::domain_lists))
        .route("/v1/dns/domain-lists/{list}", get(dns::domain_list))
        .route("/v1/dns/firewall", get(dns::firewall))
        .route("/v1/dns/egress-by-name", get(dns::egress_by_name))
        .route("/v1/dns/query", post(dns::query))
        .route("/v1/dns/query-log", get(dns::query_log))
        .route("/v1/dns/query-log/start", post(dns::query_log_start))
        .route("/v1/dns/query-log/stop", post(dns::query_log_stop))
        .route("/metrics", get(metrics_text))
        .route(openapi::PATH, get(openapi_document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared.clone());
    (router, commit::committer(shared, requests))
}

fn json_response(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    json_response(200, v.to_string())
}

fn refused(e: ChangeError) -> Response {
    json_response(e.http_status(), e.to_json())
}

fn error(
    code: ErrorCode,
    msg: impl Into<String>,
    field: &str,
    hint: impl Into<String>,
) -> Response {
    refused(ChangeError::one(ApiError::new(code, msg, field, hint)))
}

fn one(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => refused(ChangeError::one(e)),
    }
}

/// The run is stopping or the loop refused: what the caller sees.
fn unavailable(e: ApplyError) -> Response {
    error(
        ErrorCode::Unavailable,
        format!("the running network did not answer: {e}"),
        "",
        "the run is stopping; start `vpcd up --state DIR` again",
    )
}

async fn not_found() -> Response {
    error(
        ErrorCode::NotFound,
        "no such path",
        "",
        "the API serves /v1/status, /v1/topology, /v1/vpcs, /v1/eips, /v1/internet, /v1/ops, \
         /v1/batch, /v1/conntrack, /v1/flow-log, /v1/captures, /v1/explain, /v1/dns/..., \
         /metrics and /v1/openapi.json (the whole list)",
    )
}

async fn method_not_allowed() -> Response {
    let mut r = error(
        ErrorCode::InvalidInput,
        "this path does not take that method",
        "",
        "reads are GET, changes and actions are POST (see /v1/openapi.json)",
    );
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Reads a body of at most [`BODY_LIMIT`] bytes (413 above it).
async fn body_bytes(body: Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        error(
            ErrorCode::TooLarge,
            format!("the request body is larger than {BODY_LIMIT} bytes"),
            "",
            "send fewer changes per request (split a batch)",
        )
    })
}

/// Reads a body of at most [`BODY_LIMIT`] bytes and decodes it as `T` (errors name the field).
async fn body_json<T: DeserializeOwned>(body: Body) -> Result<T, Response> {
    let bytes = body_bytes(body).await?;
    crate::control::decode::<T>(&bytes).map_err(refused)
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let state = s.state.lock().await;
    ok(json!({
        "generation": state.generation(),
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "endpoints": reads::endpoints(&state),
        "ops": Change::OPS,
        "log_dir": s.log_dir.path().display().to_string(),
    }))
}

async fn topology(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let state = s.state.lock().await;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        ok(serde_json::to_value(state.model()).unwrap_or(Value::Null))
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            state.export().to_string(),
        )
            .into_response()
    }
}

async fn vpcs(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::vpcs(&*s.state.lock().await))
}

async fn vpc(State(s): State<Arc<Shared>>, UrlPath(vpc): UrlPath<String>) -> Response {
    one(reads::vpc_object(&*s.state.lock().await, &vpc))
}

async fn vpc_resource(
    State(s): State<Arc<Shared>>,
    UrlPath((vpc, kind)): UrlPath<(String, String)>,
) -> Response {
    one(reads::vpc_resource(&*s.state.lock().await, &vpc, &kind))
}

async fn eips(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::eips(&*s.state.lock().await))
}

async fn internet(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::internet(&*s.state.lock().await))
}

async fn ops() -> Response {
    ok(json!(Change::OPS))
}

async fn op(State(s): State<Arc<Shared>>, UrlPath(op): UrlPath<String>, body: Body) -> Response {
    let body = match body_bytes(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match Change::decode(&op, &body) {
        Ok(change) => commit::submit(&s.queue, vec![change], false).await,
        Err(e) => refused(e),
    }
}

/// `POST /v1/batch`: many changes, all or none ([`crate::control::decode_batch`]).
async fn batch(State(s): State<Arc<Shared>>, body: Body) -> Response {
    let body = match body_bytes(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match crate::control::decode_batch(&body) {
        Ok(changes) => commit::submit(&s.queue, changes, true).await,
        Err(e) => refused(e),
    }
}

impl Shared {
    fn journal_lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Compacts the journal into the snapshot when it is due (call with the state locked:
    /// `state` must hold every appended record). A failure keeps the journal, which still has
    /// every change; it is reported on stderr and tried again at the next change.
    fn compact_if_due(&self, state: &ControlState) {
        if let Err(e) = self.journal_lock().compact_if_due(state) {
            eprintln!("vpcd up: compacting the state journal failed (it is kept): {e}");
        }
    }
}

/// `POST /v1/explain`: whether `from` reaches `to`, on the running tables.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// `VPC/INSTANCE` or `internet/HOST`.
    from: String,
    /// `ADDR:PORT/PROTO`, `VPC/INSTANCE:PORT/PROTO`, `ADDR/icmp`.
    to: String,
    #[serde(default)]
    source_port: Option<u16>,
}

async fn explain(State(s): State<Arc<Shared>>, body: Body) -> Response {
    let req: ExplainRequest = match body_json(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let plan = s.state.lock().await.plan().clone();
    let mut query = match crate::explain::Query::parse(&plan, &req.from, &req.to) {
        Ok(q) => q,
        Err(e) => {
            let field = match e {
                crate::explain::QueryError::UnknownEndpoint(_) => "from",
                crate::explain::QueryError::BadTarget(_) => "to",
            };
            return error(
                ErrorCode::InvalidInput,
                e.to_string(),
                field,
                "name endpoints as `vpcd ctl status` lists them",
            );
        }
    };
    match req.source_port {
        Some(0) => {
            return error(
                ErrorCode::InvalidInput,
                "source_port must be 1-65535",
                "source_port",
                "leave it out for the default",
            );
        }
        Some(p) => query.source_port = p,
        None => {}
    }
    // The running tables: what the network does now.
    let tables = match s
        .handle
        .query(|shell| shell.fabric().tables().clone())
        .await
    {
        Ok(t) => t,
        Err(e) => return unavailable(e),
    };
    let mut e = crate::explain::explain(&plan, &tables, &query);
    // Out through the uplink: the mapping and host socket the running network has for it.
    if let Some((flow, _)) = e.uplink {
        match s
            .handle
            .query(move |shell| shell.uplink_mapping(&flow))
            .await
        {
            Ok(live) => e.live_uplink(live),
            Err(e) => return unavailable(e),
        }
    }
    ok(json!({
        "verdict": if e.reachable() { "allow" } else { "deny" },
        "reachable": e.reachable(),
        "title": e.title,
        "hops": e.hops,
        "verdict_line": e.verdict_line(),
        "text": e.render(),
    }))
}

/// `POST /v1/conntrack/flush`: name exactly one of `instance` and `gateway`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlushRequest {
    /// `VPC/INSTANCE`: its NAT sessions in every gateway and its security-group flows.
    #[serde(default)]
    instance: Option<String>,
    /// `VPC/GATEWAY`, or `VPC/internet-gateway`: every session of the gateway.
    #[serde(default)]
    gateway: Option<String>,
}

/// `POST /v1/flow-log/start`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowLogStart {
    /// An absolute path inside the daemon's log directory (`vpcd up --log-dir`, default the
    /// `--state` directory), or `-` for its standard output. An existing regular file is
    /// appended to, never truncated; symbolic links, FIFOs and devices are refused.
    target: String,
    /// Refuse a file that exists already (create a new one only).
    #[serde(default)]
    exclusive: bool,
    /// The aggregation window in seconds (1 to 86400; default 60).
    #[serde(default)]
    window_s: Option<f64>,
}

/// `POST /v1/captures/start`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureStart {
    /// `VPC/INSTANCE` or `internet/HOST`.
    endpoint: String,
    /// An absolute path inside the daemon's log directory for the port's view; the far side of
    /// NAT goes to `FILE.nat.pcap`. Both are created new (an existing file is refused).
    file: String,
}

/// `POST /v1/captures/stop`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureStop {
    endpoint: String,
}

/// A body with nothing in it (`{}`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

fn inspect_refused(e: crate::inspect::InspectError, field: &str) -> Response {
    let code = if e.is_not_found() {
        ErrorCode::NotFound
    } else {
        ErrorCode::InvalidInput
    };
    error(
        code,
        e.to_string(),
        field,
        "`vpcd ctl status` lists the endpoints",
    )
}

fn observe_refused(e: crate::runtime::observing::ObserveControlError, field: &str) -> Response {
    use crate::runtime::observing::ObserveControlError as E;
    let (code, field) = match &e {
        E::UnknownEndpoint { .. } | E::NotCapturing { .. } => (ErrorCode::NotFound, field),
        E::NoFlowLog => (ErrorCode::NotFound, ""),
        E::AlreadyCapturing { .. } | E::FlowLogRunning { .. } | E::Moved { .. } => {
            (ErrorCode::DependencyViolation, "")
        }
        // A file the daemon cannot create is the caller's path (a missing directory, no room).
        E::RelativePath { .. } | E::BadWindow(_) | E::Create { .. } => {
            (ErrorCode::InvalidInput, field)
        }
        E::File(f) if f.is_conflict() => (ErrorCode::AlreadyExists, field),
        E::File(_) => (ErrorCode::InvalidInput, field),
        E::Stopped => (ErrorCode::Unavailable, ""),
        E::Write { .. } | E::Task(_) => (ErrorCode::Internal, ""),
    };
    let hint = match &e {
        E::File(_) => log_file_hint(),
        _ => "see GET /v1/flow-log and GET /v1/captures",
    };
    error(code, e.to_string(), field, hint)
}

/// The hint of a refused output file.
pub(super) fn log_file_hint() -> &'static str {
    "give an absolute path inside the log directory (GET /v1/status shows it as log_dir;      vpcd up --log-dir DIR), to a new or regular file (appended to, never truncated), not a      symbolic link"
}

fn value<T: serde::Serialize>(v: &T) -> Response {
    ok(serde_json::to_value(v).unwrap_or(Value::Null))
}

async fn conntrack(State(s): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    use axum::extract::Query;
    let filter = match Query::<crate::inspect::ConnFilter>::try_from_uri(&uri) {
        Ok(Query(f)) => f,
        Err(e) => {
            return error(
                ErrorCode::InvalidInput,
                e.body_text(),
                "",
                "query parameters: vpc, gateway, instance, protocol, table, limit",
            );
        }
    };
    match s
        .handle
        .query(move |shell| shell.connections(&filter))
        .await
    {
        Ok(Ok(list)) => value(&list),
        Ok(Err(e)) => inspect_refused(e, ""),
        Err(e) => unavailable(e),
    }
}

async fn conntrack_flush(State(s): State<Arc<Shared>>, body: Body) -> Response {
    use crate::inspect::FlushTarget;
    let req: FlushRequest = match body_json(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (target, field) = match (req.instance, req.gateway) {
        (Some(i), None) => (FlushTarget::Instance(i), "instance"),
        (None, Some(g)) => (FlushTarget::Gateway(g), "gateway"),
        _ => {
            return error(
                ErrorCode::InvalidInput,
                "name exactly one of `instance` and `gateway`",
                "",
                r#"{"instance": "VPC/INSTANCE"} or {"gateway": "VPC/GATEWAY"}"#,
            );
        }
    };
    match s
        .handle
        .query(move |shell| shell.flush_connections(&target))
        .await
    {
        Ok(Ok(done)) => ok(json!({
            "flushed": done.total(),
            "nat_sessions": done.nat_sessions,
            "sg_flows": done.sg_flows,
        })),
        Ok(Err(e)) => inspect_refused(e, field),
        Err(e) => unavailable(e),
    }
}

async fn flow_log(State(s): State<Arc<Shared>>) -> Response {
    match crate::runtime::observe_api::status(&s.handle).await {
        Ok(st) => value(&st.flow_log),
        Err(e) => observe_refused(e, ""),
    }
}

async fn flow_log_start(State(s): State<Arc<Shared>>, body: Body) -> Response {
    let req: FlowLogStart = match body_json(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let window = match req.window_s {
        None => crate::observe::DEFAULT_WINDOW,
        Some(w) if w.is_finite() && w > 0.0 && w <= 86_400.0 => {
            std::time::Duration::from_secs_f64(w)
        }
        Some(_) => {
            return error(
                ErrorCode::InvalidInput,
                "window_s must be between 1 and 86400 seconds",
                "window_s",
                "leave it out for the default (60 s)",
            );
        }
    };
    let mode = open_mode(req.exclusive);
    let dir = s.log_dir.clone();
    match crate::runtime::observe_api::start_flow_log(&s.handle, req.target, window, dir, mode)
        .await
    {
        Ok(st) => value(&st),
        Err(e) => observe_refused(e, "target"),
    }
}

async fn flow_log_stop(State(s): State<Arc<Shared>>, body: Body) -> Response {
    if let Err(r) = empty_body(body).await {
        return r;
    }
    match crate::runtime::observe_api::stop_flow_log(&s.handle).await {
        Ok(st) => value(&st),
        Err(e) => observe_refused(e, ""),
    }
}

/// How a start request's file is opened: appended to, or created new with `exclusive`.
fn open_mode(exclusive: bool) -> crate::runtime::log_file::OpenMode {
    use crate::runtime::log_file::OpenMode;
    if exclusive {
        OpenMode::CreateNew
    } else {
        OpenMode::Append
    }
}

/// A body that is empty or `{}` (a stop's).
async fn empty_body(body: Body) -> Result<(), Response> {
    let b = body_bytes(body).await?;
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    crate::control::decode::<Empty>(&b)
        .map(|_| ())
        .map_err(refused)
}

async fn captures(State(s): State<Arc<Shared>>) -> Response {
    match crate::runtime::observe_api::status(&s.handle).await {
        Ok(st) => value(&st.captures),
        Err(e) => observe_refused(e, ""),
    }
}

async fn capture_start(State(s): State<Arc<Shared>>, body: Body) -> Response {
    let req: CaptureStart = match body_json(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let field = if req.file.starts_with('/') {
        "endpoint"
    } else {
        "file"
    };
    match crate::runtime::observe_api::start_capture(
        &s.handle,
        req.endpoint,
        PathBuf::from(req.file),
        s.log_dir.clone(),
    )
    .await
    {
        Ok(st) => value(&st),
        Err(e) => observe_refused(e, field),
    }
}

async fn capture_stop(State(s): State<Arc<Shared>>, body: Body) -> Response {
    let req: CaptureStop = match body_json(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match crate::runtime::observe_api::stop_capture(&s.handle, req.endpoint).await {
        Ok(st) => value(&st),
        Err(e) => observe_refused(e, "endpoint"),
    }
}

async fn metrics_text(State(s): State<Arc<Shared>>) -> Response {
    match s.handle.query(|shell| shell.snapshot()).await {
        Ok(snap) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&snap),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

async fn openapi_document() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        openapi::text(),
    )
        .into_response()
}
