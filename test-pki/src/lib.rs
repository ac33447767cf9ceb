//! Test certificates, made fresh in each test with rcgen: a certificate authority, server
//! certificates it signs (as PEM for configuration files and DER for rustls), and the
//! rustls pieces around them. Shared by the daemon's unit tests and the end-to-end tests.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion,
};

/// The one ALPN protocol the gateway speaks.
pub const HTTP11: &[u8] = b"http/1.1";

/// The `ring` provider, as the gateway uses (the workspace's rustls has no other).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate signed by a [`Ca`], with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    /// The CA certificate as PEM (a `trusted_ca` bundle).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `name` in `dir`.
    pub fn write(&self, dir: impl AsRef<Path>, name: &str) -> PathBuf {
        write(dir.as_ref(), name, &self.pem())
    }

    /// A server certificate for `names`: DNS names, `*.` wildcards or IP addresses.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let sans: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A root store with only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("add the CA");
        roots
    }

    /// A client trusting only this CA: TLS 1.2 and 1.3, ALPN `http/1.1`.
    pub fn client(&self) -> Arc<ClientConfig> {
        client_config(
            self.roots(),
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            &[HTTP11],
        )
    }
}

impl Leaf {
    /// Writes the certificate and key to `NAME.crt` and `NAME.key` in `dir`.
    pub fn write(&self, dir: impl AsRef<Path>, name: &str) -> (PathBuf, PathBuf) {
        let dir = dir.as_ref();
        (
            write(dir, &format!("{name}.crt"), &self.cert_pem),
            write(dir, &format!("{name}.key"), &self.key_pem),
        )
    }

    /// A TLS server presenting this certificate (a TLS backend), ALPN `http/1.1`.
    pub fn server(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::try_from(self.key_der.clone()).expect("a PKCS#8 key");
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("server versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("the key belongs to the certificate");
        config.alpn_protocols = vec![HTTP11.to_vec()];
        Arc::new(config)
    }
}

/// A client trusting `roots`, offering `versions` and the ALPN protocols `alpn`.
pub fn client_config(
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("client versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
