//! The configuration file end to end: `gateway check` on good and bad files (exit 0 / 64,
//! every problem listed), `gateway run --config` carrying a WebSocket tunnel (bytes checked by
//! length and SHA-256), and `gateway run --config` refusing a bad file (e.g. an https
//! listener whose key is not its certificate's) with exit 64 before binding anything.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use gateway_tests::{
    backend::EchoBackend,
    client,
    config::{Config, ConfigFile, Listener, Rule, Settings},
    data::seeded_rng,
    dataplane_tests,
    oneshot::{self, ScratchDir},
    skip_unprivileged,
    tls::Ca,
    wait::within,
    ws_echo::echo_random_messages,
    Dataplane, Gateway,
};

/// `gateway check` and a refused `run` read a file and exit; this is plenty.
const EXIT_LIMIT: Duration = Duration::from_secs(20);
/// sysexits' EX_USAGE, which the gateway uses for every configuration problem.
const EXIT_CONFIG: i32 = 64;
const MESSAGES: usize = 64;
const MESSAGE_BYTES: usize = 256 * 1024;

fn example() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/gateway.toml"
    ))
}

/// One http listener on `bind`, a basic rule to a pool of `backend`: as text, for the tests
/// that edit it into a bad file and check what the gateway says about its lines.
fn basic_config(bind: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "[[listeners]]\nname = \"web\"\nbind = \"{bind}\"\nprotocol = \"http\"\n\n\
         [[backend_pools]]\nname = \"echo\"\naddresses = [\"{ip}\"]\n\n\
         [[backend_settings]]\nname = \"echo-settings\"\nport = {port}\nprotocol = \"http\"\n\
         tunnel_idle_timeout_secs = 120\n\n\
         [[rules]]\nname = \"all\"\nkind = \"basic\"\nlistener = \"web\"\n\
         backend_pool = \"echo\"\nbackend_settings = \"echo-settings\"\n",
        ip = backend.ip(),
        port = backend.port(),
    )
}

#[test]
fn check_accepts_the_example() {
    let example = example();
    let path = example.to_str().expect("UTF-8 path");
    let done = oneshot::gateway(&["check", "--config", path], EXIT_LIMIT);
    assert_eq!(done.code(), Some(0), "stderr:\n{}", done.stderr);
    assert_eq!(
        done.stdout.trim(),
        "ok: 3 listeners on 2 binds, 3 pools, 3 backend settings, 3 rules, 1 probe"
    );
    // `run` serves all of it (https listeners and backends, probes included): no note.
    let notes: Vec<&str> = done
        .stderr
        .lines()
        .filter(|line| line.starts_with("note:"))
        .collect();
    assert!(notes.is_empty(), "{}", done.stderr);
}

#[test]
fn check_lists_every_problem() {
    let dir = ScratchDir::new("check_lists_every_problem");
    let bad = r#"
[global]
dataplane = "kernel"
log_format = "xml"

[[listeners]]
name = "web"
bind = "0.0.0.0:http"
protocol = "https"
colour = "red"

[[backend_pools]]
name = "pool"
addresses = ["10.0.0.1:0"]

[[backend_settings]]
name = "settings"
port = 80
protocol = "http"
tunnel_idle_timeout_secs = 0

[[rules]]
name = "rule"
kind = "basic"
listener = "web"
backend_pool = "pools"
backend_settings = "settings"

[[probes]]
name = "probe"
protocol = "http"
host = "a"
unhealthy_threshold = 0
"#;
    let path = dir.write("bad.toml", bad);
    let path = path.to_str().expect("UTF-8 path");
    let done = oneshot::gateway(&["check", "--config", path], EXIT_LIMIT);
    assert_eq!(done.code(), Some(EXIT_CONFIG), "stderr:\n{}", done.stderr);
    assert_eq!(done.stdout, "", "nothing on stdout");
    let expected = [
        ":3: global.dataplane: unknown variant `kernel`",
        ":4: global.log_format: unknown variant `xml`",
        // Missing keys are reported at the line of the object that lacks them.
        ":6: listeners[0].certificate: an https listener needs certificate",
        ":6: listeners[0].private_key: an https listener needs private_key",
        ":8: listeners[0].bind: bind \"0.0.0.0:http\" is not an IP:PORT address",
        ":10: listeners[0].colour: unknown field `colour`",
        ":14: backend_pools[0].addresses[0]: \"10.0.0.1:0\" has port 0",
        ":20: backend_settings[0].tunnel_idle_timeout_secs: tunnel_idle_timeout_secs is 0",
        ":26: rules[0].backend_pool: backend pool \"pools\" is not defined; the defined backend pools are \"pool\"",
        ":33: probes[0].unhealthy_threshold: unhealthy_threshold is 0",
    ];
    let lines: Vec<&str> = done.stderr.lines().collect();
    for (line, want) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(path) && line.contains(want) && line.contains("(fix: "),
            "{line:?} should hold {want:?}; stderr:\n{}",
            done.stderr
        );
    }
    assert_eq!(lines.len(), expected.len() + 1, "stderr:\n{}", done.stderr);
    assert_eq!(
        lines.last().copied(),
        Some("10 problems found in the configuration")
    );
}

#[test]
fn check_an_unreadable_file() {
    let done = oneshot::gateway(
        &["check", "--config", "/nonexistent/gateway.toml"],
        EXIT_LIMIT,
    );
    assert_eq!(done.code(), Some(EXIT_CONFIG));
    assert!(
        done.stderr.contains("cannot read the configuration file"),
        "{}",
        done.stderr
    );
}

#[test]
fn run_with_a_bad_file_exits_64_without_binding() {
    let dir = ScratchDir::new("run_with_a_bad_file_exits_64_without_binding");
    // Held for the whole test: had the gateway tried to bind it, it would fail with
    // "address in use" (exit 1), not list the file's problems.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let bind = held.local_addr().expect("held address");
    let text = basic_config(bind, "127.0.0.1:9".parse().expect("addr")).replace(
        "protocol = \"http\"\n\n[[backend_pools]]",
        "protocol = \"http\"\nhost_names = [\"-bad-\"]\n\n[[backend_pools]]",
    ) + "\n[[probes]]\nname = \"p\"\nprotocol = \"http\"\n";
    let path = dir.write("bad.toml", &text);
    let path = path.to_str().expect("UTF-8 path");
    let done = oneshot::gateway(
        &["run", "--config", path, "--admin", "127.0.0.1:0"],
        EXIT_LIMIT,
    );
    assert_eq!(done.code(), Some(EXIT_CONFIG), "stderr:\n{}", done.stderr);
    assert!(!done.stdout.contains("gateway ready"), "{}", done.stdout);
    assert!(
        done.stderr.contains("listeners[0].host_names[0]"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("probes[0].host"), "{}", done.stderr);
    assert!(done.stderr.contains("nothing was bound"), "{}", done.stderr);
    assert!(!done.stderr.contains("cannot listen"), "{}", done.stderr);
}

#[test]
fn run_refuses_a_key_that_does_not_belong_to_the_certificate() {
    let dir = ScratchDir::new("run_refuses_a_key_that_does_not_belong_to_the_certificate");
    let ca = Ca::new("test CA");
    let (certificate, _) = ca.leaf(&["www.example.com"]).write(&dir, "www");
    let (_, other_key) = ca.leaf(&["other.example.com"]).write(&dir, "other");
    let text = basic_config(
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:9".parse().expect("addr"),
    )
    .replace(
        "protocol = \"http\"\n\n[[backend_pools]]",
        &format!(
            "protocol = \"https\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n\
             [[backend_pools]]",
            certificate.display(),
            other_key.display()
        ),
    );
    let path = dir.write("https.toml", &text);
    let path = path.to_str().expect("UTF-8 path");
    for command in ["check", "run"] {
        let done = oneshot::gateway(&[command, "--config", path], EXIT_LIMIT);
        assert_eq!(done.code(), Some(EXIT_CONFIG), "{command}: {}", done.stderr);
        assert!(
            done.stderr.contains(&format!(
                "{path}:6: listeners[0].private_key: private key {} does not belong to \
                 certificate {}",
                other_key.display(),
                certificate.display()
            )),
            "{command}: {}",
            done.stderr
        );
        assert!(!done.stdout.contains("gateway ready"), "{}", done.stdout);
    }
}

/// `gateway run --config` with a basic http rule: a WebSocket client sends random
/// messages through the gateway to the echo backend; every byte is checked both ways.
async fn run_config_carries_a_tunnel(dataplane: Dataplane, test: &str) {
    if skip_unprivileged(dataplane, test) {
        return;
    }
    let mut backend = EchoBackend::start().await;
    // The pool's address without its port: the settings' port applies.
    let config = Config::new()
        .listener(Listener::http("web", "127.0.0.1:0"))
        .pool("echo", [backend.addr().ip()])
        .settings(
            Settings::http("echo-settings", backend.addr().port()).tunnel_idle_timeout_secs(120),
        )
        .rule(Rule::basic("all", "web", "echo", "echo-settings"));
    let config = ConfigFile::new(test, &config);
    let gateway = Gateway::builder()
        .config(config.path())
        .dataplane(dataplane)
        .start();
    let ws = within(
        Duration::from_secs(10),
        "WebSocket upgrade",
        client::ws_connect(gateway.listen_addr(), "/chat"),
    )
    .await;
    let (sent, received) = echo_random_messages(
        ws,
        seeded_rng(test),
        MESSAGES,
        MESSAGE_BYTES,
        Duration::from_secs(60),
    )
    .await;

    let record = backend.next_record().await;
    assert_eq!(record.error, None, "echo backend connection error");
    assert_eq!(sent.len, (MESSAGES * MESSAGE_BYTES) as u64);
    assert_eq!(record.received, sent, "bytes the backend received");
    assert_eq!(received, sent, "bytes the client got back");
    let opened = gateway.metrics().metric(
        "gateway_tunnels_opened_total",
        &[("mode", dataplane.tunnel_mode())],
    );
    assert_eq!(
        opened,
        1.0,
        "one tunnel in mode {}",
        dataplane.tunnel_mode()
    );
}

dataplane_tests!(run_config_carries_a_tunnel => run_config_carries_a_tunnel_ebpf, run_config_carries_a_tunnel_userspace);
