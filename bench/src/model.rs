//! What a benchmark run measures and reports: the paths under test, the workloads, and the
//! results, as plain serializable data. Everything else in the crate either produces these
//! (load generators, proxies, process accounting) or renders them (report).

use serde::{Deserialize, Serialize};

/// One way for a client to reach the backend.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// Client straight to the backend: the physical limit for any proxy.
    Direct,
    /// The gateway with tunnels spliced in the kernel (`--dataplane ebpf`).
    GatewayEbpf,
    /// The gateway with tunnels relayed in userspace (`--dataplane userspace`).
    GatewayUserspace,
    /// nginx (Debian package) as a WebSocket reverse proxy.
    Nginx,
    /// HAProxy (Debian package), HTTP mode, WebSocket tunnels.
    Haproxy,
    /// HAProxy with `option splice-auto` (kernel `splice()`).
    HaproxySplice,
}

impl PathKind {
    pub const ALL: [Self; 6] = [
        Self::Direct,
        Self::GatewayEbpf,
        Self::GatewayUserspace,
        Self::Nginx,
        Self::Haproxy,
        Self::HaproxySplice,
    ];

    /// Short name used in tables, plots, file names and on the command line.
    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::GatewayEbpf => "gateway-ebpf",
            Self::GatewayUserspace => "gateway-userspace",
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
            Self::HaproxySplice => "haproxy-splice",
        }
    }

    /// Whether a proxy process sits between client and backend.
    pub fn is_proxy(self) -> bool {
        self != Self::Direct
    }
}

/// Which way the bytes of a bulk transfer flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Client to backend.
    Upload,
    /// Backend to client.
    Download,
    /// Both at once; the byte count is the sum of both directions.
    Both,
}

impl Direction {
    pub const ALL: [Self; 3] = [Self::Upload, Self::Download, Self::Both];

    pub fn label(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
            Self::Both => "both",
        }
    }
}

/// Sizes and durations of one run. `--quick` and `--tiny` pick smaller ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Name of the preset (`full`, `quick`, `tiny`).
    pub preset: String,
    /// Rounds of every workload; paths are interleaved within a round to reduce drift.
    pub rounds: u32,
    /// Bytes per bulk transfer (per direction; `both` moves twice this).
    pub bulk_bytes: u64,
    /// Measured 64-byte round trips per latency run (after `pingpong_warmup`).
    pub pingpong_count: u64,
    pub pingpong_warmup: u64,
    /// Sizes of the large messages echoed one at a time (4 and 16 MiB in every preset), and
    /// how many exchanges of each size are measured per run (after `message_warmup`).
    /// Defaults keep reports written before this workload existed readable.
    #[serde(default)]
    pub message_sizes: Vec<u64>,
    #[serde(default)]
    pub message_count: u64,
    #[serde(default)]
    pub message_warmup: u64,
    /// Concurrent tunnel counts to try, e.g. `[1000, 10000]`.
    pub concurrent_tunnels: Vec<usize>,
    /// Bytes each concurrent tunnel moves each way once all are open.
    pub concurrent_bytes_per_tunnel: u64,
    /// How long the handshake workload runs, and with how many connections at once.
    pub handshake_secs: f64,
    pub handshake_concurrency: usize,
}

/// Process CPU and machine CPU spent during one measurement.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct CpuUse {
    /// user+sys seconds of the proxy's processes (all threads and workers); 0 for direct.
    pub proxy_secs: f64,
    /// Busy seconds of the whole machine (all CPUs, everything but idle and iowait), so
    /// kernel work done on the proxy's behalf (softirq, redirect workers) is not hidden.
    pub machine_secs: f64,
}

/// One bulk transfer through one path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkSample {
    pub path: PathKind,
    pub direction: Direction,
    pub round: u32,
    /// Bytes delivered and verified (length and CRC-32 at the receiving end).
    pub bytes: u64,
    pub secs: f64,
    pub cpu: CpuUse,
}

impl BulkSample {
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }
}

/// Round-trip latency of 64-byte messages through one path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencySample {
    pub path: PathKind,
    /// Client, backend and proxy pinned to fixed CPUs (see `pinning` in the report).
    pub pinned: bool,
    pub round: u32,
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// `(latency_us, cumulative_fraction)` points of the distribution, for plots.
    pub cdf: Vec<(f64, f64)>,
}

/// Large messages echoed one at a time over one tunnel through one path: the client sends
/// `bytes`, waits until all of them have come back, then sends the next message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageSample {
    pub path: PathKind,
    pub round: u32,
    /// Size of each message, each way.
    pub bytes: u64,
    /// Milliseconds of every measured exchange, in order: from the first byte written to
    /// the last echoed byte verified. Kept whole (tens of values) so medians and maxima can
    /// be taken over all rounds together.
    pub exchange_ms: Vec<f64>,
    pub cpu: CpuUse,
}

impl MessageSample {
    /// The median exchange of this run (with an even count, the mean of the two middle
    /// ones); `None` without any exchange.
    pub fn p50_ms(&self) -> Option<f64> {
        let mut times = self.exchange_ms.clone();
        times.sort_by(f64::total_cmp);
        let n = times.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(times[n / 2]),
            _ => Some((times[n / 2 - 1] + times[n / 2]) / 2.0),
        }
    }

    /// The slowest exchange of this run.
    pub fn max_ms(&self) -> Option<f64> {
        self.exchange_ms.iter().copied().max_by(f64::total_cmp)
    }
}

/// Many tunnels open at once through one path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConcurrentSample {
    pub path: PathKind,
    pub round: u32,
    /// Tunnels asked for by the plan.
    pub requested: usize,
    /// Tunnels actually opened; less than `requested` only when a limit forbids it.
    pub tunnels: usize,
    /// Why `tunnels < requested` (e.g. the descriptor limit), if it is.
    pub limited_by: Option<String>,
    /// Proxy resident memory with no tunnel open, and with all of them open and idle.
    pub proxy_rss_idle_bytes: u64,
    pub proxy_rss_open_bytes: u64,
    /// Bytes moved by all tunnels together (both directions), verified per tunnel.
    pub bytes: u64,
    pub secs: f64,
    pub cpu: CpuUse,
}

impl ConcurrentSample {
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }

    /// Resident memory the proxy added per open tunnel (0 for direct).
    pub fn rss_per_tunnel_bytes(&self) -> f64 {
        self.proxy_rss_open_bytes
            .saturating_sub(self.proxy_rss_idle_bytes) as f64
            / self.tunnels.max(1) as f64
    }
}

/// Short-lived tunnels: upgrade, one 64-byte echo, close.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandshakeSample {
    pub path: PathKind,
    pub round: u32,
    /// Tunnels completed (upgrade answered 101 and the echo matched).
    pub completed: u64,
    /// Attempts that failed; each is a defect of the path and is listed in the report.
    pub failed: u64,
    pub secs: f64,
    pub cpu: CpuUse,
}

impl HandshakeSample {
    pub fn per_sec(&self) -> f64 {
        self.completed as f64 / self.secs
    }
}

/// How a path was set up, for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PathSetup {
    pub path: PathKind,
    /// Version string of the proxy (e.g. `nginx/1.22.1`), `None` for direct.
    pub version: Option<String>,
    /// The settings that matter, in one line (workers, buffers, splice, ...).
    pub settings: String,
}

/// The machine the run happened on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    /// `RLIMIT_NOFILE` hard limit: it caps the concurrent-tunnel workload.
    pub nofile_hard_limit: u64,
    pub rustc: String,
}

/// A whole run: what was measured, where, and every sample.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// UTC start time, RFC 3339.
    pub started_at: String,
    pub machine: Machine,
    pub plan: Plan,
    pub paths: Vec<PathSetup>,
    /// Which CPU each party ran on in the pinned latency runs.
    pub pinning: String,
    pub bulk: Vec<BulkSample>,
    pub latency: Vec<LatencySample>,
    /// Absent from reports written before this workload existed.
    #[serde(default)]
    pub messages: Vec<MessageSample>,
    pub concurrent: Vec<ConcurrentSample>,
    pub handshakes: Vec<HandshakeSample>,
    /// Anything that went wrong but did not stop the run (a path that failed to start, a
    /// workload that failed verification), so the report never hides a failure.
    pub problems: Vec<String>,
}
