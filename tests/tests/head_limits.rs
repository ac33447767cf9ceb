//! The buffers that bound what a slow client costs also bound heads: a request head up to
//! 64 KiB reaches the backend and a longer one gets `431`; a backend's answer head up to
//! 16 KiB reaches the client and a longer one is a `502` (protocol error). Raw bytes both
//! ways.

use std::time::Duration;

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client::raw_request,
    http_backend::HttpBackend,
    Gateway,
};
use tokio::io::AsyncWriteExt as _;

const REQUEST_START: &str = "GET /big-head HTTP/1.1\r\nHost: x.test\r\nX-Filler: ";
const ANSWER_START: &str =
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nX-Filler: ";

/// The `X-Filler` value that makes a head starting with `start` `head_bytes` long.
fn filler(start: &str, head_bytes: usize) -> String {
    "f".repeat(head_bytes - start.len() - 4)
}

/// A request whose head is `head_bytes` long.
fn request_with_head_of(head_bytes: usize) -> Vec<u8> {
    format!(
        "{REQUEST_START}{}\r\n\r\n",
        filler(REQUEST_START, head_bytes)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_up_to_64_kib_pass_and_longer_ones_get_431() {
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    // The gateway adds its X-Forwarded-* headers: room for them under the backend's limit.
    let (head, _) = raw_request(gateway.listen_addr(), &request_with_head_of(63 << 10)).await;
    assert_eq!(head.status(), Some(200), "{}", head.start_line);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let got = seen[0].head.header("x-filler").unwrap_or_default();
    assert!(
        got == filler(REQUEST_START, 63 << 10),
        "the long header reaches the backend whole: {} bytes of it",
        got.len()
    );
    let (head, _) = raw_request(gateway.listen_addr(), &request_with_head_of(65 << 10)).await;
    assert_eq!(head.status(), Some(431), "{}", head.start_line);
    assert_eq!(
        backend.seen().len(),
        1,
        "the long head never reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_heads_up_to_16_kib_pass_and_longer_ones_get_502() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        let bytes: usize = conn
            .request
            .path()
            .trim_start_matches('/')
            .parse()
            .expect("the head size asked for");
        let answer = format!("{ANSWER_START}{}\r\n\r\nok", filler(ANSWER_START, bytes));
        // The gateway may hang up before it read everything: that is the point.
        let _ = conn.stream.write_all(answer.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    })
    .await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let get = |bytes: usize| format!("GET /{bytes} HTTP/1.1\r\nHost: x.test\r\n\r\n").into_bytes();
    let (head, body) = raw_request(gateway.listen_addr(), &get(15 << 10)).await;
    assert_eq!(head.status(), Some(200), "{}", head.start_line);
    assert_eq!(body, b"ok");
    let got = head.header("x-filler").unwrap_or_default();
    assert!(
        got == filler(ANSWER_START, 15 << 10),
        "the long header reaches the client whole: {} bytes of it",
        got.len()
    );
    let (head, body) = raw_request(gateway.listen_addr(), &get(17 << 10)).await;
    assert_eq!(head.status(), Some(502), "{}", head.start_line);
    assert!(
        String::from_utf8_lossy(&body).contains("protocol error"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
