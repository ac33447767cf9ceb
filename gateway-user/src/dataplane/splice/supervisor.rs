//! The loop that watches one spliced tunnel: hang-ups and errors from epoll, attention
//! from the verdict's events, and each flow's budget, catch-up and FIN.

use std::{
    future::Future,
    io,
    net::{Shutdown, TcpStream},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use gateway_common::{FlowControl, FlowStats};
use tokio::sync::Notify;

use super::{
    budget::{FAST_DRAIN_WITHIN, LOAN_IDLE, OWED_ALLOWANCE_BYTES},
    half::{Brake, Half},
    witness::{self, Finding},
    SpliceEnd,
};
use crate::dataplane::{
    sockio::{kick, recv_nonblocking, send_nonblocking},
    sockopt,
    watch::HangupWatch,
    EbpfDataplane, TunnelKeys,
};

/// First and longest pause between two checks while a drain or a catch-up is under way.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);
/// Longest pause between checks of a flow that is paused but fully caught up: it resumes
/// on the sender's next segment, and the check only guards against a missed event.
const POLL_PAUSED_MAX: Duration = Duration::from_secs(1);
/// Most passed bytes peeked at once for one flow, and most held (forwarded but not yet
/// taken off the source) while it catches up. Passed bytes waiting in the source's queue
/// are charged to its receive buffer (see [`super::receive_buffer`]; the kernel doubles it), so
/// one peek normally covers them all; held bytes past this are taken even though the flow
/// has not caught up, which bounds what each round re-peeks.
pub(super) const MAX_CATCH_UP_BYTES: usize = 16 * 1024 * 1024;
/// The longest a sender stays braked without reading (see `Supervisor::brake`): long
/// next to the spells the brake is for (a peer busy elsewhere, or starved of CPU, for a
/// second), short enough that a peer blocked in a write it cannot finish is not held long.
const BRAKE_MAX: Duration = Duration::from_secs(5);
/// The side of a flow's sender, for logs: index 0 is the client's socket.
const SENDERS: [&str; 2] = ["client", "backend"];
/// Passed bytes a flow may owe while none of them moves for [`STUCK_TIMEOUT`], and at all,
/// before its tunnel is reset. They are bounded by the source's receive buffer while they
/// can be read; while they are stuck behind bytes for the source itself (see
/// `Supervisor::run`) only the brake does (`Supervisor::brake`), by one allowance per
/// [`BRAKE_MAX`]. A peer that reads what it is sent gets its stuck bytes moving again, however
/// bursty: a flood both ways from a peer whose reads came in bursts owed 281 MB for a
/// moment, before the brake. One that keeps writing without reading past the brake's time
/// is reset once it owes the first bound; the second is the most any peer may have stuck.
/// Before either, owed bytes past the flow's allowance are covered from the shared pool
/// (`FlowBudget::cover_owed`), and a flow the pool cannot cover is reset at once: that is
/// what bounds them over all tunnels together.
const MAX_OWED_BYTES: u64 = 256 * 1024 * 1024;
const MAX_OWED_MOVING_BYTES: u64 = 1024 * 1024 * 1024;
const STUCK_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed syscall, and the side of the tunnel it was about (`None`: the gateway's own).
pub(super) struct Failure {
    side: Option<usize>,
    error: io::Error,
}

impl Failure {
    pub(super) fn into_end<S>(self) -> SpliceEnd<S> {
        match self.side {
            Some(0) => SpliceEnd::ClientError(Some(self.error)),
            Some(_) => SpliceEnd::BackendError(Some(self.error)),
            None => SpliceEnd::Internal(self.error),
        }
    }
}

fn on(side: usize) -> impl FnOnce(io::Error) -> Failure {
    move |error| Failure {
        side: Some(side),
        error,
    }
}

/// What the supervision loop works with.
pub(super) struct Supervisor<'a> {
    pub ebpf: &'a EbpfDataplane,
    pub keys: TunnelKeys,
    pub socks: [&'a TcpStream; 2],
    pub notify: &'a Notify,
    /// The sockets' `TCP_WINDOW_CLAMP` while not braked.
    pub window_clamp: u32,
}

impl Supervisor<'_> {
    /// Waits for hang-ups, events and limits; keeps each flow within budget and forwards
    /// each FIN once its bytes have drained, until both directions are closed (`Done`), a
    /// side fails, or `limit` is reached.
    pub(super) async fn run<S>(
        &self,
        halves: &mut [Half; 2],
        limit: impl Future<Output = S>,
    ) -> Result<SpliceEnd<S>, Failure> {
        tokio::pin!(limit);
        let socks = self.socks;
        // Segments that arrived before a socket joined the map sit in its receive queue
        // until the next `data_ready`. A receive makes the kernel run the verdict on them
        // now (tcp_bpf_recvmsg_parser); MSG_PEEK so that nothing is taken even if the
        // verdict passed it to userspace (the flow step forwards it in order).
        for (side, sock) in socks.iter().enumerate() {
            kick(sock).map_err(on(side))?;
        }

        let watch = self
            .ebpf
            .hangup_reactor()
            .and_then(|reactor| HangupWatch::new(reactor, socks[0].as_fd(), socks[1].as_fd()))
            .map_err(|error| Failure { side: None, error })?;
        let mut pause = POLL_MIN;
        loop {
            // A loan unused for a while goes back at the flow's next step; a drained pause
            // is judged once its peer has had time to show its reading speed.
            let now = Instant::now();
            for half in halves.iter_mut() {
                half.attention |= half.budget.loan_expired(now)
                    || half.budget.judge_at().is_some_and(|at| at <= now);
            }
            // Passed bytes go behind whatever waits in their source's psock queue, and that
            // queue also holds the bytes the other flow redirects *to* that socket. Waiting
            // there they are charged to no receive buffer, so TCP never stops their sender
            // (a flood both ways once piled up 281 MB of them). So while a flow's passed bytes
            // are stuck there, the other one stops redirecting: its queued bytes drain as the
            // peer reads, the passed ones then reach the receive buffer, and TCP brakes again.
            for from in 0..2 {
                let other = &halves[1 - from];
                let other_busy = other.outstanding || other.backlog > 0;
                let other_stuck = other.stuck;
                let half = &mut halves[from];
                half.budget.set_contended(other_busy);
                let yielding = other_stuck && (half.yielding || half.backlog > 0);
                if yielding != half.yielding {
                    tracing::trace!(from, yielding, "yielding to the other flow");
                    half.yielding = yielding;
                    half.attention = true;
                }
            }
            let stats = self.ebpf.flow_stats(self.keys);
            let mut progressed = false;
            let mut stepped = false;
            for (from, half) in halves.iter_mut().enumerate() {
                let to = 1 - from;
                let flow = if from == 0 { &stats.0 } else { &stats.1 };
                if half.attention || half.eof {
                    progressed |= self.flow_step(half, flow, from, &watch)?;
                    stepped = true;
                }
                if half.eof && !half.shut {
                    let from_counters = sockopt::tcp_counters(socks[from]).map_err(on(from))?;
                    let to_counters = sockopt::tcp_counters(socks[to]).map_err(on(to))?;
                    if half.drained(&from_counters, &to_counters) {
                        tracing::debug!(from, "drained; forwarding FIN");
                        socks[to].shutdown(Shutdown::Write).map_err(on(to))?;
                        half.shut = true;
                    }
                }
            }
            if halves.iter().all(|h| h.shut) {
                return Ok(SpliceEnd::Done);
            }
            // At every pause, resume and watermark: does what the kernel moved add up?
            if stepped {
                if let Some(wrong) = self.witness(halves, false)? {
                    return Ok(SpliceEnd::Integrity(wrong));
                }
            }
            if progressed {
                pause = POLL_MIN;
            }

            // Poll quickly while bytes wait to move or a drained pause waits to be judged,
            // slowly while a flow is merely paused, and once a loan's idle time is up.
            let busy = halves.iter().any(|h| (h.eof && !h.shut) || h.outstanding);
            let paused = halves.iter().any(|h| h.attention);
            let lending = halves.iter().any(|h| h.budget.lent() > 0);
            let judging = halves.iter().any(|h| h.budget.judge_at().is_some());
            let poll = if judging {
                FAST_DRAIN_WITHIN
            } else if busy {
                POLL_MAX
            } else if paused {
                POLL_PAUSED_MAX
            } else {
                LOAN_IDLE
            };
            let events = tokio::select! {
                reason = &mut limit => return Ok(SpliceEnd::Stopped(reason)),
                () = self.notify.notified() => {
                    for half in halves.iter_mut() {
                        half.attention = true;
                    }
                    pause = POLL_MIN;
                    continue;
                }
                events = watch.next() => events.map_err(|error| Failure { side: None, error })?,
                () = tokio::time::sleep(pause), if busy || paused || lending || judging => {
                    pause = (pause * 2).min(poll);
                    continue;
                }
            };
            pause = POLL_MIN;
            tracing::debug!(?events, "socket events");
            if let Some(side) = events.iter().position(|e| e.error) {
                let err = sockopt::take_socket_error(socks[side]).map_err(on(side))?;
                return Ok(if side == 0 {
                    SpliceEnd::ClientError(err)
                } else {
                    SpliceEnd::BackendError(err)
                });
            }
            for (from, half) in halves.iter_mut().enumerate() {
                let (source, destination) = (events[from], events[1 - from]);
                half.eof |= source.read_hangup || source.hangup;
                half.attention |= destination.writable;
            }
        }
    }

    /// The integrity witness over both directions (see [`witness`]).
    pub(super) fn witness(
        &self,
        halves: &[Half; 2],
        at_end: bool,
    ) -> Result<Option<Finding>, Failure> {
        let ledgers = [0, 1].map(|from| {
            let half = &halves[from];
            witness::Ledger {
                consumed_before: half.consumed_before,
                written_before: half.written_before,
                forwarded: half.forwarded,
                shut: half.shut,
            }
        });
        witness::confirmed(self.ebpf, self.keys, self.socks, ledgers, at_end).map_err(
            |(side, error)| Failure {
                side: Some(side),
                error,
            },
        )
    }

    /// Looks after one flow. Its kernel backlog (bytes redirected but not yet in the
    /// destination's send queue) is bounded by the verdict's pause at the flow's limit:
    /// from there on segments are *passed* to the source's own queue, where they are
    /// charged to its receive buffer, so TCP closes the sender's window by itself once the
    /// buffer is full. Here the limit is raised as the destination takes bytes, and passed
    /// bytes are forwarded once everything redirected before them has reached the
    /// destination (order); taking them off the source reopens its window with an
    /// ordinary window update.
    ///
    /// Returns whether any byte moved.
    fn flow_step(
        &self,
        half: &mut Half,
        flow: &FlowStats,
        from: usize,
        watch: &HangupWatch<'_>,
    ) -> Result<bool, Failure> {
        let to = 1 - from;
        let to_counters = sockopt::tcp_counters(self.socks[to]).map_err(on(to))?;
        let mut delivered = half.delivered(&to_counters);
        let backlog = flow.bytes.saturating_sub(delivered);
        half.budget.observe(
            self.ebpf.backlog_pool(),
            flow.pauses,
            backlog,
            to_counters.bytes_acked,
            Instant::now(),
        );
        let budget = half.budget.bytes();
        // A yielding flow pauses at its next segment and stays paused.
        let yielding = half.yielding;
        let limit = |delivered: u64| {
            if yielding {
                flow.bytes.min(delivered + budget)
            } else {
                delivered + budget
            }
        };
        let mut moved = false;
        if delivered >= flow.bytes {
            // Everything redirected so far is in `to`: there is room for a full budget
            // again, and passed bytes may follow now.
            half.control.limit = limit(delivered);
            if flow.passed_bytes > half.control.released {
                moved = self.forward(half, flow, from)?;
                delivered = half.delivered(&sockopt::tcp_counters(self.socks[to]).map_err(on(to))?);
            }
        }
        tracing::trace!(
            from,
            delivered,
            backlog = flow.bytes.saturating_sub(delivered),
            bytes = flow.bytes,
            passed = flow.passed_bytes,
            released = half.control.released,
            paused = flow.paused,
            "flow step"
        );
        // The limit follows the destination; a watermark half a budget ahead wakes us in
        // time to raise it before the flow pauses. It comes down when the budget shrinks
        // (the loan went back): the flow then pauses earlier, which is always safe.
        let control = FlowControl {
            limit: limit(delivered),
            notify_at: delivered + budget / 2,
            released: half.control.released,
        };
        self.publish(half, control)?;

        let after = self.ebpf.flow_stats(self.keys);
        let flow = if from == 0 { after.0 } else { after.1 };
        let owed = flow.passed_bytes - half.control.released;
        if half.control.released != half.released_seen || owed == 0 {
            half.released_seen = half.control.released;
            half.released_at = Instant::now();
        }
        let stuck_for = half.released_at.elapsed();
        if let Err(uncovered) = half.budget.cover_owed(self.ebpf.backlog_pool(), owed) {
            return Err(Failure {
                side: Some(from),
                error: io::Error::other(format!(
                    "the peer sent {owed} bytes more than the gateway could pass on without it \
                     reading what it is sent, and the kernel memory spliced tunnels share for \
                     such bytes (spliced_backlog_pool_bytes) has no room for {uncovered} more"
                )),
            });
        }
        if owed > MAX_OWED_MOVING_BYTES || (owed > MAX_OWED_BYTES && stuck_for >= STUCK_TIMEOUT) {
            return Err(Failure {
                side: Some(from),
                error: io::Error::other(format!(
                    "the peer sent {owed} bytes more than the gateway could pass on without it \
                     reading what it is sent (none moved for {} ms)",
                    stuck_for.as_millis()
                )),
            });
        }
        half.outstanding = owed > 0;
        half.stuck &= half.outstanding;
        self.brake(half, from, owed)?;
        half.backlog = flow.bytes.saturating_sub(delivered);
        half.attention = flow.paused != 0 || half.outstanding;
        if !half.outstanding && half.buf.capacity() > 0 {
            half.buf = Vec::new();
            half.held = 0;
        }
        watch
            .want_writable(to, half.outstanding)
            .map_err(|error| Failure { side: None, error })?;
        Ok(moved)
    }

    /// Shuts `from`'s receive window while the flow owes more passed bytes than it may
    /// (see below), until some of them move or [`BRAKE_MAX`] has passed.
    ///
    /// Past its allowance ([`OWED_ALLOWANCE_BYTES`]), a flow's passed bytes wait in
    /// `from`'s psock queue behind the bytes the other flow redirected *to* `from`, which
    /// only `from`'s peer's reads move, and there they are charged to no receive buffer:
    /// TCP would let the peer send on for ever (a peer that flooded while not reading for
    /// 2 s piled up 413 MB). A clamp of 1 (the kernel makes it about 1 KiB) makes the window
    /// far smaller than a loopback segment, so the sender sends nothing but a window probe
    /// now and then, as if the buffer were full. The window already offered still holds
    /// (the kernel never retracts one), so the brake takes effect within one receive buffer.
    ///
    /// The line it is braked at ratchets up by bytes, not by time. An episode runs from
    /// owing more than the allowance until owing half of it; its line starts at the
    /// allowance. A brake comes off as soon as some of the stuck bytes move (the peer read
    /// what was queued in front of them, and the gateway forwarded some): an echo peer
    /// reads only once its writes went through, and a brake held until all its stuck bytes
    /// moved could stop the very reads that move them. (The peer's acknowledgements are no
    /// such sign: its kernel acknowledges what fits in its receive buffer whether it reads
    /// or not.) It also comes off after [`BRAKE_MAX`]: a peer that writes everything it has
    /// before it reads (a blocking write) cannot read while braked. Either way the line
    /// moves to one allowance past what the flow owes then, so a peer that never reads gains
    /// one allowance per [`BRAKE_MAX`] at most, and one whose bytes move is not braked again
    /// before it has sent another allowance's worth (its sender learns of the reopened
    /// window only from its next probe). What it owes past the allowance is covered from
    /// the pool, and the bounds on owed bytes still apply.
    fn brake(&self, half: &mut Half, from: usize, owed: u64) -> Result<(), Failure> {
        let gateway = |error| Failure { side: None, error };
        let brake = &mut half.brake;
        if brake.line == 0 && owed <= OWED_ALLOWANCE_BYTES {
            return Ok(());
        }
        if owed <= OWED_ALLOWANCE_BYTES / 2 {
            // The episode is over.
            if brake.on.is_some() {
                self.set_window_clamp(from, self.window_clamp)
                    .map_err(gateway)?;
            }
            half.brake = Brake::default();
            return Ok(());
        }
        if brake.line == 0 {
            brake.line = OWED_ALLOWANCE_BYTES;
        }
        let released = half.control.released;
        match brake.on {
            None if owed > brake.line => {
                self.set_window_clamp(from, 1).map_err(gateway)?;
                half.brake.on = Some((Instant::now(), released));
                self.ebpf.braked(from);
                tracing::debug!(sender = SENDERS[from], owed, "sender braked");
            }
            None => {}
            Some((since, released_then)) => {
                let read = released != released_then;
                let held_out = since.elapsed() >= BRAKE_MAX;
                if read || held_out {
                    self.set_window_clamp(from, self.window_clamp)
                        .map_err(gateway)?;
                    half.brake.on = None;
                    half.brake.line = owed + OWED_ALLOWANCE_BYTES;
                    if read {
                        tracing::debug!(sender = SENDERS[from], owed, "braked sender reads again");
                    } else {
                        tracing::info!(
                            sender = SENDERS[from],
                            owed,
                            brake_max_secs = BRAKE_MAX.as_secs(),
                            "a peer kept writing without reading what it is sent; brake \
                             lifted until it owes another allowance"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn set_window_clamp(&self, from: usize, clamp: u32) -> io::Result<()> {
        sockopt::set_window_clamp(self.socks[from], clamp)
    }

    /// Makes `control` this flow's `CONTROL` entry, unless it already is.
    fn publish(&self, half: &mut Half, control: FlowControl) -> Result<(), Failure> {
        half.control = control;
        if control != half.published {
            self.ebpf
                .set_control(half.cookie, control)
                .map_err(|e| Failure {
                    side: None,
                    error: io::Error::other(e),
                })?;
            half.published = control;
        }
        Ok(())
    }

    /// Forwards passed bytes from `from` to `to`, and lets the flow resume.
    ///
    /// The verdict resumes only when every passed byte has been forwarded, and a sender
    /// that keeps sending passes new bytes as fast as they are forwarded. So forwarded
    /// bytes are *not* taken off `from` at once: they stay charged to its receive buffer
    /// until it is full and TCP has stopped the sender. Each round peeks everything owed
    /// (a peek always starts at the head of the queue), writes what `to` has not been
    /// given yet, and once nothing more was passed meanwhile, publishes the total as
    /// released and takes it all: the flow has caught up, its next segment resumes the
    /// splice, and taking the bytes sends the sender a window update. A round that finds
    /// nothing owed beyond what it holds does not peek again. Returns whether any byte
    /// moved.
    fn forward(&self, half: &mut Half, flow: &FlowStats, from: usize) -> Result<bool, Failure> {
        let to = 1 - from;
        let owed = flow.passed_bytes - half.control.released;
        // Everything owed is already written: no need to peek again, only to confirm.
        let peeked = if owed == half.held as u64 {
            Some(half.held)
        } else {
            self.peek_owed(half, owed, from)?
        };
        half.stuck = peeked.is_none_or(|p| (p as u64) < owed.min(MAX_CATCH_UP_BYTES as u64));
        let Some(peeked) = peeked else {
            return Ok(false);
        };
        let mut sent = 0;
        if peeked > half.held {
            sent = send_nonblocking(self.socks[to], &half.buf[half.held..peeked])
                .map_err(on(to))?
                .unwrap_or(0);
            half.held += sent;
            half.forwarded += sent as u64;
        }
        let written = half.held as u64;
        let passed_now = {
            let (up, down) = self.ebpf.flow_stats(self.keys);
            if from == 0 { up } else { down }.passed_bytes
        };
        let caught_up = passed_now - half.control.released == written;
        // Holding bytes back only helps while every byte owed is readable: then the
        // sender stops once the buffer is full and the flow catches up. When some are not
        // (stuck behind bytes for `from` itself, waiting for `from`'s peer to read), a
        // full buffer would stop a peer that reads only after its write went through (an
        // echo server), and the stuck bytes would never come: a deadlock, seen in
        // `tests/tests/reload.rs`'s busy echo tunnels. So what is held is taken now, and
        // the flow stays paused. Held bytes past the catch-up limit are taken too: the
        // re-peek per round must stay bounded.
        let all_readable = peeked as u64 >= owed.min(MAX_CATCH_UP_BYTES as u64);
        if !caught_up && all_readable && half.held < MAX_CATCH_UP_BYTES {
            return Ok(sent > 0);
        }
        let control = FlowControl {
            released: half.control.released + written,
            ..half.control
        };
        self.publish(half, control)?;
        let taken =
            recv_nonblocking(self.socks[from], &mut half.buf[..half.held], 0).map_err(on(from))?;
        if taken != Some(half.held) {
            return Err(Failure {
                side: None,
                error: io::Error::other(format!(
                    "took {taken:?} of {} forwarded bytes off the source",
                    half.held
                )),
            });
        }
        tracing::trace!(bytes = half.held, from, caught_up, "released passed bytes");
        half.held = 0;
        Ok(true)
    }

    /// Peeks up to `owed` passed bytes (at most [`MAX_CATCH_UP_BYTES`]) from the head of
    /// `from`'s queue into the half's buffer. `None` when none is readable yet.
    fn peek_owed(&self, half: &mut Half, owed: u64, from: usize) -> Result<Option<usize>, Failure> {
        let want = usize::try_from(owed)
            .unwrap_or(usize::MAX)
            .min(MAX_CATCH_UP_BYTES);
        half.buf.resize(want, 0);
        match recv_nonblocking(self.socks[from], &mut half.buf, libc::MSG_PEEK).map_err(on(from))? {
            Some(0) | None => {
                // Stuck: the kernel queued them in `from`'s psock behind bytes the other
                // flow redirects *to* `from`, which wait for `from`'s peer to read
                // (`sk_psock_verdict_apply`). They follow once it does.
                tracing::trace!(from, "passed bytes not readable yet");
                Ok(None)
            }
            Some(peeked) => Ok(Some(peeked)),
        }
    }
}
