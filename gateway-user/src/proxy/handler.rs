//! One HTTP request from a client: a WebSocket upgrade is validated, forwarded and, on
//! `101`, turned into a tunnel; anything else is forwarded as ordinary HTTP.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::{
    deadline::{self, Progress, ProgressWatch},
    headers,
    upgrade::{self, Classified},
    Shared, Upstream,
};
use crate::tunnel::{self, Upgraded};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// A TCP connect to a backend taking longer than this fails fast (504), even when the
/// handshake timeout (`--handshake-timeout-secs`, which also bounds the connect) is longer:
/// on a local network a connect that slow means the backend is gone, while a slow answer
/// may be legitimate.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not be forwarded; each maps to a status and a one-line body.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("backend {0} connect failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("backend {0} connect timed out")]
    ConnectTimeout(SocketAddr),
    #[error(
        "backend {0} did not answer in time (handshake timeout {secs}s)",
        secs = .1.as_secs()
    )]
    HandshakeTimeout(SocketAddr, Duration),
    #[error("backend {0} HTTP error: {1}")]
    Http(SocketAddr, hyper::Error),
    #[error("backend {0} answered the upgrade wrongly: {1}")]
    BadUpgrade(SocketAddr, &'static str),
}

pub async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
    client: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let classified = upgrade::classify(req.method(), req.version(), req.headers());
    let result = match classified {
        Classified::Http => forward_http(req, &shared, &upstream, client).await,
        Classified::WebSocket { expected_accept } => {
            forward_upgrade(req, &shared, &upstream, client, &expected_accept).await
        }
        Classified::Invalid(err) => {
            tracing::info!(reason = %err, method = %req.method(), uri = %req.uri(), "upgrade rejected");
            shared.metrics.upgrade_rejected();
            let mut resp = text(err.status(), &err.to_string());
            if err.status() == StatusCode::UPGRADE_REQUIRED {
                resp.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(upgrade::WEBSOCKET_VERSION),
                );
            }
            return Ok(resp);
        }
    };
    let mut resp = result.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "request failed");
        text(err.status(), &err.to_string())
    });
    if shared.lifecycle.draining.is_cancelled() && resp.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        // The connection closes after this answer (graceful shutdown); say so.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

impl BackendError {
    fn status(&self) -> StatusCode {
        match self {
            Self::ConnectTimeout(_) | Self::HandshakeTimeout(..) => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect(..) | Self::Http(..) | Self::BadUpgrade(..) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Bounds the backend's part of a handshake (connect, take the request, answer with a
/// head) by the handshake timeout; see [`deadline::deadline`] for how a request body
/// counts. Once the head is in, nothing here times out: a tunnel or a streamed response
/// body lives under its own limits.
async fn within_handshake<T>(
    shared: &Shared,
    backend: SocketAddr,
    body_progress: ProgressWatch,
    exchange: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    let timeout = shared.handshake_timeout;
    tokio::select! {
        result = exchange => result,
        () = deadline::deadline(body_progress, timeout) => {
            Err(BackendError::HandshakeTimeout(backend, timeout))
        }
    }
}

async fn forward_upgrade(
    mut req: Request<Incoming>,
    shared: &Shared,
    upstream: &Upstream,
    client: SocketAddr,
    expected_accept: &str,
) -> Result<Response<Body>, BackendError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let backend = upstream.backends.pick();
    tracing::Span::current().record("backend", tracing::field::display(backend));

    let (mut parts, _body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::set_websocket_upgrade(&mut parts.headers);
    headers::append_forwarded_for(&mut parts.headers, client.ip());
    let outbound = Request::from_parts(parts, Empty::<Bytes>::new());
    let mut resp = within_handshake(shared, backend, None, async {
        let (mut sender, conn) = connect(backend).await?;
        tokio::spawn(conn.with_upgrades());
        sender
            .send_request(outbound)
            .await
            .map_err(|e| BackendError::Http(backend, e))
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
        .map_err(|why| BackendError::BadUpgrade(backend, why))?;

    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let span = tracing::Span::current();
    let tunnel = crate::tunnel::Context {
        dataplane: shared.dataplane.clone(),
        metrics: shared.metrics.clone(),
        settings: upstream.tunnel,
        shutdown: shared.shutdown.clone(),
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

async fn start_tunnel(client: OnUpgrade, backend: OnUpgrade, tunnel: crate::tunnel::Context) {
    let upgraded = async {
        let (client, backend) = tokio::try_join!(client, backend)?;
        let client = client
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| "client connection is not a plain TCP stream")
            .map_err(std::io::Error::other)?;
        let backend = backend
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| "backend connection is not a plain TCP stream")
            .map_err(std::io::Error::other)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Upgraded {
            client: client.io.into_inner(),
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

async fn forward_http(
    req: Request<Incoming>,
    shared: &Shared,
    upstream: &Upstream,
    client: SocketAddr,
) -> Result<Response<Body>, BackendError> {
    let backend = upstream.backends.pick();
    tracing::Span::current().record("backend", tracing::field::display(backend));
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::append_forwarded_for(&mut parts.headers, client.ip());
    let (body, progress) = Progress::new(body);
    let outbound = Request::from_parts(parts, body);
    let resp = within_handshake(shared, backend, progress, async {
        let (mut sender, conn) = connect(backend).await?;
        tokio::spawn(conn);
        sender
            .send_request(outbound)
            .await
            .map_err(|e| BackendError::Http(backend, e))
    })
    .await?;
    Ok(strip_response(resp.map(BodyExt::boxed)))
}

async fn connect<B>(
    backend: SocketAddr,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<B>,
        hyper::client::conn::http1::Connection<TokioIo<TcpStream>, B>,
    ),
    BackendError,
>
where
    B: hyper::body::Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, TcpStream::connect(backend))
        .await
        .map_err(|_| BackendError::ConnectTimeout(backend))?
        .map_err(|e| BackendError::Connect(backend, e))?;
    let _ = stream.set_nodelay(true);
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BackendError::Http(backend, e))
}

fn strip_response(mut resp: Response<Body>) -> Response<Body> {
    headers::strip_hop_by_hop(resp.headers_mut());
    resp
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A short plain-text answer from the gateway itself.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
