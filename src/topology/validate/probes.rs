//! Probes: reachability assertions, with endpoints (`VPC/INSTANCE`, `internet/HOST`) resolved
//! against the plan built so far. Probe names, when given, are unique; tags are names, each at
//! most once per probe.

use std::net::Ipv4Addr;

use super::super::model::{TargetHost, Topology};
use super::super::plan::{Endpoint, InternetPlan, ProbePlan, VpcPlan};
use toml::Spanned;

use super::Checker;
use super::names::{MAX_NAME_LEN, closest, is_valid_name};
use super::syntax::Step;

impl Checker<'_> {
    pub(super) fn check_probes(
        &mut self,
        topo: &Topology,
        vpcs: &[VpcPlan],
        internet: &InternetPlan,
        lookup: &dyn Fn(Endpoint, &str) -> Result<Ipv4Addr, String>,
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
        // Given names are unique: they label the rows of `vpcd test`'s table. The model keeps
        // no span for them, so it comes from the syntax tree.
        let named: Vec<(Spanned<String>, String)> = topo
            .probe
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let n = p.name.as_ref()?;
                let span = self
                    .span_at(&[Step::Key("probe"), Step::Index(i), Step::Key("name")])
                    .unwrap_or_else(|| p.from.span());
                Some((Spanned::new(span, n.clone()), format!("probe[{n}]")))
            })
            .collect();
        self.index_names(named.iter().map(|(n, p)| (n, p.clone())), "probe", "");
        let mut probes = Vec::new();
        for (i, probe) in topo.probe.iter().enumerate() {
            let pp = match &probe.name {
                Some(n) => format!("probe[{n}]"),
                None => format!("probe[{i}]"),
            };
            let tags = self.check_tags(&pp, &probe.tags);
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
                TargetHost::Dns(name) => match from.map(|f| lookup(f, name)) {
                    Some(Ok(a)) => (None, Some(a)),
                    Some(Err(why)) => {
                        self.error(
                            probe.to.span(),
                            format!("{pp}.to"),
                            format!("probe target `{name}` does not resolve from {from_text}: {why}"),
                            "name an instance (`NAME.VPC.vpc.internal`), a zone's record, or an internet host's `dns_names`",
                        );
                        (None, None)
                    }
                    None => (None, None),
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
                    tags,
                });
            }
        }
        probes
    }
}

impl Checker<'_> {
    /// A probe's tags: each a valid name, none twice. Returns the valid ones, in order.
    fn check_tags(&mut self, pp: &str, tags: &[Spanned<String>]) -> Vec<String> {
        let mut kept: Vec<String> = Vec::new();
        for (i, tag) in tags.iter().enumerate() {
            let t = tag.get_ref();
            if !is_valid_name(t) {
                self.error(
                    tag.span(),
                    format!("{pp}.tags[{i}]"),
                    format!("`{t}` is not a valid tag"),
                    format!(
                        "write a tag like a name: 1 to {MAX_NAME_LEN} characters from A-Z, a-z, \
                         0-9, `_`, `.` and `-`, e.g. \"egress\""
                    ),
                );
            } else if kept.contains(t) {
                self.error(
                    tag.span(),
                    format!("{pp}.tags[{i}]"),
                    format!("duplicate tag `{t}` on one probe"),
                    "list each tag once",
                );
            } else {
                kept.push(t.clone());
            }
        }
        kept
    }
}
