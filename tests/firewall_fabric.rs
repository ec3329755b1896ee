//! Security groups and network ACLs in the fabric, packet by packet, in process: the default
//! group, statefulness, related ICMP errors, `sg:` peers, port ranges, ICMP types, run-time rule
//! changes, the flow table's bound, and the network ACLs' AWS semantics.

use std::sync::Arc;
use std::time::Duration;

use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
use vpcd::dataplane::firewall::FlowConfig;
use vpcd::dataplane::{DropReason, Fabric, MIN_BUFFER, PortId, Verdict};
use vpcd::tables::Tables;
use vpcd::time::Instant;

const SG_TOPOLOGY: &str = r#"
[[vpc]]
name = "v"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "app"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "data"
  cidr = "10.0.2.0/24"
  [[vpc.security_group]]
  name = "web"
  ingress = [
    { protocol = "tcp", ports = 80, peer = "0.0.0.0/0", description = "http from anywhere" },
    { protocol = "tcp", ports = "8000-8100", peer = "10.0.0.0/16" },
    { protocol = "icmp", icmp_type = 8, peer = "10.0.0.0/16", description = "ping" },
  ]
  [[vpc.security_group]]
  name = "db"
  ingress = [{ protocol = "tcp", ports = 5432, peer = "sg:web" }]
  [[vpc.security_group]]
  name = "udp-open"
  ingress = [{ protocol = "udp", peer = "10.0.0.0/16" }]
  [[vpc.security_group]]
  name = "client"
  egress = [{ protocol = "tcp", ports = 5432, peer = "10.0.0.0/16" }]
  [[vpc.instance]]
  name = "w1"
  subnet = "app"
  ip = "10.0.1.10"
  security_groups = ["web"]
  [[vpc.instance]]
  name = "x2"
  subnet = "app"
  ip = "10.0.1.20"
  [[vpc.instance]]
  name = "d1"
  subnet = "data"
  ip = "10.0.2.10"
  security_groups = ["db"]
  [[vpc.instance]]
  name = "x1"
  subnet = "data"
  ip = "10.0.2.20"
  [[vpc.instance]]
  name = "c1"
  subnet = "data"
  ip = "10.0.2.30"
  security_groups = ["client", "web"]
  [[vpc.instance]]
  name = "u1"
  subnet = "data"
  ip = "10.0.2.40"
  security_groups = ["udp-open"]
"#;

const W1: [u8; 4] = [10, 0, 1, 10];
const X2: [u8; 4] = [10, 0, 1, 20];
const D1: [u8; 4] = [10, 0, 2, 10];
const X1: [u8; 4] = [10, 0, 2, 20];
const C1: [u8; 4] = [10, 0, 2, 30];
const U1: [u8; 4] = [10, 0, 2, 40];

struct Rig {
    fabric: Fabric,
    tables: Arc<Tables>,
    now: Instant,
}

fn compile(text: &str) -> Arc<Tables> {
    let plan = vpcd::topology::parse("fw.toml", text).expect("valid topology");
    Arc::new(vpcd::topology::compile::tables(&plan))
}

impl Rig {
    fn new(text: &str) -> Rig {
        Rig::with_config(text, FlowConfig::default())
    }

    fn with_config(text: &str, config: FlowConfig) -> Rig {
        let tables = compile(text);
        Rig {
            fabric: Fabric::with_config(tables.clone(), 7, config),
            tables,
            now: Instant::from_secs(1),
        }
    }

    fn port(&self, name: &str) -> PortId {
        self.tables
            .port_named(name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    fn send(&mut self, from: &str, pkt: &[u8]) -> Verdict {
        let port = self.port(from);
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len().max(MIN_BUFFER) + 64, 0);
        self.fabric.handle(self.now, port, &mut buf, pkt.len())
    }

    fn delivered(&mut self, from: &str, pkt: &[u8], to: &str) -> bool {
        let want = self.port(to);
        match self.send(from, pkt) {
            Verdict::Forward { port, .. } => port == want,
            _ => false,
        }
    }

    fn dropped(&mut self, from: &str, pkt: &[u8]) -> Option<DropReason> {
        match self.send(from, pkt) {
            Verdict::Drop(r) => Some(r),
            _ => None,
        }
    }
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: &str) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 64000);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => b,
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, b"hi")
        .unwrap();
    out
}

fn ping(src: [u8; 4], dst: [u8; 4], icmp_type: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ipv4(src, dst, 64);
    let b = match icmp_type {
        8 => b.icmpv4_echo_request(7, 1),
        0 => b.icmpv4_echo_reply(7, 1),
        t => b.icmpv4_raw(t, 0, [0, 9, 0, 1]),
    };
    b.write(&mut out, b"ping").unwrap();
    out
}

/// Destination unreachable (port) from `src` to `dst`, quoting `about`'s header + 8 bytes.
fn port_unreachable(src: [u8; 4], dst: [u8; 4], about: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ))
        .write(&mut out, &about[..28.min(about.len())])
        .unwrap();
    out
}

#[test]
fn sg_default_group_allows_ingress_from_its_members_and_denies_others() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    // x2 and x1 name no group: both are in the VPC default group.
    assert!(rig.delivered("v/x2", &tcp(X2, 40000, X1, 22, "S"), "v/x1"));
    // w1 is in `web`, not in the default group: x1 does not let it in (egress is all allowed).
    assert_eq!(
        rig.dropped("v/w1", &tcp(W1, 40000, X1, 22, "S")),
        Some(DropReason::SecurityGroupIngress)
    );
    assert_eq!(
        rig.dropped("v/w1", &ping(W1, X1, 8)),
        Some(DropReason::SecurityGroupIngress)
    );
}

#[test]
fn sg_stateful_replies_pass_without_an_ingress_rule() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    // x2 (default group) has no ingress rule for w1; the reply to its own flow passes anyway.
    assert_eq!(
        rig.dropped("v/w1", &tcp(W1, 80, X2, 40000, "SA")),
        Some(DropReason::SecurityGroupIngress),
        "unsolicited: denied"
    );
    assert!(rig.delivered("v/x2", &tcp(X2, 40000, W1, 80, "S"), "v/w1"));
    assert!(rig.delivered("v/w1", &tcp(W1, 80, X2, 40000, "SA"), "v/x2"));
    assert!(rig.delivered("v/x2", &tcp(X2, 40000, W1, 80, "A"), "v/w1"));
    assert!(rig.delivered("v/w1", &tcp(W1, 80, X2, 40000, "A"), "v/x2"));
    // Another source port of the same pair is another flow: denied again.
    assert_eq!(
        rig.dropped("v/w1", &tcp(W1, 80, X2, 40001, "SA")),
        Some(DropReason::SecurityGroupIngress)
    );
    // UDP and ICMP echo the same way.
    assert!(rig.delivered("v/w1", &udp(W1, 5000, U1, 53), "v/u1"));
    assert!(rig.delivered("v/u1", &udp(U1, 53, W1, 5000), "v/w1"));
    assert!(rig.delivered("v/x2", &ping(X2, W1, 8), "v/w1"));
    assert!(rig.delivered("v/w1", &ping(W1, X2, 0), "v/x2"));
}

#[test]
fn sg_related_icmp_errors_pass_and_unrelated_ones_do_not() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    let probe = udp(W1, 5000, U1, 9);
    assert!(rig.delivered("v/w1", &probe, "v/u1"));
    // u1 answers port unreachable: w1's groups have no rule for ICMP type 3, it is related.
    assert!(rig.delivered("v/u1", &port_unreachable(U1, W1, &probe), "v/w1"));
    // An error quoting a flow nobody opened is judged by the rules: denied.
    let other = udp(W1, 5001, U1, 9);
    assert_eq!(
        rig.dropped("v/u1", &port_unreachable(U1, W1, &other)),
        Some(DropReason::SecurityGroupIngress)
    );
}

#[test]
fn sg_peer_group_matches_its_members_private_addresses() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    // db admits tcp:5432 from members of `web`: w1 and c1 are, x2 is not.
    assert!(rig.delivered("v/w1", &tcp(W1, 40000, D1, 5432, "S"), "v/d1"));
    assert!(rig.delivered("v/c1", &tcp(C1, 40000, D1, 5432, "S"), "v/d1"));
    assert_eq!(
        rig.dropped("v/x2", &tcp(X2, 40000, D1, 5432, "S")),
        Some(DropReason::SecurityGroupIngress)
    );
    // Only the port the rule names.
    assert_eq!(
        rig.dropped("v/w1", &tcp(W1, 40001, D1, 5433, "S")),
        Some(DropReason::SecurityGroupIngress)
    );
}

#[test]
fn sg_port_ranges_are_inclusive_and_egress_rules_restrict() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    for (port, ok) in [
        (7999, false),
        (8000, true),
        (8050, true),
        (8100, true),
        (8101, false),
    ] {
        let got = rig.delivered("v/x2", &tcp(X2, 41000 + port, W1, port, "S"), "v/w1");
        assert_eq!(got, ok, "port {port}");
    }
    // c1's `client` group restricts egress to tcp:5432; its other group (`web`) leaves egress
    // unrestricted, and groups are a union: c1 may send anything.
    assert!(rig.delivered("v/c1", &tcp(C1, 40000, W1, 8000, "S"), "v/w1"));
}

#[test]
fn sg_an_egress_list_denies_what_it_does_not_name() {
    let text = SG_TOPOLOGY.replace(
        r#"security_groups = ["client", "web"]"#,
        r#"security_groups = ["client"]"#,
    );
    let mut rig = Rig::new(&text);
    // Egress allows tcp:5432, but c1 is no longer in `web`, which d1 admits.
    assert_eq!(
        rig.dropped("v/c1", &tcp(C1, 40000, D1, 5432, "S")),
        Some(DropReason::SecurityGroupIngress)
    );
    assert_eq!(
        rig.dropped("v/c1", &tcp(C1, 40000, W1, 8000, "S")),
        Some(DropReason::SecurityGroupEgress)
    );
    assert_eq!(
        rig.dropped("v/c1", &udp(C1, 40000, U1, 53)),
        Some(DropReason::SecurityGroupEgress)
    );
}

#[test]
fn sg_icmp_type_rules_admit_only_that_type() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    assert!(rig.delivered("v/x2", &ping(X2, W1, 8), "v/w1"));
    // Timestamp request (13): not type 8.
    assert_eq!(
        rig.dropped("v/x2", &ping(X2, W1, 13)),
        Some(DropReason::SecurityGroupIngress)
    );
}

#[test]
fn sg_rule_change_applies_to_new_flows_and_tracked_flows_survive() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    assert!(rig.delivered("v/x2", &tcp(X2, 40000, W1, 80, "S"), "v/w1"));
    assert!(rig.delivered("v/w1", &tcp(W1, 80, X2, 40000, "SA"), "v/x2"));
    // Remove the http rule at run time.
    let text = SG_TOPOLOGY.replace(
        r#"{ protocol = "tcp", ports = 80, peer = "0.0.0.0/0", description = "http from anywhere" },"#,
        "",
    );
    let problems = rig.fabric.swap_tables(rig.now, compile(&text));
    assert!(problems.is_empty());
    rig.tables = rig.fabric.tables().clone();
    rig.now += Duration::from_secs(30);
    // The tracked flow keeps going both ways...
    assert!(rig.delivered("v/x2", &tcp(X2, 40000, W1, 80, "A"), "v/w1"));
    assert!(rig.delivered("v/w1", &tcp(W1, 80, X2, 40000, "A"), "v/x2"));
    // ...a new one meets the new rules.
    assert_eq!(
        rig.dropped("v/x2", &tcp(X2, 40001, W1, 80, "S")),
        Some(DropReason::SecurityGroupIngress)
    );
}

#[test]
fn sg_flow_table_full_refuses_new_flows_only() {
    let config = FlowConfig {
        max_flows: 2,
        tcp_established: Duration::from_secs(300),
        ..FlowConfig::default()
    };
    let mut rig = Rig::with_config(SG_TOPOLOGY, config);
    assert!(rig.delivered("v/x2", &tcp(X2, 40000, W1, 80, "S"), "v/w1"));
    assert!(rig.delivered("v/x2", &tcp(X2, 40001, W1, 80, "S"), "v/w1"));
    assert_eq!(
        rig.dropped("v/x2", &tcp(X2, 40002, W1, 80, "S")),
        Some(DropReason::FlowTableFull)
    );
    // The tracked flows are untouched: their replies still pass.
    assert!(rig.delivered("v/w1", &tcp(W1, 80, X2, 40000, "SA"), "v/x2"));
    assert!(rig.delivered("v/w1", &tcp(W1, 80, X2, 40001, "SA"), "v/x2"));
    let (_, c) = rig.fabric.firewall().counters().next().unwrap();
    assert_eq!((c.active, c.refused), (2, 1));
    assert_eq!(rig.fabric.counters().drops(DropReason::FlowTableFull), 1);
    // Once they expire, there is room again.
    rig.now += Duration::from_secs(400);
    rig.fabric.handle_timeout(rig.now);
    assert!(rig.delivered("v/x2", &tcp(X2, 40002, W1, 80, "S"), "v/w1"));
}

#[test]
fn sg_tracked_flows_expire_then_replies_are_judged_by_the_rules() {
    let mut rig = Rig::new(SG_TOPOLOGY);
    assert!(rig.delivered("v/w1", &udp(W1, 5000, U1, 53), "v/u1"));
    rig.now += Duration::from_secs(349);
    assert!(rig.delivered("v/u1", &udp(U1, 53, W1, 5000), "v/w1"));
    assert!(rig.fabric.poll_timeout().is_some());
    rig.now += Duration::from_secs(352);
    while let Some(t) = rig.fabric.poll_timeout() {
        if t > rig.now {
            break;
        }
        rig.fabric.handle_timeout(rig.now);
    }
    assert_eq!(rig.fabric.firewall().table(0).unwrap().len(), 0);
    assert_eq!(
        rig.dropped("v/u1", &udp(U1, 53, W1, 5000)),
        Some(DropReason::SecurityGroupIngress)
    );
}

const ACL_TOPOLOGY: &str = r#"
[[vpc]]
name = "v"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "a"
  cidr = "10.0.1.0/24"
  network_acl = "edge"
  [[vpc.subnet]]
  name = "b"
  cidr = "10.0.2.0/24"
  [[vpc.network_acl]]
  name = "edge"
  # Written out of order on purpose: numbers decide, not the file order.
  inbound = [
    { rule = 110, action = "allow", protocol = "tcp", ports = 22, cidr = "10.0.2.0/24" },
    { rule = 100, action = "deny", protocol = "tcp", ports = 22, cidr = "0.0.0.0/0" },
    { rule = 200, action = "allow", protocol = "tcp", ports = 80, cidr = "10.0.0.0/16" },
    { rule = 300, action = "allow", protocol = "tcp", ports = "1024-65535", cidr = "10.0.0.0/16" },
  ]
  outbound = [
    { rule = 100, action = "allow", protocol = "tcp", ports = "1024-65535", cidr = "10.0.0.0/16" },
    { rule = 200, action = "allow", protocol = "tcp", ports = 80, cidr = "10.0.2.0/24" },
  ]
  [[vpc.security_group]]
  name = "vpc"
  ingress = [{ protocol = "all", peer = "10.0.0.0/16" }]
  [[vpc.instance]]
  name = "a1"
  subnet = "a"
  ip = "10.0.1.10"
  security_groups = ["vpc"]
  [[vpc.instance]]
  name = "a2"
  subnet = "a"
  ip = "10.0.1.20"
  security_groups = ["vpc"]
  [[vpc.instance]]
  name = "b1"
  subnet = "b"
  ip = "10.0.2.10"
  security_groups = ["vpc"]
"#;

const A1: [u8; 4] = [10, 0, 1, 10];
const A2: [u8; 4] = [10, 0, 1, 20];
const B1: [u8; 4] = [10, 0, 2, 10];

#[test]
fn nacl_lowest_rule_number_first_and_first_match_wins() {
    let mut rig = Rig::new(ACL_TOPOLOGY);
    // Rule 110 would allow ssh from b, but rule 100 (deny ssh from anywhere) comes first.
    assert_eq!(
        rig.dropped("v/b1", &tcp(B1, 50000, A1, 22, "S")),
        Some(DropReason::NetworkAclInbound)
    );
    assert!(rig.delivered("v/b1", &tcp(B1, 50000, A1, 80, "S"), "v/a1"));
}

#[test]
fn nacl_implicit_deny_when_no_rule_matches() {
    let mut rig = Rig::new(ACL_TOPOLOGY);
    assert_eq!(
        rig.dropped("v/b1", &udp(B1, 50000, A1, 53)),
        Some(DropReason::NetworkAclInbound)
    );
    // Outbound: only ephemeral ports and tcp:80 towards b.
    assert_eq!(
        rig.dropped("v/a1", &tcp(A1, 50000, B1, 443, "S")),
        Some(DropReason::NetworkAclOutbound)
    );
    assert!(rig.delivered("v/a1", &tcp(A1, 50000, B1, 80, "S"), "v/b1"));
}

#[test]
fn nacl_applies_at_the_subnet_edge_only() {
    let mut rig = Rig::new(ACL_TOPOLOGY);
    // a2 -> a1 stays inside subnet a: no ACL, even for the port rule 100 denies.
    assert!(rig.delivered("v/a2", &tcp(A2, 50000, A1, 22, "S"), "v/a1"));
    assert!(rig.delivered("v/a2", &udp(A2, 50000, A1, 53), "v/a1"));
}

#[test]
fn nacl_is_stateless_and_replies_need_ephemeral_port_rules() {
    let mut rig = Rig::new(ACL_TOPOLOGY);
    // A client on an ephemeral port: the reply matches outbound rule 100 (destination port).
    assert!(rig.delivered("v/b1", &tcp(B1, 50000, A1, 80, "S"), "v/a1"));
    assert!(rig.delivered("v/a1", &tcp(A1, 80, B1, 50000, "SA"), "v/b1"));
    // A client on port 1000: its SYN gets in, the security groups track the flow, but the
    // reply's destination port 1000 matches no outbound rule. The ACL remembers nothing.
    assert!(rig.delivered("v/b1", &tcp(B1, 1000, A1, 80, "S"), "v/a1"));
    assert_eq!(
        rig.dropped("v/a1", &tcp(A1, 80, B1, 1000, "SA")),
        Some(DropReason::NetworkAclOutbound)
    );
}

#[test]
fn nacl_default_acl_allows_everything() {
    let mut rig = Rig::new(ACL_TOPOLOGY);
    // b has no ACL: everything a's ACL lets out gets into b, on any port.
    assert!(rig.delivered("v/a1", &tcp(A1, 50000, B1, 8443, "S"), "v/b1"));
}
