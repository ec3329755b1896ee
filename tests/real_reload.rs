//! `vpcd up` reloads its topology file on SIGHUP, live (root; CI runs them): an instance with a
//! DNAT rule and another with a 1:1 EIP come and go while a TCP transfer through SNAT keeps
//! running without a stall; a broken file keeps the old network; namespaces added by a reload
//! are recorded, so `vpcd down` removes them after `kill -9`.
//!
//! The topologies are also checked for validity without root.

mod real_support;

use std::process::Command;
use std::time::Duration;

use real_support::{Run, VPCD, capable, text};

const RELOADED: &str = "reloaded ";
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// A function subnet behind a NAT gateway (SNAT), a public subnet, one public host in a
/// namespace. With `extra`: an instance `f0` placed before `f1` (so `f1`'s port id shifts) with a
/// DNAT rule 203.0.113.10:8081 -> f0:8080, and an instance `e2` with the 1:1 EIP 203.0.113.21.
fn topology(extra: bool) -> String {
    let f0 = if extra {
        r#"
  [[vpc.instance]]
  name = "f0"
  subnet = "fn"
  ip = "10.61.1.5"
  security_groups = ["open"]
"#
    } else {
        ""
    };
    let e2 = if extra {
        r#"
  [[vpc.instance]]
  name = "e2"
  subnet = "public"
  ip = "10.61.9.30"
  eip = "direct"
  security_groups = ["open"]
"#
    } else {
        ""
    };
    let dnat = if extra {
        r#"dnat = [ { eip = "gw", protocol = "tcp", port = 8081, instance = "f0", instance_port = 8080 } ]"#
    } else {
        ""
    };
    let direct = if extra {
        "\n[[eip]]\nname = \"direct\"\naddress = \"203.0.113.21\"\n"
    } else {
        ""
    };
    format!(
        r#"
[[vpc]]
name = "r"
cidr = "10.61.0.0/16"

  [[vpc.subnet]]
  name = "fn"
  cidr = "10.61.1.0/24"

  [[vpc.subnet]]
  name = "public"
  cidr = "10.61.9.0/24"
  route_table = "public"

  [[vpc.route_table]]
  name = "main"
  routes = [ {{ destination = "0.0.0.0/0", target = "nat:egress" }} ]

  [[vpc.route_table]]
  name = "public"
  routes = [ {{ destination = "0.0.0.0/0", target = "internet" }} ]

  [[vpc.security_group]]
  name = "open"
  ingress = [ {{ protocol = "all", peer = "0.0.0.0/0" }} ]
{f0}
  [[vpc.instance]]
  name = "f1"
  subnet = "fn"
  ip = "10.61.1.10"
  security_groups = ["open"]
{e2}
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["gw"]
  snat = [ {{ source = "10.61.0.0/16" }} ]
  {dnat}

[[eip]]
name = "gw"
address = "203.0.113.10"
{direct}
[internet]
cidr = "198.51.100.0/24"
host = [ {{ name = "web", ip = "198.51.100.10" }} ]
"#
    )
}

#[test]
fn reload_topologies_are_valid() {
    let dir = std::env::temp_dir().join(format!("vpcd-real-reload-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in [
        ("base.toml", topology(false)),
        ("extra.toml", topology(true)),
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

/// The per-second interval lines of iperf3's text output (`-f m -i 1`), as Mbit/s.
fn iperf3_intervals(text: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with("[  ") && l.contains(" sec ") && !l.contains("sender"))
        .filter(|l| !l.contains("receiver"))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "Mbits/sec")?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        })
        .collect()
}

fn wait_reloads(run: &Run, n: usize) {
    assert!(
        run.wait_output(RELOADED, n, RELOAD_TIMEOUT),
        "{}: reload {n} not reported:\n{}",
        run.name,
        run.output()
    );
}

#[test]
fn sighup_adds_and_removes_instances_while_a_transfer_through_snat_keeps_flowing() {
    if !capable("reload_live", &["iperf3", "curl", "python3", "ping"]) {
        return;
    }
    let mut run = Run::up("vr-live", &topology(false));
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    run.spawn(
        "internet/web",
        &["iperf3", "-s", "-1", "-B", "198.51.100.10", "--forceflush"],
        "iperf3-server.log",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !run.log("iperf3-server.log").contains("listening") {
        assert!(
            std::time::Instant::now() < deadline,
            "iperf3 -s did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = run.spawn(
        "r/f1",
        &[
            "iperf3",
            "-c",
            "198.51.100.10",
            "-t",
            "8",
            "-i",
            "1",
            "-f",
            "m",
            "--connect-timeout",
            "2000",
            "--forceflush",
        ],
        "iperf3-client.log",
    );
    // Reload while the transfer runs: add f0 (before f1: f1's port id shifts) with a DNAT rule,
    // and e2 with a 1:1 EIP.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        run.log("iperf3-client.log").contains("Mbits/sec"),
        "the transfer did not start: {}",
        run.log("iperf3-client.log")
    );
    run.rewrite(&topology(true));
    run.hup();
    wait_reloads(&run, 1);
    let out = run.output();
    assert!(out.contains("+2 (r/f0, r/e2)"), "{out}");
    assert!(out.contains("renumbered"), "{out}");
    assert!(
        run.leftovers().contains(&format!("{}-r-f0", run.prefix)),
        "{:?}",
        run.leftovers()
    );

    // The new instance reaches the internet through SNAT (curl, ping)...
    assert_eq!(
        run.curl("r/f0", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    let ping = run.exec("r/f0", &["ping", "-c", "2", "-W", "2", "198.51.100.10"]);
    assert!(ping.status.success(), "{}", text(&ping));
    // ...and is reachable through its DNAT rule; e2 through its 1:1 EIP.
    run.http_server("r/f0", "10.61.1.5", 8080, "f0 page\n");
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.10:8081/")
            .as_deref(),
        Ok("f0 page\n")
    );
    run.http_server("r/e2", "10.61.9.30", 80, "e2 page\n");
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.21/").as_deref(),
        Ok("e2 page\n")
    );

    // The transfer that ran across the reload never stalled and ended cleanly.
    let status = run
        .wait_background(client, Duration::from_secs(20))
        .expect("iperf3 client did not finish");
    let log = run.log("iperf3-client.log");
    println!("{log}");
    assert!(status.success(), "iperf3 failed across the reload: {log}");
    let intervals = iperf3_intervals(&log);
    assert!(intervals.len() >= 8, "{log}");
    assert!(
        intervals.iter().all(|m| *m > 0.0),
        "an interval without throughput: {intervals:?}\n{log}"
    );

    // Remove both again: the namespaces go, the DNAT rule and the EIP stop answering.
    run.rewrite(&topology(false));
    run.hup();
    wait_reloads(&run, 2);
    let out = run.output();
    assert!(out.contains("-2 (r/f0, r/e2)"), "{out}");
    // The namespaces of removed endpoints are deleted in the background (issue 20: a detach
    // does not wait for it), within moments.
    let gone_by = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = run.leftovers();
        let removed_left = left
            .iter()
            .any(|n| n.ends_with("-r-f0") || n.ends_with("-r-e2"));
        if !removed_left {
            break;
        }
        assert!(std::time::Instant::now() < gone_by, "{left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        run.curl("internet/web", "http://203.0.113.10:8081/")
            .is_err()
    );
    assert!(run.curl("internet/web", "http://203.0.113.21/").is_err());
    // What stayed keeps working.
    assert_eq!(
        run.curl("r/f1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    run.stop();
}

#[test]
fn a_broken_file_on_sighup_keeps_the_old_network() {
    if !capable("reload_broken", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vr-bad", &topology(false));
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    assert_eq!(
        run.curl("r/f1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    // Not TOML at all, then valid TOML that does not validate (an instance outside its subnet).
    run.rewrite("[[vpc]\nname = \n");
    run.hup();
    assert!(
        run.wait_output("still running the previous topology", 1, RELOAD_TIMEOUT),
        "{}",
        run.output()
    );
    run.rewrite(&topology(false).replace("ip = \"10.61.1.10\"", "ip = \"10.99.1.10\""));
    run.hup();
    assert!(
        run.wait_output("still running the previous topology", 2, RELOAD_TIMEOUT),
        "{}",
        run.output()
    );
    assert!(!run.output().contains(RELOADED), "{}", run.output());
    assert_eq!(
        run.curl("r/f1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    // A good file afterwards applies.
    run.rewrite(&topology(true));
    run.hup();
    wait_reloads(&run, 1);
    assert_eq!(
        run.curl("r/f0", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    let rest = run.stop();
    assert!(rest.contains("stopped: removed 4 namespace(s)"), "{rest}");
}

#[test]
fn namespaces_added_by_a_reload_are_removed_by_down_after_kill_9() {
    if !capable("reload_kill9", &[]) {
        return;
    }
    let mut run = Run::up("vr-k9", &topology(false));
    run.rewrite(&topology(true));
    run.hup();
    wait_reloads(&run, 1);
    let ns = format!("{}-r-f0", run.prefix);
    assert!(run.leftovers().contains(&ns), "{:?}", run.leftovers());
    // The file no longer lists f0: only the state file can tell `down` about it.
    run.rewrite(&topology(false));
    let (status, _) = run.signal("KILL");
    assert!(!status.success());
    assert!(run.leftovers().contains(&ns));
    let out = run.down();
    assert!(out.status.success(), "{}", text(&out));
    run.assert_gone();
}

#[test]
fn sighup_replaces_a_changed_instance_and_adds_a_sim_host() {
    if !capable("reload_replace", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vr-repl", &topology(false));
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    // f1 moves to another address (same name: made again), and a sim host appears.
    let changed = topology(false)
        .replace("ip = \"10.61.1.10\"", "ip = \"10.61.1.11\"")
        .replace(
            "host = [ { name = \"web\", ip = \"198.51.100.10\" } ]",
            "host = [ { name = \"web\", ip = \"198.51.100.10\" }, { name = \"echo\", ip = \"198.51.100.20\", attach = \"sim\", serve = [\"tcp:80\"] } ]",
        );
    run.rewrite(&changed);
    run.hup();
    wait_reloads(&run, 1);
    let out = run.output();
    assert!(out.contains("+1 (internet/echo)"), "{out}");
    // f1's new address is a change of the VPC's names: its resolver takes them in place.
    assert!(out.contains("~1 (r/f1)"), "{out}");
    let addr = run.exec("r/f1", &["ip", "-4", "-o", "addr", "show", "dev", "vpcd0"]);
    let addr = text(&addr);
    assert!(addr.contains("10.61.1.11/24"), "{addr}");
    assert_eq!(
        run.curl("r/f1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    let sim = run.curl("r/f1", "http://198.51.100.20/");
    assert!(
        sim.as_ref().is_ok_and(|b| b.contains("vpcd sim host")),
        "{sim:?}"
    );
    // The web server saw the NAT gateway's address for both.
    assert!(run.log("http-80-internet-web.log").contains("203.0.113.10"));
    let rest = run.stop();
    assert!(rest.contains("stopped: removed 2 namespace(s)"), "{rest}");
}

#[test]
fn flow_logs_follow_renumbered_ports_and_a_captured_endpoint_refuses_to_move() {
    if !capable("reload_observe", &["curl", "python3"]) {
        return;
    }
    let mut run = Run::up_with(
        "vr-obs",
        &topology(false),
        &["--flow-log", "{dir}/flows.jsonl"],
    );
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    // A flow counted before the reload, in the same window.
    assert_eq!(
        run.curl("r/f1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    // f0 comes before f1: f1's port id shifts, its flow-log records keep its name.
    run.rewrite(&topology(true));
    run.hup();
    wait_reloads(&run, 1);
    for ep in ["r/f0", "r/f1"] {
        assert_eq!(
            run.curl(ep, "http://198.51.100.10/").as_deref(),
            Ok("public page\n"),
            "{ep}"
        );
    }
    let log = run.dir.join("flows.jsonl");
    let rest = run.stop_in_place();
    assert!(rest.contains("flow-log record(s) written"), "{rest}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let egress_from = |ep: &str, addr: &str| {
        text.lines().any(|l| {
            l.contains(&format!("\"interface-id\":\"{ep}\""))
                && l.contains(&format!("\"srcaddr\":\"{addr}\""))
                && l.contains("\"flow-direction\":\"egress\"")
        })
    };
    assert!(egress_from("r/f0", "10.61.1.5"), "{text}");
    assert!(egress_from("r/f1", "10.61.1.10"), "{text}");
    // Nothing f1 sent is reported under the name of the port that took its old id.
    assert!(!egress_from("r/f0", "10.61.1.10"), "{text}");
    drop(run);

    // Under --capture, a change that would move the captured port is refused.
    let mut run = Run::up_with(
        "vr-cap",
        &topology(false),
        &["--capture", "r/f1={dir}/f1.pcap"],
    );
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    run.rewrite(&topology(true));
    run.hup();
    assert!(
        run.wait_output("still running the previous topology", 1, RELOAD_TIMEOUT),
        "{}",
        run.output()
    );
    assert!(run.output().contains("--capture r/f1"), "{}", run.output());
    assert!(!run.leftovers().iter().any(|n| n.ends_with("-r-f0")));
    assert_eq!(
        run.curl("r/f1", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    run.stop();
}
