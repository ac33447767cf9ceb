//! TLS for both sides of the gateway, with rustls: terminating HTTPS listeners (certificate
//! chosen by SNI among the sites of a bind) and connecting to HTTPS backends (verified
//! against the system roots or a configured CA bundle, with SNI).
//!
//! Policy, the same on both sides: TLS 1.2 and 1.3 only ([`PROTOCOL_VERSIONS`]), rustls'
//! default cipher suites of the `ring` provider (AEAD only: AES-GCM and ChaCha20-Poly1305,
//! ECDHE key exchange), and ALPN `http/1.1` only ([`ALPN_HTTP11`]). HTTP/2 is never
//! negotiated, so WebSocket over HTTP/2 (RFC 8441, extended CONNECT) stays off: such a
//! WebSocket is one stream among others of a multiplexed connection, which cannot be handed
//! to the kernel as a socket of its own, so it could never be spliced. A client that offers
//! only `h2` gets a `no_application_protocol` alert; one that offers `h2` and `http/1.1`
//! gets `http/1.1`; one that offers no ALPN at all is served as HTTP/1.1.
//!
//! The crypto provider is `ring`, passed explicitly to every config builder (never the
//! process-wide default), so a dependency that enables `aws-lc-rs` cannot change it and
//! no build needs cmake or nasm.
//!
//! # How it is meant to be wired
//!
//! Nothing outside this module uses it yet. The intended wiring:
//!
//! 1. **At start, before anything is bound** (and later on each reload, as part of the
//!    immutable snapshot): for every [`Bind`](crate::config::model::Bind) whose protocol is
//!    `https`, [`Acceptor::new`]; for every
//!    [`BackendSettings`](crate::config::model::BackendSettings) whose protocol is `https`,
//!    [`client_config`]. Both read the PEM files and fail with an error naming the listener
//!    or settings and the file (e.g. a key that does not match its certificate); a
//!    `StartError::Tls` variant would carry them. `gateway check` can call the same
//!    functions to report such problems without binding.
//! 2. **Accept loop, per bind**: the loop only accepts and spawns; the per-connection task
//!    then makes [`ClientStream::Plain`] of the socket for an `http` bind, or calls
//!    [`accept`] with the bind's [`Acceptor`] and the global handshake timeout and makes
//!    [`ClientStream::Tls`] of the result. (Never run the TLS handshake in the accept loop:
//!    one slow client would stall every other connect.) A failed handshake is logged and
//!    counted by [`TlsAcceptError::kind`] and the connection dropped. The
//!    [`HandshakeInfo`] goes into the connection's span (SNI, version, suite, ALPN) and its
//!    `site_index` (an index into `bind.sites`) lets the request path cross-check the site
//!    its `Host` routes to against the site whose certificate was shown (e.g. answer `421
//!    Misdirected Request` when they differ). hyper serves the stream as it serves a
//!    `TcpStream` (`TokioIo::new(stream)`), and `X-Forwarded-Proto` is `https` when
//!    `!stream.is_plaintext()`.
//! 3. **Handler, backend side**: after the TCP connect to the backend, when
//!    `settings.protocol` is `https`, call [`connect`] with the settings' [`ClientConfig`]
//!    and [`backend_server_name`]`(settings, &address.host)`, under the same backend
//!    deadline as the TCP connect ([`connect`] has no timeout of its own), and make
//!    [`BackendStream::Tls`] of it; otherwise [`BackendStream::Plain`]. A failure is a 502
//!    whose reason category is [`TlsConnectError::kind`]. Pooled connections must be keyed
//!    by backend address *and* server name.
//! 4. **Tunnel**: `Upgraded` carries a [`ClientStream`] and a [`BackendStream`] instead of
//!    two `TcpStream`s. When `client.is_plaintext() && backend.is_plaintext()`, take the
//!    sockets out with [`MaybeTls::into_plain`] and splice them as today; otherwise the
//!    tunnel is relayed in userspace (this kernel has no kTLS, and the splice would move
//!    ciphertext between two different TLS sessions), and the tunnel's mode in logs and
//!    metrics says so. The relay then copies between the streams through `AsyncRead` /
//!    `AsyncWrite` (`tokio::io::split`, as `TcpStream::split` exists only for sockets);
//!    [`MaybeTls::tcp`] still gives the socket for socket options, the peer address, and
//!    a reset (`SO_LINGER` 0) when one side fails. Bytes read early along with the
//!    handshake are plaintext either way and are written through the other side's stream.
//!    Half-close: shutting a TLS stream down sends `close_notify` then a FIN; a peer's
//!    `close_notify` reads as end of stream, while a FIN without it reads as an
//!    `UnexpectedEof` error (a truncation the relay should treat as the end of that
//!    direction, since WebSocket frames delimit themselves).

mod accept;
mod client;
mod io_error;
mod pem;
mod roots;
mod server;
mod sni;
mod stream;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use rustls::{crypto::CryptoProvider, SupportedProtocolVersion};

pub use self::{
    accept::{accept, HandshakeInfo, TlsAcceptError},
    client::{
        backend_server_name, client_config, connect, ClientConfigError, ServerNameError,
        TlsConnectError,
    },
    pem::PemError,
    roots::RootsError,
    server::{Acceptor, ServerConfigError},
    sni::SiteSelector,
    stream::{BackendStream, ClientStream, MaybeTls, TlsOverTcp},
};
pub use rustls::{pki_types::ServerName, ClientConfig, ServerConfig};

/// The TLS versions offered and accepted, newest first. TLS 1.1 and older (and SSLv3) are
/// not implemented by rustls at all; this list keeps both sides on 1.2 and 1.3.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one ALPN protocol offered and accepted.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The `ring` crypto provider with rustls' default suites and key exchange groups.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
