//! Coalescing before an offload TUN write: a packet that continues the flow of the packet queued
//! just before it for the same port is appended to it, so that the pair (and the next ones)
//! leave as one superpacket in one `write()` — GRO for TCP, USO for UDP. What arrives as single
//! segments (a guest without offload, a sim port, the uplink's TCP stack, a flood of small UDP
//! datagrams) then costs the receiving kernel one system call and one trip up its stack per
//! superpacket instead of per segment.
//!
//! Stateless: [`append`] looks only at the queued packet and the new one, so it needs no flow
//! table and never reorders (only neighbours merge). It merges what Linux's GRO merges and
//! splits back exactly: IPv4 without options, not fragmented, the same addresses, TOS, TTL and
//! DF; TCP segments of one connection with contiguous sequence numbers, the same
//! acknowledgement, window and options, plain ACKs (a PSH ends the superpacket); UDP datagrams
//! of one flow. Every segment but the last has the superpacket's segment size, so cutting it
//! again ([`super::Segmenter`], or the receiving kernel) gives the original packets back. A
//! packet whose complete checksum is wrong is never merged: the superpacket's checksum is
//! recomputed per segment by its receiver, which would hide the corruption.
//!
//! The merged packet's metadata says GSO with a partial checksum (the folded pseudo-header sum
//! over the whole transport length in its checksum field), as a guest's own superpackets do.

use super::{Csum, Gso, GsoKind, PacketMeta, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET};
use crate::dataplane::checksum;
use crate::dataplane::packet::{
    IPV4_MIN_HEADER, Ipv4Packet, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_MIN_HEADER, TCP_PSH,
    UDP_HEADER_LEN,
};

/// The most segments one superpacket carries: Linux's `UDP_MAX_SEGMENTS` (a UDP superpacket
/// with more is refused by the kernel), used for TCP too (GRO's own limit is of this order).
pub const MAX_SEGMENTS: usize = 64;

/// Appends the packet `pkt` (exactly one packet, metadata `meta`) to the packet queued before it
/// for the same port, `buf[..head_len]` with metadata `head_meta`, when `pkt` continues it (see
/// the module). On success `buf[..new_len]` is one superpacket holding both, with its headers
/// updated, and `(new_len, new_meta)` is returned; on `None` nothing was written. Every offload
/// TUN port takes TCP superpackets; UDP ones only when `udp_gso` (the port has USO).
pub fn append(
    buf: &mut [u8],
    head_len: usize,
    head_meta: PacketMeta,
    pkt: &[u8],
    meta: PacketMeta,
    udp_gso: bool,
) -> Option<(usize, PacketMeta)> {
    let (head, new) = (Flow::of(buf.get(..head_len)?)?, Flow::of(pkt)?);
    let kind = match head.proto {
        PROTO_TCP => GsoKind::TcpV4,
        PROTO_UDP if udp_gso => GsoKind::Udp,
        _ => return None,
    };
    if meta.gso.is_some() || !partial_at_l4(meta, &new) || !head.same_flow(&new) {
        return None;
    }
    let headers = head.headers;
    let payload = head.len - headers;
    let segment = match head_meta.gso {
        Some(g) if g.kind == kind && usize::from(g.header_len) == headers => {
            usize::from(g.segment_size)
        }
        Some(_) => return None,
        None if partial_at_l4(head_meta, &head) => payload,
        None => return None,
    };
    let more = new.len - headers;
    let new_len = head_len + more;
    if segment == 0
        || more == 0
        || more > segment
        || payload % segment != 0
        || payload / segment >= MAX_SEGMENTS
        || new_len > usize::from(u16::MAX)
        || new_len > buf.len()
    {
        return None;
    }
    if kind == GsoKind::TcpV4 && !head.continued_by(&new, payload) {
        return None;
    }
    // A packet whose complete checksum is wrong goes alone (its receiver drops it); the head's
    // is checked once, when it becomes a superpacket.
    if !checksum_ok(pkt, meta)
        || (head_meta.gso.is_none() && !checksum_ok(&buf[..head_len], head_meta))
    {
        return None;
    }
    let (src, dst, proto) = (head.src, head.dst, head.proto);
    buf[head_len..new_len].copy_from_slice(&pkt[headers..new.len]);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..new_len]);
    ip.set_total_len(new_len as u16);
    ip.fill_checksum();
    let l4 = &mut buf[IPV4_MIN_HEADER..new_len];
    let offset = match kind {
        GsoKind::TcpV4 => {
            l4[13] |= pkt[IPV4_MIN_HEADER + 13] & TCP_PSH;
            TCP_CHECKSUM_OFFSET
        }
        GsoKind::Udp => {
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
            UDP_CHECKSUM_OFFSET
        }
    };
    let sum = checksum::pseudo_header(src, dst, proto, l4.len() as u16) as u16;
    let at = usize::from(offset);
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    let meta = PacketMeta {
        gso: Some(Gso {
            kind,
            segment_size: segment as u16,
            header_len: headers as u16,
        }),
        csum: Csum::Partial {
            start: IPV4_MIN_HEADER as u16,
            offset,
        },
    };
    Some((new_len, meta))
}

/// What decides whether two packets are one flow, read off one packet.
struct Flow<'a> {
    /// The packet, exactly (its IP total length).
    pkt: &'a [u8],
    len: usize,
    proto: u8,
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    /// IP and transport header bytes.
    headers: usize,
}

impl<'a> Flow<'a> {
    /// An unfragmented IPv4 TCP or UDP packet without IP options; TCP carries only ACK, or ACK
    /// and PSH (a SYN, FIN, RST or urgent data never merges).
    fn of(pkt: &'a [u8]) -> Option<Flow<'a>> {
        let ip = Ipv4Packet::new_checked(pkt).ok()?;
        if ip.header_len() != IPV4_MIN_HEADER || ip.more_frags() || ip.frag_offset() != 0 {
            return None;
        }
        let len = ip.len();
        let pkt = &pkt[..len];
        let headers = match ip.protocol() {
            PROTO_TCP => {
                let l4 = pkt.get(IPV4_MIN_HEADER..IPV4_MIN_HEADER + TCP_MIN_HEADER)?;
                if l4[13] & !TCP_PSH != TCP_ACK {
                    return None;
                }
                IPV4_MIN_HEADER + usize::from(l4[12] >> 4) * 4
            }
            PROTO_UDP => IPV4_MIN_HEADER + UDP_HEADER_LEN,
            _ => return None,
        };
        if headers > len
            || (ip.protocol() == PROTO_TCP && headers < IPV4_MIN_HEADER + TCP_MIN_HEADER)
        {
            return None;
        }
        Some(Flow {
            pkt,
            len,
            proto: ip.protocol(),
            src: ip.src(),
            dst: ip.dst(),
            headers,
        })
    }

    /// The same flow, with headers every segment may repeat: addresses, protocol, TOS (with the
    /// ECN bits), DF and TTL; the ports; for TCP also the acknowledgement, the window and the
    /// options (header bytes 28..). The head may not have ended with PSH.
    fn same_flow(&self, next: &Flow) -> bool {
        let (a, b) = (self.pkt, next.pkt);
        let ip_same = a[1] == b[1] && (a[6] & 0x40) == (b[6] & 0x40) && a[8] == b[8];
        let l4 = IPV4_MIN_HEADER;
        let ports = a[l4..l4 + 4] == b[l4..l4 + 4];
        let base = self.proto == next.proto && self.src == next.src && self.dst == next.dst;
        if !(base && ip_same && ports && self.headers == next.headers) {
            return false;
        }
        match self.proto {
            PROTO_TCP => {
                a[l4 + 13] & TCP_PSH == 0
                    && a[l4 + 8..l4 + 12] == b[l4 + 8..l4 + 12]
                    && a[l4 + 14..l4 + 16] == b[l4 + 14..l4 + 16]
                    && a[l4 + TCP_MIN_HEADER..self.headers] == b[l4 + TCP_MIN_HEADER..next.headers]
            }
            _ => true,
        }
    }

    /// TCP: `next` starts where the head's `payload` bytes end.
    fn continued_by(&self, next: &Flow, payload: usize) -> bool {
        let seq = |p: &[u8]| {
            let s = &p[IPV4_MIN_HEADER + 4..IPV4_MIN_HEADER + 8];
            u32::from_be_bytes([s[0], s[1], s[2], s[3]])
        };
        seq(self.pkt).wrapping_add(payload as u32) == seq(next.pkt)
    }
}

/// A packet's checksum state lets it merge: complete (checked separately) or partial exactly at
/// its transport checksum.
fn partial_at_l4(meta: PacketMeta, flow: &Flow) -> bool {
    match meta.csum {
        Csum::Complete => true,
        Csum::Partial { start, offset } => {
            let field = if flow.proto == PROTO_TCP {
                TCP_CHECKSUM_OFFSET
            } else {
                UDP_CHECKSUM_OFFSET
            };
            usize::from(start) == IPV4_MIN_HEADER && offset == field
        }
    }
}

/// The transport checksum of `pkt` (exactly one packet of a [`Flow`]) is right, or partial (its
/// sender has not summed it yet, nothing to check), or a UDP checksum of 0 (none).
fn checksum_ok(pkt: &[u8], meta: PacketMeta) -> bool {
    if meta.csum != Csum::Complete {
        return true;
    }
    let ip = Ipv4Packet::new_unchecked(pkt);
    let l4 = &pkt[IPV4_MIN_HEADER..ip.len()];
    if ip.protocol() == PROTO_UDP && l4[6..8] == [0, 0] {
        return true;
    }
    let ph = checksum::pseudo_header(ip.src(), ip.dst(), ip.protocol(), l4.len() as u16);
    checksum::sum(l4, ph) as u16 == 0xffff
}

#[cfg(test)]
mod tests;
