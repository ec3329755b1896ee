//! `vpcd ctl`: the command line over the HTTP/JSON API of a running `vpcd up --state DIR`
//! ([`crate::api`]), on its Unix socket.
//!
//! The socket is `--socket PATH`, else `VPCD_API_SOCKET`, else the only `*.sock` in the run
//! directory (`/run/vpcd`, `VPCD_RUN_DIR`). Output is for people by default (`--json`: the API's
//! JSON as it came). A refused change prints the API's error, field and hint on stderr and exits
//! 1; no server or bad arguments exit 2.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};

/// The environment variable naming the API socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "VPCD_API_SOCKET";

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The API socket of the `vpcd up --state` run (default: `VPCD_API_SOCKET`, or the only
    /// `*.sock` in `/run/vpcd` / `VPCD_RUN_DIR`).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the API's JSON as it came instead of human output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Print the effective topology as a topology file (`vpcd check` accepts it).
    Export,
    /// Send one change: OP is an operation (`add_instance`, `associate_eip`, ...), BODY its JSON.
    Apply {
        op: String,
        /// The request body, a JSON object.
        body: String,
    },
    /// Instances: attach and detach.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Elastic IPs: allocate, associate, disassociate, release.
    #[command(subcommand)]
    Eip(EipCommand),
}

#[derive(Debug, Subcommand)]
enum InstanceCommand {
    /// Attach a new instance to VPC's SUBNET.
    Add {
        vpc: String,
        name: String,
        #[arg(long)]
        subnet: String,
        /// Its private address (default: the subnet's first free one).
        #[arg(long)]
        ip: Option<String>,
        /// `netns` (a namespace with a TUN device, the default) or `sim` (in process).
        #[arg(long)]
        attach: Option<String>,
        /// A security group of its VPC (repeatable; default: the VPC's default group).
        #[arg(long = "security-group", value_name = "GROUP")]
        security_groups: Vec<String>,
    },
    /// Detach an instance (its 1:1 EIP stays allocated).
    Remove { vpc: String, name: String },
}

#[derive(Debug, Subcommand)]
enum EipCommand {
    /// Allocate EIP NAME with a public ADDRESS.
    Allocate {
        name: String,
        #[arg(long)]
        address: String,
    },
    /// Associate EIP 1:1 with an instance (`VPC/NAME`).
    Associate {
        eip: String,
        #[arg(long, value_name = "VPC/NAME")]
        instance: String,
    },
    /// Disassociate EIP from what it is bound to.
    Disassociate { eip: String },
    /// Release EIP (it must not be associated).
    Release { name: String },
}

pub fn run(args: &CtlArgs) -> u8 {
    let socket = match socket_path(args.socket.as_deref()) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("vpcd ctl: {msg}");
            return EXIT_BAD_INPUT;
        }
    };
    let (op, body) = match &args.command {
        CtlCommand::Export => return export(&socket, args.json),
        CtlCommand::Apply { op, body } => match serde_json::from_str::<Value>(body) {
            Ok(v) => (op.clone(), v),
            Err(e) => {
                eprintln!(
                    "vpcd ctl: BODY is not JSON: {e}; write a JSON object, e.g. '{{\"eip\": \"web\"}}'"
                );
                return EXIT_BAD_INPUT;
            }
        },
        CtlCommand::Instance(InstanceCommand::Add {
            vpc,
            name,
            subnet,
            ip,
            attach,
            security_groups,
        }) => {
            let mut b = json!({"vpc": vpc, "name": name, "subnet": subnet});
            if let Some(ip) = ip {
                b["ip"] = json!(ip);
            }
            if let Some(a) = attach {
                b["attach"] = json!(a);
            }
            if !security_groups.is_empty() {
                b["security_groups"] = json!(security_groups);
            }
            ("add_instance".into(), b)
        }
        CtlCommand::Instance(InstanceCommand::Remove { vpc, name }) => {
            ("remove_instance".into(), json!({"vpc": vpc, "name": name}))
        }
        CtlCommand::Eip(EipCommand::Allocate { name, address }) => (
            "allocate_eip".into(),
            json!({"name": name, "address": address}),
        ),
        CtlCommand::Eip(EipCommand::Associate { eip, instance }) => {
            let Some((vpc, name)) = instance.split_once('/') else {
                eprintln!("vpcd ctl: --instance `{instance}`: write VPC/NAME, e.g. tenant-a/fn-a1");
                return EXIT_BAD_INPUT;
            };
            (
                "associate_eip".into(),
                json!({"eip": eip, "vpc": vpc, "instance": name}),
            )
        }
        CtlCommand::Eip(EipCommand::Disassociate { eip }) => {
            ("disassociate_eip".into(), json!({"eip": eip}))
        }
        CtlCommand::Eip(EipCommand::Release { name }) => {
            ("release_eip".into(), json!({"name": name}))
        }
    };
    send_op(&socket, &op, &body, args.json)
}

fn socket_path(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let dir = crate::runtime::state::run_dir();
    let socks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match socks.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no API socket in {}: start `vpcd up FILE --state DIR`, or name the socket with \
             --socket PATH",
            dir.display()
        )),
        _ => Err(format!(
            "{} API sockets in {}: name one with --socket PATH",
            socks.len(),
            dir.display()
        )),
    }
}

/// One HTTP/1.1 exchange over the Unix socket: `(status, body)`.
fn request(
    socket: &Path,
    method: &str,
    path: &str,
    accept: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let no_server = |e: std::io::Error| {
        format!(
            "cannot reach the API at {}: {e}; is `vpcd up FILE --state DIR` running (as root)?",
            socket.display()
        )
    };
    let mut s = UnixStream::connect(socket).map_err(no_server)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: {accept}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(no_server)?;
    s.write_all(body).map_err(no_server)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(no_server)?;
    parse_response(&raw).ok_or_else(|| {
        format!(
            "the API at {} sent an answer that is not HTTP",
            socket.display()
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = &raw[end + 4..];
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let nl = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..nl]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[nl + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn export(socket: &Path, as_json: bool) -> u8 {
    let accept = if as_json {
        "application/json"
    } else {
        "text/plain"
    };
    match request(socket, "GET", "/v1/topology", accept, b"") {
        Ok((200, body)) => {
            let mut out = std::io::stdout();
            let _ = out.write_all(&body);
            let _ = out.flush();
            EXIT_OK
        }
        Ok((_, body)) => print_error(&body, as_json),
        Err(msg) => {
            eprintln!("vpcd ctl: {msg}");
            EXIT_BAD_INPUT
        }
    }
}

fn send_op(socket: &Path, op: &str, body: &Value, as_json: bool) -> u8 {
    let path = format!("/v1/ops/{op}");
    match request(
        socket,
        "POST",
        &path,
        "application/json",
        body.to_string().as_bytes(),
    ) {
        Ok((200, answer)) => {
            if as_json {
                let _ = std::io::stdout().write_all(&answer);
                return EXIT_OK;
            }
            let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            println!(
                "ok: {} (generation {}): {}",
                v["op"].as_str().unwrap_or(op),
                v["generation"],
                v["applied"].as_str().unwrap_or("")
            );
            if let Some(problems) = v["problems"].as_array() {
                for p in problems {
                    println!("  problem: {}", p.as_str().unwrap_or_default());
                }
            }
            EXIT_OK
        }
        Ok((_, answer)) => print_error(&answer, as_json),
        Err(msg) => {
            eprintln!("vpcd ctl: {msg}");
            EXIT_BAD_INPUT
        }
    }
}

/// A refusal: the API's errors on stderr (raw with `--json`); exit 1.
fn print_error(body: &[u8], as_json: bool) -> u8 {
    if as_json {
        let _ = std::io::stderr().write_all(body);
        return EXIT_FAILED;
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v["errors"].as_array() {
        Some(errors) => {
            for e in errors {
                eprintln!("error: {}", e["error"].as_str().unwrap_or("(no message)"));
                if let Some(f) = e["field"].as_str().filter(|f| !f.is_empty()) {
                    eprintln!("  field: {f}");
                }
                if let Some(h) = e["hint"].as_str() {
                    eprintln!("  hint: {h}");
                }
            }
        }
        None => eprintln!("error: {}", String::from_utf8_lossy(body).trim()),
    }
    EXIT_FAILED
}
