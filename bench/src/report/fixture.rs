//! A synthetic report for the report's unit tests: two rounds, all six paths, with chosen
//! numbers (every round is the path's base value ∓ 1, so medians are the base values) and a
//! few holes (nginx has no `both` bulk run, no 16 MiB message echo and no concurrent run,
//! HAProxy no unpinned latency run) to check that missing data renders as "—".

use crate::model::{
    BulkSample, ConcurrentSample, CpuUse, Direction, HandshakeSample, LatencySample, Machine,
    MessageSample, PathKind, PathSetup, Plan, Report,
};

use super::summary::GIB;

/// Proxy CPU seconds per GiB of the userspace gateway's bulk runs.
pub const USERSPACE_PROXY_SECS_PER_GIB: f64 = 0.5;
/// Proxy CPU seconds per GiB of the spliced gateway's bulk runs (0.4% of userspace).
pub const EBPF_PROXY_SECS_PER_GIB: f64 = 0.002;
pub const NOFILE_REASON: &str = "RLIMIT_NOFILE hard limit 20000";
/// The large-message echo's sizes, as in the real plans.
pub const MESSAGE_SIZES: [u64; 2] = [4 << 20, 16 << 20];
pub const PROBLEM: &str = "nginx: bulk both: CRC-32 mismatch at the receiver";

/// Median download, upload and both Gbit/s of a path; `None` where the fixture leaves a hole.
fn bulk_base(path: PathKind) -> [Option<f64>; 3] {
    match path {
        PathKind::Direct => [Some(20.0), Some(20.0), Some(30.0)],
        PathKind::GatewayEbpf => [Some(19.0), Some(18.6), Some(28.0)],
        PathKind::GatewayUserspace => [Some(10.0), Some(10.0), Some(15.0)],
        PathKind::Nginx => [Some(8.0), Some(8.0), None],
        PathKind::Haproxy => [Some(9.0), Some(9.0), Some(14.0)],
        PathKind::HaproxySplice => [Some(12.0), Some(12.0), Some(16.0)],
    }
}

fn proxy_secs_per_gib(path: PathKind) -> f64 {
    match path {
        PathKind::Direct => 0.0,
        PathKind::GatewayEbpf => EBPF_PROXY_SECS_PER_GIB,
        PathKind::GatewayUserspace => USERSPACE_PROXY_SECS_PER_GIB,
        _ => 0.6,
    }
}

/// Median pinned p50 in µs; unpinned is 10 µs more.
pub fn p50_base(path: PathKind) -> f64 {
    match path {
        PathKind::Direct => 20.0,
        PathKind::GatewayEbpf => 26.0,
        PathKind::GatewayUserspace => 40.0,
        PathKind::Nginx => 45.0,
        PathKind::Haproxy => 42.0,
        PathKind::HaproxySplice => 41.0,
    }
}

/// Median ms per large-message exchange of a path at 4 MiB and 16 MiB; `None` where the
/// fixture leaves a hole.
fn message_base(path: PathKind) -> [Option<f64>; 2] {
    match path {
        PathKind::Direct => [Some(4.0), Some(16.0)],
        PathKind::GatewayEbpf => [Some(6.0), Some(20.0)],
        PathKind::GatewayUserspace => [Some(5.0), Some(18.0)],
        PathKind::Nginx => [Some(7.0), None],
        PathKind::Haproxy => [Some(8.0), Some(30.0)],
        PathKind::HaproxySplice => [Some(9.0), Some(32.0)],
    }
}

/// `base - 1` in round 0, `base + 1` in round 1.
fn spread(base: f64, round: u32) -> f64 {
    base - 1.0 + 2.0 * f64::from(round)
}

fn bulk(path: PathKind, round: u32) -> Vec<BulkSample> {
    let directions = [Direction::Download, Direction::Upload, Direction::Both];
    directions
        .into_iter()
        .zip(bulk_base(path))
        .filter_map(|(direction, base)| {
            let gbps = spread(base?, round);
            let bytes = if direction == Direction::Both {
                2 << 30
            } else {
                1 << 30
            };
            let gib = bytes as f64 / GIB;
            Some(BulkSample {
                path,
                direction,
                round,
                bytes,
                secs: bytes as f64 * 8.0 / (gbps * 1e9),
                cpu: CpuUse {
                    proxy_secs: proxy_secs_per_gib(path) * gib,
                    machine_secs: gib,
                },
            })
        })
        .collect()
}

fn latency(path: PathKind, pinned: bool, round: u32) -> Option<LatencySample> {
    if path == PathKind::Haproxy && !pinned {
        return None;
    }
    let p50 = spread(p50_base(path) + if pinned { 0.0 } else { 10.0 }, round);
    Some(LatencySample {
        path,
        pinned,
        round,
        count: 10_000,
        p50_us: p50,
        p99_us: 2.0 * p50,
        p999_us: 3.0 * p50,
        max_us: 4.0 * p50,
        cdf: vec![
            (0.5 * p50, 0.01),
            (p50, 0.5),
            (2.0 * p50, 0.99),
            (3.0 * p50, 0.999),
            (4.0 * p50, 1.0),
        ],
    })
}

/// Three exchanges per round, the round's value ∓ 0.5: pooled over both rounds, the p50 is
/// the base and the max the base + 1.5.
fn messages(path: PathKind, round: u32) -> Vec<MessageSample> {
    MESSAGE_SIZES
        .into_iter()
        .zip(message_base(path))
        .filter_map(|(bytes, base)| {
            let ms = spread(base?, round);
            Some(MessageSample {
                path,
                round,
                bytes,
                exchange_ms: vec![ms - 0.5, ms, ms + 0.5],
                cpu: CpuUse::default(),
            })
        })
        .collect()
}

fn concurrent(path: PathKind, requested: usize, round: u32) -> Option<ConcurrentSample> {
    if path == PathKind::Nginx {
        return None;
    }
    let limited = path == PathKind::GatewayEbpf && requested == 10_000 && round == 0;
    let tunnels = if limited { 8_000 } else { requested };
    let idle = 10 << 20;
    let per_tunnel = if path == PathKind::Direct { 0 } else { 4 << 10 };
    let bytes = tunnels as u64 * (128 << 10);
    Some(ConcurrentSample {
        path,
        round,
        requested,
        tunnels,
        limited_by: limited.then(|| NOFILE_REASON.to_owned()),
        proxy_rss_idle_bytes: idle,
        proxy_rss_open_bytes: idle + tunnels as u64 * per_tunnel,
        bytes,
        secs: 1.0,
        cpu: CpuUse {
            proxy_secs: proxy_secs_per_gib(path) * bytes as f64 / GIB,
            machine_secs: bytes as f64 / GIB,
        },
    })
}

fn handshake(path: PathKind, round: u32) -> HandshakeSample {
    let failed = if path == PathKind::Haproxy {
        u64::from(round) + 1
    } else {
        0
    };
    HandshakeSample {
        path,
        round,
        completed: 9_000 + 2_000 * u64::from(round),
        failed,
        secs: 1.0,
        cpu: CpuUse::default(),
    }
}

pub fn report() -> Report {
    let rounds = 0..2u32;
    let mut report = Report {
        started_at: "2026-11-24T03:10:00.123456789Z".to_owned(),
        machine: Machine {
            kernel: "6.12.48-1 (Debian)".to_owned(),
            cpu_model: "AMD EPYC 9454P 48-Core Processor".to_owned(),
            cpus: 16,
            memory_bytes: 64 << 30,
            nofile_hard_limit: 20_000,
            rustc: "rustc 1.95.0".to_owned(),
        },
        plan: Plan {
            preset: "quick".to_owned(),
            rounds: 2,
            bulk_bytes: 1 << 30,
            pingpong_count: 10_000,
            pingpong_warmup: 1_000,
            message_sizes: MESSAGE_SIZES.to_vec(),
            message_count: 3,
            message_warmup: 1,
            concurrent_tunnels: vec![1_000, 10_000],
            concurrent_bytes_per_tunnel: 64 << 10,
            handshake_secs: 1.0,
            handshake_concurrency: 64,
        },
        paths: PathKind::ALL
            .into_iter()
            .map(|path| PathSetup {
                path,
                version: path.is_proxy().then(|| format!("{}/1.0", path.label())),
                settings: format!("{} settings", path.label()),
            })
            .collect(),
        pinning: "client cpu 2, backend cpu 4, proxy cpu 6".to_owned(),
        bulk: Vec::new(),
        latency: Vec::new(),
        messages: Vec::new(),
        concurrent: Vec::new(),
        handshakes: Vec::new(),
        problems: vec![PROBLEM.to_owned()],
    };
    for round in rounds {
        for path in PathKind::ALL {
            report.bulk.extend(bulk(path, round));
            report.latency.extend(latency(path, true, round));
            report.latency.extend(latency(path, false, round));
            report.messages.extend(messages(path, round));
            for requested in [1_000, 10_000] {
                report.concurrent.extend(concurrent(path, requested, round));
            }
            report.handshakes.push(handshake(path, round));
        }
    }
    report
}

/// The fixture with every sample and setup of `path` removed.
pub fn without(path: PathKind) -> Report {
    let mut report = report();
    report.paths.retain(|s| s.path != path);
    report.bulk.retain(|s| s.path != path);
    report.latency.retain(|s| s.path != path);
    report.messages.retain(|s| s.path != path);
    report.concurrent.retain(|s| s.path != path);
    report.handshakes.retain(|s| s.path != path);
    report
}
