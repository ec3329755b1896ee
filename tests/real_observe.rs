//! `vpcd up --flow-log` and `--capture` on the real path (issue 5, items 3 and 4, "Real-path
//! tests"), with real programs in namespaces (root; CI runs them): a connection a security group
//! denies leaves a REJECT record naming it; a `curl` through SNAT leaves ACCEPT records at both
//! interfaces with the private address in `pkt-srcaddr`; a capture read back by `tshark -r` and
//! `tcpdump -r` shows the untranslated headers, and its `.nat.pcap` the translated ones.
//!
//! The topology is also checked for validity without root.

mod real_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use real_support::{Run, VPCD, capable, text};
use serde_json::Value;

const A: &str = "10.61.1.10";
const B: &str = "10.61.1.20";
const EIP: &str = "203.0.113.40";
const WEB: &str = "198.51.100.10";

/// Two functions in one subnet behind a NAT gateway (SNAT with EIP 203.0.113.40): `a` in the
/// VPC's default group, `b` in a group that admits only tcp:80 from the VPC; one internet host in
/// a namespace.
fn topology() -> String {
    format!(
        r#"
[[vpc]]
name = "t"
cidr = "10.61.0.0/16"
subnet = [
  {{ name = "fn", cidr = "10.61.1.0/24" }},
  {{ name = "public", cidr = "10.61.9.0/24", route_table = "public" }},
]
route_table = [
  {{ name = "main", routes = [ {{ destination = "0.0.0.0/0", target = "nat:egress" }} ] }},
  {{ name = "public", routes = [ {{ destination = "0.0.0.0/0", target = "internet" }} ] }},
]
security_group = [
  {{ name = "web-only", ingress = [ {{ protocol = "tcp", ports = 80, peer = "10.61.0.0/16" }} ] }},
]
instance = [
  {{ name = "a", subnet = "fn", ip = "{A}" }},
  {{ name = "b", subnet = "fn", ip = "{B}", security_groups = ["web-only"] }},
]
nat_gateway = [ {{ name = "egress", subnet = "public", eips = ["gw"], snat = [ {{ source = "10.61.0.0/16" }} ] }} ]

[[eip]]
name = "gw"
address = "{EIP}"

[internet]
cidr = "198.51.100.0/24"
host = [ {{ name = "web", ip = "{WEB}" }} ]
"#
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The flow-log records in `path` (JSON lines), each checked to be an object.
fn records(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

fn field<'a>(r: &'a Value, name: &str) -> &'a Value {
    r.get(name).unwrap_or(&Value::Null)
}

fn is(r: &Value, name: &str, want: &str) -> bool {
    field(r, name).as_str() == Some(want)
}

fn num(r: &Value, name: &str) -> Option<u64> {
    field(r, name).as_u64()
}

#[test]
fn observe_topology_is_valid() {
    let dir = std::env::temp_dir().join(format!("vpcd-real-observe-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("t.toml");
    std::fs::write(&path, topology()).expect("write");
    let out = Command::new(VPCD)
        .arg("check")
        .arg(&path)
        .output()
        .expect("vpcd check");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_connection_a_security_group_denies_leaves_a_reject_record_naming_it() {
    if !capable("flow-log reject", &["curl"]) {
        return;
    }
    let started = unix_now();
    let mut run = Run::up_with(
        "vro-rej",
        &topology(),
        &["--flow-log", "{dir}/flows.jsonl", "--flow-log-window", "1"],
    );
    let log = run.dir.join("flows.jsonl");
    // Port 9 is not in b's group: the SYNs are dropped in the fabric.
    let out = run.exec(
        "t/a",
        &["curl", "-sS", "--max-time", "2", &format!("http://{B}:9/")],
    );
    assert!(
        !out.status.success(),
        "tcp:9 must be denied: {}",
        text(&out)
    );
    let is_reject = |r: &Value| is(r, "action", "REJECT") && num(r, "dstport") == Some(9);
    // With a 1 s window the record is written while vpcd runs (not only at the stop).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !records(&log).iter().any(is_reject) {
        assert!(
            Instant::now() < deadline,
            "no REJECT record written within 5 s of a 1 s window: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rest = run.stop_in_place();
    assert!(rest.contains("flow-log record(s) written"), "{rest}");
    let all = records(&log);
    let rejects: Vec<&Value> = all.iter().filter(|r| is_reject(r)).collect();
    assert!(!rejects.is_empty(), "{all:#?}");
    for r in &rejects {
        assert!(is(r, "interface-id", "t/a"), "{r}");
        assert!(is(r, "reject-reason", "sg_ingress"), "{r}");
        assert!(is(r, "flow-direction", "egress"), "{r}");
        assert!(is(r, "srcaddr", A) && is(r, "dstaddr", B), "{r}");
        assert!(is(r, "pkt-srcaddr", A) && is(r, "pkt-dstaddr", B), "{r}");
        assert_eq!(num(r, "protocol"), Some(6), "{r}");
        assert_eq!(num(r, "tcp-flags"), Some(2), "only SYNs: {r}");
        assert!(
            is(r, "vpc-id", "t") && is(r, "subnet-id", "fn") && is(r, "instance-id", "a"),
            "{r}"
        );
        assert!(is(r, "log-status", "OK"), "{r}");
        assert_eq!(num(r, "version"), Some(5), "{r}");
        let (start, end) = (num(r, "start").unwrap(), num(r, "end").unwrap());
        assert!(
            started <= start && start <= end && end <= unix_now(),
            "wall-clock times: {r}"
        );
    }
    let syns: u64 = rejects.iter().filter_map(|r| num(r, "packets")).sum();
    assert!(syns >= 1, "{rejects:#?}");
    // Nothing of port 9 reached b.
    assert!(
        !all.iter()
            .any(|r| is(r, "interface-id", "t/b") && num(r, "dstport") == Some(9)),
        "{all:#?}"
    );
    run.assert_gone();
}

#[test]
fn curl_through_snat_leaves_accept_records_on_both_sides() {
    if !capable("flow-log snat", &["curl", "python3"]) {
        return;
    }
    // The default 60 s window: every record here comes from the flush at the stop.
    let mut run = Run::up_with("vro-acc", &topology(), &["--flow-log", "{dir}/flows.jsonl"]);
    run.http_server("internet/web", WEB, 80, "hello from web\n");
    let body = run
        .curl("t/a", &format!("http://{WEB}/"))
        .expect("curl through SNAT");
    assert_eq!(body, "hello from web\n");
    let log = run.dir.join("flows.jsonl");
    let rest = run.stop_in_place();
    assert!(rest.contains("flow-log record(s) written"), "{rest}");
    let all = records(&log);
    let http = |r: &&Value| {
        is(r, "action", "ACCEPT") && num(r, "protocol") == Some(6) && num(r, "dstport") == Some(80)
    };
    let egress = all
        .iter()
        .filter(http)
        .find(|r| is(r, "interface-id", "t/a") && is(r, "flow-direction", "egress"))
        .unwrap_or_else(|| panic!("no ACCEPT egress record at t/a: {all:#?}"));
    assert!(
        is(egress, "srcaddr", A) && is(egress, "dstaddr", WEB),
        "{egress}"
    );
    assert!(is(egress, "pkt-srcaddr", A), "{egress}");
    assert!(is(egress, "instance-id", "a"), "{egress}");
    assert!(num(egress, "packets").unwrap_or(0) >= 3, "{egress}");
    let ingress = all
        .iter()
        .filter(http)
        .find(|r| is(r, "interface-id", "internet/web") && is(r, "flow-direction", "ingress"))
        .unwrap_or_else(|| panic!("no ACCEPT ingress record at internet/web: {all:#?}"));
    assert!(
        is(ingress, "srcaddr", EIP) && is(ingress, "dstaddr", WEB),
        "{ingress}"
    );
    assert!(is(ingress, "pkt-srcaddr", A), "before SNAT: {ingress}");
    assert!(field(ingress, "vpc-id").is_null(), "{ingress}");
    assert_eq!(
        num(ingress, "srcport"),
        all.iter()
            .find(|r| is(r, "interface-id", "internet/web") && is(r, "flow-direction", "egress"))
            .and_then(|r| num(r, "dstport")),
        "the host's replies go back to the translated port: {all:#?}"
    );
    assert!(!all.iter().any(|r| is(r, "action", "REJECT")), "{all:#?}");
    run.assert_gone();
}

/// `(source, destination)` of each packet `tshark -r FILE` reads.
fn tshark_addresses(file: &std::path::Path) -> Vec<(String, String)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-e", "ip.src", "-e", "ip.dst"])
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
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

fn tcpdump(file: &std::path::Path) -> Output {
    Command::new("tcpdump")
        .arg("-r")
        .arg(file)
        .arg("-nn")
        .output()
        .expect("tcpdump")
}

#[test]
fn a_capture_shows_untranslated_and_translated_headers() {
    if !capable("capture", &["curl", "ping", "python3", "tshark", "tcpdump"]) {
        return;
    }
    let mut run = Run::up_with("vro-cap", &topology(), &["--capture", "t/a={dir}/a.pcap"]);
    let pcap = run.dir.join("a.pcap");
    let nat = run.dir.join("a.nat.pcap");
    run.http_server("internet/web", WEB, 80, "captured\n");
    let out = run.exec("t/a", &["ping", "-c", "2", "-i", "0.2", "-W", "2", WEB]);
    assert!(out.status.success(), "ping through SNAT: {}", text(&out));
    assert_eq!(
        run.curl("t/a", &format!("http://{WEB}/")).as_deref(),
        Ok("captured\n")
    );
    // Written while vpcd runs (every ~100 ms), not only at the stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = String::from_utf8_lossy(&tcpdump(&pcap).stdout).into_owned();
        if t.contains("ICMP echo reply") && t.contains(".80:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the capture is not on disk 5 s after the traffic: {t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rest = run.stop_in_place();
    assert!(rest.contains("captured"), "{rest}");

    // The port's view: the private address, both ways; never the EIP.
    let own = tshark_addresses(&pcap);
    assert!(own.contains(&(A.into(), WEB.into())), "{own:?}");
    assert!(own.contains(&(WEB.into(), A.into())), "{own:?}");
    assert!(
        own.iter().all(|(s, d)| s != EIP && d != EIP),
        "untranslated only: {own:?}"
    );
    // Beyond the NAT gateway: the EIP, never the private address.
    let far = tshark_addresses(&nat);
    assert!(far.contains(&(EIP.into(), WEB.into())), "{far:?}");
    assert!(far.contains(&(WEB.into(), EIP.into())), "{far:?}");
    assert!(
        far.iter().all(|(s, d)| s != A && d != A),
        "translated only: {far:?}"
    );
    // Each packet in both views: pings (2 each way), the TCP connection (at least 4 each way).
    let count = |v: &[(String, String)], s: &str, d: &str| {
        v.iter().filter(|(x, y)| x == s && y == d).count()
    };
    assert_eq!(
        count(&own, A, WEB),
        count(&far, EIP, WEB),
        "own {own:?}\nfar {far:?}"
    );
    assert_eq!(
        count(&own, WEB, A),
        count(&far, WEB, EIP),
        "own {own:?}\nfar {far:?}"
    );
    assert!(
        count(&own, A, WEB) >= 6 && count(&own, WEB, A) >= 6,
        "{own:?}"
    );

    // tcpdump reads the same files.
    let out = tcpdump(&pcap);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains(&format!("IP {A} > {WEB}: ICMP echo request")),
        "{t}"
    );
    assert!(t.contains(&format!("> {WEB}.80: Flags [S]")), "{t}");
    let out = tcpdump(&nat);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains(&format!("IP {EIP} > {WEB}: ICMP echo request")),
        "{t}"
    );
    assert!(
        t.contains(&format!("IP {EIP}.")) && t.contains(&format!("> {WEB}.80: Flags [S]")),
        "{t}"
    );
    run.assert_gone();
}

#[test]
fn an_unknown_capture_endpoint_is_refused_before_anything_is_made() {
    if !capable("capture endpoint", &[]) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpcd-real-vro-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("t.toml");
    std::fs::write(&path, topology()).expect("write");
    let out = Command::new(VPCD)
        .env("VPCD_NETNS_PREFIX", "vro-bad")
        .env("VPCD_RUN_DIR", dir.join("run"))
        .arg("up")
        .arg(&path)
        .arg("--capture")
        .arg(format!("t/nope={}", dir.join("x.pcap").display()))
        .output()
        .expect("vpcd up");
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no endpoint `t/nope`") && err.contains("t/a"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("vro-bad-"),
        "nothing made"
    );
}
