//! The fabric: one [`Fabric::handle`] call per packet.
//!
//! Pipeline: port lookup -> IPv4 header checks -> anti-spoofing -> martian filter -> the sender's
//! routing domain (its VPC's route table, or the public segment) -> security groups and network
//! ACLs -> NAT where the route or the destination EIP says so -> delivery with an MTU check.
//!
//! Filters (the decisions live in `firewall`, `route` and `public`, shared with `vpcd explain`):
//! a packet between two instances of a VPC passes the sender's egress security groups, the two
//! subnets' network ACLs when it crosses a subnet edge, and the receiver's ingress groups; a
//! packet leaving through NAT passes the sender's egress groups and its subnet's outbound ACL
//! before translation; a packet entering through an EIP passes the receiver's subnet inbound ACL
//! and ingress groups after translation. Packets of tracked flows skip the security groups (one
//! lookup). The flow table learns a new flow only once its first packet is forwarded
//! ([`Pending`], committed after the last stage). The subnet gateway's echo reply and every
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
//! The resolver: every VPC has one more port, its resolver (`PortOwner::Resolver`). A packet from
//! an instance to base + 2 or 169.254.169.253 goes there before any route, security group or
//! ACL (as in AWS, where neither filters the Amazon DNS server); what the resolver sends is
//! spoof-checked against those two addresses and delivered only to its own VPC's instances.
//!
//! The uplink (`[internet] uplink = "host"`) is one more port on the public segment: packets
//! towards an address no host or EIP owns are forwarded to it (after NAT, security groups, the
//! VPC's egress allow-list and ACLs, exactly like packets to a simulated host), and what it sends
//! enters like a public host's packet — from any source address the segment does not own.
//!
//! Stages: the state is per VPC, and one stage touches the NAT cores and the flow table of one
//! VPC only (a `VpcState`), so that a shard can later own a set of VPCs. A packet is handled in
//! at most two stages, run one after the other by [`Fabric::handle`]:
//! 1. The sender's stage. From an instance of VPC A: A's route table, then delivery inside A, the
//!    subnet gateway's echo reply, or A's egress filters and outbound NAT up to the public
//!    segment (`from_instance`). From a public host or the uplink: the public segment only, no
//!    VPC state (`on_public_segment`). The public segment's decision is
//!    [`super::public::public_next`], shared with `vpcd explain`: a host or the uplink ends the
//!    packet here; an EIP ends the stage with `Stage::Enter`, naming the VPC behind it.
//! 2. The destination's stage, only after `Stage::Enter`: VPC B's NAT (the gateway's visible hop
//!    and inbound translation, or the 1:1 translation), B's inbound filters and delivery
//!    (`enter_vpc`). It always decides the packet's fate. B may be A itself (a hairpin).
//!
//! Each stage writes the change it wants in its VPC's flow table ([`Pending`]) into a slot the
//! caller owns instead of applying it; the caller commits them, the sender's first, only when the packet is forwarded
//! (each commit touches only the flow table of the VPC it names). So a new flow is learnt on
//! both sides only if its first packet is delivered, as when one call did it all. A caller that
//! runs the two stages on different shards must send the first stage's `Pending` back to the
//! sender's shard once the second stage forwards.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::firewall::{Facts, Firewall, FlowConfig, Pending, Side};
use super::gateways::{Gateways, ReconcileProblem, VpcCores};
use super::icmp::{self, IcmpError};
use super::nat::{L4Checksum, NatDrop, NatGateway, Translated};
use super::offload::PacketMeta;
use super::packet::{ICMP_QUOTE_MAX, IpPacket, Ipv4Packet};
use super::public::{EipTarget, PublicNext, public_next};
use super::route::{Next, is_martian, route_in_vpc};
use super::{Counters, DropReason, PortId, Verdict};
use crate::tables::{MIN_MTU, PortInfo, PortOwner, RESOLVER_LINK_LOCAL, Tables, VpcTable};
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

/// The checked packet the pipeline routes on: the addresses and lengths of its fixed header
/// (what routing, MTU checks and delivery read) and its offload metadata. The stages that filter
/// or translate read the rest through the packet view ([`Facts::of_view`],
/// [`NatGateway::outbound_checked`]), so a packet the subnet gateway answers, or one between two
/// public hosts, reads nothing more.
#[derive(Debug, Clone, Copy)]
struct Header {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// The IP total length: trailing bytes beyond it are not forwarded.
    len: u16,
    dont_frag: bool,
    meta: PacketMeta,
    /// How translation treats the transport checksum (partial under checksum offload).
    csum: L4Checksum,
}

impl Header {
    /// The fixed header of a packet [`check_ip`] accepted, with its offload metadata (not yet
    /// checked: [`Header::check_meta`]).
    #[inline]
    fn of(ip: &Ipv4Packet<&[u8]>, meta: PacketMeta) -> Header {
        Header {
            src: ip.src(),
            dst: ip.dst(),
            len: ip.total_len(),
            dont_frag: ip.dont_frag(),
            meta,
            csum: L4Checksum::Complete,
        }
    }

    /// Checks the offload metadata against the packet `pkt` (which may complete a partial
    /// checksum in place, see [`PacketMeta::check`]).
    #[inline]
    fn check_meta(&mut self, pkt: &mut [u8]) -> Result<(), DropReason> {
        if self.meta == PacketMeta::COMPLETE {
            // What a port without offload hands in: nothing to check.
            return Ok(());
        }
        let summary = Ipv4Packet::new_unchecked(&pkt[..]).summary();
        self.csum = self.meta.check(pkt, &summary)?;
        Ok(())
    }

    /// The IP total length: trailing bytes beyond it are not forwarded.
    fn total_len(&self) -> usize {
        usize::from(self.len)
    }

    /// The largest packet this one puts on the wire (one segment of a superpacket): what the
    /// MTU applies to.
    fn wire_len(&self) -> usize {
        self.meta.wire_len(self.total_len())
    }
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

    /// Handles one ordinary packet (no segmentation offload, complete checksums) that arrived on
    /// `ingress`: [`Fabric::handle_meta`] with [`PacketMeta::COMPLETE`], for ports without
    /// offload.
    pub fn handle(&mut self, now: Instant, ingress: PortId, buf: &mut [u8], len: usize) -> Verdict {
        self.handle_meta(now, ingress, buf, len, PacketMeta::COMPLETE)
    }

    /// Handles one packet that arrived on `ingress`, with its offload metadata `meta` (a
    /// superpacket, a partial checksum: see [`super::offload`]).
    ///
    /// The packet is `buf[..len]`; `buf` may be longer, and should be at least
    /// [`super::MIN_BUFFER`] bytes so that generated replies fit (otherwise they are dropped as
    /// `BufferTooSmall`). Call it for every packet a port reads, in arrival order, with a `now`
    /// that never goes backwards. The returned verdict refers to the same buffer; every drop has
    /// been counted. [`Verdict::Forward`] hands the metadata back (a partial checksum the
    /// fabric could not keep is completed); MTU checks apply to one segment of a superpacket.
    /// Metadata that does not fit the packet is the drop `bad_offload`. Never panics, whatever
    /// the bytes.
    #[inline]
    pub fn handle_meta(
        &mut self,
        now: Instant,
        ingress: PortId,
        buf: &mut [u8],
        len: usize,
        meta: PacketMeta,
    ) -> Verdict {
        let Fabric {
            tables,
            counters,
            gateways,
            firewall,
        } = self;
        let verdict = pipeline(
            tables, counters, gateways, firewall, now, ingress, buf, len, meta,
        );
        match verdict {
            Verdict::Forward { port, len, .. } | Verdict::Reply { port, len, .. } => {
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
#[inline(always)]
fn pipeline(
    tables: &Tables,
    counters: &mut Counters,
    gateways: &mut Gateways,
    firewall: &mut Firewall,
    now: Instant,
    ingress: PortId,
    buf: &mut [u8],
    len: usize,
    meta: PacketMeta,
) -> Verdict {
    let Some(port) = tables.port(ingress) else {
        return Verdict::Drop(DropReason::UnknownPort);
    };
    let len = len.min(buf.len());
    counters.count_rx(ingress, len);
    let header = match check_ip(&buf[..len]) {
        Ok(ip) => Header::of(&ip, meta),
        Err(reason) => return Verdict::Drop(reason),
    };
    // Built once, before the checks below: the stages borrow it as it is.
    let mut pkt = Packet {
        tables,
        now,
        ingress,
        buf,
        header,
    };
    let src = pkt.header.src;
    let spoofed = match port.owner {
        // The outside world sends from its own addresses, never from one the segment owns, and
        // never from one no reply could reach.
        PortOwner::Uplink => tables.internet.owns(src) || is_martian(src),
        // A host may have secondary addresses: it sends from any address of its own.
        PortOwner::Host { .. } => {
            src != port.addr && tables.internet.hosts.get(&src) != Some(&ingress)
        }
        // The resolver answers from the address it was asked at: base + 2 or the link-local one.
        PortOwner::Resolver { .. } => src != port.addr && src != RESOLVER_LINK_LOCAL,
        _ => src != port.addr,
    };
    if spoofed {
        return Verdict::Drop(DropReason::Spoofed);
    }
    if is_martian(pkt.header.dst) {
        return Verdict::Drop(DropReason::Martian);
    }
    if let Err(reason) = pkt.header.check_meta(&mut pkt.buf[..len]) {
        return Verdict::Drop(reason);
    }
    // Each stage writes the change it wants in its VPC's flow table into its own slot (left
    // `Nothing` when it has none); written in place, not returned, as the hot path copies less.
    let mut leaving = Pending::Nothing;
    let mut entering = Pending::Nothing;
    // The first stage: the sender's routing domain.
    let first = match port.owner {
        PortOwner::Instance {
            vpc,
            subnet,
            instance,
        } => match VpcState::of(tables, gateways, firewall, vpc as usize) {
            Some(mut vpc) => from_instance(
                &mut pkt,
                &mut vpc,
                port,
                Side { subnet, instance },
                &mut leaving,
            ),
            None => Stage::Done(Verdict::Drop(DropReason::NoRoute)),
        },
        PortOwner::Host { .. } | PortOwner::Uplink => on_public_segment(&mut pkt, true),
        PortOwner::Resolver { vpc } => Stage::Done(from_resolver(&mut pkt, vpc)),
    };
    // The second stage, when the first one ended at an EIP: the destination VPC.
    let verdict = match first {
        Stage::Done(verdict) => verdict,
        Stage::Enter {
            target,
            from_public,
        } => match VpcState::of(tables, gateways, firewall, target.vpc()) {
            Some(mut vpc) => enter_vpc(&mut pkt, &mut vpc, target, from_public, &mut entering),
            None => Verdict::Drop(DropReason::UnboundEip),
        },
    };
    match verdict {
        Verdict::Forward { .. } => match commit(firewall, now, [&leaving, &entering]) {
            Ok(()) => verdict,
            Err(reason) => Verdict::Drop(reason),
        },
        other => other,
    }
}

/// One packet on its way through the fabric: what every stage reads and rewrites in place.
struct Packet<'a> {
    tables: &'a Tables,
    now: Instant,
    /// The port it arrived on: generated replies go back there.
    ingress: PortId,
    buf: &'a mut [u8],
    /// Brought up to date after a translation ([`Packet::rewritten`]).
    header: Header,
}

/// Where a stage leaves a packet.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Its fate is decided.
    Done(Verdict),
    /// It is on the public segment, addressed to an EIP: the next stage is [`enter_vpc`] of
    /// `target.vpc()` (another VPC, or the sender's own for a hairpin). `from_public`: the
    /// sender is a public host or the uplink, so a visible hop may answer it; a packet that left
    /// a VPC through NAT has an EIP as its source and is not answered.
    Enter {
        target: EipTarget,
        from_public: bool,
    },
}

/// What one stage may read and change: one VPC's tables, NAT cores and flow table.
struct VpcState<'a> {
    index: usize,
    table: &'a VpcTable,
    cores: &'a mut VpcCores,
    /// Used for VPC `index` only: the other VPCs' flow tables belong to their own stages.
    firewall: &'a mut Firewall,
}

impl<'a> VpcState<'a> {
    fn of(
        tables: &'a Tables,
        gateways: &'a mut Gateways,
        firewall: &'a mut Firewall,
        index: usize,
    ) -> Option<VpcState<'a>> {
        Some(VpcState {
            index,
            table: tables.vpcs.get(index)?,
            cores: gateways.vpc_mut(index)?,
            firewall,
        })
    }

    fn check_within(&mut self, from: Side, to: Side, pkt: &Packet) -> Result<Pending, DropReason> {
        let facts = pkt.facts();
        self.firewall
            .check_within(self.index, self.table, from, to, &facts, pkt.now)
    }

    fn check_leaving(&mut self, from: Side, pkt: &Packet) -> Result<Pending, DropReason> {
        let facts = pkt.facts();
        self.firewall
            .check_leaving(self.index, self.table, from, &facts, pkt.now)
    }

    fn check_entering(&mut self, to: Side, pkt: &Packet) -> Result<Pending, DropReason> {
        let facts = pkt.facts();
        self.firewall
            .check_entering(self.index, self.table, to, &facts, pkt.now)
    }
}

/// The subnet and instance behind an instance port.
fn side_of(tables: &Tables, port: PortId) -> Option<Side> {
    match tables.port(port)?.owner {
        PortOwner::Instance {
            subnet, instance, ..
        } => Some(Side { subnet, instance }),
        PortOwner::Host { .. } | PortOwner::Uplink | PortOwner::Resolver { .. } => None,
    }
}

/// The packet is forwarded: the flow tables learn what it opened or refreshed, the sending
/// stage's first. A flow that no longer fits (a hairpin inside one VPC taking the last two slots)
/// is a counted drop.
#[inline]
fn commit(firewall: &mut Firewall, now: Instant, pending: [&Pending; 2]) -> Result<(), DropReason> {
    // Most packets of a known flow in one VPC leave one slot empty: skip the call.
    let [leaving, entering] = pending;
    if !matches!(leaving, Pending::Nothing) {
        firewall.commit(*leaving, now)?;
    }
    if !matches!(entering, Pending::Nothing) {
        firewall.commit(*entering, now)?;
    }
    Ok(())
}

/// The first stage of a packet from instance `from` of `vpc`: the subnet's route table, then
/// delivery inside the VPC, the subnet gateway's echo reply, or the way out through NAT to the
/// public segment. Also writes the change to `vpc`'s flow table into `pending`, to commit if the
/// packet is forwarded.
#[inline]
fn from_instance(
    pkt: &mut Packet,
    vpc: &mut VpcState,
    port: &PortInfo,
    from: Side,
    pending: &mut Pending,
) -> Stage {
    let done = Stage::Done;
    if vpc.table.is_resolver(pkt.header.dst) {
        // Like AWS's resolver: reached from every subnet, past every security group and ACL.
        return done(pkt.deliver(vpc.table.resolver.port));
    }
    match route_in_vpc(vpc.table, from.subnet as usize, port, pkt.header.dst) {
        Ok(Next::Deliver(egress)) => Stage::Done(within_vpc(pkt, vpc, from, egress, pending)),
        Ok(Next::Gateway) => match icmp::echo_reply_in_place(pkt.buf, pkt.header.total_len()) {
            Ok(len) => done(Verdict::Reply {
                port: pkt.ingress,
                len,
            }),
            Err(reason) => done(Verdict::Drop(reason)),
        },
        Ok(Next::Nat(g)) => match vpc.check_leaving(from, pkt) {
            Ok(p) => {
                *pending = p;
                through_nat_gateway(pkt, vpc, g)
            }
            Err(reason) => done(Verdict::Drop(reason)),
        },
        Ok(Next::InternetGateway) => match vpc.check_leaving(from, pkt) {
            Ok(p) => {
                *pending = p;
                through_internet_gateway(pkt, vpc)
            }
            Err(reason) => done(Verdict::Drop(reason)),
        },
        Err(reason) => done(Verdict::Drop(reason)),
    }
}

/// The only stage of a packet from VPC `vpc`'s resolver: delivered to one of that VPC's own
/// instances, unfiltered (the instance's query reached the resolver unfiltered too), and nowhere
/// else.
fn from_resolver(pkt: &mut Packet, vpc: u32) -> Verdict {
    let to = pkt.tables.vpcs.get(vpc as usize);
    match to.and_then(|v| v.hosts.get(&pkt.header.dst)).copied() {
        Some(egress) => pkt.deliver(egress),
        None => Verdict::Drop(DropReason::NoSuchHost),
    }
}

/// Instance to instance inside `vpc`: security groups both sides, ACLs at a subnet edge. The
/// change to the flow table goes to `pending`.
#[inline]
fn within_vpc(
    pkt: &mut Packet,
    vpc: &mut VpcState,
    from: Side,
    egress: PortId,
    pending: &mut Pending,
) -> Verdict {
    let Some(to) = side_of(pkt.tables, egress) else {
        return Verdict::Drop(DropReason::UnknownPort);
    };
    match vpc.check_within(from, to, pkt) {
        Ok(p) => {
            *pending = p;
            pkt.deliver(egress)
        }
        Err(reason) => Verdict::Drop(reason),
    }
}

/// Private -> public through NAT gateway `g` of `vpc`: the visible hop, the SNAT pool for the
/// source, translation, then the public segment.
fn through_nat_gateway(pkt: &mut Packet, vpc: &mut VpcState, g: usize) -> Stage {
    let Some(table) = vpc.table.nat_gateways.get(g) else {
        return Stage::Done(Verdict::Drop(DropReason::NoRoute));
    };
    let Some(pool) = table.pool_for(pkt.header.src) else {
        return Stage::Done(Verdict::Drop(DropReason::NoSnatRule));
    };
    if let Some(v) = pkt.public_mtu_check(table.ip) {
        return Stage::Done(v);
    }
    if let Err(v) = visible_hop(pkt.buf, &pkt.header, table.ip, pkt.ingress, true) {
        return Stage::Done(v);
    }
    let Some(core) = vpc.cores.pool(g, pool) else {
        return Stage::Done(Verdict::Drop(DropReason::NoRoute));
    };
    let outcome = pkt.translate_out(core);
    let answer = matches!(outcome, Err(d) if core.refusal_reply(d));
    after_outbound(pkt, answer, table.ip, outcome)
}

/// Private -> public for an instance with a 1:1 EIP: translation only, no visible hop.
fn through_internet_gateway(pkt: &mut Packet, vpc: &mut VpcState) -> Stage {
    let hop = vpc
        .table
        .subnets
        .first()
        .map_or(Ipv4Addr::UNSPECIFIED, |s| s.gateway);
    if let Some(v) = pkt.public_mtu_check(hop) {
        return Stage::Done(v);
    }
    let core = &mut vpc.cores.igw;
    let outcome = pkt.translate_out(core);
    let answer = matches!(outcome, Err(d) if core.refusal_reply(d));
    after_outbound(pkt, answer, hop, outcome)
}

/// Continues after outbound translation; `answer_refusal` says a refused new flow gets ICMP
/// "administratively prohibited" from `hop`.
fn after_outbound(
    pkt: &mut Packet,
    answer_refusal: bool,
    hop: Ipv4Addr,
    outcome: Result<Translated, NatDrop>,
) -> Stage {
    let verdict = match outcome {
        // The source is now public (the header was read again); the destination is unchanged.
        Ok(Translated::Forward { .. }) => return on_public_segment(pkt, false),
        Ok(Translated::Rebuilt { len, .. }) => {
            pkt.rebuilt(len as usize);
            return on_public_segment(pkt, false);
        }
        Ok(Translated::ReplyRst { len } | Translated::Reply { len }) => Verdict::Reply {
            port: pkt.ingress,
            len,
        },
        Err(drop) if answer_refusal => {
            match icmp::write_error(
                pkt.buf,
                pkt.header.total_len(),
                hop,
                IcmpError::AdminProhibited,
            ) {
                Ok(len) => Verdict::Reply {
                    port: pkt.ingress,
                    len,
                },
                Err(_) => Verdict::Drop(drop.into()),
            }
        }
        Err(drop) => Verdict::Drop(drop.into()),
    };
    Stage::Done(verdict)
}

/// The public segment, by [`public_next`]: deliver to a host or the uplink, or hand the packet
/// to the stage of the VPC behind the destination EIP (ingress or hairpin). Touches no VPC's
/// state. `from_public` as in [`Stage::Enter`].
fn on_public_segment(pkt: &mut Packet, from_public: bool) -> Stage {
    match public_next(pkt.tables, pkt.ingress, pkt.header.dst) {
        Ok(PublicNext::Host(egress) | PublicNext::Uplink(egress)) => {
            Stage::Done(pkt.deliver(egress))
        }
        Ok(PublicNext::Eip(target)) => Stage::Enter {
            target,
            from_public,
        },
        Err(reason) => Stage::Done(Verdict::Drop(reason)),
    }
}

/// The second stage: a packet on the public segment enters `vpc` through its EIP `target` —
/// the NAT gateway's visible hop and inbound translation (DNAT, or the reply of a session), or
/// the 1:1 translation — then the inbound filters and delivery to the instance. Also writes the
/// change to `vpc`'s flow table into `pending`, to commit if the packet is forwarded.
fn enter_vpc(
    pkt: &mut Packet,
    vpc: &mut VpcState,
    target: EipTarget,
    from_public: bool,
    pending: &mut Pending,
) -> Verdict {
    let dst = pkt.header.dst;
    let quote = SenderQuote::keep(pkt, from_public);
    let outcome = match target {
        EipTarget::NatGateway { gateway, pool, .. } => {
            // Only a public sender's packet can be answered with Time Exceeded from the EIP: a
            // hairpinned packet's source is an EIP, not its sender.
            if let Err(v) = visible_hop(pkt.buf, &pkt.header, dst, pkt.ingress, from_public) {
                return v;
            }
            let Some(core) = vpc.cores.pool(gateway, pool) else {
                return Verdict::Drop(DropReason::UnboundEip);
            };
            pkt.translate_in(core, from_public)
        }
        EipTarget::OneToOne { .. } => pkt.translate_in(&mut vpc.cores.igw, from_public),
    };
    match outcome {
        Ok(Translated::Forward { internal, .. }) => {
            deliver_into_vpc(pkt, vpc, internal, pending, quote.map(|q| (q, dst)))
        }
        // The SYN proxy's SYN to the instance (its handshake with the client is complete).
        Ok(Translated::Rebuilt { len, internal, .. }) => {
            pkt.rebuilt(len as usize);
            deliver_into_vpc(pkt, vpc, internal, pending, None)
        }
        Ok(Translated::ReplyRst { len } | Translated::Reply { len }) => Verdict::Reply {
            port: pkt.ingress,
            len,
        },
        Err(drop) => Verdict::Drop(drop.into()),
    }
}

/// The sender's IP header and first 8 transport bytes as they arrived at an EIP, kept before
/// the inbound translation rewrites them: a fragmentation-needed error must quote what the sender
/// sent, or its path-MTU discovery cannot match the error to its socket.
struct SenderQuote {
    bytes: [u8; ICMP_QUOTE_MAX],
    len: usize,
}

impl SenderQuote {
    /// Kept only where an error may be sent: a public sender's DF packet that could exceed an
    /// instance's MTU (no port's MTU is below [`MIN_MTU`]). A hairpinned packet's source is an
    /// EIP already, so it gets no error (as before: a counted drop).
    fn keep(pkt: &Packet, from_public: bool) -> Option<SenderQuote> {
        let h = &pkt.header;
        if !from_public || !h.dont_frag || h.wire_len() <= MIN_MTU as usize {
            return None;
        }
        let ip = Ipv4Packet::new_unchecked(&pkt.buf[..h.total_len()]);
        let len = (ip.header_len() + 8).min(h.total_len()).min(ICMP_QUOTE_MAX);
        let mut bytes = [0u8; ICMP_QUOTE_MAX];
        bytes[..len].copy_from_slice(&pkt.buf[..len]);
        Some(SenderQuote { bytes, len })
    }

    /// Fragmentation-needed for `mtu` from `eip` back to the sender, written over the packet
    /// with the sender's own header restored. The IP total length is the untranslated one (the
    /// translation keeps lengths), so the error is built as for an untranslated packet.
    fn frag_needed(&self, pkt: &mut Packet, eip: Ipv4Addr, mtu: u32) -> Verdict {
        pkt.buf[..self.len].copy_from_slice(&self.bytes[..self.len]);
        let mtu = mtu.min(u32::from(u16::MAX)) as u16;
        let err = IcmpError::FragNeeded { mtu };
        match icmp::write_error(pkt.buf, pkt.header.total_len(), eip, err) {
            Ok(len) => Verdict::Reply {
                port: pkt.ingress,
                len,
            },
            Err(reason) => Verdict::Drop(reason),
        }
    }
}

/// Delivers an inbound-translated packet to the instance of `vpc` with address `internal`,
/// through the inbound filters (the change to the flow table goes to `pending`). A packet too
/// big for the instance's port gets fragmentation-needed from the EIP when `quote` kept the
/// sender's header (a public sender's DF packet), else it is a counted drop.
fn deliver_into_vpc(
    pkt: &mut Packet,
    vpc: &mut VpcState,
    internal: Ipv4Addr,
    pending: &mut Pending,
    quote: Option<(SenderQuote, Ipv4Addr)>,
) -> Verdict {
    let drop = Verdict::Drop;
    let Some(egress) = vpc.table.hosts.get(&internal).copied() else {
        return drop(DropReason::NoSuchHost);
    };
    let Some(to) = side_of(pkt.tables, egress) else {
        return drop(DropReason::UnknownPort);
    };
    match vpc.check_entering(to, pkt) {
        Ok(p) => *pending = p,
        Err(reason) => return drop(reason),
    };
    match pkt.tables.port(egress) {
        // Not committed: the sender is told to send smaller packets, or the packet is dropped.
        Some(p) if pkt.header.wire_len() > p.mtu as usize => match quote {
            Some((quote, eip)) => quote.frag_needed(pkt, eip, p.mtu),
            None => Verdict::Drop(DropReason::TooBig),
        },
        Some(_) => Verdict::Forward {
            port: egress,
            len: pkt.header.total_len(),
            meta: pkt.header.meta,
        },
        None => Verdict::Drop(DropReason::UnknownPort),
    }
}

impl Packet<'_> {
    /// The facts the filters read from the packet as it is now (before or after translation).
    #[inline]
    fn facts(&self) -> Facts {
        Facts::of_view(&Ipv4Packet::new_unchecked(
            &self.buf[..self.header.total_len()],
        ))
    }

    /// Outbound translation by `core` (its source address and port change). The whole buffer
    /// goes along: a packet the gateway writes back may be longer than this one.
    fn translate_out(&mut self, core: &mut NatGateway) -> Result<Translated, NatDrop> {
        let h = &self.header;
        let outcome =
            core.outbound_in_buffer(self.now, self.ingress.0, self.buf, h.total_len(), h.csum);
        self.rewritten(&outcome);
        outcome
    }

    /// Inbound translation by `core` (its destination address and port change); `from_public`
    /// lets the SYN proxy answer the sender directly.
    fn translate_in(
        &mut self,
        core: &mut NatGateway,
        from_public: bool,
    ) -> Result<Translated, NatDrop> {
        let h = &self.header;
        let outcome =
            core.inbound_in_buffer(self.now, self.buf, h.total_len(), h.csum, from_public);
        self.rewritten(&outcome);
        outcome
    }

    /// After the gateway wrote a new packet of `len` bytes in place of this one (complete
    /// checksums, no offload): its header is read again.
    fn rebuilt(&mut self, len: usize) {
        let view = Ipv4Packet::new_unchecked(&self.buf[..len]);
        self.header = Header::of(&view, PacketMeta::COMPLETE);
    }

    /// After a translation rewrote the packet (same lengths, checked already): the addresses
    /// are read again.
    #[inline]
    fn rewritten(&mut self, outcome: &Result<Translated, NatDrop>) {
        if let Ok(Translated::Forward { .. }) = outcome {
            let view = Ipv4Packet::new_unchecked(&self.buf[..self.header.total_len()]);
            (self.header.src, self.header.dst) = (view.src(), view.dst());
        }
    }

    /// Final step on a segment: the egress port's MTU, then forward.
    fn deliver(&mut self, egress: PortId) -> Verdict {
        deliver(self.tables, self.ingress, egress, self.buf, &self.header)
    }

    /// Path MTU towards a public host or the uplink, checked before translation so that
    /// fragmentation-needed quotes the sender's own header.
    fn public_mtu_check(&mut self, hop: Ipv4Addr) -> Option<Verdict> {
        let egress = match public_next(self.tables, self.ingress, self.header.dst) {
            Ok(PublicNext::Host(p) | PublicNext::Uplink(p)) => p,
            Ok(PublicNext::Eip(_)) | Err(_) => return None,
        };
        let mtu = self.tables.port(egress)?.mtu;
        too_big(self.buf, &self.header, mtu, hop, self.ingress)
    }
}

/// A visible hop: a packet whose TTL would expire here is answered with Time Exceeded from
/// `from` (when `may_reply`) or dropped; otherwise the TTL is decremented and the header checksum
/// patched (RFC 1624).
fn visible_hop(
    buf: &mut [u8],
    header: &Header,
    from: Ipv4Addr,
    ingress: PortId,
    may_reply: bool,
) -> Result<(), Verdict> {
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..header.total_len()]);
    if ip.ttl() <= 1 {
        if !may_reply {
            return Err(Verdict::Drop(DropReason::TtlExceeded));
        }
        return Err(
            match icmp::write_error(buf, header.total_len(), from, IcmpError::TimeExceeded) {
                Ok(len) => Verdict::Reply { port: ingress, len },
                Err(reason) => Verdict::Drop(reason),
            },
        );
    }
    ip.decrement_ttl();
    Ok(())
}

/// Checks the IP header once: version, lengths, checksum. Trailing bytes past the total length
/// are tolerated (and not forwarded).
fn check_ip(pkt: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
    match IpPacket::new_checked(pkt)? {
        IpPacket::V4(ip) if !ip.verify_checksum() => Err(DropReason::BadChecksum),
        IpPacket::V4(ip) => Ok(ip),
    }
}

/// A packet larger than `mtu`: with DF, ICMP fragmentation-needed from `hop` back to the sender
/// (so path-MTU discovery works); without DF, a counted drop (the fabric does not fragment).
fn too_big(
    buf: &mut [u8],
    header: &Header,
    mtu: u32,
    hop: Ipv4Addr,
    ingress: PortId,
) -> Option<Verdict> {
    if header.wire_len() <= mtu as usize {
        return None;
    }
    if !header.dont_frag {
        return Some(Verdict::Drop(DropReason::TooBig));
    }
    let mtu = mtu.min(u32::from(u16::MAX)) as u16;
    Some(
        match icmp::write_error(buf, header.total_len(), hop, IcmpError::FragNeeded { mtu }) {
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
    header: &Header,
) -> Verdict {
    let Some(out) = tables.port(egress) else {
        return Verdict::Drop(DropReason::UnknownPort);
    };
    if header.wire_len() > out.mtu as usize {
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
        len: header.total_len(),
        meta: header.meta,
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
        PortOwner::Resolver { vpc } => tables.vpcs.get(vpc as usize).map(|v| v.resolver.addr),
    }
}
