//! Admission of new inbound-initiated flows per outside source address: at most
//! [`NatConfig::per_source_new_per_sec`](super::config::NatConfig::per_source_new_per_sec) per
//! source per second (a fixed one-second window, as the per-instance rate quota has). A SYN or
//! UDP flood from one address is refused before it makes a session or reaches the instance;
//! every other source keeps its own share.
//!
//! Bounded memory whatever the sources: a direct-mapped table of [`SLOTS`] windows indexed by a
//! keyed hash of the address, made on the first inbound flow (a gateway that only translates
//! outbound never has one). Two sources that meet in one slot within one second share its count,
//! so the bound errs on the side of refusing; with sources spread over the slots that is rare,
//! and it can never let a source through more than the limit.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

/// Windows in the table (a power of two).
pub const SLOTS: usize = 4096;

/// The flows counted in one slot during one second.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    second: u32,
    count: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct SourceLimiter {
    /// `None`: no limit.
    max: Option<u32>,
    windows: Vec<Window>,
    hasher: FixedState,
}

/// Half-open inbound TCP sessions (the remote's SYN seen, its handshake ACK not yet) per outside
/// source address, in a direct-mapped table like [`SourceLimiter`]'s (a slot's count is exact for
/// the sources that share it, so adding and removing always meet): at most
/// [`NatConfig::half_open_per_source`](super::config::NatConfig::half_open_per_source) per slot.
/// A SYN flood from one address fills its budget in a fraction of a second and is refused from
/// then on, until its half-open sessions time out or are early-dropped, while a client that
/// completes its handshakes never holds more than a few.
#[derive(Debug, Clone)]
pub(crate) struct HalfOpenTable {
    /// `None`: no limit (the counts are still kept, for the total).
    max: Option<u32>,
    counts: Vec<u32>,
    total: u32,
    hasher: FixedState,
}

impl HalfOpenTable {
    pub(crate) fn new(max: Option<u32>, seed: u64) -> HalfOpenTable {
        HalfOpenTable {
            max,
            counts: Vec::new(),
            total: 0,
            hasher: FixedState::with_seed(seed),
        }
    }

    fn slot(&self, src: u32) -> usize {
        (self.hasher.hash_one(src) as usize) & (SLOTS - 1)
    }

    /// Whether `src` may hold one more half-open session.
    pub(crate) fn has_room(&self, src: u32) -> bool {
        let Some(max) = self.max else {
            return true;
        };
        self.counts.get(self.slot(src)).is_none_or(|&n| n < max)
    }

    pub(crate) fn add(&mut self, src: u32) {
        if self.counts.is_empty() {
            self.counts = vec![0; SLOTS];
        }
        let i = self.slot(src);
        self.counts[i] += 1;
        self.total += 1;
    }

    pub(crate) fn remove(&mut self, src: u32) {
        let i = self.slot(src);
        if let Some(n) = self.counts.get_mut(i) {
            *n = n.saturating_sub(1);
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Half-open sessions now, every source.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Bytes the table holds.
    pub(crate) fn allocation_size(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u32>()
    }
}

impl SourceLimiter {
    pub(crate) fn new(max: Option<u32>, seed: u64) -> SourceLimiter {
        SourceLimiter {
            max,
            windows: Vec::new(),
            hasher: FixedState::with_seed(seed),
        }
    }

    /// Whether source `src` may open one more inbound flow in second `now` (and counts it).
    pub(crate) fn admit(&mut self, src: u32, now: u32) -> bool {
        let Some(max) = self.max else {
            return true;
        };
        if self.windows.is_empty() {
            self.windows = vec![Window::default(); SLOTS];
        }
        let i = (self.hasher.hash_one(src) as usize) & (SLOTS - 1);
        let w = &mut self.windows[i];
        if w.second != now {
            *w = Window {
                second: now,
                count: 0,
            };
        }
        if w.count >= max {
            return false;
        }
        w.count += 1;
        true
    }

    /// Bytes the table holds.
    pub(crate) fn allocation_size(&self) -> usize {
        self.windows.capacity() * std::mem::size_of::<Window>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_limit_per_second_and_others_keep_theirs() {
        let mut l = SourceLimiter::new(Some(3), 7);
        let (flood, other) = (0xc633_640a, 0xc633_640b);
        assert_eq!((0..5).filter(|_| l.admit(flood, 10)).count(), 3);
        assert!(
            l.admit(other, 10),
            "another source is not limited by the flood"
        );
        assert!(l.admit(flood, 11), "a new second, a new window");
    }

    #[test]
    fn without_a_limit_everything_is_admitted_and_nothing_is_allocated() {
        let mut l = SourceLimiter::new(None, 7);
        assert!((0..10_000).all(|i| l.admit(1, i / 100)));
        assert_eq!(l.allocation_size(), 0);
    }

    #[test]
    fn many_sources_never_grow_the_table_and_none_exceeds_the_limit() {
        let mut l = SourceLimiter::new(Some(2), 7);
        let mut admitted = std::collections::HashMap::new();
        for round in 0..3 {
            for src in 0..100_000u32 {
                if l.admit(src, 5) {
                    *admitted.entry(src).or_insert(0) += 1;
                }
            }
            assert!(l.allocation_size() <= SLOTS * 8, "round {round}");
        }
        assert!(admitted.values().all(|&n| n <= 2));
    }
}
