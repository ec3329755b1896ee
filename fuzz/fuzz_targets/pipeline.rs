//! The full dataplane pipeline, NAT included, over the bundled quickstart topology: a sequence of
//! packets on ports at increasing times never panics, every verdict stays inside the buffer, and
//! every forwarded packet keeps a valid IPv4 header checksum.
//!
//! Most steps build a well-formed packet between addresses of the topology (instances, gateways,
//! EIPs, public hosts) so that routing, SNAT/DNAT, hairpinning, ICMP errors and expiry are
//! reached; the rest are raw bytes. Inputs whose first step has flag 0x80 run on the same
//! topology with the NAT gateway's SYN proxy on; there a step with flag 0x80 answers the last
//! SYN-ACK the fabric wrote (its cookie) with the handshake's ACK, so proxied sessions and their
//! sequence shifting are reached too.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vpcd::dataplane::offload::{Csum, Gso, GsoKind, Segmenter};
use vpcd::dataplane::{Fabric, MIN_BUFFER, PacketMeta, PortId, Verdict, checksum};
use vpcd::tables::Tables;
use vpcd::time::Instant;

const TOPOLOGY: &str = include_str!("../../topologies/quickstart.toml");

#[derive(Debug, Arbitrary)]
struct Step {
    port: u8,
    advance_ms: u32,
    raw: bool,
    src: u8,
    dst: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    ttl: u8,
    flags: u8,
    /// For ICMP errors: quote a packet between these.
    inner_src: u8,
    inner_dst: u8,
    /// Offload metadata as a TUN device with IFF_VNET_HDR could hand it over (any values:
    /// metadata that does not fit the packet must be a counted drop).
    offload: Option<(u8, u16, u16, Option<(u16, u16)>)>,
    bytes: Vec<u8>,
}

fn meta(step: &Step) -> PacketMeta {
    let Some((kind, segment_size, header_len, csum)) = step.offload else {
        return PacketMeta::COMPLETE;
    };
    let kind = match kind % 3 {
        0 => None,
        1 => Some(GsoKind::TcpV4),
        _ => Some(GsoKind::Udp),
    };
    PacketMeta {
        gso: kind.map(|kind| Gso { kind, segment_size, header_len }),
        csum: csum.map_or(Csum::Complete, |(start, offset)| Csum::Partial { start, offset }),
    }
}

fn tables(syn_proxy: bool) -> Arc<Tables> {
    static T: OnceLock<[Arc<Tables>; 2]> = OnceLock::new();
    let compile = |text: &str| {
        let plan = vpcd::topology::parse("quickstart.toml", text).expect("bundled topology is valid");
        Arc::new(vpcd::topology::compile::tables(&plan))
    };
    T.get_or_init(|| {
        let proxied = TOPOLOGY.replace("eips = [\"egress-ip\"]", "eips = [\"egress-ip\"]\n  syn_proxy = true");
        assert_ne!(proxied, TOPOLOGY, "the quickstart's gateway moved");
        [compile(TOPOLOGY), compile(&proxied)]
    })[usize::from(syn_proxy)]
    .clone()
}

/// The last TCP SYN-ACK the fabric wrote: (its source, source port, destination, destination
/// port, sequence, acknowledgment).
type SynAck = (Ipv4Addr, u16, Ipv4Addr, u16, u32, u32);

fn syn_ack_of(pkt: &[u8]) -> Option<SynAck> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    let t = pkt.get(ihl..ihl + 20)?;
    if pkt[9] != 6 || t[13] & 0x12 != 0x12 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]);
    let rd32 = |at: usize| u32::from_be_bytes([t[at], t[at + 1], t[at + 2], t[at + 3]]);
    Some((addr(12), u16::from_be_bytes([t[0], t[1]]), addr(16), u16::from_be_bytes([t[2], t[3]]), rd32(4), rd32(8)))
}

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

fn ipv4(buf: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, flags: u8, l4: &[u8]) {
    let total = 20 + l4.len();
    buf.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 7, flags & 0x60, 0, ttl, proto, 0, 0]);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    let c = checksum::checksum(&buf[buf.len() - 20..]);
    let at = buf.len() - 10;
    buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
    buf.extend_from_slice(l4);
}

fn transport(proto: u8, sport: u16, dport: u16, flags: u8, payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    transport_seq(proto, sport, dport, flags, payload, src, dst, (1, 0))
}

#[allow(clippy::too_many_arguments)]
fn transport_seq(
    proto: u8,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (seq, ack): (u32, u32),
) -> Vec<u8> {
    let mut l4 = Vec::new();
    match proto {
        6 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&seq.to_be_bytes());
            l4.extend_from_slice(&ack.to_be_bytes());
            l4.extend_from_slice(&[0x50, flags & 0x3f, 0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        _ => {
            // ICMP echo request/reply (by flags) with id = sport.
            l4.extend_from_slice(&[if flags & 1 == 0 { 8 } else { 0 }, 0, 0, 0]);
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
        }
    }
    l4.extend_from_slice(payload);
    let c = match proto {
        6 | 17 => !(checksum::sum(&l4, checksum::pseudo_header(src, dst, proto, l4.len() as u16)) as u16),
        _ => checksum::checksum(&l4),
    };
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    l4
}

fn build(step: &Step, addrs: &[Ipv4Addr]) -> Vec<u8> {
    let pick = |i: u8| addrs[usize::from(i) % addrs.len()];
    let (src, dst) = (pick(step.src), pick(step.dst));
    let payload = &step.bytes[..step.bytes.len().min(64)];
    let mut pkt = Vec::new();
    match step.proto % 4 {
        0 => ipv4(&mut pkt, src, dst, 6, step.ttl, step.flags, &transport(6, step.sport, step.dport, step.flags, payload, src, dst)),
        1 => ipv4(&mut pkt, src, dst, 17, step.ttl, step.flags, &transport(17, step.sport, step.dport, 0, payload, src, dst)),
        2 => ipv4(&mut pkt, src, dst, 1, step.ttl, step.flags, &transport(1, step.sport, step.dport, step.flags, payload, src, dst)),
        _ => {
            // An ICMP error quoting a packet between two topology addresses.
            let (isrc, idst) = (pick(step.inner_src), pick(step.inner_dst));
            let iproto = if step.flags & 2 == 0 { 17 } else { 6 };
            let mut inner = Vec::new();
            ipv4(&mut inner, isrc, idst, iproto, 64, 0, &transport(iproto, step.sport, step.dport, 2, &[], isrc, idst));
            inner.truncate(28);
            let mut icmp = vec![if step.flags & 4 == 0 { 3 } else { 11 }, step.flags % 16, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(&inner);
            let c = checksum::checksum(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            ipv4(&mut pkt, src, dst, 1, step.ttl, step.flags, &icmp);
        }
    }
    pkt
}

fuzz_target!(|steps: Vec<Step>| {
    let proxied = steps.first().is_some_and(|s| s.flags & 0x80 != 0);
    let tables = tables(proxied);
    let mut last_syn_ack: Option<SynAck> = None;
    let addrs = pool(&tables);
    let mut fabric = Fabric::new(tables.clone());
    let mut now = Instant::ZERO;
    let nports = tables.ports.len() as u32;
    for step in steps.iter().take(128) {
        now += std::time::Duration::from_millis(u64::from(step.advance_ms % 400_000));
        while fabric.poll_timeout().is_some_and(|t| t <= now) {
            fabric.handle_timeout(now);
        }
        let port = PortId(u32::from(step.port) % (nports + 1));
        let mut buf = match last_syn_ack {
            // The handshake's ACK (with payload, by the step's flags) to the last SYN-ACK.
            Some((from, fport, to, tport, seq, ack)) if proxied && step.flags & 0x80 != 0 && !step.raw => {
                let payload = &step.bytes[..step.bytes.len().min(64)];
                let flags = 0x10 | (step.flags & 0x09);
                let mut pkt = Vec::new();
                let l4 = transport_seq(6, tport, fport, flags, payload, to, from, (ack, seq.wrapping_add(1)));
                ipv4(&mut pkt, to, from, 6, step.ttl.max(2), 0x40, &l4);
                pkt
            }
            _ if step.raw => step.bytes.clone(),
            _ => build(step, &addrs),
        };
        let len = buf.len();
        buf.resize(len.max(MIN_BUFFER) + 32, 0);
        match fabric.handle_meta(now, port, &mut buf, len, meta(step)) {
            Verdict::Forward { len, meta, .. } => {
                assert!(len <= buf.len());
                assert!(len >= 20);
                let header_len = usize::from(buf[0] & 0x0f) * 4;
                assert_eq!(checksum::checksum(&buf[..header_len]), 0, "emitted IPv4 header checksum");
                // What an egress without offload sends: every segment a whole, checksummed packet.
                if let Ok(mut seg) = Segmenter::new(&buf[..len], meta) {
                    let mut out = vec![0u8; seg.max_len()];
                    while let Ok(Some(n)) = seg.next_into(&mut out) {
                        let header_len = usize::from(out[0] & 0x0f) * 4;
                        assert_eq!(checksum::checksum(&out[..header_len]), 0, "segment's IPv4 header checksum");
                        assert!(n <= out.len());
                    }
                }
            }
            Verdict::Reply { len, .. } => {
                assert!(len <= buf.len());
                assert!(len >= 20);
                last_syn_ack = syn_ack_of(&buf[..len]).or(last_syn_ack);
                let header_len = usize::from(buf[0] & 0x0f) * 4;
                assert_eq!(checksum::checksum(&buf[..header_len]), 0, "emitted IPv4 header checksum");
            }
            Verdict::Drop(_) => {}
        }
    }
});
