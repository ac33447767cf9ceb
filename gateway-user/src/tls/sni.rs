//! Which site of a multi-site bind answers a TLS handshake, chosen by the client's SNI name,
//! and the rustls certificate resolver built on that choice.

use std::{fmt, sync::Arc};

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::config::model::{Bind, HostMatch, HostPattern};

/// Chooses a site of a bind by SNI name. The order, whatever the order of the sites:
///
/// 1. the first site with an exact host name equal to the SNI name (case-insensitive, a
///    trailing dot ignored);
/// 2. else the first site with a wildcard `*.example.com` matching it (one label in front);
/// 3. else — also when the client sent no SNI, e.g. because it connected by IP address —
///    the catch-all site (the one without `host_names`);
/// 4. else, when the bind has no catch-all, its first site (nginx likewise falls back to
///    the default server of the port).
///
/// Exact before wildcard is how certificates are usually chosen (nginx, Azure), even though
/// requests are routed in rule priority order; the request path can compare the two through
/// the handshake's `site_index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteSelector {
    hosts: Vec<HostMatch>,
    fallback: usize,
}

impl SiteSelector {
    pub fn new(bind: &Bind) -> Self {
        Self::from_hosts(bind.sites.iter().map(|site| site.hosts.clone()).collect())
    }

    /// From the `hosts` of each site, in the order of the bind's sites.
    pub fn from_hosts(hosts: Vec<HostMatch>) -> Self {
        let fallback = hosts
            .iter()
            .position(|hosts| *hosts == HostMatch::Any)
            .unwrap_or(0);
        Self { hosts, fallback }
    }

    /// The index into `bind.sites` of the site for `sni`.
    pub fn select(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni else {
            return self.fallback;
        };
        let first = |exact: bool| {
            self.hosts.iter().position(|hosts| match hosts {
                HostMatch::Any => false,
                HostMatch::Names(patterns) => patterns.iter().any(|pattern| {
                    matches!(pattern, HostPattern::Exact(_)) == exact && pattern.matches(name)
                }),
            })
        };
        first(true)
            .or_else(|| first(false))
            .unwrap_or(self.fallback)
    }
}

/// Hands rustls the certificate of the site [`SiteSelector`] picks.
pub struct SiteResolver {
    selector: SiteSelector,
    /// One per site, in the order of `bind.sites`.
    keys: Vec<Arc<CertifiedKey>>,
}

impl SiteResolver {
    /// `keys` must have one entry per site of the bind `selector` was made from.
    pub fn new(selector: SiteSelector, keys: Vec<Arc<CertifiedKey>>) -> Self {
        Self { selector, keys }
    }
}

impl ResolvesServerCert for SiteResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys
            .get(self.selector.select(hello.server_name()))
            .cloned()
    }
}

impl fmt::Debug for SiteResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteResolver")
            .field("selector", &self.selector)
            .field("certificates", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(sites: &[&[&str]]) -> SiteSelector {
        SiteSelector::from_hosts(
            sites
                .iter()
                .map(|names| {
                    if names.is_empty() {
                        HostMatch::Any
                    } else {
                        HostMatch::Names(
                            names
                                .iter()
                                .map(|name| HostPattern::parse(name).expect("host pattern"))
                                .collect(),
                        )
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn exact_beats_wildcard_beats_catch_all() {
        let sites = selector(&[&["*.example.com"], &["www.example.com", "b.test"], &[]]);
        assert_eq!(sites.select(Some("www.example.com")), 1);
        assert_eq!(sites.select(Some("WWW.Example.com.")), 1);
        assert_eq!(sites.select(Some("api.example.com")), 0);
        assert_eq!(sites.select(Some("a.b.example.com")), 2);
        assert_eq!(sites.select(Some("example.com")), 2);
        assert_eq!(sites.select(Some("unknown.test")), 2);
        assert_eq!(sites.select(None), 2);
    }

    #[test]
    fn without_a_catch_all_the_first_site_is_the_default() {
        let sites = selector(&[&["a.test"], &["*.b.test"]]);
        assert_eq!(sites.select(Some("x.b.test")), 1);
        assert_eq!(sites.select(Some("c.test")), 0);
        assert_eq!(sites.select(None), 0);
    }
}
