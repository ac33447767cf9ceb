//! How far one spliced flow may run ahead of its destination: its backlog budget.
//!
//! Every flow has its base budget (`max_tunnel_backlog_bytes`). At the budget the verdict
//! pauses the flow and userspace carries its bytes until the destination has caught up, so
//! each pause costs copies the kernel path exists to avoid. A flow pauses for one of two
//! reasons: its reader is slow (a pause is then the point: it bounds what the kernel holds
//! for that reader), or the kernel's redirect worker fell a budget behind a faster sender
//! while the reader keeps up (measured here: a sender at full speed outruns the worker by a
//! few MiB within milliseconds). The second kind is told apart by two things: the backlog
//! of the pause drained fast, and meanwhile the destination's peer acknowledged as many
//! bytes as the backlog held, or acknowledged at a reader's full speed (a slow reader's
//! first pauses drain as fast, into empty buffers, but its peer acknowledges only what its
//! small window takes). Such a flow multiplies its
//! budget by [`GROWTH`], up to [`MAX_FLOW_BUDGET_BYTES`], with bytes borrowed from the
//! gateway-wide pool ([`BacklogPool`], `spliced_backlog_pool_bytes`). A pause that does not
//! pass, or a loan not needed for [`LOAN_IDLE`], gives the loan back. See docs/dataplane.md,
//! "Budgets that grow".

use std::time::{Duration, Instant};

use crate::dataplane::pool::BacklogPool;

/// Most a flow's budget grows to. One fast stream measured about the same with a 1 GiB
/// budget (docs/dataplane.md).
pub const MAX_FLOW_BUDGET_BYTES: u64 = 64 * 1024 * 1024;
/// What a budget is multiplied by at each pause its destination drained fast. Each pause
/// hands userspace what the source's receive buffer holds (8–16 MiB), so a budget pays off
/// once it is several times that: from the default 4 MiB, two pauses reach the most.
pub const GROWTH: u64 = 4;
/// A destination that drained the backlog of a pause at this rate or faster, and whose
/// peer acknowledged the backlog's worth or bytes at this rate meanwhile, was not what
/// paused the flow (about 2 Gbit/s: far above any reader a budget protects, far below what
/// the redirect worker moves on one core, or what a reader on loopback takes).
pub const FAST_DRAIN_BYTES_PER_SEC: u64 = 256 * 1024 * 1024;
/// A backlog drained within this long counts as drained fast whatever its size: the daemon
/// takes about that long to look (small budgets drain in microseconds), and a budget then
/// settles at what the reader takes in this time. It is also the shortest time over which
/// the peer's acknowledgements are judged: a slow reader's peer can take a whole window in
/// a few microseconds, but neither a budget's worth nor bytes at full speed for
/// milliseconds.
pub const FAST_DRAIN_WITHIN: Duration = Duration::from_millis(5);
/// Passed bytes a flow may owe without covering them from the pool: what its source's
/// receive buffer accounts for (at most 8 MiB, which the kernel doubles; see
/// `splice::receive_buffer`). Owed bytes past it wait where no socket accounts for them:
/// behind the other flow's bytes in the source's psock queue, so TCP does not stop their
/// sender. Each of those is covered from the pool, like a grown budget.
pub const OWED_ALLOWANCE_BYTES: u64 = 16 * 1024 * 1024;
/// A loan the flow has not needed for this long (its backlog stayed within the base
/// budget) goes back to the pool, so an idle tunnel does not sit on it.
pub const LOAN_IDLE: Duration = Duration::from_secs(1);

/// A pause the daemon has seen and not judged yet.
#[derive(Debug, Clone, Copy)]
struct Wait {
    /// When the pause was seen (or, for one that had drained before the daemon looked,
    /// when the daemon last looked before it).
    since: Instant,
    /// Bytes between the verdict and the destination then (for a pause already drained
    /// when seen: the budget, where the verdict paused it).
    backlog: u64,
    /// The destination's `bytes_acked` then.
    acked: u64,
    /// The last look that saw the backlog still there (`since` if none did): the backlog
    /// drained after it, and that is all the daemon knows. Its looks can come late (a
    /// busy machine delays its timers by milliseconds), so the time it first saw the
    /// backlog gone says when it looked, not when the backlog went.
    still_there: Instant,
    /// When the backlog was first seen drained.
    drained: Option<Instant>,
}

/// One flow's budget.
#[derive(Debug)]
pub struct FlowBudget {
    /// The budget the flow always has.
    base: u64,
    /// Capacity of the shared pool in the configuration the tunnel runs under.
    pool_capacity: u64,
    /// Borrowed from the pool on top of `base`.
    lent: u64,
    /// Reserved from the pool for owed bytes past [`OWED_ALLOWANCE_BYTES`].
    owed_covered: u64,
    /// The flow's pause count (`FlowStats::pauses`) when last observed.
    pauses_seen: u64,
    /// A pause being judged.
    wait: Option<Wait>,
    /// The last reading: when, and the destination's `bytes_acked`.
    last_look: (Instant, u64),
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
            owed_covered: 0,
            pauses_seen: 0,
            wait: None,
            last_look: (now, 0),
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
    /// bytes the destination's peer has acknowledged (`tcpi_bytes_acked`).
    pub fn observe(
        &mut self,
        pool: &BacklogPool,
        pauses: u64,
        backlog: u64,
        acked: u64,
        now: Instant,
    ) {
        if backlog > self.base {
            self.last_needed = now;
        }
        if pauses != self.pauses_seen {
            self.pauses_seen = pauses;
            // A pause while the last one is still being judged belongs to the same wait.
            if self.wait.is_none() {
                self.wait = Some(if backlog > 0 {
                    Wait {
                        since: now,
                        backlog,
                        acked,
                        still_there: now,
                        drained: None,
                    }
                } else {
                    // It drained before the daemon looked: judge it from the last look,
                    // when the flow was still running towards the budget.
                    let (since, acked) = self.last_look;
                    Wait {
                        since,
                        backlog: self.bytes(),
                        acked,
                        still_there: since,
                        drained: None,
                    }
                });
            }
        }
        if self.contended && backlog <= self.base {
            self.give_back(pool);
        }
        if let Some(wait) = &mut self.wait {
            if backlog == 0 {
                wait.drained.get_or_insert(now);
            } else if wait.drained.is_none() {
                wait.still_there = now;
            }
        }
        if let Some(wait) = self.wait.filter(|w| w.drained.is_some()) {
            let window = now.saturating_duration_since(wait.since);
            if window >= FAST_DRAIN_WITHIN {
                self.wait = None;
                // Judged on evidence: slow only if the backlog was seen still there too
                // long after the pause, never for a look that came late.
                let draining = wait.still_there.saturating_duration_since(wait.since);
                let acked_meanwhile = acked.saturating_sub(wait.acked);
                let fast = drained_fast(wait.backlog, draining)
                    && (acked_meanwhile >= wait.backlog || at_full_speed(acked_meanwhile, window));
                if fast {
                    self.grow(pool);
                    self.last_needed = now;
                } else {
                    self.give_back(pool);
                }
                tracing::debug!(
                    backlog = wait.backlog,
                    draining_us = u64::try_from(draining.as_micros()).unwrap_or(u64::MAX),
                    acked = acked_meanwhile,
                    window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
                    fast,
                    budget = self.bytes(),
                    "pause judged"
                );
            }
        }
        self.last_look = (now, acked);
        self.relax(pool, now);
    }

    /// When the daemon should look at the flow again to judge a drained pause (the peer's
    /// acknowledgements are judged over at least [`FAST_DRAIN_WITHIN`]).
    pub fn judge_at(&self) -> Option<Instant> {
        self.wait
            .filter(|w| w.drained.is_some())
            .map(|w| w.since + FAST_DRAIN_WITHIN)
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
            && self.wait.is_none()
            && now.saturating_duration_since(self.last_needed) >= LOAN_IDLE
    }

    fn relax(&mut self, pool: &BacklogPool, now: Instant) {
        if self.loan_expired(now) {
            self.give_back(pool);
        }
    }

    /// Gives back the loan (a slow drain, an idle or contended loan).
    pub fn give_back(&mut self, pool: &BacklogPool) {
        if self.lent > 0 {
            pool.give_back(self.lent);
            self.lent = 0;
        }
    }

    /// Covers `owed` passed bytes past [`OWED_ALLOWANCE_BYTES`] from the pool, and gives
    /// back what covered bytes no longer owed. `Err` carries the bytes the pool had no
    /// room for: the flow's sender is then holding kernel memory nothing else bounds, and
    /// its tunnel must go.
    pub fn cover_owed(&mut self, pool: &BacklogPool, owed: u64) -> Result<(), u64> {
        let want = owed.saturating_sub(OWED_ALLOWANCE_BYTES);
        if want > self.owed_covered {
            let more = want - self.owed_covered;
            if !pool.reserve(more, self.pool_capacity) {
                return Err(more);
            }
        } else if want < self.owed_covered {
            pool.give_back(self.owed_covered - want);
        }
        self.owed_covered = want;
        Ok(())
    }

    /// Gives back everything taken from the pool: the tunnel is closing.
    pub fn release(&mut self, pool: &BacklogPool) {
        self.give_back(pool);
        if self.owed_covered > 0 {
            pool.give_back(self.owed_covered);
            self.owed_covered = 0;
        }
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
        debug_assert_eq!(
            (self.lent, self.owed_covered),
            (0, 0),
            "what a flow took from the pool must go back"
        );
    }
}

/// Whether `backlog` bytes, last seen still draining `draining` after the pause, drained
/// within [`FAST_DRAIN_WITHIN`], or at [`FAST_DRAIN_BYTES_PER_SEC`] or faster.
fn drained_fast(backlog: u64, draining: Duration) -> bool {
    draining <= FAST_DRAIN_WITHIN || at_full_speed(backlog, draining)
}

/// Whether `bytes` in `took` is [`FAST_DRAIN_BYTES_PER_SEC`] or faster.
fn at_full_speed(bytes: u64, took: Duration) -> bool {
    u128::from(bytes) * 1_000_000 >= u128::from(FAST_DRAIN_BYTES_PER_SEC) * took.as_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const FAST_READER: u64 = 1024 * MIB;

    /// The clock and the destination's peer: what it has acknowledged, at a reader's rate.
    struct Peer {
        t: Instant,
        acked: u64,
        bytes_per_sec: u64,
    }

    impl Peer {
        fn new(bytes_per_sec: u64) -> Self {
            Self {
                t: Instant::now(),
                acked: 0,
                bytes_per_sec,
            }
        }

        fn pass(&mut self, time: Duration) {
            self.t += time;
            self.acked +=
                u64::try_from(u128::from(self.bytes_per_sec) * time.as_micros() / 1_000_000)
                    .expect("fits");
        }

        fn look(&self, budget: &mut FlowBudget, pool: &BacklogPool, pauses: u64, backlog: u64) {
            budget.observe(pool, pauses, backlog, self.acked, self.t);
        }
    }

    /// The daemon's shortest poll while a flow is busy (`supervisor::POLL_MIN`).
    const LOOK_EVERY: Duration = Duration::from_millis(1);

    /// One more pause: seen with a budget's backlog, which drains evenly over `drain`
    /// while the daemon looks every [`LOOK_EVERY`], and looked at again when it is due to
    /// be judged.
    fn pause(budget: &mut FlowBudget, pool: &BacklogPool, peer: &mut Peer, drain: Duration) {
        let (pauses, backlog) = (budget.pauses_seen + 1, budget.bytes());
        peer.look(budget, pool, pauses, backlog);
        let mut waited = Duration::ZERO;
        while waited + LOOK_EVERY < drain {
            peer.pass(LOOK_EVERY);
            waited += LOOK_EVERY;
            let left =
                u64::try_from(u128::from(backlog) * (drain - waited).as_nanos() / drain.as_nanos())
                    .expect("fits");
            peer.look(budget, pool, pauses, left.max(1));
        }
        peer.pass(drain - waited);
        peer.look(budget, pool, pauses, 0);
        if let Some(at) = budget.judge_at() {
            peer.pass(at.saturating_duration_since(peer.t));
            peer.look(budget, pool, pauses, 0);
        }
        assert!(budget.judge_at().is_none(), "judged");
    }

    fn new_budget(base: u64, pool_capacity: u64, peer: &Peer) -> FlowBudget {
        FlowBudget::new(base, pool_capacity, peer.t)
    }

    #[test]
    fn a_fast_destination_grows_the_budget_up_to_the_most_a_flow_gets() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(400 * MIB);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        let mut seen = vec![budget.bytes()];
        // 4 MiB in 10 ms (400 MiB/s), then each budget at the same rate.
        for _ in 0..4 {
            let took = Duration::from_micros(budget.bytes() / (400 * MIB / 1_000_000));
            pause(&mut budget, &pool, &mut peer, took);
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
    fn a_slow_reader_does_not_grow_the_budget_however_fast_its_pauses_drain() {
        let pool = BacklogPool::default();
        // A reader at 8 MiB/s; each pause drains at once into the destination's buffers.
        let mut peer = Peer::new(8 * MIB);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        for _ in 0..4 {
            pause(&mut budget, &pool, &mut peer, Duration::ZERO);
            assert_eq!(budget.bytes(), 4 * MIB);
        }
        assert_eq!(pool.loans(), 0);
    }

    #[test]
    fn a_small_budget_settles_at_what_the_reader_takes_in_a_few_milliseconds() {
        let pool = BacklogPool::default();
        // A reader at 8 MiB/s: 40 KiB in 5 ms.
        let mut peer = Peer::new(8 * MIB);
        let mut budget = new_budget(16 << 10, 256 * MIB, &peer);
        let mut seen = vec![];
        for _ in 0..4 {
            let took = Duration::from_micros(budget.bytes() * 1_000_000 / (8 * MIB));
            pause(&mut budget, &pool, &mut peer, took);
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
    fn a_peer_that_takes_a_window_at_once_is_judged_over_milliseconds() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(0);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        budget.observe(&pool, 1, 4 * MIB, peer.acked, peer.t);
        // Drained 100 µs later, and the peer took a 256 KiB window meanwhile: 2.5 GiB/s
        // over that time, but nothing more follows.
        peer.pass(Duration::from_micros(100));
        peer.acked += 256 << 10;
        peer.look(&mut budget, &pool, 1, 0);
        assert_eq!(
            budget.judge_at(),
            Some(peer.t - Duration::from_micros(100) + FAST_DRAIN_WITHIN)
        );
        peer.pass(FAST_DRAIN_WITHIN);
        peer.look(&mut budget, &pool, 1, 0);
        assert!(budget.judge_at().is_none());
        assert_eq!(
            budget.bytes(),
            4 * MIB,
            "256 KiB in 5 ms: 50 MiB/s, and not the 4 MiB backlog"
        );
    }

    #[test]
    fn a_look_that_comes_late_does_not_make_a_fast_drain_slow() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(64 << 10, 256 * MIB, &peer);
        peer.look(&mut budget, &pool, 1, 64 << 10);
        // The daemon's next look comes 20 ms late (a busy machine); the backlog is gone,
        // and the peer took far more than it meanwhile.
        peer.pass(Duration::from_millis(20));
        peer.look(&mut budget, &pool, 1, 0);
        assert!(
            budget.judge_at().is_none(),
            "judged at once: past the window"
        );
        assert_eq!(budget.bytes(), 256 << 10, "nothing showed a slow drain");
        budget.give_back(&pool);
    }

    #[test]
    fn a_backlog_seen_still_there_past_the_window_drained_slowly() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(64 << 10, 256 * MIB, &peer);
        peer.look(&mut budget, &pool, 1, 64 << 10);
        // Still 1 KiB there 6 ms on (about 10 MiB/s), gone a moment later.
        peer.pass(Duration::from_millis(6));
        peer.look(&mut budget, &pool, 1, 1 << 10);
        peer.pass(Duration::from_micros(100));
        peer.look(&mut budget, &pool, 1, 0);
        assert!(budget.judge_at().is_none());
        assert_eq!(budget.bytes(), 64 << 10);
        assert_eq!(pool.loans(), 0);
    }

    #[test]
    fn a_slow_destination_gets_the_base_budget_back() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        pause(&mut budget, &pool, &mut peer, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        // 16 MiB drained in a second: a reader at 16 MiB/s.
        peer.bytes_per_sec = 16 * MIB;
        pause(&mut budget, &pool, &mut peer, Duration::from_secs(1));
        assert_eq!(budget.bytes(), 4 * MIB);
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn the_pool_caps_what_all_flows_borrow() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut a = new_budget(4 * MIB, 10 * MIB, &peer);
        let mut b = new_budget(4 * MIB, 10 * MIB, &peer);
        pause(&mut a, &pool, &mut peer, Duration::ZERO);
        assert_eq!(a.bytes(), 14 * MIB, "4 + what the pool holds");
        pause(&mut b, &pool, &mut peer, Duration::ZERO);
        assert_eq!(b.bytes(), 4 * MIB, "nothing left to lend");
        a.give_back(&pool);
        pause(&mut b, &pool, &mut peer, Duration::ZERO);
        assert_eq!(b.bytes(), 14 * MIB);
        b.give_back(&pool);
    }

    #[test]
    fn an_unused_loan_goes_back_after_a_while() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        pause(&mut budget, &pool, &mut peer, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        // Busy past the base budget: the loan is in use.
        peer.pass(LOAN_IDLE);
        peer.look(&mut budget, &pool, 1, 6 * MIB);
        assert!(!budget.loan_expired(peer.t + LOAN_IDLE / 2));
        peer.pass(LOAN_IDLE / 2);
        peer.look(&mut budget, &pool, 1, 0);
        assert_eq!(budget.bytes(), 16 * MIB);
        assert!(budget.loan_expired(peer.t + LOAN_IDLE / 2));
        peer.pass(LOAN_IDLE / 2);
        peer.look(&mut budget, &pool, 1, 0);
        assert_eq!(budget.bytes(), 4 * MIB);
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn pauses_between_two_looks_are_judged_as_one_wait() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        peer.look(&mut budget, &pool, 1, 4 * MIB);
        // Paused twice more before the backlog first drained, 2 s after the first look.
        peer.pass(Duration::from_secs(1));
        peer.look(&mut budget, &pool, 3, 4 * MIB);
        peer.pass(Duration::from_secs(1));
        peer.look(&mut budget, &pool, 3, 0);
        assert_eq!(budget.bytes(), 4 * MIB, "slow: 4 MiB in 2 s");
        assert!(
            budget.judge_at().is_none(),
            "judged at once: past the window"
        );
        // Seen drained again without a new pause: nothing to judge.
        peer.look(&mut budget, &pool, 3, 0);
        assert!(budget.judge_at().is_none());
        assert_eq!(pool.loans(), 0);
        // A loan is not given back while a pause is being judged.
        pause(&mut budget, &pool, &mut peer, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        peer.pass(Duration::from_secs(6));
        peer.look(&mut budget, &pool, 5, 4 * MIB);
        peer.pass(Duration::from_secs(20));
        assert!(!budget.loan_expired(peer.t), "draining");
        budget.give_back(&pool);
    }

    #[test]
    fn a_pause_drained_before_the_daemon_looked_is_judged_from_the_look_before() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        peer.look(&mut budget, &pool, 0, 2 * MIB);
        peer.pass(Duration::from_millis(3));
        // Paused and drained within those 3 ms; the peer took 3 MiB meanwhile.
        peer.look(&mut budget, &pool, 1, 0);
        assert_eq!(budget.judge_at(), Some(peer.t + Duration::from_millis(2)));
        peer.pass(Duration::from_millis(2));
        peer.look(&mut budget, &pool, 1, 0);
        assert_eq!(budget.bytes(), 16 * MIB);
        budget.give_back(&pool);

        // The same with a slow peer: nothing to grow for.
        let mut peer = Peer::new(8 * MIB);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        peer.look(&mut budget, &pool, 0, 2 * MIB);
        peer.pass(Duration::from_millis(3));
        peer.look(&mut budget, &pool, 1, 0);
        peer.pass(Duration::from_millis(2));
        peer.look(&mut budget, &pool, 1, 0);
        assert_eq!(budget.bytes(), 4 * MIB);
    }

    #[test]
    fn a_contended_flow_gives_its_loan_back_and_does_not_grow() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(4 * MIB, 256 * MIB, &peer);
        pause(&mut budget, &pool, &mut peer, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        budget.set_contended(true);
        assert_eq!(budget.bytes(), 4 * MIB, "held to the base budget at once");
        // The loan still covers bytes in the kernel until the backlog is within base.
        peer.look(&mut budget, &pool, 1, 10 * MIB);
        assert_eq!(pool.lent(), 12 * MIB);
        peer.look(&mut budget, &pool, 1, 4 * MIB);
        assert_eq!(pool.lent(), 0);
        pause(&mut budget, &pool, &mut peer, Duration::ZERO);
        assert_eq!(budget.bytes(), 4 * MIB, "no growth while contended");
        budget.set_contended(false);
        pause(&mut budget, &pool, &mut peer, Duration::ZERO);
        assert_eq!(budget.bytes(), 16 * MIB);
        budget.give_back(&pool);
    }

    #[test]
    fn owed_bytes_past_the_allowance_are_covered_from_the_pool_or_refused() {
        let pool = BacklogPool::default();
        let peer = Peer::new(FAST_READER);
        let mut budget = new_budget(4 * MIB, 32 * MIB, &peer);
        budget
            .cover_owed(&pool, OWED_ALLOWANCE_BYTES)
            .expect("within the allowance");
        assert_eq!(pool.lent(), 0);
        budget
            .cover_owed(&pool, OWED_ALLOWANCE_BYTES + 20 * MIB)
            .expect("the pool covers 20 MiB");
        assert_eq!(pool.lent(), 20 * MIB);
        assert_eq!(pool.loans(), 0, "covering is not a loan");
        assert_eq!(
            budget.cover_owed(&pool, OWED_ALLOWANCE_BYTES + 40 * MIB),
            Err(20 * MIB),
            "12 MiB left in the pool"
        );
        assert_eq!(pool.lent(), 20 * MIB, "a refusal takes nothing");
        budget
            .cover_owed(&pool, OWED_ALLOWANCE_BYTES + 5 * MIB)
            .expect("fewer owed");
        assert_eq!(pool.lent(), 5 * MIB, "what is no longer owed went back");
        budget.release(&pool);
        assert_eq!(pool.lent(), 0);
    }

    #[test]
    fn a_base_budget_past_the_most_a_flow_gets_never_grows() {
        let pool = BacklogPool::default();
        let mut peer = Peer::new(FAST_READER);
        let mut budget = new_budget(128 * MIB, 256 * MIB, &peer);
        pause(&mut budget, &pool, &mut peer, Duration::ZERO);
        assert_eq!(budget.bytes(), 128 * MIB);
        assert_eq!(pool.lent(), 0);
    }
}
