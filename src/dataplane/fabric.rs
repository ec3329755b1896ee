//! The fabric: one [`Fabric::handle`] call per packet.
//!
//! Pipeline: port lookup -> IPv4 header checks -> anti-spoofing -> martian filter -> the sender's
//! routing domain (its VPC's route table, or the public segment) -> security groups and network
//! ACLs -> NAT where the route or the destination EIP says so -> delivery with an MTU check.
//!
//! Filters (the decisions live in `firewall` and `route`, shared with `vpcd explain`): a packet
//! between two instances of a VPC passes the sender's egress security groups, the two subnets'
//! network ACLs when it crosses a subnet edge, and the receiver's ingress groups; a packet leaving
//! through NAT passes the sender's egress groups and its subnet's outbound ACL before
//! translation; a packet entering through an EIP passes the receiver's subnet inbound ACL and
//! ingress groups after translation. Packets of tracked flows skip the security groups (one
//! lookup). The flow table learns a new flow only once its first packet is forwarded
//! ([`Pending`], committed at the end of [`pipeline`]). The subnet gateway's echo reply and every
//! packet the fabric generates are not filtered.
//!
//! Hops: inside a VPC the fabric is not a visible hop (no TTL decrement, as in the clouds); the
//! subnet gateway `.1` answers ICMP echo. A NAT gateway is one visible hop in each direction: it
//! decrements the TTL and answers an expiring packet with Time Exceeded from its private address
//! (towards the VPC) or from the EIP (towards the internet), so `traceroute` shows it. The
//! internet gateway's 1:1 EIP translation is not a visible hop (like a cloud's public IP).
//! Hairpinning (RFC 4787 REQ-9): a translated packet whose destination is an EIP goes back in
//! through that EIP's binding, so the receiver sees the sender's external address.
//!
//! The uplink (`[internet] uplink = "host"`) is one more port on the public segment: packets
//! towards an address no host or EIP owns are forwarded to it (after NAT, security groups, the
//! VPC's egress allow-list and ACLs, exactly like packets to a simulated host), and what it sends
//! enters like a public host's packet — from any source address the segment does not own.

use std::net::Ipv4Addr;
use std::sync::Arc;

use smoltcp::wire::Ipv4Packet;

use super::firewall::{Facts, Firewall, FlowConfig, Pending, Side};
use super::gateways::{Gateways, ReconcileProblem};
use super::icmp::{self, IcmpError};
use super::nat::{NatDrop, Translated};
use super::route::{Next, is_martian, route_in_vpc};
use super::{Counters, DropReason, PortId, Verdict, checksum};
use crate::tables::EipBinding;
use crate::tables::{PortInfo, PortOwner, Tables};
use crate::time::Instant;

/// The dataplane state: compiled tables, counters, the NAT cores and the security groups' flow
/// tables. One `Fabric` is owned by one task; it is not shared between threads.
#[derive(Debug)]
pub struct Fabric {
    tables: Arc<Tables>,
    counters: Counters,
    gateways: Gateways,
    firewall: Firewall,
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
        Fabric::with_config(tables, seed, FlowConfig::default())
    }

    /// Like [`Fabric::with_seed`], with the security groups' flow-table limits and timeouts.
    pub fn with_config(tables: Arc<Tables>, seed: u64, flows: FlowConfig) -> Self {
        let counters = Counters::new(tables.ports.len());
        // Validation guarantees DNAT rules do not collide, so a fresh build reports nothing.
        let (gateways, _problems) = Gateways::build(&tables, seed);
        let firewall = Firewall::new(&tables, flows, seed);
        Fabric {
            tables,
            counters,
            gateways,
            firewall,
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
            firewall,
        } = self;
        let verdict = pipeline(tables, counters, gateways, firewall, now, ingress, buf, len);
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

    /// The next time [`Fabric::handle_timeout`] must be called (connection and flow expiry), if
    /// any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.gateways.poll_timeout(), self.firewall.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`. Call it when `now` reaches [`Fabric::poll_timeout`]; calling
    /// it late is safe (expired flows are never let through in between).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.gateways.handle_timeout(now);
        self.firewall.handle_timeout(now);
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

    /// The security groups' flow tables: tracked flows and counters per VPC.
    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// For the control plane's changes of NAT state (flushing sessions); not for packets.
    pub fn gateways_mut(&mut self) -> &mut Gateways {
        &mut self.gateways
    }

    /// For the control plane's changes of flow state (flushing flows); not for packets.
    pub fn firewall_mut(&mut self) -> &mut Firewall {
        &mut self.firewall
    }

    /// Swaps in new tables between two packets: the next `handle` sees only the new ones. NAT
    /// state follows (see [`Gateways::reconcile`]): flows of unchanged gateways, DNAT rules and
    /// 1:1 EIPs keep flowing; what the change removed is cleaned up. Security group and network
    /// ACL changes apply to the next packet; flows the security groups already track stay
    /// allowed until they expire (as in the clouds), new flows meet the new rules. Returns what
    /// could not be applied (for instance a DNAT port held by a live SNAT mapping).
    pub fn swap_tables(&mut self, now: Instant, tables: Arc<Tables>) -> Vec<ReconcileProblem> {
        let problems = self.gateways.reconcile(now, &self.tables, &tables);
        self.firewall.reconcile(&tables);
        self.counters.resize(tables.ports.len());
        self.tables = tables;
        problems
    }
}

#[allow(clippy::too_many_arguments)]
fn pipeline(
    tables: &Tables,
    counters: &mut Counters,
    gateways: &mut Gateways,
    firewall: &mut Firewall,
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
    let spoofed = match port.owner {
        // The outside world sends from its own addresses, never from one the segment owns, and
        // never from one no reply could reach.
        PortOwner::Uplink => tables.internet.owns(header.src) || is_martian(header.src),
        _ => header.src != port.addr,
    };
    if spoofed {
        return Verdict::Drop(DropReason::Spoofed);
    }
    if is_martian(header.dst) {
        return Verdict::Drop(DropReason::Martian);
    }
    let mut path = Path {
        tables,
        gateways,
        firewall,
        now,
        ingress,
        buf,
        header,
        pending: [Pending::Nothing; 2],
    };
    let verdict = match port.owner {
        PortOwner::Instance {
            vpc,
            subnet,
            instance,
        } => {
            let from = Side { subnet, instance };
            let vpc = vpc as usize;
            match route_in_vpc(&tables.vpcs[vpc], subnet as usize, port, header.dst) {
                Ok(Next::Deliver(egress)) => path.within_vpc(vpc, from, egress),
                Ok(Next::Gateway) => match icmp::echo_reply_in_place(path.buf, header.total_len) {
                    Ok(len) => Verdict::Reply { port: ingress, len },
                    Err(reason) => Verdict::Drop(reason),
                },
                Ok(Next::Nat(g)) => match path.leave(vpc, from) {
                    Ok(()) => path.through_nat_gateway(vpc, g),
                    Err(v) => v,
                },
                Ok(Next::InternetGateway) => match path.leave(vpc, from) {
                    Ok(()) => path.through_internet_gateway(vpc),
                    Err(v) => v,
                },
                Err(reason) => Verdict::Drop(reason),
            }
        }
        PortOwner::Host { .. } | PortOwner::Uplink => path.on_public_segment(true),
    };
    match verdict {
        Verdict::Forward { .. } => path.commit(verdict),
        other => other,
    }
}

/// One packet on its way through the fabric: the state the steps share.
struct Path<'a> {
    tables: &'a Tables,
    gateways: &'a mut Gateways,
    firewall: &'a mut Firewall,
    now: Instant,
    ingress: PortId,
    buf: &'a mut [u8],
    header: Header,
    /// Flow-table changes (leaving side, entering side) to apply if the packet is forwarded.
    pending: [Pending; 2],
}

/// The subnet and instance behind an instance port.
fn side_of(tables: &Tables, port: PortId) -> Option<Side> {
    match tables.port(port)?.owner {
        PortOwner::Instance {
            subnet, instance, ..
        } => Some(Side { subnet, instance }),
        PortOwner::Host { .. } | PortOwner::Uplink => None,
    }
}

impl Path<'_> {
    /// The facts the filters read from the packet as it is now (before or after translation).
    fn facts(&self) -> Facts {
        Facts::parse(&self.buf[..self.header.total_len.min(self.buf.len())])
    }

    /// Instance to instance inside `vpc`: security groups both sides, ACLs at a subnet edge.
    fn within_vpc(&mut self, vpc: usize, from: Side, egress: PortId) -> Verdict {
        let Some(to) = side_of(self.tables, egress) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let facts = self.facts();
        let Some(table) = self.tables.vpcs.get(vpc) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        match self
            .firewall
            .check_within(vpc, table, from, to, &facts, self.now)
        {
            Ok(p) => self.pending[0] = p,
            Err(reason) => return Verdict::Drop(reason),
        }
        deliver(self.tables, self.ingress, egress, self.buf, self.header)
    }

    /// The filters on the way out of `vpc` (egress groups, outbound ACL), before translation.
    fn leave(&mut self, vpc: usize, from: Side) -> Result<(), Verdict> {
        let facts = self.facts();
        let Some(table) = self.tables.vpcs.get(vpc) else {
            return Err(Verdict::Drop(DropReason::NoRoute));
        };
        self.pending[0] = self
            .firewall
            .check_leaving(vpc, table, from, &facts, self.now)
            .map_err(Verdict::Drop)?;
        Ok(())
    }

    /// The filters on the way into `vpc` (inbound ACL, ingress groups), after translation.
    fn enter(&mut self, vpc: usize, egress: PortId) -> Result<(), Verdict> {
        let Some(to) = side_of(self.tables, egress) else {
            return Err(Verdict::Drop(DropReason::UnknownPort));
        };
        let facts = self.facts();
        let Some(table) = self.tables.vpcs.get(vpc) else {
            return Err(Verdict::Drop(DropReason::NoRoute));
        };
        self.pending[1] = self
            .firewall
            .check_entering(vpc, table, to, &facts, self.now)
            .map_err(Verdict::Drop)?;
        Ok(())
    }

    /// The packet is forwarded: the flow tables learn what it opened or refreshed. A flow that
    /// no longer fits (a hairpin inside one VPC taking the last two slots) is a counted drop.
    fn commit(&mut self, verdict: Verdict) -> Verdict {
        for p in self.pending {
            if let Err(reason) = self.firewall.commit(p, self.now) {
                return Verdict::Drop(reason);
            }
        }
        verdict
    }

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

    /// Path MTU towards a public host or the uplink, checked before translation so that
    /// fragmentation-needed quotes the sender's own header.
    fn public_mtu_check(&mut self, hop: Ipv4Addr) -> Option<Verdict> {
        let dst = self.header.dst;
        let egress = match self.tables.internet.hosts.get(&dst) {
            Some(p) => *p,
            None if !self.tables.internet.eips.contains_key(&dst) => self.tables.internet.uplink?,
            None => return None,
        };
        let mtu = self.tables.port(egress)?.mtu;
        too_big(self.buf, self.header, mtu, hop, self.ingress)
    }

    /// The public segment: deliver to a host, back in through an EIP (ingress or hairpin), or
    /// out through the uplink when neither owns the destination (never back to the uplink a
    /// packet came from). `from_host` is false for a packet that just left a VPC through NAT.
    fn on_public_segment(&mut self, from_host: bool) -> Verdict {
        let dst = self.header.dst;
        if let Some(egress) = self.tables.internet.hosts.get(&dst) {
            return deliver(self.tables, self.ingress, *egress, self.buf, self.header);
        }
        let Some(eip) = self.tables.internet.eips.get(&dst) else {
            return match self.tables.internet.uplink {
                Some(uplink) if uplink != self.ingress => {
                    deliver(self.tables, self.ingress, uplink, self.buf, self.header)
                }
                _ => Verdict::Drop(DropReason::NoSuchHost),
            };
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
                let egress = *egress;
                if let Err(v) = self.enter(vpc, egress) {
                    return v;
                }
                match self.tables.port(egress) {
                    // Translated already: an error could not quote the sender's header, so an
                    // oversized inbound packet is a counted drop.
                    Some(p) if self.header.total_len > p.mtu as usize => {
                        Verdict::Drop(DropReason::TooBig)
                    }
                    Some(_) => Verdict::Forward {
                        port: egress,
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
    if header.total_len > out.mtu as usize {
        // Only an oversized packet needs the address its error comes from.
        let hop = tables
            .port(ingress)
            .and_then(|from| sender_gateway(tables, from))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        if let Some(v) = too_big(buf, header, out.mtu, hop, ingress) {
            return v;
        }
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
        PortOwner::Host { .. } | PortOwner::Uplink => Some(tables.internet.cidr.gateway()),
    }
}
