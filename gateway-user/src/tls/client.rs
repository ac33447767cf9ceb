//! The TLS client towards HTTPS backends: one `ClientConfig` per backend settings, the name
//! a backend's certificate is verified against (and sent as SNI), and the handshake.

use std::{io, net::IpAddr, path::Path, sync::Arc};

use rustls::{pki_types::ServerName, CertificateError, ClientConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{
    io_error::{classify, Cause},
    roots::{self, RootsError},
    ALPN_HTTP11, PROTOCOL_VERSIONS,
};
use crate::config::{
    model::{BackendHost, BackendSettings, HostHeader, Protocol},
    pem::provider,
};

/// Why an HTTPS backend settings' TLS client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("backend settings {settings:?} are plain http: they have no TLS client")]
    NotHttps { settings: String },
    #[error("backend settings {settings:?}: {source}")]
    Roots {
        settings: String,
        #[source]
        source: RootsError,
    },
    #[error("backend settings {settings:?}: TLS client settings: {source}")]
    Settings {
        settings: String,
        #[source]
        source: rustls::Error,
    },
}

/// A host name that cannot name a backend's certificate. The configuration's validation
/// already refuses such names, so this is not expected in practice.
#[derive(Debug, thiserror::Error)]
#[error("{name:?} is neither a DNS name nor an IP address to verify a backend certificate for")]
pub struct ServerNameError {
    pub name: String,
}

/// Why the TLS handshake with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    /// Not issued by a trusted CA (or badly signed).
    #[error("backend certificate is not trusted: {0}")]
    UntrustedCertificate(CertificateError),
    /// Trusted, but not for the name asked for.
    #[error("backend certificate is not valid for the server name: {0}")]
    NameMismatch(CertificateError),
    /// Expired, not yet valid, revoked, for another purpose, malformed.
    #[error("backend certificate is not valid: {0}")]
    InvalidCertificate(CertificateError),
    #[error("backend closed the connection during the TLS handshake: {0}")]
    BackendClosed(#[source] io::Error),
    /// Not TLS, no common version, suite or ALPN protocol, or an alert from the backend.
    #[error("TLS handshake with the backend failed: {0}")]
    Protocol(#[source] rustls::Error),
    #[error("socket error during the TLS handshake with the backend: {0}")]
    Io(#[source] io::Error),
}

impl TlsConnectError {
    /// A label for logs, metrics and a 502's reason: `untrusted_certificate`,
    /// `name_mismatch`, `invalid_certificate`, `backend_closed`, `protocol` or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UntrustedCertificate(_) => "untrusted_certificate",
            Self::NameMismatch(_) => "name_mismatch",
            Self::InvalidCertificate(_) => "invalid_certificate",
            Self::BackendClosed(_) => "backend_closed",
            Self::Protocol(_) => "protocol",
            Self::Io(_) => "io",
        }
    }

    fn from_io(error: io::Error) -> Self {
        match classify(error) {
            Cause::Tls(rustls::Error::InvalidCertificate(error)) => Self::from_certificate(error),
            Cause::Tls(error) => Self::Protocol(error),
            Cause::PeerClosed(error) => Self::BackendClosed(error),
            Cause::Io(error) => Self::Io(error),
        }
    }

    fn from_certificate(error: CertificateError) -> Self {
        match error {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                Self::UntrustedCertificate(error)
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Self::NameMismatch(error)
            }
            _ => Self::InvalidCertificate(error),
        }
    }
}

/// The TLS client for the backends of `settings` (an `https` settings): TLS 1.2 and 1.3,
/// the `ring` provider's default suites, ALPN `http/1.1`, SNI on; certificates verified
/// against exactly the CAs of `trusted_ca` when set, else against the system's trust store
/// (an error when that has none).
pub fn client_config(settings: &BackendSettings) -> Result<Arc<ClientConfig>, ClientConfigError> {
    if settings.protocol != Protocol::Https {
        return Err(ClientConfigError::NotHttps {
            settings: settings.name.clone(),
        });
    }
    build(settings.trusted_ca.as_deref()).map_err(|error| match error {
        BuildError::Roots(source) => ClientConfigError::Roots {
            settings: settings.name.clone(),
            source,
        },
        BuildError::Settings(source) => ClientConfigError::Settings {
            settings: settings.name.clone(),
            source,
        },
    })
}

/// A TLS client trusting the system's roots: for https probes of http backend settings.
pub fn system_client_config() -> Result<Arc<ClientConfig>, String> {
    build(None).map_err(|error| match error {
        BuildError::Roots(e) => e.to_string(),
        BuildError::Settings(e) => e.to_string(),
    })
}

/// The server name for a host as written (`name`, `name:port`, an IP, `[v6]:port`).
pub fn host_server_name(host: &str) -> Result<ServerName<'static>, ServerNameError> {
    parse_host(host)
}

enum BuildError {
    Roots(RootsError),
    Settings(rustls::Error),
}

fn build(trusted_ca: Option<&Path>) -> Result<Arc<ClientConfig>, BuildError> {
    let roots = match trusted_ca {
        Some(path) => roots::bundle(path),
        None => roots::system(),
    }
    .map_err(BuildError::Roots)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(BuildError::Settings)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The name a backend's certificate must be valid for, which is also the SNI sent: the
/// settings' `host_header` when it overrides the Host (without its port), else the
/// backend's host as the pool lists it (with `pick_host_name_from_backend_address`, that
/// is also the Host sent). The client's own Host is never used: a client must not choose
/// which name the gateway verifies the backend against. For an IP address, no SNI is sent
/// (RFC 6066 allows only DNS names) and the certificate must carry that IP in its SANs.
pub fn backend_server_name(
    settings: &BackendSettings,
    backend: &BackendHost,
) -> Result<ServerName<'static>, ServerNameError> {
    match (&settings.host_header, backend) {
        (HostHeader::Override(host), _) => parse_host(host),
        (HostHeader::Preserve | HostHeader::FromBackendAddress, BackendHost::Ip(ip)) => {
            Ok(ServerName::IpAddress((*ip).into()))
        }
        (HostHeader::Preserve | HostHeader::FromBackendAddress, BackendHost::Name(name)) => {
            parse_host(name)
        }
    }
}

/// `name`, `name:port`, `IP`, `IPv4:port`, `[IPv6]` or `[IPv6]:port`, without the port.
fn parse_host(host: &str) -> Result<ServerName<'static>, ServerNameError> {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
            _ => host,
        }
    };
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_ascii_lowercase()).map_err(|_| ServerNameError {
        name: host.to_owned(),
    })
}

/// Runs the client handshake with a backend on `tcp`. No timeout of its own: run it under
/// the deadline the TCP connect had.
pub async fn connect(
    config: &Arc<ClientConfig>,
    server_name: ServerName<'static>,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, TlsConnectError> {
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(server_name, tcp)
        .await
        .map_err(TlsConnectError::from_io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_ips_stay_ips() {
        let name = |host: &str| parse_host(host).expect(host);
        assert_eq!(
            name("App.Example.com:8443"),
            ServerName::try_from("app.example.com").expect("dns")
        );
        assert_eq!(
            name("10.0.0.4:443"),
            ServerName::IpAddress(IpAddr::from([10, 0, 0, 4]).into())
        );
        let v6 = ServerName::IpAddress("fd00::4".parse::<IpAddr>().expect("v6").into());
        assert_eq!(name("[fd00::4]:443"), v6);
        assert_eq!(name("[fd00::4]"), v6);
        assert_eq!(name("fd00::4"), v6);
        assert!(parse_host("not a name").is_err());
    }
}
