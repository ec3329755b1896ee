//! Which sim ports a wake-up polls, without looking at every port: those a packet was given
//! since (`woken`, pushed by the forwarding path and by a resumed wait) and those whose timer
//! fell due (a heap of deadlines). With ten thousand sim instances a wake-up used to visit each
//! of them two or three times (is it due, is any dirty, which deadline is next), and every API
//! change wakes the loop several times.
//!
//! The heap holds a port's deadline each time it changes; an entry it no longer has is stale and
//! is skipped when it falls due (the port is not due then). A swap of the port set renumbers
//! the entries (new sim ports are woken); a resolver handed to the control plane is woken.
//! Everything is made again from the ports themselves at the start and when stale entries pile
//! up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::forward::PortSlot;
use crate::time::Instant;

#[derive(Debug)]
pub(super) struct SimSchedule {
    /// (deadline, port id); the earliest on top.
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Visit every sim port at the next [`SimSchedule::due`] and make the heap again.
    rescan: bool,
}

impl SimSchedule {
    pub fn new() -> SimSchedule {
        SimSchedule {
            timers: BinaryHeap::new(),
            rescan: true,
        }
    }

    /// Fills `out` with the sim ports to poll at `now`, in port order, each once: every one
    /// after a rescan, else the `woken` ones (taken) and those whose timer is due. A port in
    /// `out` may still not be due (a stale timer, a woken port that waits): the caller checks.
    pub fn due(
        &mut self,
        ports: &[PortSlot],
        woken: &mut Vec<u32>,
        now: Instant,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        if std::mem::take(&mut self.rescan) {
            woken.clear();
            self.timers.clear();
            for (i, p) in ports.iter().enumerate() {
                if let PortSlot::Sim(s) = p {
                    out.push(i as u32);
                    if let Some(t) = s.deadline() {
                        self.timers.push(Reverse((t, i as u32)));
                    }
                }
            }
            return;
        }
        out.append(woken);
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            out.push(i);
        }
        out.sort_unstable();
        out.dedup();
        // Stale entries beyond what the ports can hold: make the heap again next time.
        if self.timers.len() > 2 * ports.len() + 64 {
            self.rescan = true;
        }
    }

    /// Port `port` was polled and scheduled: its deadline went from `before` to `after`. An
    /// unchanged deadline still in the future already has its entry.
    pub fn scheduled(
        &mut self,
        port: u32,
        before: Option<Instant>,
        after: Option<Instant>,
        now: Instant,
    ) {
        if let Some(t) = after
            && (before != after || t <= now)
        {
            self.timers.push(Reverse((t, port)));
        }
    }

    /// The earliest deadline in the heap (perhaps a stale one: a wake-up too early, never too
    /// late). While a rescan is pending the heap is not yet made: the caller wakes at once
    /// ([`SimSchedule::rescan_pending`]).
    pub fn next(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// After a swap: port `i` is now `new_id[i]`, or gone. Kept ports' timers follow them; a
    /// removed port's are dropped.
    pub fn renumber(&mut self, new_id: &[Option<usize>]) {
        let timers = std::mem::take(&mut self.timers).into_vec();
        self.timers = timers
            .into_iter()
            .filter_map(|Reverse((t, i))| {
                let j = new_id.get(i as usize).copied().flatten()?;
                Some(Reverse((t, j as u32)))
            })
            .collect();
    }

    /// Whether the next [`SimSchedule::due`] visits every sim port.
    pub fn rescan_pending(&self) -> bool {
        self.rescan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(s: &mut SimSchedule, woken: &mut Vec<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        s.due(&[], woken, Instant::from_millis(now), &mut out);
        out
    }

    #[test]
    fn woken_and_due_ports_are_polled_once_in_port_order() {
        let ms = Instant::from_millis;
        let mut s = SimSchedule::new();
        assert!(s.rescan_pending());
        assert!(
            due(&mut s, &mut vec![4], 0).is_empty(),
            "a rescan visits the ports"
        );
        assert!(!s.rescan_pending());
        s.scheduled(3, None, Some(ms(5)), ms(0));
        s.scheduled(1, None, Some(ms(9)), ms(0));
        assert_eq!(s.next(), Some(ms(5)));
        assert!(due(&mut s, &mut Vec::new(), 4).is_empty());
        let mut woken = vec![7, 3, 7];
        assert_eq!(due(&mut s, &mut woken, 5), vec![3, 7]);
        assert!(woken.is_empty(), "taken");
        assert_eq!(s.next(), Some(ms(9)));
        // An unchanged deadline still ahead has its entry already; a changed one gets another.
        s.scheduled(1, Some(ms(9)), Some(ms(9)), ms(6));
        s.scheduled(2, Some(ms(8)), Some(ms(7)), ms(6));
        assert_eq!(due(&mut s, &mut Vec::new(), 10), vec![1, 2]);
        assert_eq!(s.next(), None);
        // A deadline already passed is pushed again even when unchanged.
        s.scheduled(5, Some(ms(10)), Some(ms(10)), ms(10));
        assert_eq!(due(&mut s, &mut Vec::new(), 10), vec![5]);
    }

    #[test]
    fn a_swap_moves_the_timers_of_kept_ports_and_drops_the_removed_ones() {
        let ms = Instant::from_millis;
        let mut s = SimSchedule::new();
        due(&mut s, &mut Vec::new(), 0);
        s.scheduled(0, None, Some(ms(5)), ms(0));
        s.scheduled(1, None, Some(ms(6)), ms(0));
        s.scheduled(2, None, Some(ms(7)), ms(0));
        // Port 1 removed: 0 stays, 2 becomes 1.
        s.renumber(&[Some(0), None, Some(1)]);
        assert_eq!(due(&mut s, &mut Vec::new(), 10), vec![0, 1]);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn stale_entries_piling_up_make_the_heap_again() {
        let mut s = SimSchedule::new();
        due(&mut s, &mut Vec::new(), 0);
        for k in 0..100 {
            s.scheduled(0, None, Some(Instant::from_millis(1000 + k)), Instant::ZERO);
        }
        due(&mut s, &mut Vec::new(), 1);
        assert!(s.rescan_pending());
        due(&mut s, &mut Vec::new(), 2);
        assert_eq!(s.next(), None, "made again from the ports (none here)");
    }
}
