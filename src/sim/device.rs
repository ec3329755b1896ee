//! An in-memory smoltcp `Device`: the wire between one simulated host and its dataplane port.
//!
//! The host's interface pulls packets from `rx` and pushes what it sends onto `tx`; the simulator
//! drains `tx` into the fabric and fills `rx` with what the fabric delivers. Packets are raw IPv4
//! (`Medium::Ip`, like a TUN device): no Ethernet, no ARP.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// Packets a queue holds before the oldest is dropped (a full NIC ring). Generous: probes send a
/// handful of packets, this bound only keeps a runaway host from growing memory.
pub const QUEUE_LIMIT: usize = 1024;

/// A medium-IP device whose receive and transmit queues are plain in-memory FIFOs.
#[derive(Debug)]
pub struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
    /// Packets refused because a queue was full.
    overflows: u64,
}

impl QueueDevice {
    /// A device whose packets are at most `mtu` bytes (IP header included).
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
            overflows: 0,
        }
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Queues a packet for the host to receive on its next poll. A packet larger than the MTU or a
    /// full queue drops it, as a real interface would; returns whether it was queued.
    pub fn push_rx(&mut self, packet: &[u8]) -> bool {
        if packet.len() > self.mtu || self.rx.len() >= QUEUE_LIMIT {
            self.overflows += 1;
            return false;
        }
        self.rx.push_back(packet.to_vec());
        true
    }

    /// Takes the oldest packet the host transmitted.
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// Packets waiting for the host to read.
    pub fn rx_len(&self) -> usize {
        self.rx.len()
    }

    /// Packets the host sent that nobody took yet.
    pub fn tx_len(&self) -> usize {
        self.tx.len()
    }

    /// Packets dropped because a queue was full or a packet exceeded the MTU.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Forgets every queued packet in both directions.
    pub fn clear(&mut self) {
        self.rx.clear();
        self.tx.clear();
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            RxToken(packet),
            TxToken {
                queue: &mut self.tx,
                overflows: &mut self.overflows,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken {
            queue: &mut self.tx,
            overflows: &mut self.overflows,
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

/// One received packet, handed to smoltcp.
#[derive(Debug)]
pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

/// Room for one packet smoltcp transmits; it lands on the device's tx queue.
#[derive(Debug)]
pub struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    overflows: &'a mut u64,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        if self.queue.len() < QUEUE_LIMIT {
            self.queue.push_back(packet);
        } else {
            *self.overflows += 1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};

    #[test]
    fn rx_is_fifo_and_tx_lands_on_the_queue() {
        let mut dev = QueueDevice::new(1500);
        assert!(dev.push_rx(&[1, 2, 3]));
        assert!(dev.push_rx(&[4]));
        assert_eq!(dev.rx_len(), 2);
        let now = SmolInstant::from_micros(0);
        let (rx, tx) = dev.receive(now).expect("a packet is queued");
        assert_eq!(rx.consume(|p| p.to_vec()), vec![1, 2, 3]);
        tx.consume(2, |b| b.copy_from_slice(&[9, 9]));
        let (rx, _) = dev.receive(now).expect("a second packet is queued");
        assert_eq!(rx.consume(|p| p.to_vec()), vec![4]);
        assert!(dev.receive(now).is_none());
        dev.transmit(now)
            .expect("transmit always has room")
            .consume(1, |b| b[0] = 7);
        assert_eq!(dev.pop_tx(), Some(vec![9, 9]));
        assert_eq!(dev.pop_tx(), Some(vec![7]));
        assert_eq!(dev.pop_tx(), None);
    }

    #[test]
    fn oversized_and_overflowing_packets_are_dropped() {
        let mut dev = QueueDevice::new(576);
        assert!(!dev.push_rx(&[0; 577]));
        for _ in 0..QUEUE_LIMIT {
            assert!(dev.push_rx(&[0; 20]));
        }
        assert!(!dev.push_rx(&[0; 20]));
        assert_eq!(dev.overflows(), 2);
        assert_eq!(dev.capabilities().max_transmission_unit, 576);
        assert_eq!(dev.capabilities().medium, Medium::Ip);
        dev.clear();
        assert_eq!((dev.rx_len(), dev.tx_len()), (0, 0));
    }
}
