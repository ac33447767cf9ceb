//! 256 MiB each way through one WebSocket tunnel: tokio-tungstenite client → gateway → echo
//! backend, sending and receiving concurrently, checked by length + SHA-256 at the client
//! (sent, echoed back) and at the backend (received).

use std::time::Duration;

use gateway_tests::{
    backend::EchoBackend, client, data::seeded_rng, dataplane_tests, skip_unprivileged,
    wait::within, ws_echo::echo_random_messages, Dataplane, Gateway,
};

const MESSAGE_BYTES: usize = 1 << 20;
const MESSAGES: usize = 256;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(240);

async fn echo_256_mib(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = EchoBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let ws = within(
        Duration::from_secs(10),
        "WebSocket upgrade",
        client::ws_connect(gateway.listen_addr(), "/bulk"),
    )
    .await;
    let (sent, received) = echo_random_messages(
        ws,
        seeded_rng(test),
        MESSAGES,
        MESSAGE_BYTES,
        TRANSFER_TIMEOUT,
    )
    .await;

    let record = backend.next_record().await;
    assert_eq!(record.error, None, "echo backend connection error");
    assert_eq!(sent.len, (MESSAGES * MESSAGE_BYTES) as u64);
    assert_eq!(record.received, sent, "bytes the backend received");
    assert_eq!(record.echoed, sent, "bytes the backend echoed");
    assert_eq!(received, sent, "bytes the client got back");
    let forwarded_for = record
        .forwarded_for
        .expect("upgrade reached the backend without X-Forwarded-For");
    assert!(
        forwarded_for.contains("127.0.0.1"),
        "X-Forwarded-For {forwarded_for:?} names the client"
    );

    let metrics = gateway.metrics();
    let opened = metrics.metric(
        "gateway_tunnels_opened_total",
        &[("mode", dataplane.tunnel_mode())],
    );
    assert_eq!(
        opened,
        1.0,
        "tunnels opened in mode {}:\n{}",
        dataplane.tunnel_mode(),
        metrics.text
    );
}

dataplane_tests!(echo_256_mib => echo_256_mib_each_way_ebpf, echo_256_mib_each_way_userspace);
