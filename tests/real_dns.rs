//! DNS inside the VPC for real (root; CI runs them): `vpcd up`'s resolver at base + 2 and
//! 169.254.169.253 answering `dig`, `getent hosts` and `curl http://NAME/` through the
//! `resolv.conf` `vpcd exec` gives each namespace; a private zone only in its VPC; a large answer
//! truncated over UDP and retried over TCP; `python3 -m http.server` serving within a second
//! (its reverse lookups are answered at once instead of timing out).
//!
//! Forwarding: `vpcd up` runs in a namespace of its own standing for the host, with a dnsmasq
//! there as the upstream resolver (`[internet] resolvers`); no query ever goes to the machine's
//! own resolver.
//!
//! Each test has its own topology, namespace prefix and run directory (see `real_support`); each
//! ends by checking that nothing of it is left, `/etc/netns/NAME/` included.

mod real_support;

use std::path::Path;
use std::time::{Duration, Instant};

use real_support::{HostNs, Run, capable, text};

/// Two VPCs with the same CIDR; `d` has two instances and a private zone with a name whose TXT
/// records do not fit 512 bytes.
fn topology() -> String {
    let big: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "{{ name = \"big\", type = \"TXT\", value = \"{}\" }}",
                "x".repeat(100 + i)
            )
        })
        .collect();
    format!(
        r#"
[[vpc]]
name = "d"
cidr = "10.30.0.0/16"
subnet = [{{ name = "app", cidr = "10.30.1.0/24" }}]
instance = [
  {{ name = "web", subnet = "app", ip = "10.30.1.10" }},
  {{ name = "cli", subnet = "app", ip = "10.30.1.11" }},
]

[[vpc]]
name = "o"
cidr = "10.30.0.0/16"
subnet = [{{ name = "app", cidr = "10.30.1.0/24" }}]
instance = [{{ name = "x", subnet = "app", ip = "10.30.1.10" }}]

[[zone]]
name = "corp.example"
vpcs = ["d"]
record = [
  {{ name = "db", type = "A", value = "10.30.1.10" }},
  {big},
]
"#,
        big = big.join(",\n  ")
    )
}

/// `dig +short` from `endpoint`: the answer lines, or the whole output when dig failed.
fn dig(run: &Run, endpoint: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["dig", "+short", "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let out = run.exec(endpoint, &all);
    assert!(out.status.success(), "dig {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The status word of a full `dig` answer (`NOERROR`, `NXDOMAIN`).
fn dig_status(run: &Run, endpoint: &str, args: &[&str]) -> String {
    let mut all = vec!["dig", "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let out = run.exec(endpoint, &all);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output: {}", text(&out)))
        .to_string()
}

/// No `/etc/netns/PREFIX-*` is left.
fn assert_no_etc_netns(prefix: &str) {
    let left: Vec<String> = std::fs::read_dir(Path::new("/etc/netns"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in /etc/netns: {left:?}");
}

#[test]
fn dig_resolves_instances_ptr_and_zones_at_both_resolver_addresses() {
    if !capable("dig_resolves", &["dig"]) {
        return;
    }
    let run = Run::up("vr-dig", &topology());
    for server in ["@10.30.0.2", "@169.254.169.253"] {
        assert_eq!(
            dig(&run, "d/cli", &[server, "web.d.vpc.internal"]),
            ["10.30.1.10"]
        );
        assert_eq!(
            dig(&run, "d/cli", &[server, "ip-10-30-1-11.d.vpc.internal"]),
            ["10.30.1.11"]
        );
        assert_eq!(
            dig(&run, "d/cli", &[server, "-x", "10.30.1.10"]),
            ["web.d.vpc.internal."]
        );
        assert_eq!(
            dig(&run, "d/cli", &[server, "db.corp.example"]),
            ["10.30.1.10"]
        );
    }
    // The namespace's own resolv.conf names the resolver: no server given.
    assert_eq!(dig(&run, "d/web", &["cli.d.vpc.internal"]), ["10.30.1.11"]);
    // The private zone and d's names answer only in d; o's resolver names its own instance.
    assert_eq!(dig_status(&run, "o/x", &["db.corp.example"]), "NXDOMAIN");
    assert_eq!(dig_status(&run, "o/x", &["web.d.vpc.internal"]), "NXDOMAIN");
    assert_eq!(
        dig(&run, "o/x", &["-x", "10.30.1.10"]),
        ["x.o.vpc.internal."]
    );
    run.stop();
    assert_no_etc_netns("vr-dig");
}

#[test]
fn a_large_answer_is_truncated_over_udp_and_dig_retries_over_tcp() {
    if !capable("dns_tcp_retry", &["dig"]) {
        return;
    }
    let run = Run::up("vr-dtc", &topology());
    // Without EDNS the answer does not fit 512 bytes: TC over UDP, then dig asks over TCP.
    let out = run.exec(
        "d/cli",
        &[
            "dig",
            "+noedns",
            "+time=2",
            "+tries=1",
            "big.corp.example",
            "TXT",
        ],
    );
    let s = text(&out);
    assert!(s.contains("Truncated, retrying in TCP mode"), "{s}");
    assert!(
        s.contains("status: NOERROR") && s.contains("ANSWER: 6"),
        "{s}"
    );
    // Straight over TCP, and with +ignore the truncated UDP answer itself.
    assert_eq!(
        dig(&run, "d/cli", &["+tcp", "big.corp.example", "TXT"]).len(),
        6
    );
    let out = run.exec(
        "d/cli",
        &[
            "dig",
            "+noedns",
            "+ignore",
            "+time=2",
            "+tries=1",
            "big.corp.example",
            "TXT",
        ],
    );
    let s = text(&out);
    assert!(s.contains(" tc ") || s.contains(" tc;"), "{s}");
    run.stop();
    assert_no_etc_netns("vr-dtc");
}

#[test]
fn getent_curl_by_name_and_python_http_server_serving_within_a_second() {
    if !capable("dns_by_name", &["getent", "curl", "python3"]) {
        return;
    }
    let mut run = Run::up("vr-dnm", &topology());
    let out = run.exec("d/cli", &["getent", "hosts", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["10.30.1.10", "web.d.vpc.internal"]
    );
    // `python3 -m http.server` looks names up before it serves (and for every request's log
    // line): without a resolver each lookup waited for its timeout.
    let www = run.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello by name\n").unwrap();
    let started = Instant::now();
    let dir = www.display().to_string();
    run.spawn(
        "d/web",
        &[
            "python3",
            "-u",
            "-m",
            "http.server",
            "8080",
            "--directory",
            &dir,
        ],
        "http.log",
    );
    let mut body = Err(String::new());
    while started.elapsed() < Duration::from_secs(5) {
        body = run.curl("d/cli", "http://web:8080/");
        if body.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    eprintln!("python3 -m http.server served by name after {took:?}");
    assert_eq!(
        body.as_deref(),
        Ok("hello by name\n"),
        "{}",
        run.log("http.log")
    );
    assert!(
        took < Duration::from_secs(1),
        "python3 -m http.server served after {took:?}: {}",
        run.log("http.log")
    );
    run.stop();
    assert_no_etc_netns("vr-dnm");
}

/// The upstream's address, on the host namespace's loopback (a documentation address).
const UPSTREAM: &str = "192.0.2.53";

/// A VPC whose resolver forwards through the uplink to [`UPSTREAM`].
fn forwarding_topology() -> String {
    format!(
        r#"
[[vpc]]
name = "f"
cidr = "10.31.0.0/16"
subnet = [{{ name = "app", cidr = "10.31.1.0/24" }}]
instance = [{{ name = "cli", subnet = "app", ip = "10.31.1.11" }}]

[internet]
uplink = "host"
resolvers = ["{UPSTREAM}"]
"#
    )
}

/// Starts dnsmasq in `run`'s host namespace at [`UPSTREAM`] as the upstream resolver, answering
/// `api.example.org` (198.51.100.77, TTL 60), NXDOMAIN for `nope.example.org`, and `extra`
/// options; returns its pid once `f/cli` resolves `api.example.org` through it.
fn upstream_dnsmasq(run: &mut Run, extra: &[String]) -> u32 {
    let mut args = vec![
        "dnsmasq".to_string(),
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--bind-interfaces".into(),
        format!("--listen-address={UPSTREAM}"),
        "--port=53".into(),
        "--pid-file=".into(),
        "--log-queries".into(),
        "--log-facility=-".into(),
        // Its own records' TTL (0 by default: never cached).
        "--local-ttl=60".into(),
        "--host-record=api.example.org,198.51.100.77".into(),
        // An empty --address is NXDOMAIN for the domain.
        "--address=/nope.example.org/".into(),
    ];
    args.extend_from_slice(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = run.host_spawn(&args, "dnsmasq.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        let out = run.exec(
            "f/cli",
            &["dig", "+short", "+time=1", "+tries=1", "api.example.org"],
        );
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if s == "198.51.100.77" || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first, "198.51.100.77", "{}", run.log("dnsmasq.log"));
    pid
}

#[test]
fn other_names_are_forwarded_to_the_upstream_with_tcp_retry_and_kept_in_the_cache() {
    if !capable("dns_forwarding", &["dig", "dnsmasq", "nsenter", "kill"]) {
        return;
    }
    let host = HostNs::new("host-vr-dfw", &[&format!("{UPSTREAM}/24")]);
    let mut run = Run::up_in(host, "vr-dfw", &forwarding_topology(), &[]);
    // Ten TXT strings of 200 bytes: more than 1232 bytes, so the upstream truncates over UDP.
    let big: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "--txt-record=big.example.org,{}",
                format!("{i}").repeat(200)
            )
        })
        .collect();
    let dnsmasq = upstream_dnsmasq(&mut run, &big);
    // The upstream truncates the large answer over UDP; the forwarder asks it again over TCP;
    // the client gets TC over UDP and asks the resolver over TCP, answered from the cache.
    let out = run.exec(
        "f/cli",
        &["dig", "+time=3", "+tries=1", "big.example.org", "TXT"],
    );
    let s = text(&out);
    assert!(
        s.contains("status: NOERROR") && s.contains("ANSWER: 10"),
        "{s}"
    );
    assert!(s.contains("Truncated, retrying in TCP mode"), "{s}");
    // NXDOMAIN from the upstream is passed on.
    assert_eq!(dig_status(&run, "f/cli", &["nope.example.org"]), "NXDOMAIN");
    // With the upstream gone, what was asked before is still answered, from the cache; a new
    // name is SERVFAIL once the upstream has timed out.
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &dnsmasq.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dig(&run, "f/cli", &["api.example.org"]), ["198.51.100.77"]);
    assert_eq!(
        dig_status(&run, "f/cli", &["+time=5", "other.example.org"]),
        "SERVFAIL"
    );
    let log = run.log("dnsmasq.log");
    assert_eq!(log.matches("query[A] api.example.org").count(), 1, "{log}");
    run.stop();
    assert_no_etc_netns("vr-dfw");
}

#[test]
fn query_logs_read_back_with_route53_fields_and_a_blocked_domain() {
    if !capable("dns_query_log", &["dig"]) {
        return;
    }
    // A DNS Firewall rule blocks one name of d's zone (NXDOMAIN).
    let topo = format!(
        "{}\n[[dns_firewall]]\nname = \"no-db\"\nvpcs = [\"d\"]\n\
         domains = [\"db.corp.example\"]\naction = \"block\"\n",
        topology()
    );
    let run = Run::up_with("vr-dql", &topo, &["--dns-query-log", "{dir}/dns.jsonl"]);
    assert_eq!(dig(&run, "d/cli", &["web.d.vpc.internal"]), ["10.30.1.10"]);
    assert_eq!(
        dig_status(&run, "d/cli", &["+tcp", "nope.corp.example"]),
        "NXDOMAIN"
    );
    assert_eq!(dig_status(&run, "d/cli", &["db.corp.example"]), "NXDOMAIN");
    let path = run.dir.join("dns.jsonl");
    let mut run = run;
    run.stop_in_place();
    let text = std::fs::read_to_string(&path).expect("the query log");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 3, "{text}");
    let a = &records[0];
    assert_eq!(a["version"], "1.100000");
    assert_eq!(a["vpc_id"], "d");
    assert_eq!(a["query_name"], "web.d.vpc.internal.");
    assert_eq!(a["query_type"], "A");
    assert_eq!(a["query_class"], "IN");
    assert_eq!(a["rcode"], "NOERROR");
    assert_eq!(a["answers"][0]["Rdata"], "10.30.1.10");
    assert_eq!(a["answers"][0]["Type"], "A");
    assert_eq!(a["srcaddr"], "10.30.1.11");
    assert_eq!(a["transport"], "UDP");
    assert_eq!(a["srcids"]["instance"], "cli");
    assert!(
        a["query_timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{a}"
    );
    let nx = &records[1];
    assert_eq!(
        (&nx["rcode"], &nx["transport"]),
        (&"NXDOMAIN".into(), &"TCP".into())
    );
    assert!(nx.get("firewall_rule_action").is_none(), "{nx}");
    let blocked = &records[2];
    assert_eq!(blocked["query_name"], "db.corp.example.");
    assert_eq!(blocked["rcode"], "NXDOMAIN");
    assert_eq!(blocked["firewall_rule_action"], "BLOCK");
    assert_eq!(blocked["firewall_rule"], "no-db");
    assert_no_etc_netns("vr-dql");
}

#[test]
fn metrics_count_the_resolvers_answers_by_rcode() {
    if !capable("dns_metrics", &["dig"]) {
        return;
    }
    let state =
        StateDir(std::env::temp_dir().join(format!("vpcd-dns-state-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&state.0);
    let state_arg = state.0.display().to_string();
    let run = Run::up_with("vr-dmx", &topology(), &["--state", &state_arg]);
    assert_eq!(dig(&run, "d/cli", &["web.d.vpc.internal"]), ["10.30.1.10"]);
    assert_eq!(
        dig_status(&run, "d/cli", &["nope.corp.example"]),
        "NXDOMAIN"
    );
    let out = run
        .vpcd()
        .args(["ctl", "metrics"])
        .output()
        .expect("vpcd ctl");
    assert!(out.status.success(), "{}", text(&out));
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        r#"vpcd_dns_responses_total{vpc="d",rcode="NOERROR"} 1"#,
        r#"vpcd_dns_responses_total{vpc="d",rcode="NXDOMAIN"} 1"#,
        r#"vpcd_dns_responses_total{vpc="o",rcode="NOERROR"} 0"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }
    run.stop();
    assert_no_etc_netns("vr-dmx");
}

/// The `--state` directory, outside the run's directory; removed on drop (a panic too).
struct StateDir(std::path::PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn egress_by_name_lets_curl_reach_the_answered_address_and_nothing_else() {
    if !capable("dns_egress_by_name", &["curl"]) {
        return;
    }
    let topo = r#"
[[vpc]]
name = "e"
cidr = "10.32.0.0/16"
subnet = [
  { name = "app", cidr = "10.32.1.0/24", route_table = "out" },
  { name = "pub", cidr = "10.32.9.0/24" },
]
route_table = [{ name = "out", routes = [{ destination = "0.0.0.0/0", target = "nat:gw" }] }]
instance = [{ name = "fn", subnet = "app", ip = "10.32.1.10" }]
nat_gateway = [{ name = "gw", subnet = "pub", eips = ["eg"] }]

[[eip]]
name = "eg"
address = "203.0.113.32"

[internet]
host = [
  { name = "pay", ip = "198.51.100.20", serve = ["tcp:80"], attach = "sim", dns_names = ["api.payments.example"] },
  { name = "other", ip = "198.51.100.30", serve = ["tcp:80"], attach = "sim", dns_names = ["other.example"] },
]

[[egress_by_name]]
vpcs = ["e"]
allow = ["api.payments.example:80"]
"#;
    let run = Run::up("vr-deg", topo);
    // By address, before any lookup: refused (the VPC may reach only what its names allow).
    assert!(run.curl("e/fn", "http://198.51.100.20/").is_err());
    // By name: the lookup allows the answered address on port 80.
    let body = run
        .curl("e/fn", "http://api.payments.example/")
        .expect("allowed by name");
    assert!(body.contains("vpcd sim host internet/pay"), "{body}");
    // Another name resolves, but its address is not allowed.
    assert!(run.curl("e/fn", "http://other.example/").is_err());
    run.stop();
    assert_no_etc_netns("vr-deg");
}

/// dnsperf with 100 queries outstanding for 2 s (as the issue's benchmark runs it): no query
/// is lost. (The losses that unpaced sim ports caused showed only with the release build at
/// full speed, in `scripts/bench_dns.sh`; this debug-build run did not lose any even without
/// the pacing, so it guards the path, not that regression.)
#[test]
fn dnsperf_loses_no_query_at_full_speed() {
    if !capable("dns_dnsperf", &["dnsperf"]) {
        return;
    }
    let run = Run::up("vr-perf", &topology());
    let queries = run.dir.join("queries.txt");
    std::fs::write(&queries, "db.corp.example A\nweb.d.vpc.internal A\n").expect("queries");
    let file = queries.to_str().expect("a UTF-8 path");
    let args = [
        "dnsperf",
        "-s",
        "10.30.0.2",
        "-d",
        file,
        "-l",
        "2",
        "-q",
        "100",
        "-t",
        "2",
    ];
    let out = run.exec_timeout("d/cli", &args, Duration::from_secs(30));
    let all = text(&out);
    let lost = all
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries lost:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no dnsperf summary: {all}"));
    let completed = all
        .lines()
        .find(|l| l.trim().starts_with("Queries completed:"))
        .unwrap_or_default();
    println!("{}: {} lost {lost}", run.name, completed.trim());
    run.stop();
    assert_eq!(lost, 0, "{all}");
}

/// `vpcd ctl ARGS` against `run`'s API: its stdout; panics with both streams when it fails.
/// `vpcd ctl ARGS` that must fail: its stderr.
fn ctl_refused(run: &Run, args: &[&str]) -> String {
    let out = run.vpcd().arg("ctl").args(args).output().expect("vpcd ctl");
    assert!(
        !out.status.success(),
        "vpcd ctl {args:?} succeeded: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ctl(run: &Run, args: &[&str]) -> String {
    let out = run.vpcd().arg("ctl").args(args).output().expect("vpcd ctl");
    assert!(out.status.success(), "vpcd ctl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The records of a JSON-lines file.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn ctl_zone_changes_answer_dig_without_restart_and_ctl_queries_and_query_logs_the_running_resolver()
{
    if !capable("dns_api", &["dig"]) {
        return;
    }
    let state =
        StateDir(std::env::temp_dir().join(format!("vpcd-dns-api-state-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&state.0);
    let state_arg = state.0.display().to_string();
    let run = Run::up_with(
        "vr-dapi",
        &topology(),
        &["--state", &state_arg, "--log-dir", "{dir}"],
    );
    run.metrics(); // waits for the API socket
    let pid = run.pid();
    assert_eq!(dig_status(&run, "d/cli", &["new.corp.example"]), "NXDOMAIN");
    let line = ctl(
        &run,
        &[
            "dns",
            "record",
            "add",
            "corp.example",
            "new",
            "A",
            "10.30.1.77",
            "--ttl",
            "30",
        ],
    );
    assert!(
        line.starts_with("added A record new 10.30.1.77 to zone corp.example (generation 1"),
        "{line}"
    );
    // The resolver took the new names in place: no endpoint was made again, and its counters
    // go on (the NXDOMAIN above is still counted).
    assert!(line.contains("+0 -0 ~0"), "{line}");
    let nx = real_support::metric(
        &run.metrics(),
        "vpcd_dns_responses_total",
        &[("vpc", "d"), ("rcode", "NXDOMAIN")],
    );
    assert_eq!(nx, Some(1.0));
    // The running resolver answers the new record at once, in its VPC only.
    assert_eq!(dig(&run, "d/cli", &["new.corp.example"]), ["10.30.1.77"]);
    assert_eq!(dig_status(&run, "o/x", &["new.corp.example"]), "NXDOMAIN");
    ctl(&run, &["dns", "zone", "associate", "corp.example", "o"]);
    assert_eq!(dig(&run, "o/x", &["new.corp.example"]), ["10.30.1.77"]);
    assert_eq!(run.pid(), pid, "no restart");
    let zone = ctl(&run, &["dns", "zone", "show", "corp.example"]);
    assert!(
        zone.contains("VPCS  d, o\n") && zone.contains("new   A     30   10.30.1.77"),
        "{zone}"
    );

    // `dns query`: the running resolver of the instance's VPC, as the instance.
    let q: serde_json::Value = serde_json::from_str(&ctl(
        &run,
        &[
            "--json",
            "dns",
            "query",
            "new.corp.example",
            "--from",
            "d/cli",
        ],
    ))
    .expect("json");
    assert_eq!(q["rcode"], "NOERROR", "{q}");
    assert_eq!(q["server"], "10.30.0.2", "{q}");
    assert_eq!(q["answers"][0]["data"], "10.30.1.77", "{q}");
    assert_eq!(q["answers"][0]["ttl"], 30, "{q}");
    let answer = ctl(
        &run,
        &["dns", "query", "new.corp.example", "--from", "d/cli"],
    );
    assert!(
        answer.contains("status NOERROR")
            && answer.contains("new.corp.example.  30   A     10.30.1.77"),
        "{answer}"
    );
    for args in [
        &[
            "dns",
            "query",
            "10.1.30.10.in-addr.arpa",
            "--type",
            "PTR",
            "--from",
            "d/cli",
        ][..],
        &["dns", "query", "-x", "10.30.1.10", "--from", "d/cli"][..],
    ] {
        let ptr = ctl(&run, args);
        assert!(
            ptr.contains("status NOERROR") && ptr.contains("web.d.vpc.internal."),
            "{args:?}: {ptr}"
        );
    }
    let other = ctl(
        &run,
        &["dns", "query", "web.d.vpc.internal", "--from", "o/x"],
    );
    assert!(
        other.contains("status NXDOMAIN"),
        "another VPC's names: {other}"
    );

    // The query log, started and stopped through the API.
    let status = ctl(&run, &["dns", "query-log", "status"]);
    assert!(status.starts_with("ACTIVE   no\n"), "{status}");
    // Only a regular file inside the log directory (--log-dir), never through a link, never
    // truncated.
    let outside =
        std::env::temp_dir().join(format!("vpcd-dns-outside-{}.jsonl", std::process::id()));
    let e = ctl_refused(
        &run,
        &["dns", "query-log", "start", &outside.display().to_string()],
    );
    assert!(e.contains("outside the log directory"), "{e}");
    assert!(!outside.exists());
    let victim = state.0.join("victim");
    std::fs::create_dir_all(&state.0).unwrap();
    std::fs::write(&victim, "keep\n").unwrap();
    let link = run.dir.join("link.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let e = ctl_refused(
        &run,
        &["dns", "query-log", "start", &link.display().to_string()],
    );
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    let log = run.dir.join("q.jsonl");
    let log_arg = log.display().to_string();
    let started = ctl(&run, &["dns", "query-log", "start", &log_arg]);
    assert!(started.contains("ACTIVE   yes"), "{started}");
    assert_eq!(dig(&run, "d/cli", &["web.d.vpc.internal"]), ["10.30.1.10"]);
    ctl(
        &run,
        &["dns", "query", "new.corp.example", "--from", "d/cli"],
    );
    let status = ctl(&run, &["dns", "query-log", "status"]);
    assert!(status.contains("RECORDS  2\n"), "{status}");
    let stopped = ctl(&run, &["dns", "query-log", "stop"]);
    assert!(
        stopped.contains("ACTIVE   no") && stopped.contains("RECORDS  2"),
        "{stopped}"
    );
    assert_eq!(dig(&run, "d/cli", &["web.d.vpc.internal"]), ["10.30.1.10"]);
    let records = json_lines(&log);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["query_name"], "web.d.vpc.internal.");
    assert_eq!(records[0]["srcaddr"], "10.30.1.11");
    assert_eq!(records[1]["query_name"], "new.corp.example.");
    assert_eq!(records[1]["srcids"]["instance"], "cli");
    assert_eq!(records[1]["answers"][0]["Rdata"], "10.30.1.77");
    // Started again on the same file: appended to, not truncated; --exclusive refuses it.
    let e = ctl_refused(
        &run,
        &["dns", "query-log", "start", "--exclusive", &log_arg],
    );
    assert!(e.contains("exists already"), "{e}");
    ctl(&run, &["dns", "query-log", "start", &log_arg]);
    assert_eq!(dig(&run, "d/cli", &["web.d.vpc.internal"]), ["10.30.1.10"]);
    ctl(&run, &["dns", "query-log", "stop"]);
    assert_eq!(json_lines(&log).len(), 3);

    // A DNS Firewall rule through the API blocks at once.
    ctl(
        &run,
        &[
            "dns",
            "firewall",
            "add",
            "no-new",
            "--vpc",
            "d",
            "--domain",
            "new.corp.example",
            "--action",
            "block",
        ],
    );
    assert_eq!(dig_status(&run, "d/cli", &["new.corp.example"]), "NXDOMAIN");
    assert_eq!(dig(&run, "o/x", &["new.corp.example"]), ["10.30.1.77"]);

    // A public zone through the API: answered in every VPC at once, and gone with its record.
    let api = ["api.public.example"];
    assert_eq!(dig_status(&run, "o/x", &api), "NXDOMAIN");
    ctl(&run, &["dns", "zone", "add", "--public", "public.example"]);
    for (name, addr) in [("api", "198.51.100.44"), ("old", "198.51.100.45")] {
        let args = [
            "dns",
            "record",
            "add",
            "--public",
            "public.example",
            name,
            "A",
            addr,
        ];
        ctl(&run, &args);
    }
    assert_eq!(dig(&run, "o/x", &api), ["198.51.100.44"]);
    assert_eq!(dig(&run, "d/cli", &api), ["198.51.100.44"]);
    ctl(
        &run,
        &[
            "dns",
            "record",
            "remove",
            "--public",
            "public.example",
            "old",
            "A",
        ],
    );
    assert_eq!(dig_status(&run, "o/x", &["old.public.example"]), "NXDOMAIN");

    // A DNS Firewall rule on a domain list: the list's changes apply at once, in o only.
    ctl(&run, &["dns", "domain-list", "add", "blocked"]);
    let list = |op: &str, domain: &str| ctl(&run, &["dns", "domain-list", op, "blocked", domain]);
    ctl(
        &run,
        &[
            "dns",
            "firewall",
            "add",
            "on-list",
            "--vpc",
            "o",
            "--domain-list",
            "blocked",
            "--action",
            "block",
        ],
    );
    assert_eq!(
        dig(&run, "o/x", &api),
        ["198.51.100.44"],
        "an empty list blocks nothing"
    );
    list("add-domains", "*.public.example");
    assert_eq!(dig_status(&run, "o/x", &api), "NXDOMAIN");
    assert_eq!(dig(&run, "d/cli", &api), ["198.51.100.44"]);
    let e = ctl_refused(&run, &["dns", "domain-list", "remove", "blocked"]);
    assert!(e.contains("on-list"), "{e}");
    list("remove-domains", "*.public.example");
    assert_eq!(dig(&run, "o/x", &api), ["198.51.100.44"]);
    list("add-domains", "api.public.example");
    assert_eq!(dig_status(&run, "o/x", &api), "NXDOMAIN");
    run.stop();

    // Durable: a restart from the state directory answers as before.
    let run = Run::up_with("vr-dapi", &topology(), &["--state", &state_arg]);
    assert_eq!(dig(&run, "o/x", &["new.corp.example"]), ["10.30.1.77"]);
    assert_eq!(dig_status(&run, "d/cli", &["new.corp.example"]), "NXDOMAIN");
    assert_eq!(dig(&run, "d/cli", &api), ["198.51.100.44"]);
    assert_eq!(dig_status(&run, "o/x", &api), "NXDOMAIN");
    run.stop();
    assert_no_etc_netns("vr-dapi");
}

#[test]
fn a_zone_cname_to_an_upstream_name_is_followed_and_ctl_dns_query_waits_for_the_upstream() {
    if !capable("dns_cname_upstream", &["dig", "dnsmasq", "nsenter", "kill"]) {
        return;
    }
    let state =
        StateDir(std::env::temp_dir().join(format!("vpcd-dns-cname-state-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&state.0);
    let state_arg = state.0.display().to_string();
    let topo = format!(
        "{}\n[[internet.host]]\nname = \"pub\"\nip = \"198.51.100.20\"\n\n\
         [[zone]]\nname = \"corp.example\"\nvpcs = [\"f\"]\n\
         record = [{{ name = \"api\", type = \"CNAME\", value = \"api.example.org\" }}]\n",
        forwarding_topology()
    );
    let host = HostNs::new("host-vr-dcn", &[&format!("{UPSTREAM}/24")]);
    let mut run = Run::up_in(host, "vr-dcn", &topo, &["--state", &state_arg]);
    upstream_dnsmasq(&mut run, &[]);
    // The alias in the private zone, then the upstream's address for its target.
    assert_eq!(
        dig(&run, "f/cli", &["api.corp.example"]),
        ["api.example.org.", "198.51.100.77"]
    );
    // A name only the upstream knows, asked through the API: the answer waits for it.
    let q: serde_json::Value = serde_json::from_str(&ctl(
        &run,
        &[
            "--json",
            "dns",
            "query",
            "nope.example.org",
            "--from",
            "f/cli",
        ],
    ))
    .expect("json");
    assert_eq!(
        (&q["rcode"], &q["source"]),
        (&"NXDOMAIN".into(), &"upstream".into()),
        "{q}"
    );
    let q: serde_json::Value = serde_json::from_str(&ctl(
        &run,
        &[
            "--json",
            "dns",
            "query",
            "api.corp.example",
            "--from",
            "f/cli",
        ],
    ))
    .expect("json");
    assert_eq!(q["answers"][0]["type"], "CNAME", "{q}");
    assert_eq!(q["answers"][1]["data"], "198.51.100.77", "{q}");
    // An internet host's resolv.conf names the upstream, reached through the uplink.
    let conf = run.exec("internet/pub", &["cat", "/etc/resolv.conf"]);
    assert!(
        String::from_utf8_lossy(&conf.stdout).contains(&format!("nameserver {UPSTREAM}\n")),
        "{}",
        text(&conf)
    );
    assert_eq!(
        dig(&run, "internet/pub", &["api.example.org"]),
        ["198.51.100.77"]
    );
    run.stop();
    assert_no_etc_netns("vr-dcn");
}

#[test]
fn an_internet_host_without_a_reachable_resolver_fails_lookups_at_once() {
    if !capable("dns_internet_host", &["getent"]) {
        return;
    }
    let topo = format!(
        "{}\n[internet]\n[[internet.host]]\nname = \"pub\"\nip = \"198.51.100.20\"\n",
        topology()
    );
    let run = Run::up("vr-dih", &topo);
    let conf = run.exec("internet/pub", &["cat", "/etc/resolv.conf"]);
    let conf = String::from_utf8_lossy(&conf.stdout).into_owned();
    assert!(
        conf.starts_with("# Written by vpcd: an internet host has no resolver"),
        "{conf}"
    );
    let started = Instant::now();
    let out = run.exec("internet/pub", &["getent", "hosts", "api.example.org"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the lookup took {:?}",
        started.elapsed()
    );
    run.stop();
    assert_no_etc_netns("vr-dih");
}
