//! The admin listener: `GET /metrics` in the Prometheus text format, `GET /backends` (the
//! health of every backend, JSON), `GET /tunnels` (every live tunnel, JSON), `POST /reload`
//! to read the configuration again (as SIGHUP does). Keep it on loopback.
//!
//! Every request passes [`access`] first: its `Host` must be the listener's own, a
//! browser's cross-origin request is refused, and with `[global] admin_token_file` it needs
//! the bearer token. The request head must arrive within `[global] handshake_timeout_secs`,
//! and at most [`MAX_CONNECTIONS`] connections are served at once.

pub mod access;
pub mod collectors;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::Semaphore};

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
    pub refused: RefusedMetric,
}

/// Admin connections served at once; more wait in the listen backlog. Scrapers and
/// operators need a handful; the bound keeps a local flood of idle connections from
/// costing more than this many tasks until the head timeout closes them.
pub const MAX_CONNECTIONS: usize = 64;

/// `gateway_admin_refused_total{reason}`: admin requests refused by [`access`].
#[derive(Clone, Debug)]
pub struct RefusedMetric(Family<ReasonLabels, Counter>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    reason: &'static str,
}

impl Default for RefusedMetric {
    fn default() -> Self {
        let family: Family<ReasonLabels, Counter> = Family::default();
        for reason in ["host", "origin", "token"] {
            family.get_or_create(&ReasonLabels { reason }).inc_by(0);
        }
        Self(family)
    }
}

impl RefusedMetric {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gateway_admin_refused",
            "Admin requests refused, by reason: host (a Host that is not the admin \
             listener's), origin (a browser's cross-origin request), token (no or a wrong \
             bearer token)",
            self.0.clone(),
        );
    }
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
    let Ok(local) = listener.local_addr() else {
        tracing::error!("the admin listener has no local address; not serving it");
        return;
    };
    let mut acceptor = Acceptor::new(
        Arc::new(listener),
        Reserve::open(),
        admin.shared.metrics.clone(),
        Socket::Admin,
    );
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer, reserved) = match acceptor.accept().await {
            Accepted::Conn(stream, peer) => (stream, peer, None),
            Accepted::Reserved(stream, reserve) => match stream.peer_addr() {
                Ok(peer) => (stream, peer, Some(reserve)),
                // Gone already: the reserve is free again.
                Err(_) => continue,
            },
        };
        let admin = admin.clone();
        // Read per connection, so a reload applies to the next one.
        let head_timeout = admin.shared.handshake_timeout();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(req, admin.clone(), local, peer));
            let mut builder = http1::Builder::new();
            // The head timer also runs while a keep-alive connection waits for its next
            // request, so an idle or trickling connection gives its slot back.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout);
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
            drop(slot);
        });
    }
}

async fn route(
    req: Request<Incoming>,
    admin: Arc<Admin>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Err(refused) = check_access(&req, &admin, local) {
        tracing::warn!(
            %peer,
            method = %req.method(),
            path = req.uri().path(),
            reason = refused.reason(),
            "admin request {}",
            refused.message()
        );
        admin
            .refused
            .0
            .get_or_create(&ReasonLabels {
                reason: refused.reason(),
            })
            .inc();
        let mut resp = answer(Answer::text(
            refused.status(),
            format!("{}\n", refused.message()),
        ));
        if let Some(challenge) = refused.challenge() {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        return Ok(resp);
    }
    let answer_to = match (req.method(), req.uri().path()) {
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
    Ok(answer(answer_to))
}

/// [`access::Access::check`] against the configuration served now.
fn check_access(
    req: &Request<Incoming>,
    admin: &Admin,
    local: SocketAddr,
) -> Result<(), access::Refused> {
    let snapshot = admin.shared.snapshot.load();
    let global = &snapshot.config.global;
    let access = access::Access {
        bind: local,
        names: &global.admin_host_names,
        token: global.admin_token.as_ref(),
    };
    access.check(req.uri(), req.version(), req.headers())
}

fn answer(answer: Answer) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = answer.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    resp
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
