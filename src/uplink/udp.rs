//! UDP through the uplink, following the NAT's mappings: one host `UdpSocket` per mapping (the
//! EIP address and port the fabric's NAT gave the function's socket), unconnected, bound to the
//! EIP's `host_bind` address (else every address) at the mapped port when the host has it free,
//! else at a port the host picks. Every destination of the mapping shares that socket, so the
//! outside sees what the profile promises (an endpoint-independent mapping keeps one public port
//! for all destinations, RFC 4787 REQ-1), and a datagram from *any* outside sender reaches the
//! fabric, whose gateway then filters it by the profile's filtering behaviour exactly as
//! simulated traffic is filtered. Replies are wrapped in IPv4/UDP towards the function
//! (fragmented when longer than the MTU).
//!
//! Flows (mapping and destination) keep what an error quotes and their idle time; a mapping's
//! socket closes with its last flow (`timeouts.udp_idle`). An ICMP port unreachable from a
//! destination (read off the socket's error queue, `IP_RECVERR`, which names the destination)
//! becomes a port-unreachable error to the function.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::task::Context;

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
    /// Its flows (destinations) alive now; the socket closes with the last.
    flows: usize,
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
    mappings: HashMap<SocketAddrV4, Mapping>,
    flows: HashMap<UplinkFlowKey, Flow>,
    deadlines: Deadlines<UplinkFlowKey>,
    next_generation: u64,
    /// Mappings whose host socket keeps failing, closed at the end of the poll.
    broken: Vec<SocketAddrV4>,
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
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
        .map_err(io::Error::from)?;
    socket.set_nonblocking(true)?;
    let _guard = ctx.runtime.enter();
    UdpSocket::from_std(socket)
}

impl Udp {
    pub(crate) fn new() -> Udp {
        Udp {
            mappings: HashMap::new(),
            flows: HashMap::new(),
            deadlines: Deadlines::new(),
            next_generation: 0,
            broken: Vec::new(),
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
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= ctx.cfg.limits.udp_flows {
                ctx.counters.drop(UplinkDrop::UdpFlowLimit);
                return;
            }
            let mapping = match self.mappings.entry(key.src) {
                Entry::Occupied(m) => m.into_mut(),
                Entry::Vacant(v) => match open_socket(ctx, key.src) {
                    Ok(socket) => v.insert(Mapping { socket, flows: 0 }),
                    Err(_) => {
                        ctx.counters.drop(UplinkDrop::HostSocket);
                        return;
                    }
                },
            };
            mapping.flows += 1;
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
        let (Some(flow), Some(mapping)) = (self.flows.get_mut(&key), self.mappings.get(&key.src))
        else {
            return;
        };
        flow.last_active = now;
        // Straight to the kernel: tokio's `try_send_to` waits for a writability event first,
        // which a fresh socket has not had yet. A full socket buffer drops the datagram, as UDP
        // may; an error queued for an earlier datagram is read on the next poll.
        let to = socket2::SockAddr::from(SocketAddr::V4(key.dst));
        match socket2::SockRef::from(&mapping.socket).send_to(payload, &to) {
            Ok(n) => ctx.counters.bytes_to_host += n as u64,
            Err(e) if is_icmp_error(&e) => {
                // The datagram was not sent for an earlier error: try once more after reading it.
                refusals(ctx, &self.flows, key.src, mapping);
                if let Ok(n) = socket2::SockRef::from(&mapping.socket).send_to(payload, &to) {
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
            let mut errors = 0;
            for _ in 0..RECV_BATCH {
                // The datagram lands behind room for its UDP header: the reply is built in place.
                match mapping
                    .socket
                    .try_recv_from(&mut scratch[UDP_HEADER_ROOM..])
                {
                    Ok((n, SocketAddr::V4(from))) => {
                        let key = UplinkFlowKey {
                            src: *public,
                            dst: from,
                        };
                        if let Some(flow) = self.flows.get_mut(&key) {
                            flow.last_active = now;
                        }
                        ctx.counters.bytes_from_host += n as u64;
                        reply(ctx, key, &mut scratch[..UDP_HEADER_ROOM + n]);
                    }
                    Ok((_, SocketAddr::V6(_))) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if is_icmp_error(&e) => refusals(ctx, &self.flows, *public, mapping),
                    Err(_) => {
                        // Pending socket errors are reported once each; a socket that keeps
                        // failing is closed rather than polled again and again.
                        errors += 1;
                        if errors >= MAX_ERRORS {
                            self.broken.push(*public);
                            break;
                        }
                    }
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

    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Whether a host socket has a datagram (registers `cx` otherwise).
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        self.mappings
            .values()
            .any(|m| m.socket.poll_recv_ready(cx).is_ready())
    }

    pub(crate) fn count_active(&self, active: &mut ActiveFlows) {
        active.udp = self.flows.len();
    }

    /// The local address of the host socket behind the mapping `public`.
    pub(crate) fn host_socket(&self, public: SocketAddrV4) -> Option<SocketAddr> {
        self.mappings.get(&public)?.socket.local_addr().ok()
    }
}

/// An error the kernel reports for an ICMP message about an earlier datagram (`IP_RECVERR`).
fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable
    ) || e.raw_os_error() == Some(nix::libc::ENETUNREACH)
}

/// Reads the ICMP errors queued on `mapping`'s socket: a port unreachable about a datagram to a
/// destination of one of its flows becomes a port-unreachable error to the function.
fn refusals(
    ctx: &mut Ctx<'_>,
    flows: &HashMap<UplinkFlowKey, Flow>,
    public: SocketAddrV4,
    mapping: &Mapping,
) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    let fd = mapping.socket.as_raw_fd();
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
