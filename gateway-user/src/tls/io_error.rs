//! Telling apart the `io::Error`s tokio-rustls returns from a handshake: a rustls error
//! wrapped as `InvalidData`, the peer going away, or a socket error.

use std::io;

/// What went wrong under an `io::Error` from a TLS handshake.
pub enum Cause {
    /// rustls refused the handshake (a bad message, an alert, a certificate).
    Tls(rustls::Error),
    /// The peer closed or reset the connection before the handshake finished.
    PeerClosed(io::Error),
    Io(io::Error),
}

pub fn classify(error: io::Error) -> Cause {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        let kind = error.kind();
        // Always `Some(Ok(..))` after the check above; the other arms keep what there is.
        return match error
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls)) => Cause::Tls(*tls),
            Some(Err(inner)) => Cause::Io(io::Error::new(kind, inner)),
            None => Cause::Io(kind.into()),
        };
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Cause::PeerClosed(error),
        _ => Cause::Io(error),
    }
}
