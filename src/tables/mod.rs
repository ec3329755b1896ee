//! Lookup tables compiled from a `Plan`: what the dataplane reads on every packet.
//!
//! Built once per topology change by [`compile`] and handed to the dataplane behind an `Arc`, so a
//! change is an atomic swap (model -> validate -> compile -> swap). Nothing here changes while a
//! packet is being handled, and nothing here allocates after compilation.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::FixedState;
use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;

use crate::topology::cidr::Cidr;
use crate::topology::model::Attach;
use crate::topology::plan::{EipBinding, Endpoint, Plan, RouteTargetPlan};

/// Where packets enter and leave the dataplane: an index into [`Tables::ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

impl PortId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Hash maps keyed by addresses. Keys come from the topology, not from guests, so a fixed seed is
/// fine here; the connection table (guest-chosen keys) uses a random seed.
pub type AddrMap<V> = HashMap<Ipv4Addr, V, FixedState>;

/// Everything the dataplane needs, immutable once built.
#[derive(Debug)]
pub struct Tables {
    pub ports: Vec<PortInfo>,
    pub vpcs: Vec<VpcTable>,
    pub internet: InternetTable,
}

/// Who sits behind a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortOwner {
    Instance {
        vpc: u32,
        subnet: u32,
        instance: u32,
    },
    Host {
        host: u32,
    },
}

#[derive(Debug, Clone)]
pub struct PortInfo {
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub name: String,
    /// The only source address this port may send from (anti-spoofing).
    pub addr: Ipv4Addr,
    pub mtu: u32,
    pub attach: Attach,
    pub owner: PortOwner,
    /// The instance's 1:1 EIP, if it has one.
    pub eip: Option<Ipv4Addr>,
}

#[derive(Debug)]
pub struct VpcTable {
    pub name: String,
    pub cidr: Cidr,
    pub subnets: Vec<SubnetTable>,
    pub route_tables: Vec<RouteTable>,
    /// Instance address -> port.
    pub hosts: AddrMap<PortId>,
    /// The port of the VPC's first instance; its instances' ports follow in plan order.
    pub first_port: u32,
    /// Subnet gateway (`.1`) address -> subnet index.
    pub gateways: AddrMap<u32>,
}

#[derive(Debug)]
pub struct SubnetTable {
    pub name: String,
    pub cidr: Cidr,
    pub gateway: Ipv4Addr,
    /// Index into `VpcTable::route_tables`.
    pub route_table: u32,
}

/// A longest-prefix-match route table.
#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    trie: PrefixMap<Ipv4Net, RouteTargetPlan>,
}

/// The route a lookup chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub prefix: Ipv4Net,
    pub target: RouteTargetPlan,
}

impl RouteTable {
    /// Longest-prefix match for `dst`; `None` when no route covers it.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<RouteMatch> {
        let host = Ipv4Net::new(dst, 32).expect("a /32 is always valid");
        self.trie.get_lpm(&host).map(|(prefix, target)| RouteMatch {
            prefix,
            target: *target,
        })
    }
}

/// The public segment.
#[derive(Debug)]
pub struct InternetTable {
    pub cidr: Cidr,
    /// Public host address -> port.
    pub hosts: AddrMap<PortId>,
    /// The port of the first public host; the others follow in plan order.
    pub first_port: u32,
    /// EIP address -> what it is bound to.
    pub eips: AddrMap<EipEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EipEntry {
    /// Index into the plan's EIPs.
    pub index: u32,
    pub binding: EipBinding,
}

impl Tables {
    pub fn port(&self, id: PortId) -> Option<&PortInfo> {
        self.ports.get(id.index())
    }

    /// The port of a plan endpoint. Ports are numbered instances first (VPC by VPC), then hosts.
    pub fn port_of(&self, endpoint: Endpoint) -> PortId {
        match endpoint {
            Endpoint::Instance { vpc, instance } => {
                PortId(self.vpcs[vpc].first_port + instance as u32)
            }
            Endpoint::Host(h) => PortId(self.internet.first_port + h as u32),
        }
    }

    /// Finds a port by its name (`VPC/INSTANCE` or `internet/HOST`).
    pub fn port_named(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u32))
    }
}

/// Compiles a validated plan. Never fails: the plan's indices are in range by construction.
pub fn compile(plan: &Plan) -> Tables {
    let mut ports = Vec::new();
    let mut vpcs = Vec::with_capacity(plan.vpcs.len());
    for (vi, vpc) in plan.vpcs.iter().enumerate() {
        let first_port = ports.len() as u32;
        let mut hosts = AddrMap::default();
        for (ii, inst) in vpc.instances.iter().enumerate() {
            let id = PortId(ports.len() as u32);
            hosts.insert(inst.ip, id);
            ports.push(PortInfo {
                name: format!("{}/{}", vpc.name, inst.name),
                addr: inst.ip,
                mtu: inst.mtu,
                attach: inst.attach,
                owner: PortOwner::Instance {
                    vpc: vi as u32,
                    subnet: inst.subnet as u32,
                    instance: ii as u32,
                },
                eip: inst.eip.map(|e| plan.eips[e].address),
            });
        }
        let mut gateways = AddrMap::default();
        let subnets = vpc
            .subnets
            .iter()
            .enumerate()
            .map(|(si, s)| {
                gateways.insert(s.gateway, si as u32);
                SubnetTable {
                    name: s.name.clone(),
                    cidr: s.cidr,
                    gateway: s.gateway,
                    route_table: s.route_table as u32,
                }
            })
            .collect();
        let route_tables = vpc
            .route_tables
            .iter()
            .map(|rt| {
                let mut trie = PrefixMap::new();
                for r in &rt.routes {
                    trie.insert(r.destination.net(), r.target);
                }
                RouteTable {
                    name: rt.name.clone(),
                    trie,
                }
            })
            .collect();
        vpcs.push(VpcTable {
            name: vpc.name.clone(),
            cidr: vpc.cidr,
            subnets,
            route_tables,
            hosts,
            first_port,
            gateways,
        });
    }
    let first_host_port = ports.len() as u32;
    let mut hosts = AddrMap::default();
    for (hi, h) in plan.internet.hosts.iter().enumerate() {
        let id = PortId(ports.len() as u32);
        hosts.insert(h.ip, id);
        ports.push(PortInfo {
            name: format!("internet/{}", h.name),
            addr: h.ip,
            mtu: h.mtu,
            attach: h.attach,
            owner: PortOwner::Host { host: hi as u32 },
            eip: None,
        });
    }
    let eips = plan
        .eips
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                e.address,
                EipEntry {
                    index: i as u32,
                    binding: e.binding,
                },
            )
        })
        .collect();
    Tables {
        ports,
        vpcs,
        internet: InternetTable {
            cidr: plan.internet.cidr,
            hosts,
            first_port: first_host_port,
            eips,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology;

    #[test]
    fn ports_are_numbered_instances_first_then_hosts() {
        let plan = topology::parse(
            "t.toml",
            r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s"
  cidr = "10.0.1.0/24"
  [[vpc.instance]]
  name = "x"
  subnet = "s"
  [[vpc.instance]]
  name = "y"
  subnet = "s"
[[vpc]]
name = "b"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s"
  cidr = "10.0.1.0/24"
  [[vpc.instance]]
  name = "z"
  subnet = "s"
[internet]
  [[internet.host]]
  name = "web"
  ip = "198.51.100.10"
"#,
        )
        .expect("valid");
        let t = compile(&plan);
        let names: Vec<_> = t.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a/x", "a/y", "b/z", "internet/web"]);
        for (i, name) in names.iter().enumerate() {
            let (scope, n) = name.split_once('/').unwrap();
            let e = plan.find_endpoint(scope, n).unwrap();
            assert_eq!(t.port_of(e), PortId(i as u32));
            assert_eq!(t.port_named(name), Some(PortId(i as u32)));
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let plan = topology::parse(
            "t.toml",
            r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s"
  cidr = "10.0.1.0/24"
  [[vpc.route_table]]
  name = "main"
  routes = [
    { destination = "0.0.0.0/0", target = "internet" },
    { destination = "192.0.2.0/24", target = "blackhole" },
  ]
"#,
        )
        .expect("valid");
        let t = compile(&plan);
        let rt = &t.vpcs[0].route_tables[0];
        let hit = |a: [u8; 4]| {
            rt.lookup(Ipv4Addr::from(a))
                .map(|m| (m.prefix.to_string(), m.target))
        };
        assert_eq!(
            hit([10, 0, 1, 5]),
            Some(("10.0.0.0/16".into(), RouteTargetPlan::Local))
        );
        assert_eq!(
            hit([192, 0, 2, 1]),
            Some(("192.0.2.0/24".into(), RouteTargetPlan::Blackhole))
        );
        assert_eq!(
            hit([8, 8, 8, 8]),
            Some(("0.0.0.0/0".into(), RouteTargetPlan::Internet))
        );
    }
}
