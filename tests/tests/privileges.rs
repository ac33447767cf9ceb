//! Capabilities after start-up. The gateway loads eBPF and binds with the capabilities it
//! was started with, then keeps only what serving needs (`CAP_NET_BIND_SERVICE`, and
//! `CAP_NET_ADMIN` while `--tunnel-sndbuf-bytes` forces send buffers, as by default) on every
//! thread, and
//! still splices tunnels with every byte intact: using the maps it already holds needs none
//! of the dropped capabilities. Run as root, and as an unprivileged user holding only the four
//! capabilities `deploy/gateway.service` grants (through `setpriv`, as systemd would).

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use gateway_tests::{
    backend::EchoBackend,
    client,
    data::seeded_rng,
    gateway::binary_path,
    oneshot::ScratchDir,
    skip_unprivileged,
    sockstat::ss_tcp_sockets,
    wait::{eventually, within},
    ws_echo::echo_random_messages,
    Dataplane, Gateway,
};

const CAP_SETPCAP: u32 = 8;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_BPF: u32 = 39;
const CAP_PERFMON: u32 = 38;
/// The unprivileged user of the systemd-like run (`nobody`).
const NOBODY: u32 = 65534;
/// Ports tried, in order, for the unprivileged gateway's listener below 1024.
const LOW_PORT_FIRST: u16 = 600;
const LOW_PORT_LAST: u16 = 999;
/// 8 MiB each way through each tunnel.
const MESSAGES: usize = 32;
const MESSAGE_BYTES: usize = 256 * 1024;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

const fn bit(cap: u32) -> u64 {
    1 << cap
}

/// The capability sets of one thread, from the `Cap*:` lines of its `/proc` status.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Caps {
    inheritable: u64,
    permitted: u64,
    effective: u64,
    bounding: u64,
    ambient: u64,
}

impl std::fmt::Debug for Caps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CapInh={:x} CapPrm={:x} CapEff={:x} CapBnd={:x} CapAmb={:x}",
            self.inheritable, self.permitted, self.effective, self.bounding, self.ambient
        )
    }
}

impl Caps {
    fn parse(status: &str) -> Self {
        let set = |name: &str| {
            let hex = status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("no {name} line in:\n{status}"));
            u64::from_str_radix(hex.trim(), 16).expect("a hex capability set")
        };
        Self {
            inheritable: set("CapInh"),
            permitted: set("CapPrm"),
            effective: set("CapEff"),
            bounding: set("CapBnd"),
            ambient: set("CapAmb"),
        }
    }

    fn of_this_process() -> Self {
        Self::parse(&fs::read_to_string("/proc/self/status").expect("read our own status"))
    }

    /// What a gateway started with these sets should hold once it dropped all but `keep`: the
    /// bounding set shrinks only where `CAP_SETPCAP` allows it.
    fn after_drop(self, keep: u64) -> Self {
        let setpcap = self.effective & bit(CAP_SETPCAP) != 0;
        Self {
            inheritable: self.inheritable & keep,
            permitted: self.permitted & keep,
            effective: self.effective & keep,
            bounding: if setpcap {
                self.bounding & keep
            } else {
                self.bounding
            },
            ambient: self.ambient & keep,
        }
    }
}

/// Every thread of process `pid` (tokio's workers included, which serve the connections):
/// its id and its `/proc` status.
fn threads(pid: u32) -> Vec<(u32, String)> {
    let dir = format!("/proc/{pid}/task");
    fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("list {dir}: {error}"))
        .filter_map(|entry| {
            let tid = entry.ok()?.file_name().to_str()?.parse().ok()?;
            Some((tid, fs::read_to_string(format!("{dir}/{tid}/status")).ok()?))
        })
        .collect()
}

/// Asserts that every thread of the gateway holds exactly `expected`.
fn assert_every_thread(gateway: &Gateway, expected: Caps) {
    let threads = threads(gateway.pid());
    assert!(
        threads.len() > 1,
        "the gateway runs tokio worker threads besides its main thread: {threads:?}"
    );
    for (tid, status) in &threads {
        assert_eq!(
            Caps::parse(status),
            expected,
            "capabilities of gateway thread {tid} after start-up"
        );
    }
}

/// Whether this test runs as root; prints why it skips otherwise (never silently).
fn skip_unless_root(test: &str) -> bool {
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED (not root): {test} starts the gateway as root and as another user");
    }
    !root
}

/// A WebSocket tunnel through `listen`: 8 MiB each way checked by length and SHA-256 at
/// the client (sent, echoed back) and at the backend (received, echoed); then the metrics
/// say it was spliced and the kernel moved bytes both ways.
async fn spliced_tunnel_carries_every_byte(
    gateway: &Gateway,
    backend: &mut EchoBackend,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    test: &str,
) {
    let (sent, received) =
        echo_random_messages(ws, seeded_rng(test), MESSAGES, MESSAGE_BYTES, STEP_TIMEOUT).await;
    let record = backend.next_record().await;
    assert_eq!(record.error, None, "echo backend connection error");
    assert_eq!(sent.len, (MESSAGES * MESSAGE_BYTES) as u64);
    assert_eq!(record.received, sent, "bytes the backend received");
    assert_eq!(record.echoed, sent, "bytes the backend echoed");
    assert_eq!(received, sent, "bytes the client got back");

    let metrics = gateway.metrics();
    let opened = |mode| metrics.metric("gateway_tunnels_opened_total", &[("mode", mode)]);
    assert_eq!(opened("spliced"), 1.0, "spliced tunnels:\n{}", metrics.text);
    assert_eq!(
        opened("userspace"),
        0.0,
        "relayed tunnels:\n{}",
        metrics.text
    );
    for direction in ["client_to_backend", "backend_to_client"] {
        let spliced = metrics.metric("gateway_spliced_bytes_total", &[("direction", direction)]);
        assert!(
            spliced > 0.0,
            "the kernel moved bytes {direction} after the drop:\n{}",
            metrics.text
        );
    }
}

async fn connect(listen: SocketAddr) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    within(
        STEP_TIMEOUT,
        "WebSocket upgrade",
        client::ws_connect(listen, "/privileges"),
    )
    .await
}

/// Waits until the log line of the drop is out, and returns it.
async fn drop_log_line(gateway: &Gateway) -> String {
    let stderr = gateway
        .logged("the capabilities-dropped line", |text| {
            text.contains("capabilities dropped")
        })
        .await;
    stderr
        .lines()
        .find(|line| line.contains("capabilities dropped"))
        .expect("the line just seen")
        .to_owned()
}

/// As root with the eBPF dataplane and autotuned send buffers (`--tunnel-sndbuf-bytes 0`):
/// only `CAP_NET_BIND_SERVICE` is left, in every set of every thread (bounding set
/// included), and tunnels are still spliced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_keeps_only_net_bind_service() {
    let test = "root_keeps_only_net_bind_service";
    if skip_unless_root(test) {
        return;
    }
    let mut backend = EchoBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .arg("--tunnel-sndbuf-bytes")
        .arg("0")
        .start();

    let keep = bit(CAP_NET_BIND_SERVICE);
    let expected = Caps::of_this_process().after_drop(keep);
    assert_eq!(
        expected.permitted, keep,
        "root started it with every capability"
    );
    assert_eq!(expected.bounding, keep, "root may shrink the bounding set");
    assert_every_thread(&gateway, expected);
    let line = drop_log_line(&gateway).await;
    assert!(
        line.contains("kept=CAP_NET_BIND_SERVICE ") && line.contains("CAP_BPF"),
        "the log says what was kept and dropped: {line}"
    );

    let ws = connect(gateway.listen_addr()).await;
    spliced_tunnel_carries_every_byte(&gateway, &mut backend, ws, test).await;
}

/// As root with `--tunnel-sndbuf-bytes` past `net.core.wmem_max`: `CAP_NET_ADMIN` stays too,
/// and `SO_SNDBUFFORCE` still works on the spliced sockets after the drop (the send buffer
/// goes past `wmem_max`, which the `SO_SNDBUF` fallback could not do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_with_forced_send_buffer_keeps_net_admin() {
    let test = "root_with_forced_send_buffer_keeps_net_admin";
    if skip_unless_root(test) {
        return;
    }
    let wmem_max: u64 = fs::read_to_string("/proc/sys/net/core/wmem_max")
        .expect("read net.core.wmem_max")
        .trim()
        .parse()
        .expect("wmem_max is a number");
    let sndbuf = (wmem_max + (1 << 20)).min(256 << 20);
    assert!(
        sndbuf > wmem_max,
        "wmem_max {wmem_max} leaves no room to force"
    );
    let mut backend = EchoBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .arg("--tunnel-sndbuf-bytes")
        .arg(sndbuf.to_string())
        .start();

    let keep = bit(CAP_NET_BIND_SERVICE) | bit(CAP_NET_ADMIN);
    let expected = Caps::of_this_process().after_drop(keep);
    assert_eq!(
        expected.permitted, keep,
        "root started it with every capability"
    );
    assert_every_thread(&gateway, expected);
    let line = drop_log_line(&gateway).await;
    assert!(
        line.contains("kept=CAP_NET_BIND_SERVICE,CAP_NET_ADMIN "),
        "the log says what was kept: {line}"
    );

    let ws = connect(gateway.listen_addr()).await;
    // The kernel reports twice the value set (room for its bookkeeping).
    let (listen, pid) = (gateway.listen_addr(), gateway.pid());
    eventually(
        STEP_TIMEOUT,
        "both spliced sockets get the forced send buffer",
        || {
            let ours: Vec<_> = ss_tcp_sockets()
                .into_iter()
                .filter(|s| s.pids.contains(&pid))
                .filter(|s| s.local == Some(listen) || s.peer == Some(backend.addr()))
                .map(|s| s.skmem.sndbuf)
                .collect();
            if ours.len() == 2 && ours.iter().all(|&tb| tb == 2 * sndbuf) {
                Ok(())
            } else {
                Err(format!("send buffers {ours:?}, want 2 × {sndbuf}"))
            }
        },
    )
    .await;
    spliced_tunnel_carries_every_byte(&gateway, &mut backend, ws, test).await;
}

/// `path`, or a copy `nobody` can execute: every directory above it must be searchable and
/// the file readable and executable by others.
fn executable_by_others(path: &Path, scratch: &ScratchDir) -> PathBuf {
    let others_may = |path: &Path, bits: u32| {
        fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & bits == bits)
    };
    let reachable =
        path.ancestors().skip(1).all(|dir| others_may(dir, 0o001)) && others_may(path, 0o005);
    if reachable {
        return path.to_owned();
    }
    let dir = scratch.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("open the scratch dir");
    let copy = dir.join("gateway");
    fs::copy(path, &copy).expect("copy the gateway binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    copy
}

/// A port below 1024 that nothing listens on: bound (as root) and released at once.
fn free_low_port() -> u16 {
    (LOW_PORT_FIRST..=LOW_PORT_LAST)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap_or_else(|| panic!("no free port in {LOW_PORT_FIRST}..={LOW_PORT_LAST}"))
}

/// The systemd unit's way: user `nobody`, `NoNewPrivileges`, and only `CAP_BPF`,
/// `CAP_PERFMON`, `CAP_NET_ADMIN` and `CAP_NET_BIND_SERVICE` (ambient, inheritable,
/// bounding), set by `setpriv`. The gateway loads eBPF with them, binds a port below 1024,
/// drops the first three (autotuned send buffers: it needs no `CAP_NET_ADMIN` then; its
/// bounding set stays the four: it lacks `CAP_SETPCAP`), and
/// splices a tunnel through that port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_user_with_the_units_four_capabilities() {
    let test = "unprivileged_user_with_the_units_four_capabilities";
    if skip_unless_root(test) {
        return;
    }
    let setpriv = Command::new("setpriv").arg("--version").output();
    assert!(
        setpriv.is_ok_and(|out| out.status.success()),
        "setpriv (util-linux) is needed to start the gateway as another user"
    );
    let scratch = ScratchDir::new(test);
    let binary = executable_by_others(&binary_path(), &scratch);
    let caps = "-all,+bpf,+perfmon,+net_admin,+net_bind_service";
    let wrapper = [
        "setpriv".to_owned(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
        "--no-new-privs".to_owned(),
        "--".to_owned(),
    ];
    let port = free_low_port();
    let low: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut backend = EchoBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .arg("--tunnel-sndbuf-bytes")
        .arg("0")
        .arg("--listen")
        .arg(low.to_string())
        .wrapper(wrapper.to_vec())
        .binary(binary)
        .start();
    assert!(
        gateway.listen_addrs().contains(&low),
        "listening on {low}: {:?}",
        gateway.listen_addrs()
    );

    let status =
        fs::read_to_string(format!("/proc/{}/status", gateway.pid())).expect("gateway status");
    let uid_line = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .expect("a Uid line");
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|uid| uid == NOBODY.to_string()),
        "the gateway runs as {NOBODY}: {uid_line}"
    );
    let four = bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_NET_ADMIN) | bit(CAP_NET_BIND_SERVICE);
    let keep = bit(CAP_NET_BIND_SERVICE);
    let expected = Caps {
        inheritable: keep,
        permitted: keep,
        effective: keep,
        bounding: four,
        ambient: keep,
    };
    assert_every_thread(&gateway, expected);
    let line = drop_log_line(&gateway).await;
    assert!(
        line.contains("kept=CAP_NET_BIND_SERVICE dropped=CAP_NET_ADMIN,CAP_PERFMON,CAP_BPF "),
        "the log says what was kept and dropped: {line}"
    );

    let ws = connect(low).await;
    spliced_tunnel_carries_every_byte(&gateway, &mut backend, ws, test).await;
}
