//! Control-core change operations (issue 6, "live changes"): each request decoded from JSON like
//! the HTTP layer will, applied to the effective topology, and validated exactly like a file.
//! Every refusal leaves the state unchanged.

use serde::de::DeserializeOwned;
use serde_json::json;

use vpcd::control::change::*;
use vpcd::control::{Change, ChangeError, ControlState, ErrorCode, decode};
use vpcd::topology::plan::EipBinding;

const FIXTURE: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "public"
cidr = "10.0.0.0/24"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"
route_table = "private"
network_acl = "fn-acl"

[[vpc.route_table]]
name = "private"
routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]

[[vpc.nat_gateway]]
name = "egress"
subnet = "public"
eips = ["nat-a"]
snat = [{ source = "10.0.1.0/24" }]
dnat = [{ eip = "nat-a", protocol = "tcp", port = 8080, instance = "fn-a1", instance_port = 80 }]

[[vpc.security_group]]
name = "web"
ingress = [{ protocol = "tcp", ports = 80, peer = "0.0.0.0/0" }]

[[vpc.security_group]]
name = "db"
ingress = [{ protocol = "tcp", ports = 5432, peer = "sg:web" }]

[[vpc.network_acl]]
name = "fn-acl"
inbound = [{ rule = 100, action = "allow", protocol = "all", cidr = "0.0.0.0/0" }]
outbound = [{ rule = 100, action = "allow", protocol = "all", cidr = "0.0.0.0/0" }]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
security_groups = ["web"]

[[vpc.instance]]
name = "fn-a2"
subnet = "functions"
eip = "direct"

[[eip]]
name = "nat-a"
address = "203.0.113.10"

[[eip]]
name = "direct"
address = "203.0.113.11"

[[eip]]
name = "spare"
address = "203.0.113.12"

[internet]
[[internet.host]]
name = "web"
ip = "198.51.100.10"
serve = ["tcp:80"]
"#;

fn state() -> ControlState {
    ControlState::from_text("fixture.toml", FIXTURE).unwrap()
}

/// Decodes a request body like the HTTP layer.
fn req<T: DeserializeOwned + Into<Change>>(body: serde_json::Value) -> Change {
    decode::<T>(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("decode: {}", e.to_json()))
        .into()
}

/// `s.apply(c)` (incremental where it can be) checked against the whole-file path
/// (`apply_full`): the same state, export and errors (issue 20: both paths on every case).
fn apply_both(s: &ControlState, c: &Change) -> Result<ControlState, ChangeError> {
    let fast = s.apply(c);
    match (&fast, s.apply_full(c)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, &b, "{c:?}: the incremental path built another state");
            assert_eq!(a.export(), b.export(), "{c:?}: another export");
        }
        (Err(a), Err(b)) => assert_eq!(a.to_json(), b.to_json(), "{c:?}: other errors"),
        (a, b) => panic!(
            "{c:?}: the paths disagree: {:?} vs {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    }
    fast
}

/// Applies a change that must succeed; checks that the export of the result is a file that
/// validates to the same plan.
fn ok(s: &ControlState, c: Change) -> ControlState {
    let next = apply_both(s, &c).unwrap_or_else(|e| panic!("{c:?} refused: {}", e.to_json()));
    assert_eq!(next.generation(), s.generation() + 1);
    let reloaded = vpcd::topology::parse("export.toml", next.export())
        .unwrap_or_else(|e| panic!("the export of {c:?} does not load: {e}"));
    assert_eq!(&reloaded, next.plan());
    next
}

/// The first problem `vpcd check` reports for the fixture with `extra` TOML appended:
/// (message, key path).
fn file_error(extra: &str) -> (String, String) {
    let text = format!("{FIXTURE}\n{extra}");
    match vpcd::topology::parse("file.toml", &text) {
        Err(vpcd::topology::TopologyError::Invalid(d)) => {
            (d[0].message.clone(), d[0].key_path.clone())
        }
        other => panic!("the file was not refused: {other:?}"),
    }
}

/// Checks that a refused change reports the file validator's message for the same problem,
/// on the request's field `field`.
fn same_as_file(e: &ChangeError, extra: &str, field: &str) {
    let (message, key_path) = file_error(extra);
    let j = first_json(e);
    assert_eq!(j["code"], "invalid_input", "{j}");
    assert_eq!(j["error"].as_str(), Some(message.as_str()), "{j}");
    assert_eq!(j["field"].as_str(), Some(field), "{j}");
    assert!(key_path.ends_with(field), "{key_path} vs {field}");
}

/// Applies a change that must be refused; checks the state did not move and returns the error.
fn refused(s: &ControlState, c: Change) -> ChangeError {
    let before = s.clone();
    let e = apply_both(s, &c).expect_err("change accepted");
    assert_eq!(s, &before, "state changed by a refused change");
    assert!(!e.errors.is_empty());
    e
}

fn first_json(e: &ChangeError) -> serde_json::Value {
    serde_json::to_value(&e.errors[0]).unwrap()
}

fn vpc(s: &ControlState) -> &vpcd::topology::plan::VpcPlan {
    &s.plan().vpcs[0]
}

fn instance_ip(s: &ControlState, name: &str) -> Option<std::net::Ipv4Addr> {
    vpc(s)
        .instances
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.ip)
}

// ---------------------------------------------------------------------------------------------
// Request bodies: the same words as topology files.

#[test]
fn unknown_field_in_a_request_is_refused_with_the_valid_keys() {
    let e = decode::<AddInstance>(br#"{"vpc":"tenant-a","name":"x","subnet":"functions","sg":[]}"#)
        .unwrap_err();
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"errors": [{
            "code": "invalid_input",
            "error": "unknown key `sg`",
            "field": "sg",
            "hint": "remove or rename it; the keys here are: vpc, name, subnet, ip, attach, security_groups, eip, mtu"
        }]})
    );
    assert_eq!(e.http_status(), 400);
}

#[test]
fn missing_field_names_the_key() {
    let e = decode::<AllocateEip>(br#"{"name":"x"}"#).unwrap_err();
    assert_eq!(
        first_json(&e),
        json!({"code": "invalid_input", "error": "missing key `address`", "field": "address",
               "hint": "add \"address\" to the request body"})
    );
}

#[test]
fn out_of_range_port_names_the_field() {
    let e = decode::<AddDnat>(
        br#"{"vpc":"tenant-a","nat_gateway":"egress","eip":"nat-a","protocol":"tcp","port":70000,"instance":"fn-a2"}"#,
    )
    .unwrap_err();
    assert_eq!(
        first_json(&e),
        json!({"code": "invalid_input", "error": "70000 is out of range here", "field": "port",
               "hint": "write a whole number from 0 to 65535, without quotes"})
    );
}

#[test]
fn wrong_types_name_the_field() {
    let e =
        decode::<AddInstance>(br#"{"vpc":"tenant-a","name":"x","subnet":"functions","mtu":"big"}"#)
            .unwrap_err();
    let j = first_json(&e);
    assert_eq!(j["field"], "mtu");
    assert_eq!(j["error"], "wrong type: string \"big\", expected u32");
    let e =
        decode::<AddInstance>(br#"{"vpc":"tenant-a","name":7,"subnet":"functions"}"#).unwrap_err();
    assert_eq!(first_json(&e)["field"], "name");
    let e = decode::<AddInstance>(br#"[1,2]"#).unwrap_err();
    assert_eq!(first_json(&e)["code"], "invalid_input");
    let e = decode::<AddInstance>(b"{not json").unwrap_err();
    assert!(e.errors[0].error.starts_with("invalid JSON"));
}

#[test]
fn bad_values_use_the_model_messages() {
    let e = decode::<AllocateEip>(br#"{"name":"x","address":"203.0.113"}"#).unwrap_err();
    assert_eq!(
        first_json(&e),
        json!({"code": "invalid_input", "error": "`203.0.113` is not an IPv4 address",
               "field": "address", "hint": "write it like \"10.0.1.10\""})
    );
    let e = decode::<AddRoute>(
        br#"{"vpc":"tenant-a","route_table":"main","destination":"10.9.0.5/16","target":"internet"}"#,
    )
    .unwrap_err();
    assert_eq!(first_json(&e)["field"], "destination");
    assert_eq!(first_json(&e)["error"], "`10.9.0.5/16` has host bits set");
    assert_eq!(first_json(&e)["hint"], "did you mean \"10.9.0.0/16\"?");
    let e = decode::<AddSgRule>(
        br#"{"vpc":"tenant-a","group":"web","direction":"inbound","protocol":"tcp","peer":"0.0.0.0/0"}"#,
    )
    .unwrap_err();
    assert_eq!(
        first_json(&e),
        json!({"code": "invalid_input", "error": "`inbound` is not allowed here",
               "field": "direction", "hint": "write one of: ingress, egress"})
    );
    let e = decode::<AddSgRule>(
        br#"{"vpc":"tenant-a","group":"web","direction":"ingress","protocol":"tcp","ports":"90-80","peer":"0.0.0.0/0"}"#,
    )
    .unwrap_err();
    assert_eq!(first_json(&e)["field"], "ports");
}

// ---------------------------------------------------------------------------------------------
// Instances.

#[test]
fn add_instance_takes_the_first_free_address_and_leaves_the_old_state() {
    let s = state();
    let n = ok(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "fn-a3", "subnet": "functions", "attach": "sim"}),
        ),
    );
    assert_eq!(instance_ip(&n, "fn-a3"), Some("10.0.1.4".parse().unwrap()));
    assert_eq!(instance_ip(&s, "fn-a3"), None);
    assert_eq!(s.generation(), 0);
    // The export of the new state is a valid file with the instance in it.
    assert!(n.export().contains("name = \"fn-a3\""));
    vpcd::topology::parse("x.toml", n.export()).unwrap();
}

#[test]
fn changes_never_renumber_other_instances() {
    let s = state();
    let before: Vec<_> = vpc(&s)
        .instances
        .iter()
        .map(|i| (i.name.clone(), i.ip))
        .collect();
    // An explicit address below the automatic ones, then a removal before the others.
    let n = ok(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "fn-a0", "subnet": "functions", "ip": "10.0.1.100"}),
        ),
    );
    let n = ok(
        &n,
        req::<RemoveDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "tcp", "port": 8080}),
        ),
    );
    let n = ok(
        &n,
        req::<RemoveInstance>(json!({"vpc": "tenant-a", "name": "fn-a1"})),
    );
    let n = ok(
        &n,
        req::<AddInstance>(json!({"vpc": "tenant-a", "name": "fn-a4", "subnet": "functions"})),
    );
    assert_eq!(instance_ip(&n, "fn-a2"), Some(before[1].1));
    assert_eq!(vpc(&n).nat_gateways[0].ip, vpc(&s).nat_gateways[0].ip);
    // The freed address is the first free one again.
    assert_eq!(instance_ip(&n, "fn-a4"), Some(before[0].1));
}

#[test]
fn add_instance_with_ip_eip_and_groups() {
    let s = state();
    let n = ok(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "fn-a3", "subnet": "functions",
            "ip": "10.0.1.50", "security_groups": ["web", "db"], "eip": "spare"}),
        ),
    );
    let i = vpc(&n)
        .instances
        .iter()
        .position(|i| i.name == "fn-a3")
        .unwrap();
    assert_eq!(
        vpc(&n).instances[i].ip,
        "10.0.1.50".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(vpc(&n).instances[i].security_groups.len(), 2);
    let spare = n.plan().eips.iter().find(|e| e.name == "spare").unwrap();
    assert_eq!(
        spare.binding,
        EipBinding::Instance {
            vpc: 0,
            instance: i
        }
    );
}

#[test]
fn add_instance_address_outside_the_subnet_names_the_ip_field() {
    let e = refused(
        &state(),
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "fn-a3", "subnet": "functions", "ip": "10.0.2.5"}),
        ),
    );
    let j = first_json(&e);
    assert_eq!(j["code"], "invalid_input");
    assert_eq!(j["field"], "ip");
    assert!(j["error"].as_str().unwrap().contains("10.0.2.5"), "{j}");
}

#[test]
fn add_instance_refusals() {
    let s = state();
    // Address taken by another instance (fn-a1 got 10.0.1.2).
    let e = refused(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "fn-a3", "subnet": "functions", "ip": "10.0.1.2"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "ip");
    assert!(!e.errors[0].error.contains("line"), "{}", e.errors[0].error);
    // Reserved gateway address.
    let e = refused(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "fn-a3", "subnet": "functions", "ip": "10.0.1.1"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "ip");
    // A subnet that does not exist: the validator's reference error, on the request's field.
    let e = refused(
        &s,
        req::<AddInstance>(json!({"vpc": "tenant-a", "name": "fn-a3", "subnet": "functoins"})),
    );
    let j = first_json(&e);
    assert_eq!(j["field"], "subnet");
    assert!(j["hint"].as_str().unwrap().contains("functions"), "{j}");
    // A name that is not a valid name.
    let e = refused(
        &s,
        req::<AddInstance>(json!({"vpc": "tenant-a", "name": "a/b", "subnet": "functions"})),
    );
    assert_eq!(first_json(&e)["field"], "name");
    // MTU out of range.
    let e = refused(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "x", "subnet": "functions", "mtu": 100}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "mtu");
    // Duplicate name.
    let e = refused(
        &s,
        req::<AddInstance>(json!({"vpc": "tenant-a", "name": "fn-a1", "subnet": "functions"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "already_exists", "error": "instance `fn-a1` already exists", "field": "name",
               "hint": "choose another name, or remove the instance first"})
    );
    assert_eq!(e.http_status(), 409);
    // Unknown VPC.
    let e = refused(
        &s,
        req::<AddInstance>(json!({"vpc": "tenant-b", "name": "x", "subnet": "functions"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "VPC `tenant-b` does not exist", "field": "vpc",
               "hint": "the VPCs are: tenant-a"})
    );
    assert_eq!(e.http_status(), 404);
    // An EIP already bound to another instance.
    let e = refused(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "x", "subnet": "functions", "eip": "direct"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::InvalidInput);
    // An unknown security group.
    let e = refused(
        &s,
        req::<AddInstance>(
            json!({"vpc": "tenant-a", "name": "x", "subnet": "functions", "security_groups": ["nope"]}),
        ),
    );
    assert!(
        first_json(&e)["field"]
            .as_str()
            .unwrap()
            .starts_with("security_groups"),
        "{}",
        e.to_json()
    );
}

#[test]
fn remove_instance_disassociates_its_eip_and_refuses_while_dnat_targets_it() {
    let s = state();
    let n = ok(
        &s,
        req::<RemoveInstance>(json!({"vpc": "tenant-a", "name": "fn-a2"})),
    );
    assert_eq!(instance_ip(&n, "fn-a2"), None);
    let direct = n.plan().eips.iter().find(|e| e.name == "direct").unwrap();
    assert_eq!(direct.binding, EipBinding::Unbound);

    let e = refused(
        &s,
        req::<RemoveInstance>(json!({"vpc": "tenant-a", "name": "fn-a1"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "instance `fn-a1` is the target of a DNAT entry of NAT gateway `egress` (EIP `nat-a`)",
               "field": "", "hint": "remove the DNAT entry first"})
    );
    let e = refused(
        &s,
        req::<RemoveInstance>(json!({"vpc": "tenant-a", "name": "nope"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

#[test]
fn remove_instance_refused_while_snat_or_a_probe_names_it() {
    let s = state();
    let n = ok(
        &s,
        req::<AddSnat>(json!({"vpc": "tenant-a", "nat_gateway": "egress", "source": "fn-a2"})),
    );
    let e = refused(
        &n,
        req::<RemoveInstance>(json!({"vpc": "tenant-a", "name": "fn-a2"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);

    let with_probe = format!(
        "{FIXTURE}\n[[probe]]\nfrom = \"tenant-a/fn-a2\"\nto = \"internet/web:80/tcp\"\nexpect = \"allow\"\n"
    );
    let p = ControlState::from_text("p.toml", &with_probe).unwrap();
    let e = refused(
        &p,
        req::<RemoveInstance>(json!({"vpc": "tenant-a", "name": "fn-a2"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    assert!(e.errors[0].error.contains("probe"), "{}", e.errors[0].error);
}

// ---------------------------------------------------------------------------------------------
// EIPs.

#[test]
fn allocate_associate_move_disassociate_release() {
    let s = state();
    let s = ok(
        &s,
        req::<AllocateEip>(json!({"name": "e1", "address": "203.0.113.20"})),
    );
    let s = ok(
        &s,
        req::<AssociateEip>(json!({"eip": "e1", "vpc": "tenant-a", "instance": "fn-a1"})),
    );
    let e1 = |s: &ControlState| {
        s.plan()
            .eips
            .iter()
            .find(|e| e.name == "e1")
            .unwrap()
            .binding
    };
    assert_eq!(
        e1(&s),
        EipBinding::Instance {
            vpc: 0,
            instance: 0
        }
    );
    // Releasing an associated EIP is a dependency violation.
    let e = refused(&s, req::<ReleaseEip>(json!({"name": "e1"})));
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "EIP `e1` is associated with instance `tenant-a/fn-a1`",
               "field": "", "hint": "disassociate it first"})
    );
    // Associating it elsewhere while bound is refused too; after disassociating it moves.
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "e1", "vpc": "tenant-a", "instance": "fn-a3"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    let s = ok(&s, req::<DisassociateEip>(json!({"eip": "e1"})));
    assert_eq!(e1(&s), EipBinding::Unbound);
    let e = refused(&s, req::<DisassociateEip>(json!({"eip": "e1"})));
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    let s = ok(&s, req::<ReleaseEip>(json!({"name": "e1"})));
    assert!(s.plan().eips.iter().all(|e| e.name != "e1"));
}

#[test]
fn eip_refusals() {
    let s = state();
    // Duplicate name, duplicate address, a private address.
    let e = refused(
        &s,
        req::<AllocateEip>(json!({"name": "spare", "address": "203.0.113.30"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let e = refused(
        &s,
        req::<AllocateEip>(json!({"name": "e2", "address": "203.0.113.12"})),
    );
    let j = first_json(&e);
    assert_eq!(
        (j["code"].as_str(), j["field"].as_str()),
        (Some("invalid_input"), Some("address")),
        "{j}"
    );
    assert!(!j["error"].as_str().unwrap().contains("line"), "{j}");
    // An EIP inside the internet hosts' block collides with host addresses: the host's own address.
    let e = refused(
        &s,
        req::<AllocateEip>(json!({"name": "e3", "address": "198.51.100.10"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::InvalidInput);
    // Owned by the NAT gateway: cannot release, cannot associate.
    let e = refused(&s, req::<ReleaseEip>(json!({"name": "nat-a"})));
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "nat-a", "vpc": "tenant-a", "instance": "fn-a1"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    // Instance that already has another EIP.
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "spare", "vpc": "tenant-a", "instance": "fn-a2"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    // Missing things.
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "nope", "vpc": "tenant-a", "instance": "fn-a1"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "EIP `nope` does not exist", "field": "eip",
               "hint": "the EIPs are: nat-a, direct, spare"})
    );
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "spare", "vpc": "tenant-a", "instance": "nope"})),
    );
    assert_eq!(first_json(&e)["field"], "instance");
    let e = refused(&s, req::<ReleaseEip>(json!({"name": "nope"})));
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

// ---------------------------------------------------------------------------------------------
// NAT entries.

#[test]
fn dnat_add_and_remove() {
    let s = state();
    let n = ok(
        &s,
        req::<AddDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a",
            "protocol": "udp", "port": 53, "instance": "fn-a2"}),
        ),
    );
    assert_eq!(vpc(&n).nat_gateways[0].dnat.len(), 2);
    let n = ok(
        &n,
        req::<RemoveDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a",
            "protocol": "tcp", "port": 8080}),
        ),
    );
    assert_eq!(vpc(&n).nat_gateways[0].dnat.len(), 1);
    // fn-a1 is no longer a DNAT target: it can go now.
    ok(
        &n,
        req::<RemoveInstance>(json!({"vpc": "tenant-a", "name": "fn-a1"})),
    );
    let e = refused(
        &n,
        req::<RemoveDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a",
            "protocol": "tcp", "port": 8080}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

#[test]
fn dnat_refusals_are_the_file_errors() {
    let s = state();
    let add = |body: serde_json::Value| refused(&s, req::<AddDnat>(body));
    // tcp without a port.
    let e = add(
        json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "tcp", "instance": "fn-a2"}),
    );
    assert_eq!(e.errors[0].code, ErrorCode::InvalidInput);
    // The same EIP port twice.
    let e = add(
        json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "tcp", "port": 8080, "instance": "fn-a2"}),
    );
    assert_eq!(e.errors[0].code, ErrorCode::InvalidInput);
    assert!(!e.to_string().contains("line"), "{e}");
    // An EIP the gateway does not own; an instance that does not exist.
    let e = add(
        json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "spare", "protocol": "tcp", "port": 81, "instance": "fn-a2"}),
    );
    assert_eq!(first_json(&e)["field"], "eip", "{}", e.to_json());
    let e = add(
        json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "tcp", "port": 81, "instance": "ghost"}),
    );
    assert_eq!(first_json(&e)["field"], "instance", "{}", e.to_json());
    // Port 0.
    let e = add(
        json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "tcp", "port": 0, "instance": "fn-a2"}),
    );
    assert_eq!(first_json(&e)["field"], "port", "{}", e.to_json());
    // Unknown gateway.
    let e = add(
        json!({"vpc": "tenant-a", "nat_gateway": "egres", "eip": "nat-a", "protocol": "tcp", "port": 81, "instance": "fn-a2"}),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "NAT gateway `egres` does not exist", "field": "nat_gateway",
               "hint": "the NAT gateways are: egress"})
    );
}

#[test]
fn snat_add_and_remove() {
    let s = state();
    let n = ok(
        &s,
        req::<AddSnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "source": "10.0.0.0/24", "eips": ["nat-a"]}),
        ),
    );
    assert_eq!(vpc(&n).nat_gateways[0].snat.len(), 2);
    let n = ok(
        &n,
        req::<RemoveSnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "source": "10.0.1.0/24"}),
        ),
    );
    assert_eq!(vpc(&n).nat_gateways[0].snat.len(), 1);
    // Outside the VPC CIDR; a pool EIP the gateway does not own; duplicates; missing entries.
    let e = refused(
        &s,
        req::<AddSnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "source": "10.9.0.0/24"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "source", "{}", e.to_json());
    let e = refused(
        &s,
        req::<AddSnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "source": "10.0.0.0/24", "eips": ["spare"]}),
        ),
    );
    assert!(
        first_json(&e)["field"]
            .as_str()
            .unwrap()
            .starts_with("eips"),
        "{}",
        e.to_json()
    );
    let e = refused(
        &s,
        req::<AddSnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "source": "10.0.1.0/24"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let e = refused(
        &s,
        req::<RemoveSnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "source": "10.0.0.0/24"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Security groups.

#[test]
fn security_group_rules_add_and_remove() {
    let s = state();
    let n = ok(
        &s,
        req::<AddSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "ingress",
            "protocol": "tcp", "ports": "443", "peer": "0.0.0.0/0", "description": "tls"}),
        ),
    );
    assert_eq!(vpc(&n).security_groups[0].ingress.len(), 2);
    let e = refused(
        &n,
        req::<AddSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "ingress",
            "protocol": "tcp", "ports": 443, "peer": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let n = ok(
        &n,
        req::<RemoveSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "ingress",
            "protocol": "tcp", "ports": 80, "peer": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(vpc(&n).security_groups[0].ingress.len(), 1);
    let e = refused(
        &n,
        req::<RemoveSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "egress",
            "protocol": "tcp", "ports": 80, "peer": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

#[test]
fn first_egress_rule_keeps_the_implicit_allow_all() {
    let s = state();
    let n = ok(
        &s,
        req::<AddSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "egress",
            "protocol": "udp", "ports": 53, "peer": "10.0.0.0/16"}),
        ),
    );
    let egress = vpc(&n).security_groups[0].egress.as_ref().unwrap();
    assert_eq!(egress.len(), 2);
    assert_eq!(egress[0].peer.get_ref(), "0.0.0.0/0");
}

#[test]
fn security_group_rule_refusals_name_the_field() {
    let s = state();
    // Ports with ICMP.
    let e = refused(
        &s,
        req::<AddSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "ingress",
            "protocol": "icmp", "ports": 80, "peer": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "ports", "{}", e.to_json());
    // A peer group that does not exist, a bad CIDR peer.
    let e = refused(
        &s,
        req::<AddSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "ingress",
            "protocol": "tcp", "peer": "sg:nope"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "peer", "{}", e.to_json());
    let e = refused(
        &s,
        req::<AddSgRule>(
            json!({"vpc": "tenant-a", "group": "web", "direction": "ingress",
            "protocol": "tcp", "peer": "10.0.0.1/16"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "peer", "{}", e.to_json());
    let e = refused(
        &s,
        req::<AddSgRule>(
            json!({"vpc": "tenant-a", "group": "nope", "direction": "ingress",
            "protocol": "tcp", "peer": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "security group `nope` does not exist", "field": "group",
               "hint": "the security groups are: web, db"})
    );
}

#[test]
fn whole_security_groups() {
    let s = state();
    let n = ok(
        &s,
        req::<AddSecurityGroup>(json!({"vpc": "tenant-a", "name": "cache",
            "ingress": [{"protocol": "tcp", "ports": 6379, "peer": "sg:web"}], "egress": []})),
    );
    assert_eq!(vpc(&n).security_groups.len(), 3);
    let n = ok(
        &n,
        req::<RemoveSecurityGroup>(json!({"vpc": "tenant-a", "name": "cache"})),
    );
    assert_eq!(vpc(&n).security_groups.len(), 2);
    // In use by an instance; named as a peer by another group.
    let e = refused(
        &s,
        req::<RemoveSecurityGroup>(json!({"vpc": "tenant-a", "name": "web"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation", "error": "security group `web` is used by instance `fn-a1`",
               "field": "", "hint": "remove the group from the instance first"})
    );
    let s2 = ok(
        &s,
        req::<RemoveSgRule>(
            json!({"vpc": "tenant-a", "group": "db", "direction": "ingress",
        "protocol": "tcp", "ports": 5432, "peer": "sg:web"}),
        ),
    );
    let s2 = ok(
        &s2,
        req::<RemoveSecurityGroup>(json!({"vpc": "tenant-a", "name": "db"})),
    );
    let s3 = ok(
        &s,
        req::<RemoveSecurityGroup>(json!({"vpc": "tenant-a", "name": "db"})),
    );
    assert_eq!(
        vpc(&s2).security_groups.len(),
        vpc(&s3).security_groups.len()
    );
    let e = refused(
        &ok(
            &s,
            req::<AddSecurityGroup>(json!({"vpc": "tenant-a", "name": "x",
            "ingress": [{"protocol": "tcp", "peer": "sg:db"}]})),
        ),
        req::<RemoveSecurityGroup>(json!({"vpc": "tenant-a", "name": "db"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    // Duplicate, bad rule inside (field names the rule in the request).
    let e = refused(
        &s,
        req::<AddSecurityGroup>(json!({"vpc": "tenant-a", "name": "db"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let e = refused(
        &s,
        req::<AddSecurityGroup>(json!({"vpc": "tenant-a", "name": "y",
            "ingress": [{"protocol": "udp", "icmp_type": 3, "peer": "0.0.0.0/0"}]})),
    );
    assert_eq!(
        first_json(&e)["field"],
        "ingress[0].icmp_type",
        "{}",
        e.to_json()
    );
}

// ---------------------------------------------------------------------------------------------
// Network ACLs and routes.

#[test]
fn network_acl_rules() {
    let s = state();
    let n = ok(
        &s,
        req::<AddAclRule>(
            json!({"vpc": "tenant-a", "network_acl": "fn-acl", "direction": "inbound",
            "rule": 50, "action": "deny", "protocol": "tcp", "ports": "22", "cidr": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(vpc(&n).network_acls[0].inbound.len(), 2);
    let e = refused(
        &n,
        req::<AddAclRule>(
            json!({"vpc": "tenant-a", "network_acl": "fn-acl", "direction": "inbound",
            "rule": 50, "action": "allow", "protocol": "all", "cidr": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "already_exists", "error": "inbound rule number `50` already exists", "field": "rule",
               "hint": "choose a free rule number, or remove the rule first"})
    );
    let n = ok(
        &n,
        req::<RemoveAclRule>(
            json!({"vpc": "tenant-a", "network_acl": "fn-acl", "direction": "inbound", "rule": 50}),
        ),
    );
    assert_eq!(vpc(&n).network_acls[0].inbound.len(), 1);
    let e = refused(
        &n,
        req::<RemoveAclRule>(
            json!({"vpc": "tenant-a", "network_acl": "fn-acl", "direction": "outbound", "rule": 7}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    let e = refused(
        &n,
        req::<RemoveAclRule>(
            json!({"vpc": "tenant-a", "network_acl": "nope", "direction": "outbound", "rule": 7}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "network_acl");
    // Ports with protocol all.
    let e = refused(
        &s,
        req::<AddAclRule>(
            json!({"vpc": "tenant-a", "network_acl": "fn-acl", "direction": "outbound",
            "rule": 60, "action": "deny", "protocol": "all", "ports": 22, "cidr": "0.0.0.0/0"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "ports", "{}", e.to_json());
}

#[test]
fn routes() {
    let s = state();
    // `main` is implicit in the fixture: the first route creates it.
    let n = ok(
        &s,
        req::<AddRoute>(
            json!({"vpc": "tenant-a", "route_table": "main", "destination": "192.0.2.0/24", "target": "blackhole"}),
        ),
    );
    assert_eq!(vpc(&n).route_tables[0].name, "main");
    assert_eq!(vpc(&n).route_tables[0].routes.len(), 2);
    let e = refused(
        &n,
        req::<AddRoute>(
            json!({"vpc": "tenant-a", "route_table": "main", "destination": "192.0.2.0/24", "target": "internet"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let n = ok(
        &n,
        req::<RemoveRoute>(
            json!({"vpc": "tenant-a", "route_table": "main", "destination": "192.0.2.0/24"}),
        ),
    );
    assert_eq!(vpc(&n).route_tables[0].routes.len(), 1);
    // A NAT gateway that does not exist; `local` outside the VPC; the VPC CIDR itself.
    let e = refused(
        &s,
        req::<AddRoute>(
            json!({"vpc": "tenant-a", "route_table": "private", "destination": "192.0.2.0/24", "target": "nat:nope"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "target", "{}", e.to_json());
    let e = refused(
        &s,
        req::<AddRoute>(
            json!({"vpc": "tenant-a", "route_table": "private", "destination": "192.0.2.0/24", "target": "local"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::InvalidInput);
    let e = refused(
        &s,
        req::<AddRoute>(
            json!({"vpc": "tenant-a", "route_table": "private", "destination": "10.0.0.0/16", "target": "blackhole"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::InvalidInput);
    let e = refused(
        &s,
        req::<RemoveRoute>(
            json!({"vpc": "tenant-a", "route_table": "private", "destination": "10.0.0.0/16"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    let e = refused(
        &s,
        req::<AddRoute>(
            json!({"vpc": "tenant-a", "route_table": "nope", "destination": "192.0.2.0/24", "target": "blackhole"}),
        ),
    );
    assert_eq!(first_json(&e)["field"], "route_table");
}

#[test]
fn every_plan_after_changes_exports_and_reloads() {
    let s = state();
    let s = ok(
        &s,
        req::<AddInstance>(json!({"vpc": "tenant-a", "name": "fn-a3", "subnet": "functions"})),
    );
    let s = ok(
        &s,
        req::<AllocateEip>(json!({"name": "e1", "address": "203.0.113.20"})),
    );
    let s = ok(
        &s,
        req::<AssociateEip>(json!({"eip": "e1", "vpc": "tenant-a", "instance": "fn-a3"})),
    );
    let s = ok(
        &s,
        req::<AddDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "udp", "port": 9000, "instance": "fn-a3"}),
        ),
    );
    let again = ControlState::from_text("export.toml", s.export()).unwrap();
    assert_eq!(again.plan(), s.plan());
    assert_eq!(again.model(), s.model());
}

#[test]
fn eips_associate_with_nat_gateways_too() {
    let s = state();
    let s = ok(
        &s,
        req::<AssociateEip>(json!({"eip": "spare", "vpc": "tenant-a", "nat_gateway": "egress"})),
    );
    let spare = |s: &ControlState| {
        s.plan()
            .eips
            .iter()
            .find(|e| e.name == "spare")
            .unwrap()
            .binding
    };
    assert_eq!(spare(&s), EipBinding::NatGateway { vpc: 0, gateway: 0 });
    let s = ok(
        &s,
        req::<AddDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "spare",
            "protocol": "tcp", "port": 443, "instance": "fn-a2"}),
        ),
    );
    // In use by the DNAT entry: neither disassociated nor released nor associated elsewhere.
    let e = refused(&s, req::<DisassociateEip>(json!({"eip": "spare"})));
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "EIP `spare` is used by a DNAT entry of NAT gateway `tenant-a/egress`",
               "field": "", "hint": "remove the DNAT entries for this EIP first"})
    );
    let e = refused(&s, req::<ReleaseEip>(json!({"name": "spare"})));
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "spare", "vpc": "tenant-a", "instance": "fn-a1"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    let s = ok(
        &s,
        req::<RemoveDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "spare",
            "protocol": "tcp", "port": 443}),
        ),
    );
    let s = ok(&s, req::<DisassociateEip>(json!({"eip": "spare"})));
    assert_eq!(spare(&s), EipBinding::Unbound);
    // The gateway's last EIP cannot go while it has SNAT entries: the file rule says so.
    let e = refused(&s, req::<DisassociateEip>(json!({"eip": "nat-a"})));
    assert_eq!(
        e.errors[0].code,
        ErrorCode::DependencyViolation,
        "{}",
        e.to_json()
    );
}

#[test]
fn associate_names_exactly_one_target() {
    let s = state();
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "spare", "vpc": "tenant-a"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "invalid_input", "error": "name exactly one of `instance` and `nat_gateway`",
               "field": "instance", "hint": "an EIP is bound to one instance (1:1) or to one NAT gateway"})
    );
    let e = refused(
        &s,
        req::<AssociateEip>(
            json!({"eip": "spare", "vpc": "tenant-a", "instance": "fn-a1", "nat_gateway": "egress"}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::InvalidInput);
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "spare", "vpc": "tenant-a", "nat_gateway": "nope"})),
    );
    assert_eq!(first_json(&e)["field"], "nat_gateway");
}

// ---------------------------------------------------------------------------------------------
// VPCs.

#[test]
fn add_and_remove_a_vpc() {
    let s = state();
    // VPCs may reuse each other's CIDRs.
    let n = ok(
        &s,
        req::<AddVpc>(json!({"name": "tenant-b", "cidr": "10.0.0.0/16"})),
    );
    assert_eq!(n.plan().vpcs.len(), 2);
    assert_eq!(n.plan().vpcs[1].name, "tenant-b");
    // It starts with the implicit main table only; a subnet and an instance fit in at once.
    assert_eq!(n.plan().vpcs[1].route_tables.len(), 1);
    let n = ok(
        &n,
        req::<AddSubnet>(json!({"vpc": "tenant-b", "name": "fns", "cidr": "10.0.1.0/24"})),
    );
    let n = ok(
        &n,
        req::<AddInstance>(json!({"vpc": "tenant-b", "name": "fn-b1", "subnet": "fns"})),
    );
    assert_eq!(
        n.plan().vpcs[1].instances[0].ip,
        "10.0.1.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    // Tenant A's addresses did not move.
    assert_eq!(instance_ip(&n, "fn-a1"), instance_ip(&s, "fn-a1"));
    let e = refused(&n, req::<RemoveVpc>(json!({"name": "tenant-b"})));
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "VPC `tenant-b` still has 1 subnet, 1 instance",
               "field": "",
               "hint": "remove them first: instances and NAT gateways, then subnets, route tables, security groups and network ACLs"})
    );
    let n = ok(
        &n,
        req::<RemoveInstance>(json!({"vpc": "tenant-b", "name": "fn-b1"})),
    );
    let n = ok(
        &n,
        req::<RemoveSubnet>(json!({"vpc": "tenant-b", "name": "fns"})),
    );
    let n = ok(&n, req::<RemoveVpc>(json!({"name": "tenant-b"})));
    assert_eq!(n.plan(), s.plan());
}

#[test]
fn add_vpc_refusals() {
    let s = state();
    let e = refused(
        &s,
        req::<AddVpc>(json!({"name": "tenant-a", "cidr": "10.9.0.0/16"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "already_exists", "error": "VPC `tenant-a` already exists", "field": "name",
               "hint": "choose another name, or remove the VPC first"})
    );
    // A block smaller than /28: the file validator's message, on `cidr`.
    let e = refused(
        &s,
        req::<AddVpc>(json!({"name": "tenant-b", "cidr": "10.0.0.0/30"})),
    );
    same_as_file(
        &e,
        "[[vpc]]\nname = \"tenant-b\"\ncidr = \"10.0.0.0/30\"\n",
        "cidr",
    );
    // A reserved name, and a name that is not one.
    let e = refused(
        &s,
        req::<AddVpc>(json!({"name": "internet", "cidr": "10.0.0.0/16"})),
    );
    same_as_file(
        &e,
        "[[vpc]]\nname = \"internet\"\ncidr = \"10.0.0.0/16\"\n",
        "name",
    );
    let e = refused(
        &s,
        req::<AddVpc>(json!({"name": "a b", "cidr": "10.0.0.0/16"})),
    );
    assert_eq!(first_json(&e)["field"], "name");
    // Host bits: refused while decoding, with the CIDR parser's words.
    let e = decode::<AddVpc>(br#"{"name": "b", "cidr": "10.0.0.5/16"}"#).unwrap_err();
    assert_eq!(first_json(&e)["error"], "`10.0.0.5/16` has host bits set");
}

#[test]
fn remove_vpc_refused_while_it_has_anything_but_its_main_table() {
    let s = state();
    let e = refused(&s, req::<RemoveVpc>(json!({"name": "tenant-a"})));
    assert_eq!(
        e.errors[0].error,
        "VPC `tenant-a` still has 2 subnets, 2 instances, 1 NAT gateway, 1 route table, 2 security groups, 1 network ACL"
    );
    assert_eq!(e.http_status(), 409);
    let e = refused(&s, req::<RemoveVpc>(json!({"name": "nope"})));
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "VPC `nope` does not exist", "field": "name",
               "hint": "the VPCs are: tenant-a"})
    );
    // A main table with routes goes with the VPC (as in AWS); any other part keeps it.
    let n = ok(
        &s,
        req::<AddVpc>(json!({"name": "tenant-b", "cidr": "10.8.0.0/16"})),
    );
    let with_main = ok(
        &n,
        req::<AddRoute>(
            json!({"vpc": "tenant-b", "route_table": "main", "destination": "192.0.2.0/24", "target": "blackhole"}),
        ),
    );
    let gone = ok(&with_main, req::<RemoveVpc>(json!({"name": "tenant-b"})));
    assert_eq!(gone.plan(), s.plan());
    for (c, what) in [
        (
            req::<AddRouteTable>(json!({"vpc": "tenant-b", "name": "rt"})),
            "1 route table",
        ),
        (
            req::<AddSecurityGroup>(json!({"vpc": "tenant-b", "name": "sg"})),
            "1 security group",
        ),
        (
            req::<AddNetworkAcl>(json!({"vpc": "tenant-b", "name": "acl"})),
            "1 network ACL",
        ),
    ] {
        let m = ok(&n, c);
        let e = refused(&m, req::<RemoveVpc>(json!({"name": "tenant-b"})));
        assert_eq!(
            e.errors[0].error,
            format!("VPC `tenant-b` still has {what}")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Subnets.

#[test]
fn add_subnet_with_a_route_table_and_a_network_acl() {
    let s = state();
    let n = ok(
        &s,
        req::<AddSubnet>(
            json!({"vpc": "tenant-a", "name": "data", "cidr": "10.0.2.0/24",
                   "route_table": "private", "network_acl": "fn-acl"}),
        ),
    );
    let data = vpc(&n).subnets.iter().find(|x| x.name == "data").unwrap();
    assert_eq!(vpc(&n).route_tables[data.route_table].name, "private");
    assert_eq!(data.network_acl, Some(0));
    assert_eq!(
        data.gateway,
        "10.0.2.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    let n = ok(
        &n,
        req::<AddInstance>(json!({"vpc": "tenant-a", "name": "db-1", "subnet": "data"})),
    );
    assert_eq!(instance_ip(&n, "db-1"), Some("10.0.2.2".parse().unwrap()));
    // `main` and `default` are the VPC's main table and default ACL: nothing is written.
    let m = ok(
        &s,
        req::<AddSubnet>(
            json!({"vpc": "tenant-a", "name": "edge", "cidr": "10.0.3.0/24",
                   "route_table": "main", "network_acl": "default"}),
        ),
    );
    let edge = vpc(&m).subnets.iter().find(|x| x.name == "edge").unwrap();
    assert_eq!((edge.route_table, edge.network_acl), (0, None));
    let model = &m.model().vpc[0].subnet[2];
    assert_eq!((&model.route_table, &model.network_acl), (&None, &None));
}

#[test]
fn add_subnet_refusals() {
    let s = state();
    let e = refused(
        &s,
        req::<AddSubnet>(json!({"vpc": "tenant-a", "name": "public", "cidr": "10.0.9.0/24"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "already_exists", "error": "subnet `public` already exists", "field": "name",
               "hint": "choose another name, or remove the subnet first"})
    );
    let e = refused(
        &s,
        req::<AddSubnet>(json!({"vpc": "nope", "name": "x", "cidr": "10.0.9.0/24"})),
    );
    assert_eq!(
        (e.errors[0].code, e.errors[0].field.as_str()),
        (ErrorCode::NotFound, "vpc")
    );
    let e = refused(
        &s,
        req::<AddSubnet>(
            json!({"vpc": "tenant-a", "name": "x", "cidr": "10.0.9.0/24", "route_table": "privat"}),
        ),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "route table `privat` does not exist",
               "field": "route_table", "hint": "the route tables are: private"})
    );
    let e = refused(
        &s,
        req::<AddSubnet>(
            json!({"vpc": "tenant-a", "name": "x", "cidr": "10.0.9.0/24", "network_acl": "nope"}),
        ),
    );
    assert_eq!(
        (e.errors[0].code, e.errors[0].field.as_str()),
        (ErrorCode::NotFound, "network_acl")
    );
    // Overlapping another subnet, and outside the VPC: the file validator's messages.
    let e = refused(
        &s,
        req::<AddSubnet>(json!({"vpc": "tenant-a", "name": "x", "cidr": "10.0.1.128/25"})),
    );
    same_as_file(
        &e,
        "[[vpc.subnet]]\nname = \"x\"\ncidr = \"10.0.1.128/25\"\n",
        "cidr",
    );
    assert!(
        e.errors[0].error.contains("overlaps subnet functions"),
        "{e}"
    );
    let e = refused(
        &s,
        req::<AddSubnet>(json!({"vpc": "tenant-a", "name": "x", "cidr": "10.1.0.0/24"})),
    );
    same_as_file(
        &e,
        "[[vpc.subnet]]\nname = \"x\"\ncidr = \"10.1.0.0/24\"\n",
        "cidr",
    );
    assert_eq!(
        e.errors[0].error,
        "subnet 10.1.0.0/24 is outside its VPC's CIDR 10.0.0.0/16"
    );
    // Too small to hold an address.
    let e = refused(
        &s,
        req::<AddSubnet>(json!({"vpc": "tenant-a", "name": "x", "cidr": "10.0.9.0/31"})),
    );
    same_as_file(
        &e,
        "[[vpc.subnet]]\nname = \"x\"\ncidr = \"10.0.9.0/31\"\n",
        "cidr",
    );
}

#[test]
fn remove_subnet_refused_while_instances_or_a_nat_gateway_are_in_it() {
    let s = state();
    let e = refused(
        &s,
        req::<RemoveSubnet>(json!({"vpc": "tenant-a", "name": "functions"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "subnet `functions` still has instance `fn-a1`, instance `fn-a2`",
               "field": "", "hint": "remove its instances and NAT gateways first"})
    );
    let e = refused(
        &s,
        req::<RemoveSubnet>(json!({"vpc": "tenant-a", "name": "public"})),
    );
    assert_eq!(
        e.errors[0].error,
        "subnet `public` still has NAT gateway `egress`"
    );
    let e = refused(
        &s,
        req::<RemoveSubnet>(json!({"vpc": "tenant-a", "name": "nope"})),
    );
    assert_eq!(
        (e.errors[0].code, e.errors[0].field.as_str()),
        (ErrorCode::NotFound, "name")
    );
    let n = ok(
        &s,
        req::<AddSubnet>(json!({"vpc": "tenant-a", "name": "data", "cidr": "10.0.2.0/24"})),
    );
    let n = ok(
        &n,
        req::<RemoveSubnet>(json!({"vpc": "tenant-a", "name": "data"})),
    );
    assert_eq!(n.plan(), s.plan());
}

// ---------------------------------------------------------------------------------------------
// Route tables.

#[test]
fn route_table_lifecycle_and_associations() {
    let s = state();
    let n = ok(
        &s,
        req::<AddRouteTable>(json!({"vpc": "tenant-a", "name": "edge",
                   "routes": [{"destination": "0.0.0.0/0", "target": "internet"}]})),
    );
    let edge = vpc(&n)
        .route_tables
        .iter()
        .position(|t| t.name == "edge")
        .unwrap();
    // The implicit local route plus the one given.
    assert_eq!(vpc(&n).route_tables[edge].routes.len(), 2);
    let n = ok(
        &n,
        req::<AssociateRouteTable>(
            json!({"vpc": "tenant-a", "subnet": "public", "route_table": "edge"}),
        ),
    );
    assert_eq!(vpc(&n).subnets[0].route_table, edge);
    let e = refused(
        &n,
        req::<RemoveRouteTable>(json!({"vpc": "tenant-a", "name": "edge"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "route table `edge` is associated with subnet `public`", "field": "",
               "hint": "associate those subnets with another table (or `main`) first"})
    );
    // `main` returns the subnet to the main table.
    let n = ok(
        &n,
        req::<AssociateRouteTable>(
            json!({"vpc": "tenant-a", "subnet": "public", "route_table": "main"}),
        ),
    );
    assert_eq!(vpc(&n).subnets[0].route_table, 0);
    assert!(n.model().vpc[0].subnet[0].route_table.is_none());
    let n = ok(
        &n,
        req::<RemoveRouteTable>(json!({"vpc": "tenant-a", "name": "edge"})),
    );
    assert_eq!(n.plan(), s.plan());
    // The table the fixture's functions subnet uses.
    let e = refused(
        &s,
        req::<RemoveRouteTable>(json!({"vpc": "tenant-a", "name": "private"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
}

#[test]
fn the_main_route_table() {
    let s = state();
    // Implicit in the fixture: creating it makes it explicit, with the routes given.
    let n = ok(
        &s,
        req::<AddRouteTable>(json!({"vpc": "tenant-a", "name": "main",
                   "routes": [{"destination": "192.0.2.0/24", "target": "blackhole"}]})),
    );
    assert_eq!(vpc(&n).route_tables[0].name, "main");
    assert_eq!(vpc(&n).route_tables[0].routes.len(), 2);
    let e = refused(
        &n,
        req::<AddRouteTable>(json!({"vpc": "tenant-a", "name": "main"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    // Still the main table of `public` (which names no table): not removable.
    let e = refused(
        &n,
        req::<RemoveRouteTable>(json!({"vpc": "tenant-a", "name": "main"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "route table `main` is the main route table of subnet `public`", "field": "",
               "hint": "associate those subnets with another table first (associate_route_table), or change the main table's routes instead"})
    );
    // Once no subnet uses it, it may go: the implicit local-only main table is back.
    let n = ok(
        &n,
        req::<AssociateRouteTable>(
            json!({"vpc": "tenant-a", "subnet": "public", "route_table": "private"}),
        ),
    );
    let n = ok(
        &n,
        req::<RemoveRouteTable>(json!({"vpc": "tenant-a", "name": "main"})),
    );
    assert_eq!(vpc(&n).route_tables[0].name, "main");
    assert_eq!(vpc(&n).route_tables[0].routes.len(), 1);
}

#[test]
fn route_table_refusals() {
    let s = state();
    let e = refused(
        &s,
        req::<AddRouteTable>(json!({"vpc": "tenant-a", "name": "private"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "already_exists", "error": "route table `private` already exists",
               "field": "name",
               "hint": "add routes to the existing table (add_route), or choose another name"})
    );
    // A route for the VPC CIDR repeats the implicit local route; an unknown NAT gateway: the
    // file validator's messages, on the request's fields.
    let e = refused(
        &s,
        req::<AddRouteTable>(json!({"vpc": "tenant-a", "name": "rt",
                   "routes": [{"destination": "10.0.0.0/16", "target": "blackhole"}]})),
    );
    same_as_file(
        &e,
        "[[vpc.route_table]]\nname = \"rt\"\nroutes = [{ destination = \"10.0.0.0/16\", target = \"blackhole\" }]\n",
        "routes[0].destination",
    );
    let e = refused(
        &s,
        req::<AddRouteTable>(json!({"vpc": "tenant-a", "name": "rt",
                   "routes": [{"destination": "0.0.0.0/0", "target": "nat:egres"}]})),
    );
    same_as_file(
        &e,
        "[[vpc.route_table]]\nname = \"rt\"\nroutes = [{ destination = \"0.0.0.0/0\", target = \"nat:egres\" }]\n",
        "routes[0].target",
    );
    let e = decode::<AddRouteTable>(
        br#"{"vpc": "tenant-a", "name": "rt", "routes": [{"destination": "0.0.0.0/0", "target": "nat:"}]}"#,
    )
    .unwrap_err();
    assert_eq!(first_json(&e)["field"], "routes");
    // Names that resolve to nothing.
    for (body, field) in [
        (
            json!({"vpc": "tenant-a", "subnet": "nope", "route_table": "private"}),
            "subnet",
        ),
        (
            json!({"vpc": "tenant-a", "subnet": "public", "route_table": "nope"}),
            "route_table",
        ),
        (
            json!({"vpc": "nope", "subnet": "public", "route_table": "private"}),
            "vpc",
        ),
    ] {
        let e = refused(&s, req::<AssociateRouteTable>(body));
        assert_eq!(
            (e.errors[0].code, e.errors[0].field.as_str()),
            (ErrorCode::NotFound, field)
        );
    }
    let e = refused(
        &s,
        req::<RemoveRouteTable>(json!({"vpc": "tenant-a", "name": "nope"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

// ---------------------------------------------------------------------------------------------
// NAT gateways.

#[test]
fn add_nat_gateway_with_entries_and_settings() {
    let s = state();
    let n = ok(
        &s,
        req::<AddNatGateway>(json!({
            "vpc": "tenant-a", "name": "egress-2", "subnet": "public", "ip": "10.0.0.50",
            "eips": ["spare"],
            "snat": [{"source": "10.0.1.0/24"}],
            "dnat": [{"eip": "spare", "protocol": "udp", "port": 53, "instance": "fn-a1"}],
            "profile": "aws", "mapping": "endpoint-independent", "port_range": "1024-65535",
            "ports_per_instance": 64, "on_refuse": "icmp", "timeouts": {"udp": 30}
        })),
    );
    let gw = &vpc(&n).nat_gateways[1];
    assert_eq!(gw.name, "egress-2");
    assert_eq!(gw.ip, "10.0.0.50".parse::<std::net::Ipv4Addr>().unwrap());
    assert_eq!((gw.snat.len(), gw.dnat.len()), (1, 1));
    assert_eq!(gw.config.port_range, (1024, 65535));
    assert_eq!(gw.config.ports_per_owner, Some(64));
    assert_eq!(gw.config.timeouts.udp, std::time::Duration::from_secs(30));
    let spare = n.plan().eips.iter().find(|e| e.name == "spare").unwrap();
    assert_eq!(spare.binding, EipBinding::NatGateway { vpc: 0, gateway: 1 });
    // The first gateway's address did not move.
    assert_eq!(vpc(&n).nat_gateways[0].ip, vpc(&s).nat_gateways[0].ip);
    // Without an address and EIPs: the first free address of the subnet (10.0.0.2 is the VPC's
    // resolver, 10.0.0.3 the first gateway's).
    let m = ok(
        &s,
        req::<AddNatGateway>(json!({"vpc": "tenant-a", "name": "bare", "subnet": "public"})),
    );
    assert_eq!(
        vpc(&m).nat_gateways[1].ip,
        "10.0.0.4".parse::<std::net::Ipv4Addr>().unwrap()
    );
}

#[test]
fn add_nat_gateway_refusals() {
    let s = state();
    let e = refused(
        &s,
        req::<AddNatGateway>(json!({"vpc": "tenant-a", "name": "egress", "subnet": "public"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "already_exists", "error": "NAT gateway `egress` already exists",
               "field": "name", "hint": "choose another name, or remove the NAT gateway first"})
    );
    let e = refused(
        &s,
        req::<AddNatGateway>(json!({"vpc": "nope", "name": "g", "subnet": "public"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    // EIPs: unknown, bound 1:1 to an instance, owned by another gateway.
    let e = refused(
        &s,
        req::<AddNatGateway>(
            json!({"vpc": "tenant-a", "name": "g", "subnet": "public", "eips": ["spare", "nope"]}),
        ),
    );
    assert_eq!(
        (e.errors[0].code, e.errors[0].field.as_str()),
        (ErrorCode::NotFound, "eips[1]")
    );
    let e = refused(
        &s,
        req::<AddNatGateway>(
            json!({"vpc": "tenant-a", "name": "g", "subnet": "public", "eips": ["direct"]}),
        ),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "EIP `direct` is already associated with instance `tenant-a/fn-a2`",
               "field": "", "hint": "disassociate it first"})
    );
    let e = refused(
        &s,
        req::<AddNatGateway>(
            json!({"vpc": "tenant-a", "name": "g", "subnet": "public", "eips": ["nat-a"]}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    // The file validator's messages: an unknown subnet, an address outside it, a zero timeout,
    // a DNAT entry on an EIP the gateway does not own.
    let e = refused(
        &s,
        req::<AddNatGateway>(json!({"vpc": "tenant-a", "name": "g", "subnet": "publik"})),
    );
    same_as_file(
        &e,
        "[[vpc.nat_gateway]]\nname = \"g\"\nsubnet = \"publik\"\n",
        "subnet",
    );
    let e = refused(
        &s,
        req::<AddNatGateway>(
            json!({"vpc": "tenant-a", "name": "g", "subnet": "public", "ip": "10.0.1.50"}),
        ),
    );
    same_as_file(
        &e,
        "[[vpc.nat_gateway]]\nname = \"g\"\nsubnet = \"public\"\nip = \"10.0.1.50\"\n",
        "ip",
    );
    let e = refused(
        &s,
        req::<AddNatGateway>(
            json!({"vpc": "tenant-a", "name": "g", "subnet": "public", "timeouts": {"udp": 0}}),
        ),
    );
    same_as_file(
        &e,
        "[[vpc.nat_gateway]]\nname = \"g\"\nsubnet = \"public\"\ntimeouts = { udp = 0 }\n",
        "timeouts.udp",
    );
    let e = refused(
        &s,
        req::<AddNatGateway>(json!({"vpc": "tenant-a", "name": "g", "subnet": "public",
            "dnat": [{"eip": "spare", "protocol": "tcp", "port": 80, "instance": "fn-a1"}]})),
    );
    same_as_file(
        &e,
        "[[vpc.nat_gateway]]\nname = \"g\"\nsubnet = \"public\"\ndnat = [{ eip = \"spare\", protocol = \"tcp\", port = 80, instance = \"fn-a1\" }]\n",
        "dnat[0].eip",
    );
    // Unknown keys in nested entries are refused while decoding.
    let e = decode::<AddNatGateway>(
        br#"{"vpc": "tenant-a", "name": "g", "subnet": "public", "timeouts": {"udp": 1, "tcp": 2}}"#,
    )
    .unwrap_err();
    assert_eq!(first_json(&e)["error"], "unknown key `tcp`");
}

#[test]
fn remove_nat_gateway_like_aws() {
    let s = state();
    // DNAT entries publish instances: removed one by one first.
    let e = refused(
        &s,
        req::<RemoveNatGateway>(json!({"vpc": "tenant-a", "name": "egress"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "NAT gateway `egress` has 1 DNAT entry (EIP `nat-a`)", "field": "",
               "hint": "remove its DNAT entries first (remove_dnat): they publish instances"})
    );
    let n = ok(
        &s,
        req::<RemoveDnat>(
            json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "tcp", "port": 8080}),
        ),
    );
    // A route still targets it: AWS would leave a blackhole route; vpcd refuses.
    let e = refused(
        &n,
        req::<RemoveNatGateway>(json!({"vpc": "tenant-a", "name": "egress"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "NAT gateway `egress` is the target of route 0.0.0.0/0 in table `private`",
               "field": "",
               "hint": "remove those routes or point them elsewhere first (remove_route, then add_route with another target than `nat:egress`)"})
    );
    let n = ok(
        &n,
        req::<RemoveRoute>(
            json!({"vpc": "tenant-a", "route_table": "private", "destination": "0.0.0.0/0"}),
        ),
    );
    // Its SNAT entry goes with it; its EIP is disassociated and stays allocated.
    let n = ok(
        &n,
        req::<RemoveNatGateway>(json!({"vpc": "tenant-a", "name": "egress"})),
    );
    assert!(vpc(&n).nat_gateways.is_empty());
    let nat_a = n.plan().eips.iter().find(|e| e.name == "nat-a").unwrap();
    assert_eq!(nat_a.binding, EipBinding::Unbound);
    // ... so it can be released now.
    ok(&n, req::<ReleaseEip>(json!({"name": "nat-a"})));
    let e = refused(
        &s,
        req::<RemoveNatGateway>(json!({"vpc": "tenant-a", "name": "nope"})),
    );
    assert_eq!(
        (e.errors[0].code, e.errors[0].field.as_str()),
        (ErrorCode::NotFound, "name")
    );
}

// ---------------------------------------------------------------------------------------------
// Network ACLs.

#[test]
fn network_acl_lifecycle_and_associations() {
    let s = state();
    let n = ok(
        &s,
        req::<AddNetworkAcl>(json!({"vpc": "tenant-a", "name": "pub-acl",
            "inbound": [{"rule": 100, "action": "allow", "protocol": "tcp", "ports": "80", "cidr": "0.0.0.0/0"}],
            "outbound": [{"rule": 100, "action": "allow", "protocol": "all", "cidr": "0.0.0.0/0"}]})),
    );
    assert_eq!(vpc(&n).network_acls[1].inbound.len(), 1);
    let n = ok(
        &n,
        req::<AssociateNetworkAcl>(
            json!({"vpc": "tenant-a", "subnet": "public", "network_acl": "pub-acl"}),
        ),
    );
    assert_eq!(vpc(&n).subnets[0].network_acl, Some(1));
    let e = refused(
        &n,
        req::<RemoveNetworkAcl>(json!({"vpc": "tenant-a", "name": "pub-acl"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "network ACL `pub-acl` is associated with subnet `public`", "field": "",
               "hint": "associate those subnets with another network ACL (or the default) first"})
    );
    // Absent, or `default`: back to the default (allow-all) ACL.
    let m = ok(
        &n,
        req::<AssociateNetworkAcl>(json!({"vpc": "tenant-a", "subnet": "public"})),
    );
    assert_eq!(vpc(&m).subnets[0].network_acl, None);
    let m = ok(
        &n,
        req::<AssociateNetworkAcl>(
            json!({"vpc": "tenant-a", "subnet": "public", "network_acl": "default"}),
        ),
    );
    assert_eq!(vpc(&m).subnets[0].network_acl, None);
    let m = ok(
        &m,
        req::<RemoveNetworkAcl>(json!({"vpc": "tenant-a", "name": "pub-acl"})),
    );
    assert_eq!(m.plan(), s.plan());
    // An ACL the VPC calls `default` is the one `default` names.
    let d = ok(
        &s,
        req::<AddNetworkAcl>(json!({"vpc": "tenant-a", "name": "default"})),
    );
    let d = ok(
        &d,
        req::<AssociateNetworkAcl>(
            json!({"vpc": "tenant-a", "subnet": "public", "network_acl": "default"}),
        ),
    );
    assert_eq!(vpc(&d).subnets[0].network_acl, Some(1));
}

#[test]
fn network_acl_refusals() {
    let s = state();
    let e = refused(
        &s,
        req::<AddNetworkAcl>(json!({"vpc": "tenant-a", "name": "fn-acl"})),
    );
    assert_eq!(
        (e.errors[0].code, e.errors[0].field.as_str()),
        (ErrorCode::AlreadyExists, "name")
    );
    // Rule numbers and ports: the file validator's messages, on the request's fields.
    let e = refused(
        &s,
        req::<AddNetworkAcl>(json!({"vpc": "tenant-a", "name": "x",
            "inbound": [{"rule": 40000, "action": "deny", "protocol": "tcp", "cidr": "0.0.0.0/0"}]})),
    );
    same_as_file(
        &e,
        "[[vpc.network_acl]]\nname = \"x\"\ninbound = [{ rule = 40000, action = \"deny\", protocol = \"tcp\", cidr = \"0.0.0.0/0\" }]\n",
        "inbound[0].rule",
    );
    let e = refused(
        &s,
        req::<AddNetworkAcl>(json!({"vpc": "tenant-a", "name": "x",
            "outbound": [{"rule": 1, "action": "deny", "protocol": "all", "ports": 22, "cidr": "0.0.0.0/0"}]})),
    );
    same_as_file(
        &e,
        "[[vpc.network_acl]]\nname = \"x\"\noutbound = [{ rule = 1, action = \"deny\", protocol = \"all\", ports = 22, cidr = \"0.0.0.0/0\" }]\n",
        "outbound[0].ports",
    );
    let e = refused(
        &s,
        req::<RemoveNetworkAcl>(json!({"vpc": "tenant-a", "name": "fn-acl"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    let e = refused(
        &s,
        req::<RemoveNetworkAcl>(json!({"vpc": "tenant-a", "name": "nope"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    for (body, field) in [
        (
            json!({"vpc": "tenant-a", "subnet": "nope", "network_acl": "fn-acl"}),
            "subnet",
        ),
        (
            json!({"vpc": "tenant-a", "subnet": "public", "network_acl": "nope"}),
            "network_acl",
        ),
    ] {
        let e = refused(&s, req::<AssociateNetworkAcl>(body));
        assert_eq!(
            (e.errors[0].code, e.errors[0].field.as_str()),
            (ErrorCode::NotFound, field)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Moving an EIP (`allow_reassociation`).

fn binding_of(s: &ControlState, eip: &str) -> EipBinding {
    s.plan()
        .eips
        .iter()
        .find(|e| e.name == eip)
        .unwrap()
        .binding
}

#[test]
fn eip_moves_between_instances_only_with_allow_reassociation() {
    let s = state();
    // `direct` is fn-a2's: refused without the flag, with a hint naming it.
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "direct", "vpc": "tenant-a", "instance": "fn-a1"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "EIP `direct` is already associated with instance `tenant-a/fn-a2`",
               "field": "",
               "hint": "disassociate it first, or set `allow_reassociation` to move it here"})
    );
    let n = ok(
        &s,
        req::<AssociateEip>(
            json!({"eip": "direct", "vpc": "tenant-a", "instance": "fn-a1", "allow_reassociation": true}),
        ),
    );
    assert_eq!(
        binding_of(&n, "direct"),
        EipBinding::Instance {
            vpc: 0,
            instance: 0
        }
    );
    assert_eq!(vpc(&n).instances[1].eip, None);
    assert!(n.model().vpc[0].instance[1].eip.is_none());
    // Addresses did not move.
    assert_eq!(vpc(&n).instances, {
        let mut old = vpc(&s).instances.clone();
        let moved = std::sync::Arc::make_mut(&mut old[1]).eip.take();
        std::sync::Arc::make_mut(&mut old[0]).eip = moved;
        old
    });
}

#[test]
fn allow_reassociation_replaces_the_instances_eip() {
    let s = state();
    let e = refused(
        &s,
        req::<AssociateEip>(json!({"eip": "spare", "vpc": "tenant-a", "instance": "fn-a2"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation", "error": "instance `fn-a2` already has EIP `direct`",
               "field": "",
               "hint": "disassociate that EIP first, or set `allow_reassociation` to replace it"})
    );
    let n = ok(
        &s,
        req::<AssociateEip>(
            json!({"eip": "spare", "vpc": "tenant-a", "instance": "fn-a2", "allow_reassociation": true}),
        ),
    );
    assert_eq!(
        binding_of(&n, "spare"),
        EipBinding::Instance {
            vpc: 0,
            instance: 1
        }
    );
    assert_eq!(binding_of(&n, "direct"), EipBinding::Unbound);
    // Associating with what it is bound to already changes nothing but the generation.
    let again = ok(
        &n,
        req::<AssociateEip>(
            json!({"eip": "spare", "vpc": "tenant-a", "instance": "fn-a2", "allow_reassociation": true}),
        ),
    );
    assert_eq!(again.plan(), n.plan());
}

#[test]
fn allow_reassociation_never_takes_an_eip_from_a_nat_gateway() {
    let s = state();
    let e = refused(
        &s,
        req::<AssociateEip>(
            json!({"eip": "nat-a", "vpc": "tenant-a", "instance": "fn-a1", "allow_reassociation": true}),
        ),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "dependency_violation",
               "error": "EIP `nat-a` is already associated with NAT gateway `tenant-a/egress`",
               "field": "", "hint": "disassociate it from the gateway first, or allocate another EIP"})
    );
    // Nor moves an instance's EIP to a gateway.
    let e = refused(
        &s,
        req::<AssociateEip>(
            json!({"eip": "direct", "vpc": "tenant-a", "nat_gateway": "egress", "allow_reassociation": true}),
        ),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    // A target that does not exist leaves the EIP where it was.
    let e = refused(
        &s,
        req::<AssociateEip>(
            json!({"eip": "direct", "vpc": "tenant-a", "instance": "nope", "allow_reassociation": true}),
        ),
    );
    assert_eq!(
        (e.errors[0].code, e.errors[0].field.as_str()),
        (ErrorCode::NotFound, "instance")
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAPI schemas.

#[test]
fn every_operation_has_a_request_schema_whose_references_resolve() {
    let ops = op_schemas();
    assert_eq!(
        ops.iter().map(|o| o.op).collect::<Vec<_>>(),
        Change::OPS.to_vec()
    );
    let all = schemas();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "schemas() is sorted, each name once");
    for o in &ops {
        assert!(names.contains(&o.schema.as_str()), "{} has no schema", o.op);
        assert!(o.description.is_some(), "{} is undocumented", o.op);
        // Request bodies refuse unknown keys, and the schema says so.
        let (_, schema) = all.iter().find(|(n, _)| n == &o.schema).unwrap();
        let mut j = serde_json::to_value(schema).unwrap();
        // A request that is another's body (`add_public_zone_record` is `add_zone_record`'s)
        // refers to its schema.
        if let Some(r) = j["$ref"].as_str() {
            let target = r.trim_start_matches("#/components/schemas/");
            let (_, schema) = all.iter().find(|(n, _)| n == target).unwrap();
            j = serde_json::to_value(schema).unwrap();
        }
        assert_eq!(j["additionalProperties"], json!(false), "{}: {j}", o.op);
    }
    // Every `$ref` in every schema names a component.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                        _ => refs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (_, s) in &all {
        refs(&serde_json::to_value(s).unwrap(), &mut found);
    }
    assert!(found.iter().any(|r| r.ends_with("/PortRange")));
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(names.contains(&name), "unresolved {r}");
    }
}

#[test]
fn value_schemas_describe_the_json_they_accept() {
    let all = schemas();
    let get = |n: &str| serde_json::to_value(&all.iter().find(|(x, _)| x == n).unwrap().1).unwrap();
    assert_eq!(get("Cidr")["type"], "string");
    assert_eq!(get("Addr")["format"], "ipv4");
    assert_eq!(get("RouteTarget")["type"], "string");
    let ports = get("PortRange");
    assert_eq!(ports["oneOf"][0]["type"], "integer");
    assert_eq!(ports["oneOf"][1]["type"], "string");
    assert_eq!(
        get("RuleProtocol")["enum"],
        json!(["tcp", "udp", "icmp", "all"])
    );
    assert_eq!(
        get("NatMapping")["enum"],
        json!(["endpoint-independent", "address-and-port-dependent"])
    );
    // Optional keys are not required; `allow_reassociation` defaults to false.
    let assoc = get("AssociateEip");
    assert_eq!(assoc["required"], json!(["eip", "vpc"]));
    assert_eq!(
        assoc["properties"]["allow_reassociation"]["type"],
        "boolean"
    );
    // The examples in the schemas decode.
    for (n, ex) in [("PortRange", json!(80)), ("PortRange", json!("8000-8100"))] {
        let body = json!({"vpc": "tenant-a", "group": "web", "direction": "ingress",
                          "protocol": "tcp", "ports": ex, "peer": "0.0.0.0/0"});
        decode::<AddSgRule>(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
}

#[test]
fn uplink_fields_are_changes_too_and_validated_like_the_file() {
    let s = state();
    // Without `[internet] uplink = "host"`, host_bind is refused with the file's words.
    let e = refused(
        &s,
        req::<AllocateEip>(
            json!({"name": "out", "address": "203.0.113.77", "host_bind": "192.0.2.5"}),
        ),
    );
    same_as_file(
        &e,
        "[[eip]]\nname = \"out\"\naddress = \"203.0.113.77\"\nhost_bind = \"192.0.2.5\"\n",
        "host_bind",
    );
    // A malformed listener is refused when decoding, naming the field.
    let e = decode::<AddDnat>(
        json!({"vpc": "tenant-a", "nat_gateway": "egress", "eip": "nat-a", "protocol": "tcp",
               "port": 9000, "instance": "fn-a1", "host_listen": "nowhere"})
        .to_string()
        .as_bytes(),
    )
    .expect_err("a bad host_listen");
    assert_eq!(first_json(&e)["field"], "host_listen", "{}", e.to_json());

    // The allow-list is set, replaced and removed; the export carries it.
    let s = ok(
        &s,
        req::<SetEgressAllow>(
            json!({"vpc": "tenant-a", "egress_allow": ["192.0.2.0/24:443", "198.51.100.7"]}),
        ),
    );
    assert!(s.export().contains("192.0.2.0/24:443"), "{}", s.export());
    assert_eq!(vpc(&s).egress_allow.as_ref().map(Vec::len), Some(2));
    let s = ok(&s, req::<SetEgressAllow>(json!({"vpc": "tenant-a"})));
    assert!(vpc(&s).egress_allow.is_none());
    assert!(!s.export().contains("egress_allow"), "{}", s.export());
    let e = refused(
        &s,
        req::<SetEgressAllow>(json!({"vpc": "nope", "egress_allow": []})),
    );
    assert_eq!(first_json(&e)["code"], "not_found");
    let e = decode::<SetEgressAllow>(br#"{"vpc": "tenant-a", "egress_allow": ["192.0.2.1/24"]}"#)
        .expect_err("host bits");
    assert!(e.to_json().contains("egress_allow"), "{}", e.to_json());
}

// ---- batches (issue 20) -------------------------------------------------------------------

fn batch(entries: serde_json::Value) -> Result<Vec<Change>, ChangeError> {
    vpcd::control::decode_batch(json!({ "changes": entries }).to_string().as_bytes())
}

#[test]
fn a_batch_applies_its_changes_in_order_as_single_requests_would() {
    let s = state();
    let changes = batch(json!([
        {"op": "add_instance", "request": {"vpc": "tenant-a", "name": "fn-b1", "subnet": "functions"}},
        {"op": "associate_eip", "request": {"eip": "spare", "vpc": "tenant-a", "instance": "fn-b1"}},
        {"op": "add_sg_rule", "request": {"vpc": "tenant-a", "group": "web", "direction": "ingress",
                                          "protocol": "udp", "ports": "53", "peer": "10.0.0.0/16"}},
    ]))
    .unwrap();
    let all = s.apply_batch(&changes).unwrap();
    let one_by_one = changes.iter().fold(s.clone(), |st, c| ok(&st, c.clone()));
    assert_eq!(all, one_by_one);
    assert_eq!(all.generation(), s.generation() + 3);
    let reloaded = vpcd::topology::parse("export.toml", all.export()).unwrap();
    assert_eq!(&reloaded, all.plan());
}

#[test]
fn a_refused_entry_refuses_the_whole_batch_naming_the_entry() {
    let s = state();
    let changes = batch(json!([
        {"op": "add_instance", "request": {"vpc": "tenant-a", "name": "fn-b1", "subnet": "functions"}},
        {"op": "add_instance", "request": {"vpc": "tenant-a", "name": "fn-b2", "subnet": "functions",
                                           "ip": "10.0.1.1"}},
    ]))
    .unwrap();
    let before = s.clone();
    let e = s
        .apply_batch(&changes)
        .expect_err("the reserved address is refused");
    assert_eq!(s, before);
    // The same message as the single request, on the entry's field.
    let single = refused(&ok(&s, changes[0].clone()), changes[1].clone());
    assert_eq!(e.errors.len(), single.errors.len());
    assert_eq!(e.errors[0].error, single.errors[0].error);
    assert_eq!(
        e.errors[0].field,
        format!("changes[1].{}", single.errors[0].field)
    );
}

#[test]
fn bad_batch_bodies_are_refused_with_the_entry_and_field() {
    let first = |r: Result<Vec<Change>, ChangeError>| first_json(&r.expect_err("refused"));
    let j = first(batch(json!([])));
    assert_eq!(
        (j["code"].as_str(), j["field"].as_str()),
        (Some("invalid_input"), Some("changes"))
    );
    let j = first(batch(
        json!([{"op": "add_instance", "request": {"vpc": "a", "name": "x",
                                                                  "subnet": "s", "ip": "10.0.1"}}]),
    ));
    assert_eq!(j["field"], "changes[0].ip", "{j}");
    let j = first(batch(json!([{"op": "fly", "request": {}}])));
    assert_eq!(
        (j["code"].as_str(), j["field"].as_str()),
        (Some("invalid_input"), Some("changes[0].op"))
    );
    let j = first(batch(json!([{"op": "release_eip"}])));
    assert_eq!(j["code"], "invalid_input", "{j}");
    let too_many: Vec<_> = (0..=vpcd::control::MAX_BATCH)
        .map(|_| json!({"op": "release_eip", "request": {"name": "spare"}}))
        .collect();
    let j = first(batch(json!(too_many)));
    assert_eq!(j["field"], "changes", "{j}");
}

// ---------------------------------------------------------------------------------------------
// DNS (issue 12): private zones and records, associations, DNS Firewall rules, egress by name.

/// The fixture with a private zone `corp.example` in tenant-a (one record) and a second VPC.
fn with_zone() -> ControlState {
    let s = ok(
        &state(),
        req::<AddVpc>(json!({"name": "tenant-b", "cidr": "10.0.0.0/16"})),
    );
    ok(
        &s,
        req::<AddZone>(json!({"name": "corp.example", "vpcs": ["tenant-a"],
            "records": [{"name": "db", "type": "A", "value": "10.0.1.50"}]})),
    )
}

#[test]
fn dns_zone_records_and_associations_reach_the_plan_through_both_paths() {
    let s = with_zone();
    assert_eq!(s.plan().zones.len(), 1);
    for (kind, value) in [
        ("A", "10.0.1.60"),
        ("AAAA", "2001:db8::1"),
        ("TXT", "v=spf1 -all"),
        ("MX", "10 mail.corp.example"),
        ("SRV", "0 5 5432 db.corp.example"),
    ] {
        let n = ok(
            &s,
            req::<AddZoneRecord>(json!({"zone": "corp.example", "name": "web", "type": kind,
                                        "value": value, "ttl": 60})),
        );
        assert_eq!(n.plan().zones[0].records.len(), 2, "{kind}");
    }
    let s = ok(
        &s,
        req::<AddZoneRecord>(
            json!({"zone": "corp.example", "name": "www", "type": "CNAME",
                                    "value": "db.corp.example"}),
        ),
    );
    let s = ok(
        &s,
        req::<RemoveZoneRecord>(json!({"zone": "corp.example", "name": "www", "type": "CNAME"})),
    );
    assert_eq!(s.plan().zones[0].records.len(), 1);
    let s = ok(
        &s,
        req::<AssociateZone>(json!({"zone": "corp.example", "vpc": "tenant-b"})),
    );
    assert_eq!(s.plan().zones[0].vpcs, vec![0, 1]);
    let s = ok(
        &s,
        req::<DisassociateZone>(json!({"zone": "corp.example", "vpc": "tenant-a"})),
    );
    assert_eq!(s.plan().zones[0].vpcs, vec![1]);
    let s = ok(&s, req::<RemoveZone>(json!({"name": "corp.example"})));
    assert!(s.plan().zones.is_empty());
}

#[test]
fn dns_zone_refusals_are_the_file_errors_on_the_request_fields() {
    let s = with_zone();
    let e = refused(
        &s,
        req::<AddZoneRecord>(json!({"zone": "corp.example", "name": "web", "type": "A",
                                    "value": "10.0.1"})),
    );
    same_as_file(
        &e,
        "[[zone]]\nname = \"corp.example\"\nvpcs = [\"tenant-a\"]\nrecord = [{ name = \"web\", type = \"A\", value = \"10.0.1\" }]",
        "value",
    );
    let e = refused(
        &s,
        req::<AddZoneRecord>(json!({"zone": "corp.example", "name": "@", "type": "CNAME",
                                    "value": "db.corp.example"})),
    );
    assert_eq!(first_json(&e)["code"], "invalid_input", "{}", e.to_json());
    assert!(
        first_json(&e)["field"]
            .as_str()
            .is_some_and(|f| f == "type" || f == "name"),
        "{}",
        e.to_json()
    );
    let e = refused(
        &state(),
        req::<AddZone>(json!({"name": "x.vpc.internal", "vpcs": ["tenant-a"]})),
    );
    same_as_file(
        &e,
        "[[zone]]\nname = \"x.vpc.internal\"\nvpcs = [\"tenant-a\"]",
        "name",
    );
    let e = refused(
        &state(),
        req::<AddZone>(json!({"name": "svc.example", "vpcs": ["tenant-z"]})),
    );
    same_as_file(
        &e,
        "[[zone]]\nname = \"svc.example\"\nvpcs = [\"tenant-z\"]",
        "vpcs[0]",
    );
    // What the edit refuses: names that do not exist, duplicates, the last VPC.
    let e = refused(
        &s,
        req::<AddZone>(json!({"name": "CORP.example.", "vpcs": ["tenant-a"]})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let e = refused(
        &s,
        req::<RemoveZoneRecord>(json!({"zone": "corp.example", "name": "db", "type": "MX"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    let e = refused(
        &s,
        req::<DisassociateZone>(json!({"zone": "corp.example", "vpc": "tenant-a"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    let e = refused(
        &s,
        req::<AssociateZone>(json!({"zone": "nope.example", "vpc": "tenant-b"})),
    );
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "private zone `nope.example` does not exist",
               "field": "zone", "hint": "the private zones are: corp.example"})
    );
}

#[test]
fn dns_firewall_rules_add_and_remove_through_both_paths() {
    let s = ok(
        &state(),
        req::<AddDnsFirewallRule>(json!({"name": "no-bad", "vpcs": ["tenant-a"],
            "domains": ["*.bad.example", "bad.example"], "action": "block",
            "block_response": "override", "block_override": "walled.example",
            "block_override_ttl": 30})),
    );
    assert_eq!(s.model().dns_firewall.len(), 1);
    let e = refused(
        &s,
        req::<AddDnsFirewallRule>(json!({"name": "x", "vpcs": ["tenant-a"],
            "domains": ["a.example"], "action": "alert", "block_response": "nodata"})),
    );
    same_as_file(
        &e,
        "[[dns_firewall]]\nname = \"x\"\nvpcs = [\"tenant-a\"]\ndomains = [\"a.example\"]\naction = \"alert\"\nblock_response = \"nodata\"",
        "block_response",
    );
    let e = refused(
        &s,
        req::<AddDnsFirewallRule>(json!({"name": "y", "vpcs": ["tenant-a"],
            "domains": ["bad..example"], "action": "block"})),
    );
    same_as_file(
        &e,
        "[[dns_firewall]]\nname = \"y\"\nvpcs = [\"tenant-a\"]\ndomains = [\"bad..example\"]\naction = \"block\"",
        "domains[0]",
    );
    let e = refused(
        &s,
        req::<AddDnsFirewallRule>(json!({"name": "no-bad", "vpcs": ["tenant-a"],
            "domains": ["a.example"], "action": "allow"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let s = ok(&s, req::<RemoveDnsFirewallRule>(json!({"name": "no-bad"})));
    assert!(s.model().dns_firewall.is_empty());
    let e = refused(&s, req::<RemoveDnsFirewallRule>(json!({"name": "no-bad"})));
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

#[test]
fn egress_by_name_is_set_and_cleared_per_vpc_through_both_paths() {
    let s = ok(
        &state(),
        req::<SetEgressByName>(json!({"vpc": "tenant-a",
            "allow": ["api.payments.example:443", "*.cdn.example"]})),
    );
    assert_eq!(s.model().egress_by_name.len(), 1);
    let e = refused(
        &s,
        req::<SetEgressByName>(json!({"vpc": "tenant-a", "allow": ["api.example:http"]})),
    );
    // After the edit, the new entry is the only one: `egress_by_name[0]`.
    same_as_file(
        &e,
        "[[egress_by_name]]\nvpcs = [\"tenant-a\"]\nallow = [\"api.example:http\"]",
        "allow[0]",
    );
    let s = ok(
        &s,
        req::<SetEgressByName>(json!({"vpc": "tenant-a", "allow": []})),
    );
    assert!(s.model().egress_by_name.is_empty());
    let e = refused(
        &s,
        req::<SetEgressByName>(json!({"vpc": "ghost", "allow": ["a.example"]})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

#[test]
fn public_zones_and_their_records_through_both_paths() {
    let s = ok(
        &state(),
        req::<AddPublicZone>(json!({"name": "example.com",
            "records": [{"name": "api", "type": "A", "value": "198.51.100.10"}]})),
    );
    assert_eq!(s.plan().internet.zones.len(), 1);
    assert_eq!(s.plan().internet.zones[0].records.len(), 1);
    assert!(s.plan().internet.zones[0].vpcs.is_empty());
    let s = ok(
        &s,
        req::<AddPublicZoneRecord>(
            json!({"zone": "Example.COM.", "name": "www", "type": "CNAME",
                                          "value": "api.example.com", "ttl": 30}),
        ),
    );
    assert_eq!(s.plan().internet.zones[0].records.len(), 2);
    assert!(s.export().contains("[[internet.zone]]"), "{}", s.export());
    let s = ok(
        &s,
        req::<RemovePublicZoneRecord>(json!({"zone": "example.com", "name": "www",
                                             "type": "CNAME"})),
    );
    assert_eq!(s.plan().internet.zones[0].records.len(), 1);
    // The internet's hosts stay when the last public zone goes.
    let s = ok(&s, req::<RemovePublicZone>(json!({"name": "example.com"})));
    assert!(s.plan().internet.zones.is_empty());
    assert_eq!(s.plan().internet.hosts.len(), 1);
}

#[test]
fn a_public_zone_makes_and_takes_the_internet_section_when_there_is_none() {
    let s = ControlState::from_text(
        "bare.toml",
        "[[vpc]]\nname = \"a\"\ncidr = \"10.1.0.0/16\"\n",
    )
    .unwrap();
    let s = ok(&s, req::<AddPublicZone>(json!({"name": "example.net"})));
    assert_eq!(s.plan().internet.zones.len(), 1);
    let s = ok(&s, req::<RemovePublicZone>(json!({"name": "example.net"})));
    assert!(s.model().internet.is_none(), "{}", s.export());
}

#[test]
fn public_zone_refusals_are_the_file_errors_on_the_request_fields() {
    let s = ok(
        &state(),
        req::<AddPublicZone>(json!({"name": "example.com"})),
    );
    let e = refused(
        &s,
        req::<AddPublicZoneRecord>(json!({"zone": "example.com", "name": "api", "type": "A",
                                          "value": "198.51.100"})),
    );
    same_as_file(
        &e,
        "[[internet.zone]]\nname = \"example.com\"\nrecord = [{ name = \"api\", type = \"A\", value = \"198.51.100\" }]",
        "value",
    );
    let e = refused(
        &state(),
        req::<AddPublicZone>(json!({"name": "x.vpc.internal"})),
    );
    same_as_file(&e, "[[internet.zone]]\nname = \"x.vpc.internal\"", "name");
    let e = refused(&s, req::<AddPublicZone>(json!({"name": "EXAMPLE.com."})));
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
    let e = refused(
        &s,
        req::<RemovePublicZoneRecord>(json!({"zone": "example.com", "name": "api", "type": "A"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    let e = refused(&s, req::<RemovePublicZone>(json!({"name": "nope.example"})));
    assert_eq!(
        first_json(&e),
        json!({"code": "not_found", "error": "public zone `nope.example` does not exist",
               "field": "name", "hint": "the public zones are: example.com"})
    );
    // A private zone is not a public one.
    let e = refused(
        &with_zone(),
        req::<AddPublicZoneRecord>(json!({"zone": "corp.example", "name": "x", "type": "A",
                                          "value": "198.51.100.9"})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
}

/// The rules of tenant-a's plan: (name, number of domains).
fn firewall_rules(s: &ControlState) -> Vec<(String, usize)> {
    vpc(s)
        .dns_firewall
        .iter()
        .map(|r| (r.name.clone(), r.domains.len()))
        .collect()
}

#[test]
fn dns_domain_lists_are_made_referenced_updated_and_removed_through_both_paths() {
    let s = ok(
        &state(),
        req::<AddDnsDomainList>(json!({"name": "bad", "domains": ["bad.example"]})),
    );
    let s = ok(
        &s,
        req::<AddDnsFirewallRule>(json!({"name": "no-bad", "vpcs": ["tenant-a"],
            "domain_list": "bad", "action": "block"})),
    );
    assert_eq!(firewall_rules(&s), [("no-bad".to_string(), 1)]);
    let s = ok(
        &s,
        req::<UpdateDnsDomainList>(json!({"name": "bad", "operation": "add",
            "domains": ["*.bad.example", "BAD.example"]})),
    );
    // Added once (names compare without case), and the rule matches the list as it is now.
    assert_eq!(firewall_rules(&s), [("no-bad".to_string(), 2)]);
    let s = ok(
        &s,
        req::<UpdateDnsDomainList>(json!({"name": "bad", "operation": "remove",
            "domains": ["bad.example"]})),
    );
    assert_eq!(firewall_rules(&s), [("no-bad".to_string(), 1)]);
    let s = ok(
        &s,
        req::<UpdateDnsDomainList>(json!({"name": "bad", "operation": "replace",
            "domains": ["a.example", "b.example", "*.c.example"]})),
    );
    assert_eq!(firewall_rules(&s), [("no-bad".to_string(), 3)]);
    assert!(s.export().contains("[[dns_domain_list]]"), "{}", s.export());
    // In use: refused until the rule goes.
    let e = refused(&s, req::<RemoveDnsDomainList>(json!({"name": "bad"})));
    assert_eq!(e.errors[0].code, ErrorCode::DependencyViolation);
    assert!(e.errors[0].error.contains("no-bad"), "{}", e.to_json());
    let s = ok(&s, req::<RemoveDnsFirewallRule>(json!({"name": "no-bad"})));
    let s = ok(&s, req::<RemoveDnsDomainList>(json!({"name": "bad"})));
    assert!(s.model().dns_domain_list.is_empty());
}

#[test]
fn dns_domain_list_refusals_are_located() {
    let s = ok(
        &state(),
        req::<AddDnsDomainList>(json!({"name": "bad", "domains": []})),
    );
    let e = refused(
        &s,
        req::<AddDnsDomainList>(json!({"name": "worse", "domains": ["ok.example", "no..pe"]})),
    );
    same_as_file(
        &e,
        "[[dns_domain_list]]\nname = \"worse\"\ndomains = [\"ok.example\", \"no..pe\"]",
        "domains[1]",
    );
    let e = refused(
        &s,
        req::<AddDnsFirewallRule>(json!({"name": "r", "vpcs": ["tenant-a"],
            "domain_list": "bda", "action": "alert"})),
    );
    same_as_file(
        &e,
        "[[dns_firewall]]\nname = \"r\"\nvpcs = [\"tenant-a\"]\ndomain_list = \"bda\"\naction = \"alert\"",
        "domain_list",
    );
    assert!(
        e.errors[0]
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("did you mean `bad`")),
        "{}",
        e.to_json()
    );
    let e = refused(
        &s,
        req::<AddDnsFirewallRule>(json!({"name": "r", "vpcs": ["tenant-a"],
            "domains": ["a.example"], "domain_list": "bad", "action": "alert"})),
    );
    assert_eq!(first_json(&e)["field"], "domain_list", "{}", e.to_json());
    let e = refused(
        &s,
        req::<AddDnsFirewallRule>(json!({"name": "r", "vpcs": ["tenant-a"], "action": "alert"})),
    );
    assert_eq!(first_json(&e)["field"], "domains", "{}", e.to_json());
    let e = refused(
        &s,
        req::<UpdateDnsDomainList>(json!({"name": "bad", "operation": "remove",
            "domains": ["x.example"]})),
    );
    assert_eq!(
        (e.errors[0].code, first_json(&e)["field"].clone()),
        (ErrorCode::NotFound, json!("domains[0]"))
    );
    let e = refused(
        &s,
        req::<UpdateDnsDomainList>(json!({"name": "bad", "operation": "replace",
            "domains": ["*.*.example"]})),
    );
    assert_eq!(first_json(&e)["field"], "domains[0]", "{}", e.to_json());
    let e = refused(
        &s,
        req::<UpdateDnsDomainList>(json!({"name": "ghost", "operation": "add", "domains": []})),
    );
    assert_eq!(e.errors[0].code, ErrorCode::NotFound);
    let e = refused(&s, req::<AddDnsDomainList>(json!({"name": "bad"})));
    assert_eq!(e.errors[0].code, ErrorCode::AlreadyExists);
}
