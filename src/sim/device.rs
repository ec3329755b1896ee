//! The in-memory smoltcp `Device` every smoltcp-backed port uses: the wire between a stack and
//! its dataplane port — a simulated host ([`super::Simulation`]), a sim port of `vpcd up`
//! ([`crate::runtime::sim_port`]) and the public uplink's segment-side stack
//! ([`crate::uplink`]).
//!
//! The stack pulls packets from `rx` and pushes what it sends onto `tx`; the owner fills `rx`
//! with what the fabric delivers ([`QueueDevice::push_rx`]) and drains `tx` into a buffer it owns
//! ([`QueueDevice::pop_tx`]). Packets are raw IPv4 (`Medium::Ip`, like a TUN device): no
//! Ethernet, no ARP.
//!
//! Invariants:
//! - **Bounded.** Each queue holds at most `limit` packets of at most the MTU; a packet larger
//!   than the MTU or one more than the limit is refused and counted ([`QueueDevice::overflows`]).
//! - **No allocation per packet.** A queued packet lives in a buffer the queue recycles: buffers
//!   are allocated only while a queue grows past the most it ever held, and up to 64 are kept
//!   afterwards (the rest are freed, which bounds the memory a burst leaves behind).
//! - **Full transmit queue.** [`TxFull::Drop`] (simulated hosts) loses what smoltcp sends, as a
//!   full NIC ring would; [`TxFull::Wait`] (the uplink) refuses smoltcp's transmit token, so the
//!   data stays in its socket and goes out on a later poll.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// Packets a simulated host's queue holds before it refuses more (a full NIC ring). Generous:
/// probes send a handful of packets, this bound only keeps a runaway host from growing memory.
pub const QUEUE_LIMIT: usize = 1024;

/// What smoltcp meets when the transmit queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxFull {
    /// The packet is built and lost (counted).
    Drop,
    /// No transmit token: smoltcp keeps the data and sends it on a later poll.
    Wait,
}

/// A FIFO of packets in recycled buffers.
#[derive(Debug, Default)]
struct PacketQueue {
    queue: VecDeque<Vec<u8>>,
    /// Emptied buffers, reused before anything is allocated.
    spare: Vec<Vec<u8>>,
}

impl PacketQueue {
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Appends a packet of `len` bytes that `fill` writes.
    fn push_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = fill(&mut buf);
        self.queue.push_back(buf);
        r
    }

    fn push(&mut self, packet: &[u8]) {
        self.push_with(packet.len(), |b| b.copy_from_slice(packet));
    }

    /// Removes the newest packet (one that must not stay).
    fn discard_newest(&mut self) {
        if let Some(b) = self.queue.pop_back() {
            recycle(&mut self.spare, b);
        }
    }

    /// Hands the oldest packet to `read` and recycles its buffer.
    fn pop_with<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let buf = self.queue.pop_front()?;
        let r = read(&buf);
        recycle(&mut self.spare, buf);
        Some(r)
    }

    fn clear(&mut self) {
        while self.pop_with(|_| ()).is_some() {}
    }
}

/// A medium-IP device whose receive and transmit queues are bounded in-memory FIFOs.
#[derive(Debug)]
pub struct QueueDevice {
    rx: PacketQueue,
    tx: PacketQueue,
    mtu: usize,
    /// The largest packet [`QueueDevice::push_rx`] takes: the MTU, unless the owner hands the
    /// stack TCP superpackets whole ([`QueueDevice::receive_superpackets`]).
    rx_max: usize,
    limit: usize,
    when_full: TxFull,
    /// Packets refused because a queue was full or a packet exceeded the MTU.
    overflows: u64,
}

impl QueueDevice {
    /// A simulated host's device: packets of at most `mtu` bytes (IP header included), queues of
    /// [`QUEUE_LIMIT`], [`TxFull::Drop`].
    pub fn new(mtu: usize) -> Self {
        QueueDevice::with_limit(mtu, QUEUE_LIMIT, TxFull::Drop)
    }

    /// A device whose queues hold at most `limit` packets (at least one) each.
    pub fn with_limit(mtu: usize, limit: usize, when_full: TxFull) -> Self {
        QueueDevice {
            rx: PacketQueue::default(),
            tx: PacketQueue::default(),
            mtu,
            rx_max: mtu,
            limit: limit.max(1),
            when_full,
            overflows: 0,
        }
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Lets [`QueueDevice::push_rx`] take IPv4 packets up to the protocol's 65,535 bytes, while
    /// what the stack sends stays within the MTU (smoltcp advertises its MSS from it, so a peer
    /// sends it large TCP segments only when an owner merges them: the uplink takes a guest's
    /// TCP superpackets whole, with one checksum, instead of one stack input per segment).
    pub fn receive_superpackets(&mut self) {
        self.rx_max = usize::from(u16::MAX).max(self.mtu);
    }

    /// Queues a packet for the stack to receive on its next poll. A packet larger than the MTU
    /// (see [`QueueDevice::receive_superpackets`]) or a full queue drops it, as a real interface
    /// would; returns whether it was queued.
    pub fn push_rx(&mut self, packet: &[u8]) -> bool {
        if packet.len() > self.rx_max || self.rx.len() >= self.limit {
            self.overflows += 1;
            return false;
        }
        self.rx.push(packet);
        true
    }

    /// Queues a packet built outside the stack towards the port (the uplink's relays); `false`
    /// (the packet is dropped) when the transmit queue is full.
    pub fn push_tx(&mut self, packet: &[u8]) -> bool {
        self.push_tx_parts(packet, &[])
    }

    /// [`QueueDevice::push_tx`] for a packet in two pieces (a header built apart from its body).
    pub fn push_tx_parts(&mut self, head: &[u8], body: &[u8]) -> bool {
        if self.tx.len() >= self.limit {
            self.overflows += 1;
            return false;
        }
        self.tx.push_with(head.len() + body.len(), |b| {
            let (h, rest) = b.split_at_mut(head.len());
            h.copy_from_slice(head);
            rest.copy_from_slice(body);
        });
        true
    }

    /// Moves the oldest packet the stack transmitted into `buf` (cut to its size); returns its
    /// length.
    pub fn pop_tx(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.tx.pop_with(|p| {
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            n
        })
    }

    /// Packets waiting for the stack to read.
    pub fn rx_len(&self) -> usize {
        self.rx.len()
    }

    /// Packets the stack sent that nobody took yet.
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
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: SmolInstant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx.queue.pop_front()?;
        // An answer to this packet (an ACK, a RST) may exceed the limit by one under
        // `TxFull::Wait`: it is small, and refusing the token would lose the received packet too.
        Some((
            RxToken {
                packet,
                spare: &mut self.rx.spare,
            },
            TxToken {
                queue: &mut self.tx,
                overflows: &mut self.overflows,
                limit: match self.when_full {
                    TxFull::Drop => Some(self.limit),
                    TxFull::Wait => None,
                },
            },
        ))
    }

    fn transmit(&mut self, _timestamp: SmolInstant) -> Option<TxToken<'_>> {
        let limit = match self.when_full {
            TxFull::Wait if self.tx.len() >= self.limit => return None,
            TxFull::Wait => None,
            TxFull::Drop => Some(self.limit),
        };
        Some(TxToken {
            queue: &mut self.tx,
            overflows: &mut self.overflows,
            limit,
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

/// Emptied buffers a queue keeps for reuse: enough for a burst, so that memory after one stays
/// bounded (a 64 KiB superpacket's buffer is not kept a thousand times over).
const SPARE_MAX: usize = 64;

/// Keeps `buf` for reuse, unless [`SPARE_MAX`] are kept already.
fn recycle(spare: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if spare.len() < SPARE_MAX {
        spare.push(buf);
    }
}

/// The oldest received packet, handed to smoltcp (its buffer goes back to the queue).
#[derive(Debug)]
pub struct RxToken<'a> {
    packet: Vec<u8>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = f(&self.packet);
        recycle(self.spare, self.packet);
        r
    }
}

/// Room for one packet smoltcp transmits; it lands on the device's tx queue.
#[derive(Debug)]
pub struct TxToken<'a> {
    queue: &'a mut PacketQueue,
    overflows: &'a mut u64,
    /// Drop the packet when the queue already holds this many (`None`: always queue it).
    limit: Option<usize>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let full = self.limit.is_some_and(|l| self.queue.len() >= l);
        let r = self.queue.push_with(len, f);
        if full {
            self.queue.discard_newest();
            *self.overflows += 1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};

    fn pop(dev: &mut QueueDevice) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        dev.pop_tx(&mut buf).map(|n| buf[..n].to_vec())
    }

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
        assert_eq!(pop(&mut dev), Some(vec![9, 9]));
        assert_eq!(pop(&mut dev), Some(vec![7]));
        assert_eq!(pop(&mut dev), None);
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

    #[test]
    fn a_full_dropping_queue_loses_what_smoltcp_sends() {
        let mut dev = QueueDevice::with_limit(1500, 1, TxFull::Drop);
        let now = SmolInstant::from_micros(0);
        dev.transmit(now).expect("room").consume(1, |b| b[0] = 1);
        let r = dev.transmit(now).expect("a token").consume(1, |b| {
            b[0] = 2;
            "built"
        });
        assert_eq!(r, "built", "smoltcp still builds the packet");
        assert_eq!(dev.overflows(), 1);
        assert_eq!(pop(&mut dev), Some(vec![1]));
        assert_eq!(pop(&mut dev), None);
    }

    #[test]
    fn a_full_waiting_queue_refuses_tokens_instead_of_dropping() {
        let mut w = QueueDevice::with_limit(1500, 2, TxFull::Wait);
        let now = SmolInstant::from_micros(0);
        assert!(w.push_tx(&[1]));
        assert!(w.transmit(now).is_some());
        assert!(w.push_tx(&[2]));
        assert!(w.transmit(now).is_none());
        assert!(!w.push_tx(&[3]));
        assert_eq!(pop(&mut w), Some(vec![1]));
        assert!(!w.push_rx(&[0; 1501]));
        assert!(w.push_rx(&[0; 20]));
        // The answer to a received packet is queued even at the limit.
        assert!(w.push_tx(&[4]));
        let (rx, tx) = w.receive(now).expect("a packet is queued");
        rx.consume(|_| ());
        tx.consume(1, |b| b[0] = 5);
        assert_eq!(w.tx_len(), 3);
    }

    #[test]
    fn buffers_are_recycled() {
        let mut dev = QueueDevice::new(1500);
        let mut buf = [0u8; 1500];
        for round in 0..3u8 {
            for i in 0..4u8 {
                assert!(dev.push_tx(&[round, i, 0, 0]));
            }
            while dev.pop_tx(&mut buf).is_some() {}
        }
        assert_eq!(dev.tx.spare.len(), 4, "four buffers, reused every round");
        assert_eq!(pop(&mut dev), None);
        assert!(dev.push_tx(&[1, 2, 3]));
        assert_eq!(
            pop(&mut dev),
            Some(vec![1, 2, 3]),
            "a reused buffer holds only the packet"
        );
    }
}
