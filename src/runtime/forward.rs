//! The ports the loop serves, one slot per port id, and the one forwarding path every packet
//! takes: `Forwarding::forward` runs it through the observer and the fabric, and hands what
//! comes out to its egress port.
//!
//! A slot holds everything about one port: a TUN port's device, its egress queue and writer
//! thread and whether it is read ([`TunPort`]); a sim port's stack with its poll state
//! ([`SimPort`]); the uplink with its own ([`UplinkPort`]).
//!
//! Backpressure: a packet that takes the last spare batch of a TUN egress queue makes the port it
//! came from *wait* for that queue (`waits_for`): a waiting TUN port is not read, so its packets
//! stay in the kernel's TUN queue; a waiting uplink is neither polled nor drained, so its TCP
//! stack holds its data and the host sockets fill. The loop polls the queue
//! ([`super::tx::TxQueue::poll_room`]) and resumes the port when the writer hands a batch back.
//! A sim port is paced the same way: while the queue its packets filled has no room, what its
//! stack sent stays in its device's transmit queue (bounded; smoltcp's own losses beyond it are
//! counted), so a burst from the VPC resolver is not dropped at a full TUN queue.

use std::sync::Arc;
use std::task::Context;

use super::sim_port::SimPort;
use super::tx::{BATCH, BufPool, HEADROOM, TxQueue, TxWriters};
use super::uplink_port::UplinkPort;
use crate::dataplane::offload::vnet::{self, VNET_HDR_LEN};
use crate::dataplane::offload::{GsoKind, Segmenter, fill_l4_checksum};
use crate::dataplane::packet::{Ipv4Packet, PROTO_TCP};
use crate::dataplane::{Fabric, PacketMeta, PortId, Verdict};
use crate::inspect::ShellStats;
use crate::observe::Observer;
use crate::time::Instant;

/// A TUN port: its device, its egress queue, and its read state.
pub struct TunPort {
    /// Declared before `dev`: dropping the queue waits for its writer to finish with the device.
    tx: TxQueue,
    dev: Arc<tun_rs::AsyncDevice>,
    /// The device has `IFF_VNET_HDR`: reads and writes carry a `virtio_net_hdr`, superpackets
    /// and partial checksums pass.
    vnet: bool,
    /// The kernel takes UDP superpackets (USO) on this device.
    udp_gso: bool,
    /// `false` once a read failed with the device gone: no longer polled, rather than spin.
    pub(super) readable: bool,
    /// The egress port whose queue this port's packets filled: not read again until it has room.
    pub(super) waits_for: Option<PortId>,
    /// Packets read from it per wake-up ([`next_budget`]): a port whose packets the fabric drops
    /// is read less, so its excess waits (and is dropped) in the kernel's TUN queue at no cost
    /// to the loop, and the other ports keep their share.
    pub(super) budget: usize,
    /// Not read before this time: the port floods the fabric with what it drops
    /// ([`next_rest`]), so its excess waits in the kernel's TUN queue and is dropped there, in
    /// the sender's time rather than the loop's.
    pub(super) rests_until: Option<Instant>,
    /// Rests so far (a counter for the metrics).
    pub(super) rests: u64,
}

impl TunPort {
    /// The port of `dev`, its writes done by one of `writers`. Whether it has offload is read
    /// off the device.
    pub fn new(dev: Arc<tun_rs::AsyncDevice>, writers: &TxWriters) -> TunPort {
        let (vnet, udp_gso) = (dev.tcp_gso(), dev.udp_gso());
        TunPort {
            tx: TxQueue::new(dev.clone(), vnet, writers),
            dev,
            vnet,
            udp_gso: vnet && udp_gso,
            readable: true,
            waits_for: None,
            budget: BATCH,
            rests_until: None,
            rests: 0,
        }
    }

    pub(super) fn device(&self) -> &tun_rs::AsyncDevice {
        &self.dev
    }

    pub(super) fn vnet(&self) -> bool {
        self.vnet
    }

    pub(super) fn queue_ref(&self) -> &TxQueue {
        &self.tx
    }

    pub(super) fn queue_mut(&mut self) -> &mut TxQueue {
        &mut self.tx
    }

    /// Whether a packet with `meta` can be written as it is (else the shell cuts it into
    /// complete segments first).
    fn takes(&self, meta: PacketMeta) -> bool {
        if !self.vnet {
            return meta == PacketMeta::COMPLETE;
        }
        match meta.gso.map(|g| g.kind) {
            None | Some(GsoKind::TcpV4) => true,
            Some(GsoKind::Udp) => self.udp_gso,
        }
    }
}

/// The fewest packets a port is read per wake-up, however much of it is dropped.
pub const MIN_BUDGET: usize = 4;

/// A port's read budget after a batch of `read` packets of which the fabric dropped `dropped`:
/// halved (down to [`MIN_BUDGET`]) when at least three in four were dropped — a flood of what
/// no rule admits, from an attacker or a broken guest — doubled back (up to [`BATCH`]) when
/// fewer than one in four were, unchanged in between. A port the fabric forwards is never held
/// back.
pub fn next_budget(budget: usize, read: usize, dropped: usize) -> usize {
    if read == 0 {
        budget
    } else if dropped * 4 >= read * 3 {
        (budget / 2).max(MIN_BUDGET)
    } else if dropped * 4 < read {
        (budget * 2).min(BATCH)
    } else {
        budget
    }
}

/// How long a flooding port rests between two reads ([`next_rest`]): with [`MIN_BUDGET`] packets
/// per read, at most about 4,000 packets a second of a flood are read (the NAT's per-source limit
/// admits at most 5,000 new flows a second, which a flood from one port fills anyway).
pub const FLOOD_REST: std::time::Duration = std::time::Duration::from_millis(1);

/// When a TUN port may be read again after a batch of `read` packets of which the fabric dropped
/// `dropped`, read with `budget` (its budget before [`next_budget`]): a port already read
/// [`MIN_BUDGET`] packets at a time that still filled the batch and still had three in four
/// dropped is flooding, and rests for [`FLOOD_REST`]; any other port is read at the next wake-up.
/// Without the rest a flooding port is readable at every wake-up, and the loop spins on it: tens
/// of thousands of wake-ups a second, each reading four packets to drop, and every other port's
/// batches shrink to what arrived in between.
pub fn next_rest(now: Instant, budget: usize, read: usize, dropped: usize) -> Option<Instant> {
    let flooding = budget <= MIN_BUDGET && read >= budget && dropped * 4 >= read * 3;
    flooding.then(|| now + FLOOD_REST)
}

/// What serves one port id.
pub(super) enum PortSlot {
    Tun(Box<TunPort>),
    Sim(Box<SimPort>),
    Uplink(Box<UplinkPort>),
    /// Nothing attached: packets to it are lost.
    Empty,
}

impl PortSlot {
    /// The egress port this one waits for, if it is paced ([`TunPort`], [`UplinkPort`]).
    pub(super) fn waits_for_mut(&mut self) -> Option<&mut Option<PortId>> {
        match self {
            PortSlot::Tun(t) => Some(&mut t.waits_for),
            PortSlot::Uplink(u) => Some(&mut u.waits_for),
            PortSlot::Sim(s) => Some(&mut s.waits_for),
            PortSlot::Empty => None,
        }
    }

    /// Gives the port its new id (after a swap renumbered the ports).
    pub(super) fn renumber(&mut self, id: PortId) {
        match self {
            PortSlot::Sim(s) => s.port = id,
            PortSlot::Uplink(u) => u.port = id,
            PortSlot::Tun(_) | PortSlot::Empty => {}
        }
    }
}

/// Clears the wait of every waiting port whose egress queue has room again (`waiting` lists
/// the waiting ports and keeps the rest; a resumed sim port goes to `sims_woken`); `true` when
/// the uplink or a sim port was among them (neither has a readiness of its own that would wake
/// the loop: the caller wakes and runs them). Registers `cx` with the queues still full.
pub(super) fn poll_waits(
    ports: &mut [PortSlot],
    pool: &mut BufPool,
    waiting: &mut Vec<u32>,
    sims_woken: &mut Vec<u32>,
    cx: &mut Context<'_>,
) -> bool {
    let mut uplink = false;
    waiting.retain(|&i| {
        let i = i as usize;
        let Some(Some(egress)) = ports.get_mut(i).and_then(|p| p.waits_for_mut()).map(|w| *w)
        else {
            return false;
        };
        let room = match ports.get_mut(egress.index()) {
            Some(PortSlot::Tun(t)) => t.tx.poll_room(pool, cx).is_ready(),
            // The queue is gone (a swap removed it): nothing to wait for.
            _ => true,
        };
        if !room {
            return true;
        }
        if let Some(w) = ports[i].waits_for_mut() {
            *w = None;
        }
        uplink |= matches!(ports[i], PortSlot::Uplink(_) | PortSlot::Sim(_));
        if matches!(ports[i], PortSlot::Sim(_)) {
            sims_woken.push(i as u32);
        }
        false
    });
    uplink
}

/// Everything a packet touches: the fabric, the observer around it, the ports, and the buffers.
pub(super) struct Forwarding {
    pub(super) fabric: Fabric,
    /// Wraps every `fabric.handle` (flow logs, captures); empty without flags.
    pub(super) obs: Observer,
    /// By port id.
    pub(super) ports: Vec<PortSlot>,
    pub(super) stats: ShellStats,
    /// The buffers the TUN egress queues carry (every loop buffer is of its size).
    pub(super) pool: BufPool,
    /// Where a superpacket's segments are cut for a sim port or the uplink.
    segment: Box<[u8]>,
    /// Sim ports given packets since the loop last polled them (`super::sim_schedule`).
    pub(super) sims_woken: Vec<u32>,
    /// The ports that wait for an egress queue, each once: [`poll_waits`] looks at these only, and
    /// a swap renumbers them.
    pub(super) waiting: Vec<u32>,
}

impl Forwarding {
    pub(super) fn new(fabric: Fabric, ports: Vec<PortSlot>, buffer_size: usize) -> Forwarding {
        Forwarding {
            fabric,
            obs: Observer::new(),
            ports,
            stats: ShellStats::default(),
            pool: BufPool::new(buffer_size),
            segment: vec![0u8; buffer_size].into_boxed_slice(),
            sims_woken: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// Runs the packet `ingress` sent — `buf[HEADROOM..HEADROOM + len]`, with its offload
    /// metadata `meta` — through the observer and the fabric, and hands what the fabric forwards
    /// or answers to its egress port: the one place the shell calls the dataplane. A TUN egress
    /// queue takes `buf` itself (it gets an empty buffer of the same size back); every other port
    /// copies the packet. Returns the verdict, already acted on.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        ingress: PortId,
        buf: &mut Box<[u8]>,
        len: usize,
        meta: PacketMeta,
    ) -> Verdict {
        let verdict = self.obs.handle_meta(
            &mut self.fabric,
            now,
            ingress,
            &mut buf[HEADROOM..],
            len,
            meta,
        );
        match verdict {
            Verdict::Forward { port, len, meta } => self.emit(now, ingress, port, buf, len, meta),
            Verdict::Reply { port, len } => {
                self.emit(now, ingress, port, buf, len, PacketMeta::COMPLETE);
            }
            _ => {}
        }
        verdict
    }

    /// Hands the packet at `buf[HEADROOM..HEADROOM + len]` to port `egress`: whole when the port
    /// takes what `meta` describes, else cut into segments with complete checksums. Paces
    /// `ingress` when the packet filled a TUN egress queue.
    fn emit(
        &mut self,
        now: Instant,
        ingress: PortId,
        egress: PortId,
        buf: &mut Box<[u8]>,
        len: usize,
        meta: PacketMeta,
    ) {
        let len = len.min(buf.len().saturating_sub(HEADROOM));
        let Forwarding {
            fabric,
            ports,
            stats,
            pool,
            segment,
            sims_woken,
            waiting,
            ..
        } = self;
        if pool.exhausted() {
            // The writers may have handed buffers back to queues nothing has pushed to since.
            for p in ports.iter_mut() {
                if let PortSlot::Tun(t) = p {
                    t.tx.reclaim(pool);
                }
            }
        }
        let filled = match ports.get_mut(egress.index()) {
            Some(PortSlot::Tun(t)) => {
                if t.takes(meta) {
                    to_tun_whole(t, pool, stats, buf, len, meta);
                } else {
                    to_tun_segments(t, pool, stats, &buf[HEADROOM..HEADROOM + len], meta);
                }
                t.tx.should_pause()
            }
            Some(PortSlot::Sim(s)) => {
                let pkt = &buf[HEADROOM..HEADROOM + len];
                stats.sim_overflows += each_segment(stats, segment, pkt, meta, |p| s.deliver(p));
                // A burst to one port is woken once.
                if sims_woken.last() != Some(&egress.0) {
                    sims_woken.push(egress.0);
                }
                false
            }
            Some(PortSlot::Uplink(u)) => {
                let pkt = &mut buf[HEADROOM..HEADROOM + len];
                if whole_tcp(stats, pkt, meta) {
                    u.deliver(now, pkt);
                    return;
                }
                each_segment(stats, segment, pkt, meta, |p| {
                    u.deliver(now, p);
                    true
                });
                // Before the next packet: the NAT learns the ports the host gave new mappings.
                u.learn_ports(fabric);
                false
            }
            Some(PortSlot::Empty) | None => false,
        };
        if !filled {
            return;
        }
        if let Some(w) = ports
            .get_mut(ingress.index())
            .and_then(PortSlot::waits_for_mut)
        {
            if w.is_none() {
                waiting.push(ingress.0);
            }
            *w = Some(egress);
            if matches!(ports[ingress.index()], PortSlot::Uplink(_)) {
                stats.uplink_paced += 1;
            }
        }
    }

    /// Sends what this wake-up queued for each TUN port on its way.
    pub(super) fn flush(&mut self) {
        for p in &mut self.ports {
            if let PortSlot::Tun(t) = p {
                t.tx.flush(&mut self.pool);
            }
        }
    }
}

/// Queues the packet at `buf[HEADROOM..HEADROOM + len]` whole on a TUN port that takes `meta`,
/// its `virtio_net_hdr` written into the headroom when the device has offload.
fn to_tun_whole(
    t: &mut TunPort,
    pool: &mut BufPool,
    stats: &mut ShellStats,
    buf: &mut Box<[u8]>,
    len: usize,
    meta: PacketMeta,
) {
    if t.vnet
        && meta.gso.is_none()
        && let Some(first) =
            t.tx.coalesce(&buf[HEADROOM..HEADROOM + len], meta, t.udp_gso)
    {
        stats.coalesced_packets += 1;
        stats.tun_tx_segments += 1 + u64::from(first);
        stats.tun_tx_superpackets += u64::from(first);
        return;
    }
    if t.vnet {
        let Some((hdr, pkt)) = buf.split_first_chunk_mut::<VNET_HDR_LEN>() else {
            return;
        };
        if vnet::encode(hdr, &mut pkt[..len], meta).is_err() {
            stats.segment_errors += 1;
            return;
        }
    }
    if t.tx.push_swap(pool, buf, len, meta) && meta.gso.is_some() {
        stats.tun_tx_superpackets += 1;
        stats.tun_tx_segments += meta.segments(len) as u64;
    }
}

/// Cuts `pkt` into wire segments with complete checksums, each in a buffer of the pool, and
/// queues them on a TUN port that cannot take `meta` (no offload, or no USO).
fn to_tun_segments(
    t: &mut TunPort,
    pool: &mut BufPool,
    stats: &mut ShellStats,
    pkt: &[u8],
    meta: PacketMeta,
) {
    let Ok(mut cut) = Segmenter::new(pkt, meta) else {
        stats.segment_errors += 1;
        return;
    };
    if meta.gso.is_some() {
        stats.segmented_superpackets += 1;
    }
    loop {
        let Some(mut b) = pool.take() else {
            // Every buffer in use: the rest is lost, as on a full ring.
            stats.tun_tx_queue_full += cut.count() as u64;
            return;
        };
        match cut.next_into(&mut b[HEADROOM..]) {
            Ok(Some(n)) => {
                b[..HEADROOM].fill(0);
                if meta.gso.is_some() {
                    stats.segmented_segments += 1;
                }
                if !t.tx.push_owned(pool, b, n) {
                    return;
                }
            }
            Ok(None) => {
                pool.give(b);
                return;
            }
            Err(_) => {
                pool.give(b);
                stats.segment_errors += 1;
                return;
            }
        }
    }
}

/// Readies a TCP superpacket for the uplink, which takes one whole (its stack reads one large
/// segment; see [`crate::sim::device::QueueDevice::receive_superpackets`]): the transport
/// checksum is completed over the whole packet, in place. `false` for anything else (and for a
/// superpacket whose headers do not check, which is then cut or counted as usual).
fn whole_tcp(stats: &mut ShellStats, pkt: &mut [u8], meta: PacketMeta) -> bool {
    if meta.gso.is_none_or(|g| g.kind != GsoKind::TcpV4) || Segmenter::new(pkt, meta).is_err() {
        return false;
    }
    let ihl = Ipv4Packet::new_unchecked(&pkt[..]).header_len();
    fill_l4_checksum(pkt, ihl, PROTO_TCP);
    stats.superpackets_to_uplink += 1;
    true
}

/// Calls `deliver` with `pkt` as ports without offload take it: itself when `meta` describes
/// nothing, else each wire segment (cut into `scratch`) with complete checksums. Returns how many
/// `deliver` refused; a packet that cannot be cut is counted in `segment_errors`.
fn each_segment(
    stats: &mut ShellStats,
    scratch: &mut [u8],
    pkt: &[u8],
    meta: PacketMeta,
    mut deliver: impl FnMut(&[u8]) -> bool,
) -> u64 {
    if meta == PacketMeta::COMPLETE {
        return u64::from(!deliver(pkt));
    }
    let Ok(mut cut) = Segmenter::new(pkt, meta) else {
        stats.segment_errors += 1;
        return 0;
    };
    let (mut segments, mut refused) = (0, 0);
    loop {
        match cut.next_into(scratch) {
            Ok(Some(n)) => {
                segments += 1;
                refused += u64::from(!deliver(&scratch[..n]));
            }
            Ok(None) => break,
            Err(_) => {
                stats.segment_errors += 1;
                break;
            }
        }
    }
    if meta.gso.is_some() {
        stats.segmented_superpackets += 1;
        stats.segmented_segments += segments;
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_whose_packets_are_dropped_is_read_less_and_recovers_when_forwarded() {
        let mut b = BATCH;
        for _ in 0..10 {
            b = next_budget(b, b, b);
        }
        assert_eq!(b, MIN_BUDGET, "a flood of drops is read four at a time");
        b = next_budget(b, b, 1);
        assert_eq!(b, MIN_BUDGET, "one in four dropped: held");
        for _ in 0..10 {
            b = next_budget(b, b, 0);
        }
        assert_eq!(b, BATCH, "forwarded again: the full batch");
        assert_eq!(
            next_budget(BATCH, BATCH, BATCH / 8),
            BATCH,
            "a few drops change nothing"
        );
        assert_eq!(next_budget(16, 0, 0), 16, "nothing read: unchanged");
    }

    #[test]
    fn a_port_rests_only_while_it_floods_at_the_smallest_budget() {
        let now = Instant::from_micros(5_000);
        let rest = Some(now + FLOOD_REST);
        assert_eq!(next_rest(now, MIN_BUDGET, MIN_BUDGET, MIN_BUDGET), rest);
        assert_eq!(
            next_rest(now, MIN_BUDGET, MIN_BUDGET, 3),
            rest,
            "three in four"
        );
        assert_eq!(
            next_rest(now, MIN_BUDGET, MIN_BUDGET, 2),
            None,
            "half forwarded"
        );
        assert_eq!(
            next_rest(now, MIN_BUDGET, MIN_BUDGET - 1, MIN_BUDGET - 1),
            None,
            "drained before its budget: nothing waits, no flood"
        );
        assert_eq!(
            next_rest(now, BATCH, BATCH, BATCH),
            None,
            "a first bad batch only halves the budget"
        );
    }
}
