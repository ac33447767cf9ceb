//! Live tunnels and backend health: `on_backend_down` (keep, close, drain, and a drain the
//! backend's return cancels) on both dataplanes, least connections counting open tunnels,
//! and what `/tunnels` shows of a tunnel. Tunnel bytes are echoed by the backend and checked
//! by length + SHA-256 at both ends.

use std::time::Duration;

use gateway_tests::{
    admin::{backend, tunnel_of, tunnels, wait_backend, wait_states, wait_tunnel},
    config::{LoadBalancing, OnBackendDown},
    data::seeded_rng,
    dataplane_tests,
    health::{
        backend_received, closed_backend_down, listener, probe, rules, settings, start,
        HealthBackend, ProbeAnswer, Tunnel, ROUND_TRIP_BYTES, STEP,
    },
    skip_unprivileged, tunnels as tunnel_metrics,
    wait::eventually,
    Dataplane,
};
use tokio::time::Instant;

/// Bytes of the round trips that check a tunnel still carries data.
const CHECK_BYTES: usize = 256 * 1024;

/// Drain time of the `drain` settings.
const DRAIN: Duration = Duration::from_secs(2);

/// Drain time of the `cancel` settings (longer, so the backend's return beats it).
const CANCEL_DRAIN: Duration = Duration::from_secs(3);

/// Four pools of one backend each, one per `on_backend_down`; a tunnel to each, then every
/// backend fails its probe: `keep`'s tunnel carries on, `close`'s is closed at once (metric,
/// log), `drain`'s carries on while `/tunnels` says draining and closes after the drain
/// time, and `cancel`'s drain stops when its backend passes again and it stays open.
async fn on_backend_down(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let keep = HealthBackend::start("keep", ProbeAnswer::Pass).await;
    let close = HealthBackend::start("close", ProbeAnswer::Pass).await;
    let drain = HealthBackend::start("drain", ProbeAnswer::Pass).await;
    let cancel = HealthBackend::start("cancel", ProbeAnswer::Pass).await;
    // Thresholds that act on the first result, so a flip shows within a probe interval.
    let config = listener()
        .pool("keep", [keep.addr()])
        .pool("close", [close.addr()])
        .pool("drain", [drain.addr()])
        .pool("cancel", [cancel.addr()])
        .probe(probe("health").thresholds(1, 1))
        .settings(settings("keep").probe("health"))
        .settings(
            settings("close")
                .probe("health")
                .on_backend_down(OnBackendDown::Close),
        )
        .settings(settings("drain").probe("health").drain(DRAIN.as_secs()))
        .settings(
            settings("cancel")
                .probe("health")
                .drain(CANCEL_DRAIN.as_secs()),
        )
        .rule(rules(
            ("keep", "keep"),
            &[
                ("close", "close", "close"),
                ("drain", "drain", "drain"),
                ("cancel", "cancel", "cancel"),
            ],
        ));
    let (gateway, _config) = start(test, &config, dataplane);
    let listen = gateway.listen_addr();
    let mode = dataplane.tunnel_mode();
    let mut rng = seeded_rng(test);
    let all = [
        ("keep", keep.addr()),
        ("close", close.addr()),
        ("drain", drain.addr()),
        ("cancel", cancel.addr()),
    ];
    wait_states(&gateway, &all, "healthy").await;

    let mut t_keep = Tunnel::open(listen, "/ws").await;
    let mut t_close = Tunnel::open(listen, "/close/ws").await;
    let mut t_drain = Tunnel::open(listen, "/drain/ws").await;
    let mut t_cancel = Tunnel::open(listen, "/cancel/ws").await;
    for (tunnel, name) in [
        (&mut t_keep, "keep"),
        (&mut t_close, "close"),
        (&mut t_drain, "drain"),
        (&mut t_cancel, "cancel"),
    ] {
        assert_eq!(tunnel.backend, name);
        tunnel
            .round_trip(&mut rng, CHECK_BYTES, &format!("{name}: before"))
            .await;
    }
    let listed = tunnels(&gateway);
    assert_eq!(listed.len(), 4, "{listed:#?}");
    for view in &listed {
        assert_eq!(view.mode, mode, "{}", view.json);
        assert!(!view.draining, "{}", view.json);
    }
    assert_eq!(tunnel_metrics::opened(&gateway, mode), 4.0);

    for backend in [&keep, &close, &drain, &cancel] {
        backend.set(ProbeAnswer::Status(500));
    }

    // close: at once.
    wait_backend(
        &gateway,
        "close",
        close.addr(),
        "close's backend down",
        |v| v.state == "unhealthy",
    )
    .await;
    t_close
        .expect_closed(
            Duration::from_secs(2),
            "close: the tunnel closes once its backend is down",
        )
        .await;
    eventually(STEP, "the close is counted", || {
        match closed_backend_down(&gateway, mode) {
            1.0 => Ok(()),
            other => Err(format!("{other} closed for backend_down")),
        }
    })
    .await;
    let close_addr = close.addr().to_string();
    gateway
        .logged("the close is logged with its reason", |stderr| {
            stderr.lines().any(|line| {
                line.contains("tunnel closed")
                    && line.contains("backend down")
                    && line.contains(&close_addr)
            })
        })
        .await;

    // drain and cancel: draining, still carrying bytes.
    wait_tunnel(&gateway, t_drain.local, "drain: draining", |v| v.draining).await;
    wait_tunnel(&gateway, t_cancel.local, "cancel: draining", |v| v.draining).await;
    let cancel_draining_seen = Instant::now();
    let draining = gateway
        .metrics()
        .metric("gateway_tunnels", &[("mode", mode), ("state", "draining")]);
    assert_eq!(draining, 2.0, "tunnels draining");
    t_drain
        .round_trip(&mut rng, CHECK_BYTES, "drain: while draining")
        .await;
    t_cancel
        .round_trip(&mut rng, CHECK_BYTES, "cancel: while draining")
        .await;

    // cancel: its backend passes again, the drain stops.
    cancel.set(ProbeAnswer::Pass);
    wait_tunnel(&gateway, t_cancel.local, "cancel: drain cancelled", |v| {
        !v.draining
    })
    .await;
    assert_eq!(backend(&gateway, "cancel", cancel.addr()).state, "healthy");

    t_drain
        .expect_closed(DRAIN + STEP, "drain: closes when the drain time is over")
        .await;
    eventually(
        STEP,
        "the drain's close is counted",
        || match closed_backend_down(&gateway, mode) {
            2.0 => Ok(()),
            other => Err(format!("{other} closed for backend_down")),
        },
    )
    .await;

    // The cancelled drain's time is over (it started before it was seen): still open.
    tokio::time::sleep_until(cancel_draining_seen + CANCEL_DRAIN + Duration::from_secs(1)).await;
    t_cancel
        .round_trip(&mut rng, CHECK_BYTES, "cancel: after the drain time")
        .await;
    let view = tunnel_of(&gateway, t_cancel.local).expect("cancel's tunnel is listed");
    assert!(!view.draining, "{}", view.json);

    // keep: its backend has been down all along.
    assert_eq!(backend(&gateway, "keep", keep.addr()).state, "unhealthy");
    t_keep
        .round_trip(&mut rng, CHECK_BYTES, "keep: backend down")
        .await;
    let view = tunnel_of(&gateway, t_keep.local).expect("keep's tunnel is listed");
    assert!(!view.draining, "{}", view.json);
    assert_eq!(closed_backend_down(&gateway, mode), 2.0);

    let (keep_id, close_id, drain_id, cancel_id) = (t_keep.id, t_close.id, t_drain.id, t_cancel.id);
    let (close_sent, drain_sent) = (t_close.sent(), t_drain.sent());
    let keep_sent = t_keep.finish().await;
    let cancel_sent = t_cancel.finish().await;
    backend_received(&keep, keep_id, keep_sent).await;
    backend_received(&close, close_id, close_sent).await;
    backend_received(&drain, drain_id, drain_sent).await;
    backend_received(&cancel, cancel_id, cancel_sent).await;
    tunnel_metrics::wait_none_active(&gateway).await;
}

dataplane_tests!(on_backend_down => on_backend_down_ebpf, on_backend_down_userspace);

/// Least connections counts open tunnels: with three tunnels on `a` (while `b` was down),
/// the next three go to `b` once it is back, as `/backends` and `/tunnels` show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_tunnels_to_the_less_busy_backend() {
    let test = "least_connections_sends_new_tunnels_to_the_less_busy_backend";
    let a = HealthBackend::start("a", ProbeAnswer::Pass).await;
    let b = HealthBackend::start("b", ProbeAnswer::Status(500)).await;
    // Thresholds that act on the first result.
    let config = listener()
        .pool("pool", [a.addr(), b.addr()])
        .probe(probe("health").thresholds(1, 1))
        .settings(
            settings("s")
                .probe("health")
                .load_balancing(LoadBalancing::LeastConnections),
        )
        .rule(rules(("pool", "s"), &[]));
    let (gateway, _config) = start(test, &config, Dataplane::Userspace);
    let listen = gateway.listen_addr();
    let mut rng = seeded_rng(test);
    wait_states(&gateway, &[("pool", a.addr())], "healthy").await;
    wait_states(&gateway, &[("pool", b.addr())], "unhealthy").await;

    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tunnel = Tunnel::open(listen, "/ws").await;
        tunnel
            .round_trip(&mut rng, ROUND_TRIP_BYTES, "a tunnel while b is down")
            .await;
        assert_eq!(tunnel.backend, "a", "b is down");
        open.push(tunnel);
    }
    assert_eq!(backend(&gateway, "pool", a.addr()).active_connections, 3);

    b.set(ProbeAnswer::Pass);
    wait_states(&gateway, &[("pool", b.addr())], "healthy").await;
    for i in 0..3 {
        let mut tunnel = Tunnel::open(listen, "/ws").await;
        tunnel
            .round_trip(&mut rng, ROUND_TRIP_BYTES, "a tunnel once b is back")
            .await;
        assert_eq!(
            tunnel.backend, "b",
            "tunnel {i} after b came back: b has fewer"
        );
        open.push(tunnel);
    }
    let a_view = backend(&gateway, "pool", a.addr());
    let b_view = backend(&gateway, "pool", b.addr());
    assert_eq!(a_view.active_connections, 3, "{}", a_view.json);
    assert_eq!(b_view.active_connections, 3, "{}", b_view.json);
    let listed = tunnels(&gateway);
    for (addr, name) in [(a.addr(), "a"), (b.addr(), "b")] {
        let on = listed
            .iter()
            .filter(|t| t.backend == addr.to_string())
            .count();
        assert_eq!(on, 3, "tunnels to {name}: {listed:#?}");
    }

    for tunnel in open {
        tunnel.finish().await;
    }
    eventually(STEP, "no connection counted on either backend", || {
        let (a_now, b_now) = (
            backend(&gateway, "pool", a.addr()),
            backend(&gateway, "pool", b.addr()),
        );
        if a_now.active_connections + b_now.active_connections == 0 {
            Ok(())
        } else {
            Err(format!("{}\n{}", a_now.json, b_now.json))
        }
    })
    .await;
}

/// `/tunnels` lists a live tunnel with who, where, how, the bytes each way (counted up to
/// what was sent), its age and its idle time; and forgets it once it closes.
async fn tunnels_lists_live_tunnels(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    const BYTES: usize = 300_000;
    let echo = HealthBackend::start("echo", ProbeAnswer::Pass).await;
    let config = listener()
        .pool("echo-pool", [echo.addr()])
        .settings(settings("echo-settings"))
        .rule(rules(("echo-pool", "echo-settings"), &[]));
    let (gateway, _config) = start(test, &config, dataplane);
    let mut rng = seeded_rng(test);
    assert!(tunnels(&gateway).is_empty());

    let mut tunnel = Tunnel::open(gateway.listen_addr(), "/ws").await;
    tunnel.round_trip(&mut rng, BYTES, "first round trip").await;
    let n = BYTES as u64;
    let view = wait_tunnel(&gateway, tunnel.local, "the bytes are counted", |v| {
        v.client_to_backend_bytes == n && v.backend_to_client_bytes == n
    })
    .await;
    assert!(view.id >= 1, "{}", view.json);
    assert_eq!(view.client, tunnel.local.to_string());
    assert_eq!(view.backend, echo.addr().to_string());
    assert_eq!(view.pool, "echo-pool");
    assert_eq!(view.settings, "echo-settings");
    assert_eq!(view.mode, dataplane.tunnel_mode(), "{}", view.json);
    assert!(!view.draining, "{}", view.json);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        view.opened_unix <= now && view.opened_unix + 60 > now,
        "{}",
        view.json
    );
    assert!(
        view.age_secs >= 0.0 && view.age_secs < 30.0,
        "{}",
        view.json
    );
    assert!(
        view.idle_secs >= 0.0 && view.idle_secs <= view.age_secs,
        "{}",
        view.json
    );

    // Idle time grows while nothing moves, and age with it.
    let idle = wait_tunnel(&gateway, tunnel.local, "idle time grows", |v| {
        v.idle_secs >= 0.5
    })
    .await;
    assert!(idle.age_secs >= idle.idle_secs, "{}", idle.json);
    assert!(
        idle.age_secs > view.age_secs,
        "{} then {}",
        view.json,
        idle.json
    );
    assert_eq!(idle.id, view.id);

    // More bytes: counted, and the idle time starts over.
    tunnel
        .round_trip(&mut rng, BYTES, "second round trip")
        .await;
    wait_tunnel(
        &gateway,
        tunnel.local,
        "twice the bytes, no longer idle",
        |v| {
            v.client_to_backend_bytes == 2 * n
                && v.backend_to_client_bytes == 2 * n
                && v.idle_secs < 0.5
        },
    )
    .await;

    let id = tunnel.id;
    let sent = tunnel.finish().await;
    backend_received(&echo, id, sent).await;
    eventually(STEP, "the closed tunnel leaves /tunnels", || {
        let listed = tunnels(&gateway);
        if listed.is_empty() {
            Ok(())
        } else {
            Err(format!("{listed:#?}"))
        }
    })
    .await;
}

dataplane_tests!(tunnels_lists_live_tunnels => tunnels_shows_a_spliced_tunnel, tunnels_shows_a_relayed_tunnel);
