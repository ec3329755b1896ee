//! Property: for random security groups and network ACLs and random flows, `vpcd explain`'s
//! prediction equals what the fabric does — the first packet is delivered to the same port,
//! answered, or dropped for the same reason — and, when the first packet is delivered, the reply
//! gets back to the sender exactly when explain says `reachable`.
//!
//! The flows cover the public segment as well as the inside of a VPC: two tenants with the same
//! private CIDR, each behind a NAT gateway (DNAT port forwards, two SNAT pools) and with a 1:1
//! EIP; public hosts; an unbound EIP; hairpins to the sender's own and the
//! other tenant's EIPs; and, when the random world turns it on, the uplink (for addresses no host
//! or EIP owns).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use vpcd::dataplane::{Fabric, MIN_BUFFER, PortId, Verdict};
use vpcd::explain::{self, FirstPacket, Query};
use vpcd::tables::{PortOwner, Tables};
use vpcd::time::Instant;

const PROTOS: &[&str] = &["tcp", "udp", "icmp", "all"];
const PORTS: &[&str] = &["22", "53", "80", "8080", "1-1023", "1024-65535", "50-90"];
const PEERS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.10/32",
    "sg:g0",
    "sg:g1",
    "sg:g2",
];
const CIDRS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
];

#[derive(Debug, Clone)]
struct Rule {
    proto: usize,
    ports: Option<usize>,
    icmp_type: Option<u8>,
    peer: usize,
}

#[derive(Debug, Clone)]
struct AclRule {
    number: u16,
    allow: bool,
    proto: usize,
    ports: Option<usize>,
    cidr: usize,
}

#[derive(Debug, Clone)]
struct World {
    /// The groups g0..g2, the same rules in both VPCs.
    groups: Vec<(Vec<Rule>, Option<Vec<Rule>>)>,
    /// Per instance (`INSTANCES`, then `W_INSTANCES`): a bit set of groups (none = the default
    /// group).
    membership: Vec<u8>,
    acls: Vec<(Vec<AclRule>, Vec<AclRule>)>,
    /// Per subnet s0, s1 (ws0, ws1 in VPC w): which ACL (None = default).
    subnet_acl: [Option<usize>; 2],
    /// `[internet] uplink = "host"`: addresses no host or EIP owns go out to the uplink.
    uplink: bool,
    /// Subnet `wedge` of w's 1:1 EIP instance routes to the NAT gateway instead of the internet
    /// gateway: replies of flows that came in through the 1:1 EIP then take the wrong way out.
    wedge_via_nat: bool,
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        0..PROTOS.len(),
        proptest::option::of(0..PORTS.len()),
        proptest::option::of(prop_oneof![Just(0u8), Just(8u8), Just(3u8)]),
        0..PEERS.len(),
    )
        .prop_map(|(proto, ports, icmp_type, peer)| Rule {
            proto,
            ports: if PROTOS[proto] == "tcp" || PROTOS[proto] == "udp" {
                ports
            } else {
                None
            },
            icmp_type: if PROTOS[proto] == "icmp" {
                icmp_type
            } else {
                None
            },
            peer,
        })
}

fn acl_rules() -> impl Strategy<Value = Vec<AclRule>> {
    proptest::collection::vec(
        (
            1u16..50,
            any::<bool>(),
            0..PROTOS.len(),
            proptest::option::of(0..PORTS.len()),
            0..CIDRS.len(),
        ),
        0..5,
    )
    .prop_map(|rs| {
        let mut seen = std::collections::HashSet::new();
        rs.into_iter()
            .filter(|r| seen.insert(r.0))
            .map(|(n, allow, proto, ports, cidr)| AclRule {
                number: n * 10,
                allow,
                proto,
                ports: if PROTOS[proto] == "tcp" || PROTOS[proto] == "udp" {
                    ports
                } else {
                    None
                },
                cidr,
            })
            .collect()
    })
}

fn world() -> impl Strategy<Value = World> {
    (
        proptest::collection::vec(
            (
                proptest::collection::vec(rule(), 0..4),
                proptest::option::of(proptest::collection::vec(rule(), 0..3)),
            ),
            3,
        ),
        proptest::collection::vec(0u8..8, INSTANCES.len() + W_INSTANCES.len()),
        proptest::collection::vec((acl_rules(), acl_rules()), 2),
        [
            proptest::option::of(0usize..2),
            proptest::option::of(0usize..2),
        ],
        any::<bool>(),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(groups, membership, acls, subnet_acl, uplink, wedge_via_nat)| World {
                groups,
                membership,
                acls,
                subnet_acl,
                uplink,
                wedge_via_nat,
            },
        )
}

fn render_rule(r: &Rule) -> String {
    let mut s = format!(
        "{{ protocol = \"{}\", peer = \"{}\"",
        PROTOS[r.proto], PEERS[r.peer]
    );
    if let Some(p) = r.ports {
        let _ = write!(s, ", ports = \"{}\"", PORTS[p]);
    }
    if let Some(t) = r.icmp_type {
        let _ = write!(s, ", icmp_type = {t}");
    }
    s + " }"
}

fn render_acl_rule(r: &AclRule) -> String {
    let mut s = format!(
        "{{ rule = {}, action = \"{}\", protocol = \"{}\", cidr = \"{}\"",
        r.number,
        if r.allow { "allow" } else { "deny" },
        PROTOS[r.proto],
        CIDRS[r.cidr]
    );
    if let Some(p) = r.ports {
        let _ = write!(s, ", ports = \"{}\"", PORTS[p]);
    }
    s + " }"
}

/// VPC v's instances: (name, subnet, address); i4 has the 1:1 EIP `one`.
const INSTANCES: &[(&str, &str, &str)] = &[
    ("i0", "s0", "10.0.1.10"),
    ("i1", "s0", "10.0.1.20"),
    ("i2", "s1", "10.0.2.10"),
    ("i3", "s1", "10.0.2.20"),
    ("i4", "pub", "10.0.9.10"),
];

/// VPC w's instances (w has v's CIDR): wi2 has the 1:1 EIP `wone`.
const W_INSTANCES: &[(&str, &str, &str)] = &[
    ("wi0", "s0", "10.0.1.10"),
    ("wi1", "s1", "10.0.2.10"),
    ("wi2", "wedge", "10.0.3.10"),
];

/// The shape both tenants share (`{name}`, with NAT gateway `{gw}` in subnet `pub`): the main
/// route table sends everything to the NAT gateway, the public subnet's to the internet gateway.
const VPC_HEAD: &str = r#"
[[vpc]]
name = "{name}"
cidr = "10.0.0.0/16"
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "nat:{gw}" }]
  [[vpc.route_table]]
  name = "pub"
  routes = [{ destination = "0.0.0.0/0", target = "internet" }]
  [[vpc.subnet]]
  name = "pub"
  cidr = "10.0.9.0/24"
  route_table = "pub"
"#;

/// Tenant v's NAT gateway (EIP `nat`, DNAT tcp 80 -> i0:8080 and udp 53 -> i2); i4 has the 1:1
/// EIP `one` in the public subnet.
const V_NAT: &str = r#"
  [[vpc.nat_gateway]]
  name = "gw"
  subnet = "pub"
  ip = "10.0.9.5"
  eips = ["nat"]
  dnat = [
    { eip = "nat", protocol = "tcp", port = 80, instance = "i0", instance_port = 8080 },
    { eip = "nat", protocol = "udp", port = 53, instance = "i2" },
  ]
"#;

/// Tenant w (on v's CIDR): NAT gateway `wgw` with two SNAT pools (s0 leaves from `w1`, the rest
/// from `w2`), DNAT tcp 80 -> wi0:8080 on `w1`, tcp 443 -> wi1:22 and udp 53 -> wi1 on `w2`; wi2
/// with the 1:1 EIP `wone` in subnet `wedge`, whose route table is `{wedge}`.
const W_NAT: &str = r#"
  [[vpc.nat_gateway]]
  name = "wgw"
  subnet = "pub"
  ip = "10.0.9.5"
  eips = ["w1", "w2"]
  snat = [{ source = "10.0.1.0/24", eips = ["w1"] }, { source = "10.0.0.0/16", eips = ["w2"] }]
  dnat = [
    { eip = "w1", protocol = "tcp", port = 80, instance = "wi0", instance_port = 8080 },
    { eip = "w2", protocol = "tcp", port = 443, instance = "wi1", instance_port = 22 },
    { eip = "w2", protocol = "udp", port = 53, instance = "wi1" },
  ]
  [[vpc.subnet]]
  name = "wedge"
  cidr = "10.0.3.0/24"
  route_table = "{wedge}"
"#;

const PUBLIC: &str = r#"
[[eip]]
name = "nat"
address = "203.0.113.10"
[[eip]]
name = "one"
address = "203.0.113.20"
[[eip]]
name = "w1"
address = "203.0.113.30"
[[eip]]
name = "w2"
address = "203.0.113.31"
[[eip]]
name = "wone"
address = "203.0.113.40"
[[eip]]
name = "spare"
address = "203.0.113.50"
[internet]
{uplink}
  [[internet.host]]
  name = "h"
  ip = "198.51.100.10"
  [[internet.host]]
  name = "h2"
  ip = "198.51.100.20"
"#;

/// The random part of a VPC: subnets s0 and s1 with their ACLs, the ACLs, the groups, and the
/// instances with their groups (`membership`, in the order of `instances`) and 1:1 EIP.
fn render_vpc(
    t: &mut String,
    w: &World,
    instances: &[(&str, &str, &str)],
    membership: &[u8],
    one_to_one: (&str, &str),
) {
    for (i, s) in ["s0", "s1"].iter().enumerate() {
        let _ = write!(
            t,
            "  [[vpc.subnet]]\n  name = \"{s}\"\n  cidr = \"10.0.{}.0/24\"\n",
            i + 1
        );
        if let Some(a) = w.subnet_acl[i] {
            let _ = writeln!(t, "  network_acl = \"acl{a}\"");
        }
    }
    for (i, (inb, outb)) in w.acls.iter().enumerate() {
        let list = |rs: &[AclRule]| {
            rs.iter()
                .map(render_acl_rule)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            t,
            "  [[vpc.network_acl]]\n  name = \"acl{i}\"\n  inbound = [{}]\n  outbound = [{}]\n",
            list(inb),
            list(outb)
        );
    }
    for (i, (ing, eg)) in w.groups.iter().enumerate() {
        let list = |rs: &[Rule]| rs.iter().map(render_rule).collect::<Vec<_>>().join(", ");
        let _ = write!(
            t,
            "  [[vpc.security_group]]\n  name = \"g{i}\"\n  ingress = [{}]\n",
            list(ing)
        );
        if let Some(eg) = eg {
            let _ = writeln!(t, "  egress = [{}]", list(eg));
        }
    }
    for ((name, subnet, ip), bits) in instances.iter().zip(membership) {
        let groups: Vec<String> = (0..3)
            .filter(|g| bits & (1 << g) != 0)
            .map(|g| format!("\"g{g}\""))
            .collect();
        let _ = write!(
            t,
            "  [[vpc.instance]]\n  name = \"{name}\"\n  subnet = \"{subnet}\"\n  ip = \"{ip}\"\n  security_groups = [{}]\n",
            groups.join(", ")
        );
        if *name == one_to_one.0 {
            let _ = writeln!(t, "  eip = \"{}\"", one_to_one.1);
        }
    }
}

fn render(w: &World) -> String {
    let (v_bits, w_bits) = w.membership.split_at(INSTANCES.len());
    let head = |name: &str, gw: &str| VPC_HEAD.replace("{name}", name).replace("{gw}", gw);
    let mut t = head("v", "gw") + V_NAT;
    render_vpc(&mut t, w, INSTANCES, v_bits, ("i4", "one"));
    t += &head("w", "wgw");
    t += &W_NAT.replace("{wedge}", if w.wedge_via_nat { "main" } else { "pub" });
    render_vpc(&mut t, w, W_INSTANCES, w_bits, ("wi2", "wone"));
    t.push_str(&PUBLIC.replace("{uplink}", if w.uplink { "uplink = \"host\"" } else { "" }));
    t
}

const FROMS: &[&str] = &[
    "v/i0",
    "v/i1",
    "v/i2",
    "v/i3",
    "v/i4",
    "w/wi0",
    "w/wi1",
    "w/wi2",
    "internet/h",
    "internet/h2",
];
const TO_ADDRS: &[&str] = &[
    "10.0.1.10",
    "10.0.1.20",
    "10.0.2.10",
    "10.0.2.20",
    "10.0.3.10",
    "10.0.9.10",
    "10.0.1.1",
    "10.0.2.99",
    // The VPC resolver's two addresses.
    "10.0.0.2",
    "169.254.169.253",
    "198.51.100.10",
    "198.51.100.20",
    // EIPs: v's NAT gateway and 1:1, w's two pools and 1:1, unbound.
    "203.0.113.10",
    "203.0.113.20",
    "203.0.113.30",
    "203.0.113.31",
    "203.0.113.40",
    "203.0.113.50",
    // Nobody's: the uplink's when it is on.
    "192.0.2.77",
];
const TO_PORTS: &[u16] = &[22, 53, 80, 8080, 443];

fn first_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: &str, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let mut out = Vec::new();
    match proto {
        "tcp" => b.tcp(sport, dport, 1, 64000).syn().write(&mut out, &[]),
        "udp" => b.udp(sport, dport).write(&mut out, b"x"),
        _ => b.icmpv4_echo_request(sport, 1).write(&mut out, b"x"),
    }
    .unwrap();
    out
}

/// The answer the receiver of `delivered` sends back.
fn reply_to(delivered: &[u8]) -> Option<Vec<u8>> {
    let p = SlicedPacket::from_ip(delivered).ok()?;
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        return None;
    };
    let (src, dst) = (ip.header().source(), ip.header().destination());
    let b = PacketBuilder::ipv4(dst, src, 64);
    let mut out = Vec::new();
    match p.transport? {
        TransportSlice::Tcp(t) => b
            .tcp(t.destination_port(), t.source_port(), 1, 64000)
            .syn()
            .ack(2)
            .write(&mut out, &[]),
        TransportSlice::Udp(u) => b
            .udp(u.destination_port(), u.source_port())
            .write(&mut out, b"y"),
        TransportSlice::Icmpv4(i) => {
            let bytes = i.slice();
            let id = u16::from_be_bytes([bytes[4], bytes[5]]);
            b.icmpv4_echo_reply(id, 1).write(&mut out, b"y")
        }
        _ => return None,
    }
    .ok()?;
    Some(out)
}

/// Whether the receiver behind `port` answers: anyone does, but a VPC resolver serves only DNS
/// on 53/udp and 53/tcp (and answers ping); any other port of it is closed.
fn answers(tables: &Tables, port: PortId, proto: &str, dport: u16) -> bool {
    match tables.port(port).map(|p| p.owner) {
        Some(PortOwner::Resolver { .. }) => proto == "icmp" || dport == 53,
        _ => true,
    }
}

fn send(fabric: &mut Fabric, port: PortId, pkt: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = pkt.to_vec();
    buf.resize(pkt.len().max(MIN_BUFFER) + 64, 0);
    let v = fabric.handle(Instant::from_secs(1), port, &mut buf, pkt.len());
    if let Verdict::Forward { len, .. } | Verdict::Reply { len, .. } = v {
        buf.truncate(len);
    }
    (v, buf)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn explain_verdict_equals_what_the_fabric_does(
        w in world(),
        flows in proptest::collection::vec(
            (0..FROMS.len(), 0..TO_ADDRS.len(), 0..3usize, 0..TO_PORTS.len(), prop_oneof![Just(49152u16), Just(1000u16)]),
            1..6,
        ),
    ) {
        let text = render(&w);
        let plan = vpcd::topology::parse("prop.toml", &text)
            .unwrap_or_else(|e| panic!("generated topology invalid: {e}\n{text}"));
        let tables = Arc::new(vpcd::topology::compile::tables(&plan));
        for (from, to, proto, port, sport) in flows {
            let proto = ["tcp", "udp", "icmp"][proto];
            let target = if proto == "icmp" {
                format!("{}/icmp", TO_ADDRS[to])
            } else {
                format!("{}:{}/{proto}", TO_ADDRS[to], TO_PORTS[port])
            };
            let mut q = Query::parse(&plan, FROMS[from], &target).unwrap();
            q.source_port = sport;
            let e = explain::explain(&plan, &tables, &q);
            // A fresh fabric per flow: explain assumes nothing is tracked yet.
            let mut fabric = Fabric::new(tables.clone());
            let from_port = tables.port_named(FROMS[from]).unwrap();
            let src = tables.port(from_port).unwrap().addr;
            let pkt = first_packet(src, q.to_addr, proto, sport, TO_PORTS[port]);
            let (v, out) = send(&mut fabric, from_port, &pkt);
            let got = match v {
                Verdict::Forward { port, .. } => FirstPacket::Delivered(port),
                Verdict::Reply { .. } => FirstPacket::Answered,
                Verdict::Drop(r) => FirstPacket::Dropped(r),
            };
            prop_assert_eq!(got, e.first_packet, "{} -> {}\n{}\n{}", FROMS[from], target, e.render(), text);
            if let Verdict::Forward { port: egress, .. } = v {
                let back = if answers(&tables, egress, proto, TO_PORTS[port]) {
                    let reply = reply_to(&out).expect("a reply can be built");
                    let (rv, _) = send(&mut fabric, egress, &reply);
                    matches!(rv, Verdict::Forward { port, .. } if port == from_port)
                } else {
                    false
                };
                prop_assert_eq!(back, e.reachable(), "reply of {} -> {}\n{}\n{}", FROMS[from], target, e.render(), text);
            }
        }
    }
}
