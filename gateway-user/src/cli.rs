//! Command-line interface.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::dataplane::DataplaneMode;

/// eBPF-accelerated HTTP and WebSocket gateway. Plaintext WebSocket tunnels are spliced in
/// the kernel (sockmap + sk_skb verdict) after the backend answers 101 Switching Protocols.
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to accept clients on (HTTP/1.1; WebSocket upgrades need no switch).
    /// Repeat for several listeners. Port 0 picks a free port; the ready line says which.
    #[arg(long = "listen", value_name = "ADDR", required = true)]
    pub listen: Vec<SocketAddr>,

    /// Backend server (IP:PORT). Repeat for several; requests and tunnels are spread over
    /// them round-robin.
    #[arg(long = "backend", value_name = "ADDR", required = true)]
    pub backend: Vec<SocketAddr>,

    /// Address of the admin listener serving Prometheus metrics at /metrics.
    /// Keep it on loopback; nothing is served without this flag.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// How WebSocket tunnels are carried: `ebpf` splices them in the kernel and refuses to
    /// start if the eBPF program cannot be loaded; `userspace` relays them in the gateway;
    /// `auto` tries eBPF and falls back to userspace, logging why.
    #[arg(long, value_enum, default_value_t = DataplaneMode::Auto, value_name = "MODE")]
    pub dataplane: DataplaneMode,

    /// Close a WebSocket tunnel after this many seconds without a byte in either
    /// direction. For spliced tunnels idleness is read from timestamps the eBPF program
    /// keeps; userspace never touches the data to know.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub tunnel_idle_timeout_secs: u64,

    /// Close a WebSocket tunnel this many seconds after it opened, busy or not.
    /// 0 means no limit.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub tunnel_max_lifetime_secs: u64,

    /// Time allowed for the handshake: the client to send its request head, and the
    /// backend to connect and answer it. A backend that is too slow gets the client a 504.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub handshake_timeout_secs: u64,

    /// Most bytes the kernel may hold for one direction of a spliced tunnel while the
    /// receiving side is slower than the sending one; past it the sender is slowed down
    /// by TCP flow control.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    pub max_tunnel_backlog_bytes: u64,

    /// Send buffer of both sockets of a spliced tunnel (SO_SNDBUFFORCE, SO_SNDBUF without
    /// CAP_NET_ADMIN). 0 keeps the kernel's autotuning: 1–16 MiB measured no better here
    /// (docs/dataplane.md).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub tunnel_sndbuf_bytes: u32,

    /// On SIGTERM/SIGINT: stop accepting at once, let open tunnels and requests finish for
    /// this many seconds, then close what is left.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub shutdown_drain_secs: u64,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info`, `gateway=debug`).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}
