//! Busy echo tunnels keep flowing, every byte both ways, while other traffic comes and goes
//! next to them (plain requests through the pooled client, tunnels whose client drops its
//! socket right after the `101`), with a small kernel backlog budget so that their flows
//! pause and resume all the time.
//!
//! This once stalled a busy spliced tunnel for good in about 1 run in 10–20 (with the default
//! budget): a paused flow's passed bytes waited in the kernel behind bytes redirected the
//! other way, which waited for the echo backend to read, which waited for the window the
//! pause had shut. See docs/dataplane.md, "Passed bytes queue behind the other direction".

use std::{net::SocketAddr, time::Duration};

use gateway_tests::{
    busy::{finish_and_check, wait_flowing, BusyTunnel},
    config::{Config, ConfigFile, Listener, PathRule, Rule, Settings},
    data::seeded_rng,
    dataplane_tests,
    http_backend::{backend_of, HttpBackend},
    http_client::ws_connect_as,
    skip_unprivileged, tunnels,
    wait::within,
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A busy tunnel that moves no byte for this long has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Busy tunnels next to the ones that come and go.
const BUSY_TUNNELS: usize = 2;
/// Rounds of (a plain request, a tunnel dropped right after its `101`).
const ROUNDS: usize = 10;
/// `--max-tunnel-backlog-bytes`: small, so that the busy flows pause often.
const BACKLOG_BYTES: u64 = 256 * 1024;
/// Bytes each busy tunnel must echo before the rounds and after them.
const FLOWING_BYTES: u64 = 256 << 10;

/// One `http` listener: `/ws` to pool `busy`, `/other` (plain requests and the dropped
/// tunnels) to pool `other`.
fn config(busy: SocketAddr, other: SocketAddr) -> Config {
    Config::new()
        .listener(Listener::http("web", "127.0.0.1:0"))
        .rule(
            Rule::path_based("web-rule", "web", "busy", "plain").path(PathRule::to(
                "other",
                ["/other"],
                "other",
                "plain",
            )),
        )
        .settings(Settings::http("plain", 80).request_timeout_secs(30))
        .pool("busy", [busy])
        .pool("other", [other])
}

/// Two busy tunnels to `alpha` (an echo backend: it stops reading while it cannot write);
/// next to them, round after round, a plain request to `beta` (over the gateway's pooled
/// connection) and a tunnel to `beta` whose client drops its socket right after the `101`.
/// The busy tunnels must keep flowing and, when finished, have carried every byte both
/// ways (length + SHA-256 at client and backend).
///
/// On the eBPF dataplane a busy tunnel used to stall here: no byte either way, no log line,
/// until the test gave up and killed the gateway (which its client then saw as an EOF).
async fn teardown_leaves_neighbours_alone(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let alpha = HttpBackend::start("alpha").await;
    let beta = HttpBackend::start("beta").await;
    let config = ConfigFile::new(test, &config(alpha.addr(), beta.addr()));
    let gateway = Gateway::builder()
        .config(config.path())
        .dataplane(dataplane)
        .arg("--max-tunnel-backlog-bytes")
        .arg(BACKLOG_BYTES.to_string())
        .start();
    let listen = gateway.listen_addr();

    let mut seeds = seeded_rng(test);
    let mut tunnels = Vec::new();
    for _ in 0..BUSY_TUNNELS {
        let (ws, response) = within(
            STEP_TIMEOUT,
            "WebSocket upgrade",
            ws_connect_as(listen, "x.test", "/ws", None),
        )
        .await;
        assert_eq!(response.status().as_u16(), 101);
        // Opened before it sends, so on eBPF it is spliced (asserted here).
        let opened = tunnels.len() as f64 + 1.0;
        tunnels::wait_opened(&gateway, dataplane, opened).await;
        tunnels.push(BusyTunnel::start(ws, StdRng::seed_from_u64(seeds.random())));
    }
    wait_flowing(&tunnels, FLOWING_BYTES, STALL_TIMEOUT, "busy tunnels flow").await;

    for round in 0..ROUNDS {
        assert_eq!(backend_of(listen, "/other").await, "beta", "round {round}");
        let (ws, response) = within(
            STEP_TIMEOUT,
            "WebSocket upgrade",
            ws_connect_as(listen, "x.test", "/other", None),
        )
        .await;
        let to = response
            .headers()
            .get("x-backend")
            .map(|v| v.to_str().unwrap_or_default());
        assert_eq!(to, Some("beta"), "round {round}");
        drop(ws);
        // The dropped tunnel's record at its backend: it ended without a close handshake.
        let _ = beta.next_ws_record().await;
        wait_flowing(
            &tunnels,
            1,
            STALL_TIMEOUT,
            &format!("busy tunnels flow in round {round}"),
        )
        .await;
    }
    wait_flowing(
        &tunnels,
        FLOWING_BYTES,
        STALL_TIMEOUT,
        "busy tunnels flow after the rounds",
    )
    .await;

    finish_and_check(tunnels, &alpha).await;
    if dataplane == Dataplane::Ebpf {
        // The busy tunnels' bytes (WebSocket frames, so more than their payloads): some went
        // through the kernel, the rest through userspace while their flows were paused.
        for direction in ["client_to_backend", "backend_to_client"] {
            let spliced = tunnels::spliced_bytes(&gateway, direction);
            assert!(spliced > 0.0, "nothing spliced {direction}");
        }
    }
}

dataplane_tests!(teardown_leaves_neighbours_alone => teardown_leaves_neighbours_alone_ebpf, teardown_leaves_neighbours_alone_userspace);
