//! The process's root state: the handles every client connection, tunnel and control task
//! shares. The runtime makes one [`Shared`] at start and lends it out; the data path only
//! reads it (the snapshot without a lock), the control path publishes into it (a reload
//! swaps the snapshot; the drain cancels the lifecycle tokens).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{dataplane::Dataplane, metrics::Metrics, snapshot::Snapshot};

/// What every connection of every listener shares.
pub struct Shared {
    /// The configuration being served: routers and upstreams. Each request reads the
    /// current one without a lock; a reload publishes a new one.
    pub snapshot: ArcSwap<Snapshot>,
    /// Pooled keep-alive connections to the `http` backends, for ordinary requests (each
    /// `https` upstream has a client of its own).
    pub client: crate::upstream::client::HttpClient,
    /// Keys the affinity cookies; kept for the snapshots a reload builds, so pinned
    /// clients stay pinned.
    pub affinity_key: crate::upstream::affinity::AffinityKey,
    pub dataplane: Dataplane,
    pub metrics: Metrics,
    pub lifecycle: Lifecycle,
    /// Cancelled when the drain period after SIGTERM is over: what is still open closes.
    pub shutdown: CancellationToken,
    /// Backend health (probes, passive checks), kept across reloads.
    pub health: Arc<crate::health::Health>,
    /// The live tunnels (`/tunnels`).
    pub tunnels: Arc<crate::tunnel::registry::Registry>,
    /// Client connections open, per client and in all, and the upgrade buckets; checked
    /// against the snapshot's limits as each connection is accepted.
    pub admission: Arc<crate::admission::Admission>,
}

impl Shared {
    /// For the client's TLS handshake, for its request head, and for the backend to
    /// connect and answer it: `[global] handshake_timeout_secs` of the current snapshot, so
    /// a reload applies it to the connections and requests that start afterwards.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.snapshot.load().config.global.handshake_timeout
    }

    /// How long a write to a client may make no progress before its connection is closed:
    /// `[global] response_send_timeout_secs` of the current snapshot, for the connections
    /// accepted afterwards.
    pub fn response_send_timeout(&self) -> std::time::Duration {
        self.snapshot.load().config.global.response_send_timeout
    }
}

/// The shutdown states every connection watches, and the tasks a drain waits for.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    /// Cancelled on SIGTERM/SIGINT: listeners stop accepting, idle keep-alive connections
    /// close, and connections busy with a request close once it is answered.
    pub draining: CancellationToken,
    /// Client connections while they speak HTTP (a connection's task ends when it becomes
    /// a tunnel).
    pub connections: TaskTracker,
    /// Tunnels, from the `101` until both sides have closed.
    pub tunnels: TaskTracker,
}
