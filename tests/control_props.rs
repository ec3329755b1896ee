//! Properties of the control core (issue 6: "bad API input of every kind ... the state is
//! unchanged"): any sequence of change requests, valid or not, never panics; a refused change
//! leaves the state as it was; an accepted one exports to a file that validates to its plan; and
//! every request type refuses unknown keys.

use proptest::prelude::*;
use serde_json::{Value, json};

use vpcd::control::{Change, ControlState};

const FIXTURE: &str = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
[[vpc.subnet]]
name = "pub"
cidr = "10.0.0.0/24"
[[vpc.subnet]]
name = "fn"
cidr = "10.0.1.0/28"
route_table = "priv"
network_acl = "acl"
[[vpc.route_table]]
name = "priv"
routes = [{ destination = "0.0.0.0/0", target = "nat:gw" }]
[[vpc.nat_gateway]]
name = "gw"
subnet = "pub"
eips = ["n1"]
[[vpc.security_group]]
name = "web"
[[vpc.network_acl]]
name = "acl"
[[vpc.instance]]
name = "i0"
subnet = "fn"
[[eip]]
name = "n1"
address = "203.0.113.1"
[[eip]]
name = "e0"
address = "203.0.113.2"
[[zone]]
name = "z.example"
vpcs = ["a"]
record = [{ name = "db", type = "A", value = "10.0.1.9" }]
"#;

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "i0", "i1", "i2", "e0", "e1", "web", "db", "gw", "acl", "x/y", "a",
    ])
    .prop_map(String::from)
}

fn addr() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "10.0.1.5",
        "10.0.1.1",
        "10.0.0.9",
        "10.0.9.9",
        "203.0.113.1",
        "203.0.113.7",
        "1.2.3",
    ])
    .prop_map(String::from)
}

fn cidr() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "0.0.0.0/0",
        "10.0.1.0/28",
        "10.0.0.0/16",
        "192.0.2.0/24",
        "10.0.1.3/24",
        "10.9.0.0/16",
        "10.0.2.0/24",
    ])
    .prop_map(String::from)
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0u32..70000).prop_map(|p| json!(p)),
        Just(json!("80-90")),
        Just(json!("x")),
    ]
}

/// A request body for one of the operations, with values drawn from small pools so that
/// references sometimes resolve and sometimes do not.
fn request() -> impl Strategy<Value = (usize, Value)> {
    (
        0..Change::OPS.len(),
        name(),
        name(),
        addr(),
        cidr(),
        port(),
        port(),
        any::<bool>(),
    )
        .prop_map(|(op, n1, n2, ip, cidr, p1, p2, flag)| {
            let proto = if flag { "tcp" } else { "any" };
            let body = match Change::OPS[op] {
                "add_instance" => {
                    json!({"vpc": "a", "name": n1, "subnet": "fn", "ip": if flag { Value::Null } else { json!(ip) }, "eip": if flag { Value::Null } else { json!(n2) }})
                }
                "remove_instance" => json!({"vpc": "a", "name": n1}),
                "allocate_eip" => json!({"name": n1, "address": ip}),
                "release_eip" => json!({"name": n1}),
                "associate_eip" => {
                    json!({"eip": if flag { "e0".to_string() } else { n1 }, "vpc": "a", "instance": n2, "allow_reassociation": flag})
                }
                "disassociate_eip" => json!({"eip": n1}),
                "add_dnat" => {
                    json!({"vpc": "a", "nat_gateway": "gw", "eip": n1, "protocol": proto, "port": p1, "instance": n2, "instance_port": p2})
                }
                "remove_dnat" => {
                    json!({"vpc": "a", "nat_gateway": "gw", "eip": n1, "protocol": proto, "port": p1})
                }
                "add_snat" => {
                    json!({"vpc": "a", "nat_gateway": "gw", "source": if flag { cidr } else { n1 }})
                }
                "remove_snat" => json!({"vpc": "a", "nat_gateway": "gw", "source": cidr}),
                "add_security_group" => {
                    json!({"vpc": "a", "name": n1, "ingress": [{"protocol": proto.replace("any", "udp"), "ports": p1, "peer": format!("sg:{n2}")}]})
                }
                "remove_security_group" => json!({"vpc": "a", "name": n1}),
                "add_sg_rule" => {
                    json!({"vpc": "a", "group": n1, "direction": if flag { "ingress" } else { "egress" }, "protocol": "tcp", "ports": p1, "peer": cidr})
                }
                "remove_sg_rule" => {
                    json!({"vpc": "a", "group": n1, "direction": "ingress", "protocol": "tcp", "ports": p1, "peer": cidr})
                }
                "add_acl_rule" => {
                    json!({"vpc": "a", "network_acl": "acl", "direction": "inbound", "rule": p1, "action": "deny", "protocol": "tcp", "ports": p2, "cidr": cidr})
                }
                "remove_acl_rule" => {
                    json!({"vpc": "a", "network_acl": "acl", "direction": "inbound", "rule": p1})
                }
                "add_route" => {
                    json!({"vpc": "a", "route_table": if flag { "main" } else { "priv" }, "destination": cidr, "target": if flag { "blackhole".to_string() } else { format!("nat:{n1}") }})
                }
                "remove_route" => json!({"vpc": "a", "route_table": "priv", "destination": cidr}),
                "add_vpc" => json!({"name": n1, "cidr": cidr}),
                "remove_vpc" => json!({"name": if flag { "a".to_string() } else { n1 }}),
                "add_subnet" => {
                    json!({"vpc": if flag { "a".to_string() } else { n2 }, "name": n1, "cidr": cidr, "route_table": if flag { "priv" } else { "main" }, "network_acl": if flag { Value::Null } else { json!("acl") }})
                }
                "remove_subnet" => {
                    json!({"vpc": "a", "name": if flag { "fn".to_string() } else { n1 }})
                }
                "add_route_table" => {
                    json!({"vpc": "a", "name": n1, "routes": [{"destination": cidr, "target": if flag { "blackhole".to_string() } else { format!("nat:{n2}") }}]})
                }
                "remove_route_table" => {
                    json!({"vpc": "a", "name": if flag { "priv".to_string() } else { n1 }})
                }
                "associate_route_table" => {
                    json!({"vpc": "a", "subnet": if flag { "fn" } else { "pub" }, "route_table": if flag { "main".to_string() } else { n1 }})
                }
                "add_nat_gateway" => {
                    json!({"vpc": "a", "name": n1, "subnet": if flag { "pub" } else { "fn" }, "eips": if flag { json!([]) } else { json!([n2]) }, "ip": if flag { Value::Null } else { json!(ip) }, "port_range": p1})
                }
                "remove_nat_gateway" => {
                    json!({"vpc": "a", "name": if flag { "gw".to_string() } else { n1 }})
                }
                "add_network_acl" => {
                    json!({"vpc": "a", "name": n1, "inbound": [{"rule": if flag { json!(100) } else { p1 }, "action": "deny", "protocol": if flag { "tcp" } else { "all" }, "ports": p2, "cidr": cidr}]})
                }
                "remove_network_acl" => {
                    json!({"vpc": "a", "name": if flag { "acl".to_string() } else { n1 }})
                }
                "associate_network_acl" => {
                    json!({"vpc": "a", "subnet": if flag { "pub" } else { "fn" }, "network_acl": if flag { json!(n1) } else { Value::Null }})
                }
                "set_egress_allow" => {
                    json!({"vpc": "a", "egress_allow": if flag { Value::Null } else { json!([cidr]) }})
                }
                "add_zone" => {
                    json!({"name": if flag { "z.example" } else { "y.example" }, "vpcs": [if flag { "a".to_string() } else { n1 }]})
                }
                "remove_zone" => json!({"name": if flag { "z.example".to_string() } else { n1 }}),
                "add_zone_record" => {
                    json!({"zone": "z.example", "name": n1, "type": if flag { "A" } else { "CNAME" }, "value": ip})
                }
                "remove_zone_record" => {
                    json!({"zone": "z.example", "name": if flag { "db".to_string() } else { n1 }, "type": "A"})
                }
                "associate_zone" => json!({"zone": "z.example", "vpc": n1}),
                "disassociate_zone" => {
                    json!({"zone": "z.example", "vpc": if flag { "a".to_string() } else { n1 }})
                }
                "add_dns_firewall_rule" if flag => {
                    json!({"name": n1, "vpcs": ["a"], "domain_list": "lst", "action": "block"})
                }
                "add_dns_firewall_rule" => {
                    json!({"name": n1, "vpcs": ["a"], "domains": [format!("{n2}.example")], "action": "alert", "block_response": json!("nodata")})
                }
                "remove_dns_firewall_rule" => json!({"name": n1}),
                "set_egress_by_name" => {
                    json!({"vpc": "a", "allow": if flag { json!([]) } else { json!([format!("{n1}.example:443")]) }})
                }
                "add_public_zone" => {
                    json!({"name": if flag { "pub.example" } else { "x.vpc.internal" }})
                }
                "remove_public_zone" => json!({"name": if flag { "pub.example".to_string() } else { n1 }}),
                "add_public_zone_record" => {
                    json!({"zone": "pub.example", "name": n1, "type": if flag { "A" } else { "TXT" }, "value": ip})
                }
                "remove_public_zone_record" => {
                    json!({"zone": "pub.example", "name": n1, "type": "A"})
                }
                "add_dns_domain_list" => {
                    json!({"name": if flag { "lst".to_string() } else { n1 }, "domains": [format!("{n2}.example")]})
                }
                "remove_dns_domain_list" => json!({"name": if flag { "lst".to_string() } else { n1 }}),
                "update_dns_domain_list" => {
                    json!({"name": "lst", "operation": if flag { "add" } else { "remove" }, "domains": [format!("{n2}.example")]})
                }
                other => panic!("the property test does not know operation `{other}`; add it"),
            };
            (op, body)
        })
}

/// Every instance's and NAT gateway's address, by `(VPC, kind, name)`.
fn addresses(
    plan: &vpcd::topology::Plan,
) -> Vec<((String, &'static str, String), std::net::Ipv4Addr)> {
    let mut out = Vec::new();
    for v in &plan.vpcs {
        for i in &v.instances {
            out.push(((v.name.clone(), "instance", i.name.clone()), i.ip));
        }
        for g in &v.nat_gateways {
            out.push(((v.name.clone(), "nat_gateway", g.name.clone()), g.ip));
        }
    }
    out
}

fn decode_op(op: usize, body: &[u8]) -> Option<Change> {
    let change = Change::decode(Change::OPS[op], body).ok()?;
    assert_eq!(change.op(), Change::OPS[op]);
    Some(change)
}

/// Issue 20: `apply` (incremental where it can be) decides as the whole-file path
/// (`apply_full`), to the byte: the same state and export, or the same errors.
fn both_paths(
    state: &ControlState,
    change: &Change,
) -> Result<Result<ControlState, vpcd::control::ChangeError>, TestCaseError> {
    let (fast, full) = (state.apply(change), state.apply_full(change));
    match (&fast, &full) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!(a, b);
            prop_assert_eq!(a.export(), b.export());
        }
        (Err(a), Err(b)) => prop_assert_eq!(a.to_json(), b.to_json()),
        _ => prop_assert!(false, "{:?}: accepted by one path only", change),
    }
    Ok(fast)
}

/// The incremental path's riskiest part is renumbering after a detach: a fixture whose DNAT
/// entry, probe and 1:1 EIP name the last instances, and only the operations that path decides.
const INDEXED: &str = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
subnet = [ { name = "pub", cidr = "10.0.0.0/24" }, { name = "fn", cidr = "10.0.1.0/28" } ]
security_group = [ { name = "web" }, { name = "db", ingress = [ { protocol = "tcp", ports = 5432, peer = "sg:web" } ] } ]
instance = [
  { name = "i0", subnet = "fn" }, { name = "i1", subnet = "fn", eip = "e1" },
  { name = "i2", subnet = "fn" }, { name = "i3", subnet = "fn", security_groups = ["web"] },
]
nat_gateway = [ { name = "gw", subnet = "pub", eips = ["n1"], dnat = [ { eip = "n1", protocol = "tcp", port = 80, instance = "i3" } ] } ]

[[eip]]
name = "n1"
address = "203.0.113.1"

[[eip]]
name = "e1"
address = "203.0.113.2"

[[eip]]
name = "e2"
address = "203.0.113.3"

[internet]
cidr = "198.51.100.0/24"
host = [ { name = "h", ip = "198.51.100.10" } ]

[[probe]]
from = "a/i2"
to = "internet/h:80/tcp"
expect = "allow"
"#;

/// One of the operations the incremental path decides, on names that exist or not.
fn indexed_request() -> impl Strategy<Value = (&'static str, Value)> {
    let names = || prop::sample::select(vec!["i0", "i1", "i2", "i3", "i4", "i5", "i6"]);
    let eips = prop::sample::select(vec!["e1", "e2", "n1", "zz"]);
    let groups = prop::sample::select(vec!["web", "db", "nope"]);
    let ips = prop::sample::select(vec!["", "10.0.1.9", "10.0.1.2", "10.0.1.15", "10.0.0.7"]);
    (
        0..6usize,
        names(),
        eips,
        groups,
        ips,
        any::<bool>(),
        1u16..4,
    )
        .prop_map(|(op, n, e, g, ip, flag, port)| match op {
            0 => (
                "add_instance",
                json!({"vpc": "a", "name": n, "subnet": "fn", "attach": "sim",
                       "ip": if ip.is_empty() { Value::Null } else { json!(ip) },
                       "eip": if flag { json!(e) } else { Value::Null },
                       "security_groups": if flag { json!([g]) } else { json!([]) }}),
            ),
            1 => ("remove_instance", json!({"vpc": "a", "name": n})),
            2 => (
                "associate_eip",
                json!({"eip": e, "vpc": "a", "instance": n, "allow_reassociation": flag}),
            ),
            3 => ("disassociate_eip", json!({"eip": e})),
            4 => (
                "add_sg_rule",
                json!({"vpc": "a", "group": g, "direction": if flag { "ingress" } else { "egress" },
                       "protocol": if port == 3 { "icmp" } else { "tcp" }, "ports": port,
                       "peer": if flag { "sg:db" } else { "10.0.0.0/8" }}),
            ),
            _ => (
                "remove_sg_rule",
                json!({"vpc": "a", "group": g, "direction": "ingress", "protocol": "tcp",
                       "ports": port, "peer": if flag { "sg:db" } else { "10.0.0.0/8" }}),
            ),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_changes_decide_as_the_whole_file_path(reqs in prop::collection::vec(indexed_request(), 1..24)) {
        let mut state = ControlState::from_text("f.toml", INDEXED).unwrap();
        for (op, body) in reqs {
            let Ok(change) = Change::decode(op, body.to_string().as_bytes()) else { continue };
            if let Ok(next) = both_paths(&state, &change)? {
                state = next;
            }
        }
    }

    #[test]
    fn any_sequence_of_requests_keeps_the_state_valid(reqs in prop::collection::vec(request(), 1..12)) {
        let mut state = ControlState::from_text("f.toml", FIXTURE).unwrap();
        for (op, body) in reqs {
            let Some(change) = decode_op(op, body.to_string().as_bytes()) else { continue };
            let before = state.clone();
            match both_paths(&state, &change)? {
                Ok(next) => {
                    prop_assert_eq!(next.generation(), state.generation() + 1);
                    let again = vpcd::topology::parse("export.toml", next.export()).unwrap();
                    prop_assert_eq!(&again, next.plan());
                    // Addresses of instances and NAT gateways that stay never move.
                    for (old_v, old) in addresses(state.plan()) {
                        if let Some((_, new)) = addresses(next.plan()).into_iter().find(|(v, _)| v == &old_v) {
                            prop_assert_eq!(new, old);
                        }
                    }
                    state = next;
                }
                Err(e) => {
                    prop_assert_eq!(&state, &before);
                    prop_assert!(!e.errors.is_empty());
                    prop_assert!(e.errors.iter().all(|x| !x.error.is_empty()));
                    prop_assert!(e.http_status() >= 400 && e.http_status() < 500);
                }
            }
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..64), op in 0..Change::OPS.len()) {
        let _ = decode_op(op, &body);
    }
}

#[test]
fn every_request_type_refuses_unknown_keys() {
    let bodies: Vec<(usize, Value)> = vec![
        (0, json!({"vpc": "a", "name": "n", "subnet": "fn"})),
        (1, json!({"vpc": "a", "name": "n"})),
        (2, json!({"name": "n", "address": "203.0.113.9"})),
        (3, json!({"name": "n"})),
        (4, json!({"eip": "e", "vpc": "a", "instance": "i"})),
        (5, json!({"eip": "e"})),
        (
            6,
            json!({"vpc": "a", "nat_gateway": "g", "eip": "e", "protocol": "tcp", "port": 1, "instance": "i"}),
        ),
        (
            7,
            json!({"vpc": "a", "nat_gateway": "g", "eip": "e", "protocol": "tcp", "port": 1}),
        ),
        (8, json!({"vpc": "a", "nat_gateway": "g", "source": "s"})),
        (9, json!({"vpc": "a", "nat_gateway": "g", "source": "s"})),
        (10, json!({"vpc": "a", "name": "n"})),
        (11, json!({"vpc": "a", "name": "n"})),
        (
            12,
            json!({"vpc": "a", "group": "g", "direction": "ingress", "protocol": "tcp", "peer": "p"}),
        ),
        (
            13,
            json!({"vpc": "a", "group": "g", "direction": "ingress", "protocol": "tcp", "peer": "p"}),
        ),
        (
            14,
            json!({"vpc": "a", "network_acl": "n", "direction": "inbound", "rule": 1, "action": "deny", "protocol": "tcp", "cidr": "0.0.0.0/0"}),
        ),
        (
            15,
            json!({"vpc": "a", "network_acl": "n", "direction": "inbound", "rule": 1}),
        ),
        (
            16,
            json!({"vpc": "a", "route_table": "t", "destination": "0.0.0.0/0", "target": "blackhole"}),
        ),
        (
            17,
            json!({"vpc": "a", "route_table": "t", "destination": "0.0.0.0/0"}),
        ),
        (18, json!({"name": "n", "cidr": "10.0.0.0/16"})),
        (19, json!({"name": "n"})),
        (20, json!({"vpc": "a", "name": "n", "cidr": "10.0.2.0/24"})),
        (21, json!({"vpc": "a", "name": "n"})),
        (
            22,
            json!({"vpc": "a", "name": "n", "routes": [{"destination": "0.0.0.0/0", "target": "internet"}]}),
        ),
        (23, json!({"vpc": "a", "name": "n"})),
        (24, json!({"vpc": "a", "subnet": "s", "route_table": "t"})),
        (
            25,
            json!({"vpc": "a", "name": "n", "subnet": "s", "timeouts": {"udp": 1}}),
        ),
        (26, json!({"vpc": "a", "name": "n"})),
        (
            27,
            json!({"vpc": "a", "name": "n", "inbound": [{"rule": 1, "action": "deny", "protocol": "tcp", "cidr": "0.0.0.0/0"}]}),
        ),
        (28, json!({"vpc": "a", "name": "n"})),
        (29, json!({"vpc": "a", "subnet": "s"})),
        (
            30,
            json!({"vpc": "a", "egress_allow": ["192.0.2.0/24:443"]}),
        ),
        (31, json!({"name": "n.example", "vpcs": ["a"]})),
        (32, json!({"name": "n.example"})),
        (
            33,
            json!({"zone": "z.example", "name": "n", "type": "A", "value": "10.0.1.5"}),
        ),
        (34, json!({"zone": "z.example", "name": "n", "type": "A"})),
        (35, json!({"zone": "z.example", "vpc": "a"})),
        (36, json!({"zone": "z.example", "vpc": "a"})),
        (
            37,
            json!({"name": "n", "vpcs": ["a"], "domains": ["bad.example"], "action": "block"}),
        ),
        (38, json!({"name": "n"})),
        (39, json!({"vpc": "a", "allow": ["api.example:443"]})),
        (40, json!({"name": "n.example"})),
        (41, json!({"name": "n.example"})),
        (
            42,
            json!({"zone": "z.example", "name": "n", "type": "A", "value": "198.51.100.5"}),
        ),
        (43, json!({"zone": "z.example", "name": "n", "type": "A"})),
        (44, json!({"name": "n", "domains": ["bad.example"]})),
        (45, json!({"name": "n"})),
        (
            46,
            json!({"name": "n", "operation": "add", "domains": ["bad.example"]}),
        ),
    ];
    let mut covered: Vec<usize> = bodies.iter().map(|(op, _)| *op).collect();
    covered.dedup();
    assert_eq!(
        covered,
        (0..Change::OPS.len()).collect::<Vec<_>>(),
        "a body for every operation"
    );
    for (op, body) in bodies {
        assert!(
            decode_op(op, body.to_string().as_bytes()).is_some(),
            "op {op}: {body}"
        );
        let mut extra = body.clone();
        extra["typo"] = json!(1);
        assert!(
            decode_op(op, extra.to_string().as_bytes()).is_none(),
            "op {op} accepted an unknown key"
        );
    }
}

#[test]
fn nested_request_objects_refuse_unknown_keys_too() {
    for (op, body) in [
        (
            "add_route_table",
            json!({"vpc": "a", "name": "n", "routes": [{"destination": "0.0.0.0/0", "target": "internet", "typo": 1}]}),
        ),
        (
            "add_nat_gateway",
            json!({"vpc": "a", "name": "n", "subnet": "s", "snat": [{"source": "fn", "typo": 1}]}),
        ),
        (
            "add_nat_gateway",
            json!({"vpc": "a", "name": "n", "subnet": "s", "dnat": [{"eip": "e", "protocol": "any", "instance": "i", "typo": 1}]}),
        ),
        (
            "add_nat_gateway",
            json!({"vpc": "a", "name": "n", "subnet": "s", "timeouts": {"typo": 1}}),
        ),
        (
            "add_network_acl",
            json!({"vpc": "a", "name": "n", "outbound": [{"rule": 1, "action": "deny", "protocol": "tcp", "cidr": "0.0.0.0/0", "typo": 1}]}),
        ),
    ] {
        let e = Change::decode(op, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.errors[0].error, "unknown key `typo`", "{op}: {body}");
    }
}

#[test]
fn unknown_operation_is_not_found() {
    let e = Change::decode("create_vpc", b"{}").unwrap_err();
    assert_eq!(e.http_status(), 404);
    assert_eq!(e.errors[0].error, "`create_vpc` is not an operation");
}
