//! Probes other than plain http ones of a `[[probes]]` entry: https probes (the backend's
//! certificate checked against the probed name) and Azure's default probe.

use gateway_tests::{
    admin::wait_backend,
    config::{ConfigFile, Probe, Protocol, Settings},
    health::{get, get_ok, listener, probe, rules, settings, HealthBackend, ProbeAnswer},
    http_backend::HttpBackend,
    oneshot::ScratchDir,
    tls::Ca,
    Gateway,
};

/// An https probe verifies the backend's certificate against the name it probes: with the
/// settings' host (the certificate's name) the backend is healthy; with a probe `host` the
/// certificate does not cover it is unhealthy, with the TLS error in `last_probe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_probes_check_the_certificate_against_the_probed_name() {
    let test = "https_probes_check_the_certificate_against_the_probed_name";
    let ca = Ca::new("backend CA");
    let tls = HttpBackend::start_tls("tls", ca.leaf(&["api.test"]).server()).await;
    let dir = ScratchDir::new(test);
    let ca_path = ca.write(&dir, "backend-ca.pem");
    let https = |name: &str, probe: &str| {
        Settings::https(name, 443, &ca_path)
            .host_header("api.test")
            .probe(probe)
    };
    let https_probe = |name: &str| Probe {
        protocol: Protocol::Https,
        ..probe(name).thresholds(1, 1)
    };
    let config = listener()
        .pool("good", [tls.addr()])
        .pool("bad", [tls.addr()])
        .probe(https_probe("settings-host").pick_host_name_from_backend_settings())
        .probe(https_probe("other-host").host("other.test"))
        .settings(https("tls-good", "settings-host"))
        .settings(https("tls-bad", "other-host"))
        .rule(rules(("good", "tls-good"), &[("bad", "bad", "tls-bad")]));
    let config = ConfigFile::in_dir(dir, &config);
    let gateway = Gateway::builder().config(config.path()).start();
    let listen = gateway.listen_addr();

    let good = wait_backend(
        &gateway,
        "good",
        tls.addr(),
        "the https probe passes",
        |view| view.state == "healthy",
    )
    .await;
    assert_eq!(good.last().status, Some(200), "{}", good.json);
    let bad = wait_backend(
        &gateway,
        "bad",
        tls.addr(),
        "the misnamed probe fails",
        |view| view.state == "unhealthy",
    )
    .await;
    assert_eq!(bad.last().status, None, "{}", bad.json);
    assert!(
        bad.error()
            .contains("certificate is not valid for the server name"),
        "a TLS error: {}",
        bad.json
    );
    let probed = tls.seen();
    let probe_seen = probed
        .iter()
        .find(|seen| seen.head.path() == "/health")
        .expect("the backend saw the https probe");
    assert_eq!(probe_seen.sni.as_deref(), Some("api.test"));
    assert_eq!(probe_seen.head.header("host"), Some("api.test"));

    assert_eq!(get_ok(listen, "/").await, "tls");
    let reply = get(listen, "/bad/x").await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text());
    assert!(String::from_utf8_lossy(&reply.body).contains("no healthy backend"));
}

/// With default probes on and no `probe` in the settings, every backend gets Azure's
/// `GET /` on the settings' protocol: one answering 200 is healthy, one answering 404 is
/// unhealthy after that first probe (the first result decides, whatever the threshold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_probes_get_slash_and_the_first_result_decides() {
    let test = "default_probes_get_slash_and_the_first_result_decides";
    let ok = HealthBackend::start("ok", ProbeAnswer::Pass).await;
    let missing = HealthBackend::start("missing", ProbeAnswer::Status(404)).await;
    let config = listener()
        .pool("ok", [ok.addr()])
        .pool("missing", [missing.addr()])
        .settings(settings("plain"))
        .rule(rules(("ok", "plain"), &[("missing", "missing", "plain")]));
    let config = ConfigFile::new(test, &config);
    let gateway = Gateway::builder()
        .config(config.path())
        .default_probes()
        .start();

    let healthy = wait_backend(
        &gateway,
        "ok",
        ok.addr(),
        "the default probe passes",
        |view| view.state == "healthy",
    )
    .await;
    assert_eq!(
        healthy.probe.as_deref(),
        Some("default"),
        "{}",
        healthy.json
    );
    assert_eq!(healthy.last().status, Some(200), "{}", healthy.json);
    let down = wait_backend(
        &gateway,
        "missing",
        missing.addr(),
        "the 404 fails",
        |view| view.state == "unhealthy",
    )
    .await;
    assert_eq!(down.probe.as_deref(), Some("default"), "{}", down.json);
    assert_eq!(
        down.consecutive_failures, 1,
        "one failure decides: {}",
        down.json
    );
    assert_eq!(down.last().status, Some(404), "{}", down.json);
    assert_eq!(down.error(), "status 404 not in 200-399", "{}", down.json);
    for backend in [&ok, &missing] {
        let probes = backend.probes();
        let head = probes.first().expect("probed");
        assert_eq!(head.method(), "GET", "{}", head.text());
        assert_eq!(head.path(), "/", "{}", head.text());
        assert!(head.header("host").is_some(), "{}", head.text());
    }
    assert_eq!(get_ok(gateway.listen_addr(), "/").await, "ok");
    let reply = get(gateway.listen_addr(), "/missing/x").await;
    assert_eq!(reply.status(), Some(502), "{}", reply.text());
}
