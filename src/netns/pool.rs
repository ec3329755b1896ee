//! A warm pool of network namespaces for `netns` endpoints attached while a run serves.
//!
//! Making a namespace and its TUN device is most of what a `netns` attach costs (the kernel's
//! `unshare(CLONE_NEWNET)`, the bind mount, the device). The pool makes them ahead on a thread
//! of its own, exactly as [`create_with_tun`](super::create_with_tun) does — registered under
//! [`NETNS_DIR`](super::NETNS_DIR), IPv6 off, the TUN device [`DEVICE_NAME`](super::DEVICE_NAME)
//! inside with offload — but left down and unaddressed, under a pool name
//! ([`pool_prefix`]`N`). [`WarmPool::take`] gives one to an endpoint: its registration moves to
//! the endpoint's name (a bind mount and an unmount, no new namespace), then the device is
//! addressed and routed and the `resolv.conf` written; the pool refills in the background.
//!
//! Detached namespaces never go back to the pool: a function may have left processes, firewall
//! rules, sysctls or interfaces behind, and the next tenant must not inherit any of it. They are
//! deleted in the background, as before.
//!
//! Nothing leaks: dropping the pool stops its thread and deletes every warm namespace (also while
//! unwinding); after a crash the names say whose they are, and `vpcd down` and the next `vpcd up`
//! of the same topology remove them ([`remove_leftovers`]).

use std::fs;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{
    NetnsError, PortConfig, configure, create_registration, delete, ensure_netns_dir,
    in_new_namespace, list, on_namespace_thread, path, write_resolv_conf,
};

/// The pool size `vpcd up --state` keeps when `--warm-pool` does not say.
pub const DEFAULT_SIZE: usize = 8;
/// The largest pool `--warm-pool` accepts (each warm namespace holds kernel memory and a file
/// descriptor).
pub const MAX_SIZE: usize = 4096;

/// The name every warm namespace of the run `run_id` starts with: `PREFIX-pool-HASH-`, short
/// and predictable, so `vpcd down` finds a crashed run's pool.
pub fn pool_prefix(prefix: &str, run_id: &str) -> String {
    format!("{prefix}-pool-{:08x}-", super::fnv1a(run_id.as_bytes()))
}

/// Deletes every namespace whose name starts with `pool_prefix` (a crashed run's pool); returns
/// their names.
pub fn remove_leftovers(pool_prefix: &str) -> Result<Vec<String>, NetnsError> {
    let mut removed = Vec::new();
    for name in list().into_iter().filter(|n| n.starts_with(pool_prefix)) {
        delete(&name)?;
        removed.push(name);
    }
    Ok(removed)
}

/// What the pool has done, for status lines and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// The size the pool keeps.
    pub target: usize,
    /// Warm namespaces ready now.
    pub ready: usize,
    /// Namespaces made ahead so far.
    pub made: u64,
    /// Endpoints that got a warm namespace.
    pub taken: u64,
    /// Attempts to make one that failed (the pool backs off and retries).
    pub failures: u64,
}

/// Namespaces made ahead, kept at a target size by a thread of their own.
pub struct WarmPool {
    shared: Arc<Shared>,
    refill: Option<JoinHandle<()>>,
}

struct Shared {
    prefix: String,
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    ready: Vec<Warm>,
    stats: PoolStats,
    next: u64,
    stop: bool,
}

/// One namespace made ahead: its pool name and the TUN device inside.
struct Warm {
    name: String,
    device: tun_rs::SyncDevice,
}

impl WarmPool {
    /// Starts a pool that keeps `target` namespaces named `pool_prefix` + a number ready; with
    /// `target` 0 it makes none and [`WarmPool::take`] always answers `None`.
    pub fn start(pool_prefix: String, target: usize) -> WarmPool {
        let shared = Arc::new(Shared {
            prefix: pool_prefix,
            state: Mutex::new(State {
                ready: Vec::with_capacity(target),
                stats: PoolStats {
                    target,
                    ..PoolStats::default()
                },
                next: 0,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let refill = (target > 0).then(|| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("netns pool".into())
                .spawn(move || s.refill())
                .ok()
        });
        WarmPool {
            shared,
            refill: refill.flatten(),
        }
    }

    /// A warm namespace registered as `name` and addressed with `config`, with its TUN device;
    /// `None` when none is ready (make one the cold way). On an error nothing of it is left.
    pub fn take(
        &self,
        name: &str,
        config: &PortConfig,
    ) -> Option<Result<tun_rs::SyncDevice, NetnsError>> {
        let warm = {
            let mut st = self.shared.lock();
            let warm = st.ready.pop()?;
            st.stats.taken += 1;
            warm
        };
        self.shared.wake.notify_all();
        Some(adopt(warm, name, config.clone()))
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.shared.lock();
        PoolStats {
            ready: st.ready.len(),
            ..st.stats
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.refill.take() {
            let _ = t.join();
        }
        let ready = std::mem::take(&mut self.shared.lock().ready);
        delete_warm(ready);
    }
}

/// Closes the devices and deletes the namespaces of `warm`, on a few threads at once: closing a
/// TUN device makes the kernel unregister it and wait for an RCU grace period, and those waits
/// overlap across threads (one after the other they cost tens of milliseconds each under load).
fn delete_warm(warm: Vec<Warm>) {
    super::on_threads(warm, 8, |w| {
        drop(w.device);
        if let Err(e) = delete(&w.name) {
            eprintln!("vpcd: warm pool: {e}");
        }
    });
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool's thread: makes a namespace whenever fewer than the target are ready, until
    /// stopped. A failure (no `/dev/net/tun`, a name in the way) is reported once and retried
    /// after a growing pause.
    fn refill(&self) {
        let mut pause = Duration::from_millis(50);
        loop {
            let name = {
                let st = self.lock();
                let mut st = self
                    .wake
                    .wait_while(st, |st| !st.stop && st.ready.len() >= st.stats.target)
                    .unwrap_or_else(|e| e.into_inner());
                if st.stop {
                    return;
                }
                st.next += 1;
                format!("{}{}", self.prefix, st.next)
            };
            match create_warm(&name) {
                Ok(device) => {
                    pause = Duration::from_millis(50);
                    let mut st = self.lock();
                    if st.stop {
                        drop(st);
                        drop(device);
                        let _ = delete(&name);
                        return;
                    }
                    st.ready.push(Warm { name, device });
                    st.stats.made += 1;
                    drop(st);
                    self.wake.notify_all();
                }
                Err(e) => {
                    let first = {
                        let mut st = self.lock();
                        st.stats.failures += 1;
                        st.stats.failures == 1
                    };
                    if first {
                        eprintln!("vpcd: warm pool: {e} (retrying in the background)");
                    }
                    let st = self.lock();
                    let _ = self
                        .wake
                        .wait_timeout_while(st, pause, |st| !st.stop)
                        .unwrap_or_else(|e| e.into_inner());
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Makes one warm namespace `name`: registered, IPv6 off, the TUN device inside, nothing
/// addressed. On error nothing is left.
fn create_warm(name: &str) -> Result<tun_rs::SyncDevice, NetnsError> {
    ensure_netns_dir()?;
    create_registration(name)?;
    let target = path(name);
    let result = on_namespace_thread(name, move || in_new_namespace(&target));
    if result.is_err() {
        let _ = delete(name);
    }
    result
}

/// Gives the warm namespace to `name`: moves its registration, addresses its device, writes its
/// `resolv.conf`. On error both names are gone (except a `name` that was someone else's).
fn adopt(warm: Warm, name: &str, config: PortConfig) -> Result<tun_rs::SyncDevice, NetnsError> {
    if let Err(e) = rename(&warm.name, name) {
        drop(warm.device);
        let _ = delete(&warm.name);
        // The name may be someone else's (Exists); otherwise it may be half made.
        if !matches!(e, NetnsError::Exists(_)) {
            let _ = delete(name);
        }
        return Err(e);
    }
    let resolv = config.resolv_conf.clone();
    let target = path(name);
    let result = on_namespace_thread(name, move || {
        let file = fs::File::open(&target)
            .map_err(|e| NetnsError::io(format!("opening {}", target.display()), e))?;
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetnsError::io(format!("setns into {}", target.display()), e))?;
        configure(config)
    })
    .and_then(|()| match &resolv {
        Some(content) => write_resolv_conf(name, content),
        None => Ok(()),
    });
    match result {
        Ok(()) => Ok(warm.device),
        Err(e) => {
            drop(warm.device);
            let _ = delete(name);
            Err(e)
        }
    }
}

/// Registers the namespace `from` as `to` and removes the name `from` (the namespace itself is
/// unchanged: the same nsfs file, bound at a new path).
fn rename(from: &str, to: &str) -> Result<(), NetnsError> {
    create_registration(to)?;
    let (src, dst) = (path(from), path(to));
    nix::mount::mount(
        Some(&src),
        &dst,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        NetnsError::io(
            format!("bind-mounting {} to {}", src.display(), dst.display()),
            e,
        )
    })?;
    match nix::mount::umount2(&src, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(NetnsError::io(format!("unmounting {}", src.display()), e)),
    }
    match fs::remove_file(&src) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetnsError::io(format!("removing {}", src.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_short_predictable_and_per_run() {
        let a = pool_prefix("vpcd", "vpcd-quickstart-0123abcd");
        assert!(a.starts_with("vpcd-pool-") && a.ends_with('-'), "{a}");
        assert_eq!(a, pool_prefix("vpcd", "vpcd-quickstart-0123abcd"));
        assert_ne!(a, pool_prefix("vpcd", "vpcd-quickstart-0123abce"));
        assert!(a.len() + 4 <= super::super::MAX_NAME_LEN);
    }

    #[test]
    fn an_empty_pool_gives_nothing_and_makes_nothing() {
        let pool = WarmPool::start("vtest-pool-0-".into(), 0);
        assert!(pool.refill.is_none());
        let config = PortConfig {
            addr: std::net::Ipv4Addr::new(10, 0, 0, 5),
            secondary: Vec::new(),
            prefix_len: 24,
            gateway: None,
            mtu: 1500,
            resolv_conf: None,
        };
        assert!(pool.take("vtest-x", &config).is_none());
        assert_eq!(pool.stats(), PoolStats::default());
    }
}
