//! Where forwarded requests go at run time: one [`Upstream`] per pool and backend settings
//! a rule uses, with the pool's resolved addresses, round-robin and cookie affinity.

pub mod affinity;
pub mod client;
pub mod connect;
pub mod resolve;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use http::{HeaderMap, HeaderValue};

use crate::{
    config::{BackendHost, BackendSettings, HostHeader, LoadBalancing},
    health::{BackendHealth, BackendKey, Lease, Staged},
    tls::{self, ClientConfig, ServerName, ServerNameError},
    tunnel,
    upstream::client::HttpClient,
};
use affinity::AffinityKey;

/// One backend server of a pool, resolved.
#[derive(Clone, Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    /// The pool address's host as written (`app.internal`, `10.0.0.4`, `[fd00::4]`): the
    /// `Host` sent with `pick_host_name_from_backend_address`.
    pub host_name: String,
    /// Its affinity cookie value.
    pub affinity_id: String,
    /// For `https` settings: the name its certificate is verified against, also sent as SNI
    /// (see [`tls::backend_server_name`]); `None` for `http`.
    pub server_name: Option<ServerName<'static>>,
    /// What probes and passive checks say about it; kept across reloads.
    pub health: Arc<BackendHealth>,
}

/// A pool under one backend settings.
#[derive(Debug)]
pub struct Upstream {
    pub pool: String,
    pub settings: Arc<BackendSettings>,
    /// Never empty.
    backends: Vec<Backend>,
    next: AtomicUsize,
    pub tunnel: tunnel::Settings,
    /// The TLS client of `https` settings; `None` for `http` ones.
    pub tls: Option<UpstreamTls>,
}

/// How the gateway talks TLS to the backends of an `https` settings.
#[derive(Debug)]
pub struct UpstreamTls {
    /// Trusts the settings' `trusted_ca`, or the system roots.
    pub config: Arc<ClientConfig>,
    /// Pooled keep-alive connections to these backends, for ordinary requests.
    pub client: HttpClient,
}

/// Every backend of the pool is down (failed its probes, or ejected by passive checks).
#[derive(Debug, thiserror::Error)]
#[error("no healthy backend in pool {pool:?} ({count} backends, all failing their health checks)")]
pub struct NoHealthyBackend {
    pub pool: String,
    pub count: usize,
}

/// The backend chosen for one request.
#[derive(Debug)]
pub struct Pick<'u> {
    pub backend: &'u Backend,
    /// Counts the request (and the tunnel it may become) on the backend while held.
    pub lease: Lease,
    /// The affinity cookie to set on the response: affinity is on and the request did not
    /// carry a valid cookie for a backend of this pool.
    pub set_cookie: Option<HeaderValue>,
}

impl Upstream {
    /// `resolved`: each address with the host name it was written with; must not be
    /// empty (the configuration refuses empty pools, and resolving yields at least one
    /// address per entry). Each backend's health comes from `health` (the one it had
    /// before a reload, when it was in the configuration already).
    pub fn new(
        pool: &str,
        settings: Arc<BackendSettings>,
        resolved: Vec<(SocketAddr, String)>,
        key: &AffinityKey,
        tunnel: tunnel::Settings,
        health: &Staged,
    ) -> Self {
        assert!(!resolved.is_empty(), "pool {pool:?} has no backend");
        let backends = resolved
            .into_iter()
            .map(|(addr, host_name)| Backend {
                addr,
                host_name,
                affinity_id: key.id(pool, addr),
                server_name: None,
                health: health.backend(BackendKey {
                    pool: pool.to_owned(),
                    settings: settings.name.clone(),
                    addr,
                }),
            })
            .collect();
        Self {
            pool: pool.to_owned(),
            settings,
            backends,
            next: AtomicUsize::new(0),
            tunnel,
            tls: None,
        }
    }

    /// Makes this an upstream of `https` settings that talks to its backends with `config`:
    /// names each backend's server name (the settings' Host override, else the pool
    /// address's host) and gives it a pooled client of its own.
    pub fn with_tls(mut self, config: Arc<ClientConfig>) -> Result<Self, ServerNameError> {
        for backend in &mut self.backends {
            let host = backend_host(&backend.host_name);
            backend.server_name = Some(tls::backend_server_name(&self.settings, &host)?);
        }
        self.tls = Some(UpstreamTls {
            client: client::new_tls(config.clone()),
            config,
        });
        Ok(self)
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend for a request with `headers` on a listener that is https or not,
    /// among those that take traffic (see [`BackendHealth::takes_traffic`]): the one its
    /// affinity cookie names, when affinity is on and that backend is in the pool and
    /// healthy; else one by the settings' `load_balancing` (and a new cookie for it).
    pub fn pick(&self, headers: &HeaderMap, https: bool) -> Result<Pick<'_>, NoHealthyBackend> {
        let Some(cookie) = &self.settings.affinity_cookie else {
            let backend = self.balance()?;
            return Ok(Pick {
                lease: backend.health.lease(),
                backend,
                set_cookie: None,
            });
        };
        let pinned = affinity::cookie_values(headers, cookie)
            .find_map(|id| self.backends.iter().find(|b| b.affinity_id == id))
            .filter(|backend| backend.health.takes_traffic());
        let (backend, set_cookie) = match pinned {
            Some(backend) => (backend, None),
            None => {
                let backend = self.balance()?;
                let cookie = affinity::set_cookie(cookie, &backend.affinity_id, https);
                (backend, cookie)
            }
        };
        Ok(Pick {
            lease: backend.health.lease(),
            backend,
            set_cookie,
        })
    }

    /// A backend that takes traffic, by the settings' `load_balancing`.
    fn balance(&self) -> Result<&Backend, NoHealthyBackend> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // In turn from `start`, skipping those that take no traffic.
        let candidates = (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .filter(|backend| backend.health.takes_traffic());
        let chosen = match self.settings.load_balancing {
            LoadBalancing::RoundRobin => candidates.into_iter().next(),
            // The first with the fewest (ties: in turn, as `min_by_key` keeps the first).
            LoadBalancing::LeastConnections => {
                candidates.min_by_key(|backend| backend.health.active())
            }
        };
        chosen.ok_or_else(|| NoHealthyBackend {
            pool: self.pool.clone(),
            count: n,
        })
    }

    /// The `Host` to send `backend`: the client's (`client_host`, as received), the
    /// settings' override, or the backend's host name.
    pub fn backend_host<'a>(
        &'a self,
        backend: &'a Backend,
        client_host: Option<&'a str>,
    ) -> Option<&'a str> {
        match &self.settings.host_header {
            HostHeader::Preserve => client_host,
            HostHeader::Override(host) => Some(host),
            HostHeader::FromBackendAddress => Some(&backend.host_name),
        }
    }
}

/// The pool address's host as [`ip_host`] or the configuration wrote it.
fn backend_host(host_name: &str) -> BackendHost {
    let bare = host_name
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host_name);
    match bare.parse::<IpAddr>() {
        Ok(ip) => BackendHost::Ip(ip),
        Err(_) => BackendHost::Name(host_name.to_owned()),
    }
}

/// How an IP is written as a host (IPv6 in brackets).
pub fn ip_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests;
