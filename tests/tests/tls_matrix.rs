//! The matrix, end to end with real TLS: every rule kind (basic, path_based, redirect) ×
//! listener protocol (http, https) × backend protocol (http, https) × {HTTP request,
//! WebSocket}. Each cell checks which backend answered, the forwarded headers
//! (`X-Forwarded-Proto`/`-Port`, `Host`, and the SNI the https backend saw), the bytes
//! (256 KiB each way, by length and SHA-256, through bodies and tunnels), and the tunnel's
//! mode in `/metrics`: spliced only for an http listener to an http backend on the eBPF
//! dataplane, relayed in userspace otherwise. A redirect cell checks the redirect (and that
//! an upgrade gets it with no tunnel), then follows it to the other listener.
//!
//! One gateway per rule kind and dataplane serves every cell of it: an http bind and an
//! https bind with the same sites on each (certificates from a CA made in the test, backends
//! trusting another).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use gateway_tests::{
    config::{Config, ConfigFile, Listener, PathRule, Redirect, Rule, Settings},
    data::{random_bytes, seeded_rng, Summary},
    dataplane_tests,
    http::{self, Head},
    http_backend::HttpBackend,
    http_client::{ws_echo_exchange, ws_upgrade, KeepAlive},
    oneshot::ScratchDir,
    ports::ReservedPort,
    skip_unprivileged,
    tls::{connect_any, AnyStream, Ca},
    tunnels,
    wait::within,
    Dataplane, Gateway,
};
use rustls::ClientConfig;
use tokio::io::AsyncWriteExt as _;

const BYTES: usize = 256 * 1024;
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The Host the `https-named` settings send, and verify the backend's certificate for.
const NAMED_BACKEND: &str = "api.backend.test";
const PROTOCOLS: &str = "chat.v2, chat.v1";
const EXTENSIONS: &str = "permessage-deflate; client_max_window_bits";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Http,
    Https,
}

use Proto::{Http, Https};

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Http => "http",
            Https => "https",
        }
    }

    /// In listener names: `p-…` (plain) and `t-…` (TLS).
    fn listener_prefix(self) -> &'static str {
        match self {
            Http => "p",
            Https => "t",
        }
    }

    /// In host names and backend names: `….h.test` / `…-h` (http backend), `s` (https).
    fn backend_letter(self) -> &'static str {
        match self {
            Http => "h",
            Https => "s",
        }
    }

    fn other(self) -> Self {
        match self {
            Http => Https,
            Https => Http,
        }
    }
}

/// The gateway, its six backends and what a client needs to reach it.
struct Matrix {
    gateway: Gateway,
    dataplane: Dataplane,
    /// `basic-h`, `paths-h`, `wild-h` (plain), `basic-s`, `paths-s`, `wild-s` (TLS).
    backends: Vec<HttpBackend>,
    /// The ports of the http and the https bind.
    ports: [u16; 2],
    /// Trusts the CA of the listeners' certificate.
    client: Arc<ClientConfig>,
    _config: ConfigFile,
    _reserved: [ReservedPort; 2],
}

impl Matrix {
    async fn start(test: &str, dataplane: Dataplane) -> Self {
        let (listener_ca, backend_ca) = (Ca::new("listener CA"), Ca::new("backend CA"));
        let backend_tls = backend_ca.leaf(&["127.0.0.1", NAMED_BACKEND]).server();
        let mut backends = Vec::new();
        for kind in ["basic", "paths", "wild"] {
            backends.push(HttpBackend::start(&format!("{kind}-h")).await);
            backends.push(HttpBackend::start_tls(&format!("{kind}-s"), backend_tls.clone()).await);
        }
        let dir = ScratchDir::new(test);
        let (certificate, key) = listener_ca
            .leaf(&["*.h.test", "*.s.test", "paths.test"])
            .write(&dir, "listener");
        let ca = backend_ca.write(&dir, "backend-ca.pem");
        // The sites of each bind share it, which port 0 cannot express.
        let reserved = [ReservedPort::new(), ReservedPort::new()];
        let ports = reserved.each_ref().map(ReservedPort::port);
        let files = Files {
            certificate,
            key,
            ca,
        };
        let config = ConfigFile::in_dir(dir, &config(ports, &backends, &files));
        let gateway = Gateway::builder()
            .config(config.path())
            .dataplane(dataplane)
            .start();
        assert_eq!(gateway.listen_addrs().len(), 2, "two binds");
        Self {
            gateway,
            dataplane,
            backends,
            ports,
            client: listener_ca.client(),
            _config: config,
            _reserved: reserved,
        }
    }

    fn port(&self, listener: Proto) -> u16 {
        match listener {
            Http => self.ports[0],
            Https => self.ports[1],
        }
    }

    fn backend(&self, name: &str) -> &HttpBackend {
        self.backends
            .iter()
            .find(|backend| backend.name() == name)
            .unwrap_or_else(|| panic!("no backend {name}"))
    }

    /// A connection to `listener`, over TLS with SNI `host` for https.
    async fn connect(&self, listener: Proto, host: &str) -> AnyStream {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port(listener)));
        let tls = (listener == Https).then_some((&self.client, host));
        within(
            STEP_TIMEOUT,
            "connect to the gateway",
            connect_any(addr, tls),
        )
        .await
    }

    /// Requests every backend has seen so far.
    fn requests_seen(&self) -> usize {
        self.backends.iter().map(|b| b.seen().len()).sum()
    }

    /// The mode a tunnel from `listener` to a `backend` backend must have.
    fn expected_mode(&self, listener: Proto, backend: Proto) -> &'static str {
        if self.dataplane == Dataplane::Ebpf && listener == Http && backend == Http {
            "spliced"
        } else {
            "userspace"
        }
    }

    fn opened(&self) -> [f64; 2] {
        tunnels::MODES.map(|mode| tunnels::opened(&self.gateway, mode))
    }
}

/// The PEM files of the configuration.
struct Files {
    certificate: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// Both binds carry the same seven sites, `p-…` on the http bind and `t-…` on the https
/// one: `basic.h.test` / `basic.s.test` (basic rules to `basic-h` / `basic-s`),
/// `paths.test` (`/h/*` to `paths-h`, `/s/*` to `paths-s` as `api.backend.test`, else
/// `paths-h`), `redirect-{p,t}.{h,s}.test` (redirects to the other bind's wildcard sites, 301
/// for h and 308 for s) and `*.h.test` / `*.s.test` (basic rules to `wild-h` / `wild-s`).
fn config(ports: [u16; 2], backends: &[HttpBackend], files: &Files) -> Config {
    let mut config = Config::new();
    for (listener, port) in [Http, Https].into_iter().zip(ports) {
        let x = listener.listener_prefix();
        let y = listener.other().listener_prefix();
        let bind = format!("127.0.0.1:{port}");
        // The listener `x-name` for `host`, and the rule `rule` makes for it.
        let site = |name: &str, host: &str, rule: &dyn Fn(&str) -> Rule| {
            let name = format!("{x}-{name}");
            let site = match listener {
                Http => Listener::http(&name, &bind),
                Https => Listener::https(&name, &bind, &files.certificate, &files.key),
            };
            Config::new()
                .listener(site.host_names([host]))
                .rule(rule(&name))
        };
        for backend in [Http, Https] {
            let b = backend.backend_letter();
            let settings = backend.as_str();
            let (basic, wild) = (format!("basic-{b}"), format!("wild-{b}"));
            let status = if backend == Http { 301 } else { 308 };
            let target = format!("{y}-wild-{b}");
            config = config
                + site(&basic, &format!("basic.{b}.test"), &|name| {
                    Rule::basic(name, name, &basic, settings)
                })
                + site(
                    &format!("redirect-{b}"),
                    &format!("redirect-{x}.{b}.test"),
                    &|name| {
                        Rule::redirect(name, name, Redirect::to_listener(&target).status(status))
                    },
                )
                + site(&wild, &format!("*.{b}.test"), &|name| {
                    Rule::basic(name, name, &wild, settings)
                });
        }
        config = config
            + site("paths", "paths.test", &|name| {
                Rule::path_based(name, name, "paths-h", "http")
                    .path(PathRule::to("h", ["/h/*"], "paths-h", "http"))
                    .path(PathRule::to("s", ["/s/*"], "paths-s", "https-named"))
            });
    }
    let config = backends.iter().fold(config, |config, backend| {
        config.pool(backend.name(), [backend.addr()])
    });
    config
        .settings(Settings::http("http", 80))
        .settings(Settings::https("https", 443, &files.ca))
        .settings(Settings::https("https-named", 443, &files.ca).host_header(NAMED_BACKEND))
}

/// Where a forwarded request must land, and what the backend must see.
struct Expect<'a> {
    backend: &'a str,
    backend_proto: Proto,
    /// The Host the backend gets (`None`: the client's).
    host: Option<&'a str>,
    /// The SNI the https backend sees (`None`: none, as for an IP address).
    sni: Option<&'a str>,
}

/// POSTs 256 KiB to `host` + `path` on `listener` asking for 256 KiB back.
async fn http_cell(m: &Matrix, listener: Proto, host: &str, path: &str, expect: &Expect<'_>) {
    let cell = format!("{} listener, HTTP {host}{path}", listener.as_str());
    let port = m.port(listener);
    let authority = format!("{host}:{port}");
    let body = random_bytes(&mut seeded_rng(&cell), BYTES);
    let mut client = KeepAlive::over(m.connect(listener, host).await);
    let reply = within(
        STEP_TIMEOUT,
        &cell,
        client.send(
            "POST",
            path,
            &authority,
            &[("X-Reply-Bytes", &BYTES.to_string())],
            &body,
        ),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{cell}: {}", reply.text());
    assert_eq!(reply.header("x-backend"), Some(expect.backend), "{cell}");
    assert_eq!(
        reply.header("x-request-body"),
        Some(Summary::of(&body).to_string().as_str()),
        "{cell}: the backend got the request body"
    );
    assert_eq!(reply.body.len(), BYTES, "{cell}");
    assert_eq!(
        reply.header("x-reply-body"),
        Some(Summary::of(&reply.body).to_string().as_str()),
        "{cell}: the client got the answer body"
    );
    let seen = m.backend(expect.backend).seen();
    let last = seen.last().expect("the backend saw the request");
    assert_eq!(last.head.path(), path, "{cell}");
    assert_forwarded(&last.head, listener, port, &authority, expect, &cell);
    assert_eq!(
        last.sni.as_deref(),
        expect.sni,
        "{cell}: SNI at the backend"
    );
}

/// A WebSocket to `host` + `path` on `listener`: 256 KiB each way, the subprotocol and
/// extension offers passed through, and the tunnel's mode.
async fn ws_cell(m: &Matrix, listener: Proto, host: &str, path: &str, expect: &Expect<'_>) {
    let cell = format!("{} listener, WebSocket {host}{path}", listener.as_str());
    let port = m.port(listener);
    let authority = format!("{host}:{port}");
    let before = m.opened();
    let stream = m.connect(listener, host).await;
    let (ws, response) = within(
        STEP_TIMEOUT,
        &cell,
        ws_upgrade(
            stream,
            &authority,
            path,
            &[
                ("Sec-WebSocket-Protocol", PROTOCOLS),
                ("Sec-WebSocket-Extensions", EXTENSIONS),
            ],
        ),
    )
    .await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("x-backend").as_deref(),
        Some(expect.backend),
        "{cell}"
    );
    assert_eq!(
        header("sec-websocket-protocol").as_deref(),
        Some("chat.v2"),
        "{cell}: the backend's choice of subprotocol reaches the client"
    );
    let (sent, received) = within(
        STEP_TIMEOUT,
        &cell,
        ws_echo_exchange(ws, &mut seeded_rng(&cell), BYTES),
    )
    .await;
    let record = m.backend(expect.backend).next_ws_record().await;
    assert_eq!(record.error, None, "{cell}: backend WebSocket error");
    assert_eq!(sent.len, BYTES as u64);
    assert_eq!(record.received, sent, "{cell}: bytes the backend received");
    assert_eq!(received, sent, "{cell}: bytes the client got back");
    let head = &record.head;
    assert_forwarded(head, listener, port, &authority, expect, &cell);
    assert_eq!(
        head.header("sec-websocket-protocol"),
        Some(PROTOCOLS),
        "{cell}"
    );
    assert_eq!(
        head.header("sec-websocket-extensions"),
        Some(EXTENSIONS),
        "{cell}"
    );

    let mode = m.expected_mode(listener, expect.backend_proto);
    let after = m.opened();
    for (i, name) in tunnels::MODES.iter().enumerate() {
        let want = before[i] + if *name == mode { 1.0 } else { 0.0 };
        assert_eq!(
            after[i], want,
            "{cell}: {name} tunnels opened (this one must be {mode})"
        );
    }
}

fn assert_forwarded(
    head: &Head,
    listener: Proto,
    port: u16,
    authority: &str,
    expect: &Expect<'_>,
    cell: &str,
) {
    let text = head.text();
    assert_eq!(
        head.header("x-forwarded-proto"),
        Some(listener.as_str()),
        "{cell}:\n{text}"
    );
    assert_eq!(
        head.header("x-forwarded-port"),
        Some(port.to_string().as_str()),
        "{cell}:\n{text}"
    );
    assert_eq!(head.header("x-original-host"), Some(authority), "{cell}");
    assert_eq!(
        head.header("host"),
        Some(expect.host.unwrap_or(authority)),
        "{cell}:\n{text}"
    );
}

fn for_backend(kind: &str, backend: Proto) -> String {
    format!("{kind}-{}", backend.backend_letter())
}

async fn basic(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let m = Matrix::start(test, dataplane).await;
    for listener in [Http, Https] {
        for backend in [Http, Https] {
            let name = for_backend("basic", backend);
            let host = format!("basic.{}.test", backend.backend_letter());
            let expect = Expect {
                backend: &name,
                backend_proto: backend,
                host: None,
                // Pool addresses are IPs: the certificate is checked for the IP, no SNI.
                sni: None,
            };
            http_cell(&m, listener, &host, "/upload?x=1", &expect).await;
            ws_cell(&m, listener, &host, "/chat", &expect).await;
        }
    }
}

async fn path_based(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let m = Matrix::start(test, dataplane).await;
    for listener in [Http, Https] {
        for backend in [Http, Https] {
            let b = backend.backend_letter();
            let name = for_backend("paths", backend);
            let named = (backend == Https).then_some(NAMED_BACKEND);
            let expect = Expect {
                backend: &name,
                backend_proto: backend,
                host: named,
                sni: named,
            };
            http_cell(
                &m,
                listener,
                "paths.test",
                &format!("/{b}/items?q=1"),
                &expect,
            )
            .await;
            ws_cell(&m, listener, "paths.test", &format!("/{b}/ws"), &expect).await;
        }
    }
}

async fn redirect(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let m = Matrix::start(test, dataplane).await;
    for listener in [Http, Https] {
        for backend in [Http, Https] {
            let target = listener.other();
            let host = format!(
                "redirect-{}.{}.test",
                listener.listener_prefix(),
                backend.backend_letter()
            );
            let status = if backend == Http { 301 } else { 308 };
            let path = "/r/page?q=1";
            let location = format!("{}://{host}:{}{path}", target.as_str(), m.port(target));
            let name = for_backend("wild", backend);
            let expect = Expect {
                backend: &name,
                backend_proto: backend,
                host: None,
                sni: None,
            };

            // An ordinary request: the redirect, then the request where it points.
            let seen = m.requests_seen();
            let mut client = KeepAlive::over(m.connect(listener, &host).await);
            let authority = format!("{host}:{}", m.port(listener));
            let reply = client.send("GET", path, &authority, &[], &[]).await;
            assert_eq!(reply.status(), Some(status), "{}", reply.text());
            assert_eq!(reply.header("location"), Some(location.as_str()));
            assert_eq!(m.requests_seen(), seen, "a redirect reaches no backend");
            http_cell(&m, target, &host, path, &expect).await;

            // An upgrade: the same redirect and no tunnel; then the WebSocket where it
            // points (for the http listener: http → https, then a WebSocket over TLS).
            let opened = m.opened();
            let mut stream = m.connect(listener, &host).await;
            let key = http::new_key();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .expect("send the upgrade");
            let (head, _) = within(STEP_TIMEOUT, "the redirect", http::read_head(&mut stream))
                .await
                .expect("read the answer");
            assert_eq!(head.status(), Some(status), "{}", head.text());
            assert_eq!(head.header("location"), Some(location.as_str()));
            assert_eq!(head.header("upgrade"), None);
            assert_eq!(m.opened(), opened, "no tunnel for a redirected upgrade");
            ws_cell(&m, target, &host, "/r/ws", &expect).await;
        }
    }
}

dataplane_tests!(basic => basic_rule_matrix_ebpf, basic_rule_matrix_userspace);
dataplane_tests!(path_based => path_based_rule_matrix_ebpf, path_based_rule_matrix_userspace);
dataplane_tests!(redirect => redirect_rule_matrix_ebpf, redirect_rule_matrix_userspace);
