//! The runtime configuration: validated, defaults applied, references resolved, immutable.
//! The gateway shares it as an `Arc<Config>` snapshot that the data path reads without
//! locks (and that a reload can later replace whole).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

pub use super::matching::{BackendAddress, BackendHost, HostMatch, HostPattern, PathPattern};

/// `http` or `https`, of a listener, backend settings or probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What the operator asked for with `--dataplane` (or `[global] dataplane`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataplaneMode {
    /// Load eBPF; if that fails, log why once and relay in userspace.
    Auto,
    /// Load eBPF or refuse to start.
    Ebpf,
    /// Never load eBPF; relay every tunnel in userspace.
    Userspace,
}

/// `kind` of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Basic,
    PathBased,
    Redirect,
}

impl RuleKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::PathBased => "path_based",
            Self::Redirect => "redirect",
        }
    }
}

/// Everything the gateway runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub global: Global,
    /// One socket each, in the order of their first listener in the file.
    pub binds: Vec<Bind>,
    pub rules: Vec<Arc<Rule>>,
    pub pools: Vec<Arc<Pool>>,
    pub backend_settings: Vec<Arc<BackendSettings>>,
    pub probes: Vec<Arc<Probe>>,
}

/// `[global]`, with command-line flags applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    pub dataplane: DataplaneMode,
    pub admin: Option<SocketAddr>,
    /// A `tracing` EnvFilter; checked to parse.
    pub log_level: String,
    pub log_format: LogFormat,
    pub shutdown_drain: Duration,
    pub handshake_timeout: Duration,
    pub tunnel_sndbuf_bytes: u32,
    /// Kernel memory all spliced flows may borrow beyond their own backlog budget.
    pub spliced_backlog_pool_bytes: u64,
    /// Whether every pool/settings pair without a `probe` is probed with Azure's default
    /// probe (`GET /`, every 30 s).
    pub default_probes: bool,
    /// How request paths are normalised before routing (`merge_slashes`,
    /// `path_escaped_slashes`).
    pub paths: crate::path::PathPolicy,
    /// Client connections open at once across every listener, tunnels included; past it a
    /// new connection gets a `503`. `None`: derived from `RLIMIT_NOFILE` at start (see
    /// [`crate::defaults::MAX_CONNECTIONS_FD_RESERVE`]).
    pub max_connections: Option<u64>,
    /// Client connections open at once from one client (an IPv4 address or an IPv6 /64),
    /// tunnels included; 0: no limit.
    pub max_connections_per_ip: u64,
    /// WebSocket upgrades one client may start per second, sustained (a token bucket of
    /// `upgrade_burst_per_ip`); past it a `429`. 0: no limit.
    pub upgrades_per_ip_per_sec: u32,
    /// Upgrades one client may start at once before `upgrades_per_ip_per_sec` applies.
    pub upgrade_burst_per_ip: u32,
    /// The accept queue of every client listener (`listen(2)`'s backlog). `None`: the
    /// kernel's `net.core.somaxconn`, read when the socket is opened.
    pub listen_backlog: Option<u32>,
    /// A write to a client that makes no progress for this long closes its connection.
    pub response_send_timeout: Duration,
    /// A request body with no byte for this long gets `408`.
    pub request_body_timeout: Duration,
    /// Request body bytes read before a backend is chosen; 0: bodies are streamed at once.
    pub request_buffer_bytes: u64,
    /// Names the admin listener answers to besides its address (and `localhost` on
    /// loopback): lowercase, without a trailing dot.
    pub admin_host_names: Vec<String>,
    /// The bearer token every admin request must carry; `None`: no token asked for.
    pub admin_token: Option<crate::AdminToken>,
}

/// One listening socket and the listeners (sites) sharing it.
#[derive(Clone, Debug, PartialEq)]
pub struct Bind {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// By their rule's priority (rules without one after those with one, in file order), the
    /// catch-all site (no `host_names`) always last. Requests pick a site by host (exact
    /// name, then wildcard, then catch-all; see the daemon's `route` module), which no
    /// order changes.
    pub sites: Vec<Site>,
}

impl Bind {
    /// The site without `host_names`, which takes every host no other site names.
    pub fn catch_all(&self) -> Option<&Site> {
        self.sites.iter().find(|site| site.hosts == HostMatch::Any)
    }
}

/// One listener: which hosts it answers on its bind, its certificate, and its rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    pub listener: String,
    pub hosts: HostMatch,
    /// PEM files (paths resolved against the configuration file's directory); `https` only.
    pub tls: Option<TlsFiles>,
    pub rule: Arc<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub listener: String,
    pub priority: Option<u32>,
    pub action: RuleAction,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleAction {
    /// Every request of the listener to one pool.
    Basic(Forward),
    /// By URL path; the first path rule with a matching pattern wins, else `default`.
    PathBased {
        path_rules: Vec<PathRule>,
        default: Route,
    },
    Redirect(Redirect),
}

/// Where a request goes: a pool with its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    pub pool: Arc<Pool>,
    pub settings: Arc<BackendSettings>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    Forward(Forward),
    Redirect(Redirect),
}

#[derive(Clone, Debug, PartialEq)]
pub struct PathRule {
    pub name: String,
    pub paths: Vec<PathPattern>,
    pub route: Route,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub target: RedirectTarget,
    /// 301, 302, 307 or 308.
    pub status: u16,
    pub include_path: bool,
    pub include_query: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectTarget {
    /// Another listener of this gateway: same host, its scheme and port.
    Listener {
        name: String,
        protocol: Protocol,
        port: u16,
    },
    /// An absolute `http(s)://` URL.
    Url(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// Never empty.
    pub addresses: Vec<BackendAddress>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendSettings {
    pub name: String,
    /// For pool addresses written without a port.
    pub port: u16,
    pub protocol: Protocol,
    /// For ordinary requests; never applied to tunnels.
    pub request_timeout: Duration,
    /// The affinity cookie's name, when cookie affinity is on.
    pub affinity_cookie: Option<String>,
    /// What happens to live tunnels of a backend that fails its probes or leaves the
    /// configuration on a reload.
    pub on_backend_down: OnBackendDown,
    /// How a backend is chosen for a request without (valid) affinity.
    pub load_balancing: LoadBalancing,
    /// Passive health: connect failures and resets seen by real traffic.
    pub passive: PassiveHealth,
    pub host_header: HostHeader,
    /// PEM bundle of CAs trusted for `https` backends; `None`: the system roots.
    pub trusted_ca: Option<PathBuf>,
    pub tunnel: TunnelLimits,
    pub probe: Option<Arc<Probe>>,
}

/// `on_backend_down` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendDownKind {
    Keep,
    Drain,
    Close,
}

/// What happens to the live tunnels of a backend that goes down (fails its probe) or
/// leaves the configuration: new requests and tunnels never go to it either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBackendDown {
    /// They stay open (the default): a backend that fails `GET /` may still serve its
    /// open WebSockets, as Azure does.
    Keep,
    /// They are closed this long after the backend went down, unless it comes back first
    /// (`connection_draining = true` / `draining_timeout_secs`).
    Drain(Duration),
    /// They are closed at once.
    Close,
}

impl OnBackendDown {
    /// `Drain` with the default draining time; validation puts in the one configured.
    pub(crate) fn from_kind(kind: OnBackendDownKind) -> Self {
        match kind {
            OnBackendDownKind::Keep => Self::Keep,
            OnBackendDownKind::Drain => {
                Self::Drain(Duration::from_secs(super::defaults::DRAINING_TIMEOUT_SECS))
            }
            OnBackendDownKind::Close => Self::Close,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Drain(_) => "drain",
            Self::Close => "close",
        }
    }
}

/// `load_balancing`: how a request without affinity picks among the healthy backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// In turn.
    #[default]
    RoundRobin,
    /// The one with the fewest requests in flight and tunnels open (ties in turn):
    /// tunnels live long, so counting them keeps new ones off busy backends.
    LeastConnections,
}

impl LoadBalancing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastConnections => "least_connections",
        }
    }
}

/// Passive health checking: `failures` connect failures or resets in a row (0: off)
/// take a backend out for `ejection`, longer each time it is taken out again without a
/// success in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveHealth {
    pub failures: u32,
    pub ejection: Duration,
}

/// The `Host` sent to the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's, unchanged.
    Preserve,
    /// `host_header = "..."`.
    Override(String),
    /// `pick_host_name_from_backend_address = true`.
    FromBackendAddress,
}

/// Limits of the WebSocket tunnels made through one backend settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelLimits {
    pub idle_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    pub max_backlog_bytes: u64,
    /// When a plaintext tunnel leaves the relay for the kernel splice.
    pub promote: Promotion,
}

/// A plaintext tunnel is relayed until it has moved `after_bytes` (both ways together) or
/// lived `after`, whichever comes first, then spliced; 0 splices it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub after_bytes: u64,
    pub after: Duration,
}

impl Promotion {
    /// Spliced from the start.
    pub const AT_ONCE: Self = Self {
        after_bytes: 0,
        after: Duration::ZERO,
    };

    pub fn at_once(&self) -> bool {
        self.after_bytes == 0 || self.after.is_zero()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub protocol: Protocol,
    pub host: ProbeHost,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Inclusive ranges; a single code is a range of one.
    pub match_status_codes: Vec<(u16, u16)>,
    pub match_body: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeHost {
    Fixed(String),
    /// `pick_host_name_from_backend_settings = true`.
    FromBackendSettings,
}

impl Config {
    /// Listeners in all binds.
    pub(crate) fn listener_count(&self) -> usize {
        self.binds.iter().map(|bind| bind.sites.len()).sum()
    }

    /// `2 listeners on 2 binds, 3 pools, 3 backend settings, 4 rules, 1 probe`.
    pub fn summary(&self) -> String {
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{} on {}, {}, {}, {}, {}",
            count(self.listener_count(), "listener", "listeners"),
            count(self.binds.len(), "bind", "binds"),
            count(self.pools.len(), "pool", "pools"),
            count(
                self.backend_settings.len(),
                "backend settings",
                "backend settings"
            ),
            count(self.rules.len(), "rule", "rules"),
            count(self.probes.len(), "probe", "probes"),
        )
    }
}
