//! TLS for the end-to-end tests: a CA and certificates made with rcgen in each test (written
//! as PEM files for the gateway's configuration), rustls server configs for TLS backends,
//! and clients that trust the test CA (or, to look at whichever certificate the gateway
//! shows, anything).

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::oneshot::ScratchDir;

/// The one ALPN protocol the gateway speaks.
pub const HTTP11: &[u8] = b"http/1.1";

/// A TLS client connection (to the gateway).
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A byte stream of either kind, plain or TLS, for helpers that take both.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// Plain TCP or TLS, boxed.
pub type AnyStream = Box<dyn Stream>;

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
    chain: Vec<CertificateDer<'static>>,
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
    pub fn write(&self, dir: &ScratchDir, name: &str) -> PathBuf {
        dir.write(name, &self.pem())
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
            chain: vec![cert.der().clone()],
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
    pub fn write(&self, dir: &ScratchDir, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.write(&format!("{name}.crt"), &self.cert_pem),
            dir.write(&format!("{name}.key"), &self.key_pem),
        )
    }

    /// A TLS server presenting this certificate (a TLS backend), ALPN `http/1.1`.
    pub fn server(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::try_from(self.key_der.clone()).expect("a PKCS#8 key");
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("server versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
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

/// A client that accepts any certificate (still checking the handshake's signatures), to
/// see which one the gateway presents for a name it is not valid for.
pub fn any_certificate_client() -> Arc<ClientConfig> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("client versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP11.to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `name` as a server name: a DNS name (sent as SNI) or an IP address (no SNI).
pub fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap_or_else(|_| panic!("server name {name:?}"))
}

/// A TLS connection to `addr` with `config`, asking for `name` (SNI when a DNS name).
pub async fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(server_name(name), tcp)
        .await
}

/// The certificate the server presented (the leaf).
pub fn peer_certificate(stream: &ClientTls) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// Connects to `addr`: plain TCP, or TLS with `tls` = (client config, server name).
pub async fn connect_any(addr: SocketAddr, tls: Option<(&Arc<ClientConfig>, &str)>) -> AnyStream {
    match tls {
        None => {
            let tcp = TcpStream::connect(addr)
                .await
                .expect("connect to the gateway");
            tcp.set_nodelay(true).expect("set TCP_NODELAY");
            Box::new(tcp)
        }
        Some((config, name)) => Box::new(
            connect(addr, config, name)
                .await
                .unwrap_or_else(|error| panic!("TLS handshake with {addr} as {name}: {error}")),
        ),
    }
}
