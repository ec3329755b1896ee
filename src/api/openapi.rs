//! The API's OpenAPI document, served at [`PATH`] and kept in the repository as
//! `src/api/openapi.json` (a test fails when the two differ; `VPCD_BLESS=1 cargo test --lib
//! api::openapi` rewrites the file after a deliberate change).
//!
//! Request bodies come from the types themselves: every change request and every action body
//! derives `utoipa::ToSchema`, so a field added to a request is in the document without anyone
//! writing it twice. The paths are listed here, next to the router's, one `POST /v1/ops/{op}`
//! path per operation of [`Change::OPS`].

use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::control::change::{op_schemas, schemas};

/// Where the document is served.
pub const PATH: &str = "/v1/openapi.json";

/// The error body every refusal carries.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["code", "error", "field"],
                    "properties": {
                        "code": {
                            "type": "string",
                            "enum": ["invalid_input", "not_found", "already_exists",
                                     "dependency_violation", "unauthorized", "too_large",
                                     "unavailable", "internal"]
                        },
                        "error": { "type": "string", "description": "What is wrong." },
                        "field": {
                            "type": "string",
                            "description": "The request's field, or the topology key path; empty when unknown."
                        },
                        "hint": { "type": "string", "description": "What to do." }
                    }
                }
            }
        }
    })
}

fn errors(codes: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    for c in codes {
        let what = match c {
            400 => "The request is invalid; nothing changed.",
            401 => "No or a wrong bearer token (TCP listener only).",
            404 => "Something the request names does not exist.",
            405 => "The path does not take this method.",
            409 => {
                "Already exists, still in use, or refused by the running network; nothing changed."
            }
            413 => "The body is larger than 64 KiB.",
            500 => {
                "The change could not be saved and was undone; or, after a failed fsync of the journal, it is in force but not durable and no further change is accepted."
            }
            503 => "The run is stopping.",
            _ => "Refused.",
        };
        m.insert(
            c.to_string(),
            json!({
                "description": what,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Errors" } } }
            }),
        );
    }
    m
}

fn json_ok(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": {} } } })
}

fn get(summary: &str, description: &str, codes: &[u16]) -> Value {
    let mut responses = errors(codes);
    responses.insert("200".into(), json_ok(description));
    json!({ "get": { "summary": summary, "responses": responses } })
}

fn post(summary: &str, body_schema: &str, ok: &str, codes: &[u16]) -> Value {
    let mut responses = errors(codes);
    responses.insert("200".into(), json_ok(ok));
    json!({ "post": {
        "summary": summary,
        "requestBody": {
            "required": true,
            "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{body_schema}") }
            } }
        },
        "responses": responses
    } })
}

fn param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string" } })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": schema })
}

/// Component schemas of the API's own action bodies (the change requests come from
/// [`schemas`]).
fn action_schemas() -> Vec<(String, Value)> {
    fn one<T: ToSchema>() -> (String, Value) {
        (
            T::name().into_owned(),
            serde_json::to_value(T::schema()).unwrap_or(Value::Null),
        )
    }
    vec![
        one::<super::ExplainRequest>(),
        one::<super::FlushRequest>(),
        one::<super::FlowLogStart>(),
        one::<super::CaptureStart>(),
        one::<super::CaptureStop>(),
        one::<super::Empty>(),
        one::<super::dns::DnsQueryRequest>(),
        one::<super::dns::QueryLogStart>(),
    ]
}

/// The body of `POST /v1/batch`: entries `{op, request}`, each `request` the schema of its
/// operation.
fn batch_schema() -> Value {
    let entries: Vec<Value> = op_schemas()
        .iter()
        .map(|op| {
            json!({
                "type": "object",
                "required": ["op", "request"],
                "additionalProperties": false,
                "properties": {
                    "op": { "type": "string", "const": op.op },
                    "request": { "$ref": format!("#/components/schemas/{}", op.schema) }
                }
            })
        })
        .collect();
    json!({
        "type": "object",
        "description": "Changes applied in order, all or none: one step of the running network and one journal record.",
        "required": ["changes"],
        "additionalProperties": false,
        "properties": {
            "changes": {
                "type": "array",
                "minItems": 1,
                "maxItems": crate::control::MAX_BATCH,
                "items": { "oneOf": entries }
            }
        }
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut add = |path: &str, item: Value| {
        paths.insert(path.to_string(), item);
    };
    add(
        "/v1/status",
        get(
            "The run: generation, uptime, endpoints, operations, the log directory",
            "Status.",
            &[],
        ),
    );
    add(
        "/v1/topology",
        json!({ "get": { "summary": "The effective topology", "responses": { "200": {
            "description": "A topology file that `vpcd check` accepts; the model as JSON with `Accept: application/json`.",
            "content": {
                "text/plain": { "schema": { "type": "string" } },
                "application/json": { "schema": { "type": "object" } }
            }
        } } } }),
    );
    add(
        "/v1/vpcs",
        get("Every VPC, summarized", "VPC summaries.", &[]),
    );
    let mut vpc = get("One VPC as the model writes it", "The VPC.", &[404]);
    vpc["parameters"] = json!([param("vpc", "The VPC's name.")]);
    add("/v1/vpcs/{vpc}", vpc);
    let mut kind = get(
        "A VPC's subnets, instances, route-tables, nat-gateways, security-groups or network-acls",
        "The resources, as a list.",
        &[404],
    );
    kind["parameters"] = json!([
        param("vpc", "The VPC's name."),
        json!({ "name": "kind", "in": "path", "required": true,
                "schema": { "type": "string", "enum": super::reads::VPC_RESOURCES } })
    ]);
    add("/v1/vpcs/{vpc}/{kind}", kind);
    add(
        "/v1/eips",
        get("Every EIP and what it is associated with", "EIPs.", &[]),
    );
    add(
        "/v1/internet",
        get("The public segment and its hosts", "The internet.", &[]),
    );
    add("/v1/ops", get("The operation names", "Names.", &[]));
    let mut conntrack = get(
        "The connection table: NAT sessions and security-group flows",
        "Connections (at most `limit`), the total and whether the list was cut.",
        &[400, 404, 503],
    );
    conntrack["get"]["parameters"] = json!([
        query("vpc", "Only this VPC.", json!({ "type": "string" })),
        query(
            "gateway",
            "Only this NAT gateway (`VPC/GATEWAY` or a name), or `internet-gateway`.",
            json!({ "type": "string" })
        ),
        query(
            "instance",
            "Only this instance (`VPC/INSTANCE` or a name).",
            json!({ "type": "string" })
        ),
        query(
            "protocol",
            "tcp, udp, icmp or an IP protocol number.",
            json!({ "type": "string" })
        ),
        query(
            "table",
            "nat (NAT sessions) or sg (security-group flows).",
            json!({ "type": "string", "enum": ["nat", "sg"] })
        ),
        query(
            "limit",
            "At most this many rows (default 1000).",
            json!({ "type": "integer", "minimum": 1 })
        ),
    ]);
    add("/v1/conntrack", conntrack);
    add(
        "/v1/conntrack/flush",
        post(
            "End every connection of an instance or of a gateway",
            "FlushRequest",
            "How many were flushed.",
            &[400, 404, 413, 503],
        ),
    );
    add(
        "/v1/flow-log",
        get("The flow log's state", "Status.", &[503]),
    );
    add(
        "/v1/flow-log/start",
        post(
            "Start writing flow-log records to a file inside the log directory (appended, never truncated; no symbolic links, FIFOs or devices), or `-`",
            "FlowLogStart",
            "Status.",
            &[400, 409, 413, 500, 503],
        ),
    );
    let mut stop = post(
        "Stop the flow log, writing what it holds (no body, or `{}`)",
        "Empty",
        "What was written.",
        &[400, 404, 413, 500, 503],
    );
    stop["post"]["requestBody"]["required"] = json!(false);
    add("/v1/flow-log/stop", stop);
    add(
        "/v1/captures",
        get("Running packet captures", "Captures.", &[503]),
    );
    add(
        "/v1/captures/start",
        post(
            "Capture an endpoint's packets to a new pcap file (and FILE.nat.pcap) inside the log directory",
            "CaptureStart",
            "The capture.",
            &[400, 404, 409, 413, 500, 503],
        ),
    );
    add(
        "/v1/captures/stop",
        post(
            "Stop a capture, writing what it holds",
            "CaptureStop",
            "The capture.",
            &[400, 404, 413, 500, 503],
        ),
    );
    add(
        "/v1/dns/zones",
        get(
            "Every private zone with its VPCs and record count",
            "Zones.",
            &[],
        ),
    );
    let mut zone = get("One private zone with its records", "The zone.", &[404]);
    zone["parameters"] = json!([param("zone", "The zone's apex, like corp.example.")]);
    add("/v1/dns/zones/{zone}", zone);
    add(
        "/v1/dns/public-zones",
        get(
            "Every public zone of the simulated internet ([[internet.zone]]) with its record count",
            "Zones.",
            &[],
        ),
    );
    let mut zone = get("One public zone with its records", "The zone.", &[404]);
    zone["parameters"] = json!([param("zone", "The zone's apex, like example.com.")]);
    add("/v1/dns/public-zones/{zone}", zone);
    add(
        "/v1/dns/domain-lists",
        get(
            "The DNS Firewall domain lists, with their domains and the rules using them",
            "Lists.",
            &[],
        ),
    );
    let mut list = get("One DNS Firewall domain list", "The list.", &[404]);
    list["parameters"] = json!([param("list", "The list's name.")]);
    add("/v1/dns/domain-lists/{list}", list);
    add(
        "/v1/dns/firewall",
        get(
            "The DNS Firewall rules, in the order the resolvers apply them",
            "Rules.",
            &[],
        ),
    );
    add(
        "/v1/dns/egress-by-name",
        get(
            "Per VPC, the names its instances may reach (egress by name)",
            "Entries.",
            &[],
        ),
    );
    add(
        "/v1/dns/query",
        post(
            "Ask the running resolver of an instance's VPC, on the instance's behalf",
            "DnsQueryRequest",
            "The answer: rcode, records with TTLs, source, firewall rule.",
            &[400, 404, 413, 503],
        ),
    );
    add(
        "/v1/dns/query-log",
        get("The DNS query log's state", "Status.", &[]),
    );
    add(
        "/v1/dns/query-log/start",
        post(
            "Start writing the resolvers' query-log records (JSON lines) to a file inside the log directory (appended, never truncated; no symbolic links, FIFOs or devices), or `-`",
            "QueryLogStart",
            "Status.",
            &[400, 409, 413, 500],
        ),
    );
    let mut stop = post(
        "Stop the DNS query log, flushing it (no body, or `{}`)",
        "Empty",
        "What was written.",
        &[400, 404, 413, 500],
    );
    stop["post"]["requestBody"]["required"] = json!(false);
    add("/v1/dns/query-log/stop", stop);
    add(
        "/v1/explain",
        post(
            "Whether FROM reaches TO, hop by hop, on the running tables",
            "ExplainRequest",
            "The explanation.",
            &[400, 413, 503],
        ),
    );
    add(
        "/metrics",
        json!({ "get": { "summary": "Prometheus metrics", "responses": {
            "200": { "description": "The Prometheus text format.",
                     "content": { "text/plain": { "schema": { "type": "string" } } } },
            "503": { "description": "The run is stopping." }
        } } }),
    );
    add(
        PATH,
        json!({ "get": { "summary": "This document", "responses": {
            "200": { "description": "OpenAPI 3.1.", "content": { "application/json": { "schema": {} } } }
        } } }),
    );
    for op in op_schemas() {
        let mut item = post(
            &format!("Change: {}", op.op),
            &op.schema,
            "Applied: {op, generation, applied, problems}.",
            &[400, 404, 409, 413, 500, 503],
        );
        item["post"]["operationId"] = json!(op.op);
        if let Some(d) = op.description {
            item["post"]["description"] = json!(d);
        }
        add(&format!("/v1/ops/{}", op.op), item);
    }

    add(
        "/v1/batch",
        post(
            "Many changes, all or none",
            "Batch",
            "Applied: {op (the list of operations), generation, applied, problems}.",
            &[400, 404, 409, 413, 500, 503],
        ),
    );

    let mut components = Map::new();
    for (name, schema) in schemas() {
        components.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
    }
    for (name, schema) in action_schemas() {
        components.insert(name, schema);
    }
    components.insert("Errors".into(), error_schema());
    components.insert("Batch".into(), batch_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "vpcd control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Changes and reads of a running `vpcd up --state DIR`: HTTP/JSON on a Unix socket (mode 0600), optionally on TCP behind a bearer token. Every change is validated like a topology file, applied without disturbing unrelated flows, and saved before it is answered."
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ {}, { "bearer": [] } ]
    })
}

/// The document as served and as kept in the repository (pretty JSON, final newline).
pub fn text() -> String {
    let mut t = serde_json::to_string_pretty(&document()).unwrap_or_default();
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/openapi.json");

    #[test]
    fn the_repository_copy_matches_the_served_document() {
        let served = text();
        if std::env::var_os("VPCD_BLESS").is_some() {
            std::fs::write(FILE, &served).expect("write openapi.json");
        }
        let kept = std::fs::read_to_string(FILE).unwrap_or_default();
        assert!(
            kept == served,
            "src/api/openapi.json differs from the document the API serves; if the change is \
             deliberate, run `VPCD_BLESS=1 cargo test --lib api::openapi` and commit the file"
        );
    }

    #[test]
    fn every_reference_resolves_and_every_operation_has_a_path() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
        }
        for op in crate::control::Change::OPS {
            assert!(
                doc["paths"][format!("/v1/ops/{op}")]["post"].is_object(),
                "no path for {op}"
            );
        }
    }
}
