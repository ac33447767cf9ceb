//! The pooled HTTP/1.1 client for ordinary requests: hyper-util's legacy client, whose
//! pool is keyed by the request URI's scheme and authority, so every backend address gets
//! its own pool of keep-alive connections. One client serves every `http` backend; each
//! `https` backend settings has a client of its own (its trusted CAs), whose URIs also carry
//! the backend's server name (see `connect.rs`). WebSocket upgrades never take a
//! connection from a pool: a tunnel needs a fresh connection of its own (see
//! `websocket.rs`).

use std::{sync::Arc, time::Duration};

use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};

use super::connect::BackendConnector;
use crate::{body::RequestBody, tls::ClientConfig};

/// An idle keep-alive connection to a backend is closed after this long: shorter than
/// nginx's default of 75 s, so the gateway usually closes first rather than send a request
/// on a connection the backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per backend address (and server name).
pub const POOL_MAX_IDLE_PER_BACKEND: usize = 64;

/// The most a backend connection reads at once (hyper's default grows to about 400 KiB):
/// a response body reaches the client in pieces of at most this size, so it bounds what a
/// client that stops reading holds (see `proxy::outflow`). It also bounds a backend's
/// answer head, as HAProxy's 16 KiB buffer does (nginx's `proxy_buffer_size` is 4–8 KiB).
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

pub type HttpClient = Client<BackendConnector, RequestBody>;

/// The client for `http` backends.
pub fn new() -> HttpClient {
    build(BackendConnector::plain())
}

/// The client for the backends of one `https` backend settings.
pub fn new_tls(config: Arc<ClientConfig>) -> HttpClient {
    build(BackendConnector::tls(config))
}

fn build(connector: BackendConnector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_BACKEND)
        .http1_max_buf_size(READ_BUFFER_BYTES)
        .build(connector)
}
