//! Black-box tests of `vpcd test` and of the `vpcd::sim` library API, on the bundled topologies and
//! on small ones written here. Everything runs in process: no root, no namespaces, virtual time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vpcd::dataplane::DropReason;
use vpcd::sim::{Observed, Outcome, Simulation};
use vpcd::topology::model::Expect;

fn topology(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name)
}

fn vpcd_test(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .arg("test")
        .arg(file)
        .output()
        .expect("the vpcd binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A topology file in a fresh directory that is removed when the guard drops.
struct TempTopology {
    dir: PathBuf,
    file: PathBuf,
}

impl TempTopology {
    fn new(tag: &str, body: &str) -> TempTopology {
        let dir =
            std::env::temp_dir().join(format!("vpcd-sim-probes-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join(format!("{tag}.toml"));
        std::fs::write(&file, body).expect("write topology");
        TempTopology { dir, file }
    }
}

impl Drop for TempTopology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SMALL: &str = r#"
[[vpc]]
name = "tenant-a"
cidr = "10.0.0.0/16"
subnet = [{ name = "app", cidr = "10.0.1.0/24" }]
instance = [
  { name = "fn-a1", subnet = "app", ip = "10.0.1.10", attach = "sim" },
  { name = "fn-a2", subnet = "app", ip = "10.0.1.20", attach = "sim" },
]
"#;

#[test]
fn vpcd_test_passes_the_quickstart() {
    let out = vpcd_test(&topology("quickstart.toml"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with("probe"),
        "a table header first: {stdout}"
    );
    assert!(stdout.contains("fn-a1 pings its subnet gateway"));
    assert!(!stdout.contains("FAIL"));
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(" passed, 0 failed"))
    );
}

#[test]
fn vpcd_test_passes_two_tenants() {
    let out = vpcd_test(&topology("two-tenants.toml"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("tenant-a cannot reach tenant-b/fn-b1 (tcp)"));
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(" passed, 0 failed"))
    );
}

#[test]
fn a_wrong_expectation_fails_with_the_drop_reason() {
    let t = TempTopology::new(
        "wrong",
        &format!(
            "{SMALL}
[[probe]]
name = \"to nowhere\"
from = \"tenant-a/fn-a1\"
to = \"10.0.1.99:80/tcp\"
expect = \"allow\"

[[probe]]
name = \"to fn-a2\"
from = \"tenant-a/fn-a1\"
to = \"tenant-a/fn-a2/icmp\"
expect = \"allow\"
"
        ),
    );
    let out = vpcd_test(&t.file);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("to nowhere"))
        .expect("a row for the failing probe");
    assert!(row.contains("FAIL"), "{row}");
    assert!(row.contains(DropReason::NoSuchHost.label()), "{row}");
    assert!(row.contains(DropReason::NoSuchHost.describe()), "{row}");
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn a_topology_without_probes_says_so() {
    let t = TempTopology::new("noprobes", SMALL);
    let out = vpcd_test(&t.file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no probes"));
}

#[test]
fn a_broken_file_exits_2_with_diagnostics() {
    let t = TempTopology::new("broken", "[[vpc]]\nname = \"a\"\ncidr = \"10.0.0.0/99\"\n");
    let out = vpcd_test(&t.file);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing runs: {}", text(&out.stdout));

    let out = vpcd_test(&t.dir.join("missing.toml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml"));
}

#[test]
fn two_tenants_are_isolated_even_at_the_same_address() {
    let mut sim = Simulation::load(&topology("two-tenants.toml")).expect("bundled topology loads");
    // Every declared probe holds.
    let results = sim.run_probes();
    assert!(results.iter().all(|r| r.passed()), "{results:#?}");
    // tenant-a/fn-a2 and tenant-b/fn-b1 share 10.0.1.20: tenant-a reaches its own...
    let own = sim
        .check("tenant-a/fn-a1", "10.0.1.20:80/tcp", Expect::Allow)
        .expect("valid probe");
    assert!(own.passed());
    assert_eq!(own.answered_by.as_deref(), Some("tenant-a/fn-a2"));
    // ...and never tenant-b's, in any protocol, in either direction.
    for (from, to) in [
        ("tenant-a/fn-a1", "tenant-b/fn-b1:80/tcp"),
        ("tenant-a/fn-a1", "tenant-b/fn-b1:53/udp"),
        ("tenant-a/fn-a1", "tenant-b/fn-b1/icmp"),
        ("tenant-b/fn-b1", "tenant-a/fn-a1:80/tcp"),
        ("tenant-b/fn-b3", "tenant-a/fn-a2/icmp"),
    ] {
        assert_eq!(
            sim.probe(from, to).expect("valid probe"),
            Observed::Deny,
            "{from} -> {to}"
        );
    }
}

#[test]
fn a_named_probe_is_answered_only_by_the_named_host() {
    let mut sim = Simulation::load(&topology("two-tenants.toml")).expect("bundled topology loads");
    let r = sim
        .check("tenant-a/fn-a1", "tenant-b/fn-b1:80/tcp", Expect::Deny)
        .expect("valid probe");
    // The SYN reached tenant-a/fn-a2 (same address), which does not listen for this probe.
    assert_eq!(r.outcome, Outcome::Reset);
    assert_eq!(r.answered_by.as_deref(), Some("tenant-a/fn-a2"));
    let r = sim
        .check("tenant-a/fn-a1", "tenant-b/fn-b1/icmp", Expect::Deny)
        .expect("valid probe");
    // Ping is answered by any stack, so the exchange completes, but from the wrong host.
    assert_eq!(r.outcome, Outcome::WrongResponder);
    assert_eq!(r.observed, Observed::Deny);
    // Inside tenant-b, the named host itself answers.
    let r = sim
        .check("tenant-b/fn-b2", "tenant-b/fn-b1:80/tcp", Expect::Allow)
        .expect("valid probe");
    assert!(r.passed());
    assert_eq!(r.answered_by.as_deref(), Some("tenant-b/fn-b1"));
}

#[test]
fn vpcd_test_prints_the_same_table_every_run() {
    let file = topology("two-tenants.toml");
    let (one, two) = (vpcd_test(&file), vpcd_test(&file));
    assert_eq!(
        one.stdout, two.stdout,
        "virtual time and seeded stacks: no run-to-run noise"
    );
    assert_eq!(one.status.code(), two.status.code());
}

/// An in-process internet host answers on its secondary address too, through the NAT, and the
/// answer comes back from the address that was asked.
#[test]
fn a_sim_host_answers_on_its_secondary_address() {
    let mut sim = Simulation::parse(
        "secondary.toml",
        r#"
[[vpc]]
name = "v"
cidr = "10.0.0.0/16"
subnet = [
  { name = "fn", cidr = "10.0.1.0/24", route_table = "private" },
  { name = "public", cidr = "10.0.9.0/24" },
]
route_table = [ { name = "private", routes = [ { destination = "0.0.0.0/0", target = "nat:egress" } ] } ]
instance = [ { name = "f", subnet = "fn", ip = "10.0.1.10", attach = "sim" } ]
nat_gateway = [ { name = "egress", subnet = "public", eips = ["gw"], snat = [ { source = "10.0.0.0/16" } ] } ]
[[eip]]
name = "gw"
address = "203.0.113.1"
[internet]
host = [ { name = "web", ip = "198.51.100.10", secondary_ips = ["198.51.100.11"], attach = "sim", serve = ["tcp:80", "udp:53"] } ]
"#,
    )
    .expect("valid topology");
    for to in [
        "198.51.100.11:80/tcp",
        "198.51.100.11:53/udp",
        "198.51.100.10:80/tcp",
    ] {
        let r = sim.check("v/f", to, Expect::Allow).expect("valid probe");
        assert!(r.passed(), "{to}: {r:#?}");
        assert_eq!(r.answered_by.as_deref(), Some("internet/web"), "{to}");
    }
}

/// The VPC resolver serves DNS on 53/udp and 53/tcp (and answers ping): `vpcd explain` says so
/// for every port, and a probe of the running simulation sees the same.
#[test]
fn explain_and_the_probe_agree_on_the_resolvers_ports() {
    let plan = vpcd::topology::parse("small.toml", SMALL).expect("valid");
    let tables = vpcd::topology::compile::tables(&plan);
    let mut sim = Simulation::parse("small.toml", SMALL).expect("loads");
    let cases = [
        ("10.0.0.2:53/udp", true),
        ("10.0.0.2:53/tcp", true),
        ("169.254.169.253:53/udp", true),
        ("10.0.0.2:80/tcp", false),
        ("169.254.169.253:80/tcp", false),
        ("10.0.0.2:80/udp", false),
        ("10.0.0.2:443/tcp", false),
        ("10.0.0.2/icmp", true),
    ];
    for (to, served) in cases {
        let q = vpcd::explain::Query::parse(&plan, "tenant-a/fn-a1", to).expect("query");
        let e = vpcd::explain::explain(&plan, &tables, &q);
        let probed = sim.probe("tenant-a/fn-a1", to).expect("valid probe");
        assert_eq!(e.reachable(), served, "explain of {to}:\n{}", e.render());
        assert_eq!(
            probed == Observed::Allow,
            served,
            "probe of {to}: {probed:?}"
        );
        if !served {
            assert!(
                e.render().contains("serves DNS on 53/udp and 53/tcp only"),
                "{}",
                e.render()
            );
        }
    }
}

/// Issue 14: the bundled quickstart with its NAT gateway's SYN proxy on still passes every
/// probe; the DNAT probe's connection is answered by the instance through the proxy (the
/// simulated host's TCP stack took the cookie's SYN-ACK, the gateway opened the connection to
/// the function itself and shifted the sequence numbers of the exchange).
#[test]
fn the_quickstart_passes_its_probes_with_the_syn_proxy_on() {
    let text = std::fs::read_to_string(topology("quickstart.toml")).expect("quickstart");
    let proxied = text.replace(
        "eips = [\"egress-ip\"]",
        "eips = [\"egress-ip\"]\n  syn_proxy = true",
    );
    assert_ne!(proxied, text, "the quickstart's gateway moved");
    let mut sim = Simulation::parse("quickstart.toml", &proxied).expect("valid");
    let results = sim.run_probes();
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| (&r.name, &r.observed))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let dnat = results
        .iter()
        .find(|r| r.name.contains("DNAT entry"))
        .expect("the quickstart's DNAT probe");
    assert_eq!(dnat.observed, Observed::Allow);
    assert_eq!(dnat.outcome, Outcome::Completed, "the payload came back");
    let egress = sim
        .fabric()
        .gateways()
        .counters()
        .into_iter()
        .find(|g| g.gateway == "egress")
        .expect("the egress gateway");
    let (cookies, proxied): (u64, u64) = egress
        .pools
        .iter()
        .fold((0, 0), |(c, p), x| (c + x.syn_cookies, p + x.syn_proxied));
    assert!(
        cookies >= 1 && proxied >= 1,
        "{cookies} cookies, {proxied} proxied"
    );
}
