//! Network ACLs, their numbered rules and their subnets (`CreateNetworkAcl`, `DeleteNetworkAcl`,
//! `CreateNetworkAclEntry`, `DeleteNetworkAclEntry`, `ReplaceNetworkAclAssociation`).
//!
//! A subnet that names no network ACL has the VPC's default one, which (as AWS's default ACL)
//! allows everything in both directions; it is implicit in the model and cannot be removed.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Edit, already_exists, find, in_use, refuse_duplicate, some_names, sp, vpc_mut};
use crate::control::error::{ApiError, ErrorCode};
use crate::topology::cidr::Cidr;
use crate::topology::model::{
    AclAction, AclRule, NetworkAcl, PortRange, RuleProtocol, Topology, Vpc,
};

/// What `associate_network_acl` takes for the VPC's default (allow-all) network ACL.
pub const DEFAULT_NETWORK_ACL: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AclDirection {
    Inbound,
    Outbound,
}

/// A numbered network ACL rule as requests write it (the model's `AclRule` without spans).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclRuleSpec {
    /// Evaluated lowest first; first match wins (1 to 32766).
    pub rule: u16,
    pub action: AclAction,
    pub protocol: RuleProtocol,
    /// For tcp and udp only.
    #[serde(default)]
    pub ports: Option<PortRange>,
    pub cidr: Cidr,
}

/// Create a network ACL (`CreateNetworkAcl`), optionally with rules. Subnets use it once
/// associated (`associate_network_acl`, or `network_acl` of `add_subnet`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNetworkAcl {
    pub vpc: String,
    pub name: String,
    #[serde(default)]
    pub inbound: Vec<AclRuleSpec>,
    #[serde(default)]
    pub outbound: Vec<AclRuleSpec>,
}

/// Delete a network ACL (`DeleteNetworkAcl`). Refused while a subnet is associated with it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveNetworkAcl {
    pub vpc: String,
    pub name: String,
}

/// Associate a subnet with a network ACL (`ReplaceNetworkAclAssociation`). `network_acl`
/// absent, or `"default"` when the VPC has no ACL of that name, returns the subnet to the
/// default (allow-all) ACL.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssociateNetworkAcl {
    pub vpc: String,
    pub subnet: String,
    #[serde(default)]
    pub network_acl: Option<String>,
}

/// Add a numbered rule to a network ACL (`CreateNetworkAclEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddAclRule {
    pub vpc: String,
    pub network_acl: String,
    pub direction: AclDirection,
    pub rule: u16,
    pub action: AclAction,
    pub protocol: RuleProtocol,
    #[serde(default)]
    pub ports: Option<PortRange>,
    pub cidr: Cidr,
}

/// Remove rule number `rule` (`DeleteNetworkAclEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveAclRule {
    pub vpc: String,
    pub network_acl: String,
    pub direction: AclDirection,
    pub rule: u16,
}

impl AclRuleSpec {
    fn to_model(&self) -> AclRule {
        AclRule {
            rule: sp(self.rule),
            action: sp(self.action),
            protocol: sp(self.protocol),
            ports: self.ports.map(sp),
            cidr: sp(self.cidr),
        }
    }
}

fn acl_mut<'v>(vpc: &'v mut Vpc, name: &str) -> Result<(usize, &'v mut NetworkAcl), ApiError> {
    find(
        &mut vpc.network_acl,
        |a| &a.name,
        name,
        "network ACL",
        "network_acl",
    )
}

fn acl_list(acl: &mut NetworkAcl, d: AclDirection) -> (&'static str, &mut Vec<AclRule>) {
    match d {
        AclDirection::Inbound => ("inbound", &mut acl.inbound),
        AclDirection::Outbound => ("outbound", &mut acl.outbound),
    }
}

impl Edit for AddNetworkAcl {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        refuse_duplicate(
            &vpc.network_acl,
            |a| &a.name,
            &self.name,
            "network ACL",
            "add rules to the existing ACL (add_acl_rule), or choose another name",
        )?;
        vpc.network_acl.push(NetworkAcl {
            name: sp(self.name.clone()),
            inbound: self.inbound.iter().map(AclRuleSpec::to_model).collect(),
            outbound: self.outbound.iter().map(AclRuleSpec::to_model).collect(),
        });
        Ok(Some(format!(
            "vpc[{}].network_acl[{}]",
            self.vpc, self.name
        )))
    }
}

impl Edit for RemoveNetworkAcl {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        let (at, _) = find(
            &mut vpc.network_acl,
            |a| &a.name,
            &self.name,
            "network ACL",
            "name",
        )?;
        let users: Vec<String> = vpc
            .subnet
            .iter()
            .filter(|s| {
                s.network_acl
                    .as_ref()
                    .is_some_and(|a| a.get_ref() == &self.name)
            })
            .map(|s| format!("`{}`", s.name.get_ref()))
            .collect();
        if !users.is_empty() {
            return Err(in_use(
                format!(
                    "network ACL `{}` is associated with subnet{} {}",
                    self.name,
                    if users.len() == 1 { "" } else { "s" },
                    some_names(users)
                ),
                "associate those subnets with another network ACL (or the default) first",
            ));
        }
        vpc.network_acl.remove(at);
        Ok(None)
    }
}

impl Edit for AssociateNetworkAcl {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        let acl = match self.network_acl.as_deref() {
            None => None,
            Some(DEFAULT_NETWORK_ACL)
                if !vpc
                    .network_acl
                    .iter()
                    .any(|a| a.name.get_ref() == DEFAULT_NETWORK_ACL) =>
            {
                None
            }
            Some(name) => {
                acl_mut(vpc, name)?;
                Some(name.to_string())
            }
        };
        let (_, subnet) = find(
            &mut vpc.subnet,
            |s| &s.name,
            &self.subnet,
            "subnet",
            "subnet",
        )?;
        subnet.network_acl = acl.map(sp);
        Ok(Some(format!("vpc[{}].subnet[{}]", self.vpc, self.subnet)))
    }
}

impl Edit for AddAclRule {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (_, acl) = acl_mut(vpc, &r.network_acl)?;
        let (key, list) = acl_list(acl, r.direction);
        if list.iter().any(|x| *x.rule.get_ref() == r.rule) {
            return Err(already_exists(
                &format!("{key} rule number"),
                &r.rule.to_string(),
                "rule",
                "choose a free rule number, or remove the rule first",
            ));
        }
        list.push(
            AclRuleSpec {
                rule: r.rule,
                action: r.action,
                protocol: r.protocol,
                ports: r.ports,
                cidr: r.cidr,
            }
            .to_model(),
        );
        Ok(Some(format!(
            "vpc[{}].network_acl[{}].{key}[{}]",
            r.vpc,
            r.network_acl,
            list.len() - 1
        )))
    }
}

impl Edit for RemoveAclRule {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (_, acl) = acl_mut(vpc, &r.network_acl)?;
        let (key, list) = acl_list(acl, r.direction);
        let Some(at) = list.iter().position(|x| *x.rule.get_ref() == r.rule) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "network ACL `{}` has no {key} rule {}",
                    r.network_acl, r.rule
                ),
                "rule",
                "name the rule by its number",
            ));
        };
        list.remove(at);
        Ok(None)
    }
}
