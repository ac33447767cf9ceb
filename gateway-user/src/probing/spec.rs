//! What a prober probes for one backend: the settings' probe, or Azure's default one,
//! with the Host, TLS client and server name it uses.

use std::{sync::Arc, time::Duration};

use http::StatusCode;

use crate::{
    config::{defaults, HostHeader, Probe, ProbeHost, Protocol},
    health::Thresholds,
    tls::ClientConfig,
    upstream::{connect::TlsTarget, Backend, Upstream},
};

/// Everything a prober needs to probe one backend.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// `default`, or the `[[probes]]` name.
    pub name: String,
    pub addr: std::net::SocketAddr,
    /// `Some` for https probes.
    pub tls: Option<TlsTarget>,
    pub host: String,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
    pub match_status_codes: Vec<(u16, u16)>,
    pub match_body: Option<String>,
    /// An https probe whose TLS client could not be made (`tls: None`) fails rather than
    /// going out in clear.
    pub protocol: Protocol,
}

impl ProbeSpec {
    /// The probe of `backend` in `upstream`: the settings' `probe`, else Azure's default
    /// one when `default_probes` is on (`GET /` on the settings' protocol and port, every
    /// 30 s, 30 s timeout, out after 3 failures, 200-399), else none. `system_roots` is
    /// asked for a TLS client only for an https probe of http settings.
    pub fn for_backend(
        upstream: &Upstream,
        backend: &Backend,
        default_probes: bool,
        system_roots: impl FnOnce() -> Option<Arc<ClientConfig>>,
    ) -> Option<Self> {
        let settings = &upstream.settings;
        let default;
        let probe: &Probe = match &settings.probe {
            Some(probe) => probe,
            None if default_probes => {
                default = default_probe(settings.protocol);
                &default
            }
            None => return None,
        };
        // The settings' Host rule, with the backend's own host for "the client's Host".
        let settings_host = match &settings.host_header {
            HostHeader::Override(host) => host.clone(),
            HostHeader::Preserve | HostHeader::FromBackendAddress => backend.host_name.clone(),
        };
        let host = match &probe.host {
            ProbeHost::Fixed(host) => host.clone(),
            ProbeHost::FromBackendSettings => settings_host,
        };
        let tls = match probe.protocol {
            Protocol::Http => None,
            Protocol::Https => {
                // The settings' trust when they are https; the system's otherwise.
                let config = match &upstream.tls {
                    Some(tls) => Some(tls.config.clone()),
                    None => system_roots(),
                };
                let server_name = match (&probe.host, &backend.server_name) {
                    (ProbeHost::FromBackendSettings, Some(name)) => Some(name.clone()),
                    _ => crate::tls::host_server_name(&host).ok(),
                };
                config
                    .zip(server_name)
                    .map(|(config, server_name)| TlsTarget {
                        config,
                        server_name,
                    })
            }
        };
        if probe.protocol == Protocol::Https && tls.is_none() {
            tracing::warn!(
                backend = %backend.addr,
                probe = %probe.name,
                "https probe has no usable TLS client (no trust store, or no server name \
                 for {host:?}): it will fail"
            );
        }
        Some(Self {
            name: probe.name.clone(),
            addr: backend.addr,
            tls,
            host,
            path: probe.path.clone(),
            interval: probe.interval,
            timeout: probe.timeout,
            thresholds: Thresholds {
                unhealthy: probe.unhealthy_threshold,
                healthy: probe.healthy_threshold,
            },
            match_status_codes: probe.match_status_codes.clone(),
            match_body: probe.match_body.clone(),
            protocol: probe.protocol,
        })
    }

    pub(super) fn status_matches(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.match_status_codes
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
    }

    pub(super) fn ranges(&self) -> String {
        let ranges: Vec<String> = self
            .match_status_codes
            .iter()
            .map(|&(low, high)| {
                if low == high {
                    low.to_string()
                } else {
                    format!("{low}-{high}")
                }
            })
            .collect();
        ranges.join(",")
    }
}

/// Azure's default probe.
fn default_probe(protocol: Protocol) -> Probe {
    Probe {
        name: "default".to_owned(),
        protocol,
        host: ProbeHost::FromBackendSettings,
        path: defaults::PROBE_PATH.to_owned(),
        interval: Duration::from_secs(defaults::PROBE_INTERVAL_SECS),
        timeout: Duration::from_secs(defaults::PROBE_TIMEOUT_SECS),
        unhealthy_threshold: defaults::PROBE_UNHEALTHY_THRESHOLD,
        healthy_threshold: defaults::PROBE_HEALTHY_THRESHOLD,
        match_status_codes: vec![(200, 399)],
        match_body: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_probe_is_azures() {
        let probe = default_probe(Protocol::Https);
        assert_eq!(probe.path, "/");
        assert_eq!(probe.interval, Duration::from_secs(30));
        assert_eq!(probe.timeout, Duration::from_secs(30));
        assert_eq!(probe.unhealthy_threshold, 3);
        assert_eq!(probe.match_status_codes, [(200, 399)]);
        assert_eq!(probe.protocol, Protocol::Https);
    }
}
