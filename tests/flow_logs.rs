//! Flow logs through the in-process simulator (issue 5, item 3): REJECT records name the drop
//! reason, SNAT leaves ACCEPT records on both sides with the private address in `pkt-srcaddr`,
//! windows close on the virtual clock, the table is bounded (SKIPDATA), and a flush loses
//! nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use vpcd::dataplane::DropReason;
use vpcd::observe::{
    Action, Direction, FlowLogConfig, FlowLogWriter, FlowRecord, LogStatus, RejectReason,
};
use vpcd::sim::{Observed, Simulation};
use vpcd::time::Instant;

fn load(name: &str) -> Simulation {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name);
    Simulation::load(&path).expect("a bundled topology loads")
}

fn config(window: Duration) -> FlowLogConfig {
    FlowLogConfig {
        window,
        ..FlowLogConfig::default()
    }
}

fn at<'a>(records: &'a [FlowRecord], port: &str) -> impl Iterator<Item = &'a FlowRecord> {
    let port = port.to_string();
    records.iter().filter(move |r| r.interface_id == port)
}

const SG_TOPOLOGY: &str = r#"
    [[vpc]]
    name = "t"
    cidr = "10.0.0.0/16"
    subnet = [{ name = "s", cidr = "10.0.1.0/24" }]
    security_group = [
        { name = "web-only", ingress = [{ protocol = "tcp", ports = 80, peer = "10.0.0.0/16" }] },
    ]
    instance = [
        { name = "a", subnet = "s", ip = "10.0.1.10", attach = "sim" },
        { name = "b", subnet = "s", ip = "10.0.1.20", attach = "sim", security_groups = ["web-only"] },
    ]
"#;

#[test]
fn a_connection_denied_by_a_security_group_leaves_a_reject_record_naming_it() {
    let mut sim = Simulation::parse("sg.toml", SG_TOPOLOGY).expect("valid topology");
    sim.enable_flow_log(config(Duration::from_secs(60)));
    assert_eq!(
        sim.probe("t/a", "10.0.1.20:22/tcp").unwrap(),
        Observed::Deny
    );
    assert_eq!(
        sim.probe("t/a", "10.0.1.20:80/tcp").unwrap(),
        Observed::Allow
    );
    let records = sim.flush_flow_log();
    let reject: Vec<_> = records
        .iter()
        .filter(|r| r.action == Some(Action::Reject))
        .collect();
    assert_eq!(reject.len(), 1, "{reject:#?}");
    let r = reject[0];
    assert_eq!(r.interface_id, "t/a");
    assert_eq!(r.flow_direction, Some(Direction::Egress));
    assert_eq!(r.reject_reason.map(RejectReason::label), Some("sg_ingress"));
    assert_eq!(r.dstport, Some(22));
    assert_eq!(r.protocol, Some(6));
    assert_eq!(
        r.tcp_flags,
        Some(2),
        "only SYNs (retransmitted) were refused"
    );
    assert!(r.packets >= 2, "the SYN and its retransmission: {r:?}");
    assert_eq!(
        (r.vpc_id.as_deref(), r.subnet_id.as_deref()),
        (Some("t"), Some("s"))
    );
    assert_eq!(r.instance_id.as_deref(), Some("a"));
    // The allowed port: ACCEPT both ways at both ports, nothing at b for port 22.
    assert!(at(&records, "t/b").all(|r| r.action == Some(Action::Accept)));
    assert!(at(&records, "t/b").all(|r| r.srcport != Some(22) && r.dstport != Some(22)));
    let syn_ack = at(&records, "t/b")
        .find(|r| r.flow_direction == Some(Direction::Egress) && r.srcport == Some(80))
        .expect("b's replies are logged");
    assert_eq!(
        syn_ack.tcp_flags.map(|f| f & 18),
        Some(18),
        "SYN-ACK as AWS reports it"
    );
}

#[test]
fn a_connection_denied_by_a_network_acl_names_the_acl_side() {
    let mut sim = load("web-tier.toml");
    sim.enable_flow_log(config(Duration::from_secs(60)));
    assert_eq!(
        sim.probe("shop/frontend", "shop/api:9001/tcp").unwrap(),
        Observed::Deny
    );
    let records = sim.flush_flow_log();
    let r = at(&records, "shop/frontend")
        .find(|r| r.dstport == Some(9001))
        .expect("a record for the denied flow");
    assert_eq!(r.action, Some(Action::Reject));
    assert_eq!(
        r.reject_reason,
        Some(RejectReason::Dropped(DropReason::NetworkAclInbound))
    );
}

#[test]
fn snat_leaves_accept_records_on_both_sides_with_the_private_address_before_nat() {
    let mut sim = load("quickstart.toml");
    sim.enable_flow_log(FlowLogConfig {
        epoch: Duration::from_secs(1_700_000_000),
        ..config(Duration::from_secs(60))
    });
    assert_eq!(
        sim.probe("tenant-a/fn-a1", "internet/web:80/tcp").unwrap(),
        Observed::Allow
    );
    let records = sim.flush_flow_log();
    let private = Ipv4Addr::new(10, 0, 1, 10);
    let eip = Ipv4Addr::new(203, 0, 113, 10);
    let web = Ipv4Addr::new(198, 51, 100, 10);
    assert!(
        records.iter().all(|r| r.action == Some(Action::Accept)),
        "{records:#?}"
    );

    let sent = at(&records, "tenant-a/fn-a1")
        .find(|r| r.flow_direction == Some(Direction::Egress))
        .expect("fn-a1's egress record");
    assert_eq!((sent.srcaddr, sent.dstaddr), (Some(private), Some(web)));
    assert_eq!(
        (sent.pkt_srcaddr, sent.pkt_dstaddr),
        (Some(private), Some(web))
    );
    assert_eq!(sent.dstport, Some(80));
    assert_eq!(sent.vpc_id.as_deref(), Some("tenant-a"));
    assert_eq!(sent.subnet_id.as_deref(), Some("functions-1"));
    assert!(sent.start >= 1_700_000_000 && sent.end >= sent.start);

    let arrived = at(&records, "internet/web")
        .find(|r| r.flow_direction == Some(Direction::Ingress))
        .expect("web's ingress record");
    assert_eq!((arrived.srcaddr, arrived.dstaddr), (Some(eip), Some(web)));
    assert_eq!(
        arrived.pkt_srcaddr,
        Some(private),
        "the address before SNAT"
    );
    assert_eq!(arrived.dstport, Some(80));
    assert_eq!(arrived.packets, sent.packets, "every packet sent arrived");
    assert_eq!(arrived.vpc_id, None, "a public host is in no VPC");

    // The replies: web sends to the EIP, fn-a1 receives them addressed to itself.
    let replied = at(&records, "internet/web")
        .find(|r| r.flow_direction == Some(Direction::Egress))
        .expect("web's egress record");
    assert_eq!((replied.srcaddr, replied.dstaddr), (Some(web), Some(eip)));
    let back = at(&records, "tenant-a/fn-a1")
        .find(|r| r.flow_direction == Some(Direction::Ingress))
        .expect("fn-a1's ingress record");
    assert_eq!((back.srcaddr, back.dstaddr), (Some(web), Some(private)));
    assert_eq!(
        back.pkt_dstaddr,
        Some(eip),
        "the address before reverse translation"
    );
    assert_eq!(back.packets, replied.packets);
}

#[test]
fn dnat_shows_the_eip_in_pkt_dstaddr_at_the_instance() {
    let mut sim = load("quickstart.toml");
    sim.enable_flow_log(config(Duration::from_secs(60)));
    assert_eq!(
        sim.probe("internet/web", "203.0.113.10:80/tcp").unwrap(),
        Observed::Allow
    );
    let records = sim.flush_flow_log();
    let sent = at(&records, "internet/web")
        .find(|r| r.flow_direction == Some(Direction::Egress))
        .expect("web's egress record");
    assert_eq!(sent.dstaddr, Some(Ipv4Addr::new(203, 0, 113, 10)));
    assert_eq!(sent.dstport, Some(80));
    let arrived = at(&records, "tenant-a/fn-a1")
        .find(|r| r.flow_direction == Some(Direction::Ingress))
        .expect("fn-a1's ingress record");
    assert_eq!(arrived.dstaddr, Some(Ipv4Addr::new(10, 0, 1, 10)));
    assert_eq!(
        arrived.dstport,
        Some(8080),
        "the DNAT entry's instance port"
    );
    assert_eq!(arrived.pkt_dstaddr, Some(Ipv4Addr::new(203, 0, 113, 10)));
    assert_eq!(arrived.srcaddr, Some(Ipv4Addr::new(198, 51, 100, 10)));
    assert_eq!(arrived.instance_id.as_deref(), Some("fn-a1"));
}

#[test]
fn the_subnet_gateways_echo_reply_is_logged_as_accepted_both_ways() {
    let mut sim = load("quickstart.toml");
    sim.enable_flow_log(config(Duration::from_secs(60)));
    assert_eq!(
        sim.probe("tenant-a/fn-a1", "10.0.1.1/icmp").unwrap(),
        Observed::Allow
    );
    let records = sim.flush_flow_log();
    let mine: Vec<_> = at(&records, "tenant-a/fn-a1").collect();
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert!(mine.iter().all(|r| r.action == Some(Action::Accept)));
    let request = mine
        .iter()
        .find(|r| r.flow_direction == Some(Direction::Egress))
        .expect("the request");
    assert_eq!((request.icmp_type, request.protocol), (Some(8), Some(1)));
    let reply = mine
        .iter()
        .find(|r| r.flow_direction == Some(Direction::Ingress))
        .expect("the reply");
    assert_eq!(reply.srcaddr, Some(Ipv4Addr::new(10, 0, 1, 1)));
    assert_eq!(reply.icmp_type, Some(0));
}

#[test]
fn windows_close_on_the_virtual_clock() {
    let mut sim = load("quickstart.toml");
    sim.enable_flow_log(config(Duration::from_secs(1)));
    assert_eq!(
        sim.probe("tenant-a/fn-a1", "tenant-a/fn-a2:8080/tcp")
            .unwrap(),
        Observed::Allow
    );
    // Nothing is reported before its window ends (the exchange takes milliseconds)...
    assert!(sim.now() < Instant::from_secs(1), "{}", sim.now());
    assert!(sim.flow_records().is_empty());
    let window_end = Duration::from_secs(1);
    // ...and everything once it has, without a flush.
    sim.advance(Duration::from_secs(1));
    let records = sim.flow_records();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r.log_status == LogStatus::Ok));
    assert!(records.iter().all(|r| r.end <= window_end.as_secs()));
    assert_eq!(sim.observer().poll_timeout(), None, "nothing left to close");
    assert!(sim.flush_flow_log().is_empty());
    // A second exchange in a later window gives records of that window.
    sim.advance(Duration::from_secs(5));
    sim.probe("tenant-a/fn-a1", "tenant-a/fn-a2:8080/tcp")
        .unwrap();
    sim.advance(Duration::from_secs(2));
    let later = sim.flow_records();
    assert!(!later.is_empty());
    assert!(later.iter().all(|r| r.start >= window_end.as_secs() + 5));
}

#[test]
fn a_full_table_reports_skipdata_and_counts_every_packet() {
    let mut sim = load("quickstart.toml");
    sim.enable_flow_log(FlowLogConfig {
        max_flows: 3,
        ..config(Duration::from_secs(600))
    });
    for port in [7001, 7002, 7003, 7004] {
        sim.probe("tenant-a/fn-a1", &format!("10.0.3.99:{port}/tcp"))
            .unwrap();
    }
    let records = sim.flush_flow_log();
    let ok: Vec<_> = records
        .iter()
        .filter(|r| r.log_status == LogStatus::Ok)
        .collect();
    let skipped: Vec<_> = records
        .iter()
        .filter(|r| r.log_status == LogStatus::Skipdata)
        .collect();
    assert_eq!(ok.len(), 3);
    assert_eq!(skipped.len(), 1, "{records:#?}");
    assert_eq!(skipped[0].interface_id, "tenant-a/fn-a1");
    assert_eq!((skipped[0].srcaddr, skipped[0].action), (None, None));
    let total: u64 = records.iter().map(|r| r.packets).sum();
    assert_eq!(total, sim.counters().drops(DropReason::NoSuchHost));
}

#[test]
fn flush_on_shutdown_loses_nothing_and_the_json_lines_say_so() {
    let mut sim = load("quickstart.toml");
    sim.enable_flow_log(config(Duration::from_secs(3600)));
    for p in sim.plan().probes.clone() {
        sim.run_probe(&p);
    }
    assert!(sim.flow_records().is_empty(), "the window is still open");
    let records = sim.flush_flow_log();
    // Every packet a port sent is in exactly one egress record at that port.
    let ports = sim.fabric().tables().ports.len();
    let mut sent = 0;
    for p in 0..ports {
        let c = sim.counters().port(vpcd::dataplane::PortId(p as u32));
        sent += c.rx_packets;
    }
    let logged: u64 = records
        .iter()
        .filter(|r| r.flow_direction == Some(Direction::Egress))
        .map(|r| r.packets)
        .sum();
    assert_eq!(logged, sent);
    // Every packet delivered is in an ingress record.
    let delivered: u64 = (0..ports)
        .map(|p| {
            sim.counters()
                .port(vpcd::dataplane::PortId(p as u32))
                .tx_packets
        })
        .sum();
    let logged_in: u64 = records
        .iter()
        .filter(|r| r.flow_direction == Some(Direction::Ingress))
        .map(|r| r.packets)
        .sum();
    assert_eq!(logged_in, delivered);

    let mut w = FlowLogWriter::new(Vec::new());
    w.write(&records).expect("writing to memory");
    let text = String::from_utf8(w.into_inner().expect("flush")).expect("utf-8");
    assert_eq!(text.lines().count(), records.len());
    let denied = text
        .lines()
        .find(|l| l.contains("REJECT"))
        .expect("the quickstart has denied probes");
    for key in [
        "\"version\":5",
        "\"interface-id\":",
        "\"srcaddr\":",
        "\"pkt-srcaddr\":",
        "\"flow-direction\":\"egress\"",
        "\"log-status\":\"OK\"",
        "\"tcp-flags\":",
        "\"reject-reason\":",
    ] {
        assert!(denied.contains(key), "{key} missing in {denied}");
    }
}

/// The aggregator is sans-IO like the dataplane (ARCHITECTURE.md, "The sans-IO core"): no clock, file, thread or lock;
/// the capture recorder writes only to the writers its caller passes.
#[test]
fn the_aggregator_and_the_capture_recorder_read_no_clock_and_do_no_io_of_their_own() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/observe");
    let code = |file: &str| {
        let text = std::fs::read_to_string(dir.join(file)).expect("readable source");
        text.split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let clocks_and_threads = [
        "std::time::Instant",
        "SystemTime",
        "Instant::now",
        "std::thread",
        "std::fs",
        "Mutex",
        "RwLock",
        "println!",
        "tokio",
    ];
    for (file, extra) in [("flowlog.rs", &["std::io"][..]), ("pcap.rs", &[][..])] {
        let code = code(file);
        for bad in clocks_and_threads.iter().chain(extra) {
            assert!(!code.contains(bad), "src/observe/{file} uses `{bad}`");
        }
    }
}

mod arbitrary_packets {
    use std::sync::Arc;

    use proptest::prelude::*;
    use vpcd::dataplane::{Fabric, PortId};
    use vpcd::observe::{Capture, CaptureConfig, Direction, FlowLog, FlowLogConfig, Observer};
    use vpcd::time::Instant;

    fn packet() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            // Mostly-valid IPv4 from fn-a1 with random tails.
            (proptest::collection::vec(any::<u8>(), 0..60), any::<u8>()).prop_map(|(tail, p)| {
                let mut v = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, p % 20, 0, 0];
                v.extend_from_slice(&[10, 0, 1, 10, 198, 51, 100, 10]);
                v.extend_from_slice(&tail);
                let len = v.len() as u16;
                v[2..4].copy_from_slice(&len.to_be_bytes());
                v
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the bytes and ports, observing never panics, and every packet handled is in
        /// exactly one record at the port it came from.
        #[test]
        fn observing_arbitrary_packets_never_panics_and_counts_each_once(
            packets in proptest::collection::vec((packet(), 0u32..6), 1..60),
        ) {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("topologies/quickstart.toml");
            let plan = vpcd::topology::load(&path).expect("the quickstart loads");
            let tables = Arc::new(vpcd::topology::compile::tables(&plan));
            let mut fabric = Fabric::new(tables.clone());
            let mut obs = Observer::new();
            obs.set_flow_log(FlowLog::new(&tables, FlowLogConfig::default()));
            obs.add_capture(Capture::new(PortId(0), CaptureConfig::default()));
            let mut buf = vec![0u8; 2048];
            let mut now = Instant::ZERO;
            for (p, port) in &packets {
                now += std::time::Duration::from_millis(7);
                buf[..p.len()].copy_from_slice(p);
                let _ = obs.handle(&mut fabric, now, PortId(*port), &mut buf, p.len());
            }
            obs.flush_all(now);
            let mut records = Vec::new();
            obs.drain_flow_records(&mut records);
            let egress: u64 = records
                .iter()
                .filter(|r| r.flow_direction == Some(Direction::Egress))
                .map(|r| r.packets)
                .sum();
            prop_assert_eq!(egress, packets.len() as u64);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            obs.capture_mut(0).expect("one capture").write_pending(&mut a, &mut b).expect("vec");
            prop_assert!(a.len() >= 24 && b.len() >= 24);
        }
    }
}
