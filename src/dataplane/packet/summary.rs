//! The typed summary of a checked packet: what the filters, the NAT and the observers decide on.

use std::net::Ipv4Addr;

use super::{IPV4_MIN_HEADER, PROTO_ICMP, PROTO_TCP, PROTO_UDP, is_icmp_error};

/// The header fields of one packet, read once from its view. Generic over the address type so
/// that an IPv6 view can produce the same summary (`ident` is 32 bits for IPv6's fragment
/// header). A `Copy` value of a few dozen bytes: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary<A = Ipv4Addr> {
    pub src: A,
    pub dst: A,
    /// The transport protocol number.
    pub proto: u8,
    /// The network header's length (IPv4 options included).
    pub header_len: u16,
    /// The packet's length: the IP total length (or what the buffer holds, if less, for views
    /// checked on the header only). 32 bits for IPv6 (40 bytes of header + 65,535 of payload).
    pub len: u32,
    pub ident: u32,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub transport: Transport,
}

impl<A> Summary<A> {
    /// Bytes after the network header.
    pub fn transport_len(&self) -> usize {
        (self.len as usize).saturating_sub(usize::from(self.header_len))
    }

    /// Part of a fragmented datagram (first or later).
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }

    /// TCP/UDP ports, or an ICMP query's identifier in both; `None` otherwise.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport {
            Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => {
                Some((sport, dport))
            }
            Transport::Icmp {
                message: IcmpMessage::Query { id },
                ..
            } => Some((id, id)),
            _ => None,
        }
    }

    /// The TCP flags byte (0 for anything but TCP).
    pub fn tcp_flags(&self) -> u8 {
        match self.transport {
            Transport::Tcp { flags, .. } => flags,
            _ => 0,
        }
    }
}

/// The transport header as far as it is present (the same for IPv4 and IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// At least 14 bytes of TCP header (ports and flags).
    Tcp { sport: u16, dport: u16, flags: u8 },
    /// At least 4 bytes of UDP header (ports).
    Udp { sport: u16, dport: u16 },
    /// At least the ICMP type and code.
    Icmp {
        icmp_type: u8,
        code: u8,
        message: IcmpMessage,
    },
    /// Another protocol (no ports).
    Other,
    /// No transport header: a non-first fragment, or fewer bytes than its fields need.
    Opaque,
}

/// What an ICMP message carries beyond type and code.
///
/// The packet an error quotes is not part of the summary (it would triple its size, and the
/// summary is copied along the hot path): [`super::Ipv4Packet::quoted`] reads it from the view
/// when a consumer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpMessage {
    /// A message that is not an error, with its identifier (bytes 4..6).
    Query { id: u16 },
    /// An error (destination unreachable, time exceeded, ...).
    Error,
    /// A message that is not an error, too short for an identifier.
    Short,
}

/// The packet an ICMP error quotes (its header and the start of its payload), as it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted<A = Ipv4Addr> {
    pub proto: u8,
    pub src: A,
    pub dst: A,
    /// The quoted network header's length; the quote starts [`super::ICMP_HEADER_LEN`] bytes into the
    /// ICMP message.
    pub header_len: u8,
    /// Quoted bytes after the quoted network header.
    pub transport_len: u16,
    /// Fragment offset of the quoted packet (8-byte units): a non-first fragment quotes no ports.
    pub frag_offset: u16,
    /// TCP/UDP ports, or an ICMP message's identifier in both; `(0, 0)` for other protocols;
    /// `None` when the quote is too short for them.
    pub ports: Option<(u16, u16)>,
    /// The quoted ICMP message's type and code.
    pub icmp: Option<(u8, u8)>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads the transport header of an IPv4 packet with protocol `proto` from `l4` (the bytes
/// after the IP header); `first` is false for non-first fragments (no transport header).
#[inline]
pub fn read_transport(proto: u8, first: bool, l4: &[u8]) -> Transport {
    if !first {
        return Transport::Opaque;
    }
    match proto {
        PROTO_TCP => match (be16(l4, 0), be16(l4, 2), l4.get(13)) {
            (Some(sport), Some(dport), Some(&flags)) => Transport::Tcp {
                sport,
                dport,
                flags,
            },
            _ => Transport::Opaque,
        },
        PROTO_UDP => match (be16(l4, 0), be16(l4, 2)) {
            (Some(sport), Some(dport)) => Transport::Udp { sport, dport },
            _ => Transport::Opaque,
        },
        PROTO_ICMP => {
            let (Some(&icmp_type), Some(&code)) = (l4.first(), l4.get(1)) else {
                return Transport::Opaque;
            };
            let message = if is_icmp_error(icmp_type) {
                IcmpMessage::Error
            } else if let Some(id) = be16(l4, 4) {
                IcmpMessage::Query { id }
            } else {
                IcmpMessage::Short
            };
            Transport::Icmp {
                icmp_type,
                code,
                message,
            }
        }
        _ => Transport::Other,
    }
}

/// Reads the IPv4 packet an ICMP error quotes (`q` = the bytes after the ICMP header).
pub(super) fn read_quoted(q: &[u8]) -> Option<Quoted> {
    if q.first()? >> 4 != 4 || q.len() < IPV4_MIN_HEADER {
        return None;
    }
    let header_len = usize::from(q[0] & 0x0f) * 4;
    let l4 = q
        .get(header_len..)
        .filter(|_| header_len >= IPV4_MIN_HEADER)?;
    let proto = q[9];
    let ports = match proto {
        PROTO_TCP | PROTO_UDP => be16(l4, 0).zip(be16(l4, 2)),
        PROTO_ICMP => be16(l4, 4).map(|id| (id, id)),
        _ => Some((0, 0)),
    };
    let icmp = match (proto, l4.first(), l4.get(1)) {
        (PROTO_ICMP, Some(t), Some(c)) => Some((*t, *c)),
        _ => None,
    };
    Some(Quoted {
        proto,
        src: Ipv4Addr::new(q[12], q[13], q[14], q[15]),
        dst: Ipv4Addr::new(q[16], q[17], q[18], q[19]),
        header_len: header_len as u8,
        transport_len: l4.len().min(usize::from(u16::MAX)) as u16,
        frag_offset: u16::from_be_bytes([q[6], q[7]]) & 0x1fff,
        ports,
        icmp,
    })
}
