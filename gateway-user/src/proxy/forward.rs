//! An ordinary request to its backend, over the pooled client, bodies streamed both ways.

use std::{future::Future, time::Duration};

use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

use super::{
    deadline::{self, Progress, ProgressWatch},
    error::BackendError,
    headers::{self, Forwarding},
    upgrade::BadSwitch,
    upload::Upload,
};
use crate::{
    body::Body,
    health::Lease,
    shared::Shared,
    upstream::{connect::backend_uri, Backend, Upstream},
};

/// One request on its way to a chosen backend.
pub struct Outbound<'a> {
    pub shared: &'a Shared,
    pub upstream: &'a Upstream,
    pub backend: &'a Backend,
    /// Counts the request on the backend; a tunnel takes a lease of its own.
    pub lease: &'a Lease,
    /// The client's address (for the tunnel's log line and `/tunnels`).
    pub client: std::net::SocketAddr,
    pub forwarding: Forwarding<'a>,
}

impl Outbound<'_> {
    /// How long the backend may take to answer with a head: the settings' request timeout
    /// or the gateway's handshake timeout, whichever is shorter, with its name.
    fn answer_timeout(&self) -> (Duration, &'static str) {
        let request = self.upstream.settings.request_timeout;
        let handshake = self.shared.handshake_timeout();
        if request <= handshake {
            (request, "request timeout")
        } else {
            (handshake, "handshake timeout")
        }
    }

    /// Runs `exchange` (connect, send the request, read the answer head) under the answer
    /// timeout; see [`deadline::deadline`] for how a request body counts. Once the head is
    /// in, nothing here times out: a tunnel or a streamed response body lives under its own
    /// limits.
    pub async fn within_answer_timeout<T>(
        &self,
        body_progress: ProgressWatch,
        exchange: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let (timeout, which) = self.answer_timeout();
        tokio::select! {
            result = exchange => result,
            () = deadline::deadline(body_progress, timeout) => Err(BackendError::Timeout {
                backend: self.backend.addr,
                which,
                timeout,
            }),
        }
    }
}

/// Forwards `req` (its body read ahead, or some of it) and returns the backend's answer,
/// its body streaming.
pub async fn http(
    req: Request<Upload>,
    out: &Outbound<'_>,
) -> Result<Response<Body>, BackendError> {
    let (mut parts, body) = req.into_parts();
    headers::to_backend(&mut parts.headers, &out.forwarding);
    // The client picks its pool by the URI's scheme and authority (with the server name
    // of an https backend), and sends the origin form.
    let server_name = out.backend.server_name.as_ref();
    parts.uri = backend_uri(out.backend.addr, server_name, parts.uri.path_and_query());
    let client = out
        .upstream
        .tls
        .as_ref()
        .map_or(&out.shared.client, |tls| &tls.client);
    parts.version = Version::HTTP_11;
    let (body, progress) = Progress::new(body);
    let body_failed = body.failures();
    let request = Request::from_parts(parts, body.boxed());
    let addr = out.backend.addr;
    let resp = out
        .within_answer_timeout(progress, async {
            client.request(request).await.map_err(|e| {
                if body_failed.get() {
                    BackendError::client_body(&e)
                } else {
                    BackendError::client(addr, &e)
                }
            })
        })
        .await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Nothing was asked to switch: the backend is broken, and its bytes from here on
        // would be a protocol the client never agreed to.
        return Err(BackendError::BadUpgrade {
            backend: addr,
            why: BadSwitch::Unasked,
        });
    }
    Ok(strip_response(resp.map(BodyExt::boxed)))
}

/// Hop-by-hop headers of the backend's answer go.
pub fn strip_response(mut resp: Response<Body>) -> Response<Body> {
    headers::strip_hop_by_hop(resp.headers_mut());
    resp
}
