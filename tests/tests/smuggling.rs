//! Request smuggling: requests whose framing a backend could read differently from the
//! gateway are refused with `400` and never reach the backend. Each is written as raw bytes,
//! exactly, on a fresh connection; the backend counts what it receives.

use std::time::Duration;

use gateway_tests::{
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

/// Each case: what it is, and the bytes.
const REFUSED: &[(&str, &[u8])] = &[
    (
        "Content-Length then Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    ),
    (
        "Transfer-Encoding then Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
    ),
    (
        "Transfer-Encoding with a zero Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "two different Content-Lengths",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    ),
    (
        "a Content-Length list",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 5\r\n\r\nabcde",
    ),
    (
        "obsolete line folding",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    ),
    (
        "folding a Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\nabc",
    ),
    (
        "a NUL in a header value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n",
    ),
    (
        "a bare CR in a header value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
    ),
    (
        "a bare CR ending a header line",
        b"GET / HTTP/1.1\r\nHost: a\rX-Next: b\r\n\r\n",
    ),
    (
        "whitespace before the colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a final encoding that is not chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "an encoding other than chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ),
    (
        "Transfer-Encoding in HTTP/1.0",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "raw bytes past ASCII in the target",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "a WebSocket upgrade with a body",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Content-Length: 10\r\n\r\n0123456789",
    ),
];

/// Writes `request`, reads to the end; returns the first answer's head and what follows.
async fn answer(gateway: std::net::SocketAddr, request: &[u8]) -> (Head, Vec<u8>) {
    let mut stream = TcpStream::connect(gateway).await.expect("connect");
    stream.write_all(request).await.expect("send the request");
    let mut all = Vec::new();
    // The gateway closes the connection after refusing; a reset also ends the read.
    let _ = within(
        STEP_TIMEOUT,
        "the gateway answers and closes",
        stream.read_to_end(&mut all),
    )
    .await;
    let end = http::head_end(&all)
        .unwrap_or_else(|| panic!("no answer head: {:?}", String::from_utf8_lossy(&all)));
    let head = Head::parse(&all[..end]).expect("parse the answer");
    (head, all[end..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_get_400_and_never_reach_the_backend() {
    let backend = HttpBackend::start("counting").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let addr = gateway.listen_addr();
    for (what, request) in REFUSED {
        let (head, rest) = answer(addr, request).await;
        assert_eq!(
            head.status(),
            Some(400),
            "{what}: {}{}",
            head.text(),
            String::from_utf8_lossy(&rest)
        );
        // Nothing after the 400: the rest of the request was not taken as a new one.
        assert_eq!(
            http::head_end(&rest)
                .and_then(|end| Head::parse(&rest[..end]).ok())
                .map(|h| h.start_line),
            None,
            "{what}: one answer only"
        );
    }
    assert_eq!(
        backend.seen().len(),
        0,
        "the backend received: {:?}",
        backend.seen()
    );
    assert_eq!(backend.connections_accepted(), 0);
}

/// A good request, then a smuggling attempt in the same write: the first is answered, the
/// second refused; the backend sees only the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggled_request_behind_a_good_one_is_refused() {
    let backend = HttpBackend::start("counting").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let mut bytes = b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    bytes.extend_from_slice(
        b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let (first, rest) = answer(gateway.listen_addr(), &bytes).await;
    assert_eq!(first.status(), Some(200), "{}", first.text());
    let body_len: usize = first
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("the first answer has a Content-Length");
    let rest = &rest[body_len..];
    let end = http::head_end(rest)
        .unwrap_or_else(|| panic!("no second answer: {:?}", String::from_utf8_lossy(rest)));
    let second = Head::parse(&rest[..end]).expect("parse the second answer");
    assert_eq!(second.status(), Some(400), "{}", second.text());
    let after = String::from_utf8_lossy(&rest[end..]);
    assert!(!after.contains("HTTP/1.1"), "no third answer: {after}");
    let seen: Vec<String> = backend
        .seen()
        .iter()
        .map(|s| s.head.start_line.clone())
        .collect();
    assert_eq!(seen, ["POST /first HTTP/1.1"]);
}
