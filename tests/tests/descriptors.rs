//! Out of descriptors (`RLIMIT_NOFILE`, set low for the daemon, soft and hard, so it cannot
//! raise it): the accept loops back off instead of spinning, a new client gets a `503` on
//! the reserve descriptor, the admin listener still serves `/metrics`, and once
//! descriptors are free again clients are served.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use gateway_tests::{
    admission::{expect_refusal, read_until_closed},
    http_backend::HttpBackend,
    http_client::KeepAlive,
    maps,
    metrics::Metrics,
    process::cpu_time,
    wait::{eventually, within},
    Gateway,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// The daemon's descriptor limit: room for its own (about 30) and a hundred-odd clients.
const NOFILE: u64 = 200;
/// Most idle connections opened to fill it.
const MAX_IDLE: usize = NOFILE as usize;
/// How long a connection may take to be accepted (seen in the daemon's descriptors) or
/// answered before the fill counts it as neither.
const ACCEPT_WAIT: Duration = Duration::from_secs(2);
/// The window over which the daemon's CPU time is read while connects wait on the admin
/// listener.
const CPU_WINDOW: Duration = Duration::from_secs(2);
/// The share of [`CPU_WINDOW`] the daemon may use then. A loop retrying `EMFILE` without a
/// pause burns a whole core (100 %); backing off from 5 ms to 1 s costs a few wake-ups.
const CPU_SHARE_MAX: f64 = 0.2;
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection opened to fill the descriptors fared.
enum Fill {
    /// The daemon holds it (one more descriptor).
    Held,
    /// It got bytes, or was closed.
    Answered,
    /// Neither within [`ACCEPT_WAIT`]: it waits in the accept queue.
    Waiting,
}

/// Whether `stream` has bytes or an EOF to read now.
async fn answered(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut byte))
        .await
        .is_ok()
}

/// Opens one connection and waits until the daemon holds it or answers it.
async fn fill_one(gateway: &Gateway, addr: SocketAddr) -> (TcpStream, Fill) {
    let before = gateway.fd_count();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    loop {
        if gateway.fd_count() > before {
            return (stream, Fill::Held);
        }
        if answered(&stream).await {
            return (stream, Fill::Answered);
        }
        if started.elapsed() > ACCEPT_WAIT {
            return (stream, Fill::Waiting);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_it_backs_off_answers_503_and_serves_metrics() {
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .nofile_limit(NOFILE)
        // Descriptors, not the connection limit derived from them, are what runs out here.
        .arg("--max-connections")
        .arg("100000")
        .start();
    let addr = gateway.listen_addr();
    let admin = gateway.admin_addr();
    let pid = gateway.pid();
    let baseline = gateway.fd_count();

    // Fill the daemon's descriptors with idle connections, until one is not held.
    let mut idle = Vec::new();
    let (mut last, fill) = loop {
        let (stream, fill) = fill_one(&gateway, addr).await;
        match fill {
            Fill::Held if idle.len() < MAX_IDLE => idle.push(stream),
            _ => break (stream, fill),
        }
    };
    assert!(
        !idle.is_empty() && idle.len() < MAX_IDLE,
        "{} idle connections held with RLIMIT_NOFILE {NOFILE}",
        idle.len()
    );
    eprintln!(
        "{} idle connections fill the daemon's descriptors ({} open)",
        idle.len(),
        gateway.fd_count()
    );

    // Connects wait on the admin listener (the first may be taken on its reserve
    // descriptor, which the silent connection keeps): the daemon must not spin on them.
    let silent = TcpStream::connect(admin).await.expect("connect to admin");
    let mut waiting = TcpStream::connect(admin).await.expect("connect to admin");
    let cpu_before = cpu_time(pid);
    let wall = Instant::now();
    tokio::time::sleep(CPU_WINDOW).await;
    let used = cpu_time(pid).saturating_sub(cpu_before);
    let share = used.as_secs_f64() / wall.elapsed().as_secs_f64();
    eprintln!("the daemon used {used:?} of CPU over {:?}", wall.elapsed());
    assert!(
        share < CPU_SHARE_MAX,
        "the daemon used {used:?} of CPU in {:?} with connects waiting: it spins on EMFILE",
        wall.elapsed()
    );

    // The reserve comes back when the silent connection closes; the waiting one is then
    // served, one request on it.
    drop(silent);
    waiting
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes())
        .await
        .expect("send GET /metrics");
    let mut page = Vec::new();
    within(
        STEP_TIMEOUT,
        "/metrics answers out of descriptors",
        waiting.read_to_end(&mut page),
    )
    .await
    .expect("read /metrics");
    let page = String::from_utf8_lossy(&page);
    let (head, body) = page.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let metrics = Metrics::parse(body);
    for socket in ["client", "admin"] {
        let emfile = metrics.metric(
            "gateway_accept_errors_total",
            &[("socket", socket), ("kind", "emfile")],
        );
        assert!(emfile >= 1.0, "{socket}: {emfile} EMFILE counted");
    }

    // The client that was not held got a 503 on the reserve descriptor.
    assert!(
        matches!(fill, Fill::Answered),
        "the connection past the descriptor limit got no answer in {ACCEPT_WAIT:?}"
    );
    let refusal = read_until_closed(&mut last, STEP_TIMEOUT).await;
    expect_refusal(&refusal, "connection limit");
    let refused = metrics.metric(
        "gateway_connections_refused_total",
        &[("reason", "no_descriptors")],
    );
    assert!(refused >= 1.0, "{refused} refused for want of descriptors");

    // Descriptors free again: a client is served, and its bytes come back whole.
    drop(idle);
    eventually(STEP_TIMEOUT, "the idle connections are closed", || {
        let open = maps::fd_count(pid);
        (open <= baseline)
            .then_some(())
            .ok_or(format!("{open} descriptors, {baseline} at start"))
    })
    .await;
    let mut client = KeepAlive::connect(addr).await;
    let reply = within(
        STEP_TIMEOUT,
        "a request once descriptors are free",
        client.send("POST", "/after", "x.test", &[], b"hello"),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.header("x-backend"), Some("app"));
    let seen = backend.seen();
    assert_eq!(seen.last().map(|s| s.head.path()), Some("/after"));
    assert_eq!(
        seen.last().map(|s| s.body),
        Some(gateway_tests::data::Summary::of(b"hello"))
    );
}
