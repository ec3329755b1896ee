//! The API's DNS routes besides the changes (which are operations like every other: `add_zone`,
//! `add_zone_record`, `add_dns_firewall_rule`, ...):
//! - reads of the effective topology: `GET /v1/dns/zones`, `/v1/dns/zones/{zone}`,
//!   `/v1/dns/public-zones`, `/v1/dns/public-zones/{zone}`, `/v1/dns/domain-lists`,
//!   `/v1/dns/domain-lists/{list}`, `/v1/dns/firewall`, `/v1/dns/egress-by-name`
//!   ([`super::reads`]);
//! - `POST /v1/dns/query` `{from, name, type?}`: a question asked of the running resolver of
//!   `from`'s VPC on its behalf ([`crate::runtime::dns_api::query`]);
//! - `GET /v1/dns/query-log`, `POST /v1/dns/query-log/start` `{target}`,
//!   `POST /v1/dns/query-log/stop`: the resolvers' query log, as the flow log's routes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Shared, body_json, error, ok, one, reads, value};
use crate::control::ErrorCode;
use crate::runtime::dns_api::{self, DnsQueryError};
use crate::runtime::dns_log::QueryLogError;

/// `POST /v1/dns/query`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsQueryRequest {
    /// `VPC/INSTANCE`: whose VPC resolver answers, and who asks.
    from: String,
    /// The name asked for, like `db.corp.example` or `web.tenant-a.vpc.internal`.
    name: String,
    /// The record type (`A` when absent): `A`, `AAAA`, `CNAME`, `TXT`, `SRV`, `MX`, `PTR`, ...
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// `POST /v1/dns/query-log/start`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryLogStart {
    /// An absolute path inside the daemon's log directory (`vpcd up --log-dir`, default the
    /// `--state` directory), or `-` for its standard output. An existing regular file is
    /// appended to, never truncated; symbolic links, FIFOs and devices are refused.
    target: String,
    /// Refuse a file that exists already (create a new one only).
    #[serde(default)]
    exclusive: bool,
}

pub(super) async fn zones(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::zones(&*s.state.lock().await))
}

pub(super) async fn zone(State(s): State<Arc<Shared>>, UrlPath(zone): UrlPath<String>) -> Response {
    one(reads::zone(&*s.state.lock().await, &zone))
}

pub(super) async fn public_zones(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::public_zones(&*s.state.lock().await))
}

pub(super) async fn public_zone(
    State(s): State<Arc<Shared>>,
    UrlPath(zone): UrlPath<String>,
) -> Response {
    one(reads::public_zone(&*s.state.lock().await, &zone))
}

pub(super) async fn domain_lists(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::domain_lists(&*s.state.lock().await))
}

pub(super) async fn domain_list(
    State(s): State<Arc<Shared>>,
    UrlPath(list): UrlPath<String>,
) -> Response {
    one(reads::domain_list(&*s.state.lock().await, &list))
}

pub(super) async fn firewall(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::dns_firewall(&*s.state.lock().await))
}

pub(super) async fn egress_by_name(State(s): State<Arc<Shared>>) -> Response {
    ok(reads::egress_by_name(&*s.state.lock().await))
}

pub(super) async fn query(State(s): State<Arc<Shared>>, body: Body) -> Response {
    let req: DnsQueryRequest = match body_json(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let kind = match dns_api::record_type(req.kind.as_deref().unwrap_or("A")) {
        Ok(k) => k,
        Err(e) => return query_refused(&e),
    };
    match dns_api::query(&s.handle, &req.from, &req.name, kind).await {
        Ok(a) => value(&a),
        Err(e) => query_refused(&e),
    }
}

fn query_refused(e: &DnsQueryError) -> Response {
    let (code, hint) = match e {
        DnsQueryError::UnknownFrom(_) => (
            ErrorCode::NotFound,
            "`vpcd ctl status` lists the endpoints; ask from an instance (VPC/INSTANCE)",
        ),
        DnsQueryError::BadName { .. } => {
            (ErrorCode::InvalidInput, "write a name like db.corp.example")
        }
        DnsQueryError::BadType(_) => (
            ErrorCode::InvalidInput,
            "write a type like A, AAAA, CNAME, TXT, SRV, MX or PTR",
        ),
        DnsQueryError::Timeout => (
            ErrorCode::Unavailable,
            "the upstream resolvers of [internet] resolvers did not answer; ask again",
        ),
        DnsQueryError::NoResolver(_) | DnsQueryError::Stopped => (
            ErrorCode::Unavailable,
            "the run is stopping or changing; ask again",
        ),
        DnsQueryError::Encode(_) => (ErrorCode::InvalidInput, "write a shorter name"),
    };
    error(code, e.to_string(), e.field(), hint)
}

pub(super) async fn query_log(State(s): State<Arc<Shared>>) -> Response {
    value(&s.handle.query_log().status())
}

pub(super) async fn query_log_start(State(s): State<Arc<Shared>>, body: Body) -> Response {
    let req: QueryLogStart = match body_json(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mode = super::open_mode(req.exclusive);
    match dns_api::start_query_log(&s.handle, req.target, s.log_dir.clone(), mode).await {
        Ok(st) => value(&st),
        Err(e) => query_log_refused(&e),
    }
}

pub(super) async fn query_log_stop(State(s): State<Arc<Shared>>, body: Body) -> Response {
    if let Err(r) = super::empty_body(body).await {
        return r;
    }
    match dns_api::stop_query_log(&s.handle).await {
        Ok(st) => value(&st),
        Err(e) => query_log_refused(&e),
    }
}

fn query_log_refused(e: &QueryLogError) -> Response {
    let (code, field) = match e {
        QueryLogError::Running { .. } => (ErrorCode::DependencyViolation, ""),
        QueryLogError::NotRunning => (ErrorCode::NotFound, ""),
        QueryLogError::RelativePath { .. } | QueryLogError::Create { .. } => {
            (ErrorCode::InvalidInput, "target")
        }
        QueryLogError::File(f) if f.is_conflict() => (ErrorCode::AlreadyExists, "target"),
        QueryLogError::File(_) => (ErrorCode::InvalidInput, "target"),
        QueryLogError::Write { .. } => (ErrorCode::Internal, ""),
    };
    let hint = match e {
        QueryLogError::File(_) => super::log_file_hint(),
        _ => "see GET /v1/dns/query-log",
    };
    error(code, e.to_string(), field, hint)
}
