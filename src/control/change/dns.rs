//! DNS: private zones and their records, which VPCs a zone is answered in, the simulated
//! internet's public zones (`[[internet.zone]]`) and their records, DNS Firewall domain lists
//! and rules, and egress allowed by name (Route 53's `CreateHostedZone`, `DeleteHostedZone`,
//! `ChangeResourceRecordSets`, `AssociateVPCWithHostedZone`, `DisassociateVPCFromHostedZone`;
//! DNS Firewall's `CreateFirewallDomainList`, `DeleteFirewallDomainList`,
//! `UpdateFirewallDomains`, `CreateFirewallRule`, `DeleteFirewallRule`).
//!
//! Zones are named by their apex as the file writes it; a request may write it with another
//! case or a final dot. What a record's value means, whether a CNAME stands alone, whether the
//! zone names at least one VPC: the file validator decides (`topology/validate/dns.rs`), so an
//! API refusal reads as `vpcd check`'s.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Edit, already_exists, find, not_found, sp};
use crate::control::error::{ApiError, ErrorCode};
use crate::dns::names::domain_key;
use crate::topology::model::{
    BlockResponseKind, DnsDomainList, DnsFirewallAction, DnsFirewallRule, EgressByName, Internet,
    RecordKind, Topology, Zone, ZoneRecord,
};

/// A zone record as requests write it (the model's `ZoneRecord` without spans).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordSpec {
    /// Relative to the zone (`db` for `db.corp.example`), or `@` for the apex.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordKind,
    /// Zone-file syntax: `10.0.1.5` (A), `db.corp.example` (CNAME), `10 mail.corp.example`
    /// (MX), `0 5 5432 db.corp.example` (SRV), text (TXT).
    pub value: String,
    /// Seconds (default 300).
    #[serde(default)]
    pub ttl: Option<u32>,
}

impl RecordSpec {
    fn to_model(&self) -> ZoneRecord {
        ZoneRecord {
            name: sp(self.name.clone()),
            kind: sp(self.kind),
            value: sp(self.value.clone()),
            ttl: self.ttl.map(sp),
        }
    }
}

/// Create a private zone (`CreateHostedZone` with a VPC): answered by the resolvers of the VPCs
/// it names (at least one), optionally with records.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddZone {
    /// The apex, like `corp.example`.
    pub name: String,
    pub vpcs: Vec<String>,
    #[serde(default)]
    pub records: Vec<RecordSpec>,
}

/// Delete a private zone with its records (`DeleteHostedZone`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveZone {
    pub name: String,
}

/// Add a record to a private zone (`ChangeResourceRecordSets` with `CREATE`; the same body adds
/// one to a public zone with `add_public_zone_record`). Refused when the zone already has the
/// same record (name, type and value).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddZoneRecord {
    pub zone: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordKind,
    pub value: String,
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// Remove records of a private zone (`ChangeResourceRecordSets` with `DELETE`; the same body for a
/// public zone with `remove_public_zone_record`): those with this name and type, or only the one
/// with `value` when given.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveZoneRecord {
    pub zone: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordKind,
    #[serde(default)]
    pub value: Option<String>,
}

/// Answer a private zone in one more VPC (`AssociateVPCWithHostedZone`). Associating a VPC that
/// already sees the zone changes nothing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssociateZone {
    pub zone: String,
    pub vpc: String,
}

/// Stop answering a private zone in a VPC (`DisassociateVPCFromHostedZone`). The zone's last
/// VPC cannot go (a private zone names at least one): remove the zone instead.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisassociateZone {
    pub zone: String,
    pub vpc: String,
}

/// Create a public zone of the simulated internet (`[[internet.zone]]`): answered by every VPC's
/// resolver (unless a private zone of that VPC hides it), optionally with records.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPublicZone {
    /// The apex, like `example.com`.
    pub name: String,
    #[serde(default)]
    pub records: Vec<RecordSpec>,
}

/// Delete a public zone with its records.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemovePublicZone {
    pub name: String,
}

/// Add a record to a public zone: the body of `add_zone_record`, on a public zone.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(transparent)]
pub struct AddPublicZoneRecord(pub AddZoneRecord);

/// Remove records of a public zone: the body of `remove_zone_record`, on a public zone.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(transparent)]
pub struct RemovePublicZoneRecord(pub RemoveZoneRecord);

/// Create a DNS Firewall domain list (`CreateFirewallDomainList`), optionally with domains:
/// rules reference it with `domain_list`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDnsDomainList {
    /// Unique among the lists.
    pub name: String,
    /// `bad.example` (that name) or `*.bad.example` (every name below it).
    #[serde(default)]
    pub domains: Vec<String>,
}

/// Delete a DNS Firewall domain list (`DeleteFirewallDomainList`); refused while a rule
/// references it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveDnsDomainList {
    pub name: String,
}

/// How [`UpdateDnsDomainList`] changes a list (`UpdateFirewallDomains`'s `Operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DomainListOperation {
    /// Adds the domains the list does not hold yet.
    Add,
    /// Removes the domains (each must be in the list).
    Remove,
    /// The list holds exactly these domains afterwards.
    Replace,
}

/// Change the domains of a DNS Firewall domain list (`UpdateFirewallDomains`): the rules on it
/// match the new domains from the next query on.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDnsDomainList {
    pub name: String,
    pub operation: DomainListOperation,
    pub domains: Vec<String>,
}

/// Add a DNS Firewall rule (`CreateFirewallRule` with its domain list): applied by the resolvers
/// of the VPCs it names, after the rules they already have.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDnsFirewallRule {
    /// Unique among the rules; named in query logs.
    pub name: String,
    pub vpcs: Vec<String>,
    /// `bad.example` (that name) or `*.bad.example` (every name below it); or, instead,
    /// `domain_list`.
    #[serde(default)]
    pub domains: Vec<String>,
    /// A DNS Firewall domain list's name: the rule matches its domains, as they change.
    #[serde(default)]
    pub domain_list: Option<String>,
    pub action: DnsFirewallAction,
    /// With `action = "block"`: what the query gets (default `nxdomain`).
    #[serde(default)]
    pub block_response: Option<BlockResponseKind>,
    /// With `block_response = "override"`: the CNAME target answered instead.
    #[serde(default)]
    pub block_override: Option<String>,
    /// The override's TTL in seconds (default 300).
    #[serde(default)]
    pub block_override_ttl: Option<u32>,
}

/// Remove a DNS Firewall rule (`DeleteFirewallRule`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveDnsFirewallRule {
    pub name: String,
}

/// Set the names a VPC's instances may reach (`[[egress_by_name]]` for this VPC): the addresses
/// its resolver answers for them become allowed destinations for the answers' TTLs. An empty
/// list removes the VPC from egress by name (its `egress_allow` alone decides again).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEgressByName {
    pub vpc: String,
    /// `api.payments.example:443`, `*.payments.example:8000-8099`, `api.example`.
    pub allow: Vec<String>,
}

/// Which zones a request is about: the private ones (`[[zone]]`) or the simulated internet's
/// (`[[internet.zone]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zones {
    Private,
    Public,
}

impl Zones {
    fn what(self) -> &'static str {
        match self {
            Zones::Private => "private zone",
            Zones::Public => "public zone",
        }
    }

    /// The zones of `topo` (an `[internet]` section is made for a public one if missing).
    fn of(self, topo: &mut Topology) -> &mut Vec<Zone> {
        match self {
            Zones::Private => &mut topo.zone,
            Zones::Public => {
                &mut topo
                    .internet
                    .get_or_insert_with(|| Internet {
                        cidr: None,
                        host: Vec::new(),
                        uplink: None,
                        resolvers: Vec::new(),
                        zone: Vec::new(),
                    })
                    .zone
            }
        }
    }

    /// The key path of a zone (what validation errors inside it are reported under).
    fn path(self, zone: &Zone) -> String {
        let prefix = match self {
            Zones::Private => "zone",
            Zones::Public => "internet.zone",
        };
        format!("{prefix}[{}]", zone.name.get_ref())
    }

    /// The `vpcd ctl` command that lists a zone's records.
    fn show_hint(self) -> &'static str {
        match self {
            Zones::Private => "`vpcd ctl dns zone show ZONE` lists its records",
            Zones::Public => "`vpcd ctl dns zone show --public ZONE` lists its records",
        }
    }
}

/// The zone `name` of `which`, with its index.
fn zone_mut<'t>(
    topo: &'t mut Topology,
    which: Zones,
    name: &str,
    field: &str,
) -> Result<(usize, &'t mut Zone), ApiError> {
    let key = domain_key(name);
    let zones = which.of(topo);
    match zones
        .iter()
        .position(|z| domain_key(z.name.get_ref()) == key)
    {
        Some(i) => Ok((i, &mut zones[i])),
        None => Err(not_found(
            which.what(),
            name,
            field,
            zones.iter().map(|z| z.name.get_ref().as_str()).collect(),
        )),
    }
}

/// Creates zone `name` of `which` with `vpcs` and `records`; returns its key path.
fn add_zone(
    topo: &mut Topology,
    which: Zones,
    name: &str,
    vpcs: &[String],
    records: &[RecordSpec],
) -> Result<Option<String>, ApiError> {
    let key = domain_key(name);
    let zones = which.of(topo);
    if zones.iter().any(|z| domain_key(z.name.get_ref()) == key) {
        let hint = match which {
            Zones::Private => {
                "add records to it with add_zone_record, or associate it with more VPCs"
            }
            Zones::Public => "add records to it with add_public_zone_record",
        };
        return Err(already_exists(which.what(), name, "name", hint));
    }
    let zone = Zone {
        name: sp(name.to_string()),
        vpcs: vpcs.iter().cloned().map(sp).collect(),
        record: records.iter().map(RecordSpec::to_model).collect(),
    };
    let path = which.path(&zone);
    zones.push(zone);
    // Errors in the records name the request's `record[i]`.
    Ok(Some(path))
}

/// Removes zone `name` of `which`, and a public zone's `[internet]` section with it when
/// nothing else is left there (it was made for the zone).
fn remove_zone(topo: &mut Topology, which: Zones, name: &str) -> Result<Option<String>, ApiError> {
    let (at, _) = zone_mut(topo, which, name, "name")?;
    which.of(topo).remove(at);
    let empty = topo.internet.as_ref().is_some_and(|i| {
        i.cidr.is_none()
            && i.host.is_empty()
            && i.uplink.is_none()
            && i.resolvers.is_empty()
            && i.zone.is_empty()
    });
    if which == Zones::Public && empty {
        topo.internet = None;
    }
    Ok(None)
}

/// Adds `spec` to zone `zone` of `which`; refused when the zone has the same record.
fn add_record(
    topo: &mut Topology,
    which: Zones,
    zone: &str,
    spec: RecordSpec,
) -> Result<Option<String>, ApiError> {
    let (_, z) = zone_mut(topo, which, zone, "zone")?;
    let duplicate = z.record.iter().any(|r| {
        r.name.get_ref() == &spec.name
            && *r.kind.get_ref() == spec.kind
            && r.value.get_ref() == &spec.value
    });
    if duplicate {
        return Err(already_exists(
            &format!("{} record", spec.kind),
            &format!("{} {}", spec.name, spec.value),
            "value",
            "remove it first to change its TTL",
        ));
    }
    z.record.push(spec.to_model());
    Ok(Some(format!(
        "{}.record[{}]",
        which.path(z),
        z.record.len() - 1
    )))
}

/// Removes the records of zone `zone` of `which` with `name` and `kind` (and `value`, when
/// given); refused when there is none.
fn remove_record(
    topo: &mut Topology,
    which: Zones,
    zone: &str,
    name: &str,
    kind: RecordKind,
    value: Option<&String>,
) -> Result<Option<String>, ApiError> {
    let (_, z) = zone_mut(topo, which, zone, "zone")?;
    let before = z.record.len();
    z.record.retain(|r| {
        let hit = r.name.get_ref() == name
            && *r.kind.get_ref() == kind
            && value.is_none_or(|v| r.value.get_ref() == v);
        !hit
    });
    if z.record.len() == before {
        let what = match value {
            Some(v) => format!("{kind} record `{name} {v}`"),
            None => format!("{kind} record at `{name}`"),
        };
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("zone `{}` has no {what}", z.name.get_ref()),
            if value.is_some() { "value" } else { "name" },
            which.show_hint(),
        ));
    }
    Ok(None)
}

/// `NotFound` unless VPC `name` exists.
fn require_vpc(topo: &mut Topology, name: &str) -> Result<(), ApiError> {
    find(&mut topo.vpc, |v| &v.name, name, "VPC", "vpc").map(|_| ())
}

impl Edit for AddZone {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        add_zone(topo, Zones::Private, &self.name, &self.vpcs, &self.records)
    }
}

impl Edit for RemoveZone {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        remove_zone(topo, Zones::Private, &self.name)
    }
}

impl Edit for AddPublicZone {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        add_zone(topo, Zones::Public, &self.name, &[], &self.records)
    }
}

impl Edit for RemovePublicZone {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        remove_zone(topo, Zones::Public, &self.name)
    }
}

impl AddZoneRecord {
    fn add_to(&self, topo: &mut Topology, which: Zones) -> Result<Option<String>, ApiError> {
        let spec = RecordSpec {
            name: self.name.clone(),
            kind: self.kind,
            value: self.value.clone(),
            ttl: self.ttl,
        };
        add_record(topo, which, &self.zone, spec)
    }
}

impl RemoveZoneRecord {
    fn remove_from(&self, topo: &mut Topology, which: Zones) -> Result<Option<String>, ApiError> {
        let v = self.value.as_ref();
        remove_record(topo, which, &self.zone, &self.name, self.kind, v)
    }
}

impl Edit for AddZoneRecord {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        self.add_to(topo, Zones::Private)
    }
}

impl Edit for RemoveZoneRecord {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        self.remove_from(topo, Zones::Private)
    }
}

impl Edit for AddPublicZoneRecord {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        self.0.add_to(topo, Zones::Public)
    }
}

impl Edit for RemovePublicZoneRecord {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        self.0.remove_from(topo, Zones::Public)
    }
}

impl Edit for AssociateZone {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        require_vpc(topo, &self.vpc)?;
        let (_, zone) = zone_mut(topo, Zones::Private, &self.zone, "zone")?;
        if !zone.vpcs.iter().any(|v| v.get_ref() == &self.vpc) {
            zone.vpcs.push(sp(self.vpc.clone()));
        }
        Ok(Some(Zones::Private.path(zone)))
    }
}

impl Edit for DisassociateZone {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, zone) = zone_mut(topo, Zones::Private, &self.zone, "zone")?;
        let Some(at) = zone.vpcs.iter().position(|v| v.get_ref() == &self.vpc) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "zone `{}` is not associated with VPC `{}`",
                    zone.name.get_ref(),
                    self.vpc
                ),
                "vpc",
                format!(
                    "its VPCs are: {}",
                    zone.vpcs
                        .iter()
                        .map(|v| v.get_ref().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if zone.vpcs.len() == 1 {
            return Err(super::in_use(
                format!(
                    "VPC `{}` is the last VPC of private zone `{}`",
                    self.vpc,
                    zone.name.get_ref()
                ),
                "a private zone is answered in at least one VPC: associate another VPC first, or remove the zone",
            ));
        }
        zone.vpcs.remove(at);
        Ok(None)
    }
}

/// `AlreadyExists` (on `name`) when one of `names` is `name`.
fn new_name<'n>(
    mut names: impl Iterator<Item = &'n toml::Spanned<String>>,
    name: &str,
    what: &str,
    hint: &str,
) -> Result<(), ApiError> {
    match names.any(|n| n.get_ref() == name) {
        true => Err(already_exists(what, name, "name", hint)),
        false => Ok(()),
    }
}

impl Edit for AddDnsFirewallRule {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        new_name(
            topo.dns_firewall.iter().map(|r| &r.name),
            &self.name,
            "DNS Firewall rule",
            "choose another name, or remove the rule first",
        )?;
        topo.dns_firewall.push(DnsFirewallRule {
            name: sp(self.name.clone()),
            vpcs: self.vpcs.iter().cloned().map(sp).collect(),
            domains: self.domains.iter().cloned().map(sp).collect(),
            domain_list: self.domain_list.clone().map(sp),
            action: sp(self.action),
            block_response: self.block_response.map(sp),
            block_override: self.block_override.clone().map(sp),
            block_override_ttl: self.block_override_ttl.map(sp),
        });
        Ok(Some(format!("dns_firewall[{}]", self.name)))
    }
}

impl Edit for RemoveDnsFirewallRule {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (at, _) = find(
            &mut topo.dns_firewall,
            |r| &r.name,
            &self.name,
            "DNS Firewall rule",
            "name",
        )?;
        topo.dns_firewall.remove(at);
        Ok(None)
    }
}

/// The key path of domain list `name`.
fn list_path(name: &str) -> String {
    format!("dns_domain_list[{name}]")
}

impl Edit for AddDnsDomainList {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        new_name(
            topo.dns_domain_list.iter().map(|l| &l.name),
            &self.name,
            "DNS domain list",
            "change its domains with update_dns_domain_list",
        )?;
        topo.dns_domain_list.push(DnsDomainList {
            name: sp(self.name.clone()),
            domains: self.domains.iter().cloned().map(sp).collect(),
        });
        Ok(Some(list_path(&self.name)))
    }
}

impl Edit for RemoveDnsDomainList {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (at, _) = find(
            &mut topo.dns_domain_list,
            |l| &l.name,
            &self.name,
            "DNS domain list",
            "name",
        )?;
        let users: Vec<&str> = topo
            .dns_firewall
            .iter()
            .filter(|r| {
                r.domain_list
                    .as_ref()
                    .is_some_and(|l| l.get_ref() == &self.name)
            })
            .map(|r| r.name.get_ref().as_str())
            .collect();
        if !users.is_empty() {
            return Err(super::in_use(
                format!(
                    "DNS domain list `{}` is used by DNS Firewall rule(s) {}",
                    self.name,
                    users.join(", ")
                ),
                "remove those rules first (remove_dns_firewall_rule)",
            ));
        }
        topo.dns_domain_list.remove(at);
        Ok(None)
    }
}

impl Edit for UpdateDnsDomainList {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let (_, list) = find(
            &mut topo.dns_domain_list,
            |l| &l.name,
            &self.name,
            "DNS domain list",
            "name",
        )?;
        let holds = |list: &DnsDomainList, d: &str| {
            list.domains
                .iter()
                .any(|x| domain_key(x.get_ref()) == domain_key(d))
        };
        match self.operation {
            DomainListOperation::Add => {
                for d in &self.domains {
                    if !holds(list, d) {
                        list.domains.push(sp(d.clone()));
                    }
                }
            }
            DomainListOperation::Remove => {
                if let Some((i, missing)) = self
                    .domains
                    .iter()
                    .enumerate()
                    .find(|(_, d)| !holds(list, d))
                {
                    return Err(ApiError::new(
                        ErrorCode::NotFound,
                        format!("DNS domain list `{}` has no domain `{missing}`", self.name),
                        format!("domains[{i}]"),
                        "`vpcd ctl dns domain-list show LIST` lists its domains",
                    ));
                }
                list.domains.retain(|x| {
                    !self
                        .domains
                        .iter()
                        .any(|d| domain_key(d) == domain_key(x.get_ref()))
                });
            }
            DomainListOperation::Replace => {
                list.domains = self.domains.iter().cloned().map(sp).collect();
            }
        }
        Ok(Some(list_path(&self.name)))
    }
}

impl Edit for SetEgressByName {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        require_vpc(topo, &self.vpc)?;
        for e in &mut topo.egress_by_name {
            e.vpcs.retain(|v| v.get_ref() != &self.vpc);
        }
        topo.egress_by_name.retain(|e| !e.vpcs.is_empty());
        if self.allow.is_empty() {
            return Ok(None);
        }
        topo.egress_by_name.push(EgressByName {
            vpcs: vec![sp(self.vpc.clone())],
            allow: self.allow.iter().cloned().map(sp).collect(),
        });
        Ok(Some(format!(
            "egress_by_name[{}]",
            topo.egress_by_name.len() - 1
        )))
    }
}

#[cfg(test)]
mod tests {
    use crate::control::{Change, ControlState};

    const FIXTURE: &str = r#"
[[vpc]]
name = "a"
cidr = "10.1.0.0/16"
subnet = [ { name = "s", cidr = "10.1.1.0/24" } ]

[[vpc]]
name = "b"
cidr = "10.2.0.0/16"

[[zone]]
name = "corp.example"
vpcs = ["a"]
record = [ { name = "db", type = "A", value = "10.1.1.50" } ]

[[dns_firewall]]
name = "no-bad"
vpcs = ["a"]
domains = ["*.bad.example"]
action = "block"

[[egress_by_name]]
vpcs = ["a", "b"]
allow = ["api.example.com:443"]
"#;

    fn state() -> ControlState {
        ControlState::from_text("f.toml", FIXTURE).expect("fixture")
    }

    fn apply(s: &ControlState, op: &str, body: &str) -> Result<ControlState, String> {
        let c = Change::decode(op, body.as_bytes()).map_err(|e| e.to_json())?;
        s.apply(&c).map_err(|e| e.to_json())
    }

    #[test]
    fn zone_record_add_and_remove_reach_the_plan() {
        let s = state();
        let s = apply(
            &s,
            "add_zone_record",
            r#"{"zone":"Corp.Example.","name":"web","type":"A","value":"10.1.1.60","ttl":30}"#,
        )
        .expect("added");
        let zone = &s.plan().zones[0];
        assert_eq!(zone.records.len(), 2);
        let s = apply(
            &s,
            "remove_zone_record",
            r#"{"zone":"corp.example","name":"db","type":"A"}"#,
        )
        .expect("removed");
        assert_eq!(s.plan().zones[0].records.len(), 1);
        assert!(s.export().contains("10.1.1.60"), "{}", s.export());
    }

    #[test]
    fn a_bad_record_value_names_the_request_field() {
        let e = apply(
            &state(),
            "add_zone_record",
            r#"{"zone":"corp.example","name":"web","type":"A","value":"not-an-address"}"#,
        )
        .expect_err("refused");
        assert!(e.contains(r#""field":"value""#), "{e}");
    }

    #[test]
    fn a_duplicate_or_missing_record_is_refused_by_the_edit() {
        let e = apply(
            &state(),
            "add_zone_record",
            r#"{"zone":"corp.example","name":"db","type":"A","value":"10.1.1.50"}"#,
        )
        .expect_err("duplicate");
        assert!(e.contains("already_exists"), "{e}");
        let e = apply(
            &state(),
            "remove_zone_record",
            r#"{"zone":"corp.example","name":"db","type":"A","value":"10.1.1.99"}"#,
        )
        .expect_err("missing");
        assert!(
            e.contains("not_found") && e.contains(r#""field":"value""#),
            "{e}"
        );
        let e = apply(
            &state(),
            "add_zone_record",
            r#"{"zone":"other.example","name":"db","type":"A","value":"10.1.1.50"}"#,
        )
        .expect_err("no zone");
        assert!(e.contains("not_found") && e.contains("corp.example"), "{e}");
    }

    #[test]
    fn zones_associate_and_the_last_vpc_stays() {
        let s = apply(
            &state(),
            "associate_zone",
            r#"{"zone":"corp.example","vpc":"b"}"#,
        )
        .expect("associated");
        assert_eq!(s.plan().zones[0].vpcs, vec![0, 1]);
        let s = apply(
            &s,
            "disassociate_zone",
            r#"{"zone":"corp.example","vpc":"a"}"#,
        )
        .expect("disassociated");
        assert_eq!(s.plan().zones[0].vpcs, vec![1]);
        let e = apply(
            &s,
            "disassociate_zone",
            r#"{"zone":"corp.example","vpc":"b"}"#,
        )
        .expect_err("last VPC");
        assert!(e.contains("dependency_violation"), "{e}");
        let e = apply(&s, "associate_zone", r#"{"zone":"corp.example","vpc":"c"}"#)
            .expect_err("no VPC");
        assert!(e.contains("not_found"), "{e}");
    }

    #[test]
    fn zones_are_added_with_records_and_removed() {
        let s = apply(
            &state(),
            "add_zone",
            r#"{"name":"svc.example","vpcs":["b"],"records":[{"name":"@","type":"TXT","value":"hello"}]}"#,
        )
        .expect("added");
        assert_eq!(s.plan().zones.len(), 2);
        let e =
            apply(&s, "add_zone", r#"{"name":"SVC.example","vpcs":["b"]}"#).expect_err("exists");
        assert!(e.contains("already_exists"), "{e}");
        let e = apply(&s, "add_zone", r#"{"name":"x.vpc.internal","vpcs":["b"]}"#)
            .expect_err("reserved");
        assert!(
            e.contains(r#""field":"name""#) && e.contains("vpc.internal"),
            "{e}"
        );
        let s = apply(&s, "remove_zone", r#"{"name":"svc.example"}"#).expect("removed");
        assert_eq!(s.plan().zones.len(), 1);
    }

    #[test]
    fn firewall_rules_are_added_checked_and_removed() {
        let s = apply(
            &state(),
            "add_dns_firewall_rule",
            r#"{"name":"alert-all","vpcs":["b"],"domains":["*.example"],"action":"alert"}"#,
        )
        .expect("added");
        assert_eq!(s.model().dns_firewall.len(), 2);
        let e = apply(
            &s,
            "add_dns_firewall_rule",
            r#"{"name":"x","vpcs":["b"],"domains":["a.example"],"action":"alert","block_response":"nodata"}"#,
        )
        .expect_err("block_response without block");
        assert!(e.contains(r#""field":"block_response""#), "{e}");
        let e = apply(
            &s,
            "add_dns_firewall_rule",
            r#"{"name":"alert-all","vpcs":["b"],"domains":["a.example"],"action":"alert"}"#,
        )
        .expect_err("duplicate");
        assert!(e.contains("already_exists"), "{e}");
        let s = apply(&s, "remove_dns_firewall_rule", r#"{"name":"no-bad"}"#).expect("removed");
        assert_eq!(s.model().dns_firewall.len(), 1);
    }

    #[test]
    fn egress_by_name_is_set_per_vpc() {
        let s = apply(
            &state(),
            "set_egress_by_name",
            r#"{"vpc":"b","allow":["*.payments.example:443"]}"#,
        )
        .expect("set");
        let m = &s.model().egress_by_name;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].vpcs.len(), 1, "b left the shared entry");
        let s = apply(&s, "set_egress_by_name", r#"{"vpc":"a","allow":[]}"#).expect("cleared");
        assert_eq!(s.model().egress_by_name.len(), 1);
        let e = apply(
            &s,
            "set_egress_by_name",
            r#"{"vpc":"b","allow":["bad name:x"]}"#,
        )
        .expect_err("bad name");
        assert!(e.contains("allow[0]"), "{e}");
    }
}
