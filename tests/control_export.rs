//! `ControlState::export` round trip: every bundled topology exports to TOML text that
//! `vpcd check` accepts and that validates to the same plan (issue 6: `vpcd ctl export`).

use std::path::Path;

use vpcd::control::ControlState;
use vpcd::topology;

fn bundled() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn export_of_every_bundled_topology_parses_to_the_same_plan() {
    for file in bundled() {
        let original = topology::load(&file).unwrap();
        let state = ControlState::from_file(&file).unwrap();
        assert_eq!(state.plan(), &original, "{}", file.display());
        let text = state.export();
        let again = topology::parse("export.toml", text).unwrap_or_else(|e| {
            panic!("{}: export does not validate:\n{e}\n{text}", file.display())
        });
        assert_eq!(again, original, "{}", file.display());
        // Exporting the export changes nothing.
        let state2 = ControlState::from_text("export.toml", text).unwrap();
        assert_eq!(state2.export(), text);
    }
}

#[test]
fn export_keeps_probes_and_explicit_empty_egress() {
    let text = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
[[vpc.subnet]]
name = "s"
cidr = "10.0.1.0/24"
[[vpc.security_group]]
name = "locked"
egress = []
[[vpc.instance]]
name = "i"
subnet = "s"
security_groups = ["locked"]
[[probe]]
from = "a/i"
to = "10.0.1.9:80/tcp"
expect = "deny"
"#;
    let state = ControlState::from_text("t.toml", text).unwrap();
    assert!(state.export().contains("egress = []"), "{}", state.export());
    assert_eq!(state.plan().probes.len(), 1);
}
