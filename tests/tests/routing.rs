//! Every rule kind (basic, path-based, redirect) × {HTTP request, WebSocket}, end to end
//! through `gateway run --config`: which backend answered, the headers it got
//! (`X-Forwarded-For/-Proto/-Port`, `X-Original-Host`, `Host`), and the bytes both ways by
//! length and SHA-256 (1 MiB request and response bodies, 1 MiB each way through tunnels,
//! which are spliced on the eBPF dataplane).

use std::{net::SocketAddr, time::Duration};

use gateway_tests::{
    config::{Config, ConfigFile, Listener, PathRule, Redirect, Rule, Settings},
    data::{random_bytes, seeded_rng, Summary},
    dataplane_tests,
    http::{self, Head},
    http_backend::HttpBackend,
    http_client::{ws_connect_as, ws_echo_exchange, KeepAlive},
    ports::ReservedPort,
    skip_unprivileged, tunnels,
    wait::within,
    Dataplane, Gateway,
};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

const BODY_BYTES: usize = 1 << 20;
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Three sites on one bind (`www.example.com` → basic rule to `alpha`; `*.example.org` →
/// path rules: `/api/*` to `gamma` with a fixed Host, `/ws` to `gamma` with the backend's
/// address as Host, `/old/*` redirected, else `beta`; the catch-all → a 302 to `www`).
fn config(port: u16, alpha: SocketAddr, beta: SocketAddr, gamma: SocketAddr) -> Config {
    let bind = format!("127.0.0.1:{port}");
    Config::new()
        .listener(Listener::http("www", &bind).host_names(["www.example.com"]))
        .listener(Listener::http("shop", &bind).host_names(["*.example.org"]))
        .listener(Listener::http("other", &bind))
        .pool("alpha", [alpha])
        .pool("beta", [beta])
        .pool("gamma", [gamma.ip()])
        .settings(Settings::http("plain", 80))
        .settings(Settings::http("fixed-host", gamma.port()).host_header("internal.example"))
        .settings(
            Settings::http("backend-host", gamma.port()).pick_host_name_from_backend_address(),
        )
        .rule(Rule::basic("www-basic", "www", "alpha", "plain"))
        .rule(
            Rule::path_based("shop-paths", "shop", "beta", "plain")
                .path(PathRule::to("api", ["/api/*"], "gamma", "fixed-host"))
                .path(PathRule::to("ws", ["/ws"], "gamma", "backend-host"))
                .path(PathRule::redirect(
                    "old",
                    ["/old/*"],
                    Redirect::to_url("https://archive.example.org/").status(308),
                )),
        )
        .rule(Rule::redirect(
            "other-redirect",
            "other",
            Redirect::to_listener("www").status(302),
        ))
}

struct Setup {
    alpha: HttpBackend,
    beta: HttpBackend,
    gamma: HttpBackend,
    gateway: Gateway,
    port: u16,
    _config: ConfigFile,
    /// The sites' bind: they share it, which port 0 cannot express.
    _reserved: ReservedPort,
}

async fn setup(test: &str, dataplane: Dataplane) -> Setup {
    let (alpha, beta, gamma) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
        HttpBackend::start("gamma").await,
    );
    let reserved = ReservedPort::new();
    let port = reserved.port();
    let file = ConfigFile::new(test, &config(port, alpha.addr(), beta.addr(), gamma.addr()));
    let gateway = Gateway::builder()
        .config(file.path())
        .dataplane(dataplane)
        .start();
    assert_eq!(gateway.listen_addr().port(), port);
    Setup {
        alpha,
        beta,
        gamma,
        gateway,
        port,
        _config: file,
        _reserved: reserved,
    }
}

/// The headers the gateway adds, as `backend` received them.
fn assert_forwarded(head: &Head, host: &str, original_host: &str, port: u16) {
    let text = head.text();
    assert_eq!(head.header("host"), Some(host), "Host:\n{text}");
    assert_eq!(
        head.header("x-original-host"),
        Some(original_host),
        "X-Original-Host:\n{text}"
    );
    assert_eq!(head.header("x-forwarded-proto"), Some("http"), "{text}");
    assert_eq!(
        head.header("x-forwarded-port"),
        Some(port.to_string().as_str()),
        "{text}"
    );
    assert_eq!(
        head.header("x-forwarded-for"),
        Some("192.0.2.7, 127.0.0.1"),
        "X-Forwarded-For keeps the client's value and appends the peer:\n{text}"
    );
    assert!(
        head.header("proxy-authorization").is_none() && head.header("keep-alive").is_none(),
        "hop-by-hop headers are removed:\n{text}"
    );
}

/// POSTs 1 MiB to `path` on `host` asking for 1 MiB back; checks both bodies and returns
/// which backend answered.
async fn post_both_ways(setup: &Setup, host: &str, path: &str) -> String {
    let mut rng = seeded_rng(path);
    let body = random_bytes(&mut rng, BODY_BYTES);
    let mut client = KeepAlive::connect(setup.gateway.listen_addr()).await;
    let reply = within(
        STEP_TIMEOUT,
        "a 1 MiB request and answer",
        client.send(
            "POST",
            path,
            host,
            &[
                ("X-Forwarded-For", "192.0.2.7"),
                ("X-Reply-Bytes", &BODY_BYTES.to_string()),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authorization", "Basic eDp5"),
                ("Connection", "keep-alive"),
            ],
            &body,
        ),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.head.text());
    assert_eq!(
        reply.header("x-request-body"),
        Some(Summary::of(&body).to_string().as_str()),
        "the backend got the request body"
    );
    assert_eq!(
        reply.header("x-reply-body"),
        Some(Summary::of(&reply.body).to_string().as_str()),
        "the client got the answer body"
    );
    assert_eq!(reply.body.len(), BODY_BYTES);
    reply.header("x-backend").unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_rule_http() {
    let setup = setup("basic_rule_http", Dataplane::Userspace).await;
    let host = format!("www.example.com:{}", setup.port);
    assert_eq!(post_both_ways(&setup, &host, "/upload?x=1").await, "alpha");
    let seen = setup.alpha.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].head.start_line, "POST /upload?x=1 HTTP/1.1");
    assert_forwarded(&seen[0].head, &host, &host, setup.port);
    assert!(setup.beta.seen().is_empty() && setup.gamma.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_based_rule_http() {
    let setup = setup("path_based_rule_http", Dataplane::Userspace).await;
    let host = format!("shop.example.org:{}", setup.port);
    assert_eq!(
        post_both_ways(&setup, &host, "/api/v1/items").await,
        "gamma"
    );
    assert_eq!(post_both_ways(&setup, &host, "/catalog").await, "beta");
    let gamma = setup.gamma.seen();
    assert_forwarded(&gamma[0].head, "internal.example", &host, setup.port);
    assert_eq!(gamma[0].head.path(), "/api/v1/items");
    assert_forwarded(&setup.beta.seen()[0].head, &host, &host, setup.port);

    // A path rule that redirects: nobody behind the gateway hears of it.
    let mut client = KeepAlive::connect(setup.gateway.listen_addr()).await;
    let reply = client.send("GET", "/old/page?a=1", &host, &[], &[]).await;
    assert_eq!(reply.status(), Some(308), "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some("https://archive.example.org/old/page?a=1")
    );
    assert!(setup.alpha.seen().is_empty());
    assert_eq!(setup.beta.seen().len() + setup.gamma.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_rule_http_and_websocket() {
    let setup = setup("redirect_rule_http_and_websocket", Dataplane::Userspace).await;
    let addr = setup.gateway.listen_addr();
    let host = format!("other.test:{}", setup.port);
    let mut client = KeepAlive::connect(addr).await;
    let reply = client.send("GET", "/a/b?c=d", &host, &[], &[]).await;
    assert_eq!(reply.status(), Some(302), "{}", reply.text());
    // The request's host, the target listener's scheme and port, path and query kept.
    let location = format!("http://other.test:{}/a/b?c=d", setup.port);
    assert_eq!(reply.header("location"), Some(location.as_str()));

    // A WebSocket upgrade gets the same redirect, and no tunnel.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let key = http::new_key();
    let request = String::from_utf8(http::upgrade_request(addr, "/chat?room=1", &key))
        .expect("ASCII")
        .replace(&format!("Host: {addr}"), &format!("Host: {host}"));
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the upgrade");
    let (head, _) = http::read_head(&mut stream).await.expect("read the answer");
    assert_eq!(head.status(), Some(302), "{}", head.text());
    let location = format!("http://other.test:{}/chat?room=1", setup.port);
    assert_eq!(head.header("location"), Some(location.as_str()));
    assert_eq!(head.header("upgrade"), None);
    for backend in [&setup.alpha, &setup.beta, &setup.gamma] {
        assert!(
            backend.seen().is_empty(),
            "{} got a request",
            backend.name()
        );
    }
    assert_eq!(tunnels::opened(&setup.gateway, "userspace"), 0.0);
}

/// A WebSocket to `host` + `path`: the `101` names `backend`, 1 MiB goes each way.
async fn websocket_through(
    setup: &Setup,
    host: &str,
    path: &str,
    backend: &HttpBackend,
    test: &str,
) -> Head {
    let (ws, response) = within(
        STEP_TIMEOUT,
        "the WebSocket upgrade",
        ws_connect_as(setup.gateway.listen_addr(), host, path, None),
    )
    .await;
    assert_eq!(
        response.headers().get("x-backend").map(|v| v.as_bytes()),
        Some(backend.name().as_bytes()),
        "who answered the upgrade"
    );
    let mut rng = seeded_rng(test);
    let (sent, received) = within(
        STEP_TIMEOUT,
        "1 MiB each way through the tunnel",
        ws_echo_exchange(ws, &mut rng, BODY_BYTES),
    )
    .await;
    let record = backend.next_ws_record().await;
    assert_eq!(record.error, None, "backend WebSocket error");
    assert_eq!(sent.len, BODY_BYTES as u64);
    assert_eq!(record.received, sent, "bytes the backend received");
    assert_eq!(received, sent, "bytes the client got back");
    record.head
}

async fn basic_rule_websocket(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let setup = setup(test, dataplane).await;
    let host = format!("www.example.com:{}", setup.port);
    let head = websocket_through(&setup, &host, "/chat", &setup.alpha, test).await;
    assert_eq!(head.path(), "/chat");
    assert_forwarded_ws(&head, &host, &host, setup.port);
    let opened = tunnels::opened(&setup.gateway, dataplane.tunnel_mode());
    assert_eq!(opened, 1.0, "one {} tunnel", dataplane.tunnel_mode());
}

async fn path_based_rule_websocket(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let setup = setup(test, dataplane).await;
    let host = format!("chat.example.org:{}", setup.port);
    let head = websocket_through(&setup, &host, "/ws", &setup.gamma, test).await;
    // pick_host_name_from_backend_address: the pool address (an IP here) is the Host.
    assert_forwarded_ws(&head, "127.0.0.1", &host, setup.port);
    let head = websocket_through(&setup, &host, "/ws/deeper", &setup.beta, test).await;
    assert_forwarded_ws(&head, &host, &host, setup.port);
    let opened = tunnels::opened(&setup.gateway, dataplane.tunnel_mode());
    assert_eq!(opened, 2.0, "two {} tunnels", dataplane.tunnel_mode());
}

/// [`assert_forwarded`] for an upgrade sent by tungstenite (no client X-Forwarded-For).
fn assert_forwarded_ws(head: &Head, host: &str, original_host: &str, port: u16) {
    let text = head.text();
    assert_eq!(head.header("host"), Some(host), "Host:\n{text}");
    assert_eq!(
        head.header("x-original-host"),
        Some(original_host),
        "{text}"
    );
    assert_eq!(head.header("x-forwarded-proto"), Some("http"), "{text}");
    assert_eq!(
        head.header("x-forwarded-port"),
        Some(port.to_string().as_str())
    );
    assert_eq!(head.header("x-forwarded-for"), Some("127.0.0.1"), "{text}");
    assert_eq!(head.header("upgrade"), Some("websocket"), "{text}");
}

dataplane_tests!(basic_rule_websocket => basic_rule_websocket_ebpf, basic_rule_websocket_userspace);
dataplane_tests!(path_based_rule_websocket => path_based_rule_websocket_ebpf, path_based_rule_websocket_userspace);
