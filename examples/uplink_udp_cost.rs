//! The CPU cost of one 64-byte datagram out through the uplink's UDP path, alone: `Uplink::deliver`
//! of IPv4/UDP packets from one NAT mapping to one destination on 127.0.0.1 (a sink thread
//! drains it), in rounds; prints the thread CPU time and the wall time per datagram (median of
//! the rounds). For before/after comparisons of `src/uplink/udp.rs` on a noisy machine, where
//! CPU time per datagram is steadier than throughput. Run: `cargo run --release --example
//! uplink_udp_cost [ROUNDS] [DATAGRAMS_PER_ROUND]`.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Instant as WallInstant;

use vpcd::time::Instant;
use vpcd::uplink::{Uplink, UplinkConfig};

/// This thread's time on a CPU so far (ns), from `/proc/thread-self/schedstat`.
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat's first field")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let per_round: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    let to = match sink.local_addr().expect("addr") {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while sink.recv(&mut buf).is_ok() {}
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut cfg = UplinkConfig::new(Ipv4Addr::new(198, 51, 100, 1));
    cfg.blocked.clear();
    let mut uplink = Uplink::new(cfg, Instant::ZERO).expect("uplink");
    let src = Ipv4Addr::new(203, 0, 113, 10);
    let mut pkt = Vec::new();
    etherparse::PacketBuilder::ipv4(src.octets(), to.ip().octets(), 64)
        .udp(40123, to.port())
        .write(&mut pkt, &[0x5a; 64])
        .expect("packet");
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    let mut out = [0u8; 2048];
    for _ in 0..rounds {
        let (c0, w0) = (thread_cpu_ns(), WallInstant::now());
        for i in 0..per_round {
            uplink.deliver(Instant::ZERO, &pkt);
            if i % 64 == 63 {
                uplink.poll(Instant::ZERO);
                while uplink.take_tx(&mut out).is_some() {}
            }
        }
        cpu.push((thread_cpu_ns() - c0) as f64 / per_round as f64);
        wall.push(w0.elapsed().as_nanos() as f64 / per_round as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "uplink udp 64 B out: {:.0} ns CPU, {:.0} ns wall per datagram (median of {rounds} rounds of {per_round}); {} bytes to the host",
        median(&mut cpu),
        median(&mut wall),
        uplink.counters().bytes_to_host
    );
}
