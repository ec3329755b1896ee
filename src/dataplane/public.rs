//! The public segment's decision, shared by the fabric and `vpcd explain` so that the two cannot
//! disagree (as `route` is inside a VPC): where a packet on the public segment goes, by its
//! destination address.
//!
//! The segment holds the public hosts, the EIPs (bound to a NAT gateway, 1:1 to an instance, or
//! unbound) and optionally the uplink to the host's network, which takes every destination no
//! host or EIP owns — but never a packet that came from the uplink itself.
//!
//! A pure function over the compiled tables; no state, no allocation. What happens behind an EIP
//! (translation, the filters of the VPC) is the destination VPC's stage, not part of this
//! decision.

use std::net::Ipv4Addr;

use super::{DropReason, PortId};
use crate::tables::Tables;
use crate::topology::plan::EipBinding;

/// Where the public segment sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicNext {
    /// The public host with this port.
    Host(PortId),
    /// Back into a VPC through one of its EIPs.
    Eip(EipTarget),
    /// Out through the uplink: no host or EIP owns the destination.
    Uplink(PortId),
}

/// A VPC's side of a bound EIP: what translates a packet addressed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EipTarget {
    /// NAT gateway `gateway` of VPC `vpc`, whose SNAT pool `pool` holds the EIP.
    NatGateway {
        vpc: usize,
        gateway: usize,
        pool: u32,
    },
    /// The 1:1 EIP of instance `instance` of VPC `vpc` (the internet gateway).
    OneToOne { vpc: usize, instance: usize },
}

impl EipTarget {
    /// The VPC the packet enters.
    pub fn vpc(self) -> usize {
        match self {
            EipTarget::NatGateway { vpc, .. } | EipTarget::OneToOne { vpc, .. } => vpc,
        }
    }
}

/// Decides where a packet to `dst` goes on the public segment, `ingress` being the port it
/// entered the fabric on (an uplink never gets its own packets back).
pub fn public_next(
    tables: &Tables,
    ingress: PortId,
    dst: Ipv4Addr,
) -> Result<PublicNext, DropReason> {
    let internet = &tables.internet;
    if let Some(port) = internet.hosts.get(&dst) {
        return Ok(PublicNext::Host(*port));
    }
    let Some(eip) = internet.eips.get(&dst) else {
        return match internet.uplink {
            Some(uplink) if uplink != ingress => Ok(PublicNext::Uplink(uplink)),
            _ => Err(DropReason::NoSuchHost),
        };
    };
    let target = match eip.binding {
        EipBinding::Unbound => return Err(DropReason::UnboundEip),
        EipBinding::NatGateway { vpc, gateway } => {
            let pool = tables
                .vpcs
                .get(vpc)
                .and_then(|v| v.nat_gateways.get(gateway))
                .and_then(|g| g.pool_of(dst))
                .ok_or(DropReason::UnboundEip)?;
            EipTarget::NatGateway { vpc, gateway, pool }
        }
        EipBinding::Instance { vpc, instance } => {
            tables.vpcs.get(vpc).ok_or(DropReason::UnboundEip)?;
            EipTarget::OneToOne { vpc, instance }
        }
    };
    Ok(PublicNext::Eip(target))
}
