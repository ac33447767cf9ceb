//! Folds the per-round samples of a report into one figure per path and workload: the
//! median over rounds, with the min and max kept so the spread is visible. The median (not
//! the mean) is used because one disturbed round on a shared machine should not move the
//! result. Everything here returns `None` for a path or workload that has no samples, so
//! renderers can print "—" instead of failing.

use std::collections::BTreeMap;

use crate::model::{ConcurrentSample, Direction, LatencySample, MessageSample, PathKind, Report};

/// Bytes in a GiB: CPU cost is reported per 2^30 bytes delivered.
pub const GIB: f64 = (1u64 << 30) as f64;

/// Median, min and max of one measure over the rounds that produced it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// The middle value; with an even number of rounds, the mean of the two middle ones.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many values went in.
    pub rounds: usize,
}

impl Stat {
    /// Summarizes the finite values; `None` if there are none (a non-finite value comes
    /// from a zero-length measurement and says nothing about the path).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: values[0],
            max: values[n - 1],
            rounds: n,
        })
    }
}

/// `a / b` for two optional medians; `None` if either is missing or `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Single-stream bulk throughput of one path and direction, Gbit/s.
pub fn bulk_gbps(report: &Report, path: PathKind, direction: Direction) -> Option<Stat> {
    Stat::of(
        report
            .bulk
            .iter()
            .filter(|s| s.path == path && s.direction == direction)
            .map(|s| s.gbit_per_sec()),
    )
}

/// CPU seconds per GiB delivered by the bulk workload of one path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuPerGib {
    /// The proxy's own processes; `None` for direct, which has no proxy.
    pub proxy: Option<Stat>,
    /// The whole machine, kernel work included.
    pub machine: Stat,
}

/// CPU cost of the bulk workload: per round, the CPU seconds of all bulk transfers of the
/// path (upload, download and both) divided by the GiB they delivered (`both` counts both
/// directions), then the median over rounds. Pooling the directions weighs each by the
/// bytes it moved, so no direction's noise dominates.
pub fn bulk_cpu_per_gib(report: &Report, path: PathKind) -> Option<CpuPerGib> {
    let mut rounds: BTreeMap<u32, (f64, f64, u64)> = BTreeMap::new();
    for sample in report.bulk.iter().filter(|s| s.path == path) {
        let entry = rounds.entry(sample.round).or_default();
        entry.0 += sample.cpu.proxy_secs;
        entry.1 += sample.cpu.machine_secs;
        entry.2 += sample.bytes;
    }
    let per_gib = |pick: fn(&(f64, f64, u64)) -> f64| {
        Stat::of(
            rounds
                .values()
                .filter(|r| r.2 > 0)
                .map(|r| pick(r) / (r.2 as f64 / GIB)),
        )
    };
    let machine = per_gib(|r| r.1)?;
    let proxy = if path.is_proxy() {
        per_gib(|r| r.0)
    } else {
        None
    };
    Some(CpuPerGib { proxy, machine })
}

/// Round-trip percentiles of one path, each the median over rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencySummary {
    pub p50_us: Stat,
    pub p99_us: Stat,
    pub p999_us: Stat,
}

fn latency_samples(
    report: &Report,
    path: PathKind,
    pinned: bool,
) -> impl Iterator<Item = &LatencySample> {
    report
        .latency
        .iter()
        .filter(move |s| s.path == path && s.pinned == pinned && s.count > 0)
}

pub fn latency(report: &Report, path: PathKind, pinned: bool) -> Option<LatencySummary> {
    let of =
        |pick: fn(&LatencySample) -> f64| Stat::of(latency_samples(report, path, pinned).map(pick));
    Some(LatencySummary {
        p50_us: of(|s| s.p50_us)?,
        p99_us: of(|s| s.p99_us)?,
        p999_us: of(|s| s.p999_us)?,
    })
}

/// The round whose p50 is nearest the median p50: distributions from different rounds
/// cannot be merged from their CDF points, so the plot shows this typical one.
pub fn typical_latency_sample(
    report: &Report,
    path: PathKind,
    pinned: bool,
) -> Option<&LatencySample> {
    let median = latency(report, path, pinned)?.p50_us.median;
    latency_samples(report, path, pinned)
        .filter(|s| !s.cdf.is_empty())
        .min_by(|a, b| {
            (a.p50_us - median)
                .abs()
                .total_cmp(&(b.p50_us - median).abs())
        })
}

/// Large-message echo times of one path and message size, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MessageSummary {
    /// Over every measured exchange of every round together: its median is the p50 and its
    /// max the slowest exchange of the run (`rounds` counts exchanges here). Pooled, since a
    /// round has only tens of exchanges, and one slow exchange in any round is the news.
    pub exchanges: Stat,
    /// The p50 of each round on its own, for the spread over rounds.
    pub p50_by_round: Stat,
}

pub fn messages(report: &Report, path: PathKind, bytes: u64) -> Option<MessageSummary> {
    let samples = || {
        report
            .messages
            .iter()
            .filter(move |s| s.path == path && s.bytes == bytes)
    };
    Some(MessageSummary {
        exchanges: Stat::of(samples().flat_map(|s| s.exchange_ms.iter().copied()))?,
        p50_by_round: Stat::of(samples().filter_map(MessageSample::p50_ms))?,
    })
}

/// The message sizes to report: the plan's, and any a sample has, smallest first.
pub fn message_sizes(report: &Report) -> Vec<u64> {
    let mut sizes = report.plan.message_sizes.clone();
    sizes.extend(report.messages.iter().map(|s| s.bytes));
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// One row of the concurrent-tunnels table: a tunnel count asked for, through one path.
#[derive(Clone, Debug, PartialEq)]
pub struct ConcurrentRow {
    pub requested: usize,
    pub path: PathKind,
    /// Tunnels actually opened, over rounds.
    pub tunnels: Stat,
    /// Distinct reasons given for opening fewer than requested.
    pub limited_by: Vec<String>,
    pub gbps: Stat,
    /// Proxy RSS added per open tunnel, KiB; `None` for direct.
    pub rss_per_tunnel_kib: Option<Stat>,
    /// Proxy CPU seconds per GiB moved; `None` for direct.
    pub proxy_cpu_per_gib: Option<Stat>,
}

/// Rows ordered by tunnel count, then by path in `PathKind` order.
pub fn concurrent(report: &Report) -> Vec<ConcurrentRow> {
    let mut groups: BTreeMap<(usize, PathKind), Vec<&ConcurrentSample>> = BTreeMap::new();
    for sample in &report.concurrent {
        groups
            .entry((sample.requested, sample.path))
            .or_default()
            .push(sample);
    }
    groups
        .into_iter()
        .filter_map(|((requested, path), samples)| {
            let mut limited_by: Vec<String> = samples
                .iter()
                .filter_map(|s| s.limited_by.clone())
                .collect();
            limited_by.sort();
            limited_by.dedup();
            let proxy_only = |values: Vec<f64>| path.is_proxy().then(|| Stat::of(values)).flatten();
            Some(ConcurrentRow {
                requested,
                path,
                tunnels: Stat::of(samples.iter().map(|s| s.tunnels as f64))?,
                limited_by,
                gbps: Stat::of(samples.iter().map(|s| s.gbit_per_sec()))?,
                rss_per_tunnel_kib: proxy_only(
                    samples
                        .iter()
                        .map(|s| s.rss_per_tunnel_bytes() / 1024.0)
                        .collect(),
                ),
                proxy_cpu_per_gib: proxy_only(
                    samples
                        .iter()
                        .filter(|s| s.bytes > 0)
                        .map(|s| s.cpu.proxy_secs / (s.bytes as f64 / GIB))
                        .collect(),
                ),
            })
        })
        .collect()
}

/// New-tunnel rate of one path and the attempts that failed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandshakeSummary {
    pub per_sec: Stat,
    /// Totals over all rounds.
    pub completed: u64,
    pub failed: u64,
}

pub fn handshakes(report: &Report, path: PathKind) -> Option<HandshakeSummary> {
    let samples: Vec<_> = report
        .handshakes
        .iter()
        .filter(|s| s.path == path)
        .collect();
    Some(HandshakeSummary {
        per_sec: Stat::of(samples.iter().map(|s| s.per_sec()))?,
        completed: samples.iter().map(|s| s.completed).sum(),
        failed: samples.iter().map(|s| s.failed).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn median_of_odd_and_even_counts_and_empty() {
        let odd = Stat::of([3.0, 1.0, 2.0]).expect("three values");
        assert_eq!(
            (odd.median, odd.min, odd.max, odd.rounds),
            (2.0, 1.0, 3.0, 3)
        );
        let even = Stat::of([4.0, 1.0, 3.0, 2.0]).expect("four values");
        assert_eq!(even.median, 2.5);
        assert_eq!(Stat::of([]), None);
        assert_eq!(Stat::of([f64::NAN, f64::INFINITY]), None);
    }

    #[test]
    fn ratio_needs_both_and_a_positive_divisor() {
        assert_eq!(ratio(Some(9.0), Some(10.0)), Some(0.9));
        assert_eq!(ratio(None, Some(10.0)), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }

    #[test]
    fn bulk_median_over_rounds() {
        let report = fixture::report();
        let direct = bulk_gbps(&report, PathKind::Direct, Direction::Download).expect("direct");
        // Rounds at 19 and 21 Gbit/s.
        assert!(close(direct.median, 20.0), "{direct:?}");
        assert!(
            close(direct.min, 19.0) && close(direct.max, 21.0),
            "{direct:?}"
        );
        assert_eq!(direct.rounds, 2);
        assert!(bulk_gbps(&report, PathKind::Nginx, Direction::Both).is_none());
    }

    #[test]
    fn cpu_per_gib_pools_directions_within_a_round() {
        let report = fixture::report();
        let cpu = bulk_cpu_per_gib(&report, PathKind::GatewayUserspace).expect("userspace");
        let proxy = cpu.proxy.expect("a proxy path");
        assert!(
            close(proxy.median, fixture::USERSPACE_PROXY_SECS_PER_GIB),
            "{proxy:?}"
        );
        assert!(bulk_cpu_per_gib(&report, PathKind::Direct)
            .expect("direct")
            .proxy
            .is_none());
    }

    #[test]
    fn latency_and_typical_round() {
        let report = fixture::report();
        let direct = latency(&report, PathKind::Direct, true).expect("direct pinned");
        assert!(close(direct.p50_us.median, 20.0), "{direct:?}");
        assert!(latency(&report, PathKind::Haproxy, false).is_none());
        let typical = typical_latency_sample(&report, PathKind::Direct, true).expect("sample");
        assert!(!typical.cdf.is_empty());
    }

    #[test]
    fn messages_pool_exchanges_over_rounds() {
        let report = fixture::report();
        let ebpf = messages(&report, PathKind::GatewayEbpf, fixture::MESSAGE_SIZES[0])
            .expect("ebpf 4 MiB");
        // Rounds of 4.5, 5, 5.5 and 6.5, 7, 7.5 ms: the p50 of all six is 6.
        assert!(close(ebpf.exchanges.median, 6.0), "{ebpf:?}");
        assert!(close(ebpf.exchanges.max, 7.5), "{ebpf:?}");
        assert_eq!(ebpf.exchanges.rounds, 6);
        assert!(close(ebpf.p50_by_round.min, 5.0), "{ebpf:?}");
        assert!(close(ebpf.p50_by_round.max, 7.0), "{ebpf:?}");
        assert_eq!(ebpf.p50_by_round.rounds, 2);
        assert!(messages(&report, PathKind::Nginx, fixture::MESSAGE_SIZES[1]).is_none());
        assert_eq!(message_sizes(&report), fixture::MESSAGE_SIZES);
    }

    #[test]
    fn concurrent_rows_group_by_count_and_path() {
        let report = fixture::report();
        let rows = concurrent(&report);
        assert!(rows
            .windows(2)
            .all(|w| (w[0].requested, w[0].path) < (w[1].requested, w[1].path)));
        let limited = rows
            .iter()
            .find(|r| r.requested == 10_000 && r.path == PathKind::GatewayEbpf)
            .expect("ebpf at 10000");
        assert_eq!(limited.tunnels.min, 8_000.0);
        assert_eq!(limited.limited_by, vec![fixture::NOFILE_REASON.to_owned()]);
        let rss = limited.rss_per_tunnel_kib.expect("proxy rss");
        assert!(close(rss.median, 4.0), "{rss:?}");
        assert!(rows.iter().all(|r| r.path != PathKind::Nginx));
        assert!(rows
            .iter()
            .filter(|r| r.path == PathKind::Direct)
            .all(|r| r.rss_per_tunnel_kib.is_none()));
    }

    #[test]
    fn handshake_totals_sum_rounds() {
        let report = fixture::report();
        let haproxy = handshakes(&report, PathKind::Haproxy).expect("haproxy");
        assert_eq!(haproxy.failed, 3);
        assert!(close(haproxy.per_sec.median, 10_000.0), "{haproxy:?}");
    }
}
