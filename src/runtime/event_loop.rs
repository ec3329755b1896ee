//! The I/O shell's loop: one task owns the [`Fabric`], reads every TUN port and serves every sim
//! port; one writer thread per TUN port ([`super::tx`]) does that port's `write()`s.
//!
//! Each wake-up finds the TUN ports that are readable, reads up to [`BATCH`] packets from each
//! into caller-owned buffers, hands the batch to [`Fabric::handle`], and queues each forwarded or
//! generated packet on its egress port (a buffer swap for TUN ports, a copy into a sim port's
//! stack); at the end of the wake-up every TUN egress queue is flushed to its writer. Sim ports
//! are polled after every batch and when their timers fall due, and the fabric's own timers run
//! when [`Fabric::poll_timeout`] says so. Batches are the unit so that `IFF_VNET_HDR` superpackets
//! (`recv_multiple`/`send_multiple`) and per-core shards fit later without changing the shape.
//! Nothing here allocates per TUN packet.
//!
//! Backpressure: a TUN port whose packets took the last spare batch of an egress queue is not read
//! again until that queue has a batch back, so its packets wait in the kernel's TUN queue (where
//! TCP Small Queues throttle a local sender) instead of being read only to be dropped; other
//! ports keep being served. A packet that still finds no room, or a write the kernel refuses, is
//! dropped, as a full NIC ring would, and counted in [`ShellStats`].
//!
//! The public uplink ([`super::uplink_port`]) is one more port: what the fabric forwards to it is
//! delivered at once, and it is polled after such a batch, when its `ready()` future resolves
//! (host sockets produced something: one `select!` branch) and when its timers fall due; what it
//! sends goes through the fabric with its port as ingress, like a sim port's packets. A TUN egress
//! queue that fills up while the uplink's packets are routed paces the uplink (bounded waits for
//! the writer, as for TUN ports), so a fast host server does not overrun a function's queue.
//!
//! Observation (`--flow-log`, `--capture`): every packet goes through [`Observer::handle`], which
//! wraps `Fabric::handle` (without flags it is that call plus two branches); the observer's timers
//! join the wake-up deadline, [`Sinks`] writes what is due after each wake-up, and everything
//! still buffered is written when the loop stops.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use std::sync::Arc;

use super::observing::{
    CaptureStatus, FlowLogStatus, ObserveControlError, ObserveStatus, PreparedCapture,
    PreparedFlowLog, Sinks, StoppedCapture, StoppedFlowLog,
};
use super::sim_port::SimPort;
use super::tx::TxQueue;
use super::uplink_port::UplinkPort;
use crate::dataplane::gateways::ReconcileProblem;
use crate::dataplane::{DropReason, Fabric, MIN_BUFFER, PortId, Verdict};
use crate::observe::Observer;
use crate::time::Instant;

/// Packets read from one port per wake-up before the next port gets its turn.
pub const BATCH: usize = 64;
/// The longest the loop blocks waiting for a full egress queue to drain.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(1);
/// Rounds of sim-to-sim exchanges handled after one batch before yielding (a bound, not a target).
const SIM_ROUNDS: usize = 64;
/// Rounds of uplink polls per wake-up when the fabric answers the uplink itself (a bound).
const UPLINK_ROUNDS: usize = 4;

/// What a port id serves after a [`Swap`].
pub enum Slot {
    /// The port that had this id before the swap (its device, writer thread, sim stack and
    /// queued packets move along).
    Keep(PortId),
    /// A new TUN port with its writer thread already running.
    NewTun(Arc<tun_rs::AsyncDevice>, TxQueue),
    /// A new sim port, built with the shell's clock when the swap applies.
    NewSim(Box<SimSpec>),
    /// A new uplink, already started (its listeners bound).
    NewUplink(Box<UplinkPort>),
    /// Nothing attached (packets to it are lost).
    Empty,
}

/// How to build a sim port (see [`SimPort::new`]).
pub struct SimSpec {
    pub name: String,
    pub addressing: super::sim_port::SimAddressing,
    pub services: Vec<crate::topology::model::Service>,
    pub seed: u64,
}

/// A change of the port set and, optionally, of the tables, applied by the loop between two
/// batches. `slots[i]` is what serves `PortId(i)` afterwards; ports of the old set that no slot
/// keeps are closed (their writer threads joined, their devices dropped) before `done` is sent.
pub struct Swap {
    pub slots: Vec<Slot>,
    pub tables: Option<Arc<crate::tables::Tables>>,
    /// Receives what the fabric could not reconcile (empty without tables).
    pub done: super::mailbox::Sender<Vec<ReconcileProblem>>,
}

/// A read or a small change of the loop's state (connection table, counters, observation), run
/// by the loop between two wake-ups; see [`super::Handle::query`].
pub type Query = Box<dyn FnOnce(&mut Shell) + Send>;

/// What the loop receives besides packets.
pub enum LoopMsg {
    Swap(Swap),
    Query(Query),
}

/// What sits behind a dataplane port.
pub enum Port {
    Tun(Arc<tun_rs::AsyncDevice>),
    /// Index into the shell's sim ports.
    Sim(usize),
    /// The shell's uplink ([`Shell::set_uplink`]).
    Uplink,
}

/// Packets the shell could not hand to an egress port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShellStats {
    /// TUN writes the kernel refused (device gone).
    pub tun_tx_errors: u64,
    /// Packets dropped because their TUN egress queue was full (its writer behind).
    pub tun_tx_queue_full: u64,
    /// TUN reads that failed with something other than "nothing to read".
    pub tun_rx_errors: u64,
    /// Packets a sim port refused (queue full, larger than its MTU).
    pub sim_overflows: u64,
    /// Times the uplink's packets waited for a full TUN egress queue to drain.
    pub uplink_paced: u64,
    /// Batches read, and packets in them (their ratio is the mean batch size).
    pub batches: u64,
    pub batched_packets: u64,
}

/// The runtime state the loop drives.
pub struct Shell {
    fabric: Fabric,
    /// Wraps every `fabric.handle` (flow logs, captures); empty without flags.
    obs: Observer,
    sinks: Sinks,
    /// The egress queue of each TUN port, by id (`None` for other ports). Declared before
    /// `ports` so that it drops first: its writer threads are joined while the devices are alive.
    txq: Vec<Option<TxQueue>>,
    ports: Vec<Option<Port>>,
    /// Per TUN port: the egress queue it filled up, which must have room before it is read again.
    blocked_on: Vec<Option<usize>>,
    sims: Vec<SimPort>,
    /// Sim ports that received something since their last poll.
    sim_dirty: Vec<bool>,
    sim_deadline: Vec<Option<Instant>>,
    /// The public uplink, when the plan has one (its id's slot in `ports` is `Port::Uplink`).
    uplink: Option<UplinkPort>,
    /// The TUN ports still serving, by id.
    tuns: Vec<PortId>,
    ready: Vec<PortId>,
    bufs: Vec<Box<[u8]>>,
    lens: [usize; BATCH],
    verdicts: [Verdict; BATCH],
    scratch: Box<[u8]>,
    start: std::time::Instant,
    /// Unix time at `start` (the `epoch` of flow-log records and capture timestamps).
    epoch: Duration,
    stats: ShellStats,
}

impl Shell {
    /// `ports[i]` is what serves `PortId(i)` (`None`: nothing attached, packets to it are lost).
    /// `mtu` is the largest packet any port carries. Starts a writer thread per TUN port.
    pub fn new(
        fabric: Fabric,
        ports: Vec<Option<Port>>,
        sims: Vec<SimPort>,
        mtu: usize,
    ) -> io::Result<Shell> {
        let size = mtu + MIN_BUFFER;
        let mut txq = Vec::with_capacity(ports.len());
        for (i, p) in ports.iter().enumerate() {
            txq.push(match p {
                Some(Port::Tun(dev)) => {
                    Some(TxQueue::spawn(&format!("port {i}"), dev.clone(), size)?)
                }
                _ => None,
            });
        }
        let tuns = ports
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Some(Port::Tun(_))))
            .map(|(i, _)| PortId(i as u32))
            .collect();
        let n = sims.len();
        Ok(Shell {
            fabric,
            obs: Observer::new(),
            sinks: Sinks::none(),
            blocked_on: vec![None; ports.len()],
            ports,
            txq,
            sims,
            sim_dirty: vec![true; n],
            sim_deadline: vec![None; n],
            uplink: None,
            tuns,
            ready: Vec::new(),
            bufs: (0..BATCH)
                .map(|_| vec![0u8; size].into_boxed_slice())
                .collect(),
            lens: [0; BATCH],
            verdicts: [Verdict::Drop(DropReason::Truncated); BATCH],
            scratch: vec![0u8; size].into_boxed_slice(),
            start: std::time::Instant::now(),
            epoch: super::observing::epoch_now(),
            stats: ShellStats::default(),
        })
    }

    /// The loop's clock (what the fabric's timers and connection ages are measured in).
    pub fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// Unix time of this shell's `Instant::ZERO`.
    pub fn epoch(&self) -> Duration {
        self.epoch
    }

    /// The std clock reading of this shell's `Instant::ZERO` (for ports built off the loop).
    pub fn started(&self) -> std::time::Instant {
        self.start
    }

    /// Serves `uplink` at its port id (whose slot becomes `Port::Uplink`), replacing any other.
    pub fn set_uplink(&mut self, uplink: UplinkPort) {
        let i = uplink.port.index();
        if let Some(slot) = self.ports.get_mut(i) {
            *slot = Some(Port::Uplink);
        }
        self.uplink = Some(uplink);
    }

    /// The running uplink, if any (counters, active flows).
    pub fn uplink(&self) -> Option<&UplinkPort> {
        self.uplink.as_ref()
    }

    /// Observes every packet from now on with `obs`, writing to `sinks`.
    pub fn observe(&mut self, obs: Observer, sinks: Sinks) {
        self.obs = obs;
        self.sinks = sinks;
    }

    /// What the observer wrote (`vpcd up`'s closing line; empty without flags).
    pub fn observed_text(&self) -> String {
        self.sinks.summary(&self.obs)
    }

    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    /// For queries that change the dataplane's state (flushing connections).
    pub fn fabric_mut(&mut self) -> &mut Fabric {
        &mut self.fabric
    }

    pub fn stats(&self) -> ShellStats {
        let mut s = self.stats;
        for q in self.txq.iter().flatten() {
            s.tun_tx_errors += q.errors();
            s.tun_tx_queue_full += q.full_drops();
        }
        s
    }

    /// Serves every port until `shutdown` completes, then writes what the observer still holds
    /// (the open flow-log window, pending capture bytes).
    ///
    /// Port-set changes ([`Swap`]) and queries arrive on `swaps` and apply between two wake-ups.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut swaps: super::mailbox::Receiver<LoopMsg>,
    ) {
        let mut shutdown = pin!(shutdown);
        let mut swaps_open = true;
        let tokio_start = tokio::time::Instant::from_std(self.start);
        self.run_sims();
        self.flush();
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(t) => {
                        tokio::time::sleep_until(tokio_start + Duration::from_micros(t.micros()))
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            let mut ready = std::mem::take(&mut self.ready);
            let tuns = &self.tuns;
            let ports = &self.ports;
            let readable = poll_fn(|cx| {
                ready.clear();
                for &id in tuns {
                    if let Some(Some(Port::Tun(dev))) = ports.get(id.index())
                        && dev.poll_readable(cx).is_ready()
                    {
                        ready.push(id);
                    }
                }
                if ready.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            });
            let uplink = self.uplink.as_ref();
            let uplink_ready = async {
                match uplink {
                    Some(u) => u.ready().await,
                    None => std::future::pending().await,
                }
            };
            let mut swap = None;
            let mut uplink_woke = false;
            let stop = tokio::select! {
                biased;
                () = &mut shutdown => true,
                s = swaps.recv(), if swaps_open => {
                    match s {
                        Some(s) => swap = Some(s),
                        None => swaps_open = false,
                    }
                    false
                }
                () = readable => false,
                () = uplink_ready => {
                    uplink_woke = true;
                    false
                }
                () = sleep => false,
            };
            if let Some(msg) = swap {
                self.ready = ready;
                self.ready.clear();
                match msg {
                    LoopMsg::Swap(s) => self.apply_swap(s),
                    LoopMsg::Query(q) => q(self),
                }
                self.run_uplink(false);
                self.run_sims();
                self.run_uplink(false);
                self.flush();
                continue;
            }
            if stop {
                let now = self.now();
                self.sinks.finish(&mut self.obs, now);
                return;
            }
            let mut waiting_for = None;
            let mut drained = false;
            for &id in &ready {
                if let Some(e) = self.blocked_on[id.index()] {
                    if let Some(Some(q)) = self.txq.get_mut(e)
                        && !q.has_room()
                    {
                        waiting_for = Some(e);
                        continue;
                    }
                    self.blocked_on[id.index()] = None;
                }
                self.drain(id);
                drained = true;
            }
            if !drained
                && let Some(e) = waiting_for
                && let Some(Some(q)) = self.txq.get_mut(e)
            {
                // Every readable port feeds a full queue: wait for its writer (bounded, so
                // signals and timers are seen within a millisecond).
                q.wait_for_room(BACKPRESSURE_WAIT);
            }
            self.ready = ready;
            let now = self.now();
            if self.fabric.poll_timeout().is_some_and(|t| t <= now) {
                self.fabric.handle_timeout(now);
            }
            self.run_uplink(uplink_woke);
            self.run_sims();
            // What the sim ports sent to the uplink goes out in this wake-up too.
            self.run_uplink(false);
            if self.sinks.is_active() {
                let now = self.now();
                self.sinks.service(&mut self.obs, now);
            }
            self.flush();
        }
    }

    /// Handles `packet` as if port `ingress` had sent it: observed, counted and delivered like
    /// any packet a port reads (synthetic traffic from the control plane, and tests). A packet
    /// longer than the loop's buffers is cut, and dropped by the fabric as truncated.
    pub fn inject(&mut self, ingress: PortId, packet: &[u8]) -> Verdict {
        let now = self.now();
        let len = packet.len().min(self.scratch.len());
        self.scratch[..len].copy_from_slice(&packet[..len]);
        let verdict = self
            .obs
            .handle(&mut self.fabric, now, ingress, &mut self.scratch, len);
        if let Verdict::Forward { port, len, .. } | Verdict::Reply { port, len } = verdict {
            let packet = &self.scratch[..len.min(self.scratch.len())];
            Egress {
                ports: &self.ports,
                txq: &mut self.txq,
                sims: &mut self.sims,
                sim_dirty: &mut self.sim_dirty,
                uplink: self.uplink.as_mut(),
                stats: &mut self.stats,
                now,
            }
            .emit(port, packet);
        }
        verdict
    }

    /// The running flow log and captures.
    pub fn observe_status(&self) -> ObserveStatus {
        self.sinks.status(&self.obs)
    }

    /// Refuses a second flow log (before its file is opened).
    pub fn check_flow_log(&self) -> Result<(), ObserveControlError> {
        self.sinks.check_flow_log()
    }

    /// Installs a flow log opened off the loop ([`super::observing::start_flow_log`]).
    pub fn start_flow_log(
        &mut self,
        opened: PreparedFlowLog,
    ) -> Result<FlowLogStatus, ObserveControlError> {
        let tables = self.fabric.tables().clone();
        self.sinks
            .start_flow_log(&mut self.obs, &tables, self.epoch, opened)
    }

    /// Takes the flow log out, its open window closed now; write it off the loop.
    pub fn stop_flow_log(&mut self) -> Result<StoppedFlowLog, ObserveControlError> {
        let now = self.now();
        self.sinks.stop_flow_log(&mut self.obs, now)
    }

    /// The port of `endpoint` if it exists and is not captured (before the files are created).
    pub fn check_capture(&self, endpoint: &str) -> Result<PortId, ObserveControlError> {
        self.sinks.check_capture(self.fabric.tables(), endpoint)
    }

    /// Installs a capture whose files were opened off the loop
    /// ([`super::observing::start_capture`]).
    pub fn start_capture(
        &mut self,
        opened: PreparedCapture,
    ) -> Result<CaptureStatus, ObserveControlError> {
        let tables = self.fabric.tables().clone();
        self.sinks.start_capture(&mut self.obs, &tables, opened)
    }

    /// Takes the capture of `endpoint` out; write it off the loop.
    pub fn stop_capture(&mut self, endpoint: &str) -> Result<StoppedCapture, ObserveControlError> {
        self.sinks.stop_capture(&mut self.obs, endpoint)
    }

    /// Largest packet a port may carry (the buffers were sized for it at start).
    pub fn max_mtu(&self) -> usize {
        self.scratch.len().saturating_sub(MIN_BUFFER)
    }

    /// Rebuilds the port vectors from `swap.slots` (renumbering kept ports), closes the ports no
    /// slot keeps, then swaps the tables into the fabric and the observer.
    fn apply_swap(&mut self, swap: Swap) {
        let n = swap.slots.len();
        let mut old_ports: Vec<Option<Port>> = std::mem::take(&mut self.ports);
        let mut old_txq: Vec<Option<TxQueue>> = std::mem::take(&mut self.txq);
        let old_blocked = std::mem::take(&mut self.blocked_on);
        let mut old_sims: Vec<Option<SimPort>> = std::mem::take(&mut self.sims)
            .into_iter()
            .map(Some)
            .collect();
        let old_sim_deadline = std::mem::take(&mut self.sim_deadline);
        let old_tuns = std::mem::take(&mut self.tuns);
        let mut old_uplink = self.uplink.take();
        let mut new_id: Vec<Option<usize>> = vec![None; old_ports.len()];
        let now = self.now();
        let mut ports = Vec::with_capacity(n);
        let mut txq = Vec::with_capacity(n);
        let mut from: Vec<Option<usize>> = Vec::with_capacity(n);
        let mut sims = Vec::new();
        let mut sim_deadline = Vec::new();
        let mut tuns = Vec::new();
        for (j, slot) in swap.slots.into_iter().enumerate() {
            let id = PortId(j as u32);
            let mut old = None;
            let (port, queue) = match slot {
                Slot::Keep(o) => {
                    let oi = o.index();
                    old = Some(oi);
                    if let Some(x) = new_id.get_mut(oi) {
                        *x = Some(j);
                    }
                    let port = old_ports.get_mut(oi).and_then(Option::take);
                    let queue = old_txq.get_mut(oi).and_then(Option::take);
                    match port {
                        Some(Port::Sim(si)) => match old_sims.get_mut(si).and_then(Option::take) {
                            Some(mut sim) => {
                                sim.port = id;
                                sim_deadline.push(old_sim_deadline.get(si).copied().flatten());
                                sims.push(sim);
                                (Some(Port::Sim(sims.len() - 1)), None)
                            }
                            None => (None, None),
                        },
                        Some(Port::Tun(dev)) => {
                            if old_tuns.contains(&o) {
                                tuns.push(id);
                            }
                            (Some(Port::Tun(dev)), queue)
                        }
                        Some(Port::Uplink) => match old_uplink.take() {
                            Some(mut u) => {
                                u.port = id;
                                self.uplink = Some(u);
                                (Some(Port::Uplink), None)
                            }
                            None => (None, None),
                        },
                        None => (None, queue),
                    }
                }
                Slot::NewTun(dev, queue) => {
                    tuns.push(id);
                    (Some(Port::Tun(dev)), Some(queue))
                }
                Slot::NewSim(spec) => {
                    let sim = SimPort::new(
                        spec.name,
                        id,
                        spec.addressing,
                        &spec.services,
                        spec.seed,
                        now,
                    );
                    sims.push(sim);
                    sim_deadline.push(None);
                    (Some(Port::Sim(sims.len() - 1)), None)
                }
                Slot::NewUplink(mut u) => {
                    u.port = id;
                    self.uplink = Some(*u);
                    (Some(Port::Uplink), None)
                }
                Slot::Empty => (None, None),
            };
            ports.push(port);
            txq.push(queue);
            from.push(old);
        }
        // The ports no slot kept: writer threads first (joined while their devices are alive).
        drop(old_txq);
        drop(old_ports);
        drop(old_sims);
        // An uplink no slot kept closes its host sockets and listeners.
        drop(old_uplink);
        self.blocked_on = from
            .iter()
            .map(|o| {
                o.and_then(|oi| old_blocked.get(oi).copied().flatten())
                    .and_then(|e| new_id.get(e).copied().flatten())
            })
            .collect();
        self.ports = ports;
        self.txq = txq;
        self.sim_dirty = vec![true; sims.len()];
        self.sims = sims;
        self.sim_deadline = sim_deadline;
        self.tuns = tuns;
        // The flow log counts flows by port id: when ids move, what it counted so far goes out
        // under the old names first (the window's flows continue in a second record).
        let identity = new_id.iter().enumerate().all(|(i, j)| *j == Some(i));
        if !identity {
            self.obs.flush_all(now);
            self.sinks.follow_ports(&mut self.obs, &new_id);
        }
        let problems = match swap.tables {
            Some(t) => {
                let problems = self.fabric.swap_tables(now, t.clone());
                self.obs.set_tables(&t);
                problems
            }
            None => Vec::new(),
        };
        let _ = swap.done.send(problems);
    }

    /// Sends what this wake-up queued for each TUN port on its way.
    fn flush(&mut self) {
        for q in self.txq.iter_mut().flatten() {
            q.flush();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sims = self.sim_deadline.iter().flatten().copied().min();
        let observer = if self.sinks.is_active() {
            self.sinks.poll_timeout(&self.obs)
        } else {
            None
        };
        let uplink = self.uplink.as_ref().and_then(UplinkPort::deadline);
        [sims, self.fabric.poll_timeout(), observer, uplink]
            .into_iter()
            .flatten()
            .min()
    }

    /// Reads one batch from a TUN port and sends each packet where the fabric says.
    fn drain(&mut self, ingress: PortId) {
        let Some(Some(Port::Tun(dev))) = self.ports.get(ingress.index()) else {
            return;
        };
        let mut n = 0;
        let mut dead = false;
        while n < BATCH {
            match dev.try_recv(&mut self.bufs[n]) {
                Ok(len) => {
                    self.lens[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.stats.tun_rx_errors += 1;
                    dead = true;
                    break;
                }
            }
        }
        if dead {
            // The device is gone (deleted under us): stop polling it rather than spin.
            self.tuns.retain(|p| *p != ingress);
        }
        if n == 0 {
            return;
        }
        self.stats.batches += 1;
        self.stats.batched_packets += n as u64;
        let now = self.now();
        for k in 0..n {
            self.verdicts[k] = self.obs.handle(
                &mut self.fabric,
                now,
                ingress,
                &mut self.bufs[k],
                self.lens[k],
            );
        }
        for k in 0..n {
            if let Verdict::Forward { port, len, .. } | Verdict::Reply { port, len } =
                self.verdicts[k]
            {
                if let Some(Some(q)) = self.txq.get_mut(port.index()) {
                    // Full queues count their own drops.
                    let _ = q.push_swap(&mut self.bufs[k], len);
                    if q.is_filling_last() {
                        self.blocked_on[ingress.index()] = Some(port.index());
                    }
                    continue;
                }
                let packet = &self.bufs[k][..len.min(self.bufs[k].len())];
                Egress {
                    ports: &self.ports,
                    txq: &mut self.txq,
                    sims: &mut self.sims,
                    sim_dirty: &mut self.sim_dirty,
                    uplink: self.uplink.as_mut(),
                    stats: &mut self.stats,
                    now,
                }
                .emit(port, packet);
            }
        }
    }

    /// Polls the uplink when something was delivered to it, its host sockets woke the loop
    /// (`woke`) or its timers are due, and routes what it sends; a reply the fabric sends back to
    /// the uplink itself is delivered at once and polled again (bounded).
    fn run_uplink(&mut self, woke: bool) {
        let Some(mut u) = self.uplink.take() else {
            return;
        };
        let now = self.now();
        let mut poll = woke || u.due(now);
        for _ in 0..UPLINK_ROUNDS {
            if !poll {
                break;
            }
            u.poll(now);
            while let Some(pkt) = u.take_tx() {
                let len = pkt.len().min(self.scratch.len());
                self.scratch[..len].copy_from_slice(&pkt[..len]);
                let verdict =
                    self.obs
                        .handle(&mut self.fabric, now, u.port, &mut self.scratch, len);
                let (Verdict::Forward { port, len, .. } | Verdict::Reply { port, len }) = verdict
                else {
                    continue;
                };
                let packet = &self.scratch[..len.min(self.scratch.len())];
                if port == u.port {
                    u.deliver(now, packet);
                    continue;
                }
                let queue = Egress {
                    ports: &self.ports,
                    txq: &mut self.txq,
                    sims: &mut self.sims,
                    sim_dirty: &mut self.sim_dirty,
                    uplink: None,
                    stats: &mut self.stats,
                    now,
                }
                .emit(port, packet);
                if let Some(Some(q)) = queue.and_then(|i| self.txq.get_mut(i))
                    && q.is_filling_last()
                {
                    // Pace the uplink to the function's writer instead of dropping its packets.
                    q.flush();
                    q.wait_for_room(BACKPRESSURE_WAIT);
                    self.stats.uplink_paced += 1;
                }
            }
            poll = u.is_dirty();
        }
        u.schedule(now);
        self.uplink = Some(u);
    }

    /// Polls the sim ports that received something or whose timers are due, and routes what they
    /// send, until they are quiet (bounded).
    fn run_sims(&mut self) {
        if self.sims.is_empty() {
            return;
        }
        for _ in 0..SIM_ROUNDS {
            let now = self.now();
            let mut sent = false;
            for i in 0..self.sims.len() {
                let due = self.sim_deadline[i].is_some_and(|t| t <= now);
                if !self.sim_dirty[i] && !due {
                    continue;
                }
                self.sim_dirty[i] = false;
                self.sims[i].poll(now);
                while let Some(pkt) = self.sims[i].take_tx() {
                    sent = true;
                    let ingress = self.sims[i].port;
                    let len = pkt.len().min(self.scratch.len());
                    self.scratch[..len].copy_from_slice(&pkt[..len]);
                    let verdict =
                        self.obs
                            .handle(&mut self.fabric, now, ingress, &mut self.scratch, len);
                    if let Verdict::Forward { port, len, .. } | Verdict::Reply { port, len } =
                        verdict
                    {
                        let packet = &self.scratch[..len.min(self.scratch.len())];
                        Egress {
                            ports: &self.ports,
                            txq: &mut self.txq,
                            sims: &mut self.sims,
                            sim_dirty: &mut self.sim_dirty,
                            uplink: self.uplink.as_mut(),
                            stats: &mut self.stats,
                            now,
                        }
                        .emit(port, packet);
                    }
                }
                self.sim_deadline[i] = self.sims[i].poll_at(now);
            }
            if !sent && !self.sim_dirty.iter().any(|d| *d) {
                break;
            }
        }
    }
}

/// The egress side of the shell, borrowed to hand one packet to its port.
struct Egress<'a> {
    ports: &'a [Option<Port>],
    txq: &'a mut [Option<TxQueue>],
    sims: &'a mut [SimPort],
    sim_dirty: &'a mut [bool],
    /// `None` while the uplink itself is being served (its packets back to it go directly).
    uplink: Option<&'a mut UplinkPort>,
    stats: &'a mut ShellStats,
    now: Instant,
}

impl Egress<'_> {
    /// Hands a packet to its egress port (a copy: TUN packets from the fabric's read buffers are
    /// swapped into their queue instead). Returns the TUN queue it went to, if any.
    fn emit(&mut self, egress: PortId, packet: &[u8]) -> Option<usize> {
        match self.ports.get(egress.index()) {
            Some(Some(Port::Tun(_))) => {
                if let Some(Some(q)) = self.txq.get_mut(egress.index()) {
                    // Full queues count their own drops.
                    let _ = q.push_copy(packet);
                    return Some(egress.index());
                }
            }
            Some(Some(Port::Sim(i))) => {
                if let Some(sim) = self.sims.get_mut(*i) {
                    if sim.deliver(packet) {
                        self.sim_dirty[*i] = true;
                    } else {
                        self.stats.sim_overflows += 1;
                    }
                }
            }
            Some(Some(Port::Uplink)) => {
                if let Some(u) = self.uplink.as_deref_mut() {
                    u.deliver(self.now, packet);
                }
            }
            _ => {}
        }
        None
    }
}
