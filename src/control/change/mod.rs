//! Change operations: typed requests modelled on the cloud APIs, and how each edits the model.
//!
//! Every request is a plain struct with `Deserialize` and `deny_unknown_fields` (the HTTP layer
//! decodes JSON bodies into them with [`Change::decode`]); its values use the model's own types
//! (`Addr`, `Cidr`, `PortRange`, ...), so a bad value gets the same message as in a file. A
//! request only edits a clone of the [`Topology`]; whether the result is valid is decided by the
//! file validation in [`super::ControlState::apply`], never here. What this module checks itself
//! is what the cloud checks before validating: that the things a request names exist
//! (`not_found`), that what it creates does not (`already_exists`), and that what it removes is
//! no longer used (`dependency_violation`).
//!
//! One file per concept: `vpc` (VPCs and subnets), `route` (route tables and routes),
//! `instance`, `eip`, `nat` (NAT gateways and their SNAT/DNAT entries), `security_group` and
//! `network_acl`, `dns` (private and public zones and records, DNS Firewall domain lists and
//! rules, egress by name);
//! `schema` gives the OpenAPI schema of every request ([`op_schemas`],
//! [`schemas`]). The list of operations below is the one place that names them: [`Change`],
//! [`Change::OPS`], [`Change::decode`], [`Change::op`], the `From` impls and [`op_schemas`] all
//! come from it.

mod dns;
mod eip;
mod instance;
mod nat;
mod network_acl;
mod route;
mod schema;
mod security_group;
mod vpc;

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::error::{ApiError, ChangeError, ErrorCode, decode};
use crate::topology::model::{Topology, Vpc};

pub use dns::{
    AddDnsDomainList, AddDnsFirewallRule, AddPublicZone, AddPublicZoneRecord, AddZone,
    AddZoneRecord, AssociateZone, DisassociateZone, DomainListOperation, RecordSpec,
    RemoveDnsDomainList, RemoveDnsFirewallRule, RemovePublicZone, RemovePublicZoneRecord,
    RemoveZone, RemoveZoneRecord, SetEgressByName, UpdateDnsDomainList,
};
pub use eip::{AllocateEip, AssociateEip, DisassociateEip, ReleaseEip};
pub use instance::{AddInstance, RemoveInstance};
pub use nat::{
    AddDnat, AddNatGateway, AddSnat, DnatEntrySpec, NatTimeoutsSpec, RemoveDnat, RemoveNatGateway,
    RemoveSnat, SnatEntrySpec,
};
pub use network_acl::{
    AclDirection, AclRuleSpec, AddAclRule, AddNetworkAcl, AssociateNetworkAcl, DEFAULT_NETWORK_ACL,
    RemoveAclRule, RemoveNetworkAcl,
};
pub use route::{
    AddRoute, AddRouteTable, AssociateRouteTable, RemoveRoute, RemoveRouteTable, RouteSpec,
};
pub use schema::{OpSchema, SchemaRef, schemas};
pub use security_group::{
    AddSecurityGroup, AddSgRule, RemoveSecurityGroup, RemoveSgRule, SgDirection, SgRuleSpec,
};
pub use vpc::{AddSubnet, AddVpc, RemoveSubnet, RemoveVpc, SetEgressAllow};

/// How one request edits the model (implemented by every request type).
trait Edit {
    /// Edits `topo` as the request says. Returns the key path of the element the request wrote
    /// (so validation errors inside it name the request's field), or `None`.
    ///
    /// On error `topo` may be partly edited: callers pass a clone.
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError>;
}

/// Declares the operations: `Variant => "op_name"`, in the order of [`Change::OPS`]. New
/// operations go at the end, so that an operation's index never changes.
macro_rules! operations {
    ($($v:ident => $op:literal,)*) => {
        /// Any change the control core applies: one variant per operation, holding its request.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Change {
            $($v($v),)*
        }

        $(impl From<$v> for Change {
            fn from(r: $v) -> Self {
                Change::$v(r)
            }
        })*

        impl Change {
            /// Every operation's name, as [`Change::decode`] takes it and [`Change::op`] returns
            /// it.
            pub const OPS: &'static [&'static str] = &[$($op,)*];

            /// Decodes the JSON body of operation `op` (one of [`Change::OPS`]), for an API that
            /// routes by operation name; errors as [`super::decode`]'s, and `not_found` for an
            /// unknown operation.
            pub fn decode(op: &str, body: &[u8]) -> Result<Change, ChangeError> {
                fn d<T: DeserializeOwned + Into<Change>>(
                    body: &[u8],
                ) -> Result<Change, ChangeError> {
                    decode::<T>(body).map(Into::into)
                }
                match op {
                    $($op => d::<$v>(body),)*
                    _ => Err(ChangeError::one(ApiError::new(
                        ErrorCode::NotFound,
                        format!("`{op}` is not an operation"),
                        "op",
                        format!("the operations are: {}", Change::OPS.join(", ")),
                    ))),
                }
            }

            /// The operation's name (an entry of [`Change::OPS`]).
            pub fn op(&self) -> &'static str {
                match self {
                    $(Change::$v(_) => $op,)*
                }
            }

            /// The request as JSON, the body [`Change::decode`] reads back (the journal's
            /// record of an acknowledged change).
            pub fn request(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self {
                    $(Change::$v(r) => serde_json::to_value(r),)*
                }
            }

            /// Edits `topo` as the request says; see [`Edit::edit`].
            pub(crate) fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
                match self {
                    $(Change::$v(r) => r.edit(topo),)*
                }
            }
        }

        /// Every operation with its request body's schema, in the order of [`Change::OPS`].
        pub fn op_schemas() -> Vec<OpSchema> {
            vec![$(OpSchema::of::<$v>($op),)*]
        }

        /// Every request type's schema and the schemas they refer to (unsorted, may repeat).
        fn all_schemas(out: &mut Vec<(String, schema::SchemaRef)>) {
            $(schema::push::<$v>(out);)*
        }
    };
}

operations! {
    AddInstance => "add_instance",
    RemoveInstance => "remove_instance",
    AllocateEip => "allocate_eip",
    ReleaseEip => "release_eip",
    AssociateEip => "associate_eip",
    DisassociateEip => "disassociate_eip",
    AddDnat => "add_dnat",
    RemoveDnat => "remove_dnat",
    AddSnat => "add_snat",
    RemoveSnat => "remove_snat",
    AddSecurityGroup => "add_security_group",
    RemoveSecurityGroup => "remove_security_group",
    AddSgRule => "add_sg_rule",
    RemoveSgRule => "remove_sg_rule",
    AddAclRule => "add_acl_rule",
    RemoveAclRule => "remove_acl_rule",
    AddRoute => "add_route",
    RemoveRoute => "remove_route",
    AddVpc => "add_vpc",
    RemoveVpc => "remove_vpc",
    AddSubnet => "add_subnet",
    RemoveSubnet => "remove_subnet",
    AddRouteTable => "add_route_table",
    RemoveRouteTable => "remove_route_table",
    AssociateRouteTable => "associate_route_table",
    AddNatGateway => "add_nat_gateway",
    RemoveNatGateway => "remove_nat_gateway",
    AddNetworkAcl => "add_network_acl",
    RemoveNetworkAcl => "remove_network_acl",
    AssociateNetworkAcl => "associate_network_acl",
    SetEgressAllow => "set_egress_allow",
    AddZone => "add_zone",
    RemoveZone => "remove_zone",
    AddZoneRecord => "add_zone_record",
    RemoveZoneRecord => "remove_zone_record",
    AssociateZone => "associate_zone",
    DisassociateZone => "disassociate_zone",
    AddDnsFirewallRule => "add_dns_firewall_rule",
    RemoveDnsFirewallRule => "remove_dns_firewall_rule",
    SetEgressByName => "set_egress_by_name",
    AddPublicZone => "add_public_zone",
    RemovePublicZone => "remove_public_zone",
    AddPublicZoneRecord => "add_public_zone_record",
    RemovePublicZoneRecord => "remove_public_zone_record",
    AddDnsDomainList => "add_dns_domain_list",
    RemoveDnsDomainList => "remove_dns_domain_list",
    UpdateDnsDomainList => "update_dns_domain_list",
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the operations.

/// A model value without a location (API changes have no file to point into).
fn sp<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn not_found(what: &str, name: &str, field: &str, known: Vec<&str>) -> ApiError {
    let hint = if known.is_empty() {
        format!("there is no {what} yet; create one first")
    } else {
        format!("the {what}s are: {}", known.join(", "))
    };
    ApiError::new(
        ErrorCode::NotFound,
        format!("{what} `{name}` does not exist"),
        field,
        hint,
    )
}

fn already_exists(what: &str, name: &str, field: &str, hint: &str) -> ApiError {
    ApiError::new(
        ErrorCode::AlreadyExists,
        format!("{what} `{name}` already exists"),
        field,
        hint,
    )
}

/// The cloud's `DependencyViolation`: what the request removes or moves is still in use.
fn in_use(error: String, hint: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::DependencyViolation, error, "", hint)
}

fn vpc_mut<'t>(topo: &'t mut Topology, name: &str) -> Result<(usize, &'t mut Vpc), ApiError> {
    match topo.vpc.iter().position(|v| v.name.get_ref() == name) {
        Some(i) => Ok((i, &mut topo.vpc[i])),
        None => Err(not_found(
            "VPC",
            name,
            "vpc",
            topo.vpc.iter().map(|v| v.name.get_ref().as_str()).collect(),
        )),
    }
}

/// Finds `name` among `items` by their `name` field; `NotFound` naming `field` otherwise.
fn find<'a, T>(
    items: &'a mut [T],
    name_of: impl Fn(&T) -> &Spanned<String>,
    name: &str,
    what: &str,
    field: &str,
) -> Result<(usize, &'a mut T), ApiError> {
    match items.iter().position(|t| name_of(t).get_ref() == name) {
        Some(i) => Ok((i, &mut items[i])),
        None => {
            let known = items
                .iter()
                .map(|t| name_of(t).get_ref().as_str())
                .collect();
            Err(not_found(what, name, field, known))
        }
    }
}

/// `AlreadyExists` when `items` has one named `name`.
fn refuse_duplicate<T>(
    items: &[T],
    name_of: impl Fn(&T) -> &Spanned<String>,
    name: &str,
    what: &str,
    hint: &str,
) -> Result<(), ApiError> {
    if items.iter().any(|t| name_of(t).get_ref() == name) {
        return Err(already_exists(what, name, "name", hint));
    }
    Ok(())
}

/// "a, b, c and 2 more": items for a message, at most three.
fn some_names(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    let shown = items.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    match items.len() {
        0..=3 => shown,
        n => format!("{shown} and {} more", n - 3),
    }
}
