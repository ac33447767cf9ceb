//! Prometheus metrics. Userspace counts what userspace does; what the kernel splices is
//! read from the eBPF counters at scrape time, so the data path never touches a metric.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    },
    metrics::{
        counter::ConstCounter,
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::Registry,
};

use crate::{dataplane::EbpfDataplane, health::Health, tunnel::registry::Registry as Tunnels};
use gateway_common::counter;

/// How a tunnel's bytes are carried.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Mode {
    /// In the kernel, by the sk_skb verdict program.
    Spliced,
    /// By the gateway's userspace relay.
    Userspace,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spliced => "spliced",
            Self::Userspace => "userspace",
        }
    }
}

/// Which way bytes flow through a tunnel.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    ClientToBackend,
    BackendToClient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientToBackend => "client_to_backend",
            Self::BackendToClient => "backend_to_client",
        }
    }
}

/// Label values and log fields use the same snake_case names.
macro_rules! label_value {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}
label_value!(Mode, Direction);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: Mode,
}

/// Labels of `gateway_dataplane_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DataplaneInfo {
    /// `ebpf` or `userspace`.
    pub dataplane: String,
    /// Why: e.g. the load error or the failed self-test when `auto` fell back.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    mode: Mode,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    rule: String,
    status: u16,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The `kind` labels of `gateway_tls_handshake_failures_total`: those of
/// [`crate::tls::TlsAcceptError::kind`].
pub const TLS_HANDSHAKE_FAILURE_KINDS: [&str; 4] = ["timeout", "client_closed", "protocol", "io"];

/// The gateway's metrics; cheap to clone, every handle counts into the same registry.
/// Every known label set exists from the start, at zero, so a dashboard or alert never
/// has to tell "nothing happened" from "not exported".
#[derive(Clone, Debug)]
pub struct Metrics {
    tunnels_opened: Family<ModeLabels, Counter>,
    tunnels_active: Family<ModeLabels, Gauge>,
    tunnels_closed: Family<CloseLabels, Counter>,
    relayed_bytes: Family<DirectionLabels, Counter>,
    handoff_bytes: Family<DirectionLabels, Counter>,
    upgrades_rejected: Counter,
    tls_handshake_failures: Family<KindLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    websocket_handshake: Histogram,
    splice_integrity_errors: Counter,
}

/// Buckets of `gateway_websocket_handshake_seconds`: 0.25 ms to about 4 s.
fn handshake_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 15)
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            tunnels_opened: Family::default(),
            tunnels_active: Family::default(),
            tunnels_closed: Family::default(),
            relayed_bytes: Family::default(),
            handoff_bytes: Family::default(),
            upgrades_rejected: Counter::default(),
            tls_handshake_failures: Family::default(),
            requests: Family::default(),
            websocket_handshake: Histogram::new(handshake_buckets()),
            splice_integrity_errors: Counter::default(),
        };
        for kind in TLS_HANDSHAKE_FAILURE_KINDS {
            metrics
                .tls_handshake_failures
                .get_or_create(&KindLabels { kind })
                .inc_by(0);
        }
        for mode in [Mode::Spliced, Mode::Userspace] {
            metrics
                .tunnels_opened
                .get_or_create(&ModeLabels { mode })
                .inc_by(0);
            metrics
                .tunnels_active
                .get_or_create(&ModeLabels { mode })
                .set(0);
        }
        for direction in [Direction::ClientToBackend, Direction::BackendToClient] {
            metrics
                .relayed_bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(0);
            metrics
                .handoff_bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(0);
        }
        metrics
    }
}

impl Metrics {
    /// A registry holding these metrics and the kernel's counters (zero when eBPF is not
    /// loaded, so the same names exist whatever the dataplane).
    pub fn registry(&self, ebpf: Option<Arc<EbpfDataplane>>, info: DataplaneInfo) -> Registry {
        let mut registry = Registry::default();
        registry.register(
            "gateway_dataplane",
            "The dataplane carrying WebSocket tunnels (ebpf or userspace) and why it was chosen",
            Info::new(info),
        );
        registry.register(
            "gateway_tunnels_opened",
            "WebSocket tunnels opened, by dataplane mode",
            self.tunnels_opened.clone(),
        );
        registry.register(
            "gateway_tunnels_active",
            "WebSocket tunnels open now, by dataplane mode",
            self.tunnels_active.clone(),
        );
        registry.register(
            "gateway_tunnels_closed",
            "WebSocket tunnels closed, by dataplane mode and reason (done, client_error, \
             backend_error, internal, idle_timeout, max_lifetime, shutdown, backend_down, integrity_error)",
            self.tunnels_closed.clone(),
        );
        registry.register(
            "gateway_relayed_bytes",
            "Bytes copied through userspace by the relay, by direction",
            self.relayed_bytes.clone(),
        );
        registry.register(
            "gateway_handoff_bytes",
            "Bytes that arrived with the upgrade handshake and were written by userspace \
             before a tunnel was spliced, by direction",
            self.handoff_bytes.clone(),
        );
        registry.register(
            "gateway_upgrades_rejected",
            "WebSocket upgrade requests refused with a 4xx",
            self.upgrades_rejected.clone(),
        );
        registry.register(
            "gateway_tls_handshake_failures",
            "Client TLS handshakes on https listeners that did not complete, by kind (timeout, \
             client_closed, protocol, io)",
            self.tls_handshake_failures.clone(),
        );
        registry.register(
            "gateway_requests",
            "Requests answered, by listener, rule and status (101 for WebSocket upgrades; \
             listener and rule are \"-\" for requests refused before routing)",
            self.requests.clone(),
        );
        registry.register(
            "gateway_websocket_handshake_seconds",
            "Time from a WebSocket upgrade request to the backend's 101 (connect included)",
            self.websocket_handshake.clone(),
        );
        registry.register(
            "gateway_splice_integrity_errors",
            "Spliced tunnels reset because the bytes the kernel moved did not add up (more \
             moved than received, more delivered than moved, or segments out of sequence); \
             each is logged with both numbers. Any value above 0 is a kernel or gateway defect",
            self.splice_integrity_errors.clone(),
        );
        registry.register_collector(Box::new(KernelCounters(ebpf)));
        registry
    }

    /// Adds the metrics read from live state at scrape time: backend health and probes,
    /// and tunnels by mode and state.
    pub fn register_live(registry: &mut Registry, health: Arc<Health>, tunnels: Arc<Tunnels>) {
        registry.register_collector(Box::new(LiveState { health, tunnels }));
    }

    /// A request was answered with `status`; `route` is its listener and rule, if it got
    /// that far.
    pub fn request(&self, route: Option<(&str, &str)>, status: u16) {
        let (listener, rule) = route.unwrap_or(("-", "-"));
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.to_owned(),
                rule: rule.to_owned(),
                status,
            })
            .inc();
    }

    /// A WebSocket upgrade got its 101 after `elapsed`.
    pub fn websocket_handshake(&self, elapsed: std::time::Duration) {
        self.websocket_handshake.observe(elapsed.as_secs_f64());
    }

    pub fn tunnel_opened(&self, mode: Mode) {
        self.tunnels_opened
            .get_or_create(&ModeLabels { mode })
            .inc();
        self.tunnels_active
            .get_or_create(&ModeLabels { mode })
            .inc();
    }

    pub fn tunnel_closed(&self, mode: Mode, reason: &'static str) {
        self.tunnels_closed
            .get_or_create(&CloseLabels { mode, reason })
            .inc();
        self.tunnels_active
            .get_or_create(&ModeLabels { mode })
            .dec();
    }

    /// A handle to the relayed-bytes counter of one direction, taken once per tunnel.
    pub fn relayed_bytes(&self, direction: Direction) -> Counter {
        self.relayed_bytes
            .get_or_create(&DirectionLabels { direction })
            .clone()
    }

    pub fn handoff_bytes(&self, direction: Direction, bytes: u64) {
        self.handoff_bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(bytes);
    }

    /// A spliced tunnel was reset because its byte counts did not add up.
    pub fn splice_integrity_error(&self) {
        self.splice_integrity_errors.inc();
    }

    pub fn upgrade_rejected(&self) {
        self.upgrades_rejected.inc();
    }

    /// A client's TLS handshake failed; `kind` is [`crate::tls::TlsAcceptError::kind`].
    pub fn tls_handshake_failed(&self, kind: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&KindLabels { kind })
            .inc();
    }
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
        let bytes = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "gateway_spliced_bytes",
            "Bytes redirected between client and backend by the kernel splice, by direction",
            None,
            bytes.metric_type(),
        )?;
        for (direction, index) in [
            (Direction::ClientToBackend, counter::BYTES_CLIENT_TO_BACKEND),
            (Direction::BackendToClient, counter::BYTES_BACKEND_TO_CLIENT),
        ] {
            let labels = DirectionLabels { direction };
            ConstCounter::new(c[index as usize]).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "gateway_splice_verdicts",
            "Segments seen by the splice verdict program, by outcome \
             (redirected; passed to userspace because no flow or no peer was registered; or \
             dropped because empty, i.e. a bare FIN)",
            None,
            bytes.metric_type(),
        )?;
        for (outcome, index) in [
            ("redirected", counter::REDIRECTED_SEGMENTS),
            ("passed_no_flow", counter::PASSED_NO_FLOW),
            ("passed_redirect_failed", counter::PASSED_REDIRECT_FAILED),
            ("dropped_empty", counter::DROPPED_EMPTY_SEGMENTS),
            ("passed_paused", counter::PASSED_PAUSED),
            ("overlap_trimmed", counter::OVERLAP_SEGMENTS),
        ] {
            let labels = OutcomeLabels { outcome };
            ConstCounter::new(c[index as usize]).encode(family.encode_family(&labels)?)?;
        }

        for (name, help, index) in [
            (
                "gateway_splice_pauses",
                "Times a spliced flow hit its backlog budget and paused (segments then wait in \
                 the sender's socket until the gateway forwards them)",
                counter::PAUSES,
            ),
            ("gateway_splice_resumes", "Times a paused flow resumed splicing", counter::RESUMES),
            (
                "gateway_splice_overlap_bytes",
                "Bytes the kernel handed the splice verdict a second time (a retransmission \
                 overlapping bytes already received) and the verdict cut off",
                counter::OVERLAP_BYTES,
            ),
            (
                "gateway_splice_sequence_anomalies",
                "Segments whose TCP sequence numbers the splice verdict could not vouch for; \
                 their tunnels are reset",
                counter::SEQ_ANOMALIES,
            ),
            (
                "gateway_splice_events_lost",
                "Flow events that did not fit in the eBPF ring buffer (every tunnel is then checked)",
                counter::EVENTS_LOST,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, bytes.metric_type())?;
            ConstCounter::new(c[index as usize]).encode(metric)?;
        }

        let metric = encoder.encode_descriptor(
            "gateway_splice_passed_bytes",
            "Bytes the splice verdict program left for userspace instead of redirecting",
            None,
            bytes.metric_type(),
        )?;
        ConstCounter::new(c[counter::PASSED_BYTES as usize]).encode(metric)?;

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
        let metric = encoder.encode_descriptor(
            "gateway_splice_brakes",
            "Times a spliced flow's sender was stopped (its receive window shut) because its \
             passed bytes could not move until its own peer read",
            None,
            bytes.metric_type(),
        )?;
        ConstCounter::new(brakes).encode(metric)
    }
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

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
