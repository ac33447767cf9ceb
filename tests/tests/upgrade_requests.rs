//! Requests that are not valid upgrades: malformed ones are refused with the right status and
//! never reach the backend; plain requests are proxied.

use std::{net::SocketAddr, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use gateway_tests::{
    backend::{RawBackend, RawConn},
    client, dataplane_tests,
    http::{new_key, Head},
    skip_unprivileged,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use tokio::io::AsyncWriteExt as _;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const PLAIN_BODY: &str = "hello from the backend\n";

/// A backend that answers upgrades with a 101 and an echo, and anything else with a 200.
async fn backend() -> RawBackend<Head> {
    RawBackend::start(|mut conn: RawConn| async move {
        if conn.request.header("upgrade").is_some() {
            conn.accept_upgrade().await;
            conn.echo_to_eof().await.expect("backend echoes to EOF");
        } else {
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_BODY}",
                PLAIN_BODY.len()
            );
            conn.stream.write_all(response.as_bytes()).await.expect("backend writes the 200");
            conn.stream.shutdown().await.expect("backend closes");
        }
        conn.request
    })
    .await
}

/// An upgrade request with `headers` (each `Name: value`) in place of the usual ones.
fn upgrade(method: &str, host: SocketAddr, headers: &[&str]) -> Vec<u8> {
    let mut request = format!(
        "{method} /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

async fn malformed_upgrades(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = backend().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(dataplane)
        .start();
    let host = gateway.listen_addr();
    let key = format!("Sec-WebSocket-Key: {}", new_key());
    let key_8 = format!("Sec-WebSocket-Key: {}", BASE64.encode([7; 8]));
    let key_17 = format!("Sec-WebSocket-Key: {}", BASE64.encode([7; 17]));
    let not_base64 = "Sec-WebSocket-Key: this is not base64!!";
    let v13 = "Sec-WebSocket-Version: 13";
    let cases = [
        (
            "missing Sec-WebSocket-Key",
            upgrade("GET", host, &[v13]),
            400,
        ),
        (
            "Sec-WebSocket-Key of 8 bytes",
            upgrade("GET", host, &[&key_8, v13]),
            400,
        ),
        (
            "Sec-WebSocket-Key of 17 bytes",
            upgrade("GET", host, &[&key_17, v13]),
            400,
        ),
        (
            "Sec-WebSocket-Key not base64",
            upgrade("GET", host, &[not_base64, v13]),
            400,
        ),
        (
            "Sec-WebSocket-Version 8",
            upgrade("GET", host, &[&key, "Sec-WebSocket-Version: 8"]),
            426,
        ),
        (
            "POST with Upgrade: websocket",
            upgrade("POST", host, &[&key, v13, "Content-Length: 0"]),
            400,
        ),
    ];
    for (case, request, status) in cases {
        let (head, body) = within(STEP_TIMEOUT, case, client::raw_request(host, &request)).await;
        assert_eq!(
            head.status(),
            Some(status),
            "{case}: status; response:\n{}",
            head.text()
        );
        if status == 426 {
            assert_eq!(
                head.header("sec-websocket-version"),
                Some("13"),
                "{case}: response:\n{}",
                head.text()
            );
        }
        let reason = String::from_utf8_lossy(&body);
        let reason = reason.trim_end();
        assert!(
            !reason.is_empty() && !reason.contains('\n'),
            "{case}: body is one line of reason: {reason:?}"
        );
    }

    assert_eq!(
        backend.requests().len(),
        0,
        "requests that reached the backend: {:?}",
        backend.requests()
    );
    assert_eq!(
        backend.connections_accepted(),
        0,
        "connections the backend accepted"
    );
    let metrics = gateway.metrics();
    for mode in ["spliced", "userspace"] {
        let opened = metrics.metric("gateway_tunnels_opened_total", &[("mode", mode)]);
        assert_eq!(opened, 0.0, "{mode} tunnels opened:\n{}", metrics.text);
    }

    // Control: a valid upgrade on the same gateway does reach the backend.
    let mut tunnel = within(
        STEP_TIMEOUT,
        "valid upgrade",
        client::raw_upgrade(host, "/chat", &[]),
    )
    .await;
    tunnel.stream.shutdown().await.expect("client half-closes");
    let request = backend.next_result().await;
    assert_eq!(request.method(), "GET", "request:\n{}", request.text());
    let forwarded_for = request.header("x-forwarded-for").unwrap_or_default();
    assert!(
        forwarded_for.contains("127.0.0.1"),
        "X-Forwarded-For of the upgrade:\n{}",
        request.text()
    );
    // Either mode: this client half-closes at once, and a socket that already got its
    // FIN cannot join a sockmap, so even with eBPF the gateway may relay this tunnel.
    eventually(
        STEP_TIMEOUT,
        "the valid upgrade counted as a tunnel",
        || {
            let metrics = gateway.metrics();
            let opened = metrics
                .exported("gateway_tunnels_opened_total", &[("mode", "spliced")])?
                + metrics.exported("gateway_tunnels_opened_total", &[("mode", "userspace")])?;
            (opened == 1.0)
                .then_some(())
                .ok_or_else(|| format!("{opened} tunnels opened:\n{}", metrics.text))
        },
    )
    .await;
}

dataplane_tests!(malformed_upgrades => malformed_upgrades_rejected_ebpf, malformed_upgrades_rejected_userspace);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_request_is_proxied() {
    let mut backend = backend().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .dataplane(Dataplane::Userspace)
        .start();
    let host = gateway.listen_addr();
    let request = format!("GET /plain?x=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (head, body) = within(
        STEP_TIMEOUT,
        "plain GET",
        client::raw_request(host, request.as_bytes()),
    )
    .await;
    assert_eq!(head.status(), Some(200), "response:\n{}", head.text());
    assert_eq!(String::from_utf8_lossy(&body), PLAIN_BODY);
    let seen = backend.next_result().await;
    assert_eq!(
        seen.start_line,
        "GET /plain?x=1 HTTP/1.1",
        "request the backend got:\n{}",
        seen.text()
    );
}
