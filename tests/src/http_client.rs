//! Clients for routed traffic: a keep-alive HTTP/1.1 connection that writes requests by
//! hand (any `Host`, any header), and WebSocket clients that choose the `Host` and send a
//! cookie; over plain TCP or TLS (see [`crate::tls`]).

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use rand::RngCore;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_tungstenite::{
    tungstenite::{
        client::IntoClientRequest as _,
        handshake::client::Response,
        http::{header, HeaderValue},
        Message,
    },
    WebSocketStream,
};

use crate::{
    data::{random_bytes, Hasher, Summary},
    http::{self, Head},
};

/// An answer: its head and its whole body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn status(&self) -> Option<u16> {
        self.head.status()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn text(&self) -> String {
        format!(
            "{}{}",
            self.head.text(),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// One client connection, reused for several requests.
pub struct KeepAlive<S = TcpStream> {
    stream: S,
}

impl KeepAlive<TcpStream> {
    pub async fn connect(gateway: SocketAddr) -> Self {
        let stream = TcpStream::connect(gateway)
            .await
            .expect("connect to the gateway");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Self { stream }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> KeepAlive<S> {
    /// Requests on an open connection, e.g. a TLS one.
    pub fn over(stream: S) -> Self {
        Self { stream }
    }

    /// The connection, e.g. to look at its TLS session.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends `METHOD path HTTP/1.1` with `Host: host`, `headers` and `body` (with its
    /// `Content-Length` when not empty), and reads the answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await
    }

    /// Writes `request` as is and reads the answer.
    pub async fn send_raw(&mut self, request: &[u8]) -> Reply {
        self.stream
            .write_all(request)
            .await
            .expect("send the request");
        let (head, leftover) = http::read_head(&mut self.stream)
            .await
            .expect("read the answer head");
        let body = http::read_body(&mut self.stream, &head, leftover)
            .await
            .expect("read the answer body");
        Reply { head, body }
    }
}

/// `GET /loop` (`Host: x.test`) on a fresh connection to `addr`, closed after the answer;
/// returns its status, and every failure rather than panicking.
pub async fn try_get(addr: SocketAddr) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /loop HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let (head, leftover) = http::read_head(&mut stream)
        .await
        .map_err(|e| format!("read the head: {e}"))?;
    http::read_body(&mut stream, &head, leftover)
        .await
        .map_err(|e| format!("read the body: {e}"))?;
    head.status().ok_or_else(|| "no status".to_owned())
}

/// Opens a WebSocket through `gateway` with `Host: host`, and `Cookie: cookie` if given;
/// tungstenite checks the `101`. Returns the socket and the `101`.
pub async fn ws_connect_as(
    gateway: SocketAddr,
    host: &str,
    path: &str,
    cookie: Option<&str>,
) -> (WebSocketStream<TcpStream>, Response) {
    let stream = TcpStream::connect(gateway)
        .await
        .expect("connect to the gateway");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    let cookie = cookie.map(|cookie| ("Cookie", cookie));
    ws_upgrade(stream, host, path, cookie.as_slice()).await
}

/// Opens a WebSocket over `stream` (plain or TLS) with `Host: host` and `headers`;
/// tungstenite checks the `101`. Returns the socket and the `101`.
pub async fn ws_upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    path: &str,
    headers: &[(&'static str, &str)],
) -> (WebSocketStream<S>, Response) {
    let mut request = format!("ws://{host}{path}")
        .into_client_request()
        .expect("build the WebSocket request");
    let request_headers = request.headers_mut();
    request_headers.insert(
        header::HOST,
        HeaderValue::from_str(host).expect("a valid Host"),
    );
    for (name, value) in headers {
        request_headers.insert(
            *name,
            HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap_or_else(|error| panic!("WebSocket upgrade to {host}{path}: {error}"));
    (ws, response)
}

/// Sends `len` random bytes in messages of at most 64 KiB while reading the echoes, then
/// closes; returns (sent, received) summaries.
pub async fn ws_echo_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    rng: &mut impl RngCore,
    len: usize,
) -> (Summary, Summary) {
    const MESSAGE_BYTES: usize = 64 * 1024;
    let (mut sink, mut stream) = ws.split();
    let messages: Vec<Vec<u8>> = (0..len.div_ceil(MESSAGE_BYTES))
        .map(|i| random_bytes(rng, MESSAGE_BYTES.min(len - i * MESSAGE_BYTES)))
        .collect();
    let sender = async move {
        let mut sent = Hasher::default();
        for message in messages {
            sent.update(&message);
            sink.send(Message::Binary(message.into()))
                .await
                .expect("send a message");
        }
        sink.send(Message::Close(None)).await.expect("send Close");
        sent.finish()
    };
    let receiver = async move {
        let mut received = Hasher::default();
        loop {
            match stream.next().await {
                Some(Ok(Message::Binary(bytes))) => received.update(&bytes),
                Some(Ok(Message::Close(_))) | None => break received.finish(),
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(error)) => panic!("read an echoed message: {error}"),
            }
        }
    };
    tokio::join!(sender, receiver)
}

/// The `name=value` of a `Set-Cookie` for `name` among `values`, if any.
pub fn cookie_pair<'a>(values: impl IntoIterator<Item = &'a str>, name: &str) -> Option<String> {
    values.into_iter().find_map(|value| {
        let pair = value.split(';').next()?.trim();
        pair.strip_prefix(name)
            .filter(|rest| rest.starts_with('='))
            .map(|_| pair.to_owned())
    })
}
