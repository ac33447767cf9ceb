//! The running gateway: start-up (prepare the first generation, start the dataplane,
//! commit), the handle `main` holds ([`Running`]), and the graceful shutdown.

mod shutdown;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinSet};

use crate::{
    admin,
    admission::{self, Admission},
    config::{self, Config, Protocol},
    dataplane::Dataplane,
    generation::{self, Generations, StartError},
    health::Health,
    metrics::{self, Metrics},
    probing::Probers,
    reload::{ReloadMetrics, Reloader},
    shared::{Lifecycle, Shared},
    upstream::{self, affinity::AffinityKey},
};

/// A started gateway: its bound addresses and the tasks serving them.
pub struct Running {
    /// The binds it started with (a reload can change them since).
    pub listen: Vec<SocketAddr>,
    /// The protocol of each bind of `listen`, in the same order.
    pub listen_protocols: Vec<Protocol>,
    pub admin: Option<SocketAddr>,
    pub dataplane: Dataplane,
    /// Applies reloads.
    reloader: Arc<Reloader>,
    /// Owns the client listeners' tasks (one per bind, each owning its socket and dropping
    /// it when the drain starts or a reload removes the bind).
    generations: Arc<Generations>,
    /// The admin listener, kept up until the process exits so a drain can be watched.
    admin_task: JoinSet<()>,
    shared: Arc<Shared>,
}

impl Running {
    /// The one line printed on stdout when the gateway is ready; scripts and tests wait
    /// for it (it carries the bound ports when port 0 was asked for).
    pub fn ready_line(&self) -> String {
        let listen: Vec<String> = self
            .listen
            .iter()
            .zip(&self.listen_protocols)
            .map(|(addr, protocol)| format!("{}://{addr}", protocol.as_str()))
            .collect();
        let admin = self
            .admin
            .map_or_else(|| "-".to_owned(), |a| format!("http://{a}"));
        format!(
            "gateway ready listen={} admin={admin} dataplane={}",
            listen.join(","),
            self.dataplane
        )
    }

    /// What SIGHUP calls: [`Reloader::reload`].
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// `[global] shutdown_drain_secs` of the configuration served now (a reload applies it).
    pub fn shutdown_drain(&self) -> std::time::Duration {
        self.shared.snapshot.load().config.global.shutdown_drain
    }

    /// Serves until a listener task or the admin task dies (they only end on panic, or
    /// after [`Running::shutdown`] began). Cancel-safe.
    pub async fn wait(&mut self) {
        tokio::select! {
            Some(ended) = self.admin_task.join_next() => {
                if let Err(err) = ended {
                    tracing::error!(error = %err, "the admin task died");
                }
            }
            // The listener task's supervisor logs the panic.
            () = self.generations.died() => {}
        }
    }
}

/// Checks that the data path serves everything `config` asks for, loads the TLS
/// certificates and CAs, resolves backend names, binds every listener, sets up the
/// dataplane, and starts serving: generation 1, prepared from nothing and committed.
/// Nothing is bound when the configuration is refused. `sources` are where `config` came
/// from: a reload reads them again.
pub async fn start(config: Config, sources: config::Sources) -> Result<Running, StartError> {
    // Before anything is opened, and before the snapshot derives its connection limit
    // from the descriptor limit.
    admission::nofile::raise_soft_limit();
    let affinity_key = AffinityKey::random();
    let health = Arc::new(Health::default());
    let prepared = generation::prepare(config, &affinity_key, &health, &[]).await?;
    let config = prepared.config().clone();
    let global = &config.global;
    let admin = match global.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };

    let (dataplane, why) = Dataplane::start(global.dataplane).await?;
    let metrics = Metrics::default();
    let bound = prepared.bound().to_vec();
    let shared = Arc::new(Shared {
        snapshot: arc_swap::ArcSwap::new(prepared.snapshot().clone()),
        client: upstream::client::new(),
        affinity_key,
        dataplane: dataplane.clone(),
        metrics: metrics.clone(),
        lifecycle: Lifecycle::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        health,
        tunnels: Arc::default(),
        admission: Arc::new(Admission::new(metrics.clone())),
    });
    // Probers and listeners start once everything is bound and the dataplane is up.
    let generations = Arc::new(Generations::new(
        shared.clone(),
        Probers::new(global.default_probes),
    ));
    generations.lock().await.commit(prepared).await;

    let reload_metrics = ReloadMetrics::default();
    let reloader = Reloader::new(
        generations.clone(),
        shared.clone(),
        sources,
        global.clone(),
        reload_metrics.clone(),
    );
    let mut running = Running {
        listen: bound,
        listen_protocols: config.binds.iter().map(|bind| bind.protocol).collect(),
        admin: None,
        dataplane: dataplane.clone(),
        reloader: reloader.clone(),
        generations,
        admin_task: JoinSet::new(),
        shared: shared.clone(),
    };
    if let Some(listener) = admin {
        running.admin = listener.local_addr().ok();
        let info = metrics::DataplaneInfo {
            dataplane: dataplane.to_string(),
            reason: why,
        };
        let mut registry = metrics.registry(info);
        reload_metrics.register(&mut registry);
        admin::collectors::register(
            &mut registry,
            dataplane.ebpf().cloned(),
            shared.health.clone(),
            shared.tunnels.clone(),
        );
        admin::collectors::register_admission(&mut registry, shared.admission.clone());
        let refused = admin::RefusedMetric::default();
        refused.register(&mut registry);
        let admin = admin::Admin {
            registry,
            shared,
            reloader,
            refused,
        };
        running
            .admin_task
            .spawn(admin::serve(listener, Arc::new(admin)));
    }
    Ok(running)
}
