//! Backend health: what active probes and passive checks say about each backend. One
//! [`BackendHealth`] per backend of a pool under one backend settings (Azure's unit too: the
//! same server can be healthy for one settings and not another), kept across reloads while
//! the backend stays in the configuration.
//!
//! The data path reads a backend's health with two atomic loads ([`BackendHealth::
//! takes_traffic`]) and reports what real traffic sees (passive checks); the control path's
//! probers (`crate::probing`) write probe results; a backend's tunnels watch it
//! (`on_backend_down`); `/backends` and `/metrics` read it at request time. This module does
//! no I/O of its own.

mod outcome;
mod passive;
mod report;
pub mod state;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Instant, SystemTime},
};

use tokio::sync::watch;

pub use self::{
    outcome::{ProbeFailure, ProbeOutcome, ProbeRecord},
    report::BackendReport,
    state::{State, Thresholds},
};
use self::{passive::Passive, state::Streak};

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

    /// Applies a probe's outcome under `thresholds` (the prober's report).
    pub fn record_probe(&self, outcome: ProbeOutcome, thresholds: Thresholds) {
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

    /// Names the probe that runs for it (`default` or a `[[probes]]` name; `None`: not
    /// probed), for `/backends`.
    pub fn set_probe(&self, name: Option<String>) {
        self.lock().probe = name;
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
    pub fn passive_failure(
        &self,
        config: &crate::config::PassiveHealth,
        what: &dyn std::fmt::Display,
    ) {
        if let Some(ejection) = self.passive.failure(config) {
            tracing::warn!(
                backend = %self.key,
                failures = config.failures,
                ejection_secs = ejection.as_secs(),
                last = %what,
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

/// Every backend's health, by key: the registry the snapshots' upstreams take their
/// backends from, so a backend that stays across a reload keeps its state and streak.
#[derive(Debug, Default)]
pub struct Health {
    tracked: Mutex<HashMap<BackendKey, Arc<BackendHealth>>>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BackendKey, Arc<BackendHealth>>> {
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A view to build a configuration's backends from, changing nothing tracked: a
    /// backend already tracked keeps its health (a reload keeps its state and streak), a
    /// new one gets a fresh one, which [`Self::publish`] tracks once the configuration is
    /// served.
    pub fn stage(&self) -> Staged {
        Staged {
            known: Mutex::new(self.lock().clone()),
        }
    }

    /// Makes `backends` the tracked ones (those of the configuration served now): every
    /// backend tracked before and not among them is marked removed (final: its tunnels
    /// apply their settings' `on_backend_down`) and forgotten.
    pub fn publish(&self, backends: impl IntoIterator<Item = Arc<BackendHealth>>) {
        let new: HashMap<BackendKey, Arc<BackendHealth>> = backends
            .into_iter()
            .map(|health| (health.key.clone(), health))
            .collect();
        let old = std::mem::replace(&mut *self.lock(), new.clone());
        for (key, health) in old {
            if !new.get(&key).is_some_and(|kept| Arc::ptr_eq(kept, &health)) {
                health.remove();
            }
        }
    }

    /// Every tracked backend, sorted by pool, settings and address.
    pub fn reports(&self) -> Vec<BackendReport> {
        let backends: Vec<Arc<BackendHealth>> = self.lock().values().cloned().collect();
        let mut reports: Vec<BackendReport> = backends.iter().map(|b| b.report()).collect();
        reports.sort_by(|a, b| a.key().cmp(&b.key()));
        reports
    }
}

/// The backends' health as a configuration being prepared sees it (see [`Health::stage`]).
#[derive(Debug)]
pub struct Staged {
    known: Mutex<HashMap<BackendKey, Arc<BackendHealth>>>,
}

impl Staged {
    /// The health of `key`: the one tracked (a reload keeps it), or a new one, the same
    /// for every backend of this configuration with that key.
    pub fn backend(&self, key: BackendKey) -> Arc<BackendHealth> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(BackendHealth::new(key)))
            .clone()
    }
}

/// Time on the clock passive ejections use.
fn now_ns() -> u64 {
    crate::dataplane::clock::monotonic_coarse_ns()
}
