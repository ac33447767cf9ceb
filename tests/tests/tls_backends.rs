//! HTTPS backends end to end: a backend whose certificate the gateway does not trust (or
//! that is for another name) gets no request and the client a `502` naming the category;
//! ordinary requests reuse pooled TLS connections while each upgrade gets its own; and a
//! tunnel with TLS on both sides keeps the relay's half-close both ways, with a
//! `close_notify` or with a backend that just closes its socket, and a backend's reset
//! reaches the client as a reset.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use gateway_tests::{
    client::check_switching_protocols,
    config::{Config, ConfigFile, Listener, Rule, Settings},
    data::{self, seeded_rng, Summary},
    http::{self, Head},
    http_backend::HttpBackend,
    http_client::{ws_echo_exchange, ws_upgrade, KeepAlive},
    metrics::Metrics,
    oneshot::ScratchDir,
    tls::{self, Ca},
    tunnels,
    wait::{eventually, within},
    Gateway,
};
use rustls::ServerConfig;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::oneshot,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const BYTES: u64 = 256 * 1024;

/// An http listener and an https one (for `app.test`, its certificate from `listener_ca`),
/// each with a basic rule to `backend` through https settings trusting `trusted` and
/// sending `host_header` when given.
fn config(
    dir: &ScratchDir,
    listener_ca: &Ca,
    backend: SocketAddr,
    trusted: &Ca,
    host_header: Option<&str>,
) -> Config {
    let (certificate, key) = listener_ca.leaf(&["app.test"]).write(dir, "app");
    let ca = trusted.write(dir, "trusted.pem");
    let mut settings = Settings::https("tls", 443, ca);
    if let Some(host) = host_header {
        settings = settings.host_header(host);
    }
    Config::new()
        .listener(Listener::http("plain", "127.0.0.1:0"))
        .listener(Listener::https("secure", "127.0.0.1:0", certificate, key))
        .pool("pool", [backend])
        .settings(settings)
        .rule(Rule::basic("plain", "plain", "pool", "tls"))
        .rule(Rule::basic("secure", "secure", "pool", "tls"))
}

/// A gateway in front of `backend` (https settings trusting `trusted`).
fn gateway(
    test: &str,
    backend: SocketAddr,
    trusted: &Ca,
    host_header: Option<&str>,
) -> (Gateway, Ca, ConfigFile) {
    let listener_ca = Ca::new("listener CA");
    let dir = ScratchDir::new(test);
    let config = config(&dir, &listener_ca, backend, trusted, host_header);
    let config = ConfigFile::in_dir(dir, &config);
    let gateway = Gateway::builder().config(config.path()).start();
    (gateway, listener_ca, config)
}

/// A request and an upgrade through the http listener both get `502` naming `category`,
/// and the backend sees neither.
async fn refused(backend: &HttpBackend, gateway: &Gateway, category: &str) {
    let message = format!("bad gateway: backend TLS handshake failed: {category}");
    let mut client = KeepAlive::connect(gateway.listen_addr()).await;
    let reply = client.send("GET", "/", "app.test", &[], &[]).await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text());
    assert_eq!(String::from_utf8_lossy(&reply.body).trim(), message);

    let key = http::new_key();
    let upgrade = http::upgrade_request(gateway.listen_addr(), "/ws", &key);
    let reply = client.send_raw(&upgrade).await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text());
    assert_eq!(String::from_utf8_lossy(&reply.body).trim(), message);

    assert!(backend.seen().is_empty(), "the backend got no request");
    let needle = format!("TLS handshake failed ({category})");
    gateway
        .logged("logged with its category", |stderr| {
            stderr.contains(&needle)
        })
        .await;
    assert_eq!(tunnels::opened(gateway, "userspace"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_backend_certificate_is_a_502_naming_the_category() {
    let (backend_ca, other_ca) = (Ca::new("backend CA"), Ca::new("another CA"));
    let backend =
        HttpBackend::start_tls("untrusted", backend_ca.leaf(&["127.0.0.1"]).server()).await;
    let (gateway, _, _dir) = gateway(
        "an_untrusted_backend_certificate_is_a_502_naming_the_category",
        backend.addr(),
        &other_ca,
        None,
    );
    refused(&backend, &gateway, "untrusted_certificate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_certificate_for_another_name_is_a_502_naming_the_category() {
    let backend_ca = Ca::new("backend CA");
    let backend = HttpBackend::start_tls("misnamed", backend_ca.leaf(&["api.test"]).server()).await;
    let (gateway, _, _dir) = gateway(
        "a_backend_certificate_for_another_name_is_a_502_naming_the_category",
        backend.addr(),
        &backend_ca,
        Some("other.test"),
    );
    refused(&backend, &gateway, "name_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reuse_pooled_tls_connections_and_upgrades_get_their_own() {
    let backend_ca = Ca::new("backend CA");
    let backend = HttpBackend::start_tls("pooled", backend_ca.leaf(&["api.test"]).server()).await;
    let (gateway, listener_ca, _dir) = gateway(
        "requests_reuse_pooled_tls_connections_and_upgrades_get_their_own",
        backend.addr(),
        &backend_ca,
        Some("api.test:8443"),
    );
    let secure = gateway.listen_addrs()[1];
    for _ in 0..2 {
        let stream = tls::connect(secure, &listener_ca.client(), "app.test")
            .await
            .expect("handshake");
        let mut client = KeepAlive::over(stream);
        for _ in 0..3 {
            let reply = client.send("GET", "/", "app.test", &[], &[]).await;
            assert_eq!(reply.status(), Some(200), "{}", reply.text());
        }
    }
    assert_eq!(
        backend.connections_accepted(),
        1,
        "one pooled TLS connection"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|s| s.connection == 0));
    // The Host override names the certificate (without its port) and is the SNI.
    assert!(seen.iter().all(|s| s.sni.as_deref() == Some("api.test")));
    assert_eq!(seen[0].head.header("host"), Some("api.test:8443"));

    let stream = tls::connect(secure, &listener_ca.client(), "app.test")
        .await
        .expect("handshake");
    let (ws, _) = ws_upgrade(stream, "app.test", "/ws", &[]).await;
    let (sent, received) = ws_echo_exchange(ws, &mut seeded_rng("pooled"), 1024).await;
    assert_eq!(sent, received);
    assert_eq!(backend.next_ws_record().await.received, sent);
    assert_eq!(backend.connections_accepted(), 2, "the upgrade had its own");
}

/// How the raw TLS backend ends its side of the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendEnd {
    /// `close_notify`, then a FIN.
    CloseNotify,
    /// A FIN without `close_notify`: a truncation, which the relay takes as the end.
    Fin,
    /// A reset: the client must get one too.
    Reset,
}

/// One TLS connection: answers the upgrade, reads to the client's end of stream, then
/// sends `BYTES` random bytes and ends as `end` says. Reports (received, sent).
async fn raw_tls_backend(
    listener: TcpListener,
    server: Arc<ServerConfig>,
    end: BackendEnd,
    done: oneshot::Sender<(Summary, Summary)>,
) {
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut tls = tokio_rustls::TlsAcceptor::from(server)
        .accept(tcp)
        .await
        .expect("backend handshake");
    let (head, leftover) = http::read_head(&mut tls).await.expect("request head");
    let key = head.header("sec-websocket-key").expect("a key").to_owned();
    tls.write_all(&http::switching_protocols(&key))
        .await
        .expect("write the 101");
    tls.flush().await.expect("flush the 101");
    let received = data::read_to_eof(&mut tls, &leftover)
        .await
        .expect("backend reads to the client's close_notify");
    let sent = data::write_random(&mut tls, &mut seeded_rng("raw-backend"), BYTES)
        .await
        .expect("backend sends");
    match end {
        BackendEnd::CloseNotify => tls.shutdown().await.expect("close_notify"),
        BackendEnd::Fin => {
            let (mut tcp, _) = tls.into_inner();
            tcp.shutdown().await.expect("a bare FIN");
            // Held until the client has read everything: a FIN, not a reset.
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        }
        BackendEnd::Reset => {
            let (tcp, _) = tls.into_inner();
            socket2::SockRef::from(&tcp)
                .set_linger(Some(Duration::ZERO))
                .expect("SO_LINGER 0");
        }
    }
    let _ = done.send((received, sent));
}

async fn half_close_both_ways_over_tls(end: BackendEnd, test: &str) {
    let backend_ca = Ca::new("backend CA");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (done_tx, done) = oneshot::channel();
    let backend = tokio::spawn(raw_tls_backend(
        listener,
        backend_ca.leaf(&["127.0.0.1"]).server(),
        end,
        done_tx,
    ));
    let (gateway, listener_ca, _dir) = gateway(test, addr, &backend_ca, None);
    let secure = gateway.listen_addrs()[1];

    let mut stream = tls::connect(secure, &listener_ca.client(), "app.test")
        .await
        .expect("handshake");
    let key = http::new_key();
    let request = http::upgrade_request(secure, "/tunnel", &key);
    stream.write_all(&request).await.expect("send the upgrade");
    let (head, leftover): (Head, Vec<u8>) = http::read_head(&mut stream).await.expect("the 101");
    check_switching_protocols(&head, &key);
    // Client → backend, then a half-close (close_notify): the backend reads to its end
    // and only then answers; the client reads the answer to a clean end of stream.
    let sent = within(STEP_TIMEOUT, "the client sends and half-closes", async {
        let sent = data::write_random(&mut stream, &mut seeded_rng(test), BYTES)
            .await
            .expect("client sends");
        stream.shutdown().await.expect("client close_notify");
        sent
    })
    .await;
    let received = within(
        STEP_TIMEOUT,
        "the client reads to the end",
        data::read_to_eof(&mut stream, &leftover),
    )
    .await
    .expect("a clean end of stream: the gateway sends close_notify");
    let (backend_received, backend_sent) = within(STEP_TIMEOUT, "the backend", done)
        .await
        .expect("the backend reports");
    backend.await.expect("backend task");
    assert_eq!(backend_received, sent, "client → backend");
    assert_eq!(received, backend_sent, "backend → client");

    tunnels::wait_none_active(&gateway).await;
    let metrics = gateway.metrics();
    assert_eq!(tunnels::opened(&gateway, "userspace"), 1.0);
    assert_eq!(
        metrics.metric(
            "gateway_tunnels_closed_total",
            &[("mode", "userspace"), ("reason", "done")]
        ),
        1.0,
        "both directions ended: done"
    );
    for (direction, bytes) in [
        ("client_to_backend", sent.len),
        ("backend_to_client", BYTES),
    ] {
        let moved = relayed(&metrics, direction);
        assert_eq!(
            moved, bytes as f64,
            "{direction} bytes relayed or handed off"
        );
    }
    eventually(STEP_TIMEOUT, "the close is logged", || {
        let stderr = gateway.stderr_text();
        let line = stderr
            .lines()
            .find(|line| line.contains("tunnel closed"))
            .ok_or("no close line")?;
        (line.contains("mode=userspace") && line.contains("relay_reason=\"tls\""))
            .then_some(())
            .ok_or_else(|| line.to_owned())
    })
    .await;
}

fn relayed(metrics: &Metrics, direction: &str) -> f64 {
    ["gateway_relayed_bytes_total", "gateway_handoff_bytes_total"]
        .iter()
        .map(|name| metrics.metric(name, &[("direction", direction)]))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_tunnel_half_closes_both_ways_with_close_notify() {
    half_close_both_ways_over_tls(
        BackendEnd::CloseNotify,
        "a_tls_tunnel_half_closes_both_ways_with_close_notify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_closing_without_close_notify_ends_its_direction() {
    half_close_both_ways_over_tls(
        BackendEnd::Fin,
        "a_tls_backend_closing_without_close_notify_ends_its_direction",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_reset_resets_the_client() {
    let test = "a_tls_backend_reset_resets_the_client";
    let backend_ca = Ca::new("backend CA");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (done_tx, done) = oneshot::channel();
    let backend = tokio::spawn(raw_tls_backend(
        listener,
        backend_ca.leaf(&["127.0.0.1"]).server(),
        BackendEnd::Reset,
        done_tx,
    ));
    let (gateway, listener_ca, _dir) = gateway(test, addr, &backend_ca, None);
    let secure = gateway.listen_addrs()[1];
    let mut stream = tls::connect(secure, &listener_ca.client(), "app.test")
        .await
        .expect("handshake");
    let key = http::new_key();
    stream
        .write_all(&http::upgrade_request(secure, "/tunnel", &key))
        .await
        .expect("send the upgrade");
    let (head, _) = http::read_head(&mut stream).await.expect("the 101");
    check_switching_protocols(&head, &key);
    data::write_random(&mut stream, &mut seeded_rng(test), 1024)
        .await
        .expect("client sends");
    stream.shutdown().await.expect("client close_notify");
    within(STEP_TIMEOUT, "the backend", done)
        .await
        .expect("the backend reports");
    backend.await.expect("backend task");
    let ended = within(
        STEP_TIMEOUT,
        "the client reads to the end",
        data::read_to_eof(&mut stream, &[]),
    )
    .await;
    let error = ended.expect_err("a reset, not a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    tunnels::wait_none_active(&gateway).await;
    assert_eq!(
        gateway.metrics().metric(
            "gateway_tunnels_closed_total",
            &[("mode", "userspace"), ("reason", "backend_error")]
        ),
        1.0
    );
}
