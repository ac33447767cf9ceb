//! Connection limits, the upgrade rate and the accept queue, against the real daemon:
//!
//! - `max_connections`: all client connections, tunnels included; past it a `503` with
//!   `Retry-After` and a close (an https client: a close, no handshake);
//! - `max_connections_per_ip`: the same per client address;
//! - `upgrades_per_ip_per_sec` / `upgrade_burst_per_ip`: a `429` with `Retry-After`, and
//!   the connection goes on;
//! - `listen_backlog`: the listening socket's backlog as the kernel reports it (`ss`),
//!   changed by a reload on a bind the reload keeps.
//!
//! Clients come from several loopback addresses (127.0.0.0/8 is all local), each a client
//! of its own to the per-client limits.

use std::{net::SocketAddr, process::Command, time::Duration};

use gateway_tests::{
    admission::{connect_from, expect_refusal, loopback, read_until_closed},
    config::{Config, ConfigFile, Global, Listener, Rule, Settings},
    data::seeded_rng,
    http,
    http_backend::HttpBackend,
    http_client::{ws_echo_exchange, ws_upgrade, KeepAlive},
    oneshot::ScratchDir,
    reload::post_reload,
    tls::{self, Ca},
    wait::{eventually, within},
    Gateway,
};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes echoed through a tunnel to check it carries them.
const ECHO_BYTES: usize = 100_000;

fn metric(gateway: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    gateway.metrics().metric(name, labels)
}

/// Waits until the daemon counts `n` open client connections.
async fn open_connections(gateway: &Gateway, n: u64) {
    eventually(
        STEP_TIMEOUT,
        &format!("{n} client connections open"),
        || {
            let open = metric(gateway, "gateway_client_connections", &[]);
            (open == n as f64)
                .then_some(())
                .ok_or(format!("{open} open"))
        },
    )
    .await;
}

/// `GET path` from `from` on a fresh connection: a `200` from the backend `app`.
async fn served_from(gateway: &Gateway, from: u8, path: &str) {
    let stream = connect_from(loopback(from), gateway.listen_addr()).await;
    let mut client = KeepAlive::over(stream);
    let reply = within(
        STEP_TIMEOUT,
        "a request",
        client.send("GET", path, "x.test", &[("Connection", "close")], b""),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.header("x-backend"), Some("app"), "{}", reply.text());
}

/// The refusal a new connection from `from` gets.
async fn refused_from(gateway: &Gateway, from: u8, words: &str) {
    let mut stream = connect_from(loopback(from), gateway.listen_addr()).await;
    let bytes = read_until_closed(&mut stream, STEP_TIMEOUT).await;
    expect_refusal(&bytes, words);
}

/// Sends random bytes through a WebSocket and checks every one comes back.
async fn echoes(ws: tokio_tungstenite::WebSocketStream<TcpStream>, test: &str) {
    let (sent, received) = within(
        STEP_TIMEOUT,
        "a WebSocket echo",
        ws_echo_exchange(ws, &mut seeded_rng(test), ECHO_BYTES),
    )
    .await;
    assert_eq!(sent, received, "the echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_a_client_gets_503_and_a_tunnel_counts() {
    let test = "over_max_connections_a_client_gets_503_and_a_tunnel_counts";
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .arg("--max-connections")
        .arg("3")
        .start();
    let addr = gateway.listen_addr();
    // A tunnel and two idle connections, each from an address of its own.
    let (ws, _) = ws_upgrade(connect_from(loopback(1), addr).await, "x.test", "/ws", &[]).await;
    let idle = [
        connect_from(loopback(2), addr).await,
        connect_from(loopback(3), addr).await,
    ];
    open_connections(&gateway, 3).await;

    refused_from(&gateway, 4, "connection limit").await;
    assert_eq!(
        metric(
            &gateway,
            "gateway_connections_refused_total",
            &[("reason", "global_limit")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &gateway,
            "gateway_connections_refused_total",
            &[("reason", "per_ip_limit")]
        ),
        0.0
    );
    // At the limit, the tunnel still carries bytes; once it is closed there is room.
    echoes(ws, test).await;
    open_connections(&gateway, 2).await;
    served_from(&gateway, 4, "/after-the-tunnel").await;
    drop(idle);
    open_connections(&gateway, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_an_https_client_is_closed_without_a_handshake() {
    let backend = HttpBackend::start("app").await;
    let ca = Ca::new("listener CA");
    let dir = ScratchDir::new("over_max_connections_an_https_client_is_closed");
    let (certificate, key) = ca.leaf(&["www.example.com"]).write(&dir, "www");
    let config = Config::new()
        .listener(Listener::https("www", "127.0.0.1:0", certificate, key))
        .pool("app", [backend.addr()])
        .settings(Settings::http("plain", 80))
        .rule(Rule::basic("www", "www", "app", "plain"));
    let config = ConfigFile::in_dir(dir, &config);
    let gateway = Gateway::builder()
        .config(config.path())
        .arg("--max-connections")
        .arg("1")
        .start();
    let addr = gateway.listen_addr();
    let client = ca.client();
    let held = within(
        STEP_TIMEOUT,
        "TLS handshake",
        tls::connect(addr, &client, "www.example.com"),
    )
    .await
    .expect("the first client's handshake");
    let mut held = KeepAlive::over(held);
    let reply = within(
        STEP_TIMEOUT,
        "a request over TLS",
        held.send("GET", "/", "www.example.com", &[], b""),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());

    // The next one: closed before any byte, whatever it sends.
    let mut over = TcpStream::connect(addr).await.expect("connect");
    let bytes = read_until_closed(&mut over, STEP_TIMEOUT).await;
    assert!(
        bytes.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let handshake = within(
        STEP_TIMEOUT,
        "a refused TLS handshake",
        tls::connect(addr, &client, "www.example.com"),
    )
    .await;
    assert!(handshake.is_err(), "a handshake over the limit completed");
    assert_eq!(
        metric(
            &gateway,
            "gateway_connections_refused_total",
            &[("reason", "global_limit")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &gateway,
            "gateway_tls_handshake_failures_total",
            &[("kind", "client_closed")]
        ),
        0.0,
        "refused before the handshake began"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_per_ip_that_address_gets_503_and_others_are_served() {
    let test = "over_max_connections_per_ip_that_address_gets_503_and_others_are_served";
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .per_ip_limits()
        .arg("--max-connections-per-ip")
        .arg("2")
        .arg("--upgrades-per-ip-per-sec")
        .arg("0")
        .start();
    let addr = gateway.listen_addr();
    // 127.0.0.1: a tunnel and an idle connection, its two.
    let (ws, _) = ws_upgrade(connect_from(loopback(1), addr).await, "x.test", "/ws", &[]).await;
    let idle = connect_from(loopback(1), addr).await;
    open_connections(&gateway, 2).await;
    refused_from(&gateway, 1, "too many connections from your address").await;
    assert_eq!(
        metric(
            &gateway,
            "gateway_connections_refused_total",
            &[("reason", "per_ip_limit")]
        ),
        1.0
    );
    // Another address is another client.
    served_from(&gateway, 2, "/other-address").await;
    // Its tunnel closed, 127.0.0.1 has room again.
    echoes(ws, test).await;
    open_connections(&gateway, 1).await;
    served_from(&gateway, 1, "/room-again").await;
    drop(idle);
    assert_eq!(
        metric(
            &gateway,
            "gateway_connections_refused_total",
            &[("reason", "global_limit")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_over_the_rate_get_429_and_the_connection_goes_on() {
    let test = "upgrades_over_the_rate_get_429_and_the_connection_goes_on";
    let backend = HttpBackend::start("app").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .per_ip_limits()
        .arg("--max-connections-per-ip")
        .arg("0")
        .arg("--upgrades-per-ip-per-sec")
        .arg("1")
        .arg("--upgrade-burst-per-ip")
        .arg("2")
        .start();
    let addr = gateway.listen_addr();
    // The burst: two upgrades at once.
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let (ws, _) = ws_upgrade(connect_from(loopback(1), addr).await, "x.test", "/ws", &[]).await;
        tunnels.push(ws);
    }
    // The third gets a 429 on a keep-alive connection, which then serves a plain request.
    let mut client = KeepAlive::over(connect_from(loopback(1), addr).await);
    let key = http::new_key();
    let reply = within(
        STEP_TIMEOUT,
        "an upgrade over the rate",
        client.send_raw(&http::upgrade_request(addr, "/ws", &key)),
    )
    .await;
    assert_eq!(reply.status(), Some(429), "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("1"), "{}", reply.text());
    assert!(
        reply.text().contains("too many WebSocket upgrades"),
        "{}",
        reply.text()
    );
    let after = within(
        STEP_TIMEOUT,
        "a request after the 429",
        client.send("GET", "/after-429", "x.test", &[], b""),
    )
    .await;
    assert_eq!(after.status(), Some(200), "{}", after.text());
    assert_eq!(
        metric(&gateway, "gateway_upgrades_rate_limited_total", &[]),
        1.0
    );
    // Another address has a bucket of its own.
    let (ws, _) = ws_upgrade(connect_from(loopback(2), addr).await, "x.test", "/ws", &[]).await;
    echoes(ws, test).await;
    // Closing its tunnels gives 127.0.0.1 nothing back; time does: a token a second.
    for ws in tunnels {
        echoes(ws, test).await;
    }
    within(STEP_TIMEOUT, "an upgrade once a token is back", async {
        loop {
            let mut stream = connect_from(loopback(1), addr).await;
            let key = http::new_key();
            stream
                .write_all(&http::upgrade_request(addr, "/ws", &key))
                .await
                .expect("send the upgrade");
            let (head, _) = http::read_head(&mut stream).await.expect("an answer");
            match head.status() {
                Some(101) => break,
                Some(429) => {
                    let secs: u64 = head
                        .header("retry-after")
                        .and_then(|s| s.parse().ok())
                        .expect("a Retry-After in seconds");
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
                other => panic!("upgrade answered {other:?}: {}", head.text()),
            }
        }
    })
    .await;
}

/// The backlog (`Send-Q` of a listening socket, as `ss -ltn` shows it) of the socket
/// listening on `addr`.
fn kernel_backlog(addr: SocketAddr) -> u32 {
    let output = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|line| line.contains(&addr.to_string()))
        .unwrap_or_else(|| panic!("no listening socket on {addr} in:\n{text}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read net.core.somaxconn")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_backlog_is_the_configured_one_and_a_reload_changes_it() {
    let backend = HttpBackend::start("app").await;
    // The default: the kernel's cap, net.core.somaxconn.
    let gateway = Gateway::builder().backend(backend.addr()).start();
    assert_eq!(kernel_backlog(gateway.listen_addr()), somaxconn());
    drop(gateway);

    let site = |backlog: u32| {
        Config::new()
            .global(Global {
                listen_backlog: Some(backlog),
                ..Global::default()
            })
            .listener(Listener::http("web", "127.0.0.1:0"))
            .pool("app", [backend.addr()])
            .settings(Settings::http("plain", 80))
            .rule(Rule::basic("web", "web", "app", "plain"))
    };
    let config = ConfigFile::new(
        "the_listen_backlog_is_the_configured_one_and_a_reload_changes_it",
        &site(300),
    );
    let gateway = Gateway::builder().config(config.path()).start();
    let addr = gateway.listen_addr();
    assert_eq!(kernel_backlog(addr), 300);
    // A reload keeps the bind (same socket, same port) and gives it the new backlog.
    config.rewrite(&site(500));
    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(gateway.listen_addr(), addr);
    assert_eq!(kernel_backlog(addr), 500);
    served_from(&gateway, 1, "/after-reload").await;
}
