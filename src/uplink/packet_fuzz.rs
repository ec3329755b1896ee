//! The uplink's packet builders under arbitrary input, for `fuzz/fuzz_targets/uplink_packets.rs`
//! and the proptest below: [`run`] feeds one input to every function of the uplink's packet
//! module and panics when an answer is malformed. Nothing here is part of vpcd's interface.
//!
//! What is checked, for any bytes:
//! - `classify` never panics, and what it accepts lies inside the packet (keys and slices);
//! - the RST `tcp_reset_for` builds is a valid IPv4/TCP packet with both checksums right, the
//!   ports swapped and the RST bit set, and no RST ever answers a RST;
//! - the ICMP error `icmp_error` builds verifies, quotes at most `MAX_QUOTE` bytes of the packet
//!   and is addressed to the packet's source;
//! - `udp_segment` yields a datagram whose checksum verifies;
//! - `ipv4_packets` cuts any body into packets no larger than the MTU (whenever the MTU can hold a
//!   fragment at all), each with a valid header, that reassemble to the body exactly;
//! - `echo_message` and `parse_echo_reply` round-trip.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use super::packet::{
    Inbound, MAX_QUOTE, UDP_HEADER_ROOM, classify, echo_message, icmp_error, ipv4_packets,
    parse_echo_reply, parse_raw_echo_reply, quote_of, tcp_reset_for, udp_segment,
};
use crate::dataplane::icmp::IcmpError;

/// Reads the parameters from the first bytes of `data` and uses the rest as the packet.
pub fn run(data: &[u8]) {
    let (params, packet) = data.split_at(data.len().min(12));
    let byte = |i: usize| params.get(i).copied().unwrap_or(0);
    let word = |i: usize| u16::from_be_bytes([byte(i), byte(i + 1)]);
    let ident = word(0);
    // MTUs from 0 (nothing fits) to 9,215, with the common ones often.
    let mtu = match byte(2) % 4 {
        0 => 1500,
        1 => 576,
        _ => usize::from(word(3) % 9216),
    };
    let from = Ipv4Addr::new(203, 0, 113, byte(5));
    let err = match byte(6) % 6 {
        0 => IcmpError::TimeExceeded,
        1 => IcmpError::NetUnreachable,
        2 => IcmpError::HostUnreachable,
        3 => IcmpError::PortUnreachable,
        4 => IcmpError::AdminProhibited,
        _ => IcmpError::FragNeeded { mtu: word(7) },
    };
    let src = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, byte(9)), word(10));
    let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, byte(11)), word(3));

    check_classify(packet);
    check_reset(packet, ident);
    check_icmp_error(from, packet, err, ident);
    check_udp_segment(src, dst, packet);
    check_fragments(*src.ip(), *dst.ip(), ident, packet, mtu);
    check_echo(ident, word(7), packet);
    let _ = parse_raw_echo_reply(packet);
}

fn check_classify(packet: &[u8]) {
    let Ok(inbound) = classify(packet) else {
        return;
    };
    let ip = Ipv4Packet::new_checked(packet).expect("classify accepted an invalid header");
    assert!(ip.verify_checksum());
    let inside = |s: &[u8]| {
        let (start, end) = (
            packet.as_ptr() as usize,
            packet.as_ptr() as usize + packet.len(),
        );
        let p = s.as_ptr() as usize;
        p >= start && p + s.len() <= end
    };
    match inbound {
        Inbound::Tcp { key, .. } | Inbound::Udp { key, .. } => {
            assert_eq!(*key.src.ip(), ip.src_addr());
            assert_eq!(*key.dst.ip(), ip.dst_addr());
        }
        Inbound::EchoRequest { key, .. } => {
            assert_eq!(key.src, ip.src_addr());
            assert_eq!(key.dst, ip.dst_addr());
        }
    }
    if let Inbound::Udp { payload, quote, .. } = inbound {
        assert!(inside(payload) && inside(quote));
        assert!(quote.len() <= MAX_QUOTE);
    }
    if let Inbound::EchoRequest { payload, .. } = inbound {
        assert!(inside(payload));
    }
}

fn check_reset(packet: &[u8], ident: u16) {
    let Some(rst) = tcp_reset_for(packet, ident) else {
        return;
    };
    let ip_in = Ipv4Packet::new_checked(packet).expect("a RST for an invalid header");
    let tcp_in =
        TcpPacket::new_checked(&packet[ip_in.header_len().into()..ip_in.total_len().into()])
            .expect("a RST for an invalid segment");
    assert!(!tcp_in.rst(), "a RST answered a RST");
    let ip = Ipv4Packet::new_checked(&rst[..]).expect("the RST's IP header");
    assert!(ip.verify_checksum());
    assert_eq!(usize::from(ip.total_len()), rst.len());
    assert_eq!(ip.next_header(), IpProtocol::Tcp);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (ip_in.dst_addr(), ip_in.src_addr())
    );
    let tcp = TcpPacket::new_checked(&rst[ip.header_len().into()..]).expect("the RST's segment");
    assert!(tcp.rst());
    assert!(tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    assert_eq!(
        (tcp.src_port(), tcp.dst_port()),
        (tcp_in.dst_port(), tcp_in.src_port())
    );
}

fn check_icmp_error(from: Ipv4Addr, packet: &[u8], err: IcmpError, ident: u16) {
    let quote = quote_of(packet);
    assert!(quote.len() <= MAX_QUOTE && quote.len() <= packet.len());
    let Some(out) = icmp_error(from, quote, err, ident) else {
        return;
    };
    let ip = Ipv4Packet::new_checked(&out[..]).expect("the error's IP header");
    assert!(ip.verify_checksum());
    assert_eq!(usize::from(ip.total_len()), out.len());
    assert_eq!(ip.src_addr(), from);
    assert_eq!(
        ip.dst_addr().octets(),
        [quote[12], quote[13], quote[14], quote[15]]
    );
    let icmp = Icmpv4Packet::new_checked(&out[ip.header_len().into()..]).expect("the ICMP header");
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type().into(), icmp.msg_code()), err.type_code());
    assert_eq!(&out[out.len() - quote.len()..], quote);
}

fn check_udp_segment(src: SocketAddrV4, dst: SocketAddrV4, body: &[u8]) {
    let mut seg = vec![0u8; UDP_HEADER_ROOM + body.len()];
    seg[UDP_HEADER_ROOM..].copy_from_slice(body);
    if udp_segment(src, dst, &mut seg).is_none() {
        assert!(
            seg.len() > usize::from(u16::MAX),
            "refused a datagram that fits"
        );
        return;
    }
    let udp = UdpPacket::new_checked(&seg[..]).expect("the datagram");
    assert_ne!(udp.checksum(), 0, "a computed zero goes out as all ones");
    assert!(udp.verify_checksum(&(*src.ip()).into(), &(*dst.ip()).into()));
    assert_eq!(udp.payload(), body);
}

fn check_fragments(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, l4: &[u8], mtu: usize) {
    let mut whole = vec![None; l4.len()];
    let mut packets = 0usize;
    let mut last_seen = false;
    ipv4_packets(src, dst, IpProtocol::Udp, ident, l4, mtu, |header, body| {
        packets += 1;
        let mut p = header.to_vec();
        p.extend_from_slice(body);
        let ip = Ipv4Packet::new_checked(&p[..]).expect("a fragment's header");
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), p.len());
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.ident()),
            (src, dst, ident)
        );
        let offset = usize::from(ip.frag_offset());
        assert!(offset + body.len() <= l4.len(), "a fragment past the body");
        if ip.more_frags() || offset > 0 {
            assert!(p.len() <= mtu, "a {}-byte fragment for MTU {mtu}", p.len());
        }
        if ip.more_frags() {
            assert_eq!(body.len() % 8, 0, "a middle fragment not a multiple of 8");
        } else {
            assert!(!last_seen, "two last fragments");
            last_seen = true;
            assert_eq!(
                offset + body.len(),
                l4.len(),
                "the last fragment ends early"
            );
        }
        for (i, b) in body.iter().enumerate() {
            assert!(whole[offset + i].is_none(), "fragments overlap");
            whole[offset + i] = Some(*b);
        }
    });
    if packets == 0 {
        assert!(
            20 + l4.len() > usize::from(u16::MAX),
            "nothing sent for a body that fits"
        );
        return;
    }
    // A packet is sent whole only when it fits, or when the MTU cannot hold a fragment at all.
    if 20 + l4.len() > mtu && mtu >= 28 {
        assert!(
            packets >= 2,
            "a {}-byte packet sent whole for MTU {mtu}",
            20 + l4.len()
        );
    }
    assert!(last_seen, "no last fragment");
    let back: Option<Vec<u8>> = whole.into_iter().collect();
    assert_eq!(
        back.as_deref(),
        Some(l4),
        "the fragments do not reassemble to the body"
    );
}

fn check_echo(ident: u16, seq: u16, payload: &[u8]) {
    let reply = echo_message(true, ident, seq, payload);
    assert_eq!(parse_echo_reply(&reply), Some((ident, seq, payload)));
    let request = echo_message(false, ident, seq, payload);
    assert_eq!(
        parse_echo_reply(&request),
        None,
        "a request read as a reply"
    );
    assert!(Icmpv4Packet::new_checked(&request[..]).is_ok_and(|p| p.verify_checksum()));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_packet_builders_hold_for_any_input(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            super::run(&data);
        }

        /// Valid headers reach the builders' deeper paths far more often than random bytes do.
        #[test]
        fn the_packet_builders_hold_for_valid_headers(
            params in proptest::collection::vec(any::<u8>(), 12),
            proto in prop_oneof![Just(1u8), Just(6u8), Just(17u8)],
            body in proptest::collection::vec(any::<u8>(), 20..3000),
        ) {
            let total = 20 + body.len();
            let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, proto, 0, 0,
                             198, 51, 100, 1, 192, 0, 2, 1];
            let c = crate::dataplane::checksum::checksum(&p);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p.extend_from_slice(&body);
            if proto == 6 {
                p[32] = 0x50; // a 20-byte TCP header
            }
            let mut data = params;
            data.extend_from_slice(&p);
            super::run(&data);
        }
    }
}
