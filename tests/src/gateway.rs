//! The system under test: the real `gateway` binary as a child process.
//!
//! ```text
//! let gateway = Gateway::builder().backend(backend.addr()).dataplane(Dataplane::Ebpf).start();
//! ```
//! `start` returns once the daemon printed its ready line; dropping the handle kills it.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread::{self, JoinHandle},
    time::Duration,
};

use gateway_common::names;

use crate::{maps, metrics::Metrics, wait::eventually};

/// Environment variable with the absolute path of the `gateway` binary.
pub const GATEWAY_BIN_ENV: &str = "GATEWAY_BIN";

/// How long the daemon may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Prefix of the one line the daemon prints on stdout once it serves.
const READY_PREFIX: &str = "gateway ready ";

/// How long closing tunnels may take to release their sockets and map entries.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Stderr lines kept to show in a start-up failure.
const STDERR_LINES_KEPT: usize = 400;

/// Which data path carries upgraded tunnels (`--dataplane`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    Ebpf,
    Userspace,
    Auto,
}

impl Dataplane {
    /// The `--dataplane` argument, which is also what the ready line reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Userspace => "userspace",
            Self::Auto => "auto",
        }
    }

    /// The `mode` label of the tunnel metrics for tunnels on this data path.
    pub const fn tunnel_mode(self) -> &'static str {
        match self {
            Self::Ebpf => "spliced",
            Self::Userspace | Self::Auto => "userspace",
        }
    }
}

/// Path of the daemon binary: `$GATEWAY_BIN`, else `target/debug/gateway` of the workspace.
pub fn binary_path() -> PathBuf {
    let path = std::env::var_os(GATEWAY_BIN_ENV).map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/debug/gateway"
            ))
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "gateway binary not found at {}: run `cargo build -p gateway-user` (or `cargo xtask test`, \
         which builds it and sets {GATEWAY_BIN_ENV})",
        path.display()
    );
    path
}

/// Options of a gateway to start.
#[derive(Clone, Debug)]
pub struct GatewayBuilder {
    backend: Option<SocketAddr>,
    /// `--config FILE`; then `backend` is optional (with it, `--listen 127.0.0.1:0
    /// --backend ADDR` are added next to the file's listeners).
    config: Option<PathBuf>,
    dataplane: Dataplane,
    admin: bool,
    /// More `gateway run` arguments, after the ones the builder sets.
    extra_args: Vec<String>,
    /// A command the daemon runs under (e.g. `setpriv ...`), which must exec its last
    /// argument, the daemon: the pid is then the daemon's.
    wrapper: Vec<String>,
    /// The daemon binary, instead of [`binary_path`].
    binary: Option<PathBuf>,
    /// Whether pool/settings pairs without a `probe` get Azure's default probe (`GET /`).
    /// Off unless asked: most test backends answer only WebSocket upgrades, and a probe's
    /// connection would show up in what they record.
    default_probes: bool,
    /// Whether plaintext tunnels start on the relay and are promoted to the splice later
    /// (the daemon's default). Off unless asked: a test of the splice wants its tunnel
    /// spliced from the first byte (`--splice-after-bytes 0`), and says so by asserting it.
    lazy_splice: bool,
    /// Whether the per-client limits keep the daemon's defaults. Off unless asked: most
    /// tests open hundreds of connections and upgrades from 127.0.0.1, which a per-address
    /// limit is there to stop.
    per_ip_limits: bool,
    /// `RLIMIT_NOFILE` (soft and hard) the daemon starts with, instead of this process's.
    nofile_limit: Option<u64>,
}

impl GatewayBuilder {
    /// Keeps the daemon's per-client limits (`--max-connections-per-ip`,
    /// `--upgrades-per-ip-per-sec`) as configured, for tests of them; without it they are
    /// turned off (0).
    pub fn per_ip_limits(mut self) -> Self {
        self.per_ip_limits = true;
        self
    }

    /// Starts the daemon with `RLIMIT_NOFILE` at `limit`, soft and hard, so it cannot raise
    /// it (it raises the soft limit to the hard one at start).
    pub fn nofile_limit(mut self, limit: u64) -> Self {
        self.nofile_limit = Some(limit);
        self
    }

    /// Keeps the daemon's lazy splice (`--splice-after-bytes` / `--splice-after-ms` as
    /// configured, or their defaults), for tests of promotion.
    pub fn lazy_splice(mut self) -> Self {
        self.lazy_splice = true;
        self
    }

    /// Runs the daemon as `WRAPPER... BINARY run ...`, e.g. under `setpriv` as another user.
    /// The wrapper must exec the daemon (not fork it), so [`Gateway::pid`] is the daemon's.
    pub fn wrapper(mut self, wrapper: Vec<String>) -> Self {
        self.wrapper = wrapper;
        self
    }

    /// Runs this binary instead of [`binary_path`] (e.g. a copy another user can execute).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Keeps the daemon's default probes on (`--default-probes true`, the daemon's own
    /// default), for tests of them.
    pub fn default_probes(mut self) -> Self {
        self.default_probes = true;
        self
    }

    /// Adds one more `gateway run` argument (e.g. `--tunnel-idle-timeout-secs`, then `2`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// `--shutdown-drain-secs`: how long open tunnels and requests may run after SIGTERM.
    pub fn shutdown_drain_secs(self, secs: u64) -> Self {
        self.arg("--shutdown-drain-secs").arg(secs.to_string())
    }

    /// `--handshake-timeout-secs`: how long the client's request head and the backend's
    /// answer may take.
    pub fn handshake_timeout_secs(self, secs: u64) -> Self {
        self.arg("--handshake-timeout-secs").arg(secs.to_string())
    }

    /// The backend every request goes to (required).
    pub fn backend(mut self, addr: SocketAddr) -> Self {
        self.backend = Some(addr);
        self
    }

    /// A configuration file for `gateway run --config`.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// The data path for upgraded tunnels (default: userspace).
    pub fn dataplane(mut self, dataplane: Dataplane) -> Self {
        self.dataplane = dataplane;
        self
    }

    /// Starts the daemon and waits for its ready line; panics with its stderr if it exits or
    /// does not become ready in time.
    pub fn start(self) -> Gateway {
        assert!(
            self.backend.is_some() || self.config.is_some(),
            "Gateway::builder() needs .backend(addr) or .config(path)"
        );
        let binary = self.binary.clone().unwrap_or_else(binary_path);
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command.arg("run");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        if let Some(backend) = self.backend {
            command.args(["--listen", "127.0.0.1:0", "--backend", &backend.to_string()]);
        }
        command
            .args(["--dataplane", self.dataplane.as_str()])
            // Plain log lines in the forwarded stderr.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.admin {
            command.args(["--admin", "127.0.0.1:0"]);
        }
        if !self.default_probes {
            command.args(["--default-probes", "false"]);
        }
        if !self.lazy_splice {
            command.args(["--splice-after-bytes", "0"]);
        }
        if !self.per_ip_limits {
            command.args([
                "--max-connections-per-ip",
                "0",
                "--upgrades-per-ip-per-sec",
                "0",
            ]);
        }
        command.args(&self.extra_args);
        if let Some(limit) = self.nofile_limit {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit(2), which is async-signal-safe, on a value copied into it.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", binary.display()));
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = forward_stderr(
            pid,
            child.stderr.take().expect("child stderr is piped"),
            &stderr,
        );
        let ready = watch_stdout(pid, child.stdout.take().expect("child stdout is piped"));

        let mut gateway = Gateway {
            child,
            pid,
            listen: "0.0.0.0:0".parse().expect("placeholder address"),
            listens: Vec::new(),
            admin: None,
            dataplane: String::new(),
            stderr,
            stderr_thread: Some(stderr_thread),
            exit_expected: false,
        };
        let line = match ready.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "gateway not ready after {READY_TIMEOUT:?}; stderr:\n{}",
                    gateway.stderr_text()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => gateway.died_before_ready(),
        };
        let ready =
            ReadyLine::parse(&line).unwrap_or_else(|why| panic!("bad ready line {line:?}: {why}"));
        if self.dataplane != Dataplane::Auto {
            assert_eq!(
                ready.dataplane,
                self.dataplane.as_str(),
                "dataplane in the ready line {line:?}"
            );
        }
        gateway.listen = ready.listen;
        gateway.listens = ready.listens;
        gateway.admin = ready.admin;
        gateway.dataplane = ready.dataplane;
        gateway
    }
}

/// A running gateway; killed when dropped.
pub struct Gateway {
    child: Child,
    pid: u32,
    listen: SocketAddr,
    listens: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    dataplane: String,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    /// Set once the test asked the daemon to stop: exiting is then not a failure.
    exit_expected: bool,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            backend: None,
            config: None,
            dataplane: Dataplane::Userspace,
            admin: true,
            extra_args: Vec::new(),
            wrapper: Vec::new(),
            binary: None,
            default_probes: false,
            lazy_splice: false,
            per_ip_limits: false,
            nofile_limit: None,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the daemon. From then on its exit is
    /// expected: dropping the handle no longer fails the test because it exited.
    pub fn send_signal(&mut self, signal: libc::c_int) {
        self.exit_expected = true;
        self.kill(signal);
    }

    /// Sends SIGHUP: the daemon reloads its configuration. Its exit stays unexpected: it
    /// must keep running whatever the reload's outcome.
    pub fn sighup(&self) {
        self.kill(libc::SIGHUP);
    }

    /// kill(2) of the daemon with `signal`.
    fn kill(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid).expect("the daemon's pid fits in pid_t");
        // SAFETY: kill(2) takes plain integers. `pid` is our child and is only reaped by
        // `wait_exit` and `Drop`, so it cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Sends SIGTERM: the daemon starts its graceful shutdown.
    pub fn terminate(&mut self) {
        self.send_signal(libc::SIGTERM);
    }

    /// Waits (polling, at most `limit`) for the daemon to exit and returns its status once
    /// its stderr has been read to the end, so [`Gateway::stderr_text`] is complete. Panics
    /// if it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        self.exit_expected = true;
        let mut status = None;
        eventually(limit, "the gateway exits", || match self.child.try_wait() {
            Ok(Some(exited)) => {
                status = Some(exited);
                Ok(())
            }
            Ok(None) => Err("still running".to_owned()),
            Err(err) => panic!("wait for the gateway: {err}"),
        })
        .await;
        if let Some(thread) = self.stderr_thread.take() {
            // The child exited, so its stderr ends: this returns.
            let _ = thread.join();
        }
        status.expect("eventually returned, so the gateway exited")
    }

    /// Where clients connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Every bind the gateway listens on, in the order of its configuration.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listens
    }

    /// The admin listener (`/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .expect("the gateway reported no admin listener (admin=-)")
    }

    /// The data path the gateway reported in its ready line: `ebpf` or `userspace`.
    pub fn dataplane(&self) -> &str {
        &self.dataplane
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The current `/metrics` page.
    pub fn metrics(&self) -> Metrics {
        Metrics::fetch(self.admin_addr())
    }

    /// Keys in each of the gateway's hash-like eBPF maps (`SPLICED`, `PEERS`, `FLOWS`), by name.
    pub fn ebpf_map_entries(&self) -> BTreeMap<String, usize> {
        maps::map_entries(self.pid)
    }

    /// Open descriptors of the gateway process.
    pub fn fd_count(&self) -> usize {
        maps::fd_count(self.pid)
    }

    /// Open socket descriptors of the gateway process.
    pub fn socket_fd_count(&self) -> usize {
        maps::socket_fd_count(self.pid)
    }

    /// Waits until every tunnel is gone: the gateway holds `baseline_sockets` socket descriptors
    /// again (those it had once ready) and, on the eBPF dataplane, `SPLICED`, `PEERS` and `FLOWS`
    /// are empty and nothing is lent from the backlog pool (when there is an admin listener).
    pub async fn wait_tunnels_gone(&self, baseline_sockets: usize) {
        let ebpf = self.dataplane == Dataplane::Ebpf.as_str();
        eventually(TEARDOWN_TIMEOUT, "tunnels torn down", || {
            let sockets = self.socket_fd_count();
            if sockets != baseline_sockets {
                return Err(format!(
                    "{sockets} socket fds open, {baseline_sockets} after start-up"
                ));
            }
            if ebpf {
                let entries = self.ebpf_map_entries();
                for name in [names::SPLICED, names::PEERS, names::FLOWS] {
                    match entries.get(name) {
                        None => panic!("the gateway holds no eBPF map {name}; found {entries:?}"),
                        Some(0) => {}
                        Some(_) => return Err(format!("eBPF maps not empty: {entries:?}")),
                    }
                }
                // Closed tunnels give back what their flows borrowed.
                if let Some(admin) = self.admin {
                    let lent =
                        Metrics::fetch(admin).metric("gateway_splice_backlog_pool_lent_bytes", &[]);
                    if lent != 0.0 {
                        return Err(format!("{lent} bytes still lent from the backlog pool"));
                    }
                }
            }
            Ok(())
        })
        .await;
    }

    /// Waits (up to 10 s) until the gateway's stderr satisfies `check`, and returns it: a
    /// log line can reach the pipe after the response the test already holds.
    pub async fn logged(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut seen = String::new();
        eventually(Duration::from_secs(10), what, || {
            seen = self.stderr_text();
            if check(&seen) {
                Ok(())
            } else {
                Err(seen.clone())
            }
        })
        .await;
        seen
    }

    /// The gateway's stderr so far (its last lines).
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// Panics with the exit status and the complete stderr of a gateway that exited early.
    fn died_before_ready(&mut self) -> ! {
        let status = self
            .child
            .wait()
            .expect("wait for the gateway that closed its stdout");
        if let Some(thread) = self.stderr_thread.take() {
            // The child exited, so its stderr ends: this returns.
            let _ = thread.join();
        }
        panic!(
            "gateway exited before it was ready ({status}); stderr:\n{}",
            self.stderr_text()
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(status) = exited {
            if !thread::panicking() && !self.exit_expected {
                panic!(
                    "gateway exited during the test ({status}); stderr:\n{}",
                    self.stderr_text()
                );
            }
        }
    }
}

/// The fields of `gateway ready listen=http://A[,https://A2...] admin=http://B|- dataplane=D`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyLine {
    pub listen: SocketAddr,
    /// Every bind, in the order of the configuration (`listen` is the first).
    pub listens: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub dataplane: String,
}

impl ReadyLine {
    pub fn parse(line: &str) -> Result<Self, String> {
        let fields = line
            .strip_prefix(READY_PREFIX)
            .ok_or("no `gateway ready` prefix")?;
        let field = |name: &str| {
            fields
                .split_whitespace()
                .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| format!("no {name}= field"))
        };
        let addr = |url: &str| {
            let authority = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or(url)
                .trim_end_matches('/');
            authority
                .parse::<SocketAddr>()
                .map_err(|error| format!("bad address {url:?}: {error}"))
        };
        let admin = match field("admin")? {
            "-" => None,
            url => Some(addr(url)?),
        };
        // Several binds are listed comma-separated; the first is the one most tests use.
        let listens = field("listen")?
            .split(',')
            .map(addr)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            listen: *listens.first().ok_or("no listen address")?,
            listens,
            admin,
            dataplane: field("dataplane")?.to_owned(),
        })
    }
}

/// Forwards the child's stderr to the test's stderr, prefixed, keeping the last lines.
fn forward_stderr(
    pid: u32,
    stderr: impl Read + Send + 'static,
    kept: &Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    let kept = Arc::clone(kept);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[gateway {pid}] {line}");
            if let Ok(mut kept) = kept.lock() {
                if kept.len() == STDERR_LINES_KEPT {
                    kept.remove(0);
                }
                kept.push(line);
            }
        }
    })
}

/// Reads the child's stdout: sends the ready line on the returned channel and forwards every
/// other line to the test's stderr. The channel disconnects if stdout ends first.
fn watch_stdout(pid: u32, stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(READY_PREFIX) {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(line);
                    continue;
                }
            }
            eprintln!("[gateway {pid} stdout] {line}");
        }
    });
    ready_rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let line = "gateway ready listen=http://127.0.0.1:43211 admin=http://127.0.0.1:40000 dataplane=ebpf";
        let ready = ReadyLine::parse(line).expect("parse a ready line");
        assert_eq!(ready.listen, "127.0.0.1:43211".parse().expect("address"));
        assert_eq!(
            ready.admin,
            Some("127.0.0.1:40000".parse().expect("address"))
        );
        assert_eq!(ready.dataplane, "ebpf");
        let ready =
            ReadyLine::parse("gateway ready listen=http://127.0.0.1:1 admin=- dataplane=userspace")
                .expect("parse a ready line without admin");
        assert_eq!(ready.admin, None);
        assert!(ReadyLine::parse("gateway listening").is_err());
        let two =
            "gateway ready listen=http://127.0.0.1:1,https://127.0.0.1:2 admin=- dataplane=ebpf";
        let ready = ReadyLine::parse(two).expect("parse a ready line with two binds");
        assert_eq!(ready.listen, "127.0.0.1:1".parse().expect("address"));
        assert_eq!(ready.listens.len(), 2);
        assert_eq!(ready.listens[1], "127.0.0.1:2".parse().expect("address"));
    }
}
