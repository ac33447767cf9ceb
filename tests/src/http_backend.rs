//! [`HttpBackend`]: a named HTTP/1.1 backend that reports who answered. It serves
//! keep-alive connections (counting connections and requests), records every request head
//! and the summary of its body, and answers:
//!
//! - an ordinary request with `200`, `X-Backend: NAME`, `X-Request-Body: SUMMARY` (what it
//!   received) and, when the request asks with `X-Reply-Bytes: N`, N random bytes whose
//!   summary is in `X-Reply-Body`; `X-Delay-Ms: N` makes it wait that long first;
//! - a WebSocket upgrade with a `101` (and `X-Backend`, and the first protocol the client
//!   offered in `Sec-WebSocket-Protocol`), then echoes every message and reports the
//!   summary of what it received when the connection ends.
//!
//! [`HttpBackend::start_tls`] serves the same over TLS (an https backend), recording the SNI
//! name each connection asked for.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
    sync::mpsc,
    task::JoinHandle,
};
use tokio_tungstenite::{
    tungstenite::{protocol::Role, Message},
    WebSocketStream,
};

use crate::{
    data::{random_bytes, Hasher, Summary},
    http::{self, Head},
    wait::within,
};

/// How long a test waits for the backend to report a finished WebSocket connection.
const RECORD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`backend_of`] waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `GET path` (`Host: x.test`) through the gateway at `gateway` on a fresh client
/// connection, expects a 200, and returns which [`HttpBackend`] answered (its `X-Backend`).
pub async fn backend_of(gateway: SocketAddr, path: &str) -> String {
    let mut client = crate::http_client::KeepAlive::connect(gateway).await;
    let reply = within(
        REQUEST_TIMEOUT,
        "a request through the gateway",
        client.send("GET", path, "x.test", &[("Connection", "close")], b""),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "GET {path}:\n{}", reply.text());
    reply
        .header("x-backend")
        .unwrap_or_else(|| panic!("no X-Backend:\n{}", reply.text()))
        .to_owned()
}

/// One request the backend received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which of its connections (0 for the first accepted) carried it.
    pub connection: usize,
    /// The SNI name of its TLS connection; `None` over plain TCP or without SNI.
    pub sni: Option<String>,
    pub head: Head,
    pub body: Summary,
}

/// What the backend saw on one WebSocket connection.
#[derive(Clone, Debug)]
pub struct WsRecord {
    /// The upgrade request.
    pub head: Head,
    /// Payloads of the data messages received (and echoed), concatenated.
    pub received: Summary,
    /// Why the connection ended other than by a close handshake, if it did.
    pub error: Option<String>,
}

pub struct HttpBackend {
    name: String,
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Behind a lock so tests can wait on `&self` while holding several backends.
    ws_records: tokio::sync::Mutex<mpsc::UnboundedReceiver<WsRecord>>,
    task: JoinHandle<()>,
}

impl HttpBackend {
    /// Listens on `127.0.0.1:0`; `name` comes back in `X-Backend`.
    pub async fn start(name: &str) -> Self {
        Self::listen(name, None).await
    }

    /// The same over TLS with `tls` (e.g. [`crate::tls::Leaf::server`]).
    pub async fn start_tls(name: &str, tls: Arc<ServerConfig>) -> Self {
        Self::listen(name, Some(tls)).await
    }

    async fn listen(name: &str, tls: Option<Arc<ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an HTTP backend on 127.0.0.1:0");
        let addr = listener.local_addr().expect("backend address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (records, ws_records) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(
            listener,
            tls,
            name.to_owned(),
            Arc::clone(&accepted),
            Arc::clone(&seen),
            records,
        ));
        Self {
            name: name.to_owned(),
            addr,
            accepted,
            seen,
            ws_records: tokio::sync::Mutex::new(ws_records),
            task,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Requests (upgrades included) received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    /// The record of the next WebSocket connection to end.
    pub async fn next_ws_record(&self) -> WsRecord {
        let mut records = self.ws_records.lock().await;
        within(
            RECORD_TIMEOUT,
            "the HTTP backend to finish a WebSocket connection",
            records.recv(),
        )
        .await
        .expect("HTTP backend is running")
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    name: String,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    records: mpsc::UnboundedSender<WsRecord>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let connection = accepted.fetch_add(1, Ordering::SeqCst);
        let (name, seen, records) = (name.clone(), Arc::clone(&seen), records.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let conn = Conn {
                connection,
                sni: None,
                name: &name,
                seen: &seen,
                records: &records,
            };
            match tls {
                None => serve(stream, conn).await,
                Some(tls) => {
                    // A failed handshake (e.g. the gateway refusing this certificate) just
                    // ends the connection: no request was seen.
                    let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(stream).await
                    else {
                        return;
                    };
                    let sni = stream.get_ref().1.server_name().map(str::to_owned);
                    serve(stream, Conn { sni, ..conn }).await;
                }
            }
        });
    }
}

/// One connection's context.
struct Conn<'a> {
    connection: usize,
    sni: Option<String>,
    name: &'a str,
    seen: &'a Mutex<Vec<Seen>>,
    records: &'a mpsc::UnboundedSender<WsRecord>,
}

/// Serves requests on one connection until it ends or turns into a WebSocket.
async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin, conn: Conn<'_>) {
    let Conn {
        connection,
        sni,
        name,
        seen,
        records,
    } = conn;
    let record = |head: &Head, body: Summary| {
        if let Ok(mut seen) = seen.lock() {
            seen.push(Seen {
                connection,
                sni: sni.clone(),
                head: head.clone(),
                body,
            });
        }
    };
    loop {
        let Ok((head, leftover)) = http::read_head(&mut stream).await else {
            return;
        };
        if head
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        {
            record(&head, Summary::of(&[]));
            let record = echo_websocket(stream, head, name).await;
            let _ = records.send(record);
            return;
        }
        let body = if head.header("content-length").is_some()
            || head.header("transfer-encoding").is_some()
        {
            match http::read_body(&mut stream, &head, leftover).await {
                Ok(body) => body,
                Err(_) => return,
            }
        } else {
            Vec::new()
        };
        record(&head, Summary::of(&body));
        if let Some(ms) = head.header("x-delay-ms").and_then(|v| v.parse().ok()) {
            // The delay is what the test asks for (a backend slower than the timeout).
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let reply_len: usize = head
            .header("x-reply-bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let reply = random_bytes(&mut rand::rng(), reply_len);
        let close = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\
             X-Request-Body: {}\r\nX-Reply-Body: {}\r\n{}\r\n",
            reply.len(),
            Summary::of(&body),
            Summary::of(&reply),
            if close { "Connection: close\r\n" } else { "" },
        );
        let mut bytes = response.into_bytes();
        bytes.extend_from_slice(&reply);
        if stream.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}

async fn echo_websocket(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    head: Head,
    name: &str,
) -> WsRecord {
    let key = head
        .header("sec-websocket-key")
        .unwrap_or_default()
        .to_owned();
    let mut answer = http::switching_protocols(&key);
    // Before the blank line that ends the head.
    answer.truncate(answer.len() - 2);
    if let Some(protocol) = head
        .header("sec-websocket-protocol")
        .and_then(|offered| offered.split(',').next())
    {
        answer.extend_from_slice(
            format!("Sec-WebSocket-Protocol: {}\r\n", protocol.trim()).as_bytes(),
        );
    }
    answer.extend_from_slice(format!("X-Backend: {name}\r\n\r\n").as_bytes());
    if let Err(error) = stream.write_all(&answer).await {
        return WsRecord {
            head,
            received: Summary::of(&[]),
            error: Some(format!("write the 101: {error}")),
        };
    }
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    let mut received = Hasher::default();
    let error = loop {
        let message = match ws.next().await {
            None => break None,
            Some(Err(error)) => break Some(format!("read: {error}")),
            Some(Ok(message)) => message,
        };
        let payload = match &message {
            Message::Binary(bytes) => bytes.as_ref(),
            Message::Text(text) => text.as_bytes(),
            // tungstenite answers pings and closes by itself on the next read/flush.
            _ => continue,
        };
        received.update(payload);
        if let Err(error) = ws.send(message).await {
            break Some(format!("write: {error}"));
        }
    };
    WsRecord {
        head,
        received: received.finish(),
        error,
    }
}
