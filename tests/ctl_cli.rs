//! `vpcd ctl` as a black box (no root): the built binary against a small fake API that this test
//! runs on a temporary Unix socket (or on 127.0.0.1:0 for the token path) in a thread. Each test
//! checks what ctl sends (request line, path, query, headers, JSON body with the API's field
//! names) and what it prints for canned answers (tables, one-line results, `--json` passthrough,
//! errors and exit codes: 0 done, 1 refused, 2 bad arguments or no server).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const VPCD: &str = env!("CARGO_BIN_EXE_vpcd");

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vpcd-ctl-cli-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One request as the fake server received it.
#[derive(Debug)]
struct Seen {
    /// `GET /v1/vpcs HTTP/1.1`
    line: String,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A canned answer.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

fn json_reply(status: u16, v: Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: v.to_string() + "\n",
    }
}

fn text_reply(body: &str) -> Reply {
    Reply {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

/// What a successful change answers.
fn changed(op: &str) -> Reply {
    json_reply(
        200,
        json!({"op": op, "generation": 7, "applied": "+0 -0 ~1 (a/f1), 3 unchanged",
               "problems": []}),
    )
}

/// The fake API: answers one request per canned reply, in order, and reports each request.
struct Fake {
    /// `--socket PATH` or `--url http://127.0.0.1:PORT`.
    flag: [String; 2],
    seen: mpsc::Receiver<Seen>,
    dir: TempDir,
}

impl Fake {
    fn unix(replies: Vec<Reply>) -> Fake {
        let dir = TempDir::new();
        let path = dir.0.join("api.sock");
        let listener = UnixListener::bind(&path).expect("bind the fake API socket");
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((s, _)) = listener.accept() else {
                    return;
                };
                if serve_one(s, &reply, &tx).is_err() {
                    return;
                }
            }
        });
        Fake {
            flag: ["--socket".into(), path.display().to_string()],
            seen,
            dir,
        }
    }

    fn tcp(replies: Vec<Reply>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API on loopback");
        let port = listener.local_addr().expect("addr").port();
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((s, _)) = listener.accept() else {
                    return;
                };
                if serve_one(s, &reply, &tx).is_err() {
                    return;
                }
            }
        });
        Fake {
            flag: ["--url".into(), format!("http://127.0.0.1:{port}")],
            seen,
            dir: TempDir::new(),
        }
    }

    /// `vpcd ctl --socket PATH ARGS...` with no API variables in its environment.
    fn ctl(&self, args: &[&str]) -> Output {
        let mut c = ctl_command(&self.dir.0);
        c.args(&self.flag).args(args);
        c.output().expect("run vpcd ctl")
    }

    /// The next request ctl sent.
    fn request(&self) -> Seen {
        self.seen
            .recv_timeout(Duration::from_secs(10))
            .expect("vpcd ctl sent no request")
    }

    /// Asserts ctl sent nothing.
    fn nothing_sent(&self) {
        assert!(
            self.seen.recv_timeout(Duration::from_millis(50)).is_err(),
            "vpcd ctl sent a request"
        );
    }
}

/// `vpcd ctl` in `dir` (as working directory and run directory), without API variables.
fn ctl_command(dir: &Path) -> Command {
    let mut c = Command::new(VPCD);
    c.arg("ctl")
        .current_dir(dir)
        .env("VPCD_RUN_DIR", dir)
        .env_remove("VPCD_API_SOCKET")
        .env_remove("VPCD_API_URL")
        .env_remove("VPCD_API_TOKEN");
    c
}

fn serve_one(
    mut s: impl Read + Write,
    reply: &Reply,
    tx: &mpsc::Sender<Seen>,
) -> std::io::Result<()> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let _ = tx.send(Seen {
        line,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let reason = if reply.status < 400 { "OK" } else { "Error" };
    write!(
        s,
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        reply.status,
        reply.content_type,
        reply.body.len(),
        reply.body
    )?;
    s.flush()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit `code`, with both streams in the message.
#[track_caller]
fn exits(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Runs ctl against a fake that answers `reply`; returns the request and the output.
fn exchange(args: &[&str], reply: Reply) -> (Seen, Output) {
    let fake = Fake::unix(vec![reply]);
    let out = fake.ctl(args);
    (fake.request(), out)
}

// ---- changes ------------------------------------------------------------------------------

/// Every change subcommand posts to `/v1/ops/{op}` a body with the API's field names (optional
/// ones left out when not given) and prints one line saying what it did, with the generation
/// and what the running network did.
#[test]
fn changes_post_their_op_with_the_api_field_names_and_print_one_line() {
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str, Value, &str)> = vec![
        (vec!["vpc", "add", "a", "--cidr", "10.0.0.0/16"], "add_vpc",
         json!({"name": "a", "cidr": "10.0.0.0/16"}), "added vpc a (10.0.0.0/16)"),
        (vec!["vpc", "remove", "a"], "remove_vpc", json!({"name": "a"}), "removed vpc a"),
        (vec!["subnet", "add", "a", "fn", "--cidr", "10.0.1.0/24"], "add_subnet",
         json!({"vpc": "a", "name": "fn", "cidr": "10.0.1.0/24"}),
         "added subnet a/fn (10.0.1.0/24)"),
        (vec!["subnet", "add", "a", "pub", "--cidr", "10.0.9.0/24", "--route-table", "public",
              "--network-acl", "strict"], "add_subnet",
         json!({"vpc": "a", "name": "pub", "cidr": "10.0.9.0/24", "route_table": "public",
                "network_acl": "strict"}),
         "added subnet a/pub (10.0.9.0/24)"),
        (vec!["subnet", "remove", "a", "fn"], "remove_subnet", json!({"vpc": "a", "name": "fn"}),
         "removed subnet a/fn"),
        (vec!["route-table", "add", "a", "public"], "add_route_table",
         json!({"vpc": "a", "name": "public"}), "added route table a/public"),
        (vec!["route-table", "remove", "a", "public"], "remove_route_table",
         json!({"vpc": "a", "name": "public"}), "removed route table a/public"),
        (vec!["route-table", "associate", "a", "--subnet", "fn", "--route-table", "public"],
         "associate_route_table", json!({"vpc": "a", "subnet": "fn", "route_table": "public"}),
         "associated route table a/public with subnet a/fn"),
        (vec!["route", "add", "a", "--route-table", "main", "--destination", "0.0.0.0/0",
              "--target", "nat:egress"], "add_route",
         json!({"vpc": "a", "route_table": "main", "destination": "0.0.0.0/0",
                "target": "nat:egress"}),
         "added route 0.0.0.0/0 -> nat:egress to route table a/main"),
        (vec!["route", "remove", "a", "--route-table", "main", "--destination", "0.0.0.0/0"],
         "remove_route", json!({"vpc": "a", "route_table": "main", "destination": "0.0.0.0/0"}),
         "removed route 0.0.0.0/0 from route table a/main"),
        (vec!["instance", "add", "a", "f1", "--subnet", "fn"], "add_instance",
         json!({"vpc": "a", "name": "f1", "subnet": "fn"}), "added instance a/f1"),
        (vec!["instance", "add", "a", "f2", "--subnet", "fn", "--ip", "10.0.1.20", "--attach",
              "sim", "--security-group", "web", "--security-group", "ssh", "--eip", "f2-ip",
              "--mtu", "1400"], "add_instance",
         json!({"vpc": "a", "name": "f2", "subnet": "fn", "ip": "10.0.1.20", "attach": "sim",
                "security_groups": ["web", "ssh"], "eip": "f2-ip", "mtu": 1400}),
         "added instance a/f2"),
        (vec!["instance", "remove", "a", "f1"], "remove_instance",
         json!({"vpc": "a", "name": "f1"}), "removed instance a/f1"),
        (vec!["eip", "allocate", "web-ip", "--address", "203.0.113.5"], "allocate_eip",
         json!({"name": "web-ip", "address": "203.0.113.5"}), "allocated eip web-ip (203.0.113.5)"),
        (vec!["eip", "associate", "web-ip", "--instance", "tenant-a/fn-a1"], "associate_eip",
         json!({"eip": "web-ip", "vpc": "tenant-a", "instance": "fn-a1"}),
         "associated eip web-ip with tenant-a/fn-a1"),
        (vec!["eip", "associate", "web-ip", "--vpc", "tenant-a", "--instance", "fn-a1",
              "--allow-reassociation"], "associate_eip",
         json!({"eip": "web-ip", "vpc": "tenant-a", "instance": "fn-a1",
                "allow_reassociation": true}),
         "associated eip web-ip with tenant-a/fn-a1"),
        (vec!["eip", "associate", "gw2", "--nat-gateway", "a/egress"], "associate_eip",
         json!({"eip": "gw2", "vpc": "a", "nat_gateway": "egress"}),
         "associated eip gw2 with nat gateway a/egress"),
        (vec!["eip", "disassociate", "web-ip"], "disassociate_eip", json!({"eip": "web-ip"}),
         "disassociated eip web-ip"),
        (vec!["eip", "release", "web-ip"], "release_eip", json!({"name": "web-ip"}),
         "released eip web-ip"),
        (vec!["nat-gateway", "add", "a", "egress", "--subnet", "pub", "--ip", "10.0.9.5",
              "--eip", "gw", "--eip", "gw2"], "add_nat_gateway",
         json!({"vpc": "a", "name": "egress", "subnet": "pub", "ip": "10.0.9.5",
                "eips": ["gw", "gw2"]}),
         "added nat gateway a/egress"),
        (vec!["nat-gateway", "add", "a", "cgnat", "--subnet", "pub", "--profile", "aws",
              "--mapping", "endpoint-independent", "--filtering", "address-dependent",
              "--port-range", "1024-2047", "--port-preservation", "false",
              "--ports-per-instance", "64", "--max-connections", "1000",
              "--max-connections-per-instance", "100",
              "--new-connections-per-second-per-instance", "10", "--port-reuse-delay", "5",
              "--early-drop", "true", "--on-refuse", "icmp", "--rst-on-expired", "true"],
         "add_nat_gateway",
         json!({"vpc": "a", "name": "cgnat", "subnet": "pub", "profile": "aws",
                "mapping": "endpoint-independent", "filtering": "address-dependent",
                "port_range": "1024-2047", "port_preservation": false,
                "ports_per_instance": 64, "max_connections": 1000,
                "max_connections_per_instance": 100,
                "new_connections_per_second_per_instance": 10, "port_reuse_delay": 5,
                "early_drop": true, "on_refuse": "icmp", "rst_on_expired": true}),
         "added nat gateway a/cgnat"),
        (vec!["nat-gateway", "remove", "a", "egress"], "remove_nat_gateway",
         json!({"vpc": "a", "name": "egress"}), "removed nat gateway a/egress"),
        (vec!["snat", "add", "a", "--nat-gateway", "egress", "--source", "10.0.0.0/16"],
         "add_snat", json!({"vpc": "a", "nat_gateway": "egress", "source": "10.0.0.0/16"}),
         "added snat 10.0.0.0/16 -> all its eips on nat gateway a/egress"),
        (vec!["snat", "add", "a", "--nat-gateway", "egress", "--source", "f1", "--eip", "gw2"],
         "add_snat",
         json!({"vpc": "a", "nat_gateway": "egress", "source": "f1", "eips": ["gw2"]}),
         "added snat f1 -> gw2 on nat gateway a/egress"),
        (vec!["snat", "remove", "a", "--nat-gateway", "egress", "--source", "f1"], "remove_snat",
         json!({"vpc": "a", "nat_gateway": "egress", "source": "f1"}),
         "removed snat f1 from nat gateway a/egress"),
        (vec!["dnat", "add", "a", "--nat-gateway", "egress", "--eip", "gw", "--protocol", "tcp",
              "--port", "80", "--instance", "f1", "--instance-port", "8080"], "add_dnat",
         json!({"vpc": "a", "nat_gateway": "egress", "eip": "gw", "protocol": "tcp", "port": 80,
                "instance": "f1", "instance_port": 8080}),
         "added dnat gw:80/tcp -> f1:8080 on nat gateway a/egress"),
        (vec!["dnat", "add", "a", "--nat-gateway", "egress", "--eip", "gw", "--protocol", "any",
              "--instance", "f1"], "add_dnat",
         json!({"vpc": "a", "nat_gateway": "egress", "eip": "gw", "protocol": "any",
                "instance": "f1"}),
         "added dnat gw/any -> f1 on nat gateway a/egress"),
        (vec!["dnat", "remove", "a", "--nat-gateway", "egress", "--eip", "gw", "--protocol",
              "udp", "--port", "53"], "remove_dnat",
         json!({"vpc": "a", "nat_gateway": "egress", "eip": "gw", "protocol": "udp", "port": 53}),
         "removed dnat gw:53/udp from nat gateway a/egress"),
        (vec!["sg", "add", "a", "web"], "add_security_group", json!({"vpc": "a", "name": "web"}),
         "added security group a/web"),
        (vec!["sg", "remove", "a", "web"], "remove_security_group",
         json!({"vpc": "a", "name": "web"}), "removed security group a/web"),
        (vec!["sg-rule", "add", "a", "--group", "web", "--direction", "ingress", "--protocol",
              "tcp", "--ports", "80-81", "--peer", "0.0.0.0/0", "--description", "http"],
         "add_sg_rule",
         json!({"vpc": "a", "group": "web", "direction": "ingress", "protocol": "tcp",
                "ports": "80-81", "peer": "0.0.0.0/0", "description": "http"}),
         "added ingress rule (tcp 80-81 from 0.0.0.0/0) to security group a/web"),
        (vec!["sg-rule", "remove", "a", "--group", "web", "--direction", "egress", "--protocol",
              "icmp", "--icmp-type", "8", "--peer", "sg:db"], "remove_sg_rule",
         json!({"vpc": "a", "group": "web", "direction": "egress", "protocol": "icmp",
                "icmp_type": 8, "peer": "sg:db"}),
         "removed egress rule (icmp type 8 to sg:db) from security group a/web"),
        (vec!["acl", "add", "a", "strict"], "add_network_acl",
         json!({"vpc": "a", "name": "strict"}), "added network acl a/strict"),
        (vec!["acl", "remove", "a", "strict"], "remove_network_acl",
         json!({"vpc": "a", "name": "strict"}), "removed network acl a/strict"),
        (vec!["acl", "associate", "a", "--subnet", "fn", "--network-acl", "strict"],
         "associate_network_acl", json!({"vpc": "a", "subnet": "fn", "network_acl": "strict"}),
         "associated network acl a/strict with subnet a/fn"),
        (vec!["acl-rule", "add", "a", "--network-acl", "strict", "--direction", "inbound",
              "--rule", "100", "--action", "deny", "--protocol", "tcp", "--ports", "22",
              "--cidr", "0.0.0.0/0"], "add_acl_rule",
         json!({"vpc": "a", "network_acl": "strict", "direction": "inbound", "rule": 100,
                "action": "deny", "protocol": "tcp", "ports": "22", "cidr": "0.0.0.0/0"}),
         "added inbound rule 100 (deny tcp 22 0.0.0.0/0) to network acl a/strict"),
        (vec!["acl-rule", "remove", "a", "--network-acl", "strict", "--direction", "outbound",
              "--rule", "100"], "remove_acl_rule",
         json!({"vpc": "a", "network_acl": "strict", "direction": "outbound", "rule": 100}),
         "removed outbound rule 100 from network acl a/strict"),
        (vec!["apply", "add_instance", r#"{"vpc":"a","name":"x","subnet":"fn"}"#], "add_instance",
         json!({"vpc": "a", "name": "x", "subnet": "fn"}), "applied add_instance"),
    ];
    for (args, op, body, line) in cases {
        let (req, out) = exchange(&args, changed(op));
        exits(&out, 0);
        assert_eq!(req.line, format!("POST /v1/ops/{op} HTTP/1.1"), "{args:?}");
        assert_eq!(
            req.header("content-type"),
            Some("application/json"),
            "{args:?}"
        );
        assert_eq!(req.header("authorization"), None, "{args:?}");
        assert_eq!(req.json(), body, "{args:?}");
        assert_eq!(
            stdout(&out),
            format!("{line} (generation 7; endpoints +0 -0 ~1 (a/f1), 3 unchanged)\n"),
            "{args:?}"
        );
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

/// The problems the running network reports after a change are warnings on stderr; stdout keeps
/// its one line and the exit code is 0.
#[test]
fn problems_after_a_change_are_warnings() {
    let (_, out) = exchange(
        &["eip", "release", "x"],
        json_reply(
            200,
            json!({"op": "release_eip", "generation": 3, "applied": "",
                   "problems": ["gateway a/egress: port pool exhausted"]}),
        ),
    );
    exits(&out, 0);
    assert_eq!(stdout(&out), "released eip x (generation 3)\n");
    assert_eq!(
        stderr(&out),
        "warning: gateway a/egress: port pool exhausted\n"
    );
}

/// `--json` prints the API's answer exactly as it came, for a change and for a read.
#[test]
fn json_prints_the_answer_unchanged() {
    let answer =
        r#"{"op":"add_vpc","generation":9,"applied":"+0 -0 ~0, 0 unchanged","problems":[]}"#;
    let (_, out) = exchange(
        &["--json", "vpc", "add", "b", "--cidr", "10.9.0.0/16"],
        Reply {
            status: 200,
            content_type: "application/json",
            body: format!("{answer}\n"),
        },
    );
    exits(&out, 0);
    assert_eq!(stdout(&out), format!("{answer}\n"));

    let list = r#"[{"name":"a","cidr":"10.0.0.0/16","subnets":2,"instances":1,"nat_gateways":0}]"#;
    let (req, out) = exchange(
        &["vpc", "list", "--json"],
        Reply {
            status: 200,
            content_type: "application/json",
            body: format!("{list}\n"),
        },
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/vpcs HTTP/1.1");
    assert_eq!(stdout(&out), format!("{list}\n"));
}

// ---- reads --------------------------------------------------------------------------------

/// Each list is one `GET` of its resource, rendered as an aligned table: a header of the API's
/// field names, one row per object, `-` for what is absent.
#[test]
fn lists_render_aligned_tables() {
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str, Value, &str)> = vec![
        (vec!["vpc", "list"], "/v1/vpcs",
         json!([{"name": "tenant-a", "cidr": "10.61.0.0/16", "subnets": 2, "instances": 3,
                 "nat_gateways": 1},
                {"name": "b", "cidr": "10.62.0.0/16", "subnets": 0, "instances": 0,
                 "nat_gateways": 0}]),
         "NAME      CIDR          SUBNETS  INSTANCES  NAT_GATEWAYS\n\
          tenant-a  10.61.0.0/16  2        3          1\n\
          b         10.62.0.0/16  0        0          0\n"),
        (vec!["subnet", "list", "a"], "/v1/vpcs/a/subnets",
         json!([{"name": "fn", "cidr": "10.62.1.0/24", "route_table": "main",
                 "network_acl": null, "instances": 2}]),
         "NAME  CIDR          ROUTE_TABLE  NETWORK_ACL  INSTANCES\n\
          fn    10.62.1.0/24  main         -            2\n"),
        (vec!["instance", "list", "tenant-a"], "/v1/vpcs/tenant-a/instances",
         json!([{"name": "fn-a1", "subnet": "fn", "ip": "10.61.1.10", "attach": "netns",
                 "security_groups": ["web", "ssh"], "eip": "web-ip",
                 "eip_address": "203.0.113.5"},
                {"name": "fn-a2", "subnet": "fn", "ip": "10.61.1.11",
                 "security_groups": [], "eip": null, "eip_address": null}]),
         "NAME   SUBNET  IP          ATTACH  SECURITY_GROUPS  EIP     EIP_ADDRESS\n\
          fn-a1  fn      10.61.1.10  netns   web, ssh         web-ip  203.0.113.5\n\
          fn-a2  fn      10.61.1.11  -       -                -       -\n"),
        (vec!["route-table", "list", "a"], "/v1/vpcs/a/route-tables",
         json!([{"name": "main", "subnets": ["fn", "db"],
                 "routes": [{"destination": "0.0.0.0/0", "target": "nat:egress"}]},
                {"name": "public", "subnets": [], "routes": []}]),
         "NAME    SUBNETS  ROUTES\n\
          main    fn, db   1\n\
          public  -        0\n"),
        (vec!["route", "list", "a"], "/v1/vpcs/a/route-tables",
         json!([{"name": "main", "subnets": ["fn"],
                 "routes": [{"destination": "0.0.0.0/0", "target": "nat:egress"},
                            {"destination": "10.9.0.0/16", "target": "blackhole"}]},
                {"name": "public", "subnets": [],
                 "routes": [{"destination": "0.0.0.0/0", "target": "internet"}]}]),
         "ROUTE_TABLE  DESTINATION  TARGET\n\
          main         0.0.0.0/0    nat:egress\n\
          main         10.9.0.0/16  blackhole\n\
          public       0.0.0.0/0    internet\n"),
        (vec!["route", "list", "a", "--route-table", "public"], "/v1/vpcs/a/route-tables",
         json!([{"name": "main", "routes": [{"destination": "0.0.0.0/0", "target": "nat:e"}]},
                {"name": "public", "routes": [{"destination": "0.0.0.0/0",
                                               "target": "internet"}]}]),
         "ROUTE_TABLE  DESTINATION  TARGET\n\
          public       0.0.0.0/0    internet\n"),
        (vec!["eip", "list"], "/v1/eips",
         json!([{"name": "web-ip", "address": "203.0.113.5",
                 "association": {"vpc": "tenant-a", "instance": "fn-a1"}},
                {"name": "gw", "address": "203.0.113.10",
                 "association": {"vpc": "tenant-a", "nat_gateway": "egress"}},
                {"name": "spare", "address": "203.0.113.99", "association": null}]),
         "NAME    ADDRESS       ASSOCIATION\n\
          web-ip  203.0.113.5   instance tenant-a/fn-a1\n\
          gw      203.0.113.10  nat-gateway tenant-a/egress\n\
          spare   203.0.113.99  -\n"),
        (vec!["nat-gateway", "list", "a"], "/v1/vpcs/a/nat-gateways", nat_gateways(),
         "NAME    SUBNET  IP         EIPS     SNAT  DNAT\n\
          egress  public  10.62.9.4  gw, gw2  2     2\n"),
        (vec!["snat", "list", "a"], "/v1/vpcs/a/nat-gateways", nat_gateways(),
         "NAT_GATEWAY  SOURCE        EIPS\n\
          egress       10.62.0.0/16  (all)\n\
          egress       f1            gw2\n"),
        (vec!["dnat", "list", "a"], "/v1/vpcs/a/nat-gateways", nat_gateways(),
         "NAT_GATEWAY  EIP  PROTOCOL  PORT  INSTANCE  INSTANCE_PORT\n\
          egress       gw   tcp       80    f1        8080\n\
          egress       gw2  any       -     f2        -\n"),
        (vec!["sg", "list", "a"], "/v1/vpcs/a/security-groups",
         json!([{"name": "web",
                 "ingress": [{"protocol": "tcp", "ports": "80", "peer": "0.0.0.0/0",
                              "description": "http"},
                             {"protocol": "icmp", "icmp_type": 8, "peer": "10.0.0.0/8"}],
                 "egress": null},
                {"name": "locked", "ingress": [], "egress": []},
                {"name": "db", "ingress": [],
                 "egress": [{"protocol": "tcp", "ports": "5432-5433", "peer": "sg:web"}]}]),
         "GROUP   DIRECTION  PROTOCOL  PORTS      ICMP_TYPE  PEER        DESCRIPTION\n\
          web     ingress    tcp       80         -          0.0.0.0/0   http\n\
          web     ingress    icmp      -          8          10.0.0.0/8  -\n\
          web     egress     all       -          -          0.0.0.0/0   (implicit: all egress allowed)\n\
          locked  -          -         -          -          -           (no rules)\n\
          db      egress     tcp       5432-5433  -          sg:web      -\n"),
        (vec!["acl", "list", "a"], "/v1/vpcs/a/network-acls",
         json!([{"name": "strict", "subnets": ["fn"],
                 "inbound": [{"rule": 100, "action": "allow", "protocol": "tcp",
                              "ports": "443", "cidr": "0.0.0.0/0"},
                             {"rule": 200, "action": "deny", "protocol": "all",
                              "cidr": "0.0.0.0/0"}],
                 "outbound": [{"rule": 100, "action": "allow", "protocol": "all",
                               "cidr": "0.0.0.0/0"}]},
                {"name": "empty", "subnets": [], "inbound": [], "outbound": []}]),
         "NETWORK_ACL  DIRECTION  RULE  ACTION      PROTOCOL  PORTS  CIDR\n\
          strict       inbound    100   allow       tcp       443    0.0.0.0/0\n\
          strict       inbound    200   deny        all       -      0.0.0.0/0\n\
          strict       outbound   100   allow       all       -      0.0.0.0/0\n\
          empty        -          -     (no rules)  -         -      -\n"),
        (vec!["capture", "list"], "/v1/captures",
         json!([{"endpoint": "a/f1", "file": "/tmp/f1.pcap", "nat_file": "/tmp/f1.nat.pcap",
                 "packets": 12}]),
         "ENDPOINT  FILE          NAT_FILE          PACKETS  NAT_PACKETS\n\
          a/f1      /tmp/f1.pcap  /tmp/f1.nat.pcap  12       -\n"),
        (vec!["ops"], "/v1/ops", json!(["add_instance", "remove_instance"]),
         "add_instance\nremove_instance\n"),
    ];
    for (args, path, answer, table) in cases {
        let (req, out) = exchange(&args, json_reply(200, answer));
        exits(&out, 0);
        assert_eq!(req.line, format!("GET {path} HTTP/1.1"), "{args:?}");
        assert_eq!(req.header("accept"), Some("application/json"), "{args:?}");
        assert_eq!(req.header("host"), Some("localhost"), "{args:?}");
        assert_eq!(req.header("connection"), Some("close"), "{args:?}");
        assert_eq!(req.body, "", "{args:?}");
        assert_eq!(stdout(&out), table, "{args:?}");
        assert!(
            stdout(&out).lines().all(|l| l == l.trim_end()),
            "trailing spaces: {args:?}"
        );
    }
}

fn nat_gateways() -> Value {
    json!([{"name": "egress", "subnet": "public", "ip": "10.62.9.4", "eips": ["gw", "gw2"],
            "snat": [{"source": "10.62.0.0/16"}, {"source": "f1", "eips": ["gw2"]}],
            "dnat": [{"eip": "gw", "protocol": "tcp", "port": 80, "instance": "f1",
                      "instance_port": 8080},
                     {"eip": "gw2", "protocol": "any", "instance": "f2"}]}])
}

/// An empty list says what is not there instead of printing a lone header.
#[test]
fn empty_lists_say_so() {
    for (args, line) in [
        (vec!["vpc", "list"], "no VPCs"),
        (vec!["subnet", "list", "a"], "no subnets in VPC a"),
        (vec!["instance", "list", "a"], "no instances in VPC a"),
        (vec!["route-table", "list", "a"], "no route tables in VPC a"),
        (vec!["route", "list", "a"], "no routes in VPC a"),
        (vec!["nat-gateway", "list", "a"], "no NAT gateways in VPC a"),
        (vec!["snat", "list", "a"], "no SNAT entries in VPC a"),
        (vec!["dnat", "list", "a"], "no DNAT entries in VPC a"),
        (vec!["sg", "list", "a"], "no security groups in VPC a"),
        (vec!["acl", "list", "a"], "no network ACLs in VPC a"),
        (vec!["eip", "list"], "no EIPs"),
        (vec!["capture", "list"], "no captures"),
    ] {
        let (_, out) = exchange(&args, json_reply(200, json!([])));
        exits(&out, 0);
        assert_eq!(stdout(&out), format!("{line}\n"), "{args:?}");
    }
    let (req, out) = exchange(
        &["conntrack", "list"],
        json_reply(
            200,
            json!({"connections": [], "total": 0, "truncated": false}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/conntrack HTTP/1.1");
    assert_eq!(stdout(&out), "no connections\n");
}

/// `vpc show` prints the model's VPC as `KEY  value` lines; names in the path are
/// percent-encoded.
#[test]
fn vpc_show_lists_what_is_in_the_vpc() {
    let (req, out) = exchange(
        &["vpc", "show", "tenant a"],
        json_reply(
            200,
            json!({"name": "tenant a", "cidr": "10.61.0.0/16",
                   "subnet": [{"name": "fn", "cidr": "10.61.1.0/24"}],
                   "route_table": [{"name": "main", "routes": []}],
                   "instance": [{"name": "fn-a1", "subnet": "fn", "ip": "10.61.1.10"},
                                {"name": "fn-a2", "subnet": "fn"}],
                   "security_group": [{"name": "web", "ingress": []}]}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/vpcs/tenant%20a HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "NAME             tenant a\n\
         CIDR             10.61.0.0/16\n\
         SUBNETS          fn (10.61.1.0/24)\n\
         ROUTE_TABLES     main\n\
         INSTANCES        fn-a1 (10.61.1.10), fn-a2\n\
         NAT_GATEWAYS     -\n\
         SECURITY_GROUPS  web\n\
         NETWORK_ACLS     -\n"
    );
}

/// `status` shows the generation, the uptime and the endpoints; `internet` the CIDR and hosts.
#[test]
fn status_and_internet() {
    let (req, out) = exchange(
        &["status"],
        json_reply(
            200,
            json!({"generation": 4, "uptime_s": 12.345, "ops": ["add_vpc"],
                   "endpoints": [
                       {"name": "a/f1", "attach": "netns", "namespace": "vpcd-a-f1",
                        "addr": "10.62.1.10"},
                       {"name": "internet/web", "attach": "sim", "namespace": null,
                        "addr": "198.51.100.10"}]}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/status HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "GENERATION  4\n\
         UPTIME_S    12.3\n\
         ENDPOINTS   2\n\
         \n\
         NAME          ATTACH  NAMESPACE  ADDR\n\
         a/f1          netns   vpcd-a-f1  10.62.1.10\n\
         internet/web  sim     -          198.51.100.10\n"
    );
    let (req, out) = exchange(
        &["internet"],
        json_reply(
            200,
            json!({"cidr": "198.51.100.0/24",
                   "hosts": [{"name": "web", "ip": "198.51.100.10", "serve": ["http:80"]}]}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/internet HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "CIDR  198.51.100.0/24\n\
         \n\
         NAME  IP             SERVE    ATTACH\n\
         web   198.51.100.10  http:80  -\n"
    );
}

/// `export` and `metrics` print the text as it came; `export --json` asks for the model as JSON.
#[test]
fn export_and_metrics_print_text() {
    let (req, out) = exchange(&["export"], text_reply("[[vpc]]\nname = \"a\"\n"));
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/topology HTTP/1.1");
    assert_eq!(req.header("accept"), Some("text/plain"));
    assert_eq!(stdout(&out), "[[vpc]]\nname = \"a\"\n");
    let (req, out) = exchange(&["export", "--json"], json_reply(200, json!({"vpc": []})));
    exits(&out, 0);
    assert_eq!(req.header("accept"), Some("application/json"));
    assert_eq!(stdout(&out), "{\"vpc\":[]}\n");
    let metrics = "# TYPE vpcd_packets counter\nvpcd_packets_total 3\n";
    let (req, out) = exchange(&["metrics"], text_reply(metrics));
    exits(&out, 0);
    assert_eq!(req.line, "GET /metrics HTTP/1.1");
    assert_eq!(stdout(&out), metrics);
    let (req, out) = exchange(&["openapi"], json_reply(200, json!({"openapi": "3.1.0"})));
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/openapi.json HTTP/1.1");
    assert_eq!(stdout(&out), "{\"openapi\":\"3.1.0\"}\n");
}

// ---- observe ------------------------------------------------------------------------------

/// `conntrack list` sends its filters as the query (percent-encoded) and prints one row per
/// connection with a count that says when the list was cut.
#[test]
fn conntrack_list_sends_filters_and_renders_connections() {
    let (req, out) = exchange(
        &[
            "conntrack",
            "list",
            "--vpc",
            "a",
            "--gateway",
            "egress",
            "--instance",
            "a/f1",
            "--protocol",
            "tcp",
            "--table",
            "nat",
            "--limit",
            "2",
        ],
        json_reply(
            200,
            json!({"connections": [
                {"table": "nat", "vpc": "a", "gateway": "egress", "protocol": "tcp",
                 "internal": "10.62.1.10:40000", "external": "203.0.113.10:1024",
                 "remote": "198.51.100.10:80", "instance": "f1", "state": "established",
                 "age_s": 3.25, "idle_s": 0.5, "packets_out": 5, "packets_in": 4,
                 "bytes_out": 400, "bytes_in": 3000, "host_socket": "192.0.2.10:1024"},
                {"table": "sg", "vpc": "a", "gateway": null, "protocol": "udp",
                 "internal": "10.62.1.10:5353", "external": null,
                 "remote": "10.62.1.11:53", "instance": "a/f1", "state": "replied",
                 "direction": "within", "age_s": 12, "idle_s": 1, "packets_out": null,
                 "packets_in": null, "bytes_out": null, "bytes_in": null}],
                   "total": 3, "truncated": true}),
        ),
    );
    exits(&out, 0);
    assert_eq!(
        req.line,
        "GET /v1/conntrack?vpc=a&gateway=egress&instance=a%2Ff1&protocol=tcp&table=nat&limit=2 \
         HTTP/1.1"
    );
    assert_eq!(
        stdout(&out),
        "TABLE  VPC  GATEWAY  INSTANCE  PROTOCOL  INTERNAL          EXTERNAL           HOST_SOCKET      REMOTE            STATE        DIRECTION  AGE_S  IDLE_S  PACKETS  BYTES\n\
         nat    a    egress   f1        tcp       10.62.1.10:40000  203.0.113.10:1024  192.0.2.10:1024  198.51.100.10:80  established  -          3.2    0.5     5/4      400/3000\n\
         sg     a    -        a/f1      udp       10.62.1.10:5353   -                  -                10.62.1.11:53     replied      within     12     1       -        -\n\
         2 of 3 connections (PACKETS and BYTES are out/in; raise --limit for more)\n"
    );
}

/// `conntrack flush` posts the instance or the gateway and says how many it flushed; it needs
/// exactly one of them, as `VPC/NAME`.
#[test]
fn conntrack_flush() {
    let (req, out) = exchange(
        &["conntrack", "flush", "--instance", "a/f1"],
        json_reply(200, json!({"flushed": 3})),
    );
    exits(&out, 0);
    assert_eq!(req.line, "POST /v1/conntrack/flush HTTP/1.1");
    assert_eq!(req.json(), json!({"instance": "a/f1"}));
    assert_eq!(stdout(&out), "flushed 3 connection(s) of instance a/f1\n");
    let (req, out) = exchange(
        &["conntrack", "flush", "--gateway", "a/egress"],
        json_reply(200, json!({"flushed": 5, "nat_sessions": 2, "sg_flows": 3})),
    );
    exits(&out, 0);
    assert_eq!(req.json(), json!({"gateway": "a/egress"}));
    assert_eq!(
        stdout(&out),
        "flushed 5 connection(s) of nat gateway a/egress (2 NAT session(s), 3 security-group \
         flow(s))\n"
    );

    let fake = Fake::unix(vec![]);
    for args in [
        vec!["conntrack", "flush"],
        vec![
            "conntrack",
            "flush",
            "--instance",
            "a/f1",
            "--gateway",
            "a/g",
        ],
        vec!["conntrack", "flush", "--gateway", "egress"],
    ] {
        let out = fake.ctl(&args);
        exits(&out, 2);
    }
    fake.nothing_sent();
}

/// `flow-log start` sends an absolute target (relative to ctl's directory) and the window in
/// seconds; `status` and `stop` show the flow-log object.
#[test]
fn flow_log_start_status_stop() {
    let fake = Fake::unix(vec![
        json_reply(
            200,
            json!({"active": true, "target": "/x/flows.jsonl", "window_s": 5, "records": 0}),
        ),
        json_reply(
            200,
            json!({"active": true, "target": "/x/flows.jsonl", "window_s": 5, "records": 12}),
        ),
        json_reply(
            200,
            json!({"active": false, "target": null, "window_s": null, "records": 12}),
        ),
    ]);
    let out = fake.ctl(&["flow-log", "start", "flows.jsonl", "--window", "5"]);
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "POST /v1/flow-log/start HTTP/1.1");
    let cwd = fake.dir.0.canonicalize().expect("dir");
    assert_eq!(
        req.json()["target"],
        json!(cwd.join("flows.jsonl").display().to_string())
    );
    assert_eq!(req.json()["window_s"], json!(5.0));
    assert_eq!(
        stdout(&out),
        "started the flow log\nACTIVE    yes\nTARGET    /x/flows.jsonl\nWINDOW_S  5\nRECORDS   0\n"
    );
    let out = fake.ctl(&["flow-log", "status"]);
    exits(&out, 0);
    assert_eq!(fake.request().line, "GET /v1/flow-log HTTP/1.1");
    assert!(stdout(&out).contains("RECORDS   12\n"), "{}", stdout(&out));
    let out = fake.ctl(&["flow-log", "stop"]);
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "POST /v1/flow-log/stop HTTP/1.1");
    assert_eq!(req.json(), json!({}));
    assert_eq!(
        stdout(&out),
        "stopped the flow log\nACTIVE    no\nTARGET    -\nWINDOW_S  -\nRECORDS   12\n"
    );
}

/// `capture start` sends the endpoint and an absolute file; `stop` the endpoint.
#[test]
fn capture_start_stop() {
    let cap = json!({"endpoint": "a/f1", "file": "/x/f1.pcap", "nat_file": "/x/f1.nat.pcap",
                     "packets": 7});
    let fake = Fake::unix(vec![json_reply(200, cap.clone()), json_reply(200, cap)]);
    let out = fake.ctl(&["capture", "start", "a/f1", "/abs/f1.pcap"]);
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "POST /v1/captures/start HTTP/1.1");
    assert_eq!(
        req.json(),
        json!({"endpoint": "a/f1", "file": "/abs/f1.pcap"})
    );
    assert_eq!(
        stdout(&out),
        "capturing a/f1 to /x/f1.pcap (beyond NAT: /x/f1.nat.pcap)\n"
    );
    let out = fake.ctl(&["capture", "stop", "a/f1"]);
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "POST /v1/captures/stop HTTP/1.1");
    assert_eq!(req.json(), json!({"endpoint": "a/f1"}));
    assert_eq!(
        stdout(&out),
        "stopped capturing a/f1: 7 packet(s) in /x/f1.pcap and /x/f1.nat.pcap\n"
    );
}

/// The capture objects may carry the NAT view's count, packets lost to a full buffer and a write
/// error: the list and `stop` show them.
#[test]
fn capture_counts_and_errors() {
    let cap = json!({"endpoint": "a/f1", "file": "/x/f1.pcap", "nat_file": "/x/f1.nat.pcap",
                     "packets": 7, "nat_packets": 6, "not_captured": 2,
                     "error": "No space left on device"});
    let (_, out) = exchange(&["capture", "list"], json_reply(200, json!([cap.clone()])));
    exits(&out, 0);
    assert_eq!(
        stdout(&out),
        "ENDPOINT  FILE        NAT_FILE        PACKETS  NAT_PACKETS\n\
         a/f1      /x/f1.pcap  /x/f1.nat.pcap  7        6\n\
         a/f1: 2 packet(s) not captured (buffer full)\n\
         a/f1: writing stopped: No space left on device\n"
    );
    let (_, out) = exchange(&["capture", "stop", "a/f1"], json_reply(200, cap));
    exits(&out, 0);
    assert_eq!(
        stdout(&out),
        "stopped capturing a/f1: 7 packet(s) in /x/f1.pcap, 6 in /x/f1.nat.pcap\n\
         a/f1: 2 packet(s) not captured (buffer full)\n\
         a/f1: writing stopped: No space left on device\n"
    );
}

/// A flow log that is off may be `null`; the record count may be `records_written`, with the
/// open window's flows and a write error.
#[test]
fn flow_log_objects_of_either_shape() {
    let (_, out) = exchange(&["flow-log", "status"], json_reply(200, Value::Null));
    exits(&out, 0);
    assert_eq!(
        stdout(&out),
        "ACTIVE    no\nTARGET    -\nWINDOW_S  -\nRECORDS   -\n"
    );
    let (_, out) = exchange(
        &["flow-log", "status"],
        json_reply(
            200,
            json!({"target": "/x/f.jsonl", "window_s": 60.0, "records_written": 4,
                   "flows_in_window": 2, "error": null}),
        ),
    );
    exits(&out, 0);
    assert_eq!(
        stdout(&out),
        "ACTIVE           yes\n\
         TARGET           /x/f.jsonl\n\
         WINDOW_S         60.0\n\
         RECORDS          4\n\
         FLOWS_IN_WINDOW  2\n"
    );
    let (_, out) = exchange(
        &["flow-log", "stop"],
        json_reply(
            200,
            json!({"target": "/x/f.jsonl", "records_written": 9, "error": "disk full"}),
        ),
    );
    exits(&out, 0);
    assert_eq!(
        stdout(&out),
        "stopped the flow log\n\
         ACTIVE    no\n\
         TARGET    /x/f.jsonl\n\
         WINDOW_S  -\n\
         RECORDS   9\n\
         ERROR     disk full\n"
    );
}

/// `explain` prints the API's text and exits 0 when allowed, 1 when denied (as
/// `vpcd explain FILE`), with or without `--json`.
#[test]
fn explain_exits_by_verdict() {
    let (req, out) = exchange(
        &["explain", "a/f1", "198.51.100.10:80/tcp"],
        json_reply(
            200,
            json!({"verdict": "allow", "text": "1. route ...\nverdict: reachable\n",
                   "steps": []}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "POST /v1/explain HTTP/1.1");
    assert_eq!(
        req.json(),
        json!({"from": "a/f1", "to": "198.51.100.10:80/tcp"})
    );
    assert_eq!(stdout(&out), "1. route ...\nverdict: reachable\n");
    let denied = json!({"verdict": "deny", "text": "verdict: blocked by sg web\n", "steps": []});
    let (_, out) = exchange(
        &["explain", "internet/web", "a/f1:22/tcp"],
        json_reply(200, denied.clone()),
    );
    exits(&out, 1);
    assert_eq!(stdout(&out), "verdict: blocked by sg web\n");
    let (_, out) = exchange(
        &["explain", "--json", "internet/web", "a/f1:22/tcp"],
        json_reply(200, denied.clone()),
    );
    exits(&out, 1);
    assert_eq!(stdout(&out), format!("{denied}\n"));
}

// ---- errors -------------------------------------------------------------------------------

/// A refusal prints the API's error, field and hint on stderr and exits 1; `--json` prints
/// the error body as it came.
#[test]
fn refusals_print_error_field_and_hint_and_exit_1() {
    let refusal = json!({"errors": [
        {"code": "not_found", "error": "no EIP `nope`", "field": "eip",
         "hint": "allocate it first: vpcd ctl eip allocate nope --address A"},
        {"code": "invalid_input", "error": "second problem", "field": "", "hint": null}]});
    let (_, out) = exchange(
        &["eip", "associate", "nope", "--instance", "a/f1"],
        json_reply(404, refusal.clone()),
    );
    exits(&out, 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: no EIP `nope`\n  field: eip\n  hint: allocate it first: vpcd ctl eip allocate \
         nope --address A\nerror: second problem\n"
    );
    let (_, out) = exchange(
        &["--json", "subnet", "list", "nope"],
        json_reply(404, refusal.clone()),
    );
    exits(&out, 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), format!("{refusal}\n"));
    // A refusal that is not the API's JSON still says what came back.
    let (_, out) = exchange(
        &["vpc", "list"],
        Reply {
            status: 502,
            content_type: "text/plain",
            body: "bad gateway".into(),
        },
    );
    exits(&out, 1);
    assert_eq!(stderr(&out), "error: bad gateway (HTTP 502)\n");
}

/// No server: exit 2, naming the socket tried and how to point ctl at another.
#[test]
fn no_server_exits_2_naming_what_was_tried() {
    let dir = TempDir::new();
    let missing = dir.0.join("missing.sock");
    let out = ctl_command(&dir.0)
        .arg("--socket")
        .arg(&missing)
        .args(["vpc", "list"])
        .output()
        .expect("ctl");
    exits(&out, 2);
    let err = stderr(&out);
    for needle in [
        missing.display().to_string().as_str(),
        "--socket",
        "VPCD_API_SOCKET",
        "vpcd up FILE --state DIR",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    // The same through the environment variable.
    let out = ctl_command(&dir.0)
        .env("VPCD_API_SOCKET", &missing)
        .args(["status"])
        .output()
        .expect("ctl");
    exits(&out, 2);
    assert!(stderr(&out).contains(&missing.display().to_string()));
    // No flag, no variable, no socket in the run directory.
    let out = ctl_command(&dir.0).args(["status"]).output().expect("ctl");
    exits(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no API socket in {}", dir.0.display()))
            && err.contains("--socket")
            && err.contains("vpcd up FILE --state DIR"),
        "{err}"
    );
    // A TCP API that is not there (a port just closed on loopback).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = ctl_command(&dir.0)
        .args(["--url", &url, "status"])
        .output()
        .expect("ctl");
    exits(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(&url) && err.contains("--url"), "{err}");
}

/// The only `*.sock` in the run directory is the API; two are ambiguous.
#[test]
fn the_only_socket_in_the_run_directory_is_found() {
    let fake = Fake::unix(vec![json_reply(200, json!([]))]);
    let out = ctl_command(&fake.dir.0)
        .args(["eip", "list"])
        .output()
        .expect("ctl");
    exits(&out, 0);
    assert_eq!(fake.request().line, "GET /v1/eips HTTP/1.1");
    let _second = UnixListener::bind(fake.dir.0.join("other.sock")).expect("bind");
    let out = ctl_command(&fake.dir.0)
        .args(["eip", "list"])
        .output()
        .expect("ctl");
    exits(&out, 2);
    assert!(
        stderr(&out).contains("2 API sockets") && stderr(&out).contains("--socket"),
        "{}",
        stderr(&out)
    );
}

/// Bad arguments exit 2 before anything is sent: a reference that is not `VPC/NAME`, a body
/// that is not a JSON object, a value clap refuses, a bad URL, socket and URL together.
#[test]
fn bad_arguments_exit_2_and_send_nothing() {
    let fake = Fake::unix(vec![]);
    for (args, needle) in [
        (
            vec!["eip", "associate", "x", "--instance", "f1"],
            "write VPC/NAME",
        ),
        (vec!["apply", "add_vpc", "{not json"], "BODY is not JSON"),
        (vec!["apply", "add_vpc", "[1]"], "JSON object"),
        (vec!["vpc", "add", "a"], "--cidr"),
        (
            vec![
                "dnat",
                "add",
                "a",
                "--nat-gateway",
                "g",
                "--eip",
                "e",
                "--protocol",
                "sctp",
                "--instance",
                "i",
            ],
            "sctp",
        ),
        (
            vec![
                "dnat",
                "add",
                "a",
                "--nat-gateway",
                "g",
                "--eip",
                "e",
                "--protocol",
                "tcp",
                "--port",
                "70000",
                "--instance",
                "i",
            ],
            "70000",
        ),
        (vec!["eip", "associate", "x"], "--instance"),
        (vec!["capture", "start", "f1", "/x.pcap"], "VPC/NAME"),
        (
            vec!["--url", "http://127.0.0.1:1", "status"],
            "cannot be used",
        ),
    ] {
        let out = fake.ctl(&args);
        exits(&out, 2);
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: {needle:?} not in {}",
            stderr(&out)
        );
    }
    fake.nothing_sent();
    let dir = TempDir::new();
    for (url, needle) in [
        ("https://127.0.0.1:1", "plain HTTP"),
        ("127.0.0.1:1", "http://HOST:PORT"),
        ("http://127.0.0.1:1/v1", "no path"),
    ] {
        let out = ctl_command(&dir.0)
            .args(["--url", url, "status"])
            .output()
            .expect("ctl");
        exits(&out, 2);
        assert!(stderr(&out).contains(needle), "{url}: {}", stderr(&out));
    }
    let out = ctl_command(&dir.0)
        .env("VPCD_API_SOCKET", "/x.sock")
        .env("VPCD_API_URL", "http://127.0.0.1:1")
        .args(["status"])
        .output()
        .expect("ctl");
    exits(&out, 2);
    assert!(
        stderr(&out).contains("both VPCD_API_SOCKET and VPCD_API_URL"),
        "{}",
        stderr(&out)
    );
}

/// An answer that is not HTTP, or a 200 that is not the promised JSON, exits 2 and says so.
#[test]
fn answers_that_break_the_contract_exit_2() {
    let dir = TempDir::new();
    let path = dir.0.join("junk.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n");
        }
    });
    let out = ctl_command(&dir.0)
        .arg("--socket")
        .arg(&path)
        .args(["vpc", "list"])
        .output()
        .expect("ctl");
    exits(&out, 2);
    assert!(stderr(&out).contains("not HTTP"), "{}", stderr(&out));

    let (_, out) = exchange(&["vpc", "list"], text_reply("not json"));
    exits(&out, 2);
    assert!(
        stderr(&out).contains("not JSON") && stderr(&out).contains("--json"),
        "{}",
        stderr(&out)
    );
    let (_, out) = exchange(&["vpc", "list"], json_reply(200, json!({"vpcs": []})));
    exits(&out, 2);
    assert!(stderr(&out).contains("not a list"), "{}", stderr(&out));
}

// ---- TCP and the token ---------------------------------------------------------------------

/// Over TCP (`--url`, loopback only) ctl sends `Authorization: Bearer TOKEN` from
/// `--token-file`, or from `VPCD_API_TOKEN` with `VPCD_API_URL`.
#[test]
fn tcp_sends_the_bearer_token() {
    let fake = Fake::tcp(vec![json_reply(200, json!([])), json_reply(200, json!([]))]);
    let token_file = fake.dir.0.join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").expect("token");
    let out = fake.ctl(&[
        "--token-file",
        token_file.to_str().expect("utf-8"),
        "eip",
        "list",
    ]);
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "GET /v1/eips HTTP/1.1");
    assert_eq!(
        req.header("authorization"),
        Some("Bearer s3cret-token-0123456789")
    );
    let authority = fake.flag[1].trim_start_matches("http://");
    assert_eq!(req.header("host"), Some(authority));

    let out = ctl_command(&fake.dir.0)
        .env("VPCD_API_URL", &fake.flag[1])
        .env("VPCD_API_TOKEN", "from-the-environment")
        .args(["vpc", "list"])
        .output()
        .expect("ctl");
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "GET /v1/vpcs HTTP/1.1");
    assert_eq!(
        req.header("authorization"),
        Some("Bearer from-the-environment")
    );
}

/// A 401 without a token says how to give one; an empty or missing token file exits 2.
#[test]
fn unauthorized_says_how_to_give_a_token() {
    let fake = Fake::tcp(vec![json_reply(
        401,
        json!({"errors": [{"code": "unauthorized", "error": "a bearer token is required",
                           "field": "", "hint": null}]}),
    )]);
    let out = fake.ctl(&["status"]);
    exits(&out, 1);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: a bearer token is required\n")
            && err.contains("--token-file")
            && err.contains("VPCD_API_TOKEN"),
        "{err}"
    );
    let empty = fake.dir.0.join("empty");
    std::fs::write(&empty, "\n").expect("write");
    for file in [empty, fake.dir.0.join("missing")] {
        let out = fake.ctl(&["--token-file", file.to_str().expect("utf-8"), "status"]);
        exits(&out, 2);
        assert!(stderr(&out).contains("--token-file"), "{}", stderr(&out));
    }
}

// ---- completions --------------------------------------------------------------------------

/// `vpcd completions SHELL` prints a completion script of the whole CLI, ctl included.
#[test]
fn completions_cover_the_whole_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(VPCD)
            .args(["completions", shell])
            .output()
            .expect("completions");
        exits(&out, 0);
        let script = stdout(&out);
        for needle in [
            "vpcd",
            "ctl",
            "nat-gateway",
            "conntrack",
            "socket",
            "token-file",
        ] {
            assert!(script.contains(needle), "{shell}: no {needle:?}");
        }
    }
    let out = Command::new(VPCD)
        .args(["completions", "tcsh"])
        .output()
        .expect("completions");
    exits(&out, 2);
}

// ---- batches (issue 20) -------------------------------------------------------------------

/// `batch FILE` posts the file's entries to `/v1/batch` (a bare list is wrapped in
/// `{"changes": ...}`) and prints one line; a file that is not a list of entries is bad input.
#[test]
fn batch_posts_the_file_and_prints_one_line() {
    let dir = TempDir::new();
    let entries = json!([
        {"op": "add_instance", "request": {"vpc": "a", "name": "f2", "subnet": "fn"}},
        {"op": "associate_eip", "request": {"eip": "web", "vpc": "a", "instance": "f2"}},
    ]);
    let file = dir.0.join("changes.json");
    std::fs::write(&file, entries.to_string()).unwrap();
    let reply = json_reply(
        200,
        json!({"op": ["add_instance", "associate_eip"], "generation": 9,
               "applied": "+1 (a/f2) -0 ~0, 3 unchanged", "problems": []}),
    );
    let (seen, out) = exchange(&["batch", file.to_str().unwrap()], reply);
    exits(&out, 0);
    assert_eq!(seen.line, "POST /v1/batch HTTP/1.1");
    assert_eq!(seen.json(), json!({ "changes": entries }));
    assert_eq!(
        stdout(&out),
        "applied 2 changes (generation 9; endpoints +1 (a/f2) -0 ~0, 3 unchanged)\n"
    );
    std::fs::write(&file, "42").unwrap();
    let out = ctl_command(&dir.0)
        .args([
            "--socket",
            "/nonexistent.sock",
            "batch",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    exits(&out, 2);
    assert!(stderr(&out).contains("a JSON list"), "{}", stderr(&out));
}

// ---- DNS (issue 12) -----------------------------------------------------------------------

/// Every `dns` change posts its operation with the API's field names and prints one line.
#[test]
fn dns_changes_post_their_op_with_the_api_field_names_and_print_one_line() {
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str, Value, &str)> = vec![
        (vec!["dns", "zone", "add", "corp.example", "--vpc", "a", "--vpc", "b"], "add_zone",
         json!({"name": "corp.example", "vpcs": ["a", "b"]}), "added zone corp.example (a, b)"),
        (vec!["dns", "zone", "remove", "corp.example"], "remove_zone",
         json!({"name": "corp.example"}), "removed zone corp.example"),
        (vec!["dns", "zone", "associate", "corp.example", "b"], "associate_zone",
         json!({"zone": "corp.example", "vpc": "b"}), "associated zone corp.example with VPC b"),
        (vec!["dns", "zone", "disassociate", "corp.example", "b"], "disassociate_zone",
         json!({"zone": "corp.example", "vpc": "b"}),
         "disassociated zone corp.example from VPC b"),
        (vec!["dns", "record", "add", "corp.example", "db", "a", "10.0.1.50", "--ttl", "60"],
         "add_zone_record",
         json!({"zone": "corp.example", "name": "db", "type": "A", "value": "10.0.1.50",
                "ttl": 60}),
         "added A record db 10.0.1.50 to zone corp.example"),
        (vec!["dns", "record", "add", "corp.example", "_pg._tcp", "SRV", "0 5 5432 db"],
         "add_zone_record",
         json!({"zone": "corp.example", "name": "_pg._tcp", "type": "SRV",
                "value": "0 5 5432 db"}),
         "added SRV record _pg._tcp 0 5 5432 db to zone corp.example"),
        (vec!["dns", "record", "remove", "corp.example", "db", "A"], "remove_zone_record",
         json!({"zone": "corp.example", "name": "db", "type": "A"}),
         "removed A records of db from zone corp.example"),
        (vec!["dns", "record", "remove", "corp.example", "db", "A", "10.0.1.50"],
         "remove_zone_record",
         json!({"zone": "corp.example", "name": "db", "type": "A", "value": "10.0.1.50"}),
         "removed A record db 10.0.1.50 from zone corp.example"),
        (vec!["dns", "firewall", "add", "no-bad", "--vpc", "a", "--domain", "*.bad.example",
              "--domain", "bad.example", "--action", "block", "--block-response", "override",
              "--block-override", "walled.example", "--block-override-ttl", "30"],
         "add_dns_firewall_rule",
         json!({"name": "no-bad", "vpcs": ["a"], "domains": ["*.bad.example", "bad.example"],
                "action": "block", "block_response": "override",
                "block_override": "walled.example", "block_override_ttl": 30}),
         "added DNS Firewall rule no-bad"),
        (vec!["dns", "firewall", "add", "watch", "--vpc", "a", "--domain", "*.example",
              "--action", "alert"], "add_dns_firewall_rule",
         json!({"name": "watch", "vpcs": ["a"], "domains": ["*.example"], "action": "alert"}),
         "added DNS Firewall rule watch"),
        (vec!["dns", "firewall", "remove", "no-bad"], "remove_dns_firewall_rule",
         json!({"name": "no-bad"}), "removed DNS Firewall rule no-bad"),
        (vec!["dns", "egress", "set", "a", "api.example.com:443", "*.cdn.example"],
         "set_egress_by_name",
         json!({"vpc": "a", "allow": ["api.example.com:443", "*.cdn.example"]}),
         "set egress by name of VPC a: api.example.com:443, *.cdn.example"),
        (vec!["dns", "egress", "set", "a"], "set_egress_by_name",
         json!({"vpc": "a", "allow": []}), "cleared egress by name of VPC a"),
        (vec!["dns", "zone", "add", "--public", "example.com"], "add_public_zone",
         json!({"name": "example.com"}), "added public zone example.com"),
        (vec!["dns", "zone", "remove", "--public", "example.com"], "remove_public_zone",
         json!({"name": "example.com"}), "removed public zone example.com"),
        (vec!["dns", "record", "add", "--public", "example.com", "api", "A", "198.51.100.10"],
         "add_public_zone_record",
         json!({"zone": "example.com", "name": "api", "type": "A", "value": "198.51.100.10"}),
         "added A record api 198.51.100.10 to public zone example.com"),
        (vec!["dns", "record", "remove", "--public", "example.com", "api", "A"],
         "remove_public_zone_record",
         json!({"zone": "example.com", "name": "api", "type": "A"}),
         "removed A records of api from public zone example.com"),
        (vec!["dns", "domain-list", "add", "bad", "bad.example", "*.bad.example"],
         "add_dns_domain_list",
         json!({"name": "bad", "domains": ["bad.example", "*.bad.example"]}),
         "added DNS domain list bad"),
        (vec!["dns", "domain-list", "remove", "bad"], "remove_dns_domain_list",
         json!({"name": "bad"}), "removed DNS domain list bad"),
        (vec!["dns", "domain-list", "add-domains", "bad", "worse.example"],
         "update_dns_domain_list",
         json!({"name": "bad", "operation": "add", "domains": ["worse.example"]}),
         "added worse.example to DNS domain list bad"),
        (vec!["dns", "domain-list", "remove-domains", "bad", "bad.example"],
         "update_dns_domain_list",
         json!({"name": "bad", "operation": "remove", "domains": ["bad.example"]}),
         "removed bad.example from DNS domain list bad"),
        (vec!["dns", "domain-list", "replace", "bad", "a.example"], "update_dns_domain_list",
         json!({"name": "bad", "operation": "replace", "domains": ["a.example"]}),
         "DNS domain list bad holds: a.example"),
        (vec!["dns", "firewall", "add", "on-list", "--vpc", "a", "--domain-list", "bad",
              "--action", "block"], "add_dns_firewall_rule",
         json!({"name": "on-list", "vpcs": ["a"], "domains": [], "domain_list": "bad",
                "action": "block"}),
         "added DNS Firewall rule on-list"),
    ];
    for (args, op, body, line) in cases {
        let (req, out) = exchange(&args, changed(op));
        exits(&out, 0);
        assert_eq!(req.line, format!("POST /v1/ops/{op} HTTP/1.1"), "{args:?}");
        assert_eq!(req.json(), body, "{args:?}");
        assert_eq!(
            stdout(&out),
            format!("{line} (generation 7; endpoints +0 -0 ~1 (a/f1), 3 unchanged)\n"),
            "{args:?}"
        );
    }
}

/// Zone, record, firewall and egress lists are tables; an empty one says so.
#[test]
fn dns_lists_render_tables() {
    let (req, out) = exchange(
        &["dns", "zone", "list"],
        json_reply(
            200,
            json!([{"name": "corp.example", "vpcs": ["a", "b"], "records": 2}]),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/zones HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "ZONE          VPCS  RECORDS\ncorp.example  a, b  2\n"
    );
    let (req, out) = exchange(
        &["dns", "zone", "show", "corp.example"],
        json_reply(
            200,
            json!({"name": "corp.example", "vpcs": ["a"], "records": [
                {"name": "db", "type": "A", "value": "10.0.1.50", "ttl": 300},
                {"name": "www", "type": "CNAME", "value": "db.corp.example", "ttl": 60}]}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/zones/corp.example HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "ZONE  corp.example\nVPCS  a\n\nNAME  TYPE   TTL  VALUE\ndb    A      300  10.0.1.50\nwww   CNAME  60   db.corp.example\n"
    );
    let (req, out) = exchange(
        &["dns", "firewall", "list"],
        json_reply(
            200,
            json!([{"name": "no-bad", "vpcs": ["a"], "domains": ["*.bad.example"],
                    "action": "block", "block_response": "nxdomain"}]),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/firewall HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "RULE    VPCS  DOMAINS        ACTION  BLOCK_RESPONSE\nno-bad  a     *.bad.example  block   nxdomain\n"
    );
    let (req, out) = exchange(&["dns", "egress", "list"], json_reply(200, json!([])));
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/egress-by-name HTTP/1.1");
    assert_eq!(stdout(&out), "no egress by name\n");
    let (_, out) = exchange(&["dns", "zone", "list"], json_reply(200, json!([])));
    assert_eq!(stdout(&out), "no private zones\n");
    let (req, out) = exchange(
        &["dns", "zone", "list", "--public"],
        json_reply(200, json!([{"name": "example.com", "records": 3}])),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/public-zones HTTP/1.1");
    assert_eq!(stdout(&out), "ZONE         RECORDS\nexample.com  3\n");
    let (req, out) = exchange(
        &["dns", "zone", "show", "--public", "example.com"],
        json_reply(
            200,
            json!({"name": "example.com", "records": [
                {"name": "api", "type": "A", "value": "198.51.100.10", "ttl": 300}]}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/public-zones/example.com HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "ZONE    example.com\nPUBLIC  yes\n\nNAME  TYPE  TTL  VALUE\napi   A     300  198.51.100.10\n"
    );
    let (req, out) = exchange(
        &["dns", "domain-list", "list"],
        json_reply(
            200,
            json!([{"name": "bad", "domains": ["bad.example", "*.bad.example"], "rules": ["no-bad"]}]),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/domain-lists HTTP/1.1");
    assert_eq!(
        stdout(&out),
        "LIST  DOMAINS                     RULES\nbad   bad.example, *.bad.example  no-bad\n"
    );
    let (req, out) = exchange(
        &["dns", "domain-list", "show", "bad"],
        json_reply(
            200,
            json!({"name": "bad", "domains": ["bad.example"], "rules": []}),
        ),
    );
    exits(&out, 0);
    assert_eq!(req.line, "GET /v1/dns/domain-lists/bad HTTP/1.1");
    assert!(
        stdout(&out).contains("DOMAIN\nbad.example\n"),
        "{}",
        stdout(&out)
    );
    let (_, out) = exchange(
        &["dns", "firewall", "list"],
        json_reply(
            200,
            json!([{"name": "r", "vpcs": ["a"], "domain_list": "bad", "action": "alert"}]),
        ),
    );
    assert!(stdout(&out).contains("list bad"), "{}", stdout(&out));
}

/// `dns query` posts the question and prints it like a small dig; `--json` passes the answer
/// through; a bad `--from` is bad input and sends nothing.
#[test]
fn dns_query_asks_from_an_instance_and_prints_like_dig() {
    let answer = json!({
        "from": "a/fn", "server": "10.0.0.2", "name": "www.corp.example", "type": "A",
        "rcode": "NOERROR", "source": "local", "authoritative": true,
        "answers": [
            {"name": "www.corp.example.", "type": "CNAME", "ttl": 60, "data": "db.corp.example."},
            {"name": "db.corp.example.", "type": "A", "ttl": 300, "data": "10.0.1.50"}],
        "authority": [], "firewall_rule": null, "firewall_action": null, "query_time_ms": 0.5
    });
    let (req, out) = exchange(
        &["dns", "query", "www.corp.example", "--from", "a/fn"],
        json_reply(200, answer.clone()),
    );
    exits(&out, 0);
    assert_eq!(req.line, "POST /v1/dns/query HTTP/1.1");
    assert_eq!(
        req.json(),
        json!({"from": "a/fn", "name": "www.corp.example", "type": "A"})
    );
    assert_eq!(
        stdout(&out),
        ";; www.corp.example A from a/fn (resolver 10.0.0.2): status NOERROR, 2 answer(s), source local, authoritative, 0.50 ms\n\
         \n;; ANSWER\n\
         NAME               TTL  TYPE   DATA\n\
         www.corp.example.  60   CNAME  db.corp.example.\n\
         db.corp.example.   300  A      10.0.1.50\n"
    );
    let (req, out) = exchange(
        &[
            "--json",
            "dns",
            "query",
            "x.example",
            "--type",
            "TXT",
            "--from",
            "a/fn",
        ],
        json_reply(200, answer.clone()),
    );
    exits(&out, 0);
    assert_eq!(req.json()["type"], "TXT");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).expect("json"),
        answer
    );
    let fake = Fake::unix(vec![]);
    let out = fake.ctl(&["dns", "query", "x.example", "--from", "nope"]);
    exits(&out, 2);
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));
}

/// `dns query-log start` sends an absolute target; `status` and `stop` read back the records.
#[test]
fn dns_query_log_start_status_stop() {
    let fake = Fake::unix(vec![
        json_reply(
            200,
            json!({"active": true, "target": "/x/q.jsonl", "records": 0, "error": null}),
        ),
        json_reply(
            200,
            json!({"active": true, "target": "/x/q.jsonl", "records": 3, "error": null}),
        ),
        json_reply(
            200,
            json!({"active": false, "target": "/x/q.jsonl", "records": 3, "error": null}),
        ),
    ]);
    let out = fake.ctl(&["dns", "query-log", "start", "q.jsonl"]);
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "POST /v1/dns/query-log/start HTTP/1.1");
    let cwd = fake.dir.0.canonicalize().expect("dir");
    assert_eq!(
        req.json(),
        json!({"target": cwd.join("q.jsonl").display().to_string()})
    );
    assert_eq!(
        stdout(&out),
        "started the DNS query log\nACTIVE   yes\nTARGET   /x/q.jsonl\nRECORDS  0\n"
    );
    let out = fake.ctl(&["dns", "query-log", "status"]);
    exits(&out, 0);
    assert_eq!(fake.request().line, "GET /v1/dns/query-log HTTP/1.1");
    assert!(stdout(&out).contains("RECORDS  3\n"), "{}", stdout(&out));
    let out = fake.ctl(&["dns", "query-log", "stop"]);
    exits(&out, 0);
    let req = fake.request();
    assert_eq!(req.line, "POST /v1/dns/query-log/stop HTTP/1.1");
    assert_eq!(req.json(), json!({}));
    assert!(stdout(&out).starts_with("stopped the DNS query log\nACTIVE   no\n"));
}

/// `vpcd ctl` into a pipe whose reader has gone (`| head`): the answer is dropped quietly and the
/// status is the command's own (0 for an export, 1 for a blocked explain), with no panic even
/// with `RUST_BACKTRACE` set.
#[test]
fn a_closed_stdout_ends_ctl_quietly_with_its_usual_status() {
    let long = "x".repeat(256 * 1024);
    let fake = Fake::unix(vec![
        text_reply(&long),
        json_reply(
            200,
            json!({"verdict": "deny", "text": format!("{long}\nverdict: blocked by x (y)\n")}),
        ),
        text_reply(&long),
    ]);
    for (args, code) in [
        (vec!["export"], 0),
        (vec!["explain", "a/f1", "a/f2:80/tcp"], 1),
        (vec!["--json", "export"], 0),
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let mut c = ctl_command(&fake.dir.0);
        let out = c
            .args(&fake.flag)
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run vpcd ctl");
        let _ = fake.request();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
