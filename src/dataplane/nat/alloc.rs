//! External address and port allocation for one NAT gateway.
//!
//! Owns the EIP pool and, per EIP and protocol, a bitmap of the 65,536 ports (8 KiB) that are
//! taken. Each EIP has a stable `u16` slot for as long as it is in the pool, so that a mapping
//! names its external address in 2 bytes ([`PortAllocator::addr`]); a removed EIP's slot is
//! reused by a later one. Hence at most 65,536 EIPs per pool. What "taken" means depends on the mapping behaviour:
//!
//! - endpoint-independent mapping: a port is taken by exactly one mapping (live, or waiting out
//!   the port-reuse delay), or reserved by a DNAT rule. One external (ip, port, protocol) is
//!   never used by two mappings (RFC 4787 REQ-3: no "port overloading"; port preservation, which
//!   REQ-3 allows, only when the internal port is free).
//! - address-and-port-dependent mapping (the `aws` profile): ports may be shared between
//!   destinations, so the bitmap only holds DNAT reservations; the caller passes a `taken`
//!   predicate that looks the (external ip, port, destination) up in the session table.
//!
//! Pooling is "paired" (RFC 4787 REQ-2): an internal address always gets the same EIP, chosen by
//! a seeded hash of the internal address over the pool (or, with per-owner port blocks, the EIP of
//! the owner's block). If that EIP's ports are exhausted the flow is refused: it never moves to
//! another EIP and never takes a live mapping's port.
//!
//! Every search is bounded: port preservation, then a few random probes, then one scan of the
//! candidate range from a random start, a 64-port bitmap word at a time (`trailing_zeros` of the
//! free bits), so a full word costs one load and finding a free port in a nearly full EIP is
//! O(1,024 words) at worst. A count of taken ports per EIP and protocol refuses a flow on a full
//! EIP in O(1), without any scan. Randomness comes from a seeded wyrand state, never from the OS.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashMap;

use super::Proto;

const WORDS: usize = 65536 / 64;
const RANDOM_PROBES: u32 = 16;

/// A small seeded PRNG (wyrand): deterministic for a seed, cheap, good enough to pick ports.
#[derive(Debug, Clone)]
pub(crate) struct WyRand(u64);

impl WyRand {
    pub(crate) fn new(seed: u64) -> Self {
        WyRand(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform-ish in `0..n` (`n > 0`), by multiply-shift.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u64() as u32) * u64::from(n)) >> 32) as u32
    }
}

/// One EIP's ports.
#[derive(Debug, Clone)]
struct EipPorts {
    addr: u32,
    /// Per protocol ([`Proto::index`]), one bit per port.
    used: [Box<[u64]>; 3],
    /// Per protocol, how many bits of `used` are set inside the allocator's port range.
    in_range: [u32; 3],
    /// Per-owner blocks handed out (block mode only), one bit per block.
    blocks: Vec<u64>,
}

impl EipPorts {
    fn new(addr: u32, nblocks: usize) -> Self {
        let bitmap = || vec![0u64; WORDS].into_boxed_slice();
        EipPorts {
            addr,
            used: [bitmap(), bitmap(), bitmap()],
            in_range: [0; 3],
            blocks: vec![0u64; nblocks.div_ceil(64)],
        }
    }

    /// Sets or clears a port's bit, keeping `in_range` exact; false if it already was so.
    fn mark(&mut self, proto: Proto, p: u32, on: bool, range: (u16, u16)) -> bool {
        let bits = &mut self.used[proto.index()];
        if bit(bits, p) == on {
            return false;
        }
        set_bit(bits, p, on);
        if (u32::from(range.0)..=u32::from(range.1)).contains(&p) {
            let n = &mut self.in_range[proto.index()];
            *n = if on { *n + 1 } else { *n - 1 };
        }
        true
    }
}

fn bit(bits: &[u64], p: u32) -> bool {
    bits.get((p >> 6) as usize)
        .is_some_and(|w| w & (1 << (p & 63)) != 0)
}

fn set_bit(bits: &mut [u64], p: u32, on: bool) {
    if let Some(w) = bits.get_mut((p >> 6) as usize) {
        if on {
            *w |= 1 << (p & 63);
        } else {
            *w &= !(1 << (p & 63));
        }
    }
}

/// The first port of `lo..=hi` (inclusive, `lo <= hi <= 65535`), in increasing order, whose bit is
/// clear and that `ok` accepts: one load and a `trailing_zeros` per candidate, full words skipped.
fn scan(bits: &[u64], lo: u32, hi: u32, ok: &mut impl FnMut(u32) -> bool) -> Option<u32> {
    let (first, last) = (lo >> 6, hi >> 6);
    for w in first..=last {
        let mut free = !bits[w as usize];
        if w == first {
            free &= !0u64 << (lo & 63);
        }
        if w == last {
            free &= !0u64 >> (63 - (hi & 63));
        }
        while free != 0 {
            let p = (w << 6) | free.trailing_zeros();
            if ok(p) {
                return Some(p);
            }
            free &= free - 1;
        }
    }
    None
}

/// A block of consecutive ports reserved for one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnerBlock {
    /// The EIP's slot.
    eip: u16,
    index: u32,
}

/// Slots an allocator can hand out (the `u16` a mapping stores).
const MAX_EIPS: usize = 1 << 16;

/// Why an allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllocError {
    /// The pool has no EIP.
    NoEip,
    /// Every candidate port is taken (`ErrorPortAllocation`).
    Exhausted,
}

/// The EIP pool and its port bitmaps. See the module docs for the invariants.
#[derive(Debug, Clone)]
pub(crate) struct PortAllocator {
    /// By slot; `None`: a removed EIP's slot, free for the next one added.
    slots: Vec<Option<EipPorts>>,
    /// The slots of the pool, in the order EIPs were added (paired pooling hashes over it).
    pool: Vec<u16>,
    lo: u16,
    hi: u16,
    preserve: bool,
    block: Option<u16>,
    owner_blocks: HashMap<u32, OwnerBlock, FixedState>,
    hasher: FixedState,
    rng: WyRand,
}

impl PortAllocator {
    pub(crate) fn new(
        eips: &[u32],
        range: (u16, u16),
        preserve: bool,
        block: Option<u16>,
        seed: u64,
    ) -> Self {
        let mut a = PortAllocator {
            slots: Vec::with_capacity(eips.len()),
            pool: Vec::with_capacity(eips.len()),
            lo: range.0.max(1),
            hi: range.1.max(range.0.max(1)),
            preserve,
            block: block.filter(|b| *b > 0),
            owner_blocks: HashMap::with_hasher(FixedState::with_seed(seed ^ 0x5eed)),
            hasher: FixedState::with_seed(seed),
            rng: WyRand::new(seed ^ 0x9e37_79b9_7f4a_7c15),
        };
        for e in eips {
            a.add_eip(*e);
        }
        a
    }

    fn range_len(&self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }

    fn nblocks(&self) -> u32 {
        self.block.map_or(0, |b| self.range_len() / u32::from(b))
    }

    /// Adds an EIP to the pool (no-op if present). False if the pool already has
    /// [`MAX_EIPS`] addresses.
    pub(crate) fn add_eip(&mut self, addr: u32) -> bool {
        if self.contains(addr) {
            return true;
        }
        let ports = EipPorts::new(addr, self.nblocks() as usize);
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < MAX_EIPS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return false,
        };
        self.slots[slot] = Some(ports);
        self.pool.push(slot as u16);
        true
    }

    /// Removes an EIP and the owner blocks on it. The caller flushes its mappings first.
    pub(crate) fn remove_eip(&mut self, addr: u32) -> bool {
        let Some(slot) = self.slot_of(addr) else {
            return false;
        };
        self.pool.retain(|s| *s != slot);
        self.slots[usize::from(slot)] = None;
        self.owner_blocks.retain(|_, b| b.eip != slot);
        true
    }

    pub(crate) fn contains(&self, addr: u32) -> bool {
        self.slot_of(addr).is_some()
    }

    pub(crate) fn eips(&self) -> impl Iterator<Item = u32> + '_ {
        self.pool.iter().map(|s| self.addr(*s))
    }

    /// The slot of a pool address.
    pub(crate) fn slot_of(&self, addr: u32) -> Option<u16> {
        self.pool.iter().copied().find(|s| self.addr(*s) == addr)
    }

    /// The address in a slot (0 for a free slot: no mapping names one).
    pub(crate) fn addr(&self, slot: u16) -> u32 {
        self.slots
            .get(usize::from(slot))
            .and_then(Option::as_ref)
            .map_or(0, |e| e.addr)
    }

    fn slot_mut(&mut self, slot: u16) -> Option<&mut EipPorts> {
        self.slots
            .get_mut(usize::from(slot))
            .and_then(Option::as_mut)
    }

    fn eip_mut(&mut self, addr: u32) -> Option<&mut EipPorts> {
        let slot = self.slot_of(addr)?;
        self.slot_mut(slot)
    }

    /// Is this port taken in the bitmap (a mapping in EIM mode, a DNAT reservation in both)?
    pub(crate) fn is_used(&self, proto: Proto, addr: u32, port: u16) -> bool {
        self.slot_of(addr)
            .and_then(|s| self.slots[usize::from(s)].as_ref())
            .is_some_and(|e| bit(&e.used[proto.index()], u32::from(port)))
    }

    /// Marks a port taken (DNAT rules). False if it already was, or the EIP is not in the pool.
    pub(crate) fn reserve(&mut self, proto: Proto, addr: u32, port: u16) -> bool {
        let range = (self.lo, self.hi);
        self.eip_mut(addr)
            .is_some_and(|e| e.mark(proto, u32::from(port), true, range))
    }

    /// Frees a port taken by [`PortAllocator::reserve`] (or [`PortAllocator::allocate`]).
    pub(crate) fn release(&mut self, proto: Proto, addr: u32, port: u16) {
        if let Some(slot) = self.slot_of(addr) {
            self.release_slot(proto, slot, port);
        }
    }

    /// Frees a port taken by [`PortAllocator::allocate_slot`] (EIM) on the EIP in `slot`.
    pub(crate) fn release_slot(&mut self, proto: Proto, slot: u16, port: u16) {
        let range = (self.lo, self.hi);
        if let Some(e) = self.slot_mut(slot) {
            e.mark(proto, u32::from(port), false, range);
        }
    }

    /// Frees an owner's port block (block mode). The caller flushes the owner's mappings first.
    pub(crate) fn release_owner(&mut self, owner: u32) {
        if let Some(b) = self.owner_blocks.remove(&owner)
            && let Some(e) = self.slot_mut(b.eip)
        {
            set_bit(&mut e.blocks, b.index, false);
        }
    }

    /// The owner's block, reserving one on the first call. Tries the EIPs from a hash of the owner.
    fn owner_block(&mut self, owner: u32) -> Result<OwnerBlock, AllocError> {
        if let Some(b) = self.owner_blocks.get(&owner) {
            return Ok(*b);
        }
        if self.pool.is_empty() {
            return Err(AllocError::NoEip);
        }
        let n = self.pool.len();
        let first = (self.hasher.hash_one(owner) % n as u64) as usize;
        let nblocks = self.nblocks();
        for k in 0..n {
            let slot = self.pool[(first + k) % n];
            let Some(e) = self.slot_mut(slot) else {
                continue;
            };
            let free = (0..nblocks).find(|i| !bit(&e.blocks, *i));
            if let Some(index) = free {
                set_bit(&mut e.blocks, index, true);
                let b = OwnerBlock { eip: slot, index };
                self.owner_blocks.insert(owner, b);
                return Ok(b);
            }
        }
        Err(AllocError::Exhausted)
    }

    /// The EIP an internal address uses (paired pooling), without allocating.
    #[cfg(test)]
    pub(crate) fn eip_for(&self, internal: u32) -> Option<u32> {
        self.slot_for(internal).map(|s| self.addr(s))
    }

    fn slot_for(&self, internal: u32) -> Option<u16> {
        if self.pool.is_empty() {
            return None;
        }
        let i = (self.hasher.hash_one(internal) % self.pool.len() as u64) as usize;
        Some(self.pool[i])
    }

    /// Picks an external (ip, port) for a new mapping of `internal:port` owned by `owner`.
    ///
    /// `mark`: set the port's bit (endpoint-independent mapping); otherwise the bitmap is only
    /// consulted for reservations and `taken(ext_ip, port)` decides (per-destination ports).
    pub(crate) fn allocate(
        &mut self,
        proto: Proto,
        internal: u32,
        port: u16,
        owner: u32,
        mark: bool,
        taken: impl FnMut(u32, u16) -> bool,
    ) -> Result<(u32, u16), AllocError> {
        let (slot, port) = self.allocate_slot(proto, internal, port, owner, mark, taken)?;
        Ok((self.addr(slot), port))
    }

    /// [`PortAllocator::allocate`], naming the EIP by its slot.
    pub(crate) fn allocate_slot(
        &mut self,
        proto: Proto,
        internal: u32,
        port: u16,
        owner: u32,
        mark: bool,
        mut taken: impl FnMut(u32, u16) -> bool,
    ) -> Result<(u16, u16), AllocError> {
        let (slot, wlo, whi) = match self.block {
            Some(size) => {
                let b = self.owner_block(owner)?;
                let lo = u32::from(self.lo) + b.index * u32::from(size);
                (b.eip, lo, lo + u32::from(size) - 1)
            }
            None => (
                self.slot_for(internal).ok_or(AllocError::NoEip)?,
                u32::from(self.lo),
                u32::from(self.hi),
            ),
        };
        let n = whi - wlo + 1;
        let preserve = self.preserve;
        let range = (self.lo, self.hi);
        let whole_range = self.block.is_none();
        // ICMP identifiers have no privileged range: any one may be preserved (outside blocks).
        let (plo, phi) = match (proto, self.block) {
            (Proto::Icmp, None) => (1, 65535),
            _ => (wlo, whi),
        };
        let start = wlo + self.rng.below(n);
        let mut probes = [0u32; RANDOM_PROBES as usize];
        for p in &mut probes {
            *p = wlo + self.rng.below(n);
        }
        let Some(e) = self.slot_mut(slot) else {
            return Err(AllocError::NoEip);
        };
        let addr = e.addr;
        let bits = &e.used[proto.index()];
        let port = u32::from(port);
        let mut ok = |p: u32| !taken(addr, p as u16);
        let chosen = if preserve && (plo..=phi).contains(&port) && !bit(bits, port) && ok(port) {
            Some(port)
        } else if whole_range && e.in_range[proto.index()] >= n {
            // Every port of the range is taken in the bitmap: refuse without searching.
            None
        } else if let Some(p) = probes.iter().copied().find(|p| !bit(bits, *p) && ok(*p)) {
            Some(p)
        } else {
            // One pass over the window from `start`, wrapping.
            let tail = scan(bits, start, whi, &mut ok);
            if tail.is_none() && start > wlo {
                scan(bits, wlo, start - 1, &mut ok)
            } else {
                tail
            }
        };
        let p = chosen.ok_or(AllocError::Exhausted)?;
        if mark {
            e.mark(proto, p, true, range);
        }
        Ok((slot, p as u16))
    }

    /// Bytes held: bitmaps and the owner-block map.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|e| 3 * WORDS * 8 + e.blocks.capacity() * 8)
            .sum::<usize>()
            + self.slots.capacity() * size_of::<Option<EipPorts>>()
            + self.pool.capacity() * 2
            + self.owner_blocks.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIP: u32 = 0xcb00_7101; // 203.0.113.1
    const EIP2: u32 = 0xcb00_7102;

    fn never(_: u32, _: u16) -> bool {
        false
    }

    #[test]
    fn rfc4787_req3_port_preservation_when_free_never_overloaded() {
        let mut a = PortAllocator::new(&[EIP], (1024, 65535), true, None, 1);
        assert_eq!(
            a.allocate(Proto::Udp, 1, 5000, 0, true, never),
            Ok((EIP, 5000))
        );
        // Taken now: the second one gets another port, never the same (no overloading).
        let (_, p) = a.allocate(Proto::Udp, 2, 5000, 0, true, never).unwrap();
        assert_ne!(p, 5000);
        // Other protocols have their own ports.
        assert_eq!(
            a.allocate(Proto::Tcp, 3, 5000, 0, true, never),
            Ok((EIP, 5000))
        );
    }

    #[test]
    fn rfc4787_req3_no_port_overloading_until_exhausted() {
        let mut a = PortAllocator::new(&[EIP], (2000, 2009), false, None, 7);
        let mut seen = std::collections::HashSet::new();
        for i in 0..10 {
            let (_, p) = a.allocate(Proto::Tcp, i, 40000, 0, true, never).unwrap();
            assert!((2000..=2009).contains(&p));
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        assert_eq!(
            a.allocate(Proto::Tcp, 99, 40000, 0, true, never),
            Err(AllocError::Exhausted)
        );
        a.release(Proto::Tcp, EIP, 2004);
        assert_eq!(
            a.allocate(Proto::Tcp, 99, 40000, 0, true, never),
            Ok((EIP, 2004))
        );
    }

    #[test]
    fn rfc4787_req2_paired_pooling_is_stable() {
        let a = PortAllocator::new(&[EIP, EIP2], (1024, 65535), true, None, 3);
        let mut hits = [0; 2];
        for host in 0..100u32 {
            let e = a.eip_for(host).unwrap();
            assert_eq!(a.eip_for(host), Some(e));
            hits[usize::from(e == EIP2)] += 1;
        }
        assert!(hits[0] > 0 && hits[1] > 0, "both EIPs used: {hits:?}");
    }

    #[test]
    fn per_destination_ports_consult_taken() {
        let mut a = PortAllocator::new(&[EIP], (3000, 3003), false, None, 5);
        // Every port but 3002 is taken towards this destination.
        let r = a.allocate(Proto::Udp, 1, 9, 0, false, |_, p| p != 3002);
        assert_eq!(r, Ok((EIP, 3002)));
        assert!(!a.is_used(Proto::Udp, EIP, 3002), "APDM does not mark");
        assert_eq!(
            a.allocate(Proto::Udp, 1, 9, 0, false, |_, _| true),
            Err(AllocError::Exhausted)
        );
    }

    #[test]
    fn reservations_block_allocation() {
        let mut a = PortAllocator::new(&[EIP], (80, 81), true, None, 5);
        assert!(a.reserve(Proto::Tcp, EIP, 80));
        assert!(!a.reserve(Proto::Tcp, EIP, 80));
        assert_eq!(a.allocate(Proto::Tcp, 1, 80, 0, true, never), Ok((EIP, 81)));
        assert_eq!(
            a.allocate(Proto::Tcp, 1, 80, 0, false, never),
            Err(AllocError::Exhausted)
        );
    }

    #[test]
    fn gcp_owner_blocks() {
        let mut a = PortAllocator::new(&[EIP], (1024, 1024 + 127), false, Some(64), 5);
        let mut ports = Vec::new();
        for i in 0..64 {
            ports.push(a.allocate(Proto::Tcp, 1, i, 7, true, never).unwrap().1);
        }
        let lo = *ports.iter().min().unwrap();
        assert!(ports.iter().all(|p| (lo..lo + 64).contains(p)));
        assert_eq!(
            a.allocate(Proto::Tcp, 1, 1, 7, true, never),
            Err(AllocError::Exhausted)
        );
        // A second owner has its own block; a third finds none.
        assert!(a.allocate(Proto::Tcp, 2, 1, 8, true, never).is_ok());
        assert_eq!(
            a.allocate(Proto::Tcp, 3, 1, 9, true, never),
            Err(AllocError::Exhausted)
        );
        // The gateway flushes the owner's mappings (freeing their ports), then its block.
        for p in ports {
            a.release(Proto::Tcp, EIP, p);
        }
        a.release_owner(7);
        assert!(a.allocate(Proto::Tcp, 3, 1, 9, true, never).is_ok());
    }

    #[test]
    fn scan_finds_the_first_free_port_like_a_bit_by_bit_search() {
        let mut rng = WyRand::new(11);
        for round in 0..200 {
            let mut bits = vec![0u64; WORDS];
            // Densities from empty to nearly full, with some full words.
            let density = rng.below(101);
            for w in bits.iter_mut() {
                for b in 0..64 {
                    if rng.below(100) < density {
                        *w |= 1 << b;
                    }
                }
            }
            let lo = rng.below(65536);
            let hi = lo + rng.below(65536 - lo);
            // Accept only odd ports half of the rounds (APDM's `taken` predicate).
            let odd = round % 2 == 1;
            let accept = |p: u32| !odd || p % 2 == 1;
            let naive = (lo..=hi).find(|p| !bit(&bits, *p) && accept(*p));
            assert_eq!(
                scan(&bits, lo, hi, &mut |p| accept(p)),
                naive,
                "{lo}..={hi}"
            );
        }
    }

    #[test]
    fn a_full_eip_is_refused_and_counts_stay_exact() {
        let mut a = PortAllocator::new(&[EIP], (1024, 1024 + 199), false, None, 9);
        // Reservations outside the range do not count against it.
        assert!(a.reserve(Proto::Udp, EIP, 80));
        assert!(a.reserve(Proto::Udp, EIP, 1030));
        let mut got = std::collections::HashSet::from([1030]);
        for i in 0..199 {
            let (_, p) = a.allocate(Proto::Udp, i, 9, 0, true, never).unwrap();
            assert!(got.insert(p), "port {p} twice");
        }
        let in_range =
            |a: &PortAllocator| a.slots[0].as_ref().unwrap().in_range[Proto::Udp.index()];
        assert_eq!(in_range(&a), 200);
        assert_eq!(
            a.allocate(Proto::Udp, 1, 9, 0, true, never),
            Err(AllocError::Exhausted)
        );
        // Releasing twice counts once.
        a.release(Proto::Udp, EIP, 1100);
        a.release(Proto::Udp, EIP, 1100);
        assert_eq!(in_range(&a), 199);
        assert_eq!(
            a.allocate(Proto::Udp, 1, 9, 0, true, never),
            Ok((EIP, 1100))
        );
    }

    #[test]
    fn empty_pool_refuses() {
        let mut a = PortAllocator::new(&[], (1024, 65535), true, None, 5);
        assert_eq!(
            a.allocate(Proto::Tcp, 1, 1, 0, true, never),
            Err(AllocError::NoEip)
        );
        a.add_eip(EIP);
        assert!(a.allocate(Proto::Tcp, 1, 1, 0, true, never).is_ok());
        assert!(a.remove_eip(EIP));
        assert_eq!(
            a.allocate(Proto::Tcp, 1, 1, 0, true, never),
            Err(AllocError::NoEip)
        );
    }
}
