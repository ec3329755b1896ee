//! Fair and safe under a flood (issue 14, item 6), with real programs (root; CI installs
//! hping3): an internet host SYN-floods a function's DNAT'd EIP port with `hping3 --flood` for a
//! bounded time (`timeout`: hping3 ignores `-c` in flood mode), while another internet host keeps opening new connections to the same
//! port and fetching a page. The legitimate client must keep being answered (a loose bound: CI
//! machines are noisy), the flood must be refused per source (`nat_source_rate`, or its half-open
//! budget: `nat_source_half_open`, at most 1,024 half-open sessions) rather than fill
//! the connection table, the flooding port must be read less (rested) while the client's is not,
//! and vpcd must still be serving afterwards.

mod real_support;

use std::time::{Duration, Instant};

use real_support::{Run, capable, metric, random_file, sha256_file, text};

const EIP: &str = "203.0.113.44";
const ATTACKER: &str = "198.51.100.66";
const CLIENT: &str = "198.51.100.10";
/// How long the flood lasts.
const FLOOD_SECS: u64 = 3;

/// A function serving HTTP on 8080 behind DNAT tcp:80 of its gateway's EIP, an attacker and a
/// client on the internet.
fn topology() -> String {
    topology_with("")
}

/// [`topology`] with `gateway` added to the NAT gateway's settings.
fn topology_with(gateway: &str) -> String {
    format!(
        r#"
[[vpc]]
name = "v"
cidr = "10.67.0.0/16"
subnet = [
  {{ name = "fn", cidr = "10.67.1.0/24", route_table = "private" }},
  {{ name = "public", cidr = "10.67.9.0/24" }},
]
route_table = [ {{ name = "private", routes = [ {{ destination = "0.0.0.0/0", target = "nat:egress" }} ] }} ]
security_group = [ {{ name = "web", ingress = [ {{ protocol = "tcp", ports = "8080", peer = "0.0.0.0/0" }} ] }} ]
instance = [ {{ name = "f1", subnet = "fn", ip = "10.67.1.10", security_groups = ["web"] }} ]
nat_gateway = [ {{ name = "egress", subnet = "public", eips = ["gw"], snat = [ {{ source = "10.67.0.0/16" }} ],{gateway}
  dnat = [ {{ eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080 }} ] }} ]

[[eip]]
name = "gw"
address = "{EIP}"

[internet]
cidr = "198.51.100.0/24"
host = [ {{ name = "attacker", ip = "{ATTACKER}" }}, {{ name = "client", ip = "{CLIENT}" }} ]
"#
    )
}

/// `hping3 --flood` from the attacker at the EIP's port 80 for [`FLOOD_SECS`] (bounded by
/// `timeout`: hping3 ignores `-c` in flood mode); its pid.
fn start_flood(run: &mut Run) -> u32 {
    let secs = FLOOD_SECS.to_string();
    run.spawn(
        "internet/attacker",
        &[
            "timeout", &secs, "hping3", "-q", "-S", "-p", "80", "--flood", EIP,
        ],
        "hping3.log",
    )
}

/// Waits for the flood to end within its bound.
fn end_flood(run: &mut Run, pid: u32) {
    assert!(
        run.wait_background(pid, Duration::from_secs(10)).is_some(),
        "hping3 ran past its bound"
    );
}

#[test]
fn a_syn_flood_from_one_source_is_refused_and_a_legitimate_client_keeps_being_answered() {
    if !capable("syn flood", &["hping3", "curl", "python3"]) {
        return;
    }
    let mut run = Run::up_with("vfl", &topology(), &["--state", "{dir}/state"]);
    run.http_server("v/f1", "10.67.1.10", 8080, "hello from f1\n");
    let url = format!("http://{EIP}/");
    assert!(
        run.curl("internet/client", &url).is_ok(),
        "before the flood"
    );
    let flood = start_flood(&mut run);
    // New connections from the client while the flood runs, one after the other.
    let started = Instant::now();
    let (mut answered, mut failed) = (0u32, Vec::new());
    while started.elapsed() < Duration::from_secs(FLOOD_SECS) {
        let out = run.exec_timeout(
            "internet/client",
            &[
                "curl",
                "-sS",
                "--max-time",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
            Duration::from_secs(5),
        );
        if out.status.success() && String::from_utf8_lossy(&out.stdout) == "200" {
            answered += 1;
        } else {
            failed.push(text(&out));
        }
    }
    end_flood(&mut run, flood);
    let m = run.metrics();
    let drops = |reason| metric(&m, "vpcd_drops_total", &[("reason", reason)]).unwrap_or(0.0);
    let refused = drops("nat_source_rate") + drops("nat_source_half_open");
    println!(
        "{}: {answered} connections answered, {} failed during the flood; {refused} SYNs refused \
         per source; hping3: {}",
        run.name,
        failed.len(),
        run.log("hping3.log").trim()
    );
    assert!(refused > 0.0, "the flood was not limited per source:\n{m}");
    let half_open = metric(
        &m,
        "vpcd_nat_half_open_connections",
        &[("gateway", "egress")],
    )
    .unwrap_or(-1.0);
    assert!(
        (0.0..=1024.0).contains(&half_open),
        "the attacker holds {half_open} half-open sessions (default budget 1,024):\n{m}"
    );
    // The flooding port is left unread between short reads (its excess is dropped in the
    // kernel's TUN queue, at the attacker's cost); the client's port never is.
    let rests = |host: &str| {
        metric(
            &m,
            "vpcd_port_flood_rests_total",
            &[("endpoint", &format!("internet/{host}"))],
        )
        .unwrap_or(-1.0)
    };
    assert!(
        rests("attacker") > 0.0,
        "the flooding port never rested:\n{m}"
    );
    assert_eq!(rests("client"), 0.0, "the client's port rested:\n{m}");
    // Loose (the flood, vpcd and every curl share two cores here): at least three in four new
    // connections are answered while the flood runs (issue 14 measured 7 in 10 before the limit).
    let total = answered as usize + failed.len();
    assert!(
        answered as usize * 4 >= total * 3 && answered > 0,
        "{answered} of {total} answered: {failed:?}"
    );
    assert!(run.curl("internet/client", &url).is_ok(), "after the flood");
    run.stop();
}

/// The SYN proxy (`syn_proxy = true`): the same flood makes no NAT state at all (every SYN is
/// answered with a cookie and forgotten, none reaches the function), while the client's
/// connections — proxied, so every segment's sequence numbers are shifted between the two halves
/// — keep being answered and a 20 MB download arrives intact.
#[test]
fn a_syn_flood_on_a_syn_proxied_port_makes_no_state_and_proxied_downloads_arrive_intact() {
    if !capable(
        "syn proxy flood",
        &["hping3", "curl", "python3", "sha256sum"],
    ) {
        return;
    }
    let mut run = Run::up_with(
        "vsp",
        &topology_with(" syn_proxy = true,"),
        &["--state", "{dir}/state"],
    );
    run.http_server("v/f1", "10.67.1.10", 8080, "hello from f1\n");
    let payload = run.www_dir("v/f1", 8080).join("big.bin");
    random_file(&payload, 20 << 20);
    let want = sha256_file(&payload);
    let url = format!("http://{EIP}/");
    let big = format!("http://{EIP}/big.bin");
    assert_eq!(
        run.curl("internet/client", &url).as_deref(),
        Ok("hello from f1\n"),
        "before the flood"
    );
    assert_eq!(
        run.curl_sha256("internet/client", &big, Duration::from_secs(20))
            .as_deref(),
        Ok(want.as_str()),
        "a proxied 20 MB download"
    );
    let flood = start_flood(&mut run);
    let started = Instant::now();
    let (mut answered, mut failed) = (0u32, Vec::new());
    while started.elapsed() < Duration::from_secs(FLOOD_SECS) {
        match run.curl("internet/client", &url) {
            Ok(body) if body == "hello from f1\n" => answered += 1,
            other => failed.push(format!("{other:?}")),
        }
    }
    end_flood(&mut run, flood);
    let m = run.metrics();
    let gw = |name| metric(&m, name, &[("gateway", "egress")]).unwrap_or(-1.0);
    let (cookies, proxied) = (
        gw("vpcd_nat_syn_cookies_total"),
        gw("vpcd_nat_syn_proxied_total"),
    );
    let (half_open, sessions) = (
        gw("vpcd_nat_half_open_connections"),
        gw("vpcd_nat_active_connections"),
    );
    println!(
        "{}: {answered} connections answered, {} failed during the flood; {cookies} cookies, \
         {proxied} proxied connections, {sessions} sessions, {half_open} half-open; hping3: {}",
        run.name,
        failed.len(),
        run.log("hping3.log").trim()
    );
    assert!(
        cookies > 1000.0,
        "the flood was not answered with cookies:\n{m}"
    );
    assert_eq!(half_open, 0.0, "the flood made half-open sessions:\n{m}");
    // Only the client's connections made sessions (each curl one, plus the two before).
    assert!(
        proxied >= f64::from(answered) && sessions <= proxied,
        "{sessions} sessions for {proxied} proxied connections:\n{m}"
    );
    let total = answered as usize + failed.len();
    assert!(
        answered as usize * 4 >= total * 3 && answered > 0,
        "{answered} of {total} answered: {failed:?}"
    );
    assert_eq!(
        run.curl_sha256("internet/client", &big, Duration::from_secs(20))
            .as_deref(),
        Ok(want.as_str()),
        "after the flood"
    );
    run.stop();
}
