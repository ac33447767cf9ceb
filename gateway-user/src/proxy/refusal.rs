//! The answers the gateway gives itself, instead of a backend's: why, as one enum, with the
//! status and the one-line reason the client reads. Failures of a backend are
//! [`super::error::BackendError`]; these are the request's own faults, and the two cases
//! where no backend can take it.

use http::{header, HeaderValue, Response, StatusCode};

use super::upgrade::{self, UpgradeError};
use crate::{
    body::{text, Body, BodyError},
    config::path::PathError,
    route::HostError,
    upstream::NoHealthyBackend,
};

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// hyper would take the body as chunked and drop Content-Length; a proxy refuses.
    #[error("a request must not carry both Transfer-Encoding and Content-Length")]
    FramingConflict,
    #[error("CONNECT and asterisk-form requests are not forwarded")]
    NotForwarded,
    /// Raw bytes a URI may not hold (RFC 3986: controls, space, anything past ASCII): a
    /// backend might decode them differently from the routing.
    #[error("the request target holds bytes outside printable ASCII: percent-encode them")]
    BadTarget,
    /// A path without a normal form the rules could match safely (`crate::config::path`).
    #[error("{0}")]
    BadPath(PathError),
    #[error("{0}")]
    Host(#[from] HostError),
    /// Asks for a WebSocket upgrade but breaks RFC 6455's rules.
    #[error("{0}")]
    Upgrade(#[from] UpgradeError),
    /// A reload removed the bind while the request's head was on its way.
    #[error("this listener was removed from the configuration")]
    BindRemoved,
    #[error("no listener on this address serves host {0:?}")]
    NoSite(String),
    #[error("the request has no Host to redirect to")]
    NoHostToRedirectTo,
    /// The host and path came from a request hyper accepted, so this does not happen.
    #[error("cannot build the redirect location")]
    BadRedirectLocation,
    /// Azure answers 502 when no backend of the pool is healthy.
    #[error("bad gateway: {0}")]
    NoHealthyBackend(#[from] NoHealthyBackend),
    /// The client's address started more upgrades than `upgrades_per_ip_per_sec` (after
    /// its burst) allows; the next one passes after `retry_after_secs`.
    #[error("too many WebSocket upgrades from your address; retry in {retry_after_secs} s")]
    UpgradeRate { retry_after_secs: u64 },
    /// The request body stalled while it was read ahead (nginx's `client_body_timeout`).
    #[error("request timeout: no byte of the request body came for {}s", .0.as_secs())]
    BodyTimeout(std::time::Duration),
    /// The request body failed while it was read ahead: malformed chunked framing, or the
    /// client closed its connection mid-body.
    #[error("bad request: the request body is malformed or incomplete")]
    BadBody(#[source] hyper::Error),
}

impl From<BodyError> for Refusal {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::Timeout(timeout) => Self::BodyTimeout(timeout),
            BodyError::Client(error) => Self::BadBody(error),
        }
    }
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::FramingConflict
            | Self::BadTarget
            | Self::BadPath(_)
            | Self::Host(_)
            | Self::NoHostToRedirectTo
            | Self::BadRedirectLocation
            | Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::NotForwarded => StatusCode::METHOD_NOT_ALLOWED,
            Self::Upgrade(err) => err.status(),
            Self::BindRemoved => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoSite(_) => StatusCode::NOT_FOUND,
            Self::NoHealthyBackend(_) => StatusCode::BAD_GATEWAY,
            Self::UpgradeRate { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// One word per variant, for the log line.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::FramingConflict => "framing_conflict",
            Self::NotForwarded => "not_forwarded",
            Self::BadTarget => "bad_target",
            Self::BadPath(err) => err.kind(),
            Self::Host(_) => "bad_host",
            Self::Upgrade(_) => "bad_upgrade",
            Self::BindRemoved => "bind_removed",
            Self::NoSite(_) => "no_site",
            Self::NoHostToRedirectTo => "no_host_to_redirect_to",
            Self::BadRedirectLocation => "bad_redirect_location",
            Self::NoHealthyBackend(_) => "no_healthy_backend",
            Self::UpgradeRate { .. } => "upgrade_rate",
            Self::BodyTimeout(_) => "body_timeout",
            Self::BadBody(_) => "bad_body",
        }
    }

    /// Whether the connection closes after this answer: the request's bytes cannot be
    /// trusted to end where its head says (a target past ASCII, an upgrade with a body),
    /// or its body was not read to the end, so nothing after them is read as a next
    /// request.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Self::BadTarget
                | Self::Upgrade(UpgradeError::Body)
                | Self::BodyTimeout(_)
                | Self::BadBody(_)
        )
    }

    /// The answer: the status and the reason on one line; a `426` also names the version
    /// the gateway speaks.
    pub fn response(&self) -> Response<Body> {
        let mut resp = text(self.status(), &self.to_string());
        if self.closes() {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::UpgradeRate { retry_after_secs } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if let Self::Upgrade(err) = self {
            if err.status() == StatusCode::UPGRADE_REQUIRED {
                resp.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(upgrade::WEBSOCKET_VERSION),
                );
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_words() {
        let cases = [
            (
                Refusal::FramingConflict,
                400,
                "a request must not carry both",
            ),
            (Refusal::NotForwarded, 405, "CONNECT and asterisk-form"),
            (Refusal::BadTarget, 400, "outside printable ASCII"),
            (
                Refusal::BadPath(PathError::EscapedSlash),
                400,
                "encoded slash",
            ),
            (
                Refusal::Host(HostError::Missing),
                400,
                "without a Host header",
            ),
            (Refusal::BindRemoved, 503, "this listener was removed"),
            (
                Refusal::NoSite("x.test".into()),
                404,
                "serves host \"x.test\"",
            ),
            (Refusal::NoHostToRedirectTo, 400, "no Host to redirect to"),
            (
                BodyError::Timeout(std::time::Duration::from_secs(60)).into(),
                408,
                "no byte of the request body came for 60s",
            ),
            (
                NoHealthyBackend {
                    pool: "p".into(),
                    count: 2,
                }
                .into(),
                502,
                "bad gateway: no healthy backend in pool \"p\"",
            ),
        ];
        for (refusal, status, words) in cases {
            assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
            assert!(refusal.to_string().contains(words), "{refusal}");
        }
        let rate = Refusal::UpgradeRate {
            retry_after_secs: 2,
        }
        .response();
        assert_eq!(rate.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rate.headers()[header::RETRY_AFTER], "2");
        let timeout = Refusal::BodyTimeout(std::time::Duration::from_secs(1)).response();
        assert_eq!(
            timeout.headers()[header::CONNECTION],
            "close",
            "the body was not read"
        );
        let version = Refusal::from(UpgradeError::UnsupportedVersion("8".into()));
        let resp = version.response();
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }
}
