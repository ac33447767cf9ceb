//! Every branch of routing, on routers built from configuration text.

use std::path::Path;

use http::StatusCode;

use super::*;
use crate::config;

/// Bind 127.0.0.1:8080: `exact` (www.example.com, priority 30), `wild` (*.example.com,
/// priority 10, so tried before `exact` in bind order), `paths` (api.example.org) and the
/// catch-all `any`. Bind 127.0.0.1:8443: the https listener `tls`. Bind 127.0.0.1:8081:
/// `named-only` (only.example.net, no catch-all).
const CONFIG: &str = r#"
[[listeners]]
name = "exact"
bind = "127.0.0.1:8080"
protocol = "http"
host_names = ["www.example.com", "example.com"]

[[listeners]]
name = "wild"
bind = "127.0.0.1:8080"
protocol = "http"
host_names = ["*.example.com"]

[[listeners]]
name = "paths"
bind = "127.0.0.1:8080"
protocol = "http"
host_names = ["api.example.org"]

[[listeners]]
name = "any"
bind = "127.0.0.1:8080"
protocol = "http"

[[listeners]]
name = "named-only"
bind = "127.0.0.1:8081"
protocol = "http"
host_names = ["only.example.net"]

[[listeners]]
name = "tls"
bind = "127.0.0.1:8443"
protocol = "https"
certificate = "../examples/certs/example.crt"
private_key = "../examples/certs/example.key"

[[backend_pools]]
name = "a"
addresses = ["10.0.0.1:80"]

[[backend_pools]]
name = "b"
addresses = ["10.0.0.2:80"]

[[backend_settings]]
name = "s"
port = 80
protocol = "http"

[[rules]]
name = "exact-rule"
kind = "basic"
listener = "exact"
priority = 30
backend_pool = "a"
backend_settings = "s"

[[rules]]
name = "wild-rule"
kind = "basic"
listener = "wild"
priority = 10
backend_pool = "b"
backend_settings = "s"

[[rules]]
name = "paths-rule"
kind = "path_based"
listener = "paths"
priority = 20
default_backend_pool = "a"
default_backend_settings = "s"

[[rules.path_rules]]
name = "ws"
paths = ["/ws"]
backend_pool = "b"
backend_settings = "s"

[[rules.path_rules]]
name = "api-v1"
paths = ["/api/v1/*"]
backend_pool = "b"
backend_settings = "s"

[[rules.path_rules]]
name = "api"
paths = ["/api/*", "/other/*"]
backend_pool = "a"
backend_settings = "s"

[[rules.path_rules]]
name = "old"
paths = ["/old/*"]
redirect = { target_url = "https://new.example.org/", status = 308 }

[[rules]]
name = "to-tls"
kind = "redirect"
listener = "any"
redirect = { target_listener = "tls", status = 302 }

[[rules]]
name = "only-rule"
kind = "path_based"
listener = "named-only"
default_redirect = { target_url = "https://elsewhere.example/", include_path = false }

[[rules.path_rules]]
name = "kept"
paths = ["/kept/*"]
backend_pool = "b"
backend_settings = "s"

[[rules]]
name = "tls-rule"
kind = "basic"
listener = "tls"
backend_pool = "a"
backend_settings = "s"
"#;

fn routers() -> Vec<Router<String>> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = config::from_toml(CONFIG, "t.toml", base).expect("valid configuration");
    config
        .binds
        .iter()
        .map(|bind| {
            Router::new(
                bind,
                |f| format!("{}/{}", f.pool.name, f.settings.name),
                |name| (name == "tls").then_some(8443),
            )
        })
        .collect()
}

/// Routes a request as the proxy does: its path in normal form (default policy) first.
fn route<'r>(
    router: &'r Router<String>,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> Decision<'r, String> {
    let path = config::path::normalize(path, config::path::PathPolicy::default())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    router.route(RequestView {
        host,
        path: path.as_str(),
        routed_path: path.routed(),
        query,
    })
}

/// `(listener, path rule, target)` of a forward; panics on anything else.
fn forwarded(router: &Router<String>, host: &str, path: &str) -> (String, Option<String>, String) {
    match route(router, Some(host), path, None) {
        Decision::Forward { route, target } => (
            route.listener.to_owned(),
            route.path_rule.map(str::to_owned),
            target.clone(),
        ),
        other => panic!("{host}{path}: expected a forward, got {other:?}"),
    }
}

#[test]
fn exact_names_beat_wildcards_beat_the_catch_all() {
    let routers = routers();
    let main = &routers[0];
    // `wild` comes first in bind order (priority 10), yet the exact name wins.
    assert_eq!(forwarded(main, "www.example.com", "/").0, "exact");
    assert_eq!(forwarded(main, "example.com", "/").0, "exact");
    assert_eq!(forwarded(main, "shop.example.com", "/").2, "b/s");
    // One label only: not the wildcard, so the catch-all (a redirect).
    assert!(matches!(
        route(main, Some("a.b.example.com"), "/", None),
        Decision::Redirect {
            route: Route {
                listener: "any",
                ..
            },
            ..
        }
    ));
}

#[test]
fn without_a_matching_name_or_a_catch_all_there_is_no_site() {
    let routers = routers();
    let named_only = &routers[1];
    assert_eq!(
        route(named_only, Some("other.example.net"), "/", None),
        Decision::NoSite
    );
    assert_eq!(route(named_only, None, "/", None), Decision::NoSite);
    assert_eq!(route(named_only, Some(""), "/", None), Decision::NoSite);
    // A request without a host goes to the catch-all where there is one.
    assert!(matches!(
        route(&routers[0], None, "/", None),
        Decision::NoHostToRedirectTo {
            route: Route {
                listener: "any",
                rule: "to-tls",
                ..
            }
        }
    ));
}

#[test]
fn basic_rules_forward_to_their_pool() {
    let routers = routers();
    assert_eq!(
        forwarded(&routers[0], "www.example.com", "/any/path"),
        ("exact".into(), None, "a/s".into())
    );
    assert_eq!(forwarded(&routers[2], "whatever", "/").2, "a/s");
}

#[test]
fn path_rules_match_in_order_prefix_or_exact_else_the_default() {
    let routers = routers();
    let main = &routers[0];
    let host = "api.example.org";
    let rule = |path: &str| {
        let (_, rule, target) = forwarded(main, host, path);
        (rule, target)
    };
    assert_eq!(rule("/ws"), (Some("ws".into()), "b/s".into()));
    // Exact: "/ws/x" and "/wsx" are not "/ws".
    assert_eq!(rule("/ws/x"), (None, "a/s".into()));
    assert_eq!(rule("/wsx"), (None, "a/s".into()));
    // The first matching rule wins, even though a later one matches too.
    assert_eq!(rule("/api/v1/users"), (Some("api-v1".into()), "b/s".into()));
    assert_eq!(rule("/api/v2"), (Some("api".into()), "a/s".into()));
    assert_eq!(rule("/other/x"), (Some("api".into()), "a/s".into()));
    // A prefix "/api/*" does not match "/api" itself.
    assert_eq!(rule("/api"), (None, "a/s".into()));
    // Path rules ignore ASCII case (Azure's do), and see the path in normal form without
    // segment parameters: every spelling of one path takes the same rule.
    for spelling in [
        "/API/v2",
        "/Api/V2/users",
        "/%61pi/v2",
        "//api/v2",
        "/./api/v2",
        "/x/../api/v2",
        "/api;x/v2",
        "/%2e/api/v2",
    ] {
        assert_eq!(rule(spelling).0, Some("api".into()), "{spelling:?}");
    }
    assert_eq!(rule("/WS;jsessionid=1").0, Some("ws".into()));
}

#[test]
fn the_query_is_not_part_of_the_path_matched() {
    let routers = routers();
    match route(&routers[0], Some("api.example.org"), "/ws", Some("token=1")) {
        Decision::Forward { route, .. } => assert_eq!(route.path_rule, Some("ws")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_path_rule_can_redirect() {
    let routers = routers();
    let decision = route(
        &routers[0],
        Some("api.example.org"),
        "/old/page",
        Some("a=1"),
    );
    assert_eq!(
        decision,
        Decision::Redirect {
            route: Route {
                listener: "paths",
                rule: "paths-rule",
                path_rule: Some("old"),
            },
            status: StatusCode::PERMANENT_REDIRECT,
            location: "https://new.example.org/old/page?a=1".into(),
        }
    );
}

#[test]
fn a_default_redirect_applies_when_no_path_rule_matches() {
    let routers = routers();
    let decision = route(&routers[1], Some("only.example.net"), "/x", Some("q=1"));
    assert_eq!(
        decision,
        Decision::Redirect {
            route: Route {
                listener: "named-only",
                rule: "only-rule",
                path_rule: None,
            },
            status: StatusCode::MOVED_PERMANENTLY,
            location: "https://elsewhere.example/?q=1".into(),
        }
    );
}

#[test]
fn a_redirect_rule_to_a_listener_keeps_host_path_and_query() {
    let routers = routers();
    let decision = route(&routers[0], Some("plain.example.net"), "/a/b", Some("c=d"));
    assert_eq!(
        decision,
        Decision::Redirect {
            route: Route {
                listener: "any",
                rule: "to-tls",
                path_rule: None,
            },
            status: StatusCode::FOUND,
            location: "https://plain.example.net:8443/a/b?c=d".into(),
        }
    );
}
