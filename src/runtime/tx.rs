//! Egress queues for TUN ports: the fabric's thread hands forwarded packets in batches to one
//! writer thread per TUN port, which does the `write()`s.
//!
//! A `write()` to a TUN device runs the receiving namespace's whole IP/TCP input path in the
//! writing thread (`tun_get_user` -> `netif_receive_skb` -> `tcp_v4_rcv`): most of what forwarding
//! costs. Doing it on a writer thread lets it run on another core in parallel with the fabric's
//! thread reading the next batch, while the [`Fabric`](crate::dataplane::Fabric) stays owned by
//! one thread (its NAT state is never shared).
//!
//! Invariants:
//! - **Bounded, no allocation per packet.** Each port owns [`BATCHES_PER_PORT`] batches of
//!   [`BATCH`] buffers, allocated once. A packet enters a batch by swapping buffers with the
//!   loop's buffer it was handled in (no copy). A batch travels to the writer over a bounded
//!   channel and comes back empty over another.
//!   When every batch of a port is in flight, the packet is dropped and counted (a full NIC ring).
//! - **Order.** One producer (the fabric's thread) and one writer per port, both FIFO, so the
//!   packets of a port leave in the order the fabric forwarded them. The fabric's thread writes a
//!   small batch itself only when the port's writer is idle with nothing queued (every other
//!   batch is back), which keeps that order and spares a ping or a lone packet the thread handoff.
//! - **Never blocks the loop.** The emptied batches come back over a [`mailbox`] channel whose
//!   receiver the loop polls: a port that must wait for room ([`TxQueue::poll_room`]) is simply
//!   not read until the writer hands a batch back, which wakes the loop.
//! - **Shutdown.** Dropping a [`TxQueue`] closes the channel; the writer finishes the batch in
//!   hand and exits, and the drop joins it, so no thread outlives the device.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use super::mailbox;

/// Packets read from one port per wake-up before the next port gets its turn, and the packets
/// one egress batch holds (a batch read from a port fits one batch of its egress queue).
pub const BATCH: usize = 64;

/// Batches per TUN port (being filled, queued, or being written): the port's queue holds at most
/// this many times [`BATCH`] packets.
pub const BATCHES_PER_PORT: usize = 4;

/// The largest batch the fabric's thread writes itself when the port's writer is idle. Handing a
/// lone packet to another thread costs a wake-up (tens of microseconds of latency when that core
/// sleeps); a larger batch is worth running in parallel.
pub const INLINE_MAX: usize = 1;

/// Packets on their way to one TUN port: full-size buffers, the first `lens.len()` of them filled.
struct TxBatch {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
}

impl TxBatch {
    fn new(size: usize) -> TxBatch {
        TxBatch {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; size].into_boxed_slice())
                .collect(),
            lens: Vec::with_capacity(BATCH),
        }
    }

    fn is_full(&self) -> bool {
        self.lens.len() >= self.bufs.len()
    }

    /// Writes every packet to `dev`; returns how many the kernel refused.
    fn write_all(&mut self, dev: &tun_rs::AsyncDevice) -> u64 {
        let mut failed = 0;
        for (buf, &len) in self.bufs.iter().zip(&self.lens) {
            if write_packet(dev, &buf[..len.min(buf.len())]).is_err() {
                failed += 1;
            }
        }
        self.lens.clear();
        failed
    }
}

/// One `write()` of one packet, straight to the device's descriptor (the kernel never makes a TUN
/// write wait, so it needs no readiness from the fabric's reactor).
fn write_packet(dev: &tun_rs::AsyncDevice, packet: &[u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::write((**dev).as_fd(), packet) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// The fabric's side of one TUN port's egress.
pub struct TxQueue {
    dev: Arc<tun_rs::AsyncDevice>,
    to_writer: Option<SyncSender<TxBatch>>,
    /// Emptied batches from the writer (sending one wakes the loop if it waits for room).
    returned: mailbox::Receiver<TxBatch>,
    /// Empty batches on this side.
    free: Vec<TxBatch>,
    filling: Option<TxBatch>,
    /// Packets the kernel refused, counted by the writer and by inline writes.
    errors: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
    /// Packets dropped because every batch was in flight.
    full_drops: u64,
}

impl TxQueue {
    /// Starts the writer thread for `dev`; `size` is the buffer size (largest packet plus room).
    pub fn spawn(name: &str, dev: Arc<tun_rs::AsyncDevice>, size: usize) -> io::Result<TxQueue> {
        let (to_writer, work) = sync_channel::<TxBatch>(BATCHES_PER_PORT);
        let (back, returned) = mailbox::channel::<TxBatch>();
        let errors = Arc::new(AtomicU64::new(0));
        let writer = {
            let dev = dev.clone();
            let errors = errors.clone();
            std::thread::Builder::new()
                .name(format!("tx {name}"))
                .spawn(move || {
                    while let Ok(mut batch) = work.recv() {
                        let failed = batch.write_all(&dev);
                        if failed > 0 {
                            errors.fetch_add(failed, Ordering::Relaxed);
                        }
                        if back.send(batch).is_err() {
                            return;
                        }
                    }
                })?
        };
        Ok(TxQueue {
            dev,
            to_writer: Some(to_writer),
            returned,
            free: (0..BATCHES_PER_PORT).map(|_| TxBatch::new(size)).collect(),
            filling: None,
            errors,
            writer: Some(writer),
            full_drops: 0,
        })
    }

    /// Takes back the batches the writer has emptied.
    fn reclaim(&mut self) {
        while let Some(b) = self.returned.try_recv() {
            self.free.push(b);
        }
    }

    /// The batch being filled, with room for one more packet; `None` when every batch is in flight.
    fn slot(&mut self) -> Option<&mut TxBatch> {
        if self.filling.as_ref().is_some_and(TxBatch::is_full) {
            self.send_filling();
        }
        if self.filling.is_none() {
            if self.free.is_empty() {
                self.reclaim();
            }
            self.filling = self.free.pop();
        }
        self.filling.as_mut()
    }

    /// Queues a forwarded packet, the first `len` bytes of `buf`, by swapping `buf` with an empty
    /// buffer of the same size (a buffer of another size is copied instead, so buffers never
    /// change size). `false`: dropped, queue full.
    pub fn push_swap(&mut self, buf: &mut Box<[u8]>, len: usize) -> bool {
        let Some(batch) = self.slot() else {
            self.full_drops += 1;
            return false;
        };
        let i = batch.lens.len();
        let len = len.min(buf.len()).min(batch.bufs[i].len());
        if batch.bufs[i].len() == buf.len() {
            std::mem::swap(&mut batch.bufs[i], buf);
        } else {
            batch.bufs[i][..len].copy_from_slice(&buf[..len]);
        }
        batch.lens.push(len);
        true
    }

    /// Sends what is queued on its way: written here when it is at most [`INLINE_MAX`] packets and
    /// the writer is idle with nothing queued, otherwise handed to the writer. Call once per
    /// wake-up, after the batches are handled.
    pub fn flush(&mut self) {
        let queued = self.filling.as_ref().map_or(0, |b| b.lens.len());
        if queued == 0 {
            return;
        }
        if queued <= INLINE_MAX {
            self.reclaim();
            if self.free.len() + 1 == BATCHES_PER_PORT
                && let Some(batch) = self.filling.as_mut()
            {
                let failed = batch.write_all(&self.dev);
                if failed > 0 {
                    self.errors.fetch_add(failed, Ordering::Relaxed);
                }
                return;
            }
        }
        self.send_filling();
    }

    fn send_filling(&mut self) {
        let Some(batch) = self.filling.take() else {
            return;
        };
        let Some(tx) = &self.to_writer else {
            return;
        };
        match tx.try_send(batch) {
            Ok(()) => {}
            // Cannot be full (the channel holds every batch there is); a writer that is gone
            // loses the packets, counted, and the batch stays here.
            Err(TrySendError::Full(mut b) | TrySendError::Disconnected(mut b)) => {
                self.full_drops += b.lens.len() as u64;
                b.lens.clear();
                self.free.push(b);
            }
        }
    }

    /// Whether the last spare batch is in use: the fabric's thread should stop reading the ports
    /// that feed this one until [`TxQueue::poll_room`] is ready (the kernel then holds their packets back in
    /// the ingress TUN's queue, where TCP Small Queues throttle a local sender instead of vpcd
    /// reading packets only to drop them).
    pub fn is_filling_last(&self) -> bool {
        self.free.is_empty() && self.writer.is_some()
    }

    /// Ready when a whole batch is free again (or the writer is gone, and waiting is
    /// pointless); otherwise `Pending`, and the writer's next returned batch wakes `cx`.
    pub fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.free.is_empty() || self.writer.is_none() {
            return Poll::Ready(());
        }
        match self.returned.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                self.free.push(b);
                self.reclaim();
                Poll::Ready(())
            }
            Poll::Ready(None) => {
                // The writer died (it does not, short of a panic): stop waiting for it.
                if let Some(w) = self.writer.take() {
                    let _ = w.join();
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Packets the kernel refused.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Packets dropped because the queue was full.
    pub fn full_drops(&self) -> u64 {
        self.full_drops
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        self.to_writer = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
