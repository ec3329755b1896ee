//! UDP through the uplink: one host `UdpSocket` per flow, bound like TCP (the EIP's `host_bind`
//! address, else unbound) and connected to the destination, so only that destination's replies
//! come back. Datagrams go out as they arrive; replies are wrapped in IPv4/UDP towards the
//! function (fragmented when longer than the MTU). A host socket that reports "connection
//! refused" (the destination answered a datagram with ICMP port unreachable) becomes a
//! port-unreachable error to the function. Flows end after `timeouts.udp_idle`.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
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

struct Flow {
    socket: UdpSocket,
    generation: u64,
    last_active: Instant,
    /// The IP and UDP headers of the flow's first datagram: what an error about the flow quotes.
    quote: [u8; MAX_QUOTE],
    quote_len: usize,
}

pub(crate) struct Udp {
    flows: HashMap<UplinkFlowKey, Flow>,
    deadlines: Deadlines<UplinkFlowKey>,
    next_generation: u64,
    /// Flows whose host socket keeps failing, closed at the end of the poll.
    broken: Vec<UplinkFlowKey>,
}

fn open_socket(ctx: &Ctx<'_>, key: UplinkFlowKey) -> io::Result<UdpSocket> {
    let bind = ctx
        .cfg
        .bind_for(*key.src.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    let socket = StdUdpSocket::bind(SocketAddr::from((bind, 0)))?;
    socket.connect(key.dst)?;
    socket.set_nonblocking(true)?;
    let _guard = ctx.runtime.enter();
    UdpSocket::from_std(socket)
}

impl Udp {
    pub(crate) fn new() -> Udp {
        Udp {
            flows: HashMap::new(),
            deadlines: Deadlines::new(),
            next_generation: 0,
            broken: Vec::new(),
        }
    }

    /// A datagram from the segment: sent on the flow's host socket (opened on first use).
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
            let socket = match open_socket(ctx, key) {
                Ok(s) => s,
                Err(_) => {
                    ctx.counters.drop(UplinkDrop::HostSocket);
                    return;
                }
            };
            self.next_generation += 1;
            let mut q = [0u8; MAX_QUOTE];
            let quote_len = quote.len().min(MAX_QUOTE);
            q[..quote_len].copy_from_slice(&quote[..quote_len]);
            self.flows.insert(
                key,
                Flow {
                    socket,
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
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_active = now;
        // Straight to the kernel: tokio's `try_send` waits for a writability event first, which
        // a fresh socket has not had yet. A full socket buffer drops the datagram, as UDP may.
        match socket2::SockRef::from(&flow.socket).send(payload) {
            Ok(n) => ctx.counters.bytes_to_host += n as u64,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // An earlier datagram was refused; this one may go through on a retry.
                unreachable(ctx, key, flow);
            }
            Err(_) => ctx.counters.drop(UplinkDrop::HostSocket),
        }
    }

    /// Passes replies waiting on host sockets to the segment, and ends idle flows.
    pub(crate) fn poll(&mut self, ctx: &mut Ctx<'_>, now: Instant, scratch: &mut [u8]) {
        for (key, flow) in &mut self.flows {
            let mut errors = 0;
            for _ in 0..RECV_BATCH {
                // The datagram lands behind room for its UDP header: the reply is built in place.
                match flow.socket.try_recv(&mut scratch[UDP_HEADER_ROOM..]) {
                    Ok(n) => {
                        flow.last_active = now;
                        ctx.counters.bytes_from_host += n as u64;
                        reply(ctx, *key, &mut scratch[..UDP_HEADER_ROOM + n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        unreachable(ctx, *key, flow);
                    }
                    Err(_) => {
                        // Pending socket errors are reported once each; a socket that keeps
                        // failing is closed rather than polled again and again.
                        errors += 1;
                        if errors >= MAX_ERRORS {
                            self.broken.push(*key);
                            break;
                        }
                    }
                }
            }
        }
        for key in self.broken.drain(..) {
            self.flows.remove(&key);
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
        self.flows
            .values()
            .any(|f| f.socket.poll_recv_ready(cx).is_ready())
    }

    pub(crate) fn count_active(&self, active: &mut ActiveFlows) {
        active.udp = self.flows.len();
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
