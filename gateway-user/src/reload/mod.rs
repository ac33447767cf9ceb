//! Configuration reload (SIGHUP, `POST /reload` on the admin listener): the file is read
//! again with the flags the gateway was started with, checked whole, and applied as a new
//! generation.
//!
//! 1. `config::load`: an invalid configuration is refused with every problem; nothing
//!    changes.
//! 2. [`crate::generation::prepare`]: TLS files and backend names are loaded and resolved,
//!    binds new to the configuration are bound; a failure refuses the reload (the sockets
//!    already opened for it are closed). A bind whose `BindId` stays keeps its socket and
//!    its task (with port 0, the port the kernel gave it).
//! 3. Only then is anything changed ([`crate::generation::Served::commit`]): the new
//!    snapshot is swapped in, the listeners of binds that left stop accepting (their
//!    connections are drained as at shutdown), those of new binds start.
//!
//! Tunnels never read the snapshot: a reload leaves them open, spliced or not. Reloads run
//! one at a time, and each runs in a task of its own, so a client that hangs up on
//! `POST /reload` cannot leave one half-applied.

mod restart;

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
pub use restart::needs_restart;

use crate::{
    config::{self, ConfigErrors, Global, Sources},
    generation::{Generations, Served, StartError},
    shared::Shared,
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

/// A reload that was applied: the generation now served, and what changed on one line.
pub use crate::generation::Committed as Reloaded;

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

/// Applies reloads.
pub struct Reloader {
    generations: Arc<Generations>,
    shared: Arc<Shared>,
    sources: Sources,
    /// `[global]` as the gateway started: what the keys that need a restart still are.
    started: Global,
    metrics: ReloadMetrics,
}

impl Reloader {
    /// Reloads what `sources` name into `generations`; `started` is the `[global]` the
    /// gateway started with.
    pub fn new(
        generations: Arc<Generations>,
        shared: Arc<Shared>,
        sources: Sources,
        started: Global,
        metrics: ReloadMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            generations,
            shared,
            sources,
            started,
            metrics,
        })
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
        let mut served = self.generations.lock().await;
        let generation = served.generation();
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
        let result = self.apply(&mut served).await;
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

    async fn apply(&self, served: &mut Served<'_>) -> Result<Reloaded, ReloadError> {
        let config = config::load(&self.sources).map_err(ReloadError::Invalid)?;
        let prepared = served.prepare(config).await?;
        for warning in needs_restart(&self.started, &prepared.config().global) {
            tracing::warn!("{warning}");
        }
        let committed = served.commit(prepared).await;
        self.metrics
            .generation
            .set(i64::try_from(committed.generation).unwrap_or(i64::MAX));
        Ok(committed)
    }
}
