//! Instances: attach (`RunInstances`) and detach (`TerminateInstances`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Edit, already_exists, find, in_use, sp, vpc_mut};
use crate::control::error::ApiError;
use crate::topology::cidr::Addr;
use crate::topology::model::{Attach, Instance, TargetHost, Topology};

/// Attach a new instance to a subnet (`RunInstances` / attach a function).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveInstance {
    pub vpc: String,
    pub name: String,
}

impl Edit for AddInstance {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        if vpc.instance.iter().any(|i| i.name.get_ref() == &r.name) {
            return Err(already_exists(
                "instance",
                &r.name,
                "name",
                "choose another name, or remove the instance first",
            ));
        }
        vpc.instance.push(std::sync::Arc::new(Instance {
            name: sp(r.name.clone()),
            subnet: sp(r.subnet.clone()),
            ip: r.ip.map(sp),
            attach: r.attach,
            security_groups: r.security_groups.iter().cloned().map(sp).collect(),
            eip: r.eip.clone().map(sp),
            mtu: r.mtu.map(sp),
        }));
        Ok(Some(format!("vpc[{}].instance[{}]", r.vpc, r.name)))
    }
}

impl Edit for RemoveInstance {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
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
        Ok(None)
    }
}
