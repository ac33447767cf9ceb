//! The runtime configuration: defaults, order, the shortcut, flags, many problems at once,
//! and the example file.

use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    defaults, load as load_sources, shortcut, BackendHost, DataplaneMode, HostHeader, HostMatch,
    LoadBalancing, OnBackendDown, Overrides, PassiveHealth, ProbeHost, RedirectTarget, Route,
    RuleAction, Sources,
};

#[test]
fn defaults_are_applied() {
    let text = base_with("port = 3000", "port = 3000\nprobe = \"health\"")
        + "\n[[probes]]\nname = \"health\"\nprotocol = \"http\"\nhost = \"app\"\n";
    let config = load(&text).expect("valid");
    let global = &config.global;
    assert_eq!(global.dataplane, DataplaneMode::Auto);
    assert_eq!(global.admin, None);
    assert_eq!(global.log_level, defaults::LOG_LEVEL);
    assert_eq!(
        global.handshake_timeout,
        Duration::from_secs(defaults::HANDSHAKE_TIMEOUT_SECS)
    );
    assert_eq!(
        global.shutdown_drain,
        Duration::from_secs(defaults::SHUTDOWN_DRAIN_SECS)
    );
    assert_eq!(global.tunnel_sndbuf_bytes, 8 * 1024 * 1024);
    assert_eq!(global.response_send_timeout, Duration::from_secs(60));
    assert_eq!(global.request_body_timeout, Duration::from_secs(60));
    assert_eq!(global.request_buffer_bytes, 64 * 1024);

    let settings = &config.backend_settings[0];
    assert_eq!(settings.request_timeout, Duration::from_secs(30));
    assert_eq!(settings.affinity_cookie, None);
    assert_eq!(settings.on_backend_down, OnBackendDown::Keep);
    assert_eq!(settings.load_balancing, LoadBalancing::RoundRobin);
    assert_eq!(
        settings.passive,
        PassiveHealth {
            failures: 3,
            ejection: Duration::from_secs(30)
        }
    );
    assert!(global.default_probes);
    assert_eq!(settings.host_header, HostHeader::Preserve);
    assert_eq!(settings.tunnel.idle_timeout, Duration::from_secs(300));
    assert_eq!(settings.tunnel.max_lifetime, None);
    assert_eq!(settings.tunnel.max_backlog_bytes, 4 << 20);

    let probe = settings.probe.as_ref().expect("the probe is resolved");
    assert!(Arc::ptr_eq(probe, &config.probes[0]));
    assert_eq!(probe.path, "/");
    assert_eq!(probe.interval, Duration::from_secs(30));
    assert_eq!(probe.timeout, Duration::from_secs(30));
    assert_eq!((probe.unhealthy_threshold, probe.healthy_threshold), (3, 1));
    assert_eq!(probe.match_status_codes, [(200, 399)]);
    assert_eq!(probe.host, ProbeHost::Fixed("app".into()));

    let bind = &config.binds[0];
    assert_eq!(bind.addr, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(bind.sites[0].hosts, HostMatch::Any);
    match &bind.sites[0].rule.action {
        RuleAction::Basic(forward) => {
            assert!(Arc::ptr_eq(&forward.pool, &config.pools[0]));
            assert!(Arc::ptr_eq(&forward.settings, &config.backend_settings[0]));
        }
        other => panic!("not a basic rule: {other:?}"),
    }
}

#[test]
fn affinity_draining_and_redirect_defaults() {
    let text = base_with(
        "port = 3000",
        "port = 3000\ncookie_affinity = true\nconnection_draining = true",
    );
    let config = load(&text).expect("valid");
    let settings = &config.backend_settings[0];
    assert_eq!(
        settings.affinity_cookie.as_deref(),
        Some("ApplicationGatewayAffinity")
    );
    assert_eq!(
        settings.on_backend_down,
        OnBackendDown::Drain(Duration::from_secs(60))
    );
    let text = base_with(
        "port = 3000",
        "port = 3000\non_backend_down = \"drain\"\ndraining_timeout_secs = 5\n\
         load_balancing = \"least_connections\"\npassive_failures = 0",
    );
    let config = load(&text).expect("valid");
    let settings = &config.backend_settings[0];
    assert_eq!(
        settings.on_backend_down,
        OnBackendDown::Drain(Duration::from_secs(5))
    );
    assert_eq!(settings.load_balancing, LoadBalancing::LeastConnections);
    assert_eq!(settings.passive.failures, 0);
    let text = base_with("port = 3000", "port = 3000\non_backend_down = \"close\"");
    let config = load(&text).expect("valid");
    assert_eq!(
        config.backend_settings[0].on_backend_down,
        OnBackendDown::Close
    );

    let config =
        load(&std::fs::read_to_string(examples_dir().join("gateway.toml")).expect("example"))
            .expect("the example is valid");
    let http = config
        .binds
        .iter()
        .find(|b| b.addr.port() == 80)
        .expect(":80");
    match &http.sites[0].rule.action {
        RuleAction::Redirect(redirect) => {
            assert_eq!(redirect.status, 301);
            assert!(redirect.include_path && redirect.include_query);
            assert!(matches!(
                &redirect.target,
                RedirectTarget::Listener { port: 443, .. }
            ));
        }
        other => panic!("not a redirect: {other:?}"),
    }
}

#[test]
fn the_example_is_valid_and_sites_are_ordered() {
    let config = load_sources(&Sources::file(examples_dir().join("gateway.toml")))
        .unwrap_or_else(|errors| panic!("examples/gateway.toml:\n{errors}"));
    assert_eq!(
        config.summary(),
        "3 listeners on 2 binds, 3 pools, 3 backend settings, 3 rules, 1 probe"
    );
    let https = config
        .binds
        .iter()
        .find(|b| b.addr.port() == 443)
        .expect(":443");
    let order: Vec<&str> = https.sites.iter().map(|s| s.listener.as_str()).collect();
    assert_eq!(order, ["www", "shop"], "by rule priority");
    let tls = https.sites[0]
        .tls
        .as_ref()
        .expect("https site has TLS files");
    assert!(tls.certificate.ends_with("certs/example.crt"));
    match &https.sites[0].rule.action {
        RuleAction::PathBased {
            path_rules,
            default,
        } => {
            let ws = path_rules
                .iter()
                .find(|p| p.name == "websocket")
                .expect("ws rule");
            assert!(ws.paths.iter().any(|p| p.matches("/ws")));
            assert!(matches!(default, Route::Forward(f) if f.pool.name == "web"));
            let Route::Forward(chat) = &ws.route else {
                panic!("ws forwards")
            };
            assert_eq!(chat.settings.tunnel.idle_timeout, Duration::from_secs(600));
        }
        other => panic!("not path based: {other:?}"),
    }
    let api = config
        .pools
        .iter()
        .find(|p| p.name == "api")
        .expect("api pool");
    assert_eq!(
        api.addresses[0].host,
        BackendHost::Name("api-1.internal".into())
    );
    assert_eq!(api.addresses[0].port, None);
}

#[test]
fn the_shortcut_is_the_same_config_as_its_file() {
    let sources = Sources {
        listen: vec![
            "127.0.0.1:8080".parse().expect("addr"),
            "127.0.0.1:0".parse().expect("addr"),
        ],
        backends: vec![
            "127.0.0.1:3000".parse().expect("addr"),
            "10.0.0.2:3001".parse().expect("addr"),
        ],
        ..Sources::default()
    };
    let from_flags = load_sources(&sources).expect("valid shortcut");
    let pool = shortcut::POOL_NAME;
    let settings = shortcut::SETTINGS_NAME;
    let mut text = format!(
        "[[backend_pools]]\nname = \"{pool}\"\naddresses = [\"127.0.0.1:3000\", \"10.0.0.2:3001\"]\n\n\
         [[backend_settings]]\nname = \"{settings}\"\nport = 3000\nprotocol = \"http\"\n"
    );
    for (i, bind) in ["127.0.0.1:8080", "127.0.0.1:0"].iter().enumerate() {
        let name = shortcut::listener_name(i);
        text += &format!(
            "\n[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\nprotocol = \"http\"\n\n\
             [[rules]]\nname = \"{name}\"\nkind = \"basic\"\nlistener = \"{name}\"\n\
             backend_pool = \"{pool}\"\nbackend_settings = \"{settings}\"\n"
        );
    }
    let from_file = load(&text).expect("valid file");
    assert_eq!(from_flags, from_file);
    assert_eq!(from_flags.binds.len(), 2);
}

#[test]
fn flags_override_global_and_default_the_settings() {
    let file = examples_dir().join("../gateway-config/src/tests/flags.toml");
    let sources = Sources {
        file: Some(file),
        overrides: Overrides {
            dataplane: Some(DataplaneMode::Userspace),
            log_level: Some("debug".into()),
            tunnel_idle_timeout_secs: Some(5),
            max_tunnel_backlog_bytes: Some(1 << 20),
            request_body_timeout_secs: Some(9),
            request_buffer_bytes: Some(0),
            ..Overrides::default()
        },
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        backends: vec!["127.0.0.1:1".parse().expect("addr")],
    };
    let config = load_sources(&sources).unwrap_or_else(|e| panic!("{e}"));
    // [global]: the flag wins.
    assert_eq!(config.global.dataplane, DataplaneMode::Userspace);
    assert_eq!(config.global.log_level, "debug");
    assert_eq!(config.global.request_body_timeout, Duration::from_secs(9));
    assert_eq!(config.global.request_buffer_bytes, 0);
    // The file's value stays where no flag is given.
    assert_eq!(config.global.shutdown_drain, Duration::from_secs(7));
    assert_eq!(config.global.response_send_timeout, Duration::from_secs(12));
    let settings = |name: &str| {
        config
            .backend_settings
            .iter()
            .find(|s| s.name == name)
            .expect("settings")
            .tunnel
    };
    // Settings: a key in the file wins; without one, the flag is the default.
    assert_eq!(settings("set").idle_timeout, Duration::from_secs(60));
    assert_eq!(settings("unset").idle_timeout, Duration::from_secs(5));
    assert_eq!(settings("unset").max_backlog_bytes, 1 << 20);
    assert_eq!(
        settings(shortcut::SETTINGS_NAME).idle_timeout,
        Duration::from_secs(5)
    );
    // --listen/--backend add a listener next to the file's.
    assert_eq!(config.listener_count(), 2);
}

#[test]
fn many_problems_are_all_reported() {
    let text = r#"
[global]
dataplane = "kernel"
admin = "nowhere"

[[listeners]]
name = "web"
bind = "0.0.0.0:80"
protocol = "https"
host_names = ["*"]

[[listeners]]
name = "web"
bind = "0.0.0.0:8o"
protocol = "http"
certificate = "certs/example.crt"

[[backend_pools]]
name = "empty"
addresses = []

[[backend_settings]]
name = "s"
port = 8080
protocol = "http"
request_timeout_secs = 0
probe = "missing"

[[rules]]
name = "r"
kind = "redirect"
listener = "web"
redirect = { target_listener = "web", status = 200 }

[[probes]]
name = "p"
protocol = "http"
host = "a"
interval_secs = 1
timeout_secs = 2
unhealthy_threshold = 0
match_status_codes = ["600"]
colour = "blue"
"#;
    let errors = errors(text);
    let listed = ConfigErrors(errors.clone()).to_string();
    let expected = [
        "global.dataplane",
        "global.admin",
        "listeners[0].certificate",
        "listeners[0].private_key",
        "listeners[0].host_names[0]",
        "listeners[1].name",
        "listeners[1].bind",
        "listeners[1].certificate",
        "backend_pools[0].addresses",
        "backend_settings[0].request_timeout_secs",
        "backend_settings[0].probe",
        "rules[0].redirect.status",
        "rules[0].redirect.target_listener",
        "probes[0].timeout_secs",
        "probes[0].unhealthy_threshold",
        "probes[0].match_status_codes[0]",
        "probes[0].colour",
    ];
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, expected, "{listed}");
    assert!(
        errors.iter().all(|e| e.line.is_some() && !e.fix.is_empty()),
        "{listed}"
    );
    // Displayed one per line, in the file's order.
    assert_eq!(listed.lines().count(), expected.len());
    let lines: Vec<usize> = errors.iter().filter_map(|e| e.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn limits_have_their_defaults_and_flags_override_the_file() {
    let config = load(BASE).expect("valid");
    let global = &config.global;
    assert_eq!(global.max_connections, None, "derived from RLIMIT_NOFILE");
    assert_eq!(
        global.max_connections_per_ip,
        defaults::MAX_CONNECTIONS_PER_IP
    );
    assert_eq!(
        global.upgrades_per_ip_per_sec,
        defaults::UPGRADES_PER_IP_PER_SEC
    );
    assert_eq!(global.upgrade_burst_per_ip, defaults::UPGRADE_BURST_PER_IP);
    assert_eq!(global.listen_backlog, None, "net.core.somaxconn");

    let dir = std::env::temp_dir().join(format!("gateway-config-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let file = dir.join("limits.toml");
    let text = format!(
        "[global]\nmax_connections = 500\nmax_connections_per_ip = 7\nlisten_backlog = 100\n{BASE}"
    );
    std::fs::write(&file, text).expect("write the file");
    let sources = Sources {
        file: Some(file),
        overrides: Overrides {
            max_connections_per_ip: Some(0),
            upgrades_per_ip_per_sec: Some(3),
            upgrade_burst_per_ip: Some(9),
            listen_backlog: Some(200),
            ..Overrides::default()
        },
        ..Sources::default()
    };
    let config = load_sources(&sources).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let global = &config.global;
    assert_eq!(global.max_connections, Some(500), "the file's, no flag");
    assert_eq!(global.max_connections_per_ip, 0, "the flag's");
    assert_eq!(
        (global.upgrades_per_ip_per_sec, global.upgrade_burst_per_ip),
        (3, 9)
    );
    assert_eq!(global.listen_backlog, Some(200));
}
