//! Probes: one request/echo exchange between two simulated hosts, and its result.
//!
//! A probe adds sockets for itself, drives the network until the exchange completes or its deadline
//! passes, and removes its sockets again, so probes never see each other's state:
//! - **TCP**: the target listens; the prober connects, sends `vpcd-probe N`, and must read the same
//!   bytes back (handshake, data and echo all crossed the fabric).
//! - **UDP**: the target binds; the prober sends the payload and must get it echoed back.
//! - **ICMP**: the prober sends an echo request with the payload from an ICMP socket; every smoltcp
//!   interface answers echo itself, and the subnet gateway's echo is answered by the fabric.
//! - **The VPC resolver** (the prober's VPC's base + 2 or 169.254.169.253, port 53, TCP or UDP):
//!   the payload is a DNS query (over TCP with its length prefix, RFC 7766), and any DNS
//!   response with the query's id from the resolver's port completes the exchange, whatever its
//!   rcode: the resolver answers DNS, never echoes.
//!
//! Who listens: only the named endpoint when the probe names one (and only its answer counts, so a
//! same-address host in another tenant can never make an isolation probe pass); every host but the
//! prober when the probe gives an address (the answer may come through NAT). The observed result
//! is *allow* exactly when the exchange completed.

use std::fmt;
use std::net::Ipv4Addr;

use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr};

use super::network::{Network, Origin};
use crate::dataplane::{DropReason, PortId};
use crate::topology::model::{Expect, L4};

/// What a probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Observed {
    /// The exchange completed: the target answered with the bytes sent.
    Allow,
    /// It did not: dropped, refused, answered by someone else, or no answer before the deadline.
    Deny,
}

impl Observed {
    /// Whether this observation is what `expect` asked for.
    pub fn matches(self, expect: Expect) -> bool {
        matches!(
            (self, expect),
            (Observed::Allow, Expect::Allow) | (Observed::Deny, Expect::Deny)
        )
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Observed::Allow => "allow",
            Observed::Deny => "deny",
        })
    }
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The target echoed the payload back.
    Completed,
    /// Nothing came back before the deadline.
    TimedOut,
    /// The connection was reset (a TCP RST: nobody listens at the address the packet reached).
    Reset,
    /// An answer came from someone other than the named target (e.g. a same-address host).
    WrongResponder,
    /// An ICMP destination unreachable came back (no socket on that port, no route, too big).
    Unreachable,
    /// Bytes came back, but not the ones sent.
    Corrupted,
    /// The prober could not even open its socket (an internal limit; should not happen).
    NotSent,
}

impl Outcome {
    /// A short stable label (`snake_case`), for reports scripts read.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::TimedOut => "timed_out",
            Outcome::Reset => "reset",
            Outcome::WrongResponder => "wrong_responder",
            Outcome::Unreachable => "unreachable",
            Outcome::Corrupted => "corrupted",
            Outcome::NotSent => "not_sent",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Completed => "the target echoed the payload",
            Outcome::TimedOut => "timeout",
            Outcome::Reset => "connection reset",
            Outcome::WrongResponder => "not the named target",
            Outcome::Unreachable => "destination unreachable",
            Outcome::Corrupted => "the echo did not match the payload",
            Outcome::NotSent => "the probe could not be sent",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The probe's name (given, or `FROM -> TO`).
    pub name: String,
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub from: String,
    /// The target as written (`10.0.1.20:80/tcp`, `tenant-b/fn-b1/icmp`).
    pub to: String,
    pub expect: Expect,
    pub observed: Observed,
    pub outcome: Outcome,
    /// Who answered the prober: the target when the exchange completed; otherwise whoever sent
    /// the first packet back (a reset, an ICMP error, an echo from the wrong host). An endpoint
    /// name, or `fabric` for the subnet gateway and ICMP the fabric generated.
    pub answered_by: Option<String>,
    /// Drops the fabric counted while this probe ran, by reason, in counter order.
    pub drops: Vec<(DropReason, u64)>,
    /// Virtual time the exchange took: from its first packet until it completed or failed (at
    /// most [`super::PROBE_DEADLINE`]); zero when it was not sent.
    pub elapsed: std::time::Duration,
}

impl ProbeResult {
    /// Whether what was observed is what the probe expected.
    pub fn passed(&self) -> bool {
        self.observed.matches(self.expect)
    }
}

/// Everything an exchange needs to know about its probe.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Index into the network's hosts.
    pub prober: usize,
    pub proto: L4,
    pub to_addr: Ipv4Addr,
    /// The port the prober sends to (unused for ICMP).
    pub port: u16,
    /// Hosts that answer, with the port each listens on (after any DNAT).
    pub listeners: Vec<(usize, u16)>,
    /// The named target's port: only its answer counts.
    pub named: Option<PortId>,
    pub payload: Vec<u8>,
    /// The prober's local port (TCP, UDP) or echo identifier (ICMP).
    pub local: u16,
    /// The probe asks the VPC resolver: `payload` is a DNS query with this id.
    pub dns_id: Option<u16>,
}

const TCP_BUFFER: usize = 4096;
const UDP_PACKETS: usize = 4;
const UDP_BUFFER: usize = 4096;
const ECHO_SEQ: u16 = 1;

/// A probe in flight: its sockets, and what it has seen so far.
#[derive(Debug)]
pub(crate) struct Exchange {
    spec: Spec,
    client: SocketHandle,
    servers: Vec<(usize, SocketHandle)>,
    sent: bool,
    received: Vec<u8>,
    /// The port of the server host that received the payload (TCP, UDP).
    answered_by: Option<PortId>,
    /// Origin of the echo reply the prober received (ICMP).
    reply_origin: Option<Origin>,
    /// Origin of the first packet delivered to the prober: who reset, refused or answered.
    first_origin: Option<Origin>,
    /// Tapped packets already looked at.
    seen: usize,
    outcome: Option<Outcome>,
}

impl Exchange {
    /// Opens the sockets and sends the first packet (queued until the next poll).
    pub fn start(net: &mut Network, spec: Spec) -> Result<Exchange, Outcome> {
        // The client first: it is the only fallible part, and nothing is left behind if it fails.
        let prober = &mut net.hosts[spec.prober];
        let client = match spec.proto {
            L4::Tcp => {
                let mut s = tcp_socket();
                s.connect(
                    prober.iface.context(),
                    (IpAddress::Ipv4(spec.to_addr), spec.port),
                    spec.local,
                )
                .map_err(|_| Outcome::NotSent)?;
                prober.sockets.add(s)
            }
            L4::Udp => {
                let mut s = udp_socket();
                s.bind(spec.local).map_err(|_| Outcome::NotSent)?;
                s.send_slice(&spec.payload, (IpAddress::Ipv4(spec.to_addr), spec.port))
                    .map_err(|_| Outcome::NotSent)?;
                prober.sockets.add(s)
            }
            L4::Icmp => {
                let mut s = icmp_socket();
                s.bind(icmp::Endpoint::Ident(spec.local))
                    .map_err(|_| Outcome::NotSent)?;
                let request = Icmpv4Repr::EchoRequest {
                    ident: spec.local,
                    seq_no: ECHO_SEQ,
                    data: &spec.payload,
                };
                let mut bytes = vec![0; request.buffer_len()];
                request.emit(
                    &mut Icmpv4Packet::new_unchecked(&mut bytes[..]),
                    &ChecksumCapabilities::default(),
                );
                s.send_slice(&bytes, IpAddress::Ipv4(spec.to_addr))
                    .map_err(|_| Outcome::NotSent)?;
                prober.sockets.add(s)
            }
        };
        // Every interface answers echo by itself: ICMP needs no server socket.
        let mut servers = Vec::new();
        for &(h, port) in &spec.listeners {
            let sockets = &mut net.hosts[h].sockets;
            match spec.proto {
                L4::Tcp => {
                    let mut s = tcp_socket();
                    if s.listen(port).is_ok() {
                        servers.push((h, sockets.add(s)));
                    }
                }
                L4::Udp => {
                    let mut s = udp_socket();
                    if s.bind(port).is_ok() {
                        servers.push((h, sockets.add(s)));
                    }
                }
                L4::Icmp => {}
            }
        }
        net.set_tap(Some(net.hosts[spec.prober].port));
        Ok(Exchange {
            sent: spec.proto != L4::Tcp,
            spec,
            client,
            servers,
            received: Vec::new(),
            answered_by: None,
            reply_origin: None,
            first_origin: None,
            seen: 0,
            outcome: None,
        })
    }

    /// Lets the applications act after a network step: servers echo, the client sends and reads.
    /// Returns `true` once the exchange is over (either way).
    pub fn tick(&mut self, net: &mut Network) -> bool {
        if self.outcome.is_some() {
            return true;
        }
        self.watch_replies(net);
        match self.spec.proto {
            L4::Tcp => self.tick_tcp(net),
            L4::Udp => self.tick_udp(net),
            L4::Icmp => self.tick_icmp(net),
        }
        self.outcome.is_some()
    }

    fn tick_tcp(&mut self, net: &mut Network) {
        for &(h, handle) in &self.servers {
            let port = net.hosts[h].port;
            let s = net.hosts[h].sockets.get_mut::<tcp::Socket>(handle);
            let mut chunk = [0u8; 512];
            while s.can_recv() && s.can_send() {
                match s.recv_slice(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        self.answered_by = Some(port);
                        // The echo fits: the send buffer is larger than any probe payload.
                        let _ = s.send_slice(&chunk[..n]);
                    }
                }
            }
        }
        let c = net.hosts[self.spec.prober]
            .sockets
            .get_mut::<tcp::Socket>(self.client);
        if !self.sent && c.may_send() {
            self.sent = c.send_slice(&self.spec.payload).is_ok();
        }
        let mut chunk = [0u8; 512];
        while c.can_recv() {
            match c.recv_slice(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
            }
        }
        if let Some(id) = self.spec.dns_id {
            if let Some(message) = framed(&self.received) {
                self.outcome = Some(self.judge_dns(message, id));
            } else if c.state() == tcp::State::Closed {
                self.outcome = Some(Outcome::Reset);
            }
        } else if self.received.len() >= self.spec.payload.len() {
            self.outcome = Some(self.judge_echo());
        } else if c.state() == tcp::State::Closed {
            self.outcome = Some(Outcome::Reset);
        }
    }

    fn tick_udp(&mut self, net: &mut Network) {
        for &(h, handle) in &self.servers {
            let port = net.hosts[h].port;
            let s = net.hosts[h].sockets.get_mut::<udp::Socket>(handle);
            while s.can_recv() {
                let Ok((data, meta)) = s.recv() else { break };
                let data = data.to_vec();
                self.answered_by = Some(port);
                // From the address it was sent to (a host may have several).
                let _ = s.send_slice(&data, meta);
            }
        }
        let c = net.hosts[self.spec.prober]
            .sockets
            .get_mut::<udp::Socket>(self.client);
        if let Ok((data, _)) = c.recv() {
            self.received = data.to_vec();
            self.outcome = Some(match self.spec.dns_id {
                Some(id) => self.judge_dns(&self.received, id),
                None => self.judge_echo(),
            });
        }
    }

    /// Looks at what reached the prober since the last tick: who answered, an echo reply, a
    /// destination-unreachable (which ends the exchange: nobody will answer).
    fn watch_replies(&mut self, net: &Network) {
        let ident = self.spec.local;
        for d in net.tapped().iter().skip(self.seen) {
            self.seen += 1;
            self.first_origin.get_or_insert(d.origin);
            match classify(&d.packet, ident) {
                Answer::Echo => {
                    self.reply_origin.get_or_insert(d.origin);
                }
                Answer::Unreachable => {
                    self.first_origin = Some(d.origin);
                    self.outcome.get_or_insert(Outcome::Unreachable);
                }
                Answer::Other => {}
            }
        }
    }

    fn tick_icmp(&mut self, net: &mut Network) {
        let ident = self.spec.local;
        let c = net.hosts[self.spec.prober]
            .sockets
            .get_mut::<icmp::Socket>(self.client);
        while let Ok((bytes, _from)) = c.recv() {
            let Ok(packet) = Icmpv4Packet::new_checked(bytes) else {
                continue;
            };
            let Ok(Icmpv4Repr::EchoReply {
                ident: i,
                seq_no,
                data,
            }) = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default())
            else {
                continue;
            };
            if i == ident && seq_no == ECHO_SEQ {
                self.received = data.to_vec();
                self.outcome = Some(self.judge_echo());
                return;
            }
        }
    }

    /// The payload came back: from the right host, with the right bytes?
    fn judge_echo(&self) -> Outcome {
        if self.received != self.spec.payload {
            return Outcome::Corrupted;
        }
        match (self.spec.named, self.responder()) {
            (Some(named), Some(Origin::Port(p))) if p == named => Outcome::Completed,
            (Some(_), _) => Outcome::WrongResponder,
            (None, _) => Outcome::Completed,
        }
    }

    /// A DNS response to query `id` came back: from the named resolver?
    fn judge_dns(&self, message: &[u8], id: u16) -> Outcome {
        let answered = hickory_proto::op::Message::from_vec(message).is_ok_and(|m| {
            m.metadata.id == id
                && m.metadata.message_type == hickory_proto::op::MessageType::Response
        });
        if !answered {
            return Outcome::Corrupted;
        }
        match (self.spec.named, self.first_origin) {
            (Some(named), Some(Origin::Port(p))) if p == named => Outcome::Completed,
            _ => Outcome::WrongResponder,
        }
    }

    /// Who answered, as far as the exchange knows.
    fn responder(&self) -> Option<Origin> {
        match self.spec.proto {
            L4::Icmp => self.reply_origin,
            // The resolver has no probe socket: the packets that came back say who it was.
            L4::Tcp | L4::Udp if self.spec.dns_id.is_some() => self.first_origin,
            L4::Tcp | L4::Udp => self.answered_by.map(Origin::Port),
        }
    }

    /// Removes the sockets and returns how it ended and who answered.
    pub fn finish(self, net: &mut Network) -> (Outcome, Option<Origin>) {
        let outcome = self.outcome.unwrap_or(Outcome::TimedOut);
        let responder = match outcome {
            Outcome::Completed => self.responder(),
            _ => self.first_origin,
        };
        for (h, handle) in self.servers {
            net.hosts[h].sockets.remove(handle);
        }
        net.hosts[self.spec.prober].sockets.remove(self.client);
        net.set_tap(None);
        (outcome, responder)
    }
}

/// What a packet delivered to the prober means for the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// An ICMP echo reply with the probe's identifier and sequence.
    Echo,
    /// An ICMP destination unreachable (port, host, network, fragmentation needed).
    Unreachable,
    Other,
}

fn classify(packet: &[u8], ident: u16) -> Answer {
    let caps = ChecksumCapabilities::default();
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return Answer::Other;
    };
    match Ipv4Repr::parse(&ip, &caps) {
        Ok(repr) if repr.next_header == IpProtocol::Icmp => {}
        _ => return Answer::Other,
    }
    let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
        return Answer::Other;
    };
    match Icmpv4Repr::parse(&icmp, &caps) {
        Ok(Icmpv4Repr::EchoReply {
            ident: i,
            seq_no: ECHO_SEQ,
            ..
        }) if i == ident => Answer::Echo,
        Ok(Icmpv4Repr::DstUnreachable { .. }) => Answer::Unreachable,
        _ => Answer::Other,
    }
}

/// The message of a length-prefixed TCP stream (RFC 7766) once it arrived whole.
fn framed(stream: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes([*stream.first()?, *stream.get(1)?]));
    stream.get(2..2 + len)
}

/// A DNS query for `name`'s SOA with `id`, as a probe of the resolver sends it (`tcp`: with the
/// length prefix).
pub(crate) fn dns_probe_query(name: hickory_proto::rr::Name, id: u16, tcp: bool) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, hickory_proto::rr::RecordType::SOA));
    let query = m.to_vec().unwrap_or_default();
    if !tcp {
        return query;
    }
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    framed
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    )
}

fn udp_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0; UDP_BUFFER],
        ),
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0; UDP_BUFFER],
        ),
    )
}

fn icmp_socket() -> icmp::Socket<'static> {
    icmp::Socket::new(
        icmp::PacketBuffer::new(
            vec![icmp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0; UDP_BUFFER],
        ),
        icmp::PacketBuffer::new(
            vec![icmp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0; UDP_BUFFER],
        ),
    )
}
