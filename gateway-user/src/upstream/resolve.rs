//! Backend addresses → socket addresses, once per configuration snapshot: IPs as they
//! are, DNS names to every address they resolve to.

use std::net::SocketAddr;

use super::ip_host;
use crate::config::{BackendAddress, BackendHost};

/// A backend pool's address that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("backend pool {pool:?}: cannot resolve {address}: {reason}")]
pub struct ResolveError {
    pub pool: String,
    pub address: String,
    pub reason: String,
}

/// Each address with the host it was written with (for `pick_host_name_from_backend_address`).
/// Addresses without a port take `default_port` (the backend settings').
pub async fn addresses(
    pool: &str,
    addresses: &[BackendAddress],
    default_port: u16,
) -> Result<Vec<(SocketAddr, String)>, ResolveError> {
    let mut resolved = Vec::new();
    for address in addresses {
        let failed = |reason: String| ResolveError {
            pool: pool.to_owned(),
            address: address.to_string(),
            reason,
        };
        let port = address.port.unwrap_or(default_port);
        match &address.host {
            BackendHost::Ip(ip) => resolved.push((SocketAddr::new(*ip, port), ip_host(*ip))),
            BackendHost::Name(name) => {
                let before = resolved.len();
                let found = tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|error| failed(error.to_string()))?;
                resolved.extend(found.map(|addr| (addr, name.clone())));
                if resolved.len() == before {
                    return Err(failed("the name has no addresses".to_owned()));
                }
            }
        }
    }
    Ok(resolved)
}
