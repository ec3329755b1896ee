//! In-place header rewriting of raw IPv4 packets: addresses, ports and ICMP identifiers, with
//! every checksum patched incrementally (RFC 1624, [`checksum::update16`] / [`checksum::update32`]);
//! ICMP error translation (RFC 5508); the RST the `aws` profile answers stale TCP flows with.
//!
//! Owns no state. Input is whatever the caller hands over: [`parse`] checks every length it relies
//! on, so no function here panics or reads out of bounds on any input. A UDP checksum of 0 ("none")
//! stays 0; an updated UDP checksum that comes out as 0 is sent as 0xffff (RFC 768). Non-first
//! fragments carry no transport header: only their address (and the IP header checksum) changes,
//! since the transport checksum in the first fragment already accounts for the new address.

pub(crate) use super::bytes::{rd16, rd32, wr16, wr32};
use super::conntrack::Dir;
use super::{NatDrop, Proto};
use crate::dataplane::checksum;
use crate::dataplane::packet::{
    ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HEADER_LEN,
    ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, Ipv4Packet, TCP_ACK, TCP_FIN, TCP_MIN_HEADER,
    TCP_RST, TCP_SYN, UDP_HEADER_LEN,
};
#[cfg(test)]
use crate::dataplane::packet::{IcmpMessage, Summary, Transport};

/// Fragment position of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frag {
    /// Not fragmented.
    Whole,
    /// Offset 0, more fragments follow: carries the transport header.
    First,
    /// Offset > 0: no transport header.
    Later,
}

/// The transport part, as far as the NAT cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// Echo request (`request`) or reply; the identifier plays the local port.
    IcmpQuery {
        id: u16,
        request: bool,
    },
    /// Destination unreachable, time exceeded or parameter problem: see [`parse_error`].
    IcmpError,
    /// A non-first fragment.
    None,
}

/// What the transport checksum field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4Checksum {
    /// A complete checksum: address and port changes are patched with RFC 1624.
    #[default]
    Complete,
    /// Checksum offload (`csum_start`/`csum_offset` at the TCP or UDP checksum): the field holds
    /// the folded, uncomplemented pseudo-header sum; the payload (ports included) is summed
    /// later. An address change updates that sum (RFC 1624 on the uncomplemented value); a port
    /// change adds no term.
    Partial,
}

/// The header fields of a packet the NAT reads: its policy on the packet view's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) ihl: usize,
    pub(crate) total: usize,
    pub(crate) proto: Proto,
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) ident: u16,
    pub(crate) frag: Frag,
    pub(crate) l4: L4,
    pub(crate) csum: L4Checksum,
}

impl Parsed {
    /// (local port, remote port) seen from `dir`: for outbound packets the source is local, for
    /// inbound ones the destination. ICMP queries use (identifier, 0).
    pub(crate) fn ports(&self, dir: Dir) -> (u16, u16) {
        match (self.l4, dir) {
            (L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport }, Dir::Out) => (sport, dport),
            (L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport }, Dir::In) => (dport, sport),
            (L4::IcmpQuery { id, .. }, _) => (id, 0),
            _ => (0, 0),
        }
    }

    pub(crate) fn tcp_flags(&self) -> u8 {
        match self.l4 {
            L4::Tcp { flags, .. } => flags,
            _ => 0,
        }
    }

    pub(crate) fn is_icmp_error(&self) -> bool {
        self.l4 == L4::IcmpError
    }
}

/// ICMP types translated as errors (RFC 5508 section 4): destination unreachable (including
/// fragmentation needed), time exceeded, parameter problem.
fn is_translated_error(t: u8) -> bool {
    matches!(
        t,
        ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}

/// ICMP echo request or reply (code 0): the only queries the NAT translates.
fn is_echo(icmp_type: u8, code: u8) -> bool {
    matches!(icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) && code == 0
}

/// The checksum state translation patches: `csum` for TCP and UDP; ICMP's is always complete (a
/// partial checksum is only ever accepted at a TCP or UDP checksum field).
fn transport_checksum(proto: Proto, csum: L4Checksum) -> L4Checksum {
    match proto {
        Proto::Tcp | Proto::Udp => csum,
        Proto::Icmp => L4Checksum::Complete,
    }
}

/// Checks and reads the headers of the IPv4 packet in `pkt` (which may be longer than its
/// total length), whose transport checksum is complete.
#[inline]
pub(crate) fn parse(pkt: &[u8]) -> Result<Parsed, NatDrop> {
    let view = Ipv4Packet::new_checked(pkt).map_err(|_| NatDrop::Malformed)?;
    from_view(&view, L4Checksum::Complete)
}

/// The NAT's reading of a packet the view has checked (`ip`), whose transport checksum is in
/// state `csum`: its policy on the view's summary ([`from_summary`], tested equal on any bytes),
/// read through the view's accessors without building the whole summary.
#[inline(always)]
pub(crate) fn from_view<T: AsRef<[u8]>>(
    ip: &Ipv4Packet<T>,
    csum: L4Checksum,
) -> Result<Parsed, NatDrop> {
    let proto = Proto::from_number(ip.protocol()).ok_or(NatDrop::UnsupportedProtocol)?;
    let frag = match (ip.frag_offset(), ip.more_frags()) {
        (0, false) => Frag::Whole,
        (0, true) => Frag::First,
        _ => Frag::Later,
    };
    let l4b = ip.payload();
    let l4 = match (frag, proto) {
        (Frag::Later, _) => L4::None,
        (_, Proto::Tcp) if l4b.len() >= TCP_MIN_HEADER => L4::Tcp {
            sport: rd16(l4b, 0),
            dport: rd16(l4b, 2),
            flags: l4b[13],
        },
        (_, Proto::Udp) if l4b.len() >= UDP_HEADER_LEN => L4::Udp {
            sport: rd16(l4b, 0),
            dport: rd16(l4b, 2),
        },
        (_, Proto::Icmp) if l4b.len() >= ICMP_HEADER_LEN => match (l4b[0], l4b[1]) {
            (t, c) if is_echo(t, c) => L4::IcmpQuery {
                id: rd16(l4b, 4),
                request: t == ICMP_ECHO_REQUEST,
            },
            (t, _) if is_translated_error(t) => L4::IcmpError,
            _ => return Err(NatDrop::UnsupportedIcmp),
        },
        // A first fragment too short for its transport header (RFC 1858's tiny fragments).
        _ => return Err(NatDrop::Malformed),
    };
    Ok(Parsed {
        ihl: ip.header_len(),
        total: ip.len(),
        proto,
        src: u32::from(ip.src()),
        dst: u32::from(ip.dst()),
        ident: ip.ident(),
        frag,
        l4,
        csum: transport_checksum(proto, csum),
    })
}

/// The NAT's reading of a packet the view has checked and summarised: the specification
/// [`from_view`] is tested against.
#[cfg(test)]
pub(crate) fn from_summary(s: &Summary, csum: L4Checksum) -> Result<Parsed, NatDrop> {
    let proto = Proto::from_number(s.proto).ok_or(NatDrop::UnsupportedProtocol)?;
    let frag = match (s.frag_offset, s.more_frags) {
        (0, false) => Frag::Whole,
        (0, true) => Frag::First,
        _ => Frag::Later,
    };
    let l4_len = s.transport_len();
    let l4 = match (frag, s.transport) {
        (Frag::Later, _) => L4::None,
        (
            _,
            Transport::Tcp {
                sport,
                dport,
                flags,
            },
        ) if l4_len >= TCP_MIN_HEADER => L4::Tcp {
            sport,
            dport,
            flags,
        },
        (_, Transport::Udp { sport, dport }) if l4_len >= UDP_HEADER_LEN => {
            L4::Udp { sport, dport }
        }
        (
            _,
            Transport::Icmp {
                icmp_type,
                code,
                message,
            },
        ) if l4_len >= ICMP_HEADER_LEN => match message {
            IcmpMessage::Query { id } if is_echo(icmp_type, code) => L4::IcmpQuery {
                id,
                request: icmp_type == ICMP_ECHO_REQUEST,
            },
            IcmpMessage::Error if is_translated_error(icmp_type) => L4::IcmpError,
            _ => return Err(NatDrop::UnsupportedIcmp),
        },
        // A first fragment too short for its transport header (RFC 1858's tiny fragments).
        _ => return Err(NatDrop::Malformed),
    };
    Ok(Parsed {
        ihl: usize::from(s.header_len),
        total: s.len as usize,
        proto,
        src: u32::from(s.src),
        dst: u32::from(s.dst),
        ident: s.ident as u16,
        frag,
        l4,
        csum: transport_checksum(proto, csum),
    })
}

/// Which address of a packet changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrField {
    Src,
    Dst,
}

/// Replaces the IPv4 address at `at` (12 or 16 from `base`) and patches the header checksum at
/// `base + 10`. Returns the old address.
fn set_addr(pkt: &mut [u8], base: usize, side: AddrField, new: u32) -> u32 {
    let at = base + if side == AddrField::Src { 12 } else { 16 };
    let old = rd32(pkt, at);
    wr32(pkt, at, new);
    let c = checksum::update32(rd16(pkt, base + 10), old, new);
    wr16(pkt, base + 10, c);
    old
}

/// Where the port and checksum of a transport header are: (port offset, checksum offset, whether
/// the checksum covers the pseudo-header, whether 0 means "no checksum").
fn l4_fields(proto: Proto, side: AddrField) -> (usize, usize, bool, bool) {
    let port = if side == AddrField::Src { 0 } else { 2 };
    match proto {
        Proto::Tcp => (port, 16, true, false),
        Proto::Udp => (port, 6, true, true),
        Proto::Icmp => (4, 2, false, false),
    }
}

/// The new value of a transport checksum after the address and port changes.
fn patch_l4_checksum(
    c: u16,
    pseudo: bool,
    zero_is_none: bool,
    addr: (u32, u32),
    port: (u16, u16),
) -> u16 {
    if zero_is_none && c == 0 {
        return 0;
    }
    let mut c = c;
    if pseudo {
        c = checksum::update32(c, addr.0, addr.1);
    }
    c = checksum::update16(c, port.0, port.1);
    if zero_is_none && c == 0 { 0xffff } else { c }
}

/// Rewrites the source or destination address and the matching port (ICMP: identifier) of a
/// parsed packet, patching the IP and transport checksums (a partial checksum as
/// [`L4Checksum::Partial`] says). Non-first fragments: address only.
pub(crate) fn rewrite(pkt: &mut [u8], p: &Parsed, side: AddrField, new_ip: u32, new_port: u16) {
    let old_ip = set_addr(pkt, 0, side, new_ip);
    if matches!(p.l4, L4::None | L4::IcmpError) {
        return;
    }
    let (port_at, csum_at, pseudo, zero) = l4_fields(p.proto, side);
    let l4 = p.ihl;
    let old_port = rd16(pkt, l4 + port_at);
    wr16(pkt, l4 + port_at, new_port);
    let old_c = rd16(pkt, l4 + csum_at);
    let c = match p.csum {
        L4Checksum::Complete => {
            patch_l4_checksum(old_c, pseudo, zero, (old_ip, new_ip), (old_port, new_port))
        }
        L4Checksum::Partial => checksum::update_sum32(old_c, old_ip, new_ip),
    };
    wr16(pkt, l4 + csum_at, c);
}

/// The packet an ICMP error quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inner {
    /// Offset of the quoted IP header in the packet.
    off: usize,
    /// Offset of the quoted transport header.
    l4: usize,
    /// Quoted transport bytes available (at least 8).
    avail: usize,
    pub(crate) proto: Proto,
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
}

/// Reads the quoted packet of an ICMP error. `dir` is the way the error travels: an inbound error
/// quotes a packet that went out (its source is ours, an ICMP query's identifier is its source
/// "port"); an outbound error quotes one that came in.
pub(crate) fn parse_error(pkt: &[u8], p: &Parsed, dir: Dir) -> Result<Inner, NatDrop> {
    let quoted = pkt.get(..p.total).map(Ipv4Packet::new_header_checked);
    let Some(q) = quoted.and_then(Result::ok).and_then(|v| v.quoted()) else {
        return Err(NatDrop::Malformed);
    };
    if q.transport_len < 8 {
        return Err(NatDrop::Malformed);
    }
    if q.frag_offset != 0 {
        return Err(NatDrop::IcmpErrorNoMapping); // no ports in a non-first fragment
    }
    let proto = Proto::from_number(q.proto).ok_or(NatDrop::IcmpErrorNoMapping)?;
    let (sport, dport) = match (proto, q.ports, q.icmp) {
        (Proto::Tcp | Proto::Udp, Some(ports), _) => ports,
        // Only errors about queries are translated, never errors about errors.
        (Proto::Icmp, Some((id, _)), Some((t, c))) if is_echo(t, c) => match dir {
            Dir::In => (id, 0),
            Dir::Out => (0, id),
        },
        _ => return Err(NatDrop::IcmpErrorNoMapping),
    };
    let off = p.ihl + ICMP_HEADER_LEN;
    Ok(Inner {
        off,
        l4: off + usize::from(q.header_len),
        avail: usize::from(q.transport_len),
        proto,
        src: u32::from(q.src),
        dst: u32::from(q.dst),
        sport,
        dport,
    })
}

/// Translates an ICMP error (RFC 5508): inbound, the outer destination and the quoted source
/// (address and port) become `new_ip:new_port`; outbound, the outer source and the quoted
/// destination. Patches the outer IP checksum, the quoted IP checksum, the quoted transport
/// checksum when it lies within the quote (UDP and ICMP always, TCP when more than 8 bytes are
/// quoted) and the outer ICMP checksum, all incrementally.
pub(crate) fn rewrite_error(
    pkt: &mut [u8],
    p: &Parsed,
    inner: &Inner,
    dir: Dir,
    new_ip: u32,
    new_port: u16,
) {
    let (outer_side, inner_side) = match dir {
        Dir::In => (AddrField::Dst, AddrField::Src),
        Dir::Out => (AddrField::Src, AddrField::Dst),
    };
    set_addr(pkt, 0, outer_side, new_ip);
    let icmp_csum = p.ihl + 2;
    let mut oc = rd16(pkt, icmp_csum);

    // Quoted IP header: address and its checksum.
    let old_ic = rd16(pkt, inner.off + 10);
    let old_ip = set_addr(pkt, inner.off, inner_side, new_ip);
    let new_ic = rd16(pkt, inner.off + 10);
    oc = checksum::update32(oc, old_ip, new_ip);
    oc = checksum::update16(oc, old_ic, new_ic);

    // Quoted transport header: port (identifier) and, when quoted, its checksum.
    let (port_at, csum_at, pseudo, zero) = l4_fields(inner.proto, inner_side);
    let old_port = rd16(pkt, inner.l4 + port_at);
    wr16(pkt, inner.l4 + port_at, new_port);
    oc = checksum::update16(oc, old_port, new_port);
    if csum_at + 2 <= inner.avail {
        let old_c = rd16(pkt, inner.l4 + csum_at);
        let c = patch_l4_checksum(old_c, pseudo, zero, (old_ip, new_ip), (old_port, new_port));
        wr16(pkt, inner.l4 + csum_at, c);
        oc = checksum::update16(oc, old_c, c);
    }
    wr16(pkt, icmp_csum, oc);
}

/// Replaces an outbound TCP segment by the RST its sender should get (RFC 793 "reset
/// generation"), from the segment's destination to its source. Returns the RST's length (40).
pub(crate) fn write_rst(pkt: &mut [u8], p: &Parsed) -> Result<usize, NatDrop> {
    let L4::Tcp {
        sport,
        dport,
        flags,
    } = p.l4
    else {
        return Err(NatDrop::Malformed);
    };
    if pkt.len() < 40 || p.total < p.ihl + 20 {
        return Err(NatDrop::Malformed);
    }
    let t = p.ihl;
    let seq = rd32(pkt, t + 4);
    let ack = rd32(pkt, t + 8);
    let data_off = usize::from(pkt[t + 12] >> 4) * 4;
    let seg_len = p.total.saturating_sub(t + data_off) as u32
        + u32::from(flags & TCP_SYN != 0)
        + u32::from(flags & TCP_FIN != 0);
    let (rst_seq, rst_ack, rst_flags) = if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        (0, seq.wrapping_add(seg_len), TCP_RST | TCP_ACK)
    };
    let (src, dst) = (p.dst, p.src);
    let out = &mut pkt[..40];
    out.fill(0);
    out[0] = 0x45;
    wr16(out, 2, 40);
    out[6] = 0x40; // DF
    out[8] = crate::dataplane::icmp::GENERATED_TTL;
    out[9] = Proto::Tcp.number();
    wr32(out, 12, src);
    wr32(out, 16, dst);
    let c = checksum::checksum(&out[..20]);
    wr16(out, 10, c);
    let tcp = &mut out[20..40];
    wr16(tcp, 0, dport);
    wr16(tcp, 2, sport);
    wr32(tcp, 4, rst_seq);
    wr32(tcp, 8, rst_ack);
    tcp[12] = 5 << 4;
    tcp[13] = rst_flags;
    let ph = checksum::pseudo_header(src.into(), dst.into(), 6, 20);
    let c = !(checksum::sum(tcp, ph) as u16);
    wr16(tcp, 16, c);
    Ok(40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut v, b"hello")
            .unwrap();
        v
    }

    fn valid(pkt: &[u8]) -> bool {
        let ip = etherparse::Ipv4HeaderSlice::from_slice(pkt).unwrap();
        let h = ip.to_header();
        if h.calc_header_checksum() != h.header_checksum {
            return false;
        }
        match etherparse::SlicedPacket::from_ip(pkt).unwrap().transport {
            Some(etherparse::TransportSlice::Udp(u)) => {
                let c = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                u.checksum() == 0 || u.checksum() == c
            }
            _ => true,
        }
    }

    #[test]
    fn rewrite_src_patches_checksums() {
        let mut p = udp([10, 0, 0, 1], [198, 51, 100, 7], 5000, 53);
        let parsed = parse(&p).unwrap();
        rewrite(
            &mut p,
            &parsed,
            AddrField::Src,
            u32::from_be_bytes([203, 0, 113, 1]),
            61000,
        );
        assert_eq!(&p[12..16], &[203, 0, 113, 1]);
        assert_eq!(rd16(&p, 20), 61000);
        assert!(valid(&p));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = udp([10, 0, 0, 1], [198, 51, 100, 7], 5000, 53);
        wr16(&mut p, 26, 0);
        let parsed = parse(&p).unwrap();
        rewrite(&mut p, &parsed, AddrField::Src, 0xcb00_7101, 1);
        assert_eq!(rd16(&p, 26), 0);
    }

    /// [`from_view`] reads what [`from_summary`] makes of the view's summary, on any bytes the
    /// view accepts, for both checksum states.
    #[test]
    fn the_view_reading_equals_the_summary_reading() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let shapes = (
            0u8..3,
            prop_oneof![Just(0u16), Just(0x2000), Just(0x0001), any::<u16>()],
            prop_oneof![Just(6u8), Just(17), Just(1), any::<u8>()],
            0usize..40,
            prop::collection::vec(any::<u8>(), 64),
            prop_oneof![
                Just(0u8),
                Just(8),
                Just(3),
                Just(11),
                Just(12),
                Just(13),
                any::<u8>()
            ],
            prop_oneof![Just(0u8), any::<u8>()],
            any::<u8>(),
        );
        runner
            .run(
                &shapes,
                |(opts, frag, proto, l4_len, fill, t, code, tail)| {
                    let ihl = 20 + 4 * usize::from(opts);
                    let mut b = fill.clone();
                    b.resize(ihl + l4_len + usize::from(tail % 4), tail);
                    b[0] = 0x40 | (ihl / 4) as u8;
                    b[2..4].copy_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
                    b[6..8].copy_from_slice(&frag.to_be_bytes());
                    b[9] = proto;
                    if l4_len > 1 {
                        b[ihl] = t;
                        b[ihl + 1] = code;
                    }
                    for bytes in [&b[..], &fill[..]] {
                        if let Ok(ip) = Ipv4Packet::new_checked(bytes) {
                            for csum in [L4Checksum::Complete, L4Checksum::Partial] {
                                prop_assert_eq!(
                                    from_view(&ip, csum),
                                    from_summary(&ip.summary(), csum)
                                );
                            }
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(parse(&[]), Err(NatDrop::Malformed));
        assert_eq!(parse(&[0x45; 19]), Err(NatDrop::Malformed));
        let mut p = udp([10, 0, 0, 1], [198, 51, 100, 7], 5000, 53);
        p[0] = 0x4f; // IHL 60 > length
        assert_eq!(parse(&p), Err(NatDrop::Malformed));
    }

    #[test]
    fn rst_for_ack_segment() {
        let mut v = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [198, 51, 100, 7], 64)
            .tcp(40000, 443, 1000, 512)
            .ack(777)
            .write(&mut v, b"data")
            .unwrap();
        let p = parse(&v).unwrap();
        let n = write_rst(&mut v, &p).unwrap();
        let s = etherparse::SlicedPacket::from_ip(&v[..n]).unwrap();
        let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
            panic!("not tcp")
        };
        assert!(t.rst() && !t.ack());
        assert_eq!((t.source_port(), t.destination_port()), (443, 40000));
        assert_eq!(t.sequence_number(), 777);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&v)
            .unwrap()
            .to_header();
        assert_eq!(ip.source, [198, 51, 100, 7]);
        assert_eq!(
            t.checksum(),
            t.to_header().calc_checksum_ipv4(&ip, &[]).unwrap()
        );
    }
}
