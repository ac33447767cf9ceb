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
//! What bounds passed bytes that cannot be forwarded is `stuck_bytes.rs`.

use std::{io, time::Duration};

use gateway_tests::{
    data::test_seed,
    ends::read_until_end,
    held::HeldTunnel,
    metrics::Metrics,
    pattern::{Checker, Pattern},
    skip_unprivileged,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
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

/// Opens the one tunnel a test drives, with a [`BUDGET_BYTES`] budget.
async fn open() -> HeldTunnel {
    let gateway = Gateway::builder()
        .arg("--max-tunnel-backlog-bytes")
        .arg(BUDGET_BYTES.to_string());
    HeldTunnel::open(gateway, Dataplane::Ebpf, "/edge").await
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
async fn flood_until_paused(tunnel: &mut HeldTunnel, seed: u64) -> (u64, Splice) {
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
    let mut tunnel = open().await;
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
    let HeldTunnel {
        gateway,
        baseline_sockets,
        ..
    } = tunnel;
    closed(&gateway, baseline_sockets, "done").await;
}

/// The client reads until the gateway is catching up; returns the client's checker.
async fn into_catch_up(tunnel: &mut HeldTunnel, seed: u64) -> Checker {
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
    let mut tunnel = open().await;
    let mut checker = into_catch_up(&mut tunnel, seed).await;
    let HeldTunnel {
        gateway,
        baseline_sockets,
        mut client,
        backend,
        ..
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
    let mut tunnel = open().await;
    into_catch_up(&mut tunnel, seed).await;
    let HeldTunnel {
        gateway,
        baseline_sockets,
        client,
        mut backend,
        ..
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
