//! The gateway daemon as a library: `gateway::start` binds, loads the dataplane, and serves.

pub mod admin;
pub mod body;
pub mod cli;
pub mod dataplane;
pub mod health;
pub mod metrics;
pub mod privileges;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod snapshot;
pub mod tls;
pub mod tunnel;
pub mod upstream;

mod shutdown;

/// The configuration: a crate of its own (`gateway-config`), which imports nothing of the
/// daemon.
pub use gateway_config as config;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinSet};

pub use crate::config::Config;
use crate::{
    config::{
        plan::{self, Plan},
        Protocol,
    },
    dataplane::Dataplane,
    metrics::Metrics,
    proxy::{Lifecycle, Shared},
    reload::{ReloadMetrics, Reloader},
    snapshot::Snapshot,
    upstream::affinity::AffinityKey,
};

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

/// A started gateway: its bound addresses and the tasks serving them.
pub struct Running {
    /// The binds it started with (a reload can change them since).
    pub listen: Vec<SocketAddr>,
    /// The protocol of each bind of `listen`, in the same order.
    pub listen_protocols: Vec<Protocol>,
    pub admin: Option<SocketAddr>,
    pub dataplane: Dataplane,
    /// Applies reloads; owns the client listeners' tasks (one per bind, each owning its
    /// socket and dropping it when the drain starts or a reload removes the bind).
    reloader: Arc<Reloader>,
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
            () = self.reloader.died() => {}
        }
    }
}

/// Checks that the data path serves everything `config` asks for, loads the TLS
/// certificates and CAs, resolves backend names, binds every listener, sets up the
/// dataplane, and starts serving. Nothing is bound when the configuration is refused.
/// `sources` are where `config` came from: a reload reads them again.
pub async fn start(config: Config, sources: config::Sources) -> Result<Running, StartError> {
    let Plan { warnings } = plan::plan(&config);
    let config = Arc::new(config);
    let global = &config.global;
    // Loaded and resolved before anything is bound, so a bad certificate or a name that
    // does not resolve binds nothing.
    let tls = snapshot::load_tls(&config)?;
    let affinity_key = AffinityKey::random();
    let health = Arc::new(health::Health::new(global.default_probes));
    let upstreams = snapshot::resolve_upstreams(&config, &affinity_key, &tls, &health).await?;
    let mut opened = Vec::new();
    for bind in &config.binds {
        opened.push(reload::open(bind).await?);
    }
    let admin = match global.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };
    for warning in &warnings {
        tracing::warn!("{warning}");
    }

    let (dataplane, why) = Dataplane::start(global.dataplane).await?;
    let metrics = Metrics::default();
    let bound: Vec<SocketAddr> = opened.iter().map(|opened| opened.local).collect();
    let snapshot = Snapshot::new(config.clone(), &upstreams, &bound, &tls.acceptors);
    let shared = Arc::new(Shared {
        snapshot: arc_swap::ArcSwap::from_pointee(snapshot),
        client: upstream::client::new(),
        affinity_key,
        dataplane: dataplane.clone(),
        metrics: metrics.clone(),
        lifecycle: Lifecycle::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        health: health.clone(),
        tunnels: Arc::default(),
    });
    // Probers start once everything is bound and the dataplane is up.
    health.reconcile(&upstreams);

    let reload_metrics = ReloadMetrics::default();
    let reloader = Reloader::start(shared.clone(), sources, opened, reload_metrics.clone());
    let mut running = Running {
        listen: bound,
        listen_protocols: config.binds.iter().map(|bind| bind.protocol).collect(),
        admin: None,
        dataplane: dataplane.clone(),
        reloader: reloader.clone(),
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
        let admin = admin::Admin {
            registry,
            shared,
            reloader,
        };
        running
            .admin_task
            .spawn(admin::serve(listener, Arc::new(admin)));
    }
    Ok(running)
}
