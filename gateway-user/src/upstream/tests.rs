use std::time::Duration;

use http::header;

use super::*;
use crate::config::{Protocol, TunnelLimits};

fn settings(affinity: Option<&str>, host_header: HostHeader) -> Arc<BackendSettings> {
    Arc::new(BackendSettings {
        name: "s".into(),
        port: 80,
        protocol: Protocol::Http,
        request_timeout: Duration::from_secs(30),
        affinity_cookie: affinity.map(str::to_owned),
        draining_timeout: None,
        host_header,
        trusted_ca: None,
        tunnel: TunnelLimits {
            idle_timeout: Duration::from_secs(300),
            max_lifetime: None,
            max_backlog_bytes: 1 << 20,
        },
        probe: None,
    })
}

fn upstream(affinity: Option<&str>, host_header: HostHeader) -> Upstream {
    let resolved = (1..=3)
        .map(|i| {
            let addr: SocketAddr = format!("10.0.0.{i}:80").parse().expect("addr");
            (addr, format!("app-{i}.internal"))
        })
        .collect();
    Upstream::new(
        "web",
        settings(affinity, host_header),
        resolved,
        &AffinityKey::from_bytes([1; 32]),
        tunnel::Settings {
            idle_timeout: Duration::from_secs(300),
            max_lifetime: None,
            max_backlog_bytes: 1 << 20,
            sndbuf_bytes: 0,
        },
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
            let pick = up.pick(&HeaderMap::new(), false);
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
    let first = up.pick(&HeaderMap::new(), false);
    let set = first.set_cookie.expect("a cookie for a new client");
    let id = &first.backend.affinity_id;
    assert_eq!(set, format!("Aff={id}; Path=/; HttpOnly").as_str());
    let pinned = first.backend.addr;
    for _ in 0..5 {
        let again = up.pick(&cookie(&format!("other=1; Aff={id}")), false);
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
    let pick = up.pick(&cookie("Aff=0123456789abcdef0123456789abcdef"), true);
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
