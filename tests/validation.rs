//! Topology validation: every rule's exact error text, and the valid cases that must pass.

use std::net::Ipv4Addr;

use vpcd::topology::model::{Attach, Expect, L4};
use vpcd::topology::plan::{EipBinding, Endpoint, RouteTargetPlan};
use vpcd::topology::{Plan, TopologyError, parse};

fn ok(text: &str) -> Plan {
    match parse("good.toml", text) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid topology, got:\n{e}"),
    }
}

/// The full rendered error text of an invalid topology.
fn err(text: &str) -> String {
    match parse("bad.toml", text) {
        Ok(p) => panic!("expected an error, got a plan: {p:#?}"),
        Err(e @ TopologyError::Invalid(_)) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const TWO_TENANTS: &str = r#"
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

[[vpc.route_table]]
name = "private"
routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]

[[vpc.nat_gateway]]
name = "egress"
subnet = "public"
eips = ["nat-a"]
snat = [{ source = "10.0.1.0/24" }, { source = "fn-a2", eips = ["nat-a"] }]
dnat = [{ eip = "nat-a", protocol = "tcp", port = 8080, instance = "fn-a1", instance_port = 80 }]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[vpc.instance]]
name = "fn-a2"
subnet = "functions"
ip = "10.0.1.2"
attach = "sim"
mtu = 9000

[[vpc.instance]]
name = "fn-a3"
subnet = "functions"
eip = "direct"

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-b1"
subnet = "functions"
ip = "10.0.1.2"

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

[[probe]]
from = "tenant-a/fn-a1"
to = "internet/web:80/tcp"
expect = "allow"

[[probe]]
name = "no cross-tenant"
from = "tenant-a/fn-a1"
to = "10.0.1.2/icmp"
expect = "deny"
"#;

#[test]
fn valid_topology_resolves_to_a_plan() {
    let p = ok(TWO_TENANTS);
    assert_eq!(p.vpcs.len(), 2);
    let a = &p.vpcs[0];
    // The implicit main table first, then the user's.
    assert_eq!(a.route_tables[0].name, "main");
    assert_eq!(a.route_tables[0].routes.len(), 1);
    assert_eq!(a.route_tables[0].routes[0].target, RouteTargetPlan::Local);
    assert_eq!(a.route_tables[1].name, "private");
    assert_eq!(
        a.route_tables[1].routes[0].destination.to_string(),
        "10.0.0.0/16"
    );
    assert_eq!(a.route_tables[1].routes[1].target, RouteTargetPlan::Nat(0));
    assert_eq!(a.subnets[0].route_table, 0);
    assert_eq!(a.subnets[1].route_table, 1);
    assert_eq!(a.subnets[1].gateway, ip("10.0.1.1"));
    // Explicit addresses are reserved first, then gateways and instances get the first free one;
    // 10.0.0.2 (the VPC's base + 2) is the resolver's.
    assert_eq!(a.nat_gateways[0].ip, ip("10.0.0.3"));
    assert_eq!(a.instances[0].ip, ip("10.0.1.3"));
    assert_eq!(a.instances[1].ip, ip("10.0.1.2"));
    assert_eq!(a.instances[2].ip, ip("10.0.1.4"));
    assert_eq!(a.instances[1].attach, Attach::Sim);
    assert_eq!((a.instances[0].mtu, a.instances[1].mtu), (1500, 9000));
    assert_eq!(a.instances[2].eip, Some(1));
    let gw = &a.nat_gateways[0];
    assert_eq!(gw.eips, vec![0]);
    assert_eq!(gw.snat[0].eips, vec![0]);
    assert_eq!(gw.snat[1].source.to_string(), "10.0.1.2/32");
    assert_eq!(gw.dnat[0].instance, 0);
    assert_eq!(
        (gw.dnat[0].port, gw.dnat[0].instance_port),
        (Some(8080), Some(80))
    );
    assert_eq!(
        p.eips[0].binding,
        EipBinding::NatGateway { vpc: 0, gateway: 0 }
    );
    assert_eq!(
        p.eips[1].binding,
        EipBinding::Instance {
            vpc: 0,
            instance: 2
        }
    );
    assert_eq!(p.eips[2].binding, EipBinding::Unbound);
    assert_eq!(p.internet.cidr.to_string(), "198.51.100.0/24");
    assert_eq!(p.internet.hosts[0].ip, ip("198.51.100.10"));
    let probe = &p.probes[0];
    assert_eq!(probe.name, "tenant-a/fn-a1 -> internet/web:80/tcp");
    assert_eq!(
        probe.from,
        Endpoint::Instance {
            vpc: 0,
            instance: 0
        }
    );
    assert_eq!(probe.to_endpoint, Some(Endpoint::Host(0)));
    assert_eq!(probe.to_addr, ip("198.51.100.10"));
    assert_eq!((probe.to.proto, probe.expect), (L4::Tcp, Expect::Allow));
    assert_eq!(p.probes[1].name, "no cross-tenant");
    assert_eq!(p.probes[1].to_endpoint, None);
    assert_eq!(p.probes[1].to_addr, ip("10.0.1.2"));
}

#[test]
fn overlapping_cidrs_across_vpcs_are_valid() {
    let p = ok(TWO_TENANTS);
    assert_eq!(p.vpcs[0].cidr, p.vpcs[1].cidr);
    assert_eq!(p.vpcs[0].instances[1].ip, p.vpcs[1].instances[0].ip);
}

#[test]
fn empty_file_is_a_valid_empty_topology() {
    let p = ok("");
    assert!(p.vpcs.is_empty() && p.eips.is_empty() && p.probes.is_empty());
    assert_eq!(p.internet.cidr.to_string(), "198.51.100.0/24");
}

#[test]
fn implicit_main_table_is_index_zero_and_user_main_adds_routes() {
    let p = ok(r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"

[[vpc.route_table]]
name = "other"

[[vpc.route_table]]
name = "main"
routes = [{ destination = "0.0.0.0/0", target = "internet" }]

[[vpc.subnet]]
name = "s"
cidr = "10.0.1.0/24"
"#);
    let tables = &p.vpcs[0].route_tables;
    assert_eq!(tables[0].name, "main");
    assert_eq!(tables[0].routes.len(), 2);
    assert_eq!(tables[0].routes[0].target, RouteTargetPlan::Local);
    assert_eq!(tables[0].routes[1].target, RouteTargetPlan::Internet);
    assert_eq!(tables[1].name, "other");
    assert_eq!(p.vpcs[0].subnets[0].route_table, 0);
}

#[test]
fn auto_ip_assignment_skips_reserved_and_taken_addresses() {
    let p = ok(r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "s"
cidr = "10.0.1.0/29"

[[vpc.instance]]
name = "one"
subnet = "s"

[[vpc.instance]]
name = "two"
subnet = "s"
ip = "10.0.1.3"

[[vpc.nat_gateway]]
name = "gw"
subnet = "s"

[[vpc.instance]]
name = "three"
subnet = "s"
"#);
    let v = &p.vpcs[0];
    // Gateways first, then instances, each taking the first free address after `.1`.
    assert_eq!(v.nat_gateways[0].ip, ip("10.0.1.2"));
    assert_eq!(v.instances[0].ip, ip("10.0.1.4"));
    assert_eq!(v.instances[1].ip, ip("10.0.1.3"));
    assert_eq!(v.instances[2].ip, ip("10.0.1.5"));
}

#[test]
fn smallest_subnet_has_one_usable_address() {
    let p = ok(r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/28"

[[vpc.subnet]]
name = "s"
cidr = "10.0.0.4/30"

[[vpc.instance]]
name = "one"
subnet = "s"
"#);
    assert_eq!(p.vpcs[0].instances[0].ip, ip("10.0.0.6"));
}

#[test]
fn dnat_any_maps_the_whole_address_and_snat_defaults_to_all_gateway_eips() {
    let p = ok(r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "s"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn"
subnet = "s"

[[vpc.nat_gateway]]
name = "gw"
subnet = "s"
eips = ["e1", "e2"]
snat = [{ source = "fn" }]
dnat = [{ eip = "e2", protocol = "any", instance = "fn" }, { eip = "e1", protocol = "udp", port = 53, instance = "fn" }]

[[eip]]
name = "e1"
address = "192.0.2.1"

[[eip]]
name = "e2"
address = "192.0.2.2"
"#);
    let gw = &p.vpcs[0].nat_gateways[0];
    assert_eq!(gw.snat[0].eips, vec![0, 1]);
    assert_eq!(gw.snat[0].source.to_string(), "10.0.1.3/32");
    assert_eq!((gw.dnat[0].port, gw.dnat[0].instance_port), (None, None));
    assert_eq!(
        (gw.dnat[1].port, gw.dnat[1].instance_port),
        (Some(53), Some(53))
    );
}

// ---- every rule, with the exact text a user sees -------------------------------------------

#[test]
fn toml_syntax_error_is_located() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"
[[vpc.instance]
name = "fn-a1"
"##;
    assert_eq!(
        err(text),
        r##"error: invalid TOML: unclosed array table, expected `]`
 --> bad.toml:8:16
  = at vpc.instance
  |
8 | [[vpc.instance]
  |                ^
  = hint: fix the TOML syntax here: check quotes, brackets and `key = value` pairs

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_key_is_refused_with_closest_valid_key() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cdir = "10.0.1.0/24"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown key `cdir`
 --> bad.toml:7:1
  = at vpc[tenant-a].subnet[functions].cdir
  |
7 | cdir = "10.0.1.0/24"
  | ^^^^
  = hint: did you mean `cidr`? the keys here are: name, cidr, route_table, network_acl

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn missing_key_is_refused_with_key_path() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
"##;
    assert_eq!(
        err(text),
        r##"error: missing key `cidr`
 --> bad.toml:5:1
  = at vpc[tenant-a].subnet[functions].cidr
  |
5 | [[vpc.subnet]]
  | ^^^^^^^^^^^^^^
  = hint: add `cidr = ...` to this table (see topologies/README.md)

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn bad_cidr_is_refused_with_its_message() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/33"
"##;
    assert_eq!(
        err(text),
        r##"error: `10.0.1.0/33` is not an IPv4 CIDR block
 --> bad.toml:7:8
  = at vpc[tenant-a].subnet[functions].cidr
  |
7 | cidr = "10.0.1.0/33"
  |        ^^^^^^^^^^^^^
  = hint: write it like "10.0.0.0/16"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn cidr_with_host_bits_suggests_the_block() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.5/24"
"##;
    assert_eq!(
        err(text),
        r##"error: `10.0.1.5/24` has host bits set
 --> bad.toml:7:8
  = at vpc[tenant-a].subnet[functions].cidr
  |
7 | cidr = "10.0.1.5/24"
  |        ^^^^^^^^^^^^^
  = hint: did you mean "10.0.1.0/24"?

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn bad_address_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
ip = "10.0.1.300"
"##;
    assert_eq!(
        err(text),
        r##"error: `10.0.1.300` is not an IPv4 address
  --> bad.toml:12:6
   = at vpc[tenant-a].instance[fn-a1].ip
   |
12 | ip = "10.0.1.300"
   |      ^^^^^^^^^^^^
   = hint: write it like "10.0.1.10"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn bad_route_target_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.route_table]]
name = "main"
routes = [{ destination = "0.0.0.0/0", target = "nowhere" }]
"##;
    assert_eq!(
        err(text),
        r##"error: `nowhere` is not a route target
  --> bad.toml:11:49
   = at vpc[tenant-a].route_table[main].routes[0].target
   |
11 | routes = [{ destination = "0.0.0.0/0", target = "nowhere" }]
   |                                                 ^^^^^^^^^
   = hint: use "local", "blackhole", "internet" or "nat:GATEWAY"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn bad_probe_target_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[probe]]
from = "tenant-a/fn"
to = "10.0.1.2:80"
expect = "allow"
"##;
    assert_eq!(
        err(text),
        r##"error: `10.0.1.2:80` is not a probe target
  --> bad.toml:11:6
   = at probe[0].to
   |
11 | to = "10.0.1.2:80"
   |      ^^^^^^^^^^^^^
   = hint: write "198.51.100.10:80/tcp", "tenant-b/fn-b1:53/udp" or "10.0.1.20/icmp"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn bad_enum_value_suggests_the_closest() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
attach = "netn"
"##;
    assert_eq!(
        err(text),
        r##"error: `netn` is not allowed here
  --> bad.toml:12:10
   = at vpc[tenant-a].instance[fn-a1].attach
   |
12 | attach = "netn"
   |          ^^^^^^
   = hint: did you mean "netns"? write one of: netns, sim

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn wrong_value_type_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
mtu = "1500"
"##;
    assert_eq!(
        err(text),
        r##"error: wrong type: string "1500", expected u32
  --> bad.toml:12:7
   = at vpc[tenant-a].instance[fn-a1].mtu
   |
12 | mtu = "1500"
   |       ^^^^^^
   = hint: write a whole number without quotes

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn subnet_outside_vpc_is_refused_with_key_path() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.1.0.0/24"
"##;
    assert_eq!(
        err(text),
        r##"error: subnet 10.1.0.0/24 is outside its VPC's CIDR 10.0.0.0/16
 --> bad.toml:7:8
  = at vpc[tenant-a].subnet[functions].cidr
  |
7 | cidr = "10.1.0.0/24"
  |        ^^^^^^^^^^^^^
  = hint: choose a subnet CIDR inside 10.0.0.0/16, or widen the VPC's cidr

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn overlapping_subnets_in_a_vpc_are_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.subnet]]
name = "more"
cidr = "10.0.0.0/23"
"##;
    assert_eq!(
        err(text),
        r##"error: subnet more (10.0.0.0/23) overlaps subnet functions (10.0.1.0/24) in VPC tenant-a
  --> bad.toml:11:8
   = at vpc[tenant-a].subnet[more].cidr
   |
11 | cidr = "10.0.0.0/23"
   |        ^^^^^^^^^^^^^
   = hint: subnets of one VPC must not overlap; choose a CIDR outside 10.0.1.0/24

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn subnet_too_small_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/31"
"##;
    assert_eq!(
        err(text),
        r##"error: subnet 10.0.1.0/31 is too small to have a usable address
 --> bad.toml:7:8
  = at vpc[tenant-a].subnet[functions].cidr
  |
7 | cidr = "10.0.1.0/31"
  |        ^^^^^^^^^^^^^
  = hint: use a /30 or larger: the network address, the `.1` gateway and the broadcast address are reserved

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn instance_ip_outside_subnet_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
ip = "10.0.2.10"
"##;
    assert_eq!(
        err(text),
        r##"error: instance fn-a1's address 10.0.2.10 is outside its subnet functions (10.0.1.0/24)
  --> bad.toml:12:6
   = at vpc[tenant-a].instance[fn-a1].ip
   |
12 | ip = "10.0.2.10"
   |      ^^^^^^^^^^^
   = hint: choose an address from 10.0.1.2 to 10.0.1.254, or leave out `ip` to get the first free one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn instance_ip_on_gateway_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
ip = "10.0.1.1"
"##;
    assert_eq!(
        err(text),
        r##"error: address 10.0.1.1 is reserved in subnet functions (10.0.1.0/24): it is the subnet gateway (.1)
  --> bad.toml:12:6
   = at vpc[tenant-a].instance[fn-a1].ip
   |
12 | ip = "10.0.1.1"
   |      ^^^^^^^^^^
   = hint: choose an address from 10.0.1.2 to 10.0.1.254, or leave out `ip` to get the first free one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn instance_ip_on_network_address_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
ip = "10.0.1.0"
"##;
    assert_eq!(
        err(text),
        r##"error: address 10.0.1.0 is reserved in subnet functions (10.0.1.0/24): it is the network address
  --> bad.toml:12:6
   = at vpc[tenant-a].instance[fn-a1].ip
   |
12 | ip = "10.0.1.0"
   |      ^^^^^^^^^^
   = hint: choose an address from 10.0.1.2 to 10.0.1.254, or leave out `ip` to get the first free one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn instance_ip_on_broadcast_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
ip = "10.0.1.255"
"##;
    assert_eq!(
        err(text),
        r##"error: address 10.0.1.255 is reserved in subnet functions (10.0.1.0/24): it is the broadcast address
  --> bad.toml:12:6
   = at vpc[tenant-a].instance[fn-a1].ip
   |
12 | ip = "10.0.1.255"
   |      ^^^^^^^^^^^^
   = hint: choose an address from 10.0.1.2 to 10.0.1.254, or leave out `ip` to get the first free one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_ip_in_a_vpc_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
ip = "10.0.1.10"

[[vpc.instance]]
name = "fn-a2"
subnet = "functions"
ip = "10.0.1.10"
"##;
    assert_eq!(
        err(text),
        r##"error: address 10.0.1.10 is already used by instance fn-a1 (line 12) in VPC tenant-a
  --> bad.toml:17:6
   = at vpc[tenant-a].instance[fn-a2].ip
   |
17 | ip = "10.0.1.10"
   |      ^^^^^^^^^^^
   = hint: each instance and NAT gateway of a VPC needs its own address; leave out `ip` to get a free one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn full_subnet_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/30"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[vpc.instance]]
name = "fn-a2"
subnet = "functions"
"##;
    assert_eq!(
        err(text),
        r##"error: subnet functions (10.0.1.0/30) has no free address left for instance fn-a2
  --> bad.toml:14:8
   = at vpc[tenant-a].instance[fn-a2].name
   |
14 | name = "fn-a2"
   |        ^^^^^^^
   = hint: use a larger subnet, or attach it to another subnet

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_vpc_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc]]
name = "tenant-a"
cidr = "10.1.0.0/16"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate VPC name `tenant-a`
  --> bad.toml:10:8
   = at vpc[tenant-a].name
   |
10 | name = "tenant-a"
   |        ^^^^^^^^^^
   = hint: the first VPC named `tenant-a` is on line 2; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_subnet_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.2.0/24"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate subnet name `functions` in VPC tenant-a
  --> bad.toml:10:8
   = at vpc[tenant-a].subnet[functions].name
   |
10 | name = "functions"
   |        ^^^^^^^^^^^
   = hint: the first subnet named `functions` is on line 6; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_instance_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn"
subnet = "functions"

[[vpc.instance]]
name = "fn"
subnet = "functions"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate instance name `fn` in VPC tenant-a
  --> bad.toml:14:8
   = at vpc[tenant-a].instance[fn].name
   |
14 | name = "fn"
   |        ^^^^
   = hint: the first instance named `fn` is on line 10; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_route_table_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.route_table]]
name = "rt"

[[vpc.route_table]]
name = "rt"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate route table name `rt` in VPC tenant-a
  --> bad.toml:13:8
   = at vpc[tenant-a].route_table[rt].name
   |
13 | name = "rt"
   |        ^^^^
   = hint: the first route table named `rt` is on line 10; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_nat_gateway_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate NAT gateway name `gw` in VPC tenant-a
  --> bad.toml:14:8
   = at vpc[tenant-a].nat_gateway[gw].name
   |
14 | name = "gw"
   |        ^^^^
   = hint: the first NAT gateway named `gw` is on line 10; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_security_group_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.security_group]]
name = "web"

[[vpc.security_group]]
name = "web"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate security group name `web` in VPC tenant-a
  --> bad.toml:13:8
   = at vpc[tenant-a].security_group[web].name
   |
13 | name = "web"
   |        ^^^^^
   = hint: the first security group named `web` is on line 10; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_network_acl_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.network_acl]]
name = "acl"

[[vpc.network_acl]]
name = "acl"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate network ACL name `acl` in VPC tenant-a
  --> bad.toml:13:8
   = at vpc[tenant-a].network_acl[acl].name
   |
13 | name = "acl"
   |        ^^^^^
   = hint: the first network ACL named `acl` is on line 10; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_eip_name_is_refused() {
    let text = r##"[[eip]]
name = "e"
address = "203.0.113.1"

[[eip]]
name = "e"
address = "203.0.113.2"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate EIP name `e`
 --> bad.toml:6:8
  = at eip[e].name
  |
6 | name = "e"
  |        ^^^
  = hint: the first EIP named `e` is on line 2; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_host_name_is_refused() {
    let text = r##"[[internet.host]]
name = "web"
ip = "198.51.100.10"

[[internet.host]]
name = "web"
ip = "198.51.100.11"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate host name `web` on the internet
 --> bad.toml:6:8
  = at internet.host[web].name
  |
6 | name = "web"
  |        ^^^^^
  = hint: the first host named `web` is on line 2; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_public_address_is_refused() {
    let text = r##"[[eip]]
name = "e"
address = "198.51.100.10"

[[internet.host]]
name = "web"
ip = "198.51.100.10"
"##;
    assert_eq!(
        err(text),
        r##"error: address 198.51.100.10 is already used by EIP e (line 3) on the public segment
 --> bad.toml:7:6
  = at internet.host[web].ip
  |
7 | ip = "198.51.100.10"
  |      ^^^^^^^^^^^^^^^
  = hint: every internet host and EIP needs its own address

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// An internet host's secondary addresses follow the rules of its `ip`, each located.
#[test]
fn secondary_host_addresses_are_checked_like_the_primary() {
    let plan = ok(r#"[[internet.host]]
name = "stun"
ip = "198.51.100.20"
secondary_ips = ["198.51.100.21"]
"#);
    assert_eq!(plan.internet.hosts[0].secondary, vec![ip("198.51.100.21")]);
    let text = r##"[[eip]]
name = "e"
address = "198.51.100.10"

[[internet.host]]
name = "web"
ip = "198.51.100.11"
secondary_ips = ["198.51.100.11", "198.51.100.10", "203.0.113.5"]
"##;
    assert_eq!(
        err(text),
        r##"error: address 198.51.100.11 is already used by host web (line 7) on the public segment
 --> bad.toml:8:18
  = at internet.host[web].secondary_ips[0]
  |
8 | secondary_ips = ["198.51.100.11", "198.51.100.10", "203.0.113.5"]
  |                  ^^^^^^^^^^^^^^^
  = hint: every internet host and EIP needs its own address

error: address 198.51.100.10 is already used by EIP e (line 3) on the public segment
 --> bad.toml:8:35
  = at internet.host[web].secondary_ips[1]
  |
8 | secondary_ips = ["198.51.100.11", "198.51.100.10", "203.0.113.5"]
  |                                   ^^^^^^^^^^^^^^^
  = hint: every internet host and EIP needs its own address

error: host web's address 203.0.113.5 is outside the internet CIDR 198.51.100.0/24
 --> bad.toml:8:52
  = at internet.host[web].secondary_ips[2]
  |
8 | secondary_ips = ["198.51.100.11", "198.51.100.10", "203.0.113.5"]
  |                                                    ^^^^^^^^^^^^^
  = hint: choose an address inside 198.51.100.0/24, or set `cidr` in [internet]

error: bad.toml: 3 problems, nothing was loaded
"##
    );
    let four = r#"[[internet.host]]
name = "many"
ip = "198.51.100.30"
secondary_ips = ["198.51.100.31", "198.51.100.32", "198.51.100.33", "198.51.100.34"]
"#;
    assert!(
        err(four).contains("host many has 4 secondary addresses; at most 3 are supported"),
        "{}",
        err(four)
    );
}

#[test]
fn two_eips_with_one_address_are_refused() {
    let text = r##"[[eip]]
name = "e1"
address = "203.0.113.1"

[[eip]]
name = "e2"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: address 203.0.113.1 is already used by EIP e1 (line 3) on the public segment
 --> bad.toml:7:11
  = at eip[e2].address
  |
7 | address = "203.0.113.1"
  |           ^^^^^^^^^^^^^
  = hint: every internet host and EIP needs its own address

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_subnet_is_refused_with_suggestion() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "function"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown subnet `function` in VPC tenant-a
  --> bad.toml:11:10
   = at vpc[tenant-a].instance[fn-a1].subnet
   |
11 | subnet = "function"
   |          ^^^^^^^^^^
   = hint: did you mean `functions`? known subnets: functions

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_route_table_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"
route_table = "private"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown route table `private` in VPC tenant-a
 --> bad.toml:8:15
  = at vpc[tenant-a].subnet[functions].route_table
  |
8 | route_table = "private"
  |               ^^^^^^^^^
  = hint: known route tables: main; or define it with [[vpc.route_table]] in VPC tenant-a

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_nat_route_target_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.route_table]]
name = "main"
routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
"##;
    assert_eq!(
        err(text),
        r##"error: unknown NAT gateway `egress` in VPC tenant-a
  --> bad.toml:11:49
   = at vpc[tenant-a].route_table[main].routes[0].target
   |
11 | routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
   |                                                 ^^^^^^^^^^^^
   = hint: there are no NAT gateways here; define it with [[vpc.nat_gateway]] in VPC tenant-a

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_eip_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
eip = "public"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown EIP `public`
  --> bad.toml:12:7
   = at vpc[tenant-a].instance[fn-a1].eip
   |
12 | eip = "public"
   |       ^^^^^^^^
   = hint: there are no EIPs here; define it with [[eip]] (name and address)

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_security_group_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
security_groups = ["web"]
"##;
    assert_eq!(
        err(text),
        r##"error: unknown security group `web` in VPC tenant-a
  --> bad.toml:12:20
   = at vpc[tenant-a].instance[fn-a1].security_groups[0]
   |
12 | security_groups = ["web"]
   |                    ^^^^^
   = hint: there are no security groups here; define it with [[vpc.security_group]] in VPC tenant-a

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_sg_peer_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.security_group]]
name = "web"
ingress = [{ protocol = "tcp", ports = 80, peer = "sg:lb" }]
"##;
    assert_eq!(
        err(text),
        r##"error: unknown security group `lb` in VPC tenant-a
  --> bad.toml:11:51
   = at vpc[tenant-a].security_group[web].ingress[0].peer
   |
11 | ingress = [{ protocol = "tcp", ports = 80, peer = "sg:lb" }]
   |                                                   ^^^^^^^
   = hint: known security groups: web; or define it with [[vpc.security_group]] in VPC tenant-a

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn bad_sg_peer_cidr_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.security_group]]
name = "web"
ingress = [{ protocol = "tcp", ports = 80, peer = "anywhere" }]
"##;
    assert_eq!(
        err(text),
        r##"error: `anywhere` is not an IPv4 CIDR block
  --> bad.toml:11:51
   = at vpc[tenant-a].security_group[web].ingress[0].peer
   |
11 | ingress = [{ protocol = "tcp", ports = 80, peer = "anywhere" }]
   |                                                   ^^^^^^^^^^
   = hint: write a CIDR like "10.0.0.0/16", or `sg:NAME` for the members of a security group

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn unknown_network_acl_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"
network_acl = "strict"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown network ACL `strict` in VPC tenant-a
 --> bad.toml:8:15
  = at vpc[tenant-a].subnet[functions].network_acl
  |
8 | network_acl = "strict"
  |               ^^^^^^^^
  = hint: there are no network ACLs here; define it with [[vpc.network_acl]] in VPC tenant-a

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_acl_rule_number_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.network_acl]]
name = "acl"
inbound = [
  { rule = 100, action = "allow", protocol = "all", cidr = "0.0.0.0/0" },
  { rule = 100, action = "deny", protocol = "all", cidr = "0.0.0.0/0" },
]
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate inbound rule number 100 in network ACL acl
  --> bad.toml:13:12
   = at vpc[tenant-a].network_acl[acl].inbound[1].rule
   |
13 |   { rule = 100, action = "deny", protocol = "all", cidr = "0.0.0.0/0" },
   |            ^^^
   = hint: rule numbers order evaluation; rule 100 is already on line 12, choose another number

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn eip_inside_a_vpc_cidr_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[eip]]
name = "e"
address = "10.0.9.9"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP e's address 10.0.9.9 is inside VPC tenant-a's CIDR 10.0.0.0/16
  --> bad.toml:11:11
   = at eip[e].address
   |
11 | address = "10.0.9.9"
   |           ^^^^^^^^^^
   = hint: an EIP is a public address; in tests use the documentation ranges 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn private_eip_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[eip]]
name = "e"
address = "192.168.1.1"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP e's address 192.168.1.1 is a private (RFC 1918) address, not a public address
  --> bad.toml:11:11
   = at eip[e].address
   |
11 | address = "192.168.1.1"
   |           ^^^^^^^^^^^^^
   = hint: an EIP is a public address; in tests use the documentation ranges 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn eip_used_by_two_instances_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
eip = "e"

[[vpc.instance]]
name = "fn-a2"
subnet = "functions"
eip = "e"

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP e is already bound to instance tenant-a/fn-a1 (line 12)
  --> bad.toml:17:7
   = at vpc[tenant-a].instance[fn-a2].eip
   |
17 | eip = "e"
   |       ^^^
   = hint: an EIP belongs to one instance or one NAT gateway; define another [[eip]] for this one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn eip_used_by_instance_and_nat_gateway_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
eip = "e"

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP e is already bound to NAT gateway tenant-a/gw (line 12)
  --> bad.toml:17:7
   = at vpc[tenant-a].instance[fn-a1].eip
   |
17 | eip = "e"
   |       ^^^
   = hint: an EIP belongs to one instance or one NAT gateway; define another [[eip]] for this one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn eip_used_by_two_gateways_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw1"
subnet = "functions"
eips = ["e"]

[[vpc.nat_gateway]]
name = "gw2"
subnet = "functions"
eips = ["e"]

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP e is already bound to NAT gateway tenant-a/gw1 (line 12)
  --> bad.toml:17:9
   = at vpc[tenant-a].nat_gateway[gw2].eips[0]
   |
17 | eips = ["e"]
   |         ^^^
   = hint: an EIP belongs to one instance or one NAT gateway; define another [[eip]] for this one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn host_outside_internet_cidr_is_refused() {
    let text = r##"[internet]
cidr = "198.51.100.0/24"

[[internet.host]]
name = "web"
ip = "203.0.113.10"
"##;
    assert_eq!(
        err(text),
        r##"error: host web's address 203.0.113.10 is outside the internet CIDR 198.51.100.0/24
 --> bad.toml:6:6
  = at internet.host[web].ip
  |
6 | ip = "203.0.113.10"
  |      ^^^^^^^^^^^^^^
  = hint: choose an address inside 198.51.100.0/24, or set `cidr` in [internet]

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn private_host_is_refused() {
    let text = r##"[internet]
cidr = "10.0.0.0/8"

[[internet.host]]
name = "web"
ip = "10.0.0.10"
"##;
    assert_eq!(
        err(text),
        r##"error: host web's address 10.0.0.10 is a private (RFC 1918) address, not a public address
 --> bad.toml:6:6
  = at internet.host[web].ip
  |
6 | ip = "10.0.0.10"
  |      ^^^^^^^^^^^
  = hint: internet hosts need public addresses; set [internet] cidr to a documentation range like 198.51.100.0/24

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn vpc_prefix_out_of_range_is_refused() {
    let text = r##"[[vpc]]
name = "big"
cidr = "10.0.0.0/7"
"##;
    assert_eq!(
        err(text),
        r##"error: VPC CIDR 10.0.0.0/7 has prefix /7; a VPC's prefix must be between /8 and /28
 --> bad.toml:3:8
  = at vpc[big].cidr
  |
3 | cidr = "10.0.0.0/7"
  |        ^^^^^^^^^^^^
  = hint: choose a block from /8 (largest) to /28 (smallest), like "10.0.0.0/16"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn vpc_named_internet_is_refused() {
    let text = r##"[[vpc]]
name = "internet"
cidr = "10.0.0.0/16"
"##;
    assert_eq!(
        err(text),
        r##"error: a VPC cannot be named `internet`
 --> bad.toml:2:8
  = at vpc[internet].name
  |
2 | name = "internet"
  |        ^^^^^^^^^^
  = hint: `internet` names the public segment in probes (`internet/HOST`); choose another name

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn invalid_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant/a"
cidr = "10.0.0.0/16"
"##;
    assert_eq!(
        err(text),
        r##"error: `tenant/a` is not a valid VPC name
 --> bad.toml:2:8
  = at vpc[tenant/a].name
  |
2 | name = "tenant/a"
  |        ^^^^^^^^^^
  = hint: use 1 to 32 characters from A-Z, a-z, 0-9, `_`, `.` and `-` (no `/` or `:`)

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn too_long_name_is_refused() {
    let text = r##"[[vpc]]
name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
cidr = "10.0.0.0/16"
"##;
    assert_eq!(
        err(text),
        r##"error: `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa` is not a valid VPC name
 --> bad.toml:2:8
  = at vpc[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa].name
  |
2 | name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  |        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  = hint: use 1 to 32 characters from A-Z, a-z, 0-9, `_`, `.` and `-` (no `/` or `:`)

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn probe_from_unknown_instance_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[probe]]
from = "tenant-a/fn-a2"
to = "198.51.100.10:80/tcp"
expect = "allow"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown probe source `tenant-a/fn-a2`: VPC tenant-a has no instance named `fn-a2`
  --> bad.toml:14:8
   = at probe[0].from
   |
14 | from = "tenant-a/fn-a2"
   |        ^^^^^^^^^^^^^^^^
   = hint: did you mean `tenant-a/fn-a1`? name an endpoint as `VPC/INSTANCE` or `internet/HOST`

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn probe_from_without_scope_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[probe]]
name = "out"
from = "fn-a1"
to = "198.51.100.10:80/tcp"
expect = "allow"
"##;
    assert_eq!(
        err(text),
        r##"error: `fn-a1` is not a probe source
  --> bad.toml:11:8
   = at probe[out].from
   |
11 | from = "fn-a1"
   |        ^^^^^^^
   = hint: write `VPC/INSTANCE` or `internet/HOST`, like "tenant-a/fn-a1"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn probe_to_unknown_endpoint_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[probe]]
from = "tenant-a/fn-a1"
to = "internet/web:80/tcp"
expect = "allow"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown probe target `internet/web`: there is no internet host named `web`
  --> bad.toml:15:6
   = at probe[0].to
   |
15 | to = "internet/web:80/tcp"
   |      ^^^^^^^^^^^^^^^^^^^^^
   = hint: name an endpoint as `VPC/INSTANCE` or `internet/HOST` of this file

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_route_destination_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.route_table]]
name = "main"
routes = [
  { destination = "0.0.0.0/0", target = "internet" },
  { destination = "0.0.0.0/0", target = "blackhole" },
]
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate route for 0.0.0.0/0 in route table main
  --> bad.toml:13:19
   = at vpc[tenant-a].route_table[main].routes[1].destination
   |
13 |   { destination = "0.0.0.0/0", target = "blackhole" },
   |                   ^^^^^^^^^^^
   = hint: the first route for 0.0.0.0/0 is on line 12; keep one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn route_repeating_local_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.route_table]]
name = "main"
routes = [{ destination = "10.0.0.0/16", target = "blackhole" }]
"##;
    assert_eq!(
        err(text),
        r##"error: route for 10.0.0.0/16 repeats the implicit local route of VPC tenant-a
  --> bad.toml:11:27
   = at vpc[tenant-a].route_table[main].routes[0].destination
   |
11 | routes = [{ destination = "10.0.0.0/16", target = "blackhole" }]
   |                           ^^^^^^^^^^^^^
   = hint: every route table already sends the VPC CIDR 10.0.0.0/16 to `local`; remove this route

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn local_route_outside_vpc_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.route_table]]
name = "main"
routes = [{ destination = "0.0.0.0/0", target = "local" }]
"##;
    assert_eq!(
        err(text),
        r##"error: a `local` route for 0.0.0.0/0 points outside VPC tenant-a's CIDR 10.0.0.0/16
  --> bad.toml:11:49
   = at vpc[tenant-a].route_table[main].routes[0].target
   |
11 | routes = [{ destination = "0.0.0.0/0", target = "local" }]
   |                                                 ^^^^^^^
   = hint: `local` delivers inside the VPC only; send this destination to "internet", "nat:GATEWAY" or "blackhole"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn nat_gateway_subnet_must_exist() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "public"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown subnet `public` in VPC tenant-a
  --> bad.toml:11:10
   = at vpc[tenant-a].nat_gateway[gw].subnet
   |
11 | subnet = "public"
   |          ^^^^^^^^
   = hint: known subnets: functions; or define it with [[vpc.subnet]] in VPC tenant-a

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn dnat_instance_must_be_in_the_gateway_vpc() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]
dnat = [{ eip = "e", protocol = "tcp", port = 80, instance = "fn-b1" }]

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-b1"
subnet = "functions"

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: unknown instance `fn-b1` in VPC tenant-a
  --> bad.toml:13:62
   = at vpc[tenant-a].nat_gateway[gw].dnat[0].instance
   |
13 | dnat = [{ eip = "e", protocol = "tcp", port = 80, instance = "fn-b1" }]
   |                                                              ^^^^^^^
   = hint: there are no instances here; a DNAT entry forwards to an instance of the gateway's own VPC (tenant-a)

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn dnat_tcp_without_port_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]
dnat = [{ eip = "e", protocol = "tcp", instance = "fn-a1" }]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: missing key `port`: a tcp DNAT entry needs the EIP's external port
  --> bad.toml:13:9
   = at vpc[tenant-a].nat_gateway[gw].dnat[0].port
   |
13 | dnat = [{ eip = "e", protocol = "tcp", instance = "fn-a1" }]
   |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
   = hint: add `port = 80` (the EIP's port) to this entry; `instance_port` defaults to it

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn dnat_any_with_port_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]
dnat = [{ eip = "e", protocol = "any", port = 80, instance = "fn-a1" }]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: a DNAT entry with protocol "any" maps the whole address and takes no `port`
  --> bad.toml:13:47
   = at vpc[tenant-a].nat_gateway[gw].dnat[0].port
   |
13 | dnat = [{ eip = "e", protocol = "any", port = 80, instance = "fn-a1" }]
   |                                               ^^
   = hint: remove `port`, or set `protocol` to "tcp" or "udp"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn dnat_eip_not_owned_by_gateway_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]
dnat = [{ eip = "f", protocol = "tcp", port = 80, instance = "fn-a1" }]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[eip]]
name = "e"
address = "203.0.113.1"

[[eip]]
name = "f"
address = "203.0.113.2"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP f is not one of NAT gateway gw's EIPs
  --> bad.toml:13:17
   = at vpc[tenant-a].nat_gateway[gw].dnat[0].eip
   |
13 | dnat = [{ eip = "f", protocol = "tcp", port = 80, instance = "fn-a1" }]
   |                 ^^^
   = hint: add it to the gateway's `eips`, or use one of: e

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn duplicate_dnat_mapping_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]
dnat = [
  { eip = "e", protocol = "tcp", port = 80, instance = "fn-a1" },
  { eip = "e", protocol = "tcp", port = 80, instance = "fn-a1", instance_port = 8080 },
]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP e is already forwarded by the DNAT entry on line 14
  --> bad.toml:15:11
   = at vpc[tenant-a].nat_gateway[gw].dnat[1].eip
   |
15 |   { eip = "e", protocol = "tcp", port = 80, instance = "fn-a1", instance_port = 8080 },
   |           ^^^
   = hint: each EIP port (or a whole EIP with "any") forwards to one instance; remove one entry

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn snat_unknown_source_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]
snat = [{ source = "fn-z" }]

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: SNAT source `fn-z` is neither a CIDR nor an instance of VPC tenant-a
  --> bad.toml:13:20
   = at vpc[tenant-a].nat_gateway[gw].snat[0].source
   |
13 | snat = [{ source = "fn-z" }]
   |                    ^^^^^^
   = hint: there are no instances here; write a CIDR like "10.0.1.0/24" or the name of an instance of this VPC

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn snat_without_any_eip_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
snat = [{ source = "10.0.1.0/24" }]
"##;
    assert_eq!(
        err(text),
        r##"error: NAT gateway gw has no EIP to translate 10.0.1.0/24 to
  --> bad.toml:12:20
   = at vpc[tenant-a].nat_gateway[gw].snat[0].source
   |
12 | snat = [{ source = "10.0.1.0/24" }]
   |                    ^^^^^^^^^^^^^
   = hint: list the gateway's EIPs in its `eips`, or this entry's `eips`

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn mtu_out_of_range_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
mtu = 100
"##;
    assert_eq!(
        err(text),
        r##"error: MTU 100 is out of range
  --> bad.toml:12:7
   = at vpc[tenant-a].instance[fn-a1].mtu
   |
12 | mtu = 100
   |       ^^^
   = hint: use an MTU from 576 to 65520, or leave out `mtu` for 1500

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// The rule checks refuse only what they must: ports with tcp/udp, `icmp_type` with icmp,
/// `sg:NAME` peers, ACL rule numbers 1 and 32766, and unnamed probes that repeat each other.
#[test]
fn rules_that_fit_their_protocol_are_valid() {
    let p = ok(r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"
network_acl = "acl"

[[vpc.security_group]]
name = "web"
ingress = [
  { protocol = "tcp", ports = "80-81", peer = "0.0.0.0/0" },
  { protocol = "udp", ports = 53, peer = "sg:web" },
  { protocol = "icmp", icmp_type = 8, peer = "10.0.0.0/16" },
  { protocol = "all", peer = "sg:web" },
]

[[vpc.network_acl]]
name = "acl"
inbound = [
  { rule = 1, action = "allow", protocol = "tcp", ports = 80, cidr = "0.0.0.0/0" },
  { rule = 32766, action = "deny", protocol = "all", cidr = "0.0.0.0/0" },
]

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"
security_groups = ["web"]

[[probe]]
from = "tenant-a/fn-a1"
to = "10.0.1.2/icmp"
expect = "allow"

[[probe]]
from = "tenant-a/fn-a1"
to = "10.0.1.2/icmp"
expect = "allow"
"##);
    assert_eq!(p.vpcs[0].security_groups[0].ingress.len(), 4);
    assert_eq!(p.probes.len(), 2);
}

/// Security group `ports` only with tcp/udp (icmp has no ports).
#[test]
fn sg_ports_with_icmp_are_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.security_group]]
name = "web"
ingress = [{ protocol = "icmp", ports = 80, peer = "0.0.0.0/0" }]
"##;
    assert_eq!(
        err(text),
        r##"error: `ports` applies only to tcp and udp rules, not to protocol "icmp"
  --> bad.toml:11:41
   = at vpc[tenant-a].security_group[web].ingress[0].ports
   |
11 | ingress = [{ protocol = "icmp", ports = 80, peer = "0.0.0.0/0" }]
   |                                         ^^
   = hint: remove `ports` (use `icmp_type` to match one kind of ICMP message), or set `protocol` to "tcp" or "udp"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// Security group `ports` only with tcp/udp ("all" matches every port).
#[test]
fn sg_ports_with_all_are_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.security_group]]
name = "web"
egress = [{ protocol = "all", ports = "1000-2000", peer = "10.0.0.0/16" }]
"##;
    assert_eq!(
        err(text),
        r##"error: `ports` applies only to tcp and udp rules, not to protocol "all"
  --> bad.toml:11:39
   = at vpc[tenant-a].security_group[web].egress[0].ports
   |
11 | egress = [{ protocol = "all", ports = "1000-2000", peer = "10.0.0.0/16" }]
   |                                       ^^^^^^^^^^^
   = hint: remove `ports` ("all" matches every protocol and port), or set `protocol` to "tcp" or "udp"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// Security group `icmp_type` only with icmp.
#[test]
fn sg_icmp_type_without_icmp_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.security_group]]
name = "web"
ingress = [{ protocol = "tcp", ports = 443, icmp_type = 8, peer = "0.0.0.0/0" }]
"##;
    assert_eq!(
        err(text),
        r##"error: `icmp_type` applies only to icmp rules, not to protocol "tcp"
  --> bad.toml:11:57
   = at vpc[tenant-a].security_group[web].ingress[0].icmp_type
   |
11 | ingress = [{ protocol = "tcp", ports = 443, icmp_type = 8, peer = "0.0.0.0/0" }]
   |                                                         ^
   = hint: remove `icmp_type`, or set `protocol` to "icmp"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// Network ACL `ports` only with tcp/udp.
#[test]
fn acl_ports_with_icmp_are_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.network_acl]]
name = "acl"
outbound = [{ rule = 100, action = "allow", protocol = "icmp", ports = 80, cidr = "0.0.0.0/0" }]
"##;
    assert_eq!(
        err(text),
        r##"error: `ports` applies only to tcp and udp rules, not to protocol "icmp"
  --> bad.toml:11:72
   = at vpc[tenant-a].network_acl[acl].outbound[0].ports
   |
11 | outbound = [{ rule = 100, action = "allow", protocol = "icmp", ports = 80, cidr = "0.0.0.0/0" }]
   |                                                                        ^^
   = hint: remove `ports`, or set `protocol` to "tcp" or "udp"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// Network ACL rule numbers in AWS's range 1..=32766 (0 and 32767 are refused).
#[test]
fn aws_acl_rule_numbers_are_1_to_32766() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.network_acl]]
name = "acl"
inbound = [
  { rule = 0, action = "allow", protocol = "all", cidr = "0.0.0.0/0" },
  { rule = 32767, action = "deny", protocol = "all", cidr = "0.0.0.0/0" },
]
"##;
    assert_eq!(
        err(text),
        r##"error: network ACL rule number 0 is out of range
  --> bad.toml:12:12
   = at vpc[tenant-a].network_acl[acl].inbound[0].rule
   |
12 |   { rule = 0, action = "allow", protocol = "all", cidr = "0.0.0.0/0" },
   |            ^
   = hint: use a rule number from 1 to 32766 (as in AWS); lower numbers are evaluated first

error: network ACL rule number 32767 is out of range
  --> bad.toml:13:12
   = at vpc[tenant-a].network_acl[acl].inbound[1].rule
   |
13 |   { rule = 32767, action = "deny", protocol = "all", cidr = "0.0.0.0/0" },
   |            ^^^^^
   = hint: use a rule number from 1 to 32766 (as in AWS); lower numbers are evaluated first

error: bad.toml: 2 problems, nothing was loaded
"##
    );
}

/// Probe names, when given, are unique (they label `vpcd test`'s rows).
#[test]
fn duplicate_probe_name_is_refused() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[probe]]
name = "ping"
from = "tenant-a/fn-a1"
to = "10.0.1.2/icmp"
expect = "allow"

[[probe]]
name = "ping"
from = "tenant-a/fn-a1"
to = "198.51.100.10/icmp"
expect = "deny"
"##;
    assert_eq!(
        err(text),
        r##"error: duplicate probe name `ping`
  --> bad.toml:20:8
   = at probe[ping].name
   |
20 | name = "ping"
   |        ^^^^^^
   = hint: the first probe named `ping` is on line 14; rename one of them

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// A DNAT entry written as [[vpc.nat_gateway.dnat]] without `port`: the error points at its header.
#[test]
fn dnat_without_port_points_at_the_entry_header() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.nat_gateway]]
name = "gw"
subnet = "functions"
eips = ["e"]

[[vpc.nat_gateway.dnat]]
eip = "e"
protocol = "udp"
instance = "fn-a1"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[eip]]
name = "e"
address = "203.0.113.1"
"##;
    assert_eq!(
        err(text),
        r##"error: missing key `port`: a udp DNAT entry needs the EIP's external port
  --> bad.toml:14:1
   = at vpc[tenant-a].nat_gateway[gw].dnat[0].port
   |
14 | [[vpc.nat_gateway.dnat]]
   | ^^^^^^^^^^^^^^^^^^^^^^^^
   = hint: add `port = 80` (the EIP's port) to this entry; `instance_port` defaults to it

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// Internet hosts in reserved (non-RFC 1918) ranges are refused too: here RFC 6598 shared space.
#[test]
fn reserved_host_is_refused() {
    let text = r##"[internet]
cidr = "100.64.0.0/16"

[[internet.host]]
name = "web"
ip = "100.64.0.10"
"##;
    assert_eq!(
        err(text),
        r##"error: host web's address 100.64.0.10 is a shared (carrier-grade NAT, RFC 6598) address, not a public address
 --> bad.toml:6:6
  = at internet.host[web].ip
  |
6 | ip = "100.64.0.10"
  |      ^^^^^^^^^^^^^
  = hint: internet hosts need public addresses; set [internet] cidr to a documentation range like 198.51.100.0/24

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.1.0.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "nope"

[[eip]]
name = "e"
address = "10.0.0.5"
"##;
    assert_eq!(
        err(text),
        r##"error: subnet 10.1.0.0/24 is outside its VPC's CIDR 10.0.0.0/16
 --> bad.toml:7:8
  = at vpc[tenant-a].subnet[functions].cidr
  |
7 | cidr = "10.1.0.0/24"
  |        ^^^^^^^^^^^^^
  = hint: choose a subnet CIDR inside 10.0.0.0/16, or widen the VPC's cidr

error: unknown subnet `nope` in VPC tenant-a
  --> bad.toml:11:10
   = at vpc[tenant-a].instance[fn-a1].subnet
   |
11 | subnet = "nope"
   |          ^^^^^^
   = hint: known subnets: functions; or define it with [[vpc.subnet]] in VPC tenant-a

error: EIP e's address 10.0.0.5 is inside VPC tenant-a's CIDR 10.0.0.0/16
  --> bad.toml:15:11
   = at eip[e].address
   |
15 | address = "10.0.0.5"
   |           ^^^^^^^^^^
   = hint: an EIP is a public address; in tests use the documentation ranges 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24

error: bad.toml: 3 problems, nothing was loaded
"##
    );
}

// ---- through the binary --------------------------------------------------------------------

/// Runs `vpcd check` on `text` written to a file named `name` in a fresh temporary directory.
fn check_cli(name: &str, text: &str) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("vpcd-validation-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .current_dir(&dir)
        .args(["check", name])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_cli_prints_every_diagnostic_and_exits_2() {
    let text = "[[vpc]]\nname = \"tenant-a\"\ncidr = \"10.0.0.0/16\"\n\n[[vpc.subnet]]\nname = \"functions\"\ncidr = \"10.1.0.0/24\"\n\n[[vpc.subnet]]\nname = \"functions\"\ncidr = \"10.0.2.0/24\"\n";
    let (code, stdout, stderr) = check_cli("bad.toml", text);
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        r#"error: subnet 10.1.0.0/24 is outside its VPC's CIDR 10.0.0.0/16
 --> bad.toml:7:8
  = at vpc[tenant-a].subnet[functions].cidr
  |
7 | cidr = "10.1.0.0/24"
  |        ^^^^^^^^^^^^^
  = hint: choose a subnet CIDR inside 10.0.0.0/16, or widen the VPC's cidr

error: duplicate subnet name `functions` in VPC tenant-a
  --> bad.toml:10:8
   = at vpc[tenant-a].subnet[functions].name
   |
10 | name = "functions"
   |        ^^^^^^^^^^^
   = hint: the first subnet named `functions` is on line 6; rename one of them

error: bad.toml: 2 problems, nothing was loaded
"#
    );
}

#[test]
fn check_cli_refuses_a_syntax_error_with_exit_2() {
    let (code, _, stderr) = check_cli("syntax.toml", "[[vpc]\n");
    assert_eq!(code, 2);
    assert!(stderr.starts_with("error: invalid TOML: "), "{stderr}");
    assert!(stderr.contains(" --> syntax.toml:1:"), "{stderr}");
}

#[test]
fn check_cli_refuses_an_unreadable_file_with_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(["check", "/nonexistent/vpcd/topology.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot read /nonexistent/vpcd/topology.toml: "),
        "{stderr}"
    );
}

#[test]
fn check_cli_prints_the_addressing_plan_and_exits_0() {
    let (code, stdout, stderr) = check_cli("good.toml", TWO_TENANTS);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(stdout.starts_with(
        "good.toml: valid; 2 VPC(s), 3 EIP(s), 1 internet host(s), 2 probe(s)\n\nvpc tenant-a  10.0.0.0/16\n"
    ), "{stdout}");
    for line in [
        "  functions  10.0.1.0/24  10.0.1.1  private      -",
        "    0.0.0.0/0    ->  nat:egress",
        "  fn-a1     functions  10.0.1.3  netns   1500  -",
        "  egress       public  10.0.0.3  nat-a (203.0.113.10)  2     1",
        "  resolver 10.0.0.2, 169.254.169.253  tenant-a.vpc.internal  private zones: -  DNS Firewall rules: 0",
        "  direct  203.0.113.11  instance tenant-a/fn-a3",
        "internet  198.51.100.0/24",
        "probes: 2",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    // The probes, one row each, with their tags (`-` for none).
    let probes = stdout.split("probes: 2\n").nth(1).unwrap_or_default();
    let rows: Vec<&str> = probes.lines().collect();
    assert_eq!(rows.len(), 3, "{probes}");
    assert!(
        rows[0].starts_with("  probe ") && rows[0].ends_with("expect  tags"),
        "{probes}"
    );
    assert!(
        rows[2].starts_with("  no cross-tenant ") && rows[2].ends_with("deny    -"),
        "{probes}"
    );
}

#[test]
fn nat_gateway_profile_and_overrides_reach_the_plan() {
    let text = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["e"]
  profile = "gcp"
  filtering = "endpoint-independent"
  port_range = "2000-2999"
  max_connections = 5000
  on_refuse = "icmp"
  timeouts = { udp = 45 }
[[eip]]
name = "e"
address = "203.0.113.10"
"#;
    let plan = vpcd::topology::parse("nat.toml", text).expect("valid");
    let c = &plan.vpcs[0].nat_gateways[0].config;
    use vpcd::dataplane::nat::config::{Filtering, Profile};
    assert_eq!(c.profile, Profile::Gcp);
    assert_eq!(c.filtering, Filtering::EndpointIndependent);
    assert_eq!(c.port_range, (2000, 2999));
    assert_eq!(c.max_entries, 5000);
    assert!(c.icmp_prohibited_on_full);
    assert_eq!(c.timeouts.udp.as_secs(), 45);
    assert_eq!(
        c.timeouts.tcp_established.as_secs(),
        1200,
        "the rest comes from the gcp profile"
    );
}

#[test]
fn nat_gateway_zero_timeout_is_refused() {
    let text = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  timeouts = { icmp = 0 }
"#;
    let err = vpcd::topology::parse("nat.toml", text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a timeout of 0 seconds would expire every flow at once"),
        "{err}"
    );
    assert!(
        err.contains("vpc[a].nat_gateway[egress].timeouts.icmp"),
        "{err}"
    );
    assert!(err.contains("nat.toml:11:"), "{err}");
}

#[test]
fn nat_gateway_port_block_larger_than_range_is_refused() {
    let text = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  port_range = "2000-2009"
  ports_per_instance = 64
"#;
    let err = vpcd::topology::parse("nat.toml", text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("NAT gateway settings are inconsistent: ports_per_instance must be between 1 and the size of port_range"), "{err}");
}

// ---- the public uplink (issue 7): host_bind, host_listen, egress_allow -------------------------

/// A function behind a NAT gateway (DNAT 203.0.113.10:80 -> f1:8080) and one with a 1:1 EIP, with
/// `[internet]` appended by each test.
const UPLINK_BASE: &str = r#"[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
egress_allow = ["192.0.2.0/24:443", "198.51.100.7", "192.0.2.0/24:8000-8099"]
subnet = [
  { name = "fn", cidr = "10.0.1.0/24" },
  { name = "public", cidr = "10.0.9.0/24" },
]
instance = [
  { name = "f1", subnet = "fn", ip = "10.0.1.10" },
  { name = "e1", subnet = "public", ip = "10.0.9.20", eip = "direct" },
]

[[vpc.nat_gateway]]
name = "egress"
subnet = "public"
eips = ["gw"]
dnat = [{ eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080, host_listen = "192.0.2.1:8080" }]

[[eip]]
name = "gw"
address = "203.0.113.10"
host_bind = "192.0.2.10"

[[eip]]
name = "direct"
address = "203.0.113.20"
host_listen = ["192.0.2.1:9000", "192.0.2.1:9001"]
"#;

#[test]
fn uplink_plan_has_its_address_binds_listeners_and_the_allow_list() {
    let p = ok(&format!("{UPLINK_BASE}\n[internet]\nuplink = \"host\"\n"));
    let up = p.internet.uplink.as_ref().expect("uplink on");
    assert_eq!(up.address, ip("198.51.100.1"));
    let listen: Vec<String> = up
        .listen
        .iter()
        .map(|l| format!("{} -> {}", l.host, l.target))
        .collect();
    assert_eq!(
        listen,
        [
            "192.0.2.1:9000 -> 203.0.113.20:9000",
            "192.0.2.1:9001 -> 203.0.113.20:9001",
            "192.0.2.1:8080 -> 203.0.113.10:80",
        ]
    );
    assert_eq!(p.host_binds(), [(ip("203.0.113.10"), ip("192.0.2.10"))]);
    let allow: Vec<String> = p.vpcs[0]
        .egress_allow
        .as_ref()
        .expect("a list")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        allow,
        [
            "192.0.2.0/24:443",
            "198.51.100.7/32",
            "192.0.2.0/24:8000-8099"
        ]
    );
    // Off by default; `uplink = "off"` says so explicitly.
    let off = ok("[internet]\nuplink = \"off\"\n");
    assert_eq!(off.internet.uplink, None);
    assert_eq!(
        ok("[[vpc]]\nname = \"a\"\ncidr = \"10.0.0.0/16\"\n").vpcs[0].egress_allow,
        None
    );
}

#[test]
fn uplink_keys_round_trip_through_the_model() {
    let text = format!("{UPLINK_BASE}\n[internet]\nuplink = \"host\"\n");
    let (model, plan) = vpcd::topology::parse_model("good.toml", &text).expect("valid");
    let again = toml::to_string(&model).expect("serializes");
    let (model2, plan2) = vpcd::topology::parse_model("again.toml", &again).expect("valid again");
    assert_eq!(model, model2);
    assert_eq!(plan, plan2);
    assert!(again.contains("host_bind = \"192.0.2.10\""), "{again}");
    assert!(again.contains("uplink = \"host\""), "{again}");
}

#[test]
fn host_bind_and_host_listen_need_the_uplink() {
    assert_eq!(
        err(UPLINK_BASE),
        r##"error: this DNAT entry has `host_listen`, but the public segment has no uplink
  --> bad.toml:18:105
   = at vpc[a].nat_gateway[egress].dnat[0].host_listen
   |
18 | dnat = [{ eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080, host_listen = "192.0.2.1:8080" }]
   |                                                                                                         ^^^^^^^^^^^^^^^^
   = hint: set `uplink = "host"` in [internet], or remove this key

error: EIP gw has `host_bind`, but the public segment has no uplink
  --> bad.toml:23:13
   = at eip[gw].host_bind
   |
23 | host_bind = "192.0.2.10"
   |             ^^^^^^^^^^^^
   = hint: set `uplink = "host"` in [internet], or remove this key

error: EIP direct has `host_listen`, but the public segment has no uplink
  --> bad.toml:28:16
   = at eip[direct].host_listen[0]
   |
28 | host_listen = ["192.0.2.1:9000", "192.0.2.1:9001"]
   |                ^^^^^^^^^^^^^^^^
   = hint: set `uplink = "host"` in [internet], or remove this key

error: EIP direct has `host_listen`, but the public segment has no uplink
  --> bad.toml:28:34
   = at eip[direct].host_listen[1]
   |
28 | host_listen = ["192.0.2.1:9000", "192.0.2.1:9001"]
   |                                  ^^^^^^^^^^^^^^^^
   = hint: set `uplink = "host"` in [internet], or remove this key

error: bad.toml: 4 problems, nothing was loaded
"##
    );
}

#[test]
fn uplink_single_host_listen_string_needs_the_uplink_too() {
    let text = r##"[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
subnet = [{ name = "s", cidr = "10.0.1.0/24" }]
instance = [{ name = "e", subnet = "s", eip = "d" }]

[[eip]]
name = "d"
address = "203.0.113.20"
host_listen = "192.0.2.1:80"
"##;
    assert_eq!(
        err(text),
        r##"error: EIP d has `host_listen`, but the public segment has no uplink
  --> bad.toml:10:15
   = at eip[d].host_listen
   |
10 | host_listen = "192.0.2.1:80"
   |               ^^^^^^^^^^^^^^
   = hint: set `uplink = "host"` in [internet], or remove this key

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn host_bind_must_be_an_address() {
    let text = r##"[[eip]]
name = "d"
address = "203.0.113.20"
host_bind = "192.0.2"

[internet]
uplink = "host"
"##;
    assert_eq!(
        err(text),
        r##"error: `192.0.2` is not an IPv4 address
 --> bad.toml:4:13
  = at eip[d].host_bind
  |
4 | host_bind = "192.0.2"
  |             ^^^^^^^^^
  = hint: write it like "10.0.1.10"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn host_bind_must_be_a_unicast_address() {
    let text = r##"[[eip]]
name = "d"
address = "203.0.113.20"
host_bind = "0.0.0.0"

[internet]
uplink = "host"
"##;
    assert_eq!(
        err(text),
        r##"error: host_bind 0.0.0.0 is not a unicast address
 --> bad.toml:4:13
  = at eip[d].host_bind
  |
4 | host_bind = "0.0.0.0"
  |             ^^^^^^^^^
  = hint: give an address of an interface of the host vpcd runs on

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn host_listen_port_0_is_refused() {
    let text = r##"[[eip]]
name = "d"
address = "203.0.113.20"
host_listen = "192.0.2.1:0"

[internet]
uplink = "host"
"##;
    assert_eq!(
        err(text),
        r##"error: `192.0.2.1:0`: port 0 is not a valid port to listen on
 --> bad.toml:4:15
  = at eip[d].host_listen
  |
4 | host_listen = "192.0.2.1:0"
  |               ^^^^^^^^^^^^^
  = hint: use a port from 1 to 65535

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn host_listen_must_be_an_address_and_port() {
    let text = r##"[[eip]]
name = "d"
address = "203.0.113.20"
host_listen = ["localhost:80"]

[internet]
uplink = "host"
"##;
    assert_eq!(
        err(text),
        r##"error: `localhost:80` is not a host address and port
 --> bad.toml:4:15
  = at eip[d].host_listen
  |
4 | host_listen = ["localhost:80"]
  |               ^^^^^^^^^^^^^^^^
  = hint: write it like "192.0.2.1:8080"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn uplink_takes_off_or_host() {
    let text = r##"[internet]
uplink = "on"
"##;
    assert_eq!(
        err(text),
        r##"error: `on` is not allowed here
 --> bad.toml:2:10
  = at internet.uplink
  |
2 | uplink = "on"
  |          ^^^^
  = hint: write one of: off, host

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn host_listeners_clash_tcp_only_and_one_to_one_eips_only() {
    let text = r##"[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
subnet = [{ name = "s", cidr = "10.0.1.0/24" }]
instance = [{ name = "e", subnet = "s", eip = "d" }, { name = "f", subnet = "s" }]
nat_gateway = [{ name = "g", subnet = "s", eips = ["n"], dnat = [
  { eip = "n", protocol = "tcp", port = 80, instance = "f", host_listen = "192.0.2.1:8080" },
  { eip = "n", protocol = "udp", port = 53, instance = "f", host_listen = "192.0.2.1:53" },
] }]

[[eip]]
name = "d"
address = "203.0.113.20"
host_listen = ["0.0.0.0:8080", "192.0.2.1:8081"]

[[eip]]
name = "n"
address = "203.0.113.30"
host_listen = "192.0.2.1:9000"

[internet]
uplink = "host"
"##;
    assert_eq!(
        err(text),
        r##"error: host_listen 192.0.2.1:8080 clashes with 0.0.0.0:8080 of EIP d (line 14)
 --> bad.toml:7:75
  = at vpc[a].nat_gateway[g].dnat[0].host_listen
  |
7 |   { eip = "n", protocol = "tcp", port = 80, instance = "f", host_listen = "192.0.2.1:8080" },
  |                                                                           ^^^^^^^^^^^^^^^^
  = hint: every host listener needs its own address and port (0.0.0.0 and [::] take the port on every address)

error: host_listen accepts TCP connections, and this DNAT entry forwards protocol "udp"
 --> bad.toml:8:75
  = at vpc[a].nat_gateway[g].dnat[1].host_listen
  |
8 |   { eip = "n", protocol = "udp", port = 53, instance = "f", host_listen = "192.0.2.1:53" },
  |                                                                           ^^^^^^^^^^^^^^
  = hint: set `protocol = "tcp"` (with a `port`), or remove `host_listen`

error: EIP n has `host_listen`, but it is not the 1:1 EIP of an instance
  --> bad.toml:19:15
   = at eip[n].host_listen
   |
19 | host_listen = "192.0.2.1:9000"
   |               ^^^^^^^^^^^^^^^^
   = hint: associate it with an instance (`eip = "NAME"` on the instance); for an EIP of a NAT gateway, put `host_listen` on its DNAT entries

error: bad.toml: 3 problems, nothing was loaded
"##
    );
}

#[test]
fn egress_allow_port_0_is_refused() {
    let text = r##"[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
egress_allow = ["192.0.2.0/24:0"]
"##;
    assert_eq!(
        err(text),
        r##"error: `192.0.2.0/24:0`: `0` is not a port or port range
 --> bad.toml:4:16
  = at vpc[a].egress_allow
  |
4 | egress_allow = ["192.0.2.0/24:0"]
  |                ^^^^^^^^^^^^^^^^^^
  = hint: write a port from 1 to 65535 ("443") or a range ("8000-8099")

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn egress_allow_cidr_with_host_bits_suggests_the_block() {
    let text = r##"[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
egress_allow = ["192.0.2.9/24:443"]
"##;
    assert_eq!(
        err(text),
        r##"error: `192.0.2.9/24` has host bits set (in egress rule `192.0.2.9/24:443`)
 --> bad.toml:4:16
  = at vpc[a].egress_allow
  |
4 | egress_allow = ["192.0.2.9/24:443"]
  |                ^^^^^^^^^^^^^^^^^^^^
  = hint: did you mean "192.0.2.0/24"?

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn egress_allow_needs_an_address_block() {
    let text = r##"[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
egress_allow = ["example.com:443"]
"##;
    assert_eq!(
        err(text),
        r##"error: `example.com:443` is not an egress rule
 --> bad.toml:4:16
  = at vpc[a].egress_allow
  |
4 | egress_allow = ["example.com:443"]
  |                ^^^^^^^^^^^^^^^^^^^
  = hint: write "192.0.2.0/24:443", "192.0.2.0/24:8000-8099" or "192.0.2.0/24"

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn the_uplink_address_is_taken() {
    let text = r##"[[eip]]
name = "d"
address = "198.51.100.1"

[internet]
uplink = "host"
host = [{ name = "h", ip = "198.51.100.1" }]
"##;
    assert_eq!(
        err(text),
        r##"error: EIP d's address 198.51.100.1 is the uplink's address on the public segment
 --> bad.toml:3:11
  = at eip[d].address
  |
3 | address = "198.51.100.1"
  |           ^^^^^^^^^^^^^^
  = hint: with `uplink = "host"` the first address of the internet CIDR (198.51.100.1) is the uplink's; choose another address

error: address 198.51.100.1 is already used by EIP d (line 3) on the public segment
 --> bad.toml:7:28
  = at internet.host[h].ip
  |
7 | host = [{ name = "h", ip = "198.51.100.1" }]
  |                            ^^^^^^^^^^^^^^
  = hint: every internet host and EIP needs its own address

error: host h's address 198.51.100.1 is the uplink's address on the public segment
 --> bad.toml:7:28
  = at internet.host[h].ip
  |
7 | host = [{ name = "h", ip = "198.51.100.1" }]
  |                            ^^^^^^^^^^^^^^
  = hint: with `uplink = "host"` the first address of the internet CIDR (198.51.100.1) is the uplink's; choose another address

error: bad.toml: 3 problems, nothing was loaded
"##
    );
}

#[test]
fn a_per_source_rate_of_zero_is_refused() {
    let text = TWO_TENANTS.replace(
        "eips = [\"nat-a\"]\n",
        "eips = [\"nat-a\"]\nnew_connections_per_second_per_source = 0\n",
    );
    let e = err(&text);
    assert!(
        e.contains(
            "NAT gateway settings are inconsistent: new_connections_per_second_per_source must be at least 1"
        ),
        "{e}"
    );
    let ok_text = TWO_TENANTS.replace(
        "eips = [\"nat-a\"]\n",
        "eips = [\"nat-a\"]\nnew_connections_per_second_per_source = 200\n",
    );
    ok(&ok_text);
}

#[test]
fn a_half_open_budget_of_zero_is_refused() {
    let text = TWO_TENANTS.replace(
        "eips = [\"nat-a\"]\n",
        "eips = [\"nat-a\"]\nhalf_open_connections_per_source = 0\n",
    );
    let e = err(&text);
    assert!(
        e.contains(
            "NAT gateway settings are inconsistent: half_open_connections_per_source must be at least 1"
        ),
        "{e}"
    );
    ok(&TWO_TENANTS.replace(
        "eips = [\"nat-a\"]\n",
        "eips = [\"nat-a\"]\nhalf_open_connections_per_source = 64\n",
    ));
}

// ---------------------------------------------------------------------------------------------
// DNS: the resolver's address, zones, records, hosts' DNS names.

const ONE_VPC: &str = r#"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.0.0/24" }]
instance = [{ name = "web", subnet = "app" }]
"#;

#[test]
fn the_resolver_address_is_never_handed_out() {
    let p = ok(ONE_VPC);
    assert_eq!(p.vpcs[0].instances[0].ip, ip("10.0.0.3"));
}

#[test]
fn an_instance_may_not_sit_at_the_resolver_address() {
    let text = ONE_VPC.replace(
        r#"subnet = "app" }"#,
        r#"subnet = "app", ip = "10.0.0.2" }"#,
    );
    assert_eq!(
        err(&text),
        r##"error: address 10.0.0.2 is VPC tenant-a's resolver (the VPC CIDR's base + 2)
 --> bad.toml:5:50
  = at vpc[tenant-a].instance[web].ip
  |
5 | instance = [{ name = "web", subnet = "app", ip = "10.0.0.2" }]
  |                                                  ^^^^^^^^^^
  = hint: the resolver answers DNS at that address; choose another address, or leave out `ip` to get a free one

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

#[test]
fn zones_resolve_to_fully_qualified_records() {
    let text = format!(
        r#"{ONE_VPC}
[[zone]]
name = "corp.example"
vpcs = ["tenant-a"]
record = [
    {{ name = "db", type = "A", value = "10.0.0.20" }},
    {{ name = "@", type = "MX", value = "10 mail.corp.example", ttl = 60 }},
    {{ name = "_pg._tcp", type = "SRV", value = "1 1 5432 db.corp.example." }},
]

[internet]
host = [{{ name = "api", ip = "198.51.100.10", dns_names = ["api.example.com"] }}]
zone = [{{ name = "example.com", record = [{{ name = "www", type = "CNAME", value = "api.example.com" }}] }}]
"#
    );
    let p = ok(&text);
    assert_eq!(p.zones.len(), 1);
    assert_eq!(p.zones[0].vpcs, vec![0]);
    let names: Vec<String> = p.zones[0]
        .records
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "db.corp.example.",
            "corp.example.",
            "_pg._tcp.corp.example."
        ]
    );
    assert_eq!(
        p.zones[0].records.iter().map(|r| r.ttl).collect::<Vec<_>>(),
        [300, 60, 300]
    );
    assert!(p.internet.zones[0].vpcs.is_empty());
    assert_eq!(
        p.internet.hosts[0].dns_names[0].to_string(),
        "api.example.com."
    );
}

#[test]
fn zone_errors_are_located() {
    let text = format!(
        r#"{ONE_VPC}
[[zone]]
name = "corp.example"
vpcs = ["tenant-b"]
record = [
    {{ name = "db", type = "A", value = "10.0.0" }},
    {{ name = "db.", type = "A", value = "10.0.0.20" }},
    {{ name = "www", type = "CNAME", value = "db.corp.example" }},
    {{ name = "www", type = "TXT", value = "x" }},
    {{ name = "t", type = "TXT", value = "x", ttl = 4294967295 }},
]

[[zone]]
name = "x.vpc.internal"
vpcs = ["tenant-a"]

[[zone]]
name = "nobody.example"
"#
    );
    assert_eq!(
        err(&text),
        r##"error: unknown VPC `tenant-b`
 --> bad.toml:9:9
  = at zone[corp.example].vpcs[0]
  |
9 | vpcs = ["tenant-b"]
  |         ^^^^^^^^^^
  = hint: did you mean `tenant-a`? known VPCs: tenant-a

error: `10.0.0` is not an IPv4 address; write it like "10.0.1.20"
  --> bad.toml:11:40
   = at zone[corp.example].record[0].value
   |
11 |     { name = "db", type = "A", value = "10.0.0" },
   |                                        ^^^^^^^^
   = hint: give a A value (see topologies/README.md, "DNS")

error: record name `db.` is absolute
  --> bad.toml:12:14
   = at zone[corp.example].record[1].name
   |
12 |     { name = "db.", type = "A", value = "10.0.0.20" },
   |              ^^^^^
   = hint: write the name relative to the zone (`db` for db.corp.example), or `@` for the apex

error: `www.corp.example.` has a CNAME and another record (zone[corp.example].record[2], line 13)
  --> bad.toml:14:14
   = at zone[corp.example].record[3].name
   |
14 |     { name = "www", type = "TXT", value = "x" },
   |              ^^^^^
   = hint: a CNAME must be the only record at its name (RFC 1034); rename one of them

error: TTL 4294967295 is too large
  --> bad.toml:15:52
   = at zone[corp.example].record[4].ttl
   |
15 |     { name = "t", type = "TXT", value = "x", ttl = 4294967295 },
   |                                                    ^^^^^^^^^^
   = hint: a TTL is at most 2147483647 seconds (RFC 2181)

error: zone `x.vpc.internal.` is inside `vpc.internal`, which vpcd's resolver answers itself
  --> bad.toml:19:8
   = at zone[x.vpc.internal].name
   |
19 | name = "x.vpc.internal"
   |        ^^^^^^^^^^^^^^^^
   = hint: choose a zone outside vpc.internal and in-addr.arpa, like "corp.example"

error: private zone `nobody.example` names no VPC
  --> bad.toml:23:8
   = at zone[nobody.example].name
   |
23 | name = "nobody.example"
   |        ^^^^^^^^^^^^^^^^
   = hint: add `vpcs = ["VPC"]` with the VPCs whose resolvers answer it, or declare it as [[internet.zone]] to make it public

error: bad.toml: 7 problems, nothing was loaded
"##
    );
}

#[test]
fn public_zones_take_no_vpcs_and_host_names_are_unique() {
    let text = format!(
        r#"{ONE_VPC}
[internet]
host = [
    {{ name = "a", ip = "198.51.100.10", dns_names = ["api.example.com"] }},
    {{ name = "b", ip = "198.51.100.11", dns_names = ["API.example.com", "bad name"] }},
]
zone = [{{ name = "example.com", vpcs = ["tenant-a"] }}, {{ name = "example.com" }}]
"#
    );
    assert_eq!(
        err(&text),
        r##"error: DNS name `API.example.com.` is already host a's (line 9)
  --> bad.toml:10:54
   = at internet.host[b].dns_names[0]
   |
10 |     { name = "b", ip = "198.51.100.11", dns_names = ["API.example.com", "bad name"] },
   |                                                      ^^^^^^^^^^^^^^^^^
   = hint: a name belongs to one host; use a zone with several A records for more

error: DNS name `bad name` contains ` `; a label holds letters, digits, `-` and `_`
  --> bad.toml:10:73
   = at internet.host[b].dns_names[1]
   |
10 |     { name = "b", ip = "198.51.100.11", dns_names = ["API.example.com", "bad name"] },
   |                                                                         ^^^^^^^^^^
   = hint: write a domain like "api.example.com"

error: a public zone (in [internet]) is answered in every VPC and takes no `vpcs`
  --> bad.toml:12:41
   = at internet.zone[example.com].vpcs
   |
12 | zone = [{ name = "example.com", vpcs = ["tenant-a"] }, { name = "example.com" }]
   |                                         ^^^^^^^^^^
   = hint: remove `vpcs`, or move the zone to a top-level [[zone]] to make it private

error: zone `example.com.` is declared twice for the internet (first on line 12)
  --> bad.toml:12:65
   = at internet.zone[example.com].name
   |
12 | zone = [{ name = "example.com", vpcs = ["tenant-a"] }, { name = "example.com" }]
   |                                                                 ^^^^^^^^^^^^^
   = hint: a resolver sees one zone per name; merge the two zones' records

error: bad.toml: 4 problems, nothing was loaded
"##
    );
}

#[test]
fn resolvers_need_the_uplink_and_parse() {
    let text = r#"[internet]
resolvers = ["192.0.2.53"]
"#;
    assert_eq!(
        err(text),
        r##"error: `resolvers` forward through the uplink, but the public segment has no uplink
 --> bad.toml:2:14
  = at internet.resolvers
  |
2 | resolvers = ["192.0.2.53"]
  |              ^^^^^^^^^^^^
  = hint: set `uplink = "host"` in [internet], or remove this key

error: bad.toml: 1 problem, nothing was loaded
"##
    );
    let p = ok(r#"[internet]
uplink = "host"
resolvers = ["host", "192.0.2.53", "192.0.2.54:5353"]
"#);
    let r: Vec<String> = p
        .internet
        .uplink
        .unwrap()
        .resolvers
        .iter()
        .map(|u| u.to_string())
        .collect();
    assert_eq!(r, ["host", "192.0.2.53", "192.0.2.54:5353"]);
    let e = err(r#"[internet]
uplink = "host"
resolvers = ["192.0.2"]
"#);
    assert!(e.contains("error: `192.0.2` is not a resolver\n"), "{e}");
    assert!(
        e.contains("= hint: write \"host\" (the host's /etc/resolv.conf)"),
        "{e}"
    );
}

#[test]
fn dns_firewall_rules_resolve_per_vpc_in_file_order() {
    let text = format!(
        r#"{ONE_VPC}
[[dns_firewall]]
name = "ok"
vpcs = ["tenant-a"]
domains = ["good.bad.example"]
action = "allow"

[[dns_firewall]]
name = "walled"
vpcs = ["tenant-a"]
domains = ["*.bad.example", "bad.example"]
action = "block"
block_response = "override"
block_override = "walled.example"
block_override_ttl = 30
"#
    );
    let p = ok(&text);
    let names: Vec<&str> = p.vpcs[0]
        .dns_firewall
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["ok", "walled"]);
}

#[test]
fn dns_firewall_errors_are_located() {
    let text = format!(
        r#"{ONE_VPC}
[[dns_firewall]]
name = "a"
vpcs = ["tenant-x"]
domains = ["bad..example"]
action = "alert"
block_response = "nodata"

[[dns_firewall]]
name = "b"
vpcs = ["tenant-a"]
domains = ["x.example"]
action = "block"
block_response = "override"
"#
    );
    assert_eq!(
        err(&text),
        r##"error: unknown VPC `tenant-x`
 --> bad.toml:9:9
  = at dns_firewall[a].vpcs[0]
  |
9 | vpcs = ["tenant-x"]
  |         ^^^^^^^^^^
  = hint: did you mean `tenant-a`? known VPCs: tenant-a

error: DNS Firewall domain `bad..example` has an empty label; write labels separated by single dots
  --> bad.toml:10:12
   = at dns_firewall[a].domains[0]
   |
10 | domains = ["bad..example"]
   |            ^^^^^^^^^^^^^^
   = hint: write "bad.example" for that name or "*.bad.example" for every name below it

error: `block_response` is only for `action = "block"`
  --> bad.toml:12:18
   = at dns_firewall[a].block_response
   |
12 | block_response = "nodata"
   |                  ^^^^^^^^
   = hint: remove it, or set `action = "block"`

error: DNS Firewall rule `b` overrides but names no target
  --> bad.toml:15:8
   = at dns_firewall[b].block_override
   |
15 | name = "b"
   |        ^^^
   = hint: add `block_override = "walled-garden.example"` (answered as a CNAME)

error: bad.toml: 4 problems, nothing was loaded
"##
    );
}

#[test]
fn dns_domain_lists_give_their_domains_to_the_rules_naming_them() {
    let text = format!(
        r#"{ONE_VPC}
[[dns_domain_list]]
name = "malware"
domains = ["bad.example", "*.bad.example"]

[[dns_domain_list]]
name = "empty"

[[dns_firewall]]
name = "no-malware"
vpcs = ["tenant-a"]
domain_list = "malware"
action = "block"

[[dns_firewall]]
name = "nothing"
vpcs = ["tenant-a"]
domain_list = "empty"
action = "alert"
"#
    );
    let p = ok(&text);
    let rules: Vec<(&str, usize)> = p.vpcs[0]
        .dns_firewall
        .iter()
        .map(|r| (r.name.as_str(), r.domains.len()))
        .collect();
    assert_eq!(rules, [("no-malware", 2), ("nothing", 0)]);
}

#[test]
fn dns_domain_list_errors_are_located() {
    let text = format!(
        r#"{ONE_VPC}
[[dns_domain_list]]
name = "malware"
domains = ["bad..example"]

[[dns_domain_list]]
name = "malware"

[[dns_firewall]]
name = "a"
vpcs = ["tenant-a"]
domain_list = "malwar"
action = "block"

[[dns_firewall]]
name = "b"
vpcs = ["tenant-a"]
domains = ["x.example"]
domain_list = "malware"
action = "block"
"#
    );
    let e = err(&text);
    for want in [
        "error: DNS Firewall domain `bad..example` has an empty label",
        "= at dns_domain_list[malware].domains[0]",
        "error: duplicate DNS domain list name `malware`",
        " --> bad.toml:12:8\n",
        "error: unknown DNS domain list `malwar`\n  --> bad.toml:17:15\n   = at dns_firewall[a].domain_list",
        "= hint: did you mean `malware`? known DNS domain lists: malware",
        "error: DNS Firewall rule `b` has both `domains` and `domain_list`\n  --> bad.toml:24:15\n   = at dns_firewall[b].domain_list",
        "error: bad.toml: 4 problems, nothing was loaded",
    ] {
        assert!(e.contains(want), "{want:?} not in:\n{e}");
    }
}

#[test]
fn egress_by_name_entries_are_checked_and_restrict_their_vpcs() {
    let text = format!(
        r#"{ONE_VPC}
[[egress_by_name]]
vpcs = ["tenant-a"]
allow = ["api.payments.example:443", "*.s3.example"]
"#
    );
    let p = ok(&text);
    assert_eq!(p.vpcs[0].egress_names.len(), 2);
    assert_eq!(p.vpcs[0].egress_names[0].ports, Some((443, 443)));
    let t = vpcd::topology::compile::tables(&p);
    assert_eq!(t.vpcs[0].egress_allow.as_deref().map(<[_]>::len), Some(0));
    let text = format!(
        r#"{ONE_VPC}
[[egress_by_name]]
vpcs = ["tenant-b"]
allow = ["api..example:443", "api.example:http"]
"#
    );
    assert_eq!(
        err(&text),
        r##"error: unknown VPC `tenant-b`
 --> bad.toml:8:9
  = at egress_by_name[0].vpcs[0]
  |
8 | vpcs = ["tenant-b"]
  |         ^^^^^^^^^^
  = hint: did you mean `tenant-a`? known VPCs: tenant-a

error: egress name `api..example` has an empty label; write labels separated by single dots
 --> bad.toml:9:10
  = at egress_by_name[0].allow[0]
  |
9 | allow = ["api..example:443", "api.example:http"]
  |          ^^^^^^^^^^^^^^^^^^
  = hint: write "api.example.com:443", "*.example.com:8000-8099" or "api.example.com"

error: `http` in `api.example:http` is not a port or port range
 --> bad.toml:9:30
  = at egress_by_name[0].allow[1]
  |
9 | allow = ["api..example:443", "api.example:http"]
  |                              ^^^^^^^^^^^^^^^^^^
  = hint: write "api.example.com:443", "*.example.com:8000-8099" or "api.example.com"

error: bad.toml: 3 problems, nothing was loaded
"##
    );
}

#[test]
fn a_probe_to_a_name_must_resolve_from_its_source() {
    let text = format!(
        r#"{ONE_VPC}
[[probe]]
from = "tenant-a/web"
to = "web.tenant-a.vpc.internal:80/tcp"
expect = "allow"

[[probe]]
from = "tenant-a/web"
to = "db.tenant-a.vpc.internal:80/tcp"
expect = "allow"
"#
    );
    assert_eq!(
        err(&text),
        r##"error: probe target `db.tenant-a.vpc.internal` does not resolve from tenant-a/web: NXDOMAIN
  --> bad.toml:14:6
   = at probe[1].to
   |
14 | to = "db.tenant-a.vpc.internal:80/tcp"
   |      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
   = hint: name an instance (`NAME.VPC.vpc.internal`), a zone's record, or an internet host's `dns_names`

error: bad.toml: 1 problem, nothing was loaded
"##
    );
}

/// Probe tags (for `vpcd test --tag`) are names, each once per probe; valid ones reach the plan in
/// file order.
#[test]
fn probe_tags_are_names_each_once() {
    let probes = r##"[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"

[[vpc.subnet]]
name = "functions"
cidr = "10.0.1.0/24"

[[vpc.instance]]
name = "fn-a1"
subnet = "functions"

[[probe]]
name = "ping"
from = "tenant-a/fn-a1"
to = "10.0.1.1/icmp"
expect = "allow"
"##;
    let p = ok(&format!(
        "{probes}tags = [\"egress\", \"web.v2\", \"a_b-c\"]\n"
    ));
    assert_eq!(p.probes[0].tags, ["egress", "web.v2", "a_b-c"]);
    assert!(ok(probes).probes[0].tags.is_empty());
    assert_eq!(
        err(&format!(
            "{probes}tags = [\"egress\", \"no/slash\", \"egress\"]\n"
        )),
        r##"error: `no/slash` is not a valid tag
  --> bad.toml:18:19
   = at probe[ping].tags[1]
   |
18 | tags = ["egress", "no/slash", "egress"]
   |                   ^^^^^^^^^^
   = hint: write a tag like a name: 1 to 32 characters from A-Z, a-z, 0-9, `_`, `.` and `-`, e.g. "egress"

error: duplicate tag `egress` on one probe
  --> bad.toml:18:31
   = at probe[ping].tags[2]
   |
18 | tags = ["egress", "no/slash", "egress"]
   |                               ^^^^^^^^
   = hint: list each tag once

error: bad.toml: 2 problems, nothing was loaded
"##
    );
    let e = err(&format!("{probes}tags = [\"\"]\n"));
    assert!(e.contains("error: `` is not a valid tag"), "{e}");
    let e = err(&format!("{probes}tags = [\"{}\"]\n", "t".repeat(33)));
    assert!(e.contains("is not a valid tag"), "{e}");
    let e = err(&format!("{probes}tags = \"egress\"\n"));
    assert!(e.contains("expected a sequence"), "{e}");
}
