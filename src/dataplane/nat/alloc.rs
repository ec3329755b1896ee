//! External address and port allocation for one NAT gateway.
//!
//! Owns the EIP pool and, per EIP and protocol, a bitmap of the 65,536 ports (8 KiB) that are
//! taken. What "taken" means depends on the mapping behaviour:
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
//! Every search is bounded: port preservation, then a few random probes, then one linear scan of
//! the candidate range from a random start that skips full 64-port bitmap words. Randomness comes
//! from a seeded wyrand state, never from the OS.

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
    /// Per-owner blocks handed out (block mode only), one bit per block.
    blocks: Vec<u64>,
}

impl EipPorts {
    fn new(addr: u32, nblocks: usize) -> Self {
        let bitmap = || vec![0u64; WORDS].into_boxed_slice();
        EipPorts {
            addr,
            used: [bitmap(), bitmap(), bitmap()],
            blocks: vec![0u64; nblocks.div_ceil(64)],
        }
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

/// A block of consecutive ports reserved for one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnerBlock {
    eip: u32,
    index: u32,
}

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
    eips: Vec<EipPorts>,
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
            eips: Vec::with_capacity(eips.len()),
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

    /// Adds an EIP to the pool (no-op if present).
    pub(crate) fn add_eip(&mut self, addr: u32) {
        if !self.contains(addr) {
            let n = self.nblocks() as usize;
            self.eips.push(EipPorts::new(addr, n));
        }
    }

    /// Removes an EIP and the owner blocks on it. The caller flushes its mappings first.
    pub(crate) fn remove_eip(&mut self, addr: u32) -> bool {
        let before = self.eips.len();
        self.eips.retain(|e| e.addr != addr);
        self.owner_blocks.retain(|_, b| b.eip != addr);
        before != self.eips.len()
    }

    pub(crate) fn contains(&self, addr: u32) -> bool {
        self.eips.iter().any(|e| e.addr == addr)
    }

    pub(crate) fn eips(&self) -> impl Iterator<Item = u32> + '_ {
        self.eips.iter().map(|e| e.addr)
    }

    fn eip_mut(&mut self, addr: u32) -> Option<&mut EipPorts> {
        self.eips.iter_mut().find(|e| e.addr == addr)
    }

    /// Is this port taken in the bitmap (a mapping in EIM mode, a DNAT reservation in both)?
    pub(crate) fn is_used(&self, proto: Proto, addr: u32, port: u16) -> bool {
        self.eips
            .iter()
            .find(|e| e.addr == addr)
            .is_some_and(|e| bit(&e.used[proto.index()], u32::from(port)))
    }

    /// Marks a port taken (DNAT rules). False if it already was, or the EIP is not in the pool.
    pub(crate) fn reserve(&mut self, proto: Proto, addr: u32, port: u16) -> bool {
        match self.eip_mut(addr) {
            Some(e) if !bit(&e.used[proto.index()], u32::from(port)) => {
                set_bit(&mut e.used[proto.index()], u32::from(port), true);
                true
            }
            _ => false,
        }
    }

    /// Frees a port taken by [`PortAllocator::allocate`] (EIM) or [`PortAllocator::reserve`].
    pub(crate) fn release(&mut self, proto: Proto, addr: u32, port: u16) {
        if let Some(e) = self.eip_mut(addr) {
            set_bit(&mut e.used[proto.index()], u32::from(port), false);
        }
    }

    /// Frees an owner's port block (block mode). The caller flushes the owner's mappings first.
    pub(crate) fn release_owner(&mut self, owner: u32) {
        if let Some(b) = self.owner_blocks.remove(&owner) {
            if let Some(e) = self.eip_mut(b.eip) {
                set_bit(&mut e.blocks, b.index, false);
            }
        }
    }

    /// The owner's block, reserving one on the first call. Tries the EIPs from a hash of the owner.
    fn owner_block(&mut self, owner: u32) -> Result<OwnerBlock, AllocError> {
        if let Some(b) = self.owner_blocks.get(&owner) {
            return Ok(*b);
        }
        if self.eips.is_empty() {
            return Err(AllocError::NoEip);
        }
        let n = self.eips.len();
        let first = (self.hasher.hash_one(owner) % n as u64) as usize;
        let nblocks = self.nblocks();
        for k in 0..n {
            let e = &mut self.eips[(first + k) % n];
            let free = (0..nblocks).find(|i| !bit(&e.blocks, *i));
            if let Some(index) = free {
                set_bit(&mut e.blocks, index, true);
                let b = OwnerBlock { eip: e.addr, index };
                self.owner_blocks.insert(owner, b);
                return Ok(b);
            }
        }
        Err(AllocError::Exhausted)
    }

    /// The EIP an internal address uses (paired pooling), without allocating.
    pub(crate) fn eip_for(&self, internal: u32) -> Option<u32> {
        if self.eips.is_empty() {
            return None;
        }
        let i = (self.hasher.hash_one(internal) % self.eips.len() as u64) as usize;
        Some(self.eips[i].addr)
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
        mut taken: impl FnMut(u32, u16) -> bool,
    ) -> Result<(u32, u16), AllocError> {
        let (eip, wlo, whi) = match self.block {
            Some(size) => {
                let b = self.owner_block(owner)?;
                let lo = u32::from(self.lo) + b.index * u32::from(size);
                (b.eip, lo, lo + u32::from(size) - 1)
            }
            None => (
                self.eip_for(internal).ok_or(AllocError::NoEip)?,
                u32::from(self.lo),
                u32::from(self.hi),
            ),
        };
        let n = whi - wlo + 1;
        let preserve = self.preserve;
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
        let Some(e) = self.eip_mut(eip) else {
            return Err(AllocError::NoEip);
        };
        let bits = &mut e.used[proto.index()];
        let mut free = |p: u32, bits: &[u64]| !bit(bits, p) && !taken(eip, p as u16);

        let chosen =
            if preserve && (plo..=phi).contains(&u32::from(port)) && free(u32::from(port), bits) {
                Some(u32::from(port))
            } else if let Some(p) = probes.iter().copied().find(|p| free(*p, bits)) {
                Some(p)
            } else {
                // One pass over the window from `start`, wrapping, skipping full bitmap words.
                let mut i = 0;
                let mut found = None;
                while i < n {
                    let p = wlo + (start - wlo + i) % n;
                    let word = bits[(p >> 6) as usize];
                    if word == u64::MAX {
                        i += (64 - (p & 63)).min(whi - p + 1);
                        continue;
                    }
                    if free(p, bits) {
                        found = Some(p);
                        break;
                    }
                    i += 1;
                }
                found
            };
        let p = chosen.ok_or(AllocError::Exhausted)?;
        if mark {
            set_bit(bits, p, true);
        }
        Ok((eip, p as u16))
    }

    /// Bytes held: bitmaps and the owner-block map.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.eips
            .iter()
            .map(|e| 3 * WORDS * 8 + e.blocks.capacity() * 8)
            .sum::<usize>()
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
