//! `vpcd explain` as a user runs it: the text names the component and rule that blocks each
//! denied probe of `topologies/web-tier.toml`, the exit codes are 0/1/2, and `vpcd test` prints
//! the walk under a failed probe.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn topology(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name)
}

fn vpcd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(args)
        .output()
        .expect("the vpcd binary runs")
}

fn explain(file: &str, from: &str, to: &str) -> (i32, String) {
    let path = topology(file);
    let out = vpcd(&["explain", path.to_str().unwrap(), from, to]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

#[test]
fn explain_names_the_nacl_rule_that_closes_the_debug_port() {
    let (code, text) = explain("web-tier.toml", "shop/frontend", "shop/api:9001/tcp");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("network ACL `app-acl` of subnet `app`, inbound: rule 100 (deny tcp 9001 from 0.0.0.0/0) denies tcp:9001 from 10.1.1.10"),
        "{text}"
    );
    assert_eq!(
        last_line(&text),
        "verdict: blocked by network ACL app-acl inbound rule 100 (nacl_inbound)"
    );
    // The walk got past the sender's security group and the source subnet's (default) ACL.
    assert!(text.contains("egress: tcp:9001 to 10.1.2.10 allowed by group `web-sg`"));
}

#[test]
fn explain_names_the_security_group_that_denies_batch_and_ops() {
    for (from, src) in [("shop/batch", "10.1.2.20"), ("shop/ops", "10.1.1.20")] {
        let (code, text) = explain("web-tier.toml", from, "shop/api:9000/tcp");
        assert_eq!(code, 1, "{text}");
        assert_eq!(
            last_line(&text),
            format!(
                "verdict: blocked by security group `api-sg` of shop/api, ingress: no rule allows tcp:9000 from {src} (sg_ingress)"
            )
        );
    }
    // batch shares the api's subnet: no ACL is consulted; ops crosses the edge: both ACLs are.
    let (_, text) = explain("web-tier.toml", "shop/batch", "shop/api:9000/tcp");
    assert!(text.contains("same subnet `app`: network ACLs apply only at the subnet edge"));
    let (_, text) = explain("web-tier.toml", "shop/ops", "shop/api:9000/tcp");
    assert!(text.contains("network ACL `app-acl` of subnet `app`, inbound: rule 32000"));
}

#[test]
fn explain_names_the_egress_list_and_the_default_group() {
    let (code, text) = explain("web-tier.toml", "shop/api", "internet/client:53/udp");
    assert_eq!(code, 1);
    assert_eq!(
        last_line(&text),
        "verdict: blocked by security group `api-sg` of shop/api, egress: no rule allows udp:53 to 198.51.100.20 (sg_egress)"
    );
    let (code, text) = explain("web-tier.toml", "shop/frontend", "shop/batch:22/tcp");
    assert_eq!(code, 1);
    assert!(text.contains("security groups of shop/batch [default (the VPC default group)]"));
    assert_eq!(
        last_line(&text),
        "verdict: blocked by security group `default` of shop/batch, ingress: no rule allows tcp:22 from 10.1.1.10 (sg_ingress)"
    );
}

#[test]
fn explain_names_nat_and_routing_blocks() {
    let (code, text) = explain("web-tier.toml", "internet/client", "203.0.113.50:22/tcp");
    assert_eq!(code, 1);
    assert_eq!(
        last_line(&text),
        "verdict: blocked by NAT gateway edge (no DNAT entry) (nat_no_mapping)"
    );
    let (code, text) = explain("web-tier.toml", "internet/client", "10.1.2.10:9000/tcp");
    assert_eq!(code, 1);
    assert_eq!(
        last_line(&text),
        "verdict: blocked by the public segment (no_such_host)"
    );
}

#[test]
fn explain_walks_an_allowed_dnat_path_with_rule_and_description() {
    let (code, text) = explain("web-tier.toml", "internet/client", "203.0.113.50:80/tcp");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("DNAT 203.0.113.50:80/tcp -> 10.1.1.10:8080 (shop/frontend)"));
    assert!(text.contains(
        "allowed by group `web-sg` ingress rule 0 (tcp 8080 from 0.0.0.0/0: \"the DNAT entry 203.0.113.50:80 forwards here\")"
    ));
    assert_eq!(last_line(&text), "verdict: reachable");
    let (code, text) = explain("web-tier.toml", "shop/api", "internet/client:80/tcp");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("route table `main` of subnet `app`: 0.0.0.0/0 -> nat:edge"));
    assert!(text.contains("SNAT 10.1.2.10 -> 203.0.113.50"));
    assert!(
        text.contains("return path: network ACL `app-acl` of subnet `app`, inbound: rule 32000")
    );
}

#[test]
fn explain_reports_a_reply_blocked_by_a_stateless_acl() {
    // An ACL without an outbound rule for ephemeral ports lets the request in and the reply die.
    let dir = std::env::temp_dir().join(format!("vpcd-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acl.toml");
    std::fs::write(
        &file,
        r#"
[[vpc]]
name = "v"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "a"
  cidr = "10.0.1.0/24"
  network_acl = "strict"
  [[vpc.subnet]]
  name = "b"
  cidr = "10.0.2.0/24"
  [[vpc.network_acl]]
  name = "strict"
  inbound = [{ rule = 100, action = "allow", protocol = "tcp", ports = 80, cidr = "10.0.0.0/16" }]
  outbound = [{ rule = 100, action = "allow", protocol = "tcp", ports = 80, cidr = "10.0.0.0/16" }]
  [[vpc.instance]]
  name = "x"
  subnet = "a"
  [[vpc.instance]]
  name = "y"
  subnet = "b"
"#,
    )
    .unwrap();
    let out = vpcd(&["explain", file.to_str().unwrap(), "v/y", "v/x:80/tcp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("delivered to v/x"));
    assert!(text.contains("return path: network ACL `strict` of subnet `a`, outbound: no rule matches tcp:49152 to 10.0.2.2"), "{text}");
    assert_eq!(
        last_line(&text),
        "verdict: blocked by network ACL strict outbound implicit deny on the return path (nacl_outbound)"
    );
}

#[test]
fn explain_bad_input_exits_2() {
    let (code, text) = explain("web-tier.toml", "shop/nobody", "10.1.2.10:9000/tcp");
    assert_eq!(code, 2);
    assert!(text.contains("no endpoint named `shop/nobody`"));
    let (code, _) = explain("web-tier.toml", "shop/api", "10.1.2.10:9000");
    assert_eq!(code, 2);
    let (code, _) = explain("does-not-exist.toml", "shop/api", "10.1.2.10:9000/tcp");
    assert_eq!(code, 2);
}

#[test]
fn vpcd_test_passes_web_tier() {
    let path = topology("web-tier.toml");
    let out = vpcd(&["test", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("12 passed, 0 failed\n"), "{text}");
}

#[test]
fn vpcd_test_explains_a_failed_probe() {
    let text = std::fs::read_to_string(topology("web-tier.toml"))
        .unwrap()
        .replace(
            "name = \"the network ACL closes the api's debug port\"\nfrom = \"shop/frontend\"\nto = \"shop/api:9001/tcp\"\nexpect = \"deny\"",
            "name = \"wrongly expected open\"\nfrom = \"shop/frontend\"\nto = \"shop/api:9001/tcp\"\nexpect = \"allow\"",
        );
    assert!(text.contains("wrongly expected open"));
    let dir = std::env::temp_dir().join(format!("vpcd-explain-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web-tier.toml");
    std::fs::write(&file, text).unwrap();
    let out = vpcd(&["test", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL wrongly expected open: vpcd explain says"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict: blocked by network ACL app-acl inbound rule 100 (nacl_inbound)")
    );
}

/// VPC `a`: `f1` with the 1:1 EIP `direct` in a subnet that routes to the NAT gateway `egress`,
/// `p1` with the 1:1 EIP `public` in the public subnet; both accept port 8080 (TCP and UDP).
const ASYMMETRIC_ONE_TO_ONE: &str = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "private"
  cidr = "10.0.1.0/24"
  route_table = "private"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  [[vpc.route_table]]
  name = "private"
  routes = [{ destination = "0.0.0.0/0", target = "nat:egress" }]
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "internet" }]
  [[vpc.nat_gateway]]
  name = "egress"
  subnet = "public"
  eips = ["nat-ip"]
  [[vpc.security_group]]
  name = "open"
  ingress = [
    { protocol = "tcp", ports = "8080", peer = "0.0.0.0/0" },
    { protocol = "udp", ports = "8080", peer = "0.0.0.0/0" },
  ]
  [[vpc.instance]]
  name = "f1"
  subnet = "private"
  ip = "10.0.1.10"
  eip = "direct"
  security_groups = ["open"]
  attach = "sim"
  [[vpc.instance]]
  name = "p1"
  subnet = "public"
  ip = "10.0.9.10"
  eip = "public"
  security_groups = ["open"]
  attach = "sim"
[[eip]]
name = "nat-ip"
address = "203.0.113.10"
[[eip]]
name = "direct"
address = "203.0.113.21"
[[eip]]
name = "public"
address = "203.0.113.22"
[internet]
  [[internet.host]]
  name = "web"
  ip = "198.51.100.10"
  attach = "sim"
"#;

/// An instance with a 1:1 EIP in a subnet whose default route goes to a NAT gateway: the first
/// packet reaches it through the EIP, but its TCP reply follows the NAT route and the NAT has no
/// session for it (the AWS pitfall of an EIP in a private subnet). `explain` says so, and the
/// simulation agrees.
#[test]
fn explain_names_the_asymmetric_return_route_of_a_one_to_one_eip_behind_a_nat_route() {
    let dir = std::env::temp_dir().join(format!("vpcd-explain-asym-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("asym.toml");
    std::fs::write(
        &file,
        format!(
            "{ASYMMETRIC_ONE_TO_ONE}{}",
            r#"
[[probe]]
name = "EIP in a private subnet: the reply takes the NAT route"
from = "internet/web"
to = "203.0.113.21:8080/tcp"
expect = "deny"
[[probe]]
name = "EIP in a public subnet works"
from = "internet/web"
to = "203.0.113.22:8080/tcp"
expect = "allow"
"#
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = vpcd(&["explain", path, "internet/web", "203.0.113.21:8080/tcp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("return path: the reply to 198.51.100.10 follows route 0.0.0.0/0 -> nat:egress, not the internet gateway of the 1:1 EIP"),
        "{text}"
    );
    assert_eq!(
        last_line(&text),
        "verdict: blocked by asymmetric return route via NAT gateway egress (nat_tcp_no_session)"
    );
    let out = vpcd(&["explain", path, "internet/web", "203.0.113.22:8080/tcp"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The simulation measures the same thing.
    let out = vpcd(&["test", path]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A UDP flow in through a 1:1 EIP whose subnet routes to a NAT gateway: the reply leaves as a
/// new flow from the gateway's EIP. A public host gets it; the sender's NAT gateway (filtering
/// by where its session went) drops it; a sender with its own 1:1 EIP lets it in only if its
/// security groups allow the other address. `explain` says each, and the fabric does it.
#[test]
fn explain_follows_a_udp_reply_that_takes_the_nat_route_out_of_a_one_to_one_eip() {
    use std::sync::Arc;

    use etherparse::PacketBuilder;
    use vpcd::dataplane::{DropReason, Fabric, MIN_BUFFER, Verdict};
    use vpcd::explain::Query;
    use vpcd::time::Instant;

    let text = format!(
        "{ASYMMETRIC_ONE_TO_ONE}{}",
        r#"
[[vpc]]
name = "b"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s"
  cidr = "10.0.1.0/24"
  [[vpc.subnet]]
  name = "public"
  cidr = "10.0.9.0/24"
  route_table = "public"
  [[vpc.route_table]]
  name = "main"
  routes = [{ destination = "0.0.0.0/0", target = "nat:b-egress" }]
  [[vpc.route_table]]
  name = "public"
  routes = [{ destination = "0.0.0.0/0", target = "internet" }]
  [[vpc.nat_gateway]]
  name = "b-egress"
  subnet = "public"
  eips = ["b-ip"]
  [[vpc.instance]]
  name = "c1"
  subnet = "s"
  ip = "10.0.1.10"
[[eip]]
name = "b-ip"
address = "203.0.113.30"
"#
    );
    let plan = vpcd::topology::parse("asym-udp.toml", &text).unwrap();
    let tables = Arc::new(vpcd::topology::compile::tables(&plan));
    let send = |fabric: &mut Fabric, from: &str, pkt: &[u8]| {
        let mut buf = pkt.to_vec();
        buf.resize(pkt.len().max(MIN_BUFFER), 0);
        let port = tables.port_named(from).unwrap();
        let v = fabric.handle(Instant::from_secs(1), port, &mut buf, pkt.len());
        if let Verdict::Forward { len, .. } = v {
            buf.truncate(len);
        }
        (v, buf)
    };
    let udp = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16| {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, b"x")
            .unwrap();
        out
    };
    let f1 = tables.port_named("a/f1").unwrap();
    for (from, src, verdict_line, reply_gets_back) in [
        (
            "internet/web",
            [198, 51, 100, 10],
            "verdict: reachable",
            true,
        ),
        (
            "b/c1",
            [10, 0, 1, 10],
            "verdict: blocked by NAT gateway b-egress (reply from 203.0.113.10) (nat_filtered)",
            false,
        ),
        (
            "a/p1",
            [10, 0, 9, 10],
            "verdict: blocked by security group `open` of a/p1, ingress: no rule allows udp:49152 \
             from 203.0.113.10 on the return path (sg_ingress)",
            false,
        ),
    ] {
        let q = Query::parse(&plan, from, "203.0.113.21:8080/udp").unwrap();
        let e = vpcd::explain::explain(&plan, &tables, &q);
        assert_eq!(e.verdict_line(), verdict_line, "{}", e.render());
        assert!(
            e.render().contains(
                "follows route 0.0.0.0/0 -> nat:egress, not the internet gateway of the 1:1 EIP: \
                 it leaves as a new flow, SNAT 10.0.1.10 -> 203.0.113.10"
            ),
            "{}",
            e.render()
        );
        // The fabric: the first packet reaches f1, the reply leaves from the NAT gateway's EIP.
        let mut fabric = Fabric::new(tables.clone());
        let (v, delivered) = send(&mut fabric, from, &udp(src, 49152, [203, 0, 113, 21], 8080));
        assert!(
            matches!(v, Verdict::Forward { port, .. } if port == f1),
            "{v:?}"
        );
        let client = [delivered[12], delivered[13], delivered[14], delivered[15]];
        let (v, out) = send(
            &mut fabric,
            "a/f1",
            &udp([10, 0, 1, 10], 8080, client, 49152),
        );
        let back =
            matches!(v, Verdict::Forward { port, .. } if port == tables.port_named(from).unwrap());
        assert_eq!(back, reply_gets_back, "{from}: {v:?}");
        match from {
            "internet/web" => assert_eq!(&out[12..16], &[203, 0, 113, 10]),
            "b/c1" => assert_eq!(v, Verdict::Drop(DropReason::NatFiltered)),
            _ => assert_eq!(v, Verdict::Drop(DropReason::SecurityGroupIngress)),
        }
    }
}

#[test]
fn explain_shows_the_vpc_resolver_reached_past_every_filter() {
    for to in ["10.1.0.2:53/udp", "169.254.169.253:53/tcp"] {
        let (code, text) = explain("web-tier.toml", "shop/frontend", to);
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains("is the VPC resolver (DNS on port 53): reached from every subnet"),
            "{text}"
        );
        assert!(text.contains("delivered to shop#resolver"), "{text}");
        assert_eq!(last_line(&text), "verdict: reachable");
    }
}

#[test]
fn explain_shows_how_a_name_target_resolves() {
    let (code, text) = explain(
        "web-tier.toml",
        "shop/frontend",
        "api.shop.vpc.internal:8080/tcp",
    );
    assert!(
        text.contains(
            "api.shop.vpc.internal is 10.1.2.10 (the A record VPC shop's resolver answers)"
        ),
        "{text}"
    );
    // The walk goes on with the answered address, to the same verdict as by address.
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        last_line(&text),
        last_line(&explain("web-tier.toml", "shop/frontend", "10.1.2.10:8080/tcp").1)
    );
    let (code, text) = explain("web-tier.toml", "shop/frontend", "nope.example:80/tcp");
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("`nope.example` does not resolve from shop/frontend: NXDOMAIN"),
        "{text}"
    );
}
