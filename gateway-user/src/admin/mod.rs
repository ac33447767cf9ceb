//! The admin listener: `GET /metrics` in the Prometheus text format, `GET /backends` (the
//! health of every backend, JSON), `GET /tunnels` (every live tunnel, JSON), `POST /reload`
//! to read the configuration again (as SIGHUP does). Keep it on loopback.

pub mod collectors;

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{
    admission::{Accepted, Acceptor, Reserve, Socket},
    reload::{ReloadError, Reloader, Trigger},
    shared::Shared,
};

/// What the admin endpoints read and act on.
pub struct Admin {
    pub registry: Registry,
    /// The data path's state: the snapshot served, backend health, the dataplane.
    pub shared: Arc<Shared>,
    pub reloader: Arc<Reloader>,
}

/// One answer of the admin listener.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// How long a connection accepted on the reserve descriptor may take, all in: it holds
/// the only way in until it closes.
const RESERVED_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin endpoints on `listener` forever. Its connections are not counted
/// against the client connection limits. Out of descriptors, it backs off and serves one
/// connection at a time on a reserve descriptor of its own (one request, `Connection:
/// close`, within [`RESERVED_CONNECTION_TIMEOUT`]), so `/metrics` still answers.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let mut acceptor = Acceptor::new(
        Arc::new(listener),
        Reserve::open(),
        admin.shared.metrics.clone(),
        Socket::Admin,
    );
    loop {
        let (stream, reserved) = match acceptor.accept().await {
            Accepted::Conn(stream, _) => (stream, None),
            Accepted::Reserved(stream, reserve) => (stream, Some(reserve)),
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(req, admin.clone()));
            let mut builder = http1::Builder::new();
            if reserved.is_some() {
                builder.keep_alive(false);
            }
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match reserved {
                None => {
                    let _ = conn.await;
                }
                Some(reserve) => {
                    let _ = tokio::time::timeout(RESERVED_CONNECTION_TIMEOUT, conn).await;
                    // The socket is closed: the reserve can have its slot back.
                    drop(reserve);
                }
            }
        });
    }
}

async fn route(
    req: Request<Incoming>,
    admin: Arc<Admin>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Answer {
            status: StatusCode::OK,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: crate::metrics::render(&admin.registry),
        },
        (&Method::POST, "/reload") => reload(&admin).await,
        (&Method::GET, "/backends") => json(&BackendsView {
            backends: admin.shared.health.reports(),
        }),
        (&Method::GET, "/tunnels") => {
            let tunnels = admin.shared.tunnels.reports();
            json(&TunnelsView {
                count: tunnels.len(),
                tunnels,
            })
        }
        (_, "/backends" | "/tunnels") => Answer::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"),
        (_, "/metrics") => Answer::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"),
        (_, "/reload") => Answer::text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n"),
        _ => Answer::text(
            StatusCode::NOT_FOUND,
            "not found; try GET /metrics, GET /backends, GET /tunnels or POST /reload\n",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = answer.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    Ok(resp)
}

/// `GET /backends`: every backend's health, as `az network application-gateway
/// show-backend-health` shows it, plus the gateway's own details.
#[derive(serde::Serialize)]
struct BackendsView {
    backends: Vec<crate::health::BackendReport>,
}

/// `GET /tunnels`: every live WebSocket tunnel.
#[derive(serde::Serialize)]
struct TunnelsView {
    count: usize,
    tunnels: Vec<crate::tunnel::registry::TunnelReport>,
}

fn json(value: &impl serde::Serialize) -> Answer {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            Answer {
                status: StatusCode::OK,
                content_type: "application/json",
                body,
            }
        }
        Err(error) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

/// `200` with a one-line summary of what changed; `422` with every problem of an invalid
/// configuration, one per line; `500` when a valid one could not be applied; `503` during
/// the shutdown. In every case but `200` the previous configuration keeps running.
async fn reload(admin: &Admin) -> Answer {
    match admin.reloader.reload(Trigger::Admin).await {
        Ok(done) => Answer::text(StatusCode::OK, format!("reloaded: {}\n", done.summary)),
        Err(ReloadError::Invalid(errors)) => {
            let mut body = String::new();
            for error in &errors {
                body.push_str(&format!("{error}\n"));
            }
            Answer::text(StatusCode::UNPROCESSABLE_ENTITY, body)
        }
        Err(error @ ReloadError::ShuttingDown) => {
            Answer::text(StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"))
        }
        Err(error) => Answer::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed, the previous configuration keeps running: {error}\n"),
        ),
    }
}
