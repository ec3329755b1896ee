//! `vpcd ctl` for the firewalls: security groups (stateful, per instance) and their rules,
//! network ACLs (stateless, numbered, per subnet) and their rules.
//!
//! Lists are one row per rule, under the group's or ACL's name: a rule is what people look for
//! and what `sg-rule remove` / `acl-rule remove` name. Which subnets use an ACL is in
//! `vpcd ctl subnet list`, which instances are in a group in `vpcd ctl instance list`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::table::{Table, field, list};
use super::{Call, body, vpc_path};

#[derive(Debug, Subcommand)]
pub enum SgCommand {
    /// VPC's security groups, one row per rule.
    List { vpc: String },
    /// Create an empty security group (`CreateSecurityGroup`): no ingress, all egress; add rules
    /// with `vpcd ctl sg-rule add`.
    Add { vpc: String, name: String },
    /// Delete a security group no instance is in and no rule names.
    Remove { vpc: String, name: String },
}

impl SgCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            SgCommand::List { vpc } => {
                let empty = format!("no security groups in VPC {vpc}");
                Call::get(vpc_path(vpc, "security-groups"), move |v| {
                    let mut t = Table::new(&[
                        "GROUP",
                        "DIRECTION",
                        "PROTOCOL",
                        "PORTS",
                        "ICMP_TYPE",
                        "PEER",
                        "DESCRIPTION",
                    ]);
                    for g in list(v, "security groups")? {
                        sg_rows(&mut t, g);
                    }
                    Ok(t.render_or(&empty))
                })
            }
            SgCommand::Add { vpc, name } => Call::op(
                "add_security_group",
                json!({"vpc": vpc, "name": name}),
                format!("added security group {vpc}/{name}"),
            ),
            SgCommand::Remove { vpc, name } => Call::op(
                "remove_security_group",
                json!({"vpc": vpc, "name": name}),
                format!("removed security group {vpc}/{name}"),
            ),
        }
    }
}

/// A group's rows: its ingress rules, then its egress rules (`egress: null` is the implicit
/// allow-all rule); a group without any rule gets one row that says so.
fn sg_rows(t: &mut Table, g: &Value) {
    let name = field(g, "name");
    let rule = |dir: &str, r: &Value| {
        let mut row = vec![name.clone(), dir.to_string()];
        row.extend(
            ["protocol", "ports", "icmp_type", "peer", "description"]
                .iter()
                .map(|k| field(r, k)),
        );
        row
    };
    let before = t.len();
    for r in g["ingress"].as_array().into_iter().flatten() {
        t.row(rule("ingress", r));
    }
    match g["egress"].as_array() {
        Some(rules) => rules.iter().for_each(|r| t.row(rule("egress", r))),
        None => t.row(rule(
            "egress",
            &json!({"protocol": "all", "peer": "0.0.0.0/0",
                    "description": "(implicit: all egress allowed)"}),
        )),
    }
    if t.len() == before {
        t.row(vec![
            name,
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "(no rules)".into(),
        ]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SgDirection {
    Ingress,
    Egress,
}

impl SgDirection {
    fn name(self) -> &'static str {
        match self {
            SgDirection::Ingress => "ingress",
            SgDirection::Egress => "egress",
        }
    }
}

/// What names a security-group rule (`sg-rule add` and `remove`).
#[derive(Debug, Args)]
pub struct SgRuleArgs {
    vpc: String,
    /// The security group.
    #[arg(long)]
    group: String,
    #[arg(long, value_enum)]
    direction: SgDirection,
    /// `tcp`, `udp`, `icmp` or `all`.
    #[arg(long, value_parser = ["tcp", "udp", "icmp", "all"])]
    protocol: String,
    /// `80` or `1000-2000` (tcp and udp).
    #[arg(long)]
    ports: Option<String>,
    /// The ICMP type (icmp; default: every type).
    #[arg(long)]
    icmp_type: Option<u8>,
    /// A CIDR, or `sg:GROUP` (instances in that group).
    #[arg(long)]
    peer: String,
}

impl SgRuleArgs {
    fn body(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("vpc", json!(self.vpc)),
            ("group", json!(self.group)),
            ("direction", json!(self.direction.name())),
            ("protocol", json!(self.protocol)),
            ("ports", json!(self.ports)),
            ("icmp_type", json!(self.icmp_type)),
            ("peer", json!(self.peer)),
        ]
    }

    /// `ingress rule (tcp 80 from 0.0.0.0/0)`.
    fn describe(&self) -> String {
        let mut d = self.protocol.clone();
        if let Some(p) = &self.ports {
            d.push_str(&format!(" {p}"));
        }
        if let Some(t) = self.icmp_type {
            d.push_str(&format!(" type {t}"));
        }
        let way = match self.direction {
            SgDirection::Ingress => "from",
            SgDirection::Egress => "to",
        };
        format!("{} rule ({d} {way} {})", self.direction.name(), self.peer)
    }
}

#[derive(Debug, Subcommand)]
pub enum SgRuleCommand {
    /// Allow traffic (`AuthorizeSecurityGroupIngress` / `Egress`).
    Add {
        #[command(flatten)]
        rule: SgRuleArgs,
        /// Free text kept with the rule.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove the rule that matches protocol, ports, ICMP type and peer exactly
    /// (`RevokeSecurityGroupIngress` / `Egress`).
    Remove {
        #[command(flatten)]
        rule: SgRuleArgs,
    },
}

impl SgRuleCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            SgRuleCommand::Add { rule, description } => {
                let mut b = rule.body();
                b.push(("description", json!(description)));
                Call::op(
                    "add_sg_rule",
                    body(b),
                    format!(
                        "added {} to security group {}/{}",
                        rule.describe(),
                        rule.vpc,
                        rule.group
                    ),
                )
            }
            SgRuleCommand::Remove { rule } => Call::op(
                "remove_sg_rule",
                body(rule.body()),
                format!(
                    "removed {} from security group {}/{}",
                    rule.describe(),
                    rule.vpc,
                    rule.group
                ),
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// VPC's network ACLs, one row per rule (lowest number first within a direction).
    List { vpc: String },
    /// Create an empty network ACL (`CreateNetworkAcl`); add rules with `vpcd ctl acl-rule add`.
    Add { vpc: String, name: String },
    /// Delete a network ACL no subnet uses.
    Remove { vpc: String, name: String },
    /// Make SUBNET use NETWORK_ACL (`ReplaceNetworkAclAssociation`).
    Associate {
        vpc: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        network_acl: String,
    },
}

impl AclCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            AclCommand::List { vpc } => {
                let empty = format!("no network ACLs in VPC {vpc}");
                Call::get(vpc_path(vpc, "network-acls"), move |v| {
                    let mut t = Table::new(&[
                        "NETWORK_ACL",
                        "DIRECTION",
                        "RULE",
                        "ACTION",
                        "PROTOCOL",
                        "PORTS",
                        "CIDR",
                    ]);
                    for a in list(v, "network ACLs")? {
                        acl_rows(&mut t, a);
                    }
                    Ok(t.render_or(&empty))
                })
            }
            AclCommand::Add { vpc, name } => Call::op(
                "add_network_acl",
                json!({"vpc": vpc, "name": name}),
                format!("added network acl {vpc}/{name}"),
            ),
            AclCommand::Remove { vpc, name } => Call::op(
                "remove_network_acl",
                json!({"vpc": vpc, "name": name}),
                format!("removed network acl {vpc}/{name}"),
            ),
            AclCommand::Associate {
                vpc,
                subnet,
                network_acl,
            } => Call::op(
                "associate_network_acl",
                json!({"vpc": vpc, "subnet": subnet, "network_acl": network_acl}),
                format!("associated network acl {vpc}/{network_acl} with subnet {vpc}/{subnet}"),
            ),
        }
    }
}

/// An ACL's rows: inbound, then outbound, each as the API ordered them; one row saying so when
/// it has no rule.
fn acl_rows(t: &mut Table, a: &Value) {
    let name = field(a, "name");
    let before = t.len();
    for dir in ["inbound", "outbound"] {
        for r in a[dir].as_array().into_iter().flatten() {
            let mut row = vec![name.clone(), dir.to_string()];
            row.extend(
                ["rule", "action", "protocol", "ports", "cidr"]
                    .iter()
                    .map(|k| field(r, k)),
            );
            t.row(row);
        }
    }
    if t.len() == before {
        t.row(vec![name, "-".into(), "-".into(), "(no rules)".into()]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AclDirection {
    Inbound,
    Outbound,
}

impl AclDirection {
    fn name(self) -> &'static str {
        match self {
            AclDirection::Inbound => "inbound",
            AclDirection::Outbound => "outbound",
        }
    }
}

/// What names a network-ACL rule: the ACL, the direction and the number.
#[derive(Debug, Args)]
pub struct AclRuleRef {
    vpc: String,
    #[arg(long)]
    network_acl: String,
    #[arg(long, value_enum)]
    direction: AclDirection,
    /// The rule number (evaluated lowest first; the first match wins).
    #[arg(long)]
    rule: u16,
}

#[derive(Debug, Subcommand)]
pub enum AclRuleCommand {
    /// Add a numbered rule (`CreateNetworkAclEntry`).
    Add {
        #[command(flatten)]
        at: AclRuleRef,
        #[arg(long, value_parser = ["allow", "deny"])]
        action: String,
        /// `tcp`, `udp`, `icmp` or `all`.
        #[arg(long, value_parser = ["tcp", "udp", "icmp", "all"])]
        protocol: String,
        /// `80` or `1000-2000` (tcp and udp).
        #[arg(long)]
        ports: Option<String>,
        /// The CIDR it matches (the source inbound, the destination outbound).
        #[arg(long)]
        cidr: String,
    },
    /// Remove rule number RULE (`DeleteNetworkAclEntry`).
    Remove {
        #[command(flatten)]
        at: AclRuleRef,
    },
}

impl AclRuleCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            AclRuleCommand::Add {
                at,
                action,
                protocol,
                ports,
                cidr,
            } => {
                let ports_text = ports.as_ref().map(|p| format!(" {p}")).unwrap_or_default();
                Call::op(
                    "add_acl_rule",
                    body(vec![
                        ("vpc", json!(at.vpc)),
                        ("network_acl", json!(at.network_acl)),
                        ("direction", json!(at.direction.name())),
                        ("rule", json!(at.rule)),
                        ("action", json!(action)),
                        ("protocol", json!(protocol)),
                        ("ports", json!(ports)),
                        ("cidr", json!(cidr)),
                    ]),
                    format!(
                        "added {} rule {} ({action} {protocol}{ports_text} {cidr}) to network acl \
                         {}/{}",
                        at.direction.name(),
                        at.rule,
                        at.vpc,
                        at.network_acl
                    ),
                )
            }
            AclRuleCommand::Remove { at } => Call::op(
                "remove_acl_rule",
                json!({"vpc": at.vpc, "network_acl": at.network_acl,
                       "direction": at.direction.name(), "rule": at.rule}),
                format!(
                    "removed {} rule {} from network acl {}/{}",
                    at.direction.name(),
                    at.rule,
                    at.vpc,
                    at.network_acl
                ),
            ),
        }
    }
}
