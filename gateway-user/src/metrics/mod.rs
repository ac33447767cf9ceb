//! Prometheus metrics the data path writes as it goes: requests, tunnels opened and
//! closed, relayed bytes, handshakes. What the kernel splices is read from the eBPF
//! counters at scrape time (`admin::collectors`), so the data path never touches a metric
//! per byte.

use std::{fmt, sync::Arc};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::Registry,
};

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

/// The `direction` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    rule: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The `kind` labels of `gateway_tls_handshake_failures_total`: those of
/// [`crate::tls::TlsAcceptError::kind`].
pub const TLS_HANDSHAKE_FAILURE_KINDS: [&str; 4] = ["timeout", "client_closed", "protocol", "io"];

/// The gateway's metrics; cheap to clone (one reference count: every tunnel holds a clone,
/// and a clone of the families themselves was a count per family), every handle counts
/// into the same registry. Every known label set exists from the start, at zero, so a
/// dashboard or alert never has to tell "nothing happened" from "not exported".
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Families>);

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

/// The metric families of [`Metrics`].
#[derive(Debug)]
pub struct Families {
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
    tunnels_promoted: Counter,
    // Admission: connection limits, the upgrade rate, accept errors.
    connections_refused: Family<ReasonLabels, Counter>,
    upgrades_rate_limited: Counter,
    accept_errors: Family<AcceptErrorLabels, Counter>,
    response_send_timeouts: Counter,
    request_buffered_bytes: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcceptErrorLabels {
    socket: &'static str,
    kind: &'static str,
}

/// The `reason` labels of `gateway_connections_refused_total`.
pub const CONNECTION_REFUSED_REASONS: [&str; 3] =
    ["global_limit", "per_ip_limit", "no_descriptors"];

/// The `socket` labels of `gateway_accept_errors_total`: the client listeners, the admin one.
pub const ACCEPT_SOCKETS: [&str; 2] = ["client", "admin"];

/// The `kind` labels of `gateway_accept_errors_total`.
pub const ACCEPT_ERROR_KINDS: [&str; 6] =
    ["emfile", "enfile", "enobufs", "enomem", "aborted", "other"];

/// Buckets of `gateway_websocket_handshake_seconds`: 0.25 ms to about 4 s.
fn handshake_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 15)
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Families {
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
            tunnels_promoted: Counter::default(),
            connections_refused: Family::default(),
            upgrades_rate_limited: Counter::default(),
            accept_errors: Family::default(),
            response_send_timeouts: Counter::default(),
            request_buffered_bytes: Gauge::default(),
        };
        for reason in CONNECTION_REFUSED_REASONS {
            metrics
                .connections_refused
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        for socket in ACCEPT_SOCKETS {
            for kind in ACCEPT_ERROR_KINDS {
                metrics
                    .accept_errors
                    .get_or_create(&AcceptErrorLabels { socket, kind })
                    .inc_by(0);
            }
        }
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
        Self(Arc::new(metrics))
    }
}

impl Metrics {
    /// A registry holding these metrics (what is read from live state at scrape time is
    /// added by `admin::collectors`).
    pub fn registry(&self, info: DataplaneInfo) -> Registry {
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
            "gateway_tunnels_promoted",
            "Plaintext WebSocket tunnels that opened on the userspace relay and were spliced \
             in the kernel once they moved splice_after_bytes or lived splice_after_ms (counted \
             as opened in userspace, closed as spliced)",
            self.tunnels_promoted.clone(),
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
        registry.register(
            "gateway_connections_refused",
            "Client connections refused as they were accepted, by reason: global_limit \
             (max_connections), per_ip_limit (max_connections_per_ip), no_descriptors (the \
             process is out of file descriptors); each got a 503 on http, a close on https",
            self.connections_refused.clone(),
        );
        registry.register(
            "gateway_upgrades_rate_limited",
            "WebSocket upgrades answered 429 because their client address was over \
             upgrades_per_ip_per_sec (and upgrade_burst_per_ip)",
            self.upgrades_rate_limited.clone(),
        );
        registry.register(
            "gateway_accept_errors",
            "Failed accept(2) calls, by socket (client or admin) and kind (emfile, enfile, \
             enobufs, enomem: out of descriptors or memory, the accept loop backs off; \
             aborted: the client gave up first; other)",
            self.accept_errors.clone(),
        );
        registry.register(
            "gateway_response_send_timeouts",
            "Client connections closed because the client took no response bytes for \
             response_send_timeout_secs",
            self.response_send_timeouts.clone(),
        );
        registry.register(
            "gateway_request_buffered_bytes",
            "Request body bytes read ahead and held in memory before a backend is chosen \
             (request_buffer_bytes per request at most)",
            self.request_buffered_bytes.clone(),
        );
        registry
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

    /// A relayed tunnel is spliced now: it moves from one mode's gauge to the other's.
    pub fn tunnel_promoted(&self) {
        self.tunnels_promoted.inc();
        for (mode, change) in [(Mode::Userspace, -1), (Mode::Spliced, 1)] {
            self.tunnels_active
                .get_or_create(&ModeLabels { mode })
                .inc_by(change);
        }
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

    /// A client connection was closed: the client took nothing for the send timeout.
    pub fn response_send_timeout(&self) {
        self.response_send_timeouts.inc();
    }

    /// A handle to `gateway_request_buffered_bytes`, for one request's body.
    pub fn request_buffer_gauge(&self) -> Gauge {
        self.request_buffered_bytes.clone()
    }

    pub fn upgrade_rejected(&self) {
        self.upgrades_rejected.inc();
    }

    /// A client connection was refused as it was accepted; `reason` is one of
    /// [`CONNECTION_REFUSED_REASONS`].
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A WebSocket upgrade got a 429: its client is over the upgrade rate.
    pub fn upgrade_rate_limited(&self) {
        self.upgrades_rate_limited.inc();
    }

    /// accept(2) failed on a `socket` of [`ACCEPT_SOCKETS`] with a `kind` of
    /// [`ACCEPT_ERROR_KINDS`].
    pub fn accept_error(&self, socket: &'static str, kind: &'static str) {
        self.accept_errors
            .get_or_create(&AcceptErrorLabels { socket, kind })
            .inc();
    }

    /// A client's TLS handshake failed; `kind` is [`crate::tls::TlsAcceptError::kind`].
    pub fn tls_handshake_failed(&self, kind: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&KindLabels { kind })
            .inc();
    }
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
