//! Configuration reload (SIGHUP, `POST /reload`), end to end: a valid configuration is
//! applied as a diff while WebSocket tunnels keep carrying bytes both ways (checked by length
//! and SHA-256 at both ends; spliced ones stay spliced); an invalid one is refused with every
//! problem and the old one keeps serving; kept listeners keep their sockets (port 0 too) and
//! never refuse a connect, removed ones stop accepting while their open connections get
//! their answers, added ones serve; a tunnel whose backend left the configuration survives;
//! a new bind that cannot be bound refuses the whole reload; during the shutdown drain
//! reloads are refused.

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use gateway_tests::{
    busy::{wait_flowing, BusyTunnel},
    data::{random_bytes, seeded_rng, Hasher, Summary},
    dataplane_tests,
    http::{self, Head},
    http_backend::{backend_of, HttpBackend},
    http_client::{free_port, ws_connect_as, ws_echo_exchange, KeepAlive, Reply},
    oneshot::{self, ScratchDir},
    skip_unprivileged,
    wait::{eventually, within},
    Dataplane, Gateway,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::watch,
    task::JoinHandle,
};
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Tunnels kept busy across a reload.
const TUNNELS: usize = 4;
/// Bytes each tunnel must echo after the reload before it is finished.
const AFTER_RELOAD_BYTES: u64 = 2 << 20;

// ---------------------------------------------------------------------------------------
// Helpers.

/// A listener named `name` on `bind` with a `path_based` rule: `/ws` and every path not
/// listed in `paths` to `default_pool`, each `(pattern, pool)` of `paths` to its pool.
fn site(name: &str, bind: &str, default_pool: &str, paths: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\nprotocol = \"http\"\n\n\
         [[rules]]\nname = \"{name}-rule\"\nkind = \"path_based\"\nlistener = \"{name}\"\n\
         default_backend_pool = \"{default_pool}\"\ndefault_backend_settings = \"plain\"\n\n\
         [[rules.path_rules]]\nname = \"ws\"\npaths = [\"/ws\"]\n\
         backend_pool = \"{default_pool}\"\nbackend_settings = \"plain\"\n\n"
    );
    for (i, (pattern, pool)) in paths.iter().enumerate() {
        text.push_str(&format!(
            "[[rules.path_rules]]\nname = \"p{i}\"\npaths = [\"{pattern}\"]\n\
             backend_pool = \"{pool}\"\nbackend_settings = \"plain\"\n\n"
        ));
    }
    text
}

/// Pools of one backend each, and the `plain` backend settings.
fn pools(pools: &[(&str, SocketAddr)], request_timeout_secs: u64) -> String {
    let mut text = format!(
        "[[backend_settings]]\nname = \"plain\"\nport = 80\nprotocol = \"http\"\n\
         request_timeout_secs = {request_timeout_secs}\n\n"
    );
    for (name, addr) in pools {
        text.push_str(&format!(
            "[[backend_pools]]\nname = \"{name}\"\naddresses = [\"{addr}\"]\n\n"
        ));
    }
    text
}

/// A configuration file in a scratch directory, rewritten by the test before a reload.
struct ConfigFile {
    dir: ScratchDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(test: &str, text: &str) -> Self {
        let dir = ScratchDir::new(test);
        let path = dir.write("gateway.toml", text);
        Self { dir, path }
    }

    fn rewrite(&self, text: &str) {
        self.dir.write("gateway.toml", text);
    }
}

fn start(config: &ConfigFile, dataplane: Dataplane) -> Gateway {
    Gateway::builder()
        .config(&config.path)
        .dataplane(dataplane)
        .start()
}

/// Sends SIGHUP to the gateway (without marking its exit as expected: it must keep running).
fn sighup(gateway: &Gateway) {
    let pid = libc::pid_t::try_from(gateway.pid()).expect("the daemon's pid fits in pid_t");
    // SAFETY: kill(2) takes plain integers; `pid` is the harness's child, which is only
    // reaped when the `Gateway` is dropped, so it cannot have been reused.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill(SIGHUP): {}", io::Error::last_os_error());
}

/// `POST /reload` on the admin listener.
async fn post_reload(gateway: &Gateway) -> Reply {
    let mut admin = KeepAlive::connect(gateway.admin_addr()).await;
    within(
        STEP_TIMEOUT,
        "POST /reload",
        admin.send("POST", "/reload", "admin", &[("Connection", "close")], b""),
    )
    .await
}

/// Waits for the log line of the reload that made `generation`.
async fn wait_reloaded(gateway: &Gateway, generation: u64) -> String {
    let field = format!("generation={generation}");
    let text = gateway
        .logged(&format!("the reload to generation {generation}"), |text| {
            text.lines()
                .any(|line| line.contains("configuration reloaded") && line.contains(&field))
        })
        .await;
    text.lines()
        .find(|line| line.contains("configuration reloaded") && line.contains(&field))
        .map(str::to_owned)
        .unwrap_or_default()
}

fn reloads(gateway: &Gateway, result: &str) -> f64 {
    gateway
        .metrics()
        .metric("gateway_reloads_total", &[("result", result)])
}

fn generation(gateway: &Gateway) -> f64 {
    gateway.metrics().metric("gateway_config_generation", &[])
}

/// One request on a fresh connection, every failure returned rather than panicking.
async fn try_get(addr: SocketAddr) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /loop HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let (head, leftover) = http::read_head(&mut stream)
        .await
        .map_err(|e| format!("read the head: {e}"))?;
    http::read_body(&mut stream, &head, leftover)
        .await
        .map_err(|e| format!("read the body: {e}"))?;
    head.status().ok_or_else(|| "no status".to_owned())
}

/// Connects to every address of `addrs` in turn, each time one full request, until told to
/// stop; counts the rounds and keeps every failure.
struct ConnectLoop {
    rounds: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<String>>,
}

impl ConnectLoop {
    fn start(addrs: Vec<SocketAddr>) -> Self {
        let rounds = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = watch::channel(false);
        let counter = rounds.clone();
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !*stopped.borrow() {
                for addr in &addrs {
                    match try_get(*addr).await {
                        Ok(200) => {}
                        Ok(status) => failures.push(format!("{addr}: status {status}")),
                        Err(error) => failures.push(format!("{addr}: {error}")),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
        Self { rounds, stop, task }
    }

    async fn wait_rounds(&self, more: usize) {
        let target = self.rounds.load(Ordering::SeqCst) + more;
        eventually(STEP_TIMEOUT, "connect rounds", || {
            let done = self.rounds.load(Ordering::SeqCst);
            if done >= target {
                Ok(())
            } else {
                Err(format!("{done} rounds of {target}"))
            }
        })
        .await;
    }

    async fn finish(self) -> (usize, Vec<String>) {
        let _ = self.stop.send(true);
        let failures = self.task.await.expect("connect loop");
        (self.rounds.load(Ordering::SeqCst), failures)
    }
}

/// Opens `count` WebSocket tunnels to `path` and keeps them busy.
async fn busy_tunnels(gateway: &Gateway, path: &str, count: usize, test: &str) -> Vec<BusyTunnel> {
    let mut seeds = seeded_rng(test);
    let mut tunnels = Vec::new();
    for _ in 0..count {
        let (ws, response) = within(
            STEP_TIMEOUT,
            "WebSocket upgrade",
            ws_connect_as(gateway.listen_addr(), "x.test", path, None),
        )
        .await;
        assert_eq!(response.status().as_u16(), 101);
        tunnels.push(BusyTunnel::start(ws, StdRng::seed_from_u64(seeds.random())));
    }
    tunnels
}

/// Finishes every tunnel and checks its bytes at both ends: what the client sent is what
/// the backend received and what came back.
async fn finish_and_check(tunnels: Vec<BusyTunnel>, backend: &HttpBackend) {
    let mut sent_all = Vec::new();
    for tunnel in tunnels {
        let (sent, received) = tunnel.finish().await;
        assert!(sent.len > AFTER_RELOAD_BYTES, "the tunnel carried {sent}");
        assert_eq!(received, sent, "the client got back every byte it sent");
        sent_all.push(sent);
    }
    let mut at_backend = Vec::new();
    for _ in 0..sent_all.len() {
        let record = backend.next_ws_record().await;
        assert_eq!(record.error, None, "backend side of a tunnel");
        at_backend.push(record.received);
    }
    let key = |s: &Summary| s.to_string();
    sent_all.sort_by_key(key);
    at_backend.sort_by_key(key);
    assert_eq!(at_backend, sent_all, "the backend received every byte sent");
}

fn tunnel_metric(gateway: &Gateway, name: &str, mode: &str) -> f64 {
    gateway.metrics().metric(name, &[("mode", mode)])
}

/// The entries of the splice maps (`SPLICED`, `PEERS`, `FLOWS`) on the eBPF dataplane, each
/// checked not empty; nothing on the userspace one.
fn spliced_maps(gateway: &Gateway, dataplane: Dataplane) -> Vec<(String, usize)> {
    if dataplane != Dataplane::Ebpf {
        return Vec::new();
    }
    let entries: Vec<(String, usize)> = gateway.ebpf_map_entries().into_iter().collect();
    assert!(
        entries.iter().all(|(_, count)| *count > 0),
        "spliced tunnels are in every splice map: {entries:?}"
    );
    entries
}

fn spliced_bytes(gateway: &Gateway) -> f64 {
    gateway.metrics().metric(
        "gateway_spliced_bytes_total",
        &[("direction", "client_to_backend")],
    )
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
    let before = site("web", "127.0.0.1:0", "alpha", &[]) + &pools(&[("alpha", alpha.addr())], 30);
    let config = ConfigFile::new(test, &before);
    let gateway = start(&config, dataplane);
    let listen = gateway.listen_addr();
    assert_eq!(backend_of(listen, "/beta/x").await, "alpha");

    let tunnels = busy_tunnels(&gateway, "/ws", TUNNELS, test).await;
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
    let tunnels_opened = tunnel_metric(&gateway, "gateway_tunnels_opened_total", mode);
    assert_eq!(tunnels_opened, TUNNELS as f64, "tunnels opened as {mode}");
    let maps_before = spliced_maps(&gateway, dataplane);

    let after = site("web", "127.0.0.1:0", "alpha", &[("/beta/*", "beta")])
        + &pools(&[("alpha", alpha.addr()), ("beta", beta.addr())], 10);
    config.rewrite(&after);
    sighup(&gateway);
    let line = wait_reloaded(&gateway, 2).await;
    assert!(
        line.contains("1 kept, 0 added") && line.contains("0 removed"),
        "the bind is kept: {line}"
    );
    let spliced_at_reload = spliced_bytes(&gateway);

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
        tunnel_metric(&gateway, "gateway_tunnels_active", mode),
        TUNNELS as f64,
        "every tunnel is still open as {mode}"
    );
    if dataplane == Dataplane::Ebpf {
        // Still in the splice maps, and the kernel kept carrying their bytes.
        assert_eq!(spliced_maps(&gateway, dataplane), maps_before);
        let spliced_now = spliced_bytes(&gateway);
        assert!(
            spliced_now > spliced_at_reload,
            "the kernel carried bytes after the reload: {spliced_at_reload} -> {spliced_now}"
        );
    }

    finish_and_check(tunnels, &alpha).await;
    assert_eq!(
        tunnel_metric(&gateway, "gateway_tunnels_opened_total", mode),
        TUNNELS as f64
    );
    assert_eq!(
        tunnel_metric(&gateway, "gateway_tunnels_opened_total", other),
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
    let valid = site("web", "127.0.0.1:0", "alpha", &[]) + &pools(&[("alpha", alpha.addr())], 30);
    let config = ConfigFile::new(test, &valid);
    let gateway = start(&config, Dataplane::Userspace);
    let listen = gateway.listen_addr();

    // An unknown key, a bind that is no address, a rule naming a pool that does not exist.
    let invalid = valid.replace(
        "protocol = \"http\"\n\n[[rules]]",
        "protocol = \"http\"\ncolour = \"blue\"\n\n[[rules]]",
    ) + "[[listeners]]\nname = \"bad\"\nbind = \"nowhere\"\nprotocol = \"http\"\n\n\
           [[rules]]\nname = \"bad-rule\"\nkind = \"basic\"\nlistener = \"bad\"\n\
           backend_pool = \"missing\"\nbackend_settings = \"plain\"\n";
    config.rewrite(&invalid);
    let check = oneshot::gateway(
        &["check", "--config", &config.path.to_string_lossy()],
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
    let (keep_port, gone_port, added_port) = (free_port(), free_port(), free_port());
    let backends = pools(&[("alpha", alpha.addr())], 30);
    let keep0 = site("keep0", "127.0.0.1:0", "alpha", &[]);
    let keep = site("keep", &format!("127.0.0.1:{keep_port}"), "alpha", &[]);
    let gone = site("gone", &format!("127.0.0.1:{gone_port}"), "alpha", &[]);
    let added = site("added", &format!("127.0.0.1:{added_port}"), "alpha", &[]);
    let config = ConfigFile::new(test, &format!("{keep0}{keep}{gone}{backends}"));
    let gateway = start(&config, Dataplane::Userspace);
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
    config.rewrite(&format!("{keep0}{keep}{added}{backends}"));
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
        &(site("web", "127.0.0.1:0", "old", &[]) + &pools(&[("old", alpha.addr())], 30)),
    );
    let gateway = start(&config, dataplane);
    let tunnels = busy_tunnels(&gateway, "/ws", 2, test).await;
    wait_flowing(
        &tunnels,
        256 << 10,
        STEP_TIMEOUT,
        "tunnels flow before the reload",
    )
    .await;

    config.rewrite(&(site("web", "127.0.0.1:0", "new", &[]) + &pools(&[("new", beta.addr())], 30)));
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
    finish_and_check(tunnels, &alpha).await;
    let mode = dataplane.tunnel_mode();
    assert_eq!(
        tunnel_metric(&gateway, "gateway_tunnels_opened_total", mode),
        3.0
    );
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
        pools(named, 30).replace(
            "request_timeout_secs = 30\n",
            "request_timeout_secs = 30\non_backend_down = \"close\"\n",
        ) + "[[backend_settings]]\nname = \"slow\"\nport = 80\nprotocol = \"http\"\n\
             on_backend_down = \"drain\"\ndraining_timeout_secs = 2\n\n"
    };
    let drain_site = "[[listeners]]\nname = \"d\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n\
        [[rules]]\nname = \"d-rule\"\nkind = \"basic\"\nlistener = \"d\"\n\
        backend_pool = \"drained\"\nbackend_settings = \"slow\"\n\n";
    let config = ConfigFile::new(
        test,
        &(site("web", "127.0.0.1:0", "old", &[])
            + drain_site
            + &settings(&[("old", alpha.addr()), ("drained", gamma.addr())])),
    );
    let gateway = start(&config, dataplane);
    let (web, drained_listener) = (gateway.listen_addrs()[0], gateway.listen_addrs()[1]);
    let (closing, _) = ws_connect_as(web, "x.test", "/ws", None).await;
    let (draining, _) = ws_connect_as(drained_listener, "x.test", "/ws", None).await;
    let mut rng = seeded_rng(test);
    let (closing, sent, received) = exchange_on(closing, &mut rng).await;
    assert_eq!(received, sent, "bytes before the reload");
    let (draining, sent, received) = exchange_on(draining, &mut rng).await;
    assert_eq!(received, sent, "bytes before the reload");

    // Both pools leave: "old" for "new", "drained" for "fresh".
    let drain_site = drain_site.replace("\"drained\"", "\"fresh\"");
    config.rewrite(
        &(site("web", "127.0.0.1:0", "new", &[])
            + &drain_site
            + &settings(&[("new", beta.addr()), ("fresh", beta.addr())])),
    );
    let reply = post_reload(&gateway).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());

    within(STEP_TIMEOUT, "the closing tunnel ends", ended(closing)).await;
    // The draining one still carries bytes right after the reload, then ends.
    let (draining, sent, received) = exchange_on(draining, &mut rng).await;
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

/// Sends 64 random messages of up to 4 KiB and reads their echoes; returns the stream
/// and the length + SHA-256 of what went out and what came back.
async fn exchange_on(
    mut ws: WebSocketStream<TcpStream>,
    rng: &mut StdRng,
) -> (WebSocketStream<TcpStream>, Summary, Summary) {
    let (mut sent, mut received) = (Hasher::default(), Hasher::default());
    within(STEP_TIMEOUT, "an echo exchange", async {
        for _ in 0..64 {
            let len = rng.random_range(1..=4096);
            let message = random_bytes(rng, len);
            sent.update(&message);
            ws.send(Message::Binary(message.into()))
                .await
                .expect("send");
            match ws.next().await {
                Some(Ok(Message::Binary(echo))) => received.update(&echo),
                other => panic!("expected an echo, got {other:?}"),
            }
        }
    })
    .await;
    (ws, sent.finish(), received.finish())
}

/// Resolves when the gateway has ended the tunnel (end of stream, or an error after it).
async fn ended(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(_)) = ws.next().await {}
}

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
        &(site("web", "127.0.0.1:0", "alpha", &[]) + &pools(&[("alpha", alpha.addr())], 30)),
    );
    let gateway = start(&config, Dataplane::Userspace);
    let listen = gateway.listen_addr();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let taken_addr = taken.local_addr().expect("taken address");

    config.rewrite(
        &(site("web", "127.0.0.1:0", "alpha", &[("/beta/*", "beta")])
            + &site("more", &taken_addr.to_string(), "alpha", &[])
            + &pools(&[("alpha", alpha.addr()), ("beta", beta.addr())], 30)),
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
    sighup(&gateway);
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
    sighup(&gateway);
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
