//! The worst new-flow latency of a NAT gateway under churn (issue 14, item 4): a gateway holding
//! about `NAT_CHURN_LIVE` sessions (default 1,000,000) keeps opening new UDP flows while the
//! oldest expire, driven the way the runtime drives it (that second's new flows, and after every
//! 64 of them `handle_timeout` when `poll_timeout` says it is due). Every `outbound` call of a new
//! flow and every `handle_timeout` call is timed on its own; the report gives their percentiles and maxima. A connection table
//! that rehashes or grows all at once shows here as a maximum of milliseconds where the median
//! is a fraction of a microsecond: the loop's thread (and every port's packets) waits that long.
//!
//! Run: `cargo bench --bench nat_churn` (env `NAT_CHURN_LIVE`, `NAT_CHURN_SECONDS`: virtual
//! seconds measured after two warm-up lifetimes, default 40). Not a criterion bench: criterion
//! reports means and spreads, and the figure here is the single worst call.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as Clock};

use etherparse::PacketBuilder;
use vpcd::dataplane::nat::NatGateway;
use vpcd::dataplane::nat::config::{NatConfig, Profile, Timeouts};
use vpcd::time::Instant;

/// Seconds a flow lives (its UDP timeout): the live count is `per_second * (TIMEOUT + 1)`.
const TIMEOUT: u64 = 9;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn micros(d: Duration) -> String {
    format!("{:.2} us", d.as_secs_f64() * 1e6)
}

fn run(profile: Profile, name: &str, live: u64, seconds: u64) {
    let config = NatConfig {
        port_reuse_delay: Duration::ZERO,
        max_entries: (live as usize * 2).max(1 << 20),
        timeouts: Timeouts {
            udp: Duration::from_secs(TIMEOUT),
            ..NatConfig::profile(profile).timeouts
        },
        ..NatConfig::profile(profile)
    };
    let eips: Vec<Ipv4Addr> = (1..=32).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect();
    let mut g = NatGateway::new(config, &eips, 1).expect("gateway");
    let per_second = live / (TIMEOUT + 1);
    let mut template = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 10], [198, 51, 100, 7], 64)
        .udp(1, 53)
        .write(&mut template, &[])
        .expect("packet");
    let mut flow = 0u64;
    let mut opens = Vec::new();
    let mut timeouts = Vec::new();
    let warm = 2 * (TIMEOUT + 1);
    for second in 0..warm + seconds {
        let measured = second >= warm;
        let now = Instant::from_secs(second);
        for _ in 0..per_second {
            let mut p = template.clone();
            // Distinct internal endpoints: 16,384 hosts x ephemeral ports.
            p[12..16].copy_from_slice(&(0x0a02_0000 + (flow % 16_384) as u32).to_be_bytes());
            p[20..22].copy_from_slice(&(1024 + (flow / 16_384 % 60_000) as u16).to_be_bytes());
            flow += 1;
            let start = Clock::now();
            let r = black_box(g.outbound(now, 2, &mut p));
            let took = start.elapsed();
            assert!(r.is_ok(), "flow {flow} refused: {r:?}");
            if measured {
                opens.push(took);
            }
            // As the loop does: after each batch of packets, the timers if they are due.
            if flow.is_multiple_of(64) && g.poll_timeout().is_some_and(|t| t <= now) {
                let start = Clock::now();
                g.handle_timeout(now);
                if measured {
                    timeouts.push(start.elapsed());
                }
            }
        }
    }
    opens.sort_unstable();
    timeouts.sort_unstable();
    println!(
        "nat_churn/{name}: {} live sessions, {} new flows timed: p50 {}, p99 {}, p99.9 {}, \
         p99.99 {}, max {}; {} handle_timeout calls: p50 {}, max {}",
        g.counters().active_sessions,
        opens.len(),
        micros(percentile(&opens, 0.5)),
        micros(percentile(&opens, 0.99)),
        micros(percentile(&opens, 0.999)),
        micros(percentile(&opens, 0.9999)),
        micros(opens.last().copied().unwrap_or_default()),
        timeouts.len(),
        micros(percentile(&timeouts, 0.5)),
        micros(timeouts.last().copied().unwrap_or_default()),
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: keep that quick.
    let benching = std::env::args().any(|a| a == "--bench");
    let live = if benching {
        env("NAT_CHURN_LIVE", 1_000_000)
    } else {
        20_000
    };
    let seconds = if benching {
        env("NAT_CHURN_SECONDS", 40)
    } else {
        2
    };
    for (name, profile) in [("rfc", Profile::Rfc), ("aws", Profile::Aws)] {
        run(profile, name, live, seconds);
    }
}
