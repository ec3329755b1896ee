//! Per-packet cost of the fabric path: intra-VPC forwarding of 64- and 1500-byte packets, a
//! cross-subnet hop, the gateway's echo reply, a dropped spoofed packet, and the full NAT paths
//! (an established SNAT flow out and back, a DNAT flow in, a new SNAT mapping).
//!
//! Run: `cargo bench --bench fabric`. Figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use vpcd::dataplane::{Fabric, Verdict};
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
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["e"]
  max_connections = 4000000
  dnat = [{ eip = "e", protocol = "udp", port = 5353, instance = "fn-1" }]
[[eip]]
name = "e"
address = "203.0.113.10"
[internet]
  [[internet.host]]
  name = "web"
  ip = "198.51.100.10"
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
    let tables = Arc::new(vpcd::topology::compile::tables(&plan));
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
    // NAT paths through the whole fabric.
    let web = tables.port_named("internet/web").unwrap();
    let out = udp([198, 51, 100, 10], 64 - 28);
    let mut buf = out.clone();
    buf.resize(2048, 0);
    assert!(matches!(
        fabric.handle(Instant::ZERO, from, &mut buf, out.len()),
        Verdict::Forward { .. }
    ));
    group.bench_function("snat_established_out_64B", |b| {
        b.iter(|| {
            buf[..out.len()].copy_from_slice(&out);
            fabric.handle(Instant::ZERO, from, black_box(&mut buf), out.len())
        })
    });
    let mut back = Vec::new();
    PacketBuilder::ipv4([198, 51, 100, 10], [203, 0, 113, 10], 64)
        .udp(5000, 4000)
        .write(&mut back, &[1; 36])
        .unwrap();
    group.bench_function("snat_established_in_64B", |b| {
        b.iter(|| {
            buf[..back.len()].copy_from_slice(&back);
            let v = fabric.handle(Instant::ZERO, web, black_box(&mut buf), back.len());
            assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
            v
        })
    });
    let mut dnat = Vec::new();
    PacketBuilder::ipv4([198, 51, 100, 10], [203, 0, 113, 10], 64)
        .udp(6000, 5353)
        .write(&mut dnat, &[1; 36])
        .unwrap();
    group.bench_function("dnat_in_64B", |b| {
        b.iter(|| {
            buf[..dnat.len()].copy_from_slice(&dnat);
            fabric.handle(Instant::ZERO, web, black_box(&mut buf), dnat.len())
        })
    });
    // New mappings: every iteration a flow the table has not seen (fresh fabric per sample, so
    // the table never wraps to established flows; growth of the tables is included).
    let tmpl = udp([198, 51, 100, 10], 64 - 28);
    group.bench_function("snat_new_mapping_64B", |b| {
        b.iter_custom(|iters| {
            let mut fabric = Fabric::new(tables.clone());
            let mut buf = vec![0u8; 2048];
            let start = std::time::Instant::now();
            for n in 0..iters {
                let sport = 1024 + (n % 60000) as u16;
                let dport = 1 + ((n / 60000) % 60000) as u16;
                buf[..tmpl.len()].copy_from_slice(&tmpl);
                buf[20..22].copy_from_slice(&sport.to_be_bytes());
                buf[22..24].copy_from_slice(&dport.to_be_bytes());
                buf[26..28].fill(0);
                let _ =
                    black_box(fabric.handle(Instant::ZERO, from, black_box(&mut buf), tmpl.len()));
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
