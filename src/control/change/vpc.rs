//! VPCs and subnets (`CreateVpc`, `DeleteVpc`, `CreateSubnet`, `DeleteSubnet`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::network_acl::DEFAULT_NETWORK_ACL;
use super::{Edit, find, in_use, refuse_duplicate, some_names, sp, vpc_mut};
use crate::control::error::ApiError;
use crate::topology::cidr::Cidr;
use crate::topology::model::{EgressRule, MAIN_ROUTE_TABLE, Subnet, Topology, Vpc};

/// Create a VPC (`CreateVpc`): an isolated network with a CIDR from /8 to /28, which may
/// overlap other VPCs'. It starts with the implicit main route table (local only), the default
/// security group and the default (allow-all) network ACL.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddVpc {
    pub name: String,
    pub cidr: Cidr,
    /// With the public uplink: the only internet destinations the VPC's functions may open
    /// flows to (absent: any).
    #[serde(default)]
    pub egress_allow: Option<Vec<EgressRule>>,
}

/// Replace a VPC's egress allow-list (absent or `null`: no list, any destination). New flows
/// meet the new list; flows already open continue.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEgressAllow {
    pub vpc: String,
    #[serde(default)]
    pub egress_allow: Option<Vec<EgressRule>>,
}

impl Edit for SetEgressAllow {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = find(&mut topo.vpc, |v| &v.name, &self.vpc, "VPC", "vpc")?;
        vpc.egress_allow = self
            .egress_allow
            .as_ref()
            .map(|l| l.iter().cloned().map(sp).collect());
        Ok(Some(format!("vpc[{}]", self.vpc)))
    }
}

/// Delete a VPC (`DeleteVpc`). As in AWS, refused while it has anything it did not start with:
/// subnets (and so instances and NAT gateways), route tables other than `main`, security groups
/// or network ACLs. Its `main` route table goes with it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveVpc {
    pub name: String,
}

/// Create a subnet (`CreateSubnet`): a CIDR inside its VPC's that overlaps no other subnet of
/// the VPC. `route_table` absent or `main`: the VPC's main table; `network_acl` absent (or
/// `"default"` when the VPC has no ACL of that name): the default (allow-all) ACL.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSubnet {
    pub vpc: String,
    pub name: String,
    pub cidr: Cidr,
    #[serde(default)]
    pub route_table: Option<String>,
    #[serde(default)]
    pub network_acl: Option<String>,
}

/// Delete a subnet (`DeleteSubnet`). Refused while an instance or a NAT gateway is in it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSubnet {
    pub vpc: String,
    pub name: String,
}

impl Edit for AddVpc {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        refuse_duplicate(
            &topo.vpc,
            |v| &v.name,
            &self.name,
            "VPC",
            "choose another name, or remove the VPC first",
        )?;
        topo.vpc.push(Vpc {
            name: sp(self.name.clone()),
            cidr: sp(self.cidr),
            subnet: Vec::new(),
            route_table: Vec::new(),
            instance: Vec::new(),
            nat_gateway: Vec::new(),
            security_group: Vec::new(),
            network_acl: Vec::new(),
            egress_allow: self
                .egress_allow
                .as_ref()
                .map(|l| l.iter().cloned().map(sp).collect()),
        });
        Ok(Some(format!("vpc[{}]", self.name)))
    }
}

impl Edit for RemoveVpc {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (at, vpc) = find(&mut topo.vpc, |v| &v.name, &self.name, "VPC", "name")?;
        let tables = vpc
            .route_table
            .iter()
            .filter(|t| t.name.get_ref() != MAIN_ROUTE_TABLE)
            .count();
        let parts: Vec<String> = [
            (vpc.subnet.len(), "subnet"),
            (vpc.instance.len(), "instance"),
            (vpc.nat_gateway.len(), "NAT gateway"),
            (tables, "route table"),
            (vpc.security_group.len(), "security group"),
            (vpc.network_acl.len(), "network ACL"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        .collect();
        if !parts.is_empty() {
            return Err(in_use(
                format!("VPC `{}` still has {}", self.name, parts.join(", ")),
                "remove them first: instances and NAT gateways, then subnets, route tables, security groups and network ACLs",
            ));
        }
        topo.vpc.remove(at);
        Ok(None)
    }
}

impl Edit for AddSubnet {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        refuse_duplicate(
            &vpc.subnet,
            |s| &s.name,
            &self.name,
            "subnet",
            "choose another name, or remove the subnet first",
        )?;
        let route_table = match self.route_table.as_deref() {
            None | Some(MAIN_ROUTE_TABLE) => None,
            Some(t) => {
                find(
                    &mut vpc.route_table,
                    |x| &x.name,
                    t,
                    "route table",
                    "route_table",
                )?;
                Some(sp(t.to_string()))
            }
        };
        let has_default_acl = vpc
            .network_acl
            .iter()
            .any(|a| a.name.get_ref() == DEFAULT_NETWORK_ACL);
        let network_acl = match self.network_acl.as_deref() {
            None => None,
            Some(DEFAULT_NETWORK_ACL) if !has_default_acl => None,
            Some(a) => {
                find(
                    &mut vpc.network_acl,
                    |x| &x.name,
                    a,
                    "network ACL",
                    "network_acl",
                )?;
                Some(sp(a.to_string()))
            }
        };
        vpc.subnet.push(Subnet {
            name: sp(self.name.clone()),
            cidr: sp(self.cidr),
            route_table,
            network_acl,
        });
        Ok(Some(format!("vpc[{}].subnet[{}]", self.vpc, self.name)))
    }
}

impl Edit for RemoveSubnet {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        let (at, _) = find(&mut vpc.subnet, |s| &s.name, &self.name, "subnet", "name")?;
        let in_it = |subnet: &toml::Spanned<String>| subnet.get_ref() == &self.name;
        let users: Vec<String> = vpc
            .nat_gateway
            .iter()
            .filter(|g| in_it(&g.subnet))
            .map(|g| format!("NAT gateway `{}`", g.name.get_ref()))
            .chain(
                vpc.instance
                    .iter()
                    .filter(|i| in_it(&i.subnet))
                    .map(|i| format!("instance `{}`", i.name.get_ref())),
            )
            .collect();
        if !users.is_empty() {
            return Err(in_use(
                format!("subnet `{}` still has {}", self.name, some_names(users)),
                "remove its instances and NAT gateways first",
            ));
        }
        vpc.subnet.remove(at);
        Ok(None)
    }
}
