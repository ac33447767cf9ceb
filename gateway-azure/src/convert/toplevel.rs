//! What is left once the objects are converted: the gateway's own properties (SKU, WAF,
//! rewrites, ...), its frontend IPs, and elements that could not be read.

use super::Ctx;
use crate::{arm, report::Kind};

/// Gateway properties with no equivalent here, and what to say about each.
const NOT_CARRIED: [(&str, &str); 19] = [
    (
        "sku",
        "SKU and capacity: one gateway process per host; run more behind a load balancer \
         to scale",
    ),
    (
        "autoscaleconfiguration",
        "autoscaling: one gateway process per host; run more behind a load balancer to \
         scale",
    ),
    (
        "webapplicationfirewallconfiguration",
        "web application firewall: not supported, requests are not inspected",
    ),
    (
        "firewallpolicy",
        "WAF policy: not supported, requests are not inspected",
    ),
    (
        "forcefirewallpolicyassociation",
        "WAF policy: not supported",
    ),
    (
        "rewriterulesets",
        "rewrite rule sets: header and URL rewrites are not supported",
    ),
    (
        "enablehttp2",
        "HTTP/2 to clients: not served; clients use HTTP/1.1 (WebSocket included)",
    ),
    (
        "sslpolicy",
        "TLS policy: rustls with TLS 1.2 and 1.3 and its modern cipher suites, not \
         configurable",
    ),
    (
        "sslprofiles",
        "SSL profiles (per-listener TLS policy, client certificates): not supported",
    ),
    (
        "trustedclientcertificates",
        "mutual TLS with client certificates: not supported",
    ),
    (
        "authenticationcertificates",
        "v1 backend authentication certificates: https backends are verified against \
         trusted_ca or the system's roots",
    ),
    (
        "customerrorconfigurations",
        "custom error pages: not supported; errors get a one-line body",
    ),
    (
        "gatewayipconfigurations",
        "subnet placement: the gateway runs on this host and binds its addresses",
    ),
    ("privatelinkconfigurations", "Private Link: not supported"),
    ("listeners", "TCP/TLS (layer 4) listeners: not supported"),
    ("routingrules", "layer 4 routing rules: not supported"),
    (
        "backendsettingscollection",
        "layer 4 backend settings: not supported",
    ),
    (
        "loaddistributionpolicies",
        "load distribution policies: backends are chosen round-robin (or by affinity \
         cookie)",
    ),
    (
        "globalconfiguration",
        "global request buffering settings: requests and answers are always streamed",
    ),
];

/// State Azure reports about a deployed gateway, and resource fields around it (`az` output
/// has them next to the collections): nothing to carry over.
const SILENT: [&str; 15] = [
    "operationalstate",
    "privateendpointconnections",
    "defaultpredefinedsslpolicy",
    "backendhealth",
    "enablefips",
    "location",
    "tags",
    "zones",
    "identity",
    "apiversion",
    "dependson",
    "condition",
    "comments",
    "systemdata",
    "kind",
];

pub(super) fn report_rest(cx: &mut Ctx<'_>) {
    let ip = cx.options.bind_ip;
    if !cx.gw.http_listeners.is_empty() {
        cx.add(
            Kind::Changed,
            "",
            format!(
                "Azure listens on its frontend IP addresses; the listeners bind {ip}:<frontend \
                 port> on this host (gateway import-azure --bind-ip changes the address)"
            ),
        );
    }
    frontends(cx);
    let gw = cx.gw;
    for (key, value) in &gw.other {
        if arm::is_blank(value) || SILENT.contains(&key.as_str()) {
            continue;
        }
        let spelled = gw.spelling.of(key).to_owned();
        match NOT_CARRIED.iter().find(|(k, _)| k == key) {
            Some((_, what)) => cx.add(Kind::NotCarried, "", format!("{spelled}: {what}")),
            None if super::METADATA.contains(&key.as_str()) => {}
            None => cx.ignored("", &[(key.clone(), value.clone())].into(), &[]),
        }
    }
    for (at, why) in &gw.unreadable {
        cx.add(
            Kind::Input,
            at,
            format!("could not be read ({why}); left out"),
        );
    }
}

/// Private frontend IPs: the address is not bound here.
fn frontends(cx: &mut Ctx<'_>) {
    let gw = cx.gw;
    for (position, item) in gw.frontend_ip_configurations.iter().enumerate() {
        let at = cx.at(arm::FRONTEND_IP_CONFIGURATIONS, position, item.index);
        let users = cx
            .frontend_users
            .get(&position)
            .cloned()
            .unwrap_or_default();
        let private = cx.text(
            &at,
            "privateIPAddress",
            item.props.private_ip_address.as_deref(),
        );
        if let Some(address) = private.filter(|a| !a.is_empty()) {
            let used = if users.is_empty() {
                "no listener uses it".to_owned()
            } else {
                format!("used by listener(s) {}", users.join(", "))
            };
            cx.add(
                Kind::NotCarried,
                &at,
                format!(
                    "private frontend IP {address} ({used}): the listeners bind {} instead; set \
                     bind = \"{address}:<port>\" if this host has that address",
                    cx.options.bind_ip
                ),
            );
        }
        cx.ignored(
            &at,
            &item.props.other,
            &[
                "privateipallocationmethod",
                "subnet",
                "privatelinkconfiguration",
            ],
        );
    }
}
