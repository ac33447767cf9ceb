//! Reloading a running gateway (SIGHUP is [`Gateway::sighup`]): `POST /reload`, the log line
//! and the metrics of a reload, the configuration shapes the reload tests rewrite, and
//! [`ConnectLoop`], a client that keeps connecting while a reload happens.

use std::{
    fmt::Display,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    config::{Config, Listener, PathRule, Rule, Settings},
    http_client::{try_get, KeepAlive, Reply},
    wait::{eventually, within},
    Gateway,
};

/// How long `POST /reload` may take to answer, and [`ConnectLoop::wait_rounds`] to see its
/// rounds.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The backend settings every [`site`] uses.
pub const SETTINGS: &str = "plain";

/// A listener named `name` on `bind` with a `path_based` rule: `/ws` and every path not
/// listed in `paths` to `default_pool`, each `(pattern, pool)` of `paths` to its pool.
pub fn site(name: &str, bind: impl Display, default_pool: &str, paths: &[(&str, &str)]) -> Config {
    let mut rule = Rule::path_based(&format!("{name}-rule"), name, default_pool, SETTINGS)
        .path(PathRule::to("ws", ["/ws"], default_pool, SETTINGS));
    for (i, (pattern, pool)) in paths.iter().enumerate() {
        rule = rule.path(PathRule::to(&format!("p{i}"), [*pattern], pool, SETTINGS));
    }
    Config::new()
        .listener(Listener::http(name, bind))
        .rule(rule)
}

/// Pools of one backend each, and the [`SETTINGS`] backend settings.
pub fn pools(pools: &[(&str, SocketAddr)], request_timeout_secs: u64) -> Config {
    let settings = Settings::http(SETTINGS, 80).request_timeout_secs(request_timeout_secs);
    pools
        .iter()
        .fold(Config::new().settings(settings), |config, (name, addr)| {
            config.pool(name, [addr])
        })
}

/// `POST /reload` on the admin listener (whose `Host` must be its own address).
pub async fn post_reload(gateway: &Gateway) -> Reply {
    let host = gateway.admin_addr().to_string();
    let mut admin = KeepAlive::connect(gateway.admin_addr()).await;
    within(
        STEP_TIMEOUT,
        "POST /reload",
        admin.send("POST", "/reload", &host, &[("Connection", "close")], b""),
    )
    .await
}

/// Waits for the log line of the reload that made `generation`, and returns it.
pub async fn wait_reloaded(gateway: &Gateway, generation: u64) -> String {
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

/// `gateway_reloads_total{result}` (`ok`, `invalid`, `failed`).
pub fn reloads(gateway: &Gateway, result: &str) -> f64 {
    gateway
        .metrics()
        .metric("gateway_reloads_total", &[("result", result)])
}

/// `gateway_config_generation`: 1 at start, one more per applied reload.
pub fn generation(gateway: &Gateway) -> f64 {
    gateway.metrics().metric("gateway_config_generation", &[])
}

/// Connects to every address of `addrs` in turn, each time one full request
/// ([`try_get`]), until told to stop; counts the rounds and keeps every failure.
pub struct ConnectLoop {
    rounds: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<String>>,
}

impl ConnectLoop {
    pub fn start(addrs: Vec<SocketAddr>) -> Self {
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

    /// Waits until `more` rounds are done past those done so far.
    pub async fn wait_rounds(&self, more: usize) {
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

    /// Stops the loop; returns the rounds done and every failure.
    pub async fn finish(self) -> (usize, Vec<String>) {
        let _ = self.stop.send(true);
        let failures = self.task.await.expect("connect loop");
        (self.rounds.load(Ordering::SeqCst), failures)
    }
}
