//! The per-client upgrade rate, sans-io: a token bucket kept as one number, the generic
//! cell rate algorithm's "theoretical arrival time" (TAT, in nanoseconds of a monotonic
//! clock). A bucket of `burst` tokens refilled at `per_sec` a second lets `burst` upgrades
//! through at once and `per_sec` a second after that; the state is full (and can be
//! forgotten) once the TAT is not in the future.

use std::time::Duration;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A rate and burst, as intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Time for one token to come back.
    interval_ns: u64,
    /// How far the TAT may run ahead of now: `burst - 1` intervals.
    tolerance_ns: u64,
}

impl Rate {
    /// `None` for `per_sec == 0` (no limit). A `burst` of 0 is taken as 1.
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        if per_sec == 0 {
            return None;
        }
        let interval_ns = (NANOS_PER_SEC / u64::from(per_sec)).max(1);
        Some(Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
        })
    }

    /// Takes one token at `now_ns` from the bucket whose TAT is `tat_ns` (0 for a client
    /// never seen): the new TAT, or how long until a token is back.
    pub fn take(&self, tat_ns: u64, now_ns: u64) -> Result<u64, Duration> {
        let tat = tat_ns.max(now_ns);
        let ahead = tat - now_ns;
        if ahead > self.tolerance_ns {
            Err(Duration::from_nanos(ahead - self.tolerance_ns))
        } else {
            Ok(tat + self.interval_ns)
        }
    }
}

/// Whether a bucket with TAT `tat_ns` is full at `now_ns`: forgetting it changes nothing.
pub fn full(tat_ns: u64, now_ns: u64) -> bool {
    tat_ns <= now_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NANOS_PER_SEC;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let rate = Rate::new(2, 3).expect("a limit");
        let mut tat = 0;
        let now = 10 * SEC;
        for _ in 0..3 {
            tat = rate.take(tat, now).expect("within the burst");
        }
        let wait = rate.take(tat, now).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500), "one token every 500 ms");
        // Half a second later exactly one more passes.
        let later = now + SEC / 2;
        tat = rate.take(tat, later).expect("a token came back");
        assert!(rate.take(tat, later).is_err());
        assert!(!full(tat, later));
        // Once the TAT is past, the bucket is full again: the whole burst passes.
        let idle = tat;
        assert!(full(tat, idle));
        for _ in 0..3 {
            tat = rate.take(tat, idle).expect("full again");
        }
        assert!(rate.take(tat, idle).is_err());
    }

    #[test]
    fn zero_rate_is_no_limit_and_a_burst_of_one_is_the_rate_alone() {
        assert_eq!(Rate::new(0, 10), None);
        let rate = Rate::new(1, 1).expect("a limit");
        let tat = rate.take(0, SEC).expect("the first passes");
        assert_eq!(
            rate.take(tat, SEC).expect_err("the second waits"),
            Duration::from_secs(1)
        );
        assert_eq!(Rate::new(1, 0), Rate::new(1, 1));
    }
}
