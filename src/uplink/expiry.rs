//! Idle timeouts for the uplink's flows, sans-IO: a min-heap of deadlines with lazy rescheduling.
//!
//! A packet that refreshes a flow only updates the flow's own `last_active`; the heap keeps one
//! entry per flow, at a deadline that may be early. When an entry comes due its owner compares the
//! flow's real deadline with `now` and either expires the flow or schedules it again. Entries carry
//! the flow's generation, so an entry left behind by a removed flow (or one that reused its key)
//! is recognised and discarded. Nothing scans the flow tables.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::Instant;

/// Deadlines keyed by `K`, each tagged with the generation of the flow it was scheduled for.
#[derive(Debug)]
pub(crate) struct Deadlines<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, K, u64)>>,
}

impl<K: Ord + Copy> Deadlines<K> {
    pub(crate) fn new() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
        }
    }

    /// Looks at `key` (generation `generation`) again at `at`.
    pub(crate) fn schedule(&mut self, at: Instant, key: K, generation: u64) {
        self.heap.push(Reverse((at, key, generation)));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next entry due at `now`: `(key, generation)`. Call until `None`, and for each either
    /// expire the flow or [`schedule`](Self::schedule) it again.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(K, u64)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((_, k, g))| (k, g))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    /// A toy owner: flows with a last-active time and a generation, expired after `idle`.
    struct Owner {
        flows: HashMap<u8, (Instant, u64)>,
        deadlines: Deadlines<u8>,
        idle: Duration,
        next_gen: u64,
    }

    impl Owner {
        fn open(&mut self, k: u8, now: Instant) {
            self.next_gen += 1;
            self.flows.insert(k, (now, self.next_gen));
            self.deadlines.schedule(now + self.idle, k, self.next_gen);
        }

        fn sweep(&mut self, now: Instant) -> Vec<u8> {
            let mut expired = Vec::new();
            while let Some((k, g)) = self.deadlines.pop_due(now) {
                match self.flows.get(&k) {
                    Some(&(last, fg)) if fg == g => {
                        if last + self.idle <= now {
                            self.flows.remove(&k);
                            expired.push(k);
                        } else {
                            self.deadlines.schedule(last + self.idle, k, g);
                        }
                    }
                    _ => {}
                }
            }
            expired
        }
    }

    #[test]
    fn refreshed_flows_live_on_and_stale_entries_are_discarded() {
        let idle = Duration::from_secs(10);
        let mut o = Owner {
            flows: HashMap::new(),
            deadlines: Deadlines::new(),
            idle,
            next_gen: 0,
        };
        o.open(1, Instant::ZERO);
        o.open(2, Instant::ZERO);
        // Flow 1 sees traffic at 8 s; flow 2 is removed and reopened under the same key at 5 s.
        o.flows.get_mut(&1).unwrap().0 = Instant::from_secs(8);
        o.flows.remove(&2);
        o.open(2, Instant::from_secs(5));
        assert_eq!(o.deadlines.next(), Some(Instant::from_secs(10)));
        assert_eq!(o.sweep(Instant::from_secs(9)), Vec::<u8>::new());
        assert_eq!(o.sweep(Instant::from_secs(10)), Vec::<u8>::new());
        assert_eq!(
            o.deadlines.len(),
            2,
            "flow 1 rescheduled, flow 2's old entry gone"
        );
        assert_eq!(o.sweep(Instant::from_secs(15)), vec![2]);
        assert_eq!(o.sweep(Instant::from_secs(18)), vec![1]);
        assert_eq!(o.deadlines.next(), None);
    }
}
