//! The serde model of a topology file: what the user wrote, with spans for error messages.
//!
//! Every field that validation may complain about is `Spanned`, so errors can point at the file,
//! line and column. Unknown keys are refused everywhere (`deny_unknown_fields`): a typo must never be
//! silently ignored. This module only parses; cross-references and address rules live in
//! `validate/`, and the dataplane never reads this model (it reads `tables`, compiled by
//! `compile.rs`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use super::cidr::{Addr, Cidr};

/// A whole topology file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc: Vec<Vpc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eip: Vec<Eip>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet: Option<Internet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe: Vec<Probe>,
    /// Private DNS zones, each answered only by the resolvers of the VPCs it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone: Vec<Zone>,
    /// DNS Firewall domain lists, referenced by rules by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_domain_list: Vec<DnsDomainList>,
    /// DNS Firewall rules, each applied by the resolvers of the VPCs it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_firewall: Vec<DnsFirewallRule>,
    /// Egress allowed by name, for the VPCs each entry names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_by_name: Vec<EgressByName>,
}

/// Egress allowed by name: the addresses the VPCs' resolvers answer for these names become
/// allowed destinations of their new flows to the public side, for the answers' TTLs
/// (`crate::dns::egress`). A VPC named here without an `egress_allow` list gets an empty one:
/// only what the names allow leaves.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressByName {
    pub vpcs: Vec<Spanned<String>>,
    /// `"api.payments.example:443"`, `"*.payments.example:8000-8099"`, `"api.example"` (every
    /// protocol and port).
    pub allow: Vec<Spanned<String>>,
}

/// An isolated tenant network. VPCs may reuse each other's CIDRs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vpc {
    pub name: Spanned<String>,
    pub cidr: Spanned<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet: Vec<Subnet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_table: Vec<RouteTable>,
    /// Shared between copies of the model (every API change group copies the model; an
    /// instance is copied only when a change edits it, with `Arc::make_mut`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance: Vec<std::sync::Arc<Instance>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_gateway: Vec<NatGateway>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group: Vec<SecurityGroup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_acl: Vec<NetworkAcl>,
    /// Where the VPC's instances may open flows on the public side (through a NAT gateway or a
    /// 1:1 EIP): `None` allows every destination, a list only the destinations it names (an
    /// empty list none). Replies to flows opened from outside are not restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_allow: Option<Vec<Spanned<EgressRule>>>,
}

/// One DNS Firewall rule (Route 53 Resolver DNS Firewall's shape; `crate::dns::firewall`),
/// applied by the resolvers of the VPCs it names; a VPC's rules apply in file order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFirewallRule {
    /// Unique among the rules; named in query logs.
    pub name: Spanned<String>,
    /// The VPCs whose resolvers apply it.
    pub vpcs: Vec<Spanned<String>>,
    /// `"bad.example"` (that name) or `"*.bad.example"` (every name below it); or, instead,
    /// `domain_list`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<Spanned<String>>,
    /// The name of a `[[dns_domain_list]]` whose domains the rule matches (Route 53's
    /// `FirewallDomainListId`): a change to the list applies to the rule at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_list: Option<Spanned<String>>,
    pub action: Spanned<DnsFirewallAction>,
    /// With `action = "block"`: what the query gets (default `nxdomain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_response: Option<Spanned<BlockResponseKind>>,
    /// With `block_response = "override"`: the CNAME target answered instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_override: Option<Spanned<String>>,
    /// The override's TTL in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_override_ttl: Option<Spanned<u32>>,
}

/// A DNS Firewall domain list (Route 53 Resolver DNS Firewall's `FirewallDomainList`): named
/// domains that rules reference with `domain_list`. It may be empty (a rule on it matches
/// nothing until domains are added).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDomainList {
    /// Unique among the lists.
    pub name: Spanned<String>,
    /// `"bad.example"` (that name) or `"*.bad.example"` (every name below it).
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
}

/// What a DNS Firewall rule does with a matching query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsFirewallAction {
    Allow,
    Alert,
    Block,
}

/// What a blocked query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlockResponseKind {
    Nxdomain,
    Nodata,
    Override,
}

/// One entry of a VPC's `egress_allow`: a destination block and, optionally, TCP/UDP destination
/// ports. Written `"192.0.2.0/24:443"`, `"192.0.2.0/24:8000-8099"`, `"192.0.2.0/24"` (every
/// protocol and port), or with a bare address for a /32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    pub cidr: Cidr,
    /// `None`: every protocol and port; otherwise TCP and UDP to these destination ports only.
    pub ports: Option<PortRange>,
}

/// The rule's meaning as written, kept for tests only: the dataplane evaluates the compiled
/// `tables::firewall::EgressRuleTable`, and a property test in `topology/compile.rs` checks the
/// two decide alike.
#[cfg(test)]
impl EgressRule {
    /// Whether a packet of protocol `proto` (IP protocol number) to `dst`, destination port
    /// `dport` (TCP/UDP only), matches.
    pub fn allows(&self, proto: u8, dst: Ipv4Addr, dport: Option<u16>) -> bool {
        if !self.cidr.contains(dst) {
            return false;
        }
        match self.ports {
            None => true,
            Some(r) => {
                matches!(proto, 6 | 17) && dport.is_some_and(|p| r.first <= p && p <= r.last)
            }
        }
    }
}

impl FromStr for EgressRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}` is not an egress rule; write \"192.0.2.0/24:443\", \"192.0.2.0/24:8000-8099\" or \"192.0.2.0/24\""
            )
        };
        let (block, ports) = match s.rsplit_once(':') {
            Some((b, p)) => (b, Some(p)),
            None => (s, None),
        };
        let cidr = if block.contains('/') {
            block.parse::<Cidr>().map_err(|e| match e {
                super::cidr::CidrError::HostBits { .. } => {
                    let text = e.to_string();
                    match text.split_once("; ") {
                        Some((what, todo)) => format!("{what} (in egress rule `{s}`); {todo}"),
                        None => text,
                    }
                }
                super::cidr::CidrError::Syntax(_) => bad(),
            })?
        } else {
            let a: Ipv4Addr = block.parse().map_err(|_| bad())?;
            Cidr::new(a, 32).ok_or_else(bad)?
        };
        let ports = match ports {
            None => None,
            Some(p) => Some(p.parse::<PortRange>().map_err(|_| {
                format!(
                    "`{s}`: `{p}` is not a port or port range; write a port from 1 to 65535 (\"443\") or a range (\"8000-8099\")"
                )
            })?),
        };
        Ok(EgressRule { cidr, ports })
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)?;
        if let Some(p) = self.ports {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A CIDR inside a VPC. Reserved: the network address, `.1` (the gateway) and broadcast.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub name: Spanned<String>,
    pub cidr: Spanned<Cidr>,
    /// The route table; `None` means the VPC's main table (the one named `main`, or local only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_acl: Option<Spanned<String>>,
}

/// Name of the route table a subnet uses when it names none.
pub const MAIN_ROUTE_TABLE: &str = "main";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    pub name: Spanned<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub destination: Spanned<Cidr>,
    pub target: Spanned<RouteTarget>,
}

/// Where a route sends matching packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Delivered inside the VPC (implicit for the VPC CIDR).
    Local,
    /// Silently dropped.
    Blackhole,
    /// The internet gateway: only instances with a 1:1 EIP get out this way.
    Internet,
    /// A NAT gateway of the same VPC, by name (`nat:NAME`).
    Nat(String),
}

impl FromStr for RouteTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(RouteTarget::Local),
            "blackhole" => Ok(RouteTarget::Blackhole),
            "internet" => Ok(RouteTarget::Internet),
            _ => match s.strip_prefix("nat:") {
                Some(name) if !name.is_empty() => Ok(RouteTarget::Nat(name.to_string())),
                _ => Err(format!(
                    "`{s}` is not a route target; use \"local\", \"blackhole\", \"internet\" or \"nat:GATEWAY\""
                )),
            },
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Local => f.write_str("local"),
            RouteTarget::Blackhole => f.write_str("blackhole"),
            RouteTarget::Internet => f.write_str("internet"),
            RouteTarget::Nat(n) => write!(f, "nat:{n}"),
        }
    }
}

/// A function instance attached to a subnet by one port.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub name: Spanned<String>,
    pub subnet: Spanned<String>,
    /// `None`: the first free address of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Spanned<Addr>>,
    #[serde(default)]
    pub attach: Attach,
    /// Security groups by name; empty means the VPC's default group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<Spanned<String>>,
    /// A 1:1 EIP association by EIP name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip: Option<Spanned<String>>,
    /// Port MTU (default 1500, at most 65520).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Spanned<u32>>,
}

/// Default port MTU.
pub const DEFAULT_MTU: u32 = 1500;
/// Largest MTU a port accepts (TUN's limit).
pub const MAX_MTU: u32 = 65520;
/// Smallest MTU a port accepts (a core table constant: the fabric relies on it).
pub use crate::tables::MIN_MTU;

/// How an instance or internet host is attached (a core table type: the port table carries it).
pub use crate::tables::Attach;

/// An elastic IP: a public address.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Eip {
    pub name: Spanned<String>,
    pub address: Spanned<Addr>,
    /// With the uplink on: the host address this EIP's flows bind their host sockets to, so the
    /// outside world sees it as their source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_bind: Option<Spanned<Addr>>,
    /// With the uplink on, for a 1:1 EIP: host listeners (`"ADDR:PORT"`, one or a list) whose
    /// connections enter the segment towards this EIP and the same port, from the real client
    /// address.
    #[serde(default, skip_serializing_if = "HostListens::is_empty")]
    pub host_listen: HostListens,
}

/// A host socket address to listen on, written `"ADDR:PORT"` (`"192.0.2.1:8080"`,
/// `"0.0.0.0:8080"`, `"[::]:8080"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostListen(pub SocketAddr);

impl FromStr for HostListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let a: SocketAddr = s.parse().map_err(|_| {
            format!("`{s}` is not a host address and port; write it like \"192.0.2.1:8080\"")
        })?;
        if a.port() == 0 {
            return Err(format!(
                "`{s}`: port 0 is not a valid port to listen on; use a port from 1 to 65535"
            ));
        }
        Ok(HostListen(a))
    }
}

impl fmt::Display for HostListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An EIP's `host_listen`: one `"ADDR:PORT"` string or a list of them. Serializes back as it is
/// usually written: a string for one listener, a list for several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostListens(pub Vec<Spanned<HostListen>>);

impl HostListens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for HostListens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = HostListens;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string like \"192.0.2.1:8080\" or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HostListens, E> {
                // The span is found again in the syntax tree when an error needs it.
                let l: HostListen = v.parse().map_err(E::custom)?;
                Ok(HostListens(vec![Spanned::new(0..0, l)]))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HostListens, A::Error> {
                let mut v = Vec::new();
                while let Some(l) = seq.next_element::<Spanned<HostListen>>()? {
                    v.push(l);
                }
                Ok(HostListens(v))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl Serialize for HostListens {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.get_ref().serialize(s),
            many => many
                .iter()
                .map(|l| *l.get_ref())
                .collect::<Vec<_>>()
                .serialize(s),
        }
    }
}

/// The public segment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Internet {
    /// The public hosts' block; default `DEFAULT_INTERNET_CIDR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Spanned<Cidr>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<Host>,
    /// `"host"`: packets towards addresses no simulated host or EIP owns leave through the host's
    /// sockets (see `topologies/README.md`); `"off"` (the default): they are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Spanned<UplinkMode>>,
    /// With the uplink on: where the VPC resolvers forward names they do not hold (`"host"`: the
    /// host's `/etc/resolv.conf`). Without it, such names are NXDOMAIN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<Spanned<Upstream>>,
    /// Public DNS zones: the simulated internet's names, answered by every VPC's resolver
    /// (unless a private zone of that VPC hides them). They take no `vpcs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone: Vec<Zone>,
}

/// Whether the public segment reaches the host's networks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkMode {
    #[default]
    Off,
    /// Through ordinary sockets of the host namespace `vpcd up` runs in.
    Host,
}

/// The most `secondary_ips` an internet host may have (an in-process host's interface holds four
/// addresses).
pub const MAX_SECONDARY_IPS: usize = 3;

/// Default block of the public segment (a documentation range).
pub const DEFAULT_INTERNET_CIDR: &str = "198.51.100.0/24";

/// A host on the public segment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: Spanned<String>,
    pub ip: Spanned<Addr>,
    /// Further addresses of the same host (as a server with several NICs or an ENI's secondary
    /// private IPs), at most [`MAX_SECONDARY_IPS`]: an RFC 5780 STUN server needs two. The host
    /// sends from and receives on each; `ip` is the one probes and `explain` start from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_ips: Vec<Spanned<Addr>>,
    /// What the host answers when simulated: `tcp:80`, `udp:53`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serve: Vec<Spanned<Service>>,
    #[serde(default)]
    pub attach: Attach,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Spanned<u32>>,
    /// Public DNS names of the host (`api.example.com`): every VPC's resolver answers them with
    /// the host's address, and the address's reverse name with the first of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<Spanned<String>>,
}

/// An upstream resolver of the VPC resolvers, written `"host"` (the nameservers of the host's
/// `/etc/resolv.conf`, read when `vpcd up` starts or reloads), `"192.0.2.53"` (port 53) or
/// `"192.0.2.53:5353"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Host,
    Addr(SocketAddr),
}

impl FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "host" {
            return Ok(Upstream::Host);
        }
        if let Ok(a) = s.parse::<std::net::IpAddr>() {
            return Ok(Upstream::Addr(SocketAddr::new(a, 53)));
        }
        match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(Upstream::Addr(a)),
            _ => Err(format!(
                "`{s}` is not a resolver; write \"host\" (the host's /etc/resolv.conf), an address like \"192.0.2.53\" or \"192.0.2.53:5353\""
            )),
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Host => f.write_str("host"),
            Upstream::Addr(a) if a.port() == 53 => a.ip().fmt(f),
            Upstream::Addr(a) => a.fmt(f),
        }
    }
}

/// A DNS zone: its apex name and records. A private zone (top-level `[[zone]]`) names the VPCs
/// whose resolvers answer it; a public one (`[[internet.zone]]`) names none.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// The apex, like `corp.example`.
    pub name: Spanned<String>,
    /// VPC names (private zones only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpcs: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record: Vec<ZoneRecord>,
}

/// One record of a zone, in zone-file syntax (`crate::dns::records` documents the values).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneRecord {
    /// Relative to the zone (`db` for `db.corp.example`), or `@` for the apex.
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub kind: Spanned<RecordKind>,
    pub value: Spanned<String>,
    /// Seconds; default [`DEFAULT_RECORD_TTL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Spanned<u32>>,
}

/// The record types a zone may hold (a resolver type: `crate::dns` parses their values).
pub use crate::dns::RecordKind;

/// A zone record's TTL when the file gives none (Route 53's console default).
pub const DEFAULT_RECORD_TTL: u32 = 300;

/// A transport protocol with a port, written `tcp:80` or `udp:53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Service {
    pub proto: L4,
    pub port: u16,
}

/// The transport protocols probes and services speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
}

impl L4 {
    pub fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Icmp => "icmp",
        }
    }
}

impl fmt::Display for L4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a service; write it like \"tcp:80\" or \"udp:53\"");
        let (proto, port) = s.split_once(':').ok_or_else(bad)?;
        let proto = match proto {
            "tcp" => L4::Tcp,
            "udp" => L4::Udp,
            _ => return Err(bad()),
        };
        let port = parse_port(port).ok_or_else(bad)?;
        Ok(Service { proto, port })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.proto, self.port)
    }
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A reachability assertion checked by `vpcd test`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub from: Spanned<String>,
    pub to: Spanned<ProbeTarget>,
    pub expect: Spanned<Expect>,
    /// Labels for selecting and grouping probes (`vpcd test --tag egress`): names, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        })
    }
}

/// Where a probe goes: `ADDRESS:PORT/PROTO`, `SCOPE/NAME:PORT/PROTO`, `DNS-NAME:PORT/PROTO`, or
/// `.../icmp` without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub host: TargetHost,
    /// `None` for ICMP echo.
    pub port: Option<u16>,
    pub proto: L4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    Addr(Ipv4Addr),
    /// `VPC/INSTANCE` or `internet/HOST`.
    Named {
        scope: String,
        name: String,
    },
    /// A DNS name (`api.example.com`), looked up through the source's VPC resolver.
    Dns(String),
}

impl FromStr for ProbeTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}` is not a probe target; write \"198.51.100.10:80/tcp\", \"tenant-b/fn-b1:53/udp\" or \"10.0.1.20/icmp\""
            )
        };
        let (rest, proto) = s.rsplit_once('/').ok_or_else(bad)?;
        let proto = match proto {
            "tcp" => L4::Tcp,
            "udp" => L4::Udp,
            "icmp" => L4::Icmp,
            _ => return Err(bad()),
        };
        let (host, port) = match (proto, rest.rsplit_once(':')) {
            (L4::Icmp, None) => (rest, None),
            (L4::Icmp, Some(_)) => {
                return Err(format!(
                    "`{s}`: ICMP echo has no port; write \"{}/icmp\"",
                    rest.split(':').next().unwrap_or(rest)
                ));
            }
            (_, Some((h, p))) => (h, Some(parse_port(p).ok_or_else(bad)?)),
            (_, None) => {
                return Err(format!(
                    "`{s}`: {proto} needs a port, like \"{rest}:80/{proto}\""
                ));
            }
        };
        let host = if let Ok(a) = host.parse::<Ipv4Addr>() {
            TargetHost::Addr(a)
        } else {
            match host.split_once('/') {
                Some((scope, name))
                    if !scope.is_empty() && !name.is_empty() && !name.contains('/') =>
                {
                    TargetHost::Named {
                        scope: scope.into(),
                        name: name.into(),
                    }
                }
                None if crate::dns::names::parse_domain(host).is_ok() => {
                    TargetHost::Dns(host.trim_end_matches('.').to_string())
                }
                _ => return Err(bad()),
            }
        };
        Ok(ProbeTarget { host, port, proto })
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            TargetHost::Addr(a) => write!(f, "{a}")?,
            TargetHost::Named { scope, name } => write!(f, "{scope}/{name}")?,
            TargetHost::Dns(name) => f.write_str(name)?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "/{}", self.proto)
    }
}

/// A NAT gateway in a (public) subnet of its VPC, translating to its EIPs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatGateway {
    pub name: Spanned<String>,
    /// The subnet the gateway's private address lives in.
    pub subnet: Spanned<String>,
    /// The gateway's private address; `None`: the first free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Spanned<Addr>>,
    /// EIPs (by name) the gateway owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eips: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snat: Vec<SnatEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dnat: Vec<DnatEntry>,
    /// Preset of behaviours and timeouts; default `rfc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Spanned<NatProfile>>,
    /// Overrides the profile's mapping behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<Spanned<NatMapping>>,
    /// Overrides the profile's filtering behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtering: Option<Spanned<NatFiltering>>,
    /// External ports handed out, like `"1024-65535"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<Spanned<PortRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_preservation: Option<Spanned<bool>>,
    /// A block of ports reserved per instance (GCP's `min_ports_per_vm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports_per_instance: Option<Spanned<u16>>,
    /// Hard upper bound on the connection table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_instance: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_second_per_instance: Option<Spanned<u32>>,
    /// New inbound-initiated flows (DNAT, filtering admitting a new remote) one outside source
    /// address may open per second; default
    /// [`crate::dataplane::nat::config::DEFAULT_NEW_PER_SOURCE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_second_per_source: Option<Spanned<u32>>,
    /// Half-open inbound TCP connections one outside source address may hold; default
    /// [`crate::dataplane::nat::config::DEFAULT_HALF_OPEN_PER_SOURCE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_connections_per_source: Option<Spanned<u32>>,
    /// Seconds a freed external port waits before another flow may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_reuse_delay: Option<Spanned<u32>>,
    /// When the table is full, drop a half-open or closing flow to make room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_drop: Option<Spanned<bool>>,
    /// What a refused new flow gets: `drop` (default) or `icmp` (administratively prohibited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_refuse: Option<Spanned<OnRefuse>>,
    /// Answer a packet of an expired TCP flow with a RST (the `aws` default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rst_on_expired: Option<Spanned<bool>>,
    /// Answer the outside's SYNs to DNAT rules with SYN cookies: no state until the handshake
    /// completes (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<Spanned<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<NatTimeouts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NatProfile {
    Rfc,
    Aws,
    Gcp,
    Alibaba,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NatMapping {
    EndpointIndependent,
    AddressAndPortDependent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NatFiltering {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnRefuse {
    Drop,
    Icmp,
}

/// Idle timeouts in seconds; each overrides the profile's value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_stream: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_transitory: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_time_wait: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Spanned<u32>>,
}

/// `source -> EIP pool`: `source` is a CIDR or an instance name.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnatEntry {
    pub source: Spanned<String>,
    /// EIPs by name; empty: all of the gateway's EIPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eips: Vec<Spanned<String>>,
}

/// `EIP:port/proto -> instance:port`, or a whole-address mapping with `protocol = "any"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnatEntry {
    pub eip: Spanned<String>,
    pub protocol: Spanned<DnatProtocol>,
    /// External port; required for tcp/udp, refused for `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Spanned<u16>>,
    pub instance: Spanned<String>,
    /// Internal port; default: the external port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_port: Option<Spanned<u16>>,
    /// With the uplink on, for a TCP entry: a host listener whose connections enter the segment
    /// towards this entry's EIP and port, from the real client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_listen: Option<Spanned<HostListen>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnatProtocol {
    Tcp,
    Udp,
    Any,
}

/// Stateful allow rules attached to instances.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    pub name: Spanned<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<SgRule>,
    /// `None`: all egress allowed (the cloud default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<SgRule>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SgRule {
    pub protocol: Spanned<RuleProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Spanned<PortRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<Spanned<u8>>,
    /// A CIDR, or `sg:NAME` for the members of another group of the same VPC.
    pub peer: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleProtocol {
    Tcp,
    Udp,
    Icmp,
    All,
}

/// `80` or `1000-2000`, written as a string or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("`{s}` is not a port range; write \"80\" or \"1000-2000\" (ports 1-65535)");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first = parse_port(a.trim()).ok_or_else(bad)?;
        let last = parse_port(b.trim()).ok_or_else(bad)?;
        if first > last {
            return Err(format!("`{s}`: the first port is above the last"));
        }
        Ok(PortRange { first, last })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Num(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Stateless numbered rules attached to subnets.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAcl {
    pub name: Spanned<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<AclRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<AclRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Evaluated lowest first; first match wins.
    pub rule: Spanned<u16>,
    pub action: Spanned<AclAction>,
    pub protocol: Spanned<RuleProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Spanned<PortRange>>,
    pub cidr: Spanned<Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    Allow,
    Deny,
}

macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(
    RouteTarget,
    Service,
    ProbeTarget,
    EgressRule,
    HostListen,
    Upstream
);

/// Values written as strings in a file serialize as the same string (`Display` round-trips
/// through `FromStr`), so a serialized model parses back to the same model.
macro_rules! serialize_display {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_display!(
    RouteTarget,
    Service,
    ProbeTarget,
    PortRange,
    Cidr,
    Addr,
    EgressRule,
    HostListen,
    Upstream
);

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_targets() {
        let t: ProbeTarget = "198.51.100.10:80/tcp".parse().unwrap();
        assert_eq!(t.host, TargetHost::Addr(Ipv4Addr::new(198, 51, 100, 10)));
        assert_eq!((t.port, t.proto), (Some(80), L4::Tcp));
        let t: ProbeTarget = "tenant-b/fn-b1:53/udp".parse().unwrap();
        assert_eq!(
            t.host,
            TargetHost::Named {
                scope: "tenant-b".into(),
                name: "fn-b1".into()
            }
        );
        assert_eq!(t.to_string(), "tenant-b/fn-b1:53/udp");
        let t: ProbeTarget = "internet/web/icmp".parse().unwrap();
        assert_eq!((t.port, t.proto), (None, L4::Icmp));
        assert!("10.0.0.1:80".parse::<ProbeTarget>().is_err());
        assert!("10.0.0.1/tcp".parse::<ProbeTarget>().is_err());
        assert!("10.0.0.1:0/tcp".parse::<ProbeTarget>().is_err());
        assert!("10.0.0.1:80/icmp".parse::<ProbeTarget>().is_err());
    }

    #[test]
    fn route_targets_and_ports() {
        assert_eq!(
            "nat:egress".parse::<RouteTarget>(),
            Ok(RouteTarget::Nat("egress".into()))
        );
        assert!("nat:".parse::<RouteTarget>().is_err());
        assert_eq!(
            "1000-2000".parse::<PortRange>(),
            Ok(PortRange {
                first: 1000,
                last: 2000
            })
        );
        assert!("2000-1000".parse::<PortRange>().is_err());
        assert_eq!(
            "tcp:80".parse::<Service>(),
            Ok(Service {
                proto: L4::Tcp,
                port: 80
            })
        );
        assert!("icmp:1".parse::<Service>().is_err());
    }

    #[test]
    fn egress_rules_and_their_matches() {
        let r: EgressRule = "192.0.2.0/24:443".parse().unwrap();
        assert!(r.allows(6, Ipv4Addr::new(192, 0, 2, 9), Some(443)));
        assert!(r.allows(17, Ipv4Addr::new(192, 0, 2, 9), Some(443)));
        assert!(!r.allows(6, Ipv4Addr::new(192, 0, 2, 9), Some(80)));
        assert!(!r.allows(1, Ipv4Addr::new(192, 0, 2, 9), None));
        assert!(!r.allows(6, Ipv4Addr::new(192, 0, 3, 9), Some(443)));
        assert_eq!(r.to_string(), "192.0.2.0/24:443");
        let r: EgressRule = "192.0.2.7".parse().unwrap();
        assert_eq!(r.to_string(), "192.0.2.7/32");
        assert!(r.allows(1, Ipv4Addr::new(192, 0, 2, 7), None));
        let r: EgressRule = "198.51.100.0/24:8000-8099".parse().unwrap();
        assert!(r.allows(17, Ipv4Addr::new(198, 51, 100, 1), Some(8099)));
        assert!(!r.allows(17, Ipv4Addr::new(198, 51, 100, 1), Some(8100)));
        for bad in [
            "",
            "x",
            "192.0.2.0/33",
            "192.0.2.0/24:0",
            "192.0.2.0/24:",
            "1.2.3.4:x",
        ] {
            assert!(bad.parse::<EgressRule>().is_err(), "{bad}");
        }
        assert!(
            "192.0.2.5/24:80"
                .parse::<EgressRule>()
                .unwrap_err()
                .contains("did you mean \"192.0.2.0/24\"")
        );
    }

    #[test]
    fn host_listen_addresses() {
        let l: HostListen = "192.0.2.1:8080".parse().unwrap();
        assert_eq!(l.to_string(), "192.0.2.1:8080");
        assert!("[::]:80".parse::<HostListen>().is_ok());
        assert!("192.0.2.1".parse::<HostListen>().is_err());
        assert!(
            "192.0.2.1:0"
                .parse::<HostListen>()
                .unwrap_err()
                .contains("port 0")
        );
    }
}
