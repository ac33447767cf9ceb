//! An ordinary request to its backend, over the pooled client, bodies streamed both ways.

use std::{future::Future, net::SocketAddr, time::Duration};

use http::{uri::PathAndQuery, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{
    deadline::{self, Progress, ProgressWatch},
    error::BackendError,
    handler::Body,
    headers::{self, Forwarding},
    Shared,
};
use crate::upstream::{Backend, Upstream};

/// One request on its way to a chosen backend.
pub struct Outbound<'a> {
    pub shared: &'a Shared,
    pub upstream: &'a Upstream,
    pub backend: &'a Backend,
    pub forwarding: Forwarding<'a>,
}

impl Outbound<'_> {
    /// How long the backend may take to answer with a head: the settings' request timeout
    /// or the gateway's handshake timeout, whichever is shorter, with its name.
    fn answer_timeout(&self) -> (Duration, &'static str) {
        let request = self.upstream.settings.request_timeout;
        let handshake = self.shared.handshake_timeout;
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

/// Forwards `req` and returns the backend's answer, its body streaming.
pub async fn http(
    req: Request<Incoming>,
    out: &Outbound<'_>,
) -> Result<Response<Body>, BackendError> {
    let (mut parts, body) = req.into_parts();
    headers::to_backend(&mut parts.headers, &out.forwarding);
    // The client picks its pool by the URI's authority, and sends the origin form.
    parts.uri = backend_uri(out.backend.addr, parts.uri.path_and_query());
    parts.version = Version::HTTP_11;
    let (body, progress) = Progress::new(body);
    let request = Request::from_parts(parts, body.boxed());
    let addr = out.backend.addr;
    let resp = out
        .within_answer_timeout(progress, async {
            out.shared
                .client
                .request(request)
                .await
                .map_err(|e| BackendError::client(addr, &e))
        })
        .await?;
    Ok(strip_response(resp.map(BodyExt::boxed)))
}

/// `http://ADDR/path?query`.
fn backend_uri(addr: SocketAddr, path_and_query: Option<&PathAndQuery>) -> Uri {
    let path = path_and_query.map_or("/", PathAndQuery::as_str);
    // An IP:PORT authority and a path that already parsed as one build a valid URI.
    Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// Hop-by-hop headers of the backend's answer go.
pub fn strip_response(mut resp: Response<Body>) -> Response<Body> {
    headers::strip_hop_by_hop(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_uris_carry_the_address_and_the_path() {
        let addr: SocketAddr = "[::1]:8080".parse().expect("addr");
        let pq = PathAndQuery::from_static("/a/b?c=d");
        assert_eq!(
            backend_uri(addr, Some(&pq)).to_string(),
            "http://[::1]:8080/a/b?c=d"
        );
        assert_eq!(
            backend_uri("10.0.0.1:80".parse().expect("addr"), None).to_string(),
            "http://10.0.0.1:80/"
        );
    }
}
