//! The configuration file of `gateway run --config`, typed: one struct per object of the
//! file (`[global]`, `[[listeners]]`, `[[backend_pools]]`, `[[backend_settings]]`,
//! `[[rules]]` with their `[[rules.path_rules]]`, `[[probes]]`), serialized to TOML by the
//! `toml` crate, which leaves out the keys that are `None`: the gateway applies its defaults.
//!
//! ```text
//! let config = Config::new()
//!     .listener(Listener::http("web", "127.0.0.1:0"))
//!     .pool("pool", [backend.addr()])
//!     .settings(Settings::http("plain", 80).request_timeout_secs(1))
//!     .rule(Rule::basic("all", "web", "pool", "plain"));
//! let file = ConfigFile::new(test, &config);
//! let gateway = Gateway::builder().config(file.path()).start();
//! ```
//!
//! Pieces add up (`site + pools`): [`Config`] implements `Add`, appending every list.
//! Tests of how the gateway reads odd or invalid text (line numbers, unknown keys) write
//! that text themselves.

use std::{
    fmt::Display,
    ops::Add,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::oneshot::ScratchDir;

/// The file name [`Config::write`] and [`ConfigFile`] use.
pub const FILE_NAME: &str = "gateway.toml";

/// `protocol` of listeners, backend settings and probes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Https,
}

/// `on_backend_down` of backend settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendDown {
    Keep,
    Drain,
    Close,
}

/// `load_balancing` of backend settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    RoundRobin,
    LeastConnections,
}

/// `kind` of a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    #[default]
    Basic,
    PathBased,
    Redirect,
}

/// A whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    #[serde(skip_serializing_if = "Global::is_empty")]
    pub global: Global,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend_pools: Vec<Pool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend_settings: Vec<Settings>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `[global]` table (the command-line flags the harness passes override it).
    pub fn global(mut self, global: Global) -> Self {
        self.global = global;
        self
    }

    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// A backend pool of `addresses` (`IP:PORT`, `IP`, `host:port` or `host`).
    pub fn pool<A: Display>(mut self, name: &str, addresses: impl IntoIterator<Item = A>) -> Self {
        self.backend_pools.push(Pool {
            name: name.to_owned(),
            addresses: addresses.into_iter().map(|a| a.to_string()).collect(),
        });
        self
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.backend_settings.push(settings);
        self
    }

    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    pub fn probe(mut self, probe: Probe) -> Self {
        self.probes.push(probe);
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a test configuration serializes to TOML")
    }

    /// Writes the file to `dir` as [`FILE_NAME`]; returns its path.
    pub fn write(&self, dir: &ScratchDir) -> PathBuf {
        dir.write(FILE_NAME, &self.to_toml())
    }
}

/// Appends every list of `other` to `self`'s; at most one of them may have a `[global]`.
impl Add for Config {
    type Output = Self;

    fn add(mut self, other: Self) -> Self {
        assert!(
            self.global.is_empty() || other.global.is_empty(),
            "two [global] tables to add up"
        );
        if self.global.is_empty() {
            self.global = other.global;
        }
        self.listeners.extend(other.listeners);
        self.backend_pools.extend(other.backend_pools);
        self.backend_settings.extend(other.backend_settings);
        self.rules.extend(other.rules);
        self.probes.extend(other.probes);
        self
    }
}

/// `[global]`: the process. Every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Global {
    pub dataplane: Option<String>,
    pub admin: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub shutdown_drain_secs: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    pub tunnel_sndbuf_bytes: Option<u32>,
    pub spliced_backlog_pool_bytes: Option<u64>,
    pub default_probes: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub path_escaped_slashes: Option<String>,
    pub max_connections: Option<u64>,
    pub max_connections_per_ip: Option<u64>,
    pub upgrades_per_ip_per_sec: Option<u32>,
    pub upgrade_burst_per_ip: Option<u32>,
    pub listen_backlog: Option<u32>,
}

impl Global {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `[[listeners]]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Listener {
    pub name: String,
    pub bind: String,
    pub protocol: Protocol,
    pub host_names: Option<Vec<String>>,
    pub certificate: Option<String>,
    pub private_key: Option<String>,
}

impl Listener {
    /// An http listener on `bind` (`127.0.0.1:0`, a `SocketAddr`, ...).
    pub fn http(name: &str, bind: impl Display) -> Self {
        Self {
            name: name.to_owned(),
            bind: bind.to_string(),
            protocol: Protocol::Http,
            ..Self::default()
        }
    }

    /// An https listener on `bind` with a PEM certificate chain and its key.
    pub fn https(
        name: &str,
        bind: impl Display,
        certificate: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Self {
        Self {
            protocol: Protocol::Https,
            certificate: Some(path_text(certificate)),
            private_key: Some(path_text(private_key)),
            ..Self::http(name, bind)
        }
    }

    pub fn host_names<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.host_names = Some(names.into_iter().map(str::to_owned).collect());
        self
    }
}

/// `[[backend_pools]]`; see [`Config::pool`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pool {
    pub name: String,
    pub addresses: Vec<String>,
}

/// `[[backend_settings]]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Settings {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub request_timeout_secs: Option<u64>,
    pub cookie_affinity: Option<bool>,
    pub affinity_cookie_name: Option<String>,
    pub connection_draining: Option<bool>,
    pub draining_timeout_secs: Option<u64>,
    pub on_backend_down: Option<OnBackendDown>,
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
}

impl Settings {
    /// `protocol = "http"` settings; `port` applies to pool addresses without one.
    pub fn http(name: &str, port: u16) -> Self {
        Self {
            name: name.to_owned(),
            port,
            protocol: Protocol::Http,
            ..Self::default()
        }
    }

    /// `protocol = "https"` settings trusting exactly the CAs of the PEM file `trusted_ca`.
    pub fn https(name: &str, port: u16, trusted_ca: impl AsRef<Path>) -> Self {
        Self {
            protocol: Protocol::Https,
            trusted_ca: Some(path_text(trusted_ca)),
            ..Self::http(name, port)
        }
    }

    pub fn request_timeout_secs(mut self, secs: u64) -> Self {
        self.request_timeout_secs = Some(secs);
        self
    }

    pub fn cookie_affinity(mut self, on: bool) -> Self {
        self.cookie_affinity = Some(on);
        self
    }

    pub fn on_backend_down(mut self, what: OnBackendDown) -> Self {
        self.on_backend_down = Some(what);
        self
    }

    /// `on_backend_down = "drain"` with `draining_timeout_secs`.
    pub fn drain(self, secs: u64) -> Self {
        Self {
            draining_timeout_secs: Some(secs),
            ..self.on_backend_down(OnBackendDown::Drain)
        }
    }

    pub fn load_balancing(mut self, how: LoadBalancing) -> Self {
        self.load_balancing = Some(how);
        self
    }

    /// `passive_failures` and `passive_ejection_secs`.
    pub fn passive(mut self, failures: u32, ejection_secs: u64) -> Self {
        self.passive_failures = Some(failures);
        self.passive_ejection_secs = Some(ejection_secs);
        self
    }

    pub fn host_header(mut self, host: &str) -> Self {
        self.host_header = Some(host.to_owned());
        self
    }

    pub fn pick_host_name_from_backend_address(mut self) -> Self {
        self.pick_host_name_from_backend_address = Some(true);
        self
    }

    pub fn tunnel_idle_timeout_secs(mut self, secs: u64) -> Self {
        self.tunnel_idle_timeout_secs = Some(secs);
        self
    }

    /// The `[[probes]]` entry named `name`.
    pub fn probe(mut self, name: &str) -> Self {
        self.probe = Some(name.to_owned());
        self
    }
}

/// `[[rules]]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub listener: String,
    pub priority: Option<u32>,
    pub backend_pool: Option<String>,
    pub backend_settings: Option<String>,
    pub redirect: Option<Redirect>,
    pub default_backend_pool: Option<String>,
    pub default_backend_settings: Option<String>,
    pub default_redirect: Option<Redirect>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path_rules: Vec<PathRule>,
}

impl Rule {
    fn new(name: &str, kind: RuleKind, listener: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            listener: listener.to_owned(),
            ..Self::default()
        }
    }

    /// `listener` → `pool` through `settings`.
    pub fn basic(name: &str, listener: &str, pool: &str, settings: &str) -> Self {
        Self {
            backend_pool: Some(pool.to_owned()),
            backend_settings: Some(settings.to_owned()),
            ..Self::new(name, RuleKind::Basic, listener)
        }
    }

    /// `listener` → the first of its [`Rule::path`]s whose paths match, else `pool` through
    /// `settings`.
    pub fn path_based(name: &str, listener: &str, pool: &str, settings: &str) -> Self {
        Self {
            default_backend_pool: Some(pool.to_owned()),
            default_backend_settings: Some(settings.to_owned()),
            ..Self::new(name, RuleKind::PathBased, listener)
        }
    }

    /// `listener` → `redirect`.
    pub fn redirect(name: &str, listener: &str, redirect: Redirect) -> Self {
        Self {
            redirect: Some(redirect),
            ..Self::new(name, RuleKind::Redirect, listener)
        }
    }

    /// One more `[[rules.path_rules]]` entry, after the others.
    pub fn path(mut self, path_rule: PathRule) -> Self {
        self.path_rules.push(path_rule);
        self
    }

    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }
}

/// `[[rules.path_rules]]`: one entry of a path-based rule's path map.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PathRule {
    pub name: String,
    pub paths: Vec<String>,
    pub backend_pool: Option<String>,
    pub backend_settings: Option<String>,
    pub redirect: Option<Redirect>,
}

impl PathRule {
    /// `paths` (`"/ws"`, `"/api/*"`) → `pool` through `settings`.
    pub fn to<'a>(
        name: &str,
        paths: impl IntoIterator<Item = &'a str>,
        pool: &str,
        settings: &str,
    ) -> Self {
        Self {
            name: name.to_owned(),
            paths: paths.into_iter().map(str::to_owned).collect(),
            backend_pool: Some(pool.to_owned()),
            backend_settings: Some(settings.to_owned()),
            ..Self::default()
        }
    }

    /// `paths` → `redirect`.
    pub fn redirect<'a>(
        name: &str,
        paths: impl IntoIterator<Item = &'a str>,
        redirect: Redirect,
    ) -> Self {
        Self {
            name: name.to_owned(),
            paths: paths.into_iter().map(str::to_owned).collect(),
            redirect: Some(redirect),
            ..Self::default()
        }
    }
}

/// `redirect = { ... }` of a rule or a path rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Redirect {
    pub target_listener: Option<String>,
    pub target_url: Option<String>,
    pub status: Option<u16>,
    pub include_path: Option<bool>,
    pub include_query: Option<bool>,
}

impl Redirect {
    /// To the same host on `listener`'s scheme and port.
    pub fn to_listener(listener: &str) -> Self {
        Self {
            target_listener: Some(listener.to_owned()),
            ..Self::default()
        }
    }

    pub fn to_url(url: &str) -> Self {
        Self {
            target_url: Some(url.to_owned()),
            ..Self::default()
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// `[[probes]]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Probe {
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

impl Probe {
    /// A probe sending `Host: host`.
    pub fn new(name: &str, protocol: Protocol, host: &str) -> Self {
        Self {
            name: name.to_owned(),
            protocol,
            host: Some(host.to_owned()),
            ..Self::default()
        }
    }

    /// Sends `Host: host`.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// Sends the settings' `host_header` (else the pool address) instead of a `host`.
    pub fn pick_host_name_from_backend_settings(mut self) -> Self {
        self.host = None;
        self.pick_host_name_from_backend_settings = Some(true);
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// `interval_secs` and `timeout_secs`.
    pub fn every(mut self, interval_secs: u64, timeout_secs: u64) -> Self {
        self.interval_secs = Some(interval_secs);
        self.timeout_secs = Some(timeout_secs);
        self
    }

    /// `unhealthy_threshold` and `healthy_threshold`.
    pub fn thresholds(mut self, unhealthy: u32, healthy: u32) -> Self {
        self.unhealthy_threshold = Some(unhealthy);
        self.healthy_threshold = Some(healthy);
        self
    }

    pub fn match_status_codes<'a>(mut self, codes: impl IntoIterator<Item = &'a str>) -> Self {
        self.match_status_codes = Some(codes.into_iter().map(str::to_owned).collect());
        self
    }

    pub fn match_body(mut self, text: &str) -> Self {
        self.match_body = Some(text.to_owned());
        self
    }
}

/// A configuration file in a scratch directory of its own, which the test may rewrite
/// (before a reload) and which is removed when dropped.
pub struct ConfigFile {
    dir: ScratchDir,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `config` to a fresh scratch directory named after `test`.
    pub fn new(test: &str, config: &Config) -> Self {
        Self::in_dir(ScratchDir::new(test), config)
    }

    /// Writes `config` to `dir`, which may already hold the certificates it names.
    pub fn in_dir(dir: ScratchDir, config: &Config) -> Self {
        let path = config.write(&dir);
        Self { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &ScratchDir {
        &self.dir
    }

    /// Replaces the file with `config`.
    pub fn rewrite(&self, config: &Config) {
        self.rewrite_text(&config.to_toml());
    }

    /// Replaces the file with `text` as is (e.g. an invalid configuration).
    pub fn rewrite_text(&self, text: &str) {
        self.dir.write(FILE_NAME, text);
    }
}

fn path_text(path: impl AsRef<Path>) -> String {
    path.as_ref()
        .to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.as_ref().display()))
        .to_owned()
}

#[cfg(test)]
mod tests;
