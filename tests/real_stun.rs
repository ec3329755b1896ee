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
