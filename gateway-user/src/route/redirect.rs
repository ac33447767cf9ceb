//! Redirects: the `Location` a redirect rule sends a request to.

use http::StatusCode;

use crate::config::{self, Protocol, RedirectTarget};

/// A redirect with its target resolved to what the gateway actually serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub status: StatusCode,
    pub to: RedirectTo,
    pub include_path: bool,
    pub include_query: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectTo {
    /// Another listener of this gateway: the request's host, that listener's scheme and port.
    Listener { protocol: Protocol, port: u16 },
    /// An absolute `http(s)://` URL (checked by the configuration).
    Url(String),
}

impl Redirect {
    /// `port_of(listener)` is the port the target listener is bound to (its configured port,
    /// or the one the kernel picked for port 0).
    pub fn new(redirect: &config::Redirect, port_of: impl Fn(&str) -> Option<u16>) -> Self {
        let to = match &redirect.target {
            RedirectTarget::Listener {
                name,
                protocol,
                port,
            } => RedirectTo::Listener {
                protocol: *protocol,
                port: port_of(name).unwrap_or(*port),
            },
            RedirectTarget::Url(url) => RedirectTo::Url(url.clone()),
        };
        Self {
            // The configuration allows 301, 302, 307 and 308 only.
            status: StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            to,
            include_path: redirect.include_path,
            include_query: redirect.include_query,
        }
    }

    /// The `Location` for a request to `host` (without port; `None` when the request has
    /// none) with `path` and `query`. `None` when the target is a listener and the request
    /// has no host to send the client back to.
    ///
    /// To a listener: `scheme://host[:port]` (the port left out when it is the scheme's
    /// default), then the path (else `/`), then `?query`. To a URL: the URL, with the path
    /// appended to it (one `/` between them) and the request's query after the URL's own.
    pub fn location(&self, host: Option<&str>, path: &str, query: Option<&str>) -> Option<String> {
        let query = query.filter(|q| self.include_query && !q.is_empty());
        match &self.to {
            RedirectTo::Listener { protocol, port } => {
                let host = host.filter(|h| !h.is_empty())?;
                let scheme = protocol.as_str();
                let default_port = match protocol {
                    Protocol::Http => 80,
                    Protocol::Https => 443,
                };
                let mut location = format!("{scheme}://{host}");
                if *port != default_port {
                    location.push_str(&format!(":{port}"));
                }
                location.push_str(if self.include_path { path } else { "/" });
                if let Some(query) = query {
                    location.push('?');
                    location.push_str(query);
                }
                Some(location)
            }
            RedirectTo::Url(url) => {
                let (base, own_query) = match url.split_once('?') {
                    Some((base, own)) => (base, Some(own)),
                    None => (url.as_str(), None),
                };
                let mut location = base.to_owned();
                if self.include_path {
                    location.truncate(location.trim_end_matches('/').len());
                    location.push_str(path);
                }
                let queries: Vec<&str> = own_query.into_iter().chain(query).collect();
                if !queries.is_empty() {
                    location.push('?');
                    location.push_str(&queries.join("&"));
                }
                Some(location)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(to: RedirectTo, include_path: bool, include_query: bool) -> Redirect {
        Redirect {
            status: StatusCode::FOUND,
            to,
            include_path,
            include_query,
        }
    }

    #[test]
    fn to_a_listener_keeps_the_host_and_drops_default_ports() {
        let https = |port| RedirectTo::Listener {
            protocol: Protocol::Https,
            port,
        };
        let all = redirect(https(443), true, true);
        assert_eq!(
            all.location(Some("www.example.com"), "/a/b", Some("x=1")),
            Some("https://www.example.com/a/b?x=1".into())
        );
        assert_eq!(
            redirect(https(8443), true, true).location(Some("[::1]"), "/", None),
            Some("https://[::1]:8443/".into())
        );
        let http = RedirectTo::Listener {
            protocol: Protocol::Http,
            port: 80,
        };
        assert_eq!(
            redirect(http, false, true).location(Some("a.com"), "/deep", Some("q")),
            Some("http://a.com/?q".into())
        );
        assert_eq!(
            redirect(https(443), true, false).location(Some("a.com"), "/p", Some("q")),
            Some("https://a.com/p".into())
        );
        assert_eq!(all.location(None, "/", None), None, "no host to go back to");
        assert_eq!(all.location(Some(""), "/", None), None);
    }

    #[test]
    fn to_a_url_appends_path_and_query() {
        let url = |u: &str| RedirectTo::Url(u.to_owned());
        assert_eq!(
            redirect(url("https://blog.example.com/"), true, true).location(
                Some("x"),
                "/blog/1",
                Some("a=1")
            ),
            Some("https://blog.example.com/blog/1?a=1".into())
        );
        assert_eq!(
            redirect(url("https://blog.example.com/"), false, false).location(
                None,
                "/blog/1",
                Some("a")
            ),
            Some("https://blog.example.com/".into())
        );
        assert_eq!(
            redirect(url("https://e.com/base?src=gw"), true, true).location(
                None,
                "/p",
                Some("b=2")
            ),
            Some("https://e.com/base/p?src=gw&b=2".into())
        );
        assert_eq!(
            redirect(url("http://e.com"), false, true).location(None, "/p", Some("")),
            Some("http://e.com".into())
        );
    }

    #[test]
    fn listener_ports_come_from_the_bound_sockets() {
        let config = config::Redirect {
            target: RedirectTarget::Listener {
                name: "tls".into(),
                protocol: Protocol::Https,
                port: 0,
            },
            status: 308,
            include_path: true,
            include_query: true,
        };
        let resolved = Redirect::new(&config, |name| (name == "tls").then_some(40443));
        assert_eq!(resolved.status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            resolved.to,
            RedirectTo::Listener {
                protocol: Protocol::Https,
                port: 40443
            }
        );
    }
}
