//! What bounds the bytes of a spliced flow that the gateway cannot forward yet.
//!
//! A paused flow's segments are passed to its source socket. While that socket's psock
//! queue also holds bytes the other flow redirected *to* it (its peer is not reading),
//! the passed bytes wait behind them, where no receive buffer accounts for them: TCP would
//! let their sender go on for ever. The gateway brakes such a sender (shuts its window)
//! once its flow owes more than a receive buffer's worth, covers what it owes past that
//! from the shared pool, and resets the tunnel only when the pool has no room.
//!
//! - a client that stops reading for 3 s while it floods is braked, not reset, and gets
//!   every byte (it once piled up 413 MB in 2 s and was reset);
//! - an echo peer, which reads only once its writes went through, is let go by the brake
//!   as soon as it reads, so it never hangs;
//! - a peer that writes everything before it reads is let go after 5 s braked, one
//!   allowance at a time, and finishes;
//! - two peers that write and never read are both braked: they stop (gaining at most one
//!   allowance each per 5 s after that), the tunnel stays up, and once they read, every
//!   byte arrives in order;
//! - with no pool to cover owed bytes, the same peers are reset.
//!
//! Every byte either end receives is checked by position ([`gateway_tests::pattern`]).

use std::{
    io,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::test_seed,
    flood,
    held::HeldTunnel,
    pattern::{Mismatch, Pattern},
    skip_unprivileged, tunnels,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(240);
const READ_BYTES: usize = 256 << 10;

/// `gateway_splice_brakes_total` of both senders, for test output.
fn brakes(metrics: &gateway_tests::metrics::Metrics) -> String {
    let of = |sender| metrics.metric("gateway_splice_brakes_total", &[("sender", sender)]);
    format!("client {}, backend {}", of("client"), of("backend"))
}

/// How long the client of [`a_peer_that_stops_reading_while_it_floods_is_braked_not_reset_ebpf`]
/// stops reading: longer than the gateway once let owed bytes sit unmoved before it gave up.
const READER_PAUSE: Duration = Duration::from_secs(3);
/// How long its backend stops reading at the same moment: enough for the client's flow to
/// pause.
const BACKEND_READER_PAUSE: Duration = Duration::from_millis(200);
/// What the client reads before its pause.
const BEFORE_PAUSE_BYTES: u64 = 16 << 20;

/// Reads `reader` to EOF, checking every byte against `seed`'s pattern (`first` first);
/// once `pause_after` bytes are in, sets `pausing` and stops reading for `pause`. A reader
/// without `pause_after` stops once for `pause` as soon as `pausing` is set.
async fn read_pausing(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    seed: u64,
    first: &[u8],
    pause_after: Option<u64>,
    pause: Duration,
    pausing: &AtomicBool,
) -> Result<u64, Mismatch> {
    let mut checker = Pattern::new(seed).checker();
    checker.check(first)?;
    let mut buf = vec![0; READ_BYTES];
    let mut paused = false;
    loop {
        let due = match pause_after {
            Some(after) => checker.offset() >= after,
            None => pausing.load(Ordering::Relaxed),
        };
        if due && !paused {
            paused = true;
            pausing.store(true, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
        }
        match reader.read(&mut buf).await.expect("read") {
            0 => return Ok(checker.offset()),
            read => checker.check(&buf[..read])?,
        }
    }
}

/// Both peers flood each other; after 16 MiB the client stops reading for [`READER_PAUSE`]
/// while it keeps writing (a client in a long garbage-collection pause, or starved of CPU),
/// and the backend stops reading for [`BACKEND_READER_PAUSE`] at the same moment, so the
/// client's flow pauses, and its passed bytes may get stuck behind the bytes for the
/// client (whether they do depends on where the kernel's queues stand at that moment; the
/// next test makes sure they do). Every byte arrives by position and the tunnel closes
/// cleanly, never reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_while_it_floods_is_braked_not_reset_ebpf() {
    let test = "a_peer_that_stops_reading_while_it_floods_is_braked_not_reset_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let len: u64 = 512 << 20;
    let (down_seed, up_seed) = (seed, seed.wrapping_add(1));
    let pausing = Arc::new(AtomicBool::new(false));
    let backend_pausing = pausing.clone();
    let mut backend = RawBackend::start(move |mut conn: RawConn| {
        let pausing = backend_pausing.clone();
        async move {
            conn.accept_upgrade().await;
            conn.read_go().await;
            let (reader, writer) = conn.stream.split();
            let read = read_pausing(reader, up_seed, &[], None, BACKEND_READER_PAUSE, &pausing);
            let written = AtomicU64::new(0);
            let write = flood::write(writer, down_seed, len, &written);
            let ((), checked) = tokio::join!(write, read);
            checked
        }
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .start();
    let baseline_sockets = gateway.socket_fd_count();
    let mut tunnel = within(
        STEP_TIMEOUT,
        "upgrade",
        client::raw_upgrade(gateway.listen_addr(), "/brake", &[]),
    )
    .await;
    tunnels::wait_opened(&gateway, Dataplane::Ebpf, 1.0).await;
    tunnel.send_go().await;
    let written = AtomicU64::new(0);
    let (reader, writer) = tunnel.stream.split();
    let read = read_pausing(
        reader,
        down_seed,
        &tunnel.leftover,
        Some(BEFORE_PAUSE_BYTES),
        READER_PAUSE,
        &pausing,
    );
    let ((), down) = within(TRANSFER_TIMEOUT, "flood both ways", async {
        tokio::join!(flood::write(writer, up_seed, len, &written), read)
    })
    .await;
    let up = backend.next_result().await;
    let fail = |way: &str, mismatch: Mismatch| -> ! {
        panic!(
            "{test}: seed {seed}, {way}: {mismatch}\nmetrics:\n{}\nlog:\n{}",
            gateway.metrics().text,
            gateway.stderr_text()
        )
    };
    let down = down.unwrap_or_else(|m| fail("backend to client", m));
    let up = up.unwrap_or_else(|m| fail("client to backend", m));
    assert_eq!((down, up), (len, len), "bytes each way");
    let metrics = gateway.metrics();
    eprintln!(
        "{test}: {} brakes, {} bytes passed",
        brakes(&metrics),
        metrics.metric("gateway_splice_passed_bytes_total", &[])
    );
    assert_eq!(
        metrics.metric(
            "gateway_tunnels_closed_total",
            &[("mode", "spliced"), ("reason", "done")]
        ),
        1.0,
        "the tunnel closed cleanly:\n{}",
        metrics.text
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// Bytes the client of [`an_echo_peer_is_never_held_by_the_brake_ebpf`] sends (and gets
/// back).
const ECHO_BYTES: u64 = 256 << 20;
/// How long that client stops reading, after its first [`BEFORE_PAUSE_BYTES`] came back.
const ECHO_READER_PAUSE: Duration = Duration::from_secs(2);

/// An echo backend (it reads only once its write went through) and a client that floods it
/// and stops reading for [`ECHO_READER_PAUSE`]. The echo's bytes then back up behind the
/// client, its flow pauses, and what it writes while the client's bytes wait for it gets
/// stuck in its socket's queue behind them: the brake may shut its window, which would stop
/// its writes and so its reads, the only thing that moves its stuck bytes. The gateway
/// lets a braked peer go as soon as it reads, so neither peer is ever held until the brake's
/// time runs out: every byte comes back in order, and the tunnel closes cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_peer_is_never_held_by_the_brake_ebpf() {
    let test = "an_echo_peer_is_never_held_by_the_brake_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        conn.echo_to_eof().await
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .start();
    let baseline_sockets = gateway.socket_fd_count();
    let mut tunnel = within(
        STEP_TIMEOUT,
        "upgrade",
        client::raw_upgrade(gateway.listen_addr(), "/echo", &[]),
    )
    .await;
    tunnels::wait_opened(&gateway, Dataplane::Ebpf, 1.0).await;
    let pausing = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let (reader, writer) = tunnel.stream.split();
    let read = read_pausing(
        reader,
        seed,
        &tunnel.leftover,
        Some(BEFORE_PAUSE_BYTES),
        ECHO_READER_PAUSE,
        &pausing,
    );
    let ((), echoed) = within(TRANSFER_TIMEOUT, "flood an echo backend", async {
        tokio::join!(flood::write(writer, seed, ECHO_BYTES, &written), read)
    })
    .await;
    let echoed = echoed.unwrap_or_else(|m| {
        panic!(
            "{test}: seed {seed}: {m}\nmetrics:\n{}",
            gateway.metrics().text
        )
    });
    assert_eq!(echoed, ECHO_BYTES, "bytes echoed");
    let at_backend = backend
        .next_result()
        .await
        .expect("the backend echoes to EOF");
    assert_eq!(at_backend.len, ECHO_BYTES, "bytes the backend echoed");
    let log = gateway.stderr_text();
    assert!(
        !log.contains("brake lifted"),
        "a peer was held by the brake until its time ran out:\n{log}"
    );
    let metrics = gateway.metrics();
    eprintln!(
        "{test}: {} brakes, {} bytes passed",
        brakes(&metrics),
        metrics.metric("gateway_splice_passed_bytes_total", &[])
    );
    assert_eq!(
        metrics.metric(
            "gateway_tunnels_closed_total",
            &[("mode", "spliced"), ("reason", "done")]
        ),
        1.0,
        "the tunnel closed cleanly:\n{}",
        metrics.text
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// `--tunnel-sndbuf-bytes` and `--max-tunnel-backlog-bytes` for the tests of peers that
/// never read: a backlog far larger than the send buffer it waits for, so each flow's
/// redirected bytes stay in the kernel's queue in front of the other flow's passed ones.
/// (When the backlog fits in the send buffer, as with a 16 KiB budget, or 8 MiB buffers in
/// most runs, it drains there, the passed bytes then reach the receive buffer, and TCP
/// stops both peers by itself: bounded too, but not these tests' case.)
const SMALL_SNDBUF_BYTES: u64 = 64 << 10;
const STUCK_BUDGET_BYTES: u64 = 4 << 20;

/// Opens a tunnel whose flows get stuck when neither peer reads, with `pool_bytes` of
/// shared pool.
async fn open_stuck(pool_bytes: u64) -> HeldTunnel {
    let gateway = Gateway::builder()
        .arg("--max-tunnel-backlog-bytes")
        .arg(STUCK_BUDGET_BYTES.to_string())
        .arg("--tunnel-sndbuf-bytes")
        .arg(SMALL_SNDBUF_BYTES.to_string())
        .arg("--spliced-backlog-pool-bytes")
        .arg(pool_bytes.to_string());
    HeldTunnel::open(gateway, Dataplane::Ebpf, "/stuck").await
}

/// What each peer of [`peers_that_never_read_are_stopped_and_get_every_byte_once_they_do_ebpf`]
/// sends.
const STOPPED_FLOOD_BYTES: u64 = 512 << 20;
/// How long neither peer's writes may progress before the test calls them stopped.
const STOPPED_FOR: Duration = Duration::from_millis(500);
/// The most both peers may have written when they stop. Per flow: the writer's send
/// buffer and the reader's receive buffer (up to `tcp_wmem`/`tcp_rmem`'s maximum, 4 and 6
/// MiB by default), the gateway's socket buffers in between (a 64 KiB send buffer, 2 × 4
/// MiB of receive buffer), its budget (4 MiB), the owed bytes before the brake (16 MiB), and
/// the window offered before it (up to the receive buffer again): about 40 MiB, measured
/// 37. Unbraked, they piled up to the pool (1 GiB) or until a reset.
const MOST_WRITTEN_WHEN_STOPPED: u64 = 2 * (64 << 20);

/// Both peers write and neither reads: each flow pauses, its passed bytes get stuck behind
/// the other flow's, and the gateway brakes both peers. They stop after a bounded amount,
/// the tunnel stays up, and once both read, every byte arrives in order and the tunnel
/// closes cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_never_read_are_stopped_and_get_every_byte_once_they_do_ebpf() {
    let test = "peers_that_never_read_are_stopped_and_get_every_byte_once_they_do_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let (up_seed, down_seed) = (seed, !seed);
    let HeldTunnel {
        gateway,
        baseline_sockets,
        client,
        backend,
        ..
    } = open_stuck(1 << 30).await;
    let mut client = client.stream;
    let mut backend = backend;
    let (up_written, down_written) = (AtomicU64::new(0), AtomicU64::new(0));
    let (up_read, down_read) = (AtomicU64::new(0), AtomicU64::new(0));
    let reading = AtomicBool::new(false);
    let (client_reader, client_writer) = client.split();
    let (backend_reader, backend_writer) = backend.split();
    let wait_to_read = async || {
        while !reading.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let client_reads = async {
        wait_to_read().await;
        flood::read(client_reader, down_seed, &[], &down_read).await
    };
    let backend_reads = async {
        wait_to_read().await;
        flood::read(backend_reader, up_seed, &[], &up_read).await
    };
    // Waits until neither peer has written a byte for `STOPPED_FOR`, checks that the
    // tunnel is still up and both were braked, then lets them read.
    let watch = async {
        let total = || up_written.load(Ordering::Relaxed) + down_written.load(Ordering::Relaxed);
        let mut last = (total(), tokio::time::Instant::now());
        let stopped_at = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = total();
            if now != last.0 {
                last = (now, tokio::time::Instant::now());
            } else if last.1.elapsed() >= STOPPED_FOR {
                break now;
            }
            assert!(
                now < 2 * STOPPED_FLOOD_BYTES,
                "the peers wrote everything to peers that do not read"
            );
        };
        let metrics = gateway.metrics();
        for sender in ["client", "backend"] {
            assert!(
                metrics.metric("gateway_splice_brakes_total", &[("sender", sender)]) >= 1.0,
                "both peers stopped ({stopped_at} bytes written), the {sender} unbraked:\n{}",
                metrics.text
            );
        }
        assert_eq!(
            tunnels::active(&gateway, "spliced"),
            1.0,
            "the tunnel is still up when the peers have stopped"
        );
        reading.store(true, Ordering::Relaxed);
        stopped_at
    };
    let (stopped_at, (), (), down, up) = within(TRANSFER_TIMEOUT, "stop, then read", async {
        tokio::join!(
            watch,
            flood::write(client_writer, up_seed, STOPPED_FLOOD_BYTES, &up_written),
            flood::write(
                backend_writer,
                down_seed,
                STOPPED_FLOOD_BYTES,
                &down_written
            ),
            client_reads,
            backend_reads
        )
    })
    .await;
    eprintln!("{test}: the peers stopped after writing {stopped_at} bytes in all");
    assert!(
        stopped_at <= MOST_WRITTEN_WHEN_STOPPED,
        "the peers wrote {stopped_at} bytes before they stopped"
    );
    let down = down.unwrap_or_else(|m| panic!("{test}: seed {seed}, backend to client: {m}"));
    let up = up.unwrap_or_else(|m| panic!("{test}: seed {seed}, client to backend: {m}"));
    assert_eq!(
        (up, down),
        (STOPPED_FLOOD_BYTES, STOPPED_FLOOD_BYTES),
        "bytes each way"
    );
    let metrics = gateway.metrics();
    assert_eq!(
        metrics.metric(
            "gateway_tunnels_closed_total",
            &[("mode", "spliced"), ("reason", "done")]
        ),
        1.0,
        "the tunnel closed cleanly:\n{}",
        metrics.text
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// What the client of the next test writes, all of it before it reads.
const BLOCKING_WRITE_BYTES: u64 = 64 << 20;
/// What its backend sends while it reads.
const BLOCKING_FLOOD_BYTES: u64 = 64 << 20;

/// A client that writes all it has before it reads anything (a blocking `write_all`, then
/// `read`), to a backend that floods it while reading. The client's bytes get stuck behind
/// the backend's, and the client is braked; being blocked in its write, it cannot read, so
/// only the brake's time limit (5 s) lets it go on, one allowance (16 MiB) at a time, the
/// pool covering what it owes: it finishes its write, reads, and every byte arrives in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_writes_everything_before_it_reads_is_not_held_for_ever_ebpf() {
    let test = "a_peer_that_writes_everything_before_it_reads_is_not_held_for_ever_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let (up_seed, down_seed) = (seed, !seed);
    let HeldTunnel {
        gateway,
        baseline_sockets,
        client,
        backend,
        ..
    } = open_stuck(1 << 30).await;
    let (mut client, mut backend) = (client.stream, backend);
    let counted = [(); 4].map(|()| AtomicU64::new(0));
    let (backend_reader, backend_writer) = backend.split();
    let backend_side = async {
        let write = flood::write(backend_writer, down_seed, BLOCKING_FLOOD_BYTES, &counted[0]);
        let read = flood::read(backend_reader, up_seed, &[], &counted[1]);
        let ((), read) = tokio::join!(write, read);
        read
    };
    let client_side = async {
        let (reader, writer) = client.split();
        flood::write(writer, up_seed, BLOCKING_WRITE_BYTES, &counted[2]).await;
        flood::read(reader, down_seed, &[], &counted[3]).await
    };
    let (up, down) = within(TRANSFER_TIMEOUT, "write everything, then read", async {
        tokio::join!(backend_side, client_side)
    })
    .await;
    let up = up.unwrap_or_else(|m| panic!("{test}: seed {seed}, client to backend: {m}"));
    let down = down.unwrap_or_else(|m| panic!("{test}: seed {seed}, backend to client: {m}"));
    assert_eq!(
        (up, down),
        (BLOCKING_WRITE_BYTES, BLOCKING_FLOOD_BYTES),
        "bytes each way"
    );
    let metrics = gateway.metrics();
    eprintln!("{test}: brakes: {}", brakes(&metrics));
    assert!(
        metrics.metric("gateway_splice_brakes_total", &[("sender", "client")]) >= 1.0,
        "the client's bytes never got stuck, so this tested nothing:\n{}",
        metrics.text
    );
    let log = gateway.stderr_text();
    assert!(
        log.lines()
            .any(|line| line.contains("brake lifted") && line.contains("sender=\"client\"")),
        "the client was never held until the brake's time ran out, so this tested \
         nothing:\n{log}"
    );
    assert_eq!(
        metrics.metric(
            "gateway_tunnels_closed_total",
            &[("mode", "spliced"), ("reason", "done")]
        ),
        1.0,
        "the tunnel closed cleanly:\n{}",
        metrics.text
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// What each peer of the next test writes at most.
const FLOOD_BYTES: u64 = 1 << 30;
/// What the two peers may have written in all when the tunnel is reset: each flow's
/// 16 MiB allowance of owed bytes and every socket buffer the bytes cross (the peers' and
/// the gateway's, up to 16 MiB each as the kernel counts them), with room for what arrives
/// between two looks of the gateway.
const WRITTEN_AT_RESET_LIMIT_BYTES: u64 = 200 << 20;

/// As above, with no pool: owed bytes past a flow's allowance cannot be covered, and the
/// tunnel is reset at once; both peers see the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_never_read_are_reset_when_the_pool_is_out_ebpf() {
    let test = "peers_that_never_read_are_reset_when_the_pool_is_out_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut tunnel = open_stuck(0).await;
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
    let HeldTunnel {
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
    let mut chunk = vec![0; READ_BYTES];
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
