//! HTTPS listeners end to end: the certificate chosen by SNI on a three-site bind (exact
//! name, wildcard, catch-all, and no SNI at all) while requests are routed by `Host`; TLS
//! 1.2 and 1.3; ALPN (`http/1.1` only: an h2-only client is refused); failed handshakes
//! logged and counted by kind, without holding up other clients; the smuggling guard over
//! TLS; and the affinity cookie's `SameSite=None; Secure` on https only.

use std::{net::SocketAddr, time::Duration};

use gateway_tests::{
    client::check_switching_protocols,
    config::{Config, ConfigFile, Listener, Rule, Settings},
    http::{self, Head},
    http_backend::HttpBackend,
    http_client::{cookie_pair, KeepAlive, Reply},
    oneshot::ScratchDir,
    ports::ReservedPort,
    tls::{self, any_certificate_client, client_config, peer_certificate, Ca, Leaf, HTTP11},
    wait::{eventually, within},
    Gateway,
};
use rustls::{
    version::{TLS12, TLS13},
    ProtocolVersion,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const FAILURES: &str = "gateway_tls_handshake_failures_total";

/// An https bind with three sites, each with its own certificate and backend: `www`
/// (www.example.com), `shop` (*.example.org) and the catch-all `any` (its certificate is
/// for fallback.test only).
struct Sites {
    gateway: Gateway,
    addr: SocketAddr,
    port: u16,
    ca: Ca,
    certs: [Leaf; 3],
    backends: [HttpBackend; 3],
    _config: ConfigFile,
    /// The sites' bind: they share it, which port 0 cannot express.
    _reserved: ReservedPort,
}

impl Sites {
    async fn start(test: &str, args: &[&str]) -> Self {
        let ca = Ca::new("listener CA");
        let certs = [
            ca.leaf(&["www.example.com"]),
            ca.leaf(&["*.example.org"]),
            ca.leaf(&["fallback.test"]),
        ];
        let backends = [
            HttpBackend::start("www-backend").await,
            HttpBackend::start("shop-backend").await,
            HttpBackend::start("any-backend").await,
        ];
        let dir = ScratchDir::new(test);
        let reserved = ReservedPort::new();
        let port = reserved.port();
        let bind = format!("127.0.0.1:{port}");
        let mut config = Config::new().settings(Settings::http("plain", 80));
        for ((name, hosts), (cert, backend)) in [
            ("www", Some("www.example.com")),
            ("shop", Some("*.example.org")),
            ("any", None),
        ]
        .into_iter()
        .zip(certs.iter().zip(&backends))
        {
            let (certificate, key) = cert.write(&dir, name);
            let mut listener = Listener::https(name, &bind, certificate, key);
            if let Some(host) = hosts {
                listener = listener.host_names([host]);
            }
            config = config
                .listener(listener)
                .pool(name, [backend.addr()])
                .rule(Rule::basic(name, name, name, "plain"));
        }
        let config = ConfigFile::in_dir(dir, &config);
        let mut builder = Gateway::builder().config(config.path());
        for arg in args {
            builder = builder.arg(*arg);
        }
        let gateway = builder.start();
        let addr = gateway.listen_addr();
        assert_eq!(addr.port(), port);
        Self {
            gateway,
            addr,
            port,
            ca,
            certs,
            backends,
            _config: config,
            _reserved: reserved,
        }
    }

    /// A request for `host` on a TLS connection that asked for `sni`; the answer.
    async fn get(&self, sni: &str, host: &str) -> Reply {
        let stream = within(
            STEP_TIMEOUT,
            "TLS handshake",
            tls::connect(self.addr, &self.ca.client(), sni),
        )
        .await
        .unwrap_or_else(|error| panic!("TLS handshake as {sni}: {error}"));
        let mut client = KeepAlive::over(stream);
        within(
            STEP_TIMEOUT,
            "a request over TLS",
            client.send("GET", "/", &format!("{host}:{}", self.port), &[], &[]),
        )
        .await
    }

    fn failures(&self, kind: &str) -> f64 {
        self.gateway.metrics().metric(FAILURES, &[("kind", kind)])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_host_chooses_the_site() {
    let sites = Sites::start(
        "sni_chooses_the_certificate_and_host_chooses_the_site",
        &["--log-level", "info,gateway=debug"],
    )
    .await;
    // Exact name, wildcard, an unknown name and no SNI at all (an IP address).
    let any = any_certificate_client();
    for (asked, expected) in [
        ("www.example.com", 0),
        ("shop.example.org", 1),
        ("unknown.test", 2),
        ("127.0.0.1", 2),
    ] {
        let stream = tls::connect(sites.addr, &any, asked)
            .await
            .unwrap_or_else(|error| panic!("TLS handshake as {asked}: {error}"));
        assert_eq!(
            peer_certificate(&stream),
            sites.certs[expected].der,
            "the certificate shown for {asked}"
        );
    }

    // Verified by the client: each site's own name gets its own backend.
    for (name, backend) in [("www.example.com", 0), ("a.example.org", 1)] {
        let reply = sites.get(name, name).await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        assert_eq!(
            reply.header("x-backend"),
            Some(sites.backends[backend].name())
        );
        let seen = sites.backends[backend].seen();
        let head = &seen.last().expect("the backend saw it").head;
        assert_eq!(head.header("x-forwarded-proto"), Some("https"));
        assert_eq!(
            head.header("x-forwarded-port"),
            Some(sites.port.to_string().as_str())
        );
    }

    // The certificate of www (by SNI), a Host of shop: routed by Host, as nginx does.
    let reply = sites.get("www.example.com", "b.example.org").await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.header("x-backend"), Some("shop-backend"));
    // The log line may reach the pipe after the response: wait for it.
    eventually(
        Duration::from_secs(10),
        "the mismatch is logged at debug level",
        || {
            let stderr = sites.gateway.stderr_text();
            let logged = stderr.contains("routing by host")
                && stderr.contains("sni_listener=\"www\"")
                && stderr.contains("host_listener=\"shop\"");
            if logged {
                Ok(())
            } else {
                Err(stderr)
            }
        },
    )
    .await;
    assert_eq!(sites.failures("protocol"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_both_work() {
    let sites = Sites::start("tls12_and_tls13_both_work", &[]).await;
    for (version, expected) in [
        (&TLS12, ProtocolVersion::TLSv1_2),
        (&TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(sites.ca.roots(), &[version], &[HTTP11]);
        let stream = tls::connect(sites.addr, &config, "www.example.com")
            .await
            .unwrap_or_else(|error| panic!("{expected:?} handshake: {error}"));
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        let mut client = KeepAlive::over(stream);
        let reply = client.send("GET", "/", "www.example.com", &[], &[]).await;
        assert_eq!(reply.status(), Some(200), "{expected:?}: {}", reply.text());
        assert_eq!(reply.header("x-backend"), Some("www-backend"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_is_http11_only_and_an_h2_only_client_is_refused() {
    let sites = Sites::start("alpn_is_http11_only_and_an_h2_only_client_is_refused", &[]).await;
    let versions = [&TLS13, &TLS12];
    let h2_only = client_config(sites.ca.roots(), &versions, &[b"h2"]);
    let error = tls::connect(sites.addr, &h2_only, "www.example.com")
        .await
        .expect_err("no common application protocol");
    assert!(
        format!("{error:?}").contains("NoApplicationProtocol"),
        "the client hears why: {error:?}"
    );
    eventually(STEP_TIMEOUT, "the refusal is counted", || {
        match sites.failures("protocol") {
            1.0 => Ok(()),
            n => Err(format!("{n} protocol failures")),
        }
    })
    .await;

    // h2 and http/1.1 offered: http/1.1. Nothing offered: served as HTTP/1.1 too.
    for (alpn, expected) in [(&[&b"h2"[..], HTTP11][..], Some(HTTP11)), (&[][..], None)] {
        let config = client_config(sites.ca.roots(), &versions, alpn);
        let stream = tls::connect(sites.addr, &config, "www.example.com")
            .await
            .expect("handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), expected);
        let mut client = KeepAlive::over(stream);
        let reply = client.send("GET", "/", "www.example.com", &[], &[]).await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
    }
    assert_eq!(sites.failures("protocol"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_counted_by_kind_and_hold_up_no_one() {
    const SILENT: usize = 3;
    let sites = Sites::start(
        "failed_handshakes_are_counted_by_kind_and_hold_up_no_one",
        &["--handshake-timeout-secs", "3"],
    )
    .await;
    for kind in ["timeout", "client_closed", "protocol", "io"] {
        assert_eq!(sites.failures(kind), 0.0, "{kind} exists from the start");
    }
    // Clients that connect and say nothing: their handshakes run in their own tasks...
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(sites.addr).await.expect("connect"));
    }
    // ... so a client arriving after them is served at once.
    let reply = sites.get("www.example.com", "www.example.com").await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(
        sites.failures("timeout"),
        0.0,
        "served before any timed out"
    );

    // Plain HTTP on the TLS port; a client that closes before its hello.
    let mut plain = TcpStream::connect(sites.addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        .await
        .expect("send plain HTTP");
    let mut answer = Vec::new();
    let _ = within(
        STEP_TIMEOUT,
        "the gateway closes",
        plain.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer on a TLS port: {answer:?}"
    );
    drop(TcpStream::connect(sites.addr).await.expect("connect"));

    eventually(STEP_TIMEOUT, "each failure counted by its kind", || {
        let metrics = sites.gateway.metrics();
        let got: Vec<f64> = ["timeout", "client_closed", "protocol"]
            .iter()
            .map(|kind| metrics.metric(FAILURES, &[("kind", kind)]))
            .collect();
        if got == [SILENT as f64, 1.0, 1.0] {
            Ok(())
        } else {
            Err(format!("timeout, client_closed, protocol: {got:?}"))
        }
    })
    .await;
    let stderr = sites.gateway.stderr_text();
    for kind in ["timeout", "client_closed", "protocol"] {
        assert!(
            stderr
                .lines()
                .any(|line| line.contains("TLS handshake failed")
                    && line.contains(&format!("kind=\"{kind}\""))),
            "a log line for {kind}:\n{stderr}"
        );
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smuggling_guard_works_over_tls() {
    let sites = Sites::start("the_smuggling_guard_works_over_tls", &[]).await;
    let stream = tls::connect(sites.addr, &sites.ca.client(), "www.example.com")
        .await
        .expect("handshake");
    let mut client = KeepAlive::over(stream);
    let reply = client
        .send_raw(
            b"POST / HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(reply.status(), Some(400), "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("both Transfer-Encoding and Content-Length"),
        "{}",
        reply.text()
    );
    assert!(sites.backends.iter().all(|b| b.seen().is_empty()));
}

/// An http and an https listener with basic rules to one pool of two backends, with cookie
/// affinity.
async fn affinity_gateway(test: &str) -> (Gateway, Ca, [HttpBackend; 2], ConfigFile) {
    let ca = Ca::new("listener CA");
    let backends = [
        HttpBackend::start("one").await,
        HttpBackend::start("two").await,
    ];
    let dir = ScratchDir::new(test);
    let (certificate, key) = ca.leaf(&["app.test"]).write(&dir, "app");
    let config = Config::new()
        .listener(Listener::http("plain", "127.0.0.1:0"))
        .listener(Listener::https("secure", "127.0.0.1:0", certificate, key))
        .pool("pool", [backends[0].addr(), backends[1].addr()])
        .settings(Settings::http("sticky", 80).cookie_affinity(true))
        .rule(Rule::basic("plain", "plain", "pool", "sticky"))
        .rule(Rule::basic("secure", "secure", "pool", "sticky"));
    let config = ConfigFile::in_dir(dir, &config);
    let gateway = Gateway::builder().config(config.path()).start();
    (gateway, ca, backends, config)
}

fn set_cookie(head: &Head) -> Option<&str> {
    head.headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_affinity_cookie_is_secure_on_https_only() {
    let (gateway, ca, _backends, _dir) =
        affinity_gateway("the_affinity_cookie_is_secure_on_https_only").await;
    let [plain, secure] = [gateway.listen_addrs()[0], gateway.listen_addrs()[1]];

    let mut client = KeepAlive::connect(plain).await;
    let reply = client.send("GET", "/", "app.test", &[], &[]).await;
    let cookie = set_cookie(&reply.head).expect("a cookie on http");
    assert!(cookie.ends_with("; Path=/; HttpOnly"), "{cookie}");

    let stream = tls::connect(secure, &ca.client(), "app.test")
        .await
        .expect("handshake");
    let mut client = KeepAlive::over(stream);
    let reply = client.send("GET", "/", "app.test", &[], &[]).await;
    let cookie = set_cookie(&reply.head).expect("a cookie on https");
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=None; Secure"),
        "{cookie}"
    );
    // It pins: the same backend every time, and no new cookie.
    let pair = cookie_pair([cookie], "ApplicationGatewayAffinity").expect("the cookie");
    let pinned = reply.header("x-backend").expect("X-Backend").to_owned();
    for _ in 0..4 {
        let again = client
            .send("GET", "/", "app.test", &[("Cookie", &pair)], &[])
            .await;
        assert_eq!(again.header("x-backend"), Some(pinned.as_str()));
        assert_eq!(set_cookie(&again.head), None);
    }

    // The 101 of an upgrade over TLS carries it too.
    let mut stream = tls::connect(secure, &ca.client(), "app.test")
        .await
        .expect("handshake");
    let key = http::new_key();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the upgrade");
    let (head, _) = within(STEP_TIMEOUT, "the 101", http::read_head(&mut stream))
        .await
        .expect("read the 101");
    check_switching_protocols(&head, &key);
    let cookie = set_cookie(&head).expect("a cookie on the 101");
    assert!(cookie.ends_with("; SameSite=None; Secure"), "{cookie}");
}
