//! The answer to a connection refused as it is accepted: on a plaintext listener a fixed
//! `503` with `Retry-After`, written straight to the socket, then a close; on an https
//! listener a close at once. Nothing of the request is parsed: a refusal must cost less
//! than serving, or a flood would buy the work it is refused. A TLS handshake to say `503`
//! would be the dearest thing the gateway does per connection, so an https client over a
//! limit sees its connection closed at once. (HAProxy at `maxconn` stops accepting and
//! leaves connections in the kernel's queue; nginx's `limit_conn` answers only once the TLS
//! handshake and the request head are done, the very work a flood wants.)

use std::{io::Read as _, net::Shutdown};

use socket2::SockRef;
use tokio::net::TcpStream;

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

/// Refuses `stream`: the fixed `503` when `plaintext`, then closes it. The socket is
/// non-blocking and its send buffer empty, so one `send` takes the whole answer or the
/// client is gone; what the client already sent is read and dropped (a few KiB at most) so
/// the close is a FIN, not a reset that could destroy the answer before it is read.
pub fn refuse(stream: TcpStream, why: Refused, plaintext: bool) {
    let socket = SockRef::from(&stream);
    if plaintext {
        let _ = socket.send(why.response());
        let _ = socket.shutdown(Shutdown::Write);
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            match (&*socket).read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
    drop(stream);
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
