//! A VPC: its prefix, route tables, subnets, address assignment and instances. NAT gateways are
//! in `nat`, security groups and network ACLs in `rules`; `check_vpc` calls them in file-section
//! order so that problems at one offset keep a stable order.
//!
//! Addresses: the VPC CIDR's base + 2 is the resolver's, never an instance's or a gateway's.
//! Explicit `ip`s are reserved first, then NAT gateways without one get the first free
//! address of their subnet in file order, then instances. Reserved in every subnet: the network
//! address, `.1` (the gateway) and broadcast.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use toml::Spanned;

use super::super::cidr::Cidr;
use super::super::model::{self, MAIN_ROUTE_TABLE, MAX_MTU, MIN_MTU, RouteTarget};
use super::super::plan::{
    EipBinding, InstancePlan, RoutePlan, RouteTablePlan, RouteTargetPlan, SubnetPlan, VpcPlan,
};
use super::names::{VpcScope, unknown_hint};
use super::{Checker, EipUse};

/// Largest VPC block (shortest prefix) accepted.
pub const MIN_VPC_PREFIX: u8 = 8;
/// Smallest VPC block (longest prefix) accepted, as in AWS.
pub const MAX_VPC_PREFIX: u8 = 28;
/// Smallest subnet: network, `.1` and broadcast are reserved, so a /30 has one usable address.
pub const MAX_SUBNET_PREFIX: u8 = 30;

/// What holds an address inside a VPC, for duplicate messages.
#[derive(Clone)]
struct Holder {
    what: String,
    line: usize,
}

/// The subnets and addresses of a VPC's NAT gateways and instances (model order).
pub(super) struct Addresses {
    /// `None`: the subnet does not resolve (already reported).
    pub gw_subnet: Vec<Option<usize>>,
    pub inst_subnet: Vec<Option<usize>>,
    /// `0.0.0.0` where no address could be assigned (already reported).
    pub gw_ips: Vec<Ipv4Addr>,
    pub inst_ips: Vec<Ipv4Addr>,
}

impl Checker<'_> {
    pub(super) fn check_vpc(
        &mut self,
        vi: usize,
        vpc: &model::Vpc,
        vp: &str,
        eip_index: &HashMap<&str, usize>,
        eip_uses: &mut Vec<EipUse>,
    ) -> VpcPlan {
        let vname = vpc.name.get_ref().as_str();
        let vcidr = *vpc.cidr.get_ref();
        if !(MIN_VPC_PREFIX..=MAX_VPC_PREFIX).contains(&vcidr.prefix_len()) {
            self.error(
                vpc.cidr.span(),
                format!("{vp}.cidr"),
                format!(
                    "VPC CIDR {vcidr} has prefix /{}; a VPC's prefix must be between /{MIN_VPC_PREFIX} and /{MAX_VPC_PREFIX}",
                    vcidr.prefix_len()
                ),
                "choose a block from /8 (largest) to /28 (smallest), like \"10.0.0.0/16\"",
            );
        }
        let s = self.vpc_scope(vi, vpc, vp);
        let (route_tables, tables_by_name) = self.check_route_tables(&s);
        let (subnets, usable) = self.check_subnets(&s, &tables_by_name);
        self.check_security_groups(&s);
        self.check_network_acls(&s);
        let addrs = self.assign_addresses(&s, &usable);
        let instances = self.check_instances(&s, &addrs, eip_index, eip_uses);
        let nat_gateways = self.check_nat_gateways(&s, &addrs, eip_index, eip_uses);
        VpcPlan {
            name: vname.to_string(),
            cidr: vcidr,
            subnets,
            route_tables,
            instances,
            nat_gateways,
            security_groups: vpc.security_group.clone(),
            network_acls: vpc.network_acl.clone(),
            egress_allow: vpc
                .egress_allow
                .as_ref()
                .map(|rules| rules.iter().map(|r| *r.get_ref()).collect()),
            // Filled from the top-level rules once every VPC is known (`dns`).
            dns_firewall: Vec::new(),
            egress_names: Vec::new(),
        }
    }

    /// The route tables in plan order (the main table first: the user's `main`, or an implicit
    /// one), and plan index by name.
    fn check_route_tables<'v>(
        &mut self,
        s: &VpcScope<'v>,
    ) -> (Vec<RouteTablePlan>, HashMap<&'v str, usize>) {
        let (vpc, vname, vcidr) = (s.vpc, s.name, s.cidr);
        let rt_paths = &s.rt_paths;
        let gateways_by_name = &s.gateways;
        let local = RoutePlan {
            destination: vcidr,
            target: RouteTargetPlan::Local,
        };
        let user_main = s.route_tables.get(MAIN_ROUTE_TABLE).copied();
        let mut order: Vec<Option<usize>> = vec![user_main];
        order.extend(
            (0..vpc.route_table.len())
                .filter(|i| Some(*i) != user_main)
                .map(Some),
        );
        let mut tables_by_name: HashMap<&'v str, usize> = HashMap::new();
        tables_by_name.insert(MAIN_ROUTE_TABLE, 0);
        for (plan_i, model_i) in order.iter().enumerate() {
            if let Some(t) = model_i.and_then(|m| vpc.route_table.get(m)) {
                tables_by_name.entry(t.name.get_ref()).or_insert(plan_i);
            }
        }
        let mut route_tables = Vec::new();
        for model_i in order {
            let Some(mi) = model_i else {
                route_tables.push(RouteTablePlan {
                    name: MAIN_ROUTE_TABLE.to_string(),
                    routes: vec![local.clone()],
                });
                continue;
            };
            let Some(table) = vpc.route_table.get(mi) else {
                continue;
            };
            let tp = &rt_paths[mi];
            let mut routes = vec![local.clone()];
            let mut seen: HashMap<Cidr, usize> = HashMap::new();
            for (ri, route) in table.routes.iter().enumerate() {
                let rp = format!("{tp}.routes[{ri}]");
                let dest = *route.destination.get_ref();
                if dest == vcidr {
                    self.error(
                        route.destination.span(),
                        format!("{rp}.destination"),
                        format!("route for {dest} repeats the implicit local route of VPC {vname}"),
                        format!(
                            "every route table already sends the VPC CIDR {vcidr} to `local`; remove this route"
                        ),
                    );
                } else if let Some(first) = seen.get(&dest) {
                    let line = self.line_of(*first);
                    self.error(
                        route.destination.span(),
                        format!("{rp}.destination"),
                        format!(
                            "duplicate route for {dest} in route table {}",
                            table.name.get_ref()
                        ),
                        format!("the first route for {dest} is on line {line}; keep one of them"),
                    );
                } else {
                    seen.insert(dest, route.destination.span().start);
                }
                let target = match route.target.get_ref() {
                    RouteTarget::Local => {
                        if !vcidr.covers(dest) {
                            self.error(
                                route.target.span(),
                                format!("{rp}.target"),
                                format!(
                                    "a `local` route for {dest} points outside VPC {vname}'s CIDR {vcidr}"
                                ),
                                "`local` delivers inside the VPC only; send this destination to \"internet\", \"nat:GATEWAY\" or \"blackhole\"",
                            );
                        }
                        RouteTargetPlan::Local
                    }
                    RouteTarget::Blackhole => RouteTargetPlan::Blackhole,
                    RouteTarget::Internet => RouteTargetPlan::Internet,
                    RouteTarget::Nat(g) => match gateways_by_name.get(g.as_str()) {
                        Some(gi) => RouteTargetPlan::Nat(*gi),
                        None => {
                            let hint = unknown_hint(
                                g,
                                gateways_by_name.keys().copied(),
                                "NAT gateways",
                                &format!("define it with [[vpc.nat_gateway]] in VPC {vname}"),
                            );
                            self.error(
                                route.target.span(),
                                format!("{rp}.target"),
                                format!("unknown NAT gateway `{g}` in VPC {vname}"),
                                hint,
                            );
                            RouteTargetPlan::Blackhole
                        }
                    },
                };
                routes.push(RoutePlan {
                    destination: dest,
                    target,
                });
            }
            route_tables.push(RouteTablePlan {
                name: table.name.get_ref().clone(),
                routes,
            });
        }
        (route_tables, tables_by_name)
    }

    /// The subnets, and for each whether instances may take addresses in it (it passed its
    /// CIDR checks).
    fn check_subnets(
        &mut self,
        scope: &VpcScope<'_>,
        tables_by_name: &HashMap<&str, usize>,
    ) -> (Vec<SubnetPlan>, Vec<bool>) {
        let (vpc, vname, vcidr) = (scope.vpc, scope.name, scope.cidr);
        let acls_by_name = &scope.network_acls;
        let mut subnets = Vec::new();
        let mut usable = vec![false; vpc.subnet.len()];
        for (si, (s, sp)) in vpc.subnet.iter().zip(&scope.sub_paths).enumerate() {
            let c = *s.cidr.get_ref();
            let mut ok = true;
            if !vcidr.covers(c) {
                ok = false;
                self.error(
                    s.cidr.span(),
                    format!("{sp}.cidr"),
                    format!("subnet {c} is outside its VPC's CIDR {vcidr}"),
                    format!("choose a subnet CIDR inside {vcidr}, or widen the VPC's cidr"),
                );
            }
            if c.prefix_len() > MAX_SUBNET_PREFIX {
                ok = false;
                self.error(
                    s.cidr.span(),
                    format!("{sp}.cidr"),
                    format!("subnet {c} is too small to have a usable address"),
                    "use a /30 or larger: the network address, the `.1` gateway and the broadcast address are reserved",
                );
            }
            if let Some((other, o)) = vpc.subnet[..si]
                .iter()
                .map(|o| (o, *o.cidr.get_ref()))
                .find(|(_, o)| o.overlaps(c))
            {
                ok = false;
                self.error(
                    s.cidr.span(),
                    format!("{sp}.cidr"),
                    format!(
                        "subnet {} ({c}) overlaps subnet {} ({o}) in VPC {vname}",
                        s.name.get_ref(),
                        other.name.get_ref()
                    ),
                    format!("subnets of one VPC must not overlap; choose a CIDR outside {o}"),
                );
            }
            usable[si] = ok;
            let route_table = match &s.route_table {
                None => 0,
                Some(t) => match tables_by_name.get(t.get_ref().as_str()) {
                    Some(i) => *i,
                    None => {
                        let hint = unknown_hint(
                            t.get_ref(),
                            tables_by_name.keys().copied(),
                            "route tables",
                            &format!("define it with [[vpc.route_table]] in VPC {vname}"),
                        );
                        self.error(
                            t.span(),
                            format!("{sp}.route_table"),
                            format!("unknown route table `{}` in VPC {vname}", t.get_ref()),
                            hint,
                        );
                        0
                    }
                },
            };
            let network_acl = match &s.network_acl {
                None => None,
                Some(a) => match acls_by_name.get(a.get_ref().as_str()) {
                    Some(i) => Some(*i),
                    None => {
                        let hint = unknown_hint(
                            a.get_ref(),
                            acls_by_name.keys().copied(),
                            "network ACLs",
                            &format!("define it with [[vpc.network_acl]] in VPC {vname}"),
                        );
                        self.error(
                            a.span(),
                            format!("{sp}.network_acl"),
                            format!("unknown network ACL `{}` in VPC {vname}", a.get_ref()),
                            hint,
                        );
                        None
                    }
                },
            };
            subnets.push(SubnetPlan {
                name: s.name.get_ref().clone(),
                cidr: c,
                gateway: c.gateway(),
                route_table,
                network_acl,
            });
        }
        (subnets, usable)
    }

    /// Resolves the subnets of NAT gateways and instances and gives each an address: explicit
    /// ones first (in file order), then the first free one, gateways before instances.
    fn assign_addresses(&mut self, s: &VpcScope<'_>, usable: &[bool]) -> Addresses {
        let (vpc, vname) = (s.vpc, s.name);
        let mut used: HashMap<Ipv4Addr, Holder> = HashMap::new();
        let resolver = crate::tables::resolver_address(*vpc.cidr.get_ref());
        let gw_subnet: Vec<Option<usize>> = vpc
            .nat_gateway
            .iter()
            .zip(&s.gw_paths)
            .map(|(g, gp)| {
                self.resolve_subnet(&g.subnet, &format!("{gp}.subnet"), &s.subnets, vname)
            })
            .collect();
        let inst_subnet: Vec<Option<usize>> = vpc
            .instance
            .iter()
            .zip(&s.inst_paths)
            .map(|(i, ip)| {
                self.resolve_subnet(&i.subnet, &format!("{ip}.subnet"), &s.subnets, vname)
            })
            .collect();
        let explicit = vpc
            .nat_gateway
            .iter()
            .zip(&s.gw_paths)
            .zip(&gw_subnet)
            .map(|((g, p), si)| (&g.ip, p, *si, format!("NAT gateway {}", g.name.get_ref())))
            .chain(
                vpc.instance
                    .iter()
                    .zip(&s.inst_paths)
                    .zip(&inst_subnet)
                    .map(|((i, p), si)| (&i.ip, p, *si, format!("instance {}", i.name.get_ref()))),
            );
        let mut explicit_items: Vec<_> = explicit
            .filter_map(|(ip, p, si, what)| ip.as_ref().map(|ip| (ip, p, si, what)))
            .collect();
        explicit_items.sort_by_key(|(ip, ..)| ip.span().start);
        for (ip, p, si, what) in explicit_items {
            let addr = ip.get_ref().0;
            if let Some(si) = si.filter(|si| usable[*si]) {
                let sub = &vpc.subnet[si];
                let c = *sub.cidr.get_ref();
                let range_hint = format!(
                    "choose an address from {} to {}, or leave out `ip` to get the first free one",
                    first_host(c),
                    last_host(c)
                );
                if !c.contains(addr) {
                    self.error(
                        ip.span(),
                        format!("{p}.ip"),
                        format!(
                            "{what}'s address {addr} is outside its subnet {} ({c})",
                            sub.name.get_ref()
                        ),
                        range_hint,
                    );
                    continue;
                }
                if let Some(role) = reserved_role(c, addr) {
                    self.error(
                        ip.span(),
                        format!("{p}.ip"),
                        format!(
                            "address {addr} is reserved in subnet {} ({c}): it is the {role}",
                            sub.name.get_ref()
                        ),
                        range_hint,
                    );
                    continue;
                }
            }
            if addr == resolver {
                self.error(
                    ip.span(),
                    format!("{p}.ip"),
                    format!("address {addr} is VPC {vname}'s resolver (the VPC CIDR's base + 2)"),
                    "the resolver answers DNS at that address; choose another address, or leave out `ip` to get a free one",
                );
                continue;
            }
            if let Some(h) = used.get(&addr) {
                let (hw, hl) = (h.what.clone(), h.line);
                self.error(
                    ip.span(),
                    format!("{p}.ip"),
                    format!("address {addr} is already used by {hw} (line {hl}) in VPC {vname}"),
                    "each instance and NAT gateway of a VPC needs its own address; leave out `ip` to get a free one",
                );
                continue;
            }
            let line = self.line_of(ip.span().start);
            used.insert(addr, Holder { what, line });
        }
        // After the explicit addresses: the resolver's is never handed out.
        used.insert(
            resolver,
            Holder {
                what: "the VPC resolver".to_string(),
                line: self.line_of(vpc.cidr.span().start),
            },
        );
        let free_subnet = |si: Option<usize>| {
            si.filter(|i| usable.get(*i) == Some(&true))
                .and_then(|i| vpc.subnet.get(i))
        };
        let gw_ips: Vec<Ipv4Addr> = vpc
            .nat_gateway
            .iter()
            .zip(&s.gw_paths)
            .zip(&gw_subnet)
            .map(|((g, p), si)| match &g.ip {
                Some(ip) => ip.get_ref().0,
                None => {
                    let what = format!("NAT gateway {}", g.name.get_ref());
                    self.first_free(&mut used, free_subnet(*si), &g.name, p, what)
                }
            })
            .collect();
        let inst_ips: Vec<Ipv4Addr> = vpc
            .instance
            .iter()
            .zip(&s.inst_paths)
            .zip(&inst_subnet)
            .map(|((i, p), si)| match &i.ip {
                Some(ip) => ip.get_ref().0,
                None => {
                    let what = format!("instance {}", i.name.get_ref());
                    self.first_free(&mut used, free_subnet(*si), &i.name, p, what)
                }
            })
            .collect();
        Addresses {
            gw_subnet,
            inst_subnet,
            gw_ips,
            inst_ips,
        }
    }

    /// The first free address of `subnet` (`None`: unresolved or unusable), recorded in `used`;
    /// `0.0.0.0` when there is none (reported at `name`).
    fn first_free(
        &mut self,
        used: &mut HashMap<Ipv4Addr, Holder>,
        subnet: Option<&model::Subnet>,
        name: &Spanned<String>,
        path: &str,
        what: String,
    ) -> Ipv4Addr {
        let Some(subnet) = subnet else {
            return Ipv4Addr::UNSPECIFIED;
        };
        let c = *subnet.cidr.get_ref();
        let mut a = u32::from(first_host(c));
        let last = u32::from(last_host(c));
        while a <= last && used.contains_key(&Ipv4Addr::from(a)) {
            a += 1;
        }
        if a > last {
            self.error(
                name.span(),
                format!("{path}.name"),
                format!(
                    "subnet {} ({c}) has no free address left for {what}",
                    subnet.name.get_ref()
                ),
                "use a larger subnet, or attach it to another subnet",
            );
            return Ipv4Addr::UNSPECIFIED;
        }
        let addr = Ipv4Addr::from(a);
        let line = self.line_of(name.span().start);
        used.insert(addr, Holder { what, line });
        addr
    }

    fn check_instances(
        &mut self,
        s: &VpcScope<'_>,
        addrs: &Addresses,
        eip_index: &HashMap<&str, usize>,
        eip_uses: &mut Vec<EipUse>,
    ) -> Vec<std::sync::Arc<InstancePlan>> {
        let (vpc, vname) = (s.vpc, s.name);
        let mut instances = Vec::new();
        for (ii, (inst, ip)) in vpc.instance.iter().zip(&s.inst_paths).enumerate() {
            let mut security_groups = Vec::new();
            for (k, g) in inst.security_groups.iter().enumerate() {
                match s.security_groups.get(g.get_ref().as_str()) {
                    Some(i) => security_groups.push(*i),
                    None => {
                        let hint = unknown_hint(
                            g.get_ref(),
                            s.security_groups.keys().copied(),
                            "security groups",
                            &format!("define it with [[vpc.security_group]] in VPC {vname}"),
                        );
                        self.error(
                            g.span(),
                            format!("{ip}.security_groups[{k}]"),
                            format!("unknown security group `{}` in VPC {vname}", g.get_ref()),
                            hint,
                        );
                    }
                }
            }
            let eip = inst.eip.as_ref().and_then(|e| {
                let ei = self.resolve_eip(e, &format!("{ip}.eip"), eip_index)?;
                eip_uses.push(EipUse {
                    eip: ei,
                    binding: EipBinding::Instance {
                        vpc: s.vi,
                        instance: ii,
                    },
                    what: format!("instance {vname}/{}", inst.name.get_ref()),
                    span: e.span(),
                    path: format!("{ip}.eip"),
                });
                Some(ei)
            });
            let mtu = self.check_mtu(inst.mtu.as_ref(), ip);
            instances.push(std::sync::Arc::new(InstancePlan {
                name: inst.name.get_ref().clone(),
                port: format!("{vname}/{}", inst.name.get_ref()).into(),
                subnet: addrs.inst_subnet.get(ii).copied().flatten().unwrap_or(0),
                ip: addrs
                    .inst_ips
                    .get(ii)
                    .copied()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
                attach: inst.attach,
                mtu,
                eip,
                security_groups,
            }));
        }
        instances
    }

    pub(super) fn check_mtu(&mut self, mtu: Option<&Spanned<u32>>, path: &str) -> u32 {
        let Some(m) = mtu else {
            return model::DEFAULT_MTU;
        };
        let v = *m.get_ref();
        if !(MIN_MTU..=MAX_MTU).contains(&v) {
            self.error(
                m.span(),
                format!("{path}.mtu"),
                format!("MTU {v} is out of range"),
                format!(
                    "use an MTU from {MIN_MTU} to {MAX_MTU}, or leave out `mtu` for {}",
                    model::DEFAULT_MTU
                ),
            );
        }
        v
    }
}

/// The first address an instance may use: after the network address and the `.1` gateway.
pub(crate) fn first_host(c: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(c.network()).saturating_add(2))
}

/// The last address an instance may use: before broadcast.
pub(crate) fn last_host(c: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(c.broadcast()).saturating_sub(1))
}

/// Which reserved role `addr` plays in subnet `c`, if any.
pub(crate) fn reserved_role(c: Cidr, addr: Ipv4Addr) -> Option<&'static str> {
    if addr == c.network() {
        Some("network address")
    } else if addr == c.gateway() {
        Some("subnet gateway (.1)")
    } else if addr == c.broadcast() {
        Some("broadcast address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_usable_addresses() {
        let c: Cidr = "10.0.1.0/24".parse().unwrap();
        assert_eq!(
            reserved_role(c, Ipv4Addr::new(10, 0, 1, 1)),
            Some("subnet gateway (.1)")
        );
        assert_eq!(reserved_role(c, Ipv4Addr::new(10, 0, 1, 2)), None);
        assert_eq!(first_host(c), Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(last_host(c), Ipv4Addr::new(10, 0, 1, 254));
    }
}
