//! The backend health tests' harness: [`HealthBackend`], whose answer to probes the test
//! switches; clients that go through the gateway to it ([`get`], [`get_ok`],
//! [`upgrade_answer`], [`Tunnel`]) and count who answered ([`spread`], [`spread_tunnels`]);
//! the pieces of their configuration (the listener `main`, plain settings, a fast probe,
//! rules); and the health metrics. `/backends` and `/tunnels` are read with
//! [`crate::admin`].

mod backend;
mod client;

use std::{collections::BTreeMap, net::SocketAddr};

use rand::RngCore;

pub use backend::{HealthBackend, ProbeAnswer, TunnelRecord, HEALTHY_BODY, PROBE_AGENT};
pub use client::{get, get_ok, upgrade_answer, Tunnel, STEP};

use crate::{
    config::{Config, ConfigFile, Listener, PathRule, Probe, Protocol, Rule, Settings},
    data::Summary,
    metrics::Metrics,
    wait::eventually,
    Dataplane, Gateway,
};

/// Bytes of the echo round trip each tunnel of [`spread_tunnels`] makes.
pub const ROUND_TRIP_BYTES: usize = 16 * 1024;

/// The listener of [`listener`], which [`rules`] are for.
const LISTENER: &str = "main";

/// Starts a gateway on `dataplane` with `config`, written to a scratch directory.
pub fn start(test: &str, config: &Config, dataplane: Dataplane) -> (Gateway, ConfigFile) {
    let file = ConfigFile::new(test, config);
    let gateway = Gateway::builder()
        .config(file.path())
        .dataplane(dataplane)
        .start();
    (gateway, file)
}

/// One http listener on `127.0.0.1:0`, named `main`.
pub fn listener() -> Config {
    Config::new().listener(Listener::http(LISTENER, "127.0.0.1:0"))
}

/// Plain http settings (port 80: the pool addresses carry theirs).
pub fn settings(name: &str) -> Settings {
    Settings::http(name, 80)
}

/// An http probe of `/health` with `Host: health.test`, every second with a 1 s timeout.
pub fn probe(name: &str) -> Probe {
    Probe::new(name, Protocol::Http, "health.test")
        .path("/health")
        .every(1, 1)
}

/// A rule on `main`: to `default` (pool, settings), and `/PREFIX/*` to each of `paths`
/// (prefix, pool, settings).
pub fn rules(default: (&str, &str), paths: &[(&str, &str, &str)]) -> Rule {
    if paths.is_empty() {
        return Rule::basic("all", LISTENER, default.0, default.1);
    }
    paths.iter().fold(
        Rule::path_based("paths", LISTENER, default.0, default.1),
        |rule, (prefix, pool, settings)| {
            let pattern = format!("/{prefix}/*");
            rule.path(PathRule::to(prefix, [pattern.as_str()], pool, settings))
        },
    )
}

/// Which backend answered each of `n` requests for `path`, counted by name.
pub async fn spread(gateway: SocketAddr, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(get_ok(gateway, path).await).or_insert(0) += 1;
    }
    seen
}

/// Which backend took each of `n` WebSocket tunnels for `path` (each echoes a round trip
/// and ends cleanly), counted by name.
pub async fn spread_tunnels(
    gateway: SocketAddr,
    path: &str,
    n: usize,
    rng: &mut impl RngCore,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let mut tunnel = Tunnel::open(gateway, path).await;
        tunnel
            .round_trip(rng, ROUND_TRIP_BYTES, "a tunnel's round trip")
            .await;
        *seen.entry(tunnel.backend.clone()).or_insert(0) += 1;
        tunnel.finish().await;
    }
    seen
}

/// The names in `seen`, sorted.
pub fn names(seen: &BTreeMap<String, usize>) -> Vec<&str> {
    seen.keys().map(String::as_str).collect()
}

/// `gateway_backend_state{pool, backend, state}`.
pub fn state_metric(metrics: &Metrics, pool: &str, addr: SocketAddr, state: &str) -> f64 {
    let addr = addr.to_string();
    metrics.metric(
        "gateway_backend_state",
        &[("pool", pool), ("backend", &addr), ("state", state)],
    )
}

/// `gateway_backend_probes_total{pool, backend, result}`.
pub fn probes_metric(metrics: &Metrics, pool: &str, addr: SocketAddr, result: &str) -> f64 {
    let addr = addr.to_string();
    metrics.metric(
        "gateway_backend_probes_total",
        &[("pool", pool), ("backend", &addr), ("result", result)],
    )
}

/// `gateway_tunnels_closed_total{mode, reason="backend_down"}`.
pub fn closed_backend_down(gateway: &Gateway, mode: &str) -> f64 {
    gateway.metrics().metric(
        "gateway_tunnels_closed_total",
        &[("mode", mode), ("reason", "backend_down")],
    )
}

/// Waits for `backend` to record the end of its tunnel `id`; panics unless it received
/// exactly `sent` and ended with a clean EOF.
pub async fn backend_received(backend: &HealthBackend, id: usize, sent: Summary) {
    let what = format!("{} records tunnel {id}", backend.name());
    let mut record = None;
    eventually(STEP, &what, || {
        record = backend.tunnel_records().into_iter().find(|r| r.id == id);
        record
            .as_ref()
            .map(|_| ())
            .ok_or_else(|| format!("{:?}", backend.tunnel_records()))
    })
    .await;
    let record = record.expect("eventually found it");
    assert_eq!(record.ended, Ok(()), "{what}");
    assert_eq!(record.received, sent, "{what}: bytes received");
}
