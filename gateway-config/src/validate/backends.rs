//! `[[backend_pools]]` and `[[backend_settings]]`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use super::{names::Names, read, Checked, Checker};
use crate::{
    defaults,
    document::{Element, Origin},
    matching::{BackendAddress, HostPattern},
    model::{
        BackendSettings, HostHeader, OnBackendDown, OnBackendDownKind, PassiveHealth, Pool, Probe,
        Promotion, Protocol, TunnelLimits,
    },
    pem::{self, PemKind},
    raw::{RawPool, RawSettings},
};

pub fn pools(elements: &[Element<RawPool>], c: &mut Checker<'_>) -> Checked<Pool> {
    let mut checked = vec![None; elements.len()];
    for (i, origin, raw) in read(elements) {
        let errors_before = c.errors.len();
        if raw.addresses.is_empty() {
            c.error(
                origin,
                "addresses",
                format!("backend pool {:?} has no addresses", raw.name),
                "list at least one backend, e.g. addresses = [\"10.0.0.4:8080\"]",
            );
        }
        let mut addresses = Vec::new();
        let mut seen = HashSet::new();
        for (j, text) in raw.addresses.iter().enumerate() {
            let field = format!("addresses[{j}]");
            match BackendAddress::parse(text) {
                Ok(address) if !seen.insert(address.clone()) => c.error(
                    origin,
                    &field,
                    format!("{text:?} is listed twice"),
                    "list each backend once",
                ),
                Ok(address) => addresses.push(address),
                Err(invalid) => c.invalid(origin, &field, invalid),
            }
        }
        if c.errors.len() == errors_before {
            checked[i] = Some(Arc::new(Pool {
                name: raw.name.clone(),
                addresses,
            }));
        }
    }
    checked
}

pub fn settings(
    elements: &[Element<RawSettings>],
    probe_names: &Names,
    probes: &Checked<Probe>,
    c: &mut Checker<'_>,
) -> Checked<BackendSettings> {
    let mut checked = vec![None; elements.len()];
    for (i, origin, raw) in read(elements) {
        let errors_before = c.errors.len();
        let probe = raw.probe.as_ref().and_then(|name| {
            let j = probe_names.resolve(name, origin, "probe", c)?;
            probes.get(j).cloned().flatten()
        });
        let settings = one_settings(origin, raw, probe, c);
        if c.errors.len() == errors_before {
            checked[i] = Some(Arc::new(settings));
        }
    }
    checked
}

fn one_settings(
    origin: &Origin,
    raw: &RawSettings,
    probe: Option<Arc<Probe>>,
    c: &mut Checker<'_>,
) -> BackendSettings {
    if raw.port == 0 {
        c.error(
            origin,
            "port",
            "port is 0",
            "give the port the backends listen on (1-65535)",
        );
    }
    let request_timeout = c.positive_secs(
        origin,
        "request_timeout_secs",
        raw.request_timeout_secs,
        defaults::REQUEST_TIMEOUT_SECS,
    );
    let affinity_cookie = affinity(origin, raw, c);
    let on_backend_down = on_backend_down(origin, raw, c);
    let passive = passive(origin, raw, c);
    let host_header = host_header(origin, raw, c);
    let trusted_ca = raw.trusted_ca.as_ref().map(|path| {
        let resolved = pem::resolve(c.base_dir(), path);
        if raw.protocol == Protocol::Http {
            c.error(
                origin,
                "trusted_ca",
                "trusted_ca is set but the protocol is http, which verifies no certificate",
                "remove trusted_ca, or set protocol = \"https\"",
            );
        } else if let Err(invalid) = pem::check(&resolved, PemKind::CaCertificates) {
            c.invalid(origin, "trusted_ca", invalid);
        }
        resolved
    });
    let defaults = c.settings_defaults();
    let idle_timeout = c.positive_secs(
        origin,
        "tunnel_idle_timeout_secs",
        raw.tunnel_idle_timeout_secs,
        defaults.tunnel_idle_timeout_secs,
    );
    let lifetime_secs = raw
        .tunnel_max_lifetime_secs
        .unwrap_or(defaults.tunnel_max_lifetime_secs);
    let max_backlog_bytes = raw
        .max_tunnel_backlog_bytes
        .unwrap_or(defaults.max_tunnel_backlog_bytes);
    if max_backlog_bytes == 0 {
        c.error(
            origin,
            "max_tunnel_backlog_bytes",
            "max_tunnel_backlog_bytes is 0, which would pause every spliced tunnel at once",
            format!(
                "give a number of bytes, e.g. the default {}",
                defaults::MAX_TUNNEL_BACKLOG_BYTES
            ),
        );
    }
    BackendSettings {
        name: raw.name.clone(),
        port: raw.port,
        protocol: raw.protocol,
        request_timeout,
        affinity_cookie,
        on_backend_down,
        load_balancing: raw.load_balancing.unwrap_or_default(),
        passive,
        host_header,
        trusted_ca,
        tunnel: TunnelLimits {
            idle_timeout,
            max_lifetime: (lifetime_secs > 0).then(|| Duration::from_secs(lifetime_secs)),
            max_backlog_bytes,
            promote: Promotion {
                after_bytes: raw
                    .splice_after_bytes
                    .unwrap_or(defaults.splice_after_bytes),
                after: Duration::from_millis(
                    raw.splice_after_ms.unwrap_or(defaults.splice_after_ms),
                ),
            },
        },
        probe,
    }
}

fn affinity(origin: &Origin, raw: &RawSettings, c: &mut Checker<'_>) -> Option<String> {
    let name = raw
        .affinity_cookie_name
        .clone()
        .unwrap_or_else(|| defaults::AFFINITY_COOKIE_NAME.to_owned());
    if raw.cookie_affinity != Some(true) {
        if raw.affinity_cookie_name.is_some() {
            c.error(
                origin,
                "affinity_cookie_name",
                "affinity_cookie_name is set but cookie_affinity is off",
                "set cookie_affinity = true, or remove affinity_cookie_name",
            );
        }
        return None;
    }
    // RFC 6265 cookie-name: an RFC 7230 token.
    let token_char = |ch: char| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch);
    if name.is_empty() || !name.chars().all(token_char) {
        c.error(
            origin,
            "affinity_cookie_name",
            format!("{name:?} cannot be a cookie name"),
            "use letters, digits and !#$%&'*+-.^_`|~ only",
        );
    }
    Some(name)
}

/// `on_backend_down`, with Azure's `connection_draining` as another way to ask for `drain`.
fn on_backend_down(origin: &Origin, raw: &RawSettings, c: &mut Checker<'_>) -> OnBackendDown {
    let kind = match (raw.on_backend_down, raw.connection_draining) {
        (Some(kind @ (OnBackendDownKind::Keep | OnBackendDownKind::Close)), Some(true)) => {
            c.error(
                origin,
                "connection_draining",
                format!(
                    "connection_draining = true asks to drain, but on_backend_down = \"{}\"",
                    OnBackendDown::from_kind(kind).as_str()
                ),
                "keep one: remove connection_draining, or set on_backend_down = \"drain\"",
            );
            kind
        }
        (Some(kind), _) => kind,
        (None, Some(true)) => OnBackendDownKind::Drain,
        (None, _) => OnBackendDownKind::Keep,
    };
    if kind != OnBackendDownKind::Drain {
        if raw.draining_timeout_secs.is_some() {
            c.error(
                origin,
                "draining_timeout_secs",
                "draining_timeout_secs is set but nothing drains",
                "set on_backend_down = \"drain\" (or connection_draining = true), or remove \
                 draining_timeout_secs",
            );
        }
        return OnBackendDown::from_kind(kind);
    }
    let secs = raw
        .draining_timeout_secs
        .unwrap_or(defaults::DRAINING_TIMEOUT_SECS);
    if !(1..=defaults::DRAINING_TIMEOUT_SECS_MAX).contains(&secs) {
        c.error(
            origin,
            "draining_timeout_secs",
            format!("draining_timeout_secs is {secs}"),
            format!(
                "give 1 to {} seconds (the default is {})",
                defaults::DRAINING_TIMEOUT_SECS_MAX,
                defaults::DRAINING_TIMEOUT_SECS
            ),
        );
    }
    OnBackendDown::Drain(Duration::from_secs(secs))
}

fn passive(origin: &Origin, raw: &RawSettings, c: &mut Checker<'_>) -> PassiveHealth {
    let failures = raw.passive_failures.unwrap_or(defaults::PASSIVE_FAILURES);
    if failures == 0 && raw.passive_ejection_secs.is_some() {
        c.error(
            origin,
            "passive_ejection_secs",
            "passive_ejection_secs is set but passive_failures = 0 turns passive checks off",
            "remove passive_ejection_secs, or set passive_failures to 1 or more",
        );
    }
    let ejection = c.positive_secs(
        origin,
        "passive_ejection_secs",
        raw.passive_ejection_secs,
        defaults::PASSIVE_EJECTION_SECS,
    );
    PassiveHealth { failures, ejection }
}

fn host_header(origin: &Origin, raw: &RawSettings, c: &mut Checker<'_>) -> HostHeader {
    match (&raw.host_header, raw.pick_host_name_from_backend_address) {
        (Some(_), Some(true)) => {
            c.error(
                origin,
                "host_header",
                "both host_header and pick_host_name_from_backend_address = true are set",
                "keep one: a fixed Host header, or the backend address as Host",
            );
            HostHeader::FromBackendAddress
        }
        (Some(host), _) => {
            // A host, optionally with a port.
            let name = host
                .rsplit_once(':')
                .filter(|(_, port)| port.parse::<u16>().is_ok())
                .map_or(host.as_str(), |(name, _)| name);
            let bad_name = HostPattern::parse(name).is_err() || name.contains('*');
            if bad_name && name.parse::<std::net::IpAddr>().is_err() {
                c.error(
                    origin,
                    "host_header",
                    format!("host_header {host:?} is not a host name"),
                    "write the Host header to send, e.g. \"app.example.com\" or \
                     \"app.example.com:8443\"",
                );
            }
            HostHeader::Override(host.clone())
        }
        (None, Some(true)) => HostHeader::FromBackendAddress,
        (None, _) => HostHeader::Preserve,
    }
}
