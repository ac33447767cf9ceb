//! Every default of the configuration, named with its unit. `examples/gateway.toml` shows
//! each one next to its key; the CLI's `--help` quotes them.

// [global]
pub(crate) const HANDSHAKE_TIMEOUT_SECS: u64 = 30;
pub(crate) const SHUTDOWN_DRAIN_SECS: u64 = 30;
pub(crate) const LOG_LEVEL: &str = "info";
/// Send buffer of spliced sockets. The kernel's redirect worker sleeps a whole jiffy (4 ms
/// at HZ=250) when the destination's buffer is half full, so the buffer must cover that long
/// at full speed: 8 MiB measured 14–16 Gbit/s for one stream without a pause, against 11 at
/// 4 MiB and 5–10 at 2 MiB, the most autotuning grants on a stock kernel
/// (docs/dataplane.md, "The destination's send buffer"). 0 keeps autotuning.
pub(crate) const TUNNEL_SNDBUF_BYTES: u32 = 8 * 1024 * 1024;
/// What spliced flows may borrow, together, beyond their own backlog budget and allowance:
/// flows whose destination keeps up grow their budget from it (up to 64 MiB each), and it
/// covers what peers that do not read what they are sent owe past 16 MiB per direction. A
/// flood both ways with a client whose reads pause 20 ms at a time owed up to 298 MB for a
/// moment (`tests/tests/splice_integrity.rs`), past the 256 MiB this was before.
pub(crate) const SPLICED_BACKLOG_POOL_BYTES: u64 = 1024 * 1024 * 1024;
/// Azure probes every backend: with no custom probe, `GET /` every 30 s.
pub(crate) const DEFAULT_PROBES: bool = true;
/// nginx's default: `//a` is `/a` for the path rules and the backend.
pub(crate) const MERGE_SLASHES: bool = true;
/// Without `max_connections`, the limit is (the soft `RLIMIT_NOFILE`, raised to the hard
/// limit at start, minus this) / 2: a proxied connection holds two descriptors (the client's
/// and the backend's), and this many are left for listeners, the admin API, probes, eBPF
/// maps and the reserve descriptors. HAProxy derives its `maxconn` the same way.
pub const MAX_CONNECTIONS_FD_RESERVE: u64 = 128;
/// Generous, so a NAT or an office behind one address is not cut off; one address still
/// cannot take every descriptor (the audit saw 4 031 from one).
pub const MAX_CONNECTIONS_PER_IP: u64 = 1024;
/// Per client: a browser opens a few WebSockets per page; 20 a second sustained, 200 at
/// once (a reconnect storm behind one NAT) before the `429`s start.
pub const UPGRADES_PER_IP_PER_SEC: u32 = 20;
pub const UPGRADE_BURST_PER_IP: u32 = 200;
/// The largest backlog `listen(2)` takes (an `int`).
pub(crate) const LISTEN_BACKLOG_MAX: u32 = i32::MAX as u32;
/// nginx's `send_timeout`: a client that takes no byte of an answer for this long is
/// dropped (time between two writes that make progress, not for the whole answer).
pub(crate) const RESPONSE_SEND_TIMEOUT_SECS: u64 = 60;
/// nginx's `client_body_timeout` (408 when it runs out): time between two reads of a
/// request body.
pub(crate) const REQUEST_BODY_TIMEOUT_SECS: u64 = 60;
/// A request body is read into memory up to this much before a backend is chosen
/// (nginx's `proxy_request_buffering`; nginx keeps 16 KiB in memory and spools the rest to
/// disk, HAProxy's `http-buffer-request` waits for one 16 KiB buffer): most API and form
/// bodies fit whole, and a client must send this much before it can hold a backend
/// connection open. Larger bodies are streamed once it is full.
pub const REQUEST_BUFFER_BYTES: u64 = 64 * 1024;
/// Each connection may hold its buffer in memory; the gateway does not spool to disk.
pub(crate) const REQUEST_BUFFER_BYTES_MAX: u64 = 64 * 1024 * 1024;

// [[backend_settings]]
/// Azure's default for `requestTimeout`; never applied to WebSocket tunnels.
pub(crate) const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Azure's affinity cookie.
pub(crate) const AFFINITY_COOKIE_NAME: &str = "ApplicationGatewayAffinity";
/// Azure accepts 1–3600 s; it has no default, so this is ours.
pub(crate) const DRAINING_TIMEOUT_SECS: u64 = 60;
pub(crate) const DRAINING_TIMEOUT_SECS_MAX: u64 = 3600;
/// Connect failures or resets in a row that take a backend out (Envoy's outlier detection
/// uses 5 for 5xx; connect failures are a surer sign).
pub(crate) const PASSIVE_FAILURES: u32 = 3;
/// How long the first passive ejection lasts (Envoy's base ejection time); the n-th in a
/// row lasts n times as long, at most [`PASSIVE_EJECTION_MAX_FACTOR`] times.
pub(crate) const PASSIVE_EJECTION_SECS: u64 = 30;
pub const PASSIVE_EJECTION_MAX_FACTOR: u32 = 10;
pub const TUNNEL_IDLE_TIMEOUT_SECS: u64 = 300;
/// 0: tunnels live as long as their peers keep them open.
pub(crate) const TUNNEL_MAX_LIFETIME_SECS: u64 = 0;
pub const MAX_TUNNEL_BACKLOG_BYTES: u64 = 4 * 1024 * 1024;
/// A plaintext tunnel starts on the userspace relay and is spliced once it has moved this
/// many bytes (both ways together) or lived [`SPLICE_AFTER_MS`]: a short tunnel never pays
/// for the kernel's psocks and the maps (docs/dataplane.md, "Lazy splice").
pub const SPLICE_AFTER_BYTES: u64 = 256 * 1024;
pub const SPLICE_AFTER_MS: u64 = 20;

// [[rules]]
/// Azure v2 rule priorities run from 1 (first) to 20000.
pub(crate) const RULE_PRIORITY_MAX: u32 = 20_000;
pub(crate) const REDIRECT_STATUS: u16 = 301;
pub(crate) const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];
pub(crate) const REDIRECT_INCLUDE_PATH: bool = true;
pub(crate) const REDIRECT_INCLUDE_QUERY: bool = true;

// [[probes]]
pub const PROBE_PATH: &str = "/";
pub const PROBE_INTERVAL_SECS: u64 = 30;
pub const PROBE_TIMEOUT_SECS: u64 = 30;
pub const PROBE_UNHEALTHY_THRESHOLD: u32 = 3;
pub const PROBE_HEALTHY_THRESHOLD: u32 = 1;
pub(crate) const PROBE_MATCH_STATUS_CODES: &str = "200-399";
