//! The NAT gateway core: SNAT through a pool of EIPs, DNAT port forwarding, 1:1 EIPs, with a
//! connection table that behaves like a cloud NAT (RFC 4787 / 5382 / 5508 by default, or the
//! `aws`, `gcp`, `alibaba` profiles of [`config`]).
//!
//! Sans-IO like the rest of the dataplane: the caller passes `now` and the packet, and gets a
//! decision; nothing here reads a clock, allocates per packet (tables grow only when a flow is
//! created, never beyond `max_entries`), logs or panics on any input.
//!
//! # How the fabric drives it
//!
//! - [`NatGateway::outbound`] for a packet routed from a private subnet to the NAT gateway
//!   (private -> public): the source becomes an EIP and port. [`NatGateway::inbound`] for a packet
//!   from the public segment to one of the gateway's addresses (public -> private): the destination
//!   becomes the internal host. Both rewrite `pkt` in place (checksums patched) and return
//!   [`Translated`], or a [`NatDrop`] that has been counted.
//! - The gateway does not decrement the TTL or generate Time Exceeded: the fabric does the visible
//!   hop before calling it. It does not hairpin either: a translated packet whose destination is
//!   one of the gateway's own EIPs is the fabric's to route back into [`NatGateway::inbound`].
//! - [`NatGateway::poll_timeout`] says when to call [`NatGateway::handle_timeout`] next; expiry is
//!   also enforced lazily, so a late call never lets an expired flow through.
//! - Refused new flows: when [`NatGateway::refusal_reply`] says so, answer with ICMP
//!   "administratively prohibited"; otherwise drop silently.
//! - `aws` profile: an outbound TCP segment that is not a SYN and has no session (the 350 s idle
//!   timeout removed it) turns into [`Translated::ReplyRst`]: the buffer now holds a RST from the
//!   remote endpoint to the internal host, to be sent back where the segment came from.
//!
//! # What it owns
//!
//! The connection table ([`conntrack`]), the EIP pool and port bitmaps ([`alloc`]), the fragment
//! table ([`frag`]), DNAT rules and 1:1 EIPs. Packet rewriting is in [`translate`]. One
//! `NatGateway` per NAT gateway: its sessions are keyed without a VPC id, because one gateway
//! serves one VPC.

pub mod alloc;
mod bytes;
pub mod config;
pub mod conntrack;
pub mod frag;
mod sources;
pub(crate) mod synproxy;
pub mod translate;

use std::net::Ipv4Addr;

use foldhash::fast::FixedState;
use hashbrown::HashMap;

use crate::dataplane::packet::Ipv4Packet;
use crate::time::Instant;
use alloc::{AllocError, PortAllocator};
use config::{Filtering, Mapping, NatConfig};
use conntrack::{ConnTrack, NONE, NewSession, TCP_ACK, TCP_RST, TCP_SYN, tick};
use frag::{FragKey, FragTable};
use sources::SourceLimiter;
use synproxy::{Phase, Proxied};
use translate::{AddrField, Frag, L4, Parsed};

pub use super::drop::NatDrop;
pub use translate::L4Checksum;

pub use conntrack::{Dir, SessionState, SessionView};

/// Transport protocols the NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    /// From the IPv4 protocol number.
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            1 => Some(Proto::Icmp),
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    /// The IPv4 protocol number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Dense index 0..3 for per-protocol arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Proto::Icmp => 0,
            Proto::Tcp => 1,
            Proto::Udp => 2,
        }
    }
}

/// The `owner` of translations that have no session: later fragments and 1:1 EIPs.
pub const NO_OWNER: u32 = u32::MAX;

/// What to do with a packet the NAT accepted.
#[must_use = "a translation says where the packet goes; ignoring it loses the packet"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translated {
    /// The packet was rewritten in place; forward it. `internal` is the private host of the flow
    /// (the new destination of an inbound packet), `external` the EIP it uses, `owner` the
    /// instance the flow belongs to ([`NO_OWNER`] for non-first fragments and 1:1 EIPs, which
    /// have no session).
    Forward {
        internal: Ipv4Addr,
        external: Ipv4Addr,
        owner: u32,
    },
    /// (`aws_rst_on_expired`) `buf[..len]` now holds a TCP RST to the internal host, to be sent
    /// back towards it instead of forwarding the original segment.
    ReplyRst { len: usize },
    /// (`syn_proxy`) `buf[..len]` now holds a packet the SYN proxy wrote back to the sender: a
    /// SYN-ACK with a cookie to an outside client, or the ACK that completes an instance's
    /// handshake (with the client's first early segment, if one came).
    Reply { len: usize },
    /// (`syn_proxy`) `buf[..len]` now holds the SYN the proxy opens the connection to the
    /// instance with (a client returned a valid cookie), translated like [`Translated::Forward`]:
    /// forward it; its length is not the packet's that came in. (As small as `Forward`: every
    /// translation returns this enum, and a larger one costs each packet its copies.)
    Rebuilt {
        len: u32,
        internal: Ipv4Addr,
        owner: u32,
    },
}

/// A static DNAT (port forwarding) rule: inbound flows to `external` go to `internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnatRule {
    pub external: (Ipv4Addr, u16),
    /// `None`: TCP and UDP.
    pub protocol: Option<Proto>,
    pub internal: (Ipv4Addr, u16),
    /// The instance the sessions are accounted to.
    pub owner: u32,
}

/// Control-plane errors (rules and EIPs), for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    #[error("invalid NAT configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("{0}:{1} ({2:?}) is already used by a mapping or another DNAT rule")]
    PortInUse(Ipv4Addr, u16, Proto),
    #[error("{0} is already used by this NAT gateway (pool, 1:1 EIP or the same internal host)")]
    AddressInUse(Ipv4Addr),
    #[error("ICMP cannot be port-forwarded; use a 1:1 EIP")]
    IcmpDnat,
}

/// Counters of one NAT gateway, plain numbers the control plane exports on scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatCounters {
    pub active_sessions: u64,
    /// TCP sessions the outside opened whose handshake it has not completed.
    pub half_open: u64,
    /// Endpoint-independent mappings, including those in their port-reuse delay.
    pub mappings: u64,
    /// New flows tried: packets that would open a session (refused ones included).
    pub attempts: u64,
    pub created: u64,
    pub expired: u64,
    /// Transitory sessions dropped to make room (`early_drop_transitory`).
    pub early_dropped: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
    /// RSTs written for stale TCP flows (`aws_rst_on_expired`).
    pub rst_replies: u64,
    /// SYNs the SYN proxy answered with a cookie (no state made).
    pub syn_cookies: u64,
    /// Connections the SYN proxy opened to an instance after a client returned a valid cookie.
    pub syn_proxied: u64,
    drops: [u64; NatDrop::COUNT],
}

impl NatCounters {
    /// Packets dropped (new flows refused included) for `reason`.
    pub fn drops(&self, reason: NatDrop) -> u64 {
        self.drops[reason.index()]
    }

    /// Every reason with a non-zero count.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (NatDrop, u64)> + '_ {
        NatDrop::ALL
            .iter()
            .map(|r| (*r, self.drops[r.index()]))
            .filter(|(_, n)| *n > 0)
    }

    /// New flows refused: table full, quotas, port allocation, no EIP.
    pub fn refused(&self) -> u64 {
        [
            NatDrop::TableFull,
            NatDrop::QuotaConnections,
            NatDrop::QuotaRate,
            NatDrop::SourceRate,
            NatDrop::SourceHalfOpen,
            NatDrop::PortAllocation,
            NatDrop::NoEip,
        ]
        .iter()
        .map(|r| self.drops(*r))
        .sum()
    }
}

impl Default for NatCounters {
    fn default() -> Self {
        NatCounters {
            active_sessions: 0,
            half_open: 0,
            mappings: 0,
            attempts: 0,
            created: 0,
            expired: 0,
            early_dropped: 0,
            out_packets: 0,
            out_bytes: 0,
            in_packets: 0,
            in_bytes: 0,
            rst_replies: 0,
            syn_cookies: 0,
            syn_proxied: 0,
            drops: [0; NatDrop::COUNT],
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct DnatTarget {
    int: (u32, u16),
    owner: u32,
}

/// One NAT gateway. See the module docs for how to drive it.
#[derive(Debug, Clone)]
pub struct NatGateway {
    config: NatConfig,
    ct: ConnTrack,
    alloc: PortAllocator,
    frags: FragTable,
    dnat: HashMap<(Proto, u32, u16), DnatTarget, FixedState>,
    one_to_one_by_eip: HashMap<u32, u32, FixedState>,
    one_to_one_by_int: HashMap<u32, u32, FixedState>,
    /// New inbound flows per outside source per second.
    sources: SourceLimiter,
    /// The SYN proxy's cookie key (used only with `syn_proxy`).
    cookies: synproxy::Cookies,
    counters: NatCounters,
}

const TOO_MANY_EIPS: &str = "a NAT gateway's SNAT pool has at most 65,536 EIPs";

fn v4(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

fn alloc_drop(e: AllocError) -> NatDrop {
    match e {
        AllocError::NoEip => NatDrop::NoEip,
        AllocError::Exhausted => NatDrop::PortAllocation,
    }
}

impl NatGateway {
    /// A gateway translating to `eips` (the SNAT pool). `seed` keys the hashers and the port
    /// RNG: the runtime must pass an unpredictable value (guests choose 5-tuples and could
    /// otherwise aim at one hash bucket or predict ports); tests and the simulator pass a fixed
    /// one for reproducible runs.
    pub fn new(config: NatConfig, eips: &[Ipv4Addr], seed: u64) -> Result<Self, NatError> {
        config.validate().map_err(NatError::InvalidConfig)?;
        if eips.len() > 1 << 16 {
            return Err(NatError::InvalidConfig(TOO_MANY_EIPS));
        }
        let pool: Vec<u32> = eips.iter().map(|a| u32::from(*a)).collect();
        let ticks = config.fragment_timeout.as_secs().clamp(1, 3600) as u32;
        Ok(NatGateway {
            ct: ConnTrack::new(&config, seed),
            alloc: PortAllocator::new(
                &pool,
                config.port_range,
                config.port_preservation,
                config.ports_per_owner,
                seed.rotate_left(7),
            ),
            frags: FragTable::new(config.fragment_entries, ticks, seed.rotate_left(13)),
            dnat: HashMap::with_hasher(FixedState::with_seed(seed ^ 1)),
            one_to_one_by_eip: HashMap::with_hasher(FixedState::with_seed(seed ^ 2)),
            one_to_one_by_int: HashMap::with_hasher(FixedState::with_seed(seed ^ 3)),
            sources: SourceLimiter::new(config.per_source_new_per_sec, seed ^ 4),
            cookies: synproxy::Cookies::new(seed ^ 5),
            counters: NatCounters::default(),
            config,
        })
    }

    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// Translates a private -> public packet (`pkt` starts with its IPv4 header; the fabric has
    /// validated it and done the hop). Finds or creates the session (and mapping), rewrites the
    /// source to the EIP and external port. `owner` identifies the sending instance for quotas,
    /// port blocks and flow logs.
    pub fn outbound(
        &mut self,
        now: Instant,
        owner: u32,
        pkt: &mut [u8],
    ) -> Result<Translated, NatDrop> {
        let len = pkt.len();
        let r =
            translate::parse(pkt).and_then(|p| self.outbound_inner(tick(now), owner, pkt, len, &p));
        self.account(r, Dir::Out, pkt)
    }

    /// [`NatGateway::outbound`] for a packet the fabric has checked already (`pkt` is exactly
    /// a packet [`Ipv4Packet::new_checked`] accepts), whose transport checksum is in state
    /// `csum`.
    pub fn outbound_checked(
        &mut self,
        now: Instant,
        owner: u32,
        pkt: &mut [u8],
        csum: L4Checksum,
    ) -> Result<Translated, NatDrop> {
        let len = pkt.len();
        let r = translate::from_view(&Ipv4Packet::new_unchecked(&*pkt), csum)
            .and_then(|p| self.outbound_inner(tick(now), owner, pkt, len, &p));
        self.account(r, Dir::Out, pkt)
    }

    /// [`NatGateway::outbound_checked`] for the packet `buf[..len]` in a longer buffer, which
    /// packets the gateway writes back may fill (the SYN proxy completes an instance's handshake
    /// with the client's first early segment).
    pub fn outbound_in_buffer(
        &mut self,
        now: Instant,
        owner: u32,
        buf: &mut [u8],
        len: usize,
        csum: L4Checksum,
    ) -> Result<Translated, NatDrop> {
        let r = translate::from_view(&Ipv4Packet::new_unchecked(&buf[..len]), csum)
            .and_then(|p| self.outbound_inner(tick(now), owner, buf, len, &p));
        self.account(r, Dir::Out, buf)
    }

    /// Translates a public -> private packet addressed to one of the gateway's addresses: an
    /// existing session, a DNAT rule, a mapping whose filtering admits the sender, or a 1:1 EIP.
    pub fn inbound(&mut self, now: Instant, pkt: &mut [u8]) -> Result<Translated, NatDrop> {
        let len = pkt.len();
        let r =
            translate::parse(pkt).and_then(|p| self.inbound_inner(tick(now), pkt, len, &p, false));
        self.account(r, Dir::In, pkt)
    }

    /// [`NatGateway::inbound`] for a packet the fabric has checked already (as in
    /// [`NatGateway::outbound_checked`]).
    pub fn inbound_checked(
        &mut self,
        now: Instant,
        pkt: &mut [u8],
        csum: L4Checksum,
    ) -> Result<Translated, NatDrop> {
        let len = pkt.len();
        let r = translate::from_view(&Ipv4Packet::new_unchecked(&*pkt), csum)
            .and_then(|p| self.inbound_inner(tick(now), pkt, len, &p, false));
        self.account(r, Dir::In, pkt)
    }

    /// [`NatGateway::inbound_checked`] for the packet `buf[..len]` in a longer buffer (see
    /// [`NatGateway::outbound_in_buffer`]). `from_public`: it comes from an outside sender, not
    /// hairpinned from a VPC, so the SYN proxy (`syn_proxy`) may answer it: it answers only
    /// where its reply can go straight back to the sender.
    pub fn inbound_in_buffer(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        csum: L4Checksum,
        from_public: bool,
    ) -> Result<Translated, NatDrop> {
        let r = translate::from_view(&Ipv4Packet::new_unchecked(&buf[..len]), csum)
            .and_then(|p| self.inbound_inner(tick(now), buf, len, &p, from_public));
        self.account(r, Dir::In, buf)
    }

    fn account(
        &mut self,
        r: Result<Translated, NatDrop>,
        dir: Dir,
        pkt: &[u8],
    ) -> Result<Translated, NatDrop> {
        match r {
            Ok(Translated::Forward { .. } | Translated::Rebuilt { .. }) => {
                // A translated packet was checked (and its length kept, or rebuilt whole): its
                // header is there.
                let len = u64::from(Ipv4Packet::new_unchecked(pkt).total_len());
                let c = &mut self.counters;
                match dir {
                    Dir::Out => {
                        c.out_packets += 1;
                        c.out_bytes += len;
                    }
                    Dir::In => {
                        c.in_packets += 1;
                        c.in_bytes += len;
                    }
                }
            }
            Ok(Translated::ReplyRst { .. }) => self.counters.rst_replies += 1,
            Ok(Translated::Reply { .. }) => {}
            Err(d) => self.counters.drops[d.index()] += 1,
        }
        r
    }

    /// Looks a session up, removing it first if its idle timeout has passed.
    fn live(&mut self, found: Option<u32>, now: u32) -> Option<u32> {
        let i = found?;
        if self.ct.is_expired(i, now) {
            self.ct.remove(i, now, &mut self.alloc);
            self.counters.expired += 1;
            return None;
        }
        Some(i)
    }

    fn record_fragment(
        &mut self,
        p: &Parsed,
        dir: Dir,
        new_addr: u32,
        now: u32,
    ) -> Result<(), NatDrop> {
        if p.frag != Frag::First {
            return Ok(());
        }
        let key = FragKey {
            dir,
            src: p.src,
            dst: p.dst,
            proto: p.proto.number(),
            ident: p.ident,
        };
        self.frags.insert(key, new_addr, now)
    }

    fn later_fragment(
        &mut self,
        pkt: &mut [u8],
        p: &Parsed,
        dir: Dir,
        now: u32,
    ) -> Result<Translated, NatDrop> {
        let key = FragKey {
            dir,
            src: p.src,
            dst: p.dst,
            proto: p.proto.number(),
            ident: p.ident,
        };
        let new = self
            .frags
            .lookup(&key, now)
            .ok_or(NatDrop::FragmentOutOfOrder)?;
        let (side, internal, external) = match dir {
            Dir::Out => (AddrField::Src, p.src, new),
            Dir::In => (AddrField::Dst, new, p.dst),
        };
        translate::rewrite(pkt, p, side, new, 0);
        Ok(Translated::Forward {
            internal: v4(internal),
            external: v4(external),
            owner: NO_OWNER,
        })
    }

    /// 1:1 EIP: address only, both directions, stateless (ICMP errors included).
    fn one_to_one(
        &mut self,
        pkt: &mut [u8],
        p: &Parsed,
        dir: Dir,
        to: u32,
        now: u32,
    ) -> Result<Translated, NatDrop> {
        let (side, internal, external) = match dir {
            Dir::Out => (AddrField::Src, p.src, to),
            Dir::In => (AddrField::Dst, to, p.dst),
        };
        if p.is_icmp_error() {
            let inner = translate::parse_error(pkt, p, dir)?;
            let (quoted, port) = match dir {
                Dir::In => (inner.src, inner.sport),
                Dir::Out => (inner.dst, inner.dport),
            };
            if quoted != if dir == Dir::In { external } else { internal } {
                return Err(NatDrop::IcmpErrorNoMapping);
            }
            translate::rewrite_error(pkt, p, &inner, dir, to, port);
        } else {
            // A 1:1 EIP keeps no sessions, so a new inbound connection is only its SYN: the
            // outside source's rate of them is bounded as for a DNAT rule (a SYN flood from one
            // address stops here instead of reaching the instance).
            if dir == Dir::In
                && p.tcp_flags() & (TCP_SYN | TCP_ACK) == TCP_SYN
                && !self.sources.admit(p.src, now)
            {
                return Err(NatDrop::SourceRate);
            }
            self.record_fragment(p, dir, to, now)?;
            let port = p.ports(dir).0;
            translate::rewrite(pkt, p, side, to, port);
        }
        Ok(Translated::Forward {
            internal: v4(internal),
            external: v4(external),
            owner: NO_OWNER,
        })
    }

    #[inline(always)]
    fn outbound_inner(
        &mut self,
        now: u32,
        owner: u32,
        buf: &mut [u8],
        len: usize,
        p: &Parsed,
    ) -> Result<Translated, NatDrop> {
        if p.frag == Frag::Later {
            return self.later_fragment(&mut buf[..len], p, Dir::Out, now);
        }
        if !self.one_to_one_by_int.is_empty()
            && let Some(eip) = self.one_to_one_by_int.get(&p.src).copied()
        {
            return self.one_to_one(&mut buf[..len], p, Dir::Out, eip, now);
        }
        if p.is_icmp_error() {
            return self.error_out(&mut buf[..len], p);
        }
        let (lport, rport) = p.ports(Dir::Out);
        let int = (p.src, lport);
        let rem = (p.dst, rport);
        let found = self.ct.lookup_out(p.proto, int, rem);
        let i = match self.live(found, now) {
            Some(i) if self.ct.proxied(i).is_some() => {
                if let Some(reply) = self.proxy_out(i, buf, len, p, now)? {
                    return Ok(reply);
                }
                i
            }
            Some(i) => i,
            None => match self.new_outbound(&mut buf[..len], p, owner, int, rem, now)? {
                Ok(i) => i,
                Err(rst) => return Ok(rst),
            },
        };
        let pkt = &mut buf[..len];
        let s = *self.ct.session(i);
        self.record_fragment(p, Dir::Out, s.ext_ip, now)?;
        translate::rewrite(pkt, p, AddrField::Src, s.ext_ip, s.ext_port);
        self.ct.touch(i, Dir::Out, p.tcp_flags(), p.total, now);
        Ok(Translated::Forward {
            internal: v4(s.int_ip),
            external: v4(s.ext_ip),
            owner: s.owner,
        })
    }

    /// Creates the session for a new outbound flow; `Ok(Err(rst))` when the answer is a RST.
    fn new_outbound(
        &mut self,
        pkt: &mut [u8],
        p: &Parsed,
        owner: u32,
        int: (u32, u16),
        rem: (u32, u16),
        now: u32,
    ) -> Result<Result<u32, Translated>, NatDrop> {
        match p.l4 {
            L4::Tcp { flags, .. } if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN => {
                if self.config.aws_rst_on_expired && flags & TCP_RST == 0 {
                    let len = translate::write_rst(pkt, p)?;
                    return Ok(Err(Translated::ReplyRst { len }));
                }
                return Err(NatDrop::TcpNoSession);
            }
            L4::IcmpQuery { request: false, .. } => return Err(NatDrop::NoMapping),
            _ => {}
        }
        self.counters.attempts += 1;
        self.ct.admit(owner, now, &mut self.alloc, false)?;
        let proto = p.proto;
        let (ext, mapping) = match self.config.mapping {
            Mapping::EndpointIndependent => {
                let (m, ext) = self
                    .ct
                    .get_or_create_mapping(proto, int, owner, &mut self.alloc)
                    .map_err(alloc_drop)?;
                (ext, m)
            }
            Mapping::AddressAndPortDependent => {
                let ct = &self.ct;
                let ext = self
                    .alloc
                    .allocate(proto, int.0, int.1, owner, false, |ip, port| {
                        ct.lookup_in(proto, (ip, port), rem).is_some()
                    })
                    .map_err(alloc_drop)?;
                (ext, NONE)
            }
        };
        if self.ct.lookup_in(proto, ext, rem).is_some() {
            return Err(NatDrop::Conflict);
        }
        let i = self.ct.insert(
            NewSession {
                proto,
                int,
                ext,
                rem,
                owner,
                mapping,
                opened_in: false,
            },
            now,
        );
        self.counters.created += 1;
        Ok(Ok(i))
    }

    #[inline(always)]
    fn inbound_inner(
        &mut self,
        now: u32,
        buf: &mut [u8],
        len: usize,
        p: &Parsed,
        from_public: bool,
    ) -> Result<Translated, NatDrop> {
        if p.frag == Frag::Later {
            return self.later_fragment(&mut buf[..len], p, Dir::In, now);
        }
        if !self.one_to_one_by_eip.is_empty()
            && let Some(int) = self.one_to_one_by_eip.get(&p.dst).copied()
        {
            return self.one_to_one(&mut buf[..len], p, Dir::In, int, now);
        }
        if p.is_icmp_error() {
            return self.error_in(&mut buf[..len], p);
        }
        let (lport, rport) = p.ports(Dir::In);
        let ext = (p.dst, lport);
        let rem = (p.src, rport);
        let found = self.ct.lookup_in(p.proto, ext, rem);
        let i = match self.live(found, now) {
            Some(i) if self.ct.proxied(i).is_some() => {
                if p.tcp_flags() & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    // A new connection on the 5-tuple of a proxied one: cookies again.
                    self.ct.remove(i, now, &mut self.alloc);
                    return self.proxy_open(buf, len, p, ext, rem, now);
                }
                self.proxy_in(i, &mut buf[..len], p)?;
                i
            }
            None if from_public && self.proxies(p, ext) => {
                return self.proxy_open(buf, len, p, ext, rem, now);
            }
            // A SYN again on a session the remote opened and never completed (a retransmission,
            // or a flood that came round to the same source port), or a new connection on a
            // closed session's 5-tuple: one more attempt against the source's budgets, so a
            // flood cannot pass through the sessions it made.
            Some(i) if p.tcp_flags() & (TCP_SYN | TCP_ACK) == TCP_SYN => {
                match self.ct.inbound_syn_attempt(i) {
                    Some(true) if !self.ct.half_open_room(rem.0) => {
                        return Err(NatDrop::SourceHalfOpen);
                    }
                    Some(_) if !self.sources.admit(rem.0, now) => {
                        return Err(NatDrop::SourceRate);
                    }
                    _ => i,
                }
            }
            Some(i) => i,
            None => self.new_inbound(p, ext, rem, now)?,
        };
        let pkt = &mut buf[..len];
        let s = *self.ct.session(i);
        self.record_fragment(p, Dir::In, s.int_ip, now)?;
        translate::rewrite(pkt, p, AddrField::Dst, s.int_ip, s.int_port);
        self.ct.touch(i, Dir::In, p.tcp_flags(), p.total, now);
        Ok(Translated::Forward {
            internal: v4(s.int_ip),
            external: v4(s.ext_ip),
            owner: s.owner,
        })
    }

    /// Whether the SYN proxy answers this inbound packet without a session: the gateway proxies,
    /// and it is a whole TCP segment to a DNAT rule's address and port.
    fn proxies(&self, p: &Parsed, ext: (u32, u16)) -> bool {
        self.config.syn_proxy
            && p.proto == Proto::Tcp
            && p.frag == Frag::Whole
            && self.dnat.contains_key(&(Proto::Tcp, ext.0, ext.1))
    }

    /// The SYN proxy, for a segment without a session to a DNAT rule: a SYN is answered with a
    /// cookie and forgotten; an ACK returning a valid cookie opens the session (the budgets of a
    /// new inbound flow apply, not the half-open one: the client has completed its handshake)
    /// and becomes the SYN to the instance.
    fn proxy_open(
        &mut self,
        buf: &mut [u8],
        len: usize,
        p: &Parsed,
        ext: (u32, u16),
        rem: (u32, u16),
        now: u32,
    ) -> Result<Translated, NatDrop> {
        let (t, flags) = (p.ihl, p.tcp_flags());
        let tuple = (rem.0, rem.1, ext.0, ext.1);
        let pkt = &mut buf[..len];
        let (seq, ack) = (synproxy::seq(pkt, t), synproxy::ack(pkt, t));
        if flags & (TCP_SYN | TCP_ACK | TCP_RST | crate::dataplane::packet::TCP_FIN) == TCP_SYN {
            // The source's rate of new inbound flows applies to its SYNs (each answer costs a
            // packet back, and a flood beyond the rate must be a counted drop, so that the
            // runtime rests the flooding port), not again to the ACKs that return the cookies.
            if !self.sources.admit(rem.0, now) {
                return Err(NatDrop::SourceRate);
            }
            let o = synproxy::syn_options(synproxy::tcp_options(pkt, t));
            let cookie = self.cookies.make(tuple, seq, now, o);
            let n = synproxy::write_syn_ack(pkt, t, cookie).ok_or(NatDrop::Malformed)?;
            self.counters.syn_cookies += 1;
            return Ok(Translated::Reply { len: n });
        }
        if flags & (TCP_SYN | TCP_RST | TCP_ACK) != TCP_ACK {
            return Err(NatDrop::NoMapping);
        }
        let (isn, cookie) = (seq.wrapping_sub(1), ack.wrapping_sub(1));
        let Some(o) = self.cookies.check(tuple, isn, cookie, now) else {
            return Err(NatDrop::SynProxyCookie);
        };
        let Some(target) = self.dnat.get(&(Proto::Tcp, ext.0, ext.1)).copied() else {
            return Err(NatDrop::NoMapping);
        };
        if buf.len() < synproxy::SYN_LEN {
            return Err(NatDrop::Malformed);
        }
        self.counters.attempts += 1;
        if self.ct.lookup_out(Proto::Tcp, target.int, rem).is_some() {
            return Err(NatDrop::Conflict);
        }
        self.ct.admit(target.owner, now, &mut self.alloc, true)?;
        let pkt = &buf[..len];
        let early = synproxy::has_payload(pkt, t) && len <= synproxy::HELD_MAX;
        let st = Proxied {
            cookie,
            client_isn: isn,
            client_window: synproxy::window(pkt, t),
            proxy_ws: o.wscale.map(|_| synproxy::PROXY_WSCALE),
            phase: Phase::Opening {
                held: early.then(|| pkt.into()),
            },
        };
        let n = synproxy::write_syn(buf, t, &st, o).ok_or(NatDrop::Malformed)?;
        let i = self.ct.insert(
            NewSession {
                proto: Proto::Tcp,
                int: target.int,
                ext,
                rem,
                owner: target.owner,
                mapping: NONE,
                opened_in: true,
            },
            now,
        );
        self.counters.created += 1;
        self.counters.syn_proxied += 1;
        self.ct.touch(i, Dir::In, TCP_SYN, n, now);
        self.ct.set_proxied(i, st);
        let pkt = &mut buf[..n];
        let q = translate::parse(pkt)?;
        translate::rewrite(pkt, &q, AddrField::Dst, target.int.0, target.int.1);
        Ok(Translated::Rebuilt {
            len: n as u32,
            internal: v4(target.int.0),
            owner: target.owner,
        })
    }

    /// Client -> instance on a proxied session: shifted into the instance's sequence space once
    /// both halves are open; before that, the first early segment is kept and the rest dropped
    /// (a RST passes: the client gave up).
    fn proxy_in(&mut self, i: u32, pkt: &mut [u8], p: &Parsed) -> Result<(), NatDrop> {
        let complete = p.csum == L4Checksum::Complete;
        let Some(st) = self.ct.proxied_mut(i) else {
            return Ok(());
        };
        match &mut st.phase {
            Phase::Open { .. } => {
                synproxy::shift_in(pkt, p.ihl, st, complete);
                Ok(())
            }
            Phase::Opening { .. } if p.tcp_flags() & TCP_RST != 0 => Ok(()),
            Phase::Opening { held } => {
                if held.is_none()
                    && synproxy::has_payload(pkt, p.ihl)
                    && pkt.len() <= synproxy::HELD_MAX
                {
                    *held = Some((&*pkt).into());
                    return Err(NatDrop::SynProxyHeld);
                }
                Err(NatDrop::SynProxyPending)
            }
        }
    }

    /// Instance -> client on a proxied session: its SYN-ACK completes its half (answered here
    /// with the handshake's last ACK, `Some`), its RST to the proxy's SYN goes to the client in
    /// the client's sequence space, and once open every segment is shifted into the client's.
    fn proxy_out(
        &mut self,
        i: u32,
        buf: &mut [u8],
        len: usize,
        p: &Parsed,
        now: u32,
    ) -> Result<Option<Translated>, NatDrop> {
        let (t, complete) = (p.ihl, p.csum == L4Checksum::Complete);
        let Some(st) = self.ct.proxied_mut(i) else {
            return Ok(None);
        };
        match st.phase {
            Phase::Open { .. } => {
                synproxy::shift_out(&mut buf[..len], t, st, complete);
                return Ok(None);
            }
            Phase::Opening { .. } if p.tcp_flags() & TCP_RST != 0 => {
                synproxy::refuse_in_client_space(&mut buf[..len], t, st, complete);
                return Ok(None);
            }
            Phase::Opening { .. } => {}
        }
        let Some((server_isn, server_ws)) = synproxy::server_syn_ack(&buf[..len], t, st) else {
            return Err(NatDrop::SynProxyPending);
        };
        let held = match &mut st.phase {
            Phase::Opening { held } => held.take(),
            Phase::Open { .. } => None,
        };
        let n = synproxy::write_final_ack(buf, t, st, server_isn, held.as_deref())
            .ok_or(NatDrop::Malformed)?;
        st.phase = Phase::Open {
            delta: st.cookie.wrapping_sub(server_isn),
            server_ws,
        };
        self.ct.touch(i, Dir::Out, TCP_SYN | TCP_ACK, len, now);
        Ok(Some(Translated::Reply { len: n }))
    }

    /// A session for an inbound-initiated flow: a DNAT rule, or a mapping whose filtering admits
    /// the remote (RFC 4787 REQ-8). Only TCP SYNs and UDP open one.
    fn new_inbound(
        &mut self,
        p: &Parsed,
        ext: (u32, u16),
        rem: (u32, u16),
        now: u32,
    ) -> Result<u32, NatDrop> {
        let opens = match p.l4 {
            L4::Tcp { flags, .. } => flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN,
            L4::Udp { .. } => true,
            _ => false,
        };
        let proto = p.proto;
        let (int, owner, mapping) = if let Some(t) = self.dnat.get(&(proto, ext.0, ext.1)).copied()
        {
            if !opens {
                return Err(NatDrop::NoMapping);
            }
            (t.int, t.owner, NONE)
        } else {
            let m = match (self.config.mapping, self.config.filtering) {
                (Mapping::AddressAndPortDependent, _) => None,
                (_, Filtering::AddressAndPortDependent) => {
                    // No external index is kept: the port bitmap tells whether a mapping
                    // exists (DNAT reservations were matched above), for the drop reason only.
                    return Err(if self.alloc.is_used(proto, ext.0, ext.1) {
                        NatDrop::Filtered
                    } else {
                        NatDrop::NoMapping
                    });
                }
                _ => self
                    .alloc
                    .slot_of(ext.0)
                    .and_then(|slot| self.ct.mapping_by_ext(proto, slot, ext.1)),
            };
            let Some(m) = m.filter(|m| self.ct.mapping_refs(*m) > 0) else {
                return Err(NatDrop::NoMapping);
            };
            let admitted = match self.config.filtering {
                Filtering::EndpointIndependent => true,
                Filtering::AddressDependent => self.ct.mapping_has_remote(m, rem.0),
                Filtering::AddressAndPortDependent => false,
            };
            if !admitted || !opens {
                return Err(NatDrop::Filtered);
            }
            let x = self.ct.mapping(m);
            ((x.int_ip, x.int_port), x.owner, m)
        };
        self.counters.attempts += 1;
        if self.ct.lookup_out(proto, int, rem).is_some() {
            return Err(NatDrop::Conflict);
        }
        if proto == Proto::Tcp && !self.ct.half_open_room(rem.0) {
            return Err(NatDrop::SourceHalfOpen);
        }
        if !self.sources.admit(rem.0, now) {
            return Err(NatDrop::SourceRate);
        }
        self.ct.admit(owner, now, &mut self.alloc, true)?;
        let i = self.ct.insert(
            NewSession {
                proto,
                int,
                ext,
                rem,
                owner,
                mapping,
                opened_in: true,
            },
            now,
        );
        self.counters.created += 1;
        Ok(i)
    }

    /// An ICMP error from the public side about a packet that went out (RFC 5508): never creates
    /// or refreshes a session.
    fn error_in(&mut self, pkt: &mut [u8], p: &Parsed) -> Result<Translated, NatDrop> {
        let inner = translate::parse_error(pkt, p, Dir::In)?;
        let i = self
            .ct
            .lookup_in(
                inner.proto,
                (inner.src, inner.sport),
                (inner.dst, inner.dport),
            )
            .ok_or(NatDrop::IcmpErrorNoMapping)?;
        let s = *self.ct.session(i);
        if p.dst != s.ext_ip {
            return Err(NatDrop::IcmpErrorNoMapping);
        }
        translate::rewrite_error(pkt, p, &inner, Dir::In, s.int_ip, s.int_port);
        Ok(Translated::Forward {
            internal: v4(s.int_ip),
            external: v4(s.ext_ip),
            owner: s.owner,
        })
    }

    /// An ICMP error from an internal host about a packet that came in.
    fn error_out(&mut self, pkt: &mut [u8], p: &Parsed) -> Result<Translated, NatDrop> {
        let inner = translate::parse_error(pkt, p, Dir::Out)?;
        let i = self
            .ct
            .lookup_out(
                inner.proto,
                (inner.dst, inner.dport),
                (inner.src, inner.sport),
            )
            .ok_or(NatDrop::IcmpErrorNoMapping)?;
        let s = *self.ct.session(i);
        translate::rewrite_error(pkt, p, &inner, Dir::Out, s.ext_ip, s.ext_port);
        Ok(Translated::Forward {
            internal: v4(s.int_ip),
            external: v4(s.ext_ip),
            owner: s.owner,
        })
    }

    /// The uplink's host socket for the external endpoint `ext` (one of this gateway's EIPs and
    /// a port it handed out) got the port `port` instead, the mapped one being in use on the
    /// host: the sessions using `ext`, and their endpoint-independent mapping, move to `port`,
    /// so connection listings, flow logs and later flows of the mapping name the port the
    /// outside sees. `Err(PortInUse)` when `port` is taken on the EIP here (nothing changes;
    /// the host socket column still tells), `Ok(false)` when no session uses `ext`.
    pub fn move_port(
        &mut self,
        proto: Proto,
        ext: (Ipv4Addr, u16),
        port: u16,
    ) -> Result<bool, NatError> {
        let ip = u32::from(ext.0);
        if port == ext.1 || !self.alloc.contains(ip) {
            return Ok(false);
        }
        let in_use = self.alloc.is_used(proto, ip, port)
            || self
                .ct
                .views(0)
                .any(|s| s.protocol == proto && s.external == (ext.0, port));
        if in_use {
            return Err(NatError::PortInUse(ext.0, port, proto));
        }
        Ok(self
            .ct
            .move_ext_port(proto, (ip, ext.1), port, &mut self.alloc))
    }

    /// When [`NatGateway::handle_timeout`] next has work, if anything is pending (whole seconds).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ct
            .next_timeout()
            .map(|t| Instant::from_secs(u64::from(t)))
    }

    /// Expires sessions and releases quarantined ports due at `now`, a bounded batch per call
    /// (a few thousand wheel entries, well under a millisecond): when more is due,
    /// [`NatGateway::poll_timeout`] stays at or before `now`, so the caller comes back after
    /// serving its packets. Call when `now` reaches `poll_timeout`; calling it late or more often
    /// is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.counters.expired += self.ct.handle_timeout(tick(now), &mut self.alloc);
    }

    /// The live sessions (a scan; for the control plane and tests, not per packet).
    pub fn sessions(&self, now: Instant) -> impl Iterator<Item = SessionView> + '_ {
        self.ct.views(tick(now))
    }

    pub fn counters(&self) -> NatCounters {
        NatCounters {
            active_sessions: self.ct.len() as u64,
            half_open: u64::from(self.ct.half_open()),
            mappings: self.ct.mappings() as u64,
            early_dropped: self.ct.early_dropped,
            ..self.counters
        }
    }

    /// Whether a refused new flow should be answered with ICMP "administratively prohibited"
    /// (`icmp_prohibited_on_full`) rather than dropped silently.
    pub fn refusal_reply(&self, drop: NatDrop) -> bool {
        self.config.icmp_prohibited_on_full
            && matches!(
                drop,
                NatDrop::TableFull
                    | NatDrop::QuotaConnections
                    | NatDrop::QuotaRate
                    | NatDrop::SourceRate
                    | NatDrop::SourceHalfOpen
                    | NatDrop::PortAllocation
                    | NatDrop::NoEip
            )
    }

    /// Bytes held by the gateway's tables, computed from their capacities.
    pub fn memory_bytes(&self) -> usize {
        self.ct.memory_bytes()
            + self.alloc.memory_bytes()
            + self.frags.memory_bytes()
            + self.dnat.allocation_size()
            + self.one_to_one_by_eip.allocation_size()
            + self.one_to_one_by_int.allocation_size()
            + self.sources.allocation_size()
    }

    /// The SNAT pool.
    pub fn eips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.alloc.eips().map(v4)
    }

    /// Adds an EIP to the SNAT pool. Paired pooling hashes internal hosts over the pool, so new
    /// flows of some hosts may use it; existing sessions keep their EIP.
    pub fn add_eip(&mut self, eip: Ipv4Addr) -> Result<(), NatError> {
        let a = u32::from(eip);
        if self.one_to_one_by_eip.contains_key(&a) {
            return Err(NatError::AddressInUse(eip));
        }
        if !self.alloc.add_eip(a) {
            return Err(NatError::InvalidConfig(TOO_MANY_EIPS));
        }
        Ok(())
    }

    /// Removes an EIP from the pool: its sessions, mappings and DNAT rules go; nothing else is
    /// disturbed. Returns the number of sessions flushed. O(sessions): a control-plane operation.
    pub fn remove_eip(&mut self, now: Instant, eip: Ipv4Addr) -> usize {
        let a = u32::from(eip);
        let n = self
            .ct
            .remove_where(tick(now), &mut self.alloc, |s| s.ext_ip == a);
        if let Some(slot) = self.alloc.slot_of(a) {
            self.ct
                .free_idle_mappings_where(&mut self.alloc, |m| m.eip == slot);
        }
        self.dnat.retain(|k, _| k.1 != a);
        self.alloc.remove_eip(a);
        n
    }

    /// Adds a DNAT rule. On a pool EIP the port is reserved so that no mapping takes it.
    pub fn add_dnat(&mut self, rule: DnatRule) -> Result<(), NatError> {
        let protos: &[Proto] = match rule.protocol {
            None => &[Proto::Tcp, Proto::Udp],
            Some(Proto::Icmp) => return Err(NatError::IcmpDnat),
            Some(Proto::Tcp) => &[Proto::Tcp],
            Some(Proto::Udp) => &[Proto::Udp],
        };
        let (ip, port) = (u32::from(rule.external.0), rule.external.1);
        if self.one_to_one_by_eip.contains_key(&ip) {
            return Err(NatError::AddressInUse(rule.external.0));
        }
        for p in protos {
            let in_pool = self.alloc.contains(ip);
            if self.dnat.contains_key(&(*p, ip, port))
                || (in_pool && self.alloc.is_used(*p, ip, port))
            {
                return Err(NatError::PortInUse(rule.external.0, port, *p));
            }
        }
        for p in protos {
            if self.alloc.contains(ip) {
                self.alloc.reserve(*p, ip, port);
            }
            let target = DnatTarget {
                int: (u32::from(rule.internal.0), rule.internal.1),
                owner: rule.owner,
            };
            self.dnat.insert((*p, ip, port), target);
        }
        Ok(())
    }

    /// Removes a DNAT rule (`None`: both protocols) and flushes the sessions it created. Returns the
    /// number of sessions flushed.
    pub fn remove_dnat(
        &mut self,
        now: Instant,
        external: (Ipv4Addr, u16),
        protocol: Option<Proto>,
    ) -> usize {
        let (ip, port) = (u32::from(external.0), external.1);
        let mut n = 0;
        for p in [Proto::Tcp, Proto::Udp] {
            if protocol.is_some_and(|x| x != p) {
                continue;
            }
            if let Some(t) = self.dnat.remove(&(p, ip, port)) {
                n += self.ct.remove_where(tick(now), &mut self.alloc, |s| {
                    s.proto == p
                        && s.ext_ip == ip
                        && s.ext_port == port
                        && (s.int_ip, s.int_port) == t.int
                });
                if self.alloc.contains(ip) {
                    self.alloc.release(p, ip, port);
                }
            }
        }
        n
    }

    /// Associates an EIP 1:1 with an internal host: both directions, address only, stateless.
    pub fn add_one_to_one(&mut self, eip: Ipv4Addr, internal: Ipv4Addr) -> Result<(), NatError> {
        let (e, i) = (u32::from(eip), u32::from(internal));
        if self.alloc.contains(e) || self.one_to_one_by_eip.contains_key(&e) {
            return Err(NatError::AddressInUse(eip));
        }
        if self.one_to_one_by_int.contains_key(&i) {
            return Err(NatError::AddressInUse(internal));
        }
        self.one_to_one_by_eip.insert(e, i);
        self.one_to_one_by_int.insert(i, e);
        Ok(())
    }

    /// Disassociates a 1:1 EIP. Stateless, so nothing else changes.
    pub fn remove_one_to_one(&mut self, eip: Ipv4Addr) -> bool {
        match self.one_to_one_by_eip.remove(&u32::from(eip)) {
            Some(i) => {
                self.one_to_one_by_int.remove(&i);
                true
            }
            None => false,
        }
    }

    /// Removes an instance: flushes its sessions, frees its mappings at once (no reuse delay: the
    /// host is gone) and its port block. Returns the number of sessions flushed.
    pub fn remove_owner(&mut self, now: Instant, owner: u32) -> usize {
        let n = self
            .ct
            .remove_where(tick(now), &mut self.alloc, |s| s.owner == owner);
        self.ct
            .free_idle_mappings_where(&mut self.alloc, |m| m.owner == owner);
        self.alloc.release_owner(owner);
        n
    }

    /// Flushes every session (mappings enter their reuse delay). Returns how many.
    pub fn flush(&mut self, now: Instant) -> usize {
        self.ct.remove_where(tick(now), &mut self.alloc, |_| true)
    }

    /// Flushes the sessions of internal host `internal` (mappings enter their reuse delay, as
    /// after an expiry; its port block stays). Returns how many.
    pub fn flush_internal(&mut self, now: Instant, internal: Ipv4Addr) -> usize {
        let a = u32::from(internal);
        self.ct
            .remove_where(tick(now), &mut self.alloc, |s| s.int_ip == a)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_synproxy;
