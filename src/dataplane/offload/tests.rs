//! The segmenter and the checksum completer against etherparse, and translation of superpackets
//! and partial checksums against translation of the segments and full recomputation.

use std::net::Ipv4Addr;

use etherparse::{Ipv4HeaderSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;

use super::*;
use crate::dataplane::nat::config::NatConfig;
use crate::dataplane::nat::{DnatRule, NatGateway, Translated};
use crate::dataplane::packet::{TCP_ACK, TCP_ECE, TCP_SYN};
use crate::dataplane::tests::Rig;
use crate::dataplane::{MIN_BUFFER, Verdict};
use crate::time::Instant;

const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// A TCP or UDP superpacket as the kernel hands it over with offload.
#[derive(Debug, Clone)]
struct Spec {
    tcp: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ident: u16,
    dont_frag: bool,
    /// IP options, in 4-byte words.
    ip_opts: usize,
    /// TCP options, in 4-byte words.
    tcp_opts: usize,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
    segment_size: u16,
}

impl Spec {
    fn headers(&self) -> usize {
        let l4 = if self.tcp { 20 + 4 * self.tcp_opts } else { 8 };
        20 + 4 * self.ip_opts + l4
    }

    fn proto(&self) -> u8 {
        if self.tcp { PROTO_TCP } else { PROTO_UDP }
    }

    /// The packet with a partial checksum (the pseudo-header sum over its own length) and its
    /// metadata.
    fn build(&self) -> (Vec<u8>, PacketMeta) {
        let ihl = 20 + 4 * self.ip_opts;
        let total = self.headers() + self.payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x40 | (ihl / 4) as u8;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&self.ident.to_be_bytes());
        p[6] = if self.dont_frag { 0x40 } else { 0 };
        p[8] = 64;
        p[9] = self.proto();
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        p[20..ihl].fill(1); // NOP options
        let l4 = &mut p[ihl..];
        l4[0..2].copy_from_slice(&self.sport.to_be_bytes());
        l4[2..4].copy_from_slice(&self.dport.to_be_bytes());
        let offset = if self.tcp {
            l4[4..8].copy_from_slice(&self.seq.to_be_bytes());
            l4[8..12].copy_from_slice(&7u32.to_be_bytes());
            l4[12] = ((5 + self.tcp_opts) as u8) << 4;
            l4[13] = self.flags;
            l4[14..16].copy_from_slice(&512u16.to_be_bytes());
            l4[20..20 + 4 * self.tcp_opts].fill(1);
            TCP_CHECKSUM_OFFSET
        } else {
            let len = (total - ihl) as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
            UDP_CHECKSUM_OFFSET
        };
        let h = self.headers();
        p[h..].copy_from_slice(&self.payload);
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        let sum = checksum::pseudo_header(self.src, self.dst, self.proto(), (total - ihl) as u16);
        let at = ihl + usize::from(offset);
        p[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
        let meta = PacketMeta {
            gso: Some(Gso {
                kind: if self.tcp {
                    GsoKind::TcpV4
                } else {
                    GsoKind::Udp
                },
                segment_size: self.segment_size,
                header_len: h as u16,
            }),
            csum: Csum::Partial {
                start: ihl as u16,
                offset,
            },
        };
        (p, meta)
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        (any::<u16>(), any::<u16>(), any::<u16>(), any::<bool>()),
        (0usize..=3, 0usize..=4, any::<u32>()),
        (
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..2500),
            1u16..700,
        ),
    )
        .prop_map(
            |(
                tcp,
                (sport, dport, ident, dont_frag),
                (ip_opts, tcp_opts, seq),
                (f, payload, mss),
            )| {
                Spec {
                    tcp,
                    src: HOST,
                    dst: REMOTE,
                    sport: sport.max(1),
                    dport: dport.max(1),
                    ident,
                    dont_frag,
                    ip_opts,
                    tcp_opts,
                    seq,
                    // An established flow's segment: ACK, never SYN or RST.
                    flags: (f & !(TCP_SYN | 0x04)) | TCP_ACK,
                    payload,
                    segment_size: mss,
                }
            },
        )
}

/// Every segment of `pkt`, with complete checksums.
fn segments(pkt: &[u8], meta: PacketMeta) -> Vec<Vec<u8>> {
    let mut s = Segmenter::new(pkt, meta).expect("valid superpacket");
    let mut out = Vec::new();
    let mut buf = vec![0u8; s.max_len()];
    while let Some(n) = s.next_into(&mut buf).expect("room for a segment") {
        out.push(buf[..n].to_vec());
    }
    assert_eq!(out.len(), s.count());
    out
}

/// Checks every checksum of `pkt` with etherparse.
fn verified(pkt: &[u8]) -> bool {
    let ip = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
    if ip.calc_header_checksum() != ip.header_checksum {
        return false;
    }
    match SlicedPacket::from_ip(pkt).unwrap().transport {
        Some(TransportSlice::Tcp(t)) => {
            t.checksum() == t.to_header().calc_checksum_ipv4(&ip, t.payload()).unwrap()
        }
        Some(TransportSlice::Udp(u)) => {
            u.checksum() == u.to_header().calc_checksum_ipv4(&ip, u.payload()).unwrap()
        }
        _ => false,
    }
}

/// A gateway with a DNAT rule to the host, and a session opened for the flow of `s` (a SYN or
/// a first datagram with complete checksums), as the outbound (`out`) or inbound direction.
fn gateway(s: &Spec, out: bool) -> NatGateway {
    let mut g = NatGateway::new(NatConfig::default(), &[EIP], 7).unwrap();
    g.add_dnat(DnatRule {
        external: (EIP, 8080),
        protocol: None,
        internal: (HOST, s.dport),
        owner: 0,
    })
    .unwrap();
    let mut open = Spec {
        payload: Vec::new(),
        flags: TCP_SYN,
        ..s.clone()
    };
    if !out {
        (open.src, open.dst, open.sport, open.dport) = (REMOTE, EIP, s.sport, 8080);
    }
    let (mut p, meta) = open.build();
    let mut meta = meta;
    meta.gso = None;
    let summary = Ipv4Packet::new_checked(&p[..]).unwrap().summary();
    let csum = meta.check(&mut p, &summary).unwrap();
    assert_eq!(csum, L4Checksum::Partial);
    let r = if out {
        g.outbound_checked(Instant::ZERO, 0, &mut p, csum)
    } else {
        g.inbound_checked(Instant::ZERO, &mut p, csum)
    };
    assert!(matches!(r, Ok(Translated::Forward { .. })), "{r:?}");
    g
}

/// SNAT outbound (`out`) or DNAT inbound of `pkt` whose checksum is `csum`.
fn translate(g: &mut NatGateway, pkt: &mut [u8], csum: L4Checksum, out: bool) {
    Ipv4Packet::new_checked(&pkt[..]).expect("a checked packet");
    let r = if out {
        g.outbound_checked(Instant::ZERO, 0, pkt, csum)
    } else {
        g.inbound_checked(Instant::ZERO, pkt, csum)
    };
    assert!(matches!(r, Ok(Translated::Forward { .. })), "{r:?}");
}

fn inbound(mut s: Spec) -> Spec {
    (s.src, s.dst, s.dport) = (REMOTE, EIP, 8080);
    s
}

#[test]
fn tcp_segments_advance_sequence_ident_and_keep_fin_psh_last_cwr_first() {
    let s = Spec {
        tcp: true,
        src: HOST,
        dst: REMOTE,
        sport: 40000,
        dport: 443,
        ident: 0xfffe,
        dont_frag: true,
        ip_opts: 1,
        tcp_opts: 3,
        seq: u32::MAX - 100,
        flags: TCP_ACK | TCP_FIN | TCP_PSH | TCP_CWR | TCP_ECE,
        payload: (0..2500u32).map(|i| i as u8).collect(),
        segment_size: 1000,
    };
    let (p, meta) = s.build();
    assert_eq!(meta.wire_len(p.len()), s.headers() + 1000);
    let segs = segments(&p, meta);
    assert_eq!(segs.len(), 3);
    let mut payload = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        assert!(verified(seg), "segment {i}");
        let sl = SlicedPacket::from_ip(seg).unwrap();
        let Some(TransportSlice::Tcp(t)) = sl.transport else {
            panic!("not tcp")
        };
        let ip = Ipv4HeaderSlice::from_slice(seg).unwrap();
        assert_eq!(ip.identification(), 0xfffeu16.wrapping_add(i as u16));
        assert_eq!(usize::from(ip.total_len()), seg.len());
        assert!(ip.dont_fragment());
        assert_eq!(
            t.sequence_number(),
            (u32::MAX - 100).wrapping_add(1000 * i as u32)
        );
        assert_eq!((t.fin(), t.psh()), (i == 2, i == 2));
        assert_eq!(t.cwr(), i == 0);
        assert!(t.ece() && t.ack());
        payload.extend_from_slice(t.payload());
    }
    assert_eq!(payload, s.payload);
}

/// A UDP superpacket of 500-byte segments.
fn udp(payload: Vec<u8>) -> Spec {
    Spec {
        tcp: false,
        src: HOST,
        dst: REMOTE,
        sport: 5000,
        dport: 53,
        ident: 9,
        dont_frag: false,
        ip_opts: 0,
        tcp_opts: 0,
        seq: 0,
        flags: 0,
        payload,
        segment_size: 500,
    }
}

#[test]
fn udp_segments_are_datagrams_of_their_own() {
    let s = udp(vec![0xab; 1001]);
    let (p, meta) = s.build();
    let segs = segments(&p, meta);
    assert_eq!(
        segs.iter().map(Vec::len).collect::<Vec<_>>(),
        [528, 528, 29]
    );
    for seg in &segs {
        assert!(verified(seg));
        let u = etherparse::UdpHeaderSlice::from_slice(&seg[20..]).unwrap();
        assert_eq!(usize::from(u.length()), seg.len() - 20);
    }
}

#[test]
fn metadata_that_does_not_fit_the_headers_is_a_counted_drop() {
    let s = Spec {
        tcp: true,
        src: HOST,
        dst: REMOTE,
        sport: 1,
        dport: 2,
        ident: 0,
        dont_frag: true,
        ip_opts: 0,
        tcp_opts: 0,
        seq: 0,
        flags: TCP_ACK,
        payload: vec![1; 100],
        segment_size: 10,
    };
    let (mut p, meta) = s.build();
    let summary = Ipv4Packet::new_checked(&p[..]).unwrap().summary();
    let mut bad = meta;
    bad.gso = Some(Gso {
        kind: GsoKind::Udp,
        ..meta.gso.unwrap()
    });
    assert_eq!(bad.check(&mut p, &summary), Err(DropReason::BadOffload));
    let mut bad = meta;
    bad.gso = Some(Gso {
        header_len: 44,
        ..meta.gso.unwrap()
    });
    assert_eq!(bad.check(&mut p, &summary), Err(DropReason::BadOffload));
    let mut bad = meta;
    bad.csum = Csum::Partial {
        start: 130,
        offset: 16,
    };
    assert_eq!(bad.check(&mut p, &summary), Err(DropReason::BadOffload));
    assert!(Segmenter::new(&p, bad).is_err());
    // A partial checksum anywhere but at the TCP or UDP checksum is completed on the spot.
    let mut odd = PacketMeta {
        gso: None,
        csum: Csum::Partial {
            start: 20,
            offset: 4,
        },
    };
    let mut q = p.clone();
    assert_eq!(odd.check(&mut q, &summary), Ok(L4Checksum::Complete));
    assert_eq!(odd.csum, Csum::Complete);
    assert_eq!(
        checksum::checksum(&q[20..]),
        0,
        "bytes 20.. now sum to zero"
    );
}

#[test]
fn a_packet_without_gso_is_yielded_once_with_its_checksum_completed() {
    let s = udp(vec![0x5a; 40]);
    let (p, mut meta) = s.build();
    meta.gso = None;
    let segs = segments(&p, meta);
    assert_eq!(segs.len(), 1);
    assert!(verified(&segs[0]));
    let mut small = [0u8; 10];
    assert_eq!(
        Segmenter::new(&p, meta).unwrap().next_into(&mut small),
        Err(DropReason::BufferTooSmall)
    );
}

proptest! {
    /// segment(translate(p)) == translate(segment(p)) for TCP and UDP superpackets, SNAT
    /// outbound and DNAT inbound, with every checksum of every segment complete and correct.
    #[test]
    fn segmenting_commutes_with_translation(s in spec(), out in any::<bool>()) {
        let s = if out { s } else { inbound(s) };
        let (p, meta) = s.build();

        let mut a = gateway(&s, out);
        let mut translated = p.clone();
        translate(&mut a, &mut translated, L4Checksum::Partial, out);
        let after = segments(&translated, meta);

        let mut b = gateway(&s, out);
        let mut before = segments(&p, meta);
        for seg in &mut before {
            translate(&mut b, seg, L4Checksum::Complete, out);
        }
        prop_assert_eq!(after.len(), meta.segments(p.len()));
        for (x, y) in after.iter().zip(&before) {
            prop_assert!(verified(x));
            prop_assert!(verified(y));
            prop_assert_eq!(x, y);
        }
    }

    /// A partial checksum translated and then completed equals the checksum computed from
    /// scratch over the translated packet, and equals translating the completed packet.
    #[test]
    fn partial_translation_then_completion_is_a_full_recomputation(s in spec(), out in any::<bool>()) {
        let s = if out { s } else { inbound(s) };
        let (p, mut meta) = s.build();
        meta.gso = None;
        let Csum::Partial { start, offset } = meta.csum else { unreachable!() };

        let mut g = gateway(&s, out);
        let mut partial = p.clone();
        translate(&mut g, &mut partial, L4Checksum::Partial, out);
        complete_checksum(&mut partial, start, offset).unwrap();

        let mut full = partial.clone();
        fill_l4_checksum(&mut full, usize::from(start), s.proto());
        prop_assert_eq!(&partial, &full);
        prop_assert!(verified(&partial));

        let mut h = gateway(&s, out);
        let mut completed = p.clone();
        complete_checksum(&mut completed, start, offset).unwrap();
        translate(&mut h, &mut completed, L4Checksum::Complete, out);
        prop_assert_eq!(&partial, &completed);
    }
}

/// One instance behind a NAT gateway, one public host.
const NAT_ONLY: &str = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "jobs"
  cidr = "10.0.1.0/24"
  route_table = "private"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.route_table]]
  name = "private"
  routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["eip-nat"]
  [[vpc.instance]]
  name = "job"
  subnet = "jobs"
  ip = "10.0.1.10"

[[eip]]
name = "eip-nat"
address = "203.0.113.1"

[internet]
cidr = "198.51.100.0/24"
  [[internet.host]]
  name = "web"
  ip = "198.51.100.7"
"#;

/// A fabric on [`NAT_ONLY`].
struct Net(Rig);

impl Net {
    fn new() -> Net {
        Net(Rig::on(NAT_ONLY))
    }

    /// Sends `pkt` with `meta` from port `from`; it must be forwarded to `to`. Returns the
    /// forwarded bytes and metadata.
    fn forward(
        &mut self,
        from: &str,
        pkt: &[u8],
        meta: PacketMeta,
        to: &str,
    ) -> (Vec<u8>, PacketMeta) {
        let (from, to) = (self.0.port(from), self.0.port(to));
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len() + MIN_BUFFER, 0);
        match self
            .0
            .fabric
            .handle_meta(Instant::ZERO, from, &mut buf, pkt.len(), meta)
        {
            Verdict::Forward { port, len, meta } if port == to => (buf[..len].to_vec(), meta),
            v => panic!("{v:?}"),
        }
    }

    /// Opens the flow of `s` (outbound, from the instance) with a SYN or a first datagram;
    /// returns the external port the NAT gave it.
    fn open(&mut self, s: &Spec) -> u16 {
        let open = Spec {
            payload: Vec::new(),
            flags: TCP_SYN,
            ..s.clone()
        };
        let (mut p, _) = open.build();
        let (ihl, off) = (20 + 4 * s.ip_opts as u16, s.l4_checksum_offset());
        complete_checksum(&mut p, ihl, off).unwrap();
        let (out, _) = self.forward("a/job", &p, PacketMeta::COMPLETE, "internet/web");
        let at = usize::from(ihl);
        u16::from_be_bytes([out[at], out[at + 1]])
    }
}

impl Spec {
    fn l4_checksum_offset(&self) -> u16 {
        if self.tcp {
            TCP_CHECKSUM_OFFSET
        } else {
            UDP_CHECKSUM_OFFSET
        }
    }
}

#[test]
fn a_superpacket_through_nat_keeps_its_partial_checksum_and_segments_into_valid_packets() {
    let s = Spec {
        tcp: true,
        src: HOST,
        dst: REMOTE,
        sport: 40000,
        dport: 80,
        ident: 1,
        dont_frag: true,
        ip_opts: 0,
        tcp_opts: 0,
        seq: 2,
        flags: TCP_ACK | TCP_PSH,
        payload: vec![0x5a; 9_500],
        segment_size: 1000,
    };
    let mut net = Net::new();
    net.open(&s);
    let (p, meta) = s.build();
    let (out, out_meta) = net.forward("a/job", &p, meta, "internet/web");
    assert_eq!(
        (out.len(), out_meta),
        (p.len(), meta),
        "one superpacket, same metadata"
    );
    // Still partial: the field holds the pseudo-header sum of the translated addresses.
    let sum = checksum::pseudo_header(EIP, REMOTE, PROTO_TCP, (out.len() - 20) as u16);
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), sum as u16);
    let segs = segments(&out, out_meta);
    assert_eq!(segs.len(), 10);
    for seg in &segs {
        assert!(verified(seg));
        let ip = Ipv4HeaderSlice::from_slice(seg).unwrap();
        assert_eq!(ip.source_addr(), EIP, "translated");
        assert_eq!(ip.ttl(), 63, "the NAT gateway is a visible hop");
    }
    let payload: usize = segs.iter().map(|x| x.len() - 40).sum();
    assert_eq!(payload, 9_500);
}

proptest! {
    /// Through the whole fabric (SNAT out of the VPC, the reply into it; the NAT gateway's
    /// visible hop, the filters): the superpacket forwarded and then segmented equals its
    /// segments forwarded one by one, and every checksum is complete and correct.
    #[test]
    fn the_fabric_forwards_a_superpacket_as_it_forwards_its_segments(s in spec(), out in any::<bool>()) {
        let (mut a, mut b) = (Net::new(), Net::new());
        let ext = a.open(&s);
        prop_assert_eq!(b.open(&s), ext);
        let (s, from, to) = if out {
            (s, "a/job", "internet/web")
        } else {
            let reply = Spec { src: REMOTE, dst: EIP, sport: s.dport, dport: ext, ..s };
            (reply, "internet/web", "a/job")
        };
        let (p, meta) = s.build();

        let (whole, whole_meta) = a.forward(from, &p, meta, to);
        let after = segments(&whole, whole_meta);

        let before: Vec<Vec<u8>> = segments(&p, meta)
            .iter()
            .map(|seg| b.forward(from, seg, PacketMeta::COMPLETE, to).0)
            .collect();
        prop_assert_eq!(after.len(), before.len());
        for (x, y) in after.iter().zip(&before) {
            prop_assert!(verified(x));
            prop_assert_eq!(x, y);
        }
    }
}
