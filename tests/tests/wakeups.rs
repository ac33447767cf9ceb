//! A spliced tunnel costs the gateway no wake-ups per segment: userspace waits only for
//! hang-ups and flow events, never for readability. Measured with the gateway's context
//! switches (all threads) while a paced stream crosses the tunnel well below the reader's
//! speed, so no backlog builds up and no flow event is due.

use std::time::{Duration, Instant};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{seeded_rng, Hasher},
    skip_unprivileged,
    wait::within,
    Dataplane, Gateway,
};
use rand::RngCore as _;
use tokio::io::AsyncWriteExt as _;

/// 2 000 writes of 32 KiB, one every millisecond: 62.5 MiB at ~30 MiB/s.
const WRITES: usize = 2_000;
const WRITE_BYTES: usize = 32 * 1024;
const PACE: Duration = Duration::from_millis(1);

/// Context switches of every thread of `pid`, voluntary and not.
fn context_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the gateway's threads");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spliced_stream_does_not_wake_the_gateway_per_segment() {
    let test = "a_spliced_stream_does_not_wake_the_gateway_per_segment";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    let mut backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        conn.read_to_eof().await
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .start();
    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/paced", &[]).await;

    let mut rng = seeded_rng(test);
    let mut chunk = vec![0u8; WRITE_BYTES];
    let mut sent = Hasher::default();
    let before = context_switches(gateway.pid());
    let started = Instant::now();
    within(Duration::from_secs(60), "paced writes", async {
        for i in 0..WRITES {
            rng.fill_bytes(&mut chunk);
            tunnel
                .stream
                .write_all(&chunk)
                .await
                .expect("client writes");
            sent.update(&chunk);
            tokio::time::sleep_until((started + PACE * (i as u32 + 1)).into()).await;
        }
    })
    .await;
    let during = context_switches(gateway.pid()) - before;
    tunnel.stream.shutdown().await.expect("client half-closes");
    let received = within(
        Duration::from_secs(30),
        "backend reads to EOF",
        backend.next_result(),
    )
    .await;
    assert_eq!(received, sent.finish(), "what the backend received");

    let metrics = gateway.metrics();
    let segments = metrics.metric(
        "gateway_splice_verdicts_total",
        &[("outcome", "redirected")],
    );
    eprintln!(
        "{test}: {WRITES} writes, {segments} redirected segments, {during} gateway context switches in {:?}",
        started.elapsed()
    );
    assert!(
        segments >= WRITES as f64 / 2.0,
        "the stream was spliced:\n{}",
        metrics.text
    );
    // Timers of an idle runtime and the idle-timeout check cost a few; one wake-up per
    // segment would cost thousands.
    assert!(
        (during as f64) < segments / 10.0,
        "{during} context switches for {segments} segments: the gateway is woken per segment"
    );
}
