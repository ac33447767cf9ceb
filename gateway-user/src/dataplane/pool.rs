//! The kernel memory spliced flows may borrow beyond their own backlog budget.
//!
//! Each flow is guaranteed its `max_tunnel_backlog_bytes`; a flow whose destination keeps
//! up may run further ahead (see `splice::budget`), with bytes lent from this one pool that
//! all tunnels share. Passed bytes a flow owes past what its source's receive buffer
//! accounts for are covered from the same pool ([`BacklogPool::reserve`]): no socket is
//! charged for them either. So the kernel holds at most, over every spliced flow, its base
//! budget and allowances plus the bytes lent here, which never exceed the capacity in
//! force.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes lent out of the shared pool. The capacity is not stored here: each borrower names
/// the one of the configuration it runs under, so a reload that changes it needs no
/// coordination (tunnels opened before keep borrowing against the capacity they started
/// with, and only up to what is free).
#[derive(Debug, Default)]
pub struct BacklogPool {
    lent: AtomicU64,
    /// Borrows that lent something.
    loans: AtomicU64,
}

impl BacklogPool {
    /// Lends up to `want` bytes, as long as no more than `capacity` are lent in all; returns
    /// what was lent (possibly 0).
    pub fn borrow(&self, want: u64, capacity: u64) -> u64 {
        let mut lent = self.lent.load(Ordering::Relaxed);
        loop {
            let grant = want.min(capacity.saturating_sub(lent));
            if grant == 0 {
                return 0;
            }
            match self.lent.compare_exchange_weak(
                lent,
                lent + grant,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.loans.fetch_add(1, Ordering::Relaxed);
                    return grant;
                }
                Err(now) => lent = now,
            }
        }
    }

    /// Lends exactly `want` bytes if no more than `capacity` are then lent in all, else
    /// nothing. Not counted as a loan: it covers bytes already in the kernel, it does not
    /// let a flow run further ahead.
    pub fn reserve(&self, want: u64, capacity: u64) -> bool {
        self.lent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lent| {
                lent.checked_add(want).filter(|&total| total <= capacity)
            })
            .is_ok()
    }

    /// Returns bytes a [`BacklogPool::borrow`] or [`BacklogPool::reserve`] lent.
    pub fn give_back(&self, bytes: u64) {
        let before = self.lent.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes, "gave back {bytes} of {before} lent");
    }

    /// Bytes lent now (`gateway_splice_backlog_pool_lent_bytes`).
    pub fn lent(&self) -> u64 {
        self.lent.load(Ordering::Relaxed)
    }

    /// Borrows that lent something, ever (`gateway_splice_backlog_loans_total`).
    pub fn loans(&self) -> u64 {
        self.loans.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_no_more_than_the_capacity_in_all() {
        let pool = BacklogPool::default();
        assert_eq!(pool.borrow(60, 100), 60);
        assert_eq!(pool.borrow(60, 100), 40, "what is left");
        assert_eq!(pool.borrow(1, 100), 0, "nothing left");
        assert_eq!(pool.lent(), 100);
        pool.give_back(60);
        assert_eq!(pool.borrow(10, 100), 10);
        // A smaller capacity (a reload lowered it) lends nothing while more is out.
        assert_eq!(pool.borrow(10, 30), 0);
        assert_eq!(pool.lent(), 50);
        assert_eq!(pool.loans(), 3, "borrows that lent something");
    }

    #[test]
    fn a_reservation_is_all_or_nothing_and_not_a_loan() {
        let pool = BacklogPool::default();
        assert_eq!(pool.borrow(60, 100), 60);
        assert!(!pool.reserve(41, 100), "41 more would pass the capacity");
        assert_eq!(pool.lent(), 60, "nothing taken");
        assert!(pool.reserve(40, 100));
        assert_eq!(pool.lent(), 100);
        assert_eq!(pool.loans(), 1, "only the borrow counts as a loan");
        pool.give_back(100);
    }

    #[test]
    fn concurrent_borrowers_never_exceed_the_capacity() {
        let pool = std::sync::Arc::new(BacklogPool::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || (0..10_000).map(|_| pool.borrow(7, 1000)).sum::<u64>())
            })
            .collect();
        let total: u64 = threads
            .into_iter()
            .map(|t| t.join().expect("borrower thread"))
            .sum();
        assert_eq!(total, pool.lent());
        assert_eq!(total, 1000, "borrowers take what is left, to the last byte");
    }
}
