//! The task probing one backend: a probe at once, then one every interval (counted from
//! the start of the previous one), until stopped.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{probe, ProbeSpec};
use crate::health::BackendHealth;

pub async fn run(health: Arc<BackendHealth>, spec: ProbeSpec, stop: CancellationToken) {
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            outcome = probe::once(&spec) => outcome,
        };
        tracing::debug!(backend = %health.key, probe = %spec.name, result = %outcome.summary(), "probe");
        health.record_probe(outcome, spec.thresholds);
        next = started + spec.interval;
    }
}
