//! Clients that stop reading a large answer (slowhttptest's slow-read attack): the gateway
//! drops them after the send timeout (the time between two writes that move bytes), stops
//! reading the backend meanwhile, and holds little memory for each one.

use std::{io::Write as _, net::SocketAddr, time::Duration};

use gateway_tests::{
    bulk_backend::BulkBackend,
    config::{Config, Listener, Rule, Settings},
    http::{self, Head},
    oneshot::ScratchDir,
    pattern::Pattern,
    process::rss_bytes,
    slow::{connect_small_window, get_head, read_answer_head, send_get, SMALL_RCVBUF_BYTES},
    tls::{self, Ca, HTTP11},
    wait::{eventually, within},
    Gateway,
};
use rustls::version::TLS13;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

const SEND_TIMEOUT_SECS: u64 = 1;
/// Far more than the kernel buffers between the backend and the client can hold.
const LARGE_ANSWER_BYTES: u64 = 256 << 20;
/// What the sockets between the backend and the client may hold at most (the backend's
/// send buffer, up to `tcp_wmem`'s 4 MiB, the gateway's receive buffer, autotuned up to
/// `tcp_rmem`'s maximum, 32 MiB on the test machines, and its send buffer, up to 4 MiB),
/// with room to spare: the backend must not get further than this.
const BACKEND_WRITTEN_MAX_BYTES: u64 = 64 << 20;
/// How long the gateway may take to notice a stalled reader, with margin: 1 s of send
/// timeout.
const DROP_TIMEOUT: Duration = Duration::from_secs(20);
const SEND_TIMEOUTS: &str = "gateway_response_send_timeouts_total";

/// Waits until the gateway has dropped `count` clients for the send timeout and the backend
/// has seen `count` answers cut short, then checks the backend was not read further than
/// the sockets between it and the client can hold.
async fn wait_dropped(gateway: &Gateway, backend: &BulkBackend, count: usize) {
    eventually(DROP_TIMEOUT, "the gateway drops the reader", || {
        let dropped = gateway.metrics().metric(SEND_TIMEOUTS, &[]);
        if dropped == count as f64 {
            Ok(())
        } else {
            Err(format!("{SEND_TIMEOUTS} = {dropped}"))
        }
    })
    .await;
    eventually(
        DROP_TIMEOUT,
        "the backend's answer is cut",
        || match backend.answers_cut() {
            cut if cut == count => Ok(()),
            cut => Err(format!("{cut} answers cut")),
        },
    )
    .await;
    let written = backend.bytes_written();
    assert!(
        written <= BACKEND_WRITTEN_MAX_BYTES,
        "the backend wrote {written} bytes for a client that stopped reading: the gateway \
         kept reading it"
    );
    assert_eq!(backend.answers_completed(), 0);
}

/// Reads what is left of an answer after the gateway dropped its reader: the beginning of
/// the answer, every byte in place, then the end of the connection, well before the end
/// of the answer.
async fn read_the_rest(stream: &mut (impl AsyncRead + Unpin), first: &[u8], seed: u64) {
    let mut checker = Pattern::new(seed).checker();
    checker
        .check(first)
        .expect("the first bytes are the answer's");
    let mut buf = vec![0; 64 * 1024];
    let ended = within(DROP_TIMEOUT, "the dropped connection ends", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break "EOF".to_owned(),
                Ok(n) => checker
                    .check(&buf[..n])
                    .expect("bytes of the answer, in order"),
                Err(error) => break format!("{error}"),
            }
        }
    })
    .await;
    assert!(
        checker.offset() < LARGE_ANSWER_BYTES,
        "the whole answer arrived ({ended}): the reader was not dropped"
    );
}

/// A plain client reads the head and a little of a 256 MiB answer, then stops: after the
/// 1 s send timeout its connection is closed (logged and counted), the backend's
/// connection with it, and the backend never got far ahead of the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let backend = BulkBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .arg("--response-send-timeout-secs")
        .arg(SEND_TIMEOUT_SECS.to_string())
        .start();
    let seed = 7;
    let mut client = connect_small_window(gateway.listen_addr()).await;
    let (head, first) = get_head(&mut client, "/large", LARGE_ANSWER_BYTES, seed).await;
    assert_eq!(head.status(), Some(200), "{}", head.text());
    assert_eq!(
        head.header("content-length"),
        Some(LARGE_ANSWER_BYTES.to_string().as_str())
    );
    // From here on the client reads nothing.
    wait_dropped(&gateway, &backend, 1).await;
    gateway
        .logged("the drop is logged", |log| {
            log.contains("took no response bytes within the send timeout; connection reset")
        })
        .await;
    read_the_rest(&mut client, &first, seed).await;
}

/// A client that reads slowly but steadily (its small window every 250 ms, about 3 s for
/// the whole answer)
/// is not dropped: the send timeout runs between two writes that move bytes, not over the
/// whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_gets_the_whole_answer() {
    const ANSWER_BYTES: u64 = 96 << 10;
    const READ_BYTES: usize = 16 << 10;
    const READ_PAUSE: Duration = Duration::from_millis(250);
    let backend = BulkBackend::start().await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .arg("--response-send-timeout-secs")
        .arg(SEND_TIMEOUT_SECS.to_string())
        .start();
    let seed = 3;
    let mut client = connect_small_window(gateway.listen_addr()).await;
    let (head, first) = get_head(&mut client, "/steady", ANSWER_BYTES, seed).await;
    assert_eq!(head.status(), Some(200), "{}", head.text());
    let mut checker = Pattern::new(seed).checker();
    checker.check(&first).expect("the answer's bytes");
    let mut buf = vec![0; READ_BYTES];
    while checker.offset() < ANSWER_BYTES {
        // Pacing the reads is the point of the test, not a wait for readiness.
        tokio::time::sleep(READ_PAUSE).await;
        let n = within(DROP_TIMEOUT, "a read", client.read(&mut buf))
            .await
            .expect("read the answer");
        assert!(n > 0, "the answer ended after {} bytes", checker.offset());
        checker
            .check(&buf[..n])
            .expect("the answer's bytes, in order");
    }
    assert_eq!(gateway.metrics().metric(SEND_TIMEOUTS, &[]), 0.0);
    assert_eq!(backend.answers_completed(), 1);
}

/// The same over TLS: the gateway's TLS session holds what the socket does not take, and
/// the send timeout still closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let backend = BulkBackend::start().await;
    let ca = Ca::new("listener CA");
    let leaf = ca.leaf(&["www.example.com"]);
    let dir = ScratchDir::new("a_tls_client_that_stops_reading");
    let (certificate, key) = leaf.write(&dir, "www");
    let config = Config::new()
        .listener(Listener::https("www", "127.0.0.1:0", certificate, key))
        .pool("pool", [backend.addr()])
        .settings(Settings::http("plain", 80))
        .rule(Rule::basic("rule", "www", "pool", "plain"))
        .write(&dir);
    let gateway = Gateway::builder()
        .config(config)
        .arg("--response-send-timeout-secs")
        .arg(SEND_TIMEOUT_SECS.to_string())
        .start();
    let seed = 11;
    let tcp = connect_small_window(gateway.listen_addr()).await;
    let config = tls::client_config(ca.roots(), &[&TLS13], &[HTTP11]);
    let mut client = tokio_rustls::TlsConnector::from(config)
        .connect(tls::server_name("www.example.com"), tcp)
        .await
        .expect("TLS handshake with the gateway");
    let (head, first) = tls_get_head(&mut client, LARGE_ANSWER_BYTES, seed).await;
    assert_eq!(head.status(), Some(200), "{}", head.text());
    wait_dropped(&gateway, &backend, 1).await;
    read_the_rest(&mut client, &first, seed).await;
}

async fn tls_get_head(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    reply_bytes: u64,
    seed: u64,
) -> (Head, Vec<u8>) {
    let request = format!(
        "GET /large HTTP/1.1\r\nHost: www.example.com\r\nX-Reply-Bytes: {reply_bytes}\r\n\
         X-Seed: {seed}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    within(DROP_TIMEOUT, "the answer's head", http::read_head(stream))
        .await
        .expect("read the answer's head")
}

/// Stalled readers of a 1 MiB answer each, as in the attack the issue measured.
const READERS: usize = 300;
const READER_ANSWER_BYTES: u64 = 1 << 20;
/// The gateway's resident memory per stalled reader, at most: its connection and the
/// backend's (about 18 KiB for any open keep-alive pair) and one piece of the answer
/// (16 KiB at most) with the buffer it was read into. It was 120–170 KiB here (246 KiB
/// in the release build), growing with the answer's size past 1 MiB.
const MEMORY_PER_READER_MAX_BYTES: u64 = 64 << 10;

/// 300 clients ask for 1 MiB each and read nothing past the head: the gateway's resident
/// memory grows by at most 64 KiB per reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_cost_a_bounded_amount_of_memory() {
    let backend = BulkBackend::start().await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let addr = gateway.listen_addr();
    warm_up(addr).await;
    let baseline = rss_bytes(gateway.pid());

    // All ask at once, as an attacker does; then each reads its answer's head, and stops.
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
    settle(&backend, READERS).await;
    // The most seen over a few samples: memory only grows while the readers stall.
    let mut peak = 0;
    for _ in 0..5 {
        peak = peak.max(rss_bytes(gateway.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let per_reader = peak.saturating_sub(baseline) / READERS as u64;
    let _ = writeln!(
        std::io::stderr(),
        "stalled readers: {READERS} x {READER_ANSWER_BYTES} B answers, {SMALL_RCVBUF_BYTES} B \
         receive buffers: RSS {} KiB -> {} KiB, {} KiB per reader; the backend wrote {} KiB",
        baseline >> 10,
        peak >> 10,
        per_reader >> 10,
        backend.bytes_written() >> 10
    );
    assert!(
        per_reader <= MEMORY_PER_READER_MAX_BYTES,
        "{} KiB of gateway memory per stalled reader (at most {} KiB)",
        per_reader >> 10,
        MEMORY_PER_READER_MAX_BYTES >> 10
    );
    drop(readers);
}

/// One whole answer, read to its end: what the first request allocates once is then in
/// the baseline.
async fn warm_up(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (head, first) = get_head(&mut stream, "/warm-up", READER_ANSWER_BYTES, 0).await;
    assert_eq!(head.status(), Some(200), "{}", head.text());
    let mut checker = Pattern::new(0).checker();
    checker.check(&first).expect("the answer's bytes");
    let mut buf = vec![0; 64 * 1024];
    while checker.offset() < READER_ANSWER_BYTES {
        let n = stream.read(&mut buf).await.expect("read the answer");
        assert!(n > 0, "the answer ended early");
        checker.check(&buf[..n]).expect("the answer's bytes");
    }
}

/// Waits until the backend has written every answer, or wrote nothing more for a second
/// (the sockets are full): the readers' connections then hold what they will hold.
async fn settle(backend: &BulkBackend, answers: usize) {
    let mut last = backend.bytes_written();
    let mut still = 0;
    within(Duration::from_secs(30), "the backend settles", async {
        while backend.answers_completed() < answers + 1 && still < 4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let written = backend.bytes_written();
            still = if written == last { still + 1 } else { 0 };
            last = written;
        }
    })
    .await;
}
