//! The request's host (`route/host.rs`): a request target and `Host` headers from arbitrary
//! bytes (the target on the first line, one `Host` per following line; the first byte picks
//! HTTP/1.0 or 1.1). Properties, beyond not panicking:
//! - a parsed host round-trips: parsing what the client sent again gives the same host, and
//!   the matched name parses to itself;
//! - the matched name is lowercase, without a trailing dot, and empty only when the client
//!   sent an empty host;
//! - the admin listener (`admin/access.rs`, bound to 127.0.0.1 with one configured name)
//!   accepts a request only when its host is one of those it answers to.
#![no_main]

use gateway::fuzzing::{
    admin::Access,
    host::{parse_host, request_host, HostError, RequestHost},
};
use http::{header, HeaderMap, HeaderValue, Uri, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let version = if flags & 1 == 0 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let Some(Ok(uri)) = lines.next().map(Uri::try_from) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        // hyper refuses a request with a value it cannot hold.
        let Ok(value) = HeaderValue::from_bytes(line) else {
            return;
        };
        headers.append(header::HOST, value);
    }
    let admin = Access {
        bind: ([127, 0, 0, 1], 9090).into(),
        names: &["gw.example".to_owned()],
        token: None,
    };
    if admin.check(&uri, version, &headers).is_ok() {
        let host = request_host(&uri, &headers, version);
        let name = host
            .expect("accepted, so valid")
            .expect("accepted, so present")
            .name;
        assert!(
            ["127.0.0.1", "localhost", "gw.example"].contains(&name.as_str()),
            "the admin accepted the host {name:?}"
        );
    }
    match request_host(&uri, &headers, version) {
        Ok(Some(host)) => check(&host),
        Ok(None) => {
            assert_eq!(version, Version::HTTP_10);
            assert!(headers.is_empty() && uri.authority().is_none());
        }
        Err(HostError::Missing) => assert!(headers.is_empty() && version == Version::HTTP_11),
        Err(HostError::Multiple) => assert!(headers.len() > 1),
        Err(HostError::Invalid(_)) => {}
    }
    // The text alone, as the admin listener parses an `Origin`'s authority.
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(host) = parse_host(text) {
            check(&host);
        }
    }
});

fn check(host: &RequestHost) {
    assert_eq!(host.name, host.name.to_ascii_lowercase(), "{host:?}");
    assert!(!host.name.ends_with('.'), "{host:?}");
    assert_eq!(host.name.is_empty(), host.original.is_empty(), "{host:?}");
    assert_eq!(parse_host(&host.original).as_ref(), Ok(host), "round trip");
    let again = parse_host(&host.name).expect("the name parses");
    assert_eq!(again.name, host.name, "the name is a host of its own");
}
