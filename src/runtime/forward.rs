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
//! Packets from sim ports are not paced: a full queue drops them (counted by the queue).

use std::io;
use std::sync::Arc;
use std::task::Context;

use super::sim_port::SimPort;
use super::tx::TxQueue;
use super::uplink_port::UplinkPort;
use crate::dataplane::{Fabric, PortId, Verdict};
use crate::inspect::ShellStats;
use crate::observe::Observer;
use crate::time::Instant;

/// A TUN port: its device, its egress queue (with the writer thread), and its read state.
pub struct TunPort {
    /// Declared before `dev`, so that the writer thread is joined while the device is alive.
    tx: TxQueue,
    dev: Arc<tun_rs::AsyncDevice>,
    /// `false` once a read failed with the device gone: no longer polled, rather than spin.
    pub(super) readable: bool,
    /// The egress port whose queue this port's packets filled: not read again until it has room.
    pub(super) waits_for: Option<PortId>,
}

impl TunPort {
    /// Starts the writer thread of `dev` (named after `name`); `size` is the buffer size (the
    /// largest packet plus room).
    pub fn spawn(name: &str, dev: Arc<tun_rs::AsyncDevice>, size: usize) -> io::Result<TunPort> {
        Ok(TunPort {
            tx: TxQueue::spawn(name, dev.clone(), size)?,
            dev,
            readable: true,
            waits_for: None,
        })
    }

    pub(super) fn device(&self) -> &tun_rs::AsyncDevice {
        &self.dev
    }

    pub(super) fn queue_ref(&self) -> &TxQueue {
        &self.tx
    }
}

/// What serves one port id.
pub(super) enum PortSlot {
    Tun(TunPort),
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
            PortSlot::Sim(_) | PortSlot::Empty => None,
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

/// Clears the wait of every port whose egress queue has room again; `true` when the uplink was
/// among them. Registers `cx` with the queues that are still full.
pub(super) fn poll_waits(ports: &mut [PortSlot], cx: &mut Context<'_>) -> bool {
    let mut uplink = false;
    for i in 0..ports.len() {
        let Some(Some(egress)) = ports[i].waits_for_mut().map(|w| *w) else {
            continue;
        };
        let room = match ports.get_mut(egress.index()) {
            Some(PortSlot::Tun(t)) => t.tx.poll_room(cx).is_ready(),
            // The queue is gone (a swap removed it): nothing to wait for.
            _ => true,
        };
        if room {
            if let Some(w) = ports[i].waits_for_mut() {
                *w = None;
            }
            uplink |= matches!(ports[i], PortSlot::Uplink(_));
        }
    }
    uplink
}

/// Everything a packet touches: the fabric, the observer around it, and the ports.
pub(super) struct Forwarding {
    pub(super) fabric: Fabric,
    /// Wraps every `fabric.handle` (flow logs, captures); empty without flags.
    pub(super) obs: Observer,
    /// By port id.
    pub(super) ports: Vec<PortSlot>,
    pub(super) stats: ShellStats,
}

impl Forwarding {
    /// Runs the packet `ingress` sent — the first `len` bytes of `buf` — through the observer and
    /// the fabric, and hands what the fabric forwards or answers to its egress port: the one
    /// place the shell calls the dataplane. A TUN egress queue takes `buf` itself (it gets an
    /// empty buffer of the same size back); every other port copies the packet. Returns the
    /// verdict, already acted on.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        ingress: PortId,
        buf: &mut Box<[u8]>,
        len: usize,
    ) -> Verdict {
        let verdict = self.obs.handle(&mut self.fabric, now, ingress, buf, len);
        if let Verdict::Forward { port, len, .. } | Verdict::Reply { port, len, .. } = verdict {
            self.emit(now, ingress, port, buf, len);
        }
        verdict
    }

    /// Hands `buf[..len]` to port `egress`; paces `ingress` when the packet took the last spare
    /// batch of a TUN egress queue.
    fn emit(
        &mut self,
        now: Instant,
        ingress: PortId,
        egress: PortId,
        buf: &mut Box<[u8]>,
        len: usize,
    ) {
        let len = len.min(buf.len());
        let filled = match self.ports.get_mut(egress.index()) {
            Some(PortSlot::Tun(t)) => {
                // Full queues count their own drops.
                let _ = t.tx.push_swap(buf, len);
                t.tx.is_filling_last()
            }
            Some(PortSlot::Sim(s)) => {
                if !s.deliver(&buf[..len]) {
                    self.stats.sim_overflows += 1;
                }
                false
            }
            Some(PortSlot::Uplink(u)) => {
                u.deliver(now, &buf[..len]);
                false
            }
            Some(PortSlot::Empty) | None => false,
        };
        if !filled {
            return;
        }
        match self.ports.get_mut(ingress.index()) {
            Some(PortSlot::Tun(t)) => t.waits_for = Some(egress),
            Some(PortSlot::Uplink(u)) => {
                u.waits_for = Some(egress);
                self.stats.uplink_paced += 1;
            }
            _ => {}
        }
    }

    /// Sends what this wake-up queued for each TUN port on its way.
    pub(super) fn flush(&mut self) {
        for p in &mut self.ports {
            if let PortSlot::Tun(t) = p {
                t.tx.flush();
            }
        }
    }
}
