//! The client-facing listener: HTTP/1.1 with upgrades, one task and one span per connection.

pub mod backends;
mod handler;
pub mod headers;
pub mod upgrade;

use std::{net::SocketAddr, sync::Arc};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::{dataplane::Dataplane, metrics::Metrics};
use backends::Backends;

/// What every connection of a listener shares; immutable once built.
pub struct Shared {
    pub backends: Backends,
    pub dataplane: Dataplane,
    pub metrics: Metrics,
    pub tunnel: crate::tunnel::Settings,
    pub handshake_timeout: std::time::Duration,
    /// Cancelled when the drain period after SIGTERM is over: what is still open closes.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, client) = match listener.accept().await {
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
        let shared = shared.clone();
        tokio::spawn(serve_connection(stream, client, shared).instrument(span));
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, client: SocketAddr, shared: Arc<Shared>) {
    let service = service_fn(move |req| handler::handle(req, shared.clone(), client));
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(err) = conn.await {
        tracing::debug!(error = %err, "client connection ended with an error");
    }
}
