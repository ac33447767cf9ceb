//! A WebSocket upgrade to its backend: over a fresh connection of its own (never a pooled
//! one: on `101` both connections become the tunnel, which the kernel can splice when both
//! are plain TCP), with TLS to an https backend, the `101` checked against the client's
//! key, then the tunnel handed over.
//!
//! The hand-over is typed end to end: hyper drives both HTTP connections without taking
//! their sockets (`poll_without_shutdown`), and gives each back as the type the gateway
//! made (`into_parts`), with the bytes it had read past the `101` head. The backend's side
//! waits in a [`PendingTunnel`] until the client's connection has written its `101`; then
//! [`start`] joins the two.

use std::future::poll_fn;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::{
    error::BackendError,
    forward::{strip_response, Outbound},
    headers, upgrade,
};
use crate::{
    admission::Permit,
    body::{empty, Body},
    tls::{BackendStream, ClientStream},
    tunnel::{self, registry::Peers, Upgraded},
    upstream::connect::{self, TlsTarget},
};

type BackendConnection =
    hyper::client::conn::http1::Connection<TokioIo<BackendStream>, Empty<Bytes>>;

/// The backend's side of an accepted upgrade, and what its tunnel needs: held by the
/// client's connection until its `101` is written.
pub struct PendingTunnel {
    backend: BackendStream,
    /// Read from the backend after its `101` head; owed to the client.
    backend_early: Bytes,
    tunnel: tunnel::Context,
}

/// Starts the tunnel of `pending` over the client's socket (its `101` written) in the
/// current span, tracked by `tunnels` so a shutdown drain waits for it. `client_early`:
/// what the client sent after its request head, owed to the backend. `permit` (the
/// client connection's admission) is held until the tunnel ends.
pub fn start(
    pending: PendingTunnel,
    client: ClientStream,
    client_early: Bytes,
    tunnels: &TaskTracker,
    permit: Permit,
) {
    let upgraded = Upgraded {
        client,
        client_early,
        backend: pending.backend,
        backend_early: pending.backend_early,
    };
    let span = tracing::Span::current();
    // The tunnel is the client's connection still open: it counts against the connection
    // limits until it closes.
    let run = async move {
        tunnel::run(upgraded, pending.tunnel).await;
        drop(permit);
    };
    tunnels.spawn(run.instrument(span));
}

/// Forwards the upgrade. On a correct `101`, returns it for the client with the tunnel
/// waiting for it; any other answer goes back as is, and no tunnel is made.
pub async fn forward(
    req: Request<Incoming>,
    out: &Outbound<'_>,
    expected_accept: &str,
) -> Result<(Response<Body>, Option<PendingTunnel>), BackendError> {
    let backend = out.backend.addr;
    let (mut parts, _body) = req.into_parts();
    headers::to_backend(&mut parts.headers, &out.forwarding);
    headers::set_websocket_upgrade(&mut parts.headers);
    // Origin form: the target as the client sent it, without an authority.
    parts.uri = parts
        .uri
        .path_and_query()
        .and_then(|pq| pq.as_str().parse::<Uri>().ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let outbound = Request::from_parts(parts, Empty::<Bytes>::new());
    let started = std::time::Instant::now();
    let (resp, conn, ended) = out
        .within_answer_timeout(None, async {
            let (sender, conn) = connect(out).await?;
            exchange(sender, conn, outbound)
                .await
                .map_err(|e| BackendError::exchange(backend, &e))
        })
        .await?;

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused by the backend (e.g. 403, 404): its answer goes back as is, no tunnel.
        // Its body streams while the connection is driven to its end.
        tracing::info!(
            status = resp.status().as_u16(),
            "backend declined the upgrade"
        );
        if !ended {
            tokio::spawn(conn);
        }
        return Ok((strip_response(resp.map(BodyExt::boxed)), None));
    }
    upgrade::check_switching_protocols(resp.headers(), expected_accept)
        .map_err(|why| BackendError::BadUpgrade { backend, why })?;
    let parts = conn.into_parts();
    out.shared.metrics.websocket_handshake(started.elapsed());

    let shared = out.shared;
    let pending = PendingTunnel {
        backend: parts.io.into_inner(),
        backend_early: parts.read_buf,
        tunnel: tunnel::Context {
            dataplane: shared.dataplane.clone(),
            metrics: shared.metrics.clone(),
            settings: out.upstream.tunnel,
            shutdown: shared.shutdown.clone(),
            lease: out.lease.backend().lease(),
            on_backend_down: out.upstream.settings.on_backend_down,
            registry: shared.tunnels.clone(),
            peers: Peers {
                client: out.client,
                backend,
                pool: out.upstream.pool.clone(),
                settings: out.upstream.settings.name.clone(),
            },
        },
    };
    let (parts, _body) = resp.into_parts();
    Ok((Response::from_parts(parts, empty()), Some(pending)))
}

/// Sends `request` on `sender`, driving its connection (no task of its own) until the
/// answer's head is in, and after a `101` until hyper has stopped at the end of it (the
/// rest is the tunnel's). The connection comes back, with whether it has already ended (it
/// must not be polled again then).
async fn exchange(
    mut sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    mut conn: BackendConnection,
    request: Request<Empty<Bytes>>,
) -> Result<(Response<Incoming>, BackendConnection, bool), hyper::Error> {
    let answer = sender.send_request(request);
    let mut answer = std::pin::pin!(answer);
    let mut ended = None;
    let resp = loop {
        tokio::select! {
            biased;
            resp = &mut answer => match resp {
                Ok(resp) => break resp,
                // The connection's own error says more than "connection closed".
                Err(error) => return Err(match ended {
                    Some(Err(conn_error)) => conn_error,
                    _ => error,
                }),
            },
            // The connection ended first (closed, or an error): the answer resolves next,
            // with the reason or with what hyper read before the end.
            done = poll_fn(|cx| conn.poll_without_shutdown(cx)), if ended.is_none() => {
                ended = Some(done);
            }
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && ended.is_none() {
        poll_fn(|cx| conn.poll_without_shutdown(cx)).await?;
        ended = Some(Ok(()));
    }
    Ok((resp, conn, ended.is_some()))
}

/// A fresh connection to the chosen backend (TLS for https settings) with an HTTP/1.1
/// client on it.
async fn connect(
    out: &Outbound<'_>,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        BackendConnection,
    ),
    BackendError,
> {
    let backend = out.backend.addr;
    let tls = out
        .upstream
        .tls
        .as_ref()
        .zip(out.backend.server_name.clone())
        .map(|(tls, server_name)| TlsTarget {
            config: tls.config.clone(),
            server_name,
        });
    let stream = connect::connect(backend, tls)
        .await
        .map_err(|e| BackendError::from_connect(backend, e))?;
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BackendError::exchange(backend, &e))
}
