//! The client listeners: a bind's socket, opened while a generation is prepared, and the
//! task that accepts on it once the generation is committed.

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::StartError;
use crate::{config::Bind, proxy, shared::Shared, snapshot::BindId};

/// A bound socket, not yet served.
pub(crate) struct Opened {
    pub(super) id: BindId,
    listener: TcpListener,
    pub(super) local: SocketAddr,
}

/// Binds `bind`'s address.
pub(super) async fn open(bind: &Bind) -> Result<Opened, StartError> {
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

/// A client listener: its socket is owned by `task`, which returns (closing it) on `stop`.
pub(super) struct ListenerTask {
    pub(super) id: BindId,
    pub(super) local: SocketAddr,
    pub(super) stop: CancellationToken,
    pub(super) task: JoinHandle<()>,
}

impl ListenerTask {
    /// Stops accepting and waits until the socket is closed, so a connect from then on is
    /// refused.
    pub(super) async fn close(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Serves `opened`, the socket of `bind`, in a task that stops on its own token (a child
/// of the drain's); cancels `died` if the task panics.
pub(super) fn listen(
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
