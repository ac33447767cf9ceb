//! The project's performance goals, checked as ratios between paths of the same run: on
//! one machine in one run, absolute numbers depend on the hardware, but how the spliced
//! gateway compares to a direct connection and to the other proxies does not (much).

use crate::model::{Direction, PathKind, Report};

use super::fmt::{byte_list, bytes, sig, signed, times};
use super::summary::{self, ratio};

/// Spliced single-stream throughput, as a fraction of direct.
pub const MIN_RATIO_TO_DIRECT: f64 = 0.9;
/// Spliced single-stream throughput, as a multiple of the best other proxy.
pub const MIN_RATIO_TO_BEST_PROXY: f64 = 1.5;
/// Spliced proxy CPU per GiB, as a fraction of the userspace relay's.
pub const MAX_CPU_FRACTION_OF_USERSPACE: f64 = 0.01;
/// Pinned 64-byte round trip p50, µs above direct.
pub const MAX_P50_OVER_DIRECT_US: f64 = 10.0;
/// Spliced large-message echo p50, ms above the userspace relay's at every size. Compared
/// with the relay rather than direct: a message of megabytes crosses a proxy at its
/// throughput, so the relay's time is what the splice has to match, not beat.
pub const MAX_MESSAGE_P50_OVER_USERSPACE_MS: f64 = 10.0;

/// The proxies the spliced gateway must beat.
const OTHER_PROXIES: [PathKind; 4] = [
    PathKind::GatewayUserspace,
    PathKind::Nginx,
    PathKind::Haproxy,
    PathKind::HaproxySplice,
];

/// Single-stream directions the throughput goals are checked on (`both` is two streams).
const SINGLE_STREAM: [Direction; 2] = [Direction::Upload, Direction::Download];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A path or workload the goal needs was not measured.
    NotAvailable,
}

impl Verdict {
    fn of(pass: bool) -> Self {
        if pass {
            Self::Pass
        } else {
            Self::Fail
        }
    }

    pub fn mark(self) -> &'static str {
        match self {
            Self::Pass => "✅",
            Self::Fail => "❌",
            Self::NotAvailable => "n/a",
        }
    }
}

/// One goal, what was measured for it, and whether it was met.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub verdict: Verdict,
}

impl Target {
    fn new(goal: String, measured: Option<(String, bool)>) -> Self {
        match measured {
            Some((measured, pass)) => Self {
                goal,
                measured,
                verdict: Verdict::of(pass),
            },
            None => Self {
                goal,
                measured: super::fmt::MISSING.to_owned(),
                verdict: Verdict::NotAvailable,
            },
        }
    }
}

pub fn evaluate(report: &Report) -> Vec<Target> {
    vec![
        throughput_vs_direct(report),
        throughput_vs_proxies(report),
        cpu_vs_userspace(report),
        latency_vs_direct(report),
        messages_vs_userspace(report),
    ]
}

fn median_gbps(report: &Report, path: PathKind, direction: Direction) -> Option<f64> {
    summary::bulk_gbps(report, path, direction).map(|s| s.median)
}

/// Ratios per single-stream direction as `upload 0.93×, download 0.95×`, and their minimum;
/// `None` unless both directions have one.
fn per_direction(
    mut ratio_of: impl FnMut(Direction) -> Option<(f64, String)>,
) -> Option<(String, f64)> {
    let mut parts = Vec::new();
    let mut worst = f64::INFINITY;
    for direction in SINGLE_STREAM {
        let (ratio, text) = ratio_of(direction)?;
        parts.push(format!("{} {text}", direction.label()));
        worst = worst.min(ratio);
    }
    Some((parts.join(", "), worst))
}

fn throughput_vs_direct(report: &Report) -> Target {
    let goal = format!(
        "gateway-ebpf single-stream throughput ≥ {MIN_RATIO_TO_DIRECT}× direct (upload and download)"
    );
    let measured = per_direction(|direction| {
        let r = ratio(
            median_gbps(report, PathKind::GatewayEbpf, direction),
            median_gbps(report, PathKind::Direct, direction),
        )?;
        Some((r, times(r)))
    })
    .map(|(text, worst)| (text, worst >= MIN_RATIO_TO_DIRECT));
    Target::new(goal, measured)
}

/// Compared with the best of the other proxies that were measured; the ones missing are
/// named in the result, since one of them might have been the best.
fn throughput_vs_proxies(report: &Report) -> Target {
    let goal = format!(
        "gateway-ebpf single-stream throughput ≥ {MIN_RATIO_TO_BEST_PROXY}× the best other \
         proxy (upload and download)"
    );
    let measured = per_direction(|direction| {
        let best = OTHER_PROXIES
            .into_iter()
            .filter_map(|path| Some((path, median_gbps(report, path, direction)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let r = ratio(
            median_gbps(report, PathKind::GatewayEbpf, direction),
            Some(best.1),
        )?;
        Some((r, format!("{} {}", times(r), best.0.label())))
    })
    .map(|(mut text, worst)| {
        let missing: Vec<&str> = OTHER_PROXIES
            .into_iter()
            .filter(|path| {
                SINGLE_STREAM
                    .iter()
                    .any(|d| median_gbps(report, *path, *d).is_none())
            })
            .map(PathKind::label)
            .collect();
        if !missing.is_empty() {
            text.push_str(&format!(" (not measured: {})", missing.join(", ")));
        }
        (text, worst >= MIN_RATIO_TO_BEST_PROXY)
    });
    Target::new(goal, measured)
}

fn cpu_vs_userspace(report: &Report) -> Target {
    let goal = format!(
        "gateway-ebpf proxy CPU per GiB ≤ {}% of gateway-userspace's (bulk)",
        MAX_CPU_FRACTION_OF_USERSPACE * 100.0
    );
    let proxy = |path| {
        summary::bulk_cpu_per_gib(report, path)
            .and_then(|cpu| cpu.proxy)
            .map(|s| s.median)
    };
    let ebpf = proxy(PathKind::GatewayEbpf);
    let userspace = proxy(PathKind::GatewayUserspace);
    let measured = ratio(ebpf, userspace)
        .zip(ebpf.zip(userspace))
        .map(|(r, (e, u))| {
            (
                format!("{}% ({} vs {} s/GiB)", sig(r * 100.0), sig(e), sig(u)),
                r <= MAX_CPU_FRACTION_OF_USERSPACE,
            )
        });
    Target::new(goal, measured)
}

fn latency_vs_direct(report: &Report) -> Target {
    let goal = format!(
        "gateway-ebpf pinned 64 B round trip p50 within {MAX_P50_OVER_DIRECT_US} µs of direct"
    );
    let p50 = |path| summary::latency(report, path, true).map(|l| l.p50_us.median);
    let measured = p50(PathKind::GatewayEbpf)
        .zip(p50(PathKind::Direct))
        .map(|(ebpf, direct)| {
            let delta = ebpf - direct;
            (
                format!("{} µs ({} vs {} µs)", signed(delta), sig(ebpf), sig(direct)),
                delta <= MAX_P50_OVER_DIRECT_US,
            )
        });
    Target::new(goal, measured)
}

/// Every size of the run must have both gateways' p50; the worst difference decides.
fn messages_vs_userspace(report: &Report) -> Target {
    let sizes = summary::message_sizes(report);
    let goal = format!(
        "gateway-ebpf large-message echo p50 within {MAX_MESSAGE_P50_OVER_USERSPACE_MS} ms of \
         gateway-userspace's ({})",
        byte_list(&sizes)
    );
    let p50 = |path, size| summary::messages(report, path, size).map(|m| m.exchanges.median);
    let mut parts = Vec::new();
    let mut worst = f64::NEG_INFINITY;
    for &size in &sizes {
        let Some((ebpf, userspace)) =
            p50(PathKind::GatewayEbpf, size).zip(p50(PathKind::GatewayUserspace, size))
        else {
            return Target::new(goal, None);
        };
        let delta = ebpf - userspace;
        worst = worst.max(delta);
        parts.push(format!(
            "{} {} ms ({} vs {} ms)",
            bytes(size),
            signed(delta),
            sig(ebpf),
            sig(userspace)
        ));
    }
    let measured =
        (!parts.is_empty()).then(|| (parts.join(", "), worst <= MAX_MESSAGE_P50_OVER_USERSPACE_MS));
    Target::new(goal, measured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn verdicts(report: &Report) -> Vec<Verdict> {
        evaluate(report).iter().map(|t| t.verdict).collect()
    }

    #[test]
    fn fixture_meets_every_goal() {
        let report = fixture::report();
        let targets = evaluate(&report);
        assert_eq!(verdicts(&report), vec![Verdict::Pass; 5], "{targets:#?}");
        assert_eq!(targets[0].measured, "upload 0.93×, download 0.95×");
        assert_eq!(
            targets[1].measured,
            "upload 1.55× haproxy-splice, download 1.58× haproxy-splice"
        );
        assert_eq!(targets[2].measured, "0.400% (0.00200 vs 0.500 s/GiB)");
        assert_eq!(targets[3].measured, "+6.00 µs (26.0 vs 20.0 µs)");
        assert_eq!(
            targets[4].goal,
            "gateway-ebpf large-message echo p50 within 10 ms of gateway-userspace's \
             (4 MiB and 16 MiB)"
        );
        assert_eq!(
            targets[4].measured,
            "4 MiB +1.00 ms (6.00 vs 5.00 ms), 16 MiB +2.00 ms (20.0 vs 18.0 ms)"
        );
    }

    #[test]
    fn each_goal_fails_past_its_threshold() {
        let mut report = fixture::report();
        for sample in &mut report.bulk {
            if sample.path == PathKind::GatewayEbpf {
                sample.cpu.proxy_secs *= 6.0; // 0.012 s/GiB = 2.4% of userspace
                if sample.direction == Direction::Upload {
                    sample.secs *= 1.1; // 18.6 → 16.9 Gbit/s: 0.85× direct, 1.41× the best
                }
            }
        }
        for sample in &mut report.latency {
            if sample.path == PathKind::GatewayEbpf {
                sample.p50_us += 5.0; // 11 µs over direct
            }
        }
        for sample in &mut report.messages {
            if sample.path == PathKind::GatewayEbpf && sample.bytes == fixture::MESSAGE_SIZES[1] {
                for ms in &mut sample.exchange_ms {
                    *ms += 8.5; // 16 MiB: 10.5 ms over userspace (4 MiB stays at 1 ms)
                }
            }
        }
        let targets = evaluate(&report);
        assert_eq!(verdicts(&report), vec![Verdict::Fail; 5], "{targets:#?}");
    }

    #[test]
    fn missing_paths_are_not_available() {
        assert_eq!(
            verdicts(&fixture::without(PathKind::GatewayEbpf)),
            vec![Verdict::NotAvailable; 5]
        );
        let no_direct = verdicts(&fixture::without(PathKind::Direct));
        assert_eq!(
            no_direct,
            vec![
                Verdict::NotAvailable,
                Verdict::Pass,
                Verdict::Pass,
                Verdict::NotAvailable,
                Verdict::Pass
            ]
        );
        let no_userspace = verdicts(&fixture::without(PathKind::GatewayUserspace));
        assert_eq!(no_userspace[2], Verdict::NotAvailable);
        assert_eq!(no_userspace[4], Verdict::NotAvailable);

        let mut one_size_missing = fixture::report();
        one_size_missing
            .messages
            .retain(|s| !(s.path == PathKind::GatewayEbpf && s.bytes == fixture::MESSAGE_SIZES[1]));
        assert_eq!(verdicts(&one_size_missing)[4], Verdict::NotAvailable);
    }

    #[test]
    fn a_missing_competitor_is_named() {
        let report = fixture::without(PathKind::HaproxySplice);
        let target = &evaluate(&report)[1];
        assert_eq!(target.verdict, Verdict::Pass);
        assert!(
            target.measured.contains("gateway-userspace"),
            "{}",
            target.measured
        );
        assert!(target.measured.ends_with("(not measured: haproxy-splice)"));
    }
}
