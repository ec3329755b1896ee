//! DNS: zones (private `[[zone]]`, public `[[internet.zone]]`), their records, internet hosts'
//! `dns_names`, and the DNS Firewall rules (`[[dns_firewall]]`).
//!
//! Rules: a zone's apex is a valid domain outside the names vpcd answers itself (`vpc.internal`,
//! `in-addr.arpa`); a private zone names at least one known VPC, a public one none; one VPC sees
//! one zone per apex, and the internet one zone per apex; record names are relative to the zone
//! (`@` is the apex); values parse for their type; a TTL is at most 2^31 - 1 (RFC 2181); a CNAME
//! is the only record at its name and never at the apex (RFC 1034, 3.6.2); a host's DNS name is
//! a valid domain, not reserved, and no other host's. A DNS domain list (`[[dns_domain_list]]`)
//! has a unique name and valid domains (`bad.example`, `*.bad.example`). A DNS Firewall rule has
//! a unique name, names known VPCs, lists valid domains or names a known domain list (one of the
//! two), and takes `block_response` only with `action = "block"` and `block_override` exactly
//! with `block_response = "override"`.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::super::model::{self, BlockResponseKind, DEFAULT_RECORD_TTL, DnsFirewallAction};
use super::super::plan::{HostPlan, Name, RecordPlan, ZonePlan};
use super::Checker;
use super::names::unknown_hint;
use super::syntax::Step;
use crate::dns::egress::EgressName;
use crate::dns::firewall::{Action, BlockResponse, DomainPattern, Rule};
use crate::dns::names::{parse_domain, reserved_domain};
use crate::dns::{RecordData, RecordKind};

/// Largest TTL (RFC 2181, 8).
const MAX_TTL: u32 = i32::MAX as u32;

/// What to report when an entry lists no VPC.
struct NoVpc {
    span: Range<usize>,
    at: String,
    message: String,
    hint: String,
}

/// Where one record was declared, to report conflicts at the later one.
struct Declared {
    kind: RecordKind,
    span: Range<usize>,
    path: String,
}

/// `bad.example` (that name) or `*.bad.example` (every name below it).
pub fn domain_pattern(text: &str) -> Result<DomainPattern, String> {
    match text.strip_prefix("*.") {
        Some(rest) => parse_domain(rest).map(DomainPattern::Below),
        None => parse_domain(text).map(DomainPattern::Exact),
    }
}

impl Checker<'_> {
    /// Checks a list of zones: `prefix` is `zone` (private, `vpcs` resolved through `vpcs`) or
    /// `internet.zone` (public, `vpcs` = `None`).
    pub(super) fn check_zones(
        &mut self,
        zones: &[model::Zone],
        prefix: &str,
        vpcs: Option<&HashMap<&str, usize>>,
    ) -> Vec<ZonePlan> {
        let mut plans = Vec::new();
        // (apex, VPC index or `None` for the internet) -> line of the first zone there.
        let mut seen: HashMap<(Name, Option<usize>), usize> = HashMap::new();
        for zone in zones {
            let path = format!("{prefix}[{}]", zone.name.get_ref());
            let Some(apex) = self.check_apex(&zone.name, &path) else {
                continue;
            };
            let visible = self.check_zone_vpcs(zone, &path, vpcs);
            let here = self.line_of(zone.name.span().start);
            let keys: Vec<Option<usize>> = match vpcs {
                Some(_) => visible.iter().map(|v| Some(*v)).collect(),
                None => vec![None],
            };
            for key in keys {
                if let Some(line) = seen.insert((apex.clone(), key), here) {
                    let whom = match key {
                        Some(_) => "a VPC it names",
                        None => "the internet",
                    };
                    self.error(
                        zone.name.span(),
                        format!("{path}.name"),
                        format!(
                            "zone `{apex}` is declared twice for {whom} (first on line {line})"
                        ),
                        "a resolver sees one zone per name; merge the two zones' records",
                    );
                    break;
                }
            }
            let records = self.check_records(zone, &apex, &path);
            plans.push(ZonePlan {
                apex,
                vpcs: visible,
                records,
            });
        }
        plans
    }

    /// A zone's apex: a valid domain outside vpcd's own domains.
    fn check_apex(&mut self, name: &Spanned<String>, path: &str) -> Option<Name> {
        let apex = match parse_domain(name.get_ref()) {
            Ok(n) => n,
            Err(e) => {
                self.error(
                    name.span(),
                    format!("{path}.name"),
                    format!("zone name {e}"),
                    "write a domain like \"corp.example\"",
                );
                return None;
            }
        };
        if let Some(reserved) = reserved_domain(&apex) {
            self.error(
                name.span(),
                format!("{path}.name"),
                format!(
                    "zone `{apex}` is inside `{reserved}`, which vpcd's resolver answers itself"
                ),
                "choose a zone outside vpc.internal and in-addr.arpa, like \"corp.example\"",
            );
            return None;
        }
        Some(apex)
    }

    /// A private zone's VPCs (at least one, each known once); a public zone has none.
    fn check_zone_vpcs(
        &mut self,
        zone: &model::Zone,
        path: &str,
        vpcs: Option<&HashMap<&str, usize>>,
    ) -> Vec<usize> {
        let Some(index) = vpcs else {
            if let Some(first) = zone.vpcs.first() {
                self.error(
                    first.span(),
                    format!("{path}.vpcs"),
                    "a public zone (in [internet]) is answered in every VPC and takes no `vpcs`",
                    "remove `vpcs`, or move the zone to a top-level [[zone]] to make it private",
                );
            }
            return Vec::new();
        };
        self.check_listed_vpcs(
            &zone.name,
            &zone.vpcs,
            path,
            index,
            "private zone",
            "add `vpcs = [\"VPC\"]` with the VPCs whose resolvers answer it, or declare it as [[internet.zone]] to make it public",
        )
    }

    /// The VPCs a zone or rule `name` lists (at least one, each known once), as indices.
    fn check_listed_vpcs(
        &mut self,
        name: &Spanned<String>,
        listed: &[Spanned<String>],
        path: &str,
        index: &HashMap<&str, usize>,
        what: &str,
        none_hint: &str,
    ) -> Vec<usize> {
        let none = NoVpc {
            span: name.span(),
            at: format!("{path}.name"),
            message: format!("{what} `{}` names no VPC", name.get_ref()),
            hint: none_hint.to_string(),
        };
        self.check_vpcs(listed, path, index, none)
    }

    /// The VPCs `listed` at `path` (at least one, reported as `none` otherwise; each known
    /// once), as indices.
    fn check_vpcs(
        &mut self,
        listed: &[Spanned<String>],
        path: &str,
        index: &HashMap<&str, usize>,
        none: NoVpc,
    ) -> Vec<usize> {
        if listed.is_empty() {
            self.error(none.span, none.at, none.message, none.hint);
        }
        let mut visible = Vec::new();
        for (i, v) in listed.iter().enumerate() {
            let at = format!("{path}.vpcs[{i}]");
            match index.get(v.get_ref().as_str()) {
                Some(vi) if visible.contains(vi) => self.error(
                    v.span(),
                    at,
                    format!("VPC `{}` is named twice", v.get_ref()),
                    "name each VPC once",
                ),
                Some(vi) => visible.push(*vi),
                None => {
                    let hint = unknown_hint(
                        v.get_ref(),
                        index.keys().copied(),
                        "VPCs",
                        "declare the VPC with [[vpc]]",
                    );
                    self.error(v.span(), at, format!("unknown VPC `{}`", v.get_ref()), hint);
                }
            }
        }
        visible
    }

    /// A zone's records: names, values, TTLs, and the CNAME rules.
    fn check_records(&mut self, zone: &model::Zone, apex: &Name, path: &str) -> Vec<RecordPlan> {
        let mut plans = Vec::new();
        let mut declared: HashMap<Name, Vec<Declared>> = HashMap::new();
        for (i, r) in zone.record.iter().enumerate() {
            let rpath = format!("{path}.record[{i}]");
            let name = self.check_record_name(&r.name, apex, &rpath);
            let kind = *r.kind.get_ref();
            let data = match RecordData::parse(kind, r.value.get_ref()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.error(
                        r.value.span(),
                        format!("{rpath}.value"),
                        e,
                        format!("give a {kind} value (see topologies/README.md, \"DNS\")"),
                    );
                    None
                }
            };
            let ttl = self.check_ttl(r.ttl.as_ref(), &rpath);
            let Some(name) = name else { continue };
            self.check_cname_rules(&mut declared, &name, apex, kind, r, &rpath);
            if let Some(data) = data {
                plans.push(RecordPlan { name, ttl, data });
            }
        }
        plans
    }

    /// `@` or a name relative to the zone.
    fn check_record_name(
        &mut self,
        name: &Spanned<String>,
        apex: &Name,
        path: &str,
    ) -> Option<Name> {
        let text = name.get_ref();
        if text == "@" {
            return Some(apex.clone());
        }
        let hint = format!(
            "write the name relative to the zone (`db` for db.{}), or `@` for the apex",
            apex.to_string().trim_end_matches('.')
        );
        if text.ends_with('.') {
            self.error(
                name.span(),
                format!("{path}.name"),
                format!("record name `{text}` is absolute"),
                hint,
            );
            return None;
        }
        match parse_domain(&format!("{text}.{apex}")) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(
                    name.span(),
                    format!("{path}.name"),
                    format!("record name {e}"),
                    hint,
                );
                None
            }
        }
    }

    /// A record's TTL: the default, or at most [`MAX_TTL`].
    fn check_ttl(&mut self, ttl: Option<&Spanned<u32>>, path: &str) -> u32 {
        let Some(ttl) = ttl else {
            return DEFAULT_RECORD_TTL;
        };
        if *ttl.get_ref() > MAX_TTL {
            self.error(
                ttl.span(),
                format!("{path}.ttl"),
                format!("TTL {} is too large", ttl.get_ref()),
                format!("a TTL is at most {MAX_TTL} seconds (RFC 2181)"),
            );
            return DEFAULT_RECORD_TTL;
        }
        *ttl.get_ref()
    }

    /// A CNAME is alone at its name and never at the apex; reported at the later record.
    fn check_cname_rules(
        &mut self,
        declared: &mut HashMap<Name, Vec<Declared>>,
        name: &Name,
        apex: &Name,
        kind: RecordKind,
        r: &model::ZoneRecord,
        path: &str,
    ) {
        if kind == RecordKind::Cname && name == apex {
            self.error(
                r.kind.span(),
                format!("{path}.type"),
                format!("a CNAME cannot be the apex of zone `{apex}`"),
                "the apex holds the zone's SOA; give the CNAME a name below the apex",
            );
        }
        let earlier = declared.entry(name.clone()).or_default();
        let clash = earlier
            .iter()
            .find(|d| d.kind == RecordKind::Cname || kind == RecordKind::Cname);
        if let Some(first) = clash {
            let line = self.line_of(first.span.start);
            let first_path = first.path.clone();
            self.error(
                r.name.span(),
                format!("{path}.name"),
                format!("`{name}` has a CNAME and another record ({first_path}, line {line})"),
                "a CNAME must be the only record at its name (RFC 1034); rename one of them",
            );
        }
        earlier.push(Declared {
            kind,
            span: r.name.span(),
            path: path.to_string(),
        });
    }

    /// The DNS Firewall domain lists (`[[dns_domain_list]]`): names valid and unique, domains
    /// valid. Returns each list's patterns by name (a list with a bad domain is left out: the
    /// rules on it are not built, and only the domain is reported).
    fn check_domain_lists(
        &mut self,
        topo: &model::Topology,
    ) -> HashMap<String, Option<Vec<DomainPattern>>> {
        let lists = &topo.dns_domain_list;
        let paths: Vec<String> = lists
            .iter()
            .map(|l| format!("dns_domain_list[{}]", l.name.get_ref()))
            .collect();
        for (l, p) in lists.iter().zip(&paths) {
            self.check_name(&l.name, p, "DNS domain list");
        }
        let index = self.index_names(
            lists.iter().map(|l| &l.name).zip(paths.iter().cloned()),
            "DNS domain list",
            "",
        );
        let mut out = HashMap::new();
        for (name, i) in index {
            let patterns = self.check_domains(&lists[i].domains, &paths[i]);
            out.insert(name.to_string(), patterns);
        }
        out
    }

    /// Domains at `{path}.domains[i]`: all valid (`Some`), or `None` with each bad one reported.
    fn check_domains(
        &mut self,
        domains: &[Spanned<String>],
        path: &str,
    ) -> Option<Vec<DomainPattern>> {
        let mut out = Vec::new();
        for (i, d) in domains.iter().enumerate() {
            match domain_pattern(d.get_ref()) {
                Ok(p) => out.push(p),
                Err(e) => self.error(
                    d.span(),
                    format!("{path}.domains[{i}]"),
                    format!("DNS Firewall domain {e}"),
                    "write \"bad.example\" for that name or \"*.bad.example\" for every name below it",
                ),
            }
        }
        (out.len() == domains.len()).then_some(out)
    }

    /// The DNS Firewall rules, each with the VPCs it names: names unique, VPCs known, valid
    /// domains inline or a known domain list (one of the two), block options only with `block`,
    /// an override target exactly with `block_response = "override"`.
    pub(super) fn check_dns_firewall(
        &mut self,
        topo: &model::Topology,
        vpcs: &HashMap<&str, usize>,
    ) -> Vec<(Rule, Vec<usize>)> {
        let lists = self.check_domain_lists(topo);
        let rules = &topo.dns_firewall;
        let paths: Vec<String> = rules
            .iter()
            .map(|r| format!("dns_firewall[{}]", r.name.get_ref()))
            .collect();
        for (r, p) in rules.iter().zip(&paths) {
            self.check_name(&r.name, p, "DNS Firewall rule");
        }
        self.index_names(
            rules.iter().map(|r| &r.name).zip(paths.iter().cloned()),
            "DNS Firewall rule",
            "",
        );
        let mut out = Vec::new();
        for (r, p) in rules.iter().zip(&paths) {
            let visible = self.check_listed_vpcs(
                &r.name,
                &r.vpcs,
                p,
                vpcs,
                "DNS Firewall rule",
                "add `vpcs = [\"VPC\"]` with the VPCs whose resolvers apply it",
            );
            if let Some(rule) = self.check_firewall_rule(r, p, &lists) {
                out.push((rule, visible));
            }
        }
        out
    }

    fn check_firewall_rule(
        &mut self,
        r: &model::DnsFirewallRule,
        path: &str,
        lists: &HashMap<String, Option<Vec<DomainPattern>>>,
    ) -> Option<Rule> {
        let domains = match (&r.domain_list, r.domains.is_empty()) {
            (Some(list), false) => {
                self.error(
                    list.span(),
                    format!("{path}.domain_list"),
                    format!(
                        "DNS Firewall rule `{}` has both `domains` and `domain_list`",
                        r.name.get_ref()
                    ),
                    "a rule matches one list: move the domains into the list, or drop `domain_list`",
                );
                None
            }
            (Some(list), true) => match lists.get(list.get_ref()) {
                Some(patterns) => patterns.clone(),
                None => {
                    let hint = unknown_hint(
                        list.get_ref(),
                        lists.keys().map(String::as_str),
                        "DNS domain lists",
                        "declare it with [[dns_domain_list]]",
                    );
                    self.error(
                        list.span(),
                        format!("{path}.domain_list"),
                        format!("unknown DNS domain list `{}`", list.get_ref()),
                        hint,
                    );
                    None
                }
            },
            (None, true) => {
                self.error(
                    r.name.span(),
                    format!("{path}.domains"),
                    format!("DNS Firewall rule `{}` lists no domain", r.name.get_ref()),
                    "add `domains = [\"bad.example\", \"*.bad.example\"]`, or `domain_list = \"LIST\"`",
                );
                None
            }
            (None, false) => self.check_domains(&r.domains, path),
        };
        let action = self.check_firewall_action(r, path)?;
        Some(Rule {
            name: r.name.get_ref().clone(),
            domains: domains?,
            action,
        })
    }

    /// The action with its block response; `None` (reported) when the keys do not fit.
    fn check_firewall_action(&mut self, r: &model::DnsFirewallRule, path: &str) -> Option<Action> {
        let block = *r.action.get_ref() == DnsFirewallAction::Block;
        let how = r.block_response.as_ref().map(|b| *b.get_ref());
        if let (false, Some(b)) = (block, &r.block_response) {
            self.error(
                b.span(),
                format!("{path}.block_response"),
                "`block_response` is only for `action = \"block\"`",
                "remove it, or set `action = \"block\"`",
            );
            return None;
        }
        let overriding = how == Some(BlockResponseKind::Override);
        match (&r.block_override, overriding) {
            (Some(o), false) => {
                self.error(
                    o.span(),
                    format!("{path}.block_override"),
                    "`block_override` needs `block_response = \"override\"`",
                    "set `block_response = \"override\"`, or remove `block_override`",
                );
                return None;
            }
            (None, true) => {
                self.error(
                    r.name.span(),
                    format!("{path}.block_override"),
                    format!(
                        "DNS Firewall rule `{}` overrides but names no target",
                        r.name.get_ref()
                    ),
                    "add `block_override = \"walled-garden.example\"` (answered as a CNAME)",
                );
                return None;
            }
            _ => {}
        }
        Some(match (*r.action.get_ref(), how) {
            (DnsFirewallAction::Allow, _) => Action::Allow,
            (DnsFirewallAction::Alert, _) => Action::Alert,
            (DnsFirewallAction::Block, None | Some(BlockResponseKind::Nxdomain)) => {
                Action::Block(BlockResponse::NxDomain)
            }
            (DnsFirewallAction::Block, Some(BlockResponseKind::Nodata)) => {
                Action::Block(BlockResponse::NoData)
            }
            (DnsFirewallAction::Block, Some(BlockResponseKind::Override)) => {
                let o = r.block_override.as_ref()?;
                let target = match parse_domain(o.get_ref()) {
                    Ok(t) => t,
                    Err(e) => {
                        self.error(
                            o.span(),
                            format!("{path}.block_override"),
                            format!("override target {e}"),
                            "write a domain like \"walled-garden.example\"",
                        );
                        return None;
                    }
                };
                let ttl = self.check_ttl(r.block_override_ttl.as_ref(), path);
                Action::Block(BlockResponse::Override { target, ttl })
            }
        })
    }

    /// `[[egress_by_name]]`: known VPCs, and names (`NAME`, `*.NAME`) with optional ports.
    pub(super) fn check_egress_by_name(
        &mut self,
        topo: &model::Topology,
        vpcs: &HashMap<&str, usize>,
    ) -> Vec<(Vec<EgressName>, Vec<usize>)> {
        let mut out = Vec::new();
        for (i, e) in topo.egress_by_name.iter().enumerate() {
            let path = format!("egress_by_name[{i}]");
            let whole = self
                .span_at(&[Step::Key("egress_by_name"), Step::Index(i)])
                .unwrap_or(0..0);
            let none = NoVpc {
                span: whole,
                at: format!("{path}.vpcs"),
                message: "`vpcs` names no VPC".to_string(),
                hint: "add `vpcs = [\"VPC\"]` with the VPCs whose instances may reach these names"
                    .to_string(),
            };
            let visible = self.check_vpcs(&e.vpcs, &path, vpcs, none);
            let names = e
                .allow
                .iter()
                .enumerate()
                .filter_map(|(j, a)| self.check_egress_name(a, &format!("{path}.allow[{j}]")))
                .collect();
            out.push((names, visible));
        }
        out
    }

    /// `NAME[:PORTS]` or `*.NAME[:PORTS]`.
    fn check_egress_name(&mut self, a: &Spanned<String>, path: &str) -> Option<EgressName> {
        let text = a.get_ref();
        let hint =
            "write \"api.example.com:443\", \"*.example.com:8000-8099\" or \"api.example.com\"";
        let (name, ports) = match text.rsplit_once(':') {
            Some((n, p)) => match p.parse::<model::PortRange>() {
                Ok(r) => (n, Some((r.first, r.last))),
                Err(_) => {
                    self.error(
                        a.span(),
                        path,
                        format!("`{p}` in `{text}` is not a port or port range"),
                        hint,
                    );
                    return None;
                }
            },
            None => (text.as_str(), None),
        };
        match domain_pattern(name) {
            Ok(pattern) => Some(EgressName { pattern, ports }),
            Err(e) => {
                self.error(a.span(), path, format!("egress name {e}"), hint);
                None
            }
        }
    }

    /// Internet hosts' `dns_names`: valid, not reserved, each on one host only.
    pub(super) fn check_host_dns_names(
        &mut self,
        net: &model::Internet,
        paths: &[String],
        hosts: &mut [HostPlan],
    ) {
        let mut seen: HashMap<Name, (String, usize)> = HashMap::new();
        for ((h, path), plan) in net.host.iter().zip(paths).zip(hosts.iter_mut()) {
            for (i, text) in h.dns_names.iter().enumerate() {
                let at = format!("{path}.dns_names[{i}]");
                let name = match parse_domain(text.get_ref()) {
                    Ok(n) => n,
                    Err(e) => {
                        self.error(
                            text.span(),
                            at,
                            format!("DNS name {e}"),
                            "write a domain like \"api.example.com\"",
                        );
                        continue;
                    }
                };
                if let Some(reserved) = reserved_domain(&name) {
                    self.error(
                        text.span(),
                        at,
                        format!(
                            "`{name}` is inside `{reserved}`, which vpcd's resolver answers itself"
                        ),
                        "choose a public name like \"api.example.com\"",
                    );
                    continue;
                }
                let line = self.line_of(text.span().start);
                if let Some((other, first)) = seen.get(&name) {
                    self.error(
                        text.span(),
                        at,
                        format!("DNS name `{name}` is already host {other}'s (line {first})"),
                        "a name belongs to one host; use a zone with several A records for more",
                    );
                    continue;
                }
                seen.insert(name.clone(), (h.name.get_ref().clone(), line));
                plan.dns_names.push(name);
            }
        }
    }
}
