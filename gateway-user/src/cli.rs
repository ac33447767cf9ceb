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

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info`, `gateway=debug`).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}
