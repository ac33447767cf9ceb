//! Multi-site listeners end to end: the site is chosen by host (exact name, then wildcard,
//! then the catch-all; the absolute-form target's authority over `Host`), a host no site
//! serves gets `404`, and a request without a valid single `Host` gets `400`. Refused
//! requests never reach a backend.

use std::net::SocketAddr;

use gateway_tests::{
    client,
    config::{Config, ConfigFile, Listener, Rule, Settings},
    http::{self, Head},
    http_backend::HttpBackend,
    http_client::{ws_connect_as, KeepAlive, Reply},
    ports::ReservedPort,
    Gateway,
};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

/// Bind P: `www` (www.example.com, example.com) → alpha, `shop` (*.example.com) → beta,
/// the catch-all `any` → gamma. Bind Q (port 0): `named` (only.example.net) → alpha, no
/// catch-all.
fn config(port: u16, alpha: SocketAddr, beta: SocketAddr, gamma: SocketAddr) -> Config {
    let bind = format!("127.0.0.1:{port}");
    Config::new()
        .listener(Listener::http("www", &bind).host_names(["www.example.com", "example.com"]))
        .listener(Listener::http("shop", &bind).host_names(["*.example.com"]))
        .listener(Listener::http("any", &bind))
        .listener(Listener::http("named", "127.0.0.1:0").host_names(["only.example.net"]))
        .pool("alpha", [alpha])
        .pool("beta", [beta])
        .pool("gamma", [gamma])
        .settings(Settings::http("plain", 80))
        .rule(Rule::basic("www-rule", "www", "alpha", "plain"))
        .rule(Rule::basic("shop-rule", "shop", "beta", "plain"))
        .rule(Rule::basic("any-rule", "any", "gamma", "plain"))
        .rule(Rule::basic("named-rule", "named", "alpha", "plain"))
}

struct Setup {
    backends: [HttpBackend; 3],
    gateway: Gateway,
    port: u16,
    _config: ConfigFile,
    /// Bind P: its listeners share it, which port 0 cannot express.
    _reserved: ReservedPort,
}

async fn setup(test: &str) -> Setup {
    let backends = [
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
        HttpBackend::start("gamma").await,
    ];
    let reserved = ReservedPort::new();
    let port = reserved.port();
    let config = ConfigFile::new(
        test,
        &config(
            port,
            backends[0].addr(),
            backends[1].addr(),
            backends[2].addr(),
        ),
    );
    let gateway = Gateway::builder().config(config.path()).start();
    assert_eq!(gateway.listen_addrs().len(), 2, "two binds");
    Setup {
        backends,
        gateway,
        port,
        _config: config,
        _reserved: reserved,
    }
}

impl Setup {
    fn requests_seen(&self) -> usize {
        self.backends.iter().map(|b| b.seen().len()).sum()
    }
}

async fn get(gateway: SocketAddr, host: &str) -> Reply {
    KeepAlive::connect(gateway)
        .await
        .send("GET", "/", host, &[], &[])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_names_then_wildcards_then_the_catch_all() {
    let setup = setup("exact_names_then_wildcards_then_the_catch_all").await;
    let addr = setup.gateway.listen_addr();
    let port = setup.port;
    let cases = [
        ("www.example.com", "alpha"),
        ("example.com", "alpha"),
        // Names are matched without case, port or trailing dot.
        ("WWW.Example.COM", "alpha"),
        ("www.example.com.", "alpha"),
        // The wildcard takes one label.
        ("shop.example.com", "beta"),
        ("a.b.example.com", "gamma"),
        ("other.test", "gamma"),
        ("127.0.0.1", "gamma"),
    ];
    for (name, want) in cases {
        let host = format!("{name}:{port}");
        let reply = get(addr, &host).await;
        assert_eq!(reply.status(), Some(200), "{host}: {}", reply.text());
        assert_eq!(reply.header("x-backend"), Some(want), "{host}");
    }
    // Without the port too.
    assert_eq!(
        get(addr, "shop.example.com").await.header("x-backend"),
        Some("beta")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_form_target_wins_over_host() {
    let setup = setup("the_absolute_form_target_wins_over_host").await;
    let request = b"GET http://shop.example.com/x?y=1 HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    let reply = KeepAlive::connect(setup.gateway.listen_addr())
        .await
        .send_raw(request)
        .await;
    assert_eq!(reply.header("x-backend"), Some("beta"), "{}", reply.text());
    let seen = setup.backends[1].seen();
    let head = &seen[0].head;
    assert_eq!(
        head.start_line, "GET /x?y=1 HTTP/1.1",
        "origin form to the backend"
    );
    assert_eq!(head.header("host"), Some("shop.example.com"));
    assert_eq!(head.header("x-original-host"), Some("shop.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_no_site_serves_gets_404() {
    let setup = setup("a_host_no_site_serves_gets_404").await;
    let named = setup.gateway.listen_addrs()[1];
    let reply = get(named, "only.example.net").await;
    assert_eq!(reply.header("x-backend"), Some("alpha"), "{}", reply.text());
    let before = setup.requests_seen();

    let reply = get(named, "www.example.com").await;
    assert_eq!(reply.status(), Some(404), "{}", reply.text());
    assert_eq!(
        String::from_utf8_lossy(&reply.body).trim_end(),
        "no listener on this address serves host \"www.example.com\""
    );
    // HTTP/1.0 without Host: no name to match, and no catch-all here.
    let reply = KeepAlive::connect(named)
        .await
        .send_raw(b"GET / HTTP/1.0\r\n\r\n")
        .await;
    assert_eq!(reply.status(), Some(404), "{}", reply.text());
    // A WebSocket upgrade too.
    let mut stream = TcpStream::connect(named).await.expect("connect");
    let upgrade = http::upgrade_request(named, "/ws", &http::new_key());
    stream.write_all(&upgrade).await.expect("send the upgrade");
    let (head, _) = http::read_head(&mut stream).await.expect("the answer");
    assert_eq!(head.status(), Some(404), "{}", head.text());
    assert_eq!(setup.requests_seen(), before, "no backend saw them");

    // On the bind with a catch-all, HTTP/1.0 without Host goes there.
    let reply = KeepAlive::connect(setup.gateway.listen_addr())
        .await
        .send_raw(b"GET / HTTP/1.0\r\n\r\n")
        .await;
    assert_eq!(reply.header("x-backend"), Some("gamma"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_duplicate_or_bad_host_is_400() {
    let setup = setup("a_missing_duplicate_or_bad_host_is_400").await;
    let addr = setup.gateway.listen_addr();
    let requests: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: www.example.com\r\nHost: shop.example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@www.example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: www.example.com:http\r\n\r\n",
    ];
    for request in requests {
        let (head, body) = client::raw_request(addr, request).await;
        assert_eq!(
            head.status(),
            Some(400),
            "{}: {}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(setup.requests_seen(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_follow_the_host_too() {
    let setup = setup("websockets_follow_the_host_too").await;
    let addr = setup.gateway.listen_addr();
    for (host, want) in [
        ("x.example.com", "beta"),
        ("example.com", "alpha"),
        ("z.test", "gamma"),
    ] {
        let (mut ws, response) = ws_connect_as(addr, host, "/ws", None).await;
        let backend = response.headers().get("x-backend").map(|v| v.as_bytes());
        assert_eq!(backend, Some(want.as_bytes()), "{host}");
        ws.close(None).await.expect("close");
    }
    let heads: Vec<Head> = setup.backends[1]
        .seen()
        .into_iter()
        .map(|s| s.head)
        .collect();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].header("host"), Some("x.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_asterisk_form_are_not_forwarded() {
    let setup = setup("connect_and_asterisk_form_are_not_forwarded").await;
    let addr = setup.gateway.listen_addr();
    let requests: [&[u8]; 2] = [
        b"CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    ];
    for request in requests {
        let (head, _) = client::raw_request(addr, request).await;
        assert_eq!(
            head.status(),
            Some(405),
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(setup.requests_seen(), 0);
}
