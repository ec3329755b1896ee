//! The VPC resolver end to end in the simulator: a query leaves an instance's smoltcp stack,
//! crosses the fabric to the resolver's port, and the answer comes back, over UDP and TCP, at
//! base + 2 and 169.254.169.253.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use vpcd::dns::Transport;
use vpcd::sim::Simulation;
use vpcd::sim::resolver::Upstream;

const TOPOLOGY: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24" }]
security_group = [{ name = "mute", egress = [] }]
instance = [
    { name = "web", subnet = "app", ip = "10.0.1.10", attach = "sim", security_groups = ["mute"] },
    { name = "db", subnet = "app", ip = "10.0.1.20", attach = "sim" },
]

[[vpc]]
name = "tenant-b"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24" }]
instance = [{ name = "fn", subnet = "app", ip = "10.0.1.10", attach = "sim" }]

[[zone]]
name = "corp.example"
vpcs = ["tenant-a"]
record = [
    { name = "many", type = "TXT", value = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" },
    { name = "many", type = "TXT", value = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" },
    { name = "many", type = "TXT", value = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" },
]
"#;

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.set_edns(Edns::new());
    m.to_vec().unwrap()
}

fn ask(sim: &mut Simulation, from: &str, server: [u8; 4], q: &[u8], t: Transport) -> Message {
    let bytes = sim
        .dns_exchange(from, Ipv4Addr::from(server), q, t)
        .expect("a known endpoint")
        .unwrap_or_else(|| panic!("no answer from {server:?} over {t:?}"));
    Message::from_vec(&bytes).expect("a DNS response")
}

fn sim() -> Simulation {
    Simulation::parse("dns.toml", TOPOLOGY).expect("valid topology")
}

#[test]
fn an_instance_resolves_a_neighbour_at_both_resolver_addresses_over_udp() {
    let mut sim = sim();
    let q = query("db.tenant-a.vpc.internal.", RecordType::A);
    for server in [[10, 0, 0, 2], [169, 254, 169, 253]] {
        // `web`'s security group allows nothing out: the resolver is reached all the same.
        let m = ask(&mut sim, "tenant-a/web", server, &q, Transport::Udp);
        assert_eq!(m.metadata.id, 0x4242);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            m.answers[0].data,
            RData::A(Ipv4Addr::new(10, 0, 1, 20).into())
        );
    }
}

#[test]
fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let mut sim = sim();
    let q = query("many.corp.example.", RecordType::TXT);
    let udp = ask(&mut sim, "tenant-a/db", [10, 0, 0, 2], &q, Transport::Udp);
    assert!(udp.metadata.truncation && udp.answers.is_empty());
    for server in [[10, 0, 0, 2], [169, 254, 169, 253]] {
        let tcp = ask(&mut sim, "tenant-a/db", server, &q, Transport::Tcp);
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 3);
    }
}

#[test]
fn a_private_zone_and_the_vpc_names_answer_only_in_their_vpc() {
    let mut sim = sim();
    let m = ask(
        &mut sim,
        "tenant-b/fn",
        [10, 0, 0, 2],
        &query("many.corp.example.", RecordType::TXT),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(
        &mut sim,
        "tenant-b/fn",
        [10, 0, 0, 2],
        &query("db.tenant-a.vpc.internal.", RecordType::A),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Same address in both VPCs, each resolver names its own instance.
    let m = ask(
        &mut sim,
        "tenant-b/fn",
        [10, 0, 0, 2],
        &query("10.1.0.10.in-addr.arpa.", RecordType::PTR),
        Transport::Udp,
    );
    assert_eq!(m.answers[0].data.to_string(), "fn.tenant-b.vpc.internal.");
}

#[test]
fn the_resolver_answers_over_and_over_in_one_simulation() {
    let mut sim = sim();
    let q = query("web.tenant-a.vpc.internal.", RecordType::A);
    for _ in 0..5 {
        let m = ask(&mut sim, "tenant-a/db", [10, 0, 0, 2], &q, Transport::Tcp);
        assert_eq!(m.answers.len(), 1);
        let m = ask(&mut sim, "tenant-a/db", [10, 0, 0, 2], &q, Transport::Udp);
        assert_eq!(m.answers.len(), 1);
    }
}

/// An upstream that answers `api.example.org` A with 198.51.100.77 (TTL 30) and everything else
/// NXDOMAIN, counting what it is asked; `down` makes it answer nothing.
struct Scripted {
    asked: Arc<AtomicUsize>,
    down: bool,
    done: Vec<(u64, Option<Vec<u8>>)>,
}

impl Upstream for Scripted {
    fn submit(&mut self, token: u64, query: Vec<u8>) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let q = Message::from_vec(&query).expect("the resolver sends valid queries");
        assert!(q.metadata.recursion_desired);
        let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        r.add_query(q.queries[0].clone());
        if q.queries[0].name().to_ascii() == "api.example.org." {
            r.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                30,
                RData::A(Ipv4Addr::new(198, 51, 100, 77).into()),
            ));
        } else {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        let answer = (!self.down).then(|| r.to_vec().unwrap());
        self.done.push((token, answer));
        true
    }

    fn completed(&mut self) -> Vec<(u64, Option<Vec<u8>>)> {
        std::mem::take(&mut self.done)
    }
}

/// Makes tenant-a's resolver forward to a [`Scripted`] upstream that answers; what it was asked
/// is counted in the result.
fn forward_to_scripted(sim: &mut Simulation) -> Arc<AtomicUsize> {
    let asked = Arc::new(AtomicUsize::new(0));
    let up = Scripted {
        asked: asked.clone(),
        down: false,
        done: Vec::new(),
    };
    assert!(sim.forward_dns("tenant-a", Box::new(up)));
    asked
}

#[test]
fn other_names_are_forwarded_and_kept_for_their_ttl() {
    let mut sim = sim();
    let asked = forward_to_scripted(&mut sim);
    let q = query("api.example.org.", RecordType::A);
    for t in [Transport::Udp, Transport::Tcp, Transport::Udp] {
        let m = ask(&mut sim, "tenant-a/web", [10, 0, 0, 2], &q, t);
        assert_eq!(
            m.metadata.id, 0x4242,
            "the client's id, not the forwarder's"
        );
        assert_eq!(
            m.answers[0].data,
            RData::A(Ipv4Addr::new(198, 51, 100, 77).into())
        );
        assert!(m.answers[0].ttl <= 30);
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "asked once, then the cache answered"
    );
    let m = ask(
        &mut sim,
        "tenant-a/web",
        [10, 0, 0, 2],
        &query("nope.example.org.", RecordType::A),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // The VPC's own names are never forwarded.
    ask(
        &mut sim,
        "tenant-a/web",
        [10, 0, 0, 2],
        &query("db.tenant-a.vpc.internal.", RecordType::A),
        Transport::Udp,
    );
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    // After the TTL the name is asked again.
    sim.advance(std::time::Duration::from_secs(31));
    ask(&mut sim, "tenant-a/web", [10, 0, 0, 2], &q, Transport::Udp);
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    let c = sim.dns_counters("tenant-a").unwrap();
    assert_eq!((c.forwarded, c.cache_hits, c.upstream_failures), (3, 2, 0));
    // tenant-b does not forward: NXDOMAIN at once.
    let m = ask(&mut sim, "tenant-b/fn", [10, 0, 0, 2], &q, Transport::Udp);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn an_upstream_that_does_not_answer_is_servfail() {
    let mut sim = sim();
    let up = Scripted {
        asked: Arc::default(),
        down: true,
        done: Vec::new(),
    };
    sim.forward_dns("tenant-a", Box::new(up));
    let m = ask(
        &mut sim,
        "tenant-a/web",
        [10, 0, 0, 2],
        &query("api.example.org.", RecordType::A),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(sim.dns_counters("tenant-a").unwrap().upstream_failures, 1);
}

/// A [`Scripted`] upstream whose answers carry another id than the query's, as an off-path
/// forger's that guessed the question but not the id.
struct Forging(Scripted);

impl Upstream for Forging {
    fn submit(&mut self, token: u64, query: Vec<u8>) -> bool {
        self.0.submit(token, query)
    }

    fn completed(&mut self) -> Vec<(u64, Option<Vec<u8>>)> {
        let mut done = self.0.completed();
        for (_, answer) in &mut done {
            if let Some(a) = answer {
                a[0] ^= 0xff;
            }
        }
        done
    }
}

#[test]
fn an_upstream_answer_with_another_id_is_refused_counted_and_not_cached() {
    let mut sim = sim();
    let up = Forging(Scripted {
        asked: Arc::default(),
        down: false,
        done: Vec::new(),
    });
    sim.forward_dns("tenant-a", Box::new(up));
    let q = query("api.example.org.", RecordType::A);
    for _ in 0..2 {
        let m = ask(&mut sim, "tenant-a/web", [10, 0, 0, 2], &q, Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.answers.is_empty());
    }
    let c = sim.dns_counters("tenant-a").unwrap();
    // Not cached: both questions went upstream, both answers were thrown away.
    assert_eq!(
        (c.forwarded, c.cache_hits, c.upstream_mismatched),
        (2, 0, 2)
    );
}

const EGRESS_BY_NAME: &str = r#"
[[vpc]]
name = "t"
cidr = "10.0.0.0/16"
subnet = [
    { name = "app", cidr = "10.0.1.0/24", route_table = "out" },
    { name = "pub", cidr = "10.0.9.0/24" },
]
route_table = [{ name = "out", routes = [{ destination = "0.0.0.0/0", target = "nat:gw" }] }]
instance = [{ name = "fn", subnet = "app", ip = "10.0.1.10", attach = "sim" }]
nat_gateway = [{ name = "gw", subnet = "pub", eips = ["e"] }]

[[eip]]
name = "e"
address = "203.0.113.10"

[internet]
host = [
    { name = "pay", ip = "198.51.100.20", serve = ["tcp:443", "tcp:80"], attach = "sim", dns_names = ["api.payments.example"] },
    { name = "other", ip = "198.51.100.30", serve = ["tcp:443"], attach = "sim", dns_names = ["other.example"] },
]

[[egress_by_name]]
vpcs = ["t"]
allow = ["api.payments.example:443"]
"#;

#[test]
fn an_egress_allow_list_by_name_lets_the_answered_address_through_and_nothing_else() {
    use vpcd::sim::Observed;
    let mut sim = Simulation::parse("egress.toml", EGRESS_BY_NAME).expect("valid topology");
    let probe = |sim: &mut Simulation, to: &str| sim.probe("t/fn", to).expect("a valid probe");
    // Before any lookup the VPC may reach nothing (egress by name restricts it).
    let r = sim
        .check(
            "t/fn",
            "198.51.100.20:443/tcp",
            vpcd::topology::model::Expect::Deny,
        )
        .unwrap();
    assert_eq!(r.observed, Observed::Deny);
    assert!(
        r.drops
            .iter()
            .any(|(d, _)| *d == vpcd::dataplane::DropReason::EgressNotAllowed),
        "{:?}",
        r.drops
    );
    let m = ask(
        &mut sim,
        "t/fn",
        [10, 0, 0, 2],
        &query("api.payments.example.", RecordType::A),
        Transport::Udp,
    );
    assert_eq!(
        m.answers[0].data,
        RData::A(Ipv4Addr::new(198, 51, 100, 20).into())
    );
    assert_eq!(probe(&mut sim, "198.51.100.20:443/tcp"), Observed::Allow);
    // Only the rule's port, only the answered address, even after looking the other name up.
    assert_eq!(probe(&mut sim, "198.51.100.20:80/tcp"), Observed::Deny);
    ask(
        &mut sim,
        "t/fn",
        [10, 0, 0, 2],
        &query("other.example.", RecordType::A),
        Transport::Udp,
    );
    assert_eq!(probe(&mut sim, "198.51.100.30:443/tcp"), Observed::Deny);
    // The grant lasts the answer's TTL (60 s for a host's name).
    sim.advance(std::time::Duration::from_secs(61));
    assert_eq!(probe(&mut sim, "198.51.100.20:443/tcp"), Observed::Deny);
}

#[test]
fn probes_may_target_a_name_looked_up_through_the_resolver() {
    use vpcd::sim::Observed;
    let text = format!(
        "{EGRESS_BY_NAME}\n[[probe]]\nfrom = \"t/fn\"\nto = \"api.payments.example:443/tcp\"\nexpect = \"allow\"\n\n\
         [[probe]]\nfrom = \"t/fn\"\nto = \"other.example:443/tcp\"\nexpect = \"deny\"\n"
    );
    let mut sim = Simulation::parse("probes.toml", &text).expect("valid topology");
    assert_eq!(
        sim.plan().probes[0].to_addr,
        Ipv4Addr::new(198, 51, 100, 20)
    );
    let results = sim.run_probes();
    // The lookup at run time grants the egress the name rule allows, as for a real client.
    assert_eq!(results[0].observed, Observed::Allow, "{:?}", results[0]);
    assert_eq!(results[1].observed, Observed::Deny, "{:?}", results[1]);
    // Ad hoc, by name: the same.
    assert_eq!(
        sim.probe("t/fn", "api.payments.example:443/tcp").unwrap(),
        Observed::Allow
    );
    let err = sim.probe("t/fn", "nope.example:443/tcp").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`nope.example` does not resolve from t/fn: NXDOMAIN"
    );
}

#[test]
fn probes_reach_the_vpc_resolver_on_port_53_over_udp_and_tcp_past_security_groups() {
    use vpcd::topology::model::Expect;
    let mut sim = sim();
    // `web` has no egress rule at all: the resolver is reached anyway, as in AWS.
    for to in [
        "10.0.0.2:53/udp",
        "10.0.0.2:53/tcp",
        "169.254.169.253:53/udp",
        "169.254.169.253:53/tcp",
    ] {
        let r = sim.check("tenant-a/web", to, Expect::Allow).expect("probe");
        assert!(r.passed(), "{to}: {r:?}");
        assert_eq!(r.answered_by.as_deref(), Some("tenant-a#resolver"), "{to}");
    }
    // Nothing else listens there.
    let r = sim
        .check("tenant-a/web", "10.0.0.2:80/tcp", Expect::Deny)
        .expect("probe");
    assert!(r.passed(), "{r:?}");
}

#[test]
fn a_zone_cname_to_a_public_name_is_followed_upstream() {
    let topology = format!(
        "{TOPOLOGY}\n[[zone]]\nname = \"alias.example\"\nvpcs = [\"tenant-a\"]\nrecord = [{{ name = \"api\", type = \"CNAME\", value = \"api.example.org\" }}]\n"
    );
    let mut sim = Simulation::parse("dns.toml", &topology).expect("valid topology");
    let asked = forward_to_scripted(&mut sim);
    let q = query("api.alias.example.", RecordType::A);
    let m = ask(&mut sim, "tenant-a/web", [10, 0, 0, 2], &q, Transport::Udp);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let data: Vec<&RData> = m.answers.iter().map(|r| &r.data).collect();
    assert!(
        matches!(data.as_slice(), [RData::CNAME(_), RData::A(a)] if a.0 == Ipv4Addr::new(198, 51, 100, 77)),
        "{data:?}"
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "the target was asked upstream"
    );
}
