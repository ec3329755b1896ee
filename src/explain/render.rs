//! The text of `vpcd explain`: the numbered hops and the verdict line, and how protocols, ports,
//! security group rules and network ACL rules read in a hop.

use std::fmt::Write as _;

use super::{Explanation, Query, Reachability};
use crate::dataplane::firewall::{
    AclRuleTable, Facts, Kind, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SgDirection, SgPeer, SgRuleTable,
};
use crate::tables::VpcTable;
use crate::topology::model::L4;

/// `explain FROM -> TO (WHAT)`.
pub(super) fn title(from_name: &str, q: &Query) -> String {
    let what = match q.to.proto {
        L4::Icmp => format!("ICMP echo request, identifier {}", q.source_port),
        p => format!(
            "{} from source port {}",
            p.as_str().to_uppercase(),
            q.source_port
        ),
    };
    format!("explain {from_name} -> {} ({what})", q.to)
}

impl Explanation {
    /// `verdict: reachable` or `verdict: blocked by COMPONENT (LABEL)`.
    pub fn verdict_line(&self) -> String {
        match &self.reachability {
            Reachability::Reachable => "verdict: reachable".to_string(),
            Reachability::Blocked { component, label } => {
                format!("verdict: blocked by {component} ({label})")
            }
        }
    }

    pub fn reachable(&self) -> bool {
        self.reachability == Reachability::Reachable
    }

    /// The whole text: title, numbered hops, verdict line; ends with a newline.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.title);
        let width = self.hops.len().to_string().len();
        for (i, h) in self.hops.iter().enumerate() {
            let _ = writeln!(out, "{:>width$}. {h}", i + 1);
        }
        let _ = writeln!(out, "{}", self.verdict_line());
        out
    }
}

pub(super) fn proto_text(f: &Facts) -> String {
    match f.kind {
        Kind::Tcp { .. } => format!("tcp:{}", f.dport),
        Kind::Udp => format!("udp:{}", f.dport),
        Kind::Icmp { icmp_type, .. } | Kind::IcmpError { icmp_type, .. } => {
            format!("icmp type {icmp_type}")
        }
        _ => format!("protocol {}", f.proto),
    }
}

pub(super) fn proto_name(p: Option<u8>) -> String {
    match p {
        None => "all".into(),
        Some(PROTO_TCP) => "tcp".into(),
        Some(PROTO_UDP) => "udp".into(),
        Some(PROTO_ICMP) => "icmp".into(),
        Some(n) => format!("protocol {n}"),
    }
}

pub(super) fn ports_text(p: Option<(u16, u16)>) -> String {
    match p {
        None => String::new(),
        Some((a, b)) if a == b => format!(" {a}"),
        Some((a, b)) => format!(" {a}-{b}"),
    }
}

/// The security groups of `instance`, in attachment order, the VPC default group marked.
pub(super) fn group_names(vpc: &VpcTable, instance: u32) -> String {
    let sgs = &vpc.security_groups;
    sgs.attached(instance)
        .iter()
        .filter_map(|g| sgs.groups.get(*g as usize))
        .map(|g| {
            if g.implicit {
                format!("{} (the VPC default group)", g.name)
            } else {
                g.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A security group rule: `tcp 80 from 0.0.0.0/0: "description"`.
pub(super) fn sg_rule_text(vpc: &VpcTable, dir: SgDirection, r: &SgRuleTable) -> String {
    let sgs = &vpc.security_groups;
    let peer = match r.peer {
        SgPeer::Cidr(c) => c.to_string(),
        SgPeer::Group(g) => format!(
            "sg:{}",
            sgs.groups.get(g as usize).map_or("?", |g| g.name.as_str())
        ),
    };
    let icmp = r
        .icmp_type
        .map(|t| format!(" type {t}"))
        .unwrap_or_default();
    let dirw = match dir {
        SgDirection::Ingress => "from",
        SgDirection::Egress => "to",
    };
    let desc = r
        .description
        .as_ref()
        .map(|d| format!(": \"{d}\""))
        .unwrap_or_default();
    format!(
        "{}{}{icmp} {dirw} {peer}{desc}",
        proto_name(r.proto),
        ports_text(r.ports)
    )
}

/// A network ACL rule: `deny tcp 22 from 0.0.0.0/0` (`towards`: `from` inbound, `to` outbound).
pub(super) fn acl_rule_text(r: &AclRuleTable, towards: &str) -> String {
    format!(
        "{} {}{} {towards} {}",
        if r.allow { "allow" } else { "deny" },
        proto_name(r.proto),
        ports_text(r.ports),
        r.cidr
    )
}
