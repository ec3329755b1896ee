//! The public uplink's port inside the fabric (issue 7), packet by packet and in process: what no
//! host or EIP owns goes out to the uplink port after SNAT, security groups and the VPC's egress
//! allow-list; what the uplink sends comes in like a public host's packet (replies, `host_listen`
//! ingress with the real client address), and it may not send from the segment's own addresses.
//! NAT quotas, flow logs and `vpcd explain` see uplink traffic like any other.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use etherparse::PacketBuilder;
use vpcd::dataplane::{DropReason, Fabric, MIN_BUFFER, PacketMeta, PortId, Verdict};
use vpcd::explain::{Query, explain};
use vpcd::observe::{Action, FlowLog, FlowLogConfig, Observer, RejectReason};
use vpcd::tables::{PortOwner, Tables, UPLINK_PORT_NAME};
use vpcd::time::Instant;
use vpcd::topology::Plan;

/// `f1` behind a NAT gateway (DNAT 203.0.113.10:80 -> f1:8080, host_listen on the host), `e1`
/// with a 1:1 EIP, one simulated host, and the uplink; `{allow}` is the VPC's egress allow-list
/// line (or nothing) and `{quota}` extra NAT gateway keys.
const TEMPLATE: &str = r#"
[[vpc]]
name = "t"
cidr = "10.0.0.0/16"
{allow}
subnet = [
  { name = "fn", cidr = "10.0.1.0/24", route_table = "private" },
  { name = "public", cidr = "10.0.9.0/24" },
]
route_table = [
  { name = "main", routes = [{ destination = "0.0.0.0/0", target = "internet" }] },
  { name = "private", routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }] },
]
security_group = [
  { name = "open", ingress = [{ protocol = "all", peer = "0.0.0.0/0" }] },
  { name = "web-only", ingress = [{ protocol = "all", peer = "0.0.0.0/0" }], egress = [{ protocol = "tcp", ports = "80", peer = "0.0.0.0/0" }] },
]
instance = [
  { name = "f1", subnet = "fn", ip = "10.0.1.10", security_groups = ["open"] },
  { name = "f2", subnet = "fn", ip = "10.0.1.20", security_groups = ["web-only"] },
  { name = "e1", subnet = "public", ip = "10.0.9.20", eip = "direct", security_groups = ["open"] },
]

[[vpc.nat_gateway]]
name = "egress"
subnet = "public"
eips = ["gw"]
dnat = [{ eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080, host_listen = "192.0.2.1:8080" }]
{quota}

[[eip]]
name = "gw"
address = "203.0.113.10"
host_bind = "192.0.2.10"

[[eip]]
name = "direct"
address = "203.0.113.20"
host_listen = "192.0.2.1:9000"

[internet]
uplink = "host"
host = [{ name = "web", ip = "198.51.100.10" }]
"#;

const F1: [u8; 4] = [10, 0, 1, 10];
const F2: [u8; 4] = [10, 0, 1, 20];
const E1: [u8; 4] = [10, 0, 9, 20];
const GW: [u8; 4] = [203, 0, 113, 10];
const DIRECT: [u8; 4] = [203, 0, 113, 20];
const WEB: [u8; 4] = [198, 51, 100, 10];
/// A server in the host's network (the "outside").
const OUTSIDE: [u8; 4] = [192, 0, 2, 1];
/// A caller on the host, seen by the uplink as a `host_listen` client.
const CALLER: [u8; 4] = [192, 0, 2, 50];

fn topology(allow: &str, quota: &str) -> String {
    TEMPLATE.replace("{allow}", allow).replace("{quota}", quota)
}

struct Rig {
    plan: Plan,
    tables: Arc<Tables>,
    fabric: Fabric,
    obs: Observer,
    now: Instant,
}

impl Rig {
    fn new(text: &str) -> Rig {
        let plan = vpcd::topology::parse("uplink.toml", text).expect("valid topology");
        let tables = Arc::new(vpcd::topology::compile::tables(&plan));
        Rig {
            fabric: Fabric::new(tables.clone()),
            obs: Observer::new(),
            tables,
            plan,
            now: Instant::from_secs(1),
        }
    }

    fn port(&self, name: &str) -> PortId {
        self.tables
            .port_named(name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    fn send(&mut self, from: &str, pkt: &[u8]) -> (Verdict, Vec<u8>) {
        let port = self.port(from);
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len().max(MIN_BUFFER) + 64, 0);
        self.now += Duration::from_millis(1);
        let v = self
            .obs
            .handle(&mut self.fabric, self.now, port, &mut buf, pkt.len());
        let len = match v {
            Verdict::Forward { len, .. } | Verdict::Reply { len, .. } => len,
            Verdict::Drop(_) => 0,
        };
        buf.truncate(len);
        (v, buf)
    }

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
        out
    }

    fn dropped(&mut self, from: &str, pkt: &[u8]) -> DropReason {
        match self.send(from, pkt).0 {
            Verdict::Drop(r) => r,
            v => panic!("{from}: expected a drop, got {v:?}"),
        }
    }
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 64240);
    let b = if syn { b.syn() } else { b };
    let b = if ack { b.ack(1) } else { b };
    b.write(&mut v, &[]).unwrap();
    v
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"ping?")
        .unwrap();
    v
}

fn echo(src: [u8; 4], dst: [u8; 4], reply: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv4(src, dst, 64);
    if reply {
        b.icmpv4_echo_reply(7, 1).write(&mut v, b"abc").unwrap();
    } else {
        b.icmpv4_echo_request(7, 1).write(&mut v, b"abc").unwrap();
    }
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

#[test]
fn the_uplink_is_a_port_after_the_hosts_only_when_it_is_on() {
    let r = Rig::new(&topology("", ""));
    let id = r.port(UPLINK_PORT_NAME);
    assert_eq!(r.tables.internet.uplink, Some(id));
    // After every host's port; only the VPCs' resolvers come after it.
    assert_eq!(id.index() + 1 + r.tables.vpcs.len(), r.tables.ports.len());
    let p = r.tables.port(id).unwrap();
    assert_eq!(p.owner, PortOwner::Uplink);
    assert_eq!(p.addr, Ipv4Addr::new(198, 51, 100, 1));
    assert_eq!(p.mtu, 1500);
    let off = topology("", "")
        .replace("uplink = \"host\"", "")
        .replace("host_bind = \"192.0.2.10\"", "")
        .replace("host_listen = \"192.0.2.1:9000\"", "")
        .replace(", host_listen = \"192.0.2.1:8080\"", "");
    let r = Rig::new(&off);
    assert_eq!(r.tables.internet.uplink, None);
    assert_eq!(r.tables.port_named(UPLINK_PORT_NAME), None);
}

#[test]
fn without_the_uplink_an_unknown_public_address_is_no_such_host() {
    let off = topology("", "")
        .replace("uplink = \"host\"", "")
        .replace("host_bind = \"192.0.2.10\"", "")
        .replace("host_listen = \"192.0.2.1:9000\"", "")
        .replace(", host_listen = \"192.0.2.1:8080\"", "");
    let mut r = Rig::new(&off);
    assert_eq!(
        r.dropped("t/f1", &tcp(F1, 40000, OUTSIDE, 80, true, false)),
        DropReason::NoSuchHost
    );
}

#[test]
fn snat_egress_goes_out_the_uplink_and_the_reply_comes_back_in() {
    let mut r = Rig::new(&topology("", ""));
    let out = r.deliver(
        "t/f1",
        &tcp(F1, 40000, OUTSIDE, 80, true, false),
        UPLINK_PORT_NAME,
    );
    let (src, dst) = addrs(&out);
    assert_eq!((src, dst), (Ipv4Addr::from(GW), Ipv4Addr::from(OUTSIDE)));
    let (sport, _) = ports(&out);
    // The outside answers the EIP's port; the fabric translates it back to f1.
    let back = r.deliver(
        UPLINK_PORT_NAME,
        &tcp(OUTSIDE, 80, GW, sport, true, true),
        "t/f1",
    );
    assert_eq!(addrs(&back), (Ipv4Addr::from(OUTSIDE), Ipv4Addr::from(F1)));
    assert_eq!(ports(&back), (80, 40000));
    // UDP and ICMP echo the same way.
    let out = r.deliver("t/f1", &udp(F1, 5353, OUTSIDE, 53), UPLINK_PORT_NAME);
    assert_eq!(addrs(&out).0, Ipv4Addr::from(GW));
    let out = r.deliver("t/f1", &echo(F1, OUTSIDE, false), UPLINK_PORT_NAME);
    assert_eq!(addrs(&out).0, Ipv4Addr::from(GW));
    let back = r.deliver(UPLINK_PORT_NAME, &echo(OUTSIDE, GW, true), "t/f1");
    assert_eq!(addrs(&back).1, Ipv4Addr::from(F1));
}

#[test]
fn a_one_to_one_eip_leaves_through_the_uplink_from_its_eip() {
    let mut r = Rig::new(&topology("", ""));
    let out = r.deliver(
        "t/e1",
        &tcp(E1, 41000, OUTSIDE, 443, true, false),
        UPLINK_PORT_NAME,
    );
    assert_eq!(addrs(&out).0, Ipv4Addr::from(DIRECT));
}

#[test]
fn simulated_hosts_and_eips_stay_on_the_segment() {
    let mut r = Rig::new(&topology("", ""));
    r.deliver(
        "t/f1",
        &tcp(F1, 40000, WEB, 80, true, false),
        "internet/web",
    );
    // A public host reaches a DNAT EIP directly, not through the uplink.
    r.deliver(
        "internet/web",
        &tcp(WEB, 50000, GW, 80, true, false),
        "t/f1",
    );
    // Simulated hosts reach the outside through the uplink too.
    r.deliver(
        "internet/web",
        &tcp(WEB, 50001, OUTSIDE, 80, true, false),
        UPLINK_PORT_NAME,
    );
}

#[test]
fn host_listen_ingress_keeps_the_callers_address_and_the_reply_goes_back_out() {
    let mut r = Rig::new(&topology("", ""));
    // The uplink opens the accepted connection towards the DNAT entry's EIP and port.
    let inside = r.deliver(
        UPLINK_PORT_NAME,
        &tcp(CALLER, 45000, GW, 80, true, false),
        "t/f1",
    );
    assert_eq!(addrs(&inside), (Ipv4Addr::from(CALLER), Ipv4Addr::from(F1)));
    assert_eq!(ports(&inside), (45000, 8080));
    let reply = r.deliver(
        "t/f1",
        &tcp(F1, 8080, CALLER, 45000, true, true),
        UPLINK_PORT_NAME,
    );
    assert_eq!(addrs(&reply), (Ipv4Addr::from(GW), Ipv4Addr::from(CALLER)));
    assert_eq!(ports(&reply), (80, 45000));
    // The 1:1 EIP's listener: every port of the EIP reaches e1.
    let inside = r.deliver(
        UPLINK_PORT_NAME,
        &tcp(CALLER, 45001, DIRECT, 9000, true, false),
        "t/e1",
    );
    assert_eq!(addrs(&inside), (Ipv4Addr::from(CALLER), Ipv4Addr::from(E1)));
}

#[test]
fn the_uplink_may_not_send_from_the_segments_addresses_nor_back_to_itself() {
    let mut r = Rig::new(&topology("", ""));
    for src in [
        GW,
        DIRECT,
        WEB,
        [127, 0, 0, 1],
        [0, 0, 0, 0],
        [224, 0, 0, 1],
    ] {
        assert_eq!(
            r.dropped(UPLINK_PORT_NAME, &tcp(src, 80, F1, 40000, true, true)),
            DropReason::Spoofed,
            "{src:?}"
        );
    }
    // Its own address (ICMP errors it generates) is fine; an unknown destination is not looped.
    assert_eq!(
        r.dropped(
            UPLINK_PORT_NAME,
            &tcp(OUTSIDE, 80, [192, 0, 2, 99], 1, true, false)
        ),
        DropReason::NoSuchHost
    );
    // Unsolicited traffic to a NAT gateway's EIP finds no mapping, as from any public host.
    assert!(matches!(
        r.dropped(UPLINK_PORT_NAME, &udp(OUTSIDE, 53, GW, 999)),
        DropReason::NatNoMapping | DropReason::NatFiltered
    ));
}

#[test]
fn security_groups_and_nat_quotas_apply_to_uplink_flows() {
    let mut r = Rig::new(&topology(
        "",
        "max_connections_per_instance = 1\nrst_on_expired = false",
    ));
    // f2's egress group allows tcp:80 only.
    r.deliver(
        "t/f2",
        &tcp(F2, 40000, OUTSIDE, 80, true, false),
        UPLINK_PORT_NAME,
    );
    assert_eq!(
        r.dropped("t/f2", &tcp(F2, 40001, OUTSIDE, 443, true, false)),
        DropReason::SecurityGroupEgress
    );
    // The per-instance quota: f2 already holds its one connection.
    assert_eq!(
        r.dropped("t/f2", &tcp(F2, 40002, OUTSIDE, 80, true, false)),
        DropReason::NatQuotaConnections
    );
}

#[test]
fn egress_allow_refuses_new_flows_to_unlisted_destinations_and_logs_them_as_reject() {
    let mut r = Rig::new(&topology(
        "egress_allow = [\"192.0.2.0/24:443\", \"198.51.100.10\"]",
        "",
    ));
    r.obs.set_flow_log(FlowLog::new(
        &r.tables,
        FlowLogConfig {
            window: Duration::from_secs(60),
            ..FlowLogConfig::default()
        },
    ));
    r.deliver(
        "t/f1",
        &tcp(F1, 40000, OUTSIDE, 443, true, false),
        UPLINK_PORT_NAME,
    );
    r.deliver(
        "t/f1",
        &tcp(F1, 40001, WEB, 22, true, false),
        "internet/web",
    );
    assert_eq!(
        r.dropped("t/f1", &tcp(F1, 40002, OUTSIDE, 80, true, false)),
        DropReason::EgressNotAllowed
    );
    // A port rule covers TCP and UDP alike.
    r.deliver("t/f1", &udp(F1, 5353, OUTSIDE, 443), UPLINK_PORT_NAME);
    assert_eq!(
        r.dropped("t/f1", &udp(F1, 5353, OUTSIDE, 53)),
        DropReason::EgressNotAllowed
    );
    assert_eq!(
        r.dropped("t/e1", &echo(E1, OUTSIDE, false)),
        DropReason::EgressNotAllowed
    );
    assert_eq!(r.fabric.counters().drops(DropReason::EgressNotAllowed), 3);
    // Replies to a flow opened from outside (host_listen ingress) are not new flows: they pass.
    r.deliver(
        UPLINK_PORT_NAME,
        &tcp(CALLER, 45000, GW, 80, true, false),
        "t/f1",
    );
    r.deliver(
        "t/f1",
        &tcp(F1, 8080, CALLER, 45000, true, true),
        UPLINK_PORT_NAME,
    );
    // Inside the VPC nothing changes.
    r.deliver("t/f1", &tcp(F1, 40003, E1, 22, true, false), "t/e1");
    let now = r.now;
    r.obs.flush_all(now);
    let mut records = Vec::new();
    r.obs.drain_flow_records(&mut records);
    let rejected: Vec<_> = records
        .iter()
        .filter(|x| x.action == Some(Action::Reject))
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:#?}");
    assert!(
        rejected
            .iter()
            .all(|x| x.reject_reason == Some(RejectReason::Dropped(DropReason::EgressNotAllowed)))
    );
    assert!(
        rejected
            .iter()
            .any(|x| x.interface_id == "t/f1" && x.dstport == Some(80))
    );
    // The uplink port's own records carry its name.
    assert!(
        records
            .iter()
            .any(|x| x.interface_id == UPLINK_PORT_NAME && x.action == Some(Action::Accept))
    );
}

fn explain_text(r: &Rig, from: &str, to: &str) -> String {
    let q = Query::parse(&r.plan, from, to).expect("a query");
    explain(&r.plan, &r.tables, &q).render()
}

#[test]
fn explain_names_the_uplink_hop_the_bind_and_the_allow_list() {
    let r = Rig::new(&topology("egress_allow = [\"192.0.2.0/24:443\"]", ""));
    let text = explain_text(&r, "t/f1", "192.0.2.1:443/tcp");
    assert!(
        text.contains(
            "egress allow-list of VPC t: tcp:443 to 192.0.2.1 allowed by `192.0.2.0/24:443`"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "internet: no host or EIP has 192.0.2.1: out through the uplink (internet/uplink); the host's network carries the flow from a host socket at 192.0.2.10:49152 (host_bind of 203.0.113.10; the mapping's port when the host has it free, else one the host picks)"
        ),
        "{text}"
    );
    assert!(text.ends_with("verdict: reachable\n"), "{text}");
    let text = explain_text(&r, "t/f1", "192.0.2.1:80/tcp");
    assert!(
        text.ends_with(
            "verdict: blocked by the egress allow-list of VPC t: no rule allows tcp:80 to 192.0.2.1 (egress_not_allowed)\n"
        ),
        "{text}"
    );
    let text = explain_text(&r, "t/e1", "192.0.2.1:443/tcp");
    assert!(
        text.contains("from a host socket at port 49152 of every host address"),
        "{text}"
    );
}

/// Issue 13 item 6: explain says which host socket an uplink mapping uses, statically (the
/// prediction) and, given what a running network has, the live mapping and socket.
#[test]
fn issue13_explain_names_the_host_socket_behind_an_uplink_mapping() {
    let r = Rig::new(&topology("", ""));
    let q = Query::parse(&r.plan, "t/f1", "192.0.2.1:3478/udp").expect("a query");
    let mut e = explain(&r.plan, &r.tables, &q);
    let (flow, hop) = e.uplink.expect("the walk leaves through the uplink");
    let v4 = |s: &str| s.parse::<std::net::SocketAddrV4>().unwrap();
    assert_eq!(flow.protocol, 17);
    assert_eq!(flow.internal, v4("10.0.1.10:49152"));
    assert_eq!(flow.public, v4("203.0.113.10:49152"));
    assert_eq!(flow.remote, v4("192.0.2.1:3478"));
    assert!(
        e.hops[hop].contains("a host socket at 192.0.2.10:49152 (host_bind of 203.0.113.10"),
        "{}",
        e.hops[hop]
    );
    let mut none = e.clone();
    none.live_uplink(None);
    assert!(
        none.hops[hop].ends_with("; now: no NAT session of 10.0.1.10:49152 through the uplink"),
        "{}",
        none.hops[hop]
    );
    e.live_uplink(Some(vpcd::explain::LiveUplink {
        public: v4("203.0.113.10:41000"),
        host_socket: Some("192.0.2.10:41000".parse().unwrap()),
    }));
    assert!(
        e.render().contains(
            "; now: the NAT mapping of 10.0.1.10:49152 is 203.0.113.10:41000, its host socket 192.0.2.10:41000"
        ),
        "{}",
        e.render()
    );
    let text = explain_text(&r, "t/e1", "192.0.2.1/icmp");
    assert!(text.contains("from an unbound host socket"), "{text}");
    // Not through the uplink: nothing to look up.
    let q = Query::parse(&r.plan, "t/f1", "t/e1:80/tcp").expect("a query");
    assert_eq!(explain(&r.plan, &r.tables, &q).uplink, None);
}

#[test]
fn the_example_uplink_topology_passes_its_probes_in_process() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/uplink.toml");
    let mut sim = vpcd::sim::Simulation::load(&path).expect("topologies/uplink.toml loads");
    let results = sim.run_probes();
    assert_eq!(results.len(), 2);
    for r in &results {
        assert!(r.passed(), "{r:#?}");
    }
    assert!(
        results[1]
            .drops
            .iter()
            .any(|(d, _)| *d == DropReason::EgressNotAllowed),
        "{:#?}",
        results[1]
    );
}
