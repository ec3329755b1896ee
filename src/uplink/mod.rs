//! The public uplink: packets that leave the public segment towards addresses no simulated host
//! owns are carried out through ordinary host sockets, and host listeners open flows into the
//! segment (issue 7).
//!
//! An [`Uplink`] is a port-like object, served by the loop like a sim port:
//!
//! - [`Uplink::deliver`] takes an IPv4 packet from the segment (any destination address);
//! - [`Uplink::poll`] lets everything run: finished host connects and accepted host connections,
//!   the segment-side TCP stack, the byte splices, UDP and echo replies, idle timeouts;
//! - [`Uplink::take_tx`] hands out packets towards the segment, one at a time;
//! - [`Uplink::poll_at`] says when the stack's timers next need a poll;
//! - [`Uplink::ready`] is a future that resolves when host sockets or tasks produced something,
//!   for the loop to `select!` on; poll after it resolves.
//!
//! TCP is terminated on the segment side by smoltcp and re-originated with host streams
//! ([`tcp`], [`splice`]); UDP uses a host socket per NAT mapping ([`udp`]); ICMP echo uses unprivileged
//! or raw ICMP sockets ([`icmp`]). Flows whose public source is an EIP with a `host_bind`
//! address bind their host sockets to it. Packets the uplink builds itself (RSTs for refused
//! connects, ICMP errors, UDP and echo replies) are pure functions in [`packet`]; idle timeouts
//! are a lazy deadline heap ([`expiry`]).
//!
//! Host I/O never blocks the caller: sockets are non-blocking and registered with the tokio
//! runtime current when [`Uplink::new`] ran; host connects that do not finish within their
//! `connect()` call and host listeners run as tasks on that runtime and report through an inbox. The clock is the caller's ([`crate::time::Instant`]);
//! connect timeouts are measured by the tasks on the runtime's clock.
//!
//! This module owns the host sockets and the segment-side stack; it does not look at the fabric's
//! tables (the fabric decides what reaches the uplink port, and applies NAT, security groups and
//! flow logs before and after).

mod config;
mod counters;
mod expiry;
mod icmp;
mod inbox;
mod packet;
#[doc(hidden)]
pub mod packet_fuzz;
mod splice;
mod tcp;
mod udp;

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;

pub use config::{IcmpMode, Limits, Listen, Timeouts, UplinkConfig, default_blocked};
pub use counters::{ActiveFlows, UplinkCounters, UplinkDrop};
pub use icmp::IcmpKind;
pub use packet::{EchoKey, UplinkFlowKey};
pub use udp::PortMove;

use crate::sim::{QueueDevice, TxFull};
use crate::time::Instant;
use icmp::Icmp;
use inbox::{Event, Inbox};
use packet::{Inbound, classify, quote_of};
use tcp::Tcp;
use udp::Udp;

/// Largest datagram a host socket returns (UDP or ICMP).
const SCRATCH: usize = 65536;
/// How long a host listener waits after a failed accept (out of descriptors) before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What the protocol relays share while the uplink runs one call.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a UplinkConfig,
    /// The segment side: the TCP stack's device, and the queue towards the segment.
    pub(crate) wire: &'a mut QueueDevice,
    /// The identification field of the last packet the uplink built itself.
    ident: &'a mut u16,
    pub(crate) counters: &'a mut UplinkCounters,
    pub(crate) runtime: &'a Handle,
    pub(crate) inbox: &'a Arc<Inbox>,
}

impl Ctx<'_> {
    /// Queues a built packet towards the segment (`None`: nothing was built).
    pub(crate) fn send(&mut self, packet: Option<Vec<u8>>) {
        if let Some(p) = packet {
            self.send_parts(&p, &[]);
        }
    }

    /// Queues the packet `header` then `body` towards the segment (one copy, into the queue).
    pub(crate) fn send_parts(&mut self, header: &[u8], body: &[u8]) {
        if !self.wire.push_tx_parts(header, body) {
            self.counters.drop(UplinkDrop::TxQueueFull);
        }
    }

    /// The identification field for the next packet the uplink builds.
    pub(crate) fn next_ident(&mut self) -> u16 {
        *self.ident = self.ident.wrapping_add(1);
        *self.ident
    }
}

/// The public uplink; see the module docs.
pub struct Uplink {
    cfg: UplinkConfig,
    runtime: Handle,
    /// The segment side; a full queue towards the segment makes the TCP stack wait.
    wire: QueueDevice,
    ident: u16,
    tcp: Tcp,
    udp: Udp,
    icmp: Icmp,
    inbox: Arc<Inbox>,
    /// The address each host listener is bound to (`cfg.listen` order), and its task.
    listeners: Vec<(SocketAddr, AbortHandle)>,
    counters: UplinkCounters,
    scratch: Box<[u8]>,
    events: Vec<Event>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("address", &self.cfg.address)
            .field("icmp", self.icmp.kind())
            .field("listeners", &self.listen_addrs())
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        for (_, task) in &self.listeners {
            task.abort();
        }
    }
}

impl Uplink {
    /// Builds the uplink on the tokio runtime this is called from (it must be called inside one)
    /// and binds the host listeners. `now` is the caller's clock. Fails with a message naming the
    /// problem: an invalid configuration, no runtime, a listener address that cannot be bound.
    pub fn new(config: UplinkConfig, now: Instant) -> io::Result<Uplink> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let runtime = Handle::try_current().map_err(|_| {
            io::Error::other("the uplink must be created inside a tokio runtime (it spawns tasks)")
        })?;
        let inbox = Arc::new(Inbox::default());
        let mut listeners = Vec::with_capacity(config.listen.len());
        for (i, l) in config.listen.iter().enumerate() {
            listeners.push(spawn_listener(
                &runtime,
                i,
                l,
                inbox.clone(),
                config.limits.pending_accepts,
            )?);
        }
        let mut wire = QueueDevice::with_limit(config.mtu, config.limits.tx_queue, TxFull::Wait);
        wire.receive_superpackets();
        let tcp = Tcp::new(config.address, config.seed, &mut wire, now);
        let udp = Udp::new(config.seed);
        let icmp = Icmp::new(config.icmp, &runtime);
        Ok(Uplink {
            cfg: config,
            runtime,
            wire,
            ident: 0,
            tcp,
            udp,
            icmp,
            inbox,
            listeners,
            counters: UplinkCounters::default(),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            events: Vec::new(),
        })
    }

    /// Takes an IPv4 packet from the segment towards the outside (any destination address).
    /// Packets the uplink cannot carry are counted by [`UplinkDrop`] reason. Call
    /// [`poll`](Self::poll) afterwards (once per batch is enough).
    pub fn deliver(&mut self, now: Instant, packet: &[u8]) {
        self.counters.packets_in += 1;
        let inbound = match classify(packet) {
            Ok(i) => i,
            Err(reason) => {
                self.counters.drop(reason);
                return;
            }
        };
        let (mut ctx, tcp, udp, icmp, _) = self.parts();
        match inbound {
            Inbound::Tcp { key, syn, rst } => tcp.deliver(&mut ctx, now, packet, key, syn, rst),
            Inbound::Udp {
                key,
                payload,
                quote,
            } => udp.deliver(&mut ctx, now, key, payload, quote),
            Inbound::EchoRequest { key, seq, payload } => {
                icmp.deliver(&mut ctx, now, key, seq, payload, quote_of(packet))
            }
        }
    }

    /// Runs everything that is due: results of host connects and listeners, the segment-side
    /// stack (input, timers, output), the splices between it and the host streams, UDP and echo
    /// replies, idle timeouts. Call it after [`deliver`](Self::deliver), when
    /// [`ready`](Self::ready) resolved, and at [`poll_at`](Self::poll_at); then drain
    /// [`take_tx`](Self::take_tx).
    pub fn poll(&mut self, now: Instant) {
        let backlog = self.inbox.take_backlog_drops();
        for _ in 0..backlog {
            self.counters.drop(UplinkDrop::IngressBacklog);
        }
        let mut events = std::mem::take(&mut self.events);
        self.inbox.drain_into(&mut events);
        let (mut ctx, tcp, udp, icmp, scratch) = self.parts();
        for event in events.drain(..) {
            match event {
                Event::Connected {
                    key,
                    generation,
                    result,
                } => tcp.connected(&mut ctx, now, key, generation, result),
                Event::Accepted {
                    listener,
                    stream,
                    peer,
                } => {
                    if let Some(l) = ctx.cfg.listen.get(listener) {
                        tcp.accepted(&mut ctx, now, l.target, stream, peer);
                    }
                }
            }
        }
        tcp.poll(&mut ctx, now);
        udp.poll(&mut ctx, now, scratch);
        icmp.poll(&mut ctx, now, scratch);
        self.events = events;
    }

    /// Moves the next packet towards the segment into `buf` (cut to its size); returns its
    /// length.
    pub fn take_tx(&mut self, buf: &mut [u8]) -> Option<usize> {
        let len = self.wire.pop_tx(buf)?;
        self.counters.packets_out += 1;
        Some(len)
    }

    /// Packets waiting for [`take_tx`](Self::take_tx).
    pub fn tx_len(&self) -> usize {
        self.wire.tx_len()
    }

    /// When the uplink next needs a [`poll`](Self::poll) without news from the host (a
    /// retransmission, a delayed ACK, an idle timeout), if ever. May be `now` or earlier.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        [
            self.tcp.poll_at(now),
            self.udp.poll_at(),
            self.icmp.poll_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Resolves when a host socket or task produced something for [`poll`](Self::poll): a host
    /// connect finished, a listener accepted, a host stream has bytes (or room) a flow waits for,
    /// a datagram or echo reply arrived. Cancel-safe: drop it and ask again after the next poll.
    /// Cost: one readiness check per open flow.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            if self.inbox.poll_ready(cx).is_ready()
                || self.tcp.poll_ready(cx)
                || self.udp.poll_ready(cx)
                || self.icmp.poll_ready(cx)
            {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The next UDP mapping whose host socket the host bound at another port than the mapped
    /// one (that port was in use on the host). The caller asks the fabric's NAT to move the
    /// mapping there and reports the answer with [`port_moved`](Self::port_moved).
    pub fn take_port_move(&mut self) -> Option<PortMove> {
        self.udp.take_move()
    }

    /// The NAT moved (`moved`) or kept the mapping of `m`: when moved, the uplink knows the
    /// mapping's socket and flows by the new port from now on.
    pub fn port_moved(&mut self, m: PortMove, moved: bool) {
        if moved {
            self.udp.rekey(m.public, m.port, self.cfg.timeouts.udp_idle);
        }
    }

    pub fn counters(&self) -> &UplinkCounters {
        &self.counters
    }

    /// The host socket a flow of the segment (`protocol` 6 or 17, from the mapping `public` to
    /// `remote`) leaves from: its local address as the outside sees it (`0.0.0.0` when bound to
    /// every address). For conntrack listings.
    pub fn host_socket(
        &self,
        protocol: u8,
        public: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Option<SocketAddr> {
        match protocol {
            6 => self.tcp.host_socket(UplinkFlowKey {
                src: public,
                dst: remote,
            }),
            17 => self.udp.host_socket(public),
            _ => None,
        }
    }

    /// Flows open now (a walk of the flow tables: for metrics, not per packet).
    pub fn active(&self) -> ActiveFlows {
        let mut a = ActiveFlows::default();
        self.tcp.count_active(&mut a);
        self.udp.count_active(&mut a);
        self.icmp.count_active(&mut a);
        a
    }

    /// Which ICMP socket kind carries echo requests, or why none does.
    pub fn icmp(&self) -> &IcmpKind {
        self.icmp.kind()
    }

    /// The addresses the host listeners are bound to, in `config.listen` order (with the port
    /// the kernel chose for port 0).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(a, _)| *a).collect()
    }

    pub fn config(&self) -> &UplinkConfig {
        &self.cfg
    }

    fn parts(&mut self) -> (Ctx<'_>, &mut Tcp, &mut Udp, &mut Icmp, &mut [u8]) {
        (
            Ctx {
                cfg: &self.cfg,
                wire: &mut self.wire,
                ident: &mut self.ident,
                counters: &mut self.counters,
                runtime: &self.runtime,
                inbox: &self.inbox,
            },
            &mut self.tcp,
            &mut self.udp,
            &mut self.icmp,
            &mut self.scratch,
        )
    }
}

/// Binds listener `index` and starts its accept task.
fn spawn_listener(
    runtime: &Handle,
    index: usize,
    l: &Listen,
    inbox: Arc<Inbox>,
    limit: usize,
) -> io::Result<(SocketAddr, AbortHandle)> {
    let named = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "host_listen {} (for {}): {e}; pick a free local address and port",
                l.host, l.target
            ),
        )
    };
    let std = std::net::TcpListener::bind(l.host).map_err(named)?;
    std.set_nonblocking(true).map_err(named)?;
    let addr = std.local_addr().map_err(named)?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(std).map_err(named)?
    };
    let task = runtime.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let event = Event::Accepted {
                        listener: index,
                        stream,
                        peer,
                    };
                    if let Err(Event::Accepted { stream, .. }) = inbox.push_accept(event, limit) {
                        splice::reset_host(&stream);
                        inbox.count_backlog_drop();
                    }
                }
                Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
            }
        }
    });
    Ok((addr, task.abort_handle()))
}
