//! The `virtio_net_hdr` a TUN device with `IFF_VNET_HDR` puts before every packet it hands over
//! and expects before every packet written to it, read into and written from [`PacketMeta`].
//!
//! The legacy 10-byte header (`include/uapi/linux/virtio_net.h`, in the host's byte order as a
//! TUN device without `TUNSETVNETLE`/`TUNSETVNETBE` uses it): `flags` (`NEEDS_CSUM`:
//! `csum_start`/`csum_offset` name a partial checksum), `gso_type` (none, TCPv4, UDP_L4, with the
//! ECN bit), `hdr_len`, `gso_size`, `csum_start`, `csum_offset`.
//!
//! Reading trusts nothing: the header length is recomputed from the packet (the kernel's field
//! is a hint, and some paths leave it short), segmentation types vpcd does not carry (IPv6 TCP,
//! the old UFO) are [`DropReason::BadOffload`]; [`PacketMeta::check`] in the fabric then checks
//! the rest against the packet. Writing turns a complete checksum of a superpacket into a
//! partial one, as the kernel requires for a GSO write.

use super::{Csum, Gso, GsoKind, PacketMeta, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET};
use crate::dataplane::DropReason;
use crate::dataplane::checksum;
use crate::dataplane::packet::{Ipv4Packet, PROTO_TCP, PROTO_UDP, TCP_CWR, UDP_HEADER_LEN};

/// Bytes of the header before each packet.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the superpacket's first segment carries CWR.
const GSO_ECN: u8 = 0x80;

/// What the header says of `pkt` (the packet after the header). An IPv6 or non-IP packet gets
/// [`PacketMeta::COMPLETE`] when the header describes nothing, so that the fabric drops it for
/// what it is; GSO on anything but IPv4 TCP/UDP is [`DropReason::BadOffload`].
pub fn decode(hdr: &[u8; VNET_HDR_LEN], pkt: &[u8]) -> Result<PacketMeta, DropReason> {
    let word = |i: usize| u16::from_ne_bytes([hdr[i], hdr[i + 1]]);
    let (flags, gso_type, gso_size) = (hdr[0], hdr[1] & !GSO_ECN, word(4));
    let csum = if flags & F_NEEDS_CSUM != 0 {
        Csum::Partial {
            start: word(6),
            offset: word(8),
        }
    } else {
        Csum::Complete
    };
    let kind = match gso_type {
        GSO_NONE => return Ok(PacketMeta { gso: None, csum }),
        GSO_TCPV4 => GsoKind::TcpV4,
        GSO_UDP_L4 => GsoKind::Udp,
        _ => return Err(DropReason::BadOffload),
    };
    let header_len = transport_headers(pkt, kind).ok_or(DropReason::BadOffload)?;
    if gso_size == 0 {
        return Err(DropReason::BadOffload);
    }
    Ok(PacketMeta {
        gso: Some(Gso {
            kind,
            segment_size: gso_size,
            header_len,
        }),
        csum,
    })
}

/// The bytes of IP and transport headers each segment of the IPv4 `pkt` repeats.
fn transport_headers(pkt: &[u8], kind: GsoKind) -> Option<u16> {
    let ip = Ipv4Packet::new_header_checked(pkt).ok()?;
    let ihl = ip.header_len();
    let l4 = match (kind, ip.protocol()) {
        (GsoKind::TcpV4, PROTO_TCP) => usize::from(pkt.get(ihl + 12)? >> 4) * 4,
        (GsoKind::Udp, PROTO_UDP) => UDP_HEADER_LEN,
        _ => return None,
    };
    u16::try_from(ihl + l4).ok()
}

/// Writes the header for `pkt` (exactly the packet) with `meta` into `hdr`. A superpacket whose
/// checksum is complete gets a partial one (the folded pseudo-header sum in its transport
/// checksum field), since the kernel segments only partial-checksum superpackets.
pub fn encode(
    hdr: &mut [u8; VNET_HDR_LEN],
    pkt: &mut [u8],
    meta: PacketMeta,
) -> Result<(), DropReason> {
    let mut csum = meta.csum;
    let mut gso_type = GSO_NONE;
    let (mut hdr_len, mut gso_size) = (0, 0);
    if let Some(g) = meta.gso {
        if csum == Csum::Complete {
            csum = make_partial(pkt, g.kind)?;
        }
        gso_type = match g.kind {
            GsoKind::TcpV4 => {
                let ihl = Ipv4Packet::new_header_checked(&pkt[..])
                    .map_err(|_| DropReason::BadOffload)?
                    .header_len();
                let cwr = pkt.get(ihl + 13).is_some_and(|f| f & TCP_CWR != 0);
                if cwr { GSO_TCPV4 | GSO_ECN } else { GSO_TCPV4 }
            }
            GsoKind::Udp => GSO_UDP_L4,
        };
        (hdr_len, gso_size) = (g.header_len, g.segment_size);
    }
    let (flags, start, offset) = match csum {
        Csum::Partial { start, offset } => (F_NEEDS_CSUM, start, offset),
        Csum::Complete => (0, 0, 0),
    };
    hdr[0] = flags;
    hdr[1] = gso_type;
    for (i, w) in [hdr_len, gso_size, start, offset].into_iter().enumerate() {
        hdr[2 + 2 * i..4 + 2 * i].copy_from_slice(&w.to_ne_bytes());
    }
    Ok(())
}

/// Replaces the complete transport checksum of the IPv4 superpacket `pkt` by the folded,
/// uncomplemented pseudo-header sum over its whole transport length.
fn make_partial(pkt: &mut [u8], kind: GsoKind) -> Result<Csum, DropReason> {
    let ip = Ipv4Packet::new_checked(&pkt[..]).map_err(|_| DropReason::BadOffload)?;
    let (ihl, len) = (ip.header_len(), ip.len());
    let (proto, offset) = match kind {
        GsoKind::TcpV4 => (PROTO_TCP, TCP_CHECKSUM_OFFSET),
        GsoKind::Udp => (PROTO_UDP, UDP_CHECKSUM_OFFSET),
    };
    if ip.protocol() != proto {
        return Err(DropReason::BadOffload);
    }
    let l4_len = u16::try_from(len - ihl).map_err(|_| DropReason::BadOffload)?;
    let sum = checksum::pseudo_header(ip.src(), ip.dst(), proto, l4_len) as u16;
    let at = ihl + usize::from(offset);
    pkt.get_mut(at..at + 2)
        .ok_or(DropReason::BadOffload)?
        .copy_from_slice(&sum.to_be_bytes());
    Ok(Csum::Partial {
        start: ihl as u16,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::offload::{Segmenter, complete_checksum};

    /// An IPv4 TCP packet with `payload` bytes, checksums complete.
    fn tcp(payload: usize) -> Vec<u8> {
        let total = 20 + 20 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 0, 1, 10]);
        p[16..20].copy_from_slice(&[198, 51, 100, 10]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&1000u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x10; // ACK
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        crate::dataplane::offload::fill_l4_checksum(&mut p, 20, PROTO_TCP);
        p
    }

    fn hdr(flags: u8, gso_type: u8, hdr_len: u16, size: u16, start: u16, off: u16) -> [u8; 10] {
        let mut h = [0u8; 10];
        h[0] = flags;
        h[1] = gso_type;
        for (i, w) in [hdr_len, size, start, off].into_iter().enumerate() {
            h[2 + 2 * i..4 + 2 * i].copy_from_slice(&w.to_ne_bytes());
        }
        h
    }

    #[test]
    fn a_plain_header_is_a_complete_packet() {
        let p = tcp(100);
        assert_eq!(decode(&[0; 10], &p), Ok(PacketMeta::COMPLETE));
    }

    #[test]
    fn the_header_length_comes_from_the_packet_not_the_kernel() {
        let p = tcp(3000);
        let m = decode(&hdr(F_NEEDS_CSUM, GSO_TCPV4, 14, 1448, 20, 16), &p).unwrap();
        assert_eq!(
            m,
            PacketMeta {
                gso: Some(Gso {
                    kind: GsoKind::TcpV4,
                    segment_size: 1448,
                    header_len: 40
                }),
                csum: Csum::Partial {
                    start: 20,
                    offset: 16
                },
            }
        );
    }

    #[test]
    fn unsupported_or_inconsistent_segmentation_is_refused() {
        let p = tcp(3000);
        // TCPv6 on an IPv4 packet, the old UFO, a zero segment size, UDP GSO on TCP.
        for h in [
            hdr(1, 4, 40, 1448, 20, 16),
            hdr(1, 3, 40, 1448, 20, 16),
            hdr(1, GSO_TCPV4, 40, 0, 20, 16),
            hdr(1, GSO_UDP_L4, 28, 1448, 20, 6),
        ] {
            assert_eq!(decode(&h, &p), Err(DropReason::BadOffload), "{h:?}");
        }
        // Too short to hold its headers.
        assert_eq!(
            decode(&hdr(1, GSO_TCPV4, 40, 1448, 20, 16), &p[..30]),
            Err(DropReason::BadOffload)
        );
        assert_eq!(
            decode(&hdr(1, GSO_TCPV4, 40, 1448, 20, 16), &[]),
            Err(DropReason::BadOffload)
        );
    }

    #[test]
    fn encoding_a_complete_superpacket_makes_its_checksum_partial_and_decodes_back() {
        let mut p = tcp(4000);
        let whole = p.clone();
        let meta = PacketMeta {
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                segment_size: 1448,
                header_len: 40,
            }),
            csum: Csum::Complete,
        };
        let mut h = [0u8; 10];
        encode(&mut h, &mut p, meta).unwrap();
        let back = decode(&h, &p).unwrap();
        assert_eq!(
            back.csum,
            Csum::Partial {
                start: 20,
                offset: 16
            }
        );
        assert_eq!(back.gso, meta.gso);
        // Completing the partial checksum gives the original packet back.
        let mut done = p.clone();
        complete_checksum(&mut done, 20, 16).unwrap();
        assert_eq!(done, whole);
        // And its segments are the same either way.
        let (mut a, mut b) = (vec![0u8; 1500], vec![0u8; 1500]);
        let (mut sa, mut sb) = (
            Segmenter::new(&p, back).unwrap(),
            Segmenter::new(&whole, meta).unwrap(),
        );
        while let Some(n) = sa.next_into(&mut a).unwrap() {
            assert_eq!(sb.next_into(&mut b).unwrap(), Some(n));
            assert_eq!(a[..n], b[..n]);
        }
    }

    #[test]
    fn cwr_on_a_tcp_superpacket_sets_the_ecn_bit() {
        let mut p = tcp(3000);
        p[33] |= TCP_CWR;
        let meta = PacketMeta {
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                segment_size: 1448,
                header_len: 40,
            }),
            csum: Csum::Partial {
                start: 20,
                offset: 16,
            },
        };
        let mut h = [0u8; 10];
        encode(&mut h, &mut p, meta).unwrap();
        assert_eq!(h[1], GSO_TCPV4 | GSO_ECN);
        assert_eq!(decode(&h, &p).unwrap(), meta);
    }

    #[test]
    fn an_ordinary_packet_keeps_its_partial_checksum() {
        let mut p = tcp(10);
        let meta = PacketMeta {
            gso: None,
            csum: Csum::Partial {
                start: 20,
                offset: 16,
            },
        };
        let mut h = [0u8; 10];
        encode(&mut h, &mut p, meta).unwrap();
        assert_eq!(h, hdr(F_NEEDS_CSUM, 0, 0, 0, 20, 16));
        assert_eq!(decode(&h, &p).unwrap(), meta);
    }
}
