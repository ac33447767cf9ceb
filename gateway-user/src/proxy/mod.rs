//! The client-facing listener: HTTP/1.1 with upgrades, over plain TCP or TLS, one task and
//! one span per connection.

mod deadline;
mod error;
mod forward;
pub mod framing;
pub(crate) mod guard;
mod handler;
pub mod headers;
mod outflow;
mod refusal;
mod stall;
pub mod upgrade;
mod upload;
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
    admission::{self, Accepted, Acceptor, Permit, Refused, Socket},
    dataplane::sockopt,
    shared::Shared,
    snapshot::BindId,
    tls::{self, ClientStream},
};
use guard::Guarded;
use handler::Conn;
use outflow::SendWatch;

/// Accepts connections on `listener`, the socket of bind `bind` of the snapshot, until
/// `stop` is cancelled: when the drain starts (it is a child of `lifecycle.draining`) or a
/// reload removed the bind. Returning drops the listener, so new connects are refused from
/// then on; the connections it accepted are drained as at shutdown (idle ones close, one
/// busy with a request answers it first) and their tunnels go on. The loop only accepts and
/// spawns: the TLS handshake of an https bind runs in the connection's own task, so a slow
/// client never holds up the others.
///
/// Each connection is admitted first (`admission`): over `max_connections` or
/// `max_connections_per_ip` it is refused with a fixed `503` (closed at once on https)
/// before a byte of it is read; admitted, it holds a permit until it closes, or its
/// tunnel does.
pub async fn serve(
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    bind: BindId,
    stop: CancellationToken,
) {
    let local = listener.local_addr().ok();
    let mut acceptor = Acceptor::new(
        listener,
        shared.admission.reserve.clone(),
        shared.metrics.clone(),
        Socket::Client,
    );
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = acceptor.accept() => accepted,
        };
        let snapshot = shared.snapshot.load();
        // A bind a reload removed is being drained: plaintext or not, its answer is a close.
        let plaintext = snapshot
            .bind(&bind)
            .is_some_and(|routes| routes.acceptor.is_none());
        let (stream, client, permit) = match accepted {
            Accepted::Conn(stream, client) => {
                match shared.admission.admit(client.ip(), &snapshot.admission) {
                    Ok(permit) => (stream, client, permit),
                    Err(why) => {
                        let linger = &shared.admission.lingering;
                        admission::refuse(stream, why, plaintext, Some(linger));
                        continue;
                    }
                }
            }
            Accepted::Reserved(stream, reserve) => {
                shared
                    .metrics
                    .connection_refused(Refused::NoDescriptors.as_str());
                admission::refuse(stream, Refused::NoDescriptors, plaintext, None);
                drop(reserve);
                continue;
            }
        };
        drop(snapshot);
        let _ = stream.set_nodelay(true);
        // Tracked so a shutdown drain waits for requests in flight.
        let conn = first_byte_then_serve(
            stream,
            (client, local),
            permit,
            shared.clone(),
            bind.clone(),
            stop.clone(),
        );
        shared.lifecycle.connections.spawn(conn);
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

/// Waits for the client's first byte, within the handshake timeout, before anything else
/// is made for its connection: until then it costs its socket and this small task, not its
/// log span, a TLS session, an HTTP connection and their buffers (about 1.5 KiB instead of
/// 20; nginx too waits for the first byte before it allocates its header buffer). A
/// client that sends nothing is closed when the timeout runs out; once its first byte is
/// in, the TLS handshake gets what is left of the timeout and each request head the whole
/// of it. `addrs`: the client's, and the listener's.
async fn first_byte_then_serve(
    tcp: tokio::net::TcpStream,
    addrs: (SocketAddr, Option<SocketAddr>),
    permit: Permit,
    shared: Arc<Shared>,
    bind: BindId,
    stop: CancellationToken,
) {
    let handshake_timeout = shared.handshake_timeout();
    let started = std::time::Instant::now();
    // `peek`, not `readable`: a socket just registered can report readable without a byte
    // (tokio calls it a false positive), and peek waits again when there is none.
    let mut byte = [0u8; 1];
    let first = tokio::select! {
        biased;
        first = tokio::time::timeout(handshake_timeout, tcp.peek(&mut byte)) => first,
        () = stop.cancelled() => return,
    };
    let (client, local) = addrs;
    if first.is_err() {
        let tls = shared
            .snapshot
            .load()
            .bind(&bind)
            .is_some_and(|routes| routes.acceptor.is_some());
        if tls {
            // On an https bind this is a TLS handshake that timed out, and counts as one.
            tracing::info!(
                %client,
                kind = "timeout",
                timeout_secs = handshake_timeout.as_secs(),
                "TLS handshake failed: no byte from the client in time"
            );
            shared.metrics.tls_handshake_failed("timeout");
        } else {
            tracing::debug!(
                %client,
                timeout_secs = handshake_timeout.as_secs(),
                "no byte from the client in time; connection closed"
            );
        }
        return;
    }
    let left = handshake_timeout.saturating_sub(started.elapsed());
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
    let serve = serve_connection(
        tcp,
        client,
        permit,
        shared,
        bind,
        stop,
        (left, handshake_timeout),
    );
    // Boxed: this task's own future stays small while it waits.
    Box::pin(serve.instrument(span)).await;
}

/// Serves one client connection until it closes, becomes a tunnel, or is drained: `stop`
/// (its listener's token) is cancelled at shutdown and when a reload removes its bind.
/// `timeouts`: what is left of the handshake timeout for a TLS handshake, and the whole of
/// it for each request head.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    client: SocketAddr,
    permit: Permit,
    shared: Arc<Shared>,
    bind: BindId,
    stop: CancellationToken,
    timeouts: (std::time::Duration, std::time::Duration),
) {
    let shutdown = shared.shutdown.clone();
    let (tls_timeout, handshake_timeout) = timeouts;
    let handshake = tokio::select! {
        biased;
        done = handshake(tcp, &shared, &bind, tls_timeout) => done,
        // A drain closes connections still in their TLS handshake: nothing is in flight.
        () = stop.cancelled() => return,
    };
    let Some((stream, tls_site)) = handshake else {
        return;
    };
    // The send timeout and the count of bytes written, under the guard, which follows the
    // plaintext request bytes, whether they came over TLS or not.
    let send_timeout = shared.response_send_timeout();
    let (stream, outflow) = SendWatch::new(stream, send_timeout);
    let (stream, framing) = Guarded::new(stream);
    let state = Arc::new(Conn {
        shared: shared.clone(),
        bind,
        client,
        client_key: permit.client(),
        tls_site,
        framing,
        outflow,
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
    // Content-Length, which hyper accepts. Its buffers are bounded by the longest head it
    // must read (its default, about 400 KiB, is what it would also queue for a client that
    // does not read); response bodies are held back further by `outflow::Paced`.
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_header_size(framing::MAX_HEAD_BYTES)
        .max_buf_size(framing::MAX_HEAD_BYTES)
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
            let client = parts.io.into_inner().into_inner().into_inner();
            websocket::start(
                pending,
                client,
                parts.read_buf,
                &shared.lifecycle.tunnels,
                permit,
            );
            return;
        }
        (Err(_), _) if state.outflow.timed_out() => {
            tracing::info!(
                timeout_secs = send_timeout.as_secs(),
                "the client took no response bytes within the send timeout; connection reset"
            );
            shared.metrics.response_send_timeout();
            // A reset, as nginx's `reset_timedout_connection`: a graceful close would stall
            // the same way, and a FIN behind the unsent bytes would keep them in the kernel
            // until the client reads them or TCP gives up (minutes).
            let client = conn.into_parts().io.into_inner().into_inner().into_inner();
            if let Err(error) = sockopt::set_linger_zero(client.tcp()) {
                tracing::debug!(%error, "cannot arm the reset; closing");
            }
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
