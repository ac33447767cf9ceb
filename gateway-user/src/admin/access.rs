//! Who may use the admin listener, sans-io: a request head in, a refusal or nothing out.
//!
//! `POST /reload` changes what the gateway serves, so a web page open in a browser on the
//! host must not reach it. Two browser attacks, two checks:
//! - **DNS rebinding**: a page of `evil.example` whose name then resolves to 127.0.0.1
//!   sends requests to the admin port as same-origin requests, but with
//!   `Host: evil.example:PORT`. Only the admin bind's own address (any address when it is
//!   bound to all), `localhost` on loopback, and the names in `[global] admin_host_names`
//!   are accepted. The port is not compared: an ssh or `kubectl port-forward` tunnel
//!   changes it, and the name alone defeats rebinding.
//! - **Cross-site requests** (CSRF): a page elsewhere posting to `http://127.0.0.1:PORT`
//!   sends the right `Host`, but browsers add `Origin` to such a POST (and `Sec-Fetch-Site`
//!   to every request). Any `Origin` other than the admin's own (scheme `http`, the same
//!   host and port as `Host`) is refused, as is a `Sec-Fetch-Site` other than
//!   `same-origin` or `none`. Tools (curl, Prometheus) send neither header.
//!
//! Then, with `[global] admin_token_file`, every request needs
//! `Authorization: Bearer TOKEN`, compared in constant time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::{header, uri::Authority, HeaderMap, StatusCode, Uri, Version};
use sha2::{Digest, Sha256};

use crate::{
    config::AdminToken,
    route::{parse_host, request_host},
};

/// What the admin listener accepts: its bound address, the configured names, the token.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    pub bind: SocketAddr,
    pub names: &'a [String],
    pub token: Option<&'a AdminToken>,
}

/// A request the admin listener refuses; [`Refused::reason`] is the metric's label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `403`: a `Host` that is not the admin's.
    Host(String),
    /// `403`: a cross-origin request.
    Origin(String),
    /// `401`: no bearer token, or the wrong one.
    Token { presented: bool },
}

impl Refused {
    /// `gateway_admin_refused_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::Origin(_) => "origin",
            Self::Token { .. } => "token",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Token { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The one line answered and logged.
    pub fn message(&self) -> String {
        match self {
            Self::Host(why) => format!("refused: {why}"),
            Self::Origin(why) => format!("refused: {why}"),
            Self::Token { presented: false } => {
                "refused: this admin listener needs Authorization: Bearer TOKEN".to_owned()
            }
            Self::Token { presented: true } => "refused: wrong bearer token".to_owned(),
        }
    }

    /// `WWW-Authenticate` of a `401` (RFC 6750 §3).
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::Token { presented: false } => Some("Bearer realm=\"gateway admin\""),
            Self::Token { presented: true } => {
                Some("Bearer realm=\"gateway admin\", error=\"invalid_token\"")
            }
            _ => None,
        }
    }
}

impl Access<'_> {
    /// Checks a request head: `Host`, then `Origin` and `Sec-Fetch-Site`, then the token.
    pub fn check(&self, uri: &Uri, version: Version, headers: &HeaderMap) -> Result<(), Refused> {
        let host = match request_host(uri, headers, version) {
            Ok(Some(host)) if !host.name.is_empty() => host,
            Ok(_) => {
                return Err(Refused::Host(
                    "the admin listener needs a Host header".into(),
                ))
            }
            Err(error) => return Err(Refused::Host(error.to_string())),
        };
        if !self.accepts_name(&host.name) {
            return Err(Refused::Host(format!(
                "Host {:?} is not this admin listener's address or one of its \
                 admin_host_names",
                host.original
            )));
        }
        self.same_origin(&host.original, headers)?;
        match self.token {
            None => Ok(()),
            Some(token) => check_token(token, headers),
        }
    }

    /// Whether `name` (lowercase, no port) is the bind's address, `localhost` on loopback,
    /// or a configured name.
    fn accepts_name(&self, name: &str) -> bool {
        let bind = self.bind.ip();
        // Brackets hold an IPv6 address only (RFC 3986 §3.2.2): `[127.0.0.1]` is a name.
        let literal = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            None => name.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        };
        let configured = self.names.iter().any(|configured| match literal {
            Some(ip) => configured.parse::<IpAddr>() == Ok(ip),
            None => configured == name,
        });
        configured
            || match literal {
                // A page's origin is a name, so an address never comes from rebinding.
                Some(ip) => ip == bind || bind.is_unspecified(),
                None => name == "localhost" && (bind.is_loopback() || bind.is_unspecified()),
            }
    }

    /// Refuses an `Origin` other than `http://HOST` (`HOST` as the request's `Host`, port
    /// included), and a `Sec-Fetch-Site` other than `same-origin` or `none`.
    fn same_origin(&self, host: &str, headers: &HeaderMap) -> Result<(), Refused> {
        let cross = |what: String| Refused::Origin(format!("cross-origin request ({what})"));
        let mut origins = headers.get_all(header::ORIGIN).iter();
        if let Some(origin) = origins.next() {
            let text = String::from_utf8_lossy(origin.as_bytes());
            if origins.next().is_some() {
                return Err(cross("more than one Origin".into()));
            }
            if !is_origin_of(&text, host) {
                return Err(cross(format!("Origin {text:?}, not http://{host}")));
            }
        }
        for site in headers.get_all("sec-fetch-site") {
            let site = site.as_bytes().trim_ascii();
            if !site.eq_ignore_ascii_case(b"same-origin") && !site.eq_ignore_ascii_case(b"none") {
                let site = String::from_utf8_lossy(site);
                return Err(cross(format!("Sec-Fetch-Site: {site}")));
            }
        }
        Ok(())
    }
}

/// Whether `origin` is the serialized origin `http://HOST[:PORT]` of the request's `host`
/// (RFC 6454: scheme, host and port; the port 80 written or not).
fn is_origin_of(origin: &str, host: &str) -> bool {
    let Some(authority) = origin.strip_prefix("http://") else {
        // `null` (a sandboxed page, a file), `https://`, anything else.
        return false;
    };
    let (Ok(origin), Ok(host)) = (parse_host(authority), parse_host(host)) else {
        return false;
    };
    origin.name == host.name && port(&origin.original) == port(&host.original)
}

/// The port of `host[:port]`, 80 when none is written.
fn port(text: &str) -> u16 {
    text.parse::<Authority>()
        .ok()
        .and_then(|authority| authority.port_u16())
        .unwrap_or(80)
}

/// `Authorization: Bearer TOKEN` (the scheme without case, RFC 6750 §2.1), compared as
/// SHA-256 digests so the time taken says nothing of the token, not even its length.
fn check_token(token: &AdminToken, headers: &HeaderMap) -> Result<(), Refused> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        let presented = headers.contains_key(header::AUTHORIZATION);
        return Err(Refused::Token { presented });
    };
    let value = value.as_bytes();
    let presented = match value.split_first_chunk::<7>() {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => return Err(Refused::Token { presented: true }),
    };
    let (want, got) = (Sha256::digest(token.secret()), Sha256::digest(presented));
    let difference = want
        .iter()
        .zip(got.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if difference == 0 {
        Ok(())
    } else {
        Err(Refused::Token { presented: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::header_map as head;

    fn check(
        bind: &str,
        names: &[&str],
        pairs: &[(&'static str, &'static str)],
    ) -> Result<(), Refused> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let access = Access {
            bind: bind.parse().expect("bind"),
            names: &names,
            token: None,
        };
        access.check(&Uri::from_static("/reload"), Version::HTTP_11, &head(pairs))
    }

    #[test]
    fn the_bind_address_localhost_on_loopback_and_configured_names_are_accepted() {
        for host in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "localhost:9090",
            "LOCALHOST.",
            "localhost:1",
        ] {
            assert_eq!(
                check("127.0.0.1:9090", &[], &[("host", host)]),
                Ok(()),
                "{host}"
            );
        }
        assert_eq!(check("[::1]:9090", &[], &[("host", "[::1]:9090")]), Ok(()));
        assert_eq!(
            check("[::1]:9090", &[], &[("host", "localhost:9090")]),
            Ok(())
        );
        // Bound to all: any address, never a name unless configured.
        assert_eq!(
            check("0.0.0.0:9090", &[], &[("host", "10.1.2.3:9090")]),
            Ok(())
        );
        assert_eq!(
            check("0.0.0.0:9090", &[], &[("host", "[fe80::1]:9090")]),
            Ok(())
        );
        let names = ["gw-admin.internal", "10.9.9.9", "::2"];
        for host in ["GW-Admin.internal:9090", "10.9.9.9", "[::2]:9090"] {
            assert_eq!(
                check("10.0.0.5:9090", &names, &[("host", host)]),
                Ok(()),
                "{host}"
            );
        }
    }

    #[test]
    fn foreign_missing_and_doubled_hosts_are_refused() {
        for pairs in [
            &[("host", "evil.example:9090")][..],
            // Found by the `host` fuzz target: brackets around an IPv4 address were taken
            // off and the address accepted.
            &[("host", "[127.0.0.1]:9090")],
            &[("host", "[127.0.0.1]")],
            &[("host", "localhost.evil.example")],
            &[("host", "127.0.0.2:9090")],
            &[("host", "")],
            &[],
            &[("host", "127.0.0.1"), ("host", "evil.example")],
        ] {
            let refused = check("127.0.0.1:9090", &[], pairs).expect_err("refused");
            assert_eq!(refused.reason(), "host", "{pairs:?}");
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        }
        // localhost is loopback's: an admin on a LAN address does not answer to it.
        let refused = check("10.0.0.5:9090", &[], &[("host", "localhost:9090")]);
        assert_eq!(refused.map_err(|r| r.reason()), Err("host"));
        let refused = check("0.0.0.0:9090", &[], &[("host", "evil.example")]);
        assert_eq!(refused.map_err(|r| r.reason()), Err("host"));
        // An absolute-form target's authority is the host.
        let access = Access {
            bind: "127.0.0.1:9090".parse().expect("bind"),
            names: &[],
            token: None,
        };
        let uri = Uri::from_static("http://evil.example:9090/reload");
        let refused = access.check(&uri, Version::HTTP_11, &head(&[("host", "127.0.0.1:9090")]));
        assert_eq!(refused.map_err(|r| r.reason()), Err("host"));
    }

    #[test]
    fn only_the_same_origin_is_accepted() {
        let host = ("host", "127.0.0.1:9090");
        for origin in ["http://127.0.0.1:9090", "HTTP://127.0.0.1:9090"] {
            let result = check("127.0.0.1:9090", &[], &[host, ("origin", origin)]);
            if origin.starts_with("http://") {
                assert_eq!(result, Ok(()), "{origin}");
            } else {
                assert_eq!(result.map_err(|r| r.reason()), Err("origin"), "{origin}");
            }
        }
        assert_eq!(
            check(
                "127.0.0.1:80",
                &[],
                &[("host", "127.0.0.1"), ("origin", "http://127.0.0.1:80")]
            ),
            Ok(())
        );
        for origin in [
            "http://evil.example",
            "http://localhost:9090",
            "http://127.0.0.1:9091",
            "https://127.0.0.1:9090",
            "null",
            "http://127.0.0.1:9090@evil.example",
            "",
        ] {
            let refused = check("127.0.0.1:9090", &[], &[host, ("origin", origin)])
                .expect_err("cross-origin");
            assert_eq!(refused.reason(), "origin", "{origin}");
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        }
        for (site, ok) in [
            ("same-origin", true),
            ("none", true),
            ("same-site", false),
            ("cross-site", false),
        ] {
            let result = check("127.0.0.1:9090", &[], &[host, ("sec-fetch-site", site)]);
            assert_eq!(result.is_ok(), ok, "{site}");
        }
    }

    #[test]
    fn the_token_is_required_when_configured() {
        let dir = std::env::temp_dir().join(format!("admin-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("token");
        std::fs::write(&path, "s3cret\n").expect("write the token");
        let token = AdminToken::read(&path).expect("token");
        let access = Access {
            bind: "127.0.0.1:9090".parse().expect("bind"),
            names: &[],
            token: Some(&token),
        };
        let host = ("host", "127.0.0.1:9090");
        let run = |pairs: &[(&'static str, &'static str)]| {
            access.check(
                &Uri::from_static("/metrics"),
                Version::HTTP_11,
                &head(pairs),
            )
        };
        assert_eq!(run(&[host, ("authorization", "Bearer s3cret")]), Ok(()));
        assert_eq!(run(&[host, ("authorization", "bearer  s3cret ")]), Ok(()));
        let missing = run(&[host]).expect_err("no token");
        assert_eq!(missing, Refused::Token { presented: false });
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.challenge(), Some("Bearer realm=\"gateway admin\""));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic czNjcmV0",
            "Bearer",
            "s3cret",
        ] {
            let refused = run(&[host, ("authorization", wrong)]).expect_err(wrong);
            assert_eq!(refused, Refused::Token { presented: true }, "{wrong}");
            assert!(refused
                .challenge()
                .is_some_and(|c| c.contains("invalid_token")));
        }
        // Host and Origin come first: a foreign page learns nothing of the token.
        let refused = run(&[("host", "evil.example"), ("authorization", "Bearer s3cret")]);
        assert_eq!(refused.map_err(|r| r.reason()), Err("host"));
    }
}
