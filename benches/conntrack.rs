//! Per-packet cost of the NAT gateway core: translating an established flow outbound and inbound,
//! setting up a new mapping, and the table's memory per session at 1 M sessions.
//!
//! Run: `cargo bench --bench conntrack`. Targets: <= 100 ns per translated packet, <= 1 us per new
//! mapping (also with one EIP's ports 90 % taken), <= 128 bytes per session.
//!
//! The steady-state new-flow cases keep one gateway per case under churn (flows expire through
//! `handle_timeout` while new ones arrive) and time `outbound` only: building a loaded gateway
//! inside each sample would leave criterion a handful of timed flows per sample, measuring cold
//! caches rather than flow setup.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use vpcd::dataplane::nat::config::{NatConfig, Profile, Timeouts};
use vpcd::dataplane::nat::{NatGateway, Translated};
use vpcd::time::Instant;

const HOST: [u8; 4] = [10, 0, 1, 10];
const REMOTE: [u8; 4] = [198, 51, 100, 7];

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, &vec![0x5a; payload])
        .unwrap();
    v
}

fn eips(n: u8) -> Vec<Ipv4Addr> {
    (0..n).map(|i| Ipv4Addr::new(203, 0, 113, i + 1)).collect()
}

/// A gateway holding `background` other sessions, so lookups hit a realistically sized table.
fn loaded(config: NatConfig, background: u32) -> NatGateway {
    let mut g = NatGateway::new(config, &eips(32), 1).unwrap();
    let mut p = udp(HOST, 1, REMOTE, 53, 0);
    for i in 0..background {
        let host = 0x0a01_0000 | (i / 1000);
        p[12..16].copy_from_slice(&host.to_be_bytes());
        p[20..22].copy_from_slice(&(10_000 + (i % 1000) as u16).to_be_bytes());
        let _ = g.outbound(Instant::ZERO, 0, &mut p).unwrap();
    }
    g
}

fn translate(c: &mut Criterion) {
    let mut group = c.benchmark_group("nat_established");
    group.throughput(Throughput::Elements(1));
    for (name, profile) in [("rfc", Profile::Rfc), ("aws", Profile::Aws)] {
        let mut g = loaded(NatConfig::profile(profile), 100_000);
        let mut o = udp(HOST, 5000, REMOTE, 53, 64);
        let Ok(Translated::Forward { external, .. }) = g.outbound(Instant::ZERO, 1, &mut o) else {
            panic!("flow set up");
        };
        let ext_port = u16::from_be_bytes([o[20], o[21]]);
        let out_pkt = udp(HOST, 5000, REMOTE, 53, 64);
        let in_pkt = udp(REMOTE, 53, external.octets(), ext_port, 64);
        let mut buf = out_pkt.clone();
        let now = Instant::from_secs(1);
        group.bench_function(format!("{name}/outbound_udp_92B"), |b| {
            b.iter(|| {
                buf.copy_from_slice(&out_pkt);
                black_box(g.outbound(now, 1, black_box(&mut buf)))
            })
        });
        let mut buf = in_pkt.clone();
        group.bench_function(format!("{name}/inbound_udp_92B"), |b| {
            b.iter(|| {
                buf.copy_from_slice(&in_pkt);
                black_box(g.inbound(now, black_box(&mut buf)))
            })
        });
    }
    group.finish();
}

/// A gateway under steady churn, driven the way the runtime drives it: each virtual second,
/// `per_tick` new UDP flows from fresh internal endpoints, then `handle_timeout`, which expires the
/// flows of `timeout + 1` seconds ago (port reuse delay 0: their ports are free at once). About
/// `per_tick * (timeout + 1)` sessions are live. Built once per benchmark, so that criterion's
/// samples measure many flows and never the setup.
struct Churn {
    g: NatGateway,
    per_tick: u32,
    /// Virtual seconds.
    tick: u64,
    /// Flows opened in the current second.
    in_tick: u32,
    /// Flows opened so far: flow `k` comes from host `10.2.0.0 + k % 4096`, port `32768 + k / 4096
    /// % 28,000` (ephemeral ports, so port preservation collides as it does in real life).
    next: u64,
}

impl Churn {
    fn new(profile: Profile, eips: &[Ipv4Addr], live: u32, timeout: u64) -> Self {
        let config = NatConfig {
            port_reuse_delay: Duration::ZERO,
            timeouts: Timeouts {
                udp: Duration::from_secs(timeout),
                ..NatConfig::profile(profile).timeouts
            },
            ..NatConfig::profile(profile)
        };
        let mut c = Churn {
            g: NatGateway::new(config, eips, 1).unwrap(),
            per_tick: live / (timeout as u32 + 1),
            tick: 0,
            in_tick: 0,
            next: 0,
        };
        // Two full lifetimes: the tables reach their steady size and have seen deletions.
        c.open(u64::from(c.per_tick) * (2 * timeout + 3));
        let counters = c.g.counters();
        assert_eq!(counters.refused(), 0, "every flow admitted");
        assert!(counters.active_sessions <= u64::from(live));
        c
    }

    /// Opens `n` new flows; returns the time spent in `outbound` only.
    fn open(&mut self, n: u64) -> Duration {
        let template: [u8; 28] = udp(HOST, 1, REMOTE, 53, 0).try_into().unwrap();
        let mut total = Duration::ZERO;
        let mut left = n;
        while left > 0 {
            if self.in_tick == self.per_tick {
                self.tick += 1;
                self.in_tick = 0;
                // Bounded work per call: come back until the tick is done.
                let now = Instant::from_secs(self.tick);
                while self.g.poll_timeout().is_some_and(|t| t <= now) {
                    self.g.handle_timeout(now);
                }
            }
            let k = left.min(u64::from(self.per_tick - self.in_tick));
            let now = Instant::from_secs(self.tick);
            let first = self.next;
            let start = std::time::Instant::now();
            for f in first..first + k {
                let mut p = template;
                p[12..16].copy_from_slice(&(0x0a02_0000 + (f % 4096) as u32).to_be_bytes());
                p[20..22].copy_from_slice(&(32_768 + (f / 4096 % 28_000) as u16).to_be_bytes());
                black_box(self.g.outbound(now, 2, &mut p)).ok();
            }
            total += start.elapsed();
            self.next += k;
            self.in_tick += k as u32;
            left -= k;
        }
        total
    }
}

fn new_mapping(c: &mut Criterion) {
    let mut group = c.benchmark_group("nat_new_flow");
    group.throughput(Throughput::Elements(1));
    let template: [u8; 28] = udp(HOST, 1, REMOTE, 53, 0).try_into().unwrap();
    let packet = |i: u32| {
        let mut p = template;
        p[12..16].copy_from_slice(&(0x0a02_0000 | (i / 1000)).to_be_bytes());
        p[20..22].copy_from_slice(&(20_000 + (i % 1000) as u16).to_be_bytes());
        p
    };
    for (name, profile) in [("rfc", Profile::Rfc), ("aws", Profile::Aws)] {
        // Steady state: ~200,000 live sessions over 32 EIPs, flows expiring as new ones come.
        // (Built on first use, kept across samples: criterion calls the closure once per sample
        // and only for the cases its filter selects.)
        let mut churn = None;
        group.bench_function(format!("{name}/new_udp_flow_steady"), |b| {
            let churn = churn.get_or_insert_with(|| Churn::new(profile, &eips(32), 200_000, 29));
            b.iter_custom(|iters| churn.open(iters))
        });
        // One EIP at ~90 % port occupancy (87-90 % as the second's flows arrive). EIM: most
        // preserved ports and random probes collide. Symmetric: every flow goes to the same
        // destination, so the ports towards it are ~90 % taken.
        let ports = {
            let (lo, hi) = NatConfig::profile(profile).port_range;
            u32::from(hi) - u32::from(lo) + 1
        };
        let mut churn = None;
        group.bench_function(format!("{name}/new_udp_flow_one_eip_90pct"), |b| {
            let churn =
                churn.get_or_insert_with(|| Churn::new(profile, &eips(1), ports * 9 / 10, 29));
            b.iter_custom(|iters| churn.open(iters))
        });
        // Filling an empty gateway: includes the amortised growth of slabs and tables.
        group.bench_function(format!("{name}/new_udp_flow_filling"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as u32;
                while left > 0 {
                    let mut g = NatGateway::new(NatConfig::profile(profile), &eips(32), 1).unwrap();
                    let n = left.min(500_000);
                    let start = std::time::Instant::now();
                    for i in 0..n {
                        let mut p = packet(i);
                        black_box(g.outbound(Instant::ZERO, 2, &mut p)).ok();
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    group.finish();
}

fn memory(_: &mut Criterion) {
    for (name, profile) in [
        ("rfc (EIM, one mapping per session)", Profile::Rfc),
        ("aws (symmetric)", Profile::Aws),
    ] {
        let n = 1_000_000;
        let g = loaded(NatConfig::profile(profile), n);
        let per = g.memory_bytes() as f64 / f64::from(n);
        println!("nat memory {name}: {per:.1} bytes/session at {n} sessions");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = translate, new_mapping, memory
}
criterion_main!(benches);
