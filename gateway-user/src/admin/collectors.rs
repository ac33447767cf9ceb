//! Metrics read from live state when `/metrics` is scraped: the eBPF program's per-CPU
//! counters and the splice's userspace counters, backend health and probes, and live
//! tunnels by mode and state. The counters the data path writes as it goes are in
//! `crate::metrics`.

use std::{fmt, sync::Arc};

use gateway_common::counter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    admission::Admission, dataplane::EbpfDataplane, health::Health,
    tunnel::registry::Registry as Tunnels,
};

/// Adds the collectors to `registry`: the kernel's counters (zero when eBPF is not loaded,
/// so the same names exist whatever the dataplane), backend health, live tunnels.
pub fn register(
    registry: &mut Registry,
    ebpf: Option<Arc<EbpfDataplane>>,
    health: Arc<Health>,
    tunnels: Arc<Tunnels>,
) {
    registry.register_collector(Box::new(KernelCounters(ebpf)));
    registry.register_collector(Box::new(LiveState { health, tunnels }));
}

/// Adds the admission gauges: client connections open, and clients the per-client limits
/// keep state for.
pub fn register_admission(registry: &mut Registry, admission: Arc<Admission>) {
    registry.register_collector(Box::new(AdmissionState(admission)));
}

#[derive(Debug)]
struct AdmissionState(Arc<Admission>);

impl Collector for AdmissionState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        let open = gauge(self.0.open());
        let metric = encoder.encode_descriptor(
            "gateway_client_connections",
            "Client connections open now, on every listener (WebSocket tunnels included; the \
             admin listener's are not), as max_connections counts them",
            None,
            open.metric_type(),
        )?;
        open.encode(metric)?;
        let tracked = gauge(self.0.tracked() as u64);
        let metric = encoder.encode_descriptor(
            "gateway_client_addresses_tracked",
            "Client addresses (IPv4, IPv6 /64) the per-client limits keep state for: those \
             with a connection open or an upgrade bucket still refilling (approximate)",
            None,
            tracked.metric_type(),
        )?;
        tracked.encode(metric)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SenderLabels {
    sender: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    pool: String,
    settings: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendStateLabels {
    pool: String,
    settings: String,
    backend: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    pool: String,
    settings: String,
    backend: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelStateLabels {
    mode: &'static str,
    state: &'static str,
}

/// Reads the eBPF per-CPU counters on every scrape; all zero without eBPF.
struct KernelCounters(Option<Arc<EbpfDataplane>>);

impl fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KernelCounters")
    }
}

impl Collector for KernelCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let c = self
            .0
            .as_ref()
            .map(|ebpf| ebpf.counters())
            .unwrap_or_default();
        encode_counters(&mut encoder, &c)?;
        let bytes = ConstCounter::new(0u64);

        let (lent, loans, brakes) = self
            .0
            .as_ref()
            .map(|ebpf| {
                let pool = ebpf.backlog_pool();
                (pool.lent(), pool.loans(), ebpf.brakes())
            })
            .unwrap_or_default();
        let metric = encoder.encode_descriptor(
            "gateway_splice_backlog_pool_lent_bytes",
            "Kernel memory spliced flows have borrowed beyond their own backlog budget and \
             allowance of owed bytes, out of spliced_backlog_pool_bytes",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        ConstGauge::new(i64::try_from(lent).unwrap_or(i64::MAX)).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "gateway_splice_backlog_loans",
            "Times a spliced flow whose receiver kept up grew its backlog budget from the pool",
            None,
            bytes.metric_type(),
        )?;
        ConstCounter::new(loans).encode(metric)?;
        let mut family = encoder.encode_descriptor(
            "gateway_splice_brakes",
            "Times a spliced flow's sender (client or backend) was stopped, its receive window \
             shut, because it kept writing while it read nothing and the bytes it sent could \
             not move until it did",
            None,
            bytes.metric_type(),
        )?;
        for (sender, count) in ["client", "backend"].into_iter().zip(brakes) {
            ConstCounter::new(count).encode(family.encode_family(&SenderLabels { sender })?)?;
        }
        Ok(())
    }
}

/// The verdict program's counters, `c` indexed by [`counter`], as
/// [`counter::TABLE`] says: family by family, each counter under its label.
fn encode_counters(
    encoder: &mut DescriptorEncoder,
    c: &[u64; counter::COUNT as usize],
) -> Result<(), fmt::Error> {
    let metric_type = ConstCounter::new(0u64).metric_type();
    for (f, family) in counter::FAMILIES.iter().enumerate() {
        let mut descriptor =
            encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
        for export in counter::TABLE.iter().filter(|export| export.family == f) {
            let value = ConstCounter::new(c[export.index as usize]);
            match (family.label, export.label) {
                (Some(key), Some(label)) => {
                    value.encode(descriptor.encode_family(&[(key, label)])?)?
                }
                // A family without a label has one counter (checked where the table is).
                _ => {
                    value.encode(descriptor)?;
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Backend health and live tunnels, read when scraped.
struct LiveState {
    health: Arc<Health>,
    tunnels: Arc<Tunnels>,
}

impl fmt::Debug for LiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveState")
    }
}

impl Collector for LiveState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauge = ConstGauge::new(0i64);
        let counter = ConstCounter::new(0u64);
        let reports = self.health.reports();
        let labels = |r: &crate::health::BackendReport| BackendLabels {
            pool: r.pool.clone(),
            settings: r.settings.clone(),
            backend: r.address.clone(),
        };

        let mut family = encoder.encode_descriptor(
            "gateway_backend_state",
            "1 for each backend's current health state (unknown: not probed yet; healthy; \
             unhealthy: failed its probe; ejected: taken out by passive checks)",
            None,
            gauge.metric_type(),
        )?;
        for report in &reports {
            let current = if report.passive.ejected && report.state.takes_traffic() {
                "ejected"
            } else {
                report.state.as_str()
            };
            for state in ["unknown", "healthy", "unhealthy", "ejected"] {
                let labels = BackendStateLabels {
                    pool: report.pool.clone(),
                    settings: report.settings.clone(),
                    backend: report.address.clone(),
                    state,
                };
                ConstGauge::new(i64::from(state == current))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gateway_backend_probes",
            "Health probes run, by backend and result (passed, failed)",
            None,
            counter.metric_type(),
        )?;
        for report in &reports {
            for (result, value) in [
                ("passed", report.probes_passed),
                ("failed", report.probes_failed),
            ] {
                let labels = ProbeLabels {
                    pool: report.pool.clone(),
                    settings: report.settings.clone(),
                    backend: report.address.clone(),
                    result,
                };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gateway_backend_ejections",
            "Times passive checks took a backend out (connect failures or resets in a row)",
            None,
            counter.metric_type(),
        )?;
        for report in &reports {
            ConstCounter::new(report.passive.ejections_total)
                .encode(family.encode_family(&labels(report))?)?;
        }

        let mut family = encoder.encode_descriptor(
            "gateway_backend_active_connections",
            "Requests in flight and tunnels open, by backend",
            None,
            gauge.metric_type(),
        )?;
        for report in &reports {
            ConstGauge::new(report.active_connections as i64)
                .encode(family.encode_family(&labels(report))?)?;
        }

        let counts = self.tunnels.counts();
        let mut family = encoder.encode_descriptor(
            "gateway_tunnels",
            "Live WebSocket tunnels by mode (spliced, userspace, opening) and state (open, \
             draining: its backend is down and it closes when the drain time is over)",
            None,
            gauge.metric_type(),
        )?;
        for mode in ["spliced", "userspace", "opening"] {
            for state in ["open", "draining"] {
                let value = counts.get(&(mode, state)).copied().unwrap_or(0);
                ConstGauge::new(value as i64)
                    .encode(family.encode_family(&TunnelStateLabels { mode, state })?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    /// Encodes the kernel counters alone, each with a value of its own.
    struct Fixed([u64; counter::COUNT as usize]);

    impl fmt::Debug for Fixed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Fixed")
        }
    }

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            encode_counters(&mut encoder, &self.0)
        }
    }

    /// Names, labels, help and order of the kernel's counters as `/metrics` prints them
    /// (tests and docs match them), and which counter each line reads.
    #[test]
    fn kernel_counters_are_exported_as_before() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(std::array::from_fn(|i| 100 + i as u64))));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        assert_eq!(text, EXPECTED);
    }

    /// Captured from the collector before it read a table: counter `i` holds `100 + i`.
    const EXPECTED: &str = r#"# HELP gateway_spliced_bytes Bytes redirected between client and backend by the kernel splice, by direction
# TYPE gateway_spliced_bytes counter
gateway_spliced_bytes_total{direction="client_to_backend"} 101
gateway_spliced_bytes_total{direction="backend_to_client"} 102
# HELP gateway_splice_verdicts Segments seen by the splice verdict program, by outcome (redirected; passed to userspace because no flow or no peer was registered; or dropped because empty, i.e. a bare FIN)
# TYPE gateway_splice_verdicts counter
gateway_splice_verdicts_total{outcome="redirected"} 100
gateway_splice_verdicts_total{outcome="passed_no_flow"} 103
gateway_splice_verdicts_total{outcome="passed_redirect_failed"} 104
gateway_splice_verdicts_total{outcome="dropped_empty"} 106
gateway_splice_verdicts_total{outcome="passed_paused"} 107
gateway_splice_verdicts_total{outcome="overlap_trimmed"} 111
# HELP gateway_splice_pauses Times a spliced flow paused, at its backlog budget or on a failed redirect (segments then wait in the sender's socket until the gateway forwards them)
# TYPE gateway_splice_pauses counter
gateway_splice_pauses_total 108
# HELP gateway_splice_resumes Times a paused flow resumed splicing
# TYPE gateway_splice_resumes counter
gateway_splice_resumes_total 109
# HELP gateway_splice_overlap_bytes Bytes the kernel handed the splice verdict a second time (a retransmission overlapping bytes already received) and the verdict cut off
# TYPE gateway_splice_overlap_bytes counter
gateway_splice_overlap_bytes_total 112
# HELP gateway_splice_sequence_anomalies Segments whose TCP sequence numbers the splice verdict could not vouch for; their tunnels are reset
# TYPE gateway_splice_sequence_anomalies counter
gateway_splice_sequence_anomalies_total 113
# HELP gateway_splice_events_lost Flow events that did not fit in the eBPF ring buffer (every tunnel is then checked)
# TYPE gateway_splice_events_lost counter
gateway_splice_events_lost_total 110
# HELP gateway_splice_passed_bytes Bytes the splice verdict program left for userspace instead of redirecting
# TYPE gateway_splice_passed_bytes counter
gateway_splice_passed_bytes_total 105
# EOF
"#;
}
