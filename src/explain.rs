//! `vpcd explain`: why a packet from one endpoint reaches (or does not reach) a target, found by
//! a static walk of the compiled tables — like a cloud's reachability analyzer, without sending a
//! packet.
//!
//! [`explain`] is a pure function of the plan and the compiled [`Tables`]: it never touches a
//! [`crate::dataplane::Fabric`] or its state. Every decision it reports comes from the functions
//! the fabric itself calls — [`route::lookup_route`] / [`route::next_hop`] for routing,
//! [`firewall::sg_check`] and [`firewall::acl_check`] for security groups and network ACLs, the
//! NAT gateway tables for SNAT pools and DNAT entries — so the walk and the dataplane cannot
//! drift apart; `tests/explain_props.rs` checks that they agree on random rule sets.
//!
//! The walk follows the fabric's order: port checks, martian filter, route, the sender's egress
//! security groups, the VPC's egress allow-list (on the way out), the network ACLs at each subnet
//! edge crossed, NAT (SNAT, the public segment — a host, an EIP, or the uplink to the host's
//! network — DNAT or a 1:1 EIP), the receiver's ingress security groups. Then the return path: replies pass
//! the security groups as a tracked flow, but network ACLs are stateless, so the walk checks the
//! reply against every ACL it crosses on the way back (destination port = the client's source
//! port). The verdict is `reachable` only when both ways pass.
//!
//! Assumptions (stated in the output where they matter): the first packet is a TCP SYN, a UDP
//! datagram or an ICMP echo request with TTL 64 and a size below every MTU; the client's source
//! port (and echo identifier) is `source_port` (default 49152, the first port the simulator's
//! probes use); a NAT gateway keeps the source port (its default; the `aws` profile picks a random
//! one) and uses the first EIP of the pool; no flow is tracked yet.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::dataplane::firewall::{
    self, AclDecision, AclDirection, Facts, Kind, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SgDirection,
    SgPeer, SgRuleTable,
};
use crate::dataplane::route::{self, Next};
use crate::dataplane::{DropReason, PortId};
use crate::tables::{PortOwner, Tables, VpcTable};
use crate::topology::model::{L4, ProbeTarget, TargetHost};
use crate::topology::plan::{EipBinding, Endpoint, Plan, RouteTargetPlan};

/// The source port (and ICMP echo identifier) assumed unless told otherwise.
pub const DEFAULT_SOURCE_PORT: u16 = 49152;

/// What to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: Endpoint,
    pub to: ProbeTarget,
    /// The target resolved to an endpoint when it names one.
    pub to_endpoint: Option<Endpoint>,
    pub to_addr: Ipv4Addr,
    pub source_port: u16,
}

/// What the fabric does with the flow's first packet, as the walk predicts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPacket {
    /// Forwarded out of this port.
    Delivered(PortId),
    /// Answered by the fabric (the subnet gateway's echo reply).
    Answered,
    /// Dropped for this reason.
    Dropped(DropReason),
}

/// The end of the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Reachable,
    Blocked {
        /// The blocking component, named (`network ACL web-acl inbound rule 100`).
        component: String,
        /// The drop reason's label, or `wrong_target` when the packet reaches someone else.
        label: &'static str,
    },
}

/// The result: numbered hops and a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `explain FROM -> TO (...)`.
    pub title: String,
    pub hops: Vec<String>,
    pub verdict: Verdict,
    pub first_packet: FirstPacket,
}

impl Explanation {
    /// `verdict: reachable` or `verdict: blocked by COMPONENT (LABEL)`.
    pub fn verdict_line(&self) -> String {
        match &self.verdict {
            Verdict::Reachable => "verdict: reachable".to_string(),
            Verdict::Blocked { component, label } => {
                format!("verdict: blocked by {component} ({label})")
            }
        }
    }

    pub fn reachable(&self) -> bool {
        self.verdict == Verdict::Reachable
    }

    /// The whole text: title, numbered hops, verdict line; ends with a newline.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.title);
        let width = self.hops.len().to_string().len();
        for (i, h) in self.hops.iter().enumerate() {
            let _ = writeln!(out, "{:>width$}. {h}", i + 1);
        }
        let _ = writeln!(out, "{}", self.verdict_line());
        out
    }
}

/// Why a query could not even be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("no endpoint named `{0}`; write VPC/INSTANCE or internet/HOST")]
    UnknownEndpoint(String),
    #[error("{0}")]
    BadTarget(String),
}

impl Query {
    /// Parses `FROM` (`VPC/INSTANCE` or `internet/HOST`) and `TO` (probe target syntax).
    pub fn parse(plan: &Plan, from: &str, to: &str) -> Result<Query, QueryError> {
        let endpoint = |name: &str| {
            name.split_once('/')
                .and_then(|(scope, n)| plan.find_endpoint(scope, n))
                .ok_or_else(|| QueryError::UnknownEndpoint(name.to_string()))
        };
        let from = endpoint(from)?;
        let target: ProbeTarget = to.parse().map_err(QueryError::BadTarget)?;
        let (to_endpoint, to_addr) = match &target.host {
            TargetHost::Addr(a) => (None, *a),
            TargetHost::Named { scope, name } => {
                let e = endpoint(&format!("{scope}/{name}"))?;
                (Some(e), plan.endpoint_ip(e))
            }
        };
        Ok(Query {
            from,
            to: target,
            to_endpoint,
            to_addr,
            source_port: DEFAULT_SOURCE_PORT,
        })
    }
}

/// The facts of the flow's first packet.
pub fn first_packet_facts(src: Ipv4Addr, q: &Query) -> Facts {
    let (proto, kind, sport, dport) = match q.to.proto {
        L4::Tcp => (
            PROTO_TCP,
            Kind::Tcp { flags: 0x02 },
            q.source_port,
            q.to.port.unwrap_or(0),
        ),
        L4::Udp => (PROTO_UDP, Kind::Udp, q.source_port, q.to.port.unwrap_or(0)),
        L4::Icmp => (
            PROTO_ICMP,
            Kind::Icmp {
                icmp_type: 8,
                request: true,
            },
            q.source_port,
            q.source_port,
        ),
    };
    Facts {
        proto,
        src,
        dst: q.to_addr,
        sport,
        dport,
        kind,
    }
}

/// Explains `q` over `tables` (compiled from `plan`).
pub fn explain(plan: &Plan, tables: &Tables, q: &Query) -> Explanation {
    let from_name = plan_endpoint_name(plan, q.from);
    let src = plan_endpoint_ip(plan, q.from);
    let facts = first_packet_facts(src, q);
    let what = match q.to.proto {
        L4::Icmp => format!("ICMP echo request, identifier {}", q.source_port),
        p => format!(
            "{} from source port {}",
            p.as_str().to_uppercase(),
            q.source_port
        ),
    };
    let mut w = Walk {
        plan,
        tables,
        hops: Vec::new(),
        first: None,
        snat: None,
    };
    let end = w.start(q, facts);
    let (verdict, first) = match end {
        Ok(()) => (Verdict::Reachable, w.first),
        Err(b) => (
            Verdict::Blocked {
                component: b.component,
                label: b.label,
            },
            w.first.or(b.reason.map(FirstPacket::Dropped)),
        ),
    };
    Explanation {
        title: format!("explain {from_name} -> {} ({what})", q.to),
        hops: w.hops,
        verdict,
        first_packet: first.unwrap_or(FirstPacket::Dropped(DropReason::UnknownPort)),
    }
}

fn plan_endpoint_name(plan: &Plan, e: Endpoint) -> String {
    let ok = match e {
        Endpoint::Instance { vpc, instance } => plan
            .vpcs
            .get(vpc)
            .is_some_and(|v| instance < v.instances.len()),
        Endpoint::Host(h) => h < plan.internet.hosts.len(),
    };
    if ok {
        plan.endpoint_name(e)
    } else {
        format!("{e:?}")
    }
}

fn plan_endpoint_ip(plan: &Plan, e: Endpoint) -> Ipv4Addr {
    match e {
        Endpoint::Instance { vpc, instance } => plan
            .vpcs
            .get(vpc)
            .and_then(|v| v.instances.get(instance))
            .map_or(Ipv4Addr::UNSPECIFIED, |i| i.ip),
        Endpoint::Host(h) => plan
            .internet
            .hosts
            .get(h)
            .map_or(Ipv4Addr::UNSPECIFIED, |h| h.ip),
    }
}

/// Where the walk stopped.
struct Blocked {
    component: String,
    label: &'static str,
    /// The drop the fabric counts, if the first packet is the one dropped.
    reason: Option<DropReason>,
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
}

fn proto_text(f: &Facts) -> String {
    match f.kind {
        Kind::Tcp { .. } => format!("tcp:{}", f.dport),
        Kind::Udp => format!("udp:{}", f.dport),
        Kind::Icmp { icmp_type, .. } | Kind::IcmpError { icmp_type, .. } => {
            format!("icmp type {icmp_type}")
        }
        _ => format!("protocol {}", f.proto),
    }
}

fn proto_name(p: Option<u8>) -> String {
    match p {
        None => "all".into(),
        Some(PROTO_TCP) => "tcp".into(),
        Some(PROTO_UDP) => "udp".into(),
        Some(PROTO_ICMP) => "icmp".into(),
        Some(n) => format!("protocol {n}"),
    }
}

fn ports_text(p: Option<(u16, u16)>) -> String {
    match p {
        None => String::new(),
        Some((a, b)) if a == b => format!(" {a}"),
        Some((a, b)) => format!(" {a}-{b}"),
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
            PortOwner::Host { .. } | PortOwner::Uplink => None,
        }
    }

    fn port_name(&self, port: PortId) -> String {
        self.tables
            .port(port)
            .map_or_else(|| format!("port {}", port.0), |p| p.name.clone())
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

    /// The reply of a flow that left `from`'s VPC comes back in: its subnet's inbound ACL.
    fn return_into(&mut self, from: Inst, facts: &Facts) -> Result<(), Blocked> {
        self.hop(
            "return path: the reply comes back through the same translation; it passes the \
             security groups as a tracked flow",
        );
        let reply = facts.reversed();
        self.acl(from.vpc, from.subnet, AclDirection::Inbound, &reply, true)
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

    /// SNAT through NAT gateway `g` of `from`'s VPC; returns the translated facts.
    fn snat(&mut self, from: Inst, g: usize, facts: Facts) -> Result<Facts, Blocked> {
        let Some(table) = self.vpc(from.vpc).nat_gateways.get(g) else {
            return Err(blocked("the route's NAT gateway", DropReason::NoRoute));
        };
        let name = table.name.clone();
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
        // A whole-address DNAT of this instance makes its outbound flows leave from that EIP.
        let any = table
            .dnat_any
            .iter()
            .find(|(p, _, int)| *p == pool && *int == facts.src)
            .map(|(_, eip, _)| *eip);
        let eip = any.or(pool_eips.first().copied());
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
            if any.is_some() {
                "; the instance's whole-address DNAT EIP"
            } else {
                ""
            }
        ));
        self.snat = Some((eip, facts.sport, facts.src, facts.sport));
        Ok(Facts { src: eip, ..facts })
    }

    /// The public segment: a host, or back in through an EIP. Returns the port reached.
    fn public(&mut self, q: &Query, facts: Facts) -> Result<PortId, Blocked> {
        let dst = facts.dst;
        if let Some(port) = self.tables.internet.hosts.get(&dst).copied() {
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
            return Ok(port);
        }
        let Some(entry) = self.tables.internet.eips.get(&dst).copied() else {
            let Some(uplink) = self.tables.internet.uplink else {
                self.hop(format!("internet: no host or EIP has {dst}"));
                return Err(blocked("the public segment", DropReason::NoSuchHost));
            };
            let bind = self
                .plan
                .eips
                .iter()
                .find(|e| e.address == facts.src)
                .and_then(|e| e.host_bind)
                .map_or_else(
                    || "an unbound host socket".to_string(),
                    |h| format!("a host socket bound to {h} (host_bind of {})", facts.src),
                );
            self.hop(format!(
                "internet: no host or EIP has {dst}: out through the uplink ({}); the host's \
                 network carries the flow from {bind}, its replies come back the same way",
                self.port_name(uplink)
            ));
            self.deliver(uplink);
            return Ok(uplink);
        };
        let eip_name = self
            .plan
            .eips
            .get(entry.index as usize)
            .map_or_else(String::new, |e| e.name.clone());
        match entry.binding {
            EipBinding::Unbound => {
                self.hop(format!("EIP `{eip_name}` ({dst}) is not associated"));
                Err(blocked(format!("EIP {eip_name}"), DropReason::UnboundEip))
            }
            EipBinding::Instance { vpc, instance } => {
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
            EipBinding::NatGateway { vpc, gateway } => {
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
        }
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
    /// reply follows its subnet's route table, and a route to a NAT gateway there sends a TCP
    /// reply into a NAT that has no session for it (the fabric drops it as
    /// `nat_tcp_no_session` — the asymmetric-routing pitfall of an EIP in a private subnet).
    fn one_to_one_return_route(&mut self, to: &Inst, facts: &Facts) -> Result<(), Blocked> {
        if !matches!(facts.kind, Kind::Tcp { .. }) {
            return Ok(());
        }
        let Ok((_, m)) = route::lookup_route(self.vpc(to.vpc), to.subnet as usize, facts.src)
        else {
            return Ok(());
        };
        let RouteTargetPlan::Nat(g) = m.target else {
            return Ok(());
        };
        let gname = self
            .tables
            .vpcs
            .get(to.vpc)
            .and_then(|v| v.nat_gateways.get(g))
            .map_or("?", |t| t.name.as_str())
            .to_string();
        self.hop(format!(
            "return path: the reply to {} follows route {} -> nat:{gname}, not the internet \
             gateway of the 1:1 EIP: the NAT gateway has no session for it",
            facts.src, m.prefix
        ));
        Err(Blocked {
            component: format!("asymmetric return route via NAT gateway {gname}"),
            label: DropReason::NatTcpNoSession.label(),
            reason: None,
        })
    }

    fn group_names(&self, vi: usize, instance: u32) -> String {
        let sgs = &self.vpc(vi).security_groups;
        sgs.attached(instance)
            .iter()
            .filter_map(|g| sgs.groups.get(*g as usize))
            .map(|g| {
                if g.implicit {
                    format!("{} (the VPC default group)", g.name)
                } else {
                    g.name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn rule_text(&self, vi: usize, dir: SgDirection, r: &SgRuleTable) -> String {
        let sgs = &self.vpc(vi).security_groups;
        let peer = match r.peer {
            SgPeer::Cidr(c) => c.to_string(),
            SgPeer::Group(g) => format!(
                "sg:{}",
                sgs.groups.get(g as usize).map_or("?", |g| g.name.as_str())
            ),
        };
        let icmp = r
            .icmp_type
            .map(|t| format!(" type {t}"))
            .unwrap_or_default();
        let dirw = match dir {
            SgDirection::Ingress => "from",
            SgDirection::Egress => "to",
        };
        let desc = r
            .description
            .as_ref()
            .map(|d| format!(": \"{d}\""))
            .unwrap_or_default();
        format!(
            "{}{}{icmp} {dirw} {peer}{desc}",
            proto_name(r.proto),
            ports_text(r.ports)
        )
    }

    /// A security group decision, via the function the fabric uses.
    fn sg(&mut self, inst: Inst, dir: SgDirection, facts: &Facts) -> Result<(), Blocked> {
        let vi = inst.vpc;
        let name = self.port_name(inst.port);
        let groups = self.group_names(vi, inst.instance);
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
                    (Some(i), Some(r)) => format!("{} rule {i} ({})", dir.as_str(), {
                        let r = r.clone();
                        self.rule_text(vi, dir, &r)
                    }),
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
                let rt = r.map_or_else(String::new, |r| {
                    format!(
                        "{} {}{} {towards} {}",
                        if r.allow { "allow" } else { "deny" },
                        proto_name(r.proto),
                        ports_text(r.ports),
                        r.cidr
                    )
                });
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

/// Explains every probe of a plan whose result disagrees with `expect` (for `vpcd test`).
pub fn explain_probe(
    plan: &Plan,
    tables: &Tables,
    probe: &crate::topology::plan::ProbePlan,
) -> Explanation {
    let q = Query {
        from: probe.from,
        to: probe.to.clone(),
        to_endpoint: probe.to_endpoint,
        to_addr: probe.to_addr,
        source_port: DEFAULT_SOURCE_PORT,
    };
    explain(plan, tables, &q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology;

    const TEXT: &str = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s1"
  cidr = "10.0.1.0/24"
  network_acl = "acl"
  [[vpc.subnet]]
  name = "s2"
  cidr = "10.0.2.0/24"
  [[vpc.network_acl]]
  name = "acl"
  inbound = [{ rule = 100, action = "deny", protocol = "tcp", ports = 22, cidr = "0.0.0.0/0" },
             { rule = 200, action = "allow", protocol = "all", cidr = "0.0.0.0/0" }]
  outbound = [{ rule = 100, action = "allow", protocol = "all", cidr = "0.0.0.0/0" }]
  [[vpc.instance]]
  name = "x"
  subnet = "s1"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "y"
  subnet = "s2"
  ip = "10.0.2.10"
"#;

    fn run(from: &str, to: &str) -> Explanation {
        let plan = topology::parse("t.toml", TEXT).unwrap();
        let t = crate::topology::compile::tables(&plan);
        let q = Query::parse(&plan, from, to).unwrap();
        explain(&plan, &t, &q)
    }

    #[test]
    fn names_the_acl_rule_that_blocks() {
        let e = run("a/y", "a/x:22/tcp");
        assert_eq!(
            e.verdict_line(),
            "verdict: blocked by network ACL acl inbound rule 100 (nacl_inbound)"
        );
        assert_eq!(
            e.first_packet,
            FirstPacket::Dropped(DropReason::NetworkAclInbound)
        );
    }

    #[test]
    fn default_group_members_reach_each_other() {
        let e = run("a/y", "a/x:80/tcp");
        assert!(e.reachable(), "{}", e.render());
        assert!(e.render().contains("the VPC default group"));
    }

    #[test]
    fn unknown_endpoints_and_bad_targets_are_query_errors() {
        let plan = topology::parse("t.toml", TEXT).unwrap();
        assert!(matches!(
            Query::parse(&plan, "a/nope", "10.0.0.1/icmp"),
            Err(QueryError::UnknownEndpoint(_))
        ));
        assert!(matches!(
            Query::parse(&plan, "a/x", "10.0.0.1:99"),
            Err(QueryError::BadTarget(_))
        ));
    }
}
