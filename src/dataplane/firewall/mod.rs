//! Security groups and network ACLs in the sans-IO core.
//!
//! Owns: the facts the filters read from a packet ([`Facts`], taken from the packet view's
//! summary, [`crate::dataplane::packet`]), the compiled rule types and their
//! evaluation ([`security_group`], [`acl`]) — the **only** place rules are evaluated; the fabric
//! and `vpcd explain` both call [`sg_check`] and [`acl_check`] — and the stateful part, one
//! [`FlowTable`] per VPC ([`Firewall`]).
//!
//! # Where the filters apply (see `topologies/README.md` for the user's view)
//! - A packet from an instance to another instance of its VPC: the sender's egress security
//!   groups, then — only if the two are in different subnets — the source subnet's outbound ACL
//!   and the destination subnet's inbound ACL, then the receiver's ingress security groups.
//! - A packet leaving the VPC (NAT gateway or 1:1 EIP): the sender's egress groups, the VPC's
//!   egress allow-list ([`egress_check`], for packets no tracked flow covers) and its subnet's
//!   outbound ACL, on the private addresses, before translation.
//! - A packet entering the VPC through an EIP: after translation, the receiver subnet's inbound
//!   ACL and the receiver's ingress groups; the peer is the public source (for hairpin, the
//!   sender's EIP).
//! - Not filtered: the subnet gateway's echo reply and every ICMP message the fabric generates
//!   itself (time exceeded, fragmentation needed, administratively prohibited, NAT RSTs).
//!   Internet hosts have no security groups.
//!
//! # State
//! A packet of a tracked flow (either direction) skips the security groups altogether: one hash
//! lookup, no rule is looked at, so its cost does not depend on the number of rules. ICMP errors
//! whose quoted header belongs to a tracked flow pass as *related*. A packet that no flow covers
//! is evaluated against the rules; if it is allowed and opens a flow (TCP SYN without ACK, any
//! UDP datagram, an ICMP query request, any packet of another protocol) the flow is tracked once
//! the packet is actually forwarded. Network ACLs are stateless and apply to every packet.
//!
//! Rule changes ([`crate::dataplane::Fabric::swap_tables`]) apply to new flows; tracked flows stay
//! alive until they expire, as in the clouds. Flow tables follow their VPC by name across swaps.
//!
//! Why a table of its own rather than the NAT connection table: NAT sessions exist only on the
//! NAT paths (per gateway pool, keyed by public addresses), while security groups need state for
//! every flow, intra-VPC ones included, keyed by the addresses the instance sees. A flow through
//! NAT therefore has one entry here and one session in the NAT core; both are small.
//!
//! Invariants: no allocation per packet (tables grow only when a flow is created), no panics on
//! any bytes, no clock (`now` is passed in).

pub mod acl;
pub mod egress;
pub mod flows;
pub mod granted;
pub mod security_group;

use std::net::Ipv4Addr;

pub use acl::{AclDecision, AclDirection, AclRuleTable, NetworkAclTable};
pub use egress::{EgressDecision, EgressRuleTable};
pub use flows::{FlowConfig, FlowCounters, FlowTable, FlowView, TrackedFlowKey};
pub use security_group::{
    SecurityGroupTable, SecurityGroups, SgDirection, SgMatch, SgPeer, SgRuleTable,
};

use super::DropReason;
use super::packet::{
    self, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpMessage, Ipv4Packet, Summary, TCP_ACK, TCP_RST,
    TCP_SYN, Transport,
};
use crate::tables::{Tables, VpcTable};
use crate::time::Instant;

pub use crate::dataplane::packet::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// A flow as an ICMP error quotes it: protocol, source and destination endpoints as sent.
pub type Quoted = (u8, (Ipv4Addr, u16), (Ipv4Addr, u16));

/// What kind of packet the filters see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp {
        flags: u8,
    },
    Udp,
    /// An ICMP message that is not an error; `request` for the query types that open a flow
    /// (echo, timestamp, information, address mask requests). The identifier is in the ports.
    Icmp {
        icmp_type: u8,
        request: bool,
    },
    /// An ICMP error, with the flow its quoted header belongs to (as sent: source, destination).
    IcmpError {
        icmp_type: u8,
        inner: Option<Quoted>,
    },
    /// Another IP protocol (no ports).
    Other,
    /// Ports unknown: a non-first fragment or a truncated transport header.
    Opaque,
}

/// The facts about a packet the filters decide on: the part of the packet view's [`Summary`]
/// the rules and the flow table read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// TCP/UDP ports; for ICMP non-errors the identifier in both; otherwise 0.
    pub sport: u16,
    pub dport: u16,
    pub kind: Kind,
}

impl Facts {
    /// Reads the facts from an IPv4 packet (`pkt` = exactly the packet). Never panics; a
    /// packet whose header is not readable has no addresses and [`Kind::Opaque`].
    pub fn parse(pkt: &[u8]) -> Facts {
        match Ipv4Packet::new_header_checked(pkt) {
            Ok(p) => Facts::of(&p.summary(), pkt),
            Err(_) => Facts {
                proto: pkt.get(9).copied().unwrap_or(0),
                src: Ipv4Addr::UNSPECIFIED,
                dst: Ipv4Addr::UNSPECIFIED,
                sport: 0,
                dport: 0,
                kind: Kind::Opaque,
            },
        }
    }

    /// The facts of a packet the view has summarised (`pkt` = the packet, read again only for
    /// the header an ICMP error quotes).
    #[inline]
    pub fn of(s: &Summary, pkt: &[u8]) -> Facts {
        let (sport, dport) = s.ports().unwrap_or((0, 0));
        let kind = match s.transport {
            Transport::Tcp { flags, .. } => Kind::Tcp { flags },
            Transport::Udp { .. } => Kind::Udp,
            Transport::Icmp {
                icmp_type,
                message: IcmpMessage::Query { .. },
                ..
            } => Kind::Icmp {
                icmp_type,
                request: packet::is_icmp_request(icmp_type),
            },
            Transport::Icmp {
                icmp_type,
                message: IcmpMessage::Error,
                ..
            } => Kind::IcmpError {
                icmp_type,
                inner: Ipv4Packet::new_header_checked(pkt)
                    .ok()
                    .and_then(|p| p.quoted())
                    .and_then(|q| {
                        let (sp, dp) = q.ports?;
                        Some((q.proto, (q.src, sp), (q.dst, dp)))
                    }),
            },
            Transport::Icmp {
                message: IcmpMessage::Short,
                ..
            }
            | Transport::Opaque => Kind::Opaque,
            Transport::Other => Kind::Other,
        };
        Facts {
            proto: s.proto,
            src: s.src,
            dst: s.dst,
            sport,
            dport,
            kind,
        }
    }

    /// The facts of a checked IPv4 packet read straight from its view (`ip` = exactly the
    /// packet): what [`Facts::of`] gives on the view's summary (tested equal on any bytes), for
    /// the fabric's paths that read nothing else of the summary.
    #[inline]
    pub fn of_view(ip: &Ipv4Packet<&[u8]>) -> Facts {
        let l4 = ip.payload();
        let be = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
        let (sport, dport, kind) = match ip.protocol() {
            _ if ip.frag_offset() != 0 => (0, 0, Kind::Opaque),
            PROTO_TCP if l4.len() > 13 => (be(0), be(2), Kind::Tcp { flags: l4[13] }),
            PROTO_UDP if l4.len() >= 4 => (be(0), be(2), Kind::Udp),
            PROTO_ICMP if l4.len() >= 2 && packet::is_icmp_error(l4[0]) => {
                let inner = ip.quoted().and_then(|q| {
                    let (sp, dp) = q.ports?;
                    Some((q.proto, (q.src, sp), (q.dst, dp)))
                });
                let icmp_type = l4[0];
                (0, 0, Kind::IcmpError { icmp_type, inner })
            }
            PROTO_ICMP if l4.len() >= 6 => {
                let (icmp_type, id) = (l4[0], be(4));
                let request = packet::is_icmp_request(icmp_type);
                (id, id, Kind::Icmp { icmp_type, request })
            }
            PROTO_TCP | PROTO_UDP | PROTO_ICMP => (0, 0, Kind::Opaque),
            _ => (0, 0, Kind::Other),
        };
        Facts {
            proto: ip.protocol(),
            src: ip.src(),
            dst: ip.dst(),
            sport,
            dport,
            kind,
        }
    }

    /// The destination port rules match on (tcp and udp only).
    pub fn dport(&self) -> Option<u16> {
        match self.kind {
            Kind::Tcp { .. } | Kind::Udp => Some(self.dport),
            _ => None,
        }
    }

    pub fn icmp_type(&self) -> Option<u8> {
        match self.kind {
            Kind::Icmp { icmp_type, .. } | Kind::IcmpError { icmp_type, .. } => Some(icmp_type),
            _ => None,
        }
    }

    /// Whether an allowed packet of an untracked flow starts tracking it.
    pub fn opens_flow(&self) -> bool {
        match self.kind {
            Kind::Tcp { flags } => flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN,
            Kind::Udp | Kind::Other => true,
            Kind::Icmp { request, .. } => request,
            Kind::IcmpError { .. } | Kind::Opaque => false,
        }
    }

    /// The same facts for the other direction (what a reply looks like).
    pub fn reversed(&self) -> Facts {
        let kind = match self.kind {
            Kind::Icmp {
                icmp_type: ICMP_ECHO_REQUEST,
                request: true,
            } => Kind::Icmp {
                icmp_type: ICMP_ECHO_REPLY,
                request: false,
            },
            Kind::Tcp { .. } => Kind::Tcp {
                flags: TCP_SYN | TCP_ACK,
            },
            k => k,
        };
        Facts {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            kind,
        }
    }
}

/// An instance as the filters see it: its subnet and its index in the VPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub subnet: u32,
    pub instance: u32,
}

/// The security groups of `instance` on `facts` in `dir`; the peer is the source for ingress and
/// the destination for egress. `None`: no rule allows it.
pub fn sg_check(vpc: &VpcTable, instance: u32, dir: SgDirection, facts: &Facts) -> Option<SgMatch> {
    let peer = match dir {
        SgDirection::Ingress => facts.src,
        SgDirection::Egress => facts.dst,
    };
    vpc.security_groups.evaluate(instance, dir, facts, peer)
}

/// The VPC's egress allow-list on a packet leaving it: which rule lets it out, if any (no list:
/// everything is allowed). Only packets no tracked flow covers meet it, so replies to flows opened
/// from outside pass.
pub fn egress_check(vpc: &VpcTable, facts: &Facts) -> EgressDecision {
    egress::decide(
        vpc.egress_allow.as_deref(),
        facts.proto,
        facts.dst,
        facts.dport(),
    )
}

/// Whether [`egress_check`] lets the packet out.
pub fn egress_allowed(vpc: &VpcTable, facts: &Facts) -> bool {
    egress_check(vpc, facts).allows()
}

/// The network ACL of `subnet` (the default ACL when it has none) on `facts` in `dir`.
pub fn acl_check(vpc: &VpcTable, subnet: u32, dir: AclDirection, facts: &Facts) -> AclDecision {
    let acl = vpc
        .subnets
        .get(subnet as usize)
        .and_then(|s| s.network_acl)
        .and_then(|a| vpc.network_acls.get(a as usize));
    acl::evaluate(acl, dir, facts)
}

/// How a packet relates to the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    /// A packet of tracked flow `i`; `from_a` as in [`TrackedFlowKey::of`].
    Flow(u32, bool),
    /// An ICMP error about a tracked flow.
    Related,
    /// Nothing tracked: the rules decide.
    New,
}

/// What to do to the flow table once the packet is known to be forwarded: only what the
/// commit reads of the packet (it is copied along the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    Nothing,
    /// A packet of tracked flow `flow`, from the key's `a` endpoint when `from_a`, with its
    /// TCP flags (`None` for anything but TCP).
    Touch {
        vpc: u32,
        flow: u32,
        from_a: bool,
        tcp_flags: Option<u8>,
    },
    /// A new flow, opened from the key's `a` endpoint when `from_a`.
    Insert {
        vpc: u32,
        key: TrackedFlowKey,
        from_a: bool,
    },
}

#[derive(Debug, Clone)]
struct VpcFlows {
    name: String,
    table: FlowTable,
    /// Destinations allowed by name ([`granted`]).
    granted: granted::Granted,
}

/// The firewall's state: one flow table per VPC, in the order of [`Tables::vpcs`].
#[derive(Debug, Clone)]
pub struct Firewall {
    vpcs: Vec<VpcFlows>,
    config: FlowConfig,
    seed: u64,
}

fn derive_seed(seed: u64, vpc: usize) -> u64 {
    let x = (seed ^ 0x5347_5f46_4c4f_5753).wrapping_add(vpc as u64);
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 29)
}

impl Firewall {
    pub fn new(tables: &Tables, config: FlowConfig, seed: u64) -> Firewall {
        let vpcs = tables
            .vpcs
            .iter()
            .enumerate()
            .map(|(i, v)| VpcFlows {
                name: v.name.clone(),
                table: FlowTable::new(config, derive_seed(seed, i)),
                granted: granted::Granted::default(),
            })
            .collect();
        Firewall { vpcs, config, seed }
    }

    pub fn config(&self) -> FlowConfig {
        self.config
    }

    /// Follows a table swap: VPCs are matched by name and keep their tracked flows (so a rule
    /// change applies to new flows only); new VPCs start empty, removed ones are dropped.
    pub fn reconcile(&mut self, new: &Tables) {
        let mut old: Vec<Option<VpcFlows>> = std::mem::take(&mut self.vpcs)
            .into_iter()
            .map(Some)
            .collect();
        for (i, v) in new.vpcs.iter().enumerate() {
            let kept = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.name == v.name))
                .and_then(Option::take);
            self.vpcs.push(kept.unwrap_or_else(|| VpcFlows {
                name: v.name.clone(),
                table: FlowTable::new(self.config, derive_seed(self.seed, i)),
                granted: granted::Granted::default(),
            }));
        }
    }

    /// Allows new flows of VPC `vpc` to `addr` (TCP/UDP `ports` only, when given) until `until`:
    /// the resolver answered `addr` for a name the VPC may reach ([`granted`]).
    pub fn grant_egress(
        &mut self,
        vpc: usize,
        addr: Ipv4Addr,
        ports: Option<(u16, u16)>,
        until: Instant,
        now: Instant,
    ) {
        if let Some(v) = self.vpcs.get_mut(vpc) {
            v.granted.grant(addr, ports, until, now);
        }
    }

    /// Whether a grant of VPC `vpc` lets a new flow with `facts` out at `now`.
    fn granted(&self, vpc: usize, facts: &Facts, now: Instant) -> bool {
        self.vpcs
            .get(vpc)
            .is_some_and(|v| v.granted.allows(facts.proto, facts.dst, facts.dport(), now))
    }

    /// The flow table of VPC `vpc` (index into [`Tables::vpcs`]).
    pub fn table(&self, vpc: usize) -> Option<&FlowTable> {
        self.vpcs.get(vpc).map(|v| &v.table)
    }

    /// Every VPC's name and flow table, in the order of [`Tables::vpcs`] (control plane).
    pub fn tables(&self) -> impl Iterator<Item = (&str, &FlowTable)> + '_ {
        self.vpcs.iter().map(|v| (v.name.as_str(), &v.table))
    }

    /// Ends every tracked flow of VPC `vpc` with an endpoint at `addr` (an instance's address):
    /// its next packet meets the rules again. Returns how many.
    pub fn flush_address(&mut self, vpc: usize, addr: Ipv4Addr) -> usize {
        let a = u32::from(addr);
        self.vpcs
            .get_mut(vpc)
            .map_or(0, |v| v.table.remove_where(|k| k.a.0 == a || k.b.0 == a))
    }

    /// Every VPC's name and flow counters.
    pub fn counters(&self) -> impl Iterator<Item = (&str, FlowCounters)> + '_ {
        self.vpcs
            .iter()
            .map(|v| (v.name.as_str(), v.table.counters()))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.vpcs
            .iter()
            .filter_map(|v| v.table.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for v in &mut self.vpcs {
            v.table.handle_timeout(now);
        }
    }

    fn track(&mut self, vpc: usize, facts: &Facts, now: Instant) -> Track {
        let Some(t) = self.vpcs.get_mut(vpc).map(|v| &mut v.table) else {
            return Track::New;
        };
        if let Kind::IcmpError {
            inner: Some((proto, s, d)),
            ..
        } = facts.kind
        {
            let (key, _) = TrackedFlowKey::from_ends(proto, (s.0.into(), s.1), (d.0.into(), d.1));
            return match t.lookup(&key, now) {
                Some(_) => Track::Related,
                None => Track::New,
            };
        }
        let (key, from_a) = TrackedFlowKey::of(facts);
        match t.lookup(&key, now) {
            Some(i) => Track::Flow(i, from_a),
            None => Track::New,
        }
    }

    /// What to record if the packet is forwarded; refuses a new flow when the table is full.
    fn pending(&mut self, vpc: usize, track: Track, facts: &Facts) -> Result<Pending, DropReason> {
        Ok(match track {
            Track::Flow(flow, from_a) => Pending::Touch {
                vpc: vpc as u32,
                flow,
                from_a,
                tcp_flags: match facts.kind {
                    Kind::Tcp { flags } => Some(flags),
                    _ => None,
                },
            },
            Track::Related => Pending::Nothing,
            Track::New if facts.opens_flow() => {
                let Some(t) = self.vpcs.get_mut(vpc).map(|v| &mut v.table) else {
                    return Ok(Pending::Nothing);
                };
                if !t.has_room(1) {
                    t.count_refused();
                    return Err(DropReason::FlowTableFull);
                }
                let (key, from_a) = TrackedFlowKey::of(facts);
                Pending::Insert {
                    vpc: vpc as u32,
                    key,
                    from_a,
                }
            }
            Track::New => Pending::Nothing,
        })
    }

    /// A packet from instance `from` to instance `to` of VPC `vpc` (index `vi`).
    pub fn check_within(
        &mut self,
        vi: usize,
        vpc: &VpcTable,
        from: Side,
        to: Side,
        facts: &Facts,
        now: Instant,
    ) -> Result<Pending, DropReason> {
        let track = self.track(vi, facts, now);
        let new = track == Track::New;
        if new && sg_check(vpc, from.instance, SgDirection::Egress, facts).is_none() {
            return Err(DropReason::SecurityGroupEgress);
        }
        if from.subnet != to.subnet {
            if !acl_check(vpc, from.subnet, AclDirection::Outbound, facts).allows() {
                return Err(DropReason::NetworkAclOutbound);
            }
            if !acl_check(vpc, to.subnet, AclDirection::Inbound, facts).allows() {
                return Err(DropReason::NetworkAclInbound);
            }
        }
        if new && sg_check(vpc, to.instance, SgDirection::Ingress, facts).is_none() {
            return Err(DropReason::SecurityGroupIngress);
        }
        self.pending(vi, track, facts)
    }

    /// A packet from instance `from` leaving VPC `vi` (to a NAT gateway or the internet
    /// gateway), on its private addresses before translation.
    pub fn check_leaving(
        &mut self,
        vi: usize,
        vpc: &VpcTable,
        from: Side,
        facts: &Facts,
        now: Instant,
    ) -> Result<Pending, DropReason> {
        let track = self.track(vi, facts, now);
        if track == Track::New && sg_check(vpc, from.instance, SgDirection::Egress, facts).is_none()
        {
            return Err(DropReason::SecurityGroupEgress);
        }
        if track == Track::New && !egress_allowed(vpc, facts) && !self.granted(vi, facts, now) {
            return Err(DropReason::EgressNotAllowed);
        }
        if !acl_check(vpc, from.subnet, AclDirection::Outbound, facts).allows() {
            return Err(DropReason::NetworkAclOutbound);
        }
        self.pending(vi, track, facts)
    }

    /// A packet entering VPC `vi` from the public side to instance `to`, after translation.
    pub fn check_entering(
        &mut self,
        vi: usize,
        vpc: &VpcTable,
        to: Side,
        facts: &Facts,
        now: Instant,
    ) -> Result<Pending, DropReason> {
        let track = self.track(vi, facts, now);
        if !acl_check(vpc, to.subnet, AclDirection::Inbound, facts).allows() {
            return Err(DropReason::NetworkAclInbound);
        }
        if track == Track::New && sg_check(vpc, to.instance, SgDirection::Ingress, facts).is_none()
        {
            return Err(DropReason::SecurityGroupIngress);
        }
        self.pending(vi, track, facts)
    }

    /// Applies what a forwarded packet changes in the flow tables.
    pub fn commit(&mut self, p: Pending, now: Instant) -> Result<(), DropReason> {
        match p {
            Pending::Nothing => Ok(()),
            Pending::Touch {
                vpc,
                flow,
                from_a,
                tcp_flags,
            } => {
                if let Some(v) = self.vpcs.get_mut(vpc as usize) {
                    v.table.touch_flags(flow, tcp_flags, from_a, now);
                }
                Ok(())
            }
            Pending::Insert { vpc, key, from_a } => {
                let Some(t) = self.vpcs.get_mut(vpc as usize).map(|v| &mut v.table) else {
                    return Ok(());
                };
                // A hairpin inside one VPC may have inserted the same flow a moment ago.
                if t.lookup(&key, now).is_some() {
                    return Ok(());
                }
                t.insert_key(key, from_a, now)
                    .map(|_| ())
                    .map_err(|()| DropReason::FlowTableFull)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn facts_of_tcp_udp_icmp_and_errors() {
        let mut buf = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 20], 64)
            .tcp(40000, 80, 1, 1000)
            .syn()
            .write(&mut buf, &[])
            .unwrap();
        let f = Facts::parse(&buf);
        assert_eq!((f.proto, f.sport, f.dport), (PROTO_TCP, 40000, 80));
        assert!(f.opens_flow());
        let mut quoted = buf.clone();
        quoted.truncate(28);
        let mut err = Vec::new();
        PacketBuilder::ipv4([10, 0, 2, 20], [10, 0, 1, 10], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut err, &quoted)
            .unwrap();
        let e = Facts::parse(&err);
        assert_eq!(
            e.kind,
            Kind::IcmpError {
                icmp_type: 3,
                inner: Some((
                    PROTO_TCP,
                    (Ipv4Addr::new(10, 0, 1, 10), 40000),
                    (Ipv4Addr::new(10, 0, 2, 20), 80)
                ))
            }
        );
        assert!(!e.opens_flow());
        let mut echo = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 20], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut echo, &[])
            .unwrap();
        let e = Facts::parse(&echo);
        assert_eq!((e.sport, e.dport, e.icmp_type()), (7, 7, Some(8)));
        assert!(e.opens_flow());
    }

    /// [`Facts::of_view`] reads what [`Facts::of`] reads from the summary, on any bytes the view
    /// accepts: every header variant (options, fragments, each protocol, truncated transport
    /// headers, ICMP errors quoting each protocol) and random bytes.
    #[test]
    fn facts_of_the_view_equal_the_facts_of_the_summary() {
        use proptest::prelude::*;
        let check = |bytes: &[u8]| {
            if let Ok(ip) = Ipv4Packet::new_checked(bytes) {
                let pkt = &bytes[..usize::from(ip.total_len())];
                let ip = Ipv4Packet::new_unchecked(pkt);
                assert_eq!(
                    Facts::of_view(&ip),
                    Facts::of(&ip.summary(), pkt),
                    "{bytes:?}"
                );
            }
        };
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let shapes = (
            0u8..4,                                                            // options words
            prop_oneof![Just(0u16), Just(0x2000), Just(0x0001), any::<u16>()], // flags/offset
            prop_oneof![
                Just(PROTO_TCP),
                Just(PROTO_UDP),
                Just(PROTO_ICMP),
                any::<u8>()
            ],
            0usize..80, // transport bytes
            prop::collection::vec(any::<u8>(), 80),
            prop_oneof![Just(3u8), Just(0), Just(8), Just(11), Just(13), any::<u8>()],
            prop_oneof![
                Just(PROTO_TCP),
                Just(PROTO_UDP),
                Just(PROTO_ICMP),
                any::<u8>()
            ],
        );
        runner
            .run(
                &shapes,
                |(opts, frag, proto, l4_len, fill, icmp_type, inner)| {
                    let ihl = 20 + 4 * usize::from(opts);
                    let total = ihl + l4_len;
                    let mut b = fill.clone();
                    b.resize(total.max(fill.len()), 0x5a);
                    b[0] = 0x40 | (ihl / 4) as u8;
                    b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                    b[6..8].copy_from_slice(&frag.to_be_bytes());
                    b[9] = proto;
                    if proto == PROTO_ICMP && l4_len > 0 {
                        b[ihl] = icmp_type;
                        // A quoted IPv4 header of protocol `inner` after the 8-byte ICMP header.
                        if l4_len > 8 {
                            b[ihl + 8] = 0x45;
                        }
                        if l4_len > 17 {
                            b[ihl + 17] = inner;
                            b[ihl + 14..ihl + 16].fill(0);
                        }
                    }
                    check(&b);
                    check(&fill);
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn facts_never_panic_on_short_packets() {
        for len in 0..40 {
            let mut p = vec![0x45u8; len];
            if len > 9 {
                p[9] = PROTO_ICMP;
            }
            let _ = Facts::parse(&p);
            if len > 9 {
                p[9] = PROTO_TCP;
            }
            let _ = Facts::parse(&p);
        }
    }
}
