//! Egress queues for TUN ports, the pool of packet buffers the loop and the queues share, and
//! the writer threads that do the TUN `write()`s: a fixed set of writers (one per core besides
//! the loop's, unless `VPCD_TX_WRITERS` says otherwise) serving every TUN port, each port pinned
//! to one writer.
//!
//! A `write()` to a TUN device runs the receiving namespace's whole IP/TCP input path in the
//! writing thread (`tun_get_user` -> `netif_receive_skb` -> `tcp_v4_rcv`): most of what forwarding
//! costs. Doing it on writer threads lets it run on other cores in parallel with the fabric's
//! thread reading the next batch, while the [`Fabric`](crate::dataplane::Fabric) stays owned by
//! one thread (its NAT state is never shared). Threads scale with cores, not with ports.
//!
//! Invariants:
//! - **Bounded in packets and bytes.** A port has at most [`BATCHES_PER_PORT`] batches, at most
//!   [`PORT_PACKETS`] packets and at most [`PORT_BYTES`] bytes of packets queued or being
//!   written; the buffers come from one [`BufPool`] of at most [`POOL_MAX`] buffers for the whole
//!   loop, of which one port holds at most a quarter. What
//!   finds no room is dropped and counted, as a full NIC ring would. A port's memory at rest is a
//!   few small vectors: buffers are the pool's, and return to it once written.
//! - **No allocation per packet.** A packet enters a batch by swapping its buffer with an empty
//!   one from the pool (no copy). The pool allocates only until it reaches the most buffers in
//!   use at once (bounded by [`POOL_MAX`]); batches are allocated once per port.
//! - **Order.** One producer (the fabric's thread) and one writer per port, both FIFO, so the
//!   packets of a port leave in the order the fabric forwarded them. The fabric's thread writes a
//!   lone packet itself only when nothing of the port is at its writer, which keeps that order
//!   and spares a ping the thread handoff.
//! - **Never blocks the loop.** The emptied batches come back over a [`mailbox`] channel whose
//!   receiver the loop polls: a port that must wait for room ([`TxQueue::poll_room`]) is simply
//!   not read until the writer hands a batch back, which wakes the loop.
//! - **Frames.** Every buffer keeps [`HEADROOM`] bytes before the packet for the
//!   `virtio_net_hdr` of an offload device, so a superpacket is written whole in one `write()`.
//! - **Shutdown.** Dropping a [`TxQueue`] waits (bounded) until its batches are back from the
//!   writer, so no write to its device is in flight once the port is gone; a writer thread ends
//!   when the last queue and the last [`TxWriters`] handle are dropped.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

use super::mailbox;
use crate::dataplane::PacketMeta;
use crate::dataplane::offload::coalesce;
use crate::dataplane::offload::vnet::{self, VNET_HDR_LEN};

/// Bytes every buffer keeps before the packet, for the `virtio_net_hdr` of an offload device.
pub const HEADROOM: usize = VNET_HDR_LEN;

/// Packets read from one port per wake-up before the next port gets its turn, and the packets
/// one egress batch holds.
pub const BATCH: usize = 64;

/// Batches per TUN port (being filled, queued, or being written).
pub const BATCHES_PER_PORT: usize = 4;

/// Bytes of packets one TUN port may have queued or being written (16 superpackets of 64 KiB).
pub const PORT_BYTES: usize = 1 << 20;

/// The most buffers the loop's pool holds (each of the loop's buffer size, about 64 KiB: pages a
/// buffer never touched are not resident).
pub const POOL_MAX: usize = 1024;

/// The largest batch the fabric's thread writes itself when nothing of the port is at its
/// writer. Handing a lone packet to another thread costs a wake-up (tens of microseconds of
/// latency when that core sleeps); a larger batch is worth running in parallel.
pub const INLINE_MAX: usize = 1;

/// Batches of one port at its writer before the fabric's thread stops handing over what each
/// wake-up queued and gathers it into the batch being filled instead (sent when the writer hands
/// one back, or when it is full). Without this, a port that gets a few packets at every wake-up
/// while its writer is busy (SYNs of a flood, ACKs) fills its [`BATCHES_PER_PORT`] with
/// near-empty batches and drops what comes next, a new connection's SYN among it.
pub const MAX_IN_FLIGHT: usize = 2;

/// Packets (each in a buffer of the pool) one TUN port may have queued or at its writer: a
/// quarter of [`POOL_MAX`], so no port's backlog takes the buffers every other port needs.
pub const PORT_PACKETS: usize = BATCHES_PER_PORT * BATCH;

/// The most packets one batch gathers while the writer is behind ([`MAX_IN_FLIGHT`]): small
/// packets (SYNs, ACKs) wait there in order instead of the port's batches going out near-empty;
/// [`PORT_PACKETS`] and [`PORT_BYTES`] bound what waits. A batch that grew keeps its capacity
/// (allocated once).
pub const GATHER_MAX: usize = PORT_PACKETS;

/// How long dropping a queue waits for its writer to hand its batches back (writes never block,
/// so this is a bound, not an expected wait).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// The packet buffers of one loop: what it reads into and what its TUN egress queues carry.
pub struct BufPool {
    free: Vec<Box<[u8]>>,
    size: usize,
    made: usize,
}

impl BufPool {
    /// A pool of buffers of `size` bytes ([`HEADROOM`] plus the largest packet plus room).
    pub fn new(size: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            size,
            made: 0,
        }
    }

    /// Whether every buffer is in use (the caller should take back what the writers returned).
    pub fn exhausted(&self) -> bool {
        self.free.is_empty() && self.made >= POOL_MAX
    }

    /// A buffer, or `None` when [`POOL_MAX`] are in use.
    pub fn take(&mut self) -> Option<Box<[u8]>> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        if self.made >= POOL_MAX {
            return None;
        }
        self.made += 1;
        Some(vec![0u8; self.size].into_boxed_slice())
    }

    /// Returns a buffer (one of another size is dropped).
    pub fn give(&mut self, b: Box<[u8]>) {
        if b.len() == self.size {
            self.free.push(b);
        } else {
            self.made = self.made.saturating_sub(1);
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

/// What a TUN port's writer needs: the device, how packets are framed, where batches go back.
struct PortShared {
    dev: Arc<tun_rs::AsyncDevice>,
    /// The device has `IFF_VNET_HDR`: each write starts with the header in the headroom.
    vnet: bool,
    back: mailbox::Sender<TxBatch>,
    /// Packets the kernel refused.
    errors: AtomicU64,
}

/// Packets on their way to one TUN port: filled buffers, packet `i` at
/// `bufs[i][HEADROOM..HEADROOM + lens[i]]` (its `virtio_net_hdr` before it when the device has
/// offload).
struct TxBatch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    /// Each packet's offload metadata (what its `virtio_net_hdr` says), for coalescing.
    metas: Vec<PacketMeta>,
    bytes: usize,
    /// Packets the fabric forwarded into this batch, merged ones included.
    arrivals: usize,
}

impl TxBatch {
    fn new() -> TxBatch {
        TxBatch {
            bufs: Vec::with_capacity(BATCH),
            lens: Vec::with_capacity(BATCH),
            metas: Vec::with_capacity(BATCH),
            bytes: 0,
            arrivals: 0,
        }
    }

    fn push(&mut self, buf: Box<[u8]>, len: usize, meta: PacketMeta) {
        self.bufs.push(buf);
        self.lens.push(len);
        self.metas.push(meta);
        self.bytes += len;
        self.arrivals += 1;
    }

    /// Writes every packet to the port's device; returns how many the kernel refused.
    fn write_all(&self, port: &PortShared) -> u64 {
        let mut failed = 0;
        for (buf, &len) in self.bufs.iter().zip(&self.lens) {
            let start = if port.vnet { 0 } else { HEADROOM };
            let end = (HEADROOM + len).min(buf.len());
            if write_packet(&port.dev, &buf[start..end]).is_err() {
                failed += 1;
            }
        }
        failed
    }

    /// Empties the batch, its buffers back into `pool`.
    fn recycle(&mut self, pool: &mut BufPool) {
        for b in self.bufs.drain(..) {
            pool.give(b);
        }
        self.lens.clear();
        self.metas.clear();
        self.bytes = 0;
        self.arrivals = 0;
    }
}

/// One `write()` of one frame, straight to the device's descriptor (the kernel never makes a TUN
/// write wait, so it needs no readiness from the fabric's reactor).
fn write_packet(dev: &tun_rs::AsyncDevice, frame: &[u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::write((**dev).as_fd(), frame) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// A batch for a port's writer.
struct Job {
    port: Arc<PortShared>,
    batch: TxBatch,
}

/// The writer threads, shared by every TUN port of a run (cheap to clone).
#[derive(Clone)]
pub struct TxWriters {
    inner: Arc<WritersInner>,
}

struct WritersInner {
    queues: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
}

impl TxWriters {
    /// Starts `n` writer threads (at least one).
    pub fn start(n: usize) -> io::Result<TxWriters> {
        let mut queues = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name(format!("vpcd tx {i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let failed = job.batch.write_all(&job.port);
                        if failed > 0 {
                            job.port.errors.fetch_add(failed, Ordering::Relaxed);
                        }
                        let _ = job.port.back.send(job.batch);
                    }
                })?;
            queues.push(tx);
        }
        Ok(TxWriters {
            inner: Arc::new(WritersInner {
                queues,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The number of writers: `VPCD_TX_WRITERS` (1 to 64) if set, else one per core besides the
    /// loop's (at least one). Measured on 2 cores (BENCHMARKS.md): one writer moves 6.3 Gbit/s
    /// through SNAT where two, competing with the loop and the guests, move 4.8.
    pub fn default_count() -> usize {
        std::env::var("VPCD_TX_WRITERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (1..=64).contains(n))
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            })
    }

    pub fn count(&self) -> usize {
        self.inner.queues.len()
    }

    /// The writer of the next port (round robin).
    fn assign(&self) -> mpsc::Sender<Job> {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.queues.len();
        self.inner.queues[i].clone()
    }
}

/// The fabric's side of one TUN port's egress.
pub struct TxQueue {
    shared: Arc<PortShared>,
    to_writer: mpsc::Sender<Job>,
    /// Emptied batches from the writer (sending one wakes the loop if it waits for room).
    returned: mailbox::Receiver<TxBatch>,
    /// Empty batches on this side.
    free: Vec<TxBatch>,
    filling: Option<TxBatch>,
    /// Batches at the writer.
    in_flight: usize,
    /// Bytes of packets queued here or at the writer.
    bytes: usize,
    /// Packets (buffers) queued here or at the writer.
    packets: usize,
    /// Packets dropped because the queue (or the pool) was full.
    full_drops: u64,
}

impl TxQueue {
    /// The egress queue of `dev`, served by one of `writers`; `vnet`: the device has offload
    /// (`IFF_VNET_HDR`), so every write starts with a `virtio_net_hdr`.
    pub fn new(dev: Arc<tun_rs::AsyncDevice>, vnet: bool, writers: &TxWriters) -> TxQueue {
        let (back, returned) = mailbox::channel::<TxBatch>();
        TxQueue {
            shared: Arc::new(PortShared {
                dev,
                vnet,
                back,
                errors: AtomicU64::new(0),
            }),
            to_writer: writers.assign(),
            returned,
            free: (0..BATCHES_PER_PORT).map(|_| TxBatch::new()).collect(),
            filling: None,
            in_flight: 0,
            bytes: 0,
            packets: 0,
            full_drops: 0,
        }
    }

    /// Whether writes start with a `virtio_net_hdr`.
    pub fn vnet(&self) -> bool {
        self.shared.vnet
    }

    /// Takes back the batches the writer has emptied, their buffers into `pool`.
    pub fn reclaim(&mut self, pool: &mut BufPool) {
        while let Some(b) = self.returned.try_recv() {
            self.take_back(b, pool);
        }
    }

    fn take_back(&mut self, mut b: TxBatch, pool: &mut BufPool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(b.bytes);
        self.packets = self.packets.saturating_sub(b.lens.len());
        b.recycle(pool);
        self.free.push(b);
    }

    /// The batch being filled, with room for one more packet of `len` bytes; `None` when the
    /// port's batches or bytes are all in use.
    fn slot(&mut self, pool: &mut BufPool, len: usize) -> Option<&mut TxBatch> {
        if self.bytes + len > PORT_BYTES || self.packets >= PORT_PACKETS {
            self.reclaim(pool);
            if self.bytes + len > PORT_BYTES || self.packets >= PORT_PACKETS {
                return None;
            }
        }
        if let Some(n) = self.filling.as_ref().map(|b| b.lens.len())
            && n >= BATCH
        {
            // A full batch goes to the writer, unless the writer is behind with this port's
            // batches: then it gathers on (up to GATHER_MAX packets), rather than the port's
            // few batches each going out near-empty and the next packet being dropped.
            if self.in_flight >= MAX_IN_FLIGHT {
                self.reclaim(pool);
            }
            if self.in_flight < MAX_IN_FLIGHT || n >= GATHER_MAX {
                self.send_filling(pool);
            }
        }
        if self.filling.is_none() {
            if self.free.is_empty() {
                self.reclaim(pool);
            }
            self.filling = self.free.pop();
        }
        self.filling.as_mut()
    }

    /// Queues a forwarded packet at `buf[HEADROOM..HEADROOM + len]` (its `virtio_net_hdr`, if
    /// the device has offload, already in the headroom) by swapping `buf` with an empty buffer
    /// from `pool` (a buffer of another size is dropped when it comes back, see
    /// [`BufPool::give`]). `false`: dropped, queue or pool full (`buf` then still holds the
    /// packet).
    pub fn push_swap(
        &mut self,
        pool: &mut BufPool,
        buf: &mut Box<[u8]>,
        len: usize,
        meta: PacketMeta,
    ) -> bool {
        let Some(mut fresh) = pool.take() else {
            self.full_drops += 1;
            return false;
        };
        let Some(batch) = self.slot(pool, len) else {
            pool.give(fresh);
            self.full_drops += 1;
            return false;
        };
        std::mem::swap(buf, &mut fresh);
        batch.push(fresh, len, meta);
        self.bytes += len;
        self.packets += 1;
        true
    }

    /// Queues a packet already in a buffer of `pool` (a segment the shell cut); on `false` the
    /// buffer went back to the pool and the packet is dropped.
    pub fn push_owned(&mut self, pool: &mut BufPool, buf: Box<[u8]>, len: usize) -> bool {
        let Some(batch) = self.slot(pool, len) else {
            pool.give(buf);
            self.full_drops += 1;
            return false;
        };
        batch.push(buf, len, PacketMeta::COMPLETE);
        self.bytes += len;
        self.packets += 1;
        true
    }

    /// Appends the packet `pkt` (exactly the packet, metadata `meta`) to the packet queued last
    /// for this port when it continues that packet's flow ([`coalesce::append`]): the two then
    /// leave as one superpacket, its `virtio_net_hdr` rewritten. `Some(first)` when it did
    /// (`first`: the queued packet became a superpacket with it), and the caller keeps its buffer;
    /// `None` when the packet must be queued on its own. Only offload devices coalesce.
    pub fn coalesce(&mut self, pkt: &[u8], meta: PacketMeta, udp_gso: bool) -> Option<bool> {
        if !self.shared.vnet || self.bytes + pkt.len() > PORT_BYTES {
            return None;
        }
        let batch = self.filling.as_mut()?;
        let (buf, len, head) = (
            batch.bufs.last_mut()?,
            batch.lens.last_mut()?,
            batch.metas.last_mut()?,
        );
        let (hdr, frame) = buf.split_first_chunk_mut::<VNET_HDR_LEN>()?;
        let (n, merged) = coalesce::append(frame, *len, *head, pkt, meta, udp_gso)?;
        // Cannot fail: the merged packet's header was checked and its checksum is partial.
        if vnet::encode(hdr, &mut frame[..n], merged).is_err() {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        let first = head.gso.is_none();
        let grown = n - *len;
        (*len, *head) = (n, merged);
        batch.bytes += grown;
        batch.arrivals += 1;
        self.bytes += grown;
        Some(first)
    }

    /// Sends what is queued on its way: written here when the fabric forwarded at most
    /// [`INLINE_MAX`] packets into it (a superpacket merged from several is the writer's) and
    /// nothing of this port is at its writer, otherwise handed to the writer — unless
    /// [`MAX_IN_FLIGHT`] batches of this port are already there: then the batch keeps filling,
    /// and goes when the writer hands one back ([`TxQueue::poll_held`] wakes the loop for it).
    /// Call once per wake-up, after the batches are handled.
    pub fn flush(&mut self, pool: &mut BufPool) {
        if self.in_flight > 0 {
            // Buffers back to the pool as soon as the writer is done with them.
            self.reclaim(pool);
        }
        let queued = self.filling.as_ref().map_or(0, |b| b.arrivals);
        if queued == 0 {
            return;
        }
        if queued <= INLINE_MAX
            && self.in_flight == 0
            && let Some(mut batch) = self.filling.take()
        {
            let failed = batch.write_all(&self.shared);
            if failed > 0 {
                self.shared.errors.fetch_add(failed, Ordering::Relaxed);
            }
            self.bytes = self.bytes.saturating_sub(batch.bytes);
            self.packets = self.packets.saturating_sub(batch.lens.len());
            batch.recycle(pool);
            self.free.push(batch);
            return;
        }
        if self.in_flight < MAX_IN_FLIGHT {
            self.send_filling(pool);
        }
    }

    /// Ready when a batch held back by [`TxQueue::flush`] may go (the writer handed one back):
    /// the caller then flushes. `Pending` (with `cx` woken by the writer's next returned batch)
    /// while one is held, `Pending` without a wake-up when nothing is.
    pub fn poll_held(&mut self, pool: &mut BufPool, cx: &mut Context<'_>) -> Poll<()> {
        if self.filling.as_ref().is_none_or(|b| b.arrivals == 0) {
            return Poll::Pending;
        }
        self.reclaim(pool);
        while self.in_flight >= MAX_IN_FLIGHT {
            match self.returned.poll_recv(cx) {
                Poll::Ready(Some(b)) => self.take_back(b, pool),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    fn send_filling(&mut self, pool: &mut BufPool) {
        let Some(batch) = self.filling.take() else {
            return;
        };
        let job = Job {
            port: self.shared.clone(),
            batch,
        };
        match self.to_writer.send(job) {
            Ok(()) => self.in_flight += 1,
            // The writer is gone (it does not die, short of a panic): the packets are lost,
            // counted, and the batch stays here.
            Err(mpsc::SendError(mut job)) => {
                self.full_drops += job.batch.lens.len() as u64;
                self.bytes = self.bytes.saturating_sub(job.batch.bytes);
                self.packets = self.packets.saturating_sub(job.batch.lens.len());
                job.batch.recycle(pool);
                self.free.push(job.batch);
            }
        }
    }

    /// Whether the port's queue is nearly full (its last spare batch in use, or less than one
    /// superpacket's bytes left): the fabric's thread should stop reading the ports that feed
    /// this one until [`TxQueue::poll_room`] is ready (the kernel then holds their packets back in
    /// the ingress TUN's queue, where TCP Small Queues throttle a local sender instead of vpcd
    /// reading packets only to drop them).
    pub fn should_pause(&self) -> bool {
        self.free.is_empty()
            || self.bytes + usize::from(u16::MAX) > PORT_BYTES
            || self.packets + BATCH > PORT_PACKETS
    }

    /// Ready when the queue has room again; otherwise `Pending`, and the writer's next returned
    /// batch wakes `cx`.
    pub fn poll_room(&mut self, pool: &mut BufPool, cx: &mut Context<'_>) -> Poll<()> {
        self.reclaim(pool);
        while self.should_pause() && self.in_flight > 0 {
            match self.returned.poll_recv(cx) {
                Poll::Ready(Some(b)) => self.take_back(b, pool),
                // Every sender is in `self.shared`: cannot happen while `self` lives.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// Packets the kernel refused.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Packets dropped because the queue was full.
    pub fn full_drops(&self) -> u64 {
        self.full_drops
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + DRAIN_WAIT;
        while self.in_flight > 0 && std::time::Instant::now() < deadline {
            match self.returned.try_recv() {
                Some(_) => self.in_flight -= 1,
                None => std::thread::sleep(Duration::from_micros(100)),
            }
        }
    }
}
