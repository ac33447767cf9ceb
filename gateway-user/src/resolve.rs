//! Backend addresses → socket addresses, once at start-up: IPs as they are, DNS names to
//! every address they resolve to.

use std::net::SocketAddr;

use crate::{
    config::{BackendAddress, BackendHost},
    StartError,
};

/// `addresses` all carry a port (the plan filled in the settings' port).
pub async fn addresses(
    pool: &str,
    addresses: &[BackendAddress],
) -> Result<Vec<SocketAddr>, StartError> {
    let mut resolved = Vec::new();
    for address in addresses {
        let failed = |reason: String| StartError::Resolve {
            pool: pool.to_owned(),
            address: address.to_string(),
            reason,
        };
        let port = address
            .port
            .ok_or_else(|| failed("no port (internal error: the plan sets one)".to_owned()))?;
        match &address.host {
            BackendHost::Ip(ip) => resolved.push(SocketAddr::new(*ip, port)),
            BackendHost::Name(name) => {
                let before = resolved.len();
                let found = tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|error| failed(error.to_string()))?;
                resolved.extend(found);
                if resolved.len() == before {
                    return Err(failed("the name has no addresses".to_owned()));
                }
            }
        }
    }
    Ok(resolved)
}
