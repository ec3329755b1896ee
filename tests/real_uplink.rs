//! The public uplink with real programs (issue 7; root, CI runs them). Each test makes a namespace
//! that stands for "the host" ([`HostNs`]: its loopback carries 192.0.2.1/24 and the EIPs'
//! `host_bind` addresses), runs `vpcd up` inside it, and starts the "outside" servers there — an
//! HTTP server, an iperf3 server, a UDP echo — so nothing reaches the real host network.
//!
//! What they prove: a function fetches 100 MB through SNAT and the uplink with `curl` and the
//! bytes match (sha256); UDP request/response and `ping` work; the servers see the EIP's
//! `host_bind` address; a caller on the host reaches a function through `host_listen` (DNAT entry
//! and 1:1 EIP) and the function sees the caller's real address; a closed port is refused at once;
//! `egress_allow` refuses an unlisted destination (counted, and REJECT in the flow log); iperf3
//! both ways; a reload keeps an unchanged uplink and rebinds changed listeners; a listener that
//! cannot be bound stops `vpcd up` before it creates anything.

mod real_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use real_support::{HostNs, Run, VPCD, capable, iperf3_receiver_mbits, metric, text};

/// The "host": its server address and the EIPs' bind addresses, all on its loopback.
const HOST_ADDRS: &[&str] = &[
    "192.0.2.1/24",
    "192.0.2.10/32",
    "192.0.2.20/32",
    "192.0.2.50/32",
];
const SERVER: &str = "192.0.2.1";

/// Tenant `u`: `f1` behind a NAT gateway (SNAT; DNAT 203.0.113.10:80 -> f1:8080 with
/// `host_listen` 192.0.2.1:8080; the EIP binds to 192.0.2.10) and `e1` with a 1:1 EIP
/// (203.0.113.20, bound to 192.0.2.20, `host_listen` 192.0.2.1:9000). Tenant `r`: `g1` behind
/// its own NAT gateway, allowed out only to 192.0.2.1:80.
fn topology() -> String {
    r#"
[[vpc]]
name = "u"
cidr = "10.61.0.0/16"
subnet = [
  { name = "fn", cidr = "10.61.1.0/24", route_table = "private" },
  { name = "public", cidr = "10.61.9.0/24" },
]
route_table = [
  { name = "main", routes = [{ destination = "0.0.0.0/0", target = "internet" }] },
  { name = "private", routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }] },
]
security_group = [{ name = "open", ingress = [{ protocol = "all", peer = "0.0.0.0/0" }] }]
instance = [
  { name = "f1", subnet = "fn", ip = "10.61.1.10", security_groups = ["open"] },
  { name = "e1", subnet = "public", ip = "10.61.9.20", eip = "direct", security_groups = ["open"] },
]
nat_gateway = [{ name = "egress", subnet = "public", eips = ["gw"], snat = [{ source = "10.61.0.0/16" }], dnat = [
  { eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080, host_listen = "192.0.2.1:8080" },
] }]

[[vpc]]
name = "r"
cidr = "10.62.0.0/16"
egress_allow = ["192.0.2.1/32:80"]
subnet = [
  { name = "fn", cidr = "10.62.1.0/24", route_table = "private" },
  { name = "public", cidr = "10.62.9.0/24" },
]
route_table = [
  { name = "private", routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }] },
]
instance = [{ name = "g1", subnet = "fn", ip = "10.62.1.10" }]
nat_gateway = [{ name = "egress", subnet = "public", eips = ["r-gw"], snat = [{ source = "10.62.0.0/16" }] }]

[[eip]]
name = "gw"
address = "203.0.113.10"
host_bind = "192.0.2.10"

[[eip]]
name = "direct"
address = "203.0.113.20"
host_bind = "192.0.2.20"
host_listen = "192.0.2.1:9000"

[[eip]]
name = "r-gw"
address = "203.0.113.30"

[internet]
uplink = "host"
"#
    .to_string()
}

/// `vpcd up` of [`topology`] inside a fresh host namespace `host-PREFIX` (outside the run's
/// prefix, so that the run's own leftover checks do not count it).
fn up(prefix: &str, args: &[&str]) -> Run {
    let host = HostNs::new(&format!("host-{prefix}"), HOST_ADDRS);
    Run::up_in(host, prefix, &topology(), args)
}

/// A Python HTTP server on the host serving `dir` at `addr:port`; its log names each client.
fn host_http_server(run: &mut Run, dir: &std::path::Path, port: u16, log: &str) {
    let script = format!(
        "import functools, http.server, socketserver\n\
         socketserver.TCPServer.allow_reuse_address = True\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={dir:?})\n\
         s = socketserver.ThreadingTCPServer(({SERVER:?}, {port}), h)\n\
         print('listening', flush=True)\n\
         s.serve_forever()\n",
        dir = dir.display().to_string()
    );
    run.host_spawn(&["python3", "-u", "-c", &script], log);
    wait_log(run, log, "listening");
}

/// A TCP server in `endpoint` on `addr:port` that answers each connection with the peer address
/// it saw, and logs it.
fn function_peer_server(run: &mut Run, endpoint: &str, addr: &str, port: u16, log: &str) {
    let script = format!(
        "import socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(({addr:?}, {port})); s.listen(16); print('listening', flush=True)\n\
         while True:\n\
         \x20   c, a = s.accept(); print('peer', a[0], a[1], flush=True)\n\
         \x20   c.recv(4096); c.sendall(('HTTP/1.0 200 OK\\r\\n\\r\\npeer %s\\n' % a[0]).encode()); c.close()\n"
    );
    run.spawn(endpoint, &["python3", "-u", "-c", &script], log);
    wait_log(run, log, "listening");
}

fn wait_log(run: &Run, log: &str, needle: &str) {
    assert!(
        run.wait_log(log, needle, Duration::from_secs(10)),
        "{}: {log} never said {needle:?}: {}",
        run.name,
        run.log(log)
    );
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `len` bytes of a fixed pseudo-random pattern (xorshift), written to `path`.
fn write_pattern(path: &std::path::Path, len: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).expect("write the file to serve");
}

#[test]
fn the_uplink_topology_is_valid() {
    let plan = vpcd::topology::parse("uplink.toml", &topology()).expect("valid");
    let up = plan.internet.uplink.expect("uplink on");
    assert_eq!(up.listen.len(), 2);
}

#[test]
fn a_function_fetches_100_mb_through_snat_and_the_uplink_and_the_bytes_match() {
    if !capable("uplink_100mb", &["curl", "python3", "nsenter", "sha256sum"]) {
        return;
    }
    let mut run = up("vu-get", &["--state", "{dir}/state"]);
    let www = run.dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    write_pattern(&www.join("big.bin"), 100 << 20);
    host_http_server(&mut run, &www, 80, "http.log");
    let got = run.dir.join("got.bin");
    let t0 = Instant::now();
    let out = run.exec_timeout(
        "u/f1",
        &[
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            got.to_str().unwrap(),
            "http://192.0.2.1/big.bin",
        ],
        Duration::from_secs(130),
    );
    let secs = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0),
        100 << 20
    );
    assert_eq!(
        sha256(&got),
        sha256(&www.join("big.bin")),
        "the bytes differ"
    );
    println!(
        "100 MiB in {secs:.2} s = {:.0} Mbit/s",
        (100u64 << 20) as f64 * 8.0 / secs / 1e6
    );
    // The server saw the EIP's host_bind address, never the private one.
    let log = run.log("http.log");
    assert!(log.contains("192.0.2.10"), "{log}");
    assert!(!log.contains("10.61."), "{log}");
    // The uplink's TCP stack sends one segment at a time; they reach the function's offload
    // port merged into superpackets.
    let metrics = run.metrics();
    let merged = metric(&metrics, "vpcd_coalesced_packets_total", &[]).unwrap_or(0.0);
    println!("{merged} uplink segments merged into superpackets towards the function");
    assert!(merged > 0.0, "no uplink segment was coalesced:\n{metrics}");
    let rest = run.stop();
    assert!(rest.contains("uplink: 1 tcp flow(s) out"), "{rest}");
}

#[test]
fn udp_request_response_and_ping_through_the_uplink() {
    if !capable("uplink_udp_ping", &["python3", "ping", "nsenter"]) {
        return;
    }
    let mut run = up("vu-udp", &[]);
    run.host_spawn(
        &[
            "python3",
            "-u",
            "-c",
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('192.0.2.1', 5353))\n\
             print('listening', flush=True)\n\
             while True:\n\
             \x20   d, a = s.recvfrom(4096); s.sendto(b'echo ' + d + b' from ' + a[0].encode(), a)\n",
        ],
        "udp.log",
    );
    wait_log(&run, "udp.log", "listening");
    let out = run.exec(
        "u/f1",
        &[
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n\
             s.sendto(b'hello', ('192.0.2.1', 5353)); print(s.recvfrom(4096)[0].decode())\n",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The answer comes from the server, which saw the NAT gateway's bound address.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echo hello from 192.0.2.10"
    );
    // The 1:1 EIP binds to its own host address.
    let out = run.exec(
        "u/e1",
        &[
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n\
             s.sendto(b'hi', ('192.0.2.1', 5353)); print(s.recvfrom(4096)[0].decode())\n",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echo hi from 192.0.2.20",
        "{}",
        text(&out)
    );
    let out = run.exec("u/f1", &["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 received"),
        "{}",
        text(&out)
    );
    let rest = run.stop();
    assert!(rest.contains("3 echo request(s)"), "{rest}");
}

#[test]
fn a_closed_port_on_the_host_is_refused_at_once() {
    if !capable("uplink_refused", &["curl", "nsenter"]) {
        return;
    }
    let run = up("vu-rst", &[]);
    let t0 = Instant::now();
    let out = run.exec(
        "u/f1",
        &["curl", "-sS", "--max-time", "5", "http://192.0.2.1:81/"],
    );
    let took = t0.elapsed();
    // curl's exit 7: could not connect (the RST for the host's refusal), not 28 (a timeout).
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(took < Duration::from_secs(3), "refusal took {took:?}");
    let rest = run.stop();
    assert!(rest.contains("(1 refused"), "{rest}");
}

#[test]
fn a_caller_on_the_host_reaches_functions_through_host_listen_with_its_own_address() {
    if !capable("uplink_host_listen", &["curl", "python3", "nsenter"]) {
        return;
    }
    let mut run = up("vu-in", &[]);
    function_peer_server(&mut run, "u/f1", "10.61.1.10", 8080, "f1.log");
    function_peer_server(&mut run, "u/e1", "10.61.9.20", 9000, "e1.log");
    // Through the DNAT entry's listener.
    let out = run.host_exec(
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--interface",
            "192.0.2.50",
            "http://192.0.2.1:8080/",
        ],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "peer 192.0.2.50\n");
    assert!(run.log("f1.log").contains("peer 192.0.2.50"));
    // Through the 1:1 EIP's listener, to the same port.
    let out = run.host_exec(
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--interface",
            "192.0.2.50",
            "http://192.0.2.1:9000/",
        ],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "peer 192.0.2.50\n");
    let rest = run.stop();
    assert!(rest.contains("2 in through host listeners"), "{rest}");
}

#[test]
fn egress_allow_lets_listed_destinations_out_and_refuses_the_rest() {
    if !capable("uplink_egress_allow", &["curl", "python3", "nsenter"]) {
        return;
    }
    let mut run = up("vu-allow", &["--flow-log", "{dir}/flows.jsonl"]);
    let www = run.dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "outside\n").expect("index");
    host_http_server(&mut run, &www, 80, "http80.log");
    let script = format!(
        "import functools, http.server, socketserver\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={:?})\n\
         s = socketserver.TCPServer(('192.0.2.1', 8000), h); print('listening', flush=True)\n\
         s.serve_forever()\n",
        www.display().to_string()
    );
    run.host_spawn(&["python3", "-u", "-c", &script], "http8000.log");
    wait_log(&run, "http8000.log", "listening");
    assert_eq!(
        run.curl("r/g1", "http://192.0.2.1/").as_deref(),
        Ok("outside\n")
    );
    // Port 8000 is not on the list: the SYN is dropped (curl times out), though the server is up.
    assert!(run.curl("r/g1", "http://192.0.2.1:8000/").is_err());
    // The unrestricted tenant reaches it.
    assert_eq!(
        run.curl("u/f1", "http://192.0.2.1:8000/").as_deref(),
        Ok("outside\n")
    );
    let rest = run.stop_in_place();
    assert!(rest.contains("egress_not_allowed="), "{rest}");
    let flows = std::fs::read_to_string(run.dir.join("flows.jsonl")).expect("flow log");
    let rejected = flows.lines().find(|l| {
        l.contains("\"interface-id\":\"r/g1\"")
            && l.contains("\"action\":\"REJECT\"")
            && l.contains("\"reject-reason\":\"egress_not_allowed\"")
            && l.contains("\"dstport\":8000")
    });
    assert!(rejected.is_some(), "{flows}");
}

#[test]
fn iperf3_through_snat_and_the_uplink_both_ways() {
    if !capable("uplink_iperf3", &["iperf3", "nsenter"]) {
        return;
    }
    let mut run = up("vu-perf", &["--state", "{dir}/state"]);
    run.host_spawn(
        &["iperf3", "-s", "-B", SERVER, "-p", "5201", "--forceflush"],
        "iperf3.log",
    );
    wait_log(&run, "iperf3.log", "Server listening");
    for reverse in [false, true] {
        let mut args = vec![
            "iperf3",
            "-c",
            SERVER,
            "-p",
            "5201",
            "-t",
            "2",
            "-f",
            "m",
            "--connect-timeout",
            "3000",
        ];
        if reverse {
            args.push("-R");
        }
        let out = run.exec_timeout("u/f1", &args, Duration::from_secs(20));
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mbits = iperf3_receiver_mbits(&stdout).unwrap_or(0.0);
        println!(
            "iperf3 {}: {mbits:.0} Mbit/s",
            if reverse { "in" } else { "out" }
        );
        // Bounded and shared machine: only a floor that a broken path cannot reach.
        assert!(mbits > 20.0, "{stdout}");
    }
    // The function's TCP superpackets reached the uplink's stack whole, not cut into segments.
    let metrics = run.metrics();
    let whole = metric(&metrics, "vpcd_superpackets_to_uplink_total", &[]).unwrap_or(0.0);
    println!("{whole} TCP superpackets taken whole by the uplink");
    assert!(
        whole > 0.0,
        "no superpacket reached the uplink whole:\n{metrics}"
    );
    run.stop();
}

#[test]
fn a_reload_keeps_an_unchanged_uplink_and_rebinds_changed_listeners() {
    if !capable("uplink_reload", &["curl", "python3", "nsenter"]) {
        return;
    }
    let mut run = up("vu-hup", &[]);
    function_peer_server(&mut run, "u/f1", "10.61.1.10", 8080, "f1.log");
    let caller = |run: &Run, port: u16| {
        run.host_exec(
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                &format!("http://192.0.2.1:{port}/"),
            ],
            Duration::from_secs(10),
        )
    };
    assert!(caller(&run, 8080).status.success());
    run.hup();
    // Four endpoints and the two VPCs' resolvers.
    assert!(
        run.wait_output("+0 -0 ~0, 6 unchanged", 1, Duration::from_secs(10)),
        "{}",
        run.output()
    );
    let t = topology().replace("192.0.2.1:8080", "192.0.2.1:8081");
    run.rewrite(&t);
    run.hup();
    assert!(
        run.wait_output(
            "~1 (internet/uplink), 5 unchanged",
            1,
            Duration::from_secs(10)
        ),
        "{}",
        run.output()
    );
    let out = caller(&run, 8081);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        caller(&run, 8080).status.code(),
        Some(7),
        "the old listener is closed"
    );
    run.stop();
}

#[test]
fn a_host_listen_that_cannot_be_bound_stops_up_before_anything_is_made() {
    if !capable("uplink_bind_error", &["nsenter"]) {
        return;
    }
    // 192.0.2.1 is not an address of this host namespace.
    let host = HostNs::new("host-vu-bad", &["192.0.2.10/32", "192.0.2.20/32"]);
    let dir = std::env::temp_dir().join(format!("vpcd-real-vu-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("topology.toml");
    std::fs::write(&path, topology()).expect("write");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", host.name))
        .arg(VPCD)
        .arg("up")
        .arg(&path)
        .env("VPCD_NETNS_PREFIX", "vu-bad")
        .env("VPCD_RUN_DIR", dir.join("run"))
        .stdin(Stdio::null())
        .output()
        .expect("vpcd up");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(
            "starting the uplink: host_listen 192.0.2.1:9000 (for 203.0.113.20:9000): Cannot assign requested address"
        ),
        "{all}"
    );
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("vu-bad-u"),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host server on `ports` that answers each connection with the address and port it came
/// from, one line.
fn peer_echo_server(run: &mut Run, ports: &[u16], log: &str) {
    let script = format!(
        "import socket, threading\n\
         def serve(port):\n\
         \x20   s = socket.socket()\n\
         \x20   s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         \x20   s.bind(({SERVER:?}, port))\n\
         \x20   s.listen(16)\n\
         \x20   while True:\n\
         \x20       c, a = s.accept()\n\
         \x20       c.sendall(f'{{a[0]}}:{{a[1]}}\\n'.encode())\n\
         \x20       c.close()\n\
         for p in {ports:?}:\n\
         \x20   threading.Thread(target=serve, args=(p,)).start()\n\
         print('listening', flush=True)\n"
    );
    run.host_spawn(&["python3", "-c", &script], log);
    wait_log(run, log, "listening");
}

/// TCP through the uplink keeps the NAT mapping's port (RFC 5382 REQ-1): with the default (rfc)
/// profile the function's port is preserved, and the host connects from it, towards every
/// destination of the mapping.
#[test]
fn tcp_through_the_uplink_leaves_from_the_mapped_port() {
    if !capable("uplink_tcp_port", &["python3", "nsenter"]) {
        return;
    }
    let mut run = up("vu-port", &[]);
    peer_echo_server(&mut run, &[7001, 7002], "peer.log");
    let client = format!(
        "import socket\n\
         for port in (7001, 7002):\n\
         \x20   s = socket.socket()\n\
         \x20   s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         \x20   s.bind(('0.0.0.0', 40123))\n\
         \x20   s.settimeout(5)\n\
         \x20   s.connect(({SERVER:?}, port))\n\
         \x20   print(s.makefile().readline().strip(), flush=True)\n\
         \x20   s.close()\n"
    );
    let out = run.exec_timeout("u/f1", &["python3", "-c", &client], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    let seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        seen,
        ["192.0.2.10:40123", "192.0.2.10:40123"],
        "{}",
        text(&out)
    );
    run.stop();
}

/// A host UDP server on 192.0.2.1:7100 that answers a datagram at once ("now") and again
/// `later` seconds after ("later"), to where it came from.
fn late_udp_server(run: &mut Run, later: f64, log: &str) {
    let script = format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(({SERVER:?}, 7100))\n\
         print('listening', flush=True)\n\
         d, a = s.recvfrom(100)\n\
         s.sendto(b'now', a)\n\
         time.sleep({later})\n\
         s.sendto(b'later', a)\n\
         print('sent later to', a, flush=True)\n"
    );
    run.host_spawn(&["python3", "-c", &script], log);
    wait_log(run, log, "listening");
}

/// What the function hears back from [`late_udp_server`] within `wait` seconds: `now`, then
/// `later` if its mapping was still alive.
fn hear_back(run: &Run, wait: f64) -> String {
    let client = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout({wait})\n\
         s.sendto(b'hi', ({SERVER:?}, 7100))\n\
         got = []\n\
         try:\n\
         \x20   while len(got) < 2:\n\
         \x20       got.append(s.recv(100).decode())\n\
         except socket.timeout:\n\
         \x20   pass\n\
         print(' '.join(got))\n"
    );
    let out = run.exec_timeout("u/f1", &["python3", "-c", &client], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The NAT mapping's lifetime holds through the uplink too (issue 13 item 5, one short timeout
/// for real): with UDP timeouts of 2 s the answer sent 3.5 s later meets no mapping and is
/// dropped by the gateway (though the uplink's host socket is still open); with the profile's
/// 300 s it arrives.
#[test]
fn a_udp_mapping_through_the_uplink_lives_as_long_as_the_gateway_says() {
    if !capable("uplink_udp_lifetime", &["python3", "nsenter"]) {
        return;
    }
    let short = topology().replace(
        r#"snat = [{ source = "10.61.0.0/16" }], dnat"#,
        r#"snat = [{ source = "10.61.0.0/16" }], timeouts = { udp = 2, udp_stream = 2 }, dnat"#,
    );
    assert_ne!(short, topology(), "the gateway's timeout was set");
    for (topo, want) in [(short, "now"), (topology(), "now later")] {
        let host = HostNs::new("host-vu-life", HOST_ADDRS);
        let mut run = Run::up_in(host, "vu-life", &topo, &[]);
        late_udp_server(&mut run, 3.5, "late.log");
        let heard = hear_back(&run, 6.0);
        println!("{}: heard {heard:?}", run.name);
        run.stop();
        assert_eq!(heard, want);
    }
}

/// The first UDP NAT session `vpcd ctl conntrack list --json` lists.
fn nat_udp_session(run: &Run) -> serde_json::Value {
    let out = run
        .vpcd()
        .args(["ctl", "conntrack", "list", "--protocol", "udp", "--json"])
        .output()
        .expect("vpcd ctl");
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    list["connections"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["table"] == "nat"))
        .cloned()
        .unwrap_or_else(|| panic!("no NAT session: {list}"))
}

/// `vpcd ctl conntrack list` shows the host socket behind a NAT session through the uplink
/// (issue 13 item 6): the EIP's `host_bind` address at the session's external port.
#[test]
fn conntrack_shows_the_host_socket_behind_an_uplink_mapping() {
    if !capable("uplink_conntrack_host_socket", &["python3", "nsenter"]) {
        return;
    }
    let mut run = up("vu-ct", &["--state", "{dir}/state"]);
    late_udp_server(&mut run, 0.1, "late.log");
    assert_eq!(hear_back(&run, 3.0), "now later");
    let row = nat_udp_session(&run);
    let external = row["external"].as_str().expect("external");
    let port = external.rsplit(':').next().expect("a port");
    assert_eq!(row["host_socket"], format!("192.0.2.10:{port}"), "{row}");
    run.stop();
}

/// When the host has the NAT mapping's port in use already (issue 13 item 1), the uplink's
/// socket gets another port and the NAT learns it: the outside, `vpcd ctl conntrack list` and
/// `vpcd ctl explain` (issue 13 item 6, through the API) all name that one port. The function
/// sends from 49152, the source port explain assumes.
#[test]
fn a_mapped_port_taken_on_the_host_is_learned_by_the_nat_and_shown_by_conntrack_and_explain() {
    if !capable("uplink_port_taken", &["python3", "nsenter"]) {
        return;
    }
    let mut run = up("vu-taken", &["--state", "{dir}/state"]);
    let holder = "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('192.0.2.10', 49152))\n\
         print('holding', flush=True)\n\
         time.sleep(60)\n";
    run.host_spawn(&["python3", "-c", holder], "holder.log");
    wait_log(&run, "holder.log", "holding");
    late_udp_server(&mut run, 0.1, "late.log");
    let client = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 49152))\n\
         s.settimeout(3)\n\
         s.sendto(b'hi', ({SERVER:?}, 7100))\n\
         print(s.recv(100).decode(), s.recv(100).decode())\n"
    );
    let out = run.exec_timeout("u/f1", &["python3", "-c", &client], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "now later");
    wait_log(&run, "late.log", "sent later to");
    let seen = run.log("late.log");
    let port: u16 = seen
        .split("('192.0.2.10', ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the server's log names the sender: {seen}"));
    assert_ne!(port, 49152, "the host gave another port: {seen}");
    let row = nat_udp_session(&run);
    assert_eq!(row["external"], format!("203.0.113.10:{port}"), "{row}");
    assert_eq!(row["host_socket"], format!("192.0.2.10:{port}"), "{row}");
    let out = run
        .vpcd()
        .args(["ctl", "explain", "u/f1", "192.0.2.1:7100/udp"])
        .output()
        .expect("vpcd ctl");
    let said = text(&out);
    assert!(
        said.contains("a host socket at 192.0.2.10:49152 (host_bind of 203.0.113.10"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "now: the NAT mapping of 10.61.1.10:49152 is 203.0.113.10:{port}, its host socket 192.0.2.10:{port}"
        )),
        "{said}"
    );
    run.stop();
}
