//! The control plane's DNS calls on a running network: a query asked of a VPC's resolver on
//! behalf of one of its instances (`POST /v1/dns/query`, `vpcd ctl dns query`), and the query
//! log's start, stop and status (`/v1/dns/query-log`).
//!
//! A query runs through the resolver port's own [`crate::sim::resolver::DnsService::ask`] on
//! the loop: the VPC's view (its instance names, the zones associated with it, the public
//! names), its DNS Firewall rules, its cache and upstreams, its counters, query log and egress
//! grants, exactly as for a packet to base + 2 port 53 from the instance's address. A forwarded
//! question waits for the upstream's answer for at most [`QUERY_TIMEOUT`].

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Record, RecordType};
use serde::Serialize;

use super::dns_log::{QueryLogError, QueryLogStatus};
use super::log_file::{LogDir, OpenMode};
use super::reload::Handle;
use crate::dns::{Answered, Source};
use crate::sim::resolver::random_id;
use crate::tables::{PortOwner, Tables};

/// How long a forwarded question may wait for its upstream.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The source port an API query is logged with (no socket sent it).
pub const API_SOURCE_PORT: u16 = 0;

/// One record of an answer, as `dig` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnsweredRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ttl: u32,
    pub data: String,
}

/// What the resolver answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryAnswer {
    /// `VPC/INSTANCE` the question was asked for.
    pub from: String,
    /// The resolver's address (the VPC's base + 2).
    pub server: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...
    pub rcode: String,
    /// `local` (the VPC's names and zones), `cache` or `upstream` (forwarded).
    pub source: &'static str,
    /// The resolver holds the name (AA).
    pub authoritative: bool,
    pub answers: Vec<AnsweredRecord>,
    /// The authority section (the SOA of an NXDOMAIN or NODATA).
    pub authority: Vec<AnsweredRecord>,
    /// The DNS Firewall rule that matched, and its action.
    pub firewall_rule: Option<String>,
    pub firewall_action: Option<&'static str>,
    /// How long the resolver took, in milliseconds.
    pub query_time_ms: f64,
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsQueryError {
    #[error("`{0}` is not an instance of the running network (write VPC/INSTANCE)")]
    UnknownFrom(String),
    #[error("`{name}` is not a domain name: {why}")]
    BadName { name: String, why: String },
    #[error("`{0}` is not a DNS record type")]
    BadType(String),
    #[error("VPC `{0}` has no resolver in the running network")]
    NoResolver(String),
    #[error("no upstream answered within {} s", QUERY_TIMEOUT.as_secs())]
    Timeout,
    #[error("the run is stopping")]
    Stopped,
    #[error("the question could not be encoded: {0}")]
    Encode(String),
}

impl DnsQueryError {
    /// The request field the error is about (empty when none).
    pub fn field(&self) -> &'static str {
        match self {
            DnsQueryError::UnknownFrom(_) | DnsQueryError::NoResolver(_) => "from",
            DnsQueryError::BadName { .. } | DnsQueryError::Encode(_) => "name",
            DnsQueryError::BadType(_) => "type",
            DnsQueryError::Timeout | DnsQueryError::Stopped => "",
        }
    }
}

/// A record type by name (`A`, `aaaa`, `PTR`, ...).
pub fn record_type(text: &str) -> Result<RecordType, DnsQueryError> {
    match RecordType::from_str(&text.to_ascii_uppercase()) {
        Ok(RecordType::Unknown(_)) | Err(_) => Err(DnsQueryError::BadType(text.into())),
        Ok(t) => Ok(t),
    }
}

/// Asks VPC resolver of instance `from` (`VPC/INSTANCE` of the running network) for `name`'s
/// `kind` records; see the module doc. The instance, its address and its VPC are looked up by
/// name in the loop's own tables, in the same step that asks the resolver, so a change applied
/// meanwhile (a VPC added before this one, an instance moved) cannot make the question go to
/// another VPC's resolver or from another address.
pub async fn query(
    handle: &Handle,
    from: &str,
    name: &str,
    kind: RecordType,
) -> Result<QueryAnswer, DnsQueryError> {
    let unknown = || DnsQueryError::UnknownFrom(from.to_string());
    let (vpc_name, _) = from.split_once('/').ok_or_else(unknown)?;
    let qname = crate::dns::names::parse_domain(name).map_err(|why| DnsQueryError::BadName {
        name: name.into(),
        why,
    })?;
    let mut m = Message::new(random_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, kind));
    let wire = m
        .to_vec()
        .map_err(|e| DnsQueryError::Encode(e.to_string()))?;
    let (tx, mut rx) = super::mailbox::channel::<Answered>();
    let started = std::time::Instant::now();
    let port_name = from.to_string();
    let asked = handle
        .query(move |shell| {
            let now = shell.now();
            let tables = shell.fabric().tables();
            let Some((vpc, addr)) = instance_port(tables, &port_name) else {
                return Err(Asked::UnknownFrom);
            };
            let server = tables.vpcs[vpc].resolver.addr;
            let port = shell.resolver_mut(vpc).ok_or(Asked::NoResolver)?;
            let later = Box::new(move |a: Answered| {
                let _ = tx.send(a);
            });
            let outcome = port
                .ask_dns(&wire, (addr, API_SOURCE_PORT), now, later)
                .ok_or(Asked::NoResolver)?;
            Ok((server, outcome))
        })
        .await
        .map_err(|_| DnsQueryError::Stopped)?;
    let (server, outcome) = match asked {
        Ok(a) => a,
        Err(Asked::UnknownFrom) => return Err(unknown()),
        Err(Asked::NoResolver) => return Err(DnsQueryError::NoResolver(vpc_name.to_string())),
    };
    let answered = match outcome {
        Ok(Some(a)) => a,
        Ok(None) => match tokio::time::timeout(QUERY_TIMEOUT, rx.recv()).await {
            Ok(Some(a)) => a,
            Ok(None) => return Err(DnsQueryError::Stopped),
            Err(_) => return Err(DnsQueryError::Timeout),
        },
        // The question is ours and well formed: the resolver answers it.
        Err(d) => return Err(DnsQueryError::Encode(d.as_str().to_string())),
    };
    Ok(describe(
        from,
        server,
        name,
        kind,
        &answered,
        started.elapsed(),
    ))
}

/// Why the loop could not ask.
enum Asked {
    UnknownFrom,
    NoResolver,
}

/// The VPC index and address of the instance port named `name` (`VPC/INSTANCE`) in `tables`:
/// the loop's own indices, whatever the control plane's plan says.
fn instance_port(tables: &Tables, name: &str) -> Option<(usize, Ipv4Addr)> {
    tables.ports.iter().find_map(|p| match p.owner {
        PortOwner::Instance { vpc, .. } if &*p.name == name => Some((vpc as usize, p.addr)),
        _ => None,
    })
}

fn record(r: &Record) -> AnsweredRecord {
    AnsweredRecord {
        name: r.name.to_string(),
        kind: r.record_type().to_string(),
        ttl: r.ttl,
        data: r.data.to_string(),
    }
}

/// The answer as the API shows it.
fn describe(
    from: &str,
    server: Ipv4Addr,
    name: &str,
    kind: RecordType,
    a: &Answered,
    took: Duration,
) -> QueryAnswer {
    let parsed = Message::from_vec(&a.wire).ok();
    QueryAnswer {
        from: from.to_string(),
        server: server.to_string(),
        name: name.to_string(),
        kind: kind.to_string(),
        rcode: crate::dns::querylog::rcode_name(a.rcode),
        source: match a.source {
            Source::Local => "local",
            Source::Cache => "cache",
            Source::Upstream => "upstream",
        },
        authoritative: parsed.as_ref().is_some_and(|m| m.metadata.authoritative),
        answers: a.answers.iter().map(record).collect(),
        authority: parsed
            .map(|m| m.authorities.iter().map(record).collect())
            .unwrap_or_default(),
        firewall_rule: a.firewall.as_ref().map(|f| f.rule.clone()),
        firewall_action: a.firewall.as_ref().map(|f| f.action),
        query_time_ms: took.as_secs_f64() * 1000.0,
    }
}

/// Starts the run's query log to `target` (an absolute path, or `-`), off the loop's thread.
pub async fn start_query_log(
    handle: &Handle,
    target: String,
    dir: LogDir,
    mode: OpenMode,
) -> Result<QueryLogStatus, QueryLogError> {
    let log = handle.query_log().clone();
    tokio::task::spawn_blocking(move || log.start_in(&target, &dir, mode))
        .await
        .unwrap_or_else(|e| Err(join(e)))
}

/// Stops the run's query log, flushing it off the loop's thread.
pub async fn stop_query_log(handle: &Handle) -> Result<QueryLogStatus, QueryLogError> {
    let log = handle.query_log().clone();
    tokio::task::spawn_blocking(move || log.stop())
        .await
        .unwrap_or_else(|e| Err(join(e)))
}

fn join(e: tokio::task::JoinError) -> QueryLogError {
    QueryLogError::Write {
        target: "(query log)".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Tables {
        let plan = crate::topology::parse("t.toml", text).expect("valid");
        crate::topology::compile::tables(&plan)
    }

    const TWO_VPCS: &str = r#"
[[vpc]]
name = "a"
cidr = "10.1.0.0/16"
subnet = [ { name = "s", cidr = "10.1.1.0/24" } ]
instance = [ { name = "x", subnet = "s" } ]
[[vpc]]
name = "b"
cidr = "10.2.0.0/16"
subnet = [ { name = "s", cidr = "10.2.1.0/24" } ]
instance = [ { name = "x", subnet = "s" } ]
"#;

    #[test]
    fn the_asker_is_found_by_name_in_the_loops_tables_not_by_a_plan_index() {
        let before = tables(TWO_VPCS);
        let (vpc, addr) = instance_port(&before, "b/x").expect("b/x");
        assert_eq!(before.vpcs[vpc].name, "b");
        assert_eq!(
            addr,
            before
                .ports
                .iter()
                .find(|p| &*p.name == "b/x")
                .unwrap()
                .addr
        );
        // After VPC a is removed, b is VPC 0: a plan index taken before the change would name
        // the wrong VPC (or none); the lookup in the new tables still finds b.
        let after_text = TWO_VPCS.replacen(
            "[[vpc]]\nname = \"a\"\ncidr = \"10.1.0.0/16\"\nsubnet = [ { name = \"s\", cidr = \"10.1.1.0/24\" } ]\ninstance = [ { name = \"x\", subnet = \"s\" } ]\n",
            "",
            1,
        );
        let after = tables(&after_text);
        assert_eq!(after.vpcs.len(), 1);
        let (vpc, _) = instance_port(&after, "b/x").expect("b/x");
        assert_eq!((vpc, after.vpcs[vpc].name.as_str()), (0, "b"));
        assert_eq!(instance_port(&after, "a/x"), None);
        // Names that are not instances' ports are not askers.
        assert_eq!(instance_port(&after, "b#resolver"), None);
        assert_eq!(instance_port(&after, "b"), None);
    }

    #[test]
    fn record_types_are_read_by_name_in_any_case() {
        assert_eq!(record_type("a").ok(), Some(RecordType::A));
        assert_eq!(record_type("AAAA").ok(), Some(RecordType::AAAA));
        assert_eq!(record_type("ptr").ok(), Some(RecordType::PTR));
        assert!(matches!(
            record_type("BOGUS"),
            Err(DnsQueryError::BadType(_))
        ));
    }
}
