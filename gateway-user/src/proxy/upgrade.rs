//! RFC 6455 upgrade rules, sans-io: request head in, decision out.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 §1.3, appended to the key to compute `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only WebSocket version (RFC 6455 §4.1).
pub const WEBSOCKET_VERSION: &str = "13";

/// What a request is, as far as WebSocket goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Classified {
    /// No `Upgrade: websocket`: an ordinary HTTP request.
    Http,
    /// A valid RFC 6455 opening handshake; carries the `Sec-WebSocket-Accept` the backend
    /// must answer with.
    WebSocket { expected_accept: String },
    /// Asks for a WebSocket upgrade but breaks the rules.
    Invalid(UpgradeError),
}

/// Why an upgrade request was refused; the message is sent to the client as is.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("WebSocket upgrade requires the GET method, not {0}")]
    Method(String),
    #[error("WebSocket upgrade requires HTTP/1.1")]
    HttpVersion,
    #[error("WebSocket upgrade requires a Host header")]
    MissingHost,
    #[error("WebSocket upgrade requires \"Connection: Upgrade\"")]
    ConnectionNotUpgrade,
    #[error("WebSocket upgrade requires Sec-WebSocket-Version: 13")]
    MissingVersion,
    #[error("unsupported Sec-WebSocket-Version {0:?}; this gateway speaks version 13")]
    UnsupportedVersion(String),
    #[error("WebSocket upgrade requires a Sec-WebSocket-Key header")]
    MissingKey,
    #[error("Sec-WebSocket-Key must be base64 of exactly 16 bytes")]
    BadKey,
    /// RFC 6455's opening handshake is a GET without a body; what would follow it is the
    /// tunnel's, so a body cannot be told from the first frames.
    #[error("a WebSocket upgrade request must not carry a body")]
    Body,
}

impl UpgradeError {
    /// 426 asks the client to retry with version 13 (RFC 6455 §4.4); all else is 400.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedVersion(_) | Self::MissingVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Classifies a request head (RFC 6455 §4.2.1).
pub fn classify(method: &Method, version: Version, headers: &HeaderMap) -> Classified {
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Classified::Http;
    }
    match validate(method, version, headers) {
        Ok(expected_accept) => Classified::WebSocket { expected_accept },
        Err(err) => Classified::Invalid(err),
    }
}

fn validate(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<String, UpgradeError> {
    if method != Method::GET {
        return Err(UpgradeError::Method(method.to_string()));
    }
    if version != Version::HTTP_11 {
        return Err(UpgradeError::HttpVersion);
    }
    if !headers.contains_key(header::HOST) {
        return Err(UpgradeError::MissingHost);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(UpgradeError::ConnectionNotUpgrade);
    }
    let empty = |v: &http::HeaderValue| v.as_bytes().trim_ascii() == b"0";
    if headers.contains_key(header::TRANSFER_ENCODING)
        || !headers.get_all(header::CONTENT_LENGTH).iter().all(empty)
    {
        return Err(UpgradeError::Body);
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        None => return Err(UpgradeError::MissingVersion),
        Some(v) if v.as_bytes().trim_ascii() == WEBSOCKET_VERSION.as_bytes() => {}
        Some(v) => {
            return Err(UpgradeError::UnsupportedVersion(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ))
        }
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(UpgradeError::MissingKey)?;
    let key = key.as_bytes().trim_ascii();
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
        _ => Err(UpgradeError::BadKey),
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha1.finalize())
}

/// Checks a backend's `101` against the client's key; `Err` names what is wrong.
pub fn check_switching_protocols(
    headers: &HeaderMap,
    expected_accept: &str,
) -> Result<(), BadSwitch> {
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(BadSwitch::NotWebSocket);
    }
    match headers.get(header::SEC_WEBSOCKET_ACCEPT) {
        Some(v) if v.as_bytes().trim_ascii() == expected_accept.as_bytes() => Ok(()),
        Some(_) => Err(BadSwitch::WrongAccept),
        None => Err(BadSwitch::NoAccept),
    }
}

/// Why a backend's `101` does not complete the client's WebSocket handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadSwitch {
    #[error("101 without Upgrade: websocket")]
    NotWebSocket,
    #[error("Sec-WebSocket-Accept does not match the client's key")]
    WrongAccept,
    #[error("101 without Sec-WebSocket-Accept")]
    NoAccept,
    /// A `101` to a request that asked for no upgrade.
    #[error("101 to a request that asked for no upgrade")]
    Unasked,
}

/// Whether a comma-separated header holds `token`, case-insensitively, in any of its lines.
pub fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value: &HeaderValue| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::header_map as headers;

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("host", "server.example.com"),
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]
    }

    fn without(name: &str) -> HeaderMap {
        headers(
            &good()
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn rfc_example_is_accepted_with_the_rfc_accept_value() {
        let got = classify(&Method::GET, Version::HTTP_11, &headers(&good()));
        // RFC 6455 §1.3 gives this exact value for the sample key.
        let want = Classified::WebSocket {
            expected_accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
        };
        assert_eq!(got, want);
    }

    #[test]
    fn plain_requests_are_http() {
        assert_eq!(
            classify(&Method::GET, Version::HTTP_11, &without("upgrade")),
            Classified::Http
        );
    }

    #[test]
    fn each_broken_rule_has_its_own_reason_and_status() {
        let cases = [
            (
                Method::POST,
                without("nothing"),
                UpgradeError::Method("POST".into()),
            ),
            (Method::GET, without("host"), UpgradeError::MissingHost),
            (
                Method::GET,
                without("connection"),
                UpgradeError::ConnectionNotUpgrade,
            ),
            (
                Method::GET,
                without("sec-websocket-version"),
                UpgradeError::MissingVersion,
            ),
            (
                Method::GET,
                without("sec-websocket-key"),
                UpgradeError::MissingKey,
            ),
        ];
        for (method, headers, want) in cases {
            assert_eq!(
                classify(&method, Version::HTTP_11, &headers),
                Classified::Invalid(want)
            );
        }
        let mut h = headers(&good());
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let err = UpgradeError::UnsupportedVersion("8".into());
        assert_eq!(err.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            classify(&Method::GET, Version::HTTP_11, &h),
            Classified::Invalid(err)
        );

        // 15 bytes, and not base64 at all.
        for key in ["AAAAAAAAAAAAAAAAAAAA", "not base64!"] {
            let mut h = headers(&good());
            h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static(key));
            let got = classify(&Method::GET, Version::HTTP_11, &h);
            assert_eq!(got, Classified::Invalid(UpgradeError::BadKey), "key {key}");
        }
        assert_eq!(UpgradeError::BadKey.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            classify(&Method::GET, Version::HTTP_10, &headers(&good())),
            Classified::Invalid(UpgradeError::HttpVersion)
        );

        // A body, announced either way; an explicit zero length is no body.
        for (name, value, want) in [
            ("content-length", "10", Some(UpgradeError::Body)),
            ("transfer-encoding", "chunked", Some(UpgradeError::Body)),
            ("content-length", "0", None),
        ] {
            let mut h = headers(&good());
            h.insert(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            let got = classify(&Method::GET, Version::HTTP_11, &h);
            match want {
                Some(err) => assert_eq!(got, Classified::Invalid(err), "{name}: {value}"),
                None => assert!(
                    matches!(got, Classified::WebSocket { .. }),
                    "{name}: {value}"
                ),
            }
        }
    }

    #[test]
    fn backend_answer_is_checked() {
        let accept = accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        let ok = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        assert_eq!(check_switching_protocols(&ok, &accept), Ok(()));
        let wrong = headers(&[("upgrade", "websocket"), ("sec-websocket-accept", "AAAA")]);
        assert_eq!(
            check_switching_protocols(&wrong, &accept),
            Err(BadSwitch::WrongAccept)
        );
        assert_eq!(
            check_switching_protocols(&HeaderMap::new(), &accept),
            Err(BadSwitch::NotWebSocket)
        );
    }
}
