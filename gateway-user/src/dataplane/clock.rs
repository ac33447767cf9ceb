//! The verdict program's clock, read from userspace.

use std::{sync::OnceLock, time::Duration};

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

/// Time since `then_ns` on the [`monotonic_coarse_ns`] clock, at least: a coarse reading
/// is up to one tick older than the moment it was taken, so the difference of two can
/// exceed the true time between them by up to one tick (4 ms at `HZ=250`). Less that tick,
/// it never does, and an idle timeout measured with it never fires early
/// (`tests/tests/faults.rs`, `half_closed_then_silent_closed_by_idle_timeout_*`, saw one
/// close 14 µs early before).
pub fn idle_since_ns(then_ns: u64) -> Duration {
    since_ns(then_ns).saturating_sub(resolution())
}

/// One tick of `CLOCK_MONOTONIC_COARSE`.
fn resolution() -> Duration {
    static TICK: OnceLock<Duration> = OnceLock::new();
    *TICK.get_or_init(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec; CLOCK_MONOTONIC_COARSE always exists on Linux.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
        if rc != 0 {
            // The coarsest tick Linux has (HZ=100).
            return Duration::from_millis(10);
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_is_never_more_than_the_time_that_passed() {
        let tick = resolution();
        assert!(
            tick > Duration::ZERO && tick <= Duration::from_millis(10),
            "{tick:?}"
        );
        let fine = std::time::Instant::now();
        let then = monotonic_coarse_ns();
        std::thread::sleep(Duration::from_millis(30));
        let idle = idle_since_ns(then);
        assert!(idle <= fine.elapsed(), "{idle:?} > {:?}", fine.elapsed());
    }
}
