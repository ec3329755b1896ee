//! Fabric behaviour, one test per rule, on small topologies parsed from TOML.

use std::sync::Arc;

use etherparse::PacketBuilder;

use super::offload::{Csum, Gso, GsoKind};
use super::{DropReason, Fabric, MIN_BUFFER, PacketMeta, PortId, Verdict, checksum};
use crate::tables::Tables;
use crate::time::Instant;
use crate::topology;

const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "functions"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "jobs"
  cidr = "10.0.2.0/24"
  route_table = "private"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.route_table]]
  name = "private"
  routes = [
    { destination = "0.0.0.0/0", target = "nat:egress" },
    { destination = "192.0.2.0/24", target = "blackhole" },
    { destination = "198.51.100.0/24", target = "internet" },
  ]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["eip-nat"]
  dnat = [{ eip = "eip-nat", protocol = "udp", port = 5353, instance = "fn-a2" }]
  [[vpc.instance]]
  name = "fn-a1"
  subnet = "functions"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "fn-a2"
  subnet = "functions"
  ip = "10.0.1.11"
  mtu = 1280
  eip = "eip-a2"
  [[vpc.instance]]
  name = "job-a"
  subnet = "jobs"
  ip = "10.0.2.10"

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "functions"
  cidr = "10.0.1.0/24"
  [[vpc.instance]]
  name = "fn-b1"
  subnet = "functions"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "fn-b2"
  subnet = "functions"
  ip = "10.0.1.20"

[[eip]]
name = "eip-nat"
address = "203.0.113.10"
[[eip]]
name = "eip-a2"
address = "203.0.113.21"
[[eip]]
name = "eip-spare"
address = "203.0.113.99"

[internet]
cidr = "198.51.100.0/24"
  [[internet.host]]
  name = "web"
  ip = "198.51.100.10"
  secondary_ips = ["198.51.100.11"]
  [[internet.host]]
  name = "dns"
  ip = "198.51.100.53"
"#;

/// A fabric on a test topology (also used by the offload tests).
pub(super) struct Rig {
    pub(super) fabric: Fabric,
    tables: Arc<Tables>,
}

impl Rig {
    fn new() -> Rig {
        Rig::on(TOPOLOGY)
    }

    /// A fabric on the topology `toml`.
    pub(super) fn on(toml: &str) -> Rig {
        let plan = topology::parse("fabric-test.toml", toml).expect("test topology is valid");
        let tables = Arc::new(crate::topology::compile::tables(&plan));
        Rig {
            fabric: Fabric::new(tables.clone()),
            tables,
        }
    }

    pub(super) fn port(&self, name: &str) -> PortId {
        self.tables
            .port_named(name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    /// Sends `pkt` from port `from`; returns the verdict and the buffer.
    fn send(&mut self, from: &str, pkt: &[u8]) -> (Verdict, Vec<u8>) {
        let port = self.port(from);
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len().max(MIN_BUFFER) + 64, 0);
        let v = self.fabric.handle(Instant::ZERO, port, &mut buf, pkt.len());
        (v, buf)
    }
}

fn udp(src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Vec<u8> {
    udp_to(src, dst, 53, payload_len)
}

fn udp_to(src: [u8; 4], dst: [u8; 4], dport: u16, payload_len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(40000, dport)
        .write(&mut v, &vec![0xab; payload_len])
        .unwrap();
    v
}

fn tcp_syn(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

fn echo_request(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut v, b"abcdefgh")
        .unwrap();
    v
}

fn set_dont_frag(pkt: &mut [u8], df: bool) {
    if df {
        pkt[6] |= 0x40;
    } else {
        pkt[6] &= !0x40;
    }
    pkt[10..12].fill(0);
    let c = checksum::checksum(&pkt[..20]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn same_subnet_is_delivered_unchanged_without_ttl_decrement() {
    let mut rig = Rig::new();
    let pkt = udp([10, 0, 1, 10], [10, 0, 1, 11], 100);
    let (v, buf) = rig.send("tenant-a/fn-a1", &pkt);
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("tenant-a/fn-a2"),
            len: pkt.len(),
            meta: PacketMeta::COMPLETE,
        }
    );
    assert_eq!(
        &buf[..pkt.len()],
        &pkt[..],
        "the VPC fabric is not a visible hop"
    );
}

#[test]
fn other_subnet_is_delivered_by_the_local_route() {
    let mut rig = Rig::new();
    let pkt = tcp_syn([10, 0, 1, 10], [10, 0, 2, 10]);
    let (v, _) = rig.send("tenant-a/fn-a1", &pkt);
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("tenant-a/job-a"),
            len: pkt.len(),
            meta: PacketMeta::COMPLETE,
        }
    );
    // And back, through the `private` table whose default route points at the NAT gateway.
    let pkt = tcp_syn([10, 0, 2, 10], [10, 0, 1, 10]);
    let (v, _) = rig.send("tenant-a/job-a", &pkt);
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("tenant-a/fn-a1"),
            len: pkt.len(),
            meta: PacketMeta::COMPLETE,
        }
    );
}

#[test]
fn anti_spoofing_drops_a_foreign_source() {
    let mut rig = Rig::new();
    let (v, _) = rig.send("tenant-a/fn-a1", &udp([10, 0, 1, 11], [10, 0, 1, 10], 8));
    assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
    let (v, _) = rig.send(
        "internet/web",
        &udp([198, 51, 100, 53], [198, 51, 100, 10], 8),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
    assert_eq!(rig.fabric.counters().drops(DropReason::Spoofed), 2);
}

#[test]
fn subnet_gateway_answers_echo() {
    let mut rig = Rig::new();
    let pkt = echo_request([10, 0, 1, 10], [10, 0, 1, 1]);
    let (v, buf) = rig.send("tenant-a/fn-a1", &pkt);
    let Verdict::Reply { port, len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(port, rig.port("tenant-a/fn-a1"));
    assert_eq!(len, pkt.len());
    assert_eq!(&buf[12..16], &[10, 0, 1, 1]);
    assert_eq!(&buf[16..20], &[10, 0, 1, 10]);
    assert_eq!(buf[20], 0, "echo reply");
    assert_eq!(checksum::checksum(&buf[..20]), 0);
    assert_eq!(checksum::checksum(&buf[20..len]), 0);
    // The VPC router answers on every subnet's gateway address.
    let (v, _) = rig.send(
        "tenant-a/fn-a1",
        &echo_request([10, 0, 1, 10], [10, 0, 2, 1]),
    );
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
}

#[test]
fn subnet_gateway_answers_nothing_but_echo() {
    let mut rig = Rig::new();
    let (v, _) = rig.send("tenant-a/fn-a1", &tcp_syn([10, 0, 1, 10], [10, 0, 1, 1]));
    assert_eq!(v, Verdict::Drop(DropReason::ToGateway));
}

#[test]
fn unknown_private_address_is_dropped() {
    let mut rig = Rig::new();
    let (v, _) = rig.send("tenant-a/fn-a1", &udp([10, 0, 1, 10], [10, 0, 1, 99], 8));
    assert_eq!(v, Verdict::Drop(DropReason::NoSuchHost));
}

#[test]
fn route_targets_drop_with_their_reason() {
    let mut rig = Rig::new();
    // Main table: local only.
    let (v, _) = rig.send(
        "tenant-a/fn-a1",
        &udp([10, 0, 1, 10], [198, 51, 100, 10], 8),
    );
    assert_eq!(v, Verdict::Drop(DropReason::NoRoute));
    // Private table: default via the NAT gateway, a blackhole, and an internet route.
    // Through the NAT gateway to a public address nobody has: translated, then not delivered.
    let (v, _) = rig.send("tenant-a/job-a", &udp([10, 0, 2, 10], [203, 0, 113, 50], 8));
    assert_eq!(v, Verdict::Drop(DropReason::NoSuchHost));
    let (v, _) = rig.send("tenant-a/job-a", &udp([10, 0, 2, 10], [192, 0, 2, 7], 8));
    assert_eq!(v, Verdict::Drop(DropReason::Blackhole));
    let (v, _) = rig.send(
        "tenant-a/job-a",
        &udp([10, 0, 2, 10], [198, 51, 100, 10], 8),
    );
    assert_eq!(v, Verdict::Drop(DropReason::NoPublicAddress));
}

#[test]
fn tenants_with_the_same_cidr_never_see_each_other() {
    let mut rig = Rig::new();
    // 10.0.1.20 exists only in tenant-b: from tenant-a it is nobody.
    let (v, _) = rig.send("tenant-a/fn-a1", &udp([10, 0, 1, 10], [10, 0, 1, 20], 8));
    assert_eq!(v, Verdict::Drop(DropReason::NoSuchHost));
    // 10.0.1.10 exists in both: each tenant reaches its own.
    let (v, _) = rig.send("tenant-b/fn-b2", &udp([10, 0, 1, 20], [10, 0, 1, 10], 8));
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("tenant-b/fn-b1"),
            len: 36,
            meta: PacketMeta::COMPLETE,
        }
    );
    let (v, _) = rig.send("tenant-a/fn-a2", &udp([10, 0, 1, 11], [10, 0, 1, 10], 8));
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("tenant-a/fn-a1"),
            len: 36,
            meta: PacketMeta::COMPLETE,
        }
    );
}

#[test]
fn public_segment_delivers_between_hosts_and_refuses_eips_without_binding() {
    let mut rig = Rig::new();
    let pkt = udp([198, 51, 100, 10], [198, 51, 100, 53], 8);
    let (v, _) = rig.send("internet/web", &pkt);
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("internet/dns"),
            len: pkt.len(),
            meta: PacketMeta::COMPLETE,
        }
    );
    let (v, _) = rig.send(
        "internet/web",
        &udp([198, 51, 100, 10], [203, 0, 113, 99], 8),
    );
    assert_eq!(v, Verdict::Drop(DropReason::UnboundEip));
    let (v, _) = rig.send(
        "internet/web",
        &udp([198, 51, 100, 10], [203, 0, 113, 10], 8),
    );
    assert_eq!(
        v,
        Verdict::Drop(DropReason::NatNoMapping),
        "unsolicited inbound to a NAT EIP"
    );
    let (v, _) = rig.send("internet/web", &udp([198, 51, 100, 10], [10, 0, 1, 10], 8));
    assert_eq!(
        v,
        Verdict::Drop(DropReason::NoSuchHost),
        "private addresses are not routed on the internet"
    );
}

#[test]
fn broadcast_and_multicast_are_martians() {
    let mut rig = Rig::new();
    for dst in [
        [255, 255, 255, 255],
        [10, 0, 1, 255],
        [224, 0, 0, 1],
        [127, 0, 0, 1],
        [0, 0, 0, 0],
    ] {
        let (v, _) = rig.send("tenant-a/fn-a1", &udp([10, 0, 1, 10], dst, 8));
        assert_eq!(v, Verdict::Drop(DropReason::Martian), "{dst:?}");
    }
}

#[test]
fn oversized_packet_with_df_gets_fragmentation_needed() {
    let mut rig = Rig::new();
    let mut pkt = udp([10, 0, 1, 10], [10, 0, 1, 11], 1400); // fn-a2 has MTU 1280
    set_dont_frag(&mut pkt, true);
    let (v, buf) = rig.send("tenant-a/fn-a1", &pkt);
    let Verdict::Reply { port, len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(port, rig.port("tenant-a/fn-a1"));
    assert_eq!(
        &buf[12..16],
        &[10, 0, 1, 1],
        "from the sender's subnet gateway"
    );
    assert_eq!((buf[20], buf[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([buf[26], buf[27]]), 1280);
    assert_eq!(checksum::checksum(&buf[20..len]), 0);
    // Without DF the fabric does not fragment: a counted drop.
    let mut pkt = udp([10, 0, 1, 10], [10, 0, 1, 11], 1400);
    set_dont_frag(&mut pkt, false);
    let (v, _) = rig.send("tenant-a/fn-a1", &pkt);
    assert_eq!(v, Verdict::Drop(DropReason::TooBig));
}

/// Through an EIP (a DNAT port and a 1:1 address) the inbound translation rewrites the packet
/// before the instance's MTU is known to be too small: fragmentation-needed still comes from the
/// EIP and quotes the sender's own untranslated header, so its path-MTU discovery works.
#[test]
fn oversized_df_packet_through_an_eip_gets_fragmentation_needed_quoting_the_sender() {
    // fn-a2 has MTU 1280, both a 1:1 EIP and a DNAT port, and here a group open to the world.
    let open = "name = \"fn-a2\"\n  security_groups = [\"open\"]\n";
    let group = "[[vpc.security_group]]\n  name = \"open\"\n  \
                 ingress = [{ protocol = \"udp\", ports = \"5353\", peer = \"0.0.0.0/0\" }]\n  \
                 [[vpc.instance]]\n  name = \"fn-a1\"";
    let mut rig = Rig::on(&TOPOLOGY.replacen("name = \"fn-a2\"\n", open, 1).replacen(
        "[[vpc.instance]]\n  name = \"fn-a1\"",
        group,
        1,
    ));
    for eip in [[203, 0, 113, 10], [203, 0, 113, 21]] {
        let mut pkt = udp_to([198, 51, 100, 10], eip, 5353, 1400);
        set_dont_frag(&mut pkt, true);
        let (v, buf) = rig.send("internet/web", &pkt);
        let Verdict::Reply { port, len } = v else {
            panic!("{eip:?}: {v:?}")
        };
        assert_eq!(port, rig.port("internet/web"));
        assert_eq!(&buf[12..16], &eip, "from the EIP the sender addressed");
        assert_eq!(&buf[16..20], &[198, 51, 100, 10]);
        assert_eq!((buf[20], buf[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([buf[26], buf[27]]), 1280);
        assert_eq!(checksum::checksum(&buf[20..len]), 0);
        let quote = &buf[28..len];
        assert_eq!(&quote[12..20], &pkt[12..20], "the untranslated addresses");
        assert_eq!(&quote[20..24], &pkt[20..24], "the untranslated ports");
        assert_eq!(
            checksum::checksum(&quote[..20]),
            0,
            "the quoted header is intact"
        );
        // Without DF: a counted drop, and nothing is committed either way.
        let mut pkt = udp_to([198, 51, 100, 10], eip, 5353, 1400);
        set_dont_frag(&mut pkt, false);
        let (v, _) = rig.send("internet/web", &pkt);
        assert_eq!(v, Verdict::Drop(DropReason::TooBig), "{eip:?}");
    }
    // A packet that fits still gets through both ways in.
    for eip in [[203, 0, 113, 10], [203, 0, 113, 21]] {
        let mut pkt = udp_to([198, 51, 100, 10], eip, 5353, 1200);
        set_dont_frag(&mut pkt, true);
        let (v, _) = rig.send("internet/web", &pkt);
        assert!(
            matches!(v, Verdict::Forward { port, .. } if port == rig.port("tenant-a/fn-a2")),
            "{v:?}"
        );
    }
}

/// A host with a secondary address receives on it and sends from it; no other port may.
#[test]
fn a_host_sends_from_and_receives_on_its_secondary_address() {
    let mut rig = Rig::new();
    let web = rig.port("internet/web");
    let (v, _) = rig.send(
        "internet/dns",
        &udp([198, 51, 100, 53], [198, 51, 100, 11], 8),
    );
    assert!(
        matches!(v, Verdict::Forward { port, .. } if port == web),
        "{v:?}"
    );
    let (v, _) = rig.send(
        "internet/web",
        &udp([198, 51, 100, 11], [198, 51, 100, 53], 8),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let (v, _) = rig.send(
        "internet/dns",
        &udp([198, 51, 100, 11], [198, 51, 100, 10], 8),
    );
    assert_eq!(
        v,
        Verdict::Drop(DropReason::Spoofed),
        "web's address from dns"
    );
}

#[test]
fn malformed_packets_are_counted_drops() {
    let mut rig = Rig::new();
    let good = udp([10, 0, 1, 10], [10, 0, 1, 11], 20);
    let mut bad_sum = good.clone();
    bad_sum[10] ^= 0xff;
    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x44;
    let mut long_total = good.clone();
    long_total[2..4].copy_from_slice(&1000u16.to_be_bytes());
    let mut v6 = good.clone();
    v6[0] = 0x60;
    let cases: Vec<(&[u8], DropReason)> = vec![
        (&[], DropReason::Truncated),
        (&good[..10], DropReason::Truncated),
        (&bad_sum, DropReason::BadChecksum),
        (&bad_ihl, DropReason::BadHeader),
        (&long_total, DropReason::Truncated),
        (&v6, DropReason::Ipv6),
        (&[0x10, 0, 0, 0], DropReason::NotIp),
    ];
    for (pkt, reason) in cases {
        let (v, _) = rig.send("tenant-a/fn-a1", pkt);
        assert_eq!(v, Verdict::Drop(reason), "{pkt:02x?}");
    }
    assert_eq!(rig.fabric.counters().total_drops(), 7);
    assert_eq!(
        rig.fabric.counters().port(rig.port("tenant-a/fn-a1")).drops,
        7
    );
}

#[test]
fn trailing_bytes_past_total_length_are_not_forwarded() {
    let mut rig = Rig::new();
    let mut pkt = udp([10, 0, 1, 10], [10, 0, 1, 11], 20);
    let real = pkt.len();
    pkt.extend_from_slice(&[0; 10]);
    let (v, _) = rig.send("tenant-a/fn-a1", &pkt);
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("tenant-a/fn-a2"),
            len: real,
            meta: PacketMeta::COMPLETE,
        }
    );
}

#[test]
fn unknown_ingress_port_is_a_counted_drop() {
    let mut rig = Rig::new();
    let mut buf = udp([10, 0, 1, 10], [10, 0, 1, 11], 8);
    let len = buf.len();
    let v = rig.fabric.handle(Instant::ZERO, PortId(999), &mut buf, len);
    assert_eq!(v, Verdict::Drop(DropReason::UnknownPort));
    assert_eq!(rig.fabric.counters().drops(DropReason::UnknownPort), 1);
    // A caller that claims more bytes than its buffer holds gets a drop, not a panic.
    let port = rig.port("tenant-a/fn-a1");
    let v = rig.fabric.handle(Instant::ZERO, port, &mut buf[..20], 4000);
    assert_eq!(v, Verdict::Drop(DropReason::Truncated));
}

#[test]
fn counters_track_ports() {
    let mut rig = Rig::new();
    let pkt = udp([10, 0, 1, 10], [10, 0, 1, 11], 100);
    for _ in 0..3 {
        let _ = rig.send("tenant-a/fn-a1", &pkt);
    }
    let a1 = rig.fabric.counters().port(rig.port("tenant-a/fn-a1"));
    let a2 = rig.fabric.counters().port(rig.port("tenant-a/fn-a2"));
    assert_eq!((a1.rx_packets, a1.rx_bytes), (3, 3 * pkt.len() as u64));
    assert_eq!((a2.tx_packets, a2.tx_bytes), (3, 3 * pkt.len() as u64));
}

#[test]
fn table_swap_takes_effect_on_the_next_packet() {
    let mut rig = Rig::new();
    let pkt = udp([10, 0, 1, 10], [10, 0, 1, 11], 8);
    assert!(matches!(
        rig.send("tenant-a/fn-a1", &pkt).0,
        Verdict::Forward { .. }
    ));
    let smaller = TOPOLOGY.replace(
        "name = \"fn-a2\"\n  subnet = \"functions\"\n  ip = \"10.0.1.11\"",
        "name = \"fn-a2\"\n  subnet = \"functions\"\n  ip = \"10.0.1.12\"",
    );
    let plan = topology::parse("swap.toml", &smaller).unwrap();
    let problems = rig.fabric.swap_tables(
        Instant::ZERO,
        Arc::new(crate::topology::compile::tables(&plan)),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        rig.send("tenant-a/fn-a1", &pkt).0,
        Verdict::Drop(DropReason::NoSuchHost)
    );
}

/// Two stages, one flow table each: a new flow from VPC `a` through its NAT gateway into VPC
/// `b`'s DNAT is learnt by both flow tables only when `b` delivers it (a drop by `b`'s security
/// groups leaves `a`'s table untouched too), and each table learns it once.
#[test]
fn a_flow_across_two_vpcs_is_learnt_on_both_sides_only_when_delivered() {
    let text = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s"
  cidr = "10.0.1.0/24"
  route_table = "private"
  [[vpc.subnet]]
  name = "pub"
  cidr = "10.0.9.0/24"
  [[vpc.route_table]]
  name = "private"
  routes = [{ destination = "0.0.0.0/0", target = "nat:gw-a" }]
  [[vpc.nat_gateway]]
  name = "gw-a"
  subnet = "pub"
  eips = ["ea"]
  [[vpc.instance]]
  name = "x"
  subnet = "s"
  ip = "10.0.1.10"
[[vpc]]
name = "b"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "pub"
  cidr = "10.0.9.0/24"
  [[vpc.nat_gateway]]
  name = "gw-b"
  subnet = "pub"
  eips = ["eb"]
  dnat = [
    { eip = "eb", protocol = "tcp", port = 80, instance = "y" },
    { eip = "eb", protocol = "tcp", port = 22, instance = "y" },
  ]
  [[vpc.security_group]]
  name = "web"
  ingress = [{ protocol = "tcp", ports = 80, peer = "0.0.0.0/0" }]
  [[vpc.instance]]
  name = "y"
  subnet = "s"
  ip = "10.0.1.10"
  security_groups = ["web"]
[[eip]]
name = "ea"
address = "203.0.113.10"
[[eip]]
name = "eb"
address = "203.0.113.20"
"#;
    let tables = Arc::new(crate::topology::compile::tables(
        &topology::parse("stages.toml", text).unwrap(),
    ));
    let mut fabric = Fabric::new(tables.clone());
    let (x, y) = (
        tables.port_named("a/x").unwrap(),
        tables.port_named("b/y").unwrap(),
    );
    let mut send = |dport: u16| {
        let mut pkt = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [203, 0, 113, 20], 64)
            .tcp(40000, dport, 1, 65535)
            .syn()
            .write(&mut pkt, &[])
            .unwrap();
        let len = pkt.len();
        pkt.resize(len + MIN_BUFFER, 0);
        let v = fabric.handle(Instant::ZERO, x, &mut pkt, len);
        let active: Vec<u64> = fabric
            .firewall()
            .counters()
            .map(|(_, c)| c.active)
            .collect();
        (v, active)
    };
    assert_eq!(
        send(22),
        (Verdict::Drop(DropReason::SecurityGroupIngress), vec![0, 0])
    );
    let (v, active) = send(80);
    assert!(
        matches!(v, Verdict::Forward { port, .. } if port == y),
        "{v:?}"
    );
    assert_eq!(active, vec![1, 1]);
    let (v, active) = send(80);
    assert!(
        matches!(v, Verdict::Forward { port, .. } if port == y),
        "{v:?}"
    );
    assert_eq!(active, vec![1, 1], "a repeated packet refreshes, not adds");
}

/// A TCP superpacket of an established flow as a TUN device with offload hands it over:
/// `payload_len` bytes in segments of `mss`, the checksum partial (the pseudo-header sum).
fn tcp_superpacket(
    src: [u8; 4],
    dst: [u8; 4],
    mss: u16,
    payload_len: usize,
) -> (Vec<u8>, PacketMeta) {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .tcp(40000, 80, 2, 65535)
        .ack(1)
        .write(&mut v, &vec![0x5a; payload_len])
        .unwrap();
    set_dont_frag(&mut v, true);
    let sum = checksum::pseudo_header(src.into(), dst.into(), 6, (v.len() - 20) as u16);
    v[36..38].copy_from_slice(&(sum as u16).to_be_bytes());
    let meta = PacketMeta {
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            segment_size: mss,
            header_len: 40,
        }),
        csum: Csum::Partial {
            start: 20,
            offset: 16,
        },
    };
    (v, meta)
}

impl Rig {
    fn send_meta(&mut self, from: &str, pkt: &[u8], meta: PacketMeta) -> (Verdict, Vec<u8>) {
        let port = self.port(from);
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len().max(MIN_BUFFER) + 64, 0);
        let v = self
            .fabric
            .handle_meta(Instant::ZERO, port, &mut buf, pkt.len(), meta);
        (v, buf)
    }
}

#[test]
fn a_superpacket_meets_the_mtu_one_segment_at_a_time() {
    let mut rig = Rig::new();
    // fn-a2 has MTU 1280: segments of 1200 bytes (1240 on the wire) fit, 12 kB in all.
    let (pkt, meta) = tcp_superpacket([10, 0, 1, 10], [10, 0, 1, 11], 1200, 12_000);
    let (v, _) = rig.send_meta("tenant-a/fn-a1", &pkt, meta);
    assert_eq!(
        v,
        Verdict::Forward {
            port: rig.port("tenant-a/fn-a2"),
            len: pkt.len(),
            meta,
        }
    );
    // Segments of 1260 bytes (1300 on the wire) do not: fragmentation needed, with the MTU.
    let (pkt, meta) = tcp_superpacket([10, 0, 1, 10], [10, 0, 1, 11], 1260, 12_000);
    let (v, buf) = rig.send_meta("tenant-a/fn-a1", &pkt, meta);
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    assert_eq!((buf[20], buf[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([buf[26], buf[27]]), 1280);
}

#[test]
fn offload_metadata_that_does_not_fit_the_packet_is_a_counted_drop() {
    let mut rig = Rig::new();
    let pkt = udp([10, 0, 1, 10], [10, 0, 1, 11], 100);
    let (_, meta) = tcp_superpacket([10, 0, 1, 10], [10, 0, 1, 11], 50, 100);
    let (v, _) = rig.send_meta("tenant-a/fn-a1", &pkt, meta);
    assert_eq!(v, Verdict::Drop(DropReason::BadOffload));
    assert_eq!(rig.fabric.counters().drops(DropReason::BadOffload), 1);
}
