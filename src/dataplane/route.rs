//! The routing decisions, shared by the fabric and `vpcd explain` so that the two cannot
//! disagree: which destinations are martian, and where a VPC's route table sends a packet.
//!
//! Pure functions over the compiled tables; no state, no allocation.

use std::net::Ipv4Addr;

use super::{DropReason, PortId};
use crate::tables::RouteTargetPlan;
use crate::tables::{PortInfo, RouteMatch, VpcTable};

/// Where the VPC routing step sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Deliver(PortId),
    /// The subnet gateway answers.
    Gateway,
    /// NAT gateway `n` of the VPC.
    Nat(usize),
    /// The internet gateway, for an instance with a 1:1 EIP.
    InternetGateway,
}

/// Destinations no VPC or public segment delivers to: there is no broadcast or multicast in a VPC.
pub fn is_martian(dst: Ipv4Addr) -> bool {
    dst.is_unspecified()
        || dst.is_broadcast()
        || dst.is_multicast()
        || dst.is_loopback()
        || dst.octets()[0] == 0
        || dst.octets()[0] >= 240
}

/// The route table of `subnet` and the route it picks for `dst` (longest prefix).
pub fn lookup_route(
    vpc: &VpcTable,
    subnet: usize,
    dst: Ipv4Addr,
) -> Result<(usize, RouteMatch), DropReason> {
    let index = vpc
        .subnets
        .get(subnet)
        .map(|s| s.route_table as usize)
        .ok_or(DropReason::NoRoute)?;
    let table = vpc.route_tables.get(index).ok_or(DropReason::NoRoute)?;
    let route = table.lookup(dst).ok_or(DropReason::NoRoute)?;
    Ok((index, route))
}

/// Routes a packet from an instance in `subnet` of `vpc` by that subnet's route table.
pub fn route_in_vpc(
    vpc: &VpcTable,
    subnet: usize,
    port: &PortInfo,
    dst: Ipv4Addr,
) -> Result<Next, DropReason> {
    let (_, route) = lookup_route(vpc, subnet, dst)?;
    next_hop(vpc, route, port, dst)
}

/// What a chosen route means for a packet from `port` to `dst`.
pub fn next_hop(
    vpc: &VpcTable,
    route: RouteMatch,
    port: &PortInfo,
    dst: Ipv4Addr,
) -> Result<Next, DropReason> {
    match route.target {
        RouteTargetPlan::Local => {
            if let Some(egress) = vpc.hosts.get(&dst) {
                Ok(Next::Deliver(*egress))
            } else if vpc.gateways.contains_key(&dst) {
                Ok(Next::Gateway)
            } else if vpc.subnets.iter().any(|s| s.cidr.broadcast() == dst) {
                Err(DropReason::Martian)
            } else {
                Err(DropReason::NoSuchHost)
            }
        }
        RouteTargetPlan::Blackhole => Err(DropReason::Blackhole),
        RouteTargetPlan::Internet => match port.eip {
            Some(_) => Ok(Next::InternetGateway),
            None => Err(DropReason::NoPublicAddress),
        },
        RouteTargetPlan::Nat(g) => Ok(Next::Nat(g)),
    }
}
