//! Superpackets end to end (issue 21, item 6), with real programs in namespaces (root; CI runs
//! them): `iperf3` both ways and a 100 MB `curl` whose sha256 arrives intact, through SNAT, DNAT
//! and a 1:1 EIP; a 1500-byte function and a 9000-byte host exchanging TCP both ways, and a DF
//! ping too big for the function's port answered with "Frag needed"; an in-process (sim) host fed
//! TCP from a netns port acknowledging every byte (smoltcp drops a segment whose checksum is not
//! complete); a capture at that host read by `tshark -o tcp.check_checksum:TRUE` with no bad
//! checksum and no frame above the port's MTU.
//!
//! Every netns TUN port reads superpackets (`IFF_VNET_HDR`, `TUNSETOFFLOAD`), so each test also
//! asks `/metrics` for the proof: `vpcd_tun_rx_superpackets_total` (or, towards the sim host,
//! `vpcd_segmented_superpackets_total`) above 0, and no drop `bad_offload` or `bad_checksum`.
//!
//! The topology is also checked for validity without root.

mod real_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use real_support::{Run, VPCD, capable, metric, random_file, sha256_file, text};

const F1: &str = "10.64.1.10";
const E1: &str = "10.64.9.20";
const GW_EIP: &str = "203.0.113.11";
const E1_EIP: &str = "203.0.113.21";
const WEB: &str = "198.51.100.10";
const JUMBO: &str = "198.51.100.30";
const SINK: &str = "198.51.100.40";
const IPERF_PORT: u16 = 5201;
/// The payload of the 100 MB transfers.
const BIG: u64 = 100 * 1024 * 1024;
/// What a transfer may take (the debug build of vpcd included).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(20);
/// Seconds of each iperf3 run.
const IPERF_SECS: u32 = 2;

/// A function `f1` behind a NAT gateway (SNAT for the VPC; DNAT of the gateway's EIP tcp:80 to
/// f1:8080 and tcp:5201 to f1:5201), an instance `e1` with a 1:1 EIP and MTU 1500, and three
/// public hosts: `web` (netns, MTU 1500), `jumbo` (netns, MTU 9000) and `sink` (in process,
/// serving tcp:80).
fn topology() -> String {
    format!(
        r#"
[[vpc]]
name = "o"
cidr = "10.64.0.0/16"
subnet = [
  {{ name = "fn", cidr = "10.64.1.0/24" }},
  {{ name = "public", cidr = "10.64.9.0/24", route_table = "public" }},
]
route_table = [
  {{ name = "main", routes = [ {{ destination = "0.0.0.0/0", target = "nat:egress" }} ] }},
  {{ name = "public", routes = [ {{ destination = "0.0.0.0/0", target = "internet" }} ] }},
]
security_group = [ {{ name = "open", ingress = [ {{ protocol = "all", peer = "0.0.0.0/0" }} ] }} ]
instance = [
  {{ name = "f1", subnet = "fn", ip = "{F1}", security_groups = ["open"] }},
  {{ name = "e1", subnet = "public", ip = "{E1}", eip = "direct", mtu = 1500, security_groups = ["open"] }},
]
nat_gateway = [ {{ name = "egress", subnet = "public", eips = ["gw"], snat = [ {{ source = "10.64.0.0/16" }} ], dnat = [
  {{ eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080 }},
  {{ eip = "gw", protocol = "tcp", port = {IPERF_PORT}, instance = "f1", instance_port = {IPERF_PORT} }},
] }} ]

[[eip]]
name = "gw"
address = "{GW_EIP}"

[[eip]]
name = "direct"
address = "{E1_EIP}"

[internet]
cidr = "198.51.100.0/24"
host = [
  {{ name = "web", ip = "{WEB}" }},
  {{ name = "jumbo", ip = "{JUMBO}", mtu = 9000 }},
  {{ name = "sink", ip = "{SINK}", attach = "sim", serve = ["tcp:80"] }},
]
"#
    )
}

/// `vpcd up` of [`topology`] with its API (for `/metrics`) and `extra` options.
fn up(prefix: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--state", "{dir}/state"];
    args.extend_from_slice(extra);
    Run::up_with(prefix, &topology(), &args)
}

#[test]
fn offload_topology_is_valid() {
    let dir = std::env::temp_dir().join(format!("vpcd-real-offload-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("o.toml");
    std::fs::write(&path, topology()).expect("write");
    let out = Command::new(VPCD)
        .arg("check")
        .arg(&path)
        .output()
        .expect("vpcd check");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out));
}

/// No packet was dropped for offload metadata that did not fit, or for a bad IPv4 checksum.
fn assert_no_offload_drops(run: &Run, metrics: &str) {
    for reason in ["bad_offload", "bad_checksum"] {
        let n = metric(metrics, "vpcd_drops_total", &[("reason", reason)]);
        assert_eq!(n, Some(0.0), "{}: drops {reason}:\n{metrics}", run.name);
    }
}

/// The counter `name` of `metrics`, which must be exported.
fn counter(metrics: &str, name: &str) -> f64 {
    metric(metrics, name, &[]).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// Offload was on: the TUN ports read superpackets, and nothing was dropped for them.
fn assert_superpackets_read(run: &Run) {
    let m = run.metrics();
    assert_no_offload_drops(run, &m);
    let read = counter(&m, "vpcd_tun_rx_superpackets_total");
    println!(
        "{}: {read} superpackets read ({} segments), {} written",
        run.name,
        counter(&m, "vpcd_tun_rx_segments_total"),
        counter(&m, "vpcd_tun_tx_superpackets_total")
    );
    assert!(
        read > 0.0,
        "{}: no superpacket read from a TUN port: offload is off",
        run.name
    );
}

/// Starts a persistent `iperf3` server on `addr` in `endpoint` (stopped with the run).
fn iperf3_server(run: &mut Run, endpoint: &str, addr: &str) {
    let port = IPERF_PORT.to_string();
    run.spawn(
        endpoint,
        &["iperf3", "-s", "-B", addr, "-p", &port],
        &format!("iperf3-{}.log", endpoint.replace('/', "-")),
    );
}

/// iperf3 from `client` to `server` (an address `client` reaches), both directions.
fn iperf3_both_ways(run: &Run, client: &str, server: &str, path: &str) {
    for reverse in [false, true] {
        let (mbits, out) = run.iperf3(client, server, IPERF_PORT, reverse, IPERF_SECS);
        let dir = if reverse {
            "server -> client"
        } else {
            "client -> server"
        };
        println!("iperf3 {client} -> {server} through {path}, {dir}: {mbits:.0} Mbit/s");
        assert!(mbits > 1.0, "{out}");
    }
}

/// Serves a fresh random file of `len` bytes as `http://ADDR:PORT/big.bin` from `endpoint`;
/// returns its sha256.
fn serve_payload(run: &mut Run, endpoint: &str, addr: &str, port: u16, len: u64) -> String {
    run.http_server(endpoint, addr, port, "payload below\n");
    let path = run.www_dir(endpoint, port).join("big.bin");
    random_file(&path, len);
    sha256_file(&path)
}

/// `curl` of `url` from `client` arrives with the sha256 `want`.
fn fetch_intact(run: &Run, client: &str, url: &str, want: &str) {
    let started = std::time::Instant::now();
    let got = run
        .curl_sha256(client, url, TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("curl {url} from {client}: {e}"));
    println!("curl {url} from {client}: {:?}", started.elapsed());
    assert_eq!(got, want, "sha256 of {url} fetched by {client}");
}

/// One path through a translation: the server's endpoint and address, its HTTP port, the client
/// and the address and HTTP port it reaches the server at.
struct Route {
    what: &'static str,
    server: (&'static str, &'static str, u16),
    client: (&'static str, &'static str, u16),
}

/// `iperf3` both ways and a 100 MB `curl` intact along `path`, then the proof that offload
/// was on.
fn transfers_with_offload(prefix: &str, path: Route) {
    let (server, server_addr, server_http) = path.server;
    let (client, target, target_http) = path.client;
    let mut run = up(prefix, &[]);
    iperf3_server(&mut run, server, server_addr);
    let sha = serve_payload(&mut run, server, server_addr, server_http, BIG);
    iperf3_both_ways(&run, client, target, path.what);
    let url = format!("http://{target}:{target_http}/big.bin");
    fetch_intact(&run, client, &url, &sha);
    assert_superpackets_read(&run);
    run.stop();
}

const TRANSFER_TOOLS: &[&str] = &["iperf3", "curl", "python3", "bash"];

#[test]
fn snat_iperf3_both_ways_and_a_100mb_curl_intact_with_offload() {
    if capable("offload snat", TRANSFER_TOOLS) {
        transfers_with_offload(
            "vof-snat",
            Route {
                what: "SNAT",
                server: ("internet/web", WEB, 80),
                client: ("o/f1", WEB, 80),
            },
        );
    }
}

#[test]
fn dnat_iperf3_both_ways_and_a_100mb_curl_intact_with_offload() {
    if capable("offload dnat", TRANSFER_TOOLS) {
        transfers_with_offload(
            "vof-dnat",
            Route {
                what: "DNAT",
                server: ("o/f1", F1, 8080),
                client: ("internet/web", GW_EIP, 80),
            },
        );
    }
}

#[test]
fn eip_iperf3_both_ways_and_a_100mb_curl_intact_with_offload() {
    if capable("offload eip", TRANSFER_TOOLS) {
        transfers_with_offload(
            "vof-eip",
            Route {
                what: "a 1:1 EIP",
                server: ("o/e1", E1, 8080),
                client: ("internet/web", E1_EIP, 8080),
            },
        );
    }
}

/// The MTU of `vpcd0` inside `endpoint` (`ip link`: `/sys` there is the host's).
fn link_mtu(run: &Run, endpoint: &str) -> String {
    let out = run.exec(endpoint, &["ip", "-o", "link", "show", "vpcd0"]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mtu");
    words
        .next()
        .unwrap_or_else(|| panic!("no mtu in {line}"))
        .to_string()
}

/// `ping -M do` (DF) of `size` payload bytes from `endpoint` to `to`.
fn df_ping(run: &Run, endpoint: &str, to: &str, size: u32) -> std::process::Output {
    let size = size.to_string();
    run.exec(
        endpoint,
        &[
            "ping", "-c", "2", "-i", "0.3", "-W", "2", "-M", "do", "-s", &size, to,
        ],
    )
}

#[test]
fn a_1500_byte_function_and_a_9000_byte_host_exchange_tcp_both_ways_intact() {
    if !capable("offload mtu tcp", &["curl", "python3", "bash"]) {
        return;
    }
    let mut run = up("vof-mtu", &[]);
    assert_eq!(link_mtu(&run, "o/e1"), "1500");
    assert_eq!(link_mtu(&run, "internet/jumbo"), "9000");
    const LEN: u64 = 32 * 1024 * 1024;
    // The 9000-byte side sends (its superpackets cut to what the 1500-byte port takes)...
    let sha = serve_payload(&mut run, "internet/jumbo", JUMBO, 80, LEN);
    fetch_intact(&run, "o/e1", &format!("http://{JUMBO}/big.bin"), &sha);
    // ...and receives.
    let sha = serve_payload(&mut run, "o/e1", E1, 8080, LEN);
    fetch_intact(
        &run,
        "internet/jumbo",
        &format!("http://{E1_EIP}:8080/big.bin"),
        &sha,
    );
    assert_no_offload_drops(&run, &run.metrics());
    run.stop();
}

/// A DF ping of 8000 bytes from the 9000-byte host to `to` (behind a 1500-byte port) is
/// answered "Frag needed, MTU 1500"; 1472 bytes (1500 with the headers) still pass.
fn assert_frag_needed(run: &Run, to: &str) {
    let fits = df_ping(run, "internet/jumbo", to, 1472);
    assert!(fits.status.success(), "to {to}: {}", text(&fits));
    let too_big = df_ping(run, "internet/jumbo", to, 8000);
    let all = text(&too_big);
    assert!(!too_big.status.success(), "to {to}: {all}");
    assert!(
        all.contains("Frag needed") && (all.contains("mtu = 1500") || all.contains("mtu=1500")),
        "to {to}: no frag-needed: {all}\ndrops: {:?}",
        metric(&run.metrics(), "vpcd_drops_total", &[("reason", "too_big")])
    );
}

#[test]
fn a_df_packet_larger_than_the_egress_mtu_gets_frag_needed() {
    if !capable("offload mtu df", &["ping"]) {
        return;
    }
    let run = up("vof-df", &[]);
    // On the public segment (no translation) to the 1500-byte host.
    assert_frag_needed(&run, WEB);
    run.stop();
}

/// Through an EIP the fabric translates first and learns the instance's MTU afterwards; its
/// frag-needed must still come from the EIP and quote the sender's header, or `ping -M do`
/// towards the EIP would never hear "Frag needed".
#[test]
fn a_df_packet_larger_than_the_egress_mtu_gets_frag_needed_through_an_eip() {
    if !capable("offload mtu df eip", &["ping"]) {
        return;
    }
    let run = up("vof-dfe", &[]);
    assert_frag_needed(&run, E1_EIP);
    run.stop();
}

#[test]
fn a_tcp_segment_larger_than_the_egress_mtu_gets_frag_needed_and_the_transfer_adapts() {
    if !capable("offload mtu tcp df", &["curl", "python3", "bash"]) {
        return;
    }
    let mut run = up("vof-pmtu", &[]);
    // The 1500-byte host advertises an MSS of 8960 towards the 9000-byte one, so the latter
    // sends DF segments of up to 9000 bytes (superpackets with such segments under offload):
    // each is answered "Frag needed, MTU 1500" and the sender's TCP steps down.
    let route = run.exec(
        "internet/web",
        &[
            "ip",
            "route",
            "add",
            &format!("{JUMBO}/32"),
            "dev",
            "vpcd0",
            "advmss",
            "8960",
        ],
    );
    assert!(route.status.success(), "{}", text(&route));
    let sha = serve_payload(&mut run, "internet/jumbo", JUMBO, 80, 8 * 1024 * 1024);
    fetch_intact(
        &run,
        "internet/web",
        &format!("http://{JUMBO}/big.bin"),
        &sha,
    );
    // The sender learnt the path MTU from the fabric's error.
    let cached = run.exec("internet/jumbo", &["ip", "route", "get", WEB]);
    let all = text(&cached);
    assert!(all.contains("mtu 1500"), "no path MTU learnt: {all}");
    assert_no_offload_drops(&run, &run.metrics());
    run.stop();
}

/// Bytes sent to the sim host.
const TO_SINK: usize = 4 * 1024 * 1024;

/// Sends [`TO_SINK`] random bytes from `o/f1` (through SNAT) to the sim host's tcp:80 and waits
/// until the kernel's send queue is empty: every byte acknowledged by smoltcp, which drops
/// segments with a wrong checksum (so a partial checksum left incomplete stalls the transfer).
fn feed_the_sink(run: &Run) {
    let script = format!(
        "import fcntl, os, socket, struct, termios, time\n\
         s = socket.create_connection(({SINK:?}, 80), timeout=10)\n\
         s.sendall(os.urandom({TO_SINK}))\n\
         deadline = time.time() + 15\n\
         while True:\n\
         \x20   q = struct.unpack('i', fcntl.ioctl(s, termios.TIOCOUTQ, b'\\0' * 4))[0]\n\
         \x20   if q == 0:\n\
         \x20       break\n\
         \x20   if time.time() > deadline:\n\
         \x20       raise SystemExit(f'{{q}} bytes never acknowledged')\n\
         \x20   time.sleep(0.01)\n\
         print('acknowledged', {TO_SINK})\n"
    );
    let started = std::time::Instant::now();
    let out = run.exec_timeout("o/f1", &["python3", "-c", &script], TRANSFER_TIMEOUT);
    println!(
        "{}: {TO_SINK} bytes to the sim host in {:?}",
        run.name,
        started.elapsed()
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("acknowledged"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_sim_host_fed_from_an_offload_port_acknowledges_every_byte() {
    if !capable("offload sim", &["python3"]) {
        return;
    }
    let run = up("vof-sim", &[]);
    feed_the_sink(&run);
    let m = run.metrics();
    assert_no_offload_drops(&run, &m);
    let cut = counter(&m, "vpcd_segmented_superpackets_total");
    println!(
        "{}: {cut} superpackets segmented into {}",
        run.name,
        counter(&m, "vpcd_segmented_segments_total")
    );
    assert!(
        cut > 0.0,
        "{}: no superpacket was segmented for the sim host: offload is off",
        run.name
    );
    run.stop();
}

/// `(frame length, IPv4 checksum status, TCP checksum status)` of each TCP frame `tshark` reads
/// from `file`, with checksum validation on (status 1 = good, 0 = bad, 2 = unverified).
fn tshark_tcp_frames(file: &Path) -> Vec<(u32, String, String)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args([
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
        ])
        .args(["-Y", "tcp", "-T", "fields", "-e", "frame.len"])
        .args(["-e", "ip.checksum.status", "-e", "tcp.checksum.status"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        file.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split('\t').collect();
            let len = w[0]
                .parse()
                .unwrap_or_else(|_| panic!("frame.len in {l:?}"));
            let status = |i: usize| w.get(i).unwrap_or(&"").to_string();
            (len, status(1), status(2))
        })
        .collect()
}

#[test]
fn a_capture_after_segmentation_passes_tshark_checksum_validation() {
    if !capable("offload capture", &["python3", "tshark"]) {
        return;
    }
    let mut run = up("vof-cap", &["--capture", "internet/sink={dir}/sink.pcap"]);
    let pcap = run.dir.join("sink.pcap");
    feed_the_sink(&run);
    run.stop_in_place();
    let frames = tshark_tcp_frames(&pcap);
    // Every byte went there in segments of at most 1460 bytes, and was acknowledged.
    assert!(
        frames.len() > TO_SINK / 1460,
        "{} TCP frames in {}",
        frames.len(),
        pcap.display()
    );
    let bad: Vec<_> = frames
        .iter()
        .filter(|(len, ip, tcp)| *len > 1500 || ip != "1" || tcp != "1")
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} frames above the MTU of 1500 or without good checksums \
         (length, IPv4 status, TCP status; 1 = good): {:?}",
        bad.len(),
        frames.len(),
        &bad[..bad.len().min(20)]
    );
}

/// Datagrams of the UDP test: how many, and their size.
const DATAGRAMS: u32 = 20_000;
const DATAGRAM_LEN: usize = 256;

/// The UDP test's receiver at `web`: counts what arrives within a few seconds and checks every
/// datagram (its length, and the payload its sequence number implies); prints `received N` or
/// exits non-zero naming the first bad one.
fn udp_receiver() -> String {
    format!(
        "import socket, struct, sys, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)\n\
         s.bind(({WEB:?}, 9999))\n\
         print('listening', flush=True)\n\
         s.settimeout(3)\n\
         seen = set()\n\
         while True:\n\
         \x20   try:\n\
         \x20       d = s.recv(65535)\n\
         \x20   except socket.timeout:\n\
         \x20       break\n\
         \x20   n = struct.unpack('!I', d[:4])[0]\n\
         \x20   want = d[:4] + bytes((n + k) % 251 for k in range({DATAGRAM_LEN} - 4))\n\
         \x20   if d != want or n in seen:\n\
         \x20       sys.exit(f'datagram {{n}} damaged or twice: {{len(d)}} bytes')\n\
         \x20   seen.add(n)\n\
         print('received', len(seen), flush=True)\n"
    )
}

/// A function sending small UDP datagrams as fast as it can (one per `send`, as applications
/// do): vpcd reads them in batches and merges each batch's datagrams into USO superpackets for
/// the host's offload port; the host's kernel cuts them again and every datagram arrives intact.
#[test]
fn small_udp_datagrams_are_coalesced_into_superpackets_and_arrive_intact() {
    if !capable("offload udp coalescing", &["python3"]) {
        return;
    }
    let mut run = up("vof-uso", &[]);
    let receiver = run.spawn(
        "internet/web",
        &["python3", "-c", &udp_receiver()],
        "udp.log",
    );
    assert!(
        run.wait_log("udp.log", "listening", Duration::from_secs(5)),
        "receiver: {}",
        run.log("udp.log")
    );
    let sender = format!(
        "import socket, struct\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(({WEB:?}, 9999))\n\
         for n in range({DATAGRAMS}):\n\
         \x20   s.send(struct.pack('!I', n) + bytes((n + k) % 251 for k in range({DATAGRAM_LEN} - 4)))\n"
    );
    let out = run.exec_timeout("o/f1", &["python3", "-c", &sender], TRANSFER_TIMEOUT);
    assert!(out.status.success(), "{}", text(&out));
    let status = run.wait_background(receiver, Duration::from_secs(15));
    let log = run.log("udp.log");
    assert!(status.is_some_and(|s| s.success()), "receiver: {log}");
    let received: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("received "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("receiver: {log}"));
    let m = run.metrics();
    assert_no_offload_drops(&run, &m);
    let merged = counter(&m, "vpcd_coalesced_packets_total");
    println!(
        "{}: {received} of {DATAGRAMS} datagrams arrived intact; {merged} merged into {} \
         superpackets",
        run.name,
        counter(&m, "vpcd_tun_tx_superpackets_total")
    );
    // UDP may lose some under load (the sender does not wait); most must arrive.
    assert!(received >= DATAGRAMS / 2, "only {received} arrived: {log}");
    assert!(
        merged > 0.0,
        "{}: no datagram was coalesced (the host's TUN takes USO on kernels from 6.2)",
        run.name
    );
    run.stop();
}
