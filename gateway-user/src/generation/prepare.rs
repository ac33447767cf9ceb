//! Preparing a generation: everything a configuration needs before it can be served,
//! made without changing what is served. Its TLS files are loaded, its backend names
//! resolved, the sockets of its new binds opened, and its snapshot built; dropping a
//! [`Prepared`] undoes it all (the new sockets close).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::{
    diff::BindDiff,
    listeners::{self, Opened},
    StartError,
};
use crate::{
    config::{
        plan::{self, Plan},
        Config, Forward, Protocol, Route, RuleAction,
    },
    dataplane::splice::SpliceSettings,
    health::{Health, Staged},
    snapshot::{BindId, Snapshot, Upstreams},
    tls::{self, Acceptor, ClientConfig},
    tunnel,
    upstream::{affinity::AffinityKey, resolve, Upstream},
};

/// A configuration ready to be served: [`super::Served::commit`] makes it the one served.
pub struct Prepared {
    pub(super) config: Arc<Config>,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) upstreams: Upstreams,
    /// The address each bind of `config` listens on, in its order.
    pub(super) bound: Vec<SocketAddr>,
    /// Sockets of the binds not served yet, bound but not accepting.
    pub(super) opened: Vec<Opened>,
    pub(super) diff: BindDiff,
    /// The accept queue of every client listener (`[global] listen_backlog`, resolved).
    pub(super) backlog: u32,
}

impl Prepared {
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The address each bind listens on, in the configuration's order.
    pub fn bound(&self) -> &[SocketAddr] {
        &self.bound
    }
}

/// Prepares `config` to be served next to `served` (the binds served now and the address
/// each listens on; none at start): TLS, resolved upstreams (their backends' health staged
/// from `health`, so a backend that stays keeps its state; nothing is tracked until the
/// commit), the sockets of binds not served yet, and the snapshot; then logs the plan's
/// warnings. The first problem is the error, and nothing is left open.
pub async fn prepare(
    config: Config,
    key: &AffinityKey,
    health: &Health,
    served: &[(BindId, SocketAddr)],
) -> Result<Prepared, StartError> {
    let Plan { warnings } = plan::plan(&config);
    // Loaded and resolved before anything is bound, so a bad certificate or a name that
    // does not resolve binds nothing.
    let tls = load_tls(&config)?;
    let upstreams = resolve_upstreams(&config, key, &tls, &health.stage()).await?;

    let running: Vec<BindId> = served.iter().map(|(id, _)| id.clone()).collect();
    let wanted: Vec<BindId> = config.binds.iter().map(BindId::of).collect();
    let diff = BindDiff::new(&running, &wanted);
    // Every new socket before anything changes: a bind that fails leaves the running
    // configuration whole (and closes the sockets opened so far).
    let mut opened = Vec::new();
    let mut bound = Vec::new();
    let backlog = crate::admission::listen_backlog(config.global.listen_backlog);
    for (bind, id) in config.binds.iter().zip(&wanted) {
        match served.iter().find(|(served, _)| served == id) {
            Some((_, local)) => bound.push(*local),
            None => {
                let new = listeners::open(bind, backlog)?;
                bound.push(new.local);
                opened.push(new);
            }
        }
    }
    // Only once everything loaded, resolved and bound: a refused configuration reports its
    // failure, not advice.
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let config = Arc::new(config);
    let snapshot = Arc::new(Snapshot::new(
        config.clone(),
        &upstreams,
        &bound,
        &tls.acceptors,
    ));
    Ok(Prepared {
        config,
        snapshot,
        upstreams,
        bound,
        opened,
        diff,
        backlog,
    })
}

/// The TLS servers and clients of a configuration, read from their PEM files.
#[derive(Debug, Default)]
struct TlsSetup {
    /// One per bind, in the order of `config.binds`: `Some` for an `https` bind.
    acceptors: Vec<Option<Acceptor>>,
    /// The TLS client of each `https` backend settings, by name.
    clients: HashMap<String, Arc<ClientConfig>>,
}

/// Loads the certificate and key of every https listener (checking that they belong
/// together) and the trusted CAs of every https backend settings; the first problem is the
/// error, naming the listener or settings and the file.
fn load_tls(config: &Config) -> Result<TlsSetup, StartError> {
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

/// Resolves every pool a rule of `config` forwards to, once per backend settings it is
/// used with (a pool's addresses without a port take the settings' port); upstreams of
/// https settings get their TLS client from `tls` (from [`load_tls`] of the same
/// configuration).
async fn resolve_upstreams(
    config: &Config,
    key: &AffinityKey,
    tls: &TlsSetup,
    health: &Staged,
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
            promote: limits.promote,
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

/// Every pool + settings a rule of `config` forwards to (with repeats).
fn forwards(config: &Config) -> Vec<&Forward> {
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
    use crate::{
        route::{Decision, RequestView},
        snapshot::BindId,
    };

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
        let upstreams = resolve_upstreams(&config, &key, &tls, &Health::default().stage())
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
            routed_path: path,
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
