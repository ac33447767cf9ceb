//! Connecting to a backend: TCP, then for `https` backend settings the TLS handshake with
//! the backend's server name, both under [`BACKEND_CONNECT_TIMEOUT`]. Used by WebSocket
//! upgrades (a fresh connection each) and, through [`BackendConnector`], by the pooled
//! client for ordinary requests.
//!
//! The pooled client (hyper-util's legacy client) keys its pool by the request URI's scheme
//! and authority only, and hands the connector nothing but that URI. So the URI of a
//! request to an https backend carries the server name as its userinfo
//! (`https://api.internal@10.0.0.4:443/path`, see [`backend_uri`]): the pool is then keyed
//! by scheme, address *and* server name, and the connector reads the name back from it.
//! The userinfo never reaches the wire: requests go out in origin form with the `Host` the
//! backend settings chose.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{uri::PathAndQuery, Uri};
use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use tokio::net::TcpStream;

use crate::tls::{self, BackendStream, ClientConfig, ServerName, TlsConnectError};

/// A TCP connect to a backend, with its TLS handshake for https backends, taking longer
/// than this fails (`502`, "connect timeout"), even when the request timeout is longer: on
/// a local network a connect that slow means the backend is gone, while a slow answer may
/// be legitimate.
pub const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS side of a connection to an https backend.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    /// Verified against the backend's certificate, and sent as SNI for a DNS name.
    pub server_name: ServerName<'static>,
}

/// Why a backend connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connect: {0}")]
    Tcp(#[source] io::Error),
    #[error("connect (and TLS handshake) not done within {}s", BACKEND_CONNECT_TIMEOUT.as_secs())]
    Timeout,
    #[error(transparent)]
    Tls(#[from] TlsConnectError),
    /// A URI the gateway did not build (see [`backend_uri`]); not expected.
    #[error("no backend address in {0}")]
    Uri(String),
}

/// Connects to `addr`, with TLS when `tls` is given, under [`BACKEND_CONNECT_TIMEOUT`].
pub async fn connect(
    addr: SocketAddr,
    tls: Option<TlsTarget>,
) -> Result<BackendStream, ConnectError> {
    let connecting = async {
        let tcp = TcpStream::connect(addr).await.map_err(ConnectError::Tcp)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(BackendStream::Plain(tcp)),
            Some(TlsTarget {
                config,
                server_name,
            }) => {
                let stream = tls::connect(&config, server_name, tcp).await?;
                Ok(BackendStream::Tls(Box::new(stream)))
            }
        }
    };
    tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// The URI of a request to `addr` for the pooled client: `http://ADDR/path?query`, or for
/// an https backend `https://SERVER_NAME@ADDR/path?query` (the server name
/// percent-encoded where it is not a plain DNS name or IPv4 address).
pub fn backend_uri(
    addr: SocketAddr,
    server_name: Option<&ServerName<'_>>,
    path_and_query: Option<&PathAndQuery>,
) -> Uri {
    let path = path_and_query.map_or("/", PathAndQuery::as_str);
    let (scheme, authority) = match server_name {
        None => ("http", addr.to_string()),
        Some(name) => (
            "https",
            format!("{}@{addr}", encode_userinfo(&name.to_str())),
        ),
    };
    // An IP:PORT authority (with a percent-encoded userinfo) and a path that already parsed
    // as one build a valid URI.
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// Letters, digits, `.`, `-` and `_` as they are; every other byte as `%XX`.
fn encode_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode_userinfo(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The address and server name a [`backend_uri`] names.
fn target_of(uri: &Uri) -> Result<(SocketAddr, Option<ServerName<'static>>), ConnectError> {
    let bad = || ConnectError::Uri(uri.to_string());
    let authority = uri.authority().ok_or_else(bad)?.as_str();
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let addr = host_port.parse::<SocketAddr>().map_err(|_| bad())?;
    let server_name = match userinfo {
        None => None,
        Some(userinfo) => {
            let name = decode_userinfo(userinfo).ok_or_else(bad)?;
            Some(ServerName::try_from(name).map_err(|_| bad())?)
        }
    };
    Ok((addr, server_name))
}

/// The pooled client's connector: TCP to the URI's address, then, when it has a client
/// config (one connector per https backend settings), TLS with the URI's server name.
#[derive(Clone, Debug, Default)]
pub struct BackendConnector {
    tls: Option<Arc<ClientConfig>>,
}

impl BackendConnector {
    /// For `http` backends.
    pub fn plain() -> Self {
        Self { tls: None }
    }

    /// For the backends of one `https` backend settings.
    pub fn tls(config: Arc<ClientConfig>) -> Self {
        Self { tls: Some(config) }
    }
}

impl tower_service::Service<Uri> for BackendConnector {
    type Response = TokioIo<BackendStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.clone();
        Box::pin(async move {
            let (addr, server_name) = target_of(&uri)?;
            let tls = match (config, server_name) {
                (None, _) => None,
                (Some(config), Some(server_name)) => Some(TlsTarget {
                    config,
                    server_name,
                }),
                // An https connector is only handed URIs with a server name.
                (Some(_), None) => return Err(ConnectError::Uri(uri.to_string())),
            };
            connect(addr, tls).await.map(TokioIo::new)
        })
    }
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn the_uri_carries_address_and_server_name_and_gives_them_back() {
        let addr: SocketAddr = "10.0.0.4:8443".parse().expect("addr");
        let pq = PathAndQuery::from_static("/a?b=c");
        let names = [
            ServerName::try_from("api.internal").expect("dns"),
            ServerName::IpAddress("fd00::4".parse::<IpAddr>().expect("v6").into()),
            ServerName::IpAddress(IpAddr::from([10, 0, 0, 4]).into()),
        ];
        for name in names {
            let uri = backend_uri(addr, Some(&name), Some(&pq));
            assert_eq!(uri.scheme_str(), Some("https"));
            assert_eq!(
                uri.path_and_query().map(PathAndQuery::as_str),
                Some("/a?b=c")
            );
            let (got_addr, got_name) = target_of(&uri).expect("parses back");
            assert_eq!(got_addr, addr);
            assert_eq!(got_name, Some(name), "{uri}");
        }
        let v6: SocketAddr = "[::1]:80".parse().expect("addr");
        let plain = backend_uri(v6, None, None);
        assert_eq!(plain.to_string(), "http://[::1]:80/");
        assert_eq!(target_of(&plain).expect("parses back"), (v6, None));
    }

    #[test]
    fn plain_uris_carry_the_address_and_the_path() {
        let addr: SocketAddr = "[::1]:8080".parse().expect("addr");
        let pq = PathAndQuery::from_static("/a/b?c=d");
        assert_eq!(
            backend_uri(addr, None, Some(&pq)).to_string(),
            "http://[::1]:8080/a/b?c=d"
        );
        assert_eq!(
            backend_uri("10.0.0.1:80".parse().expect("addr"), None, None).to_string(),
            "http://10.0.0.1:80/"
        );
    }

    #[test]
    fn the_pool_tells_server_names_apart() {
        let addr: SocketAddr = "10.0.0.4:443".parse().expect("addr");
        let a = ServerName::try_from("a.internal").expect("dns");
        let b = ServerName::try_from("b.internal").expect("dns");
        assert_ne!(
            backend_uri(addr, Some(&a), None).authority(),
            backend_uri(addr, Some(&b), None).authority()
        );
    }
}
