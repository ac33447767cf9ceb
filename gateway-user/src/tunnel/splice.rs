//! A tunnel whose bytes the kernel moves: both sockets join the sockmap, and userspace only
//! watches for hang-ups, keeps each direction's kernel backlog within its budget, forwards
//! FIN once the redirected bytes have drained, and tears the tunnel down. See
//! docs/dataplane.md for why each step is ordered as it is.

use std::{
    future::Future,
    io,
    net::{Shutdown, TcpStream},
    os::fd::AsFd,
    sync::Arc,
    time::{Duration, Instant},
};

use gateway_common::{FlowControl, FlowStats};
use tokio::sync::Notify;

use super::{
    budget::{FlowBudget, FAST_DRAIN_WITHIN, LOAN_IDLE},
    limits::{monotonic_coarse_ns, since_ns, Limits},
    sockio::{kick, recv_nonblocking, send_nonblocking},
    watch::HangupWatch,
    witness::{self, Finding},
    CloseReason, Settings,
};
use crate::dataplane::{
    sockopt::{self, TcpCounters},
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
/// are charged to its receive buffer (see [`receive_buffer`]; the kernel doubles it), so
/// one peek normally covers them all; held bytes past this are taken even though the flow
/// has not caught up, which bounds what each round re-peeks.
const MAX_CATCH_UP_BYTES: usize = 16 * 1024 * 1024;
/// Passed bytes a flow may owe while none of them moves for [`STUCK_TIMEOUT`], and at all,
/// before its tunnel is reset. They are bounded by the source's receive buffer while they
/// can be read; while they are stuck behind bytes for the source itself (see
/// `Supervisor::run`) nothing else bounds them. A peer that reads what it is sent gets its
/// stuck bytes moving again, however bursty: a flood both ways from a peer whose reads
/// came in bursts owed 281 MB for a moment. One that keeps writing without reading does
/// not, and is reset once it owes the first bound; the second is the most any peer may
/// have stuck. Before either, owed bytes past the flow's allowance are covered from the
/// shared pool (`FlowBudget::cover_owed`), and a flow the pool cannot cover is reset at
/// once: that is what bounds them over all tunnels together.
const MAX_OWED_BYTES: u64 = 256 * 1024 * 1024;
const MAX_OWED_MOVING_BYTES: u64 = 1024 * 1024 * 1024;
const STUCK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a spliced tunnel moved, for the close log.
#[derive(Debug)]
pub struct SpliceOutcome {
    pub reason: CloseReason,
    pub client_to_backend: FlowStats,
    pub backend_to_client: FlowStats,
    /// Bytes the verdict passed to userspace (pauses, failed redirects) and userspace
    /// forwarded: client→backend, backend→client.
    pub forwarded_bytes: [u64; 2],
}

/// A failed syscall, and the side of the tunnel it was about (`None`: the gateway's own).
struct Failure {
    side: Option<usize>,
    error: io::Error,
}

impl Failure {
    fn reason(self) -> CloseReason {
        match self.side {
            Some(0) => CloseReason::ClientError(Some(self.error)),
            Some(_) => CloseReason::BackendError(Some(self.error)),
            None => CloseReason::Internal(self.error),
        }
    }
}

fn on(side: usize) -> impl FnOnce(io::Error) -> Failure {
    move |error| Failure {
        side: Some(side),
        error,
    }
}

/// One direction of the tunnel: bytes arriving on `from` leave through `to`.
struct Half {
    /// Cookie of `from`: the key of this flow in `FLOWS` and `CONTROL`.
    cookie: u64,
    /// Bytes userspace had consumed from `from` before the splice began.
    consumed_before: u64,
    /// Bytes written into `to` before the splice began.
    written_before: u64,
    /// Bytes userspace wrote into `to` since (passed bytes it forwarded).
    forwarded: u64,
    /// What this flow's `CONTROL` entry should hold (only we write it); `limit` may be
    /// raised here before it is published.
    control: FlowControl,
    /// What this flow's `CONTROL` entry holds now.
    published: FlowControl,
    /// How far the flow may run ahead of `to`.
    budget: FlowBudget,
    /// Scratch space for peeking passed bytes; freed once the flow is caught up.
    buf: Vec<u8>,
    /// Passed bytes at the head of `from`'s queue already written to `to` but not yet
    /// taken off `from` (see `Supervisor::forward`).
    held: usize,
    /// The flow may need us: paused, passed bytes to forward, or a watermark crossed.
    attention: bool,
    /// Passed bytes wait in `from`'s queue to be forwarded.
    outstanding: bool,
    /// Bytes redirected but not yet in `to`'s send queue, at the last step.
    backlog: u64,
    /// `control.released` when last seen to change, and when: how long owed bytes have
    /// not moved.
    released_seen: u64,
    released_at: Instant,
    /// Held paused for the other flow: its passed bytes may wait in `to`'s psock queue
    /// behind this flow's redirected ones, where nothing stops its sender (see
    /// `Supervisor::run`).
    yielding: bool,
    /// Some passed bytes owed could not be read at the last peek: they wait in `from`'s
    /// psock queue behind bytes the other flow redirected to `from`.
    stuck: bool,
    /// `from` has sent FIN.
    eof: bool,
    /// `to` has been shut down for writing (FIN forwarded).
    shut: bool,
}

impl Half {
    fn new(cookie: u64, from: &TcpCounters, to: &TcpCounters, budget: FlowBudget) -> Self {
        Self {
            cookie,
            consumed_before: from.bytes_consumed(),
            written_before: to.bytes_written(),
            forwarded: 0,
            control: FlowControl::new(budget.bytes()),
            published: FlowControl::new(budget.bytes()),
            budget,
            buf: Vec::new(),
            held: 0,
            attention: true,
            outstanding: false,
            backlog: 0,
            released_seen: 0,
            released_at: Instant::now(),
            yielding: false,
            stuck: false,
            eof: false,
            shut: false,
        }
    }

    /// Redirected bytes that have left the kernel's redirect queue for `to`'s send queue.
    fn delivered(&self, to: &TcpCounters) -> u64 {
        to.bytes_written()
            .saturating_sub(self.written_before + self.forwarded)
    }

    /// Whether every byte `from` received before its FIN is now in `to`'s send queue.
    /// After the FIN, `bytes_received` counts one extra for it.
    fn drained(&self, from: &TcpCounters, to: &TcpCounters) -> bool {
        let expected = from.bytes_received.saturating_sub(1 + self.consumed_before);
        to.bytes_written().saturating_sub(self.written_before) >= expected
    }
}

/// A tunnel registered in the kernel maps. Dropping it takes the tunnel out of the maps
/// (verdict first) and only then closes the sockets, however the tunnel ended.
pub struct Spliced {
    ebpf: Arc<EbpfDataplane>,
    keys: TunnelKeys,
    halves: [Half; 2],
    /// [`monotonic_coarse_ns`] when the splice began: activity before any segment.
    spliced_at_ns: u64,
    /// Woken by the event dispatcher when the verdict asks for attention.
    notify: Arc<Notify>,
    // Declared last: fields drop after `Drop::drop` has unspliced.
    client: TcpStream,
    backend: TcpStream,
}

/// The kernel would not splice the tunnel; its sockets are handed back.
pub struct Refused {
    pub client: TcpStream,
    pub backend: TcpStream,
    pub error: io::Error,
    /// Nothing moved in the kernel, so the userspace relay can carry the tunnel. Otherwise
    /// bytes may have been lost with a peer's psock and the tunnel must be reset.
    pub can_relay: bool,
}

impl Spliced {
    /// Reads the baselines and registers the tunnel: from here on the kernel moves its
    /// bytes, each direction at most its budget ahead of its destination (the settings'
    /// `max_backlog_bytes`, grown from the shared pool while the destination keeps up; see
    /// [`super::budget`]). The sockets
    /// must not have been read from or written to by anyone else since the handshake, and
    /// their receive queues must hold no partly read skb ([`take_queued`]).
    pub fn start(
        ebpf: Arc<EbpfDataplane>,
        client: TcpStream,
        backend: TcpStream,
        settings: &Settings,
    ) -> Result<Self, Refused> {
        let budget = settings.max_backlog_bytes;
        // Exact baselines: a byte or an ACK miscounted here would make a FIN go out too
        // early (bytes lost) or never (tunnel hangs).
        let counters = sockopt::tcp_counters_settled(&client)
            .and_then(|c| Ok((c, sockopt::tcp_counters_settled(&backend)?)));
        let (c, b) = match counters {
            Ok(counters) => counters,
            Err(error) => {
                return Err(Refused {
                    client,
                    backend,
                    error,
                    can_relay: true,
                })
            }
        };
        let sized = [&client, &backend].into_iter().try_for_each(|sock| {
            sockopt::set_receive_buffer(sock, receive_buffer(budget))?;
            warn_if_receive_buffer_capped(sock, receive_buffer(budget));
            if settings.sndbuf_bytes > 0 {
                // Not fatal: a smaller buffer only slows the redirect worker down.
                if let Err(err) = sockopt::set_send_buffer(sock, settings.sndbuf_bytes) {
                    tracing::debug!(error = %err, "could not set the tunnel's send buffer");
                }
            }
            // A fixed receive buffer stops autotuning, which is also what raises the
            // window clamp; left at its value from the handshake (about two loopback MSS)
            // it would cap the window at 128 KiB. The clamp is a ceiling here, not a brake.
            sockopt::set_window_clamp(sock, 2 * receive_buffer(budget))
        });
        if let Err(error) = sized {
            return Err(Refused {
                client,
                backend,
                error,
                can_relay: true,
            });
        }
        match ebpf.splice(&client, &backend, budget) {
            Ok(keys) => {
                let notify = Arc::new(Notify::new());
                ebpf.watch_flows(keys, &notify);
                let now = Instant::now();
                let flow_budget = || FlowBudget::new(budget, settings.backlog_pool_bytes, now);
                Ok(Self {
                    halves: [
                        Half::new(keys.client, &c, &b, flow_budget()),
                        Half::new(keys.backend, &b, &c, flow_budget()),
                    ],
                    spliced_at_ns: monotonic_coarse_ns(),
                    notify,
                    ebpf,
                    keys,
                    client,
                    backend,
                })
            }
            Err(refused) => Err(Refused {
                can_relay: refused.can_relay(),
                error: io::Error::other(refused),
                client,
                backend,
            }),
        }
    }

    /// The cookies the tunnel's sockets are registered under.
    pub fn keys(&self) -> TunnelKeys {
        self.keys
    }

    pub fn ebpf(&self) -> &Arc<EbpfDataplane> {
        &self.ebpf
    }

    /// Runs the tunnel to its end: both sides closed, a failure (both sockets are then
    /// reset), or a limit (both peers then get a FIN).
    pub async fn run(mut self, limits: &mut Limits) -> SpliceOutcome {
        // Idleness comes from the timestamps the verdict program keeps per direction.
        let (ebpf, keys, spliced_at) = (&self.ebpf, self.keys, self.spliced_at_ns);
        let limit = limits.reached(|| {
            let (up, down) = ebpf.flow_stats(keys);
            since_ns(
                up.last_activity_ns
                    .max(down.last_activity_ns)
                    .max(spliced_at),
            )
        });
        let tunnel = Supervisor {
            ebpf,
            keys,
            socks: [&self.client, &self.backend],
            notify: &self.notify,
        };
        let reason = match tunnel.run(&mut self.halves, limit).await {
            // Every byte has been delivered: the counts must now agree exactly.
            Ok(CloseReason::Done) => match tunnel.witness(&self.halves, true) {
                Ok(None) => CloseReason::Done,
                Ok(Some(wrong)) => CloseReason::SpliceIntegrity(wrong),
                Err(failure) => failure.reason(),
            },
            Ok(reason) => reason,
            Err(failure) => failure.reason(),
        };
        super::close_both(&reason, &self.client, &self.backend);
        let (client_to_backend, backend_to_client) = self.ebpf.flow_stats(self.keys);
        SpliceOutcome {
            reason,
            client_to_backend,
            backend_to_client,
            forwarded_bytes: [self.halves[0].forwarded, self.halves[1].forwarded],
        }
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        self.ebpf.unsplice(self.keys);
        for half in &mut self.halves {
            half.budget.release(self.ebpf.backlog_pool());
        }
    }
}

/// What the supervision loop works with.
struct Supervisor<'a> {
    ebpf: &'a EbpfDataplane,
    keys: TunnelKeys,
    socks: [&'a TcpStream; 2],
    notify: &'a Notify,
}

impl Supervisor<'_> {
    /// Waits for hang-ups, events and limits; keeps each flow within budget and forwards
    /// each FIN once its bytes have drained, until both directions are closed (`Done`), a
    /// side fails, or `limit` is reached.
    async fn run(
        &self,
        halves: &mut [Half; 2],
        limit: impl Future<Output = CloseReason>,
    ) -> Result<CloseReason, Failure> {
        tokio::pin!(limit);
        let socks = self.socks;
        // Segments that arrived before a socket joined the map sit in its receive queue
        // until the next `data_ready`. A receive makes the kernel run the verdict on them
        // now (tcp_bpf_recvmsg_parser); MSG_PEEK so that nothing is taken even if the
        // verdict passed it to userspace (the flow step forwards it in order).
        for (side, sock) in socks.iter().enumerate() {
            kick(sock).map_err(on(side))?;
        }

        let watch = HangupWatch::new(socks[0].as_fd(), socks[1].as_fd())
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
                return Ok(CloseReason::Done);
            }
            // At every pause, resume and watermark: does what the kernel moved add up?
            if stepped {
                if let Some(wrong) = self.witness(halves, false)? {
                    return Ok(CloseReason::SpliceIntegrity(wrong));
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
                reason = &mut limit => return Ok(reason),
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
                    CloseReason::ClientError(err)
                } else {
                    CloseReason::BackendError(err)
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
    fn witness(&self, halves: &[Half; 2], at_end: bool) -> Result<Option<Finding>, Failure> {
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

/// The receive buffer (`SO_RCVBUF`) of a spliced socket: how much a paused flow holds in
/// its source's queue before TCP stops the sender, so what one pause hands to userspace.
/// A quarter of the budget (the kernel doubles it for its bookkeeping), between
/// [`MIN_RECEIVE_BUFFER_BYTES`] and [`MAX_RECEIVE_BUFFER_BYTES`]. It also bounds the window
/// a spliced socket advertises, and so the throughput of one tunnel over a path with a long
/// round trip (16 MiB doubled covers 1.3 Gbit/s at 100 ms).
fn receive_buffer(budget: u64) -> u32 {
    u32::try_from(budget / 4)
        .unwrap_or(u32::MAX)
        .clamp(MIN_RECEIVE_BUFFER_BYTES, MAX_RECEIVE_BUFFER_BYTES)
}

/// Says once per process that spliced sockets got less receive buffer than asked for:
/// without `CAP_NET_ADMIN`, `net.core.rmem_max` caps it, and pauses then stall.
fn warn_if_receive_buffer_capped(sock: &TcpStream, asked: u32) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(granted) = sockopt::receive_buffer(sock) else {
        return;
    };
    // The kernel reports twice what it granted.
    if granted / 2 < asked.min(MIN_RECEIVE_BUFFER_BYTES)
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            asked_bytes = asked,
            granted_bytes = granted / 2,
            "spliced sockets get a smaller receive buffer than the splice needs \
             (net.core.rmem_max caps it without CAP_NET_ADMIN): a fast tunnel will stall \
             about 200 ms at each flow-control pause; raise it with \
             `sysctl -w net.core.rmem_max=8388608`"
        );
    }
}

/// Smaller buffers stall a fast sender. As passed bytes fill the buffer, the advertised
/// window shrinks below one MSS (64 KiB on loopback); a sender does not send into such a
/// window and waits for its persist timer (about 200 ms), and once the buffer has been
/// emptied no window update reached it either (`ss -ti` on the sender: `snd_wnd` 4–14 KiB,
/// `rwnd_limited` over 90 %, `lastsnd` climbing to the RTO). Measured here with one 1 GiB
/// upload through a 4 MiB budget: 2 MiB buffers ran at 0.4 Gbit/s with a stall per pause,
/// 8 MiB ones (this, once the kernel doubles it) at 4.7–6 Gbit/s with none. The value is
/// capped by `net.core.rmem_max` unless the gateway holds CAP_NET_ADMIN
/// (`SO_RCVBUFFORCE`); see docs/dataplane.md.
const MIN_RECEIVE_BUFFER_BYTES: u32 = 4 * 1024 * 1024;
/// What one pause may pass (twice this, once the kernel doubles it) must fit in one
/// catch-up round ([`MAX_CATCH_UP_BYTES`]): otherwise held bytes are taken before the sender
/// has stopped, its window reopens, and the flow never catches up.
const MAX_RECEIVE_BUFFER_BYTES: u32 = (MAX_CATCH_UP_BYTES / 2) as u32;
