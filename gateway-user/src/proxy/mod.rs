//! The client-facing listener: HTTP/1.1 with upgrades, over plain TCP or TLS, one task and
//! one span per connection.

mod deadline;
mod error;
mod forward;
pub mod framing;
pub(crate) mod guard;
mod handler;
pub mod headers;
mod refusal;
pub mod upgrade;
mod websocket;

use std::{
    future::poll_fn,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, Mutex},
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    shared::Shared,
    snapshot::BindId,
    tls::{self, ClientStream},
};
use guard::Guarded;
use handler::Conn;

/// Accepts connections on `listener`, the socket of bind `bind` of the snapshot, until
/// `stop` is cancelled: when the drain starts (it is a child of `lifecycle.draining`) or a
/// reload removed the bind. Returning drops the listener, so new connects are refused from
/// then on; the connections it accepted are drained as at shutdown (idle ones close, one
/// busy with a request answers it first) and their tunnels go on. The loop only accepts and
/// spawns: the TLS handshake of an https bind runs in the connection's own task, so a slow
/// client never holds up the others.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    bind: BindId,
    stop: CancellationToken,
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
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
            route = tracing::field::Empty,
            backend = tracing::field::Empty,
            mode = tracing::field::Empty,
            tls = tracing::field::Empty,
            sni = tracing::field::Empty,
        );
        // Tracked so a shutdown drain waits for requests in flight.
        let conn = serve_connection(stream, client, shared.clone(), bind.clone(), stop.clone());
        shared.lifecycle.connections.spawn(conn.instrument(span));
    }
}

/// The connection as plain TCP for an http bind, or after its TLS handshake for an https
/// one (with the TLS server of the current snapshot, so a reload that changed a bind's
/// certificates or protocol applies to the connections accepted afterwards), with the site
/// (index into the bind's sites) whose certificate was shown. `None` when the handshake
/// failed (logged and counted), or a reload removed the bind since the connection was
/// accepted.
async fn handshake(
    tcp: tokio::net::TcpStream,
    shared: &Shared,
    bind: &BindId,
    handshake_timeout: std::time::Duration,
) -> Option<(ClientStream, Option<usize>)> {
    let acceptor = {
        let snapshot = shared.snapshot.load();
        let Some(routes) = snapshot.bind(bind) else {
            tracing::debug!(%bind, "the bind left the configuration; connection closed");
            return None;
        };
        routes.acceptor.clone()
    };
    let Some(acceptor) = acceptor else {
        return Some((ClientStream::Plain(tcp), None));
    };
    match tls::accept(&acceptor, tcp, handshake_timeout).await {
        Ok((stream, info)) => {
            let span = tracing::Span::current();
            span.record("tls", info.version_label());
            if let Some(sni) = &info.sni {
                span.record("sni", sni.as_str());
            }
            tracing::debug!(suite = info.suite_label(), "TLS handshake done");
            Some((ClientStream::Tls(Box::new(stream)), Some(info.site_index)))
        }
        Err(error) => {
            tracing::info!(kind = error.kind(), error = %error, "TLS handshake failed");
            shared.metrics.tls_handshake_failed(error.kind());
            None
        }
    }
}

/// Serves one client connection until it closes, becomes a tunnel, or is drained: `stop`
/// (its listener's token) is cancelled at shutdown and when a reload removes its bind.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    client: SocketAddr,
    shared: Arc<Shared>,
    bind: BindId,
    stop: CancellationToken,
) {
    let shutdown = shared.shutdown.clone();
    let handshake_timeout = shared.handshake_timeout();
    let handshake = tokio::select! {
        biased;
        done = handshake(tcp, &shared, &bind, handshake_timeout) => done,
        // A drain closes connections still in their TLS handshake: nothing is in flight.
        () = stop.cancelled() => return,
    };
    let Some((stream, tls_site)) = handshake else {
        return;
    };
    // The guard follows the plaintext request bytes, whether they came over TLS or not.
    let (stream, framing) = Guarded::new(stream);
    let state = Arc::new(Conn {
        shared: shared.clone(),
        bind,
        client,
        tls_site,
        framing,
        requests: AtomicU64::new(0),
        tunnel: Mutex::new(None),
    });
    let service = {
        let state = state.clone();
        // Boxed: hyper drives a connection it gives back (`poll_without_shutdown`) only
        // over `Unpin` futures.
        service_fn(move |req| Box::pin(handler::handle(req, state.clone())))
    };
    // The head timer runs whenever hyper waits for a request head, so it also closes
    // keep-alive connections left idle that long. hyper's request parser refuses obsolete
    // line folding, invalid header bytes, differing Content-Lengths and a Transfer-Encoding
    // not ending in chunked with 400; `Guarded` catches Transfer-Encoding with
    // Content-Length, which hyper accepts.
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_header_size(framing::MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    // hyper serves without taking the socket: after a `101` it stops at the end of the
    // head, and the socket comes back as the type made here, for the tunnel.
    let served = async {
        tokio::select! {
            result = poll_fn(|cx| conn.poll_without_shutdown(cx)) => result,
            () = stop.cancelled() => {
                // Idle: closes now. Busy: answers the request in flight, then closes. A
                // `101` on its way ends the connection anyway, and closing could cut it off.
                if !state.has_tunnel() {
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                }
                poll_fn(|cx| conn.poll_without_shutdown(cx)).await
            }
        }
    };
    let ended = tokio::select! {
        ended = served => ended,
        () = shutdown.cancelled() => {
            tracing::info!("client connection still busy at the end of the drain; closing it");
            return;
        }
    };
    match (ended, state.take_tunnel()) {
        (Ok(()), Some(pending)) => {
            let parts = conn.into_parts();
            let client = parts.io.into_inner().into_inner();
            websocket::start(pending, client, parts.read_buf, &shared.lifecycle.tunnels);
            return;
        }
        (Err(err), _) if err.is_timeout() => {
            tracing::debug!(
                timeout_secs = handshake_timeout.as_secs(),
                "no complete request head from the client in time; connection closed"
            );
            return;
        }
        (Err(err), pending) => {
            if pending.is_some() {
                tracing::info!(error = %err, "the upgrade was accepted but its 101 could not be written; tunnel abandoned");
            } else {
                tracing::debug!(error = %err, "client connection ended with an error");
            }
        }
        (Ok(()), None) => {}
    }
    // What hyper does when it owns the socket: send what it still holds (the end of an
    // answer, its own 400), then shut the socket down (a TLS close_notify), within the
    // handshake timeout.
    let close = async {
        tokio::select! {
            _ = &mut conn => {}
            () = shutdown.cancelled() => {}
        }
    };
    let _ = tokio::time::timeout(handshake_timeout, close).await;
}
