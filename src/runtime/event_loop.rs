//! The I/O shell's loop: one task owns the [`Fabric`] and serves every port; the shared writer
//! threads ([`super::tx`]) do the TUN ports' `write()`s.
//!
//! Each port id has one slot ([`super::forward`]): a TUN port's device with its egress queue, a
//! sim port's stack, or the uplink. Each wake-up finds the TUN ports that are readable, reads up to
//! [`BATCH`] packets from each into caller-owned buffers, and passes each packet, as soon as it
//! is read, along the one forwarding path (`Forwarding::forward` in [`super::forward`]: observer,
//! fabric, egress port — a buffer swap for TUN ports, a copy for the others); a port that one of
//! its packets made wait is read no further in that wake-up; at the end of the wake-up every TUN
//! egress queue is flushed to its writer. Sim ports are polled after every batch
//! and when their timers fall due, and the fabric's own timers run when [`Fabric::poll_timeout`]
//! says so; what a sim port sends is copied into the loop's buffer and takes the same path.
//! A TUN port with offload hands each read with its `virtio_net_hdr` (a superpacket of up to
//! 64 KiB, or a packet with a partial checksum): it is decoded into the packet's metadata and
//! passed through the fabric once. Nothing here allocates per packet.
//!
//! Fairness under a flood: a port that fills its smallest read budget with packets the fabric
//! drops rests for [`super::forward::FLOOD_REST`] between reads ([`next_rest`]), so its excess is
//! dropped in the kernel's TUN queue at the sender's cost and the loop does not spin on it.
//! Between tenants: a VPC's ports (or an internet host's, or the uplink's) share one quantum
//! per wake-up ([`super::fair`]), so a tenant with many busy ports takes one share of the loop.
//!
//! Backpressure, without ever blocking the loop (which also serves the API): a port whose packet
//! took the last spare batch of a TUN egress queue waits for that queue. A waiting TUN port is not
//! read, so its packets wait in the kernel's TUN queue (where TCP Small Queues throttle a local
//! sender) instead of being read only to be dropped; a waiting uplink is neither polled nor
//! drained, so it paces the host servers behind it. The writer wakes the loop when it hands a
//! batch back, and the port resumes; other ports keep being served meanwhile. A packet that still
//! finds no room, or a write the kernel refuses, is dropped, as a full NIC ring would, and counted
//! in [`ShellStats`].
//!
//! The public uplink ([`super::uplink_port`]) is one more port: what the fabric forwards to it is
//! delivered at once, and it is polled after such a batch, when its `ready()` future resolves
//! (host sockets produced something) and when its timers fall due; what it sends takes the same
//! forwarding path with its port as ingress, like a sim port's packets.
//!
//! Observation (`--flow-log`, `--capture`): every packet goes through [`Observer::handle`], which
//! wraps `Fabric::handle` (without flags it is that call plus two branches); the observer's timers
//! join the wake-up deadline, [`Sinks`] writes what is due after each wake-up, and everything
//! still buffered is written when the loop stops.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::fair::{TenantQuota, tenant_of};
use super::forward::{Forwarding, PortSlot, TunPort, next_budget, next_rest, poll_waits};
use super::observing::{
    CaptureStatus, FlowLogStatus, ObserveControlError, ObserveStatus, PreparedCapture,
    PreparedFlowLog, Sinks, StoppedCapture, StoppedFlowLog,
};
use super::sim_port::SimPort;
use super::sim_schedule::SimSchedule;
use super::tx::{BATCH, HEADROOM, TxWriters};
use super::uplink_port::UplinkPort;
use crate::dataplane::gateways::ReconcileProblem;
use crate::dataplane::offload::vnet::{self, VNET_HDR_LEN};
use crate::dataplane::{Fabric, MIN_BUFFER, PacketMeta, PortId, Verdict};
pub use crate::inspect::ShellStats;
use crate::inspect::{ConnFilter, ConnList, FlushTarget, Flushed, InspectError, Snapshot};
use crate::observe::Observer;
use crate::time::Instant;

/// Rounds of sim-to-sim exchanges handled after one batch before yielding (a bound, not a target).
const SIM_ROUNDS: usize = 64;
/// Rounds of uplink polls per wake-up when the fabric answers the uplink itself (a bound).
const UPLINK_ROUNDS: usize = 4;

/// What a port id serves after a [`Swap`].
pub enum Slot {
    /// The port that had this id before the swap (its device, writer thread, sim stack and
    /// queued packets move along).
    Keep(PortId),
    /// A new TUN port, its writes served by the shell's writer threads.
    NewTun(Box<TunPort>),
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
    /// What it answers, when it is a VPC's resolver.
    pub resolver: Option<Arc<crate::dns::View>>,
    /// Where that resolver forwards other names.
    pub upstreams: Vec<std::net::SocketAddr>,
    /// Where that resolver logs its answers.
    pub query_log: Option<crate::sim::resolver::QueryLog>,
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

/// What serves a dataplane port when the shell starts ([`Shell::new`]).
pub enum Port {
    /// A TUN device (with offload or without); the shell's writer threads serve it.
    Tun(Arc<tun_rs::AsyncDevice>),
    Sim(Box<SimPort>),
    Uplink(Box<UplinkPort>),
}

/// The runtime state the loop drives.
pub struct Shell {
    /// The fabric, the observer and the ports: what a packet touches.
    fwd: Forwarding,
    sinks: Sinks,
    /// The TUN ports found readable by the last wake-up (kept for its allocation).
    ready: Vec<PortId>,
    /// One batch of read buffers.
    bufs: Vec<Box<[u8]>>,
    /// The buffer for packets from sim ports, the uplink and [`Shell::inject`].
    scratch: Box<[u8]>,
    start: std::time::Instant,
    /// Unix time at `start` (the `epoch` of flow-log records and capture timestamps).
    epoch: Duration,
    /// Which sim ports to poll, without visiting every port ([`SimSchedule`]).
    sims: SimSchedule,
    /// The sim ports one round polls (kept for its allocation).
    sim_due: Vec<u32>,
    /// What each tenant may still have read in this wake-up ([`super::fair`]).
    quota: TenantQuota,
}

impl Shell {
    /// `ports[i]` is what serves `PortId(i)` (`None`: nothing attached, packets to it are lost;
    /// a sim port's or the uplink's own id is set to `i`). `mtu` is the largest packet any port
    /// carries. Its TUN ports are written by `writers`.
    pub fn new(
        fabric: Fabric,
        ports: Vec<Option<Port>>,
        mtu: usize,
        writers: &TxWriters,
    ) -> io::Result<Shell> {
        let size = buffer_size(mtu);
        let mut slots = Vec::with_capacity(ports.len());
        for (i, p) in ports.into_iter().enumerate() {
            let mut slot = match p {
                Some(Port::Tun(dev)) => PortSlot::Tun(Box::new(TunPort::new(dev, writers))),
                Some(Port::Sim(s)) => PortSlot::Sim(s),
                Some(Port::Uplink(u)) => PortSlot::Uplink(u),
                None => PortSlot::Empty,
            };
            slot.renumber(PortId(i as u32));
            slots.push(slot);
        }
        Ok(Shell {
            fwd: Forwarding::new(fabric, slots, size),
            sinks: Sinks::none(),
            ready: Vec::new(),
            bufs: (0..BATCH)
                .map(|_| vec![0u8; size].into_boxed_slice())
                .collect(),
            scratch: vec![0u8; size].into_boxed_slice(),
            start: std::time::Instant::now(),
            epoch: super::observing::epoch_now(),
            sims: SimSchedule::new(),
            sim_due: Vec::new(),
            quota: TenantQuota::default(),
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

    /// The running uplink, if any (counters, active flows).
    pub fn uplink(&self) -> Option<&UplinkPort> {
        self.fwd.ports.iter().find_map(|p| match p {
            PortSlot::Uplink(u) => Some(&**u),
            _ => None,
        })
    }

    /// Observes every packet from now on with `obs`, writing to `sinks`.
    pub fn observe(&mut self, obs: Observer, sinks: Sinks) {
        self.fwd.obs = obs;
        self.sinks = sinks;
    }

    /// What the observer wrote (`vpcd up`'s closing line; empty without flags).
    pub fn observed_text(&self) -> String {
        self.sinks.summary(&self.fwd.obs)
    }

    pub fn fabric(&self) -> &Fabric {
        &self.fwd.fabric
    }

    /// For queries that change the dataplane's state (flushing connections).
    pub fn fabric_mut(&mut self) -> &mut Fabric {
        &mut self.fwd.fabric
    }

    pub fn stats(&self) -> ShellStats {
        let mut s = self.fwd.stats;
        for p in &self.fwd.ports {
            if let PortSlot::Tun(t) = p {
                s.tun_tx_errors += t.queue_ref().errors();
                s.tun_tx_queue_full += t.queue_ref().full_drops();
            }
        }
        s
    }

    /// Every counter, the shell's own included (the metrics' one query).
    pub fn snapshot(&self) -> Snapshot {
        let mut s = crate::inspect::snapshot(self.fabric(), self.now());
        for (p, slot) in s.ports.iter_mut().zip(&self.fwd.ports) {
            if let PortSlot::Tun(t) = slot {
                p.tx_queue_full = t.queue_ref().full_drops();
                p.flood_rests = t.rests;
            }
        }
        s.shell = Some(self.stats());
        s.uplink = self
            .uplink()
            .map(|u| crate::inspect::UplinkSnapshot::of(u.uplink()));
        s.dns = self.dns_snapshots();
        s
    }

    /// VPC `vpc`'s resolver port (the API's DNS queries ask it).
    pub fn resolver_mut(&mut self, vpc: usize) -> Option<&mut SimPort> {
        let port = self.fwd.fabric.tables().vpcs.get(vpc)?.resolver.port;
        // The caller may give it work (a query to answer): it is looked at next.
        self.fwd.sims_woken.push(port.0);
        match self.fwd.ports.get_mut(port.index()) {
            Some(PortSlot::Sim(s)) => Some(s),
            _ => None,
        }
    }

    /// What every VPC's resolver answered, in VPC order.
    fn dns_snapshots(&self) -> Vec<crate::inspect::DnsSnapshot> {
        let tables = self.fwd.fabric.tables();
        tables
            .vpcs
            .iter()
            .filter_map(|v| match self.fwd.ports.get(v.resolver.port.index()) {
                Some(PortSlot::Sim(s)) => s.dns_counters().map(|c| crate::inspect::DnsSnapshot {
                    vpc: v.name.clone(),
                    counters: *c,
                }),
                _ => None,
            })
            .collect()
    }

    /// [`crate::inspect::connections`] on the running fabric.
    pub fn connections(&self, filter: &ConnFilter) -> Result<ConnList, InspectError> {
        let Some(uplink) = self.uplink() else {
            return crate::inspect::connections(self.fabric(), self.now(), filter);
        };
        let host_socket = |proto: u8, (eip, port), (ip, rport)| {
            let public = std::net::SocketAddrV4::new(eip, port);
            let remote = std::net::SocketAddrV4::new(ip, rport);
            let s = uplink.uplink().host_socket(proto, public, remote)?;
            Some(s.to_string())
        };
        crate::inspect::connections_with(self.fabric(), self.now(), filter, &host_socket)
    }

    /// The NAT mapping and host socket behind a flow `vpcd explain` sends out through the
    /// uplink: the session of its internal endpoint towards its remote (else any of the
    /// endpoint's, which share an endpoint-independent mapping), and the uplink's socket for
    /// it. `None` without an uplink, or when neither a session nor a socket exists.
    pub fn uplink_mapping(
        &self,
        flow: &crate::explain::UplinkFlow,
    ) -> Option<crate::explain::LiveUplink> {
        let uplink = self.uplink()?;
        let internal = (*flow.internal.ip(), flow.internal.port());
        let remote = (*flow.remote.ip(), flow.remote.port());
        let mut found = None;
        for c in self.fabric().gateways().connections(self.now()) {
            let s = &c.session;
            if s.protocol.number() != flow.protocol || s.internal != internal {
                continue;
            }
            found = Some(std::net::SocketAddrV4::new(s.external.0, s.external.1));
            if s.remote == remote {
                break;
            }
        }
        let public = found.unwrap_or(flow.public);
        let host_socket = uplink
            .uplink()
            .host_socket(flow.protocol, public, flow.remote);
        (found.is_some() || host_socket.is_some()).then_some(crate::explain::LiveUplink {
            public,
            host_socket,
        })
    }

    /// [`crate::inspect::flush`] on the running fabric.
    pub fn flush_connections(&mut self, target: &FlushTarget) -> Result<Flushed, InspectError> {
        let now = self.now();
        crate::inspect::flush(self.fabric_mut(), now, target)
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
        self.fwd.flush();
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
            let now = self.now();
            let ports = &mut self.fwd.ports;
            let pool = &mut self.fwd.pool;
            let woken = &mut self.fwd.sims_woken;
            let waiting = &mut self.fwd.waiting;
            // Ports resumed because their egress queue has room, readable TUN ports, and host
            // sockets of the uplink that produced something; one future, so that a port that
            // waits is neither read nor polled.
            let woke = poll_fn(|cx| {
                ready.clear();
                let mut uplink = poll_waits(ports, pool, waiting, woken, cx);
                // A batch held back for a busy writer may go: the flush at the end of the wake-up
                // sends it.
                let mut held = false;
                for p in ports.iter_mut() {
                    if let PortSlot::Tun(t) = p {
                        held |= t.queue_mut().poll_held(pool, cx).is_ready();
                    }
                }
                for (i, p) in ports.iter().enumerate() {
                    match p {
                        PortSlot::Tun(t)
                            if t.readable
                                && t.waits_for.is_none()
                                && t.rests_until.is_none_or(|r| r <= now)
                                && t.device().poll_readable(cx).is_ready() =>
                        {
                            ready.push(PortId(i as u32));
                        }
                        PortSlot::Uplink(u) if u.waits_for.is_none() && !uplink => {
                            uplink = pin!(u.ready()).poll(cx).is_ready();
                        }
                        _ => {}
                    }
                }
                if ready.is_empty() && !uplink && !held {
                    Poll::Pending
                } else {
                    Poll::Ready(uplink)
                }
            });
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
                u = woke => {
                    uplink_woke = u;
                    false
                }
                () = sleep => false,
            };
            self.ready = ready;
            if let Some(msg) = swap {
                self.ready.clear();
                match msg {
                    LoopMsg::Swap(s) => self.apply_swap(s),
                    LoopMsg::Query(q) => q(self),
                }
                self.run_uplink(false);
                self.run_sims();
                self.run_uplink(false);
                self.fwd.flush();
                continue;
            }
            if stop {
                let now = self.now();
                self.sinks.finish(&mut self.fwd.obs, now);
                return;
            }
            // Each tenant's ports share one quantum; the order rotates (see `super::fair`).
            self.quota.next_wakeup();
            let (len, rot) = (self.ready.len(), self.quota.rotation(self.ready.len()));
            for k in 0..len {
                let id = self.ready[(k + rot) % len];
                let tenant = tenant_of(self.fwd.fabric.tables(), id.index());
                let grant = self.quota.grant(tenant, BATCH);
                if grant == 0 {
                    self.fwd.stats.tun_tenant_deferred += 1;
                    continue;
                }
                let read = self.drain(id, grant);
                self.quota.refund(tenant, grant - read);
            }
            let now = self.now();
            if self.fwd.fabric.poll_timeout().is_some_and(|t| t <= now) {
                self.fwd.fabric.handle_timeout(now);
            }
            self.run_uplink(uplink_woke);
            self.run_sims();
            // What the sim ports sent to the uplink goes out in this wake-up too.
            self.run_uplink(false);
            if self.sinks.is_active() {
                let now = self.now();
                self.sinks.service(&mut self.fwd.obs, now);
            }
            self.fwd.flush();
        }
    }

    /// Handles `packet` as if port `ingress` had sent it: observed, counted and delivered like
    /// any packet a port reads (synthetic traffic from the control plane, and tests). A packet
    /// longer than the loop's buffers is cut, and dropped by the fabric as truncated.
    pub fn inject(&mut self, ingress: PortId, packet: &[u8]) -> Verdict {
        let now = self.now();
        let len = packet.len().min(self.scratch.len() - HEADROOM);
        self.scratch[HEADROOM..HEADROOM + len].copy_from_slice(&packet[..len]);
        self.fwd
            .forward(now, ingress, &mut self.scratch, len, PacketMeta::COMPLETE)
    }

    /// The running flow log and captures.
    pub fn observe_status(&self) -> ObserveStatus {
        self.sinks.status(&self.fwd.obs)
    }

    /// Refuses a second flow log (before its file is opened).
    pub fn check_flow_log(&self) -> Result<(), ObserveControlError> {
        self.sinks.check_flow_log()
    }

    /// Installs a flow log opened off the loop ([`super::observe_api::start_flow_log`]).
    pub fn start_flow_log(
        &mut self,
        opened: PreparedFlowLog,
    ) -> Result<FlowLogStatus, ObserveControlError> {
        let tables = self.fwd.fabric.tables().clone();
        self.sinks
            .start_flow_log(&mut self.fwd.obs, &tables, self.epoch, opened)
    }

    /// Takes the flow log out, its open window closed now; write it off the loop.
    pub fn stop_flow_log(&mut self) -> Result<StoppedFlowLog, ObserveControlError> {
        let now = self.now();
        self.sinks.stop_flow_log(&mut self.fwd.obs, now)
    }

    /// The port of `endpoint` if it exists and is not captured (before the files are created).
    pub fn check_capture(&self, endpoint: &str) -> Result<PortId, ObserveControlError> {
        self.sinks.check_capture(self.fwd.fabric.tables(), endpoint)
    }

    /// Installs a capture whose files were opened off the loop
    /// ([`super::observe_api::start_capture`]).
    pub fn start_capture(
        &mut self,
        opened: PreparedCapture,
    ) -> Result<CaptureStatus, ObserveControlError> {
        let tables = self.fwd.fabric.tables().clone();
        self.sinks.start_capture(&mut self.fwd.obs, &tables, opened)
    }

    /// Takes the capture of `endpoint` out; write it off the loop.
    pub fn stop_capture(&mut self, endpoint: &str) -> Result<StoppedCapture, ObserveControlError> {
        self.sinks.stop_capture(&mut self.fwd.obs, endpoint)
    }

    /// Largest packet a port may carry (the buffers were sized for it at start).
    pub fn max_mtu(&self) -> usize {
        self.scratch
            .len()
            .saturating_sub(MIN_BUFFER + HEADROOM)
            .min(MAX_MTU)
    }

    /// Rebuilds the port slots from `swap.slots` (renumbering kept ports), closes the ports no
    /// slot keeps, then swaps the tables into the fabric and the observer.
    fn apply_swap(&mut self, swap: Swap) {
        let mut old: Vec<Option<PortSlot>> = std::mem::take(&mut self.fwd.ports)
            .into_iter()
            .map(Some)
            .collect();
        let mut new_id: Vec<Option<usize>> = vec![None; old.len()];
        let now = self.now();
        let mut ports = Vec::with_capacity(swap.slots.len());
        let mut new_sims = Vec::new();
        for (j, slot) in swap.slots.into_iter().enumerate() {
            let id = PortId(j as u32);
            let port = match slot {
                Slot::Keep(o) => {
                    if let Some(x) = new_id.get_mut(o.index()) {
                        *x = Some(j);
                    }
                    let mut kept = old
                        .get_mut(o.index())
                        .and_then(Option::take)
                        .unwrap_or(PortSlot::Empty);
                    // New ports are made with their id; a kept one learns it when it moved.
                    if o.index() != j {
                        kept.renumber(id);
                    }
                    kept
                }
                Slot::NewTun(t) => PortSlot::Tun(t),
                Slot::NewSim(spec) => {
                    // A new stack is polled first thing.
                    new_sims.push(j as u32);
                    let sim = SimPort::new(
                        spec.name,
                        id,
                        spec.addressing,
                        &spec.services,
                        spec.seed,
                        now,
                    );
                    PortSlot::Sim(Box::new(match spec.resolver {
                        Some(view) => sim.with_resolver(
                            view,
                            super::dns_upstream::for_resolver(&spec.upstreams),
                            spec.query_log,
                        ),
                        None => sim,
                    }))
                }
                Slot::NewUplink(u) => PortSlot::Uplink(u),
                Slot::Empty => PortSlot::Empty,
            };
            ports.push(port);
        }
        // A port keeps waiting for a kept queue (under its new id); a removed queue ends the wait.
        // Only the ports that waited can (new ones do not).
        let mut waiting = std::mem::take(&mut self.fwd.waiting);
        waiting.retain_mut(|i| {
            let Some(j) = new_id.get(*i as usize).copied().flatten() else {
                return false;
            };
            *i = j as u32;
            let Some(w) = ports.get_mut(j).and_then(PortSlot::waits_for_mut) else {
                return false;
            };
            *w = w
                .and_then(|e| new_id.get(e.index()).copied().flatten())
                .map(|k| PortId(k as u32));
            w.is_some()
        });
        // The ports no slot kept: an uplink closes its host sockets and listeners here; TUN
        // devices are closed on a thread of their own, because closing one makes the kernel
        // unregister the device (tens of milliseconds under load), which must not stall the
        // loop. Their namespaces may be deleted meanwhile: a namespace lives until its device
        // is closed, unnamed.
        let mut tuns = Vec::new();
        for p in old.into_iter().flatten() {
            match p {
                PortSlot::Tun(t) => tuns.push(*t),
                other => drop(other),
            }
        }
        close_in_background(tuns);
        self.fwd.ports = ports;
        self.fwd.waiting = waiting;
        // Kept sim ports keep their timers and pending polls under their new ids.
        self.sims.renumber(&new_id);
        let woken = std::mem::take(&mut self.fwd.sims_woken);
        self.fwd.sims_woken = woken
            .into_iter()
            .filter_map(|i| new_id.get(i as usize).copied().flatten())
            .map(|j| j as u32)
            .chain(new_sims)
            .collect();
        // The flow log counts flows by port id: when ids move, what it counted so far goes out
        // under the old names first (the window's flows continue in a second record).
        let identity = new_id.iter().enumerate().all(|(i, j)| *j == Some(i));
        if !identity {
            self.fwd.obs.flush_all(now);
            self.sinks.follow_ports(&mut self.fwd.obs, &new_id);
        }
        let problems = match swap.tables {
            Some(t) => {
                let problems = self.fwd.fabric.swap_tables(now, t.clone());
                self.fwd.obs.set_tables(&t);
                problems
            }
            None => Vec::new(),
        };
        let _ = swap.done.send(problems);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let now = self.now();
        // Sim ports: their earliest timer, or now while some wait to be polled.
        let sims = if self.sims.rescan_pending() || !self.fwd.sims_woken.is_empty() {
            Some(now)
        } else {
            self.sims.next()
        };
        let ports = self.fwd.ports.iter().filter_map(|p| match p {
            // A waiting uplink is not polled: its timers wait with it.
            PortSlot::Uplink(u) if u.waits_for.is_none() => u.deadline(),
            // A resting TUN port is not polled for readiness: a timer ends its rest (a rest
            // that is over stays recorded until the port is read again, and is no deadline).
            PortSlot::Tun(t) if t.waits_for.is_none() => t.rests_until.filter(|r| *r > now),
            _ => None,
        });
        let observer = if self.sinks.is_active() {
            self.sinks.poll_timeout(&self.fwd.obs)
        } else {
            None
        };
        ports
            .chain(
                [self.fwd.fabric.poll_timeout(), observer, sims]
                    .into_iter()
                    .flatten(),
            )
            .min()
    }

    /// Reads one batch from a TUN port (at most its budget, [`BATCH`] unless the fabric has been
    /// dropping its packets: [`next_budget`]; and at most `grant`, what its tenant has left) and
    /// forwards each packet; the packets read. A port with offload hands each
    /// packet (or superpacket) with its `virtio_net_hdr`, read into the headroom and decoded
    /// into the packet's metadata; without, the packet is read after the headroom.
    fn drain(&mut self, ingress: PortId, grant: usize) -> usize {
        let Some(PortSlot::Tun(t)) = self.fwd.ports.get(ingress.index()) else {
            return 0;
        };
        let vnet = t.vnet();
        let start = if vnet { 0 } else { HEADROOM };
        let budget = t.budget.clamp(1, BATCH);
        let now = self.now();
        let (mut n, mut dropped) = (0, 0);
        while n < budget.min(grant) {
            let Some(PortSlot::Tun(t)) = self.fwd.ports.get_mut(ingress.index()) else {
                return n;
            };
            // Each packet is forwarded as soon as it is read, so a port that one of its packets
            // made wait (its egress queue nearly full) is read no further: the rest of its
            // burst waits in the kernel's TUN queue instead of being read only to be dropped at
            // the full queue.
            if t.waits_for.is_some() {
                break;
            }
            // A raw read (the device has no packet information): the header, if any, first.
            let (len, meta) = match t.device().try_recv(&mut self.bufs[n][start..]) {
                Ok(got) if !vnet => (got, PacketMeta::COMPLETE),
                Ok(got) => {
                    let meta = match self.bufs[n][..got].split_first_chunk::<VNET_HDR_LEN>() {
                        Some((hdr, pkt)) => vnet::decode(hdr, pkt),
                        None => Err(crate::dataplane::DropReason::BadOffload),
                    };
                    let Ok(meta) = meta else {
                        self.fwd.stats.tun_rx_bad_vnet += 1;
                        continue;
                    };
                    let len = got - VNET_HDR_LEN;
                    if meta.gso.is_some() {
                        self.fwd.stats.tun_rx_superpackets += 1;
                        self.fwd.stats.tun_rx_segments += meta.segments(len) as u64;
                    }
                    (len, meta)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.fwd.stats.tun_rx_errors += 1;
                    // The device is gone (deleted under us): stop polling it rather than spin.
                    t.readable = false;
                    break;
                }
            };
            let v = self.fwd.forward(now, ingress, &mut self.bufs[n], len, meta);
            dropped += usize::from(matches!(v, Verdict::Drop(_)));
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        self.fwd.stats.batches += 1;
        self.fwd.stats.batched_packets += n as u64;
        if let Some(PortSlot::Tun(t)) = self.fwd.ports.get_mut(ingress.index()) {
            t.rests_until = next_rest(now, budget, n, dropped);
            let rested = u64::from(t.rests_until.is_some());
            t.rests += rested;
            self.fwd.stats.tun_flood_rests += rested;
            t.budget = next_budget(t.budget, n, dropped);
        }
        n
    }

    /// Polls the uplink when something was delivered to it, its host sockets woke the loop
    /// (`woke`) or its timers are due, and forwards what it sends; a reply the fabric sends back
    /// to the uplink itself is delivered at once and polled again (bounded). An uplink that waits
    /// for a TUN egress queue is left alone until the queue has room.
    fn run_uplink(&mut self, woke: bool) {
        let Some(i) = self
            .fwd
            .ports
            .iter()
            .position(|p| matches!(p, PortSlot::Uplink(u) if u.waits_for.is_none()))
        else {
            return;
        };
        let now = self.now();
        let port = PortId(i as u32);
        let mut poll = woke || matches!(&self.fwd.ports[i], PortSlot::Uplink(u) if u.due(now));
        for _ in 0..UPLINK_ROUNDS {
            let Some(PortSlot::Uplink(u)) = self.fwd.ports.get_mut(i) else {
                return;
            };
            if !poll || u.waits_for.is_some() {
                break;
            }
            u.poll(now);
            loop {
                let Some(PortSlot::Uplink(u)) = self.fwd.ports.get_mut(i) else {
                    return;
                };
                if u.waits_for.is_some() {
                    break;
                }
                let Some(len) = u.take_tx(&mut self.scratch[HEADROOM..]) else {
                    break;
                };
                let _ = self
                    .fwd
                    .forward(now, port, &mut self.scratch, len, PacketMeta::COMPLETE);
            }
            poll = matches!(&self.fwd.ports[i], PortSlot::Uplink(u) if u.is_dirty());
        }
        if let Some(PortSlot::Uplink(u)) = self.fwd.ports.get_mut(i) {
            u.schedule(now);
        }
    }

    /// Polls the sim ports that received something or whose timers are due, and forwards what
    /// they send, until they are quiet (bounded).
    fn run_sims(&mut self) {
        let mut due = std::mem::take(&mut self.sim_due);
        for _ in 0..SIM_ROUNDS {
            let now = self.now();
            self.sims
                .due(&self.fwd.ports, &mut self.fwd.sims_woken, now, &mut due);
            let mut sent = false;
            for &i in &due {
                let Some(PortSlot::Sim(s)) = self.fwd.ports.get_mut(i as usize) else {
                    continue;
                };
                // A port whose egress queue is full waits (its packets stay in its device); one
                // with packets left from such a wait is due as soon as it may send again.
                if s.waits_for.is_some() || !(s.due(now) || s.has_tx()) {
                    continue;
                }
                let before = s.deadline();
                s.poll(now);
                let ingress = s.port;
                let grants = s.take_dns_grants();
                // Before the answers leave: the client's first packet meets the grants.
                crate::sim::resolver::apply_grants(&mut self.fwd.fabric, ingress, grants, now);
                while let Some(PortSlot::Sim(s)) = self.fwd.ports.get_mut(i as usize) {
                    if s.waits_for.is_some() {
                        s.schedule(now);
                        self.sims.scheduled(i, before, s.deadline(), now);
                        break;
                    }
                    let Some(len) = s.take_tx(&mut self.scratch[HEADROOM..]) else {
                        s.schedule(now);
                        self.sims.scheduled(i, before, s.deadline(), now);
                        break;
                    };
                    sent = true;
                    let _ = self.fwd.forward(
                        now,
                        ingress,
                        &mut self.scratch,
                        len,
                        PacketMeta::COMPLETE,
                    );
                }
            }
            // Ports this round's packets reached are polled by the next round.
            if !sent && self.fwd.sims_woken.is_empty() {
                break;
            }
        }
        self.sim_due = due;
    }
}

/// The largest packet an offload TUN port hands over, whatever its MTU (a superpacket).
const MAX_SUPERPACKET: usize = u16::MAX as usize;
/// Largest MTU a port may have (what [`Shell::max_mtu`] reports at most).
const MAX_MTU: usize = crate::topology::model::MAX_MTU as usize;

/// The size of every loop buffer for ports of at most `mtu`: the `virtio_net_hdr` headroom, the
/// largest superpacket or packet, and room for generated replies.
pub fn buffer_size(mtu: usize) -> usize {
    HEADROOM + mtu.max(MAX_SUPERPACKET) + MIN_BUFFER
}

/// Drops `ports` on a short-lived thread of their own.
fn close_in_background(ports: Vec<super::forward::TunPort>) {
    if ports.is_empty() {
        return;
    }
    // When no thread can be started, the closure (and the ports in it) is dropped right here.
    let _ = std::thread::Builder::new()
        .name("port close".into())
        .spawn(move || drop(ports));
}
