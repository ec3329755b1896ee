//! The real dataplane: `vpcd up`'s I/O shell around the sans-IO [`Fabric`].
//!
//! Owns the run (lock and state file, [`state`]), the ports (a TUN device in a namespace per
//! `netns` endpoint, made by [`crate::netns`]; an in-process stack per `sim` endpoint,
//! [`sim_port`]; the public uplink's host sockets, [`uplink_port`]; one slot per port and the one
//! forwarding path, [`forward`]), the tokio runtime and its one loop ([`event_loop`]) that owns
//! the fabric and reads every port, the writer threads (one per core, shared by every TUN
//! port) that do the `write()`s ([`tx`]), and the teardown. It must not reach into the dataplane
//! beyond `handle` / `poll_timeout` / `handle_timeout`.
//!
//! The port set is not fixed: SIGHUP reloads the topology file, and a [`Handle`] (for the HTTP
//! API) applies any validated plan; [`reload`] diffs the ports by endpoint name, makes and
//! removes namespaces and sim ports off the loop, and the loop swaps ports and tables between two
//! batches, so unchanged endpoints keep their devices and keep flowing.
//!
//! Teardown never leaks: every namespace is recorded in the state file before it is created (also
//! by a reload), and a guard removes them all when `up` returns — after SIGINT or SIGTERM, on an
//! error, and while unwinding from a panic. After `kill -9` the state file lists what is left and
//! [`down`] removes it (and anything else carrying the prefix that no live run owns).

pub mod dns_api;
pub mod dns_log;
pub mod dns_upstream;
pub mod event_loop;
pub mod fair;
pub mod forward;
pub mod log_file;
pub mod mailbox;
pub mod observe_api;
pub mod observing;
pub mod reload;
pub mod sim_port;
mod sim_schedule;
pub mod state;
pub mod tx;
pub mod uplink_port;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::dataplane::Fabric;
use crate::netns::{self, NetnsError, WarmPool};
use crate::tables::{PortOwner, Tables};
use crate::time::Instant;
use crate::topology::Plan;
use crate::topology::model::Attach;
use event_loop::{Port, Shell};
pub use observing::{ObserveArgs, ObserveError};
pub use reload::{Applied, ApplyError, Handle};
use sim_port::SimPort;
use state::{RunLock, State, StateError, StateFile};
use uplink_port::UplinkPort;

/// The line `vpcd up` prints once every port serves (scripts and tests wait for it).
pub const READY_LINE: &str =
    "ready: serving; stop with Ctrl-C (SIGINT) or SIGTERM, reload the topology file with SIGHUP";

/// Why `vpcd up` or `vpcd down` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("starting the uplink: {0}")]
    Uplink(#[source] std::io::Error),
}

/// What `vpcd up` made for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpEndpoint {
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub name: String,
    pub attach: Attach,
    /// The namespace (`netns`) or `-` (`sim`).
    pub namespace: String,
    pub device: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u32,
}

/// The namespaces a run made; removes them when dropped (also while unwinding from a panic).
struct Made {
    namespaces: Vec<String>,
    state: Option<StateFile>,
    /// Namespaces made ahead for attaches; removed first at the teardown.
    pool: Option<Arc<WarmPool>>,
}

impl Made {
    fn teardown(&mut self) -> Vec<String> {
        // The pool's namespaces go first (dropping the last handle deletes them).
        drop(self.pool.take());
        let mut removed = Vec::new();
        let mut failed = false;
        for ns in self.namespaces.drain(..).rev() {
            match netns::delete(&ns) {
                Ok(()) => removed.push(ns),
                Err(e) => {
                    failed = true;
                    eprintln!("vpcd: teardown: {e}");
                }
            }
        }
        // Keep the state file if something could not be removed: `vpcd down` retries.
        if let Some(s) = self.state.take()
            && !failed
        {
            s.remove();
        }
        removed
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// How each endpoint is addressed: its segment's prefix and where its default route points.
fn addressing(tables: &Tables, owner: PortOwner, addr: Ipv4Addr) -> (u8, Option<Ipv4Addr>) {
    match owner {
        PortOwner::Instance { vpc, subnet, .. } => tables
            .vpcs
            .get(vpc as usize)
            .and_then(|v| v.subnets.get(subnet as usize))
            .map_or((32, None), |s| (s.cidr.prefix_len(), Some(s.gateway))),
        PortOwner::Host { .. } | PortOwner::Uplink => {
            let cidr = tables.internet.cidr;
            let gw = cidr.gateway();
            (cidr.prefix_len(), (gw != addr).then_some(gw))
        }
        // An in-process endpoint on the VPC's prefix; it answers only packets that reached it.
        PortOwner::Resolver { vpc } => tables
            .vpcs
            .get(vpc as usize)
            .map_or((32, None), |v| (v.cidr.prefix_len(), None)),
    }
}

/// Brings `plan` up, prints the table of endpoints and [`READY_LINE`] to `out`, serves until
/// SIGINT/SIGTERM, then tears everything down. SIGHUP reloads `topology` and applies it live
/// ([`reload`]). `topology` identifies the run (lock). `observe` adds flow logs and captures; its
/// outputs are opened (and its endpoints checked) before anything is created, and everything they
/// hold is written before teardown.
pub fn up(
    plan: &Plan,
    topology: &Path,
    observe: &ObserveArgs,
    options: RunOptions,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    up_with(plan, topology, observe, out, options, |_| {})
}

/// How a run is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// What SIGHUP does.
    pub reload: Reload,
    /// How many namespaces to keep made ahead for `netns` endpoints attached while the run
    /// serves (`--warm-pool`; [`netns::pool`]); 0: none, each attach makes its own.
    pub warm_pool: usize,
}

/// What SIGHUP does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Reload the topology file and apply the difference.
    File,
    /// Nothing but a note on stderr: the API owns the topology (`vpcd up --state DIR`), and a
    /// file applied behind its back would differ from the saved state a restart loads.
    Api,
}

/// [`up`], calling `on_ready` with a [`Handle`] once every port serves, on the runtime's thread
/// inside its context (it may `tokio::spawn` a task that keeps the handle, such as an API server;
/// the task is dropped when the run stops). Changes through the handle and SIGHUP reloads are
/// applied one at a time.
pub fn up_with(
    plan: &Plan,
    topology: &Path,
    observe: &ObserveArgs,
    out: &mut dyn Write,
    options: RunOptions,
    on_ready: impl FnOnce(Handle),
) -> Result<(), RunError> {
    let prefix = netns::prefix_from_env()?;
    let dir = state::run_dir();
    let id = state::run_id(&prefix, topology);
    let lock = RunLock::acquire(&dir, &id)?;
    if lock.state_path.exists() {
        let _ = writeln!(
            out,
            "cleaning up a previous run of this topology that did not stop cleanly"
        );
        clean_state(&lock.state_path, out)?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let _enter = rt.enter();
    // Registered before anything is created, so a signal during setup is not the default action
    // (death without teardown): it is seen by the loop, which then returns at once.
    let mut signals = Vec::new();
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        signals.push(signal(kind).map_err(RunError::Runtime)?);
    }
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Runtime)?;

    let tables = Arc::new(crate::topology::compile::tables(plan));
    let observing = observe.open(&tables)?;
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let query_log = dns_log::QueryLogSwitch::off(epoch);
    if let Some(target) = &observe.dns_query_log {
        // The flag takes a relative path from where `vpcd up` runs.
        let target = match std::path::Path::new(target) {
            p if target == "-" || p.is_absolute() => target.clone(),
            p => std::env::current_dir()
                .map(|d| d.join(p).to_string_lossy().into_owned())
                .unwrap_or_else(|_| target.clone()),
        };
        query_log
            .start(&target)
            .map_err(|e| ObserveError::DnsQueryLog {
                target: target.clone(),
                source: match e {
                    dns_log::QueryLogError::Create { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                },
            })?;
    }
    let pool_prefix = netns::pool::pool_prefix(&prefix, &id);
    // A crashed run of this topology may have left warm namespaces.
    for ns in netns::pool::remove_leftovers(&pool_prefix)? {
        let _ = writeln!(out, "removed {ns} (a previous run's warm pool)");
    }
    let mut made = Made {
        namespaces: Vec::new(),
        state: Some(StateFile::create(&lock.state_path, topology, &prefix)?),
        pool: None,
    };
    let mut views = crate::topology::compile::dns::ViewCache::default();
    let specs = reload::port_specs(plan, &tables, &mut views);
    // The uplink binds its host listeners first: a listener that cannot be bound stops the run
    // before any namespace exists.
    let mut uplink = None;
    for (i, p) in specs.iter().enumerate() {
        if let Some(c) = &p.uplink {
            let port = crate::tables::PortId(i as u32);
            uplink = Some(
                UplinkPort::start(port, (**c).clone(), Instant::ZERO).map_err(RunError::Uplink)?,
            );
        }
    }
    let uplink_line = uplink.as_ref().map(UplinkPort::describe);
    let mut ports: Vec<Option<Port>> = Vec::with_capacity(specs.len());
    let mut endpoints = Vec::new();
    let mut max_mtu = 1500usize;
    for (i, p) in specs.iter().enumerate() {
        max_mtu = max_mtu.max(p.mtu as usize);
        if p.uplink.is_some() {
            // Served by the shell, in this namespace.
            ports.push(uplink.take().map(|u| Port::Uplink(Box::new(u))));
            endpoints.push(UpEndpoint {
                name: p.name.to_string(),
                attach: Attach::Sim,
                namespace: "(this one)".into(),
                device: "(host sockets)".into(),
                addr: p.addr,
                prefix_len: p.prefix_len,
                mtu: p.mtu,
            });
            continue;
        }
        match p.attach {
            Attach::Netns => {
                let ns = netns::namespace_name(&prefix, &p.name);
                if let Some(s) = made.state.as_mut() {
                    s.record(&p.name, &ns)?;
                }
                let dev = netns::create_with_tun(&ns, p.config())?;
                made.namespaces.push(ns.clone());
                let dev = tun_rs::AsyncDevice::new(dev).map_err(RunError::Runtime)?;
                ports.push(Some(Port::Tun(Arc::new(dev))));
                endpoints.push(UpEndpoint {
                    name: p.name.to_string(),
                    attach: Attach::Netns,
                    namespace: ns,
                    device: netns::DEVICE_NAME.to_string(),
                    addr: p.addr,
                    prefix_len: p.prefix_len,
                    mtu: p.mtu,
                });
            }
            Attach::Sim => {
                let sim = SimPort::new(
                    p.name.to_string(),
                    crate::tables::PortId(i as u32),
                    p.sim_addressing(),
                    &p.services,
                    0x7670_6364 ^ i as u64,
                    Instant::ZERO,
                );
                let sim = match (&p.resolver, tables.ports[i].owner) {
                    (Some(view), PortOwner::Resolver { vpc }) => sim.with_resolver(
                        view.0.clone(),
                        dns_upstream::for_resolver(&p.upstreams),
                        query_log.for_vpc(&tables, vpc),
                    ),
                    _ => sim,
                };
                ports.push(Some(Port::Sim(Box::new(sim))));
                endpoints.push(UpEndpoint {
                    name: p.name.to_string(),
                    attach: Attach::Sim,
                    namespace: "-".into(),
                    device: "(in process)".into(),
                    addr: p.addr,
                    prefix_len: p.prefix_len,
                    mtu: p.mtu,
                });
            }
        }
    }
    let _ = write!(out, "{}", render_table(&endpoints));
    if let Some(line) = &uplink_line {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();

    // Guests choose their 5-tuples: key the NAT's and the flow log's hashers unpredictably.
    let random = || {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let writers =
        tx::TxWriters::start(tx::TxWriters::default_count()).map_err(RunError::Runtime)?;
    let mut shell = Shell::new(
        Fabric::with_seed(tables.clone(), random()),
        ports,
        max_mtu,
        &writers,
    )
    .map_err(RunError::Runtime)?;
    if !observe.is_empty() {
        let (obs, sinks) = observing.start(&tables, shell.epoch(), random());
        shell.observe(obs, sinks);
    }
    // Started once every endpoint of the file is up, so it does not slow the start.
    made.pool =
        (options.warm_pool > 0).then(|| Arc::new(WarmPool::start(pool_prefix, options.warm_pool)));
    let (swaps, swap_rx) = mailbox::channel();
    let mut control = reload::Control {
        prefix: prefix.clone(),
        made,
        specs,
        buffer_size: max_mtu + crate::dataplane::MIN_BUFFER,
        writers,
        captured: observe
            .captures
            .iter()
            .filter_map(|a| crate::observe::parse_capture_arg(a).ok().map(|(e, _)| e))
            .collect(),
        swaps,
        seq: 0,
        reload: options.reload,
        clock: shell.started(),
        deleting: Vec::new(),
        views,
        query_log: query_log.clone(),
    };
    let (handle, requests) = reload::Control::channel(control.swaps.clone(), query_log);
    on_ready(handle);
    let (stop_tx, mut stop_rx) = mailbox::channel::<()>();
    rt.block_on(async {
        let control_task = async {
            let stop = async {
                let waits: Vec<_> = signals
                    .iter_mut()
                    .map(|s| Box::pin(async move { s.recv().await }))
                    .collect();
                let _ = futures_select_any(waits).await;
            };
            control
                .serve(topology, &mut hup, stop, requests, &mut *out)
                .await;
            // Closing the channel stops the loop.
            drop(stop_tx);
        };
        let loop_task = shell.run(
            async move {
                let _ = stop_rx.recv().await;
            },
            swap_rx,
        );
        tokio::join!(control_task, loop_task);
    });
    let mut made = control.made;

    let counters = shell.fabric().counters().clone();
    let stats = shell.stats();
    let observed = shell.observed_text();
    let uplink_summary = shell.uplink().map(UplinkPort::summary);
    drop(shell);
    let warm = made.pool.as_ref().map_or(0, |p| p.stats().ready);
    let removed = made.teardown();
    let _ = writeln!(
        out,
        "stopped: removed {} namespace(s){}; {} packet batch(es), mean {:.1} packets; {} dropped by the fabric{}{}{}",
        removed.len(),
        if warm > 0 {
            format!(" and {warm} warm one(s)")
        } else {
            String::new()
        },
        stats.batches,
        if stats.batches == 0 {
            0.0
        } else {
            stats.batched_packets as f64 / stats.batches as f64
        },
        counters.total_drops(),
        drops_text(&counters),
        tx_text(&stats),
        observed
    );
    if let Some(line) = uplink_summary {
        let _ = writeln!(out, "{line}");
    }
    drop(lock);
    Ok(())
}

fn tx_text(s: &event_loop::ShellStats) -> String {
    let mut t = String::new();
    if s.tun_tx_queue_full > 0 {
        t.push_str(&format!(
            "; {} lost at full egress queues",
            s.tun_tx_queue_full
        ));
    }
    if s.tun_tx_errors > 0 {
        t.push_str(&format!("; {} refused by a TUN device", s.tun_tx_errors));
    }
    t
}

/// Completes when any of the futures does.
async fn futures_select_any<F: std::future::Future + Unpin>(mut futures: Vec<F>) {
    std::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn drops_text(c: &crate::dataplane::Counters) -> String {
    let parts: Vec<String> = c
        .nonzero_drops()
        .map(|(r, n)| format!("{}={n}", r.label()))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The table `vpcd up` prints: endpoint, namespace, device, address, MTU.
pub fn render_table(endpoints: &[UpEndpoint]) -> String {
    let mut rows = vec![[
        "endpoint".to_string(),
        "namespace".to_string(),
        "device".to_string(),
        "address".to_string(),
        "mtu".to_string(),
    ]];
    for e in endpoints {
        rows.push([
            e.name.clone(),
            e.namespace.clone(),
            e.device.clone(),
            format!("{}/{}", e.addr, e.prefix_len),
            e.mtu.to_string(),
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut s = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

/// Removes what a (dead) run's state file lists, then the file. The caller holds its lock.
fn clean_state(state_path: &Path, out: &mut dyn Write) -> Result<Vec<String>, RunError> {
    let st = State::read(state_path)?;
    let mut removed = Vec::new();
    for (endpoint, ns) in st.namespaces.iter().rev() {
        if netns::exists(ns) || !netns::pids_in(ns).is_empty() {
            netns::delete(ns)?;
            let _ = writeln!(out, "removed {ns} ({endpoint})");
            removed.push(ns.clone());
        }
    }
    let _ = std::fs::remove_file(state_path);
    Ok(removed)
}

/// What `vpcd down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    pub removed: Vec<String>,
    /// Runs still alive, left alone: `(id, pid)`.
    pub live: Vec<(String, String)>,
}

/// Removes the leftovers of crashed runs: with `topology`, that topology's run (its state file,
/// and the namespaces its endpoints would have); without, every run whose lock is free and every
/// namespace carrying the prefix that no live run lists.
pub fn down(
    topology: Option<(&Path, Option<&Plan>)>,
    out: &mut dyn Write,
) -> Result<DownReport, RunError> {
    let prefix = netns::prefix_from_env()?;
    let dir = state::run_dir();
    let mut report = DownReport::default();
    let mut owned_by_live: Vec<String> = Vec::new();
    let candidates: Vec<(String, std::path::PathBuf)> = match topology {
        Some((path, _)) => {
            let id = state::run_id(&prefix, path);
            let state_path = dir.join(format!("{id}.state"));
            vec![(id, state_path)]
        }
        None => state::runs(&dir),
    };
    for (id, state_path) in candidates {
        match RunLock::acquire(&dir, &id) {
            Ok(_lock) => {
                if state_path.exists() {
                    report.removed.extend(clean_state(&state_path, out)?);
                }
            }
            Err(StateError::Busy { pid, .. }) => {
                if let Ok(st) = State::read(&state_path) {
                    owned_by_live.extend(st.namespaces.into_iter().map(|(_, n)| n));
                }
                report.live.push((id, pid));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if topology.is_some() && !report.live.is_empty() {
        return Ok(report);
    }
    let mut names: Vec<String> = match topology {
        Some((_, Some(plan))) => {
            let tables = crate::topology::compile::tables(plan);
            tables
                .ports
                .iter()
                .filter(|p| p.attach == Attach::Netns)
                .map(|p| netns::namespace_name(&prefix, &p.name))
                .collect()
        }
        Some((_, None)) => Vec::new(),
        None => {
            let start = format!("{prefix}-");
            netns::list()
                .into_iter()
                .filter(|n| n.starts_with(&start))
                .collect()
        }
    };
    // Warm pools: a dead run's go, a live run's stay.
    match topology {
        Some((path, _)) => {
            let pool = netns::pool::pool_prefix(&prefix, &state::run_id(&prefix, path));
            names.extend(netns::list().into_iter().filter(|n| n.starts_with(&pool)));
        }
        None => {
            let live: Vec<String> = report
                .live
                .iter()
                .map(|(id, _)| netns::pool::pool_prefix(&prefix, id))
                .collect();
            names.retain(|n| !live.iter().any(|p| n.starts_with(p)));
        }
    }
    names.retain(|n| !owned_by_live.contains(n) && !report.removed.contains(n));
    for ns in names {
        if netns::exists(&ns) {
            netns::delete(&ns)?;
            let _ = writeln!(out, "removed {ns}");
            report.removed.push(ns);
        }
    }
    Ok(report)
}
