//! Port identities: where packets enter and leave the dataplane. A leaf of the core, below the
//! tables (which describe each port, [`crate::tables::PortInfo`]) and the verdicts that name them.

/// Where packets enter and leave the dataplane: an index into [`crate::tables::Tables::ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

impl PortId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
