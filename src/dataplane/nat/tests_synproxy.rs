//! Issue 14: the SYN proxy of a gateway's DNAT rules, driven packet by packet as the fabric
//! drives it (whole buffers, public senders), every packet it writes parsed by etherparse with
//! both checksums recomputed.

use std::net::Ipv4Addr;

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};

use super::config::{NatConfig, Profile};
use super::synproxy::PROXY_WSCALE;
use super::*;
use crate::time::Instant;

const EIP: [u8; 4] = [203, 0, 113, 1];
const INST: [u8; 4] = [10, 0, 1, 10];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const PORT: u16 = 8080;

fn gateway(syn_proxy: bool) -> NatGateway {
    let mut g = NatGateway::new(
        NatConfig {
            syn_proxy,
            ..NatConfig::profile(Profile::Rfc)
        },
        &[Ipv4Addr::from(EIP)],
        7,
    )
    .unwrap();
    g.add_dnat(DnatRule {
        external: (Ipv4Addr::from(EIP), PORT),
        protocol: Some(Proto::Tcp),
        internal: (Ipv4Addr::from(INST), 80),
        owner: 3,
    })
    .unwrap();
    g
}

/// A TCP segment as a client's or an instance's stack sends it.
#[derive(Clone, Copy)]
struct Seg<'a> {
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    rst: bool,
    window: u16,
    options: &'a [TcpOptionElement],
    payload: &'a [u8],
}

const LINUX_SYN: &[TcpOptionElement] = &[
    TcpOptionElement::MaximumSegmentSize(1460),
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(7),
];

fn seg<'a>(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32) -> Seg<'a> {
    Seg {
        src,
        dst,
        seq,
        ack: None,
        syn: false,
        rst: false,
        window: 500,
        options: &[],
        payload: &[],
    }
}

/// The segment in a 2,048-byte buffer (as the fabric's), and its length.
fn build(s: &Seg<'_>) -> (Vec<u8>, usize) {
    let mut b = PacketBuilder::ipv4(s.src.0, s.dst.0, 64).tcp(s.src.1, s.dst.1, s.seq, s.window);
    if s.syn {
        b = b.syn();
    }
    if s.rst {
        b = b.rst();
    }
    if let Some(a) = s.ack {
        b = b.ack(a);
    }
    let b = b.options(s.options).unwrap();
    let mut v = Vec::new();
    b.write(&mut v, s.payload).unwrap();
    let n = v.len();
    v.resize(2048, 0);
    (v, n)
}

/// What a written packet says, its checksums checked.
#[derive(Debug)]
struct Got {
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    syn: bool,
    ack_flag: bool,
    rst: bool,
    window: u16,
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_ok: bool,
    sack: Vec<(u32, u32)>,
    payload: Vec<u8>,
}

fn read(buf: &[u8]) -> Got {
    let p = SlicedPacket::from_ip(buf).expect("a valid packet");
    let etherparse::NetSlice::Ipv4(ip) = p.net.expect("an IP header") else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IP checksum");
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    let th = t.to_header();
    assert_eq!(
        th.checksum,
        th.calc_checksum_ipv4(&h, t.payload()).unwrap(),
        "TCP checksum"
    );
    let mut g = Got {
        src: (h.source, t.source_port()),
        dst: (h.destination, t.destination_port()),
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        syn: t.syn(),
        ack_flag: t.ack(),
        rst: t.rst(),
        window: t.window_size(),
        mss: None,
        wscale: None,
        sack_ok: false,
        sack: Vec::new(),
        payload: t.payload().to_vec(),
    };
    for o in t.options_iterator() {
        match o.unwrap() {
            TcpOptionElement::MaximumSegmentSize(m) => g.mss = Some(m),
            TcpOptionElement::WindowScale(w) => g.wscale = Some(w),
            TcpOptionElement::SelectiveAcknowledgementPermitted => g.sack_ok = true,
            TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                g.sack.push(first);
                g.sack.extend(rest.iter().flatten());
            }
            _ => {}
        }
    }
    g
}

fn inbound(g: &mut NatGateway, s: &Seg<'_>) -> (Result<Translated, NatDrop>, Vec<u8>) {
    let (mut b, n) = build(s);
    let r = g.inbound_in_buffer(
        Instant::from_secs(10),
        &mut b,
        n,
        L4Checksum::Complete,
        true,
    );
    (r, b)
}

fn outbound(g: &mut NatGateway, s: &Seg<'_>) -> (Result<Translated, NatDrop>, Vec<u8>) {
    let (mut b, n) = build(s);
    let r = g.outbound_in_buffer(Instant::from_secs(10), 3, &mut b, n, L4Checksum::Complete);
    (r, b)
}

fn written(r: &Result<Translated, NatDrop>, b: &[u8]) -> Got {
    let len = match r {
        Ok(Translated::Reply { len }) => *len,
        Ok(Translated::Rebuilt { len, .. }) => *len as usize,
        Ok(Translated::Forward { .. }) => usize::from(u16::from_be_bytes([b[2], b[3]])),
        other => panic!("nothing written: {other:?}"),
    };
    read(&b[..len])
}

const C: ([u8; 4], u16) = (CLIENT, 40000);
const E: ([u8; 4], u16) = (EIP, PORT);
const I: ([u8; 4], u16) = (INST, 80);

/// The client's SYN and the cookie answer: (the proxy's ISN, the gateway).
fn handshake_with_client(g: &mut NatGateway, client: ([u8; 4], u16), isn: u32) -> u32 {
    let (r, b) = inbound(
        g,
        &Seg {
            syn: true,
            window: 64240,
            options: LINUX_SYN,
            ..seg(client, E, isn)
        },
    );
    assert!(matches!(r, Ok(Translated::Reply { .. })), "{r:?}");
    let a = written(&r, &b);
    assert!(a.syn && a.ack_flag && !a.rst);
    assert_eq!(
        (a.src, a.dst),
        (E, client),
        "from the EIP back to the client"
    );
    assert_eq!(a.ack, isn.wrapping_add(1));
    assert_eq!(a.mss, Some(1460));
    assert_eq!(a.wscale, Some(PROXY_WSCALE));
    assert!(a.sack_ok);
    a.seq
}

#[test]
fn a_syn_flood_makes_no_state_and_never_reaches_the_instance() {
    let mut g = gateway(true);
    let mut limited = 0;
    for port in 1..=20_000u16 {
        let (r, _) = inbound(
            &mut g,
            &Seg {
                syn: true,
                ..seg((CLIENT, port), E, u32::from(port) * 7)
            },
        );
        match r {
            Ok(Translated::Reply { .. }) => {}
            // Beyond the source's rate (5,000 a second) its SYNs are dropped unanswered.
            Err(NatDrop::SourceRate) => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    let c = g.counters();
    assert_eq!((c.active_sessions, c.half_open, c.created), (0, 0, 0));
    assert_eq!(c.syn_cookies, 5_000);
    assert_eq!(limited, 15_000);
    // The flood's ACKs with guessed cookies open nothing either.
    for guess in 0..2_000u32 {
        let (r, _) = inbound(
            &mut g,
            &Seg {
                ack: Some(guess.wrapping_mul(2_654_435_761)),
                ..seg((CLIENT, 9), E, 1001)
            },
        );
        assert_eq!(r.unwrap_err(), NatDrop::SynProxyCookie);
    }
    assert_eq!(g.counters().active_sessions, 0);
    // Without the proxy the same SYN makes a half-open session.
    let mut plain = gateway(false);
    let (r, _) = inbound(
        &mut plain,
        &Seg {
            syn: true,
            ..seg(C, E, 5)
        },
    );
    assert!(matches!(r, Ok(Translated::Forward { .. })), "{r:?}");
    assert_eq!(plain.counters().half_open, 1);
}

/// The whole life of a proxied connection: cookie, SYN to the instance with the client's
/// options, the client's early request kept and sent as the handshake's last ACK, then both
/// directions shifted (sequence numbers, the instance's windows, SACK blocks).
#[test]
fn a_proxied_connection_carries_data_both_ways_in_each_sides_sequence_space() {
    let mut g = gateway(true);
    let isn = 0xffff_fff0; // wraps around during the test
    let cookie = handshake_with_client(&mut g, C, isn);

    // The handshake's ACK opens the session and becomes the SYN to the instance.
    let ack = Seg {
        ack: Some(cookie.wrapping_add(1)),
        window: 502,
        ..seg(C, E, isn.wrapping_add(1))
    };
    let (r, b) = inbound(&mut g, &ack);
    let Ok(Translated::Rebuilt {
        internal, owner, ..
    }) = r
    else {
        panic!("{r:?}")
    };
    assert_eq!((internal, owner), (Ipv4Addr::from(INST), 3));
    let syn = written(&r, &b);
    assert!(syn.syn && !syn.ack_flag);
    assert_eq!(
        (syn.src, syn.dst),
        (C, I),
        "DNAT applied, the client's address kept"
    );
    assert_eq!(syn.seq, isn, "the client's own ISN");
    assert_eq!(
        (syn.mss, syn.wscale, syn.sack_ok),
        (Some(1460), Some(7), true)
    );
    assert_eq!(
        syn.window,
        502 << 7,
        "the client's window, unscaled as a SYN's is"
    );
    let c = g.counters();
    assert_eq!((c.active_sessions, c.half_open, c.syn_proxied), (1, 0, 1));

    // The client's request arrives before the instance answered: kept.
    let request = Seg {
        ack: Some(cookie.wrapping_add(1)),
        payload: b"GET / HTTP/1.1\r\n\r\n",
        ..seg(C, E, isn.wrapping_add(1))
    };
    assert_eq!(
        inbound(&mut g, &request).0.unwrap_err(),
        NatDrop::SynProxyHeld
    );
    // A second early segment is dropped; the client sends it again.
    let more = Seg {
        payload: b"x",
        ..request
    };
    assert_eq!(
        inbound(&mut g, &more).0.unwrap_err(),
        NatDrop::SynProxyPending
    );

    // The instance answers; the gateway completes its handshake with the kept request.
    let server_isn = 5000;
    let synack = Seg {
        syn: true,
        ack: Some(isn.wrapping_add(1)),
        window: 65160,
        options: &[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(9),
        ],
        ..seg(I, C, server_isn)
    };
    let (r, b) = outbound(&mut g, &synack);
    assert!(matches!(r, Ok(Translated::Reply { .. })), "{r:?}");
    let last = written(&r, &b);
    assert!(last.ack_flag && !last.syn);
    assert_eq!(
        (last.src, last.dst),
        (C, I),
        "back to the instance, from the client"
    );
    assert_eq!(last.seq, isn.wrapping_add(1));
    assert_eq!(last.ack, server_isn + 1, "in the instance's sequence space");
    assert_eq!(last.payload, b"GET / HTTP/1.1\r\n\r\n");

    // Instance -> client: SNAT back to the EIP, sequence in the proxy's space, window rescaled
    // from the instance's scale 9 to the proxy's 7.
    let reply = Seg {
        ack: Some(isn.wrapping_add(19)),
        window: 100,
        payload: b"HTTP/1.1 200 OK\r\n",
        ..seg(I, C, server_isn + 1)
    };
    let (r, b) = outbound(&mut g, &reply);
    let got = written(&r, &b);
    assert_eq!((got.src, got.dst), (E, C));
    assert_eq!(got.seq, cookie.wrapping_add(1));
    assert_eq!(
        got.ack,
        isn.wrapping_add(19),
        "the client's numbers are not shifted"
    );
    assert_eq!(got.window, 400);

    // Client -> instance: its ACK and SACK blocks count the instance's bytes: shifted back.
    let sacked = Seg {
        ack: Some(cookie.wrapping_add(18)),
        options: &[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement(
                (cookie.wrapping_add(30), cookie.wrapping_add(40)),
                [None, None, None],
            ),
        ],
        ..seg(C, E, isn.wrapping_add(19))
    };
    let (r, b) = inbound(&mut g, &sacked);
    assert!(matches!(r, Ok(Translated::Forward { .. })), "{r:?}");
    let got = written(&r, &b);
    assert_eq!((got.src, got.dst), (C, I));
    assert_eq!(got.seq, isn.wrapping_add(19));
    assert_eq!(got.ack, server_isn + 18);
    assert_eq!(got.sack, vec![(server_isn + 30, server_isn + 40)]);
    assert_eq!(g.counters().active_sessions, 1);
}

#[test]
fn an_instance_that_refuses_resets_the_client_in_its_own_sequence_space() {
    let mut g = gateway(true);
    let isn = 77;
    let cookie = handshake_with_client(&mut g, C, isn);
    let ack = Seg {
        ack: Some(cookie.wrapping_add(1)),
        ..seg(C, E, isn + 1)
    };
    assert!(matches!(
        inbound(&mut g, &ack).0,
        Ok(Translated::Rebuilt { .. })
    ));
    let rst = Seg {
        rst: true,
        ack: Some(isn + 1),
        window: 0,
        ..seg(I, C, 0)
    };
    let (r, b) = outbound(&mut g, &rst);
    let got = written(&r, &b);
    assert!(got.rst);
    assert_eq!((got.src, got.dst), (E, C));
    assert_eq!(
        got.seq,
        cookie.wrapping_add(1),
        "where the client expects it"
    );
}

#[test]
fn a_stale_or_foreign_cookie_opens_nothing_and_hairpinned_syns_are_not_proxied() {
    let mut g = gateway(true);
    let cookie = handshake_with_client(&mut g, C, 1000);
    // Another client port, another ISN, a cookie 129 s later.
    for (client, seq, at) in [((CLIENT, 40001), 1001, 10), (C, 1002, 10), (C, 1001, 139)] {
        let (mut b, n) = build(&Seg {
            ack: Some(cookie.wrapping_add(1)),
            ..seg(client, E, seq)
        });
        let r = g.inbound_in_buffer(
            Instant::from_secs(at),
            &mut b,
            n,
            L4Checksum::Complete,
            true,
        );
        assert_eq!(r.unwrap_err(), NatDrop::SynProxyCookie);
    }
    // 60 s later the cookie is still good.
    let (mut b, n) = build(&Seg {
        ack: Some(cookie.wrapping_add(1)),
        ..seg(C, E, 1001)
    });
    let r = g.inbound_in_buffer(
        Instant::from_secs(70),
        &mut b,
        n,
        L4Checksum::Complete,
        true,
    );
    assert!(matches!(r, Ok(Translated::Rebuilt { .. })), "{r:?}");
    // A SYN hairpinned from a VPC is translated as before (its reply cannot go straight back).
    let (mut b, n) = build(&Seg {
        syn: true,
        ..seg(([203, 0, 113, 9], 5555), E, 1)
    });
    let r = g.inbound_in_buffer(
        Instant::from_secs(70),
        &mut b,
        n,
        L4Checksum::Complete,
        false,
    );
    assert!(matches!(r, Ok(Translated::Forward { .. })), "{r:?}");
}

#[test]
fn a_client_without_options_gets_a_syn_ack_that_fits_its_syn() {
    let mut g = gateway(true);
    // hping3's bare 40-byte SYN: the answer has no room for options and needs none.
    let (r, b) = inbound(
        &mut g,
        &Seg {
            syn: true,
            ..seg(C, E, 9)
        },
    );
    let Ok(Translated::Reply { len }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(len, 40);
    let a = written(&r, &b);
    assert_eq!((a.mss, a.wscale, a.sack_ok), (None, None, false));
    // Its ACK opens a connection without scaling or SACK, MSS 536 (the default).
    let (r, b) = inbound(
        &mut g,
        &Seg {
            ack: Some(a.seq.wrapping_add(1)),
            ..seg(C, E, 10)
        },
    );
    let syn = written(&r, &b);
    assert_eq!((syn.mss, syn.wscale, syn.sack_ok), (Some(536), None, false));
}

/// A 1:1 EIP keeps no sessions: the outside's SYNs to it are limited per source as DNAT's are
/// (`nat_source_rate`), and the established flow's segments are not counted against it.
#[test]
fn syns_to_a_one_to_one_eip_are_limited_per_source() {
    let mut g = NatGateway::new(
        NatConfig {
            per_source_new_per_sec: Some(10),
            ..NatConfig::profile(Profile::Rfc)
        },
        &[],
        7,
    )
    .unwrap();
    g.add_one_to_one(Ipv4Addr::from(EIP), Ipv4Addr::from(INST))
        .unwrap();
    let mut refused = 0;
    for port in 1..=50u16 {
        let (r, _) = inbound(
            &mut g,
            &Seg {
                syn: true,
                ..seg((CLIENT, port), E, 1)
            },
        );
        match r {
            Ok(Translated::Forward { .. }) => {}
            Err(NatDrop::SourceRate) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 40, "ten SYNs a second from one source");
    // Another source, and the first source's non-SYN segments, pass.
    let (r, _) = inbound(
        &mut g,
        &Seg {
            syn: true,
            ..seg(([198, 51, 100, 8], 1), E, 1)
        },
    );
    assert!(matches!(r, Ok(Translated::Forward { .. })), "{r:?}");
    let (r, _) = inbound(
        &mut g,
        &Seg {
            ack: Some(5),
            ..seg((CLIENT, 1), E, 2)
        },
    );
    assert!(matches!(r, Ok(Translated::Forward { .. })), "{r:?}");
}

/// Every translation returns a `Translated`: the proxy's variants keep it (and the result) as
/// small as before them, one copy per packet.
#[test]
fn the_translation_result_stays_sixteen_bytes() {
    assert_eq!(size_of::<Translated>(), 16);
    assert_eq!(size_of::<Result<Translated, NatDrop>>(), 16);
}
