//! `vpcd up` for real, with real programs (root; CI runs them): the VPC path between namespaces,
//! the subnet gateway, tenant isolation, MTU, throughput, `vpcd exec`, the lock, and teardown
//! after SIGINT, SIGTERM and `kill -9` + `vpcd down`.
//!
//! Each test has its own topology, namespace prefix and run directory (see `real_support`), so
//! they run in parallel; each ends by checking that `ip netns list` shows nothing of it.

mod real_support;

use std::time::{Duration, Instant};

use real_support::{Run, capable, iperf3_receiver_mbits, text};

/// One VPC, two subnets, two instances in the first and one in the second; prefix-unique names.
fn one_vpc(vpc: &str) -> String {
    format!(
        r#"
[[vpc]]
name = "{vpc}"
cidr = "10.20.0.0/16"
subnet = [
  {{ name = "app", cidr = "10.20.1.0/24" }},
  {{ name = "db", cidr = "10.20.2.0/24" }},
]
instance = [
  {{ name = "a1", subnet = "app", ip = "10.20.1.10" }},
  {{ name = "a2", subnet = "app", ip = "10.20.1.11" }},
  {{ name = "b1", subnet = "db", ip = "10.20.2.10" }},
]
"#
    )
}

#[test]
fn http_between_instances_in_one_vpc_and_across_subnets() {
    if !capable("http_between_instances", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vr-http", &one_vpc("v"));
    assert!(run.banner.contains("v/a1"), "{}", run.banner);
    assert!(run.banner.contains("vr-http-v-a1"), "{}", run.banner);
    run.http_server("v/a2", "10.20.1.11", 8080, "hello from a2\n");
    run.http_server("v/b1", "10.20.2.10", 8080, "hello from b1\n");
    // Same subnet, then across subnets (the fabric is not a visible hop either way).
    assert_eq!(
        run.curl("v/a1", "http://10.20.1.11:8080/").as_deref(),
        Ok("hello from a2\n")
    );
    assert_eq!(
        run.curl("v/a1", "http://10.20.2.10:8080/").as_deref(),
        Ok("hello from b1\n")
    );
    // Nobody listens on b1:9: refused at once (a RST crossed the fabric), not a timeout.
    let err = run.curl("v/a1", "http://10.20.2.10:9/").unwrap_err();
    assert!(
        err.contains("refused") || err.contains("Couldn't connect"),
        "{err}"
    );
    run.stop();
}

#[test]
fn ping_another_instance_and_the_subnet_gateway() {
    if !capable("ping", &["ping"]) {
        return;
    }
    let run = Run::up("vr-ping", &one_vpc("v"));
    for target in ["10.20.2.10", "10.20.1.11", "10.20.1.1"] {
        let out = run.exec("v/a1", &["ping", "-c", "2", "-i", "0.2", "-W", "2", target]);
        assert!(out.status.success(), "ping {target}: {}", text(&out));
    }
    // The other subnet's gateway answers too (it is the VPC's router, not a host).
    let out = run.exec("v/a1", &["ping", "-c", "1", "-W", "2", "10.20.2.1"]);
    assert!(out.status.success(), "{}", text(&out));
    // An address nobody has: no answer.
    let out = run.exec("v/a1", &["ping", "-c", "1", "-W", "1", "10.20.2.99"]);
    assert!(!out.status.success(), "{}", text(&out));
    run.stop();
}

#[test]
fn two_tenants_with_the_same_cidr_cannot_reach_each_other() {
    if !capable("two_tenants", &["curl", "python3"]) {
        return;
    }
    // Both tenants use 10.30.0.0/16; both have an instance at 10.30.1.10.
    let topo = r#"
[[vpc]]
name = "t1"
cidr = "10.30.0.0/16"
subnet = [ { name = "s", cidr = "10.30.1.0/24" } ]
instance = [
  { name = "x", subnet = "s", ip = "10.30.1.10" },
  { name = "c", subnet = "s", ip = "10.30.1.20" },
]

[[vpc]]
name = "t2"
cidr = "10.30.0.0/16"
subnet = [ { name = "s", cidr = "10.30.1.0/24" } ]
instance = [
  { name = "x", subnet = "s", ip = "10.30.1.10" },
  { name = "y", subnet = "s", ip = "10.30.1.30" },
]
"#;
    let mut run = Run::up("vr-ten", topo);
    run.http_server("t1/x", "10.30.1.10", 8080, "tenant one\n");
    run.http_server("t2/x", "10.30.1.10", 8080, "tenant two\n");
    run.http_server("t2/y", "10.30.1.30", 8080, "tenant two y\n");
    // The same address means the caller's own tenant.
    assert_eq!(
        run.curl("t1/c", "http://10.30.1.10:8080/").as_deref(),
        Ok("tenant one\n")
    );
    assert_eq!(
        run.curl("t2/y", "http://10.30.1.10:8080/").as_deref(),
        Ok("tenant two\n")
    );
    // t2/y's address does not exist in t1: the connect attempt fails.
    let err = run.curl("t1/c", "http://10.30.1.30:8080/").unwrap_err();
    assert!(!err.is_empty());
    let out = run.exec("t1/c", &["ping", "-c", "1", "-W", "1", "10.30.1.30"]);
    assert!(!out.status.success(), "{}", text(&out));
    run.stop();
}

#[test]
fn iperf3_between_two_instances() {
    if !capable("iperf3", &["iperf3"]) {
        return;
    }
    let mut run = Run::up("vr-perf", &one_vpc("v"));
    run.spawn(
        "v/b1",
        &["iperf3", "-s", "-1", "-B", "10.20.2.10", "-p", "5201"],
        "iperf3-server.log",
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut out = None;
    for _ in 0..10 {
        let o = run.exec_timeout(
            "v/a1",
            &[
                "iperf3",
                "-c",
                "10.20.2.10",
                "-p",
                "5201",
                "-t",
                "3",
                "-f",
                "m",
                "--connect-timeout",
                "1000",
            ],
            Duration::from_secs(15),
        );
        if o.status.success() {
            out = Some(o);
            break;
        }
        // The server may not listen yet.
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = out.expect("iperf3 client never succeeded");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mbits = iperf3_receiver_mbits(&stdout).unwrap_or_else(|| panic!("{stdout}"));
    println!("iperf3 a1 -> b1 through vpcd (3 s, TCP): {mbits:.0} Mbit/s");
    assert!(mbits > 1.0, "{stdout}");
    run.stop();
}

#[test]
fn mtu_is_respected_with_frag_needed() {
    if !capable("mtu", &["ping"]) {
        return;
    }
    let topo = r#"
[[vpc]]
name = "m"
cidr = "10.40.0.0/16"
subnet = [ { name = "s", cidr = "10.40.1.0/24" } ]
instance = [
  { name = "big", subnet = "s", ip = "10.40.1.10", mtu = 9000 },
  { name = "small", subnet = "s", ip = "10.40.1.20", mtu = 1280 },
]
"#;
    let run = Run::up("vr-mtu", topo);
    let link = run.exec("m/small", &["ip", "-o", "link", "show", "vpcd0"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("mtu 1280"),
        "{}",
        text(&link)
    );
    // 1252 + 28 = 1280 fits the small port exactly.
    let ok = run.exec(
        "m/big",
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1252",
            "10.40.1.20",
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok));
    // 1400 + 28 does not: the sender's gateway says fragmentation needed, MTU 1280.
    let too_big = run.exec(
        "m/big",
        &[
            "ping",
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1400",
            "10.40.1.20",
        ],
    );
    let all = text(&too_big);
    assert!(!too_big.status.success(), "{all}");
    assert!(
        all.contains("mtu = 1280") || all.contains("mtu=1280") || all.contains("Frag needed"),
        "{all}"
    );
    run.stop();
}

#[test]
fn exec_returns_the_commands_status_and_names_unknown_endpoints() {
    if !capable("exec", &["sh"]) {
        return;
    }
    let run = Run::up("vr-exec", &one_vpc("v"));
    let out = run.exec("v/a1", &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let out = run.exec("v/nope", &["true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no network namespace"));
    let out = run.exec("v/a1", &["/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    // The only interfaces inside are lo and the TUN device.
    let out = run.exec("v/a1", &["ip", "-o", "link"]);
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 2, "{links}");
    assert!(links.contains("vpcd0"), "{links}");
    run.stop();
}

#[test]
fn sim_and_netns_endpoints_work_side_by_side() {
    if !capable("sim_side_by_side", &["curl", "ping"]) {
        return;
    }
    let topo = r#"
[[vpc]]
name = "s"
cidr = "10.50.0.0/16"
subnet = [ { name = "s", cidr = "10.50.1.0/24" } ]
instance = [
  { name = "real", subnet = "s", ip = "10.50.1.10" },
  { name = "inproc", subnet = "s", ip = "10.50.1.20", attach = "sim" },
]

[internet]
cidr = "198.51.100.0/24"
host = [
  { name = "vr-sim-web", ip = "198.51.100.10", serve = ["tcp:80"], attach = "sim" },
  { name = "vr-sim-cli", ip = "198.51.100.20" },
]
"#;
    let run = Run::up("vr-sim", topo);
    assert!(run.banner.contains("(in process)"), "{}", run.banner);
    let out = run.exec("s/real", &["ping", "-c", "1", "-W", "2", "10.50.1.20"]);
    assert!(out.status.success(), "{}", text(&out));
    // A public netns host fetches a page from a public sim host.
    let page = run
        .curl("internet/vr-sim-cli", "http://198.51.100.10/")
        .expect("sim web answers");
    assert!(page.contains("internet/vr-sim-web"), "{page}");
    run.stop();
}

#[test]
fn teardown_after_sigint_and_sigterm_ends_processes_inside() {
    if !capable("teardown_signals", &["sleep"]) {
        return;
    }
    for (prefix, signal) in [("vr-int", "INT"), ("vr-term", "TERM")] {
        let mut run = Run::up(prefix, &one_vpc("v"));
        assert_eq!(run.leftovers().len(), 3);
        let pid = run.spawn("v/a1", &["sleep", "60"], "sleep.log");
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let (status, rest) = run.signal(signal);
        assert!(status.success(), "SIG{signal}: {status} {rest}");
        assert!(rest.contains("stopped: removed 3 namespace(s)"), "{rest}");
        assert!(started.elapsed() < Duration::from_secs(10));
        run.assert_gone();
        // The process vpcd exec started inside is gone too (a zombie until reaped, at most).
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z"),
            "sleep still runs: {state}"
        );
    }
}

#[test]
fn kill_9_leaves_namespaces_that_vpcd_down_removes() {
    if !capable("kill_9", &[]) {
        return;
    }
    let mut run = Run::up("vr-k9", &one_vpc("v"));
    let (status, _) = run.signal("KILL");
    assert!(!status.success());
    assert_eq!(run.leftovers().len(), 3, "kill -9 cannot clean up");
    let out = run.down();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed vr-k9-v-a1"),
        "{}",
        text(&out)
    );
    run.assert_gone();
    // A second `down` finds nothing.
    let out = run.down();
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to remove"));
}

#[test]
fn a_second_up_of_the_same_topology_is_refused() {
    if !capable("lock", &["ping"]) {
        return;
    }
    let run = Run::up("vr-lock", &one_vpc("v"));
    let second = run
        .vpcd()
        .arg("up")
        .arg(&run.topology)
        .output()
        .expect("second vpcd up");
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already up"), "{err}");
    assert!(err.contains(&run.pid().to_string()), "{err}");
    // `vpcd down` leaves a live run alone, and says so.
    let down = run.down();
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    // The first run still serves.
    let out = run.exec("v/a1", &["ping", "-c", "1", "-W", "2", "10.20.2.10"]);
    assert!(out.status.success(), "{}", text(&out));
    run.stop();
}
