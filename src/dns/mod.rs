//! The VPC resolver's answers: a pure function from a query's bytes to a response's bytes.
//!
//! Owns: the naming scheme of instances, EIPs and reverse names ([`names`]), the record types a
//! topology declares ([`records`]), one VPC's compiled names ([`view`]) and the answer to one
//! query ([`answer`]), with its counters ([`Counters`]). Sans-IO like the dataplane: no sockets,
//! no clock, no threads; the shell serves it on port 53 of the VPC's resolver port (base + 2 and
//! [`crate::tables::RESOLVER_LINK_LOCAL`]). It must not touch the topology model or the
//! dataplane: `topology::compile` builds its [`View`]s, and the shell calls [`answer`].
//!
//! The wire format is hickory-proto's (`Message` decode and encode): a maintained, fuzzed DNS
//! library, so this module holds only the decisions (ARCHITECTURE.md, "Services beside the
//! fabric").

pub mod answer;
pub mod cache;
pub mod egress;
pub mod firewall;
pub mod names;
pub mod querylog;
pub mod records;
pub mod view;

pub use answer::{
    Answered, DnsDrop, FirewallMatch, Forward, Source, Step, Transport, answer, step,
};
pub use cache::Cache;
pub use hickory_proto::op::ResponseCode;
pub use records::{RecordData, RecordKind};
pub use view::{View, ViewBuilder};

/// What one resolver answered, by outcome. Plain counters, read by the control plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub noerror: u64,
    pub nxdomain: u64,
    pub formerr: u64,
    pub servfail: u64,
    pub notimp: u64,
    pub refused: u64,
    /// Responses sent truncated over UDP (also counted by their rcode).
    pub truncated: u64,
    /// Answers served from the cache of forwarded answers (also counted by their rcode).
    pub cache_hits: u64,
    /// Queries sent to an upstream resolver.
    pub forwarded: u64,
    /// Forwarded queries no upstream answered (answered SERVFAIL, also counted as such).
    pub upstream_failures: u64,
    /// Upstream answers thrown away because they did not answer the query sent (another id or
    /// question): stray or forged answers (not counted by rcode).
    pub upstream_mismatched: u64,
    /// Queries a DNS Firewall rule blocked (also counted by their rcode).
    pub blocked: u64,
    /// Queries a DNS Firewall alert rule matched.
    pub alerted: u64,
    pub dropped_too_short: u64,
    pub dropped_not_a_query: u64,
}

impl Counters {
    /// Counts one outcome of [`answer`].
    pub fn record(&mut self, outcome: &Result<Answered, DnsDrop>) {
        match outcome {
            Ok(a) => {
                self.truncated += u64::from(a.truncated);
                self.cache_hits += u64::from(a.source == Source::Cache);
                let action = a.firewall.as_ref().map(|f| f.action);
                self.blocked += u64::from(action == Some("BLOCK"));
                self.alerted += u64::from(action == Some("ALERT"));
                match a.rcode {
                    ResponseCode::NoError => self.noerror += 1,
                    ResponseCode::NXDomain => self.nxdomain += 1,
                    ResponseCode::FormErr => self.formerr += 1,
                    ResponseCode::NotImp => self.notimp += 1,
                    ResponseCode::Refused => self.refused += 1,
                    _ => self.servfail += 1,
                }
            }
            Err(DnsDrop::TooShort) => self.dropped_too_short += 1,
            Err(DnsDrop::NotAQuery) => self.dropped_not_a_query += 1,
        }
    }

    /// Answers by rcode, labelled as DNS tools print them (every rcode, zeros included).
    pub fn by_rcode(&self) -> [(&'static str, u64); 6] {
        [
            ("NOERROR", self.noerror),
            ("NXDOMAIN", self.nxdomain),
            ("FORMERR", self.formerr),
            ("SERVFAIL", self.servfail),
            ("NOTIMP", self.notimp),
            ("REFUSED", self.refused),
        ]
    }

    /// Dropped queries by reason ([`DnsDrop::as_str`]).
    pub fn by_drop(&self) -> [(&'static str, u64); 2] {
        [
            (DnsDrop::TooShort.as_str(), self.dropped_too_short),
            (DnsDrop::NotAQuery.as_str(), self.dropped_not_a_query),
        ]
    }

    /// Every query seen, answered or dropped.
    pub fn queries(&self) -> u64 {
        self.noerror
            + self.nxdomain
            + self.formerr
            + self.servfail
            + self.notimp
            + self.refused
            + self.dropped_too_short
            + self.dropped_not_a_query
    }
}

#[cfg(test)]
mod tests;
