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
    // Explicit addresses are reserved first, then gateways and instances get the first free one.
    assert_eq!(a.nat_gateways[0].ip, ip("10.0.0.2"));
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
