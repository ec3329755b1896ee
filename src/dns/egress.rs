//! Egress allow-lists by name (`[[egress_by_name]]`): which answers of a VPC's resolver make
//! their addresses allowed destinations, and on which ports.
//!
//! A rule is a domain (`api.payments.example`, or `*.payments.example` for every name below it)
//! and optional TCP/UDP ports. When the resolver answers a question whose name a rule matches,
//! every IPv4 address in the answer (CNAME targets' included) becomes an allowed destination of
//! the VPC's new flows on the rule's ports, for the record's TTL ([`grants`]); the shell hands
//! them to the fabric (`dataplane::firewall::granted`). Sans-IO.

use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record};

use super::firewall::DomainPattern;

/// One name the VPC may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressName {
    pub pattern: DomainPattern,
    /// `None`: every protocol and port; otherwise TCP and UDP to these ports only.
    pub ports: Option<(u16, u16)>,
}

/// An address the answer allows: (address, ports, seconds).
pub type Grant = (Ipv4Addr, Option<(u16, u16)>, u32);

/// What an answer (`rcode`, `answers`) to a question for `name` allows under `rules`: every A
/// record, on the ports of each rule that names `name`, for the record's TTL. Nothing for an
/// error, or no rule.
pub fn grants(
    rules: &[EgressName],
    name: &Name,
    rcode: ResponseCode,
    answers: &[Record],
) -> Vec<Grant> {
    if rcode != ResponseCode::NoError {
        return Vec::new();
    }
    let mut out = Vec::new();
    for rule in rules.iter().filter(|r| r.pattern.matches(name)) {
        for r in answers {
            if let RData::A(a) = &r.data {
                out.push((a.0, rule.ports, r.ttl));
            }
        }
    }
    out
}
