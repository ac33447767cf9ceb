//! TLS for the end-to-end tests: a CA and certificates made with rcgen in each test (written
//! as PEM files for the gateway's configuration), rustls server configs for TLS backends,
//! and clients that trust the test CA (or, to look at whichever certificate the gateway
//! shows, anything).

use std::{io, net::SocketAddr, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

pub use test_pki::{client_config, provider, Ca, Leaf, HTTP11};

/// A TLS client connection (to the gateway).
pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A byte stream of either kind, plain or TLS, for helpers that take both.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// Plain TCP or TLS, boxed.
pub type AnyStream = Box<dyn Stream>;

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
