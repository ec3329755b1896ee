//! `vpcd check FILE`: validate and print the resolved addressing plan and the probes (with their
//! tags).
//!
//! On success the plan goes to stdout as aligned plain-text tables (exit 0). On failure every
//! diagnostic goes to stderr (exit 2), also when the file cannot be read.

use std::fmt::Write as _;
use std::path::Path;

use crate::topology::model::Attach;
use crate::topology::plan::{EipBinding, Plan};
use crate::topology::{self, TopologyError};

use super::output::{self, errln, errprint};
use super::{EXIT_BAD_INPUT, EXIT_OK};

pub fn run(file: &Path) -> u8 {
    match topology::load(file) {
        Ok(plan) => {
            let text = render(&file.display().to_string(), &plan);
            output::finish(EXIT_OK, output::stdout(text))
        }
        Err(e @ TopologyError::Io { .. }) => {
            errln!("{e}");
            EXIT_BAD_INPUT
        }
        Err(e) => {
            errprint!("{e}");
            EXIT_BAD_INPUT
        }
    }
}

/// The VPC's resolver: its addresses, its domain, the private zones it answers and its DNS
/// Firewall rules.
fn resolver_line(out: &mut String, plan: &Plan, vi: usize) {
    let vpc = &plan.vpcs[vi];
    let zones: Vec<String> = plan
        .zones
        .iter()
        .filter(|z| z.vpcs.contains(&vi))
        .map(|z| z.apex.to_string().trim_end_matches('.').to_string())
        .collect();
    let _ = writeln!(
        out,
        "  resolver {}, {}  {}.{}  private zones: {}  DNS Firewall rules: {}",
        crate::tables::resolver_address(vpc.cidr),
        crate::tables::RESOLVER_LINK_LOCAL,
        vpc.name,
        crate::dns::names::INTERNAL_DOMAIN,
        if zones.is_empty() {
            "-".to_string()
        } else {
            zones.join(", ")
        },
        vpc.dns_firewall.len()
    );
}

/// The addressing plan as text: one block per VPC, then EIPs, the internet and the probe count.
pub fn render(file: &str, plan: &Plan) -> String {
    let mut out = String::new();
    let hosts = plan.internet.hosts.len();
    let _ = writeln!(
        out,
        "{file}: valid; {} VPC(s), {} EIP(s), {hosts} internet host(s), {} probe(s)",
        plan.vpcs.len(),
        plan.eips.len(),
        plan.probes.len()
    );
    for (vi, vpc) in plan.vpcs.iter().enumerate() {
        let _ = writeln!(out, "\nvpc {}  {}", vpc.name, vpc.cidr);
        resolver_line(&mut out, plan, vi);
        let mut rows = vec![row([
            "subnet",
            "cidr",
            "gateway",
            "route table",
            "network acl",
        ])];
        for s in &vpc.subnets {
            rows.push(vec![
                s.name.clone(),
                s.cidr.to_string(),
                s.gateway.to_string(),
                name_at(&vpc.route_tables, s.route_table, |t| &t.name),
                s.network_acl.map_or("-".into(), |a| {
                    name_at(&vpc.network_acls, a, |n| n.name.get_ref())
                }),
            ]);
        }
        table(&mut out, "  ", &rows);
        for t in &vpc.route_tables {
            let _ = writeln!(out, "  route table {}", t.name);
            let rows: Vec<Vec<String>> = t
                .routes
                .iter()
                .map(|r| {
                    vec![
                        r.destination.to_string(),
                        "->".into(),
                        describe_target(vpc, r.target),
                    ]
                })
                .collect();
            table(&mut out, "    ", &rows);
        }
        if !vpc.instances.is_empty() {
            let mut rows = vec![row(["instance", "subnet", "ip", "attach", "mtu", "eip"])];
            for i in &vpc.instances {
                rows.push(vec![
                    i.name.clone(),
                    name_at(&vpc.subnets, i.subnet, |s| &s.name),
                    i.ip.to_string(),
                    attach(i.attach).into(),
                    i.mtu.to_string(),
                    i.eip.map_or("-".into(), |e| eip_text(plan, e)),
                ]);
            }
            table(&mut out, "  ", &rows);
        }
        if !vpc.nat_gateways.is_empty() {
            let mut rows = vec![row(["nat gateway", "subnet", "ip", "eips", "snat", "dnat"])];
            for g in &vpc.nat_gateways {
                let eips: Vec<String> = g.eips.iter().map(|e| eip_text(plan, *e)).collect();
                rows.push(vec![
                    g.name.clone(),
                    name_at(&vpc.subnets, g.subnet, |s| &s.name),
                    g.ip.to_string(),
                    join_or_dash(&eips),
                    g.snat.len().to_string(),
                    g.dnat.len().to_string(),
                ]);
            }
            table(&mut out, "  ", &rows);
        }
    }
    if !plan.eips.is_empty() {
        let _ = writeln!(out, "\neips");
        let mut rows = vec![row(["eip", "address", "bound to"])];
        for e in &plan.eips {
            let bound = match e.binding {
                EipBinding::Unbound => "-".to_string(),
                EipBinding::Instance { vpc, instance } => format!(
                    "instance {}/{}",
                    name_at(&plan.vpcs, vpc, |v| &v.name),
                    plan.vpcs.get(vpc).map_or("?".into(), |v| name_at(
                        &v.instances,
                        instance,
                        |i| &i.name
                    ))
                ),
                EipBinding::NatGateway { vpc, gateway } => format!(
                    "nat gateway {}/{}",
                    name_at(&plan.vpcs, vpc, |v| &v.name),
                    plan.vpcs.get(vpc).map_or("?".into(), |v| name_at(
                        &v.nat_gateways,
                        gateway,
                        |g| &g.name
                    ))
                ),
            };
            rows.push(vec![e.name.clone(), e.address.to_string(), bound]);
        }
        table(&mut out, "  ", &rows);
    }
    let _ = writeln!(out, "\ninternet  {}", plan.internet.cidr);
    if !plan.internet.hosts.is_empty() {
        let mut rows = vec![row(["host", "ip", "attach", "mtu", "serves"])];
        for h in &plan.internet.hosts {
            let serve: Vec<String> = h.serve.iter().map(ToString::to_string).collect();
            let ips: Vec<String> = std::iter::once(h.ip)
                .chain(h.secondary.iter().copied())
                .map(|a| a.to_string())
                .collect();
            rows.push(vec![
                h.name.clone(),
                ips.join(", "),
                attach(h.attach).into(),
                h.mtu.to_string(),
                join_or_dash(&serve),
            ]);
        }
        table(&mut out, "  ", &rows);
    }
    let _ = writeln!(out, "\nprobes: {}", plan.probes.len());
    if !plan.probes.is_empty() {
        let mut rows = vec![row(["probe", "from", "to", "expect", "tags"])];
        for p in &plan.probes {
            rows.push(vec![
                p.name.clone(),
                plan.endpoint_name(p.from),
                p.to.to_string(),
                p.expect.to_string(),
                join_or_dash(&p.tags),
            ]);
        }
        table(&mut out, "  ", &rows);
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn name_at<T>(items: &[T], i: usize, name: impl Fn(&T) -> &String) -> String {
    items.get(i).map_or("?".to_string(), |t| name(t).clone())
}

fn describe_target(
    vpc: &crate::topology::plan::VpcPlan,
    t: crate::topology::plan::RouteTargetPlan,
) -> String {
    use crate::topology::plan::RouteTargetPlan;
    match t {
        RouteTargetPlan::Nat(i) if i >= vpc.nat_gateways.len() => format!("nat:#{i}"),
        _ => t.describe(vpc),
    }
}

fn eip_text(plan: &Plan, e: usize) -> String {
    plan.eips
        .get(e)
        .map_or("?".into(), |e| format!("{} ({})", e.name, e.address))
}

fn attach(a: Attach) -> &'static str {
    match a {
        Attach::Netns => "netns",
        Attach::Sim => "sim",
    }
}

fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// Writes `rows` as columns padded to the widest cell, each line starting with `indent`.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = indent.to_string();
        for (c, cell) in r.iter().enumerate() {
            let w = widths.get(c).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
