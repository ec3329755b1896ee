//! The VPC's egress allow-list: which new flows may leave the VPC towards the public side, and
//! its evaluation (the compiled rules are table data: [`crate::tables::firewall`]). The fabric and
//! `vpcd explain` both call [`super::egress_check`].
//!
//! Semantics: no list lets everything out; otherwise the first rule that matches allows the flow,
//! and a flow no rule matches is refused. A rule matches a destination inside its block; a rule
//! with ports matches only TCP and UDP to a destination port in its range.

use std::net::Ipv4Addr;

pub use crate::tables::firewall::EgressRuleTable;

/// What a VPC's egress allow-list decided for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressDecision {
    /// The VPC has no allow-list: everything may leave.
    NoList,
    /// Rule `index` of the list allowed it (the first that matches).
    Rule { index: u32 },
    /// No rule of the list matches.
    Denied,
}

impl EgressDecision {
    pub fn allows(self) -> bool {
        !matches!(self, EgressDecision::Denied)
    }
}

impl EgressRuleTable {
    /// Whether a packet of IP protocol `proto` to `dst` (destination port `dport`, TCP/UDP only)
    /// matches.
    pub fn allows(&self, proto: u8, dst: Ipv4Addr, dport: Option<u16>) -> bool {
        if !self.dst.contains(dst) {
            return false;
        }
        match self.ports {
            None => true,
            Some((first, last)) => {
                // TCP (6) or UDP (17).
                matches!(proto, 6 | 17) && dport.is_some_and(|p| first <= p && p <= last)
            }
        }
    }
}

/// Evaluates an allow-list (`None`: the VPC has none) for a new flow of IP protocol `proto` to
/// `dst`, destination port `dport` (TCP/UDP only).
pub fn decide(
    list: Option<&[EgressRuleTable]>,
    proto: u8,
    dst: Ipv4Addr,
    dport: Option<u16>,
) -> EgressDecision {
    let Some(rules) = list else {
        return EgressDecision::NoList;
    };
    rules
        .iter()
        .position(|r| r.allows(proto, dst, dport))
        .map_or(EgressDecision::Denied, |i| EgressDecision::Rule {
            index: i as u32,
        })
}
