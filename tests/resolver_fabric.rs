//! The VPC resolver's port in the fabric, packet by packet: queries to base + 2 and
//! 169.254.169.253 reach it past security groups and ACLs; what it sends is spoof-checked and
//! reaches only its own VPC's instances.

use std::sync::Arc;

use etherparse::PacketBuilder;
use vpcd::dataplane::{DropReason, Fabric, MIN_BUFFER, Verdict};
use vpcd::tables::{PortOwner, Tables, resolver_port_name};
use vpcd::time::Instant;

/// Two VPCs with the same CIDR; tenant-a's instance has a security group that allows nothing
/// out and its subnet an ACL that denies everything.
const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24", network_acl = "closed" }]
security_group = [{ name = "mute", egress = [] }]
network_acl = [{ name = "closed", inbound = [], outbound = [] }]
instance = [{ name = "fn", subnet = "app", ip = "10.0.1.10", security_groups = ["mute"] }]

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24" }]
instance = [{ name = "other", subnet = "app", ip = "10.0.1.20" }]
"#;

fn tables() -> Arc<Tables> {
    let plan = vpcd::topology::parse("dns.toml", TOPOLOGY).expect("valid topology");
    Arc::new(vpcd::topology::compile::tables(&plan))
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, dst, 64).udp(sport, dport);
    let payload = [0u8; 20];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

fn send(fabric: &mut Fabric, tables: &Tables, from: &str, pkt: &[u8]) -> Verdict {
    let port = tables.port_named(from).expect("a port");
    let mut buf = pkt.to_vec();
    buf.resize(pkt.len().max(MIN_BUFFER) + 64, 0);
    fabric.handle(Instant::from_secs(1), port, &mut buf, pkt.len())
}

#[test]
fn every_vpc_has_a_resolver_port_at_base_plus_2() {
    let t = tables();
    let a = t.port_named(&resolver_port_name("tenant-a")).unwrap();
    let info = t.port(a).unwrap();
    assert_eq!(info.owner, PortOwner::Resolver { vpc: 0 });
    assert_eq!(info.addr.octets(), [10, 0, 0, 2]);
    assert_eq!(t.vpcs[0].resolver.port, a);
    assert_eq!(t.vpcs[1].resolver.port.0, a.0 + 1);
}

#[test]
fn aws_resolver_is_reached_past_security_groups_and_acls() {
    let t = tables();
    let mut f = Fabric::new(t.clone());
    let resolver = t.vpcs[0].resolver.port;
    for dst in [[10, 0, 0, 2], [169, 254, 169, 253]] {
        let v = send(
            &mut f,
            &t,
            "tenant-a/fn",
            &udp([10, 0, 1, 10], 5000, dst, 53),
        );
        assert!(
            matches!(v, Verdict::Forward { port, .. } if port == resolver),
            "{v:?}"
        );
    }
    // Anything else from the instance is still filtered.
    let v = send(
        &mut f,
        &t,
        "tenant-a/fn",
        &udp([10, 0, 1, 10], 5000, [10, 0, 1, 30], 53),
    );
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
}

#[test]
fn the_resolver_answers_only_its_own_vpc_from_its_own_addresses() {
    let t = tables();
    let mut f = Fabric::new(t.clone());
    let from = resolver_port_name("tenant-a");
    let fn_port = t.port_named("tenant-a/fn").unwrap();
    for src in [[10, 0, 0, 2], [169, 254, 169, 253]] {
        let v = send(&mut f, &t, &from, &udp(src, 53, [10, 0, 1, 10], 5000));
        assert!(
            matches!(v, Verdict::Forward { port, .. } if port == fn_port),
            "{v:?}"
        );
    }
    // Spoofed: another source address.
    let v = send(
        &mut f,
        &t,
        &from,
        &udp([10, 0, 0, 3], 53, [10, 0, 1, 10], 5000),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
    // tenant-b's instance address is no tenant-a instance: not delivered anywhere.
    let v = send(
        &mut f,
        &t,
        &from,
        &udp([10, 0, 0, 2], 53, [10, 0, 1, 20], 5000),
    );
    assert_eq!(v, Verdict::Drop(DropReason::NoSuchHost));
    // tenant-b's resolver reaches tenant-b's instance.
    let other = t.port_named("tenant-b/other").unwrap();
    let v = send(
        &mut f,
        &t,
        &resolver_port_name("tenant-b"),
        &udp([10, 0, 0, 2], 53, [10, 0, 1, 20], 5000),
    );
    assert!(
        matches!(v, Verdict::Forward { port, .. } if port == other),
        "{v:?}"
    );
}
