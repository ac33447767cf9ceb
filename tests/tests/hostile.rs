//! What the gateway does not pass on at the edge: header names a backend could read as
//! other headers, and a backend's `101` that nobody asked for. Requests are raw bytes on a
//! fresh connection; the backends record what reaches them.

use std::time::Duration;

use gateway_tests::{
    admin,
    backend::{RawBackend, RawConn},
    data::Summary,
    http::{self, Head},
    http_backend::HttpBackend,
    wait::within,
    Gateway,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `request`, reads until the answer's head is in; returns it.
async fn answer_head(gateway: std::net::SocketAddr, request: &[u8]) -> Head {
    let mut stream = TcpStream::connect(gateway).await.expect("connect");
    stream.write_all(request).await.expect("send the request");
    let mut all = Vec::new();
    within(STEP_TIMEOUT, "the gateway answers", async {
        let mut buf = [0u8; 4096];
        while http::head_end(&all).is_none() {
            let n = stream.read(&mut buf).await.expect("read the answer");
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&all)
            );
            all.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let end = http::head_end(&all).expect("a whole head");
    Head::parse(&all[..end]).expect("parse the answer")
}

/// `Transfer_Encoding` next to a `Content-Length` the gateway framed the request by: a
/// backend that reads `_` as `-` would frame it differently. Such names never reach it;
/// ordinary ones do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_or_dots_are_dropped() {
    let backend = HttpBackend::start("recording").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let request = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
        Transfer_Encoding: chunked\r\nX_Real_IP: 10.0.0.1\r\nX.Dotted: 1\r\nX-Kept: yes\r\n\r\nhello";
    let head = answer_head(gateway.listen_addr(), request).await;
    assert_eq!(head.status(), Some(200), "{}", head.text());
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "one request reaches the backend");
    let names: Vec<&str> = seen[0]
        .head
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
        "the backend got {names:?}"
    );
    assert_eq!(seen[0].head.header("x-kept"), Some("yes"), "{names:?}");
    assert_eq!(seen[0].head.header("content-length"), Some("5"));
    assert_eq!(
        seen[0].body,
        Summary::of(b"hello"),
        "the body arrives whole"
    );
}

/// A `101` to a plain GET is a broken backend: the client gets a 502, never a bare 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_nobody_asked_for_is_a_bad_gateway() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .expect("backend writes the 101");
        // Keeps the connection open, as a backend that switched would.
        let mut rest = Vec::new();
        let _ = conn.stream.read_to_end(&mut rest).await;
    })
    .await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let head = answer_head(
        gateway.listen_addr(),
        b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(head.status(), Some(502), "{}", head.text());
    assert_eq!(
        backend.requests().len(),
        1,
        "the request did reach the backend"
    );
}

/// A malformed chunked body is the client's fault: `400`, never a `502` blamed on the
/// backend, and the backend is not marked failing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let backend = HttpBackend::start("recording").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let cases: [(&str, &[u8]); 3] = [
        (
            "a chunk size that overflows",
            b"FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
        ),
        ("a chunk size that is not hex", b"zz\r\nabc\r\n0\r\n\r\n"),
        (
            "more data than the chunk size says",
            b"3\r\nabcdef\r\n0\r\n\r\n",
        ),
    ];
    for (what, body) in cases {
        let mut request =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let head = answer_head(gateway.listen_addr(), &request).await;
        assert_eq!(head.status(), Some(400), "{what}: {}", head.text());
    }
    let view = admin::backend(&gateway, "cli-backends", backend.addr());
    assert_eq!(
        view.passive_failures, 0,
        "a client's body counted against the backend: {}",
        view.json
    );
}
