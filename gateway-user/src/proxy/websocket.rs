//! A WebSocket upgrade to its backend: over a fresh connection of its own (never a pooled
//! one: on `101` both connections become the tunnel, which the kernel can splice when both
//! are plain TCP), with TLS to an https backend, the `101` checked against the client's
//! key, then the tunnel started.

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tracing::Instrument as _;

use super::{
    error::BackendError,
    forward::{strip_response, Outbound},
    guard::Guarded,
    headers, upgrade,
};
use crate::{
    body::{empty, Body},
    tls::{BackendStream, ClientStream},
    tunnel::{self, registry::Peers, Upgraded},
    upstream::connect::{self, TlsTarget},
};

/// Forwards the upgrade; on a correct `101`, spawns the tunnel and returns the `101` for
/// the client. Any other answer goes back as is, and no tunnel is made.
pub async fn forward(
    mut req: Request<Incoming>,
    out: &Outbound<'_>,
    expected_accept: &str,
) -> Result<Response<Body>, BackendError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
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
    let mut resp = out
        .within_answer_timeout(None, async {
            let (mut sender, conn) = connect(out).await?;
            tokio::spawn(conn.with_upgrades());
            sender
                .send_request(outbound)
                .await
                .map_err(|e| BackendError::exchange(backend, &e))
        })
        .await?;

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused by the backend (e.g. 403, 404): its answer goes back as is, no tunnel.
        tracing::info!(
            status = resp.status().as_u16(),
            "backend declined the upgrade"
        );
        return Ok(strip_response(resp.map(BodyExt::boxed)));
    }
    upgrade::check_switching_protocols(resp.headers(), expected_accept)
        .map_err(|why| BackendError::BadUpgrade { backend, why })?;
    out.shared.metrics.websocket_handshake(started.elapsed());

    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let span = tracing::Span::current();
    let shared = out.shared;
    let tunnel = tunnel::Context {
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
    };
    // Tracked so a shutdown drain waits for the tunnel; spawned before the `101` is
    // returned, so the client connection's own tracked task outlives the spawn.
    shared
        .lifecycle
        .tunnels
        .spawn(start_tunnel(client_upgrade, backend_upgrade, tunnel).instrument(span));
    let (parts, _body) = resp.into_parts();
    Ok(Response::from_parts(parts, empty()))
}

/// A fresh connection to the chosen backend (TLS for https settings) with an HTTP/1.1
/// client on it (upgrades enabled by the caller).
async fn connect(
    out: &Outbound<'_>,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        hyper::client::conn::http1::Connection<TokioIo<BackendStream>, Empty<Bytes>>,
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

async fn start_tunnel(client: OnUpgrade, backend: OnUpgrade, tunnel: tunnel::Context) {
    let upgraded = async {
        let (client, backend) = tokio::try_join!(client, backend)?;
        let client = client
            .downcast::<TokioIo<Guarded<ClientStream>>>()
            .map_err(|_| "client connection is not the stream the listener made")
            .map_err(std::io::Error::other)?;
        let backend = backend
            .downcast::<TokioIo<BackendStream>>()
            .map_err(|_| "backend connection is not the stream the gateway made")
            .map_err(std::io::Error::other)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Upgraded {
            client: client.io.into_inner().into_inner(),
            client_early: client.read_buf,
            backend: backend.io.into_inner(),
            backend_early: backend.read_buf,
        })
    };
    match upgraded.await {
        Ok(upgraded) => tunnel::run(upgraded, tunnel).await,
        Err(err) => tracing::warn!(error = %err, "upgrade handoff failed"),
    }
}
