//! A connection that is either a plain TCP socket or TLS over one, so the proxy and the
//! tunnel handle both alike and can still ask which it is: only two plaintext sockets can
//! be spliced in the kernel.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// A client's connection: plain for an `http` bind, TLS for an `https` one.
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// A connection to a backend: plain for `http` backend settings, TLS for `https` ones.
pub type BackendStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// Plain TCP, or a TLS stream `T` over TCP (boxed: a TLS session is large, a socket small).
#[derive(Debug)]
pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// A TLS stream over a `TcpStream`: the two tokio-rustls streams.
pub trait TlsOverTcp: AsyncRead + AsyncWrite + Unpin + sealed::Sealed {
    /// The socket under the TLS session.
    fn tcp(&self) -> &TcpStream;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}
    impl Sealed for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {}
}

impl TlsOverTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl TlsOverTcp for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl<T: TlsOverTcp> MaybeTls<T> {
    /// Whether the bytes on the wire are the application's own. A tunnel is spliced only
    /// when both of its streams are plaintext.
    pub fn is_plaintext(&self) -> bool {
        matches!(self, Self::Plain(_))
    }

    /// The socket, for socket options, addresses, and a reset; never read or write it
    /// directly under TLS.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.tcp(),
        }
    }

    /// The socket of a plaintext stream, to be spliced; a TLS stream is handed back.
    pub fn into_plain(self) -> Result<TcpStream, Self> {
        match self {
            Self::Plain(tcp) => Ok(tcp),
            tls @ Self::Tls(_) => Err(tls),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    /// Under TLS: `close_notify`, then a FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
