//! The walk: the hop-by-hop decisions of `vpcd explain`, in the fabric's order, each taken by
//! the function the fabric itself calls (`route` in a VPC, `public` on the public segment, the
//! firewall's security group and network ACL checks) and described as one line of text.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::query::Query;
use super::render::{acl_rule_text, group_names, proto_name, proto_text, sg_rule_text};
use super::{FirstPacket, UplinkFlow};
use crate::dataplane::firewall::{self, AclDecision, AclDirection, Facts, Kind, SgDirection};
use crate::dataplane::nat::config::Filtering;
use crate::dataplane::public::{EipTarget, PublicNext, public_next};
use crate::dataplane::route::{self, Next};
use crate::dataplane::{DropReason, PortId};
use crate::tables::{NatGatewayTable, PortOwner, Tables, VpcTable};
use crate::topology::model::TargetHost;
use crate::topology::plan::{EipBinding, Endpoint, Plan, RouteTargetPlan};

/// Where the walk stopped.
pub(super) struct Blocked {
    pub component: String,
    pub label: &'static str,
    /// The drop the fabric counts, if the first packet is the one dropped.
    pub reason: Option<DropReason>,
}

fn blocked(component: impl Into<String>, reason: DropReason) -> Blocked {
    Blocked {
        component: component.into(),
        label: reason.label(),
        reason: Some(reason),
    }
}

/// An instance as the walk needs it.
#[derive(Clone, Copy)]
struct Inst {
    vpc: usize,
    subnet: u32,
    instance: u32,
    port: PortId,
}

struct Walk<'a> {
    plan: &'a Plan,
    tables: &'a Tables,
    hops: Vec<String>,
    /// What happened to the first packet, once known.
    first: Option<FirstPacket>,
    /// The session SNAT opened: (EIP, external port, private address, private port).
    snat: Option<(Ipv4Addr, u16, Ipv4Addr, u16)>,
    /// The NAT gateway that opened it, and how it filters what comes back.
    sender_nat: Option<(String, Filtering)>,
    /// The flow out through the uplink, and the index of its hop.
    uplink: Option<(UplinkFlow, usize)>,
    /// Where the reply comes from when it does not come back through the same translation (a
    /// 1:1 EIP whose instance routes its replies to a NAT gateway).
    reply_from: Option<Ipv4Addr>,
}

/// What the walk found: its hops, what happened to the first packet, and where it stopped.
pub(super) struct Trace {
    pub hops: Vec<String>,
    pub first: Option<FirstPacket>,
    pub uplink: Option<(UplinkFlow, usize)>,
    pub end: Result<(), Blocked>,
}

/// Walks `q`'s first packet (`facts`) and its reply through `tables`.
pub(super) fn walk(plan: &Plan, tables: &Tables, q: &Query, facts: Facts) -> Trace {
    let mut w = Walk {
        plan,
        tables,
        hops: Vec::new(),
        first: None,
        snat: None,
        sender_nat: None,
        uplink: None,
        reply_from: None,
    };
    let end = w.start(q, facts);
    Trace {
        hops: w.hops,
        first: w.first,
        uplink: w.uplink,
        end,
    }
}

impl Walk<'_> {
    fn hop(&mut self, text: impl Into<String>) {
        self.hops.push(text.into());
    }

    fn vpc(&self, vi: usize) -> &VpcTable {
        &self.tables.vpcs[vi]
    }

    fn inst_of_port(&self, port: PortId) -> Option<Inst> {
        match self.tables.port(port)?.owner {
            PortOwner::Instance {
                vpc,
                subnet,
                instance,
            } => Some(Inst {
                vpc: vpc as usize,
                subnet,
                instance,
                port,
            }),
            PortOwner::Host { .. } | PortOwner::Uplink | PortOwner::Resolver { .. } => None,
        }
    }

    fn port_name(&self, port: PortId) -> String {
        self.tables
            .port(port)
            .map_or_else(|| format!("port {}", port.0), |p| p.name.to_string())
    }

    fn subnet_name(&self, vi: usize, subnet: u32) -> String {
        self.vpc(vi)
            .subnets
            .get(subnet as usize)
            .map_or_else(|| format!("#{subnet}"), |s| s.name.clone())
    }

    fn start(&mut self, q: &Query, facts: Facts) -> Result<(), Blocked> {
        let port = self.tables.port_of(q.from);
        let name = self.port_name(port);
        if let TargetHost::Dns(dns) = &q.to.host {
            let asked = match q.from {
                Endpoint::Instance { vpc, .. } => {
                    format!("VPC {}'s resolver", self.plan.vpcs[vpc].name)
                }
                Endpoint::Host(_) => "the simulated internet's names".to_string(),
            };
            self.hop(format!(
                "{dns} is {} (the A record {asked} answers)",
                q.to_addr
            ));
        }
        self.hop(format!(
            "port {name}: source {} is the port's own address (anti-spoofing): pass",
            facts.src
        ));
        if route::is_martian(facts.dst) {
            self.hop(format!(
                "{}: a broadcast, multicast or reserved address; nothing delivers to it",
                facts.dst
            ));
            return Err(blocked(
                "the fabric (martian destination)",
                DropReason::Martian,
            ));
        }
        match self.inst_of_port(port) {
            Some(from) => self.leave_instance(q, from, facts),
            None => {
                let to = self.public(q, facts)?;
                self.check_target(q, to)
            }
        }
    }

    /// Whether the packet landed where the query said.
    fn check_target(&mut self, q: &Query, landed: PortId) -> Result<(), Blocked> {
        let Some(e) = q.to_endpoint else {
            return Ok(());
        };
        let want = self.tables.port_of(e);
        if want == landed {
            return Ok(());
        }
        let (got, want) = (self.port_name(landed), self.port_name(want));
        self.hop(format!(
            "{got} has the address, but the target is {want}: VPCs are isolated, a private address \
             only ever reaches the sender's own VPC"
        ));
        Err(Blocked {
            component: format!("VPC isolation (reaches {got}, not {want})"),
            label: "wrong_target",
            reason: None,
        })
    }

    fn leave_instance(&mut self, q: &Query, from: Inst, facts: Facts) -> Result<(), Blocked> {
        let vi = from.vpc;
        if self.vpc(vi).is_resolver(facts.dst) {
            // The fabric's own test, before any route (`fabric.rs`, `from_instance`).
            self.hop(format!(
                "{} is the VPC resolver (DNS on port 53): reached from every subnet, not \
                 filtered by routes, security groups or network ACLs",
                facts.dst
            ));
            self.deliver(self.vpc(vi).resolver.port);
            return self.resolver_serves(vi, facts);
        }
        let vplan = &self.plan.vpcs[vi];
        let subnet = self.subnet_name(vi, from.subnet);
        let (rt, m) = match route::lookup_route(self.vpc(vi), from.subnet as usize, facts.dst) {
            Ok(r) => r,
            Err(reason) => {
                self.hop(format!(
                    "route table of subnet `{subnet}`: no route covers {}",
                    facts.dst
                ));
                return Err(blocked(
                    format!("the route table of subnet {subnet}"),
                    reason,
                ));
            }
        };
        let rt_name = self.vpc(vi).route_tables[rt].name.clone();
        let target = m.target.describe(vplan);
        self.hop(format!(
            "route table `{rt_name}` of subnet `{subnet}`: {} -> {target} (longest prefix for {})",
            m.prefix, facts.dst
        ));
        let Some(port_info) = self.tables.port(from.port) else {
            return Err(blocked("the fabric", DropReason::UnknownPort));
        };
        let next = match route::next_hop(self.vpc(vi), m, port_info, facts.dst) {
            Ok(n) => n,
            Err(reason) => {
                let why = match reason {
                    DropReason::NoSuchHost => {
                        format!("no instance of VPC {} has {}", vplan.name, facts.dst)
                    }
                    DropReason::Blackhole => "the route is a blackhole".to_string(),
                    DropReason::NoPublicAddress => {
                        "the route goes to the internet gateway, but the instance has no EIP"
                            .to_string()
                    }
                    other => other.describe().to_string(),
                };
                self.hop(why);
                return Err(blocked(
                    format!("route table {rt_name} ({} -> {target})", m.prefix),
                    reason,
                ));
            }
        };
        match next {
            Next::Gateway => {
                if matches!(facts.kind, Kind::Icmp { icmp_type: 8, .. }) {
                    self.hop(format!(
                        "{} is the subnet gateway: it answers echo itself (not filtered by \
                         security groups or network ACLs)",
                        facts.dst
                    ));
                    self.first = Some(FirstPacket::Answered);
                    Ok(())
                } else {
                    self.hop(format!(
                        "{} is the subnet gateway: it answers ICMP echo only",
                        facts.dst
                    ));
                    Err(blocked("the subnet gateway", DropReason::ToGateway))
                }
            }
            Next::Deliver(egress) => {
                let Some(to) = self.inst_of_port(egress) else {
                    return Err(blocked("the fabric", DropReason::UnknownPort));
                };
                self.within(from, to, facts)?;
                self.check_target(q, egress)?;
                self.hop("return path: replies pass the security groups as a tracked flow");
                if from.subnet != to.subnet {
                    let reply = facts.reversed();
                    self.acl(to.vpc, to.subnet, AclDirection::Outbound, &reply, true)?;
                    self.acl(from.vpc, from.subnet, AclDirection::Inbound, &reply, true)?;
                }
                Ok(())
            }
            Next::Nat(g) => {
                self.sg(from, SgDirection::Egress, &facts)?;
                self.egress_allow(vi, &facts)?;
                self.acl(vi, from.subnet, AclDirection::Outbound, &facts, false)?;
                let translated = self.snat(from, g, facts)?;
                let landed = self.public(q, translated)?;
                self.check_target(q, landed)?;
                self.return_into(from, &facts)
            }
            Next::InternetGateway => {
                self.sg(from, SgDirection::Egress, &facts)?;
                self.egress_allow(vi, &facts)?;
                self.acl(vi, from.subnet, AclDirection::Outbound, &facts, false)?;
                let eip = port_info.eip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                self.hop(format!(
                    "internet gateway: 1:1 EIP, source {} -> {eip} (not a visible hop)",
                    facts.src
                ));
                let translated = Facts { src: eip, ..facts };
                let landed = self.public(q, translated)?;
                self.check_target(q, landed)?;
                self.return_into(from, &facts)
            }
        }
    }

    /// The reply of a flow that left `from`'s VPC comes back in: its subnet's inbound ACL. A
    /// reply that left its VPC from another address (`reply_from`) is no reply for the sender's
    /// translation: a filtering NAT gateway drops it, otherwise it enters as a new flow.
    fn return_into(&mut self, from: Inst, facts: &Facts) -> Result<(), Blocked> {
        let Some(other) = self.reply_from else {
            self.hop(
                "return path: the reply comes back through the same translation; it passes the \
                 security groups as a tracked flow",
            );
            let reply = facts.reversed();
            return self.acl(from.vpc, from.subnet, AclDirection::Inbound, &reply, true);
        };
        if let Some((name, filtering)) = self.sender_nat.clone()
            && filtering != Filtering::EndpointIndependent
        {
            self.hop(format!(
                "return path: the reply comes from {other}, not from {}: NAT gateway `{name}` \
                 takes replies only from where its session went ({filtering:?} filtering)",
                facts.dst
            ));
            return Err(Blocked {
                component: format!("NAT gateway {name} (reply from {other})"),
                label: DropReason::NatFiltered.label(),
                reason: None,
            });
        }
        self.hop(format!(
            "return path: the reply comes from {other}, not from {}: no tracked flow covers it",
            facts.dst
        ));
        let reply = Facts {
            src: other,
            ..facts.reversed()
        };
        self.acl(from.vpc, from.subnet, AclDirection::Inbound, &reply, true)?;
        let at = self.hops.len();
        let checked = self.sg(from, SgDirection::Ingress, &reply);
        if let Some(h) = self.hops.get_mut(at) {
            h.insert_str(0, "return path: ");
        }
        checked.map_err(|b| Blocked {
            component: format!("{} on the return path", b.component),
            label: b.label,
            reason: None,
        })
    }

    /// Instance to instance in one VPC.
    fn within(&mut self, from: Inst, to: Inst, facts: Facts) -> Result<(), Blocked> {
        self.sg(from, SgDirection::Egress, &facts)?;
        if from.subnet == to.subnet {
            let s = self.subnet_name(from.vpc, from.subnet);
            self.hop(format!(
                "same subnet `{s}`: network ACLs apply only at the subnet edge, not here"
            ));
        } else {
            self.acl(from.vpc, from.subnet, AclDirection::Outbound, &facts, false)?;
            self.acl(to.vpc, to.subnet, AclDirection::Inbound, &facts, false)?;
        }
        self.sg(to, SgDirection::Ingress, &facts)?;
        self.deliver(to.port);
        Ok(())
    }

    fn deliver(&mut self, port: PortId) {
        let name = self.port_name(port);
        self.hop(format!("delivered to {name}"));
        self.first = Some(FirstPacket::Delivered(port));
    }

    /// What the resolver of VPC `vi` does with a packet the fabric delivered to it: it serves
    /// DNS on 53/udp and 53/tcp and answers ICMP echo (`sim::resolver`, smoltcp's interface);
    /// any other port is closed (a TCP reset, an ICMP port unreachable), as a probe sees.
    fn resolver_serves(&mut self, vi: usize, facts: Facts) -> Result<(), Blocked> {
        let served = match facts.kind {
            Kind::Tcp { .. } | Kind::Udp => facts.dport == crate::sim::resolver::DNS_PORT,
            Kind::Icmp { icmp_type: 8, .. } => true,
            _ => false,
        };
        if served {
            return Ok(());
        }
        let what = match facts.kind {
            Kind::Tcp { .. } => {
                format!("{}/tcp is closed (answered with a TCP reset)", facts.dport)
            }
            Kind::Udp => format!(
                "{}/udp is closed (answered with ICMP port unreachable)",
                facts.dport
            ),
            _ => "this packet gets no answer".to_string(),
        };
        self.hop(format!(
            "the VPC resolver serves DNS on 53/udp and 53/tcp only (and answers ping): {what}"
        ));
        Err(Blocked {
            component: format!(
                "VPC {}'s resolver (serves 53/udp and 53/tcp only)",
                self.vpc(vi).name
            ),
            label: "resolver_port_closed",
            reason: None,
        })
    }

    /// SNAT through NAT gateway `g` of `from`'s VPC; returns the translated facts.
    fn snat(&mut self, from: Inst, g: usize, facts: Facts) -> Result<Facts, Blocked> {
        let Some(table) = self.vpc(from.vpc).nat_gateways.get(g) else {
            return Err(blocked("the route's NAT gateway", DropReason::NoRoute));
        };
        let name = table.name.clone();
        let filtering = table.config.filtering;
        let Some(pool) = table.pool_for(facts.src) else {
            self.hop(format!(
                "NAT gateway `{name}`: no SNAT entry covers the source {}",
                facts.src
            ));
            return Err(blocked(
                format!("NAT gateway {name}"),
                DropReason::NoSnatRule,
            ));
        };
        let entry = table
            .snat
            .iter()
            .filter(|(c, _)| c.contains(facts.src))
            .max_by_key(|(c, _)| c.prefix_len())
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        let pool_eips = table
            .pools
            .get(pool as usize)
            .map(|p| p.eips.clone())
            .unwrap_or_default();
        let (eip, any) = snat_source(table, pool, facts.src);
        let Some(eip) = eip else {
            return Err(blocked(format!("NAT gateway {name}"), DropReason::NatNoEip));
        };
        let pool_text = pool_eips
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let port_text = match facts.kind {
            Kind::Icmp { .. } => format!("identifier {}", facts.sport),
            _ => format!("port {}", facts.sport),
        };
        self.hop(format!(
            "NAT gateway `{name}` ({}, a visible hop): SNAT {} -> {eip}, {port_text} kept \
             (SNAT entry {entry}, pool [{pool_text}]{})",
            table.ip,
            facts.src,
            if any {
                "; the instance's whole-address DNAT EIP"
            } else {
                ""
            }
        ));
        self.snat = Some((eip, facts.sport, facts.src, facts.sport));
        self.sender_nat = Some((name, filtering));
        Ok(Facts { src: eip, ..facts })
    }

    /// The public segment, by the decision the fabric takes ([`public_next`]): a host, the
    /// uplink, or back in through an EIP. Returns the port reached.
    fn public(&mut self, q: &Query, facts: Facts) -> Result<PortId, Blocked> {
        let dst = facts.dst;
        let ingress = self.tables.port_of(q.from);
        let eip_name = self
            .tables
            .internet
            .eips
            .get(&dst)
            .and_then(|e| self.plan.eips.get(e.index as usize))
            .map_or_else(String::new, |e| e.name.clone());
        match public_next(self.tables, ingress, dst) {
            Ok(PublicNext::Host(port)) => {
                self.public_host(port, dst);
                Ok(port)
            }
            Ok(PublicNext::Uplink(uplink)) => {
                self.uplink(uplink, &facts);
                Ok(uplink)
            }
            Ok(PublicNext::Eip(EipTarget::OneToOne { vpc, instance })) => {
                let port = self.tables.port_of(Endpoint::Instance { vpc, instance });
                let Some(to) = self.inst_of_port(port) else {
                    return Err(blocked("the fabric", DropReason::UnboundEip));
                };
                let ip = self.tables.port(port).map_or(dst, |p| p.addr);
                let name = self.port_name(port);
                self.hop(format!(
                    "EIP `{eip_name}` ({dst}) is {name}'s 1:1 address: destination -> {ip}"
                ));
                self.enter(q, to, Facts { dst: ip, ..facts })?;
                self.one_to_one_return_route(&to, &facts)?;
                Ok(port)
            }
            Ok(PublicNext::Eip(EipTarget::NatGateway { vpc, gateway, .. })) => {
                self.nat_gateway_eip(q, vpc, gateway, &eip_name, facts)
            }
            Err(DropReason::NoSuchHost) => {
                self.hop(format!("internet: no host or EIP has {dst}"));
                Err(blocked("the public segment", DropReason::NoSuchHost))
            }
            Err(reason) => {
                let unbound = self
                    .tables
                    .internet
                    .eips
                    .get(&dst)
                    .is_some_and(|e| e.binding == EipBinding::Unbound);
                if !unbound {
                    return Err(blocked("the fabric", reason));
                }
                self.hop(format!("EIP `{eip_name}` ({dst}) is not associated"));
                Err(blocked(format!("EIP {eip_name}"), reason))
            }
        }
    }

    /// Delivered to public host `port` (at `dst`).
    fn public_host(&mut self, port: PortId, dst: Ipv4Addr) {
        let name = self.port_name(port);
        let serves = match self.tables.port(port).map(|p| p.owner) {
            Some(PortOwner::Host { host }) => self
                .plan
                .internet
                .hosts
                .get(host as usize)
                .map(|h| {
                    h.serve
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        let serves = if serves.is_empty() {
            String::new()
        } else {
            format!(" (serves {serves})")
        };
        self.hop(format!(
            "internet: {dst} is {name}{serves}; internet hosts have no security groups"
        ));
        self.deliver(port);
    }

    /// Out through the uplink: the host's network carries the flow, from a host socket at the
    /// EIP's `host_bind` (else every address) and, for TCP and UDP, the mapping's port when the
    /// host has it free.
    fn uplink(&mut self, uplink: PortId, facts: &Facts) {
        let bind = self
            .plan
            .eips
            .iter()
            .find(|e| e.address == facts.src)
            .and_then(|e| e.host_bind);
        let ported = matches!(facts.proto, 6 | 17);
        let at = match (bind, ported) {
            (Some(h), true) => format!(
                "a host socket at {h}:{} (host_bind of {}; the mapping's port when the host \
                 has it free, else one the host picks)",
                facts.sport, facts.src
            ),
            (Some(h), false) => format!("a host socket bound to {h} (host_bind of {})", facts.src),
            (None, true) => format!(
                "a host socket at port {} of every host address (the mapping's port when the \
                 host has it free, else one the host picks)",
                facts.sport
            ),
            (None, false) => "an unbound host socket".to_string(),
        };
        self.hop(format!(
            "internet: no host or EIP has {}: out through the uplink ({}); the host's network \
             carries the flow from {at}, its replies come back the same way",
            facts.dst,
            self.port_name(uplink)
        ));
        if ported {
            let internal = self
                .snat
                .filter(|s| s.0 == facts.src && s.1 == facts.sport)
                .map_or((facts.src, facts.sport), |s| (s.2, s.3));
            let flow = UplinkFlow {
                protocol: facts.proto,
                internal: SocketAddrV4::new(internal.0, internal.1),
                public: SocketAddrV4::new(facts.src, facts.sport),
                remote: SocketAddrV4::new(facts.dst, facts.dport),
            };
            self.uplink = Some((flow, self.hops.len() - 1));
        }
        self.deliver(uplink);
    }

    /// In through EIP `dst` of NAT gateway `gateway` of VPC `vpc`: the reply of the sender's own
    /// SNAT session (a hairpin to itself), a whole-address DNAT, or a port forward.
    fn nat_gateway_eip(
        &mut self,
        q: &Query,
        vpc: usize,
        gateway: usize,
        eip_name: &str,
        facts: Facts,
    ) -> Result<PortId, Blocked> {
        let dst = facts.dst;
        let Some(table) = self
            .tables
            .vpcs
            .get(vpc)
            .and_then(|v| v.nat_gateways.get(gateway))
        else {
            return Err(blocked("the fabric", DropReason::UnboundEip));
        };
        let gname = table.name.clone();
        let vname = self.vpc(vpc).name.clone();
        let proto = match facts.kind {
            Kind::Tcp { .. } => Some(crate::dataplane::nat::Proto::Tcp),
            Kind::Udp => Some(crate::dataplane::nat::Proto::Udp),
            _ => None,
        };
        // A packet to the very EIP and port its own SNAT session uses is that session's
        // "reply": the NAT sends it back to the sender (sessions come before DNAT).
        if let Some((eip, ext_port, int_ip, int_port)) = self.snat
            && eip == dst
            && facts.src == eip
            && facts.dport == ext_port
        {
            let Some(port) = self.vpc(vpc).hosts.get(&int_ip).copied() else {
                return Err(blocked("the fabric", DropReason::NoSuchHost));
            };
            let Some(to) = self.inst_of_port(port) else {
                return Err(blocked("the fabric", DropReason::NoSuchHost));
            };
            self.hop(format!(
                "EIP `{eip_name}` ({dst}) is the sender's own SNAT address and port: \
                     the NAT gateway `{gname}` takes the packet for the reply of the \
                     session it just opened and sends it back to {int_ip}:{int_port}"
            ));
            self.enter(
                q,
                to,
                Facts {
                    dst: int_ip,
                    dport: int_port,
                    ..facts
                },
            )?;
            return Ok(port);
        }
        let any = table.dnat_any.iter().find(|(_, e, _)| *e == dst).copied();
        let rule = table
            .dnat
            .iter()
            .map(|(_, r)| *r)
            .find(|r| r.external == (dst, facts.dport) && r.protocol == proto);
        let (ip, port_no, text) = if let Some((_, _, ip)) = any {
            (ip, facts.dport, format!("whole-address DNAT {dst} -> {ip}"))
        } else if let (Some(r), Some(_)) = (rule, proto) {
            (
                r.internal.0,
                r.internal.1,
                format!(
                    "DNAT {dst}:{}/{} -> {}:{}",
                    facts.dport,
                    proto_name(Some(facts.proto)),
                    r.internal.0,
                    r.internal.1
                ),
            )
        } else {
            self.hop(format!(
                "EIP `{eip_name}` ({dst}) belongs to NAT gateway `{gname}` of VPC \
                 {vname}: no DNAT entry for {} and no session to reply to",
                proto_text(&facts)
            ));
            return Err(blocked(
                format!("NAT gateway {gname} (no DNAT entry)"),
                DropReason::NatNoMapping,
            ));
        };
        let Some(port) = self.vpc(vpc).hosts.get(&ip).copied() else {
            return Err(blocked("the fabric", DropReason::NoSuchHost));
        };
        let Some(to) = self.inst_of_port(port) else {
            return Err(blocked("the fabric", DropReason::NoSuchHost));
        };
        let name = self.port_name(port);
        self.hop(format!(
            "EIP `{eip_name}` ({dst}) belongs to NAT gateway `{gname}` of VPC {vname} \
             (a visible hop): {text} ({name})"
        ));
        let dport = if matches!(facts.kind, Kind::Icmp { .. }) {
            facts.dport
        } else {
            port_no
        };
        self.enter(
            q,
            to,
            Facts {
                dst: ip,
                dport,
                ..facts
            },
        )?;
        Ok(port)
    }

    /// The VPC's egress allow-list, via the function the fabric uses (no list: nothing to say).
    fn egress_allow(&mut self, vi: usize, facts: &Facts) -> Result<(), Blocked> {
        let vpc = self.vpc(vi);
        let Some(rules) = vpc.egress_allow.as_ref() else {
            return Ok(());
        };
        let name = vpc.name.clone();
        let what = format!("{} to {}", proto_text(facts), facts.dst);
        if firewall::egress_allowed(vpc, facts) {
            let rule = rules
                .iter()
                .find(|r| r.allows(facts.proto, facts.dst, facts.dport()))
                .map_or_else(String::new, |r| format!(" by `{r}`"));
            self.hop(format!(
                "egress allow-list of VPC {name}: {what} allowed{rule}"
            ));
            Ok(())
        } else {
            let list = rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            self.hop(format!(
                "egress allow-list of VPC {name} [{list}]: no rule allows {what}"
            ));
            Err(blocked(
                format!("the egress allow-list of VPC {name}: no rule allows {what}"),
                DropReason::EgressNotAllowed,
            ))
        }
    }

    /// Into an instance from the public side, after translation; then the reply's way out.
    fn enter(&mut self, _q: &Query, to: Inst, facts: Facts) -> Result<(), Blocked> {
        self.acl(to.vpc, to.subnet, AclDirection::Inbound, &facts, false)?;
        self.sg(to, SgDirection::Ingress, &facts)?;
        self.deliver(to.port);
        self.hop(format!(
            "return path: the reply from {} passes its security groups as a tracked flow",
            self.port_name(to.port)
        ));
        let reply = facts.reversed();
        self.acl(to.vpc, to.subnet, AclDirection::Outbound, &reply, true)
    }

    /// A flow that came in through a 1:1 EIP must also go back out through it: the instance's
    /// reply follows its subnet's route table, and a route to a NAT gateway there sends the reply
    /// into a NAT that has no session for it (the asymmetric-routing pitfall of an EIP in a
    /// private subnet). A TCP reply is dropped there (`nat_tcp_no_session`), an echo reply too
    /// (`nat_no_mapping`); a UDP reply is translated as a new flow and leaves from the NAT
    /// gateway's EIP, which [`Walk::return_into`] follows (`reply_from`).
    fn one_to_one_return_route(&mut self, to: &Inst, facts: &Facts) -> Result<(), Blocked> {
        let Ok((_, m)) = route::lookup_route(self.vpc(to.vpc), to.subnet as usize, facts.src)
        else {
            return Ok(());
        };
        let RouteTargetPlan::Nat(g) = m.target else {
            return Ok(());
        };
        let table = self.vpc(to.vpc).nat_gateways.get(g);
        let gname = table.map_or("?", |t| t.name.as_str()).to_string();
        let route = format!(
            "return path: the reply to {} follows route {} -> nat:{gname}, not the internet \
             gateway of the 1:1 EIP",
            facts.src, m.prefix
        );
        let label = match facts.kind {
            Kind::Tcp { .. } => DropReason::NatTcpNoSession,
            Kind::Udp => {
                let own = self.tables.port(to.port).map_or(facts.dst, |p| p.addr);
                let source = table.and_then(|t| snat_source(t, t.pool_for(own)?, own).0);
                if let Some(eip) = source {
                    self.hop(format!(
                        "{route}: it leaves as a new flow, SNAT {own} -> {eip}"
                    ));
                    self.reply_from = Some(eip);
                    return Ok(());
                }
                self.hop(format!("{route}: no SNAT entry covers {own}"));
                return Err(Blocked {
                    component: format!("asymmetric return route via NAT gateway {gname}"),
                    label: DropReason::NoSnatRule.label(),
                    reason: None,
                });
            }
            _ => DropReason::NatNoMapping,
        };
        self.hop(format!("{route}: the NAT gateway has no session for it"));
        Err(Blocked {
            component: format!("asymmetric return route via NAT gateway {gname}"),
            label: label.label(),
            reason: None,
        })
    }

    /// A security group decision, via the function the fabric uses.
    fn sg(&mut self, inst: Inst, dir: SgDirection, facts: &Facts) -> Result<(), Blocked> {
        let vi = inst.vpc;
        let name = self.port_name(inst.port);
        let groups = group_names(self.vpc(vi), inst.instance);
        let (peer, towards) = match dir {
            SgDirection::Ingress => (facts.src, "from"),
            SgDirection::Egress => (facts.dst, "to"),
        };
        match firewall::sg_check(self.vpc(vi), inst.instance, dir, facts) {
            Some(m) => {
                let sgs = &self.vpc(vi).security_groups;
                let gname = sgs
                    .groups
                    .get(m.group as usize)
                    .map_or_else(String::new, |g| g.name.clone());
                let how = match (m.rule, sgs.rule(dir, m)) {
                    (Some(i), Some(r)) => format!(
                        "{} rule {i} ({})",
                        dir.as_str(),
                        sg_rule_text(self.vpc(vi), dir, r)
                    ),
                    _ => "(it has no egress rules: all egress allowed)".to_string(),
                };
                self.hop(format!(
                    "security groups of {name} [{groups}], {}: {} {towards} {peer} allowed by \
                     group `{gname}` {how}",
                    dir.as_str(),
                    proto_text(facts)
                ));
                Ok(())
            }
            None => {
                let peer_note = if dir == SgDirection::Ingress && !self.vpc(vi).cidr.contains(peer)
                {
                    " (a public source: only CIDR rules can match it, `sg:` peers match private \
                     addresses)"
                } else {
                    ""
                };
                self.hop(format!(
                    "security groups of {name} [{groups}], {}: no rule allows {} {towards} \
                     {peer}{peer_note}",
                    dir.as_str(),
                    proto_text(facts)
                ));
                let reason = match dir {
                    SgDirection::Ingress => DropReason::SecurityGroupIngress,
                    SgDirection::Egress => DropReason::SecurityGroupEgress,
                };
                let names = self
                    .vpc(vi)
                    .security_groups
                    .attached(inst.instance)
                    .iter()
                    .filter_map(|g| self.vpc(vi).security_groups.groups.get(*g as usize))
                    .map(|g| format!("`{}`", g.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let plural = if names.contains(", ") { "s" } else { "" };
                Err(blocked(
                    format!(
                        "security group{plural} {names} of {name}, {}: no rule allows {} {towards} {peer}",
                        dir.as_str(),
                        proto_text(facts)
                    ),
                    reason,
                ))
            }
        }
    }

    /// A network ACL decision, via the function the fabric uses. `reply`: on the return path
    /// (a block there does not stop the first packet).
    fn acl(
        &mut self,
        vi: usize,
        subnet: u32,
        dir: AclDirection,
        facts: &Facts,
        reply: bool,
    ) -> Result<(), Blocked> {
        let sname = self.subnet_name(vi, subnet);
        let vpc = self.vpc(vi);
        let acl = vpc
            .subnets
            .get(subnet as usize)
            .and_then(|s| s.network_acl)
            .and_then(|a| vpc.network_acls.get(a as usize));
        let acl_name = acl.map_or_else(String::new, |a| a.name.clone());
        let decision = firewall::acl_check(vpc, subnet, dir, facts);
        let (peer, towards) = match dir {
            AclDirection::Inbound => (facts.src, "from"),
            AclDirection::Outbound => (facts.dst, "to"),
        };
        let prefix = if reply { "return path: " } else { "" };
        let what = format!("{} {towards} {peer}", proto_text(facts));
        let text = match decision {
            AclDecision::DefaultAcl => format!(
                "{prefix}network ACL of subnet `{sname}`, {}: the default ACL allows {what}",
                dir.as_str()
            ),
            AclDecision::Rule {
                index,
                number,
                allow,
            } => {
                let r = acl.and_then(|a| a.rules(dir).get(index as usize));
                let rt = r.map_or_else(String::new, |r| acl_rule_text(r, towards));
                format!(
                    "{prefix}network ACL `{acl_name}` of subnet `{sname}`, {}: rule {number} \
                     ({rt}) {} {what}",
                    dir.as_str(),
                    if allow { "allows" } else { "denies" }
                )
            }
            AclDecision::ImplicitDeny => format!(
                "{prefix}network ACL `{acl_name}` of subnet `{sname}`, {}: no rule matches \
                 {what}; the implicit final rule (*) denies it",
                dir.as_str()
            ),
        };
        self.hop(text);
        if decision.allows() {
            return Ok(());
        }
        let which = match decision {
            AclDecision::Rule { number, .. } => format!("rule {number}"),
            _ => "implicit deny".to_string(),
        };
        let reason = match dir {
            AclDirection::Inbound => DropReason::NetworkAclInbound,
            AclDirection::Outbound => DropReason::NetworkAclOutbound,
        };
        let component = format!(
            "network ACL {acl_name} {} {which}{}",
            dir.as_str(),
            if reply { " on the return path" } else { "" }
        );
        if reply {
            // The first packet got through; the reply is what dies.
            return Err(Blocked {
                component,
                label: reason.label(),
                reason: None,
            });
        }
        Err(blocked(component, reason))
    }
}

/// The address a source leaves NAT gateway `table`'s pool `pool` from: the first EIP of the pool,
/// or the EIP of a whole-address DNAT of that source (then `true`).
fn snat_source(table: &NatGatewayTable, pool: u32, src: Ipv4Addr) -> (Option<Ipv4Addr>, bool) {
    let any = table
        .dnat_any
        .iter()
        .find(|(p, _, int)| *p == pool && *int == src)
        .map(|(_, eip, _)| *eip);
    let first = table
        .pools
        .get(pool as usize)
        .and_then(|p| p.eips.first().copied());
    (any.or(first), any.is_some())
}
