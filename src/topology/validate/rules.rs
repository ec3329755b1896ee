//! Security groups and network ACLs. Their rules are kept in the plan as written; this file
//! checks what can be wrong in them before the dataplane compiles them:
//! - `ports` only with tcp and udp, `icmp_type` only with icmp (security groups);
//! - security group peers are CIDRs or `sg:NAME` of the same VPC;
//! - network ACL rule numbers from 1 to 32766 (AWS's range), unique per direction.

use std::collections::HashMap;

use toml::Spanned;

use super::super::cidr::Cidr;
use super::super::model::{PortRange, RuleProtocol, SgRule};
use super::Checker;
use super::names::{VpcScope, unknown_hint};

/// Lowest network ACL rule number (as in AWS).
pub const MIN_ACL_RULE: u16 = 1;
/// Highest network ACL rule number (as in AWS; 32767 is its implicit catch-all deny).
pub const MAX_ACL_RULE: u16 = 32766;

impl Checker<'_> {
    /// Security group rules: ports and ICMP types fit the protocol, `sg:NAME` peers resolve in
    /// the VPC, other peers are CIDRs.
    pub(super) fn check_security_groups(&mut self, s: &VpcScope<'_>) {
        for (g, gp) in s.vpc.security_group.iter().zip(&s.sg_paths) {
            let dirs = [("ingress", Some(&g.ingress)), ("egress", g.egress.as_ref())];
            for (dir, rules) in dirs {
                for (ri, rule) in rules.into_iter().flatten().enumerate() {
                    let rp = format!("{gp}.{dir}[{ri}]");
                    self.check_ports(&rule.protocol, rule.ports.as_ref(), &rp, true);
                    self.check_icmp_type(rule, &rp);
                    self.check_peer(s, rule, &rp);
                }
            }
        }
    }

    /// `ports` is for tcp and udp only; `icmp_hint`: the rule could take `icmp_type` instead.
    fn check_ports(
        &mut self,
        protocol: &Spanned<RuleProtocol>,
        ports: Option<&Spanned<PortRange>>,
        rp: &str,
        icmp_hint: bool,
    ) {
        let proto = *protocol.get_ref();
        let Some(ports) = ports else {
            return;
        };
        if matches!(proto, RuleProtocol::Tcp | RuleProtocol::Udp) {
            return;
        }
        let hint = match proto {
            RuleProtocol::Icmp if icmp_hint => {
                "remove `ports` (use `icmp_type` to match one kind of ICMP message), or set `protocol` to \"tcp\" or \"udp\""
            }
            RuleProtocol::All => {
                "remove `ports` (\"all\" matches every protocol and port), or set `protocol` to \"tcp\" or \"udp\""
            }
            _ => "remove `ports`, or set `protocol` to \"tcp\" or \"udp\"",
        };
        self.error(
            ports.span(),
            format!("{rp}.ports"),
            format!(
                "`ports` applies only to tcp and udp rules, not to protocol \"{}\"",
                rule_proto_str(proto)
            ),
            hint,
        );
    }

    /// `icmp_type` is for icmp only.
    fn check_icmp_type(&mut self, rule: &SgRule, rp: &str) {
        let proto = *rule.protocol.get_ref();
        if let Some(t) = rule
            .icmp_type
            .as_ref()
            .filter(|_| proto != RuleProtocol::Icmp)
        {
            self.error(
                t.span(),
                format!("{rp}.icmp_type"),
                format!(
                    "`icmp_type` applies only to icmp rules, not to protocol \"{}\"",
                    rule_proto_str(proto)
                ),
                "remove `icmp_type`, or set `protocol` to \"icmp\"",
            );
        }
    }

    /// A peer is `sg:NAME` of a security group of the same VPC, or a CIDR.
    fn check_peer(&mut self, s: &VpcScope<'_>, rule: &SgRule, rp: &str) {
        let vname = s.name;
        let rp = format!("{rp}.peer");
        let peer = rule.peer.get_ref();
        if let Some(name) = peer.strip_prefix("sg:") {
            if !s.security_groups.contains_key(name) {
                let hint = unknown_hint(
                    name,
                    s.security_groups.keys().copied(),
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

    /// Network ACL rules: numbers in range and unique per direction, ports only for tcp and udp.
    pub(super) fn check_network_acls(&mut self, s: &VpcScope<'_>) {
        for (a, ap) in s.vpc.network_acl.iter().zip(&s.acl_paths) {
            for (dir, rules) in [("inbound", &a.inbound), ("outbound", &a.outbound)] {
                let mut seen: HashMap<u16, usize> = HashMap::new();
                for (ri, rule) in rules.iter().enumerate() {
                    let rp = format!("{ap}.{dir}[{ri}]");
                    let n = *rule.rule.get_ref();
                    if !(MIN_ACL_RULE..=MAX_ACL_RULE).contains(&n) {
                        self.error(
                            rule.rule.span(),
                            format!("{rp}.rule"),
                            format!("network ACL rule number {n} is out of range"),
                            format!(
                                "use a rule number from {MIN_ACL_RULE} to {MAX_ACL_RULE} (as in AWS); lower numbers are evaluated first"
                            ),
                        );
                    }
                    if let Some(first) = seen.get(&n) {
                        let line = self.line_of(*first);
                        self.error(
                            rule.rule.span(),
                            format!("{rp}.rule"),
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
                    self.check_ports(&rule.protocol, rule.ports.as_ref(), &rp, false);
                }
            }
        }
    }
}

fn rule_proto_str(p: RuleProtocol) -> &'static str {
    match p {
        RuleProtocol::Tcp => "tcp",
        RuleProtocol::Udp => "udp",
        RuleProtocol::Icmp => "icmp",
        RuleProtocol::All => "all",
    }
}
