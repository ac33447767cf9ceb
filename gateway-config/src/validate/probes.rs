//! `[[probes]]`: parsed and validated now; health checks come with a later step.

use std::sync::Arc;

use super::{read, Checked, Checker};
use crate::{
    defaults,
    document::{Element, Origin},
    matching::{parse_status_range, PathPattern},
    model::{Probe, ProbeHost},
    raw::RawProbe,
};

pub fn check(elements: &[Element<RawProbe>], c: &mut Checker<'_>) -> Checked<Probe> {
    let mut checked = vec![None; elements.len()];
    for (i, origin, raw) in read(elements) {
        let errors_before = c.errors.len();
        let probe = probe(origin, raw, c);
        if c.errors.len() == errors_before {
            checked[i] = Some(Arc::new(probe));
        }
    }
    checked
}

fn probe(origin: &Origin, raw: &RawProbe, c: &mut Checker<'_>) -> Probe {
    let host = match (&raw.host, raw.pick_host_name_from_backend_settings) {
        (Some(_), Some(true)) => {
            c.error(
                origin,
                "host",
                "both host and pick_host_name_from_backend_settings = true are set",
                "keep one: a fixed host, or the backend settings' host",
            );
            ProbeHost::FromBackendSettings
        }
        (Some(host), _) => {
            if host.is_empty() || host.contains(['/', ' ']) {
                c.error(
                    origin,
                    "host",
                    format!("host {host:?} is not a host name"),
                    "write the Host header to send, e.g. \"app.example.com\"",
                );
            }
            ProbeHost::Fixed(host.clone())
        }
        (None, Some(true)) => ProbeHost::FromBackendSettings,
        (None, _) => {
            c.error(
                origin,
                "host",
                "the probe names no host",
                "set host = \"...\" (the Host header to send), or \
                 pick_host_name_from_backend_settings = true",
            );
            ProbeHost::FromBackendSettings
        }
    };
    let path = raw
        .path
        .clone()
        .unwrap_or_else(|| defaults::PROBE_PATH.to_owned());
    if matches!(
        PathPattern::parse(&path),
        Err(_) | Ok(PathPattern::Prefix(_))
    ) {
        c.error(
            origin,
            "path",
            format!("probe path {path:?} is not an absolute path"),
            "write the path to request, starting with '/', without '*' (e.g. \"/health\")",
        );
    }
    let interval = c.positive_secs(
        origin,
        "interval_secs",
        raw.interval_secs,
        defaults::PROBE_INTERVAL_SECS,
    );
    let timeout = c.positive_secs(
        origin,
        "timeout_secs",
        raw.timeout_secs,
        defaults::PROBE_TIMEOUT_SECS,
    );
    if timeout > interval {
        c.error(
            origin,
            "timeout_secs",
            format!(
                "timeout_secs ({}) is longer than interval_secs ({})",
                timeout.as_secs(),
                interval.as_secs()
            ),
            "make timeout_secs at most interval_secs, so a probe ends before the next starts",
        );
    }
    let unhealthy_threshold = c.at_least_one(
        origin,
        "unhealthy_threshold",
        raw.unhealthy_threshold,
        defaults::PROBE_UNHEALTHY_THRESHOLD,
    );
    let healthy_threshold = c.at_least_one(
        origin,
        "healthy_threshold",
        raw.healthy_threshold,
        defaults::PROBE_HEALTHY_THRESHOLD,
    );
    let codes = raw
        .match_status_codes
        .clone()
        .unwrap_or_else(|| vec![defaults::PROBE_MATCH_STATUS_CODES.to_owned()]);
    if codes.is_empty() {
        c.error(
            origin,
            "match_status_codes",
            "match_status_codes is empty, so no answer could count as healthy",
            format!(
                "list the healthy codes, or remove the key for the default [\"{}\"]",
                defaults::PROBE_MATCH_STATUS_CODES
            ),
        );
    }
    let mut match_status_codes = Vec::new();
    for (j, text) in codes.iter().enumerate() {
        match parse_status_range(text) {
            Ok(range) => match_status_codes.push(range),
            Err(invalid) => c.invalid(origin, &format!("match_status_codes[{j}]"), invalid),
        }
    }
    Probe {
        name: raw.name.clone(),
        protocol: raw.protocol,
        host,
        path,
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
        match_status_codes,
        match_body: raw.match_body.clone(),
    }
}
