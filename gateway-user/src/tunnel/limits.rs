//! What ends a tunnel other than its peers: idle time, maximum lifetime, and the end of the
//! shutdown drain. Timers are computed from absolute times, so waking costs one timer per
//! tunnel per idle period, never a look at the data.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{CloseReason, Settings};

/// The limits of one tunnel.
pub struct Limits {
    settings: Settings,
    started: Instant,
    shutdown: CancellationToken,
}

impl Limits {
    pub fn new(settings: Settings, started: Instant, shutdown: CancellationToken) -> Self {
        Self {
            settings,
            started,
            shutdown,
        }
    }

    /// Resolves with the reason once a limit is reached. `idle_for` says how long the
    /// tunnel has carried no byte in either direction; it is asked only when the idle
    /// timer fires, so it may be a map lookup.
    pub fn reached<'a>(
        &'a self,
        mut idle_for: impl FnMut() -> Duration + 'a,
    ) -> impl Future<Output = CloseReason> + 'a {
        let timeout = self.settings.idle_timeout;
        async move {
            let lifetime = async {
                match self.settings.max_lifetime {
                    Some(max) => tokio::time::sleep_until((self.started + max).into()).await,
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
                () = self.shutdown.cancelled() => CloseReason::Shutdown,
                () = lifetime => CloseReason::MaxLifetime,
                () = idle => CloseReason::IdleTimeout,
            }
        }
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`, which
/// the verdict program stamps on every redirected segment.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec; CLOCK_MONOTONIC_COARSE always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time since `then_ns` on the [`monotonic_coarse_ns`] clock.
pub fn since_ns(then_ns: u64) -> Duration {
    Duration::from_nanos(monotonic_coarse_ns().saturating_sub(then_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(idle_ms: u64, lifetime_ms: Option<u64>) -> Settings {
        Settings {
            idle_timeout: Duration::from_millis(idle_ms),
            max_lifetime: lifetime_ms.map(Duration::from_millis),
            max_backlog_bytes: 0,
            sndbuf_bytes: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timer_rearms_while_there_is_activity() {
        let limits = Limits::new(
            settings(100, None),
            Instant::now(),
            CancellationToken::new(),
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
        let limits = Limits::new(
            settings(100, Some(250)),
            Instant::now(),
            CancellationToken::new(),
        );
        let reason = limits.reached(|| Duration::ZERO).await;
        assert!(matches!(reason, CloseReason::MaxLifetime), "{reason}");

        let token = CancellationToken::new();
        let limits = Limits::new(settings(100, None), Instant::now(), token.clone());
        token.cancel();
        let reason = limits.reached(|| Duration::ZERO).await;
        assert!(matches!(reason, CloseReason::Shutdown), "{reason}");
    }
}
