//! Problems with pools, backend settings, probes, [global] and flags.

use super::*;
use crate::{load as load_sources, Overrides, Sources};

fn with_probe(keys: &str) -> String {
    let text = base_with(
        "protocol = \"http\"\n\n[[rules]]",
        "protocol = \"http\"\nprobe = \"health\"\n\n[[rules]]",
    );
    format!("{text}\n[[probes]]\nname = \"health\"\nprotocol = \"http\"\n{keys}\n")
}

#[test]
fn empty_pool() {
    let text = base_with("addresses = [\"127.0.0.1:3000\"]", "addresses = []");
    only_problem(&text, "backend_pools[0].addresses", "at least one backend");
}

#[test]
fn bad_backend_address() {
    let text = base_with(
        "addresses = [\"127.0.0.1:3000\"]",
        "addresses = [\"127.0.0.1:3000\", \"http://app\"]",
    );
    only_problem(
        &text,
        "backend_pools[0].addresses[1]",
        "IP:PORT, IP, host:port or host",
    );
}

#[test]
fn backend_listed_twice() {
    let text = base_with(
        "addresses = [\"127.0.0.1:3000\"]",
        "addresses = [\"127.0.0.1:3000\", \"127.0.0.1:3000\"]",
    );
    only_problem(&text, "backend_pools[0].addresses[1]", "once");
}

#[test]
fn zero_timeout() {
    let text = base_with("port = 3000", "port = 3000\ntunnel_idle_timeout_secs = 0");
    only_problem(
        &text,
        "backend_settings[0].tunnel_idle_timeout_secs",
        "at least 1",
    );
}

#[test]
fn zero_port() {
    let text = base_with("port = 3000", "port = 0");
    only_problem(&text, "backend_settings[0].port", "1-65535");
}

#[test]
fn host_header_and_pick_host_name_both_set() {
    let text = base_with(
        "port = 3000",
        "port = 3000\nhost_header = \"app.example.com\"\npick_host_name_from_backend_address = true",
    );
    only_problem(&text, "backend_settings[0].host_header", "keep one");
}

#[test]
fn trusted_ca_on_http_settings() {
    let text = base_with(
        "port = 3000",
        "port = 3000\ntrusted_ca = \"certs/example.crt\"",
    );
    only_problem(
        &text,
        "backend_settings[0].trusted_ca",
        "protocol = \"https\"",
    );
}

#[test]
fn trusted_ca_not_a_certificate() {
    let text = base_with(
        "port = 3000\nprotocol = \"http\"",
        "port = 3000\nprotocol = \"https\"\ntrusted_ca = \"certs/example.key\"",
    );
    only_problem(&text, "backend_settings[0].trusted_ca", "BEGIN CERTIFICATE");
}

#[test]
fn affinity_cookie_name_without_affinity() {
    let text = base_with("port = 3000", "port = 3000\naffinity_cookie_name = \"pin\"");
    only_problem(
        &text,
        "backend_settings[0].affinity_cookie_name",
        "cookie_affinity = true",
    );
}

#[test]
fn draining_timeout_out_of_range() {
    let text = base_with(
        "port = 3000",
        "port = 3000\nconnection_draining = true\ndraining_timeout_secs = 7200",
    );
    only_problem(
        &text,
        "backend_settings[0].draining_timeout_secs",
        "1 to 3600",
    );
}

#[test]
fn draining_conflicts_and_leftovers() {
    let text = base_with(
        "port = 3000",
        "port = 3000\nconnection_draining = true\non_backend_down = \"close\"",
    );
    only_problem(
        &text,
        "backend_settings[0].connection_draining",
        "remove connection_draining",
    );
    let text = base_with(
        "port = 3000",
        "port = 3000\non_backend_down = \"keep\"\ndraining_timeout_secs = 10",
    );
    only_problem(
        &text,
        "backend_settings[0].draining_timeout_secs",
        "remove draining_timeout_secs",
    );
    let text = base_with(
        "port = 3000",
        "port = 3000\non_backend_down = \"sometimes\"",
    );
    let error = only_problem(&text, "backend_settings[0].on_backend_down", "expected");
    assert!(error.problem.contains("keep"), "{error}");
}

#[test]
fn passive_checks_off_with_an_ejection_time() {
    let text = base_with(
        "port = 3000",
        "port = 3000\npassive_failures = 0\npassive_ejection_secs = 10",
    );
    only_problem(
        &text,
        "backend_settings[0].passive_ejection_secs",
        "passive_failures to 1",
    );
}

#[test]
fn unknown_probe() {
    let text = base_with("port = 3000", "port = 3000\nprobe = \"health\"");
    let error = only_problem(
        &text,
        "backend_settings[0].probe",
        "[[probes]] entry named \"health\"",
    );
    assert!(
        error.problem.contains("no probes are defined"),
        "{}",
        error.problem
    );
}

#[test]
fn probe_threshold_zero() {
    let text = with_probe("host = \"a\"\nhealthy_threshold = 0");
    only_problem(&text, "probes[0].healthy_threshold", "at least 1");
}

#[test]
fn probe_timeout_longer_than_interval() {
    let text = with_probe("host = \"a\"\ninterval_secs = 5");
    only_problem(&text, "probes[0].timeout_secs", "at most interval_secs");
}

#[test]
fn probe_status_range() {
    let text = with_probe("host = \"a\"\nmatch_status_codes = [\"200\", \"2xx\"]");
    only_problem(&text, "probes[0].match_status_codes[1]", "200-399");
}

#[test]
fn probe_host_and_pick_host_name() {
    let text = with_probe("host = \"a\"\npick_host_name_from_backend_settings = true");
    only_problem(&text, "probes[0].host", "keep one");
    let text = with_probe("");
    only_problem(
        &text,
        "probes[0].host",
        "pick_host_name_from_backend_settings = true",
    );
}

#[test]
fn probe_path() {
    let text = with_probe("host = \"a\"\npath = \"health\"");
    only_problem(&text, "probes[0].path", "starting with '/'");
}

#[test]
fn global_admin_and_log_level() {
    let text =
        format!("[global]\nadmin = \"localhost:9090\"\nlog_level = \"gateway=loud\"\n{BASE}");
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["global.admin", "global.log_level"]);
    assert!(errors[1].fix.contains("tracing filter"));
}

#[test]
fn global_slow_client_limits() {
    let text = format!(
        "[global]\nresponse_send_timeout_secs = 0\nrequest_body_timeout_secs = 0\n\
         request_buffer_bytes = 67108865\n{BASE}"
    );
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "global.response_send_timeout_secs",
            "global.request_body_timeout_secs",
            "global.request_buffer_bytes"
        ]
    );
    assert!(errors.iter().all(|e| e.line.is_some()));
    assert!(errors[0].fix.contains("at least 1"));
    assert!(errors[2].problem.contains("in memory"));
    assert!(errors[2].fix.contains("0 to"));
    // 0 turns request buffering off; the largest buffer is accepted.
    for bytes in [0, 64 << 20] {
        let text = format!("[global]\nrequest_buffer_bytes = {bytes}\n{BASE}");
        let config = load(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.global.request_buffer_bytes, bytes);
    }
}

#[test]
fn bad_flags_are_reported_under_their_name() {
    let sources = Sources {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        backends: vec!["127.0.0.1:1".parse().expect("addr")],
        overrides: Overrides {
            log_level: Some("x=nope".into()),
            tunnel_idle_timeout_secs: Some(0),
            response_send_timeout_secs: Some(0),
            request_body_timeout_secs: Some(0),
            request_buffer_bytes: Some(1 << 30),
            ..Overrides::default()
        },
        ..Sources::default()
    };
    let errors = load_sources(&sources).expect_err("bad flags").0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "--log-level",
            "--tunnel-idle-timeout-secs",
            "--response-send-timeout-secs",
            "--request-body-timeout-secs",
            "--request-buffer-bytes"
        ]
    );
    assert!(errors.iter().all(|e| e.file == crate::COMMAND_LINE));
}

#[test]
fn unreadable_file() {
    let errors = load_sources(&Sources::file("/nonexistent/gateway.toml")).expect_err("no file");
    assert_eq!(errors.len(), 1);
    assert!(errors.0[0].fix.contains("--config"));
}

#[test]
fn global_limits_that_have_no_off_value() {
    let text = format!(
        "[global]\nmax_connections = 0\nupgrade_burst_per_ip = 0\nlisten_backlog = 0\n{BASE}"
    );
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "global.max_connections",
            "global.upgrade_burst_per_ip",
            "global.listen_backlog"
        ]
    );
    assert!(errors.iter().all(|e| e.line.is_some()));
    assert!(errors[0].fix.contains("RLIMIT_NOFILE"), "{}", errors[0].fix);
    assert!(errors[1].fix.contains("upgrades_per_ip_per_sec = 0"));
    assert!(errors[2].fix.contains("somaxconn"));
    let text = format!("[global]\nlisten_backlog = 4294967295\n{BASE}");
    only_problem(&text, "global.listen_backlog", "at most 2147483647");
    // 0 turns the per-client limits off: not a problem.
    let text = format!("[global]\nmax_connections_per_ip = 0\nupgrades_per_ip_per_sec = 0\n{BASE}");
    load(&text).unwrap_or_else(|errors| panic!("{errors}"));
}

#[test]
fn bad_limit_flags_are_reported_under_their_name() {
    let sources = Sources {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        backends: vec!["127.0.0.1:1".parse().expect("addr")],
        overrides: Overrides {
            max_connections: Some(0),
            upgrade_burst_per_ip: Some(0),
            listen_backlog: Some(0),
            ..Overrides::default()
        },
        ..Sources::default()
    };
    let errors = load_sources(&sources).expect_err("bad flags").0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "--max-connections",
            "--upgrade-burst-per-ip",
            "--listen-backlog"
        ]
    );
}

#[test]
fn global_admin_host_names_and_token_file() {
    let text = format!(
        "[global]\nadmin = \"9090\"\nadmin_host_names = [\"ok.example\", \"*.example\"]\n\
         admin_token_file = \"no-such-token\"\n{BASE}"
    );
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["global.admin_host_names[1]", "global.admin_token_file"]
    );
    assert_eq!(errors[0].line, Some(3), "{}", errors[0]);
    assert!(
        errors[1]
            .problem
            .contains("cannot read the admin token file"),
        "{}",
        errors[1]
    );
    assert!(errors[1].fix.contains("chmod 600"), "{}", errors[1]);

    let sources = Sources {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        backends: vec!["127.0.0.1:1".parse().expect("addr")],
        overrides: Overrides {
            admin_host_names: vec!["a b".into()],
            admin_token_file: Some("/nonexistent/token".into()),
            ..Overrides::default()
        },
        ..Sources::default()
    };
    let errors = load_sources(&sources).expect_err("bad flags").0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["--admin-host-name"]);
    // With the names fixed, the token file is read, and cannot be.
    let sources = Sources {
        overrides: Overrides {
            admin_host_names: vec!["Admin.Example".into()],
            ..sources.overrides
        },
        ..sources
    };
    let errors = load_sources(&sources).expect_err("bad token flag").0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["--admin-token-file"]);
}
