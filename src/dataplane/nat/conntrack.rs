//! The connection table: sessions, endpoint-independent mappings, their two-way indices, per-owner
//! quotas and the expiry timer wheel.
//!
//! # Layout (memory target: at most 128 bytes per session at 1 M sessions)
//!
//! - Sessions live in a slab `Vec<Session>` (64 bytes each) with an intrusive free list; a session
//!   is named by its `u32` slot index.
//! - Two index-only `hashbrown::HashTable<u32>` find a session in O(1) from either side: outbound by
//!   (protocol, internal ip, internal port, remote ip, remote port), inbound by (protocol, external
//!   ip, external port, remote ip, remote port). Keys are read from the slab, so a table slot costs
//!   4 bytes plus one control byte. ICMP query sessions use the identifier as the local port and 0
//!   as the remote port.
//! - Endpoint-independent mappings (protocol, internal ip:port) -> external ip:port live in a
//!   second slab (20 bytes each: the EIP is a `u16` slot of the allocator, the session count and
//!   the quarantine deadline share a word) with two more index tables (by internal and by
//!   external endpoint) and count the sessions using them. A mapping whose last session ended is
//!   kept for `port_reuse_delay` (quarantine: its port is not handed to anybody else, but the same
//!   internal endpoint gets it back), then freed and its port released; with a delay of 0 the
//!   port is released as the last session goes (flush, expiry, removal). Symmetric (address-and-port-dependent) sessions have
//!   no mapping: the session itself holds the external port.
//! - The hasher is foldhash seeded by the caller: guests choose 5-tuples, so the runtime must pass
//!   an unpredictable seed; tests and the simulator pass a fixed one.
//!
//! # Expiry
//!
//! A hashed timing wheel of 4096 one-second buckets (68 minutes). Each session sits in the bucket
//! of its `sched` tick; a packet only moves `last_seen` (lazy rescheduling), so the hot path never
//! touches the wheel unless a state change shortens the timeout below the scheduled check. When a
//! bucket fires, each entry whose session still has `sched` in that bucket is checked against its
//! real expiry: expired ones are removed, refreshed ones re-inserted. Entries of removed or reused
//! slots are recognised by `sched` and skipped. Timeouts beyond the wheel's span are reached by
//! re-insertion. Work per [`ConnTrack::handle_timeout`] call is proportional to the entries due,
//! plus the buckets stepped over; never a scan of the table.
//!
//! A session expires at the first whole second strictly after `last_seen + timeout`, so it never
//! lives less than its timeout and at most one second more.
//!
//! # Invariants
//!
//! - At most `max_entries` live sessions; a refused flow never evicts an existing session, except
//!   a transitory TCP session when early drop is enabled.
//! - Every live session is in both index tables; a free slot is in neither.
//! - An external (ip, port, protocol) belongs to at most one mapping (the allocator's bitmap).
//! - Nothing here allocates per packet: slabs and tables grow only when a session or mapping is
//!   created, and sessions never beyond `max_entries`.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::time::Duration;

use foldhash::fast::FixedState;

use super::synproxy::Proxied;
use crate::dataplane::index::ShardedIndex;
use hashbrown::HashMap;

use super::alloc::{AllocError, PortAllocator};
use super::config::{Filtering, NatConfig};
use super::sources::HalfOpenTable;
use super::{NatDrop, Proto};
pub(crate) use crate::dataplane::wheel::tick;
use crate::dataplane::wheel::{Wheel, ticks};

/// "No index".
pub(crate) const NONE: u32 = u32::MAX;
const WHEEL: u32 = 4096;
/// Wheel entries for mappings carry this bit.
const MAP_TAG: u32 = 1 << 31;
/// Wheel entries one [`ConnTrack::handle_timeout`] call handles at most (about 400 ns each when
/// it expires a session): a tick in which 100,000 flows expire is spread over calls of well under
/// a millisecond, with the loop's packets served in between, instead of one stall of 40 ms.
const EXPIRY_BATCH: usize = 2048;
/// Slots an early-drop attempt looks at.
const EARLY_DROP_SCAN: u32 = 64;

// Session flag bits.
const SYN_OUT: u8 = 1;
const SYN_IN: u8 = 2;
const FIN_OUT: u8 = 4;
const FIN_IN: u8 = 8;
const RST: u8 = 16;
const SEEN_OUT: u8 = 32;
const SEEN_IN: u8 = 64;
const FREE: u8 = 128;
/// In [`Session::created`] (ticks stay below `MAX_TICK` = 2^30): the remote opened the session
/// (a DNAT rule, or a filter that admitted a new remote).
const OPENED_IN: u32 = 1 << 31;
/// In [`Session::created`]: the remote sent a TCP segment without SYN (the handshake's last ACK,
/// or anything after it): an [`OPENED_IN`] session is half-open until then.
const REMOTE_ACKED: u32 = 1 << 30;

pub(crate) use crate::dataplane::packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Which way a packet goes through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Private to public (the source is rewritten).
    Out,
    /// Public to private (the destination is rewritten).
    In,
}

/// One tracked flow. 64 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    pub(crate) int_ip: u32,
    pub(crate) ext_ip: u32,
    pub(crate) rem_ip: u32,
    pub(crate) int_port: u16,
    pub(crate) ext_port: u16,
    pub(crate) rem_port: u16,
    pub(crate) proto: Proto,
    flags: u8,
    pub(crate) owner: u32,
    /// The mapping index, or [`NONE`]; in a free slot, the next free slot.
    mapping: u32,
    /// The tick it was made, with [`OPENED_IN`] when the remote opened it.
    created: u32,
    last_seen: u32,
    /// The tick of this session's live wheel entry.
    sched: u32,
    pkts_out: u32,
    pkts_in: u32,
    bytes_out: u64,
    bytes_in: u64,
}

impl Session {
    fn is_free(&self) -> bool {
        self.flags & FREE != 0
    }

    fn created_at(&self) -> u32 {
        self.created & !(OPENED_IN | REMOTE_ACKED)
    }

    /// Its state. A TCP session the remote opened stays half-open ([`SessionState::SynReceived`],
    /// with the transitory timeout and early drop) until the remote sends a segment without SYN
    /// (the handshake's last ACK): a SYN flood whose SYN/ACKs the instance answers makes no
    /// established sessions, which would hold the table for hours — not even when the flood
    /// comes round to the same source port again (a repeated SYN is no handshake).
    fn state(&self) -> SessionState {
        match state_of(self.proto, self.flags) {
            SessionState::Established if self.half_open_in() => SessionState::SynReceived,
            s => s,
        }
    }

    /// The remote opened it and has not sent a segment without SYN yet.
    fn half_open_in(&self) -> bool {
        self.created & (OPENED_IN | REMOTE_ACKED) == OPENED_IN
    }

    /// Counted against its remote's half-open budget ([`HalfOpenTable`]): a TCP session the
    /// remote opened, not completed and not reset.
    fn holds_half_open(&self) -> bool {
        self.proto == Proto::Tcp && self.half_open_in() && self.flags & RST == 0
    }
}

/// An endpoint-independent mapping. 20 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MappingEntry {
    pub(crate) int_ip: u32,
    pub(crate) owner: u32,
    /// Live: the number of sessions using it, or [`QUARANTINE`] | the tick its port is released
    /// once the last one ended (sessions never exceed 2^31 - 1, ticks 2^30 + the reuse delay).
    /// In a free slot: the next free slot.
    state: u32,
    pub(crate) int_port: u16,
    pub(crate) ext_port: u16,
    /// The external address: a slot of the [`PortAllocator`] ([`PortAllocator::addr`]).
    pub(crate) eip: u16,
    pub(crate) proto: Proto,
    live: bool,
}

/// [`MappingEntry::state`] bit: the mapping has no session and waits out the port-reuse delay.
const QUARANTINE: u32 = 1 << 31;

impl MappingEntry {
    /// Sessions using the mapping (0 in quarantine or in a free slot).
    fn refs(&self) -> u32 {
        if !self.live || self.state & QUARANTINE != 0 {
            0
        } else {
            self.state
        }
    }

    /// The tick its port is released, if it is in quarantine.
    fn free_at(&self) -> Option<u32> {
        (self.live && self.state & QUARANTINE != 0).then_some(self.state & !QUARANTINE)
    }
}

/// A session's state as reported by [`super::NatGateway::sessions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// TCP: SYN seen from the internal side only.
    SynSent,
    /// TCP: SYN seen from the remote side only (DNAT or inbound on a mapping).
    SynReceived,
    /// TCP: SYN seen both ways (handshake or simultaneous open), no FIN or RST.
    Established,
    /// TCP: FIN seen one way.
    FinWait,
    /// TCP: FIN seen both ways.
    TimeWait,
    /// TCP: RST seen.
    Closing,
    /// UDP: traffic one way so far.
    Udp,
    /// UDP: traffic both ways.
    UdpStream,
    /// ICMP echo.
    IcmpQuery,
}

impl SessionState {
    /// Transitory TCP states that early drop may evict (never established or half-closed ones).
    fn early_droppable(self) -> bool {
        matches!(
            self,
            SessionState::SynSent
                | SessionState::SynReceived
                | SessionState::TimeWait
                | SessionState::Closing
        )
    }
}

fn state_of(proto: Proto, f: u8) -> SessionState {
    match proto {
        Proto::Icmp => SessionState::IcmpQuery,
        Proto::Udp if f & SEEN_OUT != 0 && f & SEEN_IN != 0 => SessionState::UdpStream,
        Proto::Udp => SessionState::Udp,
        Proto::Tcp if f & RST != 0 => SessionState::Closing,
        Proto::Tcp if f & FIN_OUT != 0 && f & FIN_IN != 0 => SessionState::TimeWait,
        Proto::Tcp if f & (FIN_OUT | FIN_IN) != 0 => SessionState::FinWait,
        Proto::Tcp if f & SYN_OUT != 0 && f & SYN_IN != 0 => SessionState::Established,
        Proto::Tcp if f & SYN_IN != 0 => SessionState::SynReceived,
        Proto::Tcp => SessionState::SynSent,
    }
}

/// One session, for people and the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    pub protocol: Proto,
    pub internal: (Ipv4Addr, u16),
    pub external: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
    pub owner: u32,
    pub state: SessionState,
    /// Since creation (whole seconds).
    pub age: Duration,
    /// Since the last refreshing packet (whole seconds).
    pub idle: Duration,
    pub packets_out: u32,
    pub packets_in: u32,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Endpoint-independent mapping (shared by the internal endpoint's sessions) or not.
    pub mapped: bool,
}

/// What a new session is made of; the first packet is counted by [`ConnTrack::touch`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewSession {
    pub(crate) proto: Proto,
    pub(crate) int: (u32, u16),
    pub(crate) ext: (u32, u16),
    pub(crate) rem: (u32, u16),
    pub(crate) owner: u32,
    pub(crate) mapping: u32,
    /// The remote opened it (see [`Session::state`]).
    pub(crate) opened_in: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct OwnerUse {
    conns: u32,
    window: u32,
    new_in_window: u32,
}

/// The connection table. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct ConnTrack {
    sessions: Vec<Session>,
    free: u32,
    live: u32,
    max: u32,
    by_out: ShardedIndex,
    by_in: ShardedIndex,
    maps: Vec<MappingEntry>,
    map_free: u32,
    maps_live: u32,
    map_by_int: ShardedIndex,
    /// Maintained only when filtering needs it (endpoint-independent or address-dependent):
    /// under address-and-port-dependent filtering no inbound packet can open a session on a
    /// mapping, so the index would cost memory for nothing.
    map_by_ext: ShardedIndex,
    index_ext: bool,
    hasher: FixedState,
    wheel: Wheel,
    track_owners: bool,
    owners: HashMap<u32, OwnerUse, FixedState>,
    max_conns: u32,
    max_rate: u32,
    /// Half-open inbound sessions per remote address.
    half_open: HalfOpenTable,
    /// A tick whose wheel entries [`ConnTrack::handle_timeout`] has handled only up to the
    /// index given (its budget ran out): its tick, its entries, the next one to handle.
    expiring: Option<(u32, Vec<u32>, usize)>,
    /// (mapping, remote ip) -> sessions, kept only under address-dependent filtering.
    adf: Option<HashMap<(u32, u32), u32, FixedState>>,
    /// Timeouts in ticks, by [`SessionState`] order of use in [`ConnTrack::timeout`].
    t_udp: u32,
    t_udp_stream: u32,
    t_established: u32,
    t_transitory: u32,
    t_time_wait: u32,
    t_icmp: u32,
    reuse_delay: u32,
    early_drop: bool,
    inbound_refresh: bool,
    early_cursor: u32,
    /// Early-dropped sessions since creation.
    pub(crate) early_dropped: u64,
    /// What the SYN proxy keeps of the sessions it opened, by session index (empty unless the
    /// gateway proxies SYNs, so other gateways pay one emptiness check per packet).
    proxied: HashMap<u32, Proxied, FixedState>,
}

fn key_hash(h: &FixedState, proto: Proto, a_ip: u32, a_port: u16, b_ip: u32, b_port: u16) -> u64 {
    h.hash_one((
        (u64::from(a_ip) << 32) | u64::from(b_ip),
        (u64::from(proto as u8) << 32) | (u64::from(a_port) << 16) | u64::from(b_port),
    ))
}

fn map_hash(h: &FixedState, proto: Proto, ip: u32, port: u16) -> u64 {
    h.hash_one((u64::from(ip) << 24) | (u64::from(port) << 8) | u64::from(proto as u8))
}

impl ConnTrack {
    pub(crate) fn new(config: &NatConfig, seed: u64) -> Self {
        let t = &config.timeouts;
        let max = config.max_entries.clamp(1, (MAP_TAG - 1) as usize) as u32;
        let initial = (max as usize).min(1024);
        let hasher = FixedState::with_seed(seed);
        ConnTrack {
            sessions: Vec::with_capacity(initial),
            free: NONE,
            live: 0,
            max,
            by_out: ShardedIndex::new(max as usize, initial),
            by_in: ShardedIndex::new(max as usize, initial),
            maps: Vec::new(),
            map_free: NONE,
            maps_live: 0,
            map_by_int: ShardedIndex::new(max as usize, 0),
            map_by_ext: ShardedIndex::new(max as usize, 0),
            index_ext: config.filtering != Filtering::AddressAndPortDependent,
            hasher,
            wheel: Wheel::new(WHEEL),
            track_owners: config.per_instance_max_conns.is_some()
                || config.per_instance_new_per_sec.is_some(),
            owners: HashMap::with_hasher(FixedState::with_seed(seed.rotate_left(17))),
            max_conns: config.per_instance_max_conns.unwrap_or(u32::MAX),
            max_rate: config.per_instance_new_per_sec.unwrap_or(u32::MAX),
            half_open: HalfOpenTable::new(config.half_open_per_source, seed.rotate_left(41)),
            expiring: None,
            adf: (config.filtering == Filtering::AddressDependent)
                .then(|| HashMap::with_hasher(FixedState::with_seed(seed.rotate_left(29)))),
            t_udp: ticks(t.udp),
            t_udp_stream: ticks(t.udp_stream),
            t_established: ticks(t.tcp_established),
            t_transitory: ticks(t.tcp_transitory),
            t_time_wait: ticks(t.tcp_time_wait),
            t_icmp: ticks(t.icmp),
            // Mappings are never re-inserted in the wheel, so the delay must fit its span.
            reuse_delay: ticks(config.port_reuse_delay).min(WHEEL - 1),
            early_drop: config.early_drop_transitory,
            inbound_refresh: config.inbound_refresh,
            early_cursor: 0,
            early_dropped: 0,
            proxied: HashMap::with_hasher(FixedState::with_seed(seed.rotate_left(47))),
        }
    }

    /// Live sessions.
    pub(crate) fn len(&self) -> usize {
        self.live as usize
    }

    /// Mappings, including those in their reuse delay.
    pub(crate) fn mappings(&self) -> usize {
        self.maps_live as usize
    }

    pub(crate) fn session(&self, i: u32) -> &Session {
        &self.sessions[i as usize]
    }

    pub(crate) fn mapping(&self, m: u32) -> &MappingEntry {
        &self.maps[m as usize]
    }

    /// The SYN proxy's record of session `i`, when the proxy opened it.
    #[inline]
    pub(crate) fn proxied(&self, i: u32) -> Option<&Proxied> {
        if self.proxied.is_empty() {
            return None;
        }
        self.proxied.get(&i)
    }

    pub(crate) fn proxied_mut(&mut self, i: u32) -> Option<&mut Proxied> {
        self.proxied.get_mut(&i)
    }

    /// Records what the SYN proxy keeps of the session it just opened (`i`), whose client has
    /// completed its handshake: the session is not half-open.
    pub(crate) fn set_proxied(&mut self, i: u32, p: Proxied) {
        let s = &mut self.sessions[i as usize];
        let held = s.holds_half_open();
        s.created |= REMOTE_ACKED;
        if held && !s.holds_half_open() {
            let ip = s.rem_ip;
            self.half_open.remove(ip);
        }
        self.proxied.insert(i, p);
    }

    /// Outbound lookup: (protocol, internal, remote).
    pub(crate) fn lookup_out(&self, proto: Proto, int: (u32, u16), rem: (u32, u16)) -> Option<u32> {
        let h = key_hash(&self.hasher, proto, int.0, int.1, rem.0, rem.1);
        let s = &self.sessions;
        self.by_out.find(h, |&i| {
            let x = &s[i as usize];
            x.int_ip == int.0
                && x.rem_ip == rem.0
                && x.int_port == int.1
                && x.rem_port == rem.1
                && x.proto == proto
        })
    }

    /// Inbound lookup: (protocol, external, remote).
    pub(crate) fn lookup_in(&self, proto: Proto, ext: (u32, u16), rem: (u32, u16)) -> Option<u32> {
        let h = key_hash(&self.hasher, proto, ext.0, ext.1, rem.0, rem.1);
        let s = &self.sessions;
        self.by_in.find(h, |&i| {
            let x = &s[i as usize];
            x.ext_ip == ext.0
                && x.rem_ip == rem.0
                && x.ext_port == ext.1
                && x.rem_port == rem.1
                && x.proto == proto
        })
    }

    /// The mapping of an internal endpoint (live or in its reuse delay).
    pub(crate) fn mapping_by_int(&self, proto: Proto, ip: u32, port: u16) -> Option<u32> {
        let h = map_hash(&self.hasher, proto, ip, port);
        let m = &self.maps;
        self.map_by_int.find(h, |&i| {
            let x = &m[i as usize];
            x.int_ip == ip && x.int_port == port && x.proto == proto
        })
    }

    /// The mapping holding an external endpoint, the EIP given by its allocator slot (always
    /// `None` under address-and-port-dependent filtering, where this index is not kept).
    pub(crate) fn mapping_by_ext(&self, proto: Proto, eip: u16, port: u16) -> Option<u32> {
        if !self.index_ext {
            return None;
        }
        let h = map_hash(&self.hasher, proto, u32::from(eip), port);
        let m = &self.maps;
        self.map_by_ext.find(h, |&i| {
            let x = &m[i as usize];
            x.eip == eip && x.ext_port == port && x.proto == proto
        })
    }

    /// Sessions using a mapping (0: in its reuse delay).
    pub(crate) fn mapping_refs(&self, m: u32) -> u32 {
        self.maps[m as usize].refs()
    }

    /// Whether a mapping has a session with this remote address (address-dependent filtering).
    pub(crate) fn mapping_has_remote(&self, m: u32, rem_ip: u32) -> bool {
        self.adf
            .as_ref()
            .is_some_and(|t| t.get(&(m, rem_ip)).is_some_and(|n| *n > 0))
    }

    fn timeout(&self, s: &Session) -> u32 {
        match s.state() {
            SessionState::Udp => self.t_udp,
            SessionState::UdpStream => self.t_udp_stream,
            SessionState::IcmpQuery => self.t_icmp,
            SessionState::Established => self.t_established,
            SessionState::TimeWait => self.t_time_wait,
            SessionState::SynSent
            | SessionState::SynReceived
            | SessionState::FinWait
            | SessionState::Closing => self.t_transitory,
        }
    }

    /// The first tick at which the session is expired.
    fn expiry(&self, s: &Session) -> u32 {
        s.last_seen + self.timeout(s) + 1
    }

    /// Whether outside source `src` may open one more half-open TCP session.
    pub(crate) fn half_open_room(&self, src: u32) -> bool {
        self.half_open.has_room(src)
    }

    /// Half-open inbound TCP sessions now.
    pub(crate) fn half_open(&self) -> u32 {
        self.half_open.total()
    }

    /// What a SYN (without ACK) from the remote on session `i` is, when it is a connection
    /// attempt: `Some(false)` on a session the remote opened and never completed (a
    /// retransmission, or a flood come round to the same port), `Some(true)` when it opens a new
    /// connection on the 5-tuple of a closed one (reset or finished: it becomes half-open again).
    /// `None` on an established session, or one the inside opened.
    pub(crate) fn inbound_syn_attempt(&self, i: u32) -> Option<bool> {
        let s = &self.sessions[i as usize];
        if s.proto != Proto::Tcp || s.created & OPENED_IN == 0 {
            return None;
        }
        if s.flags & (RST | FIN_OUT | FIN_IN) != 0 {
            Some(true)
        } else {
            s.half_open_in().then_some(false)
        }
    }

    /// True if the session's idle timeout has passed (whether or not the wheel has fired yet).
    pub(crate) fn is_expired(&self, i: u32, now: u32) -> bool {
        let s = &self.sessions[i as usize];
        !s.is_free() && now >= self.expiry(s)
    }

    /// Checks the quotas and the table bound for a new session of `owner`; with early drop, may
    /// evict one transitory session to make room. Call right before creating the session.
    ///
    /// A full table makes room for an `inbound` session (one the outside opens) by dropping a
    /// half-open inbound session — the state a SYN flood leaves — even without `early_drop`, so
    /// a flood from many addresses cannot lock legitimate new connections out; with
    /// `early_drop`, any transitory session may go.
    pub(crate) fn admit(
        &mut self,
        owner: u32,
        now: u32,
        alloc: &mut PortAllocator,
        inbound: bool,
    ) -> Result<(), NatDrop> {
        if self.track_owners {
            if let Some(u) = self.owners.get(&owner) {
                if u.conns >= self.max_conns {
                    return Err(NatDrop::QuotaConnections);
                }
                if u.window == now && u.new_in_window >= self.max_rate {
                    return Err(NatDrop::QuotaRate);
                }
            } else if self.max_conns == 0 || self.max_rate == 0 {
                return Err(if self.max_conns == 0 {
                    NatDrop::QuotaConnections
                } else {
                    NatDrop::QuotaRate
                });
            }
        }
        if self.live < self.max {
            return Ok(());
        }
        if (self.early_drop || inbound) && self.early_drop_one(now, alloc, !self.early_drop) {
            return Ok(());
        }
        Err(NatDrop::TableFull)
    }

    /// Bounded scan from a rotating cursor for one droppable session (`half_open_only`: a
    /// half-open session the outside opened).
    fn early_drop_one(
        &mut self,
        now: u32,
        alloc: &mut PortAllocator,
        half_open_only: bool,
    ) -> bool {
        let n = self.sessions.len() as u32;
        if n == 0 {
            return false;
        }
        for _ in 0..EARLY_DROP_SCAN.min(n) {
            let i = self.early_cursor % n;
            self.early_cursor = self.early_cursor.wrapping_add(1);
            let s = &self.sessions[i as usize];
            let droppable = if half_open_only {
                s.holds_half_open()
            } else {
                s.state().early_droppable()
            };
            if !s.is_free() && droppable {
                self.remove(i, now, alloc);
                self.early_dropped += 1;
                return true;
            }
        }
        false
    }

    /// The mapping for an internal endpoint, reusing a live or quarantined one (RFC 4787 REQ-1),
    /// else allocating an external port. Returns it and its external (address, port).
    pub(crate) fn get_or_create_mapping(
        &mut self,
        proto: Proto,
        int: (u32, u16),
        owner: u32,
        alloc: &mut PortAllocator,
    ) -> Result<(u32, (u32, u16)), AllocError> {
        if let Some(m) = self.mapping_by_int(proto, int.0, int.1) {
            let x = &self.maps[m as usize];
            return Ok((m, (alloc.addr(x.eip), x.ext_port)));
        }
        let (eip, ext_port) =
            alloc.allocate_slot(proto, int.0, int.1, owner, true, |_, _| false)?;
        let entry = MappingEntry {
            int_ip: int.0,
            owner,
            state: 0,
            int_port: int.1,
            ext_port,
            eip,
            proto,
            live: true,
        };
        let m = if self.map_free != NONE {
            let m = self.map_free;
            self.map_free = self.maps[m as usize].state;
            self.maps[m as usize] = entry;
            m
        } else {
            self.maps.push(entry);
            (self.maps.len() - 1) as u32
        };
        let (h, maps) = (&self.hasher, &self.maps);
        self.map_by_int
            .insert_unique(map_hash(h, proto, int.0, int.1), m, |&i| {
                let x = &maps[i as usize];
                map_hash(h, x.proto, x.int_ip, x.int_port)
            });
        if self.index_ext {
            self.map_by_ext
                .insert_unique(map_hash(h, proto, u32::from(eip), ext_port), m, |&i| {
                    let x = &maps[i as usize];
                    map_hash(h, x.proto, u32::from(x.eip), x.ext_port)
                });
        }
        self.maps_live += 1;
        Ok((m, (alloc.addr(eip), ext_port)))
    }

    fn free_mapping(&mut self, m: u32, alloc: &mut PortAllocator) {
        let x = self.maps[m as usize];
        if !x.live {
            return;
        }
        let h = &self.hasher;
        self.map_by_int
            .remove(map_hash(h, x.proto, x.int_ip, x.int_port), |&i| i == m);
        self.map_by_ext
            .remove(map_hash(h, x.proto, u32::from(x.eip), x.ext_port), |&i| {
                i == m
            });
        alloc.release_slot(x.proto, x.eip, x.ext_port);
        let e = &mut self.maps[m as usize];
        e.live = false;
        e.state = self.map_free;
        self.map_free = m;
        self.maps_live -= 1;
    }

    /// Inserts a session (the caller has checked [`ConnTrack::admit`] and that neither key
    /// exists). Counts nothing: call [`ConnTrack::touch`] for its first packet.
    pub(crate) fn insert(&mut self, n: NewSession, now: u32) -> u32 {
        let s = Session {
            int_ip: n.int.0,
            ext_ip: n.ext.0,
            rem_ip: n.rem.0,
            int_port: n.int.1,
            ext_port: n.ext.1,
            rem_port: n.rem.1,
            proto: n.proto,
            flags: 0,
            owner: n.owner,
            mapping: n.mapping,
            created: now | if n.opened_in { OPENED_IN } else { 0 },
            last_seen: now,
            sched: 0,
            pkts_out: 0,
            pkts_in: 0,
            bytes_out: 0,
            bytes_in: 0,
        };
        let i = if self.free != NONE {
            let i = self.free;
            self.free = self.sessions[i as usize].mapping;
            self.sessions[i as usize] = s;
            i
        } else {
            let len = self.sessions.len();
            if len == self.sessions.capacity() {
                // Grow by doubling, but never past the bound.
                let extra = len
                    .max(64)
                    .min((self.max as usize).saturating_sub(len))
                    .max(1);
                self.sessions.reserve_exact(extra);
            }
            self.sessions.push(s);
            len as u32
        };
        if s.holds_half_open() {
            self.half_open.add(s.rem_ip);
        }
        let (h, ss) = (&self.hasher, &self.sessions);
        self.by_out.insert_unique(
            key_hash(h, n.proto, n.int.0, n.int.1, n.rem.0, n.rem.1),
            i,
            |&j| {
                let x = &ss[j as usize];
                key_hash(h, x.proto, x.int_ip, x.int_port, x.rem_ip, x.rem_port)
            },
        );
        self.by_in.insert_unique(
            key_hash(h, n.proto, n.ext.0, n.ext.1, n.rem.0, n.rem.1),
            i,
            |&j| {
                let x = &ss[j as usize];
                key_hash(h, x.proto, x.ext_ip, x.ext_port, x.rem_ip, x.rem_port)
            },
        );
        if n.mapping != NONE {
            let m = &mut self.maps[n.mapping as usize];
            // A quarantined mapping comes back to life with its first new session.
            m.state = m.refs() + 1;
            if let Some(adf) = &mut self.adf {
                *adf.entry((n.mapping, n.rem.0)).or_insert(0) += 1;
            }
        }
        if self.track_owners {
            let u = self.owners.entry(n.owner).or_default();
            u.conns += 1;
            if u.window != now {
                u.window = now;
                u.new_in_window = 0;
            }
            u.new_in_window += 1;
        }
        self.live += 1;
        // Nothing pending: jump ahead. (Only here: while draining, the wheel must not move.)
        self.wheel.skip_idle(now);
        let exp = self.expiry(&self.sessions[i as usize]);
        self.sessions[i as usize].sched = self.wheel.schedule(i, exp);
        i
    }

    /// Accounts one packet of `bytes` on session `i` and follows its TCP flags.
    pub(crate) fn touch(&mut self, i: u32, dir: Dir, tcp_flags: u8, bytes: usize, now: u32) {
        let refresh = dir == Dir::Out || self.inbound_refresh;
        let s = &mut self.sessions[i as usize];
        let held = s.holds_half_open();
        match dir {
            Dir::Out => {
                s.pkts_out = s.pkts_out.wrapping_add(1);
                s.bytes_out = s.bytes_out.wrapping_add(bytes as u64);
                s.flags |= SEEN_OUT;
            }
            Dir::In => {
                s.pkts_in = s.pkts_in.wrapping_add(1);
                s.bytes_in = s.bytes_in.wrapping_add(bytes as u64);
                s.flags |= SEEN_IN;
            }
        }
        if refresh {
            s.last_seen = now.max(s.last_seen);
        }
        if s.proto == Proto::Tcp {
            let (syn, fin) = match dir {
                Dir::Out => (SYN_OUT, FIN_OUT),
                Dir::In => (SYN_IN, FIN_IN),
            };
            if dir == Dir::In && tcp_flags & TCP_SYN == 0 {
                s.created |= REMOTE_ACKED;
            }
            if tcp_flags & TCP_RST != 0 {
                s.flags |= RST;
            } else if tcp_flags & TCP_SYN != 0 {
                if s.flags & (RST | FIN_OUT | FIN_IN) != 0 && tcp_flags & TCP_ACK == 0 {
                    // A new connection on the same 5-tuple (reuse after close): start over.
                    s.flags &= SEEN_OUT | SEEN_IN;
                    s.created &= !REMOTE_ACKED;
                }
                s.flags |= syn;
            }
            if tcp_flags & TCP_FIN != 0 {
                s.flags |= fin;
            }
        }
        let s = self.sessions[i as usize];
        match (held, s.holds_half_open()) {
            (true, false) => self.half_open.remove(s.rem_ip),
            (false, true) => self.half_open.add(s.rem_ip),
            _ => {}
        }
        let exp = self.expiry(&s);
        if exp < s.sched {
            // The state change shortened the timeout: make sure the wheel looks in time.
            self.sessions[i as usize].sched = self.wheel.schedule(i, exp);
        }
    }

    /// Removes a live session: from both indices, its owner's count and its mapping (which enters
    /// its reuse delay when this was its last session).
    pub(crate) fn remove(&mut self, i: u32, now: u32, alloc: &mut PortAllocator) {
        let s = self.sessions[i as usize];
        if s.is_free() {
            return;
        }
        if s.holds_half_open() {
            self.half_open.remove(s.rem_ip);
        }
        if !self.proxied.is_empty() {
            self.proxied.remove(&i);
        }
        let h = &self.hasher;
        self.by_out.remove(
            key_hash(h, s.proto, s.int_ip, s.int_port, s.rem_ip, s.rem_port),
            |&j| j == i,
        );
        self.by_in.remove(
            key_hash(h, s.proto, s.ext_ip, s.ext_port, s.rem_ip, s.rem_port),
            |&j| j == i,
        );
        if self.track_owners
            && let Some(u) = self.owners.get_mut(&s.owner)
        {
            u.conns = u.conns.saturating_sub(1);
            if u.conns == 0 && u.window != now {
                self.owners.remove(&s.owner);
            }
        }
        if s.mapping != NONE {
            if let Some(adf) = &mut self.adf
                && let Some(n) = adf.get_mut(&(s.mapping, s.rem_ip))
            {
                *n -= 1;
                if *n == 0 {
                    adf.remove(&(s.mapping, s.rem_ip));
                }
            }
            let m = &mut self.maps[s.mapping as usize];
            m.state = m.refs().saturating_sub(1);
            if m.state == 0 {
                if self.reuse_delay == 0 {
                    // No quarantine: the port is free for anybody at once.
                    self.free_mapping(s.mapping, alloc);
                } else {
                    let at = now + self.reuse_delay;
                    m.state = QUARANTINE | at;
                    self.wheel.schedule(s.mapping | MAP_TAG, at);
                }
            }
        }
        // Sessions without a mapping (symmetric NAT, DNAT) hold no bitmap port of their own.
        let slot = &mut self.sessions[i as usize];
        slot.flags = FREE;
        slot.mapping = self.free;
        self.free = i;
        self.live -= 1;
    }

    /// Expires what is due at `now`; returns how many sessions expired.
    pub(crate) fn handle_timeout(&mut self, now: u32, alloc: &mut PortAllocator) -> u64 {
        let mut expired = 0;
        let mut budget = EXPIRY_BATCH;
        loop {
            let (cur, due, mut pos) = match self.expiring.take() {
                Some(p) => p,
                None => match self.wheel.take_due(now) {
                    Some((cur, due)) => (cur, due, 0),
                    None => break,
                },
            };
            let b = (cur % WHEEL) as usize;
            while pos < due.len() {
                if budget == 0 {
                    // The rest of this tick next time: the caller serves packets in between.
                    self.expiring = Some((cur, due, pos));
                    return expired;
                }
                budget -= 1;
                let e = due[pos];
                pos += 1;
                if e & MAP_TAG != 0 {
                    let m = e & !MAP_TAG;
                    if self.maps[m as usize].free_at().is_some_and(|t| t <= now) {
                        self.free_mapping(m, alloc);
                    }
                    continue;
                }
                let s = &self.sessions[e as usize];
                if s.is_free() || s.sched % WHEEL != b as u32 || s.sched > cur {
                    continue; // stale: removed, reused or rescheduled
                }
                let exp = self.expiry(s);
                if exp <= now {
                    self.remove(e, now, alloc);
                    expired += 1;
                } else {
                    self.sessions[e as usize].sched = self.wheel.schedule(e, exp);
                }
            }
            self.wheel.put_back(cur, due);
        }
        expired
    }

    /// When [`ConnTrack::handle_timeout`] next has work (a tick), if anything is pending: at
    /// once while a tick is only partly done.
    pub(crate) fn next_timeout(&self) -> Option<u32> {
        if let Some((cur, ..)) = &self.expiring {
            return Some(*cur);
        }
        self.wheel.next_due()
    }

    /// Removes every session matching `pred` (control plane: a scan of the slab). Returns how many.
    pub(crate) fn remove_where(
        &mut self,
        now: u32,
        alloc: &mut PortAllocator,
        mut pred: impl FnMut(&Session) -> bool,
    ) -> usize {
        let mut n = 0;
        for i in 0..self.sessions.len() as u32 {
            let s = &self.sessions[i as usize];
            if !s.is_free() && pred(s) {
                self.remove(i, now, alloc);
                n += 1;
            }
        }
        n
    }

    /// Frees every mapping matching `pred` that has no session left (control plane), skipping the
    /// reuse delay: used when the EIP itself goes away.
    pub(crate) fn free_idle_mappings_where(
        &mut self,
        alloc: &mut PortAllocator,
        mut pred: impl FnMut(&MappingEntry) -> bool,
    ) {
        for m in 0..self.maps.len() as u32 {
            let x = &self.maps[m as usize];
            if x.live && x.refs() == 0 && pred(x) {
                self.free_mapping(m, alloc);
            }
        }
    }

    /// Moves every session using the external endpoint `ext` (and their endpoint-independent
    /// mapping) to the port `to` of the same address: what the uplink's host gave the mapping
    /// when `ext`'s port was in use there. Refused (`false`, nothing changed) when no session
    /// uses `ext`, or `to` is in use on the address here (a mapping, a DNAT reservation, a
    /// session). A scan of the slab: it happens once per mapping the host could not keep.
    pub(crate) fn move_ext_port(
        &mut self,
        proto: Proto,
        ext: (u32, u16),
        to: u16,
        alloc: &mut PortAllocator,
    ) -> bool {
        let uses = |s: &Session, port: u16| {
            !s.is_free() && s.proto == proto && s.ext_ip == ext.0 && s.ext_port == port
        };
        if alloc.is_used(proto, ext.0, to) || self.sessions.iter().any(|s| uses(s, to)) {
            return false;
        }
        let Some(first) = self.sessions.iter().position(|s| uses(s, ext.1)) else {
            return false;
        };
        let m = self.sessions[first].mapping;
        if m != NONE {
            let x = self.maps[m as usize];
            let h = &self.hasher;
            if self.index_ext {
                self.map_by_ext
                    .remove(map_hash(h, proto, u32::from(x.eip), x.ext_port), |&i| {
                        i == m
                    });
            }
            alloc.release_slot(proto, x.eip, x.ext_port);
            alloc.reserve(proto, ext.0, to);
            self.maps[m as usize].ext_port = to;
            if self.index_ext {
                let maps = &self.maps;
                self.map_by_ext
                    .insert_unique(map_hash(h, proto, u32::from(x.eip), to), m, |&i| {
                        let y = &maps[i as usize];
                        map_hash(h, y.proto, u32::from(y.eip), y.ext_port)
                    });
            }
        }
        for i in first as u32..self.sessions.len() as u32 {
            let s = self.sessions[i as usize];
            if !uses(&s, ext.1) {
                continue;
            }
            let h = &self.hasher;
            self.by_in.remove(
                key_hash(h, proto, s.ext_ip, s.ext_port, s.rem_ip, s.rem_port),
                |&j| j == i,
            );
            self.sessions[i as usize].ext_port = to;
            let ss = &self.sessions;
            self.by_in.insert_unique(
                key_hash(h, proto, s.ext_ip, to, s.rem_ip, s.rem_port),
                i,
                |&j| {
                    let x = &ss[j as usize];
                    key_hash(h, x.proto, x.ext_ip, x.ext_port, x.rem_ip, x.rem_port)
                },
            );
        }
        true
    }

    /// Sessions as seen by people.
    pub(crate) fn views(&self, now: u32) -> impl Iterator<Item = SessionView> + '_ {
        self.sessions.iter().filter(|s| !s.is_free()).map(move |s| {
            let v4 = |ip: u32, port: u16| (Ipv4Addr::from(ip), port);
            SessionView {
                protocol: s.proto,
                internal: v4(s.int_ip, s.int_port),
                external: v4(s.ext_ip, s.ext_port),
                remote: v4(s.rem_ip, s.rem_port),
                owner: s.owner,
                state: s.state(),
                age: Duration::from_secs(u64::from(now.saturating_sub(s.created_at()))),
                idle: Duration::from_secs(u64::from(now.saturating_sub(s.last_seen))),
                packets_out: s.pkts_out,
                packets_in: s.pkts_in,
                bytes_out: s.bytes_out,
                bytes_in: s.bytes_in,
                mapped: s.mapping != NONE,
            }
        })
    }

    /// The state of session `i`.
    #[cfg(test)]
    pub(crate) fn state(&self, i: u32) -> SessionState {
        self.sessions[i as usize].state()
    }

    /// Bytes held by the table, computed from capacities: slabs, index tables, wheel, owner and
    /// filtering maps.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.sessions.capacity() * size_of::<Session>()
            + self.maps.capacity() * size_of::<MappingEntry>()
            + self.by_out.bytes()
            + self.by_in.bytes()
            + self.map_by_int.bytes()
            + self.map_by_ext.bytes()
            + self.proxied.capacity() * (size_of::<(u32, Proxied)>() + 1)
            + self.wheel.bytes()
            + self.owners.allocation_size()
            + self.adf.as_ref().map_or(0, |a| a.allocation_size())
            + self.half_open.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::nat::config::Profile;

    const EIP: u32 = 0xcb00_7101;

    fn setup(config: &NatConfig) -> (ConnTrack, PortAllocator) {
        let ct = ConnTrack::new(config, 42);
        let alloc = PortAllocator::new(
            &[EIP],
            config.port_range,
            config.port_preservation,
            config.ports_per_owner,
            42,
        );
        (ct, alloc)
    }

    fn add(
        ct: &mut ConnTrack,
        alloc: &mut PortAllocator,
        int_port: u16,
        rem: u32,
        now: u32,
    ) -> u32 {
        ct.admit(0, now, alloc, false).unwrap();
        let (m, ext) = ct
            .get_or_create_mapping(Proto::Udp, (0x0a00_0001, int_port), 0, alloc)
            .unwrap();
        let i = ct.insert(
            NewSession {
                proto: Proto::Udp,
                int: (0x0a00_0001, int_port),
                ext,
                rem: (rem, 53),
                owner: 0,
                mapping: m,
                opened_in: false,
            },
            now,
        );
        ct.touch(i, Dir::Out, 0, 100, now);
        i
    }

    #[test]
    fn session_is_64_bytes_and_mapping_20() {
        assert_eq!(size_of::<Session>(), 64);
        assert_eq!(size_of::<MappingEntry>(), 20);
    }

    #[test]
    fn lookups_both_ways_and_mapping_reuse() {
        let c = NatConfig::profile(Profile::Rfc);
        let (mut ct, mut a) = setup(&c);
        let i = add(&mut ct, &mut a, 5000, 0x0808_0808, 0);
        let j = add(&mut ct, &mut a, 5000, 0x0101_0101, 0);
        assert_ne!(i, j);
        let (si, sj) = (*ct.session(i), *ct.session(j));
        assert_eq!((si.ext_ip, si.ext_port), (sj.ext_ip, sj.ext_port));
        assert_eq!(
            ct.lookup_out(Proto::Udp, (0x0a00_0001, 5000), (0x0808_0808, 53)),
            Some(i)
        );
        assert_eq!(
            ct.lookup_in(Proto::Udp, (EIP, si.ext_port), (0x0101_0101, 53)),
            Some(j)
        );
        assert_eq!(
            ct.lookup_in(Proto::Tcp, (EIP, si.ext_port), (0x0101_0101, 53)),
            None
        );
        assert_eq!(ct.mappings(), 1);
    }

    #[test]
    fn wheel_expires_after_timeout_and_respects_refresh() {
        let mut c = NatConfig::profile(Profile::Rfc);
        c.timeouts.udp = Duration::from_secs(30);
        let (mut ct, mut a) = setup(&c);
        let i = add(&mut ct, &mut a, 5000, 1, 100);
        assert_eq!(ct.handle_timeout(120, &mut a), 0);
        ct.touch(i, Dir::Out, 0, 10, 120);
        assert_eq!(ct.handle_timeout(150, &mut a), 0, "refreshed at 120");
        assert!(ct.next_timeout().is_some());
        assert_eq!(ct.handle_timeout(151, &mut a), 1);
        assert_eq!(ct.len(), 0);
        // The mapping waits out the reuse delay (120 s), then its port is released.
        assert_eq!(ct.mappings(), 1);
        assert!(a.is_used(Proto::Udp, EIP, 5000));
        ct.handle_timeout(151 + 120, &mut a);
        assert_eq!(ct.mappings(), 0);
        assert!(!a.is_used(Proto::Udp, EIP, 5000));
        assert_eq!(ct.next_timeout(), None);
    }

    #[test]
    fn long_timeouts_beyond_the_wheel_span() {
        let c = NatConfig::profile(Profile::Rfc);
        let (mut ct, mut a) = setup(&c);
        ct.admit(0, 0, &mut a, false).unwrap();
        let i = ct.insert(
            NewSession {
                proto: Proto::Tcp,
                int: (1, 1000),
                ext: (EIP, 1000),
                rem: (2, 80),
                owner: 0,
                mapping: NONE,
                opened_in: false,
            },
            0,
        );
        ct.touch(i, Dir::Out, TCP_SYN, 60, 0);
        ct.touch(i, Dir::In, TCP_SYN | TCP_ACK, 60, 0);
        assert_eq!(ct.state(i), SessionState::Established);
        for t in (500..7440).step_by(500).chain([7440]) {
            assert_eq!(ct.handle_timeout(t, &mut a), 0, "alive at {t}");
        }
        assert_eq!(ct.handle_timeout(7441, &mut a), 1);
    }

    #[test]
    fn fin_shortens_the_timeout() {
        let c = NatConfig::profile(Profile::Rfc);
        let (mut ct, mut a) = setup(&c);
        ct.admit(0, 0, &mut a, false).unwrap();
        let i = ct.insert(
            NewSession {
                proto: Proto::Tcp,
                int: (1, 1000),
                ext: (EIP, 1000),
                rem: (2, 80),
                owner: 0,
                mapping: NONE,
                opened_in: false,
            },
            0,
        );
        ct.touch(i, Dir::Out, TCP_SYN, 60, 0);
        ct.touch(i, Dir::In, TCP_SYN | TCP_ACK, 60, 0);
        ct.touch(i, Dir::Out, TCP_FIN | TCP_ACK, 60, 10);
        assert_eq!(ct.state(i), SessionState::FinWait);
        ct.touch(i, Dir::In, TCP_FIN | TCP_ACK, 60, 10);
        assert_eq!(ct.state(i), SessionState::TimeWait);
        assert_eq!(ct.handle_timeout(250, &mut a), 0);
        assert_eq!(ct.handle_timeout(251, &mut a), 1);
    }

    #[test]
    fn stale_wheel_entries_of_reused_slots_are_ignored() {
        let mut c = NatConfig::profile(Profile::Rfc);
        c.timeouts.udp = Duration::from_secs(30);
        let (mut ct, mut a) = setup(&c);
        let i = add(&mut ct, &mut a, 5000, 1, 0);
        ct.remove(i, 5, &mut a);
        let j = add(&mut ct, &mut a, 5001, 2, 20);
        assert_eq!(i, j, "slot reused");
        // The old entry (due at 31) must not expire the new session (due at 51).
        assert_eq!(ct.handle_timeout(40, &mut a), 0);
        assert_eq!(ct.len(), 1);
        assert_eq!(ct.handle_timeout(51, &mut a), 1);
    }

    #[test]
    fn table_full_refuses_without_eviction() {
        let mut c = NatConfig::profile(Profile::Rfc);
        c.max_entries = 2;
        let (mut ct, mut a) = setup(&c);
        add(&mut ct, &mut a, 1, 1, 0);
        add(&mut ct, &mut a, 2, 1, 0);
        assert_eq!(ct.admit(0, 0, &mut a, false), Err(NatDrop::TableFull));
        assert_eq!(ct.len(), 2);
    }

    #[test]
    fn quotas_per_owner() {
        let mut c = NatConfig::profile(Profile::Rfc);
        c.per_instance_max_conns = Some(2);
        c.per_instance_new_per_sec = Some(1);
        let (mut ct, mut a) = setup(&c);
        add(&mut ct, &mut a, 1, 1, 0);
        assert_eq!(ct.admit(0, 0, &mut a, false), Err(NatDrop::QuotaRate));
        assert_eq!(
            ct.admit(1, 0, &mut a, false),
            Ok(()),
            "other owners unaffected"
        );
        add(&mut ct, &mut a, 2, 1, 1);
        assert_eq!(
            ct.admit(0, 2, &mut a, false),
            Err(NatDrop::QuotaConnections)
        );
    }

    #[test]
    fn skipping_far_ahead_expires_everything_due() {
        let mut c = NatConfig::profile(Profile::Rfc);
        c.timeouts.udp = Duration::from_secs(30);
        let (mut ct, mut a) = setup(&c);
        for p in 0..100 {
            add(&mut ct, &mut a, 1000 + p, 1, p.into());
        }
        assert_eq!(ct.handle_timeout(1_000_000, &mut a), 100);
        assert_eq!(ct.len(), 0);
    }
}
