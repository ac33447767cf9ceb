//! Command line of `gateway-bench`.
use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::model::PathKind;

#[derive(Debug, Parser)]
#[command(
    name = "gateway-bench",
    about = "Benchmark the gateway against direct, nginx and HAProxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the benchmark and write the report.
    Run(RunArgs),
    /// Serve the benchmark backend (started by `run` as a separate process).
    Backend(BackendArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The `gateway` binary to measure (a release build).
    #[arg(long, env = "GATEWAY_BIN")]
    pub gateway: PathBuf,
    /// Directory for the JSON and Markdown results and the plots.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// A few minutes: smaller transfers, one round, 1 000 concurrent tunnels only.
    #[arg(long, conflicts_with = "tiny")]
    pub quick: bool,
    /// Seconds: tiny sizes that only prove every path and workload runs and verifies bytes.
    #[arg(long)]
    pub tiny: bool,
    /// Paths to measure (default: all). Repeat or separate with commas.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub paths: Vec<PathKind>,
    /// Fail (exit 1) at once if any path failed to start or any workload failed
    /// verification, instead of recording the problem in the report and going on. The full
    /// run (neither --quick nor --tiny) always fails at the end, after writing the report,
    /// when it recorded any problem.
    #[arg(long)]
    pub strict: bool,
    /// Workloads to run (default: all). Repeat or separate with commas.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// An extra argument for both gateways' `gateway run` (repeat for several), e.g.
    /// `--gateway-arg=--max-tunnel-backlog-bytes=67108864`. The report records them.
    #[arg(long = "gateway-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
}

/// A kind of measurement; see `docs/benchmarks.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// One tunnel moving bytes up, down, and both at once.
    Bulk,
    /// 64-byte round trips, pinned and unpinned.
    Latency,
    /// Large messages (4 and 16 MiB) echoed one at a time: milliseconds per exchange.
    Messages,
    /// Many tunnels open at once: memory per tunnel, aggregate throughput.
    Concurrent,
    /// Short-lived tunnels per second.
    Handshakes,
}

#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Address to listen on; port 0 picks a free one. The chosen address is printed as
    /// `backend ready ADDR` on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
