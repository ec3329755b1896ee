//! Change operations: typed requests modelled on the cloud APIs, and how each edits the model.
//!
//! Every request is a plain struct with `Deserialize` and `deny_unknown_fields` (the HTTP layer
//! decodes JSON bodies into them with [`super::decode`]); its values use the model's own types
//! (`Addr`, `Cidr`, `PortRange`, ...), so a bad value gets the same message as in a file. A
//! request only edits a clone of the [`Topology`]; whether the result is valid is decided by the
//! file validation in [`super::ControlState::apply`], never here. What this module checks itself
//! is what the cloud checks before validating: that the things a request names exist
//! (`not_found`), that what it creates does not (`already_exists`), and that what it removes is
//! no longer used (`dependency_violation`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{ApiError, ChangeError, ErrorCode, decode};
use crate::topology::cidr::{Addr, Cidr};
use crate::topology::model::{
    AclAction, AclRule, Attach, DnatEntry, DnatProtocol, Eip, Instance, MAIN_ROUTE_TABLE,
    NetworkAcl, PortRange, Route, RouteTable, RouteTarget, RuleProtocol, SecurityGroup, SgRule,
    SnatEntry, TargetHost, Topology, Vpc,
};

/// Attach a new instance to a subnet (`RunInstances` / attach a function).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddInstance {
    pub vpc: String,
    pub name: String,
    pub subnet: String,
    /// `None`: the first free address of the subnet.
    #[serde(default)]
    pub ip: Option<Addr>,
    #[serde(default)]
    pub attach: Attach,
    /// Empty: the VPC's default group.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// A 1:1 EIP by name, allocated and unbound.
    #[serde(default)]
    pub eip: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// Detach an instance. Refused while a DNAT or SNAT entry or a probe names it; its 1:1 EIP is
/// disassociated with it (and stays allocated), as when a cloud instance is terminated.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveInstance {
    pub vpc: String,
    pub name: String,
}

/// Allocate an EIP (`AllocateAddress`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateEip {
    pub name: String,
    pub address: Addr,
}

/// Release an EIP. Refused while it is associated or owned by a NAT gateway.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseEip {
    pub name: String,
}

/// Associate an EIP (`AssociateAddress`) 1:1 with an instance, or with a NAT gateway (which
/// adds it to the gateway's `eips`: its SNAT pool and what its DNAT entries may use). Name
/// exactly one of `instance` and `nat_gateway`. Refused when the EIP is bound to something
/// else, or the instance already has another EIP: disassociate first. Associating an EIP with
/// what it is already bound to changes nothing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssociateEip {
    pub eip: String,
    pub vpc: String,
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub nat_gateway: Option<String>,
}

/// Disassociate an EIP from the instance or NAT gateway it is bound to
/// (`DisassociateAddress`). From a gateway, refused while a DNAT or SNAT entry names it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DisassociateEip {
    pub eip: String,
}

/// Add a DNAT entry (port forward) to a NAT gateway (`CreateForwardEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddDnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub eip: String,
    pub protocol: DnatProtocol,
    /// Required for tcp/udp, refused for `any`.
    #[serde(default)]
    pub port: Option<u16>,
    pub instance: String,
    #[serde(default)]
    pub instance_port: Option<u16>,
}

/// Remove the DNAT entry for `eip` + `protocol` + `port` (`port` absent for `any`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveDnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub eip: String,
    pub protocol: DnatProtocol,
    #[serde(default)]
    pub port: Option<u16>,
}

/// Add an SNAT entry: `source` (a CIDR or an instance name) -> EIP pool (`CreateSnatEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddSnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub source: String,
    /// Empty: all the gateway's EIPs.
    #[serde(default)]
    pub eips: Vec<String>,
}

/// Remove the SNAT entry for `source`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveSnat {
    pub vpc: String,
    pub nat_gateway: String,
    pub source: String,
}

/// A security-group rule as requests write it (the model's `SgRule` without spans).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

/// Delete a security group. Refused while an instance is in it or another group's rule names
/// it as `sg:NAME`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveSecurityGroup {
    pub vpc: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SgDirection {
    Ingress,
    Egress,
}

/// Add a rule to a group (`AuthorizeSecurityGroupIngress`/`Egress`). A group whose egress is
/// implicit (all allowed) first gets the explicit rule `all` to `0.0.0.0/0`, so adding an egress
/// rule never takes egress away, as in AWS where that rule is visible.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AclDirection {
    Inbound,
    Outbound,
}

/// Add a numbered rule to a network ACL (`CreateNetworkAclEntry`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveAclRule {
    pub vpc: String,
    pub network_acl: String,
    pub direction: AclDirection,
    pub rule: u16,
}

/// Add a route (`CreateRoute`). Naming the `main` table when the VPC has only the implicit one
/// creates it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddRoute {
    pub vpc: String,
    pub route_table: String,
    pub destination: Cidr,
    pub target: RouteTarget,
}

/// Remove the route for `destination` (`DeleteRoute`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRoute {
    pub vpc: String,
    pub route_table: String,
    pub destination: Cidr,
}

/// Any change the control core applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    AddInstance(AddInstance),
    RemoveInstance(RemoveInstance),
    AllocateEip(AllocateEip),
    ReleaseEip(ReleaseEip),
    AssociateEip(AssociateEip),
    DisassociateEip(DisassociateEip),
    AddDnat(AddDnat),
    RemoveDnat(RemoveDnat),
    AddSnat(AddSnat),
    RemoveSnat(RemoveSnat),
    AddSecurityGroup(AddSecurityGroup),
    RemoveSecurityGroup(RemoveSecurityGroup),
    AddSgRule(AddSgRule),
    RemoveSgRule(RemoveSgRule),
    AddAclRule(AddAclRule),
    RemoveAclRule(RemoveAclRule),
    AddRoute(AddRoute),
    RemoveRoute(RemoveRoute),
}

macro_rules! change_from {
    ($($v:ident),*) => {$(
        impl From<$v> for Change {
            fn from(r: $v) -> Self {
                Change::$v(r)
            }
        }
    )*};
}
change_from!(
    AddInstance,
    RemoveInstance,
    AllocateEip,
    ReleaseEip,
    AssociateEip,
    DisassociateEip,
    AddDnat,
    RemoveDnat,
    AddSnat,
    RemoveSnat,
    AddSecurityGroup,
    RemoveSecurityGroup,
    AddSgRule,
    RemoveSgRule,
    AddAclRule,
    RemoveAclRule,
    AddRoute,
    RemoveRoute
);

impl Change {
    /// Every operation's name, as [`Change::decode`] takes it and [`Change::op`] returns it.
    pub const OPS: [&'static str; 18] = [
        "add_instance",
        "remove_instance",
        "allocate_eip",
        "release_eip",
        "associate_eip",
        "disassociate_eip",
        "add_dnat",
        "remove_dnat",
        "add_snat",
        "remove_snat",
        "add_security_group",
        "remove_security_group",
        "add_sg_rule",
        "remove_sg_rule",
        "add_acl_rule",
        "remove_acl_rule",
        "add_route",
        "remove_route",
    ];

    /// Decodes the JSON body of operation `op` (one of [`Change::OPS`]), for an API that routes
    /// by operation name; errors as [`super::decode`]'s.
    pub fn decode(op: &str, body: &[u8]) -> Result<Change, ChangeError> {
        fn d<T: DeserializeOwned + Into<Change>>(body: &[u8]) -> Result<Change, ChangeError> {
            decode::<T>(body).map(Into::into)
        }
        match op {
            "add_instance" => d::<AddInstance>(body),
            "remove_instance" => d::<RemoveInstance>(body),
            "allocate_eip" => d::<AllocateEip>(body),
            "release_eip" => d::<ReleaseEip>(body),
            "associate_eip" => d::<AssociateEip>(body),
            "disassociate_eip" => d::<DisassociateEip>(body),
            "add_dnat" => d::<AddDnat>(body),
            "remove_dnat" => d::<RemoveDnat>(body),
            "add_snat" => d::<AddSnat>(body),
            "remove_snat" => d::<RemoveSnat>(body),
            "add_security_group" => d::<AddSecurityGroup>(body),
            "remove_security_group" => d::<RemoveSecurityGroup>(body),
            "add_sg_rule" => d::<AddSgRule>(body),
            "remove_sg_rule" => d::<RemoveSgRule>(body),
            "add_acl_rule" => d::<AddAclRule>(body),
            "remove_acl_rule" => d::<RemoveAclRule>(body),
            "add_route" => d::<AddRoute>(body),
            "remove_route" => d::<RemoveRoute>(body),
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
        let i = match self {
            Change::AddInstance(_) => 0,
            Change::RemoveInstance(_) => 1,
            Change::AllocateEip(_) => 2,
            Change::ReleaseEip(_) => 3,
            Change::AssociateEip(_) => 4,
            Change::DisassociateEip(_) => 5,
            Change::AddDnat(_) => 6,
            Change::RemoveDnat(_) => 7,
            Change::AddSnat(_) => 8,
            Change::RemoveSnat(_) => 9,
            Change::AddSecurityGroup(_) => 10,
            Change::RemoveSecurityGroup(_) => 11,
            Change::AddSgRule(_) => 12,
            Change::RemoveSgRule(_) => 13,
            Change::AddAclRule(_) => 14,
            Change::RemoveAclRule(_) => 15,
            Change::AddRoute(_) => 16,
            Change::RemoveRoute(_) => 17,
        };
        Change::OPS[i]
    }
}

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

fn to_rule(r: &SgRuleSpec) -> SgRule {
    SgRule {
        protocol: sp(r.protocol),
        ports: r.ports.map(sp),
        icmp_type: r.icmp_type.map(sp),
        peer: sp(r.peer.clone()),
        description: r.description.clone(),
    }
}

impl Change {
    /// Edits `topo` as the request says. Returns the key path of the element the request wrote
    /// (so validation errors inside it name the request's field), or `None`.
    ///
    /// On error `topo` may be partly edited: callers pass a clone.
    pub(crate) fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        match self {
            Change::AddInstance(r) => {
                let (_, vpc) = vpc_mut(topo, &r.vpc)?;
                if vpc.instance.iter().any(|i| i.name.get_ref() == &r.name) {
                    return Err(already_exists(
                        "instance",
                        &r.name,
                        "name",
                        "choose another name, or remove the instance first",
                    ));
                }
                vpc.instance.push(Instance {
                    name: sp(r.name.clone()),
                    subnet: sp(r.subnet.clone()),
                    ip: r.ip.map(sp),
                    attach: r.attach,
                    security_groups: r.security_groups.iter().cloned().map(sp).collect(),
                    eip: r.eip.clone().map(sp),
                    mtu: r.mtu.map(sp),
                });
                Ok(Some(format!("vpc[{}].instance[{}]", r.vpc, r.name)))
            }
            Change::RemoveInstance(r) => remove_instance(topo, r).map(|()| None),
            Change::AllocateEip(r) => {
                if topo.eip.iter().any(|e| e.name.get_ref() == &r.name) {
                    return Err(already_exists(
                        "EIP",
                        &r.name,
                        "name",
                        "choose another name, or release the EIP first",
                    ));
                }
                topo.eip.push(Eip {
                    name: sp(r.name.clone()),
                    address: sp(r.address),
                });
                Ok(Some(format!("eip[{}]", r.name)))
            }
            Change::ReleaseEip(r) => release_eip(topo, r).map(|()| None),
            Change::AssociateEip(r) => associate_eip(topo, r),
            Change::DisassociateEip(r) => disassociate_eip(topo, r).map(|()| None),
            Change::AddDnat(r) => {
                let (_, vpc) = vpc_mut(topo, &r.vpc)?;
                let (_, gw) = find(
                    &mut vpc.nat_gateway,
                    |g| &g.name,
                    &r.nat_gateway,
                    "NAT gateway",
                    "nat_gateway",
                )?;
                gw.dnat.push(DnatEntry {
                    eip: sp(r.eip.clone()),
                    protocol: sp(r.protocol),
                    port: r.port.map(sp),
                    instance: sp(r.instance.clone()),
                    instance_port: r.instance_port.map(sp),
                });
                Ok(Some(format!(
                    "vpc[{}].nat_gateway[{}].dnat[{}]",
                    r.vpc,
                    r.nat_gateway,
                    gw.dnat.len() - 1
                )))
            }
            Change::RemoveDnat(r) => {
                let (_, vpc) = vpc_mut(topo, &r.vpc)?;
                let (_, gw) = find(
                    &mut vpc.nat_gateway,
                    |g| &g.name,
                    &r.nat_gateway,
                    "NAT gateway",
                    "nat_gateway",
                )?;
                let at = gw.dnat.iter().position(|d| {
                    d.eip.get_ref() == &r.eip
                        && *d.protocol.get_ref() == r.protocol
                        && d.port.as_ref().map(|p| *p.get_ref()) == r.port
                });
                let Some(at) = at else {
                    return Err(ApiError::new(
                        ErrorCode::NotFound,
                        format!(
                            "NAT gateway `{}` has no DNAT entry for EIP `{}` {}",
                            r.nat_gateway,
                            r.eip,
                            dnat_key(r.protocol, r.port)
                        ),
                        "eip",
                        "list the gateway's DNAT entries and name one by eip, protocol and port",
                    ));
                };
                gw.dnat.remove(at);
                Ok(None)
            }
            Change::AddSnat(r) => {
                let (_, vpc) = vpc_mut(topo, &r.vpc)?;
                let (_, gw) = find(
                    &mut vpc.nat_gateway,
                    |g| &g.name,
                    &r.nat_gateway,
                    "NAT gateway",
                    "nat_gateway",
                )?;
                if gw.snat.iter().any(|s| s.source.get_ref() == &r.source) {
                    return Err(already_exists(
                        "SNAT entry for source",
                        &r.source,
                        "source",
                        "remove the existing entry first to change its EIPs",
                    ));
                }
                gw.snat.push(SnatEntry {
                    source: sp(r.source.clone()),
                    eips: r.eips.iter().cloned().map(sp).collect(),
                });
                Ok(Some(format!(
                    "vpc[{}].nat_gateway[{}].snat[{}]",
                    r.vpc,
                    r.nat_gateway,
                    gw.snat.len() - 1
                )))
            }
            Change::RemoveSnat(r) => {
                let (_, vpc) = vpc_mut(topo, &r.vpc)?;
                let (_, gw) = find(
                    &mut vpc.nat_gateway,
                    |g| &g.name,
                    &r.nat_gateway,
                    "NAT gateway",
                    "nat_gateway",
                )?;
                let Some(at) = gw.snat.iter().position(|s| s.source.get_ref() == &r.source) else {
                    return Err(ApiError::new(
                        ErrorCode::NotFound,
                        format!(
                            "NAT gateway `{}` has no SNAT entry for source `{}`",
                            r.nat_gateway, r.source
                        ),
                        "source",
                        "name the entry by its source exactly as it was added",
                    ));
                };
                gw.snat.remove(at);
                Ok(None)
            }
            Change::AddSecurityGroup(r) => {
                let (_, vpc) = vpc_mut(topo, &r.vpc)?;
                if vpc
                    .security_group
                    .iter()
                    .any(|g| g.name.get_ref() == &r.name)
                {
                    return Err(already_exists(
                        "security group",
                        &r.name,
                        "name",
                        "add rules to the existing group, or choose another name",
                    ));
                }
                vpc.security_group.push(SecurityGroup {
                    name: sp(r.name.clone()),
                    ingress: r.ingress.iter().map(to_rule).collect(),
                    egress: r.egress.as_ref().map(|e| e.iter().map(to_rule).collect()),
                });
                Ok(Some(format!("vpc[{}].security_group[{}]", r.vpc, r.name)))
            }
            Change::RemoveSecurityGroup(r) => remove_security_group(topo, r).map(|()| None),
            Change::AddSgRule(r) => {
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
                let (key, list) = match r.direction {
                    SgDirection::Ingress => ("ingress", &mut group.ingress),
                    SgDirection::Egress => (
                        "egress",
                        group.egress.get_or_insert_with(|| {
                            vec![to_rule(&SgRuleSpec {
                                protocol: RuleProtocol::All,
                                ports: None,
                                icmp_type: None,
                                peer: "0.0.0.0/0".into(),
                                description: Some("all egress (was implicit)".into()),
                            })]
                        }),
                    ),
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
                    "vpc[{}].security_group[{}].{key}[{}]",
                    r.vpc,
                    r.group,
                    list.len() - 1
                )))
            }
            Change::RemoveSgRule(r) => {
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
                            match r.direction {
                                SgDirection::Ingress => "ingress",
                                SgDirection::Egress => "egress",
                            },
                            describe_sg_rule(&wanted)
                        ),
                        "",
                        "name the rule by protocol, ports, icmp_type and peer exactly as it was added",
                    )),
                }
            }
            Change::AddAclRule(r) => {
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
                list.push(AclRule {
                    rule: sp(r.rule),
                    action: sp(r.action),
                    protocol: sp(r.protocol),
                    ports: r.ports.map(sp),
                    cidr: sp(r.cidr),
                });
                Ok(Some(format!(
                    "vpc[{}].network_acl[{}].{key}[{}]",
                    r.vpc,
                    r.network_acl,
                    list.len() - 1
                )))
            }
            Change::RemoveAclRule(r) => {
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
            Change::AddRoute(r) => {
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
                let (_, table) = find(
                    &mut vpc.route_table,
                    |t| &t.name,
                    &r.route_table,
                    "route table",
                    "route_table",
                )?;
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
            Change::RemoveRoute(r) => {
                let (_, vpc) = vpc_mut(topo, &r.vpc)?;
                let (_, table) = find(
                    &mut vpc.route_table,
                    |t| &t.name,
                    &r.route_table,
                    "route table",
                    "route_table",
                )?;
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
    }
}

fn dnat_key(protocol: DnatProtocol, port: Option<u16>) -> String {
    match (protocol, port) {
        (DnatProtocol::Any, _) => "(protocol any)".to_string(),
        (DnatProtocol::Tcp, Some(p)) => format!("tcp port {p}"),
        (DnatProtocol::Udp, Some(p)) => format!("udp port {p}"),
        (DnatProtocol::Tcp, None) => "tcp without a port".to_string(),
        (DnatProtocol::Udp, None) => "udp without a port".to_string(),
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

fn remove_instance(topo: &mut Topology, r: &RemoveInstance) -> Result<(), ApiError> {
    let (_, vpc) = vpc_mut(topo, &r.vpc)?;
    let (at, _) = find(&mut vpc.instance, |i| &i.name, &r.name, "instance", "name")?;
    for gw in &vpc.nat_gateway {
        let gname = gw.name.get_ref();
        if let Some(d) = gw.dnat.iter().find(|d| d.instance.get_ref() == &r.name) {
            return Err(in_use(
                format!(
                    "instance `{}` is the target of a DNAT entry of NAT gateway `{gname}` (EIP `{}`)",
                    r.name,
                    d.eip.get_ref()
                ),
                "remove the DNAT entry first",
            ));
        }
        if gw.snat.iter().any(|s| s.source.get_ref() == &r.name) {
            return Err(in_use(
                format!(
                    "instance `{}` is the source of an SNAT entry of NAT gateway `{gname}`",
                    r.name
                ),
                "remove the SNAT entry first",
            ));
        }
    }
    vpc.instance.remove(at);
    let vpc_name = r.vpc.as_str();
    let named = format!("{vpc_name}/{}", r.name);
    for p in &topo.probe {
        let to_it = matches!(&p.to.get_ref().host,
            TargetHost::Named { scope, name } if scope == vpc_name && name == &r.name);
        if p.from.get_ref() == &named || to_it {
            let label = p
                .name
                .clone()
                .unwrap_or_else(|| format!("{} -> {}", p.from.get_ref(), p.to.get_ref()));
            return Err(in_use(
                format!("instance `{}` is used by the probe `{label}`", r.name),
                "probes come from the topology file; remove the probe there and restart, or keep the instance",
            ));
        }
    }
    Ok(())
}

fn release_eip(topo: &mut Topology, r: &ReleaseEip) -> Result<(), ApiError> {
    let (at, _) = find(&mut topo.eip, |e| &e.name, &r.name, "EIP", "name")?;
    for vpc in &topo.vpc {
        let vname = vpc.name.get_ref();
        if let Some(i) = vpc
            .instance
            .iter()
            .find(|i| i.eip.as_ref().is_some_and(|e| e.get_ref() == &r.name))
        {
            return Err(in_use(
                format!(
                    "EIP `{}` is associated with instance `{vname}/{}`",
                    r.name,
                    i.name.get_ref()
                ),
                "disassociate it first",
            ));
        }
        for gw in &vpc.nat_gateway {
            let uses = gw.eips.iter().any(|e| e.get_ref() == &r.name)
                || gw.dnat.iter().any(|d| d.eip.get_ref() == &r.name)
                || gw
                    .snat
                    .iter()
                    .any(|s| s.eips.iter().any(|e| e.get_ref() == &r.name));
            if uses {
                return Err(in_use(
                    format!(
                        "EIP `{}` belongs to NAT gateway `{vname}/{}`",
                        r.name,
                        gw.name.get_ref()
                    ),
                    "disassociate it from the gateway first (after removing the SNAT and DNAT entries that name it)",
                ));
            }
        }
    }
    topo.eip.remove(at);
    Ok(())
}

fn associate_eip(topo: &mut Topology, r: &AssociateEip) -> Result<Option<String>, ApiError> {
    find(&mut topo.eip, |e| &e.name, &r.eip, "EIP", "eip")?;
    let target = match (&r.instance, &r.nat_gateway) {
        (Some(i), None) => (i.as_str(), false),
        (None, Some(g)) => (g.as_str(), true),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidInput,
                "name exactly one of `instance` and `nat_gateway`",
                if r.instance.is_some() {
                    "nat_gateway"
                } else {
                    "instance"
                },
                "an EIP is bound to one instance (1:1) or to one NAT gateway",
            ));
        }
    };
    // Already bound somewhere else?
    for vpc in &topo.vpc {
        let here = vpc.name.get_ref() == &r.vpc;
        for i in &vpc.instance {
            let same = here && !target.1 && i.name.get_ref() == target.0;
            if !same && i.eip.as_ref().is_some_and(|e| e.get_ref() == &r.eip) {
                return Err(in_use(
                    format!(
                        "EIP `{}` is already associated with instance `{}/{}`",
                        r.eip,
                        vpc.name.get_ref(),
                        i.name.get_ref()
                    ),
                    "disassociate it first, then associate it here",
                ));
            }
        }
        for gw in &vpc.nat_gateway {
            let same = here && target.1 && gw.name.get_ref() == target.0;
            if !same && gw.eips.iter().any(|e| e.get_ref() == &r.eip) {
                return Err(in_use(
                    format!(
                        "EIP `{}` is already associated with NAT gateway `{}/{}`",
                        r.eip,
                        vpc.name.get_ref(),
                        gw.name.get_ref()
                    ),
                    "disassociate it from the gateway first, or allocate another EIP",
                ));
            }
        }
    }
    let (_, vpc) = vpc_mut(topo, &r.vpc)?;
    if target.1 {
        let (_, gw) = find(
            &mut vpc.nat_gateway,
            |g| &g.name,
            target.0,
            "NAT gateway",
            "nat_gateway",
        )?;
        if !gw.eips.iter().any(|e| e.get_ref() == &r.eip) {
            gw.eips.push(sp(r.eip.clone()));
        }
        return Ok(None);
    }
    let (_, inst) = find(
        &mut vpc.instance,
        |i| &i.name,
        target.0,
        "instance",
        "instance",
    )?;
    match &inst.eip {
        Some(e) if e.get_ref() == &r.eip => {}
        Some(e) => {
            return Err(in_use(
                format!("instance `{}` already has EIP `{}`", target.0, e.get_ref()),
                "disassociate that EIP first",
            ));
        }
        None => inst.eip = Some(sp(r.eip.clone())),
    }
    Ok(Some(format!("vpc[{}].instance[{}]", r.vpc, target.0)))
}

fn disassociate_eip(topo: &mut Topology, r: &DisassociateEip) -> Result<(), ApiError> {
    find(&mut topo.eip, |e| &e.name, &r.eip, "EIP", "eip")?;
    for vpc in &mut topo.vpc {
        let vname = vpc.name.get_ref().clone();
        for inst in &mut vpc.instance {
            if inst.eip.as_ref().is_some_and(|e| e.get_ref() == &r.eip) {
                inst.eip = None;
                return Ok(());
            }
        }
        for gw in &mut vpc.nat_gateway {
            let Some(at) = gw.eips.iter().position(|e| e.get_ref() == &r.eip) else {
                continue;
            };
            let gname = gw.name.get_ref();
            if gw.dnat.iter().any(|d| d.eip.get_ref() == &r.eip) {
                return Err(in_use(
                    format!(
                        "EIP `{}` is used by a DNAT entry of NAT gateway `{vname}/{gname}`",
                        r.eip
                    ),
                    "remove the DNAT entries for this EIP first",
                ));
            }
            if gw
                .snat
                .iter()
                .any(|s| s.eips.iter().any(|e| e.get_ref() == &r.eip))
            {
                return Err(in_use(
                    format!(
                        "EIP `{}` is in an SNAT entry's pool of NAT gateway `{vname}/{gname}`",
                        r.eip
                    ),
                    "remove it from the SNAT entries first",
                ));
            }
            gw.eips.remove(at);
            return Ok(());
        }
    }
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("EIP `{}` is not associated", r.eip),
        "eip",
        "nothing to disassociate",
    ))
}

fn remove_security_group(topo: &mut Topology, r: &RemoveSecurityGroup) -> Result<(), ApiError> {
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
    Ok(())
}
