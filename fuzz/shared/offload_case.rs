//! Superpackets with GSO metadata through the fabric and the helpers of egress ports that cannot
//! take them, over the bundled quickstart topology: shared by the fuzz target
//! `fuzz/fuzz_targets/offload.rs` and the proptest `offload_metadata_never_panics` in
//! `tests/dataplane_props.rs` (both include this file with `#[path]`), so that CI exercises it
//! without cargo-fuzz.
//!
//! [`run`] reads its input as a sequence of packets: each is either raw bytes with arbitrary
//! [`PacketMeta`], or a TCP or UDP superpacket between topology addresses (up to 64 KB, TCP
//! options, DF or not) whose metadata is derived from the input: GSO kind (matching the protocol
//! or not), segment size, header length (right or not), a complete checksum, a partial one as
//! `virtio_net_hdr` hands it over (`csum_start`/`csum_offset` at the transport checksum), or
//! arbitrary `csum_start`/`csum_offset`. Each goes through `Fabric::handle_meta`; what is
//! forwarded goes through `Segmenter` and `complete_checksum` as a sim port, the uplink or a
//! port without offload would have it.
//!
//! Nothing may panic, and:
//! - a forwarded packet keeps a valid IPv4 header checksum, and one of its segments fits the
//!   egress port's MTU;
//! - a forwarded superpacket is accepted by the `Segmenter`, which writes exactly `count()`
//!   packets, each within `max_len()`, with valid IPv4 and TCP/UDP checksums and the lengths set,
//!   whose payloads put together are the superpacket's, and refuses a buffer one byte short;
//! - a forwarded packet that came in with a well-formed complete or partial checksum leaves the
//!   `Segmenter` (or `complete_checksum`) with a valid transport checksum.

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use vpcd::dataplane::offload::{
    Csum, Gso, GsoKind, Segmenter, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET, complete_checksum,
};
use vpcd::dataplane::{DropReason, Fabric, MIN_BUFFER, PacketMeta, PortId, Verdict, checksum};
use vpcd::tables::Tables;
use vpcd::time::Instant;

const TOPOLOGY: &str = include_str!("../../topologies/quickstart.toml");
/// Packets per input at most.
const STEPS: usize = 24;

fn tables() -> Arc<Tables> {
    static T: OnceLock<Arc<Tables>> = OnceLock::new();
    T.get_or_init(|| {
        let plan =
            vpcd::topology::parse("quickstart.toml", TOPOLOGY).expect("bundled topology is valid");
        Arc::new(vpcd::topology::compile::tables(&plan))
    })
    .clone()
}

/// Addresses worth sending to: ports, EIPs, gateways, an unknown public host.
fn pool(t: &Tables) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = t.ports.iter().map(|p| p.addr).collect();
    v.extend(t.internet.eips.keys().copied());
    for vpc in &t.vpcs {
        v.extend(vpc.subnets.iter().map(|s| s.gateway));
        v.extend(vpc.nat_gateways.iter().map(|g| g.ip));
    }
    v.push(Ipv4Addr::new(198, 51, 100, 99));
    v
}

/// The input, read front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a.to_vec()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One packet to hand to the fabric.
struct Case {
    port: PortId,
    pkt: Vec<u8>,
    meta: PacketMeta,
    /// Built with a complete checksum, or a partial one exactly as `virtio_net_hdr` gives it.
    sound_checksum: bool,
}

const PORTS: [u16; 5] = [80, 8080, 443, 53, 40000];

/// A GSO kind as the input chooses it: none, the protocol's own, or the other one.
fn gso_kind(choice: u8, proto: u8) -> Option<GsoKind> {
    let own = if proto == 6 {
        GsoKind::TcpV4
    } else {
        GsoKind::Udp
    };
    let other = if proto == 6 {
        GsoKind::Udp
    } else {
        GsoKind::TcpV4
    };
    match choice % 5 {
        0 => None,
        1 => Some(other),
        _ => Some(own),
    }
}

/// A superpacket (or ordinary packet) between topology addresses with metadata from `input`.
fn built(input: &mut Input, t: &Tables, addrs: &[Ipv4Addr]) -> Case {
    let nports = t.ports.len().max(1);
    let port = usize::from(input.u8()) % nports;
    let pick = |i: u8| addrs[usize::from(i) % addrs.len()];
    let spoof = input.u8();
    let src = match t.ports.get(port) {
        Some(p) if !spoof.is_multiple_of(4) => p.addr,
        _ => pick(spoof),
    };
    let dst = pick(input.u8());
    let proto = if input.u8().is_multiple_of(2) { 6 } else { 17 };
    let sport = match input.u8() % 3 {
        0 => input.u16(),
        i => PORTS[usize::from(input.u8()) % PORTS.len()] + u16::from(i),
    };
    let dport = PORTS[usize::from(input.u8()) % PORTS.len()];
    let flags = input.u8();
    let options = usize::from(input.u8() % 11) * 4;
    let l4_header = if proto == 6 { 20 + options } else { 8 };
    let headers = 20 + l4_header;
    let payload_len = usize::from(input.u16()) % (65_535 - headers + 1);
    let seed = input.u8();
    let df = input.u8().is_multiple_of(2);

    let total = headers + payload_len;
    let mut pkt = vec![0u8; total];
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    pkt[4..6].copy_from_slice(&u16::from(seed).to_be_bytes());
    pkt[6] = if df { 0x40 } else { 0 };
    pkt[8] = 64;
    pkt[9] = proto;
    pkt[12..16].copy_from_slice(&src.octets());
    pkt[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&pkt[..20]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
    let l4 = &mut pkt[20..];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4[4..8].copy_from_slice(&u32::from(seed).wrapping_mul(0x0101_0101).to_be_bytes());
        l4[12] = ((l4_header / 4) as u8) << 4;
        // Mostly ACK (an established flow's data), sometimes SYN (so NAT sessions exist).
        l4[13] = if flags.is_multiple_of(4) {
            0x02
        } else {
            0x10 | (flags & 0xe9)
        };
        l4[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        // NOP options.
        l4[20..l4_header].fill(1);
    } else {
        l4[4..6].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    }
    for (i, b) in l4[l4_header..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(seed | 1);
    }

    let kind = gso_kind(input.u8(), proto);
    let segment_size = match input.u8() % 4 {
        0 => input.u16(),
        _ => 1 + input.u16() % 1460,
    };
    let header_len = match input.u8() % 6 {
        0 => input.u16(),
        1 => (headers as u16).wrapping_add(4),
        _ => headers as u16,
    };
    let field = if proto == 6 {
        TCP_CHECKSUM_OFFSET
    } else {
        UDP_CHECKSUM_OFFSET
    };
    let at = 20 + usize::from(field);
    let ph = checksum::pseudo_header(src, dst, proto, (total - 20) as u16);
    let (csum, sound_checksum) = match input.u8() % 4 {
        0 => {
            let c = !(checksum::sum(&pkt[20..], ph) as u16);
            pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
            (Csum::Complete, true)
        }
        1 => {
            // Anywhere, mostly inside the headers.
            let (start, offset) = match input.u8() % 2 {
                0 => (input.u16(), input.u16()),
                _ => (u16::from(input.u8() % 64), u16::from(input.u8() % 32)),
            };
            (Csum::Partial { start, offset }, false)
        }
        _ => {
            // What a TUN device with IFF_VNET_HDR hands over: the pseudo-header sum, folded,
            // uncomplemented (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
            pkt[at..at + 2].copy_from_slice(&(ph as u16).to_be_bytes());
            (
                Csum::Partial {
                    start: 20,
                    offset: field,
                },
                true,
            )
        }
    };
    let gso = kind.map(|kind| Gso {
        kind,
        segment_size,
        header_len,
    });
    Case {
        port: PortId(port as u32),
        pkt,
        meta: PacketMeta { gso, csum },
        sound_checksum,
    }
}

/// Arbitrary bytes with arbitrary metadata; the helpers are also called on them directly.
fn raw(input: &mut Input, t: &Tables) -> Case {
    let port = PortId(u32::from(input.u8()) % (t.ports.len() as u32 + 1));
    let gso = match input.u8() % 3 {
        0 => None,
        k => Some(Gso {
            kind: if k == 1 { GsoKind::TcpV4 } else { GsoKind::Udp },
            segment_size: input.u16(),
            header_len: input.u16(),
        }),
    };
    let csum = match input.u8() % 2 {
        0 => Csum::Complete,
        _ => Csum::Partial {
            start: input.u16(),
            offset: input.u16(),
        },
    };
    let meta = PacketMeta { gso, csum };
    let len = usize::from(input.u16()) % 2048;
    let mut pkt = input.bytes(len);
    if let Ok(mut seg) = Segmenter::new(&pkt, meta) {
        let mut out = vec![0u8; seg.max_len().min(1 << 17)];
        while let Ok(Some(_)) = seg.next_into(&mut out) {}
    }
    if let Csum::Partial { start, offset } = csum {
        let _ = complete_checksum(&mut pkt, start, offset);
    }
    Case {
        port,
        pkt,
        meta,
        sound_checksum: false,
    }
}

fn ihl(pkt: &[u8]) -> usize {
    usize::from(pkt[0] & 0x0f) * 4
}

/// Whether the TCP or UDP checksum of the unfragmented IPv4 packet `pkt` is right.
fn transport_checksum_ok(pkt: &[u8]) -> bool {
    let h = ihl(pkt);
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let l4 = &pkt[h..];
    checksum::sum(
        l4,
        checksum::pseudo_header(src, dst, pkt[9], l4.len() as u16),
    ) as u16
        == 0xffff
}

/// What a port without offload does with a forwarded packet: segments, checked.
fn segment_forwarded(pkt: &[u8], meta: PacketMeta, mtu: usize, sound: bool) {
    let seg = Segmenter::new(pkt, meta);
    let Some(g) = meta.gso else {
        // One packet: the segmenter (if the packet fits it) and the completer agree.
        if let Csum::Partial { start, offset } = meta.csum {
            let mut copy = pkt.to_vec();
            assert_eq!(complete_checksum(&mut copy, start, offset), Ok(()));
            if sound {
                assert!(transport_checksum_ok(&copy), "completed checksum");
            }
        }
        if let Ok(mut seg) = seg {
            assert_eq!(seg.count(), 1);
            let mut out = vec![0u8; seg.max_len()];
            let n = seg.next_into(&mut out).expect("one packet").expect("one");
            assert_eq!(&out[..n][..20], &pkt[..20]);
            if sound {
                assert!(transport_checksum_ok(&out[..n]), "one packet's checksum");
            }
            assert_eq!(seg.next_into(&mut out), Ok(None));
        }
        return;
    };
    let mut seg = seg.expect("the fabric forwarded it: the segmenter takes it");
    let (count, max) = (seg.count(), seg.max_len());
    assert!(max <= mtu, "a segment of {max} bytes for an MTU of {mtu}");
    let headers = usize::from(g.header_len);
    if max > 0 {
        let mut short = vec![0u8; max - 1];
        assert_eq!(
            seg.clone().next_into(&mut short),
            Err(DropReason::BufferTooSmall)
        );
    }
    let mut out = vec![0u8; max];
    let mut payload = Vec::with_capacity(pkt.len());
    let mut written = 0;
    while let Some(n) = seg.next_into(&mut out).expect("segment") {
        written += 1;
        assert!(n <= max && n >= headers);
        let s = &out[..n];
        assert_eq!(
            checksum::checksum(&s[..ihl(s)]),
            0,
            "segment's IPv4 checksum"
        );
        assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), n);
        assert!(transport_checksum_ok(s), "segment's transport checksum");
        if g.kind == GsoKind::Udp {
            let udp_len = u16::from_be_bytes([s[ihl(s) + 4], s[ihl(s) + 5]]);
            assert_eq!(usize::from(udp_len), n - ihl(s));
        }
        payload.extend_from_slice(&s[headers..]);
    }
    assert_eq!(written, count);
    assert_eq!(payload, &pkt[headers..], "the segments carry the payload");
}

/// What one [`run`] reached (so a test can tell that its inputs get past the drops).
#[derive(Debug, Default, Clone, Copy)]
pub struct Reached {
    /// Packets forwarded.
    pub forwarded: usize,
    /// Superpackets forwarded (and segmented).
    pub superpackets: usize,
    /// Forwarded packets whose checksum was still partial.
    pub partial: usize,
}

/// Runs `data` through the fabric and the offload helpers (see the module docs).
pub fn run(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let tables = tables();
    let addrs = pool(&tables);
    let mut fabric = Fabric::new(tables.clone());
    let mut now = Instant::ZERO;
    let mut input = Input(data);
    for _ in 0..STEPS {
        if input.is_empty() {
            break;
        }
        now += std::time::Duration::from_millis(u64::from(input.u8()));
        while fabric.poll_timeout().is_some_and(|t| t <= now) {
            fabric.handle_timeout(now);
        }
        let case = if input.u8() % 8 == 0 {
            raw(&mut input, &tables)
        } else {
            built(&mut input, &tables, &addrs)
        };
        let len = case.pkt.len();
        let mut buf = case.pkt;
        buf.resize(len.max(MIN_BUFFER) + 16, 0);
        match fabric.handle_meta(now, case.port, &mut buf, len, case.meta) {
            Verdict::Forward { port, len, meta } => {
                assert!((20..=buf.len()).contains(&len));
                assert_eq!(checksum::checksum(&buf[..ihl(&buf)]), 0, "IPv4 checksum");
                let mtu = tables.port(port).expect("a known egress").mtu as usize;
                assert!(meta.wire_len(len) <= mtu, "one segment fits the MTU");
                segment_forwarded(&buf[..len], meta, mtu, case.sound_checksum);
                reached.forwarded += 1;
                reached.superpackets += usize::from(meta.gso.is_some());
                reached.partial += usize::from(meta.csum != Csum::Complete);
            }
            Verdict::Reply { len, .. } => {
                assert!((20..=buf.len()).contains(&len));
                assert_eq!(checksum::checksum(&buf[..ihl(&buf)]), 0, "IPv4 checksum");
            }
            Verdict::Drop(_) => {}
        }
    }
    reached
}
