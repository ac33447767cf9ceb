//! The client-facing listener: HTTP/1.1 with upgrades, one task and one span per connection.

pub mod backends;
mod deadline;
mod handler;
pub mod headers;
pub mod upgrade;

use std::{net::SocketAddr, sync::Arc};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{config::Config, dataplane::Dataplane, metrics::Metrics};
use backends::Backends;

/// What every connection of every listener shares; immutable once built.
pub struct Shared {
    /// The configuration snapshot the gateway was started with.
    pub config: Arc<Config>,
    pub dataplane: Dataplane,
    pub metrics: Metrics,
    /// For the client's request head, and for the backend to connect and answer it.
    pub handshake_timeout: std::time::Duration,
    pub lifecycle: Lifecycle,
    /// Cancelled when the drain period after SIGTERM is over: what is still open closes.
    pub shutdown: CancellationToken,
}

/// Where the requests and tunnels of one bind go: one pool, round-robin, and the tunnel
/// limits of its backend settings.
pub struct Upstream {
    pub backends: Backends,
    pub tunnel: crate::tunnel::Settings,
}

/// The shutdown states every connection watches, and the tasks a drain waits for.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    /// Cancelled on SIGTERM/SIGINT: listeners stop accepting, idle keep-alive connections
    /// close, and connections busy with a request close once it is answered.
    pub draining: CancellationToken,
    /// Client connections while they speak HTTP (a connection's task ends when it becomes
    /// a tunnel).
    pub connections: TaskTracker,
    /// Tunnels, from the `101` until both sides have closed.
    pub tunnels: TaskTracker,
}

/// Accepts connections on `listener` until the drain starts; returning drops the
/// listener, so new connects are refused from then on.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, upstream: Arc<Upstream>) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.lifecycle.draining.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: log, back off a little, keep serving.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!(
            "conn",
            %client,
            listener = local.map(|a| a.to_string()).unwrap_or_default(),
            backend = tracing::field::Empty,
            mode = tracing::field::Empty,
        );
        // Tracked so a shutdown drain waits for requests in flight.
        shared.lifecycle.connections.spawn(
            serve_connection(stream, client, shared.clone(), upstream.clone()).instrument(span),
        );
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
) {
    let lifecycle = shared.lifecycle.clone();
    let shutdown = shared.shutdown.clone();
    let handshake_timeout = shared.handshake_timeout;
    let service =
        service_fn(move |req| handler::handle(req, shared.clone(), upstream.clone(), client));
    // The head timer runs whenever hyper waits for a request head, so it also closes
    // keep-alive connections left idle that long.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = lifecycle.draining.cancelled() => {
            // Idle: closes now. Busy: answers the request in flight, then closes.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                () = shutdown.cancelled() => {
                    tracing::info!("client connection still busy at the end of the drain; closing it");
                    return;
                }
            }
        }
    };
    match result {
        Ok(()) => {}
        Err(err) if err.is_timeout() => tracing::debug!(
            timeout_secs = handshake_timeout.as_secs(),
            "no complete request head from the client in time; connection closed"
        ),
        Err(err) => tracing::debug!(error = %err, "client connection ended with an error"),
    }
}
