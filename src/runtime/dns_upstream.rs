//! The VPC resolvers' upstream under `vpcd up`: forwarded queries asked of the topology's
//! `[internet] resolvers` through host sockets of the namespace `vpcd up` runs in (the uplink's
//! network), on a small pool of threads so the loop never waits.
//!
//! Each query is tried on each upstream in order: over UDP from a fresh socket (a fresh port the
//! kernel picks at random, connected to the upstream, so only its datagrams arrive), waiting
//! [`UPSTREAM_TIMEOUT`]; a truncated answer is asked again over TCP. The query's id is random
//! (`sim::resolver::random_id`); a datagram with another id is thrown away and counted
//! ([`Upstream::mismatched`]), and waiting goes on. The first answer wins; none is `None` (the resolver answers SERVFAIL). These
//! queries are the resolver's, not an instance's: like AWS's resolver, they pass no security
//! group, NAT or egress allow-list of the VPC.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sim::resolver::Upstream;
use crate::topology::model::Upstream as UpstreamConfig;

/// How long one upstream gets to answer one query, per transport.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Threads asking upstreams, shared by every resolver of the process.
const WORKERS: usize = 8;
/// Where the host's nameservers are, for `resolvers = ["host"]`.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The upstream addresses of `configured`: `"host"` becomes the nameservers of the host's
/// `/etc/resolv.conf` (none when it cannot be read), in order, without repeats.
pub fn upstream_addresses(configured: &[UpstreamConfig]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for c in configured {
        let more = match c {
            UpstreamConfig::Addr(a) => vec![*a],
            UpstreamConfig::Host => std::fs::read_to_string(HOST_RESOLV_CONF)
                .map(|t| nameservers(&t))
                .unwrap_or_default(),
        };
        for a in more {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// The `nameserver` lines of a `resolv.conf`, port 53.
fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// One forwarded query for the pool.
struct Job {
    token: u64,
    query: Vec<u8>,
    upstreams: Arc<[SocketAddr]>,
    done: Sender<(u64, Option<Vec<u8>>)>,
    /// The resolver's count of answers thrown away.
    mismatched: Arc<AtomicU64>,
}

/// The pool's queue, started on first use.
fn pool() -> &'static Sender<Job> {
    static POOL: OnceLock<Sender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let rx = rx.clone();
            // A pool that cannot start a thread has fewer workers; with none, queries wait
            // for ever and their clients retry.
            let _ = std::thread::Builder::new()
                .name(format!("dns upstream {i}"))
                .spawn(move || work(&rx));
        }
        tx
    })
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let answer = exchange(&job.upstreams, &job.query, &job.mismatched);
        // A resolver that went away (a reload) no longer wants the answer.
        let _ = job.done.send((job.token, answer));
    }
}

/// Asks each upstream in turn; see the module docs.
fn exchange(upstreams: &[SocketAddr], query: &[u8], mismatched: &AtomicU64) -> Option<Vec<u8>> {
    upstreams.iter().find_map(|up| {
        let answer = udp_exchange(*up, query, mismatched)?;
        if truncated(&answer) {
            tcp_exchange(*up, query, mismatched).or(Some(answer))
        } else {
            Some(answer)
        }
    })
}

/// Whether a response has TC set.
fn truncated(response: &[u8]) -> bool {
    response.get(2).is_some_and(|b| b & 0x02 != 0)
}

fn udp_exchange(up: SocketAddr, query: &[u8], mismatched: &AtomicU64) -> Option<Vec<u8>> {
    let any: IpAddr = match up {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    socket.connect(up).ok()?;
    socket.send(query).ok()?;
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = socket.recv(&mut buf).ok()?;
        // Only the answer to this query (same id) counts; anything else is counted and
        // ignored.
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Some(buf);
        }
        mismatched.fetch_add(1, Ordering::Relaxed);
    }
}

fn tcp_exchange(up: SocketAddr, query: &[u8], mismatched: &AtomicU64) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&up, UPSTREAM_TIMEOUT).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    let len = u16::try_from(query.len()).ok()?.to_be_bytes();
    s.write_all(&len).ok()?;
    s.write_all(query).ok()?;
    let mut prefix = [0u8; 2];
    s.read_exact(&mut prefix).ok()?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    s.read_exact(&mut answer).ok()?;
    let ours = answer.len() >= 12 && answer[..2] == query[..2];
    if !ours {
        mismatched.fetch_add(1, Ordering::Relaxed);
    }
    ours.then_some(answer)
}

/// The upstream of a resolver forwarding to `upstreams`; `None` (no forwarding) for none.
pub fn for_resolver(upstreams: &[SocketAddr]) -> Option<Box<dyn Upstream>> {
    (!upstreams.is_empty()).then(|| Box::new(HostUpstream::new(upstreams)) as Box<dyn Upstream>)
}

/// One resolver's handle on the pool.
pub struct HostUpstream {
    upstreams: Arc<[SocketAddr]>,
    done_tx: Sender<(u64, Option<Vec<u8>>)>,
    done_rx: Receiver<(u64, Option<Vec<u8>>)>,
    mismatched: Arc<AtomicU64>,
}

impl HostUpstream {
    /// Forwards to `upstreams`, in order.
    pub fn new(upstreams: &[SocketAddr]) -> HostUpstream {
        let (done_tx, done_rx) = mpsc::channel();
        HostUpstream {
            upstreams: upstreams.into(),
            done_tx,
            done_rx,
            mismatched: Arc::default(),
        }
    }
}

impl Upstream for HostUpstream {
    fn submit(&mut self, token: u64, query: Vec<u8>) -> bool {
        pool()
            .send(Job {
                token,
                query,
                upstreams: self.upstreams.clone(),
                done: self.done_tx.clone(),
                mismatched: self.mismatched.clone(),
            })
            .is_ok()
    }

    fn completed(&mut self) -> Vec<(u64, Option<Vec<u8>>)> {
        self.done_rx.try_iter().collect()
    }

    fn mismatched(&mut self) -> u64 {
        self.mismatched.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback upstream that first answers with another id (a forgery), then with the right
    /// one: the forwarder takes the second and counts the first.
    #[test]
    fn an_answer_with_another_id_is_thrown_away_and_counted() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let up = server.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, client) = server.recv_from(&mut buf).unwrap();
            let mut answer = buf[..n].to_vec();
            answer[2] |= 0x80; // QR
            let mut forged = answer.clone();
            forged[0] ^= 0x5a;
            server.send_to(&forged, client).unwrap();
            server.send_to(&answer, client).unwrap();
        });
        let mut query = vec![0u8; 12];
        query[..2].copy_from_slice(&0x1234u16.to_be_bytes());
        let mismatched = AtomicU64::new(0);
        let got = udp_exchange(up, &query, &mismatched).expect("the real answer");
        fake.join().unwrap();
        assert_eq!(&got[..2], &[0x12, 0x34]);
        assert_eq!(mismatched.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn nameservers_of_a_resolv_conf() {
        let text = "# comment\nsearch example\nnameserver 192.0.2.53\nnameserver  2001:db8::53\nnameserver bogus\n";
        assert_eq!(
            nameservers(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn explicit_upstreams_keep_their_order_without_repeats() {
        let a: SocketAddr = "192.0.2.53:53".parse().unwrap();
        let b: SocketAddr = "192.0.2.54:5353".parse().unwrap();
        let configured = [
            UpstreamConfig::Addr(a),
            UpstreamConfig::Addr(b),
            UpstreamConfig::Addr(a),
        ];
        assert_eq!(upstream_addresses(&configured), vec![a, b]);
    }
}
