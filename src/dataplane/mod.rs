//! The sans-IO packet core.
//!
//! Owns the per-packet pipeline: parse -> port checks (anti-spoofing) -> VPC route lookup
//! (`route`) -> security groups and network ACLs (`firewall`) -> NAT -> the public segment
//! (`public`: a host, the uplink, or an EIP into a VPC) -> deliver, with generated ICMP where a
//! visible hop or the subnet gateway answers. `route` and `public` are the decisions `vpcd
//! explain` shares. State is per VPC: a packet that crosses the public segment into a VPC is
//! handled in two stages, each touching one VPC's NAT cores and flow table (see `fabric`).
//! Callers drive it with [`Fabric::handle`] (or [`Fabric::handle_meta`] for packets with offload
//! metadata) for each packet and [`Fabric::handle_timeout`] when [`Fabric::poll_timeout`] says so;
//! they pass `now` and own every buffer.
//!
//! A packet is checked once, through the one packet view ([`packet`]); the filters, the NAT and
//! the observers read its summary. Superpackets and partial checksums ([`offload`]) pass with
//! their metadata; [`offload::Segmenter`] turns them into wire-sized packets for ports that cannot
//! take them.
//!
//! Invariants: no syscalls, threads, clocks or I/O modules in here (a test enforces it); no
//! allocation, locking or logging per packet; packets are rewritten in place; a packet never
//! crosses from one VPC to another except through the public segment; malformed input is a counted
//! drop, never a panic.

pub mod checksum;
mod counters;
mod drop;
mod fabric;
pub mod firewall;
pub mod gateways;
pub mod icmp;
mod index;
pub mod nat;
pub mod offload;
pub mod packet;
mod port;
pub mod public;
pub mod route;
mod verdict;
mod wheel;

pub use counters::{Counters, PortCounters};
pub use drop::DropReason;
pub use fabric::Fabric;
pub use offload::PacketMeta;
pub use verdict::Verdict;

pub use port::PortId;

/// Smallest buffer `handle` needs beyond the packet itself to write any reply it generates: an IPv4
/// header, an ICMP header, and the offending packet's header (up to 60 bytes) plus 8 bytes.
pub const MIN_BUFFER: usize = 20 + 8 + 60 + 8;

#[cfg(test)]
mod tests;
