//! The lazy splice: a plaintext tunnel on the eBPF dataplane starts on the userspace relay
//! and is promoted to the kernel once it has moved `--splice-after-bytes` (both ways
//! together) or lived `--splice-after-ms`. A tunnel that never gets there never touches the
//! splice maps; a promoted one keeps every byte in order, including promotions that race a
//! half-close or a reset. (The randomized hunt with promotions mid-stream is in
//! `stress.rs`.)

use std::{net::SocketAddr, time::Duration};

use gateway_tests::{
    admin,
    backend::{RawBackend, RawConn},
    client,
    data::{test_seed, Summary},
    pattern::{Mismatch, Pattern},
    skip_unprivileged, tunnels,
    wait::{eventually, within},
    Dataplane, Gateway, GatewayBuilder,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(10);

/// `len` bytes of `seed`'s pattern.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    Pattern::new(seed).fill(0, &mut bytes);
    bytes
}

/// A backend that answers the upgrade and echoes everything to the client's EOF.
async fn echo_backend() -> RawBackend<Option<Summary>> {
    RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        conn.echo_to_eof().await.ok()
    })
    .await
}

/// A gateway on the eBPF dataplane with the lazy splice at these thresholds.
fn lazy_gateway(backend: &RawBackend<Option<Summary>>, after_bytes: u64, after_ms: u64) -> Gateway {
    lazy_builder(backend.addr(), after_bytes, after_ms).start()
}

/// [`lazy_gateway`], to be given more arguments.
fn lazy_builder(backend: SocketAddr, after_bytes: u64, after_ms: u64) -> GatewayBuilder {
    Gateway::builder()
        .backend(backend)
        .dataplane(Dataplane::Ebpf)
        .lazy_splice()
        .arg("--splice-after-bytes")
        .arg(after_bytes.to_string())
        .arg("--splice-after-ms")
        .arg(after_ms.to_string())
}

/// The verdict's counters: they move only for sockets in the splice maps.
fn verdicts(gateway: &Gateway) -> f64 {
    let metrics = gateway.metrics();
    [
        "redirected",
        "passed_no_flow",
        "passed_redirect_failed",
        "dropped_empty",
        "passed_paused",
    ]
    .iter()
    .map(|outcome| metrics.metric("gateway_splice_verdicts_total", &[("outcome", outcome)]))
    .sum()
}

/// Waits until the gateway's only tunnel is listed as spliced in `/tunnels`.
async fn wait_promoted(gateway: &Gateway) {
    eventually(
        PROMOTION_TIMEOUT,
        "the tunnel promoted",
        || match admin::tunnels(gateway).as_slice() {
            [one] if one.mode == "spliced" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

/// Sends `len` bytes of `seed`'s pattern through `tunnel` and reads them back from the echo,
/// checking each by position.
async fn echo_round(stream: &mut tokio::net::TcpStream, seed: u64, len: usize) {
    echo_bytes(stream, &pattern(seed, len)).await;
}

/// Sends `bytes` through `tunnel` and reads them back from the echo, checking each by
/// position.
async fn echo_bytes(stream: &mut tokio::net::TcpStream, bytes: &[u8]) {
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(bytes).await.expect("client writes");
    };
    let read = async {
        let mut got = 0;
        let mut buf = vec![0; 64 << 10];
        while got < bytes.len() {
            let n = reader.read(&mut buf).await.expect("client reads the echo");
            assert_ne!(n, 0, "EOF after {got} of {} echoed bytes", bytes.len());
            if let Some(at) =
                (0..n).find(|&i| buf[i] != bytes.get(got + i).copied().unwrap_or(!buf[i]))
            {
                panic!("echoed byte {} of {} is wrong", got + at, bytes.len());
            }
            got += n;
        }
    };
    within(STEP_TIMEOUT, "an echo round", async {
        tokio::join!(write, read)
    })
    .await;
}

/// A tunnel that ends before either threshold stays on the relay: it is never in the splice
/// maps, and the verdict never sees one of its segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_tunnel_stays_on_the_relay_and_never_touches_the_maps_ebpf() {
    let test = "a_short_tunnel_stays_on_the_relay_and_never_touches_the_maps_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut backend = echo_backend().await;
    let gateway = lazy_gateway(&backend, 1 << 20, 60_000);
    let baseline_sockets = gateway.socket_fd_count();
    let verdicts_before = verdicts(&gateway);
    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/short", &[]).await;
    for round in 0..4u64 {
        echo_round(&mut tunnel.stream, seed ^ round, 16 << 10).await;
    }
    let listed = admin::tunnels(&gateway);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].mode, "userspace", "{}", listed[0].json);
    assert!(
        gateway.ebpf_map_entries().values().all(|&n| n == 0),
        "a relayed tunnel is in the splice maps: {:?}",
        gateway.ebpf_map_entries()
    );
    tunnel.stream.shutdown().await.expect("client half-closes");
    let mut rest = Vec::new();
    within(
        STEP_TIMEOUT,
        "the echo's EOF",
        tunnel.stream.read_to_end(&mut rest),
    )
    .await
    .expect("client reads to EOF");
    assert!(rest.is_empty(), "{} bytes after the echoes", rest.len());
    let echoed = backend.next_result().await.expect("the backend echoed");
    assert_eq!(echoed.len, 4 * (16 << 10));
    tunnels::wait_none_active(&gateway).await;
    let metrics = gateway.metrics();
    assert_eq!(metrics.metric("gateway_tunnels_promoted_total", &[]), 0.0);
    assert_eq!(tunnels::opened(&gateway, "userspace"), 1.0);
    assert_eq!(tunnels::opened(&gateway, "spliced"), 0.0);
    assert_eq!(
        verdicts(&gateway),
        verdicts_before,
        "the verdict saw a segment of a tunnel that was never spliced"
    );
    assert!(
        gateway
            .stderr_text()
            .contains("relay_reason=\"below_splice_threshold\""),
        "the close line says why it was relayed"
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// A tunnel that lives `--splice-after-ms` is promoted even if idle; from then on the kernel
/// carries its bytes, each delivered once and in order, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_that_lives_long_enough_is_promoted_and_keeps_every_byte_ebpf() {
    let test = "a_tunnel_that_lives_long_enough_is_promoted_and_keeps_every_byte_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut backend = echo_backend().await;
    let gateway = lazy_gateway(&backend, 1 << 40, 300);
    let baseline_sockets = gateway.socket_fd_count();
    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/long", &[]).await;
    // A few bytes on the relay first.
    echo_round(&mut tunnel.stream, seed, 1000).await;
    wait_promoted(&gateway).await;
    let len = 4 << 20;
    echo_round(&mut tunnel.stream, seed.rotate_left(7), len).await;
    tunnels::assert_spliced(&gateway, "client_to_backend", len as u64);
    tunnels::assert_spliced(&gateway, "backend_to_client", len as u64);
    let listed = admin::tunnels(&gateway);
    assert_eq!(
        (
            listed[0].client_to_backend_bytes,
            listed[0].backend_to_client_bytes
        ),
        (1000 + len as u64, 1000 + len as u64),
        "/tunnels counts the relayed and the spliced bytes: {}",
        listed[0].json
    );
    tunnel.stream.shutdown().await.expect("client half-closes");
    let mut rest = Vec::new();
    within(
        STEP_TIMEOUT,
        "the echo's EOF",
        tunnel.stream.read_to_end(&mut rest),
    )
    .await
    .expect("client reads to EOF");
    assert!(rest.is_empty());
    assert!(backend.next_result().await.is_some(), "the backend echoed");
    tunnels::wait_none_active(&gateway).await;
    let metrics = gateway.metrics();
    assert_eq!(metrics.metric("gateway_tunnels_promoted_total", &[]), 1.0);
    assert_eq!(
        metrics.metric(
            "gateway_tunnels_closed_total",
            &[("mode", "spliced"), ("reason", "done")]
        ),
        1.0,
        "{}",
        metrics.text
    );
    let log = gateway.stderr_text();
    let closed = log
        .lines()
        .find(|line| line.contains("tunnel closed"))
        .expect("a close line");
    assert!(
        closed.contains("mode=spliced") && closed.contains("promoted_after_ms="),
        "{closed}"
    );
    assert!(
        closed.contains(&format!("client_to_backend_bytes={}", 1000 + len)),
        "{closed}"
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// The tunnel's maximum lifetime counts from its upgrade, not from its promotion: promoted
/// after 1 s under a 2 s lifetime, the tunnel is closed about 2 s after it opened (a clock
/// restarted at the promotion would close it after 3), with a FIN to both peers and every
/// byte it carried, relayed and spliced, checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_counts_from_the_upgrade_across_a_promotion_ebpf() {
    let test = "the_lifetime_counts_from_the_upgrade_across_a_promotion_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut backend = echo_backend().await;
    let gateway = lazy_builder(backend.addr(), 1 << 40, 1000)
        .arg("--tunnel-max-lifetime-secs")
        .arg("2")
        .start();
    let baseline_sockets = gateway.socket_fd_count();
    let opened = std::time::Instant::now();
    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/lifetime", &[]).await;
    echo_round(&mut tunnel.stream, seed, 1000).await;
    wait_promoted(&gateway).await;
    let promoted = opened.elapsed();
    let len = 64 << 10;
    echo_round(&mut tunnel.stream, seed.rotate_left(7), len).await;
    tunnels::assert_spliced(&gateway, "client_to_backend", len as u64);

    let mut rest = Vec::new();
    within(
        STEP_TIMEOUT,
        "the gateway's FIN at the end of the lifetime",
        tunnel.stream.read_to_end(&mut rest),
    )
    .await
    .expect("client reads to EOF");
    let closed = opened.elapsed();
    assert!(
        rest.is_empty(),
        "nothing after the echo: {} bytes",
        rest.len()
    );
    assert!(
        promoted >= Duration::from_secs(1),
        "promoted by time, not before: {promoted:?}"
    );
    // The gateway's clock starts after `opened`, so the close cannot come earlier than
    // 2 s after it; counted from the promotion it would come at `promoted` + 2 s or later.
    assert!(
        closed >= Duration::from_secs(2)
            && closed + Duration::from_millis(100) < promoted + Duration::from_secs(2),
        "closed {closed:?} after the upgrade, promoted after {promoted:?}"
    );
    assert!(
        backend.next_result().await.is_some(),
        "the backend got its FIN"
    );
    tunnels::wait_none_active(&gateway).await;
    assert_eq!(
        gateway.metrics().metric(
            "gateway_tunnels_closed_total",
            &[("mode", "spliced"), ("reason", "max_lifetime")]
        ),
        1.0
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}

/// Promotions racing the end of a tunnel. Each round sends a random amount and then
/// half-closes (reading the whole echo back) or resets, at one of three moments:
/// - *racing*: right behind bytes around the threshold, so the end arrives while the relay
///   decides, stops or hands off;
/// - *at the handoff*: right after the echo of bytes past the threshold came back, when
///   both directions have just parked and the promotion is starting;
/// - *after*: once `/tunnels` shows the tunnel spliced, behind a random tail the kernel
///   carries.
///
/// Every echoed byte is checked by position; afterwards nothing is left in the maps or
/// among the descriptors, and at least every *after* round was promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_racing_a_half_close_or_a_reset_lose_nothing_ebpf() {
    let test = "promotions_racing_a_half_close_or_a_reset_lose_nothing_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let threshold: u64 = 32 << 10;
    let mut backend = echo_backend().await;
    let gateway = lazy_gateway(&backend, threshold, 60_000);
    let baseline_sockets = gateway.socket_fd_count();
    let rounds = 60;
    let mut ends = [0; 3];
    let mut after_rounds = 0;
    for round in 0..rounds {
        let round_seed = seed ^ round;
        let moment = rng.random_range(0..3);
        let reset = rng.random_ratio(1, 3);
        let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/race", &[]).await;
        assert!(
            tunnel.leftover.is_empty(),
            "the echo wrote before the client"
        );
        // The bytes echoed before the end (checked as they come back) and sent with it.
        let (ahead, tail) = match moment {
            // Around the threshold: both ways together reach it at half of it each way.
            0 => (0, rng.random_range(threshold / 4..=threshold * 2) as usize),
            1 => (rng.random_range(threshold / 2..=threshold) as usize, 0),
            _ => (
                rng.random_range(threshold / 2..=threshold) as usize,
                rng.random_range(0..=threshold * 2) as usize,
            ),
        };
        let bytes = pattern(round_seed, ahead + tail);
        if ahead > 0 {
            echo_bytes(&mut tunnel.stream, &bytes[..ahead]).await;
        }
        if moment == 2 {
            let client = tunnel
                .stream
                .local_addr()
                .expect("client address")
                .to_string();
            eventually(
                PROMOTION_TIMEOUT,
                "the tunnel promoted",
                || match admin::tunnels(&gateway)
                    .iter()
                    .find(|listed| listed.client == client)
                {
                    Some(listed) if listed.mode == "spliced" => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await;
            after_rounds += 1;
        }
        ends[moment] += 1;
        if reset {
            tunnel
                .stream
                .write_all(&bytes[ahead..])
                .await
                .expect("client writes");
            // SO_LINGER 0: close sends a reset.
            socket2::SockRef::from(&tunnel.stream)
                .set_linger(Some(Duration::ZERO))
                .expect("SO_LINGER 0");
            drop(tunnel);
            let _ = backend.next_result().await;
            continue;
        }
        let (mut reader, mut writer) = tunnel.stream.split();
        let write = async {
            writer
                .write_all(&bytes[ahead..])
                .await
                .expect("client writes");
            writer.shutdown().await.expect("client half-closes");
        };
        let read = async {
            let mut got = Vec::new();
            reader
                .read_to_end(&mut got)
                .await
                .expect("client reads to EOF");
            got
        };
        let (_, got) = within(STEP_TIMEOUT, "a racing round", async {
            tokio::join!(write, read)
        })
        .await;
        if got != bytes[ahead..] {
            let mut checker = Pattern::new(round_seed).checker();
            let first = checker.check(&bytes[..ahead]).err();
            panic!(
                "round {round} (seed {seed}, moment {moment}): {} bytes echoed after the \
                 first {ahead} of {}: {:?} {first:?}\n{}",
                got.len(),
                bytes.len(),
                checker.check(&got).err(),
                gateway.stderr_text()
            );
        }
        let echoed = backend.next_result().await.expect("the backend echoed");
        assert_eq!(
            echoed.len,
            bytes.len() as u64,
            "round {round} (seed {seed}, moment {moment})"
        );
    }
    tunnels::wait_none_active(&gateway).await;
    gateway.wait_tunnels_gone(baseline_sockets).await;
    let metrics = gateway.metrics();
    let promoted = metrics.metric("gateway_tunnels_promoted_total", &[]);
    eprintln!(
        "{test}: {rounds} rounds (racing, at the handoff, after: {ends:?}), {promoted} promoted"
    );
    assert!(
        promoted >= f64::from(after_rounds),
        "{after_rounds} rounds were seen spliced but only {promoted} promotions were counted \
         (seed {seed})"
    );
    assert_eq!(
        metrics.metric("gateway_splice_integrity_errors_total", &[]),
        0.0,
        "the integrity witness fired (seed {seed})"
    );
    assert!(
        gateway.ebpf_map_entries().values().all(|&n| n == 0),
        "entries left in the splice maps: {:?}",
        gateway.ebpf_map_entries()
    );
}

/// A promotion due while one direction is stuck writing to a client that does not read
/// must not freeze the other: the client's messages keep reaching the backend (the attempt
/// is called off and tried again later), and the tunnel is not closed as idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_does_not_freeze_a_tunnel_whose_client_stopped_reading_ebpf() {
    let test = "a_promotion_does_not_freeze_a_tunnel_whose_client_stopped_reading_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    const MESSAGES: usize = 40;
    const MESSAGE_BYTES: usize = 1024;
    let mut backend = RawBackend::start(move |mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        let (mut reader, mut writer) = conn.stream.split();
        // Far more than the client's socket and the gateway's relay hold: the backend→client
        // direction is stuck in a write for as long as the client does not read.
        let flood = async {
            let chunk = vec![0x5a; 64 << 10];
            while writer.write_all(&chunk).await.is_ok() {}
        };
        let heartbeats = async {
            let mut got = vec![0; MESSAGES * MESSAGE_BYTES];
            reader.read_exact(&mut got).await.map(|_| got).ok()
        };
        tokio::select! {
            got = heartbeats => got.map(|got| Summary::of(&got)),
            () = flood => None,
        }
    })
    .await;
    let gateway = lazy_builder(backend.addr(), 1 << 40, 100)
        .arg("--tunnel-idle-timeout-secs")
        .arg("2")
        .start();
    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/stuck", &[]).await;
    let sent = pattern(seed, MESSAGES * MESSAGE_BYTES);
    for message in sent.chunks(MESSAGE_BYTES) {
        tunnel
            .stream
            .write_all(message)
            .await
            .expect("client sends");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = within(
        STEP_TIMEOUT,
        "the backend gets every message",
        backend.next_result(),
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "the client's messages stopped reaching the backend:\n{}",
            gateway.stderr_text()
        )
    });
    assert_eq!(
        got,
        Summary::of(&sent),
        "the client's messages, in order (seed {seed})"
    );
    assert!(
        !gateway
            .stderr_text()
            .contains("close_reason=\"idle_timeout\""),
        "the tunnel was closed as idle"
    );
}

/// A stream that never pauses is promoted mid-stream, and the kernel carries the rest.
/// The client writes as fast as its socket takes bytes and the backend reads slowly, so
/// the relay never waits for bytes from the client (it waits to write): the promotion
/// stops it at its next read, and by then the client has filled the gateway's receive
/// queue. The reads that empty the queue must take all of it (megabytes) before one comes
/// back short: with a fixed 256 KiB for those reads, such a stream was never promoted and
/// went all the way on the relay. Every byte is checked by position at the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_pauses_is_promoted_mid_stream_ebpf() {
    let test = "a_stream_that_never_pauses_is_promoted_mid_stream_ebpf";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let seed = test_seed(test);
    let len = 24 << 20;
    let mut backend = RawBackend::start(move |mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        let mut checker = Pattern::new(seed).checker();
        checker.check(&conn.leftover)?;
        let mut buf = vec![0; 64 << 10];
        loop {
            // About 8 MiB/s: slower than the client writes, for the whole stream. The
            // wait is pacing, not waiting for readiness.
            tokio::time::sleep(Duration::from_millis(8)).await;
            match conn.stream.read(&mut buf).await.expect("backend reads") {
                0 => return Ok(checker.offset()),
                n => checker.check(&buf[..n])?,
            }
        }
    })
    .await;
    let gateway = lazy_builder(backend.addr(), 256 << 10, 60_000).start();
    let baseline_sockets = gateway.socket_fd_count();
    // Made beforehand, so that the client writes as fast as its socket takes bytes.
    let bytes = pattern(seed, len);
    let tunnel = client::raw_upgrade(gateway.listen_addr(), "/fast", &[]).await;
    let mut stream = tunnel.stream;
    within(STEP_TIMEOUT, "the stream", async {
        stream.write_all(&bytes).await.expect("client writes");
        stream.shutdown().await.expect("client half-closes");
    })
    .await;
    let received: Result<u64, Mismatch> = backend.next_result().await;
    match received {
        Ok(read) => assert_eq!(read, len as u64, "seed {seed}"),
        Err(mismatch) => panic!("seed {seed}: {mismatch}\n{}", gateway.stderr_text()),
    }
    let mut rest = Vec::new();
    within(STEP_TIMEOUT, "the EOF", stream.read_to_end(&mut rest))
        .await
        .expect("client reads to EOF");
    tunnels::wait_none_active(&gateway).await;
    let metrics = gateway.metrics();
    assert_eq!(
        metrics.metric("gateway_tunnels_promoted_total", &[]),
        1.0,
        "never promoted:\n{}",
        gateway.stderr_text()
    );
    let spliced = tunnels::spliced_bytes(&gateway, "client_to_backend");
    let taken = metrics.metric(
        "gateway_handoff_bytes_total",
        &[("direction", "client_to_backend")],
    );
    eprintln!("{test}: {spliced} of {len} bytes spliced, {taken} taken at the promotion");
    assert!(
        spliced > 0.0,
        "promoted, but nothing went through the kernel"
    );
    assert_eq!(
        metrics.metric("gateway_splice_integrity_errors_total", &[]),
        0.0
    );
    gateway.wait_tunnels_gone(baseline_sockets).await;
}
