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
    (0usize..18, name(), name(), addr(), cidr(), port(), port(), any::<bool>()).prop_map(
        |(op, n1, n2, ip, cidr, p1, p2, flag)| {
            let proto = if flag { "tcp" } else { "any" };
            let body = match op {
                0 => json!({"vpc": "a", "name": n1, "subnet": "fn", "ip": if flag { Value::Null } else { json!(ip) }, "eip": if flag { Value::Null } else { json!(n2) }}),
                1 => json!({"vpc": "a", "name": n1}),
                2 => json!({"name": n1, "address": ip}),
                3 => json!({"name": n1}),
                4 => json!({"eip": n1, "vpc": "a", "instance": n2}),
                5 => json!({"eip": n1}),
                6 => json!({"vpc": "a", "nat_gateway": "gw", "eip": n1, "protocol": proto, "port": p1, "instance": n2, "instance_port": p2}),
                7 => json!({"vpc": "a", "nat_gateway": "gw", "eip": n1, "protocol": proto, "port": p1}),
                8 => json!({"vpc": "a", "nat_gateway": "gw", "source": if flag { cidr } else { n1 }}),
                9 => json!({"vpc": "a", "nat_gateway": "gw", "source": cidr}),
                10 => json!({"vpc": "a", "name": n1, "ingress": [{"protocol": proto.replace("any", "udp"), "ports": p1, "peer": format!("sg:{n2}")}]}),
                11 => json!({"vpc": "a", "name": n1}),
                12 => json!({"vpc": "a", "group": n1, "direction": if flag { "ingress" } else { "egress" }, "protocol": "tcp", "ports": p1, "peer": cidr}),
                13 => json!({"vpc": "a", "group": n1, "direction": "ingress", "protocol": "tcp", "ports": p1, "peer": cidr}),
                14 => json!({"vpc": "a", "network_acl": "acl", "direction": "inbound", "rule": p1, "action": "deny", "protocol": "tcp", "ports": p2, "cidr": cidr}),
                15 => json!({"vpc": "a", "network_acl": "acl", "direction": "inbound", "rule": p1}),
                16 => json!({"vpc": "a", "route_table": if flag { "main" } else { "priv" }, "destination": cidr, "target": if flag { "blackhole".to_string() } else { format!("nat:{n1}") }}),
                _ => json!({"vpc": "a", "route_table": "priv", "destination": cidr}),
            };
            (op, body)
        },
    )
}

fn decode_op(op: usize, body: &[u8]) -> Option<Change> {
    let change = Change::decode(Change::OPS[op], body).ok()?;
    assert_eq!(change.op(), Change::OPS[op]);
    Some(change)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_of_requests_keeps_the_state_valid(reqs in prop::collection::vec(request(), 1..12)) {
        let mut state = ControlState::from_text("f.toml", FIXTURE).unwrap();
        for (op, body) in reqs {
            let Some(change) = decode_op(op, body.to_string().as_bytes()) else { continue };
            let before = state.clone();
            match state.apply(&change) {
                Ok(next) => {
                    prop_assert_eq!(next.generation(), state.generation() + 1);
                    let again = vpcd::topology::parse("export.toml", next.export()).unwrap();
                    prop_assert_eq!(&again, next.plan());
                    // Addresses of instances that stay never move.
                    for old in &state.plan().vpcs[0].instances {
                        if let Some(new) = next.plan().vpcs[0].instances.iter().find(|i| i.name == old.name) {
                            prop_assert_eq!(new.ip, old.ip);
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
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..64), op in 0usize..18) {
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
    ];
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
fn unknown_operation_is_not_found() {
    let e = Change::decode("add_vpc", b"{}").unwrap_err();
    assert_eq!(e.http_status(), 404);
    assert_eq!(e.errors[0].error, "`add_vpc` is not an operation");
}
