//! Per-packet cost of observing the fabric: the same 64-byte intra-subnet forward through
//! `Fabric::handle` alone, through an `Observer` with nothing on, with a flow log (an established
//! flow: one table hit), with a flow log across 10,000 flows, and with a capture of the sender's
//! port (two pcap views, drained to `io::sink` when half full).
//!
//! Run: `cargo bench --bench observe`. Figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use vpcd::dataplane::{Fabric, PortId};
use vpcd::observe::{Capture, CaptureConfig, FlowLog, FlowLogConfig, Observer};
use vpcd::time::Instant;

const TOPOLOGY: &str = r#"
[[vpc]]
name = "bench"
cidr = "10.0.0.0/16"
subnet = [{ name = "a", cidr = "10.0.1.0/24" }]
instance = [
    { name = "fn-1", subnet = "a", ip = "10.0.1.10" },
    { name = "fn-2", subnet = "a", ip = "10.0.1.11" },
]
"#;

fn udp(sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 1, 11], 64)
        .udp(sport, 5000)
        .write(&mut v, &[1; 64 - 28])
        .expect("a valid packet");
    v
}

fn bench(c: &mut Criterion) {
    let plan = vpcd::topology::parse("bench.toml", TOPOLOGY).expect("valid");
    let tables = Arc::new(vpcd::topology::compile::tables(&plan));
    let from: PortId = tables.port_named("bench/fn-1").expect("port");
    let pkt = udp(4000);
    let flows: Vec<Vec<u8>> = (0..10_000u16).map(|i| udp(10_000 + i)).collect();
    let mut buf = vec![0u8; 2048];
    let now = Instant::from_secs(1);

    let mut group = c.benchmark_group("observe");
    group.throughput(Throughput::Elements(1));

    let mut fabric = Fabric::new(tables.clone());
    group.bench_function("fabric_alone_64B", |b| {
        b.iter(|| {
            buf[..pkt.len()].copy_from_slice(&pkt);
            black_box(fabric.handle(now, from, &mut buf, pkt.len()))
        })
    });

    let mut fabric = Fabric::new(tables.clone());
    let mut none = Observer::new();
    group.bench_function("observer_off_64B", |b| {
        b.iter(|| {
            buf[..pkt.len()].copy_from_slice(&pkt);
            black_box(none.handle(&mut fabric, now, from, &mut buf, pkt.len()))
        })
    });

    let mut fabric = Fabric::new(tables.clone());
    let mut logged = Observer::new();
    logged.set_flow_log(FlowLog::new(&tables, FlowLogConfig::default()));
    group.bench_function("flow_log_one_flow_64B", |b| {
        b.iter(|| {
            buf[..pkt.len()].copy_from_slice(&pkt);
            black_box(logged.handle(&mut fabric, now, from, &mut buf, pkt.len()))
        })
    });

    let mut fabric = Fabric::new(tables.clone());
    let mut many = Observer::new();
    many.set_flow_log(FlowLog::new(&tables, FlowLogConfig::default()));
    let mut i = 0;
    group.bench_function("flow_log_10k_flows_64B", |b| {
        b.iter(|| {
            let p = &flows[i % flows.len()];
            i += 1;
            buf[..p.len()].copy_from_slice(p);
            black_box(many.handle(&mut fabric, now, from, &mut buf, p.len()))
        })
    });

    let mut fabric = Fabric::new(tables.clone());
    let mut captured = Observer::new();
    captured.add_capture(Capture::new(from, CaptureConfig::default()));
    let (mut own, mut nat) = (std::io::sink(), std::io::sink());
    group.bench_function("capture_64B", |b| {
        b.iter(|| {
            buf[..pkt.len()].copy_from_slice(&pkt);
            let v = captured.handle(&mut fabric, now, from, &mut buf, pkt.len());
            if let Some(c) = captured.capture_mut(0)
                && c.pending_bytes() > CaptureConfig::default().buffer_bytes / 2
            {
                c.write_pending(&mut own, &mut nat).expect("sink");
            }
            black_box(v)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
