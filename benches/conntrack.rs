//! Per-packet cost of the NAT gateway core: translating an established flow outbound and inbound,
//! setting up a new mapping, and the table's memory per session at 1 M sessions.
//!
//! Run: `cargo bench --bench conntrack`. Targets: <= 100 ns per translated packet, <= 1 us per new
//! mapping, <= 128 bytes per session.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use vpcd::dataplane::nat::config::{NatConfig, Profile};
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
        // Churn: the gateway already held and released 200,000 flows (port reuse delay 0), so
        // its tables have room; each iteration opens one flow from a fresh (host, port).
        group.bench_function(format!("{name}/new_udp_flow_steady"), |b| {
            b.iter_custom(|iters| {
                let config = NatConfig {
                    port_reuse_delay: Duration::ZERO,
                    ..NatConfig::profile(profile)
                };
                let mut g = loaded(config, 200_000);
                let mut total = Duration::ZERO;
                let mut left = iters as u32;
                while left > 0 {
                    g.flush(Instant::ZERO); // untimed: makes room for the next chunk
                    let n = left.min(200_000);
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
