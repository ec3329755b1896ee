//! The fabric: one `handle` call per packet.

use std::sync::Arc;

use super::{Counters, DropReason, PortId, Verdict};
use crate::tables::Tables;
use crate::time::Instant;

/// The dataplane state: compiled tables plus counters (and, later, the connection tables).
#[derive(Debug)]
pub struct Fabric {
    tables: Arc<Tables>,
    counters: Counters,
}

impl Fabric {
    pub fn new(tables: Arc<Tables>) -> Self {
        let counters = Counters::new(tables.ports.len());
        Fabric { tables, counters }
    }

    /// Handles one packet that arrived on `ingress`. The packet is `buf[..len]`; `buf` may be longer
    /// and must be at least [`super::MIN_BUFFER`] bytes for generated replies to fit. Call for every
    /// packet a port reads, in arrival order; `now` must not go backwards.
    pub fn handle(
        &mut self,
        _now: Instant,
        ingress: PortId,
        _buf: &mut [u8],
        _len: usize,
    ) -> Verdict {
        // Pipeline in progress (issue 2).
        self.counters.count_drop(ingress, DropReason::NoRoute);
        Verdict::Drop(DropReason::NoRoute)
    }

    /// The next time [`Fabric::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Runs timers due at `now` (connection expiry, later).
    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Swaps in new tables atomically between two packets.
    pub fn swap_tables(&mut self, tables: Arc<Tables>) {
        self.counters.resize(tables.ports.len());
        self.tables = tables;
    }
}
