//! Accept loops that survive running out of descriptors.
//!
//! At `RLIMIT_NOFILE`, `accept(2)` fails with `EMFILE` and leaves the connection in the
//! queue, so the listener stays readable: a loop that just retries spins a core and
//! answers nobody. Here, as in Go's `net/http` and tokio-based servers, an accept that
//! fails for want of descriptors or memory backs off (5 ms, doubling to 1 s, back to 5 ms
//! after the next success) and is counted (`gateway_accept_errors_total{socket,kind}`).
//! And the loop keeps a reserve descriptor (`/dev/null`, opened at start), as nginx
//! and libuv do: on `EMFILE`/`ENFILE` it closes the reserve, accepts the waiting
//! connection on the slot that freed, and hands it out as [`Accepted::Reserved`]; the
//! client listeners answer it `503`, the admin listener serves it (so `/metrics` still
//! answers), and the reserve is opened again once that connection is closed.

use std::{
    fs::File,
    future::poll_fn,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::Poll,
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// The first pause after a failed accept; each one in a row doubles it, up to
/// [`BACKOFF_MAX`] (Go's `net/http` server uses the same numbers).
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Which accept loop, for the metric's `socket` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    /// A client listener (any bind of the configuration).
    Client,
    /// The admin listener.
    Admin,
}

impl Socket {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }
}

/// A descriptor kept open for the moment there is none left: closing it lets one more
/// connection be accepted and answered.
#[derive(Debug)]
pub struct Reserve {
    file: Mutex<Option<File>>,
    /// Whether `file` is `None`: read on every accept without the lock.
    empty: AtomicBool,
}

impl Reserve {
    /// Opens the reserve (`/dev/null`). Where that fails the reserve starts empty, and is
    /// tried again after each accept until it opens.
    pub fn open() -> Arc<Self> {
        let reserve = Arc::new(Self {
            file: Mutex::new(None),
            empty: AtomicBool::new(true),
        });
        if !reserve.refill() {
            tracing::warn!(
                "cannot open /dev/null as the reserve descriptor: out of descriptors, \
                 connections will not be answered"
            );
        }
        reserve
    }

    /// Closes the reserve descriptor; it is opened again when the returned guard drops.
    /// `None` if it is not open.
    fn release(self: &Arc<Self>) -> Option<Released> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        self.empty.store(true, Ordering::Release);
        drop(file);
        Some(Released(self.clone()))
    }

    /// Opens the reserve if it is not; whether it is open now.
    fn refill(&self) -> bool {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if file.is_none() {
            *file = File::open("/dev/null").ok();
        }
        let open = file.is_some();
        self.empty.store(!open, Ordering::Release);
        open
    }

    fn refill_if_empty(&self) {
        if self.empty.load(Ordering::Acquire) {
            self.refill();
        }
    }
}

/// The reserve descriptor's slot, lent to one connection: dropping it (after the
/// connection's socket is closed) opens the reserve again.
#[derive(Debug)]
pub struct Released(Arc<Reserve>);

impl Drop for Released {
    fn drop(&mut self) {
        self.0.refill();
    }
}

/// A connection from [`Acceptor::accept`].
#[derive(Debug)]
pub enum Accepted {
    Conn(TcpStream, SocketAddr),
    /// Accepted on the reserve descriptor's slot: the process is out of descriptors.
    /// Answer it briefly, close it, then drop the guard.
    Reserved(TcpStream, Released),
}

/// One listener's accept loop state.
pub struct Acceptor {
    listener: Arc<TcpListener>,
    reserve: Arc<Reserve>,
    metrics: Metrics,
    socket: Socket,
    /// The pause after the next failed accept.
    backoff: Duration,
    /// Accepts that failed since the last one that did not.
    failing: u64,
}

impl Acceptor {
    pub fn new(
        listener: Arc<TcpListener>,
        reserve: Arc<Reserve>,
        metrics: Metrics,
        socket: Socket,
    ) -> Self {
        Self {
            listener,
            reserve,
            metrics,
            socket,
            backoff: BACKOFF_FIRST,
            failing: 0,
        }
    }

    /// The next connection. Failed accepts are counted and logged (once per run of them),
    /// and pause the loop as the module says. Cancel-safe.
    pub async fn accept(&mut self) -> Accepted {
        loop {
            let error = match self.listener.accept().await {
                Ok((stream, client)) => {
                    self.succeeded();
                    return Accepted::Conn(stream, client);
                }
                Err(error) => error,
            };
            let kind = error_kind(&error);
            self.metrics.accept_error(self.socket.as_str(), kind);
            if kind == "aborted" {
                // That connection is gone; the next one is not affected.
                tracing::debug!(%error, socket = self.socket.as_str(), "accept: connection aborted");
                continue;
            }
            if self.failing == 0 {
                tracing::warn!(
                    %error,
                    socket = self.socket.as_str(),
                    "accept failed; backing off (5 ms doubling to 1 s) until it succeeds"
                );
            }
            self.failing += 1;
            if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                if let Some(released) = self.reserve.release() {
                    if let Some(stream) = self.try_accept().await {
                        return Accepted::Reserved(stream, released);
                    }
                    // Dropping `released` opens the reserve again.
                }
            }
            let pause = self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            tokio::time::sleep(pause).await;
        }
    }

    /// The connection waiting in the queue, if there is one now (never waits for one).
    async fn try_accept(&self) -> Option<TcpStream> {
        poll_fn(|cx| {
            Poll::Ready(match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => Some(stream),
                Poll::Ready(Err(_)) | Poll::Pending => None,
            })
        })
        .await
    }

    fn succeeded(&mut self) {
        if self.failing > 0 {
            tracing::info!(
                failed = self.failing,
                socket = self.socket.as_str(),
                "accepting again"
            );
            self.failing = 0;
        }
        self.backoff = BACKOFF_FIRST;
        self.reserve.refill_if_empty();
    }
}

/// The `kind` label of a failed accept (`crate::metrics::ACCEPT_ERROR_KINDS`). "aborted"
/// covers what accept(2) reports about the one connection it was taking (it was reset, or
/// a firewall or protocol error hit it), which Linux says to treat like `EAGAIN`.
fn error_kind(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EMFILE) => "emfile",
        Some(libc::ENFILE) => "enfile",
        Some(libc::ENOBUFS) => "enobufs",
        Some(libc::ENOMEM) => "enomem",
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::EPROTO
            | libc::EPERM
            | libc::EINTR
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH,
        ) => "aborted",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_sorted_into_the_metrics_kinds() {
        let kind = |errno| error_kind(&io::Error::from_raw_os_error(errno));
        assert_eq!(kind(libc::EMFILE), "emfile");
        assert_eq!(kind(libc::ENFILE), "enfile");
        assert_eq!(kind(libc::ECONNABORTED), "aborted");
        assert_eq!(kind(libc::EINVAL), "other");
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EPROTO,
            libc::EBADF,
        ] {
            assert!(crate::metrics::ACCEPT_ERROR_KINDS.contains(&kind(errno)));
        }
    }

    #[test]
    fn the_reserve_is_given_back_when_its_guard_drops() {
        let reserve = Reserve::open();
        assert!(!reserve.empty.load(Ordering::Acquire));
        let released = reserve.release().expect("the reserve is open");
        assert!(reserve.release().is_none(), "one reserve, lent once");
        drop(released);
        assert!(reserve.release().is_some(), "open again");
    }
}
