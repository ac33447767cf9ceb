//! Why a request could not be forwarded, classified by cause: the status the client gets
//! and the one-line body it reads follow from the type. Bodies name the category, never
//! the backend's address (which the log line has).

use std::{error::Error as StdError, io, net::SocketAddr, time::Duration};

use http::StatusCode;

use crate::{body::BodyError, tls::TlsConnectError, upstream::connect::ConnectError};

/// What went wrong with the backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {backend}: {failure}: {detail}")]
    Connect {
        backend: SocketAddr,
        failure: ConnectFailure,
        detail: String,
    },
    #[error("backend {backend} did not answer in time ({which} {secs}s)", secs = .timeout.as_secs())]
    Timeout {
        backend: SocketAddr,
        /// `request timeout` (the settings') or `handshake timeout` (the gateway's),
        /// whichever is shorter.
        which: &'static str,
        timeout: Duration,
    },
    #[error("backend {backend}: {failure}: {detail}")]
    Exchange {
        backend: SocketAddr,
        failure: ExchangeFailure,
        detail: String,
    },
    #[error("backend {backend} answered the upgrade wrongly: {why}")]
    BadUpgrade {
        backend: SocketAddr,
        why: super::upgrade::BadSwitch,
    },
    /// The client's request body failed while it was passed on (malformed chunked framing,
    /// a reset mid-body): the client's fault, never counted against the backend.
    #[error("the client's request body failed: {detail}")]
    ClientBody { detail: String },
    /// The client's request body brought no byte for the body timeout while it was passed
    /// on: the client's fault (`408`, as nginx's `client_body_timeout`).
    #[error("no byte of the client's request body came for {}s", .timeout.as_secs())]
    ClientBodyTimeout { timeout: Duration },
    /// The TLS handshake with an https backend failed (e.g. its certificate is not trusted).
    #[error("backend {backend}: TLS handshake failed ({kind}): {detail}")]
    Tls {
        backend: SocketAddr,
        /// [`TlsConnectError::kind`], e.g. `untrusted_certificate`.
        kind: &'static str,
        detail: String,
    },
}

/// Why the TCP connect failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Reset,
    /// Anything else (unreachable network, no route, ...).
    Failed,
}

/// Why a connected backend gave no usable answer head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeFailure {
    /// The connection was reset.
    Reset,
    /// It closed before a complete answer head.
    Closed,
    /// It answered something that is not HTTP/1.1.
    Protocol,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Refused => "connect refused",
            Self::Timeout => "connect timeout",
            Self::Reset => "connect reset",
            Self::Failed => "connect failed",
        })
    }
}

impl std::fmt::Display for ExchangeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reset => "connection reset",
            Self::Closed => "connection closed before the answer",
            Self::Protocol => "protocol error",
        })
    }
}

impl BackendError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ClientBody { .. } => StatusCode::BAD_REQUEST,
            Self::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect { .. }
            | Self::Exchange { .. }
            | Self::BadUpgrade { .. }
            | Self::Tls { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether it says the backend itself is failing, so that passive health checking
    /// counts it: a connect that failed (refused, timed out, reset, unreachable) or a
    /// connection reset. A slow answer, a TLS or protocol mismatch, or a bad upgrade
    /// answer are not signs of a dead backend.
    pub fn backend_failing(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Exchange {
                    failure: ExchangeFailure::Reset,
                    ..
                }
        )
    }

    /// The one-line body for the client.
    pub fn client_message(&self) -> String {
        match self {
            Self::Connect { failure, .. } => format!("bad gateway: backend {failure}"),
            Self::Exchange { failure, .. } => format!("bad gateway: backend {failure}"),
            Self::Timeout { which, timeout, .. } => format!(
                "gateway timeout: the backend did not answer in time ({which} {}s)",
                timeout.as_secs()
            ),
            Self::BadUpgrade { why, .. } => {
                format!("bad gateway: the backend answered the upgrade wrongly: {why}")
            }
            Self::Tls { kind, .. } => format!("bad gateway: backend TLS handshake failed: {kind}"),
            Self::ClientBody { .. } => "bad request: the request body is malformed".to_owned(),
            Self::ClientBodyTimeout { timeout } => format!(
                "request timeout: no byte of the request body came for {}s",
                timeout.as_secs()
            ),
        }
    }

    /// Whether the connection closes after this answer: the rest of the client's body was
    /// not read, so nothing after it can be read as a next request.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Self::ClientBody { .. } | Self::ClientBodyTimeout { .. }
        )
    }

    /// The forward failed because the client's body did (see [`Self::ClientBody`] and
    /// [`Self::ClientBodyTimeout`]).
    pub fn client_body(error: &hyper_util::client::legacy::Error) -> Self {
        match find::<BodyError>(error) {
            Some(BodyError::Timeout(timeout)) => Self::ClientBodyTimeout { timeout: *timeout },
            _ => Self::ClientBody {
                detail: chain(error),
            },
        }
    }

    fn tls(backend: SocketAddr, error: &TlsConnectError) -> Self {
        Self::Tls {
            backend,
            kind: error.kind(),
            detail: error.to_string(),
        }
    }

    /// A failed connect (TCP, or the TLS handshake after it).
    pub fn from_connect(backend: SocketAddr, error: ConnectError) -> Self {
        match error {
            ConnectError::Tcp(error) => Self::connect(backend, &error),
            ConnectError::Timeout => Self::connect(
                backend,
                &io::Error::new(io::ErrorKind::TimedOut, error.to_string()),
            ),
            ConnectError::Tls(error) => Self::tls(backend, &error),
            ConnectError::Uri(_) => Self::Connect {
                backend,
                failure: ConnectFailure::Failed,
                detail: error.to_string(),
            },
        }
    }

    /// A failed TCP connect.
    pub fn connect(backend: SocketAddr, error: &io::Error) -> Self {
        let failure = match error.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::TimedOut => ConnectFailure::Timeout,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                ConnectFailure::Reset
            }
            _ => ConnectFailure::Failed,
        };
        Self::Connect {
            backend,
            failure,
            detail: error.to_string(),
        }
    }

    /// A hyper error on a connected backend.
    pub fn exchange(backend: SocketAddr, error: &hyper::Error) -> Self {
        let failure = match io_kind(error) {
            Some(
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe,
            ) => ExchangeFailure::Reset,
            _ if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() => {
                ExchangeFailure::Protocol
            }
            _ if error.is_incomplete_message() || error.is_canceled() || error.is_closed() => {
                ExchangeFailure::Closed
            }
            _ => ExchangeFailure::Protocol,
        };
        Self::Exchange {
            backend,
            failure,
            detail: chain(error),
        }
    }

    /// An error of the pooled client: a failed connect, or a hyper error.
    pub fn client(backend: SocketAddr, error: &hyper_util::client::legacy::Error) -> Self {
        match find::<ConnectError>(error) {
            Some(ConnectError::Tls(tls)) => return Self::tls(backend, tls),
            Some(ConnectError::Timeout) => {
                return Self::from_connect(backend, ConnectError::Timeout)
            }
            _ => {}
        }
        if error.is_connect() {
            let io = find::<io::Error>(error);
            let kind = io.map_or(io::ErrorKind::Other, io::Error::kind);
            return Self::connect(backend, &io::Error::new(kind, chain(error)));
        }
        match find::<hyper::Error>(error) {
            Some(hyper) => Self::exchange(backend, hyper),
            None => Self::Exchange {
                backend,
                failure: ExchangeFailure::Protocol,
                detail: chain(error),
            },
        }
    }
}

/// The first error of type `E` in `error`'s source chain (itself included).
fn find<'e, E: StdError + 'static>(error: &'e (dyn StdError + 'static)) -> Option<&'e E> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<E>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}

fn io_kind(error: &hyper::Error) -> Option<io::ErrorKind> {
    find::<io::Error>(error).map(io::Error::kind)
}

/// `error: cause: cause` on one line.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_classified_by_kind() {
        let backend: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let cases = [
            (io::ErrorKind::ConnectionRefused, "connect refused"),
            (io::ErrorKind::TimedOut, "connect timeout"),
            (io::ErrorKind::ConnectionReset, "connect reset"),
            (io::ErrorKind::HostUnreachable, "connect failed"),
        ];
        for (kind, category) in cases {
            let error = BackendError::connect(backend, &io::Error::new(kind, "x"));
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(
                error.client_message(),
                format!("bad gateway: backend {category}")
            );
            assert!(
                error.to_string().contains("127.0.0.1:9"),
                "the log names it"
            );
            assert!(
                !error.client_message().contains("127.0.0.1"),
                "the client does not"
            );
        }
    }

    #[test]
    fn failed_backend_tls_is_a_502_naming_its_kind() {
        let backend: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let tls = TlsConnectError::BackendClosed(io::ErrorKind::UnexpectedEof.into());
        let error = BackendError::from_connect(backend, ConnectError::Tls(tls));
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            error.client_message(),
            "bad gateway: backend TLS handshake failed: backend_closed"
        );
        assert!(
            error.to_string().contains("127.0.0.1:9"),
            "the log names it"
        );
        let slow = BackendError::from_connect(backend, ConnectError::Timeout);
        assert_eq!(
            slow.client_message(),
            "bad gateway: backend connect timeout"
        );
    }

    #[test]
    fn timeouts_are_504() {
        let error = BackendError::Timeout {
            backend: "127.0.0.1:9".parse().expect("addr"),
            which: "request timeout",
            timeout: Duration::from_secs(2),
        };
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(error
            .client_message()
            .contains("did not answer in time (request timeout 2s)"));
    }
}
