//! Observing the dataplane from outside: flow logs and packet capture.
//!
//! Both are **wrappers around the fabric call**, never flags inside it (ARCHITECTURE.md, "Layers"): an
//! [`Observer`] reads a packet before [`Fabric::handle`] (what the port sent, before NAT), calls
//! the fabric, then reads the verdict and the rewritten buffer (what leaves, after NAT). The
//! dataplane does not know it is observed.
//!
//! - [`FlowLog`] (`flowlog.rs`) aggregates packets into AWS-style flow-log records over a capture
//!   window. Sans-IO: the caller passes `now`, drives [`FlowLog::poll_timeout`] /
//!   [`FlowLog::handle_timeout`], and drains finished [`FlowRecord`]s; per packet it does one
//!   lookup in a bounded, pre-sized table with a seeded hasher (no allocation, no lock, no I/O).
//! - [`FlowLogWriter`] (`jsonl.rs`) writes records as JSON lines to any `io::Write`: the I/O half.
//! - [`CaptureFiles`], [`open_flow_log`], [`parse_capture_arg`] (`files.rs`): the shell's
//!   helpers for `--capture ENDPOINT=FILE` and `--flow-log FILE|-`.
//! - [`Capture`] (`pcap.rs`) records one port's packets as pcap (LINKTYPE_RAW) into a bounded
//!   in-memory buffer, in two views: the port's own traffic, and the same packets on the far side
//!   of the fabric (translated by NAT). The caller writes the bytes out with
//!   [`Capture::write_pending`] when it likes (a full buffer counts drops, never grows).
//!
//! This module owns no thread, clock or file: it must not reach into the dataplane beyond
//! `Fabric::handle` and the compiled tables' port names.
//!
//! # Wiring into an I/O shell (`vpcd up`)
//!
//! The shell owns one [`Observer`] beside its `Fabric` (same thread, same `now`):
//!
//! ```text
//! start     epoch = SystemTime::now().duration_since(UNIX_EPOCH)   // wall time of the shell's Instant::ZERO
//!           obs = Observer::new()
//!           --flow-log T:  obs.set_flow_log(FlowLog::new(fabric.tables(),
//!                              FlowLogConfig { epoch, seed: <random>, window, ..Default::default() }));
//!                          out = open_flow_log(T)?            // "-" = stdout
//!           --capture E=F: (e, f) = parse_capture_arg(arg)?; port = tables.port_named(&e)?;
//!                          i = obs.add_capture(Capture::new(port, CaptureConfig { epoch, ..Default::default() }));
//!                          files[i] = CaptureFiles::create(&f)?   // F and F.nat.pcap
//! per packet   verdict = obs.handle(&mut fabric, now, ingress, buf, len)   // replaces fabric.handle(...)
//!              (obs.handle_meta(.., meta) where the shell calls fabric.handle_meta)
//! each wake-up deadline = min(fabric.poll_timeout(), obs.poll_timeout(), …)
//!              if obs.poll_timeout() <= now: obs.handle_timeout(now);
//!                  obs.drain_flow_records(&mut records); out.write(&records)?; records.clear()
//!              for captures with pending_bytes() > ~1 MiB (or every ~100 ms):
//!                  files[i].write(obs.capture_mut(i))?
//! table swap   obs.set_tables(&new_tables)                    // after fabric.swap_tables (port names)
//! shutdown     obs.flush_all(now); drain + out.write(&records); files[i].write(..) for every capture
//! ```
//!
//! `handle` does no I/O and does not allocate; `out.write` and `files[i].write` do I/O and may be
//! moved to another thread (drain records into a `Vec` and send it; `Capture::write_pending` into
//! a `Vec<u8>` and send that).

mod files;
mod flowlog;
mod jsonl;
mod pcap;

use std::net::Ipv4Addr;

pub use files::{CaptureFiles, open_flow_log, parse_capture_arg};
pub use flowlog::{
    Action, DEFAULT_MAX_FLOWS, DEFAULT_WINDOW, Direction, FLOW_LOG_VERSION, FlowLog, FlowLogConfig,
    FlowRecord, LogStatus, RejectReason,
};
pub use jsonl::FlowLogWriter;
pub use pcap::{
    Capture, CaptureConfig, DEFAULT_CAPTURE_BUFFER, LINKTYPE_RAW, View, nat_capture_path,
};

use crate::dataplane::packet::{Ipv4Packet, Transport};
use crate::dataplane::{Fabric, PacketMeta, Verdict};
use crate::tables::{PortId, Tables};
use crate::time::Instant;

/// The largest packet a capture copies before the fabric rewrites it, and the largest segment it
/// cuts from a superpacket (the IPv4 maximum).
const MAX_PACKET: usize = 65_535;

pub use crate::dataplane::packet::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// What a flow log reads from an IPv4 packet: addresses, protocol, ports or ICMP type/code, TCP
/// flags and length, taken from the dataplane's packet view ([`Ipv4Packet`]). A packet that is
/// not IPv4 or is shorter than its header gives `None`; nothing panics whatever the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketFacts {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// TCP/UDP ports; 0 for other protocols and for non-first fragments.
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP `(type, code)`, for ICMP packets with their header.
    pub icmp: Option<(u8, u8)>,
    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20…).
    pub tcp_flags: u8,
    /// The packet's length in bytes (the IP total length, or what the buffer holds if shorter).
    pub len: u32,
    /// The packets it is on the wire: 1, or the segments of a superpacket
    /// ([`PacketMeta::segments`]).
    pub segments: u32,
    /// The bytes (IP lengths) of those packets: `len`, plus for a superpacket the headers each
    /// segment after the first repeats.
    pub wire_bytes: u64,
}

impl PacketFacts {
    /// Reads the facts from `packet` (the packet's bytes, nothing after them), one ordinary
    /// packet.
    pub fn parse(packet: &[u8]) -> Option<PacketFacts> {
        PacketFacts::parse_with(packet, PacketMeta::COMPLETE)
    }

    /// [`PacketFacts::parse`] of a packet with offload metadata: a superpacket's facts count the
    /// segments it stands for ([`PacketFacts::segments`], [`PacketFacts::wire_bytes`]), as a
    /// capture of the wire would. Metadata that does not fit the packet (which the fabric drops
    /// as `bad_offload`) is believed for the count: it is what the sender said it sent.
    pub fn parse_with(packet: &[u8], meta: PacketMeta) -> Option<PacketFacts> {
        let view = Ipv4Packet::new_header_checked(packet).ok()?;
        let s = view.summary();
        // A total length below the header length is not believed: count what arrived.
        let len = if view.total_len() >= s.header_len {
            s.len as usize
        } else {
            packet.len()
        };
        let mut facts = PacketFacts {
            src: s.src,
            dst: s.dst,
            proto: s.proto,
            src_port: 0,
            dst_port: 0,
            icmp: None,
            tcp_flags: 0,
            len: len as u32,
            segments: 1,
            wire_bytes: len as u64,
        };
        if let Some(g) = meta.gso {
            let n = meta.segments(len);
            facts.segments = u32::try_from(n).unwrap_or(u32::MAX);
            // Every segment after the first repeats the headers.
            facts.wire_bytes += (n as u64 - 1) * u64::from(g.header_len);
        }
        match s.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => (facts.src_port, facts.dst_port, facts.tcp_flags) = (sport, dport, flags),
            Transport::Udp { sport, dport } => (facts.src_port, facts.dst_port) = (sport, dport),
            Transport::Icmp {
                icmp_type, code, ..
            } => facts.icmp = Some((icmp_type, code)),
            Transport::Other | Transport::Opaque => {}
        }
        Some(facts)
    }
}

/// The wrapper an I/O shell puts around [`Fabric::handle`]: an optional flow log and any number of
/// port captures. With neither, [`Observer::handle`] is `fabric.handle` plus two branches.
#[derive(Debug, Default)]
pub struct Observer {
    flow_log: Option<FlowLog>,
    captures: Vec<Capture>,
    /// The packet as it was before the fabric rewrote it, for the captures (allocated once, when
    /// the first capture is added).
    before: Vec<u8>,
}

impl Observer {
    pub fn new() -> Observer {
        Observer::default()
    }

    /// Turns the flow log on (replacing an earlier one, whose undrained records are lost: call
    /// [`Observer::flush_all`] and drain first).
    pub fn set_flow_log(&mut self, log: FlowLog) {
        self.flow_log = Some(log);
    }

    /// Turns the flow log off and hands it back (flush and drain it to keep its records).
    pub fn take_flow_log(&mut self) -> Option<FlowLog> {
        self.flow_log.take()
    }

    pub fn flow_log(&self) -> Option<&FlowLog> {
        self.flow_log.as_ref()
    }

    pub fn flow_log_mut(&mut self) -> Option<&mut FlowLog> {
        self.flow_log.as_mut()
    }

    /// Adds a capture; returns its index for [`Observer::capture_mut`].
    pub fn add_capture(&mut self, capture: Capture) -> usize {
        if self.before.is_empty() {
            self.before = vec![0; MAX_PACKET];
        }
        self.captures.push(capture);
        self.captures.len() - 1
    }

    /// Removes capture `index` and hands it back (later captures move down by one).
    pub fn remove_capture(&mut self, index: usize) -> Option<Capture> {
        (index < self.captures.len()).then(|| self.captures.remove(index))
    }

    pub fn captures(&self) -> &[Capture] {
        &self.captures
    }

    pub fn capture_mut(&mut self, index: usize) -> Option<&mut Capture> {
        self.captures.get_mut(index)
    }

    pub fn captures_mut(&mut self) -> &mut [Capture] {
        &mut self.captures
    }

    /// Handles one packet through `fabric`, observing it: use it exactly where the shell would
    /// call [`Fabric::handle`] (same arguments, same verdict). Does not allocate, lock or do I/O.
    pub fn handle(
        &mut self,
        fabric: &mut Fabric,
        now: Instant,
        ingress: PortId,
        buf: &mut [u8],
        len: usize,
    ) -> Verdict {
        self.handle_meta(fabric, now, ingress, buf, len, PacketMeta::COMPLETE)
    }

    /// [`Observer::handle`] for a packet with offload metadata ([`Fabric::handle_meta`]). A
    /// superpacket is observed as the packets it stands for on the wire: the flow log counts its
    /// segments and their bytes ([`PacketFacts::parse_with`]), a capture records each segment
    /// with complete checksums ([`Capture::record`]).
    pub fn handle_meta(
        &mut self,
        fabric: &mut Fabric,
        now: Instant,
        ingress: PortId,
        buf: &mut [u8],
        len: usize,
        meta: PacketMeta,
    ) -> Verdict {
        let sent = &buf[..len.min(buf.len())];
        let facts = self
            .flow_log
            .as_ref()
            .and_then(|_| PacketFacts::parse_with(sent, meta));
        let kept = if self.captures.is_empty() {
            0
        } else {
            let n = sent.len().min(self.before.len());
            self.before[..n].copy_from_slice(&sent[..n]);
            n
        };
        let verdict = fabric.handle_meta(now, ingress, buf, len, meta);
        if let Some(log) = &mut self.flow_log {
            log.record(now, ingress, facts, verdict, buf);
        }
        for c in &mut self.captures {
            c.record(now, ingress, &self.before[..kept], meta, verdict, buf);
        }
        verdict
    }

    /// When [`Observer::handle_timeout`] must run next (the flow log's window end), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flow_log.as_ref().and_then(FlowLog::poll_timeout)
    }

    /// Closes the flow log's window if it has ended; then drain the records.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(log) = &mut self.flow_log {
            log.handle_timeout(now);
        }
    }

    /// Moves every finished flow-log record into `out`.
    pub fn drain_flow_records(&mut self, out: &mut Vec<FlowRecord>) {
        if let Some(log) = &mut self.flow_log {
            log.drain_into(out);
        }
    }

    /// Closes the current flow-log window now (clean shutdown): every counted packet is then in a
    /// finished record.
    pub fn flush_all(&mut self, now: Instant) {
        if let Some(log) = &mut self.flow_log {
            log.flush_all(now);
        }
    }

    /// Picks up new port names after a table swap.
    pub fn set_tables(&mut self, tables: &Tables) {
        if let Some(log) = &mut self.flow_log {
            log.set_tables(tables);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::checksum;
    use crate::dataplane::offload::{
        Csum, Gso, GsoKind, Segmenter, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET,
    };
    use crate::dataplane::packet::TCP_ACK;

    /// A superpacket as a TUN device with offload hands it over (TSO / USO): IPv4 from `from`
    /// to `to` (address, port) with `payload` bytes in segments of `mss`; TCP (a 32-byte header
    /// with NOP options, ACK and `flags`) or UDP; the transport checksum partial (the
    /// pseudo-header sum over the whole length), as the kernel leaves it.
    pub(super) fn superpacket(
        proto: u8,
        from: ([u8; 4], u16),
        to: ([u8; 4], u16),
        flags: u8,
        payload: usize,
        mss: u16,
    ) -> (Vec<u8>, PacketMeta) {
        let (l4_header, kind, offset) = if proto == PROTO_TCP {
            (32, GsoKind::TcpV4, TCP_CHECKSUM_OFFSET)
        } else {
            (8, GsoKind::Udp, UDP_CHECKSUM_OFFSET)
        };
        let headers = 20 + l4_header;
        let total = headers + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40; // DF, as TCP sends
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&from.0);
        p[16..20].copy_from_slice(&to.0);
        p[20..22].copy_from_slice(&from.1.to_be_bytes());
        p[22..24].copy_from_slice(&to.1.to_be_bytes());
        if proto == PROTO_TCP {
            p[24..28].copy_from_slice(&1_000_000u32.to_be_bytes());
            p[28..32].copy_from_slice(&7u32.to_be_bytes());
            p[32] = ((l4_header / 4) as u8) << 4;
            p[33] = TCP_ACK | flags;
            p[34..36].copy_from_slice(&502u16.to_be_bytes());
            p[40..headers].fill(1); // NOP options
        } else {
            p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
        }
        for (i, b) in p[headers..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        let sum = checksum::pseudo_header(
            Ipv4Addr::from(from.0),
            Ipv4Addr::from(to.0),
            proto,
            (total - 20) as u16,
        );
        let at = 20 + usize::from(offset);
        p[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
        let meta = PacketMeta {
            gso: Some(Gso {
                kind,
                segment_size: mss,
                header_len: headers as u16,
            }),
            csum: Csum::Partial { start: 20, offset },
        };
        (p, meta)
    }

    /// A TCP superpacket from 10.0.1.10:40000 to 10.0.1.20:80 (52 bytes of headers).
    pub(super) fn tcp_superpacket(payload: usize, mss: u16) -> (Vec<u8>, PacketMeta) {
        superpacket(
            PROTO_TCP,
            ([10, 0, 1, 10], 40000),
            ([10, 0, 1, 20], 80),
            0,
            payload,
            mss,
        )
    }

    /// A UDP superpacket from 10.0.1.10:5000 to 10.0.1.20:53 (28 bytes of headers).
    pub(super) fn udp_superpacket(payload: usize, mss: u16) -> (Vec<u8>, PacketMeta) {
        superpacket(
            PROTO_UDP,
            ([10, 0, 1, 10], 5000),
            ([10, 0, 1, 20], 53),
            0,
            payload,
            mss,
        )
    }

    /// The packets `pkt` is on the wire, cut by the core's segmenter.
    pub(super) fn wire_segments(pkt: &[u8], meta: PacketMeta) -> Vec<Vec<u8>> {
        let mut s = Segmenter::new(pkt, meta).expect("a valid superpacket");
        let mut buf = vec![0u8; s.max_len()];
        let mut out = Vec::new();
        while let Some(n) = s.next_into(&mut buf).expect("room for a segment") {
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// Whether the IP header checksum and the TCP or UDP checksum of `pkt` are correct.
    pub(super) fn checksums_correct(pkt: &[u8]) -> bool {
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        let l4 = &pkt[ihl..];
        let ph = checksum::pseudo_header(src, dst, pkt[9], l4.len() as u16);
        checksum::checksum(&pkt[..ihl]) == 0 && checksum::sum(l4, ph) == 0xffff
    }

    #[test]
    fn facts_of_a_superpacket_count_its_segments_with_their_headers() {
        let (p, meta) = tcp_superpacket(4000, 1448);
        let f = PacketFacts::parse_with(&p, meta).expect("a valid header");
        let wire = wire_segments(&p, meta);
        assert_eq!((f.len, f.segments), (4052, 3));
        assert_eq!(f.segments as usize, wire.len());
        assert_eq!(
            f.wire_bytes,
            wire.iter().map(|s| s.len() as u64).sum::<u64>()
        );
        assert_eq!(f.wire_bytes, 4052 + 2 * 52);
        let (p, meta) = udp_superpacket(3000, 1200);
        let f = PacketFacts::parse_with(&p, meta).expect("a valid header");
        assert_eq!((f.len, f.segments, f.wire_bytes), (3028, 3, 3028 + 2 * 28));
        // The same bytes without GSO are one packet.
        let f = PacketFacts::parse(&p).expect("a valid header");
        assert_eq!((f.len, f.segments, f.wire_bytes), (3028, 1, 3028));
    }

    #[test]
    fn the_observer_can_move_to_the_dataplane_thread() {
        fn send<T: Send + 'static>() {}
        send::<Observer>();
        send::<super::FlowLogWriter<Box<dyn std::io::Write + Send>>>();
        send::<super::CaptureFiles>();
    }

    #[test]
    fn facts_of_a_tcp_syn() {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 0, 1, 10]);
        p[16..20].copy_from_slice(&[198, 51, 100, 10]);
        p[20..22].copy_from_slice(&49152u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[33] = 0x02;
        let f = PacketFacts::parse(&p).expect("a valid header");
        assert_eq!(f.src, Ipv4Addr::new(10, 0, 1, 10));
        assert_eq!(f.dst, Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(
            (f.src_port, f.dst_port, f.tcp_flags, f.len),
            (49152, 80, 2, 40)
        );
        // A later fragment has no ports.
        p[6..8].copy_from_slice(&100u16.to_be_bytes());
        let f = PacketFacts::parse(&p).expect("a valid header");
        assert_eq!((f.src_port, f.dst_port), (0, 0));
    }

    #[test]
    fn bad_input_gives_none_or_partial_facts_never_a_panic() {
        assert_eq!(PacketFacts::parse(&[]), None);
        assert_eq!(PacketFacts::parse(&[0x60; 40]), None);
        assert_eq!(PacketFacts::parse(&[0x45; 10]), None);
        assert_eq!(PacketFacts::parse(&[0x4f; 40]), None);
        for n in 0..64 {
            let mut p = vec![0xffu8; n];
            if let Some(b) = p.first_mut() {
                *b = 0x45;
            }
            let _ = PacketFacts::parse(&p);
        }
    }
}
