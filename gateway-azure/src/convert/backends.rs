//! `backendAddressPools` → `[[backend_pools]]`, `backendHttpSettingsCollection` (with
//! `trustedRootCertificates`) → `[[backend_settings]]`, `probes` → `[[probes]]`.

use super::{listeners::protocol, Ctx, Link, Out, PLACEHOLDER};
use crate::{arm, report::Kind};
use gateway_config::{
    model::Protocol,
    raw::{RawPool, RawProbe, RawSettings},
};

pub(super) fn pools(cx: &mut Ctx<'_>) -> Vec<Out<RawPool>> {
    let gw = cx.gw;
    let mut out = Vec::new();
    for (position, item) in gw.backend_address_pools.iter().enumerate() {
        let at = cx.at(arm::BACKEND_ADDRESS_POOLS, position, item.index);
        let mut addresses = Vec::new();
        for (j, address) in item.props.backend_addresses.iter().flatten().enumerate() {
            let field = format!("backendAddresses[{j}]");
            let ip = cx.text(&at, &field, address.ip_address.as_deref());
            let fqdn = cx.text(&at, &field, address.fqdn.as_deref());
            match (ip.filter(|s| !s.is_empty()), fqdn.filter(|s| !s.is_empty())) {
                (Some(ip), _) => addresses.push(ip),
                (None, Some(fqdn)) => addresses.push(fqdn),
                (None, None) => cx.add(
                    Kind::ToDo,
                    &at,
                    format!("{field} has neither ipAddress nor fqdn; left out"),
                ),
            }
        }
        if addresses.is_empty() {
            let members = item
                .props
                .other
                .get("backendipconfigurations")
                .is_some_and(|v| !arm::is_blank(v));
            let why = if members {
                "its members are network interfaces of VMs or scale sets \
                 (backendIPConfigurations), which the gateway's JSON does not resolve"
            } else {
                "the input lists no backend addresses"
            };
            cx.add(
                Kind::ToDo,
                &at,
                format!("the pool is empty: {why}; list the backends in addresses"),
            );
        }
        cx.ignored(&at, &item.props.other, &["backendipconfigurations"]);
        out.push(Out {
            from: at,
            raw: RawPool {
                name: cx.ours(arm::BACKEND_ADDRESS_POOLS, position),
                addresses,
            },
        });
    }
    out
}

pub(super) fn settings(cx: &mut Ctx<'_>) -> Vec<Out<RawSettings>> {
    let gw = cx.gw;
    let mut out = Vec::new();
    for (position, item) in gw.backend_http_settings.iter().enumerate() {
        let at = cx.at(arm::BACKEND_HTTP_SETTINGS, position, item.index);
        let name = cx.ours(arm::BACKEND_HTTP_SETTINGS, position);
        let props = &item.props;
        let protocol = match cx.text(&at, "protocol", props.protocol.as_deref()) {
            Some(text) => protocol(&text).unwrap_or_else(|| {
                cx.add(
                    Kind::ToDo,
                    &at,
                    format!("protocol {text:?} is neither Http nor Https; written as http"),
                );
                Protocol::Http
            }),
            None => Protocol::Http,
        };
        let port = match cx
            .number(&at, "port", props.port.as_ref())
            .map(u16::try_from)
        {
            Some(Ok(port)) if port != 0 => port,
            found => {
                let default = if protocol == Protocol::Https { 443 } else { 80 };
                let why = if found.is_some() {
                    "is not 1-65535"
                } else {
                    "is missing"
                };
                cx.add(
                    Kind::ToDo,
                    &at,
                    format!("port {why}; written as {default}, the protocol's port: check it"),
                );
                default
            }
        };
        let affinity = cx.flag(
            &at,
            "cookieBasedAffinity",
            props.cookie_based_affinity.as_ref(),
        );
        let affinity_cookie_name = match affinity {
            Some(true) => cx.text(
                &at,
                "affinityCookieName",
                props.affinity_cookie_name.as_deref(),
            ),
            _ => None,
        };
        let draining = props.connection_draining.as_ref();
        let draining_on = draining
            .and_then(|d| cx.flag(&at, "connectionDraining.enabled", d.enabled.as_ref()))
            .unwrap_or(false);
        let draining_timeout_secs = match (draining_on, draining) {
            (true, Some(d)) => cx.number(
                &at,
                "connectionDraining.drainTimeoutInSec",
                d.drain_timeout_in_sec.as_ref(),
            ),
            _ => None,
        };
        let pick = cx
            .flag(
                &at,
                "pickHostNameFromBackendAddress",
                props.pick_host_name_from_backend_address.as_ref(),
            )
            .unwrap_or(false);
        let mut host_header = cx.text(&at, "hostName", props.host_name.as_deref());
        if pick && host_header.is_some() {
            cx.add(
                Kind::Changed,
                &at,
                "hostName left out: pickHostNameFromBackendAddress is on, which Azure gives \
                 precedence",
            );
            host_header = None;
        }
        let probe = cx
            .follow(&at, "probe", props.probe.as_ref(), arm::PROBES)
            .name();
        let trusted_ca = trusted_ca(cx, &at, &name, protocol, props);
        let request_timeout_secs = cx.number(&at, "requestTimeout", props.request_timeout.as_ref());
        not_carried(cx, &at, &props.other);
        let silent = ["probeenabled", "authenticationcertificates", "path"];
        cx.ignored(&at, &props.other, &silent);
        out.push(Out {
            from: at,
            raw: RawSettings {
                name,
                port,
                protocol,
                request_timeout_secs,
                cookie_affinity: affinity.filter(|on| *on),
                affinity_cookie_name,
                connection_draining: draining_on.then_some(true),
                draining_timeout_secs,
                host_header,
                pick_host_name_from_backend_address: pick.then_some(true),
                trusted_ca,
                tunnel_idle_timeout_secs: None,
                tunnel_max_lifetime_secs: None,
                max_tunnel_backlog_bytes: None,
                splice_after_bytes: None,
                splice_after_ms: None,
                on_backend_down: None,
                load_balancing: None,
                passive_failures: None,
                passive_ejection_secs: None,
                probe,
            },
        });
    }
    out
}

/// Settings fields with no equivalent here.
fn not_carried(cx: &mut Ctx<'_>, at: &str, other: &arm::Other) {
    if let Some(path) = other.get("path").and_then(|v| v.as_str()) {
        if !path.is_empty() {
            cx.add(
                Kind::NotCarried,
                at,
                format!(
                    "path {path:?}: the backend path override is not supported; requests keep \
                     their path"
                ),
            );
        }
    }
    if other
        .get("authenticationcertificates")
        .is_some_and(|v| !arm::is_blank(v))
    {
        cx.add(
            Kind::NotCarried,
            at,
            "authenticationCertificates (v1 backend authentication): https backends are \
             verified against trusted_ca or the system's roots instead",
        );
    }
}

/// `trusted_ca` of https settings with `trustedRootCertificates`: a placeholder, and how
/// to make the PEM file.
fn trusted_ca(
    cx: &mut Ctx<'_>,
    at: &str,
    settings: &str,
    protocol: Protocol,
    props: &arm::BackendHttpSettings,
) -> Option<String> {
    let references = props
        .trusted_root_certificates
        .as_deref()
        .unwrap_or_default();
    if references.is_empty() {
        return None;
    }
    if protocol == Protocol::Http {
        cx.add(
            Kind::Changed,
            at,
            "trustedRootCertificates left out: the protocol is http, which verifies no certificate",
        );
        return None;
    }
    let mut names = Vec::new();
    let mut how = Vec::new();
    for (j, reference) in references.iter().enumerate() {
        let field = format!("trustedRootCertificates[{j}]");
        let link = cx.follow(at, &field, Some(reference), arm::TRUSTED_ROOT_CERTIFICATES);
        if let Link::Found(found) = &link {
            let cert = &cx.gw.trusted_root_certificates[found.position].props;
            let name = &found.ours;
            how.push(if let Some(secret) = &cert.key_vault_secret_id {
                format!(
                    "{name} is in Key Vault ({secret}): az keyvault secret show --id {secret} \
                     --query value -o tsv"
                )
            } else if let Some(data) = &cert.data {
                let start: String = data.chars().take(12).collect();
                format!(
                    "{name} is in the input as base64 data ({start}...): decode it (base64 -d) and \
                     convert it with openssl x509 -inform der (or pem) -outform pem"
                )
            } else {
                format!("{name} has no data in the input")
            });
        }
        if let Some(name) = link.name() {
            names.push(name);
        }
    }
    let file = match names.as_slice() {
        [one] => format!("{PLACEHOLDER}/{one}.pem"),
        _ => format!("{PLACEHOLDER}/{settings}-ca.pem"),
    };
    let mut what = format!(
        "trusted_ca = {file:?} stands for the trusted root certificate(s) {}: put them there \
         as PEM",
        names.join(", ")
    );
    if !how.is_empty() {
        what = format!("{what} ({})", how.join("; "));
    }
    cx.add(Kind::ToDo, at, what);
    Some(file)
}

pub(super) fn probes(cx: &mut Ctx<'_>) -> Vec<Out<RawProbe>> {
    let gw = cx.gw;
    let mut out = Vec::new();
    for (position, item) in gw.probes.iter().enumerate() {
        let at = cx.at(arm::PROBES, position, item.index);
        let props = &item.props;
        let protocol = match cx.text(&at, "protocol", props.protocol.as_deref()) {
            Some(text) => protocol(&text).unwrap_or_else(|| {
                cx.add(
                    Kind::ToDo,
                    &at,
                    format!("protocol {text:?} is neither Http nor Https; written as http"),
                );
                Protocol::Http
            }),
            None => Protocol::Http,
        };
        let pick = cx.flag(
            &at,
            "pickHostNameFromBackendHttpSettings",
            props.pick_host_name_from_backend_http_settings.as_ref(),
        );
        let mut host = cx
            .text(&at, "host", props.host.as_deref())
            .filter(|h| !h.is_empty());
        if pick == Some(true) && host.is_some() {
            cx.add(
                Kind::Changed,
                &at,
                "host left out: pickHostNameFromBackendHttpSettings is on, which Azure gives \
                 precedence",
            );
            host = None;
        }
        let matching = props.match_.as_ref();
        let match_status_codes = matching.and_then(|m| m.status_codes.clone());
        let match_body = matching
            .and_then(|m| cx.text(&at, "match.body", m.body.as_deref()))
            .filter(|b| !b.is_empty());
        if let Some(min) = props.other.get("minservers").and_then(|v| v.as_u64()) {
            if min > 0 {
                cx.add(
                    Kind::NotCarried,
                    &at,
                    format!("minServers {min}: not supported (probes are validated, not run yet)"),
                );
            }
        }
        if let Some(port) = props.other.get("port").and_then(|v| v.as_u64()) {
            cx.add(
                Kind::NotCarried,
                &at,
                format!("port {port}: a probe goes to the port of the backend settings using it"),
            );
        }
        cx.ignored(&at, &props.other, &["minservers", "port"]);
        let raw = RawProbe {
            name: cx.ours(arm::PROBES, position),
            protocol,
            host,
            pick_host_name_from_backend_settings: pick.filter(|on| *on),
            path: cx.text(&at, "path", props.path.as_deref()),
            interval_secs: cx.number(&at, "interval", props.interval.as_ref()),
            timeout_secs: cx.number(&at, "timeout", props.timeout.as_ref()),
            unhealthy_threshold: cx
                .number(
                    &at,
                    "unhealthyThreshold",
                    props.unhealthy_threshold.as_ref(),
                )
                .and_then(|n| u32::try_from(n).ok()),
            healthy_threshold: None,
            match_status_codes,
            match_body,
        };
        out.push(Out { from: at, raw });
    }
    out
}
