//! An index of slab slots (`u32`) split into shards by hash, so that no single insert stalls the
//! loop for long.
//!
//! A `hashbrown::HashTable` does all its bulk work inside one insert: growing copies every entry
//! into a table twice the size, and once deletions have left enough tombstones it rehashes every
//! entry in place. For a table of a million sessions either is tens of milliseconds in one call,
//! during which the loop serves no port. [`ShardedIndex`] keeps the same entries in up to
//! [`MAX_SHARDS`] tables chosen by bits of the hash that hashbrown itself uses for neither the
//! bucket nor the tag, so each grows and rehashes on its own and the longest such call handles
//! about [`SHARD_TARGET`] entries, whatever the total. A lookup costs one more index and one
//! more pointer than a single table.

use hashbrown::HashTable;

/// The entries one shard is sized for at the index's maximum.
pub(crate) const SHARD_TARGET: usize = 4096;
/// At most this many shards (at 1,048,576 entries and more: 4,096 each at the maximum).
pub(crate) const MAX_SHARDS: usize = 256;
/// hashbrown takes the bucket from the low bits of the hash and its tag from the top seven; the
/// shard comes from the bits in between.
const SHARD_SHIFT: u32 = 40;

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct ShardedIndex {
    shards: Box<[HashTable<u32>]>,
    mask: usize,
}

impl ShardedIndex {
    /// An index that will hold at most `max` entries, with room for `initial` before any shard
    /// grows.
    pub(crate) fn new(max: usize, initial: usize) -> Self {
        let n = max
            .div_ceil(SHARD_TARGET)
            .next_power_of_two()
            .clamp(1, MAX_SHARDS);
        let per_shard = initial.div_ceil(n);
        ShardedIndex {
            shards: (0..n)
                .map(|_| HashTable::with_capacity(per_shard))
                .collect(),
            mask: n - 1,
        }
    }

    fn shard(&self, hash: u64) -> usize {
        (hash >> SHARD_SHIFT) as usize & self.mask
    }

    /// The entry with this hash for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&u32) -> bool) -> Option<u32> {
        self.shards[self.shard(hash)].find(hash, eq).copied()
    }

    /// Adds `value` under `hash`; `rehash` gives the hash of an entry when its shard grows.
    #[inline]
    pub(crate) fn insert_unique(&mut self, hash: u64, value: u32, rehash: impl Fn(&u32) -> u64) {
        let s = self.shard(hash);
        self.shards[s].insert_unique(hash, value, rehash);
    }

    /// Removes the entry with this hash for which `eq` holds; whether there was one.
    #[inline]
    pub(crate) fn remove(&mut self, hash: u64, eq: impl FnMut(&u32) -> bool) -> bool {
        let s = self.shard(hash);
        match self.shards[s].find_entry(hash, eq) {
            Ok(e) => {
                e.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Bytes held (hashbrown: buckets = capacity * 8 / 7 rounded up to a power of two, 4 bytes
    /// per bucket and one control byte, plus one group of trailing control bytes per table).
    pub(crate) fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|t| match t.capacity() {
                0 => 0,
                c if c < 7 => (c + 1) * 5 + 16,
                c => (c * 8 / 7).next_power_of_two() * 5 + 16,
            })
            .sum::<usize>()
            + self.shards.len() * size_of::<HashTable<u32>>()
    }

    /// The number of shards (for tests and memory reports).
    #[cfg(test)]
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The most entries any shard holds.
    #[cfg(test)]
    pub(crate) fn largest_shard(&self) -> usize {
        self.shards.iter().map(HashTable::len).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use foldhash::fast::FixedState;

    use super::*;

    #[test]
    fn shards_scale_with_the_maximum() {
        assert_eq!(ShardedIndex::new(1, 1).shards(), 1);
        assert_eq!(ShardedIndex::new(4096, 1024).shards(), 1);
        assert_eq!(ShardedIndex::new(4097, 1024).shards(), 2);
        assert_eq!(ShardedIndex::new(1 << 20, 1024).shards(), 256);
        assert_eq!(ShardedIndex::new(1 << 24, 1024).shards(), 256);
    }

    /// Entries spread evenly over the shards, and every inserted entry is found, and none after
    /// its removal.
    #[test]
    fn entries_are_found_in_their_shard_and_spread_evenly() {
        let h = FixedState::with_seed(7);
        let key = |v: u32| h.hash_one(v ^ 0x5a5a_0000);
        let n = 200_000u32;
        let mut ix = ShardedIndex::new(n as usize, 1024);
        for v in 0..n {
            ix.insert_unique(key(v), v, |&x| key(x));
        }
        assert_eq!(ix.len(), n as usize);
        let even = n as usize / ix.shards();
        assert!(
            ix.largest_shard() < even + even / 5,
            "largest shard {} for an even {even}",
            ix.largest_shard()
        );
        for v in (0..n).step_by(7) {
            assert_eq!(ix.find(key(v), |&x| x == v), Some(v));
        }
        for v in (0..n).step_by(2) {
            assert!(ix.remove(key(v), |&x| x == v));
            assert!(!ix.remove(key(v), |&x| x == v), "removed twice");
        }
        assert_eq!(ix.len(), n as usize / 2);
        assert_eq!(ix.find(key(4), |&x| x == 4), None);
        assert_eq!(ix.find(key(5), |&x| x == 5), Some(5));
        assert!(ix.bytes() > n as usize / 2 * 5);
    }
}
