//! Property tests for topology validation: random topologies (some deliberately broken) either
//! resolve to a plan whose invariants hold, or fail with located diagnostics. Never a panic.

use std::collections::HashSet;
use std::fmt::Write as _;

use proptest::prelude::*;
use vpcd::topology::plan::{EipBinding, Endpoint, Plan, RouteTargetPlan};
use vpcd::topology::{TopologyError, parse};

const NAMES: &[&str] = &[
    "a", "b", "web", "fn-1", "x.y_z", "internet", "bad/name", "", "main",
];
const VPC_CIDRS: &[&str] = &[
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "10.0.0.0/29",
    "10.0.0.0/7",
    "198.51.100.0/24",
];
const SUBNET_CIDRS: &[&str] = &[
    "10.0.0.0/24",
    "10.0.1.0/24",
    "10.0.0.0/28",
    "10.0.0.0/30",
    "10.0.0.4/31",
    "10.0.0.0/23",
    "10.1.0.0/24",
    "10.0.1.5/24",
    "172.16.0.0/24",
];
const PUBLIC: &[&str] = &[
    "203.0.113.1",
    "203.0.113.2",
    "198.51.100.10",
    "10.0.0.5",
    "192.168.0.1",
    "not-an-ip",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(list)
}

fn ip_in_10() -> impl Strategy<Value = String> {
    (0u8..3, 0u8..=255).prop_map(|(c, d)| format!("10.0.{c}.{d}"))
}

#[derive(Debug, Clone)]
struct Inst {
    name: &'static str,
    subnet: &'static str,
    ip: Option<String>,
    eip: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Vpc {
    name: &'static str,
    cidr: &'static str,
    subnets: Vec<(&'static str, &'static str)>,
    instances: Vec<Inst>,
    gateway: Option<(&'static str, Vec<&'static str>)>,
    default_route_to_gateway: bool,
}

fn inst() -> impl Strategy<Value = Inst> {
    (
        pick(NAMES),
        pick(NAMES),
        proptest::option::of(ip_in_10()),
        proptest::option::of(pick(NAMES)),
    )
        .prop_map(|(name, subnet, ip, eip)| Inst {
            name,
            subnet,
            ip,
            eip,
        })
}

fn vpc() -> impl Strategy<Value = Vpc> {
    (
        pick(NAMES),
        pick(VPC_CIDRS),
        proptest::collection::vec((pick(NAMES), pick(SUBNET_CIDRS)), 0..4),
        proptest::collection::vec(inst(), 0..5),
        proptest::option::of((pick(NAMES), proptest::collection::vec(pick(NAMES), 0..3))),
        any::<bool>(),
    )
        .prop_map(
            |(name, cidr, subnets, instances, gateway, default_route_to_gateway)| Vpc {
                name,
                cidr,
                subnets,
                instances,
                gateway,
                default_route_to_gateway,
            },
        )
}

#[derive(Debug, Clone)]
struct Topo {
    vpcs: Vec<Vpc>,
    eips: Vec<(&'static str, &'static str)>,
    hosts: Vec<(&'static str, &'static str)>,
    probes: Vec<(String, String)>,
}

fn topo() -> impl Strategy<Value = Topo> {
    (
        proptest::collection::vec(vpc(), 0..3),
        proptest::collection::vec((pick(NAMES), pick(PUBLIC)), 0..4),
        proptest::collection::vec((pick(NAMES), pick(PUBLIC)), 0..3),
        proptest::collection::vec(
            (
                (pick(NAMES), pick(NAMES)).prop_map(|(s, n)| format!("{s}/{n}")),
                prop_oneof![
                    (pick(NAMES), pick(NAMES)).prop_map(|(s, n)| format!("{s}/{n}:80/tcp")),
                    pick(PUBLIC).prop_map(|a| format!("{a}/icmp")),
                ],
            ),
            0..3,
        ),
    )
        .prop_map(|(vpcs, eips, hosts, probes)| Topo {
            vpcs,
            eips,
            hosts,
            probes,
        })
}

fn render(t: &Topo) -> String {
    let mut s = String::new();
    for v in &t.vpcs {
        let _ = writeln!(s, "[[vpc]]\nname = {:?}\ncidr = {:?}\n", v.name, v.cidr);
        for (name, cidr) in &v.subnets {
            let _ = writeln!(s, "[[vpc.subnet]]\nname = {name:?}\ncidr = {cidr:?}\n");
        }
        if let Some((g, eips)) = &v.gateway {
            let sub = v.subnets.first().map_or("none", |s| s.0);
            let _ = writeln!(
                s,
                "[[vpc.nat_gateway]]\nname = {g:?}\nsubnet = {sub:?}\neips = {eips:?}\nsnat = [{{ source = {:?} }}]\n",
                v.cidr
            );
            if v.default_route_to_gateway {
                let _ = writeln!(
                    s,
                    "[[vpc.route_table]]\nname = \"main\"\nroutes = [{{ destination = \"0.0.0.0/0\", target = \"nat:{g}\" }}]\n"
                );
            }
        }
        for i in &v.instances {
            let _ = writeln!(
                s,
                "[[vpc.instance]]\nname = {:?}\nsubnet = {:?}",
                i.name, i.subnet
            );
            if let Some(ip) = &i.ip {
                let _ = writeln!(s, "ip = {ip:?}");
            }
            if let Some(e) = i.eip {
                let _ = writeln!(s, "eip = {e:?}");
            }
            s.push('\n');
        }
    }
    for (name, addr) in &t.eips {
        let _ = writeln!(s, "[[eip]]\nname = {name:?}\naddress = {addr:?}\n");
    }
    for (name, ip) in &t.hosts {
        let _ = writeln!(s, "[[internet.host]]\nname = {name:?}\nip = {ip:?}\n");
    }
    for (from, to) in &t.probes {
        let _ = writeln!(
            s,
            "[[probe]]\nfrom = {from:?}\nto = {to:?}\nexpect = \"allow\"\n"
        );
    }
    s
}

/// The invariants every valid plan keeps.
fn assert_plan_invariants(p: &Plan) {
    for (vi, v) in p.vpcs.iter().enumerate() {
        assert!(!v.route_tables.is_empty() && v.route_tables[0].name == "main");
        for t in &v.route_tables {
            assert_eq!(t.routes[0].destination, v.cidr);
            assert_eq!(t.routes[0].target, RouteTargetPlan::Local);
            for r in &t.routes {
                if let RouteTargetPlan::Nat(g) = r.target {
                    assert!(g < v.nat_gateways.len());
                }
            }
        }
        let mut used = HashSet::new();
        for s in &v.subnets {
            assert!(v.cidr.covers(s.cidr));
            assert!(s.route_table < v.route_tables.len());
            assert_eq!(s.gateway, s.cidr.gateway());
        }
        let mut check_addr = |subnet: usize, ip| {
            let s = &v.subnets[subnet];
            assert!(s.cidr.contains(ip), "{ip} outside {}", s.cidr);
            assert!(ip != s.cidr.network() && ip != s.gateway && ip != s.cidr.broadcast());
            assert!(used.insert(ip), "{ip} used twice in VPC {}", v.name);
        };
        for g in &v.nat_gateways {
            check_addr(g.subnet, g.ip);
        }
        for (ii, i) in v.instances.iter().enumerate() {
            check_addr(i.subnet, i.ip);
            if let Some(e) = i.eip {
                assert_eq!(
                    p.eips[e].binding,
                    EipBinding::Instance {
                        vpc: vi,
                        instance: ii
                    }
                );
            }
        }
        for g in &v.nat_gateways {
            for s in &g.snat {
                assert!(!s.eips.is_empty());
                assert!(s.eips.iter().all(|e| g.eips.contains(e)));
            }
        }
    }
    let mut public = HashSet::new();
    for e in &p.eips {
        assert!(!e.address.is_private());
        assert!(public.insert(e.address));
    }
    for h in &p.internet.hosts {
        assert!(p.internet.cidr.contains(h.ip));
        assert!(public.insert(h.ip));
    }
    for pr in &p.probes {
        let in_range = |e: Endpoint| match e {
            Endpoint::Instance { vpc, instance } => {
                vpc < p.vpcs.len() && instance < p.vpcs[vpc].instances.len()
            }
            Endpoint::Host(h) => h < p.internet.hosts.len(),
        };
        assert!(in_range(pr.from));
        if let Some(to) = pr.to_endpoint {
            assert!(in_range(to));
            assert_eq!(p.endpoint_ip(to), pr.to_addr);
        }
    }
}

fn assert_located(e: &TopologyError) {
    let TopologyError::Invalid(diags) = e else {
        panic!("parse never does I/O: {e}");
    };
    assert!(!diags.is_empty());
    let mut last_line = 0;
    for d in diags {
        assert!(d.line >= 1, "unlocated: {d}");
        assert!(d.column >= 1, "no column: {d}");
        assert!(d.span_len >= 1);
        // Syntax errors between tables may have no key; every other error names one.
        if !d.message.starts_with("invalid TOML") {
            assert!(!d.key_path.is_empty(), "no key path: {d}");
        }
        assert!(d.line >= last_line, "not in file order");
        last_line = d.line;
        assert!(d.hint.as_deref().is_some_and(|h| !h.is_empty()) || d.message.contains(':'));
    }
    // Rendering never panics and names the file.
    assert!(e.to_string().contains(" --> bad.toml:"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_topologies_give_a_sound_plan_or_located_errors(t in topo()) {
        let text = render(&t);
        match parse("bad.toml", &text) {
            Ok(p) => assert_plan_invariants(&p),
            Err(e) => assert_located(&e),
        }
    }

    #[test]
    fn damaged_topologies_never_panic(t in topo(), cut in any::<prop::sample::Index>(), len in 0usize..20, junk in "[\\[\\]\"=a-z.{} \n]{0,8}") {
        let mut text = render(&t);
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + len).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.replace_range(at..end, &junk);
        match parse("bad.toml", &text) {
            Ok(p) => assert_plan_invariants(&p),
            Err(e) => assert_located(&e),
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Err(e) = parse("bad.toml", &text) {
            let _ = e.to_string();
        }
    }
}

#[test]
fn a_valid_generated_topology_exists() {
    // Guards the generator: the happy path must be reachable, not only errors.
    let t = Topo {
        vpcs: vec![Vpc {
            name: "a",
            cidr: "10.0.0.0/16",
            subnets: vec![("web", "10.0.0.0/24")],
            instances: vec![Inst {
                name: "fn-1",
                subnet: "web",
                ip: Some("10.0.0.9".into()),
                eip: Some("b"),
            }],
            gateway: Some(("main", vec!["a"])),
            default_route_to_gateway: true,
        }],
        eips: vec![("a", "203.0.113.1"), ("b", "203.0.113.2")],
        hosts: vec![("web", "198.51.100.10")],
        probes: vec![("a/fn-1".into(), "internet/web:80/tcp".into())],
    };
    let p = parse("good.toml", &render(&t)).unwrap_or_else(|e| panic!("{e}"));
    assert_plan_invariants(&p);
}
