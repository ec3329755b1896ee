//! Generated ICMP: echo replies from the subnet gateway and errors (time exceeded, destination
//! unreachable) from visible hops, written in place into the caller's buffer.
//!
//! Follows RFC 1812 section 4.3.2.7: no error about an ICMP error, a non-first fragment, or a packet
//! whose source is not a unicast host. Errors quote the offending IP header and the first 8 bytes
//! of its payload (RFC 792), which is what NAT translation of errors later relies on.

use std::net::Ipv4Addr;

use smoltcp::wire::{IpProtocol, Ipv4Packet};

use super::DropReason;
use super::checksum;
use super::packet::{
    self, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HEADER_LEN, ICMP_QUOTE_MAX, PROTO_ICMP,
    is_icmp_error,
};

/// TTL of packets the dataplane originates.
pub const GENERATED_TTL: u8 = 64;
/// IPv4 header plus ICMP header of a generated error.
const ERROR_HEADERS: usize = 20 + 8;

/// The ICMP errors the dataplane generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 11 code 0: TTL exceeded in transit.
    TimeExceeded,
    /// Type 3 code 0.
    NetUnreachable,
    /// Type 3 code 1.
    HostUnreachable,
    /// Type 3 code 3.
    PortUnreachable,
    /// Type 3 code 4 with the next-hop MTU (RFC 1191): path-MTU discovery.
    FragNeeded { mtu: u16 },
    /// Type 3 code 13: communication administratively prohibited.
    AdminProhibited,
}

impl IcmpError {
    /// (type, code).
    pub fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::TimeExceeded => (11, 0),
            IcmpError::NetUnreachable => (3, 0),
            IcmpError::HostUnreachable => (3, 1),
            IcmpError::PortUnreachable => (3, 3),
            IcmpError::FragNeeded { .. } => (3, 4),
            IcmpError::AdminProhibited => (3, 13),
        }
    }

    /// The four bytes after the checksum: unused, or the next-hop MTU for `FragNeeded`.
    fn rest(self) -> [u8; 4] {
        match self {
            IcmpError::FragNeeded { mtu } => {
                let m = mtu.to_be_bytes();
                [0, 0, m[0], m[1]]
            }
            _ => [0; 4],
        }
    }
}

fn is_unicast_source(a: Ipv4Addr) -> bool {
    !(a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_loopback()
        || a.octets()[0] >= 240)
}

/// Replaces the IPv4 packet in `buf[..len]` by an ICMP error about it, sent from `from` to the
/// packet's source. Returns the new length. `buf[..len]` must start with a length-checked IPv4
/// header (as the fabric guarantees); the buffer needs room for `28 + min(len, header + 8)` bytes.
pub fn write_error(
    buf: &mut [u8],
    len: usize,
    from: Ipv4Addr,
    err: IcmpError,
) -> Result<usize, DropReason> {
    let len = len.min(buf.len());
    let ip = packet::Ipv4Packet::new_checked(&buf[..len]).map_err(|_| DropReason::Truncated)?;
    let header_len = ip.header_len();
    let to = ip.src();
    if ip.frag_offset() != 0 || !is_unicast_source(to) {
        return Err(DropReason::ErrorForError);
    }
    if ip.protocol() == PROTO_ICMP {
        match ip.payload().first() {
            Some(t) if !is_icmp_error(*t) => {}
            _ => return Err(DropReason::ErrorForError),
        }
    }
    let quote_len = (header_len + 8)
        .min(usize::from(ip.total_len()))
        .min(ICMP_QUOTE_MAX);
    let mut quote = [0u8; ICMP_QUOTE_MAX];
    quote[..quote_len].copy_from_slice(&buf[..quote_len]);

    let out_len = ERROR_HEADERS + quote_len;
    if buf.len() < out_len {
        return Err(DropReason::BufferTooSmall);
    }
    let out = &mut buf[..out_len];
    out[ERROR_HEADERS..].copy_from_slice(&quote[..quote_len]);
    let (icmp_type, code) = err.type_code();
    {
        let icmp = &mut out[20..];
        icmp[0] = icmp_type;
        icmp[1] = code;
        icmp[2..4].fill(0);
        icmp[4..8].copy_from_slice(&err.rest());
        let c = checksum::checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }
    write_ipv4_header(&mut out[..20], out_len as u16, from, to, IpProtocol::Icmp);
    Ok(out_len)
}

/// Writes a fresh 20-byte IPv4 header (no options, TTL [`GENERATED_TTL`], DSCP CS6 as routers use
/// for control traffic) with a correct checksum.
fn write_ipv4_header(
    h: &mut [u8],
    total_len: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
) {
    let mut ip = Ipv4Packet::new_unchecked(&mut h[..20]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_dscp(48);
    ip.set_ecn(0);
    ip.set_total_len(total_len);
    ip.set_ident(0);
    ip.clear_flags();
    ip.set_dont_frag(false);
    ip.set_more_frags(false);
    ip.set_frag_offset(0);
    ip.set_hop_limit(GENERATED_TTL);
    ip.set_next_header(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.set_checksum(0);
    let c = checksum::checksum(&h[..20]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Turns the ICMP echo request in `buf[..len]` into the echo reply, in place: addresses swapped,
/// type 8 -> 0 with an incremental checksum update, fresh TTL. Returns the reply's length (the
/// request's IP total length). Requests that are fragmented, truncated or carry a bad ICMP checksum
/// are refused with `ToGateway`.
pub fn echo_reply_in_place(buf: &mut [u8], len: usize) -> Result<usize, DropReason> {
    let len = len.min(buf.len());
    let mut ip =
        packet::Ipv4Packet::new_checked(&mut buf[..len]).map_err(|_| DropReason::Truncated)?;
    if ip.protocol() != PROTO_ICMP || ip.more_frags() || ip.frag_offset() != 0 {
        return Err(DropReason::ToGateway);
    }
    let total = usize::from(ip.total_len());
    let header_len = ip.header_len();
    let (src, dst) = (ip.src(), ip.dst());
    {
        let icmp = ip.payload_mut();
        if icmp.len() < ICMP_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0 || checksum::checksum(icmp) != 0 {
            return Err(DropReason::ToGateway);
        }
        icmp[0] = ICMP_ECHO_REPLY;
        let old_word = u16::from_be_bytes([ICMP_ECHO_REQUEST, 0]);
        let new_word = u16::from_be_bytes([ICMP_ECHO_REPLY, 0]);
        let c = checksum::update16(u16::from_be_bytes([icmp[2], icmp[3]]), old_word, new_word);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }
    // Keep the request's header options out of the reply: rebuild a plain 20-byte header.
    if header_len != 20 {
        buf.copy_within(header_len..total, 20);
    }
    let out_len = total - header_len + 20;
    write_ipv4_header(&mut buf[..20], out_len as u16, dst, src, IpProtocol::Icmp);
    Ok(out_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};

    fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4(src, dst, 5).udp(4000, 53);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn time_exceeded_quotes_header_and_eight_bytes() {
        let orig = udp_packet(
            [10, 0, 1, 10],
            [198, 51, 100, 10],
            b"hello world, long payload",
        );
        let mut buf = orig.clone();
        buf.resize(1500, 0);
        let n = write_error(
            &mut buf,
            orig.len(),
            Ipv4Addr::new(10, 0, 1, 1),
            IcmpError::TimeExceeded,
        )
        .unwrap();
        assert_eq!(n, 20 + 8 + 20 + 8);
        let p = SlicedPacket::from_ip(&buf[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().source(), [10, 0, 1, 1]);
        assert_eq!(ip.header().destination(), [10, 0, 1, 10]);
        assert_eq!(ip.header().ttl(), GENERATED_TTL);
        assert_eq!(checksum::checksum(&buf[..20]), 0, "IP header checksum");
        assert_eq!(checksum::checksum(&buf[20..n]), 0, "ICMP checksum");
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not icmp")
        };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)));
        assert_eq!(
            &buf[28..n],
            &orig[..28],
            "quoted header and 8 bytes, byte for byte"
        );
    }

    #[test]
    fn frag_needed_carries_next_hop_mtu() {
        let orig = udp_packet([10, 0, 1, 10], [10, 0, 2, 10], &[7; 100]);
        let mut buf = orig.clone();
        let n = write_error(
            &mut buf,
            orig.len(),
            Ipv4Addr::new(10, 0, 1, 1),
            IcmpError::FragNeeded { mtu: 1400 },
        )
        .unwrap();
        assert_eq!(&buf[20..22], &[3, 4]);
        assert_eq!(&buf[24..28], &[0, 0, 0x05, 0x78]);
        assert_eq!(checksum::checksum(&buf[20..n]), 0);
    }

    #[test]
    fn no_error_about_an_error_or_a_later_fragment() {
        let orig = udp_packet([10, 0, 1, 10], [10, 0, 2, 10], &[7; 10]);
        let mut buf = orig.clone();
        buf.resize(200, 0);
        let n = write_error(
            &mut buf,
            orig.len(),
            Ipv4Addr::new(10, 0, 1, 1),
            IcmpError::HostUnreachable,
        )
        .unwrap();
        let mut again = buf.clone();
        assert_eq!(
            write_error(
                &mut again,
                n,
                Ipv4Addr::new(10, 0, 1, 1),
                IcmpError::HostUnreachable
            ),
            Err(DropReason::ErrorForError)
        );
        let mut frag = orig.clone();
        frag[6] = 0x00;
        frag[7] = 0x10; // fragment offset 16 (x8 bytes)
        let c = {
            frag[10] = 0;
            frag[11] = 0;
            checksum::checksum(&frag[..20])
        };
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            write_error(
                &mut frag,
                orig.len(),
                Ipv4Addr::new(10, 0, 1, 1),
                IcmpError::TimeExceeded
            ),
            Err(DropReason::ErrorForError)
        );
    }

    #[test]
    fn buffer_too_small_is_refused_not_panicked() {
        let orig = udp_packet([10, 0, 1, 10], [10, 0, 2, 10], &[]);
        let mut buf = orig.clone(); // 28 bytes, reply needs 56
        assert_eq!(
            write_error(
                &mut buf,
                orig.len(),
                Ipv4Addr::new(10, 0, 1, 1),
                IcmpError::TimeExceeded
            ),
            Err(DropReason::BufferTooSmall)
        );
    }

    #[test]
    fn echo_reply_swaps_and_fixes_checksums() {
        let b =
            PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 1, 1], 64).icmpv4_echo_request(0x1234, 7);
        let mut buf = Vec::new();
        b.write(&mut buf, b"ping payload").unwrap();
        let len = buf.len();
        let n = echo_reply_in_place(&mut buf, len).unwrap();
        assert_eq!(n, len);
        let p = SlicedPacket::from_ip(&buf[..n]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().source(), [10, 0, 1, 1]);
        assert_eq!(ip.header().destination(), [10, 0, 1, 10]);
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not icmp")
        };
        let Icmpv4Type::EchoReply(h) = icmp.icmp_type() else {
            panic!("not a reply")
        };
        assert_eq!((h.id, h.seq), (0x1234, 7));
        assert_eq!(icmp.payload(), b"ping payload");
        assert_eq!(checksum::checksum(&buf[..20]), 0);
        assert_eq!(checksum::checksum(&buf[20..n]), 0);
    }
}
