//! Command-line flags on top of the file.
//!
//! - Flags for `[global]` keys (`--dataplane`, `--admin`, `--log-level`, `--log-format`,
//!   `--shutdown-drain-secs`, `--handshake-timeout-secs`, `--tunnel-sndbuf-bytes`, and the
//!   connection limits `--max-connections`, `--max-connections-per-ip`,
//!   `--upgrades-per-ip-per-sec`, `--upgrade-burst-per-ip`, `--listen-backlog`) win over
//!   the file.
//!   `--shutdown-drain-secs`, `--handshake-timeout-secs`, `--tunnel-sndbuf-bytes`,
//!   `--response-send-timeout-secs`, `--request-body-timeout-secs`,
//!   `--request-buffer-bytes`) win over the file.
//! - Flags for `[[backend_settings]]` keys (`--tunnel-idle-timeout-secs`,
//!   `--tunnel-max-lifetime-secs`, `--max-tunnel-backlog-bytes`) replace the built-in
//!   default: they apply to every backend settings that does not set the key itself (and to
//!   the `--backend` shortcut's settings). A value in the file wins.

use std::net::SocketAddr;

use super::model::DataplaneMode;
use super::{
    error::{ConfigError, COMMAND_LINE},
    model::{Global, LogFormat},
    validate::{global::check_log_level, SettingsDefaults},
};

/// Flags given on the command line; `None`: not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub dataplane: Option<DataplaneMode>,
    pub admin: Option<SocketAddr>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub shutdown_drain_secs: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    pub tunnel_sndbuf_bytes: Option<u32>,
    pub spliced_backlog_pool_bytes: Option<u64>,
    pub default_probes: Option<bool>,
    pub tunnel_idle_timeout_secs: Option<u64>,
    pub tunnel_max_lifetime_secs: Option<u64>,
    pub max_tunnel_backlog_bytes: Option<u64>,
    pub splice_after_bytes: Option<u64>,
    pub splice_after_ms: Option<u64>,
    // Connection limits and the accept queue.
    pub max_connections: Option<u64>,
    pub max_connections_per_ip: Option<u64>,
    pub upgrades_per_ip_per_sec: Option<u32>,
    pub upgrade_burst_per_ip: Option<u32>,
    pub listen_backlog: Option<u32>,
    pub response_send_timeout_secs: Option<u64>,
    pub request_body_timeout_secs: Option<u64>,
    pub request_buffer_bytes: Option<u64>,
    /// `--admin-host-name` (repeatable): replaces `[global] admin_host_names`.
    pub admin_host_names: Vec<String>,
    /// `--admin-token-file`: replaces `[global] admin_token_file`; read by [`Self::apply`].
    pub admin_token_file: Option<std::path::PathBuf>,
}

impl Overrides {
    /// Problems with the flags' own values.
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let flag = |key: &str, problem: String, fix: &str| {
            ConfigError::new(COMMAND_LINE, key, problem, fix)
        };
        if let Some(level) = &self.log_level {
            if let Err(problem) = check_log_level(level) {
                errors.push(flag(
                    "--log-level",
                    problem,
                    super::validate::global::LOG_LEVEL_FIX,
                ));
            }
        }
        for name in &self.admin_host_names {
            if let Err(problem) = super::validate::global::admin_host_name(name) {
                errors.push(flag(
                    "--admin-host-name",
                    problem,
                    "give a host name or an IP address, without port or wildcard",
                ));
            }
        }
        for (key, value) in [
            ("--handshake-timeout-secs", self.handshake_timeout_secs),
            ("--tunnel-idle-timeout-secs", self.tunnel_idle_timeout_secs),
            ("--max-tunnel-backlog-bytes", self.max_tunnel_backlog_bytes),
            (
                "--response-send-timeout-secs",
                self.response_send_timeout_secs,
            ),
            (
                "--request-body-timeout-secs",
                self.request_body_timeout_secs,
            ),
        ] {
            if value == Some(0) {
                errors.push(flag(key, format!("{key} is 0"), "give at least 1"));
            }
        }
        for (key, problem) in super::validate::global::limit_problems(
            self.max_connections,
            self.upgrade_burst_per_ip,
            self.listen_backlog,
        ) {
            let key = format!("--{}", key.replace('_', "-"));
            errors.push(flag(&key, problem.problem, &problem.fix));
        }
        if let Some(bytes) = self.request_buffer_bytes {
            if let Err(problem) = super::validate::global::check_request_buffer_bytes(bytes) {
                errors.push(flag(
                    "--request-buffer-bytes",
                    problem,
                    super::validate::global::REQUEST_BUFFER_FIX,
                ));
            }
        }
        errors
    }

    /// The defaults of backend settings keys, with these flags applied (a 0 that
    /// [`Overrides::check`] refuses is left out, so it is not reported per settings too).
    pub(crate) fn settings_defaults(&self) -> SettingsDefaults {
        let builtin = SettingsDefaults::default();
        SettingsDefaults {
            tunnel_idle_timeout_secs: self
                .tunnel_idle_timeout_secs
                .filter(|&secs| secs > 0)
                .unwrap_or(builtin.tunnel_idle_timeout_secs),
            tunnel_max_lifetime_secs: self
                .tunnel_max_lifetime_secs
                .unwrap_or(builtin.tunnel_max_lifetime_secs),
            max_tunnel_backlog_bytes: self
                .max_tunnel_backlog_bytes
                .filter(|&bytes| bytes > 0)
                .unwrap_or(builtin.max_tunnel_backlog_bytes),
            splice_after_bytes: self
                .splice_after_bytes
                .unwrap_or(builtin.splice_after_bytes),
            splice_after_ms: self.splice_after_ms.unwrap_or(builtin.splice_after_ms),
        }
    }

    /// Puts the `[global]` flags over the file's values; the problem of a
    /// `--admin-token-file` that cannot be used.
    pub(crate) fn apply(&self, global: &mut Global) -> Result<(), ConfigError> {
        use std::time::Duration;
        if let Some(dataplane) = self.dataplane {
            global.dataplane = dataplane;
        }
        if let Some(admin) = self.admin {
            global.admin = Some(admin);
        }
        if let Some(level) = &self.log_level {
            global.log_level.clone_from(level);
        }
        if let Some(format) = self.log_format {
            global.log_format = format;
        }
        if let Some(secs) = self.shutdown_drain_secs {
            global.shutdown_drain = Duration::from_secs(secs);
        }
        if let Some(secs) = self.handshake_timeout_secs {
            global.handshake_timeout = Duration::from_secs(secs);
        }
        if let Some(bytes) = self.tunnel_sndbuf_bytes {
            global.tunnel_sndbuf_bytes = bytes;
        }
        if let Some(bytes) = self.spliced_backlog_pool_bytes {
            global.spliced_backlog_pool_bytes = bytes;
        }
        if let Some(on) = self.default_probes {
            global.default_probes = on;
        }
        if let Some(n) = self.max_connections {
            global.max_connections = Some(n);
        }
        if let Some(n) = self.max_connections_per_ip {
            global.max_connections_per_ip = n;
        }
        if let Some(n) = self.upgrades_per_ip_per_sec {
            global.upgrades_per_ip_per_sec = n;
        }
        if let Some(n) = self.upgrade_burst_per_ip {
            global.upgrade_burst_per_ip = n;
        }
        if let Some(n) = self.listen_backlog {
            global.listen_backlog = Some(n);
        }
        if let Some(secs) = self.response_send_timeout_secs {
            global.response_send_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.request_body_timeout_secs {
            global.request_body_timeout = Duration::from_secs(secs);
        }
        if let Some(bytes) = self.request_buffer_bytes {
            global.request_buffer_bytes = bytes;
        }
        if !self.admin_host_names.is_empty() {
            global.admin_host_names = self
                .admin_host_names
                .iter()
                .filter_map(|name| super::validate::global::admin_host_name(name).ok())
                .collect();
        }
        if let Some(path) = &self.admin_token_file {
            let token = crate::AdminToken::read(path).map_err(|invalid| {
                ConfigError::new(
                    COMMAND_LINE,
                    "--admin-token-file",
                    invalid.problem,
                    invalid.fix,
                )
            })?;
            global.admin_token = Some(token);
        }
        Ok(())
    }
}
