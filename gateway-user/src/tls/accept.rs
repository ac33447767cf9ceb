//! The server handshake of one client connection, under a timeout, and what it settled.

use std::{io, time::Duration};

use rustls::{CipherSuite, ProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{
    io_error::{classify, Cause},
    Acceptor,
};

/// The most encrypted bytes a client's TLS session holds that its socket has not taken
/// (rustls's default is 64 KiB): one full record. A client that stops reading then costs
/// little more over TLS than in plaintext (see `proxy::outflow`); throughput is the same
/// (measured on loopback, 8–10 Gbit/s either way).
pub const SEND_BUFFER_BYTES: usize = 16 * 1024;

/// What a completed server handshake agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The client's SNI name; `None` when it sent none (e.g. it connected by IP address).
    pub sni: Option<String>,
    /// The negotiated ALPN protocol: `http/1.1`, or `None` when the client offered none.
    pub alpn: Option<Vec<u8>>,
    pub protocol_version: ProtocolVersion,
    pub cipher_suite: CipherSuite,
    /// The site whose certificate was presented: an index into `bind.sites`.
    pub site_index: usize,
}

impl HandshakeInfo {
    /// `TLSv1_3`, `TLSv1_2`: for logs and metric labels.
    pub fn version_label(&self) -> &'static str {
        self.protocol_version.as_str().unwrap_or("unknown")
    }

    /// E.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn suite_label(&self) -> &'static str {
        self.cipher_suite.as_str().unwrap_or("unknown")
    }
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TlsAcceptError {
    #[error("TLS handshake not complete within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("client closed the connection during the TLS handshake: {0}")]
    ClientClosed(#[source] io::Error),
    /// Not TLS, an unsupported version, no common suite or ALPN protocol, an alert.
    #[error("TLS handshake refused: {0}")]
    Protocol(#[source] rustls::Error),
    #[error("socket error during the TLS handshake: {0}")]
    Io(#[source] io::Error),
}

impl TlsAcceptError {
    /// A label for logs and metrics: `timeout`, `client_closed`, `protocol` or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::ClientClosed(_) => "client_closed",
            Self::Protocol(_) => "protocol",
            Self::Io(_) => "io",
        }
    }
}

/// Runs the server handshake on `tcp`; the client must complete it within
/// `handshake_timeout`, or the connection is dropped.
pub async fn accept(
    acceptor: &Acceptor,
    tcp: TcpStream,
    handshake_timeout: Duration,
) -> Result<(TlsStream<TcpStream>, HandshakeInfo), TlsAcceptError> {
    let handshake = tokio_rustls::TlsAcceptor::from(acceptor.config.clone()).accept(tcp);
    let stream = tokio::time::timeout(handshake_timeout, handshake)
        .await
        .map_err(|_| TlsAcceptError::Timeout(handshake_timeout))?
        .map_err(|error| match classify(error) {
            Cause::Tls(error) => TlsAcceptError::Protocol(error),
            Cause::PeerClosed(error) => TlsAcceptError::ClientClosed(error),
            Cause::Io(error) => TlsAcceptError::Io(error),
        })?;
    let mut stream = stream;
    stream.get_mut().1.set_buffer_limit(Some(SEND_BUFFER_BYTES));
    let (_, conn) = stream.get_ref();
    let sni = conn.server_name().map(str::to_owned);
    let info = HandshakeInfo {
        site_index: acceptor.selector.select(sni.as_deref()),
        sni,
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        // Both are known once the handshake is complete; `Unknown(0)` is never reported.
        protocol_version: conn
            .protocol_version()
            .unwrap_or(ProtocolVersion::Unknown(0)),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map_or(CipherSuite::Unknown(0), |suite| suite.suite()),
    };
    Ok((stream, info))
}
