//! TCP through the uplink: connections are terminated on the segment side by a smoltcp stack that
//! accepts any destination address (`any_ip`), and re-originated on the host with a
//! `tokio::net::TcpStream`; the bytes are spliced between the two ([`super::splice`]).
//!
//! Egress (a function connects out): the host connect starts (non-blocking) when the function's
//! SYN arrives; when it does not finish within that call, the SYN is held while a task waits for
//! it. A refused connect answers the SYN with a RST at once (the function sees "connection
//! refused"), a timeout or an unreachable host with the matching ICMP error; a connect that
//! succeeds opens a listening socket for exactly that destination and releases the SYN into it,
//! so the function's handshake completes only when the outside one did.
//!
//! Ingress (`host_listen`): a connection accepted on a host listener becomes a smoltcp connection
//! into the segment whose source is the real client address and port.
//!
//! Flows are keyed by [`UplinkFlowKey`] (function side first); each holds at most two buffers of
//! `limits.tcp_buffer` bytes. Idle flows are reset on both sides after `timeouts.tcp_idle`.
//!
//! The sockets of ended flows are kept (closed, up to [`SPARE_SOCKETS`]) and reused by new flows:
//! a fresh socket zeroes two buffers of `limits.tcp_buffer` bytes, which cost a new connection
//! more than the rest of its setup.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::Ctx;
use super::counters::{ActiveFlows, UplinkDrop};
use super::expiry::Deadlines;
use super::inbox::{Event, Inbox};
use super::packet::{UplinkFlowKey, icmp_error, quote_of, tcp_reset_for};
use super::splice::{Ending, Splice, smol_duration};
use crate::dataplane::icmp::IcmpError;
use crate::sim::QueueDevice;
use crate::sim::{from_smol, smol_instant};
use crate::time::Instant;

/// How a failed host connect is answered to the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectAnswer {
    /// A RST: "connection refused".
    Reset,
    /// An ICMP destination-unreachable error.
    Icmp(IcmpError),
}

/// The answer to a host connect that failed with `kind` (sans-IO, so it is tested as a table).
pub(crate) fn answer_for(kind: io::ErrorKind) -> ConnectAnswer {
    match kind {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => ConnectAnswer::Reset,
        io::ErrorKind::NetworkUnreachable => ConnectAnswer::Icmp(IcmpError::NetUnreachable),
        io::ErrorKind::PermissionDenied | io::ErrorKind::AddrNotAvailable => {
            ConnectAnswer::Icmp(IcmpError::AdminProhibited)
        }
        _ => ConnectAnswer::Icmp(IcmpError::HostUnreachable),
    }
}

/// `connect()` on a non-blocking socket that has not finished yet (Linux's errno; the stable
/// `io::ErrorKind` has no name for it).
const EINPROGRESS: i32 = 115;

/// How a non-blocking host connect started.
enum Start {
    /// Connected already (or failed): to this host and to directly attached peers the kernel
    /// usually completes the handshake within the `connect()` call.
    Done(io::Result<std::net::TcpStream>),
    /// Still in progress: finish it with [`finish_connect`].
    Pending(Socket),
}

/// Starts a non-blocking connect to `dst` from the NAT mapping's port `port` at `bind` (the
/// EIP's `host_bind`, else every address), with `TCP_NODELAY` set, so that the outside sees the
/// mapping's port (RFC 5382 REQ-1). `SO_REUSEADDR` lets the flows of one mapping share the port
/// towards different destinations. When the host has the port in use (a listener, or the same
/// destination already connected from it), the connect goes out from a port the host picks: the
/// one thing that cannot be kept.
fn start_connect(bind: Option<Ipv4Addr>, port: u16, dst: SocketAddrV4) -> Start {
    let attempt = |port: u16| -> io::Result<Start> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
        socket.set_tcp_nodelay(true)?;
        if port != 0 || bind.is_some() {
            socket.set_reuse_address(port != 0)?;
            let addr = bind.unwrap_or(Ipv4Addr::UNSPECIFIED);
            socket.bind(&SocketAddr::from((addr, port)).into())?;
        }
        match socket.connect(&SocketAddr::V4(dst).into()) {
            Ok(()) => return Ok(Start::Done(Ok(socket.into()))),
            Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        Ok(match socket.peer_addr() {
            Ok(_) => Start::Done(Ok(socket.into())),
            Err(_) => Start::Pending(socket),
        })
    };
    let taken = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
        )
    };
    match attempt(port) {
        Err(e) if port != 0 && taken(&e) => attempt(0),
        other => other,
    }
    .unwrap_or_else(|e| Start::Done(Err(e)))
}

/// Waits (within `timeout`; `TimedOut` past it) for a connect [`start_connect`] left pending.
async fn finish_connect(socket: Socket, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::from_std(socket.into())?;
    tokio::time::timeout(timeout, stream.writable())
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.peer_addr()?;
    Ok(stream)
}

/// Closed sockets kept for reuse; more are dropped (each holds two `limits.tcp_buffer` buffers).
const SPARE_SOCKETS: usize = 64;

struct Flow {
    generation: u64,
    last_active: Instant,
    state: State,
}

enum State {
    /// The host connect is running; the function's SYN (its latest copy) waits.
    Connecting {
        syn: Vec<u8>,
        task: AbortHandle,
    },
    Open(Splice),
}

/// The segment-side TCP stack and the flow table.
pub(crate) struct Tcp {
    iface: Interface,
    sockets: SocketSet<'static>,
    flows: HashMap<UplinkFlowKey, Flow>,
    deadlines: Deadlines<UplinkFlowKey>,
    next_generation: u64,
    /// Flows whose socket closed, removed after the next egress poll (so RSTs go out first).
    ending: Vec<UplinkFlowKey>,
    /// Closed sockets taken out of `sockets` (so polls do not walk them), ready for a new flow
    /// (at most [`SPARE_SOCKETS`]).
    spare: Vec<tcp::Socket<'static>>,
}

impl Drop for Tcp {
    fn drop(&mut self) {
        for flow in self.flows.values() {
            if let State::Connecting { task, .. } = &flow.state {
                task.abort();
            }
        }
    }
}

impl Tcp {
    /// The stack answers for every address (`any_ip`, with a default route through its own
    /// address) and speaks from `cfg.address` when it must pick a source.
    pub(crate) fn new(address: Ipv4Addr, seed: u64, wire: &mut QueueDevice, now: Instant) -> Tcp {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, wire, smol_instant(now));
        iface.update_ip_addrs(|addrs| {
            // One address always fits the interface's address list.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(address), 32));
        });
        // One default route always fits the route table.
        let _ = iface.routes_mut().add_default_ipv4_route(address);
        iface.set_any_ip(true);
        Tcp {
            iface,
            sockets: SocketSet::new(Vec::new()),
            flows: HashMap::new(),
            deadlines: Deadlines::new(),
            next_generation: 0,
            ending: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// A closed socket for a new flow: a spare one, or a new one with `buffer`-byte rings.
    fn take_socket(&mut self, buffer: usize, setup_timeout: Duration) -> SocketHandle {
        let socket = self.spare.pop().unwrap_or_else(|| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; buffer]),
                tcp::SocketBuffer::new(vec![0; buffer]),
            )
        });
        let handle = self.sockets.add(socket);
        let s = self.sockets.get_mut::<tcp::Socket>(handle);
        // A relay forwards what it has at once; the host side has TCP_NODELAY too.
        s.set_nagle_enabled(false);
        s.set_timeout(Some(smol_duration(setup_timeout)));
        handle
    }

    /// Takes the socket of a flow that ended or never started out of the set (a RST it owed went
    /// out with the last egress poll) and keeps it for reuse while there is room.
    fn release_socket(&mut self, handle: SocketHandle) {
        let smoltcp::socket::Socket::Tcp(mut s) = self.sockets.remove(handle) else {
            return;
        };
        if self.spare.len() < SPARE_SOCKETS {
            // Closed (or TIME-WAIT), `listen` and `connect` accept it and reset what is left.
            if s.is_open() {
                s.abort();
            }
            self.spare.push(s);
        }
    }

    fn insert(&mut self, now: Instant, idle: Duration, key: UplinkFlowKey, state: State) {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.flows.insert(
            key,
            Flow {
                generation,
                last_active: now,
                state,
            },
        );
        self.deadlines.schedule(now + idle, key, generation);
    }

    /// A TCP segment from the segment.
    pub(crate) fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        packet: &[u8],
        key: UplinkFlowKey,
        syn: bool,
        rst: bool,
    ) {
        match self.flows.get_mut(&key) {
            Some(flow) => match &mut flow.state {
                State::Connecting { syn: held, task } => {
                    if syn {
                        // A retransmitted SYN: keep the latest.
                        held.clear();
                        held.extend_from_slice(packet);
                    } else if rst {
                        task.abort();
                        self.flows.remove(&key);
                    }
                    // Anything else cannot belong to a handshake not answered yet.
                }
                State::Open(_) => {
                    flow.last_active = now;
                    if !ctx.wire.push_rx(packet) {
                        ctx.counters.drop(UplinkDrop::RxQueueFull);
                    }
                }
            },
            None if syn => self.open_egress(ctx, now, packet, key),
            None => {
                // Not a flow of ours: the stack answers it as a closed port would (RST).
                if !ctx.wire.push_rx(packet) {
                    ctx.counters.drop(UplinkDrop::RxQueueFull);
                }
            }
        }
    }

    /// Holds a new SYN and starts its host connect.
    fn open_egress(&mut self, ctx: &mut Ctx<'_>, now: Instant, syn: &[u8], key: UplinkFlowKey) {
        if ctx.cfg.is_blocked(*key.dst.ip()) {
            ctx.counters.drop(UplinkDrop::Blocked);
            let ident = ctx.next_ident();
            ctx.send(icmp_error(
                ctx.cfg.address,
                quote_of(syn),
                IcmpError::AdminProhibited,
                ident,
            ));
            return;
        }
        if self.flows.len() >= ctx.cfg.limits.tcp_flows {
            ctx.counters.drop(UplinkDrop::TcpFlowLimit);
            let ident = ctx.next_ident();
            ctx.send(tcp_reset_for(syn, ident));
            return;
        }
        let socket = match start_connect(ctx.cfg.bind_for(*key.src.ip()), key.src.port(), key.dst) {
            Start::Done(result) => {
                // Answered in this call: no task, and the SYN-ACK leaves with this batch.
                let result = result.and_then(|s| {
                    let _guard = ctx.runtime.enter();
                    TcpStream::from_std(s)
                });
                self.open_or_answer(ctx, now, key, syn, result);
                return;
            }
            Start::Pending(socket) => socket,
        };
        let generation = self.next_generation + 1;
        let inbox: Arc<Inbox> = ctx.inbox.clone();
        let timeout = ctx.cfg.timeouts.connect;
        let task = ctx
            .runtime
            .spawn(async move {
                let result = finish_connect(socket, timeout).await;
                inbox.push(Event::Connected {
                    key,
                    generation,
                    result,
                });
            })
            .abort_handle();
        let state = State::Connecting {
            syn: syn.to_vec(),
            task,
        };
        self.insert(now, ctx.cfg.timeouts.tcp_idle, key, state);
    }

    /// The host connect for `key` finished: open the flow, or answer the held SYN.
    pub(crate) fn connected(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        key: UplinkFlowKey,
        generation: u64,
        result: io::Result<TcpStream>,
    ) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if flow.generation != generation {
            return;
        }
        let State::Connecting { syn, .. } = &mut flow.state else {
            return;
        };
        let syn = std::mem::take(syn);
        self.open_or_answer(ctx, now, key, &syn, result);
    }

    /// Opens the flow `key` whose host connect gave `result` (it is in the table while
    /// connecting, or not yet if the connect finished at once), or answers its SYN `syn`.
    fn open_or_answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        key: UplinkFlowKey,
        syn: &[u8],
        result: io::Result<TcpStream>,
    ) {
        let stream = match result {
            Ok(stream) => stream,
            Err(e) => {
                self.flows.remove(&key);
                let ident = ctx.next_ident();
                match answer_for(e.kind()) {
                    ConnectAnswer::Reset => {
                        ctx.counters.tcp_refused += 1;
                        ctx.send(tcp_reset_for(syn, ident));
                    }
                    ConnectAnswer::Icmp(err) => {
                        ctx.counters.tcp_unreachable += 1;
                        if e.kind() == io::ErrorKind::AddrNotAvailable {
                            ctx.counters.drop(UplinkDrop::HostSocket);
                        }
                        ctx.send(icmp_error(ctx.cfg.address, quote_of(syn), err, ident));
                    }
                }
                return;
            }
        };
        let handle = self.take_socket(ctx.cfg.limits.tcp_buffer, ctx.cfg.timeouts.connect);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*key.dst.ip())),
            port: key.dst.port(),
        };
        if self
            .sockets
            .get_mut::<tcp::Socket>(handle)
            .listen(local)
            .is_err()
        {
            self.release_socket(handle);
            self.refuse_setup(ctx, key, syn);
            return;
        }
        // Release the SYN into this listener alone: nothing else listens for the destination
        // while the stack reads it.
        let queued = ctx.wire.push_rx(syn);
        self.iface
            .poll(smol_instant(now), &mut *ctx.wire, &mut self.sockets);
        let s = self.sockets.get::<tcp::Socket>(handle);
        let theirs = IpEndpoint::new(IpAddress::Ipv4(*key.src.ip()), key.src.port());
        if !queued || s.state() == tcp::State::Listen || s.remote_endpoint() != Some(theirs) {
            self.release_socket(handle);
            self.refuse_setup(ctx, key, syn);
            return;
        }
        ctx.counters.tcp_opened += 1;
        let state = State::Open(Splice::new(handle, stream, false));
        match self.flows.get_mut(&key) {
            Some(flow) => {
                flow.last_active = now;
                flow.state = state;
            }
            None => self.insert(now, ctx.cfg.timeouts.tcp_idle, key, state),
        }
    }

    fn refuse_setup(&mut self, ctx: &mut Ctx<'_>, key: UplinkFlowKey, syn: &[u8]) {
        self.flows.remove(&key);
        ctx.counters.drop(UplinkDrop::TcpSetup);
        let ident = ctx.next_ident();
        ctx.send(tcp_reset_for(syn, ident));
    }

    /// A host listener accepted `stream` from `peer`: open a connection to `target` in the
    /// segment whose source is the peer.
    pub(crate) fn accepted(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        target: SocketAddrV4,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        ctx.counters.ingress_accepted += 1;
        let client = match peer {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddrV4::new(ip, a.port()),
                None => {
                    ctx.counters.drop(UplinkDrop::IngressNotIpv4);
                    super::splice::reset_host(&stream);
                    return;
                }
            },
        };
        let key = UplinkFlowKey {
            src: target,
            dst: client,
        };
        if self.flows.len() >= ctx.cfg.limits.tcp_flows || self.flows.contains_key(&key) {
            ctx.counters.drop(UplinkDrop::TcpFlowLimit);
            super::splice::reset_host(&stream);
            return;
        }
        let handle = self.take_socket(ctx.cfg.limits.tcp_buffer, ctx.cfg.timeouts.connect);
        let remote = IpEndpoint::new(IpAddress::Ipv4(*target.ip()), target.port());
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*client.ip())),
            port: client.port(),
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if socket.connect(self.iface.context(), remote, local).is_err() {
            self.release_socket(handle);
            ctx.counters.drop(UplinkDrop::TcpSetup);
            super::splice::reset_host(&stream);
            return;
        }
        if stream.set_nodelay(true).is_err() {
            ctx.counters.drop(UplinkDrop::HostSocket);
        }
        let state = State::Open(Splice::new(handle, stream, true));
        self.insert(now, ctx.cfg.timeouts.tcp_idle, key, state);
    }

    /// Runs the stack, the splices and the idle timeouts; see [`super::Uplink::poll`].
    pub(crate) fn poll(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let t = smol_instant(now);
        self.iface.poll(t, &mut *ctx.wire, &mut self.sockets);
        self.expire(ctx, now);
        for (key, flow) in &mut self.flows {
            let State::Open(sp) = &mut flow.state else {
                continue;
            };
            let socket = self.sockets.get_mut::<tcp::Socket>(sp.handle());
            if sp.pump(socket, ctx.counters) {
                flow.last_active = now;
            }
            if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                self.ending.push(*key);
            }
        }
        self.iface.poll(t, &mut *ctx.wire, &mut self.sockets);
        let mut ending = std::mem::take(&mut self.ending);
        for key in ending.drain(..) {
            if let Some(Flow {
                state: State::Open(sp),
                ..
            }) = self.flows.remove(&key)
            {
                let state = self.sockets.get::<tcp::Socket>(sp.handle()).state();
                self.release_socket(sp.handle());
                match sp.finish(state) {
                    Ending::Graceful => {}
                    Ending::Reset => ctx.counters.tcp_reset += 1,
                    Ending::AlreadyCounted => {}
                    Ending::NeverOpened { ingress } => {
                        if ingress {
                            ctx.counters.ingress_refused += 1;
                        }
                    }
                }
            }
        }
        self.ending = ending;
    }

    /// Resets flows idle for longer than `tcp_idle` (the RSTs go out with the next egress poll).
    fn expire(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let idle = ctx.cfg.timeouts.tcp_idle;
        while let Some((key, generation)) = self.deadlines.pop_due(now) {
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            if flow.generation != generation {
                continue;
            }
            let deadline = flow.last_active + idle;
            match &mut flow.state {
                State::Open(sp) if deadline <= now => {
                    let socket = self.sockets.get_mut::<tcp::Socket>(sp.handle());
                    sp.abort(socket);
                    ctx.counters.tcp_expired += 1;
                }
                // A connect task ends within `timeouts.connect` (shorter than the idle timeout, as
                // the configuration is validated): one still running now has lost its runtime.
                State::Connecting { syn, task } if deadline <= now => {
                    task.abort();
                    let ident = ctx.next_ident();
                    let error = icmp_error(
                        ctx.cfg.address,
                        quote_of(syn),
                        IcmpError::HostUnreachable,
                        ident,
                    );
                    ctx.send(error);
                    ctx.counters.tcp_unreachable += 1;
                    self.flows.remove(&key);
                }
                _ => self.deadlines.schedule(deadline, key, generation),
            }
        }
    }

    /// When the stack or a timeout next needs a poll.
    pub(crate) fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let stack = self
            .iface
            .poll_at(smol_instant(now), &self.sockets)
            .map(from_smol);
        [stack, self.deadlines.next()].into_iter().flatten().min()
    }

    /// Whether a host socket has what a splice waits for (registers `cx` otherwise).
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        self.flows.values().any(|flow| match &flow.state {
            State::Open(sp) => sp.poll_ready(cx),
            State::Connecting { .. } => false,
        })
    }

    /// The host socket's local address of the open flow `key`.
    pub(crate) fn host_socket(&self, key: UplinkFlowKey) -> Option<SocketAddr> {
        match &self.flows.get(&key)?.state {
            State::Open(splice) => splice.local_addr(),
            State::Connecting { .. } => None,
        }
    }

    pub(crate) fn count_active(&self, active: &mut ActiveFlows) {
        for flow in self.flows.values() {
            match flow.state {
                State::Connecting { .. } => active.tcp_connecting += 1,
                State::Open(_) => active.tcp_open += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connects_reset_and_unreachable_ones_get_icmp() {
        use io::ErrorKind as K;
        assert_eq!(answer_for(K::ConnectionRefused), ConnectAnswer::Reset);
        assert_eq!(
            answer_for(K::NetworkUnreachable),
            ConnectAnswer::Icmp(IcmpError::NetUnreachable)
        );
        assert_eq!(
            answer_for(K::HostUnreachable),
            ConnectAnswer::Icmp(IcmpError::HostUnreachable)
        );
        assert_eq!(
            answer_for(K::TimedOut),
            ConnectAnswer::Icmp(IcmpError::HostUnreachable)
        );
        assert_eq!(
            answer_for(K::PermissionDenied),
            ConnectAnswer::Icmp(IcmpError::AdminProhibited)
        );
    }
}
