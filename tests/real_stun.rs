//! The NAT as a real NAT-discovery client sees it (issue 13, item 4), on the simulated internet
//! and beyond the uplink: Debian's `stun` (the RFC 3489 classifier) in a function behind a NAT
//! gateway, against `stund` on a host with two addresses, once per NAT behaviour. The
//! classifier's verdict is what a user testing "will my function's peer-to-peer protocol work
//! behind this NAT" reads; it must match the profile's documented mapping and filtering.
//!
//! On the simulated internet the server is an internet host with `secondary_ips`; beyond the
//! uplink it runs in the host namespace `vpcd up` runs in (the outside world), with two loopback
//! addresses, and sees the host sockets the uplink binds for each mapping.
//!
//! Root; CI installs `stun-client` and `stun-server`. `stund` runs from the run's directory and
//! is stopped by PID with the run.

mod real_support;

use std::time::Duration;

use real_support::{HostNs, Run, capable, text};

const STUN: &str = "198.51.100.20";
const STUN_OTHER: &str = "198.51.100.21";

/// A function `f1` behind NAT gateway `egress` whose behaviour is `nat` (TOML keys of the
/// gateway: `profile = "rfc"`, `filtering = "…"`), its security group open to UDP from anywhere
/// (so a hairpinned reply may reach it), and the STUN host with two addresses.
fn topology(nat: &str) -> String {
    format!(
        r#"
[[vpc]]
name = "n"
cidr = "10.66.0.0/16"
subnet = [
  {{ name = "fn", cidr = "10.66.1.0/24", route_table = "private" }},
  {{ name = "public", cidr = "10.66.9.0/24" }},
]
route_table = [ {{ name = "private", routes = [ {{ destination = "0.0.0.0/0", target = "nat:egress" }} ] }} ]
security_group = [ {{ name = "udp", ingress = [ {{ protocol = "udp", ports = "1-65535", peer = "0.0.0.0/0" }} ] }} ]
instance = [ {{ name = "f1", subnet = "fn", ip = "10.66.1.10", security_groups = ["udp"] }} ]
nat_gateway = [ {{ name = "egress", subnet = "public", eips = ["gw"], snat = [ {{ source = "10.66.0.0/16" }} ], {nat} }} ]

[[eip]]
name = "gw"
address = "203.0.113.30"

[internet]
cidr = "198.51.100.0/24"
host = [ {{ name = "stun", ip = "{STUN}", secondary_ips = ["{STUN_OTHER}"] }} ]
"#
    )
}

/// The `Primary:` line `stun` prints for `nat` on the simulated internet.
fn verdict(prefix: &str, nat: &str) -> String {
    let mut run = Run::up(prefix, &topology(nat));
    run.spawn(
        "internet/stun",
        &["stund", "-h", STUN, "-a", STUN_OTHER],
        "stund.log",
    );
    let line = classify(&run, STUN);
    println!("{nat}: {line}");
    run.stop();
    line
}

/// What `stun SERVER` in `n/f1` says (its `Primary:` line). stund prints nothing when it is
/// ready: ask until it answers (bounded).
fn classify(run: &Run, server: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = run.exec_timeout("n/f1", &["stun", server], Duration::from_secs(20));
        let all = text(&out);
        if let Some(l) = all.lines().find(|l| l.starts_with("Primary:")) {
            return l.trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: no verdict from stun: {all}\nstund: {}",
            run.name,
            run.log("stund.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The outside world beyond the uplink: the host namespace `vpcd up` runs in, with the STUN
/// server's two addresses and the EIP's `host_bind` address on its loopback.
const OUTSIDE: &[&str] = &["192.0.2.1/24", "192.0.2.2/32", "192.0.2.10/32"];

/// The same function and gateway with `[internet] uplink = "host"`: the EIP binds to 192.0.2.10,
/// and the STUN server is a real one in the host namespace (192.0.2.1 and 192.0.2.2).
fn uplink_topology(nat: &str) -> String {
    let t = topology(nat);
    let vpc = &t[..t.find("[[eip]]").expect("an EIP")];
    format!(
        r#"{vpc}
[[eip]]
name = "gw"
address = "203.0.113.30"
host_bind = "192.0.2.10"

[internet]
uplink = "host"
"#
    )
}

/// Beyond the uplink the host sockets follow the NAT's mappings (one per mapping, bound at its
/// port, any destination), so a real server outside sees what the profile promises: `stun`'s
/// verdict for `nat` there is `want`.
fn expect_uplink_verdict(test: &str, prefix: &str, nat: &str, want: &str) {
    if !capable(test, &["stun", "stund", "nsenter"]) {
        return;
    }
    let host = HostNs::new(&format!("host-{prefix}"), OUTSIDE);
    let mut run = Run::up_in(host, prefix, &uplink_topology(nat), &[]);
    run.host_spawn(
        &["stund", "-h", "192.0.2.1", "-a", "192.0.2.2"],
        "stund.log",
    );
    let line = classify(&run, "192.0.2.1");
    println!("uplink, {nat}: {line}");
    run.stop();
    assert_eq!(line, want, "beyond the uplink, {nat}");
}

#[test]
fn beyond_the_uplink_the_rfc_profile_is_still_an_independent_mapping_that_preserves_ports() {
    let want = "Primary: Independent Mapping, Port Dependent Filter, preserves ports, will hairpin";
    expect_uplink_verdict("stun uplink rfc", "vsu-rfc", r#"profile = "rfc""#, want);
}

#[test]
fn beyond_the_uplink_the_aws_profile_is_a_dependent_mapping() {
    let want = "Primary: Dependent Mapping, random port, no hairpin";
    expect_uplink_verdict("stun uplink aws", "vsu-aws", r#"profile = "aws""#, want);
}

#[test]
fn beyond_the_uplink_endpoint_independent_filtering_is_an_open_full_cone() {
    let nat = r#"profile = "rfc", filtering = "endpoint-independent""#;
    let want = "Primary: Independent Mapping, Independent Filter, preserves ports, will hairpin";
    expect_uplink_verdict("stun uplink full cone", "vsu-open", nat, want);
}

/// `stun`'s verdict for `nat` is `want` (the test is `test`, its namespaces start `prefix`).
fn expect_verdict(test: &str, prefix: &str, nat: &str, want: &str) {
    if capable(test, &["stun", "stund"]) {
        assert_eq!(verdict(prefix, nat), want, "{nat}");
    }
}

#[test]
fn the_rfc_profile_is_an_independent_mapping_that_preserves_ports_and_hairpins() {
    let want = "Primary: Independent Mapping, Port Dependent Filter, preserves ports, will hairpin";
    expect_verdict("stun rfc", "vst-rfc", r#"profile = "rfc""#, want);
}

/// A new mapping per destination: no filtering verdict is possible, and a hairpinned packet
/// meets a mapping that was made for another destination.
#[test]
fn the_aws_profile_is_a_dependent_mapping() {
    let want = "Primary: Dependent Mapping, random port, no hairpin";
    expect_verdict("stun aws", "vst-aws", r#"profile = "aws""#, want);
}

#[test]
fn the_gcp_profile_is_an_independent_mapping_with_random_ports() {
    let want = "Primary: Independent Mapping, Port Dependent Filter, random port, will hairpin";
    expect_verdict("stun gcp", "vst-gcp", r#"profile = "gcp""#, want);
}

#[test]
fn endpoint_independent_filtering_is_an_open_full_cone() {
    let nat = r#"profile = "rfc", filtering = "endpoint-independent""#;
    let want = "Primary: Independent Mapping, Independent Filter, preserves ports, will hairpin";
    expect_verdict("stun full cone", "vst-open", nat, want);
}

/// coturn's RFC 5780 client against coturn's server (which returns OTHER-ADDRESS when it listens
/// on two addresses) classifies the rfc profile the same way: an endpoint-independent mapping and
/// address-and-port-dependent filtering.
#[test]
fn rfc5780_discovery_agrees_on_the_rfc_profile() {
    if !capable("stun rfc5780", &["turnserver", "turnutils_natdiscovery"]) {
        return;
    }
    let mut run = Run::up("vst-5780", &topology(r#"profile = "rfc""#));
    let pidfile = run.dir.join("turnserver.pid");
    let server = [
        "turnserver",
        "-c",
        "/dev/null",
        "--listening-ip",
        STUN,
        "--listening-ip",
        STUN_OTHER,
        "--no-auth",
        "--no-tls",
        "--no-dtls",
        "--stun-only",
        "--no-cli",
        "--log-file",
        "stdout",
        "--pidfile",
        pidfile.to_str().expect("a UTF-8 path"),
    ];
    run.spawn("internet/stun", &server, "turnserver.log");
    assert!(
        run.wait_log(
            "turnserver.log",
            "Total General servers",
            Duration::from_secs(10)
        ),
        "turnserver: {}",
        run.log("turnserver.log")
    );
    let out = run.exec_timeout(
        "n/f1",
        &["turnutils_natdiscovery", "-m", "-f", "-H", STUN],
        Duration::from_secs(30),
    );
    let all = text(&out);
    let verdicts: Vec<&str> = all.lines().filter(|l| l.starts_with("NAT with")).collect();
    println!("rfc5780: {verdicts:?}");
    run.stop();
    assert!(
        verdicts.contains(&"NAT with Endpoint Independent Mapping!"),
        "{all}"
    );
    assert!(
        verdicts.contains(&"NAT with Address and Port Dependent Filtering!"),
        "{all}"
    );
}

/// A rendezvous server for [`hole_punch`] in the outside world: `reg NAME` registers the
/// sender's address and port as seen there (and answers it), `peer NAME` answers NAME's (or
/// nothing yet).
const RENDEZVOUS: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.1", 3479))
seen = {}
print("ready", flush=True)
while True:
    data, src = s.recvfrom(2048)
    cmd, _, name = data.decode(errors="replace").partition(" ")
    if cmd == "reg":
        seen[name] = "%s:%d" % src
    s.sendto(seen.get(name, "").encode(), src)
"#;

/// One side of a UDP hole punch, as peer-to-peer protocols (WebRTC's ICE, QUIC, games) do it:
/// bind a fixed local port, learn the public mapping from the rendezvous server, learn the
/// peer's, then send to the peer's public endpoint until one of its messages arrives. Prints
/// `got ADDR:PORT` (where the peer's message came from) and `done punched`, or `done nothing`
/// after the given seconds.
const PUNCH: &str = r#"
import socket, sys, time
name, other, lport, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rv = ("192.0.2.1", 3479)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", lport))
s.settimeout(0.1)
def ask(msg):
    for _ in range(100):
        s.sendto(msg.encode(), rv)
        try:
            data, src = s.recvfrom(2048)
            if src == rv:
                return data.decode()
        except socket.timeout:
            pass
    sys.exit("no answer from the rendezvous server")
print("mapped", ask("reg " + name), flush=True)
deadline = time.time() + 10
peer = ask("peer " + other)
while not peer and time.time() < deadline:
    time.sleep(0.1)
    peer = ask("peer " + other)
if not peer:
    sys.exit("the peer never registered")
host, port = peer.rsplit(":", 1)
peer = (host, int(port))
print("peer", "%s:%d" % peer, flush=True)
got, after, end = None, 0, time.time() + secs
while time.time() < end and after < 10:
    s.sendto(("punch from " + name).encode(), peer)
    try:
        data, src = s.recvfrom(2048)
        if got is None and data.decode(errors="replace") == "punch from " + other:
            got = src
            print("got %s:%d" % src, flush=True)
    except socket.timeout:
        pass
    if got:
        after += 1
print("done", "punched" if got else "nothing", flush=True)
"#;

/// Issue 13 item 1, hairpin towards the `host_bind` address: two functions behind one NAT
/// gateway beyond the uplink punch a hole to each other's public endpoint (the EIP's host
/// address and their mapped ports, learned from a rendezvous server outside). `f1`'s lines and
/// `f2`'s.
fn hole_punch(test: &str, prefix: &str, nat: &str) -> Option<(String, String)> {
    if !capable(test, &["python3", "nsenter"]) {
        return None;
    }
    let t = uplink_topology(nat).replace(
        r#"instance = [ { name = "f1", subnet = "fn", ip = "10.66.1.10", security_groups = ["udp"] } ]"#,
        r#"instance = [
  { name = "f1", subnet = "fn", ip = "10.66.1.10", security_groups = ["udp"] },
  { name = "f2", subnet = "fn", ip = "10.66.1.11", security_groups = ["udp"] },
]"#,
    );
    assert!(t.contains("\"f2\""), "the topology has both functions");
    let host = HostNs::new(&format!("host-{prefix}"), OUTSIDE);
    let mut run = Run::up_in(host, prefix, &t, &[]);
    run.host_spawn(&["python3", "-c", RENDEZVOUS], "rendezvous.log");
    assert!(
        run.wait_log("rendezvous.log", "ready", Duration::from_secs(10)),
        "rendezvous: {}",
        run.log("rendezvous.log")
    );
    run.spawn(
        "n/f2",
        &["python3", "-c", PUNCH, "f2", "f1", "40002", "4"],
        "f2.log",
    );
    let f1 = run.exec_timeout(
        "n/f1",
        &["python3", "-c", PUNCH, "f1", "f2", "40001", "4"],
        Duration::from_secs(30),
    );
    let f1 = text(&f1);
    assert!(
        run.wait_log("f2.log", "done", Duration::from_secs(20)),
        "f2 did not finish: {}",
        run.log("f2.log")
    );
    let f2 = run.log("f2.log");
    println!("{nat}:\nf1: {f1}\nf2: {f2}");
    run.stop();
    Some((f1, f2))
}

/// The rfc profile (endpoint-independent mapping, port preservation): each function's public
/// endpoint is the EIP's host address at its own port, both holes open, and each sees the
/// other's message come from the other's public endpoint, as behind a NAT that hairpins.
#[test]
fn beyond_the_uplink_two_functions_punch_a_hole_through_the_host_bind_address() {
    let Some((f1, f2)) = hole_punch("hairpin uplink rfc", "vsh-rfc", r#"profile = "rfc""#) else {
        return;
    };
    assert!(f1.contains("mapped 192.0.2.10:40001"), "{f1}");
    assert!(f2.contains("mapped 192.0.2.10:40002"), "{f2}");
    assert!(f1.contains("got 192.0.2.10:40002"), "{f1}");
    assert!(f2.contains("got 192.0.2.10:40001"), "{f2}");
    assert!(f1.contains("done punched") && f2.contains("done punched"));
}

/// The aws profile maps each destination anew and filters by address and port: the mapping a
/// function opens towards its peer is not the one the rendezvous server saw, so no punch gets
/// through, beyond the uplink as on the simulated internet.
#[test]
fn beyond_the_uplink_the_aws_profile_lets_no_hole_punch_through() {
    let Some((f1, f2)) = hole_punch("hairpin uplink aws", "vsh-aws", r#"profile = "aws""#) else {
        return;
    };
    assert!(f1.contains("mapped 192.0.2.10:"), "{f1}");
    assert!(f1.contains("peer 192.0.2.10:"), "{f1}");
    assert!(f1.contains("done nothing"), "{f1}");
    assert!(f2.contains("done nothing"), "{f2}");
}
