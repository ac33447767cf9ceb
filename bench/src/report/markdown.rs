//! The report as Markdown: what ran where, one table per workload, the goals, and the
//! problems. Paths are rows in `PathKind` order; a path or workload without samples shows
//! "—", so a failed path stays visible instead of disappearing from the tables. Writing
//! to a `String` cannot fail, so the results of `writeln!` are ignored.

use std::fmt::Write as _;

use crate::model::{Direction, PathKind, Report};

use super::fmt::{byte_list, bytes, median, range, sig, signed, times, Table, MISSING};
use super::summary::{self, ratio, Stat};
use super::targets;

pub fn render(report: &Report) -> String {
    let paths = paths(report);
    let mut out = String::new();
    header(&mut out, report);
    bulk(&mut out, report, &paths);
    latency(&mut out, report, &paths);
    messages(&mut out, report, &paths);
    concurrent(&mut out, report, &paths);
    handshakes(&mut out, report, &paths);
    spread(&mut out, report, &paths);
    goals(&mut out, report);
    problems(&mut out, report);
    out
}

/// Paths with a setup or any sample, in `PathKind` order.
fn paths(report: &Report) -> Vec<PathKind> {
    PathKind::ALL
        .into_iter()
        .filter(|path| {
            report.paths.iter().any(|s| s.path == *path)
                || report.bulk.iter().any(|s| s.path == *path)
                || report.latency.iter().any(|s| s.path == *path)
                || report.messages.iter().any(|s| s.path == *path)
                || report.concurrent.iter().any(|s| s.path == *path)
                || report.handshakes.iter().any(|s| s.path == *path)
        })
        .collect()
}

/// `2026-11-24T03:10:00.123Z` → `2026-11-24T03:10:00Z`: sub-second digits say nothing here.
pub fn whole_seconds(rfc3339: &str) -> String {
    match rfc3339.find('.') {
        Some(dot) => {
            let rest = &rfc3339[dot + 1..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            format!("{}{}", &rfc3339[..dot], &rest[digits..])
        }
        None => rfc3339.to_owned(),
    }
}

fn header(out: &mut String, report: &Report) {
    let plan = &report.plan;
    let machine = &report.machine;
    let counts: Vec<String> = plan
        .concurrent_tunnels
        .iter()
        .map(usize::to_string)
        .collect();
    let _ = writeln!(
        out,
        "# Gateway benchmark, {}\n",
        whole_seconds(&report.started_at)
    );
    let _ = writeln!(
        out,
        "- Started: {} (UTC)",
        whole_seconds(&report.started_at)
    );
    let _ = writeln!(
        out,
        "- Preset: `{}`: {} rounds; bulk {} per direction; {} round trips of 64 B \
         (after {} warm-up); {} echoes of each message size ({}, after {} warm-up); {} \
         concurrent tunnels moving {} each way; handshakes for {} s, {} at once",
        plan.preset,
        plan.rounds,
        bytes(plan.bulk_bytes),
        plan.pingpong_count,
        plan.pingpong_warmup,
        plan.message_count,
        byte_list(&plan.message_sizes),
        plan.message_warmup,
        if counts.is_empty() {
            MISSING.to_owned()
        } else {
            counts.join(" and ")
        },
        bytes(plan.concurrent_bytes_per_tunnel),
        sig(plan.handshake_secs),
        plan.handshake_concurrency,
    );
    let _ = writeln!(
        out,
        "- Machine: {}, {} CPUs, {} memory, kernel {}, RLIMIT_NOFILE hard limit {}, {}",
        machine.cpu_model,
        machine.cpus,
        bytes(machine.memory_bytes),
        machine.kernel,
        machine.nofile_hard_limit,
        machine.rustc,
    );
    let _ = writeln!(out, "- Pinning (latency runs): {}", report.pinning);
    out.push_str(
        "\nEvery figure is the median over rounds (with an even number of rounds, the mean of \
         the two middle ones), except the large-message echo's p50 and max, which are taken \
         over its exchanges of all rounds together; the min–max over rounds is under \"Spread \
         over rounds\".\n\n",
    );

    out.push_str("## Paths\n\n");
    let mut table = Table::new(&["path", "version", "settings"]);
    for setup in &report.paths {
        table.row(vec![
            setup.path.label().to_owned(),
            setup.version.clone().unwrap_or_else(|| MISSING.to_owned()),
            setup.settings.clone(),
        ]);
    }
    out.push_str(&table.render());
}

/// `18.2 (0.91×)`: a median with its ratio to direct's, when both exist.
fn with_ratio(value: Option<Stat>, direct: Option<Stat>, path: PathKind) -> String {
    let Some(value) = value else {
        return MISSING.to_owned();
    };
    match ratio(Some(value.median), direct.map(|d| d.median)) {
        Some(r) if path != PathKind::Direct => format!("{} ({})", sig(value.median), times(r)),
        _ => sig(value.median),
    }
}

fn bulk(out: &mut String, report: &Report, paths: &[PathKind]) {
    let _ = writeln!(
        out,
        "\n## Bulk throughput (one stream)\n\n\
         Gbit/s of one tunnel moving {} through each path (`both`: that much each way at once, \
         counted together), with the ratio to direct in parentheses. CPU s/GiB: for each round, \
         the CPU seconds of the path's upload, download and both transfers together, divided by \
         the GiB (2^30 bytes) they delivered, both directions of `both` counted; proxy = user+sys \
         of the proxy's processes, machine = busy time of all CPUs, kernel work included.\n",
        bytes(report.plan.bulk_bytes)
    );
    let mut table = Table::new(&[
        "path",
        "upload Gbit/s",
        "download Gbit/s",
        "both Gbit/s",
        "proxy CPU s/GiB",
        "machine CPU s/GiB",
    ]);
    for &path in paths {
        let mut row = vec![path.label().to_owned()];
        for direction in Direction::ALL {
            row.push(with_ratio(
                summary::bulk_gbps(report, path, direction),
                summary::bulk_gbps(report, PathKind::Direct, direction),
                path,
            ));
        }
        let cpu = summary::bulk_cpu_per_gib(report, path);
        row.push(median(cpu.and_then(|c| c.proxy)));
        row.push(median(cpu.map(|c| c.machine)));
        table.row(row);
    }
    out.push_str(&table.render());
}

fn latency(out: &mut String, report: &Report, paths: &[PathKind]) {
    let _ = writeln!(
        out,
        "\n## Round-trip latency (64 B messages)\n\n\
         µs per round trip client → backend → client; Δp50 is the p50 minus direct's p50 in the \
         same setting. Pinned: client, backend and proxy on fixed CPUs (see Pinning above); \
         unpinned: the scheduler decides."
    );
    for pinned in [true, false] {
        let _ = writeln!(
            out,
            "\n### {}\n",
            if pinned { "Pinned" } else { "Unpinned" }
        );
        let direct = summary::latency(report, PathKind::Direct, pinned);
        let mut table = Table::new(&["path", "p50 µs", "p99 µs", "p99.9 µs", "Δp50 µs"]);
        for &path in paths {
            let summary = summary::latency(report, path, pinned);
            let delta = summary.zip(direct).map_or_else(
                || MISSING.to_owned(),
                |(s, d)| signed(s.p50_us.median - d.p50_us.median),
            );
            table.row(vec![
                path.label().to_owned(),
                median(summary.map(|s| s.p50_us)),
                median(summary.map(|s| s.p99_us)),
                median(summary.map(|s| s.p999_us)),
                delta,
            ]);
        }
        out.push_str(&table.render());
    }
}

fn messages(out: &mut String, report: &Report, paths: &[PathKind]) {
    let _ = writeln!(
        out,
        "\n## Large-message echo\n\n\
         One tunnel per path and size; the client sends one message and reads its echo as it \
         comes back, and sends the next once every byte is back and verified. ms per \
         exchange, from the first byte sent to the last byte back; p50 and max over every \
         measured exchange of all rounds together ({} per size and round); Δp50 is the p50 \
         minus direct's for the same size.\n",
        report.plan.message_count
    );
    let mut table = Table::new(&["path", "size", "p50 ms", "max ms", "Δp50 ms"]);
    for size in summary::message_sizes(report) {
        let direct = summary::messages(report, PathKind::Direct, size);
        for &path in paths {
            let summary = summary::messages(report, path, size);
            let delta = summary.zip(direct).map_or_else(
                || MISSING.to_owned(),
                |(s, d)| signed(s.exchanges.median - d.exchanges.median),
            );
            table.row(vec![
                path.label().to_owned(),
                bytes(size),
                median(summary.map(|s| s.exchanges)),
                summary.map_or_else(|| MISSING.to_owned(), |s| sig(s.exchanges.max)),
                delta,
            ]);
        }
    }
    out.push_str(&table.render());
}

fn concurrent(out: &mut String, report: &Report, paths: &[PathKind]) {
    let _ = writeln!(
        out,
        "\n## Concurrent tunnels\n\n\
         All tunnels open at once, then each moves {} each way. Gbit/s: all tunnels together. \
         RSS per tunnel: the proxy's resident memory with all tunnels open and idle, minus \
         before any was opened, divided by the tunnels. CPU s/GiB: proxy CPU seconds per GiB \
         moved (both directions).\n",
        bytes(report.plan.concurrent_bytes_per_tunnel)
    );
    let rows = summary::concurrent(report);
    let mut requested = report.plan.concurrent_tunnels.clone();
    requested.extend(rows.iter().map(|r| r.requested));
    requested.sort_unstable();
    requested.dedup();
    let mut table = Table::new(&[
        "tunnels asked",
        "path",
        "tunnels run",
        "Gbit/s",
        "proxy RSS KiB/tunnel",
        "proxy CPU s/GiB",
    ]);
    for count in requested {
        for &path in paths {
            let row = rows.iter().find(|r| r.requested == count && r.path == path);
            let run = row.map_or_else(
                || MISSING.to_owned(),
                |r| {
                    let run = range(Some(r.tunnels));
                    if r.limited_by.is_empty() {
                        run
                    } else {
                        format!("{run} (limited by {})", r.limited_by.join("; "))
                    }
                },
            );
            table.row(vec![
                count.to_string(),
                path.label().to_owned(),
                run,
                median(row.map(|r| r.gbps)),
                median(row.and_then(|r| r.rss_per_tunnel_kib)),
                median(row.and_then(|r| r.proxy_cpu_per_gib)),
            ]);
        }
    }
    out.push_str(&table.render());
}

fn handshakes(out: &mut String, report: &Report, paths: &[PathKind]) {
    out.push_str(
        "\n## Handshakes\n\n\
         Short-lived tunnels (upgrade, one 64 B echo, close); completed and failed are totals \
         over all rounds, and every failure is a defect of the path.\n\n",
    );
    let mut table = Table::new(&["path", "new tunnels/s", "completed", "failed"]);
    for &path in paths {
        let summary = summary::handshakes(report, path);
        table.row(vec![
            path.label().to_owned(),
            median(summary.map(|s| s.per_sec)),
            summary.map_or_else(|| MISSING.to_owned(), |s| s.completed.to_string()),
            summary.map_or_else(|| MISSING.to_owned(), |s| s.failed.to_string()),
        ]);
    }
    out.push_str(&table.render());
}

fn spread(out: &mut String, report: &Report, paths: &[PathKind]) {
    out.push_str(
        "\n## Spread over rounds\n\n\
         min–max over rounds of the figures above (one value when all rounds agree; for the \
         large-message echo, of each round's own p50), and how many rounds produced a result \
         when some did not.\n\n",
    );
    let planned = report.plan.rounds as usize;
    let cell = |stat: Option<Stat>| match stat {
        Some(s) if s.rounds < planned => {
            format!("{} ({}/{planned} rounds)", range(stat), s.rounds)
        }
        _ => range(stat),
    };
    let sizes = summary::message_sizes(report);
    let echo_columns: Vec<String> = sizes
        .iter()
        .map(|&size| format!("{} echo p50 ms", bytes(size)))
        .collect();
    let mut header = vec![
        "path",
        "upload Gbit/s",
        "download Gbit/s",
        "both Gbit/s",
        "pinned p50 µs",
        "unpinned p50 µs",
    ];
    header.extend(echo_columns.iter().map(String::as_str));
    header.push("new tunnels/s");
    let mut table = Table::new(&header);
    for &path in paths {
        let mut row = vec![path.label().to_owned()];
        for direction in Direction::ALL {
            row.push(cell(summary::bulk_gbps(report, path, direction)));
        }
        for pinned in [true, false] {
            row.push(cell(
                summary::latency(report, path, pinned).map(|l| l.p50_us),
            ));
        }
        for &size in &sizes {
            row.push(cell(
                summary::messages(report, path, size).map(|m| m.p50_by_round),
            ));
        }
        row.push(cell(summary::handshakes(report, path).map(|h| h.per_sec)));
        table.row(row);
    }
    out.push_str(&table.render());
}

fn goals(out: &mut String, report: &Report) {
    out.push_str(
        "\n## Targets\n\n\
         The project's goals, as ratios between paths of this run; the other proxies are \
         gateway-userspace, nginx, haproxy and haproxy-splice. n/a: a path or workload the goal \
         needs was not measured.\n\n",
    );
    let mut table = Table::new(&["goal", "measured", "met"]);
    for target in targets::evaluate(report) {
        table.row(vec![
            target.goal,
            target.measured,
            target.verdict.mark().to_owned(),
        ]);
    }
    out.push_str(&table.render());
}

fn problems(out: &mut String, report: &Report) {
    out.push_str("\n## Problems\n\n");
    if report.problems.is_empty() {
        out.push_str("none\n");
    }
    for problem in &report.problems {
        // One bullet per problem even when its text spans lines.
        let _ = writeln!(out, "- {}", problem.replace('\n', "\n  "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_drops_the_fraction_only() {
        assert_eq!(
            whole_seconds("2026-11-24T03:10:00.123456789Z"),
            "2026-11-24T03:10:00Z"
        );
        assert_eq!(
            whole_seconds("2026-11-24T03:10:00+01:00"),
            "2026-11-24T03:10:00+01:00"
        );
    }
}
