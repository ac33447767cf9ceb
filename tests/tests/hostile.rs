//! What the gateway does not pass on at the edge: header names a backend could read as
//! other headers, and a backend's `101` that nobody asked for. Requests are raw bytes on a
//! fresh connection; the backends record what reaches them.

use std::time::Duration;

use gateway_tests::{
    admin,
    backend::{RawBackend, RawConn},
    config::{Config, ConfigFile, Global, Listener, PathRule, Rule, Settings},
    data::Summary,
    http::{self, Head},
    http_backend::HttpBackend,
    wait::within,
    Gateway,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `request`, reads until the answer's head is in; returns it.
async fn answer_head(gateway: std::net::SocketAddr, request: &[u8]) -> Head {
    answer(gateway, request, false).await.0
}

/// Writes `request` on a fresh connection and reads the answer: its head, and its body
/// when `body` (framed by Content-Length or chunked).
async fn answer(gateway: std::net::SocketAddr, request: &[u8], body: bool) -> (Head, String) {
    let mut stream = TcpStream::connect(gateway).await.expect("connect");
    stream.write_all(request).await.expect("send the request");
    let mut all = Vec::new();
    within(STEP_TIMEOUT, "the gateway answers", async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = http::head_end(&all) {
                let head = Head::parse(&all[..end]).expect("parse the answer");
                if !body {
                    return (head, String::new());
                }
                let rest = http::complete_body(&head, &all[end..]).expect("a framed body");
                if let Some(rest) = rest {
                    return (head, String::from_utf8_lossy(&rest).into_owned());
                }
            }
            let n = stream.read(&mut buf).await.expect("read the answer");
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&all)
            );
            all.extend_from_slice(&buf[..n]);
        }
    })
    .await
}

/// `Transfer_Encoding` next to a `Content-Length` the gateway framed the request by: a
/// backend that reads `_` as `-` would frame it differently. Such names never reach it;
/// ordinary ones do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_or_dots_are_dropped() {
    let backend = HttpBackend::start("recording").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let request = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
        Transfer_Encoding: chunked\r\nX_Real_IP: 10.0.0.1\r\nX.Dotted: 1\r\nX-Kept: yes\r\n\r\nhello";
    let head = answer_head(gateway.listen_addr(), request).await;
    assert_eq!(head.status(), Some(200), "{}", head.text());
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "one request reaches the backend");
    let names: Vec<&str> = seen[0]
        .head
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
        "the backend got {names:?}"
    );
    assert_eq!(seen[0].head.header("x-kept"), Some("yes"), "{names:?}");
    assert_eq!(seen[0].head.header("content-length"), Some("5"));
    assert_eq!(
        seen[0].body,
        Summary::of(b"hello"),
        "the body arrives whole"
    );
}

/// A `101` to a plain GET is a broken backend: the client gets a 502, never a bare 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_nobody_asked_for_is_a_bad_gateway() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .expect("backend writes the 101");
        // Keeps the connection open, as a backend that switched would.
        let mut rest = Vec::new();
        let _ = conn.stream.read_to_end(&mut rest).await;
    })
    .await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let head = answer_head(
        gateway.listen_addr(),
        b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(head.status(), Some(502), "{}", head.text());
    assert_eq!(
        backend.requests().len(),
        1,
        "the request did reach the backend"
    );
}

/// A malformed chunked body is the client's fault: `400`, never a `502` blamed on the
/// backend, and the backend is not marked failing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let backend = HttpBackend::start("recording").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let cases: [(&str, &[u8]); 3] = [
        (
            "a chunk size that overflows",
            b"FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
        ),
        ("a chunk size that is not hex", b"zz\r\nabc\r\n0\r\n\r\n"),
        (
            "more data than the chunk size says",
            b"3\r\nabcdef\r\n0\r\n\r\n",
        ),
    ];
    for (what, body) in cases {
        let mut request =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let head = answer_head(gateway.listen_addr(), &request).await;
        assert_eq!(head.status(), Some(400), "{what}: {}", head.text());
    }
    let view = admin::backend(&gateway, "cli-backends", backend.addr());
    assert_eq!(
        view.passive_failures, 0,
        "a client's body counted against the backend: {}",
        view.json
    );
}

/// `/admin/*` and `/@team/*` to `protected`, every other path to `open`, on one http
/// listener.
fn admin_paths(protected: &HttpBackend, open: &HttpBackend, global: Global) -> Config {
    Config::new()
        .global(global)
        .listener(Listener::http("web", "127.0.0.1:0"))
        .pool("protected", [protected.addr()])
        .pool("open", [open.addr()])
        .settings(Settings::http("s", 80))
        .rule(
            Rule::path_based("paths", "web", "open", "s").path(PathRule::to(
                "admin",
                ["/admin/*", "/@team/*"],
                "protected",
                "s",
            )),
        )
}

/// The request target `backend` saw last, and how many requests it saw.
fn last_target(backend: &HttpBackend) -> (usize, String) {
    let seen = backend.seen();
    let target = seen.last().map(|s| s.head.path().to_owned());
    (seen.len(), target.unwrap_or_default())
}

/// Every spelling of `/admin/secret` that once went past an `/admin/*` rule to the default
/// pool now takes the rule, and the backend is sent the path the rule matched; spellings
/// with no safe normal form get `400` and reach no backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rules_cannot_be_bypassed_by_spelling_the_path_another_way() {
    let protected = HttpBackend::start("protected").await;
    let open = HttpBackend::start("open").await;
    let file = ConfigFile::new(
        "path_rules_cannot_be_bypassed",
        &admin_paths(&protected, &open, Global::default()),
    );
    let gateway = Gateway::builder().config(file.path()).start();
    let spellings = [
        ("/admin/secret", "/admin/secret"),
        ("/%61dmin/secret", "/admin/secret"),
        ("/ADMIN/secret", "/ADMIN/secret"),
        ("//admin/secret", "/admin/secret"),
        ("/./admin/secret", "/admin/secret"),
        ("/x/../admin/secret", "/admin/secret"),
        ("/../admin/secret", "/admin/secret"),
        ("/admin;x/secret", "/admin;x/secret"),
        ("/%2e/admin/secret", "/admin/secret"),
        ("/%2E%2E/%41dmin//secret?q=%2e", "/Admin/secret?q=%2e"),
        // Encoded or raw, `@` is `@` to a backend: to the rules as well.
        ("/%40team/x", "/%40team/x"),
        ("/@TEAM/x", "/@TEAM/x"),
    ];
    for (i, (spelling, sent)) in spellings.iter().enumerate() {
        let request = format!("GET {spelling} HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = answer_head(gateway.listen_addr(), request.as_bytes()).await;
        assert_eq!(head.status(), Some(200), "{spelling}: {}", head.text());
        assert_eq!(
            head.header("x-backend"),
            Some("protected"),
            "{spelling} went past the /admin/* rule"
        );
        assert_eq!(
            last_target(&protected),
            (i + 1, (*sent).to_owned()),
            "{spelling}: what the backend was sent"
        );
    }
    assert_eq!(open.seen().len(), 0, "nothing reached the default pool");

    // A WebSocket upgrade is routed on the same normal form.
    let key = http::new_key();
    let upgrade = http::upgrade_request(gateway.listen_addr(), "/%61dmin/./ws", &key);
    let head = answer_head(gateway.listen_addr(), &upgrade).await;
    assert_eq!(head.status(), Some(101), "{}", head.text());
    assert_eq!(last_target(&protected).1, "/admin/ws");

    let refused = [
        ("/admin%2fsecret", "encoded slash"),
        ("/admin%5Csecret", "encoded slash"),
        ("/admin\\secret", "backslash"),
        ("/x/..;/admin/secret", "dot segment with parameters"),
        ("/admin/%zz", "two hex digits"),
    ];
    for (spelling, words) in refused {
        let request = format!("GET {spelling} HTTP/1.1\r\nHost: a\r\n\r\n");
        let (head, body) = answer(gateway.listen_addr(), request.as_bytes(), true).await;
        assert_eq!(head.status(), Some(400), "{spelling}: {}", head.text());
        assert!(body.contains(words), "{spelling}: {body}");
    }
    let reached = protected.seen().len() + open.seen().len();
    assert_eq!(
        reached,
        spellings.len() + 1,
        "a refused path reached a backend"
    );
}

/// With `path_escaped_slashes = "decode"`, `%2F` is a separator for the rules and the
/// backend alike; with `merge_slashes = false`, `//` stays, and is not `/admin/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_policy_is_configurable() {
    let protected = HttpBackend::start("protected").await;
    let open = HttpBackend::start("open").await;
    let global = Global {
        merge_slashes: Some(false),
        path_escaped_slashes: Some("decode".into()),
        ..Global::default()
    };
    let file = ConfigFile::new(
        "the_path_policy_is_configurable",
        &admin_paths(&protected, &open, global),
    );
    let gateway = Gateway::builder().config(file.path()).start();
    for (spelling, backend, sent) in [
        ("/admin%2Fsecret", "protected", "/admin/secret"),
        ("/x/..%2fadmin%5csecret", "protected", "/admin/secret"),
        ("//admin/secret", "open", "//admin/secret"),
    ] {
        let request = format!("GET {spelling} HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = answer_head(gateway.listen_addr(), request.as_bytes()).await;
        assert_eq!(head.status(), Some(200), "{spelling}: {}", head.text());
        assert_eq!(head.header("x-backend"), Some(backend), "{spelling}");
        let seen_by = if backend == "protected" {
            &protected
        } else {
            &open
        };
        assert_eq!(last_target(seen_by).1, sent, "{spelling}");
    }
}
