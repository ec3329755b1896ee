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
//!   authorities that it does not hold: NXDOMAIN with the SOA; any other name: NXDOMAIN
//!   (forwarding through the uplink is not built yet).
//!
//! Size: over UDP a response fits 512 bytes, or the query's EDNS payload size up to
//! [`MAX_UDP_PAYLOAD`]; a larger one is sent truncated (TC set, no records) so the client retries
//! over TCP, where [`answer`] sends it whole.

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::view::{View, matches};

/// Length of a DNS header: anything shorter is dropped.
pub const HEADER_LEN: usize = 12;
/// The UDP response size without EDNS (RFC 1035).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// The largest UDP response sent, whatever the client offers (the DNS flag day 2020 value: no
/// fragmentation on any usual path).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The largest TCP response (the two-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;
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
}

/// Answers one query from `view` (see the module docs).
pub fn answer(view: &View, query: &[u8], transport: Transport) -> Result<Answered, DnsDrop> {
    if query.len() < HEADER_LEN {
        return Err(DnsDrop::TooShort);
    }
    let header = Header::read(&mut BinDecoder::new(query)).map_err(|_| DnsDrop::TooShort)?;
    if header.metadata.message_type == MessageType::Response {
        return Err(DnsDrop::NotAQuery);
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            return Ok(error_response(
                &header.metadata,
                None,
                ResponseCode::FormErr,
            ));
        }
    };
    let question = match request.queries.as_slice() {
        [q] => q.clone(),
        _ => {
            return Ok(error_response(
                &request.metadata,
                None,
                ResponseCode::FormErr,
            ));
        }
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
        return Ok(error_response(&request.metadata, Some(question), rcode));
    }
    let found = resolve(view, question.name(), question.query_type());
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata = response_metadata(&request.metadata, found.rcode);
    response.metadata.authoritative = found.authoritative;
    response.add_query(question.clone());
    response.add_answers(found.answers.iter().cloned());
    response.add_authorities(found.soa);
    if let Some(edns) = &request.edns {
        response.set_edns(our_edns(edns));
    }
    let limit = match transport {
        Transport::Udp => udp_limit(request.edns.as_ref()),
        Transport::Tcp => MAX_TCP_MESSAGE,
    };
    let qinfo = Some((question.name().clone(), question.query_type()));
    match response.to_vec() {
        Ok(wire) if wire.len() <= limit => Ok(Answered {
            wire,
            rcode: found.rcode,
            question: qinfo,
            answers: found.answers,
            truncated: false,
        }),
        Ok(_) => Ok(truncated(&response, found.rcode, qinfo)),
        Err(_) => Ok(error_response(
            &request.metadata,
            Some(question),
            ResponseCode::ServFail,
        )),
    }
}

/// What [`resolve`] found.
struct Found {
    rcode: ResponseCode,
    answers: Vec<Record>,
    /// The SOA for the authority section (NXDOMAIN and NODATA answers).
    soa: Option<Record>,
    authoritative: bool,
}

/// Looks `qname` up in `view`, following CNAMEs inside it.
fn resolve(view: &View, qname: &Name, qtype: RecordType) -> Found {
    let mut answers = Vec::new();
    let mut name = qname.clone();
    for _ in 0..=MAX_CNAME_CHAIN {
        let Some(entries) = view.records(&name) else {
            // Below an authority: the name does not exist. Elsewhere: not ours to say (NXDOMAIN
            // until forwarding is built), and a CNAME's target outside the view ends the chain.
            let soa = view.authority_of(&name);
            let rcode = if answers.is_empty() || soa.is_some() {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            };
            return Found {
                rcode,
                authoritative: soa.is_some(),
                answers,
                soa,
            };
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
                return Found {
                    rcode: ResponseCode::NoError,
                    answers,
                    soa,
                    authoritative: true,
                };
            }
        }
    }
    // A chain longer than the limit (or a loop): what was found so far, as SERVFAIL.
    Found {
        rcode: ResponseCode::ServFail,
        answers,
        soa: None,
        authoritative: false,
    }
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
