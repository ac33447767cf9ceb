//! The pooled HTTP/1.1 client for ordinary requests: hyper-util's legacy client, whose
//! pool is keyed by the request URI's authority, so every backend address gets its own
//! pool of keep-alive connections. WebSocket upgrades never take a connection from it: a
//! tunnel needs a fresh socket of its own (see `websocket.rs`).

use std::time::Duration;

use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use super::handler::Body;

/// A TCP connect to a backend taking longer than this fails (`502`, "connect timeout"),
/// even when the request timeout is longer: on a local network a connect that slow means
/// the backend is gone, while a slow answer may be legitimate.
pub const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An idle keep-alive connection to a backend is closed after this long: shorter than
/// nginx's default of 75 s, so the gateway usually closes first rather than send a request
/// on a connection the backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per backend address.
pub const POOL_MAX_IDLE_PER_BACKEND: usize = 64;

pub type HttpClient = Client<HttpConnector, Body>;

pub fn new() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(BACKEND_CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_BACKEND)
        .build(connector)
}
