//! The admin listener refuses what a browser on the host could send it (finding 12 of
//! issue 13): a `Host` that is not its own (DNS rebinding) gets 403, as does a
//! cross-origin `Origin`; with a token file every request needs the bearer token; a
//! request head that trickles in is cut at the head timeout. Requests are raw bytes; that a
//! refused `POST /reload` reloaded nothing is read from `gateway_config_generation`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use gateway_tests::{
    admin::{raw_request, RawAnswer},
    http_backend::HttpBackend,
    metrics::Metrics,
    oneshot::{self, ScratchDir},
    reload::generation,
    Gateway,
};

fn post_reload(admin: std::net::SocketAddr, headers: &str) -> RawAnswer {
    let request =
        format!("POST /reload HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    raw_request(admin, request.as_bytes())
}

fn refused(gateway: &Gateway, reason: &str) -> f64 {
    gateway
        .metrics()
        .metric("gateway_admin_refused_total", &[("reason", reason)])
}

/// `POST /reload` with a foreign `Host` (what a page of `evil.example` sends once its name
/// resolves to 127.0.0.1) is refused with a one-line reason and reloads nothing; the
/// admin's own address, `localhost` and a configured name are served.
#[tokio::test]
async fn a_foreign_host_is_refused_and_does_not_reload() {
    let backend = HttpBackend::start("b").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .arg("--admin-host-name")
        .arg("gw-admin.test")
        .start();
    let admin = gateway.admin_addr();
    let port = admin.port();

    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("127.0.0.2:{port}"),
    ] {
        let answer = post_reload(admin, &format!("Host: {host}\r\n"));
        assert_eq!(answer.status(), 403, "Host {host}: {answer:?}");
        assert_eq!(
            answer.body.lines().count(),
            1,
            "one line: {:?}",
            answer.body
        );
        assert!(
            answer.body.contains("is not this admin listener's address"),
            "{:?}",
            answer.body
        );
    }
    let answer = post_reload(admin, "");
    assert_eq!(answer.status(), 403, "no Host: {answer:?}");
    assert_eq!(generation(&gateway), 1.0, "a refused request reloaded");
    assert_eq!(refused(&gateway, "host"), 4.0);
    gateway
        .logged("the refusal's log line", |text| {
            text.contains("admin request refused") && text.contains("reason=\"host\"")
        })
        .await;

    let mut expected = 1.0;
    for host in [
        admin.to_string(),
        format!("localhost:{port}"),
        format!("GW-Admin.test:{port}"),
    ] {
        let answer = post_reload(admin, &format!("Host: {host}\r\n"));
        assert_eq!(answer.status(), 200, "Host {host}: {answer:?}");
        expected += 1.0;
        assert_eq!(generation(&gateway), expected, "Host {host} reloaded");
    }
}

/// A cross-site page's POST carries its `Origin` (and `Sec-Fetch-Site`): refused, nothing
/// reloaded. The admin's own origin is served.
#[tokio::test]
async fn a_cross_origin_request_is_refused_and_the_same_origin_served() {
    let backend = HttpBackend::start("b").await;
    let gateway = Gateway::builder().backend(backend.addr()).start();
    let admin = gateway.admin_addr();
    let host = format!("Host: {admin}\r\n");

    for extra in [
        "Origin: http://evil.example\r\n".to_owned(),
        "Origin: null\r\n".to_owned(),
        format!("Origin: http://localhost:{}\r\n", admin.port()),
        "Sec-Fetch-Site: cross-site\r\n".to_owned(),
    ] {
        let answer = post_reload(admin, &format!("{host}{extra}"));
        assert_eq!(answer.status(), 403, "{extra}: {answer:?}");
        assert!(
            answer.body.starts_with("refused: cross-origin request"),
            "{:?}",
            answer.body
        );
    }
    assert_eq!(generation(&gateway), 1.0, "a cross-origin request reloaded");
    assert_eq!(refused(&gateway, "origin"), 4.0);

    let same = format!("{host}Origin: http://{admin}\r\nSec-Fetch-Site: same-origin\r\n");
    let answer = post_reload(admin, &same);
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(generation(&gateway), 2.0);
}

/// A temporary token file, removed on drop.
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(name: &str, token: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("gateway-admin-{}-{name}", std::process::id()));
        std::fs::write(&path, format!("{token}\n")).expect("write the token file");
        Self(path)
    }

    fn write(&self, token: &str) {
        std::fs::write(&self.0, format!("{token}\n")).expect("rewrite the token file");
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// With `--admin-token-file`, every endpoint needs `Authorization: Bearer TOKEN`: none or a
/// wrong one is 401 with `WWW-Authenticate: Bearer`, and reloads nothing. A reload reads the
/// file again: the new token works, the old one no longer does.
#[tokio::test]
async fn the_bearer_token_is_enforced_when_configured() {
    let token = TokenFile::new("token", "first-Token_0123");
    let backend = HttpBackend::start("b").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .arg("--admin-token-file")
        .arg(token.0.display().to_string())
        .start();
    let admin = gateway.admin_addr();
    let get = |path: &str, auth: &str| {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n");
        raw_request(admin, request.as_bytes())
    };
    let with = |token: &str| format!("Authorization: Bearer {token}\r\n");

    for path in ["/metrics", "/backends", "/tunnels"] {
        let answer = get(path, "");
        assert_eq!(answer.status(), 401, "{path}: {answer:?}");
        assert_eq!(
            answer.head.header("www-authenticate"),
            Some("Bearer realm=\"gateway admin\"")
        );
        let answer = get(path, &with("first-Token_012"));
        assert_eq!(answer.status(), 401, "{path}: {answer:?}");
        assert!(answer
            .head
            .header("www-authenticate")
            .is_some_and(|c| c.contains("error=\"invalid_token\"")));
        assert_eq!(get(path, &with("first-Token_0123")).status(), 200, "{path}");
    }
    let host = format!("Host: {admin}\r\n");
    let answer = post_reload(admin, &format!("{host}{}", with("wrong")));
    assert_eq!(answer.status(), 401, "{answer:?}");
    let metrics = get("/metrics", &with("first-Token_0123"));
    let metrics = Metrics::parse(&metrics.body);
    assert_eq!(
        metrics.metric("gateway_config_generation", &[]),
        1.0,
        "a refused reload ran"
    );
    assert_eq!(
        metrics.metric("gateway_admin_refused_total", &[("reason", "token")]),
        7.0
    );

    token.write("second-Token_4567");
    let answer = post_reload(admin, &format!("{host}{}", with("first-Token_0123")));
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(get("/metrics", &with("first-Token_0123")).status(), 401);
    let metrics = get("/metrics", &with("second-Token_4567"));
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        Metrics::parse(&metrics.body).metric("gateway_config_generation", &[]),
        2.0
    );
}

/// A token file that cannot be used refuses the start, as a bad certificate does: exit 64
/// with the flag named and nothing served.
#[test]
fn an_empty_or_missing_token_file_refuses_the_start() {
    let dir = ScratchDir::new("admin-token-start");
    let empty = dir.write("empty.token", "\n");
    let missing = dir.path().join("missing.token");
    for (path, problem) in [
        (&empty, "is empty"),
        (&missing, "cannot read the admin token file"),
    ] {
        let path = path.to_str().expect("UTF-8 path");
        let done = oneshot::gateway(
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "127.0.0.1:9",
                "--admin",
                "127.0.0.1:0",
                "--admin-token-file",
                path,
            ],
            Duration::from_secs(20),
        );
        assert_eq!(done.code(), Some(64), "stderr:\n{}", done.stderr);
        assert!(!done.stdout.contains("gateway ready"), "{}", done.stdout);
        assert!(
            done.stderr.contains("--admin-token-file"),
            "{}",
            done.stderr
        );
        assert!(done.stderr.contains(problem), "{}", done.stderr);
    }
}

/// A request head that trickles in (slowloris) on the admin port is closed once the head
/// timeout (`--handshake-timeout-secs 1`) runs out, and the listener still answers.
#[tokio::test]
async fn a_slow_head_on_the_admin_port_is_closed_at_the_head_timeout() {
    let backend = HttpBackend::start("b").await;
    let gateway = Gateway::builder()
        .backend(backend.addr())
        .handshake_timeout_secs(1)
        .start();
    let admin = gateway.admin_addr();
    let mut slow = TcpStream::connect(admin).expect("connect to the admin listener");
    let started = Instant::now();
    slow.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nX-Slow: a").as_bytes())
        .expect("send a partial head");
    // Generous: the timeout is 1 s; without one the connection stays open for good.
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("set a read timeout");
    let mut rest = Vec::new();
    match slow.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(error) => panic!("the admin listener kept a partial head open: {error}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the timeout"
    );
    // hyper answers 408 to a head that timed out, or nothing.
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    assert_eq!(
        gateway.metrics().metric("gateway_config_generation", &[]),
        1.0
    );
}
