//! Offload metadata that travels with a packet through [`crate::dataplane::Fabric`], and the two
//! helpers for egress ports that cannot take what it describes: the [`Segmenter`] (superpacket
//! -> wire-sized packets) and [`complete_checksum`] (partial -> complete checksum).
//!
//! [`PacketMeta`] is modelled on Linux's `virtio_net_hdr` (what a TUN device with `IFF_VNET_HDR`
//! hands over) and on quinn-udp's `RecvMeta { stride }` / `Transmit { segment_size }`: a
//! superpacket is one buffer holding the headers once and a payload of several segments of
//! `segment_size` bytes (the last may be shorter); a partial checksum (`csum_start`,
//! `csum_offset`) means the transport checksum field holds only the folded, uncomplemented
//! pseudo-header sum and whoever sends the packet sums the rest.
//!
//! Owns no state and never allocates: the caller owns every output buffer. MTU decisions use
//! [`PacketMeta::wire_len`] (headers plus one segment), never the superpacket's length.

use super::DropReason;
use super::checksum;
use super::nat::L4Checksum;
use super::packet::{
    Ipv4Packet, PROTO_TCP, PROTO_UDP, Summary, TCP_CWR, TCP_FIN, TCP_MIN_HEADER, TCP_PSH,
    UDP_HEADER_LEN,
};

/// Offset of the checksum field in a TCP header.
pub const TCP_CHECKSUM_OFFSET: u16 = 16;
/// Offset of the checksum field in a UDP header.
pub const UDP_CHECKSUM_OFFSET: u16 = 6;

/// What a superpacket is made of (`virtio_net_hdr.gso_type`). TCP over IPv6 is the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4 (TSO / GRO): segments share the IP and TCP headers; sequence numbers,
    /// IP identifiers and lengths advance per segment.
    TcpV4,
    /// UDP segmentation offload (USO / `UDP_SEGMENT`): one datagram per segment, each with its
    /// own UDP header.
    Udp,
}

/// Segmentation offload of a superpacket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    pub kind: GsoKind,
    /// Payload bytes per segment (the last may carry fewer); at least 1.
    pub segment_size: u16,
    /// Bytes of headers every segment repeats: IP and TCP header with options, or IP and UDP
    /// header.
    pub header_len: u16,
}

/// The state of the transport checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Csum {
    /// Every checksum in the packet is correct.
    #[default]
    Complete,
    /// The checksum at `start + offset` holds the folded, uncomplemented pseudo-header sum; the
    /// sender sums `start..` into it (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    Partial { start: u16, offset: u16 },
}

/// Offload metadata of one packet, in and out of [`crate::dataplane::Fabric::handle_meta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PacketMeta {
    /// `None`: one ordinary packet.
    pub gso: Option<Gso>,
    pub csum: Csum,
}

impl PacketMeta {
    /// One ordinary packet with complete checksums (what a port without offload has).
    pub const COMPLETE: PacketMeta = PacketMeta {
        gso: None,
        csum: Csum::Complete,
    };

    /// The length of the largest packet this one puts on the wire: the headers and one segment
    /// for a superpacket, else `len` itself. The MTU applies to this.
    pub fn wire_len(&self, len: usize) -> usize {
        match self.gso {
            Some(g) => len.min(usize::from(g.header_len) + usize::from(g.segment_size)),
            None => len,
        }
    }

    /// How many packets `len` bytes with this metadata become on the wire.
    pub fn segments(&self, len: usize) -> usize {
        match self.gso {
            Some(g) => {
                let payload = len.saturating_sub(usize::from(g.header_len));
                payload.div_ceil(usize::from(g.segment_size.max(1))).max(1)
            }
            None => 1,
        }
    }

    /// Checks the metadata against the packet (`pkt` = the packet, `s` its summary) and says
    /// how translation must treat its transport checksum. A partial checksum anywhere but at the
    /// TCP or UDP checksum of an unfragmented packet is completed here, in place (the metadata
    /// then says [`Csum::Complete`]). Metadata that does not fit the headers is
    /// [`DropReason::BadOffload`].
    #[inline]
    pub fn check(&mut self, pkt: &mut [u8], s: &Summary) -> Result<L4Checksum, DropReason> {
        if *self == PacketMeta::COMPLETE {
            // What a port without offload hands in: nothing to check.
            return Ok(L4Checksum::Complete);
        }
        if let Some(g) = self.gso {
            check_gso(pkt, s, g)?;
        }
        let Csum::Partial { start, offset } = self.csum else {
            return Ok(L4Checksum::Complete);
        };
        let l4_field = match s.proto {
            PROTO_TCP => TCP_CHECKSUM_OFFSET,
            PROTO_UDP => UDP_CHECKSUM_OFFSET,
            _ => u16::MAX,
        };
        let fits = usize::from(start) + usize::from(offset) + 2 <= s.len as usize;
        if start == s.header_len && offset == l4_field && fits && !s.is_fragment() {
            return Ok(L4Checksum::Partial);
        }
        // Anywhere else a partial checksum may only cover the transport part of an ordinary
        // packet: one inside the IP header or on a superpacket (whose headers the GSO check has
        // just accepted) would overwrite header fields.
        if self.gso.is_some() || start < s.header_len {
            return Err(DropReason::BadOffload);
        }
        complete_checksum(&mut pkt[..s.len as usize], start, offset)?;
        self.csum = Csum::Complete;
        Ok(L4Checksum::Complete)
    }
}

/// The TCP header length (data offset) of the IPv4 packet whose IP header is `ihl` bytes.
fn tcp_header_len(pkt: &[u8], ihl: usize) -> Option<usize> {
    let h = usize::from(pkt.get(ihl + 12)? >> 4) * 4;
    (h >= TCP_MIN_HEADER).then_some(h)
}

/// Completes a partial checksum in place: sums `pkt[start..]` (whose checksum field at
/// `start + offset` holds the pseudo-header sum) and stores the complement there. A UDP
/// checksum that comes out as 0 is sent as 0xffff (RFC 768). `pkt` is exactly the packet.
pub fn complete_checksum(pkt: &mut [u8], start: u16, offset: u16) -> Result<(), DropReason> {
    let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if at + 2 > pkt.len() {
        return Err(DropReason::BadOffload);
    }
    let mut c = !(checksum::sum(&pkt[start..], 0) as u16);
    if c == 0 && is_udp_checksum(pkt, start, offset) {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn is_udp_checksum(pkt: &[u8], start: usize, offset: u16) -> bool {
    Ipv4Packet::new_header_checked(pkt)
        .is_ok_and(|p| p.protocol() == PROTO_UDP && p.header_len() == start)
        && offset == UDP_CHECKSUM_OFFSET
}

/// Splits a superpacket into the packets that go on the wire, each with every checksum
/// complete, into buffers the caller owns: call [`Segmenter::next_into`] until it returns
/// `Ok(None)`. A packet without GSO yields itself once, its checksum completed if it was
/// partial.
///
/// TCP (as Linux's `tcp_gso_segment`): each segment repeats the IP and TCP headers; the IP
/// identifier is incremented per segment, lengths are set, sequence numbers advance by the
/// payload before it, FIN and PSH stay only on the last segment and CWR only on the first.
/// UDP (USO): one datagram per segment, each with its own UDP length and checksum.
#[derive(Debug, Clone)]
pub struct Segmenter<'a> {
    pkt: &'a [u8],
    meta: PacketMeta,
    /// Bytes of headers every segment repeats.
    headers: usize,
    /// Payload bytes per segment.
    step: usize,
    ihl: usize,
    index: usize,
    count: usize,
}

impl<'a> Segmenter<'a> {
    /// Checks `pkt` (exactly the packet) and its metadata.
    pub fn new(pkt: &'a [u8], meta: PacketMeta) -> Result<Segmenter<'a>, DropReason> {
        let view = Ipv4Packet::new_checked(pkt).map_err(DropReason::from)?;
        let s = view.summary();
        let pkt = &pkt[..s.len as usize];
        let (headers, step) = match meta.gso {
            Some(g) => {
                check_gso(pkt, &s, g)?;
                (usize::from(g.header_len), usize::from(g.segment_size))
            }
            None => (pkt.len(), usize::MAX),
        };
        if let Csum::Partial { start, offset } = meta.csum
            && usize::from(start) + usize::from(offset) + 2 > pkt.len()
        {
            return Err(DropReason::BadOffload);
        }
        Ok(Segmenter {
            pkt,
            meta,
            headers,
            step,
            ihl: usize::from(s.header_len),
            index: 0,
            count: meta.segments(pkt.len()),
        })
    }

    /// How many packets the superpacket becomes.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The largest packet [`Segmenter::next_into`] writes.
    pub fn max_len(&self) -> usize {
        self.meta.wire_len(self.pkt.len())
    }

    /// Writes the next packet into `out` and returns its length; `Ok(None)` when all have been
    /// written. `out` must hold [`Segmenter::max_len`] bytes (else `BufferTooSmall`, and the
    /// same packet is tried again on the next call).
    pub fn next_into(&mut self, out: &mut [u8]) -> Result<Option<usize>, DropReason> {
        if self.index >= self.count {
            return Ok(None);
        }
        let Some(g) = self.meta.gso else {
            let n = self.pkt.len();
            let dst = out.get_mut(..n).ok_or(DropReason::BufferTooSmall)?;
            dst.copy_from_slice(self.pkt);
            if let Csum::Partial { start, offset } = self.meta.csum {
                complete_checksum(dst, start, offset)?;
            }
            self.index += 1;
            return Ok(Some(n));
        };
        let i = self.index;
        let from = self.headers + i * self.step;
        let to = (from + self.step).min(self.pkt.len());
        let chunk = &self.pkt[from.min(to)..to];
        let n = self.headers + chunk.len();
        let dst = out.get_mut(..n).ok_or(DropReason::BufferTooSmall)?;
        dst[..self.headers].copy_from_slice(&self.pkt[..self.headers]);
        dst[self.headers..].copy_from_slice(chunk);
        let (first, last) = (i == 0, i + 1 == self.count);

        let mut ip = Ipv4Packet::new_unchecked(&mut dst[..]);
        let ident = ip.ident().wrapping_add(i as u16);
        ip.set_ident(ident);
        ip.set_total_len(n as u16);
        ip.fill_checksum();
        let l4 = &mut dst[self.ihl..];
        match g.kind {
            GsoKind::TcpV4 => {
                let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
                let seq = seq.wrapping_add((i * self.step) as u32);
                l4[4..8].copy_from_slice(&seq.to_be_bytes());
                if !last {
                    l4[13] &= !(TCP_FIN | TCP_PSH);
                }
                if !first {
                    l4[13] &= !TCP_CWR;
                }
                fill_l4_checksum(dst, self.ihl, PROTO_TCP);
            }
            GsoKind::Udp => {
                let len = (n - self.ihl) as u16;
                l4[4..6].copy_from_slice(&len.to_be_bytes());
                fill_l4_checksum(dst, self.ihl, PROTO_UDP);
            }
        }
        self.index += 1;
        Ok(Some(n))
    }
}

/// The GSO checks of [`PacketMeta::check`].
fn check_gso(pkt: &[u8], s: &Summary, g: Gso) -> Result<(), DropReason> {
    let ihl = usize::from(s.header_len);
    let headers = match (g.kind, s.proto) {
        (GsoKind::TcpV4, PROTO_TCP) => tcp_header_len(pkt, ihl)
            .map(|h| ihl + h)
            .ok_or(DropReason::BadOffload)?,
        (GsoKind::Udp, PROTO_UDP) => ihl + UDP_HEADER_LEN,
        _ => return Err(DropReason::BadOffload),
    };
    if g.segment_size == 0
        || usize::from(g.header_len) != headers
        || headers > s.len as usize
        || s.is_fragment()
    {
        return Err(DropReason::BadOffload);
    }
    Ok(())
}

/// Computes the TCP or UDP checksum of the IPv4 packet `pkt` (exactly the packet, IP header of
/// `ihl` bytes) from scratch.
pub fn fill_l4_checksum(pkt: &mut [u8], ihl: usize, proto: u8) {
    let ip = Ipv4Packet::new_unchecked(&pkt[..]);
    let (src, dst) = (ip.src(), ip.dst());
    let at = ihl
        + usize::from(if proto == PROTO_TCP {
            TCP_CHECKSUM_OFFSET
        } else {
            UDP_CHECKSUM_OFFSET
        });
    pkt[at..at + 2].fill(0);
    let l4 = &pkt[ihl..];
    let ph = checksum::pseudo_header(src, dst, proto, l4.len() as u16);
    let mut c = !(checksum::sum(l4, ph) as u16);
    if c == 0 && proto == PROTO_UDP {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

pub mod coalesce;
pub mod vnet;

#[cfg(test)]
mod tests;
