//! NAT gateways (`CreateNatGateway`, `DeleteNatGateway`) and their entries: DNAT port forwards
//! (`CreateForwardEntry`) and SNAT sources (`CreateSnatEntry`), as Alibaba Cloud names them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::eip::{Binding, binding, require_eip};
use super::{Edit, already_exists, find, in_use, refuse_duplicate, some_names, sp, vpc_mut};
use crate::control::error::{ApiError, ErrorCode};
use crate::topology::cidr::Addr;
use crate::topology::model::{
    DnatEntry, DnatProtocol, HostListen, NatFiltering, NatGateway, NatMapping, NatProfile,
    NatTimeouts, OnRefuse, PortRange, RouteTarget, SnatEntry, Topology, Vpc,
};

/// Create a NAT gateway in a subnet of its VPC (`CreateNatGateway`), optionally with EIPs,
/// SNAT and DNAT entries and behaviour settings; each field means what it means in a topology
/// file's `[[vpc.nat_gateway]]`. The EIPs must be allocated and free.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNatGateway {
    pub vpc: String,
    pub name: String,
    /// The subnet the gateway's private address lives in.
    pub subnet: String,
    /// The gateway's private address; absent: the first free one of the subnet.
    #[serde(default)]
    pub ip: Option<Addr>,
    /// EIPs by name: the SNAT pool, and what DNAT entries may use.
    #[serde(default)]
    pub eips: Vec<String>,
    /// Empty: the whole VPC translates to all the gateway's EIPs.
    #[serde(default)]
    pub snat: Vec<SnatEntrySpec>,
    #[serde(default)]
    pub dnat: Vec<DnatEntrySpec>,
    /// Preset of behaviours and timeouts; absent: `rfc`.
    #[serde(default)]
    pub profile: Option<NatProfile>,
    /// Overrides the profile's mapping behaviour.
    #[serde(default)]
    pub mapping: Option<NatMapping>,
    /// Overrides the profile's filtering behaviour.
    #[serde(default)]
    pub filtering: Option<NatFiltering>,
    /// External ports handed out, like `"1024-65535"`.
    #[serde(default)]
    pub port_range: Option<PortRange>,
    #[serde(default)]
    pub port_preservation: Option<bool>,
    /// A block of ports reserved per instance (GCP's `min_ports_per_vm`).
    #[serde(default)]
    pub ports_per_instance: Option<u16>,
    /// Hard upper bound on the connection table.
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub max_connections_per_instance: Option<u32>,
    #[serde(default)]
    pub new_connections_per_second_per_instance: Option<u32>,
    /// New inbound flows one outside source address may open per second (default 5000).
    #[serde(default)]
    pub new_connections_per_second_per_source: Option<u32>,
    /// Half-open inbound TCP connections one outside source address may hold (default 1024).
    #[serde(default)]
    pub half_open_connections_per_source: Option<u32>,
    /// Seconds a freed external port waits before another flow may use it.
    #[serde(default)]
    pub port_reuse_delay: Option<u32>,
    /// When the table is full, drop a half-open or closing flow to make room.
    #[serde(default)]
    pub early_drop: Option<bool>,
    /// What a refused new flow gets: `drop` (default) or `icmp`.
    #[serde(default)]
    pub on_refuse: Option<OnRefuse>,
    /// Answer a packet of an expired TCP flow with a RST (the `aws` default).
    #[serde(default)]
    pub rst_on_expired: Option<bool>,
    /// Answer the outside's SYNs to DNAT rules with SYN cookies (no state until the handshake
    /// completes).
    #[serde(default)]
    pub syn_proxy: Option<bool>,
    #[serde(default)]
    pub timeouts: Option<NatTimeoutsSpec>,
}

/// An SNAT entry as requests write it: `source` (a CIDR inside the VPC or an instance name) ->
/// EIP pool.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnatEntrySpec {
    pub source: String,
    /// Empty: all the gateway's EIPs.
    #[serde(default)]
    pub eips: Vec<String>,
}

/// A DNAT entry as requests write it: `eip:port/protocol -> instance:instance_port`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnatEntrySpec {
    pub eip: String,
    pub protocol: DnatProtocol,
    /// Required for tcp/udp, refused for `any`.
    #[serde(default)]
    pub port: Option<u16>,
    pub instance: String,
    /// Default: `port`.
    #[serde(default)]
    pub instance_port: Option<u16>,
    /// With the public uplink (TCP only): a host address whose callers reach the entry.
    #[serde(default)]
    pub host_listen: Option<HostListen>,
}

/// Idle timeouts in seconds; each overrides the profile's value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NatTimeoutsSpec {
    #[serde(default)]
    pub udp: Option<u32>,
    #[serde(default)]
    pub udp_stream: Option<u32>,
    #[serde(default)]
    pub tcp_established: Option<u32>,
    #[serde(default)]
    pub tcp_transitory: Option<u32>,
    #[serde(default)]
    pub tcp_time_wait: Option<u32>,
    #[serde(default)]
    pub icmp: Option<u32>,
}

/// Delete a NAT gateway (`DeleteNatGateway`).
///
/// As in AWS, its EIPs are disassociated and stay allocated, and its SNAT entries (its own
/// translation settings) go with it. Refused while a route targets it (`nat:NAME`): AWS would
/// leave such a route in the `blackhole` state, silently dropping what it carries; vpcd asks
/// for the route to be removed or pointed elsewhere first, which a topology file needs anyway.
/// Refused while it has DNAT entries, as Alibaba Cloud refuses without `Force`: they publish
/// instances, and removing them is a decision of its own.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveNatGateway {
    pub vpc: String,
    pub name: String,
}

/// Add a DNAT entry (port forward) to a NAT gateway (`CreateForwardEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub eip: String,
    pub protocol: DnatProtocol,
    /// Required for tcp/udp, refused for `any`.
    #[serde(default)]
    pub port: Option<u16>,
    pub instance: String,
    #[serde(default)]
    pub instance_port: Option<u16>,
    /// With the public uplink (TCP only): a host address whose callers reach the entry.
    #[serde(default)]
    pub host_listen: Option<HostListen>,
}

/// Remove the DNAT entry for `eip` + `protocol` + `port` (`port` absent for `any`)
/// (`DeleteForwardEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveDnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub eip: String,
    pub protocol: DnatProtocol,
    #[serde(default)]
    pub port: Option<u16>,
}

/// Add an SNAT entry: `source` (a CIDR or an instance name) -> EIP pool (`CreateSnatEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub source: String,
    /// Empty: all the gateway's EIPs.
    #[serde(default)]
    pub eips: Vec<String>,
}

/// Remove the SNAT entry for `source` (`DeleteSnatEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub source: String,
}

fn gateway_mut<'v>(vpc: &'v mut Vpc, name: &str) -> Result<&'v mut NatGateway, ApiError> {
    find(
        &mut vpc.nat_gateway,
        |g| &g.name,
        name,
        "NAT gateway",
        "nat_gateway",
    )
    .map(|(_, g)| g)
}

impl SnatEntrySpec {
    fn to_model(&self) -> SnatEntry {
        SnatEntry {
            source: sp(self.source.clone()),
            eips: self.eips.iter().cloned().map(sp).collect(),
        }
    }
}

impl DnatEntrySpec {
    fn to_model(&self) -> DnatEntry {
        DnatEntry {
            eip: sp(self.eip.clone()),
            protocol: sp(self.protocol),
            port: self.port.map(sp),
            instance: sp(self.instance.clone()),
            instance_port: self.instance_port.map(sp),
            host_listen: self.host_listen.map(sp),
        }
    }
}

impl NatTimeoutsSpec {
    fn to_model(&self) -> NatTimeouts {
        NatTimeouts {
            udp: self.udp.map(sp),
            udp_stream: self.udp_stream.map(sp),
            tcp_established: self.tcp_established.map(sp),
            tcp_transitory: self.tcp_transitory.map(sp),
            tcp_time_wait: self.tcp_time_wait.map(sp),
            icmp: self.icmp.map(sp),
        }
    }
}

impl AddNatGateway {
    fn to_model(&self) -> NatGateway {
        NatGateway {
            name: sp(self.name.clone()),
            subnet: sp(self.subnet.clone()),
            ip: self.ip.map(sp),
            eips: self.eips.iter().cloned().map(sp).collect(),
            snat: self.snat.iter().map(SnatEntrySpec::to_model).collect(),
            dnat: self.dnat.iter().map(DnatEntrySpec::to_model).collect(),
            profile: self.profile.map(sp),
            mapping: self.mapping.map(sp),
            filtering: self.filtering.map(sp),
            port_range: self.port_range.map(sp),
            port_preservation: self.port_preservation.map(sp),
            ports_per_instance: self.ports_per_instance.map(sp),
            max_connections: self.max_connections.map(sp),
            max_connections_per_instance: self.max_connections_per_instance.map(sp),
            new_connections_per_second_per_instance: self
                .new_connections_per_second_per_instance
                .map(sp),
            new_connections_per_second_per_source: self
                .new_connections_per_second_per_source
                .map(sp),
            half_open_connections_per_source: self.half_open_connections_per_source.map(sp),
            port_reuse_delay: self.port_reuse_delay.map(sp),
            early_drop: self.early_drop.map(sp),
            on_refuse: self.on_refuse.map(sp),
            rst_on_expired: self.rst_on_expired.map(sp),
            syn_proxy: self.syn_proxy.map(sp),
            timeouts: self.timeouts.as_ref().map(NatTimeoutsSpec::to_model),
        }
    }
}

impl Edit for AddNatGateway {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        refuse_duplicate(
            &vpc.nat_gateway,
            |g| &g.name,
            &self.name,
            "NAT gateway",
            "choose another name, or remove the NAT gateway first",
        )?;
        // The EIPs: allocated, and not bound elsewhere (as for `associate_eip`).
        for (k, e) in self.eips.iter().enumerate() {
            require_eip(topo, e, &format!("eips[{k}]"))?;
            if let Some(b) = binding(topo, e) {
                let (what, hint) = match b {
                    Binding::Instance(v, i) => {
                        (format!("instance `{v}/{i}`"), "disassociate it first")
                    }
                    Binding::Gateway(v, g) => (
                        format!("NAT gateway `{v}/{g}`"),
                        "disassociate it from that gateway first, or allocate another EIP",
                    ),
                };
                return Err(in_use(
                    format!("EIP `{e}` is already associated with {what}"),
                    hint,
                ));
            }
        }
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        vpc.nat_gateway.push(self.to_model());
        Ok(Some(format!(
            "vpc[{}].nat_gateway[{}]",
            self.vpc, self.name
        )))
    }
}

impl Edit for RemoveNatGateway {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (at, gw) = find(
            &mut vpc.nat_gateway,
            |g| &g.name,
            &r.name,
            "NAT gateway",
            "name",
        )?;
        if !gw.dnat.is_empty() {
            let eips = gw.dnat.iter().map(|d| format!("`{}`", d.eip.get_ref()));
            return Err(in_use(
                format!(
                    "NAT gateway `{}` has {} DNAT entr{} (EIP {})",
                    r.name,
                    gw.dnat.len(),
                    if gw.dnat.len() == 1 { "y" } else { "ies" },
                    some_names(eips)
                ),
                "remove its DNAT entries first (remove_dnat): they publish instances",
            ));
        }
        let target = RouteTarget::Nat(r.name.clone());
        let routes: Vec<String> = vpc
            .route_table
            .iter()
            .flat_map(|t| {
                t.routes
                    .iter()
                    .filter(|x| x.target.get_ref() == &target)
                    .map(|x| {
                        format!(
                            "{} in table `{}`",
                            x.destination.get_ref(),
                            t.name.get_ref()
                        )
                    })
            })
            .collect();
        if !routes.is_empty() {
            return Err(in_use(
                format!(
                    "NAT gateway `{}` is the target of route{} {}",
                    r.name,
                    if routes.len() == 1 { "" } else { "s" },
                    some_names(routes)
                ),
                format!(
                    "remove those routes or point them elsewhere first (remove_route, then add_route with another target than `{target}`)"
                ),
            ));
        }
        vpc.nat_gateway.remove(at);
        Ok(None)
    }
}

impl Edit for AddDnat {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let gw = gateway_mut(vpc, &r.nat_gateway)?;
        gw.dnat.push(
            DnatEntrySpec {
                eip: r.eip.clone(),
                protocol: r.protocol,
                port: r.port,
                instance: r.instance.clone(),
                instance_port: r.instance_port,
                host_listen: r.host_listen,
            }
            .to_model(),
        );
        Ok(Some(format!(
            "vpc[{}].nat_gateway[{}].dnat[{}]",
            r.vpc,
            r.nat_gateway,
            gw.dnat.len() - 1
        )))
    }
}

impl Edit for RemoveDnat {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let gw = gateway_mut(vpc, &r.nat_gateway)?;
        let at = gw.dnat.iter().position(|d| {
            d.eip.get_ref() == &r.eip
                && *d.protocol.get_ref() == r.protocol
                && d.port.as_ref().map(|p| *p.get_ref()) == r.port
        });
        let Some(at) = at else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "NAT gateway `{}` has no DNAT entry for EIP `{}` {}",
                    r.nat_gateway,
                    r.eip,
                    dnat_key(r.protocol, r.port)
                ),
                "eip",
                "list the gateway's DNAT entries and name one by eip, protocol and port",
            ));
        };
        gw.dnat.remove(at);
        Ok(None)
    }
}

impl Edit for AddSnat {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let gw = gateway_mut(vpc, &r.nat_gateway)?;
        if gw.snat.iter().any(|s| s.source.get_ref() == &r.source) {
            return Err(already_exists(
                "SNAT entry for source",
                &r.source,
                "source",
                "remove the existing entry first to change its EIPs",
            ));
        }
        gw.snat.push(
            SnatEntrySpec {
                source: r.source.clone(),
                eips: r.eips.clone(),
            }
            .to_model(),
        );
        Ok(Some(format!(
            "vpc[{}].nat_gateway[{}].snat[{}]",
            r.vpc,
            r.nat_gateway,
            gw.snat.len() - 1
        )))
    }
}

impl Edit for RemoveSnat {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let gw = gateway_mut(vpc, &r.nat_gateway)?;
        let Some(at) = gw.snat.iter().position(|s| s.source.get_ref() == &r.source) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "NAT gateway `{}` has no SNAT entry for source `{}`",
                    r.nat_gateway, r.source
                ),
                "source",
                "name the entry by its source exactly as it was added",
            ));
        };
        gw.snat.remove(at);
        Ok(None)
    }
}

fn dnat_key(protocol: DnatProtocol, port: Option<u16>) -> String {
    match (protocol, port) {
        (DnatProtocol::Any, _) => "(protocol any)".to_string(),
        (DnatProtocol::Tcp, Some(p)) => format!("tcp port {p}"),
        (DnatProtocol::Udp, Some(p)) => format!("udp port {p}"),
        (DnatProtocol::Tcp, None) => "tcp without a port".to_string(),
        (DnatProtocol::Udp, None) => "udp without a port".to_string(),
    }
}
