//! UDP through the uplink, following the NAT's mappings: one host `UdpSocket` per mapping (the
//! EIP address and port the fabric's NAT gave the function's socket), unconnected, bound to the
//! EIP's `host_bind` address (else every address) at the mapped port when the host has it free,
//! else at a port the host picks. Every destination of the mapping shares that port, so the
//! outside sees what the profile promises (an endpoint-independent mapping keeps one public port
//! for all destinations, RFC 4787 REQ-1), and a datagram from *any* outside sender reaches the
//! fabric, whose gateway then filters it by the profile's filtering behaviour exactly as
//! simulated traffic is filtered. Replies are wrapped in IPv4/UDP towards the function
//! (fragmented when longer than the MTU).
//!
//! The fast path: while the flow that opened a mapping lives, its datagrams go through a second
//! socket bound to the same address and port and `connect()`ed to that flow's destination
//! ([`Peer`]). A connected socket keeps its route (an unconnected `sendto()` looks it up per
//! datagram) and receives only its peer's datagrams; the kernel hands a datagram to the socket
//! that matches it best, so the peer's go to the connected one and every other sender's still
//! reach the mapping's socket, and the filtering stays the fabric's. The two share the port
//! through `SO_REUSEPORT`, set only for the bind of the second and cleared at once, so no other
//! socket of the host can join the port afterwards.
//!
//! Flows (mapping and destination) keep what an error quotes and their idle time; a mapping's
//! socket closes with its last flow (`timeouts.udp_idle`), the connected one with its flow. An
//! ICMP port unreachable from a destination (read off the socket's error queue, `IP_RECVERR`,
//! which names the destination) becomes a port-unreachable error to the function.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::task::Context;

use foldhash::fast::FixedState;
use smoltcp::wire::IpProtocol;
use tokio::net::UdpSocket;

use super::Ctx;
use super::counters::{ActiveFlows, UplinkDrop};
use super::expiry::Deadlines;
use super::packet::{
    MAX_QUOTE, UDP_HEADER_ROOM, UplinkFlowKey, icmp_error, ipv4_packets, udp_segment,
};
use crate::dataplane::icmp::IcmpError;
use crate::time::Instant;

/// Datagrams read from one host socket per poll (the rest wait for the next, which `ready`
/// asks for at once).
pub(crate) const RECV_BATCH: usize = 256;
/// Consecutive receive errors after which a host socket is given up.
pub(crate) const MAX_ERRORS: usize = 8;

/// The host socket of one NAT mapping.
struct Mapping {
    socket: UdpSocket,
    /// The connected socket of the flow that opened the mapping, while it lives.
    peer: Option<Peer>,
    /// Its flows (destinations) alive now; the socket closes with the last.
    flows: usize,
}

/// A second socket on a mapping's address and port, connected to one destination (see the
/// module docs): what that destination's datagrams go out through and come in on.
struct Peer {
    dst: SocketAddrV4,
    socket: UdpSocket,
}

struct Flow {
    generation: u64,
    last_active: Instant,
    /// The IP and UDP headers of the flow's first datagram: what an error about the flow quotes.
    quote: [u8; MAX_QUOTE],
    quote_len: usize,
}

pub(crate) struct Udp {
    /// By the mapping's public address and port (the source of what the function sends).
    mappings: HashMap<SocketAddrV4, Mapping, FixedState>,
    flows: HashMap<UplinkFlowKey, Flow, FixedState>,
    deadlines: Deadlines<UplinkFlowKey>,
    next_generation: u64,
    /// Mappings whose host socket keeps failing, closed at the end of the poll.
    broken: Vec<SocketAddrV4>,
    /// Mappings whose host socket got another port than the mapped one, for the NAT to learn.
    moves: Vec<PortMove>,
}

/// A mapping whose host socket is bound at another port than the mapped one (the host had that
/// one in use): `public`'s NAT sessions should take `port` (see [`super::Uplink::port_moved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMove {
    /// The mapping as the NAT gave it (EIP and port).
    pub public: SocketAddrV4,
    /// The port the host gave its socket.
    pub port: u16,
}

/// The host socket for the mapping `public` (an EIP and port): bound to the EIP's `host_bind`
/// address (else every address) at the mapped port, or at any port when that one is taken; not
/// connected; ICMP errors queued (`IP_RECVERR`) so that a refusal names its destination.
fn open_socket(ctx: &Ctx<'_>, public: SocketAddrV4) -> io::Result<UdpSocket> {
    let bind = ctx
        .cfg
        .bind_for(*public.ip())
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let socket = StdUdpSocket::bind(SocketAddr::from((bind, public.port())))
        .or_else(|_| StdUdpSocket::bind(SocketAddr::from((bind, 0))))?;
    registered(ctx, socket)
}

/// `socket` with `IP_RECVERR`, non-blocking, on the uplink's runtime.
fn registered(ctx: &Ctx<'_>, socket: StdUdpSocket) -> io::Result<UdpSocket> {
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
        .map_err(io::Error::from)?;
    socket.set_nonblocking(true)?;
    let _guard = ctx.runtime.enter();
    UdpSocket::from_std(socket)
}

/// A socket on `mapping`'s address and port connected to `dst`. `SO_REUSEPORT` is on for the
/// bind only (on both sockets), so the port is shared by these two and nobody else.
fn open_peer(ctx: &Ctx<'_>, mapping: &UdpSocket, dst: SocketAddrV4) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, SockRef, Socket, Type};
    let local = mapping.local_addr()?;
    let shared = SockRef::from(mapping);
    shared.set_reuse_port(true)?;
    let bound = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).and_then(|s| {
        s.set_reuse_port(true)?;
        s.bind(&local.into())?;
        s.set_reuse_port(false)?;
        Ok(s)
    });
    shared.set_reuse_port(false)?;
    let socket = bound?;
    socket.connect(&SocketAddr::V4(dst).into())?;
    registered(ctx, socket.into())
}

impl Udp {
    /// `seed` keys the flow tables' hasher (functions choose the keys: it must be
    /// unpredictable under `vpcd up`).
    pub(crate) fn new(seed: u64) -> Udp {
        Udp {
            mappings: HashMap::with_hasher(FixedState::with_seed(seed)),
            flows: HashMap::with_hasher(FixedState::with_seed(seed.rotate_left(17))),
            deadlines: Deadlines::new(),
            next_generation: 0,
            broken: Vec::new(),
            moves: Vec::new(),
        }
    }

    /// A datagram from the segment: sent on its mapping's host socket (opened on first use) to
    /// its destination.
    pub(crate) fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        key: UplinkFlowKey,
        payload: &[u8],
        quote: &[u8],
    ) {
        if ctx.cfg.is_blocked(*key.dst.ip()) {
            ctx.counters.drop(UplinkDrop::Blocked);
            let ident = ctx.next_ident();
            ctx.send(icmp_error(
                ctx.cfg.address,
                quote,
                IcmpError::AdminProhibited,
                ident,
            ));
            return;
        }
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.last_active = now;
        } else {
            if self.flows.len() >= ctx.cfg.limits.udp_flows {
                ctx.counters.drop(UplinkDrop::UdpFlowLimit);
                return;
            }
            let mapping = match self.mappings.entry(key.src) {
                Entry::Occupied(m) => m.into_mut(),
                Entry::Vacant(v) => match open_socket(ctx, key.src) {
                    Ok(socket) => {
                        if let Ok(SocketAddr::V4(a)) = socket.local_addr()
                            && a.port() != key.src.port()
                        {
                            self.moves.push(PortMove {
                                public: key.src,
                                port: a.port(),
                            });
                        }
                        v.insert(Mapping {
                            socket,
                            peer: None,
                            flows: 0,
                        })
                    }
                    Err(_) => {
                        ctx.counters.drop(UplinkDrop::HostSocket);
                        return;
                    }
                },
            };
            mapping.flows += 1;
            if mapping.peer.is_none() {
                // Without it the flow's datagrams take the unconnected socket: slower, not wrong.
                mapping.peer = open_peer(ctx, &mapping.socket, key.dst)
                    .ok()
                    .map(|socket| Peer {
                        dst: key.dst,
                        socket,
                    });
            }
            self.next_generation += 1;
            let mut q = [0u8; MAX_QUOTE];
            let quote_len = quote.len().min(MAX_QUOTE);
            q[..quote_len].copy_from_slice(&quote[..quote_len]);
            self.flows.insert(
                key,
                Flow {
                    generation: self.next_generation,
                    last_active: now,
                    quote: q,
                    quote_len,
                },
            );
            self.deadlines
                .schedule(now + ctx.cfg.timeouts.udp_idle, key, self.next_generation);
            ctx.counters.udp_opened += 1;
        }
        let Some(mapping) = self.mappings.get(&key.src) else {
            return;
        };
        // Straight to the kernel: tokio's `try_send_to` waits for a writability event first,
        // which a fresh socket has not had yet. A full socket buffer drops the datagram, as UDP
        // may; an error queued for an earlier datagram is read on the next poll.
        let (socket, to) = match &mapping.peer {
            Some(p) if p.dst == key.dst => (&p.socket, None),
            _ => (
                &mapping.socket,
                Some(socket2::SockAddr::from(SocketAddr::V4(key.dst))),
            ),
        };
        let send = || {
            let s = socket2::SockRef::from(socket);
            match &to {
                Some(to) => s.send_to(payload, to),
                None => s.send(payload),
            }
        };
        match send() {
            Ok(n) => ctx.counters.bytes_to_host += n as u64,
            Err(e) if is_icmp_error(&e) => {
                // The datagram was not sent for an earlier error: try once more after reading it.
                refusals(ctx, &self.flows, key.src, socket);
                if let Ok(n) = send() {
                    ctx.counters.bytes_to_host += n as u64;
                }
            }
            Err(_) => ctx.counters.drop(UplinkDrop::HostSocket),
        }
    }

    /// Passes what arrived on the mappings' host sockets to the segment — from whatever sender:
    /// the fabric filters it — and ends idle flows (and a mapping with its last flow).
    pub(crate) fn poll(&mut self, ctx: &mut Ctx<'_>, now: Instant, scratch: &mut [u8]) {
        for (public, mapping) in &self.mappings {
            let peer = mapping.peer.as_ref().map(|p| (&p.socket, Some(p.dst)));
            for (socket, from) in peer.into_iter().chain([(&mapping.socket, None)]) {
                if !receive(ctx, &mut self.flows, now, *public, socket, from, scratch) {
                    self.broken.push(*public);
                    break;
                }
            }
        }
        for public in self.broken.drain(..) {
            self.mappings.remove(&public);
            self.flows.retain(|k, _| k.src != public);
            ctx.counters.drop(UplinkDrop::HostSocket);
        }
        let idle = ctx.cfg.timeouts.udp_idle;
        while let Some((key, generation)) = self.deadlines.pop_due(now) {
            let Some(flow) = self.flows.get(&key) else {
                continue;
            };
            if flow.generation != generation {
                continue;
            }
            if flow.last_active + idle <= now {
                self.flows.remove(&key);
                ctx.counters.udp_expired += 1;
                if let Some(m) = self.mappings.get_mut(&key.src) {
                    m.flows = m.flows.saturating_sub(1);
                    if m.peer.as_ref().is_some_and(|p| p.dst == key.dst) {
                        m.peer = None;
                    }
                    if m.flows == 0 {
                        self.mappings.remove(&key.src);
                    }
                }
            } else {
                self.deadlines
                    .schedule(flow.last_active + idle, key, generation);
            }
        }
    }

    /// The next mapping whose host socket got another port (oldest first).
    pub(crate) fn take_move(&mut self) -> Option<PortMove> {
        if self.moves.is_empty() {
            None
        } else {
            Some(self.moves.remove(0))
        }
    }

    /// The NAT moved the mapping `from` to the port `to` (same EIP): its socket and flows are
    /// known by the new port from now on, so what the function sends from it and the replies
    /// towards it use the port the outside sees. An error about the flow quotes the new port.
    pub(crate) fn rekey(&mut self, from: SocketAddrV4, to: u16, idle: std::time::Duration) {
        let new = SocketAddrV4::new(*from.ip(), to);
        if self.mappings.contains_key(&new) {
            return;
        }
        let Some(m) = self.mappings.remove(&from) else {
            return;
        };
        self.mappings.insert(new, m);
        let keys: Vec<UplinkFlowKey> = self
            .flows
            .keys()
            .filter(|k| k.src == from)
            .copied()
            .collect();
        for key in keys {
            let Some(mut flow) = self.flows.remove(&key) else {
                continue;
            };
            requote(&mut flow, from.port(), to);
            let moved = UplinkFlowKey {
                src: new,
                dst: key.dst,
            };
            self.deadlines
                .schedule(flow.last_active + idle, moved, flow.generation);
            self.flows.insert(moved, flow);
        }
    }

    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Whether a host socket has a datagram (registers `cx` otherwise).
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        self.mappings.values().any(|m| {
            // Both are asked, so that both register `cx`.
            let peer = m
                .peer
                .as_ref()
                .is_some_and(|p| p.socket.poll_recv_ready(cx).is_ready());
            m.socket.poll_recv_ready(cx).is_ready() || peer
        })
    }

    pub(crate) fn count_active(&self, active: &mut ActiveFlows) {
        active.udp = self.flows.len();
    }

    /// The local address of the host socket behind the mapping `public`.
    pub(crate) fn host_socket(&self, public: SocketAddrV4) -> Option<SocketAddr> {
        self.mappings.get(&public)?.socket.local_addr().ok()
    }
}

/// Passes up to [`RECV_BATCH`] datagrams waiting on `socket` (one of the mapping `public`'s) to
/// the segment; `from` is the peer of a connected socket. False when the socket keeps failing.
fn receive(
    ctx: &mut Ctx<'_>,
    flows: &mut HashMap<UplinkFlowKey, Flow, FixedState>,
    now: Instant,
    public: SocketAddrV4,
    socket: &UdpSocket,
    from: Option<SocketAddrV4>,
    scratch: &mut [u8],
) -> bool {
    let mut errors = 0;
    for _ in 0..RECV_BATCH {
        // The datagram lands behind room for its UDP header: the reply is built in place.
        let buf = &mut scratch[UDP_HEADER_ROOM..];
        let got = match from {
            Some(peer) => socket.try_recv(buf).map(|n| (n, Some(peer))),
            None => socket.try_recv_from(buf).map(|(n, a)| match a {
                SocketAddr::V4(a) => (n, Some(a)),
                SocketAddr::V6(_) => (n, None),
            }),
        };
        match got {
            Ok((n, Some(from))) => {
                let key = UplinkFlowKey {
                    src: public,
                    dst: from,
                };
                if let Some(flow) = flows.get_mut(&key) {
                    flow.last_active = now;
                }
                ctx.counters.bytes_from_host += n as u64;
                reply(ctx, key, &mut scratch[..UDP_HEADER_ROOM + n]);
            }
            Ok((_, None)) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if is_icmp_error(&e) => refusals(ctx, flows, public, socket),
            Err(_) => {
                // Pending socket errors are reported once each; a socket that keeps failing is
                // closed rather than polled again and again.
                errors += 1;
                if errors >= MAX_ERRORS {
                    return false;
                }
            }
        }
    }
    true
}

/// The quoted UDP header's source port `from` becomes `to` (its checksum patched, RFC 1624).
fn requote(flow: &mut Flow, from: u16, to: u16) {
    let q = &mut flow.quote[..flow.quote_len];
    let Some(ihl) = q.first().map(|b| usize::from(b & 0x0f) * 4) else {
        return;
    };
    let Some(udp) = q.get_mut(ihl..ihl + 8) else {
        return;
    };
    udp[0..2].copy_from_slice(&to.to_be_bytes());
    let check = u16::from_be_bytes([udp[6], udp[7]]);
    if check != 0 {
        let c = crate::dataplane::checksum::update16(check, from, to);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
}

/// An error the kernel reports for an ICMP message about an earlier datagram (`IP_RECVERR`).
fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable
    ) || e.raw_os_error() == Some(nix::libc::ENETUNREACH)
}

/// Reads the ICMP errors queued on `socket` (one of the mapping `public`'s): a port unreachable
/// about a datagram to a destination of one of its flows becomes a port-unreachable error to the
/// function.
fn refusals(
    ctx: &mut Ctx<'_>,
    flows: &HashMap<UplinkFlowKey, Flow, FixedState>,
    public: SocketAddrV4,
    socket: &UdpSocket,
) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    let fd = socket.as_raw_fd();
    // Bounded: the queue holds what the kernel kept, at most a few per socket.
    for _ in 0..RECV_BATCH {
        let mut body = [0u8; 64];
        let mut iov = [io::IoSliceMut::new(&mut body)];
        let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in);
        let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
        let Ok(msg) = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), flags) else {
            return;
        };
        let Some(dst) = msg.address else { continue };
        let refused = msg.cmsgs().into_iter().flatten().any(|c| {
            matches!(c, ControlMessageOwned::Ipv4RecvErr(e, _)
                if e.ee_origin == nix::libc::SO_EE_ORIGIN_ICMP && e.ee_type == 3 && e.ee_code == 3)
        });
        let key = UplinkFlowKey {
            src: public,
            dst: SocketAddrV4::new(dst.ip(), dst.port()),
        };
        if let (true, Some(flow)) = (refused, flows.get(&key)) {
            unreachable(ctx, key, flow);
        }
    }
}

/// A datagram from the outside, towards the function: `seg` is [`UDP_HEADER_ROOM`] bytes of
/// room, then the payload.
fn reply(ctx: &mut Ctx<'_>, key: UplinkFlowKey, seg: &mut [u8]) {
    if udp_segment(key.dst, key.src, seg).is_none() {
        return;
    }
    let ident = ctx.next_ident();
    let mtu = ctx.wire.mtu();
    ipv4_packets(
        *key.dst.ip(),
        *key.src.ip(),
        IpProtocol::Udp,
        ident,
        seg,
        mtu,
        |header, body| ctx.send_parts(header, body),
    );
}

/// The destination refused the flow's datagrams: a port-unreachable error from it to the function.
fn unreachable(ctx: &mut Ctx<'_>, key: UplinkFlowKey, flow: &Flow) {
    ctx.counters.udp_unreachable += 1;
    let ident = ctx.next_ident();
    ctx.send(icmp_error(
        *key.dst.ip(),
        &flow.quote[..flow.quote_len],
        IcmpError::PortUnreachable,
        ident,
    ));
}
