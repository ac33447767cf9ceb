//! The configuration as written: one serde struct per TOML object, `deny_unknown_fields`,
//! every optional key an `Option` (defaults are applied by validation, so it can tell "not
//! set" from "set to the default"). Names follow Azure Application Gateway's, in snake_case.
//!
//! `Serialize` is for `gateway import-azure`, which writes these structs back out as TOML
//! (keys left `None` are not written); `deny_unknown_fields` only concerns reading.

use serde::{Deserialize, Serialize};

use super::model::DataplaneMode;
use super::model::{LoadBalancing, LogFormat, OnBackendDownKind, Protocol, RuleKind};

/// `[global]`: the process, not the traffic.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub dataplane: Option<DataplaneMode>,
    pub admin: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub shutdown_drain_secs: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    pub tunnel_sndbuf_bytes: Option<u32>,
    pub spliced_backlog_pool_bytes: Option<u64>,
    pub default_probes: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub path_escaped_slashes: Option<super::path::EscapedSlashes>,
    // Connection limits and the accept queue (issue 13, findings 9 and 10).
    pub max_connections: Option<u64>,
    pub max_connections_per_ip: Option<u64>,
    pub upgrades_per_ip_per_sec: Option<u32>,
    pub upgrade_burst_per_ip: Option<u32>,
    pub listen_backlog: Option<u32>,
    pub response_send_timeout_secs: Option<u64>,
    pub request_body_timeout_secs: Option<u64>,
    pub request_buffer_bytes: Option<u64>,
    pub admin_host_names: Option<Vec<String>>,
    pub admin_token_file: Option<String>,
}

/// `[[listeners]]`: Azure's `httpListeners` with its frontend IP and port folded into `bind`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub bind: String,
    pub protocol: Protocol,
    pub host_names: Option<Vec<String>>,
    pub certificate: Option<String>,
    pub private_key: Option<String>,
}

/// `[[backend_pools]]`: Azure's `backendAddressPools`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: String,
    pub addresses: Vec<String>,
}

/// `[[backend_settings]]`: Azure's `backendHttpSettingsCollection`, plus our tunnel limits.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub request_timeout_secs: Option<u64>,
    pub cookie_affinity: Option<bool>,
    pub affinity_cookie_name: Option<String>,
    pub connection_draining: Option<bool>,
    pub draining_timeout_secs: Option<u64>,
    pub on_backend_down: Option<OnBackendDownKind>,
    pub load_balancing: Option<LoadBalancing>,
    pub passive_failures: Option<u32>,
    pub passive_ejection_secs: Option<u64>,
    pub host_header: Option<String>,
    pub pick_host_name_from_backend_address: Option<bool>,
    pub trusted_ca: Option<String>,
    pub tunnel_idle_timeout_secs: Option<u64>,
    pub tunnel_max_lifetime_secs: Option<u64>,
    pub max_tunnel_backlog_bytes: Option<u64>,
    pub probe: Option<String>,
    pub splice_after_bytes: Option<u64>,
    pub splice_after_ms: Option<u64>,
}

/// `[[rules]]`: Azure's `requestRoutingRules`, with the `urlPathMap` of a path-based rule
/// and the `redirectConfiguration`s written inline.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub kind: RuleKind,
    pub listener: String,
    pub priority: Option<u32>,
    pub backend_pool: Option<String>,
    pub backend_settings: Option<String>,
    pub redirect: Option<RawRedirect>,
    pub default_backend_pool: Option<String>,
    pub default_backend_settings: Option<String>,
    pub default_redirect: Option<RawRedirect>,
    /// `[[rules.path_rules]]`, deserialized one by one (see `document.rs`), so one bad
    /// path rule does not hide the others; `None` when the key is absent.
    #[serde(skip)]
    pub path_rules: Option<Vec<super::document::Element<RawPathRule>>>,
}

/// `[[rules.path_rules]]`: one entry of a path map.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRule {
    pub name: String,
    pub paths: Vec<String>,
    pub backend_pool: Option<String>,
    pub backend_settings: Option<String>,
    pub redirect: Option<RawRedirect>,
}

/// `redirect = { ... }`: Azure's `redirectConfigurations`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub target_listener: Option<String>,
    pub target_url: Option<String>,
    pub status: Option<u16>,
    pub include_path: Option<bool>,
    pub include_query: Option<bool>,
}

/// `[[probes]]`: Azure's `probes`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub name: String,
    pub protocol: Protocol,
    pub host: Option<String>,
    pub pick_host_name_from_backend_settings: Option<bool>,
    pub path: Option<String>,
    pub interval_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub match_status_codes: Option<Vec<String>>,
    pub match_body: Option<String>,
}
