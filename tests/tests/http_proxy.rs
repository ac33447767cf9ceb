//! Ordinary HTTP through the pooled client: keep-alive on both sides (the backend sees
//! fewer connections than requests), the settings' `request_timeout_secs` (a backend slower
//! than it gets the client a `504`; a tunnel is not subject to it), and backends that fail
//! (`502` with a one-line body naming the category: connect refused, connection closed,
//! protocol error).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use gateway_tests::{
    backend::{RawBackend, RawConn},
    config::{Config, ConfigFile, Listener, Rule, Settings},
    data::seeded_rng,
    http_backend::HttpBackend,
    http_client::{ws_connect_as, ws_echo_exchange, KeepAlive, Reply},
    ports::ReservedPort,
    skip_unprivileged, tunnels,
    wait::within,
    Dataplane, Gateway,
};
use tokio::io::AsyncWriteExt as _;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT_SECS: u64 = 1;
/// How long after the timeout the gateway may take to answer.
const SLACK: Duration = Duration::from_secs(4);

/// One listener, a basic rule to a pool of `backend`, with `request_timeout_secs`.
fn config(backend: SocketAddr, request_timeout_secs: u64) -> Config {
    Config::new()
        .listener(Listener::http("web", "127.0.0.1:0"))
        .pool("pool", [backend])
        .settings(Settings::http("s", 80).request_timeout_secs(request_timeout_secs))
        .rule(Rule::basic("all", "web", "pool", "s"))
}

fn start(test: &str, backend: SocketAddr, dataplane: Dataplane) -> (Gateway, ConfigFile) {
    let config = ConfigFile::new(test, &config(backend, REQUEST_TIMEOUT_SECS));
    let gateway = Gateway::builder()
        .config(config.path())
        .dataplane(dataplane)
        .start();
    (gateway, config)
}

fn body_text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_kept_alive_and_reused() {
    let backend = HttpBackend::start("web").await;
    let (gateway, _dir) = start("keep_alive", backend.addr(), Dataplane::Userspace);
    let addr = gateway.listen_addr();

    // 20 requests on one client connection.
    let mut client = KeepAlive::connect(addr).await;
    for i in 0..20 {
        let reply = client
            .send("GET", &format!("/{i}"), "app.test", &[], &[])
            .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
    }
    // 10 more, one client connection each, one after the other.
    for i in 0..10 {
        let reply = KeepAlive::connect(addr)
            .await
            .send(
                "GET",
                &format!("/fresh/{i}"),
                "app.test",
                &[("Connection", "close")],
                &[],
            )
            .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 30);
    let connections = backend.connections_accepted();
    assert!(
        connections <= 2,
        "30 sequential requests took {connections} backend connections"
    );
    // The client's `Connection: close` is hop-by-hop: the backend never sees it.
    assert!(seen.iter().all(|s| s.head.header("connection").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slower_than_the_request_timeout_gets_504() {
    let backend = HttpBackend::start("slow").await;
    let (gateway, _dir) = start("request_timeout", backend.addr(), Dataplane::Userspace);
    let mut client = KeepAlive::connect(gateway.listen_addr()).await;
    let started = Instant::now();
    let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
    let reply = within(
        timeout + SLACK,
        "the answer to a request the backend is slow with",
        client.send("GET", "/slow", "app.test", &[("X-Delay-Ms", "3000")], &[]),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(reply.status(), Some(504), "{}", reply.text());
    assert!(
        took >= timeout - Duration::from_millis(100),
        "504 after {took:?}"
    );
    assert_eq!(
        body_text(&reply),
        "gateway timeout: the backend did not answer in time (request timeout 1s)"
    );
    // The client connection is still good, and a quick answer is not cut.
    let reply = client.send("GET", "/quick", "app.test", &[], &[]).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
}

async fn check_502(backend: SocketAddr, test: &str, category: &str) -> Gateway {
    let (gateway, _dir) = start(test, backend, Dataplane::Userspace);
    let addr = gateway.listen_addr();
    let reply = within(
        STEP_TIMEOUT,
        "the answer for a failing backend",
        KeepAlive::connect(addr)
            .await
            .send("GET", "/", "app.test", &[], &[]),
    )
    .await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text());
    assert_eq!(
        body_text(&reply),
        format!("bad gateway: backend {category}")
    );
    // An upgrade fails the same way.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let upgrade =
        gateway_tests::http::upgrade_request(addr, "/ws", &gateway_tests::http::new_key());
    stream.write_all(&upgrade).await.expect("send the upgrade");
    let (head, _) = gateway_tests::http::read_head(&mut stream)
        .await
        .expect("answer");
    assert_eq!(head.status(), Some(502), "{}", head.text());
    gateway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_gets_502_connect_refused() {
    // Bound but not listening, for the whole test: connects are refused, and no other test
    // can start listening there meanwhile.
    let dead = ReservedPort::new();
    let gateway = check_502(dead.addr(), "dead_backend", "connect refused").await;
    gateway
        .logged("connect refused is logged", |stderr| {
            stderr.contains("connect refused")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_hanging_up_gets_502_connection_closed() {
    let backend = RawBackend::start(|conn: RawConn| async move { drop(conn) }).await;
    check_502(
        backend.addr(),
        "hang_up",
        "connection closed before the answer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_garbage_gets_502_protocol_error() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        let _ = conn.stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    })
    .await;
    check_502(backend.addr(), "garbage", "protocol error").await;
}

/// `request_timeout_secs` bounds the wait for the `101`, not the tunnel: one idle for
/// longer than it still carries bytes.
async fn a_tunnel_outlives_the_request_timeout(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let backend = HttpBackend::start("ws").await;
    let (gateway, _dir) = start(test, backend.addr(), dataplane);
    let (ws, _) = ws_connect_as(gateway.listen_addr(), "app.test", "/idle", None).await;
    // The property under test is about time passing, not readiness.
    tokio::time::sleep(Duration::from_secs(REQUEST_TIMEOUT_SECS) * 2).await;
    let mut rng = seeded_rng(test);
    let (sent, received) = within(
        STEP_TIMEOUT,
        "bytes after the idle period",
        ws_echo_exchange(ws, &mut rng, 1 << 20),
    )
    .await;
    assert_eq!(received, sent);
    assert_eq!(backend.next_ws_record().await.received, sent);
    assert_eq!(tunnels::opened(&gateway, dataplane.tunnel_mode()), 1.0);
}

gateway_tests::dataplane_tests!(a_tunnel_outlives_the_request_timeout => a_tunnel_outlives_the_request_timeout_ebpf, a_tunnel_outlives_the_request_timeout_userspace);
