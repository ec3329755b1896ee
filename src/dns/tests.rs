//! The resolver's answers, query by query, and its invariants under arbitrary input.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use proptest::prelude::*;

use super::answer::{MAX_CNAME_CHAIN, MAX_UDP_PAYLOAD};
use super::names::{instance_name, parse_domain, reverse_name, vpc_domain};
use super::*;

fn n(s: &str) -> Name {
    parse_domain(s).unwrap()
}

fn a(addr: [u8; 4]) -> RData {
    RData::A(A(Ipv4Addr::from(addr)))
}

/// A VPC `tenant-a` with one instance, a private zone `corp.example` with a CNAME, 60 A records
/// at `many.corp.example` (too many for 512 bytes) and a loop of CNAMEs.
fn view() -> View {
    let mut b = ViewBuilder::new();
    b.authority(vpc_domain("tenant-a").unwrap());
    let web = instance_name("web", "tenant-a").unwrap();
    b.add(web.clone(), 60, a([10, 0, 1, 10]));
    b.add(
        reverse_name(Ipv4Addr::new(10, 0, 1, 10)),
        60,
        RData::PTR(PTR(web)),
    );
    b.private_zone(n("corp.example"));
    b.add(n("db.corp.example"), 300, a([10, 0, 1, 20]));
    b.add(
        n("www.corp.example"),
        300,
        RData::CNAME(CNAME(n("db.corp.example"))),
    );
    for i in 0..60 {
        b.add(n("many.corp.example"), 300, a([10, 0, 2, i]));
    }
    b.add(
        n("l1.corp.example"),
        300,
        RData::CNAME(CNAME(n("l2.corp.example"))),
    );
    b.add(
        n("l2.corp.example"),
        300,
        RData::CNAME(CNAME(n("l1.corp.example"))),
    );
    b.build()
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(v: &View, name: &str, qtype: RecordType, t: Transport) -> (Answered, Message) {
    let answered = answer(v, &query(name, qtype, None), t).expect("answered");
    let parsed = Message::from_vec(&answered.wire).expect("a response that parses");
    (answered, parsed)
}

#[test]
fn instance_name_and_its_ptr() {
    let v = view();
    let (_, m) = ask(
        &v,
        "web.tenant-a.vpc.internal.",
        RecordType::A,
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.metadata.id, 0x1234);
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    assert_eq!(m.answers[0].data, a([10, 0, 1, 10]));
    let (_, m) = ask(
        &v,
        "10.1.0.10.in-addr.arpa.",
        RecordType::PTR,
        Transport::Udp,
    );
    assert_eq!(
        m.answers[0].data,
        RData::PTR(PTR(n("web.tenant-a.vpc.internal")))
    );
}

#[test]
fn names_are_case_insensitive() {
    let (_, m) = ask(
        &view(),
        "WEB.Tenant-A.vpc.internal.",
        RecordType::A,
        Transport::Udp,
    );
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn rfc2308_nxdomain_and_nodata_carry_the_soa() {
    let v = view();
    let (x, m) = ask(&v, "nope.corp.example.", RecordType::A, Transport::Udp);
    assert_eq!(x.rcode, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].name, n("corp.example"));
    let (x, m) = ask(&v, "db.corp.example.", RecordType::AAAA, Transport::Udp);
    assert_eq!(x.rcode, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn names_outside_every_zone_are_nxdomain() {
    let (x, m) = ask(&view(), "example.org.", RecordType::A, Transport::Udp);
    assert_eq!(x.rcode, ResponseCode::NXDomain);
    assert!(m.authorities.is_empty());
    assert!(!m.metadata.authoritative);
}

#[test]
fn cname_is_followed_inside_the_view() {
    let (x, m) = ask(&view(), "www.corp.example.", RecordType::A, Transport::Udp);
    assert_eq!(x.rcode, ResponseCode::NoError);
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, vec![RecordType::CNAME, RecordType::A]);
    let (_, m) = ask(
        &view(),
        "www.corp.example.",
        RecordType::CNAME,
        Transport::Udp,
    );
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn a_cname_loop_ends_in_servfail() {
    let (x, _) = ask(&view(), "l1.corp.example.", RecordType::A, Transport::Udp);
    assert_eq!(x.rcode, ResponseCode::ServFail);
    assert_eq!(x.answers.len(), MAX_CNAME_CHAIN + 1);
}

#[test]
fn rfc1035_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let v = view();
    let (udp, m) = ask(&v, "many.corp.example.", RecordType::A, Transport::Udp);
    assert!(udp.truncated && m.metadata.truncation);
    assert!(m.answers.is_empty() && udp.wire.len() <= 512);
    assert_eq!(m.queries.len(), 1);
    let (tcp, m) = ask(&v, "many.corp.example.", RecordType::A, Transport::Tcp);
    assert!(!tcp.truncated && !m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
}

#[test]
fn rfc6891_edns_raises_the_udp_limit_up_to_1232() {
    let v = view();
    let q = query("many.corp.example.", RecordType::A, Some(4096));
    let x = answer(&v, &q, Transport::Udp).unwrap();
    let m = Message::from_vec(&x.wire).unwrap();
    // 60 A records are about 1000 bytes: they fit 1232.
    assert!(!x.truncated, "{} bytes", x.wire.len());
    assert_eq!(m.answers.len(), 60);
    assert_eq!(
        m.edns.as_ref().map(|e| e.max_payload()),
        Some(MAX_UDP_PAYLOAD)
    );
}

#[test]
fn malformed_queries_get_formerr_or_a_counted_drop() {
    let v = view();
    let mut counters = Counters::default();
    let short = answer(&v, &[0u8; 11], Transport::Udp);
    assert_eq!(short, Err(DnsDrop::TooShort));
    counters.record(&short);
    // A valid header promising a question that is not there.
    let mut bad = query("web.tenant-a.vpc.internal.", RecordType::A, None);
    bad.truncate(14);
    let x = answer(&v, &bad, Transport::Udp).unwrap();
    assert_eq!(x.rcode, ResponseCode::FormErr);
    assert_eq!(Message::from_vec(&x.wire).unwrap().metadata.id, 0x1234);
    counters.record(&Ok(x));
    // A response sent to the resolver is never answered.
    let mut response = query("web.tenant-a.vpc.internal.", RecordType::A, None);
    response[2] |= 0x80;
    let x = answer(&v, &response, Transport::Udp);
    assert_eq!(x, Err(DnsDrop::NotAQuery));
    counters.record(&x);
    assert_eq!(
        (
            counters.dropped_too_short,
            counters.formerr,
            counters.dropped_not_a_query
        ),
        (1, 1, 1)
    );
    assert_eq!(counters.queries(), 3);
}

#[test]
fn other_opcodes_classes_and_transfers_are_refused() {
    let v = view();
    let mut m = Message::new(7, MessageType::Query, OpCode::Status);
    m.add_query(Query::query(n("db.corp.example"), RecordType::A));
    let x = answer(&v, &m.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(x.rcode, ResponseCode::NotImp);
    let (x, _) = ask(&v, "corp.example.", RecordType::AXFR, Transport::Tcp);
    assert_eq!(x.rcode, ResponseCode::NotImp);
    let mut q = Query::query(n("db.corp.example"), RecordType::A);
    q.set_query_class(DNSClass::CH);
    let mut m = Message::new(8, MessageType::Query, OpCode::Query);
    m.add_query(q);
    let x = answer(&v, &m.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(x.rcode, ResponseCode::Refused);
}

#[test]
fn two_questions_are_formerr() {
    let mut m = Message::new(9, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(n("db.corp.example"), RecordType::A));
    m.add_query(Query::query(n("www.corp.example"), RecordType::A));
    let x = answer(&view(), &m.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(x.rcode, ResponseCode::FormErr);
}

/// A query for one of the view's names or a random one, of a random type, with or without EDNS.
fn any_query() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "web.tenant-a.vpc.internal.",
        "many.corp.example.",
        "www.corp.example.",
        "l1.corp.example.",
        "nope.corp.example.",
        "example.org.",
        "10.1.0.10.in-addr.arpa.",
    ]);
    let types = prop::sample::select(vec![
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::ANY,
        RecordType::PTR,
        RecordType::TXT,
    ]);
    (names, types, prop::option::of(0u16..5000)).prop_map(|(name, t, edns)| query(name, t, edns))
}

proptest! {
    /// Arbitrary bytes: an answer or a counted drop, never a panic; an answer always parses and
    /// carries the query's id.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let v = view();
        for t in [Transport::Udp, Transport::Tcp] {
            if let Ok(x) = answer(&v, &bytes, t) {
                let m = Message::from_vec(&x.wire).expect("every response parses");
                prop_assert_eq!(m.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
                prop_assert_eq!(m.metadata.message_type, MessageType::Response);
            }
        }
    }

    /// Valid queries mutated at one byte still never panic.
    #[test]
    fn mutated_queries_never_panic(q in any_query(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut q = q;
        let i = at.index(q.len());
        q[i] = b;
        let _ = answer(&view(), &q, Transport::Udp);
    }

    /// Over UDP a response fits the limit; it is the TCP response, or that response truncated.
    #[test]
    fn udp_fits_and_agrees_with_tcp(q in any_query()) {
        let v = view();
        let udp = answer(&v, &q, Transport::Udp).unwrap();
        let tcp = answer(&v, &q, Transport::Tcp).unwrap();
        prop_assert!(udp.wire.len() <= usize::from(answer::MAX_UDP_PAYLOAD));
        prop_assert_eq!(udp.rcode, tcp.rcode);
        prop_assert!(!tcp.truncated);
        if udp.truncated {
            prop_assert!(udp.answers.is_empty());
            prop_assert!(tcp.wire.len() > 512);
        } else {
            prop_assert_eq!(&udp.answers, &tcp.answers);
        }
    }
}

/// [`view`] with DNS Firewall rules: `db.corp.example` allowed, the rest of `corp.example`
/// blocked with NXDOMAIN, `*.ads.example` NODATA, `phish.example` overridden, `*.example`
/// alerted.
fn firewalled() -> View {
    use super::firewall::{Action, BlockResponse, DomainPattern, Rule};
    let rule = |name: &str, d: DomainPattern, action: Action| Rule {
        name: name.into(),
        domains: vec![d],
        action,
    };
    let mut b = ViewBuilder::new();
    b.private_zone(n("corp.example"));
    b.add(n("db.corp.example"), 300, a([10, 0, 1, 20]));
    b.add(n("www.corp.example"), 300, a([10, 0, 1, 21]));
    b.firewall(vec![
        rule(
            "db-ok",
            DomainPattern::Exact(n("db.corp.example")),
            Action::Allow,
        ),
        rule(
            "corp-off",
            DomainPattern::Below(n("corp.example")),
            Action::Block(BlockResponse::NxDomain),
        ),
        rule(
            "ads",
            DomainPattern::Below(n("ads.example")),
            Action::Block(BlockResponse::NoData),
        ),
        rule(
            "phish",
            DomainPattern::Exact(n("phish.example")),
            Action::Block(BlockResponse::Override {
                target: n("walled.example"),
                ttl: 30,
            }),
        ),
        rule("watch", DomainPattern::Below(n("example")), Action::Alert),
    ]);
    b.build()
}

#[test]
fn route53_dns_firewall_allows_blocks_and_alerts_first_match_first() {
    let v = firewalled();
    let mut counters = Counters::default();
    let mut go = |name: &str| {
        let x = answer(&v, &query(name, RecordType::A, None), Transport::Udp).unwrap();
        counters.record(&Ok(x.clone()));
        x
    };
    let ok = go("db.corp.example.");
    assert_eq!((ok.rcode, ok.answers.len()), (ResponseCode::NoError, 1));
    assert_eq!(ok.firewall.as_ref().map(|f| f.action), Some("ALLOW"));
    let nx = go("www.corp.example.");
    assert_eq!((nx.rcode, nx.answers.len()), (ResponseCode::NXDomain, 0));
    assert_eq!(
        nx.firewall.as_ref().map(|f| f.rule.as_str()),
        Some("corp-off")
    );
    let nodata = go("x.ads.example.");
    assert_eq!(
        (nodata.rcode, nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let over = go("phish.example.");
    assert_eq!(
        over.answers[0].data,
        RData::CNAME(CNAME(n("walled.example")))
    );
    assert_eq!(over.answers[0].ttl, 30);
    let alert = go("other.example.");
    assert_eq!(
        alert.rcode,
        ResponseCode::NXDomain,
        "answered as without the rule"
    );
    assert_eq!(alert.firewall.as_ref().map(|f| f.action), Some("ALERT"));
    assert!(go("example.org.").firewall.is_none());
    assert_eq!((counters.blocked, counters.alerted), (3, 1));
}

/// The upstream's response to `query` (our id): `n` A records for its question.
fn upstream_answer(query: &[u8], n: u8) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.add_query(q.queries[0].clone());
    for i in 0..n {
        r.add_answer(Record::from_rdata(
            q.queries[0].name().clone(),
            120,
            a([198, 51, 100, i]),
        ));
    }
    r.to_vec().unwrap()
}

fn forward_of(v: &View, name: &str, cache: &Cache, now: crate::time::Instant) -> Step {
    step(
        v,
        &query(name, RecordType::A, None),
        Transport::Udp,
        Some((cache, now)),
    )
    .unwrap()
}

#[test]
fn forwarded_answers_carry_the_clients_id_and_are_cached_unless_huge() {
    let v = view();
    let mut cache = Cache::default();
    let t0 = crate::time::Instant::from_secs(10);
    // The VPC's own names are never forwarded.
    assert!(matches!(
        forward_of(&v, "db.corp.example.", &cache, t0),
        Step::Answer(_)
    ));
    let Step::Forward(f) = forward_of(&v, "api.example.org.", &cache, t0) else {
        panic!("a name outside the view is forwarded");
    };
    let up = f.upstream_query(0xbeef);
    assert_eq!(Message::from_vec(&up).unwrap().metadata.id, 0xbeef);
    // An answer to another id is not taken.
    let wrong = upstream_answer(&f.upstream_query(0x0001), 1);
    assert_eq!(
        f.finish(0xbeef, &wrong, &mut cache, t0).rcode,
        ResponseCode::ServFail
    );
    let done = f.finish(0xbeef, &upstream_answer(&up, 1), &mut cache, t0);
    assert_eq!(Message::from_vec(&done.wire).unwrap().metadata.id, 0x1234);
    assert_eq!((done.source, done.answers.len()), (Source::Upstream, 1));
    let Step::Answer(hit) = forward_of(&v, "API.example.org.", &cache, t0) else {
        panic!("the second ask is answered from the cache");
    };
    assert_eq!(hit.source, Source::Cache);
    // 250 records are more than MAX_CACHED_RESPONSE bytes: answered, not kept.
    let Step::Forward(big) = forward_of(&v, "big.example.org.", &cache, t0) else {
        panic!("forwarded");
    };
    let up = big.upstream_query(7);
    let reply = upstream_answer(&up, 250);
    assert!(reply.len() > super::answer::MAX_CACHED_RESPONSE);
    let done = big.finish(7, &reply, &mut cache, t0);
    assert!(
        done.truncated,
        "too large for UDP: the client retries over TCP"
    );
    assert!(matches!(
        forward_of(&v, "big.example.org.", &cache, t0),
        Step::Forward(_)
    ));
}

#[test]
fn a_cname_leaving_the_view_is_followed_upstream_like_a_recursive_resolver() {
    let mut b = ViewBuilder::new();
    b.private_zone(n("corp.example"));
    b.add(
        n("cdn.corp.example"),
        60,
        RData::CNAME(CNAME(n("edge.cdn.example.net"))),
    );
    let v = b.build();
    let mut cache = Cache::default();
    let t0 = crate::time::Instant::from_secs(10);
    // Without forwarding: the chain alone, NOERROR.
    let (x, m) = ask(&v, "cdn.corp.example.", RecordType::A, Transport::Udp);
    assert_eq!((x.rcode, m.answers.len()), (ResponseCode::NoError, 1));
    // With forwarding: the target is asked upstream under its own question.
    let Step::Forward(f) = forward_of(&v, "cdn.corp.example.", &cache, t0) else {
        panic!("the chain's target is forwarded");
    };
    assert_eq!(f.question().name(), &n("cdn.corp.example"));
    assert_eq!(f.upstream_question().name(), &n("edge.cdn.example.net"));
    let up = f.upstream_query(0x0042);
    assert_eq!(
        Message::from_vec(&up).unwrap().queries[0].name(),
        &n("edge.cdn.example.net")
    );
    let done = f.finish(0x0042, &upstream_answer(&up, 2), &mut cache, t0);
    let m = Message::from_vec(&done.wire).unwrap();
    assert_eq!(
        m.queries[0].name(),
        &n("cdn.corp.example"),
        "the client's question"
    );
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        vec![RecordType::CNAME, RecordType::A, RecordType::A],
        "the chain, then the target's records"
    );
    assert_eq!(done.source, Source::Upstream);
    // The target's answer is cached under the target: the next ask is a cache hit with the
    // chain in front again.
    let Step::Answer(hit) = forward_of(&v, "cdn.corp.example.", &cache, t0) else {
        panic!("answered from the cache");
    };
    assert_eq!((hit.source, hit.answers.len()), (Source::Cache, 3));
    assert_eq!(hit.answers[0].record_type(), RecordType::CNAME);
}
