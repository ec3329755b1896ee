//! The control plane's view of a running dataplane (issue 6): the counter snapshot the metrics
//! export, the connection listing and its filters, flushing connections by instance and by
//! gateway, and flow logs and captures started and stopped at run time — on a fabric driven
//! packet by packet, and on a shell whose ports are all in-process (no root needed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use etherparse::PacketBuilder;
use vpcd::dataplane::{DropReason, Fabric, MIN_BUFFER, PortId, Verdict};
use vpcd::inspect::{self, ConnFilter, ConnList, ConnTable, FlushTarget, Flushed, InspectError};
use vpcd::observe::Observer;
use vpcd::runtime::Handle;
use vpcd::runtime::event_loop::{LoopMsg, Port, Shell};
use vpcd::runtime::log_file::{LogDir, LogFileError, OpenMode};
use vpcd::runtime::mailbox;
use vpcd::runtime::observe_api;
use vpcd::runtime::observing::{ObserveControlError, PreparedCapture, Sinks};
use vpcd::runtime::sim_port::{SimAddressing, SimPort};
use vpcd::tables::{PortOwner, Tables};
use vpcd::time::Instant;

const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "functions"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "batch"
  cidr = "10.0.2.0/24"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  route_table = "public"
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
  [[vpc.route_table]]
  name = "public"
  routes = [{ destination = "0.0.0.0/0", target = "internet" }]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["eip-a"]
  [[vpc.security_group]]
  name = "open"
  ingress = [{ protocol = "all", peer = "0.0.0.0/0" }]
  [[vpc.instance]]
  name = "fn-a1"
  subnet = "functions"
  ip = "10.0.1.10"
  attach = "sim"
  security_groups = ["open"]
  [[vpc.instance]]
  name = "fn-a2"
  subnet = "batch"
  ip = "10.0.2.20"
  attach = "sim"

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "functions"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  route_table = "public"
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
  [[vpc.route_table]]
  name = "public"
  routes = [{ destination = "0.0.0.0/0", target = "internet" }]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["eip-b"]
  max_connections_per_instance = 1
  [[vpc.security_group]]
  name = "open"
  ingress = [{ protocol = "all", peer = "0.0.0.0/0" }]
  [[vpc.instance]]
  name = "fn-a1"
  subnet = "functions"
  ip = "10.0.1.10"
  attach = "sim"
  security_groups = ["open"]

[[eip]]
name = "eip-a"
address = "203.0.113.10"
[[eip]]
name = "eip-b"
address = "203.0.113.30"

[internet]
  [[internet.host]]
  name = "web"
  ip = "198.51.100.10"
  attach = "sim"
  serve = ["udp:53", "tcp:80"]
"#;

const FN_A1: [u8; 4] = [10, 0, 1, 10];
const FN_A2: [u8; 4] = [10, 0, 2, 20];
const WEB: [u8; 4] = [198, 51, 100, 10];
const EIP_A: [u8; 4] = [203, 0, 113, 10];
const EIP_B: [u8; 4] = [203, 0, 113, 30];

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn plan() -> vpcd::topology::Plan {
    vpcd::topology::parse("inspect.toml", TOPOLOGY).expect("valid topology")
}

struct Rig {
    fabric: Fabric,
    tables: Arc<Tables>,
    now: Instant,
}

impl Rig {
    fn new() -> Rig {
        let tables = Arc::new(vpcd::topology::compile::tables(&plan()));
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

    fn send(&mut self, from: &str, pkt: &[u8]) -> Verdict {
        let port = self.port(from);
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len() + MIN_BUFFER, 0);
        self.fabric.handle(self.now, port, &mut buf, pkt.len())
    }

    fn deliver(&mut self, from: &str, pkt: &[u8], to: &str) {
        let v = self.send(from, pkt);
        assert!(
            matches!(v, Verdict::Forward { port, .. } if port == self.port(to)),
            "{from} -> {to}: {v:?}"
        );
    }

    fn list(&self, filter: ConnFilter) -> ConnList {
        inspect::connections(&self.fabric, self.now, &filter).expect("a valid filter")
    }

    /// Opens the flows every test starts from:
    /// - tenant-a/fn-a1 -> web, UDP 40000 -> 53 through NAT (one session, one SG flow);
    /// - tenant-a/fn-a1 -> web, TCP 40001 -> 80 through NAT, handshake done;
    /// - tenant-a/fn-a2 -> tenant-a/fn-a1, UDP inside the VPC (an SG flow only);
    /// - tenant-b/fn-a1 (same address, other VPC) -> web, UDP 40000 -> 53.
    fn with_flows() -> Rig {
        let mut rig = Rig::new();
        rig.deliver(
            "tenant-a/fn-a1",
            &udp(FN_A1, 40000, WEB, 53),
            "internet/web",
        );
        rig.deliver(
            "tenant-a/fn-a1",
            &tcp(FN_A1, 40001, WEB, 80, SYN),
            "internet/web",
        );
        rig.deliver(
            "internet/web",
            &tcp(WEB, 80, EIP_A, 40001, SYN | ACK),
            "tenant-a/fn-a1",
        );
        rig.deliver(
            "tenant-a/fn-a1",
            &tcp(FN_A1, 40001, WEB, 80, ACK),
            "internet/web",
        );
        rig.deliver(
            "tenant-a/fn-a2",
            &udp(FN_A2, 5000, FN_A1, 7),
            "tenant-a/fn-a1",
        );
        rig.deliver(
            "tenant-b/fn-a1",
            &udp(FN_A1, 40000, WEB, 53),
            "internet/web",
        );
        rig
    }
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"payload!")
        .expect("a UDP packet");
    v
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("a TCP packet");
    v
}

fn filter() -> ConnFilter {
    ConnFilter::default()
}

#[test]
fn the_listing_shows_nat_sessions_and_sg_flows_with_their_endpoints() {
    let rig = Rig::with_flows();
    let all = rig.list(filter());
    // NAT: two sessions of tenant-a/egress, one of tenant-b/egress. SG: tenant-a tracks the two
    // flows through NAT and the one inside the VPC; tenant-b one.
    assert_eq!(all.total, 7, "{all:#?}");
    assert!(!all.truncated);
    let nat: Vec<_> = all
        .connections
        .iter()
        .filter(|r| r.table == ConnTable::Nat)
        .collect();
    assert_eq!(nat.len(), 3);
    let udp = all
        .connections
        .iter()
        .find(|r| r.table == ConnTable::Nat && r.vpc == "tenant-a" && r.protocol == "udp")
        .expect("the UDP session");
    assert_eq!(udp.gateway.as_deref(), Some("egress"));
    assert_eq!(udp.internal, "10.0.1.10:40000");
    assert_eq!(udp.external.as_deref(), Some("203.0.113.10:40000"));
    assert_eq!(udp.remote, "198.51.100.10:53");
    assert_eq!(udp.instance.as_deref(), Some("tenant-a/fn-a1"));
    assert_eq!(udp.state, "udp");
    assert_eq!((udp.packets_out, udp.packets_in), (Some(1), Some(0)));
    let tcp = all
        .connections
        .iter()
        .find(|r| r.table == ConnTable::Nat && r.protocol == "tcp")
        .expect("the TCP session");
    assert_eq!(tcp.state, "established");
    assert_eq!((tcp.packets_out, tcp.packets_in), (Some(2), Some(1)));
    let within = all
        .connections
        .iter()
        .find(|r| r.table == ConnTable::Sg && r.direction.as_deref() == Some("within"))
        .expect("the flow inside the VPC");
    assert_eq!(within.internal, "10.0.2.20:5000", "the initiator");
    assert_eq!(within.remote, "10.0.1.10:7");
    assert_eq!(within.instance.as_deref(), Some("tenant-a/fn-a2"));
    assert_eq!(within.state, "unreplied");
    assert_eq!(within.gateway, None);
    let tcp_sg = all
        .connections
        .iter()
        .find(|r| r.table == ConnTable::Sg && r.protocol == "tcp")
        .expect("the TCP flow's SG entry");
    assert_eq!(
        (tcp_sg.direction.as_deref(), tcp_sg.state.as_str()),
        (Some("outbound"), "replied")
    );
    // The JSON the API serves.
    let json = serde_json::to_value(&all).expect("serializable");
    assert_eq!(json["total"], 7);
    let row = &json["connections"][0];
    for key in [
        "table",
        "vpc",
        "gateway",
        "protocol",
        "internal",
        "external",
        "remote",
        "instance",
        "state",
        "direction",
        "age_s",
        "idle_s",
        "packets_out",
        "packets_in",
        "bytes_out",
        "bytes_in",
    ] {
        assert!(row.get(key).is_some(), "{key} missing in {row}");
    }
}

#[test]
fn each_filter_narrows_the_listing() {
    let rig = Rig::with_flows();
    let count = |f: ConnFilter| rig.list(f).total;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        count(ConnFilter {
            vpc: s("tenant-a"),
            ..filter()
        }),
        5
    );
    assert_eq!(
        count(ConnFilter {
            gateway: s("tenant-a/egress"),
            ..filter()
        }),
        2,
        "a gateway lists its NAT sessions only"
    );
    assert_eq!(
        count(ConnFilter {
            gateway: s("egress"),
            ..filter()
        }),
        3,
        "a bare gateway name in every VPC"
    );
    assert_eq!(
        count(ConnFilter {
            vpc: s("tenant-b"),
            gateway: s("egress"),
            ..filter()
        }),
        1
    );
    assert_eq!(
        count(ConnFilter {
            gateway: s("tenant-a/internet-gateway"),
            ..filter()
        }),
        0,
        "1:1 EIPs keep no sessions"
    );
    assert_eq!(
        count(ConnFilter {
            instance: s("tenant-a/fn-a1"),
            ..filter()
        }),
        5,
        "two NAT sessions, their SG flows, and the flow fn-a2 opened to it"
    );
    assert_eq!(
        count(ConnFilter {
            instance: s("fn-a1"),
            ..filter()
        }),
        7,
        "a bare name matches the instance of that name in every VPC"
    );
    assert_eq!(
        count(ConnFilter {
            instance: s("tenant-a/fn-a2"),
            ..filter()
        }),
        1
    );
    assert_eq!(
        count(ConnFilter {
            protocol: s("tcp"),
            ..filter()
        }),
        2
    );
    assert_eq!(
        count(ConnFilter {
            protocol: s("17"),
            table: s("nat"),
            ..filter()
        }),
        2
    );
    assert_eq!(
        count(ConnFilter {
            table: s("sg"),
            ..filter()
        }),
        4
    );
    let cut = rig.list(ConnFilter {
        limit: Some(2),
        ..filter()
    });
    assert_eq!(
        (cut.connections.len(), cut.total, cut.truncated),
        (2, 7, true)
    );
}

#[test]
fn unknown_names_in_a_filter_are_errors_that_list_what_exists() {
    let rig = Rig::with_flows();
    let err = |f: ConnFilter| inspect::connections(&rig.fabric, rig.now, &f).expect_err("refused");
    let s = |v: &str| Some(v.to_string());
    let e = err(ConnFilter {
        instance: s("tenant-a/nope"),
        ..filter()
    });
    assert!(e.is_not_found());
    let text = e.to_string();
    assert!(
        text.contains("tenant-a/fn-a1") && text.contains("tenant-b/fn-a1"),
        "{text}"
    );
    assert!(
        !text.contains("internet/web"),
        "hosts are not instances: {text}"
    );
    let text = err(ConnFilter {
        gateway: s("tenant-a/nope"),
        ..filter()
    })
    .to_string();
    assert!(
        text.contains("tenant-a/egress") && text.contains("tenant-b/internet-gateway"),
        "{text}"
    );
    let text = err(ConnFilter {
        vpc: s("tenant-c"),
        ..filter()
    })
    .to_string();
    assert!(text.contains("tenant-a, tenant-b"), "{text}");
    let e = err(ConnFilter {
        protocol: s("gre!"),
        ..filter()
    });
    assert!(matches!(e, InspectError::BadProtocol(_)) && !e.is_not_found());
    assert!(matches!(
        err(ConnFilter {
            table: s("conntrack"),
            ..filter()
        }),
        InspectError::BadTable(_)
    ));
}

#[test]
fn flushing_an_instance_ends_its_sessions_and_flows_and_the_next_packets_find_none() {
    let mut rig = Rig::with_flows();
    // Before: the server's next segment reaches the function.
    rig.deliver(
        "internet/web",
        &tcp(WEB, 80, EIP_A, 40001, ACK),
        "tenant-a/fn-a1",
    );
    let done = inspect::flush(
        &mut rig.fabric,
        rig.now,
        &FlushTarget::Instance("tenant-a/fn-a1".into()),
    )
    .expect("flushed");
    assert_eq!(
        done,
        Flushed {
            nat_sessions: 2,
            sg_flows: 3
        }
    );
    assert_eq!(done.total(), 5);
    // After: stale both ways, as after an idle timeout (rfc profile: dropped, no RST).
    assert_eq!(
        rig.send("internet/web", &tcp(WEB, 80, EIP_A, 40001, ACK)),
        Verdict::Drop(DropReason::NatFiltered),
        "the inbound segment finds no session (its mapping waits out the reuse delay)"
    );
    assert_eq!(
        rig.send("tenant-a/fn-a1", &tcp(FN_A1, 40001, WEB, 80, ACK)),
        Verdict::Drop(DropReason::NatTcpNoSession)
    );
    let left = rig.list(filter());
    assert_eq!(
        left.total, 2,
        "tenant-b's session and SG flow are untouched"
    );
    assert!(left.connections.iter().all(|r| r.vpc == "tenant-b"));
    let snap = inspect::snapshot(&rig.fabric, rig.now);
    let a = snap
        .gateways
        .iter()
        .find(|g| g.vpc == "tenant-a" && g.gateway == "egress")
        .expect("tenant-a/egress");
    assert_eq!(a.active_connections, 0);
    assert_eq!(a.idle_timeouts, 0, "a flush is not an idle timeout");
    // Flushing is exact: no bare names, and unknown names list what exists.
    let e = inspect::flush(
        &mut rig.fabric,
        rig.now,
        &FlushTarget::Instance("fn-a1".into()),
    )
    .expect_err("a bare name is refused");
    assert!(
        e.to_string().contains("write VPC/INSTANCE;")
            || e.to_string().ends_with("write VPC/INSTANCE"),
        "{e}"
    );
    assert!(e.to_string().contains("tenant-b/fn-a1"), "{e}");
}

#[test]
fn flushing_a_gateway_ends_every_session_of_its_pools_only() {
    let mut rig = Rig::with_flows();
    let done = inspect::flush(
        &mut rig.fabric,
        rig.now,
        &FlushTarget::Gateway("tenant-a/egress".into()),
    )
    .expect("flushed");
    assert_eq!(
        done,
        Flushed {
            nat_sessions: 2,
            sg_flows: 0
        }
    );
    assert_eq!(
        rig.send("internet/web", &tcp(WEB, 80, EIP_A, 40001, ACK)),
        Verdict::Drop(DropReason::NatFiltered)
    );
    assert_eq!(
        rig.send("internet/web", &udp(WEB, 53, EIP_A, 40000)),
        Verdict::Drop(DropReason::NatFiltered)
    );
    // tenant-b's gateway of the same name keeps its session.
    rig.deliver(
        "internet/web",
        &udp(WEB, 53, EIP_B, 40000),
        "tenant-b/fn-a1",
    );
    assert_eq!(
        inspect::flush(
            &mut rig.fabric,
            rig.now,
            &FlushTarget::Gateway("tenant-a/internet-gateway".into()),
        ),
        Ok(Flushed::default())
    );
    let e = inspect::flush(
        &mut rig.fabric,
        rig.now,
        &FlushTarget::Gateway("tenant-a/ingress".into()),
    )
    .expect_err("no such gateway");
    assert!(e.is_not_found());
    assert!(
        e.to_string()
            .contains("tenant-a/egress, tenant-a/internet-gateway"),
        "{e}"
    );
}

#[test]
fn the_snapshot_counts_what_was_sent() {
    let mut rig = Rig::new();
    let out = udp(FN_A1, 40000, WEB, 53);
    let back = udp(WEB, 53, EIP_A, 40000);
    for _ in 0..3 {
        rig.deliver("tenant-a/fn-a1", &out, "internet/web");
    }
    for _ in 0..2 {
        rig.deliver("internet/web", &back, "tenant-a/fn-a1");
    }
    // Unsolicited: no mapping for that port.
    assert_eq!(
        rig.send("internet/web", &udp(WEB, 53, EIP_A, 41000)),
        Verdict::Drop(DropReason::NatNoMapping)
    );
    // Spoofed source.
    assert_eq!(
        rig.send("tenant-a/fn-a1", &udp([10, 0, 1, 99], 1, WEB, 53)),
        Verdict::Drop(DropReason::Spoofed)
    );
    // tenant-b allows one connection per instance: the second flow is an attempt, refused.
    rig.deliver("tenant-b/fn-a1", &udp(FN_A1, 1000, WEB, 53), "internet/web");
    assert_eq!(
        rig.send("tenant-b/fn-a1", &udp(FN_A1, 1001, WEB, 53)),
        Verdict::Drop(DropReason::NatQuotaConnections)
    );

    let snap = inspect::snapshot(&rig.fabric, rig.now);
    assert_eq!(snap.uptime_s, 1.0);
    assert_eq!(snap.shell, None);
    let gw = |vpc: &str, name: &str| {
        snap.gateways
            .iter()
            .find(|g| g.vpc == vpc && g.gateway == name)
            .unwrap_or_else(|| panic!("no gateway {vpc}/{name}"))
            .clone()
    };
    let a = gw("tenant-a", "egress");
    assert_eq!(a.active_connections, 1);
    assert_eq!(a.connection_attempts, 1);
    assert_eq!(a.connections_established, 1);
    assert_eq!((a.packets_out, a.packets_in), (3, 2));
    assert_eq!(
        (a.bytes_out, a.bytes_in),
        (3 * out.len() as u64, 2 * back.len() as u64)
    );
    assert_eq!(a.drops["nat_no_mapping"], 1);
    assert_eq!(a.drops.values().sum::<u64>(), 1);
    assert!(a.capacity.is_some_and(|c| c > 0));
    let b = gw("tenant-b", "egress");
    assert_eq!((b.connection_attempts, b.connections_established), (2, 1));
    assert_eq!(b.refused, 1);
    assert_eq!(b.drops["nat_quota_connections"], 1);
    let igw = gw("tenant-a", "internet-gateway");
    assert_eq!((igw.capacity, igw.packets_out), (None, 0));

    let port = |name: &str| {
        snap.ports
            .iter()
            .find(|p| p.endpoint == name)
            .unwrap_or_else(|| panic!("no port {name}"))
            .clone()
    };
    let f = port("tenant-a/fn-a1");
    assert_eq!(f.vpc.as_deref(), Some("tenant-a"));
    assert_eq!((f.rx_packets, f.tx_packets, f.drops), (4, 2, 1));
    assert_eq!(f.rx_bytes, 4 * out.len() as u64);
    let w = port("internet/web");
    assert_eq!(w.vpc, None);
    assert_eq!((w.rx_packets, w.tx_packets, w.drops), (3, 4, 1));
    assert_eq!(snap.drops["spoofed"], 1);
    assert_eq!(snap.drops["nat_no_mapping"], 1);
    assert_eq!(snap.drops["nat_quota_connections"], 1);
    assert_eq!(snap.drops.len(), DropReason::ALL.len());
    let sg = snap
        .flow_tables
        .iter()
        .find(|t| t.vpc == "tenant-a")
        .expect("tenant-a's flow table");
    assert_eq!((sg.active, sg.created), (1, 1));
    assert!(sg.capacity > 0);

    // An idle UDP session times out (rfc: 300 s at most without traffic).
    let later = Instant::from_secs(1000);
    rig.fabric.handle_timeout(later);
    let snap = inspect::snapshot(&rig.fabric, later);
    let a = snap
        .gateways
        .iter()
        .find(|g| g.vpc == "tenant-a" && g.gateway == "egress")
        .expect("tenant-a/egress");
    assert_eq!((a.active_connections, a.idle_timeouts), (0, 1));

    // The metrics render it.
    let text = vpcd::api::metrics::render(&snap);
    assert!(
        text.contains("vpcd_nat_idle_timeouts_total{vpc=\"tenant-a\",gateway=\"egress\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("vpcd_drops_total{reason=\"spoofed\"} 1\n"));
}

/// A directory of its own under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("vpcd-inspect-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("a temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tcpdump -r FILE -n` lines.
fn tcpdump(file: &Path) -> Vec<String> {
    let out = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(file)
        .output()
        .expect("tcpdump runs");
    assert!(
        out.status.success(),
        "tcpdump -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A shell whose every port is an in-process stack, as `vpcd up` builds them.
fn sim_shell(tables: &Arc<Tables>, plan: &vpcd::topology::Plan) -> Shell {
    let mut ports = Vec::new();
    for (i, p) in tables.ports.iter().enumerate() {
        let (prefix_len, gateway, services) = match p.owner {
            PortOwner::Instance { vpc, subnet, .. } => {
                let s = &tables.vpcs[vpc as usize].subnets[subnet as usize];
                (s.cidr.prefix_len(), s.gateway, Vec::new())
            }
            PortOwner::Host { host } => (
                tables.internet.cidr.prefix_len(),
                tables.internet.cidr.gateway(),
                plan.internet.hosts[host as usize].serve.clone(),
            ),
            // The uplink and the resolvers are not what these tests read.
            PortOwner::Uplink | PortOwner::Resolver { .. } => {
                ports.push(None);
                continue;
            }
        };
        ports.push(Some(Port::Sim(Box::new(SimPort::new(
            p.name.to_string(),
            PortId(i as u32),
            SimAddressing {
                ip: p.addr,
                secondary: Vec::new(),
                prefix_len,
                gateway,
                mtu: p.mtu as usize,
            },
            &services,
            7 + i as u64,
            Instant::ZERO,
        )))));
    }
    let writers = vpcd::runtime::tx::TxWriters::start(1).expect("a writer thread");
    Shell::new(Fabric::new(tables.clone()), ports, 1500, &writers).expect("a shell of sim ports")
}

/// Runs `test` against a running shell of sim ports, then stops the loop.
fn with_running_shell<F, Fut>(test: F)
where
    F: FnOnce(Handle, Arc<Tables>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let plan = plan();
    let tables = Arc::new(vpcd::topology::compile::tables(&plan));
    let mut shell = sim_shell(&tables, &plan);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (loop_tx, loop_rx) = mailbox::channel::<LoopMsg>();
        let (stop_tx, mut stop_rx) = mailbox::channel::<()>();
        let handle = Handle::for_loop(loop_tx);
        let run = shell.run(
            async move {
                let _ = stop_rx.recv().await;
            },
            loop_rx,
        );
        let drive = async move {
            test(handle, tables).await;
            drop(stop_tx);
        };
        tokio::join!(run, drive);
    });
}

#[test]
fn flow_logs_and_captures_start_and_stop_at_run_time_and_write_their_files() {
    let dir = TempDir::new("observe");
    let flows = dir.0.join("flows.jsonl");
    let pcap = dir.0.join("fn-a1.pcap");
    let (flows2, pcap2) = (flows.clone(), pcap.clone());
    let log_dir = LogDir::new(&dir.0).expect("log dir");
    with_running_shell(|handle, tables| async move {
        let (flows, pcap) = (flows2, pcap2);
        let fn_a1 = tables.port_named("tenant-a/fn-a1").expect("fn-a1");
        let status = observe_api::status(&handle).await.expect("status");
        assert_eq!(status, Default::default(), "nothing observed yet");

        let fl = observe_api::start_flow_log(
            &handle,
            flows.display().to_string(),
            Duration::from_secs(60),
            log_dir.clone(),
            OpenMode::Append,
        )
        .await
        .expect("a flow log starts");
        assert_eq!((fl.records_written, fl.window_s), (0, 60.0));
        let again = observe_api::start_flow_log(
            &handle,
            "/nonexistent/x".into(),
            Duration::from_secs(60),
            log_dir.clone(),
            OpenMode::Append,
        )
        .await;
        assert!(
            matches!(again, Err(ObserveControlError::FlowLogRunning { ref target }) if *target == flows.display().to_string()),
            "{again:?}"
        );

        let cap = observe_api::start_capture(
            &handle,
            "tenant-a/fn-a1".into(),
            pcap.clone(),
            log_dir.clone(),
        )
        .await
        .expect("a capture starts");
        assert_eq!(cap.nat_file, dir_join(&pcap, "fn-a1.nat.pcap"));
        assert_eq!(
            tcpdump(&pcap).len(),
            0,
            "a valid, empty pcap from the start"
        );
        let again = observe_api::start_capture(
            &handle,
            "tenant-a/fn-a1".into(),
            pcap.clone(),
            log_dir.clone(),
        )
        .await
        .expect_err("already captured");
        assert!(
            matches!(again, ObserveControlError::AlreadyCapturing { .. }),
            "{again}"
        );
        let unknown = observe_api::start_capture(
            &handle,
            "tenant-a/fn-zz".into(),
            "/tmp/zz.pcap".into(),
            log_dir.clone(),
        )
        .await
        .expect_err("no such endpoint");
        assert!(unknown.to_string().contains("internet/web"), "{unknown}");
        assert!(!Path::new("/tmp/zz.pcap").exists(), "nothing was created");
        let relative = observe_api::start_capture(
            &handle,
            "internet/web".into(),
            "w.pcap".into(),
            log_dir.clone(),
        )
        .await
        .expect_err("a relative path");
        assert!(
            matches!(
                relative,
                ObserveControlError::File(LogFileError::Relative { .. })
            ),
            "{relative}"
        );

        // Traffic: a DNS query from fn-a1 to web, which echoes it back through the NAT.
        let v = handle
            .query(move |s| s.inject(fn_a1, &udp(FN_A1, 40000, WEB, 53)))
            .await
            .expect("the loop runs");
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        // The loop ran the sim ports after the query: web's echo crossed the fabric back.
        let snap = handle.query(|s| s.snapshot()).await.expect("snapshot");
        let f = snap
            .ports
            .iter()
            .find(|p| p.endpoint == "tenant-a/fn-a1")
            .expect("fn-a1");
        // (fn-a1's stack has no socket on 40000: it may answer the echo with an ICMP error.)
        assert!(f.rx_packets >= 1, "{f:?}");
        assert!(f.tx_packets >= 1, "the echo reached fn-a1: {f:?}");
        assert!(snap.shell.is_some());
        let list = handle
            .query(|s| {
                s.connections(&ConnFilter {
                    instance: Some("tenant-a/fn-a1".into()),
                    table: Some("nat".into()),
                    ..ConnFilter::default()
                })
            })
            .await
            .expect("the loop runs")
            .expect("a valid filter");
        assert_eq!(list.total, 1);
        assert_eq!(list.connections[0].remote, "198.51.100.10:53");

        let status = observe_api::status(&handle).await.expect("status");
        let c = &status.captures[0];
        assert_eq!(c.endpoint, "tenant-a/fn-a1");
        assert!(c.packets >= 2 && c.nat_packets >= 2, "{c:?}");
        assert!(
            status
                .flow_log
                .as_ref()
                .is_some_and(|f| f.flows_in_window >= 2)
        );

        let done = observe_api::stop_capture(&handle, "tenant-a/fn-a1".into())
            .await
            .expect("the capture stops");
        let own = tcpdump(&pcap);
        assert_eq!(own.len() as u64, done.packets, "{own:#?}");
        assert!(
            own[0].contains("10.0.1.10.40000 > 198.51.100.10.53"),
            "the port's view, before NAT: {own:#?}"
        );
        let nat = tcpdump(Path::new(&done.nat_file));
        assert_eq!(nat.len() as u64, done.nat_packets);
        assert!(
            nat[0].contains("203.0.113.10.40000 > 198.51.100.10.53"),
            "the far side, after SNAT: {nat:#?}"
        );
        let gone = observe_api::stop_capture(&handle, "tenant-a/fn-a1".into())
            .await
            .expect_err("not captured any more");
        assert!(
            matches!(gone, ObserveControlError::NotCapturing { .. }),
            "{gone}"
        );

        let stopped = observe_api::stop_flow_log(&handle)
            .await
            .expect("the flow log stops");
        assert!(stopped.records_written >= 2, "{stopped:?}");
        let text = std::fs::read_to_string(&flows).expect("the flow log file");
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(records.len() as u64, stopped.records_written);
        assert!(
            records.iter().any(|r| r["interface-id"] == "tenant-a/fn-a1"
                && r["flow-direction"] == "egress"
                && r["dstport"] == 53
                && r["action"] == "ACCEPT"),
            "{text}"
        );
        assert!(matches!(
            observe_api::stop_flow_log(&handle).await,
            Err(ObserveControlError::NoFlowLog)
        ));
        assert_eq!(
            observe_api::status(&handle).await.expect("status"),
            Default::default()
        );

        // Flushing through the loop.
        let flushed = handle
            .query(|s| s.flush_connections(&FlushTarget::Instance("tenant-a/fn-a1".into())))
            .await
            .expect("the loop runs")
            .expect("a known instance");
        assert_eq!(flushed.nat_sessions, 1);
    });
    assert!(flows.exists() && pcap.exists());
}

fn dir_join(pcap: &Path, name: &str) -> String {
    pcap.with_file_name(name).display().to_string()
}

#[test]
fn a_capture_follows_its_port_when_ids_move_and_ends_with_its_endpoint() {
    let dir = TempDir::new("follow");
    let tables = Arc::new(vpcd::topology::compile::tables(&plan()));
    let mut obs = Observer::new();
    let mut sinks = Sinks::none();
    let log_dir = LogDir::new(&dir.0).expect("log dir");
    for name in ["tenant-a/fn-a1", "internet/web"] {
        let port = sinks.check_capture(&tables, name).expect("a port");
        let file = dir.0.join(format!("{}.pcap", name.replace('/', "-")));
        let opened = PreparedCapture::open(name, port, Duration::ZERO, &file, &log_dir)
            .expect("files created");
        sinks
            .start_capture(&mut obs, &tables, opened)
            .expect("installed");
    }
    let a1 = tables.port_named("tenant-a/fn-a1").expect("fn-a1").index();
    let web = tables.port_named("internet/web").expect("web").index();
    // A swap that removes fn-a1's port and moves web's to id 0.
    let mut new_id = vec![None; tables.ports.len()];
    new_id[web] = Some(0);
    sinks.follow_ports(&mut obs, &new_id);
    let status = sinks.status(&obs);
    assert_eq!(status.captures.len(), 1, "{status:?}");
    assert_eq!(status.captures[0].endpoint, "internet/web");
    assert_eq!(obs.captures()[0].port(), PortId(0));
    assert_ne!(a1, web);
    // The ended capture's file is a complete pcap.
    assert_eq!(tcpdump(&dir.0.join("tenant-a-fn-a1.pcap")).len(), 0);
}

#[test]
fn connection_and_flush_results_serialize_as_documented() {
    let mut rig = Rig::with_flows();
    let done = inspect::flush(
        &mut rig.fabric,
        rig.now,
        &FlushTarget::Gateway("tenant-b/egress".into()),
    )
    .expect("flushed");
    assert_eq!(
        serde_json::to_value(done).expect("json"),
        serde_json::json!({"nat_sessions": 1, "sg_flows": 0})
    );
    let snap = inspect::snapshot(&rig.fabric, rig.now);
    let json = serde_json::to_value(&snap).expect("json");
    assert_eq!(json["gateways"][0]["kind"], "nat");
    assert_eq!(json["ports"][0]["attach"], "sim");
    assert!(json["drops"]["spoofed"].is_u64());
    assert!(json["shell"].is_null());
}
