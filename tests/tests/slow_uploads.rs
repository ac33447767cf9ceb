//! Clients that send their request body slowly (slowhttptest's slow-body attack): the
//! gateway reads a body into memory (up to `request_buffer_bytes`) before it chooses and
//! connects a backend, so a trickling client holds no backend connection; a body that
//! stops coming gets `408` after the body timeout; bodies reach the backend byte for byte,
//! framed as the client framed them, also past the buffer.

use std::time::Duration;

use gateway_tests::{
    data::{random_bytes, seeded_rng, Summary},
    http::{self, Head},
    http_backend::HttpBackend,
    slow::{read_until_closed, Framing},
    wait::{eventually, within},
    Gateway,
};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

const BODY_TIMEOUT_SECS: u64 = 1;
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const BUFFERED: &str = "gateway_request_buffered_bytes";

/// Connects, writes `bytes`; returns the connection.
async fn send(gateway: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gateway).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    stream
}

/// Reads an answer, head and body.
async fn answer(stream: &mut TcpStream) -> (Head, Vec<u8>) {
    within(STEP_TIMEOUT, "the answer", async {
        let (head, leftover) = http::read_head(&mut *stream)
            .await
            .expect("read the answer's head");
        let body = http::read_body(&mut *stream, &head, leftover)
            .await
            .expect("read the answer's body");
        (head, body)
    })
    .await
}

/// A client that sends its head and 10 bytes of its body, then nothing, gets `408` once the
/// body timeout has passed, and the connection closes; no backend is ever connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_reaches_no_backend() {
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .arg("--request-body-timeout-secs")
        .arg(BODY_TIMEOUT_SECS.to_string())
        .start();
    for framing in [Framing::ContentLength, Framing::Chunked] {
        let mut request = framing.head("/upload", 100).into_bytes();
        request.extend_from_slice(&framing.piece(b"0123456789"));
        let mut client = send(gateway.listen_addr(), &request).await;
        let (head, body) = answer(&mut client).await;
        assert_eq!(head.status(), Some(408), "{framing:?}: {}", head.text());
        assert_eq!(head.header("connection"), Some("close"), "{}", head.text());
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("no byte of the request body came for 1s"),
            "{framing:?}: {body}"
        );
        let (rest, _) = within(STEP_TIMEOUT, "the close", read_until_closed(&mut client)).await;
        assert!(rest.is_empty(), "bytes after the 408: {rest:?}");
    }
    assert_eq!(
        backend.connections_accepted(),
        0,
        "a stalled body reached a backend"
    );
    let metrics = gateway.metrics();
    assert_eq!(
        metrics.metric("gateway_requests_total", &[("status", "408")]),
        2.0
    );
    assert_eq!(metrics.metric(BUFFERED, &[]), 0.0, "the buffers are freed");
}

/// Uploads at once, each sent in pieces: the head and a third of the body first.
const UPLOADERS: usize = 200;
const UPLOAD_BYTES: usize = 3000;

/// 200 clients send their head and a third of their body (half with a Content-Length, half
/// chunked) and wait: the gateway holds their bytes, and no backend connection is opened.
/// Then each sends the rest, and every body reaches the backend byte for byte, framed as
/// the client framed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_hold_no_backend_connection_until_they_are_whole() {
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let mut rng = seeded_rng("trickled_bodies_hold_no_backend_connection_until_they_are_whole");
    let third = UPLOAD_BYTES / 3;
    let mut clients = Vec::with_capacity(UPLOADERS);
    for i in 0..UPLOADERS {
        let framing = if i % 2 == 0 {
            Framing::ContentLength
        } else {
            Framing::Chunked
        };
        let body = random_bytes(&mut rng, UPLOAD_BYTES);
        let mut request = framing
            .head(&format!("/upload/{i}"), UPLOAD_BYTES)
            .into_bytes();
        request.extend_from_slice(&framing.piece(&body[..third]));
        let client = send(gateway.listen_addr(), &request).await;
        clients.push((framing, body, client));
    }
    let held = (UPLOADERS * third) as f64;
    eventually(STEP_TIMEOUT, "the gateway holds every first piece", || {
        let accepted = backend.connections_accepted();
        assert_eq!(
            accepted, 0,
            "the backend accepted {accepted} connections while the bodies trickle"
        );
        match gateway.metrics().metric(BUFFERED, &[]) {
            buffered if buffered == held => Ok(()),
            buffered => Err(format!("{BUFFERED} = {buffered}, {held} sent")),
        }
    })
    .await;
    // A second piece each, then the rest: the buffers grow, still no backend.
    for (framing, body, client) in &mut clients {
        let piece = framing.piece(&body[third..2 * third]);
        client.write_all(&piece).await.expect("send a piece");
    }
    let held = (UPLOADERS * 2 * third) as f64;
    eventually(
        STEP_TIMEOUT,
        "the gateway holds the second pieces",
        || match gateway.metrics().metric(BUFFERED, &[]) {
            buffered if buffered == held => Ok(()),
            buffered => Err(format!("{BUFFERED} = {buffered}, {held} sent")),
        },
    )
    .await;
    assert_eq!(backend.connections_accepted(), 0);
    for (framing, body, client) in &mut clients {
        let mut rest = framing.piece(&body[2 * third..]);
        rest.extend_from_slice(framing.end());
        client.write_all(&rest).await.expect("send the rest");
    }
    for (i, (framing, body, client)) in clients.iter_mut().enumerate() {
        let (head, _) = answer(client).await;
        assert_eq!(head.status(), Some(200), "upload {i}: {}", head.text());
        assert_eq!(
            head.header("x-request-body"),
            Some(Summary::of(body).to_string().as_str()),
            "upload {i} ({framing:?}) as the backend got it"
        );
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), UPLOADERS);
    for request in &seen {
        let i: usize = request
            .head
            .path()
            .trim_start_matches("/upload/")
            .parse()
            .expect("the upload's number");
        let (framing, body, _) = &clients[i];
        assert_eq!(request.body, Summary::of(body), "upload {i}");
        let (length, chunked) = (
            request.head.header("content-length"),
            request.head.header("transfer-encoding"),
        );
        match framing {
            Framing::ContentLength => {
                assert_eq!(length, Some(UPLOAD_BYTES.to_string().as_str()), "{i}");
                assert_eq!(chunked, None, "upload {i}");
            }
            Framing::Chunked => {
                assert_eq!(chunked, Some("chunked"), "upload {i}");
                assert_eq!(length, None, "upload {i}");
            }
        }
    }
    assert!(backend.connections_accepted() <= UPLOADERS);
    assert_eq!(gateway.metrics().metric(BUFFERED, &[]), 0.0);
}

/// A 1 MiB body, sixteen times the buffer, reaches the backend whole and byte for byte,
/// with either framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_buffer_reaches_the_backend_intact() {
    const BODY_BYTES: usize = 1 << 20;
    const PIECE_BYTES: usize = 50_000;
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let mut rng = seeded_rng("a_body_larger_than_the_buffer_reaches_the_backend_intact");
    for framing in [Framing::ContentLength, Framing::Chunked] {
        let body = random_bytes(&mut rng, BODY_BYTES);
        let mut request = framing.head("/large", BODY_BYTES).into_bytes();
        for piece in body.chunks(PIECE_BYTES) {
            request.extend_from_slice(&framing.piece(piece));
        }
        request.extend_from_slice(framing.end());
        let mut client = send(gateway.listen_addr(), &request).await;
        let (head, _) = answer(&mut client).await;
        assert_eq!(head.status(), Some(200), "{framing:?}: {}", head.text());
        assert_eq!(
            head.header("x-request-body"),
            Some(Summary::of(&body).to_string().as_str()),
            "{framing:?}"
        );
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].head.header("content-length"),
        Some(BODY_BYTES.to_string().as_str())
    );
    assert_eq!(seen[1].head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(gateway.metrics().metric(BUFFERED, &[]), 0.0);
}

/// Past the buffer, the body is streamed; the backend's answer timeout (here the 1 s
/// handshake timeout) counts only the time the gateway waits on the backend, not the
/// client's pauses between pieces (1.5 s each, within the 10 s body timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_past_the_buffer_is_not_a_backend_timeout() {
    const BUFFER_BYTES: usize = 1024;
    const PAUSE: Duration = Duration::from_millis(1500);
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .handshake_timeout_secs(1)
        .arg("--request-body-timeout-secs")
        .arg("10")
        .arg("--request-buffer-bytes")
        .arg(BUFFER_BYTES.to_string())
        .start();
    let mut rng = seeded_rng("a_slow_upload_past_the_buffer_is_not_a_backend_timeout");
    let body = random_bytes(&mut rng, 4 * BUFFER_BYTES);
    let framing = Framing::ContentLength;
    let mut request = framing.head("/slow", body.len()).into_bytes();
    request.extend_from_slice(&body[..BUFFER_BYTES]);
    let mut client = send(gateway.listen_addr(), &request).await;
    for piece in body[BUFFER_BYTES..].chunks(BUFFER_BYTES) {
        // Pacing the upload is the point of the test, not a wait for readiness.
        tokio::time::sleep(PAUSE).await;
        if client.write_all(piece).await.is_err() {
            break; // the gateway answered early: the answer says why
        }
    }
    let (head, answer_body) = answer(&mut client).await;
    assert_eq!(
        head.status(),
        Some(200),
        "{}{}",
        head.text(),
        String::from_utf8_lossy(&answer_body)
    );
    assert_eq!(
        head.header("x-request-body"),
        Some(Summary::of(&body).to_string().as_str())
    );
}

/// A body that stops coming after the buffer filled (so the request already went to a
/// backend) gets `408` too, and the backend's connection is closed mid-body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalling_past_the_buffer_gets_408() {
    const BUFFER_BYTES: usize = 1024;
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .arg("--request-body-timeout-secs")
        .arg(BODY_TIMEOUT_SECS.to_string())
        .arg("--request-buffer-bytes")
        .arg(BUFFER_BYTES.to_string())
        .start();
    let framing = Framing::ContentLength;
    let mut request = framing.head("/stalls", 4 * BUFFER_BYTES).into_bytes();
    request.extend_from_slice(&[b'x'; 2 * BUFFER_BYTES]);
    let mut client = send(gateway.listen_addr(), &request).await;
    let (head, body) = answer(&mut client).await;
    assert_eq!(head.status(), Some(408), "{}", head.text());
    assert_eq!(head.header("connection"), Some("close"));
    assert!(
        String::from_utf8_lossy(&body).contains("request body"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // The request was on its way to the backend; it never got a whole body to record.
    assert_eq!(backend.connections_accepted(), 1);
    assert!(backend.seen().is_empty(), "the backend got a whole request");
    gateway
        .logged("the 408 is logged as the client's", |log| {
            log.contains("no byte of the client's request body came for 1s")
        })
        .await;
}
