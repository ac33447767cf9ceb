//! One HTTP request from a client: checked (framing, host, upgrade rules), routed, and
//! answered by the gateway (redirect, 4xx) or forwarded: a WebSocket upgrade to become a
//! tunnel on `101`, anything else as ordinary HTTP.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::{
    forward::{self, Outbound},
    guard::Framing,
    headers::Forwarding,
    outflow::{Outflow, Paced},
    refusal::Refusal,
    upgrade::{self, Classified},
    upload::Upload,
    websocket::{self, PendingTunnel},
};
use crate::{
    admission::ClientKey,
    body::{text, Body},
    config::{self, Protocol},
    route::{self, Decision, RequestHost, RequestView, Route},
    shared::Shared,
    snapshot::{BindId, BindRoutes},
    upstream::Upstream,
};

/// One client connection, as its requests see it.
pub struct Conn {
    pub shared: Arc<Shared>,
    /// Its bind, as the configuration snapshot names it (stable across reloads).
    pub bind: BindId,
    pub client: SocketAddr,
    /// The client as the per-client limits count it (its upgrade bucket).
    pub client_key: ClientKey,
    /// On an https bind: the site (index into the bind's sites) whose certificate the TLS
    /// handshake presented, chosen by SNI.
    pub tls_site: Option<usize>,
    pub framing: Arc<Framing>,
    /// What the client's socket has taken, for the response bodies' pacing.
    pub outflow: Arc<Outflow>,
    /// Requests seen so far; HTTP/1.1 hands them over one at a time, in order.
    pub requests: AtomicU64,
    /// The tunnel of an accepted upgrade, waiting for the `101` to be written: the
    /// connection's task then takes it with the client's socket.
    pub tunnel: Mutex<Option<PendingTunnel>>,
}

impl Conn {
    fn hand_over(&self, pending: PendingTunnel) {
        *self.lock_tunnel() = Some(pending);
    }

    /// The tunnel waiting for this connection's `101`, if there is one.
    pub fn take_tunnel(&self) -> Option<PendingTunnel> {
        self.lock_tunnel().take()
    }

    /// Whether an upgrade was accepted: the connection ends once its `101` is written.
    pub fn has_tunnel(&self) -> bool {
        self.lock_tunnel().is_some()
    }

    fn lock_tunnel(&self) -> std::sync::MutexGuard<'_, Option<PendingTunnel>> {
        self.tunnel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub async fn handle(req: Request<Incoming>, conn: Arc<Conn>) -> Result<Response<Body>, Infallible> {
    let index = conn.requests.fetch_add(1, Ordering::Relaxed);
    let mut routed = None;
    let mut resp = respond(req, &conn, index, &mut routed).await;
    let route = routed
        .as_ref()
        .map(|(l, r): &(String, String)| (l.as_str(), r.as_str()));
    conn.shared.metrics.request(route, resp.status().as_u16());
    if conn.shared.lifecycle.draining.is_cancelled()
        && resp.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        // The connection closes after this answer (graceful shutdown); say so.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// `routed` gets the listener and rule names once the request is routed.
async fn respond(
    req: Request<Incoming>,
    conn: &Conn,
    index: u64,
    routed: &mut Option<(String, String)>,
) -> Response<Body> {
    let refuse = |refusal: Refusal| refuse(&req, refusal, &conn.shared);
    if conn.framing.conflicted(index) {
        return refuse(Refusal::FramingConflict);
    }
    if req.method() == Method::CONNECT || req.uri().path() == "*" {
        return refuse(Refusal::NotForwarded);
    }
    if !printable_target(req.uri()) {
        return refuse(Refusal::BadTarget);
    }
    let host = match route::request_host(req.uri(), req.headers(), req.version()) {
        Ok(host) => host,
        Err(err) => return refuse(err.into()),
    };
    let expected_accept = match upgrade::classify(req.method(), req.version(), req.headers()) {
        Classified::Http => None,
        Classified::WebSocket { expected_accept } => Some(expected_accept),
        Classified::Invalid(err) => return refuse(err.into()),
    };
    let snapshot = conn.shared.snapshot.load_full();
    let Some(bind) = snapshot.bind(&conn.bind) else {
        // The connection is being drained and closes after this answer.
        return refuse(Refusal::BindRemoved);
    };
    let path = match config::path::normalize(req.uri().path(), snapshot.config.global.paths) {
        Ok(path) => path,
        Err(err) => return refuse(Refusal::BadPath(err)),
    };
    let view = RequestView {
        host: host.as_ref().map(|h| h.name.as_str()),
        path: path.as_str(),
        routed_path: path.routed(),
        query: req.uri().query(),
    };
    let decision = bind.router.route(view);
    let normalised = path.changed().then(|| path.as_str().to_owned());
    if let Some(site) = conn.tls_site {
        misdirected(bind, site, &decision);
    }
    match decision {
        Decision::NoSite => {
            let name = host.as_ref().map_or("", |h| h.name.as_str());
            refuse(Refusal::NoSite(name.to_owned()))
        }
        Decision::NoHostToRedirectTo { route } => {
            record(route, routed);
            refuse(Refusal::NoHostToRedirectTo)
        }
        Decision::Redirect {
            route,
            status,
            location,
        } => {
            record(route, routed);
            redirect(status, &location)
        }
        Decision::Forward { route, target } => {
            record(route, routed);
            if expected_accept.is_some() {
                // Only upgrades that would open a backend connection take a token.
                if let Err(wait) = conn
                    .shared
                    .admission
                    .upgrade(conn.client_key, &snapshot.admission)
                {
                    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    return refuse(Refusal::UpgradeRate { retry_after_secs });
                }
            }
            let request = Forwarded {
                host,
                normalised,
                expected_accept,
            };
            forward(req, conn, bind, target, request).await
        }
    }
}

/// Requests are routed by their host, whichever certificate the TLS handshake showed (as
/// nginx, HAProxy and Azure's multi-site listeners do): a client that asked for one site by
/// SNI and another by `Host` (e.g. reusing a connection for a name its certificate also
/// covers) gets the site its `Host` names. Logged at debug level.
fn misdirected(bind: &BindRoutes, tls_site: usize, decision: &Decision<'_, Arc<Upstream>>) {
    let routed = match decision {
        Decision::Forward { route, .. }
        | Decision::Redirect { route, .. }
        | Decision::NoHostToRedirectTo { route } => Some(route.listener),
        Decision::NoSite => None,
    };
    let shown = bind.router.listener(tls_site);
    if routed != shown {
        tracing::debug!(
            sni_listener = shown.unwrap_or("-"),
            host_listener = routed.unwrap_or("-"),
            "the request's host routes to another listener than the TLS certificate's; \
             routing by host"
        );
    }
}

/// Names the route in the connection's span (and for the request metrics).
fn record(route: Route<'_>, routed: &mut Option<(String, String)>) {
    *routed = Some((route.listener.to_owned(), route.rule.to_owned()));
    let path_rule = route.path_rule.map(|p| format!("/{p}")).unwrap_or_default();
    tracing::Span::current().record(
        "route",
        tracing::field::display(format_args!("{}/{}{path_rule}", route.listener, route.rule)),
    );
}

/// What checking and routing learnt about a request that is forwarded.
struct Forwarded {
    host: Option<RequestHost>,
    /// The normal form of its path, when it differs from the one it came with.
    normalised: Option<String>,
    /// A WebSocket upgrade's `Sec-WebSocket-Accept`, to check the backend's `101` against.
    expected_accept: Option<String>,
}

/// An ordinary request with its body read ahead, or an upgrade (which has no body).
enum Outgoing {
    Http(Request<Upload>),
    Upgrade {
        req: Request<Incoming>,
        expected_accept: String,
    },
}

impl Outgoing {
    fn head(&self) -> (&Method, &http::Uri, &http::HeaderMap) {
        match self {
            Self::Http(req) => (req.method(), req.uri(), req.headers()),
            Self::Upgrade { req, .. } => (req.method(), req.uri(), req.headers()),
        }
    }
}

/// Reads an ordinary request's body ahead (`[global] request_buffer_bytes`, under the body
/// timeout) before a backend is chosen, so a slow upload holds no backend connection.
async fn read_ahead(
    req: Request<Incoming>,
    shared: &Shared,
) -> Result<Request<Upload>, Response<Body>> {
    let (limit, timeout) = {
        let global = &shared.snapshot.load().config.global;
        (global.request_buffer_bytes, global.request_body_timeout)
    };
    let (parts, body) = req.into_parts();
    let gauge = shared.metrics.request_buffer_gauge();
    match Upload::read(body, limit, timeout, gauge).await {
        Ok(upload) => {
            if !upload.is_whole() {
                tracing::debug!(
                    buffer_bytes = limit,
                    "the request body is larger than the buffer; streaming the rest"
                );
            }
            Ok(Request::from_parts(parts, upload))
        }
        Err(error) => {
            let req = Request::from_parts(parts, ());
            Err(refuse(&req, error.into(), shared))
        }
    }
}

async fn forward(
    mut req: Request<Incoming>,
    conn: &Conn,
    bind: &BindRoutes,
    upstream: &Upstream,
    request: Forwarded,
) -> Response<Body> {
    let Forwarded {
        host,
        normalised,
        expected_accept,
    } = request;
    // The backend is sent the path the rules matched.
    if let Some(path) = normalised {
        match with_path(req.uri(), &path) {
            Some(uri) => {
                tracing::debug!(target = %req.uri(), %path, "request path normalised");
                *req.uri_mut() = uri;
            }
            None => return refuse(&req, Refusal::BadTarget, &conn.shared),
        }
    }
    let outgoing = match expected_accept {
        Some(expected_accept) => Outgoing::Upgrade {
            req,
            expected_accept,
        },
        None => match read_ahead(req, &conn.shared).await {
            Ok(req) => Outgoing::Http(req),
            Err(refused) => return refused,
        },
    };
    let https = bind.protocol == Protocol::Https;
    let (method, uri, headers) = outgoing.head();
    let pick = match upstream.pick(headers, https) {
        Ok(pick) => pick,
        Err(none) => return refuse_head(method, uri, none.into(), &conn.shared),
    };
    let backend = pick.backend;
    tracing::Span::current().record("backend", tracing::field::display(backend.addr));
    let original_host = host.as_ref().map(|h| h.original.as_str());
    let backend_host = upstream
        .backend_host(backend, original_host)
        .map_or_else(|| backend.addr.to_string(), str::to_owned);
    let out = Outbound {
        shared: &conn.shared,
        upstream,
        backend,
        lease: &pick.lease,
        client: conn.client,
        forwarding: Forwarding {
            client: conn.client.ip(),
            proto: bind.protocol,
            port: bind.port,
            original_host,
            host: &backend_host,
        },
    };
    let result = match outgoing {
        Outgoing::Http(req) => forward::http(req, &out).await,
        Outgoing::Upgrade {
            req,
            expected_accept,
        } => websocket::forward(req, &out, &expected_accept)
            .await
            .map(|(resp, pending)| {
                if let Some(pending) = pending {
                    conn.hand_over(pending);
                }
                resp
            }),
    };
    match &result {
        Ok(_) => backend.health.passive_success(),
        Err(err) if err.backend_failing() => backend
            .health
            .passive_failure(&upstream.settings.passive, err),
        Err(_) => {}
    }
    match result {
        Ok(mut resp) => {
            if let Some(cookie) = pick.set_cookie {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            // The backend is read no faster than the client takes its answer.
            resp.map(|body| Paced::new(body, conn.outflow.clone()).boxed())
        }
        Err(err) => {
            if err.status().is_client_error() {
                tracing::info!(error = %err, "request refused");
            } else {
                tracing::warn!(error = %err, "request failed");
            }
            let mut resp = text(err.status(), &err.client_message());
            if err.closes() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    }
}

/// Whether the request target is printable ASCII only. hyper's parser lets bytes past
/// ASCII through in the path (for clients that send UTF-8 raw); a proxy does not pass on
/// what its routing and the backend could read differently.
fn printable_target(uri: &http::Uri) -> bool {
    uri.path_and_query()
        .is_none_or(|pq| pq.as_str().bytes().all(|b| b.is_ascii_graphic()))
}

/// `uri` with its path replaced (and its query kept).
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// The gateway's own answer to `req`, logged (and counted when it refuses an upgrade).
fn refuse<B>(req: &Request<B>, refusal: Refusal, shared: &Shared) -> Response<Body> {
    refuse_head(req.method(), req.uri(), refusal, shared)
}

fn refuse_head(
    method: &Method,
    uri: &http::Uri,
    refusal: Refusal,
    shared: &Shared,
) -> Response<Body> {
    let kind = refusal.kind();
    match &refusal {
        Refusal::NoHealthyBackend(none) => {
            tracing::warn!(pool = %none.pool, backends = none.count, "no healthy backend");
        }
        Refusal::UpgradeRate { retry_after_secs } => {
            // Debug only: a client over its rate would otherwise write the log for it.
            shared.metrics.upgrade_rate_limited();
            tracing::debug!(retry_after_secs, %uri, "upgrade over the client's rate: 429");
        }
        Refusal::Upgrade(_) => {
            shared.metrics.upgrade_rejected();
            tracing::info!(reason = %refusal, kind, %method, %uri, "upgrade rejected");
        }
        _ => tracing::info!(reason = %refusal, kind, %method, %uri, "request refused"),
    }
    refusal.response()
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = text(status, &format!("moved to {location}"));
    match HeaderValue::from_str(location) {
        Ok(value) => {
            resp.headers_mut().insert(header::LOCATION, value);
            resp
        }
        Err(_) => Refusal::BadRedirectLocation.response(),
    }
}
