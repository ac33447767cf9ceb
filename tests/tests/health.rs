//! Backend health end to end: active probes (pass, a failing status, a hang, a slow answer,
//! a closed connection, a body or status that does not match) move each backend between
//! `unknown`, `healthy` and `unhealthy` by the thresholds, as `/backends` and `/metrics`
//! show; requests and WebSocket upgrades go only to backends that take traffic, and a pool
//! with none answers `502` at once. Elsewhere: passive ejection (`health/passive.rs`), https
//! and default probes (`health/probe_kinds.rs`), and live tunnels (`on_backend_down`, least
//! connections, `/tunnels`: `health/tunnels.rs`).
//!
//! Probes run every second with a 1 s timeout; every wait polls `/backends` for the state.

// This file is the test crate's root, so its modules are named by path.
#[path = "health/passive.rs"]
mod passive;
#[path = "health/probe_kinds.rs"]
mod probe_kinds;
#[path = "health/tunnels.rs"]
mod tunnels;

use std::{net::SocketAddr, time::Duration};

use gateway_tests::{
    admin::{wait_backend, wait_states},
    data::seeded_rng,
    health::{
        get, listener, names, probe, probes_metric, rules, settings, spread, spread_tunnels, start,
        state_metric, upgrade_answer, HealthBackend, ProbeAnswer, PROBE_AGENT,
    },
    wait::{eventually, within},
    Dataplane,
};

/// A pool of three; `a` answers 500 for a while: healthy → unhealthy on the second failure
/// in a row (not the first), back on the second success in a row (not the first), with
/// `/backends` (streaks, last probe, `since`) and `/metrics` following; meanwhile requests
/// and upgrades go to `b` and `c` only, and to all three again once `a` is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_leaves_after_the_threshold_and_comes_back() {
    let test = "a_failing_backend_leaves_after_the_threshold_and_comes_back";
    let a = HealthBackend::start("a", ProbeAnswer::Pass).await;
    let b = HealthBackend::start("b", ProbeAnswer::Pass).await;
    let c = HealthBackend::start("c", ProbeAnswer::Pass).await;
    // Out after 2 failures, back after 2 successes.
    let config = listener()
        .pool("pool", [a.addr(), b.addr(), c.addr()])
        .probe(probe("health").thresholds(2, 2))
        .settings(settings("s").probe("health"))
        .rule(rules(("pool", "s"), &[]));
    let (gateway, _config) = start(test, &config, Dataplane::Userspace);
    let listen = gateway.listen_addr();
    let mut rng = seeded_rng(test);

    // The first probe decides: all three healthy.
    let which = [("pool", a.addr()), ("pool", b.addr()), ("pool", c.addr())];
    let up = wait_states(&gateway, &which, "healthy").await;
    let first = &up[0];
    assert_eq!(first.probe.as_deref(), Some("health"), "{}", first.json);
    assert_eq!(first.settings, "s", "{}", first.json);
    assert!(first.takes_traffic, "{}", first.json);
    assert_eq!(first.consecutive_failures, 0, "{}", first.json);
    assert!(first.consecutive_successes >= 1, "{}", first.json);
    let last = first.last();
    assert!(
        last.passed && last.status == Some(200) && last.error.is_none(),
        "{}",
        first.json
    );
    let sent = a.probes();
    let probe_head = sent.first().expect("a was probed");
    assert_eq!(probe_head.path(), "/health", "{}", probe_head.text());
    assert_eq!(
        probe_head.header("host"),
        Some("health.test"),
        "{}",
        probe_head.text()
    );
    assert!(
        probe_head
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with(PROBE_AGENT)),
        "{}",
        probe_head.text()
    );
    assert_eq!(names(&spread(listen, "/", 6).await), ["a", "b", "c"]);

    a.set(ProbeAnswer::Status(500));
    // One failure is not enough to take it out.
    let once = wait_backend(
        &gateway,
        "pool",
        a.addr(),
        "a's first failed probe",
        |view| view.consecutive_failures >= 1,
    )
    .await;
    assert_eq!(once.state, "healthy", "one failure: {}", once.json);
    assert_eq!(once.consecutive_failures, 1, "{}", once.json);
    assert_eq!(once.consecutive_successes, 0, "{}", once.json);
    assert!(once.takes_traffic, "{}", once.json);
    let last = once.last();
    assert!(!last.passed && last.status == Some(500), "{}", once.json);
    assert_eq!(
        last.error.as_deref(),
        Some("status 500 not in 200-399"),
        "{}",
        once.json
    );
    let down = wait_backend(&gateway, "pool", a.addr(), "a unhealthy", |view| {
        view.state == "unhealthy"
    })
    .await;
    assert!(down.consecutive_failures >= 2, "{}", down.json);
    assert!(down.probes_failed >= 2, "{}", down.json);
    assert!(!down.takes_traffic, "{}", down.json);
    assert!(
        down.since_unix > first.since_unix,
        "since moves with the state: {} then {}",
        first.json,
        down.json
    );

    // Only b and c get requests and tunnels while a is down.
    let a_requests = a.requests();
    assert_eq!(names(&spread(listen, "/", 9).await), ["b", "c"]);
    assert_eq!(
        names(&spread_tunnels(listen, "/ws", 4, &mut rng).await),
        ["b", "c"]
    );
    assert_eq!(a.requests(), a_requests, "a got requests while down");
    let metrics = gateway.metrics();
    assert_eq!(state_metric(&metrics, "pool", a.addr(), "unhealthy"), 1.0);
    assert_eq!(state_metric(&metrics, "pool", a.addr(), "healthy"), 0.0);
    assert_eq!(state_metric(&metrics, "pool", b.addr(), "healthy"), 1.0);
    let failed = probes_metric(&metrics, "pool", a.addr(), "failed");
    assert!(
        failed >= 2.0,
        "failed probes of a: {failed}\n{}",
        metrics.text
    );
    assert!(probes_metric(&metrics, "pool", a.addr(), "passed") >= 1.0);
    eventually(Duration::from_secs(5), "failed probes of a grow", || {
        let now = probes_metric(&gateway.metrics(), "pool", a.addr(), "failed");
        if now > failed {
            Ok(())
        } else {
            Err(format!("{now}"))
        }
    })
    .await;

    a.set(ProbeAnswer::Pass);
    // One success is not enough to bring it back.
    let once = wait_backend(
        &gateway,
        "pool",
        a.addr(),
        "a's first passed probe",
        |view| view.consecutive_successes >= 1,
    )
    .await;
    assert_eq!(once.state, "unhealthy", "one success: {}", once.json);
    assert_eq!(once.consecutive_successes, 1, "{}", once.json);
    assert_eq!(once.consecutive_failures, 0, "{}", once.json);
    assert!(!once.takes_traffic, "{}", once.json);
    assert!(
        once.last().passed && once.last().status == Some(200),
        "{}",
        once.json
    );
    let back = wait_backend(&gateway, "pool", a.addr(), "a healthy again", |view| {
        view.state == "healthy"
    })
    .await;
    assert!(back.consecutive_successes >= 2, "{}", back.json);
    assert!(back.takes_traffic, "{}", back.json);
    assert!(
        back.since_unix > down.since_unix,
        "{} then {}",
        down.json,
        back.json
    );
    assert_eq!(names(&spread(listen, "/", 9).await), ["a", "b", "c"]);
    assert_eq!(
        names(&spread_tunnels(listen, "/ws", 3, &mut rng).await),
        ["a", "b", "c"]
    );
    let metrics = gateway.metrics();
    assert_eq!(state_metric(&metrics, "pool", a.addr(), "healthy"), 1.0);
    assert_eq!(state_metric(&metrics, "pool", a.addr(), "unhealthy"), 0.0);
}

/// Every way a probe fails, each on its own backend at once: no answer (a hang), an answer
/// after the timeout, a connection closed without an answer, a body without the
/// `match_body` text, a status outside `match_status_codes` (a 302 against `200-204`, which
/// the default range would take). Each backend goes down, its pool's traffic goes to the
/// pool's healthy backend, and all come back when they pass again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangs_slow_answers_closes_bodies_and_statuses_fail_probes() {
    let test = "hangs_slow_answers_closes_bodies_and_statuses_fail_probes";
    let hang = HealthBackend::start("hang", ProbeAnswer::Pass).await;
    let slow = HealthBackend::start("slow", ProbeAnswer::Pass).await;
    let close = HealthBackend::start("close", ProbeAnswer::Pass).await;
    let fine = HealthBackend::start("fine", ProbeAnswer::Pass).await;
    let body = HealthBackend::start("body", ProbeAnswer::Pass).await;
    let body_ok = HealthBackend::start("body-ok", ProbeAnswer::Pass).await;
    let found = HealthBackend::start("found", ProbeAnswer::Pass).await;
    let found_ok = HealthBackend::start("found-ok", ProbeAnswer::Pass).await;
    // Every probe: out after 2 failures, back after 2 successes.
    let config = listener()
        .pool(
            "modes",
            [hang.addr(), slow.addr(), close.addr(), fine.addr()],
        )
        .pool("bodies", [body.addr(), body_ok.addr()])
        .pool("codes", [found.addr(), found_ok.addr()])
        .probe(probe("health").thresholds(2, 2))
        .probe(probe("body").thresholds(2, 2).match_body("all good"))
        .probe(
            probe("codes")
                .thresholds(2, 2)
                .match_status_codes(["200-204"]),
        )
        .settings(settings("s-modes").probe("health"))
        .settings(settings("s-bodies").probe("body"))
        .settings(settings("s-codes").probe("codes"))
        .rule(rules(
            ("modes", "s-modes"),
            &[
                ("bodies", "bodies", "s-bodies"),
                ("codes", "codes", "s-codes"),
            ],
        ));
    let (gateway, _config) = start(test, &config, Dataplane::Userspace);
    let listen = gateway.listen_addr();
    let mut rng = seeded_rng(test);

    let every: Vec<(&str, &HealthBackend)> = vec![
        ("modes", &hang),
        ("modes", &slow),
        ("modes", &close),
        ("modes", &fine),
        ("bodies", &body),
        ("bodies", &body_ok),
        ("codes", &found),
        ("codes", &found_ok),
    ];
    let all: Vec<(&str, SocketAddr)> = every.iter().map(|(p, b)| (*p, b.addr())).collect();
    wait_states(&gateway, &all, "healthy").await;

    // (pool, backend, answer, the last probe's status and error once it is down)
    let timeout = "no answer within 1s";
    let victims = [
        ("modes", &hang, ProbeAnswer::Hang, None, timeout),
        ("modes", &slow, ProbeAnswer::Slow, None, timeout),
        (
            "modes",
            &close,
            ProbeAnswer::Close,
            None,
            "closed before answering",
        ),
        (
            "bodies",
            &body,
            ProbeAnswer::Body("status: degraded"),
            Some(200),
            "body does not contain \"all good\"",
        ),
        (
            "codes",
            &found,
            ProbeAnswer::Status(302),
            Some(302),
            "status 302 not in 200-204",
        ),
    ];
    for (_, backend, answer, _, _) in &victims {
        backend.set(answer.clone());
    }
    let down: Vec<(&str, SocketAddr)> = victims.iter().map(|v| (v.0, v.1.addr())).collect();
    let views = wait_states(&gateway, &down, "unhealthy").await;
    for ((_, backend, _, status, error), view) in victims.iter().zip(&views) {
        let name = backend.name();
        assert!(view.consecutive_failures >= 2, "{name}: {}", view.json);
        assert!(!view.takes_traffic, "{name}: {}", view.json);
        let last = view.last();
        assert!(!last.passed, "{name}: {}", view.json);
        assert_eq!(last.status, *status, "{name}'s last status: {}", view.json);
        assert!(
            view.error().starts_with(error),
            "{name}'s last error, expected {error:?}: {}",
            view.json
        );
    }

    // Each pool's traffic goes to its healthy backend only.
    for (path, healthy) in [
        ("/", "fine"),
        ("/bodies/x", "body-ok"),
        ("/codes/x", "found-ok"),
    ] {
        assert_eq!(names(&spread(listen, path, 4).await), [healthy], "{path}");
        let ws = path.replace('x', "ws");
        assert_eq!(
            names(&spread_tunnels(listen, &ws, 2, &mut rng).await),
            [healthy],
            "{ws}"
        );
    }

    for (_, backend, _, _, _) in &victims {
        backend.set(ProbeAnswer::Pass);
    }
    for view in wait_states(&gateway, &down, "healthy").await {
        assert!(view.consecutive_successes >= 2, "{}", view.json);
    }
    assert_eq!(
        names(&spread(listen, "/", 8).await),
        ["close", "fine", "hang", "slow"]
    );
    assert_eq!(
        names(&spread(listen, "/bodies/x", 2).await),
        ["body", "body-ok"]
    );
    assert_eq!(
        names(&spread(listen, "/codes/x", 2).await),
        ["found", "found-ok"]
    );
}

/// A pool whose backends all fail their first probe (the first result decides, on one
/// failure) answers requests and upgrades `502` "no healthy backend" at once, logs it, and
/// counts the `502`s; the backends see only probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_no_healthy_backend_answers_502_at_once() {
    let test = "a_pool_with_no_healthy_backend_answers_502_at_once";
    let a = HealthBackend::start("a", ProbeAnswer::Status(503)).await;
    let b = HealthBackend::start("b", ProbeAnswer::Status(500)).await;
    let config = listener()
        .pool("pool", [a.addr(), b.addr()])
        .probe(probe("health").thresholds(2, 2))
        .settings(settings("s").probe("health"))
        .rule(rules(("pool", "s"), &[]));
    let (gateway, _config) = start(test, &config, Dataplane::Userspace);
    let listen = gateway.listen_addr();

    let views = wait_states(
        &gateway,
        &[("pool", a.addr()), ("pool", b.addr())],
        "unhealthy",
    )
    .await;
    for (view, status) in views.iter().zip([503, 500]) {
        assert_eq!(
            view.consecutive_failures, 1,
            "the first failure decides: {}",
            view.json
        );
        assert_eq!(view.last().status, Some(status), "{}", view.json);
    }

    let limit = Duration::from_secs(2);
    let reply = within(
        limit,
        "a request to a pool with no healthy backend",
        get(listen, "/"),
    )
    .await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text());
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("no healthy backend"), "{text}");
    assert!(text.contains("\"pool\""), "names the pool: {text}");
    let reply = within(limit, "an upgrade to a pool with no healthy backend", {
        upgrade_answer(listen, "/ws")
    })
    .await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text());
    assert!(
        String::from_utf8_lossy(&reply.body).contains("no healthy backend"),
        "{}",
        reply.text()
    );

    assert_eq!(a.requests() + b.requests(), 0, "the backends got requests");
    assert!(a.tunnel_records().is_empty() && b.tunnel_records().is_empty());
    gateway
        .logged("the 502 is logged", |stderr| {
            stderr
                .lines()
                .any(|line| line.contains("no healthy backend") && line.contains("pool"))
        })
        .await;
    let metrics = gateway.metrics();
    let answered = metrics.metric("gateway_requests_total", &[("status", "502")]);
    assert_eq!(answered, 2.0, "{}", metrics.text);
    assert_eq!(state_metric(&metrics, "pool", a.addr(), "unhealthy"), 1.0);
    assert_eq!(state_metric(&metrics, "pool", b.addr(), "unhealthy"), 1.0);
}
