//! NAT gateways (their EIPs, SNAT and DNAT entries) and the EIPs themselves: public addresses,
//! bound at most once, each used for translation only by the gateway that owns it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use toml::Spanned;

use super::super::cidr::Cidr;
use std::time::Duration;

use super::super::model::{
    self, DnatProtocol, NatFiltering, NatMapping, NatProfile, OnRefuse, Topology,
};
use super::super::plan::{DnatPlan, EipBinding, EipPlan, NatGatewayPlan, SnatPlan};
use super::names::{VpcScope, unknown_hint};
use super::public::non_public;
use super::syntax::Step;
use super::vpc::Addresses;
use super::{Checker, EipUse};
use crate::dataplane::nat::config::{Filtering, Mapping, NatConfig, Profile};

/// A NAT gateway being checked: its model, name, key path and the EIPs it owns.
struct Gateway<'g> {
    model: &'g model::NatGateway,
    /// Position in the VPC's `nat_gateway` array.
    index: usize,
    name: &'g str,
    path: &'g str,
    /// Indices into the plan's EIPs, without repeats.
    owned: Vec<usize>,
    eip_index: &'g HashMap<&'g str, usize>,
}

impl Checker<'_> {
    pub(super) fn check_nat_gateways(
        &mut self,
        s: &VpcScope<'_>,
        addrs: &Addresses,
        eip_index: &HashMap<&str, usize>,
        eip_uses: &mut Vec<EipUse>,
    ) -> Vec<NatGatewayPlan> {
        let (vpc, vname) = (s.vpc, s.name);
        let mut nat_gateways = Vec::new();
        for (gi, (g, gp)) in vpc.nat_gateway.iter().zip(&s.gw_paths).enumerate() {
            let gname = g.name.get_ref();
            let mut eips = Vec::new();
            for (k, e) in g.eips.iter().enumerate() {
                let path = format!("{gp}.eips[{k}]");
                if let Some(ei) = self.resolve_eip(e, &path, eip_index) {
                    eip_uses.push(EipUse {
                        eip: ei,
                        binding: EipBinding::NatGateway {
                            vpc: s.vi,
                            gateway: gi,
                        },
                        what: format!("NAT gateway {vname}/{gname}"),
                        span: e.span(),
                        path,
                    });
                    if !eips.contains(&ei) {
                        eips.push(ei);
                    }
                }
            }
            let gw = Gateway {
                model: g,
                index: gi,
                name: gname,
                path: gp,
                owned: eips,
                eip_index,
            };
            let snat = g
                .snat
                .iter()
                .enumerate()
                .filter_map(|(k, entry)| self.check_snat(s, &gw, addrs, k, entry))
                .collect();
            let dnat = self.check_dnat(s, &gw);
            let config = self.nat_config(g, gp);
            nat_gateways.push(NatGatewayPlan {
                name: gname.clone(),
                subnet: addrs.gw_subnet.get(gi).copied().flatten().unwrap_or(0),
                ip: addrs
                    .gw_ips
                    .get(gi)
                    .copied()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
                eips: gw.owned,
                snat,
                dnat,
                config,
            });
        }
        nat_gateways
    }

    /// The gateway's behaviour: its profile's preset with the file's overrides applied, checked
    /// like the NAT core checks it.
    fn nat_config(&mut self, g: &model::NatGateway, gp: &str) -> NatConfig {
        let profile = match g.profile.as_ref().map(|p| *p.get_ref()) {
            None | Some(NatProfile::Rfc) => Profile::Rfc,
            Some(NatProfile::Aws) => Profile::Aws,
            Some(NatProfile::Gcp) => Profile::Gcp,
            Some(NatProfile::Alibaba) => Profile::Alibaba,
        };
        let mut c = NatConfig::profile(profile);
        if let Some(m) = &g.mapping {
            c.mapping = match m.get_ref() {
                NatMapping::EndpointIndependent => Mapping::EndpointIndependent,
                NatMapping::AddressAndPortDependent => Mapping::AddressAndPortDependent,
            };
        }
        if let Some(f) = &g.filtering {
            c.filtering = match f.get_ref() {
                NatFiltering::EndpointIndependent => Filtering::EndpointIndependent,
                NatFiltering::AddressDependent => Filtering::AddressDependent,
                NatFiltering::AddressAndPortDependent => Filtering::AddressAndPortDependent,
            };
        }
        if let Some(r) = &g.port_range {
            let r = r.get_ref();
            c.port_range = (r.first, r.last);
        }
        if let Some(p) = &g.port_preservation {
            c.port_preservation = *p.get_ref();
        }
        if let Some(n) = &g.ports_per_instance {
            c.ports_per_owner = Some(*n.get_ref());
        }
        if let Some(n) = &g.max_connections {
            c.max_entries = *n.get_ref() as usize;
        }
        if let Some(n) = &g.max_connections_per_instance {
            c.per_instance_max_conns = Some(*n.get_ref());
        }
        if let Some(n) = &g.new_connections_per_second_per_instance {
            c.per_instance_new_per_sec = Some(*n.get_ref());
        }
        if let Some(n) = &g.new_connections_per_second_per_source {
            c.per_source_new_per_sec = Some(*n.get_ref());
        }
        if let Some(n) = &g.half_open_connections_per_source {
            c.half_open_per_source = Some(*n.get_ref());
        }
        if let Some(n) = &g.port_reuse_delay {
            c.port_reuse_delay = Duration::from_secs(u64::from(*n.get_ref()));
        }
        if let Some(b) = &g.early_drop {
            c.early_drop_transitory = *b.get_ref();
        }
        if let Some(r) = &g.on_refuse {
            c.icmp_prohibited_on_full = *r.get_ref() == OnRefuse::Icmp;
        }
        if let Some(b) = &g.rst_on_expired {
            c.aws_rst_on_expired = *b.get_ref();
        }
        if let Some(b) = &g.syn_proxy {
            c.syn_proxy = *b.get_ref();
        }
        if let Some(t) = &g.timeouts {
            let fields = [
                (&t.udp, "udp", &mut c.timeouts.udp),
                (&t.udp_stream, "udp_stream", &mut c.timeouts.udp_stream),
                (
                    &t.tcp_established,
                    "tcp_established",
                    &mut c.timeouts.tcp_established,
                ),
                (
                    &t.tcp_transitory,
                    "tcp_transitory",
                    &mut c.timeouts.tcp_transitory,
                ),
                (
                    &t.tcp_time_wait,
                    "tcp_time_wait",
                    &mut c.timeouts.tcp_time_wait,
                ),
                (&t.icmp, "icmp", &mut c.timeouts.icmp),
            ];
            for (value, key, slot) in fields {
                let Some(v) = value else { continue };
                if *v.get_ref() == 0 {
                    self.error(
                        v.span(),
                        format!("{gp}.timeouts.{key}"),
                        "a timeout of 0 seconds would expire every flow at once",
                        "give the idle timeout in seconds, at least 1",
                    );
                }
                *slot = Duration::from_secs(u64::from(*v.get_ref()));
            }
        }
        if let Err(problem) = c.validate() {
            self.error(
                g.name.span(),
                gp.to_string(),
                format!(
                    "NAT gateway settings are inconsistent: {}",
                    problem
                        .replace("ports_per_owner", "ports_per_instance")
                        .replace("max_entries", "max_connections")
                        .replace(
                            "per_source_new_per_sec",
                            "new_connections_per_second_per_source"
                        )
                        .replace("half_open_per_source", "half_open_connections_per_source")
                ),
                "fix the value it names (see topologies/README.md, NAT gateways)",
            );
        }
        c
    }

    /// An EIP named by a SNAT or DNAT entry: it must be one of the gateway's own.
    fn own_eip(&mut self, gw: &Gateway<'_>, e: &Spanned<String>, path: String) -> Option<usize> {
        let gname = gw.name;
        let ei = self.resolve_eip(e, &path, gw.eip_index)?;
        if gw.owned.contains(&ei) {
            return Some(ei);
        }
        let list: Vec<&str> = gw.model.eips.iter().map(|e| e.get_ref().as_str()).collect();
        self.error(
            e.span(),
            path,
            format!(
                "EIP {} is not one of NAT gateway {gname}'s EIPs",
                e.get_ref()
            ),
            if list.is_empty() {
                format!("add it to the gateway's `eips` (NAT gateway {gname} has none)")
            } else {
                format!(
                    "add it to the gateway's `eips`, or use one of: {}",
                    list.join(", ")
                )
            },
        );
        None
    }

    /// One SNAT entry: a source inside the VPC (CIDR or instance) and an EIP pool of the gateway.
    fn check_snat(
        &mut self,
        s: &VpcScope<'_>,
        gw: &Gateway<'_>,
        addrs: &Addresses,
        k: usize,
        entry: &model::SnatEntry,
    ) -> Option<SnatPlan> {
        let (vname, vcidr) = (s.name, s.cidr);
        let sp = format!("{}.snat[{k}]", gw.path);
        let src = entry.source.get_ref();
        let source = if let Ok(c) = src.parse::<Cidr>() {
            if !vcidr.covers(c) {
                self.error(
                    entry.source.span(),
                    format!("{sp}.source"),
                    format!("SNAT source {c} is outside VPC {vname}'s CIDR {vcidr}"),
                    format!("translate sources inside {vcidr}, or name an instance"),
                );
            }
            Some(c)
        } else if let Some(ii) = s.instances.get(src.as_str()) {
            addrs.inst_ips.get(*ii).and_then(|ip| Cidr::new(*ip, 32))
        } else {
            let hint = unknown_hint(
                src,
                s.instances.keys().copied(),
                "instances",
                "write a CIDR like \"10.0.1.0/24\" or the name of an instance of this VPC",
            );
            self.error(
                entry.source.span(),
                format!("{sp}.source"),
                format!("SNAT source `{src}` is neither a CIDR nor an instance of VPC {vname}"),
                hint,
            );
            None
        };
        let mut pool = Vec::new();
        for (j, e) in entry.eips.iter().enumerate() {
            if let Some(ei) = self.own_eip(gw, e, format!("{sp}.eips[{j}]")) {
                pool.push(ei);
            }
        }
        if entry.eips.is_empty() {
            pool = gw.owned.clone();
            if gw.model.eips.is_empty() {
                self.error(
                    entry.source.span(),
                    format!("{sp}.source"),
                    format!("NAT gateway {} has no EIP to translate {src} to", gw.name),
                    "list the gateway's EIPs in its `eips`, or this entry's `eips`",
                );
            }
        }
        source.map(|source| SnatPlan { source, eips: pool })
    }

    /// The DNAT entries of a gateway: owned EIPs, ports by protocol, one mapping per EIP port,
    /// instances of the same VPC.
    fn check_dnat(&mut self, s: &VpcScope<'_>, gw: &Gateway<'_>) -> Vec<DnatPlan> {
        let vname = s.name;
        let mut dnat = Vec::new();
        let mut mapped: HashMap<(usize, Option<&str>, Option<u16>), usize> = HashMap::new();
        for (k, entry) in gw.model.dnat.iter().enumerate() {
            let dp = format!("{}.dnat[{k}]", gw.path);
            let eip = self.own_eip(gw, &entry.eip, format!("{dp}.eip"));
            let protocol = *entry.protocol.get_ref();
            let port = entry.port.as_ref().map(|p| *p.get_ref());
            match (protocol, &entry.port) {
                (DnatProtocol::Any, Some(p)) => self.error(
                    p.span(),
                    format!("{dp}.port"),
                    "a DNAT entry with protocol \"any\" maps the whole address and takes no `port`",
                    "remove `port`, or set `protocol` to \"tcp\" or \"udp\"",
                ),
                (DnatProtocol::Tcp | DnatProtocol::Udp, None) => {
                    // Like serde's missing keys: the path names the missing key, the span the
                    // entry (its braces, or its [[header]]).
                    let entry_span = self
                        .span_at(&[
                            Step::Key("vpc"),
                            Step::Index(s.vi),
                            Step::Key("nat_gateway"),
                            Step::Index(gw.index),
                            Step::Key("dnat"),
                            Step::Index(k),
                        ])
                        .unwrap_or_else(|| entry.protocol.span());
                    self.error(
                        entry_span,
                        format!("{dp}.port"),
                        format!(
                            "missing key `port`: a {} DNAT entry needs the EIP's external port",
                            dnat_proto_str(protocol)
                        ),
                        "add `port = 80` (the EIP's port) to this entry; `instance_port` defaults to it",
                    )
                }
                _ => {}
            }
            if let (DnatProtocol::Any, Some(p)) = (protocol, &entry.instance_port) {
                self.error(
                    p.span(),
                    format!("{dp}.instance_port"),
                    "a DNAT entry with protocol \"any\" takes no `instance_port`",
                    "remove `instance_port`, or set `protocol` to \"tcp\" or \"udp\"",
                );
            }
            for (key, p) in [
                ("port", &entry.port),
                ("instance_port", &entry.instance_port),
            ] {
                if let Some(p) = p.as_ref().filter(|p| *p.get_ref() == 0) {
                    self.error(
                        p.span(),
                        format!("{dp}.{key}"),
                        "port 0 is not a valid port",
                        "use a port from 1 to 65535",
                    );
                }
            }
            if let Some(ei) = eip {
                let any = (ei, None, None);
                let this = (ei, Some(dnat_proto_str(protocol)), port);
                let clash = if protocol == DnatProtocol::Any {
                    mapped.keys().find(|(e, ..)| *e == ei).copied()
                } else {
                    [any, this].into_iter().find(|k| mapped.contains_key(k))
                };
                if let Some(first) = clash.and_then(|k| mapped.get(&k)) {
                    let line = self.line_of(*first);
                    self.error(
                        entry.eip.span(),
                        format!("{dp}.eip"),
                        format!(
                            "EIP {} is already forwarded by the DNAT entry on line {line}",
                            entry.eip.get_ref()
                        ),
                        "each EIP port (or a whole EIP with \"any\") forwards to one instance; remove one entry",
                    );
                } else {
                    let key = if protocol == DnatProtocol::Any {
                        any
                    } else {
                        this
                    };
                    mapped.insert(key, entry.eip.span().start);
                }
            }
            let instance = match s.instances.get(entry.instance.get_ref().as_str()) {
                Some(i) => Some(*i),
                None => {
                    let hint = unknown_hint(
                        entry.instance.get_ref(),
                        s.instances.keys().copied(),
                        "instances",
                        &format!(
                            "a DNAT entry forwards to an instance of the gateway's own VPC ({vname})"
                        ),
                    );
                    self.error(
                        entry.instance.span(),
                        format!("{dp}.instance"),
                        format!(
                            "unknown instance `{}` in VPC {vname}",
                            entry.instance.get_ref()
                        ),
                        hint,
                    );
                    None
                }
            };
            if let (Some(eip), Some(instance)) = (eip, instance) {
                let any = protocol == DnatProtocol::Any;
                dnat.push(DnatPlan {
                    eip,
                    protocol,
                    port: if any { None } else { port },
                    instance,
                    instance_port: if any {
                        None
                    } else {
                        entry.instance_port.as_ref().map(|p| *p.get_ref()).or(port)
                    },
                    host_listen: entry.host_listen.as_ref().map(|l| l.get_ref().0),
                });
            }
        }
        dnat
    }

    pub(super) fn check_eips(
        &mut self,
        topo: &Topology,
        paths: &[String],
        mut uses: Vec<EipUse>,
    ) -> Vec<EipPlan> {
        let mut eips: Vec<EipPlan> = topo
            .eip
            .iter()
            .map(|e| EipPlan {
                name: e.name.get_ref().clone(),
                address: e.address.get_ref().0,
                binding: EipBinding::Unbound,
                host_bind: e.host_bind.as_ref().map(|a| a.get_ref().0),
                host_listen: e.host_listen.0.iter().map(|l| l.get_ref().0).collect(),
            })
            .collect();
        for (e, p) in topo.eip.iter().zip(paths) {
            let a = e.address.get_ref().0;
            let name = e.name.get_ref();
            let hint = "an EIP is a public address; in tests use the documentation ranges 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24";
            if let Some(v) = topo.vpc.iter().find(|v| v.cidr.get_ref().contains(a)) {
                self.error(
                    e.address.span(),
                    format!("{p}.address"),
                    format!(
                        "EIP {name}'s address {a} is inside VPC {}'s CIDR {}",
                        v.name.get_ref(),
                        v.cidr.get_ref()
                    ),
                    hint,
                );
            } else if let Some(kind) = non_public(a) {
                self.error(
                    e.address.span(),
                    format!("{p}.address"),
                    format!("EIP {name}'s address {a} is {kind}, not a public address"),
                    hint,
                );
            }
        }
        // Two EIPs with one address (reported on the later EIP).
        let mut seen: HashMap<Ipv4Addr, (String, usize)> = HashMap::new();
        for (e, me) in topo.eip.iter().zip(&eips) {
            if let Some((n, line)) = seen.get(&me.address) {
                let (n, line) = (n.clone(), *line);
                self.error(
                    e.address.span(),
                    format!("eip[{}].address", me.name),
                    format!(
                        "address {} is already used by EIP {n} (line {line}) on the public segment",
                        me.address
                    ),
                    "every internet host and EIP needs its own address",
                );
            } else {
                let line = self.line_of(e.address.span().start);
                seen.insert(me.address, (me.name.clone(), line));
            }
        }
        uses.sort_by_key(|u| u.span.start);
        let mut first: Vec<Option<(String, usize)>> = vec![None; eips.len()];
        for u in uses {
            let Some(slot) = first.get_mut(u.eip) else {
                continue;
            };
            match slot {
                Some((what, line)) => {
                    let (what, line) = (what.clone(), *line);
                    let name = eips.get(u.eip).map(|e| e.name.clone()).unwrap_or_default();
                    self.error(
                        u.span.clone(),
                        u.path,
                        format!("EIP {name} is already bound to {what} (line {line})"),
                        "an EIP belongs to one instance or one NAT gateway; define another [[eip]] for this one",
                    );
                }
                None => {
                    let line = self.line_of(u.span.start);
                    *slot = Some((u.what, line));
                    if let Some(e) = eips.get_mut(u.eip) {
                        e.binding = u.binding;
                    }
                }
            }
        }
        eips
    }
}

fn dnat_proto_str(p: DnatProtocol) -> &'static str {
    match p {
        DnatProtocol::Tcp => "tcp",
        DnatProtocol::Udp => "udp",
        DnatProtocol::Any => "any",
    }
}
