//! What the dataplane tells its caller to do with a packet.

use super::PortId;
use super::drop::DropReason;
use super::offload::PacketMeta;

/// The decision for one packet. The packet (or the reply that replaced it) is in the caller's
/// buffer, `len` bytes long.
#[must_use = "a verdict says where the packet goes; ignoring it loses the packet"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[..len]` out of `port`. `meta` is the packet's offload metadata (as it came in,
    /// with a partial checksum possibly completed): a port that cannot take a superpacket or a
    /// partial checksum sends what [`super::offload::Segmenter`] makes of it.
    Forward {
        port: PortId,
        len: usize,
        meta: PacketMeta,
    },
    /// The buffer now holds a generated packet (ICMP reply or error); send `buf[..len]` out of `port`.
    Reply { port: PortId, len: usize },
    /// Drop it; the reason has been counted.
    Drop(DropReason),
}
