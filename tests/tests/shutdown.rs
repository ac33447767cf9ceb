//! Graceful shutdown on SIGTERM: the listeners close at once (new connects are refused),
//! open tunnels and requests in flight may finish during `--shutdown-drain-secs`, what is
//! still open afterwards is closed, and the daemon exits 0; on both dataplanes.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client::{self, RawTunnel},
    data::{random_bytes, read_to_eof, seeded_rng, Hasher, Summary},
    dataplane_tests,
    http::{self, Head},
    skip_unprivileged,
    tunnels::{self, assert_spliced},
    wait::{eventually, within},
    Dataplane, Gateway,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
};

/// Bytes the client sends through the tunnel after SIGTERM (echoed back).
const AFTER_SIGNAL_BYTES: u64 = 4 << 20;
/// Bytes sent through a tunnel before the signal, to know it is open end to end.
const PROBE_BYTES: usize = 64 * 1024;
/// A drain long enough that a test finishing within it shows the gateway did not wait it out.
const LONG_DRAIN_SECS: u64 = 60;
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the listeners may take to close after SIGTERM.
const REFUSED_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may take to exit once nothing is left open.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A backend that answers the upgrade and echoes every byte until the client's EOF, then
/// half-closes; reports what it echoed.
async fn echo_backend() -> RawBackend<io::Result<Summary>> {
    RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        conn.echo_to_eof().await
    })
    .await
}

/// What [`probe`] sends.
fn probe_bytes() -> Vec<u8> {
    (0..PROBE_BYTES).map(|i| (i % 251) as u8).collect()
}

/// Sends [`probe_bytes`] and reads them back: the tunnel is open end to end.
async fn probe(stream: &mut TcpStream, leftover: &[u8]) {
    assert!(leftover.is_empty(), "nothing is sent before the probe");
    let sent = probe_bytes();
    stream.write_all(&sent).await.expect("client sends a probe");
    let mut echoed = vec![0; PROBE_BYTES];
    within(
        STEP_TIMEOUT,
        "the probe comes back",
        stream.read_exact(&mut echoed),
    )
    .await
    .expect("client reads the probe back");
    assert_eq!(
        Summary::of(&echoed),
        Summary::of(&sent),
        "probe echoed intact"
    );
}

/// An [`echo_backend`], a gateway in front of it draining for `drain_secs` on SIGTERM, and a
/// tunnel through it to `path`, opened in `dataplane`'s mode (on eBPF: spliced, its probe
/// carried by the kernel) and [`probe`]d open end to end.
async fn probed_tunnel(
    dataplane: Dataplane,
    drain_secs: u64,
    path: &str,
) -> (RawBackend<io::Result<Summary>>, Gateway, RawTunnel) {
    let backend = echo_backend().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .shutdown_drain_secs(drain_secs)
        .start();
    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), path, &[]).await;
    within(
        STEP_TIMEOUT,
        "the tunnel opens",
        tunnels::wait_opened(&gateway, dataplane, 1.0),
    )
    .await;
    probe(&mut tunnel.stream, &tunnel.leftover).await;
    if dataplane == Dataplane::Ebpf {
        assert_spliced(&gateway, "client_to_backend", PROBE_BYTES as u64);
        assert_spliced(&gateway, "backend_to_client", PROBE_BYTES as u64);
    }
    (backend, gateway, tunnel)
}

/// Waits for the daemon to exit, panics unless it exited 0, and returns its stderr.
async fn wait_clean_exit(gateway: &mut Gateway) -> String {
    let status = gateway.wait_exit(EXIT_TIMEOUT).await;
    let stderr = gateway.stderr_text();
    assert!(
        status.success(),
        "gateway exit status {status}; stderr:\n{stderr}"
    );
    stderr
}

/// Polls `addr` until a connect is refused: the gateway closed its listener.
async fn wait_refused(addr: SocketAddr) {
    within(REFUSED_TIMEOUT, "new connects are refused", async {
        loop {
            match TcpStream::connect(addr).await {
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => return,
                // A connect that lands while the listener is being closed is reset rather
                // than refused: not accepted either; the next one is refused.
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("connect to the draining gateway: unexpected error {err}"),
                // Still listening: the accepted connection is dropped at once.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}

/// Reads until EOF or an error: how a peer sees the tunnel closed.
async fn read_until_closed(stream: &mut TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf).await? {
            0 => return Ok(total),
            read => total += read as u64,
        }
    }
}

/// Waits until the gateway logged a line containing every one of `parts`.
async fn wait_logged(gateway: &Gateway, parts: &[&str]) {
    eventually(STEP_TIMEOUT, "the gateway logs the line", || {
        let text = gateway.stderr_text();
        if text
            .lines()
            .any(|line| parts.iter().all(|part| line.contains(part)))
        {
            Ok(())
        } else {
            Err(format!("no line with {parts:?} yet"))
        }
    })
    .await;
}

/// SIGTERM with a live tunnel: new connects are refused, the tunnel keeps carrying bytes
/// both ways, and once the client and the backend close it the gateway exits 0 long before
/// the drain period is over.
async fn a_live_tunnel_finishes_during_the_drain(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut rng = seeded_rng(test);
    let (mut backend, mut gateway, mut tunnel) =
        probed_tunnel(dataplane, LONG_DRAIN_SECS, "/drain").await;

    let signalled = Instant::now();
    gateway.terminate();
    wait_refused(gateway.listen_addr()).await;
    wait_logged(&gateway, &["draining", "tunnels=1"]).await;

    let payload = random_bytes(&mut rng, AFTER_SIGNAL_BYTES as usize);
    let echoed = within(STEP_TIMEOUT, "bytes through the draining tunnel", async {
        let (mut reader, mut writer) = tunnel.stream.split();
        let send = async {
            writer
                .write_all(&payload)
                .await
                .expect("client sends after SIGTERM");
            writer.shutdown().await.expect("client half-closes");
        };
        let ((), echoed) = tokio::join!(send, read_to_eof(&mut reader, &[]));
        echoed.expect("client reads the echo to EOF")
    })
    .await;
    let backend_echoed = backend
        .next_result()
        .await
        .expect("backend echoes to the client's EOF");

    let status = gateway.wait_exit(EXIT_TIMEOUT).await;
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "gateway exit status {status}; stderr:\n{}",
        gateway.stderr_text()
    );
    assert!(
        took < Duration::from_secs(LONG_DRAIN_SECS),
        "the gateway waited out the drain ({took:?}) although nothing was left open"
    );
    let mut all = Hasher::default();
    all.update(&probe_bytes());
    all.update(&payload);
    assert_eq!(
        backend_echoed,
        all.finish(),
        "backend got the probe and every byte sent after SIGTERM, then EOF"
    );
    assert_eq!(
        echoed,
        Summary::of(&payload),
        "every byte sent after SIGTERM came back, then EOF"
    );
    let stderr = gateway.stderr_text();
    assert!(
        stderr.contains("shutdown complete") && stderr.contains("drained=true"),
        "the gateway logs a drained shutdown; stderr:\n{stderr}"
    );
}

/// SIGTERM with a tunnel that stays open: once the drain period (1 s) is over the gateway
/// closes it (both peers see EOF or a reset) and exits 0.
async fn a_tunnel_open_past_the_drain_is_closed(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    const DRAIN: Duration = Duration::from_secs(1);
    let (mut backend, mut gateway, mut tunnel) =
        probed_tunnel(dataplane, DRAIN.as_secs(), "/stay").await;

    let signalled = Instant::now();
    gateway.terminate();
    let client_saw = within(
        STEP_TIMEOUT,
        "the client sees the tunnel closed",
        read_until_closed(&mut tunnel.stream),
    )
    .await;
    let closed_after = signalled.elapsed();
    // The backend's echo ends on EOF (Ok) or on a reset (Err): either way it ended.
    let backend_saw = within(
        STEP_TIMEOUT,
        "the backend sees the tunnel closed",
        backend.next_result(),
    )
    .await;
    let stderr = wait_clean_exit(&mut gateway).await;

    assert!(
        closed_after >= DRAIN - Duration::from_millis(100),
        "the tunnel was closed {closed_after:?} after SIGTERM, before the drain period was over"
    );
    match client_saw {
        Ok(0) => {}
        Ok(extra) => panic!("client got {extra} unexpected bytes before the close"),
        Err(err) => assert_eq!(
            err.kind(),
            io::ErrorKind::ConnectionReset,
            "client read error: {err}"
        ),
    }
    if let Ok(echoed) = backend_saw {
        assert_eq!(
            echoed,
            Summary::of(&probe_bytes()),
            "backend echoed the probe only"
        );
    }
    assert!(
        stderr.contains("drain period over"),
        "the gateway logs the end of the drain; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("exiting anyway"),
        "the tunnel did not close itself when cancelled; the gateway had to exit over it; \
         stderr:\n{stderr}"
    );
}

/// A second signal during the drain ends it at once (exit 0), tunnel or not.
async fn a_second_signal_exits_at_once(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let (_backend, mut gateway, mut tunnel) =
        probed_tunnel(dataplane, LONG_DRAIN_SECS, "/twice").await;

    gateway.terminate();
    wait_logged(&gateway, &["draining", "tunnels=1"]).await;
    gateway.send_signal(libc::SIGINT);
    let stderr = wait_clean_exit(&mut gateway).await;
    assert!(
        stderr.contains("second signal"),
        "the gateway logs why it did not finish the drain; stderr:\n{stderr}"
    );
    // EOF or a reset: either way it ends, bounded.
    let _closed = within(
        STEP_TIMEOUT,
        "the client sees the tunnel closed with the process",
        read_until_closed(&mut tunnel.stream),
    )
    .await;
}

const PLAIN_BODY: &str = "answered during the drain\n";

/// Plain HTTP during the drain: a request in flight at SIGTERM is answered (with
/// `Connection: close`) and an idle keep-alive connection is closed at once, so neither
/// holds the drain open. Dataplane-independent (no tunnel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_in_flight_finishes_and_idle_keep_alive_closes() {
    // The first request is answered at once; the second waits for `release`.
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = std::sync::Mutex::new(Some(release_rx));
    let backend = RawBackend::start(move |mut conn: RawConn| {
        let wait = if conn.request.path() == "/slow" {
            release.lock().expect("release lock").take()
        } else {
            None
        };
        async move {
            if let Some(wait) = wait {
                let _ = wait.await;
            }
            conn.answer_200(PLAIN_BODY).await;
            let _ = conn.stream.shutdown().await;
        }
    })
    .await;
    let mut gateway = Gateway::builder()
        .backend(backend.addr())
        .shutdown_drain_secs(LONG_DRAIN_SECS)
        .start();
    let addr = gateway.listen_addr();

    // A keep-alive connection, answered once and left idle.
    let mut idle = TcpStream::connect(addr).await.expect("connect (idle)");
    idle.write_all(format!("GET /fast HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send the first request");
    let (head, leftover) = within(STEP_TIMEOUT, "first answer", http::read_head(&mut idle))
        .await
        .expect("read the first answer");
    assert_eq!(head.status(), Some(200), "first answer:\n{}", head.text());
    let body = http::read_body(&mut idle, &head, leftover)
        .await
        .expect("read the first body");
    assert_eq!(body, PLAIN_BODY.as_bytes());

    // A request in flight: the backend holds its answer.
    let mut busy = TcpStream::connect(addr).await.expect("connect (busy)");
    busy.write_all(format!("GET /slow HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send the slow request");
    eventually(STEP_TIMEOUT, "the slow request reaches the backend", || {
        if backend
            .requests()
            .iter()
            .any(|r: &Head| r.path() == "/slow")
        {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;

    let signalled = Instant::now();
    gateway.terminate();
    wait_refused(addr).await;
    let idle_closed = within(
        STEP_TIMEOUT,
        "the idle keep-alive connection is closed",
        read_until_closed(&mut idle),
    )
    .await;
    assert!(
        matches!(idle_closed, Ok(0)),
        "idle connection: {idle_closed:?}"
    );

    release_tx.send(()).expect("the backend waits for release");
    let (head, leftover) = within(STEP_TIMEOUT, "the slow answer", http::read_head(&mut busy))
        .await
        .expect("read the slow answer");
    assert_eq!(head.status(), Some(200), "slow answer:\n{}", head.text());
    assert_eq!(
        head.header("connection"),
        Some("close"),
        "a draining gateway says it closes:\n{}",
        head.text()
    );
    let body = http::read_body(&mut busy, &head, leftover)
        .await
        .expect("read the slow body");
    assert_eq!(body, PLAIN_BODY.as_bytes());
    let after = within(
        STEP_TIMEOUT,
        "the busy connection closes after its answer",
        read_until_closed(&mut busy),
    )
    .await;
    assert!(matches!(after, Ok(0)), "busy connection: {after:?}");

    let status = gateway.wait_exit(EXIT_TIMEOUT).await;
    assert!(
        status.success(),
        "gateway exit status {status}; stderr:\n{}",
        gateway.stderr_text()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(LONG_DRAIN_SECS),
        "the gateway waited out the drain although nothing was left open"
    );
}

dataplane_tests!(a_live_tunnel_finishes_during_the_drain => a_live_tunnel_finishes_during_the_drain_ebpf, a_live_tunnel_finishes_during_the_drain_userspace);
dataplane_tests!(a_tunnel_open_past_the_drain_is_closed => a_tunnel_open_past_the_drain_is_closed_ebpf, a_tunnel_open_past_the_drain_is_closed_userspace);
dataplane_tests!(a_second_signal_exits_at_once => a_second_signal_exits_at_once_ebpf, a_second_signal_exits_at_once_userspace);
