//! The dataplane is sans-IO (DESIGN.md, STYLE.md lesson 1): nothing under `src/dataplane` may do
//! I/O, spawn, lock, read a clock or reach into the I/O layers. This test reads the sources and
//! fails on any forbidden path, so the rule cannot rot silently.

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "std::time::Instant",
    "SystemTime",
    "Instant::now",
    "tokio",
    "libc",
    "std::thread",
    "std::fs",
    "std::io",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "std::sync::Mutex",
    "RwLock",
    "println!",
    "eprintln!",
    "log::",
    "crate::sim",
    "crate::cli",
    "crate::topology::model",
];

#[test]
fn dataplane_imports_no_io_clock_or_upper_layer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dataplane");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("src/dataplane exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().is_none_or(|e| e != "rs")
            || path.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable source");
        // Unit tests at the bottom of a file may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
        for bad in FORBIDDEN {
            assert!(
                !code.contains(bad),
                "{} uses `{bad}`: the dataplane must stay sans-IO",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the dataplane sources, found {checked}"
    );
}
