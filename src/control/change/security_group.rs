//! Security groups and their rules (`CreateSecurityGroup`, `DeleteSecurityGroup`,
//! `AuthorizeSecurityGroupIngress`/`Egress`, `RevokeSecurityGroupIngress`/`Egress`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Edit, already_exists, find, in_use, refuse_duplicate, sp, vpc_mut};
use crate::control::error::{ApiError, ErrorCode};
use crate::topology::model::{PortRange, RuleProtocol, SecurityGroup, SgRule, Topology};

/// A security-group rule as requests write it (the model's `SgRule` without spans).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SgRuleSpec {
    pub protocol: RuleProtocol,
    #[serde(default)]
    pub ports: Option<PortRange>,
    #[serde(default)]
    pub icmp_type: Option<u8>,
    /// A CIDR, or `sg:NAME`.
    pub peer: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Create a security group (`CreateSecurityGroup`), optionally with rules.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSecurityGroup {
    pub vpc: String,
    pub name: String,
    #[serde(default)]
    pub ingress: Vec<SgRuleSpec>,
    /// Absent: all egress allowed.
    #[serde(default)]
    pub egress: Option<Vec<SgRuleSpec>>,
}

/// Delete a security group (`DeleteSecurityGroup`). Refused while an instance is in it or
/// another group's rule names it as `sg:NAME`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSecurityGroup {
    pub vpc: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SgDirection {
    Ingress,
    Egress,
}

impl SgDirection {
    fn as_str(self) -> &'static str {
        match self {
            SgDirection::Ingress => "ingress",
            SgDirection::Egress => "egress",
        }
    }
}

/// Add a rule to a group (`AuthorizeSecurityGroupIngress`/`Egress`). A group whose egress is
/// implicit (all allowed) first gets the explicit rule `all` to `0.0.0.0/0`, so adding an egress
/// rule never takes egress away, as in AWS where that rule is visible.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSgRule {
    pub vpc: String,
    pub group: String,
    pub direction: SgDirection,
    pub protocol: RuleProtocol,
    #[serde(default)]
    pub ports: Option<PortRange>,
    #[serde(default)]
    pub icmp_type: Option<u8>,
    pub peer: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Remove the rule that matches `protocol`, `ports`, `icmp_type` and `peer` exactly
/// (`RevokeSecurityGroupIngress`/`Egress`; the description is not compared).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSgRule {
    pub vpc: String,
    pub group: String,
    pub direction: SgDirection,
    pub protocol: RuleProtocol,
    #[serde(default)]
    pub ports: Option<PortRange>,
    #[serde(default)]
    pub icmp_type: Option<u8>,
    pub peer: String,
}

fn to_rule(r: &SgRuleSpec) -> SgRule {
    SgRule {
        protocol: sp(r.protocol),
        ports: r.ports.map(sp),
        icmp_type: r.icmp_type.map(sp),
        peer: sp(r.peer.clone()),
        description: r.description.clone(),
    }
}

impl Edit for AddSecurityGroup {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        refuse_duplicate(
            &vpc.security_group,
            |g| &g.name,
            &r.name,
            "security group",
            "add rules to the existing group, or choose another name",
        )?;
        vpc.security_group.push(SecurityGroup {
            name: sp(r.name.clone()),
            ingress: r.ingress.iter().map(to_rule).collect(),
            egress: r.egress.as_ref().map(|e| e.iter().map(to_rule).collect()),
        });
        Ok(Some(format!("vpc[{}].security_group[{}]", r.vpc, r.name)))
    }
}

impl Edit for RemoveSecurityGroup {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (at, _) = find(
            &mut vpc.security_group,
            |g| &g.name,
            &r.name,
            "security group",
            "name",
        )?;
        if let Some(i) = vpc
            .instance
            .iter()
            .find(|i| i.security_groups.iter().any(|g| g.get_ref() == &r.name))
        {
            return Err(in_use(
                format!(
                    "security group `{}` is used by instance `{}`",
                    r.name,
                    i.name.get_ref()
                ),
                "remove the group from the instance first",
            ));
        }
        let peer = format!("sg:{}", r.name);
        for g in &vpc.security_group {
            if g.name.get_ref() == &r.name {
                continue;
            }
            let rules = g.ingress.iter().chain(g.egress.iter().flatten());
            if rules.into_iter().any(|x| x.peer.get_ref() == &peer) {
                return Err(in_use(
                    format!(
                        "security group `{}` is the peer of a rule of group `{}`",
                        r.name,
                        g.name.get_ref()
                    ),
                    format!("remove the rules with peer `{peer}` first"),
                ));
            }
        }
        vpc.security_group.remove(at);
        Ok(None)
    }
}

impl Edit for AddSgRule {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (_, group) = find(
            &mut vpc.security_group,
            |g| &g.name,
            &r.group,
            "security group",
            "group",
        )?;
        let rule = to_rule(&SgRuleSpec {
            protocol: r.protocol,
            ports: r.ports,
            icmp_type: r.icmp_type,
            peer: r.peer.clone(),
            description: r.description.clone(),
        });
        let list = match r.direction {
            SgDirection::Ingress => &mut group.ingress,
            SgDirection::Egress => group.egress.get_or_insert_with(|| {
                vec![to_rule(&SgRuleSpec {
                    protocol: RuleProtocol::All,
                    ports: None,
                    icmp_type: None,
                    peer: "0.0.0.0/0".into(),
                    description: Some("all egress (was implicit)".into()),
                })]
            }),
        };
        if list.iter().any(|x| same_sg_rule(x, &rule)) {
            return Err(already_exists(
                "rule",
                &describe_sg_rule(&rule),
                "",
                "the group already allows this; nothing to add",
            ));
        }
        list.push(rule);
        // Validation names the new rule `ingress[N]`: its fields become the request's.
        Ok(Some(format!(
            "vpc[{}].security_group[{}].{}[{}]",
            r.vpc,
            r.group,
            r.direction.as_str(),
            list.len() - 1
        )))
    }
}

impl Edit for RemoveSgRule {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (_, group) = find(
            &mut vpc.security_group,
            |g| &g.name,
            &r.group,
            "security group",
            "group",
        )?;
        let wanted = to_rule(&SgRuleSpec {
            protocol: r.protocol,
            ports: r.ports,
            icmp_type: r.icmp_type,
            peer: r.peer.clone(),
            description: None,
        });
        let list = match r.direction {
            SgDirection::Ingress => Some(&mut group.ingress),
            SgDirection::Egress => group.egress.as_mut(),
        };
        let at = list
            .as_ref()
            .and_then(|l| l.iter().position(|x| same_sg_rule(x, &wanted)));
        match (list, at) {
            (Some(list), Some(at)) => {
                list.remove(at);
                Ok(None)
            }
            _ => Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "security group `{}` has no {} rule {}",
                    r.group,
                    r.direction.as_str(),
                    describe_sg_rule(&wanted)
                ),
                "",
                "name the rule by protocol, ports, icmp_type and peer exactly as it was added",
            )),
        }
    }
}

fn same_sg_rule(a: &SgRule, b: &SgRule) -> bool {
    a.protocol.get_ref() == b.protocol.get_ref()
        && a.ports.as_ref().map(|p| *p.get_ref()) == b.ports.as_ref().map(|p| *p.get_ref())
        && a.icmp_type.as_ref().map(|t| *t.get_ref()) == b.icmp_type.as_ref().map(|t| *t.get_ref())
        && a.peer.get_ref() == b.peer.get_ref()
}

fn describe_sg_rule(r: &SgRule) -> String {
    let proto = match r.protocol.get_ref() {
        RuleProtocol::Tcp => "tcp",
        RuleProtocol::Udp => "udp",
        RuleProtocol::Icmp => "icmp",
        RuleProtocol::All => "all",
    };
    let mut s = proto.to_string();
    if let Some(p) = &r.ports {
        s.push_str(&format!(" ports {}", p.get_ref()));
    }
    if let Some(t) = &r.icmp_type {
        s.push_str(&format!(" type {}", t.get_ref()));
    }
    s.push_str(&format!(" peer {}", r.peer.get_ref()));
    s
}
