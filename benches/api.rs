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
  cidr = "10.70.0.0/18"

  [[vpc.subnet]]
  name = "public"
  cidr = "10.70.64.0/24"
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
  ip = "10.70.64.10"
  attach = "sim"

  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["gw"]
  snat = [ { source = "10.70.0.0/16" } ]
"#;

/// The rest of the topology: after the VPC's instances and groups (see [`topology`]).
const PUBLIC: &str = r#"

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

/// The benchmark topology with `size` instances in the VPC (`target` and `size - 1` sim fillers
/// in `fn`), one security group and one free EIP per client (`sg-C`, `e-C`), the per-client
/// things the load scenarios change.
fn topology(size: usize, clients: usize) -> String {
    let mut t = String::from(TOPOLOGY);
    for i in 1..size {
        t.push_str(&format!(
            "\n  [[vpc.instance]]\n  name = \"f{i}\"\n  subnet = \"fn\"\n  attach = \"sim\"\n"
        ));
    }
    for c in 0..clients {
        t.push_str(&format!(
            "\n  [[vpc.security_group]]\n  name = \"sg-{c}\"\n"
        ));
    }
    t.push_str(PUBLIC);
    for c in 0..clients {
        t.push_str(&format!(
            "\n[[eip]]\nname = \"e-{c}\"\naddress = \"203.0.113.{}\"\n",
            100 + c
        ));
    }
    t
}

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

/// Starts `vpcd up --state` on `topology` in a fresh temporary directory.
fn up(topology: &str) -> Up {
    let dir = std::env::temp_dir().join(format!("vpcd-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("topology.toml"), topology).expect("topology");
    let mut child = Command::new(VPCD)
        .env("VPCD_NETNS_PREFIX", PREFIX)
        .env("VPCD_RUN_DIR", dir.join("run"))
        .arg("up")
        .arg(dir.join("topology.toml"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--warm-pool")
        .arg(warm_pool().to_string())
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

/// `vpcd up --warm-pool`: `VPCD_API_WARM_POOL`, default 256 (more than the netns scenarios
/// attach at a time in most runs; 0 measures attaches that make their own namespace).
fn warm_pool() -> usize {
    env_num("VPCD_API_WARM_POOL", 256.0) as usize
}

/// Waits (up to 60 s) until the run's warm pool is full again, so that a netns scenario starts
/// from the same pool every time.
fn wait_for_warm_pool() {
    let want = warm_pool();
    let start = format!("{PREFIX}-pool-");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ready = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&start))
            .count();
        if ready >= want {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("api: the warm pool did not fill up to {want} in 60 s; measuring anyway");
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

/// `POST /v1/ops/NAME` (`batch`: `POST /v1/batch`) that must succeed.
fn op(socket: &Path, name: &str, body: &str) {
    let path = match name {
        "batch" => "/v1/batch".to_string(),
        _ => format!("/v1/ops/{name}"),
    };
    let (status, out) = call(socket, &path, body);
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

/// One load scenario: what each client does in a loop (`ops` gives the requests of one round,
/// each `(operation, body)`), and what it does once before and after (set-up and clean-up,
/// not measured).
struct Scenario {
    name: &'static str,
    /// Changes per request (a batch carries several): ops/s counts changes.
    per_request: usize,
    setup: fn(usize) -> Vec<(&'static str, String)>,
    round: fn(usize, usize) -> Vec<(&'static str, String)>,
    /// Clean-up of client `c` after its `rounds` rounds.
    teardown: fn(usize, usize) -> Vec<(&'static str, String)>,
}

fn no_ops(_: usize) -> Vec<(&'static str, String)> {
    Vec::new()
}

fn no_teardown(_: usize, _: usize) -> Vec<(&'static str, String)> {
    Vec::new()
}

fn attach_round(attach: &'static str, c: usize, i: usize) -> Vec<(&'static str, String)> {
    let name = format!("{attach}-{c}-{i}");
    vec![
        (
            "add_instance",
            format!(r#"{{"vpc":"b","name":"{name}","subnet":"fn","attach":"{attach}"}}"#),
        ),
        (
            "remove_instance",
            format!(r#"{{"vpc":"b","name":"{name}"}}"#),
        ),
    ]
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "sim_attach_detach",
        per_request: 1,
        setup: no_ops,
        round: |c, i| attach_round("sim", c, i),
        teardown: no_teardown,
    },
    Scenario {
        name: "netns_attach_detach",
        per_request: 1,
        setup: no_ops,
        round: |c, i| attach_round("netns", c, i),
        teardown: no_teardown,
    },
    Scenario {
        name: "netns_attach",
        per_request: 1,
        setup: no_ops,
        round: |c, i| vec![attach_round("netns", c, i).swap_remove(0)],
        teardown: |c, rounds| {
            (0..rounds)
                .map(|i| attach_round("netns", c, i).swap_remove(1))
                .collect()
        },
    },
    Scenario {
        name: "eip_associate_disassociate",
        per_request: 1,
        setup: |c| {
            vec![(
                "add_instance",
                format!(r#"{{"vpc":"b","name":"eip-{c}","subnet":"fn","attach":"sim"}}"#),
            )]
        },
        round: |c, _| {
            vec![
                (
                    "associate_eip",
                    format!(r#"{{"eip":"e-{c}","vpc":"b","instance":"eip-{c}"}}"#),
                ),
                ("disassociate_eip", format!(r#"{{"eip":"e-{c}"}}"#)),
            ]
        },
        teardown: |c, _| {
            vec![(
                "remove_instance",
                format!(r#"{{"vpc":"b","name":"eip-{c}"}}"#),
            )]
        },
    },
    Scenario {
        name: "sg_rule_add_remove",
        per_request: 1,
        setup: no_ops,
        round: |c, i| {
            let rule = format!(
                r#""vpc":"b","group":"sg-{c}","direction":"ingress","protocol":"tcp","ports":"{}","peer":"10.0.0.0/8""#,
                1000 + i % 60000
            );
            vec![
                ("add_sg_rule", format!("{{{rule}}}")),
                ("remove_sg_rule", format!("{{{rule}}}")),
            ]
        },
        teardown: no_teardown,
    },
    Scenario {
        name: "sim_attach_detach_batch20",
        per_request: BATCH,
        setup: no_ops,
        round: |c, i| {
            let entries = |op: &str| {
                let list: Vec<String> = (0..BATCH)
                    .map(|k| {
                        let name = format!("bt-{c}-{i}-{k}");
                        let request = match op {
                            "add_instance" => format!(
                                r#"{{"vpc":"b","name":"{name}","subnet":"fn","attach":"sim"}}"#
                            ),
                            _ => format!(r#"{{"vpc":"b","name":"{name}"}}"#),
                        };
                        format!(r#"{{"op":"{op}","request":{request}}}"#)
                    })
                    .collect();
                format!(r#"{{"changes":[{}]}}"#, list.join(","))
            };
            vec![
                ("batch", entries("add_instance")),
                ("batch", entries("remove_instance")),
            ]
        },
        teardown: no_teardown,
    },
];

/// Instances per batch in `sim_attach_detach_batch20`.
const BATCH: usize = 20;

/// Figures of one scenario run: changes per second and per-request latency percentiles.
struct Figures {
    ops: usize,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted[at.min(sorted.len() - 1)]
}

/// Runs `sc` with `clients` parallel clients for about `secs` seconds (at most `max_rounds`
/// rounds per client): every request's latency is recorded.
fn run_scenario(
    socket: &Path,
    sc: &Scenario,
    clients: usize,
    secs: f64,
    max_rounds: usize,
) -> Figures {
    for c in 0..clients {
        for (name, body) in (sc.setup)(c) {
            op(socket, name, &body);
        }
    }
    let barrier = std::sync::Barrier::new(clients + 1);
    let deadline = std::sync::OnceLock::<Instant>::new();
    let (lat, elapsed) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let (barrier, deadline) = (&barrier, &deadline);
                scope.spawn(move || {
                    barrier.wait();
                    let end = *deadline.get().expect("deadline set before the barrier");
                    let mut lat = Vec::new();
                    let mut rounds = 0;
                    for i in 0..max_rounds {
                        if Instant::now() >= end {
                            break;
                        }
                        for (name, body) in (sc.round)(c, i) {
                            let t = Instant::now();
                            op(socket, name, &body);
                            lat.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        rounds += 1;
                    }
                    (lat, rounds)
                })
            })
            .collect();
        let start = Instant::now();
        let _ = deadline.set(start + Duration::from_secs_f64(secs));
        barrier.wait();
        let done: Vec<(Vec<f64>, usize)> = workers
            .into_iter()
            .map(|w| w.join().expect("client thread"))
            .collect();
        (done, start.elapsed().as_secs_f64())
    });
    let rounds: Vec<usize> = lat.iter().map(|(_, r)| *r).collect();
    let lat: Vec<f64> = lat.into_iter().flat_map(|(l, _)| l).collect();
    for (c, &r) in rounds.iter().enumerate() {
        for (name, body) in (sc.teardown)(c, r) {
            op(socket, name, &body);
        }
    }
    let mut sorted = lat;
    sorted.sort_by(f64::total_cmp);
    Figures {
        ops: sorted.len() * sc.per_request,
        ops_per_s: (sorted.len() * sc.per_request) as f64 / elapsed,
        p50_ms: percentile(&sorted, 0.50),
        p99_ms: percentile(&sorted, 0.99),
    }
}

/// The daemon's resident memory in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The load matrix: for each topology size, a fresh `vpcd up --state` preloaded with that many
/// instances, then every scenario with each client count. One line per figure, in a fixed
/// format `scripts/api-load.sh` reads.
fn scale(sizes: &[usize], clients: &[usize], scenarios: &[String], secs: f64) {
    let most = clients.iter().copied().max().unwrap_or(1);
    for &size in sizes {
        let t = Instant::now();
        let up = up(&topology(size.max(1), most));
        let started = t.elapsed().as_secs_f64();
        let rss = rss_kib(up.child.id());
        println!("api/scale size={size} startup_s={started:.2} rss_kib={rss}");
        for sc in SCENARIOS
            .iter()
            .filter(|s| scenarios.iter().any(|n| n == s.name))
        {
            for &c in clients {
                let max_rounds = if sc.name.starts_with("netns") {
                    wait_for_warm_pool();
                    200
                } else {
                    5000
                };
                let f = run_scenario(&up.socket, sc, c, secs, max_rounds);
                println!(
                    "api/scale size={size} clients={c} {} ops={} ops_per_s={:.0} p50_ms={:.2} p99_ms={:.2}",
                    sc.name, f.ops, f.ops_per_s, f.p50_ms, f.p99_ms
                );
            }
        }
        println!(
            "api/scale size={size} rss_after_kib={}",
            rss_kib(up.child.id())
        );
    }
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
    // VPCD_API_SIZES etc. select the load matrix (see scripts/api-load.sh); VPCD_API_BASIC=0
    // skips the single-client figures and the time to first packet.
    let sizes: Vec<usize> = env_list("VPCD_API_SIZES", "1,1000,10000")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let clients: Vec<usize> = env_list("VPCD_API_CLIENTS", "1,16")
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(|&c| c > 0)
        .collect();
    let scenarios = env_list(
        "VPCD_API_SCENARIOS",
        "sim_attach_detach,eip_associate_disassociate,sg_rule_add_remove,netns_attach_detach,netns_attach,sim_attach_detach_batch20",
    );
    let secs = env_num("VPCD_API_SECONDS", 3.0);
    if std::env::var("VPCD_API_BASIC").as_deref() != Ok("0") {
        basic();
    }
    scale(&sizes, &clients, &scenarios, secs);
}

/// Issue 6's figures: one client, a small topology, and the time to first packet.
fn basic() {
    let up = up(&topology(1, 0));
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
