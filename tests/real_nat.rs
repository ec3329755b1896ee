//! `vpcd up` through the NAT gateway and EIPs, with real programs (root; CI runs them): SNAT egress
//! with `curl`, DNAT ingress, `traceroute` through the NAT, a 1:1 EIP reachable on every port,
//! tenants with the same CIDR reaching each other only through an EIP, `iperf3` through SNAT.
//!
//! The topologies are also checked for validity without root.

mod real_support;

use std::process::Command;
use std::time::Duration;

use real_support::{Run, VPCD, capable, iperf3_receiver_mbits, text};

/// A function subnet behind a NAT gateway (SNAT for the VPC, DNAT 203.0.113.10:80 -> f1:8080), an
/// instance with a 1:1 EIP in the public subnet, and one public host in a namespace.
fn nat_topology(vpc: &str) -> String {
    format!(
        r#"
[[vpc]]
name = "{vpc}"
cidr = "10.60.0.0/16"

  [[vpc.subnet]]
  name = "fn"
  cidr = "10.60.1.0/24"

  [[vpc.subnet]]
  name = "public"
  cidr = "10.60.9.0/24"
  route_table = "public"

  [[vpc.route_table]]
  name = "main"
  routes = [ {{ destination = "0.0.0.0/0", target = "nat:egress" }} ]

  [[vpc.route_table]]
  name = "public"
  routes = [ {{ destination = "0.0.0.0/0", target = "internet" }} ]

  # DNAT and 1:1 receivers need a group that admits the internet (the VPC default group only
  # admits its own members).
  [[vpc.security_group]]
  name = "open"
  ingress = [ {{ protocol = "all", peer = "0.0.0.0/0" }} ]

  [[vpc.instance]]
  name = "f1"
  subnet = "fn"
  ip = "10.60.1.10"
  security_groups = ["open"]

  # A 1:1 EIP instance sits in a subnet whose default route is `internet`, as in the clouds.
  [[vpc.instance]]
  name = "e1"
  subnet = "public"
  ip = "10.60.9.20"
  eip = "direct"
  security_groups = ["open"]

  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["gw"]
  snat = [ {{ source = "10.60.0.0/16" }} ]
  dnat = [ {{ eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080 }} ]

[[eip]]
name = "gw"
address = "203.0.113.10"

[[eip]]
name = "direct"
address = "203.0.113.20"

[internet]
cidr = "198.51.100.0/24"
host = [ {{ name = "web", ip = "198.51.100.10" }} ]
"#
    )
}

/// Two tenants with the same CIDR, each with a NAT gateway whose EIP forwards port 80 to its
/// function.
fn two_tenants_nat() -> String {
    let tenant = |name: &str, eip: &str, addr: &str| {
        format!(
            r#"
[[vpc]]
name = "{name}"
cidr = "10.70.0.0/16"
subnet = [
  {{ name = "fn", cidr = "10.70.1.0/24" }},
  {{ name = "public", cidr = "10.70.9.0/24", route_table = "public" }},
]
route_table = [
  {{ name = "main", routes = [ {{ destination = "0.0.0.0/0", target = "nat:egress" }} ] }},
  {{ name = "public", routes = [ {{ destination = "0.0.0.0/0", target = "internet" }} ] }},
]
security_group = [ {{ name = "open", ingress = [ {{ protocol = "all", peer = "0.0.0.0/0" }} ] }} ]
instance = [ {{ name = "f", subnet = "fn", ip = "10.70.1.10", security_groups = ["open"] }} ]
nat_gateway = [ {{ name = "egress", subnet = "public", eips = ["{eip}"], snat = [ {{ source = "10.70.0.0/16" }} ], dnat = [ {{ eip = "{eip}", protocol = "tcp", port = 80, instance = "f", instance_port = 8080 }} ] }} ]

[[eip]]
name = "{eip}"
address = "{addr}"
"#
        )
    };
    format!(
        "{}{}\n[internet]\ncidr = \"198.51.100.0/24\"\n",
        tenant("t1", "t1-ip", "203.0.113.31"),
        tenant("t2", "t2-ip", "203.0.113.32")
    )
}

#[test]
fn nat_topologies_are_valid() {
    let dir = std::env::temp_dir().join(format!("vpcd-real-nat-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in [
        ("nat.toml", nat_topology("n")),
        ("tenants.toml", two_tenants_nat()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let out = Command::new(VPCD)
            .arg("check")
            .arg(&path)
            .output()
            .expect("vpcd check");
        assert!(out.status.success(), "{name}: {}", real_support::text(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn snat_curl_from_a_function_to_an_internet_host() {
    if !capable("snat_curl", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vn-snat", &nat_topology("n"));
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    assert_eq!(
        run.curl("n/f1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    // The server saw the gateway's EIP, not the private address.
    let log = run.log("http-80-internet-web.log");
    assert!(log.contains("203.0.113.10"), "{log}");
    assert!(!log.contains("10.60.1.10"), "{log}");
    run.stop();
}

#[test]
fn dnat_ingress_from_the_internet_to_a_function() {
    if !capable("dnat", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vn-dnat", &nat_topology("n"));
    run.http_server("n/f1", "10.60.1.10", 8080, "function page\n");
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.10:80/")
            .as_deref(),
        Ok("function page\n")
    );
    // The function sees the real client address (DNAT keeps the source).
    let log = run.log("http-8080-n-f1.log");
    assert!(log.contains("198.51.100.10"), "{log}");
    // Only the forwarded port is open on the EIP.
    assert!(run.curl("internet/web", "http://203.0.113.10:81/").is_err());
    run.stop();
}

#[test]
fn traceroute_through_the_nat_shows_the_nat_hop_and_the_destination() {
    if !capable("traceroute", &["traceroute"]) {
        return;
    }
    let run = Run::up("vn-trace", &nat_topology("n"));
    let out = run.exec_timeout(
        "n/f1",
        &[
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "1",
            "-m",
            "5",
            "198.51.100.10",
        ],
        Duration::from_secs(20),
    );
    let all = text(&out);
    println!("{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hops: Vec<&str> = stdout.lines().skip(1).map(str::trim).collect();
    assert!(hops.len() >= 2, "{all}");
    // The first hop is the NAT gateway (a visible hop, like a cloud NAT), answering from its
    // private address; the last is the destination.
    assert!(hops[0].contains("10.60.9."), "{all}");
    assert!(
        hops.last().is_some_and(|h| h.contains("198.51.100.10")),
        "{all}"
    );
    run.stop();
}

#[test]
fn a_one_to_one_eip_instance_is_reachable_on_every_port() {
    if !capable("eip_1to1", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vn-eip", &nat_topology("n"));
    for port in [80u16, 8443, 31337] {
        run.http_server("n/e1", "10.60.9.20", port, &format!("e1 on {port}\n"));
        assert_eq!(
            run.curl("internet/web", &format!("http://203.0.113.20:{port}/"))
                .as_deref(),
            Ok(format!("e1 on {port}\n").as_str())
        );
    }
    // Its egress leaves from its own EIP, not the NAT gateway's.
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    assert_eq!(
        run.curl("n/e1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    let log = run.log("http-80-internet-web.log");
    assert!(log.contains("203.0.113.20"), "{log}");
    run.stop();
}

#[test]
fn tenants_with_the_same_cidr_reach_each_other_only_through_an_eip() {
    if !capable("cross_tenant_eip", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vn-xten", &two_tenants_nat());
    run.http_server("t1/f", "10.70.1.10", 8080, "tenant one\n");
    run.http_server("t2/f", "10.70.1.10", 8080, "tenant two\n");
    // The private address is the caller's own tenant...
    assert_eq!(
        run.curl("t1/f", "http://10.70.1.10:8080/").as_deref(),
        Ok("tenant one\n")
    );
    // ...and the other tenant is reachable through its EIP only.
    assert_eq!(
        run.curl("t1/f", "http://203.0.113.32/").as_deref(),
        Ok("tenant two\n")
    );
    assert_eq!(
        run.curl("t2/f", "http://203.0.113.31/").as_deref(),
        Ok("tenant one\n")
    );
    run.stop();
}

#[test]
fn iperf3_through_snat() {
    if !capable("iperf3_snat", &["iperf3"]) {
        return;
    }
    let mut run = Run::up("vn-perf", &nat_topology("n"));
    run.spawn(
        "internet/web",
        &["iperf3", "-s", "-1", "-B", "198.51.100.10"],
        "iperf3-server.log",
    );
    let mut result = None;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        let out = run.exec_timeout(
            "n/f1",
            &[
                "iperf3",
                "-c",
                "198.51.100.10",
                "-t",
                "3",
                "-f",
                "m",
                "--connect-timeout",
                "1000",
            ],
            Duration::from_secs(15),
        );
        if out.status.success() {
            result = Some(out);
            break;
        }
    }
    let out = result.expect("iperf3 through SNAT never succeeded");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mbits = iperf3_receiver_mbits(&stdout).unwrap_or_else(|| panic!("{stdout}"));
    println!("iperf3 n/f1 -> internet/web through SNAT (3 s, TCP): {mbits:.0} Mbit/s");
    assert!(mbits > 1.0, "{stdout}");
    run.stop();
}
