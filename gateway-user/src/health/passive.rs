//! Passive health checking: what real traffic says. `failures` connect failures or resets
//! in a row take a backend out for the base ejection time, times the number of ejections
//! in a row (at most [`PASSIVE_EJECTION_MAX_FACTOR`] times); a success ends both streaks.
//! So a dead backend stops getting tunnels before its next probe, as Envoy's outlier
//! detection does, and one that keeps failing stays out longer.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use crate::config::{defaults::PASSIVE_EJECTION_MAX_FACTOR, PassiveHealth};

#[derive(Debug, Default)]
pub struct Passive {
    failures_in_row: AtomicU32,
    ejections_in_row: AtomicU32,
    /// On [`super::now_ns`]'s clock; 0: never ejected.
    ejected_until_ns: AtomicU64,
    ejections_total: AtomicU64,
}

impl Passive {
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until_ns.load(Ordering::Relaxed);
        until != 0 && super::now_ns() < until
    }

    /// Time left of the current ejection.
    pub fn ejected_for(&self) -> Duration {
        let until = self.ejected_until_ns.load(Ordering::Relaxed);
        Duration::from_nanos(until.saturating_sub(super::now_ns()))
    }

    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    pub fn failures_in_row(&self) -> u32 {
        self.failures_in_row.load(Ordering::Relaxed)
    }

    /// Counts a failure; returns the ejection it started, if it did.
    pub fn failure(&self, config: &PassiveHealth) -> Option<Duration> {
        if config.failures == 0 {
            return None;
        }
        let failures = self.failures_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < config.failures || self.ejected() {
            return None;
        }
        self.failures_in_row.store(0, Ordering::Relaxed);
        let ejections = self.ejections_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        let ejection = config.ejection * ejections.min(PASSIVE_EJECTION_MAX_FACTOR);
        let until = super::now_ns() + ejection.as_nanos() as u64;
        self.ejected_until_ns.store(until, Ordering::Relaxed);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        Some(ejection)
    }

    pub fn success(&self) {
        // Loads first: a healthy backend's successes then never write the cache line.
        if self.failures_in_row.load(Ordering::Relaxed) != 0 {
            self.failures_in_row.store(0, Ordering::Relaxed);
        }
        if self.ejections_in_row.load(Ordering::Relaxed) != 0 && !self.ejected() {
            self.ejections_in_row.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: PassiveHealth = PassiveHealth {
        failures: 3,
        ejection: Duration::from_secs(30),
    };

    #[test]
    fn failures_in_row_eject_and_a_success_breaks_the_row() {
        let passive = Passive::default();
        assert_eq!(passive.failure(&CONFIG), None);
        assert_eq!(passive.failure(&CONFIG), None);
        passive.success();
        assert_eq!(passive.failure(&CONFIG), None);
        assert_eq!(passive.failure(&CONFIG), None);
        assert!(!passive.ejected());
        assert_eq!(passive.failure(&CONFIG), Some(Duration::from_secs(30)));
        assert!(passive.ejected());
        assert!(passive.ejected_for() > Duration::from_secs(29));
        // While ejected, more failures do not extend it.
        for _ in 0..5 {
            assert_eq!(passive.failure(&CONFIG), None);
        }
        assert_eq!(passive.ejections_total(), 1);
    }

    #[test]
    fn repeated_ejections_last_longer_up_to_the_cap() {
        let passive = Passive::default();
        let mut seen = Vec::new();
        for _ in 0..12 {
            // End the current ejection without a success in between.
            passive.ejected_until_ns.store(1, Ordering::Relaxed);
            for _ in 0..3 {
                if let Some(ejection) = passive.failure(&CONFIG) {
                    seen.push(ejection.as_secs());
                }
            }
        }
        assert_eq!(&seen[..3], [30, 60, 90]);
        assert_eq!(seen[11], 300, "capped at 10 times the base");
        // A success once the ejection is over starts again from the base.
        passive.ejected_until_ns.store(1, Ordering::Relaxed);
        passive.success();
        for _ in 0..2 {
            assert_eq!(passive.failure(&CONFIG), None);
        }
        assert_eq!(passive.failure(&CONFIG), Some(Duration::from_secs(30)));
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let passive = Passive::default();
        let off = PassiveHealth {
            failures: 0,
            ejection: Duration::from_secs(30),
        };
        for _ in 0..10 {
            assert_eq!(passive.failure(&off), None);
        }
        assert!(!passive.ejected());
    }
}
