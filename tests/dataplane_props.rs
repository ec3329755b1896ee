//! Property tests of the fabric: arbitrary bytes never panic it, and no packet ever crosses from
//! one VPC to another (the foundation's isolation guarantee). Superpackets with arbitrary GSO
//! metadata never panic it either, and what it forwards segments into wire-sized packets with
//! complete checksums (the fuzz target `offload`'s checks, run here without cargo-fuzz).

use std::sync::Arc;

use etherparse::PacketBuilder;
use proptest::prelude::*;
use vpcd::dataplane::{Fabric, MIN_BUFFER, PortId, Verdict};
use vpcd::tables::{PortOwner, Tables};
use vpcd::time::Instant;

#[path = "../fuzz/shared/offload_case.rs"]
mod offload_case;

/// Two tenants with the same CIDR and the same addresses, plus public hosts.
const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s1"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "s2"
  cidr = "10.0.2.0/24"
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "internet" }]
  [[vpc.instance]]
  name = "a1"
  subnet = "s1"
  ip = "10.0.1.10"
  eip = "eip-a"
  [[vpc.instance]]
  name = "a2"
  subnet = "s2"
  ip = "10.0.2.10"
[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s1"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "s2"
  cidr = "10.0.2.0/24"
  [[vpc.instance]]
  name = "b1"
  subnet = "s1"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "b2"
  subnet = "s2"
  ip = "10.0.2.10"
[[eip]]
name = "eip-a"
address = "203.0.113.10"
[internet]
  [[internet.host]]
  name = "web"
  ip = "198.51.100.10"
"#;

fn rig() -> (Fabric, Arc<Tables>) {
    let plan = vpcd::topology::parse("props.toml", TOPOLOGY).expect("valid");
    let tables = Arc::new(vpcd::topology::compile::tables(&plan));
    (Fabric::new(tables.clone()), tables)
}

/// The routing domain of a port: a VPC index, or `None` for the public segment.
fn domain(tables: &Tables, port: PortId) -> Option<u32> {
    match tables.port(port).expect("port exists").owner {
        // A VPC's resolver belongs to its VPC.
        PortOwner::Instance { vpc, .. } | PortOwner::Resolver { vpc } => Some(vpc),
        PortOwner::Host { .. } | PortOwner::Uplink => None,
    }
}

fn addresses() -> impl Strategy<Value = [u8; 4]> {
    prop_oneof![
        Just([10, 0, 1, 10]),
        Just([10, 0, 2, 10]),
        Just([10, 0, 1, 1]),
        Just([10, 0, 2, 1]),
        Just([10, 0, 1, 255]),
        Just([203, 0, 113, 10]),
        Just([198, 51, 100, 10]),
        // The resolver's two addresses.
        Just([10, 0, 0, 2]),
        Just([169, 254, 169, 253]),
        any::<[u8; 4]>(),
    ]
}

/// Well-formed packets of every protocol the fabric looks at, between interesting addresses.
fn packets() -> impl Strategy<Value = Vec<u8>> {
    (
        addresses(),
        addresses(),
        0u8..4,
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(src, dst, kind, ttl, payload)| {
            let b = PacketBuilder::ipv4(src, dst, ttl);
            let mut v = Vec::new();
            match kind {
                0 => b.udp(1000, 2000).write(&mut v, &payload),
                1 => b.tcp(1000, 80, 5, 1000).syn().write(&mut v, &payload),
                2 => b.icmpv4_echo_request(1, 1).write(&mut v, &payload),
                _ => b.icmpv4_echo_reply(1, 1).write(&mut v, &payload),
            }
            .expect("builder writes");
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Garbage never panics, and every verdict stays inside the buffer.
    #[test]
    fn garbage_never_panics(port in 0u32..8, bytes in proptest::collection::vec(any::<u8>(), 0..200), extra in 0usize..300) {
        let (mut fabric, _) = rig();
        let mut buf = bytes.clone();
        buf.resize(bytes.len() + extra, 0);
        let len = bytes.len();
        match fabric.handle(Instant::ZERO, PortId(port), &mut buf, len) {
            Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => prop_assert!(len <= buf.len()),
            Verdict::Drop(_) => {}
        }
    }

    /// Whatever the source claims, a forwarded packet leaves in the routing domain it entered,
    /// unless it crossed the public segment through NAT — and then its source is a public
    /// address (an EIP or a public host), never a tenant's private one. A reply goes back to the
    /// sender.
    #[test]
    fn never_crosses_vpcs(port in 0u32..5, pkt in packets(), spoof_ok in any::<bool>()) {
        let (mut fabric, tables) = rig();
        let ingress = PortId(port);
        let mut pkt = pkt;
        if spoof_ok {
            // Make the source legitimate so that routing is exercised, not just anti-spoofing.
            let addr = tables.port(ingress).expect("port").addr.octets();
            pkt[12..16].copy_from_slice(&addr);
            pkt[10..12].fill(0);
            let c = vpcd::dataplane::checksum::checksum(&pkt[..20]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let mut buf = pkt.clone();
        buf.resize(pkt.len().max(MIN_BUFFER) + 16, 0);
        match fabric.handle(Instant::ZERO, ingress, &mut buf, pkt.len()) {
            Verdict::Forward { port, .. } => {
                if domain(&tables, port) != domain(&tables, ingress) {
                    let src = std::net::Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                    let public = tables.internet.eips.contains_key(&src) || tables.internet.hosts.contains_key(&src);
                    prop_assert!(public, "{src} crossed from {:?} to {:?}", domain(&tables, ingress), domain(&tables, port));
                }
            }
            Verdict::Reply { port, .. } => prop_assert_eq!(port, ingress),
            Verdict::Drop(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Packets with GSO metadata (derived from the bytes) through `Fabric::handle_meta`, then
    /// the `Segmenter` and `complete_checksum`: no panic, and the checks of
    /// `fuzz/shared/offload_case.rs` hold.
    #[test]
    fn offload_metadata_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        offload_case::run(&data);
    }
}

/// The inputs of `offload_metadata_never_panics` reach what it checks: superpackets forwarded
/// and segmented, partial checksums kept through the fabric (so the property is not vacuous).
#[test]
fn offload_inputs_reach_forwarded_superpackets() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let inputs = proptest::collection::vec(any::<u8>(), 0..600);
    let mut total = offload_case::Reached::default();
    for _ in 0..512 {
        let data = inputs.new_tree(&mut runner).expect("input").current();
        let r = offload_case::run(&data);
        total.forwarded += r.forwarded;
        total.superpackets += r.superpackets;
        total.partial += r.partial;
    }
    println!("{total:?}");
    assert!(total.superpackets > 0 && total.partial > 0, "{total:?}");
}
