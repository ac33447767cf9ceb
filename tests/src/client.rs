//! Clients of the gateway: a tokio-tungstenite WebSocket client, and raw TCP upgrades written
//! by hand so a test controls every byte and every write.

use std::net::SocketAddr;

use tokio::{io::AsyncWriteExt as _, net::TcpStream};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest as _, protocol::WebSocketConfig},
    WebSocketStream,
};

use crate::http::{self, Head};

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
