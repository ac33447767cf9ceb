//! 200 spliced tunnels at once, random sizes, every one checksummed at both ends; afterwards
//! the gateway's eBPF maps are empty and its sockets are back to what it had at start-up.

use std::{collections::BTreeMap, time::Duration};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{seeded_rng, Summary},
    exchange, skip_unprivileged, tunnels,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::task::JoinSet;

const TUNNELS: usize = 200;
const MAX_BYTES: u64 = 4 << 20;
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_spliced_tunnels() {
    let test = "two_hundred_concurrent_spliced_tunnels";
    if skip_unprivileged(Dataplane::Ebpf, test) {
        return;
    }
    // Echoes each tunnel and reports its path with the summary of what went through.
    let mut backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        let echoed = conn.echo_to_eof().await.expect("backend echoes to EOF");
        (conn.request.path().to_owned(), echoed)
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Ebpf)
        .start();
    let baseline = gateway.socket_fd_count();

    let mut rng = seeded_rng(test);
    let plans: Vec<(u64, u64)> = (0..TUNNELS)
        .map(|_| (rng.random_range(0..=MAX_BYTES), rng.random()))
        .collect();
    let total: u64 = plans.iter().map(|(size, _)| size).sum();
    eprintln!("{test}: {TUNNELS} tunnels, {total} bytes each way in all");

    let addr = gateway.listen_addr();
    // No client half-closes before every tunnel is spliced: a FIN that beats the handoff
    // rightly sends its tunnel to the relay (docs/dataplane.md, "When the kernel refuses"),
    // and this test is of 200 spliced tunnels.
    let (all_open, opened) = tokio::sync::watch::channel(false);
    let mut tunnels = JoinSet::new();
    for (index, &(size, seed)) in plans.iter().enumerate() {
        let mut opened = opened.clone();
        tunnels.spawn(async move {
            let path = format!("/tunnel/{index}");
            let mut tunnel = client::raw_upgrade(addr, &path, &[]).await;
            let (sent, received) = exchange::send_random_while_reading(
                &mut tunnel.stream,
                &tunnel.leftover,
                &mut StdRng::seed_from_u64(seed),
                size,
                async move {
                    let _ = opened.wait_for(|open| *open).await;
                },
                &format!("{path}: client"),
            )
            .await;
            (path, sent, received)
        });
    }
    tunnels::wait_opened(&gateway, Dataplane::Ebpf, TUNNELS as f64).await;
    all_open.send_replace(true);
    let clients: BTreeMap<String, (Summary, Summary)> =
        within(RUN_TIMEOUT, "200 concurrent tunnels", async {
            let mut clients = BTreeMap::new();
            while let Some(done) = tunnels.join_next().await {
                let (path, sent, received) = done.expect("a client tunnel task");
                clients.insert(path, (sent, received));
            }
            clients
        })
        .await;
    let mut echoed = BTreeMap::new();
    for _ in 0..TUNNELS {
        let (path, summary) = backend.next_result().await;
        assert!(
            echoed.insert(path.clone(), summary).is_none(),
            "backend saw {path} twice"
        );
    }

    for (index, (size, _)) in plans.iter().enumerate() {
        let path = format!("/tunnel/{index}");
        let (sent, received) = clients[&path];
        assert_eq!(sent.len, *size, "{path}: bytes sent");
        assert_eq!(
            echoed.get(&path),
            Some(&sent),
            "{path}: what the backend received"
        );
        assert_eq!(received, sent, "{path}: what the client got back");
    }

    eventually(Duration::from_secs(10), "no tunnel active", || {
        let metrics = gateway.metrics();
        let active = metrics.exported("gateway_tunnels_active", &[("mode", "spliced")])?;
        (active == 0.0)
            .then_some(())
            .ok_or_else(|| format!("{active} spliced tunnels active:\n{}", metrics.text))
    })
    .await;
    let metrics = gateway.metrics();
    assert_eq!(
        metrics.metric("gateway_tunnels_opened_total", &[("mode", "spliced")]),
        TUNNELS as f64,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.metric("gateway_tunnels_opened_total", &[("mode", "userspace")]),
        0.0,
        "{}",
        metrics.text
    );
    gateway.wait_tunnels_gone(baseline).await;
}
