//! Presets for how big and how long a run is.

use crate::{cli::RunArgs, model::Plan};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The preset the command line asks for: `--tiny`, `--quick` or the full run.
pub fn from_args(args: &RunArgs) -> Plan {
    if args.tiny {
        tiny()
    } else if args.quick {
        quick()
    } else {
        full()
    }
}

/// The run `docs/benchmarks.md` reports: about half an hour on two cores (the slowest
/// paths set the pace of the bulk rounds).
fn full() -> Plan {
    Plan {
        preset: "full".into(),
        rounds: 3,
        bulk_bytes: GIB,
        pingpong_count: 50_000,
        pingpong_warmup: 2_000,
        concurrent_tunnels: vec![1_000, 10_000],
        concurrent_bytes_per_tunnel: 256 * 1024,
        handshake_secs: 3.0,
        handshake_concurrency: 32,
    }
}

/// A few minutes: a smoke version of every workload.
fn quick() -> Plan {
    Plan {
        preset: "quick".into(),
        rounds: 1,
        bulk_bytes: 512 * MIB,
        pingpong_count: 20_000,
        pingpong_warmup: 1_000,
        concurrent_tunnels: vec![1_000],
        concurrent_bytes_per_tunnel: 256 * 1024,
        handshake_secs: 2.0,
        handshake_concurrency: 32,
    }
}

/// Seconds: proves every path and workload runs and verifies its bytes (used by a test).
fn tiny() -> Plan {
    Plan {
        preset: "tiny".into(),
        rounds: 1,
        bulk_bytes: 4 * MIB,
        pingpong_count: 200,
        pingpong_warmup: 20,
        concurrent_tunnels: vec![20],
        concurrent_bytes_per_tunnel: 16 * 1024,
        handshake_secs: 0.3,
        handshake_concurrency: 4,
    }
}
