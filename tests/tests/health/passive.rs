//! Passive checks: connect failures seen by real requests eject a backend for a while.

use std::time::Duration;

use gateway_tests::{
    admin::backend,
    health::{
        get, get_ok, listener, names, rules, settings, spread, start, state_metric, HealthBackend,
        ProbeAnswer,
    },
    Dataplane,
};

/// Without a probe, a backend whose listener is gone is ejected after `passive_failures`
/// connect failures in a row: it gets no request while ejected, `/backends` and
/// `/metrics` say so, and once it listens again and the 1 s ejection is over it gets
/// requests again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_eject_a_backend_until_the_ejection_ends() {
    let test = "refused_connections_eject_a_backend_until_the_ejection_ends";
    let a = HealthBackend::start("a", ProbeAnswer::Pass).await;
    let mut b = HealthBackend::start("b", ProbeAnswer::Pass).await;
    let config = listener()
        .pool("pool", [a.addr(), b.addr()])
        .settings(settings("s").passive(2, 1))
        .rule(rules(("pool", "s"), &[]));
    let (gateway, _config) = start(test, &config, Dataplane::Userspace);
    let listen = gateway.listen_addr();

    let view = backend(&gateway, "pool", b.addr());
    assert_eq!(view.probe, None, "not probed: {}", view.json);
    assert_eq!(view.state, "unknown", "{}", view.json);
    assert_eq!(names(&spread(listen, "/", 4).await), ["a", "b"]);

    b.stop().await;
    let mut refused = 0;
    for _ in 0..8 {
        let reply = get(listen, "/").await;
        match reply.status() {
            Some(200) => assert_eq!(reply.header("x-backend"), Some("a"), "{}", reply.text()),
            Some(502) => {
                let text = String::from_utf8_lossy(&reply.body);
                assert!(text.contains("connect refused"), "{text}");
                refused += 1;
                if refused == 2 {
                    break;
                }
            }
            _ => panic!("unexpected answer:\n{}", reply.text()),
        }
    }
    assert_eq!(refused, 2, "two requests went to b and failed");
    let ejected = backend(&gateway, "pool", b.addr());
    assert!(ejected.ejected, "{}", ejected.json);
    assert!(!ejected.takes_traffic, "{}", ejected.json);
    assert_eq!(ejected.ejections_total, 1, "{}", ejected.json);
    assert!(ejected.ejected_for_secs <= 1.0, "{}", ejected.json);
    assert_eq!(
        ejected.state, "unknown",
        "no probe changed it: {}",
        ejected.json
    );
    // While ejected, every request goes to a (each a new connection: b would refuse it).
    assert_eq!(names(&spread(listen, "/", 4).await), ["a"]);
    let metrics = gateway.metrics();
    assert_eq!(
        state_metric(&metrics, "pool", b.addr(), "ejected"),
        1.0,
        "{}",
        metrics.text
    );
    let addr = b.addr().to_string();
    let ejections = metrics.metric("gateway_backend_ejections_total", &[("backend", &addr)]);
    assert_eq!(ejections, 1.0, "{}", metrics.text);
    let still = backend(&gateway, "pool", b.addr());
    assert!(
        still.ejected,
        "the requests above ran while b was ejected: {}",
        still.json
    );
    gateway
        .logged("the ejection is logged", |stderr| {
            stderr.contains("backend ejected") && stderr.contains(&addr)
        })
        .await;

    b.restart().await;
    let before = b.requests();
    let mut answered_by_b = false;
    for _ in 0..200 {
        if get_ok(listen, "/").await == "b" {
            answered_by_b = true;
            break;
        }
        // Pacing: the ejection runs out on the gateway's clock, not on a signal we can see.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered_by_b, "b never got a request again");
    assert_eq!(b.requests(), before + 1);
    let back = backend(&gateway, "pool", b.addr());
    assert!(!back.ejected && back.takes_traffic, "{}", back.json);
    assert_eq!(back.passive_failures, 0, "{}", back.json);
    assert_eq!(names(&spread(listen, "/", 4).await), ["a", "b"]);
}
