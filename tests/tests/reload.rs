//! Configuration reload (SIGHUP, `POST /reload`), end to end: a valid configuration is
//! applied as a diff while WebSocket tunnels keep carrying bytes both ways (checked by length
//! and SHA-256 at both ends; spliced ones stay spliced); an invalid one is refused with every
//! problem and the old one keeps serving; kept listeners keep their sockets (port 0 too) and
//! never refuse a connect, removed ones stop accepting while their open connections get
//! their answers, added ones serve; a tunnel whose backend left the configuration survives;
//! a new bind that cannot be bound refuses the whole reload; during the shutdown drain
//! reloads are refused.

use std::{io, net::SocketAddr, time::Duration};

use gateway_tests::{
    busy::{finish_and_check, open_busy, wait_flowing, BusyTunnel},
    config::{Config, ConfigFile, Listener, OnBackendDown, Rule, Settings},
    data::seeded_rng,
    dataplane_tests,
    http::{self, Head},
    http_backend::{backend_of, HttpBackend},
    http_client::{ws_connect_as, ws_echo_exchange},
    oneshot,
    ports::ReservedPort,
    reload::{generation, pools, post_reload, reloads, site, wait_reloaded, ConnectLoop},
    skip_unprivileged,
    tunnels::{self, splice_map_entries},
    wait::{eventually, within},
    ws_echo::{echo_one_by_one, ended},
    Dataplane, Gateway,
};
use tokio::{io::AsyncReadExt as _, io::AsyncWriteExt as _, net::TcpStream};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Tunnels kept busy across a reload.
const TUNNELS: usize = 4;
/// Bytes each tunnel must echo after the reload before it is finished.
const AFTER_RELOAD_BYTES: u64 = 2 << 20;

/// Finishes every tunnel, checks its bytes at both ends, and that each carried more than
/// [`AFTER_RELOAD_BYTES`].
async fn finish_after_reload(tunnels: Vec<BusyTunnel>, backend: &HttpBackend) {
    for sent in finish_and_check(tunnels, backend).await {
        assert!(sent.len > AFTER_RELOAD_BYTES, "the tunnel carried {sent}");
    }
}

// ---------------------------------------------------------------------------------------
// a. Tunnels span a reload under load.

/// Busy tunnels on `/ws` (to `alpha`) across a SIGHUP reload that adds a path rule to a new
/// pool and changes a timeout: the reload applies (new requests follow the new rules), the
/// tunnels keep carrying bytes both ways, every byte arrives, and spliced tunnels stay
/// spliced.
async fn tunnels_span_a_reload(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let (alpha, beta) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let before = site("web", "127.0.0.1:0", "alpha", &[]) + pools(&[("alpha", alpha.addr())], 30);
    let config = ConfigFile::new(test, &before);
    let gateway = Gateway::builder()
        .config(config.path())
        .dataplane(dataplane)
        .start();
    let listen = gateway.listen_addr();
    assert_eq!(backend_of(listen, "/beta/x").await, "alpha");

    let tunnels = open_busy(listen, "/ws", TUNNELS, test).await;
    wait_flowing(
        &tunnels,
        256 << 10,
        STEP_TIMEOUT,
        "tunnels flow before the reload",
    )
    .await;
    let mode = dataplane.tunnel_mode();
    let other = if mode == "spliced" {
        "userspace"
    } else {
        "spliced"
    };
    let tunnels_opened = tunnels::opened(&gateway, mode);
    assert_eq!(tunnels_opened, TUNNELS as f64, "tunnels opened as {mode}");
    let maps_before = splice_map_entries(&gateway, dataplane);

    let after = site("web", "127.0.0.1:0", "alpha", &[("/beta/*", "beta")])
        + pools(&[("alpha", alpha.addr()), ("beta", beta.addr())], 10);
    config.rewrite(&after);
    gateway.sighup();
    let line = wait_reloaded(&gateway, 2).await;
    assert!(
        line.contains("1 kept, 0 added") && line.contains("0 removed"),
        "the bind is kept: {line}"
    );
    let spliced_at_reload = tunnels::spliced_bytes(&gateway, "client_to_backend");

    // New requests follow the new rules, on the same socket.
    assert_eq!(gateway.listen_addr(), listen);
    assert_eq!(backend_of(listen, "/beta/x").await, "beta");
    assert_eq!(backend_of(listen, "/other").await, "alpha");

    // The old tunnels keep flowing, in the same mode.
    wait_flowing(
        &tunnels,
        AFTER_RELOAD_BYTES,
        STEP_TIMEOUT,
        "tunnels flow after the reload",
    )
    .await;
    assert_eq!(
        tunnels::active(&gateway, mode),
        TUNNELS as f64,
        "every tunnel is still open as {mode}"
    );
    if dataplane == Dataplane::Ebpf {
        // Still in the splice maps, and the kernel kept carrying their bytes.
        assert_eq!(splice_map_entries(&gateway, dataplane), maps_before);
        let spliced_now = tunnels::spliced_bytes(&gateway, "client_to_backend");
        assert!(
            spliced_now > spliced_at_reload,
            "the kernel carried bytes after the reload: {spliced_at_reload} -> {spliced_now}"
        );
    }

    finish_after_reload(tunnels, &alpha).await;
    assert_eq!(tunnels::opened(&gateway, mode), TUNNELS as f64);
    assert_eq!(
        tunnels::opened(&gateway, other),
        0.0,
        "no tunnel moved to {other}"
    );
    assert_eq!(reloads(&gateway, "ok"), 1.0);
    assert_eq!(generation(&gateway), 2.0);
}

dataplane_tests!(tunnels_span_a_reload => tunnels_span_a_reload_ebpf, tunnels_span_a_reload_userspace);

// ---------------------------------------------------------------------------------------
// b. An invalid configuration is refused whole.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_with_every_problem() {
    let test = "an_invalid_configuration_is_refused_with_every_problem";
    let alpha = HttpBackend::start("alpha").await;
    let valid = site("web", "127.0.0.1:0", "alpha", &[]) + pools(&[("alpha", alpha.addr())], 30);
    let config = ConfigFile::new(test, &valid);
    let gateway = Gateway::builder().config(config.path()).start();
    let listen = gateway.listen_addr();

    // An unknown key, a bind that is no address, a rule naming a pool that does not exist:
    // the text of the valid file, written by hand around it.
    let listener = "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n";
    let valid = valid.to_toml();
    assert!(valid.starts_with(listener), "{valid}");
    let invalid = valid.replacen(listener, &format!("{listener}colour = \"blue\"\n"), 1)
        + "\n[[listeners]]\nname = \"bad\"\nbind = \"nowhere\"\nprotocol = \"http\"\n\n\
           [[rules]]\nname = \"bad-rule\"\nkind = \"basic\"\nlistener = \"bad\"\n\
           backend_pool = \"missing\"\nbackend_settings = \"plain\"\n";
    config.rewrite_text(&invalid);
    let check = oneshot::gateway(
        &["check", "--config", &config.path().to_string_lossy()],
        STEP_TIMEOUT,
    );
    assert_eq!(check.code(), Some(64), "gateway check:\n{}", check.stderr);
    let mut problems: Vec<&str> = check.stderr.lines().collect();
    problems.pop(); // "N problems found in the configuration"
    assert!(problems.len() >= 3, "several problems:\n{}", check.stderr);

    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(422), "{}", reply.text());
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(
        body.lines().collect::<Vec<_>>(),
        problems,
        "POST /reload lists what `gateway check` lists"
    );
    let logged = gateway
        .logged("every problem logged", |text| {
            problems.iter().all(|problem| text.contains(problem))
                && text.contains("configuration reload refused")
        })
        .await;
    for problem in &problems {
        let line = logged
            .lines()
            .find(|line| line.contains(problem))
            .expect("the problem is logged");
        assert!(line.contains("ERROR"), "logged at error level: {line}");
    }

    // The old configuration still serves, on the same socket.
    assert_eq!(backend_of(listen, "/x").await, "alpha");
    assert_eq!(reloads(&gateway, "invalid"), 1.0);
    assert_eq!(reloads(&gateway, "ok"), 0.0);
    assert_eq!(generation(&gateway), 1.0);
}

// ---------------------------------------------------------------------------------------
// c. Listeners: kept, removed, added.

/// Three binds: `keep0` on port 0, `keep` on a fixed port, `gone`; the reload (by
/// `POST /reload`) drops `gone` and adds `added`. A client connecting to both kept binds all
/// along never fails; `gone` refuses connects once the reload answered, a request in flight
/// on it is answered, an idle connection on it is closed; `added` serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_kept_removed_and_added() {
    let test = "listeners_are_kept_removed_and_added";
    let alpha = HttpBackend::start("alpha").await;
    // Fixed ports, reserved until the end of the test: `keep` and `gone` for the gateway to
    // bind at start, `added` at the reload; `gone` refuses connects once the gateway closed
    // it, since the reservation does not listen.
    let reserved = [
        ReservedPort::new(),
        ReservedPort::new(),
        ReservedPort::new(),
    ];
    let [keep_port, gone_port, added_port] = reserved.each_ref().map(ReservedPort::port);
    let backends = pools(&[("alpha", alpha.addr())], 30);
    let keep0 = site("keep0", "127.0.0.1:0", "alpha", &[]);
    let keep = site("keep", format!("127.0.0.1:{keep_port}"), "alpha", &[]);
    let gone = site("gone", format!("127.0.0.1:{gone_port}"), "alpha", &[]);
    let added = site("added", format!("127.0.0.1:{added_port}"), "alpha", &[]);
    let config = ConfigFile::new(
        test,
        &(keep0.clone() + keep.clone() + gone + backends.clone()),
    );
    let gateway = Gateway::builder().config(config.path()).start();
    let binds = gateway.listen_addrs().to_vec();
    assert_eq!(binds.len(), 3, "{binds:?}");
    let (keep0_addr, keep_addr, gone_addr) = (binds[0], binds[1], binds[2]);
    assert_ne!(keep0_addr.port(), 0);

    // On `gone`: an idle keep-alive connection, and a request the backend answers slowly.
    let mut idle = TcpStream::connect(gone_addr)
        .await
        .expect("connect to gone");
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .expect("send a request on the idle connection");
    let (head, leftover) = http::read_head(&mut idle).await.expect("answer");
    http::read_body(&mut idle, &head, leftover)
        .await
        .expect("body");
    let in_flight = tokio::spawn(async move {
        let mut stream = TcpStream::connect(gone_addr)
            .await
            .expect("connect to gone");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x.test\r\nX-Delay-Ms: 1500\r\n\r\n")
            .await
            .expect("send the slow request");
        let (head, leftover) = http::read_head(&mut stream).await.expect("the slow answer");
        http::read_body(&mut stream, &head, leftover)
            .await
            .expect("the slow answer's body");
        let mut rest = Vec::new();
        // The connection is drained: closed after its answer.
        let closed = stream.read_to_end(&mut rest).await;
        (head, closed.map(|_| rest.len()))
    });
    eventually(STEP_TIMEOUT, "the slow request reaches the backend", || {
        if alpha.seen().iter().any(|seen| seen.head.path() == "/slow") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;

    let connects = ConnectLoop::start(vec![keep0_addr, keep_addr]);
    connects.wait_rounds(5).await;
    config.rewrite(&(keep0 + keep + added + backends));
    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let summary = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(
        summary.starts_with("reloaded: generation 2: binds 2 kept, 1 added")
            && summary.contains(&format!("127.0.0.1:{added_port}"))
            && summary.contains(&format!("1 removed [127.0.0.1:{gone_port}]")),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1, "one line: {summary}");

    // `gone` is closed once the reload answered.
    match TcpStream::connect(gone_addr).await {
        Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}"),
        Ok(_) => panic!("{gone_addr} still accepts after the reload removed it"),
    }
    let (head, closed): (Head, io::Result<usize>) =
        within(STEP_TIMEOUT, "the request in flight is answered", in_flight)
            .await
            .expect("in-flight task");
    assert_eq!(head.status(), Some(200), "{}", head.text());
    assert_eq!(head.header("x-backend"), Some("alpha"));
    assert!(
        matches!(closed, Ok(0)),
        "the drained connection closes after its answer: {closed:?}"
    );
    let mut rest = Vec::new();
    let idle_closed = within(
        STEP_TIMEOUT,
        "the idle connection on the removed bind closes",
        idle.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(idle_closed, Ok(0)),
        "idle connection: {idle_closed:?}"
    );

    // `added` serves; the kept ones kept their ports and never refused.
    let added_addr: SocketAddr = format!("127.0.0.1:{added_port}").parse().expect("addr");
    assert_eq!(backend_of(added_addr, "/new").await, "alpha");
    connects.wait_rounds(5).await;
    let (rounds, failures) = connects.finish().await;
    assert!(
        failures.is_empty(),
        "kept listeners failed {} of {rounds} rounds: {failures:?}",
        failures.len()
    );
    assert_eq!(backend_of(keep0_addr, "/k0").await, "alpha");
    assert_eq!(backend_of(keep_addr, "/k").await, "alpha");
    assert_eq!(reloads(&gateway, "ok"), 1.0);
    assert_eq!(generation(&gateway), 2.0);
}

// ---------------------------------------------------------------------------------------
// d. A tunnel whose backend left the configuration.

/// Tunnels to pool `old` (backend alpha) across a reload that removes the pool and sends
/// the rule to `new` (beta): with the default `on_backend_down = "keep"` they carry on, and
/// new tunnels go to beta.
async fn a_tunnel_survives_its_backend_leaving(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let (alpha, beta) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let config = ConfigFile::new(
        test,
        &(site("web", "127.0.0.1:0", "old", &[]) + pools(&[("old", alpha.addr())], 30)),
    );
    let gateway = Gateway::builder()
        .config(config.path())
        .dataplane(dataplane)
        .start();
    let tunnels = open_busy(gateway.listen_addr(), "/ws", 2, test).await;
    wait_flowing(
        &tunnels,
        256 << 10,
        STEP_TIMEOUT,
        "tunnels flow before the reload",
    )
    .await;

    config.rewrite(&(site("web", "127.0.0.1:0", "new", &[]) + pools(&[("new", beta.addr())], 30)));
    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(backend_of(gateway.listen_addr(), "/x").await, "beta");
    let (ws, response) = ws_connect_as(gateway.listen_addr(), "x.test", "/ws", None).await;
    let to = response
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap_or_default());
    assert_eq!(to, Some("beta"), "a new tunnel goes to the new pool");
    let (sent, received) = within(
        STEP_TIMEOUT,
        "a tunnel to the new pool",
        ws_echo_exchange(ws, &mut seeded_rng(test), 256 << 10),
    )
    .await;
    assert_eq!(received, sent, "the new tunnel echoes every byte");
    assert_eq!(beta.next_ws_record().await.received, sent);

    wait_flowing(
        &tunnels,
        AFTER_RELOAD_BYTES,
        STEP_TIMEOUT,
        "tunnels to the removed backend flow",
    )
    .await;
    finish_after_reload(tunnels, &alpha).await;
    let mode = dataplane.tunnel_mode();
    assert_eq!(tunnels::opened(&gateway, mode), 3.0);
}

dataplane_tests!(a_tunnel_survives_its_backend_leaving => a_tunnel_survives_its_backend_leaving_ebpf, a_tunnel_survives_its_backend_leaving_userspace);

/// With `on_backend_down = "close"`, a tunnel whose pool a reload removes is closed at once
/// (after carrying every byte sent before), counted as `backend_down`, and logged as
/// removed; with `"drain"` it keeps carrying bytes until the draining time is over.
async fn a_removed_backend_closes_or_drains_its_tunnels(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let (alpha, beta, gamma) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
        HttpBackend::start("gamma").await,
    );
    // Two settings: "plain" closes, "slow" drains for 2 s.
    let settings = |named: &[(&str, SocketAddr)]| {
        let plain = Settings::http("plain", 80)
            .request_timeout_secs(30)
            .on_backend_down(OnBackendDown::Close);
        named.iter().fold(
            Config::new()
                .settings(plain)
                .settings(Settings::http("slow", 80).drain(2)),
            |config, (name, addr)| config.pool(name, [addr]),
        )
    };
    // A second listener, to the pool `pool` through "slow".
    let drain_site = |pool: &str| {
        Config::new()
            .listener(Listener::http("d", "127.0.0.1:0"))
            .rule(Rule::basic("d-rule", "d", pool, "slow"))
    };
    let config = ConfigFile::new(
        test,
        &(site("web", "127.0.0.1:0", "old", &[])
            + drain_site("drained")
            + settings(&[("old", alpha.addr()), ("drained", gamma.addr())])),
    );
    let gateway = Gateway::builder()
        .config(config.path())
        .dataplane(dataplane)
        .start();
    let (web, drained_listener) = (gateway.listen_addrs()[0], gateway.listen_addrs()[1]);
    let (closing, _) = ws_connect_as(web, "x.test", "/ws", None).await;
    let (draining, _) = ws_connect_as(drained_listener, "x.test", "/ws", None).await;
    let mut rng = seeded_rng(test);
    let (closing, sent, received) = echo_one_by_one(closing, &mut rng).await;
    assert_eq!(received, sent, "bytes before the reload");
    let (draining, sent, received) = echo_one_by_one(draining, &mut rng).await;
    assert_eq!(received, sent, "bytes before the reload");

    // Both pools leave: "old" for "new", "drained" for "fresh".
    config.rewrite(
        &(site("web", "127.0.0.1:0", "new", &[])
            + drain_site("fresh")
            + settings(&[("new", beta.addr()), ("fresh", beta.addr())])),
    );
    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());

    within(STEP_TIMEOUT, "the closing tunnel ends", ended(closing)).await;
    // The draining one still carries bytes right after the reload, then ends.
    let (draining, sent, received) = echo_one_by_one(draining, &mut rng).await;
    assert_eq!(received, sent, "bytes while draining");
    within(STEP_TIMEOUT, "the draining tunnel ends", ended(draining)).await;

    let mode = dataplane.tunnel_mode();
    eventually(STEP_TIMEOUT, "both closes counted", || {
        let closed = gateway.metrics().metric(
            "gateway_tunnels_closed_total",
            &[("mode", mode), ("reason", "backend_down")],
        );
        if closed == 2.0 {
            Ok(())
        } else {
            Err(format!("{closed} tunnels closed for backend_down"))
        }
    })
    .await;
    gateway
        .logged("the close lines", |text| {
            text.matches("backend removed from the configuration")
                .count()
                >= 2
        })
        .await;
}

dataplane_tests!(a_removed_backend_closes_or_drains_its_tunnels => removed_backend_closes_or_drains_ebpf, removed_backend_closes_or_drains_userspace);

// ---------------------------------------------------------------------------------------
// e. A reload that cannot be applied, and one without a file.

/// A new bind on a port already taken: `POST /reload` answers 500, nothing of the new
/// configuration applies (its path rule neither); once the port is free the same file
/// applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_that_fails_refuses_the_whole_reload() {
    let test = "a_bind_that_fails_refuses_the_whole_reload";
    let (alpha, beta) = (
        HttpBackend::start("alpha").await,
        HttpBackend::start("beta").await,
    );
    let config = ConfigFile::new(
        test,
        &(site("web", "127.0.0.1:0", "alpha", &[]) + pools(&[("alpha", alpha.addr())], 30)),
    );
    let gateway = Gateway::builder().config(config.path()).start();
    let listen = gateway.listen_addr();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let taken_addr = taken.local_addr().expect("taken address");

    config.rewrite(
        &(site("web", "127.0.0.1:0", "alpha", &[("/beta/*", "beta")])
            + site("more", taken_addr, "alpha", &[])
            + pools(&[("alpha", alpha.addr()), ("beta", beta.addr())], 30)),
    );
    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(500), "{}", reply.text());
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(
        body.contains(&format!("cannot listen on {taken_addr}")),
        "{body}"
    );
    assert_eq!(
        backend_of(listen, "/beta/x").await,
        "alpha",
        "nothing applied"
    );
    assert_eq!(reloads(&gateway, "failed"), 1.0);
    assert_eq!(generation(&gateway), 1.0);

    drop(taken);
    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(backend_of(listen, "/beta/x").await, "beta");
    assert_eq!(backend_of(taken_addr, "/y").await, "alpha");
    assert_eq!(reloads(&gateway, "ok"), 1.0);
    assert_eq!(generation(&gateway), 2.0);
}

/// Without a file (`--listen`/`--backend`), SIGHUP applies the same flags again: logged,
/// nothing changes, the socket stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_file_changes_nothing() {
    let alpha = HttpBackend::start("alpha").await;
    let gateway = Gateway::builder().backend(alpha.addr()).start();
    let listen = gateway.listen_addr();
    gateway.sighup();
    let line = wait_reloaded(&gateway, 2).await;
    assert!(line.contains("1 kept, 0 added"), "{line}");
    assert!(
        gateway.stderr_text().contains("which changes nothing"),
        "the log says a reload without a file changes nothing"
    );
    assert_eq!(backend_of(listen, "/x").await, "alpha");
}

/// During the shutdown drain (kept going by an open tunnel) `POST /reload` answers 503 and
/// SIGHUP is ignored; both say so in the log, and the drain goes on to a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_refused_during_the_drain() {
    let alpha = HttpBackend::start("alpha").await;
    let mut gateway = Gateway::builder()
        .backend(alpha.addr())
        .shutdown_drain_secs(60)
        .start();
    let (ws, _) = ws_connect_as(gateway.listen_addr(), "x.test", "/ws", None).await;
    gateway.terminate();
    gateway
        .logged("the drain starts", |text| text.contains("draining"))
        .await;

    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(503), "{}", reply.text());
    gateway.sighup();
    gateway
        .logged("SIGHUP ignored", |text| {
            text.contains("SIGHUP ignored: the gateway is shutting down")
        })
        .await;
    assert_eq!(generation(&gateway), 1.0);

    drop(ws);
    let status = gateway.wait_exit(STEP_TIMEOUT).await;
    assert!(status.success(), "exit status {status}");
}
