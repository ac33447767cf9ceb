//! The answer to a connection refused as it is accepted: on a plaintext listener a fixed
//! `503` with `Retry-After`, written straight to the socket, then a close; on an https
//! listener a close at once. Nothing of the request is parsed: a refusal must cost less
//! than serving, or a flood would buy the work it is refused. A TLS handshake to say `503`
//! would be the dearest thing the gateway does per connection, so an https client over a
//! limit sees its connection closed at once. (HAProxy at `maxconn` stops accepting and
//! leaves connections in the kernel's queue; nginx's `limit_conn` answers only once the TLS
//! handshake and the request head are done, the very work a flood wants.)

use std::{io::Read as _, net::Shutdown, sync::Arc, time::Duration};

use socket2::SockRef;
use tokio::{io::AsyncReadExt as _, net::TcpStream, sync::Semaphore};

/// Why a connection was refused; the `reason` label of `gateway_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` client connections are open.
    GlobalLimit,
    /// `max_connections_per_ip` are open from this client.
    PerIpLimit,
    /// The process is out of descriptors: the connection was taken on the reserve one.
    NoDescriptors,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlobalLimit => "global_limit",
            Self::PerIpLimit => "per_ip_limit",
            Self::NoDescriptors => "no_descriptors",
        }
    }

    /// The whole answer, head and body. `Retry-After: 1`: a connection closes any moment,
    /// and a client that waits a second finds room or asks again.
    fn response(self) -> &'static [u8] {
        match self {
            Self::GlobalLimit | Self::NoDescriptors => {
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
                  Content-Type: text/plain; charset=utf-8\r\nContent-Length: 54\r\n\
                  Connection: close\r\n\r\n\
                  the gateway is at its connection limit; retry shortly\n"
            }
            Self::PerIpLimit => {
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
                  Content-Type: text/plain; charset=utf-8\r\nContent-Length: 61\r\n\
                  Connection: close\r\n\r\n\
                  too many connections from your address; close some and retry\n"
            }
        }
    }
}

/// Most refused connections that wait at once for their client's request before closing.
pub const LINGERING_MAX: usize = 256;
/// How long a refused connection waits for its client's request (nginx's `lingering_time`
/// is 30 s for bodies; this is for a request head the client is about to send).
const LINGER: Duration = Duration::from_secs(1);
/// What a refused connection reads and drops at most.
const DRAIN_BYTES: usize = 16 * 1024;

/// Refuses `stream`: the fixed `503` when `plaintext`, then closes it. The socket is
/// non-blocking and its send buffer empty, so one `send` takes the whole answer or the
/// client is gone. A close with unread bytes in the queue, or before the client's request
/// arrives, makes the kernel answer that request with a reset, which can destroy the `503`
/// before the client reads it; so, as nginx's lingering close, the connection waits (up to
/// [`LINGER`], [`LINGERING_MAX`] at once, with `linger`) for the client's request and drops
/// it before closing. Without `linger` (out of descriptors: one must be freed at once), or
/// with too many waiting, only what already arrived is dropped.
pub fn refuse(stream: TcpStream, why: Refused, plaintext: bool, linger: Option<&Arc<Semaphore>>) {
    if !plaintext {
        return;
    }
    let socket = SockRef::from(&stream);
    let _ = socket.send(why.response());
    let _ = socket.shutdown(Shutdown::Write);
    if let Some(permit) = linger.and_then(|l| l.clone().try_acquire_owned().ok()) {
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(LINGER, drain(stream)).await;
        });
        return;
    }
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match (&*socket).read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Reads and drops what the client sends, up to its end or [`DRAIN_BYTES`].
async fn drain(mut stream: TcpStream) {
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        match stream.read(&mut sink).await {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_is_a_whole_503_with_retry_after() {
        for why in [
            Refused::GlobalLimit,
            Refused::PerIpLimit,
            Refused::NoDescriptors,
        ] {
            let text = std::str::from_utf8(why.response()).expect("ASCII");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
            assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
            assert!(head.contains("\r\nRetry-After: 1\r\n"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("Content-Length: "))
                .expect("a Content-Length")
                .parse()
                .expect("a number");
            assert_eq!(length, body.len(), "{why:?}: {body:?}");
            assert!(!head.contains("  "), "no indentation leaked: {head:?}");
        }
    }
}
