//! `--listen ADDR ... --backend ADDR ...` as configuration objects: each `--listen` an http
//! listener with a basic rule to one pool of every `--backend`, through backend settings
//! with the defaults (and the port of the first backend, which only addresses without a
//! port would use: these all have one). They go through the same validation as a file, so
//! the data path has one source of truth.

use std::{net::SocketAddr, sync::Arc};

use super::{
    document::{Element, Origin, RawDocument},
    error::COMMAND_LINE,
    model::{Protocol, RuleKind},
    raw::{RawListener, RawPool, RawRule, RawSettings},
};

/// Names of the objects the shortcut adds; the `cli-` prefix keeps them apart from a
/// file's names when both are used.
pub const POOL_NAME: &str = "cli-backends";
pub const SETTINGS_NAME: &str = "cli-settings";

pub fn listener_name(i: usize) -> String {
    format!("cli-listen-{i}")
}

/// Adds the shortcut's objects to `document` (nothing when `listen` is empty).
pub fn add(document: &mut RawDocument, listen: &[SocketAddr], backends: &[SocketAddr]) {
    if listen.is_empty() && backends.is_empty() {
        return;
    }
    let file: Arc<str> = Arc::from(COMMAND_LINE);
    let pool = RawPool {
        name: POOL_NAME.to_owned(),
        addresses: backends.iter().map(ToString::to_string).collect(),
    };
    let pool_key = "--backend".to_owned();
    document
        .backend_pools
        .push(element(&file, pool_key.clone(), POOL_NAME, pool));
    let settings = RawSettings {
        name: SETTINGS_NAME.to_owned(),
        port: backends.first().map_or(80, SocketAddr::port),
        protocol: Protocol::Http,
        request_timeout_secs: None,
        cookie_affinity: None,
        affinity_cookie_name: None,
        connection_draining: None,
        draining_timeout_secs: None,
        host_header: None,
        pick_host_name_from_backend_address: None,
        trusted_ca: None,
        tunnel_idle_timeout_secs: None,
        tunnel_max_lifetime_secs: None,
        max_tunnel_backlog_bytes: None,
        on_backend_down: None,
        load_balancing: None,
        passive_failures: None,
        passive_ejection_secs: None,
        probe: None,
        splice_after_bytes: None,
        splice_after_ms: None,
    };
    document
        .backend_settings
        .push(element(&file, pool_key, SETTINGS_NAME, settings));
    for (i, addr) in listen.iter().enumerate() {
        let name = listener_name(i);
        let key = format!("--listen[{i}]");
        let rule_name = name.clone();
        let listener = RawListener {
            name: name.clone(),
            bind: addr.to_string(),
            protocol: Protocol::Http,
            host_names: None,
            certificate: None,
            private_key: None,
        };
        document
            .listeners
            .push(element(&file, key.clone(), &name, listener));
        let rule = RawRule {
            name: rule_name.clone(),
            kind: RuleKind::Basic,
            listener: name,
            priority: None,
            backend_pool: Some(POOL_NAME.to_owned()),
            backend_settings: Some(SETTINGS_NAME.to_owned()),
            redirect: None,
            default_backend_pool: None,
            default_backend_settings: None,
            default_redirect: None,
            path_rules: None,
        };
        document.rules.push(element(&file, key, &rule_name, rule));
    }
}

fn element<T>(file: &Arc<str>, key: String, name: &str, raw: T) -> Element<T> {
    Element {
        origin: Origin::new(file, key),
        name: Some(name.to_owned()),
        raw: Some(raw),
        skipped: Vec::new(),
    }
}
