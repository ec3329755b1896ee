//! The VPC resolver as an in-process endpoint: port 53 over UDP and TCP on a smoltcp stack,
//! answering from a [`View`] with [`crate::dns::answer`].
//!
//! Shared by `vpcd test`'s simulator (a [`super::host::Host`] with a service) and `vpcd up`'s sim
//! ports (`runtime::sim_port`), so both serve the same bytes. The stack holds the VPC's base + 2
//! and [`RESOLVER_LINK_LOCAL`]; a UDP answer leaves from the address the query was sent to, as
//! a client checks. TCP (RFC 7766): each message has a two-byte length prefix; a connection may
//! carry several queries, answered in order, one at a time (the next is read once the previous
//! answer is acknowledged); a query longer than the receive buffer aborts the connection, and so
//! does a client that stops answering keep-alives. At most [`TCP_CONNECTIONS`] connections are
//! open at once per resolver.

use std::sync::Arc;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpCidr};

use crate::dns::{Counters, Transport, View, answer};
use crate::tables::RESOLVER_LINK_LOCAL;

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// TCP connections served at once (one listening socket each).
pub const TCP_CONNECTIONS: usize = 4;
/// A TCP query (with its length prefix) must fit this.
const TCP_RX_BUFFER: usize = 4096;
/// The largest TCP answer with its length prefix.
const TCP_TX_BUFFER: usize = u16::MAX as usize + 2;
/// How often an open TCP connection checks that its client is still there.
const KEEP_ALIVE: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(5);
/// A client silent this long (no answer to keep-alives) loses its connection.
const IDLE_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(15);
/// A simulated client's TCP buffers (its answers in these tests are far smaller).
const CLIENT_TCP_BUFFER: usize = 16 * 1024;
/// UDP datagrams queued each way.
const UDP_PACKETS: usize = 64;
const UDP_BUFFER: usize = 64 * 1024;

/// Port 53 of one VPC's resolver: its sockets in a socket set it shares with nothing else, and
/// what it answered.
pub struct DnsService {
    view: Arc<View>,
    udp: SocketHandle,
    tcp: Vec<SocketHandle>,
    counters: Counters,
    /// Where a datagram is read (as large as any datagram).
    scratch: Vec<u8>,
}

impl std::fmt::Debug for DnsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsService")
            .field("names", &self.view.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl DnsService {
    /// Adds the resolver's sockets to `sockets` and the link-local address to `iface` (which
    /// already holds base + 2).
    pub fn new(view: Arc<View>, iface: &mut Interface, sockets: &mut SocketSet<'static>) -> Self {
        iface.update_ip_addrs(|addrs| {
            // The interface holds two addresses (smoltcp's default): base + 2 and this one.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(RESOLVER_LINK_LOCAL), 32));
        });
        let mut udp = udp::Socket::new(udp_buffer(), udp_buffer());
        // Binding a fresh socket to a non-zero port cannot fail.
        let _ = udp.bind(DNS_PORT);
        let udp = sockets.add(udp);
        let tcp = (0..TCP_CONNECTIONS)
            .map(|_| {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; TCP_RX_BUFFER]),
                    tcp::SocketBuffer::new(vec![0; TCP_TX_BUFFER]),
                );
                let _ = s.listen(DNS_PORT);
                // A client that vanished without closing frees its connection.
                s.set_keep_alive(Some(KEEP_ALIVE));
                s.set_timeout(Some(IDLE_TIMEOUT));
                sockets.add(s)
            })
            .collect();
        DnsService {
            view,
            udp,
            tcp,
            counters: Counters::default(),
            scratch: vec![0; UDP_BUFFER],
        }
    }

    /// What it answered so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Answers every query that arrived; call after each poll of the interface, then poll again
    /// so the answers leave.
    pub fn serve(&mut self, sockets: &mut SocketSet<'_>) {
        self.serve_udp(sockets);
        for i in 0..self.tcp.len() {
            self.serve_tcp(sockets, self.tcp[i]);
        }
    }

    fn serve_udp(&mut self, sockets: &mut SocketSet<'_>) {
        let s = sockets.get_mut::<udp::Socket>(self.udp);
        while let Ok((n, meta)) = s.recv_slice(&mut self.scratch) {
            let outcome = answer(&self.view, &self.scratch[..n], Transport::Udp);
            self.counters.record(&outcome);
            if let Ok(a) = outcome {
                // `meta` names the client and the address it asked: the answer's source. A full
                // send queue loses the answer; the client asks again.
                let _ = s.send_slice(&a.wire, meta);
            }
        }
    }

    fn serve_tcp(&mut self, sockets: &mut SocketSet<'_>, handle: SocketHandle) {
        let s = sockets.get_mut::<tcp::Socket>(handle);
        if !s.is_open() {
            let _ = s.listen(DNS_PORT);
            return;
        }
        while s.send_queue() == 0 {
            let Some(query) = next_tcp_message(s) else {
                break;
            };
            let outcome = answer(&self.view, &query, Transport::Tcp);
            self.counters.record(&outcome);
            match outcome {
                Ok(a) => {
                    let len = (a.wire.len() as u16).to_be_bytes();
                    // The buffer holds the largest answer and is empty: both fit.
                    let _ = s.send_slice(&len);
                    let _ = s.send_slice(&a.wire);
                }
                Err(_) => {
                    s.abort();
                    return;
                }
            }
        }
        if s.state() == tcp::State::CloseWait && s.recv_queue() == 0 {
            // The client closed its side and every query was read.
            s.close();
        }
    }
}

/// The next complete length-prefixed message, removed from the socket; `None` until one has
/// arrived whole. A message longer than the receive buffer can never arrive: the connection is
/// aborted.
fn next_tcp_message(s: &mut tcp::Socket<'_>) -> Option<Vec<u8>> {
    read_message(s, TCP_RX_BUFFER)
}

/// The next complete length-prefixed message of at most `limit` bytes with its prefix; a longer
/// one aborts the connection.
fn read_message(s: &mut tcp::Socket<'_>, limit: usize) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 2];
    if s.peek_slice(&mut prefix) != Ok(2) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    if len + 2 > limit {
        s.abort();
        return None;
    }
    if s.recv_queue() < len + 2 {
        return None;
    }
    let mut message = vec![0u8; len + 2];
    match s.recv_slice(&mut message) {
        Ok(n) if n == len + 2 => Some(message.split_off(2)),
        _ => None,
    }
}

fn udp_buffer() -> udp::PacketBuffer<'static> {
    udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
        vec![0; UDP_BUFFER],
    )
}

/// A DNS client socket on a simulated host, for [`super::Simulation::dns_exchange`].
enum Client {
    Udp(SocketHandle),
    /// The socket and whether the query was written.
    Tcp(SocketHandle, bool),
}

impl super::Simulation {
    /// Sends one DNS `query` from endpoint `from` to `server` port 53 over `transport` and
    /// returns the response's bytes (without TCP's length prefix), or `None` when none arrived
    /// within [`super::PROBE_DEADLINE`] of virtual time. The client socket is removed again.
    pub fn dns_exchange(
        &mut self,
        from: &str,
        server: std::net::Ipv4Addr,
        query: &[u8],
        transport: Transport,
    ) -> Result<Option<Vec<u8>>, super::SimError> {
        let e = self.endpoint(from)?;
        let Some(h) = self.host_index(e) else {
            return Err(super::SimError::UnknownEndpoint(from.to_string()));
        };
        let local = 40000 + (self.probes_run % 8192) as u16;
        self.probes_run = self.probes_run.wrapping_add(1);
        let to = (IpAddress::Ipv4(server), DNS_PORT);
        let host = &mut self.net.hosts[h];
        let client = match transport {
            Transport::Udp => {
                let mut s = udp::Socket::new(udp_buffer(), udp_buffer());
                let sent = s.bind(local).is_ok() && s.send_slice(query, to).is_ok();
                if !sent {
                    return Ok(None);
                }
                Client::Udp(host.sockets.add(s))
            }
            Transport::Tcp => {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; CLIENT_TCP_BUFFER]),
                    tcp::SocketBuffer::new(vec![0; CLIENT_TCP_BUFFER]),
                );
                if s.connect(host.iface.context(), to, local).is_err() {
                    return Ok(None);
                }
                Client::Tcp(host.sockets.add(s), false)
            }
        };
        let mut client = client;
        let mut response = None;
        let deadline = self.net.now() + super::PROBE_DEADLINE;
        self.net.run_until(deadline, |net| {
            response = poll_client(&mut net.hosts[h].sockets, &mut client, query);
            response.is_some()
        });
        if let Client::Tcp(handle, _) = client {
            // Close as a client does, so that the resolver's connection is free again.
            self.net.hosts[h]
                .sockets
                .get_mut::<tcp::Socket>(handle)
                .close();
            self.net
                .run_until(self.net.now() + super::PROBE_DEADLINE, |net| {
                    let s = net.hosts[h].sockets.get_mut::<tcp::Socket>(handle);
                    matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait)
                });
        }
        let (Client::Udp(handle) | Client::Tcp(handle, _)) = client;
        // Packets still in flight (the last ACK of a close) are delivered by later steps.
        self.net.hosts[h].sockets.remove(handle);
        Ok(response)
    }
}

/// One look at the client: sends the TCP query once connected, returns a complete response.
fn poll_client(sockets: &mut SocketSet<'_>, client: &mut Client, query: &[u8]) -> Option<Vec<u8>> {
    match client {
        Client::Udp(handle) => {
            let s = sockets.get_mut::<udp::Socket>(*handle);
            s.recv().ok().map(|(data, _)| data.to_vec())
        }
        Client::Tcp(handle, sent) => {
            let s = sockets.get_mut::<tcp::Socket>(*handle);
            if !*sent && s.may_send() {
                let _ = s.send_slice(&(query.len() as u16).to_be_bytes());
                let _ = s.send_slice(query);
                *sent = true;
            }
            read_message(s, CLIENT_TCP_BUFFER)
        }
    }
}
