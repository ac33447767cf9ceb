//! How far one spliced flow may run ahead of its destination: its backlog budget.
//!
//! Every flow has its base budget (`max_tunnel_backlog_bytes`). At the budget the verdict
//! pauses the flow and userspace carries its bytes until the destination has caught up, so
//! each pause costs copies the kernel path exists to avoid. A flow pauses for one of two
//! reasons: its reader is slow (a pause is then the point: it bounds what the kernel holds
//! for that reader), or the kernel's redirect worker fell a budget behind a faster sender
//! while the reader keeps up (measured here: a sender at full speed outruns the worker by a
//! few MiB within milliseconds). The second kind is told apart by how fast the destination
//! drains the backlog of the pause; such a flow multiplies its budget by [`GROWTH`], up to
//! [`MAX_FLOW_BUDGET_BYTES`], with bytes borrowed from the gateway-wide pool
//! ([`BacklogPool`], `spliced_backlog_pool_bytes`). A pause drained slowly, or a loan not
//! needed for [`LOAN_IDLE`], gives the loan back. See docs/dataplane.md, "Budgets that grow".

use std::time::{Duration, Instant};

use crate::dataplane::pool::BacklogPool;

/// Most a flow's budget grows to. One fast stream measured about the same with a 1 GiB
/// budget (docs/dataplane.md).
pub const MAX_FLOW_BUDGET_BYTES: u64 = 64 * 1024 * 1024;
/// What a budget is multiplied by at each pause its destination drained fast. Each pause
/// hands userspace what the source's receive buffer holds (8–16 MiB), so a budget pays off
/// once it is several times that: from the default 4 MiB, two pauses reach the most.
pub const GROWTH: u64 = 4;
/// A destination that drained the backlog of a pause at this rate or faster was not what
/// paused the flow (about 2 Gbit/s: far above any reader a budget protects, far below what
/// the redirect worker moves on one core).
pub const FAST_DRAIN_BYTES_PER_SEC: u64 = 256 * 1024 * 1024;
/// A backlog drained within this long counts as drained fast whatever its size: the daemon
/// takes about that long to look (small budgets drain in microseconds), and a budget then
/// settles at what the reader takes in this time.
pub const FAST_DRAIN_WITHIN: Duration = Duration::from_millis(5);
/// Send-queue bytes a reader that keeps up may still leave (see `reader_keeps_up`): a fast
/// reader's queue measured hundreds of KiB at most, a slow one's fills the buffer.
pub const MIN_QUEUE_WHEN_KEPT_UP_BYTES: u64 = 256 * 1024;
/// A loan the flow has not needed for this long (its backlog stayed within the base
/// budget) goes back to the pool, so an idle tunnel does not sit on it.
pub const LOAN_IDLE: Duration = Duration::from_secs(1);

/// One flow's budget.
#[derive(Debug)]
pub struct FlowBudget {
    /// The budget the flow always has.
    base: u64,
    /// Capacity of the shared pool in the configuration the tunnel runs under.
    pool_capacity: u64,
    /// Borrowed from the pool on top of `base`.
    lent: u64,
    /// The flow's pause count (`FlowStats::pauses`) when last observed.
    pauses_seen: u64,
    /// A pause whose backlog has not drained yet, when the daemon first saw it and how
    /// many bytes stood between the verdict and the destination then.
    draining: Option<(Instant, u64)>,
    /// When the backlog last went past `base` (the loan was in use).
    last_needed: Instant,
    /// The tunnel's other flow is busy too; see [`FlowBudget::set_contended`].
    contended: bool,
}

impl FlowBudget {
    pub fn new(base: u64, pool_capacity: u64, now: Instant) -> Self {
        Self {
            base,
            pool_capacity,
            lent: 0,
            pauses_seen: 0,
            draining: None,
            last_needed: now,
            contended: false,
        }
    }

    /// The budget in force: what the flow may run ahead of its destination.
    pub fn bytes(&self) -> u64 {
        if self.contended {
            self.base
        } else {
            self.base + self.lent
        }
    }

    /// Bytes borrowed from the pool.
    pub fn lent(&self) -> u64 {
        self.lent
    }

    /// Takes note of one reading of the flow: how many times the verdict has paused it, its
    /// backlog (bytes redirected but not yet in the destination's send queue), and the
    /// bytes in that send queue.
    pub fn observe(
        &mut self,
        pool: &BacklogPool,
        pauses: u64,
        backlog: u64,
        send_queue: u64,
        now: Instant,
    ) {
        if backlog > self.base {
            self.last_needed = now;
        }
        if pauses != self.pauses_seen {
            self.pauses_seen = pauses;
            // A pause while the last one has not drained yet belongs to the same wait.
            self.draining.get_or_insert((now, backlog));
        }
        if self.contended && backlog <= self.base {
            self.give_back(pool);
        }
        // A backlog that had drained before the daemon looked is judged at once.
        if let Some((since, at_pause)) = self.draining {
            if backlog == 0 {
                self.draining = None;
                let took = now.saturating_duration_since(since);
                // Drained into the destination's send buffer is not drained by its reader:
                // a slow reader's first pauses drain into empty buffers just as fast.
                let fast = drained_fast(at_pause, took) && send_queue <= self.reader_keeps_up();
                if fast {
                    self.grow(pool);
                    self.last_needed = now;
                } else {
                    self.give_back(pool);
                }
                tracing::debug!(
                    backlog = at_pause,
                    took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    fast,
                    budget = self.bytes(),
                    "pause drained"
                );
            }
        }
        self.relax(pool, now);
    }

    /// Whether the tunnel's other flow is busy too (bytes in its backlog, or passed bytes
    /// it owes). This flow's backlog waits in the psock queue of the other flow's source,
    /// and the other flow's passed bytes queue behind it there, charged to no receive
    /// buffer, so nothing stops their sender until it has drained: a grown budget in front
    /// of them let a flood both ways pile up 280 MB. So a contended flow is held to its base
    /// budget at once and does not grow; its loan goes back once its backlog is within the
    /// base budget again (the bytes it covers are still in the kernel until then).
    pub fn set_contended(&mut self, contended: bool) {
        self.contended = contended;
    }

    /// Whether the loan has not been needed for [`LOAN_IDLE`]: it goes back at the next
    /// [`FlowBudget::observe`] (the daemon looks at an idle flow for this).
    pub fn loan_expired(&self, now: Instant) -> bool {
        self.lent > 0
            && self.draining.is_none()
            && now.saturating_duration_since(self.last_needed) >= LOAN_IDLE
    }

    fn relax(&mut self, pool: &BacklogPool, now: Instant) {
        if self.loan_expired(now) {
            self.give_back(pool);
        }
    }

    /// Gives back everything borrowed (a slow drain, an idle or contended loan, or the
    /// tunnel closing).
    pub fn give_back(&mut self, pool: &BacklogPool) {
        if self.lent > 0 {
            pool.give_back(self.lent);
            self.lent = 0;
        }
    }

    /// The most the destination's send queue may hold when a pause has drained for the
    /// drain to count as the reader's doing.
    fn reader_keeps_up(&self) -> u64 {
        (self.base / 4).max(MIN_QUEUE_WHEN_KEPT_UP_BYTES)
    }

    fn grow(&mut self, pool: &BacklogPool) {
        if self.contended {
            return;
        }
        let target = (GROWTH * self.bytes()).min(MAX_FLOW_BUDGET_BYTES.max(self.base));
        self.lent += pool.borrow(target - self.bytes(), self.pool_capacity);
    }
}

impl Drop for FlowBudget {
    fn drop(&mut self) {
        debug_assert_eq!(self.lent, 0, "a flow's loan must go back to the pool");
    }
}

/// Whether `backlog` bytes drained within [`FAST_DRAIN_WITHIN`], or at
/// [`FAST_DRAIN_BYTES_PER_SEC`] or faster.
fn drained_fast(backlog: u64, took: Duration) -> bool {
    took <= FAST_DRAIN_WITHIN
        || u128::from(backlog) * 1_000_000
            >= u128::from(FAST_DRAIN_BYTES_PER_SEC) * took.as_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// One more pause: seen with a budget's backlog at `t`, drained `drain` later.
    fn pause(budget: &mut FlowBudget, pool: &BacklogPool, t: &mut Instant, drain: Duration) {
        let (pauses, backlog) = (budget.pauses_seen + 1, budget.bytes());
        budget.observe(pool, pauses, backlog, 0, *t);
        *t += drain;
        budget.observe(pool, pauses, 0, 0, *t);
    }

    #[test]
    fn a_fast_destination_grows_the_budget_up_to_the_most_a_flow_gets() {
        let pool = BacklogPool::default();
        let mut t = Instant::now();
        let mut budget = FlowBudget::new(4 * MIB, 256 * MIB, t);
        let mut seen = vec![budget.bytes()];
        // 4 MiB in 10 ms (400 MiB/s), then each budget at the same rate.
        for _ in 0..4 {
            let took = Duration::from_micros(budget.bytes() / (400 * MIB / 1_000_000));
            pause(&mut budget, &pool, &mut t, took);
            seen.push(budget.bytes());
        }
        assert_eq!(
            seen,
            [4, 16, 64, 64, 64].map(|m| m * MIB),
            "each fast drain multiplies it"
        );
        assert_eq!(pool.lent(), 60 * MIB);
        budget.give_back(&pool);
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn a_small_budget_settles_at_what_the_reader_takes_in_a_few_milliseconds() {
        let pool = BacklogPool::default();
        let mut t = Instant::now();
        let mut budget = FlowBudget::new(16 << 10, 256 * MIB, t);
        // A reader at 8 MiB/s: 40 KiB in 5 ms.
        let mut seen = vec![];
        for _ in 0..4 {
            let took = Duration::from_micros(budget.bytes() * 1_000_000 / (8 * MIB));
            pause(&mut budget, &pool, &mut t, took);
            seen.push(budget.bytes() >> 10);
        }
        assert_eq!(
            seen,
            [64, 16, 64, 16],
            "KiB: up while within 5 ms, then back"
        );
        budget.give_back(&pool);
    }

    #[test]
    fn a_slow_destination_gets_the_base_budget_back() {
        let pool = BacklogPool::default();
        let mut t = Instant::now();
        let mut budget = FlowBudget::new(4 * MIB, 256 * MIB, t);
        pause(&mut budget, &pool, &mut t, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        // 16 MiB drained in a second: a reader at 16 MiB/s.
        pause(&mut budget, &pool, &mut t, Duration::from_secs(1));
        assert_eq!(budget.bytes(), 4 * MIB);
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn the_pool_caps_what_all_flows_borrow() {
        let pool = BacklogPool::default();
        let mut t = Instant::now();
        let mut a = FlowBudget::new(4 * MIB, 10 * MIB, t);
        let mut b = FlowBudget::new(4 * MIB, 10 * MIB, t);
        pause(&mut a, &pool, &mut t, Duration::ZERO);
        assert_eq!(a.bytes(), 14 * MIB, "4 + what the pool holds");
        pause(&mut b, &pool, &mut t, Duration::ZERO);
        assert_eq!(b.bytes(), 4 * MIB, "nothing left to lend");
        a.give_back(&pool);
        pause(&mut b, &pool, &mut t, Duration::ZERO);
        assert_eq!(b.bytes(), 14 * MIB);
        b.give_back(&pool);
    }

    #[test]
    fn an_unused_loan_goes_back_after_a_while() {
        let pool = BacklogPool::default();
        let mut t = Instant::now();
        let mut budget = FlowBudget::new(4 * MIB, 256 * MIB, t);
        pause(&mut budget, &pool, &mut t, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        // Busy past the base budget: the loan is in use.
        t += LOAN_IDLE;
        budget.observe(&pool, 1, 6 * MIB, 0, t);
        assert!(!budget.loan_expired(t + LOAN_IDLE / 2));
        budget.observe(&pool, 1, 0, 0, t + LOAN_IDLE / 2);
        assert_eq!(budget.bytes(), 16 * MIB);
        assert!(budget.loan_expired(t + LOAN_IDLE));
        budget.observe(&pool, 1, 0, 0, t + LOAN_IDLE);
        assert_eq!(budget.bytes(), 4 * MIB);
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn pauses_between_two_looks_are_judged_as_one_wait() {
        let pool = BacklogPool::default();
        let t = Instant::now();
        let mut budget = FlowBudget::new(4 * MIB, 256 * MIB, t);
        budget.observe(&pool, 1, 4 * MIB, 0, t);
        // Paused twice more before the backlog first drained, 2 s after the first look.
        budget.observe(&pool, 3, 4 * MIB, 0, t + Duration::from_secs(1));
        budget.observe(&pool, 3, 0, 0, t + Duration::from_secs(2));
        assert_eq!(budget.bytes(), 4 * MIB, "slow: 4 MiB in 2 s");
        // Seen drained again without a new pause: nothing to judge.
        budget.observe(&pool, 3, 0, 0, t + Duration::from_secs(2));
        assert_eq!(pool.loans(), 0);
        // A loan is not given back while a pause drains.
        budget.observe(&pool, 4, 0, 0, t + Duration::from_secs(3));
        assert_eq!(budget.bytes(), 16 * MIB);
        budget.observe(&pool, 5, 4 * MIB, 0, t + Duration::from_secs(9));
        assert!(
            !budget.loan_expired(t + Duration::from_secs(20)),
            "draining"
        );
        budget.give_back(&pool);
    }

    #[test]
    fn a_contended_flow_gives_its_loan_back_and_does_not_grow() {
        let pool = BacklogPool::default();
        let mut t = Instant::now();
        let mut budget = FlowBudget::new(4 * MIB, 256 * MIB, t);
        pause(&mut budget, &pool, &mut t, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        budget.set_contended(true);
        assert_eq!(budget.bytes(), 4 * MIB, "held to the base budget at once");
        // The loan still covers bytes in the kernel until the backlog is within base.
        budget.observe(&pool, 1, 10 * MIB, 0, t);
        assert_eq!(pool.lent(), 12 * MIB);
        budget.observe(&pool, 1, 4 * MIB, 0, t);
        assert_eq!(pool.lent(), 0);
        pause(&mut budget, &pool, &mut t, Duration::ZERO);
        assert_eq!(budget.bytes(), 4 * MIB, "no growth while contended");
        budget.set_contended(false);
        pause(&mut budget, &pool, &mut t, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        budget.give_back(&pool);
    }

    #[test]
    fn a_drain_into_the_destinations_buffers_is_not_a_fast_reader() {
        let pool = BacklogPool::default();
        let t = Instant::now();
        let mut budget = FlowBudget::new(4 * MIB, 256 * MIB, t);
        // Drained at once, but 3 MiB of it sit in the destination's send queue.
        budget.observe(&pool, 1, 4 * MIB, 0, t);
        budget.observe(&pool, 1, 0, 3 * MIB, t);
        assert_eq!(budget.bytes(), 4 * MIB);
        budget.observe(&pool, 2, 4 * MIB, 0, t);
        budget.observe(&pool, 2, 0, 512 << 10, t);
        assert_eq!(budget.bytes(), 16 * MIB, "a quarter of the base may remain");
        budget.give_back(&pool);
    }

    #[test]
    fn a_base_budget_past_the_most_a_flow_gets_never_grows() {
        let pool = BacklogPool::default();
        let mut t = Instant::now();
        let mut budget = FlowBudget::new(128 * MIB, 256 * MIB, t);
        pause(&mut budget, &pool, &mut t, Duration::ZERO);
        assert_eq!(budget.bytes(), 128 * MIB);
        assert_eq!(pool.lent(), 0);
    }
}
