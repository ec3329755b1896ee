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

use crate::dataplane::firewall::{
    AclRuleTable, NetworkAclTable, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SecurityGroupTable,
    SecurityGroups, SgPeer, SgRuleTable,
};
use crate::dataplane::nat::config::NatConfig;
use crate::dataplane::nat::{DnatRule, Proto};
use crate::topology::cidr::Cidr;
use crate::topology::model::Attach;
use crate::topology::model::{
    AclAction, DnatProtocol, EgressRule, NetworkAcl, RuleProtocol, SecurityGroup, SgRule,
};
use crate::topology::plan::{EipBinding, Endpoint, NatGatewayPlan, Plan, RouteTargetPlan, VpcPlan};

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
    /// The public uplink (`[internet] uplink = "host"`): the outside world behind the public
    /// segment. It sends from any address the segment does not own.
    Uplink,
}

/// The uplink port's name (a host may not be called `uplink` while the uplink is on).
pub const UPLINK_PORT_NAME: &str = "internet/uplink";

#[derive(Debug, Clone)]
pub struct PortInfo {
    /// `VPC/INSTANCE`, `internet/HOST` or [`UPLINK_PORT_NAME`].
    pub name: String,
    /// The only source address this port may send from (anti-spoofing); for the uplink, its own
    /// address on the segment (it may send from any address the segment does not own).
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
    pub egress_allow: Option<Vec<EgressRule>>,
}

impl VpcTable {
    /// Whether the egress allow-list lets a new flow of IP protocol `proto` towards `dst` (and
    /// TCP/UDP destination port `dport`) leave the VPC.
    pub fn egress_allowed(&self, proto: u8, dst: Ipv4Addr, dport: Option<u16>) -> bool {
        self.egress_allow
            .as_ref()
            .is_none_or(|rules| rules.iter().any(|r| r.allows(proto, dst, dport)))
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

    /// The port of a plan endpoint. Ports are numbered instances first (VPC by VPC), then hosts,
    /// then the uplink.
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
                    network_acl: s.network_acl.map(|a| a as u32),
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
                let vpc_net = vpc.cidr.net();
                let more_specific_inside = rt.routes.iter().any(|r| {
                    r.destination.net() != vpc_net && vpc_net.contains(&r.destination.net())
                });
                let local_first = trie.get(&vpc_net) == Some(&RouteTargetPlan::Local);
                RouteTable {
                    name: rt.name.clone(),
                    trie,
                    local_fast: (local_first && !more_specific_inside).then_some(vpc_net),
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
            nat_gateways: vpc
                .nat_gateways
                .iter()
                .map(|g| compile_nat_gateway(plan, vpc, first_port, g))
                .collect(),
            one_to_one: vpc
                .instances
                .iter()
                .filter_map(|i| i.eip.map(|e| (plan.eips[e].address, i.ip)))
                .collect(),
            security_groups: compile_security_groups(vpc),
            network_acls: vpc.network_acls.iter().map(compile_network_acl).collect(),
            egress_allow: vpc.egress_allow.clone(),
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
    let uplink = plan.internet.uplink.as_ref().map(|u| {
        let id = PortId(ports.len() as u32);
        ports.push(PortInfo {
            name: UPLINK_PORT_NAME.to_string(),
            addr: u.address,
            mtu: uplink_mtu(plan),
            attach: Attach::Sim,
            owner: PortOwner::Uplink,
            eip: None,
        });
        id
    });
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
            uplink,
        },
    }
}

/// The uplink port's MTU: the smallest instance MTU (1500 without instances), so that the TCP
/// segments and UDP fragments the uplink sends fit every function's port.
pub fn uplink_mtu(plan: &Plan) -> u32 {
    plan.vpcs
        .iter()
        .flat_map(|v| v.instances.iter().map(|i| i.mtu))
        .min()
        .unwrap_or(crate::topology::model::DEFAULT_MTU)
}

/// Splits a gateway's EIPs into pools: each distinct explicit SNAT EIP set is a pool, and the EIPs
/// no entry names form the default pool (used by entries without `eips` and, when the file has no
/// SNAT entries, by the whole VPC). Validation guarantees the EIPs are the gateway's own.
fn compile_nat_gateway(
    plan: &Plan,
    vpc: &VpcPlan,
    first_port: u32,
    g: &NatGatewayPlan,
) -> NatGatewayTable {
    let addr = |e: usize| plan.eips[e].address;
    let mut pools: Vec<SnatPool> = Vec::new();
    let mut explicit: Vec<usize> = Vec::new();
    let mut snat_sets: Vec<Vec<Ipv4Addr>> = Vec::new();
    for entry in &g.snat {
        let mut set: Vec<Ipv4Addr> = entry.eips.iter().map(|e| addr(*e)).collect();
        set.sort();
        if entry.eips.len() < g.eips.len() {
            explicit.extend(entry.eips.iter().copied());
        }
        snat_sets.push(set);
    }
    let default: Vec<Ipv4Addr> = g
        .eips
        .iter()
        .filter(|e| !explicit.contains(e))
        .map(|e| addr(*e))
        .collect();
    let pool_index = |set: Vec<Ipv4Addr>, pools: &mut Vec<SnatPool>| -> u32 {
        // A set that overlaps an existing pool joins it: an EIP is translated by exactly one core.
        if let Some(i) = pools
            .iter()
            .position(|p| p.eips.iter().any(|e| set.contains(e)))
        {
            for e in set {
                if !pools[i].eips.contains(&e) {
                    pools[i].eips.push(e);
                }
            }
            return i as u32;
        }
        pools.push(SnatPool { eips: set });
        (pools.len() - 1) as u32
    };
    let mut snat = Vec::new();
    for (entry, set) in g.snat.iter().zip(snat_sets) {
        let set = if entry.eips.len() < g.eips.len() {
            set
        } else {
            default.clone()
        };
        if set.is_empty() {
            continue;
        }
        snat.push((entry.source, pool_index(set, &mut pools)));
    }
    if g.snat.is_empty() && !default.is_empty() {
        snat.push((vpc.cidr, pool_index(default.clone(), &mut pools)));
    }
    // EIPs used only by DNAT still need a core to translate them.
    for e in &g.eips {
        let a = addr(*e);
        if !pools.iter().any(|p| p.eips.contains(&a)) {
            let _ = pool_index(vec![a], &mut pools);
        }
    }
    let pool_of = |a: Ipv4Addr, pools: &[SnatPool]| {
        pools.iter().position(|p| p.eips.contains(&a)).unwrap_or(0) as u32
    };
    let mut dnat = Vec::new();
    let mut dnat_any = Vec::new();
    for d in &g.dnat {
        let eip = addr(d.eip);
        let inst = &vpc.instances[d.instance];
        let owner = first_port + d.instance as u32;
        let pool = pool_of(eip, &pools);
        let protocol = match d.protocol {
            DnatProtocol::Tcp => Proto::Tcp,
            DnatProtocol::Udp => Proto::Udp,
            DnatProtocol::Any => {
                dnat_any.push((pool, eip, inst.ip));
                continue;
            }
        };
        let Some(port) = d.port else { continue };
        dnat.push((
            pool,
            DnatRule {
                external: (eip, port),
                protocol: Some(protocol),
                internal: (inst.ip, d.instance_port.unwrap_or(port)),
                owner,
            },
        ));
    }
    NatGatewayTable {
        name: g.name.clone(),
        ip: g.ip,
        pools,
        snat,
        dnat,
        dnat_any,
        config: g.config.clone(),
    }
}

/// The name of the VPC default group (as in AWS). A group the file names `default` *is* the
/// default group: instances naming no group get it, with the rules written.
pub const DEFAULT_GROUP: &str = "default";

/// Compiles a VPC's security groups: the groups as written, plus — unless the file defines one
/// named `default` — the implicit default group (all egress; ingress from its own members); each
/// instance's groups (an instance naming none gets the default group); and each group's members'
/// private addresses, which `sg:NAME` peers match.
fn compile_security_groups(vpc: &VpcPlan) -> SecurityGroups {
    let by_name = |name: &str| {
        vpc.security_groups
            .iter()
            .position(|g| g.name.get_ref() == name)
    };
    let explicit_default = by_name(DEFAULT_GROUP);
    let default = explicit_default.unwrap_or(vpc.security_groups.len()) as u32;
    let mut groups: Vec<SecurityGroupTable> = vpc
        .security_groups
        .iter()
        .map(|g| compile_group(g, &by_name))
        .collect();
    if explicit_default.is_none() {
        groups.push(SecurityGroupTable {
            name: DEFAULT_GROUP.to_string(),
            ingress: vec![SgRuleTable {
                proto: None,
                ports: None,
                icmp_type: None,
                peer: SgPeer::Group(default),
                description: Some("the default group: traffic from its own members".into()),
            }],
            egress: None,
            implicit: true,
        });
    }
    let of_instance: Vec<Vec<u32>> = vpc
        .instances
        .iter()
        .map(|i| {
            if i.security_groups.is_empty() {
                vec![default]
            } else {
                let mut g: Vec<u32> = i.security_groups.iter().map(|g| *g as u32).collect();
                g.dedup();
                g
            }
        })
        .collect();
    let mut members = vec![Vec::new(); groups.len()];
    for (inst, gs) in vpc.instances.iter().zip(&of_instance) {
        for g in gs {
            if let Some(m) = members.get_mut(*g as usize) {
                m.push(inst.ip);
            }
        }
    }
    for m in &mut members {
        m.sort();
        m.dedup();
    }
    SecurityGroups {
        groups,
        members,
        of_instance,
    }
}

fn proto_number(p: RuleProtocol) -> Option<u8> {
    match p {
        RuleProtocol::Tcp => Some(PROTO_TCP),
        RuleProtocol::Udp => Some(PROTO_UDP),
        RuleProtocol::Icmp => Some(PROTO_ICMP),
        RuleProtocol::All => None,
    }
}

fn compile_group(g: &SecurityGroup, by_name: &dyn Fn(&str) -> Option<usize>) -> SecurityGroupTable {
    let rule = |r: &SgRule| -> Option<SgRuleTable> {
        let peer = r.peer.get_ref();
        // Validation resolved every peer; one that does not resolve matches nothing.
        let peer = match peer.strip_prefix("sg:") {
            Some(name) => SgPeer::Group(by_name(name)? as u32),
            None => SgPeer::Cidr(peer.parse().ok()?),
        };
        Some(SgRuleTable {
            proto: proto_number(*r.protocol.get_ref()),
            ports: r
                .ports
                .as_ref()
                .map(|p| (p.get_ref().first, p.get_ref().last)),
            icmp_type: r.icmp_type.as_ref().map(|t| *t.get_ref()),
            peer,
            description: r.description.clone(),
        })
    };
    // A rule that did not compile is kept as one that matches nothing, so indices stay those of
    // the file.
    let never = || SgRuleTable {
        proto: Some(0),
        ports: Some((0, 0)),
        icmp_type: None,
        peer: SgPeer::Cidr(Cidr::new(Ipv4Addr::BROADCAST, 32).expect("a /32 is valid")),
        description: Some("(unresolved)".into()),
    };
    let rules = |rs: &[SgRule]| rs.iter().map(|r| rule(r).unwrap_or_else(never)).collect();
    SecurityGroupTable {
        name: g.name.get_ref().clone(),
        ingress: rules(&g.ingress),
        egress: g.egress.as_deref().map(rules),
        implicit: false,
    }
}

fn compile_network_acl(a: &NetworkAcl) -> NetworkAclTable {
    let rules = |rs: &[crate::topology::model::AclRule]| {
        let mut v: Vec<AclRuleTable> = rs
            .iter()
            .map(|r| AclRuleTable {
                number: *r.rule.get_ref(),
                allow: *r.action.get_ref() == AclAction::Allow,
                proto: proto_number(*r.protocol.get_ref()),
                ports: r
                    .ports
                    .as_ref()
                    .map(|p| (p.get_ref().first, p.get_ref().last)),
                cidr: *r.cidr.get_ref(),
            })
            .collect();
        v.sort_by_key(|r| r.number);
        v
    };
    NetworkAclTable {
        name: a.name.get_ref().clone(),
        inbound: rules(&a.inbound),
        outbound: rules(&a.outbound),
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
