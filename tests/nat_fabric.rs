//! The NAT gateway and EIPs inside the fabric: SNAT, DNAT, 1:1 EIPs, hairpinning, the visible NAT
//! hop, ICMP through NAT and table swaps — packet by packet, in process. (The NAT core's own
//! RFC 4787/5382/5508 suite is in `src/dataplane/nat/tests.rs`.)

use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use vpcd::dataplane::{DropReason, Fabric, MIN_BUFFER, PacketMeta, PortId, Verdict, checksum};
use vpcd::tables::Tables;
use vpcd::time::Instant;

const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "functions"
  cidr = "10.0.1.0/24"
  route_table = "private"
  [[vpc.subnet]]
  name = "batch"
  cidr = "10.0.2.0/24"
  route_table = "private"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "internet" }]
  [[vpc.route_table]]
  name = "private"
  routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  ip = "10.0.9.5"
  eips = ["eip-a"]
  snat = [{ source = "10.0.1.0/24" }]
  dnat = [{ eip = "eip-a", protocol = "tcp", port = 80, instance = "fn-a1", instance_port = 8080 }]
  [[vpc.instance]]
  name = "fn-a1"
  subnet = "functions"
  ip = "10.0.1.10"
  security_groups = ["open"]
  [[vpc.instance]]
  name = "job-a"
  subnet = "batch"
  ip = "10.0.2.10"
  [[vpc.instance]]
  name = "pub-a"
  subnet = "public"
  ip = "10.0.9.10"
  eip = "eip-pub"
  security_groups = ["open"]
  # These tests are about NAT: the receivers accept anything (the default group would not).
  [[vpc.security_group]]
  name = "open"
  ingress = [{ protocol = "all", peer = "0.0.0.0/0" }]

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "functions"
  cidr = "10.0.1.0/24"
  route_table = "private"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.route_table]]
  name = "private"
  routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["eip-b"]
  dnat = [{ eip = "eip-b", protocol = "tcp", port = 80, instance = "fn-b1" }]
  [[vpc.instance]]
  name = "fn-b1"
  subnet = "functions"
  ip = "10.0.1.20"
  security_groups = ["open"]
  [[vpc.security_group]]
  name = "open"
  ingress = [{ protocol = "all", peer = "0.0.0.0/0" }]

[[eip]]
name = "eip-a"
address = "203.0.113.10"
[[eip]]
name = "eip-pub"
address = "203.0.113.20"
[[eip]]
name = "eip-b"
address = "203.0.113.30"

[internet]
  [[internet.host]]
  name = "web"
  ip = "198.51.100.10"
"#;

const FN_A1: [u8; 4] = [10, 0, 1, 10];
const WEB: [u8; 4] = [198, 51, 100, 10];
const EIP_A: [u8; 4] = [203, 0, 113, 10];
const EIP_PUB: [u8; 4] = [203, 0, 113, 20];
const EIP_B: [u8; 4] = [203, 0, 113, 30];

struct Rig {
    fabric: Fabric,
    tables: Arc<Tables>,
    now: Instant,
}

impl Rig {
    fn new() -> Rig {
        Rig::from(TOPOLOGY)
    }

    fn from(text: &str) -> Rig {
        let plan = vpcd::topology::parse("nat.toml", text).expect("valid topology");
        let tables = Arc::new(vpcd::topology::compile::tables(&plan));
        Rig {
            fabric: Fabric::new(tables.clone()),
            tables,
            now: Instant::from_secs(1),
        }
    }

    fn port(&self, name: &str) -> PortId {
        self.tables
            .port_named(name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    /// Sends `pkt` from `from`; returns the verdict and the resulting packet bytes.
    fn send(&mut self, from: &str, pkt: &[u8]) -> (Verdict, Vec<u8>) {
        let port = self.port(from);
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len().max(MIN_BUFFER) + 64, 0);
        let v = self.fabric.handle(self.now, port, &mut buf, pkt.len());
        let len = match v {
            Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => len,
            Verdict::Drop(_) => 0,
        };
        buf.truncate(len);
        (v, buf)
    }

    /// Sends and expects delivery to `to`; returns the delivered bytes.
    fn deliver(&mut self, from: &str, pkt: &[u8], to: &str) -> Vec<u8> {
        let (v, out) = self.send(from, pkt);
        assert_eq!(
            v,
            Verdict::Forward {
                port: self.port(to),
                len: out.len(),
                meta: PacketMeta::COMPLETE,
            },
            "{from} -> {to}"
        );
        assert_checksums(&out);
        out
    }
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, ttl)
        .udp(sport, dport)
        .write(&mut v, b"payload!")
        .unwrap();
    v
}

fn syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

fn addrs(pkt: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
        Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
    )
}

fn ports(pkt: &[u8]) -> (u16, u16) {
    let h = usize::from(pkt[0] & 0x0f) * 4;
    (
        u16::from_be_bytes([pkt[h], pkt[h + 1]]),
        u16::from_be_bytes([pkt[h + 2], pkt[h + 3]]),
    )
}

/// Every checksum of an emitted packet is right: IP header, and TCP/UDP/ICMP by full
/// recomputation.
fn assert_checksums(pkt: &[u8]) {
    let h = usize::from(pkt[0] & 0x0f) * 4;
    assert_eq!(checksum::checksum(&pkt[..h]), 0, "IP header checksum");
    let (src, dst) = addrs(pkt);
    let l4 = &pkt[h..];
    match pkt[9] {
        1 => assert_eq!(checksum::checksum(l4), 0, "ICMP checksum"),
        6 | 17 => {
            if pkt[9] == 17 && l4[6..8] == [0, 0] {
                return;
            }
            let pseudo = checksum::pseudo_header(src, dst, pkt[9], l4.len() as u16);
            assert_eq!(!(checksum::sum(l4, pseudo) as u16), 0, "transport checksum");
        }
        _ => {}
    }
}

#[test]
fn snat_rewrites_source_to_the_eip_and_the_nat_is_one_hop() {
    let mut rig = Rig::new();
    let out = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 53, 64),
        "internet/web",
    );
    assert_eq!(addrs(&out), (Ipv4Addr::from(EIP_A), Ipv4Addr::from(WEB)));
    assert_eq!(
        ports(&out),
        (40000, 53),
        "port preserved (RFC 4787 REQ-3, rfc profile)"
    );
    assert_eq!(out[8], 63, "the NAT gateway decrements the TTL");
}

#[test]
fn reply_to_the_mapping_reaches_the_function() {
    let mut rig = Rig::new();
    let _ = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 53, 64),
        "internet/web",
    );
    let back = rig.deliver(
        "internet/web",
        &udp(WEB, 53, EIP_A, 40000, 64),
        "tenant-a/fn-a1",
    );
    assert_eq!(addrs(&back), (Ipv4Addr::from(WEB), Ipv4Addr::from(FN_A1)));
    assert_eq!(ports(&back), (53, 40000));
}

#[test]
fn unsolicited_inbound_is_filtered() {
    let mut rig = Rig::new();
    let (v, _) = rig.send("internet/web", &udp(WEB, 53, EIP_A, 40000, 64));
    assert_eq!(v, Verdict::Drop(DropReason::NatNoMapping));
    // Address-and-port-dependent filtering: the right host from another port is refused too.
    let _ = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 53, 64),
        "internet/web",
    );
    let (v, _) = rig.send("internet/web", &udp(WEB, 54, EIP_A, 40000, 64));
    assert!(
        matches!(
            v,
            Verdict::Drop(DropReason::NatFiltered | DropReason::NatNoMapping)
        ),
        "{v:?}"
    );
}

#[test]
fn dnat_forwards_an_eip_port_to_the_instance_port() {
    let mut rig = Rig::new();
    let out = rig.deliver(
        "internet/web",
        &syn(WEB, 33000, EIP_A, 80),
        "tenant-a/fn-a1",
    );
    assert_eq!(addrs(&out), (Ipv4Addr::from(WEB), Ipv4Addr::from(FN_A1)));
    assert_eq!(ports(&out), (33000, 8080));
    // The function's SYN-ACK goes back out from the EIP's port 80.
    let mut synack = Vec::new();
    PacketBuilder::ipv4(FN_A1, WEB, 64)
        .tcp(8080, 33000, 5000, 64240)
        .syn()
        .ack(1001)
        .write(&mut synack, &[])
        .unwrap();
    let back = rig.deliver("tenant-a/fn-a1", &synack, "internet/web");
    assert_eq!(addrs(&back), (Ipv4Addr::from(EIP_A), Ipv4Addr::from(WEB)));
    assert_eq!(ports(&back), (80, 33000));
}

#[test]
fn ttl_expiring_at_the_nat_hop_gets_time_exceeded_from_its_private_address() {
    let mut rig = Rig::new();
    let pkt = udp(FN_A1, 40000, WEB, 33434, 1);
    let (v, out) = rig.send("tenant-a/fn-a1", &pkt);
    assert_eq!(
        v,
        Verdict::Reply {
            port: rig.port("tenant-a/fn-a1"),
            len: out.len()
        }
    );
    assert_checksums(&out);
    assert_eq!(
        addrs(&out),
        (Ipv4Addr::new(10, 0, 9, 5), Ipv4Addr::from(FN_A1))
    );
    assert_eq!((out[20], out[21]), (11, 0), "time exceeded in transit");
    assert_eq!(&out[28..56], &pkt[..28], "quotes the untranslated header");
}

#[test]
fn ttl_expiring_inbound_gets_time_exceeded_from_the_eip() {
    let mut rig = Rig::new();
    let (v, out) = rig.send("internet/web", &udp(WEB, 53, EIP_A, 40000, 1));
    assert_eq!(
        v,
        Verdict::Reply {
            port: rig.port("internet/web"),
            len: out.len()
        }
    );
    assert_eq!(addrs(&out), (Ipv4Addr::from(EIP_A), Ipv4Addr::from(WEB)));
}

#[test]
fn one_to_one_eip_both_ways_without_a_visible_hop() {
    let mut rig = Rig::new();
    let pub_a = [10, 0, 9, 10];
    let out = rig.deliver(
        "tenant-a/pub-a",
        &udp(pub_a, 5000, WEB, 53, 64),
        "internet/web",
    );
    assert_eq!(addrs(&out), (Ipv4Addr::from(EIP_PUB), Ipv4Addr::from(WEB)));
    assert_eq!(ports(&out), (5000, 53), "1:1 keeps ports");
    assert_eq!(out[8], 64, "the internet gateway is not a visible hop");
    // Inbound on any port, without a prior outbound flow.
    for port in [22, 443, 8443] {
        let back = rig.deliver(
            "internet/web",
            &syn(WEB, 40000, EIP_PUB, port),
            "tenant-a/pub-a",
        );
        assert_eq!(addrs(&back), (Ipv4Addr::from(WEB), Ipv4Addr::from(pub_a)));
        assert_eq!(ports(&back), (40000, port));
    }
}

#[test]
fn rfc4787_req9_hairpin_to_another_tenants_eip_shows_the_external_source() {
    let mut rig = Rig::new();
    let out = rig.deliver(
        "tenant-a/fn-a1",
        &syn(FN_A1, 41000, EIP_B, 80),
        "tenant-b/fn-b1",
    );
    assert_eq!(
        addrs(&out),
        (Ipv4Addr::from(EIP_A), Ipv4Addr::new(10, 0, 1, 20))
    );
    assert_eq!(ports(&out), (41000, 80));
    // And the answer goes back the same way.
    let mut synack = Vec::new();
    PacketBuilder::ipv4([10, 0, 1, 20], EIP_A, 64)
        .tcp(80, 41000, 9, 64240)
        .syn()
        .ack(1001)
        .write(&mut synack, &[])
        .unwrap();
    let back = rig.deliver("tenant-b/fn-b1", &synack, "tenant-a/fn-a1");
    assert_eq!(addrs(&back), (Ipv4Addr::from(EIP_B), Ipv4Addr::from(FN_A1)));
    assert_eq!(ports(&back), (80, 41000));
}

#[test]
fn rfc4787_req9_hairpin_to_the_own_gateways_eip() {
    let mut rig = Rig::new();
    // fn-a1 reaches its own DNAT entry through the EIP and sees itself as the EIP.
    let out = rig.deliver(
        "tenant-a/fn-a1",
        &syn(FN_A1, 42000, EIP_A, 80),
        "tenant-a/fn-a1",
    );
    assert_eq!(addrs(&out), (Ipv4Addr::from(EIP_A), Ipv4Addr::from(FN_A1)));
    assert_eq!(ports(&out), (42000, 8080));
}

#[test]
fn sources_without_a_snat_entry_are_refused() {
    let mut rig = Rig::new();
    let (v, _) = rig.send("tenant-a/job-a", &udp([10, 0, 2, 10], 1000, WEB, 53, 64));
    assert_eq!(v, Verdict::Drop(DropReason::NoSnatRule));
}

#[test]
fn rfc5508_icmp_error_for_a_mapped_flow_is_translated_back() {
    let mut rig = Rig::new();
    let sent = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 33434, 64),
        "internet/web",
    );
    // The web host answers with port unreachable, quoting what it received.
    let mut err = Vec::new();
    PacketBuilder::ipv4(WEB, EIP_A, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut err, &sent[..28])
        .unwrap();
    let back = rig.deliver("internet/web", &err, "tenant-a/fn-a1");
    assert_eq!(addrs(&back), (Ipv4Addr::from(WEB), Ipv4Addr::from(FN_A1)));
    let quoted = &back[28..];
    assert_eq!(
        addrs(quoted),
        (Ipv4Addr::from(FN_A1), Ipv4Addr::from(WEB)),
        "embedded header translated"
    );
    assert_eq!(ports(quoted), (40000, 33434));
    assert_eq!(
        checksum::checksum(&quoted[..20]),
        0,
        "embedded IP header checksum"
    );
    // An error about a flow the NAT does not know is dropped.
    let mut stray = Vec::new();
    PacketBuilder::ipv4(WEB, EIP_A, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut stray, &udp(EIP_A, 1234, WEB, 9, 64)[..28])
        .unwrap();
    let (v, _) = rig.send("internet/web", &stray);
    assert_eq!(v, Verdict::Drop(DropReason::NatIcmpErrorNoMapping));
}

#[test]
fn echo_through_nat_maps_the_identifier() {
    let mut rig = Rig::new();
    let mut ping = Vec::new();
    PacketBuilder::ipv4(FN_A1, WEB, 64)
        .icmpv4_echo_request(777, 1)
        .write(&mut ping, b"abcdefgh")
        .unwrap();
    let out = rig.deliver("tenant-a/fn-a1", &ping, "internet/web");
    assert_eq!(addrs(&out).0, Ipv4Addr::from(EIP_A));
    let Some(TransportSlice::Icmpv4(icmp)) = SlicedPacket::from_ip(&out).unwrap().transport else {
        panic!()
    };
    let Icmpv4Type::EchoRequest(h) = icmp.icmp_type() else {
        panic!()
    };
    let mut pong = Vec::new();
    PacketBuilder::ipv4(WEB, EIP_A, 64)
        .icmpv4_echo_reply(h.id, h.seq)
        .write(&mut pong, b"abcdefgh")
        .unwrap();
    let back = rig.deliver("internet/web", &pong, "tenant-a/fn-a1");
    let p = SlicedPacket::from_ip(&back).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().destination(), FN_A1);
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
        panic!()
    };
    let Icmpv4Type::EchoReply(h) = icmp.icmp_type() else {
        panic!()
    };
    assert_eq!((h.id, h.seq), (777, 1));
}

#[test]
fn refused_new_flow_gets_admin_prohibited_when_configured() {
    let text = TOPOLOGY.replace(
        "  snat = [{ source = \"10.0.1.0/24\" }]\n",
        "  snat = [{ source = \"10.0.1.0/24\" }]\n  max_connections = 1\n  on_refuse = \"icmp\"\n",
    );
    let mut rig = Rig::from(&text);
    let _ = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 53, 64),
        "internet/web",
    );
    let (v, out) = rig.send("tenant-a/fn-a1", &udp(FN_A1, 40001, WEB, 53, 64));
    assert_eq!(
        v,
        Verdict::Reply {
            port: rig.port("tenant-a/fn-a1"),
            len: out.len()
        }
    );
    assert_eq!(
        (out[20], out[21]),
        (3, 13),
        "communication administratively prohibited"
    );
    assert_eq!(addrs(&out).0, Ipv4Addr::new(10, 0, 9, 5));
    // The existing flow is not evicted.
    let _ = rig.deliver(
        "internet/web",
        &udp(WEB, 53, EIP_A, 40000, 64),
        "tenant-a/fn-a1",
    );
}

#[test]
fn table_swap_keeps_unrelated_flows_and_applies_eip_disassociation() {
    let mut rig = Rig::new();
    let _ = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 53, 64),
        "internet/web",
    );
    // Disassociate the 1:1 EIP from pub-a (and keep everything else).
    let text = TOPOLOGY.replace("  eip = \"eip-pub\"\n", "");
    let plan = vpcd::topology::parse("nat.toml", &text).unwrap();
    let tables = Arc::new(vpcd::topology::compile::tables(&plan));
    let problems = rig.fabric.swap_tables(rig.now, tables.clone());
    assert!(problems.is_empty(), "{problems:?}");
    rig.tables = tables;
    // The SNAT flow survives.
    let _ = rig.deliver(
        "internet/web",
        &udp(WEB, 53, EIP_A, 40000, 64),
        "tenant-a/fn-a1",
    );
    // The EIP no longer reaches pub-a, and pub-a has no public address.
    let (v, _) = rig.send("internet/web", &syn(WEB, 40000, EIP_PUB, 22));
    assert_eq!(v, Verdict::Drop(DropReason::UnboundEip));
    let (v, _) = rig.send("tenant-a/pub-a", &udp([10, 0, 9, 10], 5000, WEB, 53, 64));
    assert_eq!(v, Verdict::Drop(DropReason::NoPublicAddress));
}

#[test]
fn flows_expire_on_the_profiles_timeout_through_the_fabric() {
    let mut rig = Rig::new();
    let _ = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 53, 64),
        "internet/web",
    );
    let deadline = rig.fabric.poll_timeout().expect("a live flow sets a timer");
    assert!(deadline > rig.now);
    // rfc profile: UDP 300 s. Just before: still mapped; after: gone.
    rig.now = Instant::from_secs(1 + 299);
    rig.fabric.handle_timeout(rig.now);
    let _ = rig.deliver(
        "internet/web",
        &udp(WEB, 53, EIP_A, 40000, 64),
        "tenant-a/fn-a1",
    );
    rig.now = Instant::from_secs(1 + 299 + 302);
    while let Some(t) = rig.fabric.poll_timeout() {
        if t > rig.now {
            break;
        }
        rig.fabric.handle_timeout(rig.now);
    }
    let (v, _) = rig.send("internet/web", &udp(WEB, 53, EIP_A, 40000, 64));
    assert!(
        matches!(
            v,
            Verdict::Drop(DropReason::NatNoMapping | DropReason::NatFiltered)
        ),
        "{v:?}"
    );
}

#[test]
fn connections_and_counters_are_listed_per_gateway() {
    let mut rig = Rig::new();
    let _ = rig.deliver(
        "tenant-a/fn-a1",
        &udp(FN_A1, 40000, WEB, 53, 64),
        "internet/web",
    );
    let _ = rig.deliver(
        "internet/web",
        &udp(WEB, 53, EIP_A, 40000, 64),
        "tenant-a/fn-a1",
    );
    let _ = rig.deliver(
        "tenant-a/pub-a",
        &udp([10, 0, 9, 10], 5000, WEB, 53, 64),
        "internet/web",
    );
    let conns: Vec<_> = rig.fabric.gateways().connections(rig.now).collect();
    let snat = conns
        .iter()
        .find(|c| c.vpc == "tenant-a" && c.gateway == "egress")
        .expect("the SNAT flow is listed");
    assert_eq!(snat.session.internal, (Ipv4Addr::from(FN_A1), 40000));
    assert_eq!(snat.session.external, (Ipv4Addr::from(EIP_A), 40000));
    assert_eq!(snat.session.remote, (Ipv4Addr::from(WEB), 53));
    assert_eq!((snat.session.packets_out, snat.session.packets_in), (1, 1));
    let counters = rig.fabric.gateways().counters();
    let egress = counters
        .iter()
        .find(|c| c.vpc == "tenant-a" && c.gateway == "egress")
        .unwrap();
    assert_eq!(egress.pools[0].active_sessions, 1);
    assert_eq!(
        (egress.pools[0].out_packets, egress.pools[0].in_packets),
        (1, 1)
    );
}
