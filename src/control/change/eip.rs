//! Elastic IPs: allocate, release, associate (1:1 with an instance, or with a NAT gateway), move
//! and disassociate (`AllocateAddress`, `ReleaseAddress`, `AssociateAddress`,
//! `DisassociateAddress`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Edit, already_exists, find, in_use, sp, vpc_mut};
use crate::control::error::{ApiError, ErrorCode};
use crate::topology::cidr::Addr;
use crate::topology::model::{Eip, HostListen, HostListens, Topology};

/// Allocate an EIP (`AllocateAddress`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateEip {
    pub name: String,
    pub address: Addr,
    /// With the public uplink: the host address its flows' host sockets bind to, so the
    /// outside sees this address.
    #[serde(default)]
    pub host_bind: Option<Addr>,
    /// With the public uplink, for a 1:1 EIP: host addresses whose callers reach the instance.
    #[serde(default)]
    pub host_listen: Vec<HostListen>,
}

/// Release an EIP (`ReleaseAddress`). Refused while it is associated or owned by a NAT gateway.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseEip {
    pub name: String,
}

/// Associate an EIP (`AssociateAddress`) 1:1 with an instance, or with a NAT gateway (which
/// adds it to the gateway's `eips`: its SNAT pool and what its DNAT entries may use). Name
/// exactly one of `instance` and `nat_gateway`. Associating an EIP with what it is already bound
/// to changes nothing.
///
/// Without `allow_reassociation`, refused when the EIP is bound to something else or the
/// instance already has another EIP: disassociate first. With it (AWS's `AllowReassociation`),
/// for an `instance`: an EIP bound 1:1 to another instance moves to this one, and an EIP this
/// instance had is disassociated (it stays allocated). An EIP owned by a NAT gateway never moves
/// this way, and associating with a `nat_gateway` always needs a free EIP.
///
/// In a running network the change takes effect at the table swap: the old 1:1 mapping is
/// removed and the new one added before the next packet. 1:1 translation keeps no sessions, so
/// traffic to the EIP reaches the new instance from then on, and flows the old instance had
/// through the EIP end there (its packets leave with its private address and are dropped at the
/// internet gateway), as in the cloud.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssociateEip {
    pub eip: String,
    pub vpc: String,
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub nat_gateway: Option<String>,
    /// Move an EIP that is bound 1:1 to another instance, and replace this instance's EIP.
    #[serde(default)]
    pub allow_reassociation: bool,
}

/// Disassociate an EIP from the instance or NAT gateway it is bound to
/// (`DisassociateAddress`). From a gateway, refused while a DNAT or SNAT entry names it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisassociateEip {
    pub eip: String,
}

/// What an EIP is bound to: `(VPC, instance or gateway name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Binding {
    Instance(String, String),
    Gateway(String, String),
}

impl Binding {
    fn describe(&self) -> String {
        match self {
            Binding::Instance(v, i) => format!("instance `{v}/{i}`"),
            Binding::Gateway(v, g) => format!("NAT gateway `{v}/{g}`"),
        }
    }
}

/// Where EIP `eip` is bound (1:1 to an instance, or in a NAT gateway's `eips`), if anywhere.
pub(super) fn binding(topo: &Topology, eip: &str) -> Option<Binding> {
    for vpc in &topo.vpc {
        let vname = vpc.name.get_ref();
        if let Some(i) = vpc
            .instance
            .iter()
            .find(|i| i.eip.as_ref().is_some_and(|e| e.get_ref() == eip))
        {
            return Some(Binding::Instance(vname.clone(), i.name.get_ref().clone()));
        }
        if let Some(g) = vpc
            .nat_gateway
            .iter()
            .find(|g| g.eips.iter().any(|e| e.get_ref() == eip))
        {
            return Some(Binding::Gateway(vname.clone(), g.name.get_ref().clone()));
        }
    }
    None
}

/// `NotFound` unless EIP `name` is allocated; `field` names it in the request.
pub(super) fn require_eip(topo: &mut Topology, name: &str, field: &str) -> Result<(), ApiError> {
    find(&mut topo.eip, |e| &e.name, name, "EIP", field).map(|_| ())
}

impl Edit for AllocateEip {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        if topo.eip.iter().any(|e| e.name.get_ref() == &self.name) {
            return Err(already_exists(
                "EIP",
                &self.name,
                "name",
                "choose another name, or release the EIP first",
            ));
        }
        topo.eip.push(Eip {
            name: sp(self.name.clone()),
            address: sp(self.address),
            host_bind: self.host_bind.map(sp),
            host_listen: HostListens(self.host_listen.iter().cloned().map(sp).collect()),
        });
        Ok(Some(format!("eip[{}]", self.name)))
    }
}

impl Edit for ReleaseEip {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        let (at, _) = find(&mut topo.eip, |e| &e.name, &r.name, "EIP", "name")?;
        if let Some(Binding::Instance(v, i)) = binding(topo, &r.name) {
            return Err(in_use(
                format!("EIP `{}` is associated with instance `{v}/{i}`", r.name),
                "disassociate it first",
            ));
        }
        for vpc in &topo.vpc {
            let vname = vpc.name.get_ref();
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
        Ok(None)
    }
}

impl Edit for AssociateEip {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        require_eip(topo, &r.eip, "eip")?;
        let (target, to_gateway) = match (&r.instance, &r.nat_gateway) {
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
        let here = if to_gateway {
            Binding::Gateway(r.vpc.clone(), target.to_string())
        } else {
            Binding::Instance(r.vpc.clone(), target.to_string())
        };
        // Bound somewhere else: refused, or (instances only) moved.
        let moving = match binding(topo, &r.eip) {
            Some(b) if b == here => return Ok(None),
            Some(b @ Binding::Gateway(..)) => {
                return Err(in_use(
                    format!(
                        "EIP `{}` is already associated with {}",
                        r.eip,
                        b.describe()
                    ),
                    "disassociate it from the gateway first, or allocate another EIP",
                ));
            }
            Some(b @ Binding::Instance(..)) if to_gateway || !r.allow_reassociation => {
                let hint = if to_gateway {
                    "disassociate it first, then associate it here"
                } else {
                    "disassociate it first, or set `allow_reassociation` to move it here"
                };
                return Err(in_use(
                    format!(
                        "EIP `{}` is already associated with {}",
                        r.eip,
                        b.describe()
                    ),
                    hint,
                ));
            }
            Some(Binding::Instance(v, i)) => Some((v, i)),
            None => None,
        };
        if to_gateway {
            let (_, vpc) = vpc_mut(topo, &r.vpc)?;
            let (_, gw) = find(
                &mut vpc.nat_gateway,
                |g| &g.name,
                target,
                "NAT gateway",
                "nat_gateway",
            )?;
            gw.eips.push(sp(r.eip.clone()));
            return Ok(None);
        }
        // Check the target before taking the EIP from its old instance.
        {
            let (_, vpc) = vpc_mut(topo, &r.vpc)?;
            let (_, inst) = find(
                &mut vpc.instance,
                |i| &i.name,
                target,
                "instance",
                "instance",
            )?;
            if let Some(e) = &inst.eip
                && !r.allow_reassociation
            {
                return Err(in_use(
                    format!("instance `{target}` already has EIP `{}`", e.get_ref()),
                    "disassociate that EIP first, or set `allow_reassociation` to replace it",
                ));
            }
        }
        if let Some((v, i)) = moving {
            let old = topo
                .vpc
                .iter_mut()
                .filter(|x| x.name.get_ref() == &v)
                .flat_map(|x| x.instance.iter_mut())
                .find(|x| x.name.get_ref() == &i);
            if let Some(old) = old {
                std::sync::Arc::make_mut(old).eip = None;
            }
        }
        let (_, vpc) = vpc_mut(topo, &r.vpc)?;
        let (_, inst) = find(
            &mut vpc.instance,
            |i| &i.name,
            target,
            "instance",
            "instance",
        )?;
        std::sync::Arc::make_mut(inst).eip = Some(sp(r.eip.clone()));
        Ok(Some(format!("vpc[{}].instance[{}]", r.vpc, target)))
    }
}

impl Edit for DisassociateEip {
    fn edit(&self, topo: &mut Topology) -> Result<Option<String>, ApiError> {
        let r = self;
        require_eip(topo, &r.eip, "eip")?;
        for vpc in &mut topo.vpc {
            let vname = vpc.name.get_ref().clone();
            for inst in &mut vpc.instance {
                if inst.eip.as_ref().is_some_and(|e| e.get_ref() == &r.eip) {
                    std::sync::Arc::make_mut(inst).eip = None;
                    return Ok(None);
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
                return Ok(None);
            }
        }
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("EIP `{}` is not associated", r.eip),
            "eip",
            "nothing to disassociate",
        ))
    }
}
