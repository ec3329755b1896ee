//! The resolver's one decision: a query's bytes in, the response's bytes out (or a counted drop).
//!
//! Sans-IO: [`answer`] reads a [`View`] and the query and returns what to send; the shell owns
//! the sockets (`sim::resolver`). Every input is answered or dropped, never a panic:
//! - shorter than a DNS header, or a response (QR set): dropped and counted ([`DnsDrop`]), as
//!   answering a response could start a loop between two servers;
//! - a header followed by something that does not parse: FORMERR, with the query's id;
//! - not one question: FORMERR; another opcode: NOTIMP; zone transfers: NOTIMP; a class other
//!   than IN: REFUSED;
//! - a name the view holds: its records (following CNAMEs inside the view, at most
//!   [`MAX_CNAME_CHAIN`] steps), or NODATA with the SOA; a name under one of the view's
//!   authorities that it does not hold: NXDOMAIN with the SOA; any other name: forwarded
//!   ([`step`] with forwarding), else NXDOMAIN;
//! - a CNAME chain that leaves the view (a zone's alias of a public name): with forwarding, the
//!   target is asked upstream (or found in the cache) and the answer is the chain followed by
//!   the target's records, as a recursive resolver gives it; without, the chain alone.
//!
//! Size: over UDP a response fits 512 bytes, or the query's EDNS payload size up to
//! [`MAX_UDP_PAYLOAD`]; a larger one is sent truncated (TC set, no records) so the client retries
//! over TCP, where [`answer`] sends it whole.

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::cache::{Cache, Found};
use super::firewall::{self, Action, BlockResponse};
use super::view::{View, matches};
use crate::time::Instant;

/// Length of a DNS header: anything shorter is dropped.
pub const HEADER_LEN: usize = 12;
/// The UDP response size without EDNS (RFC 1035).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// The largest UDP response sent, whatever the client offers (the DNS flag day 2020 value: no
/// fragmentation on any usual path).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The largest TCP response (the two-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;
/// The largest upstream response kept in the cache (so [`super::cache::DEFAULT_CAPACITY`]
/// entries hold at most 16 MiB).
pub const MAX_CACHED_RESPONSE: usize = 4096;
/// CNAMEs followed inside a view before the answer stops (a loop ends here too).
pub const MAX_CNAME_CHAIN: usize = 8;

/// How a query arrived: it decides the size limit of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a query got no response at all. `Copy`, like the fabric's drop reasons: counter label
/// and log field at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsDrop {
    /// Shorter than a DNS header.
    TooShort,
    /// The QR bit is set: a response, not a query.
    NotAQuery,
}

impl DnsDrop {
    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsDrop::TooShort => "too_short",
            DnsDrop::NotAQuery => "not_a_query",
        }
    }
}

/// A response to send, with what the query logs and metrics read about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The response's wire form (for TCP without the length prefix).
    pub wire: Vec<u8>,
    pub rcode: ResponseCode,
    /// The question, when the query had one that parsed.
    pub question: Option<(Name, RecordType)>,
    /// The records in the answer section as sent (0 when truncated).
    pub answers: Vec<Record>,
    /// Sent without records, TC set, for the client to retry over TCP.
    pub truncated: bool,
    /// Where the answer came from.
    pub source: Source,
    /// The DNS Firewall rule that matched the question, if one did.
    pub firewall: Option<FirewallMatch>,
}

/// A DNS Firewall rule that matched, for query logs and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallMatch {
    pub rule: String,
    /// `ALLOW`, `ALERT` or `BLOCK`.
    pub action: &'static str,
}

/// Where an answer came from (query logs and metrics tell them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The VPC's own names and zones, or a refusal.
    Local,
    /// A forwarded answer kept in the cache.
    Cache,
    /// An upstream resolver, just now (or SERVFAIL when none answered).
    Upstream,
}

/// Answers one query from `view` alone (see the module docs): names outside the view are
/// NXDOMAIN. [`step`] is the same with forwarding.
pub fn answer(view: &View, query: &[u8], transport: Transport) -> Result<Answered, DnsDrop> {
    match step(view, query, transport, None)? {
        Step::Answer(a) => Ok(a),
        Step::Forward(f) => Ok(f.respond(Found::nxdomain(), Source::Local)),
    }
}

/// What to do with one query.
#[derive(Debug)]
pub enum Step {
    /// Send this.
    Answer(Answered),
    /// Ask an upstream resolver ([`Forward::upstream_query`]), then answer with
    /// [`Forward::finish`] (or [`Forward::fail`]).
    Forward(Forward),
}

/// Answers one query from `view`, or from `forwarding`'s cache, or says to forward it. With
/// `forwarding` (`None`: names outside the view are NXDOMAIN), a name outside every authority of
/// the view is looked up in the cache at `now`, then forwarded.
pub fn step(
    view: &View,
    query: &[u8],
    transport: Transport,
    forwarding: Option<(&Cache, Instant)>,
) -> Result<Step, DnsDrop> {
    let request = match parse(query, transport)? {
        Ok(r) => r,
        Err(refused) => return Ok(Step::Answer(refused)),
    };
    let mut request = request;
    if let Some(rule) = firewall::decide(view.firewall(), request.question.name()) {
        request.firewall = Some(FirewallMatch {
            rule: rule.name.clone(),
            action: rule.action.as_str(),
        });
        if let Action::Block(how) = &rule.action {
            let found = blocked(how, &request.question);
            return Ok(Step::Answer(request.respond(found, Source::Local)));
        }
    }
    let (found, beyond) = resolve(view, request.question.name(), request.question.query_type());
    let Some((cache, now)) = forwarding else {
        return Ok(Step::Answer(request.respond(found, Source::Local)));
    };
    if let Some(target) = beyond {
        // The chain leaves the view: its target is asked upstream, under its own question.
        let mut q = Query::query(target, request.question.query_type());
        q.set_query_class(request.question.query_class());
        request.chain = found.answers;
        request.target = Some(q);
    } else if !found.outside {
        return Ok(Step::Answer(request.respond(found, Source::Local)));
    }
    match cache.get(request.upstream_question(), now) {
        Some(mut hit) => {
            hit.answers.splice(0..0, request.chain.iter().cloned());
            Ok(Step::Answer(request.respond(hit, Source::Cache)))
        }
        None => Ok(Step::Forward(request)),
    }
}

/// A query that parsed and asks one IN question: what a response is built from.
#[derive(Debug)]
pub struct Forward {
    metadata: Metadata,
    question: Query,
    edns: Option<Edns>,
    transport: Transport,
    /// The DNS Firewall rule that matched (allow or alert: the query goes on).
    firewall: Option<FirewallMatch>,
    /// The CNAMEs followed inside the view before the chain left it: the answer's first
    /// records.
    chain: Vec<Record>,
    /// Where the chain left the view: the question asked upstream instead of the client's.
    target: Option<Query>,
}

impl Forward {
    /// The client's question.
    pub fn question(&self) -> &Query {
        &self.question
    }

    /// The question asked upstream: the client's, or the target of a CNAME chain that left
    /// the view.
    pub fn upstream_question(&self) -> &Query {
        self.target.as_ref().unwrap_or(&self.question)
    }

    /// The query to send upstream, with id `id` (not the client's: the forwarder picks ids),
    /// recursion desired and EDNS at [`MAX_UDP_PAYLOAD`].
    pub fn upstream_query(&self, id: u16) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(self.upstream_question().clone());
        m.set_edns(our_edns(&Edns::new()));
        m.to_vec().unwrap_or_default()
    }

    /// The client's answer from an upstream `response` to [`Forward::upstream_query`]`(id)`,
    /// cached at `now`; SERVFAIL when it is not such a response.
    pub fn finish(&self, id: u16, response: &[u8], cache: &mut Cache, now: Instant) -> Answered {
        match Message::from_vec(response) {
            Ok(m)
                if m.metadata.id == id
                    && m.metadata.message_type == MessageType::Response
                    && m.queries.first() == Some(self.upstream_question()) =>
            {
                let mut found = Found {
                    rcode: m.metadata.response_code,
                    answers: m.answers,
                    soa: m
                        .authorities
                        .into_iter()
                        .find(|r| r.record_type() == RecordType::SOA),
                    authoritative: false,
                    outside: true,
                };
                // A huge answer is passed on but not kept: the cache's bound is in entries, and
                // this keeps its memory bounded too.
                if response.len() <= MAX_CACHED_RESPONSE {
                    cache.insert(self.upstream_question(), &found, now);
                }
                found.answers.splice(0..0, self.chain.iter().cloned());
                self.respond(found, Source::Upstream)
            }
            _ => self.fail(),
        }
    }

    /// SERVFAIL: no upstream answered.
    pub fn fail(&self) -> Answered {
        let question = Some(self.question.clone());
        Answered {
            source: Source::Upstream,
            ..error_response(&self.metadata, question, ResponseCode::ServFail)
        }
    }

    /// The response to send for `found`, within the transport's size.
    fn respond(&self, found: Found, source: Source) -> Answered {
        let mut response = Message::response(self.metadata.id, OpCode::Query);
        response.metadata = response_metadata(&self.metadata, found.rcode);
        response.metadata.authoritative = found.authoritative;
        response.add_query(self.question.clone());
        response.add_answers(found.answers.iter().cloned());
        response.add_authorities(found.soa);
        if let Some(edns) = &self.edns {
            response.set_edns(our_edns(edns));
        }
        let limit = match self.transport {
            Transport::Udp => udp_limit(self.edns.as_ref()),
            Transport::Tcp => MAX_TCP_MESSAGE,
        };
        let qinfo = Some((self.question.name().clone(), self.question.query_type()));
        match response.to_vec() {
            Ok(wire) if wire.len() <= limit => Answered {
                wire,
                rcode: found.rcode,
                question: qinfo,
                answers: found.answers,
                truncated: false,
                source,
                firewall: self.firewall.clone(),
            },
            Ok(_) => Answered {
                source,
                firewall: self.firewall.clone(),
                ..truncated(&response, found.rcode, qinfo)
            },
            Err(_) => self.fail(),
        }
    }
}

/// Reads a query: `Err` to drop it, `Ok(Err(response))` for a query refused at once (FORMERR,
/// NOTIMP, REFUSED), `Ok(Ok(request))` for one to answer.
fn parse(query: &[u8], transport: Transport) -> Result<Result<Forward, Answered>, DnsDrop> {
    if query.len() < HEADER_LEN {
        return Err(DnsDrop::TooShort);
    }
    let header = Header::read(&mut BinDecoder::new(query)).map_err(|_| DnsDrop::TooShort)?;
    if header.metadata.message_type == MessageType::Response {
        return Err(DnsDrop::NotAQuery);
    }
    let formerr = |m: &Metadata| Ok(Err(error_response(m, None, ResponseCode::FormErr)));
    let Ok(request) = Message::from_vec(query) else {
        return formerr(&header.metadata);
    };
    let [question] = request.queries.as_slice() else {
        return formerr(&request.metadata);
    };
    let transfer = matches!(question.query_type(), RecordType::AXFR | RecordType::IXFR);
    let refusal = if request.metadata.op_code != OpCode::Query || transfer {
        Some(ResponseCode::NotImp)
    } else if question.query_class() != DNSClass::IN {
        Some(ResponseCode::Refused)
    } else {
        None
    };
    if let Some(rcode) = refusal {
        return Ok(Err(error_response(
            &request.metadata,
            Some(question.clone()),
            rcode,
        )));
    }
    Ok(Ok(Forward {
        metadata: request.metadata,
        question: question.clone(),
        edns: request.edns,
        transport,
        firewall: None,
        chain: Vec::new(),
        target: None,
    }))
}

/// What a block answers: NXDOMAIN, NODATA, or the override CNAME.
fn blocked(how: &BlockResponse, question: &Query) -> Found {
    let mut found = Found {
        rcode: ResponseCode::NoError,
        answers: Vec::new(),
        soa: None,
        authoritative: false,
        outside: false,
    };
    match how {
        BlockResponse::NxDomain => found.rcode = ResponseCode::NXDomain,
        BlockResponse::NoData => {}
        BlockResponse::Override { target, ttl } => found.answers.push(Record::from_rdata(
            question.name().clone(),
            *ttl,
            RData::CNAME(CNAME(target.clone())),
        )),
    }
    found
}

/// Looks `qname` up in `view`, following CNAMEs inside it; with the name where a chain of
/// CNAMEs left the view (outside every authority of it), if one did.
fn resolve(view: &View, qname: &Name, qtype: RecordType) -> (Found, Option<Name>) {
    let mut answers = Vec::new();
    let mut name = qname.clone();
    for _ in 0..=MAX_CNAME_CHAIN {
        let Some(entries) = view.records(&name) else {
            // Below an authority: the name does not exist. Elsewhere: not ours to say (the
            // caller forwards it, or answers NXDOMAIN), and a CNAME's target outside the view
            // ends the chain here (the caller may ask upstream for the rest).
            let soa = view.authority_of(&name);
            let rcode = if answers.is_empty() || soa.is_some() {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            };
            let beyond = (soa.is_none() && !answers.is_empty()).then(|| name.clone());
            let found = Found {
                rcode,
                authoritative: soa.is_some(),
                outside: soa.is_none() && answers.is_empty(),
                answers,
                soa,
            };
            return (found, beyond);
        };
        let here = |e: &super::view::Entry| Record::from_rdata(name.clone(), e.ttl, e.data.clone());
        let matching: Vec<Record> = entries
            .iter()
            .filter(|e| matches(e, qtype))
            .map(here)
            .collect();
        let cname = entries
            .iter()
            .find(|e| e.data.record_type() == RecordType::CNAME);
        match (matching.is_empty(), cname) {
            (true, Some(c)) => {
                answers.push(here(c));
                name = match &c.data {
                    hickory_proto::rr::RData::CNAME(target) => target.0.clone(),
                    _ => unreachable!("a CNAME entry holds CNAME data"),
                };
            }
            (empty, _) => {
                answers.extend(matching);
                let soa = if empty && answers.is_empty() {
                    view.authority_of(&name)
                } else {
                    None
                };
                let found = Found {
                    rcode: ResponseCode::NoError,
                    answers,
                    soa,
                    authoritative: true,
                    outside: false,
                };
                return (found, None);
            }
        }
    }
    // A chain longer than the limit (or a loop): what was found so far, as SERVFAIL.
    let found = Found {
        rcode: ResponseCode::ServFail,
        answers,
        soa: None,
        authoritative: false,
        outside: false,
    };
    (found, None)
}

/// The response header for `request`: its id, opcode, RD and CD copied (RFC 6895); recursion
/// available, as the VPC resolver is the one a client asks for everything.
fn response_metadata(request: &Metadata, rcode: ResponseCode) -> Metadata {
    let mut m = Metadata::response_from_request(request);
    m.recursion_available = true;
    m.response_code = rcode;
    m
}

/// A response without records: FORMERR, NOTIMP, REFUSED, SERVFAIL.
fn error_response(request: &Metadata, question: Option<Query>, rcode: ResponseCode) -> Answered {
    let mut response = Message::response(request.id, request.op_code);
    response.metadata = response_metadata(request, rcode);
    let qinfo = question
        .as_ref()
        .map(|q| (q.name().clone(), q.query_type()));
    if let Some(q) = question {
        response.add_query(q);
    }
    Answered {
        wire: encode_or_header(&response),
        rcode,
        question: qinfo,
        answers: Vec::new(),
        truncated: false,
        source: Source::Local,
        firewall: None,
    }
}

/// The response cut to its header, question and OPT, TC set.
fn truncated(
    response: &Message,
    rcode: ResponseCode,
    question: Option<(Name, RecordType)>,
) -> Answered {
    let short = response.truncate();
    Answered {
        wire: encode_or_header(&short),
        rcode,
        question,
        answers: Vec::new(),
        truncated: true,
        source: Source::Local,
        firewall: None,
    }
}

/// Encodes a message that holds at most a question; if even that fails (a question name that
/// cannot be written back), the header alone.
fn encode_or_header(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_else(|_| {
        let mut bare = Message::response(m.metadata.id, m.metadata.op_code);
        bare.metadata = m.metadata;
        bare.to_vec().unwrap_or_default()
    })
}

/// Our OPT record in answer to the client's: version 0, our payload size.
fn our_edns(theirs: &Edns) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_PAYLOAD);
    e.set_version(0);
    e.set_dnssec_ok(theirs.flags().dnssec_ok);
    e
}

/// The UDP size limit: 512 without EDNS, else the client's size within 512..=1232.
fn udp_limit(edns: Option<&Edns>) -> usize {
    let size = edns.map_or(CLASSIC_UDP_PAYLOAD, |e| {
        e.max_payload().clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
    });
    usize::from(size)
}
