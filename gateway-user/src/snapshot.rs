//! The configuration as the data path serves it: one immutable [`Snapshot`] with a router
//! (and, for https, a TLS server) per bind over the resolved upstreams its rules forward to.
//! The gateway holds the current one in an `ArcSwap`; each connection and request reads it
//! without a lock, and a reload can publish a new one whole (loading certificates and
//! resolving first, then building the snapshot, then swapping it in).

use std::{collections::HashMap, fmt, net::SocketAddr, sync::Arc};

use crate::{
    config::{Bind, Config, Forward, Protocol, Route, RuleAction},
    dataplane::splice::SpliceSettings,
    health::Health,
    route::Router,
    tls::{self, Acceptor, ClientConfig},
    tunnel,
    upstream::{affinity::AffinityKey, resolve, Upstream},
    StartError,
};

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    /// In the order of `config.binds`.
    pub binds: Vec<BindRoutes>,
}

/// Which bind a listening socket serves, stable across reloads (an index into
/// `config.binds` is not: a reload can reorder them). A bind is its configured address, as
/// written (port 0 included); a port-0 bind, which never shares its socket, is also named
/// by its listener, since several may be written with the same address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindId {
    pub addr: SocketAddr,
    /// The listener of a port-0 bind; `None` for a fixed port.
    pub listener: Option<Arc<str>>,
}

impl BindId {
    pub fn of(bind: &Bind) -> Self {
        let listener = match bind.sites.first() {
            Some(site) if bind.addr.port() == 0 => Some(Arc::from(site.listener.as_str())),
            _ => None,
        };
        Self {
            addr: bind.addr,
            listener,
        }
    }
}

/// `127.0.0.1:8080`, or `127.0.0.1:0 (listener web)`.
impl fmt::Display for BindId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        match &self.listener {
            Some(listener) => write!(f, " (listener {listener})"),
            None => Ok(()),
        }
    }
}

/// How one bind (listening socket) serves its requests.
#[derive(Debug)]
pub struct BindRoutes {
    pub id: BindId,
    pub router: Router<Arc<Upstream>>,
    pub protocol: Protocol,
    /// The port it listens on (the kernel's pick when the configuration says 0):
    /// `X-Forwarded-Port`.
    pub port: u16,
    /// The TLS server of an `https` bind (certificates by SNI); `None` for `http`.
    pub acceptor: Option<Acceptor>,
}

/// The TLS servers and clients of a configuration, read from their PEM files.
#[derive(Debug, Default)]
pub struct TlsSetup {
    /// One per bind, in the order of `config.binds`: `Some` for an `https` bind.
    pub acceptors: Vec<Option<Acceptor>>,
    /// The TLS client of each `https` backend settings, by name.
    pub clients: HashMap<String, Arc<ClientConfig>>,
}

/// Loads the certificate and key of every https listener (checking that they belong
/// together) and the trusted CAs of every https backend settings; the first problem is the
/// error, naming the listener or settings and the file.
pub fn load_tls(config: &Config) -> Result<TlsSetup, StartError> {
    let acceptors = config
        .binds
        .iter()
        .map(|bind| match bind.protocol {
            Protocol::Http => Ok(None),
            Protocol::Https => Acceptor::new(bind).map(Some),
        })
        .collect::<Result<_, _>>()?;
    let mut clients = HashMap::new();
    for settings in &config.backend_settings {
        if settings.protocol == Protocol::Https {
            clients.insert(settings.name.clone(), tls::client_config(settings)?);
        }
    }
    Ok(TlsSetup { acceptors, clients })
}

/// The upstreams of a configuration, by pool and backend settings name.
pub type Upstreams = HashMap<(String, String), Arc<Upstream>>;

/// Resolves every pool a rule of `config` forwards to, once per backend settings it is
/// used with (a pool's addresses without a port take the settings' port); upstreams of
/// https settings get their TLS client from `tls` (from [`load_tls`] of the same
/// configuration).
pub async fn resolve_upstreams(
    config: &Config,
    key: &AffinityKey,
    tls: &TlsSetup,
    health: &Health,
) -> Result<Upstreams, StartError> {
    let sndbuf_bytes = config.global.tunnel_sndbuf_bytes;
    let backlog_pool_bytes = config.global.spliced_backlog_pool_bytes;
    let mut upstreams = Upstreams::new();
    // A pool is resolved once per default port, however many settings use it.
    let mut resolved: HashMap<(&str, u16), Vec<(SocketAddr, String)>> = HashMap::new();
    for forward in forwards(config) {
        let (pool, settings) = (&forward.pool, &forward.settings);
        let id = (pool.name.clone(), settings.name.clone());
        if upstreams.contains_key(&id) {
            continue;
        }
        let addresses = match resolved.get(&(pool.name.as_str(), settings.port)) {
            Some(addresses) => addresses.clone(),
            None => {
                let found = resolve::addresses(&pool.name, &pool.addresses, settings.port).await?;
                resolved.insert((pool.name.as_str(), settings.port), found.clone());
                found
            }
        };
        let limits = settings.tunnel;
        let tunnel = tunnel::Settings {
            idle_timeout: limits.idle_timeout,
            max_lifetime: limits.max_lifetime,
            splice: SpliceSettings {
                max_backlog_bytes: limits.max_backlog_bytes,
                sndbuf_bytes,
                backlog_pool_bytes,
            },
        };
        let mut upstream =
            Upstream::new(&pool.name, settings.clone(), addresses, key, tunnel, health);
        if let Some(client) = tls.clients.get(&settings.name) {
            upstream = upstream.with_tls(client.clone()).map_err(|source| {
                StartError::BackendServerName {
                    settings: settings.name.clone(),
                    source,
                }
            })?;
        }
        upstreams.insert(id, Arc::new(upstream));
    }
    Ok(upstreams)
}

impl Snapshot {
    /// Builds the routers of `config` over `upstreams` (from [`resolve_upstreams`] of the
    /// same configuration). `bound` is the address each bind of `config` listens on, in
    /// order; `acceptors` its TLS server ([`TlsSetup::acceptors`]).
    pub fn new(
        config: Arc<Config>,
        upstreams: &Upstreams,
        bound: &[SocketAddr],
        acceptors: &[Option<Acceptor>],
    ) -> Self {
        let ports: HashMap<&str, u16> = config
            .binds
            .iter()
            .zip(bound)
            .flat_map(|(bind, addr)| {
                bind.sites
                    .iter()
                    .map(move |site| (site.listener.as_str(), addr.port()))
            })
            .collect();
        let binds = config
            .binds
            .iter()
            .zip(bound)
            .enumerate()
            .map(|(index, (bind, addr))| BindRoutes {
                id: BindId::of(bind),
                router: Router::new(
                    bind,
                    |forward| {
                        let id = (forward.pool.name.clone(), forward.settings.name.clone());
                        upstreams
                            .get(&id)
                            .cloned()
                            .expect("resolve_upstreams made an upstream for every forward")
                    },
                    |listener| ports.get(listener).copied(),
                ),
                protocol: bind.protocol,
                port: addr.port(),
                acceptor: acceptors.get(index).cloned().flatten(),
            })
            .collect();
        Self {
            config: config.clone(),
            binds,
        }
    }

    /// The routes of bind `id`; `None` once a reload removed it.
    pub fn bind(&self, id: &BindId) -> Option<&BindRoutes> {
        // A handful of binds: a scan is as quick as a map.
        self.binds.iter().find(|bind| bind.id == *id)
    }
}

/// Every pool + settings a rule of `config` forwards to (with repeats).
pub fn forwards(config: &Config) -> Vec<&Forward> {
    let mut found = Vec::new();
    for site in config.binds.iter().flat_map(|bind| &bind.sites) {
        match &site.rule.action {
            RuleAction::Basic(forward) => found.push(forward),
            RuleAction::PathBased {
                path_rules,
                default,
            } => {
                for route in path_rules.iter().map(|rule| &rule.route).chain([default]) {
                    if let Route::Forward(forward) = route {
                        found.push(forward);
                    }
                }
            }
            RuleAction::Redirect(_) => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::route::{Decision, RequestView};

    const CONFIG: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"

[[listeners]]
name = "plain"
bind = "127.0.0.1:0"
protocol = "http"

[[backend_pools]]
name = "p"
addresses = ["10.0.0.1", "10.0.0.2:9000"]

[[backend_settings]]
name = "a"
port = 8080
protocol = "http"

[[backend_settings]]
name = "b"
port = 8081
protocol = "http"
tunnel_idle_timeout_secs = 7

[[rules]]
name = "paths"
kind = "path_based"
listener = "web"
default_backend_pool = "p"
default_backend_settings = "a"

[[rules.path_rules]]
name = "ws"
paths = ["/ws"]
backend_pool = "p"
backend_settings = "b"

[[rules.path_rules]]
name = "also-a"
paths = ["/a/*"]
backend_pool = "p"
backend_settings = "a"

[[rules]]
name = "to-web"
kind = "redirect"
listener = "plain"
redirect = { target_listener = "web" }
"#;

    #[tokio::test]
    async fn one_upstream_per_pool_and_settings_with_the_settings_port() {
        let config = crate::config::from_toml(CONFIG, "t.toml", Path::new(".")).expect("valid");
        let key = AffinityKey::from_bytes([0; 32]);
        let tls = load_tls(&config).expect("no TLS in this configuration");
        let upstreams = resolve_upstreams(&config, &key, &tls, &Health::new())
            .await
            .expect("IPs resolve");
        assert_eq!(upstreams.len(), 2, "p/a is used twice but made once");
        let addrs = |settings: &str| -> Vec<String> {
            upstreams[&("p".to_owned(), settings.to_owned())]
                .backends()
                .iter()
                .map(|b| b.addr.to_string())
                .collect()
        };
        assert_eq!(addrs("a"), ["10.0.0.1:8080", "10.0.0.2:9000"]);
        assert_eq!(addrs("b"), ["10.0.0.1:8081", "10.0.0.2:9000"]);
        let b = &upstreams[&("p".to_owned(), "b".to_owned())];
        assert_eq!(b.tunnel.idle_timeout, std::time::Duration::from_secs(7));

        let bound: Vec<SocketAddr> = ["127.0.0.1:40001", "127.0.0.1:40002"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let snapshot = Snapshot::new(Arc::new(config), &upstreams, &bound, &tls.acceptors);
        assert!(snapshot.binds.iter().all(|bind| bind.acceptor.is_none()));
        assert_eq!(snapshot.binds[0].port, 40001);
        // Both binds are written `127.0.0.1:0`: their listener tells them apart.
        let plain = BindId {
            addr: "127.0.0.1:0".parse().expect("addr"),
            listener: Some(Arc::from("plain")),
        };
        assert_eq!(plain.to_string(), "127.0.0.1:0 (listener plain)");
        assert_eq!(snapshot.bind(&plain).map(|bind| bind.port), Some(40002));
        assert!(snapshot
            .bind(&BindId {
                listener: None,
                ..plain
            })
            .is_none());
        let view = |path| RequestView {
            host: Some("x.test"),
            path,
            query: None,
        };
        match snapshot.binds[0].router.route(view("/ws")) {
            Decision::Forward { target, .. } => assert!(Arc::ptr_eq(target, b)),
            other => panic!("{other:?}"),
        }
        // A redirect to a listener bound on port 0 names the port it got.
        match snapshot.binds[1].router.route(view("/x")) {
            Decision::Redirect { location, .. } => assert_eq!(location, "http://x.test:40001/x"),
            other => panic!("{other:?}"),
        }
    }
}
