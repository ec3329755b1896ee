//! Compiles a validated [`Plan`] into the core's lookup [`Tables`]: model -> validate -> **compile**
//! -> swap. The only place the topology's types become table types, so the core
//! (`src/dataplane`, `src/tables`) never sees the serde model (ARCHITECTURE.md).

use std::net::Ipv4Addr;

use super::cidr::Cidr;
use super::model::{
    AclAction, AclRule, Attach, DEFAULT_MTU, DnatProtocol, EgressRule, NetworkAcl, RuleProtocol,
    SecurityGroup, SgRule,
};
use super::plan::{Endpoint, NatGatewayPlan, Plan, VpcPlan};
use crate::dataplane::firewall::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::dataplane::nat::{DnatRule, Proto};
use crate::tables::firewall::{
    AclRuleTable, EgressRuleTable, NetworkAclTable, SecurityGroupTable, SecurityGroups, SgPeer,
    SgRuleTable,
};
use crate::tables::{
    AddrMap, EipEntry, InternetTable, NatGatewayTable, PortId, PortInfo, PortOwner, ResolverTable,
    RouteTable, SnatPool, SubnetTable, Tables, UPLINK_PORT_NAME, VpcTable, resolver_address,
    resolver_port_name,
};

pub mod dns;

impl Tables {
    /// The port of a plan endpoint. Ports are numbered instances first (VPC by VPC), then hosts,
    /// then the uplink, then one resolver per VPC.
    pub fn port_of(&self, endpoint: Endpoint) -> PortId {
        match endpoint {
            Endpoint::Instance { vpc, instance } => {
                PortId(self.vpcs[vpc].first_port + instance as u32)
            }
            Endpoint::Host(h) => PortId(self.internet.first_port + h as u32),
        }
    }
}

/// Compiles a validated plan. Never fails: the plan's indices are in range by construction.
pub fn tables(plan: &Plan) -> Tables {
    // Instances, internet hosts, the uplink and one resolver per VPC.
    let port_count = plan
        .vpcs
        .iter()
        .map(|v| v.instances.len() + 1)
        .sum::<usize>()
        + plan.internet.hosts.len()
        + 1;
    let mut ports = Vec::with_capacity(port_count);
    let mut vpcs = Vec::with_capacity(plan.vpcs.len());
    let first_resolver_port = first_resolver_port(plan);
    for (vi, vpc) in plan.vpcs.iter().enumerate() {
        let first_port = ports.len() as u32;
        let mut hosts = AddrMap::with_capacity_and_hasher(vpc.instances.len(), Default::default());
        for (ii, inst) in vpc.instances.iter().enumerate() {
            let id = PortId(ports.len() as u32);
            hosts.insert(inst.ip, id);
            ports.push(PortInfo {
                name: inst.port.clone(),
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
                RouteTable::new(
                    rt.name.clone(),
                    vpc.cidr.net(),
                    rt.routes.iter().map(|r| (r.destination.net(), r.target)),
                )
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
            // Egress by name restricts a VPC without a list to what its names allow.
            egress_allow: vpc
                .egress_allow
                .as_ref()
                .map(|rules| rules.iter().map(egress_rule).collect())
                .or_else(|| (!vpc.egress_names.is_empty()).then(Vec::new)),
            resolver: ResolverTable {
                addr: resolver_address(vpc.cidr),
                port: PortId(first_resolver_port + vi as u32),
            },
        });
    }
    let first_host_port = ports.len() as u32;
    let mut hosts = AddrMap::default();
    for (hi, h) in plan.internet.hosts.iter().enumerate() {
        let id = PortId(ports.len() as u32);
        hosts.insert(h.ip, id);
        for &a in &h.secondary {
            hosts.insert(a, id);
        }
        ports.push(PortInfo {
            name: format!("internet/{}", h.name).into(),
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
            name: UPLINK_PORT_NAME.into(),
            addr: u.address,
            mtu: uplink_mtu(plan),
            attach: Attach::Sim,
            owner: PortOwner::Uplink,
            eip: None,
        });
        id
    });
    ports.extend(plan.vpcs.iter().enumerate().map(|(vi, vpc)| PortInfo {
        name: resolver_port_name(&vpc.name).into(),
        addr: resolver_address(vpc.cidr),
        mtu: DEFAULT_MTU,
        attach: Attach::Sim,
        owner: PortOwner::Resolver { vpc: vi as u32 },
        eip: None,
    }));
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

/// The first resolver port: after every instance's, host's and the uplink's, one per VPC.
fn first_resolver_port(plan: &Plan) -> u32 {
    let instances: usize = plan.vpcs.iter().map(|v| v.instances.len()).sum();
    let uplink = usize::from(plan.internet.uplink.is_some());
    (instances + plan.internet.hosts.len() + uplink) as u32
}

/// The uplink port's MTU: the smallest instance MTU (1500 without instances), so that the TCP
/// segments and UDP fragments the uplink sends fit every function's port.
pub fn uplink_mtu(plan: &Plan) -> u32 {
    plan.vpcs
        .iter()
        .flat_map(|v| v.instances.iter().map(|i| i.mtu))
        .min()
        .unwrap_or(DEFAULT_MTU)
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
    let mut of_instance = Vec::with_capacity(vpc.instances.len() + 1);
    let mut attached_groups: Vec<u32> = Vec::with_capacity(vpc.instances.len());
    let mut members = vec![Vec::new(); groups.len()];
    for inst in &vpc.instances {
        let start = attached_groups.len();
        of_instance.push(start as u32);
        if inst.security_groups.is_empty() {
            attached_groups.push(default);
        }
        for g in inst.security_groups.iter().map(|g| *g as u32) {
            // Repeated in a row: once (as `Vec::dedup`).
            if attached_groups.len() == start || attached_groups.last() != Some(&g) {
                attached_groups.push(g);
            }
        }
        for g in &attached_groups[start..] {
            if let Some(m) = members.get_mut(*g as usize) {
                m.push(inst.ip);
            }
        }
    }
    of_instance.push(attached_groups.len() as u32);
    for m in &mut members {
        m.sort();
        m.dedup();
    }
    SecurityGroups {
        groups,
        members,
        of_instance,
        attached_groups,
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
    let rules = |rs: &[AclRule]| {
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

/// One egress allow-list entry as the firewall reads it (same meaning as [`EgressRule::allows`]).
fn egress_rule(r: &EgressRule) -> EgressRuleTable {
    EgressRuleTable {
        dst: r.cidr,
        ports: r.ports.map(|p| (p.first, p.last)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::firewall::egress::{self, EgressDecision};
    use crate::topology::model::PortRange;
    use proptest::prelude::*;

    fn any_rule() -> impl Strategy<Value = EgressRule> {
        let cidr = (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(a), len)
                .expect("len <= 32")
                .trunc();
            Cidr::new(net.network(), len).expect("host bits cleared")
        });
        let ports = prop::option::of((1u16..=65535, 1u16..=65535).prop_map(|(a, b)| PortRange {
            first: a.min(b),
            last: a.max(b),
        }));
        (cidr, ports).prop_map(|(cidr, ports)| EgressRule { cidr, ports })
    }

    fn any_proto() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(PROTO_TCP),
            Just(PROTO_UDP),
            Just(PROTO_ICMP),
            any::<u8>()
        ]
    }

    proptest! {
        /// The compiled allow-list decides exactly as the model's rules, list by list (the same
        /// first allowing rule), including "no list: everything is allowed".
        #[test]
        fn compiled_egress_allow_list_decides_as_the_model(
            list in prop::option::of(prop::collection::vec(any_rule(), 0..5)),
            proto in any_proto(),
            dst in any::<u32>(),
            near in any::<bool>(),
            dport in prop::option::of(any::<u16>()),
        ) {
            // Half of the destinations inside the first rule's block, so matches are common.
            let dst = match (&list, near) {
                (Some(rules), true) if !rules.is_empty() => {
                    let c = rules[0].cidr;
                    let host = if c.prefix_len() == 0 { dst } else { dst & ((1u64 << (32 - u32::from(c.prefix_len()))) - 1) as u32 };
                    Ipv4Addr::from(u32::from(c.network()) | host)
                }
                _ => Ipv4Addr::from(dst),
            };
            let compiled: Option<Vec<EgressRuleTable>> =
                list.as_ref().map(|rs| rs.iter().map(egress_rule).collect());
            // The model's meaning: no list allows everything, else the first rule that allows.
            let model = match &list {
                None => EgressDecision::NoList,
                Some(rs) => rs
                    .iter()
                    .position(|r| r.allows(proto, dst, dport))
                    .map_or(EgressDecision::Denied, |i| EgressDecision::Rule { index: i as u32 }),
            };
            prop_assert_eq!(egress::decide(compiled.as_deref(), proto, dst, dport), model);
            for (r, c) in list.iter().flatten().zip(compiled.iter().flatten()) {
                prop_assert_eq!(c.allows(proto, dst, dport), r.allows(proto, dst, dport));
                prop_assert_eq!(c.to_string(), r.to_string());
            }
        }
    }
}
