//! What one VPC's resolver knows: every name it answers, and the domains it answers for with
//! authority (NXDOMAIN below them, with their SOA).
//!
//! A [`View`] is built once per topology change (`topology::compile::dns` drives a
//! [`ViewBuilder`]) and read by [`super::answer`]; it never changes afterwards, so it compares
//! with `==` for live reload (two views are equal exactly when they answer every query alike).
//!
//! Split horizon, as Route 53 does it: a private zone associated with the VPC hides every public
//! name at or below its apex, so a name inside the private zone that the zone does not hold is
//! NXDOMAIN even when the simulated internet has it.

use std::collections::HashSet;
use std::sync::Arc;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::egress::EgressName;
use super::firewall::Rule;
use super::names::{internal_domain, is_within};

/// The TTL of the names vpcd makes (instances, EIPs, reverse names), as AWS's resolver uses.
pub const DEFAULT_TTL: u32 = 60;
/// The negative-caching TTL of every SOA (RFC 2308).
const NEGATIVE_TTL: u32 = 60;

/// One record's data and TTL at a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ttl: u32,
    pub data: RData,
}

/// One VPC's names. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Name -> its records; an empty list is an empty non-terminal (a name that exists only
    /// because names below it do: NODATA, not NXDOMAIN). A persistent map: a change's patched
    /// view shares every untouched name with the view the resolver still answers from, so
    /// attaching one instance to a VPC of 10,000 copies a few nodes, not 30,000 names (and
    /// dropping the old view frees only those nodes).
    names: imbl::HashMap<Name, Vec<Entry>>,
    /// Apexes answered with authority (as fully qualified names).
    authorities: Arc<HashSet<Name>>,
    /// The VPC's DNS Firewall rules, in order.
    firewall: Vec<Rule>,
    /// The names whose answers become allowed egress destinations.
    egress_names: Vec<EgressName>,
}

/// Equal views answer every query alike. A view patched from another shares its name map's
/// nodes, so comparing two that share the whole map costs nothing (imbl's own comparison walks
/// every name).
impl PartialEq for View {
    fn eq(&self, other: &View) -> bool {
        (self.names.ptr_eq(&other.names) || self.names == other.names)
            && (Arc::ptr_eq(&self.authorities, &other.authorities)
                || self.authorities == other.authorities)
            && self.firewall == other.firewall
            && self.egress_names == other.egress_names
    }
}

impl Eq for View {}

impl View {
    /// Adds one record of this VPC's own to a finished view, with the empty non-terminals up to
    /// its authority's apex, as [`ViewBuilder::add`] does: an instance attached since the view
    /// was built. For names below the view's own authorities (an instance's names).
    pub fn patch_add(&mut self, name: Name, ttl: u32, data: RData) {
        insert(
            &mut self.names,
            &self.authorities,
            name,
            Entry { ttl, data },
        );
    }

    /// Removes one record [`View::patch_add`] or the builder added; the name goes too once it
    /// holds nothing (an instance's names are leaves; the empty non-terminals above it stay).
    pub fn patch_remove(&mut self, name: &Name, ttl: u32, data: &RData) {
        if let Some(entries) = self.names.get_mut(name) {
            entries.retain(|e| !(e.ttl == ttl && e.data == *data));
            if entries.is_empty() {
                self.names.remove(name);
            }
        }
    }

    /// The view without its empty non-terminals (tests compare patched and built views).
    #[cfg(test)]
    pub(crate) fn without_empty_names(&self) -> View {
        let mut v = self.clone();
        v.names.retain(|_, e| !e.is_empty());
        v
    }

    /// The records at `name` (`None`: the name does not exist here).
    pub fn records(&self, name: &Name) -> Option<&[Entry]> {
        self.names.get(name).map(Vec::as_slice)
    }

    /// The deepest apex this view answers for that contains `name`, with its SOA record.
    pub fn authority_of(&self, name: &Name) -> Option<Record> {
        deepest_apex(&self.authorities, name).map(|apex| soa_record(&apex))
    }

    /// The VPC's DNS Firewall rules, in order.
    pub fn firewall(&self) -> &[Rule] {
        &self.firewall
    }

    /// The names whose answers become allowed egress destinations (`dns::egress`).
    pub fn egress_names(&self) -> &[EgressName] {
        &self.egress_names
    }

    /// How many names the view holds (empty non-terminals included).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the view holds no name at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The deepest of `apexes` that contains `name` (`name` itself, or the nearest ancestor in the
/// set): one set lookup per label of `name`, whatever the number of apexes (a VPC has about a
/// hundred: its own domain, the private and public zones, RFC 6303's reverse zones).
fn deepest_apex(apexes: &HashSet<Name>, name: &Name) -> Option<Name> {
    let mut up = name.clone();
    up.set_fqdn(true);
    loop {
        if apexes.contains(&up) {
            return Some(up);
        }
        if up.is_root() {
            return None;
        }
        up = up.base_name();
    }
}

/// `name` as the apex sets hold it (fully qualified).
fn fqdn(mut name: Name) -> Name {
    name.set_fqdn(true);
    name
}

/// The SOA record of `apex`: vpcd's resolver is the primary, with a short negative TTL so a name
/// added by a reload is seen within a minute.
fn soa_record(apex: &Name) -> Record {
    let internal = internal_domain();
    let host = |label: &str| {
        Name::from_ascii(label)
            .and_then(|n| n.append_domain(&internal))
            .expect("a fixed label under the internal domain is a valid name")
    };
    let soa = SOA::new(
        host("resolver"),
        host("hostmaster"),
        1,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    );
    Record::from_rdata(apex.clone(), NEGATIVE_TTL, RData::SOA(soa))
}

/// Builds a [`View`]. Private zones are declared with [`ViewBuilder::private_zone`] before or
/// after the public names: shadowing is applied in [`ViewBuilder::build`].
#[derive(Debug, Default)]
pub struct ViewBuilder {
    view: View,
    /// Apexes of the private zones associated with this VPC.
    private: Vec<Name>,
    /// Public records, kept until `build` knows every private apex.
    public: Vec<(Name, Entry)>,
    /// Public apexes (the simulated internet's zones), kept likewise.
    public_authorities: Vec<Name>,
    /// Every apex so far, the public ones included: where `insert` stops adding empty
    /// non-terminals.
    apexes: HashSet<Name>,
}

impl ViewBuilder {
    pub fn new() -> ViewBuilder {
        ViewBuilder::default()
    }

    /// Answers for `apex` with authority (vpcd's own domains, a private zone).
    pub fn authority(&mut self, apex: Name) {
        let apex = fqdn(apex);
        self.apexes.insert(apex.clone());
        Arc::make_mut(&mut self.view.authorities).insert(apex);
    }

    /// A private zone associated with this VPC: authoritative, and hides the public names at or
    /// below `apex`.
    pub fn private_zone(&mut self, apex: Name) {
        self.private.push(apex.clone());
        self.authority(apex);
    }

    /// A public zone (the simulated internet's), unless a private zone hides it.
    pub fn public_zone(&mut self, apex: Name) {
        let apex = fqdn(apex);
        self.apexes.insert(apex.clone());
        self.public_authorities.push(apex);
    }

    /// A record of this VPC's own (an instance's name, a private zone's record).
    pub fn add(&mut self, name: Name, ttl: u32, data: RData) {
        self.insert(name, Entry { ttl, data });
    }

    /// A public record (an EIP's name, an internet host's, a public zone's), unless a private
    /// zone hides it.
    pub fn add_public(&mut self, name: Name, ttl: u32, data: RData) {
        self.public.push((name, Entry { ttl, data }));
    }

    /// The VPC's DNS Firewall rules, in order.
    pub fn firewall(&mut self, rules: Vec<Rule>) {
        self.view.firewall = rules;
    }

    /// The names whose answers become allowed egress destinations.
    pub fn egress_names(&mut self, names: Vec<EgressName>) {
        self.view.egress_names = names;
    }

    /// The finished view.
    pub fn build(mut self) -> View {
        let hidden = |private: &[Name], name: &Name| private.iter().any(|p| is_within(name, p));
        for apex in std::mem::take(&mut self.public_authorities) {
            if !hidden(&self.private, &apex) {
                self.authority(apex);
            }
        }
        for (name, entry) in std::mem::take(&mut self.public) {
            if !hidden(&self.private, &name) {
                self.insert(name, entry);
            }
        }
        self.view
    }

    /// Adds `entry` at `name` (once: an identical record twice is one record), and the empty
    /// non-terminals between `name` and its authority's apex.
    fn insert(&mut self, name: Name, entry: Entry) {
        insert(&mut self.view.names, &self.apexes, name, entry);
    }
}

/// Adds `entry` at `name` in `names` (once), and the empty non-terminals between `name` and the
/// deepest of `apexes` containing it.
fn insert(
    names: &mut imbl::HashMap<Name, Vec<Entry>>,
    apexes: &HashSet<Name>,
    name: Name,
    entry: Entry,
) {
    let mut up = name.base_name();
    let apex_labels = deepest_apex(apexes, &name)
        .map(|apex| apex.num_labels())
        // Outside every authority a name has no empty non-terminals: its parents are not ours
        // to answer.
        .unwrap_or(u8::MAX);
    while up.num_labels() >= apex_labels && !up.is_root() {
        names.entry(up.clone()).or_default();
        up = up.base_name();
    }
    let entries = names.entry(name).or_default();
    if !entries.contains(&entry) {
        entries.push(entry);
    }
}

/// Whether an entry answers a question of type `qtype`.
pub fn matches(entry: &Entry, qtype: RecordType) -> bool {
    qtype == RecordType::ANY || entry.data.record_type() == qtype
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::A;

    use super::*;
    use crate::dns::names::parse_domain;

    fn n(s: &str) -> Name {
        parse_domain(s).unwrap()
    }

    fn a(last: u8) -> RData {
        RData::A(A(Ipv4Addr::new(198, 51, 100, last)))
    }

    #[test]
    fn empty_non_terminals_exist_up_to_the_apex() {
        let mut b = ViewBuilder::new();
        b.private_zone(n("corp.example"));
        b.add(n("_sip._tcp.corp.example"), 60, a(1));
        let v = b.build();
        assert_eq!(v.records(&n("_tcp.corp.example")), Some(&[][..]));
        assert_eq!(v.records(&n("corp.example")), Some(&[][..]));
        assert_eq!(v.records(&n("example")), None);
        assert_eq!(
            v.records(&n("_SIP._tcp.Corp.Example")).map(<[_]>::len),
            Some(1)
        );
    }

    #[test]
    fn a_private_zone_hides_public_names_below_its_apex() {
        let mut b = ViewBuilder::new();
        b.public_zone(n("example.com"));
        b.add_public(n("api.example.com"), 60, a(10));
        b.add_public(n("www.example.com"), 60, a(11));
        b.private_zone(n("api.example.com"));
        b.add(n("api.example.com"), 60, a(20));
        let v = b.build();
        assert_eq!(
            v.records(&n("api.example.com")).unwrap(),
            &[Entry {
                ttl: 60,
                data: a(20)
            }]
        );
        assert_eq!(v.records(&n("www.example.com")).map(<[_]>::len), Some(1));
        let soa = v.authority_of(&n("x.api.example.com")).unwrap();
        assert_eq!(soa.name, n("api.example.com"));
        let soa = v.authority_of(&n("x.example.com")).unwrap();
        assert_eq!(soa.name, n("example.com"));
        assert!(v.authority_of(&n("example.org")).is_none());
    }

    #[test]
    fn views_differ_when_a_ttl_differs() {
        let build = |ttl| {
            let mut b = ViewBuilder::new();
            b.add(n("x.corp.example"), ttl, a(1));
            b.build()
        };
        assert_eq!(build(60), build(60));
        assert_ne!(build(60), build(61));
    }
}
