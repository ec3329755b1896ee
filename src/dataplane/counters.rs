//! Plain counters kept by the dataplane and exported on scrape by the control plane.

use super::{DropReason, PortId};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
}

/// Drops by reason and traffic by port. Sized once per table swap; updated without allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    drops: [u64; DropReason::COUNT],
    ports: Vec<PortCounters>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new(0)
    }
}

impl Counters {
    pub fn new(ports: usize) -> Self {
        Counters {
            drops: [0; DropReason::COUNT],
            ports: vec![PortCounters::default(); ports],
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Every reason with a non-zero count.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.drops[r.index()]))
            .filter(|(_, n)| *n > 0)
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn port(&self, port: PortId) -> PortCounters {
        self.ports.get(port.index()).copied().unwrap_or_default()
    }

    pub(crate) fn resize(&mut self, ports: usize) {
        self.ports.resize(ports, PortCounters::default());
    }

    pub(crate) fn count_drop(&mut self, ingress: PortId, reason: DropReason) {
        self.drops[reason.index()] += 1;
        if let Some(p) = self.ports.get_mut(ingress.index()) {
            p.drops += 1;
        }
    }

    pub(crate) fn count_rx(&mut self, port: PortId, bytes: usize) {
        if let Some(p) = self.ports.get_mut(port.index()) {
            p.rx_packets += 1;
            p.rx_bytes += bytes as u64;
        }
    }

    pub(crate) fn count_tx(&mut self, port: PortId, bytes: usize) {
        if let Some(p) = self.ports.get_mut(port.index()) {
            p.tx_packets += 1;
            p.tx_bytes += bytes as u64;
        }
    }
}
