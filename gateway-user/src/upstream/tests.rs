use std::time::Duration;

use http::header;

use super::*;
use crate::{
    config::{OnBackendDown, PassiveHealth, Protocol, TunnelLimits},
    dataplane::splice::SpliceSettings,
    health::{Health, Lease},
};

fn settings(affinity: Option<&str>, host_header: HostHeader) -> Arc<BackendSettings> {
    Arc::new(BackendSettings {
        name: "s".into(),
        port: 80,
        protocol: Protocol::Http,
        request_timeout: Duration::from_secs(30),
        affinity_cookie: affinity.map(str::to_owned),
        on_backend_down: OnBackendDown::Keep,
        load_balancing: LoadBalancing::RoundRobin,
        passive: PassiveHealth {
            failures: 3,
            ejection: Duration::from_secs(30),
        },
        host_header,
        trusted_ca: None,
        tunnel: TunnelLimits {
            idle_timeout: Duration::from_secs(300),
            max_lifetime: None,
            max_backlog_bytes: 1 << 20,
            promote: crate::config::Promotion::AT_ONCE,
        },
        probe: None,
    })
}

fn upstream(affinity: Option<&str>, host_header: HostHeader) -> Upstream {
    upstream_with(affinity, host_header, LoadBalancing::RoundRobin)
}

fn upstream_with(
    affinity: Option<&str>,
    host_header: HostHeader,
    load_balancing: LoadBalancing,
) -> Upstream {
    let mut settings = settings(affinity, host_header);
    Arc::make_mut(&mut settings).load_balancing = load_balancing;
    let resolved = (1..=3)
        .map(|i| {
            let addr: SocketAddr = format!("10.0.0.{i}:80").parse().expect("addr");
            (addr, format!("app-{i}.internal"))
        })
        .collect();
    Upstream::new(
        "web",
        settings,
        resolved,
        &AffinityKey::from_bytes([1; 32]),
        tunnel::Settings {
            idle_timeout: Duration::from_secs(300),
            max_lifetime: None,
            splice: SpliceSettings {
                max_backlog_bytes: 1 << 20,
                sndbuf_bytes: 0,
                backlog_pool_bytes: 0,
            },
            promote: crate::config::Promotion::AT_ONCE,
        },
        &Health::default().stage(),
    )
}

fn cookie(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_str(value).expect("value"));
    headers
}

#[test]
fn without_affinity_backends_take_turns_and_no_cookie_is_set() {
    let up = upstream(None, HostHeader::Preserve);
    let picks: Vec<SocketAddr> = (0..4)
        .map(|_| {
            let pick = up
                .pick(&HeaderMap::new(), false)
                .expect("a healthy backend");
            assert!(pick.set_cookie.is_none());
            pick.backend.addr
        })
        .collect();
    let addrs: Vec<SocketAddr> = up.backends().iter().map(|b| b.addr).collect();
    assert_eq!(picks, [addrs[0], addrs[1], addrs[2], addrs[0]]);
}

#[test]
fn a_valid_cookie_pins_the_backend() {
    let up = upstream(Some("Aff"), HostHeader::Preserve);
    let first = up
        .pick(&HeaderMap::new(), false)
        .expect("a healthy backend");
    let set = first.set_cookie.expect("a cookie for a new client");
    let id = &first.backend.affinity_id;
    assert_eq!(set, format!("Aff={id}; Path=/; HttpOnly").as_str());
    let pinned = first.backend.addr;
    for _ in 0..5 {
        let again = up
            .pick(&cookie(&format!("other=1; Aff={id}")), false)
            .expect("a healthy backend");
        assert_eq!(again.backend.addr, pinned);
        assert!(
            again.set_cookie.is_none(),
            "a valid cookie is not set again"
        );
    }
}

#[test]
fn an_unknown_cookie_is_replaced() {
    let up = upstream(Some("Aff"), HostHeader::Preserve);
    let pick = up
        .pick(&cookie("Aff=0123456789abcdef0123456789abcdef"), true)
        .expect("a healthy backend");
    let set = pick.set_cookie.expect("a fresh cookie");
    let text = set.to_str().expect("ASCII");
    assert!(text.contains(&pick.backend.affinity_id), "{text}");
    assert!(text.ends_with("; SameSite=None; Secure"), "{text}");
}

#[test]
fn the_host_sent_follows_the_settings() {
    let backend = |up: &Upstream| up.backends()[1].clone();
    let preserve = upstream(None, HostHeader::Preserve);
    assert_eq!(
        preserve.backend_host(&backend(&preserve), Some("www.example.com:8080")),
        Some("www.example.com:8080")
    );
    assert_eq!(preserve.backend_host(&backend(&preserve), None), None);
    let fixed = upstream(None, HostHeader::Override("internal.example".into()));
    assert_eq!(
        fixed.backend_host(&backend(&fixed), Some("www.example.com")),
        Some("internal.example")
    );
    let picked = upstream(None, HostHeader::FromBackendAddress);
    let b = backend(&picked);
    assert_eq!(
        picked.backend_host(&b, Some("www.example.com")),
        Some("app-2.internal")
    );
    assert_eq!(ip_host("::1".parse().expect("ip")), "[::1]");
}

const PASSIVE: PassiveHealth = PassiveHealth {
    failures: 1,
    ejection: Duration::from_secs(30),
};

/// Takes backend `i` out, as a connect failure would (passive check, one failure).
fn eject(up: &Upstream, i: usize) {
    up.backends()[i].health.passive_failure(&PASSIVE, &"test");
    assert!(!up.backends()[i].health.takes_traffic());
}

#[test]
fn backends_that_are_down_are_skipped_and_none_left_is_an_error() {
    let up = upstream(None, HostHeader::Preserve);
    eject(&up, 1);
    let addrs: Vec<SocketAddr> = up.backends().iter().map(|b| b.addr).collect();
    let picks: Vec<SocketAddr> = (0..4)
        .map(|_| {
            up.pick(&HeaderMap::new(), false)
                .expect("healthy")
                .backend
                .addr
        })
        .collect();
    assert!(!picks.contains(&addrs[1]), "{picks:?}");
    assert!(
        picks.contains(&addrs[0]) && picks.contains(&addrs[2]),
        "{picks:?}"
    );
    eject(&up, 0);
    eject(&up, 2);
    let err = up.pick(&HeaderMap::new(), false).expect_err("none healthy");
    assert_eq!((err.pool.as_str(), err.count), ("web", 3));
    assert!(err.to_string().contains("no healthy backend"), "{err}");
}

#[test]
fn a_cookie_for_a_backend_that_is_down_is_replaced() {
    let up = upstream(Some("Aff"), HostHeader::Preserve);
    let first = up.pick(&HeaderMap::new(), false).expect("healthy");
    let (id, pinned) = (first.backend.affinity_id.clone(), first.backend.addr);
    drop(first);
    let i = up
        .backends()
        .iter()
        .position(|b| b.addr == pinned)
        .expect("in the pool");
    eject(&up, i);
    let again = up
        .pick(&cookie(&format!("Aff={id}")), false)
        .expect("healthy");
    assert_ne!(again.backend.addr, pinned);
    let set = again.set_cookie.expect("a cookie for the new backend");
    assert!(set
        .to_str()
        .expect("ASCII")
        .contains(&again.backend.affinity_id));
}

#[test]
fn least_connections_counts_leases_and_takes_turns_on_ties() {
    let up = upstream_with(None, HostHeader::Preserve, LoadBalancing::LeastConnections);
    let addrs: Vec<SocketAddr> = up.backends().iter().map(|b| b.addr).collect();
    // Three long-lived picks (tunnels) spread over the three backends.
    let held: Vec<Pick<'_>> = (0..3)
        .map(|_| up.pick(&HeaderMap::new(), false).expect("healthy"))
        .collect();
    let mut spread: Vec<SocketAddr> = held.iter().map(|p| p.backend.addr).collect();
    spread.sort();
    assert_eq!(spread, addrs);
    // Backend 0 gets two more; the next picks avoid it until the others catch up.
    let extra: Vec<Lease> = (0..2).map(|_| up.backends()[0].health.lease()).collect();
    assert_eq!(up.backends()[0].health.active(), 3);
    for _ in 0..6 {
        let pick = up.pick(&HeaderMap::new(), false).expect("healthy");
        assert_ne!(pick.backend.addr, addrs[0]);
    }
    drop(extra);
    drop(held);
    assert!(up.backends().iter().all(|b| b.health.active() == 0));
}
