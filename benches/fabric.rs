//! Per-packet cost of the fabric path (no NAT): intra-VPC forwarding of 64- and 1500-byte packets,
//! a cross-subnet hop, the gateway's echo reply and a dropped spoofed packet.
//!
//! Run: `cargo bench --bench fabric`. Figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use vpcd::dataplane::{Fabric, Verdict};
use vpcd::tables;
use vpcd::time::Instant;

const TOPOLOGY: &str = r#"
[[vpc]]
name = "bench"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "a"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "b"
  cidr = "10.0.2.0/24"
  [[vpc.instance]]
  name = "fn-1"
  subnet = "a"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "fn-2"
  subnet = "a"
  ip = "10.0.1.11"
  [[vpc.instance]]
  name = "fn-3"
  subnet = "b"
  ip = "10.0.2.10"
"#;

fn udp(dst: [u8; 4], payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], dst, 64)
        .udp(4000, 5000)
        .write(&mut v, &vec![1; payload])
        .unwrap();
    v
}

fn bench(c: &mut Criterion) {
    let plan = vpcd::topology::parse("bench.toml", TOPOLOGY).expect("valid");
    let tables = Arc::new(tables::compile(&plan));
    let mut fabric = Fabric::new(tables.clone());
    let from = tables.port_named("bench/fn-1").unwrap();

    let mut group = c.benchmark_group("fabric");
    group.throughput(Throughput::Elements(1));
    for (name, pkt) in [
        ("forward_same_subnet_64B", udp([10, 0, 1, 11], 64 - 28)),
        ("forward_same_subnet_1500B", udp([10, 0, 1, 11], 1500 - 28)),
        ("forward_other_subnet_64B", udp([10, 0, 2, 10], 64 - 28)),
    ] {
        let mut buf = pkt.clone();
        buf.resize(2048, 0);
        let len = pkt.len();
        group.bench_function(name, |b| {
            b.iter(|| {
                let v = fabric.handle(Instant::ZERO, from, black_box(&mut buf), len);
                assert!(matches!(v, Verdict::Forward { .. }));
                v
            })
        });
    }
    let mut echo = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 1, 1], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut echo, &[0; 56])
        .unwrap();
    group.bench_function("gateway_echo_reply", |b| {
        let mut buf = vec![0u8; 2048];
        b.iter(|| {
            buf[..echo.len()].copy_from_slice(&echo);
            fabric.handle(Instant::ZERO, from, black_box(&mut buf), echo.len())
        })
    });
    let mut spoofed = udp([10, 0, 1, 11], 36);
    spoofed[15] = 99;
    spoofed[10..12].fill(0);
    let c16 = vpcd::dataplane::checksum::checksum(&spoofed[..20]);
    spoofed[10..12].copy_from_slice(&c16.to_be_bytes());
    group.bench_function("drop_spoofed_64B", |b| {
        let mut buf = spoofed.clone();
        let len = buf.len();
        b.iter(|| fabric.handle(Instant::ZERO, from, black_box(&mut buf), len))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
