//! What `/backends` shows of one backend (and `/metrics` counts): Azure's
//! `show-backend-health`, plus since when, the last probe, the streak, passive ejections
//! and open connections.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{BackendHealth, State};

#[derive(Clone, Debug, Serialize)]
pub struct BackendReport {
    pub pool: String,
    pub settings: String,
    pub address: String,
    /// `unknown`, `healthy`, `unhealthy` or `removed`.
    pub state: State,
    /// Whether new requests and tunnels go here now (state, and not ejected).
    pub takes_traffic: bool,
    /// Unix time (seconds) of the last state change (or of when it was first seen).
    pub since_unix: u64,
    pub since_secs: u64,
    /// `default`, a `[[probes]]` name, or `null` when it is not probed.
    pub probe: Option<String>,
    pub last_probe: Option<LastProbe>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub probes_passed: u64,
    pub probes_failed: u64,
    pub passive: PassiveReport,
    /// Requests in flight and tunnels open to it.
    pub active_connections: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastProbe {
    pub at_unix: u64,
    pub passed: bool,
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// The same as one word ([`super::ProbeFailure::kind`]), for scripts and alerts.
    pub error_kind: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PassiveReport {
    /// Connect failures and resets in a row so far.
    pub consecutive_failures: u32,
    pub ejected: bool,
    /// Seconds left of the current ejection (0 when not ejected).
    pub ejected_for_secs: f64,
    pub ejections_total: u64,
}

impl BackendReport {
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.pool, &self.settings, &self.address)
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl BackendHealth {
    pub fn report(&self) -> BackendReport {
        let detail = self.lock().clone();
        let ordering = std::sync::atomic::Ordering::Relaxed;
        BackendReport {
            pool: self.key.pool.clone(),
            settings: self.key.settings.clone(),
            address: self.key.addr.to_string(),
            state: self.state(),
            takes_traffic: self.takes_traffic(),
            since_unix: unix(detail.since),
            since_secs: detail.since_instant.elapsed().as_secs(),
            probe: detail.probe,
            last_probe: detail.last_probe.map(|record| LastProbe {
                at_unix: unix(record.at),
                passed: record.outcome.passed(),
                status: record.outcome.status,
                latency_ms: record.outcome.latency.as_secs_f64() * 1000.0,
                error: record.outcome.failure.as_ref().map(ToString::to_string),
                error_kind: record.outcome.failure.as_ref().map(|f| f.kind()),
            }),
            consecutive_successes: detail.streak.consecutive_successes,
            consecutive_failures: detail.streak.consecutive_failures,
            probes_passed: self.probes_passed.load(ordering),
            probes_failed: self.probes_failed.load(ordering),
            passive: PassiveReport {
                consecutive_failures: self.passive.failures_in_row(),
                ejected: self.passive.ejected(),
                ejected_for_secs: self.passive.ejected_for().as_secs_f64(),
                ejections_total: self.passive.ejections_total(),
            },
            active_connections: self.active(),
        }
    }
}
