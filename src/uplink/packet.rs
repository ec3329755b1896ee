//! The uplink's packet work, sans-IO: sorting what the segment sends ([`classify`]) and building
//! what goes back that the segment-side TCP stack does not make itself — RSTs for refused
//! connects, ICMP errors, UDP datagrams (fragmented to the MTU) and echo replies.
//!
//! Everything here is a pure function of its arguments, unit-tested below. Packets are read
//! through `smoltcp::wire` views, checked once by `new_checked`.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use super::counters::UplinkDrop;
use crate::dataplane::checksum;
use crate::dataplane::icmp::{GENERATED_TTL, IcmpError};
pub(crate) use crate::dataplane::packet::ICMP_QUOTE_MAX as MAX_QUOTE;
use crate::dataplane::packet::{
    ICMP_HEADER_LEN as ICMP_HEADER, IPV4_MIN_HEADER as IPV4_HEADER, TCP_RST,
    UDP_HEADER_LEN as UDP_HEADER,
};

/// A TCP or UDP flow as the segment sees it: `src` is the function's public address and port
/// (after SNAT), `dst` the outside destination (or, for ingress, the host client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UplinkFlowKey {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// An echo flow: the function's public address, the destination and the function's identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EchoKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ident: u16,
}

/// What a packet from the segment asks of the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    Tcp {
        key: UplinkFlowKey,
        /// A SYN without ACK: a new connection.
        syn: bool,
        rst: bool,
    },
    Udp {
        key: UplinkFlowKey,
        payload: &'a [u8],
        /// The IP header and the UDP header: what an ICMP error about this flow quotes.
        quote: &'a [u8],
    },
    EchoRequest {
        key: EchoKey,
        seq: u16,
        payload: &'a [u8],
    },
}

/// Sorts a packet from the segment. Checks the IPv4 header (and its checksum), refuses
/// fragments, and for UDP and ICMP the transport checksum (TCP's is the TCP stack's business).
pub(crate) fn classify(packet: &[u8]) -> Result<Inbound<'_>, UplinkDrop> {
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| UplinkDrop::Malformed)?;
    if ip.version() != 4 || !ip.verify_checksum() {
        return Err(UplinkDrop::Malformed);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(UplinkDrop::Fragment);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let header_len = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let payload = &packet[header_len..total];
    match ip.next_header() {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| UplinkDrop::Malformed)?;
            Ok(Inbound::Tcp {
                key: UplinkFlowKey {
                    src: SocketAddrV4::new(src, tcp.src_port()),
                    dst: SocketAddrV4::new(dst, tcp.dst_port()),
                },
                syn: tcp.syn() && !tcp.ack(),
                rst: tcp.rst(),
            })
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| UplinkDrop::Malformed)?;
            if udp.checksum() != 0 && !udp.verify_checksum(&src.into(), &dst.into()) {
                return Err(UplinkDrop::Malformed);
            }
            let body_len = usize::from(udp.len()) - UDP_HEADER;
            Ok(Inbound::Udp {
                key: UplinkFlowKey {
                    src: SocketAddrV4::new(src, udp.src_port()),
                    dst: SocketAddrV4::new(dst, udp.dst_port()),
                },
                payload: &payload[UDP_HEADER..UDP_HEADER + body_len],
                quote: &packet[..header_len + UDP_HEADER],
            })
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| UplinkDrop::Malformed)?;
            if !icmp.verify_checksum() {
                return Err(UplinkDrop::Malformed);
            }
            if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
                return Err(UplinkDrop::Protocol);
            }
            Ok(Inbound::EchoRequest {
                key: EchoKey {
                    src,
                    dst,
                    ident: icmp.echo_ident(),
                },
                seq: icmp.echo_seq_no(),
                payload: &payload[ICMP_HEADER..],
            })
        }
        _ => Err(UplinkDrop::Protocol),
    }
}

/// The RST that answers `segment` (a full IPv4/TCP packet) as a closed port would (RFC 9293
/// 3.10.7.1): with the segment's ACK number as sequence if it carried one, else sequence zero and
/// an ACK of everything it occupied. `None` for a RST (never answered) or a malformed packet.
pub(crate) fn tcp_reset_for(segment: &[u8], ident: u16) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(segment).ok()?;
    let header_len = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let tcp = TcpPacket::new_checked(&segment[header_len..total]).ok()?;
    if tcp.rst() {
        return None;
    }
    let data_len = total - header_len - usize::from(tcp.header_len());
    let (seq, ack, flags) = if tcp.ack() {
        (tcp.ack_number().0 as u32, 0u32, TCP_RST)
    } else {
        let occupied = data_len + usize::from(tcp.syn()) + usize::from(tcp.fin());
        (
            0,
            (tcp.seq_number().0 as u32).wrapping_add(occupied as u32),
            0x14,
        )
    };
    let mut seg = [0u8; 20];
    seg[0..2].copy_from_slice(&tcp.dst_port().to_be_bytes());
    seg[2..4].copy_from_slice(&tcp.src_port().to_be_bytes());
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[8..12].copy_from_slice(&ack.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = flags;
    let (src, dst) = (ip.dst_addr(), ip.src_addr());
    let c = checksum::sum(&seg, checksum::pseudo_header(src, dst, 6, 20));
    seg[16..18].copy_from_slice(&(!(c as u16)).to_be_bytes());
    let mut out = vec![0u8; IPV4_HEADER + seg.len()];
    write_ipv4_header(
        &mut out[..IPV4_HEADER],
        Header {
            total_len: (IPV4_HEADER + seg.len()) as u16,
            ident,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            src,
            dst,
            proto: IpProtocol::Tcp,
        },
    );
    out[IPV4_HEADER..].copy_from_slice(&seg);
    Some(out)
}

/// The first bytes of `packet` an ICMP error about it quotes (its IP header and 8 more bytes).
pub(crate) fn quote_of(packet: &[u8]) -> &[u8] {
    let header_len = packet
        .first()
        .map_or(IPV4_HEADER, |b| usize::from(b & 0x0f) * 4);
    &packet[..(header_len + 8).min(packet.len()).min(MAX_QUOTE)]
}

/// An ICMP error from `from` to the source of the packet `quote` begins with (see [`quote_of`]).
/// `None` when the quote is not an IPv4 header, or `err` needs data this builder does not write.
pub(crate) fn icmp_error(
    from: Ipv4Addr,
    quote: &[u8],
    err: IcmpError,
    ident: u16,
) -> Option<Vec<u8>> {
    if quote.len() < IPV4_HEADER
        || quote[0] >> 4 != 4
        || matches!(err, IcmpError::FragNeeded { .. })
    {
        return None;
    }
    let quote = &quote[..quote.len().min(MAX_QUOTE)];
    let to = Ipv4Addr::new(quote[12], quote[13], quote[14], quote[15]);
    let total = IPV4_HEADER + ICMP_HEADER + quote.len();
    let mut out = vec![0u8; total];
    let (icmp_type, code) = err.type_code();
    {
        let icmp = &mut out[IPV4_HEADER..];
        icmp[0] = icmp_type;
        icmp[1] = code;
        icmp[ICMP_HEADER..].copy_from_slice(quote);
        let c = checksum::checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }
    write_ipv4_header(
        &mut out[..IPV4_HEADER],
        Header {
            total_len: total as u16,
            ident,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            src: from,
            dst: to,
            proto: IpProtocol::Icmp,
        },
    );
    Some(out)
}

/// Room a UDP segment needs before its payload: [`udp_segment`] writes the header there.
pub(crate) const UDP_HEADER_ROOM: usize = UDP_HEADER;

/// Makes `seg` — [`UDP_HEADER_ROOM`] bytes of room, then the payload — a UDP segment from `src`
/// to `dst`, checksummed, in place (no copy of the payload). `None` when it is too long.
pub(crate) fn udp_segment(src: SocketAddrV4, dst: SocketAddrV4, seg: &mut [u8]) -> Option<()> {
    let len = u16::try_from(seg.len())
        .ok()
        .filter(|l| usize::from(*l) >= UDP_HEADER)?;
    seg[0..2].copy_from_slice(&src.port().to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port().to_be_bytes());
    seg[4..6].copy_from_slice(&len.to_be_bytes());
    seg[6..8].fill(0);
    let c = !(checksum::sum(seg, checksum::pseudo_header(*src.ip(), *dst.ip(), 17, len)) as u16);
    // A computed zero is sent as all ones (RFC 768): zero means "no checksum".
    let c = if c == 0 { 0xffff } else { c };
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// An ICMP echo message (request or reply) with its checksum.
pub(crate) fn echo_message(reply: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; ICMP_HEADER + payload.len()];
    m[0] = if reply { 0 } else { 8 };
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    m[6..8].copy_from_slice(&seq.to_be_bytes());
    m[ICMP_HEADER..].copy_from_slice(payload);
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An echo reply as a host ICMP socket returns it: `(ident, seq, payload)`. Anything else (a
/// request looped back, an error) is `None`.
pub(crate) fn parse_echo_reply(icmp: &[u8]) -> Option<(u16, u16, &[u8])> {
    let p = Icmpv4Packet::new_checked(icmp).ok()?;
    if p.msg_type() != Icmpv4Message::EchoReply || p.msg_code() != 0 {
        return None;
    }
    Some((p.echo_ident(), p.echo_seq_no(), &icmp[ICMP_HEADER..]))
}

/// An echo reply as a raw ICMP socket returns it (with its IP header): `(source, ident, seq,
/// payload)`.
pub(crate) fn parse_raw_echo_reply(packet: &[u8]) -> Option<(Ipv4Addr, u16, u16, &[u8])> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Icmp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let header_len = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let (ident, seq, payload) = parse_echo_reply(&packet[header_len..total])?;
    Some((ip.src_addr(), ident, seq, payload))
}

/// Wraps the transport bytes `l4` in IPv4 headers from `src` to `dst`, split into fragments when
/// the packet would exceed `mtu`; hands each packet to `emit` as its header and its body (a slice
/// of `l4`), for the caller to write where it keeps packets (nothing is allocated here).
pub(crate) fn ipv4_packets(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    ident: u16,
    l4: &[u8],
    mtu: usize,
    mut emit: impl FnMut(&[u8], &[u8]),
) {
    let room = mtu.saturating_sub(IPV4_HEADER) & !7;
    if IPV4_HEADER + l4.len() <= mtu || room == 0 {
        if IPV4_HEADER + l4.len() > usize::from(u16::MAX) {
            return;
        }
        emit(&header(src, dst, proto, ident, l4.len(), 0, false), l4);
        return;
    }
    let mut offset = 0;
    while offset < l4.len() {
        let end = (offset + room).min(l4.len());
        let more = end < l4.len();
        let body = &l4[offset..end];
        emit(
            &header(src, dst, proto, ident, body.len(), offset, more),
            body,
        );
        offset = end;
    }
}

/// The IPv4 header of a packet (or fragment at `offset`) whose body is `body_len` bytes.
fn header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    ident: u16,
    body_len: usize,
    offset: usize,
    more_frags: bool,
) -> [u8; IPV4_HEADER] {
    let total_len = (IPV4_HEADER + body_len) as u16;
    let mut out = [0u8; IPV4_HEADER];
    write_ipv4_header(
        &mut out,
        Header {
            total_len,
            ident,
            dont_frag: false,
            more_frags,
            frag_offset: offset as u16,
            src,
            dst,
            proto,
        },
    );
    out
}

struct Header {
    total_len: u16,
    ident: u16,
    dont_frag: bool,
    more_frags: bool,
    /// In bytes (a multiple of 8).
    frag_offset: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
}

/// A 20-byte IPv4 header with TTL [`GENERATED_TTL`] and its checksum.
fn write_ipv4_header(h: &mut [u8], f: Header) {
    let mut ip = Ipv4Packet::new_unchecked(h);
    ip.set_version(4);
    ip.set_header_len(IPV4_HEADER as u8);
    ip.set_dscp(0);
    ip.set_ecn(0);
    ip.set_total_len(f.total_len);
    ip.set_ident(f.ident);
    ip.clear_flags();
    ip.set_dont_frag(f.dont_frag);
    ip.set_more_frags(f.more_frags);
    ip.set_frag_offset(f.frag_offset);
    ip.set_hop_limit(GENERATED_TTL);
    ip.set_next_header(f.proto);
    ip.set_src_addr(f.src);
    ip.set_dst_addr(f.dst);
    ip.fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        Icmpv4Type, IpNumber, Ipv4Slice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    };

    const FN: [u8; 4] = [203, 0, 113, 10];
    const OUT: [u8; 4] = [198, 51, 100, 7];

    fn syn() -> Vec<u8> {
        let b = PacketBuilder::ipv4(FN, OUT, 64)
            .tcp(40000, 443, 1000, 64240)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    #[test]
    fn classify_sorts_syns_udp_and_echo() {
        let s = syn();
        let key = UplinkFlowKey {
            src: SocketAddrV4::new(FN.into(), 40000),
            dst: SocketAddrV4::new(OUT.into(), 443),
        };
        assert_eq!(
            classify(&s),
            Ok(Inbound::Tcp {
                key,
                syn: true,
                rst: false
            })
        );

        let mut u = Vec::new();
        PacketBuilder::ipv4(FN, OUT, 64)
            .udp(5353, 53)
            .write(&mut u, b"query")
            .unwrap();
        match classify(&u) {
            Ok(Inbound::Udp {
                key,
                payload,
                quote,
            }) => {
                assert_eq!(key.dst, SocketAddrV4::new(OUT.into(), 53));
                assert_eq!(payload, b"query");
                assert_eq!(quote.len(), 28);
            }
            other => panic!("{other:?}"),
        }

        let mut e = Vec::new();
        PacketBuilder::ipv4(FN, OUT, 64)
            .icmpv4_echo_request(77, 3)
            .write(&mut e, b"ping")
            .unwrap();
        assert_eq!(
            classify(&e),
            Ok(Inbound::EchoRequest {
                key: EchoKey {
                    src: FN.into(),
                    dst: OUT.into(),
                    ident: 77
                },
                seq: 3,
                payload: b"ping"
            })
        );
    }

    #[test]
    fn classify_refuses_fragments_bad_checksums_and_other_protocols() {
        let mut u = Vec::new();
        PacketBuilder::ipv4(FN, OUT, 64)
            .udp(5353, 53)
            .write(&mut u, b"query")
            .unwrap();
        let mut bad = u.clone();
        bad[30] ^= 0xff;
        assert_eq!(classify(&bad), Err(UplinkDrop::Malformed));
        let mut frag = u.clone();
        frag[6] |= 0x20;
        frag[10..12].fill(0);
        let c = checksum::checksum(&frag[..20]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(classify(&frag), Err(UplinkDrop::Fragment));
        let mut hdr = u.clone();
        hdr[10] ^= 1;
        assert_eq!(classify(&hdr), Err(UplinkDrop::Malformed));
        assert_eq!(classify(&u[..10]), Err(UplinkDrop::Malformed));
        let mut reply = Vec::new();
        PacketBuilder::ipv4(FN, OUT, 64)
            .icmpv4_echo_reply(1, 1)
            .write(&mut reply, b"")
            .unwrap();
        assert_eq!(classify(&reply), Err(UplinkDrop::Protocol));
    }

    #[test]
    fn a_refused_syn_gets_a_rst_ack_of_its_sequence_plus_one() {
        let rst = tcp_reset_for(&syn(), 9).expect("a SYN is answered");
        let p = SlicedPacket::from_ip(&rst).expect("valid");
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source(), OUT);
        assert_eq!(ip.header().destination(), FN);
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not TCP")
        };
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (443, 40000));
        assert_eq!(
            (tcp.sequence_number(), tcp.acknowledgment_number()),
            (0, 1001)
        );
        assert_eq!(
            tcp.calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                .unwrap(),
            tcp.checksum()
        );
        assert_eq!(tcp_reset_for(&rst, 0), None, "a RST is never answered");
    }

    #[test]
    fn an_icmp_error_quotes_the_header_and_eight_bytes() {
        let s = syn();
        let err = icmp_error(
            Ipv4Addr::new(203, 0, 113, 1),
            quote_of(&s),
            IcmpError::HostUnreachable,
            1,
        )
        .expect("built");
        let p = Ipv4Slice::from_slice(&err).expect("valid IPv4");
        assert_eq!(p.header().source(), [203, 0, 113, 1]);
        assert_eq!(p.header().destination(), FN);
        assert_eq!(p.header().protocol(), IpNumber::ICMP);
        let icmp = etherparse::Icmpv4Slice::from_slice(p.payload().payload).expect("ICMP");
        assert!(matches!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(_)
        ));
        assert_eq!(icmp.code_u8(), 1);
        assert_eq!(&err[28..], &s[..28]);
        assert_eq!(checksum::checksum(&err[20..]), 0);
    }

    #[test]
    fn large_udp_replies_are_fragmented_on_eight_byte_boundaries() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let src = SocketAddrV4::new(OUT.into(), 53);
        let dst = SocketAddrV4::new(FN.into(), 5353);
        let mut seg = [vec![0xaa; UDP_HEADER_ROOM], payload.clone()].concat();
        udp_segment(src, dst, &mut seg).expect("fits");
        let mut frags = Vec::new();
        ipv4_packets(
            *src.ip(),
            *dst.ip(),
            IpProtocol::Udp,
            5,
            &seg,
            1500,
            |h, b| frags.push([h, b].concat()),
        );
        assert_eq!(frags.len(), 3);
        let mut joined = vec![0u8; seg.len()];
        for f in &frags {
            assert!(f.len() <= 1500);
            let ip = Ipv4Packet::new_checked(&f[..]).expect("valid");
            assert!(ip.verify_checksum());
            let off = usize::from(ip.frag_offset());
            assert_eq!(off % 8, 0);
            joined[off..off + f.len() - 20].copy_from_slice(&f[20..]);
        }
        assert_eq!(joined, seg);
        let whole = [frags[0][..20].to_vec(), seg.clone()].concat();
        let mut fixed = whole.clone();
        fixed[2..4].copy_from_slice(&(whole.len() as u16).to_be_bytes());
        fixed[6] = 0;
        fixed[7] = 0;
        fixed[10..12].fill(0);
        let c = checksum::checksum(&fixed[..20]);
        fixed[10..12].copy_from_slice(&c.to_be_bytes());
        match classify(&fixed) {
            Ok(Inbound::Udp { payload: p, .. }) => assert_eq!(p, &payload[..]),
            other => panic!("reassembled datagram does not check: {other:?}"),
        }
    }

    #[test]
    fn echo_messages_round_trip() {
        let m = echo_message(true, 0x1234, 7, b"abc");
        assert_eq!(parse_echo_reply(&m), Some((0x1234, 7, &b"abc"[..])));
        assert_eq!(parse_echo_reply(&echo_message(false, 1, 1, b"")), None);
        let mut ip = Vec::new();
        ipv4_packets(
            OUT.into(),
            FN.into(),
            IpProtocol::Icmp,
            1,
            &m,
            1500,
            |h, b| ip = [h, b].concat(),
        );
        assert_eq!(
            parse_raw_echo_reply(&ip),
            Some((Ipv4Addr::from(OUT), 0x1234, 7, &b"abc"[..]))
        );
    }
}
