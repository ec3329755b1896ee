//! ICMP echo through the uplink.
//!
//! With unprivileged ICMP sockets (`SOCK_DGRAM`/`IPPROTO_ICMP`, allowed when the process's group
//! is in `net.ipv4.ping_group_range`) each echo flow gets its own socket connected to the
//! destination; the kernel picks the identifier on the wire and gives the replies to that socket
//! only. Without them, a raw ICMP socket (root or `CAP_NET_RAW`) is shared: the uplink picks an
//! identifier per flow, unique per destination, and sorts replies by source and identifier. Either
//! way the function gets its replies back with its own identifier and sequence number. When
//! neither kind can be opened, echo requests are counted as dropped with
//! [`UplinkDrop::IcmpUnavailable`] and [`Uplink::icmp`](super::Uplink::icmp) says why.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::task::Context;

use smoltcp::wire::IpProtocol;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::runtime::Handle;

use super::Ctx;
use super::config::IcmpMode;
use super::counters::{ActiveFlows, UplinkDrop};
use super::expiry::Deadlines;
use super::packet::{
    EchoKey, echo_message, icmp_error, ipv4_packets, parse_echo_reply, parse_raw_echo_reply,
};
use super::udp::{MAX_ERRORS, RECV_BATCH};
use crate::dataplane::icmp::IcmpError;
use crate::time::Instant;

/// Which host socket kind carries echo requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcmpKind {
    /// Unprivileged ICMP sockets, one per flow.
    Datagram,
    /// One raw ICMP socket per bind address, shared by the flows.
    Raw,
    /// Neither; the text says why and what to change.
    Unavailable(String),
}

/// An ICMP socket of `kind`, bound to `bind` and connected to `peer` when given, registered with
/// the runtime.
fn host_socket(
    kind: Type,
    bind: Option<Ipv4Addr>,
    peer: Option<Ipv4Addr>,
    runtime: &Handle,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, kind, Some(Protocol::ICMPV4))?;
    if let Some(addr) = bind {
        socket.bind(&SocketAddr::from((addr, 0)).into())?;
    }
    if let Some(addr) = peer {
        socket.connect(&SocketAddr::from((addr, 0)).into())?;
    }
    socket.set_nonblocking(true)?;
    let _guard = runtime.enter();
    // Only the datagram calls of `UdpSocket` are used: send, recv and their readiness.
    UdpSocket::from_std(StdUdpSocket::from(socket))
}

fn unavailable(mode: IcmpMode, dgram: Option<io::Error>, raw: Option<io::Error>) -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let mut why = Vec::new();
    if let Some(e) = dgram {
        why.push(format!(
            "unprivileged ICMP sockets: {e} (net.ipv4.ping_group_range is `{range}`; widen it to \
             include this process's group)"
        ));
    }
    if let Some(e) = raw {
        why.push(format!("raw ICMP socket: {e} (needs root or CAP_NET_RAW)"));
    }
    if mode == IcmpMode::Off {
        why.push("ICMP is off in the uplink configuration".into());
    }
    why.join("; ")
}

struct RawSocket {
    bind: Option<Ipv4Addr>,
    socket: UdpSocket,
}

enum Host {
    Datagram(UdpSocket),
    Raw { socket: usize, ident: u16 },
}

struct Flow {
    generation: u64,
    last_active: Instant,
    host: Host,
}

pub(crate) struct Icmp {
    kind: IcmpKind,
    flows: HashMap<EchoKey, Flow>,
    deadlines: Deadlines<EchoKey>,
    next_generation: u64,
    raw: Vec<RawSocket>,
    /// Raw mode: `(destination, identifier on the wire)` -> flow.
    by_wire: HashMap<(Ipv4Addr, u16), EchoKey>,
    next_ident: u16,
}

impl Icmp {
    /// Finds the socket kind `mode` allows and this process may open.
    pub(crate) fn new(mode: IcmpMode, runtime: &Handle) -> Icmp {
        let mut raw = Vec::new();
        let kind = match mode {
            IcmpMode::Off => IcmpKind::Unavailable(unavailable(mode, None, None)),
            IcmpMode::Datagram => match host_socket(Type::DGRAM, None, None, runtime) {
                Ok(_) => IcmpKind::Datagram,
                Err(e) => IcmpKind::Unavailable(unavailable(mode, Some(e), None)),
            },
            IcmpMode::Raw => match host_socket(Type::RAW, None, None, runtime) {
                Ok(socket) => {
                    raw.push(RawSocket { bind: None, socket });
                    IcmpKind::Raw
                }
                Err(e) => IcmpKind::Unavailable(unavailable(mode, None, Some(e))),
            },
            IcmpMode::Auto => match host_socket(Type::DGRAM, None, None, runtime) {
                Ok(_) => IcmpKind::Datagram,
                Err(de) => match host_socket(Type::RAW, None, None, runtime) {
                    Ok(socket) => {
                        raw.push(RawSocket { bind: None, socket });
                        IcmpKind::Raw
                    }
                    Err(re) => IcmpKind::Unavailable(unavailable(mode, Some(de), Some(re))),
                },
            },
        };
        Icmp {
            kind,
            flows: HashMap::new(),
            deadlines: Deadlines::new(),
            next_generation: 0,
            raw,
            by_wire: HashMap::new(),
            next_ident: 0,
        }
    }

    pub(crate) fn kind(&self) -> &IcmpKind {
        &self.kind
    }

    /// An echo request from the segment.
    pub(crate) fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        key: EchoKey,
        seq: u16,
        payload: &[u8],
        quote: &[u8],
    ) {
        if matches!(self.kind, IcmpKind::Unavailable(_)) {
            ctx.counters.drop(UplinkDrop::IcmpUnavailable);
            return;
        }
        if ctx.cfg.is_blocked(key.dst) {
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
        if !self.flows.contains_key(&key) && !self.open(ctx, now, key) {
            return;
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_active = now;
        // Sends go straight to the kernel (tokio's `try_send` waits for a writability event a
        // fresh socket has not had yet); a full buffer drops the request.
        let sent = match &flow.host {
            // The kernel writes its own identifier and checksum.
            Host::Datagram(s) => {
                socket2::SockRef::from(s).send(&echo_message(false, 0, seq, payload))
            }
            Host::Raw { socket, ident } => match self.raw.get(*socket) {
                Some(r) => socket2::SockRef::from(&r.socket).send_to(
                    &echo_message(false, *ident, seq, payload),
                    &SocketAddr::from((key.dst, 0)).into(),
                ),
                None => Err(io::ErrorKind::NotFound.into()),
            },
        };
        match sent {
            Ok(_) => {
                ctx.counters.echo_requests += 1;
                ctx.counters.bytes_to_host += payload.len() as u64;
            }
            Err(_) => ctx.counters.drop(UplinkDrop::HostSocket),
        }
    }

    /// Opens the host side of a new echo flow; `false` (counted) if it cannot.
    fn open(&mut self, ctx: &mut Ctx<'_>, now: Instant, key: EchoKey) -> bool {
        if self.flows.len() >= ctx.cfg.limits.icmp_flows {
            ctx.counters.drop(UplinkDrop::IcmpFlowLimit);
            return false;
        }
        let bind = ctx.cfg.bind_for(key.src);
        let host = match self.kind {
            IcmpKind::Datagram => {
                match host_socket(Type::DGRAM, bind, Some(key.dst), ctx.runtime) {
                    Ok(s) => Host::Datagram(s),
                    Err(_) => {
                        ctx.counters.drop(UplinkDrop::HostSocket);
                        return false;
                    }
                }
            }
            IcmpKind::Raw => {
                let Some(socket) = self.raw_socket(bind, ctx.runtime) else {
                    ctx.counters.drop(UplinkDrop::HostSocket);
                    return false;
                };
                let Some(ident) = self.free_ident(key.dst) else {
                    ctx.counters.drop(UplinkDrop::IcmpFlowLimit);
                    return false;
                };
                self.by_wire.insert((key.dst, ident), key);
                Host::Raw { socket, ident }
            }
            IcmpKind::Unavailable(_) => return false,
        };
        self.next_generation += 1;
        self.flows.insert(
            key,
            Flow {
                generation: self.next_generation,
                last_active: now,
                host,
            },
        );
        self.deadlines
            .schedule(now + ctx.cfg.timeouts.icmp_idle, key, self.next_generation);
        ctx.counters.icmp_opened += 1;
        true
    }

    /// The raw socket bound to `bind`, opened on first use.
    fn raw_socket(&mut self, bind: Option<Ipv4Addr>, runtime: &Handle) -> Option<usize> {
        if let Some(i) = self.raw.iter().position(|r| r.bind == bind) {
            return Some(i);
        }
        let socket = host_socket(Type::RAW, bind, None, runtime).ok()?;
        self.raw.push(RawSocket { bind, socket });
        Some(self.raw.len() - 1)
    }

    /// An identifier no other raw-mode flow to `dst` uses.
    fn free_ident(&mut self, dst: Ipv4Addr) -> Option<u16> {
        for _ in 0..=u16::MAX {
            self.next_ident = self.next_ident.wrapping_add(1);
            if !self.by_wire.contains_key(&(dst, self.next_ident)) {
                return Some(self.next_ident);
            }
        }
        None
    }

    /// Passes echo replies to the segment and ends idle flows.
    pub(crate) fn poll(&mut self, ctx: &mut Ctx<'_>, now: Instant, scratch: &mut [u8]) {
        for (key, flow) in &mut self.flows {
            let Host::Datagram(s) = &flow.host else {
                continue;
            };
            let mut errors = 0;
            for _ in 0..RECV_BATCH {
                match s.try_recv(scratch) {
                    Ok(n) => {
                        if let Some((_, seq, payload)) = parse_echo_reply(&scratch[..n]) {
                            flow.last_active = now;
                            reply(ctx, *key, seq, payload);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error about an earlier request, reported once: read on.
                    Err(_) => {
                        errors += 1;
                        if errors >= MAX_ERRORS {
                            break;
                        }
                    }
                }
            }
        }
        for (i, r) in self.raw.iter().enumerate() {
            for _ in 0..RECV_BATCH {
                let n = match r.socket.try_recv_from(scratch) {
                    Ok((n, _)) => n,
                    Err(_) => break,
                };
                let Some((src, ident, seq, payload)) = parse_raw_echo_reply(&scratch[..n]) else {
                    continue;
                };
                let Some(key) = self.by_wire.get(&(src, ident)) else {
                    continue;
                };
                if let Some(flow) = self.flows.get_mut(key)
                    && matches!(flow.host, Host::Raw { socket, .. } if socket == i)
                {
                    flow.last_active = now;
                    reply(ctx, *key, seq, payload);
                }
            }
        }
        self.expire(ctx, now);
    }

    fn expire(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let idle = ctx.cfg.timeouts.icmp_idle;
        while let Some((key, generation)) = self.deadlines.pop_due(now) {
            let Some(flow) = self.flows.get(&key) else {
                continue;
            };
            if flow.generation != generation {
                continue;
            }
            if flow.last_active + idle > now {
                self.deadlines
                    .schedule(flow.last_active + idle, key, generation);
                continue;
            }
            if let Some(Flow {
                host: Host::Raw { ident, .. },
                ..
            }) = self.flows.remove(&key)
            {
                self.by_wire.remove(&(key.dst, ident));
            }
            ctx.counters.icmp_expired += 1;
        }
    }

    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Whether a host socket has a reply (registers `cx` otherwise).
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        let flows = self.flows.values().any(|f| match &f.host {
            Host::Datagram(s) => s.poll_recv_ready(cx).is_ready(),
            Host::Raw { .. } => false,
        });
        flows
            || self
                .raw
                .iter()
                .any(|r| r.socket.poll_recv_ready(cx).is_ready())
    }

    pub(crate) fn count_active(&self, active: &mut ActiveFlows) {
        active.icmp = self.flows.len();
    }
}

/// An echo reply towards the function, with its identifier.
fn reply(ctx: &mut Ctx<'_>, key: EchoKey, seq: u16, payload: &[u8]) {
    ctx.counters.echo_replies += 1;
    ctx.counters.bytes_from_host += payload.len() as u64;
    let message = echo_message(true, key.ident, seq, payload);
    let ident = ctx.next_ident();
    let mtu = ctx.wire.mtu();
    ipv4_packets(
        key.dst,
        key.src,
        IpProtocol::Icmp,
        ident,
        &message,
        mtu,
        |header, body| ctx.send_parts(header, body),
    );
}
