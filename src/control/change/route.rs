//! Route tables, their routes and their subnets (`CreateRouteTable`, `DeleteRouteTable`,
//! `ReplaceRouteTableAssociation`, `CreateRoute`, `DeleteRoute`).
//!
//! Every VPC has a main route table, named `main`: the one a subnet uses when it names none.
//! Until the model defines a table called `main` it is implicit and holds only the `local` route
//! for the VPC CIDR; `add_route_table` or `add_route` with `main` makes it explicit.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Edit, already_exists, find, in_use, refuse_duplicate, some_names, sp, vpc_mut};
use crate::control::error::{ApiError, ErrorCode};
use crate::topology::cidr::Cidr;
use crate::topology::model::{MAIN_ROUTE_TABLE, Route, RouteTable, RouteTarget, Topology, Vpc};

/// A route as requests write it (the model's `Route` without spans).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub destination: Cidr,
    pub target: RouteTarget,
}

/// Create a route table (`CreateRouteTable`), optionally with routes (the `local` route for the
/// VPC CIDR is implicit). Naming it `main` makes the VPC's implicit main table explicit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRouteTable {
    pub vpc: String,
    pub name: String,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// Delete a route table (`DeleteRouteTable`). Refused while a subnet is associated with it; for
/// the `main` table, while a subnet uses it as the main table (names no table). An unused `main`
/// table may go: the VPC's main table is then the implicit local-only one again.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRouteTable {
    pub vpc: String,
    pub name: String,
}

/// Associate a subnet with a route table (`ReplaceRouteTableAssociation`). `main` returns the
/// subnet to the VPC's main table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssociateRouteTable {
    pub vpc: String,
    pub subnet: String,
    pub route_table: String,
}

/// Add a route (`CreateRoute`). Naming the `main` table when the VPC has only the implicit one
/// creates it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRoute {
    pub vpc: String,
    pub route_table: String,
    pub destination: Cidr,
    pub target: RouteTarget,
}

/// Remove the route for `destination` (`DeleteRoute`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRoute {
    pub vpc: String,
    pub route_table: String,
    pub destination: Cidr,
}

fn table_mut<'v>(vpc: &'v mut Vpc, name: &str) -> Result<(usize, &'v mut RouteTable), ApiError> {
    find(
        &mut vpc.route_table,
        |t| &t.name,
        name,
        "route table",
        "route_table",
    )
}

impl Edit for AddRouteTable {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        refuse_duplicate(
            &vpc.route_table,
            |t| &t.name,
            &self.name,
            "route table",
            "add routes to the existing table (add_route), or choose another name",
        )?;
        vpc.route_table.push(RouteTable {
            name: sp(self.name.clone()),
            routes: self
                .routes
                .iter()
                .map(|r| Route {
                    destination: sp(r.destination),
                    target: sp(r.target.clone()),
                })
                .collect(),
        });
        Ok(Some(format!(
            "vpc[{}].route_table[{}]",
            self.vpc, self.name
        )))
    }
}

impl Edit for RemoveRouteTable {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        let (at, _) = find(
            &mut vpc.route_table,
            |t| &t.name,
            &self.name,
            "route table",
            "name",
        )?;
        let is_main = self.name == MAIN_ROUTE_TABLE;
        let users: Vec<String> = vpc
            .subnet
            .iter()
            .filter(|s| match &s.route_table {
                Some(t) => t.get_ref() == &self.name,
                None => is_main,
            })
            .map(|s| format!("`{}`", s.name.get_ref()))
            .collect();
        if !users.is_empty() {
            let (what, hint) = if is_main {
                (
                    "is the main route table of",
                    "associate those subnets with another table first (associate_route_table), or change the main table's routes instead",
                )
            } else {
                (
                    "is associated with",
                    "associate those subnets with another table (or `main`) first",
                )
            };
            return Err(in_use(
                format!(
                    "route table `{}` {what} subnet{} {}",
                    self.name,
                    if users.len() == 1 { "" } else { "s" },
                    some_names(users)
                ),
                hint,
            ));
        }
        vpc.route_table.remove(at);
        Ok(None)
    }
}

impl Edit for AssociateRouteTable {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, vpc) = vpc_mut(topo, &self.vpc)?;
        let table = if self.route_table == MAIN_ROUTE_TABLE {
            None
        } else {
            table_mut(vpc, &self.route_table)?;
            Some(sp(self.route_table.clone()))
        };
        let (_, subnet) = find(
            &mut vpc.subnet,
            |s| &s.name,
            &self.subnet,
            "subnet",
            "subnet",
        )?;
        subnet.route_table = table;
        Ok(Some(format!("vpc[{}].subnet[{}]", self.vpc, self.subnet)))
    }
}

impl Edit for AddRoute {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        if r.route_table == MAIN_ROUTE_TABLE
            && !vpc
                .route_table
                .iter()
                .any(|t| t.name.get_ref() == MAIN_ROUTE_TABLE)
        {
            vpc.route_table.push(RouteTable {
                name: sp(MAIN_ROUTE_TABLE.to_string()),
                routes: Vec::new(),
            });
        }
        let (_, table) = table_mut(vpc, &r.route_table)?;
        if table
            .routes
            .iter()
            .any(|x| *x.destination.get_ref() == r.destination)
        {
            return Err(already_exists(
                "route for",
                &r.destination.to_string(),
                "destination",
                "remove the existing route first to change its target",
            ));
        }
        table.routes.push(Route {
            destination: sp(r.destination),
            target: sp(r.target.clone()),
        });
        Ok(Some(format!(
            "vpc[{}].route_table[{}].routes[{}]",
            r.vpc,
            r.route_table,
            table.routes.len() - 1
        )))
    }
}

impl Edit for RemoveRoute {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (_, table) = table_mut(vpc, &r.route_table)?;
        let Some(at) = table
            .routes
            .iter()
            .position(|x| *x.destination.get_ref() == r.destination)
        else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "route table `{}` has no route for {}",
                    r.route_table, r.destination
                ),
                "destination",
                "the implicit route for the VPC CIDR cannot be removed",
            ));
        };
        table.routes.remove(at);
        Ok(None)
    }
}
