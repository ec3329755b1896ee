//! One checked view of a packet, and the one home of the protocol numbers, TCP flag bits, ICMP
//! types and the ICMP quote length.
//!
//! Owns: the zero-copy IPv4 header view ([`Ipv4Packet`], smoltcp's `Packet<T>` + `mod field`
//! style: checked once by [`Ipv4Packet::new_checked`], after which no accessor panics), the
//! typed summary the filters, the NAT and the observers read ([`Summary`], built by
//! [`Ipv4Packet::summary`]), and the constants above. It owns no state and never allocates. The
//! fabric's hot path reads the same fields through the view's accessors instead of building the
//! whole summary (`Facts::of_view`, the NAT's `translate::from_view`; each is tested equal to its
//! reading of the summary on any bytes).
//!
//! IPv6: [`IpPacket`] dispatches on the version nibble and is where an `V6` variant goes; the
//! transport part of the summary ([`Transport`]) does not depend on the network header and the
//! summary is generic over the address type, so an IPv6 view only has to produce a
//! `Summary<Ipv6Addr>`. Today version 6 is the counted drop `ipv6` ([`HeaderError::Ipv6`]).

mod ipv4;
mod summary;

pub use ipv4::Ipv4Packet;
pub use summary::{IcmpMessage, Quoted, Summary, Transport, read_transport};

use super::DropReason;

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// TCP flag bits of header byte 13 (RFC 9293, RFC 3168 for ECE and CWR).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// ICMPv4 message types (RFC 792, RFC 950).
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMP_TIMESTAMP: u8 = 13;
pub const ICMP_INFO_REQUEST: u8 = 15;
pub const ICMP_ADDRESS_MASK_REQUEST: u8 = 17;

/// The fixed ICMP header: type, code, checksum and four bytes (identifier and sequence, or
/// unused / next-hop MTU in errors).
pub const ICMP_HEADER_LEN: usize = 8;
/// Most bytes of an offending packet an ICMP error generated here quotes: its IP header with
/// options and the first 8 bytes of its payload (RFC 792, RFC 1812 section 4.3.2.3).
pub const ICMP_QUOTE_MAX: usize = 60 + 8;

pub const IPV4_MIN_HEADER: usize = 20;
pub const TCP_MIN_HEADER: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;

/// True for the ICMP types that are errors (RFC 1812: never answer those with an error).
pub fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACHABLE
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAMETER_PROBLEM
    )
}

/// ICMP query types whose message opens a flow (echo, timestamp, information and address mask
/// requests).
pub fn is_icmp_request(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_ECHO_REQUEST | ICMP_TIMESTAMP | ICMP_INFO_REQUEST | ICMP_ADDRESS_MASK_REQUEST
    )
}

/// Why a buffer is not a packet the views accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the header or the total length says.
    Truncated,
    /// Version 6 (not routed yet).
    Ipv6,
    /// Neither version 4 nor 6.
    NotIp,
    /// Header length below the minimum, or a total length below the header length.
    BadHeader,
}

impl From<HeaderError> for DropReason {
    fn from(e: HeaderError) -> DropReason {
        match e {
            HeaderError::Truncated => DropReason::Truncated,
            HeaderError::Ipv6 => DropReason::Ipv6,
            HeaderError::NotIp => DropReason::NotIp,
            HeaderError::BadHeader => DropReason::BadHeader,
        }
    }
}

/// A checked IP packet of either version. Only IPv4 is implemented; an IPv6 view becomes a
/// `V6` variant here.
#[derive(Debug, Clone, Copy)]
pub enum IpPacket<T: AsRef<[u8]>> {
    V4(Ipv4Packet<T>),
}

impl<T: AsRef<[u8]>> IpPacket<T> {
    /// Checks the header of whichever version `buffer` starts with (see
    /// [`Ipv4Packet::new_checked`]).
    pub fn new_checked(buffer: T) -> Result<IpPacket<T>, HeaderError> {
        match buffer.as_ref().first().map(|b| b >> 4) {
            Some(4) => Ipv4Packet::new_checked(buffer).map(IpPacket::V4),
            Some(6) => Err(HeaderError::Ipv6),
            Some(_) => Err(HeaderError::NotIp),
            None => Err(HeaderError::Truncated),
        }
    }
}
