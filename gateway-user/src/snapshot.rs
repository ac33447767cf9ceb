//! The configuration as the data path serves it: one immutable [`Snapshot`] with a router
//! (and, for https, a TLS server) per bind over the resolved upstreams its rules forward to.
//! The gateway holds the current one in an `ArcSwap` ([`crate::shared::Shared`]); each
//! connection and request reads it without a lock, and a new generation publishes a new one
//! whole (`crate::generation` loads certificates and resolves first, then builds the
//! snapshot, then swaps it in).

use std::{collections::HashMap, fmt, net::SocketAddr, sync::Arc};

use crate::{
    config::{Bind, Config, Protocol},
    route::Router,
    tls::Acceptor,
    upstream::Upstream,
};

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    /// In the order of `config.binds`.
    pub binds: Vec<BindRoutes>,
    /// The connection limits and upgrade rate of `config.global`, defaults resolved.
    pub admission: crate::admission::Limits,
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

/// The upstreams of a configuration, by pool and backend settings name.
pub type Upstreams = HashMap<(String, String), Arc<Upstream>>;

impl Snapshot {
    /// Builds the routers of `config` over `upstreams` (resolved from the same
    /// configuration by `generation::prepare`). `bound` is the address each bind of
    /// `config` listens on, in order; `acceptors` its TLS server, `None` for http.
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
                            .expect("generation::prepare made an upstream for every forward")
                    },
                    |listener| ports.get(listener).copied(),
                ),
                protocol: bind.protocol,
                port: addr.port(),
                acceptor: acceptors.get(index).cloned().flatten(),
            })
            .collect();
        Self {
            admission: crate::admission::Limits::of(&config.global),
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
