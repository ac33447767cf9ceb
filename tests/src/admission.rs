//! Clients of the connection-limit tests: connections from a chosen loopback address
//! (127.0.0.0/8 is all local, so each address is another client to the per-client limits),
//! and the gateway's fixed refusal read to its end.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::AsyncReadExt as _,
    net::{TcpSocket, TcpStream},
};

use crate::{
    http::{self, Head},
    wait::within,
};

/// `127.0.0.N`.
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A TCP connection to `to` from `from` (port chosen by the kernel).
pub async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .unwrap_or_else(|error| panic!("bind {from}: {error}"));
    socket
        .connect(to)
        .await
        .unwrap_or_else(|error| panic!("connect from {from} to {to}: {error}"))
}

/// Reads `stream` until the gateway closes it (EOF, or a reset after its answer), within
/// `limit`; returns what came.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut all = Vec::new();
    within(limit, "the gateway closes the connection", async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => break,
                Err(error) => panic!("read the refusal: {error}"),
            }
        }
    })
    .await;
    all
}

/// Checks that `bytes` are the gateway's whole connection refusal: `503` with
/// `Retry-After: 1`, `Connection: close`, and a body holding `words`; returns the head.
pub fn expect_refusal(bytes: &[u8], words: &str) -> Head {
    let text = String::from_utf8_lossy(bytes);
    let end = http::head_end(bytes).unwrap_or_else(|| panic!("no whole head in {text:?}"));
    let head = Head::parse(&bytes[..end]).expect("parse the refusal's head");
    assert_eq!(head.status(), Some(503), "{text}");
    assert_eq!(head.header("retry-after"), Some("1"), "{text}");
    assert_eq!(head.header("connection"), Some("close"), "{text}");
    let body = String::from_utf8_lossy(&bytes[end..]);
    let length: usize = head
        .header("content-length")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {text}"));
    assert_eq!(body.len(), length, "the whole body, nothing after: {text}");
    assert!(body.contains(words), "{text}");
    head
}
