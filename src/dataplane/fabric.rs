//! The fabric: one [`Fabric::handle`] call per packet.
//!
//! Pipeline: port lookup -> IPv4 header checks -> anti-spoofing -> martian filter -> the sender's
//! routing domain (its VPC's route table, or the public segment) -> NAT where the route or the
//! destination EIP says so -> delivery with an MTU check.
//!
//! Hops: inside a VPC the fabric is not a visible hop (no TTL decrement, as in the clouds); the
//! subnet gateway `.1` answers ICMP echo. A NAT gateway is one visible hop in each direction: it
//! decrements the TTL and answers an expiring packet with Time Exceeded from its private address
//! (towards the VPC) or from the EIP (towards the internet), so `traceroute` shows it. The
//! internet gateway's 1:1 EIP translation is not a visible hop (like a cloud's public IP).
//! Hairpinning (RFC 4787 REQ-9): a translated packet whose destination is an EIP goes back in
//! through that EIP's binding, so the receiver sees the sender's external address.

use std::net::Ipv4Addr;
use std::sync::Arc;

use smoltcp::wire::Ipv4Packet;

use super::gateways::{Gateways, ReconcileProblem};
use super::icmp::{self, IcmpError};
use super::nat::{NatDrop, Translated};
use super::{Counters, DropReason, PortId, Verdict, checksum};
use crate::tables::{PortInfo, PortOwner, Tables, VpcTable};
use crate::time::Instant;
use crate::topology::plan::{EipBinding, RouteTargetPlan};

/// The dataplane state: compiled tables, counters and the NAT cores. One `Fabric` is owned by one
/// task; it is not shared between threads.
#[derive(Debug)]
pub struct Fabric {
    tables: Arc<Tables>,
    counters: Counters,
    gateways: Gateways,
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

/// Where the VPC routing step sends a packet.
enum Next {
    Deliver(PortId),
    /// The subnet gateway answers.
    Gateway,
    /// NAT gateway `n` of the VPC.
    Nat(usize),
    /// The internet gateway, for an instance with a 1:1 EIP.
    InternetGateway,
}

/// Seed used by [`Fabric::new`]: fine for tests and the simulator, not for a runtime facing
/// guests, which must use [`Fabric::with_seed`] with an unpredictable value.
const DETERMINISTIC_SEED: u64 = 0x7670_6364;

impl Fabric {
    /// A fabric with a fixed hash and port-allocation seed (reproducible; for tests and the
    /// simulator).
    pub fn new(tables: Arc<Tables>) -> Self {
        Fabric::with_seed(tables, DETERMINISTIC_SEED)
    }

    /// A fabric whose NAT hashers and port choices are keyed by `seed`. A runtime that serves
    /// real guests must pass an unpredictable seed (guests choose 5-tuples and could otherwise
    /// aim at one hash bucket or predict external ports).
    pub fn with_seed(tables: Arc<Tables>, seed: u64) -> Self {
        let counters = Counters::new(tables.ports.len());
        // Validation guarantees DNAT rules do not collide, so a fresh build reports nothing.
        let (gateways, _problems) = Gateways::build(&tables, seed);
        Fabric {
            tables,
            counters,
            gateways,
        }
    }

    /// Handles one packet that arrived on `ingress`.
    ///
    /// The packet is `buf[..len]`; `buf` may be longer, and should be at least
    /// [`super::MIN_BUFFER`] bytes so that generated replies fit (otherwise they are dropped as
    /// `BufferTooSmall`). Call it for every packet a port reads, in arrival order, with a `now`
    /// that never goes backwards. The returned verdict refers to the same buffer; every drop has
    /// been counted. Never panics, whatever the bytes.
    pub fn handle(&mut self, now: Instant, ingress: PortId, buf: &mut [u8], len: usize) -> Verdict {
        let Fabric {
            tables,
            counters,
            gateways,
        } = self;
        let verdict = pipeline(tables, counters, gateways, now, ingress, buf, len);
        match verdict {
            Verdict::Forward { port, len } | Verdict::Reply { port, len } => {
                counters.count_tx(port, len)
            }
            Verdict::Drop(reason) => counters.count_drop(ingress, reason),
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

    /// The next time [`Fabric::handle_timeout`] must be called (connection expiry), if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.gateways.poll_timeout()
    }

    /// Runs the timers due at `now`. Call it when `now` reaches [`Fabric::poll_timeout`]; calling
    /// it late is safe (expired flows are never let through in between).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.gateways.handle_timeout(now);
    }

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The NAT cores: connections and counters per VPC and gateway.
    pub fn gateways(&self) -> &Gateways {
        &self.gateways
    }

    /// Swaps in new tables between two packets: the next `handle` sees only the new ones. NAT
    /// state follows (see [`Gateways::reconcile`]): flows of unchanged gateways, DNAT rules and
    /// 1:1 EIPs keep flowing; what the change removed is cleaned up. Returns what could not be
    /// applied (for instance a DNAT port held by a live SNAT mapping).
    pub fn swap_tables(&mut self, now: Instant, tables: Arc<Tables>) -> Vec<ReconcileProblem> {
        let problems = self.gateways.reconcile(now, &self.tables, &tables);
        self.counters.resize(tables.ports.len());
        self.tables = tables;
        problems
    }
}

fn pipeline(
    tables: &Tables,
    counters: &mut Counters,
    gateways: &mut Gateways,
    now: Instant,
    ingress: PortId,
    buf: &mut [u8],
    len: usize,
) -> Verdict {
    let Some(port) = tables.port(ingress) else {
        return Verdict::Drop(DropReason::UnknownPort);
    };
    let len = len.min(buf.len());
    counters.count_rx(ingress, len);
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
    let mut path = Path {
        tables,
        gateways,
        now,
        ingress,
        buf,
        header,
    };
    match port.owner {
        PortOwner::Instance { vpc, subnet, .. } => {
            let vpc = vpc as usize;
            match route_in_vpc(&tables.vpcs[vpc], subnet as usize, port, header.dst) {
                Ok(Next::Deliver(egress)) => deliver(tables, ingress, egress, path.buf, header),
                Ok(Next::Gateway) => match icmp::echo_reply_in_place(path.buf, header.total_len) {
                    Ok(len) => Verdict::Reply { port: ingress, len },
                    Err(reason) => Verdict::Drop(reason),
                },
                Ok(Next::Nat(g)) => path.through_nat_gateway(vpc, g),
                Ok(Next::InternetGateway) => path.through_internet_gateway(vpc),
                Err(reason) => Verdict::Drop(reason),
            }
        }
        PortOwner::Host { .. } => path.on_public_segment(true),
    }
}

/// One packet on its way through NAT: the state the steps share.
struct Path<'a> {
    tables: &'a Tables,
    gateways: &'a mut Gateways,
    now: Instant,
    ingress: PortId,
    buf: &'a mut [u8],
    header: Header,
}

impl Path<'_> {
    /// Private -> public through NAT gateway `g` of `vpc`: the visible hop, the SNAT pool for the
    /// source, translation, then the public segment.
    fn through_nat_gateway(&mut self, vpc: usize, g: usize) -> Verdict {
        let Some(table) = self.tables.vpcs[vpc].nat_gateways.get(g) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(pool) = table.pool_for(self.header.src) else {
            return Verdict::Drop(DropReason::NoSnatRule);
        };
        if let Some(v) = self.public_mtu_check(table.ip) {
            return v;
        }
        if let Err(v) = visible_hop(self.buf, self.header, table.ip, self.ingress, true) {
            return v;
        }
        let Some(core) = self.gateways.nat(vpc, g, pool) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let outcome = core.outbound(
            self.now,
            self.ingress.0,
            &mut self.buf[..self.header.total_len],
        );
        let answer = matches!(outcome, Err(d) if core.refusal_reply(d));
        self.after_outbound(answer, table.ip, outcome)
    }

    /// Private -> public for an instance with a 1:1 EIP: translation only, no visible hop.
    fn through_internet_gateway(&mut self, vpc: usize) -> Verdict {
        let hop = self.tables.vpcs[vpc]
            .subnets
            .first()
            .map_or(Ipv4Addr::UNSPECIFIED, |s| s.gateway);
        if let Some(v) = self.public_mtu_check(hop) {
            return v;
        }
        let Some(core) = self.gateways.igw(vpc) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let outcome = core.outbound(
            self.now,
            self.ingress.0,
            &mut self.buf[..self.header.total_len],
        );
        let answer = matches!(outcome, Err(d) if core.refusal_reply(d));
        self.after_outbound(answer, hop, outcome)
    }

    /// Continues after outbound translation; `answer_refusal` says a refused new flow gets ICMP
    /// "administratively prohibited" from `hop`.
    fn after_outbound(
        &mut self,
        answer_refusal: bool,
        hop: Ipv4Addr,
        outcome: Result<Translated, NatDrop>,
    ) -> Verdict {
        match outcome {
            Ok(Translated::Forward { .. }) => {
                // The source is now public; the destination is unchanged.
                self.header.src = Ipv4Packet::new_unchecked(&self.buf[..]).src_addr();
                self.on_public_segment(false)
            }
            Ok(Translated::ReplyRst { len }) => Verdict::Reply {
                port: self.ingress,
                len,
            },
            Err(drop) if answer_refusal => {
                match icmp::write_error(
                    self.buf,
                    self.header.total_len,
                    hop,
                    IcmpError::AdminProhibited,
                ) {
                    Ok(len) => Verdict::Reply {
                        port: self.ingress,
                        len,
                    },
                    Err(_) => Verdict::Drop(drop.into()),
                }
            }
            Err(drop) => Verdict::Drop(drop.into()),
        }
    }

    /// Path MTU towards a public host, checked before translation so that fragmentation-needed
    /// quotes the sender's own header.
    fn public_mtu_check(&mut self, hop: Ipv4Addr) -> Option<Verdict> {
        let egress = self.tables.internet.hosts.get(&self.header.dst)?;
        let mtu = self.tables.port(*egress)?.mtu;
        too_big(self.buf, self.header, mtu, hop, self.ingress)
    }

    /// The public segment: deliver to a host, or back in through an EIP (ingress or hairpin).
    /// `from_host` is false for a packet that just left a VPC through NAT.
    fn on_public_segment(&mut self, from_host: bool) -> Verdict {
        let dst = self.header.dst;
        if let Some(egress) = self.tables.internet.hosts.get(&dst) {
            return deliver(self.tables, self.ingress, *egress, self.buf, self.header);
        }
        let Some(eip) = self.tables.internet.eips.get(&dst) else {
            return Verdict::Drop(DropReason::NoSuchHost);
        };
        match eip.binding {
            EipBinding::Unbound => Verdict::Drop(DropReason::UnboundEip),
            EipBinding::NatGateway { vpc, gateway } => {
                let Some(table) = self
                    .tables
                    .vpcs
                    .get(vpc)
                    .and_then(|v| v.nat_gateways.get(gateway))
                else {
                    return Verdict::Drop(DropReason::UnboundEip);
                };
                let Some(pool) = table.pool_of(dst) else {
                    return Verdict::Drop(DropReason::UnboundEip);
                };
                // Only a host's packet can be answered with Time Exceeded from the EIP: a
                // hairpinned packet's source is an EIP, not its sender.
                if let Err(v) = visible_hop(self.buf, self.header, dst, self.ingress, from_host) {
                    return v;
                }
                let Some(core) = self.gateways.nat(vpc, gateway, pool) else {
                    return Verdict::Drop(DropReason::UnboundEip);
                };
                let outcome = core.inbound(self.now, &mut self.buf[..self.header.total_len]);
                self.deliver_into_vpc(vpc, outcome)
            }
            EipBinding::Instance { vpc, .. } => {
                let Some(core) = self.gateways.igw(vpc) else {
                    return Verdict::Drop(DropReason::UnboundEip);
                };
                let outcome = core.inbound(self.now, &mut self.buf[..self.header.total_len]);
                self.deliver_into_vpc(vpc, outcome)
            }
        }
    }

    /// Delivers an inbound-translated packet to its instance in `vpc`.
    fn deliver_into_vpc(&mut self, vpc: usize, outcome: Result<Translated, NatDrop>) -> Verdict {
        match outcome {
            Ok(Translated::Forward { internal, .. }) => {
                let Some(egress) = self
                    .tables
                    .vpcs
                    .get(vpc)
                    .and_then(|v| v.hosts.get(&internal))
                else {
                    return Verdict::Drop(DropReason::NoSuchHost);
                };
                match self.tables.port(*egress) {
                    // Translated already: an error could not quote the sender's header, so an
                    // oversized inbound packet is a counted drop.
                    Some(p) if self.header.total_len > p.mtu as usize => {
                        Verdict::Drop(DropReason::TooBig)
                    }
                    Some(_) => Verdict::Forward {
                        port: *egress,
                        len: self.header.total_len,
                    },
                    None => Verdict::Drop(DropReason::UnknownPort),
                }
            }
            Ok(Translated::ReplyRst { len }) => Verdict::Reply {
                port: self.ingress,
                len,
            },
            Err(drop) => Verdict::Drop(drop.into()),
        }
    }
}

/// A visible hop: a packet whose TTL would expire here is answered with Time Exceeded from
/// `from` (when `may_reply`) or dropped; otherwise the TTL is decremented and the header checksum
/// patched (RFC 1624).
fn visible_hop(
    buf: &mut [u8],
    header: Header,
    from: Ipv4Addr,
    ingress: PortId,
    may_reply: bool,
) -> Result<(), Verdict> {
    let ttl = buf[8];
    if ttl <= 1 {
        if !may_reply {
            return Err(Verdict::Drop(DropReason::TtlExceeded));
        }
        return Err(
            match icmp::write_error(buf, header.total_len, from, IcmpError::TimeExceeded) {
                Ok(len) => Verdict::Reply { port: ingress, len },
                Err(reason) => Verdict::Drop(reason),
            },
        );
    }
    let old = u16::from_be_bytes([buf[8], buf[9]]);
    buf[8] = ttl - 1;
    let new = u16::from_be_bytes([buf[8], buf[9]]);
    let sum = u16::from_be_bytes([buf[10], buf[11]]);
    buf[10..12].copy_from_slice(&checksum::update16(sum, old, new).to_be_bytes());
    Ok(())
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
            Some(_) => Ok(Next::InternetGateway),
            None => Err(DropReason::NoPublicAddress),
        },
        RouteTargetPlan::Nat(g) => Ok(Next::Nat(g)),
    }
}

/// A packet larger than `mtu`: with DF, ICMP fragmentation-needed from `hop` back to the sender
/// (so path-MTU discovery works); without DF, a counted drop (the fabric does not fragment).
fn too_big(
    buf: &mut [u8],
    header: Header,
    mtu: u32,
    hop: Ipv4Addr,
    ingress: PortId,
) -> Option<Verdict> {
    if header.total_len <= mtu as usize {
        return None;
    }
    if !header.dont_frag {
        return Some(Verdict::Drop(DropReason::TooBig));
    }
    let mtu = mtu.min(u32::from(u16::MAX)) as u16;
    Some(
        match icmp::write_error(buf, header.total_len, hop, IcmpError::FragNeeded { mtu }) {
            Ok(len) => Verdict::Reply { port: ingress, len },
            Err(reason) => Verdict::Drop(reason),
        },
    )
}

/// Final step on a segment: the egress port's MTU, then forward.
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
    let hop = tables
        .port(ingress)
        .and_then(|from| sender_gateway(tables, from))
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    if let Some(v) = too_big(buf, header, out.mtu, hop, ingress) {
        return v;
    }
    Verdict::Forward {
        port: egress,
        len: header.total_len,
    }
}

/// The address a hop near `port` answers from: its subnet's gateway, or for a public host the
/// first address of the public segment.
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
