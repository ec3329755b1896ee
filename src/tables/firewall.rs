//! The compiled filters of a VPC: security groups, network ACLs and the egress allow-list, as
//! the dataplane reads them. Plain data; the evaluation lives in the firewall
//! ([`crate::dataplane::firewall`]), the compilation from a plan in `topology::compile`.

use std::fmt;
use std::net::Ipv4Addr;

use crate::topology::cidr::Cidr;

/// One compiled ACL rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclRuleTable {
    pub number: u16,
    pub allow: bool,
    /// IP protocol number; `None` = all.
    pub proto: Option<u8>,
    /// Destination port range (tcp/udp only); `None` = every port.
    pub ports: Option<(u16, u16)>,
    pub cidr: Cidr,
}

/// One compiled network ACL; both rule lists sorted by rule number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAclTable {
    pub name: String,
    pub inbound: Vec<AclRuleTable>,
    pub outbound: Vec<AclRuleTable>,
}

/// Who a rule admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SgPeer {
    Cidr(Cidr),
    /// The members of group N of the same VPC (their private addresses).
    Group(u32),
}

/// One compiled security group rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgRuleTable {
    /// IP protocol number; `None` = all protocols.
    pub proto: Option<u8>,
    /// Destination port range (tcp/udp only); `None` = every port.
    pub ports: Option<(u16, u16)>,
    /// ICMP type (icmp only); `None` = every type.
    pub icmp_type: Option<u8>,
    pub peer: SgPeer,
    pub description: Option<String>,
}

/// One compiled security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupTable {
    pub name: String,
    pub ingress: Vec<SgRuleTable>,
    /// `None`: every egress packet is allowed (no `egress` list in the file).
    pub egress: Option<Vec<SgRuleTable>>,
    /// The VPC's implicit default group (not written in the file).
    pub implicit: bool,
}

/// A VPC's security groups, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityGroups {
    pub groups: Vec<SecurityGroupTable>,
    /// Per group: its members' private addresses, sorted (binary search).
    pub members: Vec<Vec<Ipv4Addr>>,
    /// Per instance (plan order), where its attached groups begin in `attached_groups`; one
    /// more entry at the end, so instance `i`'s are `attached_groups[of_instance[i]..
    /// of_instance[i + 1]]`. Never empty after compilation (an instance naming none gets the
    /// VPC default group). Flat, so a compile makes two vectors, not one per instance.
    pub of_instance: Vec<u32>,
    pub attached_groups: Vec<u32>,
}

impl SecurityGroups {
    /// The groups attached to `instance` (empty for an unknown instance).
    pub fn attached(&self, instance: u32) -> &[u32] {
        let i = instance as usize;
        match (self.of_instance.get(i), self.of_instance.get(i + 1)) {
            (Some(&a), Some(&b)) => self
                .attached_groups
                .get(a as usize..b as usize)
                .unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// One compiled entry of a VPC's egress allow-list: a destination block and, optionally, TCP/UDP
/// destination ports (evaluated by `dataplane::firewall::egress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRuleTable {
    pub dst: Cidr,
    /// `None`: every protocol and port; otherwise TCP and UDP to destination ports
    /// `first..=last` only.
    pub ports: Option<(u16, u16)>,
}

/// As written in a file: `192.0.2.0/24:443`, `192.0.2.0/24:8000-8099`, `192.0.2.0/24`.
impl fmt::Display for EgressRuleTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        match self.ports {
            None => Ok(()),
            Some((first, last)) if first == last => write!(f, ":{first}"),
            Some((first, last)) => write!(f, ":{first}-{last}"),
        }
    }
}
