//! The HTTP body type the gateway passes around, inbound and outbound, and the small
//! bodies it writes itself.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Every response body, and the request bodies of WebSocket upgrades (empty): a backend's
/// streamed through, or one of the gateway's own.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A client's request body on its way to a backend (`proxy::upload`): what it read
/// before the backend was chosen, then the rest as it comes.
pub type RequestBody = BoxBody<Bytes, BodyError>;

/// Why a client's request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Malformed chunked framing, or the client closed or reset its connection mid-body.
    #[error("the client's request body failed: {0}")]
    Client(#[source] hyper::Error),
    /// No byte of it came for the body timeout (nginx's `client_body_timeout`).
    #[error("no byte of the request body came for {}s", .0.as_secs())]
    Timeout(std::time::Duration),
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A response with a one-line plain-text body.
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
