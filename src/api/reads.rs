//! The API's read endpoints: each resource of the effective topology as JSON.
//!
//! Every function reads a [`ControlState`] (the model, whose instance and gateway addresses the
//! control core has written out) and returns the JSON the route serves, or a `not_found` error
//! naming what exists. The objects are the model's own JSON form (what `GET /v1/topology` with
//! `Accept: application/json` returns) plus what a caller would otherwise have to work out:
//! which subnets use a route table or network ACL, the address of an instance's EIP, what an EIP
//! is associated with. Nothing here reaches the running network.

use serde_json::{Value, json};

use crate::control::{ApiError, ControlState, ErrorCode};
use crate::topology::model::{
    DEFAULT_RECORD_TTL, DnsDomainList, MAIN_ROUTE_TABLE, Topology, Vpc, Zone,
};

/// The network ACL a subnet without `network_acl` uses.
pub const DEFAULT_NETWORK_ACL: &str = "default";

/// The resource kinds under `/v1/vpcs/{vpc}/`.
pub const VPC_RESOURCES: [&str; 6] = [
    "subnets",
    "instances",
    "route-tables",
    "nat-gateways",
    "security-groups",
    "network-acls",
];

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn vpc<'a>(t: &'a Topology, name: &str) -> Result<&'a Vpc, ApiError> {
    t.vpc
        .iter()
        .find(|v| v.name.get_ref() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = t.vpc.iter().map(|v| v.name.get_ref().as_str()).collect();
            ApiError::new(
                ErrorCode::NotFound,
                format!("no VPC named `{name}`"),
                "vpc",
                if known.is_empty() {
                    "the topology has no VPC; add one with the add_vpc operation".to_string()
                } else {
                    format!("VPCs: {}", known.join(", "))
                },
            )
        })
}

/// `GET /v1/vpcs`: one summary per VPC.
pub fn vpcs(state: &ControlState) -> Value {
    Value::Array(
        state
            .model()
            .vpc
            .iter()
            .map(|v| {
                json!({
                    "name": v.name.get_ref(),
                    "cidr": v.cidr.get_ref().to_string(),
                    "subnets": v.subnet.len(),
                    "instances": v.instance.len(),
                    "nat_gateways": v.nat_gateway.len(),
                    "security_groups": v.security_group.len(),
                })
            })
            .collect(),
    )
}

/// `GET /v1/vpcs/{vpc}`: the VPC as the model writes it.
pub fn vpc_object(state: &ControlState, name: &str) -> Result<Value, ApiError> {
    vpc(state.model(), name).map(to_json)
}

/// `GET /v1/vpcs/{vpc}/{kind}` for a kind of [`VPC_RESOURCES`].
pub fn vpc_resource(state: &ControlState, name: &str, kind: &str) -> Result<Value, ApiError> {
    let t = state.model();
    let v = vpc(t, name)?;
    let list: Vec<Value> = match kind {
        "subnets" => v
            .subnet
            .iter()
            .map(|s| {
                let instances = v
                    .instance
                    .iter()
                    .filter(|i| i.subnet.get_ref() == s.name.get_ref())
                    .count();
                json!({
                    "name": s.name.get_ref(),
                    "cidr": s.cidr.get_ref().to_string(),
                    "route_table": s.route_table.as_ref().map_or(MAIN_ROUTE_TABLE, |r| r.get_ref()),
                    "network_acl": s.network_acl.as_ref().map_or(DEFAULT_NETWORK_ACL, |a| a.get_ref()),
                    "instances": instances,
                })
            })
            .collect(),
        "instances" => v
            .instance
            .iter()
            .map(|i| {
                let mut o = to_json(i);
                let address = i.eip.as_ref().and_then(|e| {
                    t.eip
                        .iter()
                        .find(|x| x.name.get_ref() == e.get_ref())
                        .map(|x| x.address.get_ref().to_string())
                });
                if let Value::Object(m) = &mut o {
                    m.entry("security_groups").or_insert_with(|| json!([]));
                    m.entry("eip").or_insert(Value::Null);
                    m.insert("eip_address".into(), to_json(&address));
                }
                o
            })
            .collect(),
        "route-tables" => {
            let mut tables: Vec<Value> = v.route_table.iter().map(to_json).collect();
            if !v
                .route_table
                .iter()
                .any(|r| r.name.get_ref() == MAIN_ROUTE_TABLE)
            {
                tables.insert(0, json!({ "name": MAIN_ROUTE_TABLE, "routes": [] }));
            }
            for table in &mut tables {
                let name = table["name"].as_str().unwrap_or_default().to_string();
                let subnets: Vec<&str> = v
                    .subnet
                    .iter()
                    .filter(|s| {
                        s.route_table
                            .as_ref()
                            .map_or(MAIN_ROUTE_TABLE, |r| r.get_ref())
                            == name
                    })
                    .map(|s| s.name.get_ref().as_str())
                    .collect();
                if let Value::Object(m) = table {
                    m.entry("routes").or_insert_with(|| json!([]));
                    m.insert("subnets".into(), json!(subnets));
                }
            }
            tables
        }
        "nat-gateways" => v
            .nat_gateway
            .iter()
            .map(|g| {
                let mut o = to_json(g);
                if let Value::Object(m) = &mut o {
                    for key in ["eips", "snat", "dnat"] {
                        m.entry(key).or_insert_with(|| json!([]));
                    }
                }
                o
            })
            .collect(),
        "security-groups" => v
            .security_group
            .iter()
            .map(|g| {
                let mut o = to_json(g);
                if let Value::Object(m) = &mut o {
                    m.entry("ingress").or_insert_with(|| json!([]));
                    m.entry("egress").or_insert(Value::Null);
                }
                o
            })
            .collect(),
        "network-acls" => v
            .network_acl
            .iter()
            .map(|a| {
                let mut o = to_json(a);
                let subnets: Vec<&str> = v
                    .subnet
                    .iter()
                    .filter(|s| {
                        s.network_acl
                            .as_ref()
                            .is_some_and(|n| n.get_ref() == a.name.get_ref())
                    })
                    .map(|s| s.name.get_ref().as_str())
                    .collect();
                if let Value::Object(m) = &mut o {
                    m.entry("inbound").or_insert_with(|| json!([]));
                    m.entry("outbound").or_insert_with(|| json!([]));
                    m.insert("subnets".into(), json!(subnets));
                }
                o
            })
            .collect(),
        _ => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no resource `{kind}` under a VPC"),
                "",
                format!("resources: {}", VPC_RESOURCES.join(", ")),
            ));
        }
    };
    Ok(Value::Array(list))
}

/// `GET /v1/eips`: every EIP with what it is associated with.
pub fn eips(state: &ControlState) -> Value {
    let t = state.model();
    Value::Array(
        t.eip
            .iter()
            .map(|e| {
                let name = e.name.get_ref();
                let mut association = Value::Null;
                for v in &t.vpc {
                    if let Some(i) = v
                        .instance
                        .iter()
                        .find(|i| i.eip.as_ref().is_some_and(|x| x.get_ref() == name))
                    {
                        association =
                            json!({ "vpc": v.name.get_ref(), "instance": i.name.get_ref() });
                    }
                    if let Some(g) = v
                        .nat_gateway
                        .iter()
                        .find(|g| g.eips.iter().any(|x| x.get_ref() == name))
                    {
                        association =
                            json!({ "vpc": v.name.get_ref(), "nat_gateway": g.name.get_ref() });
                    }
                }
                json!({
                    "name": name,
                    "address": e.address.get_ref().to_string(),
                    "association": association,
                })
            })
            .collect(),
    )
}

/// `GET /v1/internet`: the public segment and its hosts.
pub fn internet(state: &ControlState) -> Value {
    let plan = state.plan();
    let hosts: Vec<Value> = state
        .model()
        .internet
        .as_ref()
        .map(|i| i.host.iter().map(to_json).collect())
        .unwrap_or_default();
    json!({
        "cidr": plan.internet.cidr.to_string(),
        "hosts": hosts,
    })
}

/// The endpoints of the running plan, `VPC/INSTANCE` and `internet/HOST`, with how they are
/// attached and their addresses.
pub fn endpoints(state: &ControlState) -> Value {
    let t = state.model();
    let mut out = Vec::new();
    for v in &t.vpc {
        for i in &v.instance {
            out.push(json!({
                "name": format!("{}/{}", v.name.get_ref(), i.name.get_ref()),
                "attach": to_json(&i.attach),
                "addr": i.ip.as_ref().map(|a| a.get_ref().to_string()),
            }));
        }
    }
    if let Some(i) = &t.internet {
        for h in &i.host {
            out.push(json!({
                "name": format!("internet/{}", h.name.get_ref()),
                "attach": to_json(&h.attach),
                "addr": h.ip.get_ref().to_string(),
            }));
        }
    }
    Value::Array(out)
}

/// The public zones of a model (`[[internet.zone]]`).
fn public_zone_list(t: &Topology) -> &[Zone] {
    t.internet.as_ref().map_or(&[], |i| i.zone.as_slice())
}

/// Zones as listed: name, VPCs (private zones only), how many records.
fn zone_list(zones: &[Zone], public: bool) -> Value {
    Value::Array(
        zones
            .iter()
            .map(|z| {
                let mut v = json!({ "name": z.name.get_ref(), "records": z.record.len() });
                if !public {
                    v["vpcs"] = json!(z.vpcs.iter().map(|v| v.get_ref()).collect::<Vec<_>>());
                }
                v
            })
            .collect(),
    )
}

/// `GET /v1/dns/zones`: every private zone with its VPCs and how many records it has.
pub fn zones(state: &ControlState) -> Value {
    zone_list(&state.model().zone, false)
}

/// `GET /v1/dns/public-zones`: every public zone with how many records it has.
pub fn public_zones(state: &ControlState) -> Value {
    zone_list(public_zone_list(state.model()), true)
}

/// `GET /v1/dns/zones/{zone}`: one private zone with its records (the TTL a record without one
/// gets is written out). The name matches without regard to case or a final dot.
pub fn zone(state: &ControlState, name: &str) -> Result<Value, ApiError> {
    zone_of(&state.model().zone, name, false)
}

/// `GET /v1/dns/public-zones/{zone}`: one public zone with its records, as [`zone`].
pub fn public_zone(state: &ControlState, name: &str) -> Result<Value, ApiError> {
    zone_of(public_zone_list(state.model()), name, true)
}

fn zone_of(zones: &[Zone], name: &str, public: bool) -> Result<Value, ApiError> {
    let key = crate::dns::names::domain_key;
    let (what, op) = if public {
        ("public zone", "add_public_zone")
    } else {
        ("private zone", "add_zone")
    };
    let Some(z) = zones.iter().find(|z| key(z.name.get_ref()) == key(name)) else {
        let known: Vec<&str> = zones.iter().map(|z| z.name.get_ref().as_str()).collect();
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no {what} named `{name}`"),
            "zone",
            if known.is_empty() {
                format!("there is no {what}; add one with the {op} operation")
            } else {
                format!("zones: {}", known.join(", "))
            },
        ));
    };
    let records: Vec<Value> = z
        .record
        .iter()
        .map(|r| {
            json!({
                "name": r.name.get_ref(),
                "type": r.kind.get_ref().as_str(),
                "value": r.value.get_ref(),
                "ttl": r.ttl.as_ref().map_or(DEFAULT_RECORD_TTL, |t| *t.get_ref()),
            })
        })
        .collect();
    let mut v = json!({ "name": z.name.get_ref(), "records": records });
    if !public {
        v["vpcs"] = json!(z.vpcs.iter().map(|v| v.get_ref()).collect::<Vec<_>>());
    }
    Ok(v)
}

/// One domain list with its domains and the rules that use it.
fn list_json(t: &Topology, l: &DnsDomainList) -> Value {
    let rules: Vec<&str> = t
        .dns_firewall
        .iter()
        .filter(|r| {
            r.domain_list
                .as_ref()
                .is_some_and(|n| n.get_ref() == l.name.get_ref())
        })
        .map(|r| r.name.get_ref().as_str())
        .collect();
    json!({
        "name": l.name.get_ref(),
        "domains": l.domains.iter().map(|d| d.get_ref()).collect::<Vec<_>>(),
        "rules": rules,
    })
}

/// `GET /v1/dns/domain-lists`: every DNS Firewall domain list, with the rules using it.
pub fn domain_lists(state: &ControlState) -> Value {
    let t = state.model();
    Value::Array(t.dns_domain_list.iter().map(|l| list_json(t, l)).collect())
}

/// `GET /v1/dns/domain-lists/{list}`: one domain list.
pub fn domain_list(state: &ControlState, name: &str) -> Result<Value, ApiError> {
    let t = state.model();
    match t.dns_domain_list.iter().find(|l| l.name.get_ref() == name) {
        Some(l) => Ok(list_json(t, l)),
        None => {
            let known: Vec<&str> = t
                .dns_domain_list
                .iter()
                .map(|l| l.name.get_ref().as_str())
                .collect();
            Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no DNS domain list named `{name}`"),
                "list",
                if known.is_empty() {
                    "there is no DNS domain list; add one with the add_dns_domain_list operation"
                        .to_string()
                } else {
                    format!("lists: {}", known.join(", "))
                },
            ))
        }
    }
}

/// `GET /v1/dns/firewall`: the DNS Firewall rules in the order the resolvers apply them.
pub fn dns_firewall(state: &ControlState) -> Value {
    Value::Array(state.model().dns_firewall.iter().map(to_json).collect())
}

/// `GET /v1/dns/egress-by-name`: per VPC, the names its instances may reach.
pub fn egress_by_name(state: &ControlState) -> Value {
    let t = state.model();
    Value::Array(
        t.vpc
            .iter()
            .filter_map(|v| {
                let allow: Vec<&str> = t
                    .egress_by_name
                    .iter()
                    .filter(|e| e.vpcs.iter().any(|x| x.get_ref() == v.name.get_ref()))
                    .flat_map(|e| e.allow.iter().map(|a| a.get_ref().as_str()))
                    .collect();
                (!allow.is_empty()).then(|| json!({ "vpc": v.name.get_ref(), "allow": allow }))
            })
            .collect(),
    )
}
