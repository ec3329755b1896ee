//! The control API of `vpcd up --state DIR` and `vpcd ctl` against a running network (root; CI
//! runs them): an instance added through `vpcd ctl` reaches the internet through SNAT; an EIP
//! allocated and associated through it makes the instance reachable from the internet host; bad
//! requests get a 4xx JSON error and change nothing; after a stop and a start with the same
//! state directory the instance and the association are back.

mod real_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use real_support::{Run, VPCD, capable, text};

const TOPOLOGY: &str = r#"
[[vpc]]
name = "a"
cidr = "10.62.0.0/16"

  [[vpc.subnet]]
  name = "fn"
  cidr = "10.62.1.0/24"

  [[vpc.subnet]]
  name = "public"
  cidr = "10.62.9.0/24"
  route_table = "public"

  [[vpc.route_table]]
  name = "main"
  routes = [ { destination = "0.0.0.0/0", target = "nat:egress" } ]

  [[vpc.route_table]]
  name = "public"
  routes = [ { destination = "0.0.0.0/0", target = "internet" } ]

  [[vpc.security_group]]
  name = "open"
  ingress = [ { protocol = "all", peer = "0.0.0.0/0" } ]

  [[vpc.instance]]
  name = "f1"
  subnet = "fn"
  ip = "10.62.1.10"
  security_groups = ["open"]

  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["gw"]
  snat = [ { source = "10.62.0.0/16" } ]

[[eip]]
name = "gw"
address = "203.0.113.10"

[internet]
cidr = "198.51.100.0/24"
host = [ { name = "web", ip = "198.51.100.10" } ]
"#;

/// The state directory, outside the run's directory (which each `Run` recreates); removed on drop.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ctl(run: &Run, args: &[&str]) -> Output {
    run.vpcd().arg("ctl").args(args).output().expect("vpcd ctl")
}

fn ok(run: &Run, args: &[&str]) -> String {
    let out = ctl(run, args);
    assert!(out.status.success(), "vpcd ctl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn export(run: &Run) -> String {
    ok(run, &["export"])
}

/// The run's API socket (bound right after the ready line: wait for it).
fn socket(run: &Run) -> PathBuf {
    let dir = run.dir.join("run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir(&dir)
            .expect("run dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "sock"));
        if let Some(p) = found {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no API socket in {}: {}",
            dir.display(),
            run.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `curl` on the API socket: (HTTP status, body).
fn raw(socket: &Path, path: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(socket)
        .args(["-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://localhost{path}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .expect("curl");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = s.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

fn refused(run: &Run, args: &[&str], needle: &str) {
    let out = ctl(run, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "vpcd ctl {args:?}: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "vpcd ctl {args:?}: {needle:?} not in {err}"
    );
}

#[test]
fn ctl_adds_an_instance_and_an_eip_that_survive_a_restart() {
    if !capable("real_api", &["curl", "python3"]) {
        return;
    }
    let state =
        StateDir(std::env::temp_dir().join(format!("vpcd-real-api-state-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&state.0);
    let state_arg = state.0.display().to_string();
    let mut run = Run::up_with("va", TOPOLOGY, &["--state", &state_arg]);
    let sock = socket(&run);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");

    // An instance added at run time reaches the internet through SNAT.
    let out = ok(
        &run,
        &[
            "instance",
            "add",
            "a",
            "f2",
            "--subnet",
            "fn",
            "--ip",
            "10.62.1.20",
            "--security-group",
            "open",
        ],
    );
    assert!(out.contains("+1 (a/f2)"), "{out}");
    assert_eq!(
        run.curl("a/f2", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );

    // An EIP allocated and associated with an instance added in the public subnet makes it
    // reachable from the internet host. (A 1:1 EIP on an instance whose subnet routes through
    // the NAT gateway does not work in the dataplane: `eip_on_an_instance_behind_snat`.)
    ok(
        &run,
        &[
            "instance",
            "add",
            "a",
            "p2",
            "--subnet",
            "public",
            "--ip",
            "10.62.9.20",
            "--security-group",
            "open",
        ],
    );
    ok(
        &run,
        &["eip", "allocate", "direct", "--address", "203.0.113.21"],
    );
    let out = ok(&run, &["eip", "associate", "direct", "--instance", "a/p2"]);
    assert!(out.starts_with("associated eip direct with a/p2"), "{out}");
    run.http_server("a/p2", "10.62.9.20", 8080, "p2 page\n");
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.21:8080/")
            .as_deref(),
        Ok("p2 page\n")
    );

    // The export is a topology file `vpcd check` accepts.
    let before = export(&run);
    assert!(
        before.contains("\"f2\"") && before.contains("\"p2\"") && before.contains("203.0.113.21"),
        "{before}"
    );
    let exported = run.dir.join("exported.toml");
    std::fs::write(&exported, &before).expect("write export");
    let out = Command::new(VPCD)
        .arg("check")
        .arg(&exported)
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "vpcd check of the export: {}",
        text(&out)
    );

    // Bad requests: a 4xx JSON error naming the problem, and nothing changes.
    refused(
        &run,
        &[
            "apply",
            "add_instance",
            r#"{"vpc":"a","name":"x","subnet":"fn","colour":"red"}"#,
        ],
        "colour",
    );
    refused(
        &run,
        &[
            "apply",
            "add_dnat",
            r#"{"vpc":"a","nat_gateway":"egress","eip":"gw","protocol":"tcp","port":70000,"instance":"f1"}"#,
        ],
        "port",
    );
    refused(
        &run,
        &["eip", "associate", "nope", "--instance", "a/f1"],
        "nope",
    );
    refused(&run, &["apply", "no_such_op", "{}"], "not an operation");
    for (path, body, want) in [
        (
            "/v1/ops/add_instance",
            r#"{"vpc":"a","name":1}"#.to_string(),
            400,
        ),
        (
            "/v1/ops/associate_eip",
            r#"{"eip":"nope","vpc":"a","instance":"f1"}"#.to_string(),
            404,
        ),
        ("/v1/ops/frobnicate", "{}".to_string(), 404),
        (
            "/v1/ops/add_instance",
            format!("{{\"vpc\":\"{}\"}}", "a".repeat(70_000)),
            413,
        ),
    ] {
        let (code, answer) = raw(&sock, path, &body);
        assert_eq!(code, want, "{path}: {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("a JSON error");
        assert!(v["errors"][0]["error"].is_string(), "{path}: {answer}");
    }
    assert_eq!(export(&run), before, "a refused request changed the state");

    // Stop: the socket goes; start again with the same state: the changes are back.
    run.stop_in_place();
    assert!(!sock.exists(), "the API socket outlived the run");
    drop(run);
    let mut run = Run::up_with("va", TOPOLOGY, &["--state", &state_arg]);
    socket(&run);
    assert_eq!(export(&run), before, "the restart lost changes");
    assert!(run.banner.contains("a/f2"), "{}", run.banner);
    run.http_server("internet/web", "198.51.100.10", 80, "public page\n");
    run.http_server("a/p2", "10.62.9.20", 8080, "p2 page\n");
    assert_eq!(
        run.curl("a/f2", "http://198.51.100.10/").as_deref(),
        Ok("public page\n")
    );
    assert_eq!(
        run.curl("internet/web", "http://203.0.113.21:8080/")
            .as_deref(),
        Ok("p2 page\n")
    );
    run.stop();
}

/// A 1:1 EIP associated through the API with an instance in a subnet whose default route is the
/// NAT gateway does not answer from the internet: the instance's replies follow the NAT route and
/// the NAT gateway has no session for them (`nat_tcp_no_session`) — the asymmetric-routing
/// pitfall of an EIP in a private subnet, as in AWS, and what `vpcd explain` reports.
#[test]
fn eip_on_an_instance_behind_snat_is_unreachable_like_the_cloud() {
    if !capable("real_api_eip_behind_snat", &["curl", "python3"]) {
        return;
    }
    let state = StateDir(
        std::env::temp_dir().join(format!("vpcd-real-api-eip-state-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&state.0);
    let state_arg = state.0.display().to_string();
    let mut run = Run::up_with("ve", TOPOLOGY, &["--state", &state_arg]);
    socket(&run);
    ok(
        &run,
        &["eip", "allocate", "direct", "--address", "203.0.113.21"],
    );
    ok(&run, &["eip", "associate", "direct", "--instance", "a/f1"]);
    run.http_server("a/f1", "10.62.1.10", 8080, "f1 page\n");
    // The server is up (it answers inside its own namespace)...
    assert_eq!(
        run.curl("a/f1", "http://10.62.1.10:8080/").as_deref(),
        Ok("f1 page\n")
    );
    // ...but the internet's connection through the EIP never completes.
    assert!(
        run.curl("internet/web", "http://203.0.113.21:8080/")
            .is_err(),
        "the reply must not get back through the NAT route"
    );
    run.stop();
}
