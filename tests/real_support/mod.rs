//! Shared harness of the real-namespace tests (`tests/real_*.rs`).
//!
//! Each test writes its own topology to its own directory, picks its own namespace prefix
//! (`VPCD_NETNS_PREFIX`) and run directory (`VPCD_RUN_DIR`), so tests run in parallel without
//! seeing each other. [`Run::up`] starts the built `vpcd up` as a child and waits for its ready
//! line; [`Run::exec`] and [`Run::spawn`] run real programs through `vpcd exec`; [`Run::stop`]
//! signals it and checks that nothing with the prefix is left. Dropping a `Run` (a failed
//! assertion, a panic) kills everything it started and runs `vpcd down`, so no namespace
//! outlives a test.
//!
//! [`HostNs`] and [`Run::up_in`] stand up a namespace for "the host" and run `vpcd up` inside it
//! (with `nsenter --net`, so that the namespaces vpcd registers under `/run/netns` stay visible to
//! `vpcd exec`): the uplink tests' outside servers live there, never on the real host network.
//!
//! Without root (or `/dev/net/tun`, or a program a test needs) a test prints why and passes
//! vacuously; under `CI=true` that is a failure, since CI runs as root with the packages installed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub const VPCD: &str = env!("CARGO_BIN_EXE_vpcd");
const READY: &str = "ready: serving";
const UP_TIMEOUT: Duration = Duration::from_secs(30);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn is_root() -> bool {
    // SAFETY-free check: the effective uid is in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Whether this test can run here: root, `/dev/net/tun`, and every program in `tools`. Prints the
/// reason and returns `false` to skip; under `CI=true` a missing capability fails the test.
pub fn capable(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun".to_string());
    }
    for t in tools.iter().chain(["ip"].iter()) {
        if !have(t) {
            missing.push(format!("`{t}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test}: needs {}", missing.join(", "));
    if in_ci() {
        panic!("{why} (CI=true: CI runs as root with the packages .ci/run installs)");
    }
    eprintln!("skipped: {why}");
    false
}

/// A running `vpcd up` of one test's topology.
pub struct Run {
    pub name: String,
    pub prefix: String,
    pub dir: PathBuf,
    pub topology: PathBuf,
    child: Option<Child>,
    /// What `vpcd up` printed before the ready line.
    pub banner: String,
    /// The rest of its stdout, filled once it exits.
    rest: mpsc::Receiver<String>,
    background: Vec<Child>,
    /// Options after `vpcd up FILE`.
    up_args: Vec<String>,
    /// What `vpcd up` printed after the ready line (stdout and stderr), as it arrives.
    live: Arc<Mutex<String>>,
    /// The namespace `vpcd up` runs in ([`Run::up_in`]); removed after everything else.
    host: Option<HostNs>,
}

impl Run {
    /// Writes `topology` to a fresh directory and starts `vpcd up` on it with namespace prefix
    /// `prefix` (keep it short and unique per test); returns once it is ready.
    pub fn up(prefix: &str, topology: &str) -> Run {
        Run::up_with(prefix, topology, &[])
    }

    /// [`Run::up`] with options for `vpcd up` (`--flow-log …`); `{dir}` in them stands for the
    /// run's directory (removed when the run is dropped).
    pub fn up_with(prefix: &str, topology: &str, args: &[&str]) -> Run {
        Run::start_in(None, prefix, topology, args)
    }

    /// [`Run::up_with`] with `vpcd up` running inside `host` (which the run owns from now on and
    /// removes last).
    pub fn up_in(host: HostNs, prefix: &str, topology: &str, args: &[&str]) -> Run {
        Run::start_in(Some(host), prefix, topology, args)
    }

    fn start_in(host: Option<HostNs>, prefix: &str, topology: &str, args: &[&str]) -> Run {
        let dir = std::env::temp_dir().join(format!("vpcd-real-{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("topology.toml");
        std::fs::write(&path, topology).expect("write topology");
        let mut run = Run {
            name: prefix.to_string(),
            prefix: prefix.to_string(),
            dir,
            topology: path,
            child: None,
            banner: String::new(),
            rest: mpsc::channel().1,
            background: Vec::new(),
            up_args: Vec::new(),
            live: Arc::new(Mutex::new(String::new())),
            host,
        };
        let d = run.dir.display().to_string();
        run.up_args = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        run.start();
        run
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("VPCD_NETNS_PREFIX", &self.prefix)
            .env("VPCD_RUN_DIR", self.dir.join("run"));
    }

    /// A `vpcd` command with this run's prefix and run directory.
    pub fn vpcd(&self) -> Command {
        let mut c = Command::new(VPCD);
        self.env(&mut c);
        c
    }

    /// The command that starts `vpcd up`: in the host namespace when the run has one.
    fn up_command(&self) -> Command {
        match &self.host {
            Some(h) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{}", h.name)).arg(VPCD);
                self.env(&mut c);
                c
            }
            None => self.vpcd(),
        }
    }

    /// The host namespace of [`Run::up_in`].
    pub fn host(&self) -> &HostNs {
        self.host.as_ref().expect("a run started with Run::up_in")
    }

    /// Runs `ARGS` in the host namespace to completion (killed after `timeout`).
    pub fn host_exec(&self, args: &[&str], timeout: Duration) -> Output {
        let child = self
            .host()
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec");
        wait_output(child, timeout)
    }

    /// Starts `ARGS` in the host namespace in the background (killed when the run stops or is
    /// dropped); output goes to `DIR/LOG`.
    pub fn host_spawn(&mut self, args: &[&str], log: &str) -> u32 {
        let file = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = self
            .host()
            .command(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn ip netns exec");
        let pid = child.id();
        self.background.push(child);
        pid
    }

    fn start(&mut self) {
        let mut child = self
            .up_command()
            .arg("up")
            .arg(&self.topology)
            .args(&self.up_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vpcd up");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        self.child = Some(child);
        let (line_tx, line_rx) = mpsc::channel::<Option<String>>();
        let (rest_tx, rest_rx) = mpsc::channel::<String>();
        let live = self.live.clone();
        let live_err = self.live.clone();
        let err_thread = std::thread::spawn(move || {
            let mut err = String::new();
            let mut line = String::new();
            let mut reader = BufReader::new(&mut stderr);
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Ok(mut l) = live_err.lock() {
                    l.push_str(&line);
                }
                err.push_str(&line);
                line.clear();
            }
            let _ = reader.read_to_string(&mut err);
            err
        });
        std::thread::spawn(move || {
            let mut rest = String::new();
            let mut ready = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if ready {
                    rest.push_str(&line);
                    rest.push('\n');
                    if let Ok(mut l) = live.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                } else {
                    ready = line.starts_with(READY);
                    let _ = line_tx.send(Some(line));
                }
            }
            let _ = line_tx.send(None);
            rest.push_str(&err_thread.join().unwrap_or_default());
            let _ = rest_tx.send(rest);
        });
        self.rest = rest_rx;
        let deadline = Instant::now() + UP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(Some(line)) => {
                    let done = line.starts_with(READY);
                    self.banner.push_str(&line);
                    self.banner.push('\n');
                    if done {
                        return;
                    }
                }
                Ok(None) => {
                    let rest = self
                        .rest
                        .recv_timeout(Duration::from_secs(5))
                        .unwrap_or_default();
                    panic!(
                        "{}: vpcd up exited before ready:\n{}{rest}",
                        self.name, self.banner
                    );
                }
                Err(_) => panic!("{}: vpcd up not ready after {UP_TIMEOUT:?}", self.name),
            }
        }
    }

    /// Runs `vpcd exec ENDPOINT -- ARGS` to completion (killed after `timeout`).
    pub fn exec_timeout(&self, endpoint: &str, args: &[&str], timeout: Duration) -> Output {
        let child = self
            .vpcd()
            .arg("exec")
            .arg(endpoint)
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vpcd exec");
        wait_output(child, timeout)
    }

    /// [`Run::exec_timeout`] with 15 s.
    pub fn exec(&self, endpoint: &str, args: &[&str]) -> Output {
        self.exec_timeout(endpoint, args, Duration::from_secs(15))
    }

    /// Starts `vpcd exec ENDPOINT -- ARGS` in the background; it is killed when the run stops or
    /// is dropped. Output goes to `DIR/LOG`.
    pub fn spawn(&mut self, endpoint: &str, args: &[&str], log: &str) -> u32 {
        let file = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = self
            .vpcd()
            .arg("exec")
            .arg(endpoint)
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn vpcd exec");
        let pid = child.id();
        self.background.push(child);
        pid
    }

    /// The log a background process wrote.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    /// Waits until the log of a background process ([`Run::spawn`]) holds `needle`, at most
    /// `timeout`.
    pub fn wait_log(&self, log: &str, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log(log).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Starts an HTTP server on `addr:port` in `endpoint`, serving a file `index.html` with
    /// `body`, and waits until it listens. (`python3 -m http.server` would first look its own
    /// name up in DNS, which has nowhere to go in a VPC.)
    pub fn http_server(&mut self, endpoint: &str, addr: &str, port: u16, body: &str) {
        let root = self
            .dir
            .join(format!("www-{port}-{}", endpoint.replace('/', "-")));
        std::fs::create_dir_all(&root).expect("www dir");
        std::fs::write(root.join("index.html"), body).expect("index");
        let script = format!(
            "import functools, http.server, socketserver\n\
             socketserver.TCPServer.allow_reuse_address = True\n\
             h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={root:?})\n\
             s = socketserver.ThreadingTCPServer(({addr:?}, {port}), h)\n\
             print('listening', flush=True)\n\
             s.serve_forever()\n",
            root = root.display().to_string()
        );
        let log = format!("http-{port}-{}.log", endpoint.replace('/', "-"));
        self.spawn(endpoint, &["python3", "-u", "-c", &script], &log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log(&log).contains("listening") {
            assert!(
                Instant::now() < deadline,
                "{}: http server in {endpoint} did not start: {}",
                self.name,
                self.log(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `curl` from `endpoint` to `url`: the body on success, `Err(stderr)` otherwise.
    pub fn curl(&self, endpoint: &str, url: &str) -> Result<String, String> {
        let out = self.exec(endpoint, &["curl", "-sS", "--max-time", "3", url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// What `vpcd up` has printed since its ready line (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        self.live.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until `vpcd up` has printed `needle` `times` times since its ready line.
    pub fn wait_output(&self, needle: &str, times: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().matches(needle).count() >= times {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends SIGHUP to `vpcd up` (reload the topology file) without waiting.
    pub fn hup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Replaces the topology file (for a SIGHUP reload).
    pub fn rewrite(&self, topology: &str) {
        let tmp = self.dir.join("topology.toml.new");
        std::fs::write(&tmp, topology).expect("write topology");
        std::fs::rename(&tmp, &self.topology).expect("replace topology");
    }

    /// Waits for the background process `pid` ([`Run::spawn`]) to exit, at most `timeout`.
    pub fn wait_background(&mut self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.background.iter_mut().find(|c| c.id() == pid)?;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) to `vpcd up` and waits for it to exit.
    pub fn signal(&mut self, signal: &str) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{}: vpcd up did not exit after SIG{signal}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = self
            .rest
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        (status, rest)
    }

    /// SIGTERM, expect a clean exit, and nothing of this run left.
    pub fn stop(mut self) -> String {
        self.stop_in_place()
    }

    /// [`Run::stop`], keeping the run's directory (and what `vpcd up` wrote there) until the
    /// `Run` is dropped.
    pub fn stop_in_place(&mut self) -> String {
        let (status, rest) = self.signal("TERM");
        assert!(
            status.success(),
            "{}: vpcd up exited {status}: {rest}",
            self.name
        );
        self.assert_gone();
        rest
    }

    /// `ip netns list` shows no namespace with this run's prefix.
    pub fn assert_gone(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "{}: left behind: {left:?}", self.name);
    }

    /// Namespaces with this run's prefix that `ip netns list` shows.
    pub fn leftovers(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let start = format!("{}-", self.prefix);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&start))
            .map(str::to_string)
            .collect()
    }

    /// Runs `vpcd down FILE` for this run.
    pub fn down(&self) -> Output {
        self.vpcd()
            .arg("down")
            .arg(&self.topology)
            .output()
            .expect("vpcd down")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for mut c in self.background.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.down();
        // Last resort, should `vpcd down` itself be broken: this test's prefix only.
        for ns in self.leftovers() {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // Last: the namespace vpcd ran in, with anything still inside it.
        drop(self.host.take());
    }
}

/// Waits for `child` (stdout and stderr piped) at most `timeout`, killing it then.
fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// A network namespace that stands for "the host" of the uplink tests: its loopback is up and
/// carries the documentation addresses given (`"192.0.2.1/24"`), so servers there listen on
/// non-loopback addresses that nothing outside the namespace can reach. Dropping it kills every
/// process still inside and deletes it (also while unwinding from a panic).
pub struct HostNs {
    pub name: String,
}

impl HostNs {
    /// Creates namespace `name` (removing a leftover of a crashed run first) with `addrs` on its
    /// loopback device.
    pub fn new(name: &str, addrs: &[&str]) -> HostNs {
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let leftover = HostNs {
            name: name.to_string(),
        };
        drop(leftover);
        ip(&["netns", "add", name]);
        let host = HostNs {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        for a in addrs {
            ip(&["-n", name, "addr", "add", a, "dev", "lo"]);
        }
        host
    }

    /// `ip netns exec NAME ARGS...`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// The `Mbits/sec` figure of iperf3's receiver line (`-f m` output).
pub fn iperf3_receiver_mbits(text: &str) -> Option<f64> {
    let line = text.lines().rev().find(|l| l.contains("receiver"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "Mbits/sec")?;
    words.get(i.checked_sub(1)?)?.parse().ok()
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `len` random bytes to `path` (a payload whose sha256 a transfer must keep).
pub fn random_file(path: &Path, len: u64) {
    let mut src = std::fs::File::open("/dev/urandom")
        .expect("/dev/urandom")
        .take(len);
    let mut dst = std::fs::File::create(path).expect("create payload");
    let n = std::io::copy(&mut src, &mut dst).expect("write payload");
    assert_eq!(n, len, "short payload {}", path.display());
}

/// The sha256 of the file at `path`, in hex (`sha256sum`).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum: {}", text(&out));
    first_word(&out.stdout)
}

fn first_word(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The value of the sample `name{labels}` in Prometheus text (every label of `labels` must match;
/// others may be present), or `None` when there is no such line.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.trim().parse().ok())
}

impl Run {
    /// The directory [`Run::http_server`] serves for `endpoint` and `port`: files written there are
    /// served too (`http://ADDR:PORT/NAME`).
    pub fn www_dir(&self, endpoint: &str, port: u16) -> PathBuf {
        self.dir
            .join(format!("www-{port}-{}", endpoint.replace('/', "-")))
    }

    /// `curl` of `url` from `endpoint`, bounded by `timeout`: the sha256 of the body, or
    /// `Err(output)` when curl fails.
    pub fn curl_sha256(
        &self,
        endpoint: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let secs = timeout.as_secs().max(1).to_string();
        let script = format!("set -o pipefail; curl -sS --max-time {secs} '{url}' | sha256sum");
        let out = self.exec_timeout(
            endpoint,
            &["bash", "-c", &script],
            timeout + Duration::from_secs(5),
        );
        if out.status.success() {
            Ok(first_word(&out.stdout))
        } else {
            Err(text(&out))
        }
    }

    /// An `iperf3` client of `secs` seconds (`-R`: the server sends) from `endpoint` to
    /// `server:port`, tried again while the server does not listen yet (any other failure fails
    /// the test); the receiver's Mbit/s and iperf3's output.
    pub fn iperf3(
        &self,
        endpoint: &str,
        server: &str,
        port: u16,
        reverse: bool,
        secs: u32,
    ) -> (f64, String) {
        let (port, secs) = (port.to_string(), secs.to_string());
        let mut args = vec![
            "iperf3",
            "-c",
            server,
            "-p",
            &port,
            "-t",
            &secs,
            "-f",
            "m",
            "--connect-timeout",
            "1000",
        ];
        if reverse {
            args.push("-R");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.exec_timeout(endpoint, &args, Duration::from_secs(20));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                let mbits = iperf3_receiver_mbits(&stdout)
                    .unwrap_or_else(|| panic!("{}: no receiver line: {stdout}", self.name));
                return (mbits, stdout);
            }
            // Only a server that does not listen yet is worth another try.
            let all = text(&out);
            assert!(
                all.contains("unable to connect") && Instant::now() < deadline,
                "{}: iperf3 {args:?} from {endpoint} failed: {all}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `vpcd ctl metrics` (the run needs `--state`): the Prometheus text. Waits for the API socket.
    pub fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .vpcd()
                .args(["ctl", "metrics"])
                .output()
                .expect("vpcd ctl metrics");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{}: vpcd ctl metrics: {}",
                self.name,
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
