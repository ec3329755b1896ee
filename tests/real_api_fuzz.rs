//! The control API against its own OpenAPI document, fuzzed by schemathesis (root; CI installs
//! it): thousands of generated requests — valid, invalid and stateful sequences — against a
//! running `vpcd up --state` on a loopback TCP listener with a bearer token. No request may get a
//! server error, every status code and content type must be one the document lists, and the run
//! must stop cleanly afterwards with nothing left behind.
//!
//! The topology has only in-process (`sim`) endpoints; generated `add_instance` requests may
//! attach `netns` instances, which the run removes when it stops. The seed is fixed so that a
//! failure reproduces (`st replay`, or run the command printed below).

mod real_support;

use std::process::Command;
use std::time::Duration;

use real_support::{Run, capable};

const TOPOLOGY: &str = r#"
[[vpc]]
name = "a"
cidr = "10.66.0.0/16"
subnet = [ { name = "fn", cidr = "10.66.1.0/24" } ]
instance = [ { name = "f1", subnet = "fn", attach = "sim" } ]

[[eip]]
name = "gw"
address = "203.0.113.66"

[internet]
cidr = "198.51.100.0/24"
host = [ { name = "web", ip = "198.51.100.10", attach = "sim" } ]
"#;

const TOKEN: &str = "schemathesis-token-0123456789";

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    if !capable("real_api_fuzz", &["schemathesis"]) {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let state = std::env::temp_dir().join(format!("vpcd-api-fuzz-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let token = std::env::temp_dir().join(format!("vpcd-api-fuzz-token-{}", std::process::id()));
    std::fs::write(&token, TOKEN).expect("token file");
    let listen = format!("127.0.0.1:{port}");
    let run = Run::up_with(
        "vaf",
        TOPOLOGY,
        &[
            "--state",
            &state.display().to_string(),
            "--api-listen",
            &listen,
            "--api-token-file",
            &token.display().to_string(),
        ],
    );
    let url = format!("http://{listen}/v1/openapi.json");
    let args = [
        "run",
        &url,
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance",
        "--max-examples",
        "25",
        "--workers",
        "1",
        "--seed",
        "20261125",
        "--request-timeout",
        "20",
    ];
    let mut child = Command::new("schemathesis")
        .args(args)
        .env("NO_COLOR", "1")
        // It writes a `.schemathesis/` cache where it runs: not in the repository.
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("schemathesis");
    // Bounded: a hung API must fail the test, not the CI job.
    let deadline = std::time::Instant::now() + Duration::from_secs(420);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis ran over 7 minutes against the API");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&token);
    assert!(status.success(), "schemathesis {}: {text}", args.join(" "));
    let summary = text
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or("(no summary)");
    eprintln!("schemathesis: {}", summary.trim());
    run.stop();
}
