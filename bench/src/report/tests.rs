//! The report end to end on the synthetic fixture: the Markdown's rows and values, and the
//! files `write` leaves behind.

use std::path::PathBuf;

use super::*;
use crate::model::{Direction, PathKind, Report};

/// The text of `## heading` up to the next `## `.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("no section {heading:?} in:\n{markdown}"));
    let rest = &markdown[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// The cells of the first table row in `text` whose first cell is `first`.
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

#[test]
fn header_describes_run_machine_and_paths() {
    let text = markdown(&fixture::report());
    assert!(
        text.starts_with("# Gateway benchmark, 2026-11-24T03:10:00Z\n"),
        "{text}"
    );
    for expected in [
        "`quick`",
        "2 rounds",
        "bulk 1 GiB per direction",
        "3 echoes of each message size (4 MiB and 16 MiB, after 1 warm-up)",
        "AMD EPYC 9454P 48-Core Processor, 16 CPUs, 64 GiB memory",
        "kernel 6.12.48-1 (Debian)",
        "RLIMIT_NOFILE hard limit 20000",
        "rustc 1.95.0",
        "client cpu 2, backend cpu 4, proxy cpu 6",
        "median over rounds",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let paths = section(&text, "Paths");
    assert_eq!(
        row(paths, "nginx"),
        ["nginx", "nginx/1.0", "nginx settings"]
    );
    assert_eq!(row(paths, "direct")[1], "—");
}

#[test]
fn bulk_table_has_ratios_to_direct_and_cpu_per_gib() {
    let text = markdown(&fixture::report());
    let bulk = section(&text, "Bulk throughput");
    assert!(bulk.contains("GiB (2^30 bytes)"), "{bulk}");
    assert_eq!(
        row(bulk, "direct"),
        ["direct", "20.0", "20.0", "30.0", "—", "1.00"]
    );
    assert_eq!(
        row(bulk, "gateway-ebpf"),
        [
            "gateway-ebpf",
            "18.6 (0.93×)",
            "19.0 (0.95×)",
            "28.0 (0.93×)",
            "0.00200",
            "1.00"
        ]
    );
    assert_eq!(row(bulk, "gateway-userspace")[4], "0.500");
    assert_eq!(row(bulk, "nginx")[3], "—");
}

#[test]
fn latency_tables_pinned_and_unpinned() {
    let text = markdown(&fixture::report());
    let latency = section(&text, "Round-trip latency");
    let (pinned, unpinned) = latency.split_once("### Unpinned").expect("two tables");
    assert_eq!(
        row(pinned, "gateway-ebpf"),
        ["gateway-ebpf", "26.0", "52.0", "78.0", "+6.00"]
    );
    assert_eq!(row(unpinned, "gateway-ebpf")[1], "36.0");
    assert_eq!(row(unpinned, "haproxy"), ["haproxy", "—", "—", "—", "—"]);
}

/// The cells of the table row in `text` for `path` and message size `size`.
fn message_row(text: &str, path: &str, size: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|line| {
            line.starts_with(&format!("| {path} ")) && line.contains(&format!("| {size} "))
        })
        .unwrap_or_else(|| panic!("no row {path} {size} in:\n{text}"));
    line.trim_matches('|')
        .split(" | ")
        .map(|cell| cell.trim().to_owned())
        .collect()
}

#[test]
fn message_table_has_a_row_per_size_and_path() {
    let text = markdown(&fixture::report());
    let messages = section(&text, "Large-message echo");
    assert!(
        messages.contains("all rounds together (3 per size"),
        "{messages}"
    );
    assert_eq!(
        message_row(messages, "direct", "4 MiB"),
        ["direct", "4 MiB", "4.00", "5.50", "+0"]
    );
    assert_eq!(
        message_row(messages, "gateway-ebpf", "4 MiB"),
        ["gateway-ebpf", "4 MiB", "6.00", "7.50", "+2.00"]
    );
    assert_eq!(
        message_row(messages, "haproxy", "16 MiB"),
        ["haproxy", "16 MiB", "30.0", "31.5", "+14.0"]
    );
    assert_eq!(
        message_row(messages, "nginx", "16 MiB"),
        ["nginx", "16 MiB", "—", "—", "—"]
    );
    // 4 MiB rows first, direct first within a size: the row Δ is taken against.
    let rows: Vec<&str> = messages.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 1 + 2 * PathKind::ALL.len(), "{messages}");
    assert!(rows[1].starts_with("| direct ") && rows[1].contains("| 4 MiB "));
    assert!(rows[7].starts_with("| direct ") && rows[7].contains("| 16 MiB "));

    let mut report = fixture::report();
    report
        .messages
        .retain(|s| s.path != PathKind::Direct || s.bytes != fixture::MESSAGE_SIZES[0]);
    let text = markdown(&report);
    let messages = section(&text, "Large-message echo");
    assert_eq!(message_row(messages, "gateway-ebpf", "4 MiB")[4], "—");
    assert_eq!(message_row(messages, "gateway-ebpf", "16 MiB")[4], "+4.00");
}

#[test]
fn concurrent_handshake_target_and_problem_sections() {
    let text = markdown(&fixture::report());
    let concurrent = section(&text, "Concurrent tunnels");
    let limited = concurrent
        .lines()
        .find(|l| l.starts_with("| 10000 ") && l.contains("gateway-ebpf"))
        .expect("ebpf at 10000");
    assert!(
        limited.contains(&format!(
            "8000–10000 (limited by {})",
            fixture::NOFILE_REASON
        )),
        "{limited}"
    );
    assert!(limited.contains("| 4.00 "), "{limited}");
    let nginx = concurrent
        .lines()
        .find(|l| l.starts_with("| 1000 ") && l.contains("nginx"))
        .expect("nginx row");
    assert_eq!(nginx.matches('—').count(), 4, "{nginx}");

    let handshakes = section(&text, "Handshakes");
    assert_eq!(
        row(handshakes, "haproxy"),
        ["haproxy", "10000", "20000", "3"]
    );

    let targets = section(&text, "Targets");
    assert_eq!(targets.matches("✅").count(), 5, "{targets}");
    assert!(
        targets.contains("upload 0.93×, download 0.95×"),
        "{targets}"
    );

    let spread = section(&text, "Spread over rounds");
    assert_eq!(row(spread, "direct")[1], "19.0–21.0");
    assert!(
        spread.contains("| 4 MiB echo p50 ms | 16 MiB echo p50 ms |"),
        "{spread}"
    );
    assert_eq!(row(spread, "direct")[6], "3.00–5.00");
    assert_eq!(row(spread, "nginx")[7], "—");

    assert!(section(&text, "Problems").contains(&format!("- {}", fixture::PROBLEM)));
}

#[test]
fn spread_says_when_a_round_is_missing() {
    let mut report = fixture::report();
    report.bulk.retain(|s| {
        !(s.path == PathKind::Direct && s.direction == Direction::Upload && s.round == 1)
    });
    let text = markdown(&report);
    let direct = row(section(&text, "Spread over rounds"), "direct");
    assert_eq!(direct[1], "19.0 (1/2 rounds)");
    assert_eq!(direct[2], "19.0–21.0");
}

#[test]
fn empty_report_renders_dashes_and_not_available() {
    let mut report = fixture::report();
    report.bulk.clear();
    report.latency.clear();
    report.messages.clear();
    report.concurrent.clear();
    report.handshakes.clear();
    report.problems.clear();
    let text = markdown(&report);
    assert_eq!(row(section(&text, "Bulk throughput"), "direct")[1], "—");
    assert_eq!(
        message_row(section(&text, "Large-message echo"), "direct", "16 MiB"),
        ["direct", "16 MiB", "—", "—", "—"]
    );
    assert_eq!(
        section(&text, "Targets").matches("| n/a").count(),
        5,
        "{text}"
    );
    assert!(section(&text, "Problems").contains("none"));
}

/// Reports written before the large-message echo existed have no `messages` and no
/// message fields in the plan; they still parse, with none.
#[test]
fn a_report_from_before_the_message_workload_parses() {
    let mut json = serde_json::to_value(fixture::report()).expect("serialize");
    let object = json.as_object_mut().expect("an object");
    object.remove("messages");
    let plan = object
        .get_mut("plan")
        .and_then(serde_json::Value::as_object_mut)
        .expect("a plan");
    for field in ["message_sizes", "message_count", "message_warmup"] {
        plan.remove(field);
    }
    let old: Report = serde_json::from_value(json).expect("an older report parses");
    assert!(old.messages.is_empty());
    assert!(old.plan.message_sizes.is_empty());
    let text = markdown(&old);
    assert_eq!(
        section(&text, "Targets").matches("| n/a").count(),
        1,
        "{text}"
    );
}

#[test]
fn stamp_is_file_name_safe() {
    let mut report = fixture::report();
    assert_eq!(stamp(&report), "2026-11-24T03-10-00Z-quick");
    report.started_at = "2026-11-24T03:10:00+01:00".to_owned();
    report.plan.preset = "my preset".to_owned();
    assert_eq!(stamp(&report), "2026-11-24T03-10-00+01-00-my-preset");
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let unique = format!(
            "gateway-bench-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos()
        );
        Self(std::env::temp_dir().join(unique))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn check_written(report: &Report, dir: &TempDir) {
    let written = write(report, &dir.0).expect("write the report");
    let stamp = stamp(report);
    assert_eq!(written.json, dir.0.join(format!("{stamp}.json")));
    assert_eq!(written.markdown, dir.0.join(format!("{stamp}.md")));
    assert_eq!(written.plots.len(), 3);

    let back: Report = serde_json::from_str(&read(&written.json)).expect("JSON parses as a Report");
    assert_eq!(back.started_at, report.started_at);
    assert_eq!(back.plan.preset, report.plan.preset);
    assert_eq!(back.bulk.len(), report.bulk.len());
    assert_eq!(back.messages.len(), report.messages.len());
    assert_eq!(
        back.messages.first().map(|s| s.exchange_ms.clone()),
        report.messages.first().map(|s| s.exchange_ms.clone())
    );
    assert_eq!(
        back.latency.first().map(|s| s.cdf.clone()),
        report.latency.first().map(|s| s.cdf.clone())
    );
    assert_eq!(back.problems, report.problems);
    assert_eq!(read(&dir.0.join("latest.json")), read(&written.json));

    let md = read(&written.markdown);
    assert!(md.starts_with(&markdown(report)));
    assert!(md.contains(&format!("({stamp}-throughput.svg)")), "{md}");
    assert!(read(&dir.0.join("latest.md")).contains("(latest-latency.svg)"));

    for (path, title) in written.plots.iter().zip([
        "Bulk throughput, one stream",
        "Round-trip latency of 64 B messages",
        "Proxy memory per open tunnel",
    ]) {
        let svg = read(path);
        let name = path.file_name().expect("file name").to_string_lossy();
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{name}: {svg:.80}"
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(svg.contains(title), "{name} lacks its title");
        assert!(svg.contains("<text"), "{name} has no text");
        let latest = name.replacen(&stamp, "latest", 1);
        assert_eq!(read(&dir.0.join(latest)), svg);
    }
}

#[test]
fn write_produces_json_markdown_and_plots() {
    let dir = TempDir::new("report");
    let report = fixture::report();
    check_written(&report, &dir);
    let svg = read(&dir.0.join("latest-latency.svg"));
    for path in PathKind::ALL {
        assert!(
            svg.contains(path.label()),
            "latency legend lacks {}",
            path.label()
        );
    }
    assert!(svg.contains("unpinned"));
}

#[test]
fn write_survives_a_run_without_samples() {
    let dir = TempDir::new("empty");
    let mut report = fixture::report();
    report.bulk.clear();
    report.latency.clear();
    report.messages.clear();
    report.concurrent.clear();
    report.handshakes.clear();
    check_written(&report, &dir);
    assert!(read(&dir.0.join("latest-throughput.svg")).contains("no data in this run"));
}
