//! Compiles the plan's names into one resolver [`View`] per VPC: the DNS half of `compile`.
//!
//! What a VPC's resolver answers (README.md, "DNS inside the VPC"): its own instances' names,
//! `ip-` names and reverse names; the private zones associated with it; and, unless one of
//! those hides them, the simulated internet's names: EIPs (`eip-A-B-C-D.vpc.internal` and
//! their reverse names), internet hosts' `dns_names` (and the reverse name of the host's address,
//! pointing at the first) and the public zones. Everything under `vpc.internal` it does not hold
//! is NXDOMAIN, so one VPC never learns another's instances.

use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData};

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::RecordType;

use super::super::plan::{Endpoint, InstancePlan, Plan, VpcPlan, ZonePlan};
use crate::dns::names::{
    eip_name, instance_name, internal_domain, ip_name, reverse_name, vpc_domain,
};
use crate::dns::view::DEFAULT_TTL;
use crate::dns::{Transport, answer};
use crate::dns::{View, ViewBuilder};

/// One view per VPC, in plan order.
pub fn views(plan: &Plan) -> Vec<View> {
    (0..plan.vpcs.len()).map(|vi| view(plan, vi)).collect()
}

/// What `from` gets asking its resolver for `name`'s A record: the first address, or why there
/// is none (the rcode, or no A record). An instance asks its VPC's resolver; an internet host
/// sees the public names only. The one lookup `vpcd test` probes and `vpcd explain` use.
pub fn lookup(plan: &Plan, from: Endpoint, name: &str) -> Result<Ipv4Addr, String> {
    let view = match from {
        Endpoint::Instance { vpc, .. } => view(plan, vpc),
        Endpoint::Host(_) => public_view(plan),
    };
    let qname = crate::dns::names::parse_domain(name)?;
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(qname, RecordType::A));
    let query = m.to_vec().map_err(|e| e.to_string())?;
    let answered = answer(&view, &query, Transport::Tcp).map_err(|d| d.as_str().to_string())?;
    let first = answered.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    });
    first.ok_or_else(|| match answered.rcode {
        ResponseCode::NoError => "no A record".to_string(),
        other => crate::dns::querylog::rcode_name(other),
    })
}

/// What an internet host's resolver would know: the simulated internet's names.
fn public_view(plan: &Plan) -> View {
    let mut b = ViewBuilder::new();
    b.authority(internal_domain());
    internet(&mut b, plan);
    b.build()
}

/// The view of VPC `vi`.
pub fn view(plan: &Plan, vi: usize) -> View {
    let mut b = ViewBuilder::new();
    b.firewall(plan.vpcs[vi].dns_firewall.clone());
    b.egress_names(plan.vpcs[vi].egress_names.clone());
    b.authority(internal_domain());
    locally_served(&mut b);
    instances(&mut b, &plan.vpcs[vi]);
    for zone in plan.zones.iter().filter(|z| z.vpcs.contains(&vi)) {
        b.private_zone(zone.apex.clone());
        for r in &zone.records {
            b.add(r.name.clone(), r.ttl, r.data.to_rdata());
        }
    }
    internet(&mut b, plan);
    b.build()
}

/// RFC 6303's locally served zones: the reverse names of private, loopback, link-local, shared
/// and "this network" addresses are answered here (NXDOMAIN unless an instance has the address),
/// never forwarded, so a reverse lookup of a VPC address never leaves vpcd.
fn locally_served(b: &mut ViewBuilder) {
    let mut apexes: Vec<String> = ["0", "10", "127", "254.169", "168.192"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    apexes.extend((16..32).map(|o| format!("{o}.172")));
    apexes.extend((64..128).map(|o| format!("{o}.100")));
    for apex in apexes {
        if let Ok(n) = crate::dns::names::parse_domain(&format!("{apex}.in-addr.arpa")) {
            b.authority(n);
        }
    }
}

/// A VPC's instances: `NAME.VPC.vpc.internal`, `ip-A-B-C-D.VPC.vpc.internal` and the reverse
/// name of the address. A topology name too long for a DNS label gets no name.
fn instances(b: &mut ViewBuilder, vpc: &VpcPlan) {
    if let Some(domain) = vpc_domain(&vpc.name) {
        b.authority(domain);
    }
    for inst in &vpc.instances {
        for (name, data) in instance_records(&inst.name, inst.ip, &vpc.name) {
            b.add(name, DEFAULT_TTL, data);
        }
    }
}

/// The records an instance gives its VPC's view: `ip-A-B-C-D.VPC.vpc.internal`, its name, and
/// the PTR of its address.
fn instance_records(instance: &str, ip: Ipv4Addr, vpc: &str) -> Vec<(Name, RData)> {
    let a = RData::A(A(ip));
    let mut out = Vec::with_capacity(3);
    if let Some(n) = ip_name(ip, vpc) {
        out.push((n, a.clone()));
    }
    if let Some(name) = instance_name(instance, vpc) {
        out.push((reverse_name(ip), RData::PTR(PTR(name.clone()))));
        out.push((name, a));
    }
    out
}

/// The views of the last change, so that the next one builds only what it changed: a VPC whose
/// other inputs (zones, firewall, egress names, the internet's names) are the same gets its
/// previous view with the attached and detached instances' names patched in, instead of every
/// name made again (which grows with the VPC: 3 names per instance).
#[derive(Debug, Default)]
pub struct ViewCache {
    vpcs: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    /// A hash of everything but the instances that the VPC's view is built from.
    inputs: u64,
    /// The instances the view holds: the plan's own `Arc`s, so that the next change finds the
    /// ones it kept by pointer (an attach or a detach shares every other instance's `Arc`).
    instances: Vec<Arc<InstancePlan>>,
    view: Arc<View>,
}

impl ViewCache {
    /// One view per VPC of `plan`, in plan order, equal to [`views`]'s (up to empty
    /// non-terminals left above removed instances' reverse names); the cache then holds them.
    pub fn views(&mut self, plan: &Plan) -> Vec<Arc<View>> {
        let mut next = HashMap::with_capacity(plan.vpcs.len());
        let out = (0..plan.vpcs.len())
            .map(|vi| {
                let vpc = &plan.vpcs[vi];
                let inputs = inputs_hash(plan, vi);
                let kept = match self.vpcs.remove(&vpc.name) {
                    Some(mut old) if old.inputs == inputs => old.patch(vpc).then_some(old),
                    _ => None,
                };
                let cached = kept.unwrap_or_else(|| Cached {
                    inputs,
                    instances: vpc.instances.clone(),
                    view: Arc::new(view(plan, vi)),
                });
                let view = cached.view.clone();
                next.insert(vpc.name.clone(), cached);
                view
            })
            .collect();
        self.vpcs = next;
        out
    }
}

impl Cached {
    /// Patches the view (and the instance list) with the instances that left, came or moved
    /// since; `false` when more than a quarter of them changed (building anew is as cheap
    /// then). The instances both lists begin and end with, by pointer, are kept without a
    /// lookup; only those between are compared by name. The view is copied only along the
    /// patched names' paths (a persistent map, `dns::view`).
    fn patch(&mut self, vpc: &VpcPlan) -> bool {
        let (old, new) = (&self.instances, &vpc.instances);
        let prefix = old
            .iter()
            .zip(new)
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        let suffix = old[prefix..]
            .iter()
            .rev()
            .zip(new[prefix..].iter().rev())
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        // Names are unique in a VPC, so a name between the kept ends of one list is between
        // them in the other too, if it is there at all.
        let (old_mid, new_mid) = (
            &old[prefix..old.len() - suffix],
            &new[prefix..new.len() - suffix],
        );
        let before: HashMap<&str, Ipv4Addr, foldhash::fast::FixedState> =
            old_mid.iter().map(|i| (i.name.as_str(), i.ip)).collect();
        let mut came: Vec<(&str, Ipv4Addr)> = Vec::new();
        let mut gone: Vec<(String, Ipv4Addr)> = Vec::new();
        for inst in new_mid {
            match before.get(inst.name.as_str()) {
                Some(ip) if *ip == inst.ip => {}
                Some(ip) => {
                    gone.push((inst.name.clone(), *ip));
                    came.push((&inst.name, inst.ip));
                }
                None => came.push((&inst.name, inst.ip)),
            }
        }
        let now: std::collections::HashSet<&str, foldhash::fast::FixedState> =
            new_mid.iter().map(|i| i.name.as_str()).collect();
        gone.extend(
            old_mid
                .iter()
                .filter(|i| !now.contains(i.name.as_str()))
                .map(|i| (i.name.clone(), i.ip)),
        );
        let changed = !(gone.is_empty() && came.is_empty());
        if (gone.len() + came.len()) * 4 > new.len().max(old.len()) {
            return false;
        }
        if changed {
            // Cheap: the name map is shared, not copied.
            let mut patched = View::clone(&self.view);
            for (name, ip) in &gone {
                for (n, data) in instance_records(name, *ip, &vpc.name) {
                    patched.patch_remove(&n, DEFAULT_TTL, &data);
                }
            }
            for (name, ip) in came {
                for (n, data) in instance_records(name, ip, &vpc.name) {
                    patched.patch_add(n, DEFAULT_TTL, data);
                }
            }
            self.view = Arc::new(patched);
        }
        self.instances.clone_from(&vpc.instances);
        true
    }
}

/// A hash of what VPC `vi`'s view is built from besides its instances.
fn inputs_hash(plan: &Plan, vi: usize) -> u64 {
    use std::fmt::Write as _;
    use std::hash::Hasher as _;
    /// Feeds formatted text into a hasher without building the string.
    struct Feed(std::collections::hash_map::DefaultHasher);
    impl std::fmt::Write for Feed {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let vpc = &plan.vpcs[vi];
    let mut h = Feed(std::collections::hash_map::DefaultHasher::new());
    let zones: Vec<&ZonePlan> = plan.zones.iter().filter(|z| z.vpcs.contains(&vi)).collect();
    let eips: Vec<Ipv4Addr> = plan.eips.iter().map(|e| e.address).collect();
    let hosts: Vec<_> = plan
        .internet
        .hosts
        .iter()
        .map(|h| (h.ip, &h.dns_names))
        .collect();
    let _ = write!(
        h,
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        vpc.name, vpc.dns_firewall, vpc.egress_names, zones, eips, hosts, plan.internet.zones
    );
    h.0.finish()
}

/// The simulated internet's names, seen from every VPC.
fn internet(b: &mut ViewBuilder, plan: &Plan) {
    for eip in &plan.eips {
        let name = eip_name(eip.address);
        b.add_public(
            reverse_name(eip.address),
            DEFAULT_TTL,
            RData::PTR(PTR(name.clone())),
        );
        b.add_public(name, DEFAULT_TTL, RData::A(A(eip.address)));
    }
    for host in &plan.internet.hosts {
        if let Some(first) = host.dns_names.first() {
            b.add_public(
                reverse_name(host.ip),
                DEFAULT_TTL,
                RData::PTR(PTR(first.clone())),
            );
        }
        for name in &host.dns_names {
            b.add_public(name.clone(), DEFAULT_TTL, RData::A(A(host.ip)));
        }
    }
    for zone in &plan.internet.zones {
        public_zone(b, zone);
    }
}

/// A public zone's apex and records.
fn public_zone(b: &mut ViewBuilder, zone: &ZonePlan) {
    b.public_zone(zone.apex.clone());
    for r in &zone.records {
        b.add_public(r.name.clone(), r.ttl, r.data.to_rdata());
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    /// Two VPCs: `a` with `instances` (TOML inline tables), `b` with one instance.
    fn two_vpcs(instances: &str) -> Plan {
        crate::topology::parse(
            "t.toml",
            &format!(
                "[[vpc]]\nname = \"a\"\ncidr = \"10.0.0.0/16\"\n\
                 subnet = [{{ name = \"s\", cidr = \"10.0.1.0/24\" }}]\n\
                 instance = [{instances}]\n\
                 [[vpc]]\nname = \"b\"\ncidr = \"10.1.0.0/16\"\n\
                 subnet = [{{ name = \"s\", cidr = \"10.1.1.0/24\" }}]\n\
                 instance = [{{ name = \"x\", subnet = \"s\", ip = \"10.1.1.9\" }}]\n"
            ),
        )
        .expect("valid topology")
    }

    fn twenty() -> Vec<String> {
        (10..30)
            .map(|i| format!("{{ name = \"f{i}\", subnet = \"s\", ip = \"10.0.1.{i}\" }}"))
            .collect()
    }

    /// Issue 20 (constant-cost attach): the cached views patched by attach, detach and a moved
    /// address equal the views built from scratch, and a VPC nothing touched keeps its view.
    #[test]
    fn cached_views_patched_by_instance_changes_equal_views_built_anew() {
        let plan = two_vpcs;
        let many = twenty();
        let mut cache = ViewCache::default();
        let first = plan(&many.join(", "));
        let v0 = cache.views(&first);
        // Attach one, detach one, move one to another address.
        let mut next = many.clone();
        next.push("{ name = \"new\", subnet = \"s\", ip = \"10.0.1.200\" }".into());
        next.remove(0);
        next[3] = "{ name = \"f14\", subnet = \"s\", ip = \"10.0.1.99\" }".into();
        let second = plan(&next.join(", "));
        let v1 = cache.views(&second);
        let fresh = views(&second);
        for (patched, built) in v1.iter().zip(&fresh) {
            assert_eq!(patched.without_empty_names(), built.without_empty_names());
        }
        assert!(Arc::ptr_eq(&v0[1], &v1[1]), "VPC b changed nothing");
        assert!(!Arc::ptr_eq(&v0[0], &v1[0]));
        // The detached instance's names are gone (NXDOMAIN, not an empty name).
        let gone = instance_name("f10", "a").expect("a name");
        assert!(v1[0].records(&gone).is_none());
        assert!(v0[0].records(&gone).is_some());
    }

    /// As the API's changes make plans: the next plan shares every untouched instance's `Arc`,
    /// so the cache finds the kept ends by pointer and compares only the changed middle.
    #[test]
    fn plans_that_share_instances_patch_only_what_changed() {
        let first = two_vpcs(&twenty().join(", "));
        let mut cache = ViewCache::default();
        let v0 = cache.views(&first);
        let mut second = first.clone();
        let list = &mut second.vpcs[0].instances;
        list.remove(5);
        list[7] = Arc::new(InstancePlan {
            ip: Ipv4Addr::new(10, 0, 1, 99),
            ..InstancePlan::clone(&list[7])
        });
        let template = InstancePlan::clone(&list[0]);
        list.push(Arc::new(InstancePlan {
            name: "new".into(),
            port: "a/new".into(),
            ip: Ipv4Addr::new(10, 0, 1, 200),
            ..template
        }));
        let v1 = cache.views(&second);
        for (patched, built) in v1.iter().zip(&views(&second)) {
            assert_eq!(patched.without_empty_names(), built.without_empty_names());
        }
        assert!(Arc::ptr_eq(&v0[1], &v1[1]), "VPC b changed nothing");
        // Nothing changed: the same view again.
        let v2 = cache.views(&second);
        assert!(Arc::ptr_eq(&v1[0], &v2[0]));
        // Detached in the middle, moved, attached: each answers as built.
        let name = |n: &str| instance_name(n, "a").expect("a name");
        assert!(v1[0].records(&name("f15")).is_none());
        assert!(v1[0].records(&name("new")).is_some());
        assert!(v0[0].records(&name("new")).is_none());
    }
    use crate::dns::{Transport, answer};

    const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24" }]
instance = [{ name = "web", subnet = "app", ip = "10.0.1.10" }]

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24" }]
instance = [{ name = "web", subnet = "app", ip = "10.0.1.20" }]

[[eip]]
name = "e"
address = "203.0.113.5"

[[zone]]
name = "corp.example"
vpcs = ["tenant-a"]
record = [{ name = "db", type = "A", value = "10.0.1.30" }]

[internet]
host = [{ name = "api", ip = "198.51.100.10", dns_names = ["api.example.com"] }]
"#;

    fn ask(view: &View, name: &str, qtype: RecordType) -> (ResponseCode, Vec<String>) {
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let a = answer(view, &m.to_vec().unwrap(), Transport::Udp).unwrap();
        let data = a.answers.iter().map(|r| r.data.to_string()).collect();
        (a.rcode, data)
    }

    #[test]
    fn each_vpc_sees_its_own_instances_and_zones_and_the_internet() {
        let plan = crate::topology::parse("dns.toml", TOPOLOGY).unwrap();
        let v = views(&plan);
        let ok = ResponseCode::NoError;
        let nx = ResponseCode::NXDomain;
        let a = |s: &str| vec![s.to_string()];
        assert_eq!(
            ask(&v[0], "web.tenant-a.vpc.internal.", RecordType::A),
            (ok, a("10.0.1.10"))
        );
        assert_eq!(
            ask(&v[1], "web.tenant-b.vpc.internal.", RecordType::A),
            (ok, a("10.0.1.20"))
        );
        assert_eq!(
            ask(&v[0], "ip-10-0-1-10.tenant-a.vpc.internal.", RecordType::A).1,
            a("10.0.1.10")
        );
        // Isolation: a VPC never learns another's instances or private zones.
        assert_eq!(
            ask(&v[1], "web.tenant-a.vpc.internal.", RecordType::A).0,
            nx
        );
        assert_eq!(
            ask(&v[0], "db.corp.example.", RecordType::A),
            (ok, a("10.0.1.30"))
        );
        assert_eq!(ask(&v[1], "db.corp.example.", RecordType::A).0, nx);
        // Overlapping CIDRs: each VPC's reverse name is its own instance.
        assert_eq!(
            ask(&v[0], "10.1.0.10.in-addr.arpa.", RecordType::PTR).1,
            a("web.tenant-a.vpc.internal.")
        );
        assert_eq!(ask(&v[1], "10.1.0.10.in-addr.arpa.", RecordType::PTR).0, nx);
        // RFC 6303: a private address nobody has is NXDOMAIN here, with the zone's SOA (never
        // another server's question).
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("99.1.0.10.in-addr.arpa.").unwrap(),
            RecordType::PTR,
        ));
        let cache = crate::dns::Cache::default();
        let forwarding = Some((&cache, crate::time::Instant::ZERO));
        match crate::dns::step(&v[0], &m.to_vec().unwrap(), Transport::Udp, forwarding) {
            Ok(crate::dns::Step::Answer(a)) => assert_eq!(a.rcode, nx),
            other => panic!("answered locally, not forwarded: {other:?}"),
        }
        // The simulated internet, from both.
        for view in &v {
            assert_eq!(
                ask(view, "api.example.com.", RecordType::A),
                (ok, a("198.51.100.10"))
            );
            assert_eq!(
                ask(view, "5.113.0.203.in-addr.arpa.", RecordType::PTR).1,
                a("eip-203-0-113-5.vpc.internal.")
            );
            assert_eq!(
                ask(view, "eip-203-0-113-5.vpc.internal.", RecordType::A).1,
                a("203.0.113.5")
            );
        }
    }
}
