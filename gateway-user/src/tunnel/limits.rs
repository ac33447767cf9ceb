//! What ends a tunnel other than its peers: idle time, maximum lifetime, the end of the
//! shutdown drain, and its backend going down (per `on_backend_down`). Timers are computed from absolute times, so waking costs one timer per
//! tunnel per idle period, never a look at the data.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{CloseReason, Settings};
use crate::{config::OnBackendDown, health::State};

/// The limits of one tunnel.
pub struct Limits {
    settings: Settings,
    started: Instant,
    shutdown: CancellationToken,
    backend: Option<BackendWatch>,
}

/// A tunnel's view of its backend's health, and what to do when it goes down.
pub struct BackendWatch {
    pub state: watch::Receiver<State>,
    pub on_down: OnBackendDown,
    /// Set while a drain is counting down (shown by `/tunnels`).
    pub draining: Arc<AtomicBool>,
    /// When the drain counting down ends: a tunnel that changes carrier (a relayed tunnel
    /// promoted to the splice) asks again, and the drain goes on where it was.
    pub drain_ends: Option<tokio::time::Instant>,
}

impl BackendWatch {
    /// Resolves when `on_down` says the tunnel must close: at once (`close`), after the
    /// draining time unless the backend came back first (`drain`), or never (`keep`).
    async fn closes(&mut self) -> CloseReason {
        let down = |state: &State| !state.takes_traffic();
        let drain = match self.on_down {
            OnBackendDown::Keep => return std::future::pending().await,
            OnBackendDown::Close => None,
            OnBackendDown::Drain(time) => Some(time),
        };
        if self.drain_ends.is_some() && self.state.borrow().takes_traffic() {
            // The backend came back while nothing was watching (between two carriers): the
            // drain is over, and a later one starts afresh.
            self.drain_ends = None;
            self.draining.store(false, Ordering::Relaxed);
        }
        loop {
            let went_down = self.state.wait_for(down).await.is_ok();
            if !went_down {
                // The backend's health is gone (the gateway is stopping): nothing to do.
                return std::future::pending().await;
            }
            let removed = *self.state.borrow() == State::Removed;
            let Some(time) = drain else {
                return CloseReason::BackendDown { removed };
            };
            let ends = match self.drain_ends {
                Some(ends) => ends,
                None => {
                    self.draining.store(true, Ordering::Relaxed);
                    tracing::info!(
                        drain_secs = time.as_secs(),
                        removed,
                        "backend down: tunnel draining"
                    );
                    *self.drain_ends.insert(tokio::time::Instant::now() + time)
                }
            };
            let state = &mut self.state;
            let back = async { state.wait_for(|state| state.takes_traffic()).await.is_ok() };
            tokio::select! {
                () = tokio::time::sleep_until(ends) => return CloseReason::BackendDown { removed },
                came_back = back => {
                    self.drain_ends = None;
                    self.draining.store(false, Ordering::Relaxed);
                    if !came_back {
                        return std::future::pending().await;
                    }
                    tracing::info!("backend back up: tunnel no longer draining");
                }
            }
        }
    }
}

impl Limits {
    pub fn new(
        settings: Settings,
        started: Instant,
        shutdown: CancellationToken,
        backend: Option<BackendWatch>,
    ) -> Self {
        Self {
            settings,
            started,
            shutdown,
            backend,
        }
    }

    /// Resolves with the reason once a limit is reached. `idle_for` says how long the
    /// tunnel has carried no byte in either direction; it is asked only when the idle
    /// timer fires, so it may be a map lookup. It may be asked again (by a tunnel that
    /// changed carrier): the lifetime counts from the tunnel's start, and a backend drain
    /// goes on where it was.
    pub fn reached<'a>(
        &'a mut self,
        mut idle_for: impl FnMut() -> Duration + 'a,
    ) -> impl Future<Output = CloseReason> + 'a {
        let Self {
            settings,
            started,
            shutdown,
            backend,
        } = self;
        let timeout = settings.idle_timeout;
        async move {
            let backend_down = async {
                match backend {
                    Some(backend) => backend.closes().await,
                    None => std::future::pending().await,
                }
            };
            let lifetime = async {
                match settings.max_lifetime {
                    Some(max) => tokio::time::sleep_until((*started + max).into()).await,
                    None => std::future::pending().await,
                }
            };
            let idle = async {
                loop {
                    let idle = idle_for();
                    if idle >= timeout {
                        return;
                    }
                    tokio::time::sleep(timeout - idle).await;
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => CloseReason::Shutdown,
                () = lifetime => CloseReason::MaxLifetime,
                () = idle => CloseReason::IdleTimeout,
                reason = backend_down => reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::splice::SpliceSettings;

    fn settings(idle_ms: u64, lifetime_ms: Option<u64>) -> Settings {
        Settings {
            idle_timeout: Duration::from_millis(idle_ms),
            max_lifetime: lifetime_ms.map(Duration::from_millis),
            splice: SpliceSettings {
                max_backlog_bytes: 0,
                sndbuf_bytes: 0,
                backlog_pool_bytes: 0,
            },
            promote: crate::config::Promotion::AT_ONCE,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timer_rearms_while_there_is_activity() {
        let mut limits = Limits::new(
            settings(100, None),
            Instant::now(),
            CancellationToken::new(),
            None,
        );
        let mut calls = 0;
        // Active at the first two checks (idle 0), idle after that.
        let reason = limits
            .reached(|| {
                calls += 1;
                if calls <= 2 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(100)
                }
            })
            .await;
        assert!(matches!(reason, CloseReason::IdleTimeout), "{reason}");
        assert_eq!(calls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn lifetime_and_shutdown_end_a_busy_tunnel() {
        let mut limits = Limits::new(
            settings(100, Some(250)),
            Instant::now(),
            CancellationToken::new(),
            None,
        );
        let reason = limits.reached(|| Duration::ZERO).await;
        assert!(matches!(reason, CloseReason::MaxLifetime), "{reason}");

        let token = CancellationToken::new();
        let mut limits = Limits::new(settings(100, None), Instant::now(), token.clone(), None);
        token.cancel();
        let reason = limits.reached(|| Duration::ZERO).await;
        assert!(matches!(reason, CloseReason::Shutdown), "{reason}");
    }
}
