//! `vpcd ctl`: the command line over the HTTP/JSON control API of a running
//! `vpcd up --state DIR` ([`crate::api`]), cloud-CLI style: `vpcd ctl RESOURCE VERB ...`.
//!
//! This module owns the command tree's top and the one path every command takes: arguments →
//! a [`Call`] (method, path, body, how to show the answer) → one request ([`client`]) → output.
//! The resource modules ([`network`], [`firewall`], [`dns`], [`observe`]) only turn their arguments into a
//! `Call` and an answer into text; argument names are the API's field names.
//!
//! The API is `--socket PATH` or `--url http://HOST:PORT` (with `--token-file FILE` or
//! `VPCD_API_TOKEN` for the bearer token), else `VPCD_API_SOCKET` or `VPCD_API_URL`, else the
//! only `*.sock` in the run directory (`/run/vpcd`, `VPCD_RUN_DIR`). Output is for people: tables
//! for lists and one line per change. `--json` prints the API's JSON unchanged, for scripts.
//!
//! Exit codes: 0 done; 1 the API refused the request (its `error`, `field` and `hint` on
//! stderr), or `explain` found the path blocked; 2 bad arguments, no server, or an answer that is
//! not what the API promises.

pub mod client;
mod dns;
mod firewall;
mod network;
mod observe;
pub mod table;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use self::client::{ApiEndpoint, ApiEndpointFlags, Client, ClientError, Reply};
use super::output::{self, errln, errprint};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};

pub use self::client::SOCKET_ENV;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The API socket of the `vpcd up --state` run (default: `VPCD_API_SOCKET`, or the only
    /// `*.sock` in `/run/vpcd` / `VPCD_RUN_DIR`).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "url",
        help_heading = "API"
    )]
    socket: Option<PathBuf>,
    /// The API's TCP address, `http://HOST:PORT` (`vpcd up --api-listen`; default
    /// `VPCD_API_URL`).
    #[arg(long, global = true, value_name = "URL", help_heading = "API")]
    url: Option<String>,
    /// A file holding the API's bearer token (`vpcd up --api-token-file`; default: the token in
    /// `VPCD_API_TOKEN`).
    #[arg(long, global = true, value_name = "FILE", help_heading = "API")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON as it came instead of human output.
    #[arg(long, global = true, help_heading = "Output")]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// The run: generation, uptime, endpoints.
    Status,
    /// Print the effective topology as a topology file (`vpcd check` accepts it).
    Export,
    /// Send one change: OP is an operation (`vpcd ctl ops` lists them), BODY its JSON object.
    Apply {
        op: String,
        /// The request body, a JSON object.
        body: String,
    },
    /// Send many changes at once, all or none: FILE (`-`: standard input) holds a JSON list
    /// of `{"op": OP, "request": BODY}` entries, or `{"changes": [...]}` (`POST /v1/batch`).
    Batch {
        /// The file of changes, or `-`.
        file: PathBuf,
    },
    /// The operations `apply` takes.
    Ops,
    /// VPCs: list, show, add, remove.
    #[command(subcommand)]
    Vpc(network::VpcCommand),
    /// Subnets of a VPC.
    #[command(subcommand)]
    Subnet(network::SubnetCommand),
    /// Route tables of a VPC, and which subnets use them.
    #[command(subcommand)]
    RouteTable(network::RouteTableCommand),
    /// Routes of a route table.
    #[command(subcommand)]
    Route(network::RouteCommand),
    /// Instances: list, attach, detach.
    #[command(subcommand)]
    Instance(network::InstanceCommand),
    /// Elastic IPs: list, allocate, associate, disassociate, release.
    #[command(subcommand)]
    Eip(network::EipCommand),
    /// NAT gateways of a VPC.
    #[command(subcommand)]
    NatGateway(network::NatGatewayCommand),
    /// SNAT entries of a NAT gateway (source -> EIP pool).
    #[command(subcommand)]
    Snat(network::SnatCommand),
    /// DNAT entries (port forwards) of a NAT gateway.
    #[command(subcommand)]
    Dnat(network::DnatCommand),
    /// Security groups of a VPC.
    #[command(subcommand)]
    Sg(firewall::SgCommand),
    /// Rules of a security group.
    #[command(subcommand)]
    SgRule(firewall::SgRuleCommand),
    /// Network ACLs of a VPC.
    #[command(subcommand)]
    Acl(firewall::AclCommand),
    /// Numbered rules of a network ACL.
    #[command(subcommand)]
    AclRule(firewall::AclRuleCommand),
    /// DNS: private zones and records, DNS Firewall rules, egress by name, a query asked of a
    /// running resolver, the query log.
    #[command(subcommand)]
    Dns(dns::DnsCommand),
    /// The simulated internet: its CIDR and hosts.
    Internet,
    /// Connections the NAT gateways and security groups track.
    #[command(subcommand)]
    Conntrack(observe::ConntrackCommand),
    /// The flow log (AWS VPC Flow Logs fields, JSON lines).
    #[command(subcommand)]
    FlowLog(observe::FlowLogCommand),
    /// Packet captures of endpoints (pcap).
    #[command(subcommand)]
    Capture(observe::CaptureCommand),
    /// Whether FROM reaches TO in the running network, and what blocks it (exit 1 when blocked).
    Explain {
        /// `VPC/INSTANCE` or `internet/HOST`.
        from: String,
        /// `ADDRESS:PORT/tcp`, `VPC/INSTANCE:PORT/udp`, `internet/HOST/icmp`, ...
        to: String,
    },
    /// The Prometheus metrics, as text.
    Metrics,
    /// The API's OpenAPI document (JSON).
    Openapi,
}

/// Turns a successful answer's JSON into text for people (or says why it cannot).
pub(crate) type Render = Box<dyn Fn(&Value) -> Result<String, String>>;

/// How a command's successful answer is shown (without `--json`).
pub(crate) enum Show {
    /// The body as it came (topology text, metrics).
    Raw,
    /// A read or an action: the answer as text for people.
    Render(Render),
    /// A change through `/v1/ops/{op}`: this line, then the generation and what the running
    /// network did.
    Changed(String),
    /// `explain`: the text; exit 1 when the verdict is not `allow`.
    Explain,
}

/// One request and how to show its answer.
pub(crate) struct Call {
    method: &'static str,
    path: String,
    accept: &'static str,
    body: Option<Value>,
    show: Show,
}

impl Call {
    /// `GET path`, rendered by `render`.
    pub(crate) fn get(
        path: String,
        render: impl Fn(&Value) -> Result<String, String> + 'static,
    ) -> Call {
        Call {
            method: "GET",
            path,
            accept: "application/json",
            body: None,
            show: Show::Render(Box::new(render)),
        }
    }

    /// `POST path` with `body`, the answer rendered by `render`.
    pub(crate) fn post(
        path: &str,
        body: Value,
        render: impl Fn(&Value) -> Result<String, String> + 'static,
    ) -> Call {
        Call {
            method: "POST",
            path: path.into(),
            accept: "application/json",
            body: Some(body),
            show: Show::Render(Box::new(render)),
        }
    }

    /// The change `op` with `body`; `done` says what it did (`added vpc a (10.0.0.0/16)`).
    pub(crate) fn op(op: &str, body: Value, done: String) -> Call {
        Call {
            method: "POST",
            path: format!("/v1/ops/{}", client::path_segment(op)),
            accept: "application/json",
            body: Some(body),
            show: Show::Changed(done),
        }
    }

    fn raw(path: &str, accept: &'static str) -> Call {
        Call {
            method: "GET",
            path: path.into(),
            accept,
            body: None,
            show: Show::Raw,
        }
    }
}

/// A JSON object of the pairs whose value is not `null` (optional fields left out).
pub(crate) fn body(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// `null` for an empty list (the API's default), else the list.
pub(crate) fn list_or_null(items: &[String]) -> Value {
    if items.is_empty() {
        Value::Null
    } else {
        json!(items)
    }
}

/// Splits `VPC/NAME` (`flag` names the argument in the error).
pub(crate) fn split_ref(flag: &str, s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((vpc, name)) if !vpc.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((vpc.into(), name.into()))
        }
        _ => Err(format!("{flag} `{s}`: write VPC/NAME, e.g. tenant-a/fn-a1")),
    }
}

/// `/v1/vpcs/{vpc}/{what}`.
pub(crate) fn vpc_path(vpc: &str, what: &str) -> String {
    format!("/v1/vpcs/{}/{what}", client::path_segment(vpc))
}

pub fn run(args: &CtlArgs) -> u8 {
    let call = match call(&args.command, args.json) {
        Ok(c) => c,
        Err(msg) => {
            errln!("vpcd ctl: {msg}");
            return EXIT_BAD_INPUT;
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let flags = ApiEndpointFlags {
        socket: args.socket.clone(),
        url: args.url.clone(),
    };
    let endpoint = ApiEndpoint::resolve(&flags, env, &crate::runtime::state::run_dir());
    let token = client::read_token(args.token_file.as_deref(), env);
    let (endpoint, token) = match (endpoint, token) {
        (Ok(e), Ok(t)) => (e, t),
        (Err(msg), _) | (_, Err(msg)) => {
            errln!("vpcd ctl: {msg}");
            return EXIT_BAD_INPUT;
        }
    };
    let client = Client::new(endpoint).with_token(token);
    let body = call.body.as_ref().map(|b| b.to_string().into_bytes());
    match client.request(call.method, &call.path, call.accept, body.as_deref()) {
        Ok(reply) if reply.is_success() => show(&call.show, &reply, args.json),
        Ok(reply) => refused(&reply, &client, args.json),
        Err(e) => unreachable_api(&e),
    }
}

fn call(command: &CtlCommand, as_json: bool) -> Result<Call, String> {
    Ok(match command {
        CtlCommand::Status => observe::status(),
        CtlCommand::Export if as_json => Call::raw("/v1/topology", "application/json"),
        CtlCommand::Export => Call::raw("/v1/topology", "text/plain"),
        CtlCommand::Apply { op, body } => {
            let v: Value = serde_json::from_str(body).map_err(|e| {
                format!("BODY is not JSON: {e}; write a JSON object, e.g. '{{\"eip\": \"web\"}}'")
            })?;
            if !v.is_object() {
                return Err("BODY must be a JSON object, e.g. '{\"eip\": \"web\"}'".into());
            }
            Call::op(op, v, format!("applied {op}"))
        }
        CtlCommand::Batch { file } => batch(file)?,
        CtlCommand::Ops => observe::ops(),
        CtlCommand::Vpc(c) => c.call(),
        CtlCommand::Subnet(c) => c.call(),
        CtlCommand::RouteTable(c) => c.call(),
        CtlCommand::Route(c) => c.call(),
        CtlCommand::Instance(c) => c.call(),
        CtlCommand::Eip(c) => c.call()?,
        CtlCommand::NatGateway(c) => c.call(),
        CtlCommand::Snat(c) => c.call(),
        CtlCommand::Dnat(c) => c.call(),
        CtlCommand::Sg(c) => c.call(),
        CtlCommand::SgRule(c) => c.call(),
        CtlCommand::Acl(c) => c.call(),
        CtlCommand::AclRule(c) => c.call(),
        CtlCommand::Dns(c) => c.call()?,
        CtlCommand::Internet => observe::internet(),
        CtlCommand::Conntrack(c) => c.call()?,
        CtlCommand::FlowLog(c) => c.call(),
        CtlCommand::Capture(c) => c.call()?,
        CtlCommand::Explain { from, to } => Call {
            method: "POST",
            path: "/v1/explain".into(),
            accept: "application/json",
            body: Some(json!({"from": from, "to": to})),
            show: Show::Explain,
        },
        CtlCommand::Metrics => Call::raw("/metrics", "text/plain"),
        CtlCommand::Openapi => Call::raw("/v1/openapi.json", "application/json"),
    })
}

/// `batch FILE`: the entries of FILE as the body of `POST /v1/batch`.
fn batch(file: &std::path::Path) -> Result<Call, String> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("standard input: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    let shape = "write a JSON list of {\"op\": OP, \"request\": BODY}, or {\"changes\": [...]}";
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON: {e}; {shape}", file.display()))?;
    let body = match v {
        Value::Array(changes) => json!({ "changes": changes }),
        v @ Value::Object(_) => v,
        _ => return Err(format!("{}: {shape}", file.display())),
    };
    let n = body["changes"].as_array().map_or(0, Vec::len);
    Ok(Call {
        method: "POST",
        path: "/v1/batch".into(),
        accept: "application/json",
        body: Some(body),
        show: Show::Changed(format!("applied {n} changes")),
    })
}

/// A 2xx answer: as it came with `--json` (or for raw reads), else rendered.
fn show(how: &Show, reply: &Reply, as_json: bool) -> u8 {
    if as_json || matches!(how, Show::Raw) {
        let code = match how {
            Show::Explain => reply.json().map_or(EXIT_BAD_INPUT, |v| explain_code(&v)),
            _ => EXIT_OK,
        };
        return output::finish(code, write_out(&reply.body));
    }
    let parsed = reply
        .json()
        .map_err(|e| format!("the API's answer is not JSON ({e}); see it with --json"));
    let rendered = match how {
        Show::Raw => Ok((reply.text(), EXIT_OK)),
        Show::Render(render) => parsed.and_then(|v| render(&v)).map(|t| (t, EXIT_OK)),
        Show::Changed(done) => parsed.map(|v| (changed(done, &v), EXIT_OK)),
        Show::Explain => parsed.and_then(|v| {
            let text = v["text"]
                .as_str()
                .ok_or("the API's explain answer has no text; see it with --json")?;
            Ok((text.to_string(), explain_code(&v)))
        }),
    };
    match rendered {
        Ok((text, code)) => output::finish(code, write_out(text.as_bytes())),
        Err(msg) => {
            errln!("vpcd ctl: {msg}");
            EXIT_BAD_INPUT
        }
    }
}

/// `explain`: 0 when the verdict is `allow`, else 1 (as `vpcd explain FILE`).
fn explain_code(v: &Value) -> u8 {
    if v["verdict"] == "allow" {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// `done (generation N; endpoints +1 (a/f2) -0 ~0, 3 unchanged)`; the problems the running
/// network reported go to stderr as warnings.
fn changed(done: &str, v: &Value) -> String {
    for p in v["problems"].as_array().into_iter().flatten() {
        errln!("warning: {}", table::cell(p));
    }
    let mut line = format!("{done} (generation {}", table::field(v, "generation"));
    if let Some(applied) = v["applied"].as_str().filter(|a| !a.is_empty()) {
        line.push_str(&format!("; endpoints {applied}"));
    }
    line.push(')');
    line
}

/// Writes an answer to stdout, ending with a newline.
fn write_out(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    if !bytes.ends_with(b"\n") && !bytes.is_empty() {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A refusal (4xx/5xx): the API's errors on stderr (the body as it came with `--json`); exit 1.
fn refused(reply: &Reply, client: &Client, as_json: bool) -> u8 {
    if as_json {
        let _ = std::io::stderr().write_all(&reply.body);
        return EXIT_FAILED;
    }
    let errors = render_errors(reply);
    errprint!("{errors}");
    if reply.status == 401 && !client.has_token() && !errors.contains("--token-file") {
        errln!(
            "  hint: this API wants a bearer token: pass --token-file FILE (the file \
             `vpcd up --api-token-file` reads) or set {}",
            client::TOKEN_ENV
        );
    }
    EXIT_FAILED
}

/// `error: ...` with `  field: ...` and `  hint: ...` lines, one block per error.
pub fn render_errors(reply: &Reply) -> String {
    let v = reply.json().unwrap_or(Value::Null);
    let Some(errors) = v["errors"].as_array().filter(|e| !e.is_empty()) else {
        let text = reply.text();
        let text = text.trim();
        return if text.is_empty() {
            format!("error: the API answered HTTP {}\n", reply.status)
        } else {
            format!("error: {text} (HTTP {})\n", reply.status)
        };
    };
    let mut out = String::new();
    for e in errors {
        out.push_str(&format!(
            "error: {}\n",
            e["error"].as_str().unwrap_or("(no message)")
        ));
        if let Some(f) = e["field"].as_str().filter(|f| !f.is_empty()) {
            out.push_str(&format!("  field: {f}\n"));
        }
        if let Some(h) = e["hint"].as_str().filter(|h| !h.is_empty()) {
            out.push_str(&format!("  hint: {h}\n"));
        }
    }
    out
}

/// No HTTP answer: which API was tried and how to point ctl at another; exit 2.
fn unreachable_api(e: &ClientError) -> u8 {
    errln!("vpcd ctl: {e}");
    if let ClientError::Connect { endpoint, source } = e {
        let hint = match (endpoint, source.kind()) {
            (ApiEndpoint::Unix(_), std::io::ErrorKind::PermissionDenied) => {
                "the socket is mode 0600: run vpcd ctl as the user that runs `vpcd up` (root)"
                    .to_string()
            }
            (ApiEndpoint::Unix(_), _) => format!(
                "is `vpcd up FILE --state DIR` running? Point ctl at its socket with --socket \
                 PATH or {SOCKET_ENV}, or at a TCP API with --url http://HOST:PORT or {}",
                client::URL_ENV
            ),
            (ApiEndpoint::Tcp { .. }, _) => format!(
                "is `vpcd up FILE --state DIR --api-listen HOST:PORT` running? Point ctl at \
                 another API with --url http://HOST:PORT or {}, or at a socket with --socket \
                 PATH or {SOCKET_ENV}",
                client::URL_ENV
            ),
        };
        errln!("  hint: {hint}");
    }
    EXIT_BAD_INPUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_vpc_slash_name() {
        assert_eq!(
            split_ref("--instance", "tenant-a/fn-a1"),
            Ok(("tenant-a".into(), "fn-a1".into()))
        );
        for bad in ["fn-a1", "/x", "a/", "a/b/c", ""] {
            let e = split_ref("--instance", bad).unwrap_err();
            assert!(
                e.contains("--instance") && e.contains("VPC/NAME"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn optional_fields_are_left_out() {
        assert_eq!(
            body(vec![
                ("vpc", json!("a")),
                ("ip", json!(None::<String>)),
                ("security_groups", list_or_null(&[])),
                ("eips", list_or_null(&["gw".to_string()])),
            ]),
            json!({"vpc": "a", "eips": ["gw"]})
        );
    }

    #[test]
    fn a_change_is_one_line_and_problems_are_not_in_it() {
        let v = json!({"op": "add_vpc", "generation": 3, "applied": "+0 -0 ~0, 2 unchanged",
                       "problems": ["p"]});
        assert_eq!(
            changed("added vpc a (10.0.0.0/16)", &v),
            "added vpc a (10.0.0.0/16) (generation 3; endpoints +0 -0 ~0, 2 unchanged)"
        );
        assert_eq!(
            changed("released eip x", &json!({"generation": 4})),
            "released eip x (generation 4)"
        );
    }

    #[test]
    fn errors_render_error_field_and_hint() {
        let reply = |status, body: &str| Reply {
            status,
            content_type: None,
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            render_errors(&reply(
                400,
                r#"{"errors":[{"code":"invalid_input","error":"bad","field":"cidr","hint":"fix it"}]}"#
            )),
            "error: bad\n  field: cidr\n  hint: fix it\n"
        );
        assert_eq!(
            render_errors(&reply(
                404,
                r#"{"errors":[{"code":"not_found","error":"gone","field":"","hint":null}]}"#
            )),
            "error: gone\n"
        );
        assert_eq!(
            render_errors(&reply(500, "")),
            "error: the API answered HTTP 500\n"
        );
    }
}
