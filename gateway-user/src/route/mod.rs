//! Routing, sans-io: a request's host and path in, a [`Decision`] out.
//!
//! One [`Router`] per bind (listening socket), built once per configuration snapshot:
//!
//! 1. **Site** (listener) by host: a listener naming the host exactly, else one whose
//!    wildcard (`*.example.com`, one label) covers it, else the bind's catch-all (the
//!    listener without `host_names`). The configuration lets a name or wildcard belong to
//!    one listener of a bind only, so at most one site of each kind matches. No match and no
//!    catch-all: [`Decision::NoSite`], answered `404` as Azure answers a host no listener
//!    serves.
//! 2. **Rule** of that site: `basic` forwards to its pool; `path_based` takes the first path
//!    rule (in file order) with a matching pattern (`/api/*` matches by prefix, `/ws`
//!    exactly; ASCII case ignored, on the normal form of the path without its `;`
//!    parameters or query), else its default;
//!    `redirect` answers with a [`Redirect`].
//!
//! The forwarding target is generic (`T`): the gateway routes to its runtime upstreams,
//! the tests to names.

mod host;
mod redirect;
#[cfg(test)]
mod tests;

/// One `host[:port]`, as the admin listener checks its `Host` and `Origin`.
pub use host::parse as parse_host;
pub use host::{request_host, HostError, RequestHost};
pub use redirect::Redirect;

use http::StatusCode;

use crate::config::{self, HostMatch, HostPattern, PathPattern, RuleAction};

/// How one bind routes requests.
#[derive(Debug)]
pub struct Router<T> {
    /// In the bind's order (rule priority, catch-all last).
    sites: Vec<Site<T>>,
}

#[derive(Debug)]
struct Site<T> {
    listener: String,
    hosts: HostMatch,
    rule: String,
    action: Action<T>,
}

#[derive(Debug)]
enum Action<T> {
    Basic(T),
    PathBased {
        path_rules: Vec<PathRule<T>>,
        default: Target<T>,
    },
    Redirect(Redirect),
}

#[derive(Debug)]
struct PathRule<T> {
    name: String,
    paths: Vec<PathPattern>,
    target: Target<T>,
}

#[derive(Debug)]
enum Target<T> {
    Forward(T),
    Redirect(Redirect),
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'r, T> {
    Forward {
        /// Names for logs: the listener (site), its rule, and the path rule that matched.
        route: Route<'r>,
        target: &'r T,
    },
    Redirect {
        route: Route<'r>,
        status: StatusCode,
        location: String,
    },
    /// No listener of this bind serves the host: `404`.
    NoSite,
    /// A redirect to a listener, but the request has no host to send the client back to
    /// (HTTP/1.0 without `Host`): `400`.
    NoHostToRedirectTo { route: Route<'r> },
}

/// Which listener, rule and path rule a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'r> {
    pub listener: &'r str,
    pub rule: &'r str,
    pub path_rule: Option<&'r str>,
}

/// What routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// See [`RequestHost::name`]; `None` when the request has no host.
    pub host: Option<&'a str>,
    /// The path in normal form (`crate::config::path`), as the backend is sent it.
    pub path: &'a str,
    /// What path rules match (ASCII case ignored): `path` without `;` parameters.
    pub routed_path: &'a str,
    pub query: Option<&'a str>,
}

impl<T> Router<T> {
    /// Builds the router of `bind`. `forward` makes the target of each forwarding rule;
    /// `port_of` gives the bound port of a listener (for redirects to it).
    pub fn new(
        bind: &config::Bind,
        mut forward: impl FnMut(&config::Forward) -> T,
        port_of: impl Fn(&str) -> Option<u16>,
    ) -> Self {
        let mut sites = Vec::new();
        for site in &bind.sites {
            let action = match &site.rule.action {
                RuleAction::Basic(f) => Action::Basic(forward(f)),
                RuleAction::Redirect(r) => Action::Redirect(Redirect::new(r, &port_of)),
                RuleAction::PathBased {
                    path_rules,
                    default,
                } => Action::PathBased {
                    path_rules: path_rules
                        .iter()
                        .map(|rule| PathRule {
                            name: rule.name.clone(),
                            paths: rule.paths.clone(),
                            target: Target::new(&rule.route, &mut forward, &port_of),
                        })
                        .collect(),
                    default: Target::new(default, &mut forward, &port_of),
                },
            };
            sites.push(Site {
                listener: site.listener.clone(),
                hosts: site.hosts.clone(),
                rule: site.rule.name.clone(),
                action,
            });
        }
        Self { sites }
    }

    /// Routes one request.
    pub fn route(&self, request: RequestView<'_>) -> Decision<'_, T> {
        let Some(site) = self.site(request.host) else {
            return Decision::NoSite;
        };
        let mut route = Route {
            listener: &site.listener,
            rule: &site.rule,
            path_rule: None,
        };
        let target = match &site.action {
            Action::Basic(target) => return Decision::Forward { route, target },
            Action::Redirect(redirect) => return redirected(route, redirect, request),
            Action::PathBased {
                path_rules,
                default,
            } => {
                let matched = path_rules
                    .iter()
                    .find(|rule| rule.paths.iter().any(|p| p.matches(request.routed_path)));
                match matched {
                    Some(rule) => {
                        route.path_rule = Some(&rule.name);
                        &rule.target
                    }
                    None => default,
                }
            }
        };
        match target {
            Target::Forward(target) => Decision::Forward { route, target },
            Target::Redirect(redirect) => redirected(route, redirect, request),
        }
    }

    /// The listener of site `index` (in the bind's order), e.g. the one a TLS handshake
    /// chose by SNI.
    pub fn listener(&self, index: usize) -> Option<&str> {
        self.sites.get(index).map(|site| site.listener.as_str())
    }

    /// Exact name, then wildcard, then the catch-all.
    fn site(&self, host: Option<&str>) -> Option<&Site<T>> {
        let named = |want_exact: bool| {
            let host = host.filter(|h| !h.is_empty())?;
            self.sites.iter().find(|site| match &site.hosts {
                HostMatch::Any => false,
                HostMatch::Names(patterns) => patterns
                    .iter()
                    .any(|p| matches!(p, HostPattern::Exact(_)) == want_exact && p.matches(host)),
            })
        };
        named(true)
            .or_else(|| named(false))
            .or_else(|| self.sites.iter().find(|s| s.hosts == HostMatch::Any))
    }
}

impl<T> Target<T> {
    fn new(
        route: &config::Route,
        forward: &mut impl FnMut(&config::Forward) -> T,
        port_of: &impl Fn(&str) -> Option<u16>,
    ) -> Self {
        match route {
            config::Route::Forward(f) => Self::Forward(forward(f)),
            config::Route::Redirect(r) => Self::Redirect(Redirect::new(r, port_of)),
        }
    }
}

fn redirected<'r, T>(
    route: Route<'r>,
    redirect: &Redirect,
    request: RequestView<'_>,
) -> Decision<'r, T> {
    match redirect.location(request.host, request.path, request.query) {
        Some(location) => Decision::Redirect {
            route,
            status: redirect.status,
            location,
        },
        None => Decision::NoHostToRedirectTo { route },
    }
}
