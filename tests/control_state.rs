//! Durable state (issue 6, "durable state"): the effective topology survives a restart, and a
//! crash at any moment of a save leaves a state directory that loads (the old state or the new
//! one, never an error).

use std::path::{Path, PathBuf};

use vpcd::control::change::{AddInstance, AllocateEip, AssociateEip};
use vpcd::control::{ControlState, STATE_FILE, StateError};
use vpcd::topology::model::Attach;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "vpcd-control-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn quickstart() -> ControlState {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml");
    ControlState::from_file(&file).unwrap()
}

fn changed(s: &ControlState) -> ControlState {
    let vpc = s.plan().vpcs[0].name.clone();
    let subnet = s.plan().vpcs[0].subnets[0].name.clone();
    let s = s
        .apply(
            &AddInstance {
                vpc: vpc.clone(),
                name: "fn-new".into(),
                subnet,
                ip: None,
                attach: Attach::Sim,
                security_groups: vec![],
                eip: None,
                mtu: None,
            }
            .into(),
        )
        .unwrap();
    let s = s
        .apply(
            &AllocateEip {
                name: "api-eip".into(),
                address: "203.0.113.99".parse().unwrap(),
                host_bind: None,
                host_listen: Vec::new(),
            }
            .into(),
        )
        .unwrap();
    s.apply(
        &AssociateEip {
            eip: "api-eip".into(),
            vpc,
            instance: Some("fn-new".into()),
            nat_gateway: None,
            allow_reassociation: false,
        }
        .into(),
    )
    .unwrap()
}

#[test]
fn no_state_yet_loads_as_none() {
    let dir = TempDir::new("none");
    assert!(ControlState::load(dir.path()).unwrap().is_none());
    std::fs::create_dir_all(dir.path()).unwrap();
    assert!(ControlState::load(dir.path()).unwrap().is_none());
}

#[test]
fn save_then_load_restores_every_change_and_the_generation() {
    let dir = TempDir::new("roundtrip");
    let s = changed(&quickstart());
    assert_eq!(s.generation(), 3);
    s.save(dir.path()).unwrap();
    let back = ControlState::load(dir.path()).unwrap().unwrap();
    assert_eq!(back.generation(), 3);
    assert_eq!(back.plan(), s.plan());
    assert_eq!(back.export(), s.export());
    // The state file is itself a topology file `vpcd check` accepts.
    let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    assert!(text.starts_with("# vpcd state generation 3\n"));
    assert_eq!(
        &vpcd::topology::parse("state.toml", &text).unwrap(),
        s.plan()
    );
    // Only the state file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
}

#[test]
fn crash_during_a_save_leaves_the_old_or_the_new_state() {
    let dir = TempDir::new("crash");
    let old = quickstart();
    old.save(dir.path()).unwrap();
    let new = changed(&old);
    let new_text = new.state_file_text().unwrap();
    // A crash before the rename leaves a temporary file with any prefix of the new text: the
    // loader ignores it and finds the old state.
    let step = (new_text.len() / 64).max(1);
    for cut in (0..=new_text.len()).step_by(step) {
        let tmp = dir.path().join(format!(".topology.toml.tmp.999.{cut}"));
        std::fs::write(&tmp, &new_text.as_bytes()[..cut]).unwrap();
        let loaded = ControlState::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.plan(), old.plan(), "cut at {cut}");
        assert_eq!(loaded.generation(), 0);
    }
    // The next save removes the leftovers and lands the new state.
    new.save(dir.path()).unwrap();
    let loaded = ControlState::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.plan(), new.plan());
    assert_eq!(loaded.generation(), 3);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_torn_state_file_is_an_error_not_a_panic() {
    // The rename protocol never produces this; a hand edit or a disk fault might. The loader
    // reports it with the file and line like `vpcd check`.
    let dir = TempDir::new("torn");
    let s = quickstart();
    s.save(dir.path()).unwrap();
    let path = dir.path().join(STATE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    for cut in [1, text.len() / 3, text.len() / 2, text.len() - 3] {
        std::fs::write(&path, &text.as_bytes()[..cut]).unwrap();
        match ControlState::load(dir.path()) {
            Ok(Some(_)) | Err(StateError::Invalid(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn saves_replace_the_file_generation_by_generation() {
    let dir = TempDir::new("gens");
    let mut s = quickstart();
    for i in 0..20u32 {
        let next = s
            .apply(
                &AllocateEip {
                    name: format!("e{i}"),
                    address: format!("203.0.113.{}", 100 + i).parse().unwrap(),
                    host_bind: None,
                    host_listen: Vec::new(),
                }
                .into(),
            )
            .unwrap();
        next.save(dir.path()).unwrap();
        s = next;
        let back = ControlState::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.generation(), s.generation());
        assert_eq!(back.plan(), s.plan());
    }
}

#[test]
fn open_seeds_from_the_file_once_then_keeps_the_saved_state() {
    let dir = TempDir::new("open");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml");
    let first = ControlState::open(dir.path(), &file).unwrap();
    assert_eq!(first.generation(), 0);
    assert!(dir.path().join(STATE_FILE).exists());
    let next = changed(&first);
    next.save(dir.path()).unwrap();
    // A restart finds every change; the file does not overwrite them.
    let again = ControlState::open(dir.path(), &file).unwrap();
    assert_eq!(again.plan(), next.plan());
    assert_eq!(again.generation(), next.generation());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(STATE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn control_state_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ControlState>();
    send_sync::<vpcd::control::ChangeError>();
}

// ---------------------------------------------------------------------------------------------
// Issue 20: the journal of acknowledged changes, group commit and compaction.

use vpcd::control::{Change, JOURNAL_FILE, Journal};

/// Sim instances `j0`.. added one change at a time to `s`'s first VPC and subnet.
fn attach(s: &ControlState, i: usize) -> Change {
    AddInstance {
        vpc: s.plan().vpcs[0].name.clone(),
        name: format!("j{i}"),
        subnet: s.plan().vpcs[0].subnets[0].name.clone(),
        ip: None,
        attach: Attach::Sim,
        security_groups: vec![],
        eip: None,
        mtu: None,
    }
    .into()
}

/// `n` changes appended to the journal of a fresh state directory as the API does (apply,
/// append, wait for durable), without compaction: every state along the way.
fn journaled(dir: &Path, n: usize) -> Vec<ControlState> {
    let mut s = quickstart();
    s.save(dir).unwrap();
    let mut journal = Journal::open(dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut states = vec![s.clone()];
    for i in 0..n {
        let c = attach(&s, i);
        s = s.apply(&c).unwrap();
        let t = journal
            .append(s.generation(), std::slice::from_ref(&c))
            .unwrap();
        rt.block_on(journal.durable().wait(t)).unwrap();
        states.push(s.clone());
    }
    states
}

#[test]
fn a_restart_replays_the_journal_over_the_snapshot() {
    let dir = TempDir::new("journal");
    let states = journaled(dir.path(), 12);
    let last = states.last().unwrap();
    let loaded = ControlState::load(dir.path()).unwrap().unwrap();
    assert_eq!(&loaded, last);
    assert_eq!(loaded.export(), last.export());
    // The snapshot was never rewritten: generation 0 on disk, twelve records in the journal.
    let snapshot = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    assert!(snapshot.starts_with("# vpcd state generation 0\n"));
    let journal = std::fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
    assert_eq!(journal.lines().count(), 12);
}

#[test]
fn kill_at_any_byte_of_the_journal_loses_no_whole_record() {
    // A crash (kill -9, power loss) during an append leaves any prefix of the journal's bytes.
    // Every prefix loads: to the state after the records that are whole in it, never an error;
    // reopening cuts the partial record so that the next append starts a line of its own.
    let dir = TempDir::new("journal-cut");
    let states = journaled(dir.path(), 6);
    let path = dir.path().join(JOURNAL_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let ends: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    for cut in 0..=bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let loaded = ControlState::load(dir.path())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"))
            .unwrap();
        assert_eq!(&loaded, &states[whole], "cut at {cut}");
    }
    let cut = ends[2] + 7;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let mut s = ControlState::load(dir.path()).unwrap().unwrap();
    let mut journal = Journal::open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[2] as u64);
    let c = attach(&s, 100);
    s = s.apply(&c).unwrap();
    journal
        .append(s.generation(), std::slice::from_ref(&c))
        .unwrap();
    drop(journal);
    assert_eq!(ControlState::load(dir.path()).unwrap().unwrap(), s);
}

#[test]
fn a_damaged_record_before_valid_ones_is_reported() {
    let dir = TempDir::new("journal-bad");
    journaled(dir.path(), 3);
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    match ControlState::load(dir.path()) {
        Err(e @ StateError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains("line 1 is damaged"), "{text}");
            assert!(text.contains(JOURNAL_FILE), "{text}");
        }
        other => panic!("not reported: {other:?}"),
    }
}

#[test]
fn compaction_writes_the_snapshot_then_empties_the_journal() {
    let dir = TempDir::new("journal-compact");
    let states = journaled(dir.path(), 5);
    let last = states.last().unwrap();
    let journal_path = dir.path().join(JOURNAL_FILE);
    let records = std::fs::read(&journal_path).unwrap();
    let mut journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.records(), 5);
    journal.compact(last).unwrap();
    assert_eq!(std::fs::metadata(&journal_path).unwrap().len(), 0);
    assert_eq!(&ControlState::load(dir.path()).unwrap().unwrap(), last);
    drop(journal);
    // A crash between the two steps: the new snapshot and the old records, which it already
    // holds; they are skipped, not applied twice.
    std::fs::write(&journal_path, &records).unwrap();
    assert_eq!(&ControlState::load(dir.path()).unwrap().unwrap(), last);
}

#[test]
fn concurrent_requests_share_fsyncs() {
    // Group commit: 64 records appended while an fsync runs are covered by the next one, so
    // there are far fewer fsyncs than records, and every ticket still resolves.
    let dir = TempDir::new("journal-group");
    let mut s = quickstart();
    s.save(dir.path()).unwrap();
    let mut changes = Vec::new();
    for i in 0..64 {
        let c = attach(&s, i);
        s = s.apply(&c).unwrap();
        changes.push((s.generation(), c));
    }
    // Appends take microseconds, an fsync of the disk much longer.
    let mut journal = Journal::open(dir.path()).unwrap();
    let tickets: Vec<_> = changes
        .iter()
        .map(|(g, c)| journal.append(*g, std::slice::from_ref(c)).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let durable = journal.durable();
    rt.block_on(async {
        let waits = tickets.into_iter().map(|t| durable.clone().wait(t));
        for r in futures_wait_all(waits).await {
            r.unwrap();
        }
    });
    let fsyncs = journal.fsyncs();
    assert!((1..64).contains(&fsyncs), "{fsyncs} fsyncs for 64 records");
    drop(journal);
    assert_eq!(ControlState::load(dir.path()).unwrap().unwrap(), s);
}

/// Awaits every future in order (they make progress together: the fsync thread serves all).
async fn futures_wait_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}

#[test]
fn a_journal_without_its_snapshot_is_not_replayed_onto_the_file() {
    let dir = TempDir::new("journal-orphan");
    journaled(dir.path(), 3);
    std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml");
    let s = ControlState::open(dir.path(), &file).unwrap();
    assert_eq!(s.generation(), 0);
    assert!(!dir.path().join(JOURNAL_FILE).exists());
}
