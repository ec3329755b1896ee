//! Runs the quickstart topology's probes in the simulator with flow logs on and prints the
//! records as JSON lines; with a path argument, also captures fn-a1's port there (and the far
//! side in `PATH` with `.nat.pcap`).
//!
//! ```sh
//! cargo run --example flow_log                   # JSON lines on stdout
//! cargo run --example flow_log -- /tmp/fn-a1.pcap && tcpdump -nn -r /tmp/fn-a1.nat.pcap
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vpcd::observe::{CaptureConfig, FlowLogConfig, FlowLogWriter};
use vpcd::sim::Simulation;

fn main() -> anyhow::Result<()> {
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml");
    let mut sim = Simulation::load(&topology)?;
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
    sim.enable_flow_log(FlowLogConfig {
        window: Duration::from_secs(10),
        epoch,
        ..FlowLogConfig::default()
    });
    let capture = std::env::args_os().nth(1).map(PathBuf::from);
    if let Some(path) = &capture {
        let config = CaptureConfig {
            epoch,
            ..CaptureConfig::default()
        };
        let nat = sim.capture_to_file("tenant-a/fn-a1", path, config)?;
        eprintln!(
            "capturing tenant-a/fn-a1 to {} and {}",
            path.display(),
            nat.display()
        );
    }
    for probe in sim.plan().probes.clone() {
        let r = sim.run_probe(&probe);
        eprintln!("{}: {:?}", r.name, r.observed);
    }
    let mut out = FlowLogWriter::new(std::io::stdout().lock());
    out.write(&sim.flow_records())?;
    out.write(&sim.flush_flow_log())?;
    sim.finish_captures()?;
    Ok(())
}
