//! Names: their characters, duplicates per scope, references by name, and the "did you mean"
//! hints for names that resolve to nothing.
//!
//! A name is 1 to 32 characters from `[A-Za-z0-9_.-]`. VPCs, EIPs and internet hosts are unique
//! globally; a VPC's subnets, route tables, instances, NAT gateways, security groups and network
//! ACLs are unique in their VPC ([`VpcScope`]).

use std::collections::HashMap;

use toml::Spanned;

use super::super::model;
use super::Checker;

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 32;

const NAME_HINT: &str =
    "use 1 to 32 characters from A-Z, a-z, 0-9, `_`, `.` and `-` (no `/` or `:`)";

/// One VPC's key paths and name -> index maps (indices into the model's vectors), shared by the
/// checks of its parts.
pub(super) struct VpcScope<'v> {
    /// The VPC's position in the file.
    pub vi: usize,
    pub vpc: &'v model::Vpc,
    pub name: &'v str,
    pub cidr: super::super::cidr::Cidr,
    pub sub_paths: Vec<String>,
    pub rt_paths: Vec<String>,
    pub inst_paths: Vec<String>,
    pub gw_paths: Vec<String>,
    pub sg_paths: Vec<String>,
    pub acl_paths: Vec<String>,
    pub subnets: HashMap<&'v str, usize>,
    pub route_tables: HashMap<&'v str, usize>,
    pub instances: HashMap<&'v str, usize>,
    pub gateways: HashMap<&'v str, usize>,
    pub security_groups: HashMap<&'v str, usize>,
    pub network_acls: HashMap<&'v str, usize>,
}

impl Checker<'_> {
    /// Checks a name's characters; true when valid.
    pub(super) fn check_name(&mut self, name: &Spanned<String>, path: &str, what: &str) -> bool {
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
    pub(super) fn index_names<'n>(
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

    /// Checks the names of a VPC's parts and indexes them, reporting duplicates in the VPC.
    pub(super) fn vpc_scope<'v>(
        &mut self,
        vi: usize,
        vpc: &'v model::Vpc,
        vp: &str,
    ) -> VpcScope<'v> {
        let vname = vpc.name.get_ref().as_str();
        let in_vpc = format!(" in VPC {vname}");
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
        let subnets = self.index_names(
            vpc.subnet
                .iter()
                .map(|s| &s.name)
                .zip(sub_paths.iter().cloned()),
            "subnet",
            &in_vpc,
        );
        let route_tables = self.index_names(
            vpc.route_table
                .iter()
                .map(|t| &t.name)
                .zip(rt_paths.iter().cloned()),
            "route table",
            &in_vpc,
        );
        let instances = self.index_names(
            vpc.instance
                .iter()
                .map(|i| &i.name)
                .zip(inst_paths.iter().cloned()),
            "instance",
            &in_vpc,
        );
        let gateways = self.index_names(
            vpc.nat_gateway
                .iter()
                .map(|g| &g.name)
                .zip(gw_paths.iter().cloned()),
            "NAT gateway",
            &in_vpc,
        );
        let security_groups = self.index_names(
            vpc.security_group
                .iter()
                .map(|g| &g.name)
                .zip(sg_paths.iter().cloned()),
            "security group",
            &in_vpc,
        );
        let network_acls = self.index_names(
            vpc.network_acl
                .iter()
                .map(|a| &a.name)
                .zip(acl_paths.iter().cloned()),
            "network ACL",
            &in_vpc,
        );
        VpcScope {
            vi,
            vpc,
            name: vname,
            cidr: *vpc.cidr.get_ref(),
            sub_paths,
            rt_paths,
            inst_paths,
            gw_paths,
            sg_paths,
            acl_paths,
            subnets,
            route_tables,
            instances,
            gateways,
            security_groups,
            network_acls,
        }
    }

    pub(super) fn resolve_subnet(
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

    pub(super) fn resolve_eip(
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
}

/// `[A-Za-z0-9_.-]{1,32}`.
pub fn is_valid_name(n: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// "did you mean" plus the known names, or what to do when there are none.
pub(super) fn unknown_hint<'a>(
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

/// The candidate closest to `word` by edit distance, when close enough to be a likely typo.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
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
    fn names() {
        assert!(is_valid_name("fn-a1.x_y"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name("nat:x"));
        assert!(!is_valid_name(&"a".repeat(33)));
    }
}
