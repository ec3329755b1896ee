//! Packet capture through the in-process simulator (issue 5, item 4): a capture of a function's
//! port, written as pcap, is read back by `tcpdump -r` and `tshark -r`; the port's file shows the
//! untranslated headers, the `.nat.pcap` file the translated ones. Superpackets fed to the
//! observer as a TUN port with offload hands them in are read back as their wire segments
//! (issue 21, item 5).
//!
//! Needs `tcpdump` and `tshark` (installed by `.ci/run`). Without them the tests print why and
//! pass, except under `CI=true`, where they fail.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use etherparse::PacketBuilder;
use vpcd::dataplane::offload::{
    Csum, Gso, GsoKind, PacketMeta, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET,
};
use vpcd::dataplane::packet::{PROTO_TCP, PROTO_UDP};
use vpcd::dataplane::{Fabric, MIN_BUFFER, Verdict, checksum};
use vpcd::observe::{Capture, CaptureConfig, Observer, View};
use vpcd::sim::{Observed, Simulation};
use vpcd::time::Instant;

fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`{name}` is required under CI (.ci/run installs it)"
        );
        eprintln!("skipped: `{name}` is not installed");
    }
    found
}

fn read_with(cmd: &str, args: &[&str], file: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vpcd-capture-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// fn-a1 calls web through SNAT and pings it; the capture of fn-a1's port is read back.
fn capture_snat_exchange(dir: &Path) -> (PathBuf, PathBuf, Simulation) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml");
    let mut sim = Simulation::load(&path).expect("the quickstart loads");
    let file = dir.join("fn-a1.pcap");
    let nat = sim
        .capture_to_file("tenant-a/fn-a1", &file, CaptureConfig::default())
        .expect("capture files are created");
    assert_eq!(nat, dir.join("fn-a1.nat.pcap"));
    for to in [
        "internet/web:80/tcp",
        "internet/web/icmp",
        "10.0.3.99:80/tcp",
    ] {
        sim.probe("tenant-a/fn-a1", to).expect("a valid probe");
    }
    assert_eq!(
        sim.probe("tenant-a/fn-a1", "internet/web:80/tcp").unwrap(),
        Observed::Allow
    );
    sim.finish_captures().expect("captures are written");
    (file, nat, sim)
}

#[test]
fn tcpdump_reads_the_untranslated_port_view_and_the_translated_nat_view() {
    if !tool("tcpdump") {
        return;
    }
    let dir = scratch("tcpdump");
    let (file, nat, sim) = capture_snat_exchange(&dir);
    let own = read_with("tcpdump", &["-nn", "-r"], &file);
    // As fn-a1 sent it: its private address, before SNAT; and the replies as delivered to it.
    assert!(
        own.contains("IP 10.0.1.10.49152 > 198.51.100.10.80: Flags [S]"),
        "{own}"
    );
    assert!(
        own.contains("IP 198.51.100.10.80 > 10.0.1.10.49152: Flags [S.]"),
        "{own}"
    );
    assert!(
        own.contains("10.0.1.10 > 198.51.100.10: ICMP echo request"),
        "{own}"
    );
    assert!(
        own.contains("198.51.100.10 > 10.0.1.10: ICMP echo reply"),
        "{own}"
    );
    // The dropped SYN (no such host) is in the port's view...
    assert!(own.contains("> 10.0.3.99.80: Flags [S]"), "{own}");
    assert!(
        !own.contains("203.0.113.10"),
        "no translated header here:\n{own}"
    );
    // ...and on the far side the same exchange carries the EIP.
    let far = read_with("tcpdump", &["-nn", "-r"], &nat);
    assert!(far.contains("IP 203.0.113.10."), "{far}");
    assert!(far.contains("> 198.51.100.10.80: Flags [S]"), "{far}");
    assert!(far.contains("IP 198.51.100.10.80 > 203.0.113.10."), "{far}");
    assert!(
        far.contains("203.0.113.10 > 198.51.100.10: ICMP echo request"),
        "{far}"
    );
    assert!(
        !far.contains("10.0.1.10"),
        "no private address after SNAT:\n{far}"
    );
    assert!(
        !far.contains("10.0.3.99"),
        "a dropped packet never crossed:\n{far}"
    );
    let capture = &sim.observer().captures()[0];
    assert_eq!(own.lines().count() as u64, capture.packets(View::Port));
    assert_eq!(far.lines().count() as u64, capture.packets(View::Nat));
    assert_eq!(capture.dropped(View::Port), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tshark_reads_both_files_with_the_translated_and_untranslated_headers() {
    if !tool("tshark") {
        return;
    }
    let dir = scratch("tshark");
    let (file, nat, _sim) = capture_snat_exchange(&dir);
    let fields = [
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
        "-r",
    ];
    let own = read_with("tshark", &fields, &file);
    let far = read_with("tshark", &fields, &nat);
    let first_syn = |text: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split('\t').nth(3) == Some("80"))
            .unwrap_or_else(|| panic!("no packet to port 80 in\n{text}"))
            .split('\t')
            .map(str::to_string)
            .collect()
    };
    let before = first_syn(&own);
    let after = first_syn(&far);
    assert_eq!(before[..2], ["10.0.1.10", "198.51.100.10"], "{own}");
    assert_eq!(after[..2], ["203.0.113.10", "198.51.100.10"], "{far}");
    // The quickstart's gateway preserves the port (RFC 4787 REQ-3).
    assert_eq!(before[2], after[2]);
    // The plain summary view works too (what a user types first).
    let summary = read_with("tshark", &["-r"], &file);
    assert!(
        summary.contains("10.0.1.10") && summary.contains("198.51.100.10"),
        "{summary}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A packet as a TUN port with offload hands it in: built by etherparse from `from` to `to`
/// (TCP with `ack` set and sequence `seq`, or UDP), its transport checksum left partial (the
/// pseudo-header sum, `VIRTIO_NET_HDR_F_NEEDS_CSUM`), and, when `mss` is given, GSO metadata
/// that makes it a superpacket of segments of `mss` bytes.
fn offloaded(
    tcp: Option<u32>,
    from: ([u8; 4], u16),
    to: ([u8; 4], u16),
    payload: usize,
    mss: Option<u16>,
) -> (Vec<u8>, PacketMeta) {
    let data: Vec<u8> = (0..payload).map(|i| (i * 13) as u8).collect();
    let b = PacketBuilder::ipv4(from.0, to.0, 64);
    let mut p = Vec::new();
    let (proto, offset, kind, l4) = match tcp {
        Some(seq) => {
            b.tcp(from.1, to.1, seq, 64240)
                .ack(1)
                .write(&mut p, &data)
                .unwrap();
            (PROTO_TCP, TCP_CHECKSUM_OFFSET, GsoKind::TcpV4, 20)
        }
        None => {
            b.udp(from.1, to.1).write(&mut p, &data).unwrap();
            (PROTO_UDP, UDP_CHECKSUM_OFFSET, GsoKind::Udp, 8)
        }
    };
    let sum = checksum::pseudo_header(
        Ipv4Addr::from(from.0),
        Ipv4Addr::from(to.0),
        proto,
        (p.len() - 20) as u16,
    );
    let at = 20 + usize::from(offset);
    p[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
    let meta = PacketMeta {
        gso: mss.map(|segment_size| Gso {
            kind,
            segment_size,
            header_len: 20 + l4,
        }),
        csum: Csum::Partial { start: 20, offset },
    };
    (p, meta)
}

/// The IP lengths a packet of `payload` bytes behind `headers` bytes of headers is on the wire
/// in segments of `mss`.
fn segment_lengths(headers: usize, payload: usize, mss: usize) -> Vec<usize> {
    let full = payload / mss;
    let mut v = vec![headers + mss; full];
    if !payload.is_multiple_of(mss) {
        v.push(headers + payload % mss);
    }
    v
}

/// Issue 21, item 5: a capture of fn-a1's port while it sends a TCP and a UDP superpacket through
/// SNAT (as a TUN port with TSO/USO hands them in, checksums partial), an ordinary UDP packet with
/// a partial checksum, and receives a TCP superpacket back: tshark with checksum validation on
/// reads every wire segment, with its length, and no checksum error, in both views.
#[test]
fn tshark_reads_superpackets_as_their_wire_segments_with_correct_checksums() {
    if !tool("tshark") {
        return;
    }
    const FN_A1: [u8; 4] = [10, 0, 1, 10];
    const WEB: [u8; 4] = [198, 51, 100, 10];
    const EIP: [u8; 4] = [203, 0, 113, 10];
    let dir = scratch("superpackets");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml");
    let plan = vpcd::topology::load(&path).expect("the quickstart loads");
    let tables = Arc::new(vpcd::topology::compile::tables(&plan));
    let (fn_a1, web) = (
        tables.port_named("tenant-a/fn-a1").unwrap(),
        tables.port_named("internet/web").unwrap(),
    );
    let mut fabric = Fabric::new(tables.clone());
    let mut obs = Observer::new();
    obs.add_capture(Capture::new(fn_a1, CaptureConfig::default()));
    let mut buf = vec![0u8; 65_535 + MIN_BUFFER];
    let mut send = |from, pkt: &[u8], meta: PacketMeta| -> Vec<u8> {
        buf[..pkt.len()].copy_from_slice(pkt);
        let v = obs.handle_meta(
            &mut fabric,
            Instant::from_secs(1),
            from,
            &mut buf,
            pkt.len(),
            meta,
        );
        let Verdict::Forward { len, .. } = v else {
            panic!("not forwarded: {v:?}");
        };
        buf[..len].to_vec()
    };

    let mut syn = Vec::new();
    PacketBuilder::ipv4(FN_A1, WEB, 64)
        .tcp(49152, 80, 1000, 64240)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    let out = send(fn_a1, &syn, PacketMeta::COMPLETE);
    assert_eq!(out[12..16], EIP, "SNAT to the gateway's EIP");
    let eip_port = u16::from_be_bytes([out[20], out[21]]);
    let (tcp_out, meta) = offloaded(Some(1001), (FN_A1, 49152), (WEB, 80), 10_000, Some(1448));
    send(fn_a1, &tcp_out, meta);
    let (udp_out, meta) = offloaded(None, (FN_A1, 5353), (WEB, 53), 3000, Some(1200));
    send(fn_a1, &udp_out, meta);
    let (udp_one, meta) = offloaded(None, (FN_A1, 5354), (WEB, 53), 100, None);
    send(fn_a1, &udp_one, meta);
    let (tcp_in, meta) = offloaded(Some(1), (WEB, 80), (EIP, eip_port), 4000, Some(1000));
    let delivered = send(web, &tcp_in, meta);
    assert_eq!(delivered[16..20], FN_A1, "reverse SNAT");

    let file = dir.join("fn-a1.pcap");
    let nat = dir.join("fn-a1.nat.pcap");
    let (mut own, mut far) = (
        std::fs::File::create(&file).unwrap(),
        std::fs::File::create(&nat).unwrap(),
    );
    obs.capture_mut(0)
        .unwrap()
        .write_pending(&mut own, &mut far)
        .expect("the capture is written");
    drop((own, far));

    let mut expected = vec![40];
    expected.extend(segment_lengths(40, 10_000, 1448));
    expected.extend(segment_lengths(28, 3000, 1200));
    expected.push(128);
    expected.extend(segment_lengths(40, 4000, 1000));
    assert_eq!(expected.len(), 1 + 7 + 3 + 1 + 4);
    let checks = [
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    ];
    for f in [&file, &nat] {
        let mut args = checks.to_vec();
        args.extend([
            "-T",
            "fields",
            "-e",
            "ip.len",
            "-e",
            "ip.checksum.status",
            "-e",
            "tcp.checksum.status",
            "-e",
            "udp.checksum.status",
            "-r",
        ]);
        let text = read_with("tshark", &args, f);
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        let lengths: Vec<usize> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        assert_eq!(lengths, expected, "{}:\n{text}", f.display());
        // 1 = Good: the IP checksum and the one transport checksum of each packet.
        for r in &rows {
            assert_eq!(r[1], "1", "{}:\n{text}", f.display());
            assert!(
                (r[2] == "1") != (r[3] == "1") && r[2..].iter().all(|s| s.is_empty() || *s == "1"),
                "{}:\n{text}",
                f.display()
            );
        }
        let mut args = checks.to_vec();
        args.extend([
            "-Y",
            "ip.checksum.status==0 || tcp.checksum.status==0 || udp.checksum.status==0",
            "-r",
        ]);
        let bad = read_with("tshark", &args, f);
        assert!(
            bad.trim().is_empty(),
            "checksum errors in {}:\n{bad}",
            f.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
