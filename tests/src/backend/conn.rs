//! [`RawConn`]: one connection of a [`super::RawBackend`], and the steps a backend closure
//! takes on it (answer the upgrade, echo, send, read), each panicking with a message that
//! says the backend failed and at which step.

use std::{future::Future, io};

use rand::RngCore;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    data::{self, Summary},
    exchange,
    http::{self, Head},
    tunnels::GO,
};

/// A connection accepted by a [`super::RawBackend`], its request head already read.
pub struct RawConn {
    pub stream: TcpStream,
    pub request: Head,
    /// Bytes that arrived after the request head in the same reads.
    pub leftover: Vec<u8>,
}

impl RawConn {
    /// A correct `101 Switching Protocols` for this request; panics if it is not an upgrade.
    pub fn switching_protocols(&self) -> Vec<u8> {
        assert_eq!(
            self.request.method(),
            "GET",
            "backend got a non-GET upgrade:\n{}",
            self.request.text()
        );
        let key = self.request.header("sec-websocket-key").unwrap_or_else(|| {
            panic!(
                "backend got a request without Sec-WebSocket-Key:\n{}",
                self.request.text()
            )
        });
        http::switching_protocols(key)
    }

    /// Answers the upgrade with [`Self::switching_protocols`], in a write of its own.
    pub async fn accept_upgrade(&mut self) {
        let response = self.switching_protocols();
        self.stream
            .write_all(&response)
            .await
            .expect("backend writes the 101");
    }

    /// Waits for the client's [`GO`], its first byte after the upgrade (nothing may come
    /// before it).
    pub async fn read_go(&mut self) {
        assert!(
            self.leftover.is_empty(),
            "backend got {} bytes along with the request head, before the go byte",
            self.leftover.len()
        );
        let mut go = [0];
        self.stream
            .read_exact(&mut go)
            .await
            .expect("backend reads the go byte");
        assert_eq!(go, [GO], "the client's first byte after the upgrade");
    }

    /// Answers a plain request with a `200 OK`, `Connection: close`, whose body is `body`.
    pub async fn answer_200(&mut self, body: &str) {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .write_all(response.as_bytes())
            .await
            .expect("backend answers");
    }

    /// Echoes every byte (`leftover` first) until the client's EOF, then half-closes;
    /// returns the summary of what it echoed.
    pub async fn echo_to_eof(&mut self) -> io::Result<Summary> {
        let (mut reader, mut writer) = self.stream.split();
        data::echo_to_eof(&mut reader, &mut writer, &self.leftover).await
    }

    /// Reads to the client's EOF; returns the summary of everything after the request head
    /// (`leftover` first).
    pub async fn read_to_eof(&mut self) -> Summary {
        exchange::read_to_eof(&mut self.stream, &self.leftover, "backend").await
    }

    /// Sends `len` random bytes from `rng`, then half-closes; returns their summary.
    pub async fn send_random_then_half_close(
        &mut self,
        rng: &mut impl RngCore,
        len: u64,
    ) -> Summary {
        exchange::send_random_then_half_close(&mut self.stream, rng, len, "backend").await
    }

    /// Sends `len` random bytes from `rng` and, once `before_close` is done, half-closes, all
    /// while reading to the client's EOF (`leftover` first); returns (sent, received).
    pub async fn send_random_while_reading(
        &mut self,
        rng: &mut impl RngCore,
        len: u64,
        before_close: impl Future,
    ) -> (Summary, Summary) {
        exchange::send_random_while_reading(
            &mut self.stream,
            &self.leftover,
            rng,
            len,
            before_close,
            "backend",
        )
        .await
    }
}
