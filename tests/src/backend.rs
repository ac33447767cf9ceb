//! Backends the gateway forwards to, each on its own `127.0.0.1:0` listener:
//! - [`EchoBackend`]: a tokio-tungstenite WebSocket server that echoes every message and
//!   reports, per connection, the summary of what it received and sent back;
//! - [`RawBackend`]: a TCP server that reads the request head and hands the connection to a
//!   test-provided closure, which answers the upgrade by hand (see [`RawConn::accept_upgrade`])
//!   and reports a result.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{
    handshake::server::{Callback, ErrorResponse, Request, Response},
    Message,
};

use crate::{
    data::{Hasher, Summary},
    http::{self, Head},
    wait::within,
};

mod conn;

pub use conn::RawConn;

/// How long a test waits for a backend to report a finished connection.
const RESULT_TIMEOUT: Duration = Duration::from_secs(120);

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a backend on 127.0.0.1:0");
    let addr = listener.local_addr().expect("backend listener address");
    (listener, addr)
}

/// What the echo backend saw on one WebSocket connection.
#[derive(Clone, Debug)]
pub struct EchoRecord {
    /// `X-Forwarded-For` of the upgrade request.
    pub forwarded_for: Option<String>,
    /// Payloads of the data messages received, concatenated.
    pub received: Summary,
    /// Payloads of the data messages echoed, concatenated.
    pub echoed: Summary,
    /// Why the connection ended other than by a close handshake, if it did.
    pub error: Option<String>,
}

/// A WebSocket echo server.
pub struct EchoBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    records: mpsc::UnboundedReceiver<EchoRecord>,
    task: JoinHandle<()>,
}

impl EchoBackend {
    pub async fn start() -> Self {
        let (listener, addr) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, records) = mpsc::unbounded_channel();
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(echo(stream).await);
                });
            }
        });
        Self {
            addr,
            accepted,
            records,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The record of the next connection to finish.
    pub async fn next_record(&mut self) -> EchoRecord {
        within(
            RESULT_TIMEOUT,
            "the echo backend to finish a connection",
            self.records.recv(),
        )
        .await
        .expect("echo backend is running")
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(stream: TcpStream) -> EchoRecord {
    let forwarded_for = Arc::new(Mutex::new(None));
    let callback = RecordForwardedFor(Arc::clone(&forwarded_for));
    let mut received = Hasher::default();
    let mut echoed = Hasher::default();
    let error = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Err(error) => Some(format!("handshake: {error}")),
        Ok(mut ws) => loop {
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
            echoed.update(payload);
            if let Err(error) = ws.send(message).await {
                break Some(format!("write: {error}"));
            }
        },
    };
    let forwarded_for = forwarded_for.lock().ok().and_then(|seen| seen.clone());
    EchoRecord {
        forwarded_for,
        received: received.finish(),
        echoed: echoed.finish(),
        error,
    }
}

/// Handshake callback that keeps the request's `X-Forwarded-For`.
struct RecordForwardedFor(Arc<Mutex<Option<String>>>);

impl Callback for RecordForwardedFor {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        let value = request.headers().get("x-forwarded-for");
        if let Ok(mut seen) = self.0.lock() {
            *seen = value.map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        Ok(response)
    }
}

/// A TCP backend whose connections are handled by a closure returning a `T` per connection.
pub struct RawBackend<T> {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Head>>>,
    results: mpsc::UnboundedReceiver<Result<T, String>>,
    task: JoinHandle<()>,
}

impl<T: Send + 'static> RawBackend<T> {
    /// Serves every connection with `handler` once its request head is read.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(RawConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (listener, addr) = bind().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (tx, results) = mpsc::unbounded_channel();
        let (counter, seen) = (Arc::clone(&accepted), Arc::clone(&requests));
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let (tx, seen, handler) = (tx.clone(), Arc::clone(&seen), Arc::clone(&handler));
                tokio::spawn(async move {
                    let (request, leftover) = match http::read_head(&mut stream).await {
                        Ok(head) => head,
                        Err(error) => {
                            let _ = tx.send(Err(format!(
                                "backend could not read a request head: {error}"
                            )));
                            return;
                        }
                    };
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(request.clone());
                    }
                    // A panicking handler reports its message instead of a result.
                    let result = tokio::spawn(handler(RawConn {
                        stream,
                        request,
                        leftover,
                    }))
                    .await
                    .map_err(|error| format!("backend handler failed: {}", panic_message(error)));
                    let _ = tx.send(result);
                });
            }
        });
        Self {
            addr,
            accepted,
            requests,
            results,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Request heads received so far.
    pub fn requests(&self) -> Vec<Head> {
        self.requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }

    /// The result of the next connection to finish; panics with the handler's panic message.
    pub async fn next_result(&mut self) -> T {
        within(
            RESULT_TIMEOUT,
            "the raw backend to finish a connection",
            self.results.recv(),
        )
        .await
        .expect("raw backend is running")
        .unwrap_or_else(|why| panic!("{why}"))
    }
}

impl<T> Drop for RawBackend<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
            })
            .unwrap_or_else(|| "non-string panic".to_owned()),
        Err(error) => error.to_string(),
    }
}
