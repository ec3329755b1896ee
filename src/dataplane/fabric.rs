//! The fabric: one [`Fabric::handle`] call per packet.
//!
//! Pipeline: port lookup -> IPv4 parse and header checks -> anti-spoofing -> martian filter ->
//! the sender's routing domain (its VPC's route table, or the public segment) -> delivery with an
//! MTU check. Inside a VPC the fabric is not a visible hop (no TTL decrement, as in the clouds);
//! the subnet gateway `.1` answers ICMP echo. NAT gateways and EIP bindings plug in where
//! `TargetNotBuilt` is returned today.

use std::net::Ipv4Addr;
use std::sync::Arc;

use smoltcp::wire::Ipv4Packet;

use super::icmp::{self, IcmpError};
use super::{Counters, DropReason, PortId, Verdict};
use crate::tables::{PortInfo, PortOwner, Tables, VpcTable};
use crate::time::Instant;
use crate::topology::plan::{EipBinding, RouteTargetPlan};

/// The dataplane state: compiled tables plus counters (and, with the NAT gateway, connection
/// tables). One `Fabric` is owned by one task; it is not shared between threads.
#[derive(Debug)]
pub struct Fabric {
    tables: Arc<Tables>,
    counters: Counters,
}

/// The checked facts about a packet the pipeline routes on.
#[derive(Debug, Clone, Copy)]
struct Header {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// The IP total length: trailing bytes beyond it are not forwarded.
    total_len: usize,
    dont_frag: bool,
}

/// Where the routing step sends a packet.
enum Next {
    Deliver(PortId),
    /// The subnet gateway of `vpc`'s subnet with this address answers.
    Gateway,
}

impl Fabric {
    pub fn new(tables: Arc<Tables>) -> Self {
        let counters = Counters::new(tables.ports.len());
        Fabric { tables, counters }
    }

    /// Handles one packet that arrived on `ingress`.
    ///
    /// The packet is `buf[..len]`; `buf` may be longer, and should be at least
    /// [`super::MIN_BUFFER`] bytes so that generated replies fit (otherwise they are dropped as
    /// `BufferTooSmall`). Call it for every packet a port reads, in arrival order, with a `now`
    /// that never goes backwards. The returned verdict refers to the same buffer; every drop has
    /// been counted. Never panics, whatever the bytes.
    pub fn handle(&mut self, now: Instant, ingress: PortId, buf: &mut [u8], len: usize) -> Verdict {
        let verdict = self.pipeline(now, ingress, buf, len);
        match verdict {
            Verdict::Forward { port, len } | Verdict::Reply { port, len } => {
                self.counters.count_tx(port, len)
            }
            Verdict::Drop(reason) => self.counters.count_drop(ingress, reason),
        }
        verdict
    }

    /// Handles a batch of packets from one port: `packets[i]` is `(buffer, len)`, and the verdict
    /// for it is written to `verdicts[i]` (which must be at least as long).
    pub fn handle_batch(
        &mut self,
        now: Instant,
        ingress: PortId,
        packets: &mut [(&mut [u8], usize)],
        verdicts: &mut [Verdict],
    ) {
        for ((buf, len), v) in packets.iter_mut().zip(verdicts.iter_mut()) {
            *v = self.handle(now, ingress, buf, *len);
        }
    }

    fn pipeline(&mut self, _now: Instant, ingress: PortId, buf: &mut [u8], len: usize) -> Verdict {
        let tables = &*self.tables;
        let Some(port) = tables.port(ingress) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let len = len.min(buf.len());
        self.counters.count_rx(ingress, len);
        let header = match check_header(&buf[..len]) {
            Ok(h) => h,
            Err(reason) => return Verdict::Drop(reason),
        };
        if header.src != port.addr {
            return Verdict::Drop(DropReason::Spoofed);
        }
        if is_martian(header.dst) {
            return Verdict::Drop(DropReason::Martian);
        }
        let next = match port.owner {
            PortOwner::Instance { vpc, subnet, .. } => route_in_vpc(
                &tables.vpcs[vpc as usize],
                subnet as usize,
                port,
                header.dst,
            ),
            PortOwner::Host { .. } => route_on_internet(tables, header.dst),
        };
        match next {
            Ok(Next::Deliver(egress)) => deliver(tables, ingress, egress, buf, header),
            Ok(Next::Gateway) => match icmp::echo_reply_in_place(buf, header.total_len) {
                Ok(len) => Verdict::Reply { port: ingress, len },
                Err(reason) => Verdict::Drop(reason),
            },
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// The next time [`Fabric::handle_timeout`] must be called; `None` while nothing expires
    /// (the fabric keeps no per-flow state until the NAT gateway's connection table arrives).
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Runs the timers due at `now`. Call it when `now` reaches [`Fabric::poll_timeout`].
    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Swaps in new tables between two packets: the next `handle` sees only the new ones.
    pub fn swap_tables(&mut self, tables: Arc<Tables>) {
        self.counters.resize(tables.ports.len());
        self.tables = tables;
    }
}

/// Checks the IPv4 header: version, lengths, checksum. Trailing bytes past the total length are
/// tolerated (and not forwarded).
fn check_header(pkt: &[u8]) -> Result<Header, DropReason> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {}
        Some(6) => return Err(DropReason::Ipv6),
        Some(_) => return Err(DropReason::NotIp),
        None => return Err(DropReason::Truncated),
    }
    if pkt.len() < 20 {
        return Err(DropReason::Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(pkt);
    let header_len = usize::from(ip.header_len());
    let total_len = usize::from(ip.total_len());
    if header_len < 20 || total_len < header_len {
        return Err(DropReason::BadHeader);
    }
    if pkt.len() < total_len || pkt.len() < header_len {
        return Err(DropReason::Truncated);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    Ok(Header {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        total_len,
        dont_frag: ip.dont_frag(),
    })
}

/// Destinations no VPC or public segment delivers to: there is no broadcast or multicast in a VPC.
fn is_martian(dst: Ipv4Addr) -> bool {
    dst.is_unspecified()
        || dst.is_broadcast()
        || dst.is_multicast()
        || dst.is_loopback()
        || dst.octets()[0] == 0
        || dst.octets()[0] >= 240
}

/// Routes a packet from an instance in `subnet` of `vpc` by that subnet's route table.
fn route_in_vpc(
    vpc: &VpcTable,
    subnet: usize,
    port: &PortInfo,
    dst: Ipv4Addr,
) -> Result<Next, DropReason> {
    let table = vpc
        .subnets
        .get(subnet)
        .and_then(|s| vpc.route_tables.get(s.route_table as usize))
        .ok_or(DropReason::NoRoute)?;
    let route = table.lookup(dst).ok_or(DropReason::NoRoute)?;
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
            Some(_) => Err(DropReason::TargetNotBuilt),
            None => Err(DropReason::NoPublicAddress),
        },
        RouteTargetPlan::Nat(_) => Err(DropReason::TargetNotBuilt),
    }
}

/// Routes a packet sent by a public host: to another public host, or to an EIP.
fn route_on_internet(tables: &Tables, dst: Ipv4Addr) -> Result<Next, DropReason> {
    if let Some(egress) = tables.internet.hosts.get(&dst) {
        return Ok(Next::Deliver(*egress));
    }
    match tables.internet.eips.get(&dst).map(|e| e.binding) {
        Some(EipBinding::Unbound) => Err(DropReason::UnboundEip),
        Some(EipBinding::Instance { .. } | EipBinding::NatGateway { .. }) => {
            Err(DropReason::TargetNotBuilt)
        }
        None => Err(DropReason::NoSuchHost),
    }
}

/// Final step: the egress port's MTU. Too big with DF set: ICMP fragmentation-needed from the
/// sender's gateway (so path-MTU discovery works); too big without DF: dropped and counted.
fn deliver(
    tables: &Tables,
    ingress: PortId,
    egress: PortId,
    buf: &mut [u8],
    header: Header,
) -> Verdict {
    let Some(out) = tables.port(egress) else {
        return Verdict::Drop(DropReason::UnknownPort);
    };
    if header.total_len > out.mtu as usize {
        if !header.dont_frag {
            return Verdict::Drop(DropReason::TooBig);
        }
        let Some(hop) = tables
            .port(ingress)
            .and_then(|from| sender_gateway(tables, from))
        else {
            return Verdict::Drop(DropReason::TooBig);
        };
        let mtu = out.mtu.min(u32::from(u16::MAX)) as u16;
        return match icmp::write_error(buf, header.total_len, hop, IcmpError::FragNeeded { mtu }) {
            Ok(len) => Verdict::Reply { port: ingress, len },
            Err(reason) => Verdict::Drop(reason),
        };
    }
    Verdict::Forward {
        port: egress,
        len: header.total_len,
    }
}

/// The address a visible hop near `port` answers from: its subnet's gateway, or for a public host
/// the first address of the public segment.
fn sender_gateway(tables: &Tables, port: &PortInfo) -> Option<Ipv4Addr> {
    match port.owner {
        PortOwner::Instance { vpc, subnet, .. } => tables
            .vpcs
            .get(vpc as usize)?
            .subnets
            .get(subnet as usize)
            .map(|s| s.gateway),
        PortOwner::Host { .. } => Some(tables.internet.cidr.gateway()),
    }
}
