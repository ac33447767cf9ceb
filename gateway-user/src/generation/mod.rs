//! Generations: the configuration served, and the one step that replaces it. Start-up and
//! every reload go through the same two calls:
//!
//! 1. [`prepare`] (no effect on what is served): TLS files, backend names (their health
//!    staged, not yet tracked), sockets for the binds not served yet, the snapshot, then
//!    the plan's warnings. The first problem is the error and nothing is left open.
//!    Start-up prepares against no binds.
//! 2. [`Served::commit`], driven by the diff of the binds served and wanted: the new
//!    snapshot is published (requests and connections read it from then on), its backends
//!    become the tracked ones and the probers follow them, the listeners of binds that left stop accepting (their
//!    connections drain as at shutdown), those of new binds start.
//!
//! Tunnels never read the snapshot: a new generation leaves them open, spliced or not.

mod diff;
mod listeners;
mod prepare;

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use self::listeners::ListenerTask;
pub use self::prepare::{prepare, Prepared};
use crate::{dataplane, probing::Probers, shared::Shared, snapshot::BindId, tls, upstream};

/// Why a configuration cannot be served (at start, or by a reload).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Resolve(#[from] upstream::resolve::ResolveError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF dataplane: {0}")]
    Dataplane(#[from] dataplane::StartError),
    /// An https listener's certificate or key cannot be used (names the listener and file).
    #[error("TLS: {0}")]
    TlsListener(#[from] tls::ServerConfigError),
    /// An https backend settings' trusted CAs cannot be used (names the settings and file).
    #[error("TLS: {0}")]
    TlsBackend(#[from] tls::ClientConfigError),
    #[error("backend settings {settings:?}: {source}")]
    BackendServerName {
        settings: String,
        #[source]
        source: tls::ServerNameError,
    },
}

impl StartError {
    /// Whether the configuration, or a file it names (a certificate, a key, a CA bundle),
    /// is at fault rather than the machine: `gateway run` should exit with 64 for these,
    /// as for a file that does not validate.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::TlsListener(_) | Self::TlsBackend(_) | Self::BackendServerName { .. }
        )
    }
}

/// Owns what is served: the generation number, the client listeners' tasks (one per bind,
/// each owning its socket), and the probers.
pub struct Generations {
    shared: Arc<Shared>,
    probers: Probers,
    /// Held through a whole reload (prepare and commit), and by the shutdown while it
    /// closes the listeners.
    served: Mutex<State>,
    /// Cancelled when a listener task dies (panics).
    died: CancellationToken,
}

struct State {
    /// 0 until the first commit.
    generation: u64,
    /// One per bind of the snapshot being served, in its order.
    listeners: Vec<ListenerTask>,
}

/// What a commit did.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The generation now served (1 is the one the gateway started with).
    pub generation: u64,
    /// Which binds were kept, added and removed, and the configuration's summary.
    pub summary: String,
}

impl Generations {
    /// Nothing served yet: the first [`Served::commit`] is generation 1.
    pub fn new(shared: Arc<Shared>, probers: Probers) -> Self {
        Self {
            shared,
            probers,
            served: Mutex::new(State {
                generation: 0,
                listeners: Vec::new(),
            }),
            died: CancellationToken::new(),
        }
    }

    /// The served generation, held until the guard is dropped: no other reload, and no
    /// shutdown, runs meanwhile.
    pub async fn lock(&self) -> Served<'_> {
        Served {
            owner: self,
            state: self.served.lock().await,
        }
    }

    /// Resolves when a listener task died.
    pub async fn died(&self) {
        self.died.cancelled().await;
    }

    /// For the shutdown, once the drain began (which stops every listener): waits until
    /// every listener task has returned, closing its socket. A reload still running
    /// finishes first; the reloader refuses later ones (it checks the drain under the same
    /// lock).
    pub async fn close_listeners(&self) {
        let mut state = self.served.lock().await;
        for listener in state.listeners.drain(..) {
            listener.close().await;
        }
    }
}

/// The served generation, locked.
pub struct Served<'a> {
    owner: &'a Generations,
    state: MutexGuard<'a, State>,
}

impl Served<'_> {
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// [`prepare`]s `config` next to the binds served now, with the backends' health and
    /// the affinity key the gateway keeps across generations.
    pub async fn prepare(&self, config: crate::config::Config) -> Result<Prepared, StartError> {
        let served: Vec<(BindId, SocketAddr)> = self
            .state
            .listeners
            .iter()
            .map(|l| (l.id.clone(), l.local))
            .collect();
        let shared = &self.owner.shared;
        prepare(config, &shared.affinity_key, &shared.health, &served).await
    }

    /// Serves `prepared` (see the module's documentation). `prepared` must have been
    /// prepared against the binds served now (by [`Self::prepare`], or at start against
    /// none).
    pub async fn commit(&mut self, prepared: Prepared) -> Committed {
        let Prepared {
            config,
            snapshot,
            upstreams,
            bound: _,
            mut opened,
            diff,
            backlog,
        } = prepared;
        let owner = self.owner;
        owner.shared.snapshot.store(snapshot);
        // Probers for new backends; backends that left are marked removed, so their
        // tunnels apply their settings' `on_backend_down`.
        owner.probers.reconcile(&owner.shared.health, &upstreams);

        // Removed: stop accepting, and wait for the socket to be closed, so a connect after
        // the commit is refused.
        let mut listeners = std::mem::take(&mut self.state.listeners);
        for id in &diff.removed {
            if let Some(at) = listeners.iter().position(|l| l.id == *id) {
                let listener = listeners.remove(at);
                let local = listener.local;
                listener.close().await;
                tracing::info!(bind = %id, %local, "stopped listening: the bind left the configuration");
            }
        }
        // In the new configuration's order: kept ones as they were, added ones started.
        for bind in &config.binds {
            let id = BindId::of(bind);
            if let Some(at) = listeners.iter().position(|l| l.id == id) {
                let mut kept = listeners.remove(at);
                kept.set_backlog(backlog);
                self.state.listeners.push(kept);
            } else if let Some(at) = opened.iter().position(|o| o.id == id) {
                let opened = opened.remove(at);
                let task = listeners::listen(&owner.shared, &owner.died, bind, opened);
                self.state.listeners.push(task);
            }
        }
        self.state.generation += 1;
        let names = |ids: &[BindId]| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let summary = format!(
            "generation {}: binds {} kept, {} added [{}], {} removed [{}]; {}",
            self.state.generation,
            diff.kept.len(),
            diff.added.len(),
            names(&diff.added),
            diff.removed.len(),
            names(&diff.removed),
            config.summary(),
        );
        Committed {
            generation: self.state.generation,
            summary,
        }
    }
}
