//! `--handshake-timeout-secs`: a backend that does not answer in time gets the client a
//! `504` (upgrade or plain request), a client that does not finish its request head in time
//! is disconnected, and an open tunnel is not subject to the timeout.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    client,
    data::{random_bytes, seeded_rng, Summary},
    dataplane_tests,
    gateway::GatewayBuilder,
    http::{self, Head},
    skip_unprivileged,
    tunnels::{self, assert_spliced},
    wait::within,
    Dataplane, Gateway,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after the timeout the gateway may take to answer or close.
const SLACK: Duration = Duration::from_secs(4);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes sent through a tunnel kept open past the handshake timeout (echoed back).
const TUNNEL_BYTES: usize = 1 << 20;
/// A request body sent in this many pieces, [`UPLOAD_PAUSE`] apart: the upload as a whole
/// takes longer than the handshake timeout.
const UPLOAD_PIECES: usize = 5;
const UPLOAD_PIECE_BYTES: usize = 32 * 1024;
const UPLOAD_PAUSE: Duration = Duration::from_millis(500);

/// Reads until EOF or an error; returns the bytes read.
async fn read_until_closed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await? {
            0 => return Ok(all),
            read => all.extend_from_slice(&buf[..read]),
        }
    }
}

/// A gateway in front of `backend` with a [`HANDSHAKE_TIMEOUT`].
fn with_handshake_timeout(backend: SocketAddr) -> GatewayBuilder {
    Gateway::builder()
        .backend(backend)
        .handshake_timeout_secs(HANDSHAKE_TIMEOUT.as_secs())
}

/// A backend that reads the request head and never answers; it reports how its connection
/// ended (the gateway must close it once the client got its 504).
async fn silent_backend() -> RawBackend<io::Result<Vec<u8>>> {
    RawBackend::start(|mut conn: RawConn| async move { read_until_closed(&mut conn.stream).await })
        .await
}

/// Sends `request` to the gateway, expects a 504 between the timeout and the timeout plus
/// slack, and returns the response head and body.
async fn expect_504(gateway: SocketAddr, request: &[u8]) -> (Head, String) {
    let started = Instant::now();
    let (head, body) = within(
        HANDSHAKE_TIMEOUT + SLACK,
        "the gateway answers a request its backend ignores",
        client::raw_request(gateway, request),
    )
    .await;
    let took = started.elapsed();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        head.status(),
        Some(504),
        "status; response:\n{}{body}",
        head.text()
    );
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(100),
        "504 after {took:?}, before the handshake timeout"
    );
    assert!(
        body.contains("did not answer in time") && body.trim_end().lines().count() == 1,
        "one-line body saying why: {body:?}"
    );
    (head, body)
}

/// The silent backend's connection is closed by the gateway after the 504: nothing leaks.
async fn backend_connection_closed(backend: &mut RawBackend<io::Result<Vec<u8>>>) {
    let ended = within(
        STEP_TIMEOUT,
        "the gateway closes its connection to the silent backend",
        backend.next_result(),
    )
    .await;
    match ended {
        Ok(bytes) => assert!(bytes.is_empty(), "backend got {} more bytes", bytes.len()),
        Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_backend_ignores_gets_504() {
    let mut backend = silent_backend().await;
    let gateway = with_handshake_timeout(backend.addr()).start();
    let addr = gateway.listen_addr();
    let request = http::upgrade_request(addr, "/ignored", &http::new_key());
    let (head, _) = expect_504(addr, &request).await;
    assert_eq!(head.header("upgrade"), None, "no upgrade on a 504");
    assert_eq!(backend.requests().len(), 1, "the backend got the upgrade");
    backend_connection_closed(&mut backend).await;
    // The log line may reach the pipe after the response: wait for it.
    gateway
        .logged("the gateway logs the timeout", |text| {
            text.contains("did not answer in time")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_backend_ignores_gets_504() {
    let mut backend = silent_backend().await;
    let gateway = with_handshake_timeout(backend.addr()).start();
    let addr = gateway.listen_addr();
    let request = format!("GET /ignored HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    expect_504(addr, request.as_bytes()).await;
    backend_connection_closed(&mut backend).await;
}

/// A client that sends half a request head and stalls is disconnected (or told 408) once
/// the handshake timeout has passed; the backend never hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_its_request_head_is_disconnected() {
    let backend = silent_backend().await;
    let gateway = with_handshake_timeout(backend.addr()).start();
    let addr = gateway.listen_addr();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    stream
        .write_all(format!("GET /slow-head HTTP/1.1\r\nHost: {addr}\r\nUpgrade: web").as_bytes())
        .await
        .expect("send half a head");
    let ended = within(
        HANDSHAKE_TIMEOUT + SLACK,
        "the gateway gives up on the half-sent head",
        read_until_closed(&mut stream),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(100),
        "closed after {took:?}, before the handshake timeout"
    );
    match ended {
        Ok(bytes) if bytes.is_empty() => {}
        Ok(bytes) => {
            let head = Head::parse(&bytes).unwrap_or_else(|why| {
                panic!("answer {:?}: {why}", String::from_utf8_lossy(&bytes))
            });
            assert_eq!(head.status(), Some(408), "answer:\n{}", head.text());
        }
        Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
    }
    assert_eq!(
        backend.connections_accepted(),
        0,
        "the backend never sees it"
    );
}

/// The backend's clock runs while it keeps the gateway waiting, not while the client
/// uploads: a body sent steadily over longer than the timeout, to a backend that answers
/// once it has all of it, gets the backend's answer, not a 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_a_handshake_timeout() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        let len: usize = conn
            .request
            .header("content-length")
            .expect("the upload has a Content-Length")
            .parse()
            .expect("Content-Length is a number");
        let mut body = conn.leftover.clone();
        let already = body.len();
        body.resize(len, 0);
        conn.stream
            .read_exact(&mut body[already..])
            .await
            .expect("backend reads the whole body");
        conn.answer_200(&Summary::of(&body).to_string()).await;
    })
    .await;
    let gateway = with_handshake_timeout(backend.addr()).start();
    let addr = gateway.listen_addr();
    let mut rng = seeded_rng("a_slow_upload_is_not_a_handshake_timeout");
    let body = random_bytes(&mut rng, UPLOAD_PIECES * UPLOAD_PIECE_BYTES);

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    for piece in body.chunks(UPLOAD_PIECE_BYTES) {
        // Pacing the upload is the point of the test, not a wait for readiness.
        tokio::time::sleep(UPLOAD_PAUSE).await;
        stream
            .write_all(piece)
            .await
            .expect("send a piece of the body");
    }
    let (head, leftover) = within(STEP_TIMEOUT, "the answer", http::read_head(&mut stream))
        .await
        .expect("read the answer");
    let answer = http::read_body(&mut stream, &head, leftover)
        .await
        .expect("read the answer's body");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(head.status(), Some(200), "answer:\n{}{answer}", head.text());
    assert_eq!(
        answer,
        Summary::of(&body).to_string(),
        "the backend got the whole body"
    );
}

/// The timeout covers the handshake only: a tunnel idle for longer than it still carries
/// bytes afterwards.
async fn an_open_tunnel_outlives_the_handshake_timeout(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut rng = seeded_rng(test);
    let mut backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept_upgrade().await;
        conn.echo_to_eof().await.expect("backend echoes to EOF")
    })
    .await;
    let gateway = with_handshake_timeout(backend.addr())
        .dataplane(dataplane)
        .start();
    let mut tunnel = client::raw_upgrade(gateway.listen_addr(), "/idle", &[]).await;
    within(
        STEP_TIMEOUT,
        "the tunnel opens",
        tunnels::wait_opened(&gateway, dataplane, 1.0),
    )
    .await;
    // The property under test is about time passing, not readiness.
    tokio::time::sleep(HANDSHAKE_TIMEOUT * 2).await;

    let payload = random_bytes(&mut rng, TUNNEL_BYTES);
    let ((), echoed) = within(
        STEP_TIMEOUT,
        "bytes after the idle period",
        tunnel.while_reading_to_eof(async |writer| {
            writer.write_all(&payload).await.expect("client sends");
            writer.shutdown().await.expect("client half-closes");
        }),
    )
    .await;
    let backend_echoed = backend.next_result().await;
    assert_eq!(
        backend_echoed,
        Summary::of(&payload),
        "backend got every byte"
    );
    assert_eq!(echoed, Summary::of(&payload), "client got every byte back");
    if dataplane == Dataplane::Ebpf {
        assert_spliced(&gateway, "client_to_backend", TUNNEL_BYTES as u64);
        assert_spliced(&gateway, "backend_to_client", TUNNEL_BYTES as u64);
    }
}

dataplane_tests!(an_open_tunnel_outlives_the_handshake_timeout => an_open_tunnel_outlives_the_handshake_timeout_ebpf, an_open_tunnel_outlives_the_handshake_timeout_userspace);
