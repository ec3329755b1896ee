//! Network namespaces for `netns` ports: their names, creation (registered under `/run/netns` like
//! `ip netns add`, so `ip netns list` shows them), entering, deletion, the processes inside, and
//! the netlink configuration of the one TUN device each holds.
//!
//! This is the only module that talks to the kernel about namespaces. Namespace work happens on a
//! dedicated `std::thread` that has done `unshare(CLONE_NEWNET)`: the TUN device and the netlink
//! socket are opened there (a TUN ioctl and a netlink socket bind to the calling thread's
//! namespace), and the finished device is handed back to the caller, which registers it with its
//! tokio runtime. No tokio worker ever changes namespace. It needs no `unsafe`: `nix` and `tun-rs`
//! wrap the syscalls.
//!
//! Names: `PREFIX-VPC-INSTANCE` for instances and `PREFIX-internet-HOST` for internet hosts, with
//! `PREFIX` = `vpcd` unless `VPCD_NETNS_PREFIX` says otherwise (tests use their own). A name longer
//! than [`MAX_NAME_LEN`] is cut and ends in a hash of the full name, so it stays unique and
//! predictable. The TUN device inside is always [`DEVICE_NAME`]. Namespaces made ahead for
//! attaches are `PREFIX-pool-HASH-N` until an endpoint takes one ([`pool`]).

use std::fs::{self, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub mod pool;
pub use pool::WarmPool;

/// Where named namespaces are registered (the `ip netns` convention).
pub const NETNS_DIR: &str = "/run/netns";
/// The namespace-name prefix when `VPCD_NETNS_PREFIX` is unset.
pub const DEFAULT_PREFIX: &str = "vpcd";
/// Overrides the namespace-name prefix (1 to 16 characters from `[A-Za-z0-9_.-]`).
pub const PREFIX_ENV: &str = "VPCD_NETNS_PREFIX";
/// The TUN device in every namespace.
pub const DEVICE_NAME: &str = "vpcd0";
/// Longest namespace name vpcd makes; longer ones are cut and end in a hash.
pub const MAX_NAME_LEN: usize = 64;

/// Something the kernel or the filesystem refused, with what vpcd was doing.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "network namespace `{0}` already exists: another `vpcd up` uses it, or a crashed one left \
         it behind (remove leftovers with `vpcd down`)"
    )]
    Exists(String),
    #[error(
        "no network namespace `{0}` (is `vpcd up` running for this topology, with the same \
         {PREFIX_ENV}?)"
    )]
    NotFound(String),
    #[error(
        "{PREFIX_ENV}=`{0}` is not a usable prefix: use 1 to 16 characters from A-Z, a-z, 0-9, `_`, `.` and `-`"
    )]
    BadPrefix(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl NetnsError {
    fn io(what: impl Into<String>, source: impl Into<io::Error>) -> NetnsError {
        NetnsError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// The prefix from `VPCD_NETNS_PREFIX`, or [`DEFAULT_PREFIX`].
pub fn prefix_from_env() -> Result<String, NetnsError> {
    match std::env::var(PREFIX_ENV) {
        Ok(p) if valid_prefix(&p) => Ok(p),
        Ok(p) => Err(NetnsError::BadPrefix(p)),
        Err(_) => Ok(DEFAULT_PREFIX.to_string()),
    }
}

fn valid_prefix(p: &str) -> bool {
    (1..=16).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The namespace name of an endpoint (`VPC/INSTANCE` or `internet/HOST`).
pub fn namespace_name(prefix: &str, endpoint: &str) -> String {
    let full = format!("{prefix}-{}", endpoint.replace('/', "-"));
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    // Names are ASCII (validated), so cutting at a byte index is safe.
    let hash = fnv1a(full.as_bytes());
    format!("{}-{hash:08x}", &full[..MAX_NAME_LEN - 9])
}

/// FNV-1a folded to 32 bits: stable across runs and builds (unlike a seeded hasher).
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// The registration file of a namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether a namespace of that name is registered.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Every registered namespace name, sorted.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(NETNS_DIR)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// How the TUN device of a port is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub addr: Ipv4Addr,
    /// Further addresses on the same device (an internet host's `secondary_ips`), same prefix.
    pub secondary: Vec<Ipv4Addr>,
    /// The prefix of the segment (subnet, or the internet CIDR): the kernel adds its route.
    pub prefix_len: u8,
    /// The default route's next hop; `None`: a device route (the host is the gateway address).
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    /// The namespace's `resolv.conf` ([`resolv_conf`]), written to [`ETC_NETNS`]`/NAME/` where
    /// `vpcd exec` and `ip netns exec` bind-mount it over `/etc/resolv.conf`; `None`: none.
    pub resolv_conf: Option<String>,
}

/// Per-namespace files bind-mounted over `/etc` by `ip netns exec` and `vpcd exec`.
pub const ETC_NETNS: &str = "/etc/netns";

/// A `resolv.conf` naming a VPC's resolver, with the VPC's domain to search (so `web` finds
/// `web.VPC.vpc.internal`). Short timeouts: the resolver answers at once or not at all.
pub fn resolv_conf(nameserver: Ipv4Addr, search: &str) -> String {
    format!(
        "# Written by vpcd: this namespace's VPC resolver; removed with the namespace.\n\
         nameserver {nameserver}\nsearch {search}\noptions timeout:1 attempts:2\n"
    )
}

/// Where the `resolv.conf` of namespace `name` lives.
fn resolv_conf_path(name: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(name).join("resolv.conf")
}

/// Whether this process made [`ETC_NETNS`]: it then removes it again once the last
/// namespace's file there is gone (an empty `/etc/netns` it made stays no longer).
static MADE_ETC_NETNS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes the `resolv.conf` of namespace `name`.
fn write_resolv_conf(name: &str, content: &str) -> Result<(), NetnsError> {
    write_resolv_conf_in(Path::new(ETC_NETNS), name, content, &MADE_ETC_NETNS)
}

/// Writes `etc/NAME/resolv.conf`; `made` is set when `etc` did not exist and is made here.
fn write_resolv_conf_in(
    etc: &Path,
    name: &str,
    content: &str,
    made: &std::sync::atomic::AtomicBool,
) -> Result<(), NetnsError> {
    let file = etc.join(name).join("resolv.conf");
    let dir = etc.join(name);
    // Twice: another namespace's removal may take an empty `etc` away between the two steps.
    for attempt in 0..2 {
        if !etc.exists() {
            fs::create_dir_all(etc)
                .map_err(|e| NetnsError::io(format!("creating {}", etc.display()), e))?;
            made.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Err(e) = fs::create_dir_all(&dir) {
            if attempt == 0 && e.kind() == std::io::ErrorKind::NotFound {
                continue;
            }
            return Err(NetnsError::io(format!("creating {}", dir.display()), e));
        }
        match fs::write(&file, content) {
            Ok(()) => return Ok(()),
            Err(e) if attempt == 0 && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(NetnsError::io(format!("writing {}", file.display()), e)),
        }
    }
    Ok(())
}

/// Removes what [`write_resolv_conf`] wrote (the directory only when nothing else is in it).
fn remove_resolv_conf(name: &str) {
    remove_resolv_conf_in(Path::new(ETC_NETNS), name, &MADE_ETC_NETNS);
}

/// Removes `etc/NAME/resolv.conf` and `etc/NAME` when empty, and `etc` itself when empty and
/// `made` says this process made it.
fn remove_resolv_conf_in(etc: &Path, name: &str, made: &std::sync::atomic::AtomicBool) {
    let dir = etc.join(name);
    let _ = fs::remove_file(dir.join("resolv.conf"));
    let _ = fs::remove_dir(&dir);
    if made.load(std::sync::atomic::Ordering::Relaxed) && fs::remove_dir(etc).is_ok() {
        made.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Gives the calling process the `/etc/resolv.conf` of namespace `name`, as `ip netns exec`
/// does: a private mount namespace (so nothing leaks to the host's) with the namespace's file
/// bind-mounted over `/etc/resolv.conf`. Nothing happens when the namespace has no such file, or
/// the host no `/etc/resolv.conf`.
/// Call it in a process that runs no other threads, after [`enter`].
pub fn bind_resolv_conf(name: &str) -> Result<(), NetnsError> {
    let file = resolv_conf_path(name);
    // No file of the namespace's, or no /etc/resolv.conf (or a dangling link) to cover: nothing
    // to do (`ip netns exec` would fail the command instead).
    if !file.exists() || !Path::new("/etc/resolv.conf").exists() {
        return Ok(());
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| NetnsError::io("unshare(CLONE_NEWNS)", e))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| NetnsError::io("making / a slave mount", e))?;
    nix::mount::mount(
        Some(&file),
        "/etc/resolv.conf",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        NetnsError::io(
            format!("bind-mounting {} over /etc/resolv.conf", file.display()),
            e,
        )
    })
}

/// Creates the namespace `name`, registers it under [`NETNS_DIR`], and builds the TUN device
/// [`DEVICE_NAME`] inside with `config`, loopback up. On error nothing is left behind.
pub fn create_with_tun(name: &str, config: PortConfig) -> Result<tun_rs::SyncDevice, NetnsError> {
    ensure_netns_dir()?;
    create_registration(name)?;
    let target = path(name);
    let thread_target = target.clone();
    let config_resolv = config.resolv_conf.clone();
    let result = on_namespace_thread(name, move || {
        let device = in_new_namespace(&thread_target)?;
        configure(config)?;
        Ok(device)
    });
    let result = result.and_then(|device| match &config_resolv {
        Some(content) => write_resolv_conf(name, content).map(|()| device),
        None => Ok(device),
    });
    if result.is_err() {
        let _ = delete(name);
    }
    result
}

/// Creates the empty registration file of namespace `name` (a bind mount makes it one);
/// [`NetnsError::Exists`] when the name is taken.
fn create_registration(name: &str) -> Result<(), NetnsError> {
    let target = path(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&target)
        .map(drop)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => NetnsError::Exists(name.to_string()),
            _ => NetnsError::io(format!("creating {}", target.display()), e),
        })
}

/// `f` applied to every item on up to `threads` threads at once (namespace work waits mostly for
/// the kernel, and those waits overlap); results in no particular order. A thread that cannot be
/// started leaves its share to the others, the calling thread among them.
pub fn on_threads<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let queue = std::sync::Mutex::new(items);
    let done = std::sync::Mutex::new(Vec::new());
    let work = || {
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(item) = next else { return };
            let r = f(item);
            done.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            let _ = std::thread::Builder::new().spawn_scoped(scope, work);
        }
        work();
    });
    done.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Runs `work` on a new thread of its own (one that may change namespace) and waits for it.
fn on_namespace_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    std::thread::Builder::new()
        .name(format!("netns {name}"))
        .spawn(work)
        .map_err(|e| NetnsError::io("spawning the namespace thread", e))
        .and_then(|h| {
            h.join().unwrap_or_else(|_| {
                Err(NetnsError::io(
                    "the namespace thread",
                    io::Error::other("panicked"),
                ))
            })
        })
}

/// Runs on the namespace thread: a new network namespace for this thread only, bound to `target`,
/// then the TUN device in it (down and unaddressed: [`configure`] does that).
fn in_new_namespace(target: &Path) -> Result<tun_rs::SyncDevice, NetnsError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetnsError::io("unshare(CLONE_NEWNET)", e))?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/net"),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| NetnsError::io(format!("bind-mounting {}", target.display()), e))?;
    // The VPC routes IPv4 only: without IPv6 on the device the kernel sends no router
    // solicitations or MLD reports for the fabric to drop. (/proc/sys/net is per namespace; a
    // kernel without IPv6 has no such file, which is fine.)
    for knob in ["default", "all"] {
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1");
    }
    // Offload (`IFF_VNET_HDR`, checksum, TSO, USO where the kernel has it): the guest's kernel
    // hands over and takes superpackets. `VPCD_OFFLOAD=0` turns it off (comparisons, old
    // kernels); a kernel that refuses it gets a plain device.
    let offload = std::env::var("VPCD_OFFLOAD").map_or(true, |v| v != "0");
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(DEVICE_NAME)
            .offload(offload)
            .build_sync()
    };
    let device = build(offload)
        .or_else(|e| if offload { build(false) } else { Err(e) })
        .map_err(|e| NetnsError::io("creating the TUN device (/dev/net/tun)", e))?;
    Ok(device)
}

/// Brings `lo` and the TUN device up and addresses it, through netlink in this thread's namespace.
fn configure(config: PortConfig) -> Result<(), NetnsError> {
    let tun = nix::net::if_::if_nametoindex(DEVICE_NAME)
        .map_err(|e| NetnsError::io(format!("finding {DEVICE_NAME}"), e))?;
    let lo = nix::net::if_::if_nametoindex("lo").map_err(|e| NetnsError::io("finding lo", e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| NetnsError::io("starting the netlink runtime", e))?;
    rt.block_on(async move {
        use rtnetlink::{LinkUnspec, RouteMessageBuilder};
        let nl = |what: &str, e: rtnetlink::Error| NetnsError::io(what, io::Error::other(e));
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetnsError::io("opening netlink", e))?;
        tokio::spawn(connection);
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(|e| nl("setting lo up", e))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(tun).mtu(config.mtu).up().build())
            .execute()
            .await
            .map_err(|e| {
                nl(
                    &format!("setting {DEVICE_NAME} up with MTU {}", config.mtu),
                    e,
                )
            })?;
        handle
            .address()
            .add(tun, IpAddr::V4(config.addr), config.prefix_len)
            .execute()
            .await
            .map_err(|e| nl(&format!("adding {}/{}", config.addr, config.prefix_len), e))?;
        for &a in &config.secondary {
            handle
                .address()
                .add(tun, IpAddr::V4(a), config.prefix_len)
                .execute()
                .await
                .map_err(|e| nl(&format!("adding {a}/{}", config.prefix_len), e))?;
        }
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(tun);
        if let Some(gw) = config.gateway {
            route = route.gateway(gw);
        }
        handle
            .route()
            .add(route.build())
            .execute()
            .await
            .map_err(|e| nl("adding the default route", e))
    })
}

/// Makes [`NETNS_DIR`] exist and be a shared mount, as `ip netns add` does, so that namespaces
/// registered later propagate into mount namespaces copied from this one.
fn ensure_netns_dir() -> Result<(), NetnsError> {
    fs::create_dir_all(NETNS_DIR)
        .map_err(|e| NetnsError::io(format!("creating {NETNS_DIR}"), e))?;
    let shared = || {
        nix::mount::mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared().is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself, then share it.
    nix::mount::mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| NetnsError::io(format!("bind-mounting {NETNS_DIR} onto itself"), e))?;
    shared().map_err(|e| NetnsError::io(format!("making {NETNS_DIR} shared"), e))
}

/// Removes the namespace `name`: ends the processes still inside (SIGTERM, then SIGKILL after
/// `grace`), unmounts and unlinks its registration. The kernel frees the namespace, and the TUN
/// device in it, once nothing holds it (vpcd closes its device first). Removing a namespace that
/// is already gone is not an error.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    delete_with_grace(name, Duration::from_millis(1500))
}

/// [`delete`] with an explicit grace period for the processes inside.
pub fn delete_with_grace(name: &str, grace: Duration) -> Result<(), NetnsError> {
    let target = path(name);
    end_processes(name, grace);
    remove_resolv_conf(name);
    match nix::mount::umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetnsError::io(
                format!("unmounting {}", target.display()),
                e,
            ));
        }
    }
    match fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetnsError::io(format!("removing {}", target.display()), e)),
    }
}

/// The processes whose network namespace is `name` (as `ip netns pids` finds them), not this one.
pub fn pids_in(name: &str) -> Vec<Pid> {
    let Ok(ns) = fs::metadata(path(name)) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == ns.dev() && m.ino() == ns.ino())
        })
        .filter_map(|pid| i32::try_from(pid).ok().map(Pid::from_raw))
        .collect()
}

/// SIGTERM to every process in the namespace, SIGKILL to those still there after `grace`.
fn end_processes(name: &str, grace: Duration) {
    let pids = pids_in(name);
    if pids.is_empty() {
        return;
    }
    for pid in &pids {
        let _ = nix::sys::signal::kill(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if pids_in(name).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids_in(name) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    }
}

/// Moves the calling thread into the namespace `name` (for `vpcd exec`: call it before spawning
/// anything, in a process that runs no other threads).
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let target = path(name);
    let file = fs::File::open(&target).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => NetnsError::NotFound(name.to_string()),
        _ => NetnsError::io(format!("opening {}", target.display()), e),
    })?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetnsError::io(format!("setns into {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_predictable() {
        assert_eq!(
            namespace_name("vpcd", "tenant-a/fn-a1"),
            "vpcd-tenant-a-fn-a1"
        );
        assert_eq!(namespace_name("t1", "internet/web"), "t1-internet-web");
    }

    #[test]
    fn long_names_are_cut_and_stay_unique() {
        let a = namespace_name("vpcd", &format!("{}/{}", "v".repeat(32), "i".repeat(32)));
        let b = namespace_name("vpcd", &format!("{}/{}j", "v".repeat(32), "i".repeat(31)));
        assert_eq!(a.len(), MAX_NAME_LEN);
        assert_eq!(b.len(), MAX_NAME_LEN);
        assert_ne!(a, b);
        assert_eq!(
            a,
            namespace_name("vpcd", &format!("{}/{}", "v".repeat(32), "i".repeat(32)))
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("vt-lock.1"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("a/b"));
        assert!(!valid_prefix(&"x".repeat(17)));
    }

    /// An `etc/netns` this process made goes with its last namespace's file; one that was there
    /// before stays.
    #[test]
    fn an_etc_netns_made_here_is_removed_with_the_last_file_and_an_older_one_stays() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let base = std::env::temp_dir().join(format!("vpcd-etc-netns-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        let etc = base.join("netns");
        let made = AtomicBool::new(false);
        write_resolv_conf_in(&etc, "a", "nameserver 10.0.0.2\n", &made).unwrap();
        write_resolv_conf_in(&etc, "b", "nameserver 10.0.0.2\n", &made).unwrap();
        assert!(made.load(Ordering::Relaxed));
        assert_eq!(
            fs::read_to_string(etc.join("a/resolv.conf")).unwrap(),
            "nameserver 10.0.0.2\n"
        );
        remove_resolv_conf_in(&etc, "a", &made);
        assert!(
            etc.exists() && !etc.join("a").exists(),
            "b's file is still there"
        );
        remove_resolv_conf_in(&etc, "b", &made);
        assert!(!etc.exists(), "made here, removed when empty");
        // There before: it stays, emptied.
        fs::create_dir_all(&etc).unwrap();
        let made = AtomicBool::new(false);
        write_resolv_conf_in(&etc, "c", "x\n", &made).unwrap();
        remove_resolv_conf_in(&etc, "c", &made);
        assert!(etc.exists() && !etc.join("c").exists());
        fs::remove_dir_all(&base).unwrap();
    }
}
