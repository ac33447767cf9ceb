//! Which dataplane the gateway chose, and why, is visible in `/metrics`; with eBPF it has
//! passed the start-up self-test, whose own bytes are not counted as traffic.

use gateway_tests::{skip_unprivileged, Dataplane, Gateway};

#[test]
fn auto_loads_ebpf_after_the_self_test_and_counts_none_of_its_bytes() {
    if skip_unprivileged(Dataplane::Ebpf, "auto_loads_ebpf_after_the_self_test") {
        return;
    }
    let gateway = Gateway::builder()
        .backend("127.0.0.1:9".parse().expect("addr"))
        .dataplane(Dataplane::Auto)
        .start();
    let metrics = gateway.metrics();
    let info = [
        ("dataplane", "ebpf"),
        ("reason", "eBPF loaded and self-test passed"),
    ];
    assert_eq!(
        metrics.metric("gateway_dataplane_info", &info),
        1.0,
        "{}",
        metrics.text
    );
    for direction in ["client_to_backend", "backend_to_client"] {
        let bytes = metrics.metric("gateway_spliced_bytes_total", &[("direction", direction)]);
        assert_eq!(
            bytes, 0.0,
            "self-test bytes counted as traffic:\n{}",
            metrics.text
        );
    }
    let opened = metrics.metric("gateway_tunnels_opened_total", &[("mode", "spliced")]);
    assert_eq!(opened, 0.0, "the self-test is not a tunnel");
}

#[test]
fn userspace_says_so() {
    let gateway = Gateway::builder()
        .backend("127.0.0.1:9".parse().expect("addr"))
        .dataplane(Dataplane::Userspace)
        .start();
    let metrics = gateway.metrics();
    let info = [
        ("dataplane", "userspace"),
        ("reason", "--dataplane userspace"),
    ];
    assert_eq!(
        metrics.metric("gateway_dataplane_info", &info),
        1.0,
        "{}",
        metrics.text
    );
}
