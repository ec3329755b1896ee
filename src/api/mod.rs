//! The control API: HTTP/JSON on a Unix socket, served by `vpcd up --state DIR`.
//!
//! Routes (first slice of issue 6):
//! - `GET /v1/topology`: the effective topology as a topology file (`text/plain`; what
//!   `vpcd check` accepts), or the model as JSON with `Accept: application/json`;
//! - `POST /v1/ops/{op}`: one change ([`Change::decode`]'s operation names, body JSON); `200`
//!   with `{"op", "generation", "applied"}`, or a 4xx/5xx with `{"errors": [...]}`
//!   ([`ChangeError::to_json`]). Unknown operation: 404; body above [`BODY_LIMIT`]: 413.
//!
//! Changes are serialized by one mutex around the [`ControlState`] (the control plane's single
//! writer). Each follows the control core's protocol: `state.apply(&change)` (refusal → 4xx,
//! state unchanged), `handle.apply(next.plan())` (refusal → 409/503, running plan unchanged),
//! `next.save(dir)` (failure → the old plan is put back, 500), then `state = next`.
//!
//! The socket is created mode 0600 (only root may change the network); [`serve`] removes a stale
//! socket file first, and the caller removes it when the run stops.

pub mod metrics;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Mutex;

use crate::control::{ApiError, Change, ChangeError, ControlState, ErrorCode};
use crate::runtime::reload::Handle;

/// The largest request body accepted (413 above it).
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the server shares between requests.
struct Shared {
    state: Mutex<ControlState>,
    dir: PathBuf,
    handle: Handle,
}

/// Binds `socket` (mode 0600; a stale file there is replaced) and returns the server future,
/// which serves until dropped.
pub fn serve(
    socket: &Path,
    state: ControlState,
    dir: PathBuf,
    handle: Handle,
) -> std::io::Result<impl std::future::Future<Output = ()> + use<>> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bind under a restrictive umask-independent mode: bind, then chmod before serving.
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let app = router(state, dir, handle);
    Ok(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn router(state: ControlState, dir: PathBuf, handle: Handle) -> Router {
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        dir,
        handle,
    });
    Router::new()
        .route("/v1/topology", get(topology))
        .route("/v1/ops/{op}", post(op))
        .fallback(not_found)
        .with_state(shared)
}

fn json(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

fn error(status: u16, code: ErrorCode, msg: String, field: &str, hint: Option<String>) -> Response {
    let e = ChangeError::one(ApiError {
        code,
        error: msg,
        field: field.into(),
        hint,
    });
    json(status, e.to_json())
}

async fn not_found() -> Response {
    error(
        404,
        ErrorCode::NotFound,
        "no such path".into(),
        "",
        Some("the API serves GET /v1/topology and POST /v1/ops/{op}".into()),
    )
}

async fn topology(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let state = s.state.lock().await;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        match serde_json::to_string(state.model()) {
            Ok(t) => json(200, t),
            Err(e) => error(500, ErrorCode::InvalidInput, e.to_string(), "", None),
        }
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            state.export().to_string(),
        )
            .into_response()
    }
}

async fn op(State(s): State<Arc<Shared>>, UrlPath(op): UrlPath<String>, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                413,
                ErrorCode::InvalidInput,
                format!("the request body is larger than {BODY_LIMIT} bytes"),
                "",
                Some("send one change per request".into()),
            );
        }
    };
    let change = match Change::decode(&op, &body) {
        Ok(c) => c,
        Err(e) => return json(e.http_status(), e.to_json()),
    };
    let mut state = s.state.lock().await;
    let next = match state.apply(&change) {
        Ok(n) => n,
        Err(e) => return json(e.http_status(), e.to_json()),
    };
    let applied = match s.handle.apply(next.plan().clone()).await {
        Ok(a) => a,
        Err(e) => {
            let status = match e {
                crate::runtime::reload::ApplyError::Stopped => 503,
                crate::runtime::reload::ApplyError::Refused(_) => 409,
                _ => 500,
            };
            return error(
                status,
                ErrorCode::DependencyViolation,
                format!("the running network did not take the change: {e}"),
                "",
                Some("the change is not in force; the running network is as before".into()),
            );
        }
    };
    if let Err(e) = next.save(&s.dir) {
        // Keep the running network equal to what a restart would load.
        let _ = s.handle.apply(state.plan().clone()).await;
        return error(
            500,
            ErrorCode::InvalidInput,
            format!("the change could not be saved: {e}"),
            "",
            Some("the change was undone; check the state directory".into()),
        );
    }
    *state = next;
    let summary = serde_json::json!({
        "op": change.op(),
        "generation": state.generation(),
        "applied": applied.summary(),
        "problems": applied.problems,
    });
    json(200, summary.to_string())
}
