//! Clients of the gateway: a tokio-tungstenite WebSocket client, and raw TCP upgrades written
//! by hand so a test controls every byte and every write.

use std::{future::Future, net::SocketAddr};

use rand::RngCore;
use tokio::{
    io::AsyncWriteExt as _,
    net::{tcp::WriteHalf, TcpStream},
};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest as _, protocol::WebSocketConfig},
    WebSocketStream,
};

use crate::{
    data::Summary,
    exchange,
    http::{self, Head},
    tunnels::GO,
};

/// Connects a WebSocket client to `gateway` through its upgrade; tungstenite checks the 101
/// and its `Sec-WebSocket-Accept`.
pub async fn ws_connect(gateway: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(gateway)
        .await
        .expect("connect to the gateway");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    let request = format!("ws://{gateway}{path}")
        .into_client_request()
        .expect("build the WebSocket request");
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(16 << 20));
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .expect("WebSocket upgrade through the gateway");
    assert_eq!(response.status().as_u16(), 101, "upgrade status");
    ws
}

/// A tunnel opened by hand.
pub struct RawTunnel {
    pub stream: TcpStream,
    /// The 101 head the client received.
    pub response: Head,
    /// Bytes received after the 101 head in the same reads.
    pub leftover: Vec<u8>,
}

impl RawTunnel {
    /// Reads to the backend's EOF; returns the summary of everything after the 101 head
    /// (`leftover` first).
    pub async fn read_to_eof(&mut self) -> Summary {
        exchange::read_to_eof(&mut self.stream, &self.leftover, "client").await
    }

    /// Sends [`GO`]: the tunnel has opened and the backend may send.
    pub async fn send_go(&mut self) {
        self.stream
            .write_all(&[GO])
            .await
            .expect("client sends the go byte");
    }

    /// Sends `len` random bytes from `rng`, then half-closes; returns their summary.
    pub async fn send_random_then_half_close(
        &mut self,
        rng: &mut impl RngCore,
        len: u64,
    ) -> Summary {
        exchange::send_random_then_half_close(&mut self.stream, rng, len, "client").await
    }

    /// Sends `len` random bytes from `rng`, half-closes, then reads to the backend's EOF;
    /// returns (sent, received).
    pub async fn send_random_then_read_to_eof(
        &mut self,
        rng: &mut impl RngCore,
        len: u64,
    ) -> (Summary, Summary) {
        let sent = self.send_random_then_half_close(rng, len).await;
        (sent, self.read_to_eof().await)
    }

    /// Runs `send` on the write half while reading to the backend's EOF (`leftover` first);
    /// returns what `send` returned and the summary of what was read.
    pub async fn while_reading_to_eof<T>(
        &mut self,
        send: impl AsyncFnOnce(&mut WriteHalf<'_>) -> T,
    ) -> (T, Summary) {
        exchange::while_reading_to_eof(&mut self.stream, &self.leftover, "client", send).await
    }

    /// Sends `len` random bytes from `rng` and, once `before_close` is done, half-closes, all
    /// while reading to the backend's EOF (`leftover` first); returns (sent, received).
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
            "client",
        )
        .await
    }
}

/// Sends an upgrade for `path` to `gateway`, with `early` payload bytes in the same write
/// (before any answer), and reads the answer; panics unless it is a correct 101.
pub async fn raw_upgrade(gateway: SocketAddr, path: &str, early: &[u8]) -> RawTunnel {
    let mut stream = TcpStream::connect(gateway)
        .await
        .expect("connect to the gateway");
    let key = http::new_key();
    let mut request = http::upgrade_request(gateway, path, &key);
    request.extend_from_slice(early);
    stream
        .write_all(&request)
        .await
        .expect("send the upgrade request");
    let (response, leftover) = http::read_head(&mut stream)
        .await
        .expect("read the upgrade response");
    check_switching_protocols(&response, &key);
    RawTunnel {
        stream,
        response,
        leftover,
    }
}

/// Panics unless `response` is a `101` that accepts `key`.
pub fn check_switching_protocols(response: &Head, key: &str) {
    assert_eq!(
        response.status(),
        Some(101),
        "upgrade status; response:\n{}",
        response.text()
    );
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some(http::accept_key(key).as_str()),
        "Sec-WebSocket-Accept; response:\n{}",
        response.text()
    );
}

/// Sends `request` to `gateway` as is and returns the response head and body.
pub async fn raw_request(gateway: SocketAddr, request: &[u8]) -> (Head, Vec<u8>) {
    let mut stream = TcpStream::connect(gateway)
        .await
        .expect("connect to the gateway");
    stream.write_all(request).await.expect("send the request");
    let (head, leftover) = http::read_head(&mut stream)
        .await
        .expect("read the response head");
    let body = http::read_body(&mut stream, &head, leftover)
        .await
        .expect("read the response body");
    (head, body)
}
