//! `redirect = { ... }` of a redirect rule, a path rule, or a path-based rule's default.

use super::{rules::Targets, Checker};
use crate::{
    defaults,
    document::Origin,
    model::{Redirect, RedirectTarget},
    raw::RawRedirect,
};

/// `field` of `origin` is the redirect; `own_listener` is the listener of its rule, which
/// it must not send clients back to.
pub fn check(
    origin: &Origin,
    field: &str,
    raw: &RawRedirect,
    own_listener: Option<usize>,
    targets: &Targets<'_>,
    c: &mut Checker<'_>,
) -> Option<Redirect> {
    let key = |sub: &str| format!("{field}.{sub}");
    let status = raw.status.unwrap_or(defaults::REDIRECT_STATUS);
    let status_ok = defaults::REDIRECT_STATUSES.contains(&status);
    if !status_ok {
        c.error(
            origin,
            &key("status"),
            format!("redirect status {status} is not a redirect this gateway sends"),
            "use 301 (permanent, the default), 302 (found), 307 (temporary) or 308 \
             (permanent, keeps the method)",
        );
    }
    let target = match (&raw.target_listener, &raw.target_url) {
        (Some(_), Some(_)) => {
            c.error(
                origin,
                &key("target_url"),
                "both target_listener and target_url are set",
                "keep one: another listener of this gateway, or an absolute URL",
            );
            None
        }
        (None, None) => {
            c.error(
                origin,
                field,
                "the redirect has no target",
                "set target_listener = \"<listener name>\" or target_url = \"https://...\"",
            );
            None
        }
        (Some(name), None) => listener_target(
            origin,
            &key("target_listener"),
            name,
            own_listener,
            targets,
            c,
        ),
        (None, Some(url)) => url_target(origin, &key("target_url"), url, c),
    };
    Some(Redirect {
        target: target?,
        status,
        include_path: raw.include_path.unwrap_or(defaults::REDIRECT_INCLUDE_PATH),
        include_query: raw
            .include_query
            .unwrap_or(defaults::REDIRECT_INCLUDE_QUERY),
    })
    .filter(|_| status_ok)
}

fn listener_target(
    origin: &Origin,
    field: &str,
    name: &str,
    own_listener: Option<usize>,
    targets: &Targets<'_>,
    c: &mut Checker<'_>,
) -> Option<RedirectTarget> {
    let index = targets.listener_names.resolve(name, origin, field, c)?;
    if Some(index) == own_listener {
        c.error(
            origin,
            field,
            format!("the redirect sends clients back to its own listener {name:?}, a loop"),
            "target another listener (e.g. the https one), or use target_url",
        );
        return None;
    }
    let listener = targets.listeners.get(index)?.as_ref()?;
    Some(RedirectTarget::Listener {
        name: name.to_owned(),
        protocol: listener.protocol,
        port: listener.bind.port(),
    })
}

fn url_target(
    origin: &Origin,
    field: &str,
    url: &str,
    c: &mut Checker<'_>,
) -> Option<RedirectTarget> {
    let parsed = url.parse::<http::Uri>().ok().filter(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
    });
    if parsed.is_none() {
        c.error(
            origin,
            field,
            format!("target_url {url:?} is not an absolute http(s) URL"),
            "write e.g. \"https://www.example.com/\" (scheme and host required)",
        );
        return None;
    }
    Some(RedirectTarget::Url(url.to_owned()))
}
