//! `vpcd ctl` for the network's shape: VPCs, subnets, route tables and routes, instances,
//! elastic IPs, NAT gateways with their SNAT and DNAT entries.
//!
//! Each command becomes one [`Call`]: a `GET` of the resource's list rendered as a [`Table`], or
//! one change through `/v1/ops/{op}` whose body has the API's field names (`--route-table` is
//! `route_table`, a repeated `--eip` is `eips`). Nothing is validated here that the API checks
//! itself, except the `VPC/NAME` form of a reference, so there is one set of messages.

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use super::table::{Table, cell, field, fields, list};
use super::{Call, body, list_or_null, split_ref, vpc_path};

#[derive(Debug, Subcommand)]
pub enum VpcCommand {
    /// Every VPC with its CIDR and how many subnets, instances and NAT gateways it has.
    List,
    /// One VPC: its CIDR and the names of everything in it.
    Show { vpc: String },
    /// Create VPC NAME with CIDR (`CreateVpc`).
    Add {
        name: String,
        #[arg(long)]
        cidr: String,
    },
    /// Delete an empty VPC.
    Remove { name: String },
}

impl VpcCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            VpcCommand::List => Call::get("/v1/vpcs".into(), |v| {
                let mut t = Table::new(&["NAME", "CIDR", "SUBNETS", "INSTANCES", "NAT_GATEWAYS"]);
                for x in list(v, "VPCs")? {
                    t.row(cols(
                        x,
                        &["name", "cidr", "subnets", "instances", "nat_gateways"],
                    ));
                }
                Ok(t.render_or("no VPCs"))
            }),
            VpcCommand::Show { vpc } => Call::get(
                format!("/v1/vpcs/{}", super::client::path_segment(vpc)),
                show_vpc,
            ),
            VpcCommand::Add { name, cidr } => Call::op(
                "add_vpc",
                json!({"name": name, "cidr": cidr}),
                format!("added vpc {name} ({cidr})"),
            ),
            VpcCommand::Remove { name } => Call::op(
                "remove_vpc",
                json!({"name": name}),
                format!("removed vpc {name}"),
            ),
        }
    }
}

/// The model's VPC object as `KEY  value` lines: names (with CIDR or address) per kind.
fn show_vpc(v: &Value) -> Result<String, String> {
    if !v.is_object() {
        return Err("the API's answer is not a VPC object; see it with --json".into());
    }
    let names = |key: &str, extra: Option<&str>| {
        let items: Vec<String> = v[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| match extra.map(|k| &x[k]).filter(|e| !e.is_null()) {
                Some(e) => format!("{} ({})", field(x, "name"), cell(e)),
                None => field(x, "name"),
            })
            .collect();
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(", ")
        }
    };
    Ok(fields(&[
        ("NAME", field(v, "name")),
        ("CIDR", field(v, "cidr")),
        ("SUBNETS", names("subnet", Some("cidr"))),
        ("ROUTE_TABLES", names("route_table", None)),
        ("INSTANCES", names("instance", Some("ip"))),
        ("NAT_GATEWAYS", names("nat_gateway", Some("ip"))),
        ("SECURITY_GROUPS", names("security_group", None)),
        ("NETWORK_ACLS", names("network_acl", None)),
    ]))
}

/// The cells of `keys` in `obj`.
fn cols(obj: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| field(obj, k)).collect()
}

/// The length of the list at `obj[key]`, as a cell.
fn count(obj: &Value, key: &str) -> String {
    obj[key]
        .as_array()
        .map_or_else(|| "-".into(), |a| a.len().to_string())
}

#[derive(Debug, Subcommand)]
pub enum SubnetCommand {
    /// VPC's subnets with their route table, network ACL and instance count.
    List { vpc: String },
    /// Create subnet NAME in VPC (`CreateSubnet`).
    Add {
        vpc: String,
        name: String,
        #[arg(long)]
        cidr: String,
        /// Its route table (default: the VPC's main table).
        #[arg(long)]
        route_table: Option<String>,
        /// Its network ACL (default: none, everything allowed).
        #[arg(long)]
        network_acl: Option<String>,
    },
    /// Delete a subnet with no instances or NAT gateways.
    Remove { vpc: String, name: String },
}

impl SubnetCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            SubnetCommand::List { vpc } => {
                let empty = format!("no subnets in VPC {vpc}");
                Call::get(vpc_path(vpc, "subnets"), move |v| {
                    let keys = ["name", "cidr", "route_table", "network_acl", "instances"];
                    let mut t = Table::of_fields(&keys);
                    for x in list(v, "subnets")? {
                        t.row(cols(x, &keys));
                    }
                    Ok(t.render_or(&empty))
                })
            }
            SubnetCommand::Add {
                vpc,
                name,
                cidr,
                route_table,
                network_acl,
            } => Call::op(
                "add_subnet",
                body(vec![
                    ("vpc", json!(vpc)),
                    ("name", json!(name)),
                    ("cidr", json!(cidr)),
                    ("route_table", json!(route_table)),
                    ("network_acl", json!(network_acl)),
                ]),
                format!("added subnet {vpc}/{name} ({cidr})"),
            ),
            SubnetCommand::Remove { vpc, name } => Call::op(
                "remove_subnet",
                json!({"vpc": vpc, "name": name}),
                format!("removed subnet {vpc}/{name}"),
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RouteTableCommand {
    /// VPC's route tables with the subnets that use them and their route count.
    List { vpc: String },
    /// Create an empty route table (`CreateRouteTable`); add routes with `vpcd ctl route add`.
    Add { vpc: String, name: String },
    /// Delete a route table no subnet uses.
    Remove { vpc: String, name: String },
    /// Make SUBNET use ROUTE_TABLE (`AssociateRouteTable`).
    Associate {
        vpc: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        route_table: String,
    },
}

impl RouteTableCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            RouteTableCommand::List { vpc } => {
                let empty = format!("no route tables in VPC {vpc}");
                Call::get(vpc_path(vpc, "route-tables"), move |v| {
                    let mut t = Table::new(&["NAME", "SUBNETS", "ROUTES"]);
                    for x in list(v, "route tables")? {
                        t.row(vec![
                            field(x, "name"),
                            field(x, "subnets"),
                            count(x, "routes"),
                        ]);
                    }
                    Ok(t.render_or(&empty))
                })
            }
            RouteTableCommand::Add { vpc, name } => Call::op(
                "add_route_table",
                json!({"vpc": vpc, "name": name}),
                format!("added route table {vpc}/{name}"),
            ),
            RouteTableCommand::Remove { vpc, name } => Call::op(
                "remove_route_table",
                json!({"vpc": vpc, "name": name}),
                format!("removed route table {vpc}/{name}"),
            ),
            RouteTableCommand::Associate {
                vpc,
                subnet,
                route_table,
            } => Call::op(
                "associate_route_table",
                json!({"vpc": vpc, "subnet": subnet, "route_table": route_table}),
                format!("associated route table {vpc}/{route_table} with subnet {vpc}/{subnet}"),
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// VPC's routes, one per row, by route table.
    List {
        vpc: String,
        /// Only this table's routes.
        #[arg(long)]
        route_table: Option<String>,
    },
    /// Add a route (`CreateRoute`): TARGET is `local`, `internet`, `blackhole` or `nat:GATEWAY`.
    Add {
        vpc: String,
        #[arg(long)]
        route_table: String,
        /// The destination CIDR, e.g. 0.0.0.0/0.
        #[arg(long)]
        destination: String,
        #[arg(long)]
        target: String,
    },
    /// Remove the route for DESTINATION (`DeleteRoute`).
    Remove {
        vpc: String,
        #[arg(long)]
        route_table: String,
        #[arg(long)]
        destination: String,
    },
}

impl RouteCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            RouteCommand::List { vpc, route_table } => {
                let only = route_table.clone();
                let empty = match route_table {
                    Some(rt) => format!("no routes in route table {vpc}/{rt}"),
                    None => format!("no routes in VPC {vpc}"),
                };
                Call::get(vpc_path(vpc, "route-tables"), move |v| {
                    let mut t = Table::new(&["ROUTE_TABLE", "DESTINATION", "TARGET"]);
                    for rt in list(v, "route tables")? {
                        if only.as_ref().is_some_and(|o| rt["name"] != o.as_str()) {
                            continue;
                        }
                        for r in rt["routes"].as_array().into_iter().flatten() {
                            t.row(vec![
                                field(rt, "name"),
                                field(r, "destination"),
                                field(r, "target"),
                            ]);
                        }
                    }
                    Ok(t.render_or(&empty))
                })
            }
            RouteCommand::Add {
                vpc,
                route_table,
                destination,
                target,
            } => Call::op(
                "add_route",
                json!({"vpc": vpc, "route_table": route_table, "destination": destination,
                       "target": target}),
                format!("added route {destination} -> {target} to route table {vpc}/{route_table}"),
            ),
            RouteCommand::Remove {
                vpc,
                route_table,
                destination,
            } => Call::op(
                "remove_route",
                json!({"vpc": vpc, "route_table": route_table, "destination": destination}),
                format!("removed route {destination} from route table {vpc}/{route_table}"),
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// VPC's instances with their subnet, address, groups and EIP.
    List { vpc: String },
    /// Attach a new instance to VPC's SUBNET (`RunInstances`).
    Add {
        vpc: String,
        name: String,
        #[arg(long)]
        subnet: String,
        /// Its private address (default: the subnet's first free one).
        #[arg(long)]
        ip: Option<String>,
        /// `netns` (a namespace with a TUN device, the default) or `sim` (in process).
        #[arg(long, value_parser = ["netns", "sim"])]
        attach: Option<String>,
        /// A security group of its VPC (repeatable; default: the VPC's default group).
        #[arg(long = "security-group", value_name = "GROUP")]
        security_groups: Vec<String>,
        /// An allocated, unassociated EIP to associate 1:1.
        #[arg(long)]
        eip: Option<String>,
        /// The MTU of its interface.
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Detach an instance (its 1:1 EIP stays allocated).
    Remove { vpc: String, name: String },
}

impl InstanceCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            InstanceCommand::List { vpc } => {
                let empty = format!("no instances in VPC {vpc}");
                Call::get(vpc_path(vpc, "instances"), move |v| {
                    let keys = [
                        "name",
                        "subnet",
                        "ip",
                        "attach",
                        "security_groups",
                        "eip",
                        "eip_address",
                    ];
                    let mut t = Table::of_fields(&keys);
                    for x in list(v, "instances")? {
                        t.row(cols(x, &keys));
                    }
                    Ok(t.render_or(&empty))
                })
            }
            InstanceCommand::Add {
                vpc,
                name,
                subnet,
                ip,
                attach,
                security_groups,
                eip,
                mtu,
            } => Call::op(
                "add_instance",
                body(vec![
                    ("vpc", json!(vpc)),
                    ("name", json!(name)),
                    ("subnet", json!(subnet)),
                    ("ip", json!(ip)),
                    ("attach", json!(attach)),
                    ("security_groups", list_or_null(security_groups)),
                    ("eip", json!(eip)),
                    ("mtu", json!(mtu)),
                ]),
                format!("added instance {vpc}/{name}"),
            ),
            InstanceCommand::Remove { vpc, name } => Call::op(
                "remove_instance",
                json!({"vpc": vpc, "name": name}),
                format!("removed instance {vpc}/{name}"),
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EipCommand {
    /// Every EIP with its address and what it is associated with.
    List,
    /// Allocate EIP NAME with a public ADDRESS (`AllocateAddress`).
    Allocate {
        name: String,
        #[arg(long)]
        address: String,
    },
    /// Associate EIP 1:1 with an instance, or add it to a NAT gateway's pool
    /// (`AssociateAddress`).
    #[command(group(ArgGroup::new("target").required(true).args(["instance", "nat_gateway"])))]
    Associate {
        eip: String,
        /// `VPC/NAME`, or NAME with --vpc.
        #[arg(long)]
        instance: Option<String>,
        /// `VPC/NAME`, or NAME with --vpc.
        #[arg(long)]
        nat_gateway: Option<String>,
        /// The VPC of --instance or --nat-gateway when they name no VPC.
        #[arg(long)]
        vpc: Option<String>,
        /// Move the EIP even when it is associated with something else.
        #[arg(long)]
        allow_reassociation: bool,
    },
    /// Disassociate EIP from what it is bound to (`DisassociateAddress`).
    Disassociate { eip: String },
    /// Release EIP (`ReleaseAddress`; it must not be associated).
    Release { name: String },
}

impl EipCommand {
    pub(super) fn call(&self) -> Result<Call, String> {
        Ok(match self {
            EipCommand::List => Call::get("/v1/eips".into(), |v| {
                let mut t = Table::new(&["NAME", "ADDRESS", "ASSOCIATION"]);
                for x in list(v, "EIPs")? {
                    t.row(vec![
                        field(x, "name"),
                        field(x, "address"),
                        association(&x["association"]),
                    ]);
                }
                Ok(t.render_or("no EIPs"))
            }),
            EipCommand::Allocate { name, address } => Call::op(
                "allocate_eip",
                json!({"name": name, "address": address}),
                format!("allocated eip {name} ({address})"),
            ),
            EipCommand::Associate {
                eip,
                instance,
                nat_gateway,
                vpc,
                allow_reassociation,
            } => {
                let (key, flag, what, target) = match (instance, nat_gateway) {
                    (Some(i), _) => ("instance", "--instance", "", i),
                    (None, Some(g)) => ("nat_gateway", "--nat-gateway", "nat gateway ", g),
                    (None, None) => return Err("name --instance or --nat-gateway".into()),
                };
                let (vpc, name) = match vpc {
                    Some(v) => (v.clone(), target.clone()),
                    None => split_ref(flag, target)?,
                };
                let mut b = json!({"eip": eip, "vpc": vpc, key: name});
                if *allow_reassociation {
                    b["allow_reassociation"] = json!(true);
                }
                Call::op(
                    "associate_eip",
                    b,
                    format!("associated eip {eip} with {what}{vpc}/{name}"),
                )
            }
            EipCommand::Disassociate { eip } => Call::op(
                "disassociate_eip",
                json!({"eip": eip}),
                format!("disassociated eip {eip}"),
            ),
            EipCommand::Release { name } => Call::op(
                "release_eip",
                json!({"name": name}),
                format!("released eip {name}"),
            ),
        })
    }
}

/// `instance a/f1`, `nat-gateway a/egress` or `-`.
fn association(a: &Value) -> String {
    let vpc = field(a, "vpc");
    if a["instance"].is_string() {
        format!("instance {vpc}/{}", field(a, "instance"))
    } else if a["nat_gateway"].is_string() {
        format!("nat-gateway {vpc}/{}", field(a, "nat_gateway"))
    } else {
        cell(a)
    }
}

#[derive(Debug, Subcommand)]
pub enum NatGatewayCommand {
    /// VPC's NAT gateways with their subnet, address, EIPs and entry counts.
    List { vpc: String },
    /// Create NAT gateway NAME in SUBNET (`CreateNatGateway`).
    Add {
        vpc: String,
        name: String,
        #[arg(long)]
        subnet: String,
        /// Its private address (default: the subnet's first free one).
        #[arg(long)]
        ip: Option<String>,
        /// An allocated EIP it owns (repeatable).
        #[arg(long = "eip", value_name = "EIP")]
        eips: Vec<String>,
        #[command(flatten)]
        behaviour: Box<NatBehaviour>,
    },
    /// Delete a NAT gateway no route targets (its EIPs stay allocated).
    Remove { vpc: String, name: String },
}

impl NatGatewayCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            NatGatewayCommand::List { vpc } => {
                let empty = format!("no NAT gateways in VPC {vpc}");
                Call::get(vpc_path(vpc, "nat-gateways"), move |v| {
                    let mut t = Table::new(&["NAME", "SUBNET", "IP", "EIPS", "SNAT", "DNAT"]);
                    for x in list(v, "NAT gateways")? {
                        let mut row = cols(x, &["name", "subnet", "ip", "eips"]);
                        row.push(count(x, "snat"));
                        row.push(count(x, "dnat"));
                        t.row(row);
                    }
                    Ok(t.render_or(&empty))
                })
            }
            NatGatewayCommand::Add {
                vpc,
                name,
                subnet,
                ip,
                eips,
                behaviour,
            } => Call::op(
                "add_nat_gateway",
                body(
                    [
                        ("vpc", json!(vpc)),
                        ("name", json!(name)),
                        ("subnet", json!(subnet)),
                        ("ip", json!(ip)),
                        ("eips", list_or_null(eips)),
                    ]
                    .into_iter()
                    .chain(behaviour.fields())
                    .collect(),
                ),
                format!("added nat gateway {vpc}/{name}"),
            ),
            NatGatewayCommand::Remove { vpc, name } => Call::op(
                "remove_nat_gateway",
                json!({"vpc": vpc, "name": name}),
                format!("removed nat gateway {vpc}/{name}"),
            ),
        }
    }
}

/// How a new NAT gateway behaves, each overriding its profile (the topology file's keys; SNAT
/// and DNAT entries are added with `vpcd ctl snat add` / `dnat add`, timeouts with `apply`).
#[derive(Debug, Args)]
#[command(next_help_heading = "NAT behaviour")]
pub struct NatBehaviour {
    /// Preset of behaviours and timeouts (default `rfc`).
    #[arg(long, value_parser = ["rfc", "aws", "gcp", "alibaba"])]
    profile: Option<String>,
    /// Overrides the profile's mapping (RFC 4787).
    #[arg(long, value_parser = ["endpoint-independent", "address-and-port-dependent"])]
    mapping: Option<String>,
    /// Overrides the profile's filtering (RFC 4787).
    #[arg(long, value_parser = ["endpoint-independent", "address-dependent",
                                "address-and-port-dependent"])]
    filtering: Option<String>,
    /// External ports handed out, e.g. 1024-65535.
    #[arg(long)]
    port_range: Option<String>,
    /// Keep the instance's source port when it is free.
    #[arg(long, value_name = "BOOL")]
    port_preservation: Option<bool>,
    /// A block of ports reserved per instance (GCP's min_ports_per_vm).
    #[arg(long, value_name = "N")]
    ports_per_instance: Option<u16>,
    /// Hard upper bound on the connection table.
    #[arg(long, value_name = "N")]
    max_connections: Option<u32>,
    /// Upper bound on one instance's connections.
    #[arg(long, value_name = "N")]
    max_connections_per_instance: Option<u32>,
    /// Rate limit on one instance's new connections.
    #[arg(long, value_name = "N")]
    new_connections_per_second_per_instance: Option<u32>,
    /// Rate limit on one outside source's new inbound connections (default 5000).
    #[arg(long, value_name = "N")]
    new_connections_per_second_per_source: Option<u32>,
    /// Half-open inbound TCP connections one outside source may hold (default 1024).
    #[arg(long, value_name = "N")]
    half_open_connections_per_source: Option<u32>,
    /// Seconds a freed external port waits before another flow may use it.
    #[arg(long, value_name = "SECONDS")]
    port_reuse_delay: Option<u32>,
    /// When the table is full, drop a half-open or closing flow to make room.
    #[arg(long, value_name = "BOOL")]
    early_drop: Option<bool>,
    /// What a refused new flow gets.
    #[arg(long, value_parser = ["drop", "icmp"])]
    on_refuse: Option<String>,
    /// Answer a packet of an expired TCP flow with a RST.
    #[arg(long, value_name = "BOOL")]
    rst_on_expired: Option<bool>,
    /// Answer the outside's SYNs to DNAT rules with SYN cookies.
    #[arg(long, value_name = "BOOL")]
    syn_proxy: Option<bool>,
}

impl NatBehaviour {
    /// The body fields (`null` for what is not given: left out).
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("profile", json!(self.profile)),
            ("mapping", json!(self.mapping)),
            ("filtering", json!(self.filtering)),
            ("port_range", json!(self.port_range)),
            ("port_preservation", json!(self.port_preservation)),
            ("ports_per_instance", json!(self.ports_per_instance)),
            ("max_connections", json!(self.max_connections)),
            (
                "max_connections_per_instance",
                json!(self.max_connections_per_instance),
            ),
            (
                "new_connections_per_second_per_instance",
                json!(self.new_connections_per_second_per_instance),
            ),
            (
                "new_connections_per_second_per_source",
                json!(self.new_connections_per_second_per_source),
            ),
            (
                "half_open_connections_per_source",
                json!(self.half_open_connections_per_source),
            ),
            ("port_reuse_delay", json!(self.port_reuse_delay)),
            ("early_drop", json!(self.early_drop)),
            ("on_refuse", json!(self.on_refuse)),
            ("rst_on_expired", json!(self.rst_on_expired)),
            ("syn_proxy", json!(self.syn_proxy)),
        ]
    }
}

#[derive(Debug, Subcommand)]
pub enum SnatCommand {
    /// VPC's SNAT entries, one per row, by NAT gateway.
    List { vpc: String },
    /// Translate SOURCE's connections to the gateway's EIPs (`CreateSnatEntry`).
    Add {
        vpc: String,
        #[arg(long)]
        nat_gateway: String,
        /// A CIDR or an instance name.
        #[arg(long)]
        source: String,
        /// An EIP of the gateway to use (repeatable; default: all of them).
        #[arg(long = "eip", value_name = "EIP")]
        eips: Vec<String>,
    },
    /// Remove the SNAT entry for SOURCE.
    Remove {
        vpc: String,
        #[arg(long)]
        nat_gateway: String,
        #[arg(long)]
        source: String,
    },
}

impl SnatCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            SnatCommand::List { vpc } => {
                let empty = format!("no SNAT entries in VPC {vpc}");
                Call::get(vpc_path(vpc, "nat-gateways"), move |v| {
                    let mut t = Table::new(&["NAT_GATEWAY", "SOURCE", "EIPS"]);
                    for g in list(v, "NAT gateways")? {
                        for e in g["snat"].as_array().into_iter().flatten() {
                            let eips = match field(e, "eips").as_str() {
                                "-" => "(all)".to_string(),
                                some => some.to_string(),
                            };
                            t.row(vec![field(g, "name"), field(e, "source"), eips]);
                        }
                    }
                    Ok(t.render_or(&empty))
                })
            }
            SnatCommand::Add {
                vpc,
                nat_gateway,
                source,
                eips,
            } => {
                let pool = if eips.is_empty() {
                    "all its eips".to_string()
                } else {
                    eips.join(", ")
                };
                Call::op(
                    "add_snat",
                    body(vec![
                        ("vpc", json!(vpc)),
                        ("nat_gateway", json!(nat_gateway)),
                        ("source", json!(source)),
                        ("eips", list_or_null(eips)),
                    ]),
                    format!("added snat {source} -> {pool} on nat gateway {vpc}/{nat_gateway}"),
                )
            }
            SnatCommand::Remove {
                vpc,
                nat_gateway,
                source,
            } => Call::op(
                "remove_snat",
                json!({"vpc": vpc, "nat_gateway": nat_gateway, "source": source}),
                format!("removed snat {source} from nat gateway {vpc}/{nat_gateway}"),
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DnatCommand {
    /// VPC's DNAT entries (port forwards), one per row, by NAT gateway.
    List { vpc: String },
    /// Forward EIP's PORT/PROTOCOL to INSTANCE (`CreateForwardEntry`).
    Add {
        vpc: String,
        #[arg(long)]
        nat_gateway: String,
        #[arg(long)]
        eip: String,
        /// `tcp`, `udp`, or `any` (every port and protocol).
        #[arg(long, value_parser = ["tcp", "udp", "any"])]
        protocol: String,
        /// The EIP's port (required for tcp and udp, refused for any).
        #[arg(long)]
        port: Option<u16>,
        /// An instance of the VPC.
        #[arg(long)]
        instance: String,
        /// The instance's port (default: --port).
        #[arg(long)]
        instance_port: Option<u16>,
    },
    /// Remove the DNAT entry for EIP + PROTOCOL + PORT.
    Remove {
        vpc: String,
        #[arg(long)]
        nat_gateway: String,
        #[arg(long)]
        eip: String,
        #[arg(long, value_parser = ["tcp", "udp", "any"])]
        protocol: String,
        #[arg(long)]
        port: Option<u16>,
    },
}

impl DnatCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            DnatCommand::List { vpc } => {
                let empty = format!("no DNAT entries in VPC {vpc}");
                Call::get(vpc_path(vpc, "nat-gateways"), move |v| {
                    let keys = ["eip", "protocol", "port", "instance", "instance_port"];
                    let mut t = Table::new(&[
                        "NAT_GATEWAY",
                        "EIP",
                        "PROTOCOL",
                        "PORT",
                        "INSTANCE",
                        "INSTANCE_PORT",
                    ]);
                    for g in list(v, "NAT gateways")? {
                        for e in g["dnat"].as_array().into_iter().flatten() {
                            let mut row = vec![field(g, "name")];
                            row.extend(cols(e, &keys));
                            t.row(row);
                        }
                    }
                    Ok(t.render_or(&empty))
                })
            }
            DnatCommand::Add {
                vpc,
                nat_gateway,
                eip,
                protocol,
                port,
                instance,
                instance_port,
            } => Call::op(
                "add_dnat",
                body(vec![
                    ("vpc", json!(vpc)),
                    ("nat_gateway", json!(nat_gateway)),
                    ("eip", json!(eip)),
                    ("protocol", json!(protocol)),
                    ("port", json!(port)),
                    ("instance", json!(instance)),
                    ("instance_port", json!(instance_port)),
                ]),
                format!(
                    "added dnat {} -> {} on nat gateway {vpc}/{nat_gateway}",
                    forward(eip, *port, protocol),
                    match instance_port.or(*port) {
                        Some(p) => format!("{instance}:{p}"),
                        None => instance.clone(),
                    }
                ),
            ),
            DnatCommand::Remove {
                vpc,
                nat_gateway,
                eip,
                protocol,
                port,
            } => Call::op(
                "remove_dnat",
                body(vec![
                    ("vpc", json!(vpc)),
                    ("nat_gateway", json!(nat_gateway)),
                    ("eip", json!(eip)),
                    ("protocol", json!(protocol)),
                    ("port", json!(port)),
                ]),
                format!(
                    "removed dnat {} from nat gateway {vpc}/{nat_gateway}",
                    forward(eip, *port, protocol)
                ),
            ),
        }
    }
}

/// `web-ip:80/tcp`, or `web-ip/any`.
fn forward(eip: &str, port: Option<u16>, protocol: &str) -> String {
    match port {
        Some(p) => format!("{eip}:{p}/{protocol}"),
        None => format!("{eip}/{protocol}"),
    }
}
