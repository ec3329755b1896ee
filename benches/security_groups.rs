//! Per-packet cost of security-group evaluation in the fabric, with 1, 60 and 1000 ingress rules
//! on the receiver (the cloud's per-group rule limit is 60, 1000 its total per interface):
//!
//! - `untracked/N`: a TCP packet that no flow covers, so the receiver's rules are evaluated; the
//!   only rule that matches is the last one (the worst case of the linear scan). It is an ACK, so
//!   it is allowed without opening a flow and every iteration pays the full evaluation.
//! - `new_flow/N`: a SYN from a fresh source port each time: evaluation plus tracking the flow
//!   (includes building the packet; every 59,000 flows the fabric starts over, amortised).
//! - `established/N`: a packet of a tracked flow: one lookup, no rule is looked at — must be flat
//!   in N.
//!
//! Both sides are in different subnets without ACLs (default ACL). Run:
//! `cargo bench --bench security_groups`. Figures go to BENCHMARKS.md.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use vpcd::dataplane::{Fabric, Verdict};
use vpcd::tables::Tables;
use vpcd::time::Instant;

fn topology(rules: usize) -> String {
    let mut ingress = String::new();
    for i in 0..rules.saturating_sub(1) {
        let _ = writeln!(
            ingress,
            "{{ protocol = \"tcp\", ports = {}, peer = \"192.0.2.0/24\" }},",
            10000 + i
        );
    }
    ingress.push_str("{ protocol = \"tcp\", ports = 80, peer = \"10.0.0.0/16\" },");
    format!(
        r#"
[[vpc]]
name = "bench"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "a"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "b"
  cidr = "10.0.2.0/24"
  [[vpc.security_group]]
  name = "big"
  ingress = [
{ingress}
  ]
  [[vpc.instance]]
  name = "client"
  subnet = "a"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "server"
  subnet = "b"
  ip = "10.0.2.10"
  security_groups = ["big"]
"#
    )
}

fn tcp(sport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64).tcp(sport, 80, 1, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 6]).unwrap();
    v
}

fn tables(rules: usize) -> Arc<Tables> {
    let plan = vpcd::topology::parse("bench.toml", &topology(rules)).expect("valid");
    Arc::new(vpcd::topology::compile::tables(&plan))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("security_groups");
    for rules in [1usize, 60, 1000] {
        let t = tables(rules);
        let client = t.port_named("bench/client").unwrap();
        let server = t.port_named("bench/server").unwrap();
        let now = Instant::from_secs(1);

        // Untracked packets: full rule evaluation, nothing inserted.
        let mut fabric = Fabric::new(t.clone());
        let pkt = tcp(40000, false);
        let mut buf = vec![0u8; 2048];
        g.bench_function(format!("untracked/{rules}"), |b| {
            b.iter(|| {
                buf[..pkt.len()].copy_from_slice(&pkt);
                let v = fabric.handle(now, client, &mut buf, pkt.len());
                assert!(matches!(v, Verdict::Forward { port, .. } if port == server));
                black_box(v)
            })
        });

        // New flows: evaluation plus tracking.
        let mut fabric = Fabric::new(t.clone());
        let mut sport: u16 = 1024;
        let mut buf = vec![0u8; 2048];
        g.bench_function(format!("new_flow/{rules}"), |b| {
            b.iter(|| {
                sport = if sport >= 60000 {
                    // Rarely (once per 59,000 iterations): start over with an empty table.
                    fabric = Fabric::new(t.clone());
                    1024
                } else {
                    sport + 1
                };
                let pkt = tcp(sport, true);
                buf[..pkt.len()].copy_from_slice(&pkt);
                let v = fabric.handle(now, client, &mut buf, pkt.len());
                assert!(matches!(v, Verdict::Forward { .. }));
                black_box(v)
            })
        });

        // Established: open the flow once, then its packets skip the rules.
        let mut fabric = Fabric::new(t.clone());
        let syn = tcp(50000, true);
        let mut buf = vec![0u8; 2048];
        buf[..syn.len()].copy_from_slice(&syn);
        let v = fabric.handle(now, client, &mut buf, syn.len());
        assert!(matches!(v, Verdict::Forward { .. }));
        let pkt = tcp(50000, false);
        g.bench_function(format!("established/{rules}"), |b| {
            b.iter(|| {
                buf[..pkt.len()].copy_from_slice(&pkt);
                let v = fabric.handle(now, client, &mut buf, pkt.len());
                assert!(matches!(v, Verdict::Forward { .. }));
                black_box(v)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
