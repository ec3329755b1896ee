//! Fragment tracking: non-first IPv4 fragments carry no transport header, so they follow the
//! translation of their datagram's first fragment.
//!
//! When the gateway translates a first fragment (offset 0, more-fragments set) it records
//! (direction, source, destination, protocol, IP identification) -> new address here. A later
//! fragment with the same key gets the same address; one with no entry (it overtook the first
//! fragment, or the first was dropped) is dropped and counted as `FragmentOutOfOrder` — nothing is
//! buffered, the sender's reassembly timer and retransmission take over.
//!
//! The table is a fixed-capacity ring (entries are added in time order and all live the same
//! `fragment_timeout`, so the oldest entry is always the next to expire) with a seeded index.
//! When the slot the ring would reuse has not expired yet, the new first fragment is refused
//! (`FragmentTableFull`) rather than breaking a datagram in flight. No allocation after the ring
//! has filled once; never more than `fragment_entries` entries.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

use super::NatDrop;
use super::conntrack::Dir;

/// The key of a datagram as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    pub(crate) dir: Dir,
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) proto: u8,
    pub(crate) ident: u16,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FragKey,
    new_addr: u32,
    expires: u32,
    live: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct FragTable {
    ring: Vec<Entry>,
    cap: usize,
    head: usize,
    index: HashTable<u32>,
    hasher: FixedState,
    timeout: u32,
}

fn hash(h: &FixedState, k: &FragKey) -> u64 {
    h.hash_one(k)
}

impl FragTable {
    pub(crate) fn new(cap: usize, timeout_ticks: u32, seed: u64) -> Self {
        FragTable {
            ring: Vec::new(),
            cap: cap.max(1),
            head: 0,
            index: HashTable::new(),
            hasher: FixedState::with_seed(seed),
            timeout: timeout_ticks.max(1),
        }
    }

    /// The address a later fragment of `key` gets, if its first fragment was translated recently.
    pub(crate) fn lookup(&self, key: &FragKey, now: u32) -> Option<u32> {
        let ring = &self.ring;
        self.index
            .find(hash(&self.hasher, key), |&i| ring[i as usize].key == *key)
            .map(|&i| &ring[i as usize])
            .filter(|e| e.live && e.expires > now)
            .map(|e| e.new_addr)
    }

    /// Records the translation of a first fragment. An existing entry for the key is kept.
    pub(crate) fn insert(&mut self, key: FragKey, new_addr: u32, now: u32) -> Result<(), NatDrop> {
        if self.lookup(&key, now).is_some() {
            return Ok(());
        }
        let entry = Entry {
            key,
            new_addr,
            expires: now.saturating_add(self.timeout),
            live: true,
        };
        let slot = if self.ring.len() < self.cap {
            self.ring.push(entry);
            self.ring.len() - 1
        } else {
            let slot = self.head;
            let old = self.ring[slot];
            if old.live && old.expires > now {
                return Err(NatDrop::FragmentTableFull);
            }
            if old.live
                && let Ok(e) = self
                    .index
                    .find_entry(hash(&self.hasher, &old.key), |&i| i as usize == slot)
            {
                e.remove();
            }
            self.ring[slot] = entry;
            self.head = (slot + 1) % self.cap;
            slot
        };
        // A stale entry with the same key (expired, not yet overwritten) leaves the index first.
        let (h, ring) = (&self.hasher, &self.ring);
        if let Ok(e) = self.index.find_entry(hash(h, &key), |&i| {
            i as usize != slot && ring[i as usize].key == key
        }) {
            let (i, _) = e.remove();
            self.ring[i as usize].live = false;
        }
        let (h, ring) = (&self.hasher, &self.ring);
        self.index.insert_unique(hash(h, &key), slot as u32, |&i| {
            hash(h, &ring[i as usize].key)
        });
        Ok(())
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.ring.capacity() * size_of::<Entry>() + self.index.capacity() * 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u16) -> FragKey {
        FragKey {
            dir: Dir::Out,
            src: 1,
            dst: 2,
            proto: 17,
            ident,
        }
    }

    #[test]
    fn later_fragments_follow_and_entries_expire() {
        let mut t = FragTable::new(2, 30, 1);
        t.insert(key(1), 99, 0).unwrap();
        assert_eq!(t.lookup(&key(1), 10), Some(99));
        assert_eq!(t.lookup(&key(2), 10), None);
        assert_eq!(t.lookup(&key(1), 30), None, "expired");
    }

    #[test]
    fn full_ring_refuses_until_the_oldest_expires() {
        let mut t = FragTable::new(2, 30, 1);
        t.insert(key(1), 1, 0).unwrap();
        t.insert(key(2), 2, 5).unwrap();
        assert_eq!(t.insert(key(3), 3, 10), Err(NatDrop::FragmentTableFull));
        t.insert(key(3), 3, 30).unwrap();
        assert_eq!(t.lookup(&key(3), 31), Some(3));
        assert_eq!(t.lookup(&key(1), 31), None);
        assert_eq!(t.lookup(&key(2), 31), Some(2));
        // Re-inserting an expired key replaces its stale entry.
        t.insert(key(2), 7, 40).unwrap();
        assert_eq!(t.lookup(&key(2), 41), Some(7));
    }
}
