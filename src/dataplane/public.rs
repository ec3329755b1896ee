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
use crate::tables::EipBinding;
use crate::tables::Tables;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::UPLINK_PORT_NAME;
    use crate::topology;

    /// VPC `v`: `i0` behind NAT gateway `gw` (pools: `n1` for s0, `n2` for the rest), `i1` with
    /// the 1:1 EIP `one`; an unbound EIP; host `h`; `{uplink}`.
    const TEXT: &str = r#"
[[vpc]]
name = "v"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s0"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "pub"
  cidr = "10.0.9.0/24"
  [[vpc.nat_gateway]]
  name = "gw"
  subnet = "pub"
  eips = ["n1", "n2"]
  snat = [{ source = "10.0.1.0/24", eips = ["n1"] }, { source = "10.0.0.0/16", eips = ["n2"] }]
  [[vpc.instance]]
  name = "i0"
  subnet = "s0"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "i1"
  subnet = "pub"
  ip = "10.0.9.10"
  eip = "one"
[[eip]]
name = "n1"
address = "203.0.113.10"
[[eip]]
name = "n2"
address = "203.0.113.11"
[[eip]]
name = "one"
address = "203.0.113.20"
[[eip]]
name = "spare"
address = "203.0.113.99"
[internet]
{uplink}
  [[internet.host]]
  name = "h"
  ip = "198.51.100.10"
"#;

    fn tables(uplink: bool) -> Tables {
        let text = TEXT.replace("{uplink}", if uplink { "uplink = \"host\"" } else { "" });
        crate::topology::compile::tables(&topology::parse("public.toml", &text).unwrap())
    }

    fn next(t: &Tables, from: &str, dst: [u8; 4]) -> Result<PublicNext, DropReason> {
        public_next(t, t.port_named(from).unwrap(), Ipv4Addr::from(dst))
    }

    #[test]
    fn hosts_and_eips_by_binding() {
        let t = tables(false);
        let h = t.port_named("internet/h").unwrap();
        assert_eq!(
            next(&t, "v/i0", [198, 51, 100, 10]),
            Ok(PublicNext::Host(h))
        );
        let gw = |pool| {
            Ok(PublicNext::Eip(EipTarget::NatGateway {
                vpc: 0,
                gateway: 0,
                pool,
            }))
        };
        // Each EIP goes to the core of the pool that holds it.
        assert_eq!(next(&t, "internet/h", [203, 0, 113, 10]), gw(0));
        assert_eq!(next(&t, "internet/h", [203, 0, 113, 11]), gw(1));
        assert_eq!(
            next(&t, "v/i0", [203, 0, 113, 20]),
            Ok(PublicNext::Eip(EipTarget::OneToOne {
                vpc: 0,
                instance: 1
            }))
        );
        assert_eq!(
            next(&t, "internet/h", [203, 0, 113, 99]),
            Err(DropReason::UnboundEip)
        );
        assert_eq!(
            next(&t, "internet/h", [192, 0, 2, 1]),
            Err(DropReason::NoSuchHost)
        );
    }

    #[test]
    fn the_uplink_takes_what_nobody_owns_but_never_its_own_packets() {
        let t = tables(true);
        let uplink = t.port_named(UPLINK_PORT_NAME).unwrap();
        assert_eq!(
            next(&t, "v/i0", [192, 0, 2, 1]),
            Ok(PublicNext::Uplink(uplink))
        );
        assert_eq!(
            next(&t, "internet/h", [192, 0, 2, 1]),
            Ok(PublicNext::Uplink(uplink))
        );
        assert_eq!(
            next(&t, UPLINK_PORT_NAME, [192, 0, 2, 1]),
            Err(DropReason::NoSuchHost)
        );
        // Hosts and EIPs stay the segment's own.
        let h = t.port_named("internet/h").unwrap();
        assert_eq!(
            next(&t, UPLINK_PORT_NAME, [198, 51, 100, 10]),
            Ok(PublicNext::Host(h))
        );
        assert_eq!(
            next(&t, UPLINK_PORT_NAME, [203, 0, 113, 99]),
            Err(DropReason::UnboundEip)
        );
    }
}
