//! The verdict program's clock, read from userspace.

use std::time::Duration;

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
