//! A hashed timing wheel with one-second ticks over `u32` entries (slab indices), shared by the
//! NAT connection table and the security-group flow table.
//!
//! Lazy rescheduling: an entry sits in exactly one bucket; a packet that refreshes it only updates
//! its owner's expiry, and when the bucket comes due the owner either expires the entry or puts it
//! back at its new deadline. Owners keep the tick an entry was scheduled for (what
//! [`Wheel::schedule`] returns) so that a stale bucket entry — removed, reused or rescheduled —
//! is recognised and skipped. Nothing here scans all entries: [`Wheel::take_due`] hands out one
//! bucket per tick, [`Wheel::next_due`] scans a bitmap of non-empty buckets.

use std::time::Duration;

use crate::time::Instant;

/// Ticks are capped here (about 34 years), so tick arithmetic never overflows.
pub(crate) const MAX_TICK: u32 = 1 << 30;

/// Whole seconds since the clock's epoch: the wheel's tick.
pub(crate) fn tick(now: Instant) -> u32 {
    (now.micros() / 1_000_000).min(u64::from(MAX_TICK)) as u32
}

/// A duration in ticks, rounded up.
pub(crate) fn ticks(d: Duration) -> u32 {
    d.as_micros().div_ceil(1_000_000).min(u128::from(MAX_TICK)) as u32
}

#[derive(Debug, Clone)]
pub(crate) struct Wheel {
    buckets: Vec<Vec<u32>>,
    nonempty: Vec<u64>,
    /// The next tick to process; every earlier tick has been.
    current: u32,
    entries: usize,
    size: u32,
}

impl Wheel {
    /// A wheel of `size` one-second buckets (a multiple of 64): deadlines further out than that
    /// are parked in the last bucket and rescheduled when it comes due.
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(64).div_ceil(64) * 64;
        Wheel {
            buckets: vec![Vec::new(); size as usize],
            nonempty: vec![0; (size / 64) as usize],
            current: 0,
            entries: 0,
            size,
        }
    }

    /// When nothing is pending, moves straight to `now` instead of stepping over empty buckets
    /// later. Call it only when adding an entry, never while draining due buckets.
    pub(crate) fn skip_idle(&mut self, now: u32) {
        if self.entries == 0 && now > self.current {
            self.current = now;
        }
    }

    /// Puts `entry` in the bucket for `at` (clamped into the wheel's span); returns the tick used.
    pub(crate) fn schedule(&mut self, entry: u32, at: u32) -> u32 {
        let at = at.clamp(self.current, self.current + self.size - 1);
        let b = (at % self.size) as usize;
        self.buckets[b].push(entry);
        self.nonempty[b / 64] |= 1 << (b % 64);
        self.entries += 1;
        at
    }

    /// The first tick with a non-empty bucket, if any: a scan of the bitmap words at most.
    pub(crate) fn next_due(&self) -> Option<u32> {
        if self.entries == 0 {
            return None;
        }
        let words = self.nonempty.len();
        let start = self.current % self.size;
        let sw = (start / 64) as usize;
        for k in 0..=words {
            let w = (sw + k) % words;
            let mut bits = self.nonempty[w];
            if k == 0 {
                bits &= !0u64 << (start % 64);
            } else if k == words {
                bits &= !(!0u64 << (start % 64));
            }
            if bits != 0 {
                let b = w as u32 * 64 + bits.trailing_zeros();
                return Some(self.current + (b + self.size - start) % self.size);
            }
        }
        None
    }

    /// The next bucket due at `now`, emptied: its tick and entries, or `None` when every tick up
    /// to `now` has been handed out. Give the vector back with [`Wheel::put_back`] before asking
    /// again. A `now` more than a wheel's span ahead skips the ticks every bucket was already
    /// visited for.
    pub(crate) fn take_due(&mut self, now: u32) -> Option<(u32, Vec<u32>)> {
        if now < self.current {
            return None;
        }
        if now - self.current >= self.size {
            self.current = now - self.size + 1;
        }
        let cur = self.current;
        let b = (cur % self.size) as usize;
        let due = std::mem::take(&mut self.buckets[b]);
        self.nonempty[b / 64] &= !(1 << (b % 64));
        self.entries -= due.len();
        Some((cur, due))
    }

    /// Ends the handling of tick `cur` (from [`Wheel::take_due`]): keeps the vector's capacity
    /// for the bucket and moves on to the next tick.
    pub(crate) fn put_back(&mut self, cur: u32, mut due: Vec<u32>) {
        due.clear();
        let b = (cur % self.size) as usize;
        if self.buckets[b].is_empty() {
            self.buckets[b] = due;
        }
        self.current = cur + 1;
    }

    /// Bytes held, from capacities.
    pub(crate) fn bytes(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.capacity() * 4 + size_of::<Vec<u32>>())
            .sum::<usize>()
            + self.nonempty.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_at_their_tick_and_far_ones_are_parked() {
        let mut w = Wheel::new(64);
        assert_eq!(w.schedule(1, 5), 5);
        assert_eq!(
            w.schedule(2, 1000),
            63,
            "parked in the last bucket of the span"
        );
        assert_eq!(w.next_due(), Some(5));
        let mut seen = Vec::new();
        while let Some((cur, due)) = w.take_due(10) {
            seen.extend(due.iter().map(|e| (cur, *e)));
            w.put_back(cur, due);
        }
        assert_eq!(seen, [(5, 1)]);
        assert_eq!(w.next_due(), Some(63));
    }

    #[test]
    fn a_late_call_skips_ahead_without_losing_entries() {
        let mut w = Wheel::new(64);
        w.schedule(7, 3);
        let mut seen = Vec::new();
        while let Some((cur, due)) = w.take_due(500) {
            seen.extend(due.iter().copied());
            w.put_back(cur, due);
        }
        assert_eq!(seen, [7]);
        assert!(w.next_due().is_none());
        w.skip_idle(900);
        assert_eq!(w.schedule(8, 0), 900, "an idle wheel jumps to now");
    }
}
