//! The TLS server of an HTTPS bind: its sites' certificates loaded and checked, and the
//! rustls `ServerConfig` that picks one of them by SNI.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use rustls::{sign::CertifiedKey, ServerConfig};

use super::{
    sni::{SiteResolver, SiteSelector},
    ALPN_HTTP11, PROTOCOL_VERSIONS,
};
use crate::config::{
    model::{Bind, Protocol, Site, TlsFiles},
    pem::{self, provider, KeyPairError, PemError},
};

/// Why an HTTPS bind's TLS server cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerConfigError {
    #[error("bind {addr} is plain http: it has no TLS server")]
    NotHttps { addr: SocketAddr },
    #[error("bind {addr} has no listener")]
    NoSites { addr: SocketAddr },
    #[error("listener {listener:?} has no certificate and private key")]
    NoCertificate { listener: String },
    #[error("listener {listener:?}: {source}")]
    Pem {
        listener: String,
        #[source]
        source: PemError,
    },
    #[error(
        "listener {listener:?}: private key {} does not belong to certificate {}",
        key.display(), certificate.display()
    )]
    KeyMismatch {
        listener: String,
        certificate: PathBuf,
        key: PathBuf,
    },
    #[error(
        "listener {listener:?}: cannot use private key {} with certificate {}: {source}",
        key.display(), certificate.display()
    )]
    Key {
        listener: String,
        certificate: PathBuf,
        key: PathBuf,
        // Boxed: a rustls error is large, and this one is rare.
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("TLS server settings: {0}")]
    Settings(#[source] rustls::Error),
}

/// The TLS server of one HTTPS bind; cheap to clone, shared by its connections.
#[derive(Clone, Debug)]
pub struct Acceptor {
    pub(super) selector: SiteSelector,
    pub(super) config: Arc<ServerConfig>,
}

impl Acceptor {
    /// Loads the certificate and key of every site of `bind` (an `https` bind), checks
    /// that each key belongs to its certificate, and builds the server config: TLS 1.2 and
    /// 1.3, the `ring` provider's default suites, ALPN `http/1.1`, the certificate chosen
    /// by SNI as [`SiteSelector`] says.
    pub fn new(bind: &Bind) -> Result<Self, ServerConfigError> {
        if bind.protocol != Protocol::Https {
            return Err(ServerConfigError::NotHttps { addr: bind.addr });
        }
        if bind.sites.is_empty() {
            return Err(ServerConfigError::NoSites { addr: bind.addr });
        }
        let keys = bind
            .sites
            .iter()
            .map(certified_key)
            .collect::<Result<Vec<_>, _>>()?;
        let selector = SiteSelector::new(bind);
        let resolver = SiteResolver::new(selector.clone(), keys);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(ServerConfigError::Settings)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Self {
            selector,
            config: Arc::new(config),
        })
    }

    /// The rustls config, e.g. to inspect its ALPN list or provider.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// Which site (index into `bind.sites`) answers a handshake with this SNI name.
    pub fn site_for(&self, sni: Option<&str>) -> usize {
        self.selector.select(sni)
    }
}

fn certified_key(site: &Site) -> Result<Arc<CertifiedKey>, ServerConfigError> {
    let files = site
        .tls
        .as_ref()
        .ok_or_else(|| ServerConfigError::NoCertificate {
            listener: site.listener.clone(),
        })?;
    load(&site.listener, files)
}

/// The certificate and key of `files`, checked to belong together by
/// [`pem::certified_key`]; its errors name the listener here.
fn load(listener: &str, files: &TlsFiles) -> Result<Arc<CertifiedKey>, ServerConfigError> {
    pem::certified_key(files).map(Arc::new).map_err(|error| {
        let listener = listener.to_owned();
        match error {
            KeyPairError::Pem(source) => ServerConfigError::Pem { listener, source },
            KeyPairError::KeyMismatch { certificate, key } => ServerConfigError::KeyMismatch {
                listener,
                certificate,
                key,
            },
            KeyPairError::Key {
                certificate,
                key,
                source,
            } => ServerConfigError::Key {
                listener,
                certificate,
                key,
                source,
            },
        }
    })
}
