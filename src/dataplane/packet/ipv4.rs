//! The IPv4 header view.

use std::net::Ipv4Addr;

use super::summary::{Quoted, Summary, read_quoted, read_transport};
use super::{HeaderError, ICMP_HEADER_LEN, IPV4_MIN_HEADER, PROTO_ICMP, is_icmp_error};
use crate::dataplane::checksum;

/// Byte ranges of the IPv4 header (RFC 791).
mod field {
    use std::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;

    pub const FLAG_DF: u16 = 0x4000;
    pub const FLAG_MF: u16 = 0x2000;
    pub const FRAG_OFFSET: u16 = 0x1fff;
}

/// A zero-copy view of an IPv4 packet in `buffer` (which may be longer than the packet).
///
/// After [`Ipv4Packet::new_checked`] the header is at least 20 bytes, the header length at least
/// 20 and at most the total length, and the buffer holds the whole total length: no accessor
/// panics. [`Ipv4Packet::new_header_checked`] checks the header only (for observers that also
/// read truncated packets); then [`Ipv4Packet::payload`] is what the buffer holds of it.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8; IPV4_MIN_HEADER], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn addr(b: &[u8; IPV4_MIN_HEADER], r: std::ops::Range<usize>) -> Ipv4Addr {
    Ipv4Addr::new(b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3])
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without checks: only for a buffer already checked (accessors may panic otherwise).
    pub fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Checks version, lengths and that the buffer holds the total length (trailing bytes past
    /// it are allowed). Does not verify the checksum ([`Ipv4Packet::verify_checksum`]).
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, HeaderError> {
        let p = Ipv4Packet::check_start(buffer)?;
        let (len, header_len) = (p.buffer.as_ref().len(), p.header_len());
        let total = usize::from(p.total_len());
        if header_len < IPV4_MIN_HEADER || total < header_len {
            return Err(HeaderError::BadHeader);
        }
        if len < total || len < header_len {
            return Err(HeaderError::Truncated);
        }
        Ok(p)
    }

    /// Checks the version and that the buffer holds the header; the total length may be wrong
    /// (then [`Ipv4Packet::len`] is what the buffer holds).
    pub fn new_header_checked(buffer: T) -> Result<Ipv4Packet<T>, HeaderError> {
        let p = Ipv4Packet::check_start(buffer)?;
        if p.header_len() < IPV4_MIN_HEADER {
            return Err(HeaderError::BadHeader);
        }
        if p.buffer.as_ref().len() < p.header_len() {
            return Err(HeaderError::Truncated);
        }
        Ok(p)
    }

    /// Version 4 and the 20 fixed bytes present.
    fn check_start(buffer: T) -> Result<Ipv4Packet<T>, HeaderError> {
        let b = buffer.as_ref();
        match b.first().map(|v| v >> 4) {
            Some(4) => {}
            Some(6) => return Err(HeaderError::Ipv6),
            Some(_) => return Err(HeaderError::NotIp),
            None => return Err(HeaderError::Truncated),
        }
        if b.len() < IPV4_MIN_HEADER {
            return Err(HeaderError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The fixed 20 bytes of the header, through one bounds check (an unchecked view shorter
    /// than that panics here, as each accessor would); the fields are then read without checks.
    #[inline]
    fn fixed(&self) -> &[u8; IPV4_MIN_HEADER] {
        self.buffer.as_ref()[..IPV4_MIN_HEADER]
            .try_into()
            .expect("20 bytes")
    }

    /// The header length in bytes (options included).
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn total_len(&self) -> u16 {
        be16(self.fixed(), field::TOTAL_LEN)
    }

    /// The packet's length: the total length, or what the buffer holds if that is less.
    pub fn len(&self) -> usize {
        usize::from(self.total_len()).min(self.buffer.as_ref().len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ident(&self) -> u16 {
        be16(self.fixed(), field::IDENT)
    }

    fn flags_frag(&self) -> u16 {
        be16(self.fixed(), field::FLAGS_FRAG)
    }

    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & field::FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.flags_frag() & field::FLAG_MF != 0
    }

    /// The fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & field::FRAG_OFFSET
    }

    pub fn ttl(&self) -> u8 {
        self.fixed()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.fixed()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.fixed(), field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        addr(self.fixed(), field::SRC_ADDR)
    }

    pub fn dst(&self) -> Ipv4Addr {
        addr(self.fixed(), field::DST_ADDR)
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        match self.header_len() {
            // The usual header, without options: a sum of known length, unrolled.
            IPV4_MIN_HEADER => checksum::checksum(self.fixed()) == 0,
            _ => checksum::checksum(self.header()) == 0,
        }
    }

    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The bytes after the header up to the total length (or the buffer's end if it is shorter).
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(self.header_len()..self.len())
            .unwrap_or_default()
    }

    /// The typed summary the filters, the NAT and the observers read.
    #[inline]
    pub fn summary(&self) -> Summary {
        let h = self.fixed();
        let be = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
        let flags_frag = be(field::FLAGS_FRAG.start);
        let offset = flags_frag & field::FRAG_OFFSET;
        let proto = h[field::PROTOCOL];
        let transport = read_transport(proto, offset == 0, self.payload());
        Summary {
            src: addr(h, field::SRC_ADDR),
            dst: addr(h, field::DST_ADDR),
            proto,
            header_len: self.header_len() as u16,
            len: self.len() as u32,
            ident: u32::from(be(field::IDENT.start)),
            dont_frag: flags_frag & field::FLAG_DF != 0,
            more_frags: flags_frag & field::FLAG_MF != 0,
            frag_offset: offset,
            transport,
        }
    }
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Brings `s`, this packet's summary before a rewrite that kept its lengths, protocol and
    /// fragment fields (a NAT translation), up to date: the addresses and the transport part
    /// are read again, the rest cannot have changed.
    #[inline]
    pub fn refresh(&self, s: &mut Summary) {
        let h = self.fixed();
        s.src = addr(h, field::SRC_ADDR);
        s.dst = addr(h, field::DST_ADDR);
        s.transport = read_transport(s.proto, s.frag_offset == 0, self.payload());
    }

    /// The packet an ICMP error quotes (its header and the start of its payload), if this is
    /// an unfragmented ICMP error and the quote is readable.
    pub fn quoted(&self) -> Option<Quoted> {
        if self.protocol() != PROTO_ICMP || self.frag_offset() != 0 {
            return None;
        }
        let icmp = self.payload();
        if !is_icmp_error(*icmp.first()?) {
            return None;
        }
        read_quoted(icmp.get(ICMP_HEADER_LEN..)?)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set16(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_total_len(&mut self, v: u16) {
        self.set16(field::TOTAL_LEN, v);
    }

    pub fn set_ident(&mut self, v: u16) {
        self.set16(field::IDENT, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.set16(field::CHECKSUM, v);
    }

    /// Decrements the TTL and patches the header checksum (RFC 1624). The caller checks that
    /// the TTL is above 1.
    pub fn decrement_ttl(&mut self) {
        let b: &mut [u8; IPV4_MIN_HEADER] = (&mut self.buffer.as_mut()[..IPV4_MIN_HEADER])
            .try_into()
            .expect("20 bytes");
        let old = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        b[field::TTL] = b[field::TTL].saturating_sub(1);
        let new = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        let c = checksum::update16(be16(b, field::CHECKSUM), old, new);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.len());
        self.buffer.as_mut().get_mut(start..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::packet::{PROTO_TCP, Transport};
    use etherparse::PacketBuilder;

    fn tcp() -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 2, 20], 64)
            .tcp(40000, 80, 1, 1000)
            .syn()
            .write(&mut v, b"hi")
            .unwrap();
        v
    }

    #[test]
    fn checked_view_reads_the_header() {
        let v = tcp();
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.header_len(), p.len(), p.protocol()), (20, 42, PROTO_TCP));
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 1, 10));
        let s = p.summary();
        assert_eq!(
            s.transport,
            Transport::Tcp {
                sport: 40000,
                dport: 80,
                flags: 0x02
            }
        );
    }

    #[test]
    fn a_refreshed_summary_equals_a_new_one() {
        let mut v = tcp();
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        let mut s = p.summary();
        // What a translation rewrites: an address and a port (checksums do not matter here).
        v[12..16].copy_from_slice(&[203, 0, 113, 7]);
        v[20..22].copy_from_slice(&61000u16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_ne!(s, p.summary());
        p.refresh(&mut s);
        assert_eq!(s, p.summary());
    }

    #[test]
    fn no_accessor_panics_after_a_check() {
        for n in 0..64 {
            for first in [0x45u8, 0x46, 0x4f, 0x40, 0x60, 0x00] {
                let mut b = vec![0xffu8; n];
                if let Some(x) = b.first_mut() {
                    *x = first;
                }
                if let Ok(p) = Ipv4Packet::new_checked(&b[..]) {
                    let _ = (p.summary(), p.payload(), p.verify_checksum());
                }
                if let Ok(p) = Ipv4Packet::new_header_checked(&b[..]) {
                    let _ = (p.summary(), p.payload(), p.len());
                }
            }
        }
    }

    #[test]
    fn errors_in_the_fabric_order() {
        assert_eq!(
            Ipv4Packet::new_checked(&[][..]).err(),
            Some(HeaderError::Truncated)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[0x60; 40][..]).err(),
            Some(HeaderError::Ipv6)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[0x10; 40][..]).err(),
            Some(HeaderError::NotIp)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[0x45; 19][..]).err(),
            Some(HeaderError::Truncated)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[0x44; 40][..]).err(),
            Some(HeaderError::BadHeader)
        );
        let mut v = tcp();
        v[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).err(),
            Some(HeaderError::BadHeader)
        );
        v[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).err(),
            Some(HeaderError::Truncated)
        );
    }
}
