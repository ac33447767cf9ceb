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
//! # How it is wired
//!
//! 1. **At start, before anything is bound** (`generation::prepare`; later on each reload,
//!    as part of the immutable snapshot): [`Acceptor::new`] for every `https`
//!    [`Bind`](crate::config::model::Bind), [`client_config`] for every `https`
//!    [`BackendSettings`](crate::config::model::BackendSettings). Both read the PEM files
//!    and fail with an error naming the listener or settings and the file, carried by
//!    `StartError::TlsListener` / `StartError::TlsBackend`. The PEM files are read, and a
//!    listener's key checked against its certificate, by [`crate::config::pem`], which
//!    `gateway check` reports through too.
//! 2. **Accept loop, per bind** (`proxy::serve`): the loop only accepts and spawns; the
//!    per-connection task makes [`ClientStream::Plain`] of the socket for an `http` bind,
//!    or calls [`accept`] with the bind's [`Acceptor`] (from the snapshot) and the global
//!    handshake timeout and makes [`ClientStream::Tls`] of the result. (Never in the
//!    accept loop: one slow client would stall every other connect.) A failed handshake is
//!    logged and counted by [`TlsAcceptError::kind`]
//!    (`gateway_tls_handshake_failures_total`) and the connection dropped. The
//!    [`HandshakeInfo`]'s version and SNI go into the connection's span; its `site_index`
//!    is compared with the site the request's `Host` routes to, and a difference is logged
//!    at debug level: requests are routed by `Host`, as nginx does. hyper serves the
//!    stream as it serves a `TcpStream`, behind the smuggling guard.
//! 3. **Backend side** (`proxy::connect`): for `https` settings each backend has its
//!    [`backend_server_name`] (computed once per snapshot); after the TCP connect,
//!    [`connect`] runs under the same deadline and gives [`BackendStream::Tls`]. A failure
//!    is a 502 whose reason category is [`TlsConnectError::kind`]. Each `https` settings
//!    has its own pooled client, and its requests' URIs carry the server name, so pooled
//!    connections are keyed by backend address *and* server name.
//! 4. **Tunnel** (`tunnel::run`): `Upgraded` carries a [`ClientStream`] and a
//!    [`BackendStream`]. Two plaintext streams are spliced as before; otherwise the tunnel
//!    is relayed in userspace (this kernel has no kTLS, and the splice would move ciphertext
//!    between two different TLS sessions), with mode `userspace` and `relay_reason="tls"`.
//!    The relay copies through borrowed `AsyncRead` / `AsyncWrite` halves
//!    (`tokio::io::split` of `&mut` the TLS stream); [`MaybeTls::tcp`] still gives the
//!    socket for a reset (`SO_LINGER` 0) when one side fails. Bytes read early along with
//!    the handshake are plaintext either way and are written through the other side's
//!    stream. Half-close: shutting a TLS stream down sends `close_notify` then a FIN; a
//!    peer's `close_notify` reads as end of stream, and a FIN without it reads as an
//!    `UnexpectedEof` error, which the relay also takes as the end of that direction
//!    (WebSocket frames delimit themselves).

mod accept;
mod client;
mod io_error;
mod roots;
mod server;
mod sni;
mod stream;

#[cfg(test)]
mod tests;

use rustls::SupportedProtocolVersion;

pub use self::{
    accept::accept,
    client::{
        backend_server_name, client_config, connect, host_server_name, system_client_config,
        ClientConfigError, ServerNameError, TlsConnectError,
    },
    server::{Acceptor, ServerConfigError},
    stream::{BackendStream, ClientStream, MaybeTls, TlsOverTcp},
};
pub use rustls::{pki_types::ServerName, ClientConfig};

/// The TLS versions offered and accepted, newest first. TLS 1.1 and older (and SSLv3) are
/// not implemented by rustls at all; this list keeps both sides on 1.2 and 1.3.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one ALPN protocol offered and accepted.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
