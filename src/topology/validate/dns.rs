//! DNS: zones (private `[[zone]]`, public `[[internet.zone]]`), their records, and internet
//! hosts' `dns_names`.
//!
//! Rules: a zone's apex is a valid domain outside the names vpcd answers itself (`vpc.internal`,
//! `in-addr.arpa`); a private zone names at least one known VPC, a public one none; one VPC sees
//! one zone per apex, and the internet one zone per apex; record names are relative to the zone
//! (`@` is the apex); values parse for their type; a TTL is at most 2^31 - 1 (RFC 2181); a CNAME
//! is the only record at its name and never at the apex (RFC 1034, 3.6.2); a host's DNS name is
//! a valid domain, not reserved, and no other host's.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::super::model::{self, DEFAULT_RECORD_TTL};
use super::super::plan::{HostPlan, Name, RecordPlan, ZonePlan};
use super::Checker;
use super::names::unknown_hint;
use crate::dns::names::{parse_domain, reserved_domain};
use crate::dns::{RecordData, RecordKind};

/// Largest TTL (RFC 2181, 8).
const MAX_TTL: u32 = i32::MAX as u32;

/// Where one record was declared, to report conflicts at the later one.
struct Declared {
    kind: RecordKind,
    span: Range<usize>,
    path: String,
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
        if zone.vpcs.is_empty() {
            self.error(
                zone.name.span(),
                format!("{path}.name"),
                format!("private zone `{}` names no VPC", zone.name.get_ref()),
                "add `vpcs = [\"VPC\"]` with the VPCs whose resolvers answer it, or declare it as [[internet.zone]] to make it public",
            );
        }
        let mut visible = Vec::new();
        for (i, v) in zone.vpcs.iter().enumerate() {
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
