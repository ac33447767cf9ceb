//! [`BulkBackend`]: an HTTP/1.1 backend that streams large answers and counts what it wrote,
//! for the slow-reader tests. Each request gets `200` with `Content-Length: N` (N from the
//! request's `X-Reply-Bytes`, default 1 MiB) and N bytes of a [`Pattern`] seeded by
//! `X-Seed` (default 0), written in 16 KiB pieces; the backend adds each piece to a counter
//! as the kernel takes it, and notes whether the answer was written whole or the gateway
//! closed the connection first. Connections are keep-alive; accepted ones are counted.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::{http, pattern::Pattern};

/// Bytes of the answer body without `X-Reply-Bytes`.
pub const DEFAULT_REPLY_BYTES: u64 = 1 << 20;
/// Bytes per write.
const WRITE_BYTES: usize = 16 << 10;

/// What the backend has done so far, shared with its connection tasks.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicUsize,
    /// Body bytes the kernel took, all answers together.
    written: AtomicU64,
    /// Answers written whole.
    completed: AtomicUsize,
    /// Answers cut short by a failed write (the gateway closed or reset the connection).
    cut: AtomicUsize,
}

pub struct BulkBackend {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl BulkBackend {
    /// Listens on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a bulk backend on 127.0.0.1:0");
        let addr = listener.local_addr().expect("bulk backend address");
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&counters)));
        Self {
            addr,
            counters,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Answer body bytes the kernel has taken from the backend so far, all answers together.
    pub fn bytes_written(&self) -> u64 {
        self.counters.written.load(Ordering::SeqCst)
    }

    /// Answers written whole so far.
    pub fn answers_completed(&self) -> usize {
        self.counters.completed.load(Ordering::SeqCst)
    }

    /// Answers cut short so far: a write failed because the gateway closed the connection.
    pub fn answers_cut(&self) -> usize {
        self.counters.cut.load(Ordering::SeqCst)
    }
}

impl Drop for BulkBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, counters: Arc<Counters>) {
    while let Ok((stream, _)) = listener.accept().await {
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(stream, Arc::clone(&counters)));
    }
}

/// Answers requests on one connection until it closes or a write fails.
async fn serve(mut stream: TcpStream, counters: Arc<Counters>) {
    loop {
        let Ok((head, leftover)) = http::read_head(&mut stream).await else {
            return;
        };
        let framed =
            head.header("content-length").is_some() || head.header("transfer-encoding").is_some();
        if framed && http::read_body(&mut stream, &head, leftover).await.is_err() {
            return;
        }
        let len = head
            .header("x-reply-bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_REPLY_BYTES);
        let seed = head
            .header("x-seed")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        if stream.write_all(head.as_bytes()).await.is_err() {
            counters.cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let pattern = Pattern::new(seed);
        let mut chunk = vec![0; WRITE_BYTES];
        let mut sent = 0;
        while sent < len {
            let now = usize::try_from(len - sent).map_or(WRITE_BYTES, |left| left.min(WRITE_BYTES));
            pattern.fill(sent, &mut chunk[..now]);
            if stream.write_all(&chunk[..now]).await.is_err() {
                counters.cut.fetch_add(1, Ordering::SeqCst);
                return;
            }
            sent += now as u64;
            counters.written.fetch_add(now as u64, Ordering::SeqCst);
        }
        counters.completed.fetch_add(1, Ordering::SeqCst);
    }
}
