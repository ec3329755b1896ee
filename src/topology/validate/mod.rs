//! Validation: TOML text -> model -> plan, with located errors.
//!
//! Three stages, each reporting every problem it can find before giving up:
//! 1. TOML syntax (`toml::de::DeTable::parse_recoverable`): every syntax error the parser recovers
//!    from;
//! 2. the serde model (`toml::from_str::<Topology>`): unknown keys, missing keys, bad values. serde
//!    stops at the first such error, so this stage reports one;
//! 3. the rules (the `Checker`): names, references, addresses. Every problem, in file order.
//!
//! Stages 1 and 2 live in `syntax`; stage 3 is split by concept: `names` (names, duplicates,
//! references and typo hints), `vpc` (VPC, subnets, route tables, addresses, instances), `nat`
//! (NAT gateways, SNAT, DNAT, EIPs), `rules` (security groups and network ACLs), `public` (the
//! internet segment), `uplink` (the host uplink, its binds and listeners), `dns` (DNS zones,
//! their records and hosts' DNS names) and `probes`. This file drives the stages and owns the
//! `Checker`.
//!
//! Key paths name array elements by their `name` key where they have one (`vpc[tenant-a]`), and by
//! their 0-based position otherwise (`routes[2]`). The documented rules are in `topologies/README.md`;
//! keep the two in step. No input makes this module panic.

mod dns;
mod names;
mod nat;
mod probes;
mod public;
mod rules;
mod syntax;
mod uplink;
mod vpc;

use std::ops::Range;

use toml::de::DeTable;

use super::diagnostic::Diagnostic;
use super::model::Topology;
use super::plan::EipBinding;
use super::{Plan, TopologyError};
use syntax::{Step, floor_boundary, serde_diagnostic, syntax_diagnostic};

/// For the control core's incremental checks of one change (`control::incremental`): the same
/// rules as the whole-file checks here, not a copy of them.
pub(crate) use names::is_valid_name;
pub(crate) use vpc::{first_host, last_host, reserved_role};

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
        tree: tree.get_ref(),
        newlines: text.match_indices('\n').map(|(at, _)| at).collect(),
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
// Stage 3: the rules.

/// One use of an EIP (by an instance, `vpc`, or a NAT gateway, `nat`), collected to find EIPs
/// bound twice (`nat`).
struct EipUse {
    pub eip: usize,
    pub binding: EipBinding,
    pub what: String,
    pub span: Range<usize>,
    pub path: String,
}

/// Collects the diagnostics of stage 3. Its checks are `impl Checker` blocks in the sibling files.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    /// The syntax tree, for spans the model does not keep (whole tables, probe names).
    tree: &'a DeTable<'a>,
    /// The byte offset of every `\n` in `text`, in order: `line_of` is a binary search, not a
    /// scan of the text (checks ask for the line of every address they record, so a scan made
    /// validation quadratic in the size of the file).
    newlines: Vec<usize>,
    /// (byte offset, diagnostic), sorted into file order at the end.
    diags: Vec<(usize, Diagnostic)>,
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

    /// The span of the value at `path` in the syntax tree (a whole table for a table).
    fn span_at(&self, path: &[Step<'_>]) -> Option<Range<usize>> {
        syntax::span_at(self.tree, path)
    }

    /// The 1-based line of byte `offset`: one more than the newlines before it.
    fn line_of(&self, offset: usize) -> usize {
        let end = floor_boundary(self.text, offset);
        self.newlines.partition_point(|&at| at < end) + 1
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
        let vpc_index = self.index_names(
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
        let mut internet = self.check_internet(topo, &eips);
        internet.uplink = self.check_uplink(topo, &eips, &internet);
        let zones = self.check_zones(&topo.zone, "zone", Some(&vpc_index));
        for (rule, visible) in self.check_dns_firewall(topo, &vpc_index) {
            for v in visible {
                vpcs[v].dns_firewall.push(rule.clone());
            }
        }
        for (names, visible) in self.check_egress_by_name(topo, &vpc_index) {
            for v in visible {
                vpcs[v].egress_names.extend(names.iter().cloned());
            }
        }
        let mut plan = Plan {
            vpcs,
            eips,
            internet,
            probes: Vec::new(),
            zones,
        };
        // Last: a probe to a DNS name is looked up in the plan's names.
        let lookup = |from, name: &str| super::compile::dns::lookup(&plan, from, name);
        let probes = self.check_probes(topo, &plan.vpcs, &plan.internet, &lookup);
        plan.probes = probes;
        plan
    }
}
