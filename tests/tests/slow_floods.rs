//! Legitimate traffic while slow clients flood the gateway: 300 readers that stopped
//! reading 1 MiB answers and 300 uploaders trickling their bodies, all held open, while
//! ordinary requests and WebSocket echoes go through; at least 99 % of them must succeed,
//! the uploaders must hold no backend connection, and the gateway's memory stays bounded.

use std::{
    io::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use gateway_tests::{
    data::{seeded_rng, Summary},
    http_backend::HttpBackend,
    http_client::{ws_connect_as, ws_echo_exchange, KeepAlive},
    process::rss_bytes,
    slow::{connect_small_window, read_answer_head, send_get, Framing},
    wait::eventually,
    Gateway,
};
use tokio::{io::AsyncWriteExt as _, net::TcpStream, task::JoinSet};

const READERS: usize = 300;
const READER_ANSWER_BYTES: u64 = 1 << 20;
const UPLOADERS: usize = 300;
/// What each uploader sends at once; then one byte at a time.
const UPLOAD_FIRST_BYTES: usize = 1000;
const UPLOAD_BYTES: usize = 100_000;
const TRICKLE_PAUSE: Duration = Duration::from_millis(500);
const REQUESTS: usize = 200;
const ECHOES: usize = 100;
/// Legitimate exchanges in flight at once.
const CONCURRENCY: usize = 10;
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per slow client (reader or uploader), at most: see `slow_readers.rs`; an uploader holds
/// its connection and the bytes it sent.
const MEMORY_PER_SLOW_CLIENT_MAX_BYTES: u64 = 64 << 10;
const BUFFERED: &str = "gateway_request_buffered_bytes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_traffic_is_served_during_slow_read_and_slow_body_floods() {
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let addr = gateway.listen_addr();
    let baseline = rss_bytes(gateway.pid());

    // The slow readers: all ask at once, read their answer's head, and stop.
    let mut readers = Vec::with_capacity(READERS);
    for i in 0..READERS {
        let mut reader = connect_small_window(addr).await;
        send_get(&mut reader, "/large", READER_ANSWER_BYTES, i as u64).await;
        readers.push(reader);
    }
    for reader in &mut readers {
        let (head, _) = read_answer_head(reader).await;
        assert_eq!(head.status(), Some(200), "{}", head.text());
    }
    let accepted = backend.connections_accepted();

    // The slow uploaders: a head and 1000 bytes each, then a byte every 500 ms.
    let mut uploaders = Vec::with_capacity(UPLOADERS);
    for i in 0..UPLOADERS {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request = Framing::ContentLength
            .head(&format!("/upload/{i}"), UPLOAD_BYTES)
            .into_bytes();
        request.extend_from_slice(&[b'u'; UPLOAD_FIRST_BYTES]);
        stream.write_all(&request).await.expect("send");
        uploaders.push(stream);
    }
    let trickling = Arc::new(AtomicBool::new(true));
    let trickler = tokio::spawn(trickle(uploaders, trickling.clone()));
    eventually(EXCHANGE_TIMEOUT, "the gateway holds the uploads", || {
        let held = (UPLOADERS * UPLOAD_FIRST_BYTES) as f64;
        match gateway.metrics().metric(BUFFERED, &[]) {
            buffered if buffered >= held => Ok(()),
            buffered => Err(format!("{BUFFERED} = {buffered}")),
        }
    })
    .await;

    // Legitimate traffic through the flood.
    let mut exchanges = JoinSet::new();
    let mut outcomes = Vec::new();
    for i in 0..REQUESTS + ECHOES {
        if exchanges.len() == CONCURRENCY {
            outcomes.push(exchanges.join_next().await.expect("an exchange"));
        }
        exchanges.spawn(tokio::time::timeout(EXCHANGE_TIMEOUT, async move {
            if i < REQUESTS {
                request(addr, i).await;
            } else {
                echo(addr, i).await;
            }
        }));
    }
    while let Some(outcome) = exchanges.join_next().await {
        outcomes.push(outcome);
    }
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some("timed out".to_owned()),
            Err(error) => Some(error.to_string()),
        })
        .collect();
    let peak = rss_bytes(gateway.pid());
    let slow = (READERS + UPLOADERS) as u64;
    let _ = writeln!(
        std::io::stderr(),
        "slow floods: {} of {} legitimate exchanges failed; RSS {} KiB -> {} KiB with {READERS} \
         stalled readers and {UPLOADERS} trickling uploaders, {} KiB each",
        failures.len(),
        outcomes.len(),
        baseline >> 10,
        peak >> 10,
        (peak.saturating_sub(baseline) / slow) >> 10
    );
    assert!(
        failures.len() * 100 <= outcomes.len(),
        "{} of {} legitimate exchanges failed: {failures:?}",
        failures.len(),
        outcomes.len()
    );
    // The uploads opened no backend connection; the legitimate requests may have.
    let legitimate = backend
        .seen()
        .iter()
        .filter(|seen| !seen.head.path().starts_with("/large"))
        .count();
    assert!(
        backend.connections_accepted() <= accepted + legitimate,
        "{} backend connections: {accepted} for the readers, at most {legitimate} for the \
         legitimate traffic, none for the uploads",
        backend.connections_accepted()
    );
    assert!(
        backend
            .seen()
            .iter()
            .all(|seen| !seen.head.path().starts_with("/upload")),
        "an upload reached the backend"
    );
    assert!(
        peak.saturating_sub(baseline) <= slow * MEMORY_PER_SLOW_CLIENT_MAX_BYTES,
        "{} KiB of gateway memory for {slow} slow clients",
        peak.saturating_sub(baseline) >> 10
    );
    trickling.store(false, Ordering::Relaxed);
    trickler.await.expect("the trickler");
    drop(readers);
}

/// Sends each uploader one more byte every [`TRICKLE_PAUSE`] until told to stop.
async fn trickle(mut uploaders: Vec<TcpStream>, trickling: Arc<AtomicBool>) {
    while trickling.load(Ordering::Relaxed) {
        for stream in &mut uploaders {
            // A failed write only ends this uploader; the test checks the gateway.
            let _ = stream.write_all(b"u").await;
        }
        // Trickling is the attack's pace, not a wait for readiness.
        tokio::time::sleep(TRICKLE_PAUSE).await;
    }
}

/// One ordinary request on a fresh connection: 4 KiB back, checked byte for byte.
async fn request(addr: std::net::SocketAddr, i: usize) {
    let mut client = KeepAlive::connect(addr).await;
    let path = format!("/legit/{i}");
    let reply = client
        .send(
            "GET",
            &path,
            "x.test",
            &[("X-Reply-Bytes", "4096"), ("Connection", "close")],
            b"",
        )
        .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(
        reply.header("x-reply-body"),
        Some(Summary::of(&reply.body).to_string().as_str()),
        "the answer's bytes"
    );
}

/// One WebSocket: 16 KiB echoed, checked at both ends.
async fn echo(addr: std::net::SocketAddr, i: usize) {
    let (ws, _) = ws_connect_as(addr, "x.test", &format!("/ws/{i}"), None).await;
    let mut rng = seeded_rng(&format!("slow_floods_echo_{i}"));
    let (sent, received) = ws_echo_exchange(ws, &mut rng, 16 << 10).await;
    assert_eq!(sent, received, "the echo");
}
