//! `/metrics` after one tunnel moved an exact number of bytes each way: the bytes show up in
//! the counters of the dataplane that carried them (spliced or relayed), and only there.

use std::time::Duration;

use gateway_common::names;
use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{seeded_rng, Summary},
    dataplane_tests,
    metrics::Metrics,
    skip_unprivileged,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};

/// Bytes each way: raw bytes after the upgrade, so this is exactly what crosses the tunnel.
const BYTES: u64 = (1 << 20) + 12_345;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the metrics must say about one tunnel of `BYTES` each way, now closed.
/// Every family is exported from the start, at zero, whatever the dataplane: an absent one
/// is a failure, not a zero.
fn check(metrics: &Metrics, dataplane: Dataplane) -> Result<(), String> {
    let (used, unused) = match dataplane {
        Dataplane::Ebpf => ("gateway_spliced_bytes_total", "gateway_relayed_bytes_total"),
        _ => ("gateway_relayed_bytes_total", "gateway_spliced_bytes_total"),
    };
    let mode = dataplane.tunnel_mode();
    let other = if mode == "spliced" {
        "userspace"
    } else {
        "spliced"
    };
    let bytes = BYTES as f64;
    let exported = |name: &str, labels: &[(&str, &str)]| metrics.exported(name, labels);
    let c2b = [("direction", "client_to_backend")];
    let b2c = [("direction", "backend_to_client")];
    let checks = [
        (format!("{used}{c2b:?}"), exported(used, &c2b), bytes),
        (format!("{used}{b2c:?}"), exported(used, &b2c), bytes),
        (format!("{unused}{c2b:?}"), exported(unused, &c2b), 0.0),
        (format!("{unused}{b2c:?}"), exported(unused, &b2c), 0.0),
        (
            format!("opened {mode}"),
            exported("gateway_tunnels_opened_total", &[("mode", mode)]),
            1.0,
        ),
        (
            format!("opened {other}"),
            exported("gateway_tunnels_opened_total", &[("mode", other)]),
            0.0,
        ),
        (
            format!("active {mode}"),
            exported("gateway_tunnels_active", &[("mode", mode)]),
            0.0,
        ),
        (
            format!("active {other}"),
            exported("gateway_tunnels_active", &[("mode", other)]),
            0.0,
        ),
    ];
    let wrong: Vec<String> = checks
        .iter()
        .filter(|(_, have, want)| have.as_ref() != Ok(want))
        .map(|(what, have, want)| format!("{what} = {have:?}, expected {want}"))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n/metrics:\n{}", wrong.join("\n"), metrics.text))
    }
}

async fn byte_counters(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut rng = seeded_rng(test);
    let backend_seed: u64 = rng.random();
    // Sequential on purpose: the backend answers only after the client's EOF, so every byte
    // each way crosses an established tunnel.
    let mut backend = RawBackend::start(move |mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        let received = conn.read_to_eof().await;
        let mut rng = StdRng::seed_from_u64(backend_seed);
        let sent = conn.send_random_then_half_close(&mut rng, BYTES).await;
        (received, sent)
    })
    .await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let mode = dataplane.tunnel_mode();
    let baseline = gateway.socket_fd_count();

    let mut tunnel = within(
        STEP_TIMEOUT,
        "upgrade",
        client::raw_upgrade(gateway.listen_addr(), "/metrics-test", &[]),
    )
    .await;
    eventually(METRICS_TIMEOUT, "the tunnel counted as active", || {
        let metrics = gateway.metrics();
        let active = metrics.exported("gateway_tunnels_active", &[("mode", mode)])?;
        (active == 1.0)
            .then_some(())
            .ok_or_else(|| format!("{active} active in mode {mode}:\n{}", metrics.text))
    })
    .await;
    // The harness sees the open tunnel: its two sockets and, spliced, one entry per socket in
    // each map (so the empty maps and socket counts other tests wait for are not vacuous).
    eventually(
        METRICS_TIMEOUT,
        "the open tunnel in the gateway's fds and maps",
        || {
            let sockets = gateway.socket_fd_count();
            if sockets < baseline + 2 {
                return Err(format!(
                    "{sockets} socket fds, {baseline} before the tunnel"
                ));
            }
            if dataplane == Dataplane::Ebpf {
                let entries = gateway.ebpf_map_entries();
                for name in [names::SPLICED, names::PEERS, names::FLOWS] {
                    if entries.get(name) != Some(&2) {
                        return Err(format!("expected 2 entries in {name}: {entries:?}"));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    let (sent, received): (Summary, Summary) = within(STEP_TIMEOUT, "transfer each way", async {
        tunnel.send_random_then_read_to_eof(&mut rng, BYTES).await
    })
    .await;
    drop(tunnel);
    let (backend_received, backend_sent) = backend.next_result().await;
    assert_eq!(backend_received, sent, "backend got the client's bytes");
    assert_eq!(received, backend_sent, "client got the backend's bytes");

    eventually(METRICS_TIMEOUT, "byte and tunnel counters", || {
        check(&gateway.metrics(), dataplane)
    })
    .await;
    gateway.wait_tunnels_gone(baseline).await;
}

dataplane_tests!(byte_counters => spliced_byte_counters_ebpf, relayed_byte_counters_userspace);
