//! RFC 6455 upgrade validation (`proxy/upgrade.rs`) on request heads parsed from arbitrary
//! bytes as hyper parses them, and the backend's `101` check on arbitrary response heads.
//! Properties, beyond not panicking:
//! - a request is `Http` exactly when no `Upgrade` header lists `websocket`;
//! - an accepted upgrade is a GET over HTTP/1.1 with a Host, version 13, a key of 16
//!   bytes in base64 and no body; its expected accept is the RFC's hash of that key, and a
//!   `101` carrying it passes the check while one carrying another value does not;
//! - a refused one answers 400 or 426.
#![no_main]

use gateway::fuzzing::{
    framing::httparse,
    upgrade::{accept_key, check_switching_protocols, classify, BadSwitch, Classified},
};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = request.parse(data) else {
        return;
    };
    // What hyper hands the handler: a method, a version and a header map, or a 400.
    let Some(Ok(method)) = request.method.map(|m| Method::from_bytes(m.as_bytes())) else {
        return;
    };
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return,
    };
    let Some(map) = header_map(request.headers) else {
        return;
    };
    let asks = map.get_all(header::UPGRADE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    });
    let expected = match classify(&method, version, &map) {
        Classified::Http => {
            assert!(!asks, "an upgrade to websocket classified as plain HTTP");
            None
        }
        Classified::Invalid(error) => {
            assert!(asks, "a plain request refused as an upgrade: {error}");
            assert!(
                [StatusCode::BAD_REQUEST, StatusCode::UPGRADE_REQUIRED].contains(&error.status())
            );
            assert!(!error.to_string().is_empty());
            None
        }
        Classified::WebSocket { expected_accept } => {
            assert!(asks);
            assert_eq!(method, Method::GET);
            assert_eq!(version, Version::HTTP_11);
            assert!(map.contains_key(header::HOST));
            assert!(!map.contains_key(header::TRANSFER_ENCODING));
            let version = map.get(header::SEC_WEBSOCKET_VERSION).expect("a version");
            assert_eq!(version.as_bytes().trim_ascii(), b"13");
            let key = map.get(header::SEC_WEBSOCKET_KEY).expect("a key");
            let key = key.as_bytes().trim_ascii();
            assert_eq!(key.len(), 24, "base64 of 16 bytes");
            assert_eq!(expected_accept, accept_key(key));
            assert_eq!(expected_accept.len(), 28, "base64 of a SHA-1");
            let mut answer = HeaderMap::new();
            answer.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            let accept = HeaderValue::from_str(&expected_accept).expect("base64 is a value");
            answer.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            assert_eq!(check_switching_protocols(&answer, &expected_accept), Ok(()));
            answer.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("x"));
            assert_eq!(
                check_switching_protocols(&answer, &expected_accept),
                Err(BadSwitch::WrongAccept)
            );
            Some(expected_accept)
        }
    };

    // What follows the request head: a backend's answer, checked against the key.
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut response = httparse::Response::new(&mut headers);
    if let Ok(httparse::Status::Complete(_)) = response.parse(&data[len..]) {
        if let Some(map) = header_map(response.headers) {
            let expected = expected.unwrap_or_else(|| accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
            if check_switching_protocols(&map, &expected).is_ok() {
                let accept = map.get(header::SEC_WEBSOCKET_ACCEPT).expect("checked");
                assert_eq!(accept.as_bytes().trim_ascii(), expected.as_bytes());
            }
        }
    }
});

/// The headers as hyper keeps them; `None` where hyper would refuse a name or value.
fn header_map(headers: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
    }
    Some(map)
}
