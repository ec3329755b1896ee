//! Fairness between tenants within one wake-up of the loop: every readable TUN port is read up
//! to its own budget ([`super::forward::next_budget`]), and on top of that every tenant — a VPC
//! (its instances and its resolver), each internet host, the uplink — may have at most
//! [`TENANT_QUANTUM`] packets read per wake-up across all its ports. A tenant with a hundred busy
//! ports therefore takes one share of the loop, not a hundred, and another tenant's one port
//! keeps its share (deficit round robin over tenants, with the quantum refilled each wake-up and
//! nothing banked by an idle tenant). A port left unread because its tenant's quantum ran out
//! stays readable (its packets wait in the kernel's TUN queue) and is served first at the next
//! wake-up: the order of the readable ports rotates from one wake-up to the next, so no port of
//! a busy tenant is always the last.

use crate::tables::{PortOwner, Tables};

/// Packets one tenant may have read per wake-up, over all its ports (one full batch).
pub const TENANT_QUANTUM: usize = super::tx::BATCH;

/// The tenant whose share reads from port `port` take.
pub fn tenant_of(tables: &Tables, port: usize) -> usize {
    let vpcs = tables.vpcs.len();
    match tables.ports.get(port).map(|p| &p.owner) {
        Some(PortOwner::Instance { vpc, .. } | PortOwner::Resolver { vpc }) => *vpc as usize,
        Some(PortOwner::Host { host }) => vpcs + *host as usize,
        // The uplink, and a port the tables do not list (charged to one tenant together).
        Some(PortOwner::Uplink) | None => usize::MAX,
    }
}

/// Each tenant's packets left in this wake-up (see the module docs).
#[derive(Debug, Default)]
pub struct TenantQuota {
    /// Per tenant: the wake-up its entry belongs to, and what is left of its quantum then.
    left: Vec<(u64, usize)>,
    /// The uplink's (and unknown ports') entry.
    other: (u64, usize),
    wakeup: u64,
}

impl TenantQuota {
    /// Starts a wake-up: every tenant's quantum is whole again (lazily: nothing is touched here).
    pub fn next_wakeup(&mut self) {
        self.wakeup += 1;
    }

    /// Where to start in a list of `len` readable ports this wake-up.
    pub fn rotation(&self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            (self.wakeup % len as u64) as usize
        }
    }

    fn entry(&mut self, tenant: usize) -> &mut usize {
        let wakeup = self.wakeup;
        let e = if tenant == usize::MAX {
            &mut self.other
        } else {
            if tenant >= self.left.len() {
                self.left.resize(tenant + 1, (0, 0));
            }
            &mut self.left[tenant]
        };
        if e.0 != wakeup {
            *e = (wakeup, TENANT_QUANTUM);
        }
        &mut e.1
    }

    /// Up to `want` packets for `tenant` from what is left of its quantum (0: its ports wait for
    /// the next wake-up).
    pub fn grant(&mut self, tenant: usize, want: usize) -> usize {
        let left = self.entry(tenant);
        let n = want.min(*left);
        *left -= n;
        n
    }

    /// Gives back what a port did not read of its grant.
    pub fn refund(&mut self, tenant: usize, unused: usize) {
        let left = self.entry(tenant);
        *left = (*left + unused).min(TENANT_QUANTUM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten busy ports of tenant 0 and one of tenant 1, each able to read a full batch: per
    /// wake-up tenant 0's ports together get one quantum and tenant 1's port gets one too; over
    /// several wake-ups each of tenant 0's ports is served.
    #[test]
    fn a_tenant_with_many_busy_ports_takes_one_share() {
        let mut q = TenantQuota::default();
        let ports: Vec<usize> = (0..10).map(|_| 0).chain([1]).collect();
        let mut served = [0usize; 11];
        for _ in 0..11 {
            q.next_wakeup();
            let rot = q.rotation(ports.len());
            let mut by_tenant = [0usize; 2];
            for k in 0..ports.len() {
                let i = (k + rot) % ports.len();
                let got = q.grant(ports[i], TENANT_QUANTUM);
                by_tenant[ports[i]] += got;
                served[i] += got;
            }
            assert_eq!(by_tenant, [TENANT_QUANTUM, TENANT_QUANTUM]);
        }
        assert!(served.iter().all(|s| *s > 0), "{served:?}");
    }

    /// A port that reads less than its grant leaves the rest to the tenant's other ports.
    #[test]
    fn what_a_port_does_not_read_goes_back_to_its_tenant() {
        let mut q = TenantQuota::default();
        q.next_wakeup();
        let a = q.grant(3, TENANT_QUANTUM);
        assert_eq!(a, TENANT_QUANTUM);
        q.refund(3, TENANT_QUANTUM - 5);
        assert_eq!(q.grant(3, TENANT_QUANTUM), TENANT_QUANTUM - 5);
        assert_eq!(q.grant(3, 1), 0);
        // Another tenant, the uplink, and the next wake-up start whole.
        assert_eq!(q.grant(4, 10), 10);
        assert_eq!(q.grant(usize::MAX, TENANT_QUANTUM), TENANT_QUANTUM);
        q.next_wakeup();
        assert_eq!(q.grant(3, TENANT_QUANTUM), TENANT_QUANTUM);
        q.refund(3, 2 * TENANT_QUANTUM);
        assert_eq!(
            q.grant(3, 3 * TENANT_QUANTUM),
            TENANT_QUANTUM,
            "never above one quantum"
        );
    }
}
