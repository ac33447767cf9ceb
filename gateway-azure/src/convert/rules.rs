//! `requestRoutingRules`, with the `urlPathMaps` and `redirectConfigurations` they use →
//! `[[rules]]` with `[[rules.path_rules]]` and inline redirects.

use super::{names::Namer, Ctx, Link, Out, RuleOut, PLACEHOLDER};
use crate::{
    arm::{self, Item, PathRule, RequestRoutingRule, SubResource},
    report::Kind,
};
use gateway_config::{
    model::RuleKind,
    raw::{RawPathRule, RawRedirect, RawRule},
};

/// Status of Azure's `SeeOther` redirects, which this gateway does not send as 303.
pub const SEE_OTHER_STATUS: u16 = 302;

/// Azure's `redirectType` → our status; `None` for an unknown type.
pub fn redirect_status(redirect_type: &str) -> Option<u16> {
    match redirect_type.to_ascii_lowercase().as_str() {
        "permanent" => Some(301),
        "found" => Some(302),
        "seeother" => Some(SEE_OTHER_STATUS),
        "temporary" => Some(307),
        _ => None,
    }
}

pub(super) fn convert(cx: &mut Ctx<'_>) -> Vec<Out<RuleOut>> {
    let gw = cx.gw;
    let mut out = Vec::new();
    for (position, item) in gw.request_routing_rules.iter().enumerate() {
        let at = cx.at(arm::REQUEST_ROUTING_RULES, position, item.index);
        if let Some(rule) = rule(cx, &at, position, item) {
            out.push(Out {
                from: at,
                raw: rule,
            });
        }
    }
    out
}

fn rule(
    cx: &mut Ctx<'_>,
    at: &str,
    position: usize,
    item: &Item<RequestRoutingRule>,
) -> Option<RuleOut> {
    let props = &item.props;
    let listener = match cx.follow(
        at,
        "httpListener",
        props.http_listener.as_ref(),
        arm::HTTP_LISTENERS,
    ) {
        Link::Found(found) if cx.skipped_listeners.contains(&found.position) => {
            cx.add(
                Kind::NotCarried,
                at,
                format!("left out with its listener {:?}", found.ours),
            );
            return None;
        }
        Link::None if props.http_listener.is_none() => {
            cx.add(
                Kind::ToDo,
                at,
                format!("no httpListener given: listener = \"{PLACEHOLDER}\""),
            );
            PLACEHOLDER.to_owned()
        }
        link => link.name().unwrap_or_else(|| PLACEHOLDER.to_owned()),
    };
    let priority = cx
        .number(at, "priority", props.priority.as_ref())
        .map(|p| u32::try_from(p).unwrap_or(u32::MAX));
    let rule_type = cx
        .text(at, "ruleType", props.rule_type.as_deref())
        .unwrap_or_else(|| "Basic".to_owned());
    let mut rule = RawRule {
        name: cx.ours(arm::REQUEST_ROUTING_RULES, position),
        kind: RuleKind::Basic,
        listener,
        priority,
        backend_pool: None,
        backend_settings: None,
        redirect: None,
        default_backend_pool: None,
        default_backend_settings: None,
        default_redirect: None,
        path_rules: None,
    };
    let mut path_rules = Vec::new();
    leftovers(cx, at, &props.other);
    match rule_type.to_ascii_lowercase().as_str() {
        "basic" => {
            if props.redirect_configuration.is_some() {
                rule.kind = RuleKind::Redirect;
                rule.redirect = redirect(
                    cx,
                    at,
                    "redirectConfiguration",
                    props.redirect_configuration.as_ref(),
                );
            } else {
                rule.backend_pool = pool(
                    cx,
                    at,
                    "backendAddressPool",
                    props.backend_address_pool.as_ref(),
                );
                rule.backend_settings = settings(
                    cx,
                    at,
                    "backendHttpSettings",
                    props.backend_http_settings.as_ref(),
                );
            }
        }
        "pathbasedrouting" => {
            rule.kind = RuleKind::PathBased;
            match cx.follow(
                at,
                "urlPathMap",
                props.url_path_map.as_ref(),
                arm::URL_PATH_MAPS,
            ) {
                Link::Found(found) => {
                    let map = &cx.gw.url_path_maps[found.position];
                    path_rules = path_map(cx, &mut rule, found.position, map);
                }
                _ if props.url_path_map.is_none() => {
                    cx.add(Kind::ToDo, at, "a PathBasedRouting rule without urlPathMap");
                }
                _ => {}
            }
        }
        _ => {
            cx.add(
                Kind::NotCarried,
                at,
                format!(
                    "ruleType {rule_type:?} is not supported (Basic and PathBasedRouting); rule \
                     left out"
                ),
            );
            return None;
        }
    }
    Some(RuleOut { rule, path_rules })
}

/// Fills in the default of a path-based rule from the path map; its path rules.
fn path_map(
    cx: &mut Ctx<'_>,
    rule: &mut RawRule,
    position: usize,
    map: &Item<arm::UrlPathMap>,
) -> Vec<Out<RawPathRule>> {
    let at = cx.at(arm::URL_PATH_MAPS, position, map.index);
    let props = &map.props;
    if props.default_redirect_configuration.is_some() {
        rule.default_redirect = redirect(
            cx,
            &at,
            "defaultRedirectConfiguration",
            props.default_redirect_configuration.as_ref(),
        );
    } else {
        rule.default_backend_pool = pool(
            cx,
            &at,
            "defaultBackendAddressPool",
            props.default_backend_address_pool.as_ref(),
        );
        rule.default_backend_settings = settings(
            cx,
            &at,
            "defaultBackendHttpSettings",
            props.default_backend_http_settings.as_ref(),
        );
    }
    leftovers(cx, &at, &props.other);
    let mut unreadable = Vec::new();
    let items: Vec<Item<PathRule>> = arm::items(
        &format!("{at}/pathRules"),
        props.path_rules.clone().map(serde_json::Value::Array),
        &mut unreadable,
    );
    for (where_, why) in unreadable {
        cx.add(
            Kind::Input,
            &where_,
            format!("could not be read ({why}); left out"),
        );
    }
    if !items.is_empty() {
        cx.add(
            Kind::Changed,
            &at,
            "Azure matches paths without case; this gateway matches them as written",
        );
    }
    let mut namer = Namer::default();
    let mut out = Vec::new();
    for item in items {
        let path_at = if item.name.is_empty() {
            format!("{at}/pathRules[{}]", item.index)
        } else {
            format!("{at}/pathRules/{}", item.name)
        };
        let fallback = format!("path-rule-{}", item.index + 1);
        let name = namer.unique(&super::names::sanitize(&item.name, &fallback));
        if name != item.name {
            cx.add(Kind::Changed, &path_at, format!("named {name:?} here"));
        }
        let props = &item.props;
        let mut paths = Vec::new();
        for path in props.paths.iter().flatten() {
            if let Some(path) = cx.text(&path_at, "paths", Some(path)) {
                paths.push(path);
            }
        }
        let mut raw = RawPathRule {
            name,
            paths,
            backend_pool: None,
            backend_settings: None,
            redirect: None,
        };
        if props.redirect_configuration.is_some() {
            raw.redirect = redirect(
                cx,
                &path_at,
                "redirectConfiguration",
                props.redirect_configuration.as_ref(),
            );
        } else {
            raw.backend_pool = pool(
                cx,
                &path_at,
                "backendAddressPool",
                props.backend_address_pool.as_ref(),
            );
            raw.backend_settings = settings(
                cx,
                &path_at,
                "backendHttpSettings",
                props.backend_http_settings.as_ref(),
            );
        }
        leftovers(cx, &path_at, &props.other);
        out.push(Out { from: path_at, raw });
    }
    out
}

/// Fields of rules, path maps and path rules with no equivalent here.
const NOT_CARRIED: [(&str, &str); 4] = [
    (
        "rewriteruleset",
        "header and URL rewrites are not supported; requests and answers pass unchanged",
    ),
    (
        "defaultrewriteruleset",
        "header and URL rewrites are not supported; requests and answers pass unchanged",
    ),
    (
        "firewallpolicy",
        "WAF policies are not supported; requests are not inspected",
    ),
    (
        "loaddistributionpolicy",
        "load distribution policies are not supported; backends are chosen round-robin",
    ),
];

/// Reports what `other` holds that is not carried over, or not read.
fn leftovers(cx: &mut Ctx<'_>, at: &str, other: &arm::Other) {
    cx.not_carried(at, other, &NOT_CARRIED);
    let silent: Vec<&str> = NOT_CARRIED.iter().map(|(key, _)| *key).collect();
    cx.ignored(at, other, &silent);
}

fn pool(
    cx: &mut Ctx<'_>,
    at: &str,
    field: &str,
    reference: Option<&SubResource>,
) -> Option<String> {
    cx.follow(at, field, reference, arm::BACKEND_ADDRESS_POOLS)
        .name()
}

fn settings(
    cx: &mut Ctx<'_>,
    at: &str,
    field: &str,
    reference: Option<&SubResource>,
) -> Option<String> {
    cx.follow(at, field, reference, arm::BACKEND_HTTP_SETTINGS)
        .name()
}

/// The redirect configuration `field` of `at` refers to, inline.
fn redirect(
    cx: &mut Ctx<'_>,
    at: &str,
    field: &str,
    reference: Option<&SubResource>,
) -> Option<RawRedirect> {
    let Link::Found(found) = cx.follow(at, field, reference, arm::REDIRECT_CONFIGURATIONS) else {
        return None;
    };
    let item = &cx.gw.redirect_configurations[found.position];
    let at = cx.at(arm::REDIRECT_CONFIGURATIONS, found.position, item.index);
    let props = &item.props;
    let status = match cx.text(&at, "redirectType", props.redirect_type.as_deref()) {
        Some(kind) => {
            let status = redirect_status(&kind);
            match status {
                Some(SEE_OTHER_STATUS) if kind.eq_ignore_ascii_case("seeother") => cx.add(
                    Kind::Changed,
                    &at,
                    "redirectType SeeOther (303) is sent as 302 Found, the nearest status this \
                     gateway sends (browsers also follow a 302 with a GET)",
                ),
                Some(_) => {}
                None => cx.add(
                    Kind::ToDo,
                    &at,
                    format!(
                        "redirectType {kind:?} is not Permanent, Found, SeeOther or Temporary; \
                         the default 301 applies"
                    ),
                ),
            }
            status
        }
        None => None,
    };
    let target_listener = cx
        .follow(
            &at,
            "targetListener",
            props.target_listener.as_ref(),
            arm::HTTP_LISTENERS,
        )
        .name();
    let target_url = cx.text(&at, "targetUrl", props.target_url.as_deref());
    // Azure leaves both off unless set; ours default to on, so both are always written.
    let include_path = cx
        .flag(&at, "includePath", props.include_path.as_ref())
        .unwrap_or(false);
    let include_query = cx
        .flag(
            &at,
            "includeQueryString",
            props.include_query_string.as_ref(),
        )
        .unwrap_or(false);
    cx.ignored(&at, &props.other, &[]);
    Some(RawRedirect {
        target_listener,
        target_url,
        status,
        include_path: Some(include_path),
        include_query: Some(include_query),
    })
}
