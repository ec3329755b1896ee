//! `vpcd ctl` for looking at the running network: status, the operations list, the internet,
//! connection tracking, the flow log and packet captures.
//!
//! Paths given to the server (`flow-log start FILE`, `capture start ENDPOINT FILE`) are made
//! absolute against ctl's working directory first: the server runs elsewhere (usually `/`), and
//! both sides share the file system (a Unix socket, or TCP on loopback).

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Subcommand};
use serde_json::{Value, json};

use super::client::query;
use super::table::{Table, cell, field, fields, list, seconds};
use super::{Call, body, split_ref};

/// `GET /v1/status`: the run's generation and uptime, then its endpoints.
pub(super) fn status() -> Call {
    Call::get("/v1/status".into(), |v| {
        let endpoints = list(&v["endpoints"], "endpoints")?;
        let mut out = fields(&[
            ("GENERATION", field(v, "generation")),
            ("UPTIME_S", seconds(&v["uptime_s"])),
            ("ENDPOINTS", endpoints.len().to_string()),
        ]);
        let mut t = Table::of_fields(&["name", "attach", "namespace", "addr"]);
        for e in endpoints {
            t.row(
                ["name", "attach", "namespace", "addr"]
                    .map(|k| field(e, k))
                    .to_vec(),
            );
        }
        if !t.is_empty() {
            out.push('\n');
            out.push_str(&t.render());
        }
        Ok(out)
    })
}

/// `GET /v1/ops`: one operation per line.
pub(super) fn ops() -> Call {
    Call::get("/v1/ops".into(), |v| {
        let ops = list(v, "operations")?;
        Ok(ops.iter().map(|o| cell(o) + "\n").collect())
    })
}

/// `GET /v1/internet`: its CIDR, then its hosts.
pub(super) fn internet() -> Call {
    Call::get("/v1/internet".into(), |v| {
        let keys = ["name", "ip", "serve", "attach"];
        let mut t = Table::of_fields(&keys);
        for h in v["hosts"].as_array().into_iter().flatten() {
            t.row(keys.map(|k| field(h, k)).to_vec());
        }
        Ok(format!(
            "{}\n{}",
            fields(&[("CIDR", field(v, "cidr"))]),
            t.render_or("no internet hosts")
        ))
    })
}

#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// Tracked connections (NAT sessions and security-group flows), newest state.
    List {
        /// Only this VPC's.
        #[arg(long)]
        vpc: Option<String>,
        /// Only this NAT gateway's (`VPC/GATEWAY`, or a name in every VPC).
        #[arg(long)]
        gateway: Option<String>,
        /// Only this instance's (`VPC/NAME`, or a name in every VPC).
        #[arg(long, value_name = "VPC/NAME")]
        instance: Option<String>,
        /// Only `tcp`, `udp`, `icmp` or a protocol number.
        #[arg(long)]
        protocol: Option<String>,
        /// Only NAT sessions (`nat`) or security-group flows (`sg`).
        #[arg(long, value_parser = ["nat", "sg"])]
        table: Option<String>,
        /// At most N connections.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Forget the connections of an instance or a NAT gateway (their next packets start anew).
    #[command(group(ArgGroup::new("owner").required(true).args(["instance", "gateway"])))]
    Flush {
        #[arg(long, value_name = "VPC/NAME")]
        instance: Option<String>,
        #[arg(long, value_name = "VPC/GATEWAY")]
        gateway: Option<String>,
    },
}

impl ConntrackCommand {
    pub(super) fn call(&self) -> Result<Call, String> {
        Ok(match self {
            ConntrackCommand::List {
                vpc,
                gateway,
                instance,
                protocol,
                table,
                limit,
            } => {
                let path = format!(
                    "/v1/conntrack{}",
                    query(&[
                        ("vpc", vpc.clone()),
                        ("gateway", gateway.clone()),
                        ("instance", instance.clone()),
                        ("protocol", protocol.clone()),
                        ("table", table.clone()),
                        ("limit", limit.map(|l| l.to_string())),
                    ])
                );
                Call::get(path, connections)
            }
            ConntrackCommand::Flush { instance, gateway } => {
                let (key, what, value) = match (instance, gateway) {
                    (Some(i), _) => ("instance", "instance", i),
                    (None, Some(g)) => ("gateway", "nat gateway", g),
                    (None, None) => return Err("name --instance or --gateway".into()),
                };
                split_ref(&format!("--{key}"), value)?;
                let what = format!("{what} {value}");
                Call::post("/v1/conntrack/flush", json!({key: value}), move |v| {
                    let mut line =
                        format!("flushed {} connection(s) of {what}", field(v, "flushed"));
                    if !v["nat_sessions"].is_null() || !v["sg_flows"].is_null() {
                        line.push_str(&format!(
                            " ({} NAT session(s), {} security-group flow(s))",
                            field(v, "nat_sessions"),
                            field(v, "sg_flows")
                        ));
                    }
                    Ok(line)
                })
            }
        })
    }
}

/// The conntrack listing: one row per connection, then a count (and how to see the rest).
fn connections(v: &Value) -> Result<String, String> {
    let conns = list(&v["connections"], "connections")?;
    let mut t = Table::new(&[
        "TABLE",
        "VPC",
        "GATEWAY",
        "INSTANCE",
        "PROTOCOL",
        "INTERNAL",
        "EXTERNAL",
        "HOST_SOCKET",
        "REMOTE",
        "STATE",
        "DIRECTION",
        "AGE_S",
        "IDLE_S",
        "PACKETS",
        "BYTES",
    ]);
    for c in conns {
        let mut row: Vec<String> = [
            "table",
            "vpc",
            "gateway",
            "instance",
            "protocol",
            "internal",
            "external",
            "host_socket",
            "remote",
            "state",
            "direction",
        ]
        .iter()
        .map(|k| field(c, k))
        .collect();
        row.push(seconds(&c["age_s"]));
        row.push(seconds(&c["idle_s"]));
        row.push(out_in(c, "packets"));
        row.push(out_in(c, "bytes"));
        t.row(row);
    }
    if t.is_empty() {
        return Ok("no connections\n".into());
    }
    let total = field(v, "total");
    let footer = if v["truncated"] == true {
        format!(
            "{} of {total} connections (PACKETS and BYTES are out/in; raise --limit for more)\n",
            conns.len()
        )
    } else {
        format!("{total} connection(s) (PACKETS and BYTES are out/in)\n")
    };
    Ok(t.render() + &footer)
}

/// `OUT/IN` of `{what}_out` and `{what}_in`, or `-` when the table has no counters (`sg`).
fn out_in(c: &Value, what: &str) -> String {
    let (o, i) = (&c[format!("{what}_out")], &c[format!("{what}_in")]);
    if o.is_null() && i.is_null() {
        "-".into()
    } else {
        format!("{}/{}", cell(o), cell(i))
    }
}

#[derive(Debug, Subcommand)]
pub enum FlowLogCommand {
    /// Whether the flow log is on, where it writes and how many records it wrote.
    Status,
    /// Write flow-log records (JSON lines) to TARGET, a file (`-`: vpcd up's stdout).
    Start {
        /// A file inside the daemon's log directory (`vpcd up --log-dir`, default its --state
        /// directory; a relative path is taken from here), or `-`. An existing file is appended
        /// to, never truncated.
        target: String,
        /// The capture window in seconds (records are written when it closes).
        #[arg(long, visible_alias = "window-s", value_name = "SECONDS")]
        window: Option<f64>,
        /// Refuse a file that exists already.
        #[arg(long)]
        exclusive: bool,
    },
    /// Stop the flow log (the open window is written first).
    Stop,
}

impl FlowLogCommand {
    pub(super) fn call(&self) -> Call {
        match self {
            FlowLogCommand::Status => Call::get("/v1/flow-log".into(), |v| Ok(flow_log(v, true))),
            FlowLogCommand::Start {
                target,
                window,
                exclusive,
            } => {
                let target = if target == "-" {
                    target.clone()
                } else {
                    absolute(target)
                };
                Call::post(
                    "/v1/flow-log/start",
                    body(vec![
                        ("target", json!(target)),
                        ("window_s", json!(window)),
                        ("exclusive", exclusive_flag(*exclusive)),
                    ]),
                    |v| Ok(format!("started the flow log\n{}", flow_log(v, true))),
                )
            }
            FlowLogCommand::Stop => Call::post("/v1/flow-log/stop", json!({}), |v| {
                Ok(format!("stopped the flow log\n{}", flow_log(v, false)))
            }),
        }
    }
}

/// `exclusive` as a start request sends it: only when asked (absent means append).
pub(super) fn exclusive_flag(exclusive: bool) -> Value {
    if exclusive { json!(true) } else { Value::Null }
}

/// The flow-log object as `KEY  value` lines. `active` is the answer's, else `running` (what
/// the request implies: a status that is not `null`, a start, not a stop). The record count is
/// `records` (the contract) or `records_written`; the open window's flow count and a write
/// error are shown when the answer has them.
fn flow_log(v: &Value, running: bool) -> String {
    let active = v["active"].as_bool().unwrap_or(running && !v.is_null());
    let records = match &v["records"] {
        Value::Null => &v["records_written"],
        r => r,
    };
    let mut rows = vec![
        ("ACTIVE", if active { "yes" } else { "no" }.to_string()),
        ("TARGET", field(v, "target")),
        ("WINDOW_S", field(v, "window_s")),
        ("RECORDS", cell(records)),
    ];
    if !v["flows_in_window"].is_null() {
        rows.push(("FLOWS_IN_WINDOW", field(v, "flows_in_window")));
    }
    if !v["error"].is_null() {
        rows.push(("ERROR", field(v, "error")));
    }
    fields(&rows)
}

#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Running captures with their files and packet counts.
    List,
    /// Capture ENDPOINT's packets as pcap: FILE holds its own view, the NAT file (x.pcap ->
    /// x.nat.pcap) the same packets beyond NAT.
    Start {
        /// `VPC/INSTANCE` or `internet/HOST`.
        endpoint: String,
        /// The pcap file, inside the daemon's log directory (`vpcd up --log-dir`); created new
        /// with its `.nat.pcap` sibling (a relative path is taken from here).
        file: PathBuf,
    },
    /// Stop capturing ENDPOINT (its files are complete afterwards).
    Stop { endpoint: String },
}

impl CaptureCommand {
    pub(super) fn call(&self) -> Result<Call, String> {
        Ok(match self {
            CaptureCommand::List => Call::get("/v1/captures".into(), |v| {
                let keys = ["endpoint", "file", "nat_file", "packets", "nat_packets"];
                let mut t = Table::of_fields(&keys);
                let mut notes = String::new();
                for c in list(v, "captures")? {
                    t.row(keys.map(|k| field(c, k)).to_vec());
                    notes.push_str(&capture_notes(c));
                }
                Ok(t.render_or("no captures") + &notes)
            }),
            CaptureCommand::Start { endpoint, file } => {
                split_ref("ENDPOINT", endpoint)?;
                let file = absolute(&file.to_string_lossy());
                Call::post(
                    "/v1/captures/start",
                    json!({"endpoint": endpoint, "file": file}),
                    |v| {
                        Ok(format!(
                            "capturing {} to {} (beyond NAT: {})",
                            field(v, "endpoint"),
                            field(v, "file"),
                            field(v, "nat_file")
                        ))
                    },
                )
            }
            CaptureCommand::Stop { endpoint } => {
                split_ref("ENDPOINT", endpoint)?;
                Call::post("/v1/captures/stop", json!({"endpoint": endpoint}), |v| {
                    let files = match &v["nat_packets"] {
                        Value::Null => {
                            format!("{} and {}", field(v, "file"), field(v, "nat_file"))
                        }
                        n => format!(
                            "{}, {} in {}",
                            field(v, "file"),
                            cell(n),
                            field(v, "nat_file")
                        ),
                    };
                    Ok(format!(
                        "stopped capturing {}: {} packet(s) in {files}\n{}",
                        field(v, "endpoint"),
                        field(v, "packets"),
                        capture_notes(v)
                    ))
                })
            }
        })
    }
}

/// What went wrong with a capture, one line each: packets dropped for a full buffer, a write
/// error.
fn capture_notes(c: &Value) -> String {
    let mut out = String::new();
    if c["not_captured"].as_u64().is_some_and(|n| n > 0) {
        out.push_str(&format!(
            "{}: {} packet(s) not captured (buffer full)\n",
            field(c, "endpoint"),
            field(c, "not_captured")
        ));
    }
    if !c["error"].is_null() {
        out.push_str(&format!(
            "{}: writing stopped: {}\n",
            field(c, "endpoint"),
            field(c, "error")
        ));
    }
    out
}

/// `path` made absolute against the working directory (unchanged when that is unknown).
pub(super) fn absolute(path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() {
        return path.to_string();
    }
    std::env::current_dir()
        .map(|d| d.join(p).to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_string())
}
