//! The resolved addressing plan: a validated topology with every name turned into an index and
//! every address assigned.
//!
//! `validate` builds it from the model; `compile::tables` turns it into lookup tables; `vpcd check`
//! prints it. Indices are positions in the vectors of the same plan and are always in range.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::cidr::Cidr;
use super::model::{
    Attach, DnatProtocol, EgressRule, Expect, NetworkAcl, ProbeTarget, RouteTarget, SecurityGroup,
    Service, Upstream,
};
use crate::dataplane::nat::config::NatConfig;
use crate::dns::RecordData;
/// Resolved targets and bindings are table types too; the plan uses the same ones.
pub use crate::tables::{EipBinding, RouteTargetPlan};
/// Domain names in zones (the resolver's type).
pub use hickory_proto::rr::Name;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub vpcs: Vec<VpcPlan>,
    pub eips: Vec<EipPlan>,
    pub internet: InternetPlan,
    pub probes: Vec<ProbePlan>,
    /// Private DNS zones, in file order.
    pub zones: Vec<ZonePlan>,
}

/// A DNS zone, checked: apex and records as fully qualified names.
#[derive(Debug, Clone, PartialEq)]
pub struct ZonePlan {
    pub apex: Name,
    /// Indices into `Plan::vpcs` whose resolvers answer it (empty for a public zone).
    pub vpcs: Vec<usize>,
    pub records: Vec<RecordPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordPlan {
    pub name: Name,
    pub ttl: u32,
    pub data: RecordData,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VpcPlan {
    pub name: String,
    pub cidr: Cidr,
    pub subnets: Vec<SubnetPlan>,
    /// Index 0 is always the main table (named `main`, possibly implicit).
    pub route_tables: Vec<RouteTablePlan>,
    /// Shared between copies of the plan (an API change copies it on write).
    pub instances: Vec<std::sync::Arc<InstancePlan>>,
    pub nat_gateways: Vec<NatGatewayPlan>,
    /// Kept as written; enforced by the security-group issue.
    pub security_groups: Vec<SecurityGroup>,
    /// Kept as written; enforced by the network-ACL issue.
    pub network_acls: Vec<NetworkAcl>,
    /// `None`: instances may open flows to any public destination; otherwise only to these.
    pub egress_allow: Option<Vec<EgressRule>>,
    /// DNS Firewall rules naming this VPC, in file order (the resolver's type).
    pub dns_firewall: Vec<crate::dns::firewall::Rule>,
    /// Names whose answers become allowed egress destinations (`[[egress_by_name]]`).
    pub egress_names: Vec<crate::dns::egress::EgressName>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubnetPlan {
    pub name: String,
    pub cidr: Cidr,
    /// The subnet's `.1`, answered by the fabric.
    pub gateway: Ipv4Addr,
    /// Index into `VpcPlan::route_tables`.
    pub route_table: usize,
    /// Index into `VpcPlan::network_acls`.
    pub network_acl: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteTablePlan {
    pub name: String,
    /// Every route, the implicit `VPC CIDR -> local` first.
    pub routes: Vec<RoutePlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    pub destination: Cidr,
    pub target: RouteTargetPlan,
}

impl RouteTargetPlan {
    /// The text the user wrote, given the VPC the target belongs to.
    pub fn describe(self, vpc: &VpcPlan) -> String {
        match self {
            RouteTargetPlan::Local => RouteTarget::Local.to_string(),
            RouteTargetPlan::Blackhole => RouteTarget::Blackhole.to_string(),
            RouteTargetPlan::Internet => RouteTarget::Internet.to_string(),
            RouteTargetPlan::Nat(i) => {
                RouteTarget::Nat(vpc.nat_gateways[i].name.clone()).to_string()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstancePlan {
    pub name: String,
    /// Its port's name, `VPC/INSTANCE`: made once with the instance, shared by every compile
    /// of the tables and the runtime's port specs (a change copies no name of another port).
    pub port: std::sync::Arc<str>,
    /// Index into `VpcPlan::subnets`.
    pub subnet: usize,
    pub ip: Ipv4Addr,
    pub attach: Attach,
    pub mtu: u32,
    /// 1:1 EIP, index into `Plan::eips`.
    pub eip: Option<usize>,
    /// Indices into `VpcPlan::security_groups`; empty: the VPC's default group.
    pub security_groups: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatGatewayPlan {
    pub name: String,
    /// Index into `VpcPlan::subnets`.
    pub subnet: usize,
    /// The gateway's private address.
    pub ip: Ipv4Addr,
    /// Indices into `Plan::eips`.
    pub eips: Vec<usize>,
    pub snat: Vec<SnatPlan>,
    pub dnat: Vec<DnatPlan>,
    /// Behaviours, timeouts and limits: the profile with the file's overrides applied.
    pub config: NatConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnatPlan {
    /// Private sources this entry translates (an instance becomes its /32).
    pub source: Cidr,
    /// Indices into `Plan::eips`, never empty.
    pub eips: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnatPlan {
    /// Index into `Plan::eips`.
    pub eip: usize,
    pub protocol: DnatProtocol,
    /// `None` exactly when `protocol` is `Any`.
    pub port: Option<u16>,
    /// Index into `VpcPlan::instances`.
    pub instance: usize,
    pub instance_port: Option<u16>,
    /// A host listener for this (TCP) entry, with the uplink on.
    pub host_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EipPlan {
    pub name: String,
    pub address: Ipv4Addr,
    pub binding: EipBinding,
    /// The host address this EIP's flows bind their host sockets to (uplink on).
    pub host_bind: Option<Ipv4Addr>,
    /// Host listeners towards this 1:1 EIP, each to the same port (uplink on).
    pub host_listen: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InternetPlan {
    pub cidr: Cidr,
    pub hosts: Vec<HostPlan>,
    /// `Some` with `uplink = "host"`.
    pub uplink: Option<UplinkPlan>,
    /// Public DNS zones, in file order.
    pub zones: Vec<ZonePlan>,
}

/// The public uplink: its address on the segment and the host listeners of every EIP and DNAT
/// entry. Which host address each EIP binds to is in [`EipPlan::host_bind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkPlan {
    /// The segment's first address (`cidr.gateway()`): the source of the ICMP errors the uplink
    /// sends; no host or EIP may use it.
    pub address: Ipv4Addr,
    /// In file order: EIPs' listeners first, then DNAT entries'.
    pub listen: Vec<ListenPlan>,
    /// Where the VPC resolvers forward names they do not hold; empty: they do not forward.
    pub resolvers: Vec<Upstream>,
}

/// One host listener: connections accepted on `host` enter the segment towards `target` (an
/// EIP and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenPlan {
    pub host: SocketAddr,
    pub target: SocketAddrV4,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostPlan {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Its further addresses (`secondary_ips`), in file order.
    pub secondary: Vec<Ipv4Addr>,
    pub serve: Vec<Service>,
    pub attach: Attach,
    pub mtu: u32,
    /// Public DNS names of the host, fully qualified.
    pub dns_names: Vec<Name>,
}

/// An endpoint a probe starts from, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Instance { vpc: usize, instance: usize },
    Host(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan {
    /// The name given, or `FROM -> TO`.
    pub name: String,
    pub from: Endpoint,
    pub to: ProbeTarget,
    /// The target resolved to an endpoint when it names one (`VPC/INSTANCE`, `internet/HOST`).
    pub to_endpoint: Option<Endpoint>,
    /// The destination address the prober sends to.
    pub to_addr: Ipv4Addr,
    pub expect: Expect,
    /// The probe's tags, in file order (valid names, each once).
    pub tags: Vec<String>,
}

impl Plan {
    /// `(EIP, host address)` for every EIP with a `host_bind`.
    pub fn host_binds(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        self.eips
            .iter()
            .filter_map(|e| e.host_bind.map(|h| (e.address, h)))
            .collect()
    }

    /// The display name of an endpoint: `VPC/INSTANCE` or `internet/HOST`.
    pub fn endpoint_name(&self, e: Endpoint) -> String {
        match e {
            Endpoint::Instance { vpc, instance } => {
                format!(
                    "{}/{}",
                    self.vpcs[vpc].name, self.vpcs[vpc].instances[instance].name
                )
            }
            Endpoint::Host(h) => format!("internet/{}", self.internet.hosts[h].name),
        }
    }

    /// The private (or public, for hosts) address of an endpoint.
    pub fn endpoint_ip(&self, e: Endpoint) -> Ipv4Addr {
        match e {
            Endpoint::Instance { vpc, instance } => self.vpcs[vpc].instances[instance].ip,
            Endpoint::Host(h) => self.internet.hosts[h].ip,
        }
    }

    /// Finds `VPC/INSTANCE` or `internet/HOST`.
    pub fn find_endpoint(&self, scope: &str, name: &str) -> Option<Endpoint> {
        if scope == "internet" {
            let h = self.internet.hosts.iter().position(|h| h.name == name)?;
            return Some(Endpoint::Host(h));
        }
        let vpc = self.vpcs.iter().position(|v| v.name == scope)?;
        let instance = self.vpcs[vpc]
            .instances
            .iter()
            .position(|i| i.name == name)?;
        Some(Endpoint::Instance { vpc, instance })
    }
}
