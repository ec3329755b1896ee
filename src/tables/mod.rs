//! Lookup tables compiled from a `Plan`: what the dataplane reads on every packet.
//!
//! Part of the sans-IO core (ARCHITECTURE.md): plain data and lookups, no serde model. Built once
//! per topology change by `topology::compile::tables` and handed to the dataplane behind an `Arc`,
//! so a change is an atomic swap (model -> validate -> compile -> swap). Nothing here changes
//! while a packet is being handled, and nothing here allocates after compilation.

pub mod firewall;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::FixedState;
use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;

/// Ports are the dataplane's; [`Tables::ports`] describes them.
pub use crate::dataplane::PortId;
use crate::dataplane::nat::DnatRule;
use crate::dataplane::nat::config::NatConfig;
use crate::topology::cidr::Cidr;
use firewall::{EgressRuleTable, NetworkAclTable, SecurityGroups};

/// Smallest MTU a port accepts (IPv4's minimum reassembly size): validation refuses less, so
/// the fabric knows no packet of this size or smaller is too big for any port.
pub const MIN_MTU: u32 = 576;

// Written in topology files (`topology::model` re-exports it) and read by the shell to build the
// port; the dataplane does not look at it. (A `//` comment: the doc comment is the API schema's
// description.)
/// How an instance or internet host is attached.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    /// A real TUN device in a network namespace (`vpcd up`); simulated by `vpcd test`.
    #[default]
    Netns,
    /// An in-process smoltcp host.
    Sim,
}

/// A route target with the NAT gateway resolved to its index in the VPC (the plan's and the
/// route tables'; `topology::plan` re-exports it and describes it as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTargetPlan {
    Local,
    Blackhole,
    Internet,
    Nat(usize),
}

/// What an EIP is bound to (at most one thing); `topology::plan` re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EipBinding {
    Unbound,
    /// 1:1 to an instance: (vpc, instance).
    Instance {
        vpc: usize,
        instance: usize,
    },
    /// Owned by a NAT gateway: (vpc, gateway).
    NatGateway {
        vpc: usize,
        gateway: usize,
    },
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
    /// The public uplink (`[internet] uplink = "host"`): the outside world behind the public
    /// segment. It sends from any address the segment does not own.
    Uplink,
    /// A VPC's resolver (DNS at base + 2 and [`RESOLVER_LINK_LOCAL`]): it sends from those two
    /// addresses only, and only to its own VPC's instances.
    Resolver {
        vpc: u32,
    },
}

/// The resolver's link-local address, answered in every VPC besides base + 2 (as AWS does).
pub const RESOLVER_LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);

/// The resolver's address in a VPC: its CIDR's base + 2.
pub fn resolver_address(vpc: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(vpc.network()).wrapping_add(2))
}

/// The name of VPC `vpc`'s resolver port: `VPC#resolver` (`#` is in no topology name, so it
/// never clashes with an instance's `VPC/NAME`).
pub fn resolver_port_name(vpc: &str) -> String {
    format!("{vpc}#resolver")
}

/// A VPC's resolver as the fabric sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverTable {
    /// Base + 2.
    pub addr: Ipv4Addr,
    /// Its port (after the uplink's, in VPC order).
    pub port: PortId,
}

/// The uplink port's name (a host may not be called `uplink` while the uplink is on).
pub const UPLINK_PORT_NAME: &str = "internet/uplink";

#[derive(Debug, Clone)]
pub struct PortInfo {
    /// `VPC/INSTANCE`, `internet/HOST`, [`UPLINK_PORT_NAME`] or `VPC#resolver`
    /// ([`resolver_port_name`]); shared with the plan's instance and the runtime's port spec.
    pub name: std::sync::Arc<str>,
    /// The only source address this port may send from (anti-spoofing), but for an internet
    /// host with secondary addresses (it may send from each: [`InternetTable::hosts`] maps them
    /// all to its port); for the uplink, its own address on the segment (it may send from any
    /// address the segment does not own).
    pub addr: Ipv4Addr,
    pub mtu: u32,
    /// `Sim` for the uplink (it runs in process).
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
    /// NAT gateways, in plan order (route targets `nat:N` index this).
    pub nat_gateways: Vec<NatGatewayTable>,
    /// 1:1 EIPs of this VPC's instances: (EIP, private address).
    pub one_to_one: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Security groups with resolved membership, and every instance's groups.
    pub security_groups: SecurityGroups,
    /// Network ACLs; subnets index this.
    pub network_acls: Vec<NetworkAclTable>,
    /// `None`: new flows towards the public side may go anywhere; otherwise only where one of
    /// these rules allows.
    pub egress_allow: Option<Vec<EgressRuleTable>>,
    /// The VPC's resolver.
    pub resolver: ResolverTable,
}

impl VpcTable {
    /// Whether `dst` is one of the resolver's addresses (base + 2 or [`RESOLVER_LINK_LOCAL`]).
    pub fn is_resolver(&self, dst: Ipv4Addr) -> bool {
        dst == self.resolver.addr || dst == RESOLVER_LINK_LOCAL
    }
}

/// A NAT gateway as the dataplane sees it.
#[derive(Debug, Clone)]
pub struct NatGatewayTable {
    pub name: String,
    /// The gateway's private address: the visible hop's address towards the VPC.
    pub ip: Ipv4Addr,
    /// Its EIPs split into pools, each translated by its own NAT core; never empty pools.
    pub pools: Vec<SnatPool>,
    /// Who may use the gateway: private source block -> index into `pools`. Without SNAT
    /// entries in the file, the whole VPC maps to pool 0.
    pub snat: Vec<(Cidr, u32)>,
    /// Port forwards: each goes to the pool holding its EIP.
    pub dnat: Vec<(u32, DnatRule)>,
    /// `protocol = "any"` forwards: whole-address mappings (EIP, private address), by pool.
    pub dnat_any: Vec<(u32, Ipv4Addr, Ipv4Addr)>,
    pub config: NatConfig,
}

/// A set of EIPs translated together (one SNAT entry's pool, or the gateway's remaining EIPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatPool {
    pub eips: Vec<Ipv4Addr>,
}

impl NatGatewayTable {
    /// The pool a private source uses: the longest SNAT source block that covers it.
    pub fn pool_for(&self, src: Ipv4Addr) -> Option<u32> {
        self.snat
            .iter()
            .filter(|(c, _)| c.contains(src))
            .max_by_key(|(c, _)| c.prefix_len())
            .map(|(_, p)| *p)
    }

    /// The pool that owns `eip`.
    pub fn pool_of(&self, eip: Ipv4Addr) -> Option<u32> {
        self.pools
            .iter()
            .position(|p| p.eips.contains(&eip))
            .map(|i| i as u32)
    }
}

#[derive(Debug)]
pub struct SubnetTable {
    pub name: String,
    pub cidr: Cidr,
    pub gateway: Ipv4Addr,
    /// Index into `VpcTable::route_tables`.
    pub route_table: u32,
    /// Index into `VpcTable::network_acls`; `None`: the default ACL (allow all).
    pub network_acl: Option<u32>,
}

/// A longest-prefix-match route table.
#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    trie: PrefixMap<Ipv4Net, RouteTargetPlan>,
    /// The VPC CIDR when no route of this table is more specific inside it: then every address
    /// of the VPC matches the `local` route and the trie walk can be skipped (the common
    /// intra-VPC case).
    local_fast: Option<Ipv4Net>,
}

/// The route a lookup chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub prefix: Ipv4Net,
    pub target: RouteTargetPlan,
}

impl RouteTable {
    /// Builds the table of a VPC with CIDR `vpc` from its routes (destination, target).
    pub fn new(
        name: String,
        vpc: Ipv4Net,
        routes: impl IntoIterator<Item = (Ipv4Net, RouteTargetPlan)>,
    ) -> RouteTable {
        let mut trie = PrefixMap::new();
        let mut more_specific_inside = false;
        for (destination, target) in routes {
            more_specific_inside |= destination != vpc && vpc.contains(&destination);
            trie.insert(destination, target);
        }
        let local_first = trie.get(&vpc) == Some(&RouteTargetPlan::Local);
        RouteTable {
            name,
            trie,
            local_fast: (local_first && !more_specific_inside).then_some(vpc),
        }
    }

    /// Longest-prefix match for `dst`; `None` when no route covers it.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<RouteMatch> {
        if let Some(vpc) = self.local_fast
            && vpc.contains(&dst)
        {
            return Some(RouteMatch {
                prefix: vpc,
                target: RouteTargetPlan::Local,
            });
        }
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
    /// The uplink's port (after every host's), with `uplink = "host"`: packets towards addresses
    /// no host or EIP owns go there.
    pub uplink: Option<PortId>,
}

impl InternetTable {
    /// Whether `a` belongs to the segment itself (a host or an EIP): the uplink may not send
    /// from such an address.
    pub fn owns(&self, a: Ipv4Addr) -> bool {
        self.hosts.contains_key(&a) || self.eips.contains_key(&a)
    }
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

    /// Finds a port by its name (`VPC/INSTANCE` or `internet/HOST`).
    pub fn port_named(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| &*p.name == name)
            .map(|i| PortId(i as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology;
    use crate::topology::compile::tables as compile;

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
        let names: Vec<_> = t.ports.iter().map(|p| &*p.name).collect();
        // The VPCs' resolvers come last, in VPC order.
        assert_eq!(
            names,
            [
                "a/x",
                "a/y",
                "b/z",
                "internet/web",
                "a#resolver",
                "b#resolver"
            ]
        );
        for (i, name) in names[..4].iter().enumerate() {
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

    #[test]
    fn a_more_specific_route_inside_the_vpc_beats_the_local_fast_path() {
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
  routes = [{ destination = "10.0.5.0/24", target = "blackhole" }]
"#,
        )
        .expect("valid");
        let t = compile(&plan);
        let rt = &t.vpcs[0].route_tables[0];
        assert!(rt.local_fast.is_none());
        let target = |a: [u8; 4]| rt.lookup(Ipv4Addr::from(a)).map(|m| m.target);
        assert_eq!(target([10, 0, 5, 9]), Some(RouteTargetPlan::Blackhole));
        assert_eq!(target([10, 0, 1, 9]), Some(RouteTargetPlan::Local));
        let plain = topology::parse("t.toml", "[[vpc]]\nname = \"a\"\ncidr = \"10.0.0.0/16\"\n")
            .expect("valid");
        let t = compile(&plain);
        assert!(t.vpcs[0].route_tables[0].local_fast.is_some());
        assert_eq!(
            t.vpcs[0].route_tables[0]
                .lookup(Ipv4Addr::new(10, 0, 200, 1))
                .map(|m| m.target),
            Some(RouteTargetPlan::Local)
        );
    }
}
