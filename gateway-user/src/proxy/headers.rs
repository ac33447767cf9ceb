//! Header rewriting between client and backend.

use std::net::IpAddr;

use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::config::Protocol;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-original-host");

/// What the gateway tells a backend about the client's request, as Azure does.
#[derive(Clone, Copy, Debug)]
pub struct Forwarding<'a> {
    pub client: IpAddr,
    /// The listener's protocol and port.
    pub proto: Protocol,
    pub port: u16,
    /// The client's host as received (`X-Original-Host`); `None` when it sent none.
    pub original_host: Option<&'a str>,
    /// The `Host` for the backend.
    pub host: &'a str,
}

/// Rewrites a request head for the backend: hop-by-hop headers go (see
/// [`strip_hop_by_hop`]), `X-Forwarded-For` gets the client appended, `X-Forwarded-Proto`,
/// `X-Forwarded-Port` and `X-Original-Host` are set (replacing what the client sent), and
/// `Host` is the one chosen by the backend settings.
pub fn to_backend(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    strip_hop_by_hop(headers);
    drop_unusual_names(headers);
    append_forwarded_for(headers, forwarding.client);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(forwarding.proto.as_str()),
    );
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(forwarding.port));
    match forwarding
        .original_host
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        Some(value) => headers.insert(X_ORIGINAL_HOST, value),
        None => headers.remove(X_ORIGINAL_HOST),
    };
    if let Ok(host) = HeaderValue::from_str(forwarding.host) {
        headers.insert(header::HOST, host);
    }
}

/// Removes headers whose names hold anything but letters, digits and `-` (`_`, `.`, ...):
/// some backends (CGI, PHP, some frameworks) read `Transfer_Encoding` as
/// `Transfer-Encoding`, so forwarding such a name next to the framing the gateway checked
/// would be a smuggling path. Azure Application Gateway drops them, and nginx ignores them
/// unless `underscores_in_headers` is on.
pub fn drop_unusual_names(headers: &mut HeaderMap) {
    let unusual: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            !name
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .cloned()
        .collect();
    for name in unusual {
        tracing::debug!(header = %name, "header name with characters other than letters, digits and '-' dropped");
        headers.remove(name);
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the historical RFC 2616 list).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header names, and
/// `Upgrade` (each caller re-adds it where an upgrade is being forwarded).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Appends the client's address to `X-Forwarded-For`, keeping what earlier proxies wrote.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    const XFF: HeaderName = X_FORWARDED_FOR;
    let prior: Vec<&str> = headers
        .get_all(&XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        client.to_string()
    } else {
        format!("{}, {client}", prior.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(XFF, value);
    }
}

/// Marks a request or response as a WebSocket upgrade.
pub fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().expect("ip"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        append_forwarded_for(&mut h, "::1".parse().expect("ip"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
    }

    #[test]
    fn backend_headers_are_set_as_azure_sets_them() {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("www.example.com:8080"),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-original-host", HeaderValue::from_static("spoofed"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let forwarding = Forwarding {
            client: "10.0.0.9".parse().expect("ip"),
            proto: Protocol::Http,
            port: 8080,
            original_host: Some("www.example.com:8080"),
            host: "internal.example",
        };
        to_backend(&mut h, &forwarding);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-original-host"], "www.example.com:8080");
        assert_eq!(h[header::HOST], "internal.example");
        assert!(!h.contains_key(header::CONNECTION));

        let without_host = Forwarding {
            original_host: None,
            ..forwarding
        };
        to_backend(&mut h, &without_host);
        assert!(
            !h.contains_key("x-original-host"),
            "a client's own value never passes"
        );
    }
}
