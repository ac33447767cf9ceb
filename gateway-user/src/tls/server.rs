//! The TLS server of an HTTPS bind: its sites' certificates loaded and checked, and the
//! rustls `ServerConfig` that picks one of them by SNI.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use rustls::{sign::CertifiedKey, ServerConfig};

use super::{
    pem::{self, PemError},
    provider,
    sni::{SiteResolver, SiteSelector},
    ALPN_HTTP11, PROTOCOL_VERSIONS,
};
use crate::config::model::{Bind, Protocol, Site, TlsFiles};

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

/// Whether the private key of `files` belongs to its certificate (and both can be read):
/// what `gateway check` reports about a listener's files; [`Acceptor::new`] checks the same
/// when it loads them.
pub fn check_key_pair(listener: &str, files: &TlsFiles) -> Result<(), ServerConfigError> {
    load(listener, files).map(drop)
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

fn load(listener: &str, files: &TlsFiles) -> Result<Arc<CertifiedKey>, ServerConfigError> {
    let listener = || listener.to_owned();
    let pem_error = |source| ServerConfigError::Pem {
        listener: listener(),
        source,
    };
    let chain = pem::certificates(&files.certificate).map_err(pem_error)?;
    let key = pem::private_key(&files.private_key).map_err(pem_error)?;
    match CertifiedKey::from_der(chain, key, &provider()) {
        Ok(key) => Ok(Arc::new(key)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(ServerConfigError::KeyMismatch {
                listener: listener(),
                certificate: files.certificate.clone(),
                key: files.private_key.clone(),
            })
        }
        Err(source) => Err(ServerConfigError::Key {
            listener: listener(),
            certificate: files.certificate.clone(),
            key: files.private_key.clone(),
            source: Box::new(source),
        }),
    }
}
