//! OpenAPI schemas of the change requests, for the API's OpenAPI document.
//!
//! Every request type derives `utoipa::ToSchema`. The model's value types that have a custom
//! JSON form get schemas matching what they accept: `Cidr` and `Addr` (strings, derived with
//! attributes in `topology::cidr`), and here by hand `PortRange` (a number or a `"1000-2000"`
//! string) and `RouteTarget` (`"local"`, `"blackhole"`, `"internet"` or `"nat:NAME"`).
//!
//! The document's builder calls [`super::op_schemas`] for one `POST /v1/ops/{op}` path per
//! operation (its request body a `$ref` to `#/components/schemas/{schema}`), and [`schemas`] for
//! the components those references need.

use std::borrow::Cow;

use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::topology::model::{EgressRule, HostListen, PortRange, RouteTarget};

/// A component schema, as utoipa's `Components` holds it.
pub type SchemaRef = RefOr<Schema>;

/// One operation of `POST /v1/ops/{op}`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSchema {
    /// The operation's name (an entry of [`super::Change::OPS`]).
    pub op: &'static str,
    /// The component name of its request body's schema: `#/components/schemas/{schema}`.
    pub schema: String,
    /// The request type's documentation (what the operation does, the cloud API it models, and
    /// when it is refused), for the operation's description.
    pub description: Option<String>,
}

impl OpSchema {
    pub(super) fn of<T: ToSchema>(op: &'static str) -> OpSchema {
        let description = match T::schema() {
            RefOr::T(Schema::Object(o)) => o.description,
            // A request that is another's body, with its own description.
            RefOr::Ref(r) if !r.description.is_empty() => Some(r.description),
            _ => None,
        };
        OpSchema {
            op,
            schema: T::name().into_owned(),
            description,
        }
    }
}

/// `T`'s schema and every schema it refers to.
pub(super) fn push<T: ToSchema>(out: &mut Vec<(String, SchemaRef)>) {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
}

/// The component schemas of every request body and of every type they refer to, by name
/// (sorted, each once): what `Components::schemas` needs for the references in
/// [`super::op_schemas`] to resolve.
pub fn schemas() -> Vec<(String, SchemaRef)> {
    let mut all = Vec::new();
    super::all_schemas(&mut all);
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|a, b| a.0 == b.0);
    all
}

impl PartialSchema for PortRange {
    fn schema() -> SchemaRef {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(65535)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,5}(-[0-9]{1,5})?$")),
            )
            .description(Some(
                "One port (1-65535), as a number or a string, or a range \"FIRST-LAST\"",
            ))
            .examples([json!(80), json!("8000-8100")])
            .into()
    }
}

impl ToSchema for PortRange {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PortRange")
    }
}

impl PartialSchema for RouteTarget {
    fn schema() -> SchemaRef {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(local|blackhole|internet|nat:.+)$"))
            .description(Some(
                "Where a route sends matching packets: \"local\" (inside the VPC), \"blackhole\" (dropped), \"internet\" (the internet gateway: instances with a 1:1 EIP) or \"nat:GATEWAY\" (a NAT gateway of the same VPC)",
            ))
            .examples([json!("nat:egress"), json!("internet")])
            .into()
    }
}

impl ToSchema for RouteTarget {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RouteTarget")
    }
}

impl PartialSchema for EgressRule {
    fn schema() -> SchemaRef {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A destination a VPC's functions may open flows to through the internet: \"CIDR\" or \"ADDRESS\" (every protocol), or \"CIDR:PORT\" / \"CIDR:FIRST-LAST\" (TCP and UDP to those ports)",
            ))
            .examples([json!("192.0.2.0/24:443"), json!("198.51.100.7")])
            .into()
    }
}

impl ToSchema for EgressRule {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EgressRule")
    }
}

impl PartialSchema for HostListen {
    fn schema() -> SchemaRef {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A host address and port the uplink listens on (\"ADDRESS:PORT\"); callers there reach the function with their own address as the source",
            ))
            .examples([json!("192.0.2.1:8080")])
            .into()
    }
}

impl ToSchema for HostListen {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("HostListen")
    }
}
