//! Where forwarded requests go at run time: one [`Upstream`] per pool and backend settings
//! a rule uses, with the pool's resolved addresses, round-robin and cookie affinity.

pub mod affinity;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use http::{HeaderMap, HeaderValue};

use crate::{
    config::{BackendHost, BackendSettings, HostHeader},
    proxy::client::{self, HttpClient},
    tls::{self, ClientConfig, ServerName, ServerNameError},
    tunnel,
};
use affinity::AffinityKey;

/// One backend server of a pool, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// The backend chosen for one request.
#[derive(Debug)]
pub struct Pick<'u> {
    pub backend: &'u Backend,
    /// The affinity cookie to set on the response: affinity is on and the request did not
    /// carry a valid cookie for a backend of this pool.
    pub set_cookie: Option<HeaderValue>,
}

impl Upstream {
    /// `resolved`: each address with the host name it was written with; must not be
    /// empty (the configuration refuses empty pools, and resolving yields at least one
    /// address per entry).
    pub fn new(
        pool: &str,
        settings: Arc<BackendSettings>,
        resolved: Vec<(SocketAddr, String)>,
        key: &AffinityKey,
        tunnel: tunnel::Settings,
    ) -> Self {
        assert!(!resolved.is_empty(), "pool {pool:?} has no backend");
        let backends = resolved
            .into_iter()
            .map(|(addr, host_name)| Backend {
                addr,
                host_name,
                affinity_id: key.id(pool, addr),
                server_name: None,
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

    /// The backend for a request with `headers` on a listener that is https or not: the
    /// one its affinity cookie names, when affinity is on and that backend is in the pool;
    /// else the next one, round-robin.
    pub fn pick(&self, headers: &HeaderMap, https: bool) -> Pick<'_> {
        let Some(cookie) = &self.settings.affinity_cookie else {
            return Pick {
                backend: self.round_robin(),
                set_cookie: None,
            };
        };
        let pinned = affinity::cookie_values(headers, cookie)
            .find_map(|id| self.backends.iter().find(|b| b.affinity_id == id));
        match pinned {
            Some(backend) => Pick {
                backend,
                set_cookie: None,
            },
            None => {
                let backend = self.round_robin();
                Pick {
                    backend,
                    set_cookie: affinity::set_cookie(cookie, &backend.affinity_id, https),
                }
            }
        }
    }

    fn round_robin(&self) -> &Backend {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.backends[i % self.backends.len()]
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
