//! Network ACLs: stateless numbered rules per subnet, and their evaluation (the compiled rules
//! are table data: [`crate::tables::firewall`]).
//!
//! Semantics (exactly AWS's): rules of one direction are evaluated lowest number first and the
//! first rule that matches decides (`allow` or `deny`); when none matches, the implicit final rule
//! (`*`, AWS's 32767) denies. A rule matches on protocol, on the peer CIDR — the **destination**
//! for outbound rules, the **source** for inbound rules — and, for tcp and udp, on the
//! **destination port** in both directions. Nothing is remembered: a reply is judged like any
//! other packet, so a subnet whose inbound ACL admits tcp:80 needs an outbound rule for the
//! clients' ephemeral ports (1024-65535) for the replies to leave, and a subnet whose instances
//! call out needs an inbound rule for their ephemeral ports. A subnet without an ACL has the
//! default ACL, which allows everything both ways.
//!
//! Non-first fragments carry no ports: they match only rules without a port range.

use std::net::Ipv4Addr;

use super::Facts;
pub use crate::tables::firewall::{AclRuleTable, NetworkAclTable};

/// Which edge of the subnet a packet crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclDirection {
    /// Entering the subnet; rules match the source address.
    Inbound,
    /// Leaving the subnet; rules match the destination address.
    Outbound,
}

impl AclDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            AclDirection::Inbound => "inbound",
            AclDirection::Outbound => "outbound",
        }
    }
}

/// What an ACL decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclDecision {
    /// The subnet has no ACL: the default ACL allows everything.
    DefaultAcl,
    /// Rule (index into the direction's sorted list) matched first.
    Rule {
        index: u32,
        number: u16,
        allow: bool,
    },
    /// No rule matched: the implicit final deny.
    ImplicitDeny,
}

impl AclDecision {
    pub fn allows(self) -> bool {
        match self {
            AclDecision::DefaultAcl => true,
            AclDecision::Rule { allow, .. } => allow,
            AclDecision::ImplicitDeny => false,
        }
    }
}

impl AclRuleTable {
    /// Whether this rule matches `facts` with `peer` as the far end.
    pub fn matches(&self, facts: &Facts, peer: Ipv4Addr) -> bool {
        if let Some(p) = self.proto
            && p != facts.proto
        {
            return false;
        }
        if let Some((first, last)) = self.ports {
            match facts.dport() {
                Some(port) if first <= port && port <= last => {}
                _ => return false,
            }
        }
        self.cidr.contains(peer)
    }
}

impl NetworkAclTable {
    pub fn rules(&self, dir: AclDirection) -> &[AclRuleTable] {
        match dir {
            AclDirection::Inbound => &self.inbound,
            AclDirection::Outbound => &self.outbound,
        }
    }
}

/// Evaluates a subnet's ACL (`None`: the default ACL) for a packet crossing its edge in `dir`.
/// The peer is the packet's source for inbound, its destination for outbound.
pub fn evaluate(acl: Option<&NetworkAclTable>, dir: AclDirection, facts: &Facts) -> AclDecision {
    let Some(acl) = acl else {
        return AclDecision::DefaultAcl;
    };
    let peer = match dir {
        AclDirection::Inbound => facts.src,
        AclDirection::Outbound => facts.dst,
    };
    acl.rules(dir)
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches(facts, peer))
        .map_or(AclDecision::ImplicitDeny, |(i, r)| AclDecision::Rule {
            index: i as u32,
            number: r.number,
            allow: r.allow,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::firewall::{Kind, PROTO_TCP};

    fn rule(number: u16, allow: bool, ports: Option<(u16, u16)>, cidr: &str) -> AclRuleTable {
        AclRuleTable {
            number,
            allow,
            proto: Some(PROTO_TCP),
            ports,
            cidr: cidr.parse().unwrap(),
        }
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Facts {
        Facts {
            proto: PROTO_TCP,
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
            kind: Kind::Tcp { flags: 0x10 },
        }
    }

    #[test]
    fn lowest_number_first_and_first_match_wins() {
        let acl = NetworkAclTable {
            name: "a".into(),
            inbound: vec![
                rule(100, false, Some((22, 22)), "0.0.0.0/0"),
                rule(200, true, None, "0.0.0.0/0"),
            ],
            outbound: vec![],
        };
        let ssh = tcp([1, 1, 1, 1], [10, 0, 1, 10], 40000, 22);
        let web = tcp([1, 1, 1, 1], [10, 0, 1, 10], 40000, 80);
        assert_eq!(
            evaluate(Some(&acl), AclDirection::Inbound, &ssh),
            AclDecision::Rule {
                index: 0,
                number: 100,
                allow: false
            }
        );
        assert!(evaluate(Some(&acl), AclDirection::Inbound, &web).allows());
        // Outbound has no rules: the implicit deny.
        assert_eq!(
            evaluate(Some(&acl), AclDirection::Outbound, &web),
            AclDecision::ImplicitDeny
        );
        assert_eq!(
            evaluate(None, AclDirection::Outbound, &web),
            AclDecision::DefaultAcl
        );
    }

    #[test]
    fn inbound_matches_the_source_and_outbound_the_destination() {
        let acl = NetworkAclTable {
            name: "a".into(),
            inbound: vec![rule(1, true, None, "192.0.2.0/24")],
            outbound: vec![rule(1, true, None, "192.0.2.0/24")],
        };
        let from = tcp([192, 0, 2, 1], [10, 0, 1, 10], 1, 2);
        let to = tcp([10, 0, 1, 10], [192, 0, 2, 1], 2, 1);
        assert!(evaluate(Some(&acl), AclDirection::Inbound, &from).allows());
        assert!(!evaluate(Some(&acl), AclDirection::Inbound, &to).allows());
        assert!(evaluate(Some(&acl), AclDirection::Outbound, &to).allows());
        assert!(!evaluate(Some(&acl), AclDirection::Outbound, &from).allows());
    }

    #[test]
    fn ports_are_destination_ports_in_both_directions() {
        // A reply from a web server: source port 80, destination the client's ephemeral port.
        let acl = NetworkAclTable {
            name: "a".into(),
            inbound: vec![],
            outbound: vec![rule(100, true, Some((80, 80)), "0.0.0.0/0")],
        };
        let reply = tcp([10, 0, 1, 10], [192, 0, 2, 1], 80, 50000);
        assert_eq!(
            evaluate(Some(&acl), AclDirection::Outbound, &reply),
            AclDecision::ImplicitDeny
        );
    }
}
