//! Packet capture of one port, as classic pcap with LINKTYPE_RAW (IPv4 packets, no link header).
//!
//! # Two views of one port
//!
//! A [`Capture`] of port P fills two pcap streams:
//!
//! - [`View::Port`] (`FILE`): what P's interface sees, as `tcpdump -i vpcd0` inside its namespace
//!   would — every packet P sends into the dataplane, as sent (before NAT, dropped ones too), and
//!   every packet the dataplane delivers out of P, as delivered (after NAT), including replies the
//!   fabric generates (the subnet gateway's echo reply, ICMP errors).
//! - [`View::Nat`] (`FILE.nat.pcap`, see [`nat_capture_path`]): the same conversation on the far
//!   side of the fabric — each packet P sent that the fabric forwarded, as it left the fabric
//!   (after SNAT: the EIP and external port), and each packet delivered to P as it entered the
//!   fabric from its sender (before DNAT / reverse SNAT: addressed to the EIP). Dropped packets
//!   and fabric-generated replies never crossed, so they are not in this view. Without NAT on the
//!   path both views show the same headers.
//!
//! Two plain pcap files rather than one pcapng with two interfaces: every tool reads them
//! (`tcpdump -r`, `tshark -r`, Wireshark, scapy), and the view is in the file name rather than in
//! a per-packet interface id that `tcpdump` does not print.
//!
//! # The wire, not the offload
//!
//! A superpacket (TSO/GRO: one buffer for many segments, [`PacketMeta`]) is recorded as the
//! packets it stands for on the wire, cut by the core's [`Segmenter`] with every checksum
//! completed, and a packet with a partial checksum with its checksum completed: what the peer
//! receives, with lengths and checksums `tshark -o tcp.check_checksum:TRUE` verifies. (A
//! `tcpdump` on a TUN device with offload would show the superpacket with its partial checksum
//! instead.) The segments are cut into a scratch buffer each capture allocates once.
//!
//! # Format, written by hand
//!
//! The pcap format is a 24-byte file header and a 16-byte header per packet
//! (<https://www.tcpdump.org/manpages/pcap-savefile.5.html>); writing it is a few lines. The
//! `pcap-file` crate was considered: its last stable release (2.0.0) is from 2022 and 3.0.0 has
//! stayed a release candidate since, and it would write through an `io::Write` per packet, while
//! the capture here must not do I/O on the packet path.
//!
//! # Bounded, no I/O per packet
//!
//! Records are appended to a pre-allocated buffer per view ([`CaptureConfig::buffer_bytes`]); the
//! caller moves the bytes to files with [`Capture::write_pending`] off the packet path (on a timer
//! or when [`Capture::pending_bytes`] passes a threshold). When a buffer is full, packets are
//! counted in [`Capture::dropped`] instead, like a kernel capture ring. The file header is part of
//! the first bytes written, so the output is the concatenation of every `write_pending`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dataplane::offload::Segmenter;
use crate::dataplane::{PacketMeta, Verdict};
use crate::tables::PortId;
use crate::time::Instant;

/// Raw IP: each packet starts with its IPv4 header.
pub const LINKTYPE_RAW: u32 = 101;

/// Per view, enough for a few thousand full-size packets between two writes.
pub const DEFAULT_CAPTURE_BUFFER: usize = 4 << 20;

/// Longest packet recorded in full; longer ones are cut (the record keeps the original length).
const SNAPLEN: u32 = 65_535;

const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

/// One of a capture's two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The port's own traffic (before NAT on the way out, after it on the way in).
    Port,
    /// The same packets on the other side of the fabric (after NAT on the way out, before it on
    /// the way in).
    Nat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Unix time of `Instant::ZERO`; packet timestamps are `epoch + now`.
    pub epoch: Duration,
    /// Bytes buffered per view between two [`Capture::write_pending`] calls.
    pub buffer_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            epoch: Duration::ZERO,
            buffer_bytes: DEFAULT_CAPTURE_BUFFER,
        }
    }
}

/// A pcap stream being filled in memory.
#[derive(Debug)]
struct PcapBuffer {
    bytes: Vec<u8>,
    capacity: usize,
    packets: u64,
    dropped: u64,
}

impl PcapBuffer {
    fn new(capacity: usize) -> PcapBuffer {
        let capacity = capacity.max(FILE_HEADER + RECORD_HEADER + 64);
        let mut bytes = Vec::with_capacity(capacity);
        bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // microsecond timestamps
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        bytes.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        bytes.extend_from_slice(&SNAPLEN.to_le_bytes());
        bytes.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        PcapBuffer {
            bytes,
            capacity,
            packets: 0,
            dropped: 0,
        }
    }

    /// Appends one record; never grows the buffer beyond its capacity.
    fn push(&mut self, at: Duration, packet: &[u8]) {
        let caplen = packet.len().min(SNAPLEN as usize);
        if self.bytes.len() + RECORD_HEADER + caplen > self.capacity {
            self.dropped += 1;
            return;
        }
        let secs = u32::try_from(at.as_secs()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&secs.to_le_bytes());
        self.bytes
            .extend_from_slice(&at.subsec_micros().to_le_bytes());
        self.bytes.extend_from_slice(&(caplen as u32).to_le_bytes());
        let orig = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&orig.to_le_bytes());
        self.bytes.extend_from_slice(&packet[..caplen]);
        self.packets += 1;
    }
}

/// Appends `packet` (with offload metadata `meta`) to `view` as the packets it is on the wire:
/// each segment of a superpacket, or the packet with its partial checksum completed, cut into
/// `scratch` (at least [`super::MAX_PACKET`] bytes). A packet whose metadata does not fit it
/// (the fabric drops that as `bad_offload`) is recorded as it came.
fn push_wire(
    view: &mut PcapBuffer,
    scratch: &mut [u8],
    at: Duration,
    packet: &[u8],
    meta: PacketMeta,
) {
    if meta == PacketMeta::COMPLETE {
        return view.push(at, packet);
    }
    let Ok(mut segments) = Segmenter::new(packet, meta) else {
        return view.push(at, packet);
    };
    let mut written = 0;
    while let Ok(Some(n)) = segments.next_into(scratch) {
        view.push(at, &scratch[..n]);
        written += 1;
    }
    // Only a scratch buffer too small for a segment stops early (it never is): counted.
    view.dropped += (segments.count() - written) as u64;
}

/// Captures one port's packets in both views. Sans-IO: fed by [`Capture::record`] (or
/// [`super::Observer::handle`]), emptied by [`Capture::write_pending`].
#[derive(Debug)]
pub struct Capture {
    port: PortId,
    epoch: Duration,
    own: PcapBuffer,
    nat: PcapBuffer,
    /// Where superpackets are cut into segments (allocated once).
    scratch: Vec<u8>,
}

impl Capture {
    /// A capture of `port`. Allocates both buffers and the scratch buffer here.
    pub fn new(port: PortId, config: CaptureConfig) -> Capture {
        Capture {
            port,
            epoch: config.epoch,
            own: PcapBuffer::new(config.buffer_bytes),
            nat: PcapBuffer::new(config.buffer_bytes),
            scratch: vec![0; super::MAX_PACKET],
        }
    }

    pub fn port(&self) -> PortId {
        self.port
    }

    /// Follows the port to a new id (a table swap renumbered it).
    pub fn set_port(&mut self, port: PortId) {
        self.port = port;
    }

    /// Records one handled packet: `before` is the packet as it entered the fabric on
    /// `ingress` with its offload metadata `meta`, `verdict` the fabric's answer (with the
    /// metadata of what it forwards), `after` the buffer after it. Superpackets and partial
    /// checksums are recorded as on the wire (module docs). No allocation or I/O.
    pub fn record(
        &mut self,
        now: Instant,
        ingress: PortId,
        before: &[u8],
        meta: PacketMeta,
        verdict: Verdict,
        after: &[u8],
    ) {
        let at = self.epoch + Duration::from_micros(now.micros());
        let out = |len: usize| after.get(..len).unwrap_or(after);
        let scratch = &mut self.scratch;
        if ingress == self.port {
            push_wire(&mut self.own, scratch, at, before, meta);
            if let Verdict::Forward {
                len,
                meta: forwarded,
                ..
            } = verdict
            {
                push_wire(&mut self.nat, scratch, at, out(len), forwarded);
            }
        }
        match verdict {
            Verdict::Forward {
                port,
                len,
                meta: forwarded,
            } if port == self.port => {
                push_wire(&mut self.own, scratch, at, out(len), forwarded);
                push_wire(&mut self.nat, scratch, at, before, meta);
            }
            Verdict::Reply { port, len } if port == self.port => self.own.push(at, out(len)),
            _ => {}
        }
    }

    /// Bytes waiting in the fuller of the two views.
    pub fn pending_bytes(&self) -> usize {
        self.own.bytes.len().max(self.nat.bytes.len())
    }

    /// Packets recorded in a view (written or pending).
    pub fn packets(&self, view: View) -> u64 {
        self.buffer(view).packets
    }

    /// Packets not recorded in a view because its buffer was full.
    pub fn dropped(&self, view: View) -> u64 {
        self.buffer(view).dropped
    }

    fn buffer(&self, view: View) -> &PcapBuffer {
        match view {
            View::Port => &self.own,
            View::Nat => &self.nat,
        }
    }

    /// Writes what is pending of each view to its writer (the first call writes the file
    /// headers) and empties the buffers, keeping their memory. On an error the bytes of that view
    /// stay pending.
    pub fn write_pending(&mut self, port: &mut dyn Write, nat: &mut dyn Write) -> io::Result<()> {
        fn drain(buf: &mut PcapBuffer, out: &mut dyn Write) -> io::Result<()> {
            if !buf.bytes.is_empty() {
                out.write_all(&buf.bytes)?;
                buf.bytes.clear();
            }
            Ok(())
        }
        drain(&mut self.own, port)?;
        drain(&mut self.nat, nat)
    }
}

/// Where the [`View::Nat`] stream of a capture written to `path` goes: `x.pcap` -> `x.nat.pcap`,
/// anything else -> `path.nat.pcap`.
pub fn nat_capture_path(path: &Path) -> PathBuf {
    match path.extension() {
        Some(ext) if ext == "pcap" => path.with_extension("nat.pcap"),
        _ => {
            let mut s = path.as_os_str().to_owned();
            s.push(".nat.pcap");
            PathBuf::from(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::offload::PacketMeta;
    use crate::observe::tests::{
        checksums_correct, superpacket, tcp_superpacket, udp_superpacket, wire_segments,
    };
    use crate::observe::{PROTO_TCP, PROTO_UDP};

    #[test]
    fn header_and_records_are_little_endian_pcap() {
        let mut c = Capture::new(PortId(1), CaptureConfig::default());
        let pkt = [0x45u8; 28];
        c.record(
            Instant::from_micros(1_500_000),
            PortId(1),
            &pkt,
            PacketMeta::COMPLETE,
            Verdict::Forward {
                port: PortId(2),
                len: 28,
                meta: PacketMeta::COMPLETE,
            },
            &pkt,
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.write_pending(&mut a, &mut b).expect("vec writes");
        assert_eq!(&a[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&a[20..24], &101u32.to_le_bytes());
        assert_eq!(a.len(), FILE_HEADER + RECORD_HEADER + 28);
        assert_eq!(&a[24..28], &1u32.to_le_bytes());
        assert_eq!(&a[28..32], &500_000u32.to_le_bytes());
        assert_eq!(b.len(), a.len(), "forwarded: in the NAT view too");
        // The second write carries no header again.
        let (mut a2, mut b2) = (Vec::new(), Vec::new());
        c.write_pending(&mut a2, &mut b2).expect("vec writes");
        assert!(a2.is_empty() && b2.is_empty());
    }

    #[test]
    fn a_full_buffer_counts_drops_and_does_not_grow() {
        let mut c = Capture::new(
            PortId(0),
            CaptureConfig {
                buffer_bytes: 200,
                ..CaptureConfig::default()
            },
        );
        let pkt = [0x45u8; 60];
        for _ in 0..5 {
            c.record(
                Instant::ZERO,
                PortId(0),
                &pkt,
                PacketMeta::COMPLETE,
                Verdict::Drop(crate::dataplane::DropReason::NoRoute),
                &pkt,
            );
        }
        assert_eq!(c.packets(View::Port), 2);
        assert_eq!(c.dropped(View::Port), 3);
        assert_eq!(c.packets(View::Nat), 0, "a drop never crossed the fabric");
        assert!(c.pending_bytes() <= 200);
    }

    /// The packets of a pcap stream (after its file header).
    fn records(stream: &[u8]) -> Vec<&[u8]> {
        let mut rest = &stream[FILE_HEADER..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let caplen = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
            let orig = u32::from_le_bytes(rest[12..16].try_into().unwrap()) as usize;
            assert_eq!(caplen, orig);
            out.push(&rest[RECORD_HEADER..RECORD_HEADER + caplen]);
            rest = &rest[RECORD_HEADER + caplen..];
        }
        out
    }

    fn written(c: &mut Capture) -> (Vec<u8>, Vec<u8>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.write_pending(&mut a, &mut b).expect("vec writes");
        (a, b)
    }

    #[test]
    fn a_superpacket_is_recorded_as_its_wire_segments_in_both_views() {
        for proto in [PROTO_TCP, PROTO_UDP] {
            let (p, meta) = superpacket(
                proto,
                ([10, 0, 1, 10], 40000),
                ([198, 51, 100, 10], 80),
                0,
                5000,
                1448,
            );
            let wire = wire_segments(&p, meta);
            assert_eq!(wire.len(), 4);
            // Sent by the captured port, and delivered to it.
            for (ingress, to) in [(PortId(1), PortId(2)), (PortId(2), PortId(1))] {
                let mut c = Capture::new(PortId(1), CaptureConfig::default());
                let v = Verdict::Forward {
                    port: to,
                    len: p.len(),
                    meta,
                };
                c.record(Instant::ZERO, ingress, &p, meta, v, &p);
                let (own, nat) = written(&mut c);
                for stream in [&own, &nat] {
                    let got = records(stream);
                    assert_eq!(got, wire, "proto {proto}");
                    assert!(got.iter().all(|s| checksums_correct(s)));
                }
                assert_eq!((c.packets(View::Port), c.dropped(View::Port)), (4, 0));
            }
        }
    }

    #[test]
    fn a_partial_checksum_is_completed_in_the_copy_recorded() {
        let (p, mut meta) = udp_superpacket(100, 1200);
        meta.gso = None;
        assert!(!checksums_correct(&p));
        let mut c = Capture::new(PortId(1), CaptureConfig::default());
        let v = Verdict::Drop(crate::dataplane::DropReason::NoRoute);
        c.record(Instant::ZERO, PortId(1), &p, meta, v, &p);
        let (own, _) = written(&mut c);
        let got = records(&own);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), p.len());
        assert!(checksums_correct(got[0]));
        assert_eq!(got[0][..26], p[..26], "only the checksum differs");
        assert_eq!(got[0][28..], p[28..]);
    }

    #[test]
    fn metadata_that_does_not_fit_is_recorded_as_it_came() {
        let (p, mut meta) = tcp_superpacket(3000, 1000);
        if let Some(g) = &mut meta.gso {
            g.header_len = 40; // the TCP header has options: 52
        }
        let mut c = Capture::new(PortId(1), CaptureConfig::default());
        let v = Verdict::Drop(crate::dataplane::DropReason::BadOffload);
        c.record(Instant::ZERO, PortId(1), &p, meta, v, &p);
        let (own, _) = written(&mut c);
        assert_eq!(records(&own), [&p[..]]);
    }

    #[test]
    fn superpackets_fill_the_buffers_without_growing_them() {
        let (p, meta) = tcp_superpacket(20_000, 1448);
        let mut c = Capture::new(
            PortId(1),
            CaptureConfig {
                buffer_bytes: 50_000,
                ..CaptureConfig::default()
            },
        );
        let capacity = (c.own.bytes.capacity(), c.scratch.capacity());
        let v = Verdict::Forward {
            port: PortId(2),
            len: p.len(),
            meta,
        };
        for _ in 0..4 {
            c.record(Instant::ZERO, PortId(1), &p, meta, v, &p);
        }
        assert_eq!((c.own.bytes.capacity(), c.scratch.capacity()), capacity);
        // 14 segments each time; what does not fit 50,000 bytes is counted, not written.
        let total = c.packets(View::Port) + c.dropped(View::Port);
        assert_eq!(total, 4 * 14);
        assert!(c.dropped(View::Port) > 0 && c.pending_bytes() <= 50_000);
    }

    #[test]
    fn nat_paths() {
        assert_eq!(
            nat_capture_path(Path::new("/tmp/fn.pcap")),
            Path::new("/tmp/fn.nat.pcap")
        );
        assert_eq!(
            nat_capture_path(Path::new("fn.cap")),
            Path::new("fn.cap.nat.pcap")
        );
    }
}
