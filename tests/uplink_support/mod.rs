//! Shared harness of `tests/uplink.rs` and `benches/uplink.rs`: a smoltcp "function" stack wired
//! to an [`Uplink`] in process, and small servers on 127.0.0.1.
//!
//! The function stands for an instance after SNAT: its address is an EIP on the public segment
//! (203.0.113.10), its packets go straight to [`Uplink::deliver`] and what the uplink sends goes
//! straight into its device. [`Pump`] moves packets both ways on the runtime's thread and waits on
//! [`Uplink::ready`] and both stacks' timers between steps; its clock is the wall clock plus an
//! offset that [`Pump::skip`] advances, so idle timeouts are tested without sleeping.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::Duration;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Packet};
use vpcd::sim::{Addressing, QueueDevice, from_smol, interface, smol_instant};
use vpcd::time::Instant;
use vpcd::uplink::{Uplink, UplinkConfig};

/// The function's public address (an EIP).
pub const FN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The uplink's address on the segment (the segment's gateway).
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Per-direction TCP buffer of the function's sockets.
pub const FN_BUFFER: usize = 1 << 20;

/// An uplink config for loopback tests: nothing blocked.
pub fn loopback_config() -> UplinkConfig {
    let mut c = UplinkConfig::new(UPLINK_IP);
    c.blocked.clear();
    c
}

/// The function: one smoltcp interface on a queue device.
pub struct Function {
    pub iface: Interface,
    pub device: QueueDevice,
    pub sockets: SocketSet<'static>,
    next_port: u16,
}

impl Function {
    pub fn new(now: Instant) -> Function {
        let mut device = QueueDevice::new(1500);
        let addressing = Addressing {
            ip: FN_IP,
            secondary: Vec::new(),
            prefix_len: 24,
            gateway: UPLINK_IP,
            mtu: 1500,
        };
        let iface = interface(&mut device, &addressing, 42, now);
        Function {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            next_port: 40000,
        }
    }

    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }

    pub fn icmp(&mut self, h: SocketHandle) -> &mut icmp::Socket<'static> {
        self.sockets.get_mut::<icmp::Socket>(h)
    }

    fn tcp_socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; FN_BUFFER]),
            tcp::SocketBuffer::new(vec![0; FN_BUFFER]),
        )
    }

    /// Starts a connection to `to` from a fresh local port.
    pub fn connect(&mut self, to: SocketAddr) -> SocketHandle {
        let SocketAddr::V4(to) = to else {
            panic!("the function speaks IPv4")
        };
        let mut s = Self::tcp_socket();
        self.next_port = self.next_port.wrapping_add(1).max(40000);
        s.connect(
            self.iface.context(),
            IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port()),
            self.next_port,
        )
        .expect("connect");
        self.sockets.add(s)
    }

    /// A listening socket on `port` of the function's address.
    pub fn listen(&mut self, port: u16) -> SocketHandle {
        let mut s = Self::tcp_socket();
        s.listen(port).expect("listen");
        self.sockets.add(s)
    }

    pub fn udp_socket(&mut self, port: u16) -> SocketHandle {
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 65536]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 65536]),
        );
        s.bind(port).expect("bind");
        self.sockets.add(s)
    }

    pub fn icmp_socket(&mut self, ident: u16) -> SocketHandle {
        let mut s = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        );
        s.bind(icmp::Endpoint::Ident(ident)).expect("bind");
        self.sockets.add(s)
    }

    /// Reads everything the socket holds into `out`; returns the bytes read.
    pub fn read_into(&mut self, h: SocketHandle, out: &mut Vec<u8>) -> usize {
        let s = self.tcp(h);
        let mut n = 0;
        while s.can_recv() {
            match s.recv(|b| {
                out.extend_from_slice(b);
                (b.len(), b.len())
            }) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    }

    /// Drains and counts what the socket holds, without looking at it (for benchmarks).
    pub fn discard(&mut self, h: SocketHandle) -> usize {
        let s = self.tcp(h);
        let mut n = 0;
        while s.can_recv() {
            match s.recv(|b| (b.len(), b.len())) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    }

    /// Drains and counts what the socket holds, folding it into `sum`.
    pub fn consume(&mut self, h: SocketHandle, sum: &mut Fnv) -> usize {
        let s = self.tcp(h);
        let mut n = 0;
        while s.can_recv() {
            match s.recv(|b| {
                sum.update(b);
                (b.len(), b.len())
            }) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    }
}

/// What the uplink sent the function that was not TCP: ICMP (type, code) pairs.
#[derive(Debug, Default)]
pub struct Seen {
    pub icmp: Vec<(u8, u8)>,
}

/// The function and the uplink, wired together.
pub struct Pump {
    pub uplink: Uplink,
    pub f: Function,
    start: std::time::Instant,
    offset: Duration,
    pub seen: Seen,
    /// Where packets wait between the two stacks.
    buf: Vec<u8>,
}

impl Pump {
    /// Must run inside a tokio runtime (the uplink spawns tasks on it).
    pub fn new(config: UplinkConfig) -> Pump {
        let start = std::time::Instant::now();
        let uplink = Uplink::new(config, Instant::ZERO).expect("the uplink starts");
        Pump {
            uplink,
            f: Function::new(Instant::ZERO),
            start,
            offset: Duration::ZERO,
            seen: Seen::default(),
            buf: vec![0; 65536],
        }
    }

    pub fn now(&self) -> Instant {
        let d = self.start.elapsed() + self.offset;
        Instant::from_micros(d.as_micros() as u64)
    }

    /// Moves the virtual clock `d` ahead of the wall clock (for idle timeouts).
    pub fn skip(&mut self, d: Duration) {
        self.offset += d;
    }

    /// Moves packets both ways and polls both stacks until neither sends anything.
    pub fn step(&mut self) {
        for _ in 0..10_000 {
            let now = self.now();
            self.f
                .iface
                .poll(smol_instant(now), &mut self.f.device, &mut self.f.sockets);
            let mut moved = false;
            while let Some(n) = self.f.device.pop_tx(&mut self.buf) {
                self.uplink.deliver(now, &self.buf[..n]);
                moved = true;
            }
            self.uplink.poll(now);
            while let Some(n) = self.uplink.take_tx(&mut self.buf) {
                let p = &self.buf[..n];
                if let Ok(ip) = Ipv4Packet::new_checked(p)
                    && ip.next_header() == smoltcp::wire::IpProtocol::Icmp
                    && let [t, c, ..] = ip.payload()
                {
                    self.seen.icmp.push((*t, *c));
                }
                self.f.device.push_rx(p);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Steps until `cond` gives a value, waiting for the uplink's host sockets and both stacks'
    /// timers in between; `None` after `limit` of wall-clock time.
    pub async fn until<T>(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&mut Function, &Uplink) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.step();
            if let Some(v) = cond(&mut self.f, &self.uplink) {
                return Some(v);
            }
            let now_tokio = tokio::time::Instant::now();
            if now_tokio >= deadline {
                return None;
            }
            let now = self.now();
            let f_at = self
                .f
                .iface
                .poll_at(smol_instant(now), &self.f.sockets)
                .map(from_smol);
            let u_at = self.uplink.poll_at(now);
            let wake = [f_at, u_at]
                .into_iter()
                .flatten()
                .min()
                .map(|t| now_tokio + (t - now))
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                () = self.uplink.ready() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// FNV-1a over a byte stream: the checksum both ends of a transfer compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Deterministic test data: byte `i` of a stream.
pub fn pattern(offset: usize, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let k = (offset + i) as u64;
        *b = (k.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
}

const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind((LOOPBACK, 0)).expect("bind a loopback port");
    let a = l.local_addr().expect("local address");
    (l, a)
}

fn accept(l: &TcpListener) -> (TcpStream, SocketAddr) {
    let (s, peer) = l.accept().expect("accept");
    s.set_read_timeout(Some(SERVER_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(SERVER_TIMEOUT)).expect("timeout");
    (s, peer)
}

/// Accepts `conns` connections one after another and sends each `size` bytes of [`pattern`],
/// then closes; returns the checksum of what was sent and the peers seen.
pub fn bulk_server(size: usize, conns: usize) -> (SocketAddr, JoinHandle<(Fnv, Vec<SocketAddr>)>) {
    let (l, addr) = listener();
    let t = std::thread::spawn(move || {
        let mut sum = Fnv::default();
        let mut peers = Vec::new();
        for _ in 0..conns {
            let (mut s, peer) = accept(&l);
            peers.push(peer);
            let mut buf = vec![0u8; 64 * 1024];
            let mut sent = 0;
            let mut conn_sum = Fnv::default();
            while sent < size {
                let n = (size - sent).min(buf.len());
                pattern(sent, &mut buf[..n]);
                conn_sum.update(&buf[..n]);
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n;
            }
            sum = conn_sum;
        }
        (sum, peers)
    });
    (addr, t)
}

/// Accepts one connection and counts and checksums what it reads until EOF; then replies with the
/// byte count as text and closes.
pub fn sink_server() -> (SocketAddr, JoinHandle<(usize, Fnv)>) {
    let (l, addr) = listener();
    let t = std::thread::spawn(move || {
        let (mut s, _) = accept(&l);
        let mut buf = vec![0u8; 64 * 1024];
        let mut sum = Fnv::default();
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sum.update(&buf[..n]);
                    total += n;
                }
            }
        }
        let _ = s.write_all(format!("{total}").as_bytes());
        (total, sum)
    });
    (addr, t)
}

/// Accepts connections (up to `conns`) and echoes each until EOF, then half-closes its side.
pub fn echo_server(conns: usize) -> (SocketAddr, JoinHandle<usize>) {
    let (l, addr) = listener();
    let t = std::thread::spawn(move || {
        let mut total = 0;
        for _ in 0..conns {
            let (mut s, _) = accept(&l);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n;
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        total
    });
    (addr, t)
}

/// A UDP server that echoes datagrams until it gets `quit` or has been idle for 5 s.
pub fn udp_echo_server() -> (SocketAddr, JoinHandle<usize>) {
    let s = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    let addr = s.local_addr().expect("address");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut n_echoed = 0;
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            if &buf[..n] == b"quit" {
                break;
            }
            let _ = s.send_to(&buf[..n], peer);
            n_echoed += 1;
        }
        n_echoed
    });
    (addr, t)
}

/// A loopback port nobody listens on (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let (l, addr) = listener();
    drop(l);
    addr
}

/// Whether the test runs as root (from `/proc`, no `unsafe`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A server for benchmarks: every accepted connection (served on its own thread) gets `size`
/// bytes of [`pattern`] and a close. Runs until the process ends.
pub fn bulk_server_forever(size: usize) -> SocketAddr {
    let (l, addr) = listener();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = l.accept() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                pattern(0, &mut buf);
                let mut sent = 0;
                while sent < size {
                    let n = (size - sent).min(buf.len());
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    addr
}

/// A server for benchmarks: every accepted connection (on its own thread) is read until EOF,
/// then closed. Runs until the process ends.
pub fn sink_server_forever() -> SocketAddr {
    let (l, addr) = listener();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = l.accept() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}
