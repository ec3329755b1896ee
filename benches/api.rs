//! The control API's speed against a running `vpcd up --state` (root): operations per second for
//! attach/detach of instances (in-process `sim` ones and `netns` ones with a namespace and a TUN
//! device each) and EIP associate/disassociate, and the time from "add this instance" to its
//! first packet answered on the public segment.
//!
//! Run: `sudo cargo bench --bench api` (without root it prints why and does nothing). Each request
//! is one HTTP/1.1 exchange on a new connection to the Unix socket, as `vpcd ctl` does; every
//! change is validated, applied to the running network and saved (write, fsync, rename) before
//! its answer, so these are durable operations. Figures go to BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VPCD: &str = env!("CARGO_BIN_EXE_vpcd");
const PREFIX: &str = "vbapi";

const TOPOLOGY: &str = r#"
[[vpc]]
name = "b"
cidr = "10.70.0.0/16"

  [[vpc.subnet]]
  name = "fn"
  cidr = "10.70.0.0/20"

  [[vpc.subnet]]
  name = "public"
  cidr = "10.70.16.0/24"
  route_table = "public"

  [[vpc.route_table]]
  name = "main"
  routes = [ { destination = "0.0.0.0/0", target = "nat:egress" } ]

  [[vpc.route_table]]
  name = "public"
  routes = [ { destination = "0.0.0.0/0", target = "internet" } ]

  [[vpc.instance]]
  name = "target"
  subnet = "public"
  ip = "10.70.16.10"
  attach = "sim"

  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["gw"]
  snat = [ { source = "10.70.0.0/16" } ]

[[eip]]
name = "gw"
address = "203.0.113.70"

[[eip]]
name = "floating"
address = "203.0.113.71"

[internet]
cidr = "198.51.100.0/24"
host = [ { name = "web", ip = "198.51.100.10", attach = "sim" } ]
"#;

struct Up {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = Command::new(VPCD)
            .env("VPCD_NETNS_PREFIX", PREFIX)
            .env("VPCD_RUN_DIR", self.dir.join("run"))
            .arg("down")
            .arg(self.dir.join("topology.toml"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn up() -> Up {
    let dir = std::env::temp_dir().join(format!("vpcd-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("topology.toml"), TOPOLOGY).expect("topology");
    let mut child = Command::new(VPCD)
        .env("VPCD_NETNS_PREFIX", PREFIX)
        .env("VPCD_RUN_DIR", dir.join("run"))
        .arg("up")
        .arg(dir.join("topology.toml"))
        .arg("--state")
        .arg(dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("vpcd up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut socket = None;
    for line in lines.by_ref() {
        let line = line.expect("stdout");
        if let Some(p) = line.strip_prefix("api: ").filter(|p| p.starts_with('/')) {
            socket = Some(PathBuf::from(p));
            break;
        }
    }
    // Keep draining stdout so vpcd never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let socket = socket.expect("vpcd up printed its API socket");
    Up { child, dir, socket }
}

fn call(socket: &Path, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("API socket");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn op(socket: &Path, name: &str, body: &str) {
    let (status, out) = call(socket, &format!("/v1/ops/{name}"), body);
    assert_eq!(status, 200, "{name} {body}: {out}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p90(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

/// `pairs` add+remove pairs of an instance attached as `attach`: operations per second.
fn attach_detach(socket: &Path, attach: &str, pairs: usize) -> f64 {
    let start = Instant::now();
    for i in 0..pairs {
        let name = format!("{attach}-{i}");
        op(
            socket,
            "add_instance",
            &format!(r#"{{"vpc":"b","name":"{name}","subnet":"fn","attach":"{attach}"}}"#),
        );
        op(
            socket,
            "remove_instance",
            &format!(r#"{{"vpc":"b","name":"{name}"}}"#),
        );
    }
    (2 * pairs) as f64 / start.elapsed().as_secs_f64()
}

fn associate_disassociate(socket: &Path, pairs: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..pairs {
        op(
            socket,
            "associate_eip",
            r#"{"eip":"floating","vpc":"b","instance":"target"}"#,
        );
        op(socket, "disassociate_eip", r#"{"eip":"floating"}"#);
    }
    (2 * pairs) as f64 / start.elapsed().as_secs_f64()
}

/// Milliseconds from sending `add_instance` (netns) to the first answered ping from inside the
/// new namespace to the internet host (through SNAT), and the request's own latency.
fn time_to_first_packet(socket: &Path, i: usize) -> (f64, f64) {
    let name = format!("ttfp-{i}");
    let ns = vpcd::netns::namespace_name(PREFIX, &format!("b/{name}"));
    let t0 = Instant::now();
    op(
        socket,
        "add_instance",
        &format!(r#"{{"vpc":"b","name":"{name}","subnet":"fn"}}"#),
    );
    let answered = t0.elapsed().as_secs_f64() * 1e3;
    let deadline = t0 + Duration::from_secs(5);
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns, "ping", "-c", "1", "-W", "0.2", "-q"])
            .arg("198.51.100.10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "{name}: no packet after 5 s");
    }
    let first = t0.elapsed().as_secs_f64() * 1e3;
    op(
        socket,
        "remove_instance",
        &format!(r#"{{"vpc":"b","name":"{name}"}}"#),
    );
    (first, answered)
}

/// What starting a ping in a namespace costs by itself (a process and a namespace switch), to
/// read the time to first packet against.
fn spawn_cost_ms() -> f64 {
    let mut v: Vec<f64> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &vpcd::netns::namespace_name(PREFIX, "b/anchor"),
                ])
                .args(["ping", "-c", "1", "-W", "0.2", "-q", "198.51.100.10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&mut v)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("api: bench");
        return;
    }
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: benches/api.rs needs root and /dev/net/tun (it runs vpcd up)");
        return;
    }
    let up = up();
    let s = &up.socket;
    // A netns instance that stays, for the spawn-cost baseline.
    op(
        s,
        "add_instance",
        r#"{"vpc":"b","name":"anchor","subnet":"fn"}"#,
    );

    let sim = attach_detach(s, "sim", 200);
    let netns = attach_detach(s, "netns", 40);
    let eip = associate_disassociate(s, 200);
    let mut first = Vec::new();
    let mut answered = Vec::new();
    for i in 0..20 {
        let (f, a) = time_to_first_packet(s, i);
        first.push(f);
        answered.push(a);
    }
    let spawn = spawn_cost_ms();
    println!("api/attach_detach_sim      {sim:>8.0} ops/s (200 add + 200 remove)");
    println!("api/attach_detach_netns    {netns:>8.0} ops/s (40 add + 40 remove)");
    println!("api/eip_associate_cycle    {eip:>8.0} ops/s (200 associate + 200 disassociate)");
    println!(
        "api/add_instance_answered  median {:.1} ms, p90 {:.1} ms (netns: namespace + TUN + swap + fsync)",
        median(&mut answered),
        p90(&mut answered)
    );
    println!(
        "api/time_to_first_packet   median {:.1} ms, p90 {:.1} ms (request sent -> first ping answered through SNAT; includes one `ip netns exec ping` start, itself {spawn:.1} ms)",
        median(&mut first),
        p90(&mut first)
    );
}
