//! The question `vpcd explain` answers: `FROM` (`VPC/INSTANCE` or `internet/HOST`) and `TO` (the
//! probe target syntax) resolved against the plan, and the first packet of the flow they describe.

use std::net::Ipv4Addr;

use crate::dataplane::firewall::{Facts, Kind, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::topology::model::{L4, ProbeTarget, TargetHost};
use crate::topology::plan::{Endpoint, Plan};

/// The source port (and ICMP echo identifier) assumed unless told otherwise.
pub const DEFAULT_SOURCE_PORT: u16 = 49152;

/// What to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: Endpoint,
    pub to: ProbeTarget,
    /// The target resolved to an endpoint when it names one.
    pub to_endpoint: Option<Endpoint>,
    pub to_addr: Ipv4Addr,
    pub source_port: u16,
}

/// Why a query could not even be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("no endpoint named `{0}`; write VPC/INSTANCE or internet/HOST")]
    UnknownEndpoint(String),
    #[error("{0}")]
    BadTarget(String),
}

impl Query {
    /// Parses `FROM` (`VPC/INSTANCE` or `internet/HOST`) and `TO` (probe target syntax).
    pub fn parse(plan: &Plan, from: &str, to: &str) -> Result<Query, QueryError> {
        let endpoint = |name: &str| {
            name.split_once('/')
                .and_then(|(scope, n)| plan.find_endpoint(scope, n))
                .ok_or_else(|| QueryError::UnknownEndpoint(name.to_string()))
        };
        let from = endpoint(from)?;
        let target: ProbeTarget = to.parse().map_err(QueryError::BadTarget)?;
        let (to_endpoint, to_addr) = match &target.host {
            TargetHost::Addr(a) => (None, *a),
            TargetHost::Named { scope, name } => {
                let e = endpoint(&format!("{scope}/{name}"))?;
                (Some(e), plan.endpoint_ip(e))
            }
            TargetHost::Dns(name) => {
                let a = crate::topology::compile::dns::lookup(plan, from, name).map_err(|why| {
                    QueryError::BadTarget(format!(
                        "`{name}` does not resolve from {}: {why}",
                        plan.endpoint_name(from)
                    ))
                })?;
                (None, a)
            }
        };
        Ok(Query {
            from,
            to: target,
            to_endpoint,
            to_addr,
            source_port: DEFAULT_SOURCE_PORT,
        })
    }
}

/// The facts of the flow's first packet.
pub fn first_packet_facts(src: Ipv4Addr, q: &Query) -> Facts {
    let (proto, kind, sport, dport) = match q.to.proto {
        L4::Tcp => (
            PROTO_TCP,
            Kind::Tcp { flags: 0x02 },
            q.source_port,
            q.to.port.unwrap_or(0),
        ),
        L4::Udp => (PROTO_UDP, Kind::Udp, q.source_port, q.to.port.unwrap_or(0)),
        L4::Icmp => (
            PROTO_ICMP,
            Kind::Icmp {
                icmp_type: 8,
                request: true,
            },
            q.source_port,
            q.source_port,
        ),
    };
    Facts {
        proto,
        src,
        dst: q.to_addr,
        sport,
        dport,
        kind,
    }
}

pub(super) fn endpoint_name(plan: &Plan, e: Endpoint) -> String {
    let ok = match e {
        Endpoint::Instance { vpc, instance } => plan
            .vpcs
            .get(vpc)
            .is_some_and(|v| instance < v.instances.len()),
        Endpoint::Host(h) => h < plan.internet.hosts.len(),
    };
    if ok {
        plan.endpoint_name(e)
    } else {
        format!("{e:?}")
    }
}

pub(super) fn endpoint_ip(plan: &Plan, e: Endpoint) -> Ipv4Addr {
    match e {
        Endpoint::Instance { vpc, instance } => plan
            .vpcs
            .get(vpc)
            .and_then(|v| v.instances.get(instance))
            .map_or(Ipv4Addr::UNSPECIFIED, |i| i.ip),
        Endpoint::Host(h) => plan
            .internet
            .hosts
            .get(h)
            .map_or(Ipv4Addr::UNSPECIFIED, |h| h.ip),
    }
}
