//! The uplink's side of the public segment: one queue of packets from the segment (read by the
//! segment-side TCP stack) and one towards it (written by that stack and by the UDP and ICMP
//! relays), with the IPv4 identification counter of the packets the uplink builds itself.
//!
//! Unlike the simulator's `QueueDevice`, a full transmit queue makes smoltcp wait (its transmit
//! token is refused, the data stays in the socket and goes out on a later poll) instead of losing
//! the packet.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// A medium-IP smoltcp device over two bounded FIFOs.
#[derive(Debug)]
pub(crate) struct Wire {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
    limit: usize,
    ident: u16,
}

impl Wire {
    pub(crate) fn new(mtu: usize, limit: usize) -> Wire {
        Wire {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
            limit: limit.max(1),
            ident: 0,
        }
    }

    pub(crate) fn mtu(&self) -> usize {
        self.mtu
    }

    /// Queues a packet from the segment for the TCP stack; `false` when the queue is full or the
    /// packet exceeds the MTU.
    pub(crate) fn push_rx(&mut self, packet: &[u8]) -> bool {
        if packet.len() > self.mtu || self.rx.len() >= self.limit {
            return false;
        }
        self.rx.push_back(packet.to_vec());
        true
    }

    /// Queues a packet towards the segment; `false` (the packet is dropped) when the queue is full.
    pub(crate) fn push_tx(&mut self, packet: Vec<u8>) -> bool {
        if self.tx.len() >= self.limit {
            return false;
        }
        self.tx.push_back(packet);
        true
    }

    pub(crate) fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    pub(crate) fn tx_len(&self) -> usize {
        self.tx.len()
    }

    /// The identification field for the next packet the uplink builds.
    pub(crate) fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }
}

impl phy::Device for Wire {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        // An answer to this packet (an ACK, a RST) may exceed the limit by one: it is small, and
        // refusing the token would lose the received packet too.
        Some((
            RxToken(packet),
            TxToken {
                queue: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: SmolInstant) -> Option<TxToken<'_>> {
        if self.tx.len() >= self.limit {
            return None;
        }
        Some(TxToken {
            queue: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = None;
        caps
    }
}

pub(crate) struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

pub(crate) struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        self.queue.push_back(packet);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::Device;

    #[test]
    fn a_full_transmit_queue_refuses_tokens_instead_of_dropping() {
        let mut w = Wire::new(1500, 2);
        let now = SmolInstant::from_micros(0);
        assert!(w.push_tx(vec![1]));
        assert!(w.transmit(now).is_some());
        assert!(w.push_tx(vec![2]));
        assert!(w.transmit(now).is_none());
        assert!(!w.push_tx(vec![3]));
        assert_eq!(w.pop_tx(), Some(vec![1]));
        assert!(!w.push_rx(&[0; 1501]));
        assert!(w.push_rx(&[0; 20]));
        assert_eq!(w.next_ident(), 1);
        assert_eq!(w.next_ident(), 2);
    }
}
