//! The gateway daemon as a library: `gateway::start` binds, loads the dataplane, and serves.

pub mod admin;
pub mod cli;
pub mod dataplane;
pub mod metrics;
pub mod proxy;
pub mod tunnel;

mod shutdown;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinSet};

use crate::{
    dataplane::{Dataplane, DataplaneMode},
    metrics::Metrics,
    proxy::{backends::Backends, Lifecycle, Shared},
};

/// Everything needed to start a gateway; validated by the CLI layer.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub backends: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub dataplane: DataplaneMode,
    pub tunnel: tunnel::Settings,
    pub handshake_timeout: Duration,
    pub shutdown_drain: Duration,
}

impl From<cli::RunArgs> for Config {
    fn from(args: cli::RunArgs) -> Self {
        Self {
            listen: args.listen,
            backends: args.backend,
            admin: args.admin,
            dataplane: args.dataplane,
            tunnel: tunnel::Settings {
                idle_timeout: Duration::from_secs(args.tunnel_idle_timeout_secs),
                max_lifetime: (args.tunnel_max_lifetime_secs > 0)
                    .then(|| Duration::from_secs(args.tunnel_max_lifetime_secs)),
                max_backlog_bytes: args.max_tunnel_backlog_bytes,
                sndbuf_bytes: args.tunnel_sndbuf_bytes,
            },
            handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
            shutdown_drain: Duration::from_secs(args.shutdown_drain_secs),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF dataplane: {0}")]
    Dataplane(#[from] dataplane::StartError),
}

/// A started gateway: its bound addresses and the tasks serving them.
pub struct Running {
    pub listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub dataplane: Dataplane,
    /// One task per client listener; each owns its listener and drops it when the drain
    /// starts.
    listeners: JoinSet<()>,
    /// The admin listener, kept up until the process exits so a drain can be watched.
    admin_task: JoinSet<()>,
    shared: Arc<Shared>,
}

impl Running {
    /// The one line printed on stdout when the gateway is ready; scripts and tests wait
    /// for it (it carries the bound ports when port 0 was asked for).
    pub fn ready_line(&self) -> String {
        let listen: Vec<String> = self.listen.iter().map(|a| format!("http://{a}")).collect();
        let admin = self
            .admin
            .map_or_else(|| "-".to_owned(), |a| format!("http://{a}"));
        format!(
            "gateway ready listen={} admin={admin} dataplane={}",
            listen.join(","),
            self.dataplane
        )
    }

    /// Serves until a listener task ends (they only end on panic, or after
    /// [`Running::shutdown`] began).
    pub async fn wait(&mut self) {
        let ended = tokio::select! {
            Some(ended) = self.listeners.join_next() => ended,
            Some(ended) = self.admin_task.join_next() => ended,
            else => return,
        };
        if let Err(err) = ended {
            tracing::error!(error = %err, "a gateway task died");
        }
    }
}

/// Binds every listener, sets up the dataplane, and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
        listeners.push(listener);
    }
    let admin = match config.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };

    let (dataplane, why) =
        Dataplane::start(config.dataplane, config.tunnel.max_backlog_bytes).await?;
    let metrics = Metrics::default();
    let shared = Arc::new(Shared {
        backends: Backends::new(config.backends.clone()),
        dataplane: dataplane.clone(),
        metrics: metrics.clone(),
        tunnel: config.tunnel,
        handshake_timeout: config.handshake_timeout,
        lifecycle: Lifecycle::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
    });

    let mut running = Running {
        listen: Vec::new(),
        admin: None,
        dataplane: dataplane.clone(),
        listeners: JoinSet::new(),
        admin_task: JoinSet::new(),
        shared: shared.clone(),
    };
    for (listener, addr) in listeners.into_iter().zip(&config.listen) {
        running
            .listen
            .push(listener.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?);
        running
            .listeners
            .spawn(proxy::serve(listener, shared.clone()));
    }
    if let Some(listener) = admin {
        running.admin = listener.local_addr().ok();
        let info = metrics::DataplaneInfo {
            dataplane: dataplane.to_string(),
            reason: why,
        };
        let registry = Arc::new(metrics.registry(dataplane.ebpf().cloned(), info));
        running.admin_task.spawn(admin::serve(listener, registry));
    }
    Ok(running)
}
