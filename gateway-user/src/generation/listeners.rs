//! The client listeners: a bind's socket, opened while a generation is prepared, and the
//! task that accepts on it once the generation is committed.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    net::{TcpListener, TcpSocket},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::StartError;
use crate::{config::Bind, proxy, shared::Shared, snapshot::BindId};

/// A bound socket, not yet served.
pub(crate) struct Opened {
    pub(super) id: BindId,
    listener: TcpListener,
    pub(super) local: SocketAddr,
    /// Its accept queue, as given to `listen(2)`.
    backlog: u32,
}

/// Binds `bind`'s address and listens with an accept queue of `backlog` (`[global]
/// listen_backlog`; the kernel caps it at `net.core.somaxconn`).
pub(super) fn open(bind: &Bind, backlog: u32) -> Result<Opened, StartError> {
    let failed = |source| StartError::Bind {
        addr: bind.addr,
        source,
    };
    let socket = if bind.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(failed)?;
    // As std and tokio's `TcpListener::bind` do: a restart can bind while connections of
    // the previous process are still in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(bind.addr).map_err(failed)?;
    let listener = socket.listen(backlog).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok(Opened {
        id: BindId::of(bind),
        listener,
        local,
        backlog,
    })
}

/// A client listener: its socket is shared with `task`, which returns on `stop`; the
/// socket closes once both are gone.
pub(super) struct ListenerTask {
    pub(super) id: BindId,
    pub(super) local: SocketAddr,
    pub(super) stop: CancellationToken,
    pub(super) task: JoinHandle<()>,
    listener: Arc<TcpListener>,
    backlog: u32,
}

impl ListenerTask {
    /// Gives the socket an accept queue of `backlog` if it has another: `listen(2)` again
    /// on a listening socket changes only its backlog (Linux), so a reload applies
    /// `listen_backlog` to the binds it keeps without closing them.
    pub(super) fn set_backlog(&mut self, backlog: u32) {
        if backlog == self.backlog {
            return;
        }
        let socket = socket2::SockRef::from(&*self.listener);
        match socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX)) {
            Ok(()) => {
                tracing::info!(bind = %self.id, from = self.backlog, to = backlog, "listen backlog changed");
                self.backlog = backlog;
            }
            Err(error) => {
                tracing::warn!(bind = %self.id, %error, backlog, "cannot change the listen backlog");
            }
        }
    }

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
    let listener = Arc::new(opened.listener);
    let serve = tokio::spawn(proxy::serve(
        listener.clone(),
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
        listener,
        backlog: opened.backlog,
    }
}
