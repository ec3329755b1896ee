//! The coalescer against the segmenter: whatever it merges, cutting the result again gives the
//! packets it was given, and what it must not merge stays alone.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use proptest::prelude::*;

use super::*;
use crate::dataplane::offload::Segmenter;
use crate::dataplane::packet::{TCP_FIN, TCP_SYN};

const SRC: [u8; 4] = [10, 0, 1, 10];
const DST: [u8; 4] = [198, 51, 100, 7];
/// The egress takes UDP superpackets too (USO).
const BOTH: bool = true;

fn udp(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(SRC, DST, 64)
        .udp(sport, 53)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn tcp(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(SRC, DST, 64).tcp(40000, 80, seq, 512);
    let b = b.ack(7);
    let b = if flags & TCP_PSH != 0 { b.psh() } else { b };
    let b = if flags & TCP_SYN != 0 { b.syn() } else { b };
    let b = if flags & TCP_FIN != 0 { b.fin() } else { b };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// An egress queue as the shell keeps it: each packet is appended to the last one when it can
/// be, else queued after it.
struct Queue {
    packets: Vec<(Vec<u8>, usize, PacketMeta)>,
    udp_gso: bool,
}

impl Queue {
    fn new(udp_gso: bool) -> Queue {
        Queue {
            packets: Vec::new(),
            udp_gso,
        }
    }

    /// `true` when `pkt` was merged into the last packet.
    fn push(&mut self, pkt: &[u8]) -> bool {
        if let Some((buf, len, meta)) = self.packets.last_mut()
            && let Some((n, m)) = append(buf, *len, *meta, pkt, PacketMeta::COMPLETE, self.udp_gso)
        {
            (*len, *meta) = (n, m);
            return true;
        }
        let mut buf = vec![0u8; 65_600];
        buf[..pkt.len()].copy_from_slice(pkt);
        self.packets.push((buf, pkt.len(), PacketMeta::COMPLETE));
        false
    }

    /// Every queued packet cut into wire packets again.
    fn wire(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (buf, len, meta) in &self.packets {
            if let Some(g) = meta.gso {
                assert!(meta.segments(*len) <= MAX_SEGMENTS, "{g:?}");
                assert!(*len <= usize::from(u16::MAX));
            }
            let mut cut = Segmenter::new(&buf[..*len], *meta).unwrap();
            let mut seg = vec![0u8; 65_600];
            while let Some(n) = cut.next_into(&mut seg).unwrap() {
                out.push(seg[..n].to_vec());
            }
        }
        out
    }
}

/// The packet with its IP identifier and header checksum zeroed: what a superpacket's cut does
/// not keep (it numbers the segments from the first one's identifier, as the kernel does).
fn without_ident(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    p[4..6].fill(0);
    p[10..12].fill(0);
    p
}

#[test]
fn udp_datagrams_of_one_flow_leave_as_one_superpacket_and_cut_back_exactly() {
    let sent: Vec<Vec<u8>> = (0..10u8).map(|i| udp(40000, &[i; 64])).collect();
    let mut q = Queue::new(BOTH);
    for p in &sent {
        q.push(p);
    }
    assert_eq!(q.packets.len(), 1);
    let (_, len, meta) = q.packets[0];
    assert_eq!(len, 28 + 640);
    assert_eq!(
        meta.gso,
        Some(Gso {
            kind: GsoKind::Udp,
            segment_size: 64,
            header_len: 28
        })
    );
    let plain = |ps: &[Vec<u8>]| ps.iter().map(|p| without_ident(p)).collect::<Vec<_>>();
    assert_eq!(plain(&q.wire()), plain(&sent));
}

#[test]
fn a_shorter_datagram_ends_the_superpacket_and_a_longer_one_starts_a_new_one() {
    let mut q = Queue::new(BOTH);
    assert!(!q.push(&udp(40000, &[1; 100])));
    assert!(q.push(&udp(40000, &[2; 100])));
    assert!(q.push(&udp(40000, &[3; 40])), "a shorter last one joins");
    assert!(
        !q.push(&udp(40000, &[4; 40])),
        "nothing after the short one"
    );
    assert!(!q.push(&udp(40000, &[5; 41])), "nor a longer one");
    assert_eq!(q.packets.len(), 3);
}

#[test]
fn other_flows_and_egresses_without_uso_do_not_merge() {
    let mut q = Queue::new(BOTH);
    q.push(&udp(40000, &[1; 64]));
    assert!(!q.push(&udp(40001, &[1; 64])), "another source port");
    let mut q = Queue::new(false);
    q.push(&udp(40000, &[1; 64]));
    assert!(!q.push(&udp(40000, &[1; 64])), "no USO on the egress");
    q.push(&tcp(1, TCP_ACK, &[1; 100]));
    assert!(q.push(&tcp(101, TCP_ACK, &[1; 100])), "TCP still merges");
}

#[test]
fn tcp_segments_merge_only_in_sequence_and_a_psh_ends_the_superpacket() {
    let mut q = Queue::new(BOTH);
    q.push(&tcp(1000, TCP_ACK, &[1; 500]));
    assert!(!q.push(&tcp(1600, TCP_ACK, &[2; 500])), "a gap");
    assert!(q.push(&tcp(2100, TCP_ACK, &[3; 500])));
    assert!(q.push(&tcp(2600, TCP_ACK | TCP_PSH, &[4; 500])));
    assert!(!q.push(&tcp(3100, TCP_ACK, &[5; 500])), "after PSH");
    assert!(!q.push(&tcp(3600, TCP_ACK | TCP_FIN, &[6; 10])), "a FIN");
    assert!(!q.push(&tcp(3610, TCP_SYN, &[])), "a SYN");
    assert!(
        !q.push(&tcp(3610, TCP_ACK, &[])),
        "a pure ACK carries nothing"
    );
    let wire = q.wire();
    assert_eq!(wire.len(), 8);
    assert_eq!(q.packets[1].2.gso.map(|g| g.segment_size), Some(500));
}

#[test]
fn a_packet_with_a_wrong_checksum_is_never_merged() {
    let mut q = Queue::new(BOTH);
    let good = udp(40000, &[1; 64]);
    let mut bad = udp(40000, &[1; 64]);
    bad[40] ^= 0xff;
    q.push(&good);
    assert!(!q.push(&bad), "a corrupt one goes alone");
    assert!(!q.push(&good), "and is not made a superpacket head either");
    assert_eq!(q.wire()[1], bad, "unchanged");
    let mut q = Queue::new(BOTH);
    q.push(&bad);
    assert!(!q.push(&good), "a corrupt head stays alone");
}

#[test]
fn a_superpacket_stops_at_the_segment_and_length_limits() {
    let mut q = Queue::new(BOTH);
    for _ in 0..MAX_SEGMENTS + 1 {
        q.push(&udp(40000, &[9; 8]));
    }
    assert_eq!(
        q.packets.len(),
        2,
        "{MAX_SEGMENTS} segments, then a new one"
    );
    let mut q = Queue::new(BOTH);
    for i in 0..50u32 {
        q.push(&tcp(1 + i * 1460, TCP_ACK, &[7; 1460]));
    }
    assert!(q.packets.iter().all(|(_, len, _)| *len <= 65_535));
    assert_eq!(q.packets.len(), 2);
}

/// One packet of a few flows: UDP or TCP, the flow, a payload length, flags, maybe corrupt.
#[derive(Debug, Clone)]
struct Arrival {
    tcp: bool,
    flow: u16,
    len: usize,
    psh: bool,
    corrupt: bool,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        any::<bool>(),
        0u16..2,
        0usize..1500,
        any::<bool>(),
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(tcp, flow, len, psh, corrupt)| Arrival {
            tcp,
            flow,
            len,
            psh,
            corrupt,
        })
}

proptest! {
    /// Whatever arrives, in any order of flows, sizes and corruption, the wire sees the same
    /// packets in the same order (up to the IP identifier of merged ones), and no superpacket
    /// breaks the limits.
    #[test]
    fn coalescing_never_changes_what_reaches_the_wire(arrivals in proptest::collection::vec(arrival(), 1..120), udp_gso in any::<bool>()) {
        let mut seq = [1u32; 2];
        let mut sent = Vec::new();
        for (i, a) in arrivals.iter().enumerate() {
            let payload: Vec<u8> = (0..a.len).map(|k| (k + i) as u8).collect();
            let mut p = if a.tcp {
                let flags = if a.psh { TCP_ACK | TCP_PSH } else { TCP_ACK };
                let s = seq[usize::from(a.flow)];
                seq[usize::from(a.flow)] = s.wrapping_add(a.len as u32);
                let mut p = tcp(s, flags, &payload);
                p[21] = a.flow as u8; // the source port tells the flows apart
                crate::dataplane::offload::fill_l4_checksum(&mut p, 20, PROTO_TCP);
                p
            } else {
                udp(40000 + a.flow, &payload)
            };
            if a.corrupt && a.len > 0 {
                let last = p.len() - 1;
                p[last] ^= 0x5a;
            }
            sent.push(p);
        }
        let mut q = Queue::new(udp_gso);
        for p in &sent {
            q.push(p);
        }
        let wire = q.wire();
        prop_assert_eq!(wire.len(), sent.len());
        for (w, s) in wire.iter().zip(&sent) {
            prop_assert_eq!(without_ident(w), without_ident(s));
            prop_assert!(Ipv4Packet::new_unchecked(&w[..]).verify_checksum());
        }
    }
}

#[test]
fn partial_checksums_merge_and_the_result_is_partial_over_the_whole() {
    let mut a = udp(40000, &[1; 64]);
    let mut b = udp(40000, &[2; 64]);
    for p in [&mut a, &mut b] {
        let sum = checksum::pseudo_header(Ipv4Addr::from(SRC), Ipv4Addr::from(DST), PROTO_UDP, 72);
        p[26..28].copy_from_slice(&(sum as u16).to_be_bytes());
    }
    let partial = PacketMeta {
        gso: None,
        csum: Csum::Partial {
            start: 20,
            offset: UDP_CHECKSUM_OFFSET,
        },
    };
    let mut buf = vec![0u8; 1000];
    buf[..a.len()].copy_from_slice(&a);
    let (n, meta) = append(&mut buf, a.len(), partial, &b, partial, BOTH).unwrap();
    assert_eq!(n, 20 + 8 + 128);
    let whole = checksum::pseudo_header(Ipv4Addr::from(SRC), Ipv4Addr::from(DST), PROTO_UDP, 136);
    assert_eq!(u16::from_be_bytes([buf[26], buf[27]]), whole as u16);
    assert_eq!(
        u16::from_be_bytes([buf[24], buf[25]]),
        136,
        "the UDP length of the whole"
    );
    let cut: Vec<_> = {
        let mut c = Segmenter::new(&buf[..n], meta).unwrap();
        let mut seg = vec![0u8; 200];
        std::iter::from_fn(|| c.next_into(&mut seg).unwrap().map(|k| seg[..k].to_vec())).collect()
    };
    let cut: Vec<_> = cut.iter().map(|p| without_ident(p)).collect();
    let sent = [udp(40000, &[1; 64]), udp(40000, &[2; 64])];
    assert_eq!(
        cut,
        sent.iter().map(|p| without_ident(p)).collect::<Vec<_>>()
    );
}
