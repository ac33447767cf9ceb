//! The host a request is for (RFC 9112 §3.2): the authority of an absolute-form target
//! wins over `Host`; an HTTP/1.1 request needs exactly one valid `Host`.

use http::{header, uri::Authority, HeaderMap, Uri, Version};

/// The host of a request, as received and as matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHost {
    /// As the client sent it, port included (`Example.com:8080`): `X-Original-Host`, and the
    /// `Host` passed to the backend unless the settings override it.
    pub original: String,
    /// Lowercase, without port or trailing dot (`example.com`, `[::1]`); empty when the
    /// client sent an empty `Host`. What host names and redirects use.
    pub name: String,
}

/// Why a request's host is unusable; answered with `400`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("HTTP/1.1 request without a Host header")]
    Missing,
    #[error("more than one Host header")]
    Multiple,
    #[error("Host header {0:?} is not a valid host[:port]")]
    Invalid(String),
}

/// The request's host: `Ok(None)` for an HTTP/1.0 request without one.
pub fn request_host(
    uri: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<Option<RequestHost>, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Multiple);
    }
    let header_host = match host {
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                HostError::Invalid(String::from_utf8_lossy(value.as_bytes()).into())
            })?;
            Some(parse(text)?)
        }
        None if version == Version::HTTP_11 => return Err(HostError::Missing),
        None => None,
    };
    // Absolute form (`GET http://example.com/ HTTP/1.1`): the target's authority, and the
    // Host header is ignored (§3.2.2).
    match uri.authority() {
        Some(authority) => Ok(Some(parse(authority.as_str())?)),
        None => Ok(header_host),
    }
}

/// `host[:port]` → [`RequestHost`]; empty is allowed (a target without authority).
pub fn parse(text: &str) -> Result<RequestHost, HostError> {
    let invalid = || HostError::Invalid(text.to_owned());
    if text.is_empty() {
        return Ok(RequestHost {
            original: String::new(),
            name: String::new(),
        });
    }
    // An authority may carry userinfo; a Host must not (and a target's must not either,
    // RFC 9110 §4.2.4).
    if text.contains('@') {
        return Err(invalid());
    }
    let authority: Authority = text.parse().map_err(|_| invalid())?;
    let host = authority.host();
    // After the host: nothing, or ':' and a port of digits (RFC 3986 allows it empty).
    let port_ok = match authority.as_str().get(host.len()..) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|port| port.is_empty() || port.parse::<u16>().is_ok()),
        None => false,
    };
    if host.is_empty() || !port_ok {
        return Err(invalid());
    }
    // As nginx validates a host: one trailing dot is dropped (`example.com.` is
    // `example.com`), an empty label elsewhere (`a..b`, `.`) makes it invalid; a name that
    // only dots made would otherwise match as the empty host.
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || host.contains("..") {
        return Err(invalid());
    }
    Ok(RequestHost {
        original: text.to_owned(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn host(
        uri: &str,
        hosts: &[&'static str],
        version: Version,
    ) -> Result<Option<RequestHost>, HostError> {
        let mut headers = HeaderMap::new();
        for value in hosts {
            headers.append(header::HOST, HeaderValue::from_static(value));
        }
        request_host(&uri.parse().expect("uri"), &headers, version)
    }

    fn name(found: Result<Option<RequestHost>, HostError>) -> String {
        found.expect("valid").expect("a host").name
    }

    #[test]
    fn host_header_without_port_lowercase() {
        let found = host("/x", &["WWW.Example.com:8080"], Version::HTTP_11)
            .expect("valid")
            .expect("a host");
        assert_eq!(found.name, "www.example.com");
        assert_eq!(found.original, "WWW.Example.com:8080");
        assert_eq!(
            name(host("/", &["example.com."], Version::HTTP_11)),
            "example.com"
        );
        assert_eq!(name(host("/", &["[::1]:80"], Version::HTTP_11)), "[::1]");
        assert_eq!(name(host("/", &["10.0.0.1"], Version::HTTP_11)), "10.0.0.1");
    }

    #[test]
    fn absolute_form_authority_wins_over_host() {
        let found = host(
            "http://api.example.com:81/x?y",
            &["www.example.com"],
            Version::HTTP_11,
        );
        let found = found.expect("valid").expect("a host");
        assert_eq!(found.name, "api.example.com");
        assert_eq!(found.original, "api.example.com:81");
    }

    #[test]
    fn missing_multiple_and_invalid_hosts_are_refused() {
        assert_eq!(host("/", &[], Version::HTTP_11), Err(HostError::Missing));
        assert_eq!(host("/", &[], Version::HTTP_10), Ok(None));
        assert_eq!(
            host("/", &["a.com", "b.com"], Version::HTTP_11),
            Err(HostError::Multiple)
        );
        for bad in [
            "user@a.com",
            "a.com:x",
            "a.com:99999",
            "a b",
            ":80",
            "a.com:80:80",
            // Found by the `host` fuzz target: "." matched as the empty host.
            ".",
            ".:80",
            "a..com",
            "a.com..",
        ] {
            assert!(
                matches!(
                    host("/", &[bad], Version::HTTP_11),
                    Err(HostError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        let empty = host("/", &[""], Version::HTTP_11)
            .expect("valid")
            .expect("a host");
        assert_eq!(empty.name, "");
    }
}
