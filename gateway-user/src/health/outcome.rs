//! What one active probe found, as the health state records it. The probing itself (the
//! request, its TLS, its timer) is the control path's `probing` module; this is the result
//! it hands over, typed so `/backends` and the logs word it one way.

use std::time::{Duration, SystemTime};

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The answer's status, if one came.
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why it failed; `None`: passed.
    pub failure: Option<ProbeFailure>,
}

/// Why a probe failed. `Display` is the text `/backends` shows as `last_probe.error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    /// An https probe whose TLS client could not be made fails rather than going out in
    /// clear.
    #[error("https probe without a TLS client (see the warning at start)")]
    NoTlsClient,
    /// The connection (or its TLS handshake) failed; the connector's words.
    #[error("{0}")]
    Connect(String),
    /// The probe request could not be built (e.g. a path hyper refuses).
    #[error("cannot build the probe request: {0}")]
    Request(String),
    #[error("closed before answering")]
    Closed,
    /// hyper refused the exchange; its words.
    #[error("HTTP: {0}")]
    Http(String),
    #[error("status {status} not in {expected}")]
    Status {
        status: u16,
        /// The probe's ranges as configured, e.g. `200-399`.
        expected: String,
    },
    #[error("body does not contain {text:?} (first {read} bytes read)")]
    BodyMismatch { text: String, read: usize },
    #[error("body could not be read")]
    BodyUnreadable,
}

impl ProbeFailure {
    /// One word per variant: `timeout`, `no_tls_client`, `connect`, `request`, `closed`,
    /// `http`, `status`, `body_mismatch`, `body_unreadable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::NoTlsClient => "no_tls_client",
            Self::Connect(_) => "connect",
            Self::Request(_) => "request",
            Self::Closed => "closed",
            Self::Http(_) => "http",
            Self::Status { .. } => "status",
            Self::BodyMismatch { .. } => "body_mismatch",
            Self::BodyUnreadable => "body_unreadable",
        }
    }
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

/// One probe's result, as `/backends` shows it.
#[derive(Clone, Debug)]
pub struct ProbeRecord {
    pub at: SystemTime,
    pub outcome: ProbeOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_before() {
        let status = ProbeFailure::Status {
            status: 500,
            expected: "200-399".to_owned(),
        };
        assert_eq!(status.to_string(), "status 500 not in 200-399");
        assert_eq!(
            ProbeFailure::Timeout(Duration::from_secs(30)).to_string(),
            "no answer within 30s"
        );
        let outcome = ProbeOutcome {
            status: Some(500),
            latency: Duration::from_millis(12),
            failure: Some(status),
        };
        assert_eq!(
            outcome.summary(),
            "probe failed: status 500 not in 200-399 (12 ms)"
        );
    }
}
