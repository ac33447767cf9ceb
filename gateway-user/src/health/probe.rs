//! One health probe: `GET path` on a fresh connection (TLS with SNI for https probes),
//! passed when the status is in a matching range and, when asked, the body contains the
//! matching text, all within the probe's timeout.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::state::Thresholds;
use crate::{
    config::{defaults, HostHeader, Probe, ProbeHost, Protocol},
    tls::ClientConfig,
    upstream::connect::{self, TlsTarget},
    upstream::{Backend, Upstream},
};

/// Most body bytes read to look for `match_body`.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Sent with every probe, so backends can tell probes from clients in their logs.
pub const USER_AGENT: &str = concat!("gateway-health-probe/", env!("CARGO_PKG_VERSION"));

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

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The answer's status, if one came.
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why it failed; `None`: passed.
    pub failure: Option<String>,
}

impl ProbeOutcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// `passed: 200 in 3 ms`, `failed: status 500 not in 200-399 (12 ms)`.
    pub fn summary(&self) -> String {
        let ms = self.latency.as_millis();
        match (&self.failure, self.status) {
            (None, Some(status)) => format!("probe passed: {status} in {ms} ms"),
            (None, None) => format!("probe passed in {ms} ms"),
            (Some(why), _) => format!("probe failed: {why} ({ms} ms)"),
        }
    }
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

    fn status_matches(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.match_status_codes
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
    }

    fn ranges(&self) -> String {
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

/// Runs one probe of `spec`.
pub async fn once(spec: &ProbeSpec) -> ProbeOutcome {
    let started = Instant::now();
    let result = tokio::time::timeout(spec.timeout, exchange(spec)).await;
    let latency = started.elapsed();
    let (status, failure) = match result {
        Err(_) => (
            None,
            Some(format!("no answer within {}s", spec.timeout.as_secs())),
        ),
        Ok(Err(why)) => (None, Some(why)),
        Ok(Ok((status, body))) => {
            let failure = if !spec.status_matches(status) {
                Some(format!(
                    "status {} not in {}",
                    status.as_u16(),
                    spec.ranges()
                ))
            } else {
                match (&spec.match_body, body) {
                    (Some(text), Some(body)) if !contains(&body, text.as_bytes()) => Some(format!(
                        "body does not contain {text:?} (first {} bytes read)",
                        body.len()
                    )),
                    (Some(_), None) => Some("body could not be read".to_owned()),
                    _ => None,
                }
            };
            (Some(status.as_u16()), failure)
        }
    };
    ProbeOutcome {
        status,
        latency,
        failure,
    }
}

/// Connect, send, read the head (and the body when it is to be matched).
async fn exchange(spec: &ProbeSpec) -> Result<(StatusCode, Option<Bytes>), String> {
    if spec.protocol == Protocol::Https && spec.tls.is_none() {
        return Err("https probe without a TLS client (see the warning at start)".to_owned());
    }
    let stream = connect::connect(spec.addr, spec.tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let request = Request::get(spec.path.as_str())
        .header(header::HOST, spec.host.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the probe request: {e}"))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| describe_exchange_error(&e))?;
    let status = resp.status();
    if spec.match_body.is_none() {
        return Ok((status, None));
    }
    // Up to the limit: a larger body is cut, the text must be in its first bytes.
    let mut body = resp.into_body();
    let mut read = Vec::new();
    while read.len() < MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Some(Err(_)) if read.is_empty() => return Ok((status, None)),
            Some(Err(_)) | None => break,
        }
    }
    read.truncate(MAX_BODY_BYTES);
    Ok((status, Some(Bytes::from(read))))
}

fn describe_exchange_error(error: &hyper::Error) -> String {
    if error.is_incomplete_message() {
        "closed before answering".to_owned()
    } else {
        format!("HTTP: {error}")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_match_finds_text_anywhere() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: fine", b"ok"));
        assert!(contains(b"", b""));
    }

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
