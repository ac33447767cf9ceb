//! Presets for how big and how long a run is.

use crate::{cli::RunArgs, model::Plan};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The large-message echo's sizes: the client sends messages of 4 to 16 MiB.
pub const MESSAGE_SIZES: [u64; 2] = [4 * MIB, 16 * MIB];

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
        message_sizes: MESSAGE_SIZES.to_vec(),
        message_count: 20,
        message_warmup: 2,
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
        message_sizes: MESSAGE_SIZES.to_vec(),
        message_count: 10,
        message_warmup: 1,
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
        message_sizes: MESSAGE_SIZES.to_vec(),
        message_count: 2,
        message_warmup: 0,
        concurrent_tunnels: vec![20],
        concurrent_bytes_per_tunnel: 16 * 1024,
        handshake_secs: 0.3,
        handshake_concurrency: 4,
    }
}
