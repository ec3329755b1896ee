//! Live reconfiguration of a running `vpcd up`: a new [`Plan`] replaces the running one without
//! restarting the ports it does not change.
//!
//! The control task ([`Control`]) runs on the runtime's thread next to the loop. For each change it
//! diffs the running ports against the new plan's by endpoint name (`VPC/INSTANCE`,
//! `internet/HOST`): an endpoint whose name, attachment, address, prefix, gateway, MTU and
//! services are the same is *kept* (its TUN fd, writer thread or sim stack move to its new port
//! id: ids follow plan order and shift when instances come and go); one with the same name and
//! another configuration is *replaced*; the rest are *added* or *removed*. A VPC's resolver
//! whose names or zones alone changed is kept and takes its new view in place after the swap
//! (its cache, TCP connections, forwarded queries and counters stay), before the change is
//! answered. Then:
//!
//! 1. replaced `netns` endpoints are detached from the loop and their namespaces deleted (the
//!    name is reused);
//! 2. the namespaces of added and replaced `netns` endpoints are recorded in the state file and
//!    created, with their TUN devices and writer threads — on a blocking thread, so the loop keeps
//!    forwarding meanwhile;
//! 3. one [`Swap`] hands the new port vector and the compiled tables to the loop, which applies it
//!    between two batches (`Fabric::swap_tables`, then the observer's `set_tables`): kept ports
//!    never stop, NAT and security-group state follow the tables;
//! 4. the namespaces of removed endpoints are deleted (their devices were closed by the swap) on
//!    a blocking thread, without waiting: they stay in the teardown list (and the state file)
//!    until deleted, an attach of the same name waits for its deletion, and a stop for all.
//!
//! The public uplink (`internet/uplink`) is an endpoint like the others: kept (with its flows and
//! listeners) while its configuration — address, MTU, `host_bind`s, host listeners — is the same;
//! otherwise detached in step 1 (closing its listeners) and started again in step 2 from the new
//! plan, so that the new listeners can bind the same addresses.
//!
//! A change that fails before step 3 leaves the running plan in force (what step 2 made is
//! removed again); replaced endpoints detached by step 1 stay detached until the next change.
//! Refused outright: an MTU larger than the loop's buffers (a restart), and a change that would
//! move or remove an endpoint under `--capture` (a capture follows a port id).

use std::collections::{HashMap, HashSet};

use foldhash::fast::FixedState;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use super::event_loop::{LoopMsg, Shell, SimSpec, Slot, Swap};
use super::forward::TunPort;
use super::mailbox::{self, Receiver, Sender};
use super::state::{StateError, StateFile};
use super::uplink_port::UplinkPort;
use super::{Made, addressing};
use crate::dataplane::MIN_BUFFER;
use crate::netns::{self, NetnsError, PortConfig};
use crate::tables::{PortId, PortOwner, Tables};
use crate::topology::Plan;
use crate::topology::model::{Attach, Service};
use crate::uplink::UplinkConfig;

/// Plans with more ports than this are compiled off the loop's thread ([`Control::apply`]).
pub const OFFLOAD_PORTS: usize = 1000;

/// What one port of a plan is, as far as the runtime is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PortSpec {
    pub name: Arc<str>,
    pub attach: Attach,
    pub addr: Ipv4Addr,
    /// An internet host's secondary addresses.
    pub secondary: Vec<Ipv4Addr>,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    /// What a sim internet host serves.
    pub services: Vec<Service>,
    /// The uplink's configuration (seed 0), for the uplink's port only (boxed: every change
    /// makes a spec per port, and this would more than double each one's size).
    pub uplink: Option<Box<UplinkConfig>>,
    /// What a VPC's resolver answers, for resolver ports only: a change of names or zones
    /// alone is applied to the running resolver ([`PortSpec::new_view`]).
    pub resolver: Option<ViewRef>,
    /// An instance's `resolv.conf` (its VPC's resolver and domain).
    pub resolv_conf: Option<String>,
    /// Where a resolver forwards the names it does not hold (resolver ports only).
    pub upstreams: Vec<std::net::SocketAddr>,
}

/// A resolver's view in a [`PortSpec`], compared by identity rather than content: comparing
/// two views by content walks every name (30,000 at 10,000 instances) on every change. The
/// view cache hands an unchanged view back as the same `Arc`; a new `Arc` with the same names
/// only makes the running resolver take it in place ([`PortSpec::new_view`]), which changes
/// no answer.
#[derive(Debug, Clone)]
pub(super) struct ViewRef(pub Arc<crate::dns::View>);

impl PartialEq for ViewRef {
    fn eq(&self, other: &ViewRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ViewRef {}

impl PortSpec {
    pub fn config(&self) -> PortConfig {
        PortConfig {
            addr: self.addr,
            secondary: self.secondary.clone(),
            prefix_len: self.prefix_len,
            gateway: self.gateway,
            mtu: self.mtu,
            resolv_conf: self.resolv_conf.clone(),
        }
    }

    /// `other`'s view when `other` is this resolver port with other names or zones and nothing
    /// else changed: the running resolver takes the new view in place (keeping its cache,
    /// connections and counters) instead of being made again.
    pub fn new_view(&self, other: &PortSpec) -> Option<Arc<crate::dns::View>> {
        let (Some(old), Some(view)) = (&self.resolver, &other.resolver) else {
            return None;
        };
        if old == view {
            return None;
        }
        let bare = |p: &PortSpec| PortSpec {
            resolver: None,
            ..p.clone()
        };
        (bare(self) == bare(other)).then(|| view.0.clone())
    }

    /// The sim stack's addressing (a host without a gateway uses the next address).
    pub fn sim_addressing(&self) -> super::sim_port::SimAddressing {
        super::sim_port::SimAddressing {
            ip: self.addr,
            secondary: self.secondary.clone(),
            prefix_len: self.prefix_len,
            gateway: self
                .gateway
                .unwrap_or_else(|| Ipv4Addr::from(u32::from(self.addr).wrapping_add(1))),
            mtu: self.mtu as usize,
        }
    }
}

/// The ports of `plan` compiled into `tables`, in port-id order.
/// The resolvers' views come from `views`, which keeps them for the next change (an attach
/// patches its instance's names into the previous view instead of building all of them again).
pub(super) fn port_specs(
    plan: &Plan,
    tables: &Tables,
    views: &mut crate::topology::compile::dns::ViewCache,
) -> Vec<PortSpec> {
    let upstreams = plan.internet.uplink.as_ref().map_or_else(Vec::new, |u| {
        super::dns_upstream::upstream_addresses(&u.resolvers)
    });
    let mut views: Vec<Option<Arc<crate::dns::View>>> =
        views.views(plan).into_iter().map(Some).collect();
    // Once per VPC, not per instance (parsing and printing the domain grows with the ports).
    let resolv_confs: Vec<String> = tables
        .vpcs
        .iter()
        .map(|v| {
            let search = crate::dns::names::vpc_domain(&v.name).map_or_else(
                || crate::dns::names::INTERNAL_DOMAIN.to_string(),
                |d| d.to_string().trim_end_matches('.').to_string(),
            );
            netns::resolv_conf(v.resolver.addr, &search)
        })
        .collect();
    tables
        .ports
        .iter()
        .map(|p| {
            let (prefix_len, gateway) = addressing(tables, p.owner, p.addr);
            let host = match p.owner {
                PortOwner::Host { host } => plan.internet.hosts.get(host as usize),
                _ => None,
            };
            let services = match (p.attach, host) {
                (Attach::Sim, Some(h)) => h.serve.clone(),
                _ => Vec::new(),
            };
            PortSpec {
                name: p.name.clone(),
                attach: p.attach,
                addr: p.addr,
                secondary: host.map(|h| h.secondary.clone()).unwrap_or_default(),
                prefix_len,
                gateway,
                mtu: p.mtu,
                services,
                uplink: match p.owner {
                    PortOwner::Uplink => super::uplink_port::config(plan, tables).map(Box::new),
                    _ => None,
                },
                upstreams: match p.owner {
                    PortOwner::Resolver { .. } => upstreams.clone(),
                    _ => Vec::new(),
                },
                // Only a namespace has a resolv.conf (sim ports ask their resolver directly).
                resolv_conf: match (p.owner, p.attach) {
                    (PortOwner::Host { .. }, Attach::Netns) => {
                        Some(internet_resolv_conf(&upstreams))
                    }
                    (PortOwner::Instance { vpc, .. }, Attach::Netns) => {
                        resolv_confs.get(vpc as usize).cloned()
                    }
                    _ => None,
                },
                resolver: match p.owner {
                    PortOwner::Resolver { vpc } => views
                        .get_mut(vpc as usize)
                        .and_then(Option::take)
                        .map(ViewRef),
                    _ => None,
                },
            }
        })
        .collect()
}

/// An internet host's `resolv.conf`. The public segment has no DNS server of its own (a VPC's
/// resolver answers only that VPC's instances, as Route 53 Resolver does), so a host asks the
/// upstream resolvers the VPC resolvers forward to (`[internet] resolvers`, reached through the
/// uplink like any public destination), those a `resolv.conf` can name: port 53, not loopback
/// (the host's loopback is not the namespace's). With none, it names none: a lookup fails at once
/// (nothing listens on the namespace's own 127.0.0.1) instead of waiting for the host's
/// resolvers, which the namespace cannot reach.
fn internet_resolv_conf(upstreams: &[std::net::SocketAddr]) -> String {
    let usable: Vec<std::net::IpAddr> = upstreams
        .iter()
        .filter(|a| a.port() == 53 && !a.ip().is_loopback())
        .map(|a| a.ip())
        .take(3)
        .collect();
    if usable.is_empty() {
        return "# Written by vpcd: an internet host has no resolver (the simulated public segment \
                has no DNS server and no [internet] resolvers are reachable); lookups fail at \
                once. Removed with the namespace.\nnameserver 127.0.0.1\noptions timeout:1 \
                attempts:1\n"
            .to_string();
    }
    let mut out = String::from(
        "# Written by vpcd: the upstream resolvers of [internet] resolvers, through the uplink; \
         removed with the namespace.\n",
    );
    for ip in usable {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    out.push_str("options timeout:1 attempts:2\n");
    out
}

/// What a change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, another configuration: removed and made again.
    pub replaced: Vec<String>,
    pub unchanged: usize,
    /// Kept endpoints whose port id moved.
    pub renumbered: usize,
    /// What the fabric could not reconcile (`GATEWAY: error`), for instance a DNAT port held by a
    /// live SNAT mapping. The rest of the change is in force.
    pub problems: Vec<String>,
}

impl Applied {
    /// One line: `+N (names) -N (names) ~N (names), N unchanged[, N renumbered][, N problem(s)]`.
    pub fn summary(&self) -> String {
        let list = |sign: &str, v: &[String]| {
            if v.is_empty() {
                format!("{sign}0")
            } else {
                format!("{sign}{} ({})", v.len(), v.join(", "))
            }
        };
        let mut s = format!(
            "{} {} {}, {} unchanged",
            list("+", &self.added),
            list("-", &self.removed),
            list("~", &self.replaced),
            self.unchanged
        );
        if self.renumbered > 0 {
            s.push_str(&format!(", {} renumbered", self.renumbered));
        }
        if !self.problems.is_empty() {
            s.push_str(&format!(", {} problem(s)", self.problems.len()));
        }
        s
    }
}

/// Why a change was not applied. The running plan stays in force, except where noted.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the run is stopping")]
    Stopped,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(super) struct Request {
    plan: Arc<Plan>,
    reply: Sender<Result<Applied, ApplyError>>,
}

/// A handle to a running `vpcd up`, for the control plane (the HTTP API): [`Handle::apply`]
/// replaces the running plan with a validated one, exactly as SIGHUP does with the topology file.
/// Changes are applied one at a time, in the order they arrive. Clone it freely; it may be used
/// from any task or thread.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Request>,
    loop_tx: Sender<LoopMsg>,
    /// The run's DNS query log (started and stopped by the API).
    query_log: super::dns_log::QueryLogSwitch,
}

impl Handle {
    /// Applies `plan` (already validated: `topology::load`, or the control core's `Plan`) to the
    /// running network and returns what changed. On `Err` the previous plan stays in force (see
    /// the module doc for the one exception). Resolves with [`ApplyError::Stopped`] once the run
    /// is stopping.
    pub async fn apply(&self, plan: Arc<Plan>) -> Result<Applied, ApplyError> {
        let (reply, mut rx) = mailbox::channel();
        self.tx
            .send(Request { plan, reply })
            .map_err(|_| ApplyError::Stopped)?;
        rx.recv().await.unwrap_or(Err(ApplyError::Stopped))
    }

    /// A handle that reaches only the loop fed by `loop_tx` (queries; [`Handle::apply`] answers
    /// [`ApplyError::Stopped`]): for a [`Shell`] run without a control task, as in tests.
    pub fn for_loop(loop_tx: Sender<LoopMsg>) -> Handle {
        let (tx, _) = mailbox::channel();
        Handle {
            tx,
            loop_tx,
            query_log: super::dns_log::QueryLogSwitch::off(std::time::Duration::ZERO),
        }
    }

    /// The run's DNS query log: every VPC resolver writes to it while it is on.
    pub fn query_log(&self) -> &super::dns_log::QueryLogSwitch {
        &self.query_log
    }

    /// Runs `f` on the loop between two wake-ups and returns its result: how the control plane
    /// reads counters and connections, flushes connections and switches observation. `f` holds
    /// the loop for as long as it runs, so it must be short (no I/O, no waiting). Resolves with
    /// [`ApplyError::Stopped`] once the loop has stopped.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Shell) -> R + Send + 'static,
    ) -> Result<R, ApplyError> {
        let (reply, mut rx) = mailbox::channel();
        let q: super::event_loop::Query = Box::new(move |shell: &mut Shell| {
            let _ = reply.send(f(shell));
        });
        self.loop_tx
            .send(LoopMsg::Query(q))
            .map_err(|_| ApplyError::Stopped)?;
        rx.recv().await.ok_or(ApplyError::Stopped)
    }
}

/// The control side of a run: what it made, and the running plan's ports.
pub(super) struct Control {
    pub prefix: String,
    pub made: Made,
    pub specs: Vec<PortSpec>,
    /// The loop's buffer size (largest packet plus room).
    pub buffer_size: usize,
    /// The writer threads every TUN port's egress is served by.
    pub writers: super::tx::TxWriters,
    /// Endpoints under `--capture`.
    pub captured: Vec<String>,
    pub swaps: Sender<LoopMsg>,
    pub seq: u64,
    /// What SIGHUP does.
    pub reload: super::Reload,
    /// The loop's clock: the std reading of its `Instant::ZERO`.
    pub clock: std::time::Instant,
    /// Namespaces of removed endpoints being deleted in the background (a detach does not wait
    /// for it); they stay in `made` until deleted, so teardown and `vpcd down` still find them.
    pub deleting: Vec<Deletion>,
    /// The resolvers' views of the last change, patched by the next ([`port_specs`]).
    pub views: crate::topology::compile::dns::ViewCache,
    /// The query log every resolver writes to while it is on (new resolvers too).
    pub query_log: super::dns_log::QueryLogSwitch,
}

/// A background removal of namespaces: their names and the blocking task deleting them.
pub(super) type Deletion = (Vec<String>, tokio::task::JoinHandle<Deleted>);

/// Each namespace a deletion task was given, with its result.
pub(super) type Deleted = Vec<(String, Result<(), NetnsError>)>;

/// A new namespace with its TUN device (not yet handed to the loop).
struct MadeNs {
    index: usize,
    namespace: String,
    device: tun_rs::SyncDevice,
}

impl Control {
    /// A handle and the receiving end [`Control::serve`] takes; `loop_tx` reaches the loop
    /// (for [`Handle::query`]); `query_log` is the run's (the one the resolvers write to).
    pub fn channel(
        loop_tx: Sender<LoopMsg>,
        query_log: super::dns_log::QueryLogSwitch,
    ) -> (Handle, Receiver<Request>) {
        let (tx, rx) = mailbox::channel();
        (
            Handle {
                tx,
                loop_tx,
                query_log,
            },
            rx,
        )
    }

    /// Serves until `stop` completes: SIGHUP reloads `topology` (printing a one-line summary to
    /// `out`, or the diagnostics to stderr and keeping the running plan), requests from
    /// [`Handle`]s are applied.
    pub async fn serve(
        &mut self,
        topology: &Path,
        hup: &mut tokio::signal::unix::Signal,
        stop: impl std::future::Future<Output = ()>,
        mut requests: Receiver<Request>,
        out: &mut dyn Write,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut requests_open = true;
        loop {
            tokio::select! {
                biased;
                () = &mut stop => {
                    self.settle_all_deletions().await;
                    return;
                }
                _ = hup.recv() => match self.reload {
                    super::Reload::File => self.reload(topology, out).await,
                    super::Reload::Api => eprintln!(
                        "vpcd up: SIGHUP ignored: with --state the API owns the topology (a \
                         reloaded file would differ from the saved state); change it with \
                         `vpcd ctl`, or stop and start `vpcd up` to begin again from a file"
                    ),
                },
                r = requests.recv(), if requests_open => match r {
                    Some(r) => {
                        let result = self.apply(r.plan).await;
                        let _ = r.reply.send(result);
                    }
                    None => requests_open = false,
                },
            }
        }
    }

    async fn reload(&mut self, topology: &Path, out: &mut dyn Write) {
        let file = topology.display();
        let plan = match crate::topology::load(topology) {
            Ok(p) => p,
            Err(e) => {
                eprintln!(
                    "vpcd up: SIGHUP: {file} is not valid; still running the previous topology:"
                );
                let text = e.to_string();
                eprint!("{text}");
                if !text.ends_with('\n') {
                    eprintln!();
                }
                return;
            }
        };
        match self.apply(Arc::new(plan)).await {
            Ok(a) => {
                let _ = writeln!(out, "reloaded {file}: {}", a.summary());
                let _ = out.flush();
                for p in &a.problems {
                    eprintln!("vpcd up: reload: {p}");
                }
            }
            Err(e) => {
                eprintln!("vpcd up: SIGHUP: not applied ({e}); still running the previous topology")
            }
        }
    }

    /// Applies `plan`; see the module doc.
    ///
    /// A plan of more than [`OFFLOAD_PORTS`] ports is compiled on a blocking thread (the other
    /// core), so that the loop keeps forwarding and the API keeps reading requests meanwhile
    /// (compiling grows with the ports); a smaller one inline, where the hop to another thread
    /// would cost more than the compile.
    pub async fn apply(&mut self, plan: Arc<Plan>) -> Result<Applied, ApplyError> {
        let ports =
            plan.vpcs.iter().map(|v| v.instances.len()).sum::<usize>() + plan.internet.hosts.len();
        let mut views = std::mem::take(&mut self.views);
        let compile = move || {
            let tables = Arc::new(crate::topology::compile::tables(&plan));
            let specs = port_specs(&plan, &tables, &mut views);
            (tables, specs, views)
        };
        let (tables, new, views) = if ports > OFFLOAD_PORTS {
            tokio::task::spawn_blocking(compile)
                .await
                .map_err(|e| ApplyError::Io(std::io::Error::other(e)))?
        } else {
            compile()
        };
        self.views = views;
        let max_mtu = self.buffer_size.saturating_sub(MIN_BUFFER);
        if let Some(p) = new.iter().find(|p| p.mtu as usize > max_mtu) {
            return Err(ApplyError::Refused(format!(
                "{} has MTU {}, above the {max_mtu} this run's buffers were sized for; restart \
                 `vpcd up` for it",
                p.name, p.mtu
            )));
        }
        // Classify: for each new port, the old one it keeps (same spec) or replaces (same name).
        // By name through maps: a scan per port made every change quadratic in the ports.
        let old_by_name: HashMap<&str, usize, FixedState> = self
            .specs
            .iter()
            .enumerate()
            .map(|(i, o)| (&*o.name, i))
            .collect();
        let new_names: HashSet<&str, FixedState> = new.iter().map(|p| &*p.name).collect();
        let old_index = |name: &str| old_by_name.get(name).copied();
        let mut applied = Applied::default();
        let mut keep: Vec<Option<usize>> = Vec::with_capacity(new.len());
        let mut replaced_old: Vec<usize> = Vec::new();
        // Kept resolvers whose names or zones changed: their new view, by new port id.
        let mut views: Vec<(usize, Arc<crate::dns::View>)> = Vec::new();
        for (j, p) in new.iter().enumerate() {
            match old_index(&p.name) {
                Some(i) if self.specs[i] == *p || self.specs[i].new_view(p).is_some() => {
                    views.extend(self.specs[i].new_view(p).map(|v| (j, v)));
                    keep.push(Some(i));
                    applied.unchanged += 1;
                    if i != j {
                        applied.renumbered += 1;
                    }
                }
                Some(i) => {
                    keep.push(None);
                    replaced_old.push(i);
                    applied.replaced.push(p.name.to_string());
                }
                None => {
                    keep.push(None);
                    applied.added.push(p.name.to_string());
                }
            }
        }
        let removed_old: Vec<usize> = (0..self.specs.len())
            .filter(|&i| !new_names.contains(&*self.specs[i].name))
            .collect();
        applied.removed = removed_old
            .iter()
            .map(|&i| self.specs[i].name.to_string())
            .collect();
        for c in &self.captured {
            let before = old_index(c);
            let after = new.iter().position(|p| *p.name == **c);
            let kept = after.is_some_and(|j| keep[j].is_some());
            if before != after || !kept {
                return Err(ApplyError::Refused(format!(
                    "--capture {c}: the change would move or remove the captured endpoint (a \
                     capture follows a port id); restart `vpcd up` for it"
                )));
            }
        }
        let fresh: Vec<String> = new
            .iter()
            .enumerate()
            .filter(|(j, p)| {
                p.attach == Attach::Netns && keep[*j].is_none() && old_index(&p.name).is_none()
            })
            .map(|(_, p)| netns::namespace_name(&self.prefix, &p.name))
            .collect();
        // A name detached a moment ago may still be being deleted: wait for that first.
        self.settle_deletions(&fresh).await;
        if let Some(ns) = fresh.into_iter().find(|ns| netns::exists(ns)) {
            return Err(NetnsError::Exists(ns).into());
        }

        // 1. Detach replaced namespaces, so that their names are free.
        let detach: Vec<usize> = replaced_old
            .iter()
            .copied()
            .filter(|&i| self.specs[i].attach == Attach::Netns || self.specs[i].uplink.is_some())
            .collect();
        if !detach.is_empty() {
            let slots = (0..self.specs.len())
                .map(|i| {
                    if detach.contains(&i) {
                        Slot::Empty
                    } else {
                        Slot::Keep(PortId(i as u32))
                    }
                })
                .collect();
            self.swap(slots, None).await?;
            let names: Vec<String> = detach
                .iter()
                .filter(|&&i| self.specs[i].attach == Attach::Netns)
                .map(|&i| netns::namespace_name(&self.prefix, &self.specs[i].name))
                .collect();
            self.delete(names).await;
        }

        // 2. Record and create the new namespaces, off the loop's thread.
        let todo: Vec<(usize, String, String, PortConfig)> = new
            .iter()
            .enumerate()
            .filter(|(j, p)| p.attach == Attach::Netns && keep[*j].is_none())
            .map(|(j, p)| {
                (
                    j,
                    p.name.to_string(),
                    netns::namespace_name(&self.prefix, &p.name),
                    p.config(),
                )
            })
            .collect();
        let state = self.made.state.take();
        let pool = self.made.pool.clone();
        let (state, created, error) =
            tokio::task::spawn_blocking(move || create_all(state, pool.as_deref(), todo))
                .await
                .map_err(|e| ApplyError::Io(std::io::Error::other(e)))?;
        self.made.state = state;
        let created_names: Vec<String> = created.iter().map(|m| m.namespace.clone()).collect();
        self.made.namespaces.extend(created_names.iter().cloned());
        if let Some(e) = error {
            drop(created);
            self.delete(created_names).await;
            return Err(e);
        }

        // 3. One swap: the new port vector and the tables.
        let mut devices: Vec<Option<tun_rs::SyncDevice>> = (0..new.len()).map(|_| None).collect();
        for m in created {
            if let Some(d) = devices.get_mut(m.index) {
                *d = Some(m.device);
            }
        }
        let mut slots = Vec::with_capacity(new.len());
        let mut failed = None;
        for (j, p) in new.iter().enumerate() {
            if let Some(i) = keep[j] {
                slots.push(Slot::Keep(PortId(i as u32)));
                continue;
            }
            if let Some(config) = &p.uplink {
                match self.start_uplink(PortId(j as u32), config).await {
                    Ok(u) => slots.push(Slot::NewUplink(Box::new(u))),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
                continue;
            }
            match p.attach {
                Attach::Netns => {
                    let Some(dev) = devices[j].take() else {
                        slots.push(Slot::Empty);
                        continue;
                    };
                    match tun_rs::AsyncDevice::new(dev)
                        .map(|d| TunPort::new(Arc::new(d), &self.writers))
                    {
                        Ok(t) => slots.push(Slot::NewTun(Box::new(t))),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                Attach::Sim => {
                    self.seq += 1;
                    slots.push(Slot::NewSim(Box::new(SimSpec {
                        name: p.name.to_string(),
                        addressing: p.sim_addressing(),
                        services: p.services.clone(),
                        resolver: p.resolver.as_ref().map(|v| v.0.clone()),
                        upstreams: p.upstreams.clone(),
                        query_log: match tables.ports.get(j).map(|i| i.owner) {
                            Some(PortOwner::Resolver { vpc }) => {
                                self.query_log.for_vpc(&tables, vpc)
                            }
                            _ => None,
                        },
                        seed: 0x7670_6364 ^ (self.seq << 20) ^ j as u64,
                    })));
                }
            }
        }
        if let Some(e) = failed {
            drop(slots);
            drop(devices);
            self.delete(created_names).await;
            return Err(e.into());
        }
        let problems = self.swap(slots, Some(tables.clone())).await?;
        self.set_views(views, &tables).await?;
        applied.problems = problems
            .iter()
            .map(|p| format!("{}: {}", p.gateway, p.error))
            .collect();

        // 4. Remove what the change removed (the loop has closed their devices), in the
        // background: the change is in force already.
        let gone: Vec<String> = removed_old
            .iter()
            .filter(|&&i| self.specs[i].attach == Attach::Netns)
            .map(|&i| netns::namespace_name(&self.prefix, &self.specs[i].name))
            .collect();
        self.delete_in_background(gone);
        self.specs = new;
        Ok(applied)
    }

    /// Starts an uplink for a change. Its listeners may want the addresses of the uplink step 1
    /// just detached, whose listener tasks close when the runtime next runs them: an address
    /// still in use is retried for a moment.
    async fn start_uplink(
        &self,
        port: PortId,
        config: &UplinkConfig,
    ) -> Result<UplinkPort, std::io::Error> {
        let mut tries = 0;
        loop {
            let now = crate::time::Instant::from_micros(
                u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX),
            );
            match UplinkPort::start(port, config.clone(), now) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                r => return r,
            }
        }
    }

    /// Gives kept resolvers (by port id in `tables`, the tables just swapped in) their new views
    /// and query logs, and waits until the loop has: the change is answered only after its
    /// names answer.
    async fn set_views(
        &mut self,
        views: Vec<(usize, Arc<crate::dns::View>)>,
        tables: &Arc<Tables>,
    ) -> Result<(), ApplyError> {
        if views.is_empty() {
            return Ok(());
        }
        let updates: Vec<(
            usize,
            Arc<crate::dns::View>,
            Option<crate::sim::resolver::QueryLog>,
        )> = views
            .into_iter()
            .filter_map(|(j, view)| match tables.ports.get(j)?.owner {
                PortOwner::Resolver { vpc } => {
                    Some((vpc as usize, view, self.query_log.for_vpc(tables, vpc)))
                }
                _ => None,
            })
            .collect();
        let (done, mut rx) = mailbox::channel();
        let q: super::event_loop::Query = Box::new(move |shell: &mut Shell| {
            let replaced: Vec<_> = updates
                .into_iter()
                .filter_map(|(vpc, view, log)| shell.resolver_mut(vpc)?.set_dns_view(view, log))
                .collect();
            let _ = done.send(replaced);
        });
        self.swaps
            .send(LoopMsg::Query(q))
            .map_err(|_| ApplyError::Stopped)?;
        let replaced = rx.recv().await.ok_or(ApplyError::Stopped)?;
        // The old logs may hold the last reference to the previous tables.
        drop(tokio::task::spawn_blocking(move || drop(replaced)));
        Ok(())
    }

    /// Hands `slots` (and `tables`) to the loop and waits until it has applied them.
    async fn swap(
        &mut self,
        slots: Vec<Slot>,
        tables: Option<Arc<Tables>>,
    ) -> Result<Vec<crate::dataplane::gateways::ReconcileProblem>, ApplyError> {
        let (done, mut rx) = mailbox::channel();
        self.swaps
            .send(LoopMsg::Swap(Swap {
                slots,
                tables,
                done,
            }))
            .map_err(|_| ApplyError::Stopped)?;
        rx.recv().await.ok_or(ApplyError::Stopped)
    }

    /// Deletes namespaces on a blocking thread and waits; those that could not be removed stay
    /// in the teardown list (and the state file) for teardown or `vpcd down` to retry.
    async fn delete(&mut self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let result = tokio::task::spawn_blocking(move || delete_all(names)).await;
        self.deleted(result);
    }

    /// [`Control::delete`] without waiting: the task is collected by
    /// [`Control::settle_deletions`].
    fn delete_in_background(&mut self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let task_names = names.clone();
        let task = tokio::task::spawn_blocking(move || delete_all(task_names));
        self.deleting.push((names, task));
    }

    /// Collects the background deletions that are done, and waits for those deleting one of
    /// `names` (about to be made again).
    pub(super) async fn settle_deletions(&mut self, names: &[String]) {
        self.settle(|deleting| deleting.iter().any(|n| names.contains(n)))
            .await;
    }

    /// Waits for every background deletion (the run stops: teardown comes next).
    pub(super) async fn settle_all_deletions(&mut self) {
        self.settle(|_| true).await;
    }

    async fn settle(&mut self, wait: impl Fn(&[String]) -> bool) {
        let mut i = 0;
        while i < self.deleting.len() {
            let (names, task) = &self.deleting[i];
            if !task.is_finished() && !wait(names) {
                i += 1;
                continue;
            }
            let (_, task) = self.deleting.swap_remove(i);
            let result = task.await;
            self.deleted(result);
        }
    }

    /// Records what a deletion task removed.
    fn deleted(&mut self, result: Result<Deleted, tokio::task::JoinError>) {
        let Ok(results) = result else {
            eprintln!("vpcd up: reload: the namespace removal thread failed; teardown retries");
            return;
        };
        for (n, r) in results {
            match r {
                Ok(()) => self.made.namespaces.retain(|m| *m != n),
                Err(e) => eprintln!("vpcd up: reload: {e}"),
            }
        }
    }
}

/// Deletes each namespace (blocking), with its result.
fn delete_all(names: Vec<String>) -> Deleted {
    names
        .into_iter()
        .map(|n| {
            let r = netns::delete(&n);
            (n, r)
        })
        .collect()
}

/// Records each namespace in the state file, then takes it from the warm pool or creates it
/// with its TUN device, several at once (each waits mostly for the kernel); on an error, returns
/// the first one with everything that was made (the caller deletes it).
fn create_all(
    mut state: Option<StateFile>,
    pool: Option<&netns::WarmPool>,
    todo: Vec<(usize, String, String, PortConfig)>,
) -> (Option<StateFile>, Vec<MadeNs>, Option<ApplyError>) {
    /// Namespaces made at once: the kernel serialises much of it (rtnl), so a few suffice.
    const AT_ONCE: usize = 4;
    if let Some(s) = state.as_mut() {
        for (_, endpoint, namespace, _) in &todo {
            if let Err(e) = s.record(endpoint, namespace) {
                return (state, Vec::new(), Some(e.into()));
            }
        }
    }
    let make = |(index, _, namespace, config): (usize, String, String, PortConfig)| {
        let device = pool
            .and_then(|p| p.take(&namespace, &config))
            .unwrap_or_else(|| netns::create_with_tun(&namespace, config));
        device.map(|device| MadeNs {
            index,
            namespace,
            device,
        })
    };
    let results: Vec<Result<MadeNs, NetnsError>> = netns::on_threads(todo, AT_ONCE, make);
    let mut made = Vec::with_capacity(results.len());
    let mut error = None;
    for r in results {
        match r {
            Ok(m) => made.push(m),
            Err(e) => {
                error.get_or_insert(ApplyError::from(e));
            }
        }
    }
    (state, made, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_move_to_any_task_or_thread() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Handle>();
        send_sync::<Applied>();
    }

    #[test]
    fn a_resolver_whose_names_alone_changed_takes_them_in_place() {
        let view = |name: &str| {
            let mut b = crate::dns::ViewBuilder::new();
            b.private_zone(crate::dns::names::parse_domain(name).expect("name"));
            ViewRef(Arc::new(b.build()))
        };
        let spec = PortSpec {
            name: "v#resolver".into(),
            attach: Attach::Sim,
            addr: Ipv4Addr::new(10, 0, 0, 2),
            secondary: Vec::new(),
            prefix_len: 16,
            gateway: None,
            mtu: 1500,
            services: Vec::new(),
            uplink: None,
            resolver: Some(view("a.example")),
            resolv_conf: None,
            upstreams: Vec::new(),
        };
        let renamed = PortSpec {
            resolver: Some(view("b.example")),
            ..spec.clone()
        };
        assert!(spec.new_view(&renamed).is_some_and(|v| {
            renamed
                .resolver
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(&r.0, &v))
        }));
        assert!(spec.new_view(&spec).is_none(), "nothing changed");
        // The same names in another view: taken in place, which answers alike.
        let rebuilt = PortSpec {
            resolver: Some(view("a.example")),
            ..spec.clone()
        };
        assert!(spec.new_view(&rebuilt).is_some());
        let moved = PortSpec {
            mtu: 9000,
            ..renamed.clone()
        };
        assert!(
            spec.new_view(&moved).is_none(),
            "another configuration: made again"
        );
    }

    #[test]
    fn internet_hosts_name_the_reachable_upstreams_or_none() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        let text =
            internet_resolv_conf(&[a("127.0.0.53:53"), a("192.0.2.53:53"), a("192.0.2.54:5353")]);
        let servers: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(servers, ["nameserver 192.0.2.53"], "{text}");
        let none = internet_resolv_conf(&[a("127.0.0.53:53")]);
        assert!(
            none.contains("nameserver 127.0.0.1\n") && none.contains("attempts:1"),
            "{none}"
        );
    }

    #[test]
    fn the_summary_names_what_changed() {
        let a = Applied {
            added: vec!["v/a".into(), "v/b".into()],
            removed: vec!["internet/h".into()],
            replaced: Vec::new(),
            unchanged: 3,
            renumbered: 1,
            problems: vec!["v/gw: port in use".into()],
        };
        assert_eq!(
            a.summary(),
            "+2 (v/a, v/b) -1 (internet/h) ~0, 3 unchanged, 1 renumbered, 1 problem(s)"
        );
        assert_eq!(Applied::default().summary(), "+0 -0 ~0, 0 unchanged");
    }

    #[test]
    fn a_handle_whose_run_is_gone_reports_stopped() {
        let (loop_tx, loop_rx) = mailbox::channel();
        let (handle, requests) = Control::channel(
            loop_tx,
            super::super::dns_log::QueryLogSwitch::off(std::time::Duration::ZERO),
        );
        drop(requests);
        drop(loop_rx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let plan = crate::topology::parse(
            "t.toml",
            "[[vpc]]\nname = \"v\"\ncidr = \"10.1.0.0/16\"\nsubnet = [ { name = \"s\", cidr = \"10.1.1.0/24\" } ]\n",
        )
        .expect("valid topology");
        assert!(matches!(
            rt.block_on(handle.apply(Arc::new(plan))),
            Err(ApplyError::Stopped)
        ));
        assert!(matches!(
            rt.block_on(handle.query(|shell| shell.now())),
            Err(ApplyError::Stopped)
        ));
    }
}
