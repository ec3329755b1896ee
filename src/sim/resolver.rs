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

use std::collections::HashMap;

use crate::dns::egress::{Grant, grants};
use crate::dns::querylog::{Asker, QueryLogRecord};
use crate::dns::{Answered, Cache, Counters, DnsDrop, Forward, Step, Transport, View, step};
use crate::tables::RESOLVER_LINK_LOCAL;
use crate::time::Instant;

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
/// UDP datagrams queued each way: a client with 100 queries outstanding (dnsperf's default)
/// fits, between two polls, with room for more clients; more are dropped by the stack.
const UDP_PACKETS: usize = 512;
/// Bytes of queries queued (small: a query is tens of bytes).
const UDP_RX_BUFFER: usize = 64 * 1024;
/// Bytes of answers queued: [`UDP_PACKETS`] answers of a few hundred bytes.
const UDP_TX_BUFFER: usize = 256 * 1024;
/// The largest datagram.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Where a resolver sends the queries it forwards, and hears back: the shell's host sockets
/// under `vpcd up` (`runtime::dns_upstream`), a scripted server in tests. Answers may take any
/// time; [`DnsService`] polls for them.
pub trait Upstream: Send {
    /// Starts asking for `query` (the wire form, with the forwarder's own id); `false` when it
    /// cannot take more.
    fn submit(&mut self, token: u64, query: Vec<u8>) -> bool;
    /// The answers that arrived since the last call: `(token, response)`, `None` when no
    /// upstream answered.
    fn completed(&mut self) -> Vec<(u64, Option<Vec<u8>>)>;
    /// How many datagrams it threw away since the last call because they were not the answer
    /// it waited for (another id, a question it did not ask): forgeries or stray answers.
    fn mismatched(&mut self) -> u64 {
        0
    }
}

/// Where a resolver's query-log records go (`runtime::dns_log` under `vpcd up`).
pub trait QueryLogSink: Send {
    /// Whether records are wanted now (a resolver builds none while this is `false`).
    fn active(&self) -> bool {
        true
    }
    fn log(&mut self, record: &QueryLogRecord);
    /// Called after a batch of records (each poll of the resolver that logged something).
    fn flush(&mut self);
}

/// A resolver's query log: the sink and what a record names besides the answer.
pub struct QueryLog {
    pub sink: Box<dyn QueryLogSink>,
    pub vpc: String,
    /// Unix time of the clock's zero (`Instant::ZERO`).
    pub epoch: std::time::Duration,
    /// The tables the resolver's VPC was compiled into, for `srcids.instance` (looked up per
    /// record: a change at 10,000 instances copies no per-instance map for the log).
    pub tables: std::sync::Arc<crate::tables::Tables>,
    /// The VPC's index in `tables`.
    pub vpc_index: u32,
}

impl QueryLog {
    /// The name of the VPC's instance at `addr` (`INSTANCE` of the port's `VPC/INSTANCE`).
    fn instance(&self, addr: std::net::Ipv4Addr) -> Option<&str> {
        let vpc = self.tables.vpcs.get(self.vpc_index as usize)?;
        let port = self.tables.port(*vpc.hosts.get(&addr)?)?;
        Some(port.name.split_once('/').map_or(&*port.name, |(_, i)| i))
    }
}

/// Forwarded queries a resolver waits for at once; more are answered SERVFAIL.
pub const MAX_FORWARDS: usize = 256;

/// A forwarded query waiting for its answer.
struct Waiting {
    forward: Forward,
    /// The id of the upstream query.
    id: u16,
    reply: ReplyTo,
    /// Who asked (address, port), for the query log.
    asker: (IpAddress, u16),
}

/// Where a forwarded query's answer goes.
enum ReplyTo {
    /// The client's address and the address it asked.
    Udp(udp::UdpMetadata),
    /// The TCP connection (an index into the resolver's sockets), which reads nothing more until
    /// the answer is sent.
    Tcp(usize),
    /// A caller in the process ([`DnsService::ask`]).
    Call(AnswerTo),
}

/// Where [`DnsService::ask`] sends an answer that had to be forwarded.
pub type AnswerTo = Box<dyn FnOnce(Answered) + Send>;

/// Port 53 of one VPC's resolver: its sockets in a socket set it shares with nothing else, and
/// what it answered.
pub struct DnsService {
    view: Arc<View>,
    udp: SocketHandle,
    tcp: Vec<SocketHandle>,
    /// Per TCP connection: waiting for a forwarded answer.
    tcp_waiting: Vec<bool>,
    counters: Counters,
    /// Where a datagram is read (as large as any datagram).
    scratch: Vec<u8>,
    /// With forwarding: the upstream, the answers it gave, the queries waiting.
    upstream: Option<Box<dyn Upstream>>,
    cache: Cache,
    waiting: HashMap<u64, Waiting>,
    next_token: u64,
    log: Option<QueryLog>,
    /// Something was logged since the last flush.
    logged: bool,
    /// Egress destinations answered for allowed names, for the shell to hand to the fabric.
    grants: Vec<Grant>,
}

impl std::fmt::Debug for DnsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsService")
            .field("names", &self.view.len())
            .field("counters", &self.counters)
            .field("forwarding", &self.upstream.is_some())
            .field("cache", &self.cache)
            .field("waiting", &self.waiting.len())
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
        let mut udp = udp::Socket::new(udp_buffer(UDP_RX_BUFFER), udp_buffer(UDP_TX_BUFFER));
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
            tcp_waiting: vec![false; TCP_CONNECTIONS],
            counters: Counters::default(),
            scratch: vec![0; MAX_DATAGRAM],
            upstream: None,
            cache: Cache::default(),
            waiting: HashMap::new(),
            next_token: 0,
            log: None,
            logged: false,
            grants: Vec::new(),
        }
    }

    /// The egress destinations its answers allowed since the last call (`dns::egress`): hand
    /// them to the fabric (`Firewall::grant_egress`) before its next packet.
    pub fn take_grants(&mut self) -> Vec<Grant> {
        std::mem::take(&mut self.grants)
    }

    /// Answers from `view` from now on (a change of the VPC's names or zones): what it holds
    /// besides (the cache of forwarded answers, open TCP connections, forwarded queries
    /// waiting, counters) stays. The cache holds only names outside every zone, and a name a new
    /// zone covers is answered from the zone, so nothing cached contradicts the new view.
    /// Answers from `view` from now on; the view it replaces.
    pub fn set_view(&mut self, view: Arc<View>) -> Arc<View> {
        std::mem::replace(&mut self.view, view)
    }

    /// Writes a query-log record for every answer from now on; the log it replaces.
    pub fn log_queries(&mut self, log: QueryLog) -> Option<QueryLog> {
        self.log.replace(log)
    }

    /// After an answer: the egress it allows, and its query-log record (asked by `asker` over
    /// `transport` at `now`).
    fn note(&mut self, answered: &Answered, asker: (IpAddress, u16), t: Transport, now: Instant) {
        if let Some((name, _)) = &answered.question {
            let allowed = grants(
                self.view.egress_names(),
                name,
                answered.rcode,
                &answered.answers,
            );
            self.grants.extend(allowed);
        }
        let Some(log) = self.log.as_mut().filter(|l| l.sink.active()) else {
            return;
        };
        let IpAddress::Ipv4(addr) = asker.0;
        let record = QueryLogRecord::new(
            answered,
            Asker {
                vpc: &log.vpc,
                at: log.epoch + std::time::Duration::from_micros(now.micros()),
                addr: addr.into(),
                port: asker.1,
                transport: t,
                instance: log.instance(addr),
            },
        );
        log.sink.log(&record);
        self.logged = true;
    }

    /// Forwards the names the view does not hold to `upstream`, keeping the answers in a cache.
    pub fn forward_to(&mut self, upstream: Box<dyn Upstream>) {
        self.upstream = Some(upstream);
    }

    /// What it answered so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether forwarded queries are waiting: poll again soon (see [`FORWARD_POLL`]).
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Answers every query that arrived and every forwarded answer that came back; call after
    /// each poll of the interface, then poll again so the answers leave.
    pub fn serve(&mut self, sockets: &mut SocketSet<'_>, now: Instant) {
        self.finish_forwards(sockets, now);
        self.serve_udp(sockets, now);
        for i in 0..self.tcp.len() {
            self.serve_tcp(sockets, i, now);
        }
        if std::mem::take(&mut self.logged)
            && let Some(log) = self.log.as_mut()
        {
            log.sink.flush();
        }
    }

    /// One query's fate: the answer to send now, or `None` when it was forwarded (`reply` then
    /// says where its answer goes).
    fn handle(
        &mut self,
        query: &[u8],
        t: Transport,
        now: Instant,
        reply: ReplyTo,
        asker: (IpAddress, u16),
    ) -> Option<Result<Answered, DnsDrop>> {
        let forwarding = self.upstream.as_ref().map(|_| (&self.cache, now));
        let forward = match step(&self.view, query, t, forwarding) {
            Ok(Step::Answer(a)) => return Some(Ok(a)),
            Err(d) => return Some(Err(d)),
            Ok(Step::Forward(f)) => f,
        };
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let id = random_id();
        let room = self.waiting.len() < MAX_FORWARDS;
        let submitted = room
            && self
                .upstream
                .as_mut()
                .is_some_and(|u| u.submit(token, forward.upstream_query(id)));
        if !submitted {
            self.counters.upstream_failures += 1;
            return Some(Ok(forward.fail()));
        }
        self.counters.forwarded += 1;
        self.waiting.insert(
            token,
            Waiting {
                forward,
                id,
                reply,
                asker,
            },
        );
        None
    }

    /// Answers `query` as if `asker` (an instance's address and port) had sent it, without the
    /// network: the same decision, cache, forwarding, counters, query log and egress grants as a
    /// query on port 53 (`vpcd ctl dns query`). The answer is sized as over TCP (never
    /// truncated) and logged as TCP. `Ok(Some(answer))` now; `Ok(None)` when it was forwarded:
    /// `later` gets the answer once the upstream's comes back (or SERVFAIL), from a later
    /// [`DnsService::serve`]; poll the port until then ([`DnsService::is_waiting`]).
    pub fn ask(
        &mut self,
        query: &[u8],
        asker: (std::net::Ipv4Addr, u16),
        now: Instant,
        later: AnswerTo,
    ) -> Result<Option<Answered>, DnsDrop> {
        let asker = (IpAddress::Ipv4(asker.0), asker.1);
        let Some(outcome) = self.handle(query, Transport::Tcp, now, ReplyTo::Call(later), asker)
        else {
            return Ok(None);
        };
        self.counters.record(&outcome);
        let a = outcome?;
        self.note(&a, asker, Transport::Tcp, now);
        Ok(Some(a))
    }

    /// Sends the answers of forwarded queries that came back.
    fn finish_forwards(&mut self, sockets: &mut SocketSet<'_>, now: Instant) {
        let Some(upstream) = self.upstream.as_mut() else {
            return;
        };
        self.counters.upstream_mismatched += upstream.mismatched();
        for (token, response) in upstream.completed() {
            let Some(w) = self.waiting.remove(&token) else {
                continue;
            };
            let answered = match response {
                Some(bytes) => {
                    // `finish` takes only the answer to the query sent (its id and question):
                    // another id is answered SERVFAIL, and counted.
                    if bytes.get(..2) != Some(&w.id.to_be_bytes()[..]) {
                        self.counters.upstream_mismatched += 1;
                    }
                    w.forward.finish(w.id, &bytes, &mut self.cache, now)
                }
                None => {
                    self.counters.upstream_failures += 1;
                    w.forward.fail()
                }
            };
            self.counters.record(&Ok(answered.clone()));
            let t = match w.reply {
                ReplyTo::Udp(_) => Transport::Udp,
                ReplyTo::Tcp(_) | ReplyTo::Call(_) => Transport::Tcp,
            };
            self.note(&answered, w.asker, t, now);
            match w.reply {
                ReplyTo::Udp(meta) => {
                    let s = sockets.get_mut::<udp::Socket>(self.udp);
                    let _ = s.send_slice(&answered.wire, meta);
                }
                ReplyTo::Tcp(i) => {
                    self.tcp_waiting[i] = false;
                    let s = sockets.get_mut::<tcp::Socket>(self.tcp[i]);
                    if s.may_send() {
                        send_tcp_message(s, &answered.wire);
                    }
                }
                ReplyTo::Call(to) => to(answered),
            }
        }
    }

    fn serve_udp(&mut self, sockets: &mut SocketSet<'_>, now: Instant) {
        loop {
            let s = sockets.get_mut::<udp::Socket>(self.udp);
            let Ok((n, meta)) = s.recv_slice(&mut self.scratch) else {
                break;
            };
            let query = self.scratch[..n].to_vec();
            let asker = (meta.endpoint.addr, meta.endpoint.port);
            let Some(outcome) = self.handle(&query, Transport::Udp, now, ReplyTo::Udp(meta), asker)
            else {
                continue;
            };
            self.counters.record(&outcome);
            if let Ok(a) = outcome {
                self.note(&a, asker, Transport::Udp, now);
                // `meta` names the client and the address it asked: the answer's source. A full
                // send queue loses the answer; the client asks again.
                let s = sockets.get_mut::<udp::Socket>(self.udp);
                let _ = s.send_slice(&a.wire, meta);
            }
        }
    }

    fn serve_tcp(&mut self, sockets: &mut SocketSet<'_>, i: usize, now: Instant) {
        let s = sockets.get_mut::<tcp::Socket>(self.tcp[i]);
        if !s.is_open() {
            self.tcp_waiting[i] = false;
            let _ = s.listen(DNS_PORT);
            return;
        }
        loop {
            let s = sockets.get_mut::<tcp::Socket>(self.tcp[i]);
            if s.send_queue() != 0 || self.tcp_waiting[i] {
                break;
            }
            let Some(query) = next_tcp_message(s) else {
                break;
            };
            let asker = s
                .remote_endpoint()
                .map_or((IpAddress::Ipv4(std::net::Ipv4Addr::UNSPECIFIED), 0), |e| {
                    (e.addr, e.port)
                });
            let Some(outcome) = self.handle(&query, Transport::Tcp, now, ReplyTo::Tcp(i), asker)
            else {
                self.tcp_waiting[i] = true;
                return;
            };
            self.counters.record(&outcome);
            if let Ok(a) = &outcome {
                self.note(a, asker, Transport::Tcp, now);
            }
            let s = sockets.get_mut::<tcp::Socket>(self.tcp[i]);
            match outcome {
                Ok(a) => send_tcp_message(s, &a.wire),
                Err(_) => {
                    s.abort();
                    return;
                }
            }
        }
        let s = sockets.get_mut::<tcp::Socket>(self.tcp[i]);
        if s.state() == tcp::State::CloseWait && s.recv_queue() == 0 && !self.tcp_waiting[i] {
            // The client closed its side and every query was answered.
            s.close();
        }
    }
}

/// How soon a resolver with forwarded queries waiting is polled again, to pick up answers.
pub const FORWARD_POLL: std::time::Duration = std::time::Duration::from_millis(1);
/// A random id for an upstream query, from the operating system's CSPRNG (`getrandom`): an
/// off-path forger must guess it and the upstream socket's port (a fresh one per query, chosen
/// by the kernel) for a forged answer to be taken. Should the CSPRNG fail (it does not on Linux
/// after boot), a hash seeded per call by the standard library's random keys stands in.
pub fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_ok() {
        return u16::from_be_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u16
}

/// Writes one length-prefixed message; the caller checked the (empty, largest-answer-sized)
/// send buffer, so both parts fit.
fn send_tcp_message(s: &mut tcp::Socket<'_>, wire: &[u8]) {
    let len = (wire.len() as u16).to_be_bytes();
    let _ = s.send_slice(&len);
    let _ = s.send_slice(wire);
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

fn udp_buffer(bytes: usize) -> udp::PacketBuffer<'static> {
    udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
        vec![0; bytes],
    )
}

/// Hands a resolver's egress grants to the fabric: VPC `port`'s resolver answered them at `now`.
pub fn apply_grants(
    fabric: &mut crate::dataplane::Fabric,
    port: crate::tables::PortId,
    grants: Vec<Grant>,
    now: Instant,
) {
    if grants.is_empty() {
        return;
    }
    let vpc = match fabric.tables().port(port).map(|p| p.owner) {
        Some(crate::tables::PortOwner::Resolver { vpc }) => vpc as usize,
        _ => return,
    };
    for (addr, ports, ttl) in grants {
        let until = now + std::time::Duration::from_secs(u64::from(ttl));
        fabric
            .firewall_mut()
            .grant_egress(vpc, addr, ports, until, now);
    }
}

/// A DNS client socket on a simulated host, for [`super::Simulation::dns_exchange`].
enum Client {
    Udp(SocketHandle),
    /// The socket and whether the query was written.
    Tcp(SocketHandle, bool),
}

impl super::Simulation {
    /// Makes VPC `vpc`'s resolver forward the names it does not hold to `upstream` (`vpcd test`
    /// has no uplink: tests script one). `false` when there is no such VPC.
    pub fn forward_dns(&mut self, vpc: &str, upstream: Box<dyn Upstream>) -> bool {
        let name = crate::tables::resolver_port_name(vpc);
        match self
            .net
            .hosts
            .iter_mut()
            .find(|h| h.name == name)
            .and_then(|h| h.dns.as_mut())
        {
            Some(dns) => {
                dns.forward_to(upstream);
                true
            }
            None => false,
        }
    }

    /// The address of DNS name `name` for endpoint `from`: an instance asks its VPC's resolver
    /// over the simulated network (so the answer's egress grants apply, as for a real client);
    /// an internet host looks in the public names.
    pub fn look_up(
        &mut self,
        from: crate::topology::plan::Endpoint,
        name: &str,
    ) -> Result<std::net::Ipv4Addr, super::SimError> {
        let from_name = self.plan.endpoint_name(from);
        let unresolved = |why: String| {
            super::SimError::BadTarget(format!("`{name}` does not resolve from {from_name}: {why}"))
        };
        let crate::topology::plan::Endpoint::Instance { vpc, .. } = from else {
            return crate::topology::compile::dns::lookup(&self.plan, from, name)
                .map_err(unresolved);
        };
        let qname = crate::dns::names::parse_domain(name).map_err(unresolved)?;
        let mut m = hickory_proto::op::Message::new(
            0x5150,
            hickory_proto::op::MessageType::Query,
            hickory_proto::op::OpCode::Query,
        );
        m.metadata.recursion_desired = true;
        m.add_query(hickory_proto::op::Query::query(
            qname,
            hickory_proto::rr::RecordType::A,
        ));
        let query = m.to_vec().map_err(|e| unresolved(e.to_string()))?;
        let resolver = self
            .net
            .fabric
            .tables()
            .vpcs
            .get(vpc)
            .map(|v| v.resolver.addr);
        let response = match resolver {
            Some(r) => self.dns_exchange(&from_name, r, &query, Transport::Udp)?,
            None => None,
        };
        let response = response.ok_or_else(|| unresolved("no answer from the resolver".into()))?;
        let m = hickory_proto::op::Message::from_vec(&response)
            .map_err(|e| unresolved(e.to_string()))?;
        m.answers
            .iter()
            .find_map(|r| match &r.data {
                hickory_proto::rr::RData::A(a) => Some(a.0),
                _ => None,
            })
            .ok_or_else(|| unresolved(crate::dns::querylog::rcode_name(m.metadata.response_code)))
    }

    /// What VPC `vpc`'s resolver answered so far.
    pub fn dns_counters(&self, vpc: &str) -> Option<Counters> {
        let name = crate::tables::resolver_port_name(vpc);
        let host = self.net.hosts.iter().find(|h| h.name == name)?;
        host.dns.as_ref().map(|d| *d.counters())
    }

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
                let mut s = udp::Socket::new(udp_buffer(MAX_DATAGRAM), udp_buffer(MAX_DATAGRAM));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream ids are random, not a sequence: 4,096 of them take many values, and
    /// consecutive ones are not one apart (a counter's pattern).
    #[test]
    fn upstream_query_ids_are_random() {
        let ids: Vec<u16> = (0..4096).map(|_| random_id()).collect();
        let distinct: std::collections::HashSet<u16> = ids.iter().copied().collect();
        // 4,096 draws from 65,536 values: about 3,970 distinct on average.
        assert!(distinct.len() > 3800, "{} distinct", distinct.len());
        let steps = ids
            .windows(2)
            .filter(|w| w[1].wrapping_sub(w[0]) == 1)
            .count();
        assert!(steps < 5, "{steps} consecutive ids");
    }
}
