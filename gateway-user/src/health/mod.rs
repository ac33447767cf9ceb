//! Backend health: what active probes and passive checks say about each backend, and the
//! probers that ask. One [`BackendHealth`] per backend of a pool under one backend settings
//! (Azure's unit too: the same server can be healthy for one settings and not another),
//! kept across reloads while the backend stays in the configuration.
//!
//! The data path reads a backend's health with two atomic loads ([`BackendHealth::
//! takes_traffic`]); probers write it; a backend's tunnels watch it (`on_backend_down`);
//! `/backends` and `/metrics` read it at request time.

mod passive;
mod probe;
mod prober;
mod report;
pub mod state;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Instant, SystemTime},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::{passive::Passive, state::Streak};
pub use self::{
    probe::{ProbeOutcome, ProbeSpec},
    report::BackendReport,
    state::State,
};
use crate::{snapshot::Upstreams, tls::ClientConfig};

/// Which backend: a pool's server under one backend settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub pool: String,
    pub settings: String,
    pub addr: SocketAddr,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.pool, self.settings, self.addr)
    }
}

/// The health of one backend.
#[derive(Debug)]
pub struct BackendHealth {
    pub key: BackendKey,
    /// [`State`] as a `u8`, for the data path.
    state: AtomicU8,
    /// The same, for the backend's tunnels to wait on.
    changes: watch::Sender<State>,
    /// Requests in flight and tunnels open to it (least-connections, `/backends`).
    active: AtomicUsize,
    passive: Passive,
    probes_passed: AtomicU64,
    probes_failed: AtomicU64,
    detail: Mutex<Detail>,
}

/// What `/backends` shows beyond the state; written by the prober and on transitions.
#[derive(Clone, Debug)]
struct Detail {
    since: SystemTime,
    since_instant: Instant,
    streak: Streak,
    last_probe: Option<ProbeRecord>,
    /// The probe it runs (`default` or a `[[probes]]` name); `None`: not probed.
    probe: Option<String>,
}

/// One probe's result, as `/backends` shows it.
#[derive(Clone, Debug)]
pub struct ProbeRecord {
    pub at: SystemTime,
    pub outcome: ProbeOutcome,
}

impl BackendHealth {
    fn new(key: BackendKey) -> Self {
        let (changes, _) = watch::channel(State::Unknown);
        Self {
            key,
            state: AtomicU8::new(State::Unknown.to_u8()),
            changes,
            active: AtomicUsize::new(0),
            passive: Passive::default(),
            probes_passed: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            detail: Mutex::new(Detail {
                since: SystemTime::now(),
                since_instant: Instant::now(),
                streak: Streak::default(),
                last_probe: None,
                probe: None,
            }),
        }
    }

    /// A backend with no probe and no history, e.g. for tests of the picking.
    pub fn detached(key: BackendKey) -> Arc<Self> {
        Arc::new(Self::new(key))
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Whether new requests and tunnels may go here: its probe state allows it and passive
    /// checks have not ejected it.
    pub fn takes_traffic(&self) -> bool {
        self.state().takes_traffic() && !self.passive.ejected()
    }

    /// Requests in flight and tunnels open to this backend.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request or tunnel to this backend until the lease is dropped.
    pub fn lease(self: &Arc<Self>) -> Lease {
        self.active.fetch_add(1, Ordering::Relaxed);
        Lease(self.clone())
    }

    /// Its state now and every change from here on.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves to `state` (when it differs), logging the transition with `why`.
    fn set_state(&self, detail: &mut Detail, state: State, why: &str) {
        let was = self.state();
        if was == state {
            return;
        }
        self.state.store(state.to_u8(), Ordering::Relaxed);
        self.changes.send_replace(state);
        detail.since = SystemTime::now();
        detail.since_instant = Instant::now();
        let (key, from, to) = (&self.key, was.as_str(), state.as_str());
        match state {
            State::Unhealthy => {
                tracing::warn!(backend = %key, from, to, why, "backend is down: no new traffic");
            }
            _ => tracing::info!(backend = %key, from, to, why, "backend state changed"),
        }
    }

    /// Applies a probe's outcome under `thresholds`.
    fn record_probe(&self, outcome: ProbeOutcome, thresholds: state::Thresholds) {
        let passed = outcome.passed();
        let counter = if passed {
            &self.probes_passed
        } else {
            &self.probes_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut detail = self.lock();
        let (state, streak) = state::next(self.state(), detail.streak, passed, thresholds);
        detail.streak = streak;
        let why = outcome.summary();
        detail.last_probe = Some(ProbeRecord {
            at: SystemTime::now(),
            outcome,
        });
        self.set_state(&mut detail, state, &why);
    }

    /// The backend left the configuration: final, its tunnels apply `on_backend_down`.
    fn remove(&self) {
        let mut detail = self.lock();
        self.set_state(
            &mut detail,
            State::Removed,
            "removed from the configuration",
        );
    }

    /// A connect failure or reset seen by real traffic (see [`passive`]).
    pub fn passive_failure(&self, config: &crate::config::PassiveHealth, what: &str) {
        if let Some(ejection) = self.passive.failure(config) {
            tracing::warn!(
                backend = %self.key,
                failures = config.failures,
                ejection_secs = ejection.as_secs(),
                last = what,
                "backend ejected after connect failures or resets in a row: no new traffic \
                 until the ejection ends"
            );
        }
    }

    /// A request or upgrade got an answer: the passive failure streak ends.
    pub fn passive_success(&self) {
        self.passive.success();
    }
}

/// Counts one request or tunnel on a backend while held.
#[derive(Debug)]
pub struct Lease(Arc<BackendHealth>);

impl Lease {
    pub fn backend(&self) -> &Arc<BackendHealth> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every backend's health, and the probers.
#[derive(Debug)]
pub struct Health {
    tracked: Mutex<HashMap<BackendKey, Tracked>>,
    /// Whether pool/settings pairs without a `probe` get Azure's default one.
    default_probes: bool,
    /// Parent of every prober's token: dropping the registry stops them all.
    stop: CancellationToken,
    /// System roots, for https probes of http settings (built on first use).
    system_roots: OnceLock<Option<Arc<ClientConfig>>>,
}

#[derive(Debug)]
struct Tracked {
    health: Arc<BackendHealth>,
    prober: Option<CancellationToken>,
}

impl Health {
    pub fn new(default_probes: bool) -> Self {
        Self {
            tracked: Mutex::new(HashMap::new()),
            default_probes,
            stop: CancellationToken::new(),
            system_roots: OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BackendKey, Tracked>> {
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The health of `key`: the one already tracked (a reload keeps it), or a new one.
    pub fn backend(&self, key: BackendKey) -> Arc<BackendHealth> {
        let mut tracked = self.lock();
        tracked
            .entry(key.clone())
            .or_insert_with(|| Tracked {
                health: Arc::new(BackendHealth::new(key)),
                prober: None,
            })
            .health
            .clone()
    }

    /// Makes the tracked backends those of `upstreams` (which [`Self::backend`] made):
    /// each gets a prober running its probe (restarted, so a changed probe applies; its
    /// state and streak stay), and backends no longer in `upstreams` are marked removed
    /// and forgotten. Must run inside the runtime.
    pub fn reconcile(&self, upstreams: &Upstreams) {
        let mut specs = HashMap::new();
        for upstream in upstreams.values() {
            for backend in upstream.backends() {
                let spec = ProbeSpec::for_backend(upstream, backend, self.default_probes, || {
                    self.system_roots()
                });
                specs.insert(backend.health.key.clone(), spec);
            }
        }
        let mut tracked = self.lock();
        tracked.retain(|key, entry| {
            if specs.contains_key(key) {
                return true;
            }
            if let Some(prober) = entry.prober.take() {
                prober.cancel();
            }
            entry.health.remove();
            false
        });
        for (key, spec) in specs {
            let Some(entry) = tracked.get_mut(&key) else {
                continue;
            };
            if let Some(prober) = entry.prober.take() {
                prober.cancel();
            }
            let probe_name = spec.as_ref().map(|spec| spec.name.clone());
            entry.health.lock().probe = probe_name;
            if let Some(spec) = spec {
                let stop = self.stop.child_token();
                tokio::spawn(prober::run(entry.health.clone(), spec, stop.clone()));
                entry.prober = Some(stop);
            }
        }
    }

    fn system_roots(&self) -> Option<Arc<ClientConfig>> {
        self.system_roots
            .get_or_init(|| match crate::tls::system_client_config() {
                Ok(config) => Some(config),
                Err(error) => {
                    tracing::warn!(%error, "https probes of http backend settings cannot verify certificates: no system roots");
                    None
                }
            })
            .clone()
    }

    /// Every tracked backend, sorted by pool, settings and address.
    pub fn reports(&self) -> Vec<BackendReport> {
        let backends: Vec<Arc<BackendHealth>> =
            self.lock().values().map(|t| t.health.clone()).collect();
        let mut reports: Vec<BackendReport> = backends.iter().map(|b| b.report()).collect();
        reports.sort_by(|a, b| a.key().cmp(&b.key()));
        reports
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Time on the clock passive ejections use.
fn now_ns() -> u64 {
    crate::dataplane::clock::monotonic_coarse_ns()
}
