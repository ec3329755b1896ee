//! Validation: TOML text -> model -> plan, with located errors.
//!
//! Three stages, each reporting every problem it can find before giving up:
//! 1. TOML syntax (`toml::de::DeTable::parse_recoverable`): every syntax error the parser recovers
//!    from;
//! 2. the serde model (`toml::from_str::<Topology>`): unknown keys, missing keys, bad values. serde
//!    stops at the first such error, so this stage reports one;
//! 3. the rules (this file's `Checker`): names, references, addresses. Every problem, in file order.
//!
//! Key paths name array elements by their `name` key where they have one (`vpc[tenant-a]`), and by
//! their 0-based position otherwise (`routes[2]`). The documented rules are in `topologies/README.md`;
//! keep the two in step. No input makes this module panic.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::cidr::{Addr, Cidr};
use super::diagnostic::Diagnostic;
use super::model::{
    self, DnatProtocol, MAIN_ROUTE_TABLE, MAX_MTU, MIN_MTU, RouteTarget, TargetHost, Topology,
};
use super::plan::{
    DnatPlan, EipBinding, EipPlan, Endpoint, HostPlan, InstancePlan, InternetPlan, NatGatewayPlan,
    ProbePlan, RoutePlan, RouteTablePlan, RouteTargetPlan, SnatPlan, SubnetPlan, VpcPlan,
};
use super::{Plan, TopologyError};

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 32;
/// Largest VPC block (shortest prefix) accepted.
pub const MIN_VPC_PREFIX: u8 = 8;
/// Smallest VPC block (longest prefix) accepted, as in AWS.
pub const MAX_VPC_PREFIX: u8 = 28;
/// Smallest subnet: network, `.1` and broadcast are reserved, so a /30 has one usable address.
pub const MAX_SUBNET_PREFIX: u8 = 30;

const NAME_HINT: &str =
    "use 1 to 32 characters from A-Z, a-z, 0-9, `_`, `.` and `-` (no `/` or `:`)";

pub(crate) fn parse_and_validate(file: &str, text: &str) -> Result<Plan, TopologyError> {
    let (tree, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut diags: Vec<(usize, Diagnostic)> = syntax
            .iter()
            .map(|e| {
                let at = e.span().map_or(0, |s| s.start);
                (at, syntax_diagnostic(file, text, tree.get_ref(), e))
            })
            .collect();
        diags.sort_by_key(|(at, _)| *at);
        diags.dedup_by(|a, b| a.1 == b.1);
        return Err(TopologyError::Invalid(
            diags.into_iter().map(|(_, d)| d).collect(),
        ));
    }
    let topology: Topology = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            return Err(TopologyError::Invalid(vec![serde_diagnostic(
                file,
                text,
                tree.get_ref(),
                &e,
            )]));
        }
    };
    let mut checker = Checker {
        file,
        text,
        diags: Vec::new(),
    };
    let plan = checker.check(&topology);
    if checker.diags.is_empty() {
        Ok(plan)
    } else {
        let mut diags = checker.diags;
        diags.sort_by_key(|(at, _)| *at);
        Err(TopologyError::Invalid(
            diags.into_iter().map(|(_, d)| d).collect(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Stages 1 and 2: toml and serde errors, located with a key path found in the syntax tree.

fn syntax_diagnostic(
    file: &str,
    text: &str,
    tree: &DeTable<'_>,
    e: &toml::de::Error,
) -> Diagnostic {
    let span = e.span();
    let path = span
        .as_ref()
        .map(|s| key_path_at(tree, text, s.start))
        .unwrap_or_default();
    Diagnostic::new(
        file,
        text,
        span,
        path,
        format!("invalid TOML: {}", e.message().trim()),
        Some(
            "fix the TOML syntax here: check quotes, brackets and `key = value` pairs".to_string(),
        ),
    )
}

fn serde_diagnostic(file: &str, text: &str, tree: &DeTable<'_>, e: &toml::de::Error) -> Diagnostic {
    let span = e.span();
    let mut path = span
        .as_ref()
        .map(|s| key_path_at(tree, text, s.start))
        .unwrap_or_default();
    let raw = e.message().trim();
    let (message, hint) = if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = backticked(expected);
        let hint = if valid.is_empty() {
            "remove this key: this table takes no keys".to_string()
        } else {
            let list = valid.join(", ");
            match closest(key, valid.iter().map(String::as_str)) {
                Some(best) => format!("did you mean `{best}`? the keys here are: {list}"),
                None => format!("remove or rename it; the keys here are: {list}"),
            }
        };
        (format!("unknown key `{key}`"), Some(hint))
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let key = rest.split_once('`').map_or(rest, |(k, _)| k);
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        (
            format!("missing key `{key}`"),
            Some(format!(
                "add `{key} = ...` to this table (see topologies/README.md)"
            )),
        )
    } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = backticked(expected);
        let list = valid.join(", ");
        let hint = match closest(value, valid.iter().map(String::as_str)) {
            Some(best) => format!("did you mean \"{best}\"? write one of: {list}"),
            None => format!("write one of: {list}"),
        };
        (format!("`{value}` is not allowed here"), Some(hint))
    } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        (format!("wrong type: {rest}"), type_hint(expected))
    } else if let Some(rest) = raw.strip_prefix("invalid value: integer `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", expected ");
        (
            format!("{value} is out of range here"),
            type_hint(expected).or(Some(format!("write {expected}"))),
        )
    } else {
        // The FromStr messages of the model say "what; what to do".
        match raw.split_once("; ") {
            Some((what, todo)) => (what.to_string(), Some(todo.to_string())),
            None => (raw.to_string(), None),
        }
    };
    Diagnostic::new(file, text, span, path, message, hint)
}

fn type_hint(expected: &str) -> Option<String> {
    let text = match expected {
        "u8" => "write a whole number from 0 to 255, without quotes",
        "u16" => "write a whole number from 0 to 65535, without quotes",
        "u32" => "write a whole number without quotes",
        "a string" => "write the value in double quotes",
        "a sequence" => "write a list in brackets, like [\"a\", \"b\"]",
        _ if expected.starts_with("struct") => "write a table of `key = value` pairs",
        _ => return None,
    };
    Some(text.to_string())
}

/// The words between backticks in `s`: serde's list of expected keys or variants.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}

/// The key path of the innermost key or value of `tree` at byte `offset`.
fn key_path_at(tree: &DeTable<'_>, text: &str, offset: usize) -> String {
    let mut path = Vec::new();
    if find_in_table(tree, offset, &mut path) {
        return render_path(&path);
    }
    // Not inside any key or value (e.g. a syntax error between them): the last table header.
    let before = &text[..floor_boundary(text, offset)];
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

enum Seg {
    Key(String),
    Elem(String),
}

fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Elem(e) => {
                out.push('[');
                out.push_str(e);
                out.push(']');
            }
        }
    }
    out
}

fn span_has(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().to_string()));
        if span_has(key.span(), offset) || find_in_value(value, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) if find_in_table(t, offset, path) => return true,
        DeValue::Array(a) => {
            for (i, elem) in a.iter().enumerate() {
                path.push(Seg::Elem(element_label(elem, i)));
                if find_in_value(elem, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    span_has(value.span(), offset)
}

/// An array element's `name`, or its position.
fn element_label(elem: &Spanned<DeValue<'_>>, index: usize) -> String {
    if let DeValue::Table(t) = elem.get_ref() {
        for (k, v) in t.iter() {
            if k.get_ref() == "name" {
                if let DeValue::String(s) = v.get_ref() {
                    return s.to_string();
                }
            }
        }
    }
    index.to_string()
}

/// The candidate closest to `word` by edit distance, when close enough to be a likely typo.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: edits plus swaps of neighbours (`cdir` -> `cidr` is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                v
            };
        }
    }
    d[a.len() * w + b.len()]
}

// ---------------------------------------------------------------------------------------------
// Stage 3: the rules.

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    /// (byte offset, diagnostic), sorted into file order at the end.
    diags: Vec<(usize, Diagnostic)>,
}

/// What holds an address inside a VPC, for duplicate messages.
#[derive(Clone)]
struct Holder {
    what: String,
    line: usize,
}

/// One use of an EIP, collected to find EIPs bound twice.
struct EipUse {
    eip: usize,
    binding: EipBinding,
    what: String,
    span: Range<usize>,
    path: String,
}

impl Checker<'_> {
    fn error(
        &mut self,
        span: Range<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let at = span.start;
        let d = Diagnostic::new(
            self.file,
            self.text,
            Some(span),
            path,
            message,
            Some(hint.into()),
        );
        self.diags.push((at, d));
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..floor_boundary(self.text, offset)]
            .matches('\n')
            .count()
            + 1
    }

    /// Checks a name's characters; true when valid.
    fn check_name(&mut self, name: &Spanned<String>, path: &str, what: &str) -> bool {
        let n = name.get_ref();
        if is_valid_name(n) {
            return true;
        }
        self.error(
            name.span(),
            format!("{path}.name"),
            format!("`{n}` is not a valid {what} name"),
            NAME_HINT,
        );
        false
    }

    /// Builds name -> index for one scope, reporting duplicates (the later one).
    fn index_names<'n>(
        &mut self,
        names: impl IntoIterator<Item = (&'n Spanned<String>, String)>,
        what: &str,
        scope: &str,
    ) -> HashMap<&'n str, usize> {
        let mut map: HashMap<&'n str, usize> = HashMap::new();
        let mut first_span: HashMap<&'n str, usize> = HashMap::new();
        for (i, (name, path)) in names.into_iter().enumerate() {
            let n = name.get_ref().as_str();
            if let Some(first) = first_span.get(n) {
                let line = self.line_of(*first);
                self.error(
                    name.span(),
                    format!("{path}.name"),
                    format!("duplicate {what} name `{n}`{scope}"),
                    format!("the first {what} named `{n}` is on line {line}; rename one of them"),
                );
            } else {
                first_span.insert(n, name.span().start);
                map.insert(n, i);
            }
        }
        map
    }

    fn check(&mut self, topo: &Topology) -> Plan {
        // EIPs (top level): names and addresses; bindings come from VPCs below.
        let eip_paths: Vec<String> = topo
            .eip
            .iter()
            .map(|e| format!("eip[{}]", e.name.get_ref()))
            .collect();
        for (e, path) in topo.eip.iter().zip(&eip_paths) {
            self.check_name(&e.name, path, "EIP");
        }
        let eip_index = self.index_names(
            topo.eip
                .iter()
                .map(|e| &e.name)
                .zip(eip_paths.iter().cloned()),
            "EIP",
            "",
        );

        let vpc_paths: Vec<String> = topo
            .vpc
            .iter()
            .map(|v| format!("vpc[{}]", v.name.get_ref()))
            .collect();
        for (v, path) in topo.vpc.iter().zip(&vpc_paths) {
            if self.check_name(&v.name, path, "VPC") && v.name.get_ref() == "internet" {
                self.error(
                    v.name.span(),
                    format!("{path}.name"),
                    "a VPC cannot be named `internet`",
                    "`internet` names the public segment in probes (`internet/HOST`); choose another name",
                );
            }
        }
        self.index_names(
            topo.vpc
                .iter()
                .map(|v| &v.name)
                .zip(vpc_paths.iter().cloned()),
            "VPC",
            "",
        );

        let mut eip_uses = Vec::new();
        let mut vpcs = Vec::new();
        for (vi, (vpc, path)) in topo.vpc.iter().zip(&vpc_paths).enumerate() {
            vpcs.push(self.check_vpc(vi, vpc, path, &eip_index, &mut eip_uses));
        }

        let eips = self.check_eips(topo, &eip_paths, eip_uses);
        let internet = self.check_internet(topo, &eips);
        let probes = self.check_probes(topo, &vpcs, &internet);
        Plan {
            vpcs,
            eips,
            internet,
            probes,
        }
    }

    fn check_vpc(
        &mut self,
        vi: usize,
        vpc: &model::Vpc,
        vp: &str,
        eip_index: &HashMap<&str, usize>,
        eip_uses: &mut Vec<EipUse>,
    ) -> VpcPlan {
        let vname = vpc.name.get_ref().as_str();
        let vcidr = *vpc.cidr.get_ref();
        let in_vpc = format!(" in VPC {vname}");
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

        // Names in this VPC's scopes.
        let sub_paths: Vec<String> = vpc
            .subnet
            .iter()
            .map(|s| format!("{vp}.subnet[{}]", s.name.get_ref()))
            .collect();
        let rt_paths: Vec<String> = vpc
            .route_table
            .iter()
            .map(|t| format!("{vp}.route_table[{}]", t.name.get_ref()))
            .collect();
        let inst_paths: Vec<String> = vpc
            .instance
            .iter()
            .map(|i| format!("{vp}.instance[{}]", i.name.get_ref()))
            .collect();
        let gw_paths: Vec<String> = vpc
            .nat_gateway
            .iter()
            .map(|g| format!("{vp}.nat_gateway[{}]", g.name.get_ref()))
            .collect();
        let sg_paths: Vec<String> = vpc
            .security_group
            .iter()
            .map(|g| format!("{vp}.security_group[{}]", g.name.get_ref()))
            .collect();
        let acl_paths: Vec<String> = vpc
            .network_acl
            .iter()
            .map(|a| format!("{vp}.network_acl[{}]", a.name.get_ref()))
            .collect();
        for (s, p) in vpc.subnet.iter().zip(&sub_paths) {
            self.check_name(&s.name, p, "subnet");
        }
        for (t, p) in vpc.route_table.iter().zip(&rt_paths) {
            self.check_name(&t.name, p, "route table");
        }
        for (i, p) in vpc.instance.iter().zip(&inst_paths) {
            self.check_name(&i.name, p, "instance");
        }
        for (g, p) in vpc.nat_gateway.iter().zip(&gw_paths) {
            self.check_name(&g.name, p, "NAT gateway");
        }
        for (g, p) in vpc.security_group.iter().zip(&sg_paths) {
            self.check_name(&g.name, p, "security group");
        }
        for (a, p) in vpc.network_acl.iter().zip(&acl_paths) {
            self.check_name(&a.name, p, "network ACL");
        }
        let subnets_by_name = self.index_names(
            vpc.subnet
                .iter()
                .map(|s| &s.name)
                .zip(sub_paths.iter().cloned()),
            "subnet",
            &in_vpc,
        );
        let tables_by_model = self.index_names(
            vpc.route_table
                .iter()
                .map(|t| &t.name)
                .zip(rt_paths.iter().cloned()),
            "route table",
            &in_vpc,
        );
        let instances_by_name = self.index_names(
            vpc.instance
                .iter()
                .map(|i| &i.name)
                .zip(inst_paths.iter().cloned()),
            "instance",
            &in_vpc,
        );
        let gateways_by_name = self.index_names(
            vpc.nat_gateway
                .iter()
                .map(|g| &g.name)
                .zip(gw_paths.iter().cloned()),
            "NAT gateway",
            &in_vpc,
        );
        let sgs_by_name = self.index_names(
            vpc.security_group
                .iter()
                .map(|g| &g.name)
                .zip(sg_paths.iter().cloned()),
            "security group",
            &in_vpc,
        );
        let acls_by_name = self.index_names(
            vpc.network_acl
                .iter()
                .map(|a| &a.name)
                .zip(acl_paths.iter().cloned()),
            "network ACL",
            &in_vpc,
        );

        // Route tables: the main table first (the user's `main`, or an implicit one).
        let local = RoutePlan {
            destination: vcidr,
            target: RouteTargetPlan::Local,
        };
        let user_main = tables_by_model.get(MAIN_ROUTE_TABLE).copied();
        let mut order: Vec<Option<usize>> = vec![user_main];
        order.extend(
            (0..vpc.route_table.len())
                .filter(|i| Some(*i) != user_main)
                .map(Some),
        );
        let mut tables_by_name: HashMap<&str, usize> = HashMap::new();
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

        // Subnets.
        let mut subnets = Vec::new();
        let mut usable = vec![false; vpc.subnet.len()];
        for (si, (s, sp)) in vpc.subnet.iter().zip(&sub_paths).enumerate() {
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

        // Security groups and network ACLs: references only (their rules are kept as written).
        for (g, gp) in vpc.security_group.iter().zip(&sg_paths) {
            let dirs = [("ingress", Some(&g.ingress)), ("egress", g.egress.as_ref())];
            for (dir, rules) in dirs {
                for (ri, rule) in rules.into_iter().flatten().enumerate() {
                    let rp = format!("{gp}.{dir}[{ri}].peer");
                    let peer = rule.peer.get_ref();
                    if let Some(name) = peer.strip_prefix("sg:") {
                        if !sgs_by_name.contains_key(name) {
                            let hint = unknown_hint(
                                name,
                                sgs_by_name.keys().copied(),
                                "security groups",
                                &format!("define it with [[vpc.security_group]] in VPC {vname}"),
                            );
                            self.error(
                                rule.peer.span(),
                                rp,
                                format!("unknown security group `{name}` in VPC {vname}"),
                                hint,
                            );
                        }
                    } else if let Err(e) = peer.parse::<Cidr>() {
                        self.error(
                            rule.peer.span(),
                            rp,
                            format!("{e}").split("; ").next().unwrap_or_default().to_string(),
                            "write a CIDR like \"10.0.0.0/16\", or `sg:NAME` for the members of a security group",
                        );
                    }
                }
            }
        }
        for (a, ap) in vpc.network_acl.iter().zip(&acl_paths) {
            for (dir, rules) in [("inbound", &a.inbound), ("outbound", &a.outbound)] {
                let mut seen: HashMap<u16, usize> = HashMap::new();
                for (ri, rule) in rules.iter().enumerate() {
                    let n = *rule.rule.get_ref();
                    if let Some(first) = seen.get(&n) {
                        let line = self.line_of(*first);
                        self.error(
                            rule.rule.span(),
                            format!("{ap}.{dir}[{ri}].rule"),
                            format!(
                                "duplicate {dir} rule number {n} in network ACL {}",
                                a.name.get_ref()
                            ),
                            format!(
                                "rule numbers order evaluation; rule {n} is already on line {line}, choose another number"
                            ),
                        );
                    } else {
                        seen.insert(n, rule.rule.span().start);
                    }
                }
            }
        }

        // Addresses: explicit ones first, then NAT gateways and instances in file order.
        let mut used: HashMap<Ipv4Addr, Holder> = HashMap::new();
        let gw_subnet: Vec<Option<usize>> = vpc
            .nat_gateway
            .iter()
            .zip(&gw_paths)
            .map(|(g, gp)| {
                self.resolve_subnet(&g.subnet, &format!("{gp}.subnet"), &subnets_by_name, vname)
            })
            .collect();
        let inst_subnet: Vec<Option<usize>> = vpc
            .instance
            .iter()
            .zip(&inst_paths)
            .map(|(i, ip)| {
                self.resolve_subnet(&i.subnet, &format!("{ip}.subnet"), &subnets_by_name, vname)
            })
            .collect();
        let explicit = vpc
            .nat_gateway
            .iter()
            .zip(&gw_paths)
            .zip(&gw_subnet)
            .map(|((g, p), s)| (&g.ip, p, *s, format!("NAT gateway {}", g.name.get_ref())))
            .chain(
                vpc.instance
                    .iter()
                    .zip(&inst_paths)
                    .zip(&inst_subnet)
                    .map(|((i, p), s)| (&i.ip, p, *s, format!("instance {}", i.name.get_ref()))),
            );
        let mut explicit_items: Vec<_> = explicit
            .filter_map(|(ip, p, s, what)| ip.as_ref().map(|ip| (ip, p, s, what)))
            .collect();
        explicit_items.sort_by_key(|(ip, ..)| ip.span().start);
        for (ip, p, s, what) in explicit_items {
            let addr = ip.get_ref().0;
            if let Some(si) = s.filter(|si| usable[*si]) {
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
        let mut assign = |this: &mut Self,
                          ip: &Option<Spanned<Addr>>,
                          s: Option<usize>,
                          name: &Spanned<String>,
                          path: &str,
                          what: String|
         -> Ipv4Addr {
            if let Some(ip) = ip {
                return ip.get_ref().0;
            }
            let Some(si) = s.filter(|si| usable[*si]) else {
                return Ipv4Addr::UNSPECIFIED;
            };
            let c = *vpc.subnet[si].cidr.get_ref();
            let mut a = u32::from(first_host(c));
            let last = u32::from(last_host(c));
            while a <= last && used.contains_key(&Ipv4Addr::from(a)) {
                a += 1;
            }
            if a > last {
                this.error(
                    name.span(),
                    format!("{path}.name"),
                    format!(
                        "subnet {} ({c}) has no free address left for {what}",
                        vpc.subnet[si].name.get_ref()
                    ),
                    "use a larger subnet, or attach it to another subnet",
                );
                return Ipv4Addr::UNSPECIFIED;
            }
            let addr = Ipv4Addr::from(a);
            let line = this.line_of(name.span().start);
            used.insert(addr, Holder { what, line });
            addr
        };
        let gw_ips: Vec<Ipv4Addr> = vpc
            .nat_gateway
            .iter()
            .zip(&gw_paths)
            .zip(&gw_subnet)
            .map(|((g, p), s)| {
                let what = format!("NAT gateway {}", g.name.get_ref());
                assign(self, &g.ip, *s, &g.name, p, what)
            })
            .collect();
        let inst_ips: Vec<Ipv4Addr> = vpc
            .instance
            .iter()
            .zip(&inst_paths)
            .zip(&inst_subnet)
            .map(|((i, p), s)| {
                let what = format!("instance {}", i.name.get_ref());
                assign(self, &i.ip, *s, &i.name, p, what)
            })
            .collect();

        // Instances.
        let mut instances = Vec::new();
        for (ii, (inst, ip)) in vpc.instance.iter().zip(&inst_paths).enumerate() {
            let mut security_groups = Vec::new();
            for (k, g) in inst.security_groups.iter().enumerate() {
                match sgs_by_name.get(g.get_ref().as_str()) {
                    Some(i) => security_groups.push(*i),
                    None => {
                        let hint = unknown_hint(
                            g.get_ref(),
                            sgs_by_name.keys().copied(),
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
                        vpc: vi,
                        instance: ii,
                    },
                    what: format!("instance {vname}/{}", inst.name.get_ref()),
                    span: e.span(),
                    path: format!("{ip}.eip"),
                });
                Some(ei)
            });
            let mtu = self.check_mtu(inst.mtu.as_ref(), ip);
            instances.push(InstancePlan {
                name: inst.name.get_ref().clone(),
                subnet: inst_subnet[ii].unwrap_or(0),
                ip: inst_ips[ii],
                attach: inst.attach,
                mtu,
                eip,
                security_groups,
            });
        }

        // NAT gateways.
        let mut nat_gateways = Vec::new();
        for (gi, (g, gp)) in vpc.nat_gateway.iter().zip(&gw_paths).enumerate() {
            let gname = g.name.get_ref();
            let mut eips = Vec::new();
            for (k, e) in g.eips.iter().enumerate() {
                let path = format!("{gp}.eips[{k}]");
                if let Some(ei) = self.resolve_eip(e, &path, eip_index) {
                    eip_uses.push(EipUse {
                        eip: ei,
                        binding: EipBinding::NatGateway {
                            vpc: vi,
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
            let own = |this: &mut Self, e: &Spanned<String>, path: String| -> Option<usize> {
                let ei = this.resolve_eip(e, &path, eip_index)?;
                if eips.contains(&ei) {
                    return Some(ei);
                }
                let list: Vec<&str> = g.eips.iter().map(|e| e.get_ref().as_str()).collect();
                this.error(
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
            };
            let mut snat = Vec::new();
            for (k, entry) in g.snat.iter().enumerate() {
                let sp = format!("{gp}.snat[{k}]");
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
                } else if let Some(ii) = instances_by_name.get(src.as_str()) {
                    Cidr::new(inst_ips[*ii], 32)
                } else {
                    let hint = unknown_hint(
                        src,
                        instances_by_name.keys().copied(),
                        "instances",
                        "write a CIDR like \"10.0.1.0/24\" or the name of an instance of this VPC",
                    );
                    self.error(
                        entry.source.span(),
                        format!("{sp}.source"),
                        format!(
                            "SNAT source `{src}` is neither a CIDR nor an instance of VPC {vname}"
                        ),
                        hint,
                    );
                    None
                };
                let mut pool = Vec::new();
                for (j, e) in entry.eips.iter().enumerate() {
                    if let Some(ei) = own(self, e, format!("{sp}.eips[{j}]")) {
                        pool.push(ei);
                    }
                }
                if entry.eips.is_empty() {
                    pool = eips.clone();
                    if g.eips.is_empty() {
                        self.error(
                            entry.source.span(),
                            format!("{sp}.source"),
                            format!("NAT gateway {gname} has no EIP to translate {src} to"),
                            "list the gateway's EIPs in its `eips`, or this entry's `eips`",
                        );
                    }
                }
                if let Some(source) = source {
                    snat.push(SnatPlan { source, eips: pool });
                }
            }
            let mut dnat = Vec::new();
            let mut mapped: HashMap<(usize, Option<&str>, Option<u16>), usize> = HashMap::new();
            for (k, entry) in g.dnat.iter().enumerate() {
                let dp = format!("{gp}.dnat[{k}]");
                let eip = own(self, &entry.eip, format!("{dp}.eip"));
                let protocol = *entry.protocol.get_ref();
                let port = entry.port.as_ref().map(|p| *p.get_ref());
                match (protocol, &entry.port) {
                    (DnatProtocol::Any, Some(p)) => self.error(
                        p.span(),
                        format!("{dp}.port"),
                        "a DNAT entry with protocol \"any\" maps the whole address and takes no `port`",
                        "remove `port`, or set `protocol` to \"tcp\" or \"udp\"",
                    ),
                    (DnatProtocol::Tcp | DnatProtocol::Udp, None) => self.error(
                        entry.protocol.span(),
                        format!("{dp}.port"),
                        format!(
                            "a DNAT entry for {} needs the external `port`",
                            dnat_proto_str(protocol)
                        ),
                        "add `port = 80` (the EIP's port); `instance_port` defaults to it",
                    ),
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
                let instance = match instances_by_name.get(entry.instance.get_ref().as_str()) {
                    Some(i) => Some(*i),
                    None => {
                        let hint = unknown_hint(
                            entry.instance.get_ref(),
                            instances_by_name.keys().copied(),
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
                    });
                }
            }
            nat_gateways.push(NatGatewayPlan {
                name: gname.clone(),
                subnet: gw_subnet[gi].unwrap_or(0),
                ip: gw_ips[gi],
                eips,
                snat,
                dnat,
            });
        }

        VpcPlan {
            name: vname.to_string(),
            cidr: vcidr,
            subnets,
            route_tables,
            instances,
            nat_gateways,
            security_groups: vpc.security_group.clone(),
            network_acls: vpc.network_acl.clone(),
        }
    }

    fn resolve_subnet(
        &mut self,
        s: &Spanned<String>,
        path: &str,
        by_name: &HashMap<&str, usize>,
        vname: &str,
    ) -> Option<usize> {
        if let Some(i) = by_name.get(s.get_ref().as_str()) {
            return Some(*i);
        }
        let hint = unknown_hint(
            s.get_ref(),
            by_name.keys().copied(),
            "subnets",
            &format!("define it with [[vpc.subnet]] in VPC {vname}"),
        );
        self.error(
            s.span(),
            path,
            format!("unknown subnet `{}` in VPC {vname}", s.get_ref()),
            hint,
        );
        None
    }

    fn resolve_eip(
        &mut self,
        e: &Spanned<String>,
        path: &str,
        by_name: &HashMap<&str, usize>,
    ) -> Option<usize> {
        if let Some(i) = by_name.get(e.get_ref().as_str()) {
            return Some(*i);
        }
        let hint = unknown_hint(
            e.get_ref(),
            by_name.keys().copied(),
            "EIPs",
            "define it with [[eip]] (name and address)",
        );
        self.error(
            e.span(),
            path,
            format!("unknown EIP `{}`", e.get_ref()),
            hint,
        );
        None
    }

    fn check_mtu(&mut self, mtu: Option<&Spanned<u32>>, path: &str) -> u32 {
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

    fn check_eips(
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

    fn check_internet(&mut self, topo: &Topology, eips: &[EipPlan]) -> InternetPlan {
        let default: Cidr = model::DEFAULT_INTERNET_CIDR
            .parse()
            .expect("DEFAULT_INTERNET_CIDR is a valid block");
        let Some(net) = &topo.internet else {
            return InternetPlan {
                cidr: default,
                hosts: Vec::new(),
            };
        };
        let cidr = net.cidr.as_ref().map_or(default, |c| *c.get_ref());
        let paths: Vec<String> = net
            .host
            .iter()
            .map(|h| format!("internet.host[{}]", h.name.get_ref()))
            .collect();
        for (h, p) in net.host.iter().zip(&paths) {
            self.check_name(&h.name, p, "host");
        }
        self.index_names(
            net.host.iter().map(|h| &h.name).zip(paths.iter().cloned()),
            "host",
            " on the internet",
        );
        // The public segment: EIPs first (they are declared at the top level), then hosts.
        let mut public: HashMap<Ipv4Addr, String> = HashMap::new();
        for (e, me) in topo.eip.iter().zip(eips) {
            let line = self.line_of(e.address.span().start);
            public
                .entry(me.address)
                .or_insert(format!("EIP {} (line {line})", me.name));
        }
        let mut hosts = Vec::new();
        for (h, p) in net.host.iter().zip(&paths) {
            let a = h.ip.get_ref().0;
            let name = h.name.get_ref();
            if !cidr.contains(a) {
                self.error(
                    h.ip.span(),
                    format!("{p}.ip"),
                    format!("host {name}'s address {a} is outside the internet CIDR {cidr}"),
                    format!("choose an address inside {cidr}, or set `cidr` in [internet]"),
                );
            } else if let Some(kind) = non_public(a) {
                self.error(
                    h.ip.span(),
                    format!("{p}.ip"),
                    format!("host {name}'s address {a} is {kind}, not a public address"),
                    "internet hosts need public addresses; set [internet] cidr to a documentation range like 198.51.100.0/24",
                );
            } else if let Some(holder) = public.get(&a) {
                self.error(
                    h.ip.span(),
                    format!("{p}.ip"),
                    format!("address {a} is already used by {holder} on the public segment"),
                    "every internet host and EIP needs its own address",
                );
            } else {
                let line = self.line_of(h.ip.span().start);
                public.insert(a, format!("host {name} (line {line})"));
            }
            let mtu = self.check_mtu(h.mtu.as_ref(), p);
            hosts.push(HostPlan {
                name: name.clone(),
                ip: a,
                serve: h.serve.iter().map(|s| *s.get_ref()).collect(),
                attach: h.attach,
                mtu,
            });
        }
        InternetPlan { cidr, hosts }
    }

    fn check_probes(
        &mut self,
        topo: &Topology,
        vpcs: &[VpcPlan],
        internet: &InternetPlan,
    ) -> Vec<ProbePlan> {
        let find = |scope: &str, name: &str| -> Result<Endpoint, String> {
            if scope == "internet" {
                return internet
                    .hosts
                    .iter()
                    .position(|h| h.name == name)
                    .map(Endpoint::Host)
                    .ok_or_else(|| format!("there is no internet host named `{name}`"));
            }
            let vpc = vpcs
                .iter()
                .position(|v| v.name == scope)
                .ok_or_else(|| format!("there is no VPC named `{scope}`"))?;
            vpcs[vpc]
                .instances
                .iter()
                .position(|i| i.name == name)
                .map(|instance| Endpoint::Instance { vpc, instance })
                .ok_or_else(|| format!("VPC {scope} has no instance named `{name}`"))
        };
        let endpoints: Vec<String> = vpcs
            .iter()
            .flat_map(|v| {
                v.instances
                    .iter()
                    .map(move |i| format!("{}/{}", v.name, i.name))
            })
            .chain(
                internet
                    .hosts
                    .iter()
                    .map(|h| format!("internet/{}", h.name)),
            )
            .collect();
        let endpoint_hint = |wrong: &str| -> String {
            let known = endpoints.iter().map(String::as_str);
            match closest(wrong, known) {
                Some(best) => format!(
                    "did you mean `{best}`? name an endpoint as `VPC/INSTANCE` or `internet/HOST`"
                ),
                None => {
                    "name an endpoint as `VPC/INSTANCE` or `internet/HOST` of this file".to_string()
                }
            }
        };
        let mut probes = Vec::new();
        for (i, probe) in topo.probe.iter().enumerate() {
            let pp = match &probe.name {
                Some(n) => format!("probe[{n}]"),
                None => format!("probe[{i}]"),
            };
            let from_text = probe.from.get_ref();
            let from = match from_text.split_once('/') {
                Some((scope, name)) if !scope.is_empty() && !name.is_empty() => {
                    match find(scope, name) {
                        Ok(e) => Some(e),
                        Err(why) => {
                            self.error(
                                probe.from.span(),
                                format!("{pp}.from"),
                                format!("unknown probe source `{from_text}`: {why}"),
                                endpoint_hint(from_text),
                            );
                            None
                        }
                    }
                }
                _ => {
                    self.error(
                        probe.from.span(),
                        format!("{pp}.from"),
                        format!("`{from_text}` is not a probe source"),
                        "write `VPC/INSTANCE` or `internet/HOST`, like \"tenant-a/fn-a1\"",
                    );
                    None
                }
            };
            let to = probe.to.get_ref();
            let (to_endpoint, to_addr) = match &to.host {
                TargetHost::Addr(a) => (None, Some(*a)),
                TargetHost::Named { scope, name } => match find(scope, name) {
                    Ok(e) => {
                        let addr = match e {
                            Endpoint::Host(h) => internet.hosts.get(h).map(|h| h.ip),
                            Endpoint::Instance { vpc, instance } => vpcs
                                .get(vpc)
                                .and_then(|v| v.instances.get(instance))
                                .map(|i| i.ip),
                        };
                        (Some(e), addr)
                    }
                    Err(why) => {
                        let named = format!("{scope}/{name}");
                        self.error(
                            probe.to.span(),
                            format!("{pp}.to"),
                            format!("unknown probe target `{named}`: {why}"),
                            endpoint_hint(&named),
                        );
                        (None, None)
                    }
                },
            };
            if let (Some(from), Some(to_addr)) = (from, to_addr) {
                probes.push(ProbePlan {
                    name: probe
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{from_text} -> {to}")),
                    from,
                    to: to.clone(),
                    to_endpoint,
                    to_addr,
                    expect: *probe.expect.get_ref(),
                });
            }
        }
        probes
    }
}

fn dnat_proto_str(p: DnatProtocol) -> &'static str {
    match p {
        DnatProtocol::Tcp => "tcp",
        DnatProtocol::Udp => "udp",
        DnatProtocol::Any => "any",
    }
}

/// `[A-Za-z0-9_.-]{1,32}`.
pub fn is_valid_name(n: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// "did you mean" plus the known names, or what to do when there are none.
fn unknown_hint<'a>(
    wrong: &str,
    known: impl Iterator<Item = &'a str>,
    plural: &str,
    otherwise: &str,
) -> String {
    let mut known: Vec<&str> = known.collect();
    known.sort_unstable();
    if known.is_empty() {
        return format!("there are no {plural} here; {otherwise}");
    }
    let list = known.join(", ");
    match closest(wrong, known.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? known {plural}: {list}"),
        None => format!("known {plural}: {list}; or {otherwise}"),
    }
}

/// The first address an instance may use: after the network address and the `.1` gateway.
fn first_host(c: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(c.network()).saturating_add(2))
}

/// The last address an instance may use: before broadcast.
fn last_host(c: Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(c.broadcast()).saturating_sub(1))
}

/// Which reserved role `addr` plays in subnet `c`, if any.
fn reserved_role(c: Cidr, addr: Ipv4Addr) -> Option<&'static str> {
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

/// Why `a` cannot be a public address, if it cannot.
fn non_public(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_private() {
        Some("a private (RFC 1918) address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else if o[0] == 0 {
        Some("in 0.0.0.0/8 (\"this network\")")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a shared (carrier-grade NAT, RFC 6598) address")
    } else if o[0] >= 224 {
        Some("a multicast or reserved address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("cdir", "cidr"), 1);
        assert_eq!(edit_distance("subnet", "subnet"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            closest("rout_table", ["route_table", "name"]),
            Some("route_table")
        );
        assert_eq!(closest("zzz", ["route_table", "name"]), None);
    }

    #[test]
    fn key_paths_use_element_names() {
        let text = "[[vpc]]\nname = \"a\"\n[[vpc.subnet]]\nname = \"s\"\ncidr = 1\n[[vpc.subnet]]\ncidr = 2\n";
        let tree = DeTable::parse(text).unwrap();
        let at = |needle: &str| key_path_at(tree.get_ref(), text, text.find(needle).unwrap());
        assert_eq!(at("cidr = 1"), "vpc[a].subnet[s].cidr");
        assert_eq!(at("1\n"), "vpc[a].subnet[s].cidr");
        assert_eq!(at("cidr = 2"), "vpc[a].subnet[1].cidr");
        assert_eq!(at("[[vpc.subnet]]\ncidr"), "vpc[a].subnet[1]");
    }

    #[test]
    fn names_and_addresses() {
        assert!(is_valid_name("fn-a1.x_y"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name("nat:x"));
        assert!(!is_valid_name(&"a".repeat(33)));
        let c: Cidr = "10.0.1.0/24".parse().unwrap();
        assert_eq!(
            reserved_role(c, Ipv4Addr::new(10, 0, 1, 1)),
            Some("subnet gateway (.1)")
        );
        assert_eq!(reserved_role(c, Ipv4Addr::new(10, 0, 1, 2)), None);
        assert_eq!(first_host(c), Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(last_host(c), Ipv4Addr::new(10, 0, 1, 254));
        assert!(non_public(Ipv4Addr::new(172, 20, 0, 1)).is_some());
        assert!(non_public(Ipv4Addr::new(100, 64, 0, 1)).is_some());
        assert!(non_public(Ipv4Addr::new(203, 0, 113, 1)).is_none());
    }

    #[test]
    fn serde_messages_become_message_and_hint() {
        let d = serde_diagnostic(
            "f",
            "",
            &DeTable::new(),
            &toml::from_str::<Topology>(
                "[[vpc]]\nname = \"a\"\ncidr = \"10.0.0.0/16\"\nsubnets = []\n",
            )
            .unwrap_err(),
        );
        assert_eq!(d.message, "unknown key `subnets`");
        assert_eq!(
            d.hint.as_deref(),
            Some(
                "did you mean `subnet`? the keys here are: name, cidr, subnet, route_table, instance, nat_gateway, security_group, network_acl"
            )
        );
    }
}
