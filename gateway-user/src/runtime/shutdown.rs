//! Graceful shutdown: stop accepting, let what is open finish for a while, then cancel
//! what is left.

use std::time::{Duration, Instant};

use super::Running;
use crate::shared::Lifecycle;

/// Once the drain period is over and the shutdown token is cancelled, tunnels and
/// connections close themselves (spliced tunnels leave the eBPF maps first). This is how
/// long they get to do so before the process exits anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

impl Running {
    /// Closes the client listeners at once (new connects are refused), lets open tunnels
    /// and requests in flight finish for up to `drain` (idle keep-alive connections close
    /// at once), then cancels what is left and returns when it is gone. Returns early when
    /// everything finished before the drain period was over. The admin listener stays up
    /// until the `Running` is dropped.
    pub async fn shutdown(self, drain: Duration) {
        let started = Instant::now();
        let lifecycle = self.shared.lifecycle.clone();
        lifecycle.draining.cancel();
        // Each listener task returns on `draining`, dropping (closing) its listener.
        self.generations.close_listeners().await;
        lifecycle.connections.close();
        lifecycle.tunnels.close();
        tracing::info!(
            tunnels = lifecycle.tunnels.len(),
            connections = lifecycle.connections.len(),
            drain_secs = drain.as_secs(),
            "draining: listeners closed, waiting for open tunnels and requests to finish"
        );

        let drained = tokio::time::timeout(drain, all_done(&lifecycle))
            .await
            .is_ok();
        if !drained {
            tracing::info!(
                tunnels = lifecycle.tunnels.len(),
                connections = lifecycle.connections.len(),
                "drain period over; closing what is left"
            );
            self.shared.shutdown.cancel();
            if tokio::time::timeout(CANCEL_GRACE, all_done(&lifecycle))
                .await
                .is_err()
            {
                tracing::warn!(
                    tunnels = lifecycle.tunnels.len(),
                    connections = lifecycle.connections.len(),
                    grace_ms = CANCEL_GRACE.as_millis() as u64,
                    "still open after being told to close; exiting anyway"
                );
            }
        }
        tracing::info!(
            drained,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
    }
}

/// Resolves when no connection and no tunnel is left (both trackers must be closed).
async fn all_done(lifecycle: &Lifecycle) {
    // Connections first: a connection spawns its tunnel before its own task ends, so once
    // no connection is left every tunnel is already tracked.
    lifecycle.connections.wait().await;
    lifecycle.tunnels.wait().await;
}
