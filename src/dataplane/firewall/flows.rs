//! The security groups' flow table: which flows an earlier packet was allowed to open.
//!
//! One table per VPC (see [`super::Firewall`]). A flow is keyed by protocol and its two endpoints
//! `(address, port)` as seen inside the VPC (private addresses; for flows through NAT the public
//! peer), stored in a normalised order so that one lookup finds a flow from either direction; ICMP
//! query flows use the identifier as both ports.
//!
//! # Layout
//! Flows live in a slab `Vec<Flow>` (28 bytes each) with an intrusive free list; an index-only
//! `hashbrown::HashTable<u32>` finds a slot in O(1) with a seeded foldhash (guests choose 5-tuples).
//! The slab and the index grow only when a flow is created, never beyond `max_flows`.
//!
//! # Expiry
//! A hashed timing wheel of 1024 one-second buckets. A packet only moves `last_seen` (lazy
//! rescheduling); when a bucket fires, each of its flows is checked against its real expiry and
//! removed or re-inserted. Work per [`FlowTable::handle_timeout`] is proportional to the flows due
//! plus the buckets stepped over — never a scan of the table. A lookup also treats a flow whose
//! idle timeout has passed as gone, so calling `handle_timeout` late never lets a stale flow in.
//!
//! # Invariants
//! - At most `max_flows` live flows. When full, a new flow is refused (counted); a live flow is
//!   never evicted to make room.
//! - Every live flow is in the index exactly once; a free slot is in none.

use std::hash::BuildHasher;
use std::time::Duration;

use crate::dataplane::index::ShardedIndex;
use foldhash::fast::FixedState;

use super::{Facts, Kind, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::dataplane::packet::{TCP_FIN, TCP_RST};
pub(crate) use crate::dataplane::wheel::tick;
use crate::dataplane::wheel::{MAX_TICK, Wheel, ticks};
use crate::time::Instant;

const NONE: u32 = u32::MAX;
const WHEEL: u32 = 1024;

// Flow flag bits.
/// The initiator is the `b` endpoint of the normalised key.
const INIT_B: u8 = 1;
/// A packet from the responder has been seen.
const REPLIED: u8 = 2;
const FIN_A: u8 = 4;
const FIN_B: u8 = 8;
const RST: u8 = 16;
const FREE: u8 = 128;

/// Limits and idle timeouts of the flow table. TCP established is AWS's security-group tracking
/// timeout (5 days); the others are 350 s, the longest idle timeout of any NAT profile, so that a
/// NAT session never outlives the security-group flow it carries (AWS tracks UDP for 180 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// Most flows tracked per VPC; a new flow beyond it is refused (`flow_table_full`).
    pub max_flows: u32,
    /// TCP after the responder answered, until FIN both ways or RST.
    pub tcp_established: Duration,
    /// TCP before an answer, and after FIN both ways or RST.
    pub tcp_transitory: Duration,
    pub udp: Duration,
    pub icmp: Duration,
    /// Any other IP protocol.
    pub other: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_flows: 262_144,
            tcp_established: Duration::from_secs(432_000),
            tcp_transitory: Duration::from_secs(350),
            udp: Duration::from_secs(350),
            icmp: Duration::from_secs(350),
            other: Duration::from_secs(600),
        }
    }
}

/// A flow's key in normalised order (`a <= b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackedFlowKey {
    pub proto: u8,
    pub a: (u32, u16),
    pub b: (u32, u16),
}

impl TrackedFlowKey {
    /// The key of a packet's flow, and whether the packet goes from `a` to `b`.
    pub fn of(facts: &Facts) -> (TrackedFlowKey, bool) {
        let s = (u32::from(facts.src), facts.sport);
        let d = (u32::from(facts.dst), facts.dport);
        TrackedFlowKey::from_ends(facts.proto, s, d)
    }

    /// The key of a flow from `s` to `d`, and whether `s` is `a`.
    pub fn from_ends(proto: u8, s: (u32, u16), d: (u32, u16)) -> (TrackedFlowKey, bool) {
        if s <= d {
            (TrackedFlowKey { proto, a: s, b: d }, true)
        } else {
            (TrackedFlowKey { proto, a: d, b: s }, false)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    a_ip: u32,
    b_ip: u32,
    a_port: u16,
    b_port: u16,
    proto: u8,
    flags: u8,
    /// In a free slot: the next free slot.
    last_seen: u32,
    /// The tick of this flow's live wheel entry.
    sched: u32,
    created: u32,
}

impl Flow {
    fn key(&self) -> TrackedFlowKey {
        TrackedFlowKey {
            proto: self.proto,
            a: (self.a_ip, self.a_port),
            b: (self.b_ip, self.b_port),
        }
    }
}

/// Counters of one flow table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub active: u64,
    pub created: u64,
    pub expired: u64,
    /// New flows refused because the table was full.
    pub refused: u64,
}

/// A tracked flow as the control plane lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowView {
    pub key: TrackedFlowKey,
    /// The initiator is `key.a`.
    pub initiator_is_a: bool,
    pub replied: bool,
    pub age_secs: u32,
    pub idle_secs: u32,
}

/// The flow table of one VPC. See the module docs.
#[derive(Debug, Clone)]
pub struct FlowTable {
    flows: Vec<Flow>,
    free: u32,
    live: u32,
    index: ShardedIndex,
    hasher: FixedState,
    wheel: Wheel,
    config: FlowConfig,
    counters: FlowCounters,
}

/// The slab and index start this big (or `max_flows` if smaller) so that the first flows do not
/// allocate; they double on demand up to `max_flows`.
const INITIAL: u32 = 1024;

impl FlowTable {
    pub fn new(config: FlowConfig, seed: u64) -> FlowTable {
        let initial = config.max_flows.min(INITIAL) as usize;
        FlowTable {
            flows: Vec::with_capacity(initial),
            free: NONE,
            live: 0,
            index: ShardedIndex::new(config.max_flows as usize, initial),
            hasher: FixedState::with_seed(seed),
            wheel: Wheel::new(WHEEL),
            config,
            counters: FlowCounters::default(),
        }
    }

    pub fn config(&self) -> FlowConfig {
        self.config
    }

    pub fn len(&self) -> usize {
        self.live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn counters(&self) -> FlowCounters {
        FlowCounters {
            active: u64::from(self.live),
            ..self.counters
        }
    }

    /// Whether `n` more flows fit.
    pub fn has_room(&self, n: u32) -> bool {
        self.live.saturating_add(n) <= self.config.max_flows
    }

    /// Counts a new flow refused for lack of room.
    pub fn count_refused(&mut self) {
        self.counters.refused += 1;
    }

    fn hash(&self, k: &TrackedFlowKey) -> u64 {
        self.hasher.hash_one(k)
    }

    /// The live flow with this key, if any (a flow past its idle timeout is removed first).
    pub fn lookup(&mut self, key: &TrackedFlowKey, now: Instant) -> Option<u32> {
        let h = self.hash(key);
        let flows = &self.flows;
        let i = self.index.find(h, |&i| flows[i as usize].key() == *key)?;
        let now = tick(now);
        if self.expiry(&self.flows[i as usize]) <= now {
            self.remove(i);
            self.counters.expired += 1;
            return None;
        }
        Some(i)
    }

    /// Records a packet of flow `i`: `from_a` says it comes from the key's `a` endpoint.
    pub fn touch(&mut self, i: u32, facts: &Facts, from_a: bool, now: Instant) {
        let tcp_flags = match facts.kind {
            Kind::Tcp { flags } => Some(flags),
            _ => None,
        };
        self.touch_flags(i, tcp_flags, from_a, now);
    }

    /// [`FlowTable::touch`] with what it reads of the packet: its TCP flags (`None` for
    /// anything but TCP).
    pub fn touch_flags(&mut self, i: u32, tcp_flags: Option<u8>, from_a: bool, now: Instant) {
        let now = tick(now);
        let Some(f) = self.flows.get_mut(i as usize) else {
            return;
        };
        if f.flags & FREE != 0 {
            return;
        }
        let from_initiator = from_a == (f.flags & INIT_B == 0);
        if !from_initiator {
            f.flags |= REPLIED;
        }
        if let Some(flags) = tcp_flags {
            if flags & TCP_RST != 0 {
                f.flags |= RST;
            }
            if flags & TCP_FIN != 0 {
                f.flags |= if from_a { FIN_A } else { FIN_B };
            }
        }
        f.last_seen = f.last_seen.max(now);
        // A state change may shorten the timeout below the scheduled check: look in time.
        let f = *f;
        let exp = self.expiry(&f);
        if exp < f.sched {
            self.flows[i as usize].sched = self.wheel.schedule(i, exp);
        }
    }

    /// Starts tracking a flow opened by `facts` (its source is the initiator). The caller has
    /// checked that the flow is not tracked yet. `Err(())` when the table is full (counted).
    #[allow(clippy::result_unit_err)]
    pub fn insert(&mut self, facts: &Facts, now: Instant) -> Result<u32, ()> {
        let (key, from_a) = TrackedFlowKey::of(facts);
        self.insert_key(key, from_a, now)
    }

    /// [`FlowTable::insert`] of the flow with `key` whose initiator is the key's `a` endpoint
    /// when `from_a`.
    #[allow(clippy::result_unit_err)]
    pub fn insert_key(
        &mut self,
        key: TrackedFlowKey,
        from_a: bool,
        now: Instant,
    ) -> Result<u32, ()> {
        if !self.has_room(1) {
            self.counters.refused += 1;
            return Err(());
        }
        let now = tick(now);
        self.wheel.skip_idle(now);
        let flow = Flow {
            a_ip: key.a.0,
            b_ip: key.b.0,
            a_port: key.a.1,
            b_port: key.b.1,
            proto: key.proto,
            flags: if from_a { 0 } else { INIT_B },
            last_seen: now,
            sched: 0,
            created: now,
        };
        let i = if self.free != NONE {
            let i = self.free;
            self.free = self.flows[i as usize].last_seen;
            self.flows[i as usize] = flow;
            i
        } else {
            self.flows.push(flow);
            (self.flows.len() - 1) as u32
        };
        let h = self.hash(&key);
        let flows = &self.flows;
        let hasher = &self.hasher;
        self.index
            .insert_unique(h, i, |&j| hasher.hash_one(flows[j as usize].key()));
        self.live += 1;
        self.counters.created += 1;
        let exp = self.expiry(&self.flows[i as usize]);
        self.flows[i as usize].sched = self.wheel.schedule(i, exp);
        Ok(i)
    }

    fn timeout(&self, f: &Flow) -> u32 {
        let c = &self.config;
        ticks(match f.proto {
            PROTO_TCP => {
                let closed = f.flags & RST != 0 || f.flags & (FIN_A | FIN_B) == FIN_A | FIN_B;
                if f.flags & REPLIED == 0 || closed {
                    c.tcp_transitory
                } else {
                    c.tcp_established
                }
            }
            PROTO_UDP => c.udp,
            PROTO_ICMP => c.icmp,
            _ => c.other,
        })
    }

    /// The first tick at which the flow is expired.
    fn expiry(&self, f: &Flow) -> u32 {
        f.last_seen
            .saturating_add(self.timeout(f))
            .saturating_add(1)
            .min(MAX_TICK)
    }

    fn remove(&mut self, i: u32) {
        let key = self.flows[i as usize].key();
        let h = self.hash(&key);
        self.index.remove(h, |&j| j == i);
        let slot = &mut self.flows[i as usize];
        slot.flags = FREE;
        slot.last_seen = self.free;
        self.free = i;
        self.live -= 1;
    }

    /// When [`FlowTable::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel
            .next_due()
            .map(|t| Instant::from_secs(u64::from(t)))
    }

    /// Expires the flows due at `now`; returns how many.
    pub fn handle_timeout(&mut self, now: Instant) -> u64 {
        let now = tick(now);
        let mut expired = 0;
        while let Some((cur, due)) = self.wheel.take_due(now) {
            let b = (cur % WHEEL) as usize;
            for &e in &due {
                let f = self.flows[e as usize];
                if f.flags & FREE != 0 || f.sched % WHEEL != b as u32 || f.sched > cur {
                    continue; // stale: removed, reused or rescheduled
                }
                let exp = self.expiry(&f);
                if exp <= now {
                    self.remove(e);
                    expired += 1;
                } else {
                    self.flows[e as usize].sched = self.wheel.schedule(e, exp);
                }
            }
            self.wheel.put_back(cur, due);
        }
        self.counters.expired += expired;
        expired
    }

    /// Removes every live flow whose key matches `pred` (control plane: a scan of the slab), as
    /// if it had expired but without counting it as expired. Returns how many.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&TrackedFlowKey) -> bool) -> usize {
        let mut n = 0;
        for i in 0..self.flows.len() as u32 {
            let f = &self.flows[i as usize];
            if f.flags & FREE == 0 && pred(&f.key()) {
                self.remove(i);
                n += 1;
            }
        }
        n
    }

    /// Every live flow (control plane: a scan of the slab).
    pub fn flows(&self, now: Instant) -> impl Iterator<Item = FlowView> + '_ {
        let now = tick(now);
        self.flows
            .iter()
            .filter(|f| f.flags & FREE == 0)
            .map(move |f| FlowView {
                key: f.key(),
                initiator_is_a: f.flags & INIT_B == 0,
                replied: f.flags & REPLIED != 0,
                age_secs: now.saturating_sub(f.created),
                idle_secs: now.saturating_sub(f.last_seen),
            })
    }

    /// Bytes held (slab, index, wheel), for memory reports.
    pub fn memory_bytes(&self) -> usize {
        self.flows.capacity() * size_of::<Flow>() + self.index.bytes() + self.wheel.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn udp(sport: u16) -> Facts {
        Facts {
            proto: PROTO_UDP,
            src: Ipv4Addr::new(10, 0, 1, 10),
            dst: Ipv4Addr::new(10, 0, 2, 20),
            sport,
            dport: 53,
            kind: Kind::Udp,
        }
    }

    fn reply(f: &Facts) -> Facts {
        Facts {
            src: f.dst,
            dst: f.src,
            sport: f.dport,
            dport: f.sport,
            ..*f
        }
    }

    #[test]
    fn a_flow_is_found_from_both_directions() {
        let mut t = FlowTable::new(FlowConfig::default(), 1);
        let f = udp(40000);
        t.insert(&f, Instant::ZERO).unwrap();
        let (k1, _) = TrackedFlowKey::of(&f);
        let (k2, _) = TrackedFlowKey::of(&reply(&f));
        assert_eq!(k1, k2);
        assert!(t.lookup(&k1, Instant::ZERO).is_some());
    }

    #[test]
    fn full_table_refuses_new_flows_and_keeps_old_ones() {
        let cfg = FlowConfig {
            max_flows: 2,
            ..FlowConfig::default()
        };
        let mut t = FlowTable::new(cfg, 1);
        t.insert(&udp(1), Instant::ZERO).unwrap();
        t.insert(&udp(2), Instant::ZERO).unwrap();
        assert!(t.insert(&udp(3), Instant::ZERO).is_err());
        assert_eq!(t.counters().refused, 1);
        for p in [1, 2] {
            assert!(
                t.lookup(&TrackedFlowKey::of(&udp(p)).0, Instant::ZERO)
                    .is_some()
            );
        }
    }

    #[test]
    fn idle_flows_expire_by_the_wheel_and_refreshed_ones_live_on() {
        let mut t = FlowTable::new(FlowConfig::default(), 1);
        let a = udp(1);
        let b = udp(2);
        t.insert(&a, Instant::ZERO).unwrap();
        t.insert(&b, Instant::ZERO).unwrap();
        let kb = TrackedFlowKey::of(&b).0;
        let i = t.lookup(&kb, Instant::from_secs(100)).unwrap();
        t.touch(i, &reply(&b), false, Instant::from_secs(100));
        let mut now = Instant::ZERO;
        while let Some(due) = t.poll_timeout() {
            if due > Instant::from_secs(400) {
                break;
            }
            now = due.max(now);
            t.handle_timeout(now);
        }
        assert_eq!(t.len(), 1, "the refreshed flow lives, the idle one is gone");
        assert!(t.lookup(&kb, Instant::from_secs(400)).is_some());
        assert!(t.lookup(&kb, Instant::from_secs(500)).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn tcp_rst_shortens_the_timeout() {
        let mut t = FlowTable::new(FlowConfig::default(), 1);
        let syn = Facts {
            proto: PROTO_TCP,
            kind: Kind::Tcp { flags: 0x02 },
            ..udp(5)
        };
        let i = t.insert(&syn, Instant::ZERO).unwrap();
        let synack = Facts {
            kind: Kind::Tcp { flags: 0x12 },
            ..reply(&syn)
        };
        let (k, from_a) = TrackedFlowKey::of(&synack);
        t.touch(i, &synack, from_a, Instant::ZERO);
        assert!(t.lookup(&k, Instant::from_secs(10_000)).is_some());
        let rst = Facts {
            kind: Kind::Tcp { flags: 0x04 },
            ..syn
        };
        t.touch(i, &rst, !from_a, Instant::from_secs(10_000));
        assert!(t.lookup(&k, Instant::from_secs(10_400)).is_none());
    }
}
