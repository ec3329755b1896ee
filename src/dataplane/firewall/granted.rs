//! Egress allowed by name (`[[egress_by_name]]`): the destinations the VPC's resolver answered for
//! an allowed name, each allowed for new flows until the answer's TTL ends.
//!
//! The shell hands grants over ([`super::Firewall::grant_egress`]) when the resolver answers; the
//! fabric reads them only for a new flow its static egress allow-list refuses. Time is passed in:
//! an expired grant is never honoured, and is evicted first when the set is full
//! ([`MAX_GRANTS`] addresses per VPC, then the grant closest to expiry goes). A lookup is one hash
//! probe and allocates nothing; a grant allocates (off the per-packet path).

use std::net::Ipv4Addr;

use crate::tables::AddrMap;
use crate::time::Instant;

/// Addresses one VPC keeps grants for.
pub const MAX_GRANTS: usize = 4096;

/// One address's grants: (ports, or `None` for every protocol and port; until when).
type Grants = Vec<(Option<(u16, u16)>, Instant)>;

/// One VPC's grants.
#[derive(Debug, Clone, Default)]
pub struct Granted {
    by_addr: AddrMap<Grants>,
}

impl Granted {
    /// Allows new flows to `addr` (on TCP/UDP `ports` only, when given) until `until`. A grant
    /// for the same address and ports is extended, never shortened.
    pub fn grant(
        &mut self,
        addr: Ipv4Addr,
        ports: Option<(u16, u16)>,
        until: Instant,
        now: Instant,
    ) {
        if !self.by_addr.contains_key(&addr) && self.by_addr.len() >= MAX_GRANTS {
            self.make_room(now);
        }
        let grants = self.by_addr.entry(addr).or_default();
        grants.retain(|(_, u)| *u > now);
        match grants.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, u)) => *u = (*u).max(until),
            None => grants.push((ports, until)),
        }
    }

    /// Whether a new flow of IP protocol `proto` to `dst` (destination port `dport`, TCP/UDP
    /// only) is allowed at `now`.
    pub fn allows(&self, proto: u8, dst: Ipv4Addr, dport: Option<u16>, now: Instant) -> bool {
        self.by_addr.get(&dst).is_some_and(|grants| {
            grants.iter().any(|(ports, until)| {
                *until > now
                    && match ports {
                        None => true,
                        // TCP (6) or UDP (17).
                        Some((first, last)) => {
                            matches!(proto, 6 | 17)
                                && dport.is_some_and(|p| *first <= p && p <= *last)
                        }
                    }
            })
        })
    }

    /// How many addresses hold grants (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// Evicts the expired grants, or else the address whose grants end first.
    fn make_room(&mut self, now: Instant) {
        self.by_addr.retain(|_, g| {
            g.retain(|(_, u)| *u > now);
            !g.is_empty()
        });
        if self.by_addr.len() < MAX_GRANTS {
            return;
        }
        let first = self
            .by_addr
            .iter()
            .min_by_key(|(_, g)| g.iter().map(|(_, u)| *u).max())
            .map(|(a, _)| *a);
        if let Some(a) = first {
            self.by_addr.remove(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;

    #[test]
    fn a_grant_allows_its_address_and_ports_until_it_expires() {
        let mut g = Granted::default();
        let t0 = Instant::from_secs(100);
        let a = Ipv4Addr::new(198, 51, 100, 7);
        g.grant(a, Some((443, 443)), t0 + Duration::from_secs(60), t0);
        assert!(g.allows(TCP, a, Some(443), t0));
        assert!(g.allows(UDP, a, Some(443), t0 + Duration::from_secs(59)));
        assert!(!g.allows(TCP, a, Some(80), t0), "another port");
        assert!(!g.allows(ICMP, a, None, t0), "ICMP has no port");
        assert!(!g.allows(TCP, Ipv4Addr::new(198, 51, 100, 8), Some(443), t0));
        assert!(
            !g.allows(TCP, a, Some(443), t0 + Duration::from_secs(60)),
            "expired"
        );
        // A shorter answer later does not cut the grant short.
        g.grant(a, Some((443, 443)), t0 + Duration::from_secs(10), t0);
        assert!(g.allows(TCP, a, Some(443), t0 + Duration::from_secs(30)));
    }

    #[test]
    fn grants_are_bounded_and_the_expired_go_first() {
        let mut g = Granted::default();
        let t0 = Instant::from_secs(1);
        for i in 0..MAX_GRANTS as u32 {
            let ttl = if i == 7 { 1 } else { 600 };
            g.grant(
                Ipv4Addr::from(0x0a00_0000 + i),
                None,
                t0 + Duration::from_secs(ttl),
                t0,
            );
        }
        let later = t0 + Duration::from_secs(5);
        g.grant(
            Ipv4Addr::new(192, 0, 2, 1),
            None,
            later + Duration::from_secs(60),
            later,
        );
        assert_eq!(g.len(), MAX_GRANTS);
        assert!(g.allows(ICMP, Ipv4Addr::new(192, 0, 2, 1), None, later));
        assert!(!g.allows(ICMP, Ipv4Addr::from(0x0a00_0007), None, later));
    }
}
