//! The public uplink in process: one TCP flow between a smoltcp "function" and a server on
//! 127.0.0.1, through `vpcd::uplink::Uplink` (segment-side smoltcp, host `TcpStream`), in both
//! directions; and connection setups in a row (connect, handshake on both sides, close).
//!
//! Both smoltcp stacks (the function's and the uplink's) run on the bench thread, so the figures
//! are a floor for the uplink alone: under `vpcd up` the function is a kernel stack behind a TUN.
//!
//! Run: `cargo bench --bench uplink`. Figures go to BENCHMARKS.md.

#[path = "../tests/uplink_support/mod.rs"]
mod uplink_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smoltcp::socket::tcp;
use tokio::runtime::Runtime;
use uplink_support::{Pump, bulk_server_forever, loopback_config, sink_server_forever};

const SIZE: usize = 32 << 20;
const LIMIT: Duration = Duration::from_secs(60);

fn finished(s: &tcp::Socket<'_>) -> bool {
    matches!(
        s.state(),
        tcp::State::CloseWait | tcp::State::Closed | tcp::State::TimeWait | tcp::State::LastAck
    )
}

/// Connects, reads until the server's FIN, closes; the time it took.
fn download(rt: &Runtime, p: &mut Pump, server: SocketAddr, size: usize) -> Duration {
    rt.block_on(async {
        let t0 = Instant::now();
        let h = p.f.connect(server);
        let mut got = 0;
        p.until(LIMIT, |f, _| {
            got += f.discard(h);
            let s = f.tcp(h);
            (finished(s) && !s.can_recv()).then_some(())
        })
        .await
        .expect("the download finishes");
        assert_eq!(got, size);
        p.f.tcp(h).close();
        p.until(LIMIT, |_, u| (u.active().tcp_open == 0).then_some(()))
            .await
            .expect("the flow ends");
        let took = t0.elapsed();
        p.f.sockets.remove(h);
        took
    })
}

/// Connects, sends `size` bytes, closes, waits for the server's close.
fn upload(rt: &Runtime, p: &mut Pump, server: SocketAddr, size: usize) -> Duration {
    rt.block_on(async {
        let data = vec![0x5a; 256 * 1024];
        let t0 = Instant::now();
        let h = p.f.connect(server);
        let mut sent = 0;
        p.until(LIMIT, |f, _| {
            let s = f.tcp(h);
            while sent < size && s.can_send() {
                let n = (size - sent).min(data.len());
                sent += s.send_slice(&data[..n]).unwrap_or(0);
            }
            if sent == size && s.may_send() {
                s.close();
            }
            matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait).then_some(())
        })
        .await
        .expect("the upload finishes");
        p.until(LIMIT, |_, u| (u.active().tcp_open == 0).then_some(()))
            .await
            .expect("the flow ends");
        let took = t0.elapsed();
        p.f.sockets.remove(h);
        took
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut p = rt.block_on(async { Pump::new(loopback_config()) });
    let bulk = bulk_server_forever(SIZE);
    let sink = sink_server_forever();
    let empty = bulk_server_forever(0);

    let mut group = c.benchmark_group("uplink");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("tcp_download_32MiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| download(&rt, &mut p, bulk, SIZE)).sum())
    });
    group.bench_function("tcp_upload_32MiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| upload(&rt, &mut p, sink, SIZE)).sum())
    });
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function("tcp_connection_setup_and_close", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| download(&rt, &mut p, empty, 0)).sum())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
