//! `--log-format json`: every line on stderr is one JSON object, and a tunnel's close line
//! names the client, the backend, the mode, the bytes each way, the duration and the reason,
//! as top-level fields a machine can read without parsing text.

use std::time::Duration;

use gateway_tests::{
    backend::EchoBackend, client, data::seeded_rng, dataplane_tests, skip_unprivileged,
    wait::within, ws_echo::echo_random_messages, Dataplane, Gateway,
};
use serde_json::Value;

const MESSAGES: usize = 40;
const MESSAGE_BYTES: usize = 4096;
/// WebSocket framing per message on the wire: at most 2 + 8 length bytes + a 4-byte mask.
const MAX_FRAME_OVERHEAD: u64 = 14;

async fn close_line_is_json(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = EchoBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .arg("--log-format")
        .arg("json")
        .arg("--log-level")
        .arg("info")
        .start();
    let ws = within(
        Duration::from_secs(10),
        "WebSocket upgrade",
        client::ws_connect(gateway.listen_addr(), "/logs"),
    )
    .await;
    let local = ws.get_ref().local_addr().expect("client address");
    let (sent, received) = echo_random_messages(
        ws,
        seeded_rng(test),
        MESSAGES,
        MESSAGE_BYTES,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(received, sent, "bytes the client got back");
    let record = backend.next_record().await;
    assert_eq!(record.received, sent, "bytes the backend received");

    let stderr = gateway
        .logged("the tunnel's close line", |text| {
            text.contains("\"tunnel closed\"")
        })
        .await;
    let line = stderr
        .lines()
        .find(|line| line.contains("\"tunnel closed\""))
        .expect("the close line")
        .to_owned();
    let json: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("close line is not JSON ({e}): {line}"));
    let fields = &json["fields"];
    assert_eq!(fields["message"], "tunnel closed", "{line}");
    assert_eq!(json["level"], "INFO", "{line}");
    assert_eq!(fields["client"], local.to_string(), "{line}");
    assert_eq!(fields["backend"], backend.addr().to_string(), "{line}");
    assert_eq!(fields["mode"], dataplane.tunnel_mode(), "{line}");
    assert_eq!(fields["close_reason"], "done", "{line}");
    assert!(fields["duration_ms"].as_u64().is_some(), "{line}");
    assert!(fields["tunnel"].as_u64().is_some(), "{line}");
    // The payload each way, plus WebSocket framing (and the Close frames).
    let payload = (MESSAGES * MESSAGE_BYTES) as u64;
    let most = payload + (MESSAGES as u64 + 1) * MAX_FRAME_OVERHEAD + 4;
    for key in ["client_to_backend_bytes", "backend_to_client_bytes"] {
        let bytes = fields[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {line}"));
        assert!(
            (payload..=most).contains(&bytes),
            "{key} = {bytes}, expected {payload}..={most}: {line}"
        );
    }

    // Every stderr line is one JSON object.
    for line in gateway
        .stderr_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line}");
    }
}

dataplane_tests!(close_line_is_json => tunnel_close_line_is_json_ebpf, tunnel_close_line_is_json_userspace);

/// A tunnel the gateway closes (here: idle timeout) logs the bytes it carried, not 0: a
/// direction cut off by a limit has no end-of-stream total of its own.
async fn a_limit_close_logs_the_bytes_carried(dataplane: Dataplane, test: &str) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    if skip_unprivileged(dataplane, test) {
        return;
    }
    let backend = EchoBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .arg("--log-format")
        .arg("json")
        .arg("--tunnel-idle-timeout-secs")
        .arg("1")
        .start();
    let mut ws = within(
        Duration::from_secs(10),
        "WebSocket upgrade",
        client::ws_connect(gateway.listen_addr(), "/idle"),
    )
    .await;
    let payload = vec![7u8; MESSAGE_BYTES];
    for _ in 0..MESSAGES {
        ws.send(Message::Binary(payload.clone().into()))
            .await
            .expect("send");
        match within(Duration::from_secs(10), "an echo", ws.next()).await {
            Some(Ok(Message::Binary(echo))) => assert_eq!(echo.len(), MESSAGE_BYTES),
            other => panic!("expected an echo, got {other:?}"),
        }
    }
    // Idle now: the gateway closes the tunnel after a second.
    within(Duration::from_secs(10), "the idle close", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let stderr = gateway
        .logged("the tunnel's close line", |text| {
            text.contains("\"tunnel closed\"")
        })
        .await;
    let line = stderr
        .lines()
        .find(|line| line.contains("\"tunnel closed\""))
        .expect("the close line");
    let json: Value = serde_json::from_str(line).expect("JSON");
    let fields = &json["fields"];
    assert_eq!(fields["close_reason"], "idle_timeout", "{line}");
    let payload = (MESSAGES * MESSAGE_BYTES) as u64;
    for key in ["client_to_backend_bytes", "backend_to_client_bytes"] {
        let bytes = fields[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {line}"));
        assert!(bytes >= payload, "{key} = {bytes} < {payload}: {line}");
    }
}

dataplane_tests!(a_limit_close_logs_the_bytes_carried => limit_close_logs_bytes_ebpf, limit_close_logs_bytes_userspace);
