//! Security groups and network ACLs. Their rules are kept in the plan as written; this file
//! checks what can be wrong in them before the dataplane compiles them.

use std::collections::HashMap;

use super::super::cidr::Cidr;
use super::Checker;
use super::names::{VpcScope, unknown_hint};

impl Checker<'_> {
    /// Security group rules: `sg:NAME` peers resolve in the VPC, other peers are CIDRs.
    pub(super) fn check_security_groups(&mut self, s: &VpcScope<'_>) {
        let (vpc, vname) = (s.vpc, s.name);
        for (g, gp) in vpc.security_group.iter().zip(&s.sg_paths) {
            let dirs = [("ingress", Some(&g.ingress)), ("egress", g.egress.as_ref())];
            for (dir, rules) in dirs {
                for (ri, rule) in rules.into_iter().flatten().enumerate() {
                    let rp = format!("{gp}.{dir}[{ri}].peer");
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
            }
        }
    }

    /// Network ACL rules: numbers unique per direction.
    pub(super) fn check_network_acls(&mut self, s: &VpcScope<'_>) {
        let vpc = s.vpc;
        for (a, ap) in vpc.network_acl.iter().zip(&s.acl_paths) {
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
    }
}
