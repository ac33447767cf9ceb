//! One HTTP request from a client: a WebSocket upgrade is validated, forwarded and, on
//! `101`, turned into a tunnel; anything else is forwarded as ordinary HTTP.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::{
    headers,
    upgrade::{self, Classified},
    Shared,
};
use crate::tunnel::{self, Upgraded};

pub type Body = BoxBody<Bytes, hyper::Error>;

const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not be forwarded; each maps to a status and a one-line body.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("backend {0} connect failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("backend {0} connect timed out")]
    ConnectTimeout(SocketAddr),
    #[error("backend {0} HTTP error: {1}")]
    Http(SocketAddr, hyper::Error),
    #[error("backend {0} answered the upgrade wrongly: {1}")]
    BadUpgrade(SocketAddr, &'static str),
}

pub async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let classified = upgrade::classify(req.method(), req.version(), req.headers());
    let result = match classified {
        Classified::Http => forward_http(req, &shared, client).await,
        Classified::WebSocket { expected_accept } => {
            forward_upgrade(req, &shared, client, &expected_accept).await
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
    Ok(result.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "request failed");
        let status = match err {
            BackendError::ConnectTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        text(status, &err.to_string())
    }))
}

async fn forward_upgrade(
    mut req: Request<Incoming>,
    shared: &Shared,
    client: SocketAddr,
    expected_accept: &str,
) -> Result<Response<Body>, BackendError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let backend = shared.backends.pick();
    tracing::Span::current().record("backend", tracing::field::display(backend));
    let (mut sender, conn) = connect(backend).await?;
    tokio::spawn(conn.with_upgrades());

    let (mut parts, _body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::set_websocket_upgrade(&mut parts.headers);
    headers::append_forwarded_for(&mut parts.headers, client.ip());
    let outbound = Request::from_parts(parts, Empty::<Bytes>::new());
    let mut resp = sender
        .send_request(outbound)
        .await
        .map_err(|e| BackendError::Http(backend, e))?;

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
        settings: shared.tunnel,
        shutdown: shared.shutdown.clone(),
    };
    tokio::spawn(start_tunnel(client_upgrade, backend_upgrade, tunnel).instrument(span));
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
    client: SocketAddr,
) -> Result<Response<Body>, BackendError> {
    let backend = shared.backends.pick();
    tracing::Span::current().record("backend", tracing::field::display(backend));
    let (mut sender, conn) = connect(backend).await?;
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::append_forwarded_for(&mut parts.headers, client.ip());
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| BackendError::Http(backend, e))?;
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
