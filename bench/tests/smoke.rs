//! `gateway-bench run --tiny --strict` end to end: every path (direct, the gateway on both
//! dataplanes, nginx, HAProxy plain and with splice) and every workload runs with tiny
//! sizes and verifies its bytes, and the report files are written. Timing is not checked:
//! benchmarks are not tests. nginx and HAProxy come from `cargo xtask test`'s setup.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

const PATHS: [&str; 6] = [
    "direct",
    "gateway-ebpf",
    "gateway-userspace",
    "nginx",
    "haproxy",
    "haproxy-splice",
];

#[test]
fn tiny_run_covers_every_path_and_workload_with_verified_bytes() {
    if std::env::var("GATEWAY_TEST_UNPRIVILEGED").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED tiny_run_covers_every_path_and_workload: GATEWAY_TEST_UNPRIVILEGED=1");
        return;
    }
    let gateway = std::env::var("GATEWAY_BIN")
        .expect("GATEWAY_BIN must name the gateway binary (cargo xtask test sets it)");
    let out = std::env::temp_dir().join(format!("gateway-bench-smoke-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_gateway-bench"))
        .args(["run", "--tiny", "--strict", "--gateway", &gateway, "--out"])
        .arg(&out)
        .output()
        .expect("start gateway-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "gateway-bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    let json = std::fs::read_to_string(out.join("latest.json")).expect("read latest.json");
    let report: Value = serde_json::from_str(&json).expect("latest.json is JSON");
    check_report(&report);
    let markdown = std::fs::read_to_string(out.join("latest.md")).expect("read latest.md");
    for path in PATHS {
        assert!(markdown.contains(path), "the Markdown names {path}");
    }
    let plots: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("list the results")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "svg"))
        .collect();
    assert!(plots.len() >= 2, "throughput and latency plots: {plots:?}");
    for plot in &plots {
        let svg = std::fs::read_to_string(plot).expect("read a plot");
        assert!(svg.contains("<svg"), "{} is an SVG", plot.display());
    }
    std::fs::remove_dir_all(&out).expect("remove the results");
}

fn check_report(report: &Value) {
    let plan = &report["plan"];
    let bulk_bytes = plan["bulk_bytes"].as_u64().expect("plan.bulk_bytes");
    let pingpong = plan["pingpong_count"]
        .as_u64()
        .expect("plan.pingpong_count");
    let message_sizes = plan["message_sizes"]
        .as_array()
        .expect("plan.message_sizes");
    assert!(!message_sizes.is_empty(), "the plan has message sizes");
    let message_count = plan["message_count"].as_u64().expect("plan.message_count");
    let per_tunnel = plan["concurrent_bytes_per_tunnel"]
        .as_u64()
        .expect("plan.concurrent_bytes_per_tunnel");
    assert_eq!(report["problems"], Value::Array(vec![]), "no problems");

    for path in PATHS {
        let of = |workload: &str| -> Vec<&Value> {
            report[workload]
                .as_array()
                .unwrap_or_else(|| panic!("{workload} is a list"))
                .iter()
                .filter(|sample| sample["path"] == path)
                .collect()
        };
        for (direction, factor) in [("upload", 1), ("download", 1), ("both", 2)] {
            let samples: Vec<_> = of("bulk")
                .into_iter()
                .filter(|s| s["direction"] == direction)
                .collect();
            assert_eq!(samples.len(), 1, "{path} bulk {direction}");
            assert_eq!(
                samples[0]["bytes"],
                bulk_bytes * factor,
                "{path} {direction}"
            );
        }
        let latency = of("latency");
        assert_eq!(latency.len(), 2, "{path}: pinned and unpinned latency");
        for sample in latency {
            assert_eq!(sample["count"], pingpong, "{path} round trips");
            assert!(sample["p50_us"].as_f64().expect("p50") > 0.0);
        }
        let messages = of("messages");
        assert_eq!(messages.len(), message_sizes.len(), "{path}: one per size");
        for size in message_sizes {
            let sample = messages
                .iter()
                .find(|s| s["bytes"] == *size)
                .unwrap_or_else(|| panic!("{path}: messages of {size} bytes"));
            let times = sample["exchange_ms"].as_array().expect("exchange_ms");
            assert_eq!(times.len() as u64, message_count, "{path} {size}");
            assert!(times.iter().all(|t| t.as_f64().expect("ms") > 0.0));
        }
        let concurrent = of("concurrent");
        assert_eq!(concurrent.len(), 1, "{path} concurrent");
        let tunnels = concurrent[0]["tunnels"].as_u64().expect("tunnels");
        assert_eq!(
            concurrent[0]["requested"], tunnels,
            "{path}: no limit at tiny size"
        );
        assert_eq!(concurrent[0]["bytes"], 2 * per_tunnel * tunnels, "{path}");
        let handshakes = of("handshakes");
        assert_eq!(handshakes.len(), 1, "{path} handshakes");
        assert!(handshakes[0]["completed"].as_u64().expect("completed") > 0);
        assert_eq!(handshakes[0]["failed"], 0, "{path} handshake failures");
    }
    // Tick-granular CPU can round a tiny measurement to zero, but not the whole run's.
    let machine_secs: f64 = ["bulk", "messages", "concurrent", "handshakes"]
        .iter()
        .flat_map(|workload| report[*workload].as_array().expect("a list"))
        .map(|sample| {
            sample["cpu"]["machine_secs"]
                .as_f64()
                .expect("cpu.machine_secs")
        })
        .sum();
    assert!(
        machine_secs > 0.0,
        "machine CPU is measured: {machine_secs}"
    );
}
