//! Incremental validation: the changes a function platform makes all day (attach and detach
//! instances, move 1:1 EIPs, add and remove security-group rules), checked against what they
//! touch and applied to the plan, instead of serializing and validating the whole topology.
//!
//! Contract: [`apply`] gets the running plan and the model the change has already edited
//! (`Change::edit`, shared by both paths, so its `not_found`/`already_exists`/
//! `dependency_violation` refusals are the same), and either turns the plan into exactly the
//! plan the whole-file path ([`super::ControlState::apply_full`]) builds from that model and
//! returns `Some`, or returns `None`: "not decided here" (the plan may then be partly changed:
//! the caller builds it again from the model). It never refuses anything itself: a change that fails one of its checks
//! goes to the whole-file path, which refuses it with the messages `vpcd check` prints. Both
//! paths therefore give the same error texts by construction; `tests/control_changes.rs` and
//! `tests/control_props.rs` run every case through both and compare states and errors.
//! Not handled here (whole-file path): every other operation, anything while the public uplink
//! is on (its listeners depend on EIP bindings), EIPs of NAT gateways.
//!
//! What each change touches, and so what is checked:
//! - `add_instance`: its name's characters, its subnet (range, reserved addresses and the
//!   addresses of the VPC's instances and NAT gateways), its MTU, the security groups and the
//!   EIP it names. Every other instance already has its address written into the model (see
//!   `ControlState::from_model`), so the first free address is the one the file validator
//!   would give;
//! - `remove_instance`: the indices after it (1:1 EIP bindings, DNAT targets, probes);
//! - `associate_eip` with an instance, `disassociate_eip` of a 1:1 EIP: the 1:1 bindings;
//! - `add_sg_rule`, `remove_sg_rule`: the group's rules against the VPC's group names.
//!
//! Cost: linear scans of the touched VPC's plan without allocating per instance (and one sorted
//! list of the subnet's addresses for `add_instance` without an address), no text. Pure: no
//! I/O.

use std::net::Ipv4Addr;

use toml::Spanned;

use super::Change;
use super::change::{
    AddInstance, AddSgRule, AssociateEip, DisassociateEip, RemoveInstance, RemoveSgRule,
};
use crate::topology::cidr::{Addr, Cidr};
use crate::topology::model::{DEFAULT_MTU, MAX_MTU, MIN_MTU, RuleProtocol, SgRule, Topology, Vpc};
use crate::topology::plan::{EipBinding, Endpoint, InstancePlan, Plan};
use crate::topology::{first_host, is_valid_name, last_host, reserved_role};

/// Turns `plan` (the running plan) into the plan of `model` (the running model with `change`
/// applied by `Change::edit`); `None` when the whole-file path must decide (see the module
/// doc). May write the new instance's assigned address into `model` (only when it returns
/// `Some`).
pub(super) fn apply(plan: &mut Plan, model: &mut Topology, change: &Change) -> Option<()> {
    match change {
        Change::AddInstance(r) => add_instance(plan, model, r),
        Change::RemoveInstance(r) => remove_instance(plan, r),
        Change::AssociateEip(AssociateEip {
            instance: Some(_),
            nat_gateway: None,
            ..
        }) => rebind_one_to_one(plan, model),
        Change::DisassociateEip(DisassociateEip { eip }) => {
            let bound_to_instance = plan
                .eips
                .iter()
                .find(|e| &e.name == eip)
                .is_some_and(|e| matches!(e.binding, EipBinding::Instance { .. }));
            bound_to_instance.then(|| rebind_one_to_one(plan, model))?
        }
        Change::AddSgRule(AddSgRule { vpc, group, .. })
        | Change::RemoveSgRule(RemoveSgRule { vpc, group, .. }) => {
            security_group(plan, model, vpc, group)
        }
        _ => None,
    }
}

fn vpc_index(old: &Plan, name: &str) -> Option<usize> {
    old.vpcs.iter().position(|v| v.name == name)
}

fn add_instance(plan: &mut Plan, model: &mut Topology, r: &AddInstance) -> Option<()> {
    let old = &*plan;
    if r.eip.is_some() && old.internet.uplink.is_some() {
        return None;
    }
    let vi = vpc_index(old, &r.vpc)?;
    let vp = &old.vpcs[vi];
    if !is_valid_name(&r.name) {
        return None;
    }
    let subnet = vp.subnets.iter().position(|s| s.name == r.subnet)?;
    let mtu = match r.mtu {
        None => DEFAULT_MTU,
        Some(m) if (MIN_MTU..=MAX_MTU).contains(&m) => m,
        Some(_) => return None,
    };
    let security_groups = r
        .security_groups
        .iter()
        .map(|g| {
            vp.security_groups
                .iter()
                .position(|s| s.name.get_ref() == g)
        })
        .collect::<Option<Vec<usize>>>()?;
    let eip = match &r.eip {
        None => None,
        Some(name) => {
            let ei = old.eips.iter().position(|e| &e.name == name)?;
            if old.eips[ei].binding != EipBinding::Unbound {
                return None;
            }
            Some(ei)
        }
    };
    let cidr = vp.subnets[subnet].cidr;
    let mut used = vp
        .instances
        .iter()
        .map(|i| i.ip)
        .chain(vp.nat_gateways.iter().map(|g| g.ip));
    let ip = match r.ip {
        Some(Addr(a)) if cidr.contains(a) && reserved_role(cidr, a).is_none() => {
            (!used.any(|u| u == a)).then_some(a)?
        }
        Some(_) => return None,
        None => first_free(cidr, used)?,
    };
    let inst = model.vpc.get_mut(vi)?.instance.last_mut()?;
    if inst.name.get_ref() != &r.name {
        return None;
    }
    std::sync::Arc::make_mut(inst).ip = Some(Spanned::new(0..0, Addr(ip)));
    let instances = &mut plan.vpcs[vi].instances;
    if let Some(ei) = eip {
        plan.eips[ei].binding = EipBinding::Instance {
            vpc: vi,
            instance: instances.len(),
        };
    }
    instances.push(std::sync::Arc::new(InstancePlan {
        name: r.name.clone(),
        port: format!("{}/{}", r.vpc, r.name).into(),
        subnet,
        ip,
        attach: r.attach,
        mtu,
        eip,
        security_groups,
    }));
    Some(())
}

/// The lowest address of `cidr` an instance may take that is not in `used` (the file
/// validator's `first_free`). With `n` addresses used, the answer is among the first `n + 1`
/// of the range, so one pass marks those in a bitmap of `n + 1` bits and the first clear bit
/// is the answer: linear in `n`, no sort.
fn first_free(cidr: Cidr, used: impl Iterator<Item = Ipv4Addr>) -> Option<Ipv4Addr> {
    let (first, last) = (u32::from(first_host(cidr)), u32::from(last_host(cidr)));
    let used: Vec<u32> = used.map(u32::from).collect();
    let window = used.len() + 1;
    let mut taken = vec![0u64; window.div_ceil(64)];
    for a in used {
        let Some(offset) = a.checked_sub(first).map(|o| o as usize) else {
            continue;
        };
        if a <= last && offset < window {
            taken[offset / 64] |= 1 << (offset % 64);
        }
    }
    let offset = taken
        .iter()
        .position(|w| *w != u64::MAX)
        .map(|k| k * 64 + taken[k].trailing_ones() as usize)?;
    let candidate = u64::from(first) + offset as u64;
    (candidate <= u64::from(last)).then(|| Ipv4Addr::from(candidate as u32))
}

fn remove_instance(plan: &mut Plan, r: &RemoveInstance) -> Option<()> {
    if plan.internet.uplink.is_some() {
        return None;
    }
    let vi = vpc_index(plan, &r.vpc)?;
    let k = plan.vpcs[vi]
        .instances
        .iter()
        .position(|i| i.name == r.name)?;
    plan.vpcs[vi].instances.remove(k);
    // Indices after `k` move down by one; what still names `k` itself the edit has refused
    // (DNAT, SNAT, probes), except its own 1:1 EIP, which goes with it.
    let after = |i: &mut usize| {
        if *i > k {
            *i -= 1;
        }
    };
    for e in &mut plan.eips {
        if let EipBinding::Instance { vpc, instance } = &mut e.binding
            && *vpc == vi
        {
            if *instance == k {
                e.binding = EipBinding::Unbound;
            } else {
                after(instance);
            }
        }
    }
    for d in plan.vpcs[vi]
        .nat_gateways
        .iter_mut()
        .flat_map(|g| g.dnat.iter_mut())
    {
        if d.instance == k {
            return None;
        }
        after(&mut d.instance);
    }
    for p in &mut plan.probes {
        for end in std::iter::once(&mut p.from).chain(p.to_endpoint.as_mut()) {
            if let Endpoint::Instance { vpc, instance } = end
                && *vpc == vi
            {
                if *instance == k {
                    return None;
                }
                after(instance);
            }
        }
    }
    Some(())
}

/// Every instance's 1:1 EIP as the model has it (NAT gateways' EIPs stay as they are); `None`
/// when an EIP would be bound twice or does not exist (the file validator reports those).
fn rebind_one_to_one(plan: &mut Plan, model: &Topology) -> Option<()> {
    if plan.internet.uplink.is_some() {
        return None;
    }
    let Plan { vpcs, eips, .. } = plan;
    for e in eips.iter_mut() {
        if matches!(e.binding, EipBinding::Instance { .. }) {
            e.binding = EipBinding::Unbound;
        }
    }
    for (vi, (v, vp)) in model.vpc.iter().zip(vpcs.iter_mut()).enumerate() {
        if v.instance.len() != vp.instances.len() {
            return None;
        }
        for (ii, (inst, ip)) in v.instance.iter().zip(vp.instances.iter_mut()).enumerate() {
            let eip = match &inst.eip {
                None => None,
                Some(name) => {
                    let ei = eips.iter().position(|e| &e.name == name.get_ref())?;
                    if eips[ei].binding != EipBinding::Unbound {
                        return None;
                    }
                    eips[ei].binding = EipBinding::Instance {
                        vpc: vi,
                        instance: ii,
                    };
                    Some(ei)
                }
            };
            // Copied only when it changes (the plan's instances are shared).
            if ip.eip != eip {
                std::sync::Arc::make_mut(ip).eip = eip;
            }
        }
    }
    Some(())
}

/// The VPC's security groups as the model has them, when every rule of `group` passes the
/// file validator's rule checks.
fn security_group(plan: &mut Plan, model: &Topology, vpc: &str, group: &str) -> Option<()> {
    let vi = vpc_index(plan, vpc)?;
    let v = model.vpc.get(vi)?;
    let g = v
        .security_group
        .iter()
        .find(|g| g.name.get_ref() == group)?;
    let rules = g.ingress.iter().chain(g.egress.iter().flatten());
    if !rules.into_iter().all(|r| rule_is_valid(v, r)) {
        return None;
    }
    plan.vpcs[vi].security_groups = v.security_group.clone();
    Some(())
}

/// The checks of `validate::rules` for one security-group rule: `ports` only with tcp and udp,
/// `icmp_type` only with icmp, the peer a CIDR or `sg:NAME` of the same VPC.
fn rule_is_valid(vpc: &Vpc, rule: &SgRule) -> bool {
    let proto = *rule.protocol.get_ref();
    let ports = rule.ports.is_none() || matches!(proto, RuleProtocol::Tcp | RuleProtocol::Udp);
    let icmp_type = rule.icmp_type.is_none() || proto == RuleProtocol::Icmp;
    let peer = rule.peer.get_ref();
    let peer = match peer.strip_prefix("sg:") {
        Some(name) => vpc.security_group.iter().any(|g| g.name.get_ref() == name),
        None => peer.parse::<Cidr>().is_ok(),
    };
    ports && icmp_type && peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlState;

    const FIXTURE: &str = r#"
[[vpc]]
name = "v"
cidr = "10.9.0.0/16"
subnet = [ { name = "s", cidr = "10.9.1.0/29" }, { name = "t", cidr = "10.9.2.0/24" } ]
security_group = [ { name = "web" } ]
instance = [ { name = "a", subnet = "s" }, { name = "b", subnet = "s", eip = "e1" } ]

[[eip]]
name = "e1"
address = "203.0.113.1"

[[eip]]
name = "e2"
address = "203.0.113.2"
"#;

    fn change(op: &str, body: &str) -> Change {
        Change::decode(op, body.as_bytes()).expect("a valid request body")
    }

    /// The incremental plan of `c` on `s`, and the whole-file path's result.
    fn both(s: &ControlState, c: &Change) -> (Option<Plan>, Result<ControlState, String>) {
        let mut model = s.model().clone();
        let mut plan = s.plan().clone();
        let fast = c
            .edit(&mut model)
            .ok()
            .and_then(|_| apply(&mut plan, &mut model, c))
            .map(|()| plan);
        (fast, s.apply_full(c).map_err(|e| e.to_json()))
    }

    #[test]
    fn attach_detach_eip_and_rule_changes_are_decided_here_with_the_file_plan() {
        let s = ControlState::from_text("f.toml", FIXTURE).expect("fixture");
        let cases = [
            ("add_instance", r#"{"vpc":"v","name":"c","subnet":"s"}"#),
            (
                "add_instance",
                r#"{"vpc":"v","name":"c","subnet":"t","ip":"10.9.2.9","eip":"e2","security_groups":["web"],"mtu":9000}"#,
            ),
            ("remove_instance", r#"{"vpc":"v","name":"a"}"#),
            ("associate_eip", r#"{"eip":"e2","vpc":"v","instance":"a"}"#),
            (
                "associate_eip",
                r#"{"eip":"e1","vpc":"v","instance":"a","allow_reassociation":true}"#,
            ),
            ("disassociate_eip", r#"{"eip":"e1"}"#),
            (
                "add_sg_rule",
                r#"{"vpc":"v","group":"web","direction":"ingress","protocol":"tcp","ports":"80","peer":"sg:web"}"#,
            ),
            (
                "add_sg_rule",
                r#"{"vpc":"v","group":"web","direction":"egress","protocol":"icmp","icmp_type":8,"peer":"10.0.0.0/8"}"#,
            ),
        ];
        for (op, body) in cases {
            let c = change(op, body);
            let (fast, full) = both(&s, &c);
            let full = full.unwrap_or_else(|e| panic!("{op} {body}: refused: {e}"));
            assert_eq!(fast.as_ref(), Some(full.plan()), "{op} {body}");
        }
    }

    #[test]
    fn what_the_file_validator_refuses_is_left_to_it() {
        let s = ControlState::from_text("f.toml", FIXTURE).expect("fixture");
        let cases = [
            (
                "add_instance",
                r#"{"vpc":"v","name":"c","subnet":"s","ip":"10.9.1.1"}"#,
            ),
            (
                "add_instance",
                r#"{"vpc":"v","name":"c","subnet":"s","ip":"10.9.2.5"}"#,
            ),
            (
                "add_instance",
                r#"{"vpc":"v","name":"c","subnet":"s","ip":"10.9.1.2"}"#,
            ),
            ("add_instance", r#"{"vpc":"v","name":"c/d","subnet":"s"}"#),
            ("add_instance", r#"{"vpc":"v","name":"c","subnet":"nope"}"#),
            (
                "add_instance",
                r#"{"vpc":"v","name":"c","subnet":"s","mtu":100}"#,
            ),
            (
                "add_instance",
                r#"{"vpc":"v","name":"c","subnet":"s","security_groups":["db"]}"#,
            ),
            (
                "add_instance",
                r#"{"vpc":"v","name":"c","subnet":"s","eip":"e1"}"#,
            ),
            (
                "add_sg_rule",
                r#"{"vpc":"v","group":"web","direction":"ingress","protocol":"icmp","ports":"80","peer":"10.0.0.0/8"}"#,
            ),
            (
                "add_sg_rule",
                r#"{"vpc":"v","group":"web","direction":"ingress","protocol":"tcp","icmp_type":3,"peer":"10.0.0.0/8"}"#,
            ),
            (
                "add_sg_rule",
                r#"{"vpc":"v","group":"web","direction":"ingress","protocol":"all","peer":"sg:db"}"#,
            ),
            (
                "add_sg_rule",
                r#"{"vpc":"v","group":"web","direction":"ingress","protocol":"all","peer":"10.0.0.1/8"}"#,
            ),
        ];
        for (op, body) in cases {
            let c = change(op, body);
            let (fast, full) = both(&s, &c);
            assert!(fast.is_none(), "{op} {body}: decided incrementally");
            let e = full
                .err()
                .unwrap_or_else(|| panic!("{op} {body}: accepted"));
            assert_eq!(s.apply(&c).map_err(|e| e.to_json()).err(), Some(e));
        }
    }

    #[test]
    fn a_full_subnet_is_left_to_the_file_validator() {
        // 10.9.1.0/29: .2 to .6 usable; a and b hold two, three more fit.
        let mut s = ControlState::from_text("f.toml", FIXTURE).expect("fixture");
        for n in ["c", "d", "e"] {
            let c = change(
                "add_instance",
                &format!(r#"{{"vpc":"v","name":"{n}","subnet":"s"}}"#),
            );
            s = s.apply(&c).expect("room left");
        }
        let c = change("add_instance", r#"{"vpc":"v","name":"f","subnet":"s"}"#);
        let (fast, full) = both(&s, &c);
        assert!(fast.is_none());
        let e = full.expect_err("the subnet is full");
        assert!(e.contains("no free address"), "{e}");
    }

    #[test]
    fn first_free_is_the_lowest_gap_like_the_file_validator() {
        let c: Cidr = "10.0.1.0/29".parse().expect("cidr");
        let a = |last: u8| Ipv4Addr::new(10, 0, 1, last);
        assert_eq!(first_free(c, [].into_iter()), Some(a(2)));
        // Outside the range, repeated, unordered: ignored, counted once, sorted.
        let used = [a(4), a(2), a(3), a(3), Ipv4Addr::new(10, 0, 2, 2), a(6)];
        assert_eq!(first_free(c, used.into_iter()), Some(a(5)));
        let full = [a(2), a(3), a(4), a(5), a(6)];
        assert_eq!(first_free(c, full.into_iter()), None);
    }

    #[test]
    fn first_free_equals_the_lowest_unused_address_on_random_sets() {
        let c: Cidr = "10.0.1.0/26".parse().expect("cidr");
        let (lo, hi) = (u32::from(first_host(c)), u32::from(last_host(c)));
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed
            };
            let n = next() % 80;
            // Addresses in and around the range, repeated at times.
            let used: Vec<Ipv4Addr> = (0..n)
                .map(|_| Ipv4Addr::from(lo - 3 + next() % (hi - lo + 8)))
                .collect();
            let expected = (lo..=hi)
                .find(|a| !used.contains(&Ipv4Addr::from(*a)))
                .map(Ipv4Addr::from);
            assert_eq!(first_free(c, used.iter().copied()), expected, "{used:?}");
        }
    }
}
