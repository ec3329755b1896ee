//! The core is sans-IO (ARCHITECTURE.md, "The sans-IO core"): nothing in it may do I/O, spawn, lock,
//! read a clock, print or log, or reach into the shell around it. This test reads every source file
//! of the core — recursively, so `dataplane/nat/` and `dataplane/firewall/` too — and fails on any
//! forbidden path, naming the file, the line and the path, so the rule cannot rot silently.
//!
//! The core is `src/dataplane/**` (the packet pipeline), `src/tables/**` (the compiled tables it
//! reads; compiling them from a plan is the topology's job, `src/topology/compile.rs`) and
//! `src/time.rs` (the `now` callers pass in). Unit tests (`#[cfg(test)]`) may use anything.

mod source_scan;

use source_scan::{NamedPath, SourceFile};

/// Where the core lives.
const CORE: &[&str] = &["src/dataplane/", "src/tables/", "src/time.rs"];

/// Modules of this crate the core may use: itself, and the address value types (no serde model).
const CORE_MODULES: &[&str] = &["dataplane", "tables", "time", "topology::cidr"];

/// Other crates the core may use: the standard library and pure data-structure or wire-format
/// crates. Anything else (tokio, libc, nix, socket2, log, tun-rs, axum …) needs a reason first.
const CORE_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "foldhash",
    "hashbrown",
    "ipnet",
    "prefix_trie",
    "smoltcp",
    "serde",
    "utoipa",
];

/// Forbidden paths (matched as whole segments anywhere in a path, after resolving `crate`,
/// `self` and `super`), and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "the async runtime belongs to the shell"),
    ("mio", "an event loop belongs to the shell"),
    ("libc", "system calls belong to the shell"),
    ("nix", "system calls belong to the shell"),
    ("socket2", "sockets belong to the shell"),
    ("tun_rs", "TUN devices belong to the shell"),
    ("rtnetlink", "netlink belongs to the shell"),
    ("std::thread", "threads belong to the shell"),
    ("thread::spawn", "threads belong to the shell"),
    ("std::process", "processes belong to the shell"),
    ("std::env", "the environment belongs to the shell"),
    ("std::fs", "files belong to the shell"),
    ("std::io", "I/O belongs to the shell"),
    ("std::os", "OS handles belong to the shell"),
    ("std::net::TcpStream", "sockets belong to the shell"),
    ("std::net::TcpListener", "sockets belong to the shell"),
    ("std::net::UdpSocket", "sockets belong to the shell"),
    ("TcpStream", "sockets belong to the shell"),
    ("TcpListener", "sockets belong to the shell"),
    ("UdpSocket", "sockets belong to the shell"),
    ("UnixStream", "sockets belong to the shell"),
    ("UnixListener", "sockets belong to the shell"),
    ("UnixDatagram", "sockets belong to the shell"),
    (
        "smoltcp::iface",
        "smoltcp's interfaces are the shell's hosts",
    ),
    ("smoltcp::socket", "smoltcp's sockets are the shell's hosts"),
    ("smoltcp::phy", "devices belong to the shell"),
    (
        "std::time::Instant",
        "`now` is passed in (crate::time::Instant)",
    ),
    ("Instant::now", "`now` is passed in"),
    ("SystemTime", "`now` is passed in"),
    ("UNIX_EPOCH", "`now` is passed in"),
    ("Mutex", "no locks in the core"),
    ("RwLock", "no locks in the core"),
    ("Condvar", "no locks in the core"),
    ("Barrier", "no locks in the core"),
    ("OnceLock", "no locks in the core"),
    ("LazyLock", "no locks in the core"),
    ("mpsc", "channels belong to the shell"),
    ("parking_lot", "no locks in the core"),
    ("log", "no logging in the core: count drops instead"),
    ("tracing", "no logging in the core: count drops instead"),
    ("crate::runtime", "a shell module"),
    ("crate::uplink", "a shell module"),
    (
        "crate::observe",
        "a shell module (it wraps the core, not the other way)",
    ),
    ("crate::api", "a shell module"),
    ("crate::control", "a shell module"),
    ("crate::cli", "a shell module"),
    ("crate::sim", "a shell module"),
    ("crate::netns", "a shell module"),
    (
        "crate::explain",
        "explain reads the core, not the other way",
    ),
    (
        "crate::inspect",
        "the control plane's reads of the core, not the other way",
    ),
    (
        "crate::topology::model",
        "the serde model of topology files",
    ),
    (
        "crate::topology::plan",
        "the plan is compiled into tables outside the core",
    ),
    ("crate::topology::validate", "validation is above the core"),
    (
        "crate::topology::compile",
        "compiling tables is above the core",
    ),
];

/// Macros that print or log.
const FORBIDDEN_MACROS: &[&str] = &["println", "print", "eprintln", "eprint", "dbg"];

fn segments(p: &str) -> Vec<&str> {
    p.split("::").collect()
}

fn contains_run(path: &[String], pattern: &[&str]) -> bool {
    path.windows(pattern.len())
        .any(|w| w.iter().zip(pattern).all(|(a, b)| a == b))
}

fn shown(p: &NamedPath) -> String {
    p.written.join("::")
}

/// Every problem in one core file, as `file:line: ...` lines.
fn problems(file: &SourceFile) -> Vec<String> {
    let mut out = Vec::new();
    let at = |p: &NamedPath| format!("{}:{}", file.rel.display(), p.line);
    for p in &file.paths {
        let before = out.len();
        for (bad, why) in FORBIDDEN {
            if contains_run(&p.absolute, &segments(bad)) || contains_run(&p.written, &segments(bad))
            {
                out.push(format!(
                    "{}: `{}` uses forbidden `{bad}` ({why})",
                    at(p),
                    shown(p)
                ));
            }
        }
        if p.is_macro
            && let Some(name) = p.written.last()
            && FORBIDDEN_MACROS.contains(&name.as_str())
        {
            out.push(format!(
                "{}: `{name}!` prints (no printing or logging in the core)",
                at(p)
            ));
        }
        if out.len() > before {
            continue;
        }
        if p.absolute.first().is_some_and(|s| s == "crate") {
            let inside = CORE_MODULES.iter().any(|m| {
                contains_run(
                    &p.absolute[1..p.absolute.len().min(1 + segments(m).len())],
                    &segments(m),
                )
            });
            if !inside && p.absolute.len() > 1 {
                out.push(format!(
                    "{}: `{}` reaches `crate::{}` outside the core (allowed: {})",
                    at(p),
                    shown(p),
                    p.absolute[1..].join("::"),
                    CORE_MODULES.join(", ")
                ));
            }
        } else if p.in_use
            && let Some(krate) = p.absolute.first()
            && !CORE_CRATES.contains(&krate.as_str())
        {
            out.push(format!(
                "{}: `{}` uses crate `{krate}`, not one the core may use ({})",
                at(p),
                shown(p),
                CORE_CRATES.join(", ")
            ));
        }
    }
    out
}

fn core_files() -> Vec<SourceFile> {
    source_scan::library()
        .into_iter()
        .filter(|f| {
            let rel = f.rel.to_string_lossy().replace('\\', "/");
            CORE.iter().any(|c| rel.starts_with(c))
        })
        .collect()
}

#[test]
fn the_core_imports_no_io_clock_lock_logging_or_shell_module() {
    let files = core_files();
    let rels: Vec<String> = files
        .iter()
        .map(|f| f.rel.to_string_lossy().replace('\\', "/"))
        .collect();
    // The walk really went down: nested files of the core were read, not just the top level.
    for must in [
        "src/dataplane/mod.rs",
        "src/dataplane/fabric.rs",
        "src/dataplane/nat/alloc.rs",
        "src/dataplane/nat/conntrack.rs",
        "src/dataplane/firewall/mod.rs",
        "src/dataplane/firewall/acl.rs",
        "src/tables/mod.rs",
        "src/time.rs",
    ] {
        assert!(
            rels.iter().any(|r| r == must),
            "the guard did not read {must}; it read {rels:?}"
        );
    }
    assert!(
        rels.iter()
            .filter(|r| r.starts_with("src/dataplane/nat/"))
            .count()
            >= 4
            && rels
                .iter()
                .filter(|r| r.starts_with("src/dataplane/firewall/"))
                .count()
                >= 3,
        "the guard read too few nested files: {rels:?}"
    );
    // Unit-test files (`#[cfg(test)] mod tests;`) are left out, like inline test modules.
    assert!(!rels.iter().any(|r| r == "src/dataplane/tests.rs"));
    // It saw paths in them (the scanner is not blind).
    let alloc = files
        .iter()
        .find(|f| f.rel.ends_with("dataplane/nat/alloc.rs"))
        .expect("read above");
    assert!(
        alloc.paths.iter().any(|p| p.in_use),
        "no `use` found in {}",
        alloc.rel.display()
    );

    let found: Vec<String> = files.iter().flat_map(problems).collect();
    assert!(
        found.is_empty(),
        "the core must stay sans-IO ({} problem(s)):\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The guard's own rules catch what they should, on text written here (so a rule that matches
/// nothing is noticed without editing the core).
#[test]
fn the_guard_catches_forbidden_paths_in_nested_and_grouped_forms() {
    use std::collections::BTreeSet;
    let cases: &[(&str, &str)] = &[
        ("use tokio::time::sleep;", "tokio"),
        ("use std::{io::Read, net::UdpSocket};", "std::io"),
        ("use std::{io::Read, net::UdpSocket};", "UdpSocket"),
        (
            "fn f() { let t = std::time::Instant::now(); }",
            "Instant::now",
        ),
        ("fn f() { std::thread::spawn(|| ()); }", "std::thread"),
        ("use std::sync::{Arc, Mutex};", "Mutex"),
        (
            "use super::super::super::runtime::Runtime;",
            "crate::runtime",
        ),
        (
            "use crate::topology::model::EgressRule;",
            "crate::topology::model",
        ),
        ("fn f() { log::info!(\"x\"); }", "log"),
        ("fn f() { ::tokio::spawn(async {}); }", "tokio"),
        ("#[tokio::main]\nasync fn main() {}", "tokio"),
        ("use std::time::{Duration, Instant};", "std::time::Instant"),
    ];
    let modules: BTreeSet<Vec<String>> = [vec!["dataplane".to_string()]].into_iter().collect();
    for (code, bad) in cases {
        let file = source_scan::scan_text(
            code,
            &["dataplane".into(), "nat".into(), "alloc".into()],
            &modules,
            "src/dataplane/nat/alloc.rs",
        );
        let found = problems(&file);
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!("forbidden `{bad}`"))),
            "`{code}` should be refused for `{bad}`; found {found:?}"
        );
    }
    let printing = source_scan::scan_text(
        "fn f() { println!(\"x\"); }\n#[cfg(test)]\nmod tests { fn g() { println!(\"ok\"); } }",
        &["dataplane".into()],
        &modules,
        "src/dataplane/mod.rs",
    );
    assert_eq!(problems(&printing).len(), 1, "{:?}", problems(&printing));
    let clean = source_scan::scan_text(
        "// tokio is mentioned in a comment\nconst S: &str = \"std::fs\";\nuse std::time::Duration;",
        &["dataplane".into()],
        &modules,
        "src/dataplane/mod.rs",
    );
    assert_eq!(problems(&clean), Vec::<String>::new());
}
