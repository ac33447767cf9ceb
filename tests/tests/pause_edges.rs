//! What a spliced flow does when the connection changes state in the middle of its flow
//! control: a half-close while it is paused, and a reset while the gateway is catching up
//! (forwarding the bytes the verdict passed to userspace during the pause).
//!
//! Each test drives one tunnel into the state it needs, checks from the gateway's own
//! counters that it is there, and only then closes or resets a side:
//! - *paused*: the backend floods a client that does not read, with a 16 KiB budget, until
//!   the verdict has paused the flow (`gateway_splice_pauses_total` above
//!   `gateway_splice_resumes_total`) and passed at least a few MiB to userspace;
//! - *catching up*: the client then reads past what the kernel redirected before the pause
//!   (`gateway_spliced_bytes_total`), so what it reads now was forwarded by the gateway,
//!   while the counters still show passed bytes it has not read.
//!
//! Every byte either end receives is checked by position ([`Pattern`]); a failure names
//! the first wrong offset.
//!
//! And the bound on what is stuck: peers that write without reading pile passed bytes up
//! where no socket accounts for them; the gateway covers those from the shared pool and
//! resets the tunnel when it cannot.

use std::{io, time::Duration};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client::{self, RawTunnel},
    data::test_seed,
    ends::read_until_end,
    metrics::Metrics,
    pattern::{Checker, Pattern},
    skip_unprivileged,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
};

/// `--max-tunnel-backlog-bytes`: far less than one loopback segment, so the flow pauses as
/// soon as the client's buffers are full.
const BUDGET_BYTES: u64 = 16 << 10;
/// Passed bytes the flow must have piled up before the test goes on: enough that a catch-up
/// takes several reads, and well within what the gateway's receive buffer (at least 4 MiB)
/// takes before TCP stops the backend.
const PASSED_BYTES: f64 = (2u64 << 20) as f64;
/// The backend's writes while it floods; the gateway's counters are read between two.
const WRITE_BYTES: usize = 128 << 10;
/// The most the backend may write before the flow has paused: the client's and the
/// gateway's buffers hold far less.
const MOST_BEFORE_PAUSE: u64 = 256 << 20;
/// How far past the redirected bytes the client reads before a reset: the catch-up has begun.
const INTO_CATCH_UP_BYTES: u64 = 512 << 10;
const READ_BYTES: usize = 64 << 10;
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// One spliced tunnel, with both ends in the test's hands.
struct Tunnel {
    gateway: Gateway,
    /// The gateway's sockets before the tunnel opened.
    baseline_sockets: usize,
    client: RawTunnel,
    backend: TcpStream,
    /// The backend's listener, which handed its one connection over to the test.
    _server: RawBackend<()>,
}

async fn open(test: &str) -> Tunnel {
    open_with(test, BUDGET_BYTES, &[]).await
}

/// [`open`], with another budget and more arguments for the gateway.
async fn open_with(test: &str, budget: u64, args: &[&str]) -> Tunnel {
    let (conns, mut accepted) = mpsc::unbounded_channel();
    let server = RawBackend::start(move |conn: RawConn| {
        let conns = conns.clone();
        async move {
            let _ = conns.send(conn);
        }
    })
    .await;
    let mut builder = Gateway::builder()
        .backend(server.addr())
        .dataplane(Dataplane::Ebpf)
        .arg("--max-tunnel-backlog-bytes")
        .arg(budget.to_string());
    for arg in args {
        builder = builder.arg(*arg);
    }
    let gateway = builder.start();
    let baseline_sockets = gateway.socket_fd_count();
    let backend = async {
        let mut conn = accepted.recv().await.expect("the backend accepts");
        conn.accept_upgrade().await;
        conn.read_go().await;
        conn.stream
    };
    let client = async {
        let mut client = client::raw_upgrade(gateway.listen_addr(), "/edge", &[]).await;
        assert!(client.leftover.is_empty(), "{test}: bytes after the 101");
        client.send_go().await;
        client
    };
    let (client, backend) = within(STEP_TIMEOUT, "upgrade and go", async {
        tokio::join!(client, backend)
    })
    .await;
    Tunnel {
        gateway,
        baseline_sockets,
        client,
        backend,
        _server: server,
    }
}

/// The gateway's splice counters at one moment.
struct Splice {
    /// Backend-to-client bytes the verdict redirected.
    redirected: u64,
    /// Bytes the verdict passed to userspace (this test's tunnel is the only one).
    passed: u64,
    paused: bool,
}

impl Splice {
    fn read(gateway: &Gateway) -> (Self, Metrics) {
        let metrics = gateway.metrics();
        let count = |name: &str, labels: &[(&str, &str)]| metrics.metric(name, labels) as u64;
        let splice = Self {
            redirected: count(
                "gateway_spliced_bytes_total",
                &[("direction", "backend_to_client")],
            ),
            passed: count("gateway_splice_passed_bytes_total", &[]),
            paused: count("gateway_splice_pauses_total", &[])
                > count("gateway_splice_resumes_total", &[]),
        };
        (splice, metrics)
    }
}

/// The backend writes `seed`'s pattern to a client that does not read, until the flow is
/// paused with [`PASSED_BYTES`] passed to userspace. Returns how much it wrote.
async fn flood_until_paused(tunnel: &mut Tunnel, seed: u64) -> (u64, Splice) {
    let pattern = Pattern::new(seed);
    let mut chunk = vec![0; WRITE_BYTES];
    let mut sent = 0;
    loop {
        let (splice, metrics) = Splice::read(&tunnel.gateway);
        if splice.paused && splice.passed as f64 >= PASSED_BYTES {
            eprintln!(
                "paused: the backend wrote {sent} bytes, {} redirected, {} passed",
                splice.redirected, splice.passed
            );
            return (sent, splice);
        }
        assert!(
            sent < MOST_BEFORE_PAUSE,
            "the backend wrote {sent} bytes to a client that reads nothing and the flow is not \
             paused with {PASSED_BYTES} bytes passed:\n{}",
            metrics.text
        );
        pattern.fill(sent, &mut chunk);
        within(
            STEP_TIMEOUT,
            "a backend write while the flow pauses",
            tunnel.backend.write_all(&chunk),
        )
        .await
        .expect("backend writes");
        sent += chunk.len() as u64;
    }
}

/// Reads into `checker` until `until` bytes are checked, or to EOF with `until` `None`.
/// Returns how the stream ended: `Ok` for EOF, or the read error.
async fn read_checked(
    reader: &mut (impl AsyncRead + Unpin),
    checker: &mut Checker,
    until: Option<u64>,
) -> io::Result<()> {
    let mut buf = vec![0; READ_BYTES];
    loop {
        let want = until.map_or(READ_BYTES, |until| {
            usize::try_from(until - checker.offset())
                .map_or(READ_BYTES, |left| left.min(READ_BYTES))
        });
        if want == 0 {
            return Ok(());
        }
        match reader.read(&mut buf[..want]).await? {
            0 if until.is_some() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} bytes", checker.offset()),
                ))
            }
            0 => return Ok(()),
            read => checker
                .check(&buf[..read])
                .unwrap_or_else(|mismatch| panic!("{mismatch}")),
        }
    }
}

/// Waits for the tunnel to close with `reason`, then for the gateway to let go of it all.
async fn closed(gateway: &Gateway, baseline_sockets: usize, reason: &str) {
    eventually(STEP_TIMEOUT, "the tunnel closes", || {
        let metrics = gateway.metrics();
        let closed = metrics.metric(
            "gateway_tunnels_closed_total",
            &[("mode", "spliced"), ("reason", reason)],
        );
        (closed == 1.0)
            .then_some(())
            .ok_or_else(|| format!("not closed with {reason}:\n{}", metrics.text))
    })
    .await;
    let metrics = gateway.metrics();
    assert_eq!(
        metrics.metric("gateway_splice_integrity_errors_total", &[]),
        0.0,
        "the integrity witness fired:\n{}",
        gateway.stderr_text()
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// Both sides half-close while the backend-to-client flow is paused with passed bytes owed:
/// first the client (its FIN crosses the paused flow), then the backend (its FIN queues
/// behind the owed bytes). Each side still gets every byte, then EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closes_during_a_pause_keep_every_byte_ebpf() {
    let test = "half_closes_during_a_pause_keep_every_byte_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut tunnel = open(test).await;
    let (sent, _) = flood_until_paused(&mut tunnel, seed).await;

    // The client sends its own bytes and half-closes; the backend reads them to EOF.
    let client_bytes = 1u64 << 20;
    let mut upstream = vec![0; usize::try_from(client_bytes).expect("fits")];
    Pattern::new(!seed).fill(0, &mut upstream);
    let (mut backend_read, mut backend_write) = tunnel.backend.split();
    let client_half = async {
        tunnel.client.stream.write_all(&upstream).await?;
        tunnel.client.stream.shutdown().await
    };
    let mut upstream_checker = Pattern::new(!seed).checker();
    let (client_half, backend_eof) = within(STEP_TIMEOUT, "the client's bytes and FIN", async {
        tokio::join!(
            client_half,
            read_checked(&mut backend_read, &mut upstream_checker, None)
        )
    })
    .await;
    client_half.expect("client writes and half-closes");
    backend_eof.expect("backend reads to EOF");
    assert_eq!(
        upstream_checker.offset(),
        client_bytes,
        "bytes the backend got"
    );

    // Still paused: the client has not read a byte.
    let (splice, metrics) = Splice::read(&tunnel.gateway);
    assert!(splice.paused, "the flow resumed:\n{}", metrics.text);
    backend_write.shutdown().await.expect("backend half-closes");

    let mut checker = Pattern::new(seed).checker();
    within(
        STEP_TIMEOUT,
        "the client reads to EOF",
        read_checked(&mut tunnel.client.stream, &mut checker, None),
    )
    .await
    .expect("client reads to EOF");
    assert_eq!(checker.offset(), sent, "bytes the client got");
    let Tunnel {
        gateway,
        baseline_sockets,
        ..
    } = tunnel;
    closed(&gateway, baseline_sockets, "done").await;
}

/// The client reads until the gateway is catching up; returns the client's checker.
async fn into_catch_up(tunnel: &mut Tunnel, seed: u64) -> Checker {
    let (sent, at_pause) = flood_until_paused(tunnel, seed).await;
    let mut checker = Pattern::new(seed).checker();
    within(
        STEP_TIMEOUT,
        "the client reads into the catch-up",
        read_checked(
            &mut tunnel.client.stream,
            &mut checker,
            Some(at_pause.redirected + INTO_CATCH_UP_BYTES),
        ),
    )
    .await
    .expect("client reads");
    let (now, metrics) = Splice::read(&tunnel.gateway);
    eprintln!(
        "catching up: the client read {} bytes, {} redirected, {} passed",
        checker.offset(),
        now.redirected,
        now.passed
    );
    assert!(
        checker.offset() < now.redirected + now.passed,
        "the catch-up is over: the client read {} bytes, {} redirected and {} passed \
         (the backend wrote {sent}):\n{}",
        checker.offset(),
        now.redirected,
        now.passed,
        metrics.text
    );
    checker
}

/// The backend resets while the gateway is forwarding its passed bytes to the client: the
/// client gets a correct prefix, then the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reset_during_a_catch_up_reaches_the_client_ebpf() {
    let test = "a_backend_reset_during_a_catch_up_reaches_the_client_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut tunnel = open(test).await;
    let mut checker = into_catch_up(&mut tunnel, seed).await;
    let Tunnel {
        gateway,
        baseline_sockets,
        mut client,
        backend,
        _server,
    } = tunnel;
    reset(&backend);
    drop(backend);

    let end = within(
        STEP_TIMEOUT,
        "the client sees the backend's reset",
        read_checked(&mut client.stream, &mut checker, None),
    )
    .await;
    let error = end.expect_err("the client saw a clean EOF, not the backend's reset");
    assert_eq!(
        error.kind(),
        io::ErrorKind::ConnectionReset,
        "client read error: {error}"
    );
    closed(&gateway, baseline_sockets, "backend_error").await;
}

/// The client resets while the gateway is forwarding passed bytes to it: the backend sees
/// the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_during_a_catch_up_reaches_the_backend_ebpf() {
    let test = "a_client_reset_during_a_catch_up_reaches_the_backend_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut tunnel = open(test).await;
    into_catch_up(&mut tunnel, seed).await;
    let Tunnel {
        gateway,
        baseline_sockets,
        client,
        mut backend,
        _server,
    } = tunnel;
    reset(&client.stream);
    drop(client);

    let end = within(
        STEP_TIMEOUT,
        "the backend sees the client's reset",
        read_until_end(&mut backend, &[]),
    )
    .await;
    let error = end
        .ended
        .expect_err("the backend saw a clean EOF, not the client's reset");
    assert_eq!(
        error.kind(),
        io::ErrorKind::ConnectionReset,
        "backend read error: {error}"
    );
    closed(&gateway, baseline_sockets, "client_error").await;
}

/// Makes closing `stream` reset the connection (`SO_LINGER` 0).
fn reset(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// `--spliced-backlog-pool-bytes` for the next test: small, so the pool runs out long before
/// the per-flow bounds (256 MiB owed) are reached.
const SMALL_POOL_BYTES: u64 = 32 << 20;
/// `--tunnel-sndbuf-bytes` and `--max-tunnel-backlog-bytes` for the next test: a backlog
/// far larger than the send buffer it waits for, so each flow's redirected bytes stay in
/// the kernel's queue in front of the other flow's passed ones. (When the backlog fits in
/// the send buffer, as with a 16 KiB budget, or 8 MiB buffers in most runs, it drains there,
/// the passed bytes then reach the receive buffer, and TCP stops both peers instead:
/// bounded too, by the socket buffers, but not this test's case.)
const SMALL_SNDBUF_BYTES: u64 = 64 << 10;
const STUCK_BUDGET_BYTES: u64 = 4 << 20;
/// What each peer of the next test writes at most.
const FLOOD_BYTES: u64 = 1 << 30;
/// What the two peers may have written in all when the tunnel is reset: the pool, each
/// flow's 16 MiB allowance of owed bytes, and every socket buffer the bytes cross (the
/// peers' and the gateway's, up to 16 MiB each as the kernel counts them), with room for
/// what arrives between two looks of the gateway. Without the pool's cover on owed bytes
/// the first bound to stop them was 256 MiB per flow.
const WRITTEN_AT_RESET_LIMIT_BYTES: u64 = 200 << 20;

/// Both peers write and neither reads: each flow pauses, and its passed bytes wait behind
/// the other flow's bytes in the source's psock queue, where no socket accounts for them and
/// TCP never stops their sender. The gateway covers such bytes from the shared pool and
/// resets the tunnel once the pool has no room; both peers see the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_write_without_reading_are_reset_when_the_pool_is_out_ebpf() {
    let test = "peers_that_write_without_reading_are_reset_when_the_pool_is_out_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut tunnel = open_with(
        test,
        STUCK_BUDGET_BYTES,
        &[
            "--spliced-backlog-pool-bytes",
            &SMALL_POOL_BYTES.to_string(),
            "--tunnel-sndbuf-bytes",
            &SMALL_SNDBUF_BYTES.to_string(),
        ],
    )
    .await;
    let (client, backend) = (&mut tunnel.client.stream, &mut tunnel.backend);
    let (client_wrote, backend_wrote) = within(STEP_TIMEOUT, "the tunnel is reset", async {
        tokio::join!(
            write_until_error(client, seed, "client"),
            write_until_error(backend, !seed, "backend")
        )
    })
    .await;
    let written = client_wrote + backend_wrote;
    eprintln!("{test}: the client wrote {client_wrote} bytes, the backend {backend_wrote}");
    assert!(
        written <= WRITTEN_AT_RESET_LIMIT_BYTES,
        "the peers wrote {written} bytes before the reset (limit {WRITTEN_AT_RESET_LIMIT_BYTES})"
    );
    let Tunnel {
        gateway,
        baseline_sockets,
        ..
    } = tunnel;
    // The peers saw the reset as the gateway closed the sockets, before it logged why.
    eventually(STEP_TIMEOUT, "the gateway logs the tunnel's close", || {
        let log = gateway.stderr_text();
        match log.lines().find(|line| line.contains("tunnel closed")) {
            Some(line) if line.contains("spliced_backlog_pool_bytes) has no room") => Ok(()),
            Some(line) => panic!("the tunnel closed for another reason: {line}"),
            None => Err("no close line yet".to_owned()),
        }
    })
    .await;
    let metrics = gateway.metrics();
    let closed = metrics.metric(
        "gateway_tunnels_closed_total",
        &[("mode", "spliced"), ("reason", "client_error")],
    ) + metrics.metric(
        "gateway_tunnels_closed_total",
        &[("mode", "spliced"), ("reason", "backend_error")],
    );
    assert_eq!(closed, 1.0, "closed as a peer's fault:\n{}", metrics.text);
    assert!(
        metrics.metric("gateway_splice_passed_bytes_total", &[]) > 0.0,
        "nothing was passed: the flows never paused"
    );
    assert_eq!(
        metrics.metric("gateway_splice_integrity_errors_total", &[]),
        0.0
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// Writes `seed`'s pattern until a write fails (the reset) or [`FLOOD_BYTES`] are written;
/// returns how many were written. Only a reset may end it.
async fn write_until_error(stream: &mut TcpStream, seed: u64, who: &str) -> u64 {
    let pattern = Pattern::new(seed);
    let mut chunk = vec![0; WRITE_BYTES];
    let mut sent = 0;
    while sent < FLOOD_BYTES {
        pattern.fill(sent, &mut chunk);
        if let Err(error) = stream.write_all(&chunk).await {
            assert!(
                matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "{who}: a write failed with something other than a reset: {error}"
            );
            return sent;
        }
        sent += chunk.len() as u64;
    }
    panic!("{who} wrote {sent} bytes to a peer that reads nothing, and was never reset");
}
