//! Security groups: stateful allow rules per instance, and their evaluation (the compiled groups
//! are table data: [`crate::tables::firewall`]).
//!
//! Owns the one function that decides whether a
//! group set allows a packet ([`SecurityGroups::evaluate`]). The fabric calls it for a packet that
//! no tracked flow covers; `vpcd explain` calls the same function, so the two cannot disagree.
//!
//! Semantics (cloud-like): rules only allow; the groups attached to an instance are a union (the
//! first matching rule, in group then rule order, is reported); ingress without a matching rule is
//! denied; egress is all allowed when a group has no `egress` list at all. An `sg:NAME` peer
//! matches the *private* addresses of the group's members, resolved when the tables are compiled
//! (every topology change recompiles, so membership follows the topology); traffic that arrives
//! through an EIP has a public source and matches only CIDR peers, as in AWS.

use std::net::Ipv4Addr;

use super::Facts;
pub use crate::tables::firewall::{SecurityGroupTable, SecurityGroups, SgPeer, SgRuleTable};

/// Which side of an instance a rule guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SgDirection {
    /// Packets entering the instance; the peer is the source.
    Ingress,
    /// Packets leaving the instance; the peer is the destination.
    Egress,
}

impl SgDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            SgDirection::Ingress => "ingress",
            SgDirection::Egress => "egress",
        }
    }
}

/// Which rule allowed a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SgMatch {
    /// Index into [`SecurityGroups::groups`].
    pub group: u32,
    /// Index into the group's rule list of that direction; `None` for the implicit all-egress.
    pub rule: Option<u32>,
}

impl SgRuleTable {
    /// Whether this rule admits `facts` with `peer` as the other end.
    pub fn matches(&self, members: &[Vec<Ipv4Addr>], facts: &Facts, peer: Ipv4Addr) -> bool {
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
        if let Some(t) = self.icmp_type
            && facts.icmp_type() != Some(t)
        {
            return false;
        }
        match self.peer {
            SgPeer::Cidr(c) => c.contains(peer),
            SgPeer::Group(g) => members
                .get(g as usize)
                .is_some_and(|m| m.binary_search(&peer).is_ok()),
        }
    }
}

impl SecurityGroups {
    /// The first rule of `instance`'s groups that allows `facts` in `dir` with `peer` as the other
    /// end (the source for ingress, the destination for egress); `None` = denied. Linear in the
    /// number of rules; called only for packets no tracked flow covers.
    pub fn evaluate(
        &self,
        instance: u32,
        dir: SgDirection,
        facts: &Facts,
        peer: Ipv4Addr,
    ) -> Option<SgMatch> {
        for &g in self.attached(instance) {
            let Some(group) = self.groups.get(g as usize) else {
                continue;
            };
            let rules = match dir {
                SgDirection::Ingress => &group.ingress,
                SgDirection::Egress => match &group.egress {
                    Some(rules) => rules,
                    None => {
                        return Some(SgMatch {
                            group: g,
                            rule: None,
                        });
                    }
                },
            };
            if let Some(r) = rules
                .iter()
                .position(|r| r.matches(&self.members, facts, peer))
            {
                return Some(SgMatch {
                    group: g,
                    rule: Some(r as u32),
                });
            }
        }
        None
    }

    /// The rule a match names.
    pub fn rule(&self, dir: SgDirection, m: SgMatch) -> Option<&SgRuleTable> {
        let g = self.groups.get(m.group as usize)?;
        let rules = match dir {
            SgDirection::Ingress => &g.ingress,
            SgDirection::Egress => g.egress.as_ref()?,
        };
        rules.get(m.rule? as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::firewall::{Facts, Kind, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

    fn tcp(dport: u16) -> Facts {
        Facts {
            proto: PROTO_TCP,
            src: Ipv4Addr::new(10, 0, 1, 10),
            dst: Ipv4Addr::new(10, 0, 2, 20),
            sport: 40000,
            dport,
            kind: Kind::Tcp { flags: 0x02 },
        }
    }

    fn rule(proto: Option<u8>, ports: Option<(u16, u16)>, peer: SgPeer) -> SgRuleTable {
        SgRuleTable {
            proto,
            ports,
            icmp_type: None,
            peer,
            description: None,
        }
    }

    fn groups(ingress: Vec<SgRuleTable>, egress: Option<Vec<SgRuleTable>>) -> SecurityGroups {
        SecurityGroups {
            groups: vec![SecurityGroupTable {
                name: "g".into(),
                ingress,
                egress,
                implicit: false,
            }],
            members: vec![vec![Ipv4Addr::new(10, 0, 1, 10)]],
            of_instance: vec![0, 1],
            attached_groups: vec![0],
        }
    }

    #[test]
    fn port_ranges_are_inclusive() {
        let cidr = SgPeer::Cidr("0.0.0.0/0".parse().unwrap());
        let sg = groups(vec![rule(Some(PROTO_TCP), Some((1000, 2000)), cidr)], None);
        let peer = Ipv4Addr::new(10, 0, 1, 10);
        for (port, ok) in [
            (999, false),
            (1000, true),
            (1500, true),
            (2000, true),
            (2001, false),
        ] {
            let m = sg.evaluate(0, SgDirection::Ingress, &tcp(port), peer);
            assert_eq!(m.is_some(), ok, "port {port}");
        }
    }

    #[test]
    fn protocol_must_match_and_all_matches_everything() {
        let cidr = SgPeer::Cidr("0.0.0.0/0".parse().unwrap());
        let sg = groups(vec![rule(Some(PROTO_UDP), None, cidr)], None);
        let peer = Ipv4Addr::new(1, 2, 3, 4);
        assert!(
            sg.evaluate(0, SgDirection::Ingress, &tcp(80), peer)
                .is_none()
        );
        let sg = groups(vec![rule(None, None, cidr)], None);
        assert!(
            sg.evaluate(0, SgDirection::Ingress, &tcp(80), peer)
                .is_some()
        );
    }

    #[test]
    fn absent_egress_allows_all_and_empty_egress_allows_nothing() {
        let sg = groups(vec![], None);
        let peer = Ipv4Addr::new(1, 2, 3, 4);
        assert_eq!(
            sg.evaluate(0, SgDirection::Egress, &tcp(80), peer),
            Some(SgMatch {
                group: 0,
                rule: None
            })
        );
        let sg = groups(vec![], Some(vec![]));
        assert!(
            sg.evaluate(0, SgDirection::Egress, &tcp(80), peer)
                .is_none()
        );
    }

    #[test]
    fn group_peers_match_members_only() {
        let sg = groups(vec![rule(None, None, SgPeer::Group(0))], None);
        let f = tcp(80);
        assert!(
            sg.evaluate(0, SgDirection::Ingress, &f, Ipv4Addr::new(10, 0, 1, 10))
                .is_some()
        );
        assert!(
            sg.evaluate(0, SgDirection::Ingress, &f, Ipv4Addr::new(10, 0, 1, 11))
                .is_none()
        );
    }

    #[test]
    fn icmp_type_rules_match_only_that_type() {
        let mut r = rule(
            Some(PROTO_ICMP),
            None,
            SgPeer::Cidr("0.0.0.0/0".parse().unwrap()),
        );
        r.icmp_type = Some(8);
        let sg = groups(vec![r], None);
        let echo = |t: u8| Facts {
            proto: PROTO_ICMP,
            src: Ipv4Addr::new(1, 1, 1, 1),
            dst: Ipv4Addr::new(10, 0, 1, 10),
            sport: 7,
            dport: 7,
            kind: Kind::Icmp {
                icmp_type: t,
                request: t == 8,
            },
        };
        let peer = Ipv4Addr::new(1, 1, 1, 1);
        assert!(
            sg.evaluate(0, SgDirection::Ingress, &echo(8), peer)
                .is_some()
        );
        assert!(
            sg.evaluate(0, SgDirection::Ingress, &echo(13), peer)
                .is_none()
        );
    }

    #[test]
    fn unknown_instances_are_denied_not_panicking() {
        let sg = groups(vec![], None);
        assert!(
            sg.evaluate(9, SgDirection::Egress, &tcp(1), Ipv4Addr::LOCALHOST)
                .is_none()
        );
    }
}
