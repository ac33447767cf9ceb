//! Every proxy for real: started against a tiny echo backend, an upgrade and 1 MiB echoed
//! through it and verified, its processes measured, and stopped.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{echo_backend::EchoBackend, probe, Proxy, ProxyConfig};
use crate::{model::PathKind, procstat};

/// Bytes echoed through each proxy.
const ECHO_BYTES: usize = 1 << 20;

/// Rounds of upgrades opened all at once, how many each, and how long one may take
/// (healthy: milliseconds; the stall this guards against lasted until the next connect).
const BURST_ROUNDS: usize = 300;
const BURST_TUNNELS: usize = 20;
const BURST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_forwards_a_tunnel() {
    let dir = check_path(PathKind::Nginx, Path::new("/nonexistent/gateway")).await;
    let error_log = std::fs::read_to_string(dir.path().join("nginx/error.log"))
        .expect("read nginx's error log");
    assert!(
        error_log.contains("using inherited sockets"),
        "nginx did not take the inherited socket:\n{error_log}"
    );
    assert!(!error_log.contains("bind()"), "{error_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_forwards_a_tunnel() {
    check_path(PathKind::Haproxy, Path::new("/nonexistent/gateway")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_splice_forwards_a_tunnel() {
    check_path(PathKind::HaproxySplice, Path::new("/nonexistent/gateway")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_userspace_forwards_a_tunnel() {
    if let Some(gateway) = gateway_bin("gateway_userspace_forwards_a_tunnel") {
        check_path(PathKind::GatewayUserspace, &gateway).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_ebpf_forwards_a_tunnel() {
    if let Some(gateway) = gateway_bin("gateway_ebpf_forwards_a_tunnel") {
        check_path(PathKind::GatewayEbpf, &gateway).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_is_the_backend() {
    let backend = EchoBackend::start().await;
    let dir = TestDir::new("direct");
    let proxy = Proxy::start(PathKind::Direct, &config(&dir, &backend, Path::new("/")))
        .await
        .expect("start the direct path");
    assert_eq!(proxy.addr(), backend.addr());
    assert!(proxy.pids().is_empty());
    assert_eq!(proxy.setup().version, None);
    echo_through(proxy.addr()).await;
    proxy.stop().await.expect("stop the direct path");
}

/// Bursts of upgrades at once never stall: a blocking inherited listening socket once made
/// an nginx worker sleep in accept() with connections it had accepted left unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upgrades_never_stall() {
    let backend = EchoBackend::start().await;
    for kind in [PathKind::Nginx, PathKind::Haproxy] {
        let dir = TestDir::new(&format!("{}-burst", kind.label()));
        let proxy = Proxy::start(
            kind,
            &config(&dir, &backend, Path::new("/nonexistent/gateway")),
        )
        .await
        .unwrap_or_else(|error| panic!("start {}: {error:#}", kind.label()));
        let addr = proxy.addr();
        for round in 0..BURST_ROUNDS {
            let burst: Vec<_> = (0..BURST_TUNNELS)
                .map(|_| tokio::spawn(upgrade_and_ping(addr)))
                .collect();
            let mut open = Vec::new();
            for tunnel in burst {
                let stream = tokio::time::timeout(BURST_DEADLINE, tunnel)
                    .await
                    .unwrap_or_else(|_| panic!("{} round {round}: a tunnel stalled", kind.label()))
                    .expect("the tunnel task");
                open.push(stream);
            }
        }
        proxy
            .stop()
            .await
            .unwrap_or_else(|error| panic!("stop {}: {error:#}", kind.label()));
    }
}

/// Upgrades through `addr` and echoes 64 bytes; returns the open tunnel.
async fn upgrade_and_ping(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(probe::upgrade_request(addr).as_bytes())
        .await
        .expect("send the upgrade request");
    let (status, _) = probe::read_response_head(&mut stream)
        .await
        .expect("read the upgrade response");
    assert_eq!(status, 101);
    stream.write_all(&[7; 64]).await.expect("send a ping");
    let mut pong = [0; 64];
    stream.read_exact(&mut pong).await.expect("read the pong");
    assert_eq!(pong, [7; 64]);
    stream
}

/// Sized for 10 000 tunnels, the proxies still start under this machine's descriptor
/// limit (HAProxy refuses to if its connections and pipes cannot fit in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_start_when_sized_for_many_tunnels() {
    let backend = EchoBackend::start().await;
    for kind in [PathKind::Nginx, PathKind::Haproxy, PathKind::HaproxySplice] {
        let dir = TestDir::new(&format!("{}-many", kind.label()));
        let cfg = ProxyConfig {
            max_tunnels: 10_000,
            ..config(&dir, &backend, Path::new("/nonexistent/gateway"))
        };
        let proxy = Proxy::start(kind, &cfg)
            .await
            .unwrap_or_else(|error| panic!("start {}: {error:#}", kind.label()));
        eprintln!("{}: {}", kind.label(), proxy.setup().settings);
        echo_through(proxy.addr()).await;
        proxy
            .stop()
            .await
            .unwrap_or_else(|error| panic!("stop {}: {error:#}", kind.label()));
    }
}

/// A proxy that died before `stop` is reported, with its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_reports_an_early_death() {
    let backend = EchoBackend::start().await;
    let dir = TestDir::new("early-death");
    let proxy = Proxy::start(
        PathKind::Haproxy,
        &config(&dir, &backend, Path::new("/nonexistent/gateway")),
    )
    .await
    .expect("start haproxy");
    let pid = libc::pid_t::try_from(proxy.pids()[0]).expect("pid fits in pid_t");
    // SAFETY: kill(2) takes plain integers; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until_dead(pid).await;
    let error = proxy
        .stop()
        .await
        .expect_err("stop must report that haproxy had died");
    let text = format!("{error:#}");
    assert!(text.contains("before it was stopped"), "{text}");
    assert!(text.contains("haproxy.log"), "{text}");
}

/// Waits until the kernel has finished killing `pid`, so the test does not race the
/// signal: the process is a zombie and none of its threads is still exiting (a zombie
/// leader cannot be reaped before the rest of its thread group is gone).
async fn wait_until_dead(pid: libc::pid_t) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
        if zombie && threads <= 1 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} survives SIGKILL"
        );
        tokio::task::yield_now().await;
    }
}

/// Starts `kind`, checks its processes and one verified echo through it, stops it. Returns
/// the work directory (removed when dropped, unless the test failed).
async fn check_path(kind: PathKind, gateway: &Path) -> TestDir {
    let backend = EchoBackend::start().await;
    let dir = TestDir::new(kind.label());
    let proxy = Proxy::start(kind, &config(&dir, &backend, gateway))
        .await
        .unwrap_or_else(|error| panic!("start {}: {error:#}", kind.label()));
    assert_eq!(proxy.kind(), kind);
    assert_ne!(proxy.addr(), backend.addr());
    let setup = proxy.setup();
    eprintln!(
        "{}: {} · {}",
        kind.label(),
        setup.version.as_deref().unwrap_or("-"),
        setup.settings
    );
    assert!(setup.version.is_some());

    echo_through(proxy.addr()).await;

    let pids = proxy.pids();
    assert!(!pids.is_empty(), "no processes for {}", kind.label());
    let rss = procstat::rss_bytes(&pids).expect("rss of the proxy");
    assert!(rss > 0, "{pids:?}");
    let cpu = procstat::cpu_snapshot(&pids).expect("cpu snapshot of the proxy");
    assert!(cpu.since(&cpu).proxy_secs == 0.0);

    proxy
        .stop()
        .await
        .unwrap_or_else(|error| panic!("stop {}: {error:#}", kind.label()));
    assert!(
        procstat::process_tree(pids[0]).is_empty(),
        "{} still runs after stop",
        kind.label()
    );
    dir
}

/// Upgrades a connection to `addr`, echoes [`ECHO_BYTES`] and compares length and CRC-32.
async fn echo_through(addr: std::net::SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(probe::upgrade_request(addr).as_bytes())
        .await
        .expect("send the upgrade request");
    let (status, leftover) = probe::read_response_head(&mut stream)
        .await
        .expect("read the upgrade response");
    assert_eq!(status, 101);
    assert!(leftover.is_empty(), "bytes after the 101: {leftover:?}");

    let payload = pseudo_random(ECHO_BYTES);
    let sent_crc = crc32fast::hash(&payload);
    let (mut reader, mut writer) = stream.into_split();
    // Written while reading, so neither side's buffers need to hold it all. No half-close:
    // nginx closes both sides of a tunnel when one reaches EOF.
    let send = tokio::spawn(async move {
        writer.write_all(&payload).await.expect("send the payload");
        writer
    });
    let mut received = vec![0_u8; ECHO_BYTES];
    reader
        .read_exact(&mut received)
        .await
        .expect("read the echo back");
    let _writer = send.await.expect("the sending task");
    assert_eq!(received.len(), ECHO_BYTES);
    assert_eq!(crc32fast::hash(&received), sent_crc, "echo differs");
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            // xorshift64: cheap bytes that are not all the same.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn config<'a>(dir: &'a TestDir, backend: &EchoBackend, gateway: &'a Path) -> ProxyConfig<'a> {
    ProxyConfig {
        gateway_bin: gateway,
        work_dir: dir.path(),
        backend: backend.addr(),
        max_tunnels: 100,
        gateway_args: &[],
    }
}

/// `$GATEWAY_BIN`, or `None` after saying loudly that the test is skipped. Written to the
/// real stderr, not through `eprintln!`, which the test harness swallows for passing tests.
fn gateway_bin(test: &str) -> Option<PathBuf> {
    use std::io::Write as _;
    if let Some(path) = std::env::var_os("GATEWAY_BIN") {
        return Some(PathBuf::from(path));
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED {test}: GATEWAY_BIN is not set. Build the gateway \
         (`cargo xtask build --release`) and run with \
         GATEWAY_BIN=$PWD/target/release/gateway !!!\n"
    );
    None
}

/// A fresh directory for one test's configs and logs; kept if the test fails.
struct TestDir(PathBuf);

impl TestDir {
    fn new(label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "gateway-bench-test-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create the test directory");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
