//! Configuration reload (SIGHUP, `POST /reload` on the admin listener): the file is read
//! again with the flags the gateway was started with, checked whole, and applied as a diff.
//!
//! 1. `config::load`: an invalid configuration is refused with every problem; nothing
//!    changes.
//! 2. TLS files and backend names are loaded and resolved; a failure refuses the reload.
//! 3. Binds new to the configuration are bound; one that cannot be bound refuses the reload
//!    (the sockets already opened for it are closed). A bind whose [`BindId`] stays keeps
//!    its socket and its task (with port 0, the port the kernel gave it).
//! 4. Only then is anything changed: the new snapshot is swapped in (requests and
//!    connections read it from then on), the listeners of binds that left stop accepting
//!    (their connections are drained as at shutdown), those of new binds start.
//!
//! Tunnels never read the snapshot: a reload leaves them open, spliced or not. Reloads run
//! one at a time, and each runs in a task of its own, so a client that hangs up on
//! `POST /reload` cannot leave one half-applied.

mod diff;

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use diff::{needs_restart, BindDiff};

use crate::{
    config::{
        self,
        plan::{self, Plan},
        Bind, ConfigErrors, Global, Sources,
    },
    proxy::{self, Shared},
    snapshot::{self, BindId, Snapshot},
    StartError,
};

/// What asked for a reload; in its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Sighup,
    Admin,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sighup => "SIGHUP",
            Self::Admin => "POST /reload",
        }
    }
}

/// A reload that was applied.
#[derive(Clone, Debug)]
pub struct Reloaded {
    /// The configuration generation now served (1 is the one the gateway started with).
    pub generation: u64,
    /// What changed, on one line.
    pub summary: String,
}

/// Why a reload was refused; the previous configuration keeps running whole.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// `POST /reload` answers 422 with every problem, one per line.
    #[error("the configuration is invalid ({} problems)", .0.len())]
    Invalid(ConfigErrors),
    /// Valid, but it cannot be applied: a certificate or name that does not load or
    /// resolve, a new bind that cannot be bound (500).
    #[error("{0}")]
    Failed(#[from] StartError),
    /// The reload task panicked (500).
    #[error("the reload failed unexpectedly: {0}")]
    Panicked(String),
    /// SIGTERM came first (503).
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl ReloadError {
    /// The `result` label of `gateway_reloads_total`; `None`: not counted.
    fn result(&self) -> Option<&'static str> {
        match self {
            Self::Invalid(_) => Some("invalid"),
            Self::Failed(_) | Self::Panicked(_) => Some("failed"),
            Self::ShuttingDown => None,
        }
    }
}

/// `gateway_reloads_total{result}` and `gateway_config_generation`.
#[derive(Clone, Debug)]
pub struct ReloadMetrics {
    reloads: Family<ResultLabels, Counter>,
    generation: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

impl Default for ReloadMetrics {
    fn default() -> Self {
        let metrics = Self {
            reloads: Family::default(),
            generation: Gauge::default(),
        };
        for result in ["ok", "invalid", "failed"] {
            metrics
                .reloads
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        metrics.generation.set(1);
        metrics
    }
}

impl ReloadMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gateway_reloads",
            "Configuration reloads (SIGHUP, POST /reload), by result: ok, invalid (refused by \
             validation), failed (valid but could not be applied)",
            self.reloads.clone(),
        );
        registry.register(
            "gateway_config_generation",
            "Generation of the configuration served: 1 at start, one more per applied reload",
            self.generation.clone(),
        );
    }

    fn count(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }
}

/// Applies reloads, and owns the client listeners' tasks.
pub struct Reloader {
    shared: Arc<Shared>,
    sources: Sources,
    /// `[global]` as the gateway started: what the keys that need a restart still are.
    started: Global,
    metrics: ReloadMetrics,
    /// Held through a whole reload, and by the shutdown while it closes the listeners.
    state: Mutex<State>,
    /// Cancelled when a listener task dies (panics): [`crate::Running::wait`] returns.
    died: CancellationToken,
}

struct State {
    generation: u64,
    /// One per bind of the snapshot being served, in its order.
    listeners: Vec<ListenerTask>,
}

/// A client listener: its socket is owned by `task`, which returns (closing it) on `stop`.
struct ListenerTask {
    id: BindId,
    local: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A bound socket, not yet served.
pub(crate) struct Opened {
    id: BindId,
    listener: TcpListener,
    pub(crate) local: SocketAddr,
}

/// Binds `bind`'s address.
pub(crate) async fn open(bind: &Bind) -> Result<Opened, StartError> {
    let failed = |source| StartError::Bind {
        addr: bind.addr,
        source,
    };
    let listener = TcpListener::bind(bind.addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok(Opened {
        id: BindId::of(bind),
        listener,
        local,
    })
}

impl Reloader {
    /// Starts serving `opened`, one socket per bind of the snapshot in `shared` (in its
    /// order), as configuration generation 1.
    pub(crate) fn start(
        shared: Arc<Shared>,
        sources: Sources,
        opened: Vec<Opened>,
        metrics: ReloadMetrics,
    ) -> Arc<Self> {
        let snapshot = shared.snapshot.load_full();
        let died = CancellationToken::new();
        let listeners = snapshot
            .config
            .binds
            .iter()
            .zip(opened)
            .map(|(bind, opened)| listen(&shared, &died, bind, opened))
            .collect();
        Arc::new(Self {
            started: snapshot.config.global.clone(),
            shared,
            sources,
            metrics,
            state: Mutex::new(State {
                generation: 1,
                listeners,
            }),
            died,
        })
    }

    /// Resolves when a listener task died.
    pub async fn died(&self) {
        self.died.cancelled().await;
    }

    /// Reads the configuration again and applies it (see the module's documentation); logs
    /// the outcome and counts it. Runs in a task of its own: dropping the returned future
    /// does not stop it half-way.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.reload_now(trigger).await });
        match task.await {
            Ok(result) => result,
            Err(error) => {
                let error = ReloadError::Panicked(error.to_string());
                tracing::error!(trigger = trigger.as_str(), %error, "configuration reload failed");
                self.metrics.count("failed");
                Err(error)
            }
        }
    }

    async fn reload_now(&self, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        let mut state = self.state.lock().await;
        let generation = state.generation;
        if self.shared.lifecycle.draining.is_cancelled() {
            tracing::info!(
                trigger = trigger.as_str(),
                "reload ignored: the gateway is shutting down"
            );
            return Err(ReloadError::ShuttingDown);
        }
        tracing::info!(
            trigger = trigger.as_str(),
            generation,
            "reloading the configuration"
        );
        if self.sources.file.is_none() {
            tracing::info!(
                "no configuration file (--listen/--backend only): the reload applies the same \
                 command-line flags again, which changes nothing"
            );
        }
        let result = self.apply(&mut state).await;
        match &result {
            Ok(_) => self.metrics.count("ok"),
            Err(error) => {
                if let Some(label) = error.result() {
                    self.metrics.count(label);
                }
            }
        }
        match &result {
            Ok(done) => tracing::info!(
                trigger = trigger.as_str(),
                generation = done.generation,
                "configuration reloaded: {}",
                done.summary
            ),
            Err(ReloadError::Invalid(errors)) => {
                for error in errors {
                    tracing::error!("{error}");
                }
                tracing::error!(
                    trigger = trigger.as_str(),
                    problems = errors.len(),
                    generation,
                    "configuration reload refused: the configuration is invalid; still serving \
                     the previous one"
                );
            }
            Err(error) => tracing::error!(
                trigger = trigger.as_str(),
                %error,
                generation,
                "configuration reload failed; still serving the previous one"
            ),
        }
        result
    }

    async fn apply(&self, state: &mut State) -> Result<Reloaded, ReloadError> {
        let config = config::load(&self.sources).map_err(ReloadError::Invalid)?;
        let Plan { warnings } = plan::plan(&config);
        let tls = snapshot::load_tls(&config)?;
        let upstreams = snapshot::resolve_upstreams(
            &config,
            &self.shared.affinity_key,
            &tls,
            &self.shared.health,
        )
        .await?;

        let running: Vec<BindId> = state.listeners.iter().map(|l| l.id.clone()).collect();
        let wanted: Vec<BindId> = config.binds.iter().map(BindId::of).collect();
        let diff = BindDiff::new(&running, &wanted);
        // Every new socket before anything changes: a bind that fails leaves the running
        // configuration whole (and closes the sockets opened so far).
        let mut opened = Vec::new();
        let mut bound = Vec::new();
        for bind in &config.binds {
            let id = BindId::of(bind);
            match state.listeners.iter().find(|l| l.id == id) {
                Some(kept) => bound.push(kept.local),
                None => {
                    let new = open(bind).await?;
                    bound.push(new.local);
                    opened.push(new);
                }
            }
        }

        for warning in warnings
            .iter()
            .chain(&needs_restart(&self.started, &config.global))
        {
            tracing::warn!("{warning}");
        }
        let summary = config.summary();
        let config = Arc::new(config);
        let snapshot = Snapshot::new(config.clone(), &upstreams, &bound, &tls.acceptors);
        self.shared.snapshot.store(Arc::new(snapshot));
        // Probers for new backends; backends that left are marked removed, so their
        // tunnels apply their settings' `on_backend_down`.
        self.shared.health.reconcile(&upstreams);

        // Removed: stop accepting, and wait for the socket to be closed, so a connect after
        // the reload answered is refused.
        let mut listeners = std::mem::take(&mut state.listeners);
        for id in &diff.removed {
            if let Some(at) = listeners.iter().position(|l| l.id == *id) {
                let listener = listeners.remove(at);
                listener.stop.cancel();
                let _ = listener.task.await;
                tracing::info!(bind = %id, local = %listener.local, "stopped listening: the bind left the configuration");
            }
        }
        // In the new configuration's order: kept ones as they were, added ones started.
        for bind in config.binds.iter() {
            let id = BindId::of(bind);
            if let Some(at) = listeners.iter().position(|l| l.id == id) {
                state.listeners.push(listeners.remove(at));
            } else if let Some(at) = opened.iter().position(|o| o.id == id) {
                let opened = opened.remove(at);
                state
                    .listeners
                    .push(listen(&self.shared, &self.died, bind, opened));
            }
        }
        state.generation += 1;
        self.metrics
            .generation
            .set(i64::try_from(state.generation).unwrap_or(i64::MAX));
        let names = |ids: &[BindId]| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let summary = format!(
            "generation {}: binds {} kept, {} added [{}], {} removed [{}]; {summary}",
            state.generation,
            diff.kept.len(),
            diff.added.len(),
            names(&diff.added),
            diff.removed.len(),
            names(&diff.removed),
        );
        Ok(Reloaded {
            generation: state.generation,
            summary,
        })
    }

    /// For the shutdown, once the drain began (which stops every listener): waits until
    /// every listener task has returned, closing its socket. A reload still running
    /// finishes first; later ones are refused.
    pub(crate) async fn close_listeners(&self) {
        let mut state = self.state.lock().await;
        for listener in state.listeners.drain(..) {
            listener.stop.cancel();
            let _ = listener.task.await;
        }
    }
}

/// Serves `opened`, the socket of `bind`, in a task that stops on its own token (a child
/// of the drain's); cancels `died` if the task panics.
fn listen(
    shared: &Arc<Shared>,
    died: &CancellationToken,
    bind: &Bind,
    opened: Opened,
) -> ListenerTask {
    let names: Vec<&str> = bind.sites.iter().map(|s| s.listener.as_str()).collect();
    tracing::info!(
        listeners = %names.join(","),
        bind = %opened.local,
        protocol = bind.protocol.as_str(),
        "listening"
    );
    let stop = shared.lifecycle.draining.child_token();
    let serve = tokio::spawn(proxy::serve(
        opened.listener,
        shared.clone(),
        opened.id.clone(),
        stop.clone(),
    ));
    let died = died.clone();
    let id = opened.id.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = serve.await {
            tracing::error!(bind = %id, %error, "a listener task died");
            died.cancel();
        }
    });
    ListenerTask {
        id: opened.id,
        local: opened.local,
        stop,
        task,
    }
}
