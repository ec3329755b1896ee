//! `attach = "sim"` endpoints under `vpcd up`: a small smoltcp stack behind a
//! [`QueueDevice`], side by side with the TUN ports, on the wall clock.
//!
//! A VPC's resolver port is a sim port too, with port 53 answering DNS ([`SimPort::with_resolver`]).
//! A sim port answers ICMP echo, and an internet host serves what its `serve` list declares: each
//! `tcp:N` answers any request with a short plain HTTP/1.0 response and closes (so `curl` from a
//! namespace gets a page), each `udp:N` echoes datagrams. It is the same kind of stack `vpcd test`
//! simulates, but owned by the runtime: `vpcd::sim`'s hosts live on a virtual clock; the interface setup
//! ([`crate::sim::interface`]) is shared.

use std::net::Ipv4Addr;
use std::sync::Arc;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};

use crate::dns::View;
use crate::sim::resolver::{DnsService, FORWARD_POLL, QueryLog, Upstream};
use crate::sim::{QueueDevice, from_smol, interface, smol_instant};
use crate::tables::PortId;
use crate::time::Instant;
use crate::topology::model::{L4, Service};

/// Connections a TCP service accepts at once (one listening socket each).
const TCP_BACKLOG: usize = 4;
const TCP_BUFFER: usize = 16 * 1024;
const UDP_PACKETS: usize = 16;
const UDP_BUFFER: usize = 16 * 1024;

/// How a sim port is addressed (the simulator's type: same stack, same addressing).
pub use crate::sim::Addressing as SimAddressing;

enum Listener {
    Tcp { handle: SocketHandle, port: u16 },
    Udp { handle: SocketHandle },
}

/// One in-process endpoint.
pub struct SimPort {
    pub name: String,
    pub port: PortId,
    pub ip: Ipv4Addr,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    listeners: Vec<Listener>,
    /// A VPC resolver's port 53 (resolver ports only).
    dns: Option<DnsService>,
    /// Something was delivered since the last poll.
    dirty: bool,
    /// When its timers next need a poll.
    deadline: Option<Instant>,
    /// The TUN egress port whose queue its packets filled: what it sent waits in its device's
    /// transmit queue (not read, not dropped) until that queue has room.
    pub waits_for: Option<PortId>,
}

impl std::fmt::Debug for SimPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPort")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl SimPort {
    pub fn new(
        name: String,
        port: PortId,
        addressing: SimAddressing,
        services: &[Service],
        seed: u64,
        now: Instant,
    ) -> SimPort {
        let mut device = QueueDevice::new(addressing.mtu);
        let iface = interface(&mut device, &addressing, seed, now);
        let mut sockets = SocketSet::new(Vec::new());
        let mut listeners = Vec::new();
        for s in services {
            match s.proto {
                L4::Tcp => {
                    for _ in 0..TCP_BACKLOG {
                        let mut sock = tcp::Socket::new(
                            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
                            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
                        );
                        if sock.listen(s.port).is_ok() {
                            let handle = sockets.add(sock);
                            listeners.push(Listener::Tcp {
                                handle,
                                port: s.port,
                            });
                        }
                    }
                }
                L4::Udp => {
                    let mut sock = udp::Socket::new(
                        udp::PacketBuffer::new(
                            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                            vec![0; UDP_BUFFER],
                        ),
                        udp::PacketBuffer::new(
                            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                            vec![0; UDP_BUFFER],
                        ),
                    );
                    if sock.bind(s.port).is_ok() {
                        let handle = sockets.add(sock);
                        listeners.push(Listener::Udp { handle });
                    }
                }
                L4::Icmp => {}
            }
        }
        SimPort {
            name,
            port,
            ip: addressing.ip,
            iface,
            device,
            sockets,
            listeners,
            dns: None,
            dirty: true,
            deadline: None,
            waits_for: None,
        }
    }

    /// Makes this port a VPC resolver: port 53 over UDP and TCP answering from `view`, at its
    /// address and 169.254.169.253, forwarding other names to `upstream` and logging every
    /// answer to `log` when given.
    pub fn with_resolver(
        mut self,
        view: Arc<View>,
        upstream: Option<Box<dyn Upstream>>,
        log: Option<QueryLog>,
    ) -> SimPort {
        let mut dns = DnsService::new(view, &mut self.iface, &mut self.sockets);
        if let Some(u) = upstream {
            dns.forward_to(u);
        }
        if let Some(l) = log {
            dns.log_queries(l);
        }
        self.dns = Some(dns);
        self
    }

    /// The egress destinations its resolver's answers allowed since the last call.
    pub fn take_dns_grants(&mut self) -> Vec<crate::dns::egress::Grant> {
        self.dns
            .as_mut()
            .map_or_else(Vec::new, DnsService::take_grants)
    }

    /// Asks its resolver `query` on behalf of `asker` ([`DnsService::ask`]); `None` when it is
    /// not a resolver port. It is polled next (for a forwarded query's answer).
    pub fn ask_dns(
        &mut self,
        query: &[u8],
        asker: (Ipv4Addr, u16),
        now: Instant,
        later: crate::sim::resolver::AnswerTo,
    ) -> Option<Result<Option<crate::dns::Answered>, crate::dns::DnsDrop>> {
        let dns = self.dns.as_mut()?;
        self.dirty = true;
        Some(dns.ask(query, asker, now, later))
    }

    /// A resolver port's new names and zones, and the query log that knows its VPC's instances
    /// now ([`DnsService::set_view`]); what they replace, for the caller to free off the loop's
    /// thread (an old log holds the tables it was made for: every port's name). `None` when it is
    /// not a resolver port.
    pub fn set_dns_view(
        &mut self,
        view: Arc<View>,
        log: Option<QueryLog>,
    ) -> Option<(Arc<View>, Option<QueryLog>)> {
        let dns = self.dns.as_mut()?;
        let old_view = dns.set_view(view);
        let old_log = log.and_then(|l| dns.log_queries(l));
        Some((old_view, old_log))
    }

    /// What its resolver answered, for a resolver port.
    pub fn dns_counters(&self) -> Option<&crate::dns::Counters> {
        self.dns.as_ref().map(DnsService::counters)
    }

    /// Queues a packet the fabric delivered; `false` when the queue is full or it exceeds the MTU.
    pub fn deliver(&mut self, packet: &[u8]) -> bool {
        let queued = self.device.push_rx(packet);
        self.dirty |= queued;
        queued
    }

    /// Whether it needs a poll now: something was delivered, or its timers are due.
    pub fn due(&self, now: Instant) -> bool {
        self.dirty || self.deadline.is_some_and(|t| t <= now)
    }

    /// Whether packets it sent wait to be taken ([`SimPort::take_tx`]).
    pub fn has_tx(&self) -> bool {
        self.device.tx_len() > 0
    }

    /// Lets the stack process what arrived and its timers, and the services answer.
    pub fn poll(&mut self, now: Instant) {
        self.dirty = false;
        self.iface
            .poll(smol_instant(now), &mut self.device, &mut self.sockets);
        self.serve(now);
        self.iface
            .poll(smol_instant(now), &mut self.device, &mut self.sockets);
    }

    /// Moves the next packet the stack sent into `buf` (cut to its size), for the fabric;
    /// returns its length.
    pub fn take_tx(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.device.pop_tx(buf)
    }

    /// Records when the stack next needs a poll; call after draining [`SimPort::take_tx`].
    pub fn schedule(&mut self, now: Instant) {
        let stack = self
            .iface
            .poll_at(smol_instant(now), &self.sockets)
            .map(from_smol);
        // A resolver waiting for forwarded answers looks for them again soon.
        let forwards = self
            .dns
            .as_ref()
            .filter(|d| d.is_waiting())
            .map(|_| now + FORWARD_POLL);
        self.deadline = match (stack, forwards) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// When its timers next need a poll (see [`SimPort::schedule`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn serve(&mut self, now: Instant) {
        if let Some(dns) = &mut self.dns {
            dns.serve(&mut self.sockets, now);
        }
        let (name, ip) = (&self.name, self.ip);
        for l in &self.listeners {
            match *l {
                Listener::Tcp { handle, port } => {
                    let s = self.sockets.get_mut::<tcp::Socket>(handle);
                    if s.can_recv() {
                        let mut got = false;
                        while let Ok(n) = s.recv(|b| (b.len(), b.len())) {
                            if n == 0 {
                                break;
                            }
                            got = true;
                        }
                        if got && s.may_send() {
                            let body = format!("vpcd sim host {name} ({ip}) port {port}: hello\n");
                            let resp = format!(
                                "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.send_slice(resp.as_bytes());
                            s.close();
                        }
                    } else if !s.is_open() {
                        let _ = s.listen(port);
                    }
                }
                Listener::Udp { handle } => {
                    let s = self.sockets.get_mut::<udp::Socket>(handle);
                    let mut buf = [0u8; 2048];
                    while let Ok((n, meta)) = s.recv_slice(&mut buf) {
                        // From the address it was sent to (a host may have several).
                        let _ = s.send_slice(&buf[..n], meta);
                    }
                }
            }
        }
    }
}
