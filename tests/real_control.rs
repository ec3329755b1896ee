//! The control API against a running `vpcd up --state DIR` (root; CI runs them), spoken as raw
//! HTTP on its socket so that the API itself is pinned, independent of `vpcd ctl`:
//! - an EIP moved to another instance takes the internet's traffic with it;
//! - removing a security-group rule or a DNAT entry refuses new flows;
//! - a long TCP transfer through SNAT never stalls or resets while instances, EIPs and rules
//!   are added and removed around it;
//! - the TCP listener refuses requests without the right bearer token;
//! - `kill -9` during a burst of API writes leaves a state directory that loads, with every
//!   acknowledged change in it;
//! - bad input of every kind gets a 4xx JSON error naming the field, and changes nothing.

mod real_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use real_support::{Run, capable};
use serde_json::{Value, json};

const TOPOLOGY: &str = r#"
[[vpc]]
name = "a"
cidr = "10.63.0.0/16"

  [[vpc.subnet]]
  name = "fn"
  cidr = "10.63.1.0/24"

  [[vpc.subnet]]
  name = "public"
  cidr = "10.63.9.0/24"
  route_table = "public"

  [[vpc.route_table]]
  name = "main"
  routes = [ { destination = "0.0.0.0/0", target = "nat:egress" } ]

  [[vpc.route_table]]
  name = "public"
  routes = [ { destination = "0.0.0.0/0", target = "internet" } ]

  [[vpc.security_group]]
  name = "web"
  ingress = [ { protocol = "tcp", ports = 8080, peer = "0.0.0.0/0" } ]

  [[vpc.instance]]
  name = "f1"
  subnet = "fn"
  ip = "10.63.1.10"
  security_groups = ["web"]

  [[vpc.instance]]
  name = "p1"
  subnet = "public"
  ip = "10.63.9.11"
  security_groups = ["web"]

  [[vpc.instance]]
  name = "p2"
  subnet = "public"
  ip = "10.63.9.12"
  security_groups = ["web"]

  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["gw"]
  snat = [ { source = "10.63.0.0/16" } ]
  dnat = [ { eip = "gw", protocol = "tcp", port = 80, instance = "f1", instance_port = 8080 } ]

[[eip]]
name = "gw"
address = "203.0.113.30"

[[eip]]
name = "moving"
address = "203.0.113.31"

[internet]
cidr = "198.51.100.0/24"
host = [ { name = "web", ip = "198.51.100.10" } ]
"#;

/// The state directory (outside the run's directory, which a restart recreates).
struct StateDir(PathBuf);

impl StateDir {
    fn new(tag: &str) -> StateDir {
        let p =
            std::env::temp_dir().join(format!("vpcd-real-control-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        StateDir(p)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The run's API socket (bound right after the ready line: wait for it). One that refuses
/// connections is a killed run's, not yet replaced by this run's.
fn socket(run: &Run) -> PathBuf {
    let dir = run.dir.join("run");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .filter(|p| UnixStream::connect(p).is_ok())
        {
            return p;
        }
        assert!(Instant::now() < deadline, "no API socket: {}", run.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over any stream: (status, body as JSON or as a string value).
fn exchange(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    body: &str,
    extra: &str,
) -> std::io::Result<(u16, Value)> {
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_str(rest).unwrap_or_else(|_| Value::String(rest.to_string()));
    Ok((status, body))
}

fn call(sock: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let s = UnixStream::connect(sock).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    exchange(s, method, path, body, "").expect("API exchange")
}

/// `POST /v1/ops/OP` that must succeed.
fn op(sock: &Path, name: &str, body: Value) -> Value {
    let (code, answer) = call(sock, "POST", &format!("/v1/ops/{name}"), &body.to_string());
    assert_eq!(code, 200, "{name} {body}: {answer}");
    answer
}

fn topology_text(sock: &Path) -> String {
    let (code, v) = call(sock, "GET", "/v1/topology", "");
    assert_eq!(code, 200);
    v.as_str().expect("text").to_string()
}

#[test]
fn an_eip_moved_to_another_instance_takes_its_traffic_along() {
    if !capable("real_control_eip_move", &["curl", "python3"]) {
        return;
    }
    let state = StateDir::new("move");
    let mut run = Run::up_with("vcm", TOPOLOGY, &["--state", &state.arg()]);
    let sock = socket(&run);
    run.http_server("a/p1", "10.63.9.11", 8080, "p1 page\n");
    run.http_server("a/p2", "10.63.9.12", 8080, "p2 page\n");

    op(
        &sock,
        "associate_eip",
        json!({"eip": "moving", "vpc": "a", "instance": "p1"}),
    );
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.31:8080/")
            .as_deref(),
        Ok("p1 page\n")
    );
    // Without allow_reassociation the cloud refuses to take an EIP from its instance.
    let (code, e) = call(
        &sock,
        "POST",
        "/v1/ops/associate_eip",
        &json!({"eip": "moving", "vpc": "a", "instance": "p2"}).to_string(),
    );
    assert_eq!(code, 409, "{e}");
    assert!(
        e["errors"][0]["hint"]
            .as_str()
            .unwrap_or("")
            .contains("allow_reassociation"),
        "{e}"
    );

    op(
        &sock,
        "associate_eip",
        json!({"eip": "moving", "vpc": "a", "instance": "p2", "allow_reassociation": true}),
    );
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.31:8080/")
            .as_deref(),
        Ok("p2 page\n")
    );
    let (_, eips) = call(&sock, "GET", "/v1/eips", "");
    let moving = eips
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "moving"))
        .expect("the EIP is listed");
    assert_eq!(
        moving["association"],
        json!({"vpc": "a", "instance": "p2"}),
        "{eips}"
    );
    let (_, instances) = call(&sock, "GET", "/v1/vpcs/a/instances", "");
    let p1 = instances
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "p1"))
        .expect("p1 listed");
    assert_eq!(p1["eip"], Value::Null, "{instances}");
    run.stop();
}

#[test]
fn removing_a_rule_or_a_port_forward_refuses_new_flows() {
    if !capable("real_control_rules", &["curl", "python3"]) {
        return;
    }
    let state = StateDir::new("rules");
    let mut run = Run::up_with("vcr", TOPOLOGY, &["--state", &state.arg()]);
    let sock = socket(&run);
    run.http_server("a/f1", "10.63.1.10", 8080, "f1 page\n");
    run.http_server("a/p1", "10.63.9.11", 8080, "p1 page\n");
    op(
        &sock,
        "associate_eip",
        json!({"eip": "moving", "vpc": "a", "instance": "p1"}),
    );
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.31:8080/")
            .as_deref(),
        Ok("p1 page\n")
    );
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.30/").as_deref(),
        Ok("f1 page\n")
    );

    // The group's only ingress rule goes: the internet's new connections are refused.
    op(
        &sock,
        "remove_sg_rule",
        json!({"vpc": "a", "group": "web", "direction": "ingress", "protocol": "tcp",
               "ports": 8080, "peer": "0.0.0.0/0"}),
    );
    assert!(
        run.curl("internet/web", "http://203.0.113.31:8080/")
            .is_err()
    );
    // ... and come back with it.
    op(
        &sock,
        "add_sg_rule",
        json!({"vpc": "a", "group": "web", "direction": "ingress", "protocol": "tcp",
               "ports": 8080, "peer": "198.51.100.0/24"}),
    );
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.31:8080/")
            .as_deref(),
        Ok("p1 page\n")
    );
    // The port forward goes: the EIP's port 80 reaches nobody.
    op(
        &sock,
        "remove_dnat",
        json!({"vpc": "a", "nat_gateway": "egress", "eip": "gw", "protocol": "tcp", "port": 80}),
    );
    assert!(run.curl("internet/web", "http://203.0.113.30/").is_err());
    run.stop();
}

#[test]
fn a_transfer_through_snat_keeps_flowing_while_the_api_changes_everything_else() {
    if !capable("real_control_iperf", &["iperf3"]) {
        return;
    }
    let state = StateDir::new("iperf");
    let mut run = Run::up_with("vci", TOPOLOGY, &["--state", &state.arg()]);
    let sock = socket(&run);
    run.spawn(
        "internet/web",
        &["iperf3", "-s", "-1", "-B", "198.51.100.10"],
        "server.log",
    );
    std::thread::sleep(Duration::from_millis(500));
    let client = run.spawn(
        "a/f1",
        &[
            "iperf3",
            "-c",
            "198.51.100.10",
            "-t",
            "8",
            "-i",
            "0.5",
            "-f",
            "m",
            "--connect-timeout",
            "3000",
        ],
        "client.log",
    );
    std::thread::sleep(Duration::from_millis(1000));
    for round in 0..4 {
        let name = format!("x{round}");
        op(
            &sock,
            "add_instance",
            json!({"vpc": "a", "name": name, "subnet": "public", "security_groups": ["web"]}),
        );
        op(
            &sock,
            "allocate_eip",
            json!({"name": format!("e{round}"), "address": format!("203.0.113.{}", 40 + round)}),
        );
        op(
            &sock,
            "associate_eip",
            json!({"eip": format!("e{round}"), "vpc": "a", "instance": name}),
        );
        op(
            &sock,
            "add_sg_rule",
            json!({"vpc": "a", "group": "web", "direction": "ingress", "protocol": "udp",
                   "ports": 5000 + round, "peer": "0.0.0.0/0"}),
        );
        op(
            &sock,
            "disassociate_eip",
            json!({"eip": format!("e{round}")}),
        );
        op(&sock, "release_eip", json!({"name": format!("e{round}")}));
        op(&sock, "remove_instance", json!({"vpc": "a", "name": name}));
        op(
            &sock,
            "remove_sg_rule",
            json!({"vpc": "a", "group": "web", "direction": "ingress", "protocol": "udp",
                   "ports": 5000 + round, "peer": "0.0.0.0/0"}),
        );
    }
    let status = run.wait_background(client, Duration::from_secs(30));
    let log = run.log("client.log");
    assert!(status.is_some_and(|s| s.success()), "iperf3 failed: {log}");
    let intervals: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("Mbits/sec") && !l.contains("sender") && !l.contains("receiver"))
        .filter_map(|l| {
            let i = l.find("Mbits/sec")?;
            l[..i].split_whitespace().last()?.parse().ok()
        })
        .collect();
    assert!(intervals.len() >= 12, "too few intervals: {log}");
    assert!(
        intervals.iter().all(|m| *m > 0.0),
        "the transfer stalled during the changes: {intervals:?}\n{log}"
    );
    run.stop();
}

#[test]
fn the_tcp_listener_wants_the_bearer_token() {
    if !capable("real_control_token", &[]) {
        return;
    }
    let state = StateDir::new("token");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let token_dir = StateDir::new("token-file");
    std::fs::create_dir_all(&token_dir.0).expect("dir");
    let token_file = token_dir.0.join("token");
    std::fs::write(&token_file, "s3cret-token-for-the-test\n").expect("token");
    let listen = format!("127.0.0.1:{port}");
    let token_arg = token_file.display().to_string();

    // Without a token file, TCP is refused before anything starts.
    let out = std::process::Command::new(real_support::VPCD)
        .args([
            "up",
            "/nonexistent.toml",
            "--state",
            &state.arg(),
            "--api-listen",
            &listen,
        ])
        .output()
        .expect("vpcd up");
    assert_eq!(out.status.code(), Some(2), "{}", real_support::text(&out));

    let run = Run::up_with(
        "vct",
        TOPOLOGY,
        &[
            "--state",
            &state.arg(),
            "--api-listen",
            &listen,
            "--api-token-file",
            &token_arg,
        ],
    );
    socket(&run);
    let tcp = |extra: &str| {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        exchange(s, "GET", "/v1/status", "", extra).expect("exchange")
    };
    let (code, v) = tcp("");
    assert_eq!(code, 401, "{v}");
    assert_eq!(v["errors"][0]["code"], "unauthorized", "{v}");
    let (code, v) = tcp("Authorization: Bearer wrong-token-wrong-token\r\n");
    assert_eq!(code, 401, "{v}");
    let (code, v) = tcp("Authorization: Bearer s3cret-token-for-the-test\r\n");
    assert_eq!(code, 200, "{v}");
    assert!(v["generation"].is_u64(), "{v}");
    // A change without the token does not happen.
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (code, _) = exchange(
        s,
        "POST",
        "/v1/ops/allocate_eip",
        &json!({"name": "sneaky", "address": "203.0.113.99"}).to_string(),
        "",
    )
    .expect("exchange");
    assert_eq!(code, 401);
    assert!(!topology_text(&socket(&run)).contains("sneaky"));
    run.stop();
}

#[test]
fn bad_input_of_every_kind_is_a_4xx_that_changes_nothing() {
    if !capable("real_control_bad_input", &[]) {
        return;
    }
    let state = StateDir::new("bad");
    let run = Run::up_with("vcb", TOPOLOGY, &["--state", &state.arg()]);
    let sock = socket(&run);
    let before = topology_text(&sock);
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(70_000));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        // (method, path, body, status, field the error names)
        ("POST", "/v1/ops/add_instance", r#"{"vpc":"a","name":7,"subnet":"fn"}"#.into(), 400, "name"),
        ("POST", "/v1/ops/add_instance", r#"{"vpc":"a","name":"z","subnet":"fn","colour":"red"}"#.into(), 400, "colour"),
        ("POST", "/v1/ops/add_instance", r#"{"vpc":"a","name":"z","subnet":"fn""#.into(), 400, ""),
        ("POST", "/v1/ops/add_instance", r#"{"vpc":"a","name":"z","subnet":"nope"}"#.into(), 400, "subnet"),
        ("POST", "/v1/ops/add_instance", r#"{"vpc":"nope","name":"z","subnet":"fn"}"#.into(), 404, "vpc"),
        ("POST", "/v1/ops/add_instance", r#"{"vpc":"a","name":"f1","subnet":"fn"}"#.into(), 409, "name"),
        ("POST", "/v1/ops/add_instance", r#"{"vpc":"a","name":"z","subnet":"fn","ip":"10.64.1.5"}"#.into(), 400, "ip"),
        ("POST", "/v1/ops/add_dnat", r#"{"vpc":"a","nat_gateway":"egress","eip":"gw","protocol":"tcp","port":70000,"instance":"f1"}"#.into(), 400, "port"),
        ("POST", "/v1/ops/add_dnat", r#"{"vpc":"a","nat_gateway":"egress","eip":"gw","protocol":"tcp","port":0,"instance":"f1"}"#.into(), 400, "port"),
        ("POST", "/v1/ops/add_route", r#"{"vpc":"a","route_table":"main","destination":"10.0.0.0/33","target":"internet"}"#.into(), 400, "destination"),
        ("POST", "/v1/ops/add_subnet", r#"{"vpc":"a","name":"dup","cidr":"10.63.1.128/25"}"#.into(), 400, "cidr"),
        ("POST", "/v1/ops/allocate_eip", r#"{"name":"e","address":"203.0.113.30"}"#.into(), 400, "address"),
        ("POST", "/v1/ops/release_eip", r#"{"name":"gw"}"#.into(), 409, ""),
        ("POST", "/v1/ops/remove_instance", r#"{"vpc":"a","name":"f1"}"#.into(), 409, ""),
        ("POST", "/v1/ops/frobnicate", "{}".into(), 404, ""),
        ("POST", "/v1/ops/add_instance", big, 413, ""),
        ("GET", "/v1/vpcs/nope", String::new(), 404, "vpc"),
        ("GET", "/v1/vpcs/a/widgets", String::new(), 404, ""),
        ("GET", "/v1/ops/add_instance", String::new(), 405, ""),
        ("GET", "/v2/anything", String::new(), 404, ""),
        ("POST", "/v1/explain", r#"{"from":"a/nobody","to":"198.51.100.10:80/tcp"}"#.into(), 400, "from"),
        ("POST", "/v1/explain", r#"{"from":"a/f1","to":"198.51.100.10:80/sctp"}"#.into(), 400, "to"),
    ];
    for (method, path, body, status, field) in &cases {
        let (code, v) = call(&sock, method, path, body);
        assert_eq!(
            code,
            *status,
            "{method} {path} {}: {v}",
            &body[..body.len().min(120)]
        );
        let e = &v["errors"][0];
        assert!(
            e["error"].is_string() && e["code"].is_string(),
            "{method} {path}: {v}"
        );
        if !field.is_empty() {
            assert!(
                e["field"].as_str().unwrap_or("").contains(field),
                "{method} {path}: field {field:?} not named in {v}"
            );
        }
    }
    assert_eq!(
        topology_text(&sock),
        before,
        "a refused request changed the state"
    );
    let (code, v) = call(&sock, "GET", "/v1/status", "");
    assert_eq!(code, 200);
    assert_eq!(v["generation"], 0, "{v}");
    run.stop();
}

/// `kill -9` at three moments of a burst of API writes: each time the state directory loads (a
/// restart serves it), and every change acknowledged before the kill is in it.
#[test]
fn kill_9_during_a_burst_of_api_writes_never_loses_an_acknowledged_change() {
    if !capable("real_control_kill9", &[]) {
        return;
    }
    let state = StateDir::new("kill9");
    for (round, delay_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let mut run = Run::up_with("vck", TOPOLOGY, &["--state", &state.arg()]);
        let sock = socket(&run);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let sock = sock.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..2000u32 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("r{round}-{i}");
                    // Each round has its own 80 addresses; at most 60 are allocated at a time.
                    let address = format!("192.0.2.{}", 1 + round as u32 * 80 + i % 80);
                    let body = json!({"name": name, "address": address});
                    let Ok(s) = UnixStream::connect(&sock) else {
                        break;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    match exchange(s, "POST", "/v1/ops/allocate_eip", &body.to_string(), "") {
                        Ok((200, _)) => acked.push(name),
                        Ok((409, _)) | Ok((400, _)) => {}
                        _ => break,
                    }
                    if acked.len() > 60 {
                        let old = acked.remove(0);
                        let Ok(s) = UnixStream::connect(&sock) else {
                            break;
                        };
                        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                        // Without an answer the release may or may not have happened: `old` is
                        // no longer asserted either way.
                        if !matches!(
                            exchange(
                                s,
                                "POST",
                                "/v1/ops/release_eip",
                                &json!({"name": old}).to_string(),
                                ""
                            ),
                            Ok((200, _))
                        ) {
                            break;
                        }
                    }
                }
                acked
            })
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        let (status, _) = run.signal("KILL");
        assert!(!status.success());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acked = writer.join().expect("writer thread");
        assert!(
            !acked.is_empty() || round == 0,
            "round {round}: no write was acknowledged"
        );
        eprintln!("round {round}: killed after {delay_ms} ms");
        restart_and_find(run, "vck", &state, &acked);
    }
}

/// After a `kill -9` of `run`: `vpcd down`, a new run on the same state directory, and every
/// name in `acked` (acknowledged changes) in its topology.
fn restart_and_find(run: Run, prefix: &str, state: &StateDir, acked: &[String]) {
    eprintln!("{} acknowledged changes to find", acked.len());
    let out = run.down();
    assert!(
        out.status.success(),
        "vpcd down: {}",
        real_support::text(&out)
    );
    drop(run);
    // The state loads (a new run serves it) and holds every acknowledged change.
    let run = Run::up_with(prefix, TOPOLOGY, &["--state", &state.arg()]);
    let text = topology_text(&socket(&run));
    for name in acked {
        assert!(
            text.contains(&format!("\"{name}\"")),
            "acknowledged {name} lost"
        );
    }
    run.stop();
}

fn ctl(run: &Run, args: &[&str]) -> std::process::Output {
    run.vpcd().arg("ctl").args(args).output().expect("vpcd ctl")
}

fn ctl_ok(run: &Run, args: &[&str]) -> String {
    let out = ctl(run, args);
    assert!(
        out.status.success(),
        "vpcd ctl {args:?}: {}",
        real_support::text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ctl_json(run: &Run, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl_ok(run, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vpcd ctl {args:?}: {e}: {out}"))
}

/// The running dataplane through `vpcd ctl`: connections listed and flushed, metrics counted,
/// a flow log and a capture started and stopped at run time, explain on the running tables.
#[test]
fn ctl_lists_and_flushes_connections_counts_metrics_and_observes_at_run_time() {
    if !capable("real_control_observe", &["curl", "python3", "tcpdump"]) {
        return;
    }
    let state = StateDir::new("observe");
    let mut run = Run::up_with(
        "vco",
        TOPOLOGY,
        &["--state", &state.arg(), "--log-dir", "{dir}"],
    );
    socket(&run);
    run.http_server("internet/web", "198.51.100.10", 80, "web page\n");
    let flows = run.dir.join("flows.jsonl");
    let pcap = run.dir.join("f1.pcap");
    ctl_ok(
        &run,
        &[
            "flow-log",
            "start",
            &flows.display().to_string(),
            "--window",
            "1",
        ],
    );
    ctl_ok(
        &run,
        &["capture", "start", "a/f1", &pcap.display().to_string()],
    );
    let status = ctl_json(&run, &["flow-log", "status"]);
    assert!(
        status["target"]
            .as_str()
            .is_some_and(|t| t.ends_with("flows.jsonl")),
        "{status}"
    );

    assert_eq!(
        run.curl("a/f1", "http://198.51.100.10/").as_deref(),
        Ok("web page\n")
    );

    // The NAT session of that request, found by instance and by gateway.
    let list = ctl_json(
        &run,
        &["conntrack", "list", "--instance", "a/f1", "--table", "nat"],
    );
    let rows = list["connections"].as_array().expect("rows");
    assert!(
        rows.iter().any(|r| r["external"]
            .as_str()
            .is_some_and(|e| e.starts_with("203.0.113.30:"))
            && r["remote"] == "198.51.100.10:80"
            && r["gateway"] == "egress"),
        "{list}"
    );
    let by_gw = ctl_json(&run, &["conntrack", "list", "--gateway", "a/egress"]);
    assert!(by_gw["total"].as_u64().unwrap_or(0) >= 1, "{by_gw}");
    let table = ctl_ok(&run, &["conntrack", "list", "--instance", "a/f1"]);
    assert!(table.contains("198.51.100.10:80"), "{table}");

    // Flushed: gone from the table.
    let flushed = ctl_json(&run, &["conntrack", "flush", "--instance", "a/f1"]);
    assert!(flushed["flushed"].as_u64().unwrap_or(0) >= 1, "{flushed}");
    let after = ctl_json(
        &run,
        &["conntrack", "list", "--instance", "a/f1", "--table", "nat"],
    );
    assert_eq!(after["total"], 0, "{after}");
    // Unknown names are refused with what exists.
    let out = ctl(&run, &["conntrack", "flush", "--instance", "a/ghost"]);
    assert_eq!(out.status.code(), Some(1), "{}", real_support::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("f1"),
        "{}",
        real_support::text(&out)
    );

    // Metrics: the gateway counted the attempt and the bytes; ports are named.
    let metrics = ctl_ok(&run, &["metrics"]);
    let value = |prefix: &str, labels: &[&str]| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        value(
            "vpcd_nat_connection_attempts_total",
            &["gateway=\"egress\""]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        value(
            "vpcd_port_packets_total",
            &["endpoint=\"a/f1\"", "direction=\"rx\""]
        ) >= 3.0,
        "{metrics}"
    );

    // Explain over the API, on the running tables (exit 0 reachable, 1 blocked).
    let out = ctl(&run, &["explain", "internet/web", "203.0.113.30:80/tcp"]);
    assert_eq!(out.status.code(), Some(0), "{}", real_support::text(&out));
    let out = ctl(&run, &["explain", "internet/web", "203.0.113.30:22/tcp"]);
    assert_eq!(out.status.code(), Some(1), "{}", real_support::text(&out));

    // Stopping writes everything: the flow log has records, the capture reads back.
    std::thread::sleep(Duration::from_millis(1200));
    let stopped = ctl_json(&run, &["flow-log", "stop"]);
    assert!(
        stopped["records_written"].as_u64().unwrap_or(0) >= 1,
        "{stopped}"
    );
    let records = std::fs::read_to_string(&flows).expect("flow log");
    assert!(records.contains("198.51.100.10"), "{records}");
    let cap = ctl_json(&run, &["capture", "stop", "a/f1"]);
    assert!(cap["packets"].as_u64().unwrap_or(0) >= 5, "{cap}");
    let read = std::process::Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&pcap)
        .output()
        .expect("tcpdump");
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(
        text.contains("198.51.100.10.80"),
        "{}",
        real_support::text(&read)
    );
    run.stop();
}

/// One client of the parallel burst: attaches sim instances `k{round}-{client}-{i}` to `a/fn`
/// and detaches the oldest once it has 8; returns the acknowledged attaches that were not
/// detached since (those a restart must have).
fn attach_burst(
    sock: &Path,
    round: usize,
    client: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<String> {
    let post = |op: &str, body: Value| {
        let s = UnixStream::connect(sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        exchange(s, "POST", &format!("/v1/ops/{op}"), &body.to_string(), "")
            .ok()
            .map(|(code, _)| code)
    };
    let mut attached = Vec::new();
    for i in 0..5000u32 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let name = format!("k{round}-{client}-{i}");
        let body = json!({"vpc": "a", "name": name, "subnet": "fn", "attach": "sim"});
        match post("add_instance", body) {
            Some(200) => attached.push(name),
            _ => break,
        }
        if attached.len() > 8 {
            let old = attached.remove(0);
            // Without an answer the detach may or may not have happened: `old` is no longer
            // asserted either way.
            if post("remove_instance", json!({"vpc": "a", "name": old})) != Some(200) {
                break;
            }
        }
    }
    attached
}

/// Issue 20: `kill -9` while 8 clients attach and detach in parallel (their records share
/// fsyncs): the restarted run has every acknowledged attach, from the journal.
#[test]
fn kill_9_during_parallel_attaches_loses_no_acknowledged_one() {
    if !capable("real_control_kill9_parallel", &[]) {
        return;
    }
    let state = StateDir::new("kill9p");
    for (round, delay_ms) in [200u64, 700].into_iter().enumerate() {
        let mut run = Run::up_with("vcp", TOPOLOGY, &["--state", &state.arg()]);
        let sock = socket(&run);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|client| {
                let (sock, stop) = (sock.clone(), stop.clone());
                std::thread::spawn(move || attach_burst(&sock, round, client, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let (status, _) = run.signal("KILL");
        assert!(!status.success());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acked: Vec<String> = clients
            .into_iter()
            .flat_map(|c| c.join().expect("client thread"))
            .collect();
        assert!(
            !acked.is_empty(),
            "round {round}: no attach was acknowledged"
        );
        eprintln!("round {round}: killed after {delay_ms} ms");
        restart_and_find(run, "vcp", &state, &acked);
    }
}

/// Issue 20: `POST /v1/batch` is one step, all or none: fifty attaches in one request are one
/// generation step of fifty and one journal record; a batch whose last entry is refused leaves
/// nothing of its first ones; a restart has the accepted batch whole.
#[test]
fn a_batch_of_attaches_is_all_or_none_and_survives_a_restart() {
    if !capable("real_control_batch", &[]) {
        return;
    }
    let state = StateDir::new("batch");
    let run = Run::up_with("vcq", TOPOLOGY, &["--state", &state.arg()]);
    let sock = socket(&run);
    let entry = |name: String| {
        json!({"op": "add_instance",
               "request": {"vpc": "a", "name": name, "subnet": "fn", "attach": "sim"}})
    };
    let fifty: Vec<Value> = (0..50).map(|i| entry(format!("b{i}"))).collect();
    let (code, v) = call(
        &sock,
        "POST",
        "/v1/batch",
        &json!({"changes": fifty}).to_string(),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["generation"], 50, "{v}");
    assert_eq!(v["op"].as_array().map(Vec::len), Some(50), "{v}");
    assert!(
        v["applied"]
            .as_str()
            .unwrap_or_default()
            .starts_with("+50 "),
        "{v}"
    );
    let journal = std::fs::read_to_string(state.0.join(vpcd::control::JOURNAL_FILE)).unwrap();
    assert_eq!(journal.lines().count(), 1, "one record for the batch");

    let bad = json!({"changes": [entry("c0".into()), entry("c1".into()),
        {"op": "add_instance", "request": {"vpc": "a", "name": "c2", "subnet": "nope"}}]});
    let (code, v) = call(&sock, "POST", "/v1/batch", &bad.to_string());
    assert_eq!(code, 400, "{v}");
    assert!(
        v["errors"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .starts_with("changes[2]"),
        "{v}"
    );
    let (_, status) = call(&sock, "GET", "/v1/status", "");
    assert_eq!(status["generation"], 50, "{status}");
    assert!(!topology_text(&sock).contains("\"c0\""));
    run.stop();

    let run = Run::up_with("vcq", TOPOLOGY, &["--state", &state.arg()]);
    let text = topology_text(&socket(&run));
    for i in 0..50 {
        assert!(
            text.contains(&format!("\"b{i}\"")),
            "b{i} lost in the restart"
        );
    }
    run.stop();
}

/// Issue 20: concurrent requests are applied in groups (one network step, one fsync), yet each
/// is answered as if alone: the valid ones with their own generation, a refused one with its own
/// error, and nothing of the refused ones in the state.
#[test]
fn concurrent_requests_share_a_step_and_keep_their_own_answers() {
    if !capable("real_control_group", &[]) {
        return;
    }
    let state = StateDir::new("group");
    let run = Run::up_with("vcg", TOPOLOGY, &["--state", &state.arg()]);
    let sock = socket(&run);
    let bodies: Vec<(Value, u16)> = (0..12)
        .map(|i| match i % 4 {
            // The name of an instance that exists; an address reserved in the subnet.
            1 => (
                json!({"vpc": "a", "name": "f1", "subnet": "fn", "attach": "sim"}),
                409,
            ),
            3 => (
                json!({"vpc": "a", "name": format!("g{i}"), "subnet": "fn", "ip": "10.63.1.1",
                       "attach": "sim"}),
                400,
            ),
            _ => (
                json!({"vpc": "a", "name": format!("g{i}"), "subnet": "fn", "attach": "sim"}),
                200,
            ),
        })
        .collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(bodies.len()));
    let threads: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|(body, want)| {
            let (sock, barrier) = (sock.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let (code, v) = call(&sock, "POST", "/v1/ops/add_instance", &body.to_string());
                assert_eq!(code, want, "{body}: {v}");
                v["generation"].as_u64()
            })
        })
        .collect();
    let mut generations: Vec<u64> = threads
        .into_iter()
        .filter_map(|t| t.join().expect("client thread"))
        .collect();
    generations.sort_unstable();
    assert_eq!(
        generations,
        (1..=6).collect::<Vec<u64>>(),
        "one generation per accepted change"
    );
    let text = topology_text(&sock);
    for (body, want) in &bodies {
        let name = body["name"].as_str().unwrap_or_default();
        if name != "f1" {
            assert_eq!(
                text.contains(&format!("\"{name}\"")),
                *want == 200,
                "{name}"
            );
        }
    }
    run.stop();
}

/// Issue 20: a detached namespace is deleted in the background, yet the same name can be
/// attached again at once (the new attach waits for that deletion), and a stop right after a
/// detach leaves no namespace behind.
#[test]
fn a_netns_name_detached_in_the_background_attaches_again_and_nothing_is_left() {
    if !capable("real_control_redetach", &[]) {
        return;
    }
    let state = StateDir::new("redetach");
    let run = Run::up_with("vcn", TOPOLOGY, &["--state", &state.arg()]);
    let sock = socket(&run);
    let add = json!({"vpc": "a", "name": "n1", "subnet": "fn"});
    let remove = json!({"vpc": "a", "name": "n1"});
    for _ in 0..3 {
        op(&sock, "add_instance", add.clone());
        op(&sock, "remove_instance", remove.clone());
    }
    op(&sock, "add_instance", add);
    op(&sock, "remove_instance", remove);
    run.stop();
    let left: Vec<String> = real_support::text(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list"),
    )
    .lines()
    .filter(|l| l.starts_with("vcn-"))
    .map(str::to_string)
    .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The warm namespaces of a run (`PREFIX-pool-…`), with the inode of each namespace.
fn warm_namespaces(prefix: &str) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let start = format!("{prefix}-pool-");
    let mut v: Vec<(String, u64)> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&start))
        .filter_map(|n| {
            let ino = std::fs::metadata(format!("/run/netns/{n}")).ok()?.ino();
            Some((n, ino))
        })
        .collect();
    v.sort();
    v
}

fn wait_warm(prefix: &str, n: usize) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let warm = warm_namespaces(prefix);
        if warm.len() >= n {
            return warm;
        }
        assert!(Instant::now() < deadline, "only {warm:?} warm after 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 20 item 4: with `--warm-pool 3` a run keeps three namespaces made ahead; a `netns`
/// attach takes one of them (the instance's namespace is the very namespace that was warm: same
/// inode), addressed, routed, with its resolv.conf, and it forwards; the pool refills; a detach
/// does not return the namespace to the pool; a stop removes the pool with everything else.
#[test]
fn a_netns_attach_takes_a_warm_namespace_and_the_pool_refills() {
    if !capable("real_control_warm_pool", &["ping"]) {
        return;
    }
    let state = StateDir::new("warm");
    let run = Run::up_with(
        "vcw",
        TOPOLOGY,
        &["--state", &state.arg(), "--warm-pool", "3"],
    );
    let sock = socket(&run);
    let before = wait_warm("vcw", 3);
    assert_eq!(before.len(), 3, "{before:?}");
    op(
        &sock,
        "add_instance",
        json!({"vpc": "a", "name": "n1", "subnet": "fn", "ip": "10.63.1.50"}),
    );
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/run/netns/vcw-a-n1")
            .expect("the instance's namespace")
            .ino()
    };
    assert!(
        before.iter().any(|(_, i)| *i == ino),
        "vcw-a-n1 (inode {ino}) is none of the warm namespaces {before:?}"
    );
    let addr = run.exec("a/n1", &["ip", "-4", "-o", "addr", "show", "dev", "vpcd0"]);
    assert!(
        real_support::text(&addr).contains("10.63.1.50/24"),
        "{}",
        real_support::text(&addr)
    );
    let resolv =
        std::fs::read_to_string("/etc/netns/vcw-a-n1/resolv.conf").expect("its resolv.conf");
    assert!(resolv.contains("nameserver 10.63.0.2"), "{resolv}");
    let ping = run.exec("a/n1", &["ping", "-c", "1", "-W", "2", "10.63.1.1"]);
    assert!(ping.status.success(), "{}", real_support::text(&ping));
    // Refilled: three warm again, and the one taken is no longer among them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let warm = warm_namespaces("vcw");
        if warm.len() == 3 && !warm.iter().any(|(_, i)| *i == ino) {
            break warm;
        }
        assert!(Instant::now() < deadline, "not refilled: {warm:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    op(&sock, "remove_instance", json!({"vpc": "a", "name": "n1"}));
    std::thread::sleep(Duration::from_millis(300));
    let later = warm_namespaces("vcw");
    assert!(
        !later.iter().any(|(_, i)| *i == ino),
        "a detached namespace went back to the pool: {later:?} (was {after:?})"
    );
    // run.stop() asserts that no `vcw-` namespace, warm or not, is left.
    let rest = run.stop();
    assert!(rest.contains("warm"), "{rest}");
}

/// Issue 20 item 4: `--warm-pool 0` makes no namespace ahead (attaches make their own), and
/// after `kill -9` of a run with a pool, `vpcd down FILE` removes its warm namespaces too.
#[test]
fn no_warm_pool_when_turned_off_and_down_removes_a_killed_runs_pool() {
    if !capable("real_control_warm_pool_down", &[]) {
        return;
    }
    let state = StateDir::new("warm0");
    let run = Run::up_with(
        "vcz",
        TOPOLOGY,
        &["--state", &state.arg(), "--warm-pool", "0"],
    );
    let sock = socket(&run);
    op(
        &sock,
        "add_instance",
        json!({"vpc": "a", "name": "n1", "subnet": "fn"}),
    );
    assert!(
        std::path::Path::new("/run/netns/vcz-a-n1").exists(),
        "the attach made its namespace"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        warm_namespaces("vcz").is_empty(),
        "{:?}",
        warm_namespaces("vcz")
    );
    run.stop();

    let state = StateDir::new("warmk");
    let mut run = Run::up_with(
        "vck9",
        TOPOLOGY,
        &["--state", &state.arg(), "--warm-pool", "4"],
    );
    wait_warm("vck9", 4);
    let (status, _) = run.signal("KILL");
    assert!(!status.success());
    assert_eq!(warm_namespaces("vck9").len(), 4, "kill -9 ran no teardown");
    let down = run.down();
    assert!(down.status.success(), "{}", real_support::text(&down));
    run.assert_gone();
}
