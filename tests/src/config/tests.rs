//! The builder renders what the gateway reads.

use super::*;

#[test]
fn every_object_renders_to_the_file_format() {
    let config = Config::new()
        .global(Global {
            log_level: Some("debug".to_owned()),
            ..Global::default()
        })
        .listener(Listener::http("web", "127.0.0.1:0").host_names(["a.test", "*.b.test"]))
        .listener(Listener::https("tls", "127.0.0.1:8443", "c.pem", "k.pem"))
        .pool("pool", ["127.0.0.1:9000", "10.0.0.1"])
        .settings(Settings::http("plain", 80).drain(2))
        .settings(Settings::https("secure", 443, "ca.pem").host_header("api.test"))
        .rule(
            Rule::path_based("paths", "web", "pool", "plain")
                .path(PathRule::to("ws", ["/ws"], "pool", "plain"))
                .path(PathRule::redirect(
                    "old",
                    ["/old/*"],
                    Redirect::to_url("https://x.test/").status(308),
                )),
        )
        .rule(Rule::redirect("up", "tls", Redirect::to_listener("web").status(302)).priority(7))
        .probe(
            Probe::new("p", Protocol::Http, "h.test")
                .path("/health")
                .every(1, 1)
                .thresholds(2, 2)
                .match_status_codes(["200-204"]),
        );
    let text = config.to_toml();
    let value: toml::Table = text.parse().expect("the text is TOML");
    let expected: toml::Table = r#"
        [global]
        log_level = "debug"

        [[listeners]]
        name = "web"
        bind = "127.0.0.1:0"
        protocol = "http"
        host_names = ["a.test", "*.b.test"]

        [[listeners]]
        name = "tls"
        bind = "127.0.0.1:8443"
        protocol = "https"
        certificate = "c.pem"
        private_key = "k.pem"

        [[backend_pools]]
        name = "pool"
        addresses = ["127.0.0.1:9000", "10.0.0.1"]

        [[backend_settings]]
        name = "plain"
        port = 80
        protocol = "http"
        on_backend_down = "drain"
        draining_timeout_secs = 2

        [[backend_settings]]
        name = "secure"
        port = 443
        protocol = "https"
        host_header = "api.test"
        trusted_ca = "ca.pem"

        [[rules]]
        name = "paths"
        kind = "path_based"
        listener = "web"
        default_backend_pool = "pool"
        default_backend_settings = "plain"

        [[rules.path_rules]]
        name = "ws"
        paths = ["/ws"]
        backend_pool = "pool"
        backend_settings = "plain"

        [[rules.path_rules]]
        name = "old"
        paths = ["/old/*"]
        redirect = { target_url = "https://x.test/", status = 308 }

        [[rules]]
        name = "up"
        kind = "redirect"
        listener = "tls"
        priority = 7
        redirect = { target_listener = "web", status = 302 }

        [[probes]]
        name = "p"
        protocol = "http"
        host = "h.test"
        path = "/health"
        interval_secs = 1
        timeout_secs = 1
        unhealthy_threshold = 2
        healthy_threshold = 2
        match_status_codes = ["200-204"]
    "#
    .parse()
    .expect("the expected text is TOML");
    assert_eq!(value, expected, "rendered:\n{text}");
}

#[test]
fn pieces_add_up_in_order() {
    let a = Config::new()
        .listener(Listener::http("a", "127.0.0.1:0"))
        .pool("p", ["127.0.0.1:1"]);
    let b = Config::new()
        .listener(Listener::http("b", "127.0.0.1:0"))
        .settings(Settings::http("s", 80));
    let both = a + b;
    let names: Vec<&str> = both.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(both.backend_pools.len(), 1);
    assert_eq!(both.backend_settings.len(), 1);
    assert!(!both.to_toml().contains("[global]"));
}
