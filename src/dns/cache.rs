//! The forwarded answers a VPC resolver keeps: bounded in entries, each for its TTL.
//!
//! Sans-IO: the caller passes `now`. A positive answer is kept for the smallest TTL of its
//! records (at most [`MAX_TTL`]); a negative one (NXDOMAIN, or no record of the type) for its
//! SOA's negative TTL (RFC 2308; at most [`MAX_NEGATIVE_TTL`], [`DEFAULT_NEGATIVE_TTL`] without
//! an SOA); SERVFAIL and other errors are not kept. Served from the cache, every TTL is lowered
//! by the seconds the entry has been kept. When full, expired entries go first, then the entry
//! closest to expiry.

use std::collections::HashMap;
use std::time::Duration;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::time::Instant;

/// Longest a positive answer is kept, whatever its TTL.
pub const MAX_TTL: u32 = 3600;
/// Longest a negative answer is kept.
pub const MAX_NEGATIVE_TTL: u32 = 300;
/// How long a negative answer without an SOA is kept.
pub const DEFAULT_NEGATIVE_TTL: u32 = 30;
/// Entries a resolver keeps by default.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The content of an answer: what `answer::resolve` found in a view, what an upstream said, or
/// what this cache kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    /// The SOA for the authority section (NXDOMAIN and NODATA answers).
    pub soa: Option<Record>,
    pub authoritative: bool,
    /// The name is under none of the view's authorities: another server's to answer.
    pub outside: bool,
}

impl Found {
    /// A name nobody here has.
    pub(super) fn nxdomain() -> Found {
        Found {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            soa: None,
            authoritative: false,
            outside: true,
        }
    }
}

struct Entry {
    found: Found,
    stored: Instant,
    expires: Instant,
}

/// See the module docs.
pub struct Cache {
    entries: HashMap<(Name, RecordType), Entry>,
    capacity: usize,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.entries.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::new(DEFAULT_CAPACITY)
    }
}

impl Cache {
    /// A cache of at most `capacity` answers (at least one).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// How many answers it holds (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The kept answer to `q` at `now`, its TTLs lowered by its age; `None` when there is none
    /// or it expired.
    pub fn get(&self, q: &Query, now: Instant) -> Option<Found> {
        let e = self.entries.get(&key(q))?;
        if now >= e.expires {
            return None;
        }
        let age = u32::try_from(now.saturating_since(e.stored).as_secs()).unwrap_or(u32::MAX);
        let mut found = e.found.clone();
        for r in found.answers.iter_mut().chain(found.soa.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(found)
    }

    /// Keeps `found`, the answer to `q`, from `now` on (see the module docs for how long).
    pub fn insert(&mut self, q: &Query, found: &Found, now: Instant) {
        let Some(ttl) = keep_for(found).filter(|t| *t > 0) else {
            return;
        };
        let k = key(q);
        if !self.entries.contains_key(&k) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.insert(
            k,
            Entry {
                found: found.clone(),
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    /// Evicts the expired entries, or else the one closest to expiry.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        if self.entries.len() < self.capacity {
            return;
        }
        let first = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.expires)
            .map(|(k, _)| k.clone());
        if let Some(k) = first {
            self.entries.remove(&k);
        }
    }
}

/// The key of a question: its name (compared without case) and type.
fn key(q: &Query) -> (Name, RecordType) {
    (q.name().to_lowercase(), q.query_type())
}

/// How long an answer may be kept, in seconds; `None` for one that is not kept.
fn keep_for(found: &Found) -> Option<u32> {
    match found.rcode {
        ResponseCode::NoError if !found.answers.is_empty() => found
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()
            .map(|t| t.min(MAX_TTL)),
        ResponseCode::NoError | ResponseCode::NXDomain => Some(negative_ttl(found)),
        _ => None,
    }
}

/// RFC 2308, 5: the smaller of the SOA record's TTL and its MINIMUM field.
fn negative_ttl(found: &Found) -> u32 {
    match &found.soa {
        Some(soa) => {
            let minimum = match &soa.data {
                RData::SOA(s) => s.minimum,
                _ => DEFAULT_NEGATIVE_TTL,
            };
            soa.ttl.min(minimum).min(MAX_NEGATIVE_TTL)
        }
        None => DEFAULT_NEGATIVE_TTL,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::A;

    use super::*;

    fn q(name: &str) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    fn positive(ttl: u32) -> Found {
        Found {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                Name::from_ascii("api.example.org.").unwrap(),
                ttl,
                RData::A(A(Ipv4Addr::new(198, 51, 100, 7))),
            )],
            soa: None,
            authoritative: false,
            outside: true,
        }
    }

    #[test]
    fn rfc1035_ttls_count_down_and_the_entry_expires() {
        let mut c = Cache::new(8);
        let t0 = Instant::from_secs(100);
        c.insert(&q("api.example.org."), &positive(60), t0);
        let hit = c
            .get(&q("API.example.org."), t0 + Duration::from_secs(25))
            .unwrap();
        assert_eq!(hit.answers[0].ttl, 35);
        assert!(
            c.get(&q("api.example.org."), t0 + Duration::from_secs(60))
                .is_none()
        );
    }

    #[test]
    fn long_ttls_are_capped_and_errors_are_not_kept() {
        let mut c = Cache::new(8);
        let t0 = Instant::from_secs(1);
        c.insert(&q("a.example."), &positive(86400), t0);
        assert!(
            c.get(
                &q("a.example."),
                t0 + Duration::from_secs(u64::from(MAX_TTL))
            )
            .is_none()
        );
        let mut fail = positive(60);
        fail.rcode = ResponseCode::ServFail;
        c.insert(&q("b.example."), &fail, t0);
        assert!(c.get(&q("b.example."), t0).is_none());
        let mut nx = positive(60);
        nx.rcode = ResponseCode::NXDomain;
        nx.answers.clear();
        c.insert(&q("c.example."), &nx, t0);
        let later = t0 + Duration::from_secs(u64::from(DEFAULT_NEGATIVE_TTL));
        assert!(c.get(&q("c.example."), later).is_none());
        assert!(c.get(&q("c.example."), t0).is_some());
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_what_expires_first() {
        let mut c = Cache::new(3);
        let t0 = Instant::from_secs(1);
        for (i, ttl) in [300, 10, 200, 100].into_iter().enumerate() {
            c.insert(&q(&format!("n{i}.example.")), &positive(ttl), t0);
        }
        assert_eq!(c.len(), 3);
        assert!(
            c.get(&q("n1.example."), t0).is_none(),
            "the 10 s entry went"
        );
        for n in ["n0", "n2", "n3"] {
            assert!(c.get(&q(&format!("{n}.example.")), t0).is_some(), "{n}");
        }
    }
}
